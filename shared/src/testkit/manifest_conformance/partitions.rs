//! Which partitions are closed and wait for a seal.

use super::*;

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
