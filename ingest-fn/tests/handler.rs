//! The ingest handler fed the real JSON that S3, SQS and EventBridge deliver (fixtures/),
//! on the embedded backend.

use std::sync::Arc;

use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::SystemClock;
use compactor::config::RawConfig;
use compactor::domain::records::ObjectState;
use compactor::engine::Compactor;
use compactor::event::{ObjectEvent, ObjectEventKind};
use compactor::metrics::{CapturedLines, Emf};
use compactor::testkit::faults::{CrashMode, FaultPlan, FaultyManifest};
use ingest_fn::{metric, IngestFunction};
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn compactor_with(dir: &tempfile::TempDir, plan: Arc<FaultPlan>) -> Compactor {
    let config = RawConfig { source_bucket: Some("fixture-logs".into()), ..Default::default() }.validate().unwrap();
    let store = LocalDir::open(dir.path().join("buckets")).unwrap();
    let manifest = SqliteManifest::open(dir.path().join("manifest.sqlite")).unwrap();
    let manifest = FaultyManifest::new(Arc::new(manifest), plan);
    Compactor::new(config, Arc::new(store), Arc::new(manifest), Arc::new(SystemClock))
}

fn compactor(dir: &tempfile::TempDir) -> Compactor {
    compactor_with(dir, FaultPlan::new())
}

fn function(compactor: &Compactor) -> (IngestFunction, CapturedLines) {
    let (metrics, lines) = Emf::capture("S3Compactor/test");
    (IngestFunction { compactor: compactor.clone(), metrics }, lines)
}

fn response(invocation: &ingest_fn::InvocationReport) -> Value {
    serde_json::to_value(invocation.response()).unwrap()
}

#[tokio::test]
async fn a_direct_s3_notification_records_the_decoded_key() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor(&dir);
    let (ingest, lines) = function(&compactor);
    let outcome = ingest.handle(fixture("s3-put.json")).await.unwrap();
    assert_eq!(outcome.report.recorded, 1);
    assert_eq!(response(&outcome)["recorded"], 1);
    let record = compactor.manifest().object("fixture-logs", "app/2024/01/14/my file+x é.json").await.unwrap().unwrap();
    assert_eq!(record.state, ObjectState::Pending);
    assert_eq!(record.size, 27);
    assert_eq!(record.sequencer, "0055AED6DCD90281E5");

    // S3 delivers at least once: the replay changes nothing.
    let replay = ingest.handle(fixture("s3-put.json")).await.unwrap();
    assert_eq!((replay.report.recorded, replay.report.stale), (0, 1));

    // One metrics line per invocation: the first recorded 27 bytes, the replay was stale.
    let records = lines.records();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0][metric::OBJECTS_RECORDED].clone(), records[0][metric::BYTES_RECORDED].clone()),
        (json!(1), json!(27))
    );
    assert_eq!(
        (records[1][metric::OBJECTS_RECORDED].clone(), records[1][metric::STALE_EVENTS].clone()),
        (json!(0), json!(1))
    );
}

#[tokio::test]
async fn an_sqs_batch_reports_only_the_malformed_message_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor(&dir);
    let (ingest, lines) = function(&compactor);
    let outcome = ingest.handle(fixture("sqs-batch.json")).await.unwrap();
    assert_eq!(outcome.report.recorded, 1);
    assert_eq!(outcome.report.ignored_records, 1, "the s3:TestEvent");
    assert_eq!(lines.records()[0][metric::MESSAGES_FAILED], 1);
    assert_eq!(
        response(&outcome),
        serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": "d9a1b0f4-5f1e-4c52-9a8d-malformed00001" }] })
    );
    assert!(compactor.manifest().object("fixture-logs", "app/2024/01/14/second.json").await.unwrap().is_some());
}

#[tokio::test]
async fn eventbridge_created_then_deleted_takes_the_object_out_of_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor(&dir);
    let (ingest, lines) = function(&compactor);
    let created = ingest.handle(fixture("eventbridge-object-created.json")).await.unwrap();
    assert_eq!(created.report.recorded, 1);
    let deleted = ingest.handle(fixture("eventbridge-object-deleted.json")).await.unwrap();
    assert_eq!(deleted.report.removed, 1);
    assert_eq!(lines.records()[1][metric::OBJECTS_REMOVED], 1);
    let record =
        compactor.manifest().object("fixture-logs", "app/2024/01/14/from eventbridge.json").await.unwrap().unwrap();
    assert_eq!(record.state, ObjectState::Removed);
}

#[tokio::test]
async fn a_malformed_direct_event_fails_the_invocation_with_a_clear_type() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor(&dir);
    let (ingest, _) = function(&compactor);
    let error = ingest.handle(serde_json::json!({"hello": "world"})).await.unwrap_err();
    assert_eq!(error.error_type(), "MalformedEvent");
    assert!(error.to_string().contains("fields hello"), "{error}");
}

/// An SQS message as the event source mapping delivers it, carrying `notification`.
fn sqs_message(message_id: &str, body: &str) -> Value {
    json!({ "messageId": message_id, "body": body, "eventSource": "aws:sqs", "attributes": {}, "messageAttributes": {} })
}

fn s3_notification(key: &str, sequencer: &str) -> String {
    let event = ObjectEvent {
        kind: ObjectEventKind::Created { size: 10, etag: Some("0cc175b9c0f1b6a831c399e269772661".into()) },
        bucket: "fixture-logs".into(),
        key: key.into(),
        sequencer: sequencer.into(),
        event_time: chrono::DateTime::parse_from_rfc3339("2024-01-14T10:16:00Z").unwrap().into(),
        event_name: "ObjectCreated:Put".into(),
    };
    compactor::event::s3_notification(&[event]).to_string()
}

#[tokio::test]
async fn a_batch_is_recorded_together_and_skips_are_counted_per_reason() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor(&dir);
    let (ingest, lines) = function(&compactor);
    let batch = json!({ "Records": [
        sqs_message("a", &s3_notification("app/2024/01/14/a.json", "01")),
        sqs_message("b", &s3_notification("app/2024/01/14/b.json", "02")),
        sqs_message("c", &s3_notification("compacted/app/2024/01/14/out.json", "03")),
        sqs_message("d", &s3_notification("no-date/d.json", "04")),
    ]});
    let outcome = ingest.handle(batch).await.unwrap();
    assert_eq!(response(&outcome), json!({ "batchItemFailures": [] }));
    assert_eq!((outcome.report.events, outcome.report.recorded), (4, 2));
    let record = &lines.records()[0];
    assert_eq!(record[metric::EVENTS], 4);
    assert_eq!(record[metric::OBJECTS_RECORDED], 2);
    assert_eq!(record[metric::OBJECTS_SKIPPED], 2);
    assert_eq!(record[ingest_fn::skipped_metric(compactor::engine::SkipReason::UnderDestination)], 1);
    assert_eq!(record[ingest_fn::skipped_metric(compactor::engine::SkipReason::OutOfLayout)], 1);
    assert_eq!(record[ingest_fn::skipped_metric(compactor::engine::SkipReason::TooLarge)], 0);
    assert_eq!(record["_aws"]["CloudWatchMetrics"][0]["Namespace"], "S3Compactor/test");
}

#[tokio::test]
async fn when_the_manifest_fails_every_message_with_events_is_handed_back_and_none_without() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let compactor = compactor_with(&dir, plan.clone());
    let (ingest, lines) = function(&compactor);
    // The manifest is down from its first call on.
    plan.crash_at(1, CrashMode::BeforeCall);
    let test_event = fixture("sqs-batch.json")["Records"][1]["body"].as_str().unwrap().to_string();
    let batch = json!({ "Records": [
        sqs_message("first", &s3_notification("app/2024/01/14/a.json", "01")),
        sqs_message("test-event", &test_event),
        sqs_message("second", &s3_notification("app/2024/01/14/b.json", "02")),
    ]});
    let outcome = ingest.handle(batch).await.unwrap();
    assert_eq!(
        response(&outcome),
        json!({ "batchItemFailures": [{ "itemIdentifier": "first" }, { "itemIdentifier": "second" }] }),
        "the s3:TestEvent needs no manifest and succeeds"
    );
    assert_eq!(lines.records()[0][metric::MESSAGES_FAILED], 2);

    // The manifest is back: SQS delivers the two again and both are recorded.
    plan.heal();
    let retry = json!({ "Records": [
        sqs_message("first", &s3_notification("app/2024/01/14/a.json", "01")),
        sqs_message("second", &s3_notification("app/2024/01/14/b.json", "02")),
    ]});
    let outcome = ingest.handle(retry).await.unwrap();
    assert_eq!(response(&outcome), json!({ "batchItemFailures": [] }));
    assert_eq!(outcome.report.recorded, 2);
}

/// A batch where one message is malformed and one object's write fails (after the batch's
/// other writes went through, as DynamoDB's side-by-side writes do): exactly those two ids come
/// back, every other object is in the manifest once, as its event said, and SQS's redelivery of
/// the failed one records it.
#[tokio::test]
async fn a_malformed_message_and_a_failed_write_are_the_only_ids_handed_back() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let compactor = compactor_with(&dir, plan.clone());
    let (ingest, lines) = function(&compactor);
    let refused_key = "app/2024/01/14/refused.json";
    plan.refuse_records_of([refused_key]);
    let good = [("a", "app/2024/01/14/a.json", "01"), ("b", "app/2024/01/15/b.json", "03")];
    let batch = json!({ "Records": [
        sqs_message(good[0].0, &s3_notification(good[0].1, good[0].2)),
        sqs_message("malformed", "{\"Records\": [{\"eventName\": "),
        sqs_message("refused", &s3_notification(refused_key, "02")),
        sqs_message(good[1].0, &s3_notification(good[1].1, good[1].2)),
    ]});
    let outcome = ingest.handle(batch.clone()).await.unwrap();
    assert_eq!(
        response(&outcome),
        json!({ "batchItemFailures": [{ "itemIdentifier": "malformed" }, { "itemIdentifier": "refused" }] })
    );
    assert_eq!(lines.records()[0][metric::MESSAGES_FAILED], 2);
    // The batch's own attempt recorded the good ones; the one-by-one pass that found the failed
    // message saw them again as replays: recorded or stale, never twice recorded.
    assert_eq!(outcome.report.recorded + outcome.report.stale, 2, "{:?}", outcome.report);
    for (_, key, sequencer) in good {
        let record = compactor.manifest().object("fixture-logs", key).await.unwrap().expect("recorded");
        assert_eq!((record.state, record.sequencer.as_str()), (ObjectState::Pending, sequencer), "{key}");
    }
    assert_eq!(compactor.manifest().object("fixture-logs", refused_key).await.unwrap(), None);

    // SQS redelivers the two failed messages once the manifest takes the write again.
    plan.heal();
    let retry = json!({ "Records": [
        sqs_message("malformed", "{\"Records\": [{\"eventName\": "),
        sqs_message("refused", &s3_notification(refused_key, "02")),
    ]});
    let outcome = ingest.handle(retry).await.unwrap();
    assert_eq!(response(&outcome), json!({ "batchItemFailures": [{ "itemIdentifier": "malformed" }] }));
    assert_eq!((outcome.report.recorded, outcome.report.stale), (1, 0));
    let record = compactor.manifest().object("fixture-logs", refused_key).await.unwrap().expect("recorded on retry");
    assert_eq!((record.state, record.sequencer.as_str()), (ObjectState::Pending, "02"));

    // A redelivery of the whole first batch changes nothing: every object is already there.
    let replay = ingest.handle(batch).await.unwrap();
    assert_eq!(response(&replay), json!({ "batchItemFailures": [{ "itemIdentifier": "malformed" }] }));
    assert_eq!((replay.report.recorded, replay.report.stale), (0, 3));
}
