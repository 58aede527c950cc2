//! Rows to records and back, and the queries several calls share.

use super::*;

// ── conversions ─────────────────────────────────────────────────────────────────────────────

pub(super) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// Drops what SQLite does not keep, so that returned values equal what a later read returns.
pub(super) fn truncated_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

pub(super) fn integer(what: &'static str, value: u64) -> Result<i64, ManifestError> {
    i64::try_from(value).map_err(|_| SqliteManifestError::TooLarge { what, value }.into())
}

/// A column by name, or by its index in the SELECT (where a row is read many times a second:
/// rusqlite finds a name by comparing it with every column's name, each time).
pub(super) trait Column: rusqlite::RowIndex + Copy {
    /// The column's index, for error messages.
    fn index_in(self, row: &Row<'_>) -> usize;
}

impl Column for &str {
    fn index_in(self, row: &Row<'_>) -> usize {
        row.as_ref().column_index(self).unwrap_or(0)
    }
}

impl Column for usize {
    fn index_in(self, _row: &Row<'_>) -> usize {
        self
    }
}

pub(super) fn column_u64(row: &Row<'_>, column: impl Column) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(row_index(row, column), value))
}

pub(super) fn column_optional_u64(row: &Row<'_>, column: impl Column) -> rusqlite::Result<Option<u64>> {
    match row.get::<_, Option<i64>>(column)? {
        None => Ok(None),
        Some(value) => u64::try_from(value)
            .map(Some)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(row_index(row, column), value)),
    }
}

pub(super) fn column_time(row: &Row<'_>, column: impl Column) -> rusqlite::Result<DateTime<Utc>> {
    let value: i64 = row.get(column)?;
    DateTime::from_timestamp_micros(value)
        .ok_or(rusqlite::Error::IntegralValueOutOfRange(row_index(row, column), value))
}

pub(super) fn column_optional_time(row: &Row<'_>, column: impl Column) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(column)? {
        None => Ok(None),
        Some(value) => DateTime::from_timestamp_micros(value)
            .map(Some)
            .ok_or(rusqlite::Error::IntegralValueOutOfRange(row_index(row, column), value)),
    }
}

pub(super) fn column_state<S: FromStr<Err = String>>(row: &Row<'_>, column: impl Column) -> rusqlite::Result<S> {
    let text: String = row.get(column)?;
    text.parse().map_err(|message: String| {
        rusqlite::Error::FromSqlConversionFailure(row_index(row, column), Type::Text, message.into())
    })
}

pub(super) fn row_index(row: &Row<'_>, column: impl Column) -> usize {
    column.index_in(row)
}

pub(super) fn partition_from_row(row: &Row<'_>) -> rusqlite::Result<PartitionRecord> {
    Ok(PartitionRecord {
        key: PartitionKey { bucket: row.get("bucket")?, path: row.get("path")? },
        period_start: column_time(row, "period_start_micros")?,
        period_end: column_time(row, "period_end_micros")?,
        closes_at: column_time(row, "closes_at_micros")?,
        state: column_state(row, "state")?,
        generation: column_u64(row, "generation")?,
        lock_owner: row.get("lock_owner")?,
        lease_expires_at: column_optional_time(row, "lease_expires_at_micros")?,
        pending_objects: column_u64(row, "pending_objects")?,
        pending_bytes: column_u64(row, "pending_bytes")?,
        compacted_objects: column_u64(row, "compacted_objects")?,
        compacted_bytes: column_u64(row, "compacted_bytes")?,
        committed_outputs: column_u64(row, "committed_outputs")?,
        sealed_at: column_optional_time(row, "sealed_at_micros")?,
    })
}

/// Reads a row of [`OBJECT_SELECT`], by column index: a seal reads each of its sources' rows
/// several times, and by name the lookups were about 5% of its time (a profile at 100,000).
pub(super) fn object_from_row(row: &Row<'_>) -> rusqlite::Result<ObjectRecord> {
    let output_key: Option<String> = row.get(object_column::OUTPUT_KEY)?;
    let placement = match output_key {
        None => None,
        Some(output_key) => Some(Placement {
            output_key,
            generation: column_u64(row, object_column::OUTPUT_GENERATION)?,
            offset: column_u64(row, object_column::OUTPUT_OFFSET)?,
            length: column_u64(row, object_column::OUTPUT_LENGTH)?,
            sha256: row.get(object_column::OUTPUT_SHA256)?,
            separator_bytes: column_u64(row, object_column::OUTPUT_SEPARATOR_BYTES)?,
        }),
    };
    Ok(ObjectRecord {
        bucket: row.get(object_column::BUCKET)?,
        key: row.get(object_column::KEY)?,
        partition_path: row.get(object_column::PARTITION_PATH)?,
        size: column_u64(row, object_column::SIZE)?,
        etag: row.get(object_column::ETAG)?,
        sequencer: row.get(object_column::SEQUENCER)?,
        event_time: column_time(row, object_column::EVENT_TIME_MICROS)?,
        state: column_state(row, object_column::STATE)?,
        placement,
        expiry_marked_at: column_optional_time(row, object_column::EXPIRY_MARKED_AT_MICROS)?,
        note: row.get(object_column::NOTE)?,
    })
}

pub(super) fn output_from_row(row: &Row<'_>) -> rusqlite::Result<OutputRecord> {
    let part_number: i64 = row.get("part_number")?;
    Ok(OutputRecord {
        bucket: row.get("bucket")?,
        key: row.get("key")?,
        partition: PartitionKey { bucket: row.get("partition_bucket")?, path: row.get("partition_path")? },
        generation: column_u64(row, "generation")?,
        part_number: u32::try_from(part_number)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(row_index(row, "part_number"), part_number))?,
        state: column_state(row, "state")?,
        size: column_optional_u64(row, "size")?,
        sha256: row.get("sha256")?,
        object_count: column_u64(row, "object_count")?,
        upload_id: row.get("upload_id")?,
        created_at: column_time(row, "created_at_micros")?,
        committed_at: column_optional_time(row, "committed_at_micros")?,
        expiry: expiry_cursor_from_row(row)?,
    })
}

fn expiry_cursor_from_row(row: &Row<'_>) -> rusqlite::Result<Option<ExpiryCursor>> {
    let tracked: bool = row.get("expiry_tracked")?;
    if !tracked {
        return Ok(None);
    }
    let through = match (column_optional_u64(row, "expiry_through_offset")?, row.get("expiry_through_key")?) {
        (Some(offset), Some(key)) => Some((offset, key)),
        _ => None,
    };
    Ok(Some(ExpiryCursor {
        through,
        done: row.get("expiry_done")?,
        marked_at: column_optional_time(row, "expiry_marked_at_micros")?,
    }))
}

// ── queries shared by several calls, run inside the caller's transaction ─────────────────────

pub(super) fn load_partition(
    transaction: &Transaction<'_>,
    key: &PartitionKey,
) -> Result<Option<PartitionRecord>, ManifestError> {
    let sql = format!("{PARTITION_SELECT} WHERE p.bucket = ?1 AND p.path = ?2");
    transaction.query_row(&sql, params![key.bucket, key.path], partition_from_row).optional().map_err(sqlite_error)
}

pub(super) fn load_output(
    transaction: &Transaction<'_>,
    bucket: &str,
    key: &str,
) -> Result<Option<OutputRecord>, ManifestError> {
    let sql = format!("{OUTPUT_SELECT} WHERE bucket = ?1 AND key = ?2");
    transaction.query_row(&sql, params![bucket, key], output_from_row).optional().map_err(sqlite_error)
}

/// The fencing rule for every call that takes a [`Lease`]: the partition's generation and lock
/// owner must still be the lease's. Expiry is not checked: a lease past its expiry that nobody
/// took over is still the newest, and a takeover bumps the generation, which is what fences.
pub(super) fn check_fence(transaction: &Transaction<'_>, lease: &Lease) -> Result<(), ManifestError> {
    let holder: Option<(i64, Option<String>)> = transaction
        .query_row(
            "SELECT generation, lock_owner FROM partitions WHERE bucket = ?1 AND path = ?2",
            params![lease.partition.bucket, lease.partition.path],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(sqlite_error)?;
    let lease_generation = integer("generation", lease.generation)?;
    match holder {
        Some((generation, Some(owner))) if generation == lease_generation && owner == lease.owner => Ok(()),
        _ => Err(ManifestError::LeaseLost { partition: lease.partition.clone(), generation: lease.generation }),
    }
}

/// Outputs are only written under the lease of their own partition.
pub(super) fn check_output_partition(lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError> {
    if output.partition == lease.partition {
        Ok(())
    } else {
        Err(SqliteManifestError::WrongPartition {
            what: format!("output s3://{}/{}", output.bucket, output.key),
            found: output.partition.clone(),
            leased: lease.partition.clone(),
        }
        .into())
    }
}

/// An output a fenced call changes: the lease must hold, and the output must exist and belong
/// to the leased partition.
pub(super) fn load_leased_output(
    transaction: &Transaction<'_>,
    lease: &Lease,
    output_bucket: &str,
    output_key: &str,
) -> Result<OutputRecord, ManifestError> {
    check_fence(transaction, lease)?;
    let output = load_output(transaction, output_bucket, output_key)?
        .ok_or_else(|| output_not_found(output_bucket, output_key))?;
    check_output_partition(lease, &output)?;
    Ok(output)
}

pub(super) fn count_pending(transaction: &Transaction<'_>, key: &PartitionKey) -> Result<i64, ManifestError> {
    transaction
        .query_row(
            "SELECT count(*) FROM objects WHERE bucket = ?1 AND partition_path = ?2 AND state = 'pending'",
            params![key.bucket, key.path],
            |row| row.get(0),
        )
        .map_err(sqlite_error)
}

pub(super) fn output_not_found(bucket: &str, key: &str) -> ManifestError {
    ManifestError::NotFound { what: format!("output s3://{bucket}/{key}") }
}

pub(super) fn partition_not_found(key: &PartitionKey) -> ManifestError {
    ManifestError::NotFound { what: format!("partition {key}") }
}

/// Closed partitions with pending objects and no live lease: `?1` is now, `?2` the limit.
/// `state <> 'sealed'` changes no answer (a sealed partition has no pending object) but lets
/// SQLite walk the partial close-time index, which leaves sealed partitions out.
pub(super) fn closed_partitions_sql() -> String {
    format!(
        "{PARTITION_SELECT}
         WHERE p.closes_at_micros <= ?1
           AND p.state <> 'sealed'
           AND (p.lock_owner IS NULL OR p.lease_expires_at_micros <= ?1)
           AND (p.state = 'sealing'
                OR EXISTS (SELECT 1 FROM objects o
                           WHERE o.bucket = p.bucket AND o.partition_path = p.path AND o.state = 'pending'))
         ORDER BY p.closes_at_micros, p.path, p.bucket
         LIMIT ?2"
    )
}

/// Closed, unsealed partitions with a live lock: `?1` is now, `?2` the limit. The same partial
/// close-time index as [`closed_partitions_sql`].
pub(super) fn locked_closed_partitions_sql() -> &'static str {
    "SELECT bucket, path, lock_owner, lease_expires_at_micros FROM partitions
     WHERE closes_at_micros <= ?1 AND state <> 'sealed' AND lock_owner IS NOT NULL AND lease_expires_at_micros > ?1
     ORDER BY closes_at_micros, path, bucket
     LIMIT ?2"
}

/// One page of a partition's objects in key order: `?1` bucket, `?2` partition path, `?3` the
/// key to start after, `?4` whether only compacted objects awaiting their own expiry mark (their
/// output keeps no cursor), `?5` the limit, and
/// with `filter_by_state`, `?6` the state. The conditions are plain ranges and equalities (no
/// `?n IS NULL OR ...`) so that SQLite walks an index in key order instead of sorting the
/// partition for every page.
pub(super) fn objects_sql(filter_by_state: bool) -> String {
    let state_condition = if filter_by_state { "AND state = ?6" } else { "" };
    format!(
        "{OBJECT_SELECT}
         WHERE bucket = ?1 AND partition_path = ?2 {state_condition}
           AND key > ?3
           AND (?4 = 0 OR (state = 'compacted' AND expiry_marked_at_micros IS NULL
                            AND output_key NOT IN (SELECT u.key FROM outputs u
                                                   WHERE u.partition_bucket = ?1 AND u.partition_path = ?2
                                                     AND u.expiry_tracked = 1)))
         ORDER BY key
         LIMIT ?5"
    )
}

/// One page of a partition's pending keys and sizes in key order: `?1` bucket, `?2` partition
/// path, `?3` the key to start after, `?4` the limit. Every column is in
/// `objects_by_partition_state`, so the page is one walk of that index and no row is read.
pub(super) const PENDING_SIZES_SQL: &str = "
SELECT key, size FROM objects
WHERE bucket = ?1 AND partition_path = ?2 AND state = 'pending' AND key > ?3
ORDER BY key
LIMIT ?4";

/// [`Manifest::pending_sizes`] inside `transaction`. No key sorts before the empty string, so
/// `start_after` empty is "from the start" and the same range walk.
pub(super) fn pending_sizes_in(
    transaction: &Transaction<'_>,
    partition: &PartitionKey,
    start_after: &str,
    limit: usize,
) -> Result<Vec<(String, u64)>, ManifestError> {
    let mut statement = transaction.prepare_cached(PENDING_SIZES_SQL).map_err(sqlite_error)?;
    let rows = statement
        .query_map(params![partition.bucket, partition.path, start_after, limit_integer(limit)], |row| {
            Ok((row.get(0)?, column_u64(row, 1)?))
        });
    rows.and_then(|rows| rows.collect()).map_err(sqlite_error)
}

/// One page of an output's sources by offset, then key: `?1` the partition's bucket, `?2` the
/// output key, `?3` the partition path, `?4` and `?6` the offset and key to start after, `?5`
/// the limit. The index on (bucket, output_key, output_offset) ends with the primary key's
/// `key` (a `WITHOUT ROWID` table's indexes do), so the row-value range is one index walk.
pub(super) fn output_sources_sql() -> String {
    format!(
        "{OBJECT_SELECT}
         WHERE bucket = ?1 AND output_key = ?2 AND partition_path = ?3 AND (output_offset, key) > (?4, ?6)
         ORDER BY output_offset, key
         LIMIT ?5"
    )
}

/// [`output_sources_sql`] for the placement columns only (`output_placements`), with the same
/// parameters: key, sequencer, etag, size, then the placement's.
pub(super) const OUTPUT_PLACEMENTS_SQL: &str = "
SELECT key, sequencer, etag, size, output_key, output_generation, output_offset, output_length, output_sha256,
       output_separator_bytes
FROM objects
WHERE bucket = ?1 AND output_key = ?2 AND partition_path = ?3 AND (output_offset, key) > (?4, ?6)
ORDER BY output_offset, key
LIMIT ?5";

/// The least and greatest key of an output's sources: `?1` the partition's bucket, `?2` the
/// output key. A walk of the output's entries in `objects_by_output`, which hold the key (a
/// `WITHOUT ROWID` table's indexes end with its primary key): no row is read.
pub(super) const OUTPUT_KEY_RANGE_SQL: &str = "
SELECT min(key), max(key) FROM objects INDEXED BY objects_by_output WHERE bucket = ?1 AND output_key = ?2";

/// Turns an output's placed pending sources compacted: `?1` the partition's bucket, `?2` its
/// path, `?3` the output key, `?4` and `?5` the least and greatest key of its placements
/// ([`OUTPUT_KEY_RANGE_SQL`]). It walks the primary key between the two, where an output's
/// rows lie next to each other (an output is a range of its partition's keys), and rewrites
/// each in place: looked up from `objects_by_output` instead, each row cost a seek of the
/// primary key (issue 16). `NOT INDEXED` keeps the planner off `objects_by_partition_state`,
/// whose entries this very statement moves. Rows of the range that are not the output's
/// (other states, later versions) are passed over by the conditions.
pub(super) const MARK_COMPACTED_SQL: &str = "
UPDATE objects NOT INDEXED SET state = 'compacted'
WHERE bucket = ?1 AND key >= ?4 AND key <= ?5 AND partition_path = ?2 AND state = 'pending' AND output_key = ?3";

/// [`Manifest::mark_compacted`] (`keys` none) or [`Manifest::mark_compacted_between`] (`keys`
/// the least and greatest key) inside `transaction`: how many rows turned compacted. An output
/// that is not committed (yet, or ever) compacts nothing; an unknown one is
/// [`ManifestError::NotFound`]. Every placement of the output lies between the least and
/// greatest key of all of them, whatever the order of their offsets.
pub(super) fn flip_compacted_in(
    transaction: &Transaction<'_>,
    partition: &PartitionKey,
    output_key: &str,
    keys: Option<(String, String)>,
) -> Result<u64, ManifestError> {
    let output_state: Option<String> = transaction
        .query_row(
            "SELECT state FROM outputs WHERE partition_bucket = ?1 AND partition_path = ?2 AND key = ?3",
            params![partition.bucket, partition.path, output_key],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite_error)?;
    let Some(output_state) = output_state else {
        return Err(ManifestError::NotFound { what: format!("output {output_key} of partition {partition}") });
    };
    if output_state != OutputState::Committed.as_str() {
        return Ok(0);
    }
    let (least, greatest) = match keys {
        Some(keys) => keys,
        None => {
            let range: (Option<String>, Option<String>) = transaction
                .prepare_cached(OUTPUT_KEY_RANGE_SQL)
                .and_then(|mut statement| {
                    statement.query_row(params![partition.bucket, output_key], |row| Ok((row.get(0)?, row.get(1)?)))
                })
                .map_err(sqlite_error)?;
            let (Some(least), Some(greatest)) = range else { return Ok(0) };
            (least, greatest)
        }
    };
    let changed = transaction
        .prepare_cached(MARK_COMPACTED_SQL)
        .and_then(|mut statement| {
            statement.execute(params![partition.bucket, partition.path, output_key, least, greatest])
        })
        .map_err(sqlite_error)?;
    Ok(changed as u64)
}

/// A page of the rows of output `output_bucket`/`output_key`'s sources, in (offset, key) order
/// after `start_after`, by `sql` (whose parameters are the partition's bucket, the output key,
/// the partition's path, the offset and key to start after, and the limit), with the output's
/// record; `None` for an output the manifest does not know.
pub(super) fn output_rows_page<T>(
    transaction: &Transaction<'_>,
    output_bucket: &str,
    output_key: &str,
    start_after: Option<(u64, String)>,
    limit: usize,
    sql: &str,
    from_row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<(OutputRecord, Vec<T>)>, ManifestError> {
    let Some(output) = load_output(transaction, output_bucket, output_key)? else {
        return Ok(None);
    };
    // Offsets are never negative, so -1 means "from the first" and keeps `>` a range scan.
    let (start_after_offset, start_after_key) = match start_after {
        Some((offset, key)) => (integer("offset", offset)?, key),
        None => (-1, String::new()),
    };
    let mut statement = transaction.prepare_cached(sql).map_err(sqlite_error)?;
    let rows = statement.query_map(
        params![
            output.partition.bucket,
            output.key,
            output.partition.path,
            start_after_offset,
            limit_integer(limit),
            start_after_key
        ],
        from_row,
    );
    let rows = rows.and_then(|rows| rows.collect()).map_err(sqlite_error)?;
    Ok(Some((output, rows)))
}

/// A row of [`OUTPUT_PLACEMENTS_SQL`].
pub(super) fn placement_from_row(row: &Row<'_>) -> rusqlite::Result<SourcePlacement> {
    Ok(SourcePlacement {
        key: row.get(0)?,
        sequencer: row.get(1)?,
        etag: row.get(2)?,
        size: column_u64(row, 3)?,
        placement: Placement {
            output_key: row.get(4)?,
            generation: column_u64(row, 5)?,
            offset: column_u64(row, 6)?,
            length: column_u64(row, 7)?,
            sha256: row.get(8)?,
            separator_bytes: column_u64(row, 9)?,
        },
    })
}

pub(super) fn limit_integer(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
