//! Building the engine on AWS: S3 for objects, DynamoDB for the manifest, from the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `COMPACTOR_TABLE` | the DynamoDB manifest table | required |
//! | `COMPACTOR_S3_PATH_STYLE` | `true` for path-style S3 URLs (most S3-compatible servers) | `false` |
//! | `COMPACTOR_EXPECTED_BUCKET_OWNER` | account id sent as ExpectedBucketOwner on every S3 request | unset |
//! | `COMPACTOR_SSE_KMS_KEY_ID` | KMS key for the outputs (SSE-KMS) | bucket default |
//! | `AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_DYNAMODB` | the standard AWS configuration | SDK defaults |

use std::sync::Arc;

use crate::adapters::dynamodb::DynamoDbManifest;
use crate::adapters::s3::{AmazonS3, S3Options};
use crate::clock::SystemClock;
use crate::config::{Config, ConfigError};
use crate::engine::Compactor;

/// JSON logs for a Lambda, one line per event with span fields flattened in, at `LOG_LEVEL`
/// (a level or a tracing filter; `info` by default). CloudWatch adds the timestamps' context;
/// metric filters read the per-run counts from the fields.
pub fn init_lambda_logging() {
    let level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_ansi(false)
        .with_env_filter(filter)
        .init();
}

/// The AWS side of the configuration, validated once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    pub table: String,
    pub s3_path_style: bool,
    pub expected_bucket_owner: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// Endpoint overrides (tests and S3-compatible servers); `None` lets the SDK's standard
    /// configuration (`AWS_ENDPOINT_URL_S3`, …) decide.
    pub s3_endpoint: Option<String>,
    pub dynamodb_endpoint: Option<String>,
}

impl AwsSettings {
    /// Reads the variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<AwsSettings, ConfigError> {
        let read = |name: &str| lookup(name).map(|value| value.trim().to_string()).filter(|value| !value.is_empty());
        let table = read("COMPACTOR_TABLE").ok_or(ConfigError::Missing {
            name: "COMPACTOR_TABLE",
            hint: "name the DynamoDB manifest table (the SAM template creates it)",
        })?;
        let valid_table = (3..=255).contains(&table.len())
            && table.chars().all(|character| character.is_ascii_alphanumeric() || "_-.".contains(character));
        if !valid_table {
            return Err(ConfigError::Invalid {
                name: "COMPACTOR_TABLE",
                value: table,
                reason: "a DynamoDB table name is 3-255 characters of letters, digits, '_', '-' and '.'".into(),
            });
        }
        let s3_path_style = match read("COMPACTOR_S3_PATH_STYLE").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "COMPACTOR_S3_PATH_STYLE",
                    value: other.to_string(),
                    reason: "use true or false".into(),
                })
            }
        };
        if let Some(owner) = read("COMPACTOR_EXPECTED_BUCKET_OWNER") {
            if owner.len() != 12 || !owner.chars().all(|character| character.is_ascii_digit()) {
                return Err(ConfigError::Invalid {
                    name: "COMPACTOR_EXPECTED_BUCKET_OWNER",
                    value: owner,
                    reason: "give the 12-digit AWS account id that owns the buckets".into(),
                });
            }
        }
        Ok(AwsSettings {
            table,
            s3_path_style,
            expected_bucket_owner: read("COMPACTOR_EXPECTED_BUCKET_OWNER"),
            sse_kms_key_id: read("COMPACTOR_SSE_KMS_KEY_ID"),
            s3_endpoint: None,
            dynamodb_endpoint: None,
        })
    }

    pub fn from_env() -> Result<AwsSettings, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The standard AWS configuration (region, credentials, `AWS_ENDPOINT_URL`, …), loaded once per
/// process: a Lambda builds every client it needs (S3, DynamoDB, SQS) from this one, so a
/// cold start resolves credentials once.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}

/// The engine on S3 and DynamoDB. Loads the SDK configuration and builds the clients once (per
/// Lambda cold start).
pub async fn build_aws_compactor(config: Config, settings: &AwsSettings) -> Compactor {
    build_aws_compactor_from(&load_sdk_config().await, config, settings)
}

/// [`build_aws_compactor`] on an SDK configuration the caller already loaded and shares with
/// its other clients. Each client keeps its adapter's retry set-up.
pub fn build_aws_compactor_from(
    sdk_config: &aws_config::SdkConfig,
    config: Config,
    settings: &AwsSettings,
) -> Compactor {
    // The loaded configuration always carries the SDK's default retry set-up: replace it, or the
    // adapter's would never apply.
    let s3_sdk_config = sdk_config.to_builder().retry_config(crate::adapters::s3::retry_config()).build();
    let s3_client = crate::adapters::s3::client_from_shared_config(
        &s3_sdk_config,
        settings.s3_endpoint.as_deref(),
        settings.s3_path_style,
    );
    let store = AmazonS3::new(
        s3_client,
        S3Options {
            expected_bucket_owner: settings.expected_bucket_owner.clone(),
            sse_kms_key_id: settings.sse_kms_key_id.clone(),
        },
    );
    let mut dynamodb_config =
        aws_sdk_dynamodb::config::Builder::from(sdk_config).retry_config(crate::adapters::dynamodb::retry_config());
    if let Some(endpoint) = settings.dynamodb_endpoint.as_deref() {
        dynamodb_config = dynamodb_config.endpoint_url(endpoint);
    }
    let dynamodb_client = aws_sdk_dynamodb::Client::from_conf(dynamodb_config.build());
    let manifest = DynamoDbManifest::new(dynamodb_client, settings.table.clone(), config.layout.clone())
        .with_record_ttl(config.record_ttl);
    Compactor::new(config, Arc::new(store), Arc::new(manifest), Arc::new(SystemClock))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<AwsSettings, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        AwsSettings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn settings_name_the_variable_that_is_wrong() {
        assert!(from(&[]).unwrap_err().to_string().contains("COMPACTOR_TABLE is required"));
        assert!(from(&[("COMPACTOR_TABLE", "a b")]).unwrap_err().to_string().contains("COMPACTOR_TABLE=\"a b\""));
        let path_style = from(&[("COMPACTOR_TABLE", "manifest"), ("COMPACTOR_S3_PATH_STYLE", "yes")]).unwrap_err();
        assert!(path_style.to_string().contains("use true or false"));
        let owner = from(&[("COMPACTOR_TABLE", "manifest"), ("COMPACTOR_EXPECTED_BUCKET_OWNER", "me")]).unwrap_err();
        assert!(owner.to_string().contains("12-digit"));
        let settings = from(&[("COMPACTOR_TABLE", "manifest"), ("COMPACTOR_S3_PATH_STYLE", "true")]).unwrap();
        assert!(settings.s3_path_style);
    }
}
