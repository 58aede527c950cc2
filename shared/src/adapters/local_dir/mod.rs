//! A local directory as an object store (the embedded backend).
//!
//! [`LocalDir`] exists so the compactor can be tried, tested and demonstrated without an AWS
//! account or a server: the engine, the CLI and the test suite run against a directory on disk
//! with the same [`ObjectStore`] guarantees as S3. It is not meant to hold production data.
//!
//! ```no_run
//! # async fn run() -> Result<(), compactor::ports::StoreError> {
//! use bytes::Bytes;
//! use compactor::adapters::local_dir::LocalDir;
//! use compactor::ports::{GetOptions, ObjectStore, PutOptions};
//!
//! let store = LocalDir::open("./data/buckets")?;
//! store.create_bucket("my-logs")?;
//! store.put("my-logs", "logs/2024/01/14/a.json", Bytes::from_static(b"{}\n"), PutOptions::default()).await?;
//! let bytes = store.get("my-logs", "logs/2024/01/14/a.json", GetOptions::default()).await?.bytes().await?;
//! assert_eq!(&bytes[..], b"{}\n");
//! # Ok(()) }
//! ```
//!
//! # Layout on disk
//! ```text
//! root/
//!   <bucket>/<key>            one file per object; `/` in a key makes directories
//!   .staging/<owner>/         temporary files of one open store, renamed into place once
//!                             complete; .staging/<owner>.lock is locked while it lives
//!   .uploads/<upload-id>/     one directory per multipart upload: upload.json, part-00001, ...
//!   .tags/<bucket>/<hash>.json  where the file system has no extended attributes: the tag
//!                             set of one object, named by the sha256 of its key
//! ```
//! Nothing of the adapter's own lives inside a bucket directory, so no key segment is reserved
//! and a listing never has to skip hidden files. Bucket names starting with `.` are refused:
//! they would collide with the adapter's directories.
//!
//! Writes go to a temporary file in `.staging/` (on the same filesystem as the buckets, so the
//! final `rename` is atomic) and are renamed into place: a reader sees the old object or the new
//! one, never part of one. An open reader keeps reading the bytes it started with even if the
//! object is replaced meanwhile.
//!
//! # How it differs from S3
//! - **No fsync.** Objects are not flushed to disk one by one; after a power loss the last
//!   writes may be missing (never partial). That is the trade-off of a backend for trying,
//!   testing and demos: fsync per object would make every seal several times slower.
//! - **No 5 MiB part minimum.** Multipart parts may have any size; the 10,000-part limit and
//!   ascending part order in `complete_multipart` are enforced as on S3.
//! - **ETags** are not MD5 digests: they are `<inode>-<mtime nanos>-<size>` in hex, without
//!   quotes, read from file metadata so they cost no read of the bytes. They change whenever an
//!   object is rewritten: a new file, whose mtime the adapter sets from the nanosecond clock.
//!   `if_match` accepts them with or without quotes. Part ETags have the same form.
//! - **Tags** live in an extended attribute of the object's file (`user.s3-compactor.tags`, JSON),
//!   so they belong to that file: a put or completed upload makes a new file, without tags, as
//!   S3 makes a new object version; a delete takes them along; setting them is one system call
//!   with no file to create. Where the file system refuses extended attributes (`open` tries
//!   once), they live in sidecar JSON files under `.tags/` instead, cleared by every put,
//!   completed upload and delete of the key. Sidecars cost a file creation and a rename per
//!   tagging: the seal tags every source, and on ext4 that made tagging most of its time.
//! - **`delete_many` is a loop**, one key after the other, and its `if_match` is a check
//!   followed by the delete, not one atomic step as on S3: a concurrent writer of the same key
//!   could slip in between.
//! - **No versioning**, no storage classes, no lifecycle: `delete` removes the file, and an
//!   upload that is never completed nor aborted stays in `.uploads/` until removed by hand.
//!   Each open store writes its temporary files into a directory of its own under
//!   `.staging/`, next to a lock file it holds (`flock`) while it lives: the next `open` removes
//!   the directories whose lock nobody holds, what a killed process left.
//! - **Keys are paths.** A key cannot be both an object and a prefix of other keys (`a` and
//!   `a/b`), and keys with empty, `.` or `..` segments, a leading `/`, a trailing `/` (folder
//!   markers), NUL, or a segment over 255 bytes are refused with [`StoreError::InvalidRequest`].
//! - **Listing walks the directory tree** of the bucket, pruning directories outside the prefix
//!   and before `start_after`. A directory is read and sorted whole, once per listing: its
//!   sorted names are kept between pages while it is unchanged (see `local_dir/listing.rs`),
//!   so listing a million files of one directory takes seconds, and memory for its names
//!   (about 28 MB). `max_keys` is not capped at 1,000.
//! - Unix only in practice: the inode in the ETag and the atomic no-replace link assume it.

mod listing;
mod multipart;
mod opener;
mod reads;
mod store;
mod tagging;
#[cfg(test)]
mod tests;
mod writes;

use self::opener::ObjectOpener;
use self::store::run_blocking;
use self::tagging::extended_attributes;
use self::writes::{stamp_modified_time, StagedFile};

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::MAX_PARTS;
use crate::ports::object_store::{
    with_tag_added, CompletedPart, DeleteRequest, GetOptions, GetRequest, GetResult, ListPage, ObjectMeta, ObjectStore,
    PutOptions, SeenAtRead, StoreError, Tag, TagOutcome, TagRequest, MAX_KEYS_PER_DELETE, MAX_TAGS_PER_OBJECT,
};

/// Temporary files, renamed into place when complete. Outside the buckets so that a listing
/// never sees them and a key can never collide with one.
const STAGING_DIRECTORY_NAME: &str = ".staging";
/// One directory per multipart upload.
const UPLOADS_DIRECTORY_NAME: &str = ".uploads";
/// Tag sidecars, one directory per bucket.
const TAGS_DIRECTORY_NAME: &str = ".tags";
/// What a multipart upload directory records about its target.
const UPLOAD_RECORD_FILE_NAME: &str = "upload.json";

/// Bytes per chunk of a `get` body: large enough that a chunk costs little next to its
/// `spawn_blocking` hop, small enough that many concurrent reads stay within a few MiB each.
const GET_CHUNK_NUM_BYTES: usize = 512 * 1024;
/// Objects opened in one `get_many` hop: enough that the hop costs little per object, few
/// enough that the caller starts on the first of them soon.
const GET_BATCH_SIZE: usize = 64;
/// S3's limits, kept so that what works locally works on S3.
const MAX_KEY_NUM_BYTES: usize = 1024;
const MAX_TAG_KEY_NUM_CHARS: usize = 128;
const MAX_TAG_VALUE_NUM_CHARS: usize = 256;
/// Most file systems refuse longer file names (`NAME_MAX`).
const MAX_KEY_SEGMENT_NUM_BYTES: usize = 255;
/// Staging entries older than this are left by a crashed writer: no write takes that long.
const ABANDONED_STAGING_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
/// How often a write retries when a concurrent `delete` removed the parent directory it had
/// just created (delete prunes empty directories).
const PARENT_DIRECTORY_RACE_ATTEMPTS: usize = 5;

/// The embedded object store: one directory per bucket below `root`. Cheap to clone: clones
/// share the same root.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: Arc<PathBuf>,
    tag_storage: TagStorage,
    staging_owner: Arc<StagingOwner>,
    /// Directories sorted for listings in progress, kept between pages.
    listings: Arc<listing::ListingCache>,
}

/// This store's own directory under `.staging/`, and the lock that says it is alive: an
/// exclusive `flock` on `.staging/<id>.lock`, held as long as the store (a killed process
/// loses it with its file descriptors), so the next `open` knows which staging directories
/// belong to no live writer and removes them at once.
#[derive(Debug)]
struct StagingOwner {
    directory: PathBuf,
    _lock: File,
}

/// The file name suffix of a staging owner's lock.
const STAGING_LOCK_SUFFIX: &str = ".lock";

/// Where tag sets are kept, decided once by [`LocalDir::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagStorage {
    /// An extended attribute of the object's own file: one system call to read or write, and
    /// gone with the file.
    ExtendedAttribute,
    /// A JSON file per tagged object under `.tags/`: for file systems without extended
    /// attributes.
    Sidecar,
}

impl LocalDir {
    /// Opens (creating it if absent) a root directory of buckets.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalDir, StoreError> {
        let root = root.as_ref().to_path_buf();
        for directory in [
            root.clone(),
            root.join(STAGING_DIRECTORY_NAME),
            root.join(UPLOADS_DIRECTORY_NAME),
            root.join(TAGS_DIRECTORY_NAME),
        ] {
            fs::create_dir_all(&directory).map_err(|error| {
                StoreError::backend(
                    "",
                    "",
                    format!(
                        "cannot create directory {}: {error}; check the path and its permissions",
                        directory.display()
                    ),
                )
            })?;
        }
        let tag_storage = if extended_attributes::supported(&root.join(STAGING_DIRECTORY_NAME)) {
            TagStorage::ExtendedAttribute
        } else {
            TagStorage::Sidecar
        };
        let staging_owner = StagingOwner::create(&root.join(STAGING_DIRECTORY_NAME))?;
        let store = LocalDir {
            root: Arc::new(root),
            tag_storage,
            staging_owner: Arc::new(staging_owner),
            listings: Default::default(),
        };
        store.remove_abandoned_staging_entries();
        Ok(store)
    }

    /// Like [`open`](Self::open), with tags always in sidecar files: what a file system without
    /// extended attributes gets, for tests of that path on one that has them.
    pub fn open_with_sidecar_tags(root: impl AsRef<Path>) -> Result<LocalDir, StoreError> {
        Ok(LocalDir { tag_storage: TagStorage::Sidecar, ..LocalDir::open(root)? })
    }

    /// Where this store keeps tag sets.
    pub fn tag_storage(&self) -> TagStorage {
        self.tag_storage
    }

    /// Removes what crashed writers left in the staging directory: at once, the directory of
    /// every owner whose lock nobody holds (its process is gone); after
    /// [`ABANDONED_STAGING_AGE`], anything else (left by a release without owner directories).
    /// A live owner's directory is never touched. Best effort: litter is harmless, so failures
    /// are logged.
    fn remove_abandoned_staging_entries(&self) {
        let staging_root = self.root.join(STAGING_DIRECTORY_NAME);
        let Ok(staging_entries) = fs::read_dir(&staging_root) else {
            return;
        };
        let remove = |path: &Path| {
            let removal = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
            match removal {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove an abandoned staging entry")
                }
            }
        };
        let mut live_owners: std::collections::HashSet<std::ffi::OsString> = Default::default();
        let mut others = Vec::new();
        for staging_entry in staging_entries.flatten() {
            let name = staging_entry.file_name();
            let Some(owner) = name.to_str().and_then(|name| name.strip_suffix(STAGING_LOCK_SUFFIX)) else {
                others.push(staging_entry);
                continue;
            };
            let lock_path = staging_entry.path();
            let Ok(lock) = File::open(&lock_path) else {
                continue;
            };
            let owner_gone = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
            if owner_gone {
                remove(&staging_root.join(owner));
                remove(&lock_path);
            } else {
                live_owners.insert(std::ffi::OsString::from(owner));
            }
        }
        for staging_entry in others {
            if live_owners.contains(&staging_entry.file_name()) {
                continue;
            }
            let abandoned = staging_entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age >= ABANDONED_STAGING_AGE);
            if abandoned {
                remove(&staging_entry.path());
            }
        }
    }

    /// The root directory this store was opened on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a bucket (a directory below the root); succeeds if it exists already.
    ///
    /// Synchronous on purpose: it is set-up, called once before the store is used (from `main`,
    /// the CLI or a test), and a single `mkdir` does not need a blocking-pool hop.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        validate_bucket_name(bucket)?;
        let bucket_directory = self.root.join(bucket);
        fs::create_dir_all(&bucket_directory).map_err(|error| StoreError::backend(bucket, "", error))?;
        fs::create_dir_all(self.tags_directory(bucket)).map_err(|error| StoreError::backend(bucket, "", error))
    }

    /// This store's own staging directory (see [`StagingOwner`]).
    fn staging_directory(&self) -> PathBuf {
        self.staging_owner.directory.clone()
    }

    fn upload_directory(&self, upload_id: &str) -> PathBuf {
        self.root.join(UPLOADS_DIRECTORY_NAME).join(upload_id)
    }

    fn tags_directory(&self, bucket: &str) -> PathBuf {
        self.root.join(TAGS_DIRECTORY_NAME).join(bucket)
    }

    /// A flat file named by the key's hash rather than a tree parallel to the bucket: in a
    /// parallel tree the sidecar `a.json` of key `a` would collide with the directory of key
    /// `a.json/b`, and long keys would exceed file-name limits.
    fn tags_sidecar_path(&self, bucket: &str, key: &str) -> PathBuf {
        let key_hash = hex::encode(Sha256::digest(key.as_bytes()));
        self.tags_directory(bucket).join(format!("{key_hash}.json"))
    }

    /// The bucket's directory, or `NoSuchBucket`.
    fn existing_bucket_directory(&self, bucket: &str) -> Result<PathBuf, StoreError> {
        validate_bucket_name(bucket)?;
        let bucket_directory = self.root.join(bucket);
        match fs::metadata(&bucket_directory) {
            Ok(metadata) if metadata.is_dir() => Ok(bucket_directory),
            Ok(_) => Err(StoreError::NoSuchBucket { bucket: bucket.to_owned() }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NoSuchBucket { bucket: bucket.to_owned() })
            }
            Err(error) => Err(StoreError::backend(bucket, "", error)),
        }
    }

    /// The path of an object, after checking the key and that the bucket exists.
    fn object_path(&self, bucket: &str, key: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        validate_key(bucket, key)?;
        let bucket_directory = self.existing_bucket_directory(bucket)?;
        let object_path = bucket_directory.join(key);
        Ok((bucket_directory, object_path))
    }

    /// Opens an object for reading, with the metadata of the opened file itself (so the ETag
    /// checked is the one of the bytes read, even if the key is replaced meanwhile).
    fn open_object(&self, bucket: &str, key: &str) -> Result<(File, Metadata), StoreError> {
        let (_, object_path) = self.object_path(bucket, key)?;
        let file = File::open(&object_path).map_err(|error| read_error(bucket, key, error))?;
        let metadata = file.metadata().map_err(|error| StoreError::backend(bucket, key, error))?;
        // A directory opens fine on Unix, but it is a prefix of other keys, not an object.
        if !metadata.is_file() {
            return Err(StoreError::NotFound { bucket: bucket.to_owned(), key: key.to_owned() });
        }
        Ok((file, metadata))
    }
}

fn object_meta(key: &str, metadata: &Metadata) -> ObjectMeta {
    ObjectMeta {
        key: key.to_owned(),
        size: metadata.len(),
        etag: Some(etag_of(metadata)),
        last_modified: metadata.modified().ok().map(DateTime::<Utc>::from),
    }
}

/// `<inode>-<mtime nanos>-<size>` in hex, as arrow-rs object_store's local store does: free to
/// compute, and different for every rewrite because a rewrite is a new file (a new inode while
/// both exist, and a new mtime).
fn etag_of(metadata: &Metadata) -> String {
    let modified_nanos = metadata
        .modified()
        .ok()
        .and_then(|modified| modified.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    // Written digit by digit, not by `format!`: the seal computes it twice a source (its read
    // and its tag), and the formatting machinery for a u128 was 2% of the instructions of the
    // seal of 100,000 tiny objects (issue 16).
    let mut etag = String::with_capacity(64);
    push_hex(&mut etag, inode_of(metadata).into());
    etag.push('-');
    push_hex(&mut etag, modified_nanos);
    etag.push('-');
    push_hex(&mut etag, metadata.len().into());
    etag
}

/// Appends `value` in lowercase hex without leading zeros, as `{:x}` writes it.
fn push_hex(out: &mut String, mut value: u128) {
    let mut digits = [0u8; 32];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    out.extend(digits[start..].iter().map(|&digit| char::from(digit)));
}

#[cfg(unix)]
fn inode_of(metadata: &Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(metadata)
}

#[cfg(not(unix))]
fn inode_of(_metadata: &Metadata) -> u64 {
    0
}

/// Compares ETags ignoring surrounding quotes: S3 returns them quoted in headers and bare in
/// events, and callers pass either back.
fn etags_match(expected_etag: &str, actual_etag: Option<&str>) -> bool {
    actual_etag.is_some_and(|actual_etag| expected_etag.trim_matches('"') == actual_etag.trim_matches('"'))
}

fn invalid_request(bucket: &str, key: &str, message: impl Into<String>) -> StoreError {
    StoreError::InvalidRequest { bucket: bucket.to_owned(), key: key.to_owned(), message: message.into() }
}

/// A read that finds no file, or finds a file where the key needs a directory (`a/b` when `a`
/// is an object), found no object.
fn is_absent_object_error(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

fn read_error(bucket: &str, key: &str, error: io::Error) -> StoreError {
    if is_absent_object_error(&error) {
        StoreError::NotFound { bucket: bucket.to_owned(), key: key.to_owned() }
    } else {
        StoreError::backend(bucket, key, error)
    }
}

fn validate_bucket_name(bucket: &str) -> Result<(), StoreError> {
    let problem = if bucket.is_empty() {
        Some("the bucket name is empty")
    } else if bucket.starts_with('.') {
        Some(
            "bucket names starting with '.' are reserved for the adapter's own directories (.staging, .uploads, .tags)",
        )
    } else if bucket.contains(['/', '\\', '\0']) {
        Some("a bucket name cannot contain '/', '\\' or NUL: it is one directory name")
    } else if bucket.len() > MAX_KEY_SEGMENT_NUM_BYTES {
        Some("the bucket name is longer than 255 bytes, too long for a directory name")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(invalid_request(bucket, "", format!("invalid bucket name {bucket:?}: {problem}"))),
        None => Ok(()),
    }
}

/// Refuses keys that cannot be stored as a path below the bucket without escaping it or
/// aliasing another key.
fn validate_key(bucket: &str, key: &str) -> Result<(), StoreError> {
    // One pass over the key for the usual answer; the checks below only say what is wrong.
    // (The seal validates every source's key twice, its read and its tag: they were 2% of
    // the instructions of the seal of 100,000 tiny objects, issue 16.)
    if key_is_storable(key) {
        return Ok(());
    }
    let problem = if key.is_empty() {
        "the key is empty".to_owned()
    } else if key.len() > MAX_KEY_NUM_BYTES {
        format!("the key is {} bytes long, over S3's limit of {MAX_KEY_NUM_BYTES}", key.len())
    } else if key.contains('\0') {
        "the key contains NUL, which no file name can hold".to_owned()
    } else if key.starts_with('/') {
        "the key starts with '/', which would make it an absolute path: remove the leading '/'".to_owned()
    } else if key.ends_with('/') {
        "the key ends with '/' (a folder marker), which a local directory cannot store as a file".to_owned()
    } else if let Some(segment) =
        key.split('/').find(|segment| segment.is_empty() || *segment == "." || *segment == "..")
    {
        if segment.is_empty() {
            "the key has an empty segment ('//'), which a path cannot hold".to_owned()
        } else {
            format!("the key has a {segment:?} segment, which would resolve to another path")
        }
    } else if key.split('/').any(|segment| segment.len() > MAX_KEY_SEGMENT_NUM_BYTES) {
        format!("a segment between '/' is longer than {MAX_KEY_SEGMENT_NUM_BYTES} bytes, too long for a file name")
    } else {
        return Ok(());
    };
    Err(invalid_request(bucket, key, format!("key cannot be stored in a local directory: {problem}")))
}

/// What [`validate_key`] accepts: not empty, not too long, and every segment between '/' a
/// file name (not empty, not `.` or `..`, no NUL, not too long), so no leading or trailing '/'.
fn key_is_storable(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_NUM_BYTES
        && key.as_bytes().split(|&byte| byte == b'/').all(|segment| {
            !segment.is_empty()
                && segment != b"."
                && segment != b".."
                && segment.len() <= MAX_KEY_SEGMENT_NUM_BYTES
                && !segment.contains(&0)
        })
}
