//! Step 4 of the seal: stream one planned output's sources into the store.
//!
//! Sources are read with bounded concurrency and a byte budget, in plan order, and appended to
//! a part buffer; every full part is uploaded while the next is filled, a bounded number at a
//! time. So memory holds at most `read_ahead_bytes` of sources (or one source, if larger) plus
//! `upload_concurrency + 1` parts, whatever the partition's size. sha256 of the output and of
//! every source is computed as the bytes pass.
//!
//! An output smaller than one part is written with a single PUT: one request instead of three.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::EngineError;
use crate::config::Config;
use crate::domain::plan::PlannedOutput;
use crate::domain::records::{ObjectRecord, Placement};
use crate::ports::{CompletedPart, GetOptions, ObjectStore, PutOptions, SourcePlacement, StoreError};

/// A source the writer could not read as recorded: it is gone, or its bytes changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MissingSource {
    pub key: String,
    pub sequencer: String,
    pub note: String,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub(crate) struct WrittenOutput {
    pub size: u64,
    pub sha256: String,
    pub placements: Vec<SourcePlacement>,
    pub missing: Vec<MissingSource>,
    /// False when every source was missing: nothing was written.
    pub written: bool,
}

/// Where the output goes and how.
pub(crate) struct OutputTarget<'a> {
    pub bucket: &'a str,
    pub generation: u64,
    /// The multipart upload already created for this output, when the plan needs one.
    pub upload_id: Option<&'a str>,
}

/// Permits are counted in KiB so that a `u32` semaphore covers budgets up to 4 TiB.
fn permits_for(size: u64, budget_kib: u32) -> u32 {
    (size.div_ceil(1024).max(1)).min(budget_kib as u64) as u32
}

/// True when this planned output needs a multipart upload (more than one part's bytes).
pub(crate) fn needs_multipart<T>(planned: &PlannedOutput<T>, config: &Config) -> bool {
    // One separator byte a source at most, so this bound is safe.
    planned.source_bytes + planned.sources.len() as u64 > config.part_bytes
}

pub(crate) async fn write_output(
    store: &Arc<dyn ObjectStore>,
    config: &Config,
    planned: &PlannedOutput<ObjectRecord>,
    target: OutputTarget<'_>,
) -> Result<WrittenOutput, EngineError> {
    let budget_kib = u32::try_from(config.read_ahead_bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
    let read_budget = Arc::new(Semaphore::new(budget_kib as usize));

    // Permits are taken in plan order (`then` is sequential) before a GET starts, so the
    // source the writer waits for always holds its permits: no deadlock with `buffered`.
    let reads = futures::stream::iter(planned.sources.iter().cloned())
        .then(|source| {
            let read_budget = Arc::clone(&read_budget);
            async move {
                let permit = read_budget
                    .acquire_many_owned(permits_for(source.size, budget_kib))
                    .await
                    .expect("the read budget is never closed");
                (source, permit)
            }
        })
        .map(|(source, permit)| {
            let store = Arc::clone(store);
            async move {
                let result = read_source(store.as_ref(), &source).await;
                (source, result, permit)
            }
        })
        .buffered(config.read_concurrency);
    let mut reads = std::pin::pin!(reads);

    let mut output_hasher = Sha256::new();
    let mut buffer = BytesMut::with_capacity(config.part_bytes as usize);
    let mut offset = 0u64;
    let mut written = WrittenOutput::default();
    let mut uploads = PartUploads::new(store, target.bucket, &planned.key, target.upload_id, config.upload_concurrency);

    while let Some((source, result, permit)) = reads.next().await {
        let bytes = match result? {
            Ok(bytes) => bytes,
            Err(SourceUnreadable(note)) => {
                warn!(bucket = %source.bucket, key = %source.key, note = %note, "source missing at seal time");
                written.missing.push(MissingSource {
                    key: source.key.clone(),
                    sequencer: source.sequencer.clone(),
                    note,
                });
                continue;
            }
        };
        let source_sha256 = hex::encode(Sha256::digest(&bytes));
        let newline_needed = planned.class.newline_separated && !bytes.is_empty() && !bytes.ends_with(b"\n");
        output_hasher.update(&bytes);
        buffer.extend_from_slice(&bytes);
        drop(bytes);
        drop::<OwnedSemaphorePermit>(permit);
        let separator_bytes = if newline_needed {
            output_hasher.update(b"\n");
            buffer.extend_from_slice(b"\n");
            1
        } else {
            0
        };
        written.placements.push(SourcePlacement {
            key: source.key.clone(),
            sequencer: source.sequencer.clone(),
            placement: Placement {
                output_key: planned.key.clone(),
                generation: target.generation,
                offset,
                length: source.size,
                sha256: source_sha256,
                separator_bytes,
            },
        });
        offset += source.size + separator_bytes;
        while target.upload_id.is_some() && buffer.len() as u64 >= config.part_bytes {
            let part = buffer.split_to(config.part_bytes as usize).freeze();
            uploads.upload(part).await?;
        }
    }

    if written.placements.is_empty() {
        return Ok(written);
    }
    let output_bytes = buffer.freeze();
    match target.upload_id {
        Some(_) => {
            if !output_bytes.is_empty() || uploads.next_part_number == 1 {
                uploads.upload(output_bytes).await?;
            }
            uploads.complete().await?;
        }
        None => {
            store.put(target.bucket, &planned.key, output_bytes, PutOptions::default()).await?;
        }
    }
    written.size = offset;
    written.sha256 = hex::encode(output_hasher.finalize());
    written.written = true;
    debug!(output = %planned.key, size = written.size, sources = written.placements.len(), "output written");
    Ok(written)
}

/// A source that cannot be read as recorded; the message goes into the record's note.
struct SourceUnreadable(String);

/// Reads a whole source, only as the version the manifest recorded (by ETag when there is one,
/// by size always). A source that is gone or changed is `Ok(Err(..))`; any other failure
/// (throttling, network) is not the source's fault and fails the output: the next run retries.
async fn read_source(
    store: &dyn ObjectStore,
    source: &ObjectRecord,
) -> Result<Result<Bytes, SourceUnreadable>, StoreError> {
    let options = GetOptions { range: None, if_match: source.etag.clone() };
    let result = match store.get(&source.bucket, &source.key, options).await {
        Ok(result) => result.bytes().await,
        Err(error) => Err(error),
    };
    match result {
        Ok(bytes) if bytes.len() as u64 == source.size => Ok(Ok(bytes)),
        Ok(bytes) => Ok(Err(SourceUnreadable(format!(
            "size changed since ingest: recorded {} bytes, found {}",
            source.size,
            bytes.len()
        )))),
        Err(StoreError::NotFound { .. }) => Ok(Err(SourceUnreadable("object no longer exists".into()))),
        Err(StoreError::PreconditionFailed { .. }) => {
            Ok(Err(SourceUnreadable("object was overwritten since ingest (its ETag changed)".into())))
        }
        Err(other) => Err(other),
    }
}

/// Parts in flight for one multipart upload, at most `limit` at a time.
struct PartUploads<'a> {
    store: &'a Arc<dyn ObjectStore>,
    bucket: &'a str,
    key: &'a str,
    upload_id: Option<&'a str>,
    limit: usize,
    next_part_number: u32,
    in_flight: FuturesUnordered<tokio::task::JoinHandle<Result<CompletedPart, StoreError>>>,
    completed: Vec<CompletedPart>,
}

impl<'a> PartUploads<'a> {
    fn new(
        store: &'a Arc<dyn ObjectStore>,
        bucket: &'a str,
        key: &'a str,
        upload_id: Option<&'a str>,
        limit: usize,
    ) -> Self {
        Self {
            store,
            bucket,
            key,
            upload_id,
            limit: limit.max(1),
            next_part_number: 1,
            in_flight: FuturesUnordered::new(),
            completed: Vec::new(),
        }
    }

    async fn upload(&mut self, part: Bytes) -> Result<(), EngineError> {
        while self.in_flight.len() >= self.limit {
            self.finish_one().await?;
        }
        let upload_id = self.upload_id.expect("parts are only uploaded for multipart outputs").to_string();
        let part_number = self.next_part_number;
        self.next_part_number += 1;
        let store = Arc::clone(self.store);
        let (bucket, key) = (self.bucket.to_string(), self.key.to_string());
        self.in_flight
            .push(tokio::spawn(async move { store.upload_part(&bucket, &key, &upload_id, part_number, part).await }));
        Ok(())
    }

    async fn finish_one(&mut self) -> Result<(), EngineError> {
        if let Some(joined) = self.in_flight.next().await {
            let part = joined.map_err(|join_error| {
                StoreError::backend(self.bucket, self.key, format!("part upload task failed: {join_error}"))
            })??;
            self.completed.push(part);
        }
        Ok(())
    }

    async fn complete(mut self) -> Result<(), EngineError> {
        while !self.in_flight.is_empty() {
            self.finish_one().await?;
        }
        self.completed.sort_by_key(|part| part.part_number);
        let upload_id = self.upload_id.expect("multipart output");
        self.store.complete_multipart(self.bucket, self.key, upload_id, &self.completed).await?;
        Ok(())
    }
}
