//! The manifest's records: one per partition, per source object and per output.
//!
//! ```text
//! object:    pending ──seal commits its output──▶ compacted ──tag/delete──▶ (expiry_marked_at set)
//!               │ └──ObjectRemoved──▶ removed
//!               └──gone or changed at seal time──▶ missing
//! output:    writing ──commit──▶ committed
//!               └──next run finds it uncommitted──▶ abandoned (its object is deleted, never trusted)
//! partition: open ──lock──▶ sealing ──release──▶ sealed ──late object──▶ open (next generation)
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::partition::PartitionKey;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        concat!(stringify!($name), " {:?} is not known: use one of {}"),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// Where a partition is in the seal protocol.
    PartitionState { Open => "open", Sealing => "sealing", Sealed => "sealed" }
);

string_enum!(
    /// Where a source object is.
    ObjectState {
        Pending => "pending",
        Compacted => "compacted",
        Missing => "missing",
        Removed => "removed",
    }
);

string_enum!(
    /// Where an output is.
    OutputState { Writing => "writing", Committed => "committed", Abandoned => "abandoned" }
);

/// A partition's record, with counts the adapter derives from its objects and outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub key: PartitionKey,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    pub state: PartitionState,
    /// Bumped by every lock; output keys carry it, so every seal run writes keys of its own.
    pub generation: u64,
    pub lock_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub pending_objects: u64,
    pub pending_bytes: u64,
    pub compacted_objects: u64,
    pub compacted_bytes: u64,
    pub committed_outputs: u64,
    pub sealed_at: Option<DateTime<Utc>>,
}

/// Where a source's bytes sit inside an output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub output_key: String,
    pub generation: u64,
    /// Offset of the source's first byte in the output.
    pub offset: u64,
    /// The source's own length; a separator, if any, follows it and is not counted here.
    pub length: u64,
    /// sha256 of the source's bytes (lowercase hex).
    pub sha256: String,
    /// Bytes inserted after the source (a `\n` for a line file that lacked one).
    pub separator_bytes: u64,
}

/// A source object's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub bucket: String,
    pub key: String,
    pub partition_path: String,
    pub size: u64,
    pub etag: Option<String>,
    pub sequencer: String,
    pub event_time: DateTime<Utc>,
    pub state: ObjectState,
    pub placement: Option<Placement>,
    pub expiry_marked_at: Option<DateTime<Utc>>,
    /// Why the object is `missing`, when it is.
    pub note: Option<String>,
}

/// An output's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub bucket: String,
    pub key: String,
    pub partition: PartitionKey,
    pub generation: u64,
    pub part_number: u32,
    pub state: OutputState,
    /// Set once the output is committed.
    pub size: Option<u64>,
    /// sha256 of the whole output (lowercase hex), set once committed.
    pub sha256: Option<String>,
    pub object_count: u64,
    /// The multipart upload in flight while `writing`, so a later run can abort it.
    pub upload_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub committed_at: Option<DateTime<Utc>>,
    /// How far marking this output's sources for expiry got, when the output tracks it (see
    /// [`ExpiryCursor`]); `None` for outputs committed before it existed, whose sources carry
    /// their own marks, and for outputs not committed yet.
    #[serde(default)]
    pub expiry: Option<ExpiryCursor>,
}

/// Expiry recorded per output instead of per source: the seal tags (or deletes) an output's
/// sources in (offset, key) order and moves this cursor past each page it finished, one write
/// per page instead of one per source. A source is marked when the cursor has passed it;
/// sources the store refused (changed, gone, at the tag limit) are also passed, and keep their
/// own mark as the record of what happened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryCursor {
    /// The (offset, key) of the last source marked; `None` before the first.
    pub through: Option<(u64, String)>,
    /// Every source of the output is marked.
    pub done: bool,
    /// When the cursor last moved.
    pub marked_at: Option<DateTime<Utc>>,
}

impl ExpiryCursor {
    /// Whether the source at (offset, key) of this output is marked.
    pub fn covers(&self, offset: u64, key: &str) -> bool {
        self.done
            || self
                .through
                .as_ref()
                .is_some_and(|(through_offset, through_key)| (offset, key) <= (*through_offset, through_key.as_str()))
    }

    /// When the source at (offset, key) was marked, as far as the cursor tells.
    pub fn marked_at(&self, offset: u64, key: &str) -> Option<DateTime<Utc>> {
        self.marked_at.filter(|_| self.covers(offset, key))
    }

    /// The cursor after marking up to `through` (the last of the output's sources when `done`),
    /// or `None` when that would not move it forward: cursors only move forward, so a page
    /// finished again by a rerun changes nothing.
    pub fn advanced(&self, through: (u64, &str), done: bool, at: DateTime<Utc>) -> Option<ExpiryCursor> {
        let forward = match &self.through {
            None => true,
            Some((offset, key)) => (through.0, through.1) > (*offset, key.as_str()),
        };
        if self.done || (!forward && !done) {
            return None;
        }
        let through = if forward { Some((through.0, through.1.to_owned())) } else { self.through.clone() };
        Some(ExpiryCursor { through, done, marked_at: Some(at) })
    }
}

/// Whether a committed output still has sources to mark for expiry (the seal's recovery
/// finishes them). Outputs without a cursor mark their sources one by one instead.
pub fn expiry_unfinished(output: &OutputRecord) -> bool {
    output.state == OutputState::Committed && output.expiry.as_ref().is_some_and(|cursor| !cursor.done)
}

/// A source's expiry mark: its own, else its output's cursor's (when the output tracks one
/// and has passed the source's placement in it).
pub fn source_expiry_mark(source: &ObjectRecord, output: Option<&OutputRecord>) -> Option<DateTime<Utc>> {
    source.expiry_marked_at.or_else(|| {
        let (output, placement) = (output?, source.placement.as_ref()?);
        if output.key != placement.output_key || source.state != ObjectState::Compacted {
            return None;
        }
        output.expiry.as_ref()?.marked_at(placement.offset, &source.key)
    })
}

/// Whether a seal should renew its lease now: once less than half of a lease of `lease_for`
/// is left, so that however slow the next output (or window of one) is, the lease outlives it
/// with a renewal to spare.
pub fn renewal_due(expires_at: DateTime<Utc>, now: DateTime<Utc>, lease_for: chrono::Duration) -> bool {
    expires_at - now < lease_for / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn an_expiry_cursor_covers_what_it_passed_by_offset_then_key() {
        let at = time("2024-01-16T00:00:00Z");
        let cursor = ExpiryCursor { through: Some((10, "b".to_owned())), done: false, marked_at: Some(at) };
        assert!(cursor.covers(0, "z"), "an earlier offset");
        assert!(cursor.covers(10, "a"), "an empty source at the same offset, earlier key");
        assert!(cursor.covers(10, "b"), "the cursor's own source");
        assert!(!cursor.covers(10, "c"), "same offset, later key");
        assert!(!cursor.covers(11, "a"));
        assert_eq!(cursor.marked_at(11, "a"), None);
        assert_eq!(cursor.marked_at(3, "a"), Some(at));
        assert!(!ExpiryCursor::default().covers(0, ""), "a fresh cursor covers nothing");
        assert!(ExpiryCursor { done: true, ..ExpiryCursor::default() }.covers(u64::MAX, "z"), "done covers all");
    }

    #[test]
    fn an_expiry_cursor_only_moves_forward() {
        let (first, later) = (time("2024-01-16T00:00:00Z"), time("2024-01-16T01:00:00Z"));
        let fresh = ExpiryCursor::default();
        let moved = fresh.advanced((10, "b"), false, first).expect("a fresh cursor moves");
        assert_eq!(moved.through, Some((10, "b".to_owned())));
        assert_eq!(moved.marked_at, Some(first));
        assert_eq!(moved.advanced((10, "b"), false, later), None, "a rerun of the same page");
        assert_eq!(moved.advanced((5, "z"), false, later), None, "an older page");
        let done = moved.advanced((10, "b"), true, later).expect("finishing at the same place still says done");
        assert!(done.done);
        assert_eq!(done.through, Some((10, "b".to_owned())));
        assert_eq!(done.advanced((20, "c"), true, later), None, "a finished cursor stays as it is");
    }

    #[test]
    fn a_sources_mark_is_its_own_or_its_outputs_cursor() {
        let at = time("2024-01-16T00:00:00Z");
        let output = OutputRecord {
            bucket: "out".to_owned(),
            key: "o1".to_owned(),
            partition: PartitionKey::new("src", "p/"),
            generation: 1,
            part_number: 1,
            state: OutputState::Committed,
            size: Some(20),
            sha256: None,
            object_count: 2,
            upload_id: None,
            created_at: at,
            committed_at: Some(at),
            expiry: Some(ExpiryCursor { through: Some((0, "a".to_owned())), done: false, marked_at: Some(at) }),
        };
        let source = |key: &str, offset: u64, output_key: &str| ObjectRecord {
            bucket: "src".to_owned(),
            key: key.to_owned(),
            partition_path: "p/".to_owned(),
            size: 10,
            etag: None,
            sequencer: "01".to_owned(),
            event_time: at,
            state: ObjectState::Compacted,
            placement: Some(Placement {
                output_key: output_key.to_owned(),
                generation: 1,
                offset,
                length: 10,
                sha256: String::new(),
                separator_bytes: 0,
            }),
            expiry_marked_at: None,
            note: None,
        };
        assert_eq!(source_expiry_mark(&source("a", 0, "o1"), Some(&output)), Some(at), "passed by the cursor");
        assert_eq!(source_expiry_mark(&source("b", 10, "o1"), Some(&output)), None, "not yet");
        assert_eq!(source_expiry_mark(&source("a", 0, "o2"), Some(&output)), None, "placed in another output");
        let own = ObjectRecord { expiry_marked_at: Some(at), ..source("b", 10, "o1") };
        assert_eq!(source_expiry_mark(&own, None), Some(at), "its own mark");
        let pending = ObjectRecord { state: ObjectState::Pending, ..source("a", 0, "o1") };
        assert_eq!(source_expiry_mark(&pending, Some(&output)), None, "a newer, pending version is not marked");
        assert!(expiry_unfinished(&output));
        assert!(!expiry_unfinished(&OutputRecord { expiry: None, ..output.clone() }), "marks per source");
        assert!(!expiry_unfinished(&OutputRecord { state: OutputState::Writing, ..output }));
    }

    #[test]
    fn a_lease_is_renewed_once_less_than_half_is_left() {
        let lease_for = chrono::Duration::minutes(10);
        let start = DateTime::parse_from_rfc3339("2024-01-16T00:00:00Z").unwrap().with_timezone(&Utc);
        let expires_at = start + lease_for;
        assert!(!renewal_due(expires_at, start, lease_for), "a fresh lease");
        assert!(!renewal_due(expires_at, start + chrono::Duration::minutes(5), lease_for), "exactly half left");
        assert!(renewal_due(expires_at, start + chrono::Duration::minutes(6), lease_for));
        assert!(renewal_due(expires_at, start + chrono::Duration::minutes(11), lease_for), "already expired");
    }

    #[test]
    fn states_print_and_parse_back() {
        for state in ObjectState::ALL {
            assert_eq!(state.as_str().parse::<ObjectState>().unwrap(), *state);
        }
        for state in PartitionState::ALL {
            assert_eq!(state.to_string().parse::<PartitionState>().unwrap(), *state);
        }
        let error = "done".parse::<OutputState>().unwrap_err();
        assert!(error.contains("writing, committed, abandoned"), "{error}");
    }
}
