//! Small row groups rewritten into larger ones (`COMPACTOR_PARQUET_ROW_GROUPS=rewrite`): values
//! decoded with the parquet crate's column readers and written through its column writers.
//!
//! A source's rows then share an output row group with other sources' rows, so nothing in the
//! output is a byte range of its own: its placement means rows (the output's row index of its
//! first row, its row count), and instead of a sha256 of bytes it holds a [`RowsDigest`] of its
//! decoded values. That digest does not depend on how rows are split into row groups, pages or
//! read batches (levels and values go into separate hashers per column), so the seal (reading
//! the source's row groups), `verify` (cutting an output row group at recorded first rows),
//! `restore` and a comparison with the original all compute the same one for the same rows.
//!
//! - [`RowGroupBuilder`]: the output's open row group: one column writer per leaf column, each
//!   writing its encoded pages into a buffer of its own, appended to the file when the group
//!   closes (the parquet crate's `append_column`, as copied chunks are). A source is decoded
//!   whole first (bounded by the seal's limit on its uncompressed size), then written: a source
//!   whose pages do not decode leaves the open row group untouched.
//! - [`digest_segments`]: one column chunk of an output read once, cut into the rows of several
//!   sources, each hashed on its own (verify), or written to a new file (restore).

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::basic::{Compression, Type as PhysicalType, ZstdLevel};
use parquet::column::page::{CompressedPage, PageWriteSpec, PageWriter};
use parquet::column::reader::{get_column_reader, ColumnReader, ColumnReaderImpl};
use parquet::column::writer::{get_column_writer, ColumnWriter};
use parquet::data_type::{
    AsBytes, BoolType, ByteArrayType, DataType, DoubleType, FixedLenByteArrayType, FloatType, Int32Type, Int64Type,
    Int96Type,
};
use parquet::errors::{ParquetError, Result as ParquetResult};
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::properties::{WriterProperties, WriterPropertiesPtr};
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::file::writer::{SerializedFileWriter, SerializedPageWriter, TrackedWrite};
use parquet::schema::types::{ColumnDescPtr, SchemaDescriptor};
use sha2::{Digest, Sha256};

use super::chunks::OffsetBytes;

/// Calls `$function::<T>` for the data type of a physical type.
macro_rules! by_physical_type {
    ($physical:expr, $function:ident, ($($argument:expr),*)) => {
        match $physical {
            PhysicalType::BOOLEAN => $function::<BoolType>($($argument),*),
            PhysicalType::INT32 => $function::<Int32Type>($($argument),*),
            PhysicalType::INT64 => $function::<Int64Type>($($argument),*),
            PhysicalType::INT96 => $function::<Int96Type>($($argument),*),
            PhysicalType::FLOAT => $function::<FloatType>($($argument),*),
            PhysicalType::DOUBLE => $function::<DoubleType>($($argument),*),
            PhysicalType::BYTE_ARRAY => $function::<ByteArrayType>($($argument),*),
            PhysicalType::FIXED_LEN_BYTE_ARRAY => $function::<FixedLenByteArrayType>($($argument),*),
        }
    };
}

/// Records decoded at a time when values are only hashed or passed on.
const BATCH_RECORDS: u64 = 4096;

/// Dictionary bytes a rewritten column chunk builds before it falls back to plain pages. The
/// crate's default, 1 MiB, is of values; the dictionary's hash table is larger than its values
/// when they are small (an INT32 dictionary of 1 MiB is 262,144 values, a table of 512 Ki
/// buckets of 9 bytes: 4.5 MiB), and every leaf column of the open row group holds one. On the
/// benchmark's 37 columns that was 119 MiB of heap (heaptrack: 73 MiB of tables, 46 MiB of
/// values), more than the row group's pages. At 128 KiB a column holds at most about
/// 0.8 MiB; a column of more distinct values than that per row group gets plain pages, which
/// zstd still compresses.
pub const REWRITE_DICTIONARY_PAGE_BYTES: usize = 128 * 1024;

/// Writer properties of rewritten row groups: zstd at its fastest level (the sources' codecs
/// differ per source, so one is chosen), statistics as the crate's defaults, dictionaries
/// capped at [`REWRITE_DICTIONARY_PAGE_BYTES`] a column chunk.
pub fn rewrite_properties(created_by: &str) -> WriterPropertiesPtr {
    Arc::new(
        WriterProperties::builder()
            .set_created_by(created_by.to_string())
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_dictionary_page_size_limit(REWRITE_DICTIONARY_PAGE_BYTES)
            .build(),
    )
}

/// One column's values, hashed in a way that does not depend on how they were batched.
#[derive(Clone, Default)]
pub struct ColumnHashers {
    repetitions: Sha256,
    definitions: Sha256,
    values: Sha256,
    records: u64,
}

impl ColumnHashers {
    fn update<V: AsBytes>(&mut self, repetitions: &[i16], definitions: &[i16], values: &[V], records: usize) {
        for level in repetitions {
            self.repetitions.update(level.to_le_bytes());
        }
        for level in definitions {
            self.definitions.update(level.to_le_bytes());
        }
        for value in values {
            let bytes = value.as_bytes();
            // Length first, so that byte arrays cannot run into each other.
            self.values.update((bytes.len() as u64).to_le_bytes());
            self.values.update(bytes);
        }
        self.records += records as u64;
    }

    fn finish(self) -> ([u8; 32], u64) {
        let mut column = Sha256::new();
        column.update(self.repetitions.finalize());
        column.update(self.definitions.finalize());
        column.update(self.values.finalize());
        (column.finalize().into(), self.records)
    }
}

/// The digest of some rows of a file: per column, its levels and values; then one sha256 over
/// the columns' digests in column order. Columns may be fed a row group at a time; a column is
/// finished once its last rows are in ([`RowsDigest::end_column`]), so that only the digests of
/// finished columns (32 bytes each) are kept, not their hashers.
pub struct RowsDigest {
    open: Vec<Option<ColumnHashers>>,
    done: Vec<Option<([u8; 32], u64)>>,
}

impl RowsDigest {
    pub fn new(columns: usize) -> Self {
        RowsDigest { open: vec![None; columns], done: vec![None; columns] }
    }

    fn column(&mut self, index: usize) -> &mut ColumnHashers {
        self.open[index].get_or_insert_with(ColumnHashers::default)
    }

    /// Column `index` has all its rows.
    pub fn end_column(&mut self, index: usize) {
        let hashers = self.open[index].take().unwrap_or_default();
        self.done[index] = Some(hashers.finish());
    }

    /// The rows every column decoded to, or `None` when columns disagree (a corrupt chunk).
    pub fn rows(&self) -> Option<u64> {
        let mut counts = self.done.iter().map(|done| done.map_or(0, |(_, records)| records));
        let first = counts.next().unwrap_or(0);
        counts.all(|count| count == first).then_some(first)
    }

    /// The hex sha256 over every column's digest (columns not ended are ended here).
    pub fn finish(mut self) -> String {
        for index in 0..self.open.len() {
            if self.done[index].is_none() {
                self.end_column(index);
            }
        }
        let mut all = Sha256::new();
        for (digest, _) in self.done.iter().flatten() {
            all.update(digest);
        }
        hex::encode(all.finalize())
    }
}

/// A column writer's pages, written into a buffer of its own: the open row group's columns
/// are written side by side, a source at a time, and only a file's row group can be written
/// column after column, so each column's encoded pages wait here until the group closes.
struct BufferPageWriter {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl PageWriter for BufferPageWriter {
    fn write_page(&mut self, page: CompressedPage) -> ParquetResult<PageWriteSpec> {
        let mut buffer = self.buffer.lock().map_err(|_| ParquetError::General("a page buffer was poisoned".into()))?;
        let start = buffer.len() as u64;
        let mut sink = TrackedWrite::new(&mut *buffer);
        let mut spec = SerializedPageWriter::new(&mut sink).write_page(page)?;
        sink.flush()?;
        drop(sink);
        // The page writer counts from 0 on a fresh sink; the chunk's offsets are the buffer's.
        spec.offset += start;
        Ok(spec)
    }

    fn close(&mut self) -> ParquetResult<()> {
        Ok(())
    }
}

/// The output's open row group, in rewrite mode.
pub struct RowGroupBuilder {
    columns: Vec<(ColumnWriter<'static>, Arc<Mutex<Vec<u8>>>)>,
    descriptors: Arc<SchemaDescriptor>,
    /// Rows written into it so far.
    pub rows: u64,
    /// Compressed bytes of the source row groups rewritten into it: what closes it at the
    /// row-group target (the encoded pages it holds are about as large).
    pub source_bytes: u64,
}

impl RowGroupBuilder {
    pub fn new(descriptors: Arc<SchemaDescriptor>, properties: &WriterPropertiesPtr) -> Self {
        let columns = descriptors
            .columns()
            .iter()
            .map(|descriptor| {
                let buffer = Arc::new(Mutex::new(Vec::new()));
                let pages = Box::new(BufferPageWriter { buffer: Arc::clone(&buffer) });
                (get_column_writer(Arc::clone(descriptor), Arc::clone(properties), pages), buffer)
            })
            .collect();
        RowGroupBuilder { columns, descriptors, rows: 0, source_bytes: 0 }
    }

    /// Decodes row groups `groups` of one source (their column chunks in `reader`) and, when
    /// every page decoded, writes their rows into this row group. Returns the source's rows
    /// and their digest; on a decoding error nothing was written.
    pub fn append_source(
        &mut self,
        groups: &[RowGroupMetaData],
        reader: &Arc<OffsetBytes>,
    ) -> ParquetResult<(u64, String)> {
        let mut digest = RowsDigest::new(self.columns.len());
        let mut decoded: Vec<Box<dyn DecodedColumn>> = Vec::with_capacity(self.columns.len());
        for index in 0..self.columns.len() {
            let descriptor = self.descriptors.column(index);
            let column = by_physical_type!(
                descriptor.physical_type(),
                decode_column,
                (groups, index, reader, descriptor.clone(), digest.column(index))
            )?;
            decoded.push(column);
            digest.end_column(index);
        }
        let rows =
            digest.rows().ok_or_else(|| ParquetError::General("its columns decode to different row counts".into()))?;
        for ((writer, _), column) in self.columns.iter_mut().zip(decoded) {
            column.write_to(writer)?;
        }
        self.rows += rows;
        self.source_bytes += groups.iter().map(|group| group.compressed_size().max(0) as u64).sum::<u64>();
        Ok((rows, digest.finish()))
    }

    /// Closes the group into `writer` as its next row group (nothing when it holds no rows).
    ///
    /// The writer's buffer is reserved at the group's exact size first: each column's pages
    /// then move into it without reallocating, and its buffer is freed as it goes, so the
    /// group is held about once. Left to grow by doubling, the buffer of a 64 MiB group was
    /// reallocated up to 128 MiB while the columns not yet copied were still held (heaptrack
    /// on the benchmark's 500 MB partition: 92 MiB at that one call site).
    pub fn close_into(self, writer: &mut SerializedFileWriter<Vec<u8>>) -> ParquetResult<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut closed = Vec::with_capacity(self.columns.len());
        for (column_writer, buffer) in self.columns {
            closed.push((column_writer.close()?, buffer));
        }
        let mut group_bytes = 0usize;
        for (_, buffer) in &closed {
            group_bytes += buffer.lock().map_err(|_| ParquetError::General("a page buffer was poisoned".into()))?.len();
        }
        writer.inner_mut().reserve(group_bytes);
        let mut group = writer.next_row_group()?;
        for (close, buffer) in closed {
            let bytes = std::mem::take(
                &mut *buffer.lock().map_err(|_| ParquetError::General("a page buffer was poisoned".into()))?,
            );
            group.append_column(&OffsetBytes { start: 0, bytes: Bytes::from(bytes) }, close)?;
        }
        group.close()?;
        Ok(())
    }
}

/// Column `index` of `group`, its bytes in `reader`, as a typed reader.
fn typed_reader<T: DataType>(
    group: &RowGroupMetaData,
    index: usize,
    reader: &Arc<OffsetBytes>,
) -> ParquetResult<ColumnReaderImpl<T>> {
    let column = group.column(index);
    let pages = SerializedPageReader::new(Arc::clone(reader), column, group.num_rows().max(0) as usize, None)?;
    let untyped: ColumnReader = get_column_reader(column.column_descr_ptr(), Box::new(pages));
    T::get_column_reader(untyped)
        .ok_or_else(|| ParquetError::General(format!("column {index} is not of its schema's physical type")))
}

/// Where a batch of decoded values goes: values, definition levels, repetition levels.
type BatchSink<'a, T> = dyn FnMut(&[<T as DataType>::T], &[i16], &[i16]) -> ParquetResult<()> + 'a;

/// Reads up to `records` records (fewer at the chunk's end), hashing them and handing each
/// batch to `sink`. Returns the records read.
fn pass<T: DataType>(
    reader: &mut ColumnReaderImpl<T>,
    records: u64,
    hashers: &mut ColumnHashers,
    sink: &mut BatchSink<'_, T>,
) -> ParquetResult<u64>
where
    T::T: AsBytes,
{
    let (mut values, mut definitions, mut repetitions) = (Vec::new(), Vec::new(), Vec::new());
    let mut read_so_far = 0u64;
    while read_so_far < records {
        values.clear();
        definitions.clear();
        repetitions.clear();
        let wanted = (records - read_so_far).min(BATCH_RECORDS) as usize;
        let (read, _, _) = reader.read_records(wanted, Some(&mut definitions), Some(&mut repetitions), &mut values)?;
        if read == 0 {
            break;
        }
        hashers.update(&repetitions, &definitions, &values, read);
        sink(&values, &definitions, &repetitions)?;
        read_so_far += read as u64;
    }
    Ok(read_so_far)
}

/// One column of a source, decoded whole, ready to be written.
trait DecodedColumn {
    fn write_to(&self, writer: &mut ColumnWriter<'static>) -> ParquetResult<()>;
}

struct Decoded<T: DataType> {
    values: Vec<T::T>,
    definitions: Vec<i16>,
    repetitions: Vec<i16>,
    descriptor: ColumnDescPtr,
}

impl<T: DataType> DecodedColumn for Decoded<T> {
    fn write_to(&self, writer: &mut ColumnWriter<'static>) -> ParquetResult<()> {
        let typed = T::get_column_writer_mut(writer).ok_or_else(|| {
            ParquetError::General(format!("column {} has another physical type in the output", self.descriptor.path()))
        })?;
        write_levels_and_values(typed, &self.values, &self.definitions, &self.repetitions, &self.descriptor)
    }
}

fn write_levels_and_values<T: DataType>(
    writer: &mut parquet::column::writer::ColumnWriterImpl<'_, T>,
    values: &[T::T],
    definitions: &[i16],
    repetitions: &[i16],
    descriptor: &ColumnDescPtr,
) -> ParquetResult<()> {
    // Levels are only passed for a column that has them: an empty slice would mean no values.
    let definitions = (descriptor.max_def_level() > 0).then_some(definitions);
    let repetitions = (descriptor.max_rep_level() > 0).then_some(repetitions);
    writer.write_batch(values, definitions, repetitions)?;
    Ok(())
}

fn decode_column<T: DataType>(
    groups: &[RowGroupMetaData],
    index: usize,
    reader: &Arc<OffsetBytes>,
    descriptor: ColumnDescPtr,
    hashers: &mut ColumnHashers,
) -> ParquetResult<Box<dyn DecodedColumn>>
where
    T::T: AsBytes,
{
    // A file without row groups (a batch of no rows) decodes to no values.
    let mut decoded = Decoded::<T> { values: Vec::new(), definitions: Vec::new(), repetitions: Vec::new(), descriptor };
    for group in groups {
        let mut typed = typed_reader::<T>(group, index, reader)?;
        pass(&mut typed, group.num_rows().max(0) as u64, hashers, &mut |values, definitions, repetitions| {
            decoded.values.extend_from_slice(values);
            decoded.definitions.extend_from_slice(definitions);
            decoded.repetitions.extend_from_slice(repetitions);
            Ok(())
        })?;
    }
    Ok(Box::new(decoded))
}

/// Rows `start..start + rows` of a row group (its own row numbers), for [`digest_segments`].
pub struct Segment<'a> {
    pub start: u64,
    pub rows: u64,
    pub digest: &'a mut RowsDigest,
    /// Records column `index` of the segment decoded to (set by [`digest_segments`]).
    pub records: u64,
}

/// Column `index` of `group` (its bytes in `reader`) read once, its rows cut into `segments`
/// (in row order, not overlapping), each hashed into its own digest. `writer`, when given,
/// gets every segment's values too (restore). A segment's column is not ended here: one may
/// go on into the next row group.
pub fn digest_segments(
    group: &RowGroupMetaData,
    index: usize,
    reader: &Arc<OffsetBytes>,
    segments: &mut [Segment<'_>],
    writer: Option<&mut ColumnWriter<'_>>,
) -> ParquetResult<()> {
    let physical = group.column(index).column_descr().physical_type();
    by_physical_type!(physical, digest_segments_typed, (group, index, reader, segments, writer))
}

fn digest_segments_typed<T: DataType>(
    group: &RowGroupMetaData,
    index: usize,
    reader: &Arc<OffsetBytes>,
    segments: &mut [Segment<'_>],
    writer: Option<&mut ColumnWriter<'_>>,
) -> ParquetResult<()>
where
    T::T: AsBytes,
{
    let descriptor = group.column(index).column_descr_ptr();
    let mut typed = typed_reader::<T>(group, index, reader)?;
    let mut typed_writer = match writer {
        Some(writer) => Some(T::get_column_writer_mut(writer).ok_or_else(|| {
            ParquetError::General(format!("column {} has another physical type in the output", descriptor.path()))
        })?),
        None => None,
    };
    let mut position = 0u64;
    for segment in segments.iter_mut() {
        if segment.start > position {
            position += typed.skip_records((segment.start - position) as usize)? as u64;
        }
        if position != segment.start {
            return Err(ParquetError::General(format!(
                "column {} holds {position} rows, fewer than the {} before a source's first",
                descriptor.path(),
                segment.start
            )));
        }
        let read =
            pass(&mut typed, segment.rows, segment.digest.column(index), &mut |values, definitions, repetitions| {
                match typed_writer.as_deref_mut() {
                    Some(writer) => write_levels_and_values(writer, values, definitions, repetitions, &descriptor),
                    None => Ok(()),
                }
            })?;
        segment.records = read;
        position += read;
    }
    Ok(())
}

/// A standalone Parquet file of rows `first_row..first_row + rows` of a file of schema
/// `schema`, out of its row groups `groups` that overlap them (each with its first row in the
/// file; their column chunks in `reader`): restore's answer for one source of a rewritten
/// output. Returns the file and the digest of the rows it holds.
pub fn standalone_rows(
    schema: &super::footer::SchemaKey,
    groups: &[(u64, &RowGroupMetaData)],
    reader: &Arc<OffsetBytes>,
    first_row: u64,
    rows: u64,
    created_by: &str,
) -> ParquetResult<(Vec<u8>, String)> {
    let key_values = super::chunks::output_properties(schema, created_by).key_value_metadata().cloned();
    let properties = Arc::new(
        WriterProperties::builder()
            .set_created_by(created_by.to_string())
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_key_value_metadata(key_values)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(Vec::new(), Arc::clone(&schema.schema), properties)?;
    let columns = SchemaDescriptor::new(Arc::clone(&schema.schema)).num_columns();
    let mut digest = RowsDigest::new(columns);
    let end_row = first_row + rows;
    let mut group_writer = writer.next_row_group()?;
    for index in 0..columns {
        let mut column =
            group_writer.next_column()?.ok_or_else(|| ParquetError::General("the schema has fewer columns".into()))?;
        for (group_first_row, group) in groups {
            let group_end = group_first_row + group.num_rows().max(0) as u64;
            let start = first_row.max(*group_first_row);
            let end = end_row.min(group_end);
            if start >= end {
                continue;
            }
            let mut segment =
                [Segment { start: start - group_first_row, rows: end - start, digest: &mut digest, records: 0 }];
            digest_segments(group, index, reader, &mut segment, Some(column.untyped()))?;
            if segment[0].records != end - start {
                return Err(ParquetError::General(format!(
                    "column {index} decodes to {} of the {} rows asked for",
                    segment[0].records,
                    end - start
                )));
            }
        }
        digest.end_column(index);
        column.close()?;
    }
    group_writer.close()?;
    Ok((writer.into_inner()?, digest.finish()))
}

/// A whole Parquet file in memory (a restored file, a small original, an output): its rows,
/// its row groups and the digest of its rows, which two files share exactly when they hold the
/// same rows and values, however those are split into row groups.
pub fn file_rows(file: &Bytes) -> Result<(u64, usize, String), String> {
    let footer = super::footer::of_file(file).map_err(|bad| bad.0)?;
    let reader = Arc::new(OffsetBytes { start: 0, bytes: file.clone() });
    let columns = footer.metadata.file_metadata().schema_descr().num_columns();
    let mut digest = RowsDigest::new(columns);
    for group in footer.metadata.row_groups() {
        let rows = group.num_rows().max(0) as u64;
        for column in 0..columns {
            let mut segment = [Segment { start: 0, rows, digest: &mut digest, records: 0 }];
            digest_segments(group, column, &reader, &mut segment, None).map_err(|error| error.to_string())?;
            if segment[0].records != rows {
                return Err(format!(
                    "column {column} decodes to {} rows, its row group has {rows}",
                    segment[0].records
                ));
            }
        }
    }
    Ok((footer.rows(), footer.metadata.num_row_groups(), digest.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::footer::{footer_length, parse_footer, ParquetFooter};
    use crate::testkit::parquet_files::{file_bytes, FileSpec, Schema};

    fn footer_and_reader(bytes: &[u8]) -> (ParquetFooter, Arc<OffsetBytes>) {
        let size = bytes.len() as u64;
        let length = footer_length(&bytes[bytes.len() - 8..], size).unwrap();
        let footer = parse_footer(&bytes[(size - 8 - length) as usize..bytes.len() - 8], size - 8 - length).unwrap();
        (footer, Arc::new(OffsetBytes { start: 0, bytes: Bytes::copy_from_slice(bytes) }))
    }

    /// The digest of a whole file's rows, decoded a row group at a time.
    fn whole_file_digest(bytes: &[u8]) -> (u64, String) {
        let (footer, reader) = footer_and_reader(bytes);
        let columns = footer.metadata.file_metadata().schema_descr().num_columns();
        let mut digest = RowsDigest::new(columns);
        for group in footer.metadata.row_groups() {
            for column in 0..columns {
                let rows = group.num_rows() as u64;
                let mut segment = [Segment { start: 0, rows, digest: &mut digest, records: 0 }];
                digest_segments(group, column, &reader, &mut segment, None).unwrap();
                assert_eq!(segment[0].records, rows);
            }
        }
        (footer.rows(), digest.finish())
    }

    #[test]
    fn rewritten_rows_keep_their_digest_whatever_the_row_groups_and_restore_gives_them_back() {
        // The same rows in one row group, and split in two: one digest.
        let one_group = FileSpec { rows: 300, first_row_group_rows: 300, ..FileSpec::from_seed(11, Schema::Wide) };
        let two_groups = FileSpec { first_row_group_rows: 120, ..one_group };
        let other = FileSpec { rows: 57, first_row_group_rows: 57, ..FileSpec::from_seed(12, Schema::Wide) };
        let (one_bytes, two_bytes, other_bytes) =
            (file_bytes(&one_group).unwrap(), file_bytes(&two_groups).unwrap(), file_bytes(&other).unwrap());
        assert_eq!(whole_file_digest(&one_bytes), whole_file_digest(&two_bytes));
        assert_ne!(whole_file_digest(&one_bytes).1, whole_file_digest(&other_bytes).1);

        // Three sources rewritten into one row group of an output.
        let (first_footer, _) = footer_and_reader(&two_bytes);
        let schema = first_footer.schema_key();
        let descriptors = first_footer.metadata.file_metadata().schema_descr_ptr();
        let properties = rewrite_properties("test");
        let mut builder = RowGroupBuilder::new(Arc::clone(&descriptors), &properties);
        let mut placed = Vec::new();
        let mut first_row = 0;
        for bytes in [&two_bytes, &other_bytes, &one_bytes] {
            let (footer, reader) = footer_and_reader(bytes);
            let (rows, digest) = builder.append_source(footer.metadata.row_groups(), &reader).unwrap();
            assert_eq!((rows, digest.clone()), whole_file_digest(bytes), "the seal's digest is the original's");
            placed.push((first_row, rows, digest));
            first_row += rows;
        }
        let mut writer = SerializedFileWriter::new(
            Vec::new(),
            Arc::clone(&schema.schema),
            super::super::chunks::output_properties(&schema, "test"),
        )
        .unwrap();
        builder.close_into(&mut writer).unwrap();
        let output = writer.into_inner().unwrap();
        let (output_footer, output_reader) = footer_and_reader(&output);
        assert_eq!(output_footer.metadata.num_row_groups(), 1, "three sources, one row group");
        assert_eq!(output_footer.rows(), 657);

        // Verify's cut: one pass per column, each source's rows hashed on their own.
        let group = &output_footer.metadata.row_groups()[0];
        let columns = descriptors.num_columns();
        let mut digests: Vec<RowsDigest> = placed.iter().map(|_| RowsDigest::new(columns)).collect();
        for column in 0..columns {
            let mut segments: Vec<Segment<'_>> = placed
                .iter()
                .zip(digests.iter_mut())
                .map(|((first_row, rows, _), digest)| Segment { start: *first_row, rows: *rows, digest, records: 0 })
                .collect();
            digest_segments(group, column, &output_reader, &mut segments, None).unwrap();
            assert!(segments.iter().zip(&placed).all(|(segment, (_, rows, _))| segment.records == *rows));
        }
        for (digest, (_, _, recorded)) in digests.into_iter().zip(&placed) {
            assert_eq!(&digest.finish(), recorded);
        }

        // Restore: a standalone file of the middle source's rows, the same digest as the original.
        let (first_row, rows, recorded) = &placed[1];
        let (restored, digest) =
            standalone_rows(&schema, &[(0, group)], &output_reader, *first_row, *rows, "test").unwrap();
        assert_eq!(&digest, recorded);
        assert_eq!(whole_file_digest(&restored), (*rows, recorded.clone()));
    }

    #[test]
    fn a_source_whose_pages_do_not_decode_leaves_the_open_row_group_as_it_was() {
        let spec = FileSpec { rows: 200, first_row_group_rows: 200, ..FileSpec::from_seed(5, Schema::Wide) };
        let bytes = file_bytes(&spec).unwrap();
        let (footer, reader) = footer_and_reader(&bytes);
        let descriptors = footer.metadata.file_metadata().schema_descr_ptr();
        let mut builder = RowGroupBuilder::new(descriptors, &rewrite_properties("test"));
        builder.append_source(footer.metadata.row_groups(), &reader).unwrap();
        // The last column's chunk garbled: the first columns decode, the last does not.
        let last = footer.metadata.row_groups()[0].columns().last().unwrap();
        let start = last.dictionary_page_offset().unwrap_or_else(|| last.data_page_offset()) as usize;
        let mut garbled = bytes.clone();
        for byte in &mut garbled[start..start + last.compressed_size() as usize] {
            *byte = 0xFF;
        }
        let garbled_reader = Arc::new(OffsetBytes { start: 0, bytes: Bytes::from(garbled) });
        assert!(builder.append_source(footer.metadata.row_groups(), &garbled_reader).is_err());
        assert_eq!(builder.rows, 200, "nothing of the bad source was written");
    }
}
