//! Peak memory of one seal, by partition size. Each partition is sealed by a child process
//! (`s3-compactor-bench seal-child`), so its peak resident set (the kernel's `VmHWM`) is the
//! seal's alone, not the benchmark's data generation.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use test_data::{DatasetKind, DatasetSpec};

use crate::setup::{Backend, Endpoints};

#[derive(Debug, Clone, clap::Args)]
pub struct SealChildArgs {
    #[arg(long)]
    bucket: String,
    /// The DynamoDB manifest table.
    #[arg(long, required_unless_present = "sqlite_manifest", conflicts_with = "sqlite_manifest")]
    table: Option<String>,
    /// The SQLite manifest file, instead of a DynamoDB table.
    #[arg(long)]
    sqlite_manifest: Option<PathBuf>,
    /// `COMPACTOR_PARQUET_ROW_GROUPS` of the seal (`copy` or `rewrite`; the default's unset).
    #[arg(long)]
    parquet_row_groups: Option<String>,
}

/// Where the measured partition's manifest lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestBackend {
    /// The DynamoDB server: what the full benchmark measures (the local emulator is slow).
    Dynamodb,
    /// SQLite in a temporary directory: the same seal on S3, in a fraction of the time.
    Sqlite,
}

/// How one memory measurement runs.
#[derive(Debug, Clone)]
pub struct MemoryRun<'a> {
    pub manifest: ManifestBackend,
    /// With an SQLite manifest: also copy it here once ingested, before the seal, so the same
    /// partition can be sealed again by hand (`seal-child --sqlite-manifest`) under other
    /// settings.
    pub keep_manifest_in: Option<&'a Path>,
}

/// What one child seal reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealMemory {
    pub partition_bytes: u64,
    pub objects: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub peak_rss_bytes: u64,
}

/// Records per file so that the mean file is about 64 KiB (seed-json records are ~870 B).
const RECORDS_PER_FILE: u32 = 75;

/// Writes and ingests one partition of about `partition_bytes`, then seals it in a child.
pub async fn measure(
    backend: &Backend,
    endpoints: &Endpoints,
    partition_bytes: u64,
    run: &MemoryRun<'_>,
) -> anyhow::Result<SealMemory> {
    let mut spec = DatasetSpec {
        kind: DatasetKind::SeedJson,
        seed: 11,
        start_date: NaiveDate::from_ymd_opt(2024, 3, 1).expect("a valid date"),
        days: 1,
        files_per_day: 64,
        records_per_file: RECORDS_PER_FILE,
        prefix: "memory/".to_string(),
        ..DatasetSpec::default()
    };
    let sample: u64 = test_data::objects(&spec).map(|object| object.body.len() as u64).sum();
    let mean = (sample / u64::from(spec.files_per_day)).max(1);
    spec.files_per_day = u32::try_from(partition_bytes.div_ceil(mean)).context("partition too large")?.max(1);
    eprintln!(
        "      {} MB partition: {} objects of ~{} KiB",
        partition_bytes / 1_000_000,
        spec.files_per_day,
        mean / 1024
    );

    let purpose = format!("memory-{}mb", partition_bytes / 1_000_000);
    let manifest_dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?);
    child.args(["--s3-endpoint", &endpoints.s3_endpoint, "--dynamodb-endpoint", &endpoints.dynamodb_endpoint]);
    let written = match run.manifest {
        ManifestBackend::Dynamodb => {
            let deployment = backend.fresh_deployment(&purpose).await?;
            let written = deployment.upload(&spec, 64).await?;
            deployment.ingest(&written.events, 32).await?;
            child.args(["seal-child", "--bucket", &deployment.bucket, "--table", &deployment.table]);
            written
        }
        ManifestBackend::Sqlite => {
            let bucket = backend.fresh_bucket(&purpose).await?;
            let manifest_path = manifest_dir.path().join("manifest.sqlite");
            let written = {
                let deployment = backend.sqlite_deployment(&bucket, &manifest_path)?;
                let written = deployment.upload(&spec, 64).await?;
                deployment.compactor.ingest(&written.events).await?;
                written
                // Dropped here: closing the manifest checkpoints its write-ahead log into the
                // file, so the copy below and the child see every ingested object.
            };
            if let Some(keep_dir) = run.keep_manifest_in {
                let kept = keep_dir.join(format!("{bucket}.sqlite"));
                std::fs::copy(&manifest_path, &kept)
                    .with_context(|| format!("cannot copy the manifest to {}", kept.display()))?;
                eprintln!("      manifest kept at {} (bucket {bucket})", kept.display());
            }
            child.args(["seal-child", "--bucket", &bucket, "--sqlite-manifest"]).arg(&manifest_path);
            written
        }
    };

    let output =
        child.stderr(std::process::Stdio::inherit()).output().await.context("cannot run the seal child process")?;
    ensure!(output.status.success(), "the seal child process failed: {}", output.status);
    let mut measured: SealMemory = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the seal child printed {:?}", String::from_utf8_lossy(&output.stdout)))?;
    ensure!(
        measured.objects == written.objects,
        "the seal child compacted {} of {} objects",
        measured.objects,
        written.objects
    );
    measured.partition_bytes = written.bytes;
    Ok(measured)
}

/// The child: seal, then print `SealMemory` as JSON on stdout.
pub async fn seal_child(endpoints: &Endpoints, args: SealChildArgs) -> anyhow::Result<()> {
    let backend = Backend::connect(endpoints).await?;
    let deployment = match (&args.sqlite_manifest, &args.table) {
        (Some(manifest_path), _) => {
            let raw = compactor::config::RawConfig {
                source_bucket: Some(args.bucket.clone()),
                parquet_row_groups: args.parquet_row_groups.clone(),
                ..Default::default()
            };
            backend.sqlite_deployment_with(&args.bucket, manifest_path, raw.validate()?)?
        }
        (None, Some(table)) => backend.deployment(&args.bucket, table, false).await?,
        (None, None) => anyhow::bail!("seal-child needs --table or --sqlite-manifest"),
    };
    let sealed = deployment.seal().await?;
    let result = SealMemory {
        partition_bytes: 0,
        objects: sealed.objects,
        bytes: sealed.bytes,
        seconds: sealed.seconds,
        peak_rss_bytes: peak_rss_bytes()?,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// This process's peak resident set size, from `/proc/self/status` (Linux).
pub fn peak_rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).context("no VmHWM in /proc/self/status")?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse()?;
    Ok(kib * 1024)
}
