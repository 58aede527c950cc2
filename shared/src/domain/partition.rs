//! A partition: the source objects of one bucket that share a directory prefix ending in a date
//! (or hour), and the period of time that prefix stands for.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The half-open interval of time `[start, end)` a partition's path stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    /// When a partition of this period closes: the period's end plus the grace period for late
    /// arrivals. Closed partitions are the ones a scheduled seal compacts.
    pub fn closes_at(&self, grace: Duration) -> DateTime<Utc> {
        self.end + grace
    }
}

/// A key's partition as the layout sees it: the path (prefix and date segments, ending in `/`)
/// and its period. The bucket comes from the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Partition {
    pub path: String,
    pub period: Period,
}

/// The identity of a partition in the manifest: its bucket and path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionKey {
    pub bucket: String,
    pub path: String,
}

impl PartitionKey {
    pub fn new(bucket: impl Into<String>, path: impl Into<String>) -> Self {
        Self { bucket: bucket.into(), path: path.into() }
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::layout::Layout;

    #[test]
    fn a_partition_closes_after_its_period_plus_grace() {
        let layout = Layout::parse("%Y/%m/%d", None).unwrap();
        let partition = layout.partition_of("logs/2024/01/31/x.json").unwrap();
        let closes_at = partition.period.closes_at(Duration::minutes(90));
        assert_eq!(closes_at, DateTime::parse_from_rfc3339("2024-02-01T01:30:00Z").unwrap());

        let hourly = Layout::parse("%Y/%m/%d/%H", None).unwrap();
        let partition = hourly.partition_of("logs/2024/12/31/23/x.json").unwrap();
        assert_eq!(partition.period.end, DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap());
    }

    #[test]
    fn partition_keys_print_as_s3_urls() {
        assert_eq!(PartitionKey::new("b", "logs/2024/01/14/").to_string(), "s3://b/logs/2024/01/14/");
    }
}
