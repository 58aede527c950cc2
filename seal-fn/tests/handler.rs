//! The seal handler: schedule, explicit requests, fan-out and workers, on the embedded backend.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::ManualClock;
use compactor::config::RawConfig;
use compactor::domain::partition::PartitionKey;
use compactor::domain::records::PartitionState;
use compactor::engine::Compactor;
use compactor::event::{ObjectEvent, ObjectEventKind};
use compactor::metrics::{CapturedLines, Emf};
use compactor::ports::PutOptions;
use seal_fn::{metric, parse_request, FanOut, SealFunction, SealMessage, SealRequest};
use serde_json::{json, Value};

const BUCKET: &str = "fixture-logs";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// Records fan-out messages instead of sending them to SQS; they count as queued until a test
/// takes them.
#[derive(Debug, Default)]
struct CapturedFanOut {
    messages: Mutex<Vec<SealMessage>>,
}

impl CapturedFanOut {
    fn take(&self) -> Vec<SealMessage> {
        std::mem::take(&mut *self.messages.lock().unwrap())
    }
}

#[async_trait]
impl FanOut for CapturedFanOut {
    async fn send(&self, messages: &[SealMessage]) -> Result<(), String> {
        self.messages.lock().unwrap().extend_from_slice(messages);
        Ok(())
    }

    async fn queued(&self) -> Result<u64, String> {
        Ok(self.messages.lock().unwrap().len() as u64)
    }
}

async fn compactor_with_days(dir: &tempfile::TempDir, days: &[u32]) -> Compactor {
    let config = RawConfig { source_bucket: Some(BUCKET.into()), grace: Some("1h".into()), ..Default::default() }
        .validate()
        .unwrap();
    let store = LocalDir::open(dir.path().join("buckets")).unwrap();
    store.create_bucket(BUCKET).unwrap();
    let manifest = SqliteManifest::open(dir.path().join("manifest.sqlite")).unwrap();
    let clock = ManualClock::new(at("2024-01-20T00:05:00Z"));
    let compactor = Compactor::new(config, Arc::new(store), Arc::new(manifest), Arc::new(clock));
    put_objects(&compactor, days, "object.json", 1).await;
    compactor
}

/// Puts one object per day and ingests its event.
async fn put_objects(compactor: &Compactor, days: &[u32], name: &str, first_sequence: usize) {
    let mut events = Vec::new();
    for (index, day) in days.iter().enumerate() {
        let sequence = first_sequence + index;
        let key = format!("app/2024/01/{day:02}/{name}");
        let meta = compactor
            .store()
            .put(BUCKET, &key, Bytes::from(format!("{{\"day\":{day}}}\n")), PutOptions::default())
            .await
            .unwrap();
        events.push(ObjectEvent {
            kind: ObjectEventKind::Created { size: meta.size, etag: meta.etag },
            bucket: BUCKET.into(),
            key,
            sequencer: format!("{sequence:016X}"),
            event_time: at("2024-01-19T00:00:00Z"),
            event_name: "ObjectCreated:Put".into(),
        });
    }
    compactor.ingest(&events).await.unwrap();
}

fn schedule_event() -> Value {
    let path = format!("{}/fixtures/schedule.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn function(compactor: Compactor, fan_out: Option<Arc<dyn FanOut>>) -> (SealFunction, CapturedLines) {
    let (metrics, lines) = Emf::capture("S3Compactor/test");
    (SealFunction { compactor, fan_out, fan_out_threshold: 2, deadline_margin: Duration::seconds(30), metrics }, lines)
}

fn worker_event(messages: &[(&str, &SealMessage)]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, message)| {
            json!({ "messageId": id, "body": serde_json::to_string(message).unwrap(),
                    "eventSource": "aws:sqs", "attributes": {}, "messageAttributes": {} })
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test]
async fn a_scheduled_run_seals_the_closed_partitions_inline_and_reports_its_lag() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[14, 15, 19]).await;
    let (seal, lines) = function(compactor.clone(), None);
    let response = seal.handle(schedule_event(), at("2024-01-20T00:20:00Z")).await.unwrap().to_json();
    // 01/19 closes at 2024-01-20T01:00 (grace 1h): still open.
    assert_eq!(response["partitions_sealed"], 2, "{response}");
    let open = compactor.manifest().partition(&PartitionKey::new(BUCKET, "app/2024/01/19/")).await.unwrap().unwrap();
    assert_eq!(open.state, PartitionState::Open);

    let records = lines.records();
    assert_eq!(records.len(), 1, "one metrics line per invocation");
    // 01/14 closed at 2024-01-15T01:00; the clock says 2024-01-20T00:05.
    let lag = (at("2024-01-20T00:05:00Z") - at("2024-01-15T01:00:00Z")).num_seconds();
    assert_eq!(records[0][metric::SEAL_LAG], lag);
    assert_eq!(records[0][metric::PARTITIONS_PENDING], 2);
    assert_eq!(records[0][metric::PARTITIONS_SEALED], 2);
    assert_eq!(records[0][metric::OBJECTS_SEALED], 2);
    assert_eq!(records[0][metric::SOURCES_TAGGED], 2);
}

#[tokio::test]
async fn a_large_backlog_fans_out_once_and_workers_seal_it() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[10, 11, 12, 13]).await;
    let captured = Arc::new(CapturedFanOut::default());
    let (seal, lines) = function(compactor.clone(), Some(captured.clone() as Arc<dyn FanOut>));
    let response = seal.handle(schedule_event(), at("2024-01-20T00:20:00Z")).await.unwrap().to_json();
    assert_eq!(response, json!({ "fanned_out": 4 }));

    // The next schedule fires before the workers ran: nothing is queued twice.
    let again = seal.handle(schedule_event(), at("2024-01-20T00:35:00Z")).await.unwrap().to_json();
    assert_eq!(again, json!({ "waiting_for_workers": 4, "partitions_pending": 4 }));
    let messages = captured.take();
    assert_eq!(messages.len(), 4);

    // The messages come back as an SQS batch to the worker side of the same function.
    let ids: Vec<String> = (0..messages.len()).map(|index| format!("m{index}")).collect();
    let batch: Vec<(&str, &SealMessage)> = ids.iter().map(String::as_str).zip(&messages).collect();
    let worker_response = seal.handle(worker_event(&batch), at("2024-01-20T00:20:00Z")).await.unwrap().to_json();
    assert_eq!(worker_response, json!({ "batchItemFailures": [] }));
    for day in 10..14 {
        let key = PartitionKey::new(BUCKET, format!("app/2024/01/{day}/"));
        assert_eq!(compactor.manifest().partition(&key).await.unwrap().unwrap().state, PartitionState::Sealed);
    }
    let records = lines.records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0][metric::PARTITIONS_FANNED_OUT], 4);
    assert_eq!(records[1][metric::PARTITIONS_FANNED_OUT], 0);
    assert_eq!(records[2][metric::PARTITIONS_SEALED], 4);
    assert_eq!(records[2][metric::MESSAGES_FAILED], 0);
}

#[tokio::test]
async fn a_worker_past_its_deadline_succeeds_and_leaves_the_partition_to_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[10]).await;
    let key = PartitionKey::new(BUCKET, "app/2024/01/10/");
    let message = SealMessage { partitions: vec![key.clone()] };
    let (seal, lines) = function(compactor.clone(), None);
    // The Lambda deadline is 10 s away, inside the 30 s margin.
    let response = seal.handle(worker_event(&[("late", &message)]), at("2024-01-20T00:05:10Z")).await.unwrap();
    assert_eq!(response.to_json(), json!({ "batchItemFailures": [] }));
    assert_eq!(lines.records()[0][metric::PARTITIONS_LEFT_OPEN], 1);
    let record = compactor.manifest().partition(&key).await.unwrap().unwrap();
    assert_eq!((record.state, record.pending_objects), (PartitionState::Open, 1));
    let closed = compactor.manifest().closed_partition_keys(at("2024-01-20T00:20:00Z"), 10).await.unwrap();
    assert_eq!(closed, vec![key], "the next scheduled run finds it again");
}

#[tokio::test]
async fn a_worker_whose_partition_is_locked_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[10]).await;
    let key = PartitionKey::new(BUCKET, "app/2024/01/10/");
    let now = at("2024-01-20T00:05:00Z");
    let _lease = compactor.manifest().acquire(&key, "another-run", now, chrono::Duration::minutes(15)).await.unwrap();
    let message = SealMessage { partitions: vec![key] };
    let (seal, lines) = function(compactor, None);
    let response = seal.handle(worker_event(&[("busy", &message)]), at("2024-01-20T00:20:00Z")).await.unwrap();
    assert_eq!(response.to_json(), json!({ "batchItemFailures": [] }));
    assert_eq!(lines.records()[0][metric::PARTITIONS_LOCKED], 1);
}

#[tokio::test]
async fn a_worker_reports_only_the_message_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[10]).await;
    let good = SealMessage { partitions: vec![PartitionKey::new(BUCKET, "app/2024/01/10/")] };
    let event = json!({ "Records": [
        { "messageId": "good", "body": serde_json::to_string(&good).unwrap(), "eventSource": "aws:sqs" },
        { "messageId": "garbled", "body": "{\"partitions\": 3}", "eventSource": "aws:sqs" },
    ]});
    let (seal, lines) = function(compactor, None);
    let response = seal.handle(event, at("2024-01-20T00:20:00Z")).await.unwrap();
    assert_eq!(response.to_json(), json!({ "batchItemFailures": [{ "itemIdentifier": "garbled" }] }));
    assert_eq!(lines.records()[0][metric::MESSAGES_FAILED], 1);
}

#[tokio::test]
async fn explicit_requests_reseal_a_sealed_partition_and_seal_one_before_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[14, 19]).await;
    let (seal, _) = function(compactor.clone(), None);
    let day_14 = PartitionKey::new(BUCKET, "app/2024/01/14/");
    let scheduled = seal.handle(schedule_event(), at("2024-01-20T00:20:00Z")).await.unwrap().to_json();
    assert_eq!(scheduled["partitions_sealed"], 1, "{scheduled}");
    let first = compactor.manifest().partition(&day_14).await.unwrap().unwrap();
    assert_eq!((first.state, first.committed_outputs), (PartitionState::Sealed, 1));

    // A late object reopens the sealed partition; an explicit request reseals it.
    put_objects(&compactor, &[14], "late.json", 100).await;
    let by_path = seal.handle(json!({ "partitions": ["app/2024/01/14"] }), at("2024-01-20T00:20:00Z")).await.unwrap();
    assert_eq!(by_path.to_json()["partitions_sealed"], 1, "{:?}", by_path);
    let resealed = compactor.manifest().partition(&day_14).await.unwrap().unwrap();
    assert_eq!(resealed.state, PartitionState::Sealed);
    assert!(resealed.generation > first.generation, "a new generation: {resealed:?}");
    assert_eq!((resealed.committed_outputs, resealed.compacted_objects, resealed.pending_objects), (2, 2, 0));

    // 01/19 closes at 2024-01-20T01:00: a request by date seals it anyway.
    let by_date = seal.handle(json!({ "date": "2024-01-19" }), at("2024-01-20T00:20:00Z")).await.unwrap().to_json();
    assert_eq!(by_date["partitions_sealed"], 1, "{by_date}");
    let day_19 = compactor.manifest().partition(&PartitionKey::new(BUCKET, "app/2024/01/19/")).await.unwrap().unwrap();
    assert_eq!(day_19.state, PartitionState::Sealed);
}

#[test]
fn requests_parse_or_say_what_is_expected() {
    assert_eq!(parse_request(&schedule_event()).unwrap(), SealRequest::Schedule);
    assert_eq!(parse_request(&json!({})).unwrap(), SealRequest::Schedule);
    assert_eq!(parse_request(&Value::Null).unwrap(), SealRequest::Schedule);
    let range = parse_request(&json!({ "from": "2024-01-01", "to": "2024-01-31" })).unwrap();
    assert!(matches!(range, SealRequest::Dates { .. }));
    let paths = parse_request(&json!({ "partitions": ["logs/2024/01/14/"] })).unwrap();
    assert_eq!(paths, SealRequest::Partitions(vec!["logs/2024/01/14/".into()]));
    for (bad, expected) in [
        (json!({ "date": "14/01/2024" }), "each a date such as"),
        (json!({ "from": "2024-02-01", "to": "2024-01-01" }), "must not be after"),
        (json!({ "from": "2024-02-01" }), "or both \"from\" and \"to\""),
        (json!({ "date": "2024-02-01", "from": "2024-02-01" }), "or both \"from\" and \"to\""),
        (json!({ "partitions": [] }), "non-empty list"),
        (json!({ "partitions": "logs/2024/01/14/" }), "non-empty list"),
        (json!({ "reseal": true }), "unknown request with fields reseal"),
        (json!({ "detail-type": "Object Created" }), "unknown request with fields detail-type"),
        (json!([1, 2]), "unknown request that is not a JSON object"),
    ] {
        let message = parse_request(&bad).unwrap_err().to_string();
        assert!(message.contains(expected), "{bad}: {message}");
    }
}
