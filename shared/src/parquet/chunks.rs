//! Copying row groups between files without decoding them, and locating a source's rows.

use std::io::Write;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result as ParquetResult};
use parquet::file::metadata::{ColumnChunkMetaData, KeyValue, ParquetMetaData, RowGroupMetaData};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnDescPtr, SchemaDescriptor};

use super::footer::{SchemaKey, ARROW_SCHEMA_KEY};

/// Some bytes of a file, held with their offset in it: a [`ChunkReader`] over the column
/// chunks of a few row groups, without the rest of the file in memory.
#[derive(Debug, Clone)]
pub struct OffsetBytes {
    pub start: u64,
    pub bytes: Bytes,
}

impl OffsetBytes {
    fn slice_at(&self, start: u64, length: Option<usize>) -> ParquetResult<Bytes> {
        let at = start.checked_sub(self.start).map(|at| at as usize).filter(|at| *at <= self.bytes.len());
        let Some(at) = at else {
            return Err(ParquetError::EOF(format!(
                "offset {start} is outside the bytes held ({} to {})",
                self.start,
                self.start + self.bytes.len() as u64
            )));
        };
        let end = match length {
            Some(length) if at + length <= self.bytes.len() => at + length,
            Some(length) => return Err(ParquetError::EOF(format!("{length} bytes at {start} are not all held"))),
            None => self.bytes.len(),
        };
        Ok(self.bytes.slice(at..end))
    }
}

impl Length for OffsetBytes {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for OffsetBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> ParquetResult<Self::T> {
        Ok(self.slice_at(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> ParquetResult<Bytes> {
        self.slice_at(start, Some(length))
    }
}

/// Writer properties of outputs: the columns are copied, so only what the footer says is set.
pub fn output_properties(schema: &SchemaKey, created_by: &str) -> Arc<WriterProperties> {
    let key_values = schema
        .arrow_schema
        .as_ref()
        .map(|arrow_schema| vec![KeyValue::new(ARROW_SCHEMA_KEY.to_string(), arrow_schema.clone())]);
    Arc::new(
        WriterProperties::builder().set_created_by(created_by.to_string()).set_key_value_metadata(key_values).build(),
    )
}

/// Appends row group `group` of a source, whose column chunks `reader` holds, to `writer` as a
/// row group of its own: each column chunk's bytes are copied as they are, and its metadata
/// (statistics, encodings, codec) moved to its new offset.
///
/// `schema` is the output's: each chunk's metadata is rebuilt on its column descriptors, so
/// that the output's footer, which holds every row group's metadata until the file is closed,
/// does not keep every source's whole schema alive with it (some 20 KiB a source of 37
/// columns).
pub fn append_row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    schema: &SchemaDescriptor,
    group: &RowGroupMetaData,
    reader: &OffsetBytes,
) -> ParquetResult<()> {
    let mut out = writer.next_row_group()?;
    for (index, column) in group.columns().iter().enumerate() {
        let close = ColumnCloseResult {
            bytes_written: column.compressed_size() as u64,
            rows_written: group.num_rows() as u64,
            metadata: on_descriptor(column, schema.column(index))?,
            bloom_filter: None,
            column_index: None,
            offset_index: None,
        };
        out.append_column(reader, close)?;
    }
    out.close()?;
    Ok(())
}

/// `column`'s metadata on another (equal) descriptor: the fields the writer keeps when it
/// appends a chunk, no more.
fn on_descriptor(column: &ColumnChunkMetaData, descriptor: ColumnDescPtr) -> ParquetResult<ColumnChunkMetaData> {
    let mut builder = ColumnChunkMetaData::builder(descriptor)
        .set_compression_codec(column.compression_codec())
        .set_encodings_mask(*column.encodings_mask())
        .set_total_compressed_size(column.compressed_size())
        .set_total_uncompressed_size(column.uncompressed_size())
        .set_num_values(column.num_values())
        .set_data_page_offset(column.data_page_offset())
        .set_dictionary_page_offset(column.dictionary_page_offset())
        .set_unencoded_byte_array_data_bytes(column.unencoded_byte_array_data_bytes())
        .set_repetition_level_histogram(column.repetition_level_histogram().cloned())
        .set_definition_level_histogram(column.definition_level_histogram().cloned());
    if let Some(statistics) = column.statistics() {
        builder = builder.set_statistics(statistics.clone());
    }
    if let Some(geo_statistics) = column.geo_statistics() {
        builder = builder.set_geo_statistics(Box::new(geo_statistics.clone()));
    }
    if let Some(page_encoding_stats) = column.page_encoding_stats() {
        builder = builder.set_page_encoding_stats(page_encoding_stats.clone());
    }
    builder.build()
}

/// Where a source's rows are in its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRows {
    /// The output's row index of the source's first row.
    pub first_row: u64,
    pub rows: u64,
    /// The output's row groups that hold them, all of them and nothing else.
    pub row_groups: (usize, usize),
}

/// The row groups of an output whose column chunks lie in `bytes` (a source's placement):
/// each source's row groups were written consecutively, so they are exactly those.
pub fn rows_in_range(metadata: &ParquetMetaData, bytes: Range<u64>) -> SourceRows {
    let mut first_row = 0u64;
    let mut found: Option<SourceRows> = None;
    for (index, group) in metadata.row_groups().iter().enumerate() {
        let start = group
            .columns()
            .iter()
            .map(|column| column.dictionary_page_offset().unwrap_or_else(|| column.data_page_offset()))
            .min()
            .unwrap_or(0)
            .max(0) as u64;
        let rows = group.num_rows().max(0) as u64;
        if bytes.contains(&start) {
            let entry = found.get_or_insert(SourceRows { first_row, rows: 0, row_groups: (index, index) });
            entry.rows += rows;
            entry.row_groups.1 = index + 1;
        }
        first_row += rows;
    }
    found.unwrap_or(SourceRows { first_row, rows: 0, row_groups: (0, 0) })
}

/// A standalone Parquet file holding `groups` (row groups of a file of schema `schema`), whose
/// column chunks `reader` holds: restore's answer for one source of an output.
pub fn standalone_file(
    schema: &SchemaKey,
    groups: &[RowGroupMetaData],
    reader: &OffsetBytes,
    created_by: &str,
) -> ParquetResult<Vec<u8>> {
    let properties = output_properties(schema, created_by);
    let mut writer = SerializedFileWriter::new(Vec::new(), Arc::clone(&schema.schema), properties)?;
    let descriptors = SchemaDescriptor::new(Arc::clone(&schema.schema));
    for group in groups {
        append_row_group(&mut writer, &descriptors, group, reader)?;
    }
    writer.into_inner()
}
