//! Conformance suites, fault injection and the integration tier's local servers.

pub mod faults;
pub mod manifest_conformance;
pub mod servers;
