//! Counts every request the AWS SDK clients send, by service and operation, and the DynamoDB
//! request units they consume, so the benchmark reports what a run would be billed for.
//!
//! The counter is an SDK interceptor: it sees each attempt as it is transmitted (retries are
//! billed, so they count), whatever code made the call. DynamoDB units are estimated as AWS
//! bills on-demand tables: a write is one unit per item of up to 1 KB (two inside a
//! transaction); a read is one unit per 4 KB returned, half when eventually consistent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::batch_execute_statement::BatchExecuteStatementInput;
use aws_sdk_dynamodb::operation::batch_get_item::{BatchGetItemInput, BatchGetItemOutput};
use aws_sdk_dynamodb::operation::get_item::{GetItemInput, GetItemOutput};
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
use aws_sdk_dynamodb::operation::scan::{ScanInput, ScanOutput};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::types::AttributeValue;
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
        }
    }
}

/// The interceptor; clone it into every client whose requests should be counted.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<Counts>>,
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

/// What the interceptor learns from a request's input, before serialization consumes it.
#[derive(Debug, Clone, Copy, Default)]
struct RequestShape {
    write_units: f64,
    consistent_read: bool,
}

impl Storable for RequestShape {
    type Storer = StoreReplace<Self>;
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
        let operation = operation_name(cfg);
        let input = context.input();
        let shape = if let Some(transaction) = input.downcast_ref::<TransactWriteItemsInput>() {
            RequestShape { write_units: 2.0 * transaction.transact_items().len() as f64, consistent_read: false }
        } else if let Some(query) = input.downcast_ref::<QueryInput>() {
            RequestShape { write_units: 0.0, consistent_read: query.consistent_read.unwrap_or(false) }
        } else if let Some(scan) = input.downcast_ref::<ScanInput>() {
            RequestShape { write_units: 0.0, consistent_read: scan.consistent_read.unwrap_or(false) }
        } else if let Some(get) = input.downcast_ref::<GetItemInput>() {
            RequestShape { write_units: 0.0, consistent_read: get.consistent_read.unwrap_or(false) }
        } else if let Some(batch) = input.downcast_ref::<BatchExecuteStatementInput>() {
            // The manifest sends single-item conditional UPDATEs of items under 1 KB: a unit each.
            RequestShape { write_units: batch.statements().len() as f64, consistent_read: false }
        } else if let Some(batch) = input.downcast_ref::<BatchGetItemInput>() {
            let consistent = batch
                .request_items()
                .is_some_and(|tables| tables.values().all(|keys| keys.consistent_read.unwrap_or(false)));
            RequestShape { write_units: 0.0, consistent_read: consistent }
        } else if let Some(put) = input.downcast_ref::<PutItemInput>() {
            // Placement chunks are hundreds of KB: a unit per KB.
            let bytes = put.item().map_or(0, item_bytes);
            RequestShape { write_units: bytes.div_ceil(1024).max(1) as f64, consistent_read: false }
        } else if matches!(operation.as_str(), "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem") {
            // Items of up to 1 KB, as the manifest's are. (BatchWriteItem is not used by the
            // adapter: one unit a request rather than a guess.)
            RequestShape { write_units: 1.0, consistent_read: false }
        } else {
            RequestShape::default()
        };
        cfg.interceptor_state().store_put(shape);
        Ok(())
    }

    /// Once per attempt: a retried request is billed again.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let write_units = cfg.load::<RequestShape>().map_or(0.0, |shape| shape.write_units);
        self.add(&operation_name(cfg), |count| {
            count.requests += 1;
            count.write_units += write_units;
        });
        Ok(())
    }

    /// Reads are billed by the bytes they return, so they are counted from the response.
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(output) = context.output_or_error() else { return Ok(()) };
        let bytes = if let Some(query) = output.downcast_ref::<QueryOutput>() {
            query.items().iter().map(item_bytes).sum::<u64>()
        } else if let Some(scan) = output.downcast_ref::<ScanOutput>() {
            scan.items().iter().map(item_bytes).sum::<u64>()
        } else if let Some(get) = output.downcast_ref::<GetItemOutput>() {
            get.item().map_or(0, item_bytes)
        } else if let Some(batch) = output.downcast_ref::<BatchGetItemOutput>() {
            // Billed per item, each rounded up to 4 KB on its own.
            let consistent = cfg.load::<RequestShape>().is_some_and(|shape| shape.consistent_read);
            let items = batch.responses().map(|tables| tables.values().flatten().count()).unwrap_or(0);
            let units = items as f64 * if consistent { 1.0 } else { 0.5 };
            self.add(&operation_name(cfg), |count| count.read_units += units);
            return Ok(());
        } else {
            return Ok(());
        };
        let consistent = cfg.load::<RequestShape>().is_some_and(|shape| shape.consistent_read);
        // At least one 4 KB unit per request, even when nothing matched.
        let units = bytes.div_ceil(4096).max(1) as f64 * if consistent { 1.0 } else { 0.5 };
        self.add(&operation_name(cfg), |count| count.read_units += units);
        Ok(())
    }
}

/// An item's size as DynamoDB bills it: attribute names plus values.
fn item_bytes(item: &HashMap<String, AttributeValue>) -> u64 {
    item.iter().map(|(name, value)| name.len() as u64 + value_bytes(value)).sum()
}

fn value_bytes(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(text) => text.len() as u64,
        AttributeValue::N(number) => (number.len() as u64).div_ceil(2) + 1,
        AttributeValue::B(blob) => blob.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(items) => items.iter().map(|text| text.len() as u64).sum(),
        AttributeValue::Ns(items) => items.iter().map(|number| (number.len() as u64).div_ceil(2) + 1).sum(),
        AttributeValue::Bs(items) => items.iter().map(|blob| blob.as_ref().len() as u64).sum(),
        AttributeValue::L(items) => 3 + items.iter().map(|item| 1 + value_bytes(item)).sum::<u64>(),
        AttributeValue::M(map) => {
            3 + map.iter().map(|(name, item)| 1 + name.len() as u64 + value_bytes(item)).sum::<u64>()
        }
        _ => 0,
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

    #[test]
    fn item_sizes_follow_dynamodb_billing() {
        let item = HashMap::from([
            ("pk".to_string(), AttributeValue::S("abcd".into())),
            ("n".to_string(), AttributeValue::N("12345".into())),
        ]);
        // "pk" + "abcd" = 6; "n" + ceil(5/2)+1 = 1 + 4 = 5.
        assert_eq!(item_bytes(&item), 11);
    }
}
