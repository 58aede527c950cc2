//! Arrival items: ingest appends a batch of records per partition instead of writing an item
//! per object (issue #12, the README's "ingest in batches").
//!
//! Why: an item write costs at least a write unit however small the item, so one conditional
//! PutItem per object was ingest's whole cost (1,003 write units a thousand objects). An
//! arrival item holds a whole SQS batch's records of one partition, sorted and compressed (~51
//! bytes a CloudTrail record, [`crate::domain::arrivals`]): 5-10 units a hundred objects.
//!
//! - **Write:** unconditional and immutable. A replayed batch writes a second item whose
//!   records are duplicates; readers drop them. The partition is flagged after the items, as
//!   before, so the race with release is unchanged.
//! - **Read:** a key's record is [`combine`]d from its object item (a table's older per-object
//!   records, or an exception the seal wrote: `missing`, an expiry mark) and its arrival
//!   records, folded by today's ingest rule. A partition's arrival items are sorted inside,
//!   not across: scans merge them into key order in bounded memory ([`crate::arrivals`]).
//! - **Scans page without reading everything again:** a cursor over the merged records is
//!   kept between pages ([`ArrivalCursors`]), so the seal's key-ordered pages read the
//!   partition's arrival items once a pass, not once a page. Before a kept cursor is used again,
//!   a Query of the items written since it was made (by sort key, which starts with the
//!   writer's clock) tells whether it is stale; a stale one is made anew.
//! - **Per-key reads** (`object`, the exceptions' writes, a placement check that found new
//!   arrivals for its keys) read the partition's arrival items and keep only their keys.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::*;
use crate::arrivals::{ArrivalMerge, MergeConfig, Merged};
use crate::domain::arrivals::{decode_batch, encode_batches, Arrival, ArrivalsError, Compression};
use crate::domain::combined::{combine, KeyRecord};

/// The most bytes of records one arrival item holds: DynamoDB's limit is 400 KB an item.
const ARRIVAL_ITEM_MAX_BYTES: usize = 300_000;

/// How far before a cursor's making a reader looks for arrival items it may not have seen: an
/// item's sort key starts with its writer's clock, read before the PutItem. A writer whose
/// clock lags ours, or that stalls between the two, by more than this is seen by the next
/// cursor made, not by a kept one (nothing is lost: release always reads afresh).
const ARRIVAL_CLOCK_MARGIN_MINUTES: i64 = 15;

/// How many partitions' cursors one manifest keeps (a seal works on a few partitions at once).
const KEPT_CURSORS: usize = 4;
/// Views kept for placement checks ([`ArrivalCursors`]), one a partition.
const UNCHECKED_VIEWS: usize = 64;

/// The memory a cursor's merge may hold before it spills sorted runs to a temporary file.
const CURSOR_MERGE_BYTES: usize = 8 << 20;

pub(super) fn arrival_pk(bucket: &str, path: &str) -> String {
    format!("A#{bucket}#{path}")
}

/// The sort key of an arrival item written at `at`: the time (20 digits of microseconds, so
/// string order is time order) and a hash of the records, so that two writers never collide.
fn arrival_sk(at: DateTime<Utc>, records: &[u8]) -> String {
    format!("{}#{:016x}", time_prefix(at), fnv1a_64(records))
}

fn time_prefix(at: DateTime<Utc>) -> String {
    format!("{:020}", micros(at).max(0))
}

/// A partition's arrival records merged into key order, read a key at a time.
pub(super) struct ArrivalCursor {
    partition: PartitionKey,
    records: Merged,
    peeked: Option<Arrival>,
    /// Every key up to and including this one was handed out or skipped.
    position: Option<String>,
    made_at: DateTime<Utc>,
    /// The sort keys of the items written within the margin before `made_at`.
    recent: HashSet<String>,
    /// Whether the partition had any arrival item when the cursor was made.
    pub(super) any: bool,
}

impl ArrivalCursor {
    fn view(&self) -> CursorView {
        (self.made_at, self.recent.clone())
    }

    fn peek(&mut self) -> Result<Option<&Arrival>, ManifestError> {
        if self.peeked.is_none() {
            self.peeked = self.records.next().transpose().map_err(merge_error)?;
        }
        Ok(self.peeked.as_ref())
    }

    /// The next key, if any.
    pub(super) fn peek_key(&mut self) -> Result<Option<&str>, ManifestError> {
        Ok(self.peek()?.map(|record| record.key.as_str()))
    }

    /// The next key's records, in canonical order.
    pub(super) fn next_key(&mut self) -> Result<Option<(String, Vec<Arrival>)>, ManifestError> {
        let Some(first) = self.peek()?.cloned() else { return Ok(None) };
        self.peeked = None;
        let key = first.key.clone();
        let mut records = vec![first];
        while self.peek()?.is_some_and(|record| record.key == key) {
            records.extend(self.peeked.take());
        }
        self.position = Some(key.clone());
        Ok(Some((key, records)))
    }

    /// Drops every key up to and including `after`.
    fn skip_through(&mut self, after: &str) -> Result<(), ManifestError> {
        while self.peek_key()?.is_some_and(|key| key <= after) {
            self.next_key()?;
        }
        Ok(())
    }
}

fn merge_error(error: crate::arrivals::MergeError) -> ManifestError {
    ManifestError::backend(BACKEND_NAME, error)
}

/// How long a scan that found no object item in a partition lets later non-fresh reads of
/// the same manifest value skip its 16 shards.
const EMPTY_SHARDS_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// The cursors kept between pages, most recently used last; and the partitions whose shards a
/// scan lately found empty.
///
/// Why the second: a partition recorded by arrival items alone has no object item unless the
/// seal writes an exception, yet every pass of a seal (the plan, each window, the placement
/// check) queried its 16 shards, a unit and a request each, empty or not: most of the seal's
/// DynamoDB requests. Skipping them is a read that may miss an object item written since by
/// another process: an ingest with a record TTL, or an older ingest-fn during a deployment.
/// That is the same as an arrival written after the read, which the seal also leaves to its
/// next run: `release` and the counts never skip (they read afresh), so such an object keeps
/// its partition open. Object items this process writes forget the partition first.
///
/// The placement check asks what arrived since the scan that listed the placed sources, and
/// the seal lists the next window before it records one's placements: so the check goes by the
/// oldest cursor kept since the last check (`unchecked`), not by the newest, which may have
/// read an arrival of a key placed from an older page. An older view only rechecks more keys.
#[derive(Default)]
pub(super) struct ArrivalCursors {
    kept: std::sync::Mutex<Vec<ArrivalCursor>>,
    empty_shards: std::sync::Mutex<HashMap<PartitionKey, std::time::Instant>>,
    unchecked: std::sync::Mutex<HashMap<PartitionKey, CursorView>>,
}

/// When a cursor was made, and the recent items it read.
type CursorView = (DateTime<Utc>, HashSet<String>);

impl ArrivalCursors {
    pub(super) fn shards_known_empty(&self, partition: &PartitionKey) -> bool {
        let empty = self.empty_shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        empty.get(partition).is_some_and(|since| since.elapsed() < EMPTY_SHARDS_FOR)
    }

    pub(super) fn note_shards_empty(&self, partition: &PartitionKey) {
        let mut empty = self.empty_shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        empty.retain(|_, since| since.elapsed() < EMPTY_SHARDS_FOR);
        empty.insert(partition.clone(), std::time::Instant::now());
    }

    pub(super) fn forget_shards_empty(&self, partition: &PartitionKey) {
        let mut empty = self.empty_shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        empty.remove(partition);
    }

    /// A kept cursor of `partition` that has not passed `after` yet.
    fn take(&self, partition: &PartitionKey, after: Option<&str>) -> Option<ArrivalCursor> {
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = kept.iter().position(|cursor| {
            cursor.partition == *partition
                && match (&cursor.position, after) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(position), Some(after)) => position.as_str() <= after,
                }
        })?;
        Some(kept.remove(index))
    }

    /// The view of the oldest cursor of the partition kept since the last placement check.
    fn seen(&self, partition: &PartitionKey) -> Option<CursorView> {
        let unchecked = self.unchecked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        unchecked.get(partition).cloned()
    }

    /// After a placement check: what the next check must go by is the partition's cursor kept
    /// now, which listed every source not yet placed (or an older one, as [`Self::keep`] says).
    fn placements_checked(&self, partition: &PartitionKey) {
        let kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let view = kept.iter().find(|cursor| cursor.partition == *partition).map(ArrivalCursor::view);
        let mut unchecked = self.unchecked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match view {
            Some(view) => unchecked.insert(partition.clone(), view),
            None => unchecked.remove(partition),
        };
    }

    fn keep(&self, cursor: ArrivalCursor) {
        {
            let mut unchecked = self.unchecked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !unchecked.contains_key(&cursor.partition) {
                // Bounded by the partitions one process seals at once; an evicted view makes its
                // partition's next check read the last half hour instead.
                if unchecked.len() >= UNCHECKED_VIEWS {
                    let oldest = unchecked.iter().min_by_key(|(_, (made_at, _))| *made_at).map(|(key, _)| key.clone());
                    if let Some(oldest) = oldest {
                        unchecked.remove(&oldest);
                    }
                }
                unchecked.insert(cursor.partition.clone(), cursor.view());
            }
        }
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.retain(|other| other.partition != cursor.partition);
        if kept.len() >= KEPT_CURSORS {
            kept.remove(0);
        }
        kept.push(cursor);
    }
}

impl DynamoDbManifest {
    // ── writes ──────────────────────────────────────────────────────────────────────────

    /// Records a batch of created objects as arrival items, one or more per partition, then
    /// flags each partition. A backfill scan's listing, and a record the arrival encoding
    /// refuses (a key over 1,024 bytes, which S3 never sends), get an object item instead, as
    /// before arrival items.
    pub(super) async fn append_objects(&self, objects: &[NewObject]) -> Result<Vec<IngestOutcome>, ManifestError> {
        self.check_schema_once().await?;
        let mut outcomes = vec![IngestOutcome::Appended; objects.len()];
        // Owned: a stream of borrowed values trips the `Send` bound async_trait puts on the caller.
        let mut by_partition: BTreeMap<(String, String), (NewObject, Vec<Arrival>)> = BTreeMap::new();
        let mut one_by_one = Vec::new();
        for (index, object) in objects.iter().enumerate() {
            let record =
                Arrival::created(&object.key, &object.sequencer, object.size, object.etag.clone(), object.event_time);
            // A backfill scan's listings keep object items: two scans may list two versions
            // modified in the same second, and only the order in which they were recorded says
            // which is current (the later listing), which arrival records, merged by sequencer,
            // do not keep. Scans are a one-off (onboarding, recovery), not the steady state.
            if sequencer::is_scan(&object.sequencer) || record.check().is_err() {
                one_by_one.push(index);
                continue;
            }
            by_partition
                .entry((object.bucket.clone(), object.partition.path.clone()))
                .or_insert_with(|| (object.clone(), Vec::new()))
                .1
                .push(record);
        }
        // Every partition runs to its end even when another fails, so no written item is left
        // unflagged by a failed batch (a retried one is flagged by its replay, as after a crash
        // between the two writes).
        let written: Vec<Result<(), ManifestError>> = stream::iter(by_partition.into_values())
            .map(|(object, records)| async move {
                self.write_arrival_items(&object.bucket, &object.partition.path, records).await?;
                // After the items: see "The race between ingest and release" in the module doc.
                self.flag_partition_pending(&object).await
            })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .collect()
            .await;
        written.into_iter().collect::<Result<Vec<()>, ManifestError>>()?;
        if !one_by_one.is_empty() {
            let items: Vec<NewObject> = one_by_one.iter().map(|&index| objects[index].clone()).collect();
            for (index, outcome) in one_by_one.into_iter().zip(self.record_object_items(&items).await?) {
                outcomes[index] = outcome;
            }
        }
        Ok(outcomes)
    }

    /// Records a removal as an arrival record: no read, and no flag (a removal makes nothing
    /// pending). Whether it removes a pending object or is ignored is decided by the readers.
    pub(super) async fn append_removal(&self, removal: &RemovedObject) -> Result<IngestOutcome, ManifestError> {
        let Ok(partition) = self.layout.partition_of(&removal.key) else {
            return Ok(IngestOutcome::RemovalIgnored);
        };
        let record = Arrival::removed(&removal.key, &removal.sequencer, removal.event_time);
        if record.check().is_err() {
            return self.record_removal_item(removal).await;
        }
        self.check_schema_once().await?;
        self.write_arrival_items(&removal.bucket, &partition.path, vec![record]).await?;
        Ok(IngestOutcome::Appended)
    }

    pub(super) async fn write_arrival_items(
        &self,
        bucket: &str,
        path: &str,
        records: Vec<Arrival>,
    ) -> Result<(), ManifestError> {
        let count = records.len();
        let batches = encode_batches(records, Compression::Zstd, ARRIVAL_ITEM_MAX_BYTES)
            .map_err(|error| ManifestError::backend(BACKEND_NAME, error))?;
        let now = Utc::now();
        let items = batches
            .into_iter()
            .map(|bytes| {
                let mut item = key_of(arrival_pk(bucket, path), arrival_sk(now, &bytes));
                item.insert("records".to_owned(), AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(bytes)));
                item
            })
            .collect();
        self.put_items(items).await?;
        tracing::debug!(bucket, path, records = count, "appended arrival records");
        Ok(())
    }

    // ── reads ───────────────────────────────────────────────────────────────────────────

    /// Calls `each` with every arrival item of `partition` (strongly consistent, page by
    /// page), from sort key `from` on: its sort key and records.
    async fn for_each_arrival_item(
        &self,
        partition: &PartitionKey,
        from: Option<String>,
        mut each: impl FnMut(String, Vec<Arrival>) -> Result<(), ManifestError>,
    ) -> Result<(), ManifestError> {
        let (key_condition, mut expression_values) = match from {
            None => ("#pk = :pk", HashMap::new()),
            Some(from) => ("#pk = :pk AND #sk >= :from", HashMap::from([(":from".to_owned(), string_value(from))])),
        };
        expression_values.insert(":pk".to_owned(), string_value(arrival_pk(&partition.bucket, &partition.path)));
        let mut start_key = None;
        loop {
            let page =
                self.query_page(None, key_condition, None, expression_values.clone(), true, start_key, None).await?;
            for item in page.items() {
                let reader = ItemReader::new(item, &self.table);
                let sort_key = reader.string("sk")?;
                let records = match item.get("records") {
                    Some(AttributeValue::B(bytes)) => {
                        decode_batch(bytes.as_ref()).map_err(|source| damaged(&self.table, item, source))?
                    }
                    _ => return Err(reader.malformed("records")),
                };
                each(sort_key, records)?;
            }
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                return Ok(());
            }
        }
    }

    /// Whether the partition has any arrival item (one strongly consistent Query of one item).
    pub(super) async fn has_arrivals(&self, partition: &PartitionKey) -> Result<bool, ManifestError> {
        let page = self
            .query_page(
                None,
                "#pk = :pk",
                None,
                values([(":pk", string_value(arrival_pk(&partition.bucket, &partition.path)))]),
                true,
                None,
                Some(1),
            )
            .await?;
        Ok(!page.items().is_empty())
    }

    /// The arrival records of `keys` (one partition's), each key's in canonical order.
    pub(super) async fn arrivals_of(
        &self,
        partition: &PartitionKey,
        keys: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, Vec<Arrival>>, ManifestError> {
        let mut found: BTreeMap<String, Vec<Arrival>> = BTreeMap::new();
        if keys.is_empty() {
            return Ok(found);
        }
        self.for_each_arrival_item(partition, None, |_, records| {
            for record in records {
                if keys.contains(record.key.as_str()) {
                    found.entry(record.key.clone()).or_default().push(record);
                }
            }
            Ok(())
        })
        .await?;
        for records in found.values_mut() {
            records.sort_by(crate::domain::arrivals::canonical_order);
            records.dedup();
        }
        Ok(found)
    }

    /// The keys among `keys` with an arrival record that the scan the seal planned from may
    /// not have seen: in items written since the oldest cursor kept since the last check was
    /// made (less the clock margin) that it did not read, or with no kept cursor, in the last
    /// half hour. The placement check reads those keys again in full; the others are as the
    /// scan saw them.
    pub(super) async fn keys_arrived_since_scan(
        &self,
        partition: &PartitionKey,
        keys: &BTreeSet<&str>,
    ) -> Result<BTreeSet<String>, ManifestError> {
        let (made_at, seen) = self
            .arrival_cursors
            .seen(partition)
            .unwrap_or_else(|| (Utc::now() - Duration::minutes(ARRIVAL_CLOCK_MARGIN_MINUTES), HashSet::new()));
        let from = time_prefix(made_at - Duration::minutes(ARRIVAL_CLOCK_MARGIN_MINUTES));
        let mut found = BTreeSet::new();
        self.for_each_arrival_item(partition, Some(from), |sort_key, records| {
            if !seen.contains(&sort_key) {
                found.extend(records.into_iter().map(|record| record.key).filter(|key| keys.contains(key.as_str())));
            }
            Ok(())
        })
        .await?;
        self.arrival_cursors.placements_checked(partition);
        Ok(found)
    }

    /// The current records of `keys` of one partition: object items and arrival records
    /// combined, not yet derived. Reads the partition's arrival items once.
    pub(super) async fn combined_records(
        &self,
        partition: &PartitionKey,
        keys: &[&str],
    ) -> Result<Vec<KeyRecord>, ManifestError> {
        let wanted: BTreeSet<&str> = keys.iter().copied().collect();
        let listed: Vec<&str> = wanted.iter().copied().collect();
        let mut stored = if self.arrival_cursors.shards_known_empty(partition) {
            HashMap::new()
        } else {
            self.object_items(partition, &listed, None).await?
        };
        let mut arrivals = self.arrivals_of(partition, &wanted).await?;
        let mut records = Vec::new();
        for key in wanted {
            let item = stored.remove(key).map(|item| object_from_item(&item, &self.table)).transpose()?;
            let key_arrivals = arrivals.remove(key).unwrap_or_default();
            records.extend(combine(&partition.bucket, &partition.path, item, &key_arrivals));
        }
        Ok(records)
    }

    /// A cursor over the partition's arrival records after `after`: a kept one if it is still
    /// fresh, else a new one (`fresh` always makes a new one: release, counts).
    pub(super) async fn arrival_cursor(
        &self,
        partition: &PartitionKey,
        after: Option<&str>,
        fresh: bool,
    ) -> Result<ArrivalCursor, ManifestError> {
        if !fresh {
            if let Some(mut cursor) = self.arrival_cursors.take(partition, after) {
                if self.cursor_is_current(&cursor).await? {
                    if let Some(after) = after {
                        cursor.skip_through(after)?;
                    }
                    return Ok(cursor);
                }
            }
        }
        let made_at = Utc::now();
        let margin_from = time_prefix(made_at - Duration::minutes(ARRIVAL_CLOCK_MARGIN_MINUTES));
        let mut merge = ArrivalMerge::new(MergeConfig { memory_bytes: CURSOR_MERGE_BYTES, ..MergeConfig::default() })
            .map_err(merge_error)?;
        let mut recent = HashSet::new();
        let mut any = false;
        self.for_each_arrival_item(partition, None, |sort_key, records| {
            any = true;
            if sort_key >= margin_from {
                recent.insert(sort_key);
            }
            records.into_iter().try_for_each(|record| merge.push(record)).map_err(merge_error)
        })
        .await?;
        let records = merge.finish().map_err(merge_error)?;
        let mut cursor =
            ArrivalCursor { partition: partition.clone(), records, peeked: None, position: None, made_at, recent, any };
        if let Some(after) = after {
            cursor.skip_through(after)?;
        }
        Ok(cursor)
    }

    /// Keeps a cursor for the next page of the same scan.
    pub(super) fn keep_cursor(&self, cursor: ArrivalCursor) {
        self.arrival_cursors.keep(cursor);
    }

    /// Called before this process writes an object item of `partition` (see [`ArrivalCursors`]).
    pub(super) fn forget_shards_empty(&self, partition: &PartitionKey) {
        self.arrival_cursors.forget_shards_empty(partition);
    }

    pub(super) fn shards_known_empty(&self, partition: &PartitionKey) -> bool {
        self.arrival_cursors.shards_known_empty(partition)
    }

    pub(super) fn note_shards_empty(&self, partition: &PartitionKey) {
        self.arrival_cursors.note_shards_empty(partition);
    }

    /// Whether no arrival item was written since the cursor was made: one Query of the items
    /// from its clock margin on, which it saw all of unless one is new.
    async fn cursor_is_current(&self, cursor: &ArrivalCursor) -> Result<bool, ManifestError> {
        let from = time_prefix(cursor.made_at - Duration::minutes(ARRIVAL_CLOCK_MARGIN_MINUTES));
        let mut current = true;
        self.for_each_arrival_item(&cursor.partition, Some(from), |sort_key, _| {
            current &= cursor.recent.contains(&sort_key);
            Ok(())
        })
        .await?;
        Ok(current)
    }
}

fn damaged(table: &str, item: &Item, source: ArrivalsError) -> ManifestError {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(text)) => text.clone(),
        _ => String::new(),
    };
    DynamoDbManifestError::DamagedArrivals { table: table.to_owned(), pk: text("pk"), sk: text("sk"), source }.into()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn arrival_sort_keys_order_by_time_and_differ_by_content() {
        let early = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let late = early + Duration::microseconds(1);
        assert!(arrival_sk(early, b"zzz") < arrival_sk(late, b"aaa"));
        assert_ne!(arrival_sk(early, b"a"), arrival_sk(early, b"b"));
        assert!(arrival_sk(late, b"a") >= time_prefix(late), "a margin query by time prefix finds it");
    }
}
