//! Placement chunks: where an output's sources sit, a few hundred KB of them per item.
//!
//! Why: writing each placement onto its object item cost, per source, a transactional update
//! (2 write units) plus the [`SOURCES_INDEX`](super::SOURCES_INDEX) copy (1 more), and
//! `mark_compacted` then found the sources through that eventually consistent index. Now
//! `record_placements` reads the planned objects (strongly consistent range Queries of each
//! shard, see `placed_versions`, to answer which were superseded) and writes the placements as chunk items, one
//! `PutItem` per [`CHUNK_MAX_BYTES`] of them, and the chunks' key ranges as the output item's
//! directory (`derived::PLACED_CHUNKS`), from which readers derive the sources' `compacted`
//! state once the output commits: no write per source. For outputs placed before the
//! directory, `mark_compacted` reads the committed output's chunks back (a strongly consistent
//! Query: no index lag) and turns each source `compacted` with its placement in one
//! conditional update, which no index copies.
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | placement chunk | `PL#{bucket}#{len(path)}#{path}{output key}` | first offset, 20 digits | `generation`, `placements`: JSON `[[key, sequencer, offset, length, sha256, separator_bytes], ...]` in offset order |
//!
//! An output's chunks are one Query in offset order, so `output_sources` pages through them
//! (reading the object items of each page for their state) without an index. Chunks are only
//! trusted once their output is `committed`: chunks of an abandoned output are never read by
//! the seal. Outputs placed by an older version of this adapter have no chunks; their
//! placements are on the object items, and `mark_compacted` and `output_sources` fall back to
//! [`SOURCES_INDEX`](super::SOURCES_INDEX) for them, so an existing table needs no migration.

use std::collections::{BTreeSet, HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, BatchStatementErrorCodeEnum, BatchStatementRequest, KeysAndAttributes};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::derived::ChunkKeys;
use super::{
    key_of, number_value, object_item_pk, string_value, values, DynamoDbManifest, DynamoDbManifestError, Item,
    ItemReader, CONCURRENT_REQUESTS, OPTIMISTIC_ATTEMPTS,
};
use crate::domain::derived::{self, Version};
use crate::domain::partition::PartitionKey;
use crate::domain::records::{ObjectRecord, ObjectState, Placement};
use crate::domain::sequencer;
use crate::ports::manifest::{ManifestError, SourcePlacement};

/// Encoded placements per chunk item at most: under DynamoDB's 400 KB item limit with room for
/// the keys and attribute names. About 1,500 sources of 60-byte keys.
pub(super) const CHUNK_MAX_BYTES: usize = 300 * 1024;

/// Set on an output item once `mark_compacted` went through all its chunks: every placed
/// source is then `compacted` or was superseded for good (a sequencer never goes back), so
/// later recoveries skip the output instead of trying each source again (a failed conditional
/// write costs a write unit all the same).
pub(super) const SOURCES_COMPACTED: &str = "sources_compacted";

/// Keys per `BatchGetItem`: DynamoDB's limit.
const KEYS_PER_BATCH_GET: usize = 100;

/// Statements per `BatchExecuteStatement`: DynamoDB's limit.
const STATEMENTS_PER_BATCH: usize = 25;

/// Named by the partition and the output key (output keys are unique within a partition), in
/// the form of [`SOURCES_INDEX`](super::SOURCES_INDEX)'s keys: a path holding `#` cannot read as
/// another (path, output key) pair.
pub(super) fn chunk_pk(partition: &PartitionKey, output_key: &str) -> String {
    format!("PL#{}", super::sources_index_pk(&partition.bucket, &partition.path, output_key))
}

/// A chunk's sort key: its first offset, then its first source's key. The offset alone is not
/// unique: a chunk of nothing but empty sources shares its first offset with the chunk after it,
/// which would overwrite it. The key keeps chunks in (offset, key) order, the order sources page
/// in; it is cut at a character boundary to stay within DynamoDB's 1,024-byte sort keys (keys
/// that long and alike in their first 1,000 bytes are the one case two chunks could collide).
fn chunk_sk(first_offset: u64, first_key: &str) -> String {
    let mut end = first_key.len().min(SORT_KEY_MAX_BYTES - OFFSET_PREFIX_BYTES);
    while !first_key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}#{}", chunk_offset_floor(first_offset), &first_key[..end])
}

/// Every chunk that starts at `offset` or after sorts at or above this; every one that starts
/// before it sorts below.
fn chunk_offset_floor(offset: u64) -> String {
    format!("{offset:020}")
}

/// DynamoDB's limit on a sort key's size.
const SORT_KEY_MAX_BYTES: usize = 1024;

/// The offset's 20 digits and the `#` after them.
const OFFSET_PREFIX_BYTES: usize = 21;

/// One placement as a chunk stores it: a JSON array, the shortest self-describing form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry(
    String,
    String,
    u64,
    u64,
    String,
    u64,
    // The placed version's ETag and size, for expiry; absent from chunks written before them.
    #[serde(default)] Option<String>,
    #[serde(default)] u64,
);

impl Entry {
    fn of(source: &SourcePlacement) -> Self {
        let placement = &source.placement;
        Entry(
            source.key.clone(),
            source.sequencer.clone(),
            placement.offset,
            placement.length,
            placement.sha256.clone(),
            placement.separator_bytes,
            source.etag.clone(),
            source.size,
        )
    }

    fn into_placement(self, output_key: &str, generation: u64) -> SourcePlacement {
        let Entry(key, sequencer, offset, length, sha256, separator_bytes, etag, size) = self;
        SourcePlacement {
            key,
            sequencer,
            etag,
            size,
            placement: Placement {
                output_key: output_key.to_owned(),
                generation,
                offset,
                length,
                sha256,
                separator_bytes,
            },
        }
    }
}

/// One chunk to write: its first offset (the sort key) and its encoded placements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EncodedChunk {
    pub first_offset: u64,
    pub first_key: String,
    pub placements: String,
    /// The least and greatest key the chunk holds (none when every placement was skipped):
    /// its entry in the output's chunk directory (`derived`).
    pub held_keys: Option<(String, String)>,
}

/// Splits placements (in offset order) into chunks of at most [`CHUNK_MAX_BYTES`] encoded,
/// leaving out the `skipped` ones. The split depends on `placements` alone, never on which are
/// skipped, so recording the same placements again rewrites the same chunk items.
pub(super) fn encode_chunks(
    placements: &[SourcePlacement],
    skipped: impl Fn(&SourcePlacement) -> bool,
) -> Vec<EncodedChunk> {
    let mut chunks = Vec::new();
    let mut current: Option<(EncodedChunk, Vec<String>, usize)> = None;
    for source in placements {
        let encoded = serde_json::to_string(&Entry::of(source)).expect("a placement always encodes");
        let fits = current.as_ref().is_some_and(|(_, _, bytes)| bytes + encoded.len() < CHUNK_MAX_BYTES);
        if !fits {
            chunks.extend(current.take().map(finish_chunk));
            let chunk = EncodedChunk {
                first_offset: source.placement.offset,
                first_key: source.key.clone(),
                placements: String::new(),
                held_keys: None,
            };
            current = Some((chunk, Vec::new(), 2));
        }
        let (chunk, entries, bytes) = current.as_mut().expect("a chunk is open");
        *bytes += encoded.len() + 1;
        if !skipped(source) {
            entries.push(encoded);
            let key = &source.key;
            chunk.held_keys = Some(match chunk.held_keys.take() {
                None => (key.clone(), key.clone()),
                Some((least, greatest)) => (
                    if *key < least { key.clone() } else { least },
                    if *key > greatest { key.clone() } else { greatest },
                ),
            });
        }
    }
    chunks.extend(current.map(finish_chunk));
    chunks
}

fn finish_chunk((chunk, entries, _): (EncodedChunk, Vec<String>, usize)) -> EncodedChunk {
    EncodedChunk { placements: format!("[{}]", entries.join(",")), ..chunk }
}

pub(super) fn decode_chunk(
    text: &str,
    output_key: &str,
    generation: u64,
) -> Result<Vec<SourcePlacement>, serde_json::Error> {
    let entries: Vec<Entry> = serde_json::from_str(text)?;
    Ok(entries.into_iter().map(|entry| entry.into_placement(output_key, generation)).collect())
}

/// Whether the object item of `key` still holds the version a placement names, pending: only
/// then may the placement apply ([`derived::holds_placed_version`], the rule the commit applies).
fn holds_placed_version(item: Option<&Item>, key: &str, sequencer: &str) -> bool {
    let Some(item) = item else { return false };
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(text)) => Some(text.as_str()),
        _ => None,
    };
    let Some(state) = text("state").and_then(|state| state.parse::<ObjectState>().ok()) else { return false };
    let recorded = Version { key, sequencer: text("sequencer").unwrap_or_default() };
    derived::holds_placed_version(state, recorded, Version { key, sequencer })
}

impl DynamoDbManifest {
    /// Strongly consistent reads of object items by key, [`KEYS_PER_BATCH_GET`] per request,
    /// unprocessed keys asked again. Keyed by object key; absent items are missing.
    pub(super) async fn object_items(
        &self,
        partition: &PartitionKey,
        keys: &[&str],
        projection: Option<&str>,
    ) -> Result<HashMap<String, Item>, ManifestError> {
        let mut found = HashMap::with_capacity(keys.len());
        for batch in keys.chunks(KEYS_PER_BATCH_GET) {
            let mut request_keys: Vec<Item> =
                batch.iter().map(|key| key_of(object_item_pk(&partition.bucket, &partition.path, key), *key)).collect();
            for _attempt in 0..OPTIMISTIC_ATTEMPTS {
                if request_keys.is_empty() {
                    break;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut request_keys)))
                    .consistent_read(true)
                    .set_projection_expression(projection.map(str::to_owned))
                    .set_expression_attribute_names(projection.map(|projection| super::names_in(&[projection])))
                    .build()
                    .map_err(DynamoDbManifestError::Build)?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|error| self.request_error("BatchGetItem", error.into()))?;
                for item in output.responses.and_then(|mut tables| tables.remove(&self.table)).unwrap_or_default() {
                    if let Some(AttributeValue::S(key)) = item.get("sk") {
                        found.insert(key.clone(), item);
                    }
                }
                request_keys = output
                    .unprocessed_keys
                    .and_then(|mut tables| tables.remove(&self.table))
                    .map(|unprocessed| unprocessed.keys)
                    .unwrap_or_default();
            }
            if !request_keys.is_empty() {
                return Err(DynamoDbManifestError::Contended { what: "a batch read of object items".to_owned() }.into());
            }
        }
        Ok(found)
    }

    /// The keys of `sources` whose record no longer holds the placed version, pending: their
    /// placement must not apply. A key whose object item holds the placed version is decided
    /// by the item (a `missing` mark the seal wrote, a removal recorded before arrival items);
    /// one recorded in arrival records alone is still what the scan saw unless an arrival
    /// came since; the rest (new arrivals, an item holding another version) are read again in
    /// full and combined ([`DynamoDbManifest::combined_records`]).
    async fn superseded_placements(
        &self,
        partition: &PartitionKey,
        sources: &[SourcePlacement],
        keys: &[&str],
    ) -> Result<HashSet<String>, ManifestError> {
        let items = self.placed_version_items(partition, keys).await?;
        let wanted: BTreeSet<&str> = keys.iter().copied().collect();
        let mut recheck = self.keys_arrived_since_scan(partition, &wanted).await?;
        let mut superseded = HashSet::new();
        let mut other_version = Vec::new();
        for source in sources.iter().filter(|source| !recheck.contains(&source.key)) {
            let Some(item) = items.get(&source.key) else { continue };
            let recorded = match item.get("sequencer") {
                Some(AttributeValue::S(recorded)) => recorded.as_str(),
                _ => "",
            };
            if recorded == source.sequencer {
                if !holds_placed_version(Some(item), &source.key, &source.sequencer) {
                    superseded.insert(source.key.clone());
                }
            } else if sequencer::supersedes(recorded, &source.sequencer) {
                // A newer version's item: whatever the arrivals add, this one is superseded.
                superseded.insert(source.key.clone());
            } else {
                // An older item (the planned version came by arrivals), or a scanned one.
                other_version.push(source.key.clone());
            }
        }
        recheck.extend(other_version);
        if recheck.is_empty() {
            return Ok(superseded);
        }
        let recheck_keys: Vec<&str> = recheck.iter().map(String::as_str).collect();
        let current: HashMap<String, crate::domain::combined::KeyRecord> = self
            .combined_records(partition, &recheck_keys)
            .await?
            .into_iter()
            .map(|record| (record.record.key.clone(), record))
            .collect();
        for source in sources.iter().filter(|source| recheck.contains(&source.key)) {
            let holds = current.get(&source.key).is_some_and(|record| {
                record.record.state == ObjectState::Pending && record.version_sequencers.contains(&source.sequencer)
            });
            if !holds {
                superseded.insert(source.key.clone());
            }
        }
        Ok(superseded)
    }

    /// `record_placements` after its fence check: the superseded keys (in the batch's order),
    /// and the placements of the others written as chunk items.
    pub(super) async fn write_placement_chunks(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        placements: &[SourcePlacement],
    ) -> Result<Vec<String>, ManifestError> {
        let Some(first) = placements.first() else { return Ok(Vec::new()) };
        let generation = first.placement.generation;
        let mut in_order: Vec<SourcePlacement> = placements.to_vec();
        // Offset, then key: sources at one offset (empty ones and the next) page by key.
        in_order.sort_by(|one, other| (one.placement.offset, &one.key).cmp(&(other.placement.offset, &other.key)));
        let keys: Vec<&str> = in_order.iter().map(|source| source.key.as_str()).collect();
        let superseded_keys = self.superseded_placements(partition, &in_order, &keys).await?;
        let superseded = |source: &SourcePlacement| superseded_keys.contains(&source.key);
        let chunks = encode_chunks(&in_order, superseded);
        let directory: Vec<ChunkKeys> = chunks
            .iter()
            .filter_map(|chunk| {
                let (least, greatest) = chunk.held_keys.clone()?;
                Some(ChunkKeys(chunk_sk(chunk.first_offset, &chunk.first_key), least, greatest))
            })
            .collect();
        let items = chunks
            .into_iter()
            .map(|chunk| {
                let mut item = key_of(chunk_pk(partition, output_key), chunk_sk(chunk.first_offset, &chunk.first_key));
                item.insert("generation".to_owned(), number_value(generation));
                item.insert("placements".to_owned(), string_value(chunk.placements));
                item
            })
            .collect();
        self.put_items(items).await?;
        // After the chunks, so a directory never names a chunk that is not there; before the
        // commit, which is what makes the output's sources compacted.
        self.record_chunk_directory(partition, output_key, generation, directory).await?;
        Ok(placements.iter().filter(|source| superseded(source)).map(|source| source.key.clone()).collect())
    }

    /// One page of an output's chunk items, in offset order, from `start_sk` on.
    async fn chunk_page(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        start_key: Option<Item>,
        from_sk: Option<String>,
    ) -> Result<(Vec<SourcePlacement>, Option<Item>), ManifestError> {
        let (key_condition, mut expression_values) = match from_sk {
            Some(from_sk) => ("#pk = :pk AND #sk >= :from", values([(":from", string_value(from_sk))])),
            None => ("#pk = :pk", HashMap::new()),
        };
        expression_values.insert(":pk".to_owned(), string_value(chunk_pk(partition, output_key)));
        let page = self.query_page(None, key_condition, None, expression_values, true, start_key, Some(8)).await?;
        let mut placements = Vec::new();
        for item in page.items() {
            let reader = ItemReader::new(item, &self.table);
            let generation = reader.number("generation")?;
            let text = reader.string("placements")?;
            placements.extend(decode_chunk(&text, output_key, generation).map_err(|_| reader.malformed("placements"))?);
        }
        Ok((placements, page.last_evaluated_key))
    }

    /// Whether an output has placement chunks (else it was placed by an older version of this
    /// adapter, on its object items).
    pub(super) async fn has_chunks(&self, partition: &PartitionKey, output_key: &str) -> Result<bool, ManifestError> {
        let page = self
            .query_page(
                None,
                "#pk = :pk",
                None,
                values([(":pk", string_value(chunk_pk(partition, output_key)))]),
                true,
                None,
                Some(1),
            )
            .await?;
        Ok(!page.items().is_empty())
    }

    /// `mark_compacted` of a committed output that has chunks: each placed source still
    /// pending as the placed version turns `compacted`, its placement written with it. Returns
    /// how many changed. Reads one page of chunks at a time, so memory stays a page's worth.
    pub(super) async fn compact_from_chunks(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        tracks_expiry: bool,
    ) -> Result<u64, ManifestError> {
        let mut changed = 0;
        let mut start_key = None;
        loop {
            let (placements, next) = self.chunk_page(partition, output_key, start_key, None).await?;
            // Still pending as the placed version: a newer version stays pending. One
            // conditional update per source, 25 to a request.
            let statement = format!(
                "UPDATE \"{}\" SET \"state\" = ? SET \"output_key\" = ? SET \"output_generation\" = ? \
                 SET \"output_offset\" = ? SET \"output_length\" = ? SET \"output_sha256\" = ? \
                 SET \"output_separator_bytes\" = ?{} WHERE \"pk\" = ? AND \"sk\" = ? AND \"state\" = ? AND \"sequencer\" = ?",
                self.table,
                // In the same write, free: the source's expiry is its output's cursor's, so the
                // query of sources awaiting their own mark leaves it out.
                if tracks_expiry { " SET \"expiry_by_output\" = ?" } else { "" },
            );
            let statements = placements
                .iter()
                .map(|source| {
                    let placement = &source.placement;
                    let mut parameters = vec![
                        string_value(ObjectState::Compacted.as_str()),
                        string_value(output_key),
                        number_value(placement.generation),
                        number_value(placement.offset),
                        number_value(placement.length),
                        string_value(&placement.sha256),
                        number_value(placement.separator_bytes),
                    ];
                    parameters.extend(tracks_expiry.then_some(AttributeValue::Bool(true)));
                    parameters.extend([
                        string_value(object_item_pk(&partition.bucket, &partition.path, &source.key)),
                        string_value(&source.key),
                        string_value(ObjectState::Pending.as_str()),
                        string_value(&source.sequencer),
                    ]);
                    BatchStatementRequest::builder()
                        .statement(&statement)
                        .set_parameters(Some(parameters))
                        .build()
                        .map_err(|error| DynamoDbManifestError::Build(error).into())
                })
                .collect::<Result<Vec<_>, ManifestError>>()?;
            changed +=
                self.conditional_statements(statements).await?.into_iter().filter(|applied| *applied).count() as u64;
            start_key = next;
            if start_key.is_none() {
                return Ok(changed);
            }
        }
    }

    /// Runs conditional PartiQL statements (each on another item), [`STATEMENTS_PER_BATCH`] to
    /// a `BatchExecuteStatement`, [`CONCURRENT_REQUESTS`] requests side by side. For each
    /// statement, in order: whether it applied (false when its condition failed). Statements
    /// refused for throttling or a conflict with a transaction are sent again.
    pub(super) async fn conditional_statements(
        &self,
        statements: Vec<BatchStatementRequest>,
    ) -> Result<Vec<bool>, ManifestError> {
        let batches: Vec<Vec<BatchStatementRequest>> =
            statements.chunks(STATEMENTS_PER_BATCH).map(<[BatchStatementRequest]>::to_vec).collect();
        let answers: Vec<Vec<bool>> = stream::iter(batches)
            .map(|batch| self.statement_batch(batch))
            .buffered(CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    async fn statement_batch(&self, batch: Vec<BatchStatementRequest>) -> Result<Vec<bool>, ManifestError> {
        let mut applied: Vec<Option<bool>> = vec![None; batch.len()];
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            let open: Vec<usize> = (0..batch.len()).filter(|index| applied[*index].is_none()).collect();
            if open.is_empty() {
                break;
            }
            let output = self
                .client
                .batch_execute_statement()
                .set_statements(Some(open.iter().map(|index| batch[*index].clone()).collect()))
                .send()
                .await
                .map_err(|error| self.request_error("BatchExecuteStatement", error.into()))?;
            for (index, response) in open.iter().zip(output.responses()) {
                applied[*index] = match response.error().and_then(|error| error.code()) {
                    None => Some(true),
                    Some(BatchStatementErrorCodeEnum::ConditionalCheckFailed) => Some(false),
                    Some(
                        BatchStatementErrorCodeEnum::ThrottlingError
                        | BatchStatementErrorCodeEnum::ProvisionedThroughputExceeded
                        | BatchStatementErrorCodeEnum::RequestLimitExceeded
                        | BatchStatementErrorCodeEnum::TransactionConflict
                        | BatchStatementErrorCodeEnum::InternalServerError,
                    ) => None,
                    Some(code) => {
                        let message = response.error().and_then(|error| error.message()).unwrap_or_default();
                        return Err(DynamoDbManifestError::Statement {
                            code: code.as_str().to_owned(),
                            message: message.to_owned(),
                        }
                        .into());
                    }
                };
            }
        }
        if applied.iter().any(Option::is_none) {
            return Err(DynamoDbManifestError::Contended { what: "a batch of conditional updates".to_owned() }.into());
        }
        Ok(applied.into_iter().map(|applied| applied.unwrap_or(false)).collect())
    }

    /// Records on a committed output's item that its sources are all compacted.
    pub(super) async fn mark_sources_compacted(&self, output_item: &Item) -> Result<(), ManifestError> {
        let reader = ItemReader::new(output_item, &self.table);
        let key = key_of(reader.string("pk")?, reader.string("sk")?);
        self.conditional_update(
            key,
            "SET #sources_compacted = :yes",
            "#state = :committed",
            values([
                (":yes", AttributeValue::Bool(true)),
                (":committed", string_value(crate::domain::records::OutputState::Committed.as_str())),
            ]),
            false,
        )
        .await?
        // Only a committed output is marked, and a committed output stays committed: a failed
        // condition cannot happen, and would only mean the next recovery tries the sources again.
        .ok();
        Ok(())
    }

    /// The sort key of the chunk to start reading at for sources after `start_after`: the last
    /// chunk that starts before its offset, since a chunk starting at the offset itself may
    /// follow one that ends with sources at that offset (empty ones share their offset with the
    /// source after them).
    async fn chunk_from_sk(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        start_after: Option<(u64, &str)>,
    ) -> Result<Option<String>, ManifestError> {
        Ok(match start_after {
            None => None,
            Some((offset, _)) => {
                let page = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("#pk = :pk AND #sk < :cursor")
                    .set_expression_attribute_names(Some(super::names_in(&["#pk #sk"])))
                    .set_expression_attribute_values(Some(values([
                        (":pk", string_value(chunk_pk(partition, output_key))),
                        (":cursor", string_value(chunk_offset_floor(offset))),
                    ])))
                    .projection_expression("#sk")
                    .scan_index_forward(false)
                    .consistent_read(true)
                    .limit(1)
                    .send()
                    .await
                    .map_err(|error| self.request_error("Query", error.into()))?;
                page.items().first().and_then(|item| item.get("sk")).and_then(|sk| sk.as_s().ok()).cloned()
            }
        })
    }

    /// `output_sources` of an output that has chunks: placements by (offset, key) after
    /// `start_after`, each with its object item (read for its state), at most `limit`.
    /// A source whose item now holds another version that was never placed here is left out,
    /// as the index left it out. Of a `committed` output, a source still pending as the placed
    /// version reads compacted ([`derived::derived_state`]): the commit decided it, whether or
    /// not `mark_compacted` has written it on the item yet.
    pub(super) async fn sources_from_chunks(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        committed: bool,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, ManifestError> {
        // The sources after the cursor start in the last chunk that starts before its offset:
        // a chunk starting at the offset itself may follow one that ends with sources at that
        // offset (empty ones share their offset with the source after them).
        let from_sk = self.chunk_from_sk(partition, output_key, start_after).await?;
        let mut sources = Vec::new();
        let mut start_key = None;
        loop {
            let (placements, next) = self.chunk_page(partition, output_key, start_key, from_sk.clone()).await?;
            let mut wanted: Vec<SourcePlacement> = placements
                .into_iter()
                .filter(|source| start_after.is_none_or(|after| (source.placement.offset, source.key.as_str()) > after))
                .collect();
            // Empty sources share an offset with the source after them, and a chunk holds them
            // in the order they were placed: pages go by (offset, key), as the cursor does.
            wanted.sort_by(|one, other| {
                (one.placement.offset, one.key.as_str()).cmp(&(other.placement.offset, other.key.as_str()))
            });
            for window in wanted.chunks(KEYS_PER_BATCH_GET) {
                let keys: Vec<&str> = window.iter().map(|source| source.key.as_str()).collect();
                // Each source's item and arrival records, combined.
                let mut current: HashMap<String, crate::domain::combined::KeyRecord> = self
                    .combined_records(partition, &keys)
                    .await?
                    .into_iter()
                    .map(|record| (record.record.key.clone(), record))
                    .collect();
                for source in window {
                    let Some(current) = current.remove(&source.key) else { continue };
                    let mut record = if current.stored {
                        let record = current.record;
                        let placed_here =
                            record.placement.as_ref().is_some_and(|placement| placement.output_key == output_key);
                        if record.sequencer != source.sequencer && !placed_here {
                            continue;
                        }
                        let recorded = Version { key: &record.key, sequencer: &record.sequencer };
                        let placed = Version { key: &source.key, sequencer: &source.sequencer };
                        let state = derived::derived_state(
                            record.state,
                            committed && derived::holds_placed_version(record.state, recorded, placed),
                        );
                        ObjectRecord { state, ..record }
                    } else {
                        // Recorded by arrivals: this output's version still, or left out.
                        if !current.version_sequencers.contains(&source.sequencer) {
                            continue;
                        }
                        let placed = committed && current.placed_by(&source.sequencer);
                        let record = current.record;
                        ObjectRecord { state: if placed { ObjectState::Compacted } else { record.state }, ..record }
                    };
                    record.placement = Some(source.placement.clone());
                    sources.push(record);
                    if sources.len() == limit {
                        return Ok(sources);
                    }
                }
            }
            start_key = next;
            if start_key.is_none() {
                return Ok(sources);
            }
        }
    }

    /// The placements of an output that has chunks, by (offset, key) after `start_after`, at
    /// most `limit`: the chunks alone, with no read of the sources' items.
    pub(super) async fn placements_from_chunks(
        &self,
        partition: &PartitionKey,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<SourcePlacement>, ManifestError> {
        let from_sk = self.chunk_from_sk(partition, output_key, start_after).await?;
        let mut placed = Vec::new();
        let mut start_key = None;
        loop {
            let (placements, next) = self.chunk_page(partition, output_key, start_key, from_sk.clone()).await?;
            placed.extend(placements.into_iter().filter(|source| {
                start_after.is_none_or(|after| (source.placement.offset, source.key.as_str()) > after)
            }));
            placed.sort_by(|one, other| {
                (one.placement.offset, one.key.as_str()).cmp(&(other.placement.offset, other.key.as_str()))
            });
            // A later chunk never holds an earlier (offset, key): a full page is final.
            if placed.len() >= limit {
                placed.truncate(limit);
                return Ok(placed);
            }
            start_key = next;
            if start_key.is_none() {
                return Ok(placed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(key: &str, offset: u64) -> SourcePlacement {
        SourcePlacement {
            key: key.to_owned(),
            sequencer: "0055".to_owned(),
            placement: Placement {
                output_key: "compacted/out.json".to_owned(),
                generation: 3,
                offset,
                length: 10,
                sha256: "ab".repeat(32),
                separator_bytes: 1,
            },
            etag: Some("\"5d41402abc4b2a76b9719d911017c592\"".to_owned()),
            size: 10,
        }
    }

    #[test]
    fn chunks_written_before_etags_and_sizes_decode_without_them() {
        let old_chunk = r#"[["logs/a.json","0055",0,10,"abab",1]]"#;
        let decoded = decode_chunk(old_chunk, "compacted/out.json", 3).expect("an old chunk still decodes");
        assert_eq!(decoded.len(), 1);
        assert_eq!((decoded[0].etag.as_deref(), decoded[0].size), (None, 0));
        assert_eq!(decoded[0].placement.length, 10);
    }

    #[test]
    fn chunks_decode_to_the_placements_they_encode() {
        let placements = vec![placement("logs/a \"quoted\".json", 0), placement("logs/é\n.json", 11)];
        let chunks = encode_chunks(&placements, |_| false);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].first_offset, 0);
        let decoded = decode_chunk(&chunks[0].placements, "compacted/out.json", 3).unwrap();
        assert_eq!(decoded, placements);
    }

    #[test]
    fn chunks_stay_under_the_item_limit_and_split_where_the_input_alone_says() {
        let long_key = "k".repeat(1000);
        let placements: Vec<SourcePlacement> =
            (0..1000).map(|index| placement(&format!("{long_key}{index:04}"), index * 11)).collect();
        let all = encode_chunks(&placements, |_| false);
        assert!(all.len() > 1, "a million bytes of keys need several chunks");
        assert!(all.iter().all(|chunk| chunk.placements.len() <= CHUNK_MAX_BYTES));
        let decoded: Vec<SourcePlacement> =
            all.iter().flat_map(|chunk| decode_chunk(&chunk.placements, "compacted/out.json", 3).unwrap()).collect();
        assert_eq!(decoded, placements, "every placement once, in order");
        // Skipping some changes what the chunks hold, never where they start: a rerun with
        // other superseded sources overwrites the same items.
        let some_skipped = encode_chunks(&placements, |source| source.placement.offset % 2 == 0);
        let starts = |chunks: &[EncodedChunk]| chunks.iter().map(|chunk| chunk.first_offset).collect::<Vec<_>>();
        assert_eq!(starts(&some_skipped), starts(&all));
        let kept: usize = some_skipped
            .iter()
            .map(|chunk| decode_chunk(&chunk.placements, "compacted/out.json", 3).unwrap().len())
            .sum();
        assert_eq!(kept, 500);
    }

    /// A run of empty sources long enough to fill a chunk: every chunk starts at offset 0, and
    /// each must still be an item of its own, in the order the sources page in.
    #[test]
    fn chunks_of_empty_sources_at_one_offset_get_distinct_ordered_sort_keys() {
        let long_key = "é".repeat(400);
        let mut placements: Vec<SourcePlacement> =
            (0..2_000).map(|index| placement(&format!("{long_key}{index:05}"), 0)).collect();
        for source in &mut placements {
            source.placement.length = 0;
        }
        let chunks = encode_chunks(&placements, |_| false);
        assert!(chunks.len() > 1, "1.2 MB of keys need several chunks");
        let sort_keys: Vec<String> =
            chunks.iter().map(|chunk| chunk_sk(chunk.first_offset, &chunk.first_key)).collect();
        assert!(sort_keys.windows(2).all(|pair| pair[0] < pair[1]), "distinct and in key order");
        assert!(sort_keys.iter().all(|sort_key| sort_key.len() <= SORT_KEY_MAX_BYTES));
        assert!(sort_keys
            .iter()
            .all(|sort_key| *sort_key >= chunk_offset_floor(0) && *sort_key < chunk_offset_floor(1)));
        let longest = chunk_sk(7, &"é".repeat(1_000));
        assert!(longest.len() <= SORT_KEY_MAX_BYTES && longest.starts_with(&chunk_offset_floor(7)), "cut to fit");
    }

    #[test]
    fn only_a_pending_item_of_the_placed_version_takes_a_placement() {
        let item = |state: &str, sequencer: &str| -> Item {
            HashMap::from([
                ("state".to_owned(), string_value(state)),
                ("sequencer".to_owned(), string_value(sequencer)),
            ])
        };
        assert!(holds_placed_version(Some(&item("pending", "0055")), "a.json", "0055"));
        assert!(!holds_placed_version(Some(&item("pending", "0056")), "a.json", "0055"), "a newer version");
        assert!(!holds_placed_version(Some(&item("removed", "0055")), "a.json", "0055"), "removed");
        assert!(!holds_placed_version(Some(&item("bogus", "0055")), "a.json", "0055"), "an unknown state");
        assert!(!holds_placed_version(None, "a.json", "0055"), "gone");
    }
}
