//! NDJSON with invalid lines set aside: a line that is not JSON would stop a reader of the whole
//! output, so it leaves the output for a side file next to it, `_invalid-<output file name>`
//! (Hive, Athena and Spark skip files whose names start with `_`), as one JSON line saying
//! which source, which line, at which byte of the source, and the line itself. Never dropped.
//!
//! A source with no invalid line is joined as `concat` joins it: its range is its bytes. A
//! source with invalid lines has its other lines as its range; restore puts the set-aside lines
//! back at their offsets ([`reassemble`]), byte for byte.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A line that is not JSON, with its `\n` when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLine<'a> {
    /// 1-based.
    pub number: u64,
    /// Where the line starts in the source.
    pub offset: u64,
    pub bytes: &'a [u8],
}

/// Splits a source into the bytes that stay (every valid or blank line, in order) and its
/// invalid lines. Borrows the source when every line is valid.
pub fn check(source: &[u8]) -> (Cow<'_, [u8]>, Vec<InvalidLine<'_>>) {
    let mut invalid = Vec::new();
    let mut start = 0usize;
    let mut number = 0u64;
    while start < source.len() {
        number += 1;
        let end = source[start..].iter().position(|byte| *byte == b'\n').map_or(source.len(), |at| start + at + 1);
        let line = &source[start..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let blank = content.iter().all(u8::is_ascii_whitespace);
        if !blank && serde_json::from_slice::<serde::de::IgnoredAny>(content).is_err() {
            invalid.push(InvalidLine { number, offset: start as u64, bytes: line });
        }
        start = end;
    }
    if invalid.is_empty() {
        return (Cow::Borrowed(source), invalid);
    }
    let mut kept = Vec::with_capacity(source.len());
    let mut from = 0usize;
    for line in &invalid {
        kept.extend_from_slice(&source[from..line.offset as usize]);
        from = line.offset as usize + line.bytes.len();
    }
    kept.extend_from_slice(&source[from..]);
    (Cow::Owned(kept), invalid)
}

/// One line of a side file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideEntry {
    pub source: String,
    pub line: u64,
    pub offset: u64,
    /// The line without its `\n`, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The line's bytes without its `\n`, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Vec<u8>>,
    /// Whether the line ended with `\n` in the source.
    pub newline: bool,
}

impl SideEntry {
    pub fn of(source: &str, line: &InvalidLine<'_>) -> SideEntry {
        let newline = line.bytes.ends_with(b"\n");
        let content = line.bytes.strip_suffix(b"\n").unwrap_or(line.bytes);
        let (text, bytes) = match std::str::from_utf8(content) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (None, Some(content.to_vec())),
        };
        SideEntry { source: source.to_string(), line: line.number, offset: line.offset, text, bytes, newline }
    }

    fn line_bytes(&self) -> Vec<u8> {
        let mut line =
            self.text.as_ref().map(|text| text.as_bytes().to_vec()).or_else(|| self.bytes.clone()).unwrap_or_default();
        if self.newline {
            line.push(b'\n');
        }
        line
    }
}

/// The side file of an output: `_invalid-` before its file name, in the same directory.
pub fn side_key(output_key: &str) -> String {
    match output_key.rsplit_once('/') {
        Some((directory, name)) => format!("{directory}/_invalid-{name}"),
        None => format!("_invalid-{output_key}"),
    }
}

/// The source `key` whole again: its kept bytes (its range) with its lines from the side file
/// put back at their offsets. Errors when the side file does not fit the range.
pub fn reassemble(kept: &[u8], key: &str, side_file: &[u8]) -> Result<Vec<u8>, String> {
    let mut entries = Vec::new();
    for (index, line) in side_file.split(|byte| *byte == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let entry: SideEntry =
            serde_json::from_slice(line).map_err(|error| format!("line {} of the side file: {error}", index + 1))?;
        if entry.source == key {
            entries.push(entry);
        }
    }
    entries.sort_by_key(|entry| entry.offset);
    let mut whole = Vec::with_capacity(kept.len());
    let mut position = 0usize;
    for entry in entries {
        let before = usize::try_from(entry.offset).ok().and_then(|offset| offset.checked_sub(whole.len()));
        let Some(until) = before.map(|before| position + before).filter(|until| *until <= kept.len()) else {
            return Err(format!("line {} of {key} lies outside its range", entry.line));
        };
        whole.extend_from_slice(&kept[position..until]);
        position = until;
        whole.extend_from_slice(&entry.line_bytes());
    }
    whole.extend_from_slice(&kept[position..]);
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side_file(key: &str, invalid: &[InvalidLine<'_>]) -> Vec<u8> {
        let mut file = Vec::new();
        for line in invalid {
            serde_json::to_writer(&mut file, &SideEntry::of(key, line)).unwrap();
            file.push(b'\n');
        }
        file
    }

    #[test]
    fn invalid_lines_are_set_aside_and_put_back_byte_for_byte() {
        let sources: [&[u8]; 6] = [
            b"{\"a\":1}\nnot json\n{\"a\":2}\n",
            b"{\"a\":1}\n\n{\"a\":2}",
            b"{\"a\":1}\n{\"a\":",
            b"broken\n{\"a\":1}\n\xff\xfe\n",
            b"",
            b"{\"a\":1}\r\n  \n[1,2]\n",
        ];
        for source in sources {
            let (kept, invalid) = check(source);
            for line in &invalid {
                let content = line.bytes.strip_suffix(b"\n").unwrap_or(line.bytes);
                assert!(serde_json::from_slice::<serde::de::IgnoredAny>(content).is_err());
            }
            let rebuilt = reassemble(&kept, "k", &side_file("k", &invalid)).unwrap();
            assert_eq!(rebuilt, source, "{:?}", String::from_utf8_lossy(source));
            assert!(reassemble(&kept, "other", &side_file("k", &invalid)).unwrap() == kept.as_ref());
        }
        let (kept, invalid) = check(b"{\"a\":1}\nnot json\n{\"a\":2}\n");
        assert_eq!(kept.as_ref(), b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!((invalid[0].number, invalid[0].offset), (2, 8));
        assert!(matches!(check(b"{\"a\":1}\n\n").0, Cow::Borrowed(_)), "valid sources are not copied");
        assert_eq!(side_key("c/p/compacted-g1-p1.ndjson"), "c/p/_invalid-compacted-g1-p1.ndjson");
    }

    #[test]
    fn a_side_file_that_does_not_fit_is_an_error_not_a_panic() {
        let entry =
            SideEntry { source: "k".into(), line: 9, offset: 1000, text: Some("x".into()), bytes: None, newline: true };
        let side = serde_json::to_vec(&entry).unwrap();
        assert!(reassemble(b"short", "k", &side).unwrap_err().contains("outside its range"));
        assert!(reassemble(b"short", "k", b"{not json").is_err());
    }
}
