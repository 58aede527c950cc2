//! Restore: the original bytes of a compacted source, read back from its output by byte range
//! and checked against the sha256 recorded at seal time. A Parquet source comes back as a
//! standalone Parquet file of its rows: the same schema, rows and values, not the same bytes
//! (its row groups are copied out of the output under a new footer).
//!
//! A CSV source's range is its rows: restore puts its header, the output's first bytes, back
//! in front. A source a rewriting format changed (CloudTrail to NDJSON) has its records in that range, as
//! gzip NDJSON; [`Compactor::restore_as_source`] rebuilds a `{"Records":[...]}` document of them.
//!
//! Restore hands the bytes to the caller (a file, stdout) and never writes them back under the
//! source key: that write would raise an ObjectCreated event, and the restored object would be
//! compacted a second time.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Compactor, EngineError};
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
        // A Parquet source comes back as a Parquet file of its rows (see `parquet_checks`).
        #[cfg(feature = "parquet")]
        if super::parquet_checks::is_parquet_output(&placement.output_key) {
            let bytes = self.restore_parquet(key, &placement).await?;
            return Ok((object, bytes));
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
        // A CSV output's range is the source's rows: its header is the output's first bytes.
        let header_length = csv::header_length(object.size, placement.length);
        if placement.output_key.ends_with(".csv") && header_length > 0 {
            let got = self
                .store
                .get(
                    &self.config.dest_bucket,
                    &placement.output_key,
                    GetOptions { range: Some(0..header_length), if_match: None },
                )
                .await?;
            let header = got.bytes().await?;
            let mut whole = Vec::with_capacity(object.size as usize);
            whole.extend_from_slice(&header);
            whole.extend_from_slice(&bytes);
            return Ok((object, Bytes::from(whole)));
        }
        // An NDJSON source with lines set aside: they are in the side file, at their offsets.
        if ndjson_lines_set_aside(&placement, object.size) {
            let whole = self.reassemble_ndjson(&object.key, &placement, &bytes).await?;
            if whole.len() as u64 != object.size {
                return Err(EngineError::Mismatch(format!(
                    "{key} reassembled from {} and its side file is {} bytes, not {}: run `verify` on its partition",
                    placement.output_key,
                    whole.len(),
                    object.size
                )));
            }
            return Ok((object, Bytes::from(whole)));
        }
        Ok((object, bytes))
    }

    /// The source as a file of its own format: its original bytes, or for a source the
    /// configured format rewrote (CloudTrail), a document rebuilt from its records (the same
    /// records in the same order, written compactly; not the original's bytes).
    pub async fn restore_as_source(&self, key: &str) -> Result<(ObjectRecord, Bytes), EngineError> {
        let (object, bytes) = self.restore_bytes(key).await?;
        let rewritten = classify(key, &self.config.formats).is_ok_and(|class| class.format == FormatMode::Cloudtrail);
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

/// True when a source's range in a plain line output is shorter than the source: `ndjson` set
/// some of its lines aside (a CSV's header, or a rewritten gzip, are told apart by extension).
pub(crate) fn ndjson_lines_set_aside(placement: &Placement, source_size: u64) -> bool {
    let key = &placement.output_key;
    source_size > placement.length && !key.ends_with(".gz") && !key.ends_with(".csv")
}
