//! The SQS adapter for the run queue (`RUN_QUEUE_URL`): one `SendMessage` per run request,
//! the body being the request's JSON. The endpoint comes from the SDK config, so
//! `AWS_ENDPOINT_URL` (moto in tests) needs no code here. A FIFO queue (`.fifo`) gets the
//! request id as deduplication id, so SQS itself drops a resent request.

use chatops_core::action::ActionMessage;
use chatops_core::queue::{QueueError, RunQueue};
use chatops_core::run::RunRequest;
use std::time::Duration;

/// Slack wants an answer within 3 s; the send happens before the answer, so it must give up
/// well before that and let the user retry.
pub const SEND_OPERATION_TIMEOUT: Duration = Duration::from_millis(2000);
pub const SEND_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(900);
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(700);
/// Attempts of one send (the first included), within `SEND_OPERATION_TIMEOUT`.
pub const SEND_ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Sends run requests to an SQS queue.
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// A queue whose client gives up in time for a 3-second answer.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(SEND_ATTEMPT_TIMEOUT)
            .operation_timeout(SEND_OPERATION_TIMEOUT)
            .build();
        // Retries are ours (`send`): the SDK's would hide whether any attempt got through.
        let conf = aws_sdk_sqs::config::Builder::from(sdk)
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        Self::new(aws_sdk_sqs::Client::from_conf(conf), queue_url)
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

#[async_trait::async_trait]
impl RunQueue for SqsQueue {
    async fn send(&self, request: &RunRequest) -> Result<(), QueueError> {
        let body = serde_json::to_string(request).map_err(|e| QueueError::Encode(e.to_string()))?;
        self.send_body(body, request.request_id.as_str()).await
    }

    /// A click is deduplicated (FIFO) on its key, so the same click resent is dropped and a
    /// second click is not.
    async fn send_action(&self, action: &ActionMessage) -> Result<(), QueueError> {
        let body = serde_json::to_string(action).map_err(|e| QueueError::Encode(e.to_string()))?;
        self.send_body(body, &action.key).await
    }
}

impl SqsQueue {
    /// One message, `dedup_id` naming it on a FIFO queue.
    async fn send_body(&self, body: String, dedup_id: &str) -> Result<(), QueueError> {
        let mut send = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body);
        if self.queue_url.ends_with(".fifo") {
            send = send
                .message_group_id(dedup_id)
                .message_deduplication_id(dedup_id);
        }
        // Attempts until one succeeds, a 4xx refusal, or the budget is spent. The outcome is
        // "unconfirmed" as soon as any attempt may have queued the message (a timeout after
        // sending, a 5xx), and "unavailable" only when no attempt can have. Sending twice is
        // harmless: the dispatcher claims each request id once.
        let started = std::time::Instant::now();
        let mut unconfirmed: Option<QueueError> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = match send.clone().send().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let client_error = e
                .raw_response()
                .is_some_and(|r| r.status().is_client_error());
            let last = client_error
                || attempt >= SEND_ATTEMPTS
                || started.elapsed() + SEND_ATTEMPT_TIMEOUT > SEND_OPERATION_TIMEOUT;
            let err = match classify(e) {
                u @ QueueError::Unconfirmed(_) => {
                    unconfirmed = Some(u);
                    None
                }
                other => Some(other),
            };
            if last {
                return Err(match (unconfirmed, err) {
                    (Some(u), _) => u,
                    (None, Some(e)) => e,
                    (None, None) => QueueError::Unconfirmed("no answer".into()),
                });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Whether a failed send certainly left nothing in the queue. A timeout, or a connection that
/// broke after the request went out, or a 5xx, may have queued it; a 4xx answer, or a request
/// that never left (no connection, construction), did not.
fn classify(
    e: aws_sdk_sqs::error::SdkError<
        aws_sdk_sqs::operation::send_message::SendMessageError,
        aws_sdk_sqs::config::http::HttpResponse,
    >,
) -> QueueError {
    use aws_sdk_sqs::error::SdkError;
    let certain = match &e {
        SdkError::ConstructionFailure(_) => true,
        SdkError::DispatchFailure(d) => {
            !d.is_timeout()
                && d.as_connector_error().is_some_and(|c| {
                    let s = format!("{c:?}").to_ascii_lowercase();
                    s.contains("connect") || s.contains("refused")
                })
        }
        SdkError::ServiceError(s) => s.raw().status().is_client_error(),
        _ => false,
    };
    let text = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
    if certain {
        QueueError::Unavailable(text)
    } else {
        QueueError::Unconfirmed(text)
    }
}
