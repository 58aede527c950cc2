//! What the embedded-backend test files share: a local directory and an SQLite manifest in a
//! temporary directory, a clock past the test partitions, sources PUT and ingested one event
//! each, and the committed outputs read back.

// Each test file is a crate of its own that compiles this module and uses part of it.
#![allow(dead_code)]

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::ManualClock;
use compactor::config::RawConfig;
use compactor::domain::partition::PartitionKey;
use compactor::domain::records::OutputState;
use compactor::engine::Compactor;
use compactor::event::{ObjectEvent, ObjectEventKind};
use compactor::ports::{GetOptions, Manifest, ObjectStore, PutOptions};

pub const BUCKET: &str = "src";

/// The embedded backend in a temporary directory, with a clock past the test partitions.
pub struct Embedded {
    _dir: tempfile::TempDir,
    pub store: Arc<dyn ObjectStore>,
    pub manifest: Arc<dyn Manifest>,
    pub compactor: Compactor,
}

impl Embedded {
    /// A grace of one hour and the clock at 2024-01-20: every January 14 partition is closed.
    pub fn new(adjust: impl Fn(&mut RawConfig)) -> Embedded {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("buckets").join(BUCKET)).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::open(dir.path().join("buckets")).unwrap());
        let manifest: Arc<dyn Manifest> = Arc::new(SqliteManifest::open(dir.path().join("manifest.sqlite")).unwrap());
        let mut raw = RawConfig { source_bucket: Some(BUCKET.into()), grace: Some("1h".into()), ..Default::default() };
        adjust(&mut raw);
        let now = DateTime::parse_from_rfc3339("2024-01-20T00:00:00Z").unwrap().with_timezone(&Utc);
        let compactor = Compactor::new(
            raw.validate().unwrap(),
            Arc::clone(&store),
            Arc::clone(&manifest),
            Arc::new(ManualClock::new(now)),
        );
        Embedded { _dir: dir, store, manifest, compactor }
    }

    /// PUTs the sources and ingests one event each, in the order given.
    pub async fn add(&self, sources: &[(String, Vec<u8>)]) {
        let mut events = Vec::new();
        for (index, (key, body)) in sources.iter().enumerate() {
            let meta = self.store.put(BUCKET, key, Bytes::from(body.clone()), PutOptions::default()).await.unwrap();
            events.push(ObjectEvent {
                kind: ObjectEventKind::Created { size: meta.size, etag: meta.etag },
                bucket: BUCKET.into(),
                key: key.clone(),
                sequencer: format!("{:016X}", index + 1),
                event_time: DateTime::parse_from_rfc3339("2024-01-14T10:00:00Z").unwrap().with_timezone(&Utc),
                event_name: "ObjectCreated:Put".into(),
            });
        }
        self.compactor.ingest(&events).await.unwrap();
    }

    /// The committed outputs of `partition`, key and bytes, in key order.
    pub async fn outputs(&self, partition: &str) -> Vec<(String, Bytes)> {
        let mut outputs =
            self.manifest.outputs(&PartitionKey::new(BUCKET, partition), Some(OutputState::Committed)).await.unwrap();
        outputs.sort_by(|left, right| left.key.cmp(&right.key));
        let mut read = Vec::new();
        for output in outputs {
            let bytes =
                self.store.get(BUCKET, &output.key, GetOptions::default()).await.unwrap().bytes().await.unwrap();
            read.push((output.key, bytes));
        }
        read
    }

    /// The one committed output of `partition`: its key and bytes.
    pub async fn only_output(&self, partition: &str) -> (String, Bytes) {
        let mut outputs = self.outputs(partition).await;
        assert_eq!(outputs.len(), 1, "{:?}", outputs.iter().map(|(key, _)| key).collect::<Vec<_>>());
        outputs.remove(0)
    }
}

/// `text` as one gzip member.
pub fn gzip(text: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text).unwrap();
    encoder.finish().unwrap()
}
