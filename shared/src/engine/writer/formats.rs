//! The writer's formats that change sources' bytes: CloudTrail rewritten to NDJSON, CSV with
//! one header per output, NDJSON with invalid lines set aside, and compressed outputs, each
//! source a frame. Copy candidates never reach here ([`crate::domain::format::FormatClass::keeps_source_bytes`]
//! is false for all), so every source comes read whole.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};

use super::{OutputWriter, SourceUnreadable};
use crate::domain::format::compress::{compress_frame, compressed_by_content};
use crate::domain::format::{cloudtrail, csv, ndjson, Compression, TextTail};
use crate::domain::records::ObjectRecord;
use crate::engine::EngineError;
use crate::ports::{SeenAtRead, StoreError};

impl OutputWriter<'_> {
    /// Appends a CloudTrail source as its own gzip member of NDJSON: its range in the output
    /// is that member, and its sha256 the member's, so restore and verify check the range as
    /// for any source. A source that is not a
    /// CloudTrail document is recorded missing with the reason and left as it is.
    pub(super) async fn append_rewritten(
        &mut self,
        source: &ObjectRecord,
        bytes: Bytes,
        seen: &SeenAtRead,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), EngineError> {
        // Parsing and compressing are CPU work of up to seconds for a large file: off the
        // async threads, so the reads and uploads of other sources go on.
        let rewritten =
            tokio::task::spawn_blocking(move || cloudtrail::to_ndjson_member(&bytes)).await.map_err(|join_error| {
                StoreError::backend(
                    source.bucket.as_str(),
                    source.key.as_str(),
                    format!("rewrite task failed: {join_error}"),
                )
            })?;
        drop(permit);
        let member = match rewritten {
            Ok(member) => member,
            Err(reason) => {
                self.written.not_in_format_sources += 1;
                let note = format!("not compacted, left as it is: {reason}");
                self.record_missing(source, SourceUnreadable(note));
                return Ok(());
            }
        };
        let member_sha256 = hex::encode(Sha256::digest(&member.bytes));
        self.output_hasher.update(&member.bytes);
        self.append(&member.bytes).await?;
        self.written.records += member.records;
        self.place(source, member.bytes.len() as u64, member_sha256, Ok(Some(b'\n')), seen).await
    }

    /// Appends a CSV source's rows; the output's first source also gives it its header, written
    /// once at its start and in no source's range. A source whose header differs is left out
    /// (it stays pending: see [`csv`]); one that is not CSV we can split is recorded missing
    /// with the reason and left as it is.
    pub(super) async fn append_csv(
        &mut self,
        source: &ObjectRecord,
        bytes: Bytes,
        seen: &SeenAtRead,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), EngineError> {
        let parts = match csv::split(&bytes) {
            Ok(parts) => parts,
            Err(reason) => {
                self.written.not_in_format_sources += 1;
                self.record_missing(source, SourceUnreadable(format!("not compacted, left as it is: {reason}")));
                return Ok(());
            }
        };
        let Some(parts) = parts else {
            // Empty: no header, no rows, an empty range (restore gives it back empty).
            return self.place(source, 0, hex::encode(Sha256::digest(b"")), Ok(None), seen).await;
        };
        match &self.csv_header {
            Some(header) if header[..] != *parts.header => {
                self.written.deferred_sources += 1;
                info!(key = %source.key, output = %self.planned.key, "CSV header differs from the output's; the source waits for an output of its own header");
                return Ok(());
            }
            Some(_) => {}
            None => {
                // A compressed output's header is a frame of its own, in no source's range.
                let header = bytes.slice_ref(parts.header);
                let (header_length, _) = self.append_text(source, header, 0).await?;
                self.offset += header_length;
                self.csv_header = Some(parts.header.to_vec());
            }
        }
        let last_byte = parts.rows.last().copied();
        let (rows_length, rows_sha256) = self.append_text(source, bytes.slice_ref(parts.rows), source.size).await?;
        drop(bytes);
        drop(permit);
        // A CSV without a final newline gets one, outside its range, as any line file.
        self.place(source, rows_length, rows_sha256, Ok(last_byte), seen).await
    }

    /// Appends an NDJSON source; its lines that are not JSON go to the output's side file
    /// instead, each logged with the source and line number (see [`ndjson`]).
    pub(super) async fn append_ndjson(
        &mut self,
        source: &ObjectRecord,
        bytes: Bytes,
        seen: &SeenAtRead,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), EngineError> {
        let (kept, invalid) = ndjson::check(&bytes);
        for line in &invalid {
            warn!(key = %source.key, line = line.number, output = %self.planned.key, "line is not JSON; set aside in the side file");
            let entry = ndjson::SideEntry::of(&source.key, line);
            serde_json::to_writer(&mut self.side_file, &entry).map_err(|error| {
                StoreError::backend(
                    source.bucket.as_str(),
                    source.key.as_str(),
                    format!("cannot record an invalid line: {error}"),
                )
            })?;
            self.side_file.push(b'\n');
        }
        self.written.invalid_lines += invalid.len() as u64;
        let last_byte = kept.last().copied();
        let kept = match kept {
            // Borrowed only when every line stays: the whole source.
            std::borrow::Cow::Borrowed(_) => bytes.clone(),
            std::borrow::Cow::Owned(kept) => Bytes::from(kept),
        };
        drop(invalid);
        let (length, kept_sha256) = self.append_text(source, kept, source.size).await?;
        drop(bytes);
        drop(permit);
        self.place(source, length, kept_sha256, Ok(last_byte), seen).await
    }
}

/// Sources larger than this are compressed off the async threads: a frame of a few MiB takes
/// milliseconds of CPU, which would stall the other outputs' reads and uploads.
const COMPRESS_INLINE_MAX_BYTES: usize = 256 * 1024;

impl OutputWriter<'_> {
    /// Appends `text` (a source's text as its format made it) as the output's compression
    /// wants: as it is, or as one frame whose length never equals `source_size` (see
    /// [`compress_frame`]). Returns the length and sha256 of what was appended: the source's
    /// range.
    async fn append_text(
        &mut self,
        source: &ObjectRecord,
        text: Bytes,
        source_size: u64,
    ) -> Result<(u64, String), EngineError> {
        let compression = self.planned.class.compression;
        let appended = if compression == Compression::None {
            text
        } else if text.len() <= COMPRESS_INLINE_MAX_BYTES {
            Bytes::from(compress_frame(compression, &text, source_size).map_err(|error| frame_error(source, error))?)
        } else {
            let compressed = tokio::task::spawn_blocking(move || compress_frame(compression, &text, source_size));
            let frame = compressed
                .await
                .map_err(|join_error| {
                    StoreError::backend(
                        source.bucket.as_str(),
                        source.key.as_str(),
                        format!("compress task failed: {join_error}"),
                    )
                })?
                .map_err(|error| frame_error(source, error))?;
            Bytes::from(frame)
        };
        self.output_hasher.update(&appended);
        self.append(&appended).await?;
        Ok((appended.len() as u64, hex::encode(Sha256::digest(&appended))))
    }

    /// Appends a source of a compressed `concat` or `bytes` output: its bytes as one frame, or
    /// as they are when their content is compressed already (gzip under a `.json` name): never
    /// compressed twice. Its range is then as long as the source, which no frame is.
    pub(super) async fn append_compressed(
        &mut self,
        source: &ObjectRecord,
        bytes: Bytes,
        seen: &SeenAtRead,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), EngineError> {
        let (length, sha256, text_end) = match compressed_by_content(&bytes) {
            Some(kind) => {
                info!(key = %source.key, kind, output = %self.planned.key, "source is compressed already; it goes in as it is");
                self.written.already_compressed_sources += 1;
                let sha256 = hex::encode(Sha256::digest(&bytes));
                self.output_hasher.update(&bytes);
                self.append(&bytes).await?;
                // Its text's last byte is not known without decompressing it: no separator.
                (bytes.len() as u64, sha256, Ok(None))
            }
            None => {
                let mut tail = TextTail::new(&self.planned.class);
                tail.update(&bytes);
                let (length, sha256) = self.append_text(source, bytes, source.size).await?;
                (length, sha256, tail.finish())
            }
        };
        drop(permit);
        self.place(source, length, sha256, text_end, seen).await
    }
}

fn frame_error(source: &ObjectRecord, error: std::io::Error) -> StoreError {
    StoreError::backend(source.bucket.as_str(), source.key.as_str(), format!("cannot compress it: {error}"))
}
