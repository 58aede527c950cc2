//! `test-data`: writes a deterministic small-object dataset to a local directory tree.

use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use compactor::adapters::local_dir::LocalDir;
use test_data::{objects, write_notifications, write_to_store, DatasetKind, DatasetSpec, SizeHistogram};

const EXAMPLES: &str = "\
Examples:
  # The demo dataset (~110 MB of NDJSON over 30 days) into ./data/demo-source/logs/...
  test-data generate --out ./data

  # Reference-generator style: 30 days x 700 files of 20 records, plus the S3 events
  test-data generate --kind seed-json --seed 42 --days 30 --files-per-day 700 \\
      --records-per-file 20 --prefix logs/ --out ./data --events ./data/events.jsonl

  # A week of CloudTrail (gzip, 44% of files under 1,000 bytes)
  test-data generate --kind cloudtrail --days 7 --out ./data --bucket trail

  # How big and how fast, without writing anything
  test-data generate --kind hive-csv --dry-run

Objects land in OUT/<bucket>/<key>, the layout of the embedded local-directory store.
The same flags and seed always produce the same keys and bytes.";

/// Deterministic, realistic small-object datasets for the compactor's demo, tests and
/// benchmarks.
#[derive(Debug, Parser)]
#[command(name = "test-data", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generates a dataset into a directory and prints its size mix.
    #[command(after_help = EXAMPLES)]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Dataset kind: seed-json, cloudtrail, hive-ndjson, hive-csv or parquet. Flags left out take the
    /// kind's demo defaults.
    #[arg(long, default_value = "seed-json")]
    kind: DatasetKind,
    /// Same seed, same dataset.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First day, YYYY-MM-DD [default: 2024-01-01].
    #[arg(long)]
    start_date: Option<NaiveDate>,
    /// Number of days (one date partition each) [default: 30].
    #[arg(long)]
    days: Option<u32>,
    /// Files per day [default: 700; hive-ndjson 360, hive-csv 480].
    #[arg(long)]
    files_per_day: Option<u32>,
    /// Records per file: exact for seed-json, the mean for other kinds [default: 6 for
    /// seed-json, 30 for cloudtrail, 40 for the hive kinds].
    #[arg(long)]
    records_per_file: Option<u32>,
    /// Key prefix, ending with '/' [default: logs/ for seed-json, none for cloudtrail, clicks/
    /// and clicks-csv/ for the hive kinds].
    #[arg(long)]
    prefix: Option<String>,
    /// Bucket: the directory under OUT, and the bucket the events name.
    #[arg(long, default_value = "demo-source")]
    bucket: String,
    /// CloudTrail account id (12 digits).
    #[arg(long, default_value = "123456789012")]
    account_id: String,
    /// CloudTrail region.
    #[arg(long, default_value = "eu-west-1")]
    region: String,
    /// Root directory; objects go to OUT/<bucket>/<key>.
    #[arg(long, required_unless_present = "dry_run")]
    out: Option<PathBuf>,
    /// Also write the S3 notifications (ObjectCreated:Put, one per line) to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Files written at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Generate and measure, write nothing.
    #[arg(long, conflicts_with_all = ["out", "events"])]
    dry_run: bool,
}

impl GenerateArgs {
    fn spec(&self) -> anyhow::Result<DatasetSpec> {
        let demo = DatasetSpec::demo(self.kind);
        let spec = DatasetSpec {
            kind: self.kind,
            seed: self.seed,
            start_date: self.start_date.unwrap_or(demo.start_date),
            days: self.days.unwrap_or(demo.days),
            files_per_day: self.files_per_day.unwrap_or(demo.files_per_day),
            records_per_file: self.records_per_file.unwrap_or(demo.records_per_file),
            prefix: self.prefix.clone().unwrap_or(demo.prefix),
            bucket: self.bucket.clone(),
            account_id: self.account_id.clone(),
            region: self.region.clone(),
        };
        spec.validate().map_err(anyhow::Error::msg)?;
        Ok(spec)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate(args) => generate(&args).await,
    }
}

async fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let started = Instant::now();
    let progress_every = (spec.object_count() / 10).max(1);
    let mut next_report = progress_every;
    let mut report_progress = |objects: u64, bytes: u64| {
        if objects >= next_report {
            next_report += progress_every;
            eprintln!("  {objects}/{} objects, {:.1} MB", spec.object_count(), megabytes(bytes));
        }
    };
    let Some(out) = &args.out else {
        let (mut objects_count, mut bytes, mut sizes) = (0, 0, SizeHistogram::default());
        for object in objects(&spec) {
            objects_count += 1;
            bytes += object.body.len() as u64;
            sizes.record(object.body.len() as u64);
            report_progress(objects_count, bytes);
        }
        print_summary(&spec, objects_count, bytes, sizes, started, "generated (dry run)");
        return Ok(());
    };

    // The embedded backend's object store: `OUT/<bucket>/<key>`, the layout `s3-compactor
    // --data-dir D` reads under `D/buckets`. Any other `ObjectStore` (S3) fits here too.
    let store = LocalDir::open(out).with_context(|| format!("opening {}", out.display()))?;
    store.create_bucket(&spec.bucket).with_context(|| format!("creating bucket {}", spec.bucket))?;
    let summary = write_to_store(&spec, &store, args.concurrency, &mut report_progress).await?;
    print_summary(&spec, summary.objects, summary.bytes, summary.sizes, started, "wrote");
    println!("into {}", out.join(&spec.bucket).display());

    if let Some(events_path) = &args.events {
        let file = std::fs::File::create(events_path)
            .with_context(|| format!("creating {}: check the directory exists", events_path.display()))?;
        let mut output = BufWriter::new(file);
        write_notifications(&summary.events, &mut output)
            .and_then(|()| output.flush())
            .with_context(|| format!("writing {}", events_path.display()))?;
        println!("{} S3 notifications in {}", summary.events.len(), events_path.display());
    }
    Ok(())
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

fn print_summary(spec: &DatasetSpec, objects: u64, bytes: u64, sizes: SizeHistogram, started: Instant, verb: &str) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{verb} {objects} {} objects, {:.1} MB ({bytes} bytes, mean {} bytes) in {seconds:.2} s ({:.1} MB/s)",
        spec.kind,
        megabytes(bytes),
        bytes / objects.max(1),
        megabytes(bytes) / seconds.max(1e-9),
    );
    println!("sizes: {sizes}");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use compactor::ports::ObjectStore;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["test-data", "generate", "--kind", "cloudtrail", "--dry-run"]).unwrap();
        let Command::Generate(args) = cli.command;
        let spec = args.spec().unwrap();
        assert_eq!(spec, DatasetSpec { bucket: "demo-source".into(), ..DatasetSpec::demo(DatasetKind::CloudTrail) });
        assert!(Cli::try_parse_from(["test-data", "generate"]).is_err(), "--out or --dry-run is required");
    }

    #[tokio::test]
    async fn objects_become_files_under_the_bucket_directory() {
        let root = std::env::temp_dir().join(format!("test-data-{}", std::process::id()));
        let store = LocalDir::open(&root).unwrap();
        let spec = DatasetSpec { days: 1, files_per_day: 5, ..DatasetSpec::default() };
        store.create_bucket(&spec.bucket).unwrap();
        let summary = write_to_store(&spec, &store, 2, |_, _| {}).await.unwrap();
        for (object, event) in objects(&spec).zip(&summary.events) {
            let path = root.join(&spec.bucket).join(&object.key);
            assert_eq!(std::fs::read(&path).unwrap(), object.body.to_vec());
            assert_eq!(event.key, object.key);
        }
        let bad_key = store.put(&spec.bucket, "a/../x", bytes::Bytes::new(), Default::default()).await;
        assert!(bad_key.is_err(), "keys that escape the bucket are refused");
        std::fs::remove_dir_all(root).unwrap();
    }
}
