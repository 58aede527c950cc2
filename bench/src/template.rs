//! What the benchmark reads from the SAM template, so the cost it reports is that of the
//! deployment as templated: each function's memory size, the ingest queue's batch size, and
//! which deletions the object events rule lets reach ingest.

use anyhow::Context;

const TEMPLATE: &str = include_str!("../../sam/template.yaml");

/// The deployment's settings the cost model needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Deployed {
    pub ingest_memory_mb: u64,
    pub seal_memory_mb: u64,
    /// Events per ingest-fn invocation at most (the SQS event source's `BatchSize`).
    pub ingest_batch_size: u64,
    /// Whether the seal's own deletions ("Object Deleted", reason "DeleteObject") reach
    /// ingest: in delete mode, one event for every compacted source.
    pub ingests_deletions: bool,
    /// Whether a lifecycle rule's deletions ("Object Deleted", reason "Lifecycle Expiration")
    /// reach ingest: in tag mode, one event for every compacted source.
    pub ingests_lifecycle_expirations: bool,
}

impl Deployed {
    pub fn from_template() -> anyhow::Result<Deployed> {
        Ok(Deployed {
            ingest_memory_mb: property(TEMPLATE, "IngestFunction", "MemorySize")?,
            seal_memory_mb: property(TEMPLATE, "SealFunction", "MemorySize")?,
            ingest_batch_size: property(TEMPLATE, "IngestFunction", "BatchSize")?,
            ingests_deletions: routes_deletions(TEMPLATE)?,
            ingests_lifecycle_expirations: routes_deletions(TEMPLATE)? && !drops_lifecycle_expirations(TEMPLATE)?,
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

/// The lines of the `ObjectEventsRule` resource.
fn object_events_rule(template: &str) -> anyhow::Result<impl Iterator<Item = &str>> {
    let mut lines = template.lines().skip_while(|line| line.trim_end() != "  ObjectEventsRule:");
    lines.next().context("sam/template.yaml has no resource ObjectEventsRule")?;
    Ok(lines.take_while(|line| line.trim().is_empty() || line.starts_with("   ")).map(str::trim))
}

/// Whether the rule's `detail-type:` line names "Object Deleted".
fn routes_deletions(template: &str) -> anyhow::Result<bool> {
    let mut lines = object_events_rule(template)?;
    let detail_types = lines
        .find(|line| line.starts_with("detail-type:"))
        .context("sam/template.yaml: ObjectEventsRule has no detail-type line")?;
    Ok(detail_types.contains("Object Deleted"))
}

/// Whether the rule keeps out the events of a lifecycle rule's deletions (a `reason:` line with
/// `anything-but` naming `Lifecycle Expiration`).
fn drops_lifecycle_expirations(template: &str) -> anyhow::Result<bool> {
    Ok(object_events_rule(template)?.any(|line| {
        line.starts_with("reason:") && line.contains("anything-but") && line.contains("Lifecycle Expiration")
    }))
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
    fn the_template_keeps_every_deletion_out_of_ingest() {
        let deployed = Deployed::from_template().unwrap();
        assert!(!deployed.ingests_deletions && !deployed.ingests_lifecycle_expirations, "{deployed:?}");
        let rule = |lines: &str| format!("Resources:\n  ObjectEventsRule:\n    Properties:\n{lines}  Next:\n");
        let both = "      detail-type: [Object Created, Object Deleted]\n";
        assert!(routes_deletions(&rule(both)).unwrap());
        assert!(!routes_deletions(&rule("      detail-type: [Object Created]\n")).unwrap());
        assert!(routes_deletions(&rule("")).is_err(), "a rule without detail-type is not guessed at");
        let filtered = format!("{both}      reason: [{{ anything-but: [Lifecycle Expiration] }}]\n");
        assert!(drops_lifecycle_expirations(&rule(&filtered)).unwrap());
        assert!(!drops_lifecycle_expirations(&rule("      reason: [DeleteObject, Lifecycle Expiration]\n")).unwrap());
        assert!(!drops_lifecycle_expirations(&rule(both)).unwrap());
        assert!(drops_lifecycle_expirations("Resources:\n  Other:\n").is_err());
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
