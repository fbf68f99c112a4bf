//! A Slack HTTP stand-in on 127.0.0.1 (free port) for integration tests, end-to-end tests and
//! the offline demo. It follows Slack's public behaviour for what we call:
//!
//! - `response_url` receivers at `/commands/<team>/<id>/<token>` (a slash command's) and
//!   `/actions/<team>/<id>/<token>` (a click's): 5 uses within 30 minutes (by an injectable
//!   clock), then HTTP 404 `used_url` / `expired_url`, like Slack. A URL is registered by
//!   `response_url()` / `response_url_in()` / `action_response_url()` or, leniently, at its
//!   first use. `replace_original: true` replaces the message the URL belongs to (and counts
//!   as a use): a command's answer (`command_answered`, else the first message posted through
//!   it), or the message whose button was clicked.
//! - Web API at `/api/<method>` with a Bearer bot token (`not_authed` / `invalid_auth`):
//!   `chat.postMessage` (1 message per second per channel, else HTTP 429 + `Retry-After`;
//!   `not_in_channel`, `channel_not_found`; `msg_too_long` over 40,000 characters;
//!   `invalid_blocks` for more than 50 blocks or a section text over 3,000; answers the
//!   message's `ts`), `chat.update` (`channel` + `ts` of a message the app posted, else
//!   `message_not_found` / `cant_update_message`; the same message checks), and
//!   `files.getUploadURLExternal`, the upload POST, `files.completeUploadExternal`,
//!   `conversations.open`. JSON and form-encoded bodies are both accepted, as Slack does.
//!
//! Everything that reached a channel is kept in order in a transcript that tests read, and
//! `render_transcript()` shows it as a person would read it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use chatops_core::clock::{Clock, SystemClock};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const RESPONSE_URL_MAX_USES: u32 = 5;
pub const RESPONSE_URL_MAX_AGE_SECS: u64 = 30 * 60;
pub const MAX_TEXT_CHARS: usize = 40_000;
pub const MAX_SECTION_CHARS: usize = 3_000;
pub const MAX_BLOCKS: usize = 50;

/// How a message reached Slack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Via {
    ResponseUrl {
        team: String,
        id: String,
    },
    /// The immediate answer to a slash command (what the app's HTTP response said), as
    /// reported by `command_answered`.
    CommandAnswer {
        team: String,
        id: String,
    },
    PostMessage,
    FileUpload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadedFile {
    pub file_id: String,
    pub filename: String,
    pub title: String,
    pub content: String,
}

/// One message as Slack accepted it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Post {
    pub via: Via,
    /// The message's id in its channel.
    pub ts: String,
    /// How many times it was replaced since (`replace_original`, `chat.update`).
    pub edits: u32,
    /// The channel (Web API), or None for a `response_url` (Slack knows, we do not).
    pub channel: Option<String>,
    /// `in_channel` / `ephemeral` for `response_url` posts.
    pub response_type: Option<String>,
    pub text: String,
    pub blocks: Option<Value>,
    pub attachments: Option<Value>,
    pub file: Option<UploadedFile>,
}

/// A request Slack refused, for tests that check the refusals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub endpoint: String,
    pub status: u16,
    pub error: String,
}

#[derive(Debug, Clone)]
struct ResponseUrl {
    created_at: u64,
    uses: u32,
    /// The channel it posts to, when the test said.
    channel: Option<String>,
    /// The transcript index of the message `replace_original` replaces.
    original: Option<usize>,
    /// The slash command was sent and the app's HTTP answer has not come back yet
    /// (`command_response_url_in`): Slack shows that answer first, so a message posted to
    /// the URL meanwhile waits for it (at most the 3 s Slack waits for an answer).
    awaiting_answer: bool,
}

#[derive(Default)]
struct Inner {
    transcript: Vec<Post>,
    refusals: Vec<Refusal>,
    response_urls: HashMap<String, ResponseUrl>,
    not_in: HashSet<String>,
    missing: HashSet<String>,
    last_post: HashMap<String, Instant>,
    forced_429: HashMap<String, u32>,
    pending_uploads: HashMap<String, (String, usize, Option<String>)>,
    next_id: u64,
}

struct Shared {
    token: String,
    clock: Arc<dyn Clock>,
    base: String,
    rate_limit: bool,
    inner: Mutex<Inner>,
    /// Woken when a command's answer is recorded (`command_answered`).
    answered: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running stand-in; stops when dropped.
pub struct SlackStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SlackStandIn {
    /// Start with this bot token, on the system clock.
    pub async fn start(bot_token: &str) -> std::io::Result<Self> {
        Self::start_with(bot_token, Arc::new(SystemClock), true).await
    }

    /// Start with an injected clock (for the 30-minute rule); `rate_limit` turns the
    /// 1-message-per-second-per-channel limit on or off.
    pub async fn start_with(
        bot_token: &str,
        clock: Arc<dyn Clock>,
        rate_limit: bool,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: bot_token.to_owned(),
            clock,
            base: format!("http://{addr}"),
            rate_limit,
            inner: Mutex::new(Inner::default()),
            answered: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route("/commands/{team}/{id}/{token}", post(response_url))
            .route(
                "/actions/{team}/{id}/{token}",
                post(action_response_url_handler),
            )
            .route("/api/{method}", post(web_api))
            .route("/upload/{file_id}", post(upload))
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Web API base, for `SLACK_API_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/", self.addr)
    }

    /// A fresh `response_url`, as Slack sends with a slash command; its 30 minutes start now.
    pub fn response_url(&self, team: &str) -> String {
        self.register("commands", team, None, None)
    }

    /// A slash command's `response_url` in `channel` (its messages carry the channel, so
    /// `chat.update` can find them by channel and `ts`).
    pub fn response_url_in(&self, team: &str, channel: &str) -> String {
        self.register("commands", team, Some(channel.to_owned()), None)
    }

    /// As `response_url_in`, for a command about to be sent to the app through its HTTP
    /// endpoint: until `command_answered` records the app's answer, a message posted to the
    /// URL waits for it (at most 3 s), as Slack shows a command's answer before anything sent
    /// to its `response_url` — under load the app's own follow-up could otherwise arrive
    /// first and be taken for the answer.
    pub fn command_response_url_in(&self, team: &str, channel: &str) -> String {
        let url = self.response_url_in(team, channel);
        let path = url.trim_start_matches(&self.base_url()).to_owned();
        if let Some(r) = self.shared.lock().response_urls.get_mut(&path) {
            r.awaiting_answer = true;
        }
        url
    }

    /// The `response_url` of a click on the message `ts`: `replace_original` replaces it.
    /// `None` when no such message is in the transcript.
    pub fn action_response_url(&self, team: &str, ts: &str) -> Option<String> {
        let (index, channel) = {
            let g = self.shared.lock();
            let i = g.transcript.iter().position(|p| p.ts == ts)?;
            (i, g.transcript[i].channel.clone())
        };
        Some(self.register("actions", team, channel, Some(index)))
    }

    fn register(
        &self,
        kind: &str,
        team: &str,
        channel: Option<String>,
        original: Option<usize>,
    ) -> String {
        let mut g = self.shared.lock();
        g.next_id += 1;
        let id = 1_000_000 + g.next_id;
        let path = format!("/{kind}/{team}/{id}/tok{id}");
        g.response_urls.insert(
            path.clone(),
            ResponseUrl {
                created_at: self.shared.clock.now(),
                uses: 0,
                channel,
                original,
                awaiting_answer: false,
            },
        );
        format!("{}{path}", self.base_url())
    }

    /// The app answered the slash command of `response_url` with `answer` (its HTTP
    /// response): Slack shows it as a message, which that URL's `replace_original` replaces.
    /// Returns its `ts`.
    pub fn command_answered(&self, response_url: &str, answer: &Value) -> Option<String> {
        let path = response_url.trim_start_matches(&self.base_url()).to_owned();
        let ts = self.record_answer(&path, answer);
        // Whatever the answer was, it came: messages waiting for it go ahead.
        if let Some(r) = self.shared.lock().response_urls.get_mut(&path) {
            r.awaiting_answer = false;
        }
        self.shared.answered.notify_waiters();
        ts
    }

    fn record_answer(&self, path: &str, answer: &Value) -> Option<String> {
        let path = path.to_owned();
        let mut parts = path.trim_start_matches('/').split('/');
        let (Some(_), Some(team), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let msg = answer.as_object()?;
        check_message(msg).ok()?;
        let mut g = self.shared.lock();
        let channel = g.response_urls.get(&path).and_then(|r| r.channel.clone());
        let ts = next_ts(&self.shared, &mut g);
        let post = Post {
            via: Via::CommandAnswer {
                team: team.to_owned(),
                id: id.to_owned(),
            },
            ts: ts.clone(),
            edits: 0,
            channel,
            response_type: Some(
                msg.get("response_type")
                    .and_then(Value::as_str)
                    .unwrap_or("ephemeral")
                    .to_owned(),
            ),
            text: field(msg, "text").to_owned(),
            blocks: msg.get("blocks").cloned(),
            attachments: msg.get("attachments").cloned(),
            file: None,
        };
        g.transcript.push(post);
        let index = g.transcript.len() - 1;
        if let Some(r) = g.response_urls.get_mut(&path) {
            r.original = Some(index);
        }
        Some(ts)
    }

    /// How often a `response_url` was used successfully.
    pub fn response_url_uses(&self, url: &str) -> u32 {
        let path = url.trim_start_matches(&self.base_url()).to_owned();
        self.shared
            .lock()
            .response_urls
            .get(&path)
            .map_or(0, |r| r.uses)
    }

    /// The bot is not a member of `channel`: posts there answer `not_in_channel`.
    pub fn remove_bot_from(&self, channel: &str) {
        self.shared.lock().not_in.insert(channel.to_owned());
    }

    /// `channel` does not exist: posts there answer `channel_not_found`.
    pub fn delete_channel(&self, channel: &str) {
        self.shared.lock().missing.insert(channel.to_owned());
    }

    /// The next `n` posts to `channel` answer 429 with `Retry-After: 1`.
    pub fn rate_limit_next(&self, channel: &str, n: u32) {
        self.shared.lock().forced_429.insert(channel.to_owned(), n);
    }

    pub fn transcript(&self) -> Vec<Post> {
        self.shared.lock().transcript.clone()
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        self.shared.lock().refusals.clone()
    }

    /// The transcript as a person reads it in Slack.
    pub fn render_transcript(&self) -> String {
        render_posts(&self.transcript())
    }

    /// Wait until the transcript holds at least `n` posts (or `timeout` passes).
    pub async fn wait_for_posts(&self, n: usize, timeout: Duration) -> Vec<Post> {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.transcript();
            if t.len() >= n || Instant::now() >= deadline {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SlackStandIn {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn refuse(shared: &Shared, endpoint: &str, status: u16, error: &str) -> Response {
    shared.lock().refusals.push(Refusal {
        endpoint: endpoint.to_owned(),
        status,
        error: error.to_owned(),
    });
    if endpoint.starts_with("/commands/") {
        return (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            error.to_owned(),
        )
            .into_response();
    }
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        axum::Json(json!({"ok": false, "error": error})),
    )
        .into_response();
    if status == 429 {
        resp.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    resp
}

/// Slack's message checks; the error code it answers with.
fn check_message(body: &Map<String, Value>) -> Result<(), &'static str> {
    let text = body.get("text").and_then(Value::as_str).unwrap_or("");
    let blocks = body.get("blocks").and_then(Value::as_array);
    let attachments = body.get("attachments").and_then(Value::as_array);
    if text.is_empty() && blocks.is_none() && attachments.is_none() {
        return Err("no_text");
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err("msg_too_long");
    }
    if let Some(blocks) = blocks {
        if blocks.len() > MAX_BLOCKS {
            return Err("invalid_blocks");
        }
        for b in blocks {
            if b["type"] == "section" {
                let t = b
                    .pointer("/text/text")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if t.is_empty() || t.chars().count() > MAX_SECTION_CHARS {
                    return Err("invalid_blocks");
                }
            }
        }
    }
    Ok(())
}

/// A JSON or form body as one JSON object; form fields holding JSON (`blocks`, `files`,
/// `attachments`) are parsed, as Slack does.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Option<Map<String, Value>> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        return serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.as_object().cloned());
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    let mut m = Map::new();
    for (k, v) in pairs {
        let value = match k.as_str() {
            "blocks" | "files" | "attachments" => {
                serde_json::from_str(&v).unwrap_or(Value::String(v))
            }
            _ => Value::String(v),
        };
        m.insert(k, value);
    }
    Some(m)
}

async fn response_url(
    State(shared): State<Arc<Shared>>,
    Path((team, id, token)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/commands/{team}/{id}/{token}");
    await_command_answer(&shared, &path).await;
    respond(&shared, path, team, id, &headers, &body)
}

/// Wait (at most 3 s, Slack's deadline for a command's answer) while the command of `path`
/// has not been answered (`ResponseUrl::awaiting_answer`).
async fn await_command_answer(shared: &Shared, path: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let answered = shared.answered.notified();
        let awaiting = shared
            .lock()
            .response_urls
            .get(path)
            .is_some_and(|r| r.awaiting_answer);
        if !awaiting {
            return;
        }
        if tokio::time::timeout_at(deadline, answered).await.is_err() {
            return;
        }
    }
}

async fn action_response_url_handler(
    State(shared): State<Arc<Shared>>,
    Path((team, id, token)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/actions/{team}/{id}/{token}");
    respond(&shared, path, team, id, &headers, &body)
}

/// The next message `ts` (unique, increasing).
fn next_ts(shared: &Shared, g: &mut Inner) -> String {
    g.next_id += 1;
    format!("{}.{:06}", shared.clock.now(), g.next_id)
}

/// One post to a `response_url`: a new message, or with `replace_original` the one it
/// belongs to replaced in place.
fn respond(
    shared: &Shared,
    path: String,
    team: String,
    id: String,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let now = shared.clock.now();
    {
        let mut g = shared.lock();
        let entry = g.response_urls.entry(path.clone()).or_insert(ResponseUrl {
            created_at: now,
            uses: 0,
            channel: None,
            original: None,
            awaiting_answer: false,
        });
        if now.saturating_sub(entry.created_at) >= RESPONSE_URL_MAX_AGE_SECS {
            drop(g);
            return refuse(shared, &path, 404, "expired_url");
        }
        if entry.uses >= RESPONSE_URL_MAX_USES {
            drop(g);
            return refuse(shared, &path, 404, "used_url");
        }
    }
    let Some(msg) = parse_body(headers, body) else {
        return refuse(shared, &path, 400, "invalid_payload");
    };
    if let Err(e) = check_message(&msg) {
        return refuse(shared, &path, 400, e);
    }
    let replace = msg.get("replace_original").and_then(Value::as_bool) == Some(true);
    let mut g = shared.lock();
    let Some(url) = g.response_urls.get(&path).cloned() else {
        return (StatusCode::OK, "ok").into_response();
    };
    if let Some(r) = g.response_urls.get_mut(&path) {
        r.uses += 1;
    }
    let text = field(&msg, "text").to_owned();
    if let (true, Some(i)) = (replace, url.original) {
        if let Some(p) = g.transcript.get_mut(i) {
            p.text = text;
            p.blocks = msg.get("blocks").cloned();
            p.attachments = msg.get("attachments").cloned();
            p.edits += 1;
            return (StatusCode::OK, "ok").into_response();
        }
    }
    let response_type = msg
        .get("response_type")
        .and_then(Value::as_str)
        .unwrap_or("ephemeral")
        .to_owned();
    let ts = next_ts(shared, &mut g);
    let in_channel = response_type == "in_channel";
    g.transcript.push(Post {
        via: Via::ResponseUrl { team, id },
        ts,
        edits: 0,
        channel: url.channel.clone(),
        response_type: Some(response_type),
        text,
        blocks: msg.get("blocks").cloned(),
        attachments: msg.get("attachments").cloned(),
        file: None,
    });
    let index = g.transcript.len() - 1;
    if url.original.is_none() && (in_channel || replace) {
        // The first message a command's URL posts is what its later replaces replace.
        if let Some(r) = g.response_urls.get_mut(&path) {
            r.original = Some(index);
        }
    }
    (StatusCode::OK, "ok").into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> Result<(), &'static str> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match auth.strip_prefix("Bearer ") {
        None => Err("not_authed"),
        Some(t) if t == shared.token && !t.is_empty() => Ok(()),
        Some(_) => Err("invalid_auth"),
    }
}

/// Channel checks shared by `chat.postMessage` and `files.completeUploadExternal`.
fn check_channel(g: &Inner, channel: &str) -> Result<(), &'static str> {
    if channel.is_empty() || g.missing.contains(channel) {
        return Err("channel_not_found");
    }
    if g.not_in.contains(channel) {
        return Err("not_in_channel");
    }
    Ok(())
}

fn field<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

async fn web_api(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let endpoint = format!("/api/{method}");
    if let Err(e) = authorized(&shared, &headers) {
        return refuse(&shared, &endpoint, 200, e);
    }
    let Some(args) = parse_body(&headers, &body) else {
        return refuse(&shared, &endpoint, 200, "invalid_form_data");
    };
    match method.as_str() {
        "chat.postMessage" => post_message(&shared, &endpoint, &args),
        "chat.update" => update_message(&shared, &endpoint, &args),
        "files.getUploadURLExternal" => get_upload_url(&shared, &endpoint, &args),
        "files.completeUploadExternal" => complete_upload(&shared, &endpoint, &args),
        "conversations.open" => {
            let users = field(&args, "users");
            if users.is_empty() {
                return refuse(&shared, &endpoint, 200, "users_list_not_supplied");
            }
            if users.contains(',') {
                return refuse(&shared, &endpoint, 200, "not_enough_users");
            }
            axum::Json(json!({"ok": true, "channel": {"id": format!("D{users}")}})).into_response()
        }
        _ => refuse(&shared, &endpoint, 200, "unknown_method"),
    }
}

fn post_message(shared: &Shared, endpoint: &str, args: &Map<String, Value>) -> Response {
    let channel = field(args, "channel").to_owned();
    let mut g = shared.lock();
    if let Err(e) = check_channel(&g, &channel) {
        drop(g);
        return refuse(shared, endpoint, 200, e);
    }
    if let Some(n) = g.forced_429.get_mut(&channel) {
        if *n > 0 {
            *n -= 1;
            drop(g);
            return refuse(shared, endpoint, 429, "ratelimited");
        }
    }
    let now = Instant::now();
    if shared.rate_limit {
        if let Some(last) = g.last_post.get(&channel) {
            if now.duration_since(*last) < Duration::from_secs(1) {
                drop(g);
                return refuse(shared, endpoint, 429, "ratelimited");
            }
        }
    }
    if let Err(e) = check_message(args) {
        drop(g);
        return refuse(shared, endpoint, 200, e);
    }
    g.last_post.insert(channel.clone(), now);
    let ts = next_ts(shared, &mut g);
    g.transcript.push(Post {
        via: Via::PostMessage,
        ts: ts.clone(),
        edits: 0,
        channel: Some(channel.clone()),
        response_type: None,
        text: field(args, "text").to_owned(),
        blocks: args.get("blocks").cloned(),
        attachments: args.get("attachments").cloned(),
        file: None,
    });
    axum::Json(json!({"ok": true, "channel": channel, "ts": ts,
                      "message": {"text": field(args, "text")}}))
    .into_response()
}

/// `chat.update`: the message `ts` in `channel`, if the app posted it (not a file, not an
/// ephemeral message), gets the new text and blocks.
fn update_message(shared: &Shared, endpoint: &str, args: &Map<String, Value>) -> Response {
    let channel = field(args, "channel").to_owned();
    let ts = field(args, "ts").to_owned();
    if channel.is_empty() || ts.is_empty() {
        return refuse(shared, endpoint, 200, "invalid_arguments");
    }
    if let Err(e) = check_message(args) {
        return refuse(shared, endpoint, 200, e);
    }
    let mut g = shared.lock();
    if let Err(e) = check_channel(&g, &channel) {
        drop(g);
        return refuse(shared, endpoint, 200, e);
    }
    let Some(p) = g
        .transcript
        .iter_mut()
        .find(|p| p.ts == ts && p.channel.as_deref().is_none_or(|c| c == channel))
    else {
        drop(g);
        return refuse(shared, endpoint, 200, "message_not_found");
    };
    if p.file.is_some() || p.response_type.as_deref() == Some("ephemeral") {
        drop(g);
        return refuse(shared, endpoint, 200, "cant_update_message");
    }
    p.text = field(args, "text").to_owned();
    p.blocks = args.get("blocks").cloned();
    p.attachments = args.get("attachments").cloned();
    p.edits += 1;
    let text = p.text.clone();
    axum::Json(
        json!({"ok": true, "channel": channel, "ts": ts, "text": text,
                      "message": {"text": text}}),
    )
    .into_response()
}

fn get_upload_url(shared: &Shared, endpoint: &str, args: &Map<String, Value>) -> Response {
    let filename = field(args, "filename").to_owned();
    let length: usize = field(args, "length").parse().unwrap_or(0);
    if filename.is_empty() {
        return refuse(shared, endpoint, 200, "invalid_arguments");
    }
    if length == 0 {
        return refuse(shared, endpoint, 200, "missing_argument");
    }
    let mut g = shared.lock();
    g.next_id += 1;
    let file_id = format!("F{:010}", g.next_id);
    g.pending_uploads
        .insert(file_id.clone(), (filename, length, None));
    axum::Json(json!({"ok": true,
                      "upload_url": format!("{}/upload/{file_id}", shared.base),
                      "file_id": file_id}))
    .into_response()
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    body: Bytes,
) -> Response {
    let mut g = shared.lock();
    match g.pending_uploads.get_mut(&file_id) {
        Some((_, length, content)) if *length == body.len() => {
            *content = Some(String::from_utf8_lossy(&body).into_owned());
            (StatusCode::OK, format!("OK - {}", body.len())).into_response()
        }
        Some(_) => {
            drop(g);
            refuse(&shared, "/upload", 400, "length_mismatch")
        }
        None => {
            drop(g);
            refuse(&shared, "/upload", 404, "file_not_found")
        }
    }
}

fn complete_upload(shared: &Shared, endpoint: &str, args: &Map<String, Value>) -> Response {
    let Some(files) = args.get("files").and_then(Value::as_array) else {
        return refuse(shared, endpoint, 200, "invalid_arguments");
    };
    let channel = field(args, "channel_id").to_owned();
    let mut g = shared.lock();
    if !channel.is_empty() {
        if let Err(e) = check_channel(&g, &channel) {
            drop(g);
            return refuse(shared, endpoint, 200, e);
        }
    }
    let mut done = Vec::new();
    for f in files {
        let id = f["id"].as_str().unwrap_or("").to_owned();
        let title = f["title"].as_str().unwrap_or("").to_owned();
        let Some((filename, _, Some(content))) = g.pending_uploads.remove(&id) else {
            drop(g);
            return refuse(shared, endpoint, 200, "file_not_found");
        };
        done.push(json!({"id": id, "title": title}));
        let ts = next_ts(shared, &mut g);
        g.transcript.push(Post {
            via: Via::FileUpload,
            ts,
            edits: 0,
            channel: (!channel.is_empty()).then(|| channel.clone()),
            response_type: None,
            text: field(args, "initial_comment").to_owned(),
            blocks: None,
            attachments: None,
            file: Some(UploadedFile {
                file_id: id,
                filename,
                title,
                content,
            }),
        });
    }
    axum::Json(json!({"ok": true, "files": done})).into_response()
}

/// Slack's `&amp;`, `&lt;`, `&gt;` back to characters; `<@U1>` as `@U1`, `<url|label>` as
/// `label (url)`, `<#C1>` as `#C1`.
fn readable(mrkdwn: &str) -> String {
    let mut out = String::new();
    let mut rest = mrkdwn;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('>') {
            Some(end) => {
                let inner = &after[..end];
                let shown = if let Some(date) = inner.strip_prefix("!date^") {
                    // `<!date^ts^{tokens}|fallback>`: what a client without the date shows.
                    date.split_once('|')
                        .map(|(_, f)| f)
                        .unwrap_or("")
                        .to_owned()
                } else if let Some(u) = inner.strip_prefix('@') {
                    format!("@{u}")
                } else if let Some(c) = inner.strip_prefix('#') {
                    format!("#{c}")
                } else if let Some((url, label)) = inner.split_once('|') {
                    format!("{label} ({url})")
                } else {
                    inner.to_owned()
                };
                out.push_str(&shown);
                rest = &after[end + 1..];
            }
            None => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace('\u{200b}', "")
}

fn block_text(block: &Value) -> Option<String> {
    match block["type"].as_str()? {
        "section" | "header" => block.pointer("/text/text")?.as_str().map(readable),
        "context" => Some(
            block["elements"]
                .as_array()?
                .iter()
                .filter_map(|e| e["text"].as_str().map(readable))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "divider" => Some("────".into()),
        "actions" => Some(
            block["elements"]
                .as_array()?
                .iter()
                .filter_map(|e| e.pointer("/text/text").and_then(Value::as_str))
                .map(|t| format!("[{t}]"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

/// Posts as a person reads them: where each went, then what it says.
pub fn render_posts(posts: &[Post]) -> String {
    let mut out = String::new();
    for (i, p) in posts.iter().enumerate() {
        let place = match (&p.via, &p.channel) {
            (Via::ResponseUrl { team, id }, _) => format!(
                "response_url {team}/{id} ({})",
                p.response_type.as_deref().unwrap_or("ephemeral")
            ),
            (Via::CommandAnswer { team, id }, _) => format!(
                "answer to {team}/{id} ({})",
                p.response_type.as_deref().unwrap_or("ephemeral")
            ),
            (Via::PostMessage, Some(c)) => format!("chat.postMessage in #{c}"),
            (Via::FileUpload, Some(c)) => format!("file in #{c}"),
            (_, None) => "private file".into(),
        };
        out.push_str(&format!("#{} {place}\n", i + 1));
        let mut lines: Vec<String> = Vec::new();
        if let Some(f) = &p.file {
            if !p.text.is_empty() {
                lines.push(readable(&p.text));
            }
            lines.push(format!(
                "[file {} \"{}\", {} bytes, {} lines]",
                f.filename,
                f.title,
                f.content.len(),
                f.content.lines().count()
            ));
        } else if let Some(blocks) = p.blocks.as_ref().and_then(Value::as_array) {
            lines.extend(blocks.iter().filter_map(block_text));
        } else {
            lines.push(readable(&p.text));
            if let Some(atts) = p.attachments.as_ref().and_then(Value::as_array) {
                for a in atts {
                    if let Some(t) = a["text"].as_str() {
                        lines.push(format!(
                            "[{}] {}",
                            a["color"].as_str().unwrap_or(""),
                            readable(t)
                        ));
                    }
                }
            }
        }
        for l in lines.join("\n").lines() {
            out.push_str("    ");
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[test]
    fn transcript_reads_like_slack() {
        let p = Post {
            via: Via::PostMessage,
            ts: "1.000001".into(),
            edits: 0,
            channel: Some("C1".into()),
            response_type: None,
            text: "fallback".into(),
            blocks: Some(json!([
                {"type": "section", "text": {"type": "mrkdwn",
                 "text": "<@U1> `deploy` succeeded · <https://g/j/1|job #1>"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "```\na &lt; b\n```"}}
            ])),
            attachments: None,
            file: None,
        };
        assert_eq!(
            render_posts(&[p]),
            "#1 chat.postMessage in #C1\n    @U1 `deploy` succeeded · job #1 (https://g/j/1)\n    \
             ```\n    a < b\n    ```\n"
        );
    }

    /// A message the app sends to a command's `response_url` before the command's own answer
    /// came back waits for that answer, then replaces it: the answer is shown first.
    #[tokio::test]
    async fn a_follow_up_that_overtakes_the_commands_answer_waits_for_it() {
        let s = SlackStandIn::start_with("xoxb-t", Arc::new(ManualClock::at(1_000)), false)
            .await
            .unwrap();
        let url = s.command_response_url_in("T1", "C1");
        let early = tokio::spawn({
            let url = url.clone();
            async move {
                reqwest::Client::new()
                    .post(url)
                    .json(&json!({"replace_original": true, "text": "card"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(s.transcript().is_empty(), "it waits for the answer");
        s.command_answered(
            &url,
            &json!({"response_type": "in_channel", "text": "requested"}),
        )
        .unwrap();
        assert_eq!(early.await.unwrap().unwrap(), 200);
        let t = s.transcript();
        assert_eq!((t.len(), t[0].text.as_str(), t[0].edits), (1, "card", 1));
    }

    #[tokio::test]
    async fn cards_are_replaced_in_place_through_response_urls_and_chat_update() {
        let s = SlackStandIn::start_with("xoxb-t", Arc::new(ManualClock::at(1_000)), false)
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let url = s.response_url_in("T1", "C1");
        let ts = s
            .command_answered(&url, &json!({"response_type": "in_channel", "text": "v1"}))
            .unwrap();
        let post = |u: &str, body: Value| http.post(u.to_owned()).json(&body).send();
        let r = post(&url, json!({"replace_original": true, "text": "v2"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let t = s.transcript();
        assert_eq!((t.len(), t[0].text.as_str(), t[0].edits), (1, "v2", 1));
        assert_eq!(s.response_url_uses(&url), 1, "a replace is a use");
        post(
            &url,
            json!({"response_type": "in_channel", "text": "reply"}),
        )
        .await
        .unwrap();
        assert_eq!(s.transcript().len(), 2);

        let update = |ts: &str, text: &str| {
            http.post(format!("{}chat.update", s.api_url()))
                .bearer_auth("xoxb-t")
                .json(&json!({"channel": "C1", "ts": ts, "text": text}))
                .send()
        };
        let v: Value = update(&ts, "v3").await.unwrap().json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(s.transcript()[0].text, "v3");
        let v: Value = update("9.9", "v3").await.unwrap().json().await.unwrap();
        assert_eq!(v["error"], "message_not_found");

        // A click's response_url replaces the clicked message.
        let click = s.action_response_url("T1", &ts).unwrap();
        assert!(click.contains("/actions/T1/"), "{click}");
        post(&click, json!({"replace_original": true, "text": "v4"}))
            .await
            .unwrap();
        let t = s.transcript();
        assert_eq!((t.len(), t[0].text.as_str(), t[0].edits), (2, "v4", 3));
        assert!(s.action_response_url("T1", "no-such-ts").is_none());
    }

    #[tokio::test]
    async fn response_url_expires_after_30_minutes() {
        let clock = ManualClock::at(1_000);
        let s = SlackStandIn::start_with("xoxb-t", Arc::new(clock.clone()), true)
            .await
            .unwrap();
        let url = s.response_url("T1");
        let http = reqwest::Client::new();
        let send = || http.post(&url).json(&json!({"text": "hi"})).send();
        assert_eq!(send().await.unwrap().status(), 200);
        clock.advance(30 * 60);
        let r = send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.text().await.unwrap(), "expired_url");
        assert_eq!(s.transcript().len(), 1);
    }
}
