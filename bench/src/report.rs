//! The benchmark's table and JSON line.

use std::fmt::Write;

use compactor::domain::cost::{self, RequestCounts};
use serde::Serialize;
use serde_json::json;

use crate::memory::SealMemory;
use crate::parquet_row::ParquetRow;
use crate::setup::Measured;
use crate::template::Deployed;
use crate::tiny::TinyRow;

/// Ingest and seal of one deployment with one expiry mode (`COMPACTOR_EXPIRY`).
#[derive(Debug, Clone, Serialize)]
pub struct ExpiryRun {
    pub mode: String,
    pub ingest: Measured,
    pub seal: Measured,
    /// The "Object Deleted" events of the compacted sources, back through ingest (tag and
    /// delete modes; `none` deletes nothing).
    pub removal: Option<Measured>,
}

impl ExpiryRun {
    /// Everything billed per million objects: delivery, ingest, seal, expiry and the removal
    /// events expiry sends back.
    fn usd_per_million(&self) -> f64 {
        let removal = self.removal.as_ref().map_or(0.0, Measured::cost_usd);
        (self.ingest.cost_usd() + self.seal.cost_usd() + removal) * 1e6 / self.ingest.objects.max(1) as f64
    }
}

/// The cost targets of issue 12, per million objects, by expiry mode.
fn cost_target(mode: &str) -> Option<f64> {
    match mode {
        "delete" => Some(1.25),
        "tag" => Some(6.25),
        _ => None,
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dataset_objects: u64,
    pub dataset_bytes: u64,
    pub get_ceiling: Option<Measured>,
    pub ingest_dynamodb: Option<Measured>,
    pub seal_aws: Option<Measured>,
    /// The main run's sources' "Object Deleted" events (tag mode: the lifecycle rule's).
    pub removal_dynamodb: Option<Measured>,
    /// The seal's S3 path with an SQLite manifest (no DynamoDB server), tag mode, on a fresh
    /// copy of the dataset.
    pub seal_s3_sqlite: Option<Measured>,
    /// The same in delete mode, on another fresh copy.
    pub seal_s3_sqlite_delete: Option<Measured>,
    pub verified_outputs: u64,
    pub baseline: Option<Measured>,
    pub ingest_sqlite: Option<Measured>,
    pub seal_embedded: Option<Measured>,
    pub cat: Option<Measured>,
    /// The embedded seal of CloudTrail gzip files: every source inflated to learn whether its
    /// text ends with a newline (it never does; each gets a newline member).
    pub seal_embedded_cloudtrail: Option<Measured>,
    pub cat_cloudtrail: Option<Measured>,
    pub memory: Vec<SealMemory>,
    /// Ingest and seal under the other expiry modes than the main run's `tag`, on a subset.
    pub expiry_runs: Vec<ExpiryRun>,
    /// The many-tiny-objects rows.
    pub tiny: Vec<TinyRow>,
    /// The Parquet rows, one per partition size.
    pub parquet: Vec<ParquetRow>,
    pub deployed: Option<Deployed>,
    pub seconds: f64,
}

const MIB: f64 = 1024.0 * 1024.0;

/// One row of the request table: which counts it sums.
type Pick = fn(&RequestCounts) -> u64;

fn ratio(numerator: Option<&Measured>, denominator: Option<&Measured>) -> Option<f64> {
    Some(numerator?.objects_per_second() / denominator?.objects_per_second())
}

/// Heap an output's footer holds per column chunk until the output closes (heaptrack on the
/// 500 MB partition's seal: 73 MiB for full outputs of about 2,700 row groups of 37 columns).
const FOOTER_BYTES_PER_COLUMN_CHUNK: u64 = 700;
/// Leaf columns of the benchmark's feature-store batches.
const FEATURE_COLUMNS: u64 = 37;

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Per 1,000 objects, with one decimal.
fn per_thousand(count: u64, objects: u64) -> String {
    format!("{:.1}", count as f64 * 1000.0 / objects.max(1) as f64)
}

impl Report {
    fn seal_ratio(&self) -> Option<f64> {
        ratio(self.seal_aws.as_ref(), self.get_ceiling.as_ref())
    }

    fn s3_path_ratio(&self) -> Option<f64> {
        ratio(self.seal_s3_sqlite.as_ref(), self.get_ceiling.as_ref())
    }

    fn embedded_ratio(&self) -> Option<f64> {
        ratio(self.seal_embedded.as_ref(), self.cat.as_ref())
    }

    /// Peak RSS of the largest partition over the smallest's.
    fn memory_growth(&self) -> Option<f64> {
        if self.memory.len() < 2 {
            return None;
        }
        let smallest = self.memory.iter().min_by_key(|memory| memory.partition_bytes)?;
        let largest = self.memory.iter().max_by_key(|memory| memory.partition_bytes)?;
        Some(largest.peak_rss_bytes as f64 / smallest.peak_rss_bytes as f64)
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        self.memory.iter().map(|memory| memory.peak_rss_bytes as f64 / MIB).reduce(f64::max)
    }

    /// Ours in the steady state: ingest plus seal.
    fn ours(&self) -> RequestCounts {
        let mut counts = RequestCounts::default();
        for phase in [&self.ingest_dynamodb, &self.seal_aws].into_iter().flatten() {
            counts += phase.requests.priced();
        }
        counts
    }

    /// The main run (tag mode) and the other modes' runs, as the cost table shows them.
    fn by_expiry_mode(&self) -> Vec<ExpiryRun> {
        let main = match (&self.ingest_dynamodb, &self.seal_aws) {
            (Some(ingest), Some(seal)) => Some(ExpiryRun {
                mode: "tag".into(),
                ingest: ingest.clone(),
                seal: seal.clone(),
                removal: self.removal_dynamodb.clone(),
            }),
            _ => None,
        };
        main.into_iter().chain(self.expiry_runs.iter().cloned()).collect()
    }

    fn s3_tables_usd_per_million(&self) -> f64 {
        cost::s3_tables_cost_usd(self.dataset_objects, self.dataset_bytes) * 1e6 / self.dataset_objects.max(1) as f64
    }

    fn usd_per_million_by_mode(&self) -> Vec<(String, f64)> {
        self.by_expiry_mode().into_iter().map(|run| (run.mode.clone(), run.usd_per_million())).collect()
    }

    fn steady_state_lists(&self) -> u64 {
        self.ours().s3_list
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let objects = self.dataset_objects;
        let _ = writeln!(
            out,
            "Dataset: {} objects, {:.1} MB (seed-json, 2-20 KiB each, one partition a day)\n",
            objects,
            self.dataset_bytes as f64 / 1e6
        );
        let _ = writeln!(out, "{:<46} {:>12} {:>10}  note", "Throughput", "objects/s", "MB/s");
        let mut line = |name: &str, measured: &Option<Measured>, note: String| {
            if let Some(measured) = measured {
                let _ = writeln!(
                    out,
                    "{name:<46} {:>12.0} {:>10.1}  {note}",
                    measured.objects_per_second(),
                    measured.megabytes_per_second()
                );
            }
        };
        line("S3 raw GET ceiling (same concurrency)", &self.get_ceiling, String::new());
        line(
            "seal, S3 + DynamoDB",
            &self.seal_aws,
            self.seal_ratio()
                .map(|ratio| format!("{ratio:.2}x the GET ceiling (target >= 0.80: {})", verdict(ratio >= 0.8)))
                .unwrap_or_default(),
        );
        line(
            "seal, S3 + SQLite manifest, tag mode",
            &self.seal_s3_sqlite,
            self.s3_path_ratio()
                .map(|ratio| format!("{ratio:.2}x the GET ceiling (target >= 0.45: {})", verdict(ratio >= 0.45)))
                .unwrap_or_default(),
        );
        line(
            "seal, S3 + SQLite manifest, delete mode",
            &self.seal_s3_sqlite_delete,
            ratio(self.seal_s3_sqlite_delete.as_ref(), self.get_ceiling.as_ref())
                .map(|ratio| format!("{ratio:.2}x the GET ceiling (target >= 0.80: {})", verdict(ratio >= 0.8)))
                .unwrap_or_default(),
        );
        line("list-and-concatenate, S3", &self.baseline, String::new());
        line("ingest into DynamoDB (events/s)", &self.ingest_dynamodb, String::new());
        line("ingest into SQLite (events/s)", &self.ingest_sqlite, String::new());
        line("seal, embedded (local directory + SQLite)", &self.seal_embedded, String::new());
        line(
            "cat of the same files into one file",
            &self.cat,
            self.embedded_ratio()
                .map(|ratio| format!("embedded seal at {ratio:.2}x cat (target >= 0.80: {})", verdict(ratio >= 0.8)))
                .unwrap_or_default(),
        );
        line("seal, embedded, CloudTrail gzip (each inflated)", &self.seal_embedded_cloudtrail, String::new());
        line(
            "cat of the same CloudTrail files",
            &self.cat_cloudtrail,
            ratio(self.seal_embedded_cloudtrail.as_ref(), self.cat_cloudtrail.as_ref())
                .map(|ratio| format!("embedded seal at {ratio:.2}x cat"))
                .unwrap_or_default(),
        );

        if !self.memory.is_empty() {
            let _ = writeln!(out, "\n{:<46} {:>12} {:>10} {:>10}", "Peak RSS of one seal", "objects", "seconds", "MiB");
            for memory in &self.memory {
                let _ = writeln!(
                    out,
                    "{:<46} {:>12} {:>10.1} {:>10.1}",
                    format!("{:.0} MB partition", memory.partition_bytes as f64 / 1e6),
                    memory.objects,
                    memory.seconds,
                    memory.peak_rss_bytes as f64 / MIB
                );
            }
            if let Some(growth) = self.memory_growth() {
                let _ = writeln!(out, "largest/smallest {growth:.2}x (target <= 1.10: {})", verdict(growth <= 1.10));
            }
            if let Some(peak) = self.peak_rss_mib() {
                let _ = writeln!(out, "peak {peak:.1} MiB (target < 256: {})", verdict(peak < 256.0));
            }
        }

        self.cost_table(&mut out);
        self.tiny_table(&mut out);
        self.parquet_table(&mut out);
        let lists = self.steady_state_lists();
        let _ = writeln!(
            out,
            "LIST requests in the steady state (ingest + seal): {lists} (target 0: {})",
            verdict(lists == 0)
        );
        let _ = writeln!(out, "Every output verified byte for byte: {} outputs", self.verified_outputs);
        out
    }

    /// Requests and units per 1,000 objects by phase, then dollars per million objects.
    fn cost_table(&self, out: &mut String) {
        let mut columns: Vec<Column> = Vec::new();
        if let Some(ingest) = &self.ingest_dynamodb {
            // Delivery: the SQS messages and batches; ingest: the function and the manifest.
            let sqs = RequestCounts { sqs_requests: ingest.sqs_requests, ..Default::default() };
            columns.push(Column {
                name: "delivery".into(),
                counts: sqs,
                invocations: 0,
                gb_seconds: 0.0,
                usd: sqs.cost_usd(),
                ..Column::of(ingest)
            });
            let counts = ingest.requests.priced();
            columns.push(Column {
                name: "ingest".into(),
                counts,
                usd: counts.cost_usd() + ingest.lambda_usd(),
                ..Column::of(ingest)
            });
        }
        let runs = self.by_expiry_mode();
        for run in &runs {
            columns.push(Column { name: format!("seal:{}", run.mode), ..Column::of(&run.seal) });
        }
        for run in &runs {
            if let Some(removal) = &run.removal {
                columns.push(Column { name: format!("removal:{}", run.mode), ..Column::of(removal) });
            }
        }
        if let Some(baseline) = &self.baseline {
            columns.push(Column { name: "list+concat".into(), ..Column::of(baseline) });
        }
        let _ = write!(out, "\n{:<46}", "Requests and units per 1,000 objects");
        for column in &columns {
            let _ = write!(out, " {:>12}", column.name);
        }
        let _ = writeln!(out);
        let rows: [(&str, Pick); 10] = [
            ("S3 GET + HEAD", |c| c.s3_get + c.s3_head),
            ("S3 PUT + multipart (create, part, complete)", |c| {
                c.s3_put + c.s3_multipart_create + c.s3_upload_part + c.s3_multipart_complete
            }),
            ("S3 LIST", |c| c.s3_list),
            ("S3 GetObjectTagging", |c| c.s3_get_tagging),
            ("S3 PutObjectTagging", |c| c.s3_put_tagging),
            ("S3 DELETE (free)", |c| c.s3_delete),
            ("DynamoDB write units (table + indexes)", |c| c.manifest_writes),
            ("DynamoDB read units", |c| c.manifest_reads),
            ("SQS requests", |c| c.sqs_requests),
            ("all requests and units", |c| c.total()),
        ];
        for (name, pick) in rows {
            let _ = write!(out, "{name:<46}");
            for column in &columns {
                let _ = write!(out, " {:>12}", per_thousand(pick(&column.counts), column.objects));
            }
            let _ = writeln!(out);
        }
        let mut line = |name: &str, value: &dyn Fn(&Column) -> String| {
            let _ = write!(out, "{name:<46}");
            for column in &columns {
                let _ = write!(out, " {:>12}", value(column));
            }
            let _ = writeln!(out);
        };
        line("Lambda invocations", &|column| per_thousand(column.invocations, column.objects));
        line("Lambda GB-seconds", &|column| {
            format!("{:.2}", column.gb_seconds * 1000.0 / column.objects.max(1) as f64)
        });
        line("US$ per million objects (us-east-1)", &|column| {
            format!("{:.2}", column.usd * 1e6 / column.objects.max(1) as f64)
        });

        let _ = writeln!(out, "\n{:<46} {:>12}  note", "US$ per million objects, all phases", "US$");
        for (mode, usd) in self.usd_per_million_by_mode() {
            let note = cost_target(&mode)
                .map(|target| format!("target <= {target:.2}: {}", verdict(usd <= target)))
                .unwrap_or_default();
            let _ = writeln!(out, "{:<46} {usd:>12.2}  {note}", format!("ours, COMPACTOR_EXPIRY={mode}"));
        }
        if let Some(baseline) = &self.baseline {
            let usd = baseline.cost_usd() * 1e6 / baseline.objects.max(1) as f64;
            let _ = writeln!(out, "{:<46} {usd:>12.2}  one invocation, no manifest", "list-and-concatenate");
        }
        let _ = writeln!(
            out,
            "{:<46} {:>12.2}  $0.002 per 1,000 objects + $0.005 per GB",
            "S3 Tables compaction (published price)",
            self.s3_tables_usd_per_million()
        );
        if let Some(deployed) = &self.deployed {
            let _ = writeln!(
                out,
                "Lambda at the template's sizes: ingest-fn {} MB, {} events an invocation; seal-fn {} MB",
                deployed.ingest_memory_mb, deployed.ingest_batch_size, deployed.seal_memory_mb
            );
            let _ = match (deployed.ingests_deletions, deployed.ingests_lifecycle_expirations) {
                (false, _) => writeln!(
                    out,
                    "Removal events: none in either mode; the template's rule sends only \"Object Created\" to ingest"
                ),
                (true, false) => writeln!(
                    out,
                    "Removal events: delete mode's counted; tag mode's none (the rule keeps a lifecycle rule's deletions out)"
                ),
                (true, true) => writeln!(out, "Removal events: counted in both modes"),
            };
        }
    }

    /// The many-tiny-objects rows, with issue 16's targets.
    pub fn tiny_table(&self, out: &mut String) {
        use crate::tiny::{growth, TinyBackend};
        if self.tiny.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n{:<34} {:>9} {:>8} {:>11} {:>9} {:>11} {:>9}",
            "Many tiny objects, one partition", "objects", "MB", "scan obj/s", "scan MiB", "seal obj/s", "seal MiB"
        );
        for row in &self.tiny {
            let name = match row.backend {
                TinyBackend::Embedded => "embedded (local directory + SQLite)",
                TinyBackend::S3 => "S3 + SQLite manifest",
            };
            let _ = writeln!(
                out,
                "{name:<34} {:>9} {:>8.1} {:>11.0} {:>9.1} {:>11.0} {:>9.1}",
                row.objects,
                row.bytes as f64 / 1e6,
                row.scan.objects_per_second(),
                row.scan.peak_rss_mib(),
                row.seal.objects_per_second(),
                row.seal.peak_rss_mib()
            );
        }
        let peak =
            self.tiny.iter().flat_map(|row| [row.scan.peak_rss_mib(), row.seal.peak_rss_mib()]).fold(0.0, f64::max);
        let _ = writeln!(out, "peak RSS {peak:.1} MiB (target < 256: {})", verdict(peak < 256.0));
        for kind in [TinyBackend::Embedded, TinyBackend::S3] {
            for (step, pick) in
                [("scan", (|row: &TinyRow| &row.scan) as fn(&TinyRow) -> &crate::tiny::Step), ("seal", |row| &row.seal)]
            {
                if let Some(growth) = growth(&self.tiny, kind, pick) {
                    let _ = writeln!(
                        out,
                        "{kind:?} {step}: peak RSS largest/smallest size {growth:.2}x (target <= 1.20: {})",
                        verdict(growth <= 1.2)
                    );
                }
            }
        }
        for row in self.tiny.iter().filter(|row| row.backend == TinyBackend::Embedded) {
            let mut notes = Vec::new();
            if row.objects >= 1_000_000 {
                let seconds = row.scan.seconds * 1_000_000.0 / row.objects as f64;
                notes.push(format!("scan {seconds:.0} s per million files (target < 60: {})", verdict(seconds < 60.0)));
            }
            let rate = row.seal.objects_per_second();
            notes.push(format!("seal {rate:.0} objects/s (target >= 30000: {})", verdict(rate >= 30_000.0)));
            let _ = writeln!(out, "embedded, {} objects: {}", row.objects, notes.join("; "));
        }
    }

    /// The Parquet rows: the seal next to the GET ceiling over the same objects, and peak RSS.
    pub fn parquet_table(&self, out: &mut String) {
        if self.parquet.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n{:<34} {:>7} {:>8} {:>8} {:>10} {:>8} {:>10} {:>8} {:>7} {:>8} {:>7} {:>13}",
            "Parquet, one partition (S3+SQLite)",
            "groups",
            "objects",
            "MB",
            "GET obj/s",
            "GET MB/s",
            "seal obj/s",
            "seal MB/s",
            "ratio",
            "seal MiB",
            "outputs",
            "row groups"
        );
        for row in &self.parquet {
            let _ = writeln!(
                out,
                "{:<34} {:>7} {:>8} {:>8.1} {:>10.0} {:>8.1} {:>10.0} {:>8.1} {:>6.2}x {:>8.1} {:>7} {:>13}",
                format!("{:.0} MB of feature-store batches", row.partition_bytes as f64 / 1e6),
                row.row_groups.as_str(),
                row.objects,
                row.partition_bytes as f64 / 1e6,
                row.get_ceiling.objects_per_second(),
                row.get_ceiling.megabytes_per_second(),
                row.seal_objects_per_second(),
                row.seal_megabytes_per_second(),
                row.ceiling_ratio(),
                row.peak_rss_mib(),
                row.outputs,
                format!("{} of {}", row.output_row_groups, row.source_row_groups)
            );
        }
        // Memory growth with the partition, per row-group mode. Only partitions that fill an
        // output (two outputs or more) are compared: an output's footer holds every row group's
        // metadata until it closes, so a partition smaller than the target writes a smaller
        // footer and its peak is not the seal's plateau, which a full output sets.
        let modes: std::collections::BTreeSet<_> = self.parquet.iter().map(|row| row.row_groups).collect();
        for mode in modes {
            let filling = || self.parquet.iter().filter(|row| row.row_groups == mode && row.outputs >= 2);
            let smallest = filling().min_by_key(|row| row.partition_bytes);
            let largest = filling().max_by_key(|row| row.partition_bytes);
            match (smallest, largest) {
                (Some(smallest), Some(largest)) if largest.partition_bytes > smallest.partition_bytes => {
                    let growth = largest.seal.peak_rss_bytes as f64 / smallest.seal.peak_rss_bytes.max(1) as f64;
                    let _ = writeln!(
                        out,
                        "Parquet seal peak RSS ({mode}) {:.0} MB/{:.0} MB partitions, both filling outputs: \
                         {growth:.2}x (target <= 1.10: {}); every output verified",
                        largest.partition_bytes as f64 / 1e6,
                        smallest.partition_bytes as f64 / 1e6,
                        verdict(growth <= 1.10)
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "Parquet seal peak RSS ({mode}): no two partitions that fill an output to compare (e.g. \
                         --partitions 100MB,500MB,2GB); every output verified"
                    );
                }
            }
        }
        // What that plateau is made of: the footer of a full output, its row groups' metadata.
        if let Some(row) = self.parquet.iter().filter(|row| row.outputs > 0).max_by_key(|row| row.partition_bytes) {
            let row_groups_per_output = row.output_row_groups / row.outputs;
            let _ = writeln!(
                out,
                "An output's footer is held until it closes: {row_groups_per_output} row groups an output here, at \
                 about {FOOTER_BYTES_PER_COLUMN_CHUNK} bytes a column chunk in memory ({:.0} MiB for {FEATURE_COLUMNS} \
                 columns); bounded by the target size over the sources' row group size, not by the partition",
                (row_groups_per_output * FEATURE_COLUMNS * FOOTER_BYTES_PER_COLUMN_CHUNK) as f64 / (1 << 20) as f64
            );
        }
    }

    /// One line of JSON with the headline numbers and every phase's raw measurements.
    pub fn json_line(&self) -> anyhow::Result<String> {
        let objects = self.dataset_objects;
        let ours = self.ours();
        let baseline_objects = self.baseline.as_ref().map_or(0, |measured| measured.objects);
        let summary = json!({
            "benchmark": "s3-compactor",
            "dataset_objects": objects,
            "dataset_bytes": self.dataset_bytes,
            "get_ceiling_objects_per_s": self.get_ceiling.as_ref().map(Measured::objects_per_second),
            "seal_objects_per_s": self.seal_aws.as_ref().map(Measured::objects_per_second),
            "seal_mb_per_s": self.seal_aws.as_ref().map(Measured::megabytes_per_second),
            "seal_to_get_ceiling": self.seal_ratio(),
            "seal_s3_sqlite_objects_per_s": self.seal_s3_sqlite.as_ref().map(Measured::objects_per_second),
            "seal_s3_sqlite_to_get_ceiling": self.s3_path_ratio(),
            "seal_s3_sqlite_delete_objects_per_s": self.seal_s3_sqlite_delete.as_ref().map(Measured::objects_per_second),
            "seal_s3_sqlite_delete_to_get_ceiling": ratio(self.seal_s3_sqlite_delete.as_ref(), self.get_ceiling.as_ref()),
            "ingest_dynamodb_events_per_s": self.ingest_dynamodb.as_ref().map(Measured::objects_per_second),
            "ingest_sqlite_events_per_s": self.ingest_sqlite.as_ref().map(Measured::objects_per_second),
            "embedded_seal_objects_per_s": self.seal_embedded.as_ref().map(Measured::objects_per_second),
            "cat_objects_per_s": self.cat.as_ref().map(Measured::objects_per_second),
            "embedded_seal_to_cat": self.embedded_ratio(),
            "embedded_seal_cloudtrail_objects_per_s":
                self.seal_embedded_cloudtrail.as_ref().map(Measured::objects_per_second),
            "peak_rss_mib": self.memory.iter().map(|memory| json!({
                "partition_bytes": memory.partition_bytes,
                "peak_rss_mib": memory.peak_rss_bytes as f64 / MIB,
            })).collect::<Vec<_>>(),
            "peak_rss_growth": self.memory_growth(),
            "parquet": self.parquet.iter().map(|row| json!({
                "partition_bytes": row.partition_bytes,
                "objects": row.objects,
                "get_ceiling_objects_per_s": row.get_ceiling.objects_per_second(),
                "seal_objects_per_s": row.seal_objects_per_second(),
                "seal_mb_per_s": row.seal_megabytes_per_second(),
                "seal_to_get_ceiling": row.ceiling_ratio(),
                "peak_rss_mib": row.peak_rss_mib(),
                "row_groups": row.row_groups,
                "output_row_groups": row.output_row_groups,
                "source_row_groups": row.source_row_groups,
            })).collect::<Vec<_>>(),
            "steady_state_lists": self.steady_state_lists(),
            "request_usd_per_million_objects": ours.cost_usd() * 1e6 / objects.max(1) as f64,
            "usd_per_million_objects_by_expiry": self.usd_per_million_by_mode().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            "list_and_concatenate_usd_per_million_objects": self.baseline.as_ref().map(|baseline| baseline.cost_usd() * 1e6 / baseline_objects.max(1) as f64),
            "s3_tables_usd_per_million_objects": self.s3_tables_usd_per_million(),
            "seconds": self.seconds,
            "phases": self,
        });
        Ok(serde_json::to_string(&summary)?)
    }
}

/// One column of the cost table: a phase's counts over the objects it handled.
struct Column {
    name: String,
    counts: RequestCounts,
    objects: u64,
    invocations: u64,
    gb_seconds: f64,
    usd: f64,
}

impl Column {
    fn of(measured: &Measured) -> Column {
        Column {
            name: String::new(),
            counts: measured.priced(),
            objects: measured.objects,
            invocations: measured.invocations,
            gb_seconds: measured.lambda_gb_seconds(),
            usd: measured.cost_usd(),
        }
    }
}
