//! The CLI end to end, as a user runs it: the demo, then audit and restore of its objects,
//! and the exit codes and messages of bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{files_under, text};

fn s3_compactor(arguments: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s3-compactor"))
        .args(arguments)
        .env("COMPACTOR_DATA_DIR", data_dir)
        .env_remove("COMPACTOR_SOURCE_BUCKET")
        .env("LOG_LEVEL", "error")
        .output()
        .expect("the binary runs")
}

/// One S3 notification record of a 12-byte object created in bucket `logs`.
fn s3_record(key: &str, sequencer: &str, event_time: &str) -> serde_json::Value {
    serde_json::json!({"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": event_time, "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "x"}, "requestParameters": {"sourceIPAddress": "1.2.3.4"},
        "responseElements": {}, "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
        "bucket": {"name": "logs", "arn": "arn:aws:s3:::logs"},
        "object": {"key": key, "size": 12, "eTag": "e", "sequencer": sequencer}}})
}

/// Writes one S3 notification of `key` into a file under `directory`, and returns its path.
fn event_file(directory: &Path, key: &str) -> String {
    let events = directory.join("event.json");
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    std::fs::write(&events, serde_json::json!({"Records": [s3_record(key, "01", &now)]}).to_string()).unwrap();
    events.to_str().unwrap().to_string()
}

#[test]
fn demo_then_audit_and_restore_give_back_the_exact_bytes() {
    let work = tempfile::tempdir().unwrap();
    let demo_dir = work.path().join("demo");
    let demo_dir_text = demo_dir.to_str().unwrap();
    let demo = s3_compactor(&["demo", "--dir", demo_dir_text, "--days", "3", "--files-per-day", "40"], work.path());
    assert!(demo.status.success(), "demo failed:\n{}\n{}", text(&demo.stdout), text(&demo.stderr));
    let stdout = text(&demo.stdout);
    assert!(stdout.contains("all verified"), "{stdout}");
    assert!(stdout.contains("3 partitions sealed"), "{stdout}");

    let bucket_dir = demo_dir.join("buckets").join("demo-logs");
    let source_files: Vec<PathBuf> = files_under(&bucket_dir.join("AWSLogs"))
        .into_iter()
        .filter(|path| path.to_str().unwrap().contains("/2024/"))
        .collect();
    assert_eq!(source_files.len(), 120);
    let common = ["--data-dir", demo_dir_text, "--source-bucket", "demo-logs"];
    for source in [&source_files[0], &source_files[61], &source_files[119]] {
        let key = source.strip_prefix(&bucket_dir).unwrap().to_str().unwrap();
        let audit = s3_compactor(&[&common[..], &["--json", "audit", "--object", key]].concat(), work.path());
        assert!(audit.status.success(), "{}", text(&audit.stderr));
        let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
        assert_eq!(audit["object"]["state"], "compacted");
        assert_eq!(audit["output"]["state"], "committed");
        let length = audit["object"]["placement"]["length"].as_u64().unwrap();

        let restored_path = work.path().join("restored");
        let restored_text = restored_path.to_str().unwrap();
        let restore =
            s3_compactor(&[&common[..], &["restore", "--object", key, "--out", restored_text]].concat(), work.path());
        assert!(restore.status.success(), "{}", text(&restore.stderr));
        let original = std::fs::read(source).unwrap();
        assert_eq!(std::fs::read(&restored_path).unwrap(), original, "restore of {key}");
        assert_eq!(original.len() as u64, length);
    }

    let verify = s3_compactor(&[&common[..], &["verify"]].concat(), work.path());
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    assert!(
        text(&verify.stdout).contains("verified 3/3 outputs and 120/120 source ranges"),
        "{}",
        text(&verify.stdout)
    );

    // A second demo in the same directory replaces the first: only its own day is there, and
    // only its own objects are in the manifest.
    let again = s3_compactor(&["demo", "--dir", demo_dir_text, "--days", "1", "--files-per-day", "5"], work.path());
    assert!(again.status.success(), "{}", text(&again.stderr));
    let sources_left: Vec<PathBuf> = files_under(&bucket_dir.join("AWSLogs"))
        .into_iter()
        .filter(|path| path.to_str().unwrap().contains("/2024/"))
        .collect();
    assert_eq!(sources_left.len(), 5, "the first demo's sources are gone: {sources_left:?}");
    assert!(!source_files[61].exists(), "{} is left from the first demo", source_files[61].display());
    let verify = s3_compactor(&[&common[..], &["verify"]].concat(), work.path());
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    assert!(text(&verify.stdout).contains("verified 1/1 outputs and 5/5 source ranges"), "{}", text(&verify.stdout));
}

/// Issue 10: `s3-compactor --json audit | head` panicked with "failed printing to stdout:
/// Broken pipe". Piped into a reader that has gone, the CLI exits quietly, as ripgrep does.
#[test]
fn output_into_a_closed_pipe_exits_quietly() {
    let work = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_s3-compactor"))
        .args(["--source-bucket", "logs", "--json", "audit"])
        .env("COMPACTOR_DATA_DIR", work.path())
        .env("LOG_LEVEL", "error")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr), "", "nothing on stderr, no backtrace");
}

/// Issue 10: `plan` with nothing to seal printed an empty table and a $0.0000 cost.
#[test]
fn plan_with_nothing_to_seal_says_why() {
    let work = tempfile::tempdir().unwrap();
    let empty = s3_compactor(&["--source-bucket", "logs", "plan"], work.path());
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert!(text(&empty.stdout).contains("the manifest has no partitions yet"), "{}", text(&empty.stdout));

    let today = chrono::Utc::now().format("%Y/%m/%d").to_string();
    let key = format!("app/{today}/a.json");
    let ingest = s3_compactor(&["--source-bucket", "logs", "ingest", &event_file(work.path(), &key)], work.path());
    assert!(ingest.status.success(), "{}", text(&ingest.stderr));
    let plan = s3_compactor(&["--source-bucket", "logs", "plan"], work.path());
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let stdout = text(&plan.stdout);
    assert!(stdout.contains("nothing to seal: no closed partition has pending objects (1 partitions: 0 sealed, 1 open"));
    assert!(stdout.contains(&format!("the next to close is app/{today}/ (1 pending objects, 12 B), at ")), "{stdout}");
    assert!(!stdout.contains("cost"), "no empty table and no $0 cost: {stdout}");
}

/// Issue 10: a huge duration panicked, at validation (`999999999999999d`) or on every ingest
/// after passing it (`100000000000d`). It is bad input: exit 2, naming the flag given and the
/// range.
#[test]
fn a_huge_grace_is_bad_input_not_a_panic() {
    let work = tempfile::tempdir().unwrap();
    let events = event_file(work.path(), "app/2024/01/14/a.json");
    for (grace, reason) in [("999999999999999d", "out of range"), ("100000000000d", "use at most 365d")] {
        let output = s3_compactor(&["--source-bucket", "logs", "--grace", grace, "ingest", &events], work.path());
        assert_eq!(output.status.code(), Some(2), "{grace}: {}", text(&output.stderr));
        let stderr = text(&output.stderr);
        assert!(stderr.contains(&format!("--grace \"{grace}\" is invalid")), "{stderr}");
        assert!(stderr.contains(reason), "{grace}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn bad_input_exits_2_and_says_what_to_do() {
    let work = tempfile::tempdir().unwrap();
    let no_bucket = s3_compactor(&["seal"], work.path());
    assert_eq!(no_bucket.status.code(), Some(2));
    assert!(text(&no_bucket.stderr).contains("COMPACTOR_SOURCE_BUCKET is required"), "{}", text(&no_bucket.stderr));

    let events = work.path().join("events.json");
    std::fs::write(&events, "{\"not\": \"an event\"}").unwrap();
    let malformed = s3_compactor(&["--source-bucket", "logs", "ingest", events.to_str().unwrap()], work.path());
    assert_eq!(malformed.status.code(), Some(2));
    assert!(text(&malformed.stderr).contains("is not an S3 notification"), "{}", text(&malformed.stderr));

    let unknown = s3_compactor(&["--source-bucket", "logs", "audit", "--object", "no/such/key.json"], work.path());
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("is not in the manifest"), "{}", text(&unknown.stderr));

    let layout = s3_compactor(&["--source-bucket", "logs", "--layout", "%Y/%q", "seal"], work.path());
    assert_eq!(layout.status.code(), Some(2));
    assert!(text(&layout.stderr).contains("--layout"), "{}", text(&layout.stderr));

    let not_a_demo = work.path().join("precious");
    std::fs::create_dir_all(&not_a_demo).unwrap();
    std::fs::write(not_a_demo.join("data.txt"), "keep me").unwrap();
    let refused = s3_compactor(&["demo", "--dir", not_a_demo.to_str().unwrap()], work.path());
    assert_eq!(refused.status.code(), Some(2));
    assert!(not_a_demo.join("data.txt").exists(), "the demo never deletes what it did not make");
}

#[test]
fn ingest_counts_skips_and_replays_from_event_files() {
    let work = tempfile::tempdir().unwrap();
    let bucket_dir = work.path().join("buckets").join("logs");
    std::fs::create_dir_all(&bucket_dir).unwrap();
    let record = |key: &str, sequencer: &str| s3_record(key, sequencer, "2024-01-14T10:00:00.000Z");
    let lines = [
        serde_json::json!({"Records": [record("app/2024/01/14/a+b.json", "01")]}),
        serde_json::json!({"Records": [record("app/2024/01/14/a+b.json", "01")]}),
        serde_json::json!({"Records": [record("app/notes.txt", "01"), record("compacted/app/2024/01/14/x.json", "02")]}),
        serde_json::json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "logs"}),
    ];
    let events = work.path().join("events.jsonl");
    std::fs::write(&events, lines.iter().map(|line| line.to_string() + "\n").collect::<String>()).unwrap();
    let output = s3_compactor(&["--source-bucket", "logs", "--json", "ingest", events.to_str().unwrap()], work.path());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["recorded"], 1);
    assert_eq!(report["stale"], 1);
    assert_eq!(report["skipped"]["out_of_layout"], 1);
    assert_eq!(report["skipped"]["under_destination"], 1);
    assert_eq!(report["ignored_records"], 1);

    let audit = s3_compactor(
        &["--source-bucket", "logs", "--json", "audit", "--object", "app/2024/01/14/a b.json"],
        work.path(),
    );
    assert!(audit.status.success(), "{}", text(&audit.stderr));
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(audit["object"]["state"], "pending");
}

/// Issue 11, item 7: `audit` with a misspelled `--data-dir` created that directory and said
/// `0 partitions`. A read-only command on a directory that does not exist is bad input and
/// creates nothing.
#[test]
fn a_read_only_command_on_a_missing_data_dir_says_so_and_creates_nothing() {
    let work = tempfile::tempdir().unwrap();
    let misspelled = work.path().join("s3-compactor-dta");
    for command in [&["audit"][..], &["verify"], &["plan"], &["restore", "--object", "a.json", "--out", "-"]] {
        let mut arguments = vec!["--source-bucket", "logs"];
        arguments.extend_from_slice(command);
        let output = s3_compactor(&arguments, &misspelled);
        assert_eq!(output.status.code(), Some(2), "{command:?}: {}", text(&output.stderr));
        let stderr = text(&output.stderr);
        assert!(stderr.contains("no embedded backend at") && stderr.contains("--data-dir"), "{command:?}: {stderr}");
        assert!(!misspelled.exists(), "{command:?} created {}", misspelled.display());
    }
}

/// Issue 11, item 9: stderr logs carried ANSI colours when piped.
#[test]
fn logs_piped_from_stderr_carry_no_colour_codes() {
    let work = tempfile::tempdir().unwrap();
    let events = event_file(work.path(), "app/notes.txt");
    let output = Command::new(env!("CARGO_BIN_EXE_s3-compactor"))
        .args(["--source-bucket", "logs", "ingest", &events])
        .env("COMPACTOR_DATA_DIR", work.path())
        .env("LOG_LEVEL", "warn")
        .env_remove("NO_COLOR")
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("skipped object"), "the out-of-layout key is logged: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no escape codes in a pipe: {stderr:?}");
}

/// Issue 11, item 6: a flag's error named its variable (`--grace banana` answered
/// `COMPACTOR_GRACE="banana" is invalid`), `--part-bytes 1MiB` echoed `"1048576"`, and a bad
/// layout said its message twice.
#[test]
fn a_bad_setting_is_named_as_the_user_gave_it() {
    let work = tempfile::tempdir().unwrap();
    let flag = s3_compactor(&["--source-bucket", "logs", "--grace", "banana", "seal"], work.path());
    assert_eq!(flag.status.code(), Some(2));
    let stderr = text(&flag.stderr);
    assert!(stderr.contains("--grace \"banana\" is invalid"), "{stderr}");
    assert!(!stderr.contains("COMPACTOR_GRACE"), "{stderr}");

    let variable = Command::new(env!("CARGO_BIN_EXE_s3-compactor"))
        .args(["--source-bucket", "logs", "seal"])
        .env("COMPACTOR_DATA_DIR", work.path())
        .env("COMPACTOR_GRACE", "banana")
        .output()
        .expect("the binary runs");
    assert!(text(&variable.stderr).contains("COMPACTOR_GRACE=\"banana\" is invalid"), "{}", text(&variable.stderr));

    let part = s3_compactor(&["--source-bucket", "logs", "--part-bytes=1MiB", "seal"], work.path());
    let stderr = text(&part.stderr);
    assert!(stderr.contains("--part-bytes \"1MiB\" is invalid: S3 parts are 5MiB to 5GiB"), "{stderr}");
    assert!(!stderr.contains("1048576"), "{stderr}");

    let layout = s3_compactor(&["--source-bucket", "logs", "--layout", "%Y/%q", "seal"], work.path());
    let stderr = text(&layout.stderr);
    let message = stderr.trim().trim_start_matches("error: --layout: ");
    let half = message.len().saturating_sub(2) / 2;
    let said_twice = message.get(..half).zip(message.get(half + 2..)).is_some_and(|(first, second)| first == second);
    assert!(message.contains("%q") || message.contains("layout"), "{stderr}");
    assert!(!said_twice, "said once: {stderr}");
}

/// Issue 14: the demo on Parquet files verifies, and `restore` gives back a Parquet file with
/// the original's rows and values (not its bytes: a new footer).
#[test]
fn the_parquet_demo_verifies_and_restore_gives_back_the_rows() {
    let work = tempfile::tempdir().unwrap();
    let demo_dir = work.path().join("demo");
    let demo_dir_text = demo_dir.to_str().unwrap();
    let demo = s3_compactor(
        &["demo", "--format", "parquet", "--dir", demo_dir_text, "--days", "2", "--files-per-day", "6"],
        work.path(),
    );
    assert!(demo.status.success(), "demo failed:\n{}\n{}", text(&demo.stdout), text(&demo.stderr));
    let stdout = text(&demo.stdout);
    assert!(stdout.contains("all verified"), "{stdout}");
    assert!(stdout.contains("2 partitions sealed: 12 objects"), "{stdout}");
    assert!(stdout.contains("into 2 outputs"), "{stdout}");
    assert!(stdout.contains("12/12 match their original object"), "{stdout}");

    let bucket_dir = demo_dir.join("buckets").join("demo-logs");
    let sources: Vec<PathBuf> = files_under(&bucket_dir.join("AWSLogs"))
        .into_iter()
        .filter(|path| path.to_str().unwrap().ends_with(".parquet") && path.to_str().unwrap().contains("/2024/"))
        .collect();
    assert_eq!(sources.len(), 12);
    let key = sources[5].strip_prefix(&bucket_dir).unwrap().to_str().unwrap();
    let restored_path = work.path().join("restored.parquet");
    let common = ["--data-dir", demo_dir_text, "--source-bucket", "demo-logs"];
    let restore = s3_compactor(
        &[&common[..], &["restore", "--object", key, "--out", restored_path.to_str().unwrap()]].concat(),
        work.path(),
    );
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    let restored = bytes::Bytes::from(std::fs::read(&restored_path).unwrap());
    let original = bytes::Bytes::from(std::fs::read(&sources[5]).unwrap());
    assert_ne!(restored, original, "not byte-identical");
    let digests = compactor::parquet::values::file_digests;
    let (rows, _) = digests(&original).unwrap();
    assert!(rows > 0);
    assert_eq!(digests(&restored).unwrap(), digests(&original).unwrap(), "same rows and decoded values");
}

/// Issue 14, rewrite mode: the Parquet demo with `--parquet-row-groups rewrite` verifies, each
/// output holds one row group where its sources held one or two each, and `restore` gives back
/// a Parquet file with the original's rows and values.
#[test]
fn the_parquet_demo_with_rewritten_row_groups_verifies_and_restore_gives_back_the_rows() {
    let work = tempfile::tempdir().unwrap();
    let demo_dir = work.path().join("demo");
    let demo_dir_text = demo_dir.to_str().unwrap();
    let demo = s3_compactor(
        &[
            "demo",
            "--format",
            "parquet",
            "--parquet-row-groups",
            "rewrite",
            "--dir",
            demo_dir_text,
            "--days",
            "2",
            "--files-per-day",
            "6",
        ],
        work.path(),
    );
    assert!(demo.status.success(), "demo failed:\n{}\n{}", text(&demo.stdout), text(&demo.stderr));
    let stdout = text(&demo.stdout);
    assert!(stdout.contains("all verified"), "{stdout}");
    assert!(stdout.contains("2 partitions sealed: 12 objects"), "{stdout}");
    assert!(stdout.contains("12/12 match their original object"), "{stdout}");

    let bucket_dir = demo_dir.join("buckets").join("demo-logs");
    let all_files = files_under(&bucket_dir);
    let outputs: Vec<&PathBuf> =
        all_files.iter().filter(|path| path.to_str().unwrap().ends_with("-rows.parquet")).collect();
    assert_eq!(outputs.len(), 2, "{all_files:?}");
    for output in &outputs {
        let bytes = bytes::Bytes::from(std::fs::read(output).unwrap());
        let (rows, row_groups, _) = compactor::parquet::rows::file_rows(&bytes).unwrap();
        assert_eq!(row_groups, 1, "{} ({rows} rows of 6 sources) in one row group", output.display());
    }
    let sources: Vec<PathBuf> = files_under(&bucket_dir.join("AWSLogs"))
        .into_iter()
        .filter(|path| path.to_str().unwrap().ends_with(".parquet") && path.to_str().unwrap().contains("/2024/"))
        .collect();
    assert_eq!(sources.len(), 12);
    let key = sources[5].strip_prefix(&bucket_dir).unwrap().to_str().unwrap();
    let restored_path = work.path().join("restored.parquet");
    let common = ["--data-dir", demo_dir_text, "--source-bucket", "demo-logs", "--parquet-row-groups", "rewrite"];
    let restore = s3_compactor(
        &[&common[..], &["restore", "--object", key, "--out", restored_path.to_str().unwrap()]].concat(),
        work.path(),
    );
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    let restored = bytes::Bytes::from(std::fs::read(&restored_path).unwrap());
    let original = bytes::Bytes::from(std::fs::read(&sources[5]).unwrap());
    let (restored_rows, _, restored_digest) = compactor::parquet::rows::file_rows(&restored).unwrap();
    let (original_rows, _, original_digest) = compactor::parquet::rows::file_rows(&original).unwrap();
    assert!(original_rows > 0);
    assert_eq!((restored_rows, restored_digest), (original_rows, original_digest), "same rows and values");
    let audit = s3_compactor(&[&common[..], &["audit", "--object", key]].concat(), work.path());
    let audit_text = text(&audit.stdout);
    assert!(audit_text.contains(&format!("rows        {original_rows} rows from row ")), "{audit_text}");
    assert!(!audit_text.contains("byte range"), "a rewritten source is rows, not bytes: {audit_text}");
}
