//! A Parquet file's footer, read with ranged GETs and checked before anything is copied.

use std::ops::Range;
use std::sync::Arc;

use parquet::file::metadata::{FooterTail, KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::schema::types::Type;

use super::chunks::OffsetBytes;
use crate::ports::{GetOptions, ObjectStore, StoreError};

/// The magic a Parquet file starts and ends with.
pub const MAGIC: &[u8; 4] = b"PAR1";
/// The file's last 8 bytes: the footer's length, then the magic.
const TAIL_BYTES: u64 = 8;
/// The first GET reads this much of the file's end: most footers of small files fit, so one
/// request gets it (a small file's header too); a longer footer takes a second GET.
pub const FIRST_READ_BYTES: u64 = 64 * 1024;
/// Footers longer than this are refused: a corrupt length must not size an allocation, and
/// the seal holds a footer per source read ahead. A small file's footer is a few KiB; one
/// of 8 MiB describes tens of thousands of column chunks, no small file.
pub const MAX_FOOTER_BYTES: u64 = 8 * 1024 * 1024;
/// The Arrow schema Arrow writers store in the footer; carried into outputs.
pub const ARROW_SCHEMA_KEY: &str = "ARROW:schema";

/// Why a source is not a Parquet file the seal can merge; the text goes into its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParquet(pub String);

/// What decides whether two files may share an output.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaKey {
    pub schema: Arc<Type>,
    /// The Arrow schema stored by Arrow writers (timezones, dictionary types), if any.
    pub arrow_schema: Option<String>,
}

/// A source's decoded footer, with the byte span of each row group's column chunks.
#[derive(Debug, Clone)]
pub struct ParquetFooter {
    pub metadata: ParquetMetaData,
    /// Per row group: the bytes from its first column chunk's start to its last one's end.
    pub row_group_bytes: Vec<Range<u64>>,
}

impl ParquetFooter {
    pub fn schema_key(&self) -> SchemaKey {
        let file = self.metadata.file_metadata();
        SchemaKey {
            schema: file.schema_descr().root_schema_ptr(),
            arrow_schema: arrow_schema(file.key_value_metadata()),
        }
    }

    pub fn rows(&self) -> u64 {
        self.metadata.row_groups().iter().map(|group| group.num_rows() as u64).sum()
    }
}

fn arrow_schema(key_values: Option<&Vec<KeyValue>>) -> Option<String> {
    key_values?.iter().find(|entry| entry.key == ARROW_SCHEMA_KEY).and_then(|entry| entry.value.clone())
}

/// Reads and checks the footer of `key`, `size` bytes as recorded, only as the version `etag`
/// (a changed object fails with [`StoreError::PreconditionFailed`], as a changed size does).
/// Two GETs at most: the file's last [`FIRST_READ_BYTES`], then the footer if longer.
pub async fn read_footer(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    size: u64,
    etag: Option<&str>,
) -> Result<Result<ParquetFooter, BadParquet>, StoreError> {
    Ok(read_footer_and_tail(store, bucket, key, size, etag).await?.map(|(footer, _)| footer))
}

/// As [`read_footer`], with the bytes of the first read (the file's last
/// [`FIRST_READ_BYTES`], the whole of a small file): the seal copies column chunks that lie
/// in them from there, without another GET.
pub async fn read_footer_and_tail(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    size: u64,
    etag: Option<&str>,
) -> Result<Result<(ParquetFooter, OffsetBytes), BadParquet>, StoreError> {
    let minimum = MAGIC.len() as u64 + TAIL_BYTES;
    if size < minimum {
        return Ok(Err(BadParquet(format!("{size} bytes is too short for a Parquet file ({minimum} at least)"))));
    }
    let first = size.saturating_sub(FIRST_READ_BYTES);
    let tail = get_range(store, bucket, key, size, etag, first..size).await?;
    let footer_length = match footer_length(&tail[tail.len() - TAIL_BYTES as usize..], size) {
        Ok(length) => length,
        Err(bad) => return Ok(Err(bad)),
    };
    let footer_start = size - TAIL_BYTES - footer_length;
    let footer = if footer_start >= first {
        tail.slice((footer_start - first) as usize..(size - TAIL_BYTES - first) as usize)
    } else {
        get_range(store, bucket, key, size, etag, footer_start..size - TAIL_BYTES).await?
    };
    if first == 0 && &tail[..MAGIC.len()] != MAGIC {
        return Ok(Err(BadParquet("does not start with the Parquet magic PAR1".into())));
    }
    Ok(parse_footer(&footer, footer_start).map(|footer| (footer, OffsetBytes { start: first, bytes: tail })))
}

/// The footer's length from the file's last 8 bytes, checked against the file's size.
pub fn footer_length(last_8: &[u8], size: u64) -> Result<u64, BadParquet> {
    let tail = FooterTail::try_from(last_8)
        .map_err(|_| BadParquet("does not end with the Parquet magic PAR1: truncated, or not a Parquet file".into()))?;
    if tail.is_encrypted_footer() {
        return Err(BadParquet("has an encrypted footer (PARE): encrypted Parquet is not merged".into()));
    }
    let length = tail.metadata_length() as u64;
    if length == 0 || length + TAIL_BYTES + MAGIC.len() as u64 > size {
        return Err(BadParquet(format!("its footer length {length} does not fit a file of {size} bytes")));
    }
    if length > MAX_FOOTER_BYTES {
        return Err(BadParquet(format!(
            "its footer is {length} bytes, over the {MAX_FOOTER_BYTES} merged: not a small file"
        )));
    }
    Ok(length)
}

/// The footer of a whole Parquet file held in memory (an output read back to be checked).
pub fn of_file(file: &[u8]) -> Result<ParquetFooter, BadParquet> {
    let size = file.len() as u64;
    let tail = file.len().checked_sub(TAIL_BYTES as usize).ok_or(BadParquet("too short for a Parquet file".into()))?;
    let length = footer_length(&file[tail..], size)?;
    let footer_start = size - TAIL_BYTES - length;
    parse_footer(&file[footer_start as usize..tail], footer_start)
}

/// Decodes a footer that starts at `footer_start` and checks every column chunk lies between
/// the header and the footer, so that copying one never reads past the data.
pub fn parse_footer(footer: &[u8], footer_start: u64) -> Result<ParquetFooter, BadParquet> {
    let metadata = ParquetMetaDataReader::decode_metadata(footer)
        .map_err(|error| BadParquet(format!("its footer cannot be decoded: {error}")))?;
    let columns = metadata.file_metadata().schema_descr().num_columns();
    if columns == 0 {
        return Err(BadParquet("its schema has no columns".into()));
    }
    let mut row_group_bytes = Vec::with_capacity(metadata.num_row_groups());
    for (index, group) in metadata.row_groups().iter().enumerate() {
        let bad = |what: String| BadParquet(format!("row group {index}: {what}"));
        if group.num_rows() < 0 {
            return Err(bad(format!("negative row count {}", group.num_rows())));
        }
        if group.num_columns() != columns {
            return Err(bad(format!("{} column chunks for {columns} columns", group.num_columns())));
        }
        let (mut start, mut end) = (u64::MAX, 0u64);
        for column in group.columns() {
            if column.file_path().is_some() {
                return Err(bad("a column chunk lives in another file".into()));
            }
            let chunk_start = column.dictionary_page_offset().unwrap_or_else(|| column.data_page_offset());
            let length = column.compressed_size();
            let chunk_end = chunk_start.checked_add(length);
            match (u64::try_from(chunk_start), chunk_end.and_then(|end| u64::try_from(end).ok())) {
                (Ok(chunk_start), Some(chunk_end))
                    if length >= 0 && chunk_start >= MAGIC.len() as u64 && chunk_end <= footer_start =>
                {
                    start = start.min(chunk_start);
                    end = end.max(chunk_end);
                }
                _ => {
                    return Err(bad(format!(
                        "column chunk at {chunk_start} of {length} bytes lies outside the data (bytes 4 to \
                         {footer_start})"
                    )))
                }
            }
        }
        row_group_bytes.push(start..end);
    }
    Ok(ParquetFooter { metadata, row_group_bytes })
}

/// A range of `key` as the recorded version; a changed size counts as a changed object.
async fn get_range(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    size: u64,
    etag: Option<&str>,
    range: Range<u64>,
) -> Result<bytes::Bytes, StoreError> {
    let expected = range.end - range.start;
    let options = GetOptions { range: Some(range), if_match: etag.map(str::to_owned) };
    let got = store.get(bucket, key, options).await?;
    if got.meta.size != size {
        return Err(StoreError::PreconditionFailed { bucket: bucket.into(), key: key.into() });
    }
    let bytes = got.bytes().await?;
    if bytes.len() as u64 != expected {
        return Err(StoreError::backend(
            bucket,
            key,
            format!("a ranged GET returned {} bytes where {expected} were asked for; retry", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Reads `range` of a file as [`read_footer`] does (pinned to `etag`, size checked).
pub async fn read_range(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    size: u64,
    etag: Option<&str>,
    range: Range<u64>,
) -> Result<bytes::Bytes, StoreError> {
    get_range(store, bucket, key, size, etag, range).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::parquet_files::{fake_file, file_bytes, FileSpec, Schema};

    /// What `read_footer` decides, on a file in memory.
    fn footer_of(bytes: &[u8]) -> Result<ParquetFooter, BadParquet> {
        let size = bytes.len() as u64;
        if size < MAGIC.len() as u64 + TAIL_BYTES {
            return Err(BadParquet("too short".into()));
        }
        let length = footer_length(&bytes[bytes.len() - TAIL_BYTES as usize..], size)?;
        let footer_start = size - TAIL_BYTES - length;
        parse_footer(&bytes[footer_start as usize..bytes.len() - TAIL_BYTES as usize], footer_start)
    }

    #[test]
    fn truncated_fake_and_garbled_files_are_refused_with_a_reason_never_a_panic() {
        let whole = file_bytes(&FileSpec::from_seed(3, Schema::Wide)).unwrap();
        let footer = footer_of(&whole).unwrap();
        assert_eq!(footer.row_group_bytes.len(), footer.metadata.num_row_groups());
        assert!(footer.row_group_bytes.iter().all(|span| span.start >= 4 && span.end <= whole.len() as u64));
        for cut in (0..whole.len()).step_by(5) {
            assert!(footer_of(&whole[..cut]).is_err(), "cut at {cut} of {}", whole.len());
        }
        let fake = footer_of(&fake_file()).unwrap_err().0;
        assert!(fake.contains("footer cannot be decoded"), "{fake}");
        let last = whole.len();
        let mut encrypted = whole.clone();
        encrypted[last - 4..].copy_from_slice(b"PARE");
        assert!(footer_of(&encrypted).unwrap_err().0.contains("encrypted"));
        let mut too_long = whole.clone();
        too_long[last - 8..last - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(footer_of(&too_long).unwrap_err().0.contains("does not fit"));
        // Every byte of the footer flipped in turn: decoded or refused, never a panic, and a
        // footer that still decodes never points a chunk outside the data.
        let length = footer_length(&whole[last - 8..], last as u64).unwrap() as usize;
        for position in (last - 8 - length..last - 8).step_by(3) {
            let mut garbled = whole.clone();
            garbled[position] ^= 0x5A;
            if let Ok(footer) = footer_of(&garbled) {
                assert!(footer.row_group_bytes.iter().all(|span| span.end <= (last - 8 - length) as u64));
            }
        }
    }
}
