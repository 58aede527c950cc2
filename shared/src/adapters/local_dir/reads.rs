//! Reads: `head`, and `get` opened (and small objects read whole) in one blocking-pool hop.

use super::*;

/// An object opened for a `get`.
pub(super) struct OpenedObject {
    meta: ObjectMeta,
    range: Range<u64>,
    body: OpenedBody,
    seen: SeenAtRead,
}

pub(super) enum OpenedBody {
    /// Read already: a small object or range.
    Whole(Bytes),
    /// To be read in chunks as the body is polled.
    File(File),
}

impl OpenedObject {
    pub(super) fn into_get_result(self, bucket: &str, key: &str) -> GetResult {
        let body = match self.body {
            OpenedBody::Whole(bytes) if bytes.is_empty() => futures::stream::empty().boxed(),
            OpenedBody::Whole(bytes) => futures::stream::once(async move { Ok(bytes) }).boxed(),
            OpenedBody::File(file) => {
                read_in_chunks(file, self.range.end - self.range.start, bucket.to_owned(), key.to_owned())
            }
        };
        GetResult { meta: self.meta, range: self.range, body, seen: self.seen }
    }
}

impl LocalDir {
    pub(super) fn head_blocking(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let (_, object_path) = self.object_path(bucket, key)?;
        let metadata = fs::metadata(&object_path).map_err(|error| read_error(bucket, key, error))?;
        if !metadata.is_file() {
            return Err(StoreError::NotFound { bucket: bucket.to_owned(), key: key.to_owned() });
        }
        Ok(object_meta(key, &metadata))
    }

    pub(super) fn open_for_get(
        &self,
        opener: &mut ObjectOpener<'_>,
        key: &str,
        options: &GetOptions,
    ) -> Result<(File, ObjectMeta, Range<u64>), StoreError> {
        let bucket = opener.bucket();
        let (mut file, metadata) = opener.open(key)?;
        let meta = object_meta(key, &metadata);
        if let Some(expected_etag) = &options.if_match {
            if !etags_match(expected_etag, meta.etag.as_deref()) {
                return Err(StoreError::PreconditionFailed { bucket: bucket.to_owned(), key: key.to_owned() });
            }
        }
        let range = clamp_range(bucket, key, options.range.clone(), meta.size)?;
        if range.start > 0 {
            file.seek(SeekFrom::Start(range.start)).map_err(|error| StoreError::backend(bucket, key, error))?;
        }
        Ok((file, meta, range))
    }

    /// Opens an object as `get` does. Most objects are small: those are read whole in the same
    /// blocking-pool hop as the open, which halves the hops (and thread wake-ups) of a seal.
    /// Its tags are counted as S3's `x-amz-tagging-count` counts them, from the open file (one
    /// `fgetxattr`), so that the seal takes S3's one-request tag path on this store too.
    pub(super) fn open_and_read_small(
        &self,
        opener: &mut ObjectOpener<'_>,
        key: &str,
        options: &GetOptions,
    ) -> Result<OpenedObject, StoreError> {
        let bucket = opener.bucket();
        let (mut file, meta, range) = self.open_for_get(opener, key, options)?;
        let tag_count = self.tags_of_open_object(&file, bucket, key)?.len();
        let seen = SeenAtRead { tag_count: Some(tag_count as u32), version_id: None };
        let body = match usize::try_from(range.end - range.start) {
            Ok(num_bytes) if num_bytes <= GET_CHUNK_NUM_BYTES => {
                OpenedBody::Whole(read_chunk(&mut file, num_bytes, bucket, key)?)
            }
            _ => OpenedBody::File(file),
        };
        Ok(OpenedObject { meta, range, body, seen })
    }
}

/// The range a `get` returns: the requested one clamped to the object's end, or all of it.
pub(super) fn clamp_range(
    bucket: &str,
    key: &str,
    range: Option<Range<u64>>,
    object_num_bytes: u64,
) -> Result<Range<u64>, StoreError> {
    let Some(range) = range else {
        return Ok(0..object_num_bytes);
    };
    if range.start >= range.end {
        return Err(invalid_request(
            bucket,
            key,
            format!("range {}..{} is empty: ask for at least one byte, or for no range", range.start, range.end),
        ));
    }
    if range.start >= object_num_bytes {
        return Err(invalid_request(
            bucket,
            key,
            format!("range starts at byte {} but the object has {object_num_bytes} bytes", range.start),
        ));
    }
    Ok(range.start..range.end.min(object_num_bytes))
}

/// Streams `num_bytes` from the file's current position in chunks, each read on the blocking
/// pool, so that a large object never sits in memory whole.
pub(super) fn read_in_chunks(
    file: File,
    num_bytes: u64,
    bucket: String,
    key: String,
) -> BoxStream<'static, Result<Bytes, StoreError>> {
    futures::stream::try_unfold((file, num_bytes), move |(mut file, remaining_num_bytes)| {
        let (bucket, key) = (bucket.clone(), key.clone());
        async move {
            if remaining_num_bytes == 0 {
                return Ok(None);
            }
            let chunk_num_bytes = remaining_num_bytes.min(GET_CHUNK_NUM_BYTES as u64) as usize;
            let (error_bucket, error_key) = (bucket.clone(), key.clone());
            let (file, chunk) = run_blocking(&error_bucket, &error_key, move || {
                let chunk = read_chunk(&mut file, chunk_num_bytes, &bucket, &key)?;
                Ok((file, chunk))
            })
            .await?;
            Ok(Some((chunk, (file, remaining_num_bytes - chunk_num_bytes as u64))))
        }
    })
    .boxed()
}

pub(super) fn read_chunk(file: &mut File, num_bytes: usize, bucket: &str, key: &str) -> Result<Bytes, StoreError> {
    let mut chunk = vec![0; num_bytes];
    file.read_exact(&mut chunk).map_err(|error| {
        StoreError::backend(
            bucket,
            key,
            format!("reading the object failed ({error}); was it truncated in place rather than replaced through the store?"),
        )
    })?;
    Ok(Bytes::from(chunk))
}
