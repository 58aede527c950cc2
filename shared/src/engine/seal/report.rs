//! What a seal did, per partition and in total: the reports the CLI prints, seal-fn returns and
//! the logs summarise, and the progress callback's payload.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::info;

use crate::domain::partition::PartitionKey;
use crate::domain::records::PartitionState;
use crate::ports::HeldLock;

/// Called after every committed output, for progress bars.
pub type ProgressFn = Arc<dyn Fn(&OutputProgress) + Send + Sync>;

/// One committed output, as progress.
#[derive(Debug, Clone)]
pub struct OutputProgress {
    pub partition: PartitionKey,
    pub output_key: String,
    pub objects: u64,
    pub source_bytes: u64,
}

/// What to seal, and until when.
#[derive(Clone, Default)]
pub struct SealOptions {
    /// Seal only these partitions (backfill, reseal); `None` for every closed partition.
    pub partitions: Option<Vec<PartitionKey>>,
    /// Start no new output after this time (a Lambda's remaining time); the partition is
    /// released `open` and the next run goes on.
    pub deadline: Option<DateTime<Utc>>,
    /// Seal at most this many partitions in this run.
    pub max_partitions: Option<usize>,
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for SealOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealOptions")
            .field("partitions", &self.partitions)
            .field("deadline", &self.deadline)
            .field("max_partitions", &self.max_partitions)
            .finish_non_exhaustive()
    }
}

/// How marking sources for expiry went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpiryCounts {
    pub tagged: u64,
    /// Deleted, or found already gone: a batch delete does not tell the two apart.
    pub deleted: u64,
    /// Already carried the tag (a rerun).
    pub already_tagged: u64,
    /// Gone before we got to them (deleted by someone else): nothing to tag. Tag mode only;
    /// delete mode counts them as `deleted`.
    pub gone: u64,
    /// Overwritten since they were compacted: the new bytes are not in any output, so they are
    /// left alone (the new version's own event records it as pending).
    pub changed: u64,
    /// Already carrying S3's maximum of 10 tags, none ours: left untagged rather than drop a
    /// user's tag. Add a lifecycle rule on another criterion, or use expiry mode delete.
    pub tag_limit: u64,
}

impl ExpiryCounts {
    pub(super) fn add(&mut self, other: &ExpiryCounts) {
        self.tagged += other.tagged;
        self.deleted += other.deleted;
        self.already_tagged += other.already_tagged;
        self.gone += other.gone;
        self.changed += other.changed;
        self.tag_limit += other.tag_limit;
    }
}

/// What one partition's seal did.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionSealReport {
    pub partition: PartitionKey,
    pub generation: u64,
    pub outputs_committed: u64,
    pub objects_compacted: u64,
    pub source_bytes: u64,
    pub output_bytes: u64,
    /// Sources made into parts of committed outputs by server-side copy (`UploadPartCopy`):
    /// read once to be hashed, never uploaded by the seal.
    pub copied_sources: u64,
    pub copied_bytes: u64,
    /// Gzip sources of a line class that could not be inflated to their end (truncated, not
    /// gzip): compacted as they are, without the newline member after them.
    pub unreadable_gzip_sources: u64,
    /// Sources a rewriting format could not read as its input (a truncated or invalid
    /// CloudTrail file): marked `missing` with the reason (counted there too), left as they are.
    pub objects_not_in_format: u64,
    /// Records a rewriting format wrote (CloudTrail events, one NDJSON line each).
    pub records_rewritten: u64,
    /// Times an output left a source pending because its CSV header or its Parquet schema was
    /// not the output's: the seal's next pass gives it an output of its own header or schema.
    pub objects_deferred: u64,
    /// Lines that were not JSON (`ndjson`): set aside in their output's side file, logged.
    pub invalid_lines: u64,
    /// Gone or changed when read: marked `missing`, not in any output.
    pub objects_missing: u64,
    /// A newer version arrived while the output was written: its old bytes are in the output
    /// but the record stays pending for the next generation.
    pub objects_superseded: u64,
    /// Refused formats left pending (the configuration changed since they were ingested).
    pub objects_refused: u64,
    /// Uncommitted outputs of crashed runs, deleted and abandoned.
    pub outputs_abandoned: u64,
    /// Objects of outputs committed by a crashed run, turned compacted by this one.
    pub objects_finished: u64,
    pub expiry: ExpiryCounts,
    pub stopped_at_deadline: bool,
    /// The partition's state after release.
    pub state: PartitionState,
}

impl PartitionSealReport {
    /// False when the partition had nothing left to do (another run got there first).
    pub fn did_work(&self) -> bool {
        self.outputs_committed > 0
            || self.objects_missing > 0
            || self.outputs_abandoned > 0
            || self.objects_finished > 0
            || self.expiry != ExpiryCounts::default()
    }

    pub(super) fn new(partition: PartitionKey, generation: u64) -> Self {
        Self {
            partition,
            generation,
            outputs_committed: 0,
            objects_compacted: 0,
            source_bytes: 0,
            output_bytes: 0,
            copied_sources: 0,
            copied_bytes: 0,
            unreadable_gzip_sources: 0,
            objects_not_in_format: 0,
            records_rewritten: 0,
            objects_deferred: 0,
            invalid_lines: 0,
            objects_missing: 0,
            objects_superseded: 0,
            objects_refused: 0,
            outputs_abandoned: 0,
            objects_finished: 0,
            expiry: ExpiryCounts::default(),
            stopped_at_deadline: false,
            state: PartitionState::Sealing,
        }
    }
}

/// What a seal run did, in total and per partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SealReport {
    pub partitions_sealed: u64,
    /// Locked and released with nothing to do: another run had sealed them already.
    pub partitions_without_work: u64,
    /// Released `open`: a late object arrived, or the deadline came.
    pub partitions_left_open: u64,
    /// Held by another live seal run: skipped.
    pub partitions_locked: u64,
    /// Closed partitions with work that this run could not even pick, because a lock on them
    /// is live: another seal run holds it, or a killed one held it (it stopped renewing; its
    /// lease expires at `expires_at`, and the first seal after that recovers the partition).
    /// At most [`LOCKS_REPORTED`](super::LOCKS_REPORTED); a whole-run seal only (not when partitions are named).
    pub locks_held: Vec<HeldLock>,
    pub partitions_failed: u64,
    pub outputs_committed: u64,
    pub objects_compacted: u64,
    pub source_bytes: u64,
    pub output_bytes: u64,
    /// See [`PartitionSealReport::copied_sources`].
    pub copied_sources: u64,
    pub copied_bytes: u64,
    /// See [`PartitionSealReport::unreadable_gzip_sources`].
    pub unreadable_gzip_sources: u64,
    pub objects_not_in_format: u64,
    pub records_rewritten: u64,
    pub objects_deferred: u64,
    pub invalid_lines: u64,
    pub objects_missing: u64,
    pub objects_superseded: u64,
    /// See [`PartitionSealReport::objects_refused`].
    pub objects_refused: u64,
    pub outputs_abandoned: u64,
    pub objects_finished: u64,
    pub expiry: ExpiryCounts,
    pub stopped_at_deadline: bool,
    pub partitions: Vec<PartitionSealReport>,
    /// Partition and error message of every failure.
    pub failures: Vec<(String, String)>,
}

impl SealReport {
    pub(super) fn add(&mut self, partition: PartitionSealReport) {
        match partition.state {
            PartitionState::Sealed if !partition.did_work() => {
                self.partitions_without_work += 1;
                return;
            }
            PartitionState::Sealed => self.partitions_sealed += 1,
            _ => self.partitions_left_open += 1,
        }
        self.outputs_committed += partition.outputs_committed;
        self.objects_compacted += partition.objects_compacted;
        self.source_bytes += partition.source_bytes;
        self.output_bytes += partition.output_bytes;
        self.copied_sources += partition.copied_sources;
        self.copied_bytes += partition.copied_bytes;
        self.unreadable_gzip_sources += partition.unreadable_gzip_sources;
        self.objects_not_in_format += partition.objects_not_in_format;
        self.records_rewritten += partition.records_rewritten;
        self.objects_deferred += partition.objects_deferred;
        self.invalid_lines += partition.invalid_lines;
        self.objects_missing += partition.objects_missing;
        self.objects_superseded += partition.objects_superseded;
        self.objects_refused += partition.objects_refused;
        self.outputs_abandoned += partition.outputs_abandoned;
        self.objects_finished += partition.objects_finished;
        self.expiry.add(&partition.expiry);
        self.stopped_at_deadline |= partition.stopped_at_deadline;
        self.partitions.push(partition);
    }

    /// Logs the counts as one structured line.
    pub fn log(&self) {
        info!(
            partitions_sealed = self.partitions_sealed,
            partitions_left_open = self.partitions_left_open,
            partitions_locked = self.partitions_locked,
            partitions_failed = self.partitions_failed,
            outputs = self.outputs_committed,
            objects = self.objects_compacted,
            bytes = self.source_bytes,
            copied_sources = self.copied_sources,
            copied_bytes = self.copied_bytes,
            unreadable_gzip_sources = self.unreadable_gzip_sources,
            not_in_format = self.objects_not_in_format,
            records_rewritten = self.records_rewritten,
            deferred = self.objects_deferred,
            invalid_lines = self.invalid_lines,
            missing = self.objects_missing,
            superseded = self.objects_superseded,
            refused = self.objects_refused,
            abandoned = self.outputs_abandoned,
            finished = self.objects_finished,
            tagged = self.expiry.tagged,
            deleted = self.expiry.deleted,
            tag_limit = self.expiry.tag_limit,
            stopped_at_deadline = self.stopped_at_deadline,
            "seal finished"
        );
    }
}
