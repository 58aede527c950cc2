//! What the benchmark reads from the SAM template, so the cost it reports is that of the
//! deployment as templated: each function's memory size and the ingest queue's batch size.

use anyhow::Context;

const TEMPLATE: &str = include_str!("../../sam/template.yaml");

/// The deployment's settings the cost model needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Deployed {
    pub ingest_memory_mb: u64,
    pub seal_memory_mb: u64,
    /// Events per ingest-fn invocation at most (the SQS event source's `BatchSize`).
    pub ingest_batch_size: u64,
}

impl Deployed {
    pub fn from_template() -> anyhow::Result<Deployed> {
        Ok(Deployed {
            ingest_memory_mb: property(TEMPLATE, "IngestFunction", "MemorySize")?,
            seal_memory_mb: property(TEMPLATE, "SealFunction", "MemorySize")?,
            ingest_batch_size: property(TEMPLATE, "IngestFunction", "BatchSize")?,
        })
    }
}

/// The first `name: <number>` line inside the top-level resource `resource` (indented two
/// spaces under `Resources:`), at any depth.
fn property(template: &str, resource: &str, name: &str) -> anyhow::Result<u64> {
    let header = format!("  {resource}:");
    let mut lines = template.lines().skip_while(|line| line.trim_end() != header);
    lines.next().with_context(|| format!("sam/template.yaml has no resource {resource}"))?;
    let value = lines
        .take_while(|line| line.trim().is_empty() || line.starts_with("   ") || line.trim_start().starts_with('#'))
        .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':').map(str::trim))
        .with_context(|| format!("sam/template.yaml: {resource} has no {name}"))?;
    value.parse().with_context(|| format!("sam/template.yaml: {resource}'s {name} is {value:?}, not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_names_memory_and_batch_sizes() {
        let deployed = Deployed::from_template().expect("the template parses");
        assert!(deployed.ingest_memory_mb >= 128 && deployed.seal_memory_mb >= 128, "{deployed:?}");
        assert!((1..=10_000).contains(&deployed.ingest_batch_size), "{deployed:?}");
    }

    #[test]
    fn properties_are_read_inside_their_resource_only() {
        let template = "Resources:\n  A:\n    Properties:\n      MemorySize: 128\n  B:\n    Properties:\n      Events:\n        Q:\n          Properties:\n            BatchSize: 7\n      MemorySize: 512\n";
        assert_eq!(property(template, "A", "MemorySize").unwrap(), 128);
        assert_eq!(property(template, "B", "MemorySize").unwrap(), 512);
        assert_eq!(property(template, "B", "BatchSize").unwrap(), 7);
        assert!(property(template, "A", "BatchSize").is_err());
        assert!(property(template, "C", "MemorySize").is_err());
    }
}
