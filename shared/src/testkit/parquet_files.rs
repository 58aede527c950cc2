//! Feature-store-like Parquet files for tests, benchmarks and the demo: a few dozen columns
//! (ids, an event time, an entity name, float and integer features with nulls, a flag, a
//! nested struct and a list), Snappy or Zstd, one or two row groups, written with the parquet
//! crate's low-level writer so no Arrow is needed. Deterministic: same arguments, same bytes.

use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::errors::Result as ParquetResult;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// Float features in the full schema; the narrow one has fewer, so the two never merge.
const FLOAT_FEATURES: usize = 24;
const NARROW_FLOAT_FEATURES: usize = 8;
const INT_FEATURES: usize = 6;

/// Which of the two schemas a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// 37 leaf columns.
    Wide,
    /// The same shape with fewer float features (21 leaf columns).
    Narrow,
}

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    pub schema: Schema,
    pub rows: u32,
    pub zstd: bool,
    /// Rows of the first row group; the rest (if any) go in a second one.
    pub first_row_group_rows: u32,
    pub seed: u64,
}

impl FileSpec {
    /// The file a seed implies: 1 to 500 rows, Snappy or Zstd, one row group in most files
    /// and two in about one in five.
    pub fn from_seed(seed: u64, schema: Schema) -> Self {
        let mut rng = SplitMix(seed);
        let rows = 1 + (rng.next() % 500) as u32;
        let zstd = rng.next() % 2 == 0;
        let first_row_group_rows = if rng.next() % 5 == 0 && rows > 1 { rows / 2 } else { rows };
        FileSpec { schema, rows, zstd, first_row_group_rows, seed }
    }

    fn float_features(&self) -> usize {
        match self.schema {
            Schema::Wide => FLOAT_FEATURES,
            Schema::Narrow => NARROW_FLOAT_FEATURES,
        }
    }
}

/// The schema's message type, in Parquet's text form.
pub fn message_type(spec: &FileSpec) -> String {
    let mut text = String::from(
        "message feature_record {\n  required int64 record_id;\n  required int64 event_time \
         (TIMESTAMP(MILLIS,true));\n  required binary entity (STRING);\n",
    );
    for index in 0..spec.float_features() {
        text.push_str(&format!("  optional double f_{index:02};\n"));
    }
    for index in 0..INT_FEATURES {
        text.push_str(&format!("  optional int64 i_{index:02};\n"));
    }
    text.push_str("  optional boolean active;\n");
    text.push_str("  optional group location {\n    optional double lat;\n    optional double lon;\n  }\n");
    text.push_str("  optional group tags (LIST) {\n    repeated group list {\n      optional binary element (STRING);\n    }\n  }\n}\n");
    text
}

/// One file's bytes.
pub fn file_bytes(spec: &FileSpec) -> ParquetResult<Vec<u8>> {
    let schema = Arc::new(parse_message_type(&message_type(spec))?);
    let compression = if spec.zstd { Compression::ZSTD(ZstdLevel::default()) } else { Compression::SNAPPY };
    let properties = Arc::new(WriterProperties::builder().set_compression(compression).build());
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties)?;
    let first = spec.first_row_group_rows.min(spec.rows);
    let groups = [0..first, first..spec.rows];
    for rows in groups.into_iter().filter(|rows| !rows.is_empty()) {
        let mut group = writer.next_row_group()?;
        let mut column_index = 0usize;
        while let Some(mut column) = group.next_column()? {
            write_column(spec, column_index, rows.clone(), &mut column)?;
            column.close()?;
            column_index += 1;
        }
        group.close()?;
    }
    writer.into_inner()
}

/// A value per (seed, row, column): the same whichever row group the row lands in.
fn value(spec: &FileSpec, row: u32, column: usize) -> u64 {
    SplitMix(spec.seed ^ (u64::from(row) << 20) ^ (column as u64).wrapping_mul(0x9E37_79B9)).next()
}

fn write_column(
    spec: &FileSpec,
    column: usize,
    rows: std::ops::Range<u32>,
    writer: &mut parquet::file::writer::SerializedColumnWriter<'_>,
) -> ParquetResult<()> {
    let floats = spec.float_features();
    let record_id = |row: u32| (spec.seed % 1_000_000) as i64 * 1000 + i64::from(row);
    match column {
        0 => {
            let values: Vec<i64> = rows.map(record_id).collect();
            writer.typed::<Int64Type>().write_batch(&values, None, None)?;
        }
        1 => {
            let values: Vec<i64> =
                rows.map(|row| 1_704_067_200_000 + (value(spec, row, 1) % 86_400_000) as i64).collect();
            writer.typed::<Int64Type>().write_batch(&values, None, None)?;
        }
        2 => {
            let values: Vec<ByteArray> =
                rows.map(|row| ByteArray::from(format!("entity-{}", value(spec, row, 2) % 97).as_str())).collect();
            writer.typed::<ByteArrayType>().write_batch(&values, None, None)?;
        }
        index if index < 3 + floats => {
            // About one value in ten is null.
            let (values, levels) = nullable(rows, |row| {
                let draw = value(spec, row, index);
                (draw % 10 != 0).then(|| (draw >> 11) as f64 / (1u64 << 53) as f64 * 100.0 - 50.0)
            });
            writer.typed::<DoubleType>().write_batch(&values, Some(&levels), None)?;
        }
        index if index < 3 + floats + INT_FEATURES => {
            let (values, levels) = nullable(rows, |row| {
                let draw = value(spec, row, index);
                (draw % 7 != 0).then_some((draw % 1_000_000) as i64 - 500_000)
            });
            writer.typed::<Int64Type>().write_batch(&values, Some(&levels), None)?;
        }
        index if index == 3 + floats + INT_FEATURES => {
            let (values, levels) = nullable(rows, |row| {
                let draw = value(spec, row, index);
                (draw % 5 != 0).then_some(draw % 2 == 0)
            });
            writer.typed::<BoolType>().write_batch(&values, Some(&levels), None)?;
        }
        index if index <= 3 + floats + INT_FEATURES + 2 => {
            // location.lat and location.lon: the struct is null in one row of eight (level 0),
            // a field alone in some more (level 1), present otherwise (level 2).
            let mut values = Vec::new();
            let mut levels = Vec::new();
            for row in rows {
                let draw = value(spec, row, 1000);
                let own = value(spec, row, index);
                let level = if draw % 8 == 0 {
                    0
                } else if own % 9 == 0 {
                    1
                } else {
                    values.push((own % 180_000) as f64 / 1000.0 - 90.0);
                    2
                };
                levels.push(level);
            }
            writer.typed::<DoubleType>().write_batch(&values, Some(&levels), None)?;
        }
        _ => {
            // tags: null (0), empty (1), or up to three elements (3; a null element is 2).
            let (mut values, mut definitions, mut repetitions) = (Vec::new(), Vec::new(), Vec::new());
            for row in rows {
                let draw = value(spec, row, 2000);
                match draw % 6 {
                    0 => {
                        definitions.push(0);
                        repetitions.push(0);
                    }
                    1 => {
                        definitions.push(1);
                        repetitions.push(0);
                    }
                    count => {
                        for element in 0..(count - 1).min(3) {
                            repetitions.push(if element == 0 { 0 } else { 1 });
                            if (draw >> (8 + element)) % 11 == 0 {
                                definitions.push(2);
                            } else {
                                definitions.push(3);
                                values.push(ByteArray::from(format!("tag-{}", (draw >> (16 + element)) % 13).as_str()));
                            }
                        }
                    }
                }
            }
            writer.typed::<ByteArrayType>().write_batch(&values, Some(&definitions), Some(&repetitions))?;
        }
    }
    Ok(())
}

fn nullable<T>(rows: std::ops::Range<u32>, mut value: impl FnMut(u32) -> Option<T>) -> (Vec<T>, Vec<i16>) {
    let mut values = Vec::new();
    let mut levels = Vec::new();
    for row in rows {
        match value(row) {
            Some(present) => {
                values.push(present);
                levels.push(1);
            }
            None => levels.push(0),
        }
    }
    (values, levels)
}

/// The sums DuckDB is asked for in tests, as the generator knows them: rows, and the sum of
/// `record_id` (exact in integers).
pub fn record_id_sum(spec: &FileSpec) -> i128 {
    (0..spec.rows).map(|row| i128::from((spec.seed % 1_000_000) as i64 * 1000 + i64::from(row))).sum()
}

/// A file that ends like Parquet but is not: `PAR1`, junk, a footer length, `PAR1`.
pub fn fake_file() -> Vec<u8> {
    let mut bytes = b"PAR1".to_vec();
    bytes.extend_from_slice(b"this is not a parquet file, only its magic bytes");
    bytes.extend_from_slice(&20u32.to_le_bytes());
    bytes.extend_from_slice(b"PAR1");
    bytes
}

/// SplitMix64: small, deterministic, and enough for test values.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_deterministic_and_have_the_schema_asked_for() {
        let spec = FileSpec::from_seed(7, Schema::Wide);
        assert!((1..=500).contains(&spec.rows));
        let bytes = file_bytes(&spec).unwrap();
        assert_eq!(bytes, file_bytes(&spec).unwrap(), "same spec, same bytes");
        assert_eq!(&bytes[..4], b"PAR1");
        let size = bytes.len() as u64;
        let length = crate::parquet::footer::footer_length(&bytes[bytes.len() - 8..], size).unwrap();
        let footer_start = size - 8 - length;
        let footer =
            crate::parquet::footer::parse_footer(&bytes[footer_start as usize..(size - 8) as usize], footer_start)
                .unwrap();
        assert_eq!(footer.rows(), u64::from(spec.rows));
        assert_eq!(footer.metadata.file_metadata().schema_descr().num_columns(), 37);
        let narrow = FileSpec::from_seed(7, Schema::Narrow);
        assert_eq!(narrow.rows, spec.rows);
        assert_ne!(file_bytes(&narrow).unwrap().len(), bytes.len());
    }
}
