//! Amazon S3 (or any S3-compatible endpoint) as an object store.
//!
//! [`AmazonS3`] is the production adapter of [`ObjectStore`]: the engine reads sources, writes
//! outputs by multipart upload and tags sources for expiry through it. It adds no behaviour of
//! its own — no caching, no retries beyond the SDK's — it maps each port method to one S3
//! request (two for `complete_multipart`) and S3's errors to [`StoreError`] variants callers
//! act on.
//!
//! ```no_run
//! # async fn run() -> Result<(), compactor::ports::StoreError> {
//! use bytes::Bytes;
//! use compactor::adapters::s3::{client_for, AmazonS3, S3Options};
//! use compactor::ports::{GetOptions, ObjectStore, PutOptions};
//!
//! // Region, credentials and endpoint come from the usual AWS configuration (environment,
//! // profiles, instance or Lambda role); `None` keeps the standard endpoint.
//! let client = client_for(None, false).await;
//! let store = AmazonS3::new(client, S3Options::default());
//! store.put("my-logs", "logs/2024/01/14/a.json", Bytes::from_static(b"{}\n"), PutOptions::default()).await?;
//! let bytes = store.get("my-logs", "logs/2024/01/14/a.json", GetOptions::default()).await?.bytes().await?;
//! assert_eq!(&bytes[..], b"{}\n");
//! # Ok(()) }
//! ```
//!
//! # Requests and their cost class
//! S3 bills requests per class: class A (PUT, COPY, POST, LIST) costs about 12× class B (GET,
//! HEAD and the rest); DELETE and aborting an upload are free. The seal's bill is dominated by
//! one GET per source and, in tag mode, one PutObjectTagging per source without tags of its
//! own (the default `add_tag_many`; a source with tags adds a HEAD and a GetObjectTagging).
//!
//! | port method | S3 request | class | IAM action |
//! |---|---|---|---|
//! | `head` | HeadObject | B | `s3:GetObject` |
//! | `get` | GetObject (`Range: bytes=a-b`, `If-Match`; answers `x-amz-tagging-count` and `x-amz-version-id` as [`SeenAtRead`]) | B | `s3:GetObject` |
//! | `put` | PutObject (`If-None-Match: *` when create-only) | A | `s3:PutObject` |
//! | `create_multipart` | CreateMultipartUpload | A | `s3:PutObject` |
//! | `upload_part` | UploadPart | A | `s3:PutObject` |
//! | `upload_part_copy` | UploadPartCopy (`x-amz-copy-source-range`, `-if-match`) | A | `s3:PutObject`, `s3:GetObject` on the source |
//! | `complete_multipart` | CompleteMultipartUpload, then HeadObject for the size | A + B | `s3:PutObject`, `s3:GetObject` |
//! | `abort_multipart` | AbortMultipartUpload | free | `s3:AbortMultipartUpload` |
//! | `list` | ListObjectsV2 (`prefix`, `start-after`, `max-keys` ≤ 1,000) | A | `s3:ListBucket` |
//! | `get_tags` | GetObjectTagging | B | `s3:GetObjectTagging` |
//! | `put_tags` | PutObjectTagging | A | `s3:PutObjectTagging` |
//! | `put_version_tags` | PutObjectTagging (`versionId`) | A | `s3:PutObjectVersionTagging` |
//! | `delete_tags` | DeleteObjectTagging | free | `s3:DeleteObjectTagging` |
//! | `delete` | DeleteObject | free | `s3:DeleteObject` |
//! | `delete_many` | DeleteObjects (Quiet, up to 1,000 keys, `ETag` per key when `if_match`) | free | `s3:DeleteObject`, and `s3:GetObject` for the conditional ones |
//!
//! With [`S3Options::sse_kms_key_id`], PutObject and CreateMultipartUpload also need
//! `kms:GenerateDataKey` on the key, and reading those outputs back needs `kms:Decrypt`.
//! With [`S3Options::expected_bucket_owner`], every request carries `x-amz-expected-bucket-owner`
//! (UploadPartCopy also `x-amz-source-expected-bucket-owner`): a bucket name that was deleted
//! and re-created in another account is refused with 403 instead of read or written.
//!
//! # DeleteObjects
//! One request per batch, in Quiet mode: S3 answers only the keys it could not delete, each
//! with its own code, which `delete_many` maps like a request's error (`PreconditionFailed`
//! when the key's `ETag` no longer matches, `AccessDenied`, …; `NoSuchKey` is success: nothing
//! is left to delete). A conditional delete of a key already gone is answered `NoSuchKey` by
//! S3 (general purpose buckets), SeaweedFS and ministack, as success by directory buckets and
//! some servers, and `PreconditionFailed` by others (older ministack; SeaweedFS's single-key
//! DeleteObject): a key refused with `PreconditionFailed` is looked up with one HeadObject,
//! and counts as deleted if it is gone. A key the answer names but the request did not fails the whole call:
//! the answer cannot be trusted, and every delete is safe to send again. S3 requires an
//! integrity checksum on this request (Content-MD5 or an `x-amz-checksum-*` header); the SDK
//! adds a CRC32 one, which S3 and the S3-compatible servers we test against accept.
//!
//! # ETags
//! ETags are returned **as S3 returns them, quoted** (`"9b2cf535f27731c974343645a3985328"`),
//! by `head`, `get`, `put`, `list`, `upload_part` and `complete_multipart` alike, so the value one
//! returns can be compared with another's. `if_match` and `source_if_match` accept them quoted
//! or not: S3 event notifications carry ETags without quotes, and S3 matches `If-Match` only on
//! the quoted form, so a bare ETag is quoted before it is sent.
//!
//! # Errors
//! The SDK's typed variants are matched first (`NoSuchKey`, `NotFound`, `NoSuchUpload`,
//! `NoSuchBucket`), then the error code and HTTP status: 404 `NoSuchBucket` → `NoSuchBucket`,
//! other 404 → `NotFound`, 412 → `PreconditionFailed` (`AlreadyExists` for a create-only put),
//! 403 → `AccessDenied` naming the IAM action that is likely missing, 416 and 400s about the
//! request itself (`InvalidPart`, `InvalidRange`, `InvalidTag`, `EntityTooSmall`, …) →
//! `InvalidRequest`; anything else, including throttling that outlasted the retries, →
//! `Backend` with the S3 code and message.
//!
//! # How it differs from the local directory
//! - Every multipart part but the last must be at least 5 MiB; an object holds at most 10 tags
//!   (`put_tags` passes more through and S3 refuses them with `InvalidRequest`).
//! - `put` returns no `last_modified`: PutObject's response does not carry it, and a `head` to
//!   learn it would double the cost of every put.
//! - `head` cannot tell a missing bucket from a missing key (a HEAD response has no body to
//!   carry the error code): both are `NotFound`. Every other method reports `NoSuchBucket`.
//! - A caller without `s3:ListBucket` gets 403 instead of 404 for a missing key: S3 hides
//!   whether the key exists. That is `AccessDenied`, whose message says so.

mod errors;
mod store;
mod tagging;
#[cfg(test)]
mod tests;

pub use self::errors::S3RequestFailed;
use self::errors::{delete_objects_key_outcome, error_facts, RequestTarget, S3Operation};
use self::tagging::seen_at_read;

use std::error::Error as StdError;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::BehaviorVersion;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{self as s3_types, ServerSideEncryption};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::ports::object_store::{
    CompletedPart, DeleteRequest, GetOptions, GetResult, ListPage, ObjectMeta, ObjectStore, PutOptions, SeenAtRead,
    StoreError, Tag, MAX_KEYS_PER_DELETE,
};

/// Attempts per request, the first included. The SDK's default of 3 gives up within about a
/// second of backoff; S3 asks clients to back off on 503 SlowDown while a prefix scales up,
/// which takes longer, and a seal run would rather wait than fail a whole output.
pub const MAX_ATTEMPTS_PER_REQUEST: u32 = 8;

/// ListObjectsV2 returns at most this many keys per page, whatever `max-keys` asks for.
const MAX_KEYS_PER_LIST_PAGE: usize = 1000;

/// How often a create-only put is retried on `409 ConditionalRequestConflict`: S3 answers that
/// when another conditional write to the key is in flight, and asks for a retry, which then
/// sees the winner (412) or finds the key free. The SDK does not retry 409 by itself.
const CONDITIONAL_CONFLICT_ATTEMPTS: u32 = 5;
const CONDITIONAL_CONFLICT_BACKOFF: Duration = Duration::from_millis(50);

/// What `x-amz-copy-source` must percent-encode: everything but unreserved characters and the
/// `/` between bucket and key (and within the key), as the SDK's UploadPartCopy docs ask.
const COPY_SOURCE_ENCODE_SET: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// Options of the S3 adapter beyond the client's own configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// The account every bucket must belong to (`x-amz-expected-bucket-owner` on every
    /// request): a request to a bucket of another account fails with 403 instead of reading or
    /// writing it.
    pub expected_bucket_owner: Option<String>,
    /// Encrypt outputs (PutObject and CreateMultipartUpload) with SSE-KMS under this key id or
    /// ARN; `None` leaves the bucket's default encryption.
    pub sse_kms_key_id: Option<String>,
}

/// The S3 adapter. Cheap to clone: the SDK client is a handle to shared connection pools.
#[derive(Debug, Clone)]
pub struct AmazonS3 {
    client: Client,
    options: S3Options,
}

/// A client from the standard AWS configuration (environment, profiles, web identity, IMDS or
/// the Lambda role; `AWS_REGION`; `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_S3`), with
/// `endpoint_url` overriding the endpoint when given, path-style addressing when
/// `force_path_style` (most S3-compatible servers need it), and the standard retry mode with
/// [`MAX_ATTEMPTS_PER_REQUEST`] attempts so throttling (503 SlowDown) backs off instead of
/// failing.
pub async fn client_for(endpoint_url: Option<&str>, force_path_style: bool) -> Client {
    let shared_config = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry_config()).load().await;
    client_from_shared_config(&shared_config, endpoint_url, force_path_style)
}

/// [`client_for`] on a configuration already loaded, for callers that set credentials or the
/// region themselves (tests, a CLI flag).
pub fn client_from_shared_config(
    shared_config: &aws_config::SdkConfig,
    endpoint_url: Option<&str>,
    force_path_style: bool,
) -> Client {
    let mut s3_config = aws_sdk_s3::config::Builder::from(shared_config).force_path_style(force_path_style);
    if shared_config.retry_config().is_none() {
        s3_config = s3_config.retry_config(retry_config());
    }
    if let Some(endpoint_url) = endpoint_url {
        s3_config = s3_config.endpoint_url(endpoint_url);
    }
    Client::from_conf(s3_config.build())
}

/// Standard retry mode (exponential backoff with jitter, a client-side token bucket that slows
/// down under throttling) with more attempts than the SDK's default.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS_PER_REQUEST)
}

impl AmazonS3 {
    pub fn new(client: Client, options: S3Options) -> Self {
        AmazonS3 { client, options }
    }

    /// The SDK client, for set-up the port does not cover (creating buckets in tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn options(&self) -> &S3Options {
        &self.options
    }

    /// HeadObject, pinned to `if_match` when given: [`ObjectStore::head`], and the size of an
    /// upload just completed.
    async fn head_object(&self, bucket: &str, key: &str, if_match: Option<&str>) -> Result<ObjectMeta, StoreError> {
        let target = RequestTarget::new(S3Operation::HeadObject, bucket, key);
        let output = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_if_match(if_match.map(quoted_etag))
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| match error.as_service_error() {
                Some(HeadObjectError::NotFound(_)) => target.not_found(),
                _ => self.store_error(error, target),
            })?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: object_size(target, output.content_length())?,
            etag: output.e_tag().map(str::to_owned),
            last_modified: chrono_time(output.last_modified()),
        })
    }

    fn expected_bucket_owner(&self) -> Option<String> {
        self.options.expected_bucket_owner.clone()
    }
}

/// An ETag as `If-Match` needs it: quoted. S3 event notifications carry it bare, HeadObject
/// and ListObjectsV2 quoted; S3 compares the header with the quoted form.
pub fn quoted_etag(etag: &str) -> String {
    let is_quoted = etag.len() >= 2 && etag.starts_with('"') && etag.ends_with('"');
    if is_quoted || etag.starts_with("W/") {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

/// `Range: bytes=a-b` for the half-open `[start, end)`: HTTP ranges are inclusive.
fn http_range(target: RequestTarget<'_>, range: &Range<u64>) -> Result<String, StoreError> {
    if range.start >= range.end {
        // S3 ignores a range it cannot parse and sends the whole object: refuse it here.
        return Err(target.invalid_request(format!(
            "range {}..{} is empty: ask for at least one byte, or for no range",
            range.start, range.end
        )));
    }
    Ok(format!("bytes={}-{}", range.start, range.end - 1))
}

/// Parses `Content-Range: bytes 900-999/1000` into the half-open range returned and the whole
/// object's size (`None` when the server sends `*`).
fn parse_content_range(content_range: &str) -> Option<(Range<u64>, Option<u64>)> {
    let (range_text, size_text) = content_range.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (first_text, last_text) = range_text.split_once('-')?;
    let first: u64 = first_text.trim().parse().ok()?;
    let last: u64 = last_text.trim().parse().ok()?;
    if last < first {
        return None;
    }
    let size = match size_text.trim() {
        "*" => None,
        size_text => Some(size_text.parse().ok()?),
    };
    Some((first..last + 1, size))
}

fn chrono_time(time: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<DateTime<Utc>> {
    time.and_then(|time| DateTime::from_timestamp(time.secs(), time.subsec_nanos()))
}

fn object_size(target: RequestTarget<'_>, content_length: Option<i64>) -> Result<u64, StoreError> {
    content_length
        .and_then(|content_length| u64::try_from(content_length).ok())
        .ok_or_else(|| target.backend("the response has no Content-Length: the endpoint is not behaving like S3"))
}

fn part_number_for_s3(target: RequestTarget<'_>, part_number: u32) -> Result<i32, StoreError> {
    match i32::try_from(part_number) {
        Ok(part_number) if part_number >= 1 => Ok(part_number),
        _ => Err(target.invalid_request(format!("part number {part_number} is not between 1 and 10,000"))),
    }
}
