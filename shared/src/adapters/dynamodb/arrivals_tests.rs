//! Arrival items against ministack: what the conformance suite cannot see from outside (old
//! object items beside arrival items, a damaged item, a crash between item and flag, a kept
//! cursor between pages).

use super::*;
use crate::domain::arrivals::Arrival;
use crate::testkit::manifest_conformance::{removal_of, seal_pending_into_one_output, SOURCE_BUCKET};

async fn keys_of(manifest: &DynamoDbManifest, key: &PartitionKey, query: ObjectQuery) -> Vec<String> {
    manifest.objects(key, &query).await.unwrap().into_iter().map(|record| record.key).collect()
}

/// A table written by per-object ingest (an older build, or a record TTL) and then by arrival
/// items reads as one: each key's newest version wins, whichever item holds it.
#[tokio::test]
async fn object_items_of_an_older_ingest_and_arrival_records_combine_by_sequencer() {
    let Some((manifest, _table)) = new_test_manifest().await else { return };
    let per_object = manifest.clone().with_record_ttl(Some(Duration::days(30)));
    let partition = day_partition("logs", 14);
    let key = partition_key_of(&partition);
    let [a, b, c] = ["a.json", "b.json", "c.json"].map(|name| new_object(&partition, name, "10", 10));
    per_object.record_objects(&[a.clone(), b.clone(), c.clone()]).await.unwrap();

    let newer_a = NewObject { size: 20, ..new_object(&partition, "a.json", "20", 20) };
    let older_b = NewObject { size: 99, ..new_object(&partition, "b.json", "05", 99) };
    let outcomes = manifest.record_objects(&[newer_a.clone(), older_b]).await.unwrap();
    assert_eq!(outcomes, [IngestOutcome::Appended; 2]);
    manifest.record_removal(&removal_of(&c, "30")).await.unwrap();

    let a_now = manifest.object(SOURCE_BUCKET, &a.key).await.unwrap().unwrap();
    assert_eq!((a_now.sequencer.as_str(), a_now.size, a_now.state), ("20", 20, ObjectState::Pending));
    let b_now = manifest.object(SOURCE_BUCKET, &b.key).await.unwrap().unwrap();
    assert_eq!((b_now.sequencer.as_str(), b_now.size), ("10", 10), "the older arrival changes nothing");
    let c_now = manifest.object(SOURCE_BUCKET, &c.key).await.unwrap().unwrap();
    assert_eq!(c_now.state, ObjectState::Removed, "a removal appended after the object item");
    assert_eq!(
        keys_of(&manifest, &key, ObjectQuery::in_state(ObjectState::Pending)).await,
        [a.key.clone(), b.key.clone()]
    );

    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, Duration::minutes(15)).await.unwrap();
    seal_pending_into_one_output(&manifest, &lease, 1, now).await;
    let released = manifest.release(&lease, now).await.unwrap();
    assert_eq!((released.state, released.compacted_objects, released.compacted_bytes), (PartitionState::Sealed, 2, 30));
    let a_sealed = manifest.object(SOURCE_BUCKET, &a.key).await.unwrap().unwrap();
    assert_eq!((a_sealed.state, a_sealed.sequencer.as_str()), (ObjectState::Compacted, "20"));
}

/// A damaged arrival item stops the reads of its partition with an error that names the item
/// and says what to do; it never reads as an empty partition (which a release would seal).
#[tokio::test]
async fn a_damaged_arrival_item_fails_reads_naming_it_and_the_remedy() {
    let Some((manifest, _table)) = new_test_manifest().await else { return };
    let partition = day_partition("logs", 14);
    let key = partition_key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let mut damaged = key_of(arrivals::arrival_pk(&key.bucket, &key.path), "00000000000000000001#broken");
    damaged.insert("records".to_owned(), AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![1, 0, 200])));
    manifest.client.put_item().table_name(&manifest.table).set_item(Some(damaged)).send().await.unwrap();

    let error = manifest.objects(&key, &ObjectQuery::all()).await.expect_err("a damaged item must not be skipped");
    let message =
        format!("{error}: {}", std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default());
    assert!(message.contains("00000000000000000001#broken"), "{message}");
    assert!(message.contains("damaged") && message.contains("rescan"), "{message}");
    assert!(manifest.partition(&key).await.is_err(), "counts read the same items");
}

/// ingest crashed after its arrival item and before the partition's flag: the partition is
/// not listed for a seal until the batch is retried, whose duplicate records change nothing.
#[tokio::test]
async fn a_crash_between_the_arrival_item_and_the_flag_is_finished_by_the_retried_batch() {
    let Some((manifest, _table)) = new_test_manifest().await else { return };
    let partition = day_partition("logs", 14);
    let key = partition_key_of(&partition);
    let object = new_object(&partition, "a.json", "10", 10);
    let record = Arrival::created(&object.key, &object.sequencer, object.size, object.etag.clone(), object.event_time);
    manifest.write_arrival_items(&key.bucket, &key.path, vec![record]).await.unwrap();
    let now = at("2024-01-20T00:00:00Z");
    assert!(manifest.closed_partition_keys(now, 10).await.unwrap().is_empty(), "not flagged yet");

    manifest.record_objects(std::slice::from_ref(&object)).await.unwrap();
    assert_eq!(manifest.closed_partition_keys(now, 10).await.unwrap(), std::slice::from_ref(&key));
    let record = manifest.partition(&key).await.unwrap().unwrap();
    assert_eq!((record.pending_objects, record.pending_bytes), (1, 10), "the duplicate record is dropped");
}

/// The seal pages a partition with a cursor kept between pages; an arrival written between two
/// pages is still seen by the second: the kept cursor (which has not passed the page's start)
/// is found stale by its check and made anew. Without new items it serves the next page.
#[tokio::test]
async fn a_page_after_a_new_arrival_item_sees_it() {
    let Some((manifest, _table)) = new_test_manifest().await else { return };
    let partition = day_partition("logs", 14);
    let key = partition_key_of(&partition);
    let [a, b, c, d] = ["a.json", "b.json", "c.json", "d.json"].map(|name| new_object(&partition, name, "10", 10));
    manifest.record_objects(&[a.clone(), c.clone(), d.clone()]).await.unwrap();
    let page = |start_after: Option<&NewObject>, limit| ObjectQuery {
        start_after: start_after.map(|object| object.key.clone()),
        limit,
        ..ObjectQuery::in_state(ObjectState::Pending)
    };
    assert_eq!(keys_of(&manifest, &key, page(None, 1)).await, std::slice::from_ref(&a.key));
    manifest.record_object(&b).await.unwrap();
    assert_eq!(keys_of(&manifest, &key, page(Some(&a), 2)).await, [b.key.clone(), c.key.clone()]);
    assert_eq!(
        keys_of(&manifest, &key, page(Some(&c), 2)).await,
        std::slice::from_ref(&d.key),
        "the kept cursor goes on"
    );
}

/// A scan that found no object item in a partition lets the next pages of the same manifest
/// skip the 16 shards (most of a seal's requests); an object item written since by another
/// process is left to the next run, as a late arrival is, but never missed by the counts
/// that `release` seals on; one this process writes (an exception) is read at once.
#[tokio::test]
async fn a_scan_that_found_no_object_items_lets_later_pages_skip_the_shards_but_never_the_counts() {
    let Some(endpoint) = servers::dynamodb_endpoint() else { return };
    let log = OperationLog::default();
    let config = servers::dynamodb_test_config(&endpoint).await.interceptor(log.clone()).build();
    let (manifest, table) = new_table(Client::from_conf(config), &endpoint).await;
    let partition = day_partition("logs", 14);
    let key = partition_key_of(&partition);
    let [a, b, c] = ["a.json", "b.json", "c.json"].map(|name| new_object(&partition, name, "10", 10));
    manifest.record_objects(&[a.clone(), b.clone()]).await.unwrap();

    log.take();
    assert_eq!(keys_of(&manifest, &key, ObjectQuery { limit: 1, ..ObjectQuery::all() }).await.len(), 1);
    let first = count_of(&log.take(), "Query");
    assert!(first >= OBJECT_SHARDS as usize, "the first page reads every shard: {first} Queries");
    let next = ObjectQuery { start_after: Some(a.key.clone()), ..ObjectQuery::all() };
    assert_eq!(keys_of(&manifest, &key, next.clone()).await, std::slice::from_ref(&b.key));
    let later = count_of(&log.take(), "Query");
    assert!(later <= 3, "the next page skips the shards: {later} Queries");

    // Another process writes an object item (an ingest with a record TTL).
    let elsewhere = DynamoDbManifest::new(servers::dynamodb_test_client(&endpoint).await, table.table(), test_layout())
        .with_record_ttl(Some(Duration::days(30)));
    elsewhere.record_object(&c).await.unwrap();
    let record = manifest.partition(&key).await.unwrap().unwrap();
    assert_eq!(record.pending_objects, 3, "the counts read the shards afresh");

    // An exception this process writes is an object item too: read at once.
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, Duration::minutes(15)).await.unwrap();
    manifest.mark_missing(&lease, &b.key, &b.sequencer, "gone").await.unwrap();
    let pending = keys_of(
        &manifest,
        &key,
        ObjectQuery { start_after: Some(a.key.clone()), ..ObjectQuery::in_state(ObjectState::Pending) },
    );
    assert_eq!(pending.await, std::slice::from_ref(&c.key));
}
