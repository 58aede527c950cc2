//! How sources are joined into an output.
//!
//! Byte concatenation is the base: every source stays recoverable by its byte range. On top:
//! - line formats (JSON, NDJSON, CSV, logs, text) get a `\n` after a source that lacks one, so
//!   the last record of one file never runs into the first of the next; the inserted byte is
//!   recorded as the source's separator and is not part of its range, so restore stays exact;
//! - gzip sources are concatenated as they are: concatenated gzip members are one valid gzip
//!   stream (RFC 1952 §2.2), and its decompressed text is the files' texts in order. So that the
//!   last record of one never runs into the first of the next, a gzip source whose text does
//!   not end in `\n` (every CloudTrail file) is followed by [`GZIP_NEWLINE_MEMBER`], a gzip
//!   member holding only `\n`, recorded as its separator: outside its range, which stays byte
//!   exact. Knowing the text's last byte takes inflating the whole source as it streams past
//!   ([`TextTail`]): deflate has no index to start near the end;
//! - formats whose files cannot be joined by concatenation (ORC, Avro containers, zip) are
//!   refused at ingest, so they stay where they are, logged and counted; Parquet is merged by
//!   its column chunks instead (`parquet`, see `crate::parquet`).
//!
//! - `cloudtrail` ([`cloudtrail`]) rewrites each gzip `{"Records":[...]}` document into a gzip
//!   member of NDJSON, one event a line: the source's range is that member;
//! - `csv` ([`csv`]) gives each output one header: a source's range is its rows;
//! - `ndjson` ([`ndjson`]) sets lines that are not JSON aside in a side file next to the output.
//!
//! Plain-text sources of `concat`, `bytes`, `csv` and `ndjson` may also be compressed, each
//! source a zstd frame or gzip member of its own ([`compress`]); sources already compressed
//! (by name or by content) never are.
//!
//! Which format a key gets is chosen per source prefix ([`FormatRules`]); `auto` picks by the
//! key alone (`parquet` for `.parquet`, `cloudtrail` for CloudTrail's own log file keys), so
//! planning, which reads no source, and the seal agree on it. Sources of different
//! classes never share an output: each class gets outputs of its own, with a file extension
//! that says what is inside.

use serde::{Deserialize, Serialize};

pub mod cloudtrail;
pub mod compress;
pub mod csv;
pub mod ndjson;
mod select;

pub use compress::Compression;
pub use select::{FormatChoice, FormatMode, FormatReason, FormatRules, ParquetRowGroups};

/// What a source is, as far as joining goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FormatClass {
    /// The extension outputs of this class get, with its leading dot (`.json.gz`), or empty.
    pub extension: String,
    /// Whether a `\n` goes after a source whose text does not end with one.
    pub newline_separated: bool,
    /// Sources are gzip: their text is what they inflate to, and the `\n` after one goes in a
    /// gzip member of its own ([`GZIP_NEWLINE_MEMBER`]).
    #[serde(default)]
    pub gzip: bool,
    /// The mode the key resolved to (never `auto`): sources of different formats never share
    /// an output, as they are keys of different bins.
    #[serde(default = "concat")]
    pub format: FormatMode,
    /// Each source (its text, as the format makes it) goes in as a frame of this compression
    /// (see [`compress`]); the extension then starts with [`compress::FRAMED_MARKER`].
    #[serde(default)]
    pub compression: Compression,
}

fn concat() -> FormatMode {
    FormatMode::Concat
}

impl FormatClass {
    /// True when every source's bytes reach the output exactly as stored, with at most a
    /// separator after them: then a source can become a part of its output by server-side copy
    /// (`UploadPartCopy`), and restore by byte range gives it back. A format that rewrites
    /// sources (CloudTrail `{"Records":[...]}` to NDJSON) answers false, or copies would skip
    /// its rewriting.
    pub fn keeps_source_bytes(&self) -> bool {
        if self.compression != Compression::None {
            return false;
        }
        match self.format {
            FormatMode::Auto | FormatMode::Concat | FormatMode::Bytes => true,
            FormatMode::Cloudtrail | FormatMode::Csv | FormatMode::Ndjson | FormatMode::Parquet => false,
        }
    }

    /// Parquet sources: merged by their column chunks, not concatenated (see `crate::parquet`).
    pub fn is_parquet(&self) -> bool {
        self.format == FormatMode::Parquet
    }

    /// Parquet sources whose small row groups are rewritten into large ones: their outputs'
    /// placements are rows, not bytes (see [`ROWS_PARQUET_EXTENSION`]).
    pub fn rewrites_row_groups(&self) -> bool {
        self.is_parquet() && self.extension == ROWS_PARQUET_EXTENSION
    }

    /// The bytes that go after a source whose text lacks a final newline (see
    /// [`FormatClass::newline_separated`]).
    pub fn separator(&self) -> &'static [u8] {
        match self.compression {
            Compression::Zstd => &compress::ZSTD_NEWLINE_FRAME,
            Compression::Gzip => &GZIP_NEWLINE_MEMBER,
            Compression::None if self.gzip => &GZIP_NEWLINE_MEMBER,
            Compression::None => b"\n",
        }
    }
}

/// A gzip member whose text is `\n` alone: header (no name, mtime 0, OS unknown), the deflate
/// block of one byte, CRC-32 and length. Concatenated after a gzip source, it ends the source's
/// last line for every reader, and stays outside the source's byte range.
pub const GZIP_NEWLINE_MEMBER: [u8; 21] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xe3, 0x02, 0x00, 0x93, 0x06, 0xd7, 0x32, 0x01, 0x00,
    0x00, 0x00,
];

/// The most bytes a separator adds after one source, for size bounds.
pub const MAX_SEPARATOR_BYTES: u64 = GZIP_NEWLINE_MEMBER.len() as u64;

/// The last byte of a source's text, found as its bytes stream past: for plain text, its last
/// byte; for gzip, the last byte its members inflate to. Inflating costs CPU (every gzip
/// source of a line class is inflated once, into a sink that keeps one byte) but no memory
/// that grows with the source.
pub struct TextTail {
    state: TailState,
}

enum TailState {
    Plain { last: Option<u8> },
    Gzip { decoder: Box<flate2::write::MultiGzDecoder<LastByte>>, fed_bytes: u64 },
    Unreadable(String),
}

/// A sink that keeps the last byte written to it.
#[derive(Default)]
struct LastByte(Option<u8>);

impl std::io::Write for LastByte {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(last) = bytes.last() {
            self.0 = Some(*last);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a gzip source's text could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableGzip(pub String);

impl TextTail {
    /// A tail for a source of `class`. Only gzip sources of a newline-separated class are
    /// inflated: nothing else needs their text.
    pub fn new(class: &FormatClass) -> Self {
        let state = if class.gzip && class.newline_separated {
            TailState::Gzip { decoder: Box::new(flate2::write::MultiGzDecoder::new(LastByte::default())), fed_bytes: 0 }
        } else {
            TailState::Plain { last: None }
        };
        TextTail { state }
    }

    /// The next bytes of the source, in order.
    pub fn update(&mut self, chunk: &[u8]) {
        match &mut self.state {
            TailState::Plain { last } => *last = chunk.last().copied().or(*last),
            TailState::Gzip { decoder, fed_bytes } => {
                *fed_bytes += chunk.len() as u64;
                if let Err(error) = std::io::Write::write_all(decoder, chunk) {
                    self.state = TailState::Unreadable(error.to_string());
                }
            }
            TailState::Unreadable(_) => {}
        }
    }

    /// The text's last byte (`None` for an empty source), or why a gzip source could not be
    /// inflated to its end (truncated, not gzip, trailing garbage).
    pub fn finish(self) -> Result<Option<u8>, UnreadableGzip> {
        match self.state {
            TailState::Plain { last } => Ok(last),
            TailState::Gzip { fed_bytes: 0, .. } => Ok(None),
            TailState::Gzip { mut decoder, .. } => match decoder.try_finish() {
                Ok(()) => Ok(decoder.get_ref().0),
                Err(error) => Err(UnreadableGzip(error.to_string())),
            },
            TailState::Unreadable(reason) => Err(UnreadableGzip(reason)),
        }
    }
}

/// Why a format is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotConcatenable;

const LINE_EXTENSIONS: &[&str] = &["json", "ndjson", "jsonl", "csv", "tsv", "log", "txt", "text"];
const GZIP_EXTENSIONS: &[&str] = &["gz", "gzip"];
/// The extension of Parquet outputs, and the class that says a source is Parquet.
pub const PARQUET_EXTENSION: &str = ".parquet";
/// The extension of Parquet outputs whose row groups were rewritten: their key, not the
/// configuration (which may have changed since their seal), tells verify and restore that a
/// placement is a source's rows (first row, row count, digest of its values).
pub const ROWS_PARQUET_EXTENSION: &str = "-rows.parquet";
const REFUSED_EXTENSIONS: &[&str] = &["parquet", "orc", "avro", "zip", "7z", "tar", "jar"];

/// The class of a key under `rules`, or [`NotConcatenable`] for formats that byte
/// concatenation would break.
pub fn classify(key: &str, rules: &FormatRules) -> Result<FormatClass, NotConcatenable> {
    let choice = rules.choose(key);
    let class = compressed_as(key, classify_as(key, choice.mode)?, choice.compression);
    if class.is_parquet() && choice.row_groups == ParquetRowGroups::Rewrite {
        return Ok(FormatClass { extension: ROWS_PARQUET_EXTENSION.into(), ..class });
    }
    Ok(class)
}

/// `class` with its sources compressed as `compression` asks, when they can be: plain sources
/// (not gzip or otherwise compressed by name) of `concat`, `bytes`, `csv` or `ndjson`.
/// CloudTrail outputs are gzip already, Parquet's pages are compressed by Parquet.
fn compressed_as(key: &str, class: FormatClass, compression: Compression) -> FormatClass {
    let compressible = match class.format {
        FormatMode::Concat | FormatMode::Bytes | FormatMode::Csv | FormatMode::Ndjson => true,
        FormatMode::Auto | FormatMode::Cloudtrail | FormatMode::Parquet => false,
    };
    if compression == Compression::None || !compressible || class.gzip || compressed_by_name(key) {
        return class;
    }
    let extension = format!("{}{}{}", compress::FRAMED_MARKER, class.extension, compression.suffix());
    FormatClass { extension, compression, ..class }
}

/// True when the key's name says its bytes are compressed already (`.gz`, `.zst`, …).
fn compressed_by_name(key: &str) -> bool {
    let file_name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
    file_name.rsplit_once('.').is_some_and(|(_, extension)| compress::COMPRESSED_EXTENSIONS.contains(&extension))
}

/// What `plan` shows for a key: the format it gets, its output extension, and why.
pub fn describe(key: &str, rules: &FormatRules) -> String {
    let choice = rules.choose(key);
    match classify(key, rules) {
        Ok(class) if choice.compression != Compression::None && class.compression == Compression::None => {
            let why = if choice.mode == FormatMode::Auto { auto_reason(&class) } else { "" };
            format!(
                "{} {} ({why}{choice}; not compressed: {})",
                class.format,
                shown_extension(&class),
                if class.gzip || compressed_by_name(key) {
                    "already compressed"
                } else {
                    "the format's output is compressed its own way"
                }
            )
        }
        Ok(class) if choice.mode == FormatMode::Auto => {
            format!("{} {} ({}{choice})", class.format, shown_extension(&class), auto_reason(&class))
        }
        Ok(class) => format!("{} {} ({choice})", class.format, shown_extension(&class)),
        Err(NotConcatenable) => format!("refused (its extension cannot be concatenated, {choice})"),
    }
}

/// How `auto` chose `class`, for `plan`.
fn auto_reason(class: &FormatClass) -> &'static str {
    match class.format {
        FormatMode::Cloudtrail => "a CloudTrail log file by its key, content checked at seal, ",
        _ => "by name, ",
    }
}

fn shown_extension(class: &FormatClass) -> &str {
    if class.extension.is_empty() {
        "(no extension)"
    } else {
        &class.extension
    }
}

/// The class of a key whose mode is `mode`.
fn classify_as(key: &str, mode: FormatMode) -> Result<FormatClass, NotConcatenable> {
    let file_name = key.rsplit('/').next().unwrap_or(key);
    let lowercase = file_name.to_ascii_lowercase();
    let mut dotted = lowercase.split('.').skip(1).collect::<Vec<_>>();
    let last = dotted.last().copied().unwrap_or("");
    // Parquet files are merged by their column chunks when the crate can (the `parquet`
    // feature), never as bytes: `auto` knows them by name, a `parquet` rule takes every key
    // (a file that is not Parquet is found out at seal time, by its footer).
    if mode == FormatMode::Parquet || (mode == FormatMode::Auto && last == "parquet") {
        if !cfg!(feature = "parquet") {
            return Err(NotConcatenable);
        }
        return Ok(FormatClass {
            extension: PARQUET_EXTENSION.into(),
            newline_separated: false,
            gzip: false,
            format: FormatMode::Parquet,
            compression: Compression::None,
        });
    }
    if REFUSED_EXTENSIONS.contains(&last) {
        return Err(NotConcatenable);
    }
    let class = |extension: String, newline_separated: bool, gzip: bool| FormatClass {
        extension,
        newline_separated,
        gzip,
        format: FormatMode::Concat,
        compression: Compression::None,
    };
    match mode {
        FormatMode::Bytes => {
            return Ok(FormatClass { format: FormatMode::Bytes, ..class(String::new(), false, false) });
        }
        // Each source's records become gzip NDJSON lines: one extension for every output.
        // `auto` knows CloudTrail log files by their key alone, as planning never reads a
        // source: the seal's rewrite checks the content, and leaves a file that is not a
        // document where it is (see the README's formats section for why not `concat`).
        FormatMode::Cloudtrail => {
            return Ok(FormatClass { format: FormatMode::Cloudtrail, ..class(".ndjson.gz".into(), false, true) });
        }
        FormatMode::Auto if cloudtrail::named_as_cloudtrail(key) => {
            return Ok(FormatClass { format: FormatMode::Cloudtrail, ..class(".ndjson.gz".into(), false, true) });
        }
        // Plain CSV only: a gzip CSV's header cannot be left out of its range without
        // rewriting it, so it is joined as `concat` joins it (its header stays in its range).
        FormatMode::Csv if !GZIP_EXTENSIONS.contains(&last) => {
            return Ok(FormatClass { format: FormatMode::Csv, ..class(".csv".into(), true, false) });
        }
        // Plain lines only, for the same reason.
        FormatMode::Ndjson if !GZIP_EXTENSIONS.contains(&last) => {
            let extension = if dotted.is_empty() { String::new() } else { format!(".{last}") };
            return Ok(FormatClass { format: FormatMode::Ndjson, ..class(extension, true, false) });
        }
        FormatMode::Auto | FormatMode::Concat | FormatMode::Csv | FormatMode::Ndjson | FormatMode::Parquet => {}
    }
    if GZIP_EXTENSIONS.contains(&last) {
        dotted.pop();
        let inner = dotted.last().copied();
        let (extension, newline_separated) = match inner {
            Some(inner) if LINE_EXTENSIONS.contains(&inner) => (format!(".{inner}.gz"), true),
            // `x.gz`: compressed lines, as a key without extension holds lines.
            None => (".gz".to_string(), true),
            // `x.bin.gz`, `x.tar.gz`: not text we know; joined as they are, no separator.
            Some(inner) => (format!(".{inner}.gz"), false),
        };
        return Ok(class(extension, newline_separated, true));
    }
    if LINE_EXTENSIONS.contains(&last) {
        return Ok(class(format!(".{last}"), true, false));
    }
    if dotted.is_empty() {
        // Firehose and many loggers write keys without an extension; they hold lines.
        return Ok(class(String::new(), true, false));
    }
    // An extension we do not know: keep its bytes exactly as they are.
    Ok(class(format!(".{last}"), false, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(extension: &str, newline_separated: bool, gzip: bool) -> FormatClass {
        FormatClass {
            extension: extension.into(),
            newline_separated,
            gzip,
            format: FormatMode::Concat,
            compression: Compression::None,
        }
    }

    fn auto() -> FormatRules {
        FormatRules::uniform(FormatMode::Auto)
    }

    #[test]
    fn classes_follow_extensions() {
        let class = |key: &str| classify(key, &auto()).unwrap();
        assert_eq!(class("a/b.json"), class_of(".json", true, false));
        assert_eq!(class("a/B.NDJSON"), class_of(".ndjson", true, false));
        assert_eq!(class("a/b.json.gz"), class_of(".json.gz", true, true));
        assert_eq!(class("a/b.gz"), class_of(".gz", true, true));
        assert_eq!(class("a/b.tar.gz"), class_of(".tar.gz", false, true));
        assert_eq!(class("a/stream-1-2024-01-14"), class_of("", true, false));
        assert_eq!(class("a/x.bin"), class_of(".bin", false, false));
        let bytes = FormatRules::uniform(FormatMode::Bytes);
        if cfg!(feature = "parquet") {
            let parquet = classify("a/X.PARQUET", &auto()).unwrap();
            assert!(parquet.is_parquet() && !parquet.keeps_source_bytes(), "merged by column chunks");
            assert_eq!((parquet.extension.as_str(), parquet.format), (".parquet", FormatMode::Parquet));
            let by_rule = classify("a/part-0001", &FormatRules::uniform(FormatMode::Parquet)).unwrap();
            assert_eq!(by_rule, parquet, "a parquet rule takes keys without the extension too");
            let rewrite = classify("a/x.parquet", &auto().with_row_groups(ParquetRowGroups::Rewrite)).unwrap();
            assert!(rewrite.rewrites_row_groups() && !parquet.rewrites_row_groups());
            assert_eq!(rewrite.extension, "-rows.parquet", "rows outputs are told apart by their key");
        } else {
            assert_eq!(classify("a/x.parquet", &auto()), Err(NotConcatenable));
        }
        assert!(!class("a/b.json").is_parquet());
        assert_eq!(classify("a/x.parquet", &bytes), Err(NotConcatenable));
        let bytes_class = FormatClass { format: FormatMode::Bytes, ..class_of("", false, false) };
        assert_eq!(classify("a/x.json", &bytes).unwrap(), bytes_class);
        assert_eq!(classify("a/x.json", &FormatRules::uniform(FormatMode::Concat)).unwrap(), class("a/x.json"));
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, text).unwrap();
        encoder.finish().unwrap()
    }

    fn tail_of(class: &FormatClass, bytes: &[u8], chunk_bytes: usize) -> Result<Option<u8>, UnreadableGzip> {
        let mut tail = TextTail::new(class);
        for chunk in bytes.chunks(chunk_bytes.max(1)) {
            tail.update(chunk);
        }
        tail.finish()
    }

    #[test]
    fn the_gzip_newline_member_inflates_to_a_newline() {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&GZIP_NEWLINE_MEMBER[..]), &mut text)
            .unwrap();
        assert_eq!(text, b"\n");
        assert_eq!(class_of(".json.gz", true, true).separator(), GZIP_NEWLINE_MEMBER);
        assert_eq!(class_of(".json", true, false).separator(), b"\n");
    }

    #[test]
    fn the_tail_of_a_gzip_source_is_the_last_byte_of_its_text_whatever_the_chunking() {
        let gzip_lines = class_of(".json.gz", true, true);
        let cloudtrail_like = gzip(br#"{"Records":[{"eventName":"GetObject"}]}"#);
        let with_newline = gzip(b"{\"a\":1}\n{\"a\":2}\n");
        let two_members = [gzip(b"{\"a\":1}\n"), gzip(b"{\"a\":2}")].concat();
        let empty_last_member = [gzip(b"{\"a\":1}\n"), gzip(b"")].concat();
        for chunk_bytes in [1, 7, 4096] {
            assert_eq!(tail_of(&gzip_lines, &cloudtrail_like, chunk_bytes), Ok(Some(b'}')));
            assert_eq!(tail_of(&gzip_lines, &with_newline, chunk_bytes), Ok(Some(b'\n')));
            assert_eq!(tail_of(&gzip_lines, &two_members, chunk_bytes), Ok(Some(b'}')), "the last member counts");
            assert_eq!(tail_of(&gzip_lines, &empty_last_member, chunk_bytes), Ok(Some(b'\n')));
        }
        assert_eq!(tail_of(&gzip_lines, b"", 10), Ok(None), "an empty source has no text");
        assert_eq!(tail_of(&class_of(".json", true, false), b"ab", 1), Ok(Some(b'b')));
    }

    #[test]
    fn a_truncated_or_garbled_gzip_source_is_unreadable_not_a_panic() {
        let gzip_lines = class_of(".json.gz", true, true);
        let whole = gzip(br#"{"Records":[{"eventName":"GetObject"}]}"#);
        for cut in [1, 5, 10, whole.len() / 2, whole.len() - 1] {
            assert!(tail_of(&gzip_lines, &whole[..cut], 3).is_err(), "cut at {cut} of {}", whole.len());
        }
        assert!(tail_of(&gzip_lines, b"{\"not\": \"gzip\"}", 4).is_err());
        let trailing_garbage = [whole.clone(), b"garbage".to_vec()].concat();
        assert!(tail_of(&gzip_lines, &trailing_garbage, 4).is_err());
        assert_eq!(tail_of(&class_of(".tar.gz", false, true), &whole[..5], 3), Ok(Some(whole[4])), "not inflated");
    }

    #[test]
    fn directories_with_dots_do_not_count_as_extensions() {
        let class = classify("a.json/b", &auto()).unwrap();
        assert_eq!(class.extension, "");
    }

    #[test]
    fn a_prefix_rule_picks_the_format_and_outputs_say_it_in_their_extension() {
        let rules = FormatRules::parse(FormatMode::Auto, "AWSLogs/=cloudtrail").unwrap();
        let trail = classify("AWSLogs/1/CloudTrail/x.json.gz", &rules).unwrap();
        assert_eq!((trail.format, trail.extension.as_str()), (FormatMode::Cloudtrail, ".ndjson.gz"));
        assert!(!trail.keeps_source_bytes(), "rewritten sources are never copied server-side");
        assert_ne!(trail, classify("logs/x.json.gz", &rules).unwrap(), "formats never share an output");
        assert_eq!(
            describe("AWSLogs/1/x.json.gz", &rules),
            "cloudtrail .ndjson.gz (COMPACTOR_FORMATS AWSLogs/=cloudtrail)"
        );
        assert_eq!(describe("logs/x.json.gz", &rules), "concat .json.gz (by name, COMPACTOR_FORMAT=auto)");
        assert_eq!(
            describe("logs/x.orc", &rules),
            "refused (its extension cannot be concatenated, COMPACTOR_FORMAT=auto)"
        );
    }

    #[test]
    fn auto_makes_cloudtrail_log_files_cloudtrail_and_leaves_other_gzip_json_as_concat() {
        let trail_key = "AWSLogs/123456789012/CloudTrail/eu-west-1/2024/01/14/123456789012_CloudTrail_x.json.gz";
        let trail = classify(trail_key, &auto()).unwrap();
        assert_eq!(trail, classify(trail_key, &FormatRules::uniform(FormatMode::Cloudtrail)).unwrap());
        assert_eq!(classify("logs/2024/01/14/x.json.gz", &auto()).unwrap(), class_of(".json.gz", true, true));
        assert_eq!(
            classify(trail_key, &FormatRules::uniform(FormatMode::Concat)).unwrap(),
            class_of(".json.gz", true, true),
            "only auto guesses: an explicit format is kept"
        );
        assert_eq!(
            describe(trail_key, &auto()),
            "cloudtrail .ndjson.gz (a CloudTrail log file by its key, content checked at seal, COMPACTOR_FORMAT=auto)"
        );
        let zstd = auto().with_compression(Compression::Zstd);
        assert_eq!(classify(trail_key, &zstd).unwrap(), trail, "CloudTrail outputs are gzip already");
        assert!(describe(trail_key, &zstd).contains("by its key"), "{}", describe(trail_key, &zstd));
    }

    #[test]
    fn plain_sources_are_compressed_and_compressed_ones_never_again() {
        let rules = FormatRules::parse(FormatMode::Auto, "tables/=csv:gzip,trail/=cloudtrail,lines/=ndjson")
            .unwrap()
            .with_compression(Compression::Zstd);
        let class = |key: &str| classify(key, &rules).unwrap();
        let json = class("logs/a.json");
        assert_eq!((json.extension.as_str(), json.compression), ("-framed.json.zst", Compression::Zstd));
        assert!(!json.keeps_source_bytes(), "a compressed source is never copied server-side");
        assert_eq!(json.separator(), compress::ZSTD_NEWLINE_FRAME);
        assert_eq!(class("logs/stream-1").extension, "-framed.zst");
        assert_eq!(class("tables/a.csv").extension, "-framed.csv.gz");
        assert_eq!(class("tables/a.csv").separator(), GZIP_NEWLINE_MEMBER);
        assert_eq!(class("lines/a.ndjson").extension, "-framed.ndjson.zst");
        assert_eq!(class("logs/a.json.gz"), class_of(".json.gz", true, true), "gzip by name goes as it is");
        assert_eq!(class("logs/a.json.zst").compression, Compression::None, "zstd by name too");
        assert_eq!(class("trail/a.json.gz").compression, Compression::None, "CloudTrail outputs are gzip already");
        assert_eq!(
            describe("logs/a.json", &rules),
            "concat -framed.json.zst (by name, COMPACTOR_FORMAT=auto, COMPACTOR_COMPRESS=zstd)"
        );
        assert_eq!(
            describe("logs/a.json.gz", &rules),
            "concat .json.gz (by name, COMPACTOR_FORMAT=auto, COMPACTOR_COMPRESS=zstd; not compressed: already compressed)"
        );
        assert_ne!(json, classify("logs/a.json", &FormatRules::uniform(FormatMode::Auto)).unwrap(), "never shared");
    }
}
