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

// The cases, by what they check; every case stays at `manifest_conformance::<case>`, where the
// macro below names it.
mod ingest;
mod lock;
mod outputs;
mod partitions;

pub use ingest::*;
pub use lock::*;
pub use outputs::*;
pub use partitions::*;

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
            placements_are_checked_against_the_manifest_when_recorded_not_at_the_last_read,
            begin_output_again_updates_a_writing_output,
            commit_output_is_idempotent_and_never_revives_an_abandoned_output,
            mark_compacted_needs_a_committed_output,
            mark_compacted_between_flips_the_keys_given_and_mark_compacted_the_rest,
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
    /// Ingest appends arrival records without reading (DynamoDB, issue #12): every ingest call
    /// answers [`IngestOutcome::Appended`], and what it came to shows in the reads after it.
    pub appends_arrivals: bool,
}

impl Capabilities {
    /// The flags of the backend behind `manifest`, by its name.
    pub fn of(manifest: &dyn Manifest) -> Self {
        match manifest.name() {
            "sqlite" => Capabilities {
                lists_partitions_without_work: false,
                derives_compacted_at_commit: false,
                appends_arrivals: false,
            },
            "dynamodb" => Capabilities {
                lists_partitions_without_work: true,
                derives_compacted_at_commit: true,
                appends_arrivals: true,
            },
            other => panic!("the conformance suite does not know backend {other:?}: add its flags to Capabilities::of"),
        }
    }
}

/// The outcome `manifest`'s ingest answers for an event whose effect is `decided`: the same,
/// or [`IngestOutcome::Appended`] where ingest appends without reading (the reads after it
/// check the effect on both).
pub fn outcome(manifest: &dyn Manifest, decided: IngestOutcome) -> IngestOutcome {
    if Capabilities::of(manifest).appends_arrivals {
        IngestOutcome::Appended
    } else {
        decided
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
