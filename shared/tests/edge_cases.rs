//! Issue 11, "Edge cases that break today": each case as a new user met it, through the engine,
//! on the embedded backend and (built with the `aws` feature) on the S3 and DynamoDB test
//! servers, named `…_on_s3_and_dynamodb` (they say `SKIPPED` without the servers, see
//! `testkit::servers`). The manifest-level half of the empty-source paging case is in the
//! manifest conformance suite (`output_sources_pages_past_empty_sources_that_share_an_offset`).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::ManualClock;
use compactor::config::{Config, RawConfig};
use compactor::domain::partition::PartitionKey;
use compactor::domain::records::ObjectState;
use compactor::engine::{Compactor, EngineError, SealOptions};
use compactor::ports::{Manifest, ObjectStore, PutOptions};

const EMBEDDED_BUCKET: &str = "src";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    #[cfg(feature = "aws")]
    Aws,
}

/// A backend with one source bucket (outputs go to it too), a manifest and a clock.
struct Harness {
    _guard: Box<dyn std::any::Any>,
    bucket: String,
    store: Arc<dyn ObjectStore>,
    manifest: Arc<dyn Manifest>,
    clock: ManualClock,
    config: Config,
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn config(bucket: &str, expiry: &str) -> Config {
    RawConfig {
        source_bucket: Some(bucket.into()),
        expiry: Some(expiry.into()),
        grace: Some("1h".into()),
        lease: Some("5m".into()),
        ..Default::default()
    }
    .validate()
    .unwrap()
}

/// What a backend opens to: a guard that keeps it alive, the bucket, the two ports.
type Opened = (Box<dyn std::any::Any>, String, Arc<dyn ObjectStore>, Arc<dyn Manifest>);

impl Harness {
    async fn new(backend: Backend, expiry: &str) -> Option<Harness> {
        let (guard, bucket, store, manifest): Opened = match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                std::fs::create_dir_all(dir.path().join("buckets").join(EMBEDDED_BUCKET)).unwrap();
                let store = Arc::new(LocalDir::open(dir.path().join("buckets")).unwrap());
                let manifest = Arc::new(SqliteManifest::open(dir.path().join("manifest.sqlite")).unwrap());
                (Box::new(dir), EMBEDDED_BUCKET.to_owned(), store, manifest)
            }
            #[cfg(feature = "aws")]
            Backend::Aws => {
                use compactor::testkit::{s3_server, servers};
                servers::s3_endpoint().zip(servers::dynamodb_endpoint())?;
                let (store, bucket, bucket_guard) = s3_server::amazon_s3_with_fresh_bucket().await?;
                let layout = config(&bucket, expiry).layout;
                let (manifest, table) = servers::dynamodb_manifest_with_fresh_table(layout).await?;
                (Box::new((bucket_guard, table)), bucket, Arc::new(store), Arc::new(manifest))
            }
        };
        Some(Harness {
            _guard: guard,
            config: config(&bucket, expiry),
            bucket,
            store,
            manifest,
            clock: ManualClock::new(at("2024-01-20T00:00:00Z")),
        })
    }

    fn compactor(&self) -> Compactor {
        Compactor::new(
            self.config.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.manifest),
            Arc::new(self.clock.clone()),
        )
    }

    async fn put(&self, key: &str, body: &'static [u8]) {
        self.store.put(&self.bucket, key, Bytes::from_static(body), PutOptions::default()).await.unwrap();
    }

    async fn scan(&self, prefix: &str) -> compactor::engine::IngestReport {
        self.compactor().scan(prefix, |_| {}).await.unwrap()
    }

    async fn seal(&self) -> compactor::engine::SealReport {
        let report = self.compactor().seal_closed(&SealOptions::default()).await.unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        report
    }

    fn partition(&self, path: &str) -> PartitionKey {
        PartitionKey::new(self.bucket.clone(), path)
    }
}

macro_rules! on_each_backend {
    ($case:ident, $aws_test:ident) => {
        #[tokio::test]
        async fn $case() {
            cases::$case(Backend::Embedded).await;
        }

        #[cfg(feature = "aws")]
        #[tokio::test]
        async fn $aws_test() {
            cases::$case(Backend::Aws).await;
        }
    };
}

on_each_backend!(an_empty_source_restores_as_empty_bytes, an_empty_source_restores_as_empty_bytes_on_s3_and_dynamodb);
on_each_backend!(
    an_empty_source_and_the_next_share_an_offset_without_a_false_overlap,
    an_empty_source_and_the_next_share_an_offset_without_a_false_overlap_on_s3_and_dynamodb
);
on_each_backend!(
    a_rescan_compacts_the_new_version_of_an_overwritten_source,
    a_rescan_compacts_the_new_version_of_an_overwritten_source_on_s3_and_dynamodb
);
on_each_backend!(
    delete_mode_counts_sources_already_gone_as_deleted,
    delete_mode_counts_sources_already_gone_as_deleted_on_s3_and_dynamodb
);
on_each_backend!(
    a_seal_after_a_killed_one_names_the_partitions_its_lease_still_holds,
    a_seal_after_a_killed_one_names_the_partitions_its_lease_still_holds_on_s3_and_dynamodb
);
on_each_backend!(
    verify_against_sources_counts_and_names_the_originals_it_skips,
    verify_against_sources_counts_and_names_the_originals_it_skips_on_s3_and_dynamodb
);

/// Item 2, as reported: 1,002 objects, the 1,000th by key empty, so the manifest's first page
/// of an output's sources ends on it and the 1,001st shares its offset. (Embedded only: the
/// conformance suite pages past empty sources on DynamoDB with pages of one and two.)
#[tokio::test]
async fn an_empty_source_at_a_page_boundary_is_counted_by_verify_and_listed_by_audit() {
    let harness = Harness::new(Backend::Embedded, "tag").await.unwrap();
    for index in 0..1002 {
        let body: &'static [u8] = if index == 999 { b"" } else { b"{\"n\":1}\n" };
        harness.put(&format!("logs/2024/01/01/o{index:04}.json"), body).await;
    }
    harness.scan("logs/").await;
    assert_eq!(harness.seal().await.objects_compacted, 1002);

    let report = harness.compactor().verify(None, false, |_| {}).await.unwrap();
    assert!(report.all_verified(), "{:?}", report.failures);
    assert_eq!(report.sources_checked, 1002);
    let outputs =
        harness.compactor().audit_partition_outputs(&harness.partition("logs/2024/01/01/"), None).await.unwrap();
    let audit = harness.compactor().audit_output(&harness.bucket, &outputs[0].key).await.unwrap();
    assert_eq!(audit.sources.len(), 1002, "every source, the one after the empty one too");
    assert_eq!(audit.sources[1000].key, "logs/2024/01/01/o1000.json");
}

/// Item 7: bytes that fail their sha256 are a verification mismatch (exit 3), not bad input.
#[tokio::test]
async fn a_restore_whose_bytes_fail_their_sha256_is_a_mismatch() {
    let harness = Harness::new(Backend::Embedded, "tag").await.unwrap();
    harness.put("logs/2024/01/02/a.json", b"{\"a\":1}\n").await;
    harness.scan("logs/").await;
    harness.seal().await;
    let outputs =
        harness.compactor().audit_partition_outputs(&harness.partition("logs/2024/01/02/"), None).await.unwrap();
    let corrupt = Bytes::from_static(b"{\"a\":2}\n");
    harness.store.put(&harness.bucket, &outputs[0].key, corrupt, PutOptions::default()).await.unwrap();

    let error = harness.compactor().restore_bytes("logs/2024/01/02/a.json").await.unwrap_err();
    assert!(matches!(&error, EngineError::Mismatch(message) if message.contains("run `verify`")), "{error:?}");
    assert!(!error.is_bad_input());
}

mod cases {
    use super::*;

    /// Item 1: an empty source is compacted at length 0; restoring it gives no bytes.
    pub async fn an_empty_source_restores_as_empty_bytes(backend: Backend) {
        let Some(harness) = Harness::new(backend, "tag").await else { return };
        harness.put("logs/2024/01/02/empty.json", b"").await;
        harness.put("logs/2024/01/02/obj.json", b"{\"a\":1}\n").await;
        harness.scan("logs/").await;
        assert_eq!(harness.seal().await.objects_compacted, 2);

        let (record, bytes) = harness.compactor().restore_bytes("logs/2024/01/02/empty.json").await.unwrap();
        assert_eq!((record.state, bytes.len()), (ObjectState::Compacted, 0));
        let (_, bytes) = harness.compactor().restore_bytes("logs/2024/01/02/obj.json").await.unwrap();
        assert_eq!(&bytes[..], b"{\"a\":1}\n");
    }

    /// Item 3 (reported in `logs/2024/03/02/`): `empty.json` (0 B) and `obj.json` start at the
    /// same byte; verify must not call
    /// that an overlap, and the audit lists them in the order they were placed.
    pub async fn an_empty_source_and_the_next_share_an_offset_without_a_false_overlap(backend: Backend) {
        let Some(harness) = Harness::new(backend, "tag").await else { return };
        harness.put("logs/2024/01/06/empty.json", b"").await;
        harness.put("logs/2024/01/06/obj.json", b"{\"b\":1}").await;
        harness.scan("logs/").await;
        harness.seal().await;

        let report = harness.compactor().verify(None, false, |_| {}).await.unwrap();
        assert!(report.all_verified(), "{:?}", report.failures);
        assert_eq!(report.sources_ok, 2);
        let outputs =
            harness.compactor().audit_partition_outputs(&harness.partition("logs/2024/01/06/"), None).await.unwrap();
        let audit = harness.compactor().audit_output(&harness.bucket, &outputs[0].key).await.unwrap();
        let listed: Vec<(&str, u64, u64)> = audit
            .sources
            .iter()
            .map(|source| {
                let placement = source.placement.as_ref().unwrap();
                (source.key.as_str(), placement.offset, placement.length)
            })
            .collect();
        assert_eq!(listed, [("logs/2024/01/06/empty.json", 0, 0), ("logs/2024/01/06/obj.json", 0, 7)]);
    }

    /// Item 4: recorded by a scan, overwritten before the seal (which records it missing), the
    /// source's new version is recorded by the next scan and compacted by the next seal.
    pub async fn a_rescan_compacts_the_new_version_of_an_overwritten_source(backend: Backend) {
        let Some(harness) = Harness::new(backend, "tag").await else { return };
        harness.put("logs/2024/01/03/a.json", b"{\"version\":1}\n").await;
        harness.put("logs/2024/01/03/b.json", b"{\"b\":1}\n").await;
        let scanned = harness.scan("logs/").await;
        // DynamoDB appends what a scan lists unread (`appended`); the seals below show the effect.
        assert_eq!(scanned.recorded + scanned.appended, 2, "{scanned:?}");
        harness.put("logs/2024/01/03/a.json", b"{\"version\":2}\n").await;
        assert_eq!(harness.seal().await.objects_missing, 1, "the recorded version is gone");

        let rescan = harness.scan("logs/").await;
        if rescan.appended == 0 {
            assert_eq!((rescan.updated, rescan.stale), (1, 1), "the new version is new, b.json is not: {rescan:?}");
        } else {
            assert_eq!(rescan.appended, 2, "{rescan:?}");
        }
        let resealed = harness.seal().await;
        assert_eq!(resealed.objects_compacted, 1);
        let (record, bytes) = harness.compactor().restore_bytes("logs/2024/01/03/a.json").await.unwrap();
        assert_eq!((record.state, &bytes[..]), (ObjectState::Compacted, &b"{\"version\":2}\n"[..]));
        let again = harness.scan("logs/").await;
        if again.appended == 0 {
            assert_eq!((again.updated, again.stale), (0, 2), "a third scan changes nothing");
        }
        assert_eq!(harness.seal().await.objects_compacted, 0, "a third scan changes nothing");
        let report = harness.compactor().verify(None, true, |_| {}).await.unwrap();
        assert!(report.all_verified(), "{:?}", report.failures);
    }

    /// Item 11: sources a crashed run deleted before recording it are `deleted` on the rerun,
    /// never `changed`. The crash is staged: sealed without expiry, the sources deleted behind
    /// the manifest's back, then the partition sealed again in delete mode.
    pub async fn delete_mode_counts_sources_already_gone_as_deleted(backend: Backend) {
        let Some(mut harness) = Harness::new(backend, "none").await else { return };
        let keys = ["logs/2024/01/04/a.json", "logs/2024/01/04/b.json"];
        for key in keys {
            harness.put(key, b"{\"c\":1}\n").await;
        }
        harness.scan("logs/").await;
        harness.seal().await;
        for key in keys {
            harness.store.delete(&harness.bucket, key).await.unwrap();
        }

        harness.config = config(&harness.bucket, "delete");
        let options =
            SealOptions { partitions: Some(vec![harness.partition("logs/2024/01/04/")]), ..Default::default() };
        let report = harness.compactor().seal_closed(&options).await.unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(
            (report.expiry.deleted, report.expiry.changed, report.expiry.gone),
            (2, 0, 0),
            "{:?}",
            report.expiry
        );
    }

    /// Item 5: a killed seal's lock stays live until its lease expires; the next seal skips the
    /// partition, and says which, whose lock and until when, instead of `0 locked elsewhere`.
    pub async fn a_seal_after_a_killed_one_names_the_partitions_its_lease_still_holds(backend: Backend) {
        let Some(harness) = Harness::new(backend, "tag").await else { return };
        harness.put("logs/2024/01/07/a.json", b"{\"e\":1}\n").await;
        harness.scan("logs/").await;
        let partition = harness.partition("logs/2024/01/07/");
        let now = compactor::clock::Clock::now(&harness.clock);
        let killed =
            harness.manifest.acquire(&partition, "killed-run", now, chrono::Duration::minutes(5)).await.unwrap();

        let report = harness.seal().await;
        assert_eq!(report.partitions_sealed, 0);
        assert_eq!(report.locks_held.len(), 1, "{:?}", report.locks_held);
        let lock = &report.locks_held[0];
        assert_eq!(
            (&lock.partition, lock.owner.as_str(), lock.expires_at),
            (&partition, "killed-run", killed.expires_at)
        );

        harness.clock.advance(chrono::Duration::minutes(6));
        let report = harness.seal().await;
        assert_eq!((report.partitions_sealed, report.locks_held.len()), (1, 0));
    }

    /// Item 8: a source overwritten since compaction, and one deleted, are counted and named
    /// instead of silently left out of the comparison with the originals.
    pub async fn verify_against_sources_counts_and_names_the_originals_it_skips(backend: Backend) {
        let Some(harness) = Harness::new(backend, "none").await else { return };
        for name in ["kept", "overwritten", "deleted"] {
            harness.put(&format!("logs/2024/01/05/{name}.json"), b"{\"d\":1}\n").await;
        }
        harness.scan("logs/").await;
        harness.seal().await;
        harness.put("logs/2024/01/05/overwritten.json", b"{\"d\":2}\n").await;
        harness.store.delete(&harness.bucket, "logs/2024/01/05/deleted.json").await.unwrap();

        let report = harness.compactor().verify(None, true, |_| {}).await.unwrap();
        assert!(report.all_verified(), "{:?}", report.failures);
        assert_eq!((report.originals_compared, report.originals_changed, report.originals_gone), (1, 1, 1));
        assert_eq!(report.originals_skipped_keys, ["logs/2024/01/05/deleted.json", "logs/2024/01/05/overwritten.json"]);
    }
}

/// Non-negotiable 4: a local file whose name is not UTF-8 cannot be a key, so the backfill
/// cannot record it; it is counted as skipped in the scan's report (and logged), never dropped
/// without a word, and left where it is by the seal.
#[cfg(unix)]
#[tokio::test]
async fn a_scan_counts_a_local_file_whose_name_is_not_utf8_as_skipped_and_leaves_it() {
    use std::os::unix::ffi::OsStrExt;
    let harness = Harness::new(Backend::Embedded, "tag").await.unwrap();
    harness.put("logs/2024/01/01/a.json", b"{\"a\":1}\n").await;
    harness.put("logs/2024/01/01/b.json", b"{\"b\":1}\n").await;
    let root = harness._guard.downcast_ref::<tempfile::TempDir>().expect("the embedded backend's directory");
    let bad = root
        .path()
        .join("buckets")
        .join(EMBEDDED_BUCKET)
        .join("logs/2024/01/01")
        .join(std::ffi::OsStr::from_bytes(b"c-\xff.json"));
    std::fs::write(&bad, b"{\"c\":1}\n").unwrap();

    let report = harness.scan("logs/").await;
    assert_eq!(report.recorded, 2, "{report:?}");
    assert_eq!(report.skipped.get(&compactor::engine::SkipReason::NameNotUtf8), Some(&1), "{report:?}");
    assert_eq!(report.events, 3, "every file the listing met is an event of the report: {report:?}");
    assert_eq!(harness.seal().await.objects_compacted, 2);
    assert_eq!(std::fs::read(&bad).unwrap(), b"{\"c\":1}\n", "left as it was");
}
