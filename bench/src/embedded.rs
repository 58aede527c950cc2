//! The embedded backend (a local directory + SQLite) on the throughput dataset, and `cat` of
//! the same files into one file, measured in the same run on the same warm page cache.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context};
use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::SystemClock;
use compactor::config::Config;
use compactor::domain::format::{FormatMode, FormatRules};
use compactor::engine::seal::SealOptions;
use compactor::engine::Compactor;
use test_data::DatasetSpec;

use crate::setup::{bench_config, event_bytes, Measured};

pub struct EmbeddedRun {
    pub ingest: Measured,
    pub seal: Measured,
    pub cat: Measured,
}

const BUCKET: &str = "bench-embedded";

/// Ingests and seals `dataset` with every key in `format`.
pub async fn run(dataset: &DatasetSpec, format: FormatMode) -> anyhow::Result<EmbeddedRun> {
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let buckets = dir.path().join("buckets");
    std::fs::create_dir_all(buckets.join(BUCKET))?;
    let store = LocalDir::open(&buckets)?;
    let manifest = SqliteManifest::open(dir.path().join("manifest.sqlite"))?;
    let config = Config { formats: FormatRules::uniform(format), ..bench_config(BUCKET)? };
    let compactor = Compactor::new(config, Arc::new(store), Arc::new(manifest), Arc::new(SystemClock));

    let spec = DatasetSpec { bucket: BUCKET.to_string(), ..dataset.clone() };
    let written = test_data::write_to_store(&spec, compactor.store().as_ref(), 16, |_, _| {}).await?;

    let started = Instant::now();
    let report = compactor.ingest(&written.events).await?;
    ensure!(report.skipped_total() == 0, "the benchmark's events were skipped: {report:?}");
    let ingest = Measured {
        objects: written.events.len() as u64,
        bytes: event_bytes(&written.events),
        seconds: started.elapsed().as_secs_f64(),
        ..Measured::default()
    };

    let started = Instant::now();
    let sealed = compactor.seal_closed(&SealOptions::default()).await?;
    ensure!(sealed.failures.is_empty(), "the embedded seal failed: {:?}", sealed.failures);
    ensure!(
        sealed.objects_compacted == written.objects,
        "the embedded seal compacted {} of {} objects",
        sealed.objects_compacted,
        written.objects
    );
    let seal = Measured {
        objects: sealed.objects_compacted,
        bytes: sealed.source_bytes,
        seconds: started.elapsed().as_secs_f64(),
        ..Measured::default()
    };

    let paths: Vec<_> = written.events.iter().map(|event| buckets.join(BUCKET).join(&event.key)).collect();
    let cat = cat_into_one_file(&paths, &dir.path().join("cat.out"))?;
    ensure!(cat.bytes == seal.bytes, "cat read {} bytes, the seal {}", cat.bytes, seal.bytes);
    Ok(EmbeddedRun { ingest, seal, cat })
}

/// `xargs -0 cat < list > output`: the files' bytes into one file, as fast as coreutils goes.
fn cat_into_one_file(paths: &[std::path::PathBuf], output: &Path) -> anyhow::Result<Measured> {
    let list = output.with_extension("list");
    let mut names = Vec::new();
    for path in paths {
        names.extend_from_slice(path.as_os_str().as_encoded_bytes());
        names.push(0);
    }
    std::fs::write(&list, names)?;
    let started = Instant::now();
    let status = std::process::Command::new("xargs")
        .args(["-0", "cat"])
        .stdin(std::fs::File::open(&list)?)
        .stdout(std::fs::File::create(output)?)
        .stderr(Stdio::inherit())
        .status()
        .context("cannot run xargs cat")?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(status.success(), "xargs cat failed: {status}");
    Ok(Measured {
        objects: paths.len() as u64,
        bytes: std::fs::metadata(output)?.len(),
        seconds,
        ..Measured::default()
    })
}
