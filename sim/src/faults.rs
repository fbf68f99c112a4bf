//! A fault-injecting HTTP proxy: put it between the product and a real-protocol server (moto
//! for SQS/DynamoDB/SSM, or a stand-in) to make that dependency slow, hanging or failing for
//! the requests a rule matches, without changing either side.
//!
//! ```text
//! let proxy = FaultProxy::start("http://127.0.0.1:5000").await;   // moto
//! proxy.add(Rule::aws("DynamoDB_20120810.").hang());                // every DynamoDB call
//! // point AWS_ENDPOINT_URL / the SDK's endpoint at proxy.url()
//! ```
//!
//! Rules match on the `X-Amz-Target` header prefix (AWS JSON protocols: DynamoDB, SQS's JSON
//! protocol) or a path substring, fire `times` times (or forever), and do one of: answer a
//! status without forwarding, wait then forward, forward then wait before answering (the
//! upstream did the work but the caller times out: an ambiguous outcome), or never answer.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a matching request gets.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer this status (with a JSON body AWS SDKs classify: a 5xx is retryable).
    Status(u16),
    /// Wait, then forward normally.
    DelayBefore(Duration),
    /// Forward (the upstream acts on it), then wait before answering.
    DelayAfter(Duration),
    /// Never answer (the connection stays open until the caller gives up).
    Hang,
}

/// Which requests a rule applies to, what they get, and how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    target_prefix: Option<String>,
    path_contains: Option<String>,
    action: Action,
    remaining: Option<usize>,
}

impl Rule {
    /// Requests whose `X-Amz-Target` starts with `prefix` (e.g. `DynamoDB_20120810.` or
    /// `DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessage`).
    pub fn aws(prefix: &str) -> Self {
        Self {
            target_prefix: Some(prefix.to_owned()),
            path_contains: None,
            action: Action::Hang,
            remaining: None,
        }
    }
    /// Requests whose path contains `s`.
    pub fn path(s: &str) -> Self {
        Self {
            target_prefix: None,
            path_contains: Some(s.to_owned()),
            action: Action::Hang,
            remaining: None,
        }
    }
    /// Every request.
    pub fn any() -> Self {
        Self {
            target_prefix: None,
            path_contains: None,
            action: Action::Hang,
            remaining: None,
        }
    }
    pub fn hang(mut self) -> Self {
        self.action = Action::Hang;
        self
    }
    pub fn status(mut self, code: u16) -> Self {
        self.action = Action::Status(code);
        self
    }
    pub fn delay_before(mut self, d: Duration) -> Self {
        self.action = Action::DelayBefore(d);
        self
    }
    pub fn delay_after(mut self, d: Duration) -> Self {
        self.action = Action::DelayAfter(d);
        self
    }
    /// Fire only for the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, headers: &HeaderMap, path: &str) -> bool {
        let target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        self.target_prefix
            .as_deref()
            .is_none_or(|p| target.starts_with(p))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
            && self.remaining != Some(0)
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    /// `(X-Amz-Target or path, action taken)` of every request, in order.
    seen: Vec<(String, Option<String>)>,
    /// The body of every request, in the same order (which table a DynamoDB call names).
    bodies: Vec<Bytes>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxy everything to `upstream` (e.g. `http://127.0.0.1:5000`), on 127.0.0.1:0.
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fault proxy");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("proxy has an address")
        );
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = upstream.trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let st = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (st, http, upstream) = (st.clone(), http.clone(), upstream.clone());
                async move { proxy(st, http, upstream, method, uri, headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn add(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// What went through: `(target or path, fault applied)`.
    pub fn seen(&self) -> Vec<(String, Option<String>)> {
        self.lock().seen.clone()
    }

    /// The bodies of what went through, in the order of [`FaultProxy::seen`].
    pub fn seen_bodies(&self) -> Vec<Bytes> {
        self.lock().bodies.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn proxy(
    state: Arc<Mutex<State>>,
    http: reqwest::Client,
    upstream: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let action = {
        let mut g = state.lock().unwrap_or_else(|e| e.into_inner());
        let hit = g.rules.iter_mut().find(|r| r.matches(&headers, &path));
        let action = hit.map(|r| {
            if let Some(n) = r.remaining.as_mut() {
                *n -= 1;
            }
            r.action.clone()
        });
        let label = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| path.clone());
        g.seen
            .push((label, action.as_ref().map(|a| format!("{a:?}"))));
        g.bodies.push(body.clone());
        action
    };
    match action {
        Some(Action::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (
                status,
                [("content-type", "application/x-amz-json-1.0")],
                r#"{"__type":"com.amazonaws#InternalServerError","message":"injected fault"}"#,
            )
                .into_response();
        }
        Some(Action::Hang) => {
            std::future::pending::<()>().await;
        }
        Some(Action::DelayBefore(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let url = format!(
        "{upstream}{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = http.request(method, url).body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response(),
    };
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    if let Some(Action::DelayAfter(d)) = action {
        tokio::time::sleep(d).await;
    }
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    for (k, v) in &resp_headers {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}
