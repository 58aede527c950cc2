//! `verify` and `restore` for Parquet outputs, whose sources are column chunks, not bytes.
//!
//! A source's placement is the byte range of its column chunks in the output, with their
//! sha256 (checked by `verify` as any range is). The output's footer says which row groups
//! lie in that range: the source's rows. `verify` also decodes every column chunk of the
//! range (a page that does not decode fails), checks each decodes to its row group's rows,
//! and with originals compares the row count and a digest of the decoded values of each
//! column chunk with the original file's. `restore` writes the source's row groups as a
//! standalone Parquet file: the same schema, rows and values as the original, not its bytes.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::verify::{VerifyReport, NAMED_SKIPS};
use super::{Compactor, EngineError};
use crate::domain::format::PARQUET_EXTENSION;
use crate::domain::records::{ObjectRecord, OutputRecord, Placement};
use crate::parquet::footer::read_range;
use crate::parquet::values::{row_group_digests, ChunkDigest};
use crate::parquet::{read_footer, rows_in_range, standalone_file, BadParquet, OffsetBytes, ParquetFooter};
use crate::ports::StoreError;

/// Whether an output holds Parquet row groups (its key says so, as its class gave it).
pub(crate) fn is_parquet_output(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with(PARQUET_EXTENSION)
}

impl Compactor {
    /// The footer of a committed Parquet output; `Err` holds a failure line for verify.
    pub(crate) async fn output_footer(
        &self,
        output: &OutputRecord,
    ) -> Result<Result<ParquetFooter, String>, EngineError> {
        let size = output.size.unwrap_or(0);
        match read_footer(self.store.as_ref(), &output.bucket, &output.key, size, None).await {
            Ok(Ok(footer)) => Ok(Ok(footer)),
            Ok(Err(BadParquet(reason))) => Ok(Err(format!("{}: not a readable Parquet file: {reason}", output.key))),
            Err(StoreError::NotFound { .. } | StoreError::PreconditionFailed { .. }) => {
                Ok(Err(format!("{}: committed output is missing or changed in the store", output.key)))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Checks one source of a Parquet output: its row groups fill its range exactly and decode
    /// to their row counts; with `compare_originals`, the original's rows and decoded values
    /// are the same. Failures go into `report`.
    pub(crate) async fn verify_parquet_source(
        &self,
        output: &OutputRecord,
        footer: &ParquetFooter,
        source: &ObjectRecord,
        placement: &Placement,
        compare_originals: bool,
        report: &mut VerifyReport,
    ) -> Result<(), EngineError> {
        let range = placement.offset..placement.offset + placement.length;
        let rows = rows_in_range(&footer.metadata, range.clone());
        let groups = &footer.metadata.row_groups()[rows.row_groups.0..rows.row_groups.1];
        let chunk_bytes: i64 =
            groups.iter().flat_map(|group| group.columns()).map(|column| column.compressed_size()).sum();
        if chunk_bytes != placement.length as i64 {
            report.fail(format!(
                "{}: the row groups in the range of {} hold {chunk_bytes} bytes of column chunks, the range {}",
                output.key, source.key, placement.length
            ));
            return Ok(());
        }
        let region = if range.is_empty() {
            OffsetBytes { start: range.start, bytes: Bytes::new() }
        } else {
            let size = output.size.unwrap_or(0);
            let bytes = read_range(self.store.as_ref(), &output.bucket, &output.key, size, None, range.clone()).await?;
            OffsetBytes { start: range.start, bytes }
        };
        let region = Arc::new(region);
        let mut output_digests: Vec<ChunkDigest> = Vec::new();
        for group in groups {
            match row_group_digests(group, &region) {
                Ok(digests) => {
                    if let Some(short) = digests.iter().find(|digest| digest.records != group.num_rows() as u64) {
                        report.fail(format!(
                            "{}: a column chunk of {} decodes to {} rows, its row group has {}",
                            output.key,
                            source.key,
                            short.records,
                            group.num_rows()
                        ));
                        return Ok(());
                    }
                    output_digests.extend(digests);
                }
                Err(error) => {
                    report.fail(format!("{}: the column chunks of {} do not decode: {error}", output.key, source.key));
                    return Ok(());
                }
            }
        }
        if compare_originals {
            self.compare_parquet_original(source, rows.rows, &output_digests, report).await?;
        }
        Ok(())
    }

    async fn compare_parquet_original(
        &self,
        source: &ObjectRecord,
        rows: u64,
        output_digests: &[ChunkDigest],
        report: &mut VerifyReport,
    ) -> Result<(), EngineError> {
        let Some(original) = self.original_footer(source, rows, report).await? else {
            return Ok(());
        };
        let (store, etag) = (self.store.as_ref(), source.etag.as_deref());
        let mut original_digests = Vec::with_capacity(output_digests.len());
        for (group, span) in original.metadata.row_groups().iter().zip(&original.row_group_bytes) {
            let start = span.start;
            let bytes = match read_range(store, &source.bucket, &source.key, source.size, etag, span.clone()).await {
                Ok(bytes) => bytes,
                Err(StoreError::NotFound { .. } | StoreError::PreconditionFailed { .. }) => {
                    report.fail(format!("{}: the original changed while it was compared", source.key));
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            };
            match row_group_digests(group, &Arc::new(OffsetBytes { start, bytes })) {
                Ok(digests) => original_digests.extend(digests),
                Err(error) => {
                    report.fail(format!("{}: the original's column chunks do not decode: {error}", source.key));
                    return Ok(());
                }
            }
        }
        if original_digests == output_digests {
            report.originals_ok += 1;
        } else {
            report.fail(format!("{}: the original's decoded values differ from its rows in the output", source.key));
        }
        Ok(())
    }

    /// The footer of a Parquet source's original, for `verify --against-sources`, once it is
    /// known to hold the `rows` its output does. `None` when the comparison ends there, counted
    /// in `report`: the original is gone or changed (skipped), no longer Parquet, or of another
    /// row count (failed).
    pub(super) async fn original_footer(
        &self,
        source: &ObjectRecord,
        rows: u64,
        report: &mut VerifyReport,
    ) -> Result<Option<ParquetFooter>, EngineError> {
        let skipped = |report: &mut VerifyReport| {
            if report.originals_skipped_keys.len() < NAMED_SKIPS {
                report.originals_skipped_keys.push(source.key.clone());
            }
        };
        let etag = source.etag.as_deref();
        let original = match read_footer(self.store.as_ref(), &source.bucket, &source.key, source.size, etag).await {
            Ok(Ok(footer)) => footer,
            Ok(Err(BadParquet(reason))) => {
                report.originals_compared += 1;
                report.fail(format!("{}: the original is not readable Parquet any more: {reason}", source.key));
                return Ok(None);
            }
            Err(StoreError::NotFound { .. }) => {
                report.originals_gone += 1;
                skipped(report);
                return Ok(None);
            }
            Err(StoreError::PreconditionFailed { .. }) => {
                report.originals_changed += 1;
                skipped(report);
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        report.originals_compared += 1;
        if original.rows() != rows {
            report.fail(format!("{}: the original has {} rows, its output {rows}", source.key, original.rows()));
            return Ok(None);
        }
        Ok(Some(original))
    }

    /// A standalone Parquet file of a compacted source's rows, out of its Parquet output:
    /// its range read and checked against the recorded sha256, its row groups written after a
    /// new header, under a footer of their own.
    pub(crate) async fn restore_parquet(&self, key: &str, placement: &Placement) -> Result<Bytes, EngineError> {
        if super::parquet_rows::is_rows_output(&placement.output_key) {
            return self.restore_parquet_rows(key, placement).await;
        }
        let output = self.manifest.output(&self.config.dest_bucket, &placement.output_key).await?.ok_or_else(|| {
            EngineError::InvalidInput(format!("output {} is not in the manifest", placement.output_key))
        })?;
        let footer = self.output_footer(&output).await?.map_err(EngineError::Mismatch)?;
        let range = placement.offset..placement.offset + placement.length;
        let bytes = if range.is_empty() {
            Bytes::new()
        } else {
            let size = output.size.unwrap_or(0);
            read_range(self.store.as_ref(), &output.bucket, &output.key, size, None, range.clone()).await?
        };
        if hex::encode(Sha256::digest(&bytes)) != placement.sha256 {
            return Err(EngineError::Mismatch(format!(
                "the column chunks of {key} in {} do not match the sha256 recorded at seal time: run `verify` on its \
                 partition",
                placement.output_key
            )));
        }
        let rows = rows_in_range(&footer.metadata, range.clone());
        let groups = &footer.metadata.row_groups()[rows.row_groups.0..rows.row_groups.1];
        let created_by = super::parquet_output::created_by();
        let file =
            standalone_file(&footer.schema_key(), groups, &OffsetBytes { start: range.start, bytes }, &created_by)
                .map_err(|error| {
                    EngineError::Mismatch(format!("{key} cannot be rebuilt from {}: {error}", output.key))
                })?;
        Ok(Bytes::from(file))
    }
}
