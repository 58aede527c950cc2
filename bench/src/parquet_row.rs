//! The Parquet rows (issue 14): one closed partition of feature-store batches (`test-data`'s
//! `parquet` kind: 37 columns, 1 to 500 rows a file, Snappy or Zstd) per size, on S3 with an
//! SQLite manifest. For each size, in the same run: the server's raw GET ceiling over the same
//! objects, then the seal in a child process (objects/s, MB/s, and its peak RSS, `VmHWM`),
//! then `verify` of every output. Each size in each row-group mode asked for: `copy` (the
//! default: column chunks copied, one output row group per source row group) and `rewrite`
//! (small row groups decoded and re-encoded into large ones); the row shows the outputs' row
//! groups next to the sources'.
//!
//! The manifest is SQLite, not the DynamoDB server: on the local emulator (one request at a
//! time) a 2 GB partition's seal would measure the emulator, and the seal's S3 path, which is
//! what Parquet changes, is the same with either.

use anyhow::{ensure, Context};
use chrono::NaiveDate;
use compactor::domain::format::ParquetRowGroups;
use serde::Serialize;
use test_data::{DatasetKind, DatasetSpec};

use crate::memory::SealMemory;
use crate::setup::{Backend, Endpoints, Measured};

/// Mean rows a file: the generator's files hold 1 to 499 rows, evenly spread, ~73 KB on
/// average, so a 2 GB partition is about 28,000 objects (the seed-json memory row's count).
const ROWS_PER_FILE: u32 = 250;

/// One Parquet partition, measured.
#[derive(Debug, Clone, Serialize)]
pub struct ParquetRow {
    /// The partition's bytes as written.
    pub partition_bytes: u64,
    pub objects: u64,
    /// Every object GET once, as many at a time as one seal run reads at most, bytes dropped.
    pub get_ceiling: Measured,
    /// The child's seal: objects, bytes, seconds, peak RSS.
    pub seal: SealMemory,
    /// Outputs written (and verified: column chunk hashes, each chunk decoded to its rows).
    pub outputs: u64,
    pub verify_seconds: f64,
    /// `copy` or `rewrite`.
    pub row_groups: ParquetRowGroups,
    /// Row groups in the sources (each holds one or two), and in the outputs.
    pub source_row_groups: u64,
    pub output_row_groups: u64,
}

impl ParquetRow {
    pub fn seal_objects_per_second(&self) -> f64 {
        self.seal.objects as f64 / self.seal.seconds.max(1e-9)
    }

    pub fn seal_megabytes_per_second(&self) -> f64 {
        self.seal.bytes as f64 / 1e6 / self.seal.seconds.max(1e-9)
    }

    /// The seal's object rate over the GET ceiling's.
    pub fn ceiling_ratio(&self) -> f64 {
        self.seal_objects_per_second() / self.get_ceiling.objects_per_second().max(1e-9)
    }

    pub fn peak_rss_mib(&self) -> f64 {
        self.seal.peak_rss_bytes as f64 / (1 << 20) as f64
    }
}

/// The dataset of about `partition_bytes`: one day of feature-store batches.
pub fn dataset(partition_bytes: u64) -> anyhow::Result<DatasetSpec> {
    let mut spec = DatasetSpec {
        kind: DatasetKind::Parquet,
        seed: 14,
        start_date: NaiveDate::from_ymd_opt(2024, 4, 1).expect("a valid date"),
        days: 1,
        files_per_day: 64,
        records_per_file: ROWS_PER_FILE,
        prefix: "features/".to_string(),
        ..DatasetSpec::default()
    };
    let sample: u64 = test_data::objects(&spec).map(|object| object.body.len() as u64).sum();
    let mean = (sample / u64::from(spec.files_per_day)).max(1);
    spec.files_per_day = u32::try_from(partition_bytes.div_ceil(mean)).context("partition too large")?.max(1);
    Ok(spec)
}

/// Writes, ingests, measures and verifies one Parquet partition of about `partition_bytes`.
pub async fn measure(
    backend: &Backend,
    endpoints: &Endpoints,
    partition_bytes: u64,
    row_groups: ParquetRowGroups,
    keep_manifest_in: Option<&std::path::Path>,
) -> anyhow::Result<ParquetRow> {
    let spec = dataset(partition_bytes)?;
    // Row groups of the sources, from the generator's specs (the files are not read again).
    let source_row_groups: u64 = test_data::objects(&spec).map(|object| source_row_groups_of(&object.body)).sum();
    let started = std::time::Instant::now();
    let bucket = backend.fresh_bucket(&format!("parquet-{}mb", partition_bytes / 1_000_000)).await?;
    let manifest_dir = tempfile::tempdir()?;
    let manifest_path = manifest_dir.path().join("manifest.sqlite");
    let (written, get_ceiling) = {
        let deployment = backend.sqlite_deployment(&bucket, &manifest_path)?;
        let written = deployment.upload(&spec, 64).await?;
        eprintln!(
            "      {} Parquet files, {:.1} MB, written in {:.0} s",
            written.objects,
            written.bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        let get_ceiling = deployment.raw_get_ceiling(&written.events).await?;
        let ingest = deployment.compactor.ingest(&written.events).await?;
        ensure!(ingest.skipped_total() == 0, "the Parquet files were skipped at ingest: {ingest:?}");
        (written, get_ceiling)
        // Dropped here: closing the manifest checkpoints its write-ahead log into the file, so
        // the child (and the copy below) sees every ingested object.
    };
    if let Some(keep_dir) = keep_manifest_in {
        let kept = keep_dir.join(format!("{bucket}.sqlite"));
        std::fs::copy(&manifest_path, &kept)
            .with_context(|| format!("cannot copy the manifest to {}", kept.display()))?;
        eprintln!("      manifest kept at {} (bucket {bucket})", kept.display());
    }
    eprintln!(
        "      raw GET ceiling: {:.0} objects/s, {:.1} MB/s",
        get_ceiling.objects_per_second(),
        get_ceiling.megabytes_per_second()
    );

    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--s3-endpoint", &endpoints.s3_endpoint, "--dynamodb-endpoint", &endpoints.dynamodb_endpoint])
        .args(["seal-child", "--bucket", &bucket, "--parquet-row-groups", row_groups.as_str(), "--sqlite-manifest"])
        .arg(&manifest_path)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("cannot run the seal child process")?;
    ensure!(output.status.success(), "the Parquet seal child process failed: {}", output.status);
    let mut seal: SealMemory = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the seal child printed {:?}", String::from_utf8_lossy(&output.stdout)))?;
    ensure!(
        seal.objects == written.objects,
        "the seal compacted {} of {} Parquet files",
        seal.objects,
        written.objects
    );
    seal.partition_bytes = written.bytes;

    let verify_started = std::time::Instant::now();
    let deployment = backend.sqlite_deployment(&bucket, &manifest_path)?;
    let verified = deployment.verify().await?;
    ensure!(verified.all_verified(), "the Parquet outputs did not verify: {:?}", verified.failures);
    ensure!(
        verified.sources_checked == written.objects,
        "verify checked {} of {} sources",
        verified.sources_checked,
        written.objects
    );
    let verify_seconds = verify_started.elapsed().as_secs_f64();
    let output_row_groups = output_row_groups(&deployment.compactor).await?;
    let row = ParquetRow {
        partition_bytes: written.bytes,
        objects: written.objects,
        get_ceiling,
        seal,
        outputs: verified.outputs_ok,
        verify_seconds,
        row_groups,
        source_row_groups,
        output_row_groups,
    };
    eprintln!(
        "      seal ({}): {:.0} objects/s, {:.1} MB/s ({:.2}x the GET ceiling), peak RSS {:.1} MiB, {} outputs \
         verified, {} row groups from the sources' {}",
        row.row_groups,
        row.seal_objects_per_second(),
        row.seal_megabytes_per_second(),
        row.ceiling_ratio(),
        row.peak_rss_mib(),
        row.outputs,
        row.output_row_groups,
        row.source_row_groups
    );
    Ok(row)
}

/// Row groups of a generated file, from its footer.
fn source_row_groups_of(body: &[u8]) -> u64 {
    let size = body.len() as u64;
    let parsed = body.len().checked_sub(8).and_then(|tail| {
        let length = compactor::parquet::footer::footer_length(&body[tail..], size).ok()?;
        let start = size - 8 - length;
        compactor::parquet::footer::parse_footer(&body[start as usize..tail], start).ok()
    });
    parsed.map_or(0, |footer| footer.metadata.num_row_groups() as u64)
}

/// Row groups in every committed output, from their footers (ranged GETs).
async fn output_row_groups(compactor: &compactor::engine::Compactor) -> anyhow::Result<u64> {
    let mut row_groups = 0u64;
    for partition in compactor.audit_partitions().await? {
        for output in compactor.audit_partition_outputs(&partition.key, None).await? {
            let size = output.size.unwrap_or(0);
            let footer =
                compactor::parquet::read_footer(compactor.store().as_ref(), &output.bucket, &output.key, size, None)
                    .await?
                    .map_err(|bad| anyhow::anyhow!("{}: {}", output.key, bad.0))?;
            row_groups += footer.metadata.num_row_groups() as u64;
        }
    }
    Ok(row_groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parquet_partition_is_one_day_of_feature_store_batches_near_the_asked_size() {
        let spec = dataset(4_000_000).unwrap();
        assert_eq!((spec.kind, spec.days), (DatasetKind::Parquet, 1));
        let objects: Vec<_> = test_data::objects(&spec).collect();
        let bytes: u64 = objects.iter().map(|object| object.body.len() as u64).sum();
        assert!((3_000_000..5_000_000).contains(&bytes), "{bytes} bytes for 4 MB");
        assert!(objects.iter().all(|object| object.key.starts_with("features/2024/04/01/")));
        assert!(objects.iter().all(|object| object.body.starts_with(b"PAR1") && object.body.ends_with(b"PAR1")));
    }
}
