//! `ingest-fn`: the Lambda that records S3 events in the DynamoDB manifest.
//!
//! Configuration: the `COMPACTOR_*` variables of `compactor::config` plus the AWS ones of
//! `compactor::aws::AwsSettings` (`COMPACTOR_TABLE`, endpoints, …), validated at cold start: a
//! wrong value stops the function with a message naming the variable.

use compactor::aws::{build_aws_compactor, AwsSettings};
use compactor::config::Config;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

fn init_logging() {
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

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let config = Config::from_env().map_err(|error| format!("configuration: {error}"))?;
    let settings = AwsSettings::from_env().map_err(|error| format!("configuration: {error}"))?;
    let compactor = build_aws_compactor(config, &settings).await;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let compactor = compactor.clone();
        async move {
            match ingest_fn::handle(&compactor, event.payload).await {
                Ok(outcome) => Ok(outcome.response()),
                Err(error) => {
                    Err(Diagnostic { error_type: error.error_type().to_string(), error_message: error.to_string() })
                }
            }
        }
    }))
    .await
}
