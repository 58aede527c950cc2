use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{Datelike, NaiveDate};
use compactor::event::{decode_json, ObjectEventKind};
use compactor::ports::{
    CompletedPart, GetOptions, GetResult, ListPage, ObjectMeta, ObjectStore, PutOptions, StoreError, Tag,
};
use flate2::read::GzDecoder;

use super::*;

fn small(kind: DatasetKind, days: u32, files_per_day: u32) -> DatasetSpec {
    DatasetSpec { days, files_per_day, ..DatasetSpec::demo(kind) }
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::new();
    GzDecoder::new(body).read_to_end(&mut decoded).expect("a valid gzip stream");
    decoded
}

/// The date the key's partition names, parsed back out of the key.
fn date_in_key(kind: DatasetKind, prefix: &str, key: &str) -> NaiveDate {
    let rest = key.strip_prefix(prefix).unwrap_or_else(|| panic!("{key} lacks prefix {prefix}"));
    let number = |text: &str| -> u32 { text.parse().unwrap_or_else(|_| panic!("{text:?} in {key} is not a number")) };
    let parts: Vec<&str> = rest.split('/').collect();
    let (year, month, day) = match kind {
        DatasetKind::SeedJson | DatasetKind::Parquet => (parts[0], parts[1], parts[2]),
        DatasetKind::CloudTrail => {
            assert_eq!(&parts[..4], ["AWSLogs", "123456789012", "CloudTrail", "eu-west-1"], "{key}");
            (parts[4], parts[5], parts[6])
        }
        DatasetKind::HiveNdjson | DatasetKind::HiveCsv => (
            parts[0].strip_prefix("year=").expect(key),
            parts[1].strip_prefix("month=").expect(key),
            parts[2].strip_prefix("day=").expect(key),
        ),
    };
    assert_eq!((year.len(), month.len(), day.len()), (4, 2, 2), "{key}");
    NaiveDate::from_ymd_opt(number(year) as i32, number(month), number(day)).expect(key)
}

#[test]
fn same_seed_same_dataset_and_other_seed_another() {
    for kind in DatasetKind::ALL {
        let spec = small(kind, 2, 20);
        let first: Vec<GeneratedObject> = objects(&spec).collect();
        let again: Vec<GeneratedObject> = objects(&spec).collect();
        assert_eq!(first, again, "{kind}");
        let other: Vec<GeneratedObject> = objects(&DatasetSpec { seed: 43, ..spec.clone() }).collect();
        assert_eq!(first.len(), other.len());
        for (mine, theirs) in first.iter().zip(&other) {
            assert_ne!(mine.body, theirs.body, "{kind}: {} and {}", mine.key, theirs.key);
        }
        if kind != DatasetKind::HiveNdjson && kind != DatasetKind::HiveCsv {
            // Hive part names are ordinals by design; the others embed seeded ids.
            assert!(first.iter().zip(&other).all(|(mine, theirs)| mine.key != theirs.key), "{kind}");
        }
        // Random access agrees with the stream.
        assert_eq!(object_at(&spec, 1, 7), first[20 + 7]);
    }
}

#[test]
fn pinned_bytes_do_not_drift() {
    // A fingerprint of a small dataset. If this changes, every stored benchmark and fixture
    // changed too: only update it on purpose.
    let spec = small(DatasetKind::SeedJson, 1, 3);
    let first = objects(&spec).next().unwrap();
    let fingerprint = first
        .body
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3));
    assert_eq!((first.key.as_str(), first.body.len(), fingerprint), PINNED_SEED_JSON);
}

const PINNED_SEED_JSON: (&str, usize, u64) =
    ("logs/2024/01/01/events-97ea87f7-e45c-00a5-9d60-e5f549e30b2b.json", 1362, 17997378452653000660);

#[test]
fn keys_are_unique_and_follow_each_layout() {
    for kind in DatasetKind::ALL {
        let spec = DatasetSpec { start_date: NaiveDate::from_ymd_opt(2024, 2, 27).unwrap(), ..small(kind, 4, 50) };
        let mut keys = std::collections::HashSet::new();
        let mut previous_time = None;
        for (index, object) in objects(&spec).enumerate() {
            let day = index as u32 / spec.files_per_day;
            let expected_date = spec.start_date + chrono::Days::new(u64::from(day));
            assert_eq!(date_in_key(kind, &spec.prefix, &object.key), expected_date, "{}", object.key);
            assert_eq!(object.event_time.date_naive(), expected_date, "{}", object.key);
            assert!(previous_time <= Some(object.event_time), "event times increase");
            previous_time = Some(object.event_time);
            let file_name = object.key.rsplit('/').next().unwrap();
            match kind {
                DatasetKind::SeedJson => {
                    assert!(file_name.starts_with("events-") && file_name.ends_with(".json"), "{file_name}");
                    assert_eq!(file_name.len(), "events-".len() + 36 + ".json".len(), "{file_name}");
                }
                DatasetKind::CloudTrail => {
                    let time = object.event_time;
                    let stamp = format!(
                        "123456789012_CloudTrail_eu-west-1_{:04}{:02}{:02}T{:02}{:02}Z_",
                        time.year(),
                        time.month(),
                        time.day(),
                        chrono::Timelike::hour(&time),
                        chrono::Timelike::minute(&time) / 5 * 5
                    );
                    assert!(file_name.starts_with(&stamp), "{file_name} should start with {stamp}");
                    let suffix = file_name.strip_prefix(&stamp).unwrap().strip_suffix(".json.gz").unwrap();
                    assert!(suffix.len() == 16 && suffix.bytes().all(|byte| byte.is_ascii_alphanumeric()), "{suffix}");
                }
                DatasetKind::HiveNdjson => {
                    let hour = object.key.split('/').nth(4).unwrap();
                    assert_eq!(hour, format!("hour={:02}", chrono::Timelike::hour(&object.event_time)));
                    assert!(file_name.starts_with("part-"), "{file_name}");
                    assert!(file_name.ends_with(".ndjson") || file_name.ends_with(".ndjson.gz"), "{file_name}");
                }
                DatasetKind::Parquet => {
                    assert!(file_name.starts_with("batch-") && file_name.ends_with(".parquet"), "{file_name}");
                    assert_eq!(&object.body[..4], b"PAR1", "{file_name}");
                    assert_eq!(&object.body[object.body.len() - 4..], b"PAR1", "{file_name}");
                }
                DatasetKind::HiveCsv => {
                    assert_eq!(object.key.split('/').count(), 5, "{}", object.key);
                    assert!(file_name.ends_with(".csv") || file_name.ends_with(".csv.gz"), "{file_name}");
                }
            }
            assert!(keys.insert(object.key.clone()), "duplicate key {}", object.key);
        }
        assert_eq!(keys.len() as u64, spec.object_count());
    }
}

#[test]
fn cloudtrail_size_mix_matches_the_real_world() {
    let spec = small(DatasetKind::CloudTrail, 3, 1000);
    let mut sizes = SizeHistogram::default();
    for object in objects(&spec) {
        sizes.record(object.body.len() as u64);
        let json: serde_json::Value = serde_json::from_slice(&gunzip(&object.body)).expect("valid JSON");
        let records = json["Records"].as_array().expect("a Records array");
        assert!(!records.is_empty());
        for record in records {
            for field in ["eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress", "userIdentity"] {
                assert!(!record[field].is_null(), "{field} missing in {record}");
            }
        }
    }
    let total = sizes.total() as f64;
    let tiny_share = sizes.under_1000_bytes as f64 / total;
    assert!((0.40..=0.48).contains(&tiny_share), "{sizes}");
    let under_128_kib = (sizes.total() - sizes.at_least_128_kib) as f64 / total;
    assert!(under_128_kib > 0.98, "{sizes}");
}

#[test]
fn seed_json_lines_parse_and_some_files_lack_the_final_newline() {
    let spec = small(DatasetKind::SeedJson, 2, 1000);
    let mut without_newline = 0;
    let mut sizes = Vec::new();
    for object in objects(&spec) {
        let text = std::str::from_utf8(&object.body).unwrap();
        if !text.ends_with('\n') {
            without_newline += 1;
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u32, spec.records_per_file, "{}", object.key);
        for line in lines {
            let record: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
            let timestamp: chrono::DateTime<chrono::Utc> = record["timestamp"].as_str().unwrap().parse().unwrap();
            assert_eq!(timestamp.date_naive(), object.event_time.date_naive());
            assert!(timestamp <= object.event_time);
        }
        sizes.push(object.body.len());
    }
    let share = f64::from(without_newline) / 2000.0;
    assert!((0.035..=0.065).contains(&share), "{without_newline} of 2000 lack the final newline");
    sizes.sort_unstable();
    let mean = sizes.iter().sum::<usize>() / sizes.len();
    let (smallest, largest) = (sizes[0], sizes[sizes.len() - 1]);
    assert!((4_000..=6_500).contains(&mean), "mean {mean}");
    assert!(smallest < 2_000 && largest > 16_000, "sizes span {smallest}..{largest}");
}

#[test]
fn hive_files_decompress_and_csv_files_start_with_the_header() {
    for kind in [DatasetKind::HiveNdjson, DatasetKind::HiveCsv] {
        let spec = small(kind, 1, 300);
        let mut compressed = 0;
        for object in objects(&spec) {
            let text = if object.key.ends_with(".gz") {
                compressed += 1;
                String::from_utf8(gunzip(&object.body)).unwrap()
            } else {
                String::from_utf8(object.body.to_vec()).unwrap()
            };
            assert!(text.ends_with('\n'), "{}", object.key);
            if kind == DatasetKind::HiveCsv {
                assert!(text.starts_with(HIVE_CSV_HEADER), "{}", object.key);
                let columns = HIVE_CSV_HEADER.trim_end().split(',').count();
                for row in text.lines().skip(1) {
                    let (unquoted, quoted) = row.split_once(",\"").expect("a quoted user agent");
                    assert_eq!(unquoted.split(',').count() + 1, columns, "{row}");
                    assert!(quoted.ends_with('"'), "{row}");
                }
            } else {
                for line in text.lines() {
                    serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|error| panic!("{error}: {line}"));
                }
            }
        }
        assert!((60..=120).contains(&compressed), "{kind}: {compressed} of 300 gzip");
    }
}

#[test]
fn kinds_print_and_parse_back() {
    for kind in DatasetKind::ALL {
        assert_eq!(kind.to_string().parse::<DatasetKind>(), Ok(kind));
    }
    let error = "orc".parse::<DatasetKind>().unwrap_err().to_string();
    assert!(error.contains("seed-json, cloudtrail, hive-ndjson, hive-csv, parquet"), "{error}");
}

#[test]
fn specs_are_validated() {
    assert_eq!(DatasetSpec::default().validate(), Ok(()));
    assert_eq!(DatasetSpec::default().object_count(), 21_000);
    let no_slash = DatasetSpec { prefix: "logs".into(), ..DatasetSpec::default() };
    assert!(no_slash.validate().unwrap_err().contains("must end with '/'"));
    let bad_account = DatasetSpec { account_id: "12".into(), ..DatasetSpec::demo(DatasetKind::CloudTrail) };
    assert!(bad_account.validate().is_err());
}

/// Holds objects in memory; implements only what `write_to_store` calls.
#[derive(Debug, Default)]
struct InMemory {
    objects: Mutex<BTreeMap<(String, String), Bytes>>,
    /// Fail every PUT once this many objects are stored.
    fail_puts_after: Option<usize>,
}

fn unsupported(bucket: &str, key: &str) -> StoreError {
    StoreError::InvalidRequest {
        bucket: bucket.into(),
        key: key.into(),
        message: "not implemented by the test store".into(),
    }
}

fn etag_of(body: &[u8]) -> String {
    let hash = body
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("\"{hash:016x}\"")
}

#[async_trait]
impl ObjectStore for InMemory {
    fn name(&self) -> &'static str {
        "in-memory-test"
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let objects = self.objects.lock().unwrap();
        let body = objects
            .get(&(bucket.to_string(), key.to_string()))
            .ok_or_else(|| StoreError::NotFound { bucket: bucket.into(), key: key.into() })?;
        Ok(ObjectMeta { key: key.into(), size: body.len() as u64, etag: Some(etag_of(body)), last_modified: None })
    }

    async fn get(&self, bucket: &str, key: &str, _options: GetOptions) -> Result<GetResult, StoreError> {
        Err(unsupported(bucket, key))
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes, _options: PutOptions) -> Result<ObjectMeta, StoreError> {
        // Yield once so `buffer_unordered` really has several PUTs in flight.
        tokio::task::yield_now().await;
        if self.fail_puts_after.is_some_and(|limit| self.objects.lock().unwrap().len() >= limit) {
            return Err(StoreError::backend(bucket, key, "injected failure"));
        }
        let meta =
            ObjectMeta { key: key.into(), size: body.len() as u64, etag: Some(etag_of(&body)), last_modified: None };
        self.objects.lock().unwrap().insert((bucket.to_string(), key.to_string()), body);
        Ok(meta)
    }

    async fn create_multipart(&self, bucket: &str, key: &str) -> Result<String, StoreError> {
        Err(unsupported(bucket, key))
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        _upload_id: &str,
        _part_number: u32,
        _body: Bytes,
    ) -> Result<CompletedPart, StoreError> {
        Err(unsupported(bucket, key))
    }

    async fn upload_part_copy(
        &self,
        bucket: &str,
        key: &str,
        _upload_id: &str,
        _part_number: u32,
        _source_bucket: &str,
        _source_key: &str,
        _range: Option<Range<u64>>,
        _source_if_match: Option<&str>,
    ) -> Result<CompletedPart, StoreError> {
        Err(unsupported(bucket, key))
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        _upload_id: &str,
        _parts: &[CompletedPart],
    ) -> Result<ObjectMeta, StoreError> {
        Err(unsupported(bucket, key))
    }

    async fn abort_multipart(&self, bucket: &str, key: &str, _upload_id: &str) -> Result<(), StoreError> {
        Err(unsupported(bucket, key))
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        _start_after: Option<&str>,
        _max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        Err(unsupported(bucket, prefix))
    }

    async fn get_tags(&self, bucket: &str, key: &str) -> Result<Vec<Tag>, StoreError> {
        Err(unsupported(bucket, key))
    }

    async fn put_tags(&self, bucket: &str, key: &str, _tags: &[Tag]) -> Result<(), StoreError> {
        Err(unsupported(bucket, key))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        Err(unsupported(bucket, key))
    }

    async fn delete_many(
        &self,
        bucket: &str,
        _requests: &[compactor::ports::DeleteRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        Err(unsupported(bucket, ""))
    }
}

#[tokio::test]
async fn write_to_store_puts_every_object_and_returns_its_event() {
    let spec = DatasetSpec { prefix: "my logs/é+%/".into(), ..small(DatasetKind::SeedJson, 2, 40) };
    let store = InMemory::default();
    let mut progress_calls = Vec::new();
    let summary =
        write_to_store(&spec, &store, 8, |objects, bytes| progress_calls.push((objects, bytes))).await.unwrap();

    let generated: Vec<GeneratedObject> = objects(&spec).collect();
    assert_eq!(summary.objects, 80);
    assert_eq!(summary.bytes, generated.iter().map(|object| object.body.len() as u64).sum::<u64>());
    assert_eq!(summary.sizes.total(), 80);
    assert_eq!(progress_calls.len(), 80);
    assert_eq!(progress_calls.last(), Some(&(summary.objects, summary.bytes)));
    assert_eq!(store.objects.lock().unwrap().len(), 80);

    for (index, (event, object)) in summary.events.iter().zip(&generated).enumerate() {
        let meta = store.head(&spec.bucket, &object.key).await.unwrap();
        assert_eq!(event, &event_for(&spec.bucket, &meta, object.event_time, sequencer(index as u64)));
        assert_eq!(event.event_name, "ObjectCreated:Put");
        // Through the notification S3 would send (keys URL-encoded) and the real decoder.
        let line = notification_line(event);
        assert!(!line.contains('\n') && line.contains("my+logs/%C3%A9%2B%25/"), "{line}");
        assert_eq!(decode_json(&line).unwrap().events, vec![event.clone()]);
    }
    let sequencers: Vec<&str> = summary.events.iter().map(|event| event.sequencer.as_str()).collect();
    assert!(sequencers.windows(2).all(|pair| pair[0] < pair[1]), "sequencers increase");
    assert_eq!(sequencers[0], "0000000000000001");

    let mut jsonl = Vec::new();
    write_notifications(&summary.events, &mut jsonl).unwrap();
    let lines: Vec<&str> = std::str::from_utf8(&jsonl).unwrap().lines().collect();
    assert_eq!(lines.len(), 80);
    let decoded = decode_json(lines[5]).unwrap().events;
    assert!(matches!(decoded[0].kind, ObjectEventKind::Created { .. }));
}

#[tokio::test]
async fn write_to_store_stops_at_the_first_failed_put_and_names_it() {
    let spec = small(DatasetKind::HiveCsv, 1, 30);
    let store = InMemory { fail_puts_after: Some(10), ..InMemory::default() };
    let error = write_to_store(&spec, &store, 4, |_, _| {}).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("of the hive-csv dataset") && message.contains("injected"), "{message}");
}
