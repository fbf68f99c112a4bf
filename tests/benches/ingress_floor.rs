//! The cold-start floor for the ingress: the least a Function URL Lambda can do that sends
//! the request to SQS with the same SDK (same crates, features and release profile) and
//! answers. No configuration struct, no verification, no parsing, no logging. The benchmark
//! runs it side by side with the real `ingress` under the same local Runtime API.

use lambda_http::{service_fn, Body, Error, Request, Response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = std::env::var("RUN_QUEUE_URL")?;
    lambda_http::run(service_fn(move |req: Request| {
        let sqs = sqs.clone();
        let queue_url = queue_url.clone();
        async move {
            let body = String::from_utf8_lossy(req.body().as_ref()).into_owned();
            sqs.send_message()
                .queue_url(queue_url)
                .message_body(body)
                .send()
                .await?;
            Ok::<_, Error>(Response::new(Body::from("ok")))
        }
    }))
    .await
}
