//! The seal protocol (DESIGN.md steps 1–6), and how each step recovers from a crash before it.
//!
//! | step | what | if the run dies here, the next run… |
//! |---|---|---|
//! | 1 pick | `closed_partition_keys`, or the partitions asked for | picks them again |
//! | 2 lock | `acquire`: generation + 1, lease | waits for the lease to expire, then takes over |
//! | recover | abandon `writing` outputs (abort the upload, delete the object: never trusted); finish commits whose objects are still pending; expire the sources of committed outputs from where their expiry cursor stopped (and older outputs' unmarked sources one by one) | does the same, idempotently |
//! | 3 plan | page pending objects in key order through the [`Packer`] | plans again under a new generation: new output keys |
//! | 4 write | `begin_output` (writing), stream sources into the store (large ones copied server-side) | finds the output `writing` and abandons it |
//! | 5 commit | record placements, `commit_output` (the commit point), `mark_compacted`; then tag the output's placed sources (delete mode: delete them per 1,000, across outputs), each conditional on the placed ETag, and `advance_expiry` the output's cursor past them (`mark_expiry` only for the exceptions) | before the commit: abandons; after it: finishes `mark_compacted`, and the expiry from the cursor on |
//! | 6 release | `sealed`, or `open` if a late object arrived | nothing to do; a late object reopens the partition |
//!
//! A source is only ever tagged or deleted once its output is `committed`: expiry reads the
//! committed output's placements, and each tag or delete is conditional on the ETag of the
//! version placed, so a source overwritten since is refused by the store (`changed`) and its
//! new bytes stay. The cursor moves only past sources that were done (or refused), so a crash
//! or a failure at any point leaves it where the next run must resume.
//!
//! **Deletes in batches.** In delete mode, committed sources wait, across outputs, until 1,000
//! of them (or the partition's last) can go in one `delete_many` (S3's DeleteObjects): deleting
//! sources costs one request per 1,000 of them, not one each. Each delete is conditional on
//! the ETag the manifest recorded, so a source overwritten since it was compacted is refused by
//! the store itself and counted `changed`, with no HEAD beforehand. A crash with a batch
//! waiting leaves compacted, unmarked sources, which the next run's recovery marks (it reads
//! them 1,000 at a time). Tag mode has no batch request on S3: right after each commit, every
//! source is tagged on its own, 16 at a time
//! ([`ObjectStore::add_tag_many`](crate::ports::ObjectStore::add_tag_many)), with one
//! PutObjectTagging when its GET showed no tags of its own (kept from the write in
//! `SeenSources`), after a HEAD and GetObjectTagging otherwise; the local directory tags a
//! whole output's sources in one go.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tracing::{info, info_span, warn, Instrument};

use super::seen::SeenSources;
use super::writer::{needs_multipart, OutputTarget, WindowedWriter, WrittenOutput};
use super::{Compactor, EngineError};
use crate::config::ExpiryMode;
use crate::domain::partition::PartitionKey;
use crate::domain::plan::PlannedOutput;
use crate::domain::ranges::{PlannedRange, RangePacker, RangeWindow};
use crate::domain::records::{expiry_unfinished, renewal_due};
use crate::domain::records::{ObjectRecord, ObjectState, OutputRecord, OutputState, PartitionState};
use crate::ports::object_store::remove_tag;
use crate::ports::{
    DeleteRequest, HeldLock, Lease, ManifestError, ObjectQuery, StoreError, TagOutcome, TagRequest, MAX_KEYS_PER_DELETE,
};

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
    fn add(&mut self, other: &ExpiryCounts) {
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

    fn new(partition: PartitionKey, generation: u64) -> Self {
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
    /// At most [`LOCKS_REPORTED`]; a whole-run seal only (not when partitions are named).
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
    fn add(&mut self, partition: PartitionSealReport) {
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

enum PartitionOutcome {
    // Boxed: a report is large next to `Locked`.
    Sealed(Box<PartitionSealReport>),
    Locked,
}

/// Manifest pages read at a time.
const PAGE: usize = 1000;
/// Live locks a seal report names at most.
pub const LOCKS_REPORTED: usize = 100;
/// Committed sources marked for expiry together: one batch delete's worth.
const EXPIRY_BATCH: usize = MAX_KEYS_PER_DELETE;

impl Compactor {
    /// Seals every closed partition with pending objects (or the ones `options` names), a few
    /// at a time. Failures of one partition do not stop the others; they are counted and
    /// reported, and the partition is left for the next run.
    pub async fn seal_closed(&self, options: &SealOptions) -> Result<SealReport, EngineError> {
        let mut report = SealReport::default();
        let mut tried: std::collections::HashSet<PartitionKey> = Default::default();
        let max_partitions = options.max_partitions.unwrap_or(usize::MAX);
        loop {
            let batch: Vec<PartitionKey> = match &options.partitions {
                Some(partitions) => partitions.iter().filter(|key| !tried.contains(*key)).cloned().collect(),
                // Keys only: the seal locks each partition and reads its objects itself, so the
                // counts `closed_partitions` derives (every object item, on DynamoDB) would be
                // read for nothing.
                None => self
                    .manifest
                    .closed_partition_keys(self.clock.now(), PAGE)
                    .await?
                    .into_iter()
                    .filter(|key| !tried.contains(key))
                    .collect(),
            };
            let room = max_partitions.saturating_sub(tried.len());
            let batch: Vec<PartitionKey> = batch.into_iter().take(room).collect();
            if batch.is_empty() {
                break;
            }
            tried.extend(batch.iter().cloned());
            let results: Vec<(PartitionKey, Result<PartitionOutcome, EngineError>)> = futures::stream::iter(batch)
                .map(|partition| async move {
                    let span = info_span!("seal_partition", partition = %partition);
                    let result = self.seal_partition(&partition, options).instrument(span).await;
                    (partition, result)
                })
                .buffer_unordered(self.config.partition_concurrency)
                .collect()
                .await;
            for (partition, result) in results {
                match result {
                    Ok(PartitionOutcome::Sealed(partition_report)) => report.add(*partition_report),
                    Ok(PartitionOutcome::Locked) => report.partitions_locked += 1,
                    Err(error) => {
                        warn!(partition = %partition, error = %error, "partition seal failed; the next run retries it");
                        report.partitions_failed += 1;
                        report.failures.push((partition.to_string(), error.to_string()));
                    }
                }
            }
            if report.stopped_at_deadline || options.partitions.is_some() {
                break;
            }
        }
        if options.partitions.is_none() {
            // Said, not silent: after a crash, the dead run's partitions wait for its lease.
            match self.manifest.locked_closed_partitions(self.clock.now(), LOCKS_REPORTED).await {
                Ok(locks) => report.locks_held = locks,
                Err(error) => warn!(error = %error, "could not list the partitions locked by other seal runs"),
            }
            for lock in &report.locks_held {
                warn!(partition = %lock.partition, owner = %lock.owner, lease_expires_at = %lock.expires_at, "partition locked by another seal run, live or stopped; retried once its lease expires");
            }
        }
        report.log();
        Ok(report)
    }

    async fn seal_partition(
        &self,
        partition: &PartitionKey,
        options: &SealOptions,
    ) -> Result<PartitionOutcome, EngineError> {
        let lease = match self.manifest.acquire(partition, &self.owner, self.clock.now(), self.config.lease).await {
            Ok(lease) => lease,
            Err(ManifestError::Locked { owner, expires_at, .. }) => {
                info!(partition = %partition, owner = %owner, expires_at = %expires_at, "partition is being sealed elsewhere");
                return Ok(PartitionOutcome::Locked);
            }
            Err(error) => return Err(error.into()),
        };
        let mut lease = lease;
        let mut report = PartitionSealReport::new(partition.clone(), lease.generation);
        match self.seal_under_lease(&mut lease, &mut report, options).await {
            Ok(()) => {
                let record = self.manifest.release(&lease, self.clock.now()).await?;
                report.state = record.state;
                info!(
                    partition = %partition,
                    generation = lease.generation,
                    state = %record.state,
                    outputs = report.outputs_committed,
                    objects = report.objects_compacted,
                    bytes = report.source_bytes,
                    copied_sources = report.copied_sources,
                    "partition sealed"
                );
                Ok(PartitionOutcome::Sealed(Box::new(report)))
            }
            Err(error) => {
                // A failed run releases its lock so the next run can start at once; a crashed
                // one cannot, and its lease expires instead. Either way the next run recovers.
                // Except: released with nothing pending, a partition is sealed and no
                // scheduled run looks at it again, so compacted sources still awaiting their
                // expiry mark (a delete or tag the store refused) would stay unmarked. Then
                // the lock is left to expire, and the next run after the lease finds an
                // interrupted seal and finishes them.
                if !matches!(error, EngineError::Manifest(ManifestError::LeaseLost { .. })) {
                    if self.expiry_unfinished(partition).await {
                        warn!(partition = %partition, lease_expires_at = %lease.expires_at, "sources still await expiry; the lock is left to expire so the next run finishes them");
                    } else if let Err(release_error) = self.manifest.release(&lease, self.clock.now()).await {
                        warn!(partition = %partition, error = %release_error, "could not release the lock after a failure; it expires with its lease");
                    }
                }
                Err(error)
            }
        }
    }

    /// Whether compacted sources of the partition may still await their expiry mark; true
    /// when the manifest cannot say (the safe side: the lock then expires instead of sealing).
    async fn expiry_unfinished(&self, partition: &PartitionKey) -> bool {
        if self.config.expiry == ExpiryMode::None {
            return false;
        }
        let query = ObjectQuery { limit: 1, ..ObjectQuery::awaiting_expiry() };
        if !matches!(self.manifest.objects(partition, &query).await, Ok(awaiting) if awaiting.is_empty()) {
            return true;
        }
        match self.manifest.outputs(partition, Some(OutputState::Committed)).await {
            Ok(outputs) => outputs.iter().any(expiry_unfinished),
            Err(_) => true,
        }
    }

    async fn seal_under_lease(
        &self,
        lease: &mut Lease,
        report: &mut PartitionSealReport,
        options: &SealOptions,
    ) -> Result<(), EngineError> {
        self.recover(lease, report).await?;

        // Ranges, not sources: an output's sources are read back a window at a time while it is
        // written, so memory holds a page of this scan and a window of the output's, however
        // many sources the output has.
        let mut packer = RangePacker::new(&lease.partition.path, lease.generation, self.config.plan_settings());
        // Compacted sources not yet marked for expiry; dropped by a failure, and then found
        // again by the next run's recovery.
        let mut awaiting_expiry: Vec<ExpirySource> = Vec::new();
        // One pass reads every pending object. Another follows only when an output left some
        // pending for their Parquet schema; each output places its first source, so every pass
        // defers fewer, and the loop ends.
        let mut previous_pass_deferred: Option<u64> = None;
        'passes: loop {
            let deferred_at_start = report.objects_deferred;
            let mut start_after: Option<String> = None;
            loop {
                let query =
                    ObjectQuery { start_after: start_after.take(), ..ObjectQuery::in_state(ObjectState::Pending) };
                let page = self.manifest.objects(&lease.partition, &ObjectQuery { limit: PAGE, ..query }).await?;
                let page_length = page.len();
                start_after = page.last().map(|object| object.key.clone());
                for object in page {
                    match packer.push(&object.key, object.size) {
                        Ok(Some(range)) => {
                            if !self.write_and_commit(lease, report, range, options, &mut awaiting_expiry).await? {
                                break 'passes;
                            }
                            self.expire_ready_sources(report, &mut awaiting_expiry, &mut SeenSources::default())
                                .await?;
                        }
                        Ok(None) => {}
                        Err(_refused) => {
                            warn!(key = %object.key, "pending object has a format that cannot be concatenated; left pending");
                            report.objects_refused += 1;
                        }
                    }
                }
                if page_length < PAGE {
                    for range in packer.finish_pass() {
                        if !self.write_and_commit(lease, report, range, options, &mut awaiting_expiry).await? {
                            break 'passes;
                        }
                        self.expire_ready_sources(report, &mut awaiting_expiry, &mut SeenSources::default()).await?;
                    }
                    break;
                }
            }
            let deferred = report.objects_deferred - deferred_at_start;
            // A pass that defers as many as the one before placed none of them (it cannot happen,
            // but the loop must end whatever happens): they stay pending for the next seal.
            if deferred == 0 || previous_pass_deferred.is_some_and(|previous| deferred >= previous) {
                break;
            }
            previous_pass_deferred = Some(deferred);
        }
        // What is left, also when the deadline stopped the run: those outputs are committed.
        if !awaiting_expiry.is_empty() {
            let counts = self.mark_sources_for_expiry(&awaiting_expiry, &mut SeenSources::default()).await?;
            report.expiry.add(&counts);
        }
        Ok(())
    }

    /// Marks the committed sources that are ready for expiry. Delete mode waits for full
    /// batches, across outputs, because a batch costs one request; tag mode has no batch
    /// request and tags right after each commit, so its work never piles up past a deadline.
    async fn expire_ready_sources(
        &self,
        report: &mut PartitionSealReport,
        awaiting_expiry: &mut Vec<ExpirySource>,
        seen: &mut SeenSources,
    ) -> Result<(), EngineError> {
        let ready = match self.config.expiry {
            ExpiryMode::Delete => awaiting_expiry.len() / EXPIRY_BATCH * EXPIRY_BATCH,
            ExpiryMode::Tag | ExpiryMode::None => awaiting_expiry.len(),
        };
        let ready_sources: Vec<ExpirySource> = awaiting_expiry.drain(..ready).collect();
        for batch in ready_sources.chunks(EXPIRY_BATCH) {
            let counts = self.mark_sources_for_expiry(batch, seen).await?;
            report.expiry.add(&counts);
        }
        Ok(())
    }

    /// Finishes what crashed runs left: never trusts their uncommitted outputs, finishes their
    /// commits, and marks their compacted sources for expiry.
    async fn recover(&self, lease: &Lease, report: &mut PartitionSealReport) -> Result<(), EngineError> {
        for output in self.manifest.outputs(&lease.partition, Some(OutputState::Writing)).await? {
            if let Some(upload_id) = &output.upload_id {
                match self.store.abort_multipart(&output.bucket, &output.key, upload_id).await {
                    Ok(()) | Err(StoreError::NoSuchUpload { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            self.store.delete(&output.bucket, &output.key).await?;
            self.manifest.abandon_output(lease, &output.bucket, &output.key).await?;
            warn!(output = %output.key, generation = output.generation, "abandoned an uncommitted output of an earlier run");
            report.outputs_abandoned += 1;
        }
        let committed = self.manifest.outputs(&lease.partition, Some(OutputState::Committed)).await?;
        for output in &committed {
            let finished = self.manifest.mark_compacted(&lease.partition, &output.key).await?;
            if finished > 0 {
                info!(output = %output.key, objects = finished, "finished the commit of an earlier run");
                report.objects_finished += finished;
            }
        }
        if self.config.expiry == ExpiryMode::None {
            return Ok(());
        }
        // Outputs with a cursor: on from where it stopped.
        let mut awaiting: Vec<ExpirySource> = Vec::new();
        for output in committed.iter().filter(|output| expiry_unfinished(output)) {
            let through = output.expiry.as_ref().and_then(|cursor| cursor.through.clone());
            self.expire_output(report, output, through, &mut awaiting, &mut SeenSources::default()).await?;
        }
        if !awaiting.is_empty() {
            let counts = self.mark_sources_for_expiry(&awaiting, &mut SeenSources::default()).await?;
            report.expiry.add(&counts);
        }
        // Sources of outputs committed before cursors existed carry their own marks.
        loop {
            let page = self
                .manifest
                .objects(&lease.partition, &ObjectQuery { limit: PAGE, ..ObjectQuery::awaiting_expiry() })
                .await?;
            if page.is_empty() {
                break;
            }
            let page_length = page.len();
            let sources: Vec<ExpirySource> = page.into_iter().map(ExpirySource::of_record).collect();
            let counts = self.mark_sources_for_expiry(&sources, &mut SeenSources::default()).await?;
            report.expiry.add(&counts);
            if page_length < PAGE {
                break;
            }
        }
        Ok(())
    }

    /// Queues the placements of a committed output after `start_after` for expiry, a page at a
    /// time (with the next page read ahead, so the output's last source is known when it is
    /// queued), and expires what is ready after each page. Returns the bytes of the sources
    /// queued. An output with nothing left to mark gets its cursor finished at once.
    async fn expire_output(
        &self,
        report: &mut PartitionSealReport,
        output: &OutputRecord,
        start_after: Option<(u64, String)>,
        awaiting_expiry: &mut Vec<ExpirySource>,
        seen: &mut SeenSources,
    ) -> Result<u64, EngineError> {
        let (source_bucket, output_bucket, output_key) =
            (output.partition.bucket.as_str(), output.bucket.as_str(), output.key.as_str());
        let fetch = |after: Option<(u64, String)>| async move {
            let cursor = after.as_ref().map(|(offset, key)| (*offset, key.as_str()));
            self.manifest.output_placements(output_bucket, output_key, cursor, PAGE).await
        };
        let mut page = fetch(start_after.clone()).await?;
        if page.is_empty() {
            if self.config.expiry != ExpiryMode::None {
                let (offset, key) = start_after.unwrap_or_default();
                self.manifest.advance_expiry(output_bucket, output_key, (offset, &key), true, self.clock.now()).await?;
            }
            return Ok(0);
        }
        let mut source_bytes = 0;
        loop {
            let next = match page.last() {
                Some(last) if page.len() >= PAGE => fetch(Some((last.placement.offset, last.key.clone()))).await?,
                _ => Vec::new(),
            };
            let last_page = next.is_empty();
            let page_length = page.len();
            for (index, placed) in page.into_iter().enumerate() {
                source_bytes += placed.size;
                awaiting_expiry.push(ExpirySource {
                    bucket: source_bucket.to_owned(),
                    key: placed.key.clone(),
                    etag: placed.etag,
                    cursor: Some(OutputCursor {
                        output_bucket: output_bucket.to_owned(),
                        output_key: output_key.to_owned(),
                        position: (placed.placement.offset, placed.key),
                        last: last_page && index + 1 == page_length,
                    }),
                });
            }
            self.expire_ready_sources(report, awaiting_expiry, seen).await?;
            if last_page {
                return Ok(source_bytes);
            }
            page = next;
        }
    }

    /// Renews the lease when half of it is gone, so a slow output never outlives it.
    async fn renew_if_due(&self, lease: &mut Lease) -> Result<(), EngineError> {
        let now = self.clock.now();
        if renewal_due(lease.expires_at, now, self.config.lease) {
            *lease = self.manifest.renew(lease, now, self.config.lease).await?;
        }
        Ok(())
    }

    /// Writes and commits one output, and adds its committed sources to `awaiting_expiry` (in
    /// delete mode at most a batch is left there; see [`Self::expire_ready_sources`]).
    /// Returns false when the deadline stopped the run.
    async fn write_and_commit(
        &self,
        lease: &mut Lease,
        report: &mut PartitionSealReport,
        range: PlannedRange,
        options: &SealOptions,
        awaiting_expiry: &mut Vec<ExpirySource>,
    ) -> Result<bool, EngineError> {
        let now = self.clock.now();
        if options.deadline.is_some_and(|deadline| now >= deadline) {
            info!(partition = %lease.partition, "deadline reached; stopping at an output boundary");
            report.stopped_at_deadline = true;
            return Ok(false);
        }
        self.renew_if_due(lease).await?;
        let dest_bucket = self.config.dest_bucket.clone();
        let mut record = OutputRecord {
            bucket: dest_bucket.clone(),
            key: range.key.clone(),
            partition: lease.partition.clone(),
            generation: lease.generation,
            part_number: range.part_number,
            state: OutputState::Writing,
            size: None,
            sha256: None,
            object_count: range.sources,
            upload_id: None,
            created_at: now,
            committed_at: None,
            expiry: None,
        };
        // Recorded before a byte is written, so a crash leaves a record to clean up after.
        self.manifest.begin_output(lease, &record).await?;
        if needs_multipart(range.source_bytes, range.sources, &self.config) {
            let upload_id = self.store.create_multipart(&dest_bucket, &range.key).await?;
            record.upload_id = Some(upload_id);
            self.manifest.begin_output(lease, &record).await?;
        }
        let (placed, superseded, mut written) = self.write_windows(lease, report, &range, &record).await?;
        // Counted before anything else: the seal's next pass depends on it.
        report.objects_deferred += written.deferred_sources;
        if !written.written {
            if let Some(upload_id) = &record.upload_id {
                self.store.abort_multipart(&dest_bucket, &range.key, upload_id).await?;
            }
            self.manifest.abandon_output(lease, &dest_bucket, &range.key).await?;
            return Ok(true);
        }
        if superseded > 0 {
            warn!(output = %range.key, objects = superseded, "objects changed while their output was written; they stay pending");
        }
        let placed = placed - superseded;
        self.manifest
            .commit_output(lease, &dest_bucket, &range.key, written.size, &written.sha256, placed, self.clock.now())
            .await?;
        let compacted = self.manifest.mark_compacted(&lease.partition, &range.key).await?;
        if compacted != placed {
            // A newer version may have arrived between placement and commit (it stays pending),
            // and a manifest whose index lags its writes may miss a source placed a moment ago
            // (the next seal's recovery finishes it). Worth a line in the log, never a failure.
            warn!(output = %range.key, placed, compacted, "not every placed source turned compacted");
        }
        // What may expire is what the output holds, from its placements: read back a page at a
        // time, so a large output's sources are never all held here, and with no read of the
        // sources' records (each tag or delete is conditional on the placed ETag instead).
        let source_bytes = self.expire_output(report, &record, None, awaiting_expiry, &mut written.seen).await?;
        report.outputs_committed += 1;
        report.objects_compacted += compacted;
        report.objects_superseded += superseded;
        report.source_bytes += source_bytes;
        report.output_bytes += written.size;
        report.copied_sources += written.copied_sources;
        report.copied_bytes += written.copied_bytes;
        report.unreadable_gzip_sources += written.unreadable_gzip_sources;
        report.objects_not_in_format += written.not_in_format_sources;
        report.records_rewritten += written.records;
        report.invalid_lines += written.invalid_lines;
        info!(
            output = %range.key,
            objects = compacted,
            bytes = written.size,
            copied_sources = written.copied_sources,
            sha256 = %written.sha256,
            "output committed"
        );
        if let Some(progress) = &options.progress {
            progress(&super::seal::OutputProgress {
                partition: lease.partition.clone(),
                output_key: range.key.clone(),
                objects: compacted,
                source_bytes,
            });
        }
        Ok(true)
    }

    /// Step 4 and the placements of step 5: reads the range's sources back from the manifest a
    /// window at a time, writes each window, and records its placements and missing sources
    /// before reading the next. Returns how many were placed, how many of those the manifest
    /// found superseded, and the finished output.
    async fn write_windows(
        &self,
        lease: &mut Lease,
        report: &mut PartitionSealReport,
        range: &PlannedRange,
        record: &OutputRecord,
    ) -> Result<(u64, u64, WrittenOutput), EngineError> {
        // The writer needs the output's key and class; the sources come window by window.
        let planned = PlannedOutput::<ObjectRecord> {
            key: range.key.clone(),
            part_number: range.part_number,
            class: range.class.clone(),
            sources: Vec::new(),
            source_bytes: range.source_bytes,
        };
        let target = OutputTarget {
            bucket: &record.bucket,
            generation: lease.generation,
            upload_id: record.upload_id.as_deref(),
        };
        let mut writer = WindowedWriter::new(&self.store, &self.config, &planned, &target);
        let mut window = RangeWindow::new(range, self.config.formats.clone());
        let mut start_after = window.start_after().map(str::to_owned);
        let (mut placed, mut superseded) = (0, 0);
        while !window.done() {
            let query = ObjectQuery { start_after: start_after.take(), ..ObjectQuery::in_state(ObjectState::Pending) };
            let page = self.manifest.objects(&lease.partition, &ObjectQuery { limit: PAGE, ..query }).await?;
            let short = page.len() < PAGE;
            start_after = page.last().map(|object| object.key.clone());
            let sources = window.take(page, |object| (object.key.as_str(), object.size));
            if short {
                window.end();
            }
            if sources.is_empty() {
                continue;
            }
            self.renew_if_due(lease).await?;
            writer.write(&sources).await?;
            drop(sources);
            for missing in writer.take_missing() {
                if self.config.expiry == ExpiryMode::Tag {
                    // A source found changed may be a newer version that a tag request of an
                    // earlier run reached (README, "Tag mode: the overwrite window"): it must not
                    // keep the expiry tag while it waits for its own compaction. Before the
                    // record, so that a failure here is retried with the source.
                    if remove_tag(self.store.as_ref(), &lease.partition.bucket, &missing.key, &self.config.expiry_tag)
                        .await?
                    {
                        warn!(key = %missing.key, "a changed source carried the expiry tag; removed it");
                    }
                }
                self.manifest.mark_missing(lease, &missing.key, &missing.sequencer, &missing.note).await?;
                report.objects_missing += 1;
            }
            let placements = writer.take_placements();
            placed += placements.len() as u64;
            superseded += self.manifest.record_placements(lease, &range.key, &placements).await?.len() as u64;
        }
        Ok((placed, superseded, writer.finish().await?))
    }

    /// Step 5's second half: tags (merging with the object's own tags) or deletes committed
    /// sources, at most [`EXPIRY_BATCH`] of them, then records the marks: per output, by moving
    /// its cursor past what is done (one write per output and batch), and on a source's own
    /// record only for the exceptions (changed, gone, at the tag limit), for sources of outputs
    /// without a cursor, and for every source when records expire (a record TTL needs a time
    /// on each record).
    async fn mark_sources_for_expiry(
        &self,
        sources: &[ExpirySource],
        seen: &mut SeenSources,
    ) -> Result<ExpiryCounts, EngineError> {
        let (outcomes, first_error) = match self.config.expiry {
            ExpiryMode::None => return Ok(ExpiryCounts::default()),
            ExpiryMode::Tag => self.tag_for_expiry(sources, seen).await,
            ExpiryMode::Delete => self.delete_for_expiry(sources).await,
        };
        let now = self.clock.now();
        let mut counts = ExpiryCounts::default();
        let mut own_marks: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut done: BTreeSet<(&str, &str)> = BTreeSet::new();
        for (source, outcome) in outcomes {
            let exception = match outcome {
                ExpiryOutcome::Tagged => {
                    counts.tagged += 1;
                    false
                }
                ExpiryOutcome::Deleted => {
                    counts.deleted += 1;
                    false
                }
                ExpiryOutcome::AlreadyTagged => {
                    counts.already_tagged += 1;
                    false
                }
                ExpiryOutcome::Gone => {
                    counts.gone += 1;
                    true
                }
                ExpiryOutcome::Changed => {
                    counts.changed += 1;
                    true
                }
                ExpiryOutcome::TagLimit => {
                    counts.tag_limit += 1;
                    true
                }
            };
            if exception || source.cursor.is_none() || self.config.record_ttl.is_some() {
                own_marks.entry(source.bucket.as_str()).or_default().push(source.key.clone());
            }
            done.insert((source.bucket.as_str(), source.key.as_str()));
        }
        // Marks are recorded for what was done even when another source failed, so a rerun
        // only redoes the failures.
        for (bucket, keys) in own_marks {
            for chunk in keys.chunks(PAGE) {
                self.manifest.mark_expiry(bucket, chunk, now).await?;
            }
        }
        for advance in cursor_advances(sources, |source| done.contains(&(source.bucket.as_str(), source.key.as_str())))
        {
            let (offset, key) = advance.through;
            self.manifest
                .advance_expiry(advance.output_bucket, advance.output_key, (offset, key), advance.done, now)
                .await?;
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(counts),
        }
    }

    /// Tag mode: one `add_tag_many` per bucket. On S3 a source this run read with no tags of
    /// its own (`seen`) costs one PutObjectTagging, on the version read; any other source a
    /// HEAD, GetObjectTagging and PutObjectTagging. Returns what was done to each source that
    /// did not fail, and the first failure.
    async fn tag_for_expiry<'a>(
        &self,
        sources: &'a [ExpirySource],
        seen: &mut SeenSources,
    ) -> (Vec<(&'a ExpirySource, ExpiryOutcome)>, Option<EngineError>) {
        let mut outcomes = Vec::with_capacity(sources.len());
        let mut first_error = None;
        for (bucket, bucket_sources) in by_bucket(sources) {
            let requests: Vec<TagRequest> = bucket_sources
                .iter()
                .map(|source| TagRequest {
                    key: source.key.clone(),
                    if_match: source.etag.clone(),
                    seen: seen.take(&source.bucket, &source.key),
                })
                .collect();
            let answers = self.store.add_tag_many(bucket, &requests, &self.config.expiry_tag).await;
            for (source, answer) in bucket_sources.into_iter().zip(answers) {
                let outcome = match answer {
                    Ok(TagOutcome::Tagged) => ExpiryOutcome::Tagged,
                    Ok(TagOutcome::AlreadyTagged) => ExpiryOutcome::AlreadyTagged,
                    Ok(TagOutcome::Gone) => ExpiryOutcome::Gone,
                    Ok(TagOutcome::Changed) => {
                        warn!(key = %source.key, "source changed since it was compacted; not marking it for expiry");
                        ExpiryOutcome::Changed
                    }
                    Ok(TagOutcome::TagLimit) => {
                        warn!(key = %source.key, "source already has 10 tags; left untagged rather than drop one");
                        ExpiryOutcome::TagLimit
                    }
                    Err(error) => {
                        warn!(key = %source.key, error = %error, "could not tag a compacted source; the next seal retries it");
                        first_error.get_or_insert(error.into());
                        continue;
                    }
                };
                outcomes.push((source, outcome));
            }
        }
        (outcomes, first_error)
    }

    /// Delete mode: one `delete_many` per bucket and [`MAX_KEYS_PER_DELETE`] sources, each key
    /// conditional on the ETag the manifest recorded, so S3 refuses to delete a source that was
    /// overwritten since it was compacted (its new bytes are in no output). Returns what was
    /// done to each source that did not fail, and the first failure; a failed batch fails its
    /// sources only, not the batches before it.
    async fn delete_for_expiry<'a>(
        &self,
        sources: &'a [ExpirySource],
    ) -> (Vec<(&'a ExpirySource, ExpiryOutcome)>, Option<EngineError>) {
        let mut outcomes = Vec::with_capacity(sources.len());
        let mut first_error = None;
        for (bucket, bucket_sources) in by_bucket(sources) {
            for batch in bucket_sources.chunks(MAX_KEYS_PER_DELETE) {
                let requests: Vec<DeleteRequest> = batch
                    .iter()
                    .map(|source| DeleteRequest { key: source.key.clone(), if_match: source.etag.clone() })
                    .collect();
                let answers = match self.store.delete_many(bucket, &requests).await {
                    Ok(answers) => answers,
                    Err(error) => {
                        first_error.get_or_insert(error.into());
                        continue;
                    }
                };
                for (source, answer) in batch.iter().zip(answers) {
                    match answer {
                        Ok(()) => outcomes.push((*source, ExpiryOutcome::Deleted)),
                        Err(StoreError::PreconditionFailed { .. }) => {
                            warn!(key = %source.key, "source changed since it was compacted; not deleting it");
                            outcomes.push((*source, ExpiryOutcome::Changed));
                        }
                        // Gone already (deleted by a run that crashed before recording it): what
                        // delete mode wanted, so `deleted`, as the port's `Ok` for a gone key is.
                        Err(StoreError::NotFound { .. }) => outcomes.push((*source, ExpiryOutcome::Deleted)),
                        Err(error) => {
                            warn!(key = %source.key, error = %error, "could not delete a compacted source; the next seal retries it");
                            first_error.get_or_insert(error.into());
                        }
                    }
                }
            }
        }
        (outcomes, first_error)
    }
}

/// Sources grouped by bucket, each group in the order given: stores take one bucket a batch.
fn by_bucket(sources: &[ExpirySource]) -> BTreeMap<&str, Vec<&ExpirySource>> {
    let mut grouped: BTreeMap<&str, Vec<&ExpirySource>> = BTreeMap::new();
    for source in sources {
        grouped.entry(source.bucket.as_str()).or_default().push(source);
    }
    grouped
}

enum ExpiryOutcome {
    Tagged,
    Deleted,
    AlreadyTagged,
    Gone,
    Changed,
    TagLimit,
}

/// A committed source waiting to be tagged or deleted.
#[derive(Debug, Clone)]
struct ExpirySource {
    bucket: String,
    key: String,
    /// The placed version's: the tag or delete is conditional on it.
    etag: Option<String>,
    /// Where it sits in an output whose cursor records its mark; `None` for a source that
    /// carries its own mark (its output was committed before cursors existed).
    cursor: Option<OutputCursor>,
}

#[derive(Debug, Clone)]
struct OutputCursor {
    output_bucket: String,
    output_key: String,
    /// (offset, key) in the output.
    position: (u64, String),
    /// The output's last source: marking it finishes the output.
    last: bool,
}

impl ExpirySource {
    fn of_record(record: ObjectRecord) -> Self {
        ExpirySource { bucket: record.bucket, key: record.key, etag: record.etag, cursor: None }
    }
}

/// One move of an output's expiry cursor.
#[derive(Debug, PartialEq, Eq)]
struct CursorAdvance<'a> {
    output_bucket: &'a str,
    output_key: &'a str,
    through: (u64, &'a str),
    done: bool,
}

/// How far each output's cursor may move after a batch: through its last source before the
/// first one that was not done (a failure stops the cursor there, so a rerun redoes it and
/// everything after it, which is idempotent), and finished when that is the output's last.
/// Sources come in output order, each output's in (offset, key) order.
fn cursor_advances<'a>(sources: &'a [ExpirySource], is_done: impl Fn(&ExpirySource) -> bool) -> Vec<CursorAdvance<'a>> {
    let mut advances: Vec<CursorAdvance<'a>> = Vec::new();
    let mut blocked: BTreeSet<(&str, &str)> = BTreeSet::new();
    for source in sources {
        let Some(cursor) = &source.cursor else { continue };
        let output = (cursor.output_bucket.as_str(), cursor.output_key.as_str());
        if blocked.contains(&output) {
            continue;
        }
        if !is_done(source) {
            blocked.insert(output);
            continue;
        }
        let advance = CursorAdvance {
            output_bucket: output.0,
            output_key: output.1,
            through: (cursor.position.0, cursor.position.1.as_str()),
            done: cursor.last,
        };
        match advances.iter_mut().find(|known| (known.output_bucket, known.output_key) == output) {
            Some(known) => *known = advance,
            None => advances.push(advance),
        }
    }
    advances
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(output: &str, offset: u64, key: &str, last: bool) -> ExpirySource {
        ExpirySource {
            bucket: "src".to_owned(),
            key: key.to_owned(),
            etag: None,
            cursor: Some(OutputCursor {
                output_bucket: "out".to_owned(),
                output_key: output.to_owned(),
                position: (offset, key.to_owned()),
                last,
            }),
        }
    }

    #[test]
    fn a_cursor_moves_through_the_last_source_before_the_first_failure() {
        let sources = vec![
            source("o1", 0, "a", false),
            source("o1", 5, "b", false),
            source("o1", 9, "c", false),
            source("o1", 12, "d", true),
            source("o2", 0, "e", false),
            source("o2", 3, "f", true),
        ];
        let advances = cursor_advances(&sources, |source| source.key != "c");
        assert_eq!(
            advances,
            vec![
                CursorAdvance { output_bucket: "out", output_key: "o1", through: (5, "b"), done: false },
                CursorAdvance { output_bucket: "out", output_key: "o2", through: (3, "f"), done: true },
            ],
            "o1 stops before c although d went through; o2 is finished"
        );
        assert!(cursor_advances(&sources, |source| source.key != "a").iter().all(|advance| advance.output_key != "o1"));
        let own = ExpirySource { cursor: None, ..source("o1", 0, "z", true) };
        assert!(cursor_advances(&[own], |_| true).is_empty(), "a source with its own mark moves no cursor");
    }
}
