use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;

use super::*;
use crate::arrivals::fold_keys;
use crate::domain::arrivals::{fold, Folded};

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-14T10:00:00Z").unwrap().with_timezone(&Utc)
}

/// The smallest budget a fan-in allows: pages of one largest record.
fn tight(fan_in: usize) -> MergeConfig {
    MergeConfig { memory_bytes: (fan_in + 1) * MAX_RECORD_MEMORY_BYTES, fan_in }
}

fn record(key: u32, sequencer: u32, removed: bool, second: i64) -> Arrival {
    let key = format!("AWSLogs/123456789012/CloudTrail/us-east-1/2024/01/14/{key:05}.json.gz");
    let sequencer = format!("{:06X}", sequencer + 1);
    let time = base() + Duration::seconds(second);
    if removed {
        Arrival::removed(key, sequencer, time)
    } else {
        Arrival::created(key, sequencer, 100 + second as u64, Some(format!("e{second}")), time)
    }
}

/// What the merge must equal: everything sorted, replays dropped; and each key's fold.
fn naive(records: &[Arrival]) -> (Vec<Arrival>, Vec<Folded>) {
    let mut sorted = records.to_vec();
    sorted.sort_by(canonical_order);
    sorted.dedup();
    let mut folds = Vec::new();
    for group in sorted.chunk_by(|left, right| left.key == right.key) {
        folds.extend(fold(group));
    }
    (sorted, folds)
}

fn merge_all(config: MergeConfig, records: &[Arrival]) -> (Vec<Arrival>, MergeStats) {
    let mut merge = ArrivalMerge::new(config).unwrap();
    for record in records {
        merge.push(record.clone()).unwrap();
    }
    let mut merged = merge.finish().unwrap();
    let records: Vec<Arrival> = merged.by_ref().collect::<Result<_, _>>().unwrap();
    (records, merged.stats())
}

/// Many batches with replays, over a budget a few dozen records fill: the merge spills dozens
/// of runs, needs passes to bring them under the fan-in, and never holds more than the budget.
#[test]
fn a_merge_far_over_its_budget_holds_at_most_the_budget_and_loses_nothing() {
    let config = tight(3);
    let mut records = Vec::new();
    for batch in 0..60u32 {
        for index in 0..50u32 {
            let key = (batch * 7919 + index * 104_729) % 1_000;
            records.push(record(key, batch * 50 + index, index % 11 == 0, i64::from(index)));
        }
        if batch % 5 == 0 {
            // A replayed batch: the same records again.
            let replay: Vec<Arrival> = records[records.len() - 50..].to_vec();
            records.extend(replay);
        }
    }
    let (merged, stats) = merge_all(config, &records);
    let (expected, expected_folds) = naive(&records);
    assert_eq!(merged.len(), expected.len());
    assert!(merged == expected, "the merged stream is the naive sort with replays dropped");
    assert!(stats.runs_written > 3 * config.fan_in as u64, "spilled: {stats:?}");
    assert!(stats.passes >= 2, "merged in passes: {stats:?}");
    assert!(
        stats.peak_held_bytes <= config.memory_bytes,
        "held {} of a {}-byte budget",
        stats.peak_held_bytes,
        config.memory_bytes
    );
    assert!(stats.peak_held_bytes * 2 > config.memory_bytes, "the budget is used, not ignored: {stats:?}");
    let folds: Vec<Folded> = fold_keys(merged.into_iter().map(Ok::<_, MergeError>)).collect::<Result<_, _>>().unwrap();
    assert_eq!(folds, expected_folds);
}

#[test]
fn a_merge_under_its_budget_never_touches_the_disk() {
    let records: Vec<Arrival> = (0..20).map(|index| record(20 - index, index, false, 0)).collect();
    let (merged, stats) = merge_all(MergeConfig::default(), &records);
    assert_eq!(merged, naive(&records).0);
    assert_eq!((stats.runs_written, stats.spilled_bytes), (0, 0));
    assert_eq!(stats.records_pushed, 20);
}

#[test]
fn budgets_that_cannot_hold_a_page_of_the_largest_record_are_refused() {
    let error = ArrivalMerge::new(MergeConfig { memory_bytes: 1 << 10, fan_in: 4 }).err().unwrap();
    assert!(error.to_string().contains("raise the memory budget"), "{error}");
    assert!(ArrivalMerge::new(MergeConfig { memory_bytes: 1 << 30, fan_in: 1 }).is_err(), "a fan-in of 1 never ends");
    assert!(ArrivalMerge::new(tight(2)).is_ok());
}

#[test]
fn records_over_the_limits_are_refused_at_push() {
    let mut merge = ArrivalMerge::new(MergeConfig::default()).unwrap();
    let error = merge.push(Arrival::created("k".repeat(2000), "01", 1, None, base())).unwrap_err();
    assert!(error.to_string().contains("key of 2000 bytes"), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Random batches (few keys, so that one key's records span runs), replays, and budgets
    /// from all-in-memory to a page a run: the merged stream and its folds equal the naive ones.
    #[test]
    fn the_merged_stream_equals_a_naive_sort_and_fold(
        events in proptest::collection::vec((0u32..60, 0u32..200, any::<bool>(), 0i64..5), 0..600),
        replays in proptest::collection::vec(any::<prop::sample::Index>(), 0..50),
        fan_in in 2usize..5,
        in_memory in any::<bool>(),
    ) {
        let mut records: Vec<Arrival> =
            events.into_iter().map(|(key, sequencer, removed, second)| record(key, sequencer, removed, second)).collect();
        if !records.is_empty() {
            let replayed: Vec<Arrival> = replays.iter().map(|index| records[index.index(records.len())].clone()).collect();
            records.extend(replayed);
        }
        let config = if in_memory { MergeConfig::default() } else { tight(fan_in) };
        let (merged, stats) = merge_all(config, &records);
        let (expected, expected_folds) = naive(&records);
        prop_assert!(stats.peak_held_bytes <= config.memory_bytes);
        prop_assert_eq!(&merged, &expected);
        let folds: Vec<Folded> = fold_keys(merged.into_iter().map(Ok::<_, MergeError>)).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(folds, expected_folds);
    }
}

#[test]
fn a_damaged_spill_page_is_an_error_not_an_allocation_of_what_it_claims() {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let mut reader = RunReader { next: 0, end: 4, page_bytes: 1 << 20, page: VecDeque::new() };
    let error = reader.head(&mut file, &mut Held::default()).err().unwrap();
    assert!(error.to_string().contains("a page of 4294967295 bytes at offset 0"), "{error}");
}
