//! How the writer reads its sources: small ones in batches ahead of it (one `get_many`, one
//! share of the read-ahead budget), copy candidates at their turn, each only as the version
//! the manifest recorded; and what counts as a source that changed or went away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{JoinError, JoinHandle};

use crate::domain::format::{FormatClass, TextTail, UnreadableGzip};
use crate::domain::records::ObjectRecord;
use crate::ports::{GetOptions, GetRequest, GetResult, ObjectStore, SeenAtRead, StoreError};

/// How the writer gets a source's bytes.
pub(super) enum SourceRead {
    /// Read whole ahead of the writer. The last source of a batch holds the batch's share of
    /// the read-ahead budget until its bytes are in the part buffer.
    Prefetched { result: Result<(Bytes, SeenAtRead), SourceUnreadable>, permit: Option<OwnedSemaphorePermit> },
    /// A copy candidate: read by the writer at its turn, never ahead, holding no permits.
    AtTurn,
}

/// Sources read together, consecutive in plan order.
pub(super) struct ReadBatch {
    pub(super) sources: Vec<ObjectRecord>,
    /// One copy candidate, read by the writer at its turn.
    pub(super) at_turn: bool,
}

/// Sources larger than this are read on their own.
pub(super) const BATCHED_SOURCE_MAX_BYTES: u64 = 256 * 1024;
/// Bytes of sources in one batch at most.
pub(super) const BATCH_MAX_BYTES: u64 = 2 * 1024 * 1024;

/// Groups consecutive small sources of one bucket into batches of up to `batch_size`; a copy
/// candidate or a larger source is a batch of its own. With `batch_size` 1, one source each.
pub(super) fn read_batches(
    sources: &[ObjectRecord],
    batch_size: usize,
    is_copy_candidate: impl Fn(&ObjectRecord) -> bool,
) -> Vec<ReadBatch> {
    let mut batches: Vec<ReadBatch> = Vec::new();
    let mut batch_bytes = 0;
    for source in sources {
        let at_turn = is_copy_candidate(source);
        let joins_last = !at_turn
            && source.size <= BATCHED_SOURCE_MAX_BYTES
            && batches.last().is_some_and(|last| {
                !last.at_turn
                    && last.sources.len() < batch_size
                    && last.sources[0].size <= BATCHED_SOURCE_MAX_BYTES
                    && last.sources[0].bucket == source.bucket
                    && batch_bytes + source.size <= BATCH_MAX_BYTES
            });
        match batches.last_mut() {
            Some(last) if joins_last => {
                last.sources.push(source.clone());
                batch_bytes += source.size;
            }
            _ => {
                batches.push(ReadBatch { sources: vec![source.clone()], at_turn });
                batch_bytes = source.size;
            }
        }
    }
    batches
}

/// Batches read at once: a few, so reading goes on while the writer works on one, and never
/// more than `read_concurrency` (on S3 a batch is one GET, and that is the GETs in flight).
pub(super) fn batches_in_flight(read_concurrency: usize, batch_size: usize) -> usize {
    read_concurrency.div_ceil(batch_size).max(4).min(read_concurrency)
}

/// Aborts its task when dropped: a failed output stops its reads instead of finishing them
/// in the background.
pub(super) struct AbortOnDrop<T>(pub(super) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;
    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(context)
    }
}

/// A source read by the writer only to hash it, its bytes dropped.
pub(super) struct HashedSource {
    pub(super) source_sha256: String,
    pub(super) text_end: Result<Option<u8>, UnreadableGzip>,
    /// The output's hasher with the source's bytes added: adopted only if the copy succeeds.
    pub(super) output_hasher: Sha256,
}

/// Reads a source's body only to hash it: each chunk goes into the source's hasher and into a
/// copy of the output's, then is dropped.
pub(super) async fn hash_body(
    source: &ObjectRecord,
    class: &FormatClass,
    mut body: GetResult,
    mut output_hasher: Sha256,
) -> Result<HashedSource, StoreError> {
    let mut source_hasher = Sha256::new();
    let mut hashed_bytes = 0u64;
    let mut tail = TextTail::new(class);
    while let Some(chunk) = body.body.next().await {
        let chunk = chunk?;
        source_hasher.update(&chunk);
        tail.update(&chunk);
        output_hasher.update(&chunk);
        hashed_bytes += chunk.len() as u64;
    }
    check_body_length(source, hashed_bytes)?;
    Ok(HashedSource { source_sha256: hex::encode(source_hasher.finalize()), text_end: tail.finish(), output_hasher })
}

/// A body that ends short or long of the size its response announced (and the record holds)
/// was cut or garbled on the way: a store failure, not a changed source.
pub(super) fn check_body_length(source: &ObjectRecord, read_bytes: u64) -> Result<(), StoreError> {
    if read_bytes == source.size {
        return Ok(());
    }
    Err(StoreError::backend(
        source.bucket.as_str(),
        source.key.as_str(),
        format!("the body held {read_bytes} bytes where its response announced {}; retry the seal", source.size),
    ))
}

/// A source that cannot be read as recorded; the message goes into the record's note.
pub(super) struct SourceUnreadable(pub(super) String);

/// The errors that mean the source is not the recorded version any more; any other is the
/// store's and fails the output.
pub(super) fn unreadable_from(error: StoreError) -> Result<SourceUnreadable, StoreError> {
    match error {
        StoreError::NotFound { .. } => Ok(SourceUnreadable("object no longer exists".into())),
        StoreError::PreconditionFailed { .. } => {
            Ok(SourceUnreadable("object was overwritten since ingest (its ETag changed)".into()))
        }
        other => Err(other),
    }
}

/// Opens a source's GET, only as the version the manifest recorded (by ETag when there is
/// one, by size always). A source that is gone or changed is `Ok(Err(..))`; any other failure
/// (throttling, network) is not the source's fault and fails the output: the next run retries.
pub(super) async fn open_source(
    store: &dyn ObjectStore,
    source: &ObjectRecord,
) -> Result<Result<GetResult, SourceUnreadable>, StoreError> {
    checked_open(source, store.get(&source.bucket, &source.key, get_options(source)).await)
}

/// The whole object, only as the version the manifest recorded.
pub(super) fn get_options(source: &ObjectRecord) -> GetOptions {
    GetOptions { range: None, if_match: source.etag.clone() }
}

/// A GET's answer for `source`, as [`open_source`] returns it.
pub(super) fn checked_open(
    source: &ObjectRecord,
    answer: Result<GetResult, StoreError>,
) -> Result<Result<GetResult, SourceUnreadable>, StoreError> {
    match answer {
        Ok(result) if result.meta.size == source.size => Ok(Ok(result)),
        Ok(result) => Ok(Err(size_changed(source, result.meta.size))),
        Err(error) => unreadable_from(error).map(Err),
    }
}

pub(super) fn size_changed(source: &ObjectRecord, found_bytes: u64) -> SourceUnreadable {
    SourceUnreadable(format!("size changed since ingest: recorded {} bytes, found {found_bytes}", source.size))
}

/// Reads a whole source, as [`open_source`] opens it.
pub(super) async fn read_source(
    store: &dyn ObjectStore,
    source: &ObjectRecord,
) -> Result<Result<(Bytes, SeenAtRead), SourceUnreadable>, StoreError> {
    match open_source(store, source).await? {
        Ok(body) => read_body(source, body).await,
        Err(unreadable) => Ok(Err(unreadable)),
    }
}

/// An opened source's bytes, whole; a body that ends early or late is a changed source.
pub(super) async fn read_body(
    source: &ObjectRecord,
    mut body: GetResult,
) -> Result<Result<(Bytes, SeenAtRead), SourceUnreadable>, StoreError> {
    let seen = std::mem::take(&mut body.seen);
    match body.bytes().await {
        Ok(bytes) if bytes.len() as u64 == source.size => Ok(Ok((bytes, seen))),
        Ok(bytes) => Ok(Err(size_changed(source, bytes.len() as u64))),
        Err(error) => unreadable_from(error).map(Err),
    }
}

/// Reads a batch of sources whole, each as [`read_source`] reads it: one source by `get`,
/// several (of one bucket) by one `get_many`.
pub(super) async fn read_sources(
    store: &dyn ObjectStore,
    sources: &[ObjectRecord],
) -> Result<Vec<Result<(Bytes, SeenAtRead), SourceUnreadable>>, StoreError> {
    if let [source] = sources {
        return Ok(vec![read_source(store, source).await?]);
    }
    let requests: Vec<GetRequest> =
        sources.iter().map(|source| GetRequest { key: source.key.clone(), options: get_options(source) }).collect();
    let answers = store.get_many(&sources[0].bucket, &requests).await;
    let mut results = Vec::with_capacity(sources.len());
    for (source, answer) in sources.iter().zip(answers) {
        results.push(match checked_open(source, answer)? {
            Ok(body) => read_body(source, body).await?,
            Err(unreadable) => Err(unreadable),
        });
    }
    Ok(results)
}
