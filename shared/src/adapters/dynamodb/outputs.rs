//! Output items: their pointer items, and the fenced writes of an output's life.

use super::*;

impl DynamoDbManifest {
    /// The output item (and its key) through its pointer item.
    pub(super) async fn load_output(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Item, OutputRecord)>, ManifestError> {
        let Some(pointer) = self.get_item(key_of(output_pointer_pk(bucket, key), OUTPUT_POINTER_SORT_KEY)).await?
        else {
            return Ok(None);
        };
        let reader = ItemReader::new(&pointer, &self.table);
        let output_key = key_of(reader.string("target_pk")?, reader.string("target_sk")?);
        let Some(item) = self.get_item(output_key.clone()).await? else {
            return Ok(None);
        };
        let record = output_from_item(&item, &self.table)?;
        Ok(Some((output_key, record)))
    }

    /// An output a fenced call changes: the lease must hold, and the output must exist and
    /// belong to the leased partition.
    pub(super) async fn load_leased_output(
        &self,
        lease: &Lease,
        output_bucket: &str,
        output_key: &str,
    ) -> Result<(Item, OutputRecord), ManifestError> {
        self.check_fence(lease).await?;
        let (item_key, output) = self
            .load_output(output_bucket, output_key)
            .await?
            .ok_or_else(|| output_not_found(output_bucket, output_key))?;
        check_output_partition(lease, &output)?;
        Ok((item_key, output))
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
    pub(super) async fn output_sources_page(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, ManifestError> {
        let Some((_, output)) = self.load_output(output_bucket, output_key).await? else {
            return Ok(Vec::new());
        };
        if self.has_chunks(&output.partition, &output.key).await? {
            let committed = output.state == OutputState::Committed;
            let mut sources =
                self.sources_from_chunks(&output.partition, &output.key, committed, start_after, limit).await?;
            for source in &mut sources {
                source.expiry_marked_at = source_expiry_mark(source, Some(&output));
            }
            return Ok(sources);
        }
        // Placed by an older version of this adapter: the index of placed object items.
        let sources_pk = sources_index_pk(&output.partition.bucket, &output.partition.path, &output.key);
        let (key_condition, mut expression_values) = match start_after {
            Some((offset, _)) => {
                ("#gsi2pk = :sources_pk AND #gsi2sk >= :offset", values([(":offset", number_value(offset))]))
            }
            None => ("#gsi2pk = :sources_pk", HashMap::new()),
        };
        expression_values.insert(":sources_pk".to_owned(), string_value(sources_pk));
        let position = |source: &ObjectRecord| {
            (source.placement.as_ref().map_or(0, |placement| placement.offset), source.key.clone())
        };
        let by_position = |one: &ObjectRecord, other: &ObjectRecord| position(one).cmp(&position(other));
        let mut sources: Vec<ObjectRecord> = Vec::new();
        let mut last_offset_taken: Option<u64> = None;
        let mut start_key: Option<Item> = None;
        'pages: loop {
            let page = self
                .query_page(
                    Some(SOURCES_INDEX),
                    key_condition,
                    None,
                    expression_values.clone(),
                    false,
                    start_key.take(),
                    Some(limit_i32(limit.saturating_add(1))),
                )
                .await?;
            for item in page.items() {
                let source = object_from_item(item, &self.table)?;
                let (offset, key) = position(&source);
                if start_after
                    .is_some_and(|(after_offset, after_key)| (offset, key.as_str()) <= (after_offset, after_key))
                {
                    continue;
                }
                // Offsets only grow from here: past the last one taken, the page is complete.
                if sources.len() >= limit && last_offset_taken.is_some_and(|last| offset > last) {
                    break 'pages;
                }
                last_offset_taken = Some(offset);
                sources.push(source);
                if sources.len() >= limit.saturating_mul(2) {
                    sources.sort_by(by_position);
                    sources.truncate(limit);
                }
            }
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                break;
            }
        }
        sources.sort_by(by_position);
        sources.truncate(limit);
        Ok(sources)
    }

    pub(super) async fn mark_missing_item(
        &self,
        lease: &Lease,
        key: &str,
        sequencer: &str,
        note: &str,
    ) -> Result<(), ManifestError> {
        let partition = &lease.partition;
        let item_key = key_of(object_item_pk(&partition.bucket, &partition.path, key), key);
        let item_key = &item_key;
        self.optimistically(
            || format!("object {key}"),
            || async move {
                self.check_fence(lease).await?;
                let Some(recorded) = self.get_item(item_key.clone()).await? else {
                    // Recorded in arrival records alone: write the whole record, missing.
                    let Some(mut record) = self.combined_records(partition, &[key]).await?.pop() else {
                        return Ok(Attempt::Done(()));
                    };
                    if record.record.state != ObjectState::Pending
                        || !record
                            .version_sequencers
                            .iter()
                            .any(|version| sequencer::compare(version, sequencer).is_eq())
                    {
                        return Ok(Attempt::Done(()));
                    }
                    record.record.state = ObjectState::Missing;
                    record.record.note = Some(note.to_owned());
                    self.forget_shards_empty(partition);
                    let write = self.put(object_item_of(&record.record), Some("attribute_not_exists(#pk)"))?;
                    return self.fenced_transaction(lease, vec![write]).await;
                };
                let reader = ItemReader::new(&recorded, &self.table);
                let recorded_sequencer = reader.optional_string("sequencer")?.unwrap_or_default();
                // A newer version arrived since the seal read it: that one is still to be compacted.
                if reader.state::<ObjectState>("state")? != ObjectState::Pending
                    || !sequencer::compare(&recorded_sequencer, sequencer).is_eq()
                {
                    return Ok(Attempt::Done(()));
                }
                let write = self.update(
                    item_key.clone(),
                    "SET #state = :missing, #note = :note",
                    "#state = :pending AND #sequencer = :recorded_sequencer",
                    values([
                        (":missing", string_value(ObjectState::Missing.as_str())),
                        (":pending", string_value(ObjectState::Pending.as_str())),
                        (":note", string_value(note)),
                        (":recorded_sequencer", string_value(recorded_sequencer)),
                    ]),
                )?;
                self.fenced_transaction(lease, vec![write]).await
            },
        )
        .await
    }

    /// Beginning an output that is already `writing` updates its upload id and object count (a
    /// retried upload). Beginning one that is already `committed` changes nothing and succeeds.
    /// An `abandoned` one is never written again: [`ManifestError::InvalidOutputState`].
    pub(super) async fn begin_output_items(&self, lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError> {
        check_output_partition(lease, output)?;
        self.optimistically(
            || format!("output s3://{}/{}", output.bucket, output.key),
            || async move {
                self.check_fence(lease).await?;
                let writes = match self.load_output(&output.bucket, &output.key).await? {
                    None => {
                        let output_pk = partition_item_pk(&output.partition.bucket, &output.partition.path);
                        let output_sk = output_item_sk(output);
                        let mut item = key_of(output_pk.clone(), output_sk.clone());
                        item.insert("bucket".to_owned(), string_value(&output.bucket));
                        item.insert("key".to_owned(), string_value(&output.key));
                        item.insert("partition_bucket".to_owned(), string_value(&output.partition.bucket));
                        item.insert("partition_path".to_owned(), string_value(&output.partition.path));
                        item.insert("generation".to_owned(), number_value(output.generation));
                        item.insert("part_number".to_owned(), number_value(output.part_number));
                        item.insert("state".to_owned(), string_value(OutputState::Writing.as_str()));
                        item.insert("object_count".to_owned(), number_value(output.object_count));
                        if let Some(upload_id) = &output.upload_id {
                            item.insert("upload_id".to_owned(), string_value(upload_id));
                        }
                        item.insert("created_at".to_owned(), time_value(output.created_at));
                        let mut pointer =
                            key_of(output_pointer_pk(&output.bucket, &output.key), OUTPUT_POINTER_SORT_KEY);
                        pointer.insert("target_pk".to_owned(), string_value(output_pk));
                        pointer.insert("target_sk".to_owned(), string_value(output_sk));
                        vec![
                            self.put(item, Some("attribute_not_exists(#pk)"))?,
                            self.put(pointer, Some("attribute_not_exists(#pk)"))?,
                        ]
                    }
                    Some((item_key, existing)) => match existing.state {
                        OutputState::Writing => {
                            let mut expression_values = values([
                                (":object_count", number_value(output.object_count)),
                                (":writing", string_value(OutputState::Writing.as_str())),
                            ]);
                            let update = match &output.upload_id {
                                Some(upload_id) => {
                                    expression_values.insert(":upload_id".to_owned(), string_value(upload_id));
                                    "SET #upload_id = :upload_id, #object_count = :object_count"
                                }
                                None => "SET #object_count = :object_count REMOVE #upload_id",
                            };
                            vec![self.update(item_key, update, "#state = :writing", expression_values)?]
                        }
                        OutputState::Committed => return Ok(Attempt::Done(())),
                        OutputState::Abandoned => {
                            return Err(ManifestError::InvalidOutputState {
                                key: output.key.clone(),
                                state: existing.state,
                            })
                        }
                    },
                };
                self.fenced_transaction(lease, writes).await
            },
        )
        .await
    }

    /// An output that is not committed (yet, or ever) compacts nothing: `Ok(0)`. An unknown
    /// output is [`ManifestError::NotFound`].
    pub(super) async fn mark_compacted_items(
        &self,
        partition: &PartitionKey,
        output_key: &str,
    ) -> Result<u64, ManifestError> {
        let mut found = None;
        for item in self.output_items(partition).await? {
            let record = output_from_item(&item, &self.table)?;
            if record.key == output_key {
                found = Some((record.state, item));
                break;
            }
        }
        let Some((output_state, output_item)) = found else {
            return Err(ManifestError::NotFound { what: format!("output {output_key} of partition {partition}") });
        };
        if output_state != OutputState::Committed {
            return Ok(0);
        }
        if output_item.contains_key(placements::SOURCES_COMPACTED) {
            return Ok(0);
        }
        if output_item.contains_key(derived::PLACED_CHUNKS) {
            // The commit made its sources compacted (`derived`): no write per source. The
            // first call after the commit answers how many it committed, as the flips did;
            // the mark on the output item makes the later ones (recoveries) answer 0.
            let committed = output_from_item(&output_item, &self.table)?.object_count;
            self.mark_sources_compacted(&output_item).await?;
            return Ok(committed);
        }
        if self.has_chunks(partition, output_key).await? {
            let tracks_expiry = output_from_item(&output_item, &self.table)?.expiry.is_some();
            let changed = self.compact_from_chunks(partition, output_key, tracks_expiry).await?;
            self.mark_sources_compacted(&output_item).await?;
            return Ok(changed);
        }
        // Placed by an older version of this adapter, on the object items.
        let sources = self
            .query_all(
                Some(SOURCES_INDEX),
                "#gsi2pk = :sources_pk",
                Some("#state = :pending AND #output_key = :output_key"),
                values([
                    (":sources_pk", string_value(sources_index_pk(&partition.bucket, &partition.path, output_key))),
                    (":pending", string_value(ObjectState::Pending.as_str())),
                    (":output_key", string_value(output_key)),
                ]),
                false,
            )
            .await?;
        let changed: Vec<bool> = stream::iter(sources)
            .map(|item| async move {
                let reader = ItemReader::new(&item, &self.table);
                let key = key_of(reader.string("pk")?, reader.string("sk")?);
                let recorded_sequencer = reader.optional_string("sequencer")?.unwrap_or_default();
                // Still pending, still placed here, still the version that was placed: the index
                // may lag a newer version, which must stay pending.
                let result = self
                    .conditional_update(
                        key,
                        "SET #state = :compacted",
                        "#state = :pending AND #output_key = :output_key AND #sequencer = :recorded_sequencer",
                        values([
                            (":compacted", string_value(ObjectState::Compacted.as_str())),
                            (":pending", string_value(ObjectState::Pending.as_str())),
                            (":output_key", string_value(output_key)),
                            (":recorded_sequencer", string_value(recorded_sequencer)),
                        ]),
                        false,
                    )
                    .await?;
                Ok::<bool, ManifestError>(result.is_ok())
            })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        Ok(changed.into_iter().filter(|changed| *changed).count() as u64)
    }

    /// Each key's item is read first (strongly consistent, by key): a source of an output
    /// whose sources are derived is stored `pending`, and only the derivation (`derived`) tells
    /// it from a pending version, which must never be marked. Such a source is written
    /// `compacted` with its placement in the same write as its mark, so no reader derives it
    /// again.
    pub(super) async fn mark_expiry_items(
        &self,
        bucket: &str,
        keys: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), ManifestError> {
        // Keys outside the layout have no record to mark; a batch must not name an item twice.
        let mut by_partition: std::collections::BTreeMap<String, std::collections::BTreeSet<&str>> = Default::default();
        for key in keys {
            if let Ok(partition) = self.layout.partition_of(key) {
                by_partition.entry(partition.path).or_default().insert(key);
            }
        }
        // Only the first mark counts: it is when the source was tagged (or deleted). A failed
        // condition (not compacted, already marked, unknown) changes nothing, so a pending item
        // never gets an expiry time. One conditional update per key, 25 to a request.
        let expires_at = self
            .record_ttl
            .map(|record_ttl| at.checked_add_signed(record_ttl).unwrap_or(DateTime::<Utc>::MAX_UTC).timestamp());
        let ttl = if expires_at.is_some() { " SET \"expires_at\" = ?" } else { "" };
        let flipped = format!(
            "UPDATE \"{}\" SET \"expiry_marked_at\" = ?{ttl} WHERE \"pk\" = ? AND \"sk\" = ? AND \"state\" = ? \
             AND \"expiry_marked_at\" IS MISSING",
            self.table,
        );
        let derived = format!(
            "UPDATE \"{}\" SET \"expiry_marked_at\" = ?{ttl} SET \"state\" = ? SET \"output_key\" = ? \
             SET \"output_generation\" = ? SET \"output_offset\" = ? SET \"output_length\" = ? \
             SET \"output_sha256\" = ? SET \"output_separator_bytes\" = ? WHERE \"pk\" = ? AND \"sk\" = ? \
             AND \"state\" = ? AND \"sequencer\" = ? AND \"expiry_marked_at\" IS MISSING",
            self.table,
        );
        let mut statements = Vec::new();
        for (path, keys) in by_partition {
            let partition = PartitionKey::new(bucket, path);
            let keys: Vec<&str> = keys.into_iter().collect();
            let mut records = Vec::new();
            let items = self.object_items(&partition, &keys, None).await?;
            let unstored: Vec<&str> = keys.iter().copied().filter(|key| !items.contains_key(*key)).collect();
            self.mark_arrived_for_expiry(&partition, &unstored, at, expires_at).await?;
            for item in items.values() {
                let record = object_from_item(item, &self.table)?;
                if record.expiry_marked_at.is_none()
                    && matches!(record.state, ObjectState::Pending | ObjectState::Compacted)
                {
                    records.push(record);
                }
            }
            let stored: Vec<ObjectState> = records.iter().map(|record| record.state).collect();
            if stored.contains(&ObjectState::Pending) {
                let outputs = self.deriving_outputs(&partition).await?;
                self.derive_records(&partition, &outputs, &mut records).await?;
            }
            for (record, stored) in records.into_iter().zip(stored) {
                let item_key = object_item_pk(bucket, &partition.path, &record.key);
                let mut parameters = vec![time_value(at)];
                parameters.extend(expires_at.map(number_value));
                let statement = match (stored, record.state, &record.placement) {
                    (ObjectState::Compacted, _, _) => {
                        parameters.extend([string_value(item_key), string_value(&record.key)]);
                        parameters.push(string_value(ObjectState::Compacted.as_str()));
                        &flipped
                    }
                    (ObjectState::Pending, ObjectState::Compacted, Some(placement)) => {
                        parameters.extend([
                            string_value(ObjectState::Compacted.as_str()),
                            string_value(&placement.output_key),
                            number_value(placement.generation),
                            number_value(placement.offset),
                            number_value(placement.length),
                            string_value(&placement.sha256),
                            number_value(placement.separator_bytes),
                            string_value(item_key),
                            string_value(&record.key),
                            string_value(ObjectState::Pending.as_str()),
                            string_value(&record.sequencer),
                        ]);
                        &derived
                    }
                    // Pending as derived too: not compacted, never marked.
                    _ => continue,
                };
                statements.push(
                    BatchStatementRequest::builder()
                        .statement(statement)
                        .set_parameters(Some(parameters))
                        .build()
                        .map_err(DynamoDbManifestError::Build)?,
                );
            }
        }
        self.conditional_statements(statements).await?;
        Ok(())
    }

    /// `mark_expiry` of sources recorded in arrival records alone: each one derived compacted
    /// gets a whole item of its own, compacted and marked (exceptions only: sources the store
    /// refused; the others' marks are their output's expiry cursor). Reads the partition's
    /// arrival items once; a key already written by a concurrent mark keeps the first mark.
    async fn mark_arrived_for_expiry(
        &self,
        partition: &PartitionKey,
        keys: &[&str],
        at: DateTime<Utc>,
        expires_at: Option<i64>,
    ) -> Result<(), ManifestError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut records = self.combined_records(partition, keys).await?;
        let outputs = self.deriving_outputs(partition).await?;
        self.derive_records(partition, &outputs, &mut records).await?;
        self.forget_shards_empty(partition);
        stream::iter(records.into_iter().filter(|record| record.record.state == ObjectState::Compacted))
            .map(|record| async move {
                let mut record = record.record;
                record.expiry_marked_at = Some(at);
                let mut item = object_item_of(&record);
                if let Some(expires_at) = expires_at {
                    item.insert(RECORD_EXPIRY_ATTRIBUTE.to_owned(), number_value(expires_at));
                }
                self.conditional_put(item, "attribute_not_exists(#pk)", HashMap::new()).await.map(|_| ())
            })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Abandoning an abandoned output again succeeds (idempotence); a committed output is never
    /// abandoned: [`ManifestError::InvalidOutputState`].
    pub(super) async fn abandon_output_item(
        &self,
        lease: &Lease,
        output_bucket: &str,
        output_key: &str,
    ) -> Result<(), ManifestError> {
        self.optimistically(
            || format!("output s3://{output_bucket}/{output_key}"),
            || async move {
                let (item_key, output) = self.load_leased_output(lease, output_bucket, output_key).await?;
                match output.state {
                    OutputState::Writing => {}
                    OutputState::Abandoned => return Ok(Attempt::Done(())),
                    OutputState::Committed => {
                        return Err(ManifestError::InvalidOutputState {
                            key: output_key.to_owned(),
                            state: output.state,
                        })
                    }
                }
                let write = self.update(
                    item_key,
                    "SET #state = :abandoned",
                    "#state = :writing",
                    values([
                        (":abandoned", string_value(OutputState::Abandoned.as_str())),
                        (":writing", string_value(OutputState::Writing.as_str())),
                    ]),
                )?;
                self.fenced_transaction(lease, vec![write]).await
            },
        )
        .await
    }

    /// The output item of `partition` named `output_key` (output keys are unique within a
    /// partition): one Query of the partition's output items, no pointer needed.
    pub(super) async fn partition_output(
        &self,
        partition: &PartitionKey,
        output_key: &str,
    ) -> Result<Option<OutputRecord>, ManifestError> {
        for item in self.output_items(partition).await? {
            let output = output_from_item(&item, &self.table)?;
            if output.key == output_key {
                return Ok(Some(output));
            }
        }
        Ok(None)
    }

    /// `output_placements`: the chunks alone, no object item read; outputs placed before
    /// chunks existed answer from their object items through `output_sources`.
    pub(super) async fn output_placements_page(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<SourcePlacement>, ManifestError> {
        let Some((_, output)) = self.load_output(output_bucket, output_key).await? else {
            return Ok(Vec::new());
        };
        if self.has_chunks(&output.partition, &output.key).await? {
            return self.placements_from_chunks(&output.partition, &output.key, start_after, limit).await;
        }
        let sources = self.output_sources_page(output_bucket, output_key, start_after, limit).await?;
        Ok(sources
            .into_iter()
            .filter_map(|source| {
                Some(SourcePlacement {
                    placement: source.placement?,
                    key: source.key,
                    sequencer: source.sequencer,
                    etag: source.etag,
                    size: source.size,
                })
            })
            .collect())
    }

    /// `advance_expiry`: reads the output item, moves its cursor by the domain's rule, and
    /// writes it on the condition that it is still what was read. One write per call, that is
    /// per page of sources marked, whatever the page's size.
    pub(super) async fn advance_expiry_cursor(
        &self,
        output_bucket: &str,
        output_key: &str,
        through: (u64, &str),
        done: bool,
        at: DateTime<Utc>,
    ) -> Result<(), ManifestError> {
        self.optimistically(
            || format!("output s3://{output_bucket}/{output_key}"),
            || async move {
                let Some((item_key, output)) = self.load_output(output_bucket, output_key).await? else {
                    return Ok(Attempt::Done(()));
                };
                let Some(cursor) = output.expiry.as_ref() else {
                    return Ok(Attempt::Done(()));
                };
                let Some(moved) = cursor.advanced(through, done, at) else {
                    return Ok(Attempt::Done(()));
                };
                let (moved_offset, moved_key) = moved.through.clone().unwrap_or_default();
                let mut expression_values = values([
                    (":done", AttributeValue::Bool(moved.done)),
                    (":read_done", AttributeValue::Bool(cursor.done)),
                    (":offset", number_value(moved_offset)),
                    (":key", string_value(moved_key)),
                    (":at", time_value(at)),
                ]);
                let unchanged = match &cursor.through {
                    Some((offset, key)) => {
                        expression_values.insert(":read_offset".to_owned(), number_value(offset));
                        expression_values.insert(":read_key".to_owned(), string_value(key));
                        "#expiry_through_offset = :read_offset AND #expiry_through_key = :read_key"
                    }
                    None => "attribute_not_exists(#expiry_through_key)",
                };
                let written = self
                    .conditional_update(
                        item_key,
                        "SET #expiry_done = :done, #expiry_through_offset = :offset, #expiry_through_key = :key, \
                         #expiry_marked_at = :at",
                        &format!("#expiry_done = :read_done AND {unchanged}"),
                        expression_values,
                        false,
                    )
                    .await?;
                Ok(if written.is_ok() { Attempt::Done(()) } else { Attempt::Retry })
            },
        )
        .await
    }
}
