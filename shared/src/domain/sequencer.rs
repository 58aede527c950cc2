//! Ordering of the versions of one key: S3 events, and the listings of backfill scans.
//!
//! S3 gives every event a `sequencer`, a hexadecimal string that grows with time for one key.
//! Sequencers of different lengths compare after the shorter is padded with zeros on the right
//! (AWS's event message structure docs). Events arrive at least once and out of order, so a
//! record is only overwritten by an event with a strictly greater sequencer.
//!
//! A listing has no sequencer, only each object's ETag and last-modified time. A scan records a
//! version under a sequencer of its own ([`scan_sequencer`]): below every real one, and
//! different for every version, so a seal's placements and `missing` marks, which name the
//! version they planned by its sequencer, never land on another version. [`order`] says when a
//! listed version replaces a record (a different ETag, not older), and when an event's does.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

/// The sequencer of records made by scans of earlier releases (and the lowest there is).
pub const SCAN_SEQUENCER: &str = "";

/// What every scan sequencer starts with: `-` sorts below every hexadecimal digit, so a scan's
/// sequencer compares lower than any real event's.
pub const SCAN_SEQUENCER_PREFIX: &str = "-scan-";

/// The sequencer a backfill scan records for the version it listed: one per (last-modified,
/// ETag), and lower than any real event's.
pub fn scan_sequencer(last_modified: DateTime<Utc>, etag: Option<&str>) -> String {
    let etag = etag.unwrap_or_default().trim_matches('"');
    format!("{SCAN_SEQUENCER_PREFIX}{:020}-{etag}", last_modified.timestamp_micros())
}

/// Whether a record was made by a backfill scan (this release's or an earlier one's).
pub fn is_scan(sequencer: &str) -> bool {
    sequencer.is_empty() || sequencer.starts_with(SCAN_SEQUENCER_PREFIX)
}

/// One version of a key, as a record or an incoming event or listing holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'a> {
    pub sequencer: &'a str,
    pub etag: Option<&'a str>,
    /// An event's time (a removal's, for a removed record), or a listed last-modified time.
    pub time: DateTime<Utc>,
}

/// What an incoming version is to the recorded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOrder {
    /// A newer version: it replaces the record (pending again).
    Newer,
    /// An event for the very version a scan recorded (same ETag): the record keeps its state
    /// and takes the event's sequencer, so later events are ordered by sequencer.
    ConfirmsScanned,
    /// A replay, the same version listed again, or an older version: nothing changes.
    NotNewer,
}

/// Whether both ETags are known and differ.
fn different_etags(one: Option<&str>, other: Option<&str>) -> bool {
    matches!((one, other), (Some(one), Some(other)) if one.trim_matches('"') != other.trim_matches('"'))
}

/// Whether both ETags are known and the same.
fn same_etags(one: Option<&str>, other: Option<&str>) -> bool {
    matches!((one, other), (Some(one), Some(other)) if one.trim_matches('"') == other.trim_matches('"'))
}

/// Whether `incoming` replaces `recorded` (whose record is `removed` when `recorded_removed`).
///
/// - Two events: the greater sequencer wins ([`supersedes`]).
/// - A listed version against an event's record: it wins only if its ETag differs and its
///   last-modified time is after the event (an object's last-modified is when its upload
///   started, the event's time when it ended; S3 lists it to the second): otherwise the event
///   may be the newer, and its own version's event is on its way. Against a removal: if it was
///   modified after the removal (the key was written again), whatever its ETag.
/// - A listed version against a scan's record: it wins if its ETag differs and it is not older
///   (a rescan sees what is there now; equal times are one second on S3).
/// - An event against a scan's record: the same ETag confirms the scanned version; another
///   ETag wins unless the event is older than the scanned version's last-modified time.
pub fn order(incoming: Version<'_>, recorded: Version<'_>, recorded_removed: bool) -> VersionOrder {
    let different = different_etags(incoming.etag, recorded.etag);
    match (is_scan(incoming.sequencer), is_scan(recorded.sequencer)) {
        (false, false) if supersedes(incoming.sequencer, recorded.sequencer) => VersionOrder::Newer,
        (false, false) => VersionOrder::NotNewer,
        (true, false) if recorded_removed && incoming.time > recorded.time => VersionOrder::Newer,
        (true, false) if !recorded_removed && different && incoming.time > recorded.time => VersionOrder::Newer,
        (true, false) => VersionOrder::NotNewer,
        (true, true) if different && incoming.time >= recorded.time => VersionOrder::Newer,
        (true, true) => VersionOrder::NotNewer,
        (false, true) if !recorded_removed && same_etags(incoming.etag, recorded.etag) => VersionOrder::ConfirmsScanned,
        (false, true) if incoming.time < recorded.time => VersionOrder::NotNewer,
        (false, true) => VersionOrder::Newer,
    }
}

/// Compares two S3 sequencers as AWS documents it.
pub fn compare(left: &str, right: &str) -> Ordering {
    let width = left.len().max(right.len());
    let mut left_digits = left.bytes().map(|byte| byte.to_ascii_uppercase()).chain(std::iter::repeat(b'0'));
    let mut right_digits = right.bytes().map(|byte| byte.to_ascii_uppercase()).chain(std::iter::repeat(b'0'));
    for _ in 0..width {
        match left_digits.next().cmp(&right_digits.next()) {
            Ordering::Equal => continue,
            unequal => return unequal,
        }
    }
    Ordering::Equal
}

/// True when an event with sequencer `incoming` should replace a record written at `recorded`.
/// A scan's sequencer never supersedes (scans are ordered by [`order`]) and is superseded by
/// every event's.
pub fn supersedes(incoming: &str, recorded: &str) -> bool {
    match (is_scan(incoming), is_scan(recorded)) {
        (true, _) => false,
        (false, true) => true,
        (false, false) => compare(incoming, recorded) == Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequencers_compare_after_right_padding() {
        assert_eq!(compare("0055AED6DCD90281E5", "0055AED6DCD90281E6"), Ordering::Less);
        assert_eq!(compare("0055AED6DCD90281E5", "0055AED6DCD90281E500"), Ordering::Equal);
        assert_eq!(compare("0055AED6DCD90281E501", "0055AED6DCD90281E5"), Ordering::Greater);
        assert_eq!(compare("0a", "0A"), Ordering::Equal);
    }

    #[test]
    fn replays_and_older_events_do_not_supersede() {
        assert!(supersedes("0055AED6DCD90281E6", "0055AED6DCD90281E5"));
        assert!(!supersedes("0055AED6DCD90281E5", "0055AED6DCD90281E5"), "a replay");
        assert!(!supersedes("0055AED6DCD90281E4", "0055AED6DCD90281E5"), "an older event");
        assert!(supersedes("01", SCAN_SEQUENCER), "any real event beats a scan");
        assert!(!supersedes(SCAN_SEQUENCER, "01"), "a scan never beats an event");
        let scanned = scan_sequencer(at("2024-01-14T10:00:00Z"), Some("\"e1\""));
        assert!(supersedes("00", &scanned), "any real event beats a scan, even the lowest");
        assert!(!supersedes(&scanned, SCAN_SEQUENCER), "a scan never supersedes by sequencer");
        assert_eq!(compare(&scanned, "00"), Ordering::Less, "a scan's sequencer sorts below real ones");
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn listed<'a>(sequencer: &'a str, etag: &'a str, time: &str) -> Version<'a> {
        Version { sequencer, etag: Some(etag), time: at(time) }
    }

    #[test]
    fn scan_sequencers_are_one_per_version_and_recognised() {
        let time = at("2024-01-14T10:00:00Z");
        assert_eq!(scan_sequencer(time, Some("\"e1\"")), scan_sequencer(time, Some("e1")), "quotes do not count");
        assert_ne!(scan_sequencer(time, Some("e1")), scan_sequencer(time, Some("e2")));
        assert_ne!(scan_sequencer(time, Some("e1")), scan_sequencer(time + chrono::Duration::seconds(1), Some("e1")));
        assert!(is_scan(&scan_sequencer(time, None)) && is_scan(SCAN_SEQUENCER));
        assert!(!is_scan("0055AED6DCD90281E5"));
    }

    /// Issue 11, item 4: a rescan of an overwritten object records the new version.
    #[test]
    fn a_rescan_records_a_version_it_has_not_seen_and_never_an_older_one() {
        let first = scan_sequencer(at("2024-01-14T10:00:00Z"), Some("e1"));
        let recorded = listed(&first, "e1", "2024-01-14T10:00:00Z");
        let overwritten = scan_sequencer(at("2024-01-14T11:00:00Z"), Some("e2"));
        let newer = listed(&overwritten, "e2", "2024-01-14T11:00:00Z");
        assert_eq!(order(newer, recorded, false), VersionOrder::Newer, "a new ETag, listed later");
        assert_eq!(order(recorded, newer, false), VersionOrder::NotNewer, "an older listing never wins");
        assert_eq!(order(recorded, recorded, false), VersionOrder::NotNewer, "the same version listed again");
        let same_second = listed(&overwritten, "e2", "2024-01-14T10:00:00Z");
        assert_eq!(order(same_second, recorded, false), VersionOrder::Newer, "overwritten within the second");
        let legacy = Version { sequencer: SCAN_SEQUENCER, etag: Some("e1"), time: at("2024-01-14T10:00:00Z") };
        assert_eq!(order(newer, legacy, false), VersionOrder::Newer, "records of earlier scans too");
        let unknown_etag = Version { etag: None, ..newer };
        assert_eq!(order(unknown_etag, recorded, false), VersionOrder::NotNewer, "no ETag: cannot tell");
    }

    #[test]
    fn a_listing_replaces_an_events_record_only_when_clearly_newer() {
        let event = listed("0055AED6DCD90281E5", "e1", "2024-01-14T10:00:00.500Z");
        let scanned = scan_sequencer(at("2024-01-14T10:00:01Z"), Some("e2"));
        assert_eq!(order(listed(&scanned, "e2", "2024-01-14T10:00:01Z"), event, false), VersionOrder::Newer);
        assert_eq!(
            order(listed(&scanned, "e2", "2024-01-14T10:00:00Z"), event, false),
            VersionOrder::NotNewer,
            "modified in the event's second: the event may be the newer one"
        );
        assert_eq!(order(listed(&scanned, "e1", "2024-01-14T11:00:00Z"), event, false), VersionOrder::NotNewer);
        let removal = listed("0055AED6DCD90281E6", "e1", "2024-01-14T10:30:00Z");
        assert_eq!(order(listed(&scanned, "e1", "2024-01-14T11:00:00Z"), removal, true), VersionOrder::Newer);
        assert_eq!(order(listed(&scanned, "e2", "2024-01-14T10:00:00Z"), removal, true), VersionOrder::NotNewer);
    }

    #[test]
    fn an_event_confirms_a_scanned_version_and_an_older_one_never_wins() {
        let scanned_sequencer = scan_sequencer(at("2024-01-14T10:00:00Z"), Some("e2"));
        let scanned = listed(&scanned_sequencer, "e2", "2024-01-14T10:00:00Z");
        let same = listed("0055AED6DCD90281E5", "e2", "2024-01-14T10:00:00.300Z");
        assert_eq!(order(same, scanned, false), VersionOrder::ConfirmsScanned, "not compacted twice");
        let older = listed("0055AED6DCD90281E4", "e1", "2024-01-14T09:00:00Z");
        assert_eq!(order(older, scanned, false), VersionOrder::NotNewer, "a late event of an older version");
        let newer = listed("0055AED6DCD90281E6", "e3", "2024-01-14T12:00:00Z");
        assert_eq!(order(newer, scanned, false), VersionOrder::Newer);
        assert_eq!(order(newer, same, false), VersionOrder::Newer, "two events: by sequencer");
        assert_eq!(order(same, same, false), VersionOrder::NotNewer, "a replay");
    }
}
