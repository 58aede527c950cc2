//! The pure domain: everything the compactor decides, with no I/O.
//!
//! - [`arrivals`]: ingest's records in batches (encoding, and the per-key fold to today's record).
//! - [`combined`]: a key's record from a stored per-object record and its arrival records.
//! - [`layout`]: where the date sits in a key, and so which partition a key belongs to.
//! - [`partition`]: a partition's identity, period and closing time.
//! - [`format`]: how sources are joined (bytes, lines, gzip members) and which are refused.
//! - [`records`]: the manifest's three kinds of record and their states.
//! - [`derived`]: what an output's commit makes of its sources' states (the rule both backends share).
//! - [`plan`]: bin-packing a partition's pending objects into outputs.
//! - [`ranges`]: the same plan as key ranges, so a seal holds a window of an output's sources.
//! - [`sequencer`]: ordering S3 events for one key.
//! - [`cost`]: request counts and their price.

pub mod arrivals;
pub mod combined;
pub mod cost;
pub mod derived;
pub mod format;
pub mod layout;
pub mod partition;
pub mod plan;
pub mod ranges;
pub mod records;
pub mod sequencer;
