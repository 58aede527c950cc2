//! `verify` and `restore` for Parquet outputs whose row groups were rewritten
//! (`-rows.parquet`), whose placements are rows: `offset` is the output's row index of a
//! source's first row, `length` its row count, `sha256` the digest of its decoded values
//! ([`crate::parquet::rows::RowsDigest`]).
//!
//! `verify` reads each output row group once (its column chunks, one ranged GET), decodes each
//! column once and cuts it at the recorded first rows, so that each source's rows are hashed
//! on their own and compared with its recorded digest; with originals, each original's rows
//! are decoded and hashed the same way. Memory: one output row group's chunks, and 32 bytes a
//! column per source whose rows are being hashed. `restore` reads the row groups that hold a
//! source's rows and writes those rows as a standalone Parquet file, checked against the digest.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use parquet::file::metadata::RowGroupMetaData;

use super::verify::VerifyReport;
use super::{Compactor, EngineError};
use crate::domain::format::ROWS_PARQUET_EXTENSION;
use crate::domain::records::{ObjectRecord, OutputRecord, Placement};
use crate::parquet::footer::read_range;
use crate::parquet::rows::{digest_segments, standalone_rows, RowsDigest, Segment};
use crate::parquet::{OffsetBytes, ParquetFooter};
use crate::ports::StoreError;

/// Whether an output's placements are rows (its key says so, as its class gave it).
pub(crate) fn is_rows_output(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with(ROWS_PARQUET_EXTENSION)
}

/// One source's rows being checked.
struct Cut<'a> {
    source: &'a ObjectRecord,
    rows: Range<u64>,
    recorded: &'a str,
    digest: Option<RowsDigest>,
    /// Why it failed, once it has.
    failure: Option<String>,
}

/// Each row group of a file with its rows in it.
fn row_group_rows(footer: &ParquetFooter) -> Vec<(Range<u64>, &RowGroupMetaData)> {
    let mut first_row = 0u64;
    footer
        .metadata
        .row_groups()
        .iter()
        .map(|group| {
            let rows = first_row..first_row + group.num_rows().max(0) as u64;
            first_row = rows.end;
            (rows, group)
        })
        .collect()
}

impl Compactor {
    /// Checks every source of a rows output (`footer` is `None` when it could not be read,
    /// which was reported): rows within the output, not overlapping, each decoding to its
    /// recorded digest; with `compare_originals`, the original's rows to the same digest.
    pub(crate) async fn verify_parquet_rows(
        &self,
        output: &OutputRecord,
        footer: Option<&ParquetFooter>,
        sources: &[&ObjectRecord],
        compare_originals: bool,
        report: &mut VerifyReport,
    ) -> Result<(), EngineError> {
        report.sources_checked += sources.len() as u64;
        let Some(footer) = footer else { return Ok(()) };
        let columns = footer.metadata.file_metadata().schema_descr().num_columns();
        let total_rows = footer.rows();
        let mut cuts = Vec::with_capacity(sources.len());
        let mut previous_end = 0u64;
        for source in sources {
            let Some(placement) = source.placement.as_ref() else { continue };
            let rows = placement.offset..placement.offset.saturating_add(placement.length);
            // A source of no rows sits at its neighbour's first row and overlaps nothing.
            let failure = if !rows.is_empty() && rows.start < previous_end {
                Some(format!("{}: the rows of {} overlap another source's", output.key, source.key))
            } else if rows.end > total_rows {
                Some(format!(
                    "{}: the rows of {} ({} to {}) lie past the output's {total_rows} rows",
                    output.key, source.key, rows.start, rows.end
                ))
            } else {
                None
            };
            previous_end = previous_end.max(rows.end);
            let digest = Some(RowsDigest::new(columns));
            cuts.push(Cut { source, rows, recorded: placement.sha256.as_str(), digest, failure });
        }
        // Cuts before `next_cut` are finished; they are in row order and, unless failed
        // already, do not overlap, so each row group's cuts are a run from `next_cut` on.
        let mut next_cut = 0usize;
        for (index, (group_rows, group)) in row_group_rows(footer).into_iter().enumerate() {
            let run_end =
                (next_cut..cuts.len()).find(|&at| cuts[at].rows.start >= group_rows.end).unwrap_or(cuts.len());
            let wanted =
                |cut: &Cut<'_>| cut.failure.is_none() && !cut.rows.is_empty() && cut.rows.end > group_rows.start;
            if cuts[next_cut..run_end].iter().any(wanted) {
                let span = footer.row_group_bytes[index].clone();
                let reader = Arc::new(self.output_region(output, span).await?);
                for column in 0..columns {
                    let mut members = Vec::new();
                    let mut segments = Vec::new();
                    for (at, cut) in cuts[next_cut..run_end].iter_mut().enumerate() {
                        if !wanted(cut) {
                            continue;
                        }
                        let start = cut.rows.start.max(group_rows.start);
                        let end = cut.rows.end.min(group_rows.end);
                        members.push((next_cut + at, end - start));
                        let digest = cut.digest.as_mut().expect("taken only when finished");
                        segments.push(Segment {
                            start: start - group_rows.start,
                            rows: end - start,
                            digest,
                            records: 0,
                        });
                    }
                    if segments.is_empty() {
                        break;
                    }
                    let decoded = digest_segments(group, column, &reader, &mut segments, None);
                    let records: Vec<u64> = segments.iter().map(|segment| segment.records).collect();
                    drop(segments);
                    for ((at, rows_wanted), records) in members.into_iter().zip(records) {
                        let cut = &mut cuts[at];
                        if let Err(error) = &decoded {
                            cut.failure = Some(format!(
                                "{}: row group {index}, which holds rows of {}, does not decode: {error}",
                                output.key, cut.source.key
                            ));
                        } else if records != rows_wanted {
                            cut.failure = Some(format!(
                                "{}: a column of row group {index} holds fewer rows than {} was recorded with",
                                output.key, cut.source.key
                            ));
                        } else if cut.rows.end <= group_rows.end {
                            cut.digest.as_mut().expect("taken only when finished").end_column(column);
                        }
                    }
                }
            }
            // Every cut that ends in this group is complete.
            while next_cut < cuts.len() && cuts[next_cut].rows.end <= group_rows.end {
                let cut = &mut cuts[next_cut];
                let digest = cut.digest.take().expect("finished once");
                self.finish_cut(output, cut, digest, compare_originals, report).await?;
                next_cut += 1;
            }
        }
        for cut in &mut cuts[next_cut..] {
            if let Some(digest) = cut.digest.take() {
                self.finish_cut(output, cut, digest, compare_originals, report).await?;
            }
        }
        Ok(())
    }

    async fn finish_cut(
        &self,
        output: &OutputRecord,
        cut: &mut Cut<'_>,
        digest: RowsDigest,
        compare_originals: bool,
        report: &mut VerifyReport,
    ) -> Result<(), EngineError> {
        if let Some(failure) = cut.failure.take() {
            report.fail(failure);
            return Ok(());
        }
        if digest.finish() != cut.recorded {
            report.fail(format!(
                "{}: the rows of {} do not match the digest of their values recorded at seal time",
                output.key, cut.source.key
            ));
            return Ok(());
        }
        let failures_before = report.failures.len();
        if compare_originals {
            self.compare_rows_original(cut.source, cut.rows.end - cut.rows.start, cut.recorded, report).await?;
        }
        if report.failures.len() == failures_before {
            report.sources_ok += 1;
        }
        Ok(())
    }

    /// The original's rows, decoded a row group at a time, hashed as the output's are.
    async fn compare_rows_original(
        &self,
        source: &ObjectRecord,
        rows: u64,
        recorded: &str,
        report: &mut VerifyReport,
    ) -> Result<(), EngineError> {
        let Some(original) = self.original_footer(source, rows, report).await? else {
            return Ok(());
        };
        let (store, etag) = (self.store.as_ref(), source.etag.as_deref());
        let columns = original.metadata.file_metadata().schema_descr().num_columns();
        let mut digest = RowsDigest::new(columns);
        for ((group_rows, group), span) in row_group_rows(&original).into_iter().zip(&original.row_group_bytes) {
            let bytes = match read_range(store, &source.bucket, &source.key, source.size, etag, span.clone()).await {
                Ok(bytes) => bytes,
                Err(StoreError::NotFound { .. } | StoreError::PreconditionFailed { .. }) => {
                    report.fail(format!("{}: the original changed while it was compared", source.key));
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            };
            let reader = Arc::new(OffsetBytes { start: span.start, bytes });
            let group_row_count = group_rows.end - group_rows.start;
            for column in 0..columns {
                let mut segment = [Segment { start: 0, rows: group_row_count, digest: &mut digest, records: 0 }];
                if let Err(error) = digest_segments(group, column, &reader, &mut segment, None) {
                    report.fail(format!("{}: the original's column chunks do not decode: {error}", source.key));
                    return Ok(());
                }
            }
        }
        if digest.finish() == recorded {
            report.originals_ok += 1;
        } else {
            report.fail(format!("{}: the original's decoded values differ from its rows in the output", source.key));
        }
        Ok(())
    }

    /// Bytes `span` of a committed output, as a chunk reader.
    async fn output_region(&self, output: &OutputRecord, span: Range<u64>) -> Result<OffsetBytes, EngineError> {
        let start = span.start;
        if span.is_empty() {
            return Ok(OffsetBytes { start, bytes: Bytes::new() });
        }
        let size = output.size.unwrap_or(0);
        let bytes = read_range(self.store.as_ref(), &output.bucket, &output.key, size, None, span).await?;
        Ok(OffsetBytes { start, bytes })
    }

    /// A standalone Parquet file of a compacted source's rows, out of its rows output: the row
    /// groups that hold them read (one ranged GET), the rows decoded and written after a new
    /// header, checked against the recorded digest of their values.
    pub(crate) async fn restore_parquet_rows(&self, key: &str, placement: &Placement) -> Result<Bytes, EngineError> {
        let output = self.manifest.output(&self.config.dest_bucket, &placement.output_key).await?.ok_or_else(|| {
            EngineError::InvalidInput(format!("output {} is not in the manifest", placement.output_key))
        })?;
        let footer = self.output_footer(&output).await?.map_err(EngineError::Mismatch)?;
        let rows = placement.offset..placement.offset.saturating_add(placement.length);
        if rows.end > footer.rows() {
            return Err(EngineError::Mismatch(format!(
                "the rows of {key} ({} to {}) lie past the {} rows of {}: run `verify` on its partition",
                rows.start,
                rows.end,
                footer.rows(),
                output.key
            )));
        }
        let mut groups = Vec::new();
        let mut span: Option<Range<u64>> = None;
        for (index, (group_rows, group)) in row_group_rows(&footer).into_iter().enumerate() {
            if group_rows.start < rows.end && group_rows.end > rows.start {
                let bytes = footer.row_group_bytes[index].clone();
                span = Some(match span {
                    Some(span) => span.start.min(bytes.start)..span.end.max(bytes.end),
                    None => bytes,
                });
                groups.push((group_rows.start, group));
            }
        }
        let reader = Arc::new(self.output_region(&output, span.unwrap_or(0..0)).await?);
        let created_by = super::parquet_output::created_by();
        let (file, digest) =
            standalone_rows(&footer.schema_key(), &groups, &reader, rows.start, rows.end - rows.start, &created_by)
                .map_err(|error| {
                    EngineError::Mismatch(format!("{key} cannot be rebuilt from {}: {error}", output.key))
                })?;
        if digest != placement.sha256 {
            return Err(EngineError::Mismatch(format!(
                "the rows of {key} in {} do not match the digest recorded at seal time: run `verify` on its partition",
                placement.output_key
            )));
        }
        Ok(Bytes::from(file))
    }
}
