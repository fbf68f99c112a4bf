//! The dispatcher Lambda (SQS, partial batch failures): reads its configuration once at cold
//! start, builds the GitLab, DynamoDB and chat clients once, then hands every batch to
//! `chatops::dispatcher::Dispatcher::handle_batch`. Everything else lives in the library.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chatops::config::{aws_sdk_config, Env, SsmSecrets};
use chatops::dispatcher::{Dispatcher, DispatcherConfig};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();

    let sdk = aws_sdk_config().await;
    let config = DispatcherConfig::from_env(&Env::from_process(), &SsmSecrets::new(sdk.clone()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "dispatcher configuration is invalid");
            e
        })?;
    let dispatcher = Arc::new(Dispatcher::from_config(config, &sdk)?);

    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let dispatcher = Arc::clone(&dispatcher);
        async move { Ok::<SqsBatchResponse, Error>(dispatcher.handle_batch(event.payload).await) }
    }))
    .await
}
