//! Requests every call builds on: error classification, single-item reads and writes, the
//! lease fence, queries, and the optimistic read-decide-write loop.

use super::*;

pub(super) fn cancellation_codes(reasons: &[CancellationReason]) -> Vec<String> {
    reasons.iter().map(|reason| reason.code().unwrap_or("None").to_owned()).collect()
}

pub(super) const CONDITION_FAILED_CODE: &str = "ConditionalCheckFailed";

/// What one try of a read-decide-conditional-write came to (see [`DynamoDbManifest::optimistically`]).
pub(super) enum Attempt<T> {
    Done(T),
    /// An item changed between the read and the conditional write: read again and decide again.
    Retry,
}

impl DynamoDbManifest {
    /// The optimistic loop of every read-decide-write: runs `attempt` (which reads, decides in
    /// Rust and writes on the condition that what it read still holds) until it is done, at
    /// most [`OPTIMISTIC_ATTEMPTS`] times. Each retry means another writer changed the item in
    /// between; past the limit the call fails as contended, naming `what`.
    pub(super) async fn optimistically<T, F, Fut>(
        &self,
        what: impl FnOnce() -> String,
        mut attempt: F,
    ) -> Result<T, ManifestError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Attempt<T>, ManifestError>>,
    {
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            if let Attempt::Done(value) = attempt().await? {
                return Ok(value);
            }
        }
        Err(DynamoDbManifestError::Contended { what: what() }.into())
    }
}

impl DynamoDbManifest {
    // ── errors ──────────────────────────────────────────────────────────────────────────

    pub(super) fn request_error(&self, operation: &'static str, error: aws_sdk_dynamodb::Error) -> ManifestError {
        use aws_sdk_dynamodb::Error as SdkError;
        let table = self.table.clone();
        match error {
            SdkError::ResourceNotFoundException(_) => DynamoDbManifestError::MissingTable { table }.into(),
            SdkError::ProvisionedThroughputExceededException(_)
            | SdkError::RequestLimitExceeded(_)
            | SdkError::ThrottlingException(_) => {
                DynamoDbManifestError::Throttled { table, operation, source: error }.into()
            }
            other => DynamoDbManifestError::Request { table, operation, source: other }.into(),
        }
    }

    /// Sorts a failure into what callers act on: a failed condition, a canceled transaction,
    /// or an error for the caller (a missing table, throttling after retries, anything else).
    pub(super) fn classify(&self, operation: &'static str, error: aws_sdk_dynamodb::Error) -> Failure {
        match error {
            aws_sdk_dynamodb::Error::ConditionalCheckFailedException(failed) => {
                Failure::ConditionFailed(failed.item().cloned())
            }
            aws_sdk_dynamodb::Error::TransactionCanceledException(canceled) => {
                Failure::TransactionCanceled(cancellation_codes(canceled.cancellation_reasons()))
            }
            other => Failure::Other(self.request_error(operation, other)),
        }
    }

    // ── single-item requests ────────────────────────────────────────────────────────────

    /// A strongly consistent read of one item.
    pub(super) async fn get_item(&self, key: Item) -> Result<Option<Item>, ManifestError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| self.request_error("GetItem", error.into()))?;
        Ok(output.item)
    }

    pub(super) async fn get_partition(&self, key: &PartitionKey) -> Result<Option<StoredPartition>, ManifestError> {
        let item = self.get_item(key_of(partition_item_pk(&key.bucket, &key.path), PARTITION_SORT_KEY)).await?;
        item.map(|item| StoredPartition::from_item(&item, &self.table)).transpose()
    }

    /// The fencing rule of every call that takes a [`Lease`]: the partition's generation and
    /// lock owner must still be the lease's. Expiry is not checked: a lease past its expiry
    /// that nobody took over is still the newest, and a takeover bumps the generation, which
    /// is what fences. Writes re-check it atomically ([`Self::fence_check`]); this read gives
    /// the error before any other (as SQLite checks it first).
    pub(super) async fn check_fence(&self, lease: &Lease) -> Result<StoredPartition, ManifestError> {
        match self.get_partition(&lease.partition).await? {
            Some(partition) if partition.holds(lease) => Ok(partition),
            _ => Err(lease_lost(lease)),
        }
    }

    /// The fencing condition as a transaction's first action.
    pub(super) fn fence_check(&self, lease: &Lease) -> Result<TransactWriteItem, ManifestError> {
        let condition = "#generation = :lease_generation AND #lock_owner = :lease_owner";
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key_of(
                partition_item_pk(&lease.partition.bucket, &lease.partition.path),
                PARTITION_SORT_KEY,
            )))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_in(&[condition])))
            .set_expression_attribute_values(Some(values([
                (":lease_generation", number_value(lease.generation)),
                (":lease_owner", string_value(&lease.owner)),
            ])))
            .build()
            .map_err(DynamoDbManifestError::Build)?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Runs a transaction whose first action is the lease's fence check: `Retry` when another
    /// item of it changed since it was read.
    pub(super) async fn fenced_transaction(
        &self,
        lease: &Lease,
        writes: Vec<TransactWriteItem>,
    ) -> Result<Attempt<()>, ManifestError> {
        let mut actions = Vec::with_capacity(writes.len() + 1);
        actions.push(self.fence_check(lease)?);
        actions.extend(writes);
        let result = self.client.transact_write_items().set_transact_items(Some(actions)).send().await;
        match result.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(_) => Ok(Attempt::Done(())),
            Err(error) => match self.classify("TransactWriteItems", error) {
                Failure::TransactionCanceled(codes) => {
                    if codes.first().map(String::as_str) == Some(CONDITION_FAILED_CODE) {
                        Err(lease_lost(lease))
                    } else {
                        // A changed item, or a conflict with another transaction on one of the
                        // items: both are resolved by reading again.
                        Ok(Attempt::Retry)
                    }
                }
                Failure::ConditionFailed(_) => Ok(Attempt::Retry),
                Failure::Other(error) => Err(error),
            },
        }
    }

    pub(super) fn update(
        &self,
        key: Item,
        update_expression: &str,
        condition: &str,
        expression_values: HashMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, ManifestError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update_expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_in(&[update_expression, condition])))
            .set_expression_attribute_values(Some(expression_values).filter(|values| !values.is_empty()))
            .build()
            .map_err(DynamoDbManifestError::Build)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    pub(super) fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, ManifestError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_names(condition.map(|condition| names_in(&[condition])))
            .build()
            .map_err(DynamoDbManifestError::Build)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A conditional UpdateItem. `Ok(Err(old item))` when the condition failed.
    pub(super) async fn conditional_update(
        &self,
        key: Item,
        update_expression: &str,
        condition: &str,
        expression_values: HashMap<String, AttributeValue>,
        return_new: bool,
    ) -> Result<Result<Option<Item>, Option<Item>>, ManifestError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update_expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_in(&[update_expression, condition])))
            .set_expression_attribute_values(Some(expression_values).filter(|values| !values.is_empty()))
            .return_values(if return_new { ReturnValue::AllNew } else { ReturnValue::None })
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(output) => Ok(Ok(output.attributes)),
            Err(error) => match self.classify("UpdateItem", error) {
                Failure::ConditionFailed(old_item) => Ok(Err(old_item)),
                Failure::TransactionCanceled(_) => Ok(Err(None)),
                Failure::Other(error) => Err(error),
            },
        }
    }

    /// Unconditional PutItems side by side ([`CONCURRENT_REQUESTS`] at a time): items nobody
    /// else writes (placement chunks, arrival items), so a retry rewrites the same bytes.
    pub(super) async fn put_items(&self, items: Vec<Item>) -> Result<(), ManifestError> {
        stream::iter(items)
            .map(|item| async move {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .send()
                    .await
                    .map_err(|error| self.request_error("PutItem", error.into()))
                    .map(|_| ())
            })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// A conditional PutItem: `Ok(false)` when the condition failed.
    pub(super) async fn conditional_put(
        &self,
        item: Item,
        condition: &str,
        expression_values: HashMap<String, AttributeValue>,
    ) -> Result<bool, ManifestError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_in(&[condition])))
            .set_expression_attribute_values(Some(expression_values).filter(|values| !values.is_empty()))
            .send()
            .await;
        match result.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(_) => Ok(true),
            Err(error) => match self.classify("PutItem", error) {
                Failure::ConditionFailed(_) | Failure::TransactionCanceled(_) => Ok(false),
                Failure::Other(error) => Err(error),
            },
        }
    }

    // ── queries ─────────────────────────────────────────────────────────────────────────

    /// Every item of a Query, all pages.
    pub(super) async fn query_all(
        &self,
        index: Option<&str>,
        key_condition: &str,
        filter: Option<&str>,
        expression_values: HashMap<String, AttributeValue>,
        consistent: bool,
    ) -> Result<Vec<Item>, ManifestError> {
        let mut items = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let page = self
                .query_page(index, key_condition, filter, expression_values.clone(), consistent, start_key, None)
                .await?;
            items.extend(page.items.unwrap_or_default());
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                return Ok(items);
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the fields of one Query request
    pub(super) async fn query_page(
        &self,
        index: Option<&str>,
        key_condition: &str,
        filter: Option<&str>,
        expression_values: HashMap<String, AttributeValue>,
        consistent: bool,
        start_key: Option<Item>,
        limit: Option<i32>,
    ) -> Result<aws_sdk_dynamodb::operation::query::QueryOutput, ManifestError> {
        let mut expressions = vec![key_condition];
        expressions.extend(filter);
        self.client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(key_condition)
            .set_filter_expression(filter.map(str::to_owned))
            .set_expression_attribute_names(Some(names_in(&expressions)))
            .set_expression_attribute_values(Some(expression_values))
            // Global secondary indexes only serve eventually consistent reads.
            .consistent_read(consistent && index.is_none())
            .set_exclusive_start_key(start_key)
            .set_limit(limit)
            .send()
            .await
            .map_err(|error| self.request_error("Query", error.into()))
    }
}

pub(super) fn lease_lost(lease: &Lease) -> ManifestError {
    ManifestError::LeaseLost { partition: lease.partition.clone(), generation: lease.generation }
}

pub(super) fn output_not_found(bucket: &str, key: &str) -> ManifestError {
    ManifestError::NotFound { what: format!("output s3://{bucket}/{key}") }
}

pub(super) fn partition_not_found(key: &PartitionKey) -> ManifestError {
    ManifestError::NotFound { what: format!("partition {key}") }
}

pub(super) fn check_output_partition(lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError> {
    if output.partition == lease.partition {
        Ok(())
    } else {
        Err(DynamoDbManifestError::WrongPartition {
            what: format!("output s3://{}/{}", output.bucket, output.key),
            found: output.partition.clone(),
            leased: lease.partition.clone(),
        }
        .into())
    }
}

pub(super) fn limit_i32(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX).max(1)
}
