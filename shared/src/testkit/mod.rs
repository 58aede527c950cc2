//! Conformance suites and fault injection.
pub mod faults;
