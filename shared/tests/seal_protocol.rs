//! The seal protocol end to end on the embedded backend: exactly-once compaction, crash at
//! every step, late objects, removals, missing and changed sources, lease takeover, deadlines.

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
use compactor::domain::records::{ObjectState, OutputState, PartitionState};
use compactor::engine::seal::SealOptions;
use compactor::engine::Compactor;
use compactor::event::{ObjectEvent, ObjectEventKind};
use compactor::ports::{GetOptions, Manifest, ObjectQuery, ObjectStore, PutOptions, Tag};
use compactor::testkit::faults::{CrashMode, FaultPlan, FaultyManifest, FaultyStore};

const BUCKET: &str = "src";

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    manifest: Arc<dyn Manifest>,
    plan: Arc<FaultPlan>,
    clock: ManualClock,
    config: Config,
    /// Every source written, with its original bytes.
    originals: BTreeMap<String, Bytes>,
    sequence: u64,
}

fn config(expiry: &str) -> Config {
    RawConfig {
        source_bucket: Some(BUCKET.into()),
        target_output_bytes: Some("6MiB".into()),
        part_bytes: Some("5MiB".into()),
        read_ahead_bytes: Some("3MiB".into()),
        partition_concurrency: Some("1".into()),
        expiry: Some(expiry.into()),
        grace: Some("1h".into()),
        lease: Some("5m".into()),
        ..Default::default()
    }
    .validate()
    .expect("a valid test configuration")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

impl Harness {
    async fn new(expiry: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("buckets").join(BUCKET)).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::open(dir.path().join("buckets")).unwrap());
        let manifest: Arc<dyn Manifest> = Arc::new(SqliteManifest::open(dir.path().join("manifest.sqlite")).unwrap());
        Harness {
            _dir: dir,
            store,
            manifest,
            plan: FaultPlan::new(),
            clock: ManualClock::new(at("2024-01-20T00:00:00Z")),
            config: config(expiry),
            originals: BTreeMap::new(),
            sequence: 0,
        }
    }

    /// The engine, with every port call going through the fault plan.
    fn compactor(&self) -> Compactor {
        let store = Arc::new(FaultyStore::new(Arc::clone(&self.store), Arc::clone(&self.plan)));
        let manifest = Arc::new(FaultyManifest::new(Arc::clone(&self.manifest), Arc::clone(&self.plan)));
        Compactor::new(self.config.clone(), store, manifest, Arc::new(self.clock.clone()))
    }

    /// PUTs a source and ingests its event.
    async fn add(&mut self, key: &str, body: impl Into<Bytes>) {
        let body: Bytes = body.into();
        let meta = self.store.put(BUCKET, key, body.clone(), PutOptions::default()).await.unwrap();
        self.originals.insert(key.to_string(), body);
        self.sequence += 1;
        let event = ObjectEvent {
            kind: ObjectEventKind::Created { size: meta.size, etag: meta.etag },
            bucket: BUCKET.into(),
            key: key.into(),
            sequencer: format!("{:016X}", self.sequence),
            event_time: self.clock.now_for_tests(),
            event_name: "ObjectCreated:Put".into(),
        };
        self.compactor().ingest(&[event]).await.unwrap();
    }

    /// Two partitions: one whose outputs need multipart uploads, one of many small line and
    /// gzip files, some without a final newline.
    async fn standard_dataset(&mut self) {
        for index in 0..3 {
            let body = format!("{{\"big\":{index},\"pad\":\"{}\"}}\n", "x".repeat(5 << 19));
            self.add(&format!("app/2024/01/14/big-{index}.json"), body).await;
        }
        for index in 0..12 {
            let newline = if index % 4 == 0 { "" } else { "\n" };
            self.add(&format!("app/2024/01/15/small {index}+é.json"), format!("{{\"n\":{index}}}{newline}")).await;
        }
        for index in 0..3 {
            self.add(&format!("app/2024/01/15/part-{index}.json.gz"), gzip(format!("line {index}\n").as_bytes())).await;
        }
    }

    async fn seal(&self) -> compactor::engine::SealReport {
        self.compactor().seal_closed(&SealOptions::default()).await.unwrap()
    }

    /// Safety at any moment, even right after a crash: a source is marked for expiry only if
    /// the output holding it is committed, exists, and holds its bytes.
    async fn assert_safe(&self, context: &str) {
        for (key, original) in &self.originals {
            let record = self.manifest.object(BUCKET, key).await.unwrap().expect("every source is recorded");
            let tagged = match self.store.get_tags(BUCKET, key).await {
                Ok(tags) => tags.contains(&Tag::new("compacted", "true")),
                Err(_) => false,
            };
            let gone = self.store.head(BUCKET, key).await.is_err();
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
            let output = self.manifest.output(BUCKET, &placement.output_key).await.unwrap().expect("output recorded");
            assert_eq!(output.state, OutputState::Committed, "{context}: {key} marked before its output committed");
            let range = placement.offset..placement.offset + placement.length;
            let bytes = self
                .store
                .get(BUCKET, &placement.output_key, GetOptions { range: Some(range), if_match: None })
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
                        self.store.head(BUCKET, &output.key).await.is_err(),
                        "{context}: abandoned {} still stored",
                        output.key
                    );
                    continue;
                }
                for source in compactor.audit_output(BUCKET, &output.key).await.unwrap().sources {
                    placed_in.entry(source.key).or_default().push(output.key.clone());
                }
                committed_outputs.push(output.key);
            }
        }
        for (key, original) in &self.originals {
            let outputs = placed_in.get(key).cloned().unwrap_or_default();
            assert_eq!(outputs.len(), 1, "{context}: {key} is in {outputs:?}");
            let record = self.manifest.object(BUCKET, key).await.unwrap().unwrap();
            assert_eq!(record.state, ObjectState::Compacted, "{context}: {key}");
            assert!(record.expiry_marked_at.is_some(), "{context}: {key} not marked for expiry");
            let (_, restored) = compactor.restore_bytes(key).await.unwrap();
            assert_eq!(&restored, original, "{context}: restore of {key}");
        }
        let stored = self.store.list(BUCKET, &self.config.dest_prefix, None, 10_000).await.unwrap();
        let mut stored_keys: Vec<String> = stored.objects.into_iter().map(|meta| meta.key).collect();
        stored_keys.sort();
        committed_outputs.sort();
        assert_eq!(stored_keys, committed_outputs, "{context}: only committed outputs are stored");
        let report = compactor.verify(None, false, |_| {}).await.unwrap();
        assert!(report.all_verified(), "{context}: {:?}", report.failures);
        assert_eq!(report.sources_checked, self.originals.len() as u64, "{context}");
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

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_seal_compacts_every_object_exactly_once_and_tags_it() {
    let mut harness = Harness::new("tag").await;
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
    let partition = PartitionKey::new(BUCKET, "app/2024/01/15/");
    let outputs = harness.manifest.outputs(&partition, Some(OutputState::Committed)).await.unwrap();
    let gzip_output = outputs.iter().find(|output| output.key.ends_with(".json.gz")).expect("a gzip output");
    assert_eq!(gzip_output.key, "compacted/app/2024/01/15/compacted-g000001-p00002.json.gz");
    let bytes =
        harness.store.get(BUCKET, &gzip_output.key, GetOptions::default()).await.unwrap().bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
    assert_eq!(text, "line 0\nline 1\nline 2\n");

    // Line files that lacked a newline got one, outside their recorded range.
    let record = harness.manifest.object(BUCKET, "app/2024/01/15/small 0+é.json").await.unwrap().unwrap();
    assert_eq!(record.placement.as_ref().unwrap().separator_bytes, 1);

    // Sealing again changes nothing.
    let again = harness.seal().await;
    assert_eq!(again.partitions_sealed + again.objects_compacted + again.outputs_committed, 0);
    harness.assert_finished("after a second seal").await;
}

#[tokio::test]
async fn only_closed_partitions_are_sealed() {
    let mut harness = Harness::new("tag").await;
    harness.add("app/2024/01/19/a.json", "{}\n").await;
    harness.add("app/2024/01/18/b.json", "{}\n").await;
    // Now is 2024-01-20T00:00: 01/19 closes at 01:00 (grace 1h).
    let report = harness.seal().await;
    assert_eq!(report.partitions_sealed, 1);
    let open = harness.manifest.partition(&PartitionKey::new(BUCKET, "app/2024/01/19/")).await.unwrap().unwrap();
    assert_eq!(open.state, PartitionState::Open);
    assert_eq!(open.pending_objects, 1);
    harness.clock.advance(Duration::hours(1));
    assert_eq!(harness.seal().await.partitions_sealed, 1);
    harness.assert_finished("after the grace period").await;
}

/// Crash at every port call in turn, before and after the call takes effect; a rerun must
/// finish the work with every object compacted exactly once, and nothing may be marked for
/// expiry early at any point.
async fn crash_at_every_step(expiry: &str) {
    let mut clean = Harness::new(expiry).await;
    clean.standard_dataset().await;
    clean.plan.heal();
    clean.seal().await;
    let calls_in_a_clean_seal = clean.plan.calls();
    assert!(calls_in_a_clean_seal > 40, "a seal makes {calls_in_a_clean_seal} calls");

    let mut crash_sites: BTreeMap<String, u64> = BTreeMap::new();
    for mode in [CrashMode::BeforeCall, CrashMode::AfterCall] {
        for crash_at in 1..=calls_in_a_clean_seal {
            let mut harness = Harness::new(expiry).await;
            harness.standard_dataset().await;
            harness.plan.heal();
            harness.plan.crash_at(crash_at, mode);
            let crashed_run = harness.compactor().seal_closed(&SealOptions::default()).await;
            let context = format!("{expiry}, crash {mode:?} call {crash_at} in {:?}", harness.plan.crashed_in());
            if !harness.plan.crashed() {
                continue;
            }
            *crash_sites.entry(harness.plan.crashed_in().unwrap()).or_default() += 1;
            let _ = crashed_run;
            harness.plan.heal();
            harness.assert_safe(&context).await;
            // The crashed run's lease must expire before anyone else takes over.
            harness.clock.advance(Duration::minutes(6));
            let rerun = harness.seal().await;
            assert_eq!(rerun.partitions_failed, 0, "{context}: {:?}", rerun.failures);
            harness.assert_safe(&context).await;
            harness.assert_finished(&context).await;
        }
    }
    for operation in [
        "manifest.acquire",
        "manifest.begin_output",
        "store.create_multipart",
        "store.upload_part",
        "store.complete_multipart",
        "store.put",
        "manifest.record_placements",
        "manifest.commit_output",
        "manifest.mark_compacted",
        "store.put_tags",
        "manifest.mark_expiry",
        "manifest.release",
    ] {
        let expected = !(expiry == "delete" && operation == "store.put_tags");
        assert_eq!(crash_sites.contains_key(operation), expected, "crashes hit {crash_sites:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_is_finished_by_the_next_run_tag_mode() {
    crash_at_every_step("tag").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_is_finished_by_the_next_run_delete_mode() {
    crash_at_every_step("delete").await;
}

#[tokio::test]
async fn a_late_object_reopens_a_sealed_partition_and_gets_a_new_generation() {
    let mut harness = Harness::new("tag").await;
    harness.add("app/2024/01/14/a.json", "{\"a\":1}\n").await;
    harness.seal().await;
    harness.add("app/2024/01/14/late.json", "{\"late\":1}\n").await;
    let partition = PartitionKey::new(BUCKET, "app/2024/01/14/");
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

#[tokio::test]
async fn removed_missing_and_overwritten_sources_are_never_compacted_as_wrong_bytes() {
    let mut harness = Harness::new("tag").await;
    harness.add("app/2024/01/14/keep.json", "{\"keep\":1}\n").await;
    harness.add("app/2024/01/14/removed.json", "{\"removed\":1}\n").await;
    harness.add("app/2024/01/14/vanished.json", "{\"vanished\":1}\n").await;
    harness.add("app/2024/01/14/overwritten.json", "{\"v\":1}\n").await;

    // A removal event takes the object out of the plan.
    let removal = ObjectEvent {
        kind: ObjectEventKind::Removed,
        bucket: BUCKET.into(),
        key: "app/2024/01/14/removed.json".into(),
        sequencer: "FFFF000000000000".into(),
        event_time: at("2024-01-19T00:00:00Z"),
        event_name: "ObjectRemoved:Delete".into(),
    };
    harness.compactor().ingest(&[removal]).await.unwrap();
    harness.store.delete(BUCKET, "app/2024/01/14/removed.json").await.unwrap();
    // Deleted without an event reaching us, and overwritten before its event arrived.
    harness.store.delete(BUCKET, "app/2024/01/14/vanished.json").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    harness
        .store
        .put(
            BUCKET,
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
        async move { manifest.object(BUCKET, key).await.unwrap().unwrap() }
    };
    assert_eq!(state("app/2024/01/14/keep.json").await.state, ObjectState::Compacted);
    assert_eq!(state("app/2024/01/14/removed.json").await.state, ObjectState::Removed);
    let vanished = state("app/2024/01/14/vanished.json").await;
    assert_eq!(vanished.state, ObjectState::Missing);
    assert!(vanished.note.unwrap().contains("no longer exists"));
    let overwritten = state("app/2024/01/14/overwritten.json").await;
    assert_eq!(overwritten.state, ObjectState::Missing);
    // The new version is untouched: not tagged.
    let tags = harness.store.get_tags(BUCKET, "app/2024/01/14/overwritten.json").await.unwrap();
    assert!(tags.is_empty(), "{tags:?}");
}

#[tokio::test]
async fn a_stalled_run_that_lost_its_lease_cannot_commit() {
    let mut harness = Harness::new("tag").await;
    harness.add("app/2024/01/14/a.json", "{}\n").await;
    let partition = PartitionKey::new(BUCKET, "app/2024/01/14/");
    let stalled = harness
        .manifest
        .acquire(&partition, "stalled", at("2024-01-20T00:00:00Z"), Duration::minutes(5))
        .await
        .unwrap();
    // While the lease is live, a seal skips the partition.
    let report = harness.seal().await;
    assert_eq!(report.partitions_locked, 0, "a locked partition is not even listed as closed");
    assert_eq!(report.objects_compacted, 0);
    harness.clock.advance(Duration::minutes(6));
    let report = harness.seal().await;
    assert_eq!(report.objects_compacted, 1);
    let error = harness.manifest.release(&stalled, at("2024-01-20T00:10:00Z")).await.unwrap_err();
    assert!(error.to_string().contains("lost the lease"), "{error}");
    harness.assert_finished("after takeover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_seal_runs_compact_each_object_once() {
    let mut harness = Harness::new("tag").await;
    for day in 10..16 {
        for index in 0..8 {
            harness.add(&format!("app/2024/01/{day}/o-{index}.json"), format!("{{\"d\":{day},\"i\":{index}}}\n")).await;
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

#[tokio::test]
async fn a_deadline_stops_at_an_output_boundary_and_the_next_run_goes_on() {
    let mut harness = Harness::new("tag").await;
    harness.standard_dataset().await;
    let options = SealOptions { deadline: Some(at("2024-01-19T00:00:00Z")), ..Default::default() };
    let report = harness.compactor().seal_closed(&options).await.unwrap();
    assert!(report.stopped_at_deadline);
    assert_eq!(report.outputs_committed, 0);
    let partition = harness.manifest.partition(&PartitionKey::new(BUCKET, "app/2024/01/14/")).await.unwrap().unwrap();
    assert_eq!(partition.state, PartitionState::Open, "released for the next run");
    harness.seal().await;
    harness.assert_finished("after the next run").await;
}

#[tokio::test]
async fn a_seal_makes_no_list_requests() {
    let mut harness = Harness::new("tag").await;
    harness.standard_dataset().await;
    harness.plan.heal();
    harness.seal().await;
    let counts = harness.plan.counts();
    assert_eq!(counts.get("store.list"), None, "{counts:?}");
    assert_eq!(counts.get("store.get"), Some(&18));
    assert_eq!(counts.get("store.put_tags"), Some(&18));
    let objects =
        harness.manifest.objects(&PartitionKey::new(BUCKET, "app/2024/01/15/"), &ObjectQuery::all()).await.unwrap();
    assert_eq!(objects.len(), 15);
}
