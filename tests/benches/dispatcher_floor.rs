//! The cold-start floor for the dispatcher: the least an SQS-triggered Lambda can do that
//! makes the calls a run needs at the very least, with the same crates (lambda_runtime,
//! aws_lambda_events' `SqsEvent`, reqwest with rustls, the AWS SDK for DynamoDB), features and
//! release profile: per record one GitLab call (`GET /projects/:id` with the token) and one
//! DynamoDB `PutItem`. No configuration struct, no parsing of the body, no logging. The
//! benchmark (tests/benches/coldstart.rs) runs it side by side with the real `dispatcher`
//! under the same local Runtime API. Never deployed.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = std::env::var("RUNS_TABLE")?;
    let project_url = format!(
        "{}/api/v4/projects/{}",
        std::env::var("GITLAB_URL")?.trim_end_matches('/'),
        std::env::var("GITLAB_PROJECT")?.replace('/', "%2F")
    );
    let token = std::env::var("GITLAB_TOKEN")?;
    let http = reqwest::Client::new();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let (dynamodb, table, http) = (dynamodb.clone(), table.clone(), http.clone());
        let (project_url, token) = (project_url.clone(), token.clone());
        async move {
            for record in event.payload.records {
                http.get(&project_url)
                    .header("PRIVATE-TOKEN", &token)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                let id = record.message_id.unwrap_or_default();
                dynamodb
                    .put_item()
                    .table_name(&table)
                    .item("pk", AttributeValue::S(format!("floor#{id}")))
                    .item("record", AttributeValue::S(record.body.unwrap_or_default()))
                    .send()
                    .await?;
            }
            Ok::<_, Error>(SqsBatchResponse::default())
        }
    }))
    .await
}
