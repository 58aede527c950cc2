//! `s3-compactor-bench`: how fast, how lean and how cheap the compactor is, each measured side
//! by side with a reference in the same run. `scripts/bench.sh` starts the local servers and
//! runs it; see the README's "Benchmarks" section for what the numbers mean.

mod baseline;
mod counting;
mod dynamodb_units;
mod embedded;
mod memory;
mod parquet_row;
mod partition_counts;
mod report;
mod setup;
mod template;
mod tiny;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context};
use clap::{Parser, Subcommand};
use compactor::domain::format::FormatMode;

use crate::report::Report;
use crate::setup::{Backend, Endpoints};

/// Measures the compactor against the S3- and DynamoDB-compatible servers at the given
/// endpoints (`scripts/bench.sh` starts local ones and passes them) and on the embedded
/// backend, and prints a table and one JSON line:
///
///  1. the S3 server's raw GET ceiling over the dataset (same concurrency, no processing);
///  2. ingest throughput into DynamoDB and into SQLite;
///  3. seal throughput and its ratio to (1): S3 + DynamoDB, S3 + SQLite (tag mode), and
///     S3 + SQLite in delete mode on a fresh copy of the dataset;
///  4. peak RSS of one seal, for a small and a large partition;
///  5. requests and billed units per 1,000 objects by phase (delivery, ingest, seal under each
///     expiry mode, and the "Object Deleted" events tag and delete modes would send back to
///     ingest once the sources go, where the template's rule routes them) and dollars per
///     million objects, ours next to a list-and-concatenate job over the same objects and S3
///     Tables' published compaction price;
///  6. the embedded backend's seal throughput next to `cat` of the same files, on the
///     throughput dataset and on CloudTrail gzip files (each inflated to find its last byte);
///  7. many tiny objects in one partition: scan and seal rates and peak RSS per size, on the
///     embedded backend and on S3 + SQLite;
///  8. Parquet partitions (feature-store batches), per size on S3 + SQLite: the seal's rates
///     next to the raw GET ceiling over the same objects, and its peak RSS.
#[derive(Debug, Parser)]
#[command(name = "s3-compactor-bench", version, verbatim_doc_comment)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    endpoints: Endpoints,
    /// Days in the throughput dataset (one partition each).
    #[arg(long, default_value_t = 20)]
    days: u32,
    /// Objects a day in the throughput dataset (seed-json, 2-20 KiB each).
    #[arg(long, default_value_t = 1100)]
    files_per_day: u32,
    /// Partition sizes whose one seal's peak RSS is measured, e.g. 100MB,2GB.
    #[arg(long, value_delimiter = ',', default_value = "100MB,2GB")]
    memory_partitions: Vec<String>,
    /// Ingest calls in flight against DynamoDB (Lambda invocations at once), each an SQS
    /// batch of the SAM template's BatchSize.
    #[arg(long, default_value_t = 32)]
    ingest_concurrency: usize,
    /// Days of the throughput dataset sealed again under `COMPACTOR_EXPIRY=delete` and
    /// `none`, for their cost (each a fresh deployment, ingested and sealed).
    #[arg(long, default_value_t = 4)]
    expiry_days: u32,
    /// Sizes of the one-partition many-tiny-objects rows (objects of 50-500 bytes).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    tiny_objects: Vec<u64>,
    /// Backends of the many-tiny-objects rows.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "embedded,s3")]
    tiny_backends: Vec<tiny::TinyBackend>,
    /// Sizes of the Parquet partitions (feature-store batches of ~73 KB), e.g. 100MB,2GB. The
    /// 2 GB one takes about 20 minutes on a loaded 2-core machine (generating, writing and
    /// verifying 27,600 files as well as sealing them): run it alone with `parquet`, whose
    /// default is 100MB,2GB.
    #[arg(long, value_delimiter = ',', default_value = "100MB")]
    parquet_partitions: Vec<String>,
    /// A small run (a few hundred objects, 8 MB and 32 MB partitions, 500 and 1,000 tiny
    /// objects, one 4 MB Parquet partition) that checks the benchmark itself works; its
    /// numbers mean little.
    #[arg(long)]
    quick: bool,
    /// Also append the JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Seals every closed partition of one bucket and table, then prints its own peak RSS as
    /// JSON. The benchmark runs it as a child process, so the peak is the seal's alone.
    #[command(hide = true)]
    SealChild(memory::SealChildArgs),
    /// Only step 4: peak RSS of one seal per partition size, each in a fresh bucket.
    Memory(MemoryArgs),
    /// Only step 7: the many-tiny-objects rows.
    Tiny(TinyArgs),
    /// One step of a tiny-objects row, then its peak RSS as JSON.
    #[command(hide = true)]
    TinyChild(tiny::TinyChildArgs),
    /// Only step 8: the Parquet rows.
    Parquet(ParquetArgs),
    /// What a DynamoDB partition's counts cost (`release` at the end of a seal, `partition()`
    /// for the audit), which read all of the partition's items: requests, read units and time
    /// per size.
    /// Not part of the full run: recording the objects into the local server takes minutes.
    Counts(CountsArgs),
}

#[derive(Debug, clap::Args)]
struct CountsArgs {
    /// Partition sizes, in objects.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    objects: Vec<u64>,
    /// Also seal each partition and count it again, as the release at the end of a seal does.
    /// Slow on the local DynamoDB server: 45 s for 10,000 objects here, over 20 minutes for
    /// 100,000.
    #[arg(long)]
    seal: bool,
}

#[derive(Debug, clap::Args)]
struct ParquetArgs {
    /// Partition sizes. Peak RSS is compared between the partitions that fill an output (at
    /// the default 128 MiB target, 500MB and up): 100MB writes one smaller output.
    #[arg(long, value_delimiter = ',', default_value = "100MB,500MB,2GB")]
    partitions: Vec<String>,
    /// Row-group modes, each size sealed in each: copy (the default's), rewrite.
    #[arg(long, value_delimiter = ',', default_value = "copy,rewrite")]
    row_groups: Vec<String>,
    /// Keep each ingested manifest in this directory (and the bucket's objects), to seal the
    /// same partition again with `seal-child --sqlite-manifest`, e.g. under a heap profiler.
    #[arg(long)]
    keep_manifest_in: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct TinyArgs {
    /// Sizes, in objects.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    objects: Vec<u64>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "embedded,s3")]
    backends: Vec<tiny::TinyBackend>,
}

#[derive(Debug, clap::Args)]
struct MemoryArgs {
    /// Partition sizes, e.g. 100MB,2GB.
    #[arg(long, value_delimiter = ',', default_value = "100MB,2GB")]
    partitions: Vec<String>,
    /// Where the manifest lives. `sqlite` runs the same seal on S3 without the slow local
    /// DynamoDB server, for quick iterations; the full benchmark uses `dynamodb`.
    #[arg(long, value_enum, default_value = "dynamodb")]
    manifest: memory::ManifestBackend,
    /// With `--manifest sqlite`: keep a copy of each ingested manifest in this directory, to
    /// seal the same partition again with `seal-child --sqlite-manifest`.
    #[arg(long)]
    keep_manifest_in: Option<PathBuf>,
}

/// Prints one phase's result as it finishes: a full run takes minutes.
fn progress(phase: &str, measured: setup::Measured) -> setup::Measured {
    eprintln!(
        "      {phase}: {} objects in {:.1} s, {:.0} objects/s, {:.1} MB/s",
        measured.objects,
        measured.seconds,
        measured.objects_per_second(),
        measured.megabytes_per_second()
    );
    measured
}

#[tokio::main]
async fn main() {
    compactor::allocator::return_freed_parts_to_the_system();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = match args.command {
        Some(Command::SealChild(child)) => memory::seal_child(&args.endpoints, child).await,
        Some(Command::Memory(memory_args)) => run_memory(&args.endpoints, memory_args).await,
        Some(Command::Tiny(tiny_args)) => run_tiny(&args.endpoints, tiny_args).await,
        Some(Command::TinyChild(child)) => tiny::child(&args.endpoints, child).await,
        Some(Command::Parquet(parquet_args)) => run_parquet(&args.endpoints, parquet_args).await,
        Some(Command::Counts(counts_args)) => run_counts(&args.endpoints, counts_args).await,
        None => run(args).await,
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    if args.quick {
        args.days = args.days.min(3);
        args.files_per_day = args.files_per_day.min(120);
        args.memory_partitions = vec!["8MB".into(), "32MB".into()];
        args.expiry_days = args.expiry_days.min(1);
        args.tiny_objects = vec![500, 1000];
        args.parquet_partitions = vec!["4MB".into()];
    }
    let memory_partitions = args
        .memory_partitions
        .iter()
        .map(|text| compactor::config::parse_bytes("--memory-partitions", text).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let parquet_partitions = parse_sizes("--parquet-partitions", &args.parquet_partitions)?;
    ensure!(args.days > 0 && args.files_per_day > 0, "--days and --files-per-day must be at least 1");
    ensure!(args.tiny_objects.iter().all(|&count| count > 0), "--tiny-objects sizes must be at least 1");
    let started = Instant::now();
    let mut report = Report::default();

    let backend = Backend::connect(&args.endpoints).await?;
    report.deployed = Some(backend.deployed);
    let dataset = setup::throughput_dataset(args.days, args.files_per_day);
    eprintln!(
        "[1/9] throughput dataset: {} objects over {} days, on S3 at {} and DynamoDB at {}",
        dataset.object_count(),
        args.days,
        args.endpoints.s3_endpoint,
        args.endpoints.dynamodb_endpoint
    );
    let aws = backend.fresh_deployment("throughput").await?;
    let written = aws.upload(&dataset, 64).await?;
    report.dataset_objects = written.objects;
    report.dataset_bytes = written.bytes;

    eprintln!("[2/9] raw GET ceiling, then ingest into DynamoDB and seal on S3 + DynamoDB");
    report.get_ceiling = Some(progress("raw GET ceiling", aws.raw_get_ceiling(&written.events).await?));
    report.ingest_dynamodb =
        Some(progress("ingest into DynamoDB", aws.ingest(&written.events, args.ingest_concurrency).await?));
    report.seal_aws = Some(progress("seal on S3 + DynamoDB", aws.seal().await?));
    let verified = aws.verify().await?;
    ensure!(verified.all_verified(), "the benchmark's seal did not verify: {:?}", verified.failures);
    // In tag mode the lifecycle rule expires the tagged sources later; each expiration comes
    // back to ingest as an "Object Deleted" event if the template's rule lets it (it does not:
    // it routes creations only). The sources stay here: the seal on SQLite below reads them.
    if backend.deployed.ingests_lifecycle_expirations {
        report.removal_dynamodb = Some(progress(
            "removal events into DynamoDB",
            aws.removals(&written.events, args.ingest_concurrency).await?,
        ));
    }
    report.verified_outputs = verified.outputs_ok;
    // The same seal path with the manifest in SQLite, in tag and in delete mode, each on a
    // fresh copy of the dataset: what the S3 path does when the manifest is not the emulator.
    // Delete mode's sources cost their GET alone: the row the GET ceiling bounds.
    let manifest_dir = tempfile::tempdir()?;
    for (expiry, row) in [("tag", &mut report.seal_s3_sqlite), ("delete", &mut report.seal_s3_sqlite_delete)] {
        let (seal, verified) = backend.sqlite_seal_of_fresh_copy(&dataset, manifest_dir.path(), expiry).await?;
        *row = Some(progress(&format!("seal on S3 + SQLite, expiry {expiry}"), seal));
        report.verified_outputs += verified;
    }

    eprintln!("[3/9] list-and-concatenate over the same objects");
    report.baseline = Some(progress("list-and-concatenate", baseline::list_and_concatenate(&aws, &dataset).await?));

    eprintln!("[4/9] embedded backend: ingest into SQLite, seal, and cat of the same files");
    let embedded = embedded::run(&dataset, FormatMode::Auto).await?;
    report.ingest_sqlite = Some(progress("ingest into SQLite", embedded.ingest));
    report.seal_embedded = Some(progress("seal, embedded", embedded.seal));
    report.cat = Some(progress("cat", embedded.cat));
    // Gzip sources cost more: each is inflated to find whether its text ends with a newline.
    // `concat` by name: `auto` would rewrite these CloudTrail files to NDJSON instead.
    let cloudtrail_dataset = setup::cloudtrail_dataset(args.days, args.files_per_day);
    let cloudtrail = embedded::run(&cloudtrail_dataset, FormatMode::Concat).await?;
    report.seal_embedded_cloudtrail = Some(progress("seal, embedded, CloudTrail", cloudtrail.seal));
    report.cat_cloudtrail = Some(progress("cat, CloudTrail", cloudtrail.cat));

    eprintln!("[5/9] peak RSS of one seal per partition size");
    for size in memory_partitions {
        let run = memory::MemoryRun { manifest: memory::ManifestBackend::Dynamodb, keep_manifest_in: None };
        report.memory.push(measure_memory(&backend, &args.endpoints, size, &run).await?);
    }

    eprintln!("[6/9] cost under COMPACTOR_EXPIRY=delete and none, {} days of the dataset each", args.expiry_days);
    let subset = setup::throughput_dataset(args.days.min(args.expiry_days.max(1)), args.files_per_day);
    for mode in ["delete", "none"] {
        let deployment = backend.fresh_deployment_with_expiry(&format!("expiry-{mode}"), mode).await?;
        let written = deployment.upload(&subset, 64).await?;
        let ingest =
            progress("ingest into DynamoDB", deployment.ingest(&written.events, args.ingest_concurrency).await?);
        let seal = progress(&format!("seal on S3 + DynamoDB, expiry {mode}"), deployment.seal().await?);
        // Delete mode's own deletes come back as "Object Deleted" events if the template's rule
        // routes deletions (it does not); `none` deletes nothing.
        let removal = match mode {
            "delete" if backend.deployed.ingests_deletions => Some(progress(
                "removal events into DynamoDB",
                deployment.removals(&written.events, args.ingest_concurrency).await?,
            )),
            _ => None,
        };
        report.expiry_runs.push(report::ExpiryRun { mode: mode.to_string(), ingest, seal, removal });
    }

    eprintln!("[7/9] many tiny objects in one partition");
    for &kind in &args.tiny_backends {
        for &count in &args.tiny_objects {
            report.tiny.push(tiny::measure(&backend, &args.endpoints, kind, count).await?);
        }
    }

    eprintln!("[8/9] Parquet partitions on S3 + SQLite: GET ceiling, seal, peak RSS");
    for &size in &parquet_partitions {
        report.parquet.push(parquet_row::measure(&backend, &args.endpoints, size, Default::default(), None).await?);
    }

    report.seconds = started.elapsed().as_secs_f64();
    eprintln!("[9/9] done in {:.0} s\n", report.seconds);
    print!("{}", report.table());
    let line = report.json_line()?;
    println!("{line}");
    if let Some(path) = &args.json_out {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(file, "{line}")?;
    }
    Ok(())
}

async fn measure_memory(
    backend: &Backend,
    endpoints: &Endpoints,
    partition_bytes: u64,
    run: &memory::MemoryRun<'_>,
) -> anyhow::Result<memory::SealMemory> {
    let measured = memory::measure(backend, endpoints, partition_bytes, run).await?;
    eprintln!(
        "      peak RSS {:.1} MiB, sealed in {:.1} s",
        measured.peak_rss_bytes as f64 / (1 << 20) as f64,
        measured.seconds
    );
    Ok(measured)
}

/// The `memory` command: step 4 alone, one JSON line per partition on stdout.
async fn run_memory(endpoints: &Endpoints, args: MemoryArgs) -> anyhow::Result<()> {
    ensure!(
        args.keep_manifest_in.is_none() || args.manifest == memory::ManifestBackend::Sqlite,
        "--keep-manifest-in needs --manifest sqlite"
    );
    let backend = Backend::connect(endpoints).await?;
    let run = memory::MemoryRun { manifest: args.manifest, keep_manifest_in: args.keep_manifest_in.as_deref() };
    for text in &args.partitions {
        let partition_bytes = compactor::config::parse_bytes("--partitions", text)?;
        let measured = measure_memory(&backend, endpoints, partition_bytes, &run).await?;
        println!("{}", serde_json::to_string(&measured)?);
    }
    Ok(())
}

fn parse_sizes(option: &'static str, texts: &[String]) -> anyhow::Result<Vec<u64>> {
    texts.iter().map(|text| compactor::config::parse_bytes(option, text).map_err(anyhow::Error::from)).collect()
}

/// The `parquet` command: step 8 alone, one JSON line per partition, then its table.
async fn run_parquet(endpoints: &Endpoints, args: ParquetArgs) -> anyhow::Result<()> {
    let sizes = parse_sizes("--partitions", &args.partitions)?;
    let backend = Backend::connect(endpoints).await?;
    let mut report = Report::default();
    let modes: Vec<compactor::domain::format::ParquetRowGroups> =
        args.row_groups.iter().map(|text| text.parse().map_err(anyhow::Error::msg)).collect::<anyhow::Result<_>>()?;
    for size in sizes {
        for &mode in &modes {
            let row = parquet_row::measure(&backend, endpoints, size, mode, args.keep_manifest_in.as_deref()).await?;
            println!("{}", serde_json::to_string(&row)?);
            report.parquet.push(row);
        }
    }
    let mut table = String::new();
    report.parquet_table(&mut table);
    print!("{table}");
    Ok(())
}

/// The `tiny` command: step 7 alone, its table and one JSON line per row.
async fn run_tiny(endpoints: &Endpoints, args: TinyArgs) -> anyhow::Result<()> {
    ensure!(args.objects.iter().all(|&count| count > 0), "--objects sizes must be at least 1");
    let backend = Backend::connect(endpoints).await?;
    let mut report = Report::default();
    for &kind in &args.backends {
        for &count in &args.objects {
            let row = tiny::measure(&backend, endpoints, kind, count).await?;
            println!("{}", serde_json::to_string(&row)?);
            report.tiny.push(row);
        }
    }
    let mut table = String::new();
    report.tiny_table(&mut table);
    print!("{table}");
    Ok(())
}

async fn run_counts(endpoints: &Endpoints, args: CountsArgs) -> anyhow::Result<()> {
    ensure!(args.objects.iter().all(|&count| count > 0), "--objects sizes must be at least 1");
    let mut rows = Vec::new();
    for &count in &args.objects {
        let row = partition_counts::measure(endpoints, count, args.seal).await?;
        println!("{}", serde_json::to_string(&row)?);
        rows.push(row);
    }
    partition_counts::print(&rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Args;

    #[test]
    fn the_command_line_is_well_formed() {
        Args::command().debug_assert();
    }
}
