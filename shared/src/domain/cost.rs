//! Request counts and what they cost at published us-east-1 prices (S3 Standard, DynamoDB
//! on-demand, SQS standard queues, Lambda on arm64, as listed on the AWS pricing pages in 2025),
//! and the rules by which AWS turns a request into billed units: DynamoDB's item sizes and
//! request units, SQS's 64 KB chunks. Storage is left out: it depends on how long data stays.
//!
//! The benchmark counts with these rules (`bench/src/counting.rs` sizes the items of every
//! DynamoDB request it sees); `plan` estimates with them.

use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// S3 PUT, COPY, POST and LIST class requests (PutObjectTagging included): $0.005 per 1,000.
pub const S3_PUT_CLASS_USD_PER_1000: f64 = 0.005;
/// S3 GET class and other requests (HEAD, GetObjectTagging): $0.0004 per 1,000.
pub const S3_GET_CLASS_USD_PER_1000: f64 = 0.0004;
/// DynamoDB on-demand write request unit: $0.625 per million.
pub const DYNAMODB_WRITE_USD_PER_MILLION: f64 = 0.625;
/// DynamoDB on-demand read request unit: $0.125 per million.
pub const DYNAMODB_READ_USD_PER_MILLION: f64 = 0.125;

/// SQS standard queue: $0.40 per million requests, each 64 KB of a message one request.
pub const SQS_USD_PER_MILLION: f64 = 0.40;
/// The size of one billed SQS request's payload.
pub const SQS_CHUNK_BYTES: u64 = 64 * 1024;
/// Lambda: $0.20 per million invocations.
pub const LAMBDA_USD_PER_MILLION_INVOCATIONS: f64 = 0.20;
/// Lambda on arm64 (Graviton), the first price tier: $0.0000133334 per GB-second.
pub const LAMBDA_ARM64_USD_PER_GB_SECOND: f64 = 0.000_013_333_4;
/// S3 Tables' managed compaction: $0.002 per 1,000 objects processed.
pub const S3_TABLES_USD_PER_1000_OBJECTS: f64 = 0.002;
/// S3 Tables' managed compaction: $0.005 per GB processed.
pub const S3_TABLES_USD_PER_GB: f64 = 0.005;

/// A DynamoDB write request unit covers up to 1 KB of an item.
pub const WRITE_UNIT_BYTES: u64 = 1024;
/// A DynamoDB read request unit covers up to 4 KB.
pub const READ_UNIT_BYTES: u64 = 4096;

/// Write units of one item written (put, updated or deleted) outside a transaction: one per
/// started KB of the item, at least one. For a put or update, `item_bytes` is the larger of
/// the item before and after the write, as DynamoDB bills it.
pub fn write_units(item_bytes: u64) -> u64 {
    item_bytes.div_ceil(WRITE_UNIT_BYTES).max(1)
}

/// Write units of one item written inside a transaction: twice [`write_units`].
pub fn transactional_write_units(item_bytes: u64) -> u64 {
    2 * write_units(item_bytes)
}

/// Write units of one write to a global secondary index entry of `projected_bytes` (the index
/// and table keys plus the projected attributes). A change of the entry's index key is two
/// such writes (delete the old entry, put the new one); the caller counts them.
pub fn index_write_units(projected_bytes: u64) -> u64 {
    write_units(projected_bytes)
}

/// Read units of one read request of `bytes` in total (GetItem: the item; Query and Scan: the
/// items read together; BatchGetItem: call it once per item): one per started 4 KB, at least
/// one per request, halved when eventually consistent.
pub fn read_units(bytes: u64, consistent: bool) -> f64 {
    let units = bytes.div_ceil(READ_UNIT_BYTES).max(1) as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

/// DynamoDB's size of a number value: one byte per two significant digits, plus one
/// (leading and trailing zeros, the sign and the decimal point do not count).
pub fn number_bytes(number: &str) -> u64 {
    let digits: String = number
        .trim_start_matches(['-', '+'])
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    // Zero has one significant digit.
    let significant_digits = significant.len().max(1) as u64;
    significant_digits.div_ceil(2) + 1
}

/// SQS requests one message costs to send (or that one receive or delete request costs, for
/// a batch): one per started 64 KB, at least one.
pub fn sqs_requests(message_bytes: u64) -> u64 {
    message_bytes.div_ceil(SQS_CHUNK_BYTES).max(1)
}

/// What Lambda bills for `invocations` that ran `handler_seconds` in total at `memory_mb`
/// (arm64). Each invocation's duration is billed by the millisecond, which the caller's
/// measured seconds already are, to within a millisecond an invocation.
pub fn lambda_cost_usd(invocations: u64, handler_seconds: f64, memory_mb: u64) -> f64 {
    invocations as f64 * LAMBDA_USD_PER_MILLION_INVOCATIONS / 1e6
        + handler_seconds * (memory_mb as f64 / 1024.0) * LAMBDA_ARM64_USD_PER_GB_SECOND
}

/// What S3 Tables' managed compaction bills for processing `objects` of `bytes` in total.
pub fn s3_tables_cost_usd(objects: u64, bytes: u64) -> f64 {
    objects as f64 * S3_TABLES_USD_PER_1000_OBJECTS / 1000.0 + bytes as f64 / 1e9 * S3_TABLES_USD_PER_GB
}

/// Requests by type, as a seal (or an estimate of one) makes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub s3_get: u64,
    pub s3_head: u64,
    pub s3_put: u64,
    pub s3_multipart_create: u64,
    pub s3_upload_part: u64,
    pub s3_multipart_complete: u64,
    pub s3_list: u64,
    pub s3_get_tagging: u64,
    pub s3_put_tagging: u64,
    /// DeleteObject and DeleteObjects are free.
    pub s3_delete: u64,
    /// DynamoDB read request units (rounded up once, over all requests counted).
    pub manifest_reads: u64,
    /// DynamoDB write request units, table and global secondary indexes.
    pub manifest_writes: u64,
    /// SQS requests: S3 event messages sent, and the receive and delete batches.
    pub sqs_requests: u64,
}

impl RequestCounts {
    fn s3_put_class(&self) -> u64 {
        self.s3_put
            + self.s3_multipart_create
            + self.s3_upload_part
            + self.s3_multipart_complete
            + self.s3_list
            + self.s3_put_tagging
    }

    fn s3_get_class(&self) -> u64 {
        self.s3_get + self.s3_head + self.s3_get_tagging
    }

    /// The requests' cost in US dollars, with the manifest priced as DynamoDB on-demand
    /// (one request unit per read or write of an item under 1 KB).
    pub fn cost_usd(&self) -> f64 {
        self.s3_put_class() as f64 * S3_PUT_CLASS_USD_PER_1000 / 1000.0
            + self.s3_get_class() as f64 * S3_GET_CLASS_USD_PER_1000 / 1000.0
            + self.manifest_writes as f64 * DYNAMODB_WRITE_USD_PER_MILLION / 1e6
            + self.manifest_reads as f64 * DYNAMODB_READ_USD_PER_MILLION / 1e6
            + self.sqs_requests as f64 * SQS_USD_PER_MILLION / 1e6
    }

    pub fn total(&self) -> u64 {
        self.s3_put_class()
            + self.s3_get_class()
            + self.s3_delete
            + self.manifest_reads
            + self.manifest_writes
            + self.sqs_requests
    }
}

impl AddAssign for RequestCounts {
    fn add_assign(&mut self, other: Self) {
        self.s3_get += other.s3_get;
        self.s3_head += other.s3_head;
        self.s3_put += other.s3_put;
        self.s3_multipart_create += other.s3_multipart_create;
        self.s3_upload_part += other.s3_upload_part;
        self.s3_multipart_complete += other.s3_multipart_complete;
        self.s3_list += other.s3_list;
        self.s3_get_tagging += other.s3_get_tagging;
        self.s3_put_tagging += other.s3_put_tagging;
        self.s3_delete += other.s3_delete;
        self.manifest_reads += other.manifest_reads;
        self.manifest_writes += other.manifest_writes;
        self.sqs_requests += other.sqs_requests;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_uses_the_price_of_each_request_class() {
        let counts = RequestCounts {
            s3_get: 1_000_000,
            s3_put_tagging: 1_000_000,
            manifest_writes: 1_000_000,
            ..Default::default()
        };
        let expected = 0.4 + 5.0 + 0.625;
        assert!((counts.cost_usd() - expected).abs() < 1e-9, "{}", counts.cost_usd());
        let free = RequestCounts { s3_delete: 10, ..Default::default() };
        assert_eq!(free.cost_usd(), 0.0);
        assert_eq!(free.total(), 10);
    }

    /// The examples of DynamoDB's developer guide ("DynamoDB read and write operations", "Item
    /// sizes and formats") and its on-demand pricing page.
    #[test]
    fn dynamodb_units_match_the_documented_examples() {
        const KB: u64 = 1024;
        // "a standard write request of a 1 KB item requires one write request unit, a standard
        // write request of a 3 KB item requires three ..., and a transactional write request of
        // a 3 KB item requires six".
        assert_eq!(write_units(KB), 1);
        assert_eq!(write_units(3 * KB), 3);
        assert_eq!(transactional_write_units(3 * KB), 6);
        // Up to 1 KB is one unit; a byte more is two; an empty write still one.
        assert_eq!(write_units(500), 1);
        assert_eq!(write_units(KB + 1), 2);
        assert_eq!(write_units(0), 1);
        // "reading a 3,500-byte item consumes the same throughput as reading a 4 KB item".
        assert_eq!(read_units(3500, true), 1.0);
        // "an 8 KB item ... 2 read units [strongly consistent] ... 1 [eventually consistent]".
        assert_eq!(read_units(8 * KB, true), 2.0);
        assert_eq!(read_units(8 * KB, false), 1.0);
        // "If you read a 10 KB item, DynamoDB rounds the item size to 12 KB."
        assert_eq!(read_units(10 * KB, true), 3.0);
        // "BatchGetItem reads a 1.5 KB item and a 6.5 KB item: 12 KB (4 KB + 8 KB)", each
        // item on its own.
        assert_eq!(read_units(1536, true) + read_units(6656, true), 3.0);
        // A Query that matched nothing still costs its minimum.
        assert_eq!(read_units(0, false), 0.5);
        // Numbers: one byte per two significant digits, plus one; zeros at either end,
        // the sign and the point are free.
        assert_eq!(number_bytes("12345"), 4);
        assert_eq!(number_bytes("1"), 2);
        assert_eq!(number_bytes("0"), 2);
        assert_eq!(number_bytes("-1200"), 2);
        assert_eq!(number_bytes("0.0012"), 2);
        assert_eq!(number_bytes("1700000000"), 2);
        assert_eq!(number_bytes("1734567890123"), 8);
    }

    #[test]
    fn sqs_lambda_and_s3_tables_are_priced_as_published() {
        assert_eq!(sqs_requests(1200), 1);
        assert_eq!(sqs_requests(64 * 1024), 1);
        assert_eq!(sqs_requests(64 * 1024 + 1), 2);
        let sqs = RequestCounts { sqs_requests: 1_000_000, ..Default::default() };
        assert!((sqs.cost_usd() - 0.40).abs() < 1e-9);
        // A million 100 ms invocations at 1,024 MB: $0.20 + 100,000 GB-s.
        let lambda = lambda_cost_usd(1_000_000, 100_000.0, 1024);
        assert!((lambda - (0.20 + 1.33334)).abs() < 1e-6, "{lambda}");
        // A million objects of 1 KB: $2.00 + 1 GB at $0.005.
        let tables = s3_tables_cost_usd(1_000_000, 1_000_000_000);
        assert!((tables - 2.005).abs() < 1e-9, "{tables}");
    }
}
