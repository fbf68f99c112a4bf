//! The completion Lambda: one binary for two triggers, the Function URL (GitLab's webhooks)
//! and the EventBridge schedule (the sweep). It reads its configuration once at cold start,
//! builds its services once (`chatops_adapters::services`), then hands every event to
//! `chatops_adapters::lambda::completion_event`, which tells the two apart.

use chatops_adapters::aws::{sdk_config, SsmSecrets};
use chatops_adapters::lambda::completion_event;
use chatops_adapters::services::aws_completion;
use chatops_core::completion::CompletionConfig;
use chatops_core::config::Env;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();

    let sdk = sdk_config().await;
    let config = CompletionConfig::from_env(&Env::from_process(), &SsmSecrets::new(sdk.clone()))
        .await
        .inspect_err(|e| tracing::error!(error = %e, "completion configuration is invalid"))?;
    let completion = Arc::new(aws_completion(config, &sdk)?);

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let completion = Arc::clone(&completion);
        async move {
            completion_event(&completion, event.payload)
                .await
                .map_err(Error::from)
        }
    }))
    .await
}
