//! Restore: the original bytes of a compacted source, read back from its output by byte range
//! and checked against the sha256 recorded at seal time. A Parquet source comes back as a
//! standalone Parquet file of its rows: the same schema, rows and values, not the same bytes
//! (its row groups are copied out of the output under a new footer).
//!
//! A CSV source's range is its rows: restore puts its header, the output's first bytes, back
//! in front. A source a rewriting format changed (CloudTrail to NDJSON) has its records in that range, as
//! gzip NDJSON; [`Compactor::restore_as_source`] rebuilds a `{"Records":[...]}` document of them.
//!
//! In a compressed output (its key says so: see [`compress`]) a source's range is a frame: it
//! is checked against the frame's sha256, then decompressed, and the text must come to the
//! source's size; a CSV's header is the output's first frame.
//!
//! Restore hands the bytes to the caller (a file, stdout) and never writes them back under the
//! source key: that write would raise an ObjectCreated event, and the restored object would be
//! compacted a second time.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Compactor, EngineError};
use crate::domain::format::compress::{self, framed_compression, text_key};
use crate::domain::format::{classify, cloudtrail, csv, ndjson, FormatMode};
use crate::domain::records::Placement;
use crate::domain::records::{ObjectRecord, ObjectState, OutputState};
use crate::ports::GetOptions;

impl Compactor {
    /// The original bytes of `key` (in the source bucket), out of the output that holds it.
    pub async fn restore_bytes(&self, key: &str) -> Result<(ObjectRecord, Bytes), EngineError> {
        let audit = self.audit_object(&self.config.source_bucket, key).await?;
        let object = audit.object;
        let placement = match (&object.state, &object.placement, &audit.output) {
            (ObjectState::Compacted, Some(placement), Some(output)) if output.state == OutputState::Committed => {
                placement.clone()
            }
            _ => {
                return Err(EngineError::InvalidInput(format!(
                    "s3://{}/{key} is {} and not in a committed output: nothing to restore (its original is still \
                     the source object)",
                    object.bucket, object.state
                )))
            }
        };
        let bytes = self.original_from_output(&object, &placement).await?;
        Ok((object, bytes))
    }

    /// The original bytes of the source `object`, placed at `placement` in a committed output.
    pub(crate) async fn original_from_output(
        &self,
        object: &ObjectRecord,
        placement: &Placement,
    ) -> Result<Bytes, EngineError> {
        let key = object.key.as_str();
        // A Parquet source comes back as a Parquet file of its rows (see `parquet_checks`).
        #[cfg(feature = "parquet")]
        if super::parquet_checks::is_parquet_output(&placement.output_key) {
            return self.restore_parquet(key, placement).await;
        }
        // An empty source is an empty range, which no store serves (S3 answers 416): its bytes
        // are known without reading, and still checked against the sha256 recorded for them.
        let bytes = if placement.length == 0 {
            Bytes::new()
        } else {
            let range = placement.offset..placement.offset + placement.length;
            let got = self
                .store
                .get(&self.config.dest_bucket, &placement.output_key, GetOptions { range: Some(range), if_match: None })
                .await?;
            got.bytes().await?
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if sha256 != placement.sha256 || bytes.len() as u64 != placement.length {
            return Err(EngineError::Mismatch(format!(
                "the bytes of {key} in {} do not match the sha256 recorded at seal time: run `verify` on its partition",
                placement.output_key
            )));
        }
        // A frame: its text is what the format made of the source (a range as long as the
        // source is one placed as it is, compressed already: see `compress`).
        let compression = framed_compression(&placement.output_key);
        let bytes = match compression {
            Some(compression) if placement.length != object.size => {
                let text = compress::decompress_frames(compression, &bytes, object.size).map_err(|reason| {
                    EngineError::Mismatch(format!(
                        "the frame of {key} in {} cannot be decompressed ({reason}): run `verify` on its partition",
                        placement.output_key
                    ))
                })?;
                Bytes::from(text)
            }
            _ => bytes,
        };
        // A CSV output's range is the source's rows: its header is the output's first bytes.
        let header_length = csv::header_length(object.size, bytes.len() as u64);
        if text_key(&placement.output_key).ends_with(".csv") && header_length > 0 {
            let header = self.csv_header(object, placement, header_length).await?;
            let mut whole = Vec::with_capacity(object.size as usize);
            whole.extend_from_slice(&header);
            whole.extend_from_slice(&bytes);
            return Ok(Bytes::from(whole));
        }
        // An NDJSON source with lines set aside: they are in the side file, at their offsets.
        if ndjson_lines_set_aside(&placement.output_key, bytes.len() as u64, object.size) {
            let whole = self.reassemble_ndjson(&object.key, placement, &bytes).await?;
            if whole.len() as u64 != object.size {
                return Err(EngineError::Mismatch(format!(
                    "{key} reassembled from {} and its side file is {} bytes, not {}: run `verify` on its partition",
                    placement.output_key,
                    whole.len(),
                    object.size
                )));
            }
            return Ok(Bytes::from(whole));
        }
        if compression.is_some() && bytes.len() as u64 != object.size {
            return Err(EngineError::Mismatch(format!(
                "the frame of {key} in {} decompresses to {} bytes, not its {}: run `verify` on its partition",
                placement.output_key,
                bytes.len(),
                object.size
            )));
        }
        Ok(bytes)
    }

    /// The header of a CSV output, `header_length` bytes of text: its first bytes, or in a
    /// compressed output its first frame, which ends before the source's own.
    async fn csv_header(
        &self,
        object: &ObjectRecord,
        placement: &Placement,
        header_length: u64,
    ) -> Result<Bytes, EngineError> {
        let compression = framed_compression(&placement.output_key);
        let read_bytes = match compression {
            Some(_) => compress::max_frame_bytes(header_length).min(placement.offset),
            None => header_length,
        };
        let range = Some(0..read_bytes);
        let got = self.store.get(&self.config.dest_bucket, &placement.output_key, GetOptions { range, if_match: None });
        let read = got.await?.bytes().await?;
        let Some(compression) = compression else {
            return Ok(read);
        };
        match compress::decompress_first_frame(compression, &read, header_length) {
            Ok(header) if header.len() as u64 == header_length => Ok(Bytes::from(header)),
            Ok(header) => Err(EngineError::Mismatch(format!(
                "the header frame of {} holds {} bytes, where {} needs {header_length}: run `verify` on its partition",
                placement.output_key,
                header.len(),
                object.key
            ))),
            Err(reason) => Err(EngineError::Mismatch(format!(
                "the header frame of {} cannot be decompressed ({reason}): run `verify` on its partition",
                placement.output_key
            ))),
        }
    }

    /// The source as a file of its own format: its original bytes, or for a source the
    /// configured format rewrote (CloudTrail), a document rebuilt from its records (the same
    /// records in the same order, written compactly; not the original's bytes).
    pub async fn restore_as_source(&self, key: &str) -> Result<(ObjectRecord, Bytes), EngineError> {
        let (object, bytes) = self.restore_bytes(key).await?;
        // The output's extension as well as today's configuration: a CloudTrail file sealed
        // by `concat` (before `auto` knew CloudTrail, or under another rule then) has its
        // original bytes in a `.json.gz` output, and is given back as it is.
        let in_ndjson_output =
            object.placement.as_ref().is_some_and(|placement| placement.output_key.ends_with(".ndjson.gz"));
        let rewritten = in_ndjson_output
            && classify(key, &self.config.formats).is_ok_and(|class| class.format == FormatMode::Cloudtrail);
        if !rewritten {
            return Ok((object, bytes));
        }
        let document = cloudtrail::ndjson_to_document(&bytes).map_err(|reason| {
            EngineError::Mismatch(format!(
                "{key} is configured as cloudtrail but its range is not gzip NDJSON ({reason}): was it sealed under \
                 another format? restore it without --as-source"
            ))
        })?;
        Ok((object, Bytes::from(document)))
    }

    /// A source whose invalid lines were set aside, whole again: `kept` (its range) with the
    /// lines of its output's side file put back.
    pub(crate) async fn reassemble_ndjson(
        &self,
        key: &str,
        placement: &Placement,
        kept: &[u8],
    ) -> Result<Vec<u8>, EngineError> {
        let side_key = ndjson::side_key(&placement.output_key);
        let side_file =
            self.store.get(&self.config.dest_bucket, &side_key, GetOptions::default()).await?.bytes().await?;
        ndjson::reassemble(kept, key, &side_file)
            .map_err(|reason| EngineError::Mismatch(format!("the side file {side_key} does not fit {key}: {reason}")))
    }
}

/// True when a source's text in a line output (`text_length` bytes: its range, decompressed
/// in a compressed output) is shorter than the source: `ndjson` set some of its lines aside (a
/// CSV's header, or a rewritten gzip, are told apart by extension).
pub(crate) fn ndjson_lines_set_aside(output_key: &str, text_length: u64, source_size: u64) -> bool {
    let key = text_key(output_key);
    source_size > text_length && !key.ends_with(".gz") && !key.ends_with(".csv")
}
