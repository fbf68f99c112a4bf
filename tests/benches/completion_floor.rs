//! The cold-start floor for completion: the least a Function URL Lambda can do that finishes
//! a run, with the same crates (lambda_runtime taking the event as JSON, reqwest with rustls,
//! the AWS SDK for DynamoDB), features and release profile: one DynamoDB `GetItem` (the run),
//! one GET of the job's log from GitLab, one POST of the reply to Slack, then the Function URL
//! answer. What to read and where to post come from the environment (`RUNS_TABLE`,
//! `FLOOR_RUN_KEY`, `FLOOR_LOG_URL`, `GITLAB_TOKEN`, `FLOOR_POST_URL`): no configuration
//! struct, no parsing of the hook, no rendering, no logging. The benchmark
//! (tests/benches/coldstart.rs) runs it side by side with the real `completion` under the same
//! local Runtime API. Never deployed.

use aws_sdk_dynamodb::types::AttributeValue;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = std::env::var("RUNS_TABLE")?;
    let key = std::env::var("FLOOR_RUN_KEY")?;
    let log_url = std::env::var("FLOOR_LOG_URL")?;
    let token = std::env::var("GITLAB_TOKEN")?;
    let post_url = std::env::var("FLOOR_POST_URL")?;
    let http = reqwest::Client::new();
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let (dynamodb, table, key, http) =
            (dynamodb.clone(), table.clone(), key.clone(), http.clone());
        let (log_url, token, post_url) = (log_url.clone(), token.clone(), post_url.clone());
        async move {
            dynamodb
                .get_item()
                .table_name(&table)
                .key("pk", AttributeValue::S(key))
                .send()
                .await?;
            let log = http
                .get(&log_url)
                .header("PRIVATE-TOKEN", &token)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let text = String::from_utf8_lossy(&log[log.len().saturating_sub(2000)..]);
            http.post(&post_url)
                .json(&json!({"response_type": "in_channel", "text": text}))
                .send()
                .await?
                .error_for_status()?;
            Ok::<_, Error>(json!({
                "statusCode": 200,
                "headers": {"content-type": "application/json"},
                "body": r#"{"result":"replied"}"#,
                "isBase64Encoded": false,
            }))
        }
    }))
    .await
}
