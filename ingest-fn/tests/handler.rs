//! The ingest handler fed the real JSON that S3, SQS and EventBridge deliver (fixtures/),
//! on the embedded backend.

use std::sync::Arc;

use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::SystemClock;
use compactor::config::RawConfig;
use compactor::domain::records::ObjectState;
use compactor::engine::Compactor;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn compactor(dir: &tempfile::TempDir) -> Compactor {
    let config = RawConfig { source_bucket: Some("fixture-logs".into()), ..Default::default() }.validate().unwrap();
    let store = LocalDir::open(dir.path().join("buckets")).unwrap();
    let manifest = SqliteManifest::open(dir.path().join("manifest.sqlite")).unwrap();
    Compactor::new(config, Arc::new(store), Arc::new(manifest), Arc::new(SystemClock))
}

#[tokio::test]
async fn a_direct_s3_notification_records_the_decoded_key() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor(&dir);
    let outcome = ingest_fn::handle(&compactor, fixture("s3-put.json")).await.unwrap();
    assert_eq!(outcome.report.recorded, 1);
    assert_eq!(outcome.response()["recorded"], 1);
    let record = compactor.manifest().object("fixture-logs", "app/2024/01/14/my file+x é.json").await.unwrap().unwrap();
    assert_eq!(record.state, ObjectState::Pending);
    assert_eq!(record.size, 27);
    assert_eq!(record.sequencer, "0055AED6DCD90281E5");

    // S3 delivers at least once: the replay changes nothing.
    let replay = ingest_fn::handle(&compactor, fixture("s3-put.json")).await.unwrap();
    assert_eq!((replay.report.recorded, replay.report.stale), (0, 1));
}

#[tokio::test]
async fn an_sqs_batch_reports_only_the_malformed_message_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor(&dir);
    let outcome = ingest_fn::handle(&compactor, fixture("sqs-batch.json")).await.unwrap();
    assert_eq!(outcome.report.recorded, 1);
    assert_eq!(outcome.report.ignored_records, 1, "the s3:TestEvent");
    assert_eq!(
        outcome.response(),
        serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": "d9a1b0f4-5f1e-4c52-9a8d-malformed00001" }] })
    );
    assert!(compactor.manifest().object("fixture-logs", "app/2024/01/14/second.json").await.unwrap().is_some());
}

#[tokio::test]
async fn eventbridge_created_then_deleted_takes_the_object_out_of_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor(&dir);
    let created = ingest_fn::handle(&compactor, fixture("eventbridge-object-created.json")).await.unwrap();
    assert_eq!(created.report.recorded, 1);
    let deleted = ingest_fn::handle(&compactor, fixture("eventbridge-object-deleted.json")).await.unwrap();
    assert_eq!(deleted.report.removed, 1);
    let record =
        compactor.manifest().object("fixture-logs", "app/2024/01/14/from eventbridge.json").await.unwrap().unwrap();
    assert_eq!(record.state, ObjectState::Removed);
}

#[tokio::test]
async fn a_malformed_direct_event_fails_the_invocation_with_a_clear_type() {
    let dir = tempfile::tempdir().unwrap();
    let compactor = compactor(&dir);
    let error = ingest_fn::handle(&compactor, serde_json::json!({"hello": "world"})).await.unwrap_err();
    assert_eq!(error.error_type(), "MalformedEvent");
    assert!(error.to_string().contains("fields hello"), "{error}");
}
