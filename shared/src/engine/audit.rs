//! Audit: what was compacted, per partition, per output and per source object, down to the
//! byte range that holds it.

use serde::Serialize;

use super::{Compactor, EngineError};
use crate::domain::partition::PartitionKey;
use crate::domain::records::{ObjectRecord, OutputRecord, OutputState, PartitionRecord, PartitionState};

/// Totals over partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    pub partitions_open: u64,
    pub partitions_sealing: u64,
    pub partitions_sealed: u64,
    pub pending_objects: u64,
    pub pending_bytes: u64,
    pub compacted_objects: u64,
    pub compacted_bytes: u64,
    pub committed_outputs: u64,
}

impl AuditSummary {
    pub fn of(partitions: &[PartitionRecord]) -> Self {
        let mut summary = AuditSummary::default();
        for partition in partitions {
            match partition.state {
                PartitionState::Open => summary.partitions_open += 1,
                PartitionState::Sealing => summary.partitions_sealing += 1,
                PartitionState::Sealed => summary.partitions_sealed += 1,
            }
            summary.pending_objects += partition.pending_objects;
            summary.pending_bytes += partition.pending_bytes;
            summary.compacted_objects += partition.compacted_objects;
            summary.compacted_bytes += partition.compacted_bytes;
            summary.committed_outputs += partition.committed_outputs;
        }
        summary
    }
}

/// One source object and the output that holds it.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectAudit {
    pub object: ObjectRecord,
    /// The output its placement names, when it has one.
    pub output: Option<OutputRecord>,
}

/// One output and its sources, by offset.
#[derive(Debug, Clone, Serialize)]
pub struct OutputAudit {
    pub output: OutputRecord,
    pub sources: Vec<ObjectRecord>,
}

const PAGE: usize = 1000;

impl Compactor {
    /// Every partition record, in (bucket, path) order.
    pub async fn audit_partitions(&self) -> Result<Vec<PartitionRecord>, EngineError> {
        let mut partitions: Vec<PartitionRecord> = Vec::new();
        loop {
            let page = self.manifest.partitions(partitions.last().map(|record| &record.key), PAGE).await?;
            let page_length = page.len();
            partitions.extend(page);
            if page_length < PAGE {
                return Ok(partitions);
            }
        }
    }

    /// A source object's record and the output holding it.
    pub async fn audit_object(&self, bucket: &str, key: &str) -> Result<ObjectAudit, EngineError> {
        let object = self.manifest.object(bucket, key).await?.ok_or_else(|| {
            EngineError::InvalidInput(format!(
                "s3://{bucket}/{key} is not in the manifest: check the key (it is case-sensitive and not URL-encoded), \
                 or ingest it first"
            ))
        })?;
        let output = match &object.placement {
            Some(placement) => self.manifest.output(&self.config.dest_bucket, &placement.output_key).await?,
            None => None,
        };
        Ok(ObjectAudit { object, output })
    }

    /// An output's record and every source it holds.
    pub async fn audit_output(&self, bucket: &str, key: &str) -> Result<OutputAudit, EngineError> {
        let output = self.manifest.output(bucket, key).await?.ok_or_else(|| {
            EngineError::InvalidInput(format!(
                "s3://{bucket}/{key} is not an output in the manifest: list outputs with `audit --partition PATH`"
            ))
        })?;
        let sources = self.output_sources(&output).await?;
        Ok(OutputAudit { output, sources })
    }

    /// A partition's outputs.
    pub async fn audit_partition_outputs(
        &self,
        partition: &PartitionKey,
        state: Option<OutputState>,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        Ok(self.manifest.outputs(partition, state).await?)
    }

    pub(crate) async fn output_sources(&self, output: &OutputRecord) -> Result<Vec<ObjectRecord>, EngineError> {
        let mut sources: Vec<ObjectRecord> = Vec::new();
        loop {
            let after = sources
                .last()
                .and_then(|source| source.placement.as_ref().map(|placement| (placement.offset, source.key.as_str())));
            let page = self.manifest.output_sources(&output.bucket, &output.key, after, PAGE).await?;
            let page_length = page.len();
            sources.extend(page);
            if page_length < PAGE {
                return Ok(sources);
            }
        }
    }
}
