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
//! benchmark's 1,379 feature-store batches; about 0.7 KiB a column chunk as the writer's structs
//! in memory, 73 MiB for a full 128 MiB output of ~2,700 row groups, which
//! `tests/parquet_memory.rs` pins under 1 KiB a column chunk). That is
//! the part that grows with an output, and it is bounded by the target size over the smallest
//! source (the README's Parquet rows).
//!
//! # Rewrite mode (`COMPACTOR_PARQUET_ROW_GROUPS=rewrite`, outputs `-rows.parquet`)
//! A source whose row groups are all under [`SMALL_ROW_GROUP_BYTES`] and whose uncompressed
//! size is at most [`MAX_DECODED_SOURCE_BYTES`] is decoded whole and its rows written into the
//! output's open row group ([`crate::parquet::rows::RowGroupBuilder`]), which closes once the
//! source row groups in it reach [`ROW_GROUP_TARGET_BYTES`] of compressed chunks, and only
//! between sources, so that a rewritten source's rows lie in one output row group. Any other
//! source closes the open group and is copied as in copy mode. Either way its placement means
//! rows: `offset` is the output's row index of its first row, `length` its row count, and
//! `sha256` the digest of its decoded values ([`crate::parquet::rows::RowsDigest`]; a copied
//! source's chunks are decoded once for it). A source whose pages do not decode is recorded
//! `missing` with the reason, before anything of it is written, and left as it is.
//!
//! Memory, on top of copy mode's: the open row group's encoded pages (about the target, plus
//! each column writer's page in progress, at most 1 MiB a column, and its dictionary, capped at
//! [`crate::parquet::rows::REWRITE_DICTIONARY_PAGE_BYTES`] of values) and one source decoded
//! (its values, at most about its uncompressed size). At close the group moves into the file's
//! buffer, reserved at its size, so it is held about once.

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
use crate::parquet::rows::{rewrite_properties, RowGroupBuilder, RowsDigest, Segment};
use crate::parquet::{append_row_group, BadParquet, OffsetBytes, ParquetFooter, SchemaKey};
use crate::ports::{ObjectStore, PutOptions, SourcePlacement, StoreError};

/// Sources whose column chunks total at most this are read whole, ahead of the writer.
pub(crate) const PREFETCH_MAX_BYTES: u64 = 256 * 1024;
/// Rewrite mode: row groups under this (compressed) are small enough to be worth rewriting.
pub(crate) const SMALL_ROW_GROUP_BYTES: u64 = 1024 * 1024;
/// Rewrite mode: a source whose footer says it is larger than this uncompressed is copied,
/// not decoded, so that one source decoded stays bounded whatever its footer claims per page.
pub(crate) const MAX_DECODED_SOURCE_BYTES: u64 = 16 * 1024 * 1024;
/// Rewrite mode: the open row group closes once the source chunks rewritten into it reach this.
pub(crate) const ROW_GROUP_TARGET_BYTES: u64 = 64 * 1024 * 1024;

/// What `created_by` says in outputs.
pub(crate) fn created_by() -> String {
    format!("s3-compactor {}", env!("CARGO_PKG_VERSION"))
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
    /// Rewrite mode: the row group being filled, and the rows closed into the file before it.
    open_group: Option<RowGroupBuilder>,
    rows_closed: u64,
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
    /// Small row groups are rewritten and placements are rows (an output `-rows.parquet`).
    rewrite: bool,
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
            rewrite: planned.class.rewrites_row_groups(),
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
            self.file =
                Some(OpenFile { schema: schema.clone(), descriptors, writer, open_group: None, rows_closed: 0 });
            self.drain(None).await?;
        }
        if self.file.as_ref().is_some_and(|file| file.schema != schema) {
            info!(key = %source.key, output = %self.key, "Parquet source has another schema than its output's; left pending for an output of its own");
            self.written.deferred_sources += 1;
            return Ok(());
        }
        if self.rewrite {
            return self.append_source_rows(source, footer, data).await;
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
        self.written.placements.push(SourcePlacement::of(
            source,
            Placement {
                output_key: self.key.to_string(),
                generation: self.generation,
                offset: start,
                length,
                sha256: hex::encode(source_hasher.finalize()),
                separator_bytes: 0,
            },
        ));
        Ok(())
    }

    /// Rewrite mode: the source's rows into the open row group when its row groups are small,
    /// else its row groups copied after closing the open one; its placement is rows.
    async fn append_source_rows(
        &mut self,
        source: &ObjectRecord,
        footer: ParquetFooter,
        data: Option<OffsetBytes>,
    ) -> Result<(), EngineError> {
        let groups = footer.metadata.row_groups();
        let small = groups.iter().all(|group| (group.compressed_size().max(0) as u64) < SMALL_ROW_GROUP_BYTES)
            && groups.iter().map(|group| group.total_byte_size().max(0) as u64).sum::<u64>()
                <= MAX_DECODED_SOURCE_BYTES;
        let (first_row, rows, digest) = if small {
            // Small: its chunks are few (under 1 MiB a row group, 16 MiB uncompressed in all).
            let data = match data {
                Some(data) => data,
                None => {
                    let span = footer
                        .row_group_bytes
                        .iter()
                        .cloned()
                        .reduce(|one, other| one.start.min(other.start)..one.end.max(other.end));
                    match self.read_chunks(source, span.unwrap_or(0..0)).await? {
                        Ok(data) => data,
                        Err(note) => {
                            self.record_missing(source, note);
                            return Ok(());
                        }
                    }
                }
            };
            let file = self.file.as_mut().expect("opened by append_source");
            let first_row = file.rows_closed + file.open_group.as_ref().map_or(0, |group| group.rows);
            let group = file.open_group.get_or_insert_with(|| {
                RowGroupBuilder::new(Arc::clone(&file.descriptors), &rewrite_properties(&created_by()))
            });
            match group.append_source(groups, &Arc::new(data)) {
                Ok((rows, digest)) => (first_row, rows, digest),
                Err(error) => {
                    self.record_missing(source, undecodable_note(error));
                    return Ok(());
                }
            }
        } else {
            self.close_open_group().await?;
            match self.copy_source_rows(source, &footer, data).await? {
                Some(copied) => copied,
                None => return Ok(()),
            }
        };
        self.placed += 1;
        debug!(key = %source.key, rows, first_row, rewritten = small, "Parquet source appended as rows");
        self.written.placements.push(SourcePlacement::of(
            source,
            Placement {
                output_key: self.key.to_string(),
                generation: self.generation,
                offset: first_row,
                length: rows,
                sha256: digest,
                separator_bytes: 0,
            },
        ));
        let full = self
            .file
            .as_ref()
            .and_then(|file| file.open_group.as_ref())
            .is_some_and(|group| group.source_bytes >= ROW_GROUP_TARGET_BYTES);
        if full {
            self.close_open_group().await?;
        }
        Ok(())
    }

    /// Rewrite mode: a large source's row groups copied as they are, each decoded once before
    /// it is written for the digest of its rows. `None` when it was recorded missing.
    async fn copy_source_rows(
        &mut self,
        source: &ObjectRecord,
        footer: &ParquetFooter,
        data: Option<OffsetBytes>,
    ) -> Result<Option<(u64, u64, String)>, EngineError> {
        let columns = footer.metadata.file_metadata().schema_descr().num_columns();
        let mut digest = RowsDigest::new(columns);
        let first_row = self.file.as_ref().map_or(0, |file| file.rows_closed);
        let mut rows = 0u64;
        for (index, group) in footer.metadata.row_groups().iter().enumerate() {
            let reader = match &data {
                Some(data) => data.clone(),
                None => match self.read_chunks(source, footer.row_group_bytes[index].clone()).await? {
                    Ok(reader) => reader,
                    Err(note) if index == 0 => {
                        self.record_missing(source, note);
                        return Ok(None);
                    }
                    Err(note) => {
                        return Err(StoreError::backend(self.bucket, self.key, format!("{}: {note}", source.key)).into())
                    }
                },
            };
            let reader = Arc::new(reader);
            let group_rows = group.num_rows().max(0) as u64;
            for column in 0..columns {
                let mut segment = [Segment { start: 0, rows: group_rows, digest: &mut digest, records: 0 }];
                let decoded = crate::parquet::rows::digest_segments(group, column, &reader, &mut segment, None)
                    .map_err(undecodable_note)
                    .and_then(|()| match segment[0].records {
                        records if records == group_rows => Ok(()),
                        records => {
                            Err(format!("a column chunk decodes to {records} rows, its row group has {group_rows}"))
                        }
                    });
                match decoded {
                    Ok(()) => {}
                    Err(note) if index == 0 => {
                        self.record_missing(source, note);
                        return Ok(None);
                    }
                    // Earlier row groups are in the output: the output fails and is abandoned.
                    Err(note) => {
                        return Err(StoreError::backend(self.bucket, self.key, format!("{}: {note}", source.key)).into())
                    }
                }
            }
            let file = self.file.as_mut().expect("opened by append_source");
            append_row_group(&mut file.writer, &file.descriptors, group, &reader)
                .map_err(|error| parquet_failure(&source.key, error))?;
            file.rows_closed += group_rows;
            rows += group_rows;
            self.drain(None).await?;
        }
        Ok(Some((first_row, rows, digest.finish())))
    }

    /// Rewrite mode: writes the open row group into the file, if there is one.
    async fn close_open_group(&mut self) -> Result<(), EngineError> {
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let Some(group) = file.open_group.take() else { return Ok(()) };
        file.rows_closed += group.rows;
        group.close_into(&mut file.writer).map_err(|error| parquet_failure(self.key, error))?;
        self.drain(None).await
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
        if self.placed > 0 {
            self.close_open_group().await?;
        }
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

/// The note of a source whose pages do not decode (rewrite mode decodes every source).
fn undecodable_note(error: parquet::errors::ParquetError) -> String {
    format!("not a Parquet file the seal can rewrite, left as it is: its pages do not decode: {error}")
}

fn parquet_failure(what: &str, error: parquet::errors::ParquetError) -> EngineError {
    StoreError::backend("", what, format!("writing the Parquet output failed: {error}")).into()
}
