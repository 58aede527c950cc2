//! Many tiny objects in one partition (issue 16): the data this tool exists for, where an
//! output holds hundreds of thousands of sources. For each size, on the embedded backend and
//! on S3 with an SQLite manifest: the backfill scan's rate (`ingest --scan`: list, record),
//! the seal's rate, and the peak RSS of each, measured in a child process that does only
//! that step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context};
use bytes::Bytes;
use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::SystemClock;
use compactor::engine::seal::SealOptions;
use compactor::engine::Compactor;
use compactor::ports::PutOptions;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::memory::peak_rss_bytes;
use crate::setup::{Backend, Endpoints};

/// The partition every tiny object falls in: one closed day.
const PREFIX: &str = "tiny/2024/02/01/";
const EMBEDDED_BUCKET: &str = "bench-tiny";

/// Which backend a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum TinyBackend {
    /// A local directory and SQLite.
    Embedded,
    /// The S3 server and SQLite.
    S3,
}

/// One step measured in a child process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Step {
    pub objects: u64,
    pub seconds: f64,
    pub peak_rss_bytes: u64,
}

impl Step {
    pub fn objects_per_second(&self) -> f64 {
        self.objects as f64 / self.seconds.max(1e-9)
    }

    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_bytes as f64 / (1 << 20) as f64
    }
}

/// One row: a backend at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TinyRow {
    pub backend: TinyBackend,
    pub objects: u64,
    pub bytes: u64,
    pub scan: Step,
    pub seal: Step,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TinyChildArgs {
    #[arg(long, value_enum)]
    backend: TinyBackend,
    /// The local directory's root (embedded) or the bucket (S3).
    #[arg(long)]
    location: String,
    #[arg(long)]
    manifest: PathBuf,
    #[arg(long, value_enum)]
    step: ChildStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ChildStep {
    Scan,
    Seal,
}

/// Object `index`'s key and body: 50 to 500 bytes of one JSON line, sizes spread evenly.
fn tiny_object(index: u64) -> (String, Vec<u8>) {
    tiny_object_under(PREFIX, index)
}

/// [`tiny_object`] under another prefix.
pub fn tiny_object_under(prefix: &str, index: u64) -> (String, Vec<u8>) {
    let size = 50 + (index.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 451;
    let mut body = format!("{{\"i\":{index},\"pad\":\"").into_bytes();
    let fill = (size as usize).saturating_sub(body.len() + 3);
    body.extend(std::iter::repeat_n(b'x', fill));
    body.extend_from_slice(b"\"}\n");
    (format!("{prefix}obj-{index:08}.json"), body)
}

/// Writes, scans and seals `count` tiny objects on `backend`, each step in a child process.
pub async fn measure(
    backend: &Backend,
    endpoints: &Endpoints,
    kind: TinyBackend,
    count: u64,
) -> anyhow::Result<TinyRow> {
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let manifest = dir.path().join("manifest.sqlite");
    let started = Instant::now();
    let (location, bytes) = match kind {
        TinyBackend::Embedded => {
            let root = dir.path().join("buckets");
            let bytes = write_files(&root.join(EMBEDDED_BUCKET), count)?;
            (root.to_string_lossy().into_owned(), bytes)
        }
        TinyBackend::S3 => {
            let bucket = backend.fresh_bucket("tiny").await?;
            let store = backend.store();
            let bytes = futures::stream::iter(0..count)
                .map(|index| {
                    let (store, bucket) = (Arc::clone(&store), bucket.clone());
                    async move {
                        let (key, body) = tiny_object(index);
                        let size = body.len() as u64;
                        store.put(&bucket, &key, Bytes::from(body), PutOptions::default()).await?;
                        Ok::<u64, anyhow::Error>(size)
                    }
                })
                .buffer_unordered(64)
                .try_fold(0u64, |total, size| async move { Ok(total + size) })
                .await?;
            (bucket, bytes)
        }
    };
    eprintln!(
        "      {count} objects of 50-500 bytes ({:.1} MB) written in {:.0} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let run = |step: &'static str| {
        let mut child = tokio::process::Command::new(std::env::current_exe()?);
        child
            .args(["--s3-endpoint", &endpoints.s3_endpoint, "--dynamodb-endpoint", &endpoints.dynamodb_endpoint])
            .args(["tiny-child", "--backend", kind_name(kind), "--location", &location, "--step", step])
            .arg("--manifest")
            .arg(&manifest)
            .stderr(std::process::Stdio::inherit());
        Ok::<_, anyhow::Error>(child)
    };
    flush_writes()?;
    let scan = child_step(run("scan")?).await?;
    ensure!(scan.objects == count, "the scan recorded {} of {count} objects", scan.objects);
    eprintln!("      scan: {:.0} objects/s, peak RSS {:.1} MiB", scan.objects_per_second(), scan.peak_rss_mib());
    flush_writes()?;
    let seal = child_step(run("seal")?).await?;
    ensure!(seal.objects == count, "the seal compacted {} of {count} objects", seal.objects);
    eprintln!("      seal: {:.0} objects/s, peak RSS {:.1} MiB", seal.objects_per_second(), seal.peak_rss_mib());
    Ok(TinyRow { backend: kind, objects: count, bytes, scan, seal })
}

fn kind_name(kind: TinyBackend) -> &'static str {
    match kind {
        TinyBackend::Embedded => "embedded",
        TinyBackend::S3 => "s3",
    }
}

/// The files straight into the bucket's directory: the set-up, not what is measured.
fn write_files(bucket_directory: &Path, count: u64) -> anyhow::Result<u64> {
    let directory = bucket_directory.join(PREFIX);
    std::fs::create_dir_all(&directory).with_context(|| format!("cannot create {}", directory.display()))?;
    let mut bytes = 0;
    for index in 0..count {
        let (key, body) = tiny_object(index);
        bytes += body.len() as u64;
        let path = bucket_directory.join(&key);
        std::fs::write(&path, &body).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(bytes)
}

/// Writes back what the set-up and the step before left dirty (a million files, a 360 MB
/// manifest), so the kernel's writeback of them does not run inside the next step's time.
fn flush_writes() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync").status().context("cannot run sync")?;
    ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

async fn child_step(mut child: tokio::process::Command) -> anyhow::Result<Step> {
    let output = child.output().await.context("cannot run the tiny-objects child process")?;
    ensure!(output.status.success(), "the tiny-objects child process failed: {}", output.status);
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the child printed {:?}", String::from_utf8_lossy(&output.stdout)))
}

/// The child: one step, then `Step` as JSON on stdout.
pub async fn child(endpoints: &Endpoints, args: TinyChildArgs) -> anyhow::Result<()> {
    let compactor = match args.backend {
        TinyBackend::Embedded => {
            let store = LocalDir::open(&args.location)?;
            let manifest = SqliteManifest::open(&args.manifest)?;
            Compactor::new(embedded_config()?, Arc::new(store), Arc::new(manifest), Arc::new(SystemClock))
        }
        TinyBackend::S3 => {
            Backend::connect(endpoints).await?.sqlite_deployment(&args.location, &args.manifest)?.compactor
        }
    };
    let started = Instant::now();
    let objects = match args.step {
        ChildStep::Scan => {
            let report = compactor.scan(PREFIX, |_| {}).await?;
            ensure!(report.skipped_total() == 0, "the scan skipped objects: {report:?}");
            report.recorded
        }
        ChildStep::Seal => {
            let report = compactor.seal_closed(&SealOptions::default()).await?;
            ensure!(report.failures.is_empty(), "the seal failed: {:?}", report.failures);
            report.objects_compacted
        }
    };
    let step = Step { objects, seconds: started.elapsed().as_secs_f64(), peak_rss_bytes: peak_rss_bytes()? };
    println!("{}", serde_json::to_string(&step)?);
    Ok(())
}

/// The defaults, except that `COMPACTOR_UPLOAD_CONCURRENCY` is read from the environment: the
/// parts in flight are the writer's largest bounded buffer, and on the local directory, where an
/// upload is a write into the page cache, the bound is the one worth measuring both ways.
fn embedded_config() -> anyhow::Result<compactor::config::Config> {
    let upload_concurrency = std::env::var("COMPACTOR_UPLOAD_CONCURRENCY").ok();
    let raw = compactor::config::RawConfig {
        source_bucket: Some(EMBEDDED_BUCKET.to_string()),
        upload_concurrency,
        ..Default::default()
    };
    Ok(raw.validate()?)
}

/// Largest peak RSS over smallest, per backend and step, where a backend ran two sizes.
pub fn growth(rows: &[TinyRow], kind: TinyBackend, pick: fn(&TinyRow) -> &Step) -> Option<f64> {
    let rows: Vec<&TinyRow> = rows.iter().filter(|row| row.backend == kind).collect();
    let smallest = rows.iter().min_by_key(|row| row.objects)?;
    let largest = rows.iter().max_by_key(|row| row.objects)?;
    (largest.objects > smallest.objects)
        .then(|| pick(largest).peak_rss_bytes as f64 / pick(smallest).peak_rss_bytes.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_objects_are_50_to_500_bytes_of_one_json_line_in_one_partition() {
        let sizes: Vec<usize> = (0..10_000).map(|index| tiny_object(index).1.len()).collect();
        assert!(sizes.iter().all(|size| (50..=500).contains(size)), "{:?}", (sizes.iter().min(), sizes.iter().max()));
        assert!(sizes.iter().any(|&size| size < 100) && sizes.iter().any(|&size| size > 450));
        let (key, body) = tiny_object(42);
        assert_eq!(key, "tiny/2024/02/01/obj-00000042.json");
        let line: serde_json::Value = serde_json::from_slice(&body).expect("one JSON line");
        assert_eq!(line["i"], 42);
    }
}
