//! # test-data
//!
//! Deterministic, seeded datasets of realistic small objects, for the CLI's `demo` command,
//! for tests and for benchmarks.
//!
//! The compactor is only as well tested as the objects fed to it. Real small-object lakes
//! have a shape: CloudTrail's gzip files, 44% of them under 1,000 bytes; NDJSON files that
//! sometimes lack a final newline; Hive-style `year=/month=/day=` partitions mixing plain
//! and gzip files; CSV files that each repeat their header. This crate writes such datasets
//! from a seed, so a benchmark, a demo and a failing test all describe exactly the same bytes.
//!
//! - Same [`DatasetSpec`] (seed included) ⇒ the same keys, bytes and event times, on every
//!   machine and every version of this crate: the PRNG is our own SplitMix64 ([`rng`]), not
//!   `rand`, and uses integer arithmetic only. Gzip bodies additionally depend on the deflate
//!   implementation, which `Cargo.lock` pins (their decompressed bytes never change).
//! - [`objects`] is a streaming iterator: each file is generated when it is asked for, so
//!   memory does not grow with the dataset.
//! - [`write_to_store`] PUTs a dataset into any [`ObjectStore`](compactor::ports::ObjectStore)
//!   and returns the S3 `ObjectCreated:Put` events it implies; [`notification_line`] turns an
//!   event into the JSON S3 would deliver, so ingest can be driven exactly as S3 drives it.
//!
//! ```
//! use test_data::{objects, DatasetKind, DatasetSpec};
//!
//! let spec = DatasetSpec { days: 2, files_per_day: 3, ..DatasetSpec::demo(DatasetKind::CloudTrail) };
//! let keys: Vec<String> = objects(&spec).map(|object| object.key).collect();
//! assert_eq!(keys.len(), 6);
//! assert!(keys[0].starts_with("AWSLogs/123456789012/CloudTrail/eu-west-1/2024/01/01/"));
//! // Same seed, same dataset.
//! assert_eq!(keys, objects(&spec).map(|object| object.key).collect::<Vec<_>>());
//! ```
//!
//! The default dataset ([`DatasetSpec::default`], the demo's) is SeedJson: 30 days × 700
//! files a day = 21,000 files of 6 records each, 5.2 KB per file on average (from 1.3 KB to
//! about 30 KB, most of them small), 110 MB in all.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};

mod generate;
pub mod rng;
mod write;

pub use generate::HIVE_CSV_HEADER;
pub use write::{
    event_for, notification_line, sequencer, write_notifications, write_to_store, SizeHistogram, WriteSummary,
};

/// The shape of a dataset: key layout, record format, compression and size mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// `<prefix>YYYY/MM/DD/events-<uuid-like>.json`: NDJSON, `records_per_file` records per
    /// file, about 5% of files without a final newline.
    SeedJson,
    /// `<prefix>AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_
    /// YYYYMMDDTHHmmZ_<16 alphanumerics>.json.gz`: gzip `{"Records":[...]}`, about 44% of
    /// files under 1,000 bytes, most under 128 KiB.
    CloudTrail,
    /// `<prefix>year=YYYY/month=MM/day=DD/hour=HH/part-<n>.ndjson`, about 30% gzip
    /// (`.ndjson.gz`).
    HiveNdjson,
    /// `<prefix>year=YYYY/month=MM/day=DD/part-<n>.csv`, each with a header line, about 30%
    /// gzip (`.csv.gz`).
    HiveCsv,
    /// `<prefix>YYYY/MM/DD/batch-<16 hex>.parquet`: feature-store ingestion batches, 37 columns
    /// (ids, an event time, float and integer features with nulls, a flag, a nested struct and
    /// a list), 1 to `2 × records_per_file - 1` rows (at most 500), Snappy or Zstd, one row
    /// group (two in about one file in five). See `compactor::testkit::parquet_files`.
    Parquet,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::SeedJson,
        DatasetKind::CloudTrail,
        DatasetKind::HiveNdjson,
        DatasetKind::HiveCsv,
        DatasetKind::Parquet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::SeedJson => "seed-json",
            DatasetKind::CloudTrail => "cloudtrail",
            DatasetKind::HiveNdjson => "hive-ndjson",
            DatasetKind::HiveCsv => "hive-csv",
            DatasetKind::Parquet => "parquet",
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A dataset kind name that is none of `seed-json`, `cloudtrail`, `hive-ndjson`, `hive-csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDatasetKind(pub String);

impl fmt::Display for UnknownDatasetKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = DatasetKind::ALL.iter().map(|kind| kind.as_str()).collect();
        write!(formatter, "unknown dataset kind {:?}: use one of {}", self.0, known.join(", "))
    }
}

impl std::error::Error for UnknownDatasetKind {}

impl FromStr for DatasetKind {
    type Err = UnknownDatasetKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DatasetKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| UnknownDatasetKind(text.to_string()))
    }
}

/// Everything that determines a dataset. Same spec ⇒ same objects, byte for byte.
///
/// Plain fields: start from [`DatasetSpec::demo`] (or `default()`) and override with struct
/// update syntax. The dataset holds `days × files_per_day` files, day by day, in event-time
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    pub kind: DatasetKind,
    pub seed: u64,
    /// The first day's date (UTC).
    pub start_date: NaiveDate,
    pub days: u32,
    pub files_per_day: u32,
    /// SeedJson: exactly this many records per file (the reference generator's option).
    /// CloudTrail: the mean over all files (44% hold one record, the rest a heavy tail).
    /// Hive kinds: the mean, each file holding between a quarter and 1¾ of it.
    pub records_per_file: u32,
    /// Prepended to every key; empty, or ending with `/`.
    pub prefix: String,
    /// The bucket [`write_to_store`] writes to and events name.
    pub bucket: String,
    /// CloudTrail only: the account in keys and records.
    pub account_id: String,
    /// CloudTrail only: the region in keys and records.
    pub region: String,
}

impl DatasetSpec {
    /// A demo-sized dataset of `kind`, about 100 MB, starting 2024-01-01, seed 42 (sizes
    /// measured on this version):
    ///
    /// | kind        | days | files/day | records/file | mean file   | total   | < 1,000 B |
    /// |-------------|------|-----------|--------------|-------------|---------|-----------|
    /// | seed-json   | 30   | 700       | 6 (exact)    | 5.2 KB      | 110 MB  | 0%        |
    /// | cloudtrail  | 30   | 700       | 30 (mean)    | 5.2 KB gzip | 110 MB  | 44%       |
    /// | hive-ndjson | 30   | 360       | 40 (mean)    | 9.5 KB      | ~102 MB | 1%        |
    /// | hive-csv    | 30   | 480       | 40 (mean)    | 6.1 KB      | ~87 MB  | 3%        |
    /// | parquet     | 30   | 60        | 250 (mean)   | see below   |         |           |
    pub fn demo(kind: DatasetKind) -> Self {
        let (files_per_day, records_per_file, prefix) = match kind {
            DatasetKind::SeedJson => (700, 6, "logs/"),
            DatasetKind::CloudTrail => (700, 30, ""),
            DatasetKind::HiveNdjson => (360, 40, "clicks/"),
            DatasetKind::HiveCsv => (480, 40, "clicks-csv/"),
            DatasetKind::Parquet => (60, 250, "features/"),
        };
        DatasetSpec {
            kind,
            seed: 42,
            start_date: NaiveDate::from_ymd_opt(2024, 1, 1).expect("a valid date"),
            days: 30,
            files_per_day,
            records_per_file,
            prefix: prefix.to_string(),
            bucket: "demo-source".to_string(),
            account_id: "123456789012".to_string(),
            region: "eu-west-1".to_string(),
        }
    }

    /// How many objects the dataset holds.
    pub fn object_count(&self) -> u64 {
        u64::from(self.days) * u64::from(self.files_per_day)
    }

    /// Checks what the generator cannot make sense of; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.days == 0 || self.files_per_day == 0 {
            return Err("days and files per day must both be at least 1".into());
        }
        if self.records_per_file == 0 {
            return Err("records per file must be at least 1".into());
        }
        if !self.prefix.is_empty() && !self.prefix.ends_with('/') {
            return Err(format!("prefix {:?} must end with '/' (partitions are directories)", self.prefix));
        }
        if self.prefix.starts_with('/') {
            return Err(format!("prefix {:?} must not start with '/' (S3 keys are relative)", self.prefix));
        }
        if self.bucket.is_empty() {
            return Err("bucket must not be empty".into());
        }
        if self.kind == DatasetKind::CloudTrail
            && (self.account_id.len() != 12 || !self.account_id.bytes().all(|byte| byte.is_ascii_digit()))
        {
            return Err(format!("account id {:?} must be 12 digits", self.account_id));
        }
        if self.start_date.checked_add_days(chrono::Days::new(u64::from(self.days))).is_none() {
            return Err("start date plus days is past the end of the calendar".into());
        }
        Ok(())
    }
}

impl Default for DatasetSpec {
    /// The demo's dataset: [`DatasetSpec::demo`] of [`DatasetKind::SeedJson`].
    fn default() -> Self {
        DatasetSpec::demo(DatasetKind::SeedJson)
    }
}

/// One object of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedObject {
    pub key: String,
    pub body: Bytes,
    /// When the object was (notionally) written: within its partition's day, increasing
    /// through the dataset. Events carry it as their `eventTime`.
    pub event_time: DateTime<Utc>,
}

/// Every object of the dataset, day by day, in event-time order, each generated when asked
/// for. Keys are unique and, like the bytes, a pure function of the spec.
pub fn objects(spec: &DatasetSpec) -> impl Iterator<Item = GeneratedObject> + Send + 'static {
    let spec = Arc::new(spec.clone());
    let files_per_day = spec.files_per_day;
    (0..spec.days).flat_map(move |day| {
        let spec = Arc::clone(&spec);
        (0..files_per_day).map(move |file| generate::object_at(&spec, day, file))
    })
}

/// File `file` (0-based) of day `day` (0-based), without generating the others.
pub fn object_at(spec: &DatasetSpec, day: u32, file: u32) -> GeneratedObject {
    generate::object_at(spec, day, file)
}

#[cfg(test)]
mod tests;
