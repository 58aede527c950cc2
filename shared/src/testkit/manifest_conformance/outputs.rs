//! Objects, outputs and the commit: placements, the derived `compacted` state, expiry marks and paging.

use super::*;

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
    assert_eq!(manifest.record_object(&newer_a).await.unwrap(), outcome(manifest, IngestOutcome::Updated));
    assert_eq!(
        manifest.record_removal(&removal_of(&c, "20")).await.unwrap(),
        outcome(manifest, IngestOutcome::Removed)
    );

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

/// The seal reads the next window's page before it records a window's placements: a newer
/// version that arrived between the two pages (and that the second page's read saw) still
/// supersedes the placement of the version the first page listed.
pub async fn placements_are_checked_against_the_manifest_when_recorded_not_at_the_last_read(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let [a, b, c, d] = ["a.json", "b.json", "c.json", "d.json"].map(|name| new_object(&partition, name, "10", 10));
    manifest.record_objects(&[a.clone(), b.clone(), c.clone(), d.clone()]).await.unwrap();
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    let page = |start_after: Option<&NewObject>| ObjectQuery {
        start_after: start_after.map(|object| object.key.clone()),
        limit: 2,
        ..ObjectQuery::in_state(ObjectState::Pending)
    };
    let first = manifest.objects(&key, &page(None)).await.unwrap();
    assert_eq!(first.iter().map(|record| record.key.as_str()).collect::<Vec<_>>(), [a.key.as_str(), b.key.as_str()]);
    // While the first window is written: a newer `a`; then the second window is read.
    let newer_a = new_object(&partition, "a.json", "20", 11);
    assert_eq!(manifest.record_object(&newer_a).await.unwrap(), outcome(manifest, IngestOutcome::Updated));
    let second = manifest.objects(&key, &page(Some(&b))).await.unwrap();
    assert_eq!(second.len(), 2, "the second window");
    let output = output_record(&lease, 1, 4, now);
    manifest.begin_output(&lease, &output).await.unwrap();
    let placements = placements_end_to_end(&output, &[first, second].concat());
    let (first_window, second_window) = placements.split_at(2);
    let superseded = manifest.record_placements(&lease, &output.key, first_window).await.unwrap();
    assert_eq!(superseded, std::slice::from_ref(&a.key), "the first window's `a` is no longer the version it listed");
    let rest = manifest.record_placements(&lease, &output.key, second_window).await.unwrap();
    assert!(rest.is_empty(), "nothing changed in the second window: {rest:?}");
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

/// The seal flips a committed output's sources a page at a time: `mark_compacted_between`
/// turns only the output's placed sources within the keys given (none before the commit, none
/// of another output or unplaced), and `mark_compacted` then finishes the rest. A backend that
/// derives the state at the commit has nothing to flip per page: its sources read compacted
/// already, and `mark_compacted` answers how many the output committed.
pub async fn mark_compacted_between_flips_the_keys_given_and_mark_compacted_the_rest(manifest: &dyn Manifest) {
    let partition = day_partition("logs", 14);
    let key = key_of(&partition);
    let [a, b, c, d] = ["a.json", "b.json", "c.json", "d.json"].map(|name| new_object(&partition, name, "10", 10));
    for object in [&a, &b, &c, &d] {
        manifest.record_object(object).await.unwrap();
    }
    let now = at("2024-01-16T00:00:00Z");
    let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
    // c stays unplaced between placed sources: a key range of the output is not all the output's.
    let planned: Vec<ObjectRecord> =
        pending_objects(manifest, &key).await.into_iter().filter(|object| object.key != c.key).collect();
    let output = output_record(&lease, 1, 3, now);
    manifest.begin_output(&lease, &output).await.unwrap();
    manifest.record_placements(&lease, &output.key, &placements_end_to_end(&output, &planned)).await.unwrap();
    assert_eq!(
        manifest.mark_compacted_between(&key, &output.key, &a.key, &d.key).await.unwrap(),
        0,
        "an output still being written"
    );
    assert_eq!(pending_objects(manifest, &key).await.len(), 4, "nothing counts before the commit");

    manifest.commit_output(&lease, OUTPUT_BUCKET, &output.key, 30, &sha256_hex("out"), 3, now).await.unwrap();
    let derives = Capabilities::of(manifest).derives_compacted_at_commit;
    let flipped = manifest.mark_compacted_between(&key, &output.key, &a.key, &c.key).await.unwrap();
    assert_eq!(flipped, if derives { 0 } else { 2 }, "a and b; c is not the output's");
    assert_eq!(object_record(manifest, &a).await.state, ObjectState::Compacted);
    assert_eq!(object_record(manifest, &b).await.state, ObjectState::Compacted);
    assert_eq!(object_record(manifest, &c).await.state, ObjectState::Pending, "c was never placed");
    let d_state = if derives { ObjectState::Compacted } else { ObjectState::Pending };
    assert_eq!(object_record(manifest, &d).await.state, d_state, "d lies past the keys given");
    assert_eq!(
        manifest.mark_compacted_between(&key, &output.key, &a.key, &c.key).await.unwrap(),
        0,
        "flipping again changes nothing"
    );

    let finished = manifest.mark_compacted(&key, &output.key).await.unwrap();
    assert_eq!(finished, if derives { 3 } else { 1 }, "d, or how many the output committed");
    assert_eq!(object_record(manifest, &d).await.state, ObjectState::Compacted);
    assert_eq!(object_record(manifest, &c).await.state, ObjectState::Pending);
    let keys: Vec<String> = pending_objects(manifest, &key).await.into_iter().map(|object| object.key).collect();
    assert_eq!(keys, std::slice::from_ref(&c.key), "only c is left pending");
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

    assert_eq!(
        manifest.record_removal(&removal_of(&a, "20")).await.unwrap(),
        outcome(manifest, IngestOutcome::RemovalIgnored)
    );
    let a_record = object_record(manifest, &a).await;
    assert_eq!(a_record.state, ObjectState::Compacted, "a removal of a compacted source changes nothing");
    assert_eq!(a_record.placement.map(|placement| placement.output_key), Some(output.key.clone()));

    // A newer version of b after the seal, then its removal: no output holds it.
    let newer_b = new_object(&partition, "b.json", "20", 11);
    assert_eq!(manifest.record_object(&newer_b).await.unwrap(), outcome(manifest, IngestOutcome::Updated));
    assert_eq!(
        manifest.record_removal(&removal_of(&newer_b, "30")).await.unwrap(),
        outcome(manifest, IngestOutcome::Removed)
    );
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
