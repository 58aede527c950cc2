//! Step 5's second half: tagging or deleting the sources of committed outputs, each
//! conditional on the ETag placed, and moving each output's expiry cursor past what is done.

use std::collections::{BTreeMap, BTreeSet};

use tracing::warn;

use super::{ExpiryCounts, PartitionSealReport, EXPIRY_BATCH, PAGE};
use crate::config::ExpiryMode;
use crate::domain::records::{ObjectRecord, OutputRecord};
use crate::engine::seen::SeenSources;
use crate::engine::{Compactor, EngineError};
use crate::ports::{DeleteRequest, SourcePlacement, StoreError, TagOutcome, TagRequest, MAX_KEYS_PER_DELETE};

/// What [`Compactor::expire_output`] came to.
#[derive(Debug, Default)]
pub(super) struct ExpiredOutput {
    /// The bytes of the sources queued for expiry.
    pub source_bytes: u64,
    /// The sources its page flips turned compacted.
    pub flipped: u64,
}

impl Compactor {
    /// Marks the committed sources that are ready for expiry. Delete mode waits for full
    /// batches, across outputs, because a batch costs one request; tag mode has no batch
    /// request and tags right after each commit, so its work never piles up past a deadline.
    pub(super) async fn expire_ready_sources(
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

    /// Queues the placements of a committed output after `start_after` for expiry, a page at a
    /// time (with the next page read ahead, so the output's last source is known when it is
    /// queued), and expires what is ready after each page. Each page's sources are turned
    /// compacted ([`Manifest::mark_compacted_between`](crate::ports::Manifest::mark_compacted_between))
    /// before they are queued: the page after is flipped while this one's are tagged or
    /// deleted, so an exception's own expiry mark, which needs a compacted record, always
    /// finds one. An output with nothing left to mark gets its cursor finished at once.
    pub(super) async fn expire_output(
        &self,
        report: &mut PartitionSealReport,
        output: &OutputRecord,
        start_after: Option<(u64, String)>,
        awaiting_expiry: &mut Vec<ExpirySource>,
        seen: &mut SeenSources,
    ) -> Result<ExpiredOutput, EngineError> {
        let (source_bucket, output_bucket, output_key) =
            (output.partition.bucket.as_str(), output.bucket.as_str(), output.key.as_str());
        let fetch = |after: Option<(u64, String)>| async move {
            let cursor = after.as_ref().map(|(offset, key)| (*offset, key.as_str()));
            self.manifest.output_placements(output_bucket, output_key, cursor, PAGE).await
        };
        let mut page = fetch(start_after.clone()).await?;
        let mut expired = ExpiredOutput::default();
        if page.is_empty() {
            if self.config.expiry != ExpiryMode::None {
                let (offset, key) = start_after.unwrap_or_default();
                self.manifest.advance_expiry(output_bucket, output_key, (offset, &key), true, self.clock.now()).await?;
            }
            return Ok(expired);
        }
        // The page after `page`, when `page` is full: empty means `page` holds the output's last.
        let fetch_after = |page: &[SourcePlacement]| {
            let after =
                page.last().filter(|_| page.len() >= PAGE).map(|last| (last.placement.offset, last.key.clone()));
            async move {
                match after {
                    Some(after) => fetch(Some(after)).await,
                    None => Ok(Vec::new()),
                }
            }
        };
        expired.flipped += self.flip_page(output, &page).await?;
        let mut next = fetch_after(&page).await?;
        loop {
            let last_page = next.is_empty();
            let page_length = page.len();
            for (index, placed) in page.into_iter().enumerate() {
                expired.source_bytes += placed.size;
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
            // Issue 16: the manifest flips the next page and reads the one after it while this
            // one's sources are tagged or deleted (the store's work, on other threads), not
            // after. The cursor moves only past what was done, as before.
            let (done, following) = futures::join!(self.expire_ready_sources(report, awaiting_expiry, seen), async {
                let flipped = self.flip_page(output, &next).await?;
                Ok::<_, EngineError>((flipped, fetch_after(&next).await?))
            });
            done?;
            let (flipped, following) = following?;
            expired.flipped += flipped;
            if last_page {
                return Ok(expired);
            }
            page = std::mem::replace(&mut next, following);
        }
    }

    /// Turns a page of a committed output's sources compacted: those between its least and
    /// greatest key, which an output's placements in offset order need not start and end with.
    async fn flip_page(&self, output: &OutputRecord, page: &[SourcePlacement]) -> Result<u64, EngineError> {
        let least = page.iter().map(|placed| placed.key.as_str()).min();
        let greatest = page.iter().map(|placed| placed.key.as_str()).max();
        let (Some(least), Some(greatest)) = (least, greatest) else { return Ok(0) };
        Ok(self.manifest.mark_compacted_between(&output.partition, &output.key, least, greatest).await?)
    }

    /// Step 5's second half: tags (merging with the object's own tags) or deletes committed
    /// sources, at most [`EXPIRY_BATCH`] of them, then records the marks: per output, by moving
    /// its cursor past what is done (one write per output and batch), and on a source's own
    /// record only for the exceptions (changed, gone, at the tag limit), for sources of outputs
    /// without a cursor, and for every source when records expire (a record TTL needs a time
    /// on each record).
    pub(super) async fn mark_sources_for_expiry(
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
pub(super) struct ExpirySource {
    pub(super) bucket: String,
    pub(super) key: String,
    /// The placed version's: the tag or delete is conditional on it.
    pub(super) etag: Option<String>,
    /// Where it sits in an output whose cursor records its mark; `None` for a source that
    /// carries its own mark (its output was committed before cursors existed).
    pub(super) cursor: Option<OutputCursor>,
}

#[derive(Debug, Clone)]
pub(super) struct OutputCursor {
    pub(super) output_bucket: String,
    pub(super) output_key: String,
    /// (offset, key) in the output.
    pub(super) position: (u64, String),
    /// The output's last source: marking it finishes the output.
    pub(super) last: bool,
}

impl ExpirySource {
    pub(super) fn of_record(record: ObjectRecord) -> Self {
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
