//! The [`Manifest`] implementation, one transaction per call.

use super::*;

#[async_trait]
impl Manifest for SqliteManifest {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    async fn record_object(&self, object: &NewObject) -> Result<IngestOutcome, ManifestError> {
        let object = object.clone();
        self.write(move |transaction| record_object_in(transaction, &object)).await
    }

    /// One transaction for the whole batch: ingest's cost is the commit, not the rows.
    async fn record_objects(&self, objects: &[NewObject]) -> Result<Vec<IngestOutcome>, ManifestError> {
        let objects = objects.to_vec();
        self.write(move |transaction| objects.iter().map(|object| record_object_in(transaction, object)).collect())
            .await
    }

    async fn record_removal(&self, removal: &RemovedObject) -> Result<IngestOutcome, ManifestError> {
        let removal = removal.clone();
        self.write(move |transaction| {
            let recorded: Option<(String, String)> = transaction
                .query_row(
                    "SELECT sequencer, state FROM objects WHERE bucket = ?1 AND key = ?2",
                    params![removal.bucket, removal.key],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(sqlite_error)?;
            let Some((recorded_sequencer, recorded_state)) = recorded else {
                // Unknown keys get no record: there is nothing to leave out of a plan.
                return Ok(IngestOutcome::RemovalIgnored);
            };
            if recorded_state != ObjectState::Pending.as_str()
                || !sequencer::supersedes(&removal.sequencer, &recorded_sequencer)
            {
                return Ok(IngestOutcome::RemovalIgnored);
            }
            // The sequencer and event time move with the state, so a replayed creation of the
            // removed version stays stale; the placement, if any, stays for the audit.
            transaction
                .execute(
                    "UPDATE objects SET state = 'removed', sequencer = ?3, event_time_micros = ?4
                     WHERE bucket = ?1 AND key = ?2",
                    params![removal.bucket, removal.key, removal.sequencer, micros(removal.event_time)],
                )
                .map_err(sqlite_error)?;
            Ok(IngestOutcome::Removed)
        })
        .await
    }

    async fn closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<PartitionRecord>, ManifestError> {
        self.read(move |transaction| {
            let sql = closed_partitions_sql();
            let mut statement = transaction.prepare_cached(&sql).map_err(sqlite_error)?;
            let rows = statement.query_map(params![micros(now), limit_integer(limit)], partition_from_row);
            rows.and_then(|rows| rows.collect()).map_err(sqlite_error)
        })
        .await
    }

    async fn locked_closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<HeldLock>, ManifestError> {
        self.read(move |transaction| {
            let sql = locked_closed_partitions_sql();
            let mut statement = transaction.prepare_cached(sql).map_err(sqlite_error)?;
            let rows = statement.query_map(params![micros(now), limit_integer(limit)], |row| {
                Ok(HeldLock {
                    partition: PartitionKey::new(row.get::<_, String>("bucket")?, row.get::<_, String>("path")?),
                    owner: row.get("lock_owner")?,
                    expires_at: column_time(row, "lease_expires_at_micros")?,
                })
            });
            rows.and_then(|rows| rows.collect()).map_err(sqlite_error)
        })
        .await
    }

    async fn partition(&self, key: &PartitionKey) -> Result<Option<PartitionRecord>, ManifestError> {
        let key = key.clone();
        self.read(move |transaction| load_partition(transaction, &key)).await
    }

    async fn partitions(
        &self,
        start_after: Option<&PartitionKey>,
        limit: usize,
    ) -> Result<Vec<PartitionRecord>, ManifestError> {
        let start_after = start_after.cloned();
        self.read(move |transaction| {
            // Row-value comparison: strictly after (bucket, path), in primary-key order.
            let sql = format!(
                "{PARTITION_SELECT}
                 WHERE ?1 IS NULL OR (p.bucket, p.path) > (?1, ?2)
                 ORDER BY p.bucket, p.path
                 LIMIT ?3"
            );
            let (after_bucket, after_path) = match &start_after {
                Some(key) => (Some(key.bucket.as_str()), Some(key.path.as_str())),
                None => (None, None),
            };
            let mut statement = transaction.prepare_cached(&sql).map_err(sqlite_error)?;
            let rows = statement.query_map(params![after_bucket, after_path, limit_integer(limit)], partition_from_row);
            rows.and_then(|rows| rows.collect()).map_err(sqlite_error)
        })
        .await
    }

    /// Re-acquiring a live lease by its own owner is allowed and still bumps the generation: the
    /// caller gets a fresh lease and its older one is fenced, as after any other takeover, so a
    /// retried seal never runs two generations at once.
    async fn acquire(
        &self,
        partition: &PartitionKey,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<Lease, ManifestError> {
        let partition = partition.clone();
        let owner = owner.to_owned();
        self.write(move |transaction| {
            let holder: Option<(i64, Option<String>, Option<i64>)> = transaction
                .query_row(
                    "SELECT generation, lock_owner, lease_expires_at_micros FROM partitions
                     WHERE bucket = ?1 AND path = ?2",
                    params![partition.bucket, partition.path],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(sqlite_error)?;
            let Some((generation, lock_owner, lease_expires_at)) = holder else {
                return Err(partition_not_found(&partition));
            };
            if let (Some(lock_owner), Some(lease_expires_at)) = (lock_owner, lease_expires_at) {
                if lease_expires_at > micros(now) && lock_owner != owner {
                    return Err(ManifestError::Locked {
                        partition,
                        owner: lock_owner,
                        expires_at: DateTime::from_timestamp_micros(lease_expires_at).unwrap_or(now),
                    });
                }
            }
            let expires_at = now
                .checked_add_signed(lease_for)
                .map(truncated_to_micros)
                .ok_or(SqliteManifestError::LeaseOverflow { now, lease_for })?;
            let next_generation = generation + 1;
            transaction
                .execute(
                    "UPDATE partitions
                     SET generation = ?3, state = 'sealing', lock_owner = ?4, lease_expires_at_micros = ?5
                     WHERE bucket = ?1 AND path = ?2",
                    params![partition.bucket, partition.path, next_generation, owner, micros(expires_at)],
                )
                .map_err(sqlite_error)?;
            Ok(Lease { partition, owner, generation: next_generation as u64, expires_at })
        })
        .await
    }

    async fn renew(&self, lease: &Lease, now: DateTime<Utc>, lease_for: Duration) -> Result<Lease, ManifestError> {
        let lease = lease.clone();
        self.write(move |transaction| {
            check_fence(transaction, &lease)?;
            let expires_at = now
                .checked_add_signed(lease_for)
                .map(truncated_to_micros)
                .ok_or(SqliteManifestError::LeaseOverflow { now, lease_for })?;
            transaction
                .execute(
                    "UPDATE partitions SET lease_expires_at_micros = ?3 WHERE bucket = ?1 AND path = ?2",
                    params![lease.partition.bucket, lease.partition.path, micros(expires_at)],
                )
                .map_err(sqlite_error)?;
            Ok(Lease { expires_at, ..lease })
        })
        .await
    }

    /// `sealed_at` is set when the partition becomes sealed; a reopened partition keeps the time
    /// of its last seal.
    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> Result<PartitionRecord, ManifestError> {
        let lease = lease.clone();
        self.write(move |transaction| {
            check_fence(transaction, &lease)?;
            let pending_objects = count_pending(transaction, &lease.partition)?;
            if pending_objects == 0 {
                transaction
                    .execute(
                        "UPDATE partitions
                         SET state = 'sealed', sealed_at_micros = ?3, lock_owner = NULL, lease_expires_at_micros = NULL
                         WHERE bucket = ?1 AND path = ?2",
                        params![lease.partition.bucket, lease.partition.path, micros(now)],
                    )
                    .map_err(sqlite_error)?;
            } else {
                // A late object arrived during the seal: the next seal writes a new generation.
                transaction
                    .execute(
                        "UPDATE partitions SET state = 'open', lock_owner = NULL, lease_expires_at_micros = NULL
                         WHERE bucket = ?1 AND path = ?2",
                        params![lease.partition.bucket, lease.partition.path],
                    )
                    .map_err(sqlite_error)?;
            }
            load_partition(transaction, &lease.partition)?.ok_or_else(|| partition_not_found(&lease.partition))
        })
        .await
    }

    async fn objects(&self, partition: &PartitionKey, query: &ObjectQuery) -> Result<Vec<ObjectRecord>, ManifestError> {
        let partition = partition.clone();
        let query = query.clone();
        self.read(move |transaction| {
            let sql = objects_sql(query.state.is_some());
            // No key sorts before the empty string, so "from the start" is the same range scan.
            let start_after = query.start_after.unwrap_or_default();
            let limit = limit_integer(query.limit);
            let mut parameters: Vec<&dyn ToSql> =
                vec![&partition.bucket, &partition.path, &start_after, &query.expiry_unmarked, &limit];
            let state = query.state.map(ObjectState::as_str);
            if let Some(state) = &state {
                parameters.push(state);
            }
            let mut statement = transaction.prepare_cached(&sql).map_err(sqlite_error)?;
            let rows = statement.query_map(params_from_iter(parameters), object_from_row);
            rows.and_then(|rows| rows.collect()).map_err(sqlite_error)
        })
        .await
    }

    /// From `objects_by_partition_state` alone (it covers both columns): no read of the rows.
    async fn pending_sizes(
        &self,
        partition: &PartitionKey,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, ManifestError> {
        let (partition, start_after) = (partition.clone(), start_after.unwrap_or_default().to_owned());
        self.read(move |transaction| pending_sizes_in(transaction, &partition, &start_after, limit)).await
    }

    async fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, ManifestError> {
        let bucket = bucket.to_owned();
        let key = key.to_owned();
        self.read(move |transaction| {
            let sql = format!("{OBJECT_SELECT} WHERE bucket = ?1 AND key = ?2");
            transaction.query_row(&sql, params![bucket, key], object_from_row).optional().map_err(sqlite_error)
        })
        .await
    }

    /// Placements name the output's key, not its bucket: the output's record gives its
    /// partition, whose objects are the only ones that can be placed in it. An output the
    /// manifest does not know has no sources.
    async fn output_sources(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, ManifestError> {
        let output_bucket = output_bucket.to_owned();
        let output_key = output_key.to_owned();
        let start_after = start_after.map(|(offset, key)| (offset, key.to_owned()));
        self.read(move |transaction| {
            let sql = output_sources_sql();
            let page =
                output_rows_page(transaction, &output_bucket, &output_key, start_after, limit, &sql, object_from_row)?;
            let Some((output, mut sources)) = page else { return Ok(Vec::new()) };
            // A row's placement is its own version's: once the output is committed, a row still
            // pending (before `mark_compacted`, e.g. after a crash between the two) is compacted.
            let committed = output.state == OutputState::Committed;
            for source in &mut sources {
                source.state = derived::derived_state(source.state, committed);
            }
            Ok(sources)
        })
        .await
    }

    async fn mark_missing(&self, lease: &Lease, key: &str, sequencer: &str, note: &str) -> Result<(), ManifestError> {
        let lease = lease.clone();
        let key = key.to_owned();
        let planned_sequencer = sequencer.to_owned();
        let note = note.to_owned();
        self.write(move |transaction| {
            check_fence(transaction, &lease)?;
            let recorded_sequencer: Option<String> = transaction
                .query_row(
                    "SELECT sequencer FROM objects
                     WHERE bucket = ?1 AND key = ?2 AND partition_path = ?3 AND state = 'pending'",
                    params![lease.partition.bucket, key, lease.partition.path],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sqlite_error)?;
            // A newer version arrived since the seal read it: that one is still to be compacted.
            let still_the_planned_version =
                recorded_sequencer.is_some_and(|recorded| sequencer::compare(&recorded, &planned_sequencer).is_eq());
            if still_the_planned_version {
                transaction
                    .execute(
                        "UPDATE objects SET state = 'missing', note = ?3 WHERE bucket = ?1 AND key = ?2",
                        params![lease.partition.bucket, key, note],
                    )
                    .map_err(sqlite_error)?;
            }
            Ok(())
        })
        .await
    }

    /// Beginning an output that is already `writing` updates its upload id and object count (a
    /// retried upload). Beginning one that is already `committed` changes nothing and succeeds,
    /// so a rerun after a crash past the commit is harmless. An `abandoned` one is never written
    /// again: [`ManifestError::InvalidOutputState`].
    async fn begin_output(&self, lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError> {
        let lease = lease.clone();
        let output = output.clone();
        self.write(move |transaction| {
            check_fence(transaction, &lease)?;
            check_output_partition(&lease, &output)?;
            let object_count = integer("object_count", output.object_count)?;
            match load_output(transaction, &output.bucket, &output.key)? {
                None => {
                    transaction
                        .execute(
                            "INSERT INTO outputs (bucket, key, partition_bucket, partition_path, generation,
                                                  part_number, state, object_count, upload_id, created_at_micros)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'writing', ?7, ?8, ?9)",
                            params![
                                output.bucket,
                                output.key,
                                output.partition.bucket,
                                output.partition.path,
                                integer("generation", output.generation)?,
                                output.part_number,
                                object_count,
                                output.upload_id,
                                micros(output.created_at),
                            ],
                        )
                        .map_err(sqlite_error)?;
                }
                Some(existing) => match existing.state {
                    OutputState::Writing => {
                        transaction
                            .execute(
                                "UPDATE outputs SET upload_id = ?3, object_count = ?4 WHERE bucket = ?1 AND key = ?2",
                                params![output.bucket, output.key, output.upload_id, object_count],
                            )
                            .map_err(sqlite_error)?;
                    }
                    OutputState::Committed => {}
                    OutputState::Abandoned => {
                        return Err(ManifestError::InvalidOutputState { key: output.key, state: existing.state })
                    }
                },
            }
            Ok(())
        })
        .await
    }

    async fn record_placements(
        &self,
        lease: &Lease,
        output_key: &str,
        placements: &[SourcePlacement],
    ) -> Result<Vec<String>, ManifestError> {
        let lease = lease.clone();
        let output_key = output_key.to_owned();
        let placements = placements.to_vec();
        self.write(move |transaction| {
            check_fence(transaction, &lease)?;
            let mut superseded_keys = Vec::new();
            // One statement a source: the placement is written where the record still holds the
            // planned version, spelled as planned (it was read from this row). Reading the
            // version first and then writing made two lookups of every row; a profile of the
            // seal of 100,000 tiny objects (issue 16) had SQLite at two fifths of its time.
            let mut place_planned = transaction
                .prepare_cached(
                    "UPDATE objects
                     SET output_key = ?3, output_generation = ?4, output_offset = ?5, output_length = ?6,
                         output_sha256 = ?7, output_separator_bytes = ?8
                     WHERE bucket = ?1 AND key = ?2 AND partition_path = ?9 AND state = 'pending' AND sequencer = ?10",
                )
                .map_err(sqlite_error)?;
            let mut read_version = transaction
                .prepare_cached(
                    "SELECT sequencer FROM objects
                     WHERE bucket = ?1 AND key = ?2 AND partition_path = ?3 AND state = 'pending'",
                )
                .map_err(sqlite_error)?;
            let mut write_placement = transaction
                .prepare_cached(
                    "UPDATE objects
                     SET output_key = ?3, output_generation = ?4, output_offset = ?5, output_length = ?6,
                         output_sha256 = ?7, output_separator_bytes = ?8
                     WHERE bucket = ?1 AND key = ?2",
                )
                .map_err(sqlite_error)?;
            for source in &placements {
                debug_assert_eq!(source.placement.output_key, output_key, "a placement names another output");
                let placement = &source.placement;
                let (generation, offset, length, separator_bytes) = (
                    integer("generation", placement.generation)?,
                    integer("offset", placement.offset)?,
                    integer("length", placement.length)?,
                    integer("separator_bytes", placement.separator_bytes)?,
                );
                let placed = place_planned
                    .execute(params![
                        lease.partition.bucket,
                        source.key,
                        output_key,
                        generation,
                        offset,
                        length,
                        placement.sha256,
                        separator_bytes,
                        lease.partition.path,
                        source.sequencer,
                    ])
                    .map_err(sqlite_error)?;
                if placed > 0 {
                    continue;
                }
                // Superseded, gone from the plan, or the same version spelled another way
                // (sequencers compare case-blind, padded with zeros): compared as sequencers.
                let recorded_sequencer: Option<String> = read_version
                    .query_row(params![lease.partition.bucket, source.key, lease.partition.path], |row| row.get(0))
                    .optional()
                    .map_err(sqlite_error)?;
                let still_the_planned_version =
                    recorded_sequencer.is_some_and(|recorded| sequencer::compare(&recorded, &source.sequencer).is_eq());
                if !still_the_planned_version {
                    superseded_keys.push(source.key.clone());
                    continue;
                }
                write_placement
                    .execute(params![
                        lease.partition.bucket,
                        source.key,
                        output_key,
                        generation,
                        offset,
                        length,
                        placement.sha256,
                        separator_bytes,
                    ])
                    .map_err(sqlite_error)?;
            }
            Ok(superseded_keys)
        })
        .await
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
        let lease = lease.clone();
        let output_bucket = output_bucket.to_owned();
        let output_key = output_key.to_owned();
        let sha256 = sha256.to_owned();
        self.write(move |transaction| {
            let output = load_leased_output(transaction, &lease, &output_bucket, &output_key)?;
            match output.state {
                OutputState::Writing => {
                    transaction
                        .execute(
                            "UPDATE outputs
                             SET state = 'committed', size = ?3, sha256 = ?4, object_count = ?5,
                                 committed_at_micros = ?6, expiry_tracked = 1
                             WHERE bucket = ?1 AND key = ?2",
                            params![
                                output_bucket,
                                output_key,
                                integer("size", size)?,
                                sha256,
                                integer("object_count", object_count)?,
                                micros(now),
                            ],
                        )
                        .map_err(sqlite_error)?;
                    Ok(())
                }
                // A repeated commit of the same bytes: the first one stands.
                OutputState::Committed if output.sha256.as_deref() == Some(sha256.as_str()) => Ok(()),
                state => Err(ManifestError::InvalidOutputState { key: output_key, state }),
            }
        })
        .await
    }

    /// An output that is not committed (yet, or ever) compacts nothing: `Ok(0)`. An unknown
    /// output is [`ManifestError::NotFound`].
    async fn mark_compacted(&self, partition: &PartitionKey, output_key: &str) -> Result<u64, ManifestError> {
        let (partition, output_key) = (partition.clone(), output_key.to_owned());
        self.write(move |transaction| flip_compacted_in(transaction, &partition, &output_key, None)).await
    }

    /// As `mark_compacted`, within the keys given: one walk of that stretch of the primary key.
    async fn mark_compacted_between(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        least: &str,
        greatest: &str,
    ) -> Result<u64, ManifestError> {
        let (partition, output_key) = (partition.clone(), output_key.to_owned());
        let keys = Some((least.to_owned(), greatest.to_owned()));
        self.write(move |transaction| flip_compacted_in(transaction, &partition, &output_key, keys)).await
    }

    async fn mark_expiry(&self, bucket: &str, keys: &[String], at: DateTime<Utc>) -> Result<(), ManifestError> {
        let bucket = bucket.to_owned();
        let keys = keys.to_vec();
        self.write(move |transaction| {
            // Only the first mark counts: it is when the source was tagged (or deleted).
            let mut mark = transaction
                .prepare_cached(
                    "UPDATE objects SET expiry_marked_at_micros = ?3
                     WHERE bucket = ?1 AND key = ?2 AND state = 'compacted' AND expiry_marked_at_micros IS NULL",
                )
                .map_err(sqlite_error)?;
            for key in &keys {
                mark.execute(params![bucket, key, micros(at)]).map_err(sqlite_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn output_placements(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<SourcePlacement>, ManifestError> {
        // The placement columns live on the source rows; a superseded source's row holds its
        // newer version, without the placement, so it is not listed here. Only the columns a
        // placement has: the seal reads every source's this way once, after its commit.
        let output_bucket = output_bucket.to_owned();
        let output_key = output_key.to_owned();
        let start_after = start_after.map(|(offset, key)| (offset, key.to_owned()));
        self.read(move |transaction| {
            let page = output_rows_page(
                transaction,
                &output_bucket,
                &output_key,
                start_after,
                limit,
                OUTPUT_PLACEMENTS_SQL,
                placement_from_row,
            )?;
            Ok(page.map(|(_, placements)| placements).unwrap_or_default())
        })
        .await
    }

    /// Moves the cursor (see [`ExpiryCursor::advanced`]): one write, whatever the number of
    /// sources it passes. A source's record shows the cursor's mark where the cursor has passed
    /// it (derived when the row is read, see `OBJECT_SELECT`), as on DynamoDB. Copying the mark
    /// onto each row was the third write of every source's row in a seal (issue 16).
    async fn advance_expiry(
        &self,
        output_bucket: &str,
        output_key: &str,
        through: (u64, &str),
        done: bool,
        at: DateTime<Utc>,
    ) -> Result<(), ManifestError> {
        let output_bucket = output_bucket.to_owned();
        let output_key = output_key.to_owned();
        let through = (through.0, through.1.to_owned());
        self.write(move |transaction| {
            let Some(output) = load_output(transaction, &output_bucket, &output_key)? else {
                return Ok(());
            };
            let Some(cursor) = output.expiry.as_ref() else {
                return Ok(());
            };
            let Some(moved) = cursor.advanced((through.0, &through.1), done, at) else {
                return Ok(());
            };
            let (through_offset, through_key) = match &moved.through {
                Some((offset, key)) => (Some(integer("offset", *offset)?), Some(key.clone())),
                None => (None, None),
            };
            transaction
                .execute(
                    "UPDATE outputs SET expiry_through_offset = ?3, expiry_through_key = ?4, expiry_done = ?5,
                            expiry_marked_at_micros = ?6
                     WHERE bucket = ?1 AND key = ?2",
                    params![output_bucket, output_key, through_offset, through_key, moved.done, micros(at)],
                )
                .map_err(sqlite_error)?;
            Ok(())
        })
        .await
    }

    /// Abandoning an abandoned output again succeeds (idempotence); a committed output is never
    /// abandoned: [`ManifestError::InvalidOutputState`].
    async fn abandon_output(&self, lease: &Lease, output_bucket: &str, output_key: &str) -> Result<(), ManifestError> {
        let lease = lease.clone();
        let output_bucket = output_bucket.to_owned();
        let output_key = output_key.to_owned();
        self.write(move |transaction| {
            let output = load_leased_output(transaction, &lease, &output_bucket, &output_key)?;
            match output.state {
                OutputState::Writing => {
                    transaction
                        .execute(
                            "UPDATE outputs SET state = 'abandoned' WHERE bucket = ?1 AND key = ?2",
                            params![output_bucket, output_key],
                        )
                        .map_err(sqlite_error)?;
                    Ok(())
                }
                OutputState::Abandoned => Ok(()),
                OutputState::Committed => {
                    Err(ManifestError::InvalidOutputState { key: output_key, state: output.state })
                }
            }
        })
        .await
    }

    async fn outputs(
        &self,
        partition: &PartitionKey,
        state: Option<OutputState>,
    ) -> Result<Vec<OutputRecord>, ManifestError> {
        let partition = partition.clone();
        self.read(move |transaction| {
            let sql = format!(
                "{OUTPUT_SELECT}
                 WHERE partition_bucket = ?1 AND partition_path = ?2 AND (?3 IS NULL OR state = ?3)
                 ORDER BY generation, part_number, bucket, key"
            );
            let mut statement = transaction.prepare_cached(&sql).map_err(sqlite_error)?;
            let rows = statement
                .query_map(params![partition.bucket, partition.path, state.map(OutputState::as_str)], output_from_row);
            rows.and_then(|rows| rows.collect()).map_err(sqlite_error)
        })
        .await
    }

    async fn output(&self, bucket: &str, key: &str) -> Result<Option<OutputRecord>, ManifestError> {
        let bucket = bucket.to_owned();
        let key = key.to_owned();
        self.read(move |transaction| load_output(transaction, &bucket, &key)).await
    }
}

/// [`Manifest::record_object`] inside `transaction`. Statements are cached: a batch runs the
/// same four many times.
pub(super) fn record_object_in(
    transaction: &Transaction<'_>,
    object: &NewObject,
) -> Result<IngestOutcome, ManifestError> {
    let size = integer("size", object.size)?;
    let execute = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<usize, ManifestError> {
        transaction.prepare_cached(sql).and_then(|mut statement| statement.execute(params)).map_err(sqlite_error)
    };
    // The partition record comes first; an existing one keeps its close time and state.
    execute(
        "INSERT INTO partitions (bucket, path, period_start_micros, period_end_micros, closes_at_micros,
                                 state, generation)
         VALUES (?1, ?2, ?3, ?4, ?5, 'open', 0)
         ON CONFLICT (bucket, path) DO NOTHING",
        params![
            object.bucket,
            object.partition.path,
            micros(object.partition.period.start),
            micros(object.partition.period.end),
            micros(object.closes_at),
        ],
    )?;
    let recorded: Option<(String, Option<String>, DateTime<Utc>, String)> = transaction
        .prepare_cached("SELECT sequencer, etag, event_time_micros, state FROM objects WHERE bucket = ?1 AND key = ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![object.bucket, object.key], |row| {
                    Ok((row.get(0)?, row.get(1)?, column_time(row, "event_time_micros")?, row.get(3)?))
                })
                .optional()
        })
        .map_err(sqlite_error)?;
    // The columns of a new record, in ?1..?7 order, for the INSERT and the UPDATE alike.
    let event_time = micros(object.event_time);
    let record =
        params![object.bucket, object.key, object.partition.path, size, object.etag, object.sequencer, event_time];
    let incoming =
        sequencer::Version { sequencer: &object.sequencer, etag: object.etag.as_deref(), time: object.event_time };
    let order_of = |(recorded_sequencer, recorded_etag, recorded_time, recorded_state): &(
        String,
        Option<String>,
        DateTime<Utc>,
        String,
    )| {
        let recorded =
            sequencer::Version { sequencer: recorded_sequencer, etag: recorded_etag.as_deref(), time: *recorded_time };
        sequencer::order(incoming, recorded, recorded_state == ObjectState::Removed.as_str())
    };
    let outcome = match recorded.as_ref().map(order_of) {
        None => {
            execute(
                "INSERT INTO objects (bucket, key, partition_path, size, etag, sequencer, event_time_micros, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending')",
                record,
            )?;
            IngestOutcome::Recorded
        }
        Some(sequencer::VersionOrder::NotNewer) => return Ok(IngestOutcome::Stale),
        Some(sequencer::VersionOrder::ConfirmsScanned) => {
            // The same bytes: whatever was decided about them stands; only later events must
            // now be ordered by this one's sequencer.
            execute(
                "UPDATE objects SET sequencer = ?3, event_time_micros = ?4 WHERE bucket = ?1 AND key = ?2",
                params![object.bucket, object.key, object.sequencer, event_time],
            )?;
            return Ok(IngestOutcome::Stale);
        }
        Some(sequencer::VersionOrder::Newer) => {
            // A newer version: whatever was decided about the old one (placement, compaction,
            // expiry) does not hold for these bytes.
            execute(
                "UPDATE objects
                 SET partition_path = ?3, size = ?4, etag = ?5, sequencer = ?6, event_time_micros = ?7,
                     state = 'pending', note = NULL, output_key = NULL, output_generation = NULL,
                     output_offset = NULL, output_length = NULL, output_sha256 = NULL,
                     output_separator_bytes = NULL, expiry_marked_at_micros = NULL
                 WHERE bucket = ?1 AND key = ?2",
                record,
            )?;
            IngestOutcome::Updated
        }
    };
    // A pending object in a sealed partition reopens it. A `sealing` one stays so: its seal's
    // release sees the pending object and opens it.
    execute(
        "UPDATE partitions SET state = 'open' WHERE bucket = ?1 AND path = ?2 AND state = 'sealed'",
        params![object.bucket, object.partition.path],
    )?;
    Ok(outcome)
}
