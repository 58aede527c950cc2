//! Conformance suites and fault injection.

pub mod faults;
pub mod manifest_conformance;
#[cfg(feature = "aws")]
pub mod s3_server;
pub mod store_conformance;
