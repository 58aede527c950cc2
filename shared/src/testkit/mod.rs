//! Conformance suites, fault injection, the integration tier's local servers, and DuckDB as a
//! real reader of the outputs.

pub mod duckdb;
pub mod faults;
pub mod forwarding;
pub mod manifest_conformance;
#[cfg(feature = "parquet")]
pub mod parquet_files;
#[cfg(feature = "aws")]
pub mod s3_server;
pub mod servers;
pub mod store_conformance;
