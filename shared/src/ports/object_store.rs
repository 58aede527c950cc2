//! The object store port: the slice of S3 the compactor uses.
//!
//! Every adapter guarantees:
//! - **Atomic writes.** A `put` or `complete_multipart` makes the whole object visible at once,
//!   or nothing; a reader never sees a partial object.
//! - **Read-after-write.** A successful write is visible to the next `head`, `get` and `list`.
//! - **Conditional requests.** `get` with `if_match` fails with [`StoreError::PreconditionFailed`]
//!   when the object's ETag differs; `put` with `if_none_match` fails with
//!   [`StoreError::AlreadyExists`] when the key exists.
//! - **Ranges.** `get` with a range returns exactly those bytes (clamped to the object's end).
//! - **ETags** change whenever an object's bytes do.
//! - **Idempotent clean-up.** `delete`, `delete_many` and `abort_multipart` succeed when there
//!   is nothing left to delete.
//! - **Batch deletes.** `delete_many` takes up to [`MAX_KEYS_PER_DELETE`] keys of one bucket in
//!   one request and answers one outcome per key, in the order asked: a key that fails (a
//!   changed ETag, a refused permission) is reported in its place, never as an error of the
//!   whole call, and never stops the other keys. A key with `if_match` is deleted only while
//!   its ETag is that one (S3's conditional delete); otherwise its outcome is
//!   [`StoreError::PreconditionFailed`] and the object is left as it is.
//! - **Ordered listing.** `list` returns keys in lexicographic (UTF-8 byte) order.
//! - **Typed errors.** A missing object is [`StoreError::NotFound`], a missing bucket
//!   [`StoreError::NoSuchBucket`]: callers act on them.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// What a store knows of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
}

/// One object tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { key: key.into(), value: value.into() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// Bytes `[start, end)`; `None` for the whole object.
    pub range: Option<Range<u64>>,
    /// Read only if the object's ETag is this one.
    pub if_match: Option<String>,
}

/// One object of a `get_many`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetRequest {
    pub key: String,
    pub options: GetOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Fail with [`StoreError::AlreadyExists`] if the key exists.
    pub if_none_match: bool,
}

/// The most keys one `delete_many` takes: S3's limit for DeleteObjects.
pub const MAX_KEYS_PER_DELETE: usize = 1000;

/// One key of a `delete_many`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub key: String,
    /// Delete only if the object's ETag is this one (quoted or not); `None` deletes whatever is
    /// there.
    pub if_match: Option<String>,
}

impl DeleteRequest {
    pub fn new(key: impl Into<String>) -> Self {
        Self { key: key.into(), if_match: None }
    }

    pub fn if_match(key: impl Into<String>, etag: impl Into<String>) -> Self {
        Self { key: key.into(), if_match: Some(etag.into()) }
    }
}

/// What a GET's response showed about the object besides its bytes: what lets the tag step
/// tag it with one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenAtRead {
    /// How many tags the object carried (S3's `x-amz-tagging-count`, whose absence means none);
    /// `None` when the store does not say (the local directory).
    pub tag_count: Option<u32>,
    /// The version read, in a bucket with versioning (S3's `x-amz-version-id`).
    pub version_id: Option<String>,
}

/// One object of an `add_tag_many`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRequest {
    pub key: String,
    /// Tag only if the object's ETag is this one (quoted or not).
    pub if_match: Option<String>,
    /// What the GET that read this object showed, when the caller kept it. An object seen with
    /// no tags of its own is tagged with one request, setting the tag set to the one tag (on
    /// the version read, when there is one), without reading its ETag or tags again: see
    /// [`ObjectStore::add_tag_many`] for the window that leaves.
    pub seen: Option<SeenAtRead>,
}

impl TagRequest {
    /// A request that reads the object's ETag and tags before tagging it.
    pub fn new(key: impl Into<String>, if_match: Option<String>) -> Self {
        Self { key: key.into(), if_match, seen: None }
    }
}

/// What `add_tag_many` found and did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOutcome {
    Tagged,
    /// It carried the tag already.
    AlreadyTagged,
    /// No such object.
    Gone,
    /// Its ETag is not the one asked for: left alone.
    Changed,
    /// It carries S3's maximum of ten tags, none with the tag's key: left alone rather than
    /// drop one of them.
    TagLimit,
}

/// S3's most tags on one object.
pub const MAX_TAGS_PER_OBJECT: usize = 10;

/// The tag set `existing` becomes with `tag` added, replacing only a tag of the same key; or
/// why it stays as it is.
pub fn with_tag_added(mut existing: Vec<Tag>, tag: &Tag) -> Result<Vec<Tag>, TagOutcome> {
    if existing.iter().any(|existing_tag| existing_tag == tag) {
        return Err(TagOutcome::AlreadyTagged);
    }
    existing.retain(|existing_tag| existing_tag.key != tag.key);
    if existing.len() >= MAX_TAGS_PER_OBJECT {
        return Err(TagOutcome::TagLimit);
    }
    existing.push(tag.clone());
    Ok(existing)
}

/// Whether two ETags are the same, quoted or not.
pub fn same_etag(one: &str, other: &str) -> bool {
    one.trim_matches('"') == other.trim_matches('"')
}

/// Objects tagged at once by the default `add_tag_many`.
const TAG_CONCURRENCY: usize = 16;

/// A part of a multipart upload, as `complete_multipart` needs it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Pass as `start_after` for the next page; `None` when this was the last.
    pub next_start_after: Option<String>,
    /// Entries under the prefix that cannot be keys and so are not listed: files whose names
    /// are not UTF-8 on a local file system (an S3 key always is). Each is counted once in a
    /// listing, in the page that first read its directory; the adapter logs where they are.
    pub unlistable: u64,
}

/// The answer to a `get`: the object's metadata and a stream of its bytes.
pub struct GetResult {
    pub meta: ObjectMeta,
    /// The byte range the stream holds.
    pub range: Range<u64>,
    pub body: BoxStream<'static, Result<Bytes, StoreError>>,
    /// What the response said of the object's tags and version.
    pub seen: SeenAtRead,
}

impl fmt::Debug for GetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl GetResult {
    /// Collects the whole body.
    pub async fn bytes(mut self) -> Result<Bytes, StoreError> {
        let expected = (self.range.end - self.range.start) as usize;
        let mut buffer = BytesMut::with_capacity(expected);
        while let Some(chunk) = self.body.next().await {
            buffer.extend_from_slice(&chunk?);
        }
        Ok(buffer.freeze())
    }
}

/// Errors callers act on. Each carries the bucket and key it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("object s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    #[error("bucket {bucket:?} does not exist: create it, or check the bucket name in the configuration")]
    NoSuchBucket { bucket: String },
    #[error("object s3://{bucket}/{key} changed since it was recorded (its ETag no longer matches)")]
    PreconditionFailed { bucket: String, key: String },
    #[error("object s3://{bucket}/{key} already exists")]
    AlreadyExists { bucket: String, key: String },
    #[error("multipart upload {upload_id} of s3://{bucket}/{key} does not exist (completed or aborted)")]
    NoSuchUpload { bucket: String, key: String, upload_id: String },
    #[error("invalid request for s3://{bucket}/{key}: {message}")]
    InvalidRequest { bucket: String, key: String, message: String },
    #[error("access to s3://{bucket}/{key} denied: {message}")]
    AccessDenied { bucket: String, key: String, message: String },
    #[error("object store failed on s3://{bucket}/{key}: {source}")]
    Backend {
        bucket: String,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl StoreError {
    pub fn backend(
        bucket: impl Into<String>,
        key: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        StoreError::Backend { bucket: bucket.into(), key: key.into(), source: source.into() }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// The object store port. Buckets are named per call: the source and destination may differ.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// A short name for logs: `local-dir`, `s3`.
    fn name(&self) -> &'static str;

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError>;

    async fn get(&self, bucket: &str, key: &str, options: GetOptions) -> Result<GetResult, StoreError>;

    /// How many small objects this store opens best in one `get_many`. The default, 1, is for
    /// stores where every GET is a request of its own (S3): callers then GET objects one by
    /// one, many at once.
    fn get_batch_size(&self) -> usize {
        1
    }

    /// Opens objects of one bucket as `get` opens each: one answer per request, in order, each
    /// failing on its own. Cheaper than the GETs one by one only where `get_batch_size` is above
    /// 1 (the local directory opens, and reads small objects whole, in one blocking-pool hop);
    /// the default GETs them one after the other.
    async fn get_many(&self, bucket: &str, requests: &[GetRequest]) -> Vec<Result<GetResult, StoreError>> {
        get_one_by_one(self, bucket, requests).await
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes, options: PutOptions) -> Result<ObjectMeta, StoreError>;

    /// Starts a multipart upload and returns its id.
    async fn create_multipart(&self, bucket: &str, key: &str) -> Result<String, StoreError>;

    /// Uploads part `part_number` (1-based). Every part but the last must be at least 5 MiB on
    /// S3; adapters that have no such limit still accept the same calls.
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, StoreError>;

    /// Makes part `part_number` a server-side copy of `range` (or all) of another object, read
    /// only if its ETag is `source_if_match` when given.
    #[allow(clippy::too_many_arguments)]
    async fn upload_part_copy(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source_bucket: &str,
        source_key: &str,
        range: Option<Range<u64>>,
        source_if_match: Option<&str>,
    ) -> Result<CompletedPart, StoreError>;

    /// Assembles the parts, in part-number order, into the object.
    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, StoreError>;

    async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError>;

    /// Keys under `prefix` after `start_after`, at most `max_keys` of them, in key order.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError>;

    async fn get_tags(&self, bucket: &str, key: &str) -> Result<Vec<Tag>, StoreError>;

    /// Replaces the object's whole tag set, as S3's PutObjectTagging does.
    async fn put_tags(&self, bucket: &str, key: &str, tags: &[Tag]) -> Result<(), StoreError>;

    /// Replaces the tag set of one version of the object (PutObjectTagging with `versionId`):
    /// [`StoreError::NotFound`] when that version is gone. Only called with a version a GET of
    /// this store named; a store without versions (the local directory) names none, and its
    /// default refuses the call.
    async fn put_version_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        tags: &[Tag],
    ) -> Result<(), StoreError> {
        let _ = tags;
        Err(StoreError::InvalidRequest {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            message: format!(
                "this store ({}) has no object versions, so none can be tagged ({version_id})",
                self.name()
            ),
        })
    }

    /// Removes all of the object's tags (S3's DeleteObjectTagging, which is free); succeeds
    /// when the object has none. The default puts an empty tag set.
    async fn delete_tags(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.put_tags(bucket, key, &[]).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError>;

    /// Deletes up to [`MAX_KEYS_PER_DELETE`] keys of one bucket, in one request where the
    /// backend has one (S3's DeleteObjects). Returns one outcome per request, in order: `Ok`
    /// when the key is gone (deleted now, or already absent), `Err` with what went wrong for
    /// that key alone ([`StoreError::PreconditionFailed`] when `if_match` no longer matches).
    /// The call itself fails only when nothing could be attempted: more than
    /// [`MAX_KEYS_PER_DELETE`] keys ([`StoreError::InvalidRequest`]), a missing bucket, a
    /// refused or failed request.
    async fn delete_many(
        &self,
        bucket: &str,
        requests: &[DeleteRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;

    /// Adds `tag` to each object's tags, keeping its other tags (see [`with_tag_added`]), unless
    /// its ETag is not `if_match`. Returns one outcome per request, in order.
    ///
    /// S3 has no batch tagging, so the default tags each object on its own, a few at a time.
    /// An object whose request says it was seen with no tags (`seen.tag_count == Some(0)`)
    /// costs one PutObjectTagging, setting the one tag, on the version read when the bucket has
    /// versions: that request is the whole cost of tag mode per source. Any other object is
    /// read first: HEAD (the ETag), GetObjectTagging, then PutObjectTagging with the tag merged
    /// in. PutObjectTagging takes no If-Match: on the version read nothing else can be tagged,
    /// but without a version an overwrite after the GET (or the HEAD) gets the tag. The seal
    /// makes that harmless (README, "Tag mode: the overwrite window"). A store that can do the
    /// whole batch at once (the local directory: one blocking-pool hop) overrides this.
    async fn add_tag_many(
        &self,
        bucket: &str,
        requests: &[TagRequest],
        tag: &Tag,
    ) -> Vec<Result<TagOutcome, StoreError>> {
        add_tag_one_by_one(self, bucket, requests, tag).await
    }
}

/// `get_many`'s default: each object by `get`, one after the other. Public for wrappers that
/// take this path on purpose (`testkit::forwarding`).
pub async fn get_one_by_one<S: ObjectStore + ?Sized>(
    store: &S,
    bucket: &str,
    requests: &[GetRequest],
) -> Vec<Result<GetResult, StoreError>> {
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        answers.push(store.get(bucket, &request.key, request.options.clone()).await);
    }
    answers
}

/// `add_tag_many`'s default: HEAD, GetObjectTagging and PutObjectTagging per object, a few
/// objects at a time. Public for wrappers that take this path on purpose.
pub async fn add_tag_one_by_one<S: ObjectStore + ?Sized>(
    store: &S,
    bucket: &str,
    requests: &[TagRequest],
    tag: &Tag,
) -> Vec<Result<TagOutcome, StoreError>> {
    // The futures are made first: a closure inside the stream trips async_trait's bounds.
    let pending: Vec<_> = requests.iter().map(|request| add_tag(store, bucket, request, tag)).collect();
    futures::stream::iter(pending).buffered(TAG_CONCURRENCY).collect().await
}

/// `add_tag_many`'s default, for one object.
async fn add_tag<S: ObjectStore + ?Sized>(
    store: &S,
    bucket: &str,
    request: &TagRequest,
    tag: &Tag,
) -> Result<TagOutcome, StoreError> {
    if let Some(SeenAtRead { tag_count: Some(0), version_id }) = &request.seen {
        // Seen without tags: the tag set becomes the one tag, with nothing of the object's own
        // to keep, so neither its ETag nor its tags are read again.
        let tags = std::slice::from_ref(tag);
        let answer = match version_id {
            Some(version_id) => store.put_version_tags(bucket, &request.key, version_id, tags).await,
            None => store.put_tags(bucket, &request.key, tags).await,
        };
        return match answer {
            Ok(()) => Ok(TagOutcome::Tagged),
            Err(StoreError::NotFound { .. }) => Ok(TagOutcome::Gone),
            Err(error) => Err(error),
        };
    }
    let meta = match store.head(bucket, &request.key).await {
        Ok(meta) => meta,
        Err(StoreError::NotFound { .. }) => return Ok(TagOutcome::Gone),
        Err(error) => return Err(error),
    };
    if let (Some(expected), Some(current)) = (&request.if_match, &meta.etag) {
        if !same_etag(expected, current) {
            return Ok(TagOutcome::Changed);
        }
    }
    let existing = match store.get_tags(bucket, &request.key).await {
        Ok(existing) => existing,
        Err(StoreError::NotFound { .. }) => return Ok(TagOutcome::Gone),
        Err(error) => return Err(error),
    };
    let tags = match with_tag_added(existing, tag) {
        Ok(tags) => tags,
        Err(outcome) => return Ok(outcome),
    };
    match store.put_tags(bucket, &request.key, &tags).await {
        Ok(()) => Ok(TagOutcome::Tagged),
        Err(StoreError::NotFound { .. }) => Ok(TagOutcome::Gone),
        Err(error) => Err(error),
    }
}

/// Takes `tag` off the object, keeping its other tags: GetObjectTagging, then, only when the
/// object carries the tag, PutObjectTagging with the others or DeleteObjectTagging when none
/// is left. Returns whether the tag was there. A missing object has no tag to remove.
pub async fn remove_tag<S: ObjectStore + ?Sized>(
    store: &S,
    bucket: &str,
    key: &str,
    tag: &Tag,
) -> Result<bool, StoreError> {
    let existing = match store.get_tags(bucket, key).await {
        Ok(existing) => existing,
        Err(StoreError::NotFound { .. }) => return Ok(false),
        Err(error) => return Err(error),
    };
    if !existing.contains(tag) {
        return Ok(false);
    }
    let others: Vec<Tag> = existing.into_iter().filter(|existing_tag| existing_tag != tag).collect();
    let removed = if others.is_empty() {
        store.delete_tags(bucket, key).await
    } else {
        store.put_tags(bucket, key, &others).await
    };
    match removed {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(true),
        Err(error) => Err(error),
    }
}
