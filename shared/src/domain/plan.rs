//! Planning a seal: which pending objects go into which output.
//!
//! Pending objects are grouped by [`FormatClass`] (gzip never shares an output with plain
//! text), sorted by key, and packed greedily in key order into outputs of at most
//! `target_output_bytes` (an object is never split; one larger than the target gets an output of
//! its own). Key order keeps an output's records roughly in time order, which is what query
//! engines prune on. Output keys are a pure function of the destination, the partition path,
//! the generation and the part number, so a rerun of the same generation names the same outputs.

use serde::{Deserialize, Serialize};

use super::format::{classify, FormatClass, FormatRules};

/// What the planner needs to know of a pending object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInput {
    pub key: String,
    pub size: u64,
}

/// Anything the planner can pack: it needs a key and a size.
pub trait Packable: Clone {
    fn key(&self) -> &str;
    fn size(&self) -> u64;
}

impl Packable for PlanInput {
    fn key(&self) -> &str {
        &self.key
    }
    fn size(&self) -> u64 {
        self.size
    }
}

impl Packable for crate::domain::records::ObjectRecord {
    fn key(&self) -> &str {
        &self.key
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// Planner settings, a subset of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSettings {
    pub dest_prefix: String,
    pub target_output_bytes: u64,
    /// The format of each key (per prefix, or the default).
    pub formats: FormatRules,
}

/// One output to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedOutput<T = PlanInput> {
    pub key: String,
    pub part_number: u32,
    pub class: FormatClass,
    /// The sources, in the order their bytes appear in the output.
    pub sources: Vec<T>,
    /// The sum of the sources' sizes (separators, at most one byte a source, come on top).
    pub source_bytes: u64,
}

/// The plan for one partition and generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan<T = PlanInput> {
    pub outputs: Vec<PlannedOutput<T>>,
    /// Pending objects whose format cannot be concatenated (normally refused at ingest; here if
    /// the configuration changed since).
    pub refused: Vec<T>,
}

impl<T> Default for Plan<T> {
    fn default() -> Self {
        Plan { outputs: Vec::new(), refused: Vec::new() }
    }
}

/// The key of output `part_number` of `generation` for the partition at `partition_path`.
pub fn output_key(
    dest_prefix: &str,
    partition_path: &str,
    generation: u64,
    part_number: u32,
    extension: &str,
) -> String {
    format!("{dest_prefix}{partition_path}compacted-g{generation:06}-p{part_number:05}{extension}")
}

/// Names a partition's outputs in the order a packer closes them: part numbers from 1, so a rerun
/// of the same generation names the same outputs. Shared by [`Packer`] and
/// [`RangePacker`](super::ranges::RangePacker).
#[derive(Debug, Clone)]
pub(crate) struct OutputNames {
    partition_path: String,
    generation: u64,
    next_part_number: u32,
}

impl OutputNames {
    pub(crate) fn new(partition_path: &str, generation: u64) -> Self {
        Self { partition_path: partition_path.to_owned(), generation, next_part_number: 1 }
    }

    /// The key and part number of the next output.
    pub(crate) fn next(&mut self, dest_prefix: &str, extension: &str) -> (String, u32) {
        let part_number = self.next_part_number;
        self.next_part_number += 1;
        (output_key(dest_prefix, &self.partition_path, self.generation, part_number, extension), part_number)
    }
}

/// The streaming planner: takes pending objects in key order, one at a time, and hands back
/// each output as soon as it is full. A seal pages through a partition's pending objects with
/// it, so only one output's worth of records is held at a time, however large the partition.
#[derive(Debug)]
pub struct Packer<T> {
    names: OutputNames,
    settings: PlanSettings,
    open_bins: std::collections::BTreeMap<FormatClass, (Vec<T>, u64)>,
    last_key: Option<String>,
}

impl<T: Packable> Packer<T> {
    pub fn new(partition_path: &str, generation: u64, settings: PlanSettings) -> Self {
        Self {
            names: OutputNames::new(partition_path, generation),
            settings,
            open_bins: Default::default(),
            last_key: None,
        }
    }

    /// Adds the next object (keys must come in strictly increasing order). Returns the output
    /// this object's arrival closed, if any, or `Err(object)` if its format is refused.
    pub fn push(&mut self, object: T) -> Result<Option<PlannedOutput<T>>, T> {
        debug_assert!(
            self.last_key.as_deref().is_none_or(|last| last < object.key()),
            "objects must come in strictly increasing key order"
        );
        self.last_key = Some(object.key().to_string());
        let class = match classify(object.key(), &self.settings.formats) {
            Ok(class) => class,
            Err(_) => return Err(object),
        };
        let target = self.settings.target_output_bytes;
        let bin = self.open_bins.entry(class.clone()).or_default();
        let closed = if !bin.0.is_empty() && bin.1 + object.size() > target {
            let (sources, source_bytes) = std::mem::take(bin);
            Some((sources, source_bytes))
        } else {
            None
        };
        let bin = self.open_bins.entry(class.clone()).or_default();
        bin.1 += object.size();
        bin.0.push(object);
        Ok(closed.map(|(sources, source_bytes)| self.seal_bin(class, sources, source_bytes)))
    }

    /// The outputs still open, once every object has been pushed.
    pub fn finish(mut self) -> Vec<PlannedOutput<T>> {
        let bins = std::mem::take(&mut self.open_bins);
        bins.into_iter()
            .filter(|(_, (sources, _))| !sources.is_empty())
            .map(|(class, (sources, source_bytes))| self.seal_bin(class, sources, source_bytes))
            .collect()
    }

    fn seal_bin(&mut self, class: FormatClass, sources: Vec<T>, source_bytes: u64) -> PlannedOutput<T> {
        let (key, part_number) = self.names.next(&self.settings.dest_prefix, &class.extension);
        PlannedOutput { key, part_number, class, sources, source_bytes }
    }
}

/// Plans the outputs of one partition at once (the dry run, and tests); a seal uses the same
/// [`Packer`] page by page.
pub fn plan_partition<T: Packable>(
    partition_path: &str,
    generation: u64,
    pending: &[T],
    settings: &PlanSettings,
) -> Plan<T> {
    let mut sorted: Vec<T> = pending.to_vec();
    sorted.sort_by(|left, right| left.key().cmp(right.key()));
    sorted.dedup_by(|later, earlier| later.key() == earlier.key());
    let mut packer = Packer::new(partition_path, generation, settings.clone());
    let mut plan = Plan::default();
    for object in sorted {
        match packer.push(object) {
            Ok(Some(output)) => plan.outputs.push(output),
            Ok(None) => {}
            Err(refused) => plan.refused.push(refused),
        }
    }
    plan.outputs.extend(packer.finish());
    plan
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn settings(target: u64) -> PlanSettings {
        PlanSettings { dest_prefix: "compacted/".into(), target_output_bytes: target, formats: FormatRules::default() }
    }

    fn input(key: &str, size: u64) -> PlanInput {
        PlanInput { key: key.into(), size }
    }

    #[test]
    fn packs_in_key_order_and_names_outputs_deterministically() {
        let pending =
            vec![input("p/2024/01/14/c.json", 40), input("p/2024/01/14/a.json", 60), input("p/2024/01/14/b.json", 50)];
        let plan = plan_partition("p/2024/01/14/", 3, &pending, &settings(100));
        assert_eq!(plan.outputs.len(), 2);
        assert_eq!(plan.outputs[0].key, "compacted/p/2024/01/14/compacted-g000003-p00001.json");
        assert_eq!(plan.outputs[0].sources, vec![input("p/2024/01/14/a.json", 60)]);
        assert_eq!(plan.outputs[1].sources, vec![input("p/2024/01/14/b.json", 50), input("p/2024/01/14/c.json", 40)]);
        assert_eq!(plan.outputs[1].source_bytes, 90);
    }

    #[test]
    fn classes_get_outputs_of_their_own_and_refused_formats_are_listed() {
        let pending =
            vec![input("p/a.json.gz", 10), input("p/b.json", 10), input("p/c.json.gz", 10), input("p/d.parquet", 10)];
        let plan = plan_partition("p/", 1, &pending, &settings(1000));
        let keys: Vec<_> = plan.outputs.iter().map(|output| output.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["compacted/p/compacted-g000001-p00001.json", "compacted/p/compacted-g000001-p00002.json.gz"]
        );
        assert_eq!(plan.outputs[1].sources.len(), 2);
        assert_eq!(plan.outputs[0].sources, vec![input("p/b.json", 10)]);
        assert_eq!(plan.refused, vec![input("p/d.parquet", 10)]);
    }

    #[test]
    fn an_object_larger_than_the_target_gets_its_own_output() {
        let pending = vec![input("p/a", 5), input("p/b", 500), input("p/c", 5)];
        let plan = plan_partition("p/", 1, &pending, &settings(100));
        let sizes: Vec<_> = plan.outputs.iter().map(|output| output.source_bytes).collect();
        assert_eq!(sizes, vec![5, 500, 5]);
    }

    fn arbitrary_pending() -> impl Strategy<Value = Vec<PlanInput>> {
        // A parquet key now and then: refused formats must stay out of every output.
        proptest::collection::btree_map("[a-e]{1,3}(\\.json|\\.gz|\\.log|\\.parquet|)", 0u64..400, 0..60).prop_map(
            |objects| objects.into_iter().map(|(key, size)| PlanInput { key: format!("p/{key}"), size }).collect(),
        )
    }

    proptest! {
        #[test]
        fn every_pending_object_lands_in_exactly_one_output(
            pending in arbitrary_pending(),
            target in 1u64..1000,
            seed in any::<u64>(),
        ) {
            let plan = plan_partition("p/", 7, &pending, &settings(target));

            // Independent of input order.
            let mut shuffled = pending.clone();
            let length = shuffled.len();
            if length > 1 {
                for index in 0..length {
                    let swap_with = (seed.wrapping_mul(index as u64 + 1) % length as u64) as usize;
                    shuffled.swap(index, swap_with);
                }
            }
            prop_assert_eq!(&plan_partition("p/", 7, &shuffled, &settings(target)), &plan);

            // Exactly once.
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for output in &plan.outputs {
                for source in &output.sources {
                    *seen.entry(source.key.as_str()).or_default() += 1;
                }
            }
            prop_assert_eq!(seen.len() + plan.refused.len(), pending.len());
            prop_assert!(seen.values().all(|count| *count == 1));
            prop_assert!(plan.refused.iter().all(|refused| !seen.contains_key(refused.key.as_str())));

            for output in &plan.outputs {
                // Key order inside an output, and under target unless one object alone.
                prop_assert!(output.sources.windows(2).all(|pair| pair[0].key < pair[1].key));
                prop_assert!(output.source_bytes <= target || output.sources.len() == 1);
                prop_assert_eq!(output.source_bytes, output.sources.iter().map(|source| source.size).sum::<u64>());
                prop_assert!(output.key.starts_with("compacted/p/compacted-g000007-p"));
            }
            // Near target: two consecutive outputs of one class could not have been merged.
            let mut by_class: HashMap<&FormatClass, Vec<&PlannedOutput>> = HashMap::new();
            for output in &plan.outputs {
                by_class.entry(&output.class).or_default().push(output);
            }
            for outputs in by_class.values() {
                for pair in outputs.windows(2) {
                    prop_assert!(pair[0].source_bytes + pair[1].sources[0].size > target);
                    prop_assert!(pair[0].sources.last().unwrap().key < pair[1].sources[0].key);
                }
            }
            // Distinct keys (a set: the outputs come by class, not in key order).
            let keys: std::collections::BTreeSet<&String> = plan.outputs.iter().map(|output| &output.key).collect();
            prop_assert_eq!(keys.len(), plan.outputs.len());
        }

        /// Sealing twice equals sealing once: once a plan's outputs are sealed, only its refused
        /// objects are still pending, and the next generation's plan writes nothing and refuses
        /// the same objects.
        #[test]
        fn sealing_twice_equals_sealing_once(pending in arbitrary_pending(), target in 1u64..1000) {
            let first = plan_partition("p/", 1, &pending, &settings(target));
            let sealed: std::collections::BTreeSet<&str> = first
                .outputs
                .iter()
                .flat_map(|output| output.sources.iter().map(|source| source.key.as_str()))
                .collect();
            let still_pending: Vec<PlanInput> =
                pending.iter().filter(|object| !sealed.contains(object.key.as_str())).cloned().collect();
            let second = plan_partition("p/", 2, &still_pending, &settings(target));
            prop_assert!(second.outputs.is_empty(), "{:?}", second.outputs);
            prop_assert_eq!(&second.refused, &first.refused);
        }
    }
}
