//! The ingest Lambda's handler: an S3 event in, manifest records out. No listing, ever.
//!
//! It accepts the three ways S3 events arrive — a direct S3 notification, SQS messages that
//! carry them (with partial batch failures), and EventBridge "Object Created"/"Object Deleted"
//! events — and hands them to [`Compactor::ingest_decoded`]. The handler takes the engine, so
//! tests run it on any backend; `main.rs` builds the AWS one once per cold start.
//!
//! A malformed SQS message is reported as a batch item failure: SQS retries it and, after the
//! queue's `maxReceiveCount`, moves it to the dead-letter queue, where it waits for a person —
//! never dropped. A malformed direct or EventBridge event fails the invocation for the same
//! reason (Lambda's async retries, then its on-failure destination).

use compactor::engine::{Compactor, EngineError, IngestReport};
use compactor::event::{decode_json, decode_value, EventError};
use serde_json::{json, Value};
use tracing::{error, info_span, Instrument};

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

/// What one invocation did: the counts, and for SQS the messages to retry.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    pub report: IngestReport,
    /// SQS message ids whose processing failed.
    pub failed_message_ids: Vec<String>,
    pub is_sqs: bool,
}

impl IngestOutcome {
    /// The Lambda response: `{"batchItemFailures": [...]}` for SQS (what the event source
    /// mapping with `ReportBatchItemFailures` reads), the counts otherwise.
    pub fn response(&self) -> Value {
        if self.is_sqs {
            let failures: Vec<Value> =
                self.failed_message_ids.iter().map(|id| json!({ "itemIdentifier": id })).collect();
            json!({ "batchItemFailures": failures })
        } else {
            serde_json::to_value(&self.report).unwrap_or(Value::Null)
        }
    }
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

/// Handles one invocation.
pub async fn handle(compactor: &Compactor, event: Value) -> Result<IngestOutcome, IngestError> {
    if !is_sqs_batch(&event) {
        let decoded = decode_value(event)?;
        let report = compactor.ingest_decoded(&decoded).await?;
        report.log();
        return Ok(IngestOutcome { report, failed_message_ids: vec![], is_sqs: false });
    }
    let records = event.get("Records").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut outcome = IngestOutcome { is_sqs: true, ..Default::default() };
    for record in records {
        let message_id = record.get("messageId").and_then(Value::as_str).unwrap_or_default().to_string();
        let body = record.get("body").and_then(Value::as_str).unwrap_or_default().to_string();
        let span = info_span!("sqs_message", message_id = %message_id);
        let result = async {
            let decoded = decode_json(&body)?;
            Ok::<_, IngestError>(compactor.ingest_decoded(&decoded).await?)
        }
        .instrument(span)
        .await;
        match result {
            Ok(report) => outcome.report.merge(&report),
            Err(failure) => {
                error!(message_id = %message_id, error = %failure, error_type = failure.error_type(), "message failed; SQS will retry it, then dead-letter it");
                outcome.failed_message_ids.push(message_id);
            }
        }
    }
    outcome.report.log();
    Ok(outcome)
}
