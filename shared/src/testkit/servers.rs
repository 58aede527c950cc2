//! Real local servers for the integration tier: where to find them, and what to do without them.
//!
//! The README's test command starts the servers (ministack for DynamoDB, SQS and S3 with
//! events; SeaweedFS for S3, see `shared/emulators.md`) and exports their endpoints:
//!
//! | variable | server |
//! |---|---|
//! | `COMPACTOR_TEST_DYNAMODB_ENDPOINT` | a DynamoDB-compatible endpoint, e.g. `http://127.0.0.1:4566` |
//! | `COMPACTOR_TEST_S3_ENDPOINT` | an S3-compatible endpoint, e.g. `http://127.0.0.1:8333` |
//!
//! Tests talk to them with the static credentials `test` / `testtesttest` in `us-east-1`.
//! A bare `cargo test` has no servers: each integration test then says so loudly on stderr and
//! passes without running, so the unit tier stays one command. Under CI (`CI` set) a missing
//! endpoint is a failure instead, so a broken test script can never turn the integration tier
//! into a silent no-op.

/// The variable naming the DynamoDB-compatible endpoint of the integration tier.
pub const DYNAMODB_ENDPOINT_VARIABLE: &str = "COMPACTOR_TEST_DYNAMODB_ENDPOINT";
/// The variable naming the S3-compatible endpoint of the integration tier.
pub const S3_ENDPOINT_VARIABLE: &str = "COMPACTOR_TEST_S3_ENDPOINT";
/// Static credentials every local server of the integration tier accepts.
pub const TEST_ACCESS_KEY_ID: &str = "test";
pub const TEST_SECRET_ACCESS_KEY: &str = "testtesttest";
pub const TEST_REGION: &str = "us-east-1";

/// The DynamoDB endpoint to test against, or `None` (after a loud `SKIPPED` line) when there is
/// none. Panics under CI when the endpoint is missing.
pub fn dynamodb_endpoint() -> Option<String> {
    endpoint_from(DYNAMODB_ENDPOINT_VARIABLE, "DynamoDB", "ministack")
}

/// The S3 endpoint to test against, or `None` (after a loud `SKIPPED` line) when there is none.
/// Panics under CI when the endpoint is missing.
pub fn s3_endpoint() -> Option<String> {
    endpoint_from(S3_ENDPOINT_VARIABLE, "S3", "SeaweedFS or ministack")
}

/// The variable naming ministack's endpoint (S3 with event notifications, SQS, DynamoDB), for
/// the end-to-end test of the whole path.
pub const MINISTACK_ENDPOINT_VARIABLE: &str = "COMPACTOR_TEST_MINISTACK_ENDPOINT";

/// The ministack endpoint to test the whole path against, or `None` (after a loud `SKIPPED`
/// line) when there is none. Panics under CI when the endpoint is missing.
pub fn ministack_endpoint() -> Option<String> {
    endpoint_from(MINISTACK_ENDPOINT_VARIABLE, "end-to-end", "ministack")
}

fn endpoint_from(variable: &str, service: &str, server: &str) -> Option<String> {
    let endpoint = std::env::var(variable).ok().map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
    // The test script sets COMPACTOR_REQUIRE_SERVERS as well, for runs outside CI.
    let running_in_ci = std::env::var_os("CI").is_some() || std::env::var_os("COMPACTOR_REQUIRE_SERVERS").is_some();
    decide(endpoint, running_in_ci, variable, service, server)
}

/// The decision, apart from the environment so that it can be tested.
fn decide(
    endpoint: Option<String>,
    running_in_ci: bool,
    variable: &str,
    service: &str,
    server: &str,
) -> Option<String> {
    match endpoint {
        Some(endpoint) => Some(endpoint),
        None if running_in_ci => panic!(
            "{variable} is not set but CI is: the CI test script must start {server} and export {variable} \
             (see shared/emulators.md)"
        ),
        None => {
            // Straight to stderr, not `eprintln!`: the test harness captures the macros' output
            // of passing tests, and a skip must be seen.
            let line = format!(
                "SKIPPED: set {variable} (e.g. http://127.0.0.1:4566) to run this {service} integration test \
                 against {server}; see shared/emulators.md\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            None
        }
    }
}

/// A DynamoDB client for a local test server: static test credentials, `us-east-1`, and the
/// same retry set-up as [`crate::adapters::dynamodb::client_for`].
#[cfg(feature = "aws")]
pub async fn dynamodb_test_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(dynamodb_test_config(endpoint).await.build())
}

/// The configuration of [`dynamodb_test_client`], for tests that add interceptors.
#[cfg(feature = "aws")]
pub async fn dynamodb_test_config(endpoint: &str) -> aws_sdk_dynamodb::config::Builder {
    use aws_config::BehaviorVersion;
    use aws_sdk_dynamodb::config::{Credentials, Region};

    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(TEST_REGION))
        .credentials_provider(Credentials::new(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, None, None, "static-test"))
        .endpoint_url(endpoint)
        .retry_config(crate::adapters::dynamodb::retry_config())
        .load()
        .await;
    aws_sdk_dynamodb::config::Builder::from(&sdk_config)
}

/// How long dropping a [`FreshTable`] waits for its deletion: a stopped server must never hang
/// a test, and ministack keeps tables in memory, so one left behind dies with the server.
#[cfg(feature = "aws")]
const TABLE_CLEANUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A table name no other test uses: tests run in parallel against one server.
#[cfg(feature = "aws")]
pub fn unique_table_name() -> String {
    format!("compactor-test-{}", uuid::Uuid::new_v4().simple())
}

/// A [`DynamoDbManifest`](crate::adapters::dynamodb::DynamoDbManifest) on a new table of the
/// test server (created with `create_table`, hence the production schema), and the guard that
/// deletes the table when dropped; `None` when the tier is skipped (see [`dynamodb_endpoint`]).
#[cfg(feature = "aws")]
pub async fn dynamodb_manifest_with_fresh_table(
    layout: crate::domain::layout::Layout,
) -> Option<(crate::adapters::dynamodb::DynamoDbManifest, FreshTable)> {
    let endpoint = dynamodb_endpoint()?;
    let client = dynamodb_test_client(&endpoint).await;
    Some(dynamodb_manifest_on_fresh_table(client, &endpoint, layout).await)
}

/// As [`dynamodb_manifest_with_fresh_table`], with a client of the caller's (e.g. one with an
/// interceptor) on the server at `endpoint`.
#[cfg(feature = "aws")]
pub async fn dynamodb_manifest_on_fresh_table(
    client: aws_sdk_dynamodb::Client,
    endpoint: &str,
    layout: crate::domain::layout::Layout,
) -> (crate::adapters::dynamodb::DynamoDbManifest, FreshTable) {
    let table = unique_table_name();
    let manifest = crate::adapters::dynamodb::DynamoDbManifest::new(client, table.clone(), layout);
    manifest
        .create_table()
        .await
        .unwrap_or_else(|error| panic!("cannot create table {table} on {endpoint}: {error}; is the server running?"));
    (manifest, FreshTable { endpoint: endpoint.to_owned(), table })
}

/// Deletes its table when dropped, best-effort.
///
/// The deletion runs on a thread and runtime of its own: the test's runtime may be shutting
/// down, and a client's pooled connections belong to the runtime that opened them. It is
/// bounded by [`TABLE_CLEANUP_TIMEOUT`].
#[cfg(feature = "aws")]
#[derive(Debug)]
pub struct FreshTable {
    endpoint: String,
    table: String,
}

#[cfg(feature = "aws")]
impl FreshTable {
    /// The guard of a table made another way (by `s3-compactor init`, say) on the server at
    /// `endpoint`: it deletes the table when dropped. Name it with [`unique_table_name`].
    pub fn adopt(endpoint: &str, table: &str) -> FreshTable {
        FreshTable { endpoint: endpoint.to_owned(), table: table.to_owned() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

#[cfg(feature = "aws")]
impl Drop for FreshTable {
    fn drop(&mut self) {
        let endpoint = self.endpoint.clone();
        let table = self.table.clone();
        let deleter = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                let client = dynamodb_test_client(&endpoint).await;
                let deletion = client.delete_table().table_name(&table).send();
                let _ = tokio::time::timeout(TABLE_CLEANUP_TIMEOUT, deletion).await;
            });
        });
        let _ = deleter.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_endpoint_is_used() {
        let endpoint = decide(Some("http://127.0.0.1:1".to_owned()), true, "X", "DynamoDB", "ministack");
        assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:1"));
    }

    #[test]
    fn a_missing_endpoint_skips_outside_ci() {
        assert_eq!(decide(None, false, "X", "DynamoDB", "ministack"), None);
    }

    #[test]
    #[should_panic(expected = "CI test script must start ministack")]
    fn a_missing_endpoint_fails_under_ci() {
        decide(None, true, "X", "DynamoDB", "ministack");
    }
}
