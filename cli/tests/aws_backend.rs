//! The real `s3-compactor` binary on its AWS backend, against the local servers the test
//! script starts: SeaweedFS for S3 (`COMPACTOR_TEST_S3_ENDPOINT`) and ministack for DynamoDB
//! (`COMPACTOR_TEST_DYNAMODB_ENDPOINT`). A user's whole round: `init`, `ingest --scan`,
//! `seal`, `audit`, `verify --against-sources`, `restore`.
//!
//! Built only with the backend compiled in (`cargo test -p s3-compactor --features aws`, see
//! `required-features` in Cargo.toml). Without the endpoints it says `SKIPPED` and passes; under
//! `CI` or `COMPACTOR_REQUIRE_SERVERS` a missing endpoint fails (see `compactor::testkit::servers`).

use std::collections::BTreeMap;

use std::process::{Command, Output};

use bytes::Bytes;
use compactor::ports::{ObjectStore, PutOptions, Tag};
use compactor::testkit::{s3_server, servers};
use serde_json::Value;

/// The servers and the fresh bucket and table one test runs against.
struct AwsTarget {
    s3_endpoint: String,
    dynamodb_endpoint: String,
    bucket: String,
    table: String,
}

impl AwsTarget {
    /// Runs the binary on the AWS backend with the test credentials and nothing of the
    /// developer's own AWS configuration (no profile, no instance metadata lookups).
    fn run(&self, arguments: &[&str], extra_environment: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_s3-compactor"));
        command
            .args([
                "--backend",
                "aws",
                "--table",
                &self.table,
                "--s3-endpoint",
                &self.s3_endpoint,
                "--dynamodb-endpoint",
                &self.dynamodb_endpoint,
                "--path-style",
                "--source-bucket",
                &self.bucket,
                "--grace",
                "1h",
            ])
            .args(arguments)
            .env("AWS_ACCESS_KEY_ID", servers::TEST_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", servers::TEST_SECRET_ACCESS_KEY)
            .env("AWS_REGION", servers::TEST_REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("LOG_LEVEL", "error")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL");
        for variable in ["COMPACTOR_BACKEND", "COMPACTOR_EXPIRY", "COMPACTOR_RECORD_TTL", "COMPACTOR_DEST_BUCKET"] {
            command.env_remove(variable);
        }
        for (name, value) in extra_environment {
            command.env(name, value);
        }
        command.output().expect("the binary runs")
    }

    /// Runs a command that must succeed and print one JSON document.
    fn json(&self, arguments: &[&str], extra_environment: &[(&str, &str)]) -> Value {
        let output = self.run(&[&["--json"], arguments].concat(), extra_environment);
        assert!(
            output.status.success(),
            "{arguments:?} exited with {:?}:\n{}\n{}",
            output.status.code(),
            text(&output.stdout),
            text(&output.stderr)
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{arguments:?} printed no JSON ({error}):\n{}", text(&output.stdout)))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("{value} is not a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_ingest_seal_audit_verify_and_restore_on_s3_and_dynamodb() {
    // Both endpoints first, through the helpers that say SKIPPED (or panic under CI).
    let (s3_endpoint, dynamodb_endpoint) = (servers::s3_endpoint(), servers::dynamodb_endpoint());
    let Some((s3_endpoint, dynamodb_endpoint)) = s3_endpoint.zip(dynamodb_endpoint) else { return };
    let (store, bucket, _bucket_guard) =
        s3_server::amazon_s3_with_fresh_bucket().await.expect("the S3 endpoint is set");
    let table = servers::unique_table_name();
    // `init` creates the table; the guard deletes it at the end, whatever happens.
    let _table_guard = servers::FreshTable::adopt(&dynamodb_endpoint, &table);
    let target = AwsTarget { s3_endpoint, dynamodb_endpoint, bucket: bucket.clone(), table: table.clone() };

    let init = target.run(&["init"], &[]);
    assert!(init.status.success(), "init failed:\n{}", text(&init.stderr));
    assert!(text(&init.stdout).contains(&format!("DynamoDB table {table} is ready")), "{}", text(&init.stdout));
    let again = target.run(&["init"], &[]);
    assert!(again.status.success(), "init is safe to run again:\n{}", text(&again.stderr));

    // Two closed days; keys with a space, `+` and non-ASCII; a line without its final newline;
    // and a key outside the layout, which is skipped.
    let originals: BTreeMap<&str, &[u8]> = [
        ("logs/2024/01/14/a.json", &b"{\"a\":1}\n"[..]),
        ("logs/2024/01/14/my file+x é.json", &b"{\"spaces and unicode\":true}\n"[..]),
        ("logs/2024/01/14/no-newline.json", &b"{\"last\":\"no newline\"}"[..]),
        ("logs/2024/01/15/b.json", &b"{\"b\":2}\n"[..]),
        ("logs/2024/01/15/c.json", &b"{\"c\":3}\n"[..]),
    ]
    .into_iter()
    .collect();
    for (key, body) in &originals {
        store.put(&bucket, key, Bytes::copy_from_slice(body), PutOptions::default()).await.unwrap();
    }
    store.put(&bucket, "logs/not-a-date/x.json", Bytes::from_static(b"{}\n"), PutOptions::default()).await.unwrap();

    let ingest = target.json(&["ingest", "--scan", "logs/"], &[]);
    assert_eq!(count(&ingest["recorded"]), 5, "{ingest}");
    assert_eq!(count(&ingest["skipped"]["out_of_layout"]), 1, "{ingest}");

    // Sealed with record expiry on: the CLI must hand COMPACTOR_RECORD_TTL to the manifest.
    let seal = target.json(&["seal"], &[("COMPACTOR_RECORD_TTL", "400d")]);
    assert_eq!(count(&seal["partitions_sealed"]), 2, "{seal}");
    assert_eq!(count(&seal["objects_compacted"]), 5, "{seal}");
    assert_eq!(count(&seal["outputs_committed"]), 2, "{seal}");
    assert_eq!(count(&seal["expiry"]["tagged"]), 5, "{seal}");
    assert_eq!(count(&seal["partitions_failed"]), 0, "{seal}");
    for key in originals.keys() {
        let tags = store.get_tags(&bucket, key).await.unwrap();
        assert!(tags.contains(&Tag::new("compacted", "true")), "{key}: {tags:?}");
    }
    let client = servers::dynamodb_test_client(&target.dynamodb_endpoint).await;
    let expiring = client
        .scan()
        .table_name(&table)
        .filter_expression("attribute_exists(expires_at)")
        .send()
        .await
        .expect("scan the manifest table");
    let mut expiring_keys: Vec<&str> =
        expiring.items().iter().map(|item| item["sk"].as_s().expect("a string sort key").as_str()).collect();
    expiring_keys.sort();
    assert_eq!(expiring_keys, originals.keys().copied().collect::<Vec<_>>(), "records of the tagged sources only");

    let audit = target.json(&["audit"], &[]);
    assert_eq!(count(&audit["summary"]["partitions_sealed"]), 2, "{audit}");
    assert_eq!(count(&audit["summary"]["compacted_objects"]), 5, "{audit}");
    assert_eq!(count(&audit["summary"]["pending_objects"]), 0, "{audit}");
    assert_eq!(count(&audit["summary"]["committed_outputs"]), 2, "{audit}");

    let verify = target.json(&["verify", "--against-sources"], &[]);
    assert_eq!((count(&verify["outputs_checked"]), count(&verify["outputs_ok"])), (2, 2), "{verify}");
    assert_eq!((count(&verify["sources_checked"]), count(&verify["sources_ok"])), (5, 5), "{verify}");
    assert_eq!((count(&verify["originals_compared"]), count(&verify["originals_ok"])), (5, 5), "{verify}");
    assert_eq!(verify["failures"], Value::Array(Vec::new()), "{verify}");

    let work = tempfile::tempdir().unwrap();
    for (index, (key, original)) in originals.iter().enumerate() {
        let object = target.json(&["audit", "--object", key], &[]);
        assert_eq!(object["object"]["state"], "compacted", "{object}");
        assert_eq!(object["output"]["state"], "committed", "{object}");
        assert_eq!(count(&object["object"]["placement"]["length"]), original.len() as u64, "{object}");

        let restored_path = work.path().join(format!("restored-{index}"));
        let restore = target.run(&["restore", "--object", key, "--out", restored_path.to_str().unwrap()], &[]);
        assert!(restore.status.success(), "restore of {key}:\n{}", text(&restore.stderr));
        assert_eq!(std::fs::read(&restored_path).unwrap(), *original, "restore of {key} is byte-identical");
    }
    restore_to_stdout_matches(&target, "logs/2024/01/14/no-newline.json", originals["logs/2024/01/14/no-newline.json"]);

    // Nothing is left to do; a key the manifest never saw is bad input (exit 2), said plainly.
    let again = target.json(&["seal"], &[]);
    assert_eq!(count(&again["partitions_sealed"]) + count(&again["objects_compacted"]), 0, "{again}");
    let unknown = target.run(&["restore", "--object", "logs/2024/01/14/never.json", "--out", "-"], &[]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
    assert!(text(&unknown.stderr).contains("is not in the manifest"), "{}", text(&unknown.stderr));
}

fn restore_to_stdout_matches(target: &AwsTarget, key: &str, original: &[u8]) {
    let restore = target.run(&["restore", "--object", key, "--out", "-"], &[]);
    assert!(restore.status.success(), "restore of {key} to stdout:\n{}", text(&restore.stderr));
    assert_eq!(restore.stdout, original, "restore of {key} to stdout");
}
