//! CloudTrail: gzip `{"Records":[...]}` documents in, gzip NDJSON out, one event per line.
//!
//! A source is read as a stream: gzip is inflated as the JSON parser asks for bytes, and the
//! `Records` array is visited one element at a time, each written out as one compact line and
//! dropped before the next is parsed. So memory holds the source's compressed bytes (the seal
//! has them anyway), one record, a 64 KiB write buffer and the compressed member being built, never the whole array
//! nor the source's text (CloudTrail files reach tens of MB uncompressed).
//!
//! Each source becomes one gzip member of its own: concatenated members are one gzip stream
//! (RFC 1952), so the output reads as one NDJSON file, and the source's byte range in the output
//! is exactly its member, which restore serves with one ranged GET.
//!
//! A source that is not such a document (truncated gzip, invalid JSON, a key besides `Records`,
//! trailing data) is refused as a whole with the reason: it is left where it is, untouched.
//!
//! [`document_digest`] and [`ndjson_digest`] hash records independently of whitespace: each
//! record re-serialised compactly, one per line. Verify compares the two digests between an
//! original and its NDJSON range.

use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

/// The gzip level of NDJSON members: flate2's default (6), the usual trade of CPU for size.
const MEMBER_LEVEL: u32 = 6;

/// Why a source is not a CloudTrail document; said in the source's record note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCloudtrail(pub String);

impl fmt::Display for NotCloudtrail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A source's records as one gzip member of NDJSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdjsonMember {
    pub bytes: Vec<u8>,
    pub records: u64,
}

/// Rewrites one gzip `{"Records":[...]}` document as a gzip member of NDJSON.
pub fn to_ndjson_member(source: &[u8]) -> Result<NdjsonMember, NotCloudtrail> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(MEMBER_LEVEL));
    // Buffered: serde_json writes a record token by token, and flate2 zeroes its 32 KiB output
    // buffer on every write it is given; unbuffered, that memset was half the seal's CPU.
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, encoder);
    let records = each_record(source, |record| {
        serde_json::to_writer(&mut writer, record)?;
        writer.write_all(b"\n")
    })?;
    let compress_error = |error: std::io::Error| NotCloudtrail(format!("cannot compress its records: {error}"));
    let encoder = writer.into_inner().map_err(|error| compress_error(error.into_error()))?;
    let bytes = encoder.finish().map_err(compress_error)?;
    Ok(NdjsonMember { bytes, records })
}

/// The buffer between serde_json and the gzip encoder (see [`to_ndjson_member`]).
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The record count and whitespace-independent digest of a gzip `{"Records":[...]}` document.
pub fn document_digest(source: &[u8]) -> Result<RecordsDigest, NotCloudtrail> {
    let mut digest = DigestBuilder::default();
    each_record(source, |record| digest.add(record))?;
    Ok(digest.finish())
}

/// The record count and digest of gzip NDJSON (a CloudTrail source's range in its output).
pub fn ndjson_digest(member: &[u8]) -> Result<RecordsDigest, NotCloudtrail> {
    let mut digest = DigestBuilder::default();
    let text = BufReader::new(flate2::read::MultiGzDecoder::new(member));
    for (index, line) in text.split(b'\n').enumerate() {
        let line = line.map_err(|error| NotCloudtrail(format!("cannot inflate: {error}")))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: serde_json::Value = serde_json::from_slice(&line)
            .map_err(|error| NotCloudtrail(format!("line {} is not JSON: {error}", index + 1)))?;
        digest.add(&record).map_err(|error| NotCloudtrail(error.to_string()))?;
    }
    Ok(digest.finish())
}

/// Rebuilds a gzip `{"Records":[...]}` document from the gzip NDJSON of one source (restore
/// `--as-source`): the same records in the same order, written compactly.
pub fn ndjson_to_document(member: &[u8]) -> Result<Vec<u8>, NotCloudtrail> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(MEMBER_LEVEL));
    let io = |error: std::io::Error| NotCloudtrail(format!("cannot rebuild the document: {error}"));
    encoder.write_all(b"{\"Records\":[").map_err(io)?;
    let text = BufReader::new(flate2::read::MultiGzDecoder::new(member));
    let mut first = true;
    for line in text.split(b'\n') {
        let line = line.map_err(io)?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !first {
            encoder.write_all(b",").map_err(io)?;
        }
        first = false;
        encoder.write_all(&line).map_err(io)?;
    }
    encoder.write_all(b"]}").map_err(io)?;
    encoder.finish().map_err(io)
}

/// How many records, and the sha256 (hex) of their compact forms, one a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsDigest {
    pub records: u64,
    pub sha256: String,
}

#[derive(Default)]
struct DigestBuilder {
    records: u64,
    hasher: Sha256,
}

impl DigestBuilder {
    fn add(&mut self, record: &serde_json::Value) -> std::io::Result<()> {
        self.records += 1;
        serde_json::to_writer(&mut HashWriter(&mut self.hasher), record)?;
        self.hasher.update(b"\n");
        Ok(())
    }

    fn finish(self) -> RecordsDigest {
        RecordsDigest { records: self.records, sha256: hex::encode(self.hasher.finalize()) }
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Calls `each` on every record of a gzip `{"Records":[...]}` document, in order, parsing one
/// record at a time; returns how many there were.
fn each_record(
    source: &[u8],
    mut each: impl FnMut(&serde_json::Value) -> std::io::Result<()>,
) -> Result<u64, NotCloudtrail> {
    if source.len() < 2 || source[..2] != [0x1f, 0x8b] {
        return Err(NotCloudtrail("not gzip (CloudTrail files are gzip)".into()));
    }
    // Buffered: serde_json reads a reader a byte at a time.
    let text = BufReader::with_capacity(64 * 1024, flate2::read::MultiGzDecoder::new(source));
    let mut deserializer = serde_json::Deserializer::from_reader(text);
    let mut count = 0u64;
    let seen_records = deserializer
        .deserialize_map(DocumentVisitor { each: &mut each, count: &mut count })
        .map_err(|error| NotCloudtrail(describe(&error)))?;
    if !seen_records {
        return Err(NotCloudtrail("a JSON object without \"Records\": not a CloudTrail log file".into()));
    }
    deserializer.end().map_err(|error| NotCloudtrail(format!("data after the document: {}", describe(&error))))?;
    Ok(count)
}

/// serde_json's message, or for a reader failure (truncated or corrupt gzip) the inflater's.
fn describe(error: &serde_json::Error) -> String {
    if error.is_io() {
        format!("truncated or corrupt gzip ({error})")
    } else if error.is_eof() {
        "the document ends early (truncated)".into()
    } else {
        format!("not a CloudTrail document: {error}")
    }
}

struct DocumentVisitor<'a, F> {
    each: &'a mut F,
    count: &'a mut u64,
}

impl<'de, F: FnMut(&serde_json::Value) -> std::io::Result<()>> Visitor<'de> for DocumentVisitor<'_, F> {
    /// Whether a `Records` key was there.
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a {\"Records\":[...]} document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key != "Records" {
                // Dropping it would lose data: such a file stays where it is. Refused at once,
                // without parsing its value: under `auto`, this is how a file that only lies
                // where CloudTrail writes is found out, and it may be large.
                return Err(A::Error::custom(format!("unexpected key {key:?} beside \"Records\"")));
            }
            if seen {
                return Err(A::Error::custom("\"Records\" is given twice"));
            }
            seen = true;
            map.next_value_seed(RecordsSeed { each: &mut *self.each, count: &mut *self.count })?;
        }
        Ok(seen)
    }
}

struct RecordsSeed<'a, F> {
    each: &'a mut F,
    count: &'a mut u64,
}

impl<'de, F: FnMut(&serde_json::Value) -> std::io::Result<()>> DeserializeSeed<'de> for RecordsSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(&serde_json::Value) -> std::io::Result<()>> Visitor<'de> for RecordsSeed<'_, F> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<serde_json::Value>()? {
            (self.each)(&record).map_err(|error| A::Error::custom(format!("cannot write a record: {error}")))?;
            *self.count += 1;
        }
        Ok(())
    }
}

/// True when `key` is named as CloudTrail names its log files, which is how `auto` knows them
/// before reading a byte (planning only sees keys): a `.json.gz` file under
/// `AWSLogs/<account>/CloudTrail/` (or `CloudTrail-Insight/`; an organization trail puts its
/// `o-…` id before the account), or a file named `<account>_CloudTrail_…json.gz` wherever it
/// lies. Digest files (`CloudTrail-Digest/`, `_CloudTrail-Digest_`) are not log files and do not
/// match. The content is still checked when the seal rewrites it (see [`to_ndjson_member`]).
pub fn named_as_cloudtrail(key: &str) -> bool {
    let (directories, file_name) = key.rsplit_once('/').unwrap_or(("", key));
    // Without allocating: `auto` asks this of every key it classifies, plain ones included.
    let suffix = b".json.gz";
    let name = file_name.as_bytes();
    if name.len() < suffix.len() || !name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix) {
        return false;
    }
    let is_account = |segment: &str| segment.len() == 12 && segment.bytes().all(|byte| byte.is_ascii_digit());
    let is_log_directory = |segment: &str| segment == "CloudTrail" || segment == "CloudTrail-Insight";
    let by_name = file_name.split_once('_').is_some_and(|(account, rest)| {
        is_account(account) && (rest.starts_with("CloudTrail_") || rest.starts_with("CloudTrail-Insight_"))
    });
    let segments: Vec<&str> = directories.split('/').collect();
    let by_layout = segments.iter().enumerate().filter(|(_, segment)| **segment == "AWSLogs").any(|(index, _)| {
        let mut rest = segments[index + 1..].iter().copied();
        let mut next = rest.next();
        if next.is_some_and(|segment| segment.starts_with("o-")) {
            next = rest.next();
        }
        next.is_some_and(is_account) && rest.next().is_some_and(is_log_directory)
    });
    by_name || by_layout
}

/// Inflates gzip bytes whole (tests, restore of small ranges).
pub fn inflate(gzip: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(gzip).read_to_end(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn records_become_one_compact_line_each_in_one_gzip_member() {
        let source = gzip(
            br#"{"Records": [ {"eventName":"GetObject", "n": 1},
            {"eventName": "PutObject","nested":{"a":[1, 2]}} ]}"#,
        );
        let member = to_ndjson_member(&source).unwrap();
        assert_eq!(member.records, 2);
        let text = String::from_utf8(inflate(&member.bytes).unwrap()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'), "every line ends, so members concatenate into lines");
        assert!(!text.contains(": "), "compact: {text}");
        let mut reader = flate2::bufread::GzDecoder::new(&member.bytes[..]);
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        assert!(reader.into_inner().is_empty(), "one member");
    }

    #[test]
    fn the_digest_ignores_whitespace_and_matches_between_a_document_and_its_ndjson() {
        let spaced = gzip(b"{ \"Records\" : [ {\"a\" : 1 , \"b\":\"x y\"} ,\n {\"a\":2} ] }");
        let tight = gzip(br#"{"Records":[{"a":1,"b":"x y"},{"a":2}]}"#);
        let digest = document_digest(&spaced).unwrap();
        assert_eq!(digest, document_digest(&tight).unwrap());
        assert_eq!(digest.records, 2);
        let member = to_ndjson_member(&spaced).unwrap();
        assert_eq!(ndjson_digest(&member.bytes).unwrap(), digest);
        let other = gzip(br#"{"Records":[{"a":1,"b":"x  y"},{"a":2}]}"#);
        assert_ne!(document_digest(&other).unwrap(), digest, "whitespace inside strings is data");
    }

    #[test]
    fn restore_as_source_rebuilds_a_document_with_the_same_records() {
        let source = gzip(br#"{"Records":[{"a":1},{"b":[true,null]}]}"#);
        let member = to_ndjson_member(&source).unwrap();
        let rebuilt = ndjson_to_document(&member.bytes).unwrap();
        assert_eq!(inflate(&rebuilt).unwrap(), br#"{"Records":[{"a":1},{"b":[true,null]}]}"#);
        assert_eq!(document_digest(&rebuilt).unwrap(), document_digest(&source).unwrap());
        let empty = to_ndjson_member(&gzip(br#"{"Records":[]}"#)).unwrap();
        assert_eq!(empty.records, 0);
        assert_eq!(inflate(&ndjson_to_document(&empty.bytes).unwrap()).unwrap(), br#"{"Records":[]}"#);
    }

    #[test]
    fn cloudtrail_log_files_are_known_by_their_layout_or_their_name() {
        for key in [
            "AWSLogs/123456789012/CloudTrail/eu-west-1/2024/01/14/123456789012_CloudTrail_eu-west-1_20240114T0005Z_a.json.gz",
            "trail/AWSLogs/o-a1b2c3d4e5/123456789012/CloudTrail/us-east-1/2024/01/14/x.json.gz",
            "AWSLogs/123456789012/CloudTrail-Insight/us-east-1/2024/01/14/x.JSON.GZ",
            "moved/2024/01/14/123456789012_CloudTrail_eu-west-1_20240114T0005Z_a.json.gz",
        ] {
            assert!(named_as_cloudtrail(key), "{key}");
        }
        for key in [
            "AWSLogs/123456789012/CloudTrail-Digest/eu-west-1/2024/01/14/123456789012_CloudTrail-Digest_eu-west-1_x.json.gz",
            "AWSLogs/123456789012/CloudTrail/eu-west-1/2024/01/14/x.json",
            "AWSLogs/123456789012/CloudTrail/eu-west-1/2024/01/14/x.log.gz",
            "AWSLogs/123456789012/elasticloadbalancing/us-east-1/2024/01/14/x.json.gz",
            "AWSLogs/12345/CloudTrail/eu-west-1/2024/01/14/x.json.gz",
            "logs/CloudTrail/2024/01/14/x.json.gz",
            "logs/2024/01/14/12345678901_CloudTrail_x.json.gz",
            "AWSLogs",
            "",
        ] {
            assert!(!named_as_cloudtrail(key), "{key}");
        }
    }

    #[test]
    fn sources_that_are_not_whole_cloudtrail_documents_are_refused_with_the_reason() {
        let whole = gzip(br#"{"Records":[{"eventName":"GetObject"},{"eventName":"PutObject"}]}"#);
        for cut in [1, 5, 12, whole.len() / 2, whole.len() - 4] {
            let error = to_ndjson_member(&whole[..cut]).unwrap_err();
            assert!(error.0.contains("truncated") || error.0.contains("not gzip"), "cut at {cut}: {error}");
        }
        let refused = |text: &[u8]| to_ndjson_member(&gzip(text)).unwrap_err().0;
        assert!(refused(br#"{"Records":{}}"#).contains("not a CloudTrail document"));
        assert!(refused(br#"{"digest":"x","Records":[]}"#).contains("unexpected key \"digest\""));
        assert!(refused(br#"{"other":1}"#).contains("unexpected key"));
        let unfinished_value = refused(br#"{"other":[1,2,"#);
        assert!(unfinished_value.contains("unexpected key"), "refused before its value is parsed: {unfinished_value}");
        assert!(refused(br#"{}"#).contains("without \"Records\""));
        assert!(refused(br#"{"Records":[]} {"Records":[]}"#).contains("data after the document"));
        assert!(refused(br#"[1,2]"#).contains("not a CloudTrail document"));
        assert!(to_ndjson_member(b"{\"Records\":[]}").unwrap_err().0.contains("not gzip"));
    }
}
