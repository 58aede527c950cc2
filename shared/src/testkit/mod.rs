//! Conformance suites, fault injection and the integration tier's local servers.

pub mod faults;
pub mod forwarding;
pub mod manifest_conformance;
#[cfg(feature = "aws")]
pub mod s3_server;
pub mod servers;
pub mod store_conformance;
