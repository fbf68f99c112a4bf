//! The ingress Lambda (Function URL): reads its configuration once at cold start, builds the
//! SQS client once, then serves `chatops::ingress::Ingress::handle` for every request.
//! Everything else lives in the library, where tests call it directly.

use chatops::clock::SystemClock;
use chatops::config::{aws_sdk_config, Env, SsmSecrets};
use chatops::ingress::{Ingress, IngressConfig};
use chatops::queue::SqsQueue;
use chatops::web;
use lambda_http::{service_fn, Error, Request};
use std::convert::Infallible;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();

    let sdk = aws_sdk_config().await;
    // The SSM client is only built if a `_PARAM` reference has to be resolved.
    let config = IngressConfig::from_env(&Env::from_process(), &SsmSecrets::new(sdk.clone()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "ingress configuration is invalid");
            e
        })?;
    let queue = Arc::new(SqsQueue::from_sdk_config(
        &sdk,
        config.run_queue_url.clone(),
    ));
    let ingress = Arc::new(Ingress::new(config, queue, Arc::new(SystemClock)));

    lambda_http::run(service_fn(move |req: Request| {
        let ingress = Arc::clone(&ingress);
        async move {
            let resp = ingress.handle(web::from_lambda(req)).await;
            Ok::<_, Infallible>(web::to_lambda(resp))
        }
    }))
    .await
}
