//! How sources are joined, byte for byte, on the embedded backend: gzip sources whose text lacks
//! a final newline are followed by a gzip member holding `\n`, outside their range, whether
//! they were read whole, streamed or copied server-side; unreadable gzip goes in as it is.

use std::io::Read;
use std::sync::Arc;

use chrono::Utc;
use compactor::clock::ManualClock;
use compactor::config::RawConfig;
use compactor::domain::format::GZIP_NEWLINE_MEMBER;
use compactor::domain::partition::PartitionKey;
use compactor::domain::records::OutputState;
use compactor::engine::seal::SealOptions;
use compactor::engine::Compactor;
use compactor::ports::GetOptions;

mod common;

use common::{gzip, Embedded, BUCKET};

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut text).unwrap();
    text
}

/// Lines of text that compress poorly, so that a gzip of them passes 5 MiB.
fn noisy_lines(tag: &str, lines: usize) -> String {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut text = String::new();
    for line in 0..lines {
        let mut next = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            state
        };
        let (first, second) = (next(), next());
        text.push_str(&format!("{{\"source\":\"{tag}\",\"line\":{line},\"noise\":\"{first:016x}{second:016x}\"}}"));
        text.push('\n');
    }
    text
}

/// Issue 13: every gzip source whose text lacks a final newline is followed by the newline
/// member, recorded as its separator; the output then inflates to one record per line, each
/// range stays the source's exact bytes, and a truncated gzip source is kept as it is.
#[tokio::test]
async fn gzip_sources_without_a_final_newline_are_followed_by_a_newline_member() {
    let embedded = Embedded::new(|_| {});
    let key = |name: &str| format!("trail/2024/01/14/{name}.json.gz");
    let truncated = gzip(br#"{"Records":[{"n":"cut"}]}"#);
    let sources = vec![
        (key("a cloudtrail"), gzip(br#"{"Records":[{"n":1}]}"#)),
        (key("b with newline"), gzip(b"{\"n\":2}\n")),
        (key("c two members"), [gzip(b"{\"n\":3}\n"), gzip(b"{\"n\":4}")].concat()),
        (key("d empty text"), gzip(b"")),
        (key("e truncated"), truncated[..truncated.len() - 6].to_vec()),
        (key("f last"), gzip(br#"{"Records":[{"n":5}]}"#)),
    ];
    embedded.add(&sources).await;
    let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!(report.objects_compacted, 6, "{report:?}");
    assert_eq!(report.unreadable_gzip_sources, 1, "the truncated source is counted");

    let (output_key, output) = embedded.only_output("trail/2024/01/14/").await;
    assert!(output_key.ends_with(".json.gz"), "{output_key}");
    let newline_after = [true, false, true, false, false, true];
    let mut expected = Vec::new();
    for ((source_key, body), separated) in sources.iter().zip(newline_after) {
        let offset = expected.len() as u64;
        expected.extend_from_slice(body);
        if separated {
            expected.extend_from_slice(&GZIP_NEWLINE_MEMBER);
        }
        let record = embedded.manifest.object(BUCKET, source_key).await.unwrap().unwrap();
        let placement = record.placement.unwrap();
        let separator_bytes = if separated { GZIP_NEWLINE_MEMBER.len() as u64 } else { 0 };
        assert_eq!(
            (placement.offset, placement.length, placement.separator_bytes),
            (offset, body.len() as u64, separator_bytes),
            "{source_key}"
        );
        let (_, restored) = embedded.compactor.restore_bytes(source_key).await.unwrap();
        assert_eq!(&restored[..], &body[..], "{source_key} restores byte for byte");
    }
    assert!(output[..] == expected[..], "the output is the sources, each followed by its separator");
    let verify = embedded.compactor.verify(None, true, |_| {}).await.unwrap();
    assert!(verify.all_verified(), "{verify:?}");

    // Without the truncated source, the output inflates to one record per line.
    let (before_truncated, _) = sources.split_at(4);
    let readable_end =
        before_truncated.iter().map(|(_, body)| body.len()).sum::<usize>() + 2 * GZIP_NEWLINE_MEMBER.len();
    assert_eq!(gunzip(&output[..readable_end]), "{\"Records\":[{\"n\":1}]}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n");
}

/// A large gzip source copied server-side (`UploadPartCopy`) is hashed and inflated by the
/// same read; its newline member starts the next part, as a line file's `\n` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_gzip_source_gets_its_newline_member_too() {
    let embedded = Embedded::new(|raw| {
        raw.part_bytes = Some("5MiB".into());
        raw.copy_min_bytes = Some("5MiB".into());
    });
    let large = gzip(noisy_lines("large", 250_000).trim_end().as_bytes());
    assert!(large.len() >= 5 << 20, "the large source is a copy candidate: {} bytes", large.len());
    let sources = vec![
        ("trail/2024/01/14/a large.json.gz".to_string(), large.clone()),
        ("trail/2024/01/14/b small.json.gz".to_string(), gzip(b"{\"n\":\"small\"}")),
    ];
    embedded.add(&sources).await;
    let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!((report.objects_compacted, report.copied_sources), (2, 1), "{report:?}");

    let (_, output) = embedded.only_output("trail/2024/01/14/").await;
    let expected = [&large[..], &GZIP_NEWLINE_MEMBER, &sources[1].1, &GZIP_NEWLINE_MEMBER].concat();
    assert!(output[..] == expected[..], "copied source, member, small source, member");
    let text = gunzip(&output);
    assert_eq!(text.lines().count(), 250_001);
    assert!(text.ends_with("}\n{\"n\":\"small\"}\n"), "the copied source's last record ends its own line");
    let verify = embedded.compactor.verify(None, true, |_| {}).await.unwrap();
    assert!(verify.all_verified(), "{verify:?}");
}

/// A CloudTrail document of `records` records with CloudTrail's shape, gzip, no final newline.
fn cloudtrail_file(tag: &str, records: usize) -> Vec<u8> {
    let events: Vec<String> = (0..records)
        .map(|index| {
            format!(
                r#"{{"eventVersion":"1.08","eventTime":"2024-01-14T10:{:02}:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","requestParameters":{{"key":"{tag}-{index}"}},"readOnly":true}}"#,
                index % 60
            )
        })
        .collect();
    gzip(format!("{{\"Records\":[{}]}}", events.join(",")).as_bytes())
}

/// Issue 13: under `COMPACTOR_FORMATS=trail/=cloudtrail`, each CloudTrail source becomes its own
/// gzip member of NDJSON, one event a line, in a `.ndjson.gz` output; its range is that member;
/// restore gives it back (and `restore_as_source` a document of the same records); verify
/// against the sources compares records; an empty `Records` is kept as an empty member; a
/// truncated file is recorded missing with the reason, left untouched and counted.
#[tokio::test]
async fn cloudtrail_sources_become_one_ndjson_member_each_and_verify_by_their_records() {
    let embedded = Embedded::new(|raw| raw.formats = Some("trail/=cloudtrail".into()));
    let key = |name: &str| format!("trail/2024/01/14/{name}.json.gz");
    let truncated = cloudtrail_file("cut", 3);
    let sources = vec![
        (key("a"), cloudtrail_file("a", 1)),
        (key("b"), cloudtrail_file("b", 5)),
        (key("c empty"), gzip(br#"{"Records":[]}"#)),
        (key("d truncated"), truncated[..truncated.len() - 6].to_vec()),
        (
            key("e spaced"),
            gzip(b"{ \"Records\" : [ {\"eventName\" : \"PutObject\"} ,\n {\"eventName\":\"ListBuckets\"} ] }"),
        ),
    ];
    embedded.add(&sources).await;
    let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!(report.objects_compacted, 4, "{report:?}");
    assert_eq!(report.objects_not_in_format, 1, "{report:?}");
    assert_eq!(report.records_rewritten, 1 + 5 + 2, "{report:?}");

    let (output_key, output) = embedded.only_output("trail/2024/01/14/").await;
    assert!(output_key.ends_with(".ndjson.gz"), "{output_key}");
    let text = gunzip(&output);
    assert_eq!(text.lines().count(), 8, "one event a line: {text}");
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(event["eventName"].is_string(), "{line}");
    }

    let cut = embedded.manifest.object(BUCKET, &key("d truncated")).await.unwrap().unwrap();
    assert_eq!(cut.state.as_str(), "missing", "{cut:?}");
    assert!(cut.note.as_deref().unwrap_or("").contains("truncated"), "{cut:?}");
    let untouched = embedded.store.get(BUCKET, &key("d truncated"), GetOptions::default()).await.unwrap();
    assert_eq!(untouched.bytes().await.unwrap(), sources[3].1, "the truncated file stays as it was");

    let mut end = 0;
    for (source_key, body) in sources.iter().filter(|(source_key, _)| !source_key.contains("truncated")) {
        let placement = embedded.manifest.object(BUCKET, source_key).await.unwrap().unwrap().placement.unwrap();
        assert_eq!((placement.offset, placement.separator_bytes), (end, 0), "{source_key}: members follow each other");
        end = placement.offset + placement.length;
        let (_, restored) = embedded.compactor.restore_bytes(source_key).await.unwrap();
        assert_eq!(&restored[..], &output[placement.offset as usize..end as usize], "{source_key}");
        let from_range = compactor::domain::format::cloudtrail::ndjson_digest(&restored).unwrap();
        let original = compactor::domain::format::cloudtrail::document_digest(body).unwrap();
        assert_eq!(from_range, original, "{source_key}: same records");
        let (_, document) = embedded.compactor.restore_as_source(source_key).await.unwrap();
        assert_eq!(compactor::domain::format::cloudtrail::document_digest(&document).unwrap(), original);
    }
    assert_eq!(end, output.len() as u64, "the output is the members and nothing else");
    let verify = embedded.compactor.verify(None, true, |_| {}).await.unwrap();
    assert!(verify.all_verified(), "{verify:?}");
    assert_eq!((verify.originals_compared, verify.records_compared), (4, 8), "{verify:?}");
}

/// Issue 13: under `auto` (the default), CloudTrail log files, known by their key
/// (`AWSLogs/<account>/CloudTrail/…json.gz`), are rewritten as `cloudtrail` rewrites them, into
/// a `.ndjson.gz` output of their own; a truncated one, and a file under that layout whose
/// content is not a CloudTrail document, are left as they are, recorded missing with the
/// reason and counted, as `cloudtrail` leaves them; a `.json.gz` anywhere else is joined by
/// `concat` as before, with its newline member.
#[tokio::test]
async fn auto_rewrites_cloudtrail_log_files_known_by_their_key_and_joins_other_gzip_json_as_before() {
    let embedded = Embedded::new(|_| {});
    let trail_partition = "AWSLogs/123456789012/CloudTrail/eu-west-1/2024/01/14/";
    let key = |name: &str| format!("{trail_partition}123456789012_CloudTrail_eu-west-1_20240114T1000Z_{name}.json.gz");
    let truncated = cloudtrail_file("cut", 3);
    let sources = vec![
        (key("a"), cloudtrail_file("a", 2)),
        (key("b"), cloudtrail_file("b", 3)),
        (key("c truncated"), truncated[..truncated.len() - 6].to_vec()),
        (key("d lines"), gzip(b"{\"a\":1}\n{\"a\":2}\n")),
        ("logs/2024/01/14/x.json.gz".to_string(), gzip(b"{\"n\":1}")),
    ];
    embedded.add(&sources).await;
    let plan = embedded.compactor.plan(None).await.unwrap();
    let formats: Vec<&str> =
        plan.partitions.iter().flat_map(|partition| &partition.outputs).map(|output| output.format.as_str()).collect();
    assert!(formats.contains(&"concat .json.gz (by name, COMPACTOR_FORMAT=auto)"), "{formats:?}");
    assert!(
        formats.contains(
            &"cloudtrail .ndjson.gz (a CloudTrail log file by its key, content checked at seal, COMPACTOR_FORMAT=auto)"
        ),
        "{formats:?}"
    );

    let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!(report.objects_compacted, 3, "{report:?}");
    assert_eq!(report.objects_not_in_format, 2, "{report:?}");
    assert_eq!(report.records_rewritten, 2 + 3, "{report:?}");

    let (output_key, output) = embedded.only_output(trail_partition).await;
    assert!(output_key.ends_with(".ndjson.gz"), "{output_key}");
    let text = gunzip(&output);
    assert_eq!(text.lines().count(), 5, "one event a line: {text}");
    for (name, reason) in [("c truncated", "truncated"), ("d lines", "not a CloudTrail document")] {
        let record = embedded.manifest.object(BUCKET, &key(name)).await.unwrap().unwrap();
        assert_eq!(record.state.as_str(), "missing", "{record:?}");
        assert!(record.note.as_deref().unwrap_or("").contains(reason), "{record:?}");
        let untouched = embedded.store.get(BUCKET, &key(name), GetOptions::default()).await.unwrap();
        let original = &sources.iter().find(|(source_key, _)| *source_key == key(name)).unwrap().1;
        assert_eq!(&untouched.bytes().await.unwrap()[..], &original[..], "{name} stays as it was");
    }
    let (_, document) = embedded.compactor.restore_as_source(&key("b")).await.unwrap();
    let digest = compactor::domain::format::cloudtrail::document_digest;
    assert_eq!(digest(&document).unwrap(), digest(&sources[1].1).unwrap());

    let (logs_key, logs_output) = embedded.only_output("logs/2024/01/14/").await;
    assert!(logs_key.ends_with(".json.gz") && !logs_key.ends_with(".ndjson.gz"), "{logs_key}");
    assert_eq!(&logs_output[..], &[&sources[4].1[..], &GZIP_NEWLINE_MEMBER[..]].concat()[..], "concat as before");
    let verify = embedded.compactor.verify(None, true, |_| {}).await.unwrap();
    assert!(verify.all_verified(), "{verify:?}");
    assert_eq!((verify.originals_compared, verify.records_compared), (3, 5), "{verify:?}");
}

/// A CloudTrail file sealed by `concat` (before `auto` knew CloudTrail) keeps its original
/// bytes in a `.json.gz` output: under `auto` now, `restore_as_source` gives them back as they
/// are instead of reading them as NDJSON.
#[tokio::test]
async fn a_cloudtrail_file_sealed_by_concat_restores_as_it_was_under_auto() {
    let embedded = Embedded::new(|raw| raw.format = Some("concat".into()));
    let key = "AWSLogs/123456789012/CloudTrail/eu-west-1/2024/01/14/x.json.gz".to_string();
    let body = cloudtrail_file("x", 2);
    embedded.add(&[(key.clone(), body.clone())]).await;
    let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!(report.objects_compacted, 1, "{report:?}");
    let raw = RawConfig { source_bucket: Some(BUCKET.into()), grace: Some("1h".into()), ..Default::default() };
    let under_auto = Compactor::new(
        raw.validate().unwrap(),
        Arc::clone(&embedded.store),
        Arc::clone(&embedded.manifest),
        Arc::new(ManualClock::new(Utc::now())),
    );
    let (_, restored) = under_auto.restore_as_source(&key).await.unwrap();
    assert_eq!(&restored[..], &body[..]);
}

/// Issue 13: under `csv`, each output has one header, the first bytes of the output and in no
/// source's range; a source whose header differs (other columns, a BOM) waits for an output of
/// its own, which the seal's next pass writes; a CSV without a final newline gets one outside its range; restore
/// gives every source back byte for byte, header included, and verify compares with originals.
#[tokio::test]
async fn csv_outputs_have_one_header_and_sources_restore_byte_for_byte() {
    let embedded = Embedded::new(|raw| raw.formats = Some("tables/=csv".into()));
    let key = |name: &str| format!("tables/2024/01/14/{name}.csv");
    let sources = vec![
        (key("a"), b"id,name\n1,x\n2,y\n".to_vec()),
        (key("b no final newline"), b"id,name\n3,z".to_vec()),
        (key("c bom"), "\u{feff}id,name\n4,w\n".as_bytes().to_vec()),
        (key("d other columns"), b"id,size\n5,10\n".to_vec()),
        (key("e empty"), Vec::new()),
        (key("f header only"), b"id,name\n".to_vec()),
        (key("g"), b"id,name\n6,v\n".to_vec()),
    ];
    embedded.add(&sources).await;
    // One seal: an output takes its first source's header and leaves the others pending; the
    // seal's next passes give them outputs of their own header (BOM, then other columns).
    let first = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!((first.objects_compacted, first.objects_deferred), (7, 3), "{first:?}");
    let outputs = embedded
        .manifest
        .outputs(&PartitionKey::new(BUCKET, "tables/2024/01/14/"), Some(OutputState::Committed))
        .await
        .unwrap();
    let first_output = outputs.iter().find(|output| output.part_number == 1).expect("the first pass's output");
    assert!(first_output.key.ends_with(".csv"), "{}", first_output.key);
    let output =
        embedded.store.get(BUCKET, &first_output.key, GetOptions::default()).await.unwrap().bytes().await.unwrap();
    assert_eq!(&output[..], b"id,name\n1,x\n2,y\n3,z\n6,v\n", "one header, every row once, a newline after 3,z");
    assert_eq!(outputs.len(), 3, "{outputs:?}");
    for output in &outputs {
        let bytes =
            embedded.store.get(BUCKET, &output.key, GetOptions::default()).await.unwrap().bytes().await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(text.matches("id,").count(), 1, "one header in {}: {text:?}", output.key);
    }
    for (source_key, body) in &sources {
        let (_, restored) = embedded.compactor.restore_bytes(source_key).await.unwrap();
        assert_eq!(&restored[..], &body[..], "{source_key} restores byte for byte");
    }
    let verify = embedded.compactor.verify(None, true, |_| {}).await.unwrap();
    assert!(verify.all_verified(), "{verify:?}");
    assert_eq!((verify.sources_checked, verify.originals_ok), (7, 7), "{verify:?}");
}

/// Issue 13: under `ndjson`, a line that is not JSON is counted, and kept in a side file next
/// to the output (`_invalid-…`, which Hive-style readers skip), with its source and line number:
/// the output holds only JSON lines; restore puts the lines back byte for byte, and verify
/// against the originals agrees.
#[tokio::test]
async fn invalid_ndjson_lines_go_to_a_side_file_and_sources_restore_byte_for_byte() {
    let embedded = Embedded::new(|raw| raw.formats = Some("events/=ndjson".into()));
    let key = |name: &str| format!("events/2024/01/14/{name}.ndjson");
    let sources = vec![
        (key("a valid"), b"{\"n\":1}\n{\"n\":2}\n".to_vec()),
        (key("b one bad line"), b"{\"n\":3}\n{\"n\":4,\n{\"n\":5}".to_vec()),
        (key("c all bad"), b"oops\n\xff\n".to_vec()),
        (key("d last line bad"), b"{\"n\":6}\nnot json".to_vec()),
    ];
    embedded.add(&sources).await;
    let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!((report.objects_compacted, report.invalid_lines), (4, 4), "{report:?}");
    let (output_key, output) = embedded.only_output("events/2024/01/14/").await;
    assert_eq!(&output[..], b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":5}\n{\"n\":6}\n", "JSON lines only");

    let side_key = compactor::domain::format::ndjson::side_key(&output_key);
    assert!(side_key.rsplit('/').next().unwrap().starts_with("_invalid-"), "{side_key}");
    let side = embedded.store.get(BUCKET, &side_key, GetOptions::default()).await.unwrap().bytes().await.unwrap();
    let entries: Vec<serde_json::Value> = side
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    let named: Vec<(String, u64)> = entries
        .iter()
        .map(|entry| (entry["source"].as_str().unwrap().to_string(), entry["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        named,
        vec![(key("b one bad line"), 2), (key("c all bad"), 1), (key("c all bad"), 2), (key("d last line bad"), 2)]
    );
    for (source_key, body) in &sources {
        let (_, restored) = embedded.compactor.restore_bytes(source_key).await.unwrap();
        assert_eq!(&restored[..], &body[..], "{source_key} restores byte for byte");
    }
    let verify = embedded.compactor.verify(None, true, |_| {}).await.unwrap();
    assert!(verify.all_verified(), "{verify:?}");
    assert_eq!(verify.originals_ok, 4, "{verify:?}");
}
