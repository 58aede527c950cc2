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
