//! Plan: a dry run of the seal. Per partition, which objects go to which output, and the
//! requests the seal will make with their price. Nothing is written.
//!
//! Pending records are paged through the seal's [`Packer`] in key order, as the seal pages
//! them, and each output is summarised as it closes: plan holds at most one open output's
//! keys and sizes (the packer's own bound), never a partition's records.

use serde::Serialize;

use super::{Compactor, EngineError};
use crate::config::ExpiryMode;
use crate::domain::cost::RequestCounts;
use crate::domain::format::{describe, FormatRules};
use crate::domain::partition::PartitionKey;
use crate::domain::plan::{Packer, PlanInput, PlannedOutput};
use crate::domain::records::ObjectState;
use crate::ports::{ObjectQuery, MAX_KEYS_PER_DELETE};

/// One planned output, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct OutputSummary {
    pub key: String,
    pub objects: u64,
    pub source_bytes: u64,
    /// The format its sources get and why (`cloudtrail .ndjson.gz (COMPACTOR_FORMATS
    /// AWSLogs/=cloudtrail)`): every source of an output has the same class.
    pub format: String,
}

impl OutputSummary {
    fn of(output: PlannedOutput<PlanInput>, formats: &FormatRules) -> OutputSummary {
        let format = output.sources.first().map(|source| describe(&source.key, formats)).unwrap_or_default();
        OutputSummary {
            key: output.key,
            objects: output.sources.len() as u64,
            source_bytes: output.source_bytes,
            format,
        }
    }
}

/// The dry run of one partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionPlan {
    pub partition: PartitionKey,
    pub pending_objects: u64,
    pub pending_bytes: u64,
    /// Keys are named for the generation the next seal will take.
    pub outputs: Vec<OutputSummary>,
    pub refused_objects: u64,
    pub requests: RequestCounts,
    pub cost_usd: f64,
}

/// The dry run of a seal, with what a list-and-concatenate job would request for the same
/// objects, for comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanReport {
    pub partitions: Vec<PartitionPlan>,
    pub requests: RequestCounts,
    pub cost_usd: f64,
    pub listing_job_requests: RequestCounts,
    pub listing_job_cost_usd: f64,
}

const PAGE: usize = 1000;

impl Compactor {
    /// Plans the seal of `partitions` (every closed partition with pending objects when `None`).
    pub async fn plan(&self, partitions: Option<Vec<PartitionKey>>) -> Result<PlanReport, EngineError> {
        let partitions = match partitions {
            Some(partitions) => partitions,
            None => self
                .manifest
                .closed_partitions(self.clock.now(), usize::MAX)
                .await?
                .into_iter()
                .map(|record| record.key)
                .collect(),
        };
        let mut report = PlanReport::default();
        for partition in partitions {
            let record =
                self.manifest.partition(&partition).await?.ok_or_else(|| {
                    EngineError::InvalidInput(format!("partition {partition} is not in the manifest"))
                })?;
            let mut packer: Packer<PlanInput> =
                Packer::new(&partition.path, record.generation + 1, self.config.plan_settings());
            let mut outputs = Vec::new();
            let (mut pending_objects, mut pending_bytes, mut refused_objects) = (0u64, 0u64, 0u64);
            let mut start_after: Option<String> = None;
            loop {
                let query = ObjectQuery {
                    start_after: start_after.take(),
                    limit: PAGE,
                    ..ObjectQuery::in_state(ObjectState::Pending)
                };
                let page = self.manifest.objects(&partition, &query).await?;
                let page_length = page.len();
                start_after = page.last().map(|object| object.key.clone());
                for object in page {
                    pending_objects += 1;
                    pending_bytes += object.size;
                    match packer.push(PlanInput { key: object.key, size: object.size }) {
                        Ok(Some(output)) => outputs.push(OutputSummary::of(output, &self.config.formats)),
                        Ok(None) => {}
                        Err(_) => refused_objects += 1,
                    }
                }
                if page_length < PAGE {
                    break;
                }
            }
            outputs.extend(packer.finish().into_iter().map(|output| OutputSummary::of(output, &self.config.formats)));
            let mut requests = RequestCounts::default();
            let mut planned_objects = 0u64;
            for output in &outputs {
                let objects = output.objects;
                planned_objects += objects;
                requests.s3_get += objects;
                let size = output.source_bytes + objects;
                if size > self.config.part_bytes {
                    requests.s3_multipart_create += 1;
                    requests.s3_upload_part += size.div_ceil(self.config.part_bytes);
                    requests.s3_multipart_complete += 1;
                    requests.manifest_writes += 1; // the upload id
                } else {
                    requests.s3_put += 1;
                }
                // begin_output, commit_output; one placement, one compacted, one expiry write
                // per source.
                requests.manifest_writes += 2 + 3 * objects;
            }
            match self.config.expiry {
                ExpiryMode::Tag => {
                    requests.s3_head += planned_objects;
                    requests.s3_get_tagging += planned_objects;
                    requests.s3_put_tagging += planned_objects;
                }
                ExpiryMode::Delete => {
                    // Conditional on the recorded ETag, 1,000 keys a request, across outputs.
                    requests.s3_delete += planned_objects.div_ceil(MAX_KEYS_PER_DELETE as u64);
                }
                ExpiryMode::None => {}
            }
            // acquire and release; the pending objects read back in pages.
            requests.manifest_writes += 2;
            requests.manifest_reads += 2 + planned_objects;
            let cost_usd = requests.cost_usd();
            report.requests += requests;
            report.listing_job_requests += listing_job_requests(planned_objects, self.config.part_bytes, &outputs);
            report.partitions.push(PartitionPlan {
                partition,
                pending_objects,
                pending_bytes,
                outputs,
                refused_objects,
                requests,
                cost_usd,
            });
        }
        report.cost_usd = report.requests.cost_usd();
        report.listing_job_cost_usd = report.listing_job_requests.cost_usd();
        Ok(report)
    }
}

/// What the reference list-and-concatenate job asks for the same objects: a LIST per 1,000
/// keys, a GET per object, the same uploads, and a DELETE per source (no manifest).
fn listing_job_requests(objects: u64, part_bytes: u64, summaries: &[OutputSummary]) -> RequestCounts {
    let mut requests = RequestCounts {
        s3_list: objects.div_ceil(1000).max(u64::from(objects > 0)),
        s3_get: objects,
        s3_delete: objects,
        ..Default::default()
    };
    for summary in summaries {
        if summary.source_bytes > part_bytes {
            requests.s3_multipart_create += 1;
            requests.s3_upload_part += summary.source_bytes.div_ceil(part_bytes);
            requests.s3_multipart_complete += 1;
        } else {
            requests.s3_put += 1;
        }
    }
    requests
}
