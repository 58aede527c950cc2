//! Compressed outputs from plain-text sources (`COMPACTOR_COMPRESS`, or `:zstd` on a
//! `COMPACTOR_FORMATS` rule).
//!
//! Each source becomes a zstd frame (or a gzip member) of its own. Concatenated frames are one
//! valid zstd stream (concatenated members one gzip stream), whose text is the sources' texts
//! in order, so query engines read the output as they read any `.zst` or `.gz` file; and each
//! source's byte range in the output is still exact: its frame. Restore reads that one range
//! and decompresses it; verify checks the frame's sha256 (the placement's, what the output
//! holds) and, against the sources, decompresses the frame and compares it with the original.
//!
//! The placement keeps one sha256: the frame's. The original's bytes are still checked end to
//! end without a second digest: zstd frames carry a checksum of their content (XXH64) and gzip
//! members a CRC-32 and length, both checked as they decompress, and the decompressed length
//! must be the source's recorded size.
//!
//! Which outputs hold frames is said by their key, never by the configuration (which may have
//! changed since the seal): their extension starts with [`FRAMED_MARKER`]
//! (`compacted-g000001-p00001-framed.json.zst`). In such an output a source already
//! compressed by its content (gzip, zstd, bzip2, xz or Parquet bytes under a plain name) goes
//! in as it is, never compressed twice; its range is then exactly as long as the source, and
//! [`compress_frame`] makes sure no frame ever is, so restore tells the two apart by length.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How an output's sources are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Sources go in as they are (the default).
    #[default]
    None,
    /// Each source a zstd frame, at [`ZSTD_LEVEL`].
    Zstd,
    /// Each source a gzip member, at [`GZIP_LEVEL`].
    Gzip,
}

/// zstd's own default: about as fast as gzip's fastest level, and smaller than its best.
pub const ZSTD_LEVEL: i32 = 3;
/// gzip's usual default.
pub const GZIP_LEVEL: u32 = 6;

/// What an output's extension starts with when its sources are frames we compressed.
pub const FRAMED_MARKER: &str = "-framed";

/// Extensions of keys already compressed by their name: never compressed again.
pub const COMPRESSED_EXTENSIONS: &[&str] = &["gz", "gzip", "zst", "zstd", "bz2", "xz", "lz4", "br", "snappy"];

/// A zstd frame whose content is `\n` alone (single segment, no checksum, one raw block of one
/// byte): the separator after a source of a zstd output whose text lacks a final newline, as
/// [`super::GZIP_NEWLINE_MEMBER`] is for gzip.
pub const ZSTD_NEWLINE_FRAME: [u8; 10] = [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x01, 0x09, 0x00, 0x00, 0x0a];

impl Compression {
    /// Every value, as its text, for messages.
    pub const NAMES: &'static str = "zstd, gzip or none";

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }

    /// What the output's key ends with.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Gzip => ".gz",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            other => Err(format!("compression {other:?} is not known: use {}", Compression::NAMES)),
        }
    }
}

/// The compression of an output whose sources are frames we compressed, from its key alone;
/// `None` for every other output (sources as they are, or rewritten by a format).
pub fn framed_compression(output_key: &str) -> Option<Compression> {
    let file_name = output_key.rsplit('/').next().unwrap_or(output_key);
    // The marker ends the stem (`compacted-g…-p…`, which has no dot): an extension taken from
    // a source's key comes after the first dot, so no source name can pass for it.
    let (stem, _) = file_name.split_once('.')?;
    if !stem.ends_with(FRAMED_MARKER) {
        return None;
    }
    if file_name.ends_with(Compression::Zstd.suffix()) {
        Some(Compression::Zstd)
    } else if file_name.ends_with(Compression::Gzip.suffix()) {
        Some(Compression::Gzip)
    } else {
        None
    }
}

/// An output key without the compression suffix of a framed output (`….csv.zst` → `….csv`), to
/// tell what its text is.
pub fn text_key(output_key: &str) -> &str {
    match framed_compression(output_key) {
        Some(compression) => output_key.strip_suffix(compression.suffix()).unwrap_or(output_key),
        None => output_key,
    }
}

/// What a source's bytes already are, by their first bytes, when they are compressed (or
/// Parquet): such a source goes into a compressed output as it is.
pub fn compressed_by_content(bytes: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (b"PAR1", "parquet"),
    ];
    MAGICS.iter().find(|(magic, _)| bytes.starts_with(magic)).map(|(_, name)| *name)
}

/// `content` as one frame (member) of `compression`; empty content is no frame at all (an
/// empty range). The frame's length never equals `source_size`, the size of the source object
/// it stands for, so that restore can tell it from a source placed as it is (see the module
/// doc): should it, the frame is written again without zstd's content checksum (4 bytes
/// shorter) or with an empty gzip extra field (2 bytes longer).
pub fn compress_frame(compression: Compression, content: &[u8], source_size: u64) -> std::io::Result<Vec<u8>> {
    if content.is_empty() || compression == Compression::None {
        return Ok(content.to_vec());
    }
    let frame = encode(compression, content, false)?;
    if frame.len() as u64 != source_size {
        return Ok(frame);
    }
    encode(compression, content, true)
}

fn encode(compression: Compression, content: &[u8], length_changed: bool) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(content.to_vec()),
        Compression::Zstd => {
            let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
            compressor.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(!length_changed))?;
            compressor.compress(content)
        }
        Compression::Gzip => {
            let mut builder = flate2::GzBuilder::new();
            if length_changed {
                builder = builder.extra(Vec::new());
            }
            let mut encoder = builder.write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
            encoder.write_all(content)?;
            encoder.finish()
        }
    }
}

/// The text of a range of frames (members), at most `max_bytes` of it: a range that would
/// decompress to more is refused rather than inflated without bound.
pub fn decompress_frames(compression: Compression, frames: &[u8], max_bytes: u64) -> Result<Vec<u8>, String> {
    // No frame at all is no text (an empty source, or every line of it set aside); decoders
    // call an empty input a truncated frame.
    if frames.is_empty() {
        return Ok(Vec::new());
    }
    let reader: Box<dyn Read + '_> = match compression {
        Compression::None => return Ok(frames.to_vec()),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(frames).map_err(|error| error.to_string())?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(frames)),
    };
    read_bounded(reader, max_bytes)
}

/// The text of the first frame (member) of `bytes` alone, at most `max_bytes` of it: a CSV
/// output's header, read from a prefix of the output that may go on into the next frame.
pub fn decompress_first_frame(compression: Compression, bytes: &[u8], max_bytes: u64) -> Result<Vec<u8>, String> {
    let reader: Box<dyn Read + '_> = match compression {
        Compression::None => return Ok(bytes.iter().copied().take(max_bytes as usize).collect()),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(bytes).map_err(|error| error.to_string())?.single_frame())
        }
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(bytes)),
    };
    read_bounded(reader, max_bytes)
}

fn read_bounded(reader: impl Read, max_bytes: u64) -> Result<Vec<u8>, String> {
    let mut text = Vec::new();
    reader.take(max_bytes.saturating_add(1)).read_to_end(&mut text).map_err(|error| error.to_string())?;
    if text.len() as u64 > max_bytes {
        return Err(format!("it decompresses to more than the {max_bytes} bytes expected"));
    }
    Ok(text)
}

/// The most bytes a frame (member) of `content_bytes` of text can take, stored uncompressed:
/// zstd adds 3 bytes a 128 KiB block, deflate 5 a 64 KiB block, both a header and a checksum.
pub fn max_frame_bytes(content_bytes: u64) -> u64 {
    content_bytes + content_bytes / 1024 + 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressions_print_and_parse_back_and_a_bad_one_lists_the_values() {
        for compression in [Compression::None, Compression::Zstd, Compression::Gzip] {
            assert_eq!(compression.to_string().parse::<Compression>().unwrap(), compression);
        }
        let error = "lz4".parse::<Compression>().unwrap_err();
        assert_eq!(error, "compression \"lz4\" is not known: use zstd, gzip or none");
    }

    #[test]
    fn the_zstd_newline_frame_decompresses_to_a_newline() {
        assert_eq!(decompress_frames(Compression::Zstd, &ZSTD_NEWLINE_FRAME, 10).unwrap(), b"\n");
    }

    #[test]
    fn frames_decompress_to_their_content_one_by_one_and_concatenated() {
        let first = b"{\"a\":1}\n{\"a\":2}\n".repeat(50);
        let second = b"line without newline".to_vec();
        for compression in [Compression::Zstd, Compression::Gzip] {
            let frame_one = compress_frame(compression, &first, first.len() as u64).unwrap();
            let frame_two = compress_frame(compression, &second, second.len() as u64).unwrap();
            assert!(frame_one.len() < first.len() / 5, "{compression}: repetitive lines shrink");
            assert_eq!(decompress_frames(compression, &frame_one, first.len() as u64).unwrap(), first);
            let both = [frame_one.clone(), frame_two].concat();
            let whole = decompress_frames(compression, &both, 1 << 20).unwrap();
            assert_eq!(whole, [first.clone(), second.clone()].concat(), "{compression}: one stream of both");
            assert_eq!(decompress_first_frame(compression, &both, 1 << 20).unwrap(), first, "{compression}");
            assert!(decompress_frames(compression, &frame_one, first.len() as u64 - 1).is_err(), "bounded");
            assert!(decompress_frames(compression, &frame_one[..frame_one.len() - 3], 1 << 20).is_err(), "cut");
            assert!(frame_one.len() as u64 <= max_frame_bytes(first.len() as u64));
        }
        assert_eq!(compress_frame(Compression::Zstd, b"", 0).unwrap(), b"", "an empty source is no frame");
        assert_eq!(decompress_frames(Compression::Gzip, b"", 0).unwrap(), b"", "and no frame is no text");
    }

    #[test]
    fn a_frame_is_never_as_long_as_its_source() {
        let content = b"abcdefghij".repeat(3);
        for compression in [Compression::Zstd, Compression::Gzip] {
            let usual = compress_frame(compression, &content, 0).unwrap();
            let as_long = compress_frame(compression, &content, usual.len() as u64).unwrap();
            assert_ne!(as_long.len(), usual.len(), "{compression}");
            assert_eq!(decompress_frames(compression, &as_long, 100).unwrap(), content, "{compression}");
        }
    }

    #[test]
    fn framed_outputs_are_told_by_their_key() {
        assert_eq!(framed_compression("c/p/compacted-g000001-p00001-framed.json.zst"), Some(Compression::Zstd));
        assert_eq!(framed_compression("c/p/compacted-g000001-p00001-framed.gz"), Some(Compression::Gzip));
        assert_eq!(framed_compression("c/p/compacted-g000001-p00001.json.gz"), None, "gzip sources as they are");
        assert_eq!(framed_compression("c/p-framed/compacted-g000001-p00001.zst"), None, "folders do not count");
        assert_eq!(framed_compression("c/compacted-g000001-p00001.x-framed.gz"), None, "nor a source's extension");
        assert_eq!(text_key("c/compacted-g1-p1-framed.csv.zst"), "c/compacted-g1-p1-framed.csv");
        assert_eq!(text_key("c/compacted-g1-p1.csv"), "c/compacted-g1-p1.csv");
    }

    #[test]
    fn compressed_content_is_known_by_its_magic() {
        assert_eq!(compressed_by_content(&[0x1f, 0x8b, 8, 0]), Some("gzip"));
        assert_eq!(compressed_by_content(&ZSTD_NEWLINE_FRAME), Some("zstd"));
        assert_eq!(compressed_by_content(b"PAR1...."), Some("parquet"));
        assert_eq!(compressed_by_content(b"{\"a\":1}"), None);
        assert_eq!(compressed_by_content(b""), None);
    }
}
