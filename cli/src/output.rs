//! What the commands print: human-readable tables and sizes, JSON, the reports, progress bars,
//! and the verification check that turns a report into an exit code.

use compactor::domain::records::{PartitionRecord, PartitionState};
use compactor::engine::audit::AuditSummary;
use compactor::engine::plan::PlanReport;
use compactor::engine::seal::SealReport;
use compactor::engine::{IngestReport, VerifyReport};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::{CliError, CliResult};

/// A plain text table: a header row and aligned columns, right-aligned where numeric.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|cell| cell.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|cell| cell.chars().count()).collect();
        let mut numeric = vec![true; columns];
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate().take(columns) {
                widths[index] = widths[index].max(cell.chars().count());
                let looks_numeric = cell.chars().next().is_some_and(|first| first.is_ascii_digit() || first == '$');
                numeric[index] &= looks_numeric || cell == "-";
            }
        }
        let mut text = String::new();
        let line = |cells: &[String], text: &mut String| {
            let rendered: Vec<String> = cells
                .iter()
                .enumerate()
                .take(columns)
                .map(|(index, cell)| {
                    if numeric[index] {
                        format!("{cell:>width$}", width = widths[index])
                    } else {
                        format!("{cell:<width$}", width = widths[index])
                    }
                })
                .collect();
            text.push_str(rendered.join("  ").trim_end());
            text.push('\n');
        };
        line(&self.header, &mut text);
        for row in &self.rows {
            line(row, &mut text);
        }
        text
    }
}

/// Bytes in binary units: `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The first `length` characters of a sha256, for tables; all of it when it is shorter (a
/// corrupt manifest row is printed, not a reason to panic).
pub fn short_sha256(sha256: &str, length: usize) -> &str {
    sha256.get(..length).unwrap_or(sha256)
}

/// Why a plan has nothing to seal, from the partitions' records: how many there are in each
/// state, and when the next open one with pending objects closes.
pub fn nothing_to_seal(partitions: &[PartitionRecord]) -> String {
    if partitions.is_empty() {
        return "nothing to seal: the manifest has no partitions yet; record objects first with `ingest FILE…` \
                or `ingest --scan PREFIX`"
            .to_string();
    }
    let summary = AuditSummary::of(partitions);
    let mut text = format!(
        "nothing to seal: no closed partition has pending objects ({} partitions: {} sealed, {} open, {} sealing)",
        thousands(partitions.len() as u64),
        thousands(summary.partitions_sealed),
        thousands(summary.partitions_open),
        thousands(summary.partitions_sealing),
    );
    let next_to_close = partitions
        .iter()
        .filter(|record| record.state == PartitionState::Open && record.pending_objects > 0)
        .min_by_key(|record| record.closes_at);
    if let Some(record) = next_to_close {
        text.push_str(&format!(
            "; the next to close is {} ({} pending objects, {}), at {}",
            record.key.path,
            thousands(record.pending_objects),
            human_bytes(record.pending_bytes),
            record.closes_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    if summary.partitions_sealing > 0 {
        text.push_str("; a sealing partition is locked by a seal run until it finishes or its lease expires (--lease)");
    }
    text
}

/// Thousands separators: `21,000`.
pub fn thousands(count: u64) -> String {
    let digits = count.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

pub fn print_json(value: &impl Serialize) -> CliResult {
    let text = serde_json::to_string_pretty(value).map_err(|error| CliError::Failure(error.into()))?;
    println!("{text}");
    Ok(())
}

pub fn progress_bar(length: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

pub fn print_ingest_report(report: &IngestReport) {
    println!(
        "ingested {} events: {} recorded ({}), {} updated, {} stale (replays or older), {} removed, {} removals ignored, {} skipped, {} non-object records{}",
        thousands(report.events),
        thousands(report.recorded),
        human_bytes(report.bytes_recorded),
        thousands(report.updated),
        thousands(report.stale),
        thousands(report.removed),
        thousands(report.removal_ignored),
        thousands(report.skipped_total()),
        thousands(report.ignored_records),
        if report.appended > 0 {
            format!(
                "; {} appended to arrival records (DynamoDB decides replays and removals when the seal reads them)",
                thousands(report.appended)
            )
        } else {
            String::new()
        },
    );
    for (reason, count) in &report.skipped {
        println!("  skipped {reason}: {}", thousands(*count));
    }
}

pub fn print_seal_report(report: &SealReport) {
    let mut table = Table::new(&["partition", "gen", "state", "outputs", "objects", "source bytes", "output bytes"]);
    for partition in &report.partitions {
        table.row(vec![
            partition.partition.path.clone(),
            partition.generation.to_string(),
            partition.state.to_string(),
            thousands(partition.outputs_committed),
            thousands(partition.objects_compacted),
            human_bytes(partition.source_bytes),
            human_bytes(partition.output_bytes),
        ]);
    }
    if !table.is_empty() {
        print!("{}", table.render());
    }
    println!(
        "sealed {} partitions ({} left open, {} locked elsewhere, {} failed): {} objects ({}) into {} outputs; \
         {} missing, {} superseded; sources tagged {}, deleted {}",
        report.partitions_sealed,
        report.partitions_left_open,
        report.partitions_locked,
        report.partitions_failed,
        thousands(report.objects_compacted),
        human_bytes(report.source_bytes),
        thousands(report.outputs_committed),
        report.objects_missing,
        report.objects_superseded,
        thousands(report.expiry.tagged),
        thousands(report.expiry.deleted),
    );
    if !report.locks_held.is_empty() {
        println!(
            "{} closed partitions locked by another seal run, running or stopped (killed runs stop renewing their \
             lease); each is retried by the first seal after its lease expires:",
            report.locks_held.len()
        );
        for lock in &report.locks_held {
            println!("  {}: locked by {} until {}", lock.partition.path, lock.owner, lock.expires_at.to_rfc3339());
        }
    }
    if report.copied_sources > 0 {
        println!(
            "{} sources ({}) copied server-side (UploadPartCopy): read once to hash them, not uploaded",
            thousands(report.copied_sources),
            human_bytes(report.copied_bytes)
        );
    }
    if report.objects_refused > 0 {
        println!(
            "{} objects left pending: their format cannot be concatenated (Parquet, ORC, Avro, zip, …)",
            thousands(report.objects_refused)
        );
    }
    if report.outputs_abandoned > 0 || report.objects_finished > 0 {
        println!(
            "recovered from earlier runs: {} uncommitted outputs abandoned, {} objects of committed outputs finished",
            report.outputs_abandoned, report.objects_finished
        );
    }
    if report.expiry.tag_limit > 0 || report.expiry.changed > 0 {
        println!(
            "not marked for expiry: {} with 10 tags already, {} changed since compaction",
            report.expiry.tag_limit, report.expiry.changed
        );
    }
    for (partition, error) in &report.failures {
        println!("failed {partition}: {error}");
    }
}

pub fn print_partitions(partitions: &[PartitionRecord]) {
    let mut table = Table::new(&["partition", "state", "gen", "pending", "compacted", "compacted bytes", "outputs"]);
    for record in partitions {
        table.row(vec![
            record.key.path.clone(),
            record.state.to_string(),
            record.generation.to_string(),
            thousands(record.pending_objects),
            thousands(record.compacted_objects),
            human_bytes(record.compacted_bytes),
            thousands(record.committed_outputs),
        ]);
    }
    print!("{}", table.render());
    for record in partitions.iter().filter(|record| record.state == PartitionState::Sealing) {
        if let (Some(owner), Some(expires_at)) = (&record.lock_owner, record.lease_expires_at) {
            println!(
                "  {} is locked by {owner} until {}: a seal run holds it, or held it and stopped; the first seal \
                 after then takes it over",
                record.key.path,
                expires_at.to_rfc3339()
            );
        }
    }
}

pub fn print_audit_summary(summary: &AuditSummary) {
    println!(
        "{} partitions ({} sealed, {} open, {} sealing): {} objects ({}) compacted into {} outputs, {} pending ({})",
        summary.partitions_sealed + summary.partitions_open + summary.partitions_sealing,
        summary.partitions_sealed,
        summary.partitions_open,
        summary.partitions_sealing,
        thousands(summary.compacted_objects),
        human_bytes(summary.compacted_bytes),
        thousands(summary.committed_outputs),
        thousands(summary.pending_objects),
        human_bytes(summary.pending_bytes),
    );
}

pub fn print_verify_report(report: &VerifyReport) {
    println!(
        "verified {}/{} outputs and {}/{} source ranges ({} read){}",
        thousands(report.outputs_ok),
        thousands(report.outputs_checked),
        thousands(report.sources_ok),
        thousands(report.sources_checked),
        human_bytes(report.bytes_read),
        if report.originals_compared > 0 {
            format!(
                "; {}/{} match their original object",
                thousands(report.originals_ok),
                thousands(report.originals_compared)
            )
        } else {
            String::new()
        }
    );
    let originals_skipped = report.originals_changed + report.originals_gone;
    if originals_skipped > 0 {
        println!(
            "  {} not compared with their original: {} overwritten since compaction, {} gone (deleted or expired); \
             their ranges still match the sha256 recorded at seal time",
            thousands(originals_skipped),
            thousands(report.originals_changed),
            thousands(report.originals_gone),
        );
        let more = originals_skipped.saturating_sub(report.originals_skipped_keys.len() as u64);
        for key in &report.originals_skipped_keys {
            println!("    {key}");
        }
        if more > 0 {
            println!("    … and {} more", thousands(more));
        }
    }
    if report.source_records_expired > 0 {
        println!(
            "  {} sources of those outputs are no longer in the manifest: their records expired (COMPACTOR_RECORD_TTL)",
            thousands(report.source_records_expired)
        );
    }
    for failure in &report.failures {
        println!("  FAILED {failure}");
    }
}

pub fn check_verified(report: &VerifyReport) -> CliResult {
    if report.all_verified() {
        Ok(())
    } else {
        Err(CliError::Unverified(format!("{} problems found (listed above)", report.failures.len())))
    }
}

pub fn print_plan(report: &PlanReport) {
    let mut table = Table::new(&["partition", "objects", "bytes", "outputs", "requests", "cost", "formats"]);
    for partition in &report.partitions {
        // Each format once, in the order outputs close: a partition usually has one.
        let mut formats: Vec<&str> = Vec::new();
        for output in &partition.outputs {
            if !formats.contains(&output.format.as_str()) {
                formats.push(&output.format);
            }
        }
        table.row(vec![
            partition.partition.path.clone(),
            thousands(partition.pending_objects),
            human_bytes(partition.pending_bytes),
            thousands(partition.outputs.len() as u64),
            thousands(partition.requests.total()),
            format!("${:.6}", partition.cost_usd),
            formats.join("; "),
        ]);
    }
    print!("{}", table.render());
    let requests = &report.requests;
    println!(
        "requests: {} GET, {} HEAD, {} PUT, {} multipart (create+parts+complete), {} tagging (get+put), {} DELETE, \
         {} manifest writes, {} manifest reads, {} LIST",
        thousands(requests.s3_get),
        thousands(requests.s3_head),
        thousands(requests.s3_put),
        thousands(requests.s3_multipart_create + requests.s3_upload_part + requests.s3_multipart_complete),
        thousands(requests.s3_get_tagging + requests.s3_put_tagging),
        thousands(requests.s3_delete),
        thousands(requests.manifest_writes),
        thousands(requests.manifest_reads),
        thousands(requests.s3_list),
    );
    println!(
        "cost at us-east-1 prices: ${:.4} (a list-and-concatenate job: ${:.4}, without the manifest's audit trail)",
        report.cost_usd, report.listing_job_cost_usd
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["partition", "objects"]);
        table.row(vec!["a/2024/01/01/".into(), "5".into()]);
        table.row(vec!["b/".into(), "12,345".into()]);
        let rendered = table.render();
        assert_eq!(rendered, "partition      objects\na/2024/01/01/        5\nb/              12,345\n");
    }

    #[test]
    fn sizes_and_counts_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(128 << 20), "128.0 MiB");
        assert_eq!(thousands(21000), "21,000");
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
