//! The moto support itself: the server answers SQS and DynamoDB over their wire protocols.

mod support;

#[tokio::test]
async fn moto_answers_sqs_and_dynamodb() {
    let cfg = support::aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let name = support::unique_name("q");
    let q = sqs.create_queue().queue_name(&name).send().await.unwrap();
    assert!(q.queue_url().unwrap().contains(&name));
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    ddb.list_tables().send().await.unwrap();
}
