//! Issue 14: Parquet sources merged by copying their column chunks. Run on the embedded
//! backend; DuckDB (the test venv's) reads every output and must find the sources' rows and
//! sums in them.
#![cfg(feature = "parquet")]

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::ManualClock;
use compactor::config::RawConfig;
use compactor::domain::partition::PartitionKey;
use compactor::domain::records::{ObjectState, OutputRecord, OutputState};
use compactor::engine::Compactor;
use compactor::event::{ObjectEvent, ObjectEventKind};
use compactor::ports::{Manifest, ObjectQuery, ObjectStore, PutOptions};
use compactor::testkit::duckdb::{duckdb, sql_list};
use compactor::testkit::parquet_files::{fake_file, file_bytes, record_id_sum, FileSpec, Schema};

const BUCKET: &str = "src";
const PARTITION: &str = "features/2024/01/14/";

struct Embedded {
    dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    manifest: Arc<dyn Manifest>,
    compactor: Compactor,
}

impl Embedded {
    fn new(adjust: impl Fn(&mut RawConfig)) -> Embedded {
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
        Embedded { dir, store, manifest, compactor }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.path().join("buckets").join(BUCKET).join(key)
    }

    async fn add(&self, sources: &[(String, Vec<u8>)]) {
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
        let report = self.compactor.ingest(&events).await.unwrap();
        assert_eq!(report.skipped_total(), 0, "Parquet keys are not refused at ingest: {report:?}");
    }

    async fn committed_outputs(&self) -> Vec<OutputRecord> {
        self.manifest.outputs(&PartitionKey::new(BUCKET, PARTITION), Some(OutputState::Committed)).await.unwrap()
    }
}

fn sources(schema: Schema, seeds: std::ops::Range<u64>) -> Vec<(FileSpec, String, Vec<u8>)> {
    seeds
        .map(|seed| {
            let spec = FileSpec::from_seed(seed, schema);
            let key = format!("{PARTITION}{schema:?}-{seed:03}.parquet").to_lowercase();
            (spec, key, file_bytes(&spec).unwrap())
        })
        .collect()
}

/// Rows, and exact per-column sums (floats scaled to integers, so the order of addition does
/// not matter), of the files `paths` as DuckDB reads them.
fn duckdb_sums(paths: &[PathBuf], float_columns: usize) -> String {
    let duckdb = duckdb().expect("checked by the caller");
    let mut terms = vec!["count(*)".to_string(), "sum(record_id)".into(), "sum(epoch_ms(event_time))".into()];
    terms.push("sum(length(entity))".into());
    terms.extend((0..float_columns).map(|index| format!("sum(round(f_{index:02} * 1e6)::hugeint)")));
    terms.extend((0..6).map(|index| format!("sum(i_{index:02})")));
    terms.extend([
        "count(active)".into(),
        "sum(active::int)".into(),
        "sum(round(location.lat * 1e3)::hugeint)".into(),
        "count(location)".into(),
        "sum(len(tags))".into(),
        "count(tags)".into(),
    ]);
    let sql = format!("select concat_ws(',', {}) from read_parquet({})", terms.join(", "), sql_list(paths));
    duckdb.query(&sql).unwrap_or_else(|error| panic!("DuckDB cannot read {paths:?}: {error}"))
}

#[tokio::test]
async fn parquet_sources_merge_by_schema_and_duckdb_finds_their_rows_and_sums_in_the_outputs() {
    let embedded = Embedded::new(|_| {});
    let wide = sources(Schema::Wide, 0..40);
    let narrow = sources(Schema::Narrow, 100..110);
    let mut files: Vec<(String, Vec<u8>)> =
        wide.iter().chain(&narrow).map(|(_, key, bytes)| (key.clone(), bytes.clone())).collect();
    let truncated = wide[3].2[..wide[3].2.len() / 2].to_vec();
    files.push((format!("{PARTITION}truncated.parquet"), truncated));
    files.push((format!("{PARTITION}fake.parquet"), fake_file()));
    files.push((format!("{PARTITION}empty.parquet"), Vec::new()));
    embedded.add(&files).await;

    // Keys interleave the schemas (narrow-…, then wide-…): the output of a planned range takes
    // the schema of its first source and leaves the others pending, and the seal's next pass
    // gives them an output of their own. One seal does it all.
    let report = embedded.compactor.seal_closed(&Default::default()).await.unwrap();
    assert_eq!(report.objects_missing, 3, "truncated, fake and empty files are recorded, not merged: {report:?}");
    assert_eq!(report.objects_deferred, 40, "the wide files, left for the second pass: {report:?}");
    assert_eq!(report.objects_compacted, 50, "{report:?}");
    assert_eq!(report.partitions_sealed, 1, "nothing left pending: {report:?}");
    let partition = PartitionKey::new(BUCKET, PARTITION);
    let records = embedded.manifest.objects(&partition, &ObjectQuery::all()).await.unwrap();
    for record in &records {
        let bad = ["truncated", "fake", "empty"].iter().any(|name| record.key.contains(name));
        if bad {
            assert_eq!(record.state, ObjectState::Missing, "{record:?}");
            let note = record.note.as_deref().unwrap_or_default();
            assert!(note.contains("not a Parquet file the seal can merge"), "{note}");
            assert!(embedded.store.head(BUCKET, &record.key).await.is_ok(), "a bad file is left where it is");
        } else {
            assert_eq!(record.state, ObjectState::Compacted, "{record:?}");
        }
    }
    let outputs = embedded.committed_outputs().await;
    assert_eq!(outputs.len(), 2, "one output per schema: {outputs:?}");
    assert!(outputs.iter().all(|output| output.key.ends_with(".parquet")), "{outputs:?}");

    let verify = embedded.compactor.verify(None, true, |_| {}).await.unwrap();
    assert!(verify.all_verified(), "{verify:?}");
    assert_eq!(verify.sources_checked, 50);

    // Restore gives a standalone Parquet file with the source's rows and values.
    let (spec, key, original) = &wide[7];
    let (_, restored) = embedded.compactor.restore_bytes(key).await.unwrap();
    assert_eq!(&restored[..4], b"PAR1");
    assert_ne!(&restored[..], &original[..], "not byte-identical: a new footer");
    let restored_path = embedded.dir.path().join("restored.parquet");
    std::fs::write(&restored_path, &restored).unwrap();

    let Some(_) = duckdb() else { return };
    assert_eq!(
        duckdb_sums(&[restored_path], 24),
        duckdb_sums(&[embedded.path(key)], 24),
        "restored rows of {key} ({} rows)",
        spec.rows
    );
    for (schema_sources, float_columns) in [(&wide, 24), (&narrow, 8)] {
        let source_paths: Vec<PathBuf> = schema_sources.iter().map(|(_, key, _)| embedded.path(key)).collect();
        let first_key = &schema_sources[0].1;
        let output = outputs
            .iter()
            .find(|output| {
                records.iter().any(|record| {
                    &record.key == first_key && record.placement.as_ref().is_some_and(|p| p.output_key == output.key)
                })
            })
            .expect("the schema's output");
        let output_paths = vec![embedded.dir.path().join("buckets").join(&output.bucket).join(&output.key)];
        let expected = duckdb_sums(&source_paths, float_columns);
        assert_eq!(duckdb_sums(&output_paths, float_columns), expected, "rows and column sums of {}", output.key);
        let rows: u64 = schema_sources.iter().map(|(spec, _, _)| u64::from(spec.rows)).sum();
        let record_ids: i128 = schema_sources.iter().map(|(spec, _, _)| record_id_sum(spec)).sum();
        assert!(expected.starts_with(&format!("{rows},{record_ids},")), "{expected}");
    }
}

/// Outputs past one part go by multipart upload (parts of exactly `part_bytes`), and sources
/// whose column chunks pass the read-ahead limit are read a row group at a time at their turn:
/// the output is still one valid Parquet file with every row, and verify and DuckDB agree.
#[tokio::test]
async fn a_multipart_output_with_large_sources_holds_every_row() {
    let embedded = Embedded::new(|raw| raw.part_bytes = Some("5MiB".into()));
    let mut all = sources(Schema::Wide, 0..60);
    for seed in 500..503 {
        let spec = FileSpec { rows: 6000, first_row_group_rows: 2500, ..FileSpec::from_seed(seed, Schema::Wide) };
        let bytes = file_bytes(&spec).unwrap();
        assert!(bytes.len() > 512 * 1024, "a large source: {} bytes", bytes.len());
        all.push((spec, format!("{PARTITION}wide-large-{seed}.parquet"), bytes));
    }
    let files: Vec<(String, Vec<u8>)> = all.iter().map(|(_, key, bytes)| (key.clone(), bytes.clone())).collect();
    let total: usize = files.iter().map(|(_, bytes)| bytes.len()).sum();
    assert!(total > 6 << 20, "more than a part: {total} bytes");
    embedded.add(&files).await;

    let report = embedded.compactor.seal_closed(&Default::default()).await.unwrap();
    assert_eq!((report.objects_compacted, report.objects_missing, report.outputs_committed), (63, 0, 1), "{report:?}");
    let outputs = embedded.committed_outputs().await;
    let output_size = outputs[0].size.unwrap();
    assert!(output_size > 5 << 20 && output_size < total as u64, "{output_size} of {total}");
    let verify = embedded.compactor.verify(None, true, |_| {}).await.unwrap();
    assert!(verify.all_verified(), "{verify:?}");
    assert_eq!((verify.sources_checked, verify.originals_ok), (63, 63));

    let Some(_) = duckdb() else { return };
    let output_path = embedded.dir.path().join("buckets").join(&outputs[0].bucket).join(&outputs[0].key);
    let source_paths: Vec<PathBuf> = all.iter().map(|(_, key, _)| embedded.path(key)).collect();
    assert_eq!(duckdb_sums(&[output_path], 24), duckdb_sums(&source_paths, 24));
}
