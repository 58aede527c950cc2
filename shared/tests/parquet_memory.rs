//! Issue 14: what a Parquet seal holds in memory, pinned with a counting allocator (its own
//! test binary, so that the counts are this file's allocations only; the tests take a lock so
//! they do not count each other's).
//!
//! - Copy mode: an output's footer holds the metadata of every row group appended to it until
//!   the output closes. That grows with the output (bounded by the target size over the
//!   sources' row group size), not with the partition; per column chunk it must stay under
//!   1 KiB (the benchmark's outputs: about 0.7 KiB; it was 20 KiB a source before the
//!   output's chunk metadata stopped keeping each source's schema alive).
//! - Rewrite mode: each column of the open row group builds a dictionary, whose hash table
//!   outgrows its values; capped by `REWRITE_DICTIONARY_PAGE_BYTES`, a column of 300,000
//!   distinct values peaks at 1.3 MB here (with the crate's default 1 MiB dictionary: 8.8 MB).
#![cfg(feature = "parquet")]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use compactor::parquet::footer::{footer_length, parse_footer};
use compactor::parquet::rows::rewrite_properties;
use compactor::parquet::{append_row_group, OffsetBytes};
use compactor::testkit::parquet_files::{file_bytes, FileSpec, Schema};
use parquet::data_type::Int32Type;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::SchemaDescriptor;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{LIVE, PEAK};
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn an_outputs_footer_holds_under_1_kib_a_column_chunk_until_it_closes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let spec = FileSpec { rows: 200, first_row_group_rows: 200, ..FileSpec::from_seed(7, Schema::Wide) };
    let source = file_bytes(&spec).unwrap();
    let size = source.len() as u64;
    let tail = source.len() - 8;
    let footer_start = size - 8 - footer_length(&source[tail..], size).unwrap();
    let footer = parse_footer(&source[footer_start as usize..tail], footer_start).unwrap();
    let group = &footer.metadata.row_groups()[0];
    let columns = group.num_columns();
    let reader = OffsetBytes { start: 0, bytes: Bytes::from(source.clone()) };
    let schema = footer.schema_key();
    let descriptors = SchemaDescriptor::new(Arc::clone(&schema.schema));
    // The output's bytes go nowhere: what stays is the writer's metadata.
    let mut writer = SerializedFileWriter::new(
        std::io::sink(),
        Arc::clone(&schema.schema),
        compactor::parquet::chunks::output_properties(&schema, "test"),
    )
    .unwrap();
    let row_groups = 2_000usize;
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..row_groups {
        append_row_group(&mut writer, &descriptors, group, &reader).unwrap();
    }
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let per_column_chunk = held / (row_groups * columns);
    eprintln!("{row_groups} row groups of {columns} columns held: {held} bytes, {per_column_chunk} a column chunk");
    assert!(
        per_column_chunk < 1024,
        "{per_column_chunk} bytes held a column chunk ({held} for {row_groups} row groups)"
    );
    writer.close().unwrap();
}

#[test]
fn a_rewritten_column_of_many_distinct_values_holds_a_dictionary_of_bounded_size() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let schema = Arc::new(parse_message_type("message one { required int32 value; }").unwrap());
    // Pages go nowhere, so the peak is the column writer's: its dictionary, its page in progress.
    let mut writer = SerializedFileWriter::new(std::io::sink(), schema, rewrite_properties("test")).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let values: Vec<i32> = (0..1024).collect();
    for batch in 0..300i32 {
        let batch_values: Vec<i32> = values.iter().map(|value| batch * 1024 + value).collect();
        column.typed::<Int32Type>().write_batch(&batch_values, None, None).unwrap();
    }
    let peak = PEAK.load(Ordering::Relaxed) - before;
    eprintln!("307,200 distinct INT32 values written: peak {peak} heap bytes");
    // The crate's default (a 1 MiB dictionary: 262,144 values, a hash table of 4.5 MiB) peaked
    // at 8.8 MB here; 128 KiB of dictionary and 1 MiB pages peak at 1.3 MB.
    assert!(peak < 3 * 1024 * 1024, "peak {peak} heap bytes for one column's dictionary and page");
    column.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
}
