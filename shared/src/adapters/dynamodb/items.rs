//! How records become items and back: keys, attribute values, typed reads.

use super::*;

// ── keys ────────────────────────────────────────────────────────────────────────────────────

pub(super) fn partition_item_pk(bucket: &str, path: &str) -> String {
    format!("P#{bucket}#{path}")
}

/// The shard of an object key: FNV-1a (64 bit) of its UTF-8 bytes, modulo [`OBJECT_SHARDS`].
/// Part of the table's format; never change it.
pub fn object_shard(key: &str) -> u32 {
    (fnv1a_64(key.as_bytes()) % u64::from(OBJECT_SHARDS)) as u32
}

/// FNV-1a, 64 bit: the shard of an object key, and the hash in an arrival item's sort key.
pub(super) fn fnv1a_64(bytes: &[u8]) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME))
}

pub(super) fn object_shard_pk(bucket: &str, path: &str, shard: u32) -> String {
    format!("O#{bucket}#{path}#{shard:02}")
}

pub(super) fn object_item_pk(bucket: &str, path: &str, key: &str) -> String {
    object_shard_pk(bucket, path, object_shard(key))
}

pub(super) fn output_item_sk(output: &OutputRecord) -> String {
    format!(
        "{OUTPUT_SORT_KEY_PREFIX}{:020}#{:010}#{}#{}",
        output.generation, output.part_number, output.bucket, output.key
    )
}

pub(super) fn output_pointer_pk(bucket: &str, key: &str) -> String {
    format!("OUTKEY#{bucket}#{key}")
}

/// The [`SOURCES_INDEX`] key of an output's sources. The path's length keeps a path holding
/// `#` from ever reading as another (path, output key) pair.
pub(super) fn sources_index_pk(source_bucket: &str, partition_path: &str, output_key: &str) -> String {
    format!("{source_bucket}#{}#{partition_path}{output_key}", partition_path.len())
}

/// Microseconds as 20 digits whose string order is numeric order, negatives included.
pub(super) fn ordered_micros(micros: i64) -> String {
    format!("{:020}", (micros as u64) ^ (1 << 63))
}

pub(super) fn pending_index_sk(closes_at: DateTime<Utc>, path: &str, bucket: &str) -> String {
    format!("{}#{path}#{bucket}", ordered_micros(closes_at.timestamp_micros()))
}

pub(super) fn partitions_index_sk(bucket: &str, path: &str) -> String {
    // Bucket names only hold [a-z0-9.-], all after '#': string order is (bucket, path) order.
    format!("{bucket}#{path}")
}

pub(super) fn key_of(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), AttributeValue::S(pk)), ("sk".to_owned(), AttributeValue::S(sk.into()))])
}

// ── attribute values ────────────────────────────────────────────────────────────────────────

pub(super) fn string_value(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn number_value(value: impl fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub(super) fn time_value(time: DateTime<Utc>) -> AttributeValue {
    number_value(micros(time))
}

/// Drops what the table does not keep, so that returned values equal what a later read returns.
pub(super) fn truncated_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// `#name` → `name` for every `#name` in the expressions: the attribute names this adapter
/// uses include DynamoDB reserved words (`state`, `size`, `key`, `bucket`), so every
/// expression names attributes through placeholders.
pub(super) fn names_in(expressions: &[&str]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for expression in expressions {
        let mut rest = *expression;
        while let Some(start) = rest.find('#') {
            let after = &rest[start + 1..];
            let length = after.find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'));
            let name = &after[..length.unwrap_or(after.len())];
            if !name.is_empty() {
                names.insert(format!("#{name}"), name.to_owned());
            }
            rest = &after[name.len()..];
        }
    }
    names
}

pub(super) fn values<const N: usize>(pairs: [(&str, AttributeValue); N]) -> HashMap<String, AttributeValue> {
    pairs.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
}

/// Reads typed attributes of one item, naming the item in errors.
pub(super) struct ItemReader<'item> {
    pub(super) item: &'item Item,
    pub(super) table: &'item str,
}

impl<'item> ItemReader<'item> {
    pub(super) fn new(item: &'item Item, table: &'item str) -> Self {
        Self { item, table }
    }

    pub(super) fn malformed(&self, attribute: &'static str) -> ManifestError {
        let describe = |name: &str| match self.item.get(name) {
            Some(AttributeValue::S(text)) => text.clone(),
            _ => "?".to_owned(),
        };
        DynamoDbManifestError::Malformed {
            table: self.table.to_owned(),
            item: format!("({}, {})", describe("pk"), describe("sk")),
            attribute,
        }
        .into()
    }

    pub(super) fn optional_string(&self, attribute: &'static str) -> Result<Option<String>, ManifestError> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(text)) => Ok(Some(text.clone())),
            Some(_) => Err(self.malformed(attribute)),
        }
    }

    pub(super) fn string(&self, attribute: &'static str) -> Result<String, ManifestError> {
        self.optional_string(attribute)?.ok_or_else(|| self.malformed(attribute))
    }

    pub(super) fn optional_number<T: FromStr>(&self, attribute: &'static str) -> Result<Option<T>, ManifestError> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(text)) => text.parse().map(Some).map_err(|_| self.malformed(attribute)),
            Some(_) => Err(self.malformed(attribute)),
        }
    }

    pub(super) fn number<T: FromStr>(&self, attribute: &'static str) -> Result<T, ManifestError> {
        self.optional_number(attribute)?.ok_or_else(|| self.malformed(attribute))
    }

    pub(super) fn optional_time(&self, attribute: &'static str) -> Result<Option<DateTime<Utc>>, ManifestError> {
        match self.optional_number::<i64>(attribute)? {
            None => Ok(None),
            Some(value) => DateTime::from_timestamp_micros(value).map(Some).ok_or_else(|| self.malformed(attribute)),
        }
    }

    pub(super) fn time(&self, attribute: &'static str) -> Result<DateTime<Utc>, ManifestError> {
        self.optional_time(attribute)?.ok_or_else(|| self.malformed(attribute))
    }

    pub(super) fn state<S: FromStr>(&self, attribute: &'static str) -> Result<S, ManifestError> {
        self.string(attribute)?.parse().map_err(|_| self.malformed(attribute))
    }

    pub(super) fn has(&self, attribute: &str) -> bool {
        self.item.contains_key(attribute)
    }
}

/// A partition item without its derived counts.
pub(super) struct StoredPartition {
    pub(super) key: PartitionKey,
    pub(super) period_start: DateTime<Utc>,
    pub(super) period_end: DateTime<Utc>,
    pub(super) closes_at: DateTime<Utc>,
    pub(super) state: PartitionState,
    pub(super) generation: u64,
    pub(super) lock_owner: Option<String>,
    pub(super) lease_expires_at: Option<DateTime<Utc>>,
    pub(super) sealed_at: Option<DateTime<Utc>>,
    /// Absent on items written before the counter existed; ingest creates it.
    pub(super) ingest_counter: Option<u64>,
    pub(super) flagged_pending: bool,
}

impl StoredPartition {
    pub(super) fn from_item(item: &Item, table: &str) -> Result<Self, ManifestError> {
        let reader = ItemReader::new(item, table);
        Ok(Self {
            key: PartitionKey { bucket: reader.string("bucket")?, path: reader.string("path")? },
            period_start: reader.time("period_start")?,
            period_end: reader.time("period_end")?,
            closes_at: reader.time("closes_at")?,
            state: reader.state("state")?,
            generation: reader.number("generation")?,
            lock_owner: reader.optional_string("lock_owner")?,
            lease_expires_at: reader.optional_time("lease_expires_at")?,
            sealed_at: reader.optional_time("sealed_at")?,
            ingest_counter: reader.optional_number("ingest_counter")?,
            flagged_pending: reader.has("gsi1pk"),
        })
    }

    pub(super) fn holds(&self, lease: &Lease) -> bool {
        self.generation == lease.generation && self.lock_owner.as_deref() == Some(lease.owner.as_str())
    }

    pub(super) fn with_counts(self, counts: PartitionCounts) -> PartitionRecord {
        PartitionRecord {
            key: self.key,
            period_start: self.period_start,
            period_end: self.period_end,
            closes_at: self.closes_at,
            state: self.state,
            generation: self.generation,
            lock_owner: self.lock_owner,
            lease_expires_at: self.lease_expires_at,
            pending_objects: counts.pending_objects,
            pending_bytes: counts.pending_bytes,
            compacted_objects: counts.compacted_objects,
            compacted_bytes: counts.compacted_bytes,
            committed_outputs: counts.committed_outputs,
            sealed_at: self.sealed_at,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartitionCounts {
    pub(super) pending_objects: u64,
    pub(super) pending_bytes: u64,
    pub(super) compacted_objects: u64,
    pub(super) compacted_bytes: u64,
    pub(super) committed_outputs: u64,
}

impl PartitionCounts {
    /// Counts one object in `state` of `size` bytes (only pending and compacted ones count).
    pub(super) fn add(&mut self, state: ObjectState, size: u64) {
        match state {
            ObjectState::Pending => {
                self.pending_objects += 1;
                self.pending_bytes += size;
            }
            ObjectState::Compacted => {
                self.compacted_objects += 1;
                self.compacted_bytes += size;
            }
            ObjectState::Missing | ObjectState::Removed => {}
        }
    }
}

pub(super) fn object_from_item(item: &Item, table: &str) -> Result<ObjectRecord, ManifestError> {
    let reader = ItemReader::new(item, table);
    let placement = match reader.optional_string("output_key")? {
        None => None,
        Some(output_key) => Some(Placement {
            output_key,
            generation: reader.number("output_generation")?,
            offset: reader.number("output_offset")?,
            length: reader.number("output_length")?,
            sha256: reader.string("output_sha256")?,
            separator_bytes: reader.number("output_separator_bytes")?,
        }),
    };
    Ok(ObjectRecord {
        bucket: reader.string("bucket")?,
        key: reader.string("sk")?,
        partition_path: reader.string("partition_path")?,
        size: reader.number("size")?,
        etag: reader.optional_string("etag")?,
        sequencer: reader.optional_string("sequencer")?.unwrap_or_default(),
        event_time: reader.time("event_time")?,
        state: reader.state("state")?,
        placement,
        expiry_marked_at: reader.optional_time("expiry_marked_at")?,
        note: reader.optional_string("note")?,
    })
}

pub(super) fn output_from_item(item: &Item, table: &str) -> Result<OutputRecord, ManifestError> {
    let reader = ItemReader::new(item, table);
    Ok(OutputRecord {
        bucket: reader.string("bucket")?,
        key: reader.string("key")?,
        partition: PartitionKey { bucket: reader.string("partition_bucket")?, path: reader.string("partition_path")? },
        generation: reader.number("generation")?,
        part_number: reader.number("part_number")?,
        state: reader.state("state")?,
        size: reader.optional_number("size")?,
        sha256: reader.optional_string("sha256")?,
        object_count: reader.number("object_count")?,
        upload_id: reader.optional_string("upload_id")?,
        created_at: reader.time("created_at")?,
        committed_at: reader.optional_time("committed_at")?,
        expiry: expiry_cursor_from_item(&reader)?,
    })
}

/// The item of a newly recorded object version: a full replacement, so that nothing decided
/// about an older version (placement, compaction, expiry, note) carries over.
pub(super) fn new_object_item(object: &NewObject) -> Item {
    let mut item = key_of(object_item_pk(&object.bucket, &object.partition.path, &object.key), object.key.clone());
    item.insert("bucket".to_owned(), string_value(&object.bucket));
    item.insert("partition_path".to_owned(), string_value(&object.partition.path));
    item.insert("size".to_owned(), number_value(object.size));
    if let Some(etag) = &object.etag {
        item.insert("etag".to_owned(), string_value(etag));
    }
    item.insert("sequencer".to_owned(), string_value(&object.sequencer));
    item.insert("event_time".to_owned(), time_value(object.event_time));
    item.insert("state".to_owned(), string_value(ObjectState::Pending.as_str()));
    item
}

/// The whole item of `record`, as a reader reads it back ([`object_from_item`]): for a record
/// that lived in arrival records only, when the seal must write something of its own on it
/// (`missing`, an expiry mark).
pub(super) fn object_item_of(record: &ObjectRecord) -> Item {
    let mut item = key_of(object_item_pk(&record.bucket, &record.partition_path, &record.key), record.key.clone());
    item.insert("bucket".to_owned(), string_value(&record.bucket));
    item.insert("partition_path".to_owned(), string_value(&record.partition_path));
    item.insert("size".to_owned(), number_value(record.size));
    if let Some(etag) = &record.etag {
        item.insert("etag".to_owned(), string_value(etag));
    }
    item.insert("sequencer".to_owned(), string_value(&record.sequencer));
    item.insert("event_time".to_owned(), time_value(record.event_time));
    item.insert("state".to_owned(), string_value(record.state.as_str()));
    if let Some(note) = &record.note {
        item.insert("note".to_owned(), string_value(note));
    }
    if let Some(at) = record.expiry_marked_at {
        item.insert("expiry_marked_at".to_owned(), time_value(at));
    }
    if let Some(placement) = &record.placement {
        item.insert("output_key".to_owned(), string_value(&placement.output_key));
        item.insert("output_generation".to_owned(), number_value(placement.generation));
        item.insert("output_offset".to_owned(), number_value(placement.offset));
        item.insert("output_length".to_owned(), number_value(placement.length));
        item.insert("output_sha256".to_owned(), string_value(&placement.sha256));
        item.insert("output_separator_bytes".to_owned(), number_value(placement.separator_bytes));
    }
    item
}

pub(super) fn new_partition_item(object: &NewObject) -> Item {
    let path = &object.partition.path;
    let mut item = key_of(partition_item_pk(&object.bucket, path), PARTITION_SORT_KEY);
    item.insert("bucket".to_owned(), string_value(&object.bucket));
    item.insert("path".to_owned(), string_value(path));
    item.insert("period_start".to_owned(), time_value(object.partition.period.start));
    item.insert("period_end".to_owned(), time_value(object.partition.period.end));
    item.insert("closes_at".to_owned(), time_value(object.closes_at));
    item.insert("state".to_owned(), string_value(PartitionState::Open.as_str()));
    item.insert("generation".to_owned(), number_value(0));
    item.insert("ingest_counter".to_owned(), number_value(1));
    item.insert("gsi1pk".to_owned(), string_value(PENDING_FLAG));
    item.insert("gsi1sk".to_owned(), string_value(pending_index_sk(object.closes_at, path, &object.bucket)));
    item.insert("gsi3pk".to_owned(), string_value(PARTITIONS_FLAG));
    item.insert("gsi3sk".to_owned(), string_value(partitions_index_sk(&object.bucket, path)));
    item
}

/// An output's expiry cursor: `expiry_done` is written by the commit of every output that
/// tracks one, so an item without it was committed by an older version (or is not committed).
fn expiry_cursor_from_item(reader: &ItemReader<'_>) -> Result<Option<ExpiryCursor>, ManifestError> {
    let done = match reader.item.get("expiry_done") {
        None => return Ok(None),
        Some(AttributeValue::Bool(done)) => *done,
        Some(_) => return Err(reader.malformed("expiry_done")),
    };
    let through =
        match (reader.optional_number("expiry_through_offset")?, reader.optional_string("expiry_through_key")?) {
            (Some(offset), Some(key)) => Some((offset, key)),
            _ => None,
        };
    Ok(Some(ExpiryCursor { through, done, marked_at: reader.optional_time("expiry_marked_at")? }))
}
