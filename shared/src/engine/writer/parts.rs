//! The multipart upload of one output: parts uploading a bounded number at a time, numbered in
//! plan order, each checked against S3's 5 MiB minimum before it leaves.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::config::MIN_PART_BYTES;
use crate::domain::records::ObjectRecord;
use crate::engine::EngineError;
use crate::ports::{CompletedPart, ObjectStore, StoreError};

/// Parts in flight for one multipart upload, at most `limit` uploads at a time.
pub(crate) struct PartUploads<'a> {
    store: &'a Arc<dyn ObjectStore>,
    bucket: &'a str,
    key: &'a str,
    upload_id: Option<&'a str>,
    limit: usize,
    next_part_number: u32,
    /// The size of the part numbered last, to check S3's 5 MiB minimum for all parts but the
    /// last: a server without the check (the local directory) would let a violation through.
    last_part_bytes: Option<u64>,
    in_flight: FuturesUnordered<JoinHandle<Result<CompletedPart, StoreError>>>,
    completed: Vec<CompletedPart>,
}

impl<'a> PartUploads<'a> {
    pub(crate) fn new(
        store: &'a Arc<dyn ObjectStore>,
        bucket: &'a str,
        key: &'a str,
        upload_id: Option<&'a str>,
        limit: usize,
    ) -> Self {
        Self {
            store,
            bucket,
            key,
            upload_id,
            limit: limit.max(1),
            next_part_number: 1,
            last_part_bytes: None,
            in_flight: FuturesUnordered::new(),
            completed: Vec::new(),
        }
    }

    fn upload_id(&self) -> &'a str {
        self.upload_id.expect("parts are only uploaded for multipart outputs")
    }

    /// Takes the next part number for a part of `part_bytes`.
    fn take_part_number(&mut self, part_bytes: u64) -> u32 {
        debug_assert!(
            self.last_part_bytes.is_none_or(|last_part_bytes| last_part_bytes >= MIN_PART_BYTES),
            "part {} follows a part of {:?} bytes: every part but the last must be at least 5 MiB",
            self.next_part_number,
            self.last_part_bytes
        );
        self.last_part_bytes = Some(part_bytes);
        self.next_part_number += 1;
        self.next_part_number - 1
    }

    /// Parts numbered so far.
    pub(crate) fn parts_started(&self) -> u32 {
        self.next_part_number - 1
    }

    pub(crate) async fn upload(&mut self, part: Bytes) -> Result<(), EngineError> {
        while self.in_flight.len() >= self.limit {
            self.finish_one().await?;
        }
        let upload_id = self.upload_id().to_string();
        let part_number = self.take_part_number(part.len() as u64);
        let store = Arc::clone(self.store);
        let (bucket, key) = (self.bucket.to_string(), self.key.to_string());
        self.in_flight
            .push(tokio::spawn(async move { store.upload_part(&bucket, &key, &upload_id, part_number, part).await }));
        Ok(())
    }

    /// Makes the next part a server-side copy of the whole of `source`, as the version
    /// `source_etag`. The part number is taken only when the copy succeeds: a failed copy
    /// creates no part, and the next part gets the number.
    pub(super) async fn copy(&mut self, source: &ObjectRecord, source_etag: &str) -> Result<(), StoreError> {
        let part_number = self.next_part_number;
        let part = self
            .store
            .upload_part_copy(
                self.bucket,
                self.key,
                self.upload_id(),
                part_number,
                &source.bucket,
                &source.key,
                None,
                Some(source_etag),
            )
            .await?;
        debug_assert_eq!(part.part_number, part_number);
        self.take_part_number(source.size);
        self.completed.push(part);
        Ok(())
    }

    async fn finish_one(&mut self) -> Result<(), EngineError> {
        if let Some(joined) = self.in_flight.next().await {
            let part = joined.map_err(|join_error| {
                StoreError::backend(self.bucket, self.key, format!("part upload task failed: {join_error}"))
            })??;
            self.completed.push(part);
        }
        Ok(())
    }

    pub(crate) async fn complete(mut self) -> Result<(), EngineError> {
        while !self.in_flight.is_empty() {
            self.finish_one().await?;
        }
        self.completed.sort_by_key(|part| part.part_number);
        debug_assert!(
            self.completed.iter().enumerate().all(|(index, part)| part.part_number as usize == index + 1),
            "parts are numbered 1, 2, 3, … without gaps"
        );
        let upload_id = self.upload_id();
        self.store.complete_multipart(self.bucket, self.key, upload_id, &self.completed).await?;
        Ok(())
    }
}
