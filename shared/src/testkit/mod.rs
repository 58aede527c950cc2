//! Conformance suites and fault injection.

pub mod faults;
pub mod manifest_conformance;
pub mod store_conformance;
