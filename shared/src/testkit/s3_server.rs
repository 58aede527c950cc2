//! The S3 test tier: a real S3-compatible server (SeaweedFS here, see `emulators.md`), a client
//! for it, and a fresh bucket per test.
//!
//! The tier runs when `COMPACTOR_TEST_S3_ENDPOINT` names the server's endpoint (for example
//! `http://127.0.0.1:8333`), which must accept the static credentials `test` / `testtesttest`
//! in region `us-east-1`, with path-style addressing. Without it each test prints `SKIPPED` and
//! passes, so a bare `cargo test` works anywhere; when `CI` is set a missing endpoint panics
//! instead, because CI always starts the server and a silently skipped tier would hide
//! regressions.
//!
//! ```ignore
//! let Some((store, bucket, _guard)) = amazon_s3_with_fresh_bucket().await else { return };
//! store.put(&bucket, "a", Bytes::from_static(b"x"), PutOptions::default()).await?;
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;

use crate::adapters::s3::{retry_config, AmazonS3, S3Options};

// One place names the tier's variables, credentials and skip rule: `testkit::servers`.
pub use super::servers::{s3_endpoint, S3_ENDPOINT_VARIABLE, TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY};

/// How long dropping a [`FreshBucket`] waits for its clean-up before giving up on it: a test
/// must not hang on a server that stopped answering, and a leftover bucket only costs space in
/// the server's temporary data directory.
const BUCKET_CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Conformance cases SeaweedFS fails, and why: gaps of the server, not of [`AmazonS3`] (S3
/// itself passes them). They are run anyway and must still fail; see
/// [`run_case_with_a_known_gap`](crate::testkit::store_conformance::run_case_with_a_known_gap).
/// Measured on SeaweedFS 4.48 (`weed mini`).
pub const SEAWEEDFS_GAPS: &[(&str, &str)] = &[
    (
        "list_returns_keys_in_byte_order",
        "SeaweedFS lists a directory tree, so `a/b` comes before `a-c` and `a.b`; S3 lists keys in UTF-8 byte order",
    ),
    (
        "list_starts_after_the_given_key",
        "SeaweedFS applies start-after to its directory walk, so after `a.b` it skips the keys under `a/`",
    ),
    (
        "multipart_with_a_stale_part_etag_is_refused",
        "SeaweedFS completes an upload without checking part ETags, so a replaced part's ETag is accepted; \
         S3 refuses it with InvalidPart",
    ),
];

/// The known gap of the test server for a conformance case, if any: [`SEAWEEDFS_GAPS`] when the
/// server says it is SeaweedFS (its `Server` header), none otherwise, so that against S3 or
/// another server every case must pass.
pub fn known_s3_server_gap(case: &str) -> Option<&'static str> {
    static SERVER_IS_SEAWEEDFS: OnceLock<bool> = OnceLock::new();
    let server_is_seaweedfs = *SERVER_IS_SEAWEEDFS.get_or_init(|| {
        std::env::var(S3_ENDPOINT_VARIABLE)
            .ok()
            .and_then(|endpoint| server_software(&endpoint))
            .is_some_and(|software| software.starts_with("SeaweedFS"))
    });
    if !server_is_seaweedfs {
        return None;
    }
    SEAWEEDFS_GAPS.iter().find(|(gap_case, _)| *gap_case == case).map(|(_, reason)| *reason)
}

/// The `Server` header of a plain-HTTP endpoint, from one raw unsigned `GET /` (refused, but
/// with the header; SeaweedFS answers `HEAD /` without it): the SDK does not expose
/// response headers of a successful call, and a test kit needs no HTTP client of its own.
fn server_software(endpoint: &str) -> Option<String> {
    let authority = endpoint.strip_prefix("http://")?.split('/').next()?;
    let mut stream = TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).ok()?;
    String::from_utf8_lossy(&response).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("server").then(|| value.trim().to_owned())
    })
}

/// A client for the test server, built from explicit settings only, so that a developer's
/// `~/.aws` profile or `AWS_*` variables cannot point the tests at a real account.
pub fn test_client(endpoint: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(TEST_REGION))
        .credentials_provider(Credentials::new(
            TEST_ACCESS_KEY_ID,
            TEST_SECRET_ACCESS_KEY,
            None,
            None,
            "compactor-test-server",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(retry_config())
        .build();
    Client::from_conf(config)
}

/// An [`AmazonS3`] on the test server with a new, empty bucket, and the guard that removes the
/// bucket when dropped; `None` when the tier is skipped (see [`s3_endpoint`]).
pub async fn amazon_s3_with_fresh_bucket() -> Option<(AmazonS3, String, FreshBucket)> {
    let endpoint = s3_endpoint()?;
    let client = test_client(&endpoint);
    let bucket = format!("compactor-test-{}", uuid::Uuid::new_v4().simple());
    client.create_bucket().bucket(&bucket).send().await.unwrap_or_else(|error| {
        panic!(
            "cannot create bucket {bucket} on {endpoint}: {}; is the server running and does it accept \
             {TEST_ACCESS_KEY_ID}/{TEST_SECRET_ACCESS_KEY}?",
            aws_sdk_s3::error::DisplayErrorContext(&error)
        )
    });
    let guard = FreshBucket { endpoint, bucket: bucket.clone() };
    Some((AmazonS3::new(client, S3Options::default()), bucket, guard))
}

/// Empties and deletes its bucket when dropped.
///
/// The clean-up runs on a thread of its own, with its own runtime and its own client: `Drop`
/// cannot `.await`, the test's runtime is busy running this very `drop`, and a pooled
/// connection of the test's client would need that runtime to make progress. It waits at most
/// [`BUCKET_CLEANUP_TIMEOUT`], then leaves the bucket behind with a warning.
#[derive(Debug)]
pub struct FreshBucket {
    endpoint: String,
    bucket: String,
}

impl FreshBucket {
    /// The guard of a bucket made another way (with notifications, say) on the server at
    /// `endpoint`: it empties and deletes the bucket when dropped.
    pub fn adopt(endpoint: &str, bucket: &str) -> FreshBucket {
        FreshBucket { endpoint: endpoint.to_owned(), bucket: bucket.to_owned() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

impl Drop for FreshBucket {
    fn drop(&mut self) {
        let (endpoint, bucket) = (self.endpoint.clone(), self.bucket.clone());
        let (done_sender, done_receiver) = mpsc::channel();
        let spawned = std::thread::Builder::new().name(format!("cleanup-{bucket}")).spawn(move || {
            let outcome = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(empty_and_delete_bucket(&endpoint, &bucket)),
                Err(error) => Err(format!("cannot start a runtime: {error}")),
            };
            let _ = done_sender.send(outcome);
        });
        if spawned.is_err() {
            eprintln!("warning: cannot start the clean-up of bucket {}; it is left behind", self.bucket);
            return;
        }
        match done_receiver.recv_timeout(BUCKET_CLEANUP_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("warning: bucket {} is left behind: {error}", self.bucket),
            Err(_) => eprintln!(
                "warning: bucket {} is left behind: its clean-up took more than {BUCKET_CLEANUP_TIMEOUT:?}",
                self.bucket
            ),
        }
    }
}

async fn empty_and_delete_bucket(endpoint: &str, bucket: &str) -> Result<(), String> {
    let client = test_client(endpoint);
    let describe = |error: &dyn std::error::Error| aws_sdk_s3::error::DisplayErrorContext(error).to_string();
    // Uploads first: a bucket with uploads in progress cannot be deleted on S3.
    let uploads = client.list_multipart_uploads().bucket(bucket).send().await.map_err(|error| describe(&error))?;
    for upload in uploads.uploads() {
        if let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) {
            let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send().await;
        }
    }
    // Bounded: a server that acknowledges deletes without deleting must not spin this forever.
    for _ in 0..100 {
        let page = client.list_objects_v2().bucket(bucket).send().await.map_err(|error| describe(&error))?;
        let identifiers: Vec<ObjectIdentifier> = page
            .contents()
            .iter()
            .filter_map(|object| object.key())
            .filter_map(|key| ObjectIdentifier::builder().key(key).build().ok())
            .collect();
        if identifiers.is_empty() {
            break;
        }
        let delete =
            Delete::builder().set_objects(Some(identifiers)).quiet(true).build().map_err(|error| describe(&error))?;
        client.delete_objects().bucket(bucket).delete(delete).send().await.map_err(|error| describe(&error))?;
        if !page.is_truncated().unwrap_or(false) {
            break;
        }
    }
    client.delete_bucket().bucket(bucket).send().await.map_err(|error| describe(&error))?;
    Ok(())
}
