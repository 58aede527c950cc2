//! The adapter's own tests (the shared ones are `testkit::manifest_conformance`'s): item
//! encodings, request counts and the races the module doc describes, against ministack.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, ProvisionedThroughputExceededException, ResourceNotFoundException,
};
use aws_smithy_mocks::{create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode};

use super::*;
use crate::testkit::manifest_conformance::{at, day_partition, key_of as partition_key_of, new_object};
use crate::testkit::servers;

fn test_layout() -> Layout {
    Layout::parse("%Y/%m/%d", None).expect("a valid layout")
}

async fn new_table(client: Client, endpoint: &str) -> (DynamoDbManifest, servers::FreshTable) {
    servers::dynamodb_manifest_on_fresh_table(client, endpoint, test_layout()).await
}

async fn new_test_manifest() -> Option<(DynamoDbManifest, servers::FreshTable)> {
    servers::dynamodb_manifest_with_fresh_table(test_layout()).await
}

async fn new_dynamodb_manifest() -> Option<(Arc<dyn Manifest>, servers::FreshTable)> {
    let (manifest, guard) = new_test_manifest().await?;
    Some((Arc::new(manifest), guard))
}

mod conformance {
    crate::manifest_conformance_tests!(optional super::new_dynamodb_manifest);
}

// ── pure parts ──────────────────────────────────────────────────────────────────────

#[test]
fn shards_are_fnv1a_and_never_change() {
    // Pinned to the published FNV-1a 64 values: a change here would hide every recorded
    // object of every table.
    assert_eq!(object_shard(""), (0xcbf2_9ce4_8422_2325_u64 % 16) as u32);
    assert_eq!(object_shard("a"), (0xaf63_dc4c_8601_ec8c_u64 % 16) as u32);
    assert_eq!(object_shard("foobar"), (0x8594_4171_f739_67e8_u64 % 16) as u32);
    let shards: BTreeSet<u32> = (0..200).map(|index| object_shard(&format!("logs/2024/01/14/{index}.json"))).collect();
    assert_eq!(shards.len(), OBJECT_SHARDS as usize, "keys spread over every shard");
}

#[test]
fn close_times_sort_as_strings_in_time_order() {
    let times = [-5_i64, -1, 0, 1, 1_700_000_000_000_000, i64::MAX];
    let encoded: Vec<String> = times.iter().map(|micros| ordered_micros(*micros)).collect();
    let mut sorted = encoded.clone();
    sorted.sort();
    assert_eq!(encoded, sorted);
    assert!(encoded.iter().all(|text| text.len() == 20));
}

#[test]
fn expressions_name_every_attribute_through_a_placeholder() {
    let names = names_in(&["#state = :pending AND #output_key = :k", "SET #size = :size REMOVE #gsi1pk"]);
    let mut placeholders: Vec<&str> = names.keys().map(String::as_str).collect();
    placeholders.sort();
    assert_eq!(placeholders, ["#gsi1pk", "#output_key", "#size", "#state"]);
    assert_eq!(names["#state"], "state");
}

#[test]
fn sources_index_keys_cannot_be_confused_across_paths() {
    assert_ne!(sources_index_pk("b", "x/#y/", "z"), sources_index_pk("b", "x/", "#y/z"));
}

// ── offline: error mapping with stubbed responses ───────────────────────────────────

fn mocked_manifest(rules: &[&Rule]) -> DynamoDbManifest {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "testtesttest", None, None, "mock"))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        .build();
    DynamoDbManifest::new(Client::from_conf(config), "manifest-table", test_layout())
}

#[tokio::test]
async fn a_missing_table_says_how_to_create_it() {
    let missing = mock!(Client::batch_get_item).then_error(|| {
        aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemError::ResourceNotFoundException(
            ResourceNotFoundException::builder().message("Requested resource not found").build(),
        )
    });
    let manifest = mocked_manifest(&[&missing]);
    let error = manifest.object("source", "logs/2024/01/14/a.json").await.expect_err("the table is missing");
    assert!(matches!(error, ManifestError::Backend { backend: "dynamodb", .. }), "{error:?}");
    let message =
        format!("{error}: {}", std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default());
    assert!(message.contains("manifest-table does not exist"), "{message}");
    assert!(message.contains("s3-compactor init"), "{message}");
}

#[tokio::test]
async fn throttling_after_the_sdk_retries_is_a_backend_error_that_says_so() {
    let object = new_object(&day_partition("logs", 14), "a.json", "10", 10);
    let absent =
        mock!(Client::get_item).then_output(|| aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder().build());
    let throttled = mock!(Client::put_item).then_error(|| {
        PutItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder().message("Rate exceeded").build(),
        )
    });
    let manifest = mocked_manifest(&[&absent, &throttled]);
    let error = manifest.record_object(&object).await.expect_err("throttled");
    let message = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
    assert!(message.contains("throttled PutItem on table manifest-table"), "{message}");
}

#[tokio::test]
async fn a_failed_lock_condition_is_locked_with_the_holder_or_not_found() {
    let partition = partition_key_of(&day_partition("logs", 14));
    let now = at("2024-01-16T00:00:00Z");
    let expires_at = now + Duration::minutes(5);
    let held = mock!(Client::update_item).then_error(move || {
        UpdateItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .item("pk", string_value("P#conformance-source#logs/2024/01/14/"))
                .item("sk", string_value(PARTITION_SORT_KEY))
                .item("bucket", string_value("conformance-source"))
                .item("path", string_value("logs/2024/01/14/"))
                .item("period_start", time_value(now))
                .item("period_end", time_value(now))
                .item("closes_at", time_value(now))
                .item("state", string_value("sealing"))
                .item("generation", number_value(3))
                .item("lock_owner", string_value("seal-elsewhere"))
                .item("lease_expires_at", time_value(expires_at))
                .build(),
        )
    });
    // The schema check before the first lock: a table of this build's schema (an older one
    // would get it recorded first).
    let current_schema_item = || {
        mock!(Client::get_item).then_output(|| {
            aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder()
                .item("pk", string_value("#SCHEMA"))
                .item("sk", string_value("#"))
                .item("version", number_value(SCHEMA_VERSION))
                .build()
        })
    };
    match mocked_manifest(&[&current_schema_item(), &held]).acquire(&partition, "me", now, Duration::minutes(15)).await
    {
        Err(ManifestError::Locked { owner, expires_at: when, .. }) => {
            assert_eq!((owner.as_str(), when), ("seal-elsewhere", expires_at));
        }
        other => panic!("a held lock is Locked, got {other:?}"),
    }

    let unknown = mock!(Client::update_item).then_error(|| {
        UpdateItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build())
    });
    let result = mocked_manifest(&[&current_schema_item(), &unknown])
        .acquire(&partition, "me", now, Duration::minutes(15))
        .await;
    assert!(matches!(result, Err(ManifestError::NotFound { .. })), "no old item: unknown partition, got {result:?}");
}

// ── against the server ──────────────────────────────────────────────────────────────

/// Records the operation (`x-amz-target`) of every request a client sends.
#[derive(Debug, Clone, Default)]
struct OperationLog(Arc<Mutex<Vec<String>>>);

impl Intercept for OperationLog {
    fn name(&self) -> &'static str {
        "OperationLog"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let target = context.request().headers().get("x-amz-target").unwrap_or("?");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(operation);
        Ok(())
    }
}

impl OperationLog {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[tokio::test]
async fn a_hot_partition_spreads_over_shards_and_pages_in_key_order() {
    let Some((manifest, _table)) = new_test_manifest().await else { return };
    // Object items, as a manifest with a record TTL writes them (arrival items otherwise).
    let manifest = manifest.with_record_ttl(Some(Duration::days(30)));
    let partition = day_partition("hot", 14);
    let key = partition_key_of(&partition);
    let names: Vec<String> = (0..300).map(|index| format!("object {index:04} é.json")).collect();
    stream::iter(&names)
        .map(|name| {
            let object = new_object(&partition, name, "10", 1);
            let manifest = &manifest;
            async move { manifest.record_object(&object).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("ingest a burst into one partition");

    let mut items_per_shard = Vec::new();
    for shard in 0..OBJECT_SHARDS {
        let items = manifest
            .query_all(
                None,
                "#pk = :pk",
                None,
                values([(":pk", string_value(object_shard_pk(&key.bucket, &key.path, shard)))]),
                true,
            )
            .await
            .unwrap();
        items_per_shard.push(items.len());
    }
    let shards_used = items_per_shard.iter().filter(|count| **count > 0).count();
    assert!(shards_used >= 8, "one partition's objects spread over the shards: {items_per_shard:?}");
    assert_eq!(items_per_shard.iter().sum::<usize>(), names.len());

    let removed = new_object(&partition, &names[7], "10", 1);
    manifest.record_removal(&crate::testkit::manifest_conformance::removal_of(&removed, "20")).await.unwrap();
    for (query, expected_count) in
        [(ObjectQuery::all(), names.len()), (ObjectQuery::in_state(ObjectState::Pending), names.len() - 1)]
    {
        let mut paged = Vec::new();
        let mut query = ObjectQuery { limit: 37, ..query };
        loop {
            let page = manifest.objects(&key, &query).await.unwrap();
            assert!(page.len() <= 37);
            let Some(last) = page.last() else { break };
            query.start_after = Some(last.key.clone());
            paged.extend(page.into_iter().map(|object| object.key));
        }
        let mut sorted = paged.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(paged, sorted, "pages are in key order across shards, without repeats");
        assert_eq!(paged.len(), expected_count);
    }
    let record = manifest.partition(&key).await.unwrap().unwrap();
    assert_eq!((record.pending_objects, record.pending_bytes), (names.len() as u64 - 1, names.len() as u64 - 1));
}

#[tokio::test]
async fn closed_partitions_is_a_query_of_the_sparse_index_never_a_scan() {
    let Some(endpoint) = servers::dynamodb_endpoint() else { return };
    let log = OperationLog::default();
    let config = servers::dynamodb_test_config(&endpoint).await.interceptor(log.clone()).build();
    let (manifest, _table) = new_table(Client::from_conf(config), &endpoint).await;
    for day in 10..13 {
        manifest.record_object(&new_object(&day_partition("logs", day), "a.json", "10", 10)).await.unwrap();
    }
    log.take();

    let closed = manifest.closed_partitions(at("2024-01-20T00:00:00Z"), 10).await.unwrap();
    assert_eq!(closed.len(), 3);
    let operations = log.take();
    assert!(!operations.iter().any(|operation| operation == "Scan"), "{operations:?}");
    assert_eq!(operations.iter().filter(|operation| *operation == "Scan").count(), 0);
    assert!(operations.contains(&"Query".to_owned()), "{operations:?}");

    manifest.partitions(None, 10).await.unwrap();
    manifest.objects(&partition_key_of(&day_partition("logs", 10)), &ObjectQuery::all()).await.unwrap();
    let operations = log.take();
    assert!(!operations.iter().any(|operation| operation == "Scan"), "{operations:?}");

    // The index is sparse: a sealed partition leaves it.
    let sealed_key = partition_key_of(&day_partition("logs", 10));
    let now = at("2024-01-20T00:00:00Z");
    let lease = manifest.acquire(&sealed_key, "seal-1", now, Duration::minutes(15)).await.unwrap();
    manifest.mark_missing(&lease, "logs/2024/01/10/a.json", "10", "gone").await.unwrap();
    manifest.release(&lease, now).await.unwrap();
    let flagged = manifest
        .query_all(
            Some(PENDING_INDEX),
            "#gsi1pk = :pending_flag",
            None,
            values([(":pending_flag", string_value(PENDING_FLAG))]),
            false,
        )
        .await
        .unwrap();
    assert_eq!(flagged.len(), 2, "only the partitions that may have pending objects are in the index");
}

/// What the seal asks for costs one index Query and a GetItem per partition, whatever the
/// partitions hold; `closed_partitions` reads every object item of each (16 shard Queries)
/// and its outputs on top.
#[tokio::test]
async fn closed_partition_keys_reads_the_index_and_the_partition_items_only() {
    let Some(endpoint) = servers::dynamodb_endpoint() else { return };
    let log = OperationLog::default();
    let config = servers::dynamodb_test_config(&endpoint).await.interceptor(log.clone()).build();
    let (manifest, _table) = new_table(Client::from_conf(config), &endpoint).await;
    for day in 10..13 {
        for name in ["a.json", "b.json", "c.json"] {
            manifest.record_object(&new_object(&day_partition("logs", day), name, "10", 10)).await.unwrap();
        }
    }
    // Day 9: its only object removed, so it has no work, which only counting shows.
    let removed = new_object(&day_partition("logs", 9), "a.json", "10", 10);
    manifest.record_object(&removed).await.unwrap();
    manifest.record_removal(&crate::testkit::manifest_conformance::removal_of(&removed, "20")).await.unwrap();
    let now = at("2024-01-20T00:00:00Z");
    log.take();

    let keys = manifest.closed_partition_keys(now, 10).await.unwrap();
    let paths: Vec<&str> = keys.iter().map(|key| key.path.as_str()).collect();
    assert_eq!(paths, ["logs/2024/01/09/", "logs/2024/01/10/", "logs/2024/01/11/", "logs/2024/01/12/"]);
    let operations = log.take();
    assert_eq!(
        (count_of(&operations, "Query"), count_of(&operations, "GetItem"), operations.len()),
        (1, 4, 5),
        "{operations:?}"
    );

    let records = manifest.closed_partitions(now, 10).await.unwrap();
    assert_eq!(records.len(), 3, "counting leaves out the partition without work");
    let operations = log.take();
    assert!(count_of(&operations, "Query") >= 3 * (OBJECT_SHARDS as usize + 1), "{operations:?}");

    // Sealing day 9 (nothing to do) takes it out of the index for good.
    let day_9 = partition_key_of(&day_partition("logs", 9));
    let lease = manifest.acquire(&day_9, "seal-1", now, Duration::minutes(15)).await.unwrap();
    assert_eq!(manifest.release(&lease, now).await.unwrap().state, PartitionState::Sealed);
    assert_eq!(manifest.closed_partition_keys(now, 10).await.unwrap().len(), 3);
}

fn count_of(operations: &[String], name: &str) -> usize {
    operations.iter().filter(|operation| *operation == name).count()
}

/// `COMPACTOR_RECORD_TTL`: the table's time to live is on `expires_at` either way; with a
/// TTL, marking a compacted source writes `expires_at` (epoch seconds, mark + TTL) on its
/// item and on nothing else (pending objects, partitions, outputs); without one, nothing
/// carries it. A newer version of a marked source replaces the item, without it.
#[tokio::test]
async fn a_record_ttl_puts_expires_at_on_marked_objects_only() {
    use crate::testkit::manifest_conformance::{lease_for, seal_pending_into_one_output, SOURCE_BUCKET};

    let Some(endpoint) = servers::dynamodb_endpoint() else { return };
    let client = servers::dynamodb_test_client(&endpoint).await;
    for record_ttl in [Some(Duration::days(400)), None] {
        let (manifest, table) = new_table(client.clone(), &endpoint).await;
        let manifest = manifest.with_record_ttl(record_ttl);
        let described = client.describe_time_to_live().table_name(table.table()).send().await.unwrap();
        let description = described.time_to_live_description().expect("a TTL description");
        assert_eq!(description.attribute_name(), Some(RECORD_EXPIRY_ATTRIBUTE));
        assert_eq!(
            description.time_to_live_status(),
            Some(&aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled),
            "create_table enables the table's TTL whatever the manifest's record TTL"
        );
        // Creating it again (a rerun of `init`) finds it enabled and leaves it.
        manifest.create_table().await.expect("create_table is idempotent");

        let partition = day_partition("logs", 14);
        let key = partition_key_of(&partition);
        let [marked, unmarked] = ["marked.json", "unmarked.json"].map(|name| new_object(&partition, name, "10", 10));
        for object in [&marked, &unmarked] {
            manifest.record_object(object).await.unwrap();
        }
        let now = at("2024-01-16T00:00:00Z");
        let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
        let output = seal_pending_into_one_output(&manifest, &lease, 1, now).await;
        let pending = new_object(&partition, "pending.json", "10", 10);
        manifest.record_object(&pending).await.unwrap();
        let mark_time = at("2024-01-16T00:05:00Z");
        manifest.mark_expiry(SOURCE_BUCKET, &[marked.key.clone(), pending.key.clone()], mark_time).await.unwrap();
        manifest.release(&lease, now).await.unwrap();

        let object_item = |object: &NewObject| {
            key_of(object_item_pk(&object.bucket, &object.partition.path, &object.key), object.key.clone())
        };
        let expires_at_of = |item: Option<Item>| -> Option<String> {
            // Without a record TTL, sources live in arrival records until a mark of their own.
            item?.get(RECORD_EXPIRY_ATTRIBUTE).map(|value| {
                value
                    .as_n()
                    .cloned()
                    .unwrap_or_else(|_| panic!("{RECORD_EXPIRY_ATTRIBUTE} must be a Number: {value:?}"))
            })
        };
        let expected = record_ttl.map(|record_ttl| (mark_time + record_ttl).timestamp().to_string());
        assert_eq!(expires_at_of(manifest.get_item(object_item(&marked)).await.unwrap()), expected, "{record_ttl:?}");
        assert_eq!(expires_at_of(manifest.get_item(object_item(&unmarked)).await.unwrap()), None, "not marked yet");
        assert_eq!(expires_at_of(manifest.get_item(object_item(&pending)).await.unwrap()), None, "pending");
        let partition_item = key_of(partition_item_pk(SOURCE_BUCKET, &partition.path), PARTITION_SORT_KEY);
        assert_eq!(expires_at_of(manifest.get_item(partition_item).await.unwrap()), None, "partition");
        let (output_item, _) = manifest.load_output(&output.bucket, &output.key).await.unwrap().expect("the output");
        assert_eq!(expires_at_of(Some(output_item)), None, "output");

        // A newer version of the marked source is pending again, and loses the expiry time.
        manifest.record_object(&new_object(&partition, "marked.json", "20", 12)).await.unwrap();
        let replaced = manifest.get_item(object_item(&marked)).await.unwrap();
        assert_eq!(expires_at_of(replaced), None, "a newer, pending version");
    }
}

/// The interleaving the ingest counter exists for: release counts nothing pending, a late
/// object is ingested, then release writes. The write must not seal (or drop the partition
/// from the pending index); the next round counts the object and opens the partition.
#[tokio::test]
async fn init_records_the_schema_version_and_a_newer_one_is_refused_with_advice() {
    let Some((manifest, _table)) = new_test_manifest().await else { return };
    assert_eq!(manifest.schema_version().await.unwrap(), SCHEMA_VERSION, "create_table records it");
    manifest.create_table().await.expect("init again on a table of this schema");

    // A table from before the schema item reads as schema 1, which this build reads as is.
    // (The test's own DeleteItem, through a client not named `client`: seal-fn's template
    // test lists the SDK calls of the adapter code that SealRole must be granted.)
    let sdk = manifest.client.clone();
    sdk.delete_item()
        .table_name(&manifest.table)
        .set_key(Some(key_of("#SCHEMA".to_owned(), "#")))
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.schema_version().await.unwrap(), 1);
    manifest.check_schema().await.expect("schema 1 needs no migration");
    manifest.create_table().await.expect("init on a schema-1 table records the new version");
    assert_eq!(manifest.schema_version().await.unwrap(), SCHEMA_VERSION);

    // A seal's first lock on a table of an older schema records this one, before it writes
    // a source a build of the older schema would misread (schema 3's derived outputs).
    let mut older = key_of("#SCHEMA".to_owned(), "#");
    older.insert("version".to_owned(), number_value(2));
    manifest.client.put_item().table_name(&manifest.table).set_item(Some(older)).send().await.unwrap();
    let sealing = DynamoDbManifest::new(manifest.client.clone(), manifest.table.clone(), test_layout());
    let partition = day_partition("logs", 13);
    sealing.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    sealing
        .acquire(&partition_key_of(&partition), "seal-1", at("2024-01-16T00:00:00Z"), Duration::minutes(15))
        .await
        .unwrap();
    assert_eq!(manifest.schema_version().await.unwrap(), SCHEMA_VERSION, "the seal raised it");

    let mut newer = key_of("#SCHEMA".to_owned(), "#");
    newer.insert("version".to_owned(), number_value(SCHEMA_VERSION + 1));
    manifest.client.put_item().table_name(&manifest.table).set_item(Some(newer)).send().await.unwrap();
    let fresh = DynamoDbManifest::new(manifest.client.clone(), manifest.table.clone(), test_layout());
    let partition = day_partition("logs", 14);
    let ingest_error = fresh.record_object(&new_object(&partition, "a.json", "10", 10)).await;
    let ingest_message = format!("{:#}", ingest_error.expect_err("ingest must not append to a newer schema"));
    assert!(ingest_message.contains("newer s3-compactor"), "{ingest_message}");
    let error = fresh
        .acquire(&partition_key_of(&partition), "seal-1", at("2024-01-16T00:00:00Z"), Duration::minutes(15))
        .await
        .expect_err("a seal must not write into a table of a newer schema");
    let message = format!("{error:#}");
    assert!(message.contains("newer s3-compactor") && message.contains("upgrade"), "{message}");
    let init_error = fresh.create_table().await.expect_err("init never downgrades the marker");
    assert!(init_error.to_string().contains("manifest dynamodb failed"), "{init_error}");
    assert_eq!(fresh.schema_version().await.unwrap(), SCHEMA_VERSION + 1);
}

#[tokio::test]
async fn a_release_that_counted_before_a_late_ingest_does_not_seal() {
    let Some((manifest, _table)) = new_test_manifest().await else { return };
    let partition = day_partition("logs", 14);
    let key = partition_key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, Duration::minutes(15)).await.unwrap();
    manifest.mark_missing(&lease, "logs/2024/01/14/a.json", "10", "gone").await.unwrap();

    let counted = manifest.count_for_release(&lease).await.unwrap();
    assert_eq!(counted.counts.pending_objects, 0);
    let late = new_object(&partition, "late.json", "10", 7);
    assert_eq!(manifest.record_object(&late).await.unwrap(), IngestOutcome::Appended);
    assert!(manifest.write_release(&lease, counted, now).await.unwrap().is_none(), "the stale count must not seal");

    let released = manifest.release(&lease, now).await.unwrap();
    assert_eq!((released.state, released.pending_objects), (PartitionState::Open, 1));
    let closed = manifest.closed_partitions(now, 10).await.unwrap();
    assert_eq!(closed.into_iter().map(|record| record.key).collect::<Vec<_>>(), [key]);
}

/// `record_objects` (an SQS batch) writes one arrival item per partition, then reads each
/// partition's flag once, not once per object; a batch that lands in a sealed partition
/// reopens it; a replayed batch adds duplicates that the reads drop.
#[tokio::test]
async fn a_batch_reads_each_partition_flag_once_and_reopens_a_sealed_one() {
    let Some(endpoint) = servers::dynamodb_endpoint() else { return };
    let log = OperationLog::default();
    let config = servers::dynamodb_test_config(&endpoint).await.interceptor(log.clone()).build();
    let (manifest, _table) = new_table(Client::from_conf(config), &endpoint).await;
    let (day_14, day_15) = (day_partition("logs", 14), day_partition("logs", 15));
    let batch = |name: &str| -> Vec<NewObject> {
        (0..20)
            .map(|index| {
                let partition = if index % 2 == 0 { &day_14 } else { &day_15 };
                new_object(partition, &format!("{name}-{index:02}.json"), "10", 10)
            })
            .collect()
    };
    log.take();
    let outcomes = manifest.record_objects(&batch("first")).await.unwrap();
    assert!(outcomes.iter().all(|outcome| *outcome == IngestOutcome::Appended), "{outcomes:?}");
    let operations = log.take();
    assert_eq!(count_of(&operations, "GetItem"), 1 + 2, "the schema once, one flag read per partition: {operations:?}");
    assert_eq!(count_of(&operations, "PutItem"), 2 + 2, "an arrival item per partition, then the two new partitions");

    // Day 14 sealed with nothing pending; the next batch reopens it with one flag write.
    let key_14 = partition_key_of(&day_14);
    let now = at("2024-01-20T00:00:00Z");
    let lease = manifest.acquire(&key_14, "seal-1", now, Duration::minutes(15)).await.unwrap();
    for object in manifest.objects(&key_14, &ObjectQuery::in_state(ObjectState::Pending)).await.unwrap() {
        manifest.mark_missing(&lease, &object.key, &object.sequencer, "cleared for the test").await.unwrap();
    }
    assert_eq!(manifest.release(&lease, now).await.unwrap().state, PartitionState::Sealed);
    log.take();
    manifest.record_objects(&batch("second")).await.unwrap();
    let operations = log.take();
    assert_eq!(count_of(&operations, "GetItem"), 2, "{operations:?}");
    assert_eq!(count_of(&operations, "UpdateItem"), 1, "only the sealed partition is written: {operations:?}");
    let reopened = manifest.partition(&key_14).await.unwrap().unwrap();
    assert_eq!((reopened.state, reopened.pending_objects), (PartitionState::Open, 10));
    let closed = manifest.closed_partition_keys(now, 10).await.unwrap();
    assert_eq!(closed.len(), 2, "both partitions are in the pending index: {closed:?}");

    // A replay of the batch appends duplicates, which change nothing, and reads each flag once.
    log.take();
    let replayed = manifest.record_objects(&batch("second")).await.unwrap();
    assert!(replayed.iter().all(|outcome| *outcome == IngestOutcome::Appended), "{replayed:?}");
    let operations = log.take();
    assert_eq!(count_of(&operations, "GetItem"), 2, "{operations:?}");
    assert_eq!(count_of(&operations, "PutItem"), 2, "{operations:?}");
    assert_eq!(count_of(&operations, "UpdateItem"), 0, "both partitions are open and flagged: {operations:?}");
    let after_replay = manifest.partition(&key_14).await.unwrap().unwrap();
    assert_eq!(after_replay.pending_objects, 10, "the duplicates are dropped");
}

/// Records the items each write request writes: one per `PutItem`, `UpdateItem` and
/// `DeleteItem`, one per statement of a `BatchExecuteStatement` (the seal's are all
/// single-item updates), and one per written item of a `TransactWriteItems` (its
/// `ConditionCheck`s write nothing). Items here are under 1 KB, so each is one write unit
/// (two inside a transaction); reads are not recorded. A request sent again with the same
/// body is the SDK retrying a slow emulator's answer, and counts once.
#[derive(Debug, Clone, Default)]
struct ItemWriteLog(Arc<Mutex<Vec<WriteRequest>>>);

/// A write request as sent: its operation, its body, and the items it writes.
type WriteRequest = (String, Vec<u8>, usize);

impl Intercept for ItemWriteLog {
    fn name(&self) -> &'static str {
        "ItemWriteLog"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let target = context.request().headers().get("x-amz-target").unwrap_or("?");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        let bytes = context.request().body().bytes().unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
        let listed = |name: &str| body.get(name).and_then(serde_json::Value::as_array).map(Vec::as_slice);
        let items = match operation.as_str() {
            "PutItem" | "UpdateItem" | "DeleteItem" => 1,
            "BatchExecuteStatement" => listed("Statements").unwrap_or_default().len(),
            "TransactWriteItems" => listed("TransactItems")
                .unwrap_or_default()
                .iter()
                .filter(|item| item.get("ConditionCheck").is_none())
                .count(),
            _ => return Ok(()),
        };
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((operation, bytes.to_vec(), items));
        Ok(())
    }
}

impl ItemWriteLog {
    /// Items written since the last call, by operation.
    fn take(&self) -> HashMap<String, usize> {
        let writes = std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut items = HashMap::new();
        let mut bodies = std::collections::HashSet::new();
        for (operation, body, count) in writes {
            if bodies.insert(body) {
                *items.entry(operation).or_default() += count;
            }
        }
        items
    }
}

/// What the seal writes to DynamoDB per source, pinned so that no per-source write comes
/// back (or is added) silently: none. A source's `compacted` state is derived from its
/// committed output's placement chunks (`derived`), so sealing n sources into one output
/// writes the output's items, its placement chunk, the chunk directory and the commit:
/// the same few items at 60 and at 120 sources, and no `BatchExecuteStatement` (the flips
/// `mark_compacted` used to send, 25 to a request).
#[tokio::test]
async fn a_seal_writes_no_item_per_source() {
    use crate::testkit::manifest_conformance::{lease_for, seal_pending_into_one_output};

    let Some(endpoint) = servers::dynamodb_endpoint() else { return };
    let log = ItemWriteLog::default();
    let config = servers::dynamodb_test_config(&endpoint).await.interceptor(log.clone()).build();
    let (manifest, _table) = new_table(Client::from_conf(config), &endpoint).await;
    let now = at("2024-01-20T00:00:00Z");
    let mut per_count = Vec::new();
    for (day, sources) in [(14, 60_usize), (15, 120)] {
        let partition = day_partition("cost", day);
        let objects: Vec<NewObject> =
            (0..sources).map(|index| new_object(&partition, &format!("{index:04}.json"), "10", 300)).collect();
        for batch in objects.chunks(100) {
            manifest.record_objects(batch).await.unwrap();
        }
        let lease = manifest.acquire(&partition_key_of(&partition), "seal-1", now, lease_for()).await.unwrap();
        log.take();
        let output = seal_pending_into_one_output(&manifest, &lease, 1, now).await;
        let written = log.take();
        assert_eq!(written.get("BatchExecuteStatement"), None, "no flip per source: {written:?}");
        per_count.push(written.values().sum::<usize>());
        // And yet every source reads compacted, through its output's placements.
        let record = manifest.partition(&partition_key_of(&partition)).await.unwrap().unwrap();
        assert_eq!((record.pending_objects, record.compacted_objects), (0, sources as u64));
        let compacted = manifest.objects(&lease.partition, &ObjectQuery::in_state(ObjectState::Compacted)).await;
        assert!(compacted
            .unwrap()
            .iter()
            .all(|source| { source.placement.as_ref().is_some_and(|placement| placement.output_key == output.key) }));
    }
    assert_eq!(per_count[0], per_count[1], "nothing grows with the sources: {per_count:?}");
    assert!(per_count[0] <= 8, "an output's own items, one chunk and its directory: {per_count:?}");
}

/// Fails every request whose body names `key`: a write (or read) the table refuses.
#[derive(Debug, Clone)]
struct RefuseRequestsNaming(&'static str);

impl Intercept for RefuseRequestsNaming {
    fn name(&self) -> &'static str {
        "RefuseRequestsNaming"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let body = context.request().body().bytes().unwrap_or_default();
        if String::from_utf8_lossy(body).contains(self.0) {
            return Err(format!("the test refuses requests naming {}", self.0).into());
        }
        Ok(())
    }
}

/// A batch in which one object write fails fails as a whole (the ingest handler then tells
/// which message), but the object written beside it is flagged in its partition first.
#[tokio::test]
async fn a_batch_whose_write_fails_still_flags_the_partitions_of_the_objects_it_wrote() {
    use crate::testkit::manifest_conformance::SOURCE_BUCKET;

    let Some(endpoint) = servers::dynamodb_endpoint() else { return };
    // The arrival item of day 15 (records are binary: its partition key names the day).
    let config = servers::dynamodb_test_config(&endpoint)
        .await
        .interceptor(RefuseRequestsNaming("A#conformance-source#logs/2024/01/15/"))
        .build();
    let (manifest, table) = new_table(Client::from_conf(config), &endpoint).await;
    let (day_14, day_15) = (day_partition("logs", 14), day_partition("logs", 15));
    let batch = [new_object(&day_14, "a.json", "10", 10), new_object(&day_15, "refused.json", "10", 10)];
    manifest.record_objects(&batch).await.expect_err("one write is refused");

    let reader = DynamoDbManifest::new(servers::dynamodb_test_client(&endpoint).await, table.table(), test_layout());
    let written = reader.object(SOURCE_BUCKET, &batch[0].key).await.unwrap().expect("the other object is written");
    assert_eq!(written.state, ObjectState::Pending);
    assert_eq!(reader.object(SOURCE_BUCKET, &batch[1].key).await.unwrap(), None);
    let closed = reader.closed_partition_keys(at("2024-01-20T00:00:00Z"), 10).await.unwrap();
    assert_eq!(closed, [partition_key_of(&day_14)], "the written object's partition is flagged, and only it");
}

/// `record_placements` reads a window by range Queries per shard (by key where a shard's
/// range is mostly other items, or holds one key of the window) and decides as reads by key
/// did: exactly the sources no longer pending as the placed version are superseded.
#[tokio::test]
async fn placements_read_by_key_range_find_exactly_the_superseded_sources() {
    let Some(endpoint) = servers::dynamodb_endpoint() else { return };
    let log = OperationLog::default();
    let config = servers::dynamodb_test_config(&endpoint).await.interceptor(log.clone()).build();
    let (manifest, _table) = new_table(Client::from_conf(config), &endpoint).await;
    // Object items, as a manifest with a record TTL writes them: the range reads are theirs.
    let manifest = manifest.with_record_ttl(Some(Duration::days(30)));
    let partition = day_partition("dense", 14);
    let objects: Vec<NewObject> =
        (0..600).map(|index| new_object(&partition, &format!("{index:04}.json"), "10", 10)).collect();
    for batch in objects.chunks(100) {
        manifest.record_objects(batch).await.unwrap();
    }
    let shard_keys = |shard: u32| -> Vec<&NewObject> {
        objects.iter().filter(|object| object_shard(&object.key) == shard).collect()
    };
    // A dense range: a shard's first and last key, ~37 of its items between them.
    let dense = shard_keys(0);
    let dense = [dense[0], dense[dense.len() - 1]];
    // A sparse one: six neighbours on one shard. A lone key on a third shard.
    let sparse: Vec<&NewObject> = shard_keys(1).into_iter().skip(10).take(6).collect();
    let lone = shard_keys(2)[5];
    let mut window: Vec<&NewObject> = dense.iter().copied().chain(sparse.iter().copied()).collect();
    window.push(lone);
    window.sort_by(|one, other| one.key.cmp(&other.key));

    let key = partition_key_of(&partition);
    let now = at("2024-01-20T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, Duration::minutes(15)).await.unwrap();
    // While the window is written: newer versions of one dense key, one sparse key and the
    // lone one; another sparse key removed.
    for object in [dense[1], sparse[2], lone] {
        let newer = NewObject { sequencer: "20".to_owned(), ..object.clone() };
        assert_eq!(manifest.record_object(&newer).await.unwrap(), IngestOutcome::Updated);
    }
    let removal = crate::testkit::manifest_conformance::removal_of(sparse[4], "20");
    assert_eq!(manifest.record_removal(&removal).await.unwrap(), IngestOutcome::Removed);
    let placements: Vec<SourcePlacement> = window
        .iter()
        .enumerate()
        .map(|(index, object)| SourcePlacement {
            key: object.key.clone(),
            sequencer: object.sequencer.clone(),
            etag: object.etag.clone(),
            size: object.size,
            placement: Placement {
                output_key: "compacted/out.json".to_owned(),
                generation: lease.generation,
                offset: 10 * index as u64,
                length: 10,
                sha256: "0".repeat(64),
                separator_bytes: 0,
            },
        })
        .collect();
    log.take();
    let superseded = manifest.record_placements(&lease, "compacted/out.json", &placements).await.unwrap();
    let mut expected: Vec<String> =
        [dense[1], sparse[2], sparse[4], lone].iter().map(|object| object.key.clone()).collect();
    expected.sort();
    assert_eq!(superseded, expected);
    let operations = log.take();
    assert_eq!(
        count_of(&operations, "Query"),
        2 + 1 + 1 + 1,
        "one page for the sparse range, two for the dense one, the output item for its chunk directory, and \
         the arrival items written since the scan (none)"
    );
    assert_eq!(count_of(&operations, "BatchGetItem"), 1, "the lone key and the dense range's rest: {operations:?}");
}

/// The same race with real concurrency, many times: whatever the interleaving, a pending
/// object always leaves its partition `open` and in the pending index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_ingests_and_releases_never_strand_a_pending_object() {
    let Some((manifest, _table)) = new_test_manifest().await else { return };
    let manifest = Arc::new(manifest);
    let partition = day_partition("race", 14);
    let key = partition_key_of(&partition);
    manifest.record_object(&new_object(&partition, "first.json", "10", 1)).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    for round in 0..12 {
        let lease = manifest.acquire(&key, "seal", now, Duration::minutes(15)).await.unwrap();
        for object in manifest.objects(&key, &ObjectQuery::in_state(ObjectState::Pending)).await.unwrap() {
            manifest.mark_missing(&lease, &object.key, &object.sequencer, "cleared for the race").await.unwrap();
        }
        let ingester = {
            let manifest = Arc::clone(&manifest);
            let late = new_object(&partition, &format!("late-{round}.json"), "10", 1);
            tokio::spawn(async move { manifest.record_object(&late).await })
        };
        let releaser = {
            let manifest = Arc::clone(&manifest);
            let lease = lease.clone();
            tokio::spawn(async move { manifest.release(&lease, now).await })
        };
        ingester.await.unwrap().unwrap();
        releaser.await.unwrap().unwrap();
        let record = manifest.partition(&key).await.unwrap().unwrap();
        assert_eq!(record.pending_objects, 1, "round {round}");
        assert_eq!(record.state, PartitionState::Open, "round {round}: a pending object keeps the partition open");
        let closed = manifest.closed_partitions(now, 10).await.unwrap();
        assert_eq!(closed.len(), 1, "round {round}: the pending object's partition stays in the pending index");
    }
}

#[path = "arrivals_tests.rs"]
mod arrivals_tests;
