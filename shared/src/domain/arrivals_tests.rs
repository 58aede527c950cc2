use chrono::Duration;
use proptest::prelude::*;

use super::*;
use crate::domain::records::ObjectState;
use crate::domain::sequencer::{scan_sequencer, VersionOrder};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// A small deterministic generator (SplitMix64), so measured sizes are the same every run.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, limit: u64) -> u64 {
        self.next() % limit
    }

    fn hex(&mut self, digits: usize, upper: bool) -> String {
        let alphabet: &[u8] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
        (0..digits).map(|_| alphabet[self.below(16) as usize] as char).collect()
    }

    fn base62(&mut self, length: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..length).map(|_| ALPHABET[self.below(62) as usize] as char).collect()
    }
}

/// One SQS batch of CloudTrail deliveries in one day's partition, as S3 events give them:
/// random 18-digit sequencers and MD5 ETags (incompressible, the worst case), sizes of 1-100 KB,
/// event times in milliseconds over a few minutes.
fn cloudtrail_batch(mix: &mut Mix, records: usize) -> Vec<Arrival> {
    let start = at("2024-01-01T00:05:00Z");
    (0..records)
        .map(|_| {
            let minute = mix.below(60);
            let key = format!(
                "AWSLogs/123456789012/CloudTrail/us-east-1/2024/01/01/\
                 123456789012_CloudTrail_us-east-1_20240101T00{minute:02}Z_{}.json.gz",
                mix.base62(16)
            );
            let time = start + Duration::milliseconds(mix.below(300_000) as i64);
            Arrival::created(key, mix.hex(18, true), 1_000 + mix.below(100_000), Some(mix.hex(32, false)), time)
        })
        .collect()
}

/// The bench's seed-json keys: `<prefix>YYYY/MM/DD/events-<uuid>.json`.
fn seed_json_batch(mix: &mut Mix, records: usize) -> Vec<Arrival> {
    let start = at("2024-01-01T00:05:00Z");
    (0..records)
        .map(|_| {
            let uuid = format!(
                "{}-{}-{}-{}-{}",
                mix.hex(8, false),
                mix.hex(4, false),
                mix.hex(4, false),
                mix.hex(4, false),
                mix.hex(12, false)
            );
            let key = format!("seed/2024/01/01/events-{uuid}.json");
            let time = start + Duration::milliseconds(mix.below(60_000) as i64);
            Arrival::created(key, mix.hex(18, true), 50 + mix.below(500), Some(mix.hex(32, false)), time)
        })
        .collect()
}

fn bytes_per_record(records: Vec<Arrival>) -> f64 {
    let count = records.len() as f64;
    let encoded = encode_batch(records.clone(), Compression::Zstd).unwrap();
    let mut sorted = records;
    sorted.sort_by(canonical_order);
    assert_eq!(decode_batch(&encoded).unwrap(), sorted, "the measured batch reads back");
    encoded.len() as f64 / count
}

/// The design's budget (README, "ingest in batches"): about 50-100 bytes a record, so that 100
/// records cost 5-10 write units. Prints the measurements for the report.
#[test]
fn a_batch_of_100_cloudtrail_records_takes_at_most_100_bytes_a_record() {
    let mut mix = Mix(12);
    let cloudtrail = bytes_per_record(cloudtrail_batch(&mut mix, 100));
    let seed_json = bytes_per_record(seed_json_batch(&mut mix, 100));
    let uncompressed = {
        let records = cloudtrail_batch(&mut mix, 100);
        encode_batch(records, Compression::None).unwrap().len() as f64 / 100.0
    };
    let raw_key_bytes = cloudtrail_batch(&mut Mix(12), 1)[0].key.len();
    println!(
        "bytes per record, 100-record batch: cloudtrail {cloudtrail:.1} (no zstd {uncompressed:.1}, key alone {raw_key_bytes}), seed-json {seed_json:.1}"
    );
    assert!(cloudtrail <= 100.0, "cloudtrail: {cloudtrail:.1} bytes a record");
    assert!(seed_json <= 100.0, "seed-json: {seed_json:.1} bytes a record");
    // The packing itself must pay: sequencer and ETag packed, key prefixes shared.
    assert!(uncompressed < 80.0, "without zstd: {uncompressed:.1} bytes a record");
}

#[test]
fn an_empty_batch_round_trips() {
    let encoded = encode_batch(Vec::new(), Compression::Zstd).unwrap();
    assert_eq!(encoded[0], FORMAT_VERSION);
    assert_eq!(decode_batch(&encoded).unwrap(), Vec::new());
}

#[test]
fn records_over_the_limits_are_refused_with_the_key_named() {
    let time = at("2024-01-01T00:00:00Z");
    let long_key = Arrival::created("k".repeat(MAX_KEY_BYTES + 1), "01", 1, None, time);
    let error = encode_batch(vec![long_key], Compression::None).unwrap_err();
    assert!(matches!(error, ArrivalsError::TooLong { what: "key", .. }), "{error}");
    let long_etag = Arrival::created("k", "01", 1, Some("e".repeat(MAX_TOKEN_BYTES + 1)), time);
    let error = encode_batch(vec![long_etag], Compression::None).unwrap_err();
    assert!(error.to_string().contains("etag") && error.to_string().contains("\"k\""), "{error}");
}

#[test]
fn damaged_and_hostile_batches_are_errors_that_say_what() {
    assert_eq!(decode_batch(&[]), Err(ArrivalsError::Empty));
    let error = decode_batch(&[FORMAT_VERSION + 1, 0]).unwrap_err();
    assert_eq!(error, ArrivalsError::UnknownVersion { found: FORMAT_VERSION + 1 });
    assert!(error.to_string().contains("upgrade"), "{error}");
    let unknown_codec = decode_batch(&[FORMAT_VERSION, 9]).unwrap_err();
    assert!(unknown_codec.to_string().contains("codec 9"), "{unknown_codec}");
    // A count of 2^63 records with no bytes behind it: an error, not an allocation.
    let mut huge_count = vec![FORMAT_VERSION, CODEC_RAW];
    put_varint(&mut huge_count, 1 << 63);
    let error = decode_batch(&huge_count).unwrap_err();
    assert!(error.to_string().contains("ends inside"), "{error}");
    // A zstd body claiming a gigabyte.
    let mut huge_body = vec![FORMAT_VERSION, CODEC_ZSTD];
    put_varint(&mut huge_body, 1 << 30);
    let error = decode_batch(&huge_body).unwrap_err();
    assert!(error.to_string().contains("decompressed"), "{error}");
    // A varint that never ends.
    let endless = [FORMAT_VERSION, CODEC_RAW, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert!(decode_batch(&endless).unwrap_err().to_string().contains("overflows"));
    // A first key claiming to share 5 bytes with the (empty) key before it.
    let shares_too_much = [FORMAT_VERSION, CODEC_RAW, 1, 0, UNIT_MICROS, FLAG_SEQUENCER_UPPER, 5, 1, b'a', 1, 1, 1, 0];
    let error = decode_batch(&shares_too_much).unwrap_err();
    assert!(error.to_string().contains("shares 5 bytes of a 0-byte key"), "{error}");
}

#[test]
fn keys_out_of_order_are_refused() {
    let time = at("2024-01-01T00:00:00Z");
    let records = [Arrival::created("b", "01", 1, None, time), Arrival::created("a", "01", 1, None, time)];
    assert!(encode_sorted(&records, Compression::None).is_err(), "the encoder checks its input");
    // Hand-made: second key "a" after "b" (shares 0 bytes).
    let mut bytes = vec![FORMAT_VERSION, CODEC_RAW, 2];
    put_varint(&mut bytes, zigzag(time.timestamp_micros()));
    bytes.push(UNIT_MICROS);
    for key in [b'b', b'a'] {
        bytes.extend_from_slice(&[FLAG_SEQUENCER_UPPER, 0, 1, key, 1, 0x01, 1, 0]);
    }
    let error = decode_batch(&bytes).unwrap_err();
    assert!(error.to_string().contains("record 1 is out of key order"), "{error}");
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9A-F]{2,20}",
        "[0-9a-f]{2,20}",
        "[0-9a-f]{32}",
        "\"[0-9a-f]{32}\"",
        "[0-9a-f]{32}-[0-9]{1,3}",
        "-scan-[0-9]{20}-[0-9a-f]{4}",
        ".{0,12}",
    ]
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        prop_oneof!["[a-c]{0,3}", "AWSLogs/1/[a-c/é]{0,8}", ".{0,20}"],
        token(),
        any::<bool>(),
        any::<u64>(),
        proptest::option::of(token()),
        prop_oneof![
            -62_135_596_800_000_000i64..253_402_300_799_000_000,
            (1_700_000_000_000i64..1_700_000_100_000).prop_map(|millis| millis * 1000)
        ],
    )
        .prop_map(|(key, sequencer, removed, size, etag, micros)| {
            let time = DateTime::from_timestamp_micros(micros).unwrap();
            if removed {
                Arrival::removed(key, sequencer, time)
            } else {
                Arrival::created(key, sequencer, size, etag, time)
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_batch_reads_back_as_written_sorted(records in proptest::collection::vec(arrival(), 0..40), zstd in any::<bool>()) {
        let compression = if zstd { Compression::Zstd } else { Compression::None };
        let encoded = encode_batch(records.clone(), compression).unwrap();
        let mut sorted = records;
        sorted.sort_by(canonical_order);
        prop_assert_eq!(decode_batch(&encoded).unwrap(), sorted);
    }

    #[test]
    fn any_bytes_decode_to_records_or_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_batch(&bytes);
        let mut versioned = vec![FORMAT_VERSION, CODEC_RAW];
        versioned.extend_from_slice(&bytes);
        let _ = decode_batch(&versioned);
    }

    #[test]
    fn truncated_or_flipped_batches_never_panic_and_truncation_is_an_error(
        records in proptest::collection::vec(arrival(), 1..12),
        zstd in any::<bool>(),
        flip_at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let compression = if zstd { Compression::Zstd } else { Compression::None };
        let encoded = encode_batch(records, compression).unwrap();
        for length in 0..encoded.len() {
            prop_assert!(decode_batch(&encoded[..length]).is_err(), "truncated to {} of {} bytes", length, encoded.len());
        }
        let mut flipped = encoded.clone();
        let index = flip_at.index(flipped.len());
        flipped[index] ^= flip;
        let _ = decode_batch(&flipped);
    }
}

// ── the fold ────────────────────────────────────────────────────────────────────────────────

/// Today's per-object record, as the DynamoDB adapter's `write_object_item` and
/// `record_removal_item` (and SQLite's ingest) leave it: a model written from those paths,
/// independent of [`KeyFold`].
#[derive(Debug, Clone, PartialEq)]
struct Today {
    sequencer: String,
    size: u64,
    etag: Option<String>,
    event_time: DateTime<Utc>,
    removed: bool,
}

fn today_apply(record: Option<Today>, event: &Arrival) -> Option<Today> {
    let new = || Today {
        sequencer: event.sequencer.clone(),
        size: event.size,
        etag: event.etag.clone(),
        event_time: event.event_time,
        removed: false,
    };
    match (event.kind, record) {
        (ArrivalKind::Created, None) => Some(new()),
        (ArrivalKind::Created, Some(recorded)) => {
            let incoming =
                sequencer::Version { sequencer: &event.sequencer, etag: event.etag.as_deref(), time: event.event_time };
            let stored = sequencer::Version {
                sequencer: &recorded.sequencer,
                etag: recorded.etag.as_deref(),
                time: recorded.event_time,
            };
            match sequencer::order(incoming, stored, recorded.removed) {
                VersionOrder::Newer => Some(new()),
                VersionOrder::ConfirmsScanned => {
                    Some(Today { sequencer: event.sequencer.clone(), event_time: event.event_time, ..recorded })
                }
                VersionOrder::NotNewer => Some(recorded),
            }
        }
        (ArrivalKind::Removed, None) => None,
        (ArrivalKind::Removed, Some(recorded)) => {
            if recorded.removed || !sequencer::supersedes(&event.sequencer, &recorded.sequencer) {
                return Some(recorded);
            }
            Some(Today { removed: true, sequencer: event.sequencer.clone(), event_time: event.event_time, ..recorded })
        }
    }
}

fn as_today(folded: Option<Folded>) -> Option<Today> {
    folded.map(|folded| Today {
        sequencer: folded.sequencer,
        size: folded.size,
        etag: folded.etag,
        event_time: folded.event_time,
        removed: folded.removed,
    })
}

/// One key's events: real ones with distinct sequencers (6 hex digits, either case), scans
/// with quoted ETags as listings give them, removals; few ETags and times, so that confirms,
/// overwrites with the same bytes and ties of time are common.
fn key_events(only_events: bool) -> impl Strategy<Value = Vec<Arrival>> {
    let event = (0u8..3, 0u32..40, 0u8..3, 0i64..6, any::<bool>());
    proptest::collection::vec(event, 1..8).prop_map(move |events| {
        let base = at("2024-01-14T10:00:00Z");
        let mut used = std::collections::BTreeSet::new();
        events
            .into_iter()
            .filter_map(|(kind, sequencer, etag, second, upper)| {
                let time = base + Duration::seconds(second);
                let etag = format!("e{etag}");
                let size = 100 + u64::from(etag.as_bytes()[1]);
                match (kind, only_events) {
                    (0, _) => {
                        let sequencer = format!("{:06x}", sequencer + 1);
                        let sequencer = if upper { sequencer.to_uppercase() } else { sequencer };
                        used.insert(sequencer.to_uppercase())
                            .then(|| Arrival::created("k", sequencer, size, Some(etag), time))
                    }
                    (1, false) => {
                        let quoted = format!("\"{etag}\"");
                        Some(Arrival::created("k", scan_sequencer(time, Some(&quoted)), size, Some(quoted), time))
                    }
                    (_, true) => None,
                    (_, false) => {
                        let sequencer = format!("{:06X}", sequencer + 1);
                        used.insert(sequencer.clone()).then(|| Arrival::removed("k", sequencer, time))
                    }
                }
            })
            .collect()
    })
}

/// Today's rule applied in sequencer order (a stable sort: the events' sequencers differ, so
/// ties are only the same scan listed twice, which are equal records).
fn today_in_sequencer_order(events: &[Arrival]) -> Option<Today> {
    let mut ordered: Vec<&Arrival> = events.iter().collect();
    ordered.sort_by(|left, right| sequencer::compare(&left.sequencer, &right.sequencer));
    ordered.into_iter().fold(None, today_apply)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The fold is the same for every arrival order, replays included, and equals today's
    /// per-object rule applied to the events in sequencer order.
    #[test]
    fn the_fold_is_todays_rule_in_sequencer_order_whatever_the_arrival_order(
        events in key_events(false),
        shuffle in any::<prop::sample::Index>(),
        replays in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let expected = today_in_sequencer_order(&events);
        prop_assert_eq!(as_today(fold(&events)), expected.clone());
        let mut arrived = events.clone();
        for replay in &replays {
            arrived.push(events[replay.index(events.len())].clone());
        }
        let rotate = shuffle.index(arrived.len());
        arrived.rotate_left(rotate);
        arrived.reverse();
        prop_assert_eq!(as_today(fold(&arrived)), expected);
    }

    /// Events alone (no removals, no scans): today's rule gives the same record for every
    /// arrival order (the greatest sequencer), and the fold equals it. With removals or scans
    /// today's result depends on the arrival order (see the two tests below).
    #[test]
    fn with_events_alone_the_fold_equals_today_for_the_order_they_arrived_in(
        events in key_events(true),
        permutation in any::<u64>(),
    ) {
        let mut arrived = events.clone();
        // Fisher-Yates with the perturbed seed: any permutation.
        let mut mix = Mix(permutation);
        for index in (1..arrived.len()).rev() {
            arrived.swap(index, mix.below(index as u64 + 1) as usize);
        }
        let today = arrived.iter().fold(None, today_apply);
        prop_assert_eq!(as_today(fold(&events)), today);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A table written before arrival items holds each key's record as an item: a fold that
    /// starts from it and takes the later events ends where the fold of all events does.
    #[test]
    fn a_fold_from_a_stored_record_takes_later_events_as_if_it_had_seen_them_all(
        events in key_events(false),
        split in any::<prop::sample::Index>(),
    ) {
        let mut ordered = events.clone();
        ordered.sort_by(canonical_order);
        let (stored, later) = ordered.split_at(split.index(ordered.len() + 1));
        let mut resumed = match fold(stored) {
            Some(record) => KeyFold::starting_from(record),
            None => KeyFold::default(),
        };
        for event in later {
            resumed.apply(event);
        }
        prop_assert_eq!(resumed.finish(), fold(&events));
    }
}

#[test]
fn a_removal_that_overtakes_its_creation_still_removes_the_version() {
    let time = at("2024-01-14T10:00:00Z");
    let created = Arrival::created("k", "0A", 10, Some("e1".to_owned()), time);
    let removed = Arrival::removed("k", "0B", time + Duration::seconds(1));
    // Today, a removal of a key with no record is dropped, so this arrival order leaves the
    // object pending (the seal then finds it gone: `missing`). Arrivals are kept, so the fold
    // sees both in sequencer order and says removed, for either order.
    assert_eq!(today_apply(today_apply(None, &removed), &created).map(|today| today.removed), Some(false));
    let folded = fold([&removed, &created]).unwrap();
    assert!(folded.removed);
    assert_eq!(folded.sequencer, "0B");
    assert_eq!((folded.size, folded.etag.as_deref()), (10, Some("e1")), "the removed version's size and ETag stay");
    assert_eq!(folded.version_sequencers, vec!["0A".to_owned()], "the removed version, for placements");
}

#[test]
fn an_event_confirming_a_scan_keeps_both_sequencers_of_the_version() {
    let listed = at("2024-01-14T10:00:00Z");
    let scanned = Arrival::created("k", scan_sequencer(listed, Some("\"e1\"")), 10, Some("\"e1\"".to_owned()), listed);
    let event =
        Arrival::created("k", "0055AED6DCD90281E5", 10, Some("e1".to_owned()), listed + Duration::milliseconds(300));
    let folded = fold([&event, &scanned]).unwrap();
    assert_eq!(folded.sequencer, event.sequencer, "later events order by the event's sequencer");
    assert_eq!(folded.etag.as_deref(), Some("\"e1\""), "the scanned record stands");
    assert_eq!(folded.version_sequencers, vec![scanned.sequencer.clone(), event.sequencer.clone()]);
    assert!(fold([&Arrival::removed("k", "01", listed)]).is_none(), "only a removal: no record, as today");
}

/// Found by the property test above when it still mixed scans in: with listings, today's rule
/// is not the same for every arrival order, because `order` between a listing and an event
/// goes by times while two listings and two events go by their own rules. The fold takes the
/// sequencer order (every listing before every event), so it keeps the event here where today,
/// had the later listing come after the event, would keep the listing. The seal's GET checks
/// the ETag it planned by, so the worst case is a `missing` record that a rescan fixes.
#[test]
fn with_listings_today_depends_on_arrival_order_and_the_fold_takes_sequencer_order() {
    let base = at("2024-01-14T10:00:00Z");
    let event = Arrival::created("k", "000001", 149, Some("e1".to_owned()), base);
    let listed = |seconds: i64| {
        let time = base + Duration::seconds(seconds);
        Arrival::created("k", scan_sequencer(time, Some("\"e0\"")), 148, Some("\"e0\"".to_owned()), time)
    };
    let (early, late) = (listed(0), listed(2));
    let event_first = [&event, &late, &early].into_iter().fold(None, today_apply).unwrap();
    let listings_first = [&early, &late, &event].into_iter().fold(None, today_apply).unwrap();
    assert_eq!(event_first.sequencer, late.sequencer, "today, event first: the later listing wins");
    assert_eq!(listings_first.sequencer, event.sequencer, "today, listings first: the event wins");
    assert_eq!(fold([&event, &late, &early]).unwrap().sequencer, event.sequencer, "the fold: sequencer order");
}

#[test]
fn a_folded_records_state_is_derived_from_placements_and_missing_marks_of_its_version() {
    let time = at("2024-01-14T10:00:00Z");
    let created = Arrival::created("k", "0A", 10, Some("e1".to_owned()), time);
    let removal = Arrival::removed("k", "0B", time);
    let newer = Arrival::created("k", "0C", 12, Some("e2".to_owned()), time);
    let named = |names: &'static [&'static str]| move |sequencer: &str| names.contains(&sequencer);
    let pending = fold([&created]).unwrap();
    assert_eq!(pending.state(named(&[]), named(&[])), ObjectState::Pending);
    assert_eq!(pending.state(named(&["0A"]), named(&[])), ObjectState::Compacted);
    assert_eq!(pending.state(named(&["09"]), named(&[])), ObjectState::Pending, "an older version's placement");
    assert_eq!(pending.state(named(&[]), named(&["0A"])), ObjectState::Missing);
    let removed = fold([&created, &removal]).unwrap();
    assert_eq!(removed.state(named(&[]), named(&[])), ObjectState::Removed);
    assert_eq!(
        removed.state(named(&["0A"]), named(&[])),
        ObjectState::Compacted,
        "removed after its commit: ignored, as today"
    );
    assert_eq!(
        removed.state(named(&[]), named(&["0A"])),
        ObjectState::Missing,
        "removed after the seal missed it: ignored, as today"
    );
    let overwritten = fold([&created, &newer]).unwrap();
    assert_eq!(
        overwritten.state(named(&["0A"]), named(&["0A"])),
        ObjectState::Pending,
        "a newer version is pending again"
    );
}

#[test]
fn large_batches_split_into_items_under_the_limit_that_read_back_whole() {
    let mut mix = Mix(7);
    let records = cloudtrail_batch(&mut mix, 10_000);
    let limit = 64 << 10;
    for compression in [Compression::Zstd, Compression::None] {
        let items = encode_batches(records.clone(), compression, limit).unwrap();
        assert!(items.len() > 1, "{compression:?}: 10,000 records need more than one item of 64 KiB");
        assert!(items.iter().all(|item| item.len() <= limit), "{compression:?}: every item under the limit");
        let decoded: Vec<Arrival> = items.iter().flat_map(|item| decode_batch(item).unwrap()).collect();
        let mut sorted = records.clone();
        sorted.sort_by(canonical_order);
        assert_eq!(decoded, sorted, "{compression:?}: the items hold the batch, in key order");
    }
    assert_eq!(encode_batches(Vec::new(), Compression::Zstd, limit).unwrap().len(), 1, "an empty batch is one item");
    assert!(encode_batches(records, Compression::Zstd, 1000).is_err(), "a limit under the largest record");
}
