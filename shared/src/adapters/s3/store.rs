//! The [`ObjectStore`] implementation: each port method one S3 request (two for
//! `complete_multipart`).

use super::*;

#[async_trait]
impl ObjectStore for AmazonS3 {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.head_object(bucket, key, None).await
    }

    async fn get(&self, bucket: &str, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let target = RequestTarget::new(S3Operation::GetObject, bucket, key);
        let range_header = options.range.as_ref().map(|range| http_range(target, range)).transpose()?;
        let output = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_range(range_header)
            .set_if_match(options.if_match.as_deref().map(quoted_etag))
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| match error.as_service_error() {
                Some(GetObjectError::NoSuchKey(_)) => target.not_found(),
                _ => self.store_error(error, target),
            })?;
        let content_length = object_size(target, output.content_length())?;
        let (range, size) = match (&options.range, output.content_range()) {
            (None, _) => (0..content_length, content_length),
            (Some(_), Some(content_range)) => match parse_content_range(content_range) {
                Some((range, Some(size))) => (range, size),
                _ => {
                    return Err(target.backend(format!(
                        "unreadable Content-Range {content_range:?}: the endpoint is not behaving like S3"
                    )))
                }
            },
            // Sending the whole object for a range would hand the caller bytes it did not ask for.
            (Some(requested), None) => {
                return Err(target.backend(format!(
                    "asked for bytes {requested:?} but the response has no Content-Range: the endpoint ignored \
                     the Range header"
                )))
            }
        };
        let meta = ObjectMeta {
            key: key.to_owned(),
            size,
            etag: output.e_tag().map(str::to_owned),
            last_modified: chrono_time(output.last_modified()),
        };
        let seen = seen_at_read(output.tag_count(), output.version_id());
        let (owned_bucket, owned_key) = (bucket.to_owned(), key.to_owned());
        // Chunks as the connection delivers them: the body is never collected here, so a seal
        // holds only the chunks in flight, whatever the object's size.
        let body = futures::stream::unfold(output.body, |mut byte_stream: ByteStream| async move {
            byte_stream.next().await.map(|chunk| (chunk, byte_stream))
        })
        .map(move |chunk| {
            chunk.map_err(|error| {
                StoreError::backend(
                    owned_bucket.as_str(),
                    owned_key.as_str(),
                    S3RequestFailed {
                        operation: S3Operation::GetObject.name(),
                        message: format!(
                            "the connection failed while reading the body: {}; retry the read",
                            DisplayErrorContext(&error)
                        ),
                        source: Some(Box::new(error)),
                    },
                )
            })
        })
        .boxed();
        Ok(GetResult { meta, range, body, seen })
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes, options: PutOptions) -> Result<ObjectMeta, StoreError> {
        let target = RequestTarget::new(S3Operation::PutObject, bucket, key);
        let size = body.len() as u64;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_length(size as i64)
                .body(ByteStream::from(body.clone()))
                .set_expected_bucket_owner(self.expected_bucket_owner());
            if options.if_none_match {
                request = request.if_none_match("*");
            }
            if let Some(kms_key_id) = &self.options.sse_kms_key_id {
                request = request.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(kms_key_id);
            }
            match request.send().await {
                Ok(output) => {
                    return Ok(ObjectMeta {
                        key: key.to_owned(),
                        size,
                        etag: output.e_tag().map(str::to_owned),
                        last_modified: None,
                    })
                }
                Err(error) => {
                    let facts = error_facts(&error);
                    let is_conditional_conflict = options.if_none_match
                        && (facts.code.as_deref() == Some("ConditionalRequestConflict")
                            || facts.http_status == Some(409));
                    if is_conditional_conflict && attempt < CONDITIONAL_CONFLICT_ATTEMPTS {
                        tokio::time::sleep(CONDITIONAL_CONFLICT_BACKOFF * attempt).await;
                        continue;
                    }
                    return Err(match self.store_error(error, target) {
                        StoreError::PreconditionFailed { bucket, key } if options.if_none_match => {
                            StoreError::AlreadyExists { bucket, key }
                        }
                        other => other,
                    });
                }
            }
        }
    }

    async fn create_multipart(&self, bucket: &str, key: &str) -> Result<String, StoreError> {
        let target = RequestTarget::new(S3Operation::CreateMultipartUpload, bucket, key);
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_expected_bucket_owner(self.expected_bucket_owner());
        if let Some(kms_key_id) = &self.options.sse_kms_key_id {
            request = request.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(kms_key_id);
        }
        let output = request.send().await.map_err(|error| self.store_error(error, target))?;
        output
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| target.backend("the response has no UploadId: the endpoint is not behaving like S3"))
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, StoreError> {
        let target = RequestTarget::new(S3Operation::UploadPart, bucket, key).with_upload_id(upload_id);
        let output = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number_for_s3(target, part_number)?)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| self.store_error(error, target))?;
        let etag = output
            .e_tag()
            .ok_or_else(|| target.backend("the response has no ETag: the endpoint is not behaving like S3"))?;
        Ok(CompletedPart { part_number, etag: etag.to_owned() })
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
        let target = RequestTarget::new(S3Operation::UploadPartCopy, bucket, key).with_upload_id(upload_id);
        let source_target = RequestTarget::new(S3Operation::UploadPartCopy, source_bucket, source_key);
        let copy_source_range = range.as_ref().map(|range| http_range(source_target, range)).transpose()?;
        let copy_source =
            utf8_percent_encode(&format!("{source_bucket}/{source_key}"), COPY_SOURCE_ENCODE_SET).to_string();
        let output = self
            .client
            .upload_part_copy()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number_for_s3(target, part_number)?)
            .copy_source(copy_source)
            .set_copy_source_range(copy_source_range)
            .set_copy_source_if_match(source_if_match.map(quoted_etag))
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .set_expected_source_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| {
                let facts = error_facts(&error);
                match (facts.code.as_deref(), facts.http_status) {
                    // The missing object and the failed precondition are the source's, not the part's.
                    (Some("NoSuchKey"), _) => source_target.not_found(),
                    (Some("PreconditionFailed"), _) | (_, Some(412)) => {
                        StoreError::PreconditionFailed { bucket: source_bucket.to_owned(), key: source_key.to_owned() }
                    }
                    (Some("InvalidRange"), _) | (_, Some(416)) => source_target.invalid_request(format!(
                        "copy source range {range:?} starts at or past the end of the source object"
                    )),
                    _ => self.store_error(error, target),
                }
            })?;
        let etag =
            output.copy_part_result().and_then(|copy_part_result| copy_part_result.e_tag()).ok_or_else(|| {
                target.backend("the response has no CopyPartResult ETag: the endpoint is not behaving like S3")
            })?;
        Ok(CompletedPart { part_number, etag: etag.to_owned() })
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, StoreError> {
        let target = RequestTarget::new(S3Operation::CompleteMultipartUpload, bucket, key).with_upload_id(upload_id);
        let mut completed_parts = Vec::with_capacity(parts.len());
        for part in parts {
            completed_parts.push(
                s3_types::CompletedPart::builder()
                    .part_number(part_number_for_s3(target, part.part_number)?)
                    .e_tag(quoted_etag(&part.etag))
                    .build(),
            );
        }
        let output = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(s3_types::CompletedMultipartUpload::builder().set_parts(Some(completed_parts)).build())
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| self.store_error(error, target))?;
        let etag = output
            .e_tag()
            .ok_or_else(|| target.backend("the response has no ETag: the endpoint is not behaving like S3"))?
            .to_owned();
        // CompleteMultipartUpload does not say how large the object is. A HEAD pinned to the
        // new ETag does, and cannot report the size of a later writer's object instead.
        let meta = self.head_object(bucket, key, Some(&etag)).await?;
        Ok(ObjectMeta { etag: Some(etag), ..meta })
    }

    async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let target = RequestTarget::new(S3Operation::AbortMultipartUpload, bucket, key).with_upload_id(upload_id);
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already aborted or completed: nothing is left to clean up, which is what was asked.
            Err(error) if matches!(error.as_service_error(), Some(AbortMultipartUploadError::NoSuchUpload(_))) => {
                Ok(())
            }
            Err(error) => match self.store_error(error, target) {
                StoreError::NoSuchUpload { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        let target = RequestTarget::new(S3Operation::ListObjectsV2, bucket, prefix);
        if max_keys == 0 {
            // S3 would answer an empty, untruncated page: a caller would take it for the end.
            return Err(target.invalid_request("max_keys is 0: ask for at least one key per page"));
        }
        let max_keys_for_s3 = max_keys.min(MAX_KEYS_PER_LIST_PAGE) as i32;
        let output = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(max_keys_for_s3)
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| match error.as_service_error() {
                Some(ListObjectsV2Error::NoSuchBucket(_)) => target.no_such_bucket(),
                _ => self.store_error(error, target),
            })?;
        let mut objects = Vec::with_capacity(output.contents().len());
        for object in output.contents() {
            let key = object
                .key()
                .ok_or_else(|| target.backend("a listed object has no Key: the endpoint is not behaving like S3"))?;
            objects.push(ObjectMeta {
                key: key.to_owned(),
                size: object.size().and_then(|size| u64::try_from(size).ok()).unwrap_or_default(),
                etag: object.e_tag().map(str::to_owned),
                last_modified: chrono_time(object.last_modified()),
            });
        }
        let next_start_after = if output.is_truncated().unwrap_or(false) {
            match objects.last() {
                Some(last_object) => Some(last_object.key.clone()),
                // Without a key to start after, the caller could only restart from the top.
                None => {
                    return Err(target.backend("a truncated page holds no keys: the endpoint is not behaving like S3"))
                }
            }
        } else {
            None
        };
        Ok(ListPage { objects, next_start_after, unlistable: 0 })
    }

    async fn get_tags(&self, bucket: &str, key: &str) -> Result<Vec<Tag>, StoreError> {
        let target = RequestTarget::new(S3Operation::GetObjectTagging, bucket, key);
        let output = self
            .client
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| self.store_error(error, target))?;
        Ok(output.tag_set().iter().map(|tag| Tag::new(tag.key(), tag.value())).collect())
    }

    async fn put_tags(&self, bucket: &str, key: &str, tags: &[Tag]) -> Result<(), StoreError> {
        self.put_object_tagging(bucket, key, None, tags).await
    }

    async fn put_version_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        tags: &[Tag],
    ) -> Result<(), StoreError> {
        self.put_object_tagging(bucket, key, Some(version_id), tags).await
    }

    async fn delete_tags(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.delete_object_tagging(bucket, key).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let target = RequestTarget::new(S3Operation::DeleteObject, bucket, key);
        let result = self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => match self.store_error(error, target) {
                // S3 answers 204 for a missing key; some compatible servers answer 404. Either
                // way nothing is left to delete.
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn delete_many(
        &self,
        bucket: &str,
        requests: &[DeleteRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        // The batch has no one key: errors of the whole request name none.
        let target = RequestTarget::new(S3Operation::DeleteObjects, bucket, "");
        if requests.is_empty() {
            // S3 refuses an empty batch as MalformedXML; there is nothing to ask.
            return Ok(Vec::new());
        }
        if requests.len() > MAX_KEYS_PER_DELETE {
            return Err(target.invalid_request(format!(
                "{} keys in one DeleteObjects: S3 takes at most {MAX_KEYS_PER_DELETE}, send them in batches",
                requests.len()
            )));
        }
        let mut identifiers = Vec::with_capacity(requests.len());
        for request in requests {
            let identifier = s3_types::ObjectIdentifier::builder()
                .key(&request.key)
                .set_e_tag(request.if_match.as_deref().map(quoted_etag))
                .build()
                .map_err(|error| {
                    RequestTarget::new(S3Operation::DeleteObjects, bucket, &request.key)
                        .invalid_request(format!("the key cannot be sent: {error}"))
                })?;
            identifiers.push(identifier);
        }
        let delete = s3_types::Delete::builder()
            .set_objects(Some(identifiers))
            .quiet(true)
            .build()
            .map_err(|error| target.invalid_request(format!("the batch cannot be sent: {error}")))?;
        let output = self
            .client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| self.store_error(error, target))?;
        let mut key_errors: std::collections::HashMap<&str, (&str, &str)> = std::collections::HashMap::new();
        for key_error in output.errors() {
            let key = key_error.key().unwrap_or_default();
            if !requests.iter().any(|request| request.key == key) {
                return Err(target.backend(format!(
                    "the answer reports an error for key {key:?}, which the batch did not name: the endpoint is \
                     not behaving like S3; retry the batch (deletes can be repeated)"
                )));
            }
            key_errors.insert(key, (key_error.code().unwrap_or_default(), key_error.message().unwrap_or("no message")));
        }
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            let outcome = match key_errors.get(request.key.as_str()) {
                None => Ok(()),
                Some((code, message)) => delete_objects_key_outcome(self, bucket, &request.key, code, message),
            };
            outcomes.push(match outcome {
                // S3 answers NoSuchKey for a conditional delete of a key already gone, but some
                // servers answer 412, as for a changed ETag: a HEAD tells the two apart. Only
                // refused keys pay for it (a rerun after a crash, an overwritten source).
                Err(StoreError::PreconditionFailed { .. }) => {
                    match self.head_object(bucket, &request.key, None).await {
                        Err(StoreError::NotFound { .. }) => Ok(()),
                        _ => outcome,
                    }
                }
                _ => outcome,
            });
        }
        Ok(outcomes)
    }
}
