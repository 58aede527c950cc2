//! A source's `compacted` state derived from its output's placement chunks, not flipped.
//!
//! Why: turning each source `compacted` after its output's commit cost one conditional write
//! unit per source (`mark_compacted`, 25 to a `BatchExecuteStatement`), the largest DynamoDB
//! item of the seal. The commit already decides it ([`derived`](crate::domain::derived)): a
//! record that still says `pending` and whose (key, sequencer) a committed output's placement
//! names is compacted. So outputs placed by this version keep their sources' items as ingest
//! wrote them, and every reader of a source's state derives it here.
//!
//! To find a key's placement without reading an output's every chunk (they are addressed by
//! offset, not key), `record_placements` keeps a directory of its chunks on the output item:
//! [`PLACED_CHUNKS`], a JSON list `[[chunk sort key, first key, last key], ...]` of the keys
//! each chunk holds. A reader loads the partition's committed outputs that have one (one Query
//! of the output items), then reads only the chunks whose key range holds a record it must
//! derive, one chunk at a time: a page of the seal's pending scan reads the chunks of earlier
//! outputs that overlap the page's keys, and a first seal, whose outputs all lie behind its
//! scan, reads none. Outputs without the directory (placed by earlier versions) had their
//! sources flipped by `mark_compacted`, which still does so for them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::placements::{chunk_pk, decode_chunk};
use super::*;
use crate::domain::combined::KeyRecord;
use crate::domain::derived::{self, Version};

/// A record whose state a committed output's placement may derive `compacted`.
pub(super) trait Derivable {
    fn key(&self) -> &str;
    /// Whether any placement could change it (a stored `pending` record, or one combined from
    /// arrivals): only those keys' chunks are read.
    fn may_derive(&self) -> bool;
    /// Turns it compacted by `placed` if the placement names its version.
    fn derive_from(&mut self, placed: &SourcePlacement);
}

impl Derivable for ObjectRecord {
    fn key(&self) -> &str {
        &self.key
    }

    fn may_derive(&self) -> bool {
        self.state == ObjectState::Pending
    }

    fn derive_from(&mut self, placed: &SourcePlacement) {
        let recorded = Version { key: &self.key, sequencer: &self.sequencer };
        let placed_version = Version { key: &placed.key, sequencer: &placed.sequencer };
        if derived::holds_placed_version(self.state, recorded, placed_version) {
            self.state = derived::derived_state(self.state, true);
            self.placement = Some(placed.placement.clone());
        }
    }
}

impl Derivable for KeyRecord {
    fn key(&self) -> &str {
        &self.record.key
    }

    fn may_derive(&self) -> bool {
        self.record.state == ObjectState::Pending || (!self.stored && self.record.state == ObjectState::Removed)
    }

    fn derive_from(&mut self, placed: &SourcePlacement) {
        if placed.key == self.record.key && self.placed_by(&placed.sequencer) {
            self.record.state = ObjectState::Compacted;
            self.record.placement = Some(placed.placement.clone());
        }
    }
}

/// The output item's directory of its placement chunks (see the module doc). Its presence
/// also says that the output's sources are derived compacted, never flipped.
pub(super) const PLACED_CHUNKS: &str = "placed_chunks";

/// One chunk of an output's directory: its sort key and the first and last key it holds (by
/// key order, whatever order the chunk holds them in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ChunkKeys(pub String, pub String, pub String);

impl ChunkKeys {
    fn holds_any(&self, keys: &BTreeMap<String, usize>) -> bool {
        keys.range(self.1.clone()..=self.2.clone()).next().is_some()
    }
}

/// Merges `added` into the directory `existing` (a chunk written again replaces its entry),
/// sorted by sort key.
pub(super) fn merged_directory(existing: &[ChunkKeys], added: Vec<ChunkKeys>) -> Vec<ChunkKeys> {
    let mut by_sort_key: BTreeMap<String, ChunkKeys> =
        existing.iter().map(|chunk| (chunk.0.clone(), chunk.clone())).collect();
    for chunk in added {
        by_sort_key.insert(chunk.0.clone(), chunk);
    }
    by_sort_key.into_values().collect()
}

/// A committed output whose sources are derived: its key and its chunk directory.
#[derive(Debug, Clone)]
pub(super) struct DerivingOutput {
    pub(super) key: String,
    pub(super) chunks: Vec<ChunkKeys>,
}

/// The directory of an output item, if it has one.
pub(super) fn directory_of(item: &Item, table: &str) -> Result<Option<Vec<ChunkKeys>>, ManifestError> {
    let reader = ItemReader::new(item, table);
    match reader.optional_string(PLACED_CHUNKS)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|_| reader.malformed(PLACED_CHUNKS)),
    }
}

/// The committed outputs of a partition whose sources are derived, from its output items.
pub(super) fn deriving_outputs(items: &[Item], table: &str) -> Result<Vec<DerivingOutput>, ManifestError> {
    let mut outputs = Vec::new();
    for item in items {
        let reader = ItemReader::new(item, table);
        if reader.state::<OutputState>("state")? != OutputState::Committed {
            continue;
        }
        if let Some(chunks) = directory_of(item, table)? {
            outputs.push(DerivingOutput { key: reader.string("key")?, chunks });
        }
    }
    Ok(outputs)
}

/// How many bytes of encoded placements [`ChunkCache`] keeps at most.
const CHUNK_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// The chunks of committed outputs read lately, least recently used dropped first, at most
/// [`CHUNK_CACHE_BYTES`] of them. Why: the seal's pending scan reads a chunk that spans two of
/// its pages twice, and removal events (a user's own deletes, when routed to ingest) come in
/// bursts in about key order, each needing the chunk that holds its key. A committed output's
/// chunks never change (only its own seal, under a lease of its generation, writes them, and it
/// never writes them once the output commits), so a kept chunk is never stale; only chunks of
/// committed outputs are read through it. Which outputs are committed is read each time.
#[derive(Default)]
pub(super) struct ChunkCache {
    entries: std::sync::Mutex<std::collections::VecDeque<CachedChunk>>,
}

struct CachedChunk {
    pk: String,
    sk: String,
    bytes: usize,
    placements: std::sync::Arc<Vec<SourcePlacement>>,
}

impl ChunkCache {
    fn get(&self, pk: &str, sk: &str) -> Option<std::sync::Arc<Vec<SourcePlacement>>> {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = entries.iter().position(|entry| entry.pk == pk && entry.sk == sk)?;
        let entry = entries.remove(index)?;
        let placements = std::sync::Arc::clone(&entry.placements);
        entries.push_back(entry);
        Some(placements)
    }

    fn insert(&self, pk: String, sk: String, bytes: usize, placements: std::sync::Arc<Vec<SourcePlacement>>) {
        if bytes > CHUNK_CACHE_BYTES {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|entry| !(entry.pk == pk && entry.sk == sk));
        let mut held: usize = entries.iter().map(|entry| entry.bytes).sum();
        while held + bytes > CHUNK_CACHE_BYTES {
            let Some(oldest) = entries.pop_front() else { break };
            held -= oldest.bytes;
        }
        entries.push_back(CachedChunk { pk, sk, bytes, placements });
    }
}

impl DynamoDbManifest {
    /// The partition's committed outputs whose sources are derived: one Query of its output
    /// items (strongly consistent).
    pub(super) async fn deriving_outputs(
        &self,
        partition: &PartitionKey,
    ) -> Result<Vec<DerivingOutput>, ManifestError> {
        deriving_outputs(&self.output_items(partition).await?, &self.table)
    }

    /// Derives the state of `records` (of one partition, any order): each one stored `pending`
    /// whose version a committed output of `outputs` placed turns `compacted`, with that
    /// placement. Reads only the chunks whose key range holds such a record, one at a time.
    /// Records combined from arrival items ([`KeyRecord`]) derive by the same chunks, under any
    /// sequencer of their version ([`KeyRecord::placed_by`]).
    pub(super) async fn derive_records<R: Derivable>(
        &self,
        partition: &PartitionKey,
        outputs: &[DerivingOutput],
        records: &mut [R],
    ) -> Result<(), ManifestError> {
        let candidates: BTreeMap<String, usize> = records
            .iter()
            .enumerate()
            .filter(|(_, record)| record.may_derive())
            .map(|(index, record)| (record.key().to_owned(), index))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        for output in outputs {
            for chunk in output.chunks.iter().filter(|chunk| chunk.holds_any(&candidates)) {
                for placed in self.chunk_placements(partition, &output.key, &chunk.0).await?.iter() {
                    let Some(&index) = candidates.get(&placed.key) else { continue };
                    records[index].derive_from(placed);
                }
            }
        }
        Ok(())
    }

    /// The placements of one chunk item of a committed output, by its sort key (strongly
    /// consistent, or kept from an earlier read: see [`ChunkCache`]); none if it is gone.
    async fn chunk_placements(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        sort_key: &str,
    ) -> Result<std::sync::Arc<Vec<SourcePlacement>>, ManifestError> {
        let pk = chunk_pk(partition, output_key);
        if let Some(placements) = self.chunk_cache.get(&pk, sort_key) {
            return Ok(placements);
        }
        let Some(item) = self.get_item(key_of(pk.clone(), sort_key)).await? else {
            return Ok(Default::default());
        };
        let reader = ItemReader::new(&item, &self.table);
        let generation = reader.number("generation")?;
        let text = reader.string("placements")?;
        let placements = std::sync::Arc::new(
            decode_chunk(&text, output_key, generation).map_err(|_| reader.malformed("placements"))?,
        );
        self.chunk_cache.insert(pk, sort_key.to_owned(), text.len(), std::sync::Arc::clone(&placements));
        Ok(placements)
    }

    /// One record, derived: for `object`, `record_removal` and `mark_expiry`'s exceptions.
    pub(super) async fn derive_record(&self, record: &mut ObjectRecord) -> Result<(), ManifestError> {
        if record.state != ObjectState::Pending {
            return Ok(());
        }
        let partition = PartitionKey::new(record.bucket.clone(), record.partition_path.clone());
        let outputs = self.deriving_outputs(&partition).await?;
        self.derive_records(&partition, &outputs, std::slice::from_mut(record)).await
    }

    /// `record_placements`' last step: the directory of the chunks just written, merged into the
    /// output item's (`generation`'s output named `output_key`), while it is being written. An
    /// output that is not (or no longer) `writing` is left alone: its chunks count for nothing,
    /// or it committed with the directory it had.
    pub(super) async fn record_chunk_directory(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        generation: u64,
        added: Vec<ChunkKeys>,
    ) -> Result<(), ManifestError> {
        let added = &added;
        self.optimistically(
            || format!("output {output_key} of partition {partition}"),
            || async move {
                let prefix = format!("{OUTPUT_SORT_KEY_PREFIX}{generation:020}#");
                let items = self
                    .query_all(
                        None,
                        "#pk = :pk AND begins_with(#sk, :prefix)",
                        None,
                        values([
                            (":pk", string_value(partition_item_pk(&partition.bucket, &partition.path))),
                            (":prefix", string_value(prefix)),
                        ]),
                        true,
                    )
                    .await?;
                let mut found = None;
                for item in items {
                    if ItemReader::new(&item, &self.table).string("key")? == output_key {
                        found = Some(item);
                        break;
                    }
                }
                let Some(item) = found else { return Ok(Attempt::Done(())) };
                let reader = ItemReader::new(&item, &self.table);
                if reader.state::<OutputState>("state")? != OutputState::Writing {
                    return Ok(Attempt::Done(()));
                }
                let existing_text = reader.optional_string(PLACED_CHUNKS)?;
                let existing = directory_of(&item, &self.table)?;
                let merged = merged_directory(existing.as_deref().unwrap_or_default(), added.clone());
                if existing.as_ref() == Some(&merged) {
                    // Placements recorded again: the same chunks, nothing to write.
                    return Ok(Attempt::Done(()));
                }
                let text = serde_json::to_string(&merged).expect("a directory always encodes");
                let mut expression_values = values([
                    (":chunks", string_value(text)),
                    (":writing", string_value(OutputState::Writing.as_str())),
                ]);
                let unchanged = match existing_text {
                    Some(existing_text) => {
                        expression_values.insert(":read_chunks".to_owned(), string_value(existing_text));
                        "#placed_chunks = :read_chunks"
                    }
                    None => "attribute_not_exists(#placed_chunks)",
                };
                let written = self
                    .conditional_update(
                        key_of(reader.string("pk")?, reader.string("sk")?),
                        "SET #placed_chunks = :chunks",
                        &format!("#state = :writing AND {unchanged}"),
                        expression_values,
                        false,
                    )
                    .await?;
                Ok(if written.is_ok() { Attempt::Done(()) } else { Attempt::Retry })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(sort_key: &str, first: &str, last: &str) -> ChunkKeys {
        ChunkKeys(sort_key.to_owned(), first.to_owned(), last.to_owned())
    }

    #[test]
    fn a_directory_merge_replaces_a_rewritten_chunk_and_keeps_sort_key_order() {
        let existing = [chunk("00000000000000000010#c", "c", "f"), chunk("00000000000000000000#a", "a", "b")];
        let merged = merged_directory(
            &existing,
            vec![chunk("00000000000000000010#c", "c", "e"), chunk("00000000000000000020#g", "g", "k")],
        );
        assert_eq!(
            merged,
            [
                chunk("00000000000000000000#a", "a", "b"),
                chunk("00000000000000000010#c", "c", "e"),
                chunk("00000000000000000020#g", "g", "k"),
            ]
        );
    }

    #[test]
    fn the_chunk_cache_keeps_the_recently_used_within_its_bytes() {
        let cache = ChunkCache::default();
        let third = CHUNK_CACHE_BYTES / 3;
        for sk in ["a", "b", "c"] {
            cache.insert("pk".to_owned(), sk.to_owned(), third, Default::default());
        }
        assert!(cache.get("pk", "a").is_some(), "three thirds fit");
        cache.insert("pk".to_owned(), "d".to_owned(), third, Default::default());
        assert!(cache.get("pk", "b").is_none(), "the least recently used went first");
        assert!(cache.get("pk", "a").is_some() && cache.get("pk", "c").is_some() && cache.get("pk", "d").is_some());
        assert!(cache.get("other", "a").is_none(), "keyed by the chunk's partition key too");
        cache.insert("pk".to_owned(), "huge".to_owned(), CHUNK_CACHE_BYTES + 1, Default::default());
        assert!(
            cache.get("pk", "huge").is_none() && cache.get("pk", "d").is_some(),
            "too big to keep: nothing dropped"
        );
    }

    #[test]
    fn a_chunk_is_read_only_for_keys_inside_its_range() {
        let keys: BTreeMap<String, usize> = [("b".to_owned(), 0), ("x".to_owned(), 1)].into_iter().collect();
        assert!(chunk("s", "a", "c").holds_any(&keys));
        assert!(chunk("s", "b", "b").holds_any(&keys), "bounds are inclusive");
        assert!(chunk("s", "x", "z").holds_any(&keys));
        assert!(!chunk("s", "c", "w").holds_any(&keys), "no key of the page in between");
        assert!(!chunk("s", "y", "z").holds_any(&keys));
    }
}
