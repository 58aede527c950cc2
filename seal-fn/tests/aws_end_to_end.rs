//! The whole real path on local AWS-compatible servers (ministack: S3 with event
//! notifications, SQS, DynamoDB):
//!
//! PutObject → S3 notification → SQS → ingest-fn's handler → DynamoDB manifest →
//! seal-fn's scheduled handler → SQS fan-out → seal-fn's worker handler → outputs in S3,
//! verified byte for byte, sources tagged, and the outputs' own notifications skipped.
//!
//! Runs when `COMPACTOR_TEST_MINISTACK_ENDPOINT` is set (the test script sets it); skips loudly
//! otherwise, and fails under CI.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use chrono::{Duration, Utc};
use compactor::adapters::dynamodb::DynamoDbManifest;
use compactor::adapters::s3::{AmazonS3, S3Options};
use compactor::clock::SystemClock;
use compactor::config::RawConfig;
use compactor::domain::records::ObjectState;
use compactor::engine::{Compactor, IngestReport, SkipReason};
use compactor::metrics::Emf;
use compactor::ports::Tag;
use compactor::testkit::s3_server::FreshBucket;
use compactor::testkit::servers::{
    dynamodb_test_client, ministack_endpoint, FreshTable, TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY,
};
use ingest_fn::IngestFunction;
use seal_fn::sqs::SqsFanOut;
use seal_fn::{FanOut, SealFunction};
use serde_json::{json, Value};

fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(TEST_REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            TEST_ACCESS_KEY_ID,
            TEST_SECRET_ACCESS_KEY,
            None,
            None,
            "e2e",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Receives what is on the queue as one Lambda SQS event (up to 10 messages), or `None`.
async fn receive_as_lambda_event(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Option<(Value, Vec<(String, String)>)> {
    let received = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("ReceiveMessage");
    let messages = received.messages();
    if messages.is_empty() {
        return None;
    }
    let mut handles = Vec::new();
    let records: Vec<Value> = messages
        .iter()
        .map(|message| {
            let id = message.message_id().unwrap_or_default().to_string();
            handles.push((id.clone(), message.receipt_handle().unwrap_or_default().to_string()));
            json!({
                "messageId": id,
                "receiptHandle": message.receipt_handle(),
                "body": message.body(),
                "attributes": {},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:test",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    Some((json!({ "Records": records }), handles))
}

/// Deletes the messages Lambda would delete: all but the reported batch item failures.
async fn acknowledge(sqs: &aws_sdk_sqs::Client, queue_url: &str, handles: &[(String, String)], response: &Value) {
    let failed: Vec<&str> = response["batchItemFailures"]
        .as_array()
        .map(|failures| failures.iter().filter_map(|failure| failure["itemIdentifier"].as_str()).collect())
        .unwrap_or_default();
    for (id, receipt) in handles {
        if !failed.contains(&id.as_str()) {
            sqs.delete_message().queue_url(queue_url).receipt_handle(receipt).send().await.expect("DeleteMessage");
        }
    }
}

/// Runs ingest-fn's handler over the ingest queue until `done` says the report is complete.
async fn drain_ingest_queue(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    compactor: &Compactor,
    done: impl Fn(&IngestReport) -> bool,
) -> IngestReport {
    let ingest = IngestFunction { compactor: compactor.clone(), metrics: Emf::capture("S3Compactor/e2e").0 };
    let started = Instant::now();
    let mut report = IngestReport::default();
    while !done(&report) {
        assert!(started.elapsed() < StdDuration::from_secs(60), "notifications did not all arrive: {report:?}");
        let Some((event, handles)) = receive_as_lambda_event(sqs, queue_url).await else { continue };
        let invocation = ingest.handle(event).await.expect("the ingest handler runs");
        assert!(
            invocation.failed_message_ids.is_empty(),
            "no message should fail: {:?}",
            invocation.failed_message_ids
        );
        report.merge(&invocation.report);
        let response = serde_json::to_value(invocation.response()).unwrap();
        acknowledge(sqs, queue_url, &handles, &response).await;
    }
    report
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> (String, String) {
    let url = sqs.create_queue().queue_name(name).send().await.expect("CreateQueue").queue_url().unwrap().to_string();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes");
    let arn = attributes.attributes().and_then(|map| map.get(&QueueAttributeName::QueueArn)).unwrap().clone();
    (url, arn)
}

/// Deletes the test's queues when dropped, also when the test fails, so that no run leaves
/// them behind on the server. Like `FreshBucket`, on a thread of its own with its own runtime:
/// `Drop` cannot `.await`, and the test's runtime is busy running this very `drop`.
struct QueuesGuard {
    endpoint: String,
    queue_urls: Vec<String>,
}

impl Drop for QueuesGuard {
    fn drop(&mut self) {
        let (endpoint, queue_urls) = (self.endpoint.clone(), std::mem::take(&mut self.queue_urls));
        let deleter = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                eprintln!("warning: cannot start a runtime; queues {queue_urls:?} are left behind");
                return;
            };
            runtime.block_on(async {
                let sqs = sqs_client(&endpoint);
                for queue_url in queue_urls {
                    let deletion = sqs.delete_queue().queue_url(&queue_url).send();
                    match tokio::time::timeout(StdDuration::from_secs(10), deletion).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => eprintln!("warning: queue {queue_url} is left behind: {error}"),
                        Err(_) => eprintln!("warning: queue {queue_url} is left behind: DeleteQueue took over 10s"),
                    }
                }
            });
        });
        let _ = deleter.join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_flow_from_s3_notifications_through_ingest_and_fanned_out_seals_into_verified_outputs() {
    let Some(endpoint) = ministack_endpoint() else { return };
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let bucket = format!("e2e-{suffix}");
    let table = format!("e2e-manifest-{suffix}");
    let s3 = compactor::testkit::s3_server::test_client(&endpoint);
    let sqs = sqs_client(&endpoint);

    // The deployment: a bucket whose notifications go to the ingest queue, a manifest table,
    // and the seal workers' queue.
    // Each is removed by its guard when the test ends, passed or failed.
    s3.create_bucket().bucket(&bucket).send().await.expect("CreateBucket");
    let bucket_guard = FreshBucket::adopt(&endpoint, &bucket);
    let mut queues_guard = QueuesGuard { endpoint: endpoint.clone(), queue_urls: Vec::new() };
    let (ingest_queue, ingest_queue_arn) = create_queue(&sqs, &format!("ingest-{suffix}")).await;
    queues_guard.queue_urls.push(ingest_queue.clone());
    let (seal_queue, _) = create_queue(&sqs, &format!("seal-{suffix}")).await;
    queues_guard.queue_urls.push(seal_queue.clone());
    let notifications = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn(&ingest_queue_arn)
                .events(Event::S3ObjectCreated)
                .events(Event::S3ObjectRemoved)
                .build()
                .unwrap(),
        )
        .build();
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(notifications)
        .send()
        .await
        .expect("PutBucketNotificationConfiguration");

    let config = RawConfig { source_bucket: Some(bucket.clone()), ..Default::default() }.validate().unwrap();
    let dynamodb = dynamodb_test_client(&endpoint).await;
    let manifest = DynamoDbManifest::new(dynamodb.clone(), table.clone(), config.layout.clone());
    manifest.create_table().await.expect("the manifest table");
    let table_guard = FreshTable::adopt(&endpoint, &table);
    let store = AmazonS3::new(s3.clone(), S3Options::default());
    let compactor = Compactor::new(config, Arc::new(store), Arc::new(manifest), Arc::new(SystemClock));

    // Objects as producers write them: spaces, '+', non-ASCII; a folder marker; one deleted.
    let mut originals: BTreeMap<String, Bytes> = BTreeMap::new();
    for day in 14..=16 {
        for index in 0..4 {
            let key = format!("app/2024/01/{day}/my file+{index} é.json");
            let body =
                Bytes::from(format!("{{\"day\":{day},\"index\":{index}}}{}", if index == 0 { "" } else { "\n" }));
            s3.put_object().bucket(&bucket).key(&key).body(body.clone().into()).send().await.expect("PutObject");
            originals.insert(key, body);
        }
    }
    s3.put_object().bucket(&bucket).key("app/2024/01/14/").body(Bytes::new().into()).send().await.unwrap();
    let doomed = "app/2024/01/15/deleted soon.json";
    s3.put_object().bucket(&bucket).key(doomed).body(Bytes::from_static(b"{}\n").into()).send().await.unwrap();
    s3.delete_object().bucket(&bucket).key(doomed).send().await.unwrap();

    // DynamoDB appends creations and removals unread (`appended`): 13 creations and a removal.
    let ingested = drain_ingest_queue(&sqs, &ingest_queue, &compactor, |report| {
        report.recorded + report.updated + report.removed + report.removal_ignored + report.appended >= 14
            && report.skipped_total() >= 1
    })
    .await;
    assert_eq!(ingested.skipped.get(&SkipReason::FolderMarker), Some(&1), "{ingested:?}");
    let removed = compactor.manifest().object(&bucket, doomed).await.expect("the manifest answers");
    assert_eq!(removed.map(|record| record.state), Some(ObjectState::Removed), "{ingested:?}");

    // The schedule fires: three closed partitions, more than the threshold, so they fan out.
    let fan_out: Arc<dyn FanOut> = Arc::new(SqsFanOut { client: sqs.clone(), queue_url: seal_queue.clone() });
    let seal = SealFunction {
        compactor: compactor.clone(),
        fan_out: Some(fan_out),
        fan_out_threshold: 1,
        deadline_margin: Duration::seconds(30),
        metrics: Emf::capture("S3Compactor/e2e").0,
    };
    let lambda_deadline = Utc::now() + Duration::minutes(15);
    let scheduled = seal.handle(json!({}), lambda_deadline).await.expect("the scheduled run").to_json();
    assert_eq!(scheduled, json!({ "fanned_out": 3 }));

    // The workers take the messages from the seal queue.
    let mut sealed_messages = 0;
    let started = Instant::now();
    while sealed_messages < 3 {
        assert!(started.elapsed() < StdDuration::from_secs(60), "seal messages did not all arrive");
        let Some((event, handles)) = receive_as_lambda_event(&sqs, &seal_queue).await else { continue };
        let response = seal.handle(event, lambda_deadline).await.expect("the worker run").to_json();
        assert_eq!(response, json!({ "batchItemFailures": [] }));
        acknowledge(&sqs, &seal_queue, &handles, &response).await;
        sealed_messages += handles.len();
    }

    // Every output verifies, against the manifest and against the original objects.
    let verified = compactor.verify(None, true, |_| {}).await.expect("verify runs");
    assert!(verified.all_verified(), "{:?}", verified.failures);
    assert_eq!((verified.outputs_checked, verified.sources_checked, verified.originals_compared), (3, 12, 12));
    for (key, original) in &originals {
        let (_, restored) = compactor.restore_bytes(key).await.expect("restore");
        assert_eq!(&restored, original, "{key}");
        let tags = s3.get_object_tagging().bucket(&bucket).key(key).send().await.expect("GetObjectTagging");
        let tags: Vec<Tag> = tags.tag_set().iter().map(|tag| Tag::new(tag.key(), tag.value())).collect();
        assert!(tags.contains(&Tag::new("compacted", "true")), "{key}: {tags:?}");
    }

    // The outputs were written into the source bucket: their notifications come back to ingest
    // and are skipped, never compacted again.
    let echoes = drain_ingest_queue(&sqs, &ingest_queue, &compactor, |report| report.skipped_total() >= 3).await;
    assert_eq!(echoes.skipped.get(&SkipReason::UnderDestination), Some(&3), "{echoes:?}");
    assert_eq!(echoes.recorded + echoes.appended, 0);

    // Nothing is left behind on the server.
    drop((queues_guard, table_guard, bucket_guard));
    let queues = sqs.list_queues().queue_name_prefix(format!("ingest-{suffix}")).send().await.expect("ListQueues");
    let seal_queues = sqs.list_queues().queue_name_prefix(format!("seal-{suffix}")).send().await.expect("ListQueues");
    assert!(queues.queue_urls().is_empty() && seal_queues.queue_urls().is_empty(), "{queues:?} {seal_queues:?}");
    assert!(dynamodb.describe_table().table_name(&table).send().await.is_err(), "table {table} is left behind");
    assert!(s3.head_bucket().bucket(&bucket).send().await.is_err(), "bucket {bucket} is left behind");
}
