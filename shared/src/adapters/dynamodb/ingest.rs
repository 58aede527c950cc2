//! Ingest: object items, and the partition flag that the race with release needs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

impl DynamoDbManifest {
    // ── ingest helpers ──────────────────────────────────────────────────────────────────

    /// Makes sure the partition of a pending object is recorded, `open` (unless a seal holds
    /// it) and in [`PENDING_INDEX`]; see "The race between ingest and release" in the module
    /// doc for why this runs after the object write and when it may skip the write.
    pub(super) async fn flag_partition_pending(&self, object: &NewObject) -> Result<(), ManifestError> {
        let key = PartitionKey::new(object.bucket.clone(), object.partition.path.clone());
        let key = &key;
        self.optimistically(
            || format!("partition {key}"),
            || async move {
                let Some(stored) = self.get_partition(key).await? else {
                    if self
                        .conditional_put(new_partition_item(object), "attribute_not_exists(#pk)", HashMap::new())
                        .await?
                    {
                        return Ok(Attempt::Done(()));
                    }
                    return Ok(Attempt::Retry);
                };
                if stored.state == PartitionState::Open && stored.flagged_pending {
                    return Ok(Attempt::Done(()));
                }
                // A sealed partition reopens; a sealing one stays so (its release sees the pending
                // object and opens it). The counter tells a running release that it counted too early.
                let next_state =
                    if stored.state == PartitionState::Sealed { PartitionState::Open } else { stored.state };
                let written = self
                    .conditional_update(
                        key_of(partition_item_pk(&key.bucket, &key.path), PARTITION_SORT_KEY),
                        "SET #state = :next_state, #gsi1pk = :pending_flag, #gsi1sk = :pending_sort_key \
                     ADD #ingest_counter :one",
                        "#state = :read_state",
                        values([
                            (":next_state", string_value(next_state.as_str())),
                            (":read_state", string_value(stored.state.as_str())),
                            (":pending_flag", string_value(PENDING_FLAG)),
                            (
                                ":pending_sort_key",
                                string_value(pending_index_sk(stored.closes_at, &key.path, &key.bucket)),
                            ),
                            (":one", number_value(1)),
                        ]),
                        false,
                    )
                    .await?;
                if written.is_ok() {
                    return Ok(Attempt::Done(()));
                }
                Ok(Attempt::Retry)
            },
        )
        .await
    }

    /// Records a batch of objects: every object item first (side by side, [`CONCURRENT_REQUESTS`]
    /// at a time: DynamoDB has no batch conditional write), then each partition that needs it
    /// flagged once, not once per object. Flagging after all the object writes keeps the order
    /// the race with release needs (module doc): each partition's flag read comes after every
    /// object write of that partition. Once a write fails no new one starts (a throttled table
    /// is not pressed further), and the partitions of the objects written by then are still
    /// flagged before the call fails, so a failed batch leaves no written object unflagged (a
    /// retried one is flagged by its replay, as after a crash between the two writes).
    pub(super) async fn record_object_items(&self, objects: &[NewObject]) -> Result<Vec<IngestOutcome>, ManifestError> {
        for object in objects {
            self.forget_shards_empty(&PartitionKey::new(object.bucket.clone(), object.partition.path.clone()));
        }
        let failed = AtomicBool::new(false);
        let failed = &failed;
        // Owned objects: a stream of borrowed ones trips the `Send` bound async_trait puts on the caller.
        let written: Vec<Option<Result<(IngestOutcome, bool), ManifestError>>> = stream::iter(objects.to_vec())
            .map(|object| async move {
                if failed.load(Ordering::Relaxed) {
                    return None;
                }
                let written = self.write_object_item(&object).await;
                if written.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                Some(written)
            })
            .buffered(CONCURRENT_REQUESTS)
            .collect()
            .await;
        // One object per partition to flag (any of them: they build the same partition item).
        let mut to_flag: BTreeMap<(String, String), NewObject> = BTreeMap::new();
        for (object, written) in objects.iter().zip(&written) {
            if matches!(written, Some(Ok((_, true)))) {
                to_flag.entry((object.bucket.clone(), object.partition.path.clone())).or_insert_with(|| object.clone());
            }
        }
        stream::iter(to_flag.into_values())
            .map(|object| async move { self.flag_partition_pending(&object).await })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<()>>()
            .await?;
        let mut outcomes = Vec::with_capacity(written.len());
        for written in written {
            match written {
                Some(Ok((outcome, _))) => outcomes.push(outcome),
                Some(Err(error)) => return Err(error),
                // Not attempted: only after another write failed.
                None => {}
            }
        }
        // A write is skipped only after another failed, whose error returned above: never here.
        if outcomes.len() < objects.len() {
            return Err(DynamoDbManifestError::Contended { what: "a batch of object writes".to_owned() }.into());
        }
        Ok(outcomes)
    }

    /// Writes one object item; answers the outcome and whether the partition must then be
    /// flagged pending (the object is pending as recorded or as replayed).
    async fn write_object_item(&self, object: &NewObject) -> Result<(IngestOutcome, bool), ManifestError> {
        // Most events announce a key the manifest has never seen: try the create first, and read
        // the recorded item only when it exists (a replay, an overwrite). One request, not two.
        if self.conditional_put(new_object_item(object), "attribute_not_exists(#pk)", HashMap::new()).await? {
            return Ok((IngestOutcome::Recorded, true));
        }
        let item_key = key_of(object_item_pk(&object.bucket, &object.partition.path, &object.key), object.key.clone());
        let item_key = &item_key;
        self.optimistically(
            || format!("object s3://{}/{}", object.bucket, object.key),
            || async move {
                let outcome = match self.get_item(item_key.clone()).await? {
                    None => {
                        if !self
                            .conditional_put(new_object_item(object), "attribute_not_exists(#pk)", HashMap::new())
                            .await?
                        {
                            return Ok(Attempt::Retry);
                        }
                        IngestOutcome::Recorded
                    }
                    Some(recorded) => {
                        let reader = ItemReader::new(&recorded, &self.table);
                        let recorded_sequencer = reader.optional_string("sequencer")?.unwrap_or_default();
                        let recorded_etag = reader.optional_string("etag")?;
                        let recorded_state = reader.state::<ObjectState>("state")?;
                        let order = sequencer::order(
                            sequencer::Version {
                                sequencer: &object.sequencer,
                                etag: object.etag.as_deref(),
                                time: object.event_time,
                            },
                            sequencer::Version {
                                sequencer: &recorded_sequencer,
                                etag: recorded_etag.as_deref(),
                                time: reader.time("event_time")?,
                            },
                            recorded_state == ObjectState::Removed,
                        );
                        if order == sequencer::VersionOrder::ConfirmsScanned {
                            // The same bytes: whatever was decided about them stands; only later
                            // events must now be ordered by this one's sequencer. A committed
                            // output that placed the scanned version names its sequencer, not
                            // this one: what it decided (`derived`) is written down with the
                            // new sequencer, or the version would read pending again.
                            let mut record = object_from_item(&recorded, &self.table)?;
                            self.derive_record(&mut record).await?;
                            let mut update = "SET #sequencer = :sequencer, #event_time = :event_time".to_owned();
                            let mut expression_values = values([
                                (":sequencer", string_value(&object.sequencer)),
                                (":event_time", time_value(object.event_time)),
                                (":recorded_sequencer", string_value(&recorded_sequencer)),
                            ]);
                            if let (ObjectState::Pending, Some(placement)) = (recorded_state, &record.placement) {
                                if record.state == ObjectState::Compacted {
                                    update.push_str(
                                        ", #state = :compacted, #output_key = :output_key, \
                                         #output_generation = :generation, #output_offset = :offset, \
                                         #output_length = :length, #output_sha256 = :sha256, \
                                         #output_separator_bytes = :separator_bytes, \
                                         #expiry_by_output = :by_output",
                                    );
                                    expression_values.extend(values([
                                        (":compacted", string_value(ObjectState::Compacted.as_str())),
                                        (":output_key", string_value(&placement.output_key)),
                                        (":generation", number_value(placement.generation)),
                                        (":offset", number_value(placement.offset)),
                                        (":length", number_value(placement.length)),
                                        (":sha256", string_value(&placement.sha256)),
                                        (":separator_bytes", number_value(placement.separator_bytes)),
                                        // Every output with a chunk directory keeps an expiry
                                        // cursor: as `mark_compacted`'s flip wrote for them.
                                        (":by_output", AttributeValue::Bool(true)),
                                    ]));
                                }
                            }
                            let confirmed = self
                                .conditional_update(
                                    item_key.clone(),
                                    &update,
                                    "#sequencer = :recorded_sequencer",
                                    expression_values,
                                    false,
                                )
                                .await?;
                            if confirmed.is_err() {
                                return Ok(Attempt::Retry);
                            }
                        }
                        if order != sequencer::VersionOrder::Newer {
                            // A replay of a pending object still makes sure its partition is flagged:
                            // the first delivery may have crashed between the two writes.
                            return Ok(Attempt::Done((IngestOutcome::Stale, recorded_state == ObjectState::Pending)));
                        }
                        let condition = "#sequencer = :recorded_sequencer";
                        let written = self
                            .conditional_put(
                                new_object_item(object),
                                condition,
                                values([(":recorded_sequencer", string_value(recorded_sequencer))]),
                            )
                            .await?;
                        if !written {
                            return Ok(Attempt::Retry);
                        }
                        IngestOutcome::Updated
                    }
                };
                Ok(Attempt::Done((outcome, true)))
            },
        )
        .await
    }

    pub(super) async fn record_removal_item(&self, removal: &RemovedObject) -> Result<IngestOutcome, ManifestError> {
        let Ok(partition) = self.layout.partition_of(&removal.key) else {
            return Ok(IngestOutcome::RemovalIgnored);
        };
        let item_key = key_of(object_item_pk(&removal.bucket, &partition.path, &removal.key), removal.key.clone());
        let item_key = &item_key;
        self.optimistically(
            || format!("object s3://{}/{}", removal.bucket, removal.key),
            || async move {
                // Unknown keys get no record: there is nothing to leave out of a plan.
                let Some(recorded) = self.get_item(item_key.clone()).await? else {
                    return Ok(Attempt::Done(IngestOutcome::RemovalIgnored));
                };
                let reader = ItemReader::new(&recorded, &self.table);
                let recorded_sequencer = reader.optional_string("sequencer")?.unwrap_or_default();
                if reader.state::<ObjectState>("state")? != ObjectState::Pending
                    || !sequencer::supersedes(&removal.sequencer, &recorded_sequencer)
                {
                    return Ok(Attempt::Done(IngestOutcome::RemovalIgnored));
                }
                // Stored pending, but a committed output may hold this version: then it is
                // compacted (`derived`), its bytes safe, and the removal changes nothing. The
                // rare path this makes dearer: see "Costs per operation" in the module doc.
                let mut record = object_from_item(&recorded, &self.table)?;
                self.derive_record(&mut record).await?;
                if record.state != ObjectState::Pending {
                    return Ok(Attempt::Done(IngestOutcome::RemovalIgnored));
                }
                // The sequencer and event time move with the state, so a replayed creation of the
                // removed version stays stale; the placement, if any, stays for the audit.
                let written = self
                    .conditional_update(
                        item_key.clone(),
                        "SET #state = :removed, #sequencer = :sequencer, #event_time = :event_time",
                        "#state = :pending AND #sequencer = :recorded_sequencer",
                        values([
                            (":removed", string_value(ObjectState::Removed.as_str())),
                            (":pending", string_value(ObjectState::Pending.as_str())),
                            (":sequencer", string_value(&removal.sequencer)),
                            (":event_time", time_value(removal.event_time)),
                            (":recorded_sequencer", string_value(recorded_sequencer)),
                        ]),
                        false,
                    )
                    .await?;
                if written.is_ok() {
                    return Ok(Attempt::Done(IngestOutcome::Removed));
                }
                Ok(Attempt::Retry)
            },
        )
        .await
    }
}
