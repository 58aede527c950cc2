//! `seal-fn`: the Lambda that seals closed partitions (scheduled), backfills on request, and
//! works through fanned-out partitions from its SQS queue.
//!
//! Configuration: the `COMPACTOR_*` variables of `compactor::config` and
//! `compactor::aws::AwsSettings`, plus seal-fn's own (`seal_fn::SealSettings`: `SEAL_QUEUE_URL`,
//! `SEAL_FAN_OUT_THRESHOLD`, `SEAL_DEADLINE_MARGIN_SECONDS`, `COMPACTOR_METRICS_NAMESPACE`), all
//! validated at cold start: a wrong value stops the function with a message naming the
//! variable.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use compactor::aws::{build_aws_compactor_from, load_sdk_config};
use compactor::metrics::Emf;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use seal_fn::sqs::SqsFanOut;
use seal_fn::{FanOut, FunctionConfig, SealFunction};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    compactor::allocator::return_freed_parts_to_the_system();
    compactor::aws::init_lambda_logging();
    let config = FunctionConfig::from_lookup(|name| std::env::var(name).ok())
        .map_err(|error| format!("configuration: {error}"))?;
    // One SDK configuration for S3, DynamoDB and SQS: credentials and region resolved once.
    let sdk_config = load_sdk_config().await;
    let fan_out: Option<Arc<dyn FanOut>> = config.seal.queue_url.clone().map(|queue_url| {
        Arc::new(SqsFanOut { client: aws_sdk_sqs::Client::new(&sdk_config), queue_url }) as Arc<dyn FanOut>
    });
    let function = SealFunction {
        compactor: build_aws_compactor_from(&sdk_config, config.engine, &config.aws),
        fan_out,
        fan_out_threshold: config.seal.fan_out_threshold,
        deadline_margin: config.seal.deadline_margin,
        metrics: Emf::stdout(config.seal.metrics_namespace),
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move {
            let deadline: DateTime<Utc> = event.context.deadline().into();
            function.handle(event.payload, deadline).await.map_err(Diagnostic::from)
        }
    }))
    .await
}
