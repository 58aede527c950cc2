//! Counts every request the AWS SDK clients send, by service and operation, and the DynamoDB
//! request units they are billed, so the benchmark reports what a run would be billed for.
//!
//! The counter is an SDK interceptor: it sees each attempt as it is transmitted (a retried
//! request is sent, and billed, again), whatever code made the call. DynamoDB units are
//! counted as AWS bills on-demand tables, with the item sizes of the requests and responses
//! themselves: see [`crate::dynamodb_units`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::batch_execute_statement::BatchExecuteStatementOutput;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::operation::transact_get_items::TransactGetItemsOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::BatchStatementErrorCodeEnum;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use compactor::domain::cost::RequestCounts;
use serde::Serialize;

use crate::dynamodb_units::{ReadAction, Request, Shadow, WriteOutcome};

/// Requests and DynamoDB units of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OperationCount {
    pub requests: u64,
    pub read_units: f64,
    pub write_units: f64,
}

/// Every operation's counts, keyed by operation name ("GetObject", "Query", ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts(pub BTreeMap<String, OperationCount>);

impl Counts {
    pub fn requests(&self, operation: &str) -> u64 {
        self.0.get(operation).map_or(0, |count| count.requests)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut difference = BTreeMap::new();
        for (operation, now) in &self.0 {
            let before = earlier.0.get(operation).copied().unwrap_or_default();
            let delta = OperationCount {
                requests: now.requests - before.requests,
                read_units: now.read_units - before.read_units,
                write_units: now.write_units - before.write_units,
            };
            if delta.requests > 0 {
                difference.insert(operation.clone(), delta);
            }
        }
        Counts(difference)
    }

    /// In the shape the cost model prices. Operations it does not price (bucket and table
    /// set-up, aborts) are left out.
    pub fn priced(&self) -> RequestCounts {
        let units = |pick: fn(&OperationCount) -> f64| self.0.values().map(pick).sum::<f64>().ceil() as u64;
        RequestCounts {
            s3_get: self.requests("GetObject"),
            s3_head: self.requests("HeadObject"),
            s3_put: self.requests("PutObject"),
            s3_multipart_create: self.requests("CreateMultipartUpload"),
            s3_upload_part: self.requests("UploadPart") + self.requests("UploadPartCopy"),
            s3_multipart_complete: self.requests("CompleteMultipartUpload"),
            s3_list: self.requests("ListObjectsV2") + self.requests("ListObjects"),
            s3_get_tagging: self.requests("GetObjectTagging"),
            s3_put_tagging: self.requests("PutObjectTagging"),
            s3_delete: self.requests("DeleteObject") + self.requests("DeleteObjects"),
            manifest_reads: units(|count| count.read_units),
            manifest_writes: units(|count| count.write_units),
            sqs_requests: 0,
        }
    }
}

/// The interceptor; clone it into every client whose requests should be counted.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<Counts>>,
    shadow: Arc<Mutex<Shadow>>,
}

impl RequestCounter {
    pub fn snapshot(&self) -> Counts {
        self.counts.lock().expect("counter lock").clone()
    }

    fn add(&self, operation: &str, change: impl FnOnce(&mut OperationCount)) {
        let mut counts = self.counts.lock().expect("counter lock");
        change(counts.0.entry(operation.to_string()).or_default());
    }
}

fn operation_name(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>().map_or_else(|| "unknown".to_string(), |metadata| metadata.name().to_string())
}

/// The request as read before serialization consumed it, kept for its response.
#[derive(Debug, Clone)]
struct SeenRequest(Request);

impl Storable for SeenRequest {
    type Storer = StoreReplace<Self>;
}

/// Whether an operation error is a write refused by its condition, which DynamoDB bills.
fn refused_by_condition(error: &aws_smithy_runtime_api::client::interceptors::context::Error) -> bool {
    error.downcast_ref::<PutItemError>().is_some_and(PutItemError::is_conditional_check_failed_exception)
        || error.downcast_ref::<UpdateItemError>().is_some_and(UpdateItemError::is_conditional_check_failed_exception)
        || error.downcast_ref::<DeleteItemError>().is_some_and(DeleteItemError::is_conditional_check_failed_exception)
        || error
            .downcast_ref::<TransactWriteItemsError>()
            .is_some_and(TransactWriteItemsError::is_transaction_canceled_exception)
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = Request::from_input(context.input());
        if let Request::CreateTable { table, schema } = &request {
            self.shadow.lock().expect("shadow lock").learn_schema(table, schema);
        }
        cfg.interceptor_state().store_put(SeenRequest(request));
        Ok(())
    }

    /// Once per attempt: a retried request is sent again.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.add(&operation_name(cfg), |count| count.requests += 1);
        Ok(())
    }

    /// Units are billed by what a request did, so they are counted from its response: a
    /// write that succeeded or was refused by its condition, a read by the items it read.
    /// Throttled and failed attempts are not billed.
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(SeenRequest(request)) = cfg.load::<SeenRequest>() else { return Ok(()) };
        let mut shadow = self.shadow.lock().expect("shadow lock");
        let (read_units, write_units) = match (request, context.output_or_error()) {
            (Request::Write { actions, transactional }, Ok(_)) => {
                (0.0, shadow.write(actions, *transactional, WriteOutcome::Succeeded) as f64)
            }
            (Request::Write { actions, transactional }, Err(error)) => {
                match error.as_operation_error().filter(|error| refused_by_condition(error)) {
                    Some(_) => (0.0, shadow.write(actions, *transactional, WriteOutcome::Refused) as f64),
                    None => return Ok(()),
                }
            }
            (Request::Statements(statements), Ok(output)) => {
                let Some(batch) = output.downcast_ref::<BatchExecuteStatementOutput>() else { return Ok(()) };
                let mut units = 0;
                for (statement, response) in statements.iter().zip(batch.responses()) {
                    let Some(action) = statement else { continue };
                    let outcome = match response.error().and_then(|error| error.code()) {
                        None => WriteOutcome::Succeeded,
                        Some(BatchStatementErrorCodeEnum::ConditionalCheckFailed) => WriteOutcome::Refused,
                        Some(_) => continue,
                    };
                    units += shadow.write(std::slice::from_ref(action), false, outcome);
                }
                (0.0, units as f64)
            }
            (Request::Read(read), Ok(output)) => {
                let units = match read {
                    ReadAction::Range { table, index, consistent } => {
                        let page = output
                            .downcast_ref::<QueryOutput>()
                            .map(|query| (query.items(), query.scanned_count()))
                            .or_else(|| {
                                output.downcast_ref::<ScanOutput>().map(|scan| (scan.items(), scan.scanned_count()))
                            });
                        let Some((items, scanned)) = page else { return Ok(()) };
                        shadow.read_range(table, index.as_deref(), *consistent, items, scanned.max(0) as u64)
                    }
                    ReadAction::Items { table_of_each, consistent, transactional } => {
                        if let Some(get) = output.downcast_ref::<GetItemOutput>() {
                            let table = table_of_each.first().map_or("", String::as_str);
                            shadow.read_items(get.item().map(|item| (table, item)).into_iter(), *consistent, false)
                        } else if let Some(batch) = output.downcast_ref::<BatchGetItemOutput>() {
                            let items = batch
                                .responses()
                                .into_iter()
                                .flatten()
                                .flat_map(|(table, items)| items.iter().map(move |item| (table.as_str(), item)));
                            shadow.read_items(items, *consistent, false)
                        } else if let Some(transaction) = output.downcast_ref::<TransactGetItemsOutput>() {
                            let items = transaction
                                .responses()
                                .iter()
                                .zip(table_of_each)
                                .filter_map(|(response, table)| Some((table.as_str(), response.item()?)));
                            shadow.read_items(items, true, *transactional)
                        } else {
                            return Ok(());
                        }
                    }
                };
                (units, 0.0)
            }
            _ => return Ok(()),
        };
        drop(shadow);
        self.add(&operation_name(cfg), |count| {
            count.read_units += read_units;
            count.write_units += write_units;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_keep_only_operations_that_ran() {
        let mut before = Counts::default();
        before.0.insert("GetObject".into(), OperationCount { requests: 5, ..Default::default() });
        let mut after = before.clone();
        after.0.get_mut("GetObject").unwrap().requests = 12;
        after.0.insert("Query".into(), OperationCount { requests: 2, read_units: 1.5, write_units: 0.0 });
        let delta = after.since(&before);
        assert_eq!(delta.requests("GetObject"), 7);
        assert_eq!(delta.requests("Query"), 2);
        assert_eq!(delta.0.len(), 2);
        assert_eq!(after.since(&after), Counts::default());
    }

    #[test]
    fn priced_counts_map_operations_to_the_cost_model() {
        let mut counts = Counts::default();
        for (operation, requests, read_units, write_units) in [
            ("GetObject", 1000, 0.0, 0.0),
            ("UploadPartCopy", 3, 0.0, 0.0),
            ("UploadPart", 2, 0.0, 0.0),
            ("PutObjectTagging", 1000, 0.0, 0.0),
            ("TransactWriteItems", 10, 0.0, 40.0),
            ("Query", 4, 2.5, 0.0),
        ] {
            counts.0.insert(operation.into(), OperationCount { requests, read_units, write_units });
        }
        let priced = counts.priced();
        assert_eq!(priced.s3_get, 1000);
        assert_eq!(priced.s3_upload_part, 5);
        assert_eq!(priced.s3_put_tagging, 1000);
        assert_eq!(priced.manifest_writes, 40);
        assert_eq!(priced.manifest_reads, 3, "units round up");
        assert_eq!(priced.s3_list, 0);
    }
}
