//! The seal protocol (DESIGN.md steps 1–6), and how each step recovers from a crash before it.
//!
//! | step | what | if the run dies here, the next run… |
//! |---|---|---|
//! | 1 pick | `closed_partition_keys`, or the partitions asked for | picks them again |
//! | 2 lock | `acquire`: generation + 1, lease | waits for the lease to expire, then takes over |
//! | recover | abandon `writing` outputs (abort the upload, delete the object: never trusted); finish commits whose objects are still pending; expire the sources of committed outputs from where their expiry cursor stopped (and older outputs' unmarked sources one by one) | does the same, idempotently |
//! | 3 plan | page pending objects in key order through the [`Packer`](crate::domain::plan::Packer) | plans again under a new generation: new output keys |
//! | 4 write | `begin_output` (writing), stream sources into the store (large ones copied server-side) a window of 1,000 at a time, each window's placements recorded (step 5's first part) while the next is written | finds the output `writing` and abandons it |
//! | 5 commit | record placements, `commit_output` (the commit point); then, a page of placements at a time, turn the page's sources compacted (`mark_compacted_between`, beside the tagging of the page before) and tag the output's placed sources (delete mode: delete them per 1,000, across outputs), each conditional on the placed ETag, and `advance_expiry` the output's cursor past them (`mark_expiry` only for the exceptions); `mark_compacted` finishes what the pages left | before the commit: abandons; after it: finishes `mark_compacted`, and the expiry from the cursor on |
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

use futures::StreamExt;
use tracing::{info, info_span, warn, Instrument};

use super::seen::SeenSources;
use super::writer::{needs_multipart, MissingSource, OutputTarget, WindowedWriter, WrittenOutput};
use super::{Compactor, EngineError};
use crate::config::ExpiryMode;
use crate::domain::partition::PartitionKey;
use crate::domain::plan::PlannedOutput;
use crate::domain::ranges::{PlannedRange, RangePacker, RangeWindow};
use crate::domain::records::{expiry_unfinished, renewal_due};
use crate::domain::records::{ObjectRecord, ObjectState, OutputRecord, OutputState};
use crate::ports::manifest::SourcePlacement;
use crate::ports::object_store::remove_tag;
use crate::ports::{Lease, ManifestError, ObjectQuery, StoreError, MAX_KEYS_PER_DELETE};

mod expiry;
mod report;

use expiry::ExpirySource;
pub use report::{ExpiryCounts, OutputProgress, PartitionSealReport, ProgressFn, SealOptions, SealReport};

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
                // Keys and sizes only: the planned sources' records are read once, a window at a
                // time, by `write_windows` (issue 16: reading them here as well was 7% of the
                // instructions of the seal of 100,000 tiny objects).
                let page = self.manifest.pending_sizes(&lease.partition, start_after.as_deref(), PAGE).await?;
                let page_length = page.len();
                start_after = page.last().map(|(key, _)| key.clone());
                for (key, size) in page {
                    match packer.push(&key, size) {
                        Ok(Some(range)) => {
                            if !self.write_and_commit(lease, report, range, options, &mut awaiting_expiry).await? {
                                break 'passes;
                            }
                            self.expire_ready_sources(report, &mut awaiting_expiry, &mut SeenSources::default())
                                .await?;
                        }
                        Ok(None) => {}
                        Err(_refused) => {
                            warn!(key = %key, "pending object has a format that cannot be concatenated; left pending");
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
            // Its sources were flipped just above: its page flips find none left.
            let expired =
                self.expire_output(report, output, through, &mut awaiting, &mut SeenSources::default()).await?;
            report.objects_finished += expired.flipped;
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
        // What may expire is what the output holds, from its placements: read back a page at a
        // time, so a large output's sources are never all held here, and with no read of the
        // sources' records (each tag or delete is conditional on the placed ETag instead). Each
        // page's sources turn compacted before their expiry, beside the one before's.
        let expired = self.expire_output(report, &record, None, awaiting_expiry, &mut written.seen).await?;
        // Then whatever the page flips left: none on SQLite; on DynamoDB, whose commit made the
        // sources compacted, how many it did.
        let compacted = expired.flipped + self.manifest.mark_compacted(&lease.partition, &range.key).await?;
        if compacted != placed {
            // A newer version may have arrived between placement and commit (it stays pending),
            // and a manifest whose index lags its writes may miss a source placed a moment ago
            // (the next seal's recovery finishes it). Worth a line in the log, never a failure.
            warn!(output = %range.key, placed, compacted, "not every placed source turned compacted");
        }
        let source_bytes = expired.source_bytes;
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
    /// window at a time and writes each window. While window n is written, the manifest
    /// records window n - 1's missing sources and placements and then reads window n + 1
    /// (issue 16: the manifest's work and the store's run side by side, on two threads, instead
    /// of one after the other). So at most three windows of an output are held at once.
    /// Returns how many were placed, how many of those the manifest found superseded, and the
    /// finished output.
    ///
    /// Why recording a window late is safe: nothing is committed before every window's
    /// placements are recorded, so a crash in between abandons the output as before; and a
    /// placement is checked against the manifest's state when it is recorded, whatever was
    /// read since (the contract of `Manifest::record_placements`).
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
        let partition = lease.partition.clone();
        let fetch = |start_after: Option<String>| {
            let query = ObjectQuery { start_after, limit: PAGE, ..ObjectQuery::in_state(ObjectState::Pending) };
            let partition = &partition;
            async move { self.manifest.objects(partition, &query).await }
        };
        let mut recorded = RecordedWindows::default();
        // The window written last, whose missing sources and placements are not recorded yet.
        let mut unrecorded = WrittenWindow::default();
        let mut page = Some(fetch(window.start_after().map(str::to_owned)).await?);
        while let Some(current) = page.take() {
            let short = current.len() < PAGE;
            let start_after = current.last().map(|object| object.key.clone());
            let sources = window.take(current, |object| (object.key.as_str(), object.size));
            if short {
                window.end();
            }
            let more = !window.done();
            if sources.is_empty() {
                if more {
                    page = Some(fetch(start_after).await?);
                }
                continue;
            }
            self.renew_if_due(lease).await?;
            let previous = std::mem::take(&mut unrecorded);
            let lease = &*lease;
            let (written, recorded_and_next) = futures::join!(writer.write(&sources), async {
                let recording = self.record_window(lease, &range.key, previous).await?;
                let next = if more { Some(fetch(start_after).await?) } else { None };
                Ok::<_, EngineError>((recording, next))
            });
            // Both finish before either error returns: a failed write never leaves the
            // manifest's work running behind it, nor the other way round.
            written?;
            let (recording, next) = recorded_and_next?;
            recorded.add(recording);
            page = next;
            unrecorded = WrittenWindow { missing: writer.take_missing(), placements: writer.take_placements() };
        }
        recorded.add(self.record_window(lease, &range.key, unrecorded).await?);
        report.objects_missing += recorded.missing;
        Ok((recorded.placed, recorded.superseded, writer.finish().await?))
    }

    /// Records one written window: its missing sources, then its placements.
    async fn record_window(
        &self,
        lease: &Lease,
        output_key: &str,
        window: WrittenWindow,
    ) -> Result<RecordedWindows, EngineError> {
        let mut recorded = RecordedWindows::default();
        for missing in window.missing {
            if self.config.expiry == ExpiryMode::Tag {
                // A source found changed may be a newer version that a tag request of an earlier
                // run reached (README, "Tag mode: the overwrite window"): it must not keep the
                // expiry tag while it waits for its own compaction. Before the record, so that a
                // failure here is retried with the source.
                if remove_tag(self.store.as_ref(), &lease.partition.bucket, &missing.key, &self.config.expiry_tag)
                    .await?
                {
                    warn!(key = %missing.key, "a changed source carried the expiry tag; removed it");
                }
            }
            self.manifest.mark_missing(lease, &missing.key, &missing.sequencer, &missing.note).await?;
            recorded.missing += 1;
        }
        if !window.placements.is_empty() {
            recorded.placed = window.placements.len() as u64;
            recorded.superseded =
                self.manifest.record_placements(lease, output_key, &window.placements).await?.len() as u64;
        }
        Ok(recorded)
    }
}

/// A window of an output's sources once written: what the manifest is still to record.
#[derive(Default)]
struct WrittenWindow {
    missing: Vec<MissingSource>,
    placements: Vec<SourcePlacement>,
}

/// What recording windows of an output came to.
#[derive(Default)]
struct RecordedWindows {
    placed: u64,
    superseded: u64,
    missing: u64,
}

impl RecordedWindows {
    fn add(&mut self, other: RecordedWindows) {
        self.placed += other.placed;
        self.superseded += other.superseded;
        self.missing += other.missing;
    }
}
