//! The completion Lambda: one binary for two triggers, the Function URL (GitLab's Pipeline and
//! Job webhooks) and the EventBridge schedule (the sweep). It reads its configuration once at
//! cold start, builds its clients once, then hands every event to
//! `chatops::completion::Completion::handle_event`, which tells the two apart
//! (`completion::route_event`, tested in the library).

use chatops::completion::{Completion, CompletionConfig};
use chatops::config::{aws_sdk_config, Env, SsmSecrets};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();

    let sdk = aws_sdk_config().await;
    let config = CompletionConfig::from_env(&Env::from_process(), &SsmSecrets::new(sdk.clone()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "completion configuration is invalid");
            e
        })?;
    let completion = Arc::new(Completion::from_config(config, &sdk)?);

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let completion = Arc::clone(&completion);
        async move {
            completion
                .handle_event(event.payload)
                .await
                .map_err(Error::from)
        }
    }))
    .await
}
