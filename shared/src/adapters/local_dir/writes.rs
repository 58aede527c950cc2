//! Writes: staged files renamed into place, puts and deletes.

use super::*;

impl LocalDir {
    /// Writes `body` to a new file in the staging directory.
    pub(super) fn stage_bytes(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
    ) -> Result<(StagedFile, Metadata), StoreError> {
        let (staged_file, mut file) = StagedFile::create(&self.staging_directory(), bucket, key)?;
        file.write_all(body).map_err(|error| StoreError::backend(bucket, key, error))?;
        let metadata = stamp_modified_time(&file, bucket, key)?;
        Ok((staged_file, metadata))
    }

    /// Moves a staged file to `key`. With `replace_existing` false, fails with `AlreadyExists`
    /// when the key exists, race-free: `hard_link` refuses an existing target atomically, where
    /// checking first and renaming after would let two writers both win.
    pub(super) fn publish(
        &self,
        bucket: &str,
        key: &str,
        staged_file: StagedFile,
        replace_existing: bool,
    ) -> Result<(), StoreError> {
        let (bucket_directory, object_path) = self.object_path(bucket, key)?;
        let parent_directory = object_path.parent().expect("an object path is below its bucket directory");
        if replace_existing {
            // Clear the tags before the new bytes appear: a crash in between leaves the old
            // object without tags, never the new object with the old object's tags.
            self.remove_tags_sidecar(bucket, key)?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(error) = fs::create_dir_all(parent_directory) {
                return Err(explain_write_failure(&bucket_directory, bucket, key, error));
            }
            let outcome = if replace_existing {
                fs::rename(staged_file.path(), &object_path)
            } else {
                fs::hard_link(staged_file.path(), &object_path)
            };
            match outcome {
                Ok(()) => break,
                // A concurrent delete pruned the parent directory we just created: create it again.
                Err(error) if error.kind() == io::ErrorKind::NotFound && attempt < PARENT_DIRECTORY_RACE_ATTEMPTS => {
                    continue
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists && !replace_existing => {
                    if object_path.is_dir() {
                        return Err(explain_write_failure(&bucket_directory, bucket, key, error));
                    }
                    return Err(StoreError::AlreadyExists { bucket: bucket.to_owned(), key: key.to_owned() });
                }
                Err(error) => return Err(explain_write_failure(&bucket_directory, bucket, key, error)),
            }
        }
        if !replace_existing {
            // The key did not exist, so a sidecar can only be a stale one left by a crashed
            // delete; it must not be taken for this new object's tags.
            self.remove_tags_sidecar(bucket, key)?;
        }
        // After a rename the staged path is gone; after a link it must be removed.
        drop(staged_file);
        Ok(())
    }

    pub(super) fn put_blocking(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        options: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        self.object_path(bucket, key)?;
        let (staged_file, metadata) = self.stage_bytes(bucket, key, body)?;
        self.publish(bucket, key, staged_file, !options.if_none_match)?;
        // Rename and link keep the inode and mtime, so the staged file's metadata is the
        // object's, without a second stat that could see a later writer's object.
        Ok(object_meta(key, &metadata))
    }

    pub(super) fn delete_blocking(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (bucket_directory, object_path) = self.object_path(bucket, key)?;
        // Tags first: a crash in between leaves an untagged object rather than a sidecar that
        // a later object of the same key could be mistaken to own.
        self.remove_tags_sidecar(bucket, key)?;
        match fs::remove_file(&object_path) {
            Ok(()) => {}
            Err(error) if is_absent_object_error(&error) || object_path.is_dir() => return Ok(()),
            Err(error) => return Err(StoreError::backend(bucket, key, error)),
        }
        // Prune directories the delete left empty, so that a key can later be stored where
        // they were (`a` after `a/b` is gone). `remove_dir` refuses a non-empty directory, so a
        // concurrent writer's files are safe; the bucket directory itself is kept.
        let mut directory = object_path.parent();
        while let Some(current_directory) = directory {
            if current_directory == bucket_directory || fs::remove_dir(current_directory).is_err() {
                break;
            }
            directory = current_directory.parent();
        }
        Ok(())
    }

    /// Each key in turn; the bucket is checked once, first, so that a missing bucket fails the
    /// whole call as S3's DeleteObjects does.
    pub(super) fn delete_many_blocking(
        &self,
        bucket: &str,
        requests: &[DeleteRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if requests.len() > MAX_KEYS_PER_DELETE {
            return Err(invalid_request(
                bucket,
                &requests[0].key,
                format!("{} keys in one delete_many: send at most {MAX_KEYS_PER_DELETE}", requests.len()),
            ));
        }
        self.existing_bucket_directory(bucket)?;
        Ok(requests.iter().map(|request| self.delete_one_of_many(bucket, request)).collect())
    }

    pub(super) fn delete_one_of_many(&self, bucket: &str, request: &DeleteRequest) -> Result<(), StoreError> {
        if let Some(expected_etag) = &request.if_match {
            // Checked, then deleted: a writer of the same key in between could have its new
            // object deleted. S3 checks and deletes atomically; this backend has one writer per
            // key in practice (the seal holds the partition's lock, and sources are not
            // rewritten while they are sealed).
            match self.head_blocking(bucket, &request.key) {
                Ok(meta) if !etags_match(expected_etag, meta.etag.as_deref()) => {
                    return Err(StoreError::PreconditionFailed { bucket: bucket.to_owned(), key: request.key.clone() })
                }
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        self.delete_blocking(bucket, &request.key)
    }
}

impl StagingOwner {
    /// A new owner directory under `staging_root`, with its lock taken.
    pub(super) fn create(staging_root: &Path) -> Result<StagingOwner, StoreError> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let directory = staging_root.join(&owner);
        let lock_path = staging_root.join(format!("{owner}{STAGING_LOCK_SUFFIX}"));
        let failed = |error: std::io::Error| {
            StoreError::backend("", "", format!("cannot set up staging in {}: {error}", staging_root.display()))
        };
        let lock = fs::OpenOptions::new().write(true).create_new(true).open(&lock_path).map_err(failed)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|error| failed(error.into()))?;
        fs::create_dir(&directory).map_err(failed)?;
        Ok(StagingOwner { directory, _lock: lock })
    }
}

/// A temporary file in the staging directory, removed on drop unless it was renamed away
/// (then the removal finds nothing). Keeps failed writes from leaving litter behind.
pub(super) struct StagedFile {
    path: PathBuf,
}

impl StagedFile {
    pub(super) fn create(staging_directory: &Path, bucket: &str, key: &str) -> Result<(StagedFile, File), StoreError> {
        let path = staging_directory.join(format!("{}.tmp", uuid::Uuid::new_v4()));
        // `create_new`: a uuid never repeats, but never overwriting is cheaper to trust.
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|error| {
            StoreError::backend(
                bucket,
                key,
                format!("cannot create a temporary file in {}: {error}", staging_directory.display()),
            )
        })?;
        Ok((StagedFile { path }, file))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Explains why a write could not create a key: usually a key and a prefix colliding, which
/// S3 allows and a directory tree cannot.
pub(super) fn explain_write_failure(bucket_directory: &Path, bucket: &str, key: &str, error: io::Error) -> StoreError {
    let object_path = bucket_directory.join(key);
    if object_path.is_dir() {
        return invalid_request(
            bucket,
            key,
            format!("{key:?} is a prefix of other keys ({key}/...), and a local directory cannot hold an object there too: delete those keys or choose another key"),
        );
    }
    let mut ancestor_key = String::new();
    for segment in key.split('/').take(key.split('/').count() - 1) {
        if !ancestor_key.is_empty() {
            ancestor_key.push('/');
        }
        ancestor_key.push_str(segment);
        if bucket_directory.join(&ancestor_key).is_file() {
            return invalid_request(
                bucket,
                key,
                format!("object {ancestor_key:?} exists, and a local directory cannot hold keys below an object: delete it or choose another key"),
            );
        }
    }
    StoreError::backend(bucket, key, error)
}

/// Sets a written file's mtime to now, read from the system clock, and returns its metadata.
///
/// The kernel stamps writes from a coarse clock (one tick is several milliseconds on Linux),
/// and a freed inode number is soon reused: two rewrites of one key within a tick, the same
/// size, could otherwise repeat an earlier ETag and let a stale `if_match` pass. The system
/// clock has nanoseconds, so the ETag really changes with every write, for one more syscall.
pub(super) fn stamp_modified_time(file: &File, bucket: &str, key: &str) -> Result<Metadata, StoreError> {
    file.set_modified(std::time::SystemTime::now()).map_err(|error| StoreError::backend(bucket, key, error))?;
    file.metadata().map_err(|error| StoreError::backend(bucket, key, error))
}
