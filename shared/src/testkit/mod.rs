//! Conformance suites and fault injection.

pub mod store_conformance;
