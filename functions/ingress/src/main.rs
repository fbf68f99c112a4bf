//! The ingress Lambda (Function URL): reads its configuration once at cold start, builds its
//! services once (`chatops_adapters::services`), then serves `Ingress::handle` for every
//! request. Everything else lives in the libraries, where tests call it directly.

use chatops_adapters::aws::{sdk_config, SsmSecrets};
use chatops_adapters::lambda::{from_lambda, to_lambda};
use chatops_adapters::services::aws_ingress;
use chatops_core::config::Env;
use chatops_core::ingress::IngressConfig;
use lambda_http::{service_fn, Error, Request};
use std::convert::Infallible;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();

    let sdk = sdk_config().await;
    // The SSM client is only built if a `_PARAM` reference has to be resolved.
    let config = IngressConfig::from_env(&Env::from_process(), &SsmSecrets::new(sdk.clone()))
        .await
        .inspect_err(|e| tracing::error!(error = %e, "ingress configuration is invalid"))?;
    let ingress = Arc::new(aws_ingress(config, &sdk)?);

    lambda_http::run(service_fn(move |req: Request| {
        let ingress = Arc::clone(&ingress);
        async move { Ok::<_, Infallible>(to_lambda(ingress.handle(from_lambda(req)).await)) }
    }))
    .await
}
