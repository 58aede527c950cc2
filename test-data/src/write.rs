//! Writing a dataset into an object store, and the S3 events it implies.

use std::fmt;
use std::io::{self, Write};
use std::pin::pin;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use compactor::event::{s3_notification, ObjectEvent, ObjectEventKind};
use compactor::ports::{ObjectMeta, ObjectStore, PutOptions};
use futures::StreamExt as _;

use crate::{objects, DatasetSpec};

/// Object counts by size, in the buckets that matter for small-object costs: under 1,000 bytes
/// (the CloudTrail statistic), under 16 KiB, under 128 KiB (the Standard-IA and Glacier IR
/// minimum billable size), and the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeHistogram {
    pub under_1000_bytes: u64,
    pub under_16_kib: u64,
    pub under_128_kib: u64,
    pub at_least_128_kib: u64,
}

impl SizeHistogram {
    pub fn record(&mut self, size_bytes: u64) {
        match size_bytes {
            0..1_000 => self.under_1000_bytes += 1,
            1_000..16_384 => self.under_16_kib += 1,
            16_384..131_072 => self.under_128_kib += 1,
            _ => self.at_least_128_kib += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.under_1000_bytes + self.under_16_kib + self.under_128_kib + self.at_least_128_kib
    }
}

impl fmt::Display for SizeHistogram {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total().max(1) as f64;
        let share = |count: u64| count as f64 * 100.0 / total;
        write!(
            formatter,
            "<1 KB: {} ({:.1}%), <16 KiB: {} ({:.1}%), <128 KiB: {} ({:.1}%), >=128 KiB: {} ({:.1}%)",
            self.under_1000_bytes,
            share(self.under_1000_bytes),
            self.under_16_kib,
            share(self.under_16_kib),
            self.under_128_kib,
            share(self.under_128_kib),
            self.at_least_128_kib,
            share(self.at_least_128_kib)
        )
    }
}

/// What [`write_to_store`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub objects: u64,
    pub bytes: u64,
    pub sizes: SizeHistogram,
    /// One `ObjectCreated:Put` event per object, in sequencer (generation) order. This grows
    /// with the dataset (about 300 bytes an object); to stream instead, iterate [`objects`]
    /// and build each event with [`event_for`].
    pub events: Vec<ObjectEvent>,
}

/// The sequencer of the `index`-th object of a dataset (0-based): 16 upper-case hex digits.
/// S3 only promises sequencers increase per key; these increase through the whole dataset,
/// which satisfies that and orders replays.
pub fn sequencer(index: u64) -> String {
    format!("{:016X}", index + 1)
}

/// The `ObjectCreated:Put` event S3 sends after a PUT that returned `meta`.
pub fn event_for(bucket: &str, meta: &ObjectMeta, event_time: DateTime<Utc>, sequencer: String) -> ObjectEvent {
    ObjectEvent {
        kind: ObjectEventKind::Created { size: meta.size, etag: meta.etag.clone() },
        bucket: bucket.to_string(),
        key: meta.key.clone(),
        sequencer,
        event_time,
        event_name: "ObjectCreated:Put".to_string(),
    }
}

/// One S3 notification holding `event`, as one line of JSON (no newline), keys URL-encoded
/// as S3 encodes them.
pub fn notification_line(event: &ObjectEvent) -> String {
    s3_notification(std::slice::from_ref(event)).to_string()
}

/// Writes one notification per line, as a JSON-lines file ingest can be driven from.
pub fn write_notifications<'a>(
    events: impl IntoIterator<Item = &'a ObjectEvent>,
    output: &mut impl Write,
) -> io::Result<()> {
    for event in events {
        output.write_all(notification_line(event).as_bytes())?;
        output.write_all(b"\n")?;
    }
    Ok(())
}

/// PUTs every object of the dataset into `spec.bucket`, at most `concurrency` at once, and
/// returns the events S3 would send for them. `on_progress(objects, bytes)` is called with
/// running totals after each PUT.
///
/// Objects are generated as the PUTs need them, so memory holds `concurrency` objects (plus
/// the events). ETags and sizes come from what `put` returns; event times from the dataset.
pub async fn write_to_store(
    spec: &DatasetSpec,
    store: &dyn ObjectStore,
    concurrency: usize,
    mut on_progress: impl FnMut(u64, u64),
) -> anyhow::Result<WriteSummary> {
    let bucket = spec.bucket.as_str();
    let puts = futures::stream::iter(objects(spec).enumerate())
        .map(|(index, object)| async move {
            let meta = store
                .put(bucket, &object.key, object.body, PutOptions::default())
                .await
                .with_context(|| format!("writing object {index} of the {} dataset", spec.kind))?;
            anyhow::Ok(event_for(bucket, &meta, object.event_time, sequencer(index as u64)))
        })
        .buffer_unordered(concurrency.max(1));
    let mut puts = pin!(puts);
    let mut summary = WriteSummary::default();
    summary.events.reserve(usize::try_from(spec.object_count()).unwrap_or(0));
    while let Some(written) = puts.next().await {
        let event = written?;
        if let ObjectEventKind::Created { size, .. } = &event.kind {
            summary.bytes += size;
            summary.sizes.record(*size);
        }
        summary.objects += 1;
        summary.events.push(event);
        on_progress(summary.objects, summary.bytes);
    }
    // Completion order depends on the store's timing; sequencer order does not.
    summary.events.sort_unstable_by(|left, right| left.sequencer.cmp(&right.sequencer));
    Ok(summary)
}
