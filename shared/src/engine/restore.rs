//! Restore: the original bytes of a compacted source, read back from its output by byte range
//! and checked against the sha256 recorded at seal time. A Parquet source comes back as a
//! standalone Parquet file of its rows: the same schema, rows and values, not the same bytes
//! (its row groups are copied out of the output under a new footer).
//!
//! Restore hands the bytes to the caller (a file, stdout) and never writes them back under the
//! source key: that write would raise an ObjectCreated event, and the restored object would be
//! compacted a second time.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Compactor, EngineError};
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
        Ok((object, bytes))
    }
}
