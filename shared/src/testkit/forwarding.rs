//! One forwarding wrapper for the object store port, which every test wrapper builds on.
//!
//! A wrapper that implements [`ObjectStore`] by hand and forgets a method silently gets the
//! trait's default for it. For `get_batch_size`, `get_many` and `add_tag_many` that default is
//! S3's path, one source at a time, never the local directory's batched one: a test through
//! such a wrapper checks a path production never takes. So a test wrapper is a [`StoreLayer`]
//! instead, and [`Layered`] forwards every method of the port through it, the batched ones
//! included.
//!
//! [`Layered::per_source`] takes the other path on purpose: the trait's one-source-at-a-time
//! defaults, made through the layer, so each GET, HEAD and tagging request is a call of its
//! own that a layer sees (and a fault plan can crash in), as on S3.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::ports::object_store::{add_tag_one_by_one, get_one_by_one};
use crate::ports::{
    CompletedPart, DeleteRequest, GetOptions, GetRequest, GetResult, ListPage, ObjectMeta, ObjectStore, PutOptions,
    StoreError, Tag, TagOutcome, TagRequest,
};

/// A call's answer, to come.
pub type StoreAnswer<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// One call of the port, as a layer sees it.
#[derive(Debug, Clone, Copy)]
pub struct StoreCall<'a> {
    /// `store.get`, `store.get_many`, `store.add_tag_many`, …: the port method's name.
    pub operation: &'static str,
    pub bucket: &'a str,
    /// The object's key (the first one of a batch; the output's for a part).
    pub key: &'a str,
    /// The source's bucket and key of an `upload_part_copy`.
    pub copy_source: Option<(&'a str, &'a str)>,
    /// How many objects the call is about: a batch's requests, 1 otherwise.
    pub objects: usize,
}

impl<'a> StoreCall<'a> {
    fn new(operation: &'static str, bucket: &'a str, key: &'a str) -> Self {
        Self { operation, bucket, key, copy_source: None, objects: 1 }
    }

    fn batch(operation: &'static str, bucket: &'a str, first_key: &'a str, objects: usize) -> Self {
        Self { objects, ..Self::new(operation, bucket, first_key) }
    }
}

/// What a test wrapper adds around the calls [`Layered`] forwards. Every method has a default
/// that changes nothing.
pub trait StoreLayer: Send + Sync + fmt::Debug + 'static {
    /// Makes one call: `forward` makes it on the inner store. A layer may act before or after
    /// it, skip it, or replace its answer.
    fn around<'a, T: Send + 'a>(&'a self, call: StoreCall<'a>, forward: StoreAnswer<'a, T>) -> StoreAnswer<'a, T> {
        let _ = call;
        forward
    }

    /// Why this key of a `delete_many` fails on its own, if it does (the rest of the batch goes
    /// on), as S3's DeleteObjects reports a key it could not delete.
    fn refuses_delete(&self, bucket: &str, key: &str) -> Option<String> {
        let _ = (bucket, key);
        None
    }
}

impl<L: StoreLayer> StoreLayer for Arc<L> {
    fn around<'a, T: Send + 'a>(&'a self, call: StoreCall<'a>, forward: StoreAnswer<'a, T>) -> StoreAnswer<'a, T> {
        self.as_ref().around(call, forward)
    }

    fn refuses_delete(&self, bucket: &str, key: &str) -> Option<String> {
        self.as_ref().refuses_delete(bucket, key)
    }
}

/// A layer that only forwards: [`Layered::per_source`] on a store, and nothing else.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forward;

impl StoreLayer for Forward {}

/// An [`ObjectStore`] that forwards every port method to `inner` through `layer`.
#[derive(Debug)]
pub struct Layered<L> {
    inner: Arc<dyn ObjectStore>,
    layer: L,
    per_source: bool,
}

impl<L: StoreLayer> Layered<L> {
    pub fn new(inner: Arc<dyn ObjectStore>, layer: L) -> Self {
        Self { inner, layer, per_source: false }
    }

    /// Takes S3's path whatever the inner store can batch: `get_batch_size` is 1, and
    /// `get_many` and `add_tag_many` are the port's defaults, one GET, and one PutObjectTagging
    /// (after a HEAD and a GetObjectTagging for a source not seen untagged), per source, each
    /// through the layer.
    pub fn per_source(mut self) -> Self {
        self.per_source = true;
        self
    }

    pub fn layer(&self) -> &L {
        &self.layer
    }

    /// One answer per request, all failed with `error`: a batch call that failed as a whole.
    fn failed_batch<T>(
        bucket: &str,
        keys: impl Iterator<Item = String>,
        error: &StoreError,
    ) -> Vec<Result<T, StoreError>> {
        keys.map(|key| Err(StoreError::backend(bucket, key, error.to_string()))).collect()
    }
}

#[async_trait]
impl<L: StoreLayer> ObjectStore for Layered<L> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.layer.around(StoreCall::new("store.head", bucket, key), self.inner.head(bucket, key)).await
    }

    async fn get(&self, bucket: &str, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        self.layer.around(StoreCall::new("store.get", bucket, key), self.inner.get(bucket, key, options)).await
    }

    fn get_batch_size(&self) -> usize {
        if self.per_source {
            1
        } else {
            self.inner.get_batch_size()
        }
    }

    async fn get_many(&self, bucket: &str, requests: &[GetRequest]) -> Vec<Result<GetResult, StoreError>> {
        if self.per_source {
            return get_one_by_one(self, bucket, requests).await;
        }
        let first_key = requests.first().map_or("", |request| request.key.as_str());
        let forward = self.inner.get_many(bucket, requests).map(Ok);
        match self
            .layer
            .around(StoreCall::batch("store.get_many", bucket, first_key, requests.len()), forward.boxed())
            .await
        {
            Ok(answers) => answers,
            Err(error) => Self::failed_batch(bucket, requests.iter().map(|request| request.key.clone()), &error),
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes, options: PutOptions) -> Result<ObjectMeta, StoreError> {
        self.layer.around(StoreCall::new("store.put", bucket, key), self.inner.put(bucket, key, body, options)).await
    }

    async fn create_multipart(&self, bucket: &str, key: &str) -> Result<String, StoreError> {
        let forward = self.inner.create_multipart(bucket, key);
        self.layer.around(StoreCall::new("store.create_multipart", bucket, key), forward).await
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, StoreError> {
        let forward = self.inner.upload_part(bucket, key, upload_id, part_number, body);
        self.layer.around(StoreCall::new("store.upload_part", bucket, key), forward).await
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
        let forward = self.inner.upload_part_copy(
            bucket,
            key,
            upload_id,
            part_number,
            source_bucket,
            source_key,
            range,
            source_if_match,
        );
        let call = StoreCall {
            copy_source: Some((source_bucket, source_key)),
            ..StoreCall::new("store.upload_part_copy", bucket, key)
        };
        self.layer.around(call, forward).await
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, StoreError> {
        let forward = self.inner.complete_multipart(bucket, key, upload_id, parts);
        self.layer.around(StoreCall::new("store.complete_multipart", bucket, key), forward).await
    }

    async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let forward = self.inner.abort_multipart(bucket, key, upload_id);
        self.layer.around(StoreCall::new("store.abort_multipart", bucket, key), forward).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        let forward = self.inner.list(bucket, prefix, start_after, max_keys);
        self.layer.around(StoreCall::new("store.list", bucket, prefix), forward).await
    }

    async fn get_tags(&self, bucket: &str, key: &str) -> Result<Vec<Tag>, StoreError> {
        self.layer.around(StoreCall::new("store.get_tags", bucket, key), self.inner.get_tags(bucket, key)).await
    }

    async fn put_tags(&self, bucket: &str, key: &str, tags: &[Tag]) -> Result<(), StoreError> {
        let forward = self.inner.put_tags(bucket, key, tags);
        self.layer.around(StoreCall::new("store.put_tags", bucket, key), forward).await
    }

    async fn put_version_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        tags: &[Tag],
    ) -> Result<(), StoreError> {
        let forward = self.inner.put_version_tags(bucket, key, version_id, tags);
        self.layer.around(StoreCall::new("store.put_version_tags", bucket, key), forward).await
    }

    async fn delete_tags(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.layer.around(StoreCall::new("store.delete_tags", bucket, key), self.inner.delete_tags(bucket, key)).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.layer.around(StoreCall::new("store.delete", bucket, key), self.inner.delete(bucket, key)).await
    }

    async fn delete_many(
        &self,
        bucket: &str,
        requests: &[DeleteRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let first_key = requests.first().map_or("", |request| request.key.as_str());
        // Refused keys never reach the inner store; their outcomes are slotted back in order.
        let refusals: Vec<Option<String>> =
            requests.iter().map(|request| self.layer.refuses_delete(bucket, &request.key)).collect();
        let passed: Vec<DeleteRequest> = requests
            .iter()
            .zip(&refusals)
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(request, _)| request.clone())
            .collect();
        let forward = async move { self.inner.delete_many(bucket, &passed).await }.boxed();
        let mut passed_outcomes = self
            .layer
            .around(StoreCall::batch("store.delete_many", bucket, first_key, requests.len()), forward)
            .await?
            .into_iter();
        Ok(requests
            .iter()
            .zip(refusals)
            .map(|(request, refusal)| match refusal {
                Some(message) => {
                    Err(StoreError::AccessDenied { bucket: bucket.to_owned(), key: request.key.clone(), message })
                }
                None => passed_outcomes.next().expect("one outcome per key passed to the inner store"),
            })
            .collect())
    }

    async fn add_tag_many(
        &self,
        bucket: &str,
        requests: &[TagRequest],
        tag: &Tag,
    ) -> Vec<Result<TagOutcome, StoreError>> {
        if self.per_source {
            return add_tag_one_by_one(self, bucket, requests, tag).await;
        }
        let first_key = requests.first().map_or("", |request| request.key.as_str());
        let forward = self.inner.add_tag_many(bucket, requests, tag).map(Ok);
        match self
            .layer
            .around(StoreCall::batch("store.add_tag_many", bucket, first_key, requests.len()), forward.boxed())
            .await
        {
            Ok(answers) => answers,
            Err(error) => Self::failed_batch(bucket, requests.iter().map(|request| request.key.clone()), &error),
        }
    }
}

/// The wrapper is faithful: the object store conformance suite passes through it, on the path
/// production takes and on the per-source one.
#[cfg(all(test, feature = "local"))]
mod tests {
    use std::sync::Arc;

    use super::{Forward, Layered};
    use crate::adapters::local_dir::LocalDir;
    use crate::ports::ObjectStore;

    const BUCKET: &str = "conformance";

    fn wrapped_local_dir(per_source: bool) -> (Layered<Forward>, String, tempfile::TempDir) {
        let temporary_directory = tempfile::tempdir().expect("create a temporary directory");
        let store = LocalDir::open(temporary_directory.path().join("buckets")).expect("open the store");
        store.create_bucket(BUCKET).expect("create the bucket");
        let layered = Layered::new(Arc::new(store), Forward);
        let layered = if per_source { layered.per_source() } else { layered };
        (layered, BUCKET.to_owned(), temporary_directory)
    }

    #[test]
    fn the_batch_size_is_the_inner_stores_unless_per_source() {
        let (as_production, _, _guard) = wrapped_local_dir(false);
        assert!(as_production.get_batch_size() > 1, "the local directory batches its reads");
        let (per_source, _, _other_guard) = wrapped_local_dir(true);
        assert_eq!(per_source.get_batch_size(), 1);
    }

    mod as_production {
        crate::object_store_conformance_tests!(super::wrapped_local_dir(false));
    }

    mod per_source {
        crate::object_store_conformance_tests!(super::wrapped_local_dir(true));
    }
}
