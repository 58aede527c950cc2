//! An external merge of arrival records into one key-ordered, deduplicated stream.
//!
//! Records are pushed in any order. They stay in memory until the next would take the buffer
//! past the budget; then the buffer is sorted, deduplicated and written to the temporary file
//! as a *run*: pages of at most `memory_bytes / (fan_in + 1)`, each a batch in the arrival
//! encoding (uncompressed: read back at once, CPU matters more than bytes). At the end, runs
//! are merged `fan_in` at a time into longer runs until `fan_in` are left, and those are merged
//! as the stream is read, one page of each in memory. So at most the budget's worth of records
//! is held at any time: the buffer while pushing, `fan_in + 1` pages (the readers' and the one
//! being written) while merging. The disk holds each record once per pass.
//!
//! Duplicates (replayed batches) are dropped inside a run when it is written, and across runs
//! as they merge: equal records are neighbours in [`canonical_order`], which orders every field.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use thiserror::Error;

use crate::domain::arrivals::{
    canonical_order, decode_batch, encode_sorted, Arrival, ArrivalsError, Compression, MAX_RECORD_MEMORY_BYTES,
};

/// How much memory a merge may hold, and how many runs it reads at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeConfig {
    /// The most the records held at once may take ([`Arrival::memory_bytes`] summed).
    pub memory_bytes: usize,
    /// How many runs are merged at once: more means fewer passes over the disk, smaller pages.
    pub fan_in: usize,
}

impl Default for MergeConfig {
    /// 16 MiB and 32 runs: pages of ~500 KB (about 1,900 CloudTrail records a read), and a
    /// million CloudTrail records (~270 MB in memory, 19 runs of 16 MiB) merge in one pass.
    fn default() -> Self {
        MergeConfig { memory_bytes: 16 << 20, fan_in: 32 }
    }
}

impl MergeConfig {
    fn page_bytes(&self) -> usize {
        self.memory_bytes / (self.fan_in + 1)
    }

    fn validate(&self) -> Result<(), MergeError> {
        let least = (self.fan_in.max(2) + 1) * MAX_RECORD_MEMORY_BYTES;
        if self.fan_in < 2 || self.memory_bytes < least {
            return Err(MergeError::Config(format!(
                "a merge needs a fan-in of at least 2 and at least {least} bytes of memory for a fan-in of {} \
                 (a page must hold the largest record), not {} bytes: raise the memory budget",
                self.fan_in, self.memory_bytes
            )));
        }
        Ok(())
    }
}

/// Why a merge failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MergeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Record(#[from] ArrivalsError),
    #[error("the merge's temporary file could not be {what}: {source}; check that the temporary directory ($TMPDIR, /tmp on Lambda) has space")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> MergeError {
    move |source| MergeError::Io { what, source }
}

/// What a merge did, for tests and the seal's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub records_pushed: u64,
    /// Runs written, the intermediate passes' included.
    pub runs_written: u64,
    /// Passes that merged runs into longer runs before the final merge.
    pub passes: u64,
    pub spilled_bytes: u64,
    /// The most [`Arrival::memory_bytes`] held at once: never over the budget.
    pub peak_held_bytes: usize,
}

/// Bytes held now, and the most ever.
#[derive(Debug, Default)]
struct Held {
    now: usize,
    stats: MergeStats,
}

impl Held {
    fn add(&mut self, bytes: usize) {
        self.now += bytes;
        self.stats.peak_held_bytes = self.stats.peak_held_bytes.max(self.now);
    }

    fn remove(&mut self, bytes: usize) {
        self.now = self.now.saturating_sub(bytes);
    }
}

/// A run's place in the file: a sequence of pages, each a little-endian u32 length and an
/// encoded batch.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u64,
    end: u64,
}

/// Merges records pushed in any order; see the module doc.
pub struct ArrivalMerge {
    config: MergeConfig,
    buffer: Vec<Arrival>,
    held: Held,
    file: Option<File>,
    /// Where the next page goes: the file's end.
    file_end: u64,
    runs: Vec<Run>,
}

impl ArrivalMerge {
    pub fn new(config: MergeConfig) -> Result<Self, MergeError> {
        config.validate()?;
        Ok(ArrivalMerge {
            config,
            buffer: Vec::new(),
            held: Held::default(),
            file: None,
            file_end: 0,
            runs: Vec::new(),
        })
    }

    /// Adds one record (of any key, in any order). Refuses records over the limits of
    /// [`Arrival::check`], which bound a page.
    pub fn push(&mut self, record: Arrival) -> Result<(), MergeError> {
        record.check()?;
        let bytes = record.memory_bytes();
        if self.held.now + bytes > self.config.memory_bytes {
            self.spill()?;
        }
        self.held.add(bytes);
        self.held.stats.records_pushed += 1;
        self.buffer.push(record);
        Ok(())
    }

    /// Sorts the buffer and writes it as a run.
    fn spill(&mut self) -> Result<(), MergeError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.sort_by(canonical_order);
        let before: usize = buffer.iter().map(Arrival::memory_bytes).sum();
        buffer.dedup();
        self.held.remove(before - buffer.iter().map(Arrival::memory_bytes).sum::<usize>());
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(tempfile::tempfile().map_err(io("created"))?),
        };
        let mut writer = RunWriter::new(self.file_end, self.config.page_bytes());
        for record in buffer {
            // The record moves from the buffer into the page: released here, held again there.
            self.held.remove(record.memory_bytes());
            writer.push(file, record, &mut self.held)?;
        }
        let (run, end, written) = writer.finish(file, &mut self.held)?;
        self.file_end = end;
        self.runs.push(run);
        self.held.stats.runs_written += 1;
        self.held.stats.spilled_bytes += written;
        Ok(())
    }

    /// Ends the input: the records in key order, each once.
    pub fn finish(mut self) -> Result<Merged, MergeError> {
        if self.file.is_none() {
            let mut records = std::mem::take(&mut self.buffer);
            records.sort_by(canonical_order);
            records.dedup();
            return Ok(Merged { source: Source::Memory(records.into_iter()), stats: self.held.stats, failed: false });
        }
        self.spill()?;
        let (Some(mut file), fan_in, page_bytes) = (self.file, self.config.fan_in, self.config.page_bytes()) else {
            return Err(MergeError::Config("a spilled merge lost its file".to_owned()));
        };
        let mut runs = std::mem::take(&mut self.runs);
        let mut held = self.held;
        // Longer runs until one merge reads them all: each pass cuts their number by `fan_in`.
        while runs.len() > fan_in {
            held.stats.passes += 1;
            let mut longer = Vec::with_capacity(runs.len().div_ceil(fan_in));
            for group in runs.chunks(fan_in) {
                let mut merge = RunMerge::new(group, page_bytes);
                let mut writer = RunWriter::new(self.file_end, page_bytes);
                while let Some(record) = merge.next_record(&mut file, &mut held)? {
                    writer.push(&mut file, record, &mut held)?;
                }
                let (run, end, written) = writer.finish(&mut file, &mut held)?;
                self.file_end = end;
                longer.push(run);
                held.stats.runs_written += 1;
                held.stats.spilled_bytes += written;
            }
            runs = longer;
        }
        let merge = RunMerge::new(&runs, page_bytes);
        Ok(Merged { source: Source::Runs { merge, file, held }, stats: MergeStats::default(), failed: false })
    }
}

/// Writes one run, a page at a time.
struct RunWriter {
    start: u64,
    at: u64,
    page_bytes: usize,
    page: Vec<Arrival>,
    /// What the page being filled holds.
    held: usize,
}

impl RunWriter {
    fn new(start: u64, page_bytes: usize) -> Self {
        RunWriter { start, at: start, page_bytes, page: Vec::new(), held: 0 }
    }

    fn push(&mut self, file: &mut File, record: Arrival, held: &mut Held) -> Result<(), MergeError> {
        let bytes = record.memory_bytes();
        if self.held + bytes > self.page_bytes {
            self.write_page(file, held)?;
        }
        self.held += bytes;
        held.add(bytes);
        self.page.push(record);
        Ok(())
    }

    fn write_page(&mut self, file: &mut File, held: &mut Held) -> Result<(), MergeError> {
        if self.page.is_empty() {
            return Ok(());
        }
        let encoded = encode_sorted(&self.page, Compression::None)?;
        let length = u32::try_from(encoded.len())
            .map_err(|_| MergeError::Config(format!("a page of {} bytes does not fit a u32", encoded.len())))?;
        file.seek(SeekFrom::Start(self.at)).map_err(io("written"))?;
        file.write_all(&length.to_le_bytes()).map_err(io("written"))?;
        file.write_all(&encoded).map_err(io("written"))?;
        self.at += 4 + u64::from(length);
        self.page.clear();
        held.remove(self.held);
        self.held = 0;
        Ok(())
    }

    /// The run written, where the file ends now, and the bytes written.
    fn finish(mut self, file: &mut File, held: &mut Held) -> Result<(Run, u64, u64), MergeError> {
        self.write_page(file, held)?;
        Ok((Run { start: self.start, end: self.at }, self.at, self.at - self.start))
    }
}

/// One run being read: its next page's offset and the rest of the current page.
struct RunReader {
    next: u64,
    end: u64,
    /// The most a page holds in memory, so also in the file (its encoding is smaller).
    page_bytes: usize,
    page: VecDeque<Arrival>,
}

impl RunReader {
    /// The run's next record, loading its next page when the current one is used up.
    fn head(&mut self, file: &mut File, held: &mut Held) -> Result<Option<&Arrival>, MergeError> {
        if self.page.is_empty() && self.next < self.end {
            let mut length = [0u8; 4];
            file.seek(SeekFrom::Start(self.next)).map_err(io("read"))?;
            file.read_exact(&mut length).map_err(io("read"))?;
            let length = u32::from_le_bytes(length);
            if length as usize > self.page_bytes {
                // Only a damaged file says so: never allocate what it claims.
                return Err(MergeError::Io {
                    what: "read",
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "a page of {length} bytes at offset {}, over the {} written",
                            self.next, self.page_bytes
                        ),
                    ),
                });
            }
            let mut encoded = vec![0u8; length as usize];
            file.read_exact(&mut encoded).map_err(io("read"))?;
            self.next += 4 + u64::from(length);
            let page = decode_batch(&encoded)?;
            held.add(page.iter().map(Arrival::memory_bytes).sum());
            self.page = page.into();
        }
        Ok(self.page.front())
    }

    fn pop(&mut self, held: &mut Held) -> Option<Arrival> {
        let record = self.page.pop_front()?;
        held.remove(record.memory_bytes());
        Some(record)
    }
}

/// Up to `fan_in` runs merged, a page of each in memory.
struct RunMerge {
    readers: Vec<RunReader>,
}

impl RunMerge {
    fn new(runs: &[Run], page_bytes: usize) -> Self {
        RunMerge {
            readers: runs
                .iter()
                .map(|run| RunReader { next: run.start, end: run.end, page_bytes, page: VecDeque::new() })
                .collect(),
        }
    }

    /// The least record of all runs, its copies in other runs dropped.
    fn next_record(&mut self, file: &mut File, held: &mut Held) -> Result<Option<Arrival>, MergeError> {
        // A linear scan: fan_in is small, and a heap would hold copies of the heads.
        let mut least: Option<usize> = None;
        for index in 0..self.readers.len() {
            if self.readers[index].head(file, held)?.is_none() {
                continue;
            }
            let smaller =
                match (least.and_then(|best| self.readers[best].page.front()), self.readers[index].page.front()) {
                    (Some(best), Some(head)) => canonical_order(head, best) == Ordering::Less,
                    _ => true,
                };
            if smaller {
                least = Some(index);
            }
        }
        let Some(record) = least.and_then(|index| self.readers[index].pop(held)) else { return Ok(None) };
        for reader in &mut self.readers {
            while reader.head(file, held)?.is_some_and(|head| *head == record) {
                reader.pop(held);
            }
        }
        Ok(Some(record))
    }
}

enum Source {
    Memory(std::vec::IntoIter<Arrival>),
    Runs { merge: RunMerge, file: File, held: Held },
}

/// The merged stream: every record pushed, in [`canonical_order`], each once.
pub struct Merged {
    source: Source,
    stats: MergeStats,
    failed: bool,
}

impl Merged {
    /// What the merge did so far (the peak includes the pages read until now).
    pub fn stats(&self) -> MergeStats {
        match &self.source {
            Source::Memory(_) => self.stats,
            Source::Runs { held, .. } => held.stats,
        }
    }
}

impl Iterator for Merged {
    type Item = Result<Arrival, MergeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match &mut self.source {
            Source::Memory(records) => records.next().map(Ok),
            Source::Runs { merge, file, held } => match merge.next_record(file, held) {
                Ok(record) => record.map(Ok),
                Err(error) => {
                    self.failed = true;
                    Some(Err(error))
                }
            },
        }
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
