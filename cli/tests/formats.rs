//! Outputs that query engines read as they are: for each dataset kind, the real CLI ingests and
//! seals generated sources on the embedded backend, then DuckDB counts the records over every
//! output and over the sources, and the two counts must be equal. A reader that cannot parse an
//! output fails the test with DuckDB's own message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{files_under, text};

use compactor::testkit::duckdb::{duckdb, sql_list, DuckDb};
use test_data::{DatasetKind, DatasetSpec};

const BUCKET: &str = "lake";

fn s3_compactor(arguments: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s3-compactor"))
        .args(["--data-dir", data_dir.to_str().unwrap(), "--source-bucket", BUCKET])
        .args(arguments)
        .env_remove("COMPACTOR_FORMAT")
        .env("LOG_LEVEL", "error")
        .output()
        .expect("the binary runs")
}

/// A dataset sealed by the CLI: where its sources and outputs are.
struct Sealed {
    _work: tempfile::TempDir,
    sources: Vec<PathBuf>,
    outputs: Vec<PathBuf>,
    /// What `plan` printed before the seal.
    plan: String,
}

/// Writes `spec`'s objects where the embedded store keeps them, then runs `ingest --scan`,
/// `seal` and `verify --against-sources` with `extra` flags, each of which must succeed.
fn seal_dataset(spec: &DatasetSpec, scan_prefix: &str, extra: &[&str]) -> Sealed {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let bucket_dir = data_dir.join("buckets").join(BUCKET);
    let mut sources = Vec::new();
    let mut plan = String::new();
    for object in test_data::objects(spec) {
        let path = bucket_dir.join(&object.key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &object.body).unwrap();
        sources.push(path);
    }
    for command in [&["ingest", "--scan", scan_prefix][..], &["plan"], &["seal"], &["verify", "--against-sources"]] {
        let output = s3_compactor(&[extra, command].concat(), &data_dir);
        assert!(output.status.success(), "{command:?} failed:\n{}\n{}", text(&output.stdout), text(&output.stderr));
        if command == ["plan"] {
            plan = text(&output.stdout);
        }
    }
    let outputs = files_under(&bucket_dir.join("compacted"));
    assert!(!outputs.is_empty(), "the seal wrote outputs");
    Sealed { _work: work, sources, outputs, plan }
}

fn spec(kind: DatasetKind, days: u32, files_per_day: u32) -> DatasetSpec {
    DatasetSpec { days, files_per_day, bucket: BUCKET.to_string(), ..DatasetSpec::demo(kind) }
}

/// DuckDB's count of JSON lines over `files`.
fn json_lines(duckdb: &DuckDb, files: &[PathBuf]) -> u64 {
    let sql = format!("select count(*) from read_json({}, format = 'newline_delimited')", sql_list(files));
    duckdb.count(&sql).unwrap_or_else(|error| panic!("DuckDB could not read the files as JSON lines: {error}"))
}

#[test]
fn duckdb_counts_as_many_json_records_in_the_outputs_as_in_the_sources() {
    let Some(duckdb) = duckdb() else { return };
    let sealed = seal_dataset(&spec(DatasetKind::SeedJson, 2, 60), "logs/", &[]);
    let in_sources = json_lines(&duckdb, &sealed.sources);
    assert_eq!(in_sources, 2 * 60 * 6, "seed-json files hold 6 records each");
    assert_eq!(json_lines(&duckdb, &sealed.outputs), in_sources);
}

#[test]
fn duckdb_counts_as_many_records_in_mixed_plain_and_gzip_outputs_as_in_the_sources() {
    let Some(duckdb) = duckdb() else { return };
    let sealed = seal_dataset(
        &spec(DatasetKind::HiveNdjson, 1, 80),
        "clicks/",
        &["--layout", "year=%Y/month=%m/day=%d/hour=%H"],
    );
    assert!(sealed.outputs.iter().any(|path| path.to_string_lossy().ends_with(".ndjson.gz")), "{:?}", sealed.outputs);
    assert!(sealed.outputs.iter().any(|path| path.to_string_lossy().ends_with(".ndjson")), "{:?}", sealed.outputs);
    let in_sources = json_lines(&duckdb, &sealed.sources);
    assert!(in_sources > 80, "hive-ndjson files hold many records each: {in_sources}");
    assert_eq!(json_lines(&duckdb, &sealed.outputs), in_sources);
}

/// The gzip members of `bytes`, counted by inflating them one after another.
fn gzip_members(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut members = 0;
    while !rest.is_empty() {
        let mut decoder = flate2::bufread::GzDecoder::new(rest);
        std::io::copy(&mut decoder, &mut std::io::sink()).expect("every member inflates");
        rest = decoder.into_inner();
        members += 1;
    }
    members
}

/// Issue 13: CloudTrail files are one `{"Records":[...]}` document each, gzip, without a final
/// newline. Concatenated as they were, a day's output inflated to 700 documents on one line and
/// DuckDB stopped with "Malformed JSON"; under `concat`, with a newline member after each, it
/// reads one document per line, in outputs of more than 1,000 gzip members (readers have
/// under-counted those). (`auto` rewrites them: see the test after the next.)
#[test]
fn duckdb_reads_every_cloudtrail_record_of_outputs_with_more_than_a_thousand_gzip_members() {
    let Some(duckdb) = duckdb() else { return };
    let sealed = seal_dataset(&spec(DatasetKind::CloudTrail, 2, 700), "AWSLogs/", &["--format", "concat"]);
    assert_eq!(sealed.outputs.len(), 2, "one output a day: {:?}", sealed.outputs);
    for output in &sealed.outputs {
        assert!(output.to_string_lossy().ends_with(".json.gz"), "{output:?}");
        let members = gzip_members(&std::fs::read(output).unwrap());
        assert_eq!(members, 1_400, "700 sources, each followed by a newline member: {output:?}");
    }
    let records = |files: &[PathBuf]| {
        let sql = format!(
            "select count(*) || ' ' || sum(len(Records)) from read_json({}, format = 'newline_delimited', \
             columns = {{Records: 'JSON[]'}})",
            sql_list(files)
        );
        duckdb.query(&sql).unwrap_or_else(|error| panic!("DuckDB could not read CloudTrail as JSON lines: {error}"))
    };
    let in_sources = records(&sealed.sources);
    assert!(in_sources.starts_with("1400 "), "one document per source: {in_sources}");
    assert_eq!(records(&sealed.outputs), in_sources, "documents and records, outputs vs sources");
}

/// Issue 13: with `--formats AWSLogs/=cloudtrail`, `plan` says so per partition, and each
/// CloudTrail file becomes its own gzip member of NDJSON, one event a line, in `.ndjson.gz`
/// outputs of more than 1,000 members: DuckDB counts as many records in them, read as JSON
/// lines, as in the `Records` arrays of the sources.
#[test]
fn duckdb_counts_every_cloudtrail_event_as_one_ndjson_line_in_outputs_of_more_than_a_thousand_members() {
    let Some(duckdb) = duckdb() else { return };
    let sealed =
        seal_dataset(&spec(DatasetKind::CloudTrail, 1, 1_100), "AWSLogs/", &["--formats", "AWSLogs/=cloudtrail"]);
    assert!(
        sealed.plan.contains("cloudtrail .ndjson.gz (COMPACTOR_FORMATS AWSLogs/=cloudtrail)"),
        "plan shows the format and why:\n{}",
        sealed.plan
    );
    assert_eq!(sealed.outputs.len(), 1, "{:?}", sealed.outputs);
    let output = &sealed.outputs[0];
    assert!(output.to_string_lossy().ends_with(".ndjson.gz"), "{output:?}");
    assert_eq!(gzip_members(&std::fs::read(output).unwrap()), 1_100, "one member a source");
    let in_sources = duckdb
        .count(&format!(
            "select sum(len(Records)) from read_json({}, format = 'newline_delimited', columns = {{Records: 'JSON[]'}})",
            sql_list(&sealed.sources)
        ))
        .unwrap_or_else(|error| panic!("DuckDB could not read the CloudTrail sources: {error}"));
    assert!(in_sources > 1_100, "{in_sources}");
    assert_eq!(json_lines(&duckdb, &sealed.outputs), in_sources, "one line an event");
    let events_named = duckdb
        .count(&format!(
            "select count(*) from read_json({}, format = 'newline_delimited') where eventName is not null",
            sql_list(&sealed.outputs)
        ))
        .unwrap();
    assert_eq!(events_named, in_sources, "each line is an event with its fields");
}

/// Issue 13: under `auto` (no format given), CloudTrail log files are known by their key
/// (`AWSLogs/<account>/CloudTrail/…`, as test-data and the service write them), `plan` says
/// so, and they come out as `cloudtrail` makes them: gzip NDJSON, one event a line, which
/// DuckDB counts as many events in as the sources' `Records` hold.
#[test]
fn under_auto_cloudtrail_log_files_come_out_as_ndjson_that_duckdb_counts_event_by_event() {
    let Some(duckdb) = duckdb() else { return };
    let sealed = seal_dataset(&spec(DatasetKind::CloudTrail, 2, 150), "AWSLogs/", &[]);
    assert!(
        sealed.plan.contains(
            "cloudtrail .ndjson.gz (a CloudTrail log file by its key, content checked at seal, COMPACTOR_FORMAT=auto)"
        ),
        "plan shows the format and why:\n{}",
        sealed.plan
    );
    assert_eq!(sealed.outputs.len(), 2, "one output a day: {:?}", sealed.outputs);
    for output in &sealed.outputs {
        assert!(output.to_string_lossy().ends_with(".ndjson.gz"), "{output:?}");
        assert_eq!(gzip_members(&std::fs::read(output).unwrap()), 150, "one member a source: {output:?}");
    }
    let in_sources = duckdb
        .count(&format!(
            "select sum(len(Records)) from read_json({}, format = 'newline_delimited', columns = {{Records: 'JSON[]'}})",
            sql_list(&sealed.sources)
        ))
        .unwrap_or_else(|error| panic!("DuckDB could not read the CloudTrail sources: {error}"));
    assert!(in_sources > 300, "{in_sources}");
    assert_eq!(json_lines(&duckdb, &sealed.outputs), in_sources, "one line an event");
}

/// Issue 13: `demo --format F` seals and verifies in each format built; under `cloudtrail`,
/// `restore --as-source` rebuilds a gzip `{"Records":[...]}` document with the original's records.
#[test]
fn the_demo_verifies_in_every_format_and_cloudtrail_restores_as_a_document() {
    for format in ["concat", "bytes", "cloudtrail", "csv", "ndjson"] {
        let work = tempfile::tempdir().unwrap();
        let demo_dir = work.path().join("demo");
        let output = Command::new(env!("CARGO_BIN_EXE_s3-compactor"))
            .args(["demo", "--dir", demo_dir.to_str().unwrap(), "--days", "2", "--files-per-day", "30"])
            .args(["--format", format])
            .env_remove("COMPACTOR_FORMAT")
            .env_remove("COMPACTOR_FORMATS")
            .env("LOG_LEVEL", "error")
            .output()
            .unwrap();
        let stdout = text(&output.stdout);
        assert!(output.status.success(), "demo --format {format}:\n{stdout}\n{}", text(&output.stderr));
        assert!(stdout.contains("all verified"), "{format}: {stdout}");
        assert!(stdout.contains("60/60 match their original object"), "{format}: {stdout}");
        if format == "csv" {
            let outputs = files_under(&demo_dir.join("buckets").join("demo-logs").join("compacted"));
            let plain: Vec<_> = outputs.iter().filter(|path| path.to_string_lossy().ends_with(".csv")).collect();
            assert!(!plain.is_empty(), "{outputs:?}");
            for output in plain {
                let text = std::fs::read_to_string(output).unwrap();
                assert_eq!(text.matches("timestamp,session_id").count(), 1, "one header in {output:?}");
            }
        }
        if format != "cloudtrail" {
            continue;
        }
        let bucket_dir = demo_dir.join("buckets").join("demo-logs");
        let outputs = files_under(&bucket_dir.join("compacted"));
        assert!(outputs.iter().all(|path| path.to_string_lossy().ends_with(".ndjson.gz")), "{outputs:?}");
        let source = files_under(&bucket_dir.join("AWSLogs"))
            .into_iter()
            .find(|path| path.to_string_lossy().ends_with(".json.gz"))
            .unwrap();
        let key = source.strip_prefix(&bucket_dir).unwrap().to_str().unwrap().to_string();
        let restored = work.path().join("restored.json.gz");
        let restore = Command::new(env!("CARGO_BIN_EXE_s3-compactor"))
            .args(["--data-dir", demo_dir.to_str().unwrap(), "--source-bucket", "demo-logs", "--format", "cloudtrail"])
            .args(["restore", "--as-source", "--object", &key, "--out", restored.to_str().unwrap()])
            .env_remove("COMPACTOR_FORMATS")
            .output()
            .unwrap();
        assert!(restore.status.success(), "{}", text(&restore.stderr));
        let records = |path: &Path| {
            let mut document = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()),
                &mut document,
            )
            .unwrap();
            let document: serde_json::Value = serde_json::from_str(&document).unwrap();
            document["Records"].as_array().unwrap().clone()
        };
        let original = records(&source);
        assert!(!original.is_empty());
        assert_eq!(records(&restored), original, "the same records, in order");
    }
}

/// Issue 13: with `--formats clicks-csv/=csv`, each plain CSV output has one header: DuckDB
/// reads as many rows in the `.csv` outputs as in the plain `.csv` sources, with the header's
/// column names (a header repeated inside the data would be rows, or make it fail to parse).
#[test]
fn duckdb_counts_as_many_csv_rows_in_one_header_outputs_as_in_the_sources() {
    let Some(duckdb) = duckdb() else { return };
    let sealed = seal_dataset(
        &spec(DatasetKind::HiveCsv, 2, 60),
        "clicks-csv/",
        &["--layout", "year=%Y/month=%m/day=%d", "--formats", "clicks-csv/=csv"],
    );
    assert!(sealed.plan.contains("csv .csv (COMPACTOR_FORMATS clicks-csv/=csv)"), "{}", sealed.plan);
    let plain = |files: &[PathBuf]| -> Vec<PathBuf> {
        files.iter().filter(|path| path.to_string_lossy().ends_with(".csv")).cloned().collect()
    };
    let (sources, outputs) = (plain(&sealed.sources), plain(&sealed.outputs));
    assert!(sources.len() > 40 && !outputs.is_empty(), "{} sources, {outputs:?}", sources.len());
    assert_csv_rows_read_once(&duckdb, &sources, &outputs);
}

/// Issue 13: a wrong format rule is refused before anything runs, with a message that names
/// the flag as typed and says which formats there are.
#[test]
fn a_wrong_format_rule_names_its_flag_and_the_formats_there_are() {
    let work = tempfile::tempdir().unwrap();
    let output = s3_compactor(&["--formats", "AWSLogs/=parket", "plan"], work.path());
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let message = text(&output.stderr);
    assert!(message.contains("--formats \"AWSLogs/=parket\" is invalid"), "{message}");
    assert!(message.contains("use auto, concat, bytes, cloudtrail, csv, ndjson or parquet"), "{message}");
    let output = s3_compactor(&["--formats", "AWSLogs/", "plan"], work.path());
    assert!(text(&output.stderr).contains("is not prefix=format"), "{}", text(&output.stderr));
}

/// Issue 13: under `--formats clicks/=ndjson`, DuckDB counts as many JSON lines in the outputs
/// as in the sources (plain sources checked line by line, gzip ones joined as `concat` joins
/// them), and a source line that is not JSON is in no output but in the side file next to it.
#[test]
fn duckdb_counts_as_many_json_lines_in_ndjson_outputs_and_invalid_lines_are_set_aside() {
    let Some(duckdb) = duckdb() else { return };
    let sealed = seal_dataset(
        &spec(DatasetKind::HiveNdjson, 1, 60),
        "clicks/",
        &["--layout", "year=%Y/month=%m/day=%d/hour=%H", "--formats", "clicks/=ndjson"],
    );
    assert!(sealed.plan.contains("ndjson .ndjson (COMPACTOR_FORMATS clicks/=ndjson)"), "{}", sealed.plan);
    assert!(
        sealed.outputs.iter().all(|path| !path.to_string_lossy().contains("_invalid-")),
        "no invalid line, no side file"
    );
    assert_eq!(json_lines(&duckdb, &sealed.outputs), json_lines(&duckdb, &sealed.sources));
}

/// Issue 13: with `--compress zstd` (and per prefix, `:gzip`), each plain source is a frame of
/// its own: DuckDB counts as many JSON lines in the `-framed.ndjson.zst` and `-framed.json.gz`
/// outputs as in the sources, reading them as they are (zstd and gzip text), and `verify
/// --against-sources` (run by `seal_dataset`) decompresses every frame to its original.
#[test]
fn duckdb_counts_as_many_json_lines_in_zstd_and_gzip_outputs_as_in_the_sources() {
    let Some(duckdb) = duckdb() else { return };
    for (flags, suffix) in [
        (&["--formats", "clicks/=ndjson", "--compress", "zstd"][..], "-framed.ndjson.zst"),
        (&["--formats", "clicks/=concat:gzip"][..], "-framed.ndjson.gz"),
    ] {
        let sealed = seal_dataset(
            &spec(DatasetKind::HiveNdjson, 1, 60),
            "clicks/",
            &[&["--layout", "year=%Y/month=%m/day=%d/hour=%H"][..], flags].concat(),
        );
        let framed: Vec<PathBuf> =
            sealed.outputs.iter().filter(|path| path.to_string_lossy().ends_with(suffix)).cloned().collect();
        assert!(!framed.is_empty(), "{flags:?}: {:?}", sealed.outputs);
        let plain_sources: Vec<PathBuf> =
            sealed.sources.iter().filter(|path| path.to_string_lossy().ends_with(".ndjson")).cloned().collect();
        let in_sources = json_lines(&duckdb, &plain_sources);
        assert!(in_sources > 60, "{in_sources}");
        assert_eq!(json_lines(&duckdb, &framed), in_sources, "{flags:?}");
        let (framed_bytes, source_bytes) = (total_bytes(&framed), total_bytes(&plain_sources));
        assert!(framed_bytes * 2 < source_bytes, "{flags:?}: {framed_bytes} of {source_bytes}");
    }
}

/// DuckDB reads as many data rows in the outputs as in the sources (over 400 of them), and
/// no header as a row: an output holds one header whatever its number of sources.
fn assert_csv_rows_read_once(duckdb: &DuckDb, sources: &[PathBuf], outputs: &[PathBuf]) {
    let rows = |files: &[PathBuf]| {
        let sql = format!(
            "select count(*) from read_csv({}, header = true, union_by_name = true) where session_id is not null",
            sql_list(files)
        );
        duckdb.count(&sql).unwrap_or_else(|error| panic!("DuckDB could not read the CSV files: {error}"))
    };
    let all_rows = |files: &[PathBuf]| {
        duckdb.count(&format!("select count(*) from read_csv({}, header = true)", sql_list(files))).unwrap()
    };
    let in_sources = rows(sources);
    assert!(in_sources > 40 * 10, "{in_sources}");
    assert_eq!(all_rows(outputs), in_sources, "every row, and no header read as a row");
    assert_eq!(rows(outputs), in_sources);
}

fn total_bytes(files: &[PathBuf]) -> u64 {
    files.iter().map(|path| std::fs::metadata(path).unwrap().len()).sum()
}

/// Issue 13: a compressed CSV output starts with its header as a zstd frame of its own: DuckDB
/// reads the `-framed.csv.zst` outputs with one header and counts as many rows as the sources.
#[test]
fn duckdb_counts_as_many_csv_rows_in_zstd_outputs_as_in_the_sources() {
    let Some(duckdb) = duckdb() else { return };
    let sealed = seal_dataset(
        &spec(DatasetKind::HiveCsv, 2, 60),
        "clicks-csv/",
        &["--layout", "year=%Y/month=%m/day=%d", "--formats", "clicks-csv/=csv:zstd"],
    );
    assert!(sealed.plan.contains("csv -framed.csv.zst (COMPACTOR_FORMATS clicks-csv/=csv:zstd)"), "{}", sealed.plan);
    let ending = |files: &[PathBuf], suffix: &str| -> Vec<PathBuf> {
        files.iter().filter(|path| path.to_string_lossy().ends_with(suffix)).cloned().collect()
    };
    let (sources, outputs) = (ending(&sealed.sources, ".csv"), ending(&sealed.outputs, "-framed.csv.zst"));
    assert!(sources.len() > 40 && !outputs.is_empty(), "{} sources, {:?}", sources.len(), sealed.outputs);
    assert_csv_rows_read_once(&duckdb, &sources, &outputs);
}

/// Issue 13: `demo --compress zstd` (with `--format`) seals, verifies against the sources and
/// restores byte for byte, and says how much smaller the outputs are.
#[test]
fn the_demo_verifies_with_compressed_outputs() {
    for (format, compress) in [("concat", "zstd"), ("csv", "zstd"), ("ndjson", "gzip")] {
        let work = tempfile::tempdir().unwrap();
        let demo_dir = work.path().join("demo");
        let output = Command::new(env!("CARGO_BIN_EXE_s3-compactor"))
            .args(["demo", "--dir", demo_dir.to_str().unwrap(), "--days", "2", "--files-per-day", "30"])
            .args(["--format", format, "--compress", compress])
            .env_remove("COMPACTOR_FORMAT")
            .env_remove("COMPACTOR_FORMATS")
            .env_remove("COMPACTOR_COMPRESS")
            .env("LOG_LEVEL", "error")
            .output()
            .unwrap();
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "demo --format {format} --compress {compress}:\n{stdout}\n{}",
            text(&output.stderr)
        );
        assert!(stdout.contains("all verified"), "{format}: {stdout}");
        assert!(stdout.contains("60/60 match their original object"), "{format}: {stdout}");
        assert!(stdout.contains(&format!("{compress}, a frame per source:")), "{format}: {stdout}");
        let outputs = files_under(&demo_dir.join("buckets").join("demo-logs").join("compacted"));
        let suffix = if compress == "zstd" { ".zst" } else { ".gz" };
        let name = |path: &PathBuf| path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            outputs.iter().any(|path| name(path).contains("-framed.") && name(path).ends_with(suffix)),
            "{outputs:?}"
        );
        // Plain sources compressed, gzip ones (the CSV dataset has some) joined as they are.
        assert!(outputs.iter().all(|path| name(path).ends_with(".zst") || name(path).ends_with(".gz")), "{outputs:?}");
    }
}

/// Issue 13: a wrong `--compress` value is refused before anything runs, naming the flag as
/// typed and the values there are; so is a wrong compression on a `--formats` rule.
#[test]
fn a_wrong_compression_names_its_flag_and_the_values_there_are() {
    let work = tempfile::tempdir().unwrap();
    let output = s3_compactor(&["--compress", "lz4", "plan"], work.path());
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let message = text(&output.stderr);
    assert!(message.contains("--compress \"lz4\" is invalid"), "{message}");
    assert!(message.contains("use zstd, gzip or none"), "{message}");
    let output = s3_compactor(&["--formats", "logs/=ndjson:brotli", "plan"], work.path());
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let message = text(&output.stderr);
    assert!(message.contains("--formats \"logs/=ndjson:brotli\" is invalid"), "{message}");
    assert!(message.contains("use zstd, gzip or none"), "{message}");
}
