//! The ingest Lambda's handler: an S3 event in, manifest records out. No listing, ever.
//!
//! It accepts the three ways S3 events arrive — a direct S3 notification, SQS messages that
//! carry them (with partial batch failures), and EventBridge "Object Created"/"Object Deleted"
//! events — and hands them to the engine. The handler takes the engine, so tests run it on any
//! backend; `main.rs` builds the AWS one once per cold start.
//!
//! **An SQS batch is one engine call.** Every message is decoded first, then all their events
//! go to [`Compactor::ingest_all_decoded`] together, so the manifest sees one batch (one SQLite
//! transaction; on DynamoDB the object writes side by side, then one read of each partition's
//! flag per batch instead of one per object) instead of one call per message. If that call
//! fails, each message is ingested again on its own to tell which ones fail: only those are
//! reported in `batchItemFailures` (every record is idempotent, so the messages recorded
//! twice on that path change nothing; they count as stale the second time). A malformed
//! message is a failure from the start.
//!
//! A failed SQS message returns to the queue, and after the queue's `maxReceiveCount` moves
//! to the dead-letter queue, where it waits for a person — never dropped. A malformed direct or
//! EventBridge event fails the invocation for the same reason (Lambda's async retries, then
//! its on-failure destination).
//!
//! Every invocation prints one line of CloudWatch metrics ([`metric`]) in the embedded metric
//! format.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use compactor::aws::AwsSettings;
use compactor::config::{Config, ConfigError, RawConfig};
use compactor::engine::{Compactor, EngineError, IngestReport, SkipReason};
use compactor::event::{decode_json, decode_value, Decoded, EventError};
use compactor::metrics::{Emf, MetricSet, Unit};
use lambda_runtime::Diagnostic;
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info_span, warn, Instrument};

/// The metric names ingest-fn publishes (the SAM template's alarms and dashboard use them).
pub mod metric {
    /// Object events received (created and removed), skipped ones included.
    pub const EVENTS: &str = "EventsReceived";
    /// Objects recorded as pending (new, or a newer version of a pending one); on DynamoDB,
    /// every event appended to the arrival records, which the seal sorts out when it reads them.
    pub const OBJECTS_RECORDED: &str = "ObjectsRecorded";
    pub const BYTES_RECORDED: &str = "BytesRecorded";
    /// Pending objects taken out of the plan by an ObjectRemoved event.
    pub const OBJECTS_REMOVED: &str = "ObjectsRemoved";
    /// Replays and out-of-order events that changed nothing.
    pub const STALE_EVENTS: &str = "StaleEvents";
    /// Skipped events, all reasons together; `Skipped<Reason>` per reason.
    pub const OBJECTS_SKIPPED: &str = "ObjectsSkipped";
    /// SQS messages reported as batch item failures.
    pub const MESSAGES_FAILED: &str = "IngestMessagesFailed";
}

/// The metric for one skip reason: `SkippedTooLarge`, `SkippedOutOfLayout`, …
pub fn skipped_metric(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::FolderMarker => "SkippedFolderMarker",
        SkipReason::TooLarge => "SkippedTooLarge",
        SkipReason::OutOfLayout => "SkippedOutOfLayout",
        SkipReason::UnsupportedFormat => "SkippedUnsupportedFormat",
        SkipReason::UnderDestination => "SkippedUnderDestination",
        SkipReason::OtherBucket => "SkippedOtherBucket",
        SkipReason::OutsideSourcePrefix => "SkippedOutsideSourcePrefix",
        SkipReason::NameNotUtf8 => "SkippedNameNotUtf8",
    }
}

/// The reasons an event can be skipped for. Not `NameNotUtf8`: only a local directory's
/// listing meets a name that is not UTF-8, and an S3 event's key always is.
const SKIP_REASONS: [SkipReason; 7] = [
    SkipReason::FolderMarker,
    SkipReason::TooLarge,
    SkipReason::OutOfLayout,
    SkipReason::UnsupportedFormat,
    SkipReason::UnderDestination,
    SkipReason::OtherBucket,
    SkipReason::OutsideSourcePrefix,
];

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("malformed event: {0}")]
    Malformed(#[from] EventError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl IngestError {
    /// The error type Lambda reports: lets alarms tell bad input from failures.
    pub fn error_type(&self) -> &'static str {
        match self {
            IngestError::Malformed(_) => "MalformedEvent",
            IngestError::Engine(error) if error.is_bad_input() => "BadInput",
            IngestError::Engine(_) => "IngestFailed",
        }
    }
}

impl From<IngestError> for Diagnostic {
    fn from(error: IngestError) -> Diagnostic {
        Diagnostic { error_type: error.error_type().to_string(), error_message: error.to_string() }
    }
}

/// What one invocation did: the counts, and for an SQS batch the messages to retry. (Not the
/// manifest's per-object `compactor::ports::IngestOutcome`.)
#[derive(Debug, Default)]
pub struct InvocationReport {
    pub report: IngestReport,
    /// SQS message ids whose processing failed.
    pub failed_message_ids: Vec<String>,
    pub is_sqs: bool,
}

/// The Lambda response: `{"batchItemFailures": [...]}` for SQS (what the event source mapping
/// with `ReportBatchItemFailures` reads), the counts otherwise.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum IngestResponse {
    Batch(SqsBatchResponse),
    Counts(IngestReport),
}

impl InvocationReport {
    pub fn response(&self) -> IngestResponse {
        if self.is_sqs {
            let mut batch = SqsBatchResponse::default();
            for message_id in &self.failed_message_ids {
                batch.add_failure(message_id.clone());
            }
            IngestResponse::Batch(batch)
        } else {
            IngestResponse::Counts(self.report.clone())
        }
    }

    /// The invocation's CloudWatch metrics; every name is always present (zeros included), so
    /// dashboards and alarms see a value for every invocation.
    pub fn metrics(&self) -> MetricSet {
        let report = &self.report;
        let mut metrics = MetricSet::default();
        metrics.add(metric::EVENTS, Unit::Count, report.events);
        metrics.add(metric::OBJECTS_RECORDED, Unit::Count, report.recorded + report.updated + report.appended);
        metrics.add(metric::BYTES_RECORDED, Unit::Bytes, report.bytes_recorded);
        metrics.add(metric::OBJECTS_REMOVED, Unit::Count, report.removed);
        metrics.add(metric::STALE_EVENTS, Unit::Count, report.stale);
        metrics.add(metric::OBJECTS_SKIPPED, Unit::Count, report.skipped_total());
        for reason in SKIP_REASONS {
            metrics.add(skipped_metric(reason), Unit::Count, report.skipped.get(&reason).copied().unwrap_or(0));
        }
        metrics.add(metric::MESSAGES_FAILED, Unit::Count, self.failed_message_ids.len() as u64);
        metrics
    }
}

/// ingest-fn's configuration besides the engine's and AWS's, validated once at cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSettings {
    /// `COMPACTOR_METRICS_NAMESPACE`: where the metrics go (default `S3Compactor`).
    pub metrics_namespace: String,
}

impl IngestSettings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<IngestSettings, ConfigError> {
        Ok(IngestSettings { metrics_namespace: compactor::metrics::namespace_from_lookup(lookup)? })
    }
}

/// Everything ingest-fn reads from its environment, validated once at cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    pub engine: Config,
    pub aws: AwsSettings,
    pub ingest: IngestSettings,
}

impl FunctionConfig {
    /// Reads every variable through `lookup` (the environment in `main`; the SAM template's
    /// values in its test).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<FunctionConfig, ConfigError> {
        Ok(FunctionConfig {
            engine: RawConfig::from_lookup(&lookup).validate()?,
            aws: AwsSettings::from_lookup(&lookup)?,
            ingest: IngestSettings::from_lookup(&lookup)?,
        })
    }
}

/// The ingest function: the engine and where its metrics go.
#[derive(Debug, Clone)]
pub struct IngestFunction {
    pub compactor: Compactor,
    pub metrics: Emf,
}

fn is_sqs_batch(event: &Value) -> bool {
    event
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first())
        .and_then(|record| record.get("eventSource"))
        .and_then(Value::as_str)
        == Some("aws:sqs")
}

impl IngestFunction {
    /// Handles one invocation and prints its metrics.
    pub async fn handle(&self, event: Value) -> Result<InvocationReport, IngestError> {
        let invocation = if is_sqs_batch(&event) {
            let batch: SqsEvent = serde_json::from_value(event)
                .map_err(|error| EventError::Malformed { envelope: "SQS", reason: error.to_string() })?;
            self.handle_batch(batch).await
        } else {
            let decoded = decode_value(event)?;
            let report = self.compactor.ingest_decoded(&decoded).await?;
            InvocationReport { report, failed_message_ids: vec![], is_sqs: false }
        };
        invocation.report.log();
        self.metrics.emit(&invocation.metrics(), Utc::now());
        Ok(invocation)
    }

    async fn handle_batch(&self, batch: SqsEvent) -> InvocationReport {
        let mut invocation = InvocationReport { is_sqs: true, ..Default::default() };
        let mut message_ids: Vec<String> = Vec::with_capacity(batch.records.len());
        let mut decoded_messages: Vec<Decoded> = Vec::with_capacity(batch.records.len());
        for message in batch.records {
            let message_id = message.message_id.unwrap_or_default();
            match decode_json(message.body.as_deref().unwrap_or_default()) {
                Ok(decoded) => {
                    message_ids.push(message_id);
                    decoded_messages.push(decoded);
                }
                Err(failure) => {
                    error!(message_id = %message_id, error = %failure, error_type = "MalformedEvent", "message failed; SQS will retry it, then dead-letter it");
                    invocation.failed_message_ids.push(message_id);
                }
            }
        }
        match self.compactor.ingest_all_decoded(&decoded_messages).await {
            Ok(report) => invocation.report = report,
            Err(batch_failure) => {
                warn!(messages = decoded_messages.len(), error = %batch_failure, "the batch failed; ingesting each message on its own to find which fail");
                for (message_id, decoded) in message_ids.iter().zip(&decoded_messages) {
                    let span = info_span!("sqs_message", message_id = %message_id);
                    match self.compactor.ingest_decoded(decoded).instrument(span).await {
                        Ok(report) => invocation.report.merge(&report),
                        Err(failure) => {
                            let failure = IngestError::from(failure);
                            error!(message_id = %message_id, error = %failure, error_type = failure.error_type(), "message failed; SQS will retry it, then dead-letter it");
                            invocation.failed_message_ids.push(message_id.clone());
                        }
                    }
                }
            }
        }
        invocation
    }
}
