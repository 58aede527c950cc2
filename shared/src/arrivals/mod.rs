//! Reading arrival items back in key order, in bounded memory (issue #12, the README's
//! "ingest in batches" design; the records, their encoding and the per-key fold are pure and
//! live in [`crate::domain::arrivals`]).
//!
//! ```text
//! arrival items (each sorted inside, not across) ──push──▶ ArrivalMerge ──finish──▶ Merged
//!     in memory up to a byte budget, then sorted runs in a temporary file      │ key order, replays dropped
//!                                                                              ▼
//!                                          fold_keys: one Folded per key (today's record)
//! ```
//!
//! Not in `domain/`: a merge that outgrows its budget writes to a temporary file, and the
//! domain does no I/O. The file is anonymous (`tempfile::tempfile`): the kernel removes it
//! when the merge is dropped or the process dies, so a crashed seal leaves nothing in Lambda's
//! `/tmp`, and nothing in it is ever needed again (a rerun merges the items anew).

pub mod merge;

pub use merge::{ArrivalMerge, MergeConfig, MergeError, MergeStats, Merged};

use crate::domain::arrivals::{Arrival, Folded, KeyFold};

/// Folds a key-ordered stream of records (as [`Merged`] yields them: each key's records in
/// [`crate::domain::arrivals::canonical_order`]) into one record per key, skipping keys that
/// hold no record (only removals of versions never recorded). Holds one key's record at a time.
pub fn fold_keys<E>(
    records: impl IntoIterator<Item = Result<Arrival, E>>,
) -> FoldKeys<impl Iterator<Item = Result<Arrival, E>>> {
    FoldKeys { records: records.into_iter(), current: None, failed: false }
}

/// The iterator of [`fold_keys`].
pub struct FoldKeys<I> {
    records: I,
    /// The key being folded, and its fold so far.
    current: Option<(String, KeyFold)>,
    failed: bool,
}

impl<E, I: Iterator<Item = Result<Arrival, E>>> Iterator for FoldKeys<I> {
    type Item = Result<Folded, E>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            match self.records.next() {
                Some(Err(error)) => {
                    // Nothing after an error can be trusted to be in order: stop.
                    self.failed = true;
                    return Some(Err(error));
                }
                Some(Ok(record)) => {
                    let finished = match &mut self.current {
                        Some((key, fold)) if *key == record.key => {
                            fold.apply(&record);
                            None
                        }
                        _ => {
                            let mut fold = KeyFold::default();
                            fold.apply(&record);
                            self.current.replace((record.key, fold))
                        }
                    };
                    if let Some(folded) = finished.and_then(|(_, fold)| fold.finish()) {
                        return Some(Ok(folded));
                    }
                }
                None => {
                    let (_, fold) = self.current.take()?;
                    if let Some(folded) = fold.finish() {
                        return Some(Ok(folded));
                    }
                }
            }
        }
    }
}
