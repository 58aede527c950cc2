//! The one configuration struct, shared by the CLI (flags) and the Lambdas (environment).
//!
//! Environment variables read by [`Config::from_env`] (the CLI's flags of the same names
//! fall back to them too):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `COMPACTOR_SOURCE_BUCKET` | bucket whose small objects are compacted | required |
//! | `COMPACTOR_SOURCE_PREFIX` | only keys under this prefix are ingested | (all) |
//! | `COMPACTOR_DEST_BUCKET` | bucket the outputs go to | the source bucket |
//! | `COMPACTOR_DEST_PREFIX` | prefix the partition paths are mirrored under | `compacted/` |
//! | `COMPACTOR_LAYOUT` | date layout in keys (`%Y/%m/%d`, `year=%Y/month=%m/day=%d/hour=%H`, …) | `%Y/%m/%d` |
//! | `COMPACTOR_GRANULARITY` | `day` or `hour` | finest field of the layout |
//! | `COMPACTOR_GRACE` | how long after its period a partition closes (`90m`, `2h`, `1d`; at most `365d`) | `2h` |
//! | `COMPACTOR_TARGET_OUTPUT_BYTES` | output size the planner packs towards | `128MiB` |
//! | `COMPACTOR_PART_BYTES` | multipart part size (5 MiB to 5 GiB) | `8MiB` |
//! | `COMPACTOR_SMALL_OBJECT_MAX_BYTES` | larger objects are skipped (`too_large`) | `64MiB` |
//! | `COMPACTOR_FORMAT` | the format of keys no `COMPACTOR_FORMATS` rule matches: `auto` (by the key: `parquet` for `.parquet`, `cloudtrail` for CloudTrail's log files, `.json.gz` under `AWSLogs/<account>/CloudTrail/` or named `<account>_CloudTrail_…`, `concat` for the rest), `concat` (newline-safe concatenation), `bytes` (no separators), `cloudtrail` (gzip `{"Records":[...]}` to gzip NDJSON), `csv` (one header per output), `ndjson` (lines that are not JSON set aside) or `parquet` (merged by column chunks) | `auto` |
//! | `COMPACTOR_FORMATS` | a format per source prefix, `prefix=format` pairs separated by commas (`trail/=cloudtrail,raw/=bytes`), a format optionally with its compression (`logs/=ndjson:zstd`); the longest matching prefix wins | (none) |
//! | `COMPACTOR_COMPRESS` | `zstd`, `gzip` or `none`: plain-text sources of `concat`, `bytes`, `csv` and `ndjson` become a zstd frame (gzip member) each, in outputs ending `.zst` (`.gz`); sources compressed already never are; a `COMPACTOR_FORMATS` rule's own `:zstd` wins | `none` |
//! | `COMPACTOR_PARQUET_ROW_GROUPS` | `copy` or `rewrite`: Parquet sources' row groups copied as they are, or small ones (under 1 MiB) decoded and re-encoded into row groups of about 64 MiB (outputs ending `-rows.parquet`); a `COMPACTOR_FORMATS` rule's own `parquet:rewrite` wins | `copy` |
//! | `COMPACTOR_EXPIRY` | `tag`, `delete` or `none`: what happens to compacted sources | `tag` |
//! | `COMPACTOR_EXPIRY_TAG` | the tag merged into compacted sources, `key=value` | `compacted=true` |
//! | `COMPACTOR_RECORD_TTL` | DynamoDB only: delete a source's record this long after the source was marked for expiry (`400d`; `30d` to `3650d`); ingest then writes an item per object instead of arrival items; SQLite ignores it | unset: records are kept (the audit trail) |
//! | `COMPACTOR_READ_CONCURRENCY` | source GETs in flight per output | `32` |
//! | `COMPACTOR_READ_AHEAD_BYTES` | bytes of sources read ahead of the writer | `64MiB` |
//! | `COMPACTOR_UPLOAD_CONCURRENCY` | parts uploading at once per output | `4` |
//! | `COMPACTOR_COPY_MIN_BYTES` | sources this large (5 MiB to 5 GiB) become parts by server-side `UploadPartCopy`, read once only to hash them; `off` streams every source | `5MiB` |
//! | `COMPACTOR_PARTITION_CONCURRENCY` | partitions sealed at once | `4` |
//! | `COMPACTOR_LEASE` | how long a seal lock lasts unless renewed (`30s` to `1d`) | `15m` |

use std::fmt;
use std::str::FromStr;

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::domain::format::{FormatMode, FormatRules};
use crate::domain::layout::{Granularity, Layout, LayoutError};
use crate::domain::plan::PlanSettings;
use crate::ports::Tag;

/// S3's smallest part (all but the last).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts per upload (part numbers are 1 to this).
pub const MAX_PARTS: u32 = 10_000;

/// The shortest `COMPACTOR_RECORD_TTL`: S3 may deliver an event again, and SQS keeps a message
/// up to 14 days; a record gone before its source's last event could see the source recorded,
/// and compacted, again.
pub const MIN_RECORD_TTL: Duration = Duration::days(30);

/// The longest `COMPACTOR_GRACE`: late data a year after its period is a backfill, not a
/// reason to keep a partition open.
pub const MAX_GRACE: Duration = Duration::days(365);
/// The longest `COMPACTOR_LEASE`: a live seal renews its lease, so a long one only keeps a
/// crashed run's partitions locked longer.
pub const MAX_LEASE: Duration = Duration::days(1);
/// The longest `COMPACTOR_RECORD_TTL`; unset keeps records for ever.
pub const MAX_RECORD_TTL: Duration = Duration::days(3650);

/// What happens to a source once the output holding it is committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiryMode {
    /// Merge the expiry tag into the object's tags; a lifecycle rule filtered on the tag expires
    /// it. The default: nothing is deleted by the compactor itself.
    #[default]
    Tag,
    /// Delete the source right after the commit.
    Delete,
    /// Leave sources alone.
    None,
}

impl fmt::Display for ExpiryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExpiryMode::Tag => "tag",
            ExpiryMode::Delete => "delete",
            ExpiryMode::None => "none",
        })
    }
}

impl FromStr for ExpiryMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "tag" => Ok(ExpiryMode::Tag),
            "delete" => Ok(ExpiryMode::Delete),
            "none" => Ok(ExpiryMode::None),
            other => Err(format!("expiry mode {other:?} is not known: use tag, delete or none")),
        }
    }
}

/// A configuration value that is wrong, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{name} is required: {hint}")]
    Missing { name: &'static str, hint: &'static str },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
    // The layout error is in the message and deliberately not a `#[source]`: printed with its
    // chain (`{:#}`, as the CLI does), it would say everything twice.
    #[error("{name}: {error}")]
    Layout { name: &'static str, error: LayoutError },
}

impl ConfigError {
    /// The setting the error is about (`COMPACTOR_GRACE`).
    pub fn name(&self) -> &'static str {
        match self {
            ConfigError::Missing { name, .. }
            | ConfigError::Invalid { name, .. }
            | ConfigError::Layout { name, .. } => name,
        }
    }

    /// The message with the setting called `given_as` (a flag such as `--grace`) instead of
    /// its variable: name what the user typed.
    pub fn message_naming(&self, given_as: &str) -> String {
        match self {
            ConfigError::Missing { hint, .. } => format!("{given_as} is required: {hint}"),
            ConfigError::Invalid { value, reason, .. } => format!("{given_as} {value:?} is invalid: {reason}"),
            ConfigError::Layout { error, .. } => format!("{given_as}: {error}"),
        }
    }
}

/// Everything the engine needs to know, validated once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source_bucket: String,
    pub source_prefix: String,
    pub dest_bucket: String,
    pub dest_prefix: String,
    pub layout: Layout,
    pub grace: Duration,
    pub target_output_bytes: u64,
    pub part_bytes: u64,
    pub small_object_max_bytes: u64,
    /// The format of every key: per prefix, else the default (`COMPACTOR_FORMAT`).
    pub formats: FormatRules,
    pub expiry: ExpiryMode,
    pub expiry_tag: Tag,
    /// How long a source's record outlives its expiry mark, where the manifest can expire
    /// records (DynamoDB's TTL); `None` keeps every record, the audit trail.
    pub record_ttl: Option<Duration>,
    pub read_concurrency: usize,
    pub read_ahead_bytes: u64,
    pub upload_concurrency: usize,
    /// Sources of at least this many bytes are copied server-side into their output's
    /// multipart upload when they can be (see `engine::writer`); `None`: copying is off.
    pub copy_min_bytes: Option<u64>,
    pub partition_concurrency: usize,
    pub lease: Duration,
}

/// The raw settings, as text, before validation: what flags and environment give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawConfig {
    pub source_bucket: Option<String>,
    pub source_prefix: Option<String>,
    pub dest_bucket: Option<String>,
    pub dest_prefix: Option<String>,
    pub layout: Option<String>,
    pub granularity: Option<String>,
    pub grace: Option<String>,
    pub target_output_bytes: Option<String>,
    pub part_bytes: Option<String>,
    pub small_object_max_bytes: Option<String>,
    pub format: Option<String>,
    pub formats: Option<String>,
    pub compress: Option<String>,
    pub parquet_row_groups: Option<String>,
    pub expiry: Option<String>,
    pub expiry_tag: Option<String>,
    pub record_ttl: Option<String>,
    pub read_concurrency: Option<String>,
    pub read_ahead_bytes: Option<String>,
    pub upload_concurrency: Option<String>,
    pub copy_min_bytes: Option<String>,
    pub partition_concurrency: Option<String>,
    pub lease: Option<String>,
}

impl RawConfig {
    /// Reads every `COMPACTOR_*` variable through `lookup` (the process environment in
    /// [`Config::from_env`]; a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        RawConfig {
            source_bucket: read("COMPACTOR_SOURCE_BUCKET"),
            source_prefix: read("COMPACTOR_SOURCE_PREFIX"),
            dest_bucket: read("COMPACTOR_DEST_BUCKET"),
            dest_prefix: read("COMPACTOR_DEST_PREFIX"),
            layout: read("COMPACTOR_LAYOUT"),
            granularity: read("COMPACTOR_GRANULARITY"),
            grace: read("COMPACTOR_GRACE"),
            target_output_bytes: read("COMPACTOR_TARGET_OUTPUT_BYTES"),
            part_bytes: read("COMPACTOR_PART_BYTES"),
            small_object_max_bytes: read("COMPACTOR_SMALL_OBJECT_MAX_BYTES"),
            format: read("COMPACTOR_FORMAT"),
            formats: read("COMPACTOR_FORMATS"),
            compress: read("COMPACTOR_COMPRESS"),
            parquet_row_groups: read("COMPACTOR_PARQUET_ROW_GROUPS"),
            expiry: read("COMPACTOR_EXPIRY"),
            expiry_tag: read("COMPACTOR_EXPIRY_TAG"),
            record_ttl: read("COMPACTOR_RECORD_TTL"),
            read_concurrency: read("COMPACTOR_READ_CONCURRENCY"),
            read_ahead_bytes: read("COMPACTOR_READ_AHEAD_BYTES"),
            upload_concurrency: read("COMPACTOR_UPLOAD_CONCURRENCY"),
            copy_min_bytes: read("COMPACTOR_COPY_MIN_BYTES"),
            partition_concurrency: read("COMPACTOR_PARTITION_CONCURRENCY"),
            lease: read("COMPACTOR_LEASE"),
        }
    }

    /// Checks every value and builds the [`Config`].
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let source_bucket = self.source_bucket.clone().ok_or(ConfigError::Missing {
            name: "COMPACTOR_SOURCE_BUCKET",
            hint: "name the bucket whose small objects are compacted",
        })?;
        check_bucket("COMPACTOR_SOURCE_BUCKET", &source_bucket)?;
        let dest_bucket = self.dest_bucket.clone().unwrap_or_else(|| source_bucket.clone());
        check_bucket("COMPACTOR_DEST_BUCKET", &dest_bucket)?;
        let source_prefix = self.source_prefix.clone().unwrap_or_default();
        let dest_prefix = normalize_prefix(self.dest_prefix.as_deref().unwrap_or("compacted/"));
        if dest_prefix.is_empty() && dest_bucket == source_bucket {
            return Err(ConfigError::Invalid {
                name: "COMPACTOR_DEST_PREFIX",
                value: String::new(),
                reason: "outputs in the source bucket need a prefix of their own (e.g. compacted/), \
                         or they would be compacted again"
                    .into(),
            });
        }
        let granularity = self
            .granularity
            .as_deref()
            .map(|text| {
                text.parse::<Granularity>()
                    .map_err(|error| ConfigError::Layout { name: "COMPACTOR_GRANULARITY", error })
            })
            .transpose()?;
        let layout = Layout::parse(self.layout.as_deref().unwrap_or("%Y/%m/%d"), granularity)
            .map_err(|error| ConfigError::Layout { name: "COMPACTOR_LAYOUT", error })?;
        let grace_text = self.grace.as_deref().unwrap_or("2h");
        let grace = at_most(
            "COMPACTOR_GRACE",
            grace_text,
            parse_duration("COMPACTOR_GRACE", grace_text)?,
            MAX_GRACE,
            "a partition would stay open over a year after its period ends: use at most 365d",
        )?;
        let lease_text = self.lease.as_deref().unwrap_or("15m");
        let lease = at_most(
            "COMPACTOR_LEASE",
            lease_text,
            parse_duration("COMPACTOR_LEASE", lease_text)?,
            MAX_LEASE,
            "a crashed seal would keep its partitions locked that long: use at most 1d (a live seal renews its lease)",
        )?;
        if lease < Duration::seconds(30) {
            return Err(invalid(
                "COMPACTOR_LEASE",
                self.lease.as_deref().unwrap_or(""),
                "a lease under 30s expires mid-output: use at least 1m",
            ));
        }
        let target_output_bytes =
            parse_bytes("COMPACTOR_TARGET_OUTPUT_BYTES", self.target_output_bytes.as_deref().unwrap_or("128MiB"))?;
        // Messages echo the text given (`1MiB`), not the number it parsed to.
        let part_bytes_text = self.part_bytes.as_deref().unwrap_or("8MiB");
        let part_bytes = parse_bytes("COMPACTOR_PART_BYTES", part_bytes_text)?;
        if !(MIN_PART_BYTES..=MAX_PART_BYTES).contains(&part_bytes) {
            return Err(invalid("COMPACTOR_PART_BYTES", part_bytes_text, "S3 parts are 5MiB to 5GiB"));
        }
        if target_output_bytes == 0 {
            return Err(invalid("COMPACTOR_TARGET_OUTPUT_BYTES", "0", "give a size such as 128MiB"));
        }
        let small_object_max_bytes =
            parse_bytes("COMPACTOR_SMALL_OBJECT_MAX_BYTES", self.small_object_max_bytes.as_deref().unwrap_or("64MiB"))?;
        if small_object_max_bytes.div_ceil(part_bytes).max(target_output_bytes.div_ceil(part_bytes)) + 1
            > u64::from(MAX_PARTS)
        {
            return Err(invalid(
                "COMPACTOR_PART_BYTES",
                part_bytes_text,
                "an output would need more than S3's 10,000 parts: raise the part size",
            ));
        }
        let format = match self.format.as_deref() {
            None => FormatMode::default(),
            Some(text) => text.parse().map_err(|reason: String| invalid("COMPACTOR_FORMAT", text, &reason))?,
        };
        let formats = match self.formats.as_deref() {
            None => FormatRules::uniform(format),
            Some(text) => {
                FormatRules::parse(format, text).map_err(|reason| invalid("COMPACTOR_FORMATS", text, &reason))?
            }
        };
        let formats = match self.compress.as_deref() {
            None => formats,
            Some(text) => formats
                .with_compression(text.parse().map_err(|reason: String| invalid("COMPACTOR_COMPRESS", text, &reason))?),
        };
        let formats = match self.parquet_row_groups.as_deref() {
            None => formats,
            Some(text) => formats.with_row_groups(
                text.parse().map_err(|reason: String| invalid("COMPACTOR_PARQUET_ROW_GROUPS", text, &reason))?,
            ),
        };
        let expiry = match self.expiry.as_deref() {
            None => ExpiryMode::default(),
            Some(text) => text.parse().map_err(|reason: String| invalid("COMPACTOR_EXPIRY", text, &reason))?,
        };
        let expiry_tag_text = self.expiry_tag.as_deref().unwrap_or("compacted=true");
        let expiry_tag = match expiry_tag_text.split_once('=') {
            Some((key, value)) if !key.is_empty() && key.len() <= 128 && value.len() <= 256 => Tag::new(key, value),
            _ => {
                return Err(invalid(
                    "COMPACTOR_EXPIRY_TAG",
                    expiry_tag_text,
                    "give key=value (key up to 128 characters, value up to 256)",
                ))
            }
        };
        let record_ttl = match self.record_ttl.as_deref() {
            None => None,
            Some(text) => {
                let record_ttl = at_most(
                    "COMPACTOR_RECORD_TTL",
                    text,
                    parse_duration("COMPACTOR_RECORD_TTL", text)?,
                    MAX_RECORD_TTL,
                    "use at most 3650d (ten years), or unset COMPACTOR_RECORD_TTL to keep every record",
                )?;
                if record_ttl < MIN_RECORD_TTL {
                    return Err(invalid(
                        "COMPACTOR_RECORD_TTL",
                        text,
                        "a record must outlive every replayed event and backfill scan of its source, and in tag \
                         mode the tagged source itself, or the source could be compacted twice: use at least 30d, \
                         and more than the lifecycle rule keeps tagged sources",
                    ));
                }
                if expiry == ExpiryMode::None {
                    return Err(invalid(
                        "COMPACTOR_RECORD_TTL",
                        text,
                        "with COMPACTOR_EXPIRY=none no source is ever marked for expiry, so no record would expire: \
                         unset COMPACTOR_RECORD_TTL, or use COMPACTOR_EXPIRY=tag or delete",
                    ));
                }
                Some(record_ttl)
            }
        };
        let read_concurrency = parse_count("COMPACTOR_READ_CONCURRENCY", self.read_concurrency.as_deref(), 32)?;
        let read_ahead_bytes =
            parse_bytes("COMPACTOR_READ_AHEAD_BYTES", self.read_ahead_bytes.as_deref().unwrap_or("64MiB"))?;
        if read_ahead_bytes == 0 {
            return Err(invalid("COMPACTOR_READ_AHEAD_BYTES", "0", "give a size such as 64MiB"));
        }
        let upload_concurrency = parse_count("COMPACTOR_UPLOAD_CONCURRENCY", self.upload_concurrency.as_deref(), 4)?;
        let copy_min_bytes = parse_copy_min_bytes(self.copy_min_bytes.as_deref())?;
        if copy_min_bytes.is_some() {
            // A copied source is a part of its own, and a part may then be as small as S3's
            // minimum rather than `part_bytes`: the 10,000-part limit must hold for that too.
            let largest_output_bytes = small_object_max_bytes.max(target_output_bytes);
            if largest_output_bytes.div_ceil(MIN_PART_BYTES) + 1 > u64::from(MAX_PARTS) {
                return Err(invalid(
                    "COMPACTOR_COPY_MIN_BYTES",
                    self.copy_min_bytes.as_deref().unwrap_or("5MiB"),
                    "with server-side copies an output's parts may be as small as 5MiB, and an output would need \
                     more than S3's 10,000 parts: lower the target output size, or turn copying off",
                ));
            }
        }
        let partition_concurrency =
            parse_count("COMPACTOR_PARTITION_CONCURRENCY", self.partition_concurrency.as_deref(), 4)?;
        Ok(Config {
            source_bucket,
            source_prefix,
            dest_bucket,
            dest_prefix,
            layout,
            grace,
            target_output_bytes,
            part_bytes,
            small_object_max_bytes,
            formats,
            expiry,
            expiry_tag,
            record_ttl,
            read_concurrency,
            read_ahead_bytes,
            upload_concurrency,
            copy_min_bytes,
            partition_concurrency,
            lease,
        })
    }
}

impl Config {
    /// Reads and validates the `COMPACTOR_*` environment variables.
    pub fn from_env() -> Result<Config, ConfigError> {
        RawConfig::from_lookup(|name| std::env::var(name).ok()).validate()
    }

    /// The defaults, for a source bucket of the embedded backend.
    pub fn embedded_default(source_bucket: &str) -> Config {
        RawConfig { source_bucket: Some(source_bucket.to_string()), ..Default::default() }
            .validate()
            .expect("the defaults are valid")
    }

    pub fn plan_settings(&self) -> PlanSettings {
        PlanSettings {
            dest_prefix: self.dest_prefix.clone(),
            target_output_bytes: self.target_output_bytes,
            formats: self.formats.clone(),
        }
    }

    /// True for keys the compactor wrote itself: never ingested again.
    pub fn is_under_destination(&self, bucket: &str, key: &str) -> bool {
        bucket == self.dest_bucket && key.starts_with(&self.dest_prefix)
    }
}

fn invalid(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid { name, value: value.to_string(), reason: reason.to_string() }
}

fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

fn check_bucket(name: &'static str, bucket: &str) -> Result<(), ConfigError> {
    let valid_characters = bucket
        .chars()
        .all(|character| character.is_ascii_lowercase() || character.is_ascii_digit() || "-.".contains(character));
    if (3..=63).contains(&bucket.len()) && valid_characters && !bucket.starts_with(['-', '.']) {
        Ok(())
    } else {
        Err(invalid(name, bucket, "a bucket name is 3-63 characters of lowercase letters, digits, '-' and '.'"))
    }
}

fn parse_count(name: &'static str, text: Option<&str>, default: usize) -> Result<usize, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(count) if (1..=1024).contains(&count) => Ok(count),
            _ => Err(invalid(name, text, "give a whole number from 1 to 1024")),
        },
    }
}

/// `COMPACTOR_COPY_MIN_BYTES`: a size from S3's smallest part to its largest, or `off`.
fn parse_copy_min_bytes(text: Option<&str>) -> Result<Option<u64>, ConfigError> {
    const NAME: &str = "COMPACTOR_COPY_MIN_BYTES";
    let Some(text) = text else { return Ok(Some(MIN_PART_BYTES)) };
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let copy_min_bytes = parse_bytes(NAME, text).map_err(|_| {
        invalid(NAME, text, "give a size of 5MiB or more (such as 8MiB), or off to stream every source")
    })?;
    if copy_min_bytes < MIN_PART_BYTES {
        return Err(invalid(
            NAME,
            text,
            "a copied source becomes a part of its own, and S3 parts (all but the last) are at least 5MiB: \
             give 5MiB or more, or off",
        ));
    }
    if copy_min_bytes > MAX_PART_BYTES {
        return Err(invalid(
            NAME,
            text,
            "S3 parts are at most 5GiB, so nothing that large is copied: give 5MiB to 5GiB, or off",
        ));
    }
    Ok(Some(copy_min_bytes))
}

/// Parses sizes such as `128MiB`, `8MB`, `64k`, `1048576`. Binary and decimal units are both
/// accepted because both are common; `MiB` and `MB` differ by 5%.
pub fn parse_bytes(name: &'static str, text: &str) -> Result<u64, ConfigError> {
    let trimmed = text.trim();
    let split_at = trimmed.find(|character: char| !character.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split_at);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => return Err(invalid(name, text, "give a size such as 8MiB, 500KB or 1048576")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(multiplier))
        .ok_or_else(|| invalid(name, text, "give a size such as 8MiB, 500KB or 1048576"))
}

/// Parses durations such as `90s`, `15m`, `2h`, `1d`, `1h30m`. The arithmetic is checked: a
/// count too large for any duration is an error, never a panic (chrono's constructors panic out
/// of range). Each variable bounds its own range on top of this.
pub fn parse_duration(name: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let error = || invalid(name, text, "give a duration such as 90s, 15m, 2h, 1d or 1h30m");
    let too_long = || invalid(name, text, "that duration is out of range: give one such as 90s, 15m, 2h, 1d or 1h30m");
    let mut total_seconds: i64 = 0;
    let mut digits = String::new();
    let mut any_unit = false;
    for character in text.trim().chars() {
        if character.is_ascii_digit() {
            digits.push(character);
            continue;
        }
        let count: i64 = match digits.parse() {
            Ok(count) => count,
            // Only digits are collected: a parse error here is an empty count or an overflow.
            Err(_) if digits.is_empty() => return Err(error()),
            Err(_) => return Err(too_long()),
        };
        digits.clear();
        let unit_seconds: i64 = match character {
            's' => 1,
            'm' => 60,
            'h' => 60 * 60,
            'd' => 24 * 60 * 60,
            _ => return Err(error()),
        };
        total_seconds = count
            .checked_mul(unit_seconds)
            .and_then(|seconds| total_seconds.checked_add(seconds))
            .ok_or_else(too_long)?;
        any_unit = true;
    }
    if !digits.is_empty() || !any_unit {
        return Err(error());
    }
    Duration::try_seconds(total_seconds).ok_or_else(too_long)
}

/// `duration` if it is at most `max`; else an error that gives `reason`.
fn at_most(
    name: &'static str,
    text: &str,
    duration: Duration,
    max: Duration,
    reason: &str,
) -> Result<Duration, ConfigError> {
    if duration > max {
        Err(invalid(name, text, reason))
    } else {
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        RawConfig::from_lookup(|name| map.get(name).cloned()).validate()
    }

    #[test]
    fn defaults_need_only_a_source_bucket() {
        let config = from(&[("COMPACTOR_SOURCE_BUCKET", "my-logs")]).unwrap();
        assert_eq!(config.dest_bucket, "my-logs");
        assert_eq!(config.dest_prefix, "compacted/");
        assert_eq!(config.layout.as_str(), "%Y/%m/%d");
        assert_eq!(config.grace, Duration::hours(2));
        assert_eq!(config.target_output_bytes, 128 << 20);
        assert_eq!(config.part_bytes, 8 << 20);
        assert_eq!(config.expiry, ExpiryMode::Tag);
        assert_eq!(config.expiry_tag, Tag::new("compacted", "true"));
        assert_eq!(config.record_ttl, None, "records are kept unless asked");
        assert!(config.is_under_destination("my-logs", "compacted/x/2024/01/01/a"));
        assert!(!config.is_under_destination("other", "compacted/x"));
    }

    #[test]
    fn every_bad_value_names_its_variable_and_what_it_expects() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "COMPACTOR_SOURCE_BUCKET is required"),
            (&[("COMPACTOR_SOURCE_BUCKET", "My_Logs")], "COMPACTOR_SOURCE_BUCKET=\"My_Logs\" is invalid"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_DEST_PREFIX", "/")], "need a prefix of their own"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_LAYOUT", "%Y/%m")], "COMPACTOR_LAYOUT: layout"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_GRACE", "2 hours")], "COMPACTOR_GRACE=\"2 hours\""),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_PART_BYTES", "1MiB")], "5MiB to 5GiB"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_TARGET_OUTPUT_BYTES", "lots")], "such as 8MiB"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_EXPIRY", "archive")], "use tag, delete or none"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_EXPIRY_TAG", "compacted")], "give key=value"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_READ_CONCURRENCY", "0")], "from 1 to 1024"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_LEASE", "5s")], "at least 1m"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_GRANULARITY", "week")], "use day or hour"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_COPY_MIN_BYTES", "1MiB")], "give 5MiB or more, or off"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_COPY_MIN_BYTES", "no")], "or off to stream every"),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_COPY_MIN_BYTES", "6GiB")], "at most 5GiB"),
            (
                &[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_TARGET_OUTPUT_BYTES", "60GiB")],
                "COMPACTOR_COPY_MIN_BYTES=\"5MiB\" is invalid: with server-side copies",
            ),
            (
                &[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_RECORD_TTL", "400 days")],
                "COMPACTOR_RECORD_TTL=\"400 days\"",
            ),
            (&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_RECORD_TTL", "7d")], "use at least 30d"),
            (
                &[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_RECORD_TTL", "400d"), ("COMPACTOR_EXPIRY", "none")],
                "unset COMPACTOR_RECORD_TTL, or use COMPACTOR_EXPIRY=tag or delete",
            ),
        ];
        for (pairs, expected) in cases {
            let message = from(pairs).unwrap_err().to_string();
            assert!(message.contains(expected), "{pairs:?}: {message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn copying_is_on_from_5_mib_unless_turned_off() {
        let config = from(&[("COMPACTOR_SOURCE_BUCKET", "logs")]).unwrap();
        assert_eq!(config.copy_min_bytes, Some(5 << 20));
        let config = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_COPY_MIN_BYTES", "16MiB")]).unwrap();
        assert_eq!(config.copy_min_bytes, Some(16 << 20));
        let config = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_COPY_MIN_BYTES", "off")]).unwrap();
        assert_eq!(config.copy_min_bytes, None);
        // Without copies, parts are `part_bytes` each, so a large target is fine.
        let pairs = [
            ("COMPACTOR_SOURCE_BUCKET", "logs"),
            ("COMPACTOR_TARGET_OUTPUT_BYTES", "60GiB"),
            ("COMPACTOR_PART_BYTES", "64MiB"),
            ("COMPACTOR_COPY_MIN_BYTES", "off"),
        ];
        assert!(from(&pairs).is_ok());
        let pairs = [
            ("COMPACTOR_SOURCE_BUCKET", "logs"),
            ("COMPACTOR_TARGET_OUTPUT_BYTES", "60GiB"),
            ("COMPACTOR_PART_BYTES", "64MiB"),
            ("COMPACTOR_COPY_MIN_BYTES", "8MiB"),
        ];
        assert!(from(&pairs).unwrap_err().to_string().contains("more than S3's 10,000 parts"));
    }

    #[test]
    fn sizes_and_durations_parse_in_common_units() {
        assert_eq!(parse_bytes("X", "128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_bytes("X", "500KB").unwrap(), 500_000);
        assert_eq!(parse_bytes("X", "42").unwrap(), 42);
        assert!(parse_bytes("X", "-1").is_err());
        assert_eq!(parse_duration("X", "1h30m").unwrap(), Duration::minutes(90));
        assert_eq!(parse_duration("X", "1d").unwrap(), Duration::days(1));
        assert!(parse_duration("X", "15").is_err());
    }

    #[test]
    fn formats_per_prefix_fall_back_to_the_global_format_and_bad_ones_name_their_setting() {
        let config = from(&[
            ("COMPACTOR_SOURCE_BUCKET", "logs"),
            ("COMPACTOR_FORMAT", "bytes"),
            ("COMPACTOR_FORMATS", "AWSLogs/=cloudtrail"),
        ])
        .unwrap();
        assert_eq!(config.formats.choose("AWSLogs/x.json.gz").mode, FormatMode::Cloudtrail);
        assert_eq!(config.formats.choose("other/x.json").mode, FormatMode::Bytes);
        let error = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_FORMATS", "AWSLogs/=csvv")]).unwrap_err();
        assert_eq!(error.name(), "COMPACTOR_FORMATS");
        assert!(error.to_string().contains("use auto, concat, bytes, cloudtrail, csv, ndjson or parquet"), "{error}");
        let error = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_FORMAT", "parquet!")]).unwrap_err();
        assert_eq!(error.name(), "COMPACTOR_FORMAT");
        let config = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_COMPRESS", "zstd")]).unwrap();
        assert_eq!(config.formats.choose("a/x.json").compression, crate::domain::format::Compression::Zstd);
        let rewrite =
            from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_PARQUET_ROW_GROUPS", "rewrite")]).unwrap();
        assert_eq!(rewrite.formats.choose("a/x.parquet").row_groups, crate::domain::format::ParquetRowGroups::Rewrite);
        let bad = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_PARQUET_ROW_GROUPS", "merge")]).unwrap_err();
        assert_eq!(bad.name(), "COMPACTOR_PARQUET_ROW_GROUPS");
        let error = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_COMPRESS", "lz4")]).unwrap_err();
        assert_eq!(error.name(), "COMPACTOR_COMPRESS");
        assert!(error.to_string().contains("use zstd, gzip or none"), "{error}");
    }

    #[test]
    fn a_record_ttl_is_a_duration_of_at_least_30_days() {
        let config = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_RECORD_TTL", "400d")]).unwrap();
        assert_eq!(config.record_ttl, Some(Duration::days(400)));
        let config = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_RECORD_TTL", "30d")]).unwrap();
        assert_eq!(config.record_ttl, Some(MIN_RECORD_TTL));
    }

    /// Issue 10: `999999999999999d` panicked in chrono's `Duration::days`, and `100000000000d`
    /// passed validation and then panicked in `Period::closes_at` on every ingest.
    #[test]
    fn huge_durations_are_refused_with_a_message_instead_of_panicking() {
        for (name, huge) in [
            ("COMPACTOR_GRACE", "999999999999999d"),
            ("COMPACTOR_GRACE", "100000000000d"),
            ("COMPACTOR_GRACE", "99999999999999999999999s"),
            ("COMPACTOR_GRACE", "9223372036854775807s1s"),
            ("COMPACTOR_LEASE", "100000000000d"),
            ("COMPACTOR_RECORD_TTL", "100000000000d"),
        ] {
            let error = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), (name, huge)]).unwrap_err();
            let message = error.to_string();
            assert!(message.starts_with(&format!("{name}=")), "{message}");
            assert!(message.contains("at most") || message.contains("out of range"), "{message}");
        }
    }

    #[test]
    fn durations_are_bounded_to_sane_ranges() {
        let with = |name: &str, value: &str| from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), (name, value)]);
        assert_eq!(with("COMPACTOR_GRACE", "365d").unwrap().grace, MAX_GRACE);
        assert!(with("COMPACTOR_GRACE", "366d").unwrap_err().to_string().contains("use at most 365d"));
        assert_eq!(with("COMPACTOR_GRACE", "0s").unwrap().grace, Duration::zero());
        assert_eq!(with("COMPACTOR_LEASE", "1d").unwrap().lease, MAX_LEASE);
        assert!(with("COMPACTOR_LEASE", "1d1s").unwrap_err().to_string().contains("use at most 1d"));
        assert_eq!(with("COMPACTOR_RECORD_TTL", "3650d").unwrap().record_ttl, Some(MAX_RECORD_TTL));
        assert!(with("COMPACTOR_RECORD_TTL", "3651d").unwrap_err().to_string().contains("use at most 3650d"));
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let config = from(&[("COMPACTOR_SOURCE_BUCKET", "logs"), ("COMPACTOR_DEST_BUCKET", " ")]).unwrap();
        assert_eq!(config.dest_bucket, "logs");
    }
}
