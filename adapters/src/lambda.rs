//! Lambda event glue, the only place that knows Lambda's event shapes: Function URL requests
//! to and from our `http` types, the SQS batch with partial batch failures, and the
//! completion function's two triggers (Function URL and the EventBridge schedule).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use bytes::Bytes;
use chatops_core::completion::Completion;
use chatops_core::dispatcher::{Delivery, Dispatcher};
use chatops_core::web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Convert a `lambda_http` request (body already base64-decoded by lambda_http).
pub fn from_lambda(req: lambda_http::Request) -> HttpRequest {
    let (parts, body) = req.into_parts();
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(s) => Bytes::from(s),
        lambda_http::Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    http::Request::from_parts(parts, bytes)
}

/// Convert our response for `lambda_http`.
pub fn to_lambda(resp: HttpResponse) -> lambda_http::Response<lambda_http::Body> {
    let (parts, body) = resp.into_parts();
    lambda_http::Response::from_parts(parts, lambda_http::Body::Text(body))
}

/// An SQS batch: each record on its own, concurrently; the ones to retry are reported as
/// batch item failures so only they come back (the event source has ReportBatchItemFailures).
/// `deadline` is the invocation's (`Context::deadline`, milliseconds since the epoch): work
/// stops and releases its claim before Lambda's timeout would cut it at a random point.
pub async fn dispatch_batch(
    dispatcher: &Dispatcher,
    event: SqsEvent,
    deadline: Option<Instant>,
) -> SqsBatchResponse {
    let results = futures_util::future::join_all(event.records.iter().map(|m| {
        let receive_count = m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let id = m.message_id.as_deref().unwrap_or("");
        dispatcher.handle_delivery(id, m.body.as_deref().unwrap_or(""), receive_count, deadline)
    }))
    .await;
    let mut resp = SqsBatchResponse::default();
    for (m, res) in event.records.iter().zip(results) {
        if res == Delivery::Retry {
            let mut f = BatchItemFailure::default();
            f.item_identifier = m.message_id.clone().unwrap_or_default();
            resp.batch_item_failures.push(f);
        }
    }
    resp
}

/// The invocation's deadline (Unix milliseconds, from the Lambda context) as an `Instant`.
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// What a completion Lambda event is.
#[derive(Debug)]
pub enum Routed {
    /// A Function URL (API Gateway v2 format) request.
    Http(Box<HttpRequest>),
    /// An EventBridge scheduled event: run the sweep.
    Sweep,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("bad Function URL event")]
    BadHttp(#[source] serde_json::Error),
    #[error("unrecognised event: neither a Function URL request nor a scheduled event")]
    Unrecognised,
    #[error("the sweep report could not be encoded")]
    Encode(#[source] serde_json::Error),
}

/// Tell the Function URL's HTTP event from EventBridge's scheduled event.
pub fn route_event(event: Value) -> Result<Routed, EventError> {
    if event.pointer("/requestContext/http").is_some() {
        let req: lambda_http::request::LambdaRequest =
            serde_json::from_value(event).map_err(EventError::BadHttp)?;
        let req: lambda_http::Request = req.into();
        return Ok(Routed::Http(Box::new(from_lambda(req))));
    }
    if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        return Ok(Routed::Sweep);
    }
    Err(EventError::Unrecognised)
}

/// One completion invocation: the webhook or the sweep.
pub async fn completion_event(completion: &Completion, event: Value) -> Result<Value, EventError> {
    match route_event(event)? {
        Routed::Http(req) => Ok(http_response(completion.handle_webhook(*req).await)),
        Routed::Sweep => {
            let report = completion.sweep(completion.clock.now()).await;
            serde_json::to_value(report).map_err(EventError::Encode)
        }
    }
}

/// Our response as a Function URL expects it.
pub fn http_response(resp: HttpResponse) -> Value {
    let headers: serde_json::Map<String, Value> = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), json!(v.to_str().ok()?))))
        .collect();
    json!({
        "statusCode": resp.status().as_u16(),
        "headers": headers,
        "body": resp.body(),
        "isBase64Encoded": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatops_core::completion::{parse_webhook, WEBHOOK_PATH};

    #[test]
    fn events_route_by_shape() {
        let http = serde_json::from_str::<Value>(include_str!("../../events/gitlab-job-hook.json"))
            .unwrap();
        match route_event(http).unwrap() {
            Routed::Http(req) => {
                assert_eq!(req.uri().path(), WEBHOOK_PATH);
                assert_eq!(
                    chatops_core::web::header(&req, "x-gitlab-event"),
                    Some("Job Hook")
                );
                assert!(parse_webhook("Job Hook", req.body()).unwrap().is_some());
            }
            Routed::Sweep => panic!("routed an HTTP event to the sweep"),
        }
        let sweep =
            serde_json::from_str::<Value>(include_str!("../../events/eventbridge-sweep.json"))
                .unwrap();
        assert!(matches!(route_event(sweep).unwrap(), Routed::Sweep));
        assert!(route_event(json!({"Records": []})).is_err());
    }
}
