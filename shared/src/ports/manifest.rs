//! The manifest port: the system's memory and its audit log.
//!
//! One record per partition, per source object and per output (see [`crate::domain::records`]).
//! Every adapter guarantees:
//! - **Sequencer order.** `record_object` and `record_removal` change an object's record only
//!   when the event's sequencer is greater than the recorded one, so replays and late, older
//!   events change nothing and say [`IngestOutcome::Stale`].
//! - **Reopening.** A new pending object in a `sealed` partition turns it back to `open`.
//! - **One closed-partition query.** `closed_partitions` answers "which closed partitions have
//!   work and no live lock" without reading every partition or object (an index keyed by close
//!   time: SQLite's index, DynamoDB's sparse GSI). Work is a pending object, or a seal that was
//!   interrupted (state `sealing` with an expired lease: its commits may still need finishing).
//! - **An exclusive, expiring lock.** `acquire` succeeds for exactly one of any number of racing
//!   callers while the lease is live, and bumps the generation; after the lease expires anyone
//!   may take it over.
//! - **Fencing.** Calls that take a [`Lease`] fail with [`ManifestError::LeaseLost`] once
//!   another caller has acquired the partition since, so a run that stalled past its lease can
//!   never commit over a newer one.
//! - **A single commit point.** `commit_output` turns an output from `writing` to `committed`
//!   in one atomic, fenced write; placements recorded before it only count once it is done.
//! - **Idempotence.** Every call can be repeated with the same arguments and leaves the same
//!   state: a rerun after a crash at any point finishes the work.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::partition::{Partition, PartitionKey};
use crate::domain::records::{ObjectRecord, ObjectState, OutputRecord, OutputState, PartitionRecord, Placement};

/// An object seen in an ObjectCreated event (or a backfill scan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewObject {
    pub bucket: String,
    pub key: String,
    pub partition: Partition,
    /// When the partition closes; stored when the partition record is first created.
    pub closes_at: DateTime<Utc>,
    pub size: u64,
    pub etag: Option<String>,
    pub sequencer: String,
    pub event_time: DateTime<Utc>,
}

/// An object seen in an ObjectRemoved event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedObject {
    pub bucket: String,
    pub key: String,
    pub sequencer: String,
    pub event_time: DateTime<Utc>,
}

/// What an ingest call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestOutcome {
    /// A new pending object.
    Recorded,
    /// A newer version replaced the record (it is pending again).
    Updated,
    /// A replay or an older event: nothing changed.
    Stale,
    /// A pending object was removed from the plan.
    Removed,
    /// A removal of an object the manifest does not hold as pending (unknown, or already
    /// compacted: its bytes are safe in an output).
    RemovalIgnored,
    /// Appended to the partition's arrival records without a read (DynamoDB, issue #12): which
    /// of the outcomes above it has is decided when the partition is read, by the same rule.
    Appended,
}

/// A held lock on one partition. The generation fences every write made under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub partition: PartitionKey,
    pub owner: String,
    pub generation: u64,
    pub expires_at: DateTime<Utc>,
}

/// A live lock on a closed partition: a seal run holds it, or held it and stopped renewing it
/// (killed) before its lease expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLock {
    pub partition: PartitionKey,
    pub owner: String,
    pub expires_at: DateTime<Utc>,
}

/// Which of a partition's objects to read: one page in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectQuery {
    pub state: Option<ObjectState>,
    /// Only compacted objects not yet marked for expiry whose output keeps no expiry cursor
    /// (committed before cursors existed): the per-source marks the seal's recovery finishes.
    /// Sources of outputs with a cursor are found through the cursor instead.
    pub expiry_unmarked: bool,
    pub start_after: Option<String>,
    pub limit: usize,
}

impl ObjectQuery {
    pub fn in_state(state: ObjectState) -> Self {
        Self { state: Some(state), expiry_unmarked: false, start_after: None, limit: 1000 }
    }

    pub fn all() -> Self {
        Self { state: None, expiry_unmarked: false, start_after: None, limit: 1000 }
    }

    /// Compacted objects whose own expiry mark is still to be made (see `expiry_unmarked`).
    pub fn awaiting_expiry() -> Self {
        Self { state: Some(ObjectState::Compacted), expiry_unmarked: true, start_after: None, limit: 1000 }
    }
}

/// Where one source landed, as `record_placements` takes it. The sequencer is the version that
/// was planned: a placement only applies while the record still holds that version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePlacement {
    pub key: String,
    pub sequencer: String,
    pub placement: Placement,
    /// The placed version's ETag and size: what expiry needs (a tag or delete conditional on
    /// the ETag) without reading the source's record again.
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub size: u64,
}

impl SourcePlacement {
    /// The placement of `source`'s planned version (its key, sequencer, ETag and size).
    pub fn of(source: &ObjectRecord, placement: Placement) -> Self {
        Self {
            key: source.key.clone(),
            sequencer: source.sequencer.clone(),
            placement,
            etag: source.etag.clone(),
            size: source.size,
        }
    }
}

/// Errors callers act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("partition {partition} is being sealed by {owner} until {expires_at}: try again after the lease expires")]
    Locked { partition: PartitionKey, owner: String, expires_at: DateTime<Utc> },
    #[error(
        "lost the lease on partition {partition} (generation {generation}): another seal run took it over; \
         this run stops and leaves the partition to it"
    )]
    LeaseLost { partition: PartitionKey, generation: u64 },
    #[error("{what} is not in the manifest")]
    NotFound { what: String },
    #[error("output {key} is {state}, which this step cannot act on")]
    InvalidOutputState { key: String, state: OutputState },
    #[error("manifest {backend} failed: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl ManifestError {
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        ManifestError::Backend { backend, source: source.into() }
    }
}

/// The manifest port.
#[async_trait]
pub trait Manifest: Send + Sync + fmt::Debug {
    /// A short name for logs: `sqlite`, `dynamodb`.
    fn name(&self) -> &'static str;

    // ── ingest ──────────────────────────────────────────────────────────────────────────

    /// Records a created object as pending (creating its partition record if needed), unless
    /// the record holds an equal or newer sequencer.
    async fn record_object(&self, object: &NewObject) -> Result<IngestOutcome, ManifestError>;

    /// [`Manifest::record_object`] for each object, outcomes in the same order. Adapters may
    /// batch (SQLite: one transaction; DynamoDB: requests in flight side by side); on an error
    /// some objects may be recorded and others not, which a retry of the whole batch finishes
    /// (each record is idempotent).
    async fn record_objects(&self, objects: &[NewObject]) -> Result<Vec<IngestOutcome>, ManifestError> {
        let mut outcomes = Vec::with_capacity(objects.len());
        for object in objects {
            outcomes.push(self.record_object(object).await?);
        }
        Ok(outcomes)
    }

    /// Marks a pending object `removed` (it leaves the plan); ignores compacted and unknown ones.
    async fn record_removal(&self, removal: &RemovedObject) -> Result<IngestOutcome, ManifestError>;

    // ── partitions ──────────────────────────────────────────────────────────────────────

    /// Partitions with `closes_at <= now`, no live lease, and work to do: at least one pending
    /// object, or an interrupted seal (state `sealing`); earliest close first, at most `limit`.
    async fn closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<PartitionRecord>, ManifestError>;

    /// The keys of `closed_partitions`, without their records' counts, for callers that lock
    /// each partition and look for themselves (the seal). The answer may also hold closed,
    /// unlocked partitions that turn out to have no work (every object removed): locking and
    /// releasing such a partition seals it. Same order and limit as `closed_partitions`. On
    /// DynamoDB the counts are what costs, a read of every object item of every partition
    /// returned; this answers from the index instead.
    async fn closed_partition_keys(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PartitionKey>, ManifestError> {
        Ok(self.closed_partitions(now, limit).await?.into_iter().map(|record| record.key).collect())
    }

    /// Closed partitions that are not sealed and whose lock is live at `now`: the ones
    /// `closed_partitions` leaves out because a seal run holds them, or held them and died
    /// (then they wait for the lease to expire). Earliest close first, at most `limit`. For
    /// reports (a seal says what it could not take); the index it reads may lag the table.
    async fn locked_closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<HeldLock>, ManifestError>;

    async fn partition(&self, key: &PartitionKey) -> Result<Option<PartitionRecord>, ManifestError>;

    /// All partitions in (bucket, path) order, one page.
    async fn partitions(
        &self,
        start_after: Option<&PartitionKey>,
        limit: usize,
    ) -> Result<Vec<PartitionRecord>, ManifestError>;

    // ── the lock ────────────────────────────────────────────────────────────────────────

    /// Takes the partition's lock for `lease_for`, if it is free or its lease has expired;
    /// bumps the generation and sets the state to `sealing`.
    async fn acquire(
        &self,
        partition: &PartitionKey,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<Lease, ManifestError>;

    /// Extends a held lease.
    async fn renew(&self, lease: &Lease, now: DateTime<Utc>, lease_for: Duration) -> Result<Lease, ManifestError>;

    /// Releases the lock: the partition becomes `sealed` if no pending object is left, `open`
    /// otherwise (a late object arrived during the seal).
    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> Result<PartitionRecord, ManifestError>;

    // ── objects ─────────────────────────────────────────────────────────────────────────

    async fn objects(&self, partition: &PartitionKey, query: &ObjectQuery) -> Result<Vec<ObjectRecord>, ManifestError>;

    /// The key and size of each pending object of the partition, one page in key order after
    /// `start_after`: all that planning reads of them (the seal reads the planned ones' records
    /// again, a window at a time, as it writes them). The same objects as
    /// `objects(partition, ObjectQuery::in_state(Pending))`, which this default reads; a
    /// backend that can read the two columns alone does so (SQLite, from one covering index:
    /// issue 16: reading each planned record whole here as well was 7% of the instructions of
    /// the seal of 100,000 tiny objects).
    async fn pending_sizes(
        &self,
        partition: &PartitionKey,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, ManifestError> {
        let query = ObjectQuery {
            start_after: start_after.map(str::to_owned),
            limit,
            ..ObjectQuery::in_state(ObjectState::Pending)
        };
        let page = self.objects(partition, &query).await?;
        Ok(page.into_iter().map(|object| (object.key, object.size)).collect())
    }

    async fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, ManifestError>;

    /// The objects placed in an output, by offset then key, one page: those after
    /// `start_after`, the (offset, key) of the previous page's last source. The key breaks ties:
    /// an empty source shares its offset with the source after it, so paging by offset alone
    /// would skip one. Of a committed output, a source still pending as the placed version is
    /// `compacted` ([`derived_state`](crate::domain::derived::derived_state)), whether or not
    /// `mark_compacted` has written it on its record yet.
    async fn output_sources(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, ManifestError>;

    /// Marks a pending object `missing` (gone, or changed, when the seal read it).
    async fn mark_missing(&self, lease: &Lease, key: &str, sequencer: &str, note: &str) -> Result<(), ManifestError>;

    // ── outputs and the commit ──────────────────────────────────────────────────────────

    /// Records an output about to be written (`writing`), with its upload id if any. Writing
    /// the same output again updates it.
    async fn begin_output(&self, lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError>;

    /// Records where each source sits in an output that is being written, given in offset
    /// order (successive calls for one output continue where the last one ended). The objects
    /// stay `pending` until the output commits, and whether `object` shows their placement
    /// before then is the adapter's choice (DynamoDB keeps it in per-output chunk items until
    /// `mark_compacted`). Returns the keys whose record no longer holds the planned version (a
    /// newer event arrived meanwhile): their placement was not recorded. That check is against
    /// the manifest as it is at this call, whatever was read since the sources were listed:
    /// the seal reads the next window's sources before it records a window's placements.
    async fn record_placements(
        &self,
        lease: &Lease,
        output_key: &str,
        placements: &[SourcePlacement],
    ) -> Result<Vec<String>, ManifestError>;

    /// The commit point: `writing` → `committed` with the output's size and sha256, and a fresh
    /// expiry cursor. Repeating it on a committed output with the same sha256 succeeds.
    // Eight arguments, each a field of the one fenced write the commit is; clippy stops at
    // seven (as for `ObjectStore::upload_part_copy`).
    #[allow(clippy::too_many_arguments)]
    async fn commit_output(
        &self,
        lease: &Lease,
        output_bucket: &str,
        output_key: &str,
        size: u64,
        sha256: &str,
        object_count: u64,
        now: DateTime<Utc>,
    ) -> Result<(), ManifestError>;

    /// Turns every still-pending object whose placement names this committed output into
    /// `compacted`; returns how many changed. Not fenced: finishing a commit is always right.
    async fn mark_compacted(&self, partition: &PartitionKey, output_key: &str) -> Result<u64, ManifestError>;

    /// [`Manifest::mark_compacted`] for the output's sources whose keys lie between `least`
    /// and `greatest` (both included); returns how many changed. The seal flips a committed
    /// output's sources this way a page at a time, each page before its sources are tagged or
    /// deleted and beside the tagging of the page before, instead of all of them before any
    /// tagging starts (issue 16: on SQLite the flip of 100,000 sources was half a second
    /// alone on the critical path). `mark_compacted` still follows and finishes whatever this
    /// left, so a crash in between changes nothing. A manifest whose commit already makes the
    /// sources compacted (DynamoDB, which derives the state from the placements) writes and
    /// reads nothing here and answers 0.
    async fn mark_compacted_between(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        least: &str,
        greatest: &str,
    ) -> Result<u64, ManifestError>;

    /// Records that these compacted objects were marked for expiry (tagged or deleted), each on
    /// its own record: for sources of outputs without an expiry cursor, for the exceptions
    /// (changed, gone, at the tag limit), and for every source when records expire
    /// (`COMPACTOR_RECORD_TTL`, which needs a time on each record).
    async fn mark_expiry(&self, bucket: &str, keys: &[String], at: DateTime<Utc>) -> Result<(), ManifestError>;

    /// The placements of a committed output as recorded, by offset then key, one page after
    /// `start_after` (as [`Manifest::output_sources`] pages). Unlike `output_sources` it reads
    /// no source record: expiry walks these, each tag or delete conditional on the placed
    /// ETag, so a source overwritten since is refused by the store. A placement whose source
    /// was superseded before the commit may be listed (DynamoDB) or not (SQLite). Empty for an
    /// unknown output.
    async fn output_placements(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<SourcePlacement>, ManifestError>;

    /// Moves a committed output's [`ExpiryCursor`](crate::domain::records::ExpiryCursor) to
    /// `through` (every source up to it is tagged or deleted), and marks it done when that was
    /// the last. Only forward: a repeat changes nothing. Not fenced: recording expiry that
    /// happened is always right. Does nothing for an output without a cursor (committed by an
    /// older version) or an unknown one.
    async fn advance_expiry(
        &self,
        output_bucket: &str,
        output_key: &str,
        through: (u64, &str),
        done: bool,
        at: DateTime<Utc>,
    ) -> Result<(), ManifestError>;

    /// Turns a `writing` output into `abandoned`: it will never be trusted.
    async fn abandon_output(&self, lease: &Lease, output_bucket: &str, output_key: &str) -> Result<(), ManifestError>;

    async fn outputs(
        &self,
        partition: &PartitionKey,
        state: Option<OutputState>,
    ) -> Result<Vec<OutputRecord>, ManifestError>;

    async fn output(&self, bucket: &str, key: &str) -> Result<Option<OutputRecord>, ManifestError>;
}
