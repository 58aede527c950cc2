//! A digest of the values a column chunk decodes to: what `verify` compares between an output
//! and a source's original, since their bytes around the chunks differ.

use std::sync::Arc;

use parquet::column::reader::{get_column_reader, ColumnReader, ColumnReaderImpl};
use parquet::data_type::{AsBytes, DataType};
use parquet::errors::Result as ParquetResult;
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::serialized_reader::SerializedPageReader;
use sha2::{Digest, Sha256};

use super::chunks::OffsetBytes;

/// Records decoded at a time: bounds memory to a batch of one column.
const BATCH_RECORDS: usize = 4096;

/// One column chunk, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDigest {
    /// sha256 over the repetition levels, definition levels and values, in order.
    pub sha256: String,
    pub records: u64,
}

/// Decodes every column chunk of `group` (its bytes in `reader`): a page that does not decode
/// is an error, and the digests say whether two copies hold the same values.
pub fn row_group_digests(group: &RowGroupMetaData, reader: &Arc<OffsetBytes>) -> ParquetResult<Vec<ChunkDigest>> {
    let rows = group.num_rows().max(0) as usize;
    let mut digests = Vec::with_capacity(group.num_columns());
    for column in group.columns() {
        let pages = SerializedPageReader::new(Arc::clone(reader), column, rows, None)?;
        let digest = match get_column_reader(column.column_descr_ptr(), Box::new(pages)) {
            ColumnReader::BoolColumnReader(reader) => digest(reader)?,
            ColumnReader::Int32ColumnReader(reader) => digest(reader)?,
            ColumnReader::Int64ColumnReader(reader) => digest(reader)?,
            ColumnReader::Int96ColumnReader(reader) => digest(reader)?,
            ColumnReader::FloatColumnReader(reader) => digest(reader)?,
            ColumnReader::DoubleColumnReader(reader) => digest(reader)?,
            ColumnReader::ByteArrayColumnReader(reader) => digest(reader)?,
            ColumnReader::FixedLenByteArrayColumnReader(reader) => digest(reader)?,
        };
        digests.push(digest);
    }
    Ok(digests)
}

fn digest<T: DataType>(mut reader: ColumnReaderImpl<T>) -> ParquetResult<ChunkDigest>
where
    T::T: AsBytes,
{
    let mut hasher = Sha256::new();
    let (mut values, mut definitions, mut repetitions) = (Vec::new(), Vec::new(), Vec::new());
    let mut records = 0u64;
    loop {
        values.clear();
        definitions.clear();
        repetitions.clear();
        let (read, _, _) =
            reader.read_records(BATCH_RECORDS, Some(&mut definitions), Some(&mut repetitions), &mut values)?;
        if read == 0 {
            break;
        }
        records += read as u64;
        for level in repetitions.iter().chain(&definitions) {
            hasher.update(level.to_le_bytes());
        }
        for value in &values {
            let bytes = value.as_bytes();
            // Length first, so that byte arrays cannot run into each other.
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
    }
    Ok(ChunkDigest { sha256: hex::encode(hasher.finalize()), records })
}

/// The rows and the digests of every column chunk of a whole Parquet file in memory (a
/// restored file, a small original): two files hold the same rows and values when these are
/// equal, whatever their bytes.
pub fn file_digests(file: &bytes::Bytes) -> Result<(u64, Vec<ChunkDigest>), String> {
    let footer = super::footer::of_file(file).map_err(|bad| bad.0)?;
    let reader = Arc::new(OffsetBytes { start: 0, bytes: file.clone() });
    let mut digests = Vec::new();
    for group in footer.metadata.row_groups() {
        digests.extend(row_group_digests(group, &reader).map_err(|error| error.to_string())?);
    }
    Ok((footer.rows(), digests))
}
