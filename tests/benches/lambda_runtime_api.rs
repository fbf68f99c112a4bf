//! A tiny local Lambda Runtime API (the `2018-06-01` protocol the real service speaks to a
//! `provided.al2023` bootstrap), so the built Lambda binaries run as they would in AWS:
//! `GET …/invocation/next` hands out one queued event with the Lambda-Runtime-* headers,
//! `POST …/invocation/{id}/response|error` and `…/init/error` are captured with the instant
//! they arrived. Used by tests/ingress_runtime.rs and the cold-start benchmark.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex};

pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:chatops-ingress";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeKind {
    Response,
    Error,
    InitError,
}

/// What the function posted back, and when it arrived.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub request_id: String,
    pub body: Bytes,
    pub at: Instant,
}

impl Outcome {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

struct Shared {
    events: Mutex<mpsc::UnboundedReceiver<(String, serde_json::Value)>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

/// One local Runtime API on 127.0.0.1 (a free port). Stops when dropped.
pub struct RuntimeApi {
    addr: SocketAddr,
    events: mpsc::UnboundedSender<(String, serde_json::Value)>,
    outcomes: Mutex<mpsc::UnboundedReceiver<Outcome>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let got = s.events.lock().await.recv().await;
    let Some((id, event)) = got else {
        return (StatusCode::GONE, HeaderMap::new(), String::new());
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() + 30_000)
        .unwrap_or(0);
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", id);
    put("lambda-runtime-deadline-ms", deadline.to_string());
    put("lambda-runtime-invoked-function-arn", FUNCTION_ARN.into());
    put(
        "lambda-runtime-trace-id",
        "Root=1-67748200-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0".into(),
    );
    put("content-type", "application/json".into());
    (StatusCode::OK, h, event.to_string())
}

fn record(s: &Shared, kind: OutcomeKind, request_id: String, body: Bytes) -> StatusCode {
    let _ = s.outcomes.send(Outcome {
        kind,
        request_id,
        body,
        at: Instant::now(),
    });
    StatusCode::ACCEPTED
}

async fn response(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    record(&s, OutcomeKind::Response, id, body)
}

async fn error(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    record(&s, OutcomeKind::Error, id, body)
}

async fn init_error(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    record(&s, OutcomeKind::InitError, String::new(), body)
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: Mutex::new(events_rx),
            outcomes: outcomes_tx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            events: events_tx,
            outcomes: Mutex::new(outcomes_rx),
            server,
        }
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API` (host:port, no scheme).
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Queue one invocation.
    pub fn invoke(&self, request_id: &str, event: serde_json::Value) {
        let _ = self.events.send((request_id.to_owned(), event));
    }

    /// The next thing the function posted back, if it comes within `timeout`.
    pub async fn outcome(&self, timeout: Duration) -> Option<Outcome> {
        let mut rx = self.outcomes.lock().await;
        tokio::time::timeout(timeout, rx.recv())
            .await
            .ok()
            .flatten()
    }
}

/// The environment Lambda gives a function (plus whatever the caller adds).
pub fn lambda_env(runtime_api: &str, function: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("AWS_LAMBDA_FUNCTION_NAME", function),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/chatops"),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/01/01/[$LATEST]0123456789abcdef",
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("_HANDLER", "bootstrap"),
        ("TZ", ":UTC"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A Function URL event (API Gateway v2 payload) with a base64 body, as Lambda sends it.
pub fn function_url_event(path: &str, headers: &[(&str, &str)], body: &[u8]) -> serde_json::Value {
    use base64::Engine;
    let mut h = serde_json::Map::new();
    for (k, v) in [
        ("content-type", "application/x-www-form-urlencoded"),
        (
            "host",
            "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws",
        ),
        ("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-for", "3.80.1.1"),
    ]
    .iter()
    .chain(headers)
    {
        h.insert((*k).to_owned(), serde_json::Value::String((*v).to_owned()));
    }
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": h,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghijklmnopqrstuvwxyz012345",
            "domainName": "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghijklmnopqrstuvwxyz012345",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "3.80.1.1",
                "userAgent": "Slackbot 1.0 (+https://api.slack.com/robots)"
            },
            "requestId": "0f0e0d0c-0b0a-4909-8807-060504030201",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1767225600000u64
        },
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true
    })
}

/// The target directory and profile directory of the running test or bench executable
/// (`target/<profile>/deps/<exe>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("test executable lives in target/<profile>/deps")
}

/// Build binaries with cargo (`profile` = `dev` or `release`) into the target directory
/// this executable lives in, and return the directory holding them.
pub fn cargo_build(profile: &str, args: &[&str]) -> PathBuf {
    let profile_dir = profile_dir();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("build")
        .arg("--profile")
        .arg(profile)
        .arg("--target-dir")
        .arg(&target_dir)
        .args(args)
        .status()
        .expect("cargo build could not start");
    assert!(status.success(), "cargo build {args:?} failed");
    target_dir.join(if profile == "dev" { "debug" } else { profile })
}
