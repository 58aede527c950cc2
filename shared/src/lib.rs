//! # compactor
//!
//! Event-driven, incremental compaction of small S3 objects, with a manifest table as the
//! system's memory and audit log.
//!
//! Data lakes fill with tiny objects that cost money per object (lifecycle transitions,
//! Standard-IA's 128 KiB minimum) and time per file (Athena, Spark, DuckDB). Instead of listing
//! whole prefixes on a schedule, this crate records every object as its S3 event arrives
//! ([`engine::Compactor::ingest`]), and once a date partition has closed it *seals* it
//! ([`engine::Compactor::seal_closed`]): the partition's objects are streamed into a few large
//! outputs under a mirrored destination prefix, the manifest records which byte range of which
//! output holds each source, and only then are the sources marked for lifecycle expiry.
//!
//! The crate is split the way the protocol is:
//! - [`domain`]: layout parsing, partition periods, planning, formats, records. Pure, no I/O.
//! - [`ports`]: the [`ports::ObjectStore`] and [`ports::Manifest`] traits, with the guarantees
//!   every adapter gives.
//! - [`adapters`]: the embedded backend (a local directory and SQLite); the AWS adapters live
//!   behind their own features.
//! - [`engine`]: ingest, seal, audit, verify, restore and plan, written once against the ports.
//! - [`arrivals`]: ingest's records in batches read back in key order, in bounded memory
//!   (groundwork of issue #12's ingest in batches; not wired into an adapter yet).
//!
//! ```ignore
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use compactor::{adapters, clock::SystemClock, config::Config, engine::Compactor};
//!
//! let config = Config::embedded_default("my-logs");
//! let store = Arc::new(adapters::local_dir::LocalDir::open("./data/buckets")?);
//! let manifest = Arc::new(adapters::sqlite::SqliteManifest::open("./data/manifest.sqlite")?);
//! let compactor = Compactor::new(config, store, manifest, Arc::new(SystemClock));
//! let report = compactor.seal_closed(&Default::default()).await?;
//! println!("sealed {} partitions", report.partitions_sealed);
//! # Ok(()) }
//! ```

pub mod adapters;
pub mod allocator;
pub mod arrivals;
#[cfg(feature = "aws")]
pub mod aws;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engine;
pub mod event;
pub mod metrics;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod ports;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use config::Config;
