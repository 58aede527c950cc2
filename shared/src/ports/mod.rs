//! The two ports the engine is written against. Each trait's documentation lists what every
//! adapter guarantees; the conformance suites in `testkit` check those guarantees on every
//! backend.

pub mod manifest;
pub mod object_store;

pub use manifest::{
    HeldLock, IngestOutcome, Lease, Manifest, ManifestError, NewObject, ObjectQuery, RemovedObject, SourcePlacement,
};
pub use object_store::{
    CompletedPart, DeleteRequest, GetOptions, GetRequest, GetResult, ListPage, ObjectMeta, ObjectStore, PutOptions,
    SeenAtRead, StoreError, Tag, TagOutcome, TagRequest, MAX_KEYS_PER_DELETE,
};
