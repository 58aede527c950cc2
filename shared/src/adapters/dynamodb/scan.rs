//! A partition's records in key order: its object items merged with its arrival records.
//!
//! Every scan of a partition's objects goes through here: `objects` (the seal's pending scan,
//! audits), the counts, release. Without arrival items it is the shards' merge alone, with the
//! server filtering on the stored state as before. With them, a key's object item and arrival
//! records must meet whatever the item's state (a stored `missing` settles a replayed
//! creation), so the shards are read unfiltered and the state is filtered after combining.

use super::arrivals::ArrivalCursor;
use super::derived::DerivingOutput;
use super::manifest::ShardMerge;
use super::partitions::DERIVE_BATCH;
use super::*;
use crate::domain::combined::{combine, KeyRecord};

/// Which side holds the next key.
enum Next {
    Both,
    Stored,
    Arrivals,
}

pub(super) struct CombinedScan {
    partition: PartitionKey,
    stored: ShardMerge,
    buffer: VecDeque<ObjectRecord>,
    stored_done: bool,
    may_note_empty: bool,
    arrivals: Option<ArrivalCursor>,
}

impl CombinedScan {
    /// The records `query` asks for (its state filtered by the caller, after derivation), from
    /// `query.start_after` on. `fresh`: read the arrival items anew (release and counts must
    /// see every item written before they started); else a kept cursor may serve.
    pub(super) async fn new(
        manifest: &DynamoDbManifest,
        partition: &PartitionKey,
        query: &ObjectQuery,
        batch: usize,
        fresh: bool,
    ) -> Result<Self, ManifestError> {
        // Only flipped records await an expiry mark of their own, and arrivals are never flipped.
        let arrivals = if query.expiry_unmarked {
            None
        } else {
            let cursor = manifest.arrival_cursor(partition, query.start_after.as_deref(), fresh).await?;
            cursor.any.then_some(cursor)
        };
        let stored_query =
            if arrivals.is_some() { ObjectQuery { state: None, ..query.clone() } } else { query.clone() };
        // A partition whose shards a scan lately found empty (see `ArrivalCursors`); only the
        // seal's passes skip them, never release or the counts.
        let skip_shards = !fresh && arrivals.is_some() && manifest.shards_known_empty(partition);
        Ok(CombinedScan {
            partition: partition.clone(),
            stored: ShardMerge::scan(partition, &stored_query, batch),
            buffer: VecDeque::new(),
            stored_done: skip_shards,
            // Only a scan of every state from the start can tell that the shards are empty.
            may_note_empty: arrivals.is_some() && query.start_after.is_none() && !skip_shards,
            arrivals,
        })
    }

    /// Whether the partition has arrival records (then every state must be derived here).
    pub(super) fn has_arrivals(&self) -> bool {
        self.arrivals.is_some()
    }

    /// The next records in key order, combined, not yet derived: at most `limit`, fewer only
    /// at the end.
    pub(super) async fn next_batch(
        &mut self,
        manifest: &DynamoDbManifest,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, ManifestError> {
        let mut batch = Vec::new();
        while batch.len() < limit {
            if self.buffer.is_empty() && !self.stored_done {
                let page = self.stored.next_batch(manifest, limit - batch.len()).await?;
                self.stored_done = page.is_empty();
                if self.stored_done && self.may_note_empty {
                    manifest.note_shards_empty(&self.partition);
                }
                self.may_note_empty = false;
                self.buffer.extend(page);
            }
            let arrival_key = match &mut self.arrivals {
                Some(cursor) => cursor.peek_key()?.map(str::to_owned),
                None => None,
            };
            let next = match (self.buffer.front().map(|record| record.key.as_str()), arrival_key.as_deref()) {
                (None, None) => break,
                (Some(stored), Some(arriving)) if stored == arriving => Next::Both,
                (Some(stored), Some(arriving)) if stored < arriving => Next::Stored,
                (Some(_), None) => Next::Stored,
                (_, Some(_)) => Next::Arrivals,
            };
            let (stored, arrivals) = match next {
                Next::Both => (self.buffer.pop_front(), self.next_arrivals()?),
                Next::Stored => (self.buffer.pop_front(), Vec::new()),
                Next::Arrivals => (None, self.next_arrivals()?),
            };
            batch.extend(combine(&self.partition.bucket, &self.partition.path, stored, &arrivals));
        }
        Ok(batch)
    }

    fn next_arrivals(&mut self) -> Result<Vec<crate::domain::arrivals::Arrival>, ManifestError> {
        let next = match &mut self.arrivals {
            Some(cursor) => cursor.next_key()?,
            None => None,
        };
        Ok(next.map(|(_, records)| records).unwrap_or_default())
    }

    /// Hands the arrival cursor back for the next page of the same scan.
    pub(super) fn finish(self, manifest: &DynamoDbManifest) {
        if let Some(cursor) = self.arrivals {
            manifest.keep_cursor(cursor);
        }
    }
}

impl DynamoDbManifest {
    /// Every record of `partition` in key order, derived, a batch at a time to `each`: the
    /// counts and release read the whole partition so. `fresh` as for [`CombinedScan::new`].
    pub(super) async fn for_each_derived(
        &self,
        partition: &PartitionKey,
        query: &ObjectQuery,
        deriving: &[DerivingOutput],
        mut each: impl FnMut(&[KeyRecord]),
    ) -> Result<(), ManifestError> {
        let mut scan = CombinedScan::new(self, partition, query, DERIVE_BATCH, true).await?;
        loop {
            let mut batch = scan.next_batch(self, DERIVE_BATCH).await?;
            if batch.is_empty() {
                return Ok(());
            }
            self.derive_records(partition, deriving, &mut batch).await?;
            each(&batch);
        }
    }
}
