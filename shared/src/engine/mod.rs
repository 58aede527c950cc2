//! Ingest, seal, audit, verify, restore and plan, written once against the ports.
//!
//! ```text
//!  events ──▶ ingest ──▶ Manifest (pending objects, per partition)
//!                              │ closed partitions
//!                              ▼
//!  seal: 1 pick ─▶ 2 lock (generation+1) ─▶ recover ─▶ 3 plan ─▶ for each output:
//!        4 write (stream GETs ─▶ parts, or UploadPartCopy for large sources; sha256 of every byte)
//!        ─▶ 5 place, commit, mark compacted, expire sources
//!        ─▶ 6 release (sealed, or open again if a late object arrived)
//! ```
//!
//! Every step can be repeated; a run that crashes anywhere leaves a state the next run
//! finishes (see [`seal`] for how each step recovers).

pub mod audit;
pub mod ingest;
#[cfg(feature = "parquet")]
mod parquet_checks;
#[cfg(feature = "parquet")]
mod parquet_output;
#[cfg(feature = "parquet")]
mod parquet_rows;
pub mod plan;
pub mod restore;
pub mod seal;
mod seen;
pub mod verify;
mod writer;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::event::EventError;
use crate::ports::{Manifest, ManifestError, ObjectStore, StoreError};

pub use ingest::{IngestReport, SkipReason};
pub use seal::{PartitionSealReport, SealOptions, SealReport};
pub use verify::VerifyReport;

/// Errors of the engine, each from one port or from the input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("{0}")]
    InvalidInput(String),
    /// Bytes read back do not match the sha256 recorded for them: neither the input's fault
    /// nor one a retry fixes (the CLI exits 3, as `verify` does).
    #[error("{0}")]
    Mismatch(String),
}

impl EngineError {
    /// True when the input, not the system, is at fault (bad event, unknown key, missing
    /// bucket): the CLI exits with a distinct code, and a retry will not help.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            EngineError::Event(_)
                | EngineError::InvalidInput(_)
                | EngineError::Store(StoreError::NoSuchBucket { .. })
                | EngineError::Manifest(ManifestError::NotFound { .. })
        )
    }
}

/// The engine: configuration, the two ports and a clock.
#[derive(Debug, Clone)]
pub struct Compactor {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) manifest: Arc<dyn Manifest>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Names this process as lock owner.
    pub(crate) owner: String,
}

impl Compactor {
    pub fn new(
        config: Config,
        store: Arc<dyn ObjectStore>,
        manifest: Arc<dyn Manifest>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let owner = format!("{}-{}", hostname_hint(), uuid::Uuid::new_v4().simple());
        Self { config: Arc::new(config), store, manifest, clock, owner }
    }

    /// Names this engine's lock owner (e.g. the Lambda request id), for audit trails.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn manifest(&self) -> &Arc<dyn Manifest> {
        &self.manifest
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

fn hostname_hint() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "s3-compactor".to_string())
}
