//! The SQS adapter for the run queue (`RUN_QUEUE_URL`). Owned by the ingress issue.

/// Sends run requests to an SQS queue.
pub struct SqsQueue {
    #[allow(dead_code)]
    client: aws_sdk_sqs::Client,
    #[allow(dead_code)]
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}
