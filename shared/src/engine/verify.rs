//! Verify: re-read every committed output and check its sha256, and the sha256 of every
//! source's byte range inside it; optionally compare each range with the original source
//! object, where it still exists. One streaming pass per output: memory does not grow with
//! the output's size.

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::warn;

use super::{Compactor, EngineError};
use crate::domain::format::cloudtrail;
use crate::domain::format::compress::framed_compression;
use crate::domain::partition::PartitionKey;
use crate::domain::records::{ObjectRecord, OutputRecord, OutputState};
use crate::ports::{GetOptions, StoreError};

/// What verify checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub outputs_checked: u64,
    pub outputs_ok: u64,
    pub sources_checked: u64,
    pub sources_ok: u64,
    /// Sources also compared with their original object (still present, same ETag).
    pub originals_compared: u64,
    pub originals_ok: u64,
    /// Sources not compared with their original: overwritten since compaction (another ETag
    /// now), or gone (expired, deleted). Their ranges are still checked against the sha256.
    pub originals_changed: u64,
    pub originals_gone: u64,
    /// The keys of the first [`NAMED_SKIPS`] sources skipped either way, to say which.
    pub originals_skipped_keys: Vec<String>,
    pub bytes_read: u64,
    /// Records of rewritten sources (CloudTrail) compared with their originals' records.
    pub records_compared: u64,
    /// Sources an output's record counts but the manifest no longer lists, because their
    /// records expired (`COMPACTOR_RECORD_TTL`, and the output committed longer ago than that):
    /// the output's sha256 still covers their bytes, but no range of theirs can be checked.
    pub source_records_expired: u64,
    /// One line per problem found.
    pub failures: Vec<String>,
}

/// How many skipped originals a report names; the counts go on past it.
pub const NAMED_SKIPS: usize = 20;

impl VerifyReport {
    /// True when everything checked was right (and something was checked).
    pub fn all_verified(&self) -> bool {
        self.failures.is_empty()
            && self.outputs_ok == self.outputs_checked
            && self.sources_ok == self.sources_checked
            && self.originals_ok == self.originals_compared
    }

    pub(crate) fn fail(&mut self, message: String) {
        warn!(failure = %message, "verify found a problem");
        self.failures.push(message);
    }
}

impl Compactor {
    /// Verifies the committed outputs of `partitions` (every partition when `None`).
    pub async fn verify(
        &self,
        partitions: Option<Vec<PartitionKey>>,
        compare_originals: bool,
        mut on_output: impl FnMut(&VerifyReport),
    ) -> Result<VerifyReport, EngineError> {
        let partitions = match partitions {
            Some(partitions) => partitions,
            None => self.audit_partitions().await?.into_iter().map(|record| record.key).collect(),
        };
        let mut report = VerifyReport::default();
        for partition in partitions {
            for output in self.manifest.outputs(&partition, Some(OutputState::Committed)).await? {
                self.verify_output(&output, compare_originals, &mut report).await?;
                on_output(&report);
            }
        }
        Ok(report)
    }

    /// Verifies one committed output into `report`.
    pub async fn verify_output(
        &self,
        output: &OutputRecord,
        compare_originals: bool,
        report: &mut VerifyReport,
    ) -> Result<(), EngineError> {
        report.outputs_checked += 1;
        let sources = self.output_sources(output).await?;
        let mut problems_before = report.failures.len();
        let mut ranges: Vec<(&ObjectRecord, u64, u64, &str)> = Vec::with_capacity(sources.len());
        let mut covered = 0u64;
        let mut previous_end = 0u64;
        for source in &sources {
            // The rows are read back from the manifest: a corrupt one is reported, not trusted.
            let Some(placement) = source.placement.as_ref() else {
                report.sources_checked += 1;
                report.fail(format!("{}: the manifest lists {} in it without a byte range", output.key, source.key));
                continue;
            };
            let Some((end, end_with_separator)) = placement
                .offset
                .checked_add(placement.length)
                .and_then(|end| Some((end, end.checked_add(placement.separator_bytes)?)))
            else {
                report.sources_checked += 1;
                report.fail(format!(
                    "{}: the manifest gives {} an impossible byte range (offset {}, length {})",
                    output.key, source.key, placement.offset, placement.length
                ));
                continue;
            };
            if placement.offset < previous_end {
                report.fail(format!("{}: sources overlap at byte {}", output.key, placement.offset));
            }
            previous_end = end_with_separator;
            covered = covered.saturating_add(end_with_separator - placement.offset);
            ranges.push((source, placement.offset, end, placement.sha256.as_str()));
        }
        let listed_sources = sources.len() as u64;
        // Every expiry mark comes after the commit, so no record of this output can have
        // expired before `committed_at + record_ttl`.
        let records_may_have_expired = self
            .config
            .record_ttl
            .zip(output.committed_at)
            .is_some_and(|(record_ttl, committed_at)| self.clock.now() >= committed_at + record_ttl);
        if records_may_have_expired && listed_sources < output.object_count {
            report.source_records_expired += output.object_count - listed_sources;
        } else if listed_sources != output.object_count {
            report.fail(format!(
                "{}: the manifest places {} sources in it, its record says {}",
                output.key,
                sources.len(),
                output.object_count
            ));
        }
        let recorded_size = output.size.unwrap_or(0);
        // A Parquet output's header and footer belong to no source.
        if covered != recorded_size && !output.key.to_ascii_lowercase().ends_with(".parquet") {
            // Superseded sources leave unreferenced bytes: worth knowing, not a failure.
            warn!(output = %output.key, covered, size = recorded_size, "output has bytes no source record references");
        }

        let got = match self.store.get(&output.bucket, &output.key, GetOptions::default()).await {
            Ok(got) => got,
            Err(StoreError::NotFound { .. }) => {
                report.fail(format!("{}: committed output is missing from the store", output.key));
                report.sources_checked += ranges.len() as u64;
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        // A rows output's placements are rows, not byte ranges: checked by decoding below.
        #[cfg(feature = "parquet")]
        let rows_output = super::parquet_rows::is_rows_output(&output.key);
        #[cfg(not(feature = "parquet"))]
        let rows_output = false;
        let byte_ranges = if rows_output { &ranges[..0] } else { &ranges[..] };
        let mut body = got.body;
        let mut output_hasher = Sha256::new();
        let mut position = 0u64;
        let mut range_index = 0usize;
        let mut range_hasher = Sha256::new();
        let mut range_results: Vec<Option<String>> = vec![None; byte_ranges.len()];
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            output_hasher.update(&chunk);
            let chunk_start = position;
            let chunk_end = position + chunk.len() as u64;
            while range_index < byte_ranges.len() {
                let (_, start, end, _) = byte_ranges[range_index];
                if start >= chunk_end {
                    break;
                }
                let from = start.max(chunk_start);
                let to = end.min(chunk_end);
                if from < to {
                    range_hasher.update(&chunk[(from - chunk_start) as usize..(to - chunk_start) as usize]);
                }
                if end <= chunk_end {
                    range_results[range_index] = Some(hex::encode(std::mem::take(&mut range_hasher).finalize()));
                    range_index += 1;
                } else {
                    break;
                }
            }
            position = chunk_end;
        }
        // Zero-length sources at the very end complete without bytes.
        while range_index < byte_ranges.len()
            && byte_ranges[range_index].1 == byte_ranges[range_index].2
            && byte_ranges[range_index].1 <= position
        {
            range_results[range_index] = Some(hex::encode(std::mem::take(&mut range_hasher).finalize()));
            range_index += 1;
        }
        report.bytes_read += position;
        let output_sha256 = hex::encode(output_hasher.finalize());
        if Some(position) != output.size {
            report.fail(format!("{}: size is {position}, the manifest recorded {recorded_size}", output.key));
        }
        if Some(output_sha256.as_str()) != output.sha256.as_deref() {
            report.fail(format!("{}: sha256 differs from the one recorded at commit", output.key));
        }
        if report.failures.len() == problems_before {
            report.outputs_ok += 1;
        }
        // A Parquet output's sources are also checked as rows: see `parquet_checks`.
        #[cfg(feature = "parquet")]
        let parquet_footer = if super::parquet_checks::is_parquet_output(&output.key) {
            match self.output_footer(output).await? {
                Ok(footer) => Some(footer),
                Err(failure) => {
                    report.fail(failure);
                    None
                }
            }
        } else {
            None
        };
        #[cfg(feature = "parquet")]
        if rows_output {
            let sources: Vec<&ObjectRecord> = ranges.iter().map(|(source, ..)| *source).collect();
            return self
                .verify_parquet_rows(output, parquet_footer.as_ref(), &sources, compare_originals, report)
                .await;
        }
        for ((source, _, _, recorded_sha256), actual) in ranges.iter().zip(&range_results) {
            report.sources_checked += 1;
            problems_before = report.failures.len();
            match actual {
                Some(actual) if actual == recorded_sha256 => {}
                Some(_) => {
                    report.fail(format!("{}: the range of {} does not match its sha256", output.key, source.key))
                }
                None => report.fail(format!("{}: the range of {} lies past the output's end", output.key, source.key)),
            }
            #[cfg(feature = "parquet")]
            let checked_as_rows = match (&parquet_footer, source.placement.as_ref()) {
                (Some(footer), Some(placement)) => {
                    self.verify_parquet_source(output, footer, source, placement, compare_originals, report).await?;
                    true
                }
                _ => false,
            };
            #[cfg(not(feature = "parquet"))]
            let checked_as_rows = false;
            if compare_originals && !checked_as_rows {
                self.compare_original(source, recorded_sha256, report).await?;
            }
            if report.failures.len() == problems_before {
                report.sources_ok += 1;
            }
        }
        Ok(())
    }

    async fn compare_original(
        &self,
        source: &ObjectRecord,
        recorded_sha256: &str,
        report: &mut VerifyReport,
    ) -> Result<(), EngineError> {
        let options = GetOptions { range: None, if_match: source.etag.clone() };
        // Expired, deleted or overwritten since: nothing to compare with, but counted and named.
        let skipped = |report: &mut VerifyReport| {
            if report.originals_skipped_keys.len() < NAMED_SKIPS {
                report.originals_skipped_keys.push(source.key.clone());
            }
        };
        let original = match self.store.get(&source.bucket, &source.key, options).await {
            Ok(got) => got.bytes().await?,
            Err(StoreError::NotFound { .. }) => {
                report.originals_gone += 1;
                skipped(report);
                return Ok(());
            }
            Err(StoreError::PreconditionFailed { .. }) => {
                report.originals_changed += 1;
                skipped(report);
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        report.originals_compared += 1;
        if hex::encode(Sha256::digest(&original)) == recorded_sha256 {
            report.originals_ok += 1;
        } else if let Some(placement) =
            source.placement.as_ref().filter(|placement| framed_compression(&placement.output_key).is_some())
        {
            // A frame: decompressed (with a CSV's header frame, an NDJSON's set-aside lines) as
            // restore does, then compared with the original byte for byte.
            report.bytes_read += placement.length;
            match self.original_from_output(source, placement).await {
                Ok(restored) if restored == original => report.originals_ok += 1,
                Ok(_) => report.fail(format!("{}: the original differs from its decompressed frame", source.key)),
                Err(EngineError::Mismatch(reason)) => report.fail(format!("{}: {reason}", source.key)),
                Err(error) => return Err(error),
            }
        } else if let Some(placement) = source
            .placement
            .as_ref()
            .filter(|placement| placement.output_key.ends_with(".csv") && source.size > placement.length)
        {
            // A CSV source's range is its rows; its header is the output's first bytes.
            let header_length = source.size - placement.length;
            let options = GetOptions { range: Some(0..header_length), if_match: None };
            let header =
                self.store.get(&self.config.dest_bucket, &placement.output_key, options).await?.bytes().await?;
            report.bytes_read += header.len() as u64;
            let (original_header, original_rows) = original.split_at((header_length as usize).min(original.len()));
            if original_header == &header[..] && hex::encode(Sha256::digest(original_rows)) == recorded_sha256 {
                report.originals_ok += 1;
            } else {
                report.fail(format!("{}: the original's header and rows differ from its output's", source.key));
            }
        } else if let Some(placement) = source.placement.as_ref().filter(|placement| {
            super::restore::ndjson_lines_set_aside(&placement.output_key, placement.length, source.size)
        }) {
            // NDJSON lines set aside: the range and the side file make the original again. An
            // empty range (every line set aside) is not read: stores refuse it.
            let kept = if placement.length == 0 {
                bytes::Bytes::new()
            } else {
                let range = placement.offset..placement.offset + placement.length;
                let options = GetOptions { range: Some(range), if_match: None };
                self.store.get(&self.config.dest_bucket, &placement.output_key, options).await?.bytes().await?
            };
            report.bytes_read += kept.len() as u64;
            match self.reassemble_ndjson(&source.key, placement, &kept).await {
                Ok(whole) if Sha256::digest(&whole) == Sha256::digest(&original) => report.originals_ok += 1,
                Ok(_) => {
                    report.fail(format!("{}: the original differs from its range and set-aside lines", source.key))
                }
                Err(error) => report.fail(format!("{}: {error}", source.key)),
            }
        } else if let Some(placement) =
            source.placement.as_ref().filter(|placement| placement.output_key.ends_with(".ndjson.gz"))
        {
            // A rewritten source (CloudTrail to NDJSON): its range holds its records, not its
            // bytes. Compared by record count and a digest that ignores whitespace.
            let range = if placement.length == 0 {
                bytes::Bytes::new()
            } else {
                let options =
                    GetOptions { range: Some(placement.offset..placement.offset + placement.length), if_match: None };
                self.store.get(&self.config.dest_bucket, &placement.output_key, options).await?.bytes().await?
            };
            report.bytes_read += range.len() as u64;
            match (cloudtrail::document_digest(&original), cloudtrail::ndjson_digest(&range)) {
                (Ok(original), Ok(compacted)) if original == compacted => {
                    report.originals_ok += 1;
                    report.records_compared += original.records;
                }
                (Ok(original), Ok(compacted)) => report.fail(format!(
                    "{}: its {} records differ from the {} records of its range in the output",
                    source.key, original.records, compacted.records
                )),
                (Err(reason), _) | (_, Err(reason)) => report.fail(format!(
                    "{}: the original's bytes differ from its range in the output, and their records cannot be \
                     compared: {reason}",
                    source.key
                )),
            }
        } else {
            report.fail(format!("{}: the original's bytes differ from its range in the output", source.key));
        }
        Ok(())
    }
}
