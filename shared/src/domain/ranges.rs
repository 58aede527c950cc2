//! Planning outputs as key ranges, so that a seal never holds an output's sources at once.
//!
//! [`Packer`](super::plan::Packer) hands back each output with all its sources: with tiny
//! objects, a 128 MiB output holds a million of them, and so did the seal's memory. The
//! [`RangePacker`] makes the same decisions from the same pushes but keeps, per open output,
//! only its bounds and totals: an output is the pending objects of one [`FormatClass`] with keys
//! in `(after, last]`. The seal then reads that range back from the manifest a window at a
//! time while it writes the output ([`RangeWindow`] decides what of each page belongs to it).
//!
//! Objects can change between the planning read and the writing read (a new version, a
//! removal, a late arrival inside the range). That is safe: the writer places each source as
//! the version it read, and the manifest applies a placement only while the record still holds
//! that version. The window also stops at the planned count and bytes, so a late arrival never
//! makes an output larger than planned (which could turn a single PUT's buffer into more than a
//! part); whatever it leaves out stays pending for the next seal.

use super::format::{classify, FormatClass, FormatRules, NotConcatenable};
use super::plan::{OutputNames, PlanSettings};

/// One output to write, as the range of pending keys it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRange {
    pub key: String,
    pub part_number: u32,
    pub class: FormatClass,
    /// The key pushed just before the range's first one (of any class), exclusive; `None`
    /// when the range starts at the partition's first pending key.
    pub after: Option<String>,
    /// The range's last key, inclusive.
    pub last: String,
    /// How many sources and bytes were planned.
    pub sources: u64,
    pub source_bytes: u64,
}

#[derive(Debug)]
struct OpenRange {
    after: Option<String>,
    last: String,
    sources: u64,
    source_bytes: u64,
}

/// The streaming planner of ranges: push pending objects in key order, get each output's range
/// as soon as it is full. Memory: one open range per format class.
#[derive(Debug)]
pub struct RangePacker {
    names: OutputNames,
    settings: PlanSettings,
    open: std::collections::BTreeMap<FormatClass, OpenRange>,
    last_key: Option<String>,
}

impl RangePacker {
    pub fn new(partition_path: &str, generation: u64, settings: PlanSettings) -> Self {
        Self { names: OutputNames::new(partition_path, generation), settings, open: Default::default(), last_key: None }
    }

    /// Adds the next pending object (keys strictly increasing). Returns the range its arrival
    /// closed, if any, or `Err` when its format is refused (it is left out of every range).
    pub fn push(&mut self, key: &str, size: u64) -> Result<Option<PlannedRange>, NotConcatenable> {
        debug_assert!(self.last_key.as_deref().is_none_or(|last| last < key), "keys must come in increasing order");
        let after = self.last_key.replace(key.to_owned());
        let class = classify(key, &self.settings.formats)?;
        let target = self.settings.target_output_bytes;
        let closed = match self.open.get(&class) {
            Some(open) if open.source_bytes + size > target => self.open.remove(&class),
            _ => None,
        };
        let open = self.open.entry(class.clone()).or_insert_with(|| OpenRange {
            after,
            last: String::new(),
            sources: 0,
            source_bytes: 0,
        });
        open.last = key.to_owned();
        open.sources += 1;
        open.source_bytes += size;
        Ok(closed.map(|open| self.close(class, open)))
    }

    /// The ranges still open, once every object has been pushed.
    pub fn finish(mut self) -> Vec<PlannedRange> {
        let open = std::mem::take(&mut self.open);
        open.into_iter().map(|(class, open)| self.close(class, open)).collect()
    }

    fn close(&mut self, class: FormatClass, open: OpenRange) -> PlannedRange {
        let (key, part_number) = self.names.next(&self.settings.dest_prefix, &class.extension);
        PlannedRange {
            key,
            part_number,
            class,
            after: open.after,
            last: open.last,
            sources: open.sources,
            source_bytes: open.source_bytes,
        }
    }
}

/// Reading a range back, page by page: which of a page's pending objects go into the output.
#[derive(Debug)]
pub struct RangeWindow<'range> {
    range: &'range PlannedRange,
    formats: FormatRules,
    taken_sources: u64,
    taken_bytes: u64,
    done: bool,
}

impl<'range> RangeWindow<'range> {
    pub fn new(range: &'range PlannedRange, formats: FormatRules) -> Self {
        Self { range, formats, taken_sources: 0, taken_bytes: 0, done: false }
    }

    /// Where to start reading pending objects (exclusive).
    pub fn start_after(&self) -> Option<&str> {
        self.range.after.as_deref()
    }

    /// True once the range is read to its end (or its planned totals are reached).
    pub fn done(&self) -> bool {
        self.done
    }

    /// Keeps, in order, the objects (key, size) of one page that belong to the output: of the
    /// range's class, inside its bounds, within its planned count and bytes. A page that runs
    /// past the range, or an object that would overflow its totals, ends it.
    pub fn take<T>(&mut self, page: Vec<T>, key_and_size: impl Fn(&T) -> (&str, u64)) -> Vec<T> {
        let mut taken = Vec::new();
        for object in page {
            if self.done {
                break;
            }
            let (key, size) = key_and_size(&object);
            if key > self.range.last.as_str() {
                self.done = true;
                break;
            }
            if classify(key, &self.formats).ok().as_ref() != Some(&self.range.class) {
                continue;
            }
            if self.taken_sources == self.range.sources || self.taken_bytes + size > self.range.source_bytes {
                self.done = true;
                break;
            }
            self.taken_sources += 1;
            self.taken_bytes += size;
            taken.push(object);
        }
        taken
    }

    /// Marks the range read to its end: the manifest has no pending object after the page.
    pub fn end(&mut self) {
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::plan::{plan_partition, PlanInput};

    fn settings(target: u64) -> PlanSettings {
        PlanSettings { dest_prefix: "compacted/".into(), target_output_bytes: target, formats: FormatRules::default() }
    }

    /// Reads every range back from `pending` in pages of `page`, as the seal does.
    fn read_back(range: &PlannedRange, pending: &[PlanInput], page: usize) -> Vec<PlanInput> {
        let mut window = RangeWindow::new(range, FormatRules::default());
        let mut taken = Vec::new();
        let mut position = pending.partition_point(|object| Some(object.key.as_str()) <= window.start_after());
        while !window.done() {
            let slice: Vec<PlanInput> = pending[position..].iter().take(page).cloned().collect();
            position += slice.len();
            let short = slice.len() < page;
            taken.extend(window.take(slice, |object| (object.key.as_str(), object.size)));
            if short {
                window.end();
            }
        }
        taken
    }

    fn ranges_of(pending: &[PlanInput], target: u64) -> (Vec<PlannedRange>, usize) {
        let mut packer = RangePacker::new("p/", 7, settings(target));
        let mut ranges = Vec::new();
        let mut refused = 0;
        for object in pending {
            match packer.push(&object.key, object.size) {
                Ok(closed) => ranges.extend(closed),
                Err(NotConcatenable) => refused += 1,
            }
        }
        ranges.extend(packer.finish());
        (ranges, refused)
    }

    #[test]
    fn a_range_holds_bounds_and_totals_not_sources() {
        let pending = vec![
            PlanInput { key: "p/a.json".into(), size: 60 },
            PlanInput { key: "p/b.json.gz".into(), size: 10 },
            PlanInput { key: "p/c.json".into(), size: 50 },
            PlanInput { key: "p/d.json".into(), size: 40 },
        ];
        let (ranges, _) = ranges_of(&pending, 100);
        let summary: Vec<(&str, Option<&str>, &str, u64, u64)> = ranges
            .iter()
            .map(|range| {
                (range.key.as_str(), range.after.as_deref(), range.last.as_str(), range.sources, range.source_bytes)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("compacted/p/compacted-g000007-p00001.json", None, "p/a.json", 1, 60),
                ("compacted/p/compacted-g000007-p00002.json", Some("p/b.json.gz"), "p/d.json", 2, 90),
                ("compacted/p/compacted-g000007-p00003.json.gz", Some("p/a.json"), "p/b.json.gz", 1, 10),
            ]
        );
    }

    #[test]
    fn a_late_arrival_inside_a_range_never_makes_it_larger_than_planned() {
        let planned =
            vec![PlanInput { key: "p/a.json".into(), size: 60 }, PlanInput { key: "p/c.json".into(), size: 30 }];
        let (ranges, _) = ranges_of(&planned, 100);
        let with_late = vec![
            PlanInput { key: "p/a.json".into(), size: 60 },
            PlanInput { key: "p/b.json".into(), size: 30 },
            PlanInput { key: "p/c.json".into(), size: 30 },
        ];
        let taken = read_back(&ranges[0], &with_late, 1);
        assert_eq!(taken.iter().map(|object| object.key.as_str()).collect::<Vec<_>>(), ["p/a.json", "p/b.json"]);
        assert!(taken.iter().map(|object| object.size).sum::<u64>() <= ranges[0].source_bytes);
    }

    proptest! {
        /// The ranges, read back in pages of any size, are exactly the outputs the Packer plans.
        #[test]
        fn ranges_read_back_are_the_packers_outputs(
            pending in proptest::collection::btree_map("[a-e]{1,3}(\\.json|\\.gz|\\.log|\\.parquet|)", 0u64..400, 0..60),
            target in 1u64..1000,
            page in 1usize..7,
        ) {
            let pending: Vec<PlanInput> =
                pending.into_iter().map(|(key, size)| PlanInput { key: format!("p/{key}"), size }).collect();
            let plan = plan_partition("p/", 7, &pending, &settings(target));
            let (ranges, refused) = ranges_of(&pending, target);
            prop_assert_eq!(refused, plan.refused.len());
            let mut outputs: Vec<(String, Vec<PlanInput>)> =
                plan.outputs.iter().map(|output| (output.key.clone(), output.sources.clone())).collect();
            let mut read: Vec<(String, Vec<PlanInput>)> =
                ranges.iter().map(|range| (range.key.clone(), read_back(range, &pending, page))).collect();
            outputs.sort_by(|left, right| left.0.cmp(&right.0));
            read.sort_by(|left, right| left.0.cmp(&right.0));
            prop_assert_eq!(read, outputs);
        }
    }
}
