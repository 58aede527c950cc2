//! Partition items: counts derived from the object items, the closed-partition index, release.

use super::*;

/// What release step one saw.
pub(super) struct ReleaseCount {
    pub(super) stored: StoredPartition,
    /// Counted after `stored` was read: the record release answers has them, not a recount.
    pub(super) counts: PartitionCounts,
}

impl DynamoDbManifest {
    /// A partition's pending and compacted counts and bytes, summed over its shards, and its
    /// committed outputs. Reads every object item of the partition: see the module doc. With
    /// outputs whose sources are derived (`derived`), the shards are read merged in key order
    /// and derived a batch at a time, which also reads the chunks holding stored-pending keys.
    pub(super) async fn counts(&self, key: &PartitionKey) -> Result<PartitionCounts, ManifestError> {
        let output_items = self.output_items(key).await?;
        let committed_outputs = committed_outputs_of(&output_items, &self.table)?;
        let deriving = derived::deriving_outputs(&output_items, &self.table)?;
        let mut counts = PartitionCounts { committed_outputs, ..PartitionCounts::default() };
        if !deriving.is_empty() || self.has_arrivals(key).await? {
            let query = ObjectQuery { state: None, ..ObjectQuery::in_state(ObjectState::Pending) };
            self.for_each_derived(key, &query, &deriving, |batch| {
                for record in batch {
                    counts.add(record.record.state, record.record.size);
                }
            })
            .await?;
            return Ok(counts);
        }
        let shard_counts = stream::iter(0..OBJECT_SHARDS)
            .map(|shard| self.count_shard(object_shard_pk(&key.bucket, &key.path, shard)))
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<_>>()
            .await?;
        for shard in shard_counts {
            counts.pending_objects += shard.pending_objects;
            counts.pending_bytes += shard.pending_bytes;
            counts.compacted_objects += shard.compacted_objects;
            counts.compacted_bytes += shard.compacted_bytes;
        }
        Ok(counts)
    }

    pub(super) async fn count_shard(&self, shard_pk: String) -> Result<PartitionCounts, ManifestError> {
        let mut counts = PartitionCounts::default();
        let mut start_key: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .projection_expression("#state, #size")
                .set_expression_attribute_names(Some(names_in(&["#pk", "#state, #size"])))
                .expression_attribute_values(":pk", string_value(&shard_pk))
                .consistent_read(true)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|error| self.request_error("Query", error.into()))?;
            for item in page.items() {
                let reader = ItemReader::new(item, &self.table);
                counts.add(reader.state("state")?, reader.number("size")?);
            }
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                return Ok(counts);
            }
        }
    }

    pub(super) async fn output_items(&self, key: &PartitionKey) -> Result<Vec<Item>, ManifestError> {
        self.query_all(
            None,
            "#pk = :pk AND begins_with(#sk, :output_prefix)",
            None,
            values([
                (":pk", string_value(partition_item_pk(&key.bucket, &key.path))),
                (":output_prefix", string_value(OUTPUT_SORT_KEY_PREFIX)),
            ]),
            true,
        )
        .await
    }
}

/// Records counted and derived per batch of a merged scan: a page of each shard's Query.
pub(super) const DERIVE_BATCH: usize = 1000;

/// How many of a partition's output items are committed.
fn committed_outputs_of(items: &[Item], table: &str) -> Result<u64, ManifestError> {
    let mut committed = 0;
    for item in items {
        if ItemReader::new(item, table).state::<OutputState>("state")? == OutputState::Committed {
            committed += 1;
        }
    }
    Ok(committed)
}

impl DynamoDbManifest {
    /// Closed partitions flagged in [`PENDING_INDEX`] and not under a live lease, earliest
    /// close first, at most `limit`. Each is read back from its item, since the index lags the
    /// table. With `counted`, each comes with its record and only those with work are kept (a
    /// pending object, or an interrupted seal); without, every candidate is kept, uncounted.
    /// One page of [`PENDING_INDEX`]: the partitions flagged pending that closed at or before
    /// `now`, in close order, filtered on their lock by `lock_filter` (`:now` is `now`). The
    /// index projects the lock's owner and expiry, so the filter reads no item.
    pub(super) async fn closed_pending_page(
        &self,
        now: DateTime<Utc>,
        lock_filter: &str,
        start_key: Option<Item>,
        limit: usize,
    ) -> Result<aws_sdk_dynamodb::operation::query::QueryOutput, ManifestError> {
        // Every sort key of a partition closed at or before `now` sorts before this bound.
        let bound = ordered_micros(micros(now).saturating_add(1));
        self.query_page(
            Some(PENDING_INDEX),
            "#gsi1pk = :pending_flag AND #gsi1sk < :bound",
            Some(lock_filter),
            values([
                (":pending_flag", string_value(PENDING_FLAG)),
                (":bound", string_value(bound)),
                (":now", time_value(now)),
            ]),
            false,
            start_key,
            Some(limit_i32(limit)),
        )
        .await
    }

    pub(super) async fn closed_from_index(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        counted: bool,
    ) -> Result<Vec<(PartitionKey, Option<PartitionRecord>)>, ManifestError> {
        let mut closed = Vec::new();
        let mut start_key: Option<Item> = None;
        while closed.len() < limit {
            let page = self
                .closed_pending_page(
                    now,
                    "attribute_not_exists(#lock_owner) OR #lease_expires_at <= :now",
                    start_key.take(),
                    limit,
                )
                .await?;
            for item in page.items() {
                if closed.len() >= limit {
                    break;
                }
                let reader = ItemReader::new(item, &self.table);
                let Some(stored) = self.get_item(key_of(reader.string("pk")?, reader.string("sk")?)).await? else {
                    continue;
                };
                let stored = StoredPartition::from_item(&stored, &self.table)?;
                // The index lags the table: re-check what the query filtered on.
                let lease_live =
                    stored.lock_owner.is_some() && stored.lease_expires_at.is_some_and(|expiry| expiry > now);
                if lease_live || !stored.flagged_pending || stored.closes_at > now {
                    continue;
                }
                if !counted {
                    closed.push((stored.key, None));
                    continue;
                }
                let record = self.partition_record(stored).await?;
                // An interrupted seal (still `sealing`, its lease expired) is work even with
                // nothing pending: its commits may need finishing and its sources marking.
                if record.pending_objects > 0 || record.state == PartitionState::Sealing {
                    closed.push((record.key.clone(), Some(record)));
                }
            }
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                break;
            }
        }
        Ok(closed)
    }

    pub(super) async fn partition_record(&self, stored: StoredPartition) -> Result<PartitionRecord, ManifestError> {
        let counts = self.counts(&stored.key).await?;
        Ok(stored.with_counts(counts))
    }
    /// Release, step one: the fenced partition item as read, and its pending objects counted
    /// after that read.
    pub(super) async fn count_for_release(&self, lease: &Lease) -> Result<ReleaseCount, ManifestError> {
        let stored = self.check_fence(lease).await?;
        let counts = self.counts(&lease.partition).await?;
        Ok(ReleaseCount { stored, counts })
    }

    /// Release, step two: `sealed` if nothing was pending and no ingest wrote the partition item
    /// since it was read, `open` otherwise. `Ok(None)` when the fence or the ingest counter moved:
    /// count again (the next [`Self::count_for_release`] tells a lost lease).
    pub(super) async fn write_release(
        &self,
        lease: &Lease,
        counted: ReleaseCount,
        now: DateTime<Utc>,
    ) -> Result<Option<PartitionRecord>, ManifestError> {
        let partition = &lease.partition;
        let item_key = key_of(partition_item_pk(&partition.bucket, &partition.path), PARTITION_SORT_KEY);
        let fence = "#generation = :lease_generation AND #lock_owner = :lease_owner";
        let mut expression_values = values([
            (":lease_generation", number_value(lease.generation)),
            (":lease_owner", string_value(&lease.owner)),
        ]);
        let (update, condition) = if counted.counts.pending_objects == 0 {
            expression_values.insert(":sealed".to_owned(), string_value(PartitionState::Sealed.as_str()));
            expression_values.insert(":now".to_owned(), time_value(now));
            let counter_unchanged = match counted.stored.ingest_counter {
                Some(read_counter) => {
                    expression_values.insert(":read_counter".to_owned(), number_value(read_counter));
                    "#ingest_counter = :read_counter"
                }
                None => "attribute_not_exists(#ingest_counter)",
            };
            (
                "SET #state = :sealed, #sealed_at = :now REMOVE #lock_owner, #lease_expires_at, #gsi1pk, #gsi1sk",
                format!("{fence} AND {counter_unchanged}"),
            )
        } else {
            // A late object arrived during the seal: the next seal writes a new generation.
            expression_values.insert(":open".to_owned(), string_value(PartitionState::Open.as_str()));
            expression_values.insert(":pending_flag".to_owned(), string_value(PENDING_FLAG));
            expression_values.insert(
                ":pending_sort_key".to_owned(),
                string_value(pending_index_sk(counted.stored.closes_at, &partition.path, &partition.bucket)),
            );
            (
                "SET #state = :open, #gsi1pk = :pending_flag, #gsi1sk = :pending_sort_key \
                 REMOVE #lock_owner, #lease_expires_at",
                fence.to_owned(),
            )
        };
        match self.conditional_update(item_key, update, &condition, expression_values, true).await? {
            Ok(new_item) => {
                // The objects are as counted: a write of ingest since would have failed the
                // condition (the counter), and release writes no object.
                let stored = StoredPartition::from_item(&new_item.unwrap_or_default(), &self.table)?;
                Ok(Some(stored.with_counts(counted.counts)))
            }
            Err(_) => Ok(None),
        }
    }
}
