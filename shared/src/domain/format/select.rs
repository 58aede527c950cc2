//! Which format a source gets: a format per source prefix (`COMPACTOR_FORMATS`), the global
//! default (`COMPACTOR_FORMAT`) for the rest, and `auto` deciding by the key's name. Its
//! compression likewise: a rule's `:zstd` suffix (`logs/=ndjson:zstd`), else
//! `COMPACTOR_COMPRESS`. A Parquet rule's suffix is instead what becomes of its row groups
//! (`tables/=parquet:rewrite`), else `COMPACTOR_PARQUET_ROW_GROUPS`.
//!
//! The choice is a pure function of the key and the rules, so the planner, the seal's window
//! and ingest all agree on it without storing it per source, and `plan` can say why.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::compress::Compression;

/// How the operator wants sources joined. `auto` resolves, per key, to one of the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatMode {
    /// Decide per key from its name (the default): `parquet` for `.parquet` keys, `cloudtrail`
    /// for CloudTrail log files (`.json.gz` under `AWSLogs/<account>/CloudTrail/`, see
    /// [`super::cloudtrail::named_as_cloudtrail`]), `concat` for every other key that is not
    /// refused.
    #[default]
    Auto,
    /// Byte concatenation, newline-safe for line files and for gzip sources (see the module
    /// doc of [`super`]).
    Concat,
    /// Plain byte concatenation for every key: no separators at all.
    Bytes,
    /// Gzip `{"Records":[...]}` documents in, gzip NDJSON out, one event per line.
    Cloudtrail,
    /// Plain CSV with one header per output: each source's header line is left out of its
    /// range and the output starts with the header they share.
    Csv,
    /// Plain JSON lines; a line that is not JSON is set aside in a side file next to the output.
    Ndjson,
    /// Parquet files merged by their column chunks, copied without decoding (`auto` picks it
    /// for `.parquet` keys).
    Parquet,
}

impl FormatMode {
    /// Every mode, as its text, for messages.
    pub const NAMES: &'static str = "auto, concat, bytes, cloudtrail, csv, ndjson or parquet";

    pub fn as_str(self) -> &'static str {
        match self {
            FormatMode::Auto => "auto",
            FormatMode::Concat => "concat",
            FormatMode::Bytes => "bytes",
            FormatMode::Cloudtrail => "cloudtrail",
            FormatMode::Csv => "csv",
            FormatMode::Ndjson => "ndjson",
            FormatMode::Parquet => "parquet",
        }
    }
}

impl fmt::Display for FormatMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FormatMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "auto" => Ok(FormatMode::Auto),
            "concat" => Ok(FormatMode::Concat),
            "bytes" => Ok(FormatMode::Bytes),
            "cloudtrail" => Ok(FormatMode::Cloudtrail),
            "csv" => Ok(FormatMode::Csv),
            "ndjson" => Ok(FormatMode::Ndjson),
            "parquet" => Ok(FormatMode::Parquet),
            other => Err(format!("format {other:?} is not known: use {}", FormatMode::NAMES)),
        }
    }
}

/// What becomes of Parquet sources' row groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParquetRowGroups {
    /// Each source row group is an output row group, its column chunks copied without
    /// decoding (the default: the seal costs I/O, not CPU, and each source keeps a byte range).
    #[default]
    Copy,
    /// Small row groups are decoded and re-encoded into large ones (see `crate::parquet::rows`).
    Rewrite,
}

impl ParquetRowGroups {
    pub const NAMES: &'static str = "copy or rewrite";

    pub fn as_str(self) -> &'static str {
        match self {
            ParquetRowGroups::Copy => "copy",
            ParquetRowGroups::Rewrite => "rewrite",
        }
    }
}

impl fmt::Display for ParquetRowGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ParquetRowGroups {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "copy" => Ok(ParquetRowGroups::Copy),
            "rewrite" => Ok(ParquetRowGroups::Rewrite),
            other => Err(format!("Parquet row groups {other:?} is not known: use {}", ParquetRowGroups::NAMES)),
        }
    }
}

/// A prefix's rule: its mode, and its suffix if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PrefixRule {
    prefix: String,
    mode: FormatMode,
    compression: Option<Compression>,
    row_groups: Option<ParquetRowGroups>,
}

/// The format of every source: per prefix where one matches (the longest), else the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatRules {
    pub default: FormatMode,
    /// The compression of keys whose rule names none (`COMPACTOR_COMPRESS`).
    pub compression: Compression,
    /// What becomes of the row groups of Parquet keys whose rule says nothing
    /// (`COMPACTOR_PARQUET_ROW_GROUPS`).
    pub row_groups: ParquetRowGroups,
    /// Longest prefix first, so the first match is the most specific; a rule without
    /// compression takes [`FormatRules::compression`], one without row groups
    /// [`FormatRules::row_groups`].
    by_prefix: Vec<PrefixRule>,
}

/// Why a key got its format, for `plan` and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum FormatReason {
    /// A `COMPACTOR_FORMATS` rule for this prefix.
    Prefix { prefix: String },
    /// No prefix rule matched: `COMPACTOR_FORMAT`.
    Default,
}

/// A key's format mode and why (the mode may still be `auto`, resolved by name in
/// [`super::classify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatChoice {
    pub mode: FormatMode,
    pub reason: FormatReason,
    /// The compression wanted for the key's outputs (a format that cannot take it, or a source
    /// already compressed by name, is not compressed: see [`super::classify`]).
    pub compression: Compression,
    /// The compression came from the prefix's rule, not from `COMPACTOR_COMPRESS`.
    pub compression_by_rule: bool,
    /// What becomes of its row groups, if it is Parquet.
    pub row_groups: ParquetRowGroups,
    /// The row groups came from the prefix's rule (`parquet:rewrite`).
    pub row_groups_by_rule: bool,
}

impl fmt::Display for FormatChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            FormatReason::Prefix { prefix } => write!(f, "COMPACTOR_FORMATS {prefix}={}", self.mode)?,
            FormatReason::Default => write!(f, "COMPACTOR_FORMAT={}", self.mode)?,
        }
        match (self.compression_by_rule, self.compression) {
            (true, compression) => write!(f, ":{compression}")?,
            (false, Compression::None) => {}
            (false, compression) => write!(f, ", COMPACTOR_COMPRESS={compression}")?,
        }
        let parquet = matches!(self.mode, FormatMode::Parquet | FormatMode::Auto);
        match (self.row_groups_by_rule, self.row_groups) {
            (true, row_groups) => write!(f, ":{row_groups}"),
            (false, ParquetRowGroups::Rewrite) if parquet => write!(f, ", COMPACTOR_PARQUET_ROW_GROUPS=rewrite"),
            (false, _) => Ok(()),
        }
    }
}

impl FormatRules {
    /// One mode for every key.
    pub fn uniform(mode: FormatMode) -> Self {
        FormatRules {
            default: mode,
            compression: Compression::None,
            row_groups: ParquetRowGroups::Copy,
            by_prefix: Vec::new(),
        }
    }

    /// The same rules, `compression` for every key whose rule names none.
    pub fn with_compression(self, compression: Compression) -> Self {
        FormatRules { compression, ..self }
    }

    /// The same rules, `row_groups` for every Parquet key whose rule names none.
    pub fn with_row_groups(self, row_groups: ParquetRowGroups) -> Self {
        FormatRules { row_groups, ..self }
    }

    /// Parses `COMPACTOR_FORMATS`: comma-separated `prefix=format` pairs (`trail/=cloudtrail,
    /// tables/=csv`), each format optionally with its compression (`logs/=ndjson:zstd`), or
    /// for `parquet` what becomes of its row groups (`tables/=parquet:rewrite`).
    /// Errors say which pair is wrong and how to write it.
    pub fn parse(default: FormatMode, by_prefix: &str) -> Result<Self, String> {
        let mut rules: Vec<PrefixRule> = Vec::new();
        for pair in by_prefix.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let Some((prefix, mode)) = pair.split_once('=') else {
                return Err(format!("{pair:?} is not prefix=format (for example trail/=cloudtrail)"));
            };
            let prefix = prefix.trim().trim_start_matches('/');
            if prefix.is_empty() {
                return Err(format!(
                    "{pair:?} has no prefix: set the format of every other key with COMPACTOR_FORMAT instead"
                ));
            }
            let (mode, suffix) = match mode.split_once(':') {
                Some((mode, suffix)) => (mode, Some(suffix)),
                None => (mode, None),
            };
            let mode: FormatMode = mode.parse()?;
            // Parquet compresses its own pages: its suffix says what becomes of its row groups.
            let (compression, row_groups) = match suffix {
                Some(suffix) if mode == FormatMode::Parquet => (None, Some(suffix.parse::<ParquetRowGroups>()?)),
                Some(suffix) => (Some(suffix.parse::<Compression>()?), None),
                None => (None, None),
            };
            if rules.iter().any(|known| known.prefix == prefix) {
                return Err(format!("prefix {prefix:?} is given twice: keep one format per prefix"));
            }
            rules.push(PrefixRule { prefix: prefix.to_string(), mode, compression, row_groups });
        }
        rules.sort_by(|left, right| {
            right.prefix.len().cmp(&left.prefix.len()).then_with(|| left.prefix.cmp(&right.prefix))
        });
        Ok(FormatRules {
            default,
            compression: Compression::None,
            row_groups: ParquetRowGroups::Copy,
            by_prefix: rules,
        })
    }

    /// The mode of `key`, its compression, and why.
    pub fn choose(&self, key: &str) -> FormatChoice {
        match self.by_prefix.iter().find(|rule| key.starts_with(rule.prefix.as_str())) {
            Some(rule) => FormatChoice {
                mode: rule.mode,
                reason: FormatReason::Prefix { prefix: rule.prefix.clone() },
                compression: rule.compression.unwrap_or(self.compression),
                compression_by_rule: rule.compression.is_some(),
                row_groups: rule.row_groups.unwrap_or(self.row_groups),
                row_groups_by_rule: rule.row_groups.is_some(),
            },
            None => FormatChoice {
                mode: self.default,
                reason: FormatReason::Default,
                compression: self.compression,
                compression_by_rule: false,
                row_groups: self.row_groups,
                row_groups_by_rule: false,
            },
        }
    }

    /// The rules as `COMPACTOR_FORMATS` text (parses back to the same rules).
    pub fn by_prefix_text(&self) -> String {
        self.by_prefix
            .iter()
            .map(|rule| match (rule.compression, rule.row_groups) {
                (Some(compression), _) => format!("{}={}:{compression}", rule.prefix, rule.mode),
                (None, Some(row_groups)) => format!("{}={}:{row_groups}", rule.prefix, rule.mode),
                (None, None) => format!("{}={}", rule.prefix, rule.mode),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_matching_prefix_wins_and_other_keys_take_the_default() {
        let rules = FormatRules::parse(FormatMode::Bytes, " trail/=cloudtrail, trail/raw/=concat , lines/=ndjson:zstd")
            .unwrap();
        assert_eq!(rules.choose("trail/2024/a.json.gz").mode, FormatMode::Cloudtrail);
        assert_eq!(rules.choose("trail/raw/a.json.gz").mode, FormatMode::Concat);
        assert_eq!(rules.choose("logs/a.json").mode, FormatMode::Bytes);
        assert_eq!(rules.choose("logs/a.json").to_string(), "COMPACTOR_FORMAT=bytes");
        assert_eq!(rules.choose("trail/raw/x").to_string(), "COMPACTOR_FORMATS trail/raw/=concat");
        assert_eq!(FormatRules::parse(FormatMode::Auto, &rules.by_prefix_text()).unwrap().by_prefix, rules.by_prefix);
    }

    #[test]
    fn a_rule_s_compression_wins_over_compactor_compress() {
        let rules = FormatRules::parse(FormatMode::Auto, "logs/=ndjson:zstd,raw/=bytes:none,tables/=csv")
            .unwrap()
            .with_compression(Compression::Gzip);
        let choice = rules.choose("logs/a.json");
        assert_eq!((choice.mode, choice.compression), (FormatMode::Ndjson, Compression::Zstd));
        assert_eq!(choice.to_string(), "COMPACTOR_FORMATS logs/=ndjson:zstd");
        assert_eq!(rules.choose("raw/a").compression, Compression::None, "a rule may turn it off");
        assert_eq!(rules.choose("tables/a.csv").compression, Compression::Gzip, "no suffix: COMPACTOR_COMPRESS");
        assert_eq!(rules.choose("tables/a.csv").to_string(), "COMPACTOR_FORMATS tables/=csv, COMPACTOR_COMPRESS=gzip");
        assert_eq!(rules.choose("other/a.csv").to_string(), "COMPACTOR_FORMAT=auto, COMPACTOR_COMPRESS=gzip");
        assert_eq!(rules.by_prefix_text(), "tables/=csv,logs/=ndjson:zstd,raw/=bytes:none");
        let error = FormatRules::parse(FormatMode::Auto, "logs/=ndjson:lz4").unwrap_err();
        assert!(error.contains("zstd, gzip or none"), "{error}");
    }

    #[test]
    fn a_parquet_rule_s_suffix_says_what_becomes_of_its_row_groups() {
        let rules = FormatRules::parse(FormatMode::Auto, "tables/=parquet:rewrite,raw/=parquet,logs/=ndjson:zstd")
            .unwrap()
            .with_row_groups(ParquetRowGroups::Copy);
        let rewrite = rules.choose("tables/a.parquet");
        assert_eq!((rewrite.row_groups, rewrite.compression), (ParquetRowGroups::Rewrite, Compression::None));
        assert_eq!(rewrite.to_string(), "COMPACTOR_FORMATS tables/=parquet:rewrite");
        assert_eq!(rules.choose("raw/a.parquet").row_groups, ParquetRowGroups::Copy);
        let global = rules.clone().with_row_groups(ParquetRowGroups::Rewrite);
        assert_eq!(global.choose("raw/a.parquet").row_groups, ParquetRowGroups::Rewrite);
        assert_eq!(
            global.choose("x/a.parquet").to_string(),
            "COMPACTOR_FORMAT=auto, COMPACTOR_PARQUET_ROW_GROUPS=rewrite"
        );
        assert_eq!(FormatRules::parse(FormatMode::Auto, &rules.by_prefix_text()).unwrap().by_prefix, rules.by_prefix);
        let error = FormatRules::parse(FormatMode::Auto, "t/=parquet:zstd").unwrap_err();
        assert!(error.contains("copy or rewrite"), "{error}");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let error = |text: &str| FormatRules::parse(FormatMode::Auto, text).unwrap_err();
        assert!(error("trail/").contains("prefix=format"), "{}", error("trail/"));
        assert!(error("=cloudtrail").contains("COMPACTOR_FORMAT"), "{}", error("=cloudtrail"));
        assert!(
            error("a/=parket").contains("auto, concat, bytes, cloudtrail, csv, ndjson or parquet"),
            "{}",
            error("a/=parket")
        );
        assert!(error("a/=bytes,a/=concat").contains("twice"), "{}", error("a/=bytes,a/=concat"));
    }

    #[test]
    fn modes_print_and_parse_back() {
        for mode in [
            FormatMode::Auto,
            FormatMode::Concat,
            FormatMode::Bytes,
            FormatMode::Cloudtrail,
            FormatMode::Csv,
            FormatMode::Ndjson,
            FormatMode::Parquet,
        ] {
            assert_eq!(mode.to_string().parse::<FormatMode>().unwrap(), mode);
        }
    }
}
