//! The manifest conformance suite: every guarantee of [`Manifest`], written once, run against
//! every adapter.
//!
//! Each case is a `pub async fn` that takes a fresh, empty manifest and panics on a broken
//! guarantee. Times are fixed and passed in explicitly (`now`), so no case sleeps and every run
//! sees the same leases expire. An adapter runs the whole suite with
//! [`manifest_conformance_tests!`](crate::manifest_conformance_tests), which makes one
//! `#[tokio::test]` per case:
//!
//! ```ignore
//! async fn new_manifest() -> (std::sync::Arc<dyn Manifest>, ()) {
//!     (std::sync::Arc::new(SqliteManifest::in_memory().unwrap()), ())
//! }
//! compactor::manifest_conformance_tests!(new_manifest);
//! ```
//!
//! A DynamoDB-backed run creates a fresh table in `new_manifest` and returns a guard that drops
//! it as the second value. A backend whose server may be absent uses
//! `manifest_conformance_tests!(optional new_manifest)`, where `new_manifest` returns an
//! `Option` and `None` skips the case (see `testkit::servers`).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::domain::partition::{Partition, PartitionKey, Period};
use crate::domain::records::{
    ExpiryCursor, ObjectRecord, ObjectState, OutputRecord, OutputState, PartitionRecord, PartitionState, Placement,
};
use crate::domain::sequencer::{scan_sequencer, SCAN_SEQUENCER};
use crate::ports::manifest::{
    HeldLock, IngestOutcome, Lease, Manifest, ManifestError, NewObject, ObjectQuery, RemovedObject, SourcePlacement,
};

/// Makes one `#[tokio::test]` per conformance case for one backend.
///
/// The argument is the path of an `async fn() -> (Arc<dyn Manifest>, G)` that returns a fresh,
/// empty manifest; `G` is anything that must live as long as the test (a temporary directory,
/// a guard that deletes a DynamoDB table) and is dropped when it ends. Call the macro inside a
/// module of its own per backend, since the tests are named after the cases:
///
/// ```ignore
/// mod in_memory {
///     compactor::manifest_conformance_tests!(super::new_in_memory_manifest);
/// }
/// ```
///
/// The multi-writer race runs on a multi-threaded runtime, so that its racers really run at the
/// same time.
#[macro_export]
macro_rules! manifest_conformance_tests {
    // A backend that may be absent (a server the integration tier starts): the factory returns
    // `Option<(Arc<dyn Manifest>, G)>`, and `None` (after it said why) skips the case.
    (optional $new_manifest:path) => {
        $crate::manifest_conformance_tests!(@suite optional $new_manifest);
    };
    ($new_manifest:path) => {
        $crate::manifest_conformance_tests!(@suite required $new_manifest);
    };
    (@suite $mode:ident $new_manifest:path) => {
        $crate::manifest_conformance_tests!(@cases $mode $new_manifest;
            record_object_records_a_new_pending_object_and_its_partition,
            record_object_ignores_replays_and_older_events,
            a_rescan_records_an_overwritten_version_and_an_event_confirms_a_scanned_one,
            record_object_newer_version_replaces_the_record_and_reopens_the_partition,
            record_objects_records_a_batch_as_one_at_a_time_would,
            record_removal_takes_only_pending_objects_out_of_the_plan,
            closed_partitions_lists_closed_pending_unlocked_partitions_in_close_order,
            closed_partitions_returns_a_partition_whose_lease_expired,
            closed_partitions_returns_an_interrupted_seal_with_nothing_pending,
            locked_closed_partitions_names_the_live_locks_closed_partitions_wait_for,
            closed_partition_keys_are_those_of_closed_partitions_and_maybe_some_without_work,
            acquire_is_exclusive_and_bumps_the_generation,
            renew_extends_a_held_lease,
            a_takeover_after_expiry_fences_the_old_lease,
            release_seals_when_nothing_is_pending_and_reopens_after_a_late_object,
            placements_are_skipped_for_a_superseded_version,
            begin_output_again_updates_a_writing_output,
            commit_output_is_idempotent_and_never_revives_an_abandoned_output,
            mark_compacted_needs_a_committed_output,
            an_outputs_commit_makes_its_sources_compacted_before_mark_compacted,
            a_removal_of_a_compacted_source_changes_nothing_unless_it_is_of_a_newer_version,
            object_reads_a_source_compacted_from_its_outputs_commit,
            a_reopened_partitions_second_seal_scans_only_its_late_objects,
            an_event_confirming_a_scanned_compacted_source_keeps_it_compacted,
            mark_missing_only_marks_the_planned_pending_version,
            mark_expiry_keeps_the_first_time,
            an_expiry_cursor_marks_an_outputs_sources_up_to_where_it_stopped,
            output_sources_pages_by_offset,
            output_sources_pages_past_empty_sources_that_share_an_offset,
            partition_counts_follow_objects_and_outputs,
            objects_pages_in_key_order_with_filters,
            pending_sizes_are_the_pending_objects_keys_and_sizes_in_key_order,
            partitions_pages_in_bucket_and_path_order,
            outputs_are_listed_by_generation_then_part_number,
        );

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn acquire_race_has_exactly_one_winner() {
            let Some((manifest, _keep_alive)) = $crate::manifest_conformance_tests!(@new $mode $new_manifest) else {
                return;
            };
            $crate::testkit::manifest_conformance::acquire_race_has_exactly_one_winner(manifest).await;
        }
    };
    (@new required $new_manifest:path) => {
        Some($new_manifest().await)
    };
    (@new optional $new_manifest:path) => {
        $new_manifest().await
    };
    (@cases $mode:ident $new_manifest:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((manifest, _keep_alive)) = $crate::manifest_conformance_tests!(@new $mode $new_manifest) else {
                    return;
                };
                $crate::testkit::manifest_conformance::$case(&*manifest).await;
            }
        )+
    };
}

// ── what each backend does where the port leaves it a choice ─────────────────────────────────

/// What an adapter does where the port allows more than one answer. A case that depends on
/// one states what it expects of each backend through these flags, instead of asserting only
/// inside an `if` that one backend never enters (see object_store's integration suite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `closed_partition_keys` also lists closed, unlocked partitions without work (every
    /// object removed): DynamoDB answers from its index without counting; SQLite counts, as
    /// `closed_partitions` does, and leaves them out.
    pub lists_partitions_without_work: bool,
    /// A committed output's sources read compacted everywhere from the commit on, because the
    /// state is derived from its placements (`domain::derived`), not flipped per source:
    /// DynamoDB. Then `mark_compacted` writes nothing per source and answers how many sources
    /// the output committed. SQLite flips them in `mark_compacted` (free there): its counts
    /// and pending scans show them pending until then, and it answers how many it flipped.
    pub derives_compacted_at_commit: bool,
}

impl Capabilities {
    /// The flags of the backend behind `manifest`, by its name.
    pub fn of(manifest: &dyn Manifest) -> Self {
        match manifest.name() {
            "sqlite" => Capabilities { lists_partitions_without_work: false, derives_compacted_at_commit: false },
            "dynamodb" => Capabilities { lists_partitions_without_work: true, derives_compacted_at_commit: true },
            other => panic!("the conformance suite does not know backend {other:?}: add its flags to Capabilities::of"),
        }
    }
}

// ── fixtures ─────────────────────────────────────────────────────────────────────────────────

/// The bucket every case's sources live in.
pub const SOURCE_BUCKET: &str = "conformance-source";
/// The bucket every case's outputs are written to.
pub const OUTPUT_BUCKET: &str = "conformance-output";

const LEASE_MINUTES: i64 = 15;

/// The lease every case takes.
pub fn lease_for() -> Duration {
    Duration::minutes(LEASE_MINUTES)
}

/// A fixed instant, so runs never depend on the wall clock.
pub fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).expect("a fixture time is valid RFC 3339").with_timezone(&Utc)
}

/// The daily partition `{prefix}/2024/01/{day}/`, which closes 90 minutes after its day ends.
pub fn day_partition(prefix: &str, day: u32) -> Partition {
    let start = at(&format!("2024-01-{day:02}T00:00:00Z"));
    Partition { path: format!("{prefix}/2024/01/{day:02}/"), period: Period { start, end: start + Duration::days(1) } }
}

pub fn closes_at(partition: &Partition) -> DateTime<Utc> {
    partition.period.closes_at(Duration::minutes(90))
}

pub fn key_of(partition: &Partition) -> PartitionKey {
    PartitionKey::new(SOURCE_BUCKET, partition.path.clone())
}

/// A source object `{partition path}{name}` seen in an event with `sequencer`.
pub fn new_object(partition: &Partition, name: &str, sequencer: &str, size: u64) -> NewObject {
    NewObject {
        bucket: SOURCE_BUCKET.to_owned(),
        key: format!("{}{name}", partition.path),
        partition: partition.clone(),
        closes_at: closes_at(partition),
        size,
        etag: Some(format!("etag-{sequencer}")),
        sequencer: sequencer.to_owned(),
        event_time: partition.period.start + Duration::hours(1),
    }
}

pub fn removal_of(object: &NewObject, sequencer: &str) -> RemovedObject {
    RemovedObject {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        sequencer: sequencer.to_owned(),
        event_time: object.event_time + Duration::minutes(5),
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The output a seal under `lease` writes as part `part_number`, keyed the way the engine keys
/// it: from partition, generation and part number.
pub fn output_record(lease: &Lease, part_number: u32, object_count: u64, created_at: DateTime<Utc>) -> OutputRecord {
    OutputRecord {
        bucket: OUTPUT_BUCKET.to_owned(),
        key: format!("compacted/{}gen-{:06}-part-{part_number:04}.json", lease.partition.path, lease.generation),
        partition: lease.partition.clone(),
        generation: lease.generation,
        part_number,
        state: OutputState::Writing,
        size: None,
        sha256: None,
        object_count,
        upload_id: Some(format!("upload-{}-{part_number}", lease.generation)),
        created_at,
        committed_at: None,
        expiry: None,
    }
}

/// Placements of `objects` laid end to end in `output`, in the given order.
pub fn placements_end_to_end(output: &OutputRecord, objects: &[ObjectRecord]) -> Vec<SourcePlacement> {
    let mut offset = 0;
    objects
        .iter()
        .map(|object| {
            let placement = Placement {
                output_key: output.key.clone(),
                generation: output.generation,
                offset,
                length: object.size,
                sha256: sha256_hex(&object.key),
                separator_bytes: 0,
            };
            offset += object.size;
            SourcePlacement {
                key: object.key.clone(),
                sequencer: object.sequencer.clone(),
                placement,
                etag: object.etag.clone(),
                size: object.size,
            }
        })
        .collect()
}

async fn pending_objects(manifest: &dyn Manifest, partition: &PartitionKey) -> Vec<ObjectRecord> {
    manifest.objects(partition, &ObjectQuery::in_state(ObjectState::Pending)).await.expect("list pending objects")
}

async fn partition_record(manifest: &dyn Manifest, partition: &PartitionKey) -> PartitionRecord {
    manifest.partition(partition).await.expect("read the partition").expect("the partition is recorded")
}

async fn object_record(manifest: &dyn Manifest, object: &NewObject) -> ObjectRecord {
    manifest.object(&object.bucket, &object.key).await.expect("read the object").expect("the object is recorded")
}

/// What [`three_objects_sealed`] leaves: the partition, its three objects, the seal's time and
/// its committed output.
struct ThreeSealed {
    partition: Partition,
    key: PartitionKey,
    objects: [NewObject; 3],
    now: DateTime<Utc>,
    output: OutputRecord,
}

/// `a.json`, `b.json` and `c.json` of day 14 recorded, then sealed into one committed output
/// by `seal-1` on 2024-01-16: where the removal and expiry cases start.
async fn three_objects_sealed(manifest: &dyn Manifest) -> ThreeSealed {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let objects = ["a.json", "b.json", "c.json"].map(|name| new_object(&partition, name, "10", 10));
    for object in &objects {
        manifest.record_object(object).await.unwrap();
    }
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let output = seal_pending_into_one_output(manifest, &lease, 1, now).await;
    ThreeSealed { partition, key, objects, now, output }
}

/// Seal steps 3 to 5 for every pending object of the leased partition, in one output: begin,
/// place, commit, mark compacted. Returns the committed output. Public for adapter-specific
/// tests that need compacted objects.
pub async fn seal_pending_into_one_output(
    manifest: &dyn Manifest,
    lease: &Lease,
    part_number: u32,
    now: DateTime<Utc>,
) -> OutputRecord {
    let pending = pending_objects(manifest, &lease.partition).await;
    let output = output_record(lease, part_number, pending.len() as u64, now);
    manifest.begin_output(lease, &output).await.expect("begin the output");
    let placements = placements_end_to_end(&output, &pending);
    let superseded = manifest.record_placements(lease, &output.key, &placements).await.expect("record placements");
    assert!(superseded.is_empty(), "nothing changed since the plan, yet {superseded:?} were superseded");
    let size: u64 = pending.iter().map(|object| object.size).sum();
    let sha256 = sha256_hex(&output.key);
    manifest
        .commit_output(lease, OUTPUT_BUCKET, &output.key, size, &sha256, pending.len() as u64, now)
        .await
        .expect("commit the output");
    let compacted = manifest.mark_compacted(&lease.partition, &output.key).await.expect("mark compacted");
    assert_eq!(compacted, pending.len() as u64, "every placed pending object becomes compacted");
    manifest.output(OUTPUT_BUCKET, &output.key).await.expect("read the output").expect("the output is recorded")
}

fn assert_lease_lost<T: std::fmt::Debug>(result: Result<T, ManifestError>, lease: &Lease, call: &str) {
    match result {
        Err(ManifestError::LeaseLost { partition, generation }) => {
            assert_eq!(partition, lease.partition, "{call}: LeaseLost names the partition");
            assert_eq!(generation, lease.generation, "{call}: LeaseLost names the lost generation");
        }
        other => panic!("{call} with a fenced lease must fail with LeaseLost, got {other:?}"),
    }
}

fn assert_invalid_output_state<T: std::fmt::Debug>(
    result: Result<T, ManifestError>,
    expected_state: OutputState,
    call: &str,
) {
    match result {
        Err(ManifestError::InvalidOutputState { state, .. }) => assert_eq!(state, expected_state, "{call}"),
        other => panic!("{call} must fail with InvalidOutputState({expected_state}), got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, ManifestError>, call: &str) {
    assert!(matches!(result, Err(ManifestError::NotFound { .. })), "{call} must fail with NotFound, got {result:?}");
}

// ── ingest ───────────────────────────────────────────────────────────────────────────────────

pub async fn record_object_records_a_new_pending_object_and_its_partition(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let object = new_object(&partition, "a.json", "0055AED6DCD90281E5", 120);

    let outcome = manifest.record_object(&object).await.unwrap();
    assert_eq!(outcome, IngestOutcome::Recorded);
    let expected_record = ObjectRecord {
        bucket: SOURCE_BUCKET.to_owned(),
        key: object.key.clone(),
        partition_path: partition.path.clone(),
        size: 120,
        etag: Some("etag-0055AED6DCD90281E5".to_owned()),
        sequencer: "0055AED6DCD90281E5".to_owned(),
        event_time: object.event_time,
        state: ObjectState::Pending,
        placement: None,
        expiry_marked_at: None,
        note: None,
    };
    assert_eq!(object_record(manifest, &object).await, expected_record);

    let record = partition_record(manifest, &key_of(&partition)).await;
    assert_eq!(record.key, key_of(&partition));
    assert_eq!((record.period_start, record.period_end), (partition.period.start, partition.period.end));
    assert_eq!(record.closes_at, closes_at(&partition));
    assert_eq!(record.state, PartitionState::Open);
    assert_eq!(record.generation, 0);
    assert_eq!((record.lock_owner, record.lease_expires_at, record.sealed_at), (None, None, None));
    assert_eq!((record.pending_objects, record.pending_bytes), (1, 120));
    assert_eq!((record.compacted_objects, record.compacted_bytes, record.committed_outputs), (0, 0, 0));

    // The partition record is created once: a later object does not move its close time.
    let mut later = new_object(&partition, "b.json", "0055AED6DCD90281E6", 30);
    later.closes_at = closes_at(&partition) + Duration::hours(5);
    assert_eq!(manifest.record_object(&later).await.unwrap(), IngestOutcome::Recorded);
    let record = partition_record(manifest, &key_of(&partition)).await;
    assert_eq!(record.closes_at, closes_at(&partition), "the first close time stays");
    assert_eq!((record.pending_objects, record.pending_bytes), (2, 150));

    assert_eq!(manifest.object(SOURCE_BUCKET, "logs/2024/01/14/unknown.json").await.unwrap(), None);
    assert_eq!(manifest.partition(&PartitionKey::new(SOURCE_BUCKET, "logs/2024/01/15/")).await.unwrap(), None);
}

pub async fn record_object_ignores_replays_and_older_events(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let original = new_object(&partition, "a.json", "0055AED6DCD90281E5", 100);
    assert_eq!(manifest.record_object(&original).await.unwrap(), IngestOutcome::Recorded);

    let replay = original.clone();
    assert_eq!(manifest.record_object(&replay).await.unwrap(), IngestOutcome::Stale, "a replay");
    // Sequencers compare after right-padding with zeros: this is the same sequencer, although a
    // plain string comparison would call it greater.
    let padded = new_object(&partition, "a.json", "0055AED6DCD90281E500", 999);
    assert_eq!(manifest.record_object(&padded).await.unwrap(), IngestOutcome::Stale, "a padded replay");
    let lowercase = new_object(&partition, "a.json", "0055aed6dcd90281e5", 999);
    assert_eq!(manifest.record_object(&lowercase).await.unwrap(), IngestOutcome::Stale, "hex case does not matter");
    let older = new_object(&partition, "a.json", "0055AED6DCD90281E4", 999);
    assert_eq!(manifest.record_object(&older).await.unwrap(), IngestOutcome::Stale, "an older event");
    let record = object_record(manifest, &original).await;
    assert_eq!((record.size, record.sequencer.as_str()), (100, "0055AED6DCD90281E5"), "stale events change nothing");

    // A backfill scan's sequencer loses to any event, and any event beats a scan.
    let scanned = new_object(&partition, "scanned.json", SCAN_SEQUENCER, 10);
    assert_eq!(manifest.record_object(&scanned).await.unwrap(), IngestOutcome::Recorded);
    let event_after_scan = new_object(&partition, "scanned.json", "01", 11);
    assert_eq!(manifest.record_object(&event_after_scan).await.unwrap(), IngestOutcome::Updated);
    assert_eq!(manifest.record_object(&scanned).await.unwrap(), IngestOutcome::Stale, "a scan after the event");
    assert_eq!(object_record(manifest, &scanned).await.size, 11);

    let record = partition_record(manifest, &key_of(&partition)).await;
    assert_eq!((record.pending_objects, record.pending_bytes), (2, 111));
}

/// What a backfill scan records for a listed version of `{partition path}{name}`.
pub fn scanned_object(partition: &Partition, name: &str, etag: &str, last_modified: DateTime<Utc>) -> NewObject {
    NewObject {
        etag: Some(format!("\"{etag}\"")),
        event_time: last_modified,
        ..new_object(partition, name, &scan_sequencer(last_modified, Some(etag)), 10)
    }
}

/// Issue 11, item 4: a source recorded by a scan, overwritten, and found `missing` by the seal
/// is recorded again by the next scan; an older listing never wins; an event for a scanned
/// version keeps what was decided about its bytes (it is not compacted twice).
pub async fn a_rescan_records_an_overwritten_version_and_an_event_confirms_a_scanned_one(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let first_listed = partition.period.start + Duration::hours(1);
    let first = scanned_object(&partition, "a.json", "e1", first_listed);
    let confirmed = scanned_object(&partition, "b.json", "e9", first_listed);
    assert_eq!(
        manifest.record_objects(&[first.clone(), confirmed.clone()]).await.unwrap(),
        [IngestOutcome::Recorded; 2]
    );
    assert_eq!(manifest.record_object(&first).await.unwrap(), IngestOutcome::Stale, "the same version listed again");

    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    manifest.mark_missing(&lease, &first.key, &first.sequencer, "changed since it was recorded").await.unwrap();
    seal_pending_into_one_output(manifest, &lease, 1, now).await;
    manifest.release(&lease, now).await.unwrap();
    assert_eq!(object_record(manifest, &first).await.state, ObjectState::Missing);
    assert_eq!(object_record(manifest, &confirmed).await.state, ObjectState::Compacted);

    let overwritten =
        NewObject { size: 20, ..scanned_object(&partition, "a.json", "e2", first_listed + Duration::hours(30)) };
    assert_eq!(manifest.record_object(&overwritten).await.unwrap(), IngestOutcome::Updated, "a version not seen yet");
    let record = object_record(manifest, &overwritten).await;
    assert_eq!((record.state, record.size, record.etag), (ObjectState::Pending, 20, overwritten.etag.clone()));
    assert_eq!(record.note, None);
    assert_eq!(manifest.record_object(&first).await.unwrap(), IngestOutcome::Stale, "an older listing never wins");
    assert_eq!(object_record(manifest, &overwritten).await.size, 20);
    assert_eq!(partition_record(manifest, &key).await.state, PartitionState::Open, "the new version reopens it");

    // The compacted version's own event arrives late: same ETag, so its bytes stay compacted
    // once, and the record now orders later events by the event's sequencer.
    let event = NewObject { etag: Some("e9".to_owned()), ..new_object(&partition, "b.json", "0055AED6DCD90281E5", 10) };
    assert_eq!(manifest.record_object(&event).await.unwrap(), IngestOutcome::Stale);
    let record = object_record(manifest, &confirmed).await;
    assert_eq!((record.state, record.sequencer.as_str()), (ObjectState::Compacted, "0055AED6DCD90281E5"));
    assert!(record.placement.is_some(), "its placement stays");
    let older_event = new_object(&partition, "b.json", "0055AED6DCD90281E4", 99);
    assert_eq!(manifest.record_object(&older_event).await.unwrap(), IngestOutcome::Stale);
}

pub async fn record_objects_records_a_batch_as_one_at_a_time_would(manifest: &dyn Manifest) {
    let day_14 = day_partition("logs", 14);
    let day_15 = day_partition("logs", 15);
    let known_old = new_object(&day_14, "known-old.json", "0000000000000005", 10);
    let known_new = new_object(&day_14, "known-new.json", "0000000000000005", 20);
    assert_eq!(
        manifest.record_objects(&[known_old.clone(), known_new.clone()]).await.unwrap(),
        vec![IngestOutcome::Recorded, IngestOutcome::Recorded]
    );

    let batch = vec![
        new_object(&day_14, "a.json", "0000000000000007", 100),
        new_object(&day_15, "b.json", "0000000000000008", 200),
        new_object(&day_14, "known-old.json", "0000000000000004", 999),
        new_object(&day_14, "known-new.json", "0000000000000006", 21),
    ];
    let outcomes = manifest.record_objects(&batch).await.unwrap();
    assert_eq!(
        outcomes,
        vec![IngestOutcome::Recorded, IngestOutcome::Recorded, IngestOutcome::Stale, IngestOutcome::Updated],
        "outcomes come back in the batch's order"
    );
    assert_eq!(object_record(manifest, &batch[0]).await.size, 100);
    assert_eq!(object_record(manifest, &batch[1]).await.size, 200);
    assert_eq!(object_record(manifest, &known_old).await.size, 10, "the older event changed nothing");
    assert_eq!(object_record(manifest, &known_new).await.sequencer, "0000000000000006");
    let record = partition_record(manifest, &key_of(&day_14)).await;
    assert_eq!((record.pending_objects, record.pending_bytes), (3, 131));
    let record = partition_record(manifest, &key_of(&day_15)).await;
    assert_eq!((record.pending_objects, record.pending_bytes), (1, 200));

    // The same key twice in one batch: whatever the adapter's order, the newer version wins.
    let twice = vec![
        new_object(&day_15, "twice.json", "0000000000000009", 1),
        new_object(&day_15, "twice.json", "000000000000000A", 2),
    ];
    manifest.record_objects(&twice).await.unwrap();
    assert_eq!(object_record(manifest, &twice[0]).await.sequencer, "000000000000000A");
    assert!(manifest.record_objects(&[]).await.unwrap().is_empty(), "an empty batch is fine");
}

pub async fn record_object_newer_version_replaces_the_record_and_reopens_the_partition(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let first_version = new_object(&partition, "a.json", "10", 100);
    let other = new_object(&partition, "b.json", "10", 200);
    manifest.record_object(&first_version).await.unwrap();
    manifest.record_object(&other).await.unwrap();

    let sealed_at = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", sealed_at, lease_for()).await.unwrap();
    let output = seal_pending_into_one_output(manifest, &lease, 1, sealed_at).await;
    let released = manifest.release(&lease, sealed_at).await.unwrap();
    assert_eq!(released.state, PartitionState::Sealed);
    manifest.mark_expiry(SOURCE_BUCKET, std::slice::from_ref(&first_version.key), sealed_at).await.unwrap();

    // A new object in a sealed partition reopens it.
    let late = new_object(&partition, "late.json", "10", 5);
    assert_eq!(manifest.record_object(&late).await.unwrap(), IngestOutcome::Recorded);
    assert_eq!(partition_record(manifest, &key).await.state, PartitionState::Open);
    let second_seal_at = sealed_at + Duration::hours(1);
    let lease = manifest.acquire(&key, "seal-2", second_seal_at, lease_for()).await.unwrap();
    seal_pending_into_one_output(manifest, &lease, 1, second_seal_at).await;
    assert_eq!(manifest.release(&lease, second_seal_at).await.unwrap().state, PartitionState::Sealed);

    // A newer version of a compacted object: pending again, and nothing decided about the old
    // bytes (placement, expiry mark) carries over.
    let second_version = new_object(&partition, "a.json", "20", 150);
    assert_eq!(manifest.record_object(&second_version).await.unwrap(), IngestOutcome::Updated);
    let record = object_record(manifest, &second_version).await;
    assert_eq!(record.state, ObjectState::Pending);
    assert_eq!((record.size, record.sequencer.as_str(), record.etag.as_deref()), (150, "20", Some("etag-20")));
    assert_eq!(record.placement, None, "the placement described the old bytes");
    assert_eq!(record.expiry_marked_at, None, "the expiry mark described the old bytes");

    let partition_after = partition_record(manifest, &key).await;
    assert_eq!(partition_after.state, PartitionState::Open, "a newer version reopens a sealed partition");
    assert_eq!(partition_after.sealed_at, Some(second_seal_at), "a reopened partition keeps its last seal time");
    assert_eq!((partition_after.pending_objects, partition_after.pending_bytes), (1, 150));
    assert_eq!((partition_after.compacted_objects, partition_after.compacted_bytes), (2, 205));
    assert_eq!(partition_after.committed_outputs, 2);
    let sources = manifest.output_sources(OUTPUT_BUCKET, &output.key, None, 10).await.unwrap();
    let source_keys: Vec<&str> = sources.iter().map(|source| source.key.as_str()).collect();
    assert_eq!(source_keys, [other.key.as_str()], "the replaced version left its output's sources");
}

pub async fn record_removal_takes_only_pending_objects_out_of_the_plan(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);

    let unknown = new_object(&partition, "never-created.json", "10", 1);
    assert_eq!(manifest.record_removal(&removal_of(&unknown, "20")).await.unwrap(), IngestOutcome::RemovalIgnored);
    assert_eq!(manifest.object(SOURCE_BUCKET, &unknown.key).await.unwrap(), None, "no record for an unknown key");

    let pending = new_object(&partition, "pending.json", "10", 100);
    manifest.record_object(&pending).await.unwrap();
    let older_removal = removal_of(&pending, "05");
    assert_eq!(manifest.record_removal(&older_removal).await.unwrap(), IngestOutcome::RemovalIgnored);
    let same_sequencer = removal_of(&pending, "10");
    assert_eq!(manifest.record_removal(&same_sequencer).await.unwrap(), IngestOutcome::RemovalIgnored);
    assert_eq!(object_record(manifest, &pending).await.state, ObjectState::Pending);

    let removal = removal_of(&pending, "20");
    assert_eq!(manifest.record_removal(&removal).await.unwrap(), IngestOutcome::Removed);
    let record = object_record(manifest, &pending).await;
    assert_eq!((record.state, record.sequencer.as_str()), (ObjectState::Removed, "20"));
    assert_eq!(record.event_time, removal.event_time, "the record describes the removal");
    assert_eq!(manifest.record_removal(&removal).await.unwrap(), IngestOutcome::RemovalIgnored, "a replay");
    assert_eq!(manifest.record_object(&pending).await.unwrap(), IngestOutcome::Stale, "the creation replayed");
    assert_eq!(partition_record(manifest, &key).await.pending_objects, 0, "a removed object is not pending");

    let recreated = new_object(&partition, "pending.json", "30", 70);
    assert_eq!(manifest.record_object(&recreated).await.unwrap(), IngestOutcome::Updated, "created again");
    assert_eq!(object_record(manifest, &recreated).await.state, ObjectState::Pending);

    // Compacted and missing objects are not in any plan: their removal changes nothing.
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    seal_pending_into_one_output(manifest, &lease, 1, now).await;
    let missing = new_object(&partition, "missing.json", "10", 5);
    manifest.record_object(&missing).await.unwrap();
    manifest.mark_missing(&lease, &missing.key, "10", "gone when the seal read it").await.unwrap();

    assert_eq!(manifest.record_removal(&removal_of(&recreated, "40")).await.unwrap(), IngestOutcome::RemovalIgnored);
    assert_eq!(object_record(manifest, &recreated).await.state, ObjectState::Compacted);
    assert_eq!(manifest.record_removal(&removal_of(&missing, "40")).await.unwrap(), IngestOutcome::RemovalIgnored);
    assert_eq!(object_record(manifest, &missing).await.state, ObjectState::Missing);
}

// ── partitions ───────────────────────────────────────────────────────────────────────────────

pub async fn closed_partitions_lists_closed_pending_unlocked_partitions_in_close_order(manifest: &dyn Manifest) {
    let now = at("2024-01-13T00:00:00Z");
    let day_10 = day_partition("logs", 10);
    let day_11_logs = day_partition("logs", 11);
    let day_11_alpha = day_partition("alpha", 11);
    let locked_day_12 = day_partition("logs", 12);
    let not_closed_day_13 = day_partition("logs", 13);
    let nothing_pending_day_09 = day_partition("logs", 9);
    // Recorded out of order: the answer's order is the manifest's work.
    for partition in [&not_closed_day_13, &day_11_logs, &locked_day_12, &day_10, &day_11_alpha] {
        manifest.record_object(&new_object(partition, "a.json", "10", 10)).await.unwrap();
    }
    let removed = new_object(&nothing_pending_day_09, "a.json", "10", 10);
    manifest.record_object(&removed).await.unwrap();
    manifest.record_removal(&removal_of(&removed, "20")).await.unwrap();
    manifest.acquire(&key_of(&locked_day_12), "seal-elsewhere", now, lease_for()).await.unwrap();

    let closed = manifest.closed_partitions(now, 10).await.unwrap();
    let closed_keys: Vec<PartitionKey> = closed.iter().map(|record| record.key.clone()).collect();
    assert_eq!(
        closed_keys,
        [key_of(&day_10), key_of(&day_11_alpha), key_of(&day_11_logs)],
        "closed, pending and unlocked only; earliest close first, then by path"
    );
    assert_eq!((closed[0].pending_objects, closed[0].pending_bytes), (1, 10), "records carry their counts");

    let first_two = manifest.closed_partitions(now, 2).await.unwrap();
    assert_eq!(first_two.len(), 2, "the limit holds");
    assert_eq!(first_two[0].key, key_of(&day_10));

    let exactly_at_close = manifest.closed_partitions(closes_at(&day_10), 10).await.unwrap();
    let keys_at_close: Vec<PartitionKey> = exactly_at_close.into_iter().map(|record| record.key).collect();
    assert_eq!(keys_at_close, [key_of(&day_10)], "a partition is closed from its close time on");

    // A sealed partition has nothing pending and leaves the answer.
    let lease = manifest.acquire(&key_of(&day_10), "seal-1", now, lease_for()).await.unwrap();
    seal_pending_into_one_output(manifest, &lease, 1, now).await;
    manifest.release(&lease, now).await.unwrap();
    let after_seal = manifest.closed_partitions(now, 10).await.unwrap();
    let keys_after_seal: Vec<PartitionKey> = after_seal.into_iter().map(|record| record.key).collect();
    assert_eq!(keys_after_seal, [key_of(&day_11_alpha), key_of(&day_11_logs)]);
}

pub async fn closed_partitions_returns_a_partition_whose_lease_expired(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let locked_at = at("2024-01-16T00:00:00Z");
    manifest.acquire(&key, "seal-that-stalls", locked_at, lease_for()).await.unwrap();

    let while_live = manifest.closed_partitions(locked_at + Duration::minutes(LEASE_MINUTES - 1), 10).await.unwrap();
    assert!(while_live.is_empty(), "a live lease hides the partition: {while_live:?}");

    let expired_at = locked_at + lease_for();
    let after_expiry = manifest.closed_partitions(expired_at, 10).await.unwrap();
    assert_eq!(after_expiry.len(), 1, "an expired lease makes the partition available again");
    let record = &after_expiry[0];
    assert_eq!(record.key, key);
    assert_eq!(record.state, PartitionState::Sealing);
    assert_eq!(record.lock_owner.as_deref(), Some("seal-that-stalls"));
    assert_eq!(record.lease_expires_at, Some(expired_at));
}

/// A seal that committed every output but died before marking its sources for expiry and
/// releasing has nothing pending, yet its partition still needs a run to finish.
pub async fn closed_partitions_returns_an_interrupted_seal_with_nothing_pending(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let locked_at = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-that-dies", locked_at, lease_for()).await.unwrap();
    seal_pending_into_one_output(manifest, &lease, 1, locked_at).await;
    let record = manifest.partition(&key).await.unwrap().unwrap();
    assert_eq!((record.pending_objects, record.state), (0, PartitionState::Sealing));

    let while_live = manifest.closed_partitions(locked_at + Duration::minutes(1), 10).await.unwrap();
    assert!(while_live.is_empty(), "a live lease hides the partition: {while_live:?}");
    let after_expiry = manifest.closed_partitions(locked_at + lease_for(), 10).await.unwrap();
    let keys: Vec<PartitionKey> = after_expiry.into_iter().map(|record| record.key).collect();
    assert_eq!(keys, std::slice::from_ref(&key), "the interrupted seal is work to finish");

    let takeover = manifest.acquire(&key, "seal-2", locked_at + lease_for(), lease_for()).await.unwrap();
    manifest.release(&takeover, locked_at + lease_for()).await.unwrap();
    let after_release = manifest.closed_partitions(locked_at + lease_for(), 10).await.unwrap();
    assert!(after_release.is_empty(), "a released, sealed partition has no work: {after_release:?}");
}

/// The keys the seal asks for: every key of `closed_partitions`, in its order, under the same
/// limit; never an open, locked or sealed partition. A closed partition whose objects were all
/// removed may be in it (it has no work, which only counting shows) or not.
pub async fn closed_partition_keys_are_those_of_closed_partitions_and_maybe_some_without_work(manifest: &dyn Manifest) {
    // Days 9 to 12 have closed (each 90 minutes after its end); day 13 has not.
    let now = at("2024-01-14T00:00:00Z");
    let day_10 = day_partition("logs", 10);
    let day_11 = day_partition("logs", 11);
    let locked_day_12 = day_partition("logs", 12);
    let not_closed_day_13 = day_partition("logs", 13);
    let only_removed_day_09 = day_partition("logs", 9);
    for partition in [&not_closed_day_13, &day_11, &locked_day_12, &day_10] {
        manifest.record_object(&new_object(partition, "a.json", "10", 10)).await.unwrap();
    }
    let removed = new_object(&only_removed_day_09, "a.json", "10", 10);
    manifest.record_object(&removed).await.unwrap();
    manifest.record_removal(&removal_of(&removed, "20")).await.unwrap();
    manifest.acquire(&key_of(&locked_day_12), "seal-elsewhere", now, lease_for()).await.unwrap();

    let keys = manifest.closed_partition_keys(now, 10).await.unwrap();
    // Closed and unlocked, earliest close first; a partition without work, where the backend
    // lists it, in close order too.
    let expected = if Capabilities::of(manifest).lists_partitions_without_work {
        vec![key_of(&only_removed_day_09), key_of(&day_10), key_of(&day_11)]
    } else {
        vec![key_of(&day_10), key_of(&day_11)]
    };
    assert_eq!(keys, expected, "{}", manifest.name());
    let records = manifest.closed_partitions(now, 10).await.unwrap();
    let record_keys: Vec<PartitionKey> = records.into_iter().map(|record| record.key).collect();
    assert_eq!(record_keys, [key_of(&day_10), key_of(&day_11)], "closed_partitions counts: only those with work");
    assert_eq!(manifest.closed_partition_keys(now, 1).await.unwrap(), expected[..1], "the limit holds");

    // Locking and releasing a partition without work seals it: it leaves the answer for good.
    let lease = manifest.acquire(&key_of(&only_removed_day_09), "seal-1", now, lease_for()).await.unwrap();
    let released = manifest.release(&lease, now).await.unwrap();
    assert_eq!(released.state, PartitionState::Sealed);
    let after_lease = manifest.closed_partition_keys(now + lease_for(), 10).await.unwrap();
    assert_eq!(
        after_lease,
        [key_of(&day_10), key_of(&day_11), key_of(&locked_day_12)],
        "an expired lease lists its partition; a released one without work is gone"
    );
}

// ── the lock ─────────────────────────────────────────────────────────────────────────────────

/// Issue 11, item 5: the partitions a killed seal left locked are named, with their lease's
/// expiry, until it expires; open partitions and released locks are not.
pub async fn locked_closed_partitions_names_the_live_locks_closed_partitions_wait_for(manifest: &dyn Manifest) {
    for day in [14, 15, 16] {
        manifest.record_object(&new_object(&day_partition("logs", day), "a.json", "10", 10)).await.unwrap();
    }
    let now = at("2024-01-16T12:00:00Z");
    let [day_14, day_15, day_16] = [14, 15, 16].map(|day| key_of(&day_partition("logs", day)));
    let killed = manifest.acquire(&day_14, "killed-run", now, lease_for()).await.unwrap();
    let released = manifest.acquire(&day_15, "finished-run", now, lease_for()).await.unwrap();
    manifest.release(&released, now).await.unwrap();
    // Day 16 is still open at `now`: not closed, so not listed even when locked.
    manifest.acquire(&day_16, "early-run", now, lease_for()).await.unwrap();

    let locks = manifest.locked_closed_partitions(now, 10).await.unwrap();
    assert_eq!(
        locks,
        [HeldLock { partition: day_14.clone(), owner: "killed-run".to_owned(), expires_at: killed.expires_at }]
    );
    assert!(manifest.locked_closed_partitions(now, 0).await.unwrap().is_empty(), "the limit holds");
    let after_expiry = killed.expires_at + Duration::seconds(1);
    assert!(manifest.locked_closed_partitions(after_expiry, 10).await.unwrap().is_empty(), "an expired lease");
    let closed = manifest.closed_partition_keys(after_expiry, 10).await.unwrap();
    assert!(closed.contains(&day_14), "then the partition is picked again: {closed:?}");
}

pub async fn acquire_is_exclusive_and_bumps_the_generation(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let now = at("2024-01-16T00:00:00Z");
    assert_not_found(manifest.acquire(&key, "seal-a", now, lease_for()).await, "acquire of an unknown partition");

    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let lease = manifest.acquire(&key, "seal-a", now, lease_for()).await.unwrap();
    assert_eq!(
        lease,
        Lease { partition: key.clone(), owner: "seal-a".to_owned(), generation: 1, expires_at: now + lease_for() }
    );
    let record = partition_record(manifest, &key).await;
    assert_eq!(record.state, PartitionState::Sealing);
    assert_eq!(record.generation, 1);
    assert_eq!(record.lock_owner.as_deref(), Some("seal-a"));
    assert_eq!(record.lease_expires_at, Some(lease.expires_at));

    match manifest.acquire(&key, "seal-b", now + Duration::minutes(1), lease_for()).await {
        Err(ManifestError::Locked { partition, owner, expires_at }) => {
            assert_eq!(partition, key);
            assert_eq!(owner, "seal-a", "Locked names the holder");
            assert_eq!(expires_at, lease.expires_at, "Locked says when to try again");
        }
        other => panic!("a second owner must get Locked while the lease is live, got {other:?}"),
    }
    assert_eq!(partition_record(manifest, &key).await.generation, 1, "a refused acquire changes nothing");

    // The holder may take its own lock again; that is a new generation and fences the old one.
    let again = manifest.acquire(&key, "seal-a", now + Duration::minutes(2), lease_for()).await.unwrap();
    assert_eq!(again.generation, 2);
    assert_lease_lost(manifest.renew(&lease, now + Duration::minutes(3), lease_for()).await, &lease, "renew");
    manifest.renew(&again, now + Duration::minutes(3), lease_for()).await.unwrap();
}

/// Eight callers race for one partition's lock at the same instant: exactly one wins, every
/// other one is told who holds it, and the generation moved once.
pub async fn acquire_race_has_exactly_one_winner(manifest: Arc<dyn Manifest>) {
    const RACERS: usize = 8;
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");

    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|racer| {
            let manifest = Arc::clone(&manifest);
            let key = key.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                manifest.acquire(&key, &format!("racer-{racer}"), now, lease_for()).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut holders_named_by_losers = Vec::new();
    for racer in racers {
        match racer.await.expect("a racer panicked") {
            Ok(lease) => winners.push(lease),
            Err(ManifestError::Locked { owner, .. }) => holders_named_by_losers.push(owner),
            Err(other) => panic!("a losing racer must get Locked, got {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer takes the lock: {winners:?}");
    let winner = &winners[0];
    assert_eq!(winner.generation, 1);
    assert!(holders_named_by_losers.iter().all(|owner| owner == &winner.owner), "{holders_named_by_losers:?}");
    let record = manifest.partition(&key).await.unwrap().expect("the partition is recorded");
    assert_eq!((record.generation, record.lock_owner.as_deref()), (1, Some(winner.owner.as_str())));
}

pub async fn renew_extends_a_held_lease(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let start = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-a", start, lease_for()).await.unwrap();

    let renewed_at = start + Duration::minutes(10);
    let renewed = manifest.renew(&lease, renewed_at, lease_for()).await.unwrap();
    assert_eq!(renewed, Lease { expires_at: renewed_at + lease_for(), ..lease.clone() });
    assert_eq!(partition_record(manifest, &key).await.lease_expires_at, Some(renewed.expires_at));

    let past_first_expiry = start + Duration::minutes(LEASE_MINUTES + 5);
    assert!(
        matches!(
            manifest.acquire(&key, "seal-b", past_first_expiry, lease_for()).await,
            Err(ManifestError::Locked { .. })
        ),
        "the renewed lease is still live"
    );
    let takeover = manifest.acquire(&key, "seal-b", renewed.expires_at, lease_for()).await.unwrap();
    assert_eq!(takeover.generation, 2, "once the renewed lease expires anyone may take over");
}

pub async fn a_takeover_after_expiry_fences_the_old_lease(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let a = new_object(&partition, "a.json", "10", 10);
    let b = new_object(&partition, "b.json", "10", 20);
    manifest.record_object(&a).await.unwrap();
    manifest.record_object(&b).await.unwrap();

    let start = at("2024-01-16T00:00:00Z");
    let stalled = manifest.acquire(&key, "seal-that-stalls", start, lease_for()).await.unwrap();
    let pending = pending_objects(manifest, &key).await;
    let stalled_output = output_record(&stalled, 1, 2, start);
    manifest.begin_output(&stalled, &stalled_output).await.unwrap();

    let rescue_at = start + Duration::minutes(LEASE_MINUTES + 5);
    let rescuer = manifest.acquire(&key, "seal-rescuer", rescue_at, lease_for()).await.unwrap();
    assert_eq!(rescuer.generation, stalled.generation + 1, "a takeover bumps the generation");

    // Every write under the stalled lease is now refused.
    let placements = placements_end_to_end(&stalled_output, &pending);
    assert_lease_lost(
        manifest.record_placements(&stalled, &stalled_output.key, &placements).await,
        &stalled,
        "record_placements",
    );
    assert_lease_lost(
        manifest.commit_output(&stalled, OUTPUT_BUCKET, &stalled_output.key, 30, &sha256_hex("x"), 2, rescue_at).await,
        &stalled,
        "commit_output",
    );
    assert_lease_lost(manifest.release(&stalled, rescue_at).await, &stalled, "release");
    assert_lease_lost(manifest.renew(&stalled, rescue_at, lease_for()).await, &stalled, "renew");
    assert_lease_lost(
        manifest.begin_output(&stalled, &output_record(&stalled, 2, 1, rescue_at)).await,
        &stalled,
        "begin_output",
    );
    assert_lease_lost(manifest.mark_missing(&stalled, &a.key, "10", "gone").await, &stalled, "mark_missing");
    assert_lease_lost(
        manifest.abandon_output(&stalled, OUTPUT_BUCKET, &stalled_output.key).await,
        &stalled,
        "abandon_output",
    );
    for object in [&a, &b] {
        let record = object_record(manifest, object).await;
        assert_eq!((record.state, record.placement), (ObjectState::Pending, None), "the stalled run changed nothing");
    }
    let stalled_record = manifest.output(OUTPUT_BUCKET, &stalled_output.key).await.unwrap().expect("recorded");
    assert_eq!(stalled_record.state, OutputState::Writing);

    // The rescuer abandons the stalled output and finishes the seal.
    manifest.abandon_output(&rescuer, OUTPUT_BUCKET, &stalled_output.key).await.unwrap();
    let output = seal_pending_into_one_output(manifest, &rescuer, 1, rescue_at).await;
    assert_eq!(output.generation, 2);
    let released = manifest.release(&rescuer, rescue_at).await.unwrap();
    assert_eq!(
        (released.state, released.compacted_objects, released.committed_outputs),
        (PartitionState::Sealed, 2, 1)
    );
    let stalled_record = manifest.output(OUTPUT_BUCKET, &stalled_output.key).await.unwrap().expect("recorded");
    assert_eq!(stalled_record.state, OutputState::Abandoned);
}

pub async fn release_seals_when_nothing_is_pending_and_reopens_after_a_late_object(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let first_seal_at = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", first_seal_at, lease_for()).await.unwrap();
    seal_pending_into_one_output(manifest, &lease, 1, first_seal_at).await;

    // A late object arrives while the partition is being sealed.
    let late = new_object(&partition, "late.json", "10", 7);
    assert_eq!(manifest.record_object(&late).await.unwrap(), IngestOutcome::Recorded);
    assert_eq!(partition_record(manifest, &key).await.state, PartitionState::Sealing, "the seal keeps its lock");

    let released = manifest.release(&lease, first_seal_at).await.unwrap();
    assert_eq!(released.state, PartitionState::Open, "a pending object is left: the partition is open");
    assert_eq!((released.lock_owner, released.lease_expires_at, released.sealed_at), (None, None, None));
    assert_eq!((released.pending_objects, released.pending_bytes), (1, 7));
    assert_eq!((released.compacted_objects, released.committed_outputs), (1, 1));
    assert_eq!(released.generation, 1, "release does not bump the generation");
    assert_lease_lost(manifest.release(&lease, first_seal_at).await, &lease, "a second release");
    let closed = manifest.closed_partitions(first_seal_at, 10).await.unwrap();
    assert_eq!(closed.len(), 1, "the reopened partition is ready for its next seal");

    let second_seal_at = first_seal_at + Duration::hours(1);
    let next = manifest.acquire(&key, "seal-2", second_seal_at, lease_for()).await.unwrap();
    assert_eq!(next.generation, 2);
    seal_pending_into_one_output(manifest, &next, 1, second_seal_at).await;
    let sealed = manifest.release(&next, second_seal_at).await.unwrap();
    assert_eq!(sealed.state, PartitionState::Sealed);
    assert_eq!(sealed.sealed_at, Some(second_seal_at));
    assert_eq!((sealed.lock_owner.as_deref(), sealed.lease_expires_at), (None, None));
    assert_eq!((sealed.pending_objects, sealed.compacted_objects, sealed.compacted_bytes), (0, 2, 17));
    assert_eq!(sealed.committed_outputs, 2);
    assert_eq!(sealed, partition_record(manifest, &key).await, "release returns the stored record");
}

// ── objects, outputs and the commit ──────────────────────────────────────────────────────────

pub async fn placements_are_skipped_for_a_superseded_version(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let a = new_object(&partition, "a.json", "10", 10);
    let b = new_object(&partition, "b.json", "10", 20);
    let c = new_object(&partition, "c.json", "10", 30);
    for object in [&a, &b, &c] {
        manifest.record_object(object).await.unwrap();
    }
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let planned = pending_objects(manifest, &key).await;
    let output = output_record(&lease, 1, 3, now);
    manifest.begin_output(&lease, &output).await.unwrap();

    // While the output is written, a newer version of `a` arrives and `c` is removed.
    let newer_a = new_object(&partition, "a.json", "20", 11);
    assert_eq!(manifest.record_object(&newer_a).await.unwrap(), IngestOutcome::Updated);
    assert_eq!(manifest.record_removal(&removal_of(&c, "20")).await.unwrap(), IngestOutcome::Removed);

    let placements = placements_end_to_end(&output, &planned);
    let superseded = manifest.record_placements(&lease, &output.key, &placements).await.unwrap();
    assert_eq!(superseded, [a.key.clone(), c.key.clone()], "only versions the records still hold are placed");
    let again = manifest.record_placements(&lease, &output.key, &placements).await.unwrap();
    assert_eq!(again, superseded, "recording placements again gives the same answer");

    // Whether a pending object shows its placement before the commit is the adapter's choice
    // (DynamoDB keeps placements in chunk items until then); it counts only after it.
    let b_record = object_record(manifest, &b).await;
    assert_eq!(b_record.state, ObjectState::Pending, "placed objects stay pending until the commit");
    assert_eq!(object_record(manifest, &newer_a).await.placement, None);

    manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, 60, &sha256_hex("out"), 1, now).await.unwrap();
    assert_eq!(manifest.mark_compacted(&key, &output.key).await.unwrap(), 1);
    let b_record = object_record(manifest, &b).await;
    assert_eq!(b_record.state, ObjectState::Compacted);
    assert_eq!(b_record.placement.as_ref(), Some(&placements[1].placement), "the placement as recorded");
    assert_eq!(object_record(manifest, &newer_a).await.placement, None, "the newer version was never placed");
    assert_eq!(object_record(manifest, &newer_a).await.state, ObjectState::Pending, "the newer version waits");
    assert_eq!(object_record(manifest, &c).await.state, ObjectState::Removed);
}

pub async fn begin_output_again_updates_a_writing_output(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();

    let first_try = output_record(&lease, 1, 2, now);
    manifest.begin_output(&lease, &first_try).await.unwrap();
    assert_eq!(manifest.output(OUTPUT_BUCKET, &first_try.key).await.unwrap().as_ref(), Some(&first_try));

    let retry = OutputRecord { upload_id: Some("upload-retried".to_owned()), object_count: 3, ..first_try.clone() };
    manifest.begin_output(&lease, &retry).await.unwrap();
    let record = manifest.output(OUTPUT_BUCKET, &first_try.key).await.unwrap().expect("recorded");
    assert_eq!(record.state, OutputState::Writing);
    assert_eq!((record.upload_id.as_deref(), record.object_count), (Some("upload-retried"), 3));
    let writing = manifest.outputs(&key, Some(OutputState::Writing)).await.unwrap();
    assert_eq!(writing, [record], "one record, however often it is begun");
}

pub async fn commit_output_is_idempotent_and_never_revives_an_abandoned_output(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let committed_at = now + Duration::minutes(1);

    let output = output_record(&lease, 1, 1, now);
    manifest.begin_output(&lease, &output).await.unwrap();
    let sha256 = sha256_hex("the output's bytes");
    manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, 10, &sha256, 1, committed_at).await.unwrap();
    let expected = OutputRecord {
        state: OutputState::Committed,
        size: Some(10),
        sha256: Some(sha256.clone()),
        object_count: 1,
        committed_at: Some(committed_at),
        expiry: Some(ExpiryCursor::default()),
        ..output.clone()
    };
    assert_eq!(manifest.output(OUTPUT_BUCKET, &output.key).await.unwrap().as_ref(), Some(&expected));

    let later = committed_at + Duration::minutes(1);
    manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, 10, &sha256, 1, later).await.expect("a repeated commit");
    assert_eq!(manifest.output(OUTPUT_BUCKET, &output.key).await.unwrap().as_ref(), Some(&expected), "first stands");
    assert_invalid_output_state(
        manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, 11, &sha256_hex("other"), 1, later).await,
        OutputState::Committed,
        "a commit of other bytes over a committed output",
    );
    manifest.begin_output(&lease, &output).await.expect("beginning a committed output again is a no-op");
    assert_eq!(manifest.output(OUTPUT_BUCKET, &output.key).await.unwrap().as_ref(), Some(&expected));
    assert_invalid_output_state(
        manifest.abandon_output(&lease, OUTPUT_BUCKET, &output.key).await,
        OutputState::Committed,
        "abandoning a committed output",
    );

    let abandoned = output_record(&lease, 2, 1, now);
    manifest.begin_output(&lease, &abandoned).await.unwrap();
    manifest.abandon_output(&lease, OUTPUT_BUCKET, &abandoned.key).await.unwrap();
    manifest.abandon_output(&lease, OUTPUT_BUCKET, &abandoned.key).await.expect("abandoning again");
    assert_invalid_output_state(
        manifest.commit_output(&lease, OUTPUT_BUCKET, &abandoned.key, 10, &sha256, 1, later).await,
        OutputState::Abandoned,
        "committing an abandoned output",
    );
    assert_invalid_output_state(
        manifest.begin_output(&lease, &abandoned).await,
        OutputState::Abandoned,
        "beginning an abandoned output again",
    );
    let abandoned_record = manifest.output(OUTPUT_BUCKET, &abandoned.key).await.unwrap().expect("recorded");
    assert_eq!((abandoned_record.state, abandoned_record.sha256), (OutputState::Abandoned, None));

    let unknown_key = "compacted/unknown.json";
    assert_not_found(
        manifest.commit_output(&lease, OUTPUT_BUCKET, unknown_key, 1, &sha256, 1, later).await,
        "committing an unknown output",
    );
    assert_not_found(manifest.abandon_output(&lease, OUTPUT_BUCKET, unknown_key).await, "abandoning an unknown output");
    assert_eq!(partition_record(manifest, &key).await.committed_outputs, 1);
}

pub async fn mark_compacted_needs_a_committed_output(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let a = new_object(&partition, "a.json", "10", 10);
    let b = new_object(&partition, "b.json", "10", 20);
    manifest.record_object(&a).await.unwrap();
    manifest.record_object(&b).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let planned = pending_objects(manifest, &key).await;

    // Placements into an output that is abandoned never compact anything.
    let abandoned = output_record(&lease, 1, 2, now);
    manifest.begin_output(&lease, &abandoned).await.unwrap();
    manifest.record_placements(&lease, &abandoned.key, &placements_end_to_end(&abandoned, &planned)).await.unwrap();
    manifest.abandon_output(&lease, OUTPUT_BUCKET, &abandoned.key).await.unwrap();
    assert_eq!(manifest.mark_compacted(&key, &abandoned.key).await.unwrap(), 0, "an abandoned output");

    let output = output_record(&lease, 2, 2, now);
    manifest.begin_output(&lease, &output).await.unwrap();
    manifest.record_placements(&lease, &output.key, &placements_end_to_end(&output, &planned)).await.unwrap();
    assert_eq!(manifest.mark_compacted(&key, &output.key).await.unwrap(), 0, "an output still being written");
    assert_eq!(pending_objects(manifest, &key).await.len(), 2, "nothing counts before the commit");

    manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, 30, &sha256_hex("out"), 2, now).await.unwrap();
    assert_eq!(manifest.mark_compacted(&key, &output.key).await.unwrap(), 2);
    assert_eq!(manifest.mark_compacted(&key, &output.key).await.unwrap(), 0, "marking again changes nothing");
    for object in [&a, &b] {
        let record = object_record(manifest, object).await;
        assert_eq!(record.state, ObjectState::Compacted);
        assert_eq!(record.placement.map(|placement| placement.output_key), Some(output.key.clone()));
    }
    assert_not_found(manifest.mark_compacted(&key, "compacted/unknown.json").await, "an unknown output");
}

/// The commit is what compacts an output's sources (`domain::derived`): the output's source
/// list says so from the commit on, before `mark_compacted` writes it on each record (a crash
/// between the two leaves exactly that), and never of a version newer than the one placed.
pub async fn an_outputs_commit_makes_its_sources_compacted_before_mark_compacted(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let [a, b] = ["a.json", "b.json"].map(|name| new_object(&partition, name, "10", 10));
    for object in [&a, &b] {
        manifest.record_object(object).await.unwrap();
    }
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let planned = pending_objects(manifest, &key).await;
    let output = output_record(&lease, 1, 2, now);
    manifest.begin_output(&lease, &output).await.unwrap();
    manifest.record_placements(&lease, &output.key, &placements_end_to_end(&output, &planned)).await.unwrap();
    let states = |sources: Vec<ObjectRecord>| -> Vec<(String, ObjectState)> {
        sources.into_iter().map(|source| (source.key, source.state)).collect()
    };
    for source in manifest.output_sources(OUTPUT_BUCKET, &output.key, None, 10).await.unwrap() {
        assert_ne!(source.state, ObjectState::Compacted, "{}: an output being written compacts nothing", source.key);
    }

    manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, 20, &sha256_hex("out"), 2, now).await.unwrap();
    let sources = manifest.output_sources(OUTPUT_BUCKET, &output.key, None, 10).await.unwrap();
    assert!(
        sources
            .iter()
            .all(|source| source.placement.as_ref().map(|placement| &placement.output_key) == Some(&output.key)),
        "{sources:?}"
    );
    assert_eq!(
        states(sources),
        [(a.key.clone(), ObjectState::Compacted), (b.key.clone(), ObjectState::Compacted)],
        "committed, not yet marked"
    );

    // A newer version of b after the commit is pending, whatever the output holds of the old one.
    manifest.record_object(&new_object(&partition, "b.json", "20", 12)).await.unwrap();
    let sources = manifest.output_sources(OUTPUT_BUCKET, &output.key, None, 10).await.unwrap();
    assert_eq!(states(sources), [(a.key.clone(), ObjectState::Compacted)], "b's newer version was never placed");
    let marked = manifest.mark_compacted(&key, &output.key).await.unwrap();
    if Capabilities::of(manifest).derives_compacted_at_commit {
        assert_eq!(marked, 2, "how many the output committed: nothing is written per source");
    } else {
        assert_eq!(marked, 1, "only a is still the placed version");
    }
    assert_eq!(object_record(manifest, &a).await.state, ObjectState::Compacted);
    assert_eq!(object_record(manifest, &b).await.state, ObjectState::Pending);
}

/// A compacted source's removal (its own expiry, or a user's delete) changes nothing: its bytes
/// are safe in the output. On a backend that derives the state from the committed placements,
/// the source's record was never rewritten after ingest, and the removal must still see it
/// compacted. A removal of a newer version, which no output holds, takes it out of the plan.
pub async fn a_removal_of_a_compacted_source_changes_nothing_unless_it_is_of_a_newer_version(manifest: &dyn Manifest) {
    let ThreeSealed { partition, key, objects: [a, b, _], output, .. } = three_objects_sealed(manifest).await;

    assert_eq!(manifest.record_removal(&removal_of(&a, "20")).await.unwrap(), IngestOutcome::RemovalIgnored);
    let a_record = object_record(manifest, &a).await;
    assert_eq!(a_record.state, ObjectState::Compacted, "a removal of a compacted source changes nothing");
    assert_eq!(a_record.placement.map(|placement| placement.output_key), Some(output.key.clone()));

    // A newer version of b after the seal, then its removal: no output holds it.
    let newer_b = new_object(&partition, "b.json", "20", 11);
    assert_eq!(manifest.record_object(&newer_b).await.unwrap(), IngestOutcome::Updated);
    assert_eq!(manifest.record_removal(&removal_of(&newer_b, "30")).await.unwrap(), IngestOutcome::Removed);
    assert_eq!(object_record(manifest, &b).await.state, ObjectState::Removed);
    assert!(pending_objects(manifest, &key).await.is_empty(), "nothing left to compact");
    let record = partition_record(manifest, &key).await;
    assert_eq!((record.pending_objects, record.compacted_objects), (0, 2), "a and c compacted, b removed");
}

/// `object` (the audit, `restore`) reads a source compacted, with its placement, once its
/// output committed: from the commit on where the state is derived (a crash before
/// `mark_compacted` leaves exactly that), from `mark_compacted` on where it is flipped.
pub async fn object_reads_a_source_compacted_from_its_outputs_commit(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let objects: Vec<NewObject> =
        (0..30).map(|index| new_object(&partition, &format!("{index:03}.json"), "10", 10)).collect();
    manifest.record_objects(&objects).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let planned = pending_objects(manifest, &key).await;
    let output = output_record(&lease, 1, 30, now);
    manifest.begin_output(&lease, &output).await.unwrap();
    let placements = placements_end_to_end(&output, &planned);
    // Two windows, as a seal places a large output.
    for window in placements.chunks(20) {
        assert!(manifest.record_placements(&lease, &output.key, window).await.unwrap().is_empty());
    }
    manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, 300, &sha256_hex("out"), 30, now).await.unwrap();
    // The crash: no mark_compacted yet.
    let derives = Capabilities::of(manifest).derives_compacted_at_commit;
    for (object, placed) in objects.iter().zip(&placements).step_by(7) {
        let record = object_record(manifest, object).await;
        if derives {
            assert_eq!(record.state, ObjectState::Compacted, "{}: the commit decided", object.key);
            assert_eq!(record.placement.as_ref(), Some(&placed.placement), "{}", object.key);
        } else {
            assert_eq!(record.state, ObjectState::Pending, "{}: flipped by mark_compacted", object.key);
        }
    }
    let pending = pending_objects(manifest, &key).await.len();
    assert_eq!(pending, if derives { 0 } else { 30 }, "the pending scan agrees with object()");

    manifest.mark_compacted(&key, &output.key).await.unwrap();
    for (object, placed) in objects.iter().zip(&placements) {
        let record = object_record(manifest, object).await;
        assert_eq!(record.state, ObjectState::Compacted, "{}", object.key);
        assert_eq!(record.placement.as_ref(), Some(&placed.placement), "{}", object.key);
    }
    let compacted = manifest.objects(&key, &ObjectQuery::in_state(ObjectState::Compacted)).await.unwrap();
    assert_eq!(compacted.len(), 30);
    assert!(compacted
        .iter()
        .zip(&placements)
        .all(|(record, placed)| record.placement.as_ref() == Some(&placed.placement)));
}

/// A partition reopened by late objects: its second seal's pending scan finds exactly the late
/// objects (and newer versions of compacted ones), wherever their keys fall among the first
/// seal's sources and from wherever the scan starts, and the counts agree.
pub async fn a_reopened_partitions_second_seal_scans_only_its_late_objects(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let first: Vec<NewObject> =
        (0..40).map(|index| new_object(&partition, &format!("{:03}.json", 2 * index), "10", 10)).collect();
    manifest.record_objects(&first).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let first_output = seal_pending_into_one_output(manifest, &lease, 1, now).await;
    assert_eq!(manifest.release(&lease, now).await.unwrap().state, PartitionState::Sealed);

    // Late: odd keys between the first seal's, a newer version of one of its sources.
    let mut late: Vec<NewObject> =
        (0..5).map(|index| new_object(&partition, &format!("{:03}.json", 16 * index + 1), "20", 10)).collect();
    late.push(new_object(&partition, "040.json", "20", 12));
    manifest.record_objects(&late).await.unwrap();
    late.sort_by(|one, other| one.key.cmp(&other.key));
    let late_keys: Vec<String> = late.iter().map(|object| object.key.clone()).collect();
    let record = partition_record(manifest, &key).await;
    assert_eq!(record.state, PartitionState::Open);
    assert_eq!((record.pending_objects, record.compacted_objects), (6, 39), "040's older version is no more");

    let later = now + Duration::hours(1);
    let lease = manifest.acquire(&key, "seal-2", later, lease_for()).await.unwrap();
    let scanned: Vec<String> = pending_objects(manifest, &key).await.into_iter().map(|object| object.key).collect();
    assert_eq!(scanned, late_keys, "the first seal's sources are compacted");
    let start_after = format!("{}010.json", partition.path);
    let query =
        ObjectQuery { start_after: Some(start_after.clone()), limit: 2, ..ObjectQuery::in_state(ObjectState::Pending) };
    let page: Vec<String> =
        manifest.objects(&key, &query).await.unwrap().into_iter().map(|object| object.key).collect();
    let expected: Vec<String> = late_keys.iter().filter(|key| **key > start_after).take(2).cloned().collect();
    assert_eq!(page, expected, "a page from the middle, as a window reads");

    let second_output = seal_pending_into_one_output(manifest, &lease, 1, later).await;
    let record = manifest.release(&lease, later).await.unwrap();
    assert_eq!((record.state, record.pending_objects, record.compacted_objects), (PartitionState::Sealed, 0, 45));
    let newer =
        object_record(manifest, &late[late_keys.iter().position(|key| key.ends_with("040.json")).unwrap()]).await;
    assert_eq!(newer.placement.map(|placement| placement.output_key), Some(second_output.key.clone()));
    let older = object_record(manifest, &first[0]).await;
    assert_eq!(older.placement.map(|placement| placement.output_key), Some(first_output.key.clone()));
}

/// A source a backfill scan recorded, compacted, then confirmed by its event (same ETag, a real
/// sequencer) stays compacted: the output holds it, whatever sequencer the record now orders
/// later events by.
pub async fn an_event_confirming_a_scanned_compacted_source_keeps_it_compacted(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let listed_at = partition.period.start + Duration::hours(2);
    let scanned = NewObject {
        sequencer: scan_sequencer(listed_at, Some("etag-e1")),
        etag: Some("etag-e1".to_owned()),
        event_time: listed_at,
        ..new_object(&partition, "a.json", "10", 10)
    };
    manifest.record_object(&scanned).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let output = seal_pending_into_one_output(manifest, &lease, 1, now).await;
    manifest.release(&lease, now).await.unwrap();

    let event = NewObject {
        sequencer: "0055AED6DCD90281E5".to_owned(),
        event_time: listed_at - Duration::minutes(30),
        ..scanned.clone()
    };
    manifest.record_object(&event).await.unwrap();
    let record = object_record(manifest, &scanned).await;
    assert_eq!(record.state, ObjectState::Compacted, "never compacted twice");
    assert_eq!(record.placement.map(|placement| placement.output_key), Some(output.key));
    assert!(pending_objects(manifest, &key).await.is_empty());
}

pub async fn mark_missing_only_marks_the_planned_pending_version(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let planned = new_object(&partition, "a.json", "10", 10);
    manifest.record_object(&planned).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();

    let newer = new_object(&partition, "a.json", "20", 12);
    manifest.record_object(&newer).await.unwrap();
    manifest.mark_missing(&lease, &planned.key, "10", "changed since the plan").await.unwrap();
    let record = object_record(manifest, &planned).await;
    assert_eq!((record.state, record.note), (ObjectState::Pending, None), "the newer version is still to compact");

    manifest.mark_missing(&lease, &planned.key, "20", "404 when the seal read it").await.unwrap();
    manifest.mark_missing(&lease, &planned.key, "20", "404 when the seal read it").await.expect("marking again");
    let record = object_record(manifest, &planned).await;
    assert_eq!(record.state, ObjectState::Missing);
    assert_eq!(record.note.as_deref(), Some("404 when the seal read it"));
    assert_eq!(partition_record(manifest, &key).await.pending_objects, 0);

    manifest.mark_missing(&lease, &format!("{}unknown.json", partition.path), "20", "gone").await.unwrap();
    assert_eq!(manifest.object(SOURCE_BUCKET, &format!("{}unknown.json", partition.path)).await.unwrap(), None);
}

pub async fn mark_expiry_keeps_the_first_time(manifest: &dyn Manifest) {
    let ThreeSealed { partition, key, objects: [a, b, c], now, .. } = three_objects_sealed(manifest).await;
    let still_pending = new_object(&partition, "d.json", "10", 10);
    manifest.record_object(&still_pending).await.unwrap();

    // The output keeps an expiry cursor: its sources do not await marks of their own.
    let awaiting = manifest.objects(&key, &ObjectQuery::awaiting_expiry()).await.unwrap();
    assert!(awaiting.is_empty(), "{awaiting:?}");

    let first_mark = now + Duration::minutes(1);
    manifest.mark_expiry(SOURCE_BUCKET, &[a.key.clone(), b.key.clone()], first_mark).await.unwrap();

    let second_mark = now + Duration::minutes(2);
    let keys = [a.key.clone(), c.key.clone(), still_pending.key.clone(), format!("{}unknown.json", partition.path)];
    manifest.mark_expiry(SOURCE_BUCKET, &keys, second_mark).await.unwrap();
    assert_eq!(object_record(manifest, &a).await.expiry_marked_at, Some(first_mark), "the first mark stands");
    assert_eq!(object_record(manifest, &b).await.expiry_marked_at, Some(first_mark));
    assert_eq!(object_record(manifest, &c).await.expiry_marked_at, Some(second_mark));
    assert_eq!(object_record(manifest, &still_pending).await.expiry_marked_at, None, "only compacted objects");
    assert!(manifest.objects(&key, &ObjectQuery::awaiting_expiry()).await.unwrap().is_empty());
}

pub async fn an_expiry_cursor_marks_an_outputs_sources_up_to_where_it_stopped(manifest: &dyn Manifest) {
    let ThreeSealed { key, objects: [a, b, c], now, output, .. } = three_objects_sealed(manifest).await;
    assert_eq!(output.expiry, Some(ExpiryCursor::default()), "a commit starts a cursor that marks nothing yet");

    let placed = manifest.output_placements(OUTPUT_BUCKET, &output.key, None, 10).await.unwrap();
    let keys: Vec<&str> = placed.iter().map(|source| source.key.as_str()).collect();
    assert_eq!(keys, [a.key.as_str(), b.key.as_str(), c.key.as_str()], "by offset");
    assert!(placed.iter().all(|source| source.size == 10 && source.etag == a.etag), "{placed:?}");
    let after_a = (placed[0].placement.offset, placed[0].key.as_str());
    let page = manifest.output_placements(OUTPUT_BUCKET, &output.key, Some(after_a), 1).await.unwrap();
    assert_eq!(page.iter().map(|source| source.key.as_str()).collect::<Vec<_>>(), [b.key.as_str()]);
    assert!(manifest.output_placements(OUTPUT_BUCKET, "compacted/unknown.json", None, 10).await.unwrap().is_empty());

    let first_mark = now + Duration::minutes(1);
    let through_b = (placed[1].placement.offset, placed[1].key.as_str());
    manifest.advance_expiry(OUTPUT_BUCKET, &output.key, through_b, false, first_mark).await.unwrap();
    let cursor = manifest.output(OUTPUT_BUCKET, &output.key).await.unwrap().unwrap().expiry.unwrap();
    assert_eq!(cursor.through, Some((placed[1].placement.offset, b.key.clone())));
    assert!(!cursor.done);
    assert_eq!(object_record(manifest, &a).await.expiry_marked_at, Some(first_mark), "passed by the cursor");
    assert_eq!(object_record(manifest, &b).await.expiry_marked_at, Some(first_mark), "the cursor's own source");
    assert_eq!(object_record(manifest, &c).await.expiry_marked_at, None, "not reached yet");

    manifest.advance_expiry(OUTPUT_BUCKET, &output.key, after_a, false, now + Duration::minutes(2)).await.unwrap();
    let unmoved = manifest.output(OUTPUT_BUCKET, &output.key).await.unwrap().unwrap().expiry.unwrap();
    assert_eq!(unmoved, cursor, "a cursor never moves back");

    let done_mark = now + Duration::minutes(3);
    let through_c = (placed[2].placement.offset, placed[2].key.as_str());
    manifest.advance_expiry(OUTPUT_BUCKET, &output.key, through_c, true, done_mark).await.unwrap();
    let finished = manifest.output(OUTPUT_BUCKET, &output.key).await.unwrap().unwrap().expiry.unwrap();
    assert!(finished.done);
    assert_eq!(object_record(manifest, &c).await.expiry_marked_at, Some(done_mark));
    assert!(object_record(manifest, &a).await.expiry_marked_at.is_some(), "stays marked");
    assert!(manifest.objects(&key, &ObjectQuery::awaiting_expiry()).await.unwrap().is_empty());
    manifest
        .advance_expiry(OUTPUT_BUCKET, "compacted/unknown.json", through_c, true, done_mark)
        .await
        .expect("an unknown output has no cursor to move");
}

pub async fn output_sources_pages_by_offset(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    for name in ["a.json", "b.json", "c.json", "d.json", "e.json"] {
        manifest.record_object(&new_object(&partition, name, "10", 10)).await.unwrap();
    }
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let output = output_record(&lease, 1, 5, now);
    manifest.begin_output(&lease, &output).await.unwrap();
    // Laid out in reverse key order, with a separator after each: offsets, not keys, order them.
    let mut in_reverse = pending_objects(manifest, &key).await;
    in_reverse.reverse();
    let placements: Vec<SourcePlacement> = placements_end_to_end(&output, &in_reverse)
        .into_iter()
        .enumerate()
        .map(|(index, mut source)| {
            source.placement.offset += index as u64;
            source.placement.separator_bytes = 1;
            source
        })
        .collect();
    manifest.record_placements(&lease, &output.key, &placements).await.unwrap();

    let pages = output_source_pages(manifest, &output, 2).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let sources: Vec<ObjectRecord> = pages.into_iter().flatten().collect();
    let got: Vec<(&str, Option<&Placement>)> =
        sources.iter().map(|source| (source.key.as_str(), source.placement.as_ref())).collect();
    let expected: Vec<(&str, Option<&Placement>)> =
        placements.iter().map(|source| (source.key.as_str(), Some(&source.placement))).collect();
    assert_eq!(got, expected, "every source, by offset, with its placement as recorded");

    let other_bucket = manifest.output_sources("another-bucket", &output.key, None, 10).await.unwrap();
    assert!(other_bucket.is_empty(), "an output is named by bucket and key");
    assert!(manifest.output_sources(OUTPUT_BUCKET, "compacted/unknown.json", None, 10).await.unwrap().is_empty());
}

/// Every page of an output's sources, `limit` at a time, each page after the (offset, key) of
/// the last source of the one before.
async fn output_source_pages(manifest: &dyn Manifest, output: &OutputRecord, limit: usize) -> Vec<Vec<ObjectRecord>> {
    let mut pages: Vec<Vec<ObjectRecord>> = Vec::new();
    loop {
        let after = pages
            .last()
            .and_then(|page| page.last())
            .and_then(|source| source.placement.as_ref().map(|placement| (placement.offset, source.key.as_str())));
        let page = manifest.output_sources(OUTPUT_BUCKET, &output.key, after, limit).await.unwrap();
        if page.is_empty() {
            return pages;
        }
        assert!(page.len() <= limit, "the limit holds");
        pages.push(page);
    }
}

/// Issue 11, items 2 and 3: an empty source shares its offset with the source after it. Pages
/// that end on an empty source must not skip the sources at its offset, and sources at one
/// offset come back in key order (the order the seal placed them), on every backend.
pub async fn output_sources_pages_past_empty_sources_that_share_an_offset(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    // In key order, as the seal places them: two empty sources share offset 10 with d.json.
    let layout = [("a.json", 10), ("b-empty.json", 0), ("c-empty.json", 0), ("d.json", 10), ("e-empty.json", 0)];
    // Recorded in reverse, so that no backend hands them back in insertion order by chance.
    for (name, size) in layout.iter().rev() {
        manifest.record_object(&new_object(&partition, name, "10", *size)).await.unwrap();
    }
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let output = output_record(&lease, 1, layout.len() as u64, now);
    manifest.begin_output(&lease, &output).await.unwrap();
    let placements = placements_end_to_end(&output, &pending_objects(manifest, &key).await);
    let offsets: Vec<u64> = placements.iter().map(|source| source.placement.offset).collect();
    assert_eq!(offsets, [0, 10, 10, 10, 20], "the layout under test");
    let mut in_reverse = placements.clone();
    in_reverse.reverse();
    manifest.record_placements(&lease, &output.key, &in_reverse).await.unwrap();

    let expected: Vec<&str> = placements.iter().map(|source| source.key.as_str()).collect();
    for limit in 1..=layout.len() + 1 {
        let pages = output_source_pages(manifest, &output, limit).await;
        let got: Vec<&str> = pages.iter().flatten().map(|source| source.key.as_str()).collect();
        assert_eq!(got, expected, "pages of {limit}: every source once, by offset then key");
    }
}

pub async fn partition_counts_follow_objects_and_outputs(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let [a, b, c, d] = [("a.json", 100), ("b.json", 200), ("c.json", 300), ("d.json", 400)]
        .map(|(name, size)| new_object(&partition, name, "10", size));
    for object in [&a, &b, &c, &d] {
        manifest.record_object(object).await.unwrap();
    }
    // Objects of another partition and another bucket never count here.
    manifest.record_object(&new_object(&day_partition("logs", 15), "a.json", "10", 1000)).await.unwrap();
    let mut other_bucket = new_object(&partition, "a.json", "10", 1000);
    other_bucket.bucket = "another-bucket".to_owned();
    manifest.record_object(&other_bucket).await.unwrap();

    manifest.record_removal(&removal_of(&d, "20")).await.unwrap();
    let counts = |record: PartitionRecord| {
        (
            record.pending_objects,
            record.pending_bytes,
            record.compacted_objects,
            record.compacted_bytes,
            record.committed_outputs,
        )
    };
    assert_eq!(counts(partition_record(manifest, &key).await), (3, 600, 0, 0, 0), "removed objects do not count");

    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let planned: Vec<ObjectRecord> =
        pending_objects(manifest, &key).await.into_iter().filter(|object| object.key != c.key).collect();
    let output = output_record(&lease, 1, 2, now);
    manifest.begin_output(&lease, &output).await.unwrap();
    manifest.record_placements(&lease, &output.key, &placements_end_to_end(&output, &planned)).await.unwrap();
    assert_eq!(counts(partition_record(manifest, &key).await), (3, 600, 0, 0, 0), "placements alone change nothing");
    manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, 300, &sha256_hex("out"), 2, now).await.unwrap();
    let committed = counts(partition_record(manifest, &key).await);
    if Capabilities::of(manifest).derives_compacted_at_commit {
        assert_eq!(committed, (1, 300, 2, 300, 1), "the commit compacts its sources");
    } else {
        assert_eq!(committed, (3, 600, 0, 0, 1), "the committed output counts; mark_compacted flips its sources");
    }
    manifest.mark_compacted(&key, &output.key).await.unwrap();
    assert_eq!(counts(partition_record(manifest, &key).await), (1, 300, 2, 300, 1));

    let abandoned = output_record(&lease, 2, 1, now);
    manifest.begin_output(&lease, &abandoned).await.unwrap();
    manifest.abandon_output(&lease, OUTPUT_BUCKET, &abandoned.key).await.unwrap();
    manifest.mark_missing(&lease, &c.key, "10", "gone").await.unwrap();
    assert_eq!(counts(partition_record(manifest, &key).await), (0, 0, 2, 300, 1), "missing and abandoned do not count");
    assert_eq!(counts(manifest.release(&lease, now).await.unwrap()), (0, 0, 2, 300, 1));
}

pub async fn objects_pages_in_key_order_with_filters(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    // Keys with spaces and non-ASCII characters, recorded out of order.
    let names = ["z.json", "a b.json", "é.json", "0.json", "日本.json"];
    for name in names {
        manifest.record_object(&new_object(&partition, name, "10", 10)).await.unwrap();
    }
    manifest.record_object(&new_object(&day_partition("logs", 15), "a.json", "10", 10)).await.unwrap();
    let removed = new_object(&partition, "z.json", "10", 10);
    manifest.record_removal(&removal_of(&removed, "20")).await.unwrap();

    let mut expected_keys: Vec<String> = names.iter().map(|name| format!("{}{name}", partition.path)).collect();
    expected_keys.sort();
    let mut paged_keys = Vec::new();
    let mut query = ObjectQuery { limit: 2, ..ObjectQuery::all() };
    loop {
        let page = manifest.objects(&key, &query).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2, "the limit holds");
        query.start_after = page.last().map(|object| object.key.clone());
        paged_keys.extend(page.into_iter().map(|object| object.key));
    }
    assert_eq!(paged_keys, expected_keys, "all of the partition's objects, in key order, across pages");

    let pending = manifest.objects(&key, &ObjectQuery::in_state(ObjectState::Pending)).await.unwrap();
    let pending_keys: Vec<String> = pending.into_iter().map(|object| object.key).collect();
    let expected_pending: Vec<String> = expected_keys.iter().filter(|key| **key != removed.key).cloned().collect();
    assert_eq!(pending_keys, expected_pending);
    let removed_records = manifest.objects(&key, &ObjectQuery::in_state(ObjectState::Removed)).await.unwrap();
    assert_eq!(removed_records.into_iter().map(|object| object.key).collect::<Vec<_>>(), [removed.key.as_str()]);
    let after_last = ObjectQuery { start_after: expected_keys.last().cloned(), ..ObjectQuery::all() };
    assert!(manifest.objects(&key, &after_last).await.unwrap().is_empty(), "start_after is exclusive");
    let unknown = PartitionKey::new(SOURCE_BUCKET, "logs/2030/01/01/");
    assert!(manifest.objects(&unknown, &ObjectQuery::all()).await.unwrap().is_empty());
}

/// What the seal plans from: each pending object's key and size, as `objects` lists the pending
/// ones, paged the same way (a removed, a compacted, another partition's object left out).
pub async fn pending_sizes_are_the_pending_objects_keys_and_sizes_in_key_order(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let names = ["z.json", "a b.json", "é.json", "0.json", "日本.json", "m.json"];
    for (index, name) in names.iter().enumerate() {
        manifest.record_object(&new_object(&partition, name, "10", 10 + index as u64)).await.unwrap();
    }
    manifest.record_object(&new_object(&day_partition("logs", 15), "a.json", "10", 10)).await.unwrap();
    let removed = new_object(&partition, "z.json", "10", 10);
    manifest.record_removal(&removal_of(&removed, "20")).await.unwrap();
    let lease = manifest.acquire(&key, "seal-1", at("2024-01-16T00:00:00Z"), lease_for()).await.unwrap();
    let compacted = pending_objects(manifest, &key).await.into_iter().find(|object| object.key.ends_with("m.json"));
    let compacted = compacted.expect("m.json is pending");
    let output = output_record(&lease, 1, 1, at("2024-01-16T00:00:00Z"));
    manifest.begin_output(&lease, &output).await.unwrap();
    let placements = placements_end_to_end(&output, std::slice::from_ref(&compacted));
    manifest.record_placements(&lease, &output.key, &placements).await.unwrap();
    let sha256 = sha256_hex("out");
    manifest
        .commit_output(&lease, OUTPUT_BUCKET, &output.key, 15, &sha256, 1, at("2024-01-16T00:00:00Z"))
        .await
        .unwrap();
    manifest.mark_compacted(&key, &output.key).await.unwrap();

    let expected: Vec<(String, u64)> =
        pending_objects(manifest, &key).await.into_iter().map(|object| (object.key, object.size)).collect();
    assert_eq!(expected.len(), 4, "six recorded, one removed, one compacted: {expected:?}");
    let mut paged = Vec::new();
    let mut start_after: Option<String> = None;
    loop {
        let page = manifest.pending_sizes(&key, start_after.as_deref(), 3).await.unwrap();
        assert!(page.len() <= 3, "the limit holds");
        let Some((last, _)) = page.last() else { break };
        start_after = Some(last.clone());
        paged.extend(page);
    }
    assert_eq!(paged, expected, "the pending objects' keys and sizes, in key order, across pages");
    let unknown = PartitionKey::new(SOURCE_BUCKET, "logs/2030/01/01/");
    assert!(manifest.pending_sizes(&unknown, None, 10).await.unwrap().is_empty());
}

pub async fn partitions_pages_in_bucket_and_path_order(manifest: &dyn Manifest) {
    let mut expected_keys = Vec::new();
    for bucket in ["bucket-b", "bucket-a"] {
        for (prefix, day) in [("logs", 15), ("audit", 14), ("logs", 14)] {
            let partition = day_partition(prefix, day);
            let mut object = new_object(&partition, "a.json", "10", 10);
            object.bucket = bucket.to_owned();
            manifest.record_object(&object).await.unwrap();
            expected_keys.push(PartitionKey::new(bucket, partition.path));
        }
    }
    expected_keys.sort();

    let mut paged_keys = Vec::new();
    let mut start_after: Option<PartitionKey> = None;
    loop {
        let page = manifest.partitions(start_after.as_ref(), 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4, "the limit holds");
        start_after = page.last().map(|record| record.key.clone());
        paged_keys.extend(page.into_iter().map(|record| record.key));
    }
    assert_eq!(paged_keys, expected_keys, "every partition once, in (bucket, path) order");
    let first = manifest.partitions(None, 1).await.unwrap();
    assert_eq!((first[0].pending_objects, first[0].pending_bytes), (1, 10), "pages carry their counts");
}

pub async fn outputs_are_listed_by_generation_then_part_number(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");

    let first = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let first_part_2 = output_record(&first, 2, 1, now);
    let first_part_1 = output_record(&first, 1, 1, now);
    manifest.begin_output(&first, &first_part_2).await.unwrap();
    manifest.begin_output(&first, &first_part_1).await.unwrap();
    manifest.commit_output(&first, OUTPUT_BUCKET, &first_part_1.key, 10, &sha256_hex("1"), 1, now).await.unwrap();

    let takeover_at = now + Duration::hours(1);
    let second = manifest.acquire(&key, "seal-2", takeover_at, lease_for()).await.unwrap();
    let second_part_1 = output_record(&second, 1, 1, takeover_at);
    manifest.begin_output(&second, &second_part_1).await.unwrap();
    manifest.abandon_output(&second, OUTPUT_BUCKET, &first_part_2.key).await.unwrap();

    let all = manifest.outputs(&key, None).await.unwrap();
    let order: Vec<(u64, u32)> = all.iter().map(|output| (output.generation, output.part_number)).collect();
    assert_eq!(order, [(1, 1), (1, 2), (2, 1)]);
    let committed = manifest.outputs(&key, Some(OutputState::Committed)).await.unwrap();
    assert_eq!(committed.into_iter().map(|output| output.key).collect::<Vec<_>>(), [first_part_1.key.as_str()]);
    let abandoned = manifest.outputs(&key, Some(OutputState::Abandoned)).await.unwrap();
    assert_eq!(abandoned.into_iter().map(|output| output.key).collect::<Vec<_>>(), [first_part_2.key.as_str()]);
    let writing = manifest.outputs(&key, Some(OutputState::Writing)).await.unwrap();
    assert_eq!(writing, std::slice::from_ref(&second_part_1));
    assert!(manifest.outputs(&key_of(&day_partition("logs", 15)), None).await.unwrap().is_empty());
    assert_eq!(manifest.output(OUTPUT_BUCKET, &second_part_1.key).await.unwrap(), Some(second_part_1));
    assert_eq!(manifest.output(OUTPUT_BUCKET, "compacted/unknown.json").await.unwrap(), None);
}
