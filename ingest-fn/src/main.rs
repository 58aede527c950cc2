//! `ingest-fn`: the Lambda that records S3 events in the DynamoDB manifest.
//!
//! Configuration: the `COMPACTOR_*` variables of `compactor::config`, the AWS ones of
//! `compactor::aws::AwsSettings` (`COMPACTOR_TABLE`, …) and `COMPACTOR_METRICS_NAMESPACE`,
//! validated at cold start: a wrong value stops the function with a message naming the
//! variable.

use compactor::aws::{build_aws_compactor_from, load_sdk_config};
use compactor::metrics::Emf;
use ingest_fn::{FunctionConfig, IngestFunction};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    compactor::allocator::return_freed_parts_to_the_system();
    compactor::aws::init_lambda_logging();
    let config = FunctionConfig::from_lookup(|name| std::env::var(name).ok())
        .map_err(|error| format!("configuration: {error}"))?;
    let sdk_config = load_sdk_config().await;
    let function = IngestFunction {
        compactor: build_aws_compactor_from(&sdk_config, config.engine, &config.aws),
        metrics: Emf::stdout(config.ingest.metrics_namespace),
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move { function.handle(event.payload).await.map(|invocation| invocation.response()).map_err(Diagnostic::from) }
    }))
    .await
}
