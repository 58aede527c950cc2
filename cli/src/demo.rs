//! `demo`: the whole cycle on a generated dataset, on the embedded backend, in about a minute.
//!
//! 1. generate ~21,000 small JSON files over 30 days (test-data, seeded) and PUT them (with
//!    `--format parquet`: 600 feature-store Parquet batches, merged by column chunks);
//! 2. ingest them one S3 notification each, as S3 would deliver them — plus 2% replays, a
//!    folder marker, a key outside the layout and a few objects of today (an open partition);
//! 3. seal the closed partitions;
//! 4. print the audit;
//! 5. verify every output byte for byte, against the manifest and against the original objects;
//! 6. restore a few objects from their outputs and compare with the originals (Parquet: the
//!    same rows and decoded values, not the same bytes).
//!
//! With `--format cloudtrail` the dataset is CloudTrail log files (gzip `{"Records":[...]}`),
//! rewritten to NDJSON; verify and restore then compare records instead of bytes. With `--format
//! csv`, Hive-style CSV partitions (`year=%Y/month=%m/day=%d`), one header per output. Any other
//! format seals the JSON files under it. With `--compress zstd` (or `gzip`) each source becomes
//! a frame of its own and the seal prints the size ratio; verify and restore decompress frames.
//!
//! Exits 0 only if everything verified.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use compactor::config::RawConfig;
use compactor::domain::format::{cloudtrail, Compression, FormatMode};
use compactor::engine::seal::{OutputProgress, SealOptions};
use compactor::engine::{Compactor, IngestReport};
use compactor::event::{decode_value, s3_notification, ObjectEvent, ObjectEventKind};
use compactor::ports::{GetOptions, PutOptions};
use futures::StreamExt;
use test_data::{DatasetKind, DatasetSpec};

use crate::args::{DemoArgs, GlobalArgs};
use crate::backend::open_embedded;
use crate::output::{
    check_verified, human_bytes, print_audit_summary, print_ingest_report, print_verify_report, progress_bar,
    short_sha256, thousands,
};
use crate::{CliError, CliResult};

const BUCKET: &str = "demo-logs";
const PREFIX: &str = "AWSLogs/123456789012/app/us-east-1/";
const MARKER: &str = ".s3-compactor-demo";
/// The layout of the CSV demo's keys (`clicks-csv/year=2024/month=01/day=01/part-00001.csv`).
const HIVE_LAYOUT: &str = "year=%Y/month=%m/day=%d";

fn failure(error: impl Into<anyhow::Error>) -> CliError {
    CliError::Failure(error.into())
}

/// Makes `dir` a fresh, empty demo directory; refuses to delete a directory the demo did not make.
fn prepare_dir(dir: &Path) -> CliResult {
    if dir.exists() {
        let is_ours = dir.join(MARKER).exists();
        let is_empty = std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()).unwrap_or(false);
        if !is_ours && !is_empty {
            return Err(CliError::BadInput(anyhow!(
                "{} exists and is not a demo directory: pass --dir with a new or empty directory",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display())).map_err(failure)?;
    }
    std::fs::create_dir_all(dir.join("buckets").join(BUCKET))
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(failure)?;
    std::fs::write(dir.join(MARKER), "made by s3-compactor demo; safe to delete\n").map_err(failure)?;
    Ok(())
}

fn step(number: u32, text: &str) {
    println!("\n[{number}/6] {text}");
}

pub async fn run(global: &GlobalArgs, args: DemoArgs) -> CliResult {
    let started = Instant::now();
    prepare_dir(&args.dir)?;
    // The demo's own defaults, under whatever the user set explicitly.
    let mut raw: RawConfig = global.config.raw();
    // `--format parquet`: feature-store Parquet batches, merged by their column chunks.
    let parquet = raw.format.as_deref().map(str::trim) == Some("parquet");
    let files_per_day = args.files_per_day.unwrap_or(if parquet { 20 } else { 700 });
    raw.source_bucket.get_or_insert_with(|| BUCKET.to_string());
    if raw.source_bucket.as_deref() != Some(BUCKET) {
        return Err(CliError::BadInput(anyhow!(
            "the demo writes its own bucket {BUCKET}: leave --source-bucket unset"
        )));
    }
    // CSV comes as Hive-style partitions (test-data's hive-csv kind): their layout, unless set.
    let csv = raw.format.as_deref().map(str::trim) == Some("csv");
    if csv {
        raw.layout.get_or_insert_with(|| HIVE_LAYOUT.to_string());
    }
    let config = raw.validate()?;
    let rewrites_cloudtrail = config.formats.default == FormatMode::Cloudtrail;
    let compactor = open_embedded(&args.dir, config).await?;
    let store = Arc::clone(compactor.store());

    // 1. Generate and upload.
    let spec = if parquet {
        DatasetSpec {
            seed: args.seed,
            days: args.days,
            files_per_day,
            prefix: PREFIX.to_string(),
            bucket: BUCKET.to_string(),
            ..DatasetSpec::demo(DatasetKind::Parquet)
        }
    } else if csv {
        DatasetSpec {
            seed: args.seed,
            days: args.days,
            files_per_day,
            bucket: BUCKET.to_string(),
            ..DatasetSpec::demo(DatasetKind::HiveCsv)
        }
    } else if rewrites_cloudtrail {
        DatasetSpec {
            seed: args.seed,
            days: args.days,
            files_per_day,
            bucket: BUCKET.to_string(),
            ..DatasetSpec::demo(DatasetKind::CloudTrail)
        }
    } else {
        DatasetSpec {
            kind: DatasetKind::SeedJson,
            seed: args.seed,
            start_date: NaiveDate::from_ymd_opt(2024, 1, 1).expect("a valid date"),
            days: args.days,
            files_per_day,
            prefix: PREFIX.to_string(),
            bucket: BUCKET.to_string(),
            ..DatasetSpec::default()
        }
    };
    let total = u64::from(args.days) * u64::from(files_per_day);
    let what = if rewrites_cloudtrail { "CloudTrail log files" } else { "objects" };
    step(
        1,
        &format!("generating {} {what} over {} days into s3://{BUCKET}/{}", thousands(total), args.days, spec.prefix),
    );
    let phase = Instant::now();
    let bar = progress_bar(total, "upload");
    let mut uploads = futures::stream::iter(test_data::objects(&spec))
        .map(|object| {
            let store = Arc::clone(&store);
            async move {
                let meta = store.put(BUCKET, &object.key, object.body.clone(), PutOptions::default()).await?;
                Ok::<_, compactor::ports::StoreError>((object, meta))
            }
        })
        .buffered(16);
    let mut events: Vec<ObjectEvent> = Vec::with_capacity(total as usize);
    let mut bytes_uploaded = 0u64;
    while let Some(result) = uploads.next().await {
        let (object, meta) = result.map_err(failure)?;
        bytes_uploaded += meta.size;
        events.push(created_event(&object.key, meta.size, meta.etag, events.len() as u64 + 1, object.event_time));
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Today's partition is still open: these objects must stay pending.
    let today = Utc::now();
    let today_prefix = if csv {
        format!("{}{}/", spec.prefix, today.format(HIVE_LAYOUT))
    } else {
        format!("{PREFIX}{}/", today.format("%Y/%m/%d"))
    };
    for index in 0..5u64 {
        let key = format!("{today_prefix}live-{index}.json");
        let body = Bytes::from(format!("{{\"live\":{index}}}\n"));
        let meta = store.put(BUCKET, &key, body, PutOptions::default()).await.map_err(failure)?;
        events.push(created_event(&key, meta.size, meta.etag, events.len() as u64 + 1, today));
    }
    println!(
        "  {} objects, {} (avg {}) in {:.1}s",
        thousands(events.len() as u64),
        human_bytes(bytes_uploaded),
        human_bytes(bytes_uploaded / total.max(1)),
        phase.elapsed().as_secs_f64()
    );

    // 2. Ingest, one notification per event as S3 sends them, with what S3 also sends.
    step(2, "ingesting one S3 event per object (with 2% replays, a folder marker and a stray key)");
    let phase = Instant::now();
    let mut deliveries: Vec<ObjectEvent> = events.clone();
    deliveries.extend(events.iter().step_by(50).cloned()); // at-least-once delivery: replays
    deliveries.push(created_event(&format!("{PREFIX}2024/01/02/"), 0, None, 1, today)); // a folder marker
    deliveries.push(created_event("notes/readme.txt", 10, None, 1, today)); // outside the layout
    let bar = progress_bar(deliveries.len() as u64, "ingest");
    let mut report = IngestReport::default();
    // Each notification is encoded and decoded on its own, as S3 sends them; they are recorded
    // a batch at a time, as ingest-fn records an SQS batch.
    for chunk in deliveries.chunks(256) {
        let decoded = chunk
            .iter()
            .map(|event| decode_value(s3_notification(std::slice::from_ref(event))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| failure(anyhow!(error)))?;
        report.merge(&compactor.ingest_all_decoded(&decoded).await?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    print!("  ");
    print_ingest_report(&report);
    println!(
        "  in {:.1}s ({:.0} events/s)",
        phase.elapsed().as_secs_f64(),
        deliveries.len() as f64 / phase.elapsed().as_secs_f64()
    );
    if report.recorded != events.len() as u64 {
        return Err(failure(anyhow!("recorded {} of {} objects", report.recorded, events.len())));
    }

    // 3. Seal.
    step(3, "sealing the closed partitions");
    let phase = Instant::now();
    let bar = progress_bar(total, "seal");
    let progress_bar_handle = bar.clone();
    let options = SealOptions {
        progress: Some(Arc::new(move |progress: &OutputProgress| progress_bar_handle.inc(progress.objects))),
        ..Default::default()
    };
    let sealed = compactor.seal_closed(&options).await?;
    bar.finish_and_clear();
    let seconds = phase.elapsed().as_secs_f64();
    println!(
        "  {} partitions sealed: {} objects ({}) into {} outputs in {:.1}s ({:.0} objects/s, {:.1} MiB/s); {} sources tagged {}",
        sealed.partitions_sealed,
        thousands(sealed.objects_compacted),
        human_bytes(sealed.source_bytes),
        sealed.outputs_committed,
        seconds,
        sealed.objects_compacted as f64 / seconds,
        sealed.source_bytes as f64 / seconds / (1 << 20) as f64,
        thousands(sealed.expiry.tagged),
        compactor.config().expiry_tag.key.clone() + "=" + &compactor.config().expiry_tag.value,
    );
    if sealed.partitions_failed > 0 {
        return Err(failure(anyhow!("{} partitions failed to seal: {:?}", sealed.partitions_failed, sealed.failures)));
    }
    let compression = compactor.config().formats.compression;
    if compression != Compression::None {
        println!(
            "  {compression}, a frame per source: {} of sources → {} of outputs ({:.1}× smaller)",
            human_bytes(sealed.source_bytes),
            human_bytes(sealed.output_bytes),
            sealed.source_bytes as f64 / sealed.output_bytes.max(1) as f64
        );
    }

    // 4. Audit.
    step(4, "audit: what the manifest says");
    let partitions = compactor.audit_partitions().await?;
    let summary = compactor::engine::audit::AuditSummary::of(&partitions);
    print!("  ");
    print_audit_summary(&summary);
    if let Some(first) = partitions.first() {
        let outputs = compactor.audit_partition_outputs(&first.key, None).await?;
        if let Some(output) = outputs.first() {
            println!(
                "  e.g. {} → {} ({} objects, {}, sha256 {}…)",
                first.key.path,
                output.key,
                output.object_count,
                human_bytes(output.size.unwrap_or(0)),
                short_sha256(output.sha256.as_deref().unwrap_or(""), 12)
            );
        }
    }
    println!(
        "  objects in the lake: {} small files → {} outputs ({:.0}× fewer), {} still pending in today's open partition",
        thousands(summary.compacted_objects),
        thousands(summary.committed_outputs),
        summary.compacted_objects as f64 / summary.committed_outputs.max(1) as f64,
        summary.pending_objects
    );

    // 5. Verify.
    step(5, "verify: every output and source range by sha256, and against the original objects");
    let phase = Instant::now();
    let verified = compactor.verify(None, true, |_| {}).await?;
    print!("  ");
    print_verify_report(&verified);
    println!("  in {:.1}s", phase.elapsed().as_secs_f64());
    check_verified(&verified)?;
    if verified.sources_checked != sealed.objects_compacted {
        return Err(CliError::Unverified(format!(
            "verified {} sources but sealed {}",
            verified.sources_checked, sealed.objects_compacted
        )));
    }

    // 6. Restore.
    step(6, "restore: original bytes back out of the outputs");
    let samples = restore_samples(&compactor, &events, rewrites_cloudtrail).await?;
    for (key, length, separator) in &samples {
        if rewrites_cloudtrail {
            println!("  {key}: {length} bytes of gzip NDJSON restored, the same records as the original{separator}");
        } else if parquet {
            println!(
                "  {key}: {length} bytes restored as a Parquet file, the same rows and decoded values as the original"
            );
        } else {
            println!("  {key}: {length} bytes restored, identical to the original{separator}");
        }
    }

    println!(
        "\nall verified in {:.1}s. Explore it yourself:\n  s3-compactor --data-dir {dir} --source-bucket {BUCKET} audit\n  \
         s3-compactor --data-dir {dir} --source-bucket {BUCKET} audit --object '{key}'\n  \
         s3-compactor --data-dir {dir} --source-bucket {BUCKET} restore --object '{key}' --out restored.{extension}",
        started.elapsed().as_secs_f64(),
        dir = args.dir.display(),
        key = samples.first().map(|sample| sample.0.as_str()).unwrap_or(""),
        extension = if parquet { "parquet" } else { "json" },
    );
    Ok(())
}

fn created_event(
    key: &str,
    size: u64,
    etag: Option<String>,
    sequence: u64,
    event_time: chrono::DateTime<Utc>,
) -> ObjectEvent {
    ObjectEvent {
        kind: ObjectEventKind::Created { size, etag },
        bucket: BUCKET.to_string(),
        key: key.to_string(),
        sequencer: format!("{sequence:016X}"),
        event_time,
        event_name: "ObjectCreated:Put".to_string(),
    }
}

/// Restores the first and last objects, and one that lacked a final newline, comparing each
/// with the original object: byte for byte, or for rewritten CloudTrail files, record for record.
async fn restore_samples(
    compactor: &Compactor,
    events: &[ObjectEvent],
    rewrites_cloudtrail: bool,
) -> CliResult<Vec<(String, u64, String)>> {
    let mut keys: Vec<&str> = Vec::new();
    keys.extend(events.first().map(|event| event.key.as_str()));
    keys.extend(events.iter().rev().find(|event| !event.key.contains("/live-")).map(|event| event.key.as_str()));
    for event in events.iter().take(2000) {
        let audit = compactor.audit_object(BUCKET, &event.key).await?;
        if audit.object.placement.as_ref().is_some_and(|placement| placement.separator_bytes > 0) {
            keys.push(&event.key);
            break;
        }
    }
    let mut results = Vec::new();
    for key in keys {
        let (object, restored) = compactor.restore_bytes(key).await?;
        let original = compactor
            .store()
            .get(BUCKET, key, GetOptions::default())
            .await
            .map_err(failure)?
            .bytes()
            .await
            .map_err(failure)?;
        if rewrites_cloudtrail {
            let records = |result: Result<cloudtrail::RecordsDigest, cloudtrail::NotCloudtrail>| {
                result.map_err(|reason| CliError::Unverified(format!("cannot read the records of {key}: {reason}")))
            };
            let (restored_records, original_records) =
                (records(cloudtrail::ndjson_digest(&restored))?, records(cloudtrail::document_digest(&original))?);
            if restored_records != original_records {
                return Err(CliError::Unverified(format!("restored records of {key} differ from the original's")));
            }
            let note = format!(" ({} records; restore --as-source rebuilds the document)", original_records.records);
            results.push((key.to_string(), restored.len() as u64, note));
            continue;
        }
        if key.ends_with(".parquet") {
            // Not the same bytes (a new footer), the same rows and values.
            // Compared as rows (a rewritten source's restored file has row groups of its own).
            let rows =
                |bytes: &Bytes| compactor::parquet::rows::file_rows(bytes).map(|(rows, _, digest)| (rows, digest));
            if rows(&restored).map_err(|error| failure(anyhow!(error)))?
                != rows(&original).map_err(|error| failure(anyhow!(error)))?
            {
                return Err(CliError::Unverified(format!("restored rows of {key} differ from the original's")));
            }
            results.push((key.to_string(), restored.len() as u64, String::new()));
            continue;
        }
        if restored != original {
            return Err(CliError::Unverified(format!("restored bytes of {key} differ from the original")));
        }
        let separated = object.placement.as_ref().is_some_and(|placement| placement.separator_bytes > 0);
        let note = if separated {
            " (it lacked a final newline: the output has one after it, outside its range)".to_string()
        } else {
            String::new()
        };
        results.push((key.to_string(), restored.len() as u64, note));
    }
    Ok(results)
}
