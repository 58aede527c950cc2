//! The lock: acquire, renew, takeover and release.

use super::*;

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
    assert_eq!(manifest.record_object(&late).await.unwrap(), outcome(manifest, IngestOutcome::Recorded));
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
