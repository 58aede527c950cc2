//! The seal protocol end to end: exactly-once compaction, crash at every step, late objects,
//! removals, missing and changed sources, lease takeover, deadlines.
//!
//! Every case runs on the embedded backend (a local directory and SQLite). Built with the `aws`
//! feature (as `cargo test --workspace` does, through the Lambda crates), each also runs on S3
//! and DynamoDB: a fresh bucket on the S3 test server (SeaweedFS) and a fresh table on the
//! DynamoDB test server (ministack), named `…_on_s3_and_dynamodb`. Those say `SKIPPED` and pass
//! when `COMPACTOR_TEST_S3_ENDPOINT` or `COMPACTOR_TEST_DYNAMODB_ENDPOINT` is not set, and fail
//! under `CI` (see `testkit::servers`). A plain `cargo test -p compactor` stays light: it
//! neither builds the AWS SDK nor these variants.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::ManualClock;
use compactor::config::{Config, RawConfig};
use compactor::domain::partition::PartitionKey;
use compactor::domain::records::{ObjectState, OutputRecord, OutputState, PartitionState, Placement};
use compactor::engine::seal::{OutputProgress, SealOptions};
use compactor::engine::Compactor;
use compactor::event::{ObjectEvent, ObjectEventKind};
use compactor::ports::{
    GetOptions, Manifest, ManifestError, NewObject, ObjectQuery, ObjectStore, PutOptions, SourcePlacement, Tag,
};
use compactor::testkit::faults::{CrashMode, FaultPlan, FaultyManifest, FaultyStore};
use compactor::testkit::forwarding::{Layered, StoreAnswer, StoreCall, StoreLayer};
use sha2::{Digest, Sha256};

/// The source bucket of the embedded backend; on S3 each harness gets a fresh bucket.
const EMBEDDED_BUCKET: &str = "src";

/// Where a harness keeps sources, outputs and the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// A local directory and SQLite: always available.
    Embedded,
    /// The S3 test server (a fresh bucket, sources and outputs in it) and the DynamoDB test
    /// server (a fresh table).
    #[cfg(feature = "aws")]
    Aws,
}

/// Keeps a harness's backend alive and removes it when dropped.
enum BackendGuard {
    Embedded {
        _dir: tempfile::TempDir,
    },
    #[cfg(feature = "aws")]
    Aws {
        _bucket: compactor::testkit::s3_server::FreshBucket,
        _table: compactor::testkit::servers::FreshTable,
    },
}

struct Harness {
    _guard: BackendGuard,
    backend: Backend,
    /// The source bucket; outputs go to it too, under the destination prefix.
    bucket: String,
    store: Arc<dyn ObjectStore>,
    manifest: Arc<dyn Manifest>,
    plan: Arc<FaultPlan>,
    /// Which of the store's paths the engine takes through the fault plan.
    path: StorePath,
    clock: ManualClock,
    config: Config,
    /// Every source written, with its original bytes.
    originals: BTreeMap<String, Bytes>,
    sequence: u64,
}

/// How the engine reaches the store through the fault plan's wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorePath {
    /// Every port method forwarded, as production calls the store: the local directory's
    /// batched `get_many` and `add_tag_many`, S3's one request per source.
    AsProduction,
    /// S3's path on every store: one GET, and one PutObjectTagging (a source with tags of its
    /// own: HEAD, GetObjectTagging and PutObjectTagging), per source, each a call the fault plan
    /// can crash in (`FaultyStore::per_source`).
    PerSource,
}

/// The test configuration, with `adjust` applied to its settings before validation.
fn config_with(expiry: &str, bucket: &str, adjust: impl Fn(&mut RawConfig)) -> Config {
    let mut raw = RawConfig {
        source_bucket: Some(bucket.into()),
        target_output_bytes: Some("6MiB".into()),
        part_bytes: Some("5MiB".into()),
        read_ahead_bytes: Some("3MiB".into()),
        partition_concurrency: Some("1".into()),
        expiry: Some(expiry.into()),
        grace: Some("1h".into()),
        lease: Some("5m".into()),
        ..Default::default()
    };
    adjust(&mut raw);
    raw.validate().expect("a valid test configuration")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

impl Harness {
    /// A harness on `backend`, or `None` when that backend's servers are not configured (the
    /// helpers have said `SKIPPED` on stderr, or panicked under CI).
    async fn new(backend: Backend, expiry: &str) -> Option<Harness> {
        Self::with_config(backend, expiry, |_| {}).await
    }

    /// As [`Harness::new`], with `adjust` applied to the test configuration.
    async fn with_config(backend: Backend, expiry: &str, adjust: impl Fn(&mut RawConfig)) -> Option<Harness> {
        let (guard, bucket, store, manifest): (BackendGuard, String, Arc<dyn ObjectStore>, Arc<dyn Manifest>) =
            match backend {
                Backend::Embedded => {
                    let dir = tempfile::tempdir().unwrap();
                    std::fs::create_dir_all(dir.path().join("buckets").join(EMBEDDED_BUCKET)).unwrap();
                    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::open(dir.path().join("buckets")).unwrap());
                    let manifest: Arc<dyn Manifest> =
                        Arc::new(SqliteManifest::open(dir.path().join("manifest.sqlite")).unwrap());
                    (BackendGuard::Embedded { _dir: dir }, EMBEDDED_BUCKET.to_owned(), store, manifest)
                }
                #[cfg(feature = "aws")]
                Backend::Aws => {
                    use compactor::testkit::{s3_server, servers};
                    // Both endpoints before anything is made, through the helpers that say
                    // SKIPPED past the test harness's capture (and panic under CI): a skip must
                    // be seen, whichever of the two is missing.
                    let (s3_endpoint, dynamodb_endpoint) = (servers::s3_endpoint(), servers::dynamodb_endpoint());
                    s3_endpoint.zip(dynamodb_endpoint)?;
                    let (store, bucket, bucket_guard) = s3_server::amazon_s3_with_fresh_bucket().await?;
                    // The manifest's layout must be the engine's: it finds an object's partition
                    // from its key alone.
                    let layout = config_with(expiry, &bucket, &adjust).layout;
                    let (manifest, table) = servers::dynamodb_manifest_with_fresh_table(layout).await?;
                    let guard = BackendGuard::Aws { _bucket: bucket_guard, _table: table };
                    let store: Arc<dyn ObjectStore> = Arc::new(store);
                    let manifest: Arc<dyn Manifest> = Arc::new(manifest);
                    (guard, bucket, store, manifest)
                }
            };
        Some(Harness {
            _guard: guard,
            backend,
            config: config_with(expiry, &bucket, adjust),
            bucket,
            store,
            manifest,
            plan: FaultPlan::new(),
            path: StorePath::AsProduction,
            clock: ManualClock::new(at("2024-01-20T00:00:00Z")),
            originals: BTreeMap::new(),
            sequence: 0,
        })
    }

    /// The engine, with every port call going through the fault plan.
    fn compactor(&self) -> Compactor {
        self.compactor_on(Arc::clone(&self.store))
    }

    /// The engine on `store` (which wraps the harness's own), through the fault plan.
    fn compactor_on(&self, store: Arc<dyn ObjectStore>) -> Compactor {
        let store = match self.path {
            StorePath::AsProduction => FaultyStore::new(store, Arc::clone(&self.plan)),
            StorePath::PerSource => FaultyStore::new(store, Arc::clone(&self.plan)).per_source(),
        };
        let store = Arc::new(store);
        let manifest = Arc::new(FaultyManifest::new(Arc::clone(&self.manifest), Arc::clone(&self.plan)));
        Compactor::new(self.config.clone(), store, manifest, Arc::new(self.clock.clone()))
    }

    /// PUTs a source and ingests its event.
    /// PUTs many sources, 16 at a time, and ingests their events in one call.
    async fn add_many(&mut self, objects: Vec<(String, Bytes)>) {
        use futures::StreamExt;
        let store = Arc::clone(&self.store);
        let bucket = self.bucket.clone();
        let stored: Vec<(String, Bytes, compactor::ports::ObjectMeta)> = futures::stream::iter(objects)
            .map(|(key, body)| {
                let (store, bucket) = (Arc::clone(&store), bucket.clone());
                async move {
                    let meta = store.put(&bucket, &key, body.clone(), PutOptions::default()).await.unwrap();
                    (key, body, meta)
                }
            })
            .buffered(16)
            .collect()
            .await;
        let mut events = Vec::with_capacity(stored.len());
        for (key, body, meta) in stored {
            self.originals.insert(key.clone(), body);
            self.sequence += 1;
            events.push(ObjectEvent {
                kind: ObjectEventKind::Created { size: meta.size, etag: meta.etag },
                bucket: self.bucket.clone(),
                key,
                sequencer: format!("{:016X}", self.sequence),
                event_time: self.clock.now_for_tests(),
                event_name: "ObjectCreated:Put".into(),
            });
        }
        self.compactor().ingest(&events).await.unwrap();
    }

    async fn add(&mut self, key: &str, body: impl Into<Bytes>) {
        let body: Bytes = body.into();
        let meta = self.store.put(&self.bucket, key, body.clone(), PutOptions::default()).await.unwrap();
        self.originals.insert(key.to_string(), body);
        self.sequence += 1;
        let event = ObjectEvent {
            kind: ObjectEventKind::Created { size: meta.size, etag: meta.etag },
            bucket: self.bucket.clone(),
            key: key.into(),
            sequencer: format!("{:016X}", self.sequence),
            event_time: self.clock.now_for_tests(),
            event_name: "ObjectCreated:Put".into(),
        };
        self.compactor().ingest(&[event]).await.unwrap();
    }

    /// Two partitions: one whose outputs need multipart uploads, one of small line and gzip
    /// files, some without a final newline.
    async fn standard_dataset(&mut self) {
        self.dataset(Dataset::STANDARD).await;
    }

    async fn dataset(&mut self, dataset: Dataset) {
        for index in 0..dataset.big_objects {
            let body = format!("{{\"big\":{index},\"pad\":\"{}\"}}\n", "x".repeat(5 << 19));
            self.add(&format!("app/2024/01/14/big-{index}.json"), body).await;
        }
        for index in 0..dataset.line_objects {
            let newline = if index % 4 == 0 { "" } else { "\n" };
            self.add(&format!("app/2024/01/15/small {index}+é.json"), format!("{{\"n\":{index}}}{newline}")).await;
        }
        for index in 0..dataset.gzip_objects {
            self.add(&format!("app/2024/01/15/part-{index}.json.gz"), gzip(format!("line {index}\n").as_bytes())).await;
        }
        for index in 0..dataset.copied_objects {
            let large = lines_of(&format!("copied-{index}"), MIB5, false);
            self.add(&format!("app/2024/01/13/copied-{index}-a.json"), large).await;
            self.add(&format!("app/2024/01/13/copied-{index}-b.json"), format!("{{\"after\":{index}}}\n")).await;
        }
    }

    async fn seal(&self) -> compactor::engine::SealReport {
        self.compactor().seal_closed(&SealOptions::default()).await.unwrap()
    }

    /// Safety at any moment, even right after a crash: a source is marked for expiry only if
    /// the output holding it is committed, exists, and holds its bytes.
    async fn assert_safe(&self, context: &str) {
        for (key, original) in &self.originals {
            let record = self.manifest.object(&self.bucket, key).await.unwrap().expect("every source is recorded");
            let tagged = match self.store.get_tags(&self.bucket, key).await {
                Ok(tags) => tags.contains(&Tag::new("compacted", "true")),
                Err(_) => false,
            };
            let gone = self.store.head(&self.bucket, key).await.is_err();
            if !(tagged || gone) {
                continue;
            }
            assert_eq!(
                record.state,
                ObjectState::Compacted,
                "{context}: {key} marked for expiry while {}",
                record.state
            );
            let placement = record.placement.as_ref().expect("compacted objects have a placement");
            let output =
                self.manifest.output(&self.bucket, &placement.output_key).await.unwrap().expect("output recorded");
            assert_eq!(output.state, OutputState::Committed, "{context}: {key} marked before its output committed");
            let range = placement.offset..placement.offset + placement.length;
            let bytes = self
                .store
                .get(&self.bucket, &placement.output_key, GetOptions { range: Some(range), if_match: None })
                .await
                .unwrap_or_else(|error| panic!("{context}: output of {key} unreadable: {error}"))
                .bytes()
                .await
                .unwrap();
            assert_eq!(&bytes, original, "{context}: the output does not hold {key}'s bytes");
        }
    }

    /// After a successful run: every source compacted exactly once, marked, restorable; no
    /// uncommitted output left in the store; every output verifies.
    async fn assert_finished(&self, context: &str) {
        let compactor = self.compactor();
        let mut placed_in: HashMap<String, Vec<String>> = HashMap::new();
        let mut committed_outputs = Vec::new();
        for partition in compactor.audit_partitions().await.unwrap() {
            assert_eq!(partition.state, PartitionState::Sealed, "{context}: {} not sealed", partition.key);
            assert_eq!(partition.pending_objects, 0, "{context}");
            for output in self.manifest.outputs(&partition.key, None).await.unwrap() {
                assert_ne!(output.state, OutputState::Writing, "{context}: {} left writing", output.key);
                if output.state == OutputState::Abandoned {
                    assert!(
                        self.store.head(&self.bucket, &output.key).await.is_err(),
                        "{context}: abandoned {} still stored",
                        output.key
                    );
                    continue;
                }
                for source in compactor.audit_output(&self.bucket, &output.key).await.unwrap().sources {
                    placed_in.entry(source.key).or_default().push(output.key.clone());
                }
                committed_outputs.push(output.key);
            }
        }
        for (key, original) in &self.originals {
            let outputs = placed_in.get(key).cloned().unwrap_or_default();
            assert_eq!(outputs.len(), 1, "{context}: {key} is in {outputs:?}");
            let record = self.manifest.object(&self.bucket, key).await.unwrap().unwrap();
            assert_eq!(record.state, ObjectState::Compacted, "{context}: {key}");
            assert!(record.expiry_marked_at.is_some(), "{context}: {key} not marked for expiry");
            let (_, restored) = compactor.restore_bytes(key).await.unwrap();
            assert_eq!(&restored, original, "{context}: restore of {key}");
        }
        let stored = self.store.list(&self.bucket, &self.config.dest_prefix, None, 10_000).await.unwrap();
        let mut stored_keys: Vec<String> = stored.objects.into_iter().map(|meta| meta.key).collect();
        stored_keys.sort();
        committed_outputs.sort();
        assert_eq!(stored_keys, committed_outputs, "{context}: only committed outputs are stored");
        let report = compactor.verify(None, false, |_| {}).await.unwrap();
        assert!(report.all_verified(), "{context}: {:?}", report.failures);
        assert_eq!(report.sources_checked, self.originals.len() as u64, "{context}");
    }
}

/// How many sources of each kind a test writes: 2.5 MiB line files (two of them fill an output
/// past one 5 MiB part, so it is a multipart upload), small line files (every fourth without a
/// final newline), small gzip files (never in the same output as line files), and pairs of a
/// 5 MiB line file without a final newline, which the seal copies server-side, and a small one
/// after it (in 01/13, an output per pair: the copied part, then the newline and the small file).
#[derive(Debug, Clone, Copy)]
struct Dataset {
    big_objects: usize,
    line_objects: usize,
    gzip_objects: usize,
    copied_objects: usize,
}

impl Dataset {
    /// Four outputs: a multipart one and a single PUT in 01/14, lines and gzip in 01/15.
    const STANDARD: Dataset = Dataset { big_objects: 3, line_objects: 12, gzip_objects: 3, copied_objects: 0 };
    /// One output with a server-side copy (a 5 MiB source, then a small one), alone.
    const A_COPY: Dataset = Dataset { big_objects: 0, line_objects: 0, gzip_objects: 0, copied_objects: 1 };
    /// Every kind of output (multipart; single PUTs of lines and of gzip) from the fewest
    /// sources: on S3 and DynamoDB each port call is a real request, and the crash test makes
    /// a seal per call.
    #[cfg(feature = "aws")]
    const COMPACT: Dataset = Dataset { big_objects: 2, line_objects: 2, gzip_objects: 1, copied_objects: 0 };
    /// The small files of [`Dataset::COMPACT`] alone: single-PUT outputs only, no 5 MiB bodies.
    #[cfg(feature = "aws")]
    const SMALL_FILES: Dataset = Dataset { big_objects: 0, line_objects: 2, gzip_objects: 1, copied_objects: 0 };

    fn sources(&self) -> u64 {
        (self.big_objects + self.line_objects + self.gzip_objects + 2 * self.copied_objects) as u64
    }
}

trait NowForTests {
    fn now_for_tests(&self) -> DateTime<Utc>;
}

impl NowForTests for ManualClock {
    fn now_for_tests(&self) -> DateTime<Utc> {
        use compactor::clock::Clock;
        self.now()
    }
}

/// S3's smallest part, and the default `COMPACTOR_COPY_MIN_BYTES`.
const MIB5: usize = 5 << 20;

/// `size` bytes of JSON lines naming `tag` and numbered, so a misplaced range shows; with
/// `final_newline` false the last byte is not a newline (the seal must add one after it).
fn lines_of(tag: &str, size: usize, final_newline: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(size + 64);
    let mut line_number = 0u64;
    while body.len() < size {
        body.extend_from_slice(format!("{{\"source\":\"{tag}\",\"line\":{line_number:08}}}\n").as_bytes());
        line_number += 1;
    }
    body.truncate(size);
    let last = body.last_mut().expect("a source of at least one byte");
    *last = if final_newline { b'\n' } else { b'~' };
    body
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Changes a source the moment the seal asks for its server-side copy, as a writer racing the
/// seal would: after the seal's GET of the source opened, before its UploadPartCopy. Every
/// other call goes straight through (a layer of `testkit::forwarding`, which forwards every
/// port method).
#[derive(Debug)]
struct ChangeOnCopy {
    inner: Arc<dyn ObjectStore>,
    /// Source key → its new bytes, or `None` to delete it; each happens once.
    changes: std::sync::Mutex<HashMap<String, Option<Bytes>>>,
}

impl ChangeOnCopy {
    fn wrap(
        inner: Arc<dyn ObjectStore>,
        changes: impl IntoIterator<Item = (String, Option<Bytes>)>,
    ) -> Layered<ChangeOnCopy> {
        let layer = Self { inner: Arc::clone(&inner), changes: std::sync::Mutex::new(changes.into_iter().collect()) };
        Layered::new(inner, layer)
    }
}

impl StoreLayer for ChangeOnCopy {
    fn around<'a, T: Send + 'a>(&'a self, call: StoreCall<'a>, forward: StoreAnswer<'a, T>) -> StoreAnswer<'a, T> {
        Box::pin(async move {
            if let Some((source_bucket, source_key)) = call.copy_source {
                let change = self.changes.lock().unwrap().remove(source_key);
                match change {
                    Some(Some(new_bytes)) => {
                        self.inner.put(source_bucket, source_key, new_bytes, PutOptions::default()).await.unwrap();
                    }
                    Some(None) => self.inner.delete(source_bucket, source_key).await.unwrap(),
                    None => {}
                }
            }
            forward.await
        })
    }
}

/// Notes, at each source read (a GET, or each source of a `get_many`), whether the seal had
/// recorded placements already: with placements recorded a window at a time, most of a large
/// output's reads come after the first `record_placements`; held until the output's end, none
/// would. A layer of `testkit::forwarding`: every call goes through, batched as production
/// calls it.
#[derive(Debug)]
struct WatchPlacements {
    plan: Arc<FaultPlan>,
    reads_after_first_placements: std::sync::atomic::AtomicU64,
}

impl StoreLayer for WatchPlacements {
    fn around<'a, T: Send + 'a>(&'a self, call: StoreCall<'a>, forward: StoreAnswer<'a, T>) -> StoreAnswer<'a, T> {
        let reads = matches!(call.operation, "store.get" | "store.get_many");
        if reads && self.plan.counts().contains_key("manifest.record_placements") {
            self.reads_after_first_placements.fetch_add(call.objects as u64, std::sync::atomic::Ordering::SeqCst);
        }
        forward
    }
}

/// One test per backend for a case of [`cases`]: the embedded one under the case's name, the
/// S3 and DynamoDB one under the second name (only with the `aws` feature).
macro_rules! on_each_backend {
    (#[$test:meta] $case:ident, $aws_test:ident) => {
        #[$test]
        async fn $case() {
            cases::$case(Backend::Embedded).await;
        }

        #[cfg(feature = "aws")]
        #[$test]
        async fn $aws_test() {
            cases::$case(Backend::Aws).await;
        }
    };
}

on_each_backend!(
    #[tokio::test]
    a_seal_compacts_every_object_exactly_once_and_tags_it,
    a_seal_compacts_every_object_exactly_once_and_tags_it_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    only_closed_partitions_are_sealed,
    only_closed_partitions_are_sealed_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    a_late_object_reopens_a_sealed_partition_and_gets_a_new_generation,
    a_late_object_reopens_a_sealed_partition_and_gets_a_new_generation_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    removed_missing_and_overwritten_sources_are_never_compacted_as_wrong_bytes,
    removed_missing_and_overwritten_sources_are_never_compacted_as_wrong_bytes_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    a_stalled_run_that_lost_its_lease_cannot_commit,
    a_stalled_run_that_lost_its_lease_cannot_commit_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_seal_runs_compact_each_object_once,
    concurrent_seal_runs_compact_each_object_once_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    a_deadline_stops_at_an_output_boundary_and_the_next_run_goes_on,
    a_deadline_stops_at_an_output_boundary_and_the_next_run_goes_on_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    refused_sources_are_counted_in_the_run_total,
    refused_sources_are_counted_in_the_run_total_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    tag_mode_costs_one_put_object_tagging_per_source_without_tags_of_its_own,
    tag_mode_costs_one_put_object_tagging_per_source_without_tags_of_its_own_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    a_source_found_changed_never_keeps_the_expiry_tag,
    a_source_found_changed_never_keeps_the_expiry_tag_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    a_seal_makes_no_list_requests,
    a_seal_makes_no_list_requests_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    large_sources_are_copied_server_side_into_the_output_streaming_writes,
    large_sources_are_copied_server_side_into_the_output_streaming_writes_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_large_source_gone_or_overwritten_before_its_copy_is_missing_and_left_out,
    a_large_source_gone_or_overwritten_before_its_copy_is_missing_and_left_out_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    delete_mode_deletes_sources_in_one_request_per_thousand,
    delete_mode_deletes_sources_in_one_request_per_thousand_on_s3_and_dynamodb
);
on_each_backend!(
    #[tokio::test]
    delete_mode_finishes_refused_deletes_later_and_never_deletes_a_newer_version,
    delete_mode_finishes_refused_deletes_later_and_never_deletes_a_newer_version_on_s3_and_dynamodb
);

/// The seal's memory holds a few windows of an output's sources, not all of them: 2,500 tiny
/// sources in one output are read, written and placed 1,000 at a time, each window's
/// placements recorded while the next window is written, before the one after is read.
/// Embedded only: the windowing is the engine's, the same on every backend.
#[tokio::test]
async fn an_output_of_many_sources_is_placed_a_window_behind_its_reads() {
    let mut harness = Harness::new(Backend::Embedded, "tag").await.expect("the embedded backend");
    let objects: Vec<(String, Bytes)> = (0..2_500)
        .map(|index| (format!("app/2024/01/14/t-{index:05}.json"), Bytes::from(format!("{{\"i\":{index}}}\n"))))
        .collect();
    harness.add_many(objects).await;
    harness.plan.heal();
    let watch = Arc::new(Layered::new(
        Arc::clone(&harness.store),
        WatchPlacements { plan: Arc::clone(&harness.plan), reads_after_first_placements: Default::default() },
    ));
    let report = harness
        .compactor_on(Arc::clone(&watch) as Arc<dyn ObjectStore>)
        .seal_closed(&SealOptions::default())
        .await
        .unwrap();
    assert_eq!(report.partitions_failed, 0, "{:?}", report.failures);
    assert_eq!((report.outputs_committed, report.objects_compacted), (1, 2_500), "one output of every source");
    assert_eq!(report.expiry.tagged, 2_500);
    let counts = harness.plan.counts();
    assert_eq!(counts.get("manifest.record_placements"), Some(&3), "windows of 1,000, 1,000 and 500: {counts:?}");
    let reads_after = watch.layer().reads_after_first_placements.load(std::sync::atomic::Ordering::SeqCst);
    // The manifest reads window n + 1 after it records window n - 1's placements, both while
    // window n is written; then the last two windows' placements.
    let windows: Vec<&str> = harness
        .plan
        .sequence()
        .into_iter()
        .filter(|operation| matches!(*operation, "manifest.objects" | "manifest.record_placements"))
        .map(|operation| operation.trim_start_matches("manifest."))
        .collect();
    // (The seal's recovery lists objects before the output is planned.)
    let written = ["objects", "objects", "record_placements", "objects", "record_placements", "record_placements"];
    assert!(windows.ends_with(&written), "the output's manifest calls: {windows:?}");
    // The first window is read before any placement is recorded; the third only after the
    // first window's placements are; the second, while they are recorded.
    assert!(
        (500..=1_500).contains(&reads_after),
        "{reads_after} sources were read after the first placements were recorded"
    );
    harness.assert_safe("after a seal of one large output").await;
    harness.assert_finished("after a seal of one large output").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_is_finished_by_the_next_run_tag_mode() {
    cases::crash_at_every_step(cases::CrashPlan {
        backend: Backend::Embedded,
        expiry: "tag",
        runs: &[
            (CrashMode::BeforeCall, Dataset::STANDARD),
            (CrashMode::AfterCall, Dataset::STANDARD),
            (CrashMode::BeforeCall, Dataset::A_COPY),
            (CrashMode::AfterCall, Dataset::A_COPY),
        ],
        concurrent_runs: 1,
        path: StorePath::AsProduction,
    })
    .await;
}

/// The same crashes on S3's path (one GET, and one PutObjectTagging per source without tags of
/// its own) through the local directory: between any two of those requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_is_finished_by_the_next_run_tag_mode_per_source() {
    cases::crash_at_every_step(cases::CrashPlan {
        backend: Backend::Embedded,
        expiry: "tag",
        runs: &[(CrashMode::BeforeCall, Dataset::STANDARD), (CrashMode::AfterCall, Dataset::STANDARD)],
        concurrent_runs: 1,
        path: StorePath::PerSource,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_is_finished_by_the_next_run_delete_mode() {
    cases::crash_at_every_step(cases::CrashPlan {
        backend: Backend::Embedded,
        expiry: "delete",
        runs: &[(CrashMode::BeforeCall, Dataset::STANDARD), (CrashMode::AfterCall, Dataset::STANDARD)],
        concurrent_runs: 1,
        path: StorePath::AsProduction,
    })
    .await;
}

/// On the servers each crash is a fresh bucket and table, the dataset's PUTs and ingests, two
/// seals and the checks, all real requests, and hashing a 5 MiB output in a debug build: a
/// crash at every call of the standard dataset in both modes would take over 10 minutes here.
/// So the nastier mode, `AfterCall`, crashes at every call of the compact dataset (every
/// operation, multipart included, at half the calls), and `BeforeCall` at every call of the
/// small files only (every operation but multipart, at a fraction of the cost). In a
/// sequential seal a crash before call n leaves the state a crash after call n - 1 leaves, so
/// `AfterCall` alone already covers most of what `BeforeCall` would on multipart.
#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_is_finished_by_the_next_run_tag_mode_on_s3_and_dynamodb() {
    cases::crash_at_every_step(cases::CrashPlan {
        backend: Backend::Aws,
        expiry: "tag",
        runs: &[(CrashMode::AfterCall, Dataset::COMPACT), (CrashMode::BeforeCall, Dataset::SMALL_FILES)],
        concurrent_runs: 4,
        path: StorePath::PerSource,
    })
    .await;
}

/// A crash at every call of a seal whose multipart output has a server-side copy, on the
/// servers: the copy's request may take effect with its answer lost, and the rerun must still
/// abandon that upload and write the source exactly once. `AfterCall` only, on the one output
/// with a copy: the other operations are crashed in by the test above.
#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_seal_with_a_server_side_copy_is_finished_on_s3_and_dynamodb() {
    cases::crash_at_every_step(cases::CrashPlan {
        backend: Backend::Aws,
        expiry: "tag",
        runs: &[(CrashMode::AfterCall, Dataset::A_COPY)],
        concurrent_runs: 4,
        path: StorePath::PerSource,
    })
    .await;
}

/// Delete mode on the servers. The crash that matters most here comes after a DeleteObjects
/// took effect and before its marks were recorded: the rerun sends it again, conditional on the
/// ETags of keys now gone. That is an `AfterCall` crash, and the compact dataset reaches every
/// operation, multipart included.
#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_is_finished_by_the_next_run_delete_mode_on_s3_and_dynamodb() {
    cases::crash_at_every_step(cases::CrashPlan {
        backend: Backend::Aws,
        expiry: "delete",
        runs: &[(CrashMode::AfterCall, Dataset::COMPACT)],
        concurrent_runs: 4,
        path: StorePath::PerSource,
    })
    .await;
}

/// Issue 10: verify panicked on a corrupt manifest row (unchecked arithmetic, and an `expect`,
/// on data read back) instead of reporting it. A verifier reports corruption; it never
/// crashes on it. The SQLite file is edited behind the adapter's back.
#[tokio::test]
async fn verify_reports_a_corrupt_manifest_row_instead_of_panicking() {
    let mut harness = Harness::new(Backend::Embedded, "tag").await.expect("the embedded backend is always there");
    harness.add("app/2024/01/14/a.json", "{\"a\":1}\n").await;
    harness.add("app/2024/01/14/b.json", "{\"b\":1}\n").await;
    assert_eq!(harness.seal().await.objects_compacted, 2);
    let manifest_file = match &harness._guard {
        BackendGuard::Embedded { _dir: dir } => dir.path().join("manifest.sqlite"),
        #[cfg(feature = "aws")]
        BackendGuard::Aws { .. } => unreachable!("an embedded harness"),
    };
    let connection = rusqlite::Connection::open(manifest_file).unwrap();
    let changed = connection
        .execute(
            "UPDATE objects SET output_offset = ?1, output_length = ?1, output_separator_bytes = ?1 WHERE key = ?2",
            rusqlite::params![i64::MAX, "app/2024/01/14/b.json"],
        )
        .unwrap();
    assert_eq!(changed, 1);

    let report = harness.compactor().verify(None, false, |_| {}).await.expect("a report, not an error or a panic");
    assert!(!report.all_verified());
    assert_eq!((report.sources_checked, report.sources_ok), (2, 1), "{report:?}");
    assert!(
        report.failures.iter().any(|failure| failure.contains("b.json") && failure.contains("impossible byte range")),
        "{:?}",
        report.failures
    );
}

/// The cases, each written once against [`Harness`] and run on every backend by
/// [`on_each_backend`].
mod cases {
    use futures::StreamExt;

    use super::*;

    pub async fn a_seal_compacts_every_object_exactly_once_and_tags_it(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        harness.standard_dataset().await;
        let report = harness.seal().await;
        assert_eq!(report.partitions_sealed, 2);
        assert_eq!(report.objects_compacted, 18);
        assert_eq!(report.expiry.tagged, 18);
        // 01/14: three 2.5 MiB objects under a 6 MiB target: two outputs, the first multipart.
        // 01/15: line files and gzip files never share an output.
        assert_eq!(report.outputs_committed, 4);
        harness.assert_safe("after seal").await;
        harness.assert_finished("after seal").await;

        // The gzip output is one valid gzip stream of the sources' texts in key order.
        let partition = PartitionKey::new(&harness.bucket, "app/2024/01/15/");
        let outputs = harness.manifest.outputs(&partition, Some(OutputState::Committed)).await.unwrap();
        let gzip_output = outputs.iter().find(|output| output.key.ends_with(".json.gz")).expect("a gzip output");
        assert_eq!(gzip_output.key, "compacted/app/2024/01/15/compacted-g000001-p00002.json.gz");
        let bytes = harness
            .store
            .get(&harness.bucket, &gzip_output.key, GetOptions::default())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
        assert_eq!(text, "line 0\nline 1\nline 2\n");

        // Line files that lacked a newline got one, outside their recorded range.
        let record = harness.manifest.object(&harness.bucket, "app/2024/01/15/small 0+é.json").await.unwrap().unwrap();
        assert_eq!(record.placement.as_ref().unwrap().separator_bytes, 1);

        // Sealing again changes nothing.
        let again = harness.seal().await;
        assert_eq!(again.partitions_sealed + again.objects_compacted + again.outputs_committed, 0);
        harness.assert_finished("after a second seal").await;
    }

    pub async fn only_closed_partitions_are_sealed(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        harness.add("app/2024/01/19/a.json", "{}\n").await;
        harness.add("app/2024/01/18/b.json", "{}\n").await;
        // Now is 2024-01-20T00:00: 01/19 closes at 01:00 (grace 1h).
        let report = harness.seal().await;
        assert_eq!(report.partitions_sealed, 1);
        let open_key = PartitionKey::new(&harness.bucket, "app/2024/01/19/");
        let open = harness.manifest.partition(&open_key).await.unwrap().unwrap();
        assert_eq!(open.state, PartitionState::Open);
        assert_eq!(open.pending_objects, 1);
        harness.clock.advance(Duration::hours(1));
        assert_eq!(harness.seal().await.partitions_sealed, 1);
        harness.assert_finished("after the grace period").await;
    }

    /// How a crash test runs on one backend.
    pub struct CrashPlan<'a> {
        pub backend: Backend,
        pub expiry: &'a str,
        /// Crash at every call of a clean seal of the dataset, in the mode.
        pub runs: &'a [(CrashMode, Dataset)],
        /// Crash runs at a time, each on its own bucket and table (or directory): on the
        /// servers an iteration mostly waits for requests, so a few overlap well.
        pub concurrent_runs: usize,
        pub path: StorePath,
    }

    /// Crash at every port call in turn, for each of the plan's runs (before or after the call
    /// takes effect); a rerun must finish the work with every object compacted exactly once,
    /// and nothing may be marked for expiry early at any point. Together the runs must crash
    /// in every operation of the protocol that their datasets make the seal call.
    pub async fn crash_at_every_step(plan: CrashPlan<'_>) {
        let started = std::time::Instant::now();
        let CrashPlan { backend, expiry, runs, concurrent_runs, path } = plan;
        let mut crash_points = Vec::new();
        for &(mode, dataset) in runs {
            let Some(mut clean) = Harness::new(backend, expiry).await else { return };
            clean.path = path;
            clean.dataset(dataset).await;
            clean.plan.heal();
            clean.seal().await;
            let calls_in_a_clean_seal = clean.plan.calls();
            assert!(calls_in_a_clean_seal > 2 * dataset.sources(), "a seal makes {calls_in_a_clean_seal} calls");
            crash_points.extend((1..=calls_in_a_clean_seal).map(|crash_at| (mode, dataset, crash_at)));
        }

        let outcomes: Vec<Option<CrashOutcome>> = futures::stream::iter(crash_points)
            .map(|(mode, dataset, crash_at)| crash_once(backend, path, expiry, dataset, mode, crash_at))
            .buffer_unordered(concurrent_runs)
            .collect()
            .await;
        let mut crash_sites: BTreeMap<String, u64> = BTreeMap::new();
        let mut finishing_seals = 0_u64;
        for outcome in outcomes.iter().flatten() {
            *crash_sites.entry(outcome.crashed_in.clone()).or_default() += 1;
            finishing_seals += u64::from(outcome.needed_a_finishing_seal);
        }
        for operation in [
            "store.delete_many",
            "manifest.acquire",
            "manifest.begin_output",
            "store.create_multipart",
            "store.upload_part",
            "store.complete_multipart",
            "store.put",
            "manifest.record_placements",
            "manifest.commit_output",
            "manifest.mark_compacted",
            "manifest.mark_compacted_between",
            "store.put_tags",
            "manifest.output_placements",
            "manifest.advance_expiry",
            "manifest.release",
            "store.upload_part_copy",
            "store.get_many",
            "store.add_tag_many",
            "store.head",
            "store.get_tags",
        ] {
            let any_run = |has: fn(&Dataset) -> bool| runs.iter().any(|(_, dataset)| has(dataset));
            let per_source = path == StorePath::PerSource;
            // The local directory reads small sources a batch at a time, and tags a bucket's at
            // once; S3, and any store on the per-source path, one request per source.
            let batches = backend == Backend::Embedded && !per_source;
            let expected = match operation {
                // No source of these datasets has tags of its own, so each costs the tag step one
                // PutObjectTagging and no HEAD or GetObjectTagging (issue #12): only a finishing
                // seal's recovery, which saw no GET, reads first, and no crash is planned there.
                "store.put_tags" => expiry == "tag" && per_source,
                "store.head" | "store.get_tags" => false,
                "store.add_tag_many" => expiry == "tag" && !per_source,
                "store.get_many" => batches && any_run(|dataset| dataset.line_objects + dataset.gzip_objects >= 2),
                "store.delete_many" => expiry == "delete",
                "store.upload_part_copy" => any_run(|dataset| dataset.copied_objects > 0),
                "store.put" => any_run(|dataset| dataset.line_objects + dataset.gzip_objects > 0),
                "store.create_multipart" | "store.upload_part" | "store.complete_multipart" => {
                    any_run(|dataset| dataset.big_objects >= 2 || dataset.copied_objects > 0)
                }
                _ => true,
            };
            assert_eq!(crash_sites.contains_key(operation), expected, "crashes hit {crash_sites:?}");
        }
        // Straight to stderr, past the capture: the cost of this test on the servers is worth
        // seeing.
        let line = format!(
            "{backend:?} {path:?} {expiry}: {} crashes, {finishing_seals} finishing seals, {:.1?}\n",
            crash_sites.values().sum::<u64>(),
            started.elapsed()
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }

    struct CrashOutcome {
        crashed_in: String,
        needed_a_finishing_seal: bool,
    }

    /// One crash at call `crash_at` on a fresh backend, then the checks; `None` when the seal
    /// made fewer calls (nothing crashed) or the backend is skipped.
    async fn crash_once(
        backend: Backend,
        path: StorePath,
        expiry: &str,
        dataset: Dataset,
        mode: CrashMode,
        crash_at: u64,
    ) -> Option<CrashOutcome> {
        let mut harness = Harness::new(backend, expiry).await?;
        harness.path = path;
        harness.dataset(dataset).await;
        harness.plan.heal();
        harness.plan.crash_at(crash_at, mode);
        let crashed_run = harness.compactor().seal_closed(&SealOptions::default()).await;
        let context = format!(
            "{backend:?}, {path:?}, {expiry}, crash {mode:?} call {crash_at} in {:?}",
            harness.plan.crashed_in()
        );
        if !harness.plan.crashed() {
            return None;
        }
        let crashed_in = harness.plan.crashed_in().unwrap();
        let _ = crashed_run;
        harness.plan.heal();
        harness.assert_safe(&context).await;
        // The crashed run's lease must expire before anyone else takes over.
        harness.clock.advance(Duration::minutes(6));
        let rerun = harness.seal().await;
        assert_eq!(rerun.partitions_failed, 0, "{context}: {:?}", rerun.failures);
        harness.assert_safe(&context).await;
        let needed_a_finishing_seal = harness.backend != Backend::Embedded && rerun.partitions_left_open > 0;
        if needed_a_finishing_seal {
            // DynamoDB's sources index is eventually consistent: the rerun's `mark_compacted`
            // may miss a source placed a moment before, which stays pending with its placement,
            // and the partition is released `open`; the next seal's recovery finishes it
            // (adapters/dynamodb.rs, "Indexes are eventually consistent"). That is the adapter's
            // contract, so one more seal is allowed here, after the safety check above and never
            // instead of it. SQLite is consistent: the embedded backend gets no second chance.
            let finishing = harness.seal().await;
            assert_eq!(finishing.partitions_failed, 0, "{context}: {:?}", finishing.failures);
            assert_eq!(finishing.partitions_left_open, 0, "{context}: still open after one more seal");
            harness.assert_safe(&context).await;
        }
        harness.assert_finished(&context).await;
        Some(CrashOutcome { crashed_in, needed_a_finishing_seal })
    }

    pub async fn a_late_object_reopens_a_sealed_partition_and_gets_a_new_generation(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        harness.add("app/2024/01/14/a.json", "{\"a\":1}\n").await;
        harness.seal().await;
        harness.add("app/2024/01/14/late.json", "{\"late\":1}\n").await;
        let partition = PartitionKey::new(&harness.bucket, "app/2024/01/14/");
        assert_eq!(harness.manifest.partition(&partition).await.unwrap().unwrap().state, PartitionState::Open);
        let report = harness.seal().await;
        assert_eq!(report.objects_compacted, 1);
        let outputs = harness.manifest.outputs(&partition, Some(OutputState::Committed)).await.unwrap();
        let keys: Vec<&str> = outputs.iter().map(|output| output.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "compacted/app/2024/01/14/compacted-g000001-p00001.json",
                "compacted/app/2024/01/14/compacted-g000002-p00001.json"
            ]
        );
        harness.assert_finished("after the late seal").await;
    }

    pub async fn removed_missing_and_overwritten_sources_are_never_compacted_as_wrong_bytes(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        harness.add("app/2024/01/14/keep.json", "{\"keep\":1}\n").await;
        harness.add("app/2024/01/14/removed.json", "{\"removed\":1}\n").await;
        harness.add("app/2024/01/14/vanished.json", "{\"vanished\":1}\n").await;
        harness.add("app/2024/01/14/overwritten.json", "{\"v\":1}\n").await;

        // A removal event takes the object out of the plan.
        let removal = ObjectEvent {
            kind: ObjectEventKind::Removed,
            bucket: harness.bucket.clone(),
            key: "app/2024/01/14/removed.json".into(),
            sequencer: "FFFF000000000000".into(),
            event_time: at("2024-01-19T00:00:00Z"),
            event_name: "ObjectRemoved:Delete".into(),
        };
        harness.compactor().ingest(&[removal]).await.unwrap();
        harness.store.delete(&harness.bucket, "app/2024/01/14/removed.json").await.unwrap();
        // Deleted without an event reaching us, and overwritten before its event arrived: the
        // new bytes give the new version another ETag, which is what the seal's GET checks.
        harness.store.delete(&harness.bucket, "app/2024/01/14/vanished.json").await.unwrap();
        harness
            .store
            .put(
                &harness.bucket,
                "app/2024/01/14/overwritten.json",
                Bytes::from("{\"v\":2, \"longer\":true}\n"),
                PutOptions::default(),
            )
            .await
            .unwrap();

        let report = harness.seal().await;
        assert_eq!(report.objects_compacted, 1);
        assert_eq!(report.objects_missing, 2);
        let state = |key: &'static str| {
            let manifest = Arc::clone(&harness.manifest);
            let bucket = harness.bucket.clone();
            async move { manifest.object(&bucket, key).await.unwrap().unwrap() }
        };
        assert_eq!(state("app/2024/01/14/keep.json").await.state, ObjectState::Compacted);
        assert_eq!(state("app/2024/01/14/removed.json").await.state, ObjectState::Removed);
        let vanished = state("app/2024/01/14/vanished.json").await;
        assert_eq!(vanished.state, ObjectState::Missing);
        assert!(vanished.note.unwrap().contains("no longer exists"));
        let overwritten = state("app/2024/01/14/overwritten.json").await;
        assert_eq!(overwritten.state, ObjectState::Missing);
        // The new version is untouched: not tagged.
        let tags = harness.store.get_tags(&harness.bucket, "app/2024/01/14/overwritten.json").await.unwrap();
        assert!(tags.is_empty(), "{tags:?}");
    }

    /// A run that stalls while it writes an output (its lease runs out), and wakes up after
    /// another run took the partition over, can neither place its sources, commit its output
    /// nor release: every write is fenced by the lease it lost.
    pub async fn a_stalled_run_that_lost_its_lease_cannot_commit(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        harness.add("app/2024/01/14/a.json", "{}\n").await;
        let partition = PartitionKey::new(&harness.bucket, "app/2024/01/14/");
        let stalled = harness
            .manifest
            .acquire(&partition, "stalled", at("2024-01-20T00:00:00Z"), Duration::minutes(5))
            .await
            .unwrap();
        // The stalled run began its output and wrote it, then stopped before placing and
        // committing.
        let stalled_output = OutputRecord {
            bucket: harness.bucket.clone(),
            key: "compacted/app/2024/01/14/compacted-g000001-p00001.json".into(),
            partition: partition.clone(),
            generation: stalled.generation,
            part_number: 1,
            state: OutputState::Writing,
            size: None,
            sha256: None,
            object_count: 1,
            upload_id: None,
            created_at: at("2024-01-20T00:00:00Z"),
            committed_at: None,
            expiry: None,
        };
        harness.manifest.begin_output(&stalled, &stalled_output).await.unwrap();
        let body = Bytes::from_static(b"{}\n");
        harness.store.put(&harness.bucket, &stalled_output.key, body.clone(), PutOptions::default()).await.unwrap();
        // While the lease is live, a seal skips the partition.
        let report = harness.seal().await;
        assert_eq!(report.partitions_locked, 0, "a locked partition is not even listed as closed");
        assert_eq!(report.objects_compacted, 0);
        harness.clock.advance(Duration::minutes(6));
        let report = harness.seal().await;
        assert_eq!(report.objects_compacted, 1);
        assert_eq!(report.outputs_abandoned, 1, "the stalled run's output is abandoned: {report:?}");

        let record = harness.manifest.object(&harness.bucket, "app/2024/01/14/a.json").await.unwrap().unwrap();
        let taken_over_placement = record.placement.clone().expect("compacted by the run that took over");
        let stalled_placement = SourcePlacement {
            key: record.key.clone(),
            sequencer: record.sequencer.clone(),
            placement: Placement {
                output_key: stalled_output.key.clone(),
                generation: stalled.generation,
                offset: 0,
                length: 3,
                sha256: hex::encode(Sha256::digest(&body)),
                separator_bytes: 0,
            },
            etag: record.etag.clone(),
            size: record.size,
        };
        let lost = |result: Result<_, ManifestError>, step: &str| match result {
            Err(ManifestError::LeaseLost { generation, .. }) => assert_eq!(generation, stalled.generation, "{step}"),
            other => panic!("{step} with a lost lease: {other:?}"),
        };
        lost(
            harness.manifest.record_placements(&stalled, &stalled_output.key, &[stalled_placement]).await.map(drop),
            "record_placements",
        );
        let now = at("2024-01-20T00:10:00Z");
        let sha256 = hex::encode(Sha256::digest(&body));
        lost(
            harness.manifest.commit_output(&stalled, &harness.bucket, &stalled_output.key, 3, &sha256, 1, now).await,
            "commit_output",
        );
        lost(harness.manifest.release(&stalled, now).await.map(drop), "release");

        let output = harness.manifest.output(&harness.bucket, &stalled_output.key).await.unwrap().unwrap();
        assert_eq!(output.state, OutputState::Abandoned, "never committed");
        let record = harness.manifest.object(&harness.bucket, "app/2024/01/14/a.json").await.unwrap().unwrap();
        assert_eq!(record.placement, Some(taken_over_placement), "the source stays where the new run put it");
        harness.assert_finished("after takeover").await;
    }

    pub async fn concurrent_seal_runs_compact_each_object_once(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        for day in 10..16 {
            for index in 0..8 {
                let body = format!("{{\"d\":{day},\"i\":{index}}}\n");
                harness.add(&format!("app/2024/01/{day}/o-{index}.json"), body).await;
            }
        }
        let first = harness.compactor();
        let second = harness.compactor();
        let options = SealOptions::default();
        let (left, right) = tokio::join!(first.seal_closed(&options), second.seal_closed(&options));
        let (left, right) = (left.unwrap(), right.unwrap());
        assert_eq!(left.objects_compacted + right.objects_compacted, 48);
        assert_eq!(left.partitions_sealed + right.partitions_sealed, 6);
        harness.assert_finished("after two concurrent runs").await;
    }

    /// The deadline passes while the first output is written: the run commits that output,
    /// tags its sources, and stops before the next; the next run writes the rest.
    pub async fn a_deadline_stops_at_an_output_boundary_and_the_next_run_goes_on(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        harness.standard_dataset().await;
        let clock = harness.clock.clone();
        let options = SealOptions {
            deadline: Some(at("2024-01-20T00:01:00Z")),
            // Called after each committed output: time passes while the first one is written.
            progress: Some(Arc::new(move |_: &OutputProgress| clock.advance(Duration::minutes(2)))),
            ..Default::default()
        };
        let report = harness.compactor().seal_closed(&options).await.unwrap();
        assert!(report.stopped_at_deadline);
        // 01/14 closes first; its first output holds two 2.5 MiB sources.
        assert_eq!((report.outputs_committed, report.objects_compacted), (1, 2), "{report:?}");
        assert_eq!(report.expiry.tagged, 2, "the committed output's sources are tagged before the run stops");
        let partition_key = PartitionKey::new(&harness.bucket, "app/2024/01/14/");
        let partition = harness.manifest.partition(&partition_key).await.unwrap().unwrap();
        assert_eq!(partition.state, PartitionState::Open, "released for the next run");
        assert_eq!((partition.compacted_objects, partition.pending_objects), (2, 1));
        let later = PartitionKey::new(&harness.bucket, "app/2024/01/15/");
        let untouched = harness.manifest.partition(&later).await.unwrap().unwrap();
        assert_eq!(
            (untouched.state, untouched.compacted_objects, untouched.pending_objects),
            (PartitionState::Open, 0, 15),
            "nothing written after the deadline"
        );
        harness.assert_safe("after the deadline").await;

        let next = harness.seal().await;
        assert_eq!((next.outputs_committed, next.objects_compacted), (3, 16), "{next:?}");
        harness.assert_finished("after the next run").await;
    }

    /// Issue 10: the partitions' refused sources were never added into the run's total.
    /// Pending sources of a format that cannot be concatenated (recorded by an older
    /// configuration: ingest refuses them now) are left pending and counted, per partition
    /// and in the run.
    pub async fn refused_sources_are_counted_in_the_run_total(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        harness.add("app/2024/01/14/a.json", "{\"a\":1}\n").await;
        harness.add("app/2024/01/15/b.json", "{\"b\":1}\n").await;
        for (index, key) in
            ["app/2024/01/14/old.avro", "app/2024/01/15/old.avro", "app/2024/01/15/z.orc"].into_iter().enumerate()
        {
            let partition = harness.config.layout.partition_of(key).unwrap();
            let closes_at = partition.period.closes_at(harness.config.grace);
            let object = NewObject {
                bucket: harness.bucket.clone(),
                key: key.into(),
                partition,
                closes_at,
                size: 4,
                etag: Some(format!("etag-{index}")),
                sequencer: format!("F{index:015X}"),
                event_time: at("2024-01-19T00:00:00Z"),
            };
            harness.manifest.record_object(&object).await.unwrap();
        }
        let report = harness.seal().await;
        assert_eq!(report.objects_compacted, 2);
        let per_partition: Vec<u64> = report.partitions.iter().map(|partition| partition.objects_refused).collect();
        assert_eq!(per_partition, vec![1, 2]);
        assert_eq!(report.objects_refused, 3, "the run's total is the sum of its partitions'");
    }

    pub async fn a_seal_makes_no_list_requests(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        harness.standard_dataset().await;
        harness.plan.heal();
        harness.seal().await;
        let counts = harness.plan.counts();
        assert_eq!(counts.get("store.list"), None, "{counts:?}");
        // The 18 sources are read as production reads them: on the local directory the three
        // 2.5 MiB ones by a GET each and the 15 small ones a batch per output (12 line files, 3
        // gzip files); on S3 by a GET each.
        let reads = match backend {
            Backend::Embedded => (Some(&3), Some(&2)),
            #[cfg(feature = "aws")]
            Backend::Aws => (Some(&18), None),
        };
        assert_eq!((counts.get("store.get"), counts.get("store.get_many")), reads, "{counts:?}");
        // Tagged right after each of the 4 commits, all of an output's sources in one call (on
        // S3 the store makes one PutObjectTagging per source inside it: none has tags of its own).
        assert_eq!(counts.get("store.add_tag_many"), Some(&4), "{counts:?}");
        assert_eq!(counts.get("store.put_tags"), None, "{counts:?}");
        let partition = PartitionKey::new(&harness.bucket, "app/2024/01/15/");
        let objects = harness.manifest.objects(&partition, &ObjectQuery::all()).await.unwrap();
        assert_eq!(objects.len(), 15);
    }

    /// Tag mode's cost per source (issue #12): a source the seal's GET saw without tags of its
    /// own costs one PutObjectTagging and nothing else; only a source with tags of its own is
    /// read (HEAD, GetObjectTagging) so that they are kept. Counted on the per-source path, S3's,
    /// where each of those requests is a call of its own.
    pub async fn tag_mode_costs_one_put_object_tagging_per_source_without_tags_of_its_own(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        harness.path = StorePath::PerSource;
        for index in 0..5 {
            harness.add(&format!("app/2024/01/15/s-{index}.json"), format!("{{\"s\":{index}}}\n")).await;
        }
        let own_tags = [Tag::new("team", "x")];
        harness.store.put_tags(&harness.bucket, "app/2024/01/15/s-3.json", &own_tags).await.unwrap();
        harness.plan.heal();
        let report = harness.seal().await;
        assert_eq!((report.objects_compacted, report.expiry.tagged), (5, 5), "{report:?}");
        let counts = harness.plan.counts();
        assert_eq!(counts.get("store.get"), Some(&5), "{counts:?}");
        assert_eq!(counts.get("store.put_tags"), Some(&5), "one PutObjectTagging per source: {counts:?}");
        assert_eq!(counts.get("store.head"), Some(&1), "only the source with tags of its own: {counts:?}");
        assert_eq!(counts.get("store.get_tags"), Some(&1), "only the source with tags of its own: {counts:?}");
        let expiry_tag = harness.config.expiry_tag.clone();
        let tags = harness.store.get_tags(&harness.bucket, "app/2024/01/15/s-3.json").await.unwrap();
        assert!(tags.contains(&own_tags[0]) && tags.contains(&expiry_tag), "its own tags are kept: {tags:?}");
        let tags = harness.store.get_tags(&harness.bucket, "app/2024/01/15/s-0.json").await.unwrap();
        assert_eq!(tags, vec![expiry_tag]);
        harness.assert_safe("after a tag-mode seal").await;
    }

    /// The guard of tag mode's overwrite window: a source the seal finds changed (a newer
    /// version the tag request of an earlier run could have reached after its GET) never keeps
    /// the expiry tag, and keeps its other tags.
    pub async fn a_source_found_changed_never_keeps_the_expiry_tag(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "tag").await else { return };
        let key = "app/2024/01/14/rewritten.json";
        harness.add(key, "{\"v\":1}\n").await;
        harness.add("app/2024/01/14/kept.json", "{\"kept\":1}\n").await;
        // A newer version, its event not ingested yet, tagged as an earlier run's one request
        // would have tagged it had the overwrite come between that run's GET and its tagging.
        harness
            .store
            .put(&harness.bucket, key, Bytes::from("{\"v\":2,\"longer\":1}\n"), PutOptions::default())
            .await
            .unwrap();
        let expiry_tag = harness.config.expiry_tag.clone();
        harness.store.put_tags(&harness.bucket, key, &[Tag::new("team", "x"), expiry_tag.clone()]).await.unwrap();
        harness.plan.heal();
        let report = harness.seal().await;
        assert_eq!((report.objects_compacted, report.objects_missing), (1, 1), "{report:?}");
        let tags = harness.store.get_tags(&harness.bucket, key).await.unwrap();
        assert_eq!(tags, vec![Tag::new("team", "x")], "the expiry tag is taken off, the others kept");
    }

    /// The copy cases' settings: one output for the whole partition; parts of 8 MiB, so the
    /// buffer can hold a legal part (5 MiB or more) when a large source comes; a read-ahead
    /// budget smaller than one large source.
    fn copy_settings(copy_min_bytes: &'static str) -> impl Fn(&mut RawConfig) {
        move |raw| {
            raw.target_output_bytes = Some("64MiB".into());
            raw.part_bytes = Some("8MiB".into());
            raw.read_ahead_bytes = Some("3MiB".into());
            raw.copy_min_bytes = Some(copy_min_bytes.into());
        }
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// One partition of large (5 MiB and a bit) and small line files, in key order, laid out so
    /// that every rule of the copy decides once. With 8 MiB parts the seal copies a, c, d and h:
    ///
    /// | source | how | parts after it |
    /// |---|---|---|
    /// | a, first, no final newline | copied: the buffer is empty | 1 = a; its `\n` buffered |
    /// | b | streamed: one byte buffered is no legal part | buffer 5 MiB + 1 |
    /// | c, right after b | copied after the buffer is flushed | 2 = `\n` b, 3 = c |
    /// | d, adjacent to c, no final newline | copied: c ended in `\n`, nothing buffered | 4 = d |
    /// | e 1–3, one without final newline | buffered | |
    /// | f | streamed: a few bytes buffered | buffer 5 MiB + … |
    /// | g, no final newline | buffered | |
    /// | h, last, no final newline | copied after the buffer is flushed | 5 = `\n` e f g, 6 = h, 7 = `\n` |
    ///
    /// Keys with spaces, `+` and `é`: the copy source header is URL-encoded.
    fn mixed_partition() -> Vec<(String, Vec<u8>)> {
        let key = |name: &str| format!("app/2024/01/14/{name}");
        vec![
            (key("a large first.json"), lines_of("a", MIB5, false)),
            (key("b large.json"), lines_of("b", MIB5, true)),
            (key("c large adjacent é.json"), lines_of("c", MIB5 + 3, true)),
            (key("d large.json"), lines_of("d", MIB5, false)),
            (key("e small 1.json"), b"{\"e\":1}\n".to_vec()),
            (key("e small 2.json"), b"{\"e\":2}".to_vec()),
            (key("e small 3.json"), b"{\"e\":3}\n".to_vec()),
            (key("f large after small ones.json"), lines_of("f", MIB5, true)),
            (key("g small.json"), b"{\"g\":1}".to_vec()),
            (key("h large last+.json"), lines_of("h", MIB5 + 7, false)),
        ]
    }

    /// Where each source should be: (key, offset, length, sha256, separator bytes).
    type ExpectedPlacement = (String, u64, u64, String, u64);

    /// The output streaming concatenation gives for `sources` (a newline after each line file
    /// that lacks one), and every source's expected placement.
    fn concatenated(sources: &[(String, Vec<u8>)]) -> (Vec<u8>, Vec<ExpectedPlacement>) {
        let mut output = Vec::new();
        let mut placements = Vec::new();
        for (key, body) in sources {
            let offset = output.len() as u64;
            output.extend_from_slice(body);
            let separator_bytes = u64::from(body.last() != Some(&b'\n'));
            if separator_bytes == 1 {
                output.push(b'\n');
            }
            placements.push((key.clone(), offset, body.len() as u64, sha256_hex(body), separator_bytes));
        }
        (output, placements)
    }

    /// Checks the one committed output of `partition` byte for byte, its recorded size and
    /// sha256, and every source's recorded placement; returns the output's (key, size, sha256).
    async fn check_output(
        harness: &Harness,
        partition: &str,
        expected_bytes: &[u8],
        expected_placements: &[ExpectedPlacement],
    ) -> (String, u64, String) {
        let partition = PartitionKey::new(&harness.bucket, partition);
        let outputs = harness.manifest.outputs(&partition, Some(OutputState::Committed)).await.unwrap();
        assert_eq!(outputs.len(), 1, "{outputs:?}");
        let output = &outputs[0];
        let stored = harness
            .store
            .get(&harness.bucket, &output.key, GetOptions::default())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(stored.len(), expected_bytes.len(), "{:?}: output size", harness.backend);
        // Not assert_eq!: a failure would print megabytes.
        assert!(stored[..] == expected_bytes[..], "{:?}: the output is not the concatenation", harness.backend);
        assert_eq!(output.size, Some(expected_bytes.len() as u64));
        assert_eq!(output.sha256.as_deref(), Some(sha256_hex(expected_bytes).as_str()));
        for (key, offset, length, sha256, separator_bytes) in expected_placements {
            let record = harness.manifest.object(&harness.bucket, key).await.unwrap().unwrap();
            assert_eq!(record.state, ObjectState::Compacted, "{key}");
            let placement = record.placement.unwrap_or_else(|| panic!("{key} has no placement"));
            assert_eq!(placement.output_key, output.key, "{key}");
            assert_eq!(
                (placement.offset, placement.length, &placement.sha256, placement.separator_bytes),
                (*offset, *length, sha256, *separator_bytes),
                "{key}: offset, length, sha256, separator"
            );
        }
        (output.key.clone(), output.size.unwrap(), output.sha256.clone().unwrap())
    }

    /// Issue #4: large sources become parts by UploadPartCopy, read once only to be hashed; the
    /// output, its sha256 and every placement are what streaming every source writes.
    pub async fn large_sources_are_copied_server_side_into_the_output_streaming_writes(backend: Backend) {
        let Some(mut copying) = Harness::with_config(backend, "tag", copy_settings("5MiB")).await else { return };
        let Some(mut streaming) = Harness::with_config(backend, "tag", copy_settings("off")).await else { return };
        let sources = mixed_partition();
        for (key, body) in &sources {
            copying.add(key, body.clone()).await;
            streaming.add(key, body.clone()).await;
        }
        let (expected_bytes, expected_placements) = concatenated(&sources);
        let copied_bytes = (MIB5 + (MIB5 + 3) + MIB5 + (MIB5 + 7)) as u64;

        copying.plan.heal();
        let report = copying.seal().await;
        assert_eq!((report.outputs_committed, report.objects_compacted, report.objects_missing), (1, 10, 0));
        assert_eq!((report.copied_sources, report.copied_bytes), (4, copied_bytes));
        let counts = copying.plan.counts();
        assert_eq!(counts.get("store.upload_part_copy"), Some(&4), "a, c, d and h are copied: {counts:?}");
        assert_eq!(counts.get("store.upload_part"), Some(&3), "parts 2, 5 and 7 are uploaded: {counts:?}");
        // Every source is read once, copied or not: on the local directory the three small e
        // files in one `get_many` (they sit side by side between copies), on S3 each by a GET.
        let reads = match backend {
            Backend::Embedded => (Some(&7), Some(&1)),
            #[cfg(feature = "aws")]
            Backend::Aws => (Some(&10), None),
        };
        assert_eq!((counts.get("store.get"), counts.get("store.get_many")), reads, "{counts:?}");
        let copied = check_output(&copying, "app/2024/01/14/", &expected_bytes, &expected_placements).await;

        streaming.plan.heal();
        let report = streaming.seal().await;
        assert_eq!((report.outputs_committed, report.objects_compacted, report.copied_sources), (1, 10, 0));
        let counts = streaming.plan.counts();
        assert_eq!(counts.get("store.upload_part_copy"), None, "copying is off: {counts:?}");
        let streamed = check_output(&streaming, "app/2024/01/14/", &expected_bytes, &expected_placements).await;
        assert_eq!(copied, streamed, "copying changes neither the output's key, size nor sha256");

        copying.assert_finished("after a seal with copies").await;
        streaming.assert_finished("after a seal without copies").await;
    }

    /// A large source overwritten before the seal fails its GET (412) and is never copied; one
    /// overwritten or deleted between its GET and its copy fails the copy (412, 404), which
    /// creates no part. Each is recorded missing, and the output holds only the others.
    pub async fn a_large_source_gone_or_overwritten_before_its_copy_is_missing_and_left_out(backend: Backend) {
        let Some(mut harness) = Harness::with_config(backend, "tag", copy_settings("5MiB")).await else { return };
        let key = |name: &str| format!("app/2024/01/14/{name}");
        let (overwritten_before, overwritten_during, deleted_during) =
            (key("a overwritten before.json"), key("b overwritten during.json"), key("c deleted during.json"));
        harness.add(&overwritten_before, lines_of("a", MIB5, true)).await;
        harness.add(&overwritten_during, lines_of("b", MIB5, true)).await;
        harness.add(&deleted_during, lines_of("c", MIB5, false)).await;
        let kept = vec![(key("d kept.json"), lines_of("d", MIB5, false)), (key("e small.json"), b"{\"e\":1}".to_vec())];
        for (key, body) in &kept {
            harness.add(key, body.clone()).await;
        }
        // Same size, new bytes: only the ETag tells the versions apart.
        let new_version = Bytes::from(lines_of("A", MIB5, true));
        harness.store.put(&harness.bucket, &overwritten_before, new_version, PutOptions::default()).await.unwrap();
        let changing = ChangeOnCopy::wrap(
            Arc::clone(&harness.store),
            [
                (overwritten_during.clone(), Some(Bytes::from(lines_of("B", MIB5, true)))),
                (deleted_during.clone(), None),
            ],
        );

        harness.plan.heal();
        let report = harness.compactor_on(Arc::new(changing)).seal_closed(&SealOptions::default()).await.unwrap();
        assert_eq!(report.partitions_failed, 0, "{:?}", report.failures);
        assert_eq!((report.objects_compacted, report.objects_missing), (2, 3));
        assert_eq!((report.copied_sources, report.copied_bytes), (1, MIB5 as u64));
        let counts = harness.plan.counts();
        assert_eq!(counts.get("store.upload_part_copy"), Some(&3), "b, c and d, never a: {counts:?}");

        for (missing, note) in [
            (&overwritten_before, "overwritten since ingest"),
            (&overwritten_during, "overwritten since ingest"),
            (&deleted_during, "no longer exists"),
        ] {
            let record = harness.manifest.object(&harness.bucket, missing).await.unwrap().unwrap();
            assert_eq!(record.state, ObjectState::Missing, "{missing}");
            assert!(record.note.as_deref().unwrap_or_default().contains(note), "{missing}: {:?}", record.note);
            assert!(record.placement.is_none(), "{missing}");
            harness.originals.remove(missing.as_str());
        }
        // The new versions are untouched: not tagged.
        for overwritten in [&overwritten_before, &overwritten_during] {
            let tags = harness.store.get_tags(&harness.bucket, overwritten).await.unwrap();
            assert!(tags.is_empty(), "{overwritten}: {tags:?}");
        }
        let (expected_bytes, expected_placements) = concatenated(&kept);
        check_output(&harness, "app/2024/01/14/", &expected_bytes, &expected_placements).await;
        harness.assert_finished("after missing large sources").await;
    }

    /// Delete mode batches deletes across outputs: 2,100 sources of 12 KB in one partition
    /// fill five outputs (512 to a 6 MiB output) and cost three `delete_many` calls (1,000,
    /// 1,000 and 100 keys), not one or more per output; and no HEAD or single delete at all.
    pub async fn delete_mode_deletes_sources_in_one_request_per_thousand(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "delete").await else { return };
        // The batching is the engine's, the same on every backend: the embedded one shows it at
        // full size. On the servers the checks below cost several requests per source (over
        // four minutes for 2,100 here), so one smaller batch shows the S3 adapter's
        // DeleteObjects inside a seal; the conformance suite sends it 1,000 keys.
        let (sources_in_partition, batches) = if backend == Backend::Embedded { (2_100, 3) } else { (40, 1) };
        let objects: Vec<(String, Bytes)> = (0..sources_in_partition)
            .map(|index| {
                (
                    format!("app/2024/01/14/o-{index:05}.json"),
                    Bytes::from(format!("{{\"i\":{index:05},\"pad\":\"{}\"}}\n", "x".repeat(12_250))),
                )
            })
            .collect();
        harness.add_many(objects).await;
        harness.add("app/2024/01/15/other.json", "{\"other\":1}\n").await;
        harness.plan.heal();
        let report = harness.seal().await;
        assert_eq!(report.partitions_failed, 0, "{:?}", report.failures);
        assert_eq!(report.objects_compacted, sources_in_partition + 1);
        assert_eq!(report.expiry.deleted, sources_in_partition + 1);
        if backend == Backend::Embedded {
            assert_eq!(report.outputs_committed, 6, "five outputs for 01/14, one for 01/15");
        }
        let counts = harness.plan.counts();
        // The batches of 01/14, and one for 01/15's single source.
        assert_eq!(counts.get("store.delete_many"), Some(&(batches + 1)), "{counts:?}");
        assert_eq!(counts.get("store.delete"), None, "{counts:?}");
        assert_eq!(counts.get("store.head"), None, "{counts:?}");
        let left = harness.store.list(&harness.bucket, "app/", None, 10_000).await.unwrap();
        assert!(left.objects.is_empty(), "sources left: {:?}", left.objects.len());
        harness.assert_safe("after a delete-mode seal").await;
        harness.assert_finished("after a delete-mode seal").await;
    }

    /// A key the store refuses to delete fails the partition without losing the other keys'
    /// marks; the lock is left to expire (released, the partition would be sealed and never
    /// looked at again), and the run after the lease finishes it. A source overwritten in
    /// between (its event not yet arrived) is refused by the conditional delete: its new bytes
    /// survive.
    pub async fn delete_mode_finishes_refused_deletes_later_and_never_deletes_a_newer_version(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "delete").await else { return };
        for name in ["a", "b", "refused", "overwritten"] {
            harness.add(&format!("app/2024/01/14/{name}.json"), format!("{{\"{name}\":1}}\n")).await;
        }
        harness.plan.refuse_deletes_of(["app/2024/01/14/refused.json", "app/2024/01/14/overwritten.json"]);
        let first = harness.seal().await;
        assert_eq!(first.partitions_failed, 1, "{first:?}");
        assert!(first.failures[0].1.contains("injected refusal"), "{:?}", first.failures);
        harness.assert_safe("after the refused deletes").await;
        let partition = PartitionKey::new(&harness.bucket, "app/2024/01/14/");
        let record = harness.manifest.partition(&partition).await.unwrap().unwrap();
        assert_eq!(record.state, PartitionState::Sealing, "the lock is left to expire, not released as sealed");
        for (name, marked) in [("a", true), ("b", true), ("refused", false), ("overwritten", false)] {
            let key = format!("app/2024/01/14/{name}.json");
            let object = harness.manifest.object(&harness.bucket, &key).await.unwrap().unwrap();
            assert_eq!(object.state, ObjectState::Compacted, "{key}");
            assert_eq!(object.expiry_marked_at.is_some(), marked, "{key}");
            assert_eq!(harness.store.head(&harness.bucket, &key).await.is_ok(), !marked, "{key}");
        }

        // Overwritten after its compaction; the new version's event has not arrived yet.
        let newer = Bytes::from_static(b"{\"overwritten\":2,\"newer\":true}\n");
        harness
            .store
            .put(&harness.bucket, "app/2024/01/14/overwritten.json", newer.clone(), PutOptions::default())
            .await
            .unwrap();
        harness.plan.heal();
        let during_the_lease = harness.seal().await;
        assert_eq!(during_the_lease.partitions_sealed + during_the_lease.partitions_failed, 0, "{during_the_lease:?}");
        harness.clock.advance(Duration::minutes(6));
        let after_the_lease = harness.seal().await;
        assert_eq!(after_the_lease.partitions_failed, 0, "{:?}", after_the_lease.failures);
        assert_eq!(after_the_lease.partitions_sealed, 1);
        assert_eq!(after_the_lease.expiry.deleted, 1, "{:?}", after_the_lease.expiry);
        assert_eq!(after_the_lease.expiry.changed, 1, "{:?}", after_the_lease.expiry);
        assert!(harness.store.head(&harness.bucket, "app/2024/01/14/refused.json").await.is_err());
        let survivor = harness
            .store
            .get(&harness.bucket, "app/2024/01/14/overwritten.json", GetOptions::default())
            .await
            .expect("the newer version survives")
            .bytes()
            .await
            .unwrap();
        assert_eq!(survivor, newer);
        // The compacted version is still restorable from its output.
        let (_, restored) = harness.compactor().restore_bytes("app/2024/01/14/overwritten.json").await.unwrap();
        assert_eq!(restored, Bytes::from_static(b"{\"overwritten\":1}\n"));
        assert_eq!(harness.manifest.partition(&partition).await.unwrap().unwrap().state, PartitionState::Sealed);
    }
}
