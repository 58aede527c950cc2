//! Conformance suites and fault injection.

pub mod manifest_conformance;
