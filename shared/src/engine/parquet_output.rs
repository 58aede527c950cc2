//! Step 4 of the seal for a Parquet output: the sources' row groups copied, column chunk by
//! column chunk, into one new Parquet file (see [`crate::parquet`]).
//!
//! Per source: its footer by ranged GETs (the file's end, then the footer if longer), then
//! its column chunks (none more when they lie in the footer's first read, the file's last
//! 64 KiB; one GET for a small source, read ahead of the writer; one per row group for a
//! large one, at its turn). Each source row group becomes an output row group; its
//! chunks go out as they are, and the output's bytes stream through the part buffer into a
//! multipart upload, as the concatenating writer's do.
//!
//! The manifest's placement of a Parquet source is the byte range of its column chunks in
//! the output and their sha256: exact for `verify`, and enough to find the source's row
//! groups and rows in the output's footer ([`crate::parquet::rows_in_range`]).
//!
//! A source that is not a Parquet file the seal can merge (truncated, a bad footer, only the
//! name of one) is recorded `missing` with the reason and left as it is. A source whose schema
//! differs from the output's (set by its first source) stays pending: a later output takes it.
//!
//! # Memory
//! Sources read ahead: at most `read_concurrency` footers (a footer over 8 MiB is refused)
//! and, of sources whose chunks are under [`PREFETCH_MAX_BYTES`], their chunks; a larger
//! source holds one row group at a time. Typically a few hundred KiB a source read ahead
//! (the 64 KiB tail read, a footer of a few KiB, the chunks), under 10 MiB for 32.
//! Plus `upload_concurrency + 1` parts, and the output's footer: the metadata of every row
//! group written, which grows with the output's row groups (serialized, about 96 bytes per
//! column chunk with its statistics, ~3.5 KiB per row group of 37 columns: 5.9 MB for the
//! benchmark's 1,379 feature-store batches, more as the writer's structs in memory). That is
//! the part that grows with an output, and it is bounded by the target size over the smallest
//! source (the README's Parquet rows).

use std::ops::Range;
use std::sync::Arc;

use bytes::BytesMut;
use futures::StreamExt;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::SchemaDescriptor;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::writer::{MissingSource, OutputTarget, PartUploads, WrittenOutput};
use super::EngineError;
use crate::config::Config;
use crate::domain::plan::PlannedOutput;
use crate::domain::records::{ObjectRecord, Placement};
use crate::parquet::chunks::output_properties;
use crate::parquet::footer::read_footer_and_tail;
use crate::parquet::footer::read_range;
use crate::parquet::{append_row_group, BadParquet, OffsetBytes, ParquetFooter, SchemaKey};
use crate::ports::{ObjectStore, PutOptions, SourcePlacement, StoreError};

/// Sources whose column chunks total at most this are read whole, ahead of the writer.
pub(crate) const PREFETCH_MAX_BYTES: u64 = 256 * 1024;

/// What `created_by` says in outputs.
pub(crate) fn created_by() -> String {
    format!("s3-compactor {} (column chunks copied as they are)", env!("CARGO_PKG_VERSION"))
}

/// A source read ahead.
enum Prefetched {
    /// Gone, changed, or not a Parquet file the seal can merge: the note says which.
    Unreadable(String),
    /// Its footer, and its column chunks when small.
    Footer { footer: Box<ParquetFooter>, data: Option<OffsetBytes> },
}

struct OpenFile {
    schema: SchemaKey,
    /// The first source's column descriptors, which every appended chunk's metadata is put on.
    descriptors: Arc<SchemaDescriptor>,
    writer: SerializedFileWriter<Vec<u8>>,
}

/// One Parquet output, its sources appended a window at a time.
pub(crate) struct ParquetOutput<'a> {
    store: &'a Arc<dyn ObjectStore>,
    config: &'a Config,
    key: &'a str,
    bucket: &'a str,
    generation: u64,
    multipart: bool,
    file: Option<OpenFile>,
    output_hasher: Sha256,
    /// Bytes of the next part (of the whole output, for a single PUT).
    buffer: BytesMut,
    /// Bytes of the output so far.
    offset: u64,
    uploads: PartUploads<'a>,
    pub(crate) written: WrittenOutput,
    /// Sources placed so far (their placements may have been taken away already).
    placed: u64,
}

impl<'a> ParquetOutput<'a> {
    pub(crate) fn new(
        store: &'a Arc<dyn ObjectStore>,
        config: &'a Config,
        planned: &'a PlannedOutput<ObjectRecord>,
        target: &OutputTarget<'a>,
    ) -> Self {
        Self {
            store,
            config,
            key: &planned.key,
            bucket: target.bucket,
            generation: target.generation,
            multipart: target.upload_id.is_some(),
            file: None,
            output_hasher: Sha256::new(),
            buffer: BytesMut::new(),
            offset: 0,
            uploads: PartUploads::new(store, target.bucket, &planned.key, target.upload_id, config.upload_concurrency),
            written: WrittenOutput::default(),
            placed: 0,
        }
    }

    /// Appends the next window of sources, in plan order.
    pub(crate) async fn write(&mut self, sources: &[ObjectRecord]) -> Result<(), EngineError> {
        let store = Arc::clone(self.store);
        let reads = futures::stream::iter(sources.to_vec())
            .map(move |source| {
                let store = Arc::clone(&store);
                async move {
                    let read = prefetch(store.as_ref(), &source).await;
                    (source, read)
                }
            })
            .buffered(self.config.read_concurrency.max(1));
        let mut reads = std::pin::pin!(reads);
        while let Some((source, read)) = reads.next().await {
            match read? {
                Prefetched::Unreadable(note) => self.record_missing(&source, note),
                Prefetched::Footer { footer, data } => self.append_source(&source, *footer, data).await?,
            }
        }
        Ok(())
    }

    fn record_missing(&mut self, source: &ObjectRecord, note: String) {
        warn!(bucket = %source.bucket, key = %source.key, note = %note, "Parquet source not merged");
        self.written.missing.push(MissingSource { key: source.key.clone(), sequencer: source.sequencer.clone(), note });
    }

    async fn append_source(
        &mut self,
        source: &ObjectRecord,
        footer: ParquetFooter,
        data: Option<OffsetBytes>,
    ) -> Result<(), EngineError> {
        let schema = footer.schema_key();
        if self.file.is_none() {
            let properties = output_properties(&schema, &created_by());
            let writer = SerializedFileWriter::new(Vec::new(), Arc::clone(&schema.schema), properties)
                .map_err(|error| parquet_failure(self.key, error))?;
            let descriptors = footer.metadata.file_metadata().schema_descr_ptr();
            self.file = Some(OpenFile { schema: schema.clone(), descriptors, writer });
            self.drain(None).await?;
        }
        if self.file.as_ref().is_some_and(|file| file.schema != schema) {
            info!(key = %source.key, output = %self.key, "Parquet source has another schema than its output's; left pending for an output of its own");
            self.written.deferred_sources += 1;
            return Ok(());
        }
        let start = self.offset;
        let mut source_hasher = Sha256::new();
        for (index, group) in footer.metadata.row_groups().iter().enumerate() {
            let span = footer.row_group_bytes[index].clone();
            let reader = match &data {
                Some(data) => data.clone(),
                None => match self.read_chunks(source, span).await? {
                    Ok(reader) => reader,
                    // Nothing of it written yet: it is missing, as any unreadable source.
                    Err(note) if index == 0 => {
                        self.record_missing(source, note);
                        return Ok(());
                    }
                    // Some row groups are in the output already: the output fails and is
                    // abandoned, and the next run finds the source changed at its footer.
                    Err(note) => {
                        return Err(StoreError::backend(self.bucket, self.key, format!("{}: {note}", source.key)).into())
                    }
                },
            };
            let file = self.file.as_mut().expect("opened above");
            append_row_group(&mut file.writer, &file.descriptors, group, &reader)
                .map_err(|error| parquet_failure(&source.key, error))?;
            self.drain(Some(&mut source_hasher)).await?;
        }
        let length = self.offset - start;
        self.placed += 1;
        debug!(key = %source.key, rows = footer.rows(), row_groups = footer.metadata.num_row_groups(), length, "Parquet source appended");
        self.written.placements.push(SourcePlacement {
            key: source.key.clone(),
            sequencer: source.sequencer.clone(),
            placement: Placement {
                output_key: self.key.to_string(),
                generation: self.generation,
                offset: start,
                length,
                sha256: hex::encode(source_hasher.finalize()),
                separator_bytes: 0,
            },
            etag: source.etag.clone(),
            size: source.size,
        });
        Ok(())
    }

    /// One row group's column chunks of a large source, at its turn.
    async fn read_chunks(
        &self,
        source: &ObjectRecord,
        span: Range<u64>,
    ) -> Result<Result<OffsetBytes, String>, EngineError> {
        let start = span.start;
        if span.is_empty() {
            return Ok(Ok(OffsetBytes { start, bytes: bytes::Bytes::new() }));
        }
        match read_range(self.store.as_ref(), &source.bucket, &source.key, source.size, source.etag.as_deref(), span)
            .await
        {
            Ok(bytes) => Ok(Ok(OffsetBytes { start, bytes })),
            Err(error) => Ok(Err(unreadable_note(error)?)),
        }
    }

    /// Moves what the Parquet writer has written into the output (hashers, part buffer).
    async fn drain(&mut self, source_hasher: Option<&mut Sha256>) -> Result<(), EngineError> {
        let file = self.file.as_mut().expect("drained only once open");
        file.writer.flush().map_err(|error| StoreError::backend(self.bucket, self.key, error))?;
        let bytes = std::mem::take(file.writer.inner_mut());
        if let Some(source_hasher) = source_hasher {
            source_hasher.update(&bytes);
        }
        self.append(&bytes).await
    }

    async fn append(&mut self, mut bytes: &[u8]) -> Result<(), EngineError> {
        self.output_hasher.update(bytes);
        self.offset += bytes.len() as u64;
        let part_bytes = self.config.part_bytes as usize;
        while !bytes.is_empty() {
            if self.buffer.capacity() == 0 {
                self.buffer = BytesMut::with_capacity(if self.multipart { part_bytes } else { bytes.len() });
            }
            // A single PUT's output is never larger than its sources, which fit one part.
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

    /// Writes the footer and completes the output; nothing is written when no source was.
    pub(crate) async fn finish(mut self) -> Result<WrittenOutput, EngineError> {
        let Some(file) = self.file.take().filter(|_| self.placed > 0) else {
            // Every source missing or left pending: nothing is written (the seal aborts the
            // upload, and only the 4-byte header can have reached the part buffer).
            return Ok(self.written);
        };
        let footer = file.writer.into_inner().map_err(|error| parquet_failure(self.key, error))?;
        self.append(&footer).await?;
        let output_bytes = std::mem::take(&mut self.buffer).freeze();
        if self.multipart {
            if !output_bytes.is_empty() || self.uploads.parts_started() == 0 {
                self.uploads.upload(output_bytes).await?;
            }
            self.uploads.complete().await?;
        } else {
            self.store.put(self.bucket, self.key, output_bytes, PutOptions::default()).await?;
        }
        self.written.size = self.offset;
        self.written.sha256 = hex::encode(self.output_hasher.finalize());
        self.written.written = true;
        Ok(self.written)
    }
}

/// Reads a source's footer and, when small, its column chunks.
async fn prefetch(store: &dyn ObjectStore, source: &ObjectRecord) -> Result<Prefetched, StoreError> {
    let etag = source.etag.as_deref();
    let (footer, tail) = match read_footer_and_tail(store, &source.bucket, &source.key, source.size, etag).await {
        Ok(Ok(read)) => read,
        Ok(Err(BadParquet(reason))) => {
            return Ok(Prefetched::Unreadable(format!(
                "not a Parquet file the seal can merge, left as it is: {reason}"
            )))
        }
        Err(error) => return Ok(Prefetched::Unreadable(unreadable_note(error)?)),
    };
    let span =
        footer.row_group_bytes.iter().cloned().reduce(|one, other| one.start.min(other.start)..one.end.max(other.end));
    let data = match span {
        // No bytes to read (chunks of zero bytes): an empty range is no GET S3 serves.
        Some(span) if span.is_empty() => Some(OffsetBytes { start: span.start, bytes: bytes::Bytes::new() }),
        // Chunks inside the footer's first read (a file under 64 KiB, or nearly): no second GET.
        // That read was conditional on the same ETag and size as a chunk read would be.
        Some(span) if span.start >= tail.start => Some(tail),
        Some(span) if span.end - span.start <= PREFETCH_MAX_BYTES => {
            let start = span.start;
            match read_range(store, &source.bucket, &source.key, source.size, etag, span).await {
                Ok(bytes) => Some(OffsetBytes { start, bytes }),
                Err(error) => return Ok(Prefetched::Unreadable(unreadable_note(error)?)),
            }
        }
        _ => None,
    };
    Ok(Prefetched::Footer { footer: Box::new(footer), data })
}

/// The note of a source that is not the recorded version any more; any other error is the
/// store's, and fails the output.
fn unreadable_note(error: StoreError) -> Result<String, StoreError> {
    match error {
        StoreError::NotFound { .. } => Ok("object no longer exists".into()),
        StoreError::PreconditionFailed { .. } => Ok("object was overwritten since ingest (its ETag changed)".into()),
        other => Err(other),
    }
}

fn parquet_failure(what: &str, error: parquet::errors::ParquetError) -> EngineError {
    StoreError::backend("", what, format!("writing the Parquet output failed: {error}")).into()
}
