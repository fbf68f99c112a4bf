//! The dispatcher Lambda (SQS, partial batch failures): reads its configuration once at cold
//! start, builds its services once (`chatops_adapters::services`), then hands every batch to
//! `chatops_adapters::lambda::dispatch_batch`. Everything else lives in the libraries.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chatops_adapters::aws::{sdk_config, SsmSecrets};
use chatops_adapters::lambda::{deadline_from_epoch_ms, dispatch_batch};
use chatops_adapters::services::aws_dispatcher;
use chatops_core::config::Env;
use chatops_core::dispatcher::DispatcherConfig;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();

    let sdk = sdk_config().await;
    let config = DispatcherConfig::from_env(&Env::from_process(), &SsmSecrets::new(sdk.clone()))
        .await
        .inspect_err(|e| tracing::error!(error = %e, "dispatcher configuration is invalid"))?;
    let dispatcher = Arc::new(aws_dispatcher(config, &sdk)?);

    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let dispatcher = Arc::clone(&dispatcher);
        async move {
            let deadline = deadline_from_epoch_ms(event.context.deadline);
            Ok::<SqsBatchResponse, Error>(
                dispatch_batch(&dispatcher, event.payload, Some(deadline)).await,
            )
        }
    }))
    .await
}
