//! The [`Manifest`] implementation.

use super::scan::CombinedScan;
use super::*;

/// One shard's share of an `objects` page: a buffer of its next items in key order.
struct ShardCursor {
    shard_pk: String,
    buffer: VecDeque<ObjectRecord>,
    next_start_key: Option<Item>,
    exhausted: bool,
}

/// What an `objects` Query asks the server for: the stored states that may answer the query
/// once derived (a stored `pending` record may be derived `compacted`), as a filter.
struct StoredFilter {
    key_condition: &'static str,
    filter: Option<String>,
    expression_values: HashMap<String, AttributeValue>,
}

impl StoredFilter {
    fn of(query: &ObjectQuery) -> Self {
        let key_condition = if query.start_after.is_some() { "#pk = :pk AND #sk > :start_after" } else { "#pk = :pk" };
        let mut filters = Vec::new();
        let mut expression_values = HashMap::new();
        if let Some(start_after) = &query.start_after {
            expression_values.insert(":start_after".to_owned(), string_value(start_after));
        }
        if query.expiry_unmarked {
            // Only flipped records: a derived one's output keeps an expiry cursor (every output
            // placed with a chunk directory does), so it never awaits a mark of its own.
            filters.push(
                "#state = :compacted AND attribute_not_exists(#expiry_marked_at) \
                 AND attribute_not_exists(#expiry_by_output)",
            );
            expression_values.insert(":compacted".to_owned(), string_value(ObjectState::Compacted.as_str()));
        } else if query.state == Some(ObjectState::Compacted) {
            filters.push("(#state = :state OR #state = :pending)");
            expression_values.insert(":state".to_owned(), string_value(ObjectState::Compacted.as_str()));
            expression_values.insert(":pending".to_owned(), string_value(ObjectState::Pending.as_str()));
        } else if let Some(state) = query.state {
            filters.push("#state = :state");
            expression_values.insert(":state".to_owned(), string_value(state.as_str()));
        }
        let filter = (!filters.is_empty()).then(|| filters.join(" AND "));
        StoredFilter { key_condition, filter, expression_values }
    }
}

/// Whether the answer to `query` may hold records whose state is derived: stored `pending`
/// ones, unless only other stored states are asked for.
fn derives(query: &ObjectQuery) -> bool {
    !query.expiry_unmarked && matches!(query.state, None | Some(ObjectState::Pending | ObjectState::Compacted))
}

impl ShardCursor {
    /// Fetches this shard's next non-empty page (a filter may empty some pages).
    async fn refill(
        &mut self,
        manifest: &DynamoDbManifest,
        stored: &StoredFilter,
        page_size: i32,
    ) -> Result<(), ManifestError> {
        let mut expression_values = stored.expression_values.clone();
        expression_values.insert(":pk".to_owned(), string_value(&self.shard_pk));
        while self.buffer.is_empty() && !self.exhausted {
            let page = manifest
                .query_page(
                    None,
                    stored.key_condition,
                    stored.filter.as_deref(),
                    expression_values.clone(),
                    true,
                    self.next_start_key.take(),
                    Some(page_size),
                )
                .await?;
            for item in page.items() {
                self.buffer.push_back(object_from_item(item, &manifest.table)?);
            }
            self.next_start_key = page.last_evaluated_key;
            self.exhausted = self.next_start_key.is_none();
        }
        Ok(())
    }
}

/// A partition's object items in key order, merged from its shards' key-ordered Queries, a
/// batch at a time: each shard is read a page at a time, only when its buffer runs dry.
pub(super) struct ShardMerge {
    cursors: Vec<ShardCursor>,
    stored: StoredFilter,
    page_size: i32,
}

impl ShardMerge {
    fn new(partition: &PartitionKey, stored: StoredFilter, page_size: i32) -> Self {
        let cursors = (0..OBJECT_SHARDS)
            .map(|shard| ShardCursor {
                shard_pk: object_shard_pk(&partition.bucket, &partition.path, shard),
                buffer: VecDeque::new(),
                next_start_key: None,
                exhausted: false,
            })
            .collect();
        ShardMerge { cursors, stored, page_size }
    }

    /// Every stored record of `partition` that `query`'s stored filter lets through, `batch`
    /// records at a time.
    pub(super) fn scan(partition: &PartitionKey, query: &ObjectQuery, batch: usize) -> Self {
        Self::new(partition, StoredFilter::of(query), limit_i32((batch / OBJECT_SHARDS as usize + 1).clamp(8, 1000)))
    }

    /// The next records in key order, at most `limit`; fewer only at the end.
    pub(super) async fn next_batch(
        &mut self,
        manifest: &DynamoDbManifest,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, ManifestError> {
        let mut batch = Vec::new();
        while batch.len() < limit {
            let (stored, page_size) = (&self.stored, self.page_size);
            futures::future::try_join_all(
                self.cursors
                    .iter_mut()
                    .filter(|cursor| cursor.buffer.is_empty() && !cursor.exhausted)
                    .map(|cursor| cursor.refill(manifest, stored, page_size)),
            )
            .await?;
            let next = self
                .cursors
                .iter_mut()
                .filter(|cursor| !cursor.buffer.is_empty())
                .min_by(|left, right| left.buffer[0].key.cmp(&right.buffer[0].key));
            match next.and_then(|cursor| cursor.buffer.pop_front()) {
                Some(object) => batch.push(object),
                None => break,
            }
        }
        Ok(batch)
    }
}

#[async_trait]
impl Manifest for DynamoDbManifest {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    /// [`Self::record_objects`] of one.
    async fn record_object(&self, object: &NewObject) -> Result<IngestOutcome, ManifestError> {
        let outcomes = self.record_objects(std::slice::from_ref(object)).await?;
        Ok(outcomes.into_iter().next().unwrap_or(IngestOutcome::Appended))
    }

    /// Arrival items, one or more per partition, then one flag per partition (`arrivals`).
    /// With a record TTL, object items as before: only an item of its own can expire alone.
    async fn record_objects(&self, objects: &[NewObject]) -> Result<Vec<IngestOutcome>, ManifestError> {
        if self.record_ttl.is_some() {
            return self.record_object_items(objects).await;
        }
        self.append_objects(objects).await
    }

    async fn record_removal(&self, removal: &RemovedObject) -> Result<IngestOutcome, ManifestError> {
        if self.record_ttl.is_some() {
            return self.record_removal_item(removal).await;
        }
        self.append_removal(removal).await
    }

    /// One Query of [`PENDING_INDEX`] (paged), filtered on the lease. Flagged partitions whose
    /// objects were all removed are counted and left out, as SQLite's `EXISTS` does.
    async fn closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<PartitionRecord>, ManifestError> {
        let closed = self.closed_from_index(now, limit, true).await?;
        Ok(closed.into_iter().filter_map(|(_, record)| record).collect())
    }

    /// The same Query of [`PENDING_INDEX`] and a strongly consistent GetItem per partition,
    /// without counting: flagged partitions whose objects were all removed are in the answer,
    /// and a seal that locks one releases it sealed, which takes it out of the index.
    async fn closed_partition_keys(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PartitionKey>, ManifestError> {
        let closed = self.closed_from_index(now, limit, false).await?;
        Ok(closed.into_iter().map(|(key, _)| key).collect())
    }

    /// One Query of [`PENDING_INDEX`] (paged), filtered on a live lease; the index projects the
    /// lock's owner and expiry, so no item is read.
    async fn locked_closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<HeldLock>, ManifestError> {
        let mut locks = Vec::new();
        let mut start_key: Option<Item> = None;
        while locks.len() < limit {
            let page = self
                .closed_pending_page(
                    now,
                    "attribute_exists(#lock_owner) AND #lease_expires_at > :now",
                    start_key.take(),
                    limit,
                )
                .await?;
            for item in page.items().iter().take(limit - locks.len()) {
                let reader = ItemReader::new(item, &self.table);
                let Some((bucket, path)) = reader
                    .string("pk")?
                    .strip_prefix("P#")
                    .and_then(|rest| rest.split_once('#').map(|(bucket, path)| (bucket.to_owned(), path.to_owned())))
                else {
                    continue;
                };
                locks.push(HeldLock {
                    partition: PartitionKey::new(bucket, path),
                    owner: reader.string("lock_owner")?,
                    expires_at: reader.time("lease_expires_at")?,
                });
            }
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                break;
            }
        }
        Ok(locks)
    }

    async fn partition(&self, key: &PartitionKey) -> Result<Option<PartitionRecord>, ManifestError> {
        match self.get_partition(key).await? {
            Some(stored) => Ok(Some(self.partition_record(stored).await?)),
            None => Ok(None),
        }
    }

    async fn partitions(
        &self,
        start_after: Option<&PartitionKey>,
        limit: usize,
    ) -> Result<Vec<PartitionRecord>, ManifestError> {
        let (key_condition, mut expression_values) = match start_after {
            Some(after) => (
                "#gsi3pk = :partitions_flag AND #gsi3sk > :after",
                values([(":after", string_value(partitions_index_sk(&after.bucket, &after.path)))]),
            ),
            None => ("#gsi3pk = :partitions_flag", HashMap::new()),
        };
        expression_values.insert(":partitions_flag".to_owned(), string_value(PARTITIONS_FLAG));
        let page = self
            .query_page(
                Some(PARTITIONS_INDEX),
                key_condition,
                None,
                expression_values,
                false,
                None,
                Some(limit_i32(limit)),
            )
            .await?;
        let mut records = Vec::new();
        for item in page.items().iter().take(limit) {
            let reader = ItemReader::new(item, &self.table);
            if let Some(stored) = self.get_item(key_of(reader.string("pk")?, reader.string("sk")?)).await? {
                records.push(self.partition_record(StoredPartition::from_item(&stored, &self.table)?).await?);
            }
        }
        Ok(records)
    }

    /// Re-acquiring a live lease by its own owner is allowed and still bumps the generation: the
    /// caller gets a fresh lease and its older one is fenced, as after any other takeover.
    async fn acquire(
        &self,
        partition: &PartitionKey,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<Lease, ManifestError> {
        self.check_schema_once().await?;
        let expires_at = now
            .checked_add_signed(lease_for)
            .map(truncated_to_micros)
            .ok_or(DynamoDbManifestError::LeaseOverflow { now, lease_for })?;
        let result = self
            .conditional_update(
                key_of(partition_item_pk(&partition.bucket, &partition.path), PARTITION_SORT_KEY),
                "SET #generation = #generation + :one, #state = :sealing, #lock_owner = :owner, \
                 #lease_expires_at = :expires_at",
                "attribute_exists(#pk) AND (attribute_not_exists(#lock_owner) OR #lease_expires_at <= :now \
                 OR #lock_owner = :owner)",
                values([
                    (":one", number_value(1)),
                    (":sealing", string_value(PartitionState::Sealing.as_str())),
                    (":owner", string_value(owner)),
                    (":expires_at", time_value(expires_at)),
                    (":now", time_value(now)),
                ]),
                true,
            )
            .await?;
        match result {
            Ok(new_item) => {
                let new_item = new_item.unwrap_or_default();
                let generation = ItemReader::new(&new_item, &self.table).number("generation")?;
                Ok(Lease { partition: partition.clone(), owner: owner.to_owned(), generation, expires_at })
            }
            Err(None) => Err(partition_not_found(partition)),
            Err(Some(old_item)) => {
                let holder = StoredPartition::from_item(&old_item, &self.table)?;
                Err(ManifestError::Locked {
                    partition: partition.clone(),
                    owner: holder.lock_owner.unwrap_or_default(),
                    expires_at: holder.lease_expires_at.unwrap_or(now),
                })
            }
        }
    }

    async fn renew(&self, lease: &Lease, now: DateTime<Utc>, lease_for: Duration) -> Result<Lease, ManifestError> {
        let expires_at = now
            .checked_add_signed(lease_for)
            .map(truncated_to_micros)
            .ok_or(DynamoDbManifestError::LeaseOverflow { now, lease_for })?;
        let result = self
            .conditional_update(
                key_of(partition_item_pk(&lease.partition.bucket, &lease.partition.path), PARTITION_SORT_KEY),
                "SET #lease_expires_at = :expires_at",
                "#generation = :lease_generation AND #lock_owner = :lease_owner",
                values([
                    (":expires_at", time_value(expires_at)),
                    (":lease_generation", number_value(lease.generation)),
                    (":lease_owner", string_value(&lease.owner)),
                ]),
                false,
            )
            .await?;
        match result {
            Ok(_) => Ok(Lease { expires_at, ..lease.clone() }),
            Err(_) => Err(lease_lost(lease)),
        }
    }

    /// Seals only on the condition that no ingest touched the partition item since the pending
    /// objects were counted (see the module doc); otherwise counts again.
    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> Result<PartitionRecord, ManifestError> {
        self.optimistically(
            || format!("partition {}", lease.partition),
            || async move {
                let counted = self.count_for_release(lease).await?;
                if let Some(record) = self.write_release(lease, counted, now).await? {
                    return Ok(Attempt::Done(record));
                }
                Ok(Attempt::Retry)
            },
        )
        .await
    }

    /// Queries every shard and merges their key-ordered answers, fetching from a shard only
    /// when its buffer runs dry, so a page of n costs about n items read, not 16 n; merges the
    /// partition's arrival records in (`scan`; a cursor kept from the previous page serves the
    /// next). Records are derived a batch at a time against the committed outputs' chunks that
    /// hold their keys (`derived`), then filtered on the state asked for.
    async fn objects(&self, partition: &PartitionKey, query: &ObjectQuery) -> Result<Vec<ObjectRecord>, ManifestError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut scan = CombinedScan::new(self, partition, query, query.limit, false).await?;
        let outputs =
            if derives(query) || scan.has_arrivals() { self.deriving_outputs(partition).await? } else { Vec::new() };
        let mut page = Vec::new();
        while page.len() < query.limit {
            let mut batch = scan.next_batch(self, query.limit - page.len()).await?;
            if batch.is_empty() {
                break;
            }
            self.derive_records(partition, &outputs, &mut batch).await?;
            page.extend(
                batch
                    .into_iter()
                    .map(|record| record.record)
                    .filter(|record| query.state.is_none_or(|state| record.state == state)),
            );
        }
        scan.finish(self);
        Ok(page)
    }

    async fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, ManifestError> {
        let Ok(partition) = self.layout.partition_of(key) else {
            return Ok(None);
        };
        let partition = PartitionKey::new(bucket, partition.path);
        // The object item and the partition's arrival records, combined and derived.
        let mut records = self.combined_records(&partition, &[key]).await?;
        if records.is_empty() {
            return Ok(None);
        }
        let outputs = self.deriving_outputs(&partition).await?;
        self.derive_records(&partition, &outputs, &mut records).await?;
        let Some(mut record) = records.pop().map(|record| record.record) else { return Ok(None) };
        // A source of an output with an expiry cursor has no mark of its own: the cursor says.
        if record.state == ObjectState::Compacted && record.expiry_marked_at.is_none() {
            if let Some(placement) = &record.placement {
                let output = self.partition_output(&partition, &placement.output_key).await?;
                record.expiry_marked_at = source_expiry_mark(&record, output.as_ref());
            }
        }
        Ok(Some(record))
    }

    /// An output the manifest does not know has no sources.
    ///
    /// [`SOURCES_INDEX`] sorts by offset alone, and returns the sources of one offset (empty
    /// ones share theirs with the source after them) in no fixed order. So the Query starts at
    /// the cursor's offset (`>=`), skips what is at or before the cursor, and reads on until it
    /// holds `limit` sources and the next one lies at a greater offset (every source of the
    /// page's last offset seen); the page is then sorted by (offset, key). Memory stays under
    /// twice `limit` sources; a run of many empty sources at one offset is read again by each
    /// page that ends inside it.
    async fn output_sources(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, ManifestError> {
        self.output_sources_page(output_bucket, output_key, start_after, limit).await
    }

    async fn mark_missing(&self, lease: &Lease, key: &str, sequencer: &str, note: &str) -> Result<(), ManifestError> {
        self.mark_missing_item(lease, key, sequencer, note).await
    }

    /// Beginning an output that is already `writing` updates its upload id and object count (a
    /// retried upload). Beginning one that is already `committed` changes nothing and succeeds.
    /// An `abandoned` one is never written again: [`ManifestError::InvalidOutputState`].
    async fn begin_output(&self, lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError> {
        self.begin_output_items(lease, output).await
    }

    async fn record_placements(
        &self,
        lease: &Lease,
        output_key: &str,
        placements: &[SourcePlacement],
    ) -> Result<Vec<String>, ManifestError> {
        self.check_fence(lease).await?;
        // No transaction: chunk items count for nothing until the commit, which is fenced, and
        // name an output of this lease's generation, which a stalled run cannot commit.
        self.write_placement_chunks(&lease.partition, output_key, placements).await
    }

    async fn commit_output(
        &self,
        lease: &Lease,
        output_bucket: &str,
        output_key: &str,
        size: u64,
        sha256: &str,
        object_count: u64,
        now: DateTime<Utc>,
    ) -> Result<(), ManifestError> {
        self.optimistically(
            || format!("output s3://{output_bucket}/{output_key}"),
            || async move {
                let (item_key, output) = self.load_leased_output(lease, output_bucket, output_key).await?;
                match output.state {
                    OutputState::Writing => {}
                    // A repeated commit of the same bytes: the first one stands.
                    OutputState::Committed if output.sha256.as_deref() == Some(sha256) => return Ok(Attempt::Done(())),
                    state => return Err(ManifestError::InvalidOutputState { key: output_key.to_owned(), state }),
                }
                let write = self.update(
                    item_key,
                    "SET #state = :committed, #size = :size, #sha256 = :sha256, #object_count = :object_count, \
                 #committed_at = :now, #expiry_done = :not_done",
                    "#state = :writing",
                    values([
                        (":committed", string_value(OutputState::Committed.as_str())),
                        (":writing", string_value(OutputState::Writing.as_str())),
                        (":size", number_value(size)),
                        (":sha256", string_value(sha256)),
                        (":object_count", number_value(object_count)),
                        (":now", time_value(now)),
                        (":not_done", AttributeValue::Bool(false)),
                    ]),
                )?;
                self.fenced_transaction(lease, vec![write]).await
            },
        )
        .await
    }

    /// An output that is not committed (yet, or ever) compacts nothing: `Ok(0)`. An unknown
    /// output is [`ManifestError::NotFound`].
    async fn mark_compacted(&self, partition: &PartitionKey, output_key: &str) -> Result<u64, ManifestError> {
        self.mark_compacted_items(partition, output_key).await
    }

    /// Nothing to do: the commit made the sources compacted (`derived`), and an output placed
    /// by an older version of this adapter is flipped by `mark_compacted`, which follows.
    async fn mark_compacted_between(
        &self,
        _partition: &PartitionKey,
        _output_key: &str,
        _least: &str,
        _greatest: &str,
    ) -> Result<u64, ManifestError> {
        Ok(0)
    }

    async fn mark_expiry(&self, bucket: &str, keys: &[String], at: DateTime<Utc>) -> Result<(), ManifestError> {
        self.mark_expiry_items(bucket, keys, at).await
    }

    async fn output_placements(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<SourcePlacement>, ManifestError> {
        self.output_placements_page(output_bucket, output_key, start_after, limit).await
    }

    async fn advance_expiry(
        &self,
        output_bucket: &str,
        output_key: &str,
        through: (u64, &str),
        done: bool,
        at: DateTime<Utc>,
    ) -> Result<(), ManifestError> {
        self.advance_expiry_cursor(output_bucket, output_key, through, done, at).await
    }

    /// Abandoning an abandoned output again succeeds (idempotence); a committed output is never
    /// abandoned: [`ManifestError::InvalidOutputState`].
    async fn abandon_output(&self, lease: &Lease, output_bucket: &str, output_key: &str) -> Result<(), ManifestError> {
        self.abandon_output_item(lease, output_bucket, output_key).await
    }

    async fn outputs(
        &self,
        partition: &PartitionKey,
        state: Option<OutputState>,
    ) -> Result<Vec<OutputRecord>, ManifestError> {
        let mut outputs = Vec::new();
        // The sort key orders them by generation, then part number.
        for item in self.output_items(partition).await? {
            let output = output_from_item(&item, &self.table)?;
            if state.is_none_or(|state| state == output.state) {
                outputs.push(output);
            }
        }
        Ok(outputs)
    }

    async fn output(&self, bucket: &str, key: &str) -> Result<Option<OutputRecord>, ManifestError> {
        Ok(self.load_output(bucket, key).await?.map(|(_, output)| output))
    }
}
