//! `COMPACTOR_RECORD_TTL` through the engine, on the DynamoDB test server (ministack) with a
//! local directory for the objects: a seal writes `expires_at` on the records of the sources it
//! marks, and once DynamoDB has deleted such records, `verify` still passes and says how many
//! sources it could no longer check. Needs the `aws` feature; without
//! `COMPACTOR_TEST_DYNAMODB_ENDPOINT` it says `SKIPPED` and passes (fails under `CI`).
#![cfg(feature = "aws")]

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use compactor::adapters::dynamodb::RECORD_EXPIRY_ATTRIBUTE;
use compactor::adapters::local_dir::LocalDir;
use compactor::clock::{Clock, ManualClock};
use compactor::config::RawConfig;
use compactor::engine::seal::SealOptions;
use compactor::engine::Compactor;
use compactor::event::{ObjectEvent, ObjectEventKind};
use compactor::ports::{ObjectStore, PutOptions};
use compactor::testkit::servers;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn records_expire_after_the_ttl_and_verify_counts_the_sources_it_can_no_longer_check() {
    let Some(endpoint) = servers::dynamodb_endpoint() else { return };
    let directory = tempfile::tempdir().unwrap();
    let store = LocalDir::open(directory.path().join("buckets")).unwrap();
    store.create_bucket("src").unwrap();
    let config = RawConfig {
        source_bucket: Some("src".into()),
        grace: Some("1h".into()),
        record_ttl: Some("30d".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let (manifest, table) = servers::dynamodb_manifest_with_fresh_table(config.layout.clone()).await.unwrap();
    let manifest = manifest.with_record_ttl(config.record_ttl);
    let clock = ManualClock::new(at("2024-01-20T00:00:00Z"));
    let compactor = Compactor::new(config, Arc::new(store.clone()), Arc::new(manifest), Arc::new(clock.clone()));

    let mut events = Vec::new();
    for (index, name) in ["a.json", "b.json", "c.json"].into_iter().enumerate() {
        let key = format!("app/2024/01/14/{name}");
        let meta =
            store.put("src", &key, Bytes::from(format!("{{\"{name}\":1}}\n")), PutOptions::default()).await.unwrap();
        events.push(ObjectEvent {
            kind: ObjectEventKind::Created { size: meta.size, etag: meta.etag },
            bucket: "src".into(),
            key,
            sequencer: format!("{:016X}", index + 1),
            event_time: at("2024-01-14T12:00:00Z"),
            event_name: "ObjectCreated:Put".into(),
        });
    }
    compactor.ingest(&events).await.unwrap();
    let sealed_at = clock.now();
    let report = compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!(report.expiry.tagged, 3, "{report:?}");

    // Exactly the three source records carry the expiry time: the mark's time plus 30 days.
    let client = servers::dynamodb_test_client(&endpoint).await;
    let scanned = client
        .scan()
        .table_name(table.table())
        .filter_expression("attribute_exists(#expires_at)")
        .expression_attribute_names("#expires_at", RECORD_EXPIRY_ATTRIBUTE)
        .send()
        .await
        .unwrap();
    let expiring = scanned.items();
    let mut keys: Vec<&str> = expiring.iter().map(|item| item["sk"].as_s().unwrap().as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["app/2024/01/14/a.json", "app/2024/01/14/b.json", "app/2024/01/14/c.json"]);
    for item in expiring {
        let expires_at: i64 = item[RECORD_EXPIRY_ATTRIBUTE].as_n().unwrap().parse().unwrap();
        assert_eq!(expires_at, (sealed_at + Duration::days(30)).timestamp());
    }

    // DynamoDB deletes expired items on its own schedule; no local server does, so one record
    // goes the way TTL would take it.
    let gone = &expiring[0];
    client
        .delete_item()
        .table_name(table.table())
        .key("pk", gone["pk"].clone())
        .key("sk", gone["sk"].clone())
        .send()
        .await
        .unwrap();

    // Before the TTL has run out a missing record is a problem...
    let early = compactor.verify(None, false, |_| {}).await.unwrap();
    assert!(!early.all_verified());
    assert!(early.failures[0].contains("places 2 sources in it, its record says 3"), "{:?}", early.failures);
    // ...after it, an expected absence: counted, and the rest verified.
    clock.advance(Duration::days(30));
    let late = compactor.verify(None, false, |_| {}).await.unwrap();
    assert!(late.all_verified(), "{:?}", late.failures);
    assert_eq!((late.source_records_expired, late.sources_checked, late.outputs_ok), (1, 2, 1));
}
