//! Ordering of S3 events for one key.
//!
//! S3 gives every event a `sequencer`, a hexadecimal string that grows with time for one key.
//! Sequencers of different lengths compare after the shorter is padded with zeros on the right
//! (AWS's event message structure docs). Events arrive at least once and out of order, so a
//! record is only overwritten by an event with a strictly greater sequencer.

use std::cmp::Ordering;

/// The sequencer that backfill scans use: lower than any real event's, so a scan never
/// overwrites what an event recorded.
pub const SCAN_SEQUENCER: &str = "";

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
pub fn supersedes(incoming: &str, recorded: &str) -> bool {
    compare(incoming, recorded) == Ordering::Greater
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
    }
}
