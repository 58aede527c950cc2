//! The S3 + DynamoDB side of the benchmark: counted clients, one fresh bucket and table per
//! measurement, and the measured phases that run on them.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use aws_config::BehaviorVersion;
use chrono::NaiveDate;
use compactor::adapters::dynamodb::DynamoDbManifest;
use compactor::adapters::s3::{AmazonS3, S3Options};
use compactor::clock::SystemClock;
use compactor::config::{Config, RawConfig};
use compactor::domain::cost::{self, RequestCounts};
use compactor::engine::ingest::IngestReport;
use compactor::engine::seal::SealOptions;
use compactor::engine::verify::VerifyReport;
use compactor::engine::Compactor;
use compactor::event::{ObjectEvent, ObjectEventKind};
use compactor::ports::{GetOptions, ObjectStore};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use test_data::{DatasetKind, DatasetSpec, WriteSummary};

use crate::counting::{Counts, RequestCounter};
use crate::template::Deployed;

/// Where the servers are.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// The S3-compatible endpoint.
    #[arg(long, env = "AWS_ENDPOINT_URL_S3")]
    pub s3_endpoint: String,
    /// The DynamoDB-compatible endpoint.
    #[arg(long, env = "AWS_ENDPOINT_URL_DYNAMODB")]
    pub dynamodb_endpoint: String,
}

/// What one measured phase did, and the requests it made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measured {
    pub objects: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub requests: Counts,
    /// The Lambda invocations the phase is in a deployment, and their handler time (each
    /// rounded up to the millisecond, as billed), at the template's `memory_mb`.
    pub invocations: u64,
    pub handler_seconds: f64,
    pub memory_mb: u64,
    /// SQS requests: the message each S3 event becomes, and the event source's receive and
    /// delete batches.
    pub sqs_requests: u64,
}

impl Measured {
    /// Requests and units, SQS included, in the shape the cost model prices.
    pub fn priced(&self) -> RequestCounts {
        RequestCounts { sqs_requests: self.sqs_requests, ..self.requests.priced() }
    }

    pub fn lambda_gb_seconds(&self) -> f64 {
        self.handler_seconds * self.memory_mb as f64 / 1024.0
    }

    pub fn lambda_usd(&self) -> f64 {
        cost::lambda_cost_usd(self.invocations, self.handler_seconds, self.memory_mb)
    }

    /// Everything the phase is billed: requests, units and Lambda.
    pub fn cost_usd(&self) -> f64 {
        self.priced().cost_usd() + self.lambda_usd()
    }

    pub fn objects_per_second(&self) -> f64 {
        self.objects as f64 / self.seconds.max(1e-9)
    }

    pub fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

/// The clients, shared by every deployment, with one request counter.
pub struct Backend {
    s3: aws_sdk_s3::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    pub counter: RequestCounter,
    pub deployed: Deployed,
}

impl Backend {
    pub async fn connect(endpoints: &Endpoints) -> anyhow::Result<Backend> {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let counter = RequestCounter::default();
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .endpoint_url(&endpoints.s3_endpoint)
            .force_path_style(true)
            .retry_config(compactor::adapters::s3::retry_config())
            .interceptor(counter.clone())
            .build();
        let dynamodb_config = aws_sdk_dynamodb::config::Builder::from(&shared)
            .endpoint_url(&endpoints.dynamodb_endpoint)
            .retry_config(compactor::adapters::dynamodb::retry_config())
            .interceptor(counter.clone())
            .build();
        Ok(Backend {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb_config),
            counter,
            deployed: Deployed::from_template()?,
        })
    }

    /// A new bucket and manifest table named after `purpose`, with the default configuration
    /// but for the bucket.
    pub async fn fresh_deployment(&self, purpose: &str) -> anyhow::Result<Deployment> {
        let name = format!("bench-{purpose}-{}", uuid_suffix());
        self.deployment(&name, &name, true).await
    }

    /// Like [`fresh_deployment`](Self::fresh_deployment), with `COMPACTOR_EXPIRY=expiry`.
    pub async fn fresh_deployment_with_expiry(&self, purpose: &str, expiry: &str) -> anyhow::Result<Deployment> {
        let name = format!("bench-{purpose}-{}", uuid_suffix());
        self.deployment_with(&name, &name, true, Some(expiry)).await
    }

    /// The S3 store on the counted client.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(AmazonS3::new(self.s3.clone(), S3Options::default()))
    }

    /// A new, empty bucket named after `purpose`.
    pub async fn fresh_bucket(&self, purpose: &str) -> anyhow::Result<String> {
        let bucket = format!("bench-{purpose}-{}", uuid_suffix());
        self.s3
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .with_context(|| format!("cannot create bucket {bucket}: is the S3 server up?"))?;
        Ok(bucket)
    }

    /// The deployment on `bucket` and `table`, created first when `create` is set.
    pub async fn deployment(&self, bucket: &str, table: &str, create: bool) -> anyhow::Result<Deployment> {
        self.deployment_with(bucket, table, create, None).await
    }

    async fn deployment_with(
        &self,
        bucket: &str,
        table: &str,
        create: bool,
        expiry: Option<&str>,
    ) -> anyhow::Result<Deployment> {
        if create {
            self.s3
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .with_context(|| format!("cannot create bucket {bucket}: is the S3 server up?"))?;
        }
        let config = RawConfig {
            source_bucket: Some(bucket.to_string()),
            expiry: expiry.map(str::to_string),
            ..Default::default()
        }
        .validate()?;
        let manifest = DynamoDbManifest::new(self.dynamodb.clone(), table, config.layout.clone());
        if create {
            manifest.create_table().await.with_context(|| format!("cannot create table {table}"))?;
        }
        let store: Arc<dyn ObjectStore> = Arc::new(AmazonS3::new(self.s3.clone(), S3Options::default()));
        let compactor = Compactor::new(config, store, Arc::new(manifest), Arc::new(SystemClock));
        Ok(Deployment {
            bucket: bucket.to_string(),
            table: table.to_string(),
            compactor,
            s3: self.s3.clone(),
            counter: self.counter.clone(),
            deployed: self.deployed,
        })
    }
}

impl Backend {
    /// The seal's S3 path with the manifest in SQLite (the DynamoDB emulator serves one request
    /// at a time, far slower than DynamoDB) under `COMPACTOR_EXPIRY=expiry`, on a fresh copy of
    /// `dataset` (a seal tags or deletes its sources, so each mode needs sources of its own):
    /// upload, ingest, then the measured seal, whose outputs are verified. Returns the seal and
    /// the outputs verified.
    pub async fn sqlite_seal_of_fresh_copy(
        &self,
        dataset: &DatasetSpec,
        dir: &std::path::Path,
        expiry: &str,
    ) -> anyhow::Result<(Measured, u64)> {
        let bucket = self.fresh_bucket(&format!("sqlite-{expiry}")).await?;
        let config =
            RawConfig { source_bucket: Some(bucket.clone()), expiry: Some(expiry.to_string()), ..Default::default() }
                .validate()?;
        let deployment = self.sqlite_deployment_with(&bucket, &dir.join(format!("{bucket}.sqlite")), config)?;
        let written = deployment.upload(dataset, 64).await?;
        deployment.compactor.ingest(&written.events).await?;
        let seal = deployment.seal().await?;
        let verified = deployment.verify().await?;
        anyhow::ensure!(verified.all_verified(), "the seal on S3 + SQLite did not verify: {:?}", verified.failures);
        Ok((seal, verified.outputs_ok))
    }
    /// The default configuration on `bucket` with the manifest in SQLite at `manifest_path`:
    /// the seal's S3 path exactly as with DynamoDB, without the emulator's own speed.
    pub fn sqlite_deployment(&self, bucket: &str, manifest_path: &std::path::Path) -> anyhow::Result<Deployment> {
        self.sqlite_deployment_with(bucket, manifest_path, bench_config(bucket)?)
    }

    /// As [`Backend::sqlite_deployment`], under `config`.
    pub fn sqlite_deployment_with(
        &self,
        bucket: &str,
        manifest_path: &std::path::Path,
        config: Config,
    ) -> anyhow::Result<Deployment> {
        let manifest = compactor::adapters::sqlite::SqliteManifest::open(manifest_path)?;
        let store: Arc<dyn ObjectStore> = Arc::new(AmazonS3::new(self.s3.clone(), S3Options::default()));
        Ok(Deployment {
            bucket: bucket.to_string(),
            table: String::new(),
            compactor: Compactor::new(config, store, Arc::new(manifest), Arc::new(SystemClock)),
            s3: self.s3.clone(),
            counter: self.counter.clone(),
            deployed: self.deployed,
        })
    }
}

fn uuid_suffix() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis())
}

/// The defaults, outputs under `compacted/` of the source bucket.
pub fn bench_config(bucket: &str) -> anyhow::Result<Config> {
    Ok(RawConfig { source_bucket: Some(bucket.to_string()), ..Default::default() }.validate()?)
}

/// The throughput dataset: seed-json (2-20 KiB files, 6 records each), `days` closed
/// partitions from 2024-01-01.
pub fn throughput_dataset(days: u32, files_per_day: u32) -> DatasetSpec {
    DatasetSpec {
        kind: DatasetKind::SeedJson,
        seed: 7,
        start_date: NaiveDate::from_ymd_opt(2024, 1, 1).expect("a valid date"),
        days,
        files_per_day,
        prefix: "logs/".to_string(),
        ..DatasetSpec::default()
    }
}

/// CloudTrail gzip files (one `{"Records":[...]}` document each, 44% under 1,000 bytes), the
/// same number as the throughput dataset, for the cost of inflating every gzip source.
pub fn cloudtrail_dataset(days: u32, files_per_day: u32) -> DatasetSpec {
    DatasetSpec { seed: 7, days, files_per_day, ..DatasetSpec::demo(DatasetKind::CloudTrail) }
}

/// One bucket and table, and the engine on them.
pub struct Deployment {
    pub bucket: String,
    pub table: String,
    pub compactor: Compactor,
    pub s3: aws_sdk_s3::Client,
    counter: RequestCounter,
    pub deployed: Deployed,
}

impl Deployment {
    pub fn counter_snapshot(&self) -> Counts {
        self.counter.snapshot()
    }

    /// Runs `phase`, timing it and counting its requests.
    async fn measure<T>(
        &self,
        phase: impl std::future::Future<Output = anyhow::Result<(T, u64, u64)>>,
    ) -> anyhow::Result<(T, Measured)> {
        let before = self.counter.snapshot();
        let started = Instant::now();
        let (value, objects, bytes) = phase.await?;
        let seconds = started.elapsed().as_secs_f64();
        let requests = self.counter.snapshot().since(&before);
        Ok((value, Measured { objects, bytes, seconds, requests, ..Measured::default() }))
    }

    /// PUTs the dataset into the bucket (not measured) and returns its events.
    pub async fn upload(&self, dataset: &DatasetSpec, concurrency: usize) -> anyhow::Result<WriteSummary> {
        let spec = DatasetSpec { bucket: self.bucket.clone(), ..dataset.clone() };
        test_data::write_to_store(&spec, self.compactor.store().as_ref(), concurrency, |_, _| {}).await
    }

    /// GETs every object of `events` once, as many at a time as one seal run of them reads at
    /// most (partitions sealed at once, no more than `events` has, × reads per partition), and
    /// drops the bytes.
    pub async fn raw_get_ceiling(&self, events: &[ObjectEvent]) -> anyhow::Result<Measured> {
        let config = self.compactor.config();
        let partitions: std::collections::BTreeSet<_> = events
            .iter()
            .filter_map(|event| config.layout.partition_of(&event.key).ok())
            .map(|partition| partition.path)
            .collect();
        let concurrency = config.partition_concurrency.min(partitions.len()).max(1) * config.read_concurrency;
        let store = self.compactor.store();
        let (_, measured) = self
            .measure(async {
                let bytes = futures::stream::iter(events)
                    .map(|event| async move {
                        let result = store.get(&event.bucket, &event.key, GetOptions::default()).await?;
                        Ok::<u64, anyhow::Error>(result.bytes().await?.len() as u64)
                    })
                    .buffer_unordered(concurrency)
                    .try_fold(0u64, |total, bytes| async move { Ok(total + bytes) })
                    .await?;
                Ok(((), events.len() as u64, bytes))
            })
            .await?;
        Ok(measured)
    }

    /// Records `events` as ingest-fn would: one engine call per SQS batch of the template's
    /// `BatchSize`, `concurrency` of them at once (Lambda invocations side by side). Each
    /// call's duration is its invocation's billed time.
    pub async fn ingest(&self, events: &[ObjectEvent], concurrency: usize) -> anyhow::Result<Measured> {
        let (measured, report) = self.ingest_batches(events, concurrency).await?;
        anyhow::ensure!(report.skipped_total() == 0, "the benchmark's events were skipped: {report:?}");
        Ok(measured)
    }

    /// Records the "Object Deleted" event of every source of `created`, as ingest-fn receives
    /// them once compacted sources go: the seal's own deletes in delete mode, the lifecycle
    /// rule's expirations of tagged sources in tag mode. Where the template's rule routes
    /// "Object Deleted" (it does not today), each becomes an SQS message, and ingest
    /// reads each source's item to find it compacted, and ignores it. This is a cost of every
    /// compacted object, paid after the seal. Every event must be ignored: a removal that took
    /// a compacted source out of the manifest would be a bug.
    pub async fn removals(&self, created: &[ObjectEvent], concurrency: usize) -> anyhow::Result<Measured> {
        let events: Vec<ObjectEvent> = created.iter().map(removal_of).collect();
        let (mut measured, report) = self.ingest_batches(&events, concurrency).await?;
        anyhow::ensure!(
            report.removal_ignored == events.len() as u64,
            "every removal of a compacted source is ignored, but: {report:?}"
        );
        measured.objects = created.len() as u64;
        measured.bytes = event_bytes(created);
        Ok(measured)
    }

    /// `events` through the engine as ingest-fn hands them over: one call per SQS batch, with
    /// the billed time, the invocations and the SQS requests of their delivery.
    async fn ingest_batches(
        &self,
        events: &[ObjectEvent],
        concurrency: usize,
    ) -> anyhow::Result<(Measured, IngestReport)> {
        let compactor = &self.compactor;
        let bytes = event_bytes(events);
        let batch_size = usize::try_from(self.deployed.ingest_batch_size).unwrap_or(usize::MAX).max(1);
        let ((handler_seconds, report), mut measured) = self
            .measure(async {
                let totals = futures::stream::iter(events.chunks(batch_size))
                    .map(|batch| async move {
                        let started = Instant::now();
                        let report = compactor.ingest(batch).await?;
                        Ok::<_, anyhow::Error>((report, started.elapsed()))
                    })
                    .buffer_unordered(concurrency.max(1))
                    .try_fold((0.0, IngestReport::default()), |(seconds, mut total), (report, duration)| async move {
                        total.merge(&report);
                        Ok((seconds + billed_seconds(duration), total))
                    })
                    .await?;
                Ok((totals, events.len() as u64, bytes))
            })
            .await?;
        measured.invocations = events.len().div_ceil(batch_size) as u64;
        measured.handler_seconds = handler_seconds;
        measured.memory_mb = self.deployed.ingest_memory_mb;
        measured.sqs_requests = sqs_delivery_requests(events, batch_size);
        Ok((measured, report))
    }

    /// Seals every closed partition, as one scheduled seal-fn run does: one invocation, billed
    /// for the whole run. (Past `SEAL_FAN_OUT_THRESHOLD` partitions the scheduled run sends
    /// one message per partition to workers instead: a few requests per partition, not per
    /// object, left out here.)
    pub async fn seal(&self) -> anyhow::Result<Measured> {
        let (_, mut measured) = self
            .measure(async {
                let report = self.compactor.seal_closed(&SealOptions::default()).await?;
                anyhow::ensure!(report.failures.is_empty(), "the seal failed: {:?}", report.failures);
                Ok(((), report.objects_compacted, report.source_bytes))
            })
            .await?;
        measured.invocations = 1;
        measured.handler_seconds = billed_seconds(std::time::Duration::from_secs_f64(measured.seconds));
        measured.memory_mb = self.deployed.seal_memory_mb;
        Ok(measured)
    }

    pub async fn verify(&self) -> anyhow::Result<VerifyReport> {
        Ok(self.compactor.verify(None, false, |_| {}).await?)
    }
}

/// Lambda bills duration by the millisecond, rounded up.
fn billed_seconds(duration: std::time::Duration) -> f64 {
    duration.as_micros().div_ceil(1000) as f64 / 1000.0
}

/// SQS requests of delivering `events` to ingest-fn: each event's S3 notification sent as one
/// message, received 10 messages a request (SQS's maximum) and deleted 10 a request, within
/// batches of `batch_size`. Lambda's pollers also make empty receives while the queue is idle:
/// a cost per hour, not per object, left out.
pub fn sqs_delivery_requests(events: &[ObjectEvent], batch_size: usize) -> u64 {
    let message_bytes: Vec<u64> = events
        .iter()
        .map(|event| compactor::event::s3_notification(std::slice::from_ref(event)).to_string().len() as u64)
        .collect();
    let sends: u64 = message_bytes.iter().map(|&bytes| cost::sqs_requests(bytes)).sum();
    let receives_and_deletes: u64 = message_bytes
        .chunks(batch_size.max(1))
        .flat_map(|batch| batch.chunks(10))
        .map(|receive| cost::sqs_requests(receive.iter().sum()) + 1)
        .sum();
    sends + receives_and_deletes
}

/// The "Object Deleted" event that follows `created` once its object is deleted: a later
/// sequencer for the same key (S3 pads the shorter with zeros before comparing).
fn removal_of(created: &ObjectEvent) -> ObjectEvent {
    ObjectEvent {
        kind: ObjectEventKind::Removed,
        sequencer: format!("{}1", created.sequencer),
        event_name: "ObjectRemoved:Delete".into(),
        ..created.clone()
    }
}

/// The bytes `events` announce.
pub fn event_bytes(events: &[ObjectEvent]) -> u64 {
    events
        .iter()
        .map(|event| match event.kind {
            ObjectEventKind::Created { size, .. } => size,
            ObjectEventKind::Removed => 0,
        })
        .sum()
}
