//! Tags: in an extended attribute of the object's file, or in sidecar files under `.tags/`.

use super::*;

/// What a tags sidecar holds. The key is kept so that a sidecar can be read by a human.
#[derive(Debug, Serialize, Deserialize)]
struct TagsSidecar {
    key: String,
    tags: Vec<Tag>,
}

impl LocalDir {
    /// Sidecar tags only: extended attributes go with their file.
    pub(super) fn remove_tags_sidecar(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        if self.tag_storage == TagStorage::ExtendedAttribute {
            return Ok(());
        }
        match fs::remove_file(self.tags_sidecar_path(bucket, key)) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StoreError::backend(bucket, key, error)),
        }
    }

    pub(super) fn get_tags_blocking(&self, bucket: &str, key: &str) -> Result<Vec<Tag>, StoreError> {
        let (file, _) = self.open_object(bucket, key)?;
        self.tags_of_open_object(&file, bucket, key)
    }

    pub(super) fn put_tags_blocking(&self, bucket: &str, key: &str, tags: &[Tag]) -> Result<(), StoreError> {
        validate_tags(bucket, key, tags)?;
        let (file, _) = self.open_object(bucket, key)?;
        self.set_tags_of_open_object(&file, bucket, key, tags)
    }

    /// The whole batch in one blocking-pool hop: each object is opened once, and its ETag,
    /// tags and new tags are read and written through that one open file.
    pub(super) fn add_tag_many_blocking(
        &self,
        bucket: &str,
        requests: &[TagRequest],
        tag: &Tag,
    ) -> Vec<Result<TagOutcome, StoreError>> {
        let mut opener = ObjectOpener::batch(self, bucket);
        requests.iter().map(|request| self.add_tag_blocking(&mut opener, request, tag)).collect()
    }

    pub(super) fn add_tag_blocking(
        &self,
        opener: &mut ObjectOpener<'_>,
        request: &TagRequest,
        tag: &Tag,
    ) -> Result<TagOutcome, StoreError> {
        let (bucket, key) = (opener.bucket(), request.key.as_str());
        validate_tags(bucket, key, std::slice::from_ref(tag))?;
        let (file, metadata) = match opener.open(key) {
            Ok(opened) => opened,
            Err(StoreError::NotFound { .. }) => return Ok(TagOutcome::Gone),
            Err(error) => return Err(error),
        };
        if let Some(expected_etag) = &request.if_match {
            if !etags_match(expected_etag, Some(&etag_of(&metadata))) {
                return Ok(TagOutcome::Changed);
            }
        }
        // Seen without tags when the seal read it (and still the bytes read: the ETag above),
        // the tag set becomes the one tag without reading the tags again, as S3's one-request
        // path does (`ObjectStore::add_tag_many`): one system call less a source.
        if let Some(SeenAtRead { tag_count: Some(0), .. }) = &request.seen {
            let tags = std::slice::from_ref(tag);
            return self.set_tags_of_open_object(&file, bucket, key, tags).map(|()| TagOutcome::Tagged);
        }
        match with_tag_added(self.tags_of_open_object(&file, bucket, key)?, tag) {
            Ok(tags) => self.set_tags_of_open_object(&file, bucket, key, &tags).map(|()| TagOutcome::Tagged),
            Err(outcome) => Ok(outcome),
        }
    }

    /// The tags of an object opened by the caller, who has so checked that it exists: a
    /// sidecar without its object is stale and means nothing.
    pub(super) fn tags_of_open_object(&self, file: &File, bucket: &str, key: &str) -> Result<Vec<Tag>, StoreError> {
        let tags_bytes = match self.tag_storage {
            TagStorage::ExtendedAttribute => {
                match extended_attributes::read_tags(file).map_err(|error| StoreError::backend(bucket, key, error))? {
                    Some(tags_bytes) => tags_bytes,
                    None => return Ok(Vec::new()),
                }
            }
            TagStorage::Sidecar => match fs::read(self.tags_sidecar_path(bucket, key)) {
                Ok(sidecar_bytes) => {
                    let sidecar: TagsSidecar = serde_json::from_slice(&sidecar_bytes).map_err(|error| {
                        StoreError::backend(
                            bucket,
                            key,
                            format!("tags sidecar is not valid JSON ({error}); delete it or put the tags again"),
                        )
                    })?;
                    return Ok(sidecar.tags);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(error) => return Err(StoreError::backend(bucket, key, error)),
            },
        };
        serde_json::from_slice(&tags_bytes).map_err(|error| {
            StoreError::backend(
                bucket,
                key,
                format!("the tags' extended attribute is not valid JSON ({error}); put the tags again"),
            )
        })
    }

    /// Replaces the tags of an object opened by the caller. An extended attribute is set on the
    /// open file itself, so the tags go to the object that was opened, even if the key was
    /// replaced meanwhile.
    pub(super) fn set_tags_of_open_object(
        &self,
        file: &File,
        bucket: &str,
        key: &str,
        tags: &[Tag],
    ) -> Result<(), StoreError> {
        match self.tag_storage {
            TagStorage::ExtendedAttribute => {
                let tags_bytes = serde_json::to_vec(tags).map_err(|error| StoreError::backend(bucket, key, error))?;
                extended_attributes::write_tags(file, &tags_bytes)
                    .map_err(|error| StoreError::backend(bucket, key, error))
            }
            TagStorage::Sidecar => {
                let sidecar = TagsSidecar { key: key.to_owned(), tags: tags.to_vec() };
                let sidecar_bytes =
                    serde_json::to_vec_pretty(&sidecar).map_err(|error| StoreError::backend(bucket, key, error))?;
                let (staged_file, _) = self.stage_bytes(bucket, key, &sidecar_bytes)?;
                let tags_directory = self.tags_directory(bucket);
                // The tags directory is made by `create_bucket`, but a bucket made by hand lacks it.
                fs::create_dir_all(&tags_directory).map_err(|error| StoreError::backend(bucket, key, error))?;
                fs::rename(staged_file.path(), self.tags_sidecar_path(bucket, key))
                    .map_err(|error| StoreError::backend(bucket, key, error))
            }
        }
    }
}

/// Tags in an extended attribute of the object's file, on Linux where the file system has them
/// (ext4, XFS, Btrfs; tmpfs since Linux 6.6).
#[cfg(target_os = "linux")]
pub(super) mod extended_attributes {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    use rustix::fs::{fgetxattr, fremovexattr, fsetxattr, XattrFlags};
    use rustix::io::Errno;

    const NAME: &str = "user.s3-compactor.tags";
    /// Enough for our one tag; a larger set is read after asking for its size.
    const FIRST_READ_NUM_BYTES: usize = 256;

    /// Whether files in `directory` take our attribute: sets and reads it on a new file there.
    pub fn supported(directory: &Path) -> bool {
        let probe_path = directory.join(format!("xattr-probe-{}.tmp", uuid::Uuid::new_v4()));
        let supported = File::create(&probe_path)
            .and_then(|file| {
                fsetxattr(&file, NAME, b"[]", XattrFlags::empty())?;
                read_tags(&file)
            })
            .is_ok_and(|value| value.as_deref() == Some(b"[]".as_slice()));
        let _ = std::fs::remove_file(&probe_path);
        supported
    }

    /// The attribute's bytes, or `None` when the file has no tags.
    pub fn read_tags(file: &File) -> io::Result<Option<Vec<u8>>> {
        let mut value = vec![0; FIRST_READ_NUM_BYTES];
        loop {
            match fgetxattr(file, NAME, &mut value[..]) {
                Ok(num_bytes) => {
                    value.truncate(num_bytes);
                    return Ok(Some(value));
                }
                Err(errno) if errno == Errno::NODATA => return Ok(None),
                // Larger than the buffer: ask its size (an empty buffer), and read again; it
                // may have grown in between, hence the loop.
                Err(errno) if errno == Errno::RANGE => {
                    let num_bytes: usize = fgetxattr(file, NAME, &mut [0u8; 0][..])?;
                    value.resize(num_bytes.max(value.len() * 2), 0);
                }
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Replaces the file's tags; an empty set removes the attribute.
    pub fn write_tags(file: &File, value: &[u8]) -> io::Result<()> {
        if value == b"[]" {
            return match fremovexattr(file, NAME) {
                Ok(()) => Ok(()),
                Err(errno) if errno == Errno::NODATA => Ok(()),
                Err(errno) => Err(errno.into()),
            };
        }
        fsetxattr(file, NAME, value, XattrFlags::empty()).map_err(io::Error::from)
    }
}

/// Elsewhere there are no extended attributes: tags go to sidecar files.
#[cfg(not(target_os = "linux"))]
pub(super) mod extended_attributes {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    pub fn supported(_directory: &Path) -> bool {
        false
    }

    pub fn read_tags(_file: &File) -> io::Result<Option<Vec<u8>>> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub fn write_tags(_file: &File, _value: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

pub(super) fn validate_tags(bucket: &str, key: &str, tags: &[Tag]) -> Result<(), StoreError> {
    if tags.len() > MAX_TAGS_PER_OBJECT {
        return Err(invalid_request(
            bucket,
            key,
            format!(
                "{} tags given but S3 allows at most {MAX_TAGS_PER_OBJECT} per object: merge or drop some",
                tags.len()
            ),
        ));
    }
    for (index, tag) in tags.iter().enumerate() {
        if tag.key.is_empty() || tag.key.chars().count() > MAX_TAG_KEY_NUM_CHARS {
            return Err(invalid_request(
                bucket,
                key,
                format!("tag key {:?} must have 1 to {MAX_TAG_KEY_NUM_CHARS} characters", tag.key),
            ));
        }
        if tag.value.chars().count() > MAX_TAG_VALUE_NUM_CHARS {
            return Err(invalid_request(
                bucket,
                key,
                format!("the value of tag {:?} is longer than {MAX_TAG_VALUE_NUM_CHARS} characters", tag.key),
            ));
        }
        if tags[..index].iter().any(|earlier_tag| earlier_tag.key == tag.key) {
            return Err(invalid_request(
                bucket,
                key,
                format!("tag key {:?} is given twice: a tag set has unique keys", tag.key),
            ));
        }
    }
    Ok(())
}
