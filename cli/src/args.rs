//! Command-line arguments: raw flags here, checked into a `Config` once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use compactor::config::RawConfig;

const AFTER_HELP: &str = "\
Exit codes: 0 done; 1 failure (I/O, store or manifest error: retrying may help); 2 bad input
(flags, configuration, events, unknown keys: fix the input); 3 verification found a mismatch.

Try it:
  s3-compactor demo                      generate, ingest, seal, audit, verify and restore on this laptop
  s3-compactor --data-dir s3-compactor-demo --source-bucket demo-logs audit
  s3-compactor --data-dir s3-compactor-demo --source-bucket demo-logs audit --object KEY

Every configuration flag can also be set by the environment variable in its help (the same
variables configure the Lambdas).";

/// Compacts small S3 objects into large ones, incrementally, with a manifest to audit.
///
/// Objects are recorded as their S3 events arrive (`ingest`); once a date partition is over,
/// plus a grace period, `seal` streams its objects into a few large outputs under a mirrored
/// destination prefix, records which byte range holds each source, and only then tags the
/// sources for lifecycle expiry. `audit`, `verify` and `restore` read that record back.
///
/// Backends: embedded (the default: a local directory of buckets and a SQLite manifest, both
/// under --data-dir) and aws (S3 and a DynamoDB table, in builds with `--features aws`).
#[derive(Debug, Parser)]
#[command(name = "s3-compactor", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory of the embedded backend: buckets under DIR/buckets/<bucket>/, the manifest in
    /// DIR/manifest.sqlite.
    #[arg(long, global = true, env = "COMPACTOR_DATA_DIR", default_value = "s3-compactor-data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Where objects and the manifest live: embedded (a local directory and SQLite under
    /// --data-dir) or aws (S3 and a DynamoDB table; needs a build with `--features aws`).
    #[arg(long, global = true, env = "COMPACTOR_BACKEND", value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,

    /// The DynamoDB manifest table (aws backend).
    #[arg(long, global = true, env = "COMPACTOR_TABLE", value_name = "TABLE")]
    pub table: Option<String>,

    /// S3 endpoint URL, for S3-compatible servers (aws backend) [default: AWS_ENDPOINT_URL_S3 or AWS].
    #[arg(long, global = true, env = "COMPACTOR_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// DynamoDB endpoint URL (aws backend) [default: AWS_ENDPOINT_URL_DYNAMODB or AWS].
    #[arg(long, global = true, env = "COMPACTOR_DYNAMODB_ENDPOINT", value_name = "URL")]
    pub dynamodb_endpoint: Option<String>,

    /// Path-style S3 URLs, as most S3-compatible servers need (aws backend).
    #[arg(long, global = true, env = "COMPACTOR_S3_PATH_STYLE")]
    pub path_style: bool,

    /// Print results as JSON (one document on stdout) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log level for stderr: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,

    /// Log format for stderr.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Embedded,
    Aws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The engine's configuration; each flag falls back to its environment variable.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Configuration")]
pub struct ConfigArgs {
    /// Bucket whose small objects are compacted.
    #[arg(long, global = true, env = "COMPACTOR_SOURCE_BUCKET", value_name = "BUCKET")]
    pub source_bucket: Option<String>,
    /// Only keys under this prefix are ingested [default: all].
    #[arg(long, global = true, env = "COMPACTOR_SOURCE_PREFIX", value_name = "PREFIX")]
    pub source_prefix: Option<String>,
    /// Bucket the outputs go to [default: the source bucket].
    #[arg(long, global = true, env = "COMPACTOR_DEST_BUCKET", value_name = "BUCKET")]
    pub dest_bucket: Option<String>,
    /// Prefix under which partition paths are mirrored [default: compacted/].
    #[arg(long, global = true, env = "COMPACTOR_DEST_PREFIX", value_name = "PREFIX")]
    pub dest_prefix: Option<String>,
    /// Date layout inside keys: %Y/%m/%d, %Y/%m/%d/%H, year=%Y/month=%m/day=%d[/hour=%H], dt=%Y-%m-%d
    /// … [default: %Y/%m/%d].
    #[arg(long, global = true, env = "COMPACTOR_LAYOUT", value_name = "LAYOUT")]
    pub layout: Option<String>,
    /// Partition by day or hour [default: the finest field of the layout].
    #[arg(long, global = true, env = "COMPACTOR_GRANULARITY", value_name = "day|hour")]
    pub granularity: Option<String>,
    /// How long after its period a partition closes, for late arrivals; at most 365d [default: 2h].
    #[arg(long, global = true, env = "COMPACTOR_GRACE", value_name = "DURATION")]
    pub grace: Option<String>,
    /// Size the planner packs outputs towards [default: 128MiB].
    #[arg(long, global = true, env = "COMPACTOR_TARGET_OUTPUT_BYTES", value_name = "SIZE")]
    pub target_output_bytes: Option<String>,
    /// Multipart part size, 5MiB to 5GiB [default: 8MiB].
    #[arg(long, global = true, env = "COMPACTOR_PART_BYTES", value_name = "SIZE")]
    pub part_bytes: Option<String>,
    /// Larger objects are not compacted (skipped as too_large) [default: 64MiB].
    #[arg(long, global = true, env = "COMPACTOR_SMALL_OBJECT_MAX_BYTES", value_name = "SIZE")]
    pub small_object_max_bytes: Option<String>,
    /// Format of keys no --formats rule matches: auto (by the key: parquet for .parquet,
    /// cloudtrail for CloudTrail log files, i.e. .json.gz under AWSLogs/<account>/CloudTrail/ or
    /// named <account>_CloudTrail_…, concat for the rest), concat (newline between line files
    /// that lack one; gzip as members), bytes (no separators), cloudtrail (gzip
    /// {"Records":[...]} documents to gzip NDJSON, one event a line), csv (one header per
    /// output), ndjson (lines that are not JSON set aside in a side file) or parquet (merged by
    /// column chunks); plan shows each key's format and why. E.g. --format ndjson
    /// [default: auto].
    #[arg(
        long,
        global = true,
        env = "COMPACTOR_FORMAT",
        value_name = "auto|concat|bytes|cloudtrail|csv|ndjson|parquet"
    )]
    pub format: Option<String>,
    /// A format per source prefix, e.g. trail/=cloudtrail,raw/=bytes, optionally with its
    /// compression, e.g. logs/=ndjson:zstd, a parquet one with what becomes of its row groups,
    /// e.g. tables/=parquet:rewrite; the longest matching prefix wins, other keys take
    /// --format [default: none].
    #[arg(long, global = true, env = "COMPACTOR_FORMATS", value_name = "PREFIX=FORMAT[:COMPRESS|:ROW_GROUPS],...")]
    pub formats: Option<String>,
    /// Compress plain-text sources (concat, bytes, csv, ndjson): each source becomes a zstd
    /// frame (gzip member) of its own, so its byte range stays exact and restore is one ranged
    /// GET; outputs end in .zst (.gz); sources compressed already (by name or content) go as
    /// they are. A --formats rule's own :zstd wins. E.g. --compress zstd [default: none].
    #[arg(long, global = true, env = "COMPACTOR_COMPRESS", value_name = "zstd|gzip|none")]
    pub compress: Option<String>,
    /// Parquet sources' row groups: copy (each source row group an output row group, column
    /// chunks copied without decoding) or rewrite (row groups under 1 MiB decoded and
    /// re-encoded into ~64 MiB ones; outputs end in -rows.parquet). A --formats rule's own
    /// parquet:rewrite wins [default: copy].
    #[arg(long, global = true, env = "COMPACTOR_PARQUET_ROW_GROUPS", value_name = "copy|rewrite")]
    pub parquet_row_groups: Option<String>,
    /// What happens to compacted sources: tag, delete or none [default: tag].
    #[arg(long, global = true, env = "COMPACTOR_EXPIRY", value_name = "tag|delete|none")]
    pub expiry: Option<String>,
    /// Tag merged into compacted sources, for a lifecycle rule to expire them [default: compacted=true].
    #[arg(long, global = true, env = "COMPACTOR_EXPIRY_TAG", value_name = "KEY=VALUE")]
    pub expiry_tag: Option<String>,
    /// DynamoDB only: delete a source's manifest record this long after the source was marked
    /// for expiry, e.g. 400d (30d to 3650d); ingest then writes an item per object (a write
    /// unit each) instead of batched arrival items; the embedded backend keeps every record
    /// [default: unset, records are kept as the audit trail].
    #[arg(long, global = true, env = "COMPACTOR_RECORD_TTL", value_name = "DURATION")]
    pub record_ttl: Option<String>,
    /// Source GETs in flight per output [default: 32].
    #[arg(long, global = true, env = "COMPACTOR_READ_CONCURRENCY", value_name = "N")]
    pub read_concurrency: Option<String>,
    /// Bytes of sources read ahead of the writer [default: 64MiB].
    #[arg(long, global = true, env = "COMPACTOR_READ_AHEAD_BYTES", value_name = "SIZE")]
    pub read_ahead_bytes: Option<String>,
    /// Parts uploading at once per output [default: 4].
    #[arg(long, global = true, env = "COMPACTOR_UPLOAD_CONCURRENCY", value_name = "N")]
    pub upload_concurrency: Option<String>,
    /// Sources this large become parts by server-side UploadPartCopy (read once only to hash
    /// them); 5MiB to 5GiB, or off to stream every source [default: 5MiB].
    #[arg(long, global = true, env = "COMPACTOR_COPY_MIN_BYTES", value_name = "SIZE|off")]
    pub copy_min_bytes: Option<String>,
    /// Partitions sealed at once [default: 4].
    #[arg(long, global = true, env = "COMPACTOR_PARTITION_CONCURRENCY", value_name = "N")]
    pub partition_concurrency: Option<String>,
    /// How long a seal lock lasts unless renewed, 30s to 1d [default: 15m].
    #[arg(long, global = true, env = "COMPACTOR_LEASE", value_name = "DURATION")]
    pub lease: Option<String>,
}

impl ConfigArgs {
    pub fn raw(&self) -> RawConfig {
        RawConfig {
            source_bucket: self.source_bucket.clone(),
            source_prefix: self.source_prefix.clone(),
            dest_bucket: self.dest_bucket.clone(),
            dest_prefix: self.dest_prefix.clone(),
            layout: self.layout.clone(),
            granularity: self.granularity.clone(),
            grace: self.grace.clone(),
            target_output_bytes: self.target_output_bytes.clone(),
            part_bytes: self.part_bytes.clone(),
            small_object_max_bytes: self.small_object_max_bytes.clone(),
            format: self.format.clone(),
            formats: self.formats.clone(),
            compress: self.compress.clone(),
            parquet_row_groups: self.parquet_row_groups.clone(),
            expiry: self.expiry.clone(),
            expiry_tag: self.expiry_tag.clone(),
            record_ttl: self.record_ttl.clone(),
            read_concurrency: self.read_concurrency.clone(),
            read_ahead_bytes: self.read_ahead_bytes.clone(),
            upload_concurrency: self.upload_concurrency.clone(),
            copy_min_bytes: self.copy_min_bytes.clone(),
            partition_concurrency: self.partition_concurrency.clone(),
            lease: self.lease.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create what the backend needs: the DynamoDB table (aws), the bucket directories
    /// (embedded). Safe to run again.
    Init,
    /// Run the whole cycle on a generated dataset: generate, ingest, seal, audit, verify, restore.
    ///
    /// Writes about 21,000 small JSON files (30 days of logs, ~100 MB) into a fresh embedded
    /// backend under --dir, ingests them one S3 event at a time (with replays and junk, as S3
    /// delivers them), seals the closed days, prints the audit, verifies every output byte for
    /// byte against the sources and restores a few objects. Exits 0 only if all verified.
    /// With --format cloudtrail, the files are CloudTrail logs rewritten to NDJSON, and verify
    /// and restore compare their records; with --format csv, Hive-style CSV with one header per
    /// output. With --compress zstd (or gzip), each source becomes its own frame and the seal
    /// prints the size ratio; verify and restore decompress the frames.
    Demo(DemoArgs),
    /// Record objects from S3 event JSON (or, with --scan, from a listing: backfill).
    ///
    /// Accepts S3 notifications, SQS batches of them and EventBridge S3 events, one JSON document
    /// per file or JSON lines. Skipped objects (outside the layout, too large, under the
    /// destination...) are logged and counted, never silently dropped.
    Ingest(IngestArgs),
    /// Compact closed partitions: stream their pending objects into outputs, commit, tag sources.
    Seal(SealArgs),
    /// Show what was compacted: partitions, an output's sources, or where one object went.
    Audit(AuditArgs),
    /// Re-read outputs and check the sha256 of each output and of every source's byte range.
    Verify(VerifyArgs),
    /// Write one compacted object's original bytes, read back from its output by byte range.
    Restore(RestoreArgs),
    /// Dry run of a seal: per partition, objects → outputs, requests and their cost. Writes nothing.
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo's backend goes; a previous demo there is replaced.
    #[arg(long, default_value = "s3-compactor-demo", value_name = "DIR")]
    pub dir: PathBuf,
    /// Days of data.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Files per day [default: 700; 20 with --format parquet].
    #[arg(long)]
    pub files_per_day: Option<u32>,
    /// Seed of the generated dataset (same seed, same bytes).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files of event JSON; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Instead of events, list the source bucket under PREFIX and record what is there
    /// (backfill: the only time the compactor lists).
    #[arg(long, value_name = "PREFIX", conflicts_with = "files")]
    pub scan: Option<String>,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// Seal only this partition path (e.g. logs/2024/01/14/), closed or not; repeatable.
    #[arg(long = "partition", value_name = "PATH")]
    pub partitions: Vec<String>,
    /// Seal at most this many partitions.
    #[arg(long, value_name = "N")]
    pub max_partitions: Option<usize>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Where one source object went: its output, byte range and sha256.
    #[arg(long, value_name = "KEY", conflicts_with_all = ["output", "partition"])]
    pub object: Option<String>,
    /// One output and every source it holds, by offset.
    #[arg(long, value_name = "KEY", conflicts_with = "partition")]
    pub output: Option<String>,
    /// One partition: its record and outputs.
    #[arg(long, value_name = "PATH")]
    pub partition: Option<String>,
    /// Only partitions in this state (open, sealing, sealed).
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only this partition path; repeatable. Default: every partition.
    #[arg(long = "partition", value_name = "PATH")]
    pub partitions: Vec<String>,
    /// Also compare each source's range with the original object, where it still exists.
    #[arg(long)]
    pub against_sources: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The source key to restore (as in the source bucket, not URL-encoded).
    #[arg(long, value_name = "KEY")]
    pub object: String,
    /// Where to write the bytes; `-` for stdout.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// For a source its format rewrote (cloudtrail: its range holds its records as gzip
    /// NDJSON), rebuild a gzip {"Records":[...]} document of them instead; other sources come
    /// back as their original bytes either way.
    #[arg(long)]
    pub as_source: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Only this partition path; repeatable. Default: every closed partition with pending objects.
    #[arg(long = "partition", value_name = "PATH")]
    pub partitions: Vec<String>,
}
