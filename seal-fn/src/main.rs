//! `seal-fn`: the Lambda that seals closed partitions (scheduled), backfills on request, and
//! works through fanned-out partitions from its SQS queue.
//!
//! Configuration: the `COMPACTOR_*` variables of `compactor::config` and
//! `compactor::aws::AwsSettings`, plus:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SEAL_QUEUE_URL` | SQS queue of seal workers; unset: seal everything inline | unset |
//! | `SEAL_FAN_OUT_THRESHOLD` | fan out when a run has more partitions than this | `8` |
//! | `SEAL_DEADLINE_MARGIN_SECONDS` | stop starting outputs this long before the Lambda's deadline | `30` |

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use compactor::aws::{build_aws_compactor, AwsSettings};
use compactor::config::Config;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use seal_fn::sqs::SqsFanOut;
use seal_fn::{FanOut, SealFunction};
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

fn env_number(name: &str, default: i64) -> Result<i64, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => {
            text.trim().parse().map_err(|_| format!("configuration: {name}={text:?} is invalid: give a whole number"))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let config = Config::from_env().map_err(|error| format!("configuration: {error}"))?;
    let settings = AwsSettings::from_env().map_err(|error| format!("configuration: {error}"))?;
    let fan_out_threshold = env_number("SEAL_FAN_OUT_THRESHOLD", 8)?.max(0) as usize;
    let deadline_margin = Duration::seconds(env_number("SEAL_DEADLINE_MARGIN_SECONDS", 30)?.max(0));
    let compactor = build_aws_compactor(config, &settings).await;
    let fan_out: Option<Arc<dyn FanOut>> = match std::env::var("SEAL_QUEUE_URL").ok().filter(|url| !url.is_empty()) {
        Some(queue_url) => {
            let shared_config = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
            Some(Arc::new(SqsFanOut { client: aws_sdk_sqs::Client::new(&shared_config), queue_url }))
        }
        None => None,
    };
    let function = SealFunction { compactor, fan_out, fan_out_threshold, deadline_margin };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move {
            let deadline: DateTime<Utc> = event.context.deadline().into();
            function.handle(event.payload, deadline).await.map_err(|error| Diagnostic {
                error_type: error.error_type().to_string(),
                error_message: error.to_string(),
            })
        }
    }))
    .await
}
