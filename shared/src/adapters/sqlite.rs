//! SQLite as the manifest (the embedded backend).
//!
//! It exists so that the whole system (ingest, seal, audit, restore) runs on one machine with no
//! AWS account: the CLI's `demo`, the engine's tests and anyone trying the compactor on a local
//! directory use this adapter; Lambda uses DynamoDB. Both give the guarantees listed on
//! [`Manifest`], which the conformance suite in `testkit::manifest_conformance` checks on each.
//!
//! ```no_run
//! # async fn run() -> Result<(), compactor::ports::ManifestError> {
//! use compactor::adapters::sqlite::SqliteManifest;
//! use compactor::ports::Manifest;
//!
//! let manifest = SqliteManifest::open("./data/manifest.sqlite")?;
//! let closed = manifest.closed_partitions(chrono::Utc::now(), 100).await?;
//! println!("{} partitions are ready to seal", closed.len());
//! # Ok(()) }
//! ```
//!
//! # How it differs from DynamoDB
//! - **Transactions instead of conditional writes.** Every call that reads and then writes runs
//!   in one `BEGIN IMMEDIATE` transaction, which takes the database's write lock before the
//!   read: two handles (or two processes) on one file cannot interleave, so the lock, fencing
//!   and sequencer checks are plain reads followed by writes. DynamoDB expresses the same checks
//!   as condition expressions on single items. Sequencers are compared in Rust inside the
//!   transaction ([`sequencer::supersedes`]): their lengths differ, so SQL string order is wrong.
//! - **Counts derived by queries.** A partition's pending, compacted and committed counts are
//!   aggregate queries over covering indexes, computed when the record is read, so they can
//!   never drift. DynamoDB has no aggregates either: its adapter sums the object items when a
//!   record is read (no counters on the partition item, which would make it a hot key).
//! - **One writer at a time.** SQLite has a single write lock per file; in WAL mode readers do
//!   not block it. A second process waits up to [`BUSY_TIMEOUT`] for the lock, then fails with
//!   a backend error. Fine for one machine, not for a fleet of Lambdas.
//! - **The closed-partition index is partial, not sparse.** DynamoDB's GSI holds only
//!   partitions with pending objects; here a partial index leaves out `sealed` partitions
//!   (which never have pending objects), and an `EXISTS` on the objects index checks the rest.
//! - **No TTL.** Nothing is ever deleted by the database itself: `COMPACTOR_RECORD_TTL` is
//!   ignored here and every record is kept. A purge job would need a scheduler this backend
//!   does not have, and its records are the demo's and the tests' audit trail.
//! - **Times are kept to the microsecond** (integers since the Unix epoch, so SQL comparisons
//!   are numeric); a finer time passed in comes back truncated.
//!
//! # Choices the port leaves open (the conformance suite pins the same ones)
//! - The owner of a live lease may `acquire` again: it gets the next generation and its older
//!   lease is fenced.
//! - A released lease is fenced too (the lock owner is cleared), so a second `release` fails
//!   with `LeaseLost`.
//! - `begin_output` on a `committed` output changes nothing and succeeds; on an `abandoned`
//!   one it fails with `InvalidOutputState`.
//! - `mark_compacted` on an output that is not committed returns `Ok(0)`; on an unknown one
//!   `NotFound`. `abandon_output` on an abandoned output succeeds.
//! - A removal moves the record's sequencer and event time to the removal's, so a replayed
//!   creation of the removed version stays stale; its placement, if any, stays for the audit.
//! - `sealed_at` is the time of the last seal; a reopened partition keeps it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use rusqlite::types::Type;
use rusqlite::{
    params, params_from_iter, Connection, ErrorCode, OptionalExtension, Row, ToSql, Transaction, TransactionBehavior,
};

use crate::domain::partition::PartitionKey;
use crate::domain::records::{ObjectRecord, ObjectState, OutputRecord, OutputState, PartitionRecord, Placement};
use crate::domain::sequencer;
use crate::ports::manifest::{
    HeldLock, IngestOutcome, Lease, Manifest, ManifestError, NewObject, ObjectQuery, RemovedObject, SourcePlacement,
};

const BACKEND_NAME: &str = "sqlite";

/// The schema this build writes, stored in SQLite's `user_version` pragma. A file with any
/// other version is refused at open rather than misread. (Bump it with every change to
/// `SCHEMA_SQL`, and teach `prepare_schema` to migrate the older version.)
pub const SCHEMA_VERSION: i64 = 1;

/// How long a call waits for another handle's write lock before it fails.
pub const BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// The schema. Times are microseconds since the Unix epoch (`*_micros`), sizes and generations
/// are SQLite's signed 64-bit integers.
const SCHEMA_SQL: &str = "
CREATE TABLE partitions (
    bucket TEXT NOT NULL,
    path TEXT NOT NULL,
    period_start_micros INTEGER NOT NULL,
    period_end_micros INTEGER NOT NULL,
    closes_at_micros INTEGER NOT NULL,
    state TEXT NOT NULL,
    generation INTEGER NOT NULL,
    lock_owner TEXT,
    lease_expires_at_micros INTEGER,
    sealed_at_micros INTEGER,
    PRIMARY KEY (bucket, path)
) WITHOUT ROWID;

-- The closed-partition query walks this index in close-time order. Sealed partitions (the
-- ones that pile up over the years, and never hold pending objects) are left out of it, like
-- DynamoDB's sparse index leaves out partitions without pending objects.
CREATE INDEX partitions_unsealed_by_close_time ON partitions (closes_at_micros, path, bucket)
    WHERE state <> 'sealed';

CREATE TABLE objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    partition_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT,
    sequencer TEXT NOT NULL,
    event_time_micros INTEGER NOT NULL,
    state TEXT NOT NULL,
    note TEXT,
    output_key TEXT,
    output_generation INTEGER,
    output_offset INTEGER,
    output_length INTEGER,
    output_sha256 TEXT,
    output_separator_bytes INTEGER,
    expiry_marked_at_micros INTEGER,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;

-- A partition's objects by state in key order (the seal's pages), and with size as the last
-- column the index covers the partition counts, so they never read the table.
CREATE INDEX objects_by_partition_state ON objects (bucket, partition_path, state, key, size);

-- All of a partition's objects in key order (audit and restore page through them).
CREATE INDEX objects_by_partition ON objects (bucket, partition_path, key);

-- The sources of one output by offset. Objects without a placement are left out.
CREATE INDEX objects_by_output ON objects (bucket, output_key, output_offset)
    WHERE output_key IS NOT NULL;

CREATE TABLE outputs (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    partition_bucket TEXT NOT NULL,
    partition_path TEXT NOT NULL,
    generation INTEGER NOT NULL,
    part_number INTEGER NOT NULL,
    state TEXT NOT NULL,
    size INTEGER,
    sha256 TEXT,
    object_count INTEGER NOT NULL,
    upload_id TEXT,
    created_at_micros INTEGER NOT NULL,
    committed_at_micros INTEGER,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;

CREATE INDEX outputs_by_partition ON outputs (partition_bucket, partition_path, generation, part_number, state);
";

/// A partition row with its derived counts. Each count is a correlated subquery on a covering
/// index, so reading one partition costs a few index range scans, never a table scan.
const PARTITION_SELECT: &str = "
SELECT p.bucket, p.path, p.period_start_micros, p.period_end_micros, p.closes_at_micros, p.state, p.generation,
       p.lock_owner, p.lease_expires_at_micros, p.sealed_at_micros,
       (SELECT count(*) FROM objects o
         WHERE o.bucket = p.bucket AND o.partition_path = p.path AND o.state = 'pending') AS pending_objects,
       (SELECT coalesce(sum(o.size), 0) FROM objects o
         WHERE o.bucket = p.bucket AND o.partition_path = p.path AND o.state = 'pending') AS pending_bytes,
       (SELECT count(*) FROM objects o
         WHERE o.bucket = p.bucket AND o.partition_path = p.path AND o.state = 'compacted') AS compacted_objects,
       (SELECT coalesce(sum(o.size), 0) FROM objects o
         WHERE o.bucket = p.bucket AND o.partition_path = p.path AND o.state = 'compacted') AS compacted_bytes,
       (SELECT count(*) FROM outputs u
         WHERE u.partition_bucket = p.bucket AND u.partition_path = p.path AND u.state = 'committed')
         AS committed_outputs
FROM partitions p";

const OBJECT_SELECT: &str = "
SELECT bucket, key, partition_path, size, etag, sequencer, event_time_micros, state, note, output_key,
       output_generation, output_offset, output_length, output_sha256, output_separator_bytes,
       expiry_marked_at_micros
FROM objects";

const OUTPUT_SELECT: &str = "
SELECT bucket, key, partition_bucket, partition_path, generation, part_number, state, size, sha256, object_count,
       upload_id, created_at_micros, committed_at_micros
FROM outputs";

/// The ways this adapter fails besides SQLite's own errors, with what to do about each.
#[derive(Debug, thiserror::Error)]
enum SqliteManifestError {
    #[error("cannot open the manifest database {path}: check that its directory exists and is writable by this user")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the manifest database {path} has schema version {found}, which this build does not know (it writes \
         version {supported}): upgrade s3-compactor, or point it at another manifest file"
    )]
    UnknownSchemaVersion { path: String, found: i64, supported: i64 },
    #[error("the manifest database is read-only: check the file's and its directory's permissions ({source})")]
    ReadOnly {
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the manifest database stayed locked by another process for longer than {timeout:?}: \
         wait for the other seal or ingest run to finish, then try again ({source})"
    )]
    Busy {
        timeout: StdDuration,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what} = {value} does not fit SQLite's signed 64-bit integer")]
    TooLarge { what: &'static str, value: u64 },
    #[error("{now} + lease of {lease_for} is past the end of time: use a shorter lease")]
    LeaseOverflow { now: DateTime<Utc>, lease_for: Duration },
    #[error("{what} belongs to partition {found}, not to the leased partition {leased}: this is a bug in the caller")]
    WrongPartition { what: String, found: PartitionKey, leased: PartitionKey },
    #[error("the manifest's background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<SqliteManifestError> for ManifestError {
    fn from(error: SqliteManifestError) -> Self {
        ManifestError::backend(BACKEND_NAME, error)
    }
}

/// Maps SQLite's errors, with advice for the two a user can fix (permissions, another process).
fn sqlite_error(error: rusqlite::Error) -> ManifestError {
    let advice = match error.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => SqliteManifestError::ReadOnly { source: error },
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
            SqliteManifestError::Busy { timeout: BUSY_TIMEOUT, source: error }
        }
        _ => return ManifestError::backend(BACKEND_NAME, error),
    };
    advice.into()
}

/// SQLite as the manifest. Cheap to clone: clones share one connection.
#[derive(Debug, Clone)]
pub struct SqliteManifest {
    /// A std mutex, not tokio's: it is only ever locked inside `spawn_blocking`, for the length
    /// of one synchronous SQLite call, and never held across an `.await`, so an async mutex
    /// would only add overhead. It serialises this handle's calls; SQLite's file lock
    /// serialises writers across handles and processes.
    connection: Arc<Mutex<Connection>>,
    /// For error messages.
    location: String,
}

impl SqliteManifest {
    /// Opens (creating if absent) the manifest database at `path`, in WAL mode.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ManifestError> {
        let path = path.as_ref();
        let connection =
            Connection::open(path).map_err(|source| SqliteManifestError::Open { path: path.to_path_buf(), source })?;
        Self::prepare(connection, path.display().to_string())
    }

    /// A private, empty manifest that lives as long as this handle (and its clones): for tests
    /// and dry runs.
    pub fn in_memory() -> Result<Self, ManifestError> {
        let connection = Connection::open_in_memory().map_err(sqlite_error)?;
        Self::prepare(connection, ":memory:".to_owned())
    }

    fn prepare(mut connection: Connection, location: String) -> Result<Self, ManifestError> {
        // The busy timeout comes first: switching to WAL and creating the schema already need
        // the write lock another process may hold.
        connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
        // WAL lets readers (audit, the CLI) run while a seal writes. An in-memory database
        // answers "memory" and stays that way, which is fine.
        let _journal_mode: String =
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(sqlite_error)?;
        // NORMAL in WAL mode never corrupts the file; a power cut may lose the last
        // transactions, which the at-least-once events and idempotent seals redo.
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite_error)?;
        // A page cache of 64 MiB (the default is 2 MiB): a seal updates three indexes per
        // source, and with the default most of those pages were read again for each output.
        connection.pragma_update(None, "cache_size", -64 * 1024).map_err(sqlite_error)?;
        // No foreign keys: the adapter writes a partition before its objects in the same
        // transaction, DynamoDB has none either, and the conformance suite checks the result.
        Self::prepare_schema(&mut connection, &location)?;
        Ok(Self { connection: Arc::new(Mutex::new(connection)), location })
    }

    /// Creates the schema in an empty database, accepts the current version, and refuses any
    /// other rather than misreading it.
    fn prepare_schema(connection: &mut Connection, location: &str) -> Result<(), ManifestError> {
        // Immediate, so two processes opening a new file at once create the schema once.
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_error)?;
        let found: i64 =
            transaction.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(sqlite_error)?;
        match found {
            0 => {
                transaction.execute_batch(SCHEMA_SQL).map_err(sqlite_error)?;
                transaction.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sqlite_error)?;
            }
            SCHEMA_VERSION => {}
            unknown => {
                return Err(SqliteManifestError::UnknownSchemaVersion {
                    path: location.to_owned(),
                    found: unknown,
                    supported: SCHEMA_VERSION,
                }
                .into())
            }
        }
        transaction.commit().map_err(sqlite_error)
    }

    /// Where the database lives (a path, or `:memory:`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Runs `operation` on the connection in tokio's blocking pool: rusqlite's calls block, and
    /// on an async worker thread they would stall every other task.
    async fn run<T, F>(&self, operation: F) -> Result<T, ManifestError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, ManifestError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A panic inside `operation` unwinds through its `Transaction`, whose drop rolls
            // back, so a poisoned connection is still consistent and safe to reuse.
            let mut guard = connection.lock().unwrap_or_else(PoisonError::into_inner);
            operation(&mut guard)
        })
        .await
        .map_err(SqliteManifestError::Task)?
    }

    /// Runs `operation` in one `BEGIN IMMEDIATE` transaction: the write lock is taken before
    /// the first read, so what it reads cannot change before it writes (the part DynamoDB
    /// does with condition expressions). Committed only if `operation` succeeds.
    async fn write<T, F>(&self, operation: F) -> Result<T, ManifestError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, ManifestError> + Send + 'static,
    {
        self.run(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_error)?;
            let value = operation(&transaction)?;
            transaction.commit().map_err(sqlite_error)?;
            Ok(value)
        })
        .await
    }

    /// Runs `operation` in one read transaction, so its several queries see one snapshot.
    async fn read<T, F>(&self, operation: F) -> Result<T, ManifestError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, ManifestError> + Send + 'static,
    {
        self.run(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Deferred).map_err(sqlite_error)?;
            operation(&transaction)
        })
        .await
    }
}

// ── conversions ─────────────────────────────────────────────────────────────────────────────

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// Drops what SQLite does not keep, so that returned values equal what a later read returns.
fn truncated_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

fn integer(what: &'static str, value: u64) -> Result<i64, ManifestError> {
    i64::try_from(value).map_err(|_| SqliteManifestError::TooLarge { what, value }.into())
}

fn column_u64(row: &Row<'_>, column: &str) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(row_index(row, column), value))
}

fn column_optional_u64(row: &Row<'_>, column: &str) -> rusqlite::Result<Option<u64>> {
    match row.get::<_, Option<i64>>(column)? {
        None => Ok(None),
        Some(value) => u64::try_from(value)
            .map(Some)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(row_index(row, column), value)),
    }
}

fn column_time(row: &Row<'_>, column: &str) -> rusqlite::Result<DateTime<Utc>> {
    let value: i64 = row.get(column)?;
    DateTime::from_timestamp_micros(value)
        .ok_or(rusqlite::Error::IntegralValueOutOfRange(row_index(row, column), value))
}

fn column_optional_time(row: &Row<'_>, column: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(column)? {
        None => Ok(None),
        Some(value) => DateTime::from_timestamp_micros(value)
            .map(Some)
            .ok_or(rusqlite::Error::IntegralValueOutOfRange(row_index(row, column), value)),
    }
}

fn column_state<S: FromStr<Err = String>>(row: &Row<'_>, column: &str) -> rusqlite::Result<S> {
    let text: String = row.get(column)?;
    text.parse().map_err(|message: String| {
        rusqlite::Error::FromSqlConversionFailure(row_index(row, column), Type::Text, message.into())
    })
}

fn row_index(row: &Row<'_>, column: &str) -> usize {
    row.as_ref().column_index(column).unwrap_or(0)
}

fn partition_from_row(row: &Row<'_>) -> rusqlite::Result<PartitionRecord> {
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

fn object_from_row(row: &Row<'_>) -> rusqlite::Result<ObjectRecord> {
    let output_key: Option<String> = row.get("output_key")?;
    let placement = match output_key {
        None => None,
        Some(output_key) => Some(Placement {
            output_key,
            generation: column_u64(row, "output_generation")?,
            offset: column_u64(row, "output_offset")?,
            length: column_u64(row, "output_length")?,
            sha256: row.get("output_sha256")?,
            separator_bytes: column_u64(row, "output_separator_bytes")?,
        }),
    };
    Ok(ObjectRecord {
        bucket: row.get("bucket")?,
        key: row.get("key")?,
        partition_path: row.get("partition_path")?,
        size: column_u64(row, "size")?,
        etag: row.get("etag")?,
        sequencer: row.get("sequencer")?,
        event_time: column_time(row, "event_time_micros")?,
        state: column_state(row, "state")?,
        placement,
        expiry_marked_at: column_optional_time(row, "expiry_marked_at_micros")?,
        note: row.get("note")?,
    })
}

fn output_from_row(row: &Row<'_>) -> rusqlite::Result<OutputRecord> {
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
    })
}

// ── queries shared by several calls, run inside the caller's transaction ─────────────────────

fn load_partition(transaction: &Transaction<'_>, key: &PartitionKey) -> Result<Option<PartitionRecord>, ManifestError> {
    let sql = format!("{PARTITION_SELECT} WHERE p.bucket = ?1 AND p.path = ?2");
    transaction.query_row(&sql, params![key.bucket, key.path], partition_from_row).optional().map_err(sqlite_error)
}

fn load_output(transaction: &Transaction<'_>, bucket: &str, key: &str) -> Result<Option<OutputRecord>, ManifestError> {
    let sql = format!("{OUTPUT_SELECT} WHERE bucket = ?1 AND key = ?2");
    transaction.query_row(&sql, params![bucket, key], output_from_row).optional().map_err(sqlite_error)
}

/// The fencing rule for every call that takes a [`Lease`]: the partition's generation and lock
/// owner must still be the lease's. Expiry is not checked: a lease past its expiry that nobody
/// took over is still the newest, and a takeover bumps the generation, which is what fences.
fn check_fence(transaction: &Transaction<'_>, lease: &Lease) -> Result<(), ManifestError> {
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
fn check_output_partition(lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError> {
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
fn load_leased_output(
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

fn count_pending(transaction: &Transaction<'_>, key: &PartitionKey) -> Result<i64, ManifestError> {
    transaction
        .query_row(
            "SELECT count(*) FROM objects WHERE bucket = ?1 AND partition_path = ?2 AND state = 'pending'",
            params![key.bucket, key.path],
            |row| row.get(0),
        )
        .map_err(sqlite_error)
}

fn output_not_found(bucket: &str, key: &str) -> ManifestError {
    ManifestError::NotFound { what: format!("output s3://{bucket}/{key}") }
}

fn partition_not_found(key: &PartitionKey) -> ManifestError {
    ManifestError::NotFound { what: format!("partition {key}") }
}

/// Closed partitions with pending objects and no live lease: `?1` is now, `?2` the limit.
/// `state <> 'sealed'` changes no answer (a sealed partition has no pending object) but lets
/// SQLite walk the partial close-time index, which leaves sealed partitions out.
fn closed_partitions_sql() -> String {
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
fn locked_closed_partitions_sql() -> &'static str {
    "SELECT bucket, path, lock_owner, lease_expires_at_micros FROM partitions
     WHERE closes_at_micros <= ?1 AND state <> 'sealed' AND lock_owner IS NOT NULL AND lease_expires_at_micros > ?1
     ORDER BY closes_at_micros, path, bucket
     LIMIT ?2"
}

/// One page of a partition's objects in key order: `?1` bucket, `?2` partition path, `?3` the
/// key to start after, `?4` whether only compacted objects awaiting expiry, `?5` the limit, and
/// with `filter_by_state`, `?6` the state. The conditions are plain ranges and equalities (no
/// `?n IS NULL OR ...`) so that SQLite walks an index in key order instead of sorting the
/// partition for every page.
fn objects_sql(filter_by_state: bool) -> String {
    let state_condition = if filter_by_state { "AND state = ?6" } else { "" };
    format!(
        "{OBJECT_SELECT}
         WHERE bucket = ?1 AND partition_path = ?2 {state_condition}
           AND key > ?3
           AND (?4 = 0 OR (state = 'compacted' AND expiry_marked_at_micros IS NULL))
         ORDER BY key
         LIMIT ?5"
    )
}

/// One page of an output's sources by offset, then key: `?1` the partition's bucket, `?2` the
/// output key, `?3` the partition path, `?4` and `?6` the offset and key to start after, `?5`
/// the limit. The index on (bucket, output_key, output_offset) ends with the primary key's
/// `key` (a `WITHOUT ROWID` table's indexes do), so the row-value range is one index walk.
fn output_sources_sql() -> String {
    format!(
        "{OBJECT_SELECT}
         WHERE bucket = ?1 AND output_key = ?2 AND partition_path = ?3 AND (output_offset, key) > (?4, ?6)
         ORDER BY output_offset, key
         LIMIT ?5"
    )
}

fn limit_integer(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

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
            let Some(output) = load_output(transaction, &output_bucket, &output_key)? else {
                return Ok(Vec::new());
            };
            // Offsets are never negative, so -1 means "from the first" and keeps `>` a range scan.
            let (start_after_offset, start_after_key) = match start_after {
                Some((offset, key)) => (integer("offset", offset)?, key),
                None => (-1, String::new()),
            };
            let sql = output_sources_sql();
            let mut statement = transaction.prepare_cached(&sql).map_err(sqlite_error)?;
            let rows = statement.query_map(
                params![
                    output.partition.bucket,
                    output.key,
                    output.partition.path,
                    start_after_offset,
                    limit_integer(limit),
                    start_after_key
                ],
                object_from_row,
            );
            rows.and_then(|rows| rows.collect()).map_err(sqlite_error)
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
                debug_assert_eq!(source.placement.output_key, output_key, "a placement names another output");
                let placement = &source.placement;
                write_placement
                    .execute(params![
                        lease.partition.bucket,
                        source.key,
                        output_key,
                        integer("generation", placement.generation)?,
                        integer("offset", placement.offset)?,
                        integer("length", placement.length)?,
                        placement.sha256,
                        integer("separator_bytes", placement.separator_bytes)?,
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
                                 committed_at_micros = ?6
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
        let partition = partition.clone();
        let output_key = output_key.to_owned();
        self.write(move |transaction| {
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
            let changed = transaction
                .execute(
                    "UPDATE objects SET state = 'compacted'
                     WHERE bucket = ?1 AND partition_path = ?2 AND state = 'pending' AND output_key = ?3",
                    params![partition.bucket, partition.path, output_key],
                )
                .map_err(sqlite_error)?;
            Ok(changed as u64)
        })
        .await
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
fn record_object_in(transaction: &Transaction<'_>, object: &NewObject) -> Result<IngestOutcome, ManifestError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::manifest_conformance::{at, day_partition, key_of, new_object};

    async fn new_in_memory_manifest() -> (Arc<dyn Manifest>, ()) {
        (Arc::new(SqliteManifest::in_memory().expect("open an in-memory manifest")), ())
    }

    /// A database file in a temporary directory, which lives as long as the test.
    async fn new_file_manifest() -> (Arc<dyn Manifest>, tempfile::TempDir) {
        let directory = tempfile::tempdir().expect("create a temporary directory");
        let manifest = SqliteManifest::open(directory.path().join("manifest.sqlite")).expect("open a manifest file");
        (Arc::new(manifest), directory)
    }

    mod in_memory {
        crate::manifest_conformance_tests!(super::new_in_memory_manifest);
    }

    mod file {
        crate::manifest_conformance_tests!(super::new_file_manifest);
    }

    /// The conformance race goes through one handle, whose mutex already serialises calls. Here
    /// each racer has its own connection to one file, so only SQLite's file lock (taken by
    /// `BEGIN IMMEDIATE`) stands between them, as between two processes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn separate_handles_on_one_file_race_for_the_lock_and_one_wins() {
        const HANDLES: usize = 6;
        const PARTITIONS: u32 = 5;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("manifest.sqlite");
        let handles: Vec<SqliteManifest> = (0..HANDLES).map(|_| SqliteManifest::open(&path).unwrap()).collect();
        let now = at("2024-01-20T00:00:00Z");
        for day in 10..10 + PARTITIONS {
            handles[0].record_object(&new_object(&day_partition("logs", day), "a.json", "10", 10)).await.unwrap();
        }

        for day in 10..10 + PARTITIONS {
            let key = key_of(&day_partition("logs", day));
            let barrier = Arc::new(tokio::sync::Barrier::new(HANDLES));
            let racers: Vec<_> = handles
                .iter()
                .enumerate()
                .map(|(index, handle)| {
                    let handle = handle.clone();
                    let key = key.clone();
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        handle.acquire(&key, &format!("process-{index}"), now, Duration::minutes(15)).await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for racer in racers {
                match racer.await.unwrap() {
                    Ok(lease) => winners.push(lease),
                    Err(ManifestError::Locked { .. }) => {}
                    Err(other) => panic!("a losing handle must get Locked, got {other}"),
                }
            }
            assert_eq!(winners.len(), 1, "{key}: exactly one handle takes the lock: {winners:?}");
            let record = handles[HANDLES - 1].partition(&key).await.unwrap().unwrap();
            assert_eq!((record.generation, record.lock_owner), (1, Some(winners[0].owner.clone())));
        }
    }

    #[tokio::test]
    async fn a_reopened_file_keeps_its_records_in_wal_mode() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("manifest.sqlite");
        let object = new_object(&day_partition("logs", 14), "a b é.json", "0055AED6DCD90281E5", 42);
        let recorded = {
            let manifest = SqliteManifest::open(&path).unwrap();
            manifest.record_object(&object).await.unwrap();
            manifest.object(&object.bucket, &object.key).await.unwrap()
        };
        let reopened = SqliteManifest::open(&path).unwrap();
        assert_eq!(reopened.object(&object.bucket, &object.key).await.unwrap(), recorded);
        assert_eq!(reopened.location(), path.display().to_string());

        let connection = Connection::open(&path).unwrap();
        let journal_mode: String = connection.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
        assert_eq!(journal_mode, "wal");
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn an_unknown_schema_version_is_refused_with_advice() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("manifest.sqlite");
        drop(SqliteManifest::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();

        let error = SqliteManifest::open(&path).expect_err("a newer schema must not be misread");
        let message = error.to_string();
        assert!(matches!(error, ManifestError::Backend { backend: "sqlite", .. }), "{error:?}");
        assert!(message.contains("schema version 99"), "{message}");
        assert!(message.contains("upgrade s3-compactor"), "{message}");
        let version: i64 =
            Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
        assert_eq!(version, 99, "refusing changes nothing");
    }

    #[test]
    fn a_file_that_cannot_be_opened_says_what_to_check() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("no-such-directory").join("manifest.sqlite");
        let message = SqliteManifest::open(&path).expect_err("the directory does not exist").to_string();
        assert!(message.contains("check that its directory exists"), "{message}");
    }

    fn query_plan(manifest: &SqliteManifest, sql: &str, parameters: impl rusqlite::Params) -> String {
        let connection = manifest.connection.lock().unwrap();
        let mut statement = connection.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps: Vec<String> = statement
            .query_map(parameters, |row| row.get::<_, String>("detail"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        steps.join("\n")
    }

    /// The queries that page through a growing manifest must stay index walks: no scan of a
    /// table, and no sort (a `TEMP B-TREE`), which would cost the whole partition per page.
    #[test]
    fn paging_queries_walk_indexes_without_scanning_or_sorting() {
        let manifest = SqliteManifest::in_memory().unwrap();
        let plans = [
            (
                "closed_partitions",
                "partitions_unsealed_by_close_time",
                query_plan(&manifest, &closed_partitions_sql(), params![0_i64, 10_i64]),
            ),
            (
                "locked_closed_partitions",
                "partitions_unsealed_by_close_time",
                query_plan(&manifest, locked_closed_partitions_sql(), params![0_i64, 10_i64]),
            ),
            (
                "objects in a state",
                "objects_by_partition_state",
                query_plan(&manifest, &objects_sql(true), params!["b", "p/", "", false, 10, "pending"]),
            ),
            (
                "all objects",
                // The space tells it from `objects_by_partition_state`.
                "objects_by_partition ",
                query_plan(&manifest, &objects_sql(false), params!["b", "p/", "", false, 10]),
            ),
            (
                "output_sources",
                "objects_by_output",
                query_plan(&manifest, &output_sources_sql(), params!["b", "o", "p/", -1, 10, ""]),
            ),
        ];
        for (query, expected_index, plan) in plans {
            // The first step is the main loop; later ones are the counts' subqueries.
            let main_loop = plan.lines().next().unwrap_or_default();
            assert!(main_loop.contains(expected_index), "{query} does not search {expected_index}:\n{plan}");
            assert!(!plan.lines().any(|step| step.starts_with("SCAN")), "{query} scans:\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{query} sorts:\n{plan}");
        }
    }

    #[tokio::test]
    async fn sizes_past_sqlite_integers_are_refused() {
        let manifest = SqliteManifest::in_memory().unwrap();
        let object = new_object(&day_partition("logs", 14), "huge.json", "10", u64::MAX);
        let message = manifest.record_object(&object).await.expect_err("u64::MAX does not fit").to_string();
        assert!(message.contains("does not fit"), "{message}");
        assert_eq!(manifest.partition(&key_of(&day_partition("logs", 14))).await.unwrap(), None, "rolled back");
    }
}
