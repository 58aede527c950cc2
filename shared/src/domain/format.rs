//! How sources are joined into an output.
//!
//! Byte concatenation is the base: every source stays recoverable by its byte range. On top:
//! - line formats (JSON, NDJSON, CSV, logs, text) get a `\n` after a source that lacks one, so
//!   the last record of one file never runs into the first of the next; the inserted byte is
//!   recorded as the source's separator and is not part of its range, so restore stays exact;
//! - gzip sources are concatenated as they are: concatenated gzip members are one valid gzip
//!   stream (RFC 1952 §2.2), and its decompressed text is the files' texts in order;
//! - formats whose files cannot be joined by concatenation (Parquet, ORC, Avro containers, zip)
//!   are refused at ingest, so they stay where they are, logged and counted.
//!
//! Sources of different classes never share an output: each class gets outputs of its own,
//! with a file extension that says what is inside.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the operator wants sources joined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatMode {
    /// Decide per key from its extension (the default).
    #[default]
    Auto,
    /// Plain byte concatenation for every key: no separators at all.
    Bytes,
}

impl fmt::Display for FormatMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FormatMode::Auto => "auto",
            FormatMode::Bytes => "bytes",
        })
    }
}

impl FromStr for FormatMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(FormatMode::Auto),
            "bytes" => Ok(FormatMode::Bytes),
            other => Err(format!("format {other:?} is not known: use auto or bytes")),
        }
    }
}

/// What a source is, as far as joining goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FormatClass {
    /// The extension outputs of this class get, with its leading dot (`.json.gz`), or empty.
    pub extension: String,
    /// Whether a `\n` goes after a source that does not end with one.
    pub newline_separated: bool,
}

impl FormatClass {
    /// True when every source's bytes reach the output exactly as stored, with at most a
    /// separator after them: then a source can become a part of its output by server-side copy
    /// (`UploadPartCopy`), and restore by byte range gives it back. Every class today joins by
    /// concatenation; a format-aware mode that rewrites sources (CloudTrail `{"Records":[...]}`
    /// to NDJSON, CSV with one header) must answer false, or copies would skip its rewriting.
    pub fn keeps_source_bytes(&self) -> bool {
        true
    }
}

/// Why a format is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotConcatenable;

const LINE_EXTENSIONS: &[&str] = &["json", "ndjson", "jsonl", "csv", "tsv", "log", "txt", "text"];
const GZIP_EXTENSIONS: &[&str] = &["gz", "gzip"];
const REFUSED_EXTENSIONS: &[&str] = &["parquet", "orc", "avro", "zip", "7z", "tar", "jar"];

/// The class of a key, or [`NotConcatenable`] for formats that byte concatenation would break.
pub fn classify(key: &str, mode: FormatMode) -> Result<FormatClass, NotConcatenable> {
    let file_name = key.rsplit('/').next().unwrap_or(key);
    let lowercase = file_name.to_ascii_lowercase();
    let mut dotted = lowercase.split('.').skip(1).collect::<Vec<_>>();
    let last = dotted.last().copied().unwrap_or("");
    if REFUSED_EXTENSIONS.contains(&last) {
        return Err(NotConcatenable);
    }
    if mode == FormatMode::Bytes {
        return Ok(FormatClass { extension: String::new(), newline_separated: false });
    }
    if GZIP_EXTENSIONS.contains(&last) {
        dotted.pop();
        let inner = dotted.last().filter(|inner| LINE_EXTENSIONS.contains(inner));
        let extension = match inner {
            Some(inner) => format!(".{inner}.gz"),
            None => ".gz".to_string(),
        };
        return Ok(FormatClass { extension, newline_separated: false });
    }
    if LINE_EXTENSIONS.contains(&last) {
        return Ok(FormatClass { extension: format!(".{last}"), newline_separated: true });
    }
    if dotted.is_empty() {
        // Firehose and many loggers write keys without an extension; they hold lines.
        return Ok(FormatClass { extension: String::new(), newline_separated: true });
    }
    // An extension we do not know: keep its bytes exactly as they are.
    Ok(FormatClass { extension: format!(".{last}"), newline_separated: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_extensions() {
        let class = |key: &str| classify(key, FormatMode::Auto).unwrap();
        assert_eq!(class("a/b.json"), FormatClass { extension: ".json".into(), newline_separated: true });
        assert_eq!(class("a/B.NDJSON"), FormatClass { extension: ".ndjson".into(), newline_separated: true });
        assert_eq!(class("a/b.json.gz"), FormatClass { extension: ".json.gz".into(), newline_separated: false });
        assert_eq!(class("a/b.gz"), FormatClass { extension: ".gz".into(), newline_separated: false });
        assert_eq!(class("a/stream-1-2024-01-14"), FormatClass { extension: "".into(), newline_separated: true });
        assert_eq!(class("a/x.bin"), FormatClass { extension: ".bin".into(), newline_separated: false });
        assert_eq!(classify("a/x.parquet", FormatMode::Auto), Err(NotConcatenable));
        assert_eq!(classify("a/x.parquet", FormatMode::Bytes), Err(NotConcatenable));
        assert_eq!(
            classify("a/x.json", FormatMode::Bytes).unwrap(),
            FormatClass { extension: "".into(), newline_separated: false }
        );
    }

    #[test]
    fn directories_with_dots_do_not_count_as_extensions() {
        let class = classify("a.json/b", FormatMode::Auto).unwrap();
        assert_eq!(class.extension, "");
    }
}
