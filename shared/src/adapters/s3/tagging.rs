//! Tagging: PutObjectTagging (on one version, when a GET named it), DeleteObjectTagging, and
//! what a GET's response says of the object's tags and version.

use super::*;

/// What a GetObject response says of the object's tags and version. S3 sends
/// `x-amz-tagging-count` only for an object with tags, so its absence means none; a count it
/// cannot parse is taken as "has tags", the safe side (the tag step then reads the tags).
pub(super) fn seen_at_read(tag_count: Option<i32>, version_id: Option<&str>) -> SeenAtRead {
    SeenAtRead {
        tag_count: Some(tag_count.map_or(0, |tag_count| u32::try_from(tag_count).unwrap_or(1))),
        version_id: version_id.filter(|version_id| !version_id.is_empty()).map(str::to_owned),
    }
}

impl AmazonS3 {
    /// PutObjectTagging, on `version_id` when given.
    pub(super) async fn put_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: &[Tag],
    ) -> Result<(), StoreError> {
        let operation = match version_id {
            Some(_) => S3Operation::PutObjectVersionTagging,
            None => S3Operation::PutObjectTagging,
        };
        let target = RequestTarget::new(operation, bucket, key);
        let mut tag_set = Vec::with_capacity(tags.len());
        for tag in tags {
            let s3_tag = s3_types::Tag::builder()
                .key(&tag.key)
                .value(&tag.value)
                .build()
                .map_err(|error| target.invalid_request(format!("tag {tag:?} cannot be sent: {error}")))?;
            tag_set.push(s3_tag);
        }
        let tagging = s3_types::Tagging::builder()
            .set_tag_set(Some(tag_set))
            .build()
            .map_err(|error| target.invalid_request(format!("the tag set cannot be sent: {error}")))?;
        self.client
            .put_object_tagging()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .tagging(tagging)
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| self.store_error(error, target))?;
        Ok(())
    }

    /// DeleteObjectTagging: free, and the way to take the last tag off.
    pub(super) async fn delete_object_tagging(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let target = RequestTarget::new(S3Operation::DeleteObjectTagging, bucket, key);
        self.client
            .delete_object_tagging()
            .bucket(bucket)
            .key(key)
            .set_expected_bucket_owner(self.expected_bucket_owner())
            .send()
            .await
            .map_err(|error| self.store_error(error, target))?;
        Ok(())
    }
}
