//! Peak memory of one seal, by partition size. Each partition is sealed by a child process
//! (`s3-compactor-bench seal-child`), so its peak resident set (the kernel's `VmHWM`) is the
//! seal's alone, not the benchmark's data generation.

use anyhow::{ensure, Context};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use test_data::{DatasetKind, DatasetSpec};

use crate::setup::{Backend, Endpoints};

#[derive(Debug, Clone, clap::Args)]
pub struct SealChildArgs {
    #[arg(long)]
    bucket: String,
    #[arg(long)]
    table: String,
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
pub async fn measure(backend: &Backend, endpoints: &Endpoints, partition_bytes: u64) -> anyhow::Result<SealMemory> {
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

    let deployment = backend.fresh_deployment(&format!("memory-{}mb", partition_bytes / 1_000_000)).await?;
    let written = deployment.upload(&spec, 64).await?;
    deployment.ingest(&written.events, 32).await?;

    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--s3-endpoint", &endpoints.s3_endpoint, "--dynamodb-endpoint", &endpoints.dynamodb_endpoint])
        .args(["seal-child", "--bucket", &deployment.bucket, "--table", &deployment.table])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("cannot run the seal child process")?;
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
    let deployment = backend.deployment(&args.bucket, &args.table, false).await?;
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
fn peak_rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).context("no VmHWM in /proc/self/status")?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse()?;
    Ok(kib * 1024)
}
