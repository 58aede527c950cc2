//! Ingest: one object event in, one manifest record out. No listing.
//!
//! Skips, each logged and counted, never an error: folder markers, objects over the
//! small-object threshold, keys outside the layout, formats that concatenation would break,
//! keys outside the source bucket or prefix, and anything under the destination prefix
//! (otherwise writing outputs into the source bucket would re-trigger ingest forever).

use std::collections::BTreeMap;
use std::fmt;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::{Compactor, EngineError};
use crate::domain::format::classify;
use crate::domain::sequencer::scan_sequencer;
use crate::event::{Decoded, ObjectEvent, ObjectEventKind};
use crate::ports::{IngestOutcome, NewObject, RemovedObject};

/// Pages of a backfill listing (1,000 keys each) between two gives of freed memory back to
/// the system: about the local directory's listing window.
const SCAN_PAGES_PER_TRIM: u64 = 64;

/// Why an event's object was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    FolderMarker,
    TooLarge,
    OutOfLayout,
    UnsupportedFormat,
    UnderDestination,
    OtherBucket,
    OutsideSourcePrefix,
    /// A backfill's listing met a file whose name is not UTF-8 (a local directory): no key
    /// can name it, so it cannot be recorded or compacted until it is renamed.
    NameNotUtf8,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::FolderMarker => "folder_marker",
            SkipReason::TooLarge => "too_large",
            SkipReason::OutOfLayout => "out_of_layout",
            SkipReason::UnsupportedFormat => "unsupported_format",
            SkipReason::UnderDestination => "under_destination",
            SkipReason::OtherBucket => "other_bucket",
            SkipReason::OutsideSourcePrefix => "outside_source_prefix",
            SkipReason::NameNotUtf8 => "name_not_utf8",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Manifest(IngestOutcome),
    Skipped(SkipReason),
}

/// Per-run counts, logged as structured fields so they become metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    pub events: u64,
    pub recorded: u64,
    pub updated: u64,
    pub stale: u64,
    pub removed: u64,
    pub removal_ignored: u64,
    /// Events appended to arrival records unread (DynamoDB): recorded, updated, stale, a
    /// removal or an ignored one, as the seal's read of the partition will decide.
    pub appended: u64,
    pub skipped: BTreeMap<SkipReason, u64>,
    /// Records that were not object events (`s3:TestEvent`, tagging events...).
    pub ignored_records: u64,
    pub bytes_recorded: u64,
}

impl IngestReport {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    fn count(&mut self, outcome: EventOutcome, bytes: u64) {
        self.events += 1;
        match outcome {
            EventOutcome::Manifest(IngestOutcome::Recorded) => {
                self.recorded += 1;
                self.bytes_recorded += bytes;
            }
            EventOutcome::Manifest(IngestOutcome::Updated) => {
                self.updated += 1;
                self.bytes_recorded += bytes;
            }
            EventOutcome::Manifest(IngestOutcome::Stale) => self.stale += 1,
            EventOutcome::Manifest(IngestOutcome::Removed) => self.removed += 1,
            EventOutcome::Manifest(IngestOutcome::RemovalIgnored) => self.removal_ignored += 1,
            EventOutcome::Manifest(IngestOutcome::Appended) => {
                self.appended += 1;
                self.bytes_recorded += bytes;
            }
            EventOutcome::Skipped(reason) => *self.skipped.entry(reason).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: &IngestReport) {
        self.events += other.events;
        self.recorded += other.recorded;
        self.updated += other.updated;
        self.stale += other.stale;
        self.removed += other.removed;
        self.removal_ignored += other.removal_ignored;
        self.appended += other.appended;
        self.ignored_records += other.ignored_records;
        self.bytes_recorded += other.bytes_recorded;
        for (reason, count) in &other.skipped {
            *self.skipped.entry(*reason).or_default() += count;
        }
    }

    /// Logs the counts as one structured line.
    pub fn log(&self) {
        info!(
            events = self.events,
            recorded = self.recorded,
            updated = self.updated,
            stale = self.stale,
            removed = self.removed,
            removal_ignored = self.removal_ignored,
            appended = self.appended,
            skipped = self.skipped_total(),
            ignored_records = self.ignored_records,
            bytes_recorded = self.bytes_recorded,
            "ingest finished"
        );
    }
}

/// An event ready for the manifest.
enum Prepared {
    Created(NewObject),
    Removed(RemovedObject),
}

/// How many manifest writes an ingest batch keeps in flight.
const INGEST_CONCURRENCY: usize = 16;
/// Creations recorded per `record_objects` call.
const INGEST_BATCH: usize = 500;

impl Compactor {
    /// Decides what to do with an event's object without touching anything: the pure half of
    /// ingest.
    pub fn classify_event(&self, event: &ObjectEvent) -> Result<(), SkipReason> {
        let config = &self.config;
        if event.bucket != config.source_bucket {
            // Outputs written to another bucket land here too, when its events share the queue.
            return Err(if config.is_under_destination(&event.bucket, &event.key) {
                SkipReason::UnderDestination
            } else {
                SkipReason::OtherBucket
            });
        }
        if config.is_under_destination(&event.bucket, &event.key) {
            return Err(SkipReason::UnderDestination);
        }
        if !event.key.starts_with(&config.source_prefix) {
            return Err(SkipReason::OutsideSourcePrefix);
        }
        if event.key.ends_with('/') {
            return Err(SkipReason::FolderMarker);
        }
        if let ObjectEventKind::Created { size, .. } = event.kind {
            if size > config.small_object_max_bytes {
                return Err(SkipReason::TooLarge);
            }
            if classify(&event.key, &config.formats).is_err() {
                return Err(SkipReason::UnsupportedFormat);
            }
        }
        if config.layout.partition_of(&event.key).is_err() {
            return Err(SkipReason::OutOfLayout);
        }
        Ok(())
    }

    /// What recording `event` takes, or why it is skipped (logged here).
    fn prepare(&self, event: &ObjectEvent) -> Result<Prepared, SkipReason> {
        if let Err(reason) = self.classify_event(event) {
            // Our own outputs come back as events when they share the source bucket: expected,
            // so quieter than the skips that hint at a misconfiguration.
            if reason == SkipReason::UnderDestination {
                debug!(bucket = %event.bucket, key = %event.key, reason = %reason, "skipped object");
            } else {
                warn!(bucket = %event.bucket, key = %event.key, reason = %reason, event = %event.event_name, "skipped object");
            }
            return Err(reason);
        }
        let partition = self.config.layout.partition_of(&event.key).expect("classified above");
        Ok(match &event.kind {
            ObjectEventKind::Created { size, etag } => Prepared::Created(NewObject {
                bucket: event.bucket.clone(),
                key: event.key.clone(),
                closes_at: partition.period.closes_at(self.config.grace),
                partition,
                size: *size,
                etag: etag.clone(),
                sequencer: event.sequencer.clone(),
                event_time: event.event_time,
            }),
            ObjectEventKind::Removed => Prepared::Removed(RemovedObject {
                bucket: event.bucket.clone(),
                key: event.key.clone(),
                sequencer: event.sequencer.clone(),
                event_time: event.event_time,
            }),
        })
    }

    /// Records one event in the manifest (or skips it, with a log line).
    pub async fn ingest_event(&self, event: &ObjectEvent) -> Result<EventOutcome, EngineError> {
        let outcome = match self.prepare(event) {
            Err(reason) => return Ok(EventOutcome::Skipped(reason)),
            Ok(Prepared::Created(object)) => self.manifest.record_object(&object).await?,
            Ok(Prepared::Removed(removal)) => self.manifest.record_removal(&removal).await?,
        };
        debug!(bucket = %event.bucket, key = %event.key, outcome = ?outcome, "ingested event");
        Ok(EventOutcome::Manifest(outcome))
    }

    /// Records a batch of events: creations through [`Manifest::record_objects`] in chunks
    /// (one SQLite transaction, or DynamoDB requests side by side), then removals, so a key
    /// created and removed in one batch ends removed. Stops at the first manifest error (every
    /// event is idempotent, so the caller retries the whole batch).
    ///
    /// [`Manifest::record_objects`]: crate::ports::Manifest::record_objects
    pub async fn ingest(&self, events: &[ObjectEvent]) -> Result<IngestReport, EngineError> {
        let mut report = IngestReport::default();
        let mut created: Vec<NewObject> = Vec::new();
        let mut removed: Vec<RemovedObject> = Vec::new();
        for event in events {
            match self.prepare(event) {
                Err(reason) => report.count(EventOutcome::Skipped(reason), 0),
                Ok(Prepared::Created(object)) => created.push(object),
                Ok(Prepared::Removed(removal)) => removed.push(removal),
            }
        }
        for chunk in created.chunks(INGEST_BATCH) {
            let outcomes = self.manifest.record_objects(chunk).await?;
            for (object, outcome) in chunk.iter().zip(outcomes) {
                debug!(bucket = %object.bucket, key = %object.key, outcome = ?outcome, "ingested event");
                report.count(EventOutcome::Manifest(outcome), object.size);
            }
        }
        let outcomes: Vec<IngestOutcome> = futures::stream::iter(&removed)
            .map(|removal| self.manifest.record_removal(removal))
            .buffered(INGEST_CONCURRENCY)
            .try_collect()
            .await?;
        for (removal, outcome) in removed.iter().zip(outcomes) {
            debug!(bucket = %removal.bucket, key = %removal.key, outcome = ?outcome, "ingested event");
            report.count(EventOutcome::Manifest(outcome), 0);
        }
        Ok(report)
    }

    /// Records the events of a decoded envelope, counting its non-object records.
    pub async fn ingest_decoded(&self, decoded: &Decoded) -> Result<IngestReport, EngineError> {
        self.ingest_all_decoded(std::slice::from_ref(decoded)).await
    }

    /// Records the events of several envelopes (an SQS batch, a file of notifications) as one
    /// batch, counting their non-object records.
    pub async fn ingest_all_decoded(&self, decoded: &[Decoded]) -> Result<IngestReport, EngineError> {
        let events: Vec<ObjectEvent> = decoded.iter().flat_map(|decoded| decoded.events.iter().cloned()).collect();
        let mut report = self.ingest(&events).await?;
        report.ignored_records += decoded.iter().map(|decoded| decoded.ignored.len() as u64).sum::<u64>();
        Ok(report)
    }

    /// Backfill: lists the source bucket under `prefix` and records every object found as if
    /// its event had arrived. This is the only place the compactor lists.
    ///
    /// A listed version replaces a record only when it is one the manifest has not seen (its
    /// ETag differs) and not older than the record ([`sequencer::order`]): a rescan picks up an
    /// object overwritten since the last scan (pending again, compacted by the next seal), and
    /// never lets an older listing, or a listing in the same second as a newer event, win.
    ///
    /// [`sequencer::order`]: crate::domain::sequencer::order
    pub async fn scan(
        &self,
        prefix: &str,
        mut on_page: impl FnMut(&IngestReport),
    ) -> Result<IngestReport, EngineError> {
        let bucket = self.config.source_bucket.clone();
        let mut start_after: Option<String> = None;
        let mut report = IngestReport::default();
        let mut pages: u64 = 0;
        loop {
            // Issue 16: what the arenas kept would otherwise grow with the run's length, so
            // with the number of objects listed (see `allocator`).
            pages += 1;
            if pages % SCAN_PAGES_PER_TRIM == 0 {
                crate::allocator::give_back_free_memory();
            }
            let page = self.store.list(&bucket, prefix, start_after.as_deref(), 1000).await?;
            let now = self.clock.now();
            let events: Vec<ObjectEvent> = page
                .objects
                .iter()
                .map(|meta| {
                    let last_modified = meta.last_modified.unwrap_or(now);
                    ObjectEvent {
                        kind: ObjectEventKind::Created { size: meta.size, etag: meta.etag.clone() },
                        bucket: bucket.clone(),
                        key: meta.key.clone(),
                        sequencer: scan_sequencer(last_modified, meta.etag.as_deref()),
                        event_time: last_modified,
                        event_name: "Scan".to_string(),
                    }
                })
                .collect();
            report.merge(&self.ingest(&events).await?);
            if page.unlistable > 0 {
                // Listed nowhere, so recorded nowhere: counted, never silently dropped.
                report.events += page.unlistable;
                *report.skipped.entry(SkipReason::NameNotUtf8).or_default() += page.unlistable;
            }
            on_page(&report);
            match page.next_start_after {
                Some(next) => start_after = Some(next),
                None => break,
            }
        }
        Ok(report)
    }
}
