//! The seal Lambda's handler.
//!
//! Three kinds of invocation:
//! - **schedule** (an EventBridge "Scheduled Event", or `{}`): seal every closed partition with
//!   work. When there are more than `fan_out_threshold` of them and a queue is configured, it
//!   sends one SQS message per partition instead and returns: Lambda's concurrency on that
//!   queue is the distributed engine, its dead-letter queue catches what keeps failing.
//! - **request** (`{"partitions": ["logs/2024/01/14/", …]}`, `{"date": "2024-01-14"}` or
//!   `{"from": "2024-01-01", "to": "2024-01-31"}`): backfill and reseal those partitions, closed
//!   or not (fanned out the same way when there are many).
//! - **worker** (an SQS batch of the messages above): seals each message's partitions, and
//!   reports a message as a batch item failure when its partition failed or the deadline came
//!   first, so SQS delivers it again.
//!
//! Every run watches the Lambda's remaining time and stops at an output boundary
//! `deadline_margin` before the end; the partition is released and the next run goes on.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use compactor::domain::partition::PartitionKey;
use compactor::engine::seal::{SealOptions, SealReport};
use compactor::engine::{Compactor, EngineError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{error, info, info_span, Instrument};

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("fan-out failed: {0}; the partitions stay pending and the next scheduled run retries")]
    FanOut(String),
}

impl SealError {
    pub fn error_type(&self) -> &'static str {
        match self {
            SealError::BadRequest(_) => "BadRequest",
            SealError::Engine(error) if error.is_bad_input() => "BadInput",
            SealError::Engine(_) => "SealFailed",
            SealError::FanOut(_) => "FanOutFailed",
        }
    }
}

/// One fan-out message: the partitions one worker invocation seals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealMessage {
    pub partitions: Vec<PartitionKey>,
}

/// Sends fan-out messages (SQS in production).
#[async_trait]
pub trait FanOut: Send + Sync + std::fmt::Debug {
    async fn send(&self, messages: &[SealMessage]) -> Result<(), String>;
}

/// What was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealRequest {
    Schedule,
    Partitions(Vec<String>),
    Dates { from: NaiveDate, to: NaiveDate },
    Worker(Vec<(String, String)>),
}

/// Reads an invocation's event.
pub fn parse_request(event: &Value) -> Result<SealRequest, SealError> {
    let bad = |message: String| SealError::BadRequest(message);
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        let messages = records
            .iter()
            .map(|record| {
                let id = record.get("messageId").and_then(Value::as_str).unwrap_or_default().to_string();
                let body = record.get("body").and_then(Value::as_str).unwrap_or_default().to_string();
                (id, body)
            })
            .collect();
        return Ok(SealRequest::Worker(messages));
    }
    if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || event.as_object().is_some_and(|fields| fields.is_empty())
        || event.is_null()
    {
        return Ok(SealRequest::Schedule);
    }
    if let Some(partitions) = event.get("partitions") {
        let paths: Option<Vec<String>> = partitions
            .as_array()
            .map(|items| items.iter().filter_map(|item| item.as_str().map(str::to_string)).collect());
        return match paths {
            Some(paths) if !paths.is_empty() && paths.len() == partitions.as_array().map_or(0, Vec::len) => {
                Ok(SealRequest::Partitions(paths))
            }
            _ => Err(bad(
                "\"partitions\" must be a non-empty list of partition paths such as \"logs/2024/01/14/\"".into()
            )),
        };
    }
    let date = |field: &str| -> Result<Option<NaiveDate>, SealError> {
        match event.get(field) {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
                .map(Some)
                .ok_or_else(|| bad(format!("\"{field}\" must be a date such as \"2024-01-14\""))),
        }
    };
    if let Some(day) = date("date")? {
        return Ok(SealRequest::Dates { from: day, to: day });
    }
    match (date("from")?, date("to")?) {
        (Some(from), Some(to)) if from <= to => Ok(SealRequest::Dates { from, to }),
        (Some(_), Some(_)) => Err(bad("\"from\" must not be after \"to\"".into())),
        (Some(_), None) | (None, Some(_)) => Err(bad("give both \"from\" and \"to\"".into())),
        (None, None) => Err(bad(format!(
            "unknown request {}: send a schedule event, {{\"partitions\": [...]}}, {{\"date\": \"YYYY-MM-DD\"}} or \
             {{\"from\": ..., \"to\": ...}}",
            describe(event)
        ))),
    }
}

fn describe(event: &Value) -> String {
    match event.as_object() {
        Some(fields) => format!("with fields {}", fields.keys().cloned().collect::<Vec<_>>().join(", ")),
        None => "that is not a JSON object".into(),
    }
}

/// The seal function: the engine, the optional fan-out queue and the timing rules.
#[derive(Debug, Clone)]
pub struct SealFunction {
    pub compactor: Compactor,
    pub fan_out: Option<Arc<dyn FanOut>>,
    /// Fan out when a run has more partitions than this.
    pub fan_out_threshold: usize,
    /// Stop starting outputs this long before the Lambda's deadline.
    pub deadline_margin: Duration,
}

impl SealFunction {
    /// Handles one invocation that must end by `lambda_deadline`.
    pub async fn handle(&self, event: Value, lambda_deadline: DateTime<Utc>) -> Result<Value, SealError> {
        let deadline = lambda_deadline - self.deadline_margin;
        match parse_request(&event)? {
            SealRequest::Schedule => {
                let now = self.compactor.clock().now();
                // Keys only: counting each partition's objects here would cost a read of every
                // object item on DynamoDB, and the seal reads them anyway.
                let keys: Vec<PartitionKey> =
                    self.compactor.manifest().closed_partition_keys(now, 100_000).await.map_err(EngineError::from)?;
                self.seal_or_fan_out(keys, deadline).await
            }
            SealRequest::Partitions(paths) => {
                let bucket = &self.compactor.config().source_bucket;
                let keys = paths
                    .iter()
                    .map(|path| {
                        let path = path.trim_start_matches('/');
                        PartitionKey::new(
                            bucket.clone(),
                            if path.ends_with('/') { path.to_string() } else { format!("{path}/") },
                        )
                    })
                    .collect();
                self.seal_or_fan_out(keys, deadline).await
            }
            SealRequest::Dates { from, to } => {
                let start = Utc.from_utc_datetime(&from.and_hms_opt(0, 0, 0).expect("midnight exists"));
                let end = Utc.from_utc_datetime(&to.and_hms_opt(0, 0, 0).expect("midnight exists")) + Duration::days(1);
                // An explicit request is rare: reading the partition records to find the dates
                // is acceptable here, never on the schedule's path.
                let keys: Vec<PartitionKey> = self
                    .compactor
                    .audit_partitions()
                    .await?
                    .into_iter()
                    .filter(|record| record.period_start < end && record.period_end > start)
                    .map(|record| record.key)
                    .collect();
                self.seal_or_fan_out(keys, deadline).await
            }
            SealRequest::Worker(messages) => Ok(self.work(messages, deadline).await),
        }
    }

    async fn seal_or_fan_out(&self, keys: Vec<PartitionKey>, deadline: DateTime<Utc>) -> Result<Value, SealError> {
        if let Some(fan_out) = &self.fan_out {
            if keys.len() > self.fan_out_threshold {
                let messages: Vec<SealMessage> =
                    keys.iter().map(|key| SealMessage { partitions: vec![key.clone()] }).collect();
                fan_out.send(&messages).await.map_err(SealError::FanOut)?;
                info!(partitions = keys.len(), "fanned partitions out to seal workers");
                return Ok(json!({ "fanned_out": keys.len() }));
            }
        }
        if keys.is_empty() {
            return Ok(json!({ "partitions_sealed": 0 }));
        }
        let options = SealOptions { partitions: Some(keys), deadline: Some(deadline), ..Default::default() };
        let report = self.compactor.seal_closed(&options).await?;
        Ok(summary(&report))
    }

    async fn work(&self, messages: Vec<(String, String)>, deadline: DateTime<Utc>) -> Value {
        let mut failures = Vec::new();
        for (message_id, body) in messages {
            let span = info_span!("seal_message", message_id = %message_id);
            let result = async {
                let message: SealMessage = serde_json::from_str(&body)
                    .map_err(|error| SealError::BadRequest(format!("message body is not a seal message: {error}")))?;
                let options = SealOptions {
                    partitions: Some(message.partitions),
                    deadline: Some(deadline),
                    ..Default::default()
                };
                Ok::<SealReport, SealError>(self.compactor.seal_closed(&options).await?)
            }
            .instrument(span)
            .await;
            let retry = match &result {
                Ok(report) => {
                    report.partitions_failed > 0 || report.stopped_at_deadline || report.partitions_locked > 0
                }
                Err(failure) => {
                    error!(message_id = %message_id, error = %failure, "seal message failed; SQS will retry it, then dead-letter it");
                    true
                }
            };
            if retry {
                failures.push(json!({ "itemIdentifier": message_id }));
            }
        }
        json!({ "batchItemFailures": failures })
    }
}

fn summary(report: &SealReport) -> Value {
    json!({
        "partitions_sealed": report.partitions_sealed,
        "partitions_left_open": report.partitions_left_open,
        "partitions_locked": report.partitions_locked,
        "partitions_failed": report.partitions_failed,
        "outputs_committed": report.outputs_committed,
        "objects_compacted": report.objects_compacted,
        "source_bytes": report.source_bytes,
        "copied_sources": report.copied_sources,
        "copied_bytes": report.copied_bytes,
        "stopped_at_deadline": report.stopped_at_deadline,
        "failures": report.failures,
    })
}

/// Sending fan-out messages to SQS.
pub mod sqs {
    use async_trait::async_trait;

    use super::{FanOut, SealMessage};

    /// Fan-out through an SQS queue that seal-fn itself consumes.
    #[derive(Debug, Clone)]
    pub struct SqsFanOut {
        pub client: aws_sdk_sqs::Client,
        pub queue_url: String,
    }

    #[async_trait]
    impl FanOut for SqsFanOut {
        async fn send(&self, messages: &[SealMessage]) -> Result<(), String> {
            send_batches(&self.client, &self.queue_url, messages).await
        }
    }

    /// Sends the messages, ten per SendMessageBatch (SQS's maximum); fails if any entry failed,
    /// after which the scheduled run retries (sealing is idempotent, duplicates are harmless: a
    /// partition sealed twice the second time finds nothing to do).
    pub async fn send_batches(
        client: &aws_sdk_sqs::Client,
        queue_url: &str,
        messages: &[SealMessage],
    ) -> Result<(), String> {
        for (batch_index, batch) in messages.chunks(10).enumerate() {
            let mut request = client.send_message_batch().queue_url(queue_url);
            for (index, message) in batch.iter().enumerate() {
                let body = serde_json::to_string(message).map_err(|error| error.to_string())?;
                let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{batch_index}-{index}"))
                    .message_body(body)
                    .build()
                    .map_err(|error| error.to_string())?;
                request = request.entries(entry);
            }
            let response = request.send().await.map_err(|error| format!("SendMessageBatch to {queue_url}: {error}"))?;
            if !response.failed().is_empty() {
                return Err(format!("SendMessageBatch to {queue_url}: {} entries failed", response.failed().len()));
            }
        }
        Ok(())
    }
}
