//! A source's state as its output's commit decides it, without a write per source.
//!
//! An output's commit is the point where every source it placed becomes compacted. A backend
//! may record that on each source's record (SQLite does, for free; DynamoDB does today, one
//! write unit per source), or derive it when a record is read: a record that still says
//! `pending`, and whose (key, sequencer) a committed output's placement names, is compacted.
//! The rule is the same either way, so both backends share it from here:
//! - only a `pending` record turns: `missing` and `removed` were decided before the commit
//!   (the seal's read failed, or an ObjectRemoved event took the source out of the plan), and
//!   `compacted` already is;
//! - only the placed version: a record holding a newer sequencer is a newer version, which is
//!   pending again whatever an output holds of the older one (sequencers never go back, so a
//!   placement can never name a version newer than the record's);
//! - only a committed output's placement counts: chunks of an output being written, or
//!   abandoned, are not trusted.
//!
//! [`derive_in_key_order`] applies the rule to a run of records against the committed
//! placements of the same key range, both in key order, as a merge: memory stays a page of
//! each, whatever the partition's size.

use std::iter::Peekable;

use crate::domain::records::ObjectState;

/// One version of one key: a record's, or the one a placement names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'a> {
    pub key: &'a str,
    pub sequencer: &'a str,
}

/// The state of a record whose stored state is `recorded`, given whether a committed output's
/// placement names the record's own version (its key and `recorded_sequencer`).
pub fn derived_state(recorded: ObjectState, placed_in_committed_output: bool) -> ObjectState {
    match recorded {
        ObjectState::Pending if placed_in_committed_output => ObjectState::Compacted,
        state => state,
    }
}

/// Whether a placement of `placed` applies to a record holding `recorded`, `recorded_state`:
/// the record must still be pending as the placed version. What a commit turns compacted, and
/// what a placement check (is this source still the planned version?) accepts.
pub fn holds_placed_version(recorded_state: ObjectState, recorded: Version<'_>, placed: Version<'_>) -> bool {
    recorded_state == ObjectState::Pending && recorded == placed
}

/// The derived state of each record of `records`, in their order. `records` must be in key
/// order with each key once (a partition's records are), and `committed_placements` in key
/// order too (an output's placements are in key order; several outputs' merged by key may
/// name one key more than once, for versions placed by successive seals). Out-of-order input
/// gives wrong answers, never a panic.
pub fn derive_in_key_order<'a, R, P>(records: R, committed_placements: P) -> DerivedStates<'a, R::IntoIter, P::IntoIter>
where
    R: IntoIterator<Item = (Version<'a>, ObjectState)>,
    P: IntoIterator<Item = Version<'a>>,
{
    DerivedStates { records: records.into_iter(), placements: committed_placements.into_iter().peekable() }
}

/// The iterator of [`derive_in_key_order`].
pub struct DerivedStates<'a, R, P>
where
    R: Iterator<Item = (Version<'a>, ObjectState)>,
    P: Iterator<Item = Version<'a>>,
{
    records: R,
    placements: Peekable<P>,
}

impl<'a, R, P> Iterator for DerivedStates<'a, R, P>
where
    R: Iterator<Item = (Version<'a>, ObjectState)>,
    P: Iterator<Item = Version<'a>>,
{
    type Item = ObjectState;

    fn next(&mut self) -> Option<ObjectState> {
        let (record, state) = self.records.next()?;
        // Placements of keys before this record's name no record of this run (a key placed
        // and since removed from the table, say): skip them.
        while self.placements.next_if(|placed| placed.key < record.key).is_some() {}
        let mut placed = false;
        while let Some(placement) = self.placements.next_if(|placed| placed.key == record.key) {
            placed |= holds_placed_version(state, record, placement);
        }
        Some(derived_state(state, placed))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const STATES: [ObjectState; 4] =
        [ObjectState::Pending, ObjectState::Compacted, ObjectState::Missing, ObjectState::Removed];

    fn version<'a>(key: &'a str, sequencer: &'a str) -> Version<'a> {
        Version { key, sequencer }
    }

    #[test]
    fn a_pending_record_of_the_placed_version_is_compacted_and_nothing_else_turns() {
        assert_eq!(derived_state(ObjectState::Pending, true), ObjectState::Compacted);
        assert_eq!(derived_state(ObjectState::Pending, false), ObjectState::Pending);
        for state in [ObjectState::Compacted, ObjectState::Missing, ObjectState::Removed] {
            assert_eq!(derived_state(state, true), state, "{state:?} was decided before any commit");
            assert_eq!(derived_state(state, false), state);
        }
    }

    #[test]
    fn only_the_placed_version_of_a_pending_record_takes_the_placement() {
        let placed = version("logs/a.json", "0055");
        assert!(holds_placed_version(ObjectState::Pending, version("logs/a.json", "0055"), placed));
        assert!(!holds_placed_version(ObjectState::Pending, version("logs/a.json", "0056"), placed), "newer");
        assert!(!holds_placed_version(ObjectState::Pending, version("logs/b.json", "0055"), placed), "another key");
        assert!(!holds_placed_version(ObjectState::Removed, version("logs/a.json", "0055"), placed), "removed");
        assert!(!holds_placed_version(ObjectState::Missing, version("logs/a.json", "0055"), placed), "missing");
    }

    #[test]
    fn a_merge_finds_each_records_placements_among_several_outputs() {
        let records = [
            (version("a", "10"), ObjectState::Pending),   // placed by the first seal
            (version("b", "20"), ObjectState::Pending),   // a newer version than the one placed
            (version("c", "30"), ObjectState::Pending),   // placed twice: an old version, then this one
            (version("d", "10"), ObjectState::Removed),   // removed before the commit
            (version("e", "10"), ObjectState::Pending),   // a late object, placed nowhere yet
            (version("f", "10"), ObjectState::Compacted), // flipped by an older version
        ];
        // Two outputs' placements merged by key; "0" is placed but its record is gone.
        let placements = [
            version("0", "10"),
            version("a", "10"),
            version("b", "10"),
            version("c", "10"),
            version("c", "30"),
            version("d", "10"),
            version("f", "10"),
        ];
        let derived: Vec<ObjectState> = derive_in_key_order(records, placements).collect();
        assert_eq!(
            derived,
            [
                ObjectState::Compacted,
                ObjectState::Pending,
                ObjectState::Compacted,
                ObjectState::Removed,
                ObjectState::Pending,
                ObjectState::Compacted,
            ]
        );
    }

    #[test]
    fn a_merge_without_placements_changes_nothing() {
        let records = STATES.map(|state| (version(state.as_str(), "10"), state));
        let derived: Vec<ObjectState> = derive_in_key_order(records, []).collect();
        assert_eq!(derived, STATES);
    }

    fn keys_and_sequencers() -> impl Strategy<Value = Vec<(u8, u8, u8, bool)>> {
        // (key, recorded sequencer, state index, placed?): few keys and sequencers, so that
        // placements of other versions and of absent keys are common.
        proptest::collection::vec((0u8..40, 0u8..4, 0u8..4, any::<bool>()), 0..60)
    }

    proptest! {
        /// The merge agrees with the rule applied to each record on its own, against every
        /// placement of its key.
        #[test]
        fn the_merge_agrees_with_the_rule_per_record(
            records in keys_and_sequencers(),
            extra in proptest::collection::vec((0u8..40, 0u8..4), 0..40),
        ) {
            let mut records: Vec<(String, String, ObjectState, bool)> = records
                .into_iter()
                .map(|(key, sequencer, state, placed)| {
                    (format!("k{key:02}"), format!("{sequencer}"), STATES[usize::from(state)], placed)
                })
                .collect();
            records.sort_by(|one, other| one.0.cmp(&other.0));
            records.dedup_by(|one, other| one.0 == other.0);
            let mut placements: Vec<(String, String)> = records
                .iter()
                .filter(|record| record.3)
                .map(|record| (record.0.clone(), record.1.clone()))
                .chain(extra.into_iter().map(|(key, sequencer)| (format!("k{key:02}"), format!("{sequencer}"))))
                .collect();
            placements.sort();
            let derived: Vec<ObjectState> = derive_in_key_order(
                records.iter().map(|record| (version(&record.0, &record.1), record.2)),
                placements.iter().map(|placed| version(&placed.0, &placed.1)),
            )
            .collect();
            let expected: Vec<ObjectState> = records
                .iter()
                .map(|record| {
                    let placed = placements.iter().any(|placed| {
                        holds_placed_version(record.2, version(&record.0, &record.1), version(&placed.0, &placed.1))
                    });
                    derived_state(record.2, placed)
                })
                .collect();
            prop_assert_eq!(derived, expected);
        }
    }
}
