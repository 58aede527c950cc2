//! Fault injection around the ports: a crash at the Nth call.
//!
//! [`FaultPlan::crash_at`] makes the Nth port call (counting store and manifest calls together,
//! in the order they are made) and every call after it fail, as if the process died there.
//! With [`CrashMode::AfterCall`] the Nth call takes effect first and only its answer is lost —
//! the nastier case, where the store or manifest changed but the caller never learnt it.
//! The wrappers also count calls per operation, which tests and benchmarks read.
//!
//! [`FaultPlan::refuse_deletes_of`] makes `delete_many` answer an error for some keys only (the
//! rest of the batch goes through), as S3's DeleteObjects does when it cannot delete a key.
//! [`FaultPlan::refuse_records_of`] does the same to the manifest's recording of some objects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use crate::domain::partition::PartitionKey;
use crate::domain::records::{ObjectRecord, OutputRecord, OutputState, PartitionRecord};
use crate::ports::manifest::SourcePlacement;
use crate::ports::{
    HeldLock, IngestOutcome, Lease, Manifest, ManifestError, NewObject, ObjectQuery, RemovedObject, StoreError,
};
use crate::testkit::forwarding::{Layered, StoreAnswer, StoreCall, StoreLayer};

/// Whether the crashing call takes effect before the crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    BeforeCall,
    AfterCall,
}

/// Shared by the wrappers of one "process": counts calls and decides when it dies.
#[derive(Debug)]
pub struct FaultPlan {
    calls: AtomicU64,
    crash_at: AtomicU64,
    after_call: AtomicBool,
    crashed: AtomicBool,
    crashed_in: Mutex<Option<String>>,
    sequence: Mutex<Vec<&'static str>>,
    refused_deletes: Mutex<BTreeSet<String>>,
    refused_records: Mutex<BTreeSet<String>>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            crash_at: AtomicU64::new(0),
            after_call: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            crashed_in: Mutex::new(None),
            sequence: Mutex::new(Vec::new()),
            refused_deletes: Mutex::new(BTreeSet::new()),
            refused_records: Mutex::new(BTreeSet::new()),
        }
    }
}

enum Verdict {
    Proceed,
    Fail,
    ProceedThenFail,
}

impl FaultPlan {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Crash at call `call_number` (1-based) and at every call after it.
    pub fn crash_at(&self, call_number: u64, mode: CrashMode) {
        self.after_call.store(mode == CrashMode::AfterCall, Ordering::SeqCst);
        self.crash_at.store(call_number, Ordering::SeqCst);
    }

    /// From now on (until [`FaultPlan::heal`]), `delete_many` answers `AccessDenied` for these
    /// keys and leaves them in the store; the other keys of a batch are deleted.
    pub fn refuse_deletes_of(&self, keys: impl IntoIterator<Item = impl Into<String>>) {
        self.refused_deletes.lock().expect("fault plan mutex poisoned").extend(keys.into_iter().map(Into::into));
    }

    fn delete_is_refused(&self, key: &str) -> bool {
        self.refused_deletes.lock().expect("fault plan mutex poisoned").contains(key)
    }

    /// From now on (until [`FaultPlan::heal`]), recording an object with one of these keys
    /// fails. A batch (`record_objects`) that holds one records the others first, then fails,
    /// as DynamoDB's side-by-side writes do when one of them fails.
    pub fn refuse_records_of(&self, keys: impl IntoIterator<Item = impl Into<String>>) {
        self.refused_records.lock().expect("fault plan mutex poisoned").extend(keys.into_iter().map(Into::into));
    }

    fn record_is_refused(&self, key: &str) -> bool {
        self.refused_records.lock().expect("fault plan mutex poisoned").contains(key)
    }

    /// A new process: no crash planned, no refused deletes or records, counters from zero.
    pub fn heal(&self) {
        self.refused_deletes.lock().expect("fault plan mutex poisoned").clear();
        self.refused_records.lock().expect("fault plan mutex poisoned").clear();
        self.crash_at.store(0, Ordering::SeqCst);
        self.crashed.store(false, Ordering::SeqCst);
        self.calls.store(0, Ordering::SeqCst);
        *self.crashed_in.lock().expect("fault plan mutex poisoned") = None;
        self.sequence.lock().expect("fault plan mutex poisoned").clear();
    }

    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// The operation the crash happened in.
    pub fn crashed_in(&self) -> Option<String> {
        self.crashed_in.lock().expect("fault plan mutex poisoned").clone()
    }

    /// Calls made since the last heal.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls per operation (`store.get`, `manifest.commit_output`, …) since the last heal.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for operation in self.sequence.lock().expect("fault plan mutex poisoned").iter() {
            *counts.entry(*operation).or_default() += 1;
        }
        counts
    }

    /// Every call's operation since the last heal, in the order the calls were made.
    pub fn sequence(&self) -> Vec<&'static str> {
        self.sequence.lock().expect("fault plan mutex poisoned").clone()
    }

    fn verdict(&self, operation: &'static str) -> Verdict {
        self.sequence.lock().expect("fault plan mutex poisoned").push(operation);
        if self.crashed.load(Ordering::SeqCst) {
            return Verdict::Fail;
        }
        let call_number = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let crash_at = self.crash_at.load(Ordering::SeqCst);
        if crash_at == 0 || call_number < crash_at {
            return Verdict::Proceed;
        }
        if self.crashed.swap(true, Ordering::SeqCst) {
            return Verdict::Fail;
        }
        *self.crashed_in.lock().expect("fault plan mutex poisoned") = Some(operation.to_string());
        if self.after_call.load(Ordering::SeqCst) {
            Verdict::ProceedThenFail
        } else {
            Verdict::Fail
        }
    }
}

/// An [`ObjectStore`] that obeys a [`FaultPlan`]: every port method forwarded through the plan
/// (see [`crate::testkit::forwarding`]), the batched ones included. `.per_source()` takes S3's
/// path instead, one request per source, each a call the plan can crash in.
pub type FaultyStore = Layered<Arc<FaultPlan>>;

fn store_crash(bucket: &str, key: &str) -> StoreError {
    StoreError::backend(bucket, key, "injected crash")
}

impl StoreLayer for FaultPlan {
    fn around<'a, T: Send + 'a>(&'a self, call: StoreCall<'a>, forward: StoreAnswer<'a, T>) -> StoreAnswer<'a, T> {
        Box::pin(async move {
            match self.verdict(call.operation) {
                Verdict::Proceed => forward.await,
                Verdict::Fail => Err(store_crash(call.bucket, call.key)),
                Verdict::ProceedThenFail => {
                    let _ = forward.await;
                    Err(store_crash(call.bucket, call.key))
                }
            }
        })
    }

    fn refuses_delete(&self, _bucket: &str, key: &str) -> Option<String> {
        self.delete_is_refused(key).then(|| "injected refusal of this key".to_owned())
    }
}

/// A [`Manifest`] that obeys a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultyManifest {
    inner: Arc<dyn Manifest>,
    plan: Arc<FaultPlan>,
}

impl FaultyManifest {
    pub fn new(inner: Arc<dyn Manifest>, plan: Arc<FaultPlan>) -> Self {
        Self { inner, plan }
    }
}

fn manifest_crash() -> ManifestError {
    ManifestError::backend("fault", "injected crash")
}

fn record_refused(key: &str) -> ManifestError {
    ManifestError::backend("fault", format!("injected refusal to record {key}"))
}

macro_rules! faulty_manifest_call {
    ($self:ident, $operation:literal, $call:expr) => {{
        match $self.plan.verdict($operation) {
            Verdict::Proceed => $call.await,
            Verdict::Fail => Err(manifest_crash()),
            Verdict::ProceedThenFail => {
                let _ = $call.await;
                Err(manifest_crash())
            }
        }
    }};
}

#[async_trait]
impl Manifest for FaultyManifest {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn record_object(&self, object: &NewObject) -> Result<IngestOutcome, ManifestError> {
        if self.plan.record_is_refused(&object.key) {
            return Err(record_refused(&object.key));
        }
        faulty_manifest_call!(self, "manifest.record_object", self.inner.record_object(object))
    }

    async fn record_objects(&self, objects: &[NewObject]) -> Result<Vec<IngestOutcome>, ManifestError> {
        let refused = objects.iter().find(|object| self.plan.record_is_refused(&object.key));
        let Some(refused) = refused else {
            return faulty_manifest_call!(self, "manifest.record_objects", self.inner.record_objects(objects));
        };
        let others: Vec<NewObject> =
            objects.iter().filter(|object| !self.plan.record_is_refused(&object.key)).cloned().collect();
        faulty_manifest_call!(self, "manifest.record_objects", self.inner.record_objects(&others))?;
        Err(record_refused(&refused.key))
    }

    async fn record_removal(&self, removal: &RemovedObject) -> Result<IngestOutcome, ManifestError> {
        faulty_manifest_call!(self, "manifest.record_removal", self.inner.record_removal(removal))
    }

    async fn closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<PartitionRecord>, ManifestError> {
        faulty_manifest_call!(self, "manifest.closed_partitions", self.inner.closed_partitions(now, limit))
    }

    async fn closed_partition_keys(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PartitionKey>, ManifestError> {
        faulty_manifest_call!(self, "manifest.closed_partition_keys", self.inner.closed_partition_keys(now, limit))
    }

    async fn locked_closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<HeldLock>, ManifestError> {
        faulty_manifest_call!(
            self,
            "manifest.locked_closed_partitions",
            self.inner.locked_closed_partitions(now, limit)
        )
    }

    async fn partition(&self, key: &PartitionKey) -> Result<Option<PartitionRecord>, ManifestError> {
        faulty_manifest_call!(self, "manifest.partition", self.inner.partition(key))
    }

    async fn partitions(
        &self,
        start_after: Option<&PartitionKey>,
        limit: usize,
    ) -> Result<Vec<PartitionRecord>, ManifestError> {
        faulty_manifest_call!(self, "manifest.partitions", self.inner.partitions(start_after, limit))
    }

    async fn acquire(
        &self,
        partition: &PartitionKey,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<Lease, ManifestError> {
        faulty_manifest_call!(self, "manifest.acquire", self.inner.acquire(partition, owner, now, lease_for))
    }

    async fn renew(&self, lease: &Lease, now: DateTime<Utc>, lease_for: Duration) -> Result<Lease, ManifestError> {
        faulty_manifest_call!(self, "manifest.renew", self.inner.renew(lease, now, lease_for))
    }

    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> Result<PartitionRecord, ManifestError> {
        faulty_manifest_call!(self, "manifest.release", self.inner.release(lease, now))
    }

    async fn objects(&self, partition: &PartitionKey, query: &ObjectQuery) -> Result<Vec<ObjectRecord>, ManifestError> {
        faulty_manifest_call!(self, "manifest.objects", self.inner.objects(partition, query))
    }

    /// Under the name of the call it stands for (`objects` of the pending ones), so a fault
    /// plan's steps stay the same; forwarded, so a test takes the inner manifest's own path.
    async fn pending_sizes(
        &self,
        partition: &PartitionKey,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, ManifestError> {
        faulty_manifest_call!(self, "manifest.objects", self.inner.pending_sizes(partition, start_after, limit))
    }

    async fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, ManifestError> {
        faulty_manifest_call!(self, "manifest.object", self.inner.object(bucket, key))
    }

    async fn output_sources(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, ManifestError> {
        faulty_manifest_call!(
            self,
            "manifest.output_sources",
            self.inner.output_sources(output_bucket, output_key, start_after, limit)
        )
    }

    async fn mark_missing(&self, lease: &Lease, key: &str, sequencer: &str, note: &str) -> Result<(), ManifestError> {
        faulty_manifest_call!(self, "manifest.mark_missing", self.inner.mark_missing(lease, key, sequencer, note))
    }

    async fn begin_output(&self, lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError> {
        faulty_manifest_call!(self, "manifest.begin_output", self.inner.begin_output(lease, output))
    }

    async fn record_placements(
        &self,
        lease: &Lease,
        output_key: &str,
        placements: &[SourcePlacement],
    ) -> Result<Vec<String>, ManifestError> {
        faulty_manifest_call!(
            self,
            "manifest.record_placements",
            self.inner.record_placements(lease, output_key, placements)
        )
    }

    async fn commit_output(
        &self,
        lease: &Lease,
        output_bucket: &str,
        output_key: &str,
        size: u64,
        sha256: &str,
        object_count: u64,
        now: DateTime<Utc>,
    ) -> Result<(), ManifestError> {
        faulty_manifest_call!(
            self,
            "manifest.commit_output",
            self.inner.commit_output(lease, output_bucket, output_key, size, sha256, object_count, now)
        )
    }

    async fn mark_compacted(&self, partition: &PartitionKey, output_key: &str) -> Result<u64, ManifestError> {
        faulty_manifest_call!(self, "manifest.mark_compacted", self.inner.mark_compacted(partition, output_key))
    }

    async fn mark_compacted_between(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        least: &str,
        greatest: &str,
    ) -> Result<u64, ManifestError> {
        faulty_manifest_call!(
            self,
            "manifest.mark_compacted_between",
            self.inner.mark_compacted_between(partition, output_key, least, greatest)
        )
    }

    async fn mark_expiry(&self, bucket: &str, keys: &[String], at: DateTime<Utc>) -> Result<(), ManifestError> {
        faulty_manifest_call!(self, "manifest.mark_expiry", self.inner.mark_expiry(bucket, keys, at))
    }

    async fn output_placements(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<SourcePlacement>, ManifestError> {
        faulty_manifest_call!(
            self,
            "manifest.output_placements",
            self.inner.output_placements(output_bucket, output_key, start_after, limit)
        )
    }

    async fn advance_expiry(
        &self,
        output_bucket: &str,
        output_key: &str,
        through: (u64, &str),
        done: bool,
        at: DateTime<Utc>,
    ) -> Result<(), ManifestError> {
        faulty_manifest_call!(
            self,
            "manifest.advance_expiry",
            self.inner.advance_expiry(output_bucket, output_key, through, done, at)
        )
    }

    async fn abandon_output(&self, lease: &Lease, output_bucket: &str, output_key: &str) -> Result<(), ManifestError> {
        faulty_manifest_call!(
            self,
            "manifest.abandon_output",
            self.inner.abandon_output(lease, output_bucket, output_key)
        )
    }

    async fn outputs(
        &self,
        partition: &PartitionKey,
        state: Option<OutputState>,
    ) -> Result<Vec<OutputRecord>, ManifestError> {
        faulty_manifest_call!(self, "manifest.outputs", self.inner.outputs(partition, state))
    }

    async fn output(&self, bucket: &str, key: &str) -> Result<Option<OutputRecord>, ManifestError> {
        faulty_manifest_call!(self, "manifest.output", self.inner.output(bucket, key))
    }
}
