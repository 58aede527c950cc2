//! Arrival records: what ingest learns from one S3 event, kept in batches instead of one
//! manifest item per object (issue #12, the README's "ingest in batches" design).
//!
//! ```text
//! SQS batch ──ingest──▶ one arrival item per partition (records sorted by key, encoded, immutable)
//!                              │ replays write a second item: duplicates, dropped by the reader
//!                              ▼
//! seal / audit ──merge items in key order──▶ fold each key's records ──▶ the record today's ingest makes
//! ```
//!
//! Three pure parts, no I/O:
//! - [`Arrival`]: one event's record (created or removed), and [`canonical_order`], the one
//!   total order every reader sorts by, so that duplicates sit side by side and each key's
//!   records come in sequencer order.
//! - [`encode_batch`] / [`decode_batch`]: a compact, versioned binary form of a batch. Keys are
//!   prefix-compressed against the previous key, hexadecimal sequencers and ETags are packed
//!   two digits a byte, times are offsets from the batch's earliest, and the whole is zstd
//!   compressed when that is smaller. The decoder never panics and never allocates more than
//!   its input justifies: an item is read back by a later release, and may be damaged.
//! - [`KeyFold`] / [`fold`]: a key's records, in any order and with replays, to the record
//!   today's per-object conditional writes make: the records applied one by one in sequencer
//!   order through [`sequencer::order`], exactly as the adapters' ingest applies them.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::records::ObjectState;
use super::sequencer;

/// The first byte of every encoded batch. Bump it when the layout changes; [`decode_batch`]
/// refuses versions it does not know rather than misread them.
pub const FORMAT_VERSION: u8 = 1;

/// The longest key a record may hold: S3's limit.
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest sequencer or ETag a record may hold (real ones are 16-40 characters; scan
/// sequencers carry a 20-digit time and an ETag).
pub const MAX_TOKEN_BYTES: usize = 128;
/// The most a batch may decompress to. A DynamoDB item holds at most 400 KB, so a batch this
/// large was never written by us: refusing it bounds what a hostile length can allocate.
pub const MAX_DECODED_BYTES: usize = 4 << 20;

/// What an event said happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArrivalKind {
    /// `ObjectCreated:*`, or a version a backfill scan listed.
    Created,
    /// `ObjectRemoved:*`.
    Removed,
}

/// One event (or listed version) of one key, as ingest recorded it. The bucket and partition
/// are the batch's (one item per partition), so a record does not repeat them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Arrival {
    pub key: String,
    pub sequencer: String,
    pub kind: ArrivalKind,
    /// The object's size; 0 for a removal (its event carries none).
    pub size: u64,
    /// The object's ETag as the event gave it; `None` for a removal.
    pub etag: Option<String>,
    /// The event's time (a scan's: the listed last-modified time). Kept to the microsecond,
    /// as the manifests keep it.
    pub event_time: DateTime<Utc>,
}

impl Arrival {
    pub fn created(
        key: impl Into<String>,
        sequencer: impl Into<String>,
        size: u64,
        etag: Option<String>,
        event_time: DateTime<Utc>,
    ) -> Self {
        let event_time = to_micros(event_time);
        Arrival { key: key.into(), sequencer: sequencer.into(), kind: ArrivalKind::Created, size, etag, event_time }
    }

    pub fn removed(key: impl Into<String>, sequencer: impl Into<String>, event_time: DateTime<Utc>) -> Self {
        let event_time = to_micros(event_time);
        Arrival {
            key: key.into(),
            sequencer: sequencer.into(),
            kind: ArrivalKind::Removed,
            size: 0,
            etag: None,
            event_time,
        }
    }

    /// What the record costs in memory, for budgets: the struct and its heap strings.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Arrival>()
            + self.key.len()
            + self.sequencer.len()
            + self.etag.as_ref().map_or(0, String::len)
    }

    /// Why the record cannot be stored, if it cannot: the limits that keep a decoded batch and
    /// a merge's pages bounded.
    pub fn check(&self) -> Result<(), ArrivalsError> {
        let too_long = |what: &'static str, length: usize, limit: usize| {
            (length > limit).then(|| ArrivalsError::TooLong { what, key: self.key.clone(), length, limit })
        };
        let problem = too_long("key", self.key.len(), MAX_KEY_BYTES)
            .or_else(|| too_long("sequencer", self.sequencer.len(), MAX_TOKEN_BYTES))
            .or_else(|| too_long("etag", self.etag.as_ref().map_or(0, String::len), MAX_TOKEN_BYTES));
        problem.map_or(Ok(()), Err)
    }

    fn version(&self) -> sequencer::Version<'_> {
        sequencer::Version { sequencer: &self.sequencer, etag: self.etag.as_deref(), time: self.event_time }
    }
}

/// The largest [`Arrival::memory_bytes`] a record that passes [`Arrival::check`] can have.
pub const MAX_RECORD_MEMORY_BYTES: usize = std::mem::size_of::<Arrival>() + MAX_KEY_BYTES + 2 * MAX_TOKEN_BYTES;

fn to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// The order every reader sorts records by: key (bytewise, as DynamoDB and S3 order keys),
/// then sequencer as S3 compares them, then every other field, so the order is total: equal
/// records (replays) are neighbours, and a key's records come in sequencer order.
pub fn canonical_order(left: &Arrival, right: &Arrival) -> Ordering {
    left.key
        .as_bytes()
        .cmp(right.key.as_bytes())
        .then_with(|| sequencer::compare(&left.sequencer, &right.sequencer))
        .then_with(|| left.sequencer.cmp(&right.sequencer))
        .then_with(|| left.kind.cmp(&right.kind))
        .then_with(|| left.etag.cmp(&right.etag))
        .then_with(|| left.size.cmp(&right.size))
        .then_with(|| left.event_time.cmp(&right.event_time))
}

// ── the per-key fold ────────────────────────────────────────────────────────────────────────

/// A key's record as today's ingest leaves it (before any seal): the fields of the manifest's
/// object record that ingest writes, plus what a derived state needs to match placements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub key: String,
    /// The record's sequencer: its version's, or the removal's when `removed`.
    pub sequencer: String,
    pub size: u64,
    pub etag: Option<String>,
    pub event_time: DateTime<Utc>,
    /// The newest version was removed (today's `removed` state).
    pub removed: bool,
    /// Every sequencer the version this record describes was recorded under (for a removed
    /// record: the removed version's). A seal's placement names the sequencer it planned by,
    /// and today the placement sits on the item and survives later writes that do not replace
    /// the version: an event confirming a scanned version, or a removal after the seal. With
    /// state derived from placements, a placement naming any of these is this version's.
    pub version_sequencers: Vec<String>,
}

impl Folded {
    /// The record's state, derived instead of flipped: `placed` and `missing` say whether a
    /// committed output's placement, or a seal's `missing` exception, names (this key and) a
    /// sequencer. Today's outcomes, each for the same reason as today:
    /// - placed (under any of the version's sequencers): compacted, even if a removal came
    ///   after (the bytes are safe in the output; today a removal of a compacted object is
    ///   ignored). A newer version is not placed, so it is pending again;
    /// - else marked missing by a seal: missing (today a removal of a missing object is ignored);
    /// - else removed or pending, as the events say.
    pub fn state(&self, placed: impl Fn(&str) -> bool, missing: impl Fn(&str) -> bool) -> ObjectState {
        if self.version_sequencers.iter().any(|sequencer| placed(sequencer)) {
            ObjectState::Compacted
        } else if self.version_sequencers.iter().any(|sequencer| missing(sequencer)) {
            ObjectState::Missing
        } else if self.removed {
            ObjectState::Removed
        } else {
            ObjectState::Pending
        }
    }
}

/// Folds one key's records, given in [`canonical_order`] (as a merge yields them): each is
/// applied through today's rule, as the adapters' ingest applies one event to the stored item.
#[derive(Debug, Default, Clone)]
pub struct KeyFold {
    record: Option<Folded>,
}

impl KeyFold {
    /// A fold that starts from a record already stored (a per-object item of a table written
    /// before arrival items): later records apply to it as today's ingest would apply their
    /// events to the item, so old items and arrival items are read side by side, no migration.
    pub fn starting_from(record: Folded) -> Self {
        KeyFold { record: Some(record) }
    }

    /// Applies one record. Out of sequencer order the result is what today's ingest makes for
    /// that arrival order, which for removals is not the same for every order: feed records in
    /// [`canonical_order`], or use [`fold`].
    pub fn apply(&mut self, arrival: &Arrival) {
        match (arrival.kind, &mut self.record) {
            (ArrivalKind::Created, None) => self.record = Some(fresh(arrival)),
            (ArrivalKind::Created, Some(recorded)) => {
                let recorded_version = sequencer::Version {
                    sequencer: &recorded.sequencer,
                    etag: recorded.etag.as_deref(),
                    time: recorded.event_time,
                };
                match sequencer::order(arrival.version(), recorded_version, recorded.removed) {
                    sequencer::VersionOrder::Newer => self.record = Some(fresh(arrival)),
                    // The scanned bytes stand (size, ETag as listed); later events order by this one.
                    sequencer::VersionOrder::ConfirmsScanned => {
                        recorded.sequencer.clone_from(&arrival.sequencer);
                        recorded.event_time = arrival.event_time;
                        recorded.version_sequencers.push(arrival.sequencer.clone());
                    }
                    sequencer::VersionOrder::NotNewer => {}
                }
            }
            // Unknown keys get no record: there is nothing to leave out of a plan.
            (ArrivalKind::Removed, None) => {}
            (ArrivalKind::Removed, Some(recorded)) => {
                if !recorded.removed && sequencer::supersedes(&arrival.sequencer, &recorded.sequencer) {
                    // The sequencer and time move with the state (a replayed creation of the removed
                    // version stays stale); size, ETag and the version's sequencers stay.
                    recorded.removed = true;
                    recorded.sequencer.clone_from(&arrival.sequencer);
                    recorded.event_time = arrival.event_time;
                }
            }
        }
    }

    pub fn finish(self) -> Option<Folded> {
        self.record
    }
}

fn fresh(arrival: &Arrival) -> Folded {
    Folded {
        key: arrival.key.clone(),
        sequencer: arrival.sequencer.clone(),
        size: arrival.size,
        etag: arrival.etag.clone(),
        event_time: arrival.event_time,
        removed: false,
        version_sequencers: vec![arrival.sequencer.clone()],
    }
}

/// One key's record from all its arrival records, in any order, replays included: `None` when
/// nothing was ever created (only removals, or nothing). Records of other keys are a caller's
/// bug and are ignored.
pub fn fold<'a>(records: impl IntoIterator<Item = &'a Arrival>) -> Option<Folded> {
    let mut records: Vec<&Arrival> = records.into_iter().collect();
    let key = records.first()?.key.clone();
    records.retain(|record| record.key == key);
    records.sort_by(|left, right| canonical_order(left, right));
    let mut fold = KeyFold::default();
    for record in records {
        fold.apply(record);
    }
    fold.finish()
}

// ── errors ──────────────────────────────────────────────────────────────────────────────────

/// Why a batch could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ArrivalsError {
    #[error("the arrival record of {key:?} has a {what} of {length} bytes, over the {limit} allowed: S3 never sends one, so the event is not S3's")]
    TooLong { what: &'static str, key: String, length: usize, limit: usize },
    #[error("a batch limit of {max_bytes} bytes cannot hold the largest record (up to {largest} bytes): raise it")]
    LimitTooSmall { max_bytes: usize, largest: usize },
    #[error("an arrival batch is empty: it should hold at least its format version; the item is damaged")]
    Empty,
    #[error("an arrival batch is in format version {found}, this release reads version {FORMAT_VERSION}: upgrade every function and CLI that reads the manifest to the release that wrote it")]
    UnknownVersion { found: u8 },
    #[error("an arrival batch is damaged: {what} (at byte {at}); the item cannot be read, restore it from a backup or rescan the partition (`ingest --scan`)")]
    Corrupt { what: String, at: usize },
}

// ── encoding ────────────────────────────────────────────────────────────────────────────────
//
// version: u8 = 1
// codec:   u8: 0 = the body follows as is, 1 = varint body length, then one zstd frame
// body:    varint record count
//          zigzag varint earliest event time (micros), u8 time unit (0 = micros, 1 = millis:
//          S3 event times are milliseconds, so offsets shrink by 1000)
//          per record:
//            u8 flags (see FLAG_*)
//            varint bytes shared with the previous key, varint suffix length, suffix
//            sequencer: packed hex (varint byte count, bytes) or raw (varint length, bytes)
//            varint size (created records only)
//            ETag (when flagged): 16 packed bytes, or raw (varint length, bytes)
//            varint time offset from the earliest, in the time unit

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const UNIT_MICROS: u8 = 0;
const UNIT_MILLIS: u8 = 1;

const FLAG_REMOVED: u8 = 1;
const FLAG_ETAG: u8 = 1 << 1;
/// The ETag is 32 lowercase hex digits, unquoted (an S3 event's single-part ETag).
const FLAG_ETAG_PACKED: u8 = 1 << 2;
/// The sequencer is an even number of uppercase hex digits, packed two a byte.
const FLAG_SEQUENCER_UPPER: u8 = 1 << 3;
/// The same, lowercase.
const FLAG_SEQUENCER_LOWER: u8 = 1 << 4;
const KNOWN_FLAGS: u8 = (1 << 5) - 1;

/// zstd's level for batches: small inputs, where higher levels gain almost nothing.
const ZSTD_LEVEL: i32 = 3;

/// Whether to try zstd: ingest does (a write unit is per KB); a merge's spill pages don't
/// (read back at once, CPU matters more than bytes there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd when it makes the batch smaller.
    Zstd,
    None,
}

/// Encodes a batch: sorts the records into [`canonical_order`] (the decoder checks key order),
/// and refuses records over the limits of [`Arrival::check`].
pub fn encode_batch(mut records: Vec<Arrival>, compression: Compression) -> Result<Vec<u8>, ArrivalsError> {
    records.sort_by(canonical_order);
    encode_sorted(&records, compression)
}

/// Encodes a batch as one or more batches of at most `max_bytes` each (a DynamoDB item holds
/// 400 KB, and an SQS batch may hold 10,000 events): consecutive key ranges, split by an upper
/// bound of each record's uncompressed size, so no encoding is tried twice.
pub fn encode_batches(
    mut records: Vec<Arrival>,
    compression: Compression,
    max_bytes: usize,
) -> Result<Vec<Vec<u8>>, ArrivalsError> {
    records.sort_by(canonical_order);
    // Version, codec, count, earliest time and unit, and the zstd header when compressed: at
    // most 2 + 10 + 10 + 10 + 1.
    const HEADER_BOUND: usize = 33;
    // A record's flags, shared and suffix lengths, sequencer length, size, ETag length and time
    // offset: at most 1 + 6 varints of 10 bytes.
    let bound =
        |record: &Arrival| 61 + record.key.len() + record.sequencer.len() + record.etag.as_ref().map_or(0, String::len);
    let largest = MAX_KEY_BYTES + 2 * MAX_TOKEN_BYTES + 61 + HEADER_BOUND;
    if max_bytes < largest {
        return Err(ArrivalsError::LimitTooSmall { max_bytes, largest });
    }
    let mut batches = Vec::new();
    let mut start = 0;
    let mut size = HEADER_BOUND;
    for (index, record) in records.iter().enumerate() {
        record.check()?;
        if size + bound(record) > max_bytes {
            batches.push(encode_sorted(&records[start..index], compression)?);
            (start, size) = (index, HEADER_BOUND);
        }
        size += bound(record);
    }
    if start < records.len() || batches.is_empty() {
        batches.push(encode_sorted(&records[start..], compression)?);
    }
    Ok(batches)
}

/// [`encode_batch`] of records already in key order (a merge's runs).
pub fn encode_sorted(records: &[Arrival], compression: Compression) -> Result<Vec<u8>, ArrivalsError> {
    let mut body = Vec::with_capacity(16 + records.len() * 48);
    put_varint(&mut body, records.len() as u64);
    let earliest = records.iter().map(|record| record.event_time.timestamp_micros()).min().unwrap_or(0);
    let millis =
        records.iter().all(|record| record.event_time.timestamp_micros().rem_euclid(1000) == earliest.rem_euclid(1000));
    put_varint(&mut body, zigzag(earliest));
    body.push(if millis { UNIT_MILLIS } else { UNIT_MICROS });
    let mut previous: &str = "";
    for record in records {
        record.check()?;
        if record.key.as_bytes() < previous.as_bytes() {
            return Err(ArrivalsError::Corrupt { what: format!("record {:?} is out of key order", record.key), at: 0 });
        }
        let sequencer_flag = packed_hex_case(&record.sequencer);
        let etag_packed = record.etag.as_deref().is_some_and(|etag| {
            etag.len() == 32 && etag.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        });
        let mut flags = sequencer_flag.unwrap_or(0);
        if record.kind == ArrivalKind::Removed {
            flags |= FLAG_REMOVED;
        }
        if record.etag.is_some() {
            flags |= FLAG_ETAG;
        }
        if etag_packed {
            flags |= FLAG_ETAG_PACKED;
        }
        body.push(flags);
        let shared = shared_prefix(previous, &record.key);
        put_varint(&mut body, shared as u64);
        put_bytes(&mut body, &record.key.as_bytes()[shared..]);
        match sequencer_flag {
            Some(_) => put_bytes(&mut body, &pack_hex(&record.sequencer)),
            None => put_bytes(&mut body, record.sequencer.as_bytes()),
        }
        if record.kind == ArrivalKind::Created {
            put_varint(&mut body, record.size);
        }
        match (&record.etag, etag_packed) {
            (Some(etag), true) => body.extend_from_slice(&pack_hex(etag)),
            (Some(etag), false) => put_bytes(&mut body, etag.as_bytes()),
            (None, _) => {}
        }
        // i128: times at both ends of chrono's range are further apart than i64 holds.
        let offset = (i128::from(record.event_time.timestamp_micros()) - i128::from(earliest)) as u64;
        put_varint(&mut body, if millis { offset / 1000 } else { offset });
        previous = &record.key;
    }
    let mut encoded = vec![FORMAT_VERSION, CODEC_RAW];
    if compression == Compression::Zstd {
        // Compression of a buffer in memory fails only on allocation: fall back to raw.
        if let Ok(frame) = zstd::bulk::compress(&body, ZSTD_LEVEL) {
            let mut compressed = vec![FORMAT_VERSION, CODEC_ZSTD];
            put_varint(&mut compressed, body.len() as u64);
            compressed.extend_from_slice(&frame);
            if compressed.len() < body.len() + encoded.len() {
                return Ok(compressed);
            }
        }
    }
    encoded.extend_from_slice(&body);
    Ok(encoded)
}

/// Decodes a batch, in the order it was written (key order). Never panics; a damaged or
/// hostile input is an error that says where.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Arrival>, ArrivalsError> {
    let (&version, rest) = bytes.split_first().ok_or(ArrivalsError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(ArrivalsError::UnknownVersion { found: version });
    }
    let mut header = Reader { bytes: rest, at: 0, base: 1 };
    match header.byte("codec")? {
        CODEC_RAW => decode_body(Reader { bytes: &rest[1..], at: 0, base: 2 }),
        CODEC_ZSTD => {
            let length = header.varint("decompressed length")?;
            if length > MAX_DECODED_BYTES as u64 {
                return Err(header
                    .corrupt(format!("it claims {length} bytes decompressed, over the {MAX_DECODED_BYTES} allowed")));
            }
            let frame = &header.bytes[header.at..];
            let body = zstd::bulk::decompress(frame, length as usize)
                .map_err(|error| header.corrupt(format!("its zstd frame does not decompress: {error}")))?;
            if body.len() as u64 != length {
                return Err(
                    header.corrupt(format!("it decompressed to {} bytes, not the {length} it claims", body.len()))
                );
            }
            decode_body(Reader { bytes: &body, at: 0, base: 0 })
        }
        other => Err(ArrivalsError::Corrupt { what: format!("codec {other} is not known"), at: 1 }),
    }
}

fn decode_body(mut reader: Reader<'_>) -> Result<Vec<Arrival>, ArrivalsError> {
    let count = reader.varint("record count")?;
    // Every record takes at least 4 bytes: never reserve more than the input can hold.
    let mut records = Vec::with_capacity((count as usize).min(reader.remaining() / 4));
    let earliest = unzigzag(reader.varint("earliest time")?);
    let unit: i64 = match reader.byte("time unit")? {
        UNIT_MICROS => 1,
        UNIT_MILLIS => 1000,
        other => return Err(reader.corrupt(format!("time unit {other} is not known"))),
    };
    let mut key: Vec<u8> = Vec::new();
    for index in 0..count {
        let flags = reader.byte("flags")?;
        if flags & !KNOWN_FLAGS != 0 || flags & FLAG_SEQUENCER_UPPER != 0 && flags & FLAG_SEQUENCER_LOWER != 0 {
            return Err(reader.corrupt(format!("record {index} has unknown flags {flags:#04x}")));
        }
        let shared = reader.varint("shared key length")?;
        if shared > key.len() as u64 {
            return Err(reader.corrupt(format!("record {index} shares {shared} bytes of a {}-byte key", key.len())));
        }
        let suffix = reader.bytes_with_length("key", MAX_KEY_BYTES)?;
        let previous = std::mem::take(&mut key);
        key.extend_from_slice(&previous[..shared as usize]);
        key.extend_from_slice(suffix);
        if key.len() > MAX_KEY_BYTES {
            return Err(reader.corrupt(format!("record {index} has a key of {} bytes", key.len())));
        }
        if key.as_slice() < previous.as_slice() {
            return Err(reader.corrupt(format!("record {index} is out of key order")));
        }
        let text =
            std::str::from_utf8(&key).map_err(|_| reader.corrupt(format!("record {index}'s key is not UTF-8")))?;
        let sequencer = if flags & (FLAG_SEQUENCER_UPPER | FLAG_SEQUENCER_LOWER) != 0 {
            unpack_hex(reader.bytes_with_length("sequencer", MAX_TOKEN_BYTES / 2)?, flags & FLAG_SEQUENCER_LOWER != 0)
        } else {
            reader.text("sequencer", index)?
        };
        let removed = flags & FLAG_REMOVED != 0;
        let size = if removed { 0 } else { reader.varint("size")? };
        let etag = match (flags & FLAG_ETAG != 0, flags & FLAG_ETAG_PACKED != 0) {
            (false, false) => None,
            (false, true) => return Err(reader.corrupt(format!("record {index} packs an ETag it does not have"))),
            (true, true) => Some(unpack_hex(reader.take(16, "etag")?, true)),
            (true, false) => Some(reader.text("etag", index)?),
        };
        let offset = reader.varint("time offset")?;
        let micros = i64::try_from(offset)
            .ok()
            .and_then(|offset| offset.checked_mul(unit))
            .and_then(|offset| offset.checked_add(earliest))
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| reader.corrupt(format!("record {index}'s time is out of range")))?;
        let kind = if removed { ArrivalKind::Removed } else { ArrivalKind::Created };
        records.push(Arrival { key: text.to_owned(), sequencer, kind, size, etag, event_time: micros });
    }
    if reader.remaining() != 0 {
        return Err(reader.corrupt(format!("{} bytes follow the last record", reader.remaining())));
    }
    Ok(records)
}

/// A cursor over untrusted bytes: every read is checked, errors say what and where.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Where `bytes` starts in the batch (for messages; 0 inside a decompressed body).
    base: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn corrupt(&self, what: String) -> ArrivalsError {
        ArrivalsError::Corrupt { what, at: self.base + self.at }
    }

    fn take(&mut self, length: usize, what: &str) -> Result<&'a [u8], ArrivalsError> {
        if self.remaining() < length {
            return Err(self.corrupt(format!("it ends inside a record's {what}")));
        }
        let taken = &self.bytes[self.at..self.at + length];
        self.at += length;
        Ok(taken)
    }

    fn byte(&mut self, what: &str) -> Result<u8, ArrivalsError> {
        Ok(self.take(1, what)?[0])
    }

    fn varint(&mut self, what: &str) -> Result<u64, ArrivalsError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.byte(what)?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.corrupt(format!("its {what} overflows 64 bits")));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.corrupt(format!("its {what} overflows 64 bits")))
    }

    fn bytes_with_length(&mut self, what: &str, limit: usize) -> Result<&'a [u8], ArrivalsError> {
        let length = self.varint(what)?;
        if length > limit as u64 {
            return Err(self.corrupt(format!("a {what} of {length} bytes, over the {limit} allowed")));
        }
        self.take(length as usize, what)
    }

    fn text(&mut self, what: &str, index: u64) -> Result<String, ArrivalsError> {
        let bytes = self.bytes_with_length(what, MAX_TOKEN_BYTES)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt(format!("record {index}'s {what} is not UTF-8")))
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn shared_prefix(left: &str, right: &str) -> usize {
    left.bytes().zip(right.bytes()).take_while(|(left, right)| left == right).count()
}

/// `Some(FLAG_SEQUENCER_UPPER or _LOWER)` when `text` is a non-empty, even run of hex digits
/// of one case (digits alone count as uppercase), so that packing loses nothing.
fn packed_hex_case(text: &str) -> Option<u8> {
    if text.is_empty() || text.len() % 2 != 0 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let lower = text.bytes().any(|byte| byte.is_ascii_lowercase());
    let upper = text.bytes().any(|byte| byte.is_ascii_uppercase());
    match (lower, upper) {
        (true, true) => None,
        (true, false) => Some(FLAG_SEQUENCER_LOWER),
        (false, _) => Some(FLAG_SEQUENCER_UPPER),
    }
}

fn pack_hex(text: &str) -> Vec<u8> {
    let nibble = |byte: u8| (byte as char).to_digit(16).unwrap_or(0) as u8;
    text.as_bytes().chunks(2).map(|pair| nibble(pair[0]) << 4 | pair.get(1).map_or(0, |&low| nibble(low))).collect()
}

fn unpack_hex(bytes: &[u8], lower: bool) -> String {
    let digits: &[u8; 16] = if lower { b"0123456789abcdef" } else { b"0123456789ABCDEF" };
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(digits[usize::from(byte >> 4)] as char);
        text.push(digits[usize::from(byte & 0x0f)] as char);
    }
    text
}

#[cfg(test)]
#[path = "arrivals_tests.rs"]
mod tests;
