//! Step 4 of the seal: write one planned output's sources into the store.
//!
//! Sources are read with bounded concurrency and a byte budget, in plan order, and appended to
//! a part buffer; every full part is uploaded while the next is filled, a bounded number at a
//! time. sha256 of the output and of every source is computed as the bytes pass. An output
//! smaller than one part is written with a single PUT: one request instead of three.
//!
//! # Server-side copies
//! In a multipart output, a source of at least `copy_min_bytes` (5 MiB by default: S3's
//! smallest part) whose bytes reach the output unchanged becomes a part of its own by
//! `UploadPartCopy`, so its bytes cross the network once (down, to be hashed) instead of twice
//! (down and up). The manifest's exact sha256 of every source and output stays: the writer
//! still GETs the source, pinned to the ETag ingest recorded, and feeds its chunks to the
//! hashers as they arrive, then drops them; the copy, pinned to the same ETag, runs meanwhile,
//! so both see the same version (see [`OutputWriter::copy_source`] for why in that order).
//!
//! A copy needs a legal part boundary: the part buffer is flushed as a part of its own first,
//! which S3 allows only when it is empty or at least 5 MiB. Otherwise the source streams
//! through the buffer like any other. A separator a copied source needs after it (a `\n`, or
//! for gzip a `\n` member) starts the next buffered part (the hash-read saw its last byte, and
//! inflated a gzip source's text to its end). So parts differ in size, every part
//! but the last is still at least 5 MiB, part numbers follow plan order, and the output's bytes,
//! offsets, lengths and sha256s are exactly those streaming would give:
//!
//! ```text
//!  plan order:  small  small ... (≥ 5 MiB buffered)   LARGE (no final \n)   small   LARGE ...
//!  parts:       [ part n: the buffer, flushed      ] [ part n+1: copied ]  [ \n small ...
//! ```
//!
//! # Memory
//! Sources read ahead of the writer hold permits of a `read_ahead_bytes` budget until their
//! bytes are in the part buffer (one source larger than the whole budget takes all of it).
//! Copy candidates are never read ahead and take no permits: the writer reads them at their
//! turn, chunk by chunk, into the hashers (copied) or into the part buffer (streamed), so none
//! is ever whole in memory. Memory holds at most `read_ahead_bytes` of sources (or one source,
//! if larger) plus `upload_concurrency + 1` parts, whatever the partition's size. Each part is
//! one allocation of exactly `part_bytes` (see [`OutputWriter::append`] for why that matters).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

mod formats;
mod parts;
mod reads;

pub(crate) use parts::PartUploads;
use reads::{
    batches_in_flight, check_body_length, hash_body, open_source, read_batches, read_sources, unreadable_from,
    AbortOnDrop, SourceRead, SourceUnreadable,
};

use super::seen::SeenSources;
use super::EngineError;
use crate::config::{Config, ExpiryMode, MAX_PART_BYTES, MIN_PART_BYTES};
use crate::domain::format::{Compression, FormatClass, FormatMode, TextTail, UnreadableGzip, MAX_SEPARATOR_BYTES};
use crate::domain::plan::PlannedOutput;
use crate::domain::records::{ObjectRecord, Placement};
use crate::ports::{GetResult, ObjectStore, PutOptions, SeenAtRead, SourcePlacement, StoreError};

/// A source the writer could not read as recorded: it is gone, or its bytes changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MissingSource {
    pub key: String,
    pub sequencer: String,
    pub note: String,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub(crate) struct WrittenOutput {
    pub size: u64,
    pub sha256: String,
    pub placements: Vec<SourcePlacement>,
    pub missing: Vec<MissingSource>,
    /// False when every source was missing: nothing was written.
    pub written: bool,
    /// Sources made into parts server-side (`UploadPartCopy`): read to be hashed, not uploaded.
    pub copied_sources: u64,
    pub copied_bytes: u64,
    /// Gzip sources that could not be inflated to their end (truncated, not gzip): kept as
    /// they are, without a separator, since their text's last byte is unknown.
    pub unreadable_gzip_sources: u64,
    /// Sources a rewriting format could not read as its input (a truncated CloudTrail file):
    /// recorded missing with the reason, left where they are (also in `missing`).
    pub not_in_format_sources: u64,
    /// Records written by a rewriting format (CloudTrail events).
    pub records: u64,
    /// CSV sources whose header, or Parquet sources whose schema, differs from their output's:
    /// left out, still pending, for an output of their own (the seal's next pass).
    pub deferred_sources: u64,
    /// Lines that are not JSON, set aside in the output's side file (`ndjson`).
    pub invalid_lines: u64,
    /// Sources of a compressed output whose content was compressed already (gzip under a
    /// plain name): they went in as they are.
    pub already_compressed_sources: u64,
    /// In tag mode, what each placed source's GET showed, for the tag step after the commit.
    pub seen: SeenSources,
}

/// Where the output goes and how.
pub(crate) struct OutputTarget<'a> {
    pub bucket: &'a str,
    pub generation: u64,
    /// The multipart upload already created for this output, when the plan needs one.
    pub upload_id: Option<&'a str>,
}

/// Permits are counted in KiB so that a `u32` semaphore covers budgets up to 4 TiB.
fn permits_for(size: u64, budget_kib: u32) -> u32 {
    (size.div_ceil(1024).max(1)).min(budget_kib as u64) as u32
}

/// True when an output of `sources` planned sources of `source_bytes` needs a multipart upload
/// (more than one part's bytes).
pub(crate) fn needs_multipart(source_bytes: u64, sources: u64, config: &Config) -> bool {
    // One separator a source at most, so this bound is safe.
    source_bytes + sources * MAX_SEPARATOR_BYTES > config.part_bytes
}

/// True when `source` may become a part by server-side copy, as far as the plan can tell; the
/// part buffer decides at the source's turn ([`at_part_boundary`]).
///
/// It needs a multipart output, a class that keeps source bytes as they are, a size from
/// `copy_min_bytes` to S3's largest part, and a recorded ETag: the copy and the hash-read must
/// be pinned to the same version, and without an ETag nothing pins the copy.
fn copy_candidate(source: &ObjectRecord, class: &FormatClass, config: &Config, multipart: bool) -> bool {
    multipart
        && class.keeps_source_bytes()
        && source.etag.is_some()
        && config.copy_min_bytes.is_some_and(|copy_min_bytes| source.size >= copy_min_bytes)
        && source.size <= MAX_PART_BYTES
}

/// True when the buffered bytes may be uploaded as a part now, ahead of a copied one: S3 wants
/// at least 5 MiB in every part but the last, and an empty buffer needs no part.
fn at_part_boundary(buffered_bytes: u64) -> bool {
    buffered_bytes == 0 || buffered_bytes >= MIN_PART_BYTES
}

/// One output written a window of sources at a time, so that the seal holds a window of an
/// output's sources and placements, never all of them: it hands each window over in plan
/// order, takes the window's placements and missing sources away to the manifest, and
/// finishes. `planned` names the output and its class; its `sources` are not read. Reads run
/// ahead within a window; between windows the pipeline drains once, a pause per window of
/// sources, not per source.
pub(crate) struct WindowedWriter<'a> {
    writer: OutputWriter<'a>,
    /// Set for a Parquet output, which joins sources by their column chunks instead.
    #[cfg(feature = "parquet")]
    parquet: Option<super::parquet_output::ParquetOutput<'a>>,
    read_budget: Arc<Semaphore>,
    budget_kib: u32,
}

impl<'a> WindowedWriter<'a> {
    pub(crate) fn new(
        store: &'a Arc<dyn ObjectStore>,
        config: &'a Config,
        planned: &'a PlannedOutput<ObjectRecord>,
        target: &OutputTarget<'a>,
    ) -> Self {
        let budget_kib = u32::try_from(config.read_ahead_bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
        Self {
            writer: OutputWriter::new(store, config, planned, target),
            #[cfg(feature = "parquet")]
            parquet: planned
                .class
                .is_parquet()
                .then(|| super::parquet_output::ParquetOutput::new(store, config, planned, target)),
            read_budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
        }
    }

    /// The placements of the sources written since the last call, in output order.
    pub(crate) fn take_placements(&mut self) -> Vec<SourcePlacement> {
        #[cfg(feature = "parquet")]
        if let Some(parquet) = &mut self.parquet {
            return std::mem::take(&mut parquet.written.placements);
        }
        std::mem::take(&mut self.writer.written.placements)
    }

    /// The sources found missing since the last call.
    pub(crate) fn take_missing(&mut self) -> Vec<MissingSource> {
        #[cfg(feature = "parquet")]
        if let Some(parquet) = &mut self.parquet {
            return std::mem::take(&mut parquet.written.missing);
        }
        std::mem::take(&mut self.writer.written.missing)
    }

    pub(crate) async fn finish(self) -> Result<WrittenOutput, EngineError> {
        #[cfg(feature = "parquet")]
        if let Some(parquet) = self.parquet {
            return parquet.finish().await;
        }
        self.writer.finish().await
    }

    /// Appends the next window of sources, in plan order.
    pub(crate) async fn write(&mut self, sources: &[ObjectRecord]) -> Result<(), EngineError> {
        #[cfg(feature = "parquet")]
        if let Some(parquet) = &mut self.parquet {
            return parquet.write(sources).await;
        }
        let (store, config, planned) = (self.writer.store, self.writer.config, self.writer.planned);
        let multipart = self.writer.multipart;
        let budget_kib = self.budget_kib;
        let read_budget = &self.read_budget;

        // Reads go in batches: of one source on S3 (each GET its own request, many at once), of
        // up to `get_batch_size` small ones where the store opens many in one go (the local
        // directory, where a blocking-pool hop per file cost more than the read).
        let batch_size = store.get_batch_size().max(1);
        let batches =
            read_batches(sources, batch_size, |source| copy_candidate(source, &planned.class, config, multipart));
        let batches_in_flight = batches_in_flight(config.read_concurrency, batch_size);

        // Permits are taken in plan order (`then` is sequential) before a GET starts, so the
        // source the writer waits for always holds its permits: no deadlock with `buffered`.
        let reads = futures::stream::iter(batches)
            .then(|batch| {
                let read_budget = Arc::clone(read_budget);
                async move {
                    if batch.at_turn {
                        return (batch, None);
                    }
                    let permits = batch
                        .sources
                        .iter()
                        .map(|source| permits_for(source.size, budget_kib))
                        .sum::<u32>()
                        .min(budget_kib);
                    let permit =
                        read_budget.acquire_many_owned(permits).await.expect("the read budget is never closed");
                    (batch, Some(permit))
                }
            })
            .map(|(batch, permit)| {
                // Spawned, so that reads go on while the writer waits for an upload, a copy or a
                // source it reads itself; a `buffered` future only runs when the stream is polled.
                let read = permit.map(|permit| {
                    let (store, sources) = (Arc::clone(store), batch.sources.clone());
                    AbortOnDrop(tokio::spawn(async move { (read_sources(store.as_ref(), &sources).await, permit) }))
                });
                async move {
                    let Some(task) = read else {
                        return Ok::<_, StoreError>(
                            batch.sources.into_iter().map(|source| (source, SourceRead::AtTurn)).collect::<Vec<_>>(),
                        );
                    };
                    let (results, permit) = task.await.map_err(|join_error| {
                        let first = &batch.sources[0];
                        StoreError::backend(
                            first.bucket.as_str(),
                            first.key.as_str(),
                            format!("source read task failed: {join_error}"),
                        )
                    })?;
                    // The batch's permits go back with its last source: a batch is small.
                    let mut permit = Some(permit);
                    let count = batch.sources.len();
                    Ok(batch
                        .sources
                        .into_iter()
                        .zip(results?)
                        .enumerate()
                        .map(|(index, (source, result))| {
                            let permit = if index + 1 == count { permit.take() } else { None };
                            (source, SourceRead::Prefetched { result, permit })
                        })
                        .collect())
                }
            })
            .buffered(batches_in_flight);
        let mut reads = std::pin::pin!(reads);

        let writer = &mut self.writer;
        while let Some(batch) = reads.next().await {
            for read in batch? {
                match read {
                    (source, SourceRead::Prefetched { result: Ok((bytes, seen)), permit }) => {
                        writer.append_whole(&source, bytes, &seen, permit).await?
                    }
                    (source, SourceRead::Prefetched { result: Err(unreadable), .. }) => {
                        writer.record_missing(&source, unreadable)
                    }
                    (source, SourceRead::AtTurn) => writer.write_at_turn(&source).await?,
                }
            }
        }
        Ok(())
    }
}

/// The state of one output while its sources go in, in plan order.
struct OutputWriter<'a> {
    store: &'a Arc<dyn ObjectStore>,
    config: &'a Config,
    planned: &'a PlannedOutput<ObjectRecord>,
    bucket: &'a str,
    generation: u64,
    multipart: bool,
    output_hasher: Sha256,
    /// Bytes of the next part (of the whole output, for a single PUT).
    buffer: BytesMut,
    /// Where the next source starts in the output.
    offset: u64,
    /// Sources placed so far (their placements may have been taken away already).
    placed: u64,
    written: WrittenOutput,
    uploads: PartUploads<'a>,
    /// A CSV output's header, once its first source has given it.
    csv_header: Option<Vec<u8>>,
    /// The side file's lines so far (`ndjson`): one per invalid line set aside.
    side_file: Vec<u8>,
}

impl<'a> OutputWriter<'a> {
    fn new(
        store: &'a Arc<dyn ObjectStore>,
        config: &'a Config,
        planned: &'a PlannedOutput<ObjectRecord>,
        target: &OutputTarget<'a>,
    ) -> Self {
        Self {
            store,
            config,
            planned,
            bucket: target.bucket,
            generation: target.generation,
            multipart: target.upload_id.is_some(),
            output_hasher: Sha256::new(),
            buffer: BytesMut::with_capacity(config.part_bytes as usize),
            offset: 0,
            placed: 0,
            written: WrittenOutput::default(),
            uploads: PartUploads::new(store, target.bucket, &planned.key, target.upload_id, config.upload_concurrency),
            csv_header: None,
            side_file: Vec::new(),
        }
    }

    fn record_missing(&mut self, source: &ObjectRecord, SourceUnreadable(note): SourceUnreadable) {
        warn!(bucket = %source.bucket, key = %source.key, note = %note, "source missing at seal time");
        self.written.missing.push(MissingSource { key: source.key.clone(), sequencer: source.sequencer.clone(), note });
    }

    /// Appends a source read whole, then gives its permits back.
    async fn append_whole(
        &mut self,
        source: &ObjectRecord,
        bytes: Bytes,
        seen: &SeenAtRead,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), EngineError> {
        match self.planned.class.format {
            FormatMode::Cloudtrail => return self.append_rewritten(source, bytes, seen, permit).await,
            FormatMode::Csv => return self.append_csv(source, bytes, seen, permit).await,
            FormatMode::Ndjson => return self.append_ndjson(source, bytes, seen, permit).await,
            // Parquet outputs are written by `ParquetOutput`, never by this writer.
            FormatMode::Auto | FormatMode::Concat | FormatMode::Bytes | FormatMode::Parquet => {}
        }
        if self.planned.class.compression != Compression::None {
            return self.append_compressed(source, bytes, seen, permit).await;
        }
        let source_sha256 = hex::encode(Sha256::digest(&bytes));
        let mut tail = TextTail::new(&self.planned.class);
        tail.update(&bytes);
        self.output_hasher.update(&bytes);
        self.append(&bytes).await?;
        drop(bytes);
        drop(permit);
        self.place(source, source.size, source_sha256, tail.finish(), seen).await
    }

    /// A copy candidate's turn: copied if the buffer is at a legal part boundary, streamed
    /// through the buffer otherwise. Either way one GET, pinned to the recorded ETag.
    async fn write_at_turn(&mut self, source: &ObjectRecord) -> Result<(), EngineError> {
        let copy = at_part_boundary(self.buffer.len() as u64);
        if copy && !self.buffer.is_empty() {
            // Flushed before the GET opens, so that no opened body idles while an upload slot
            // frees up. Should the source turn out missing, this part is legal all the same.
            let part = std::mem::take(&mut self.buffer).freeze();
            self.uploads.upload(part).await?;
        }
        let body = match open_source(self.store.as_ref(), source).await? {
            Ok(body) => body,
            Err(unreadable) => {
                self.record_missing(source, unreadable);
                return Ok(());
            }
        };
        if copy {
            self.copy_source(source, body).await
        } else {
            self.stream_through_buffer(source, body).await
        }
    }

    /// Makes `source` a part by `UploadPartCopy` while its GET body is hashed.
    ///
    /// The order is what keeps a changed source out of the output. The GET is opened first,
    /// pinned to the recorded ETag: a source gone or overwritten by then fails it, and nothing
    /// was copied. Only then is the copy started, pinned to the same ETag, while the body is
    /// hashed: if the source changes in between, the copy fails with 412 (or 404) and creates
    /// no part, the tentative output hasher is dropped, and the part number is used by the next
    /// part. So no outcome leaves a copied part for a source recorded missing, and no outcome
    /// relies on the server leaving an unlisted part out of the completed object. Starting both
    /// at once would save the GET's first-byte latency but could copy a source whose GET then
    /// failed; copying only after the whole hash-read would cost the copy's latency as well.
    /// A body that fails or ends early after a successful open is not the source's fault: the
    /// output fails, its upload is abandoned, and the next run retries.
    async fn copy_source(&mut self, source: &ObjectRecord, body: GetResult) -> Result<(), EngineError> {
        debug_assert!(self.buffer.is_empty(), "the buffer is flushed before a copy");
        let etag = source.etag.as_deref().expect("copy candidates have a recorded ETag");
        let tentative_output_hasher = self.output_hasher.clone();
        let seen = body.seen.clone();
        let (copied, hashed) = tokio::join!(
            self.uploads.copy(source, etag),
            hash_body(source, &self.planned.class, body, tentative_output_hasher)
        );
        let hashed = hashed?;
        match copied {
            Ok(()) => {
                self.output_hasher = hashed.output_hasher;
                self.written.copied_sources += 1;
                self.written.copied_bytes += source.size;
                debug!(key = %source.key, size = source.size, "source copied server-side");
                self.place(source, source.size, hashed.source_sha256, hashed.text_end, &seen).await
            }
            Err(error) => match unreadable_from(error) {
                Ok(unreadable) => {
                    self.record_missing(source, unreadable);
                    Ok(())
                }
                Err(error) => Err(error.into()),
            },
        }
    }

    /// Streams a source chunk by chunk into the part buffer, uploading each part as it fills.
    async fn stream_through_buffer(&mut self, source: &ObjectRecord, mut body: GetResult) -> Result<(), EngineError> {
        let mut source_hasher = Sha256::new();
        let mut streamed_bytes = 0u64;
        let mut tail = TextTail::new(&self.planned.class);
        while let Some(chunk) = body.body.next().await {
            let chunk = chunk?;
            source_hasher.update(&chunk);
            tail.update(&chunk);
            self.output_hasher.update(&chunk);
            self.append(&chunk).await?;
            streamed_bytes += chunk.len() as u64;
        }
        check_body_length(source, streamed_bytes)?;
        self.place(source, source.size, hex::encode(source_hasher.finalize()), tail.finish(), &body.seen).await
    }

    /// Records where a source went (`length` bytes, just appended: the source's own, or what a
    /// rewriting format made of them), and appends its separator if its text (`text_end`: its
    /// last byte) needs one.
    async fn place(
        &mut self,
        source: &ObjectRecord,
        length: u64,
        source_sha256: String,
        text_end: Result<Option<u8>, UnreadableGzip>,
        seen: &SeenAtRead,
    ) -> Result<(), EngineError> {
        if self.config.expiry == ExpiryMode::Tag {
            self.written.seen.push(&source.bucket, &source.key, seen);
        }
        let last_byte = text_end.unwrap_or_else(|UnreadableGzip(reason)| {
            // Its bytes still go in as they are (nothing is dropped); a reader of the output
            // will stumble on them as it would on the source itself.
            warn!(key = %source.key, reason = %reason, "gzip source cannot be inflated to its end; no newline member after it");
            self.written.unreadable_gzip_sources += 1;
            None
        });
        let newline_needed = self.planned.class.newline_separated && last_byte.is_some_and(|byte| byte != b'\n');
        let separator_bytes = if newline_needed {
            let separator = self.planned.class.separator();
            self.output_hasher.update(separator);
            self.append(separator).await?;
            separator.len() as u64
        } else {
            0
        };
        self.written.placements.push(SourcePlacement {
            key: source.key.clone(),
            sequencer: source.sequencer.clone(),
            placement: Placement {
                output_key: self.planned.key.clone(),
                generation: self.generation,
                offset: self.offset,
                length,
                sha256: source_sha256,
                separator_bytes,
            },
            etag: source.etag.clone(),
            size: source.size,
        });
        self.offset += length + separator_bytes;
        self.placed += 1;
        Ok(())
    }

    /// Appends `bytes` to the output, uploading each part as soon as it is full.
    ///
    /// Each part is one allocation of exactly `part_bytes`, filled to the brim and handed to its
    /// upload whole; the next part gets a fresh one. Letting one `BytesMut` overflow and
    /// `split_to` the part off instead costs memory that grows with the run: the first overflow
    /// doubles the allocation to twice a part, the part then shares it with the buffer, and
    /// every later part regrows from 64 KiB by doubling reallocations. That chain of ever
    /// larger blocks, freed on the upload tasks' threads, is what glibc's malloc keeps
    /// fragmented in its arenas: a seal's peak RSS rose with the number of parts it wrote
    /// (bench `memory`: 70 MiB for 13 parts, 87–116 MiB for 240), where one size of block,
    /// allocated once per part, is reused as it is freed.
    async fn append(&mut self, mut bytes: &[u8]) -> Result<(), EngineError> {
        let part_bytes = self.config.part_bytes as usize;
        while !bytes.is_empty() {
            if self.buffer.capacity() == 0 {
                self.buffer = BytesMut::with_capacity(part_bytes);
            }
            // A single PUT's output fits in one part (`needs_multipart`); should it not, the
            // buffer grows rather than split it, as there are no parts to upload.
            let room = if self.multipart { part_bytes - self.buffer.len() } else { bytes.len() };
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = later;
            if self.multipart && self.buffer.len() == part_bytes {
                let part = std::mem::take(&mut self.buffer).freeze();
                self.uploads.upload(part).await?;
            }
        }
        Ok(())
    }

    async fn finish(self) -> Result<WrittenOutput, EngineError> {
        let OutputWriter {
            store,
            planned,
            bucket,
            multipart,
            output_hasher,
            buffer,
            offset,
            placed,
            mut written,
            mut uploads,
            side_file,
            ..
        } = self;
        if placed == 0 {
            return Ok(written);
        }
        if !side_file.is_empty() {
            // Before the output is completed, so that a committed output's side file always
            // exists. A crash between the two leaves a side file of an output never committed:
            // the next run writes keys of another generation, and restore never reads it.
            let side_key = crate::domain::format::ndjson::side_key(&planned.key);
            store.put(bucket, &side_key, Bytes::from(side_file), PutOptions::default()).await?;
        }
        let output_bytes = buffer.freeze();
        if multipart {
            if !output_bytes.is_empty() || uploads.parts_started() == 0 {
                uploads.upload(output_bytes).await?;
            }
            uploads.complete().await?;
        } else {
            store.put(bucket, &planned.key, output_bytes, PutOptions::default()).await?;
        }
        written.size = offset;
        written.sha256 = hex::encode(output_hasher.finalize());
        written.written = true;
        debug!(
            output = %planned.key,
            size = written.size,
            sources = placed,
            copied_sources = written.copied_sources,
            already_compressed_sources = written.already_compressed_sources,
            "output written"
        );
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::reads::BATCH_MAX_BYTES;
    use super::*;
    use crate::config::RawConfig;
    use crate::domain::format::FormatMode;
    use crate::domain::records::ObjectState;

    const MIB: u64 = 1 << 20;

    fn config(copy_min_bytes: &str) -> Config {
        RawConfig {
            source_bucket: Some("logs".into()),
            copy_min_bytes: Some(copy_min_bytes.into()),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    fn source(size: u64, etag: Option<&str>) -> ObjectRecord {
        ObjectRecord {
            bucket: "logs".into(),
            key: "app/2024/01/14/a.json".into(),
            partition_path: "app/2024/01/14/".into(),
            size,
            etag: etag.map(str::to_owned),
            sequencer: "01".into(),
            event_time: Utc::now(),
            state: ObjectState::Pending,
            placement: None,
            expiry_marked_at: None,
            note: None,
        }
    }

    #[test]
    fn only_large_sources_with_an_etag_in_multipart_outputs_are_copy_candidates() {
        let lines = FormatClass {
            extension: ".json".into(),
            newline_separated: true,
            gzip: false,
            format: FormatMode::Concat,
            compression: Compression::None,
        };
        let config = config("5MiB");
        assert!(copy_candidate(&source(5 * MIB, Some("e")), &lines, &config, true));
        assert!(copy_candidate(&source(64 * MIB, Some("e")), &lines, &config, true));
        assert!(!copy_candidate(&source(5 * MIB - 1, Some("e")), &lines, &config, true), "under copy_min_bytes");
        assert!(!copy_candidate(&source(5 * MIB, None), &lines, &config, true), "nothing pins the copy's version");
        assert!(!copy_candidate(&source(5 * MIB, Some("e")), &lines, &config, false), "a single PUT has no parts");
        assert!(
            !copy_candidate(&source(MAX_PART_BYTES + 1, Some("e")), &lines, &config, true),
            "over S3's largest part"
        );
        assert!(!copy_candidate(&source(64 * MIB, Some("e")), &lines, &self::config("off"), true), "copying off");
        assert!(!copy_candidate(&source(6 * MIB, Some("e")), &lines, &self::config("8MiB"), true));
    }

    #[test]
    fn small_sources_of_one_bucket_are_read_in_batches_and_others_alone() {
        const KIB: u64 = 1024;
        let in_bucket = |bucket: &str, size: u64| ObjectRecord { bucket: bucket.into(), ..source(size, Some("e")) };
        let sources = [
            in_bucket("logs", KIB),
            in_bucket("logs", KIB),
            in_bucket("logs", KIB),
            in_bucket("logs", 6 * MIB), // a copy candidate
            in_bucket("logs", KIB),
            in_bucket("logs", 300 * KIB), // too large to batch
            in_bucket("logs", KIB),
            in_bucket("other", KIB),
        ];
        let batches = read_batches(&sources, 2, |source| source.size >= 5 * MIB);
        let shape: Vec<(usize, bool)> = batches.iter().map(|batch| (batch.sources.len(), batch.at_turn)).collect();
        assert_eq!(shape, [(2, false), (1, false), (1, true), (1, false), (1, false), (1, false), (1, false)]);
        let in_order: Vec<u64> =
            batches.iter().flat_map(|batch| batch.sources.iter().map(|source| source.size)).collect();
        assert_eq!(in_order, sources.iter().map(|source| source.size).collect::<Vec<_>>(), "plan order is kept");

        let singles = read_batches(&sources, 1, |_| false);
        assert!(singles.iter().all(|batch| batch.sources.len() == 1), "a batch size of 1 reads each on its own");
        let many_small: Vec<ObjectRecord> = (0..20).map(|_| in_bucket("logs", 200 * KIB)).collect();
        let by_bytes = read_batches(&many_small, 64, |_| false);
        assert!(by_bytes.iter().all(|batch| batch.sources.len() as u64 * 200 * KIB <= BATCH_MAX_BYTES));
        assert_eq!(by_bytes.len(), 20usize.div_ceil((BATCH_MAX_BYTES / (200 * KIB)) as usize));
    }

    #[test]
    fn batches_in_flight_never_exceed_the_read_concurrency() {
        assert_eq!(batches_in_flight(32, 1), 32, "S3: one GET a batch, read_concurrency of them");
        assert_eq!(batches_in_flight(2, 1), 2, "a low read_concurrency is kept");
        assert_eq!(batches_in_flight(32, 64), 4, "a few large batches, so reads overlap the writer");
        assert_eq!(batches_in_flight(1, 64), 1);
    }

    #[test]
    fn a_copy_needs_the_buffer_empty_or_a_legal_part() {
        assert!(at_part_boundary(0));
        assert!(!at_part_boundary(1), "a separator alone is no part");
        assert!(!at_part_boundary(MIN_PART_BYTES - 1));
        assert!(at_part_boundary(MIN_PART_BYTES));
    }
}
