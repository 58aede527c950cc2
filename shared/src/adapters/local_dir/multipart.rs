//! Multipart uploads: one directory per upload under `.uploads/`, assembled on completion.

use super::*;

/// What `.uploads/<id>/upload.json` holds: the target the upload was created for, so that a
/// part or completion for another key is refused as S3 refuses it.
#[derive(Debug, Serialize, Deserialize)]
struct UploadRecord {
    bucket: String,
    key: String,
}

impl LocalDir {
    pub(super) fn create_multipart_blocking(&self, bucket: &str, key: &str) -> Result<String, StoreError> {
        self.object_path(bucket, key)?;
        let upload_id = uuid::Uuid::new_v4().to_string();
        // Build the upload directory in staging and rename it into `.uploads`: an upload is
        // either absent or complete with its record, never a directory without one.
        let staged_upload_directory = self.staging_directory().join(format!("upload-{upload_id}"));
        let record = UploadRecord { bucket: bucket.to_owned(), key: key.to_owned() };
        let record_bytes =
            serde_json::to_vec_pretty(&record).map_err(|error| StoreError::backend(bucket, key, error))?;
        let build_upload_directory = || -> io::Result<()> {
            fs::create_dir(&staged_upload_directory)?;
            fs::write(staged_upload_directory.join(UPLOAD_RECORD_FILE_NAME), &record_bytes)?;
            fs::rename(&staged_upload_directory, self.upload_directory(&upload_id))
        };
        if let Err(error) = build_upload_directory() {
            let _ = fs::remove_dir_all(&staged_upload_directory);
            return Err(StoreError::backend(bucket, key, error));
        }
        Ok(upload_id)
    }

    /// The upload's directory, or `NoSuchUpload` when the id is unknown (completed, aborted,
    /// never created, or created for another key).
    pub(super) fn existing_upload_directory(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<PathBuf, StoreError> {
        let no_such_upload = || StoreError::NoSuchUpload {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
        };
        // Only ids this adapter made are looked up: anything else could be a path.
        if uuid::Uuid::parse_str(upload_id).is_err() {
            return Err(no_such_upload());
        }
        let upload_directory = self.upload_directory(upload_id);
        let record_bytes = match fs::read(upload_directory.join(UPLOAD_RECORD_FILE_NAME)) {
            Ok(record_bytes) => record_bytes,
            Err(error) if is_absent_object_error(&error) => return Err(no_such_upload()),
            Err(error) => return Err(StoreError::backend(bucket, key, error)),
        };
        let record: UploadRecord =
            serde_json::from_slice(&record_bytes).map_err(|error| StoreError::backend(bucket, key, error))?;
        if record.bucket != bucket || record.key != key {
            return Err(no_such_upload());
        }
        Ok(upload_directory)
    }

    /// Moves a staged part into its upload, replacing an earlier part of the same number.
    pub(super) fn publish_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        staged_file: StagedFile,
        metadata: &Metadata,
    ) -> Result<CompletedPart, StoreError> {
        let upload_directory = self.existing_upload_directory(bucket, key, upload_id)?;
        match fs::rename(staged_file.path(), upload_directory.join(part_file_name(part_number))) {
            Ok(()) => Ok(CompletedPart { part_number, etag: etag_of(metadata) }),
            // Aborted or completed between the check and the rename.
            Err(error) if error.kind() == io::ErrorKind::NotFound => Err(StoreError::NoSuchUpload {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                upload_id: upload_id.to_owned(),
            }),
            Err(error) => Err(StoreError::backend(bucket, key, error)),
        }
    }

    pub(super) fn upload_part_blocking(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &[u8],
    ) -> Result<CompletedPart, StoreError> {
        self.object_path(bucket, key)?;
        validate_part_number(bucket, key, part_number)?;
        self.existing_upload_directory(bucket, key, upload_id)?;
        let (staged_file, metadata) = self.stage_bytes(bucket, key, body)?;
        self.publish_part(bucket, key, upload_id, part_number, staged_file, &metadata)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn upload_part_copy_blocking(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source_bucket: &str,
        source_key: &str,
        range: Option<Range<u64>>,
        source_if_match: Option<&str>,
    ) -> Result<CompletedPart, StoreError> {
        self.object_path(bucket, key)?;
        validate_part_number(bucket, key, part_number)?;
        self.existing_upload_directory(bucket, key, upload_id)?;
        let get_options = GetOptions { range, if_match: source_if_match.map(str::to_owned) };
        let (source_file, _, source_range) =
            self.open_for_get(&mut ObjectOpener::single(self, source_bucket), source_key, &get_options)?;
        let (staged_file, mut file) = StagedFile::create(&self.staging_directory(), bucket, key)?;
        let expected_num_bytes = source_range.end - source_range.start;
        // `io::copy` between files uses copy_file_range on Linux: no bytes pass through us.
        let copied_num_bytes = io::copy(&mut source_file.take(expected_num_bytes), &mut file)
            .map_err(|error| StoreError::backend(source_bucket, source_key, error))?;
        if copied_num_bytes != expected_num_bytes {
            return Err(StoreError::backend(
                source_bucket,
                source_key,
                format!("the object was truncated in place while being copied ({copied_num_bytes} of {expected_num_bytes} bytes); objects must only be replaced through the store"),
            ));
        }
        let metadata = stamp_modified_time(&file, bucket, key)?;
        self.publish_part(bucket, key, upload_id, part_number, staged_file, &metadata)
    }

    pub(super) fn complete_multipart_blocking(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, StoreError> {
        self.object_path(bucket, key)?;
        let upload_directory = self.existing_upload_directory(bucket, key, upload_id)?;
        if parts.is_empty() {
            return Err(invalid_request(
                bucket,
                key,
                "no parts listed: complete a multipart upload with at least one part",
            ));
        }
        for (previous_part, part) in parts.iter().zip(parts.iter().skip(1)) {
            if part.part_number <= previous_part.part_number {
                return Err(invalid_request(
                    bucket,
                    key,
                    format!(
                        "parts must be listed in ascending part-number order without repeats, as on S3, but part {} follows part {}",
                        part.part_number, previous_part.part_number
                    ),
                ));
            }
        }
        let (staged_file, mut file) = StagedFile::create(&self.staging_directory(), bucket, key)?;
        for part in parts {
            let part_path = upload_directory.join(part_file_name(part.part_number));
            let mut part_file = match File::open(&part_path) {
                Ok(part_file) => part_file,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    return Err(invalid_request(
                        bucket,
                        key,
                        format!(
                            "part {} was never uploaded to upload {upload_id}: upload it, or leave it out",
                            part.part_number
                        ),
                    ))
                }
                Err(error) => return Err(StoreError::backend(bucket, key, error)),
            };
            // The ETag of the opened file: a part replaced after this check is not the one read.
            let part_metadata = part_file.metadata().map_err(|error| StoreError::backend(bucket, key, error))?;
            if !etags_match(&part.etag, Some(&etag_of(&part_metadata))) {
                return Err(invalid_request(
                    bucket,
                    key,
                    format!(
                        "part {} has ETag {} but {} was listed: it was uploaded again since; list the ETag the last upload returned",
                        part.part_number,
                        etag_of(&part_metadata),
                        part.etag
                    ),
                ));
            }
            // `io::copy` between files uses copy_file_range on Linux: no bytes pass through us.
            io::copy(&mut part_file, &mut file).map_err(|error| StoreError::backend(bucket, key, error))?;
        }
        let metadata = stamp_modified_time(&file, bucket, key)?;
        drop(file);
        self.publish(bucket, key, staged_file, true)?;
        self.remove_upload_directory(bucket, key, &upload_directory)?;
        Ok(object_meta(key, &metadata))
    }

    pub(super) fn abort_multipart_blocking(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.existing_bucket_directory(bucket)?;
        match self.existing_upload_directory(bucket, key, upload_id) {
            Ok(upload_directory) => self.remove_upload_directory(bucket, key, &upload_directory),
            // Nothing left to abort: aborting is idempotent.
            Err(StoreError::NoSuchUpload { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Renames the upload directory into staging before deleting it, so that it disappears at
    /// once: a concurrent `upload_part` then fails with `NoSuchUpload` instead of racing
    /// `remove_dir_all` with a new part.
    pub(super) fn remove_upload_directory(
        &self,
        bucket: &str,
        key: &str,
        upload_directory: &Path,
    ) -> Result<(), StoreError> {
        let doomed_directory = self.staging_directory().join(format!("removed-upload-{}", uuid::Uuid::new_v4()));
        match fs::rename(upload_directory, &doomed_directory) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(StoreError::backend(bucket, key, error)),
        }
        fs::remove_dir_all(&doomed_directory).map_err(|error| StoreError::backend(bucket, key, error))
    }
}

pub(super) fn part_file_name(part_number: u32) -> String {
    format!("part-{part_number:05}")
}

pub(super) fn validate_part_number(bucket: &str, key: &str, part_number: u32) -> Result<(), StoreError> {
    if (1..=MAX_PARTS).contains(&part_number) {
        Ok(())
    } else {
        Err(invalid_request(bucket, key, format!("part number {part_number} is outside 1..={MAX_PARTS}, S3's range")))
    }
}
