//! The [`ObjectStore`] implementation: each call one hop to the blocking pool.

use super::*;

/// Runs blocking file I/O on tokio's blocking pool, so that a slow disk never stalls the
/// runtime's worker threads.
pub(super) async fn run_blocking<T, F>(bucket: &str, key: &str, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        // A panic is a bug in this adapter: let it surface as one.
        Err(join_error) if join_error.is_panic() => std::panic::resume_unwind(join_error.into_panic()),
        Err(join_error) => Err(StoreError::backend(bucket, key, join_error)),
    }
}

/// Runs a batch of per-key work in one blocking-pool hop. Each key fails on its own; only a
/// failure of the pool itself fails them all.
pub(super) async fn run_blocking_batch<T, F>(bucket: &str, keys: &[&str], work: F) -> Vec<Result<T, StoreError>>
where
    T: Send + 'static,
    F: FnOnce() -> Vec<Result<T, StoreError>> + Send + 'static,
{
    let first_key = keys.first().copied().unwrap_or_default();
    match run_blocking(bucket, first_key, move || Ok(work())).await {
        Ok(results) => results,
        Err(error) => {
            let message = error.to_string();
            keys.iter().map(|key| Err(StoreError::backend(bucket, *key, message.clone()))).collect()
        }
    }
}

#[async_trait]
impl ObjectStore for LocalDir {
    fn name(&self) -> &'static str {
        "local-dir"
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let (store, owned_bucket, owned_key) = (self.clone(), bucket.to_owned(), key.to_owned());
        run_blocking(bucket, key, move || store.head_blocking(&owned_bucket, &owned_key)).await
    }

    async fn get(&self, bucket: &str, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let (store, owned_bucket, owned_key) = (self.clone(), bucket.to_owned(), key.to_owned());
        let opened = run_blocking(bucket, key, move || {
            store.open_and_read_small(&mut ObjectOpener::single(&store, &owned_bucket), &owned_key, &options)
        })
        .await?;
        Ok(opened.into_get_result(bucket, key))
    }

    fn get_batch_size(&self) -> usize {
        GET_BATCH_SIZE
    }

    async fn get_many(&self, bucket: &str, requests: &[GetRequest]) -> Vec<Result<GetResult, StoreError>> {
        let (store, owned_bucket, owned_requests) = (self.clone(), bucket.to_owned(), requests.to_vec());
        let keys: Vec<&str> = requests.iter().map(|request| request.key.as_str()).collect();
        let opened = run_blocking_batch(bucket, &keys, move || {
            let mut opener = ObjectOpener::batch(&store, &owned_bucket);
            owned_requests
                .iter()
                .map(|request| store.open_and_read_small(&mut opener, &request.key, &request.options))
                .collect()
        })
        .await;
        opened
            .into_iter()
            .zip(keys)
            .map(|(opened, key)| opened.map(|opened| opened.into_get_result(bucket, key)))
            .collect()
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes, options: PutOptions) -> Result<ObjectMeta, StoreError> {
        let (store, owned_bucket, owned_key) = (self.clone(), bucket.to_owned(), key.to_owned());
        run_blocking(bucket, key, move || store.put_blocking(&owned_bucket, &owned_key, &body, &options)).await
    }

    async fn create_multipart(&self, bucket: &str, key: &str) -> Result<String, StoreError> {
        let (store, owned_bucket, owned_key) = (self.clone(), bucket.to_owned(), key.to_owned());
        run_blocking(bucket, key, move || store.create_multipart_blocking(&owned_bucket, &owned_key)).await
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, StoreError> {
        let (store, owned_bucket, owned_key, owned_upload_id) =
            (self.clone(), bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        run_blocking(bucket, key, move || {
            store.upload_part_blocking(&owned_bucket, &owned_key, &owned_upload_id, part_number, &body)
        })
        .await
    }

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
    ) -> Result<CompletedPart, StoreError> {
        let store = self.clone();
        let (owned_bucket, owned_key, owned_upload_id) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        let (owned_source_bucket, owned_source_key) = (source_bucket.to_owned(), source_key.to_owned());
        let owned_source_if_match = source_if_match.map(str::to_owned);
        run_blocking(bucket, key, move || {
            store.upload_part_copy_blocking(
                &owned_bucket,
                &owned_key,
                &owned_upload_id,
                part_number,
                &owned_source_bucket,
                &owned_source_key,
                range,
                owned_source_if_match.as_deref(),
            )
        })
        .await
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, StoreError> {
        let (store, owned_bucket, owned_key, owned_upload_id) =
            (self.clone(), bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        let owned_parts = parts.to_vec();
        run_blocking(bucket, key, move || {
            store.complete_multipart_blocking(&owned_bucket, &owned_key, &owned_upload_id, &owned_parts)
        })
        .await
    }

    async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let (store, owned_bucket, owned_key, owned_upload_id) =
            (self.clone(), bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        run_blocking(bucket, key, move || store.abort_multipart_blocking(&owned_bucket, &owned_key, &owned_upload_id))
            .await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        let (store, owned_bucket, owned_prefix) = (self.clone(), bucket.to_owned(), prefix.to_owned());
        let owned_start_after = start_after.map(str::to_owned);
        run_blocking(bucket, prefix, move || {
            store.list_blocking(&owned_bucket, &owned_prefix, owned_start_after.as_deref(), max_keys)
        })
        .await
    }

    async fn get_tags(&self, bucket: &str, key: &str) -> Result<Vec<Tag>, StoreError> {
        let (store, owned_bucket, owned_key) = (self.clone(), bucket.to_owned(), key.to_owned());
        run_blocking(bucket, key, move || store.get_tags_blocking(&owned_bucket, &owned_key)).await
    }

    async fn put_tags(&self, bucket: &str, key: &str, tags: &[Tag]) -> Result<(), StoreError> {
        let (store, owned_bucket, owned_key, owned_tags) =
            (self.clone(), bucket.to_owned(), key.to_owned(), tags.to_vec());
        run_blocking(bucket, key, move || store.put_tags_blocking(&owned_bucket, &owned_key, &owned_tags)).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (store, owned_bucket, owned_key) = (self.clone(), bucket.to_owned(), key.to_owned());
        run_blocking(bucket, key, move || store.delete_blocking(&owned_bucket, &owned_key)).await
    }

    async fn add_tag_many(
        &self,
        bucket: &str,
        requests: &[TagRequest],
        tag: &Tag,
    ) -> Vec<Result<TagOutcome, StoreError>> {
        let (store, owned_bucket, owned_requests, owned_tag) =
            (self.clone(), bucket.to_owned(), requests.to_vec(), tag.clone());
        let keys: Vec<&str> = requests.iter().map(|request| request.key.as_str()).collect();
        run_blocking_batch(bucket, &keys, move || {
            store.add_tag_many_blocking(&owned_bucket, &owned_requests, &owned_tag)
        })
        .await
    }

    async fn delete_many(
        &self,
        bucket: &str,
        requests: &[DeleteRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let (store, owned_bucket, owned_requests) = (self.clone(), bucket.to_owned(), requests.to_vec());
        run_blocking(bucket, &requests[0].key, move || store.delete_many_blocking(&owned_bucket, &owned_requests)).await
    }
}
