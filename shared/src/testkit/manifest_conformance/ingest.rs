//! Ingest: recording objects, replays, scans and removals.

use super::*;

pub async fn record_object_records_a_new_pending_object_and_its_partition(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let object = new_object(&partition, "a.json", "0055AED6DCD90281E5", 120);

    let answered = manifest.record_object(&object).await.unwrap();
    assert_eq!(answered, outcome(manifest, IngestOutcome::Recorded));
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
    assert_eq!(manifest.record_object(&later).await.unwrap(), outcome(manifest, IngestOutcome::Recorded));
    let record = partition_record(manifest, &key_of(&partition)).await;
    assert_eq!(record.closes_at, closes_at(&partition), "the first close time stays");
    assert_eq!((record.pending_objects, record.pending_bytes), (2, 150));

    assert_eq!(manifest.object(SOURCE_BUCKET, "logs/2024/01/14/unknown.json").await.unwrap(), None);
    assert_eq!(manifest.partition(&PartitionKey::new(SOURCE_BUCKET, "logs/2024/01/15/")).await.unwrap(), None);
}

pub async fn record_object_ignores_replays_and_older_events(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let original = new_object(&partition, "a.json", "0055AED6DCD90281E5", 100);
    assert_eq!(manifest.record_object(&original).await.unwrap(), outcome(manifest, IngestOutcome::Recorded));

    let replay = original.clone();
    assert_eq!(manifest.record_object(&replay).await.unwrap(), outcome(manifest, IngestOutcome::Stale), "a replay");
    // Sequencers compare after right-padding with zeros: this is the same sequencer, although a
    // plain string comparison would call it greater.
    let padded = new_object(&partition, "a.json", "0055AED6DCD90281E500", 999);
    assert_eq!(
        manifest.record_object(&padded).await.unwrap(),
        outcome(manifest, IngestOutcome::Stale),
        "a padded replay"
    );
    let lowercase = new_object(&partition, "a.json", "0055aed6dcd90281e5", 999);
    assert_eq!(
        manifest.record_object(&lowercase).await.unwrap(),
        outcome(manifest, IngestOutcome::Stale),
        "hex case does not matter"
    );
    let older = new_object(&partition, "a.json", "0055AED6DCD90281E4", 999);
    assert_eq!(
        manifest.record_object(&older).await.unwrap(),
        outcome(manifest, IngestOutcome::Stale),
        "an older event"
    );
    let record = object_record(manifest, &original).await;
    assert_eq!((record.size, record.sequencer.as_str()), (100, "0055AED6DCD90281E5"), "stale events change nothing");

    // A backfill scan's sequencer loses to any event, and any event beats a scan. (Scans are
    // decided at ingest on every backend: DynamoDB keeps their listings in object items.)
    let scanned = new_object(&partition, "scanned.json", SCAN_SEQUENCER, 10);
    assert_eq!(manifest.record_object(&scanned).await.unwrap(), IngestOutcome::Recorded);
    let event_after_scan = new_object(&partition, "scanned.json", "01", 11);
    assert_eq!(manifest.record_object(&event_after_scan).await.unwrap(), outcome(manifest, IngestOutcome::Updated));
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
    assert_eq!(manifest.record_object(&event).await.unwrap(), outcome(manifest, IngestOutcome::Stale));
    let record = object_record(manifest, &confirmed).await;
    assert_eq!((record.state, record.sequencer.as_str()), (ObjectState::Compacted, "0055AED6DCD90281E5"));
    assert!(record.placement.is_some(), "its placement stays");
    let older_event = new_object(&partition, "b.json", "0055AED6DCD90281E4", 99);
    assert_eq!(manifest.record_object(&older_event).await.unwrap(), outcome(manifest, IngestOutcome::Stale));
}

pub async fn record_objects_records_a_batch_as_one_at_a_time_would(manifest: &dyn Manifest) {
    let day_14 = day_partition("logs", 14);
    let day_15 = day_partition("logs", 15);
    let known_old = new_object(&day_14, "known-old.json", "0000000000000005", 10);
    let known_new = new_object(&day_14, "known-new.json", "0000000000000005", 20);
    assert_eq!(
        manifest.record_objects(&[known_old.clone(), known_new.clone()]).await.unwrap(),
        vec![outcome(manifest, IngestOutcome::Recorded); 2]
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
        [IngestOutcome::Recorded, IngestOutcome::Recorded, IngestOutcome::Stale, IngestOutcome::Updated]
            .map(|decided| outcome(manifest, decided))
            .to_vec(),
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
    assert_eq!(manifest.record_object(&late).await.unwrap(), outcome(manifest, IngestOutcome::Recorded));
    assert_eq!(partition_record(manifest, &key).await.state, PartitionState::Open);
    let second_seal_at = sealed_at + Duration::hours(1);
    let lease = manifest.acquire(&key, "seal-2", second_seal_at, lease_for()).await.unwrap();
    seal_pending_into_one_output(manifest, &lease, 1, second_seal_at).await;
    assert_eq!(manifest.release(&lease, second_seal_at).await.unwrap().state, PartitionState::Sealed);

    // A newer version of a compacted object: pending again, and nothing decided about the old
    // bytes (placement, expiry mark) carries over.
    let second_version = new_object(&partition, "a.json", "20", 150);
    assert_eq!(manifest.record_object(&second_version).await.unwrap(), outcome(manifest, IngestOutcome::Updated));
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
    assert_eq!(
        manifest.record_removal(&removal_of(&unknown, "20")).await.unwrap(),
        outcome(manifest, IngestOutcome::RemovalIgnored)
    );
    assert_eq!(manifest.object(SOURCE_BUCKET, &unknown.key).await.unwrap(), None, "no record for an unknown key");

    let pending = new_object(&partition, "pending.json", "10", 100);
    manifest.record_object(&pending).await.unwrap();
    let older_removal = removal_of(&pending, "05");
    assert_eq!(
        manifest.record_removal(&older_removal).await.unwrap(),
        outcome(manifest, IngestOutcome::RemovalIgnored)
    );
    let same_sequencer = removal_of(&pending, "10");
    assert_eq!(
        manifest.record_removal(&same_sequencer).await.unwrap(),
        outcome(manifest, IngestOutcome::RemovalIgnored)
    );
    assert_eq!(object_record(manifest, &pending).await.state, ObjectState::Pending);

    let removal = removal_of(&pending, "20");
    assert_eq!(manifest.record_removal(&removal).await.unwrap(), outcome(manifest, IngestOutcome::Removed));
    let record = object_record(manifest, &pending).await;
    assert_eq!((record.state, record.sequencer.as_str()), (ObjectState::Removed, "20"));
    assert_eq!(record.event_time, removal.event_time, "the record describes the removal");
    assert_eq!(
        manifest.record_removal(&removal).await.unwrap(),
        outcome(manifest, IngestOutcome::RemovalIgnored),
        "a replay"
    );
    assert_eq!(
        manifest.record_object(&pending).await.unwrap(),
        outcome(manifest, IngestOutcome::Stale),
        "the creation replayed"
    );
    assert_eq!(partition_record(manifest, &key).await.pending_objects, 0, "a removed object is not pending");

    let recreated = new_object(&partition, "pending.json", "30", 70);
    assert_eq!(
        manifest.record_object(&recreated).await.unwrap(),
        outcome(manifest, IngestOutcome::Updated),
        "created again"
    );
    assert_eq!(object_record(manifest, &recreated).await.state, ObjectState::Pending);

    // Compacted and missing objects are not in any plan: their removal changes nothing.
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    seal_pending_into_one_output(manifest, &lease, 1, now).await;
    let missing = new_object(&partition, "missing.json", "10", 5);
    manifest.record_object(&missing).await.unwrap();
    manifest.mark_missing(&lease, &missing.key, "10", "gone when the seal read it").await.unwrap();

    assert_eq!(
        manifest.record_removal(&removal_of(&recreated, "40")).await.unwrap(),
        outcome(manifest, IngestOutcome::RemovalIgnored)
    );
    assert_eq!(object_record(manifest, &recreated).await.state, ObjectState::Compacted);
    assert_eq!(
        manifest.record_removal(&removal_of(&missing, "40")).await.unwrap(),
        outcome(manifest, IngestOutcome::RemovalIgnored)
    );
    assert_eq!(object_record(manifest, &missing).await.state, ObjectState::Missing);
}
