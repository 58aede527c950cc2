//! What the seal's GETs showed about the sources of one output (their tag count and the version
//! read), kept from the write to the tag step after the commit, so that tag mode costs one
//! PutObjectTagging per source with no tags of its own (issue #12).
//!
//! Memory is bounded by configuration, not by the output: 9 bytes a source (a hash of its key
//! and its tag count), for at most [`MAX_SOURCES_KEPT`] sources of an output, plus the version
//! ids of a bucket with versioning, at most [`MAX_VERSIONS_KEPT`] of them. A source past either
//! bound, or not found, takes the tag path that reads its ETag and tags first: it costs
//! requests, never correctness.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::ports::SeenAtRead;

/// Sources of one output whose GET is kept: about 9 MiB.
pub(crate) const MAX_SOURCES_KEPT: usize = 1 << 20;
/// Version ids of one output kept: about 6 MiB of 32-byte ids with their overhead.
pub(crate) const MAX_VERSIONS_KEPT: usize = 100_000;
/// A tag count the store did not report: the tag step reads the tags.
const UNKNOWN_TAG_COUNT: u8 = u8::MAX;

/// The GETs of one output's placed sources, in output order.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeenSources {
    key_hashes: Vec<u64>,
    /// Saturated at 254; [`UNKNOWN_TAG_COUNT`] when the store did not say.
    tag_counts: Vec<u8>,
    /// (index into the above, version id), in index order.
    versions: Vec<(u32, Box<str>)>,
    /// Where the next lookup starts: the tag step asks in output order.
    next: usize,
    next_version: usize,
}

fn key_hash(bucket: &str, key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (bucket, key).hash(&mut hasher);
    hasher.finish()
}

impl SeenSources {
    /// Records what the GET of the next placed source showed. Past [`MAX_SOURCES_KEPT`] nothing
    /// is kept; a version past [`MAX_VERSIONS_KEPT`] leaves its source unknown.
    pub(crate) fn push(&mut self, bucket: &str, key: &str, seen: &SeenAtRead) {
        if self.key_hashes.len() >= MAX_SOURCES_KEPT {
            return;
        }
        let mut tag_count = seen.tag_count.map_or(UNKNOWN_TAG_COUNT, |count| count.min(254) as u8);
        if let Some(version_id) = &seen.version_id {
            if self.versions.len() < MAX_VERSIONS_KEPT {
                self.versions.push((self.key_hashes.len() as u32, version_id.as_str().into()));
            } else {
                // Tagging without the version would tag whatever is current: read first instead.
                tag_count = UNKNOWN_TAG_COUNT;
            }
        }
        self.key_hashes.push(key_hash(bucket, key));
        self.tag_counts.push(tag_count);
    }

    /// What the GET of `key` showed, if it was kept. Looked up in output order: the search
    /// starts after the last source found, and a key not found moves nothing.
    pub(crate) fn take(&mut self, bucket: &str, key: &str) -> Option<SeenAtRead> {
        let wanted = key_hash(bucket, key);
        let offset = self.key_hashes[self.next..].iter().position(|hash| *hash == wanted)?;
        let index = self.next + offset;
        self.next = index + 1;
        while self.versions.get(self.next_version).is_some_and(|(at, _)| (*at as usize) < index) {
            self.next_version += 1;
        }
        let version_id = match self.versions.get(self.next_version) {
            Some((at, version_id)) if *at as usize == index => Some(version_id.to_string()),
            _ => None,
        };
        let tag_count = match self.tag_counts[index] {
            UNKNOWN_TAG_COUNT => None,
            count => Some(u32::from(count)),
        };
        Some(SeenAtRead { tag_count, version_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(tag_count: Option<u32>, version_id: Option<&str>) -> SeenAtRead {
        SeenAtRead { tag_count, version_id: version_id.map(str::to_owned) }
    }

    #[test]
    fn sources_are_found_in_output_order_with_their_tag_count_and_version() {
        let mut sources = SeenSources::default();
        sources.push("b", "a", &seen(Some(0), None));
        sources.push("b", "b", &seen(Some(3), Some("v-b")));
        sources.push("b", "c", &seen(None, None));
        sources.push("b", "d", &seen(Some(0), Some("v-d")));
        assert_eq!(sources.take("b", "a"), Some(seen(Some(0), None)));
        // "b" was superseded and is never asked for: the search skips it.
        assert_eq!(sources.take("b", "c"), Some(seen(None, None)));
        assert_eq!(sources.take("b", "d"), Some(seen(Some(0), Some("v-d"))));
    }

    #[test]
    fn a_key_not_kept_is_unknown_and_moves_nothing() {
        let mut sources = SeenSources::default();
        sources.push("b", "a", &seen(Some(0), None));
        sources.push("b", "b", &seen(Some(0), None));
        assert_eq!(sources.take("b", "from-recovery"), None);
        assert_eq!(sources.take("other-bucket", "a"), None);
        assert_eq!(sources.take("b", "a"), Some(seen(Some(0), None)));
        assert_eq!(sources.take("b", "a"), None, "each source is taken once");
        assert_eq!(sources.take("b", "b"), Some(seen(Some(0), None)));
    }

    #[test]
    fn a_version_past_the_bound_leaves_its_source_unknown_rather_than_unpinned() {
        let mut sources = SeenSources::default();
        for index in 0..=MAX_VERSIONS_KEPT {
            sources.push("b", &format!("k{index:07}"), &seen(Some(0), Some("v")));
        }
        for index in 0..MAX_VERSIONS_KEPT {
            assert_eq!(sources.take("b", &format!("k{index:07}")), Some(seen(Some(0), Some("v"))));
        }
        assert_eq!(sources.take("b", &format!("k{MAX_VERSIONS_KEPT:07}")), Some(seen(None, None)));
    }

    #[test]
    fn tag_counts_saturate_but_stay_nonzero() {
        let mut sources = SeenSources::default();
        sources.push("b", "a", &seen(Some(1000), None));
        assert_eq!(sources.take("b", "a"), Some(seen(Some(254), None)));
    }
}
