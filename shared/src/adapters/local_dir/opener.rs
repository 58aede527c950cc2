//! Opening the objects of one batch (`get_many`, `add_tag_many`) for reading.
//!
//! A profile of the seal of 100,000 tiny objects (issue 16) put a sixth of its time in opening
//! them, twice each (the read, then the tag after the commit): a `stat` of the bucket's
//! directory for every object, and the kernel walking the whole path (root, bucket, every
//! segment of the key) for every open. A batch checks its bucket once, and opens each file with
//! `openat` on its directory's descriptor, kept while consecutive keys share that directory
//! (the seal's come in key order, a partition's in one directory): one segment walked a file.
//!
//! The two opens a source costs stay two: the tag may only be set once the output is
//! committed, and keeping each source's file open from its read until then would hold as many
//! descriptors as an output has sources (hundreds of thousands of tiny ones).

use std::os::fd::OwnedFd;

use rustix::fs::{openat, Mode, OFlags};

use super::*;

/// Opens the objects of one bucket as [`LocalDir::open_object`] does: the same checks, the
/// same errors, the metadata of the opened file itself.
pub(super) struct ObjectOpener<'a> {
    store: &'a LocalDir,
    bucket: &'a str,
    /// False for a single object: one `open` of the whole path is then the cheapest.
    reuse_directories: bool,
    /// The bucket's directory, once it was found to be one.
    bucket_directory: Option<PathBuf>,
    /// The directory of the last key opened: its key prefix (with the trailing `/`, empty for
    /// the bucket's own directory) and its descriptor.
    directory: Option<(String, OwnedFd)>,
}

impl<'a> ObjectOpener<'a> {
    /// For the keys of one batch, in any order (a run of keys in one directory costs least).
    pub(super) fn batch(store: &'a LocalDir, bucket: &'a str) -> Self {
        Self { store, bucket, reuse_directories: true, bucket_directory: None, directory: None }
    }

    /// For one object.
    pub(super) fn single(store: &'a LocalDir, bucket: &'a str) -> Self {
        Self { reuse_directories: false, ..Self::batch(store, bucket) }
    }

    pub(super) fn bucket(&self) -> &'a str {
        self.bucket
    }

    pub(super) fn open(&mut self, key: &str) -> Result<(File, Metadata), StoreError> {
        if !self.reuse_directories {
            return self.store.open_object(self.bucket, key);
        }
        validate_key(self.bucket, key)?;
        let bucket_directory = match &self.bucket_directory {
            Some(directory) => directory,
            None => self.bucket_directory.insert(self.store.existing_bucket_directory(self.bucket)?),
        };
        // Keys never end with '/' (validated), so the name is never empty.
        let (prefix, name) = match key.rfind('/') {
            Some(slash) => key.split_at(slash + 1),
            None => ("", key),
        };
        let cached = matches!(&self.directory, Some((cached_prefix, _)) if cached_prefix == prefix);
        if !cached {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            self.directory = match rustix::fs::open(bucket_directory.join(prefix), flags, Mode::empty()) {
                Ok(descriptor) => Some((prefix.to_owned(), descriptor)),
                // No such directory, or not one: the whole path gives the error a single open
                // gives (not found, or a backend error).
                Err(_) => return self.store.open_object(self.bucket, key),
            };
        }
        let Some((_, directory)) = &self.directory else {
            return self.store.open_object(self.bucket, key);
        };
        let file = match open_for_reading(directory, name) {
            Ok(descriptor) => File::from(descriptor),
            // The directory may have been removed (and made again) since it was opened: the
            // whole path answers for what is there now.
            Err(errno) if is_absent_object_error(&io::Error::from(errno)) => {
                self.directory = None;
                return self.store.open_object(self.bucket, key);
            }
            Err(errno) => return Err(read_error(self.bucket, key, errno.into())),
        };
        let metadata = file.metadata().map_err(|error| StoreError::backend(self.bucket, key, error))?;
        // A directory opens fine on Unix, but it is a prefix of other keys, not an object.
        if !metadata.is_file() {
            return Err(StoreError::NotFound { bucket: self.bucket.to_owned(), key: key.to_owned() });
        }
        Ok((file, metadata))
    }
}

/// Opens a file of `directory` to read, without updating its access time where the kernel
/// allows it (Linux, a file of this user's): the first read of a file written since its last
/// read would otherwise dirty its inode, a write to disk for each of a million tiny sources
/// (2.4% of the seal's samples in a profile), for a time no store reader looks at. S3 has none.
fn open_for_reading(directory: &OwnedFd, name: &str) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    match openat(directory, name, flags | OFlags::NOATIME, Mode::empty()) {
        // Only the file's owner (or a privileged process) may ask for no access time.
        Err(rustix::io::Errno::PERM) => {}
        other => return other,
    }
    openat(directory, name, flags, Mode::empty())
}
