//! What a DynamoDB partition's counts cost (issue 16). The manifest keeps no running totals:
//! `release` at the end of a seal, and `partition()` for the audit, sum a partition's pending
//! and compacted objects by reading every object item of it (state and size; see
//! `shared/src/adapters/dynamodb/partitions.rs`). This measures that read per partition size on
//! the DynamoDB server: requests, read units as DynamoDB bills them (`counting`), and time.

use std::time::Instant;

use anyhow::{ensure, Context};
use bytes::Bytes;
use chrono::Utc;
use compactor::domain::cost;
use compactor::domain::partition::PartitionKey;
use compactor::domain::sequencer::scan_sequencer;
use compactor::engine::seal::SealOptions;
use compactor::event::{ObjectEvent, ObjectEventKind};
use compactor::ports::PutOptions;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::counting::Counts;
use crate::setup::{Backend, Endpoints};
use crate::tiny::tiny_object_under;

/// The one partition: a closed day.
const PREFIX: &str = "counts/2024/02/01/";
/// Uploads and ingest calls in flight while setting up.
const UPLOAD_CONCURRENCY: usize = 64;
const INGEST_CONCURRENCY: usize = 8;

/// One read of a partition's counts.
#[derive(Debug, Clone, Serialize)]
pub struct CountRead {
    pub requests: u64,
    pub read_units: f64,
    pub seconds: f64,
}

impl CountRead {
    fn of(counts: &Counts, seconds: f64) -> Self {
        Self {
            requests: counts.0.values().map(|count| count.requests).sum(),
            read_units: counts.0.values().map(|count| count.read_units).sum(),
            seconds,
        }
    }

    /// Read units per 1,000 objects of a partition of `objects`.
    pub fn read_units_per_1000(&self, objects: u64) -> f64 {
        self.read_units * 1000.0 / objects.max(1) as f64
    }

    /// What this read costs on demand, scaled to a partition of a million objects.
    pub fn usd_per_million_objects(&self, objects: u64) -> f64 {
        // Units for a million objects, priced per million units: the two millions cancel.
        self.read_units / objects.max(1) as f64 * cost::DYNAMODB_READ_USD_PER_MILLION
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CountsRow {
    pub objects: u64,
    /// `partition()` of the partition as ingest left it: the audit's read.
    pub partition: CountRead,
    /// `release` after `acquire`, the partition still pending: the count, then the write.
    pub release: CountRead,
    /// `partition()` once the partition is sealed: the same count as the release at the end
    /// of a seal makes, now over its outputs' placement chunks as well. Measured with `--seal`.
    pub sealed: Option<CountRead>,
}

/// Uploads `count` tiny objects into one partition of a fresh bucket and table and records
/// them through the engine in the SAM template's ingest batches (not measured), then reads the
/// partition's counts through `partition()` and through `release`, each counted on its own;
/// with `seal`, seals the partition and reads its counts once more.
pub async fn measure(endpoints: &Endpoints, count: u64, seal: bool) -> anyhow::Result<CountsRow> {
    let backend = Backend::connect(endpoints).await?;
    let deployment = backend.fresh_deployment("counts").await?;
    let compactor = &deployment.compactor;
    let started = Instant::now();
    let store = compactor.store();
    let bucket = deployment.bucket.as_str();
    let events: Vec<ObjectEvent> = futures::stream::iter(0..count)
        .map(|index| async move {
            let (key, body) = tiny_object_under(PREFIX, index);
            let size = body.len() as u64;
            let meta = store.put(bucket, &key, Bytes::from(body), PutOptions::default()).await?;
            Ok::<_, anyhow::Error>(event(bucket, key, size, meta.etag))
        })
        .buffered(UPLOAD_CONCURRENCY)
        .try_collect()
        .await?;
    // The bench's own ingest: one engine call per SQS batch of the template's size, and none
    // of the events skipped.
    deployment.ingest(&events, INGEST_CONCURRENCY).await?;
    eprintln!(
        "      {count} objects uploaded and recorded in one partition ({} an ingest call) in {:.0} s",
        deployment.deployed.ingest_batch_size,
        started.elapsed().as_secs_f64()
    );

    let layout = &compactor.config().layout;
    let path = layout
        .partition_of(&format!("{PREFIX}x"))
        .map_err(|_| anyhow::anyhow!("{PREFIX} is not in the layout's partitions"))?
        .path;
    let key = PartitionKey::new(deployment.bucket.clone(), path);
    let manifest = compactor.manifest();
    let counted = |read: &CountRead, what: &str| {
        eprintln!("      {what}: {} requests, {:.0} read units, {:.1} s", read.requests, read.read_units, read.seconds)
    };

    let (before, started) = (deployment.counter_snapshot(), Instant::now());
    let record = manifest.partition(&key).await?.context("the partition is recorded")?;
    let partition = CountRead::of(&deployment.counter_snapshot().since(&before), started.elapsed().as_secs_f64());
    ensure!(record.pending_objects == count, "partition() counted {} of {count} objects", record.pending_objects);
    counted(&partition, "partition(), pending");

    let lease = manifest.acquire(&key, "bench", Utc::now(), chrono::Duration::minutes(15)).await?;
    let (before, started) = (deployment.counter_snapshot(), Instant::now());
    let released = manifest.release(&lease, Utc::now()).await?;
    let release = CountRead::of(&deployment.counter_snapshot().since(&before), started.elapsed().as_secs_f64());
    ensure!(released.pending_objects == count, "release counted {} of {count} objects", released.pending_objects);
    counted(&release, "release, pending");

    let sealed = if seal {
        let started = Instant::now();
        let report = compactor.seal_closed(&SealOptions::default()).await?;
        ensure!(report.failures.is_empty(), "the seal failed: {:?}", report.failures);
        ensure!(report.objects_compacted == count, "the seal compacted {} of {count}", report.objects_compacted);
        eprintln!("      sealed in {:.0} s", started.elapsed().as_secs_f64());
        let (before, started) = (deployment.counter_snapshot(), Instant::now());
        let record = manifest.partition(&key).await?.context("the partition is recorded")?;
        let read = CountRead::of(&deployment.counter_snapshot().since(&before), started.elapsed().as_secs_f64());
        ensure!(record.compacted_objects == count, "counted {} of {count} compacted", record.compacted_objects);
        counted(&read, "partition(), sealed");
        Some(read)
    } else {
        None
    };
    Ok(CountsRow { objects: count, partition, release, sealed })
}

/// The creation of an uploaded object, as ingest-fn receives it.
fn event(bucket: &str, key: String, size: u64, etag: Option<String>) -> ObjectEvent {
    let now = Utc::now();
    ObjectEvent {
        kind: ObjectEventKind::Created { size, etag: etag.clone() },
        bucket: bucket.to_owned(),
        sequencer: scan_sequencer(now, etag.as_deref()),
        key,
        event_time: now,
        event_name: "ObjectCreated:Put".to_owned(),
    }
}

/// The table: one line per size, and what it comes to per 1,000 objects and per million.
pub fn print(rows: &[CountsRow]) {
    println!(
        "\n{:<44}{:>10}{:>10}{:>12}{:>10}{:>16}",
        "DynamoDB counts of one partition", "objects", "requests", "read units", "seconds", "units / 1,000"
    );
    for row in rows {
        let reads = [
            Some(("partition(), pending (audit)", &row.partition)),
            Some(("release, pending", &row.release)),
            row.sealed.as_ref().map(|read| ("partition(), sealed (= release's count)", read)),
        ];
        for (what, read) in reads.into_iter().flatten() {
            println!(
                "{:<44}{:>10}{:>10}{:>12.0}{:>10.1}{:>16.1}",
                what,
                row.objects,
                read.requests,
                read.read_units,
                read.seconds,
                read.read_units_per_1000(row.objects)
            );
        }
    }
    if let Some(largest) = rows.iter().max_by_key(|row| row.objects) {
        let read = largest.sealed.as_ref().unwrap_or(&largest.release);
        println!(
            "the count at the end of a seal, scaled to 1,000,000 objects from {} ({}): {:.0} read units, ${:.4} on demand",
            largest.objects,
            if largest.sealed.is_some() { "sealed" } else { "pending" },
            read.read_units_per_1000(largest.objects) * 1000.0,
            read.usd_per_million_objects(largest.objects)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_objects_cost_scales_from_the_units_read() {
        let read = CountRead { requests: 10, read_units: 8000.0, seconds: 1.0 };
        assert_eq!(read.read_units_per_1000(100_000), 80.0);
        // 80,000 units for a million, at $0.125 a million units.
        assert!((read.usd_per_million_objects(100_000) - 0.01).abs() < 1e-12);
    }
}
