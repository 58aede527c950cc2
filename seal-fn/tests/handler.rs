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
use compactor::ports::PutOptions;
use seal_fn::{parse_request, FanOut, SealFunction, SealMessage, SealRequest};
use serde_json::{json, Value};

const BUCKET: &str = "fixture-logs";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// Records fan-out messages instead of sending them to SQS.
#[derive(Debug, Default)]
struct CapturedFanOut {
    messages: Mutex<Vec<SealMessage>>,
}

#[async_trait]
impl FanOut for CapturedFanOut {
    async fn send(&self, messages: &[SealMessage]) -> Result<(), String> {
        self.messages.lock().unwrap().extend_from_slice(messages);
        Ok(())
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
    let mut events = Vec::new();
    for (sequence, day) in days.iter().enumerate() {
        let key = format!("app/2024/01/{day:02}/object.json");
        let meta = compactor
            .store()
            .put(BUCKET, &key, Bytes::from(format!("{{\"day\":{day}}}\n")), PutOptions::default())
            .await
            .unwrap();
        events.push(ObjectEvent {
            kind: ObjectEventKind::Created { size: meta.size, etag: meta.etag },
            bucket: BUCKET.into(),
            key,
            sequencer: format!("{:016X}", sequence + 1),
            event_time: at("2024-01-19T00:00:00Z"),
            event_name: "ObjectCreated:Put".into(),
        });
    }
    compactor.ingest(&events).await.unwrap();
    compactor
}

fn schedule_event() -> Value {
    let path = format!("{}/fixtures/schedule.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn function(compactor: Compactor, fan_out: Option<Arc<dyn FanOut>>) -> SealFunction {
    SealFunction { compactor, fan_out, fan_out_threshold: 2, deadline_margin: Duration::seconds(30) }
}

#[tokio::test]
async fn a_scheduled_run_seals_the_closed_partitions_inline() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[14, 15, 19]).await;
    let response =
        function(compactor.clone(), None).handle(schedule_event(), at("2024-01-20T00:20:00Z")).await.unwrap();
    // 01/19 closes at 2024-01-20T01:00 (grace 1h): still open.
    assert_eq!(response["partitions_sealed"], 2, "{response}");
    let open = compactor.manifest().partition(&PartitionKey::new(BUCKET, "app/2024/01/19/")).await.unwrap().unwrap();
    assert_eq!(open.state, PartitionState::Open);
}

#[tokio::test]
async fn a_large_backlog_fans_out_and_workers_seal_it() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[10, 11, 12, 13]).await;
    let captured = Arc::new(CapturedFanOut::default());
    let seal = function(compactor.clone(), Some(captured.clone() as Arc<dyn FanOut>));
    let response = seal.handle(schedule_event(), at("2024-01-20T00:20:00Z")).await.unwrap();
    assert_eq!(response, json!({ "fanned_out": 4 }));
    let messages = captured.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 4);

    // The messages come back as an SQS batch to the worker side of the same function.
    let records: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            json!({ "messageId": format!("m{index}"), "body": serde_json::to_string(message).unwrap(),
                    "eventSource": "aws:sqs", "attributes": {}, "messageAttributes": {} })
        })
        .collect();
    let worker_response = seal.handle(json!({ "Records": records }), at("2024-01-20T00:20:00Z")).await.unwrap();
    assert_eq!(worker_response, json!({ "batchItemFailures": [] }));
    for day in 10..14 {
        let key = PartitionKey::new(BUCKET, format!("app/2024/01/{day}/"));
        assert_eq!(compactor.manifest().partition(&key).await.unwrap().unwrap().state, PartitionState::Sealed);
    }
}

#[tokio::test]
async fn a_worker_past_its_deadline_hands_the_message_back() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[10]).await;
    let message = SealMessage { partitions: vec![PartitionKey::new(BUCKET, "app/2024/01/10/")] };
    let event = json!({ "Records": [{ "messageId": "late", "body": serde_json::to_string(&message).unwrap(),
                                       "eventSource": "aws:sqs", "attributes": {}, "messageAttributes": {} }] });
    // The Lambda deadline is 10 s away, inside the 30 s margin.
    let response = function(compactor, None).handle(event, at("2024-01-20T00:05:10Z")).await.unwrap();
    assert_eq!(response, json!({ "batchItemFailures": [{ "itemIdentifier": "late" }] }));
}

#[tokio::test]
async fn explicit_requests_reseal_dates_and_partitions_even_before_they_close() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor_with_days(&dir, &[14, 19]).await;
    let seal = function(compactor, None);
    let by_date = seal.handle(json!({ "date": "2024-01-19" }), at("2024-01-20T00:20:00Z")).await.unwrap();
    assert_eq!(by_date["partitions_sealed"], 1, "{by_date}");
    let by_path = seal.handle(json!({ "partitions": ["app/2024/01/14"] }), at("2024-01-20T00:20:00Z")).await.unwrap();
    assert_eq!(by_path["partitions_sealed"], 1, "{by_path}");
}

#[test]
fn requests_parse_or_say_what_is_expected() {
    assert_eq!(parse_request(&schedule_event()).unwrap(), SealRequest::Schedule);
    assert_eq!(parse_request(&json!({})).unwrap(), SealRequest::Schedule);
    let range = parse_request(&json!({ "from": "2024-01-01", "to": "2024-01-31" })).unwrap();
    assert!(matches!(range, SealRequest::Dates { .. }));
    for (bad, expected) in [
        (json!({ "date": "14/01/2024" }), "a date such as"),
        (json!({ "from": "2024-02-01", "to": "2024-01-01" }), "must not be after"),
        (json!({ "from": "2024-02-01" }), "give both"),
        (json!({ "partitions": [] }), "non-empty list"),
        (json!({ "reseal": true }), "unknown request with fields reseal"),
    ] {
        let message = parse_request(&bad).unwrap_err().to_string();
        assert!(message.contains(expected), "{bad}: {message}");
    }
}
