//! A key's record from the two places a manifest may keep it: a stored per-object record (a
//! table written before arrival items, or an exception the seal wrote: `missing`, an expiry
//! mark) and the arrival records ingest appended (issue #12, "ingest in batches").
//!
//! Why a rule of its own: a reader meets both for one key, and must show what today's
//! per-object ingest would have left, had it applied the arrival records to the stored record
//! one by one. [`KeyFold::starting_from`] does exactly that; this module adds what the stored
//! record knows and the arrivals cannot: its state (`compacted`, `missing`) and the placement
//! or marks that come with it. Pure, so both the pending scan and the per-key readers share it.

use super::arrivals::{fold, Arrival, Folded, KeyFold};
use super::records::{ObjectRecord, ObjectState};

/// A key's record as a reader shows it, before its state is derived from placements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub record: ObjectRecord,
    /// The sequencers a committed output's placement may name for this record's version (a
    /// scanned version an event later confirmed was planned under either).
    pub version_sequencers: Vec<String>,
    /// True when the record is the stored one, unchanged by any arrival: its stored state
    /// stands, and only a stored `pending` may derive `compacted`. False when arrivals made
    /// it: then `pending` or `removed` as the events say, and either derives `compacted` when
    /// placed (the removal of a compacted source is ignored, as today's ingest ignores it).
    pub stored: bool,
}

impl KeyRecord {
    /// Whether a committed output's placement of (this key, `sequencer`) makes it compacted.
    pub fn placed_by(&self, sequencer: &str) -> bool {
        let derivable = if self.stored {
            self.record.state == ObjectState::Pending
        } else {
            matches!(self.record.state, ObjectState::Pending | ObjectState::Removed)
        };
        derivable && self.version_sequencers.iter().any(|version| version == sequencer)
    }
}

/// The record of `key` from its stored record (if any) and its arrival records (any order,
/// replays included); `None` when neither holds a created version.
pub fn combine(
    bucket: &str,
    partition_path: &str,
    stored: Option<ObjectRecord>,
    arrivals: &[Arrival],
) -> Option<KeyRecord> {
    let Some(stored) = stored else {
        let folded = fold(arrivals)?;
        return Some(from_folded(bucket, partition_path, folded));
    };
    if arrivals.is_empty() {
        return Some(stored_as_is(stored));
    }
    let start = folded_of(&stored);
    let mut key_fold = KeyFold::starting_from(start.clone());
    let mut ordered: Vec<&Arrival> = arrivals.iter().filter(|arrival| arrival.key == stored.key).collect();
    ordered.sort_by(|left, right| super::arrivals::canonical_order(left, right));
    for arrival in ordered {
        key_fold.apply(arrival);
    }
    let Some(folded) = key_fold.finish() else { return Some(stored_as_is(stored)) };
    // Nothing newer; or only a removal (or a confirming event) of the very version the stored
    // record already settled as compacted or missing, which today's ingest ignores.
    let settled = matches!(stored.state, ObjectState::Compacted | ObjectState::Missing)
        && folded.version_sequencers.contains(&stored.sequencer);
    if folded == start || settled {
        return Some(stored_as_is(stored));
    }
    Some(from_folded(bucket, partition_path, folded))
}

fn stored_as_is(record: ObjectRecord) -> KeyRecord {
    KeyRecord { version_sequencers: vec![record.sequencer.clone()], record, stored: true }
}

/// The stored record as the fold's starting point (what today's ingest reads from the item).
fn folded_of(record: &ObjectRecord) -> Folded {
    Folded {
        key: record.key.clone(),
        sequencer: record.sequencer.clone(),
        size: record.size,
        etag: record.etag.clone(),
        event_time: record.event_time,
        removed: record.state == ObjectState::Removed,
        version_sequencers: vec![record.sequencer.clone()],
    }
}

fn from_folded(bucket: &str, partition_path: &str, folded: Folded) -> KeyRecord {
    let record = ObjectRecord {
        bucket: bucket.to_owned(),
        key: folded.key,
        partition_path: partition_path.to_owned(),
        size: folded.size,
        etag: folded.etag,
        sequencer: folded.sequencer,
        event_time: folded.event_time,
        state: if folded.removed { ObjectState::Removed } else { ObjectState::Pending },
        placement: None,
        expiry_marked_at: None,
        note: None,
    };
    KeyRecord { record, version_sequencers: folded.version_sequencers, stored: false }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::records::Placement;

    fn time(second: u32) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap()
    }

    fn created(sequencer: &str, etag: &str) -> Arrival {
        Arrival::created("p/a.json", sequencer, 10, Some(etag.to_owned()), time(1))
    }

    fn stored(state: ObjectState, sequencer: &str) -> ObjectRecord {
        ObjectRecord {
            bucket: "b".to_owned(),
            key: "p/a.json".to_owned(),
            partition_path: "p/".to_owned(),
            size: 10,
            etag: Some("e1".to_owned()),
            sequencer: sequencer.to_owned(),
            event_time: time(1),
            state,
            placement: (state == ObjectState::Compacted).then(|| Placement {
                output_key: "out".to_owned(),
                generation: 1,
                offset: 0,
                length: 10,
                sha256: "00".to_owned(),
                separator_bytes: 0,
            }),
            expiry_marked_at: None,
            note: (state == ObjectState::Missing).then(|| "gone".to_owned()),
        }
    }

    #[test]
    fn arrivals_alone_fold_to_a_pending_record_and_replays_change_nothing() {
        let once = combine("b", "p/", None, &[created("10", "e1")]).unwrap();
        let replayed = combine("b", "p/", None, &[created("10", "e1"), created("10", "e1")]).unwrap();
        assert_eq!(once, replayed);
        assert_eq!(once.record.state, ObjectState::Pending);
        assert!(!once.stored);
        assert!(once.placed_by("10") && !once.placed_by("20"));
        assert_eq!(combine("b", "p/", None, &[Arrival::removed("p/a.json", "30", time(2))]), None, "never created");
    }

    #[test]
    fn a_stored_exception_stands_against_replays_and_removals_of_its_version() {
        for state in [ObjectState::Missing, ObjectState::Compacted] {
            let replay = combine("b", "p/", Some(stored(state, "10")), &[created("10", "e1")]).unwrap();
            assert!(replay.stored, "{state:?}: a replay keeps the stored record");
            assert_eq!(replay.record, stored(state, "10"));
            let removal = combine("b", "p/", Some(stored(state, "10")), &[Arrival::removed("p/a.json", "20", time(2))]);
            assert_eq!(removal.unwrap().record.state, state, "{state:?}: a later removal is ignored");
        }
    }

    #[test]
    fn a_newer_arrival_replaces_any_stored_record_and_is_pending_again() {
        for state in [ObjectState::Missing, ObjectState::Compacted, ObjectState::Pending, ObjectState::Removed] {
            let newer = combine("b", "p/", Some(stored(state, "10")), &[created("20", "e2")]).unwrap();
            assert!(!newer.stored, "{state:?}");
            assert_eq!((newer.record.state, newer.record.sequencer.as_str()), (ObjectState::Pending, "20"));
            assert_eq!(newer.record.placement, None);
            assert!(newer.placed_by("20") && !newer.placed_by("10"));
        }
    }

    #[test]
    fn a_removal_of_a_stored_pending_record_removes_it_but_a_placement_still_derives_compacted() {
        let removed = combine(
            "b",
            "p/",
            Some(stored(ObjectState::Pending, "10")),
            &[Arrival::removed("p/a.json", "20", time(2))],
        )
        .unwrap();
        assert_eq!(removed.record.state, ObjectState::Removed);
        assert!(removed.placed_by("10"), "placed before the removal: its bytes are safe in the output");
        let stored_removed = combine("b", "p/", Some(stored(ObjectState::Removed, "20")), &[]).unwrap();
        assert!(!stored_removed.placed_by("20"), "a stored removal is final");
    }

    #[test]
    fn an_older_arrival_leaves_the_stored_record() {
        let kept = combine("b", "p/", Some(stored(ObjectState::Pending, "20")), &[created("10", "e0")]).unwrap();
        assert!(kept.stored);
        assert_eq!(kept.record.sequencer, "20");
    }
}
