//! Request counts and what they cost at published us-east-1 prices (S3 Standard and DynamoDB
//! on-demand, as listed on the AWS pricing pages in 2025). Lambda time and storage are left out:
//! they depend on the deployment, requests do not.

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
    pub manifest_reads: u64,
    pub manifest_writes: u64,
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
    }

    pub fn total(&self) -> u64 {
        self.s3_put_class() + self.s3_get_class() + self.s3_delete + self.manifest_reads + self.manifest_writes
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
}
