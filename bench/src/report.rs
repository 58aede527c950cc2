//! The benchmark's table and JSON line.

use std::fmt::Write;

use compactor::domain::cost::RequestCounts;
use serde::Serialize;
use serde_json::json;

use crate::memory::SealMemory;
use crate::setup::Measured;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dataset_objects: u64,
    pub dataset_bytes: u64,
    pub get_ceiling: Option<Measured>,
    pub ingest_dynamodb: Option<Measured>,
    pub seal_aws: Option<Measured>,
    /// The same seal with an SQLite manifest: the S3 path without the DynamoDB server.
    pub seal_s3_sqlite: Option<Measured>,
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
    pub seconds: f64,
}

const MIB: f64 = 1024.0 * 1024.0;

/// One row of the request table: which counts it sums.
type Pick = fn(&RequestCounts) -> u64;

fn ratio(numerator: Option<&Measured>, denominator: Option<&Measured>) -> Option<f64> {
    Some(numerator?.objects_per_second() / denominator?.objects_per_second())
}

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
            "seal, S3 + SQLite manifest",
            &self.seal_s3_sqlite,
            self.s3_path_ratio().map(|ratio| format!("{ratio:.2}x the GET ceiling")).unwrap_or_default(),
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

        let ingest = self.ingest_dynamodb.as_ref().map(|measured| measured.requests.priced()).unwrap_or_default();
        let seal = self.seal_aws.as_ref().map(|measured| measured.requests.priced()).unwrap_or_default();
        let ours = self.ours();
        let baseline = self.baseline.as_ref().map(|measured| measured.requests.priced()).unwrap_or_default();
        let baseline_objects = self.baseline.as_ref().map_or(0, |measured| measured.objects);
        let _ = writeln!(
            out,
            "\n{:<46} {:>10} {:>10} {:>10} {:>12}",
            "Requests per 1,000 objects", "ingest", "seal", "ours", "list+concat"
        );
        let rows: [(&str, Pick); 9] = [
            ("S3 GET + HEAD", |c| c.s3_get + c.s3_head),
            ("S3 PUT + multipart (create, part, complete)", |c| {
                c.s3_put + c.s3_multipart_create + c.s3_upload_part + c.s3_multipart_complete
            }),
            ("S3 LIST", |c| c.s3_list),
            ("S3 GetObjectTagging", |c| c.s3_get_tagging),
            ("S3 PutObjectTagging", |c| c.s3_put_tagging),
            ("S3 DELETE (free)", |c| c.s3_delete),
            ("DynamoDB write units", |c| c.manifest_writes),
            ("DynamoDB read units", |c| c.manifest_reads),
            ("all requests and units", |c| c.total()),
        ];
        for (name, pick) in rows {
            let _ = writeln!(
                out,
                "{name:<46} {:>10} {:>10} {:>10} {:>12}",
                per_thousand(pick(&ingest), objects),
                per_thousand(pick(&seal), objects),
                per_thousand(pick(&ours), objects),
                per_thousand(pick(&baseline), baseline_objects)
            );
        }
        let per_million = |counts: &RequestCounts, objects: u64| counts.cost_usd() * 1e6 / objects.max(1) as f64;
        let _ = writeln!(
            out,
            "{:<46} {:>10.2} {:>10.2} {:>10.2} {:>12.2}",
            "US$ per million objects (us-east-1)",
            per_million(&ingest, objects),
            per_million(&seal, objects),
            per_million(&ours, objects),
            per_million(&baseline, baseline_objects)
        );
        let lists = self.steady_state_lists();
        let _ = writeln!(
            out,
            "LIST requests in the steady state (ingest + seal): {lists} (target 0: {})",
            verdict(lists == 0)
        );
        let _ = writeln!(out, "Every output verified byte for byte: {} outputs", self.verified_outputs);
        out
    }

    /// One line of JSON with the headline numbers and every phase's raw measurements.
    pub fn json_line(&self) -> anyhow::Result<String> {
        let objects = self.dataset_objects;
        let ours = self.ours();
        let baseline = self.baseline.as_ref().map(|measured| measured.requests.priced()).unwrap_or_default();
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
            "steady_state_lists": self.steady_state_lists(),
            "usd_per_million_objects": ours.cost_usd() * 1e6 / objects.max(1) as f64,
            "list_and_concatenate_usd_per_million_objects": baseline.cost_usd() * 1e6 / baseline_objects.max(1) as f64,
            "seconds": self.seconds,
            "phases": self,
        });
        Ok(serde_json::to_string(&summary)?)
    }
}
