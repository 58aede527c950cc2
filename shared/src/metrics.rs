//! CloudWatch metrics in the embedded metric format (EMF): one JSON log line per invocation,
//! which CloudWatch Logs turns into metrics on its own. No PutMetricData call, so no latency,
//! no extra IAM permission and no request cost; the line is also a readable log record.
//!
//! ```
//! use compactor::metrics::{Emf, MetricSet, Unit};
//!
//! let (emf, lines) = Emf::capture("S3Compactor/my-stack");
//! let mut metrics = MetricSet::default();
//! metrics.add("ObjectsRecorded", Unit::Count, 12);
//! emf.emit(&metrics, chrono::Utc::now());
//! assert!(lines.lines()[0].contains("\"ObjectsRecorded\":12"));
//! ```
//!
//! The metrics carry no dimensions: each deployment gets a namespace of its own (the SAM
//! template sets `COMPACTOR_METRICS_NAMESPACE` to `S3Compactor/<stack name>`), so alarms name
//! the metric alone.

use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::config::ConfigError;

/// The namespace when `COMPACTOR_METRICS_NAMESPACE` is unset.
pub const DEFAULT_NAMESPACE: &str = "S3Compactor";

/// Reads `COMPACTOR_METRICS_NAMESPACE` through `lookup`: CloudWatch accepts up to 255 letters,
/// digits and `.-_/#:`, not starting with a colon.
pub fn namespace_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    const NAME: &str = "COMPACTOR_METRICS_NAMESPACE";
    let Some(namespace) = lookup(NAME).map(|value| value.trim().to_string()).filter(|value| !value.is_empty()) else {
        return Ok(DEFAULT_NAMESPACE.to_string());
    };
    let valid = namespace.len() <= 255
        && !namespace.starts_with(':')
        && namespace.chars().all(|character| character.is_ascii_alphanumeric() || ".-_/#:".contains(character));
    if valid {
        Ok(namespace)
    } else {
        Err(ConfigError::Invalid {
            name: NAME,
            value: namespace,
            reason: "a CloudWatch namespace is up to 255 letters, digits and . - _ / # :, such as S3Compactor/my-stack"
                .into(),
        })
    }
}

/// CloudWatch units used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Seconds => "Seconds",
        }
    }
}

/// The values of one invocation, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricSet {
    values: Vec<(&'static str, Unit, u64)>,
}

impl MetricSet {
    /// Adds a value; a name added twice keeps the sum (a batch adds up its messages).
    pub fn add(&mut self, name: &'static str, unit: Unit, value: u64) {
        match self.values.iter_mut().find(|(existing, _, _)| *existing == name) {
            Some((_, _, total)) => *total += value,
            None => self.values.push((name, unit, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.values.iter().find(|(existing, _, _)| *existing == name).map(|(_, _, value)| *value)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.values.iter().map(|(name, _, _)| *name)
    }

    /// The EMF record: `_aws` metadata naming each metric and its unit, and the values as
    /// top-level fields.
    pub fn to_emf(&self, namespace: &str, timestamp: DateTime<Utc>) -> Value {
        let definitions: Vec<Value> =
            self.values.iter().map(|(name, unit, _)| json!({ "Name": name, "Unit": unit.as_str() })).collect();
        let mut record = Map::new();
        record.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp.timestamp_millis(),
                "CloudWatchMetrics": [{ "Namespace": namespace, "Dimensions": [[]], "Metrics": definitions }],
            }),
        );
        for (name, _, value) in &self.values {
            record.insert((*name).into(), json!(value));
        }
        Value::Object(record)
    }
}

/// Where EMF lines go: stdout in Lambda (CloudWatch Logs reads it), a buffer in tests.
#[derive(Clone)]
pub struct Emf {
    namespace: String,
    out: Arc<Mutex<dyn Write + Send>>,
}

impl std::fmt::Debug for Emf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emf").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl Emf {
    /// Lines to the process's stdout, which Lambda sends to the function's log group.
    pub fn stdout(namespace: impl Into<String>) -> Emf {
        Emf { namespace: namespace.into(), out: Arc::new(Mutex::new(std::io::stdout())) }
    }

    /// Lines kept in memory, for tests.
    pub fn capture(namespace: impl Into<String>) -> (Emf, CapturedLines) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let emf = Emf { namespace: namespace.into(), out: buffer.clone() };
        (emf, CapturedLines { buffer })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Writes one line. A failed write is ignored: losing a metric must never fail the work it
    /// measures (and Lambda's stdout does not fail).
    pub fn emit(&self, metrics: &MetricSet, timestamp: DateTime<Utc>) {
        let mut line = metrics.to_emf(&self.namespace, timestamp).to_string();
        line.push('\n');
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
        }
    }
}

/// The lines an [`Emf::capture`] received.
#[derive(Debug, Clone)]
pub struct CapturedLines {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl CapturedLines {
    pub fn lines(&self) -> Vec<String> {
        let buffer = self.buffer.lock().expect("the buffer's lock is never poisoned");
        String::from_utf8_lossy(&buffer).lines().map(str::to_string).collect()
    }

    /// Each line parsed as JSON.
    pub fn records(&self) -> Vec<Value> {
        self.lines().iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_declares_every_value_it_carries_with_its_unit() {
        let (emf, lines) = Emf::capture("S3Compactor/test");
        let mut metrics = MetricSet::default();
        metrics.add("ObjectsRecorded", Unit::Count, 2);
        metrics.add("BytesRecorded", Unit::Bytes, 10);
        metrics.add("ObjectsRecorded", Unit::Count, 3);
        emf.emit(&metrics, DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let records = lines.records();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record["ObjectsRecorded"], 5);
        assert_eq!(record["BytesRecorded"], 10);
        let directive = &record["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "S3Compactor/test");
        assert_eq!(directive["Dimensions"], json!([[]]));
        assert_eq!(
            directive["Metrics"],
            json!([{ "Name": "ObjectsRecorded", "Unit": "Count" }, { "Name": "BytesRecorded", "Unit": "Bytes" }])
        );
        assert_eq!(record["_aws"]["Timestamp"], 1_700_000_000_000_i64);
    }

    #[test]
    fn the_namespace_defaults_and_rejects_what_cloudwatch_would() {
        assert_eq!(namespace_from_lookup(|_| None).unwrap(), DEFAULT_NAMESPACE);
        assert_eq!(namespace_from_lookup(|_| Some("S3Compactor/prod".into())).unwrap(), "S3Compactor/prod");
        let error = namespace_from_lookup(|_| Some("my stack".into())).unwrap_err().to_string();
        assert!(error.contains("COMPACTOR_METRICS_NAMESPACE=\"my stack\" is invalid"), "{error}");
    }
}
