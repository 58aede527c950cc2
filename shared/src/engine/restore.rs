//! Restore: the original bytes of a compacted source, read back from its output by byte range
//! and checked against the sha256 recorded at seal time.
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
use crate::domain::format::{classify, cloudtrail, csv, FormatMode};
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
}
