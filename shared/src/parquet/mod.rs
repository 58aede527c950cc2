//! Parquet sources: merged by copying their column chunks as they are.
//!
//! Byte concatenation breaks Parquet (a file is a header, column chunks, and a footer that
//! locates them), so Parquet sources get outputs of their own: a new header, every source's
//! column chunks copied without decoding a page (each source row group becomes an output row
//! group), and one footer holding every row group's metadata. The seal's cost is I/O, not CPU,
//! and outputs keep the sources' encodings and compression.
//!
//! - [`footer`]: a source's footer, read with ranged GETs as query engines do (the tail, then
//!   the footer if it was longer), and checked: a truncated file, a bad footer or a file that
//!   only claims to be Parquet is refused with a reason, before a byte of it is copied.
//! - [`chunks`]: copying row groups, and finding which row groups and rows of an output a
//!   source's byte range holds (the manifest records that range; the rest is derived from the
//!   output's footer).
//! - [`values`]: decoding a column chunk into a digest of its values, for `verify`.
//! - [`rows`]: the opt-in rewrite of small row groups into larger ones (decode and re-encode),
//!   and the digest of a source's rows that its placement then holds instead of a byte range's.
//!
//! Sources merge only when their schemas are equal (the same Parquet schema, columns in the
//! same order, and the same Arrow schema when the writer stored one): a row group can only
//! join a file of its own schema.

pub mod chunks;
pub mod footer;
pub mod rows;
pub mod values;

pub use chunks::{append_row_group, rows_in_range, standalone_file, OffsetBytes, SourceRows};
pub use footer::{read_footer, BadParquet, ParquetFooter, SchemaKey};
