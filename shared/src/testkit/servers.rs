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

fn endpoint_from(variable: &str, service: &str, server: &str) -> Option<String> {
    let endpoint = std::env::var(variable).ok().filter(|value| !value.trim().is_empty());
    let running_in_ci = std::env::var_os("CI").is_some();
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
