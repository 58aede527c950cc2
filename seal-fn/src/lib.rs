//! The seal Lambda's handler.
//!
//! Three kinds of invocation ([`SealRequest`]):
//! - **schedule** (an EventBridge "Scheduled Event", or `{}`): seal every closed partition with
//!   work. When there are more than `fan_out_threshold` of them and a queue is configured, it
//!   sends one SQS message per partition instead and returns: Lambda's concurrency on that
//!   queue (bounded by the event source's `MaximumConcurrency`) is the distributed engine, its
//!   dead-letter queue catches what keeps failing. While the queue still holds messages, a
//!   scheduled run queues nothing: every partition it would send may already be waiting there,
//!   and a duplicate costs a worker invocation. The partitions wait for the next run after the
//!   workers are done.
//! - **request** (`{"partitions": ["logs/2024/01/14/", …]}`, `{"date": "2024-01-14"}` or
//!   `{"from": "2024-01-01", "to": "2024-01-31"}`): backfill and reseal those partitions, closed
//!   or not (fanned out the same way when there are many, whatever the queue holds: a person
//!   asked).
//! - **worker** (an SQS batch of the messages above): seals each message's partitions. Only a
//!   partition that failed makes its message a batch item failure (SQS delivers it again, then
//!   dead-letters it). A partition locked by another run, or left open at the deadline, is
//!   progress, not failure: the message succeeds and the next scheduled run goes on, so work
//!   under way never fills the dead-letter queue.
//!
//! Every run watches the Lambda's remaining time and stops at an output boundary
//! `deadline_margin` before the end; the partition is released and the next run goes on.
//!
//! Every invocation prints one line of CloudWatch metrics ([`metric`]) in the embedded metric
//! format; a scheduled run includes the **seal lag**, the age of the oldest closed partition
//! that still has work.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use compactor::aws::AwsSettings;
use compactor::config::{Config, ConfigError, RawConfig};
use compactor::domain::partition::PartitionKey;
use compactor::engine::seal::{SealOptions, SealReport};
use compactor::engine::{Compactor, EngineError};
use compactor::metrics::{Emf, MetricSet, Unit};
use lambda_runtime::Diagnostic;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{error, info, info_span, Instrument};

/// The metric names seal-fn publishes (the SAM template's alarms and dashboard use them).
pub mod metric {
    /// Age of the oldest closed partition that still has work (scheduled runs only; 0 when
    /// there is none).
    pub const SEAL_LAG: &str = "SealLagSeconds";
    /// Closed partitions with work, seen by a scheduled run.
    pub const PARTITIONS_PENDING: &str = "PartitionsPending";
    pub const PARTITIONS_FANNED_OUT: &str = "PartitionsFannedOut";
    pub const PARTITIONS_SEALED: &str = "PartitionsSealed";
    pub const PARTITIONS_LEFT_OPEN: &str = "PartitionsLeftOpen";
    pub const PARTITIONS_LOCKED: &str = "PartitionsLocked";
    pub const PARTITIONS_FAILED: &str = "PartitionsFailed";
    pub const OUTPUTS_COMMITTED: &str = "OutputsCommitted";
    pub const OUTPUTS_ABANDONED: &str = "OutputsAbandoned";
    pub const OBJECTS_SEALED: &str = "ObjectsSealed";
    pub const BYTES_SEALED: &str = "BytesSealed";
    pub const OUTPUT_BYTES: &str = "OutputBytes";
    /// Sources gone or changed when the seal read them.
    pub const SOURCES_MISSING: &str = "SourcesMissing";
    /// Expiry outcomes of compacted sources.
    pub const SOURCES_TAGGED: &str = "SourcesTagged";
    pub const SOURCES_DELETED: &str = "SourcesDeleted";
    pub const SOURCES_ALREADY_TAGGED: &str = "SourcesAlreadyTagged";
    pub const SOURCES_GONE: &str = "SourcesGone";
    /// Overwritten after they were compacted: left alone.
    pub const SOURCES_CHANGED: &str = "SourcesChanged";
    pub const SOURCES_AT_TAG_LIMIT: &str = "SourcesAtTagLimit";
    /// Fan-out messages reported as batch item failures.
    pub const MESSAGES_FAILED: &str = "SealMessagesFailed";
}

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

impl From<SealError> for Diagnostic {
    fn from(error: SealError) -> Diagnostic {
        Diagnostic { error_type: error.error_type().to_string(), error_message: error.to_string() }
    }
}

/// seal-fn's own settings, validated once at cold start.
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `SEAL_QUEUE_URL` | SQS queue of seal workers; unset: seal everything inline | unset |
/// | `SEAL_FAN_OUT_THRESHOLD` | fan out when a run has more partitions than this (0 to 100000) | `8` |
/// | `SEAL_DEADLINE_MARGIN_SECONDS` | stop starting outputs this long before the Lambda's deadline (0 to 600) | `60` |
/// | `COMPACTOR_METRICS_NAMESPACE` | CloudWatch namespace of the metrics | `S3Compactor` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealSettings {
    pub queue_url: Option<String>,
    pub fan_out_threshold: usize,
    pub deadline_margin: Duration,
    pub metrics_namespace: String,
}

pub const DEFAULT_FAN_OUT_THRESHOLD: usize = 8;
pub const DEFAULT_DEADLINE_MARGIN_SECONDS: i64 = 60;

impl SealSettings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<SealSettings, ConfigError> {
        let read = |name: &str| lookup(name).map(|value| value.trim().to_string()).filter(|value| !value.is_empty());
        let number = |name: &'static str, default: u64, max: u64| -> Result<u64, ConfigError> {
            match read(name) {
                None => Ok(default),
                Some(text) => match text.parse::<u64>() {
                    Ok(value) if value <= max => Ok(value),
                    _ => Err(ConfigError::Invalid {
                        name,
                        value: text,
                        reason: format!("give a whole number from 0 to {max}"),
                    }),
                },
            }
        };
        let fan_out_threshold = number("SEAL_FAN_OUT_THRESHOLD", DEFAULT_FAN_OUT_THRESHOLD as u64, 100_000)?;
        // Lambda runs 900 s at most: a margin over 600 s would leave a worker almost no time.
        let deadline_margin = number("SEAL_DEADLINE_MARGIN_SECONDS", DEFAULT_DEADLINE_MARGIN_SECONDS as u64, 600)?;
        Ok(SealSettings {
            queue_url: read("SEAL_QUEUE_URL"),
            fan_out_threshold: fan_out_threshold as usize,
            deadline_margin: Duration::seconds(deadline_margin as i64),
            metrics_namespace: compactor::metrics::namespace_from_lookup(&lookup)?,
        })
    }
}

/// Everything seal-fn reads from its environment, validated once at cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    pub engine: Config,
    pub aws: AwsSettings,
    pub seal: SealSettings,
}

impl FunctionConfig {
    /// Reads every variable through `lookup` (the environment in `main`; the SAM template's
    /// values in its test).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<FunctionConfig, ConfigError> {
        Ok(FunctionConfig {
            engine: RawConfig::from_lookup(&lookup).validate()?,
            aws: AwsSettings::from_lookup(&lookup)?,
            seal: SealSettings::from_lookup(&lookup)?,
        })
    }
}

/// One fan-out message: the partitions one worker invocation seals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealMessage {
    pub partitions: Vec<PartitionKey>,
}

/// The seal workers' queue (SQS in production).
#[async_trait]
pub trait FanOut: Send + Sync + std::fmt::Debug {
    async fn send(&self, messages: &[SealMessage]) -> Result<(), String>;
    /// Messages still in the queue, waiting or being worked on (approximate, as SQS counts).
    async fn queued(&self) -> Result<u64, String>;
}

/// What an invocation asks, as it arrives. Untagged: each shape is told by its fields.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SealEvent {
    Worker(SqsEvent),
    Scheduled(ScheduledEvent),
    Partitions(PartitionsRequest),
    Date(DateRequest),
    Range(RangeRequest),
    Empty(EmptyRequest),
    Null,
}

#[derive(Debug, Deserialize)]
struct ScheduledEvent {
    #[serde(rename = "detail-type")]
    #[allow(dead_code)] // its only job is to match
    detail_type: ScheduledDetailType,
}

#[derive(Debug, Deserialize)]
enum ScheduledDetailType {
    #[serde(rename = "Scheduled Event")]
    Scheduled,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionsRequest {
    partitions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DateRequest {
    date: NaiveDate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeRequest {
    from: NaiveDate,
    to: NaiveDate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyRequest {}

/// What was asked, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum SealRequest {
    Schedule,
    Partitions(Vec<String>),
    Dates { from: NaiveDate, to: NaiveDate },
    Worker(SqsEvent),
}

const PARTITIONS_HINT: &str = "\"partitions\" must be a non-empty list of partition paths such as \"logs/2024/01/14/\"";
const DATES_HINT: &str =
    "give {\"date\": \"2024-01-14\"}, or both \"from\" and \"to\", each a date such as \"2024-01-14\"";

/// Reads an invocation's event.
pub fn parse_request(event: &Value) -> Result<SealRequest, SealError> {
    let bad = |message: String| SealError::BadRequest(message);
    let Ok(parsed) = SealEvent::deserialize(event) else {
        // Untagged enums cannot say which shape was meant: the fields tell.
        let has = |field: &str| event.get(field).is_some();
        return Err(bad(if has("partitions") {
            PARTITIONS_HINT.to_string()
        } else if has("date") || has("from") || has("to") {
            DATES_HINT.to_string()
        } else {
            format!(
                "unknown request {}: send a schedule event, {{\"partitions\": [...]}}, {{\"date\": \"YYYY-MM-DD\"}} or \
                 {{\"from\": ..., \"to\": ...}}",
                describe(event)
            )
        }));
    };
    match parsed {
        SealEvent::Worker(batch) => Ok(SealRequest::Worker(batch)),
        SealEvent::Scheduled(_) | SealEvent::Empty(_) | SealEvent::Null => Ok(SealRequest::Schedule),
        SealEvent::Partitions(request) if request.partitions.is_empty() => Err(bad(PARTITIONS_HINT.to_string())),
        SealEvent::Partitions(request) => Ok(SealRequest::Partitions(request.partitions)),
        SealEvent::Date(request) => Ok(SealRequest::Dates { from: request.date, to: request.date }),
        SealEvent::Range(request) if request.from > request.to => {
            Err(bad("\"from\" must not be after \"to\"".to_string()))
        }
        SealEvent::Range(request) => Ok(SealRequest::Dates { from: request.from, to: request.to }),
    }
}

fn describe(event: &Value) -> String {
    match event.as_object() {
        Some(fields) => format!("with fields {}", fields.keys().cloned().collect::<Vec<_>>().join(", ")),
        None => "that is not a JSON object".into(),
    }
}

/// What an invocation answers.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SealResponse {
    /// To the SQS event source mapping: the messages to deliver again.
    Batch(SqsBatchResponse),
    /// To a schedule or a person: what was done.
    Summary(Value),
}

impl SealResponse {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The seal function: the engine, the optional fan-out queue, the timing rules and where the
/// metrics go.
#[derive(Debug, Clone)]
pub struct SealFunction {
    pub compactor: Compactor,
    pub fan_out: Option<Arc<dyn FanOut>>,
    /// Fan out when a run has more partitions than this.
    pub fan_out_threshold: usize,
    /// Stop starting outputs this long before the Lambda's deadline.
    pub deadline_margin: Duration,
    pub metrics: Emf,
}

impl SealFunction {
    /// Handles one invocation that must end by `lambda_deadline`, and prints its metrics.
    pub async fn handle(&self, event: Value, lambda_deadline: DateTime<Utc>) -> Result<SealResponse, SealError> {
        let mut metrics = MetricSet::default();
        let response = self.dispatch(event, lambda_deadline, &mut metrics).await;
        self.metrics.emit(&metrics, Utc::now());
        response
    }

    async fn dispatch(
        &self,
        event: Value,
        lambda_deadline: DateTime<Utc>,
        metrics: &mut MetricSet,
    ) -> Result<SealResponse, SealError> {
        let deadline = lambda_deadline - self.deadline_margin;
        match parse_request(&event)? {
            SealRequest::Schedule => {
                let now = self.compactor.clock().now();
                // Keys only: counting each partition's objects here would cost a read of every
                // object item on DynamoDB, and the seal reads them anyway.
                let keys: Vec<PartitionKey> =
                    self.compactor.manifest().closed_partition_keys(now, 100_000).await.map_err(EngineError::from)?;
                let lag = self.seal_lag(&keys, now);
                info!(partitions = keys.len(), seal_lag_seconds = lag.num_seconds(), "closed partitions with work");
                metrics.add(metric::SEAL_LAG, Unit::Seconds, lag.num_seconds().max(0) as u64);
                metrics.add(metric::PARTITIONS_PENDING, Unit::Count, keys.len() as u64);
                self.seal_or_fan_out(keys, deadline, true, metrics).await
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
                self.seal_or_fan_out(keys, deadline, false, metrics).await
            }
            SealRequest::Dates { from, to } => {
                let start = Utc.from_utc_datetime(&from.and_time(chrono::NaiveTime::MIN));
                let end = Utc.from_utc_datetime(&to.and_time(chrono::NaiveTime::MIN)) + Duration::days(1);
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
                self.seal_or_fan_out(keys, deadline, false, metrics).await
            }
            SealRequest::Worker(batch) => Ok(SealResponse::Batch(self.work(batch, deadline, metrics).await)),
        }
    }

    /// How long the oldest of `keys` (the manifest returns them earliest close first) has been
    /// closed. Every partition closes at its period's end plus the same grace.
    fn seal_lag(&self, keys: &[PartitionKey], now: DateTime<Utc>) -> Duration {
        let config = self.compactor.config();
        keys.iter()
            .filter_map(|key| config.layout.partition_of(&format!("{}_", key.path)).ok())
            .map(|partition| now - partition.period.closes_at(config.grace))
            .max()
            .unwrap_or_else(Duration::zero)
    }

    async fn seal_or_fan_out(
        &self,
        keys: Vec<PartitionKey>,
        deadline: DateTime<Utc>,
        scheduled: bool,
        metrics: &mut MetricSet,
    ) -> Result<SealResponse, SealError> {
        if let Some(fan_out) = &self.fan_out {
            if keys.len() > self.fan_out_threshold {
                if scheduled {
                    let queued = fan_out.queued().await.map_err(SealError::FanOut)?;
                    if queued > 0 {
                        info!(
                            queued,
                            partitions = keys.len(),
                            "seal workers still have messages; queuing nothing until they are done"
                        );
                        metrics.add(metric::PARTITIONS_FANNED_OUT, Unit::Count, 0);
                        return Ok(SealResponse::Summary(
                            json!({ "waiting_for_workers": queued, "partitions_pending": keys.len() }),
                        ));
                    }
                }
                let messages: Vec<SealMessage> =
                    keys.iter().map(|key| SealMessage { partitions: vec![key.clone()] }).collect();
                fan_out.send(&messages).await.map_err(SealError::FanOut)?;
                info!(partitions = keys.len(), "fanned partitions out to seal workers");
                metrics.add(metric::PARTITIONS_FANNED_OUT, Unit::Count, keys.len() as u64);
                return Ok(SealResponse::Summary(json!({ "fanned_out": keys.len() })));
            }
        }
        metrics.add(metric::PARTITIONS_FANNED_OUT, Unit::Count, 0);
        let report = if keys.is_empty() {
            SealReport::default()
        } else {
            let options = SealOptions { partitions: Some(keys), deadline: Some(deadline), ..Default::default() };
            self.compactor.seal_closed(&options).await?
        };
        add_report_metrics(metrics, &report);
        Ok(SealResponse::Summary(summary(&report)))
    }

    async fn work(&self, batch: SqsEvent, deadline: DateTime<Utc>, metrics: &mut MetricSet) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        let mut total = SealReport::default();
        let mut failed = 0;
        for message in batch.records {
            let message_id = message.message_id.unwrap_or_default();
            let span = info_span!("seal_message", message_id = %message_id);
            let body = message.body.unwrap_or_default();
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
            // Locked (another run is on it) and stopped at the deadline (released open) are
            // progress: the next scheduled run picks the partition up again.
            let retry = match result {
                Ok(report) => {
                    let retry = report.partitions_failed > 0;
                    if retry {
                        error!(message_id = %message_id, failures = ?report.failures, "seal message failed; SQS will retry it, then dead-letter it");
                    }
                    merge_reports(&mut total, &report);
                    retry
                }
                Err(failure) => {
                    error!(message_id = %message_id, error = %failure, "seal message failed; SQS will retry it, then dead-letter it");
                    true
                }
            };
            if retry {
                failed += 1;
                response.add_failure(message_id);
            }
        }
        add_report_metrics(metrics, &total);
        metrics.add(metric::MESSAGES_FAILED, Unit::Count, failed);
        response
    }
}

/// Adds the counts a worker batch's reports share (a batch is usually one message).
fn merge_reports(total: &mut SealReport, report: &SealReport) {
    total.partitions_sealed += report.partitions_sealed;
    total.partitions_left_open += report.partitions_left_open;
    total.partitions_locked += report.partitions_locked;
    total.partitions_failed += report.partitions_failed;
    total.outputs_committed += report.outputs_committed;
    total.outputs_abandoned += report.outputs_abandoned;
    total.objects_compacted += report.objects_compacted;
    total.source_bytes += report.source_bytes;
    total.output_bytes += report.output_bytes;
    total.objects_missing += report.objects_missing;
    total.expiry.tagged += report.expiry.tagged;
    total.expiry.deleted += report.expiry.deleted;
    total.expiry.already_tagged += report.expiry.already_tagged;
    total.expiry.gone += report.expiry.gone;
    total.expiry.changed += report.expiry.changed;
    total.expiry.tag_limit += report.expiry.tag_limit;
    total.stopped_at_deadline |= report.stopped_at_deadline;
}

fn add_report_metrics(metrics: &mut MetricSet, report: &SealReport) {
    metrics.add(metric::PARTITIONS_SEALED, Unit::Count, report.partitions_sealed);
    metrics.add(metric::PARTITIONS_LEFT_OPEN, Unit::Count, report.partitions_left_open);
    metrics.add(metric::PARTITIONS_LOCKED, Unit::Count, report.partitions_locked);
    metrics.add(metric::PARTITIONS_FAILED, Unit::Count, report.partitions_failed);
    metrics.add(metric::OUTPUTS_COMMITTED, Unit::Count, report.outputs_committed);
    metrics.add(metric::OUTPUTS_ABANDONED, Unit::Count, report.outputs_abandoned);
    metrics.add(metric::OBJECTS_SEALED, Unit::Count, report.objects_compacted);
    metrics.add(metric::BYTES_SEALED, Unit::Bytes, report.source_bytes);
    metrics.add(metric::OUTPUT_BYTES, Unit::Bytes, report.output_bytes);
    metrics.add(metric::SOURCES_MISSING, Unit::Count, report.objects_missing);
    metrics.add(metric::SOURCES_TAGGED, Unit::Count, report.expiry.tagged);
    metrics.add(metric::SOURCES_DELETED, Unit::Count, report.expiry.deleted);
    metrics.add(metric::SOURCES_ALREADY_TAGGED, Unit::Count, report.expiry.already_tagged);
    metrics.add(metric::SOURCES_GONE, Unit::Count, report.expiry.gone);
    metrics.add(metric::SOURCES_CHANGED, Unit::Count, report.expiry.changed);
    metrics.add(metric::SOURCES_AT_TAG_LIMIT, Unit::Count, report.expiry.tag_limit);
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
    use aws_sdk_sqs::types::QueueAttributeName;

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

        async fn queued(&self) -> Result<u64, String> {
            let names = [
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ];
            let response = self
                .client
                .get_queue_attributes()
                .queue_url(&self.queue_url)
                .set_attribute_names(Some(names.to_vec()))
                .send()
                .await
                .map_err(|error| format!("GetQueueAttributes of {}: {error}", self.queue_url))?;
            let attributes = response.attributes().cloned().unwrap_or_default();
            Ok(names.iter().filter_map(|name| attributes.get(name)).filter_map(|count| count.parse::<u64>().ok()).sum())
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
