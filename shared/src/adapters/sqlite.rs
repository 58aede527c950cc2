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
//! # The code
//! `schema` holds the tables and the columns records are read from, `rows` the row conversions
//! and the queries several calls share, `manifest` the port's implementation; this file opens
//! the database and runs each call in its transaction.
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
//! - **Expiry marks are derived from the cursor**, as on DynamoDB: `advance_expiry` writes the
//!   output's cursor only, and a compacted row without a mark of its own reads its output's
//!   (`OBJECT_SELECT`). Copying the mark onto each row it passed was, with the placement and
//!   `compacted`, one of three writes of every source's row in a seal (issue 16).
//! - **Schema versions.** A file of schema 1 (before expiry cursors) is migrated in place when
//!   opened: its outputs gain the cursor columns, and keep no cursor, so their sources keep
//!   marks of their own. A file of a newer schema than this build knows is refused, saying so.
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

use crate::domain::derived;
use crate::domain::partition::PartitionKey;
use crate::domain::records::{
    ExpiryCursor, ObjectRecord, ObjectState, OutputRecord, OutputState, PartitionRecord, Placement,
};
use crate::domain::sequencer;
use crate::ports::manifest::{
    HeldLock, IngestOutcome, Lease, Manifest, ManifestError, NewObject, ObjectQuery, RemovedObject, SourcePlacement,
};

const BACKEND_NAME: &str = "sqlite";

/// The schema this build writes, stored in SQLite's `user_version` pragma. A file with any
/// other version is refused at open rather than misread. (Bump it with every change to
/// `SCHEMA_SQL`, and teach `prepare_schema` to migrate the older version.)
pub const SCHEMA_VERSION: i64 = 2;

/// How long a call waits for another handle's write lock before it fails.
pub const BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(10);

mod manifest;
mod rows;
mod schema;

use rows::*;
use schema::*;

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
        // A page cache of 16 MiB (the default is 2 MiB): a seal updates three indexes per
        // source, and with the default most of those pages were read again for each output.
        // Not more: the cache fills as far as the manifest is large, so at 64 MiB a process's
        // peak memory grew with the partition (bench `tiny`: the seal of 1,000,000 objects
        // took 118.5 MiB, that of 100,000 87.9 MiB), while the seal walks its indexes in key
        // and offset order and needs only the pages at hand.
        connection.pragma_update(None, "cache_size", -16 * 1024).map_err(sqlite_error)?;
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
            // Additive: opening a schema-1 file migrates it in place, in this transaction.
            1 => {
                transaction.execute_batch(MIGRATE_1_TO_2_SQL).map_err(sqlite_error)?;
                transaction.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sqlite_error)?;
            }
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::manifest_conformance::{
        at, day_partition, key_of, lease_for, new_object, output_record, placements_end_to_end,
        seal_pending_into_one_output, OUTPUT_BUCKET,
    };

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

    #[tokio::test]
    async fn a_schema_1_file_is_migrated_and_its_outputs_keep_per_source_marks() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("manifest.sqlite");
        {
            // Schema 1: today's tables without the expiry cursor's columns.
            let cursor_columns = "    expiry_tracked INTEGER NOT NULL DEFAULT 0,
    expiry_through_offset INTEGER,
    expiry_through_key TEXT,
    expiry_done INTEGER NOT NULL DEFAULT 0,
    expiry_marked_at_micros INTEGER,
";
            assert!(SCHEMA_SQL.contains(cursor_columns), "the schema-2 columns, as written in SCHEMA_SQL");
            let schema_1 = SCHEMA_SQL.replace(cursor_columns, "");
            let connection = Connection::open(&path).unwrap();
            connection.execute_batch(&schema_1).unwrap();
            connection.pragma_update(None, "user_version", 1).unwrap();
            connection
                .execute(
                    "INSERT INTO outputs (bucket, key, partition_bucket, partition_path, generation, part_number, state,
                                          size, sha256, object_count, created_at_micros, committed_at_micros)
                     VALUES ('out', 'compacted/old.json', 'src', 'logs/', 1, 1, 'committed', 3, 'ab', 1, 0, 0)",
                    [],
                )
                .unwrap();
        }
        let manifest = SqliteManifest::open(&path).expect("a schema-1 file is migrated, not refused");
        let output = manifest.output("out", "compacted/old.json").await.unwrap().expect("the old output is kept");
        assert_eq!(output.expiry, None, "an output committed before cursors keeps per-source marks");
        drop(manifest);
        let version: i64 =
            Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        SqliteManifest::open(&path).expect("a migrated file opens again");
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

    /// Issue 16: a placement is one UPDATE conditional on the planned sequencer as written. A
    /// version spelled otherwise (case, trailing zeros) is still the planned one and is placed;
    /// a newer one is not.
    #[tokio::test]
    async fn a_placement_applies_to_the_planned_version_however_its_sequencer_is_spelled() {
        let manifest = SqliteManifest::in_memory().unwrap();
        let partition = day_partition("logs", 14);
        let same = new_object(&partition, "same.json", "00ab10", 10);
        let newer = new_object(&partition, "newer.json", "0010", 10);
        for object in [&same, &newer] {
            manifest.record_object(object).await.unwrap();
        }
        let now = at("2024-01-16T00:00:00Z");
        let lease = manifest.acquire(&key_of(&partition), "seal", now, lease_for()).await.unwrap();
        let output = output_record(&lease, 1, 2, now);
        manifest.begin_output(&lease, &output).await.unwrap();
        let pending =
            manifest.objects(&key_of(&partition), &ObjectQuery::in_state(ObjectState::Pending)).await.unwrap();
        let mut placements = placements_end_to_end(&output, &pending);
        for placement in &mut placements {
            placement.sequencer = if placement.key == same.key { "00AB1" } else { "000F" }.to_owned();
        }
        let superseded = manifest.record_placements(&lease, &output.key, &placements).await.unwrap();
        assert_eq!(superseded, vec![newer.key.clone()], "only the older planned version is superseded");
        let placed = manifest.object(&same.bucket, &same.key).await.unwrap().unwrap();
        assert_eq!(placed.placement.map(|placement| placement.output_key), Some(output.key.clone()));
        let left = manifest.object(&newer.bucket, &newer.key).await.unwrap().unwrap();
        assert_eq!(left.placement, None, "the newer version's record keeps no placement");
    }

    /// Issue 16: the flip walks the primary key between the output's least and greatest key.
    /// Every placed source turns compacted, also with offsets that run against key order; a
    /// pending source inside the output's key range but not placed in it stays pending.
    #[tokio::test]
    async fn the_flip_turns_every_placed_source_compacted_whatever_the_offsets() {
        let manifest = SqliteManifest::in_memory().unwrap();
        let partition = day_partition("logs", 14);
        let count = 2_500;
        let objects: Vec<NewObject> =
            (0..count).map(|index| new_object(&partition, &format!("t-{index:05}.json"), "10", 10)).collect();
        manifest.record_objects(&objects).await.unwrap();
        let not_placed = new_object(&partition, "t-01000-not-placed.json", "10", 10);
        manifest.record_object(&not_placed).await.unwrap();
        let now = at("2024-01-16T00:00:00Z");
        let lease = manifest.acquire(&key_of(&partition), "seal", now, lease_for()).await.unwrap();
        let output = output_record(&lease, 1, count as u64, now);
        manifest.begin_output(&lease, &output).await.unwrap();
        let records: Vec<ObjectRecord> = futures::future::join_all(
            objects.iter().map(|object| async { manifest.object(&object.bucket, &object.key).await.unwrap().unwrap() }),
        )
        .await;
        let mut placements = placements_end_to_end(&output, &records);
        // Offsets against key order: the last key first in the output.
        for (index, placement) in placements.iter_mut().enumerate() {
            placement.placement.offset = ((count - index) * 10) as u64;
        }
        assert!(manifest.record_placements(&lease, &output.key, &placements).await.unwrap().is_empty());
        assert_eq!(manifest.mark_compacted(&key_of(&partition), &output.key).await.unwrap(), 0, "not committed yet");
        let size = (count * 10) as u64;
        manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, size, "sha", count as u64, now).await.unwrap();

        let compacted = manifest.mark_compacted(&key_of(&partition), &output.key).await.unwrap();
        assert_eq!(compacted, count as u64, "every placed source");
        let record = manifest.partition(&key_of(&partition)).await.unwrap().unwrap();
        assert_eq!((record.pending_objects, record.compacted_objects), (1, count as u64));
        let left = manifest.object(&not_placed.bucket, &not_placed.key).await.unwrap().unwrap();
        assert_eq!(left.state, ObjectState::Pending, "inside the output's key range, but not in the output");
        assert_eq!(manifest.mark_compacted(&key_of(&partition), &output.key).await.unwrap(), 0, "done once");
    }

    /// Issue 16: moving a cursor writes the output's row only; each source's record reads the
    /// mark through it (before, the mark was copied onto every row the cursor passed).
    #[tokio::test]
    async fn a_cursors_mark_is_read_through_each_source_not_written_on_it() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("manifest.sqlite");
        let manifest = SqliteManifest::open(&path).unwrap();
        let partition = day_partition("logs", 14);
        let objects: Vec<NewObject> =
            ["a.json", "b.json", "c.json"].iter().map(|name| new_object(&partition, name, "10", 10)).collect();
        for object in &objects {
            manifest.record_object(object).await.unwrap();
        }
        let now = at("2024-01-16T00:00:00Z");
        let lease = manifest.acquire(&key_of(&partition), "seal", now, lease_for()).await.unwrap();
        let output = seal_pending_into_one_output(&manifest, &lease, 1, now).await;
        let placed = manifest.output_placements(OUTPUT_BUCKET, &output.key, None, 10).await.unwrap();
        let through_b = (placed[1].placement.offset, placed[1].key.as_str());
        let mark = now + Duration::minutes(1);
        manifest.advance_expiry(OUTPUT_BUCKET, &output.key, through_b, false, mark).await.unwrap();

        let marks: Vec<Option<DateTime<Utc>>> = futures::future::join_all(
            objects.iter().map(|object| async { manifest.object(&object.bucket, &object.key).await.unwrap() }),
        )
        .await
        .into_iter()
        .map(|record| record.unwrap().expiry_marked_at)
        .collect();
        assert_eq!(marks, [Some(mark), Some(mark), None], "a and b passed by the cursor, c not yet");
        let rows_written: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM objects WHERE expiry_marked_at_micros IS NOT NULL", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows_written, 0, "no source row was written by the cursor's move");
    }
}
