//! A Mattermost HTTP stand-in on 127.0.0.1 (free port) for integration tests. It follows
//! Mattermost's public behaviour for what we call, and clicks buttons the way Mattermost does:
//!
//! - slash-command `response_url`s at `/hooks/commands/<id>` (registered by `response_url`):
//!   the JSON of a command response (`response_type`, `text`, `attachments`, `props`)
//!   becomes a post by the person who typed the command (Mattermost posts command responses
//!   as them), or an ephemeral one for `ephemeral`; `command_answered` does the same for the
//!   command's immediate answer;
//! - REST API v4 with `Authorization: Bearer <bot token>` (401 without it):
//!   `POST /api/v4/posts` (201, the post with its `id`), `PUT /api/v4/posts/{id}/patch`
//!   (the bot may edit its own posts; another's only as a system admin, else 403; 404 for a
//!   post nobody made), `POST /api/v4/posts/ephemeral` (`user_id` + `post: {channel_id,
//!   message}`; only a system admin may, like Mattermost's `create_post_ephemeral`, else
//!   403), `GET /api/v4/users/me`, `POST /api/v4/channels/direct`;
//! - a button click (`click`): the action found in the post's `props.attachments[].actions[]`
//!   by its id, its `integration.url` POSTed with the JSON Mattermost sends
//!   (`PostActionIntegrationRequest`: `user_id`, `user_name`, `channel_id`, `channel_name`,
//!   `team_id` — empty in direct messages — `team_domain`, `post_id`, a fresh `trigger_id`,
//!   `type`, `data_source`, the action's `context`), and the answer applied as Mattermost
//!   applies it (`update` replaces the post, `ephemeral_text` is shown to the clicker only).
//!
//! Every request is recorded; every post keeps its versions, so a test can click a stale
//! copy of a card.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The bot's user id on the stand-in.
pub const BOT_USER_ID: &str = "chatopsbotuserid0000000000";

/// How a post came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MmVia {
    /// The slash command's immediate answer (`command_answered`).
    CommandAnswer,
    /// POSTed to a command's `response_url`.
    ResponseUrl,
    /// `POST /api/v4/posts` with the bot token.
    Api,
}

/// One post in a channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MmPost {
    pub id: String,
    pub channel_id: String,
    /// Who the post is by (the bot, or the person whose command answered).
    pub user_id: String,
    pub via: MmVia,
    /// The command `response_url` it came through (`CommandAnswer`, `ResponseUrl`).
    pub response_url: Option<String>,
    pub message: String,
    pub props: Value,
    /// How many times it was changed since (a patch, a click's `update`).
    pub edits: u32,
    /// Every version, oldest first, as `(message, props)`.
    pub versions: Vec<(String, Value)>,
}

impl MmPost {
    /// The buttons' ids on the post now.
    pub fn action_ids(&self) -> Vec<String> {
        actions_of(&self.props)
            .iter()
            .filter_map(|a| a["id"].as_str().map(str::to_owned))
            .collect()
    }
}

/// What only one person saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MmEphemeral {
    pub user_id: String,
    pub channel_id: String,
    pub message: String,
    /// `api` (`POST /api/v4/posts/ephemeral`), `action_response` (a click's
    /// `ephemeral_text`) or `response_url`.
    pub via: String,
}

/// One request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MmRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: String,
}

/// A click as sent, and how our integration answered.
#[derive(Debug, Clone)]
pub struct MmClick {
    /// The body POSTed to the integration URL.
    pub request: Value,
    pub url: String,
    pub status: u16,
    pub answer: Value,
}

#[derive(Debug, Clone)]
struct Hook {
    user_id: String,
    channel_id: String,
    url: String,
}

#[derive(Debug, Clone)]
struct Channel {
    team_id: String,
    name: String,
}

#[derive(Default)]
struct Inner {
    posts: Vec<MmPost>,
    ephemerals: Vec<MmEphemeral>,
    requests: Vec<MmRequest>,
    hooks: HashMap<String, Hook>,
    channels: HashMap<String, Channel>,
    teams: HashMap<String, String>,
    next_id: u64,
}

impl Inner {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        // 26 lowercase letters and digits, like Mattermost's ids.
        format!("{prefix:a<8.8}{:018}", self.next_id)
    }

    fn add_post(
        &mut self,
        channel: &str,
        user: &str,
        via: MmVia,
        message: &str,
        props: Value,
    ) -> MmPost {
        let p = MmPost {
            id: self.id("post"),
            channel_id: channel.to_owned(),
            user_id: user.to_owned(),
            via,
            response_url: None,
            message: message.to_owned(),
            props: props.clone(),
            edits: 0,
            versions: vec![(message.to_owned(), props)],
        };
        self.posts.push(p.clone());
        p
    }
}

struct Shared {
    token: String,
    system_admin: Mutex<bool>,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn is_admin(&self) -> bool {
        *self.system_admin.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running stand-in; stops when dropped.
pub struct MattermostStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MattermostStandIn {
    /// Start with this bot token. The bot is a system admin (what ephemeral posts need)
    /// unless `set_system_admin(false)`.
    pub async fn start(bot_token: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: bot_token.to_owned(),
            system_admin: Mutex::new(true),
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new()
            .route("/hooks/commands/{id}", post(hook))
            .route("/api/v4/posts", post(create_post))
            .route("/api/v4/posts/ephemeral", post(create_ephemeral))
            .route("/api/v4/posts/{id}/patch", put(patch_post))
            .route("/api/v4/users/me", get(me))
            .route("/api/v4/channels/direct", post(direct))
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
            http: reqwest::Client::new(),
            shutdown: Some(tx),
        })
    }

    /// The site URL, for `MATTERMOST_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the bot has the system admin role (ephemeral posts, editing others' posts).
    pub fn set_system_admin(&self, admin: bool) {
        *self
            .shared
            .system_admin
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = admin;
    }

    /// A channel of `team` (`""`: a direct message, which has no team).
    pub fn add_channel(&self, channel_id: &str, team_id: &str, name: &str) {
        self.shared.lock().channels.insert(
            channel_id.to_owned(),
            Channel {
                team_id: team_id.to_owned(),
                name: name.to_owned(),
            },
        );
    }

    pub fn add_team(&self, team_id: &str, name: &str) {
        self.shared
            .lock()
            .teams
            .insert(team_id.to_owned(), name.to_owned());
    }

    /// A fresh `response_url` for a command `user` types in `channel`.
    pub fn response_url(&self, channel_id: &str, user_id: &str) -> String {
        let mut inner = self.shared.lock();
        let id = inner.id("hook");
        let url = format!("{}/hooks/commands/{id}", self.base_url());
        inner.hooks.insert(
            id,
            Hook {
                user_id: user_id.to_owned(),
                channel_id: channel_id.to_owned(),
                url: url.clone(),
            },
        );
        url
    }

    /// The command's immediate answer, shown as Mattermost shows it: a post by the person
    /// who typed it (its id), or an ephemeral message (`None`).
    pub fn command_answered(&self, response_url: &str, answer: &Value) -> Option<String> {
        let id = response_url.rsplit('/').next()?;
        let mut inner = self.shared.lock();
        let hook = inner.hooks.get(id)?.clone();
        command_response(&mut inner, &hook, answer, MmVia::CommandAnswer)
    }

    pub fn posts(&self) -> Vec<MmPost> {
        self.shared.lock().posts.clone()
    }

    pub fn post(&self, id: &str) -> Option<MmPost> {
        self.posts().into_iter().find(|p| p.id == id)
    }

    pub fn ephemerals(&self) -> Vec<MmEphemeral> {
        self.shared.lock().ephemerals.clone()
    }

    pub fn requests(&self) -> Vec<MmRequest> {
        self.shared.lock().requests.clone()
    }

    /// The body Mattermost POSTs when `user` clicks the button `action_id` of `post_id` as
    /// it is now (or as version `version` was), and where to: `None` without such a button.
    pub fn click_request(
        &self,
        post_id: &str,
        version: Option<usize>,
        action_id: &str,
        user: (&str, &str),
    ) -> Option<(String, Value)> {
        let mut inner = self.shared.lock();
        let post = inner.posts.iter().find(|p| p.id == post_id)?.clone();
        let props = match version {
            Some(v) => post.versions.get(v)?.1.clone(),
            None => post.props.clone(),
        };
        let action = actions_of(&props)
            .into_iter()
            .find(|a| a["id"].as_str() == Some(action_id))?;
        let url = action["integration"]["url"].as_str()?.to_owned();
        let channel = inner
            .channels
            .get(&post.channel_id)
            .cloned()
            .unwrap_or(Channel {
                team_id: String::new(),
                name: String::new(),
            });
        let team_domain = inner
            .teams
            .get(&channel.team_id)
            .cloned()
            .unwrap_or_default();
        // Mattermost mints a trigger id per click: a random id, the user, the time, signed.
        let n = inner.id("trig");
        let trigger = format!("{n}:{}:{}:c2lnbmF0dXJl", user.0, inner.next_id);
        let mut request = json!({
            "user_id": user.0,
            "user_name": user.1,
            "channel_id": post.channel_id,
            "channel_name": channel.name,
            "team_id": channel.team_id,
            "team_domain": team_domain,
            "post_id": post.id,
            "trigger_id": base64_std(&trigger),
            "type": action["type"].as_str().unwrap_or("button"),
            "data_source": "",
        });
        if let Some(ctx) = action["integration"].get("context") {
            request["context"] = ctx.clone();
        }
        Some((url, request))
    }

    /// `user` (`(id, username)`) clicks `action_id` on the post as it is now.
    pub async fn click(
        &self,
        post_id: &str,
        action_id: &str,
        user: (&str, &str),
    ) -> Option<MmClick> {
        let (url, request) = self.click_request(post_id, None, action_id, user)?;
        Some(self.send_click(&url, request).await)
    }

    /// POST a click body to `url` as Mattermost does, and apply the answer as it does.
    pub async fn send_click(&self, url: &str, request: Value) -> MmClick {
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(request.to_string())
            .send()
            .await;
        let (status, answer) = match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        };
        if status == 200 {
            let mut inner = self.shared.lock();
            let post_id = request["post_id"].as_str().unwrap_or_default().to_owned();
            if let Some(update) = answer.get("update").filter(|u| u.is_object()) {
                if let Some(p) = inner.posts.iter_mut().find(|p| p.id == post_id) {
                    if let Some(m) = update["message"].as_str() {
                        p.message = m.to_owned();
                    }
                    if let Some(props) = update.get("props").filter(|v| !v.is_null()) {
                        p.props = props.clone();
                    }
                    p.edits += 1;
                    p.versions.push((p.message.clone(), p.props.clone()));
                }
            }
            if let Some(text) = answer["ephemeral_text"].as_str().filter(|t| !t.is_empty()) {
                inner.ephemerals.push(MmEphemeral {
                    user_id: request["user_id"].as_str().unwrap_or_default().to_owned(),
                    channel_id: request["channel_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    message: text.to_owned(),
                    via: "action_response".into(),
                });
            }
        }
        MmClick {
            request,
            url: url.to_owned(),
            status,
            answer,
        }
    }
}

impl Drop for MattermostStandIn {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn actions_of(props: &Value) -> Vec<Value> {
    props["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn base64_std(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A command response (immediate, or through its `response_url`) as Mattermost posts it.
fn command_response(inner: &mut Inner, hook: &Hook, answer: &Value, via: MmVia) -> Option<String> {
    let text = answer["text"].as_str().unwrap_or_default();
    let mut props = answer.get("props").cloned().unwrap_or_else(|| json!({}));
    if !props.is_object() {
        props = json!({});
    }
    if let Some(a) = answer.get("attachments").filter(|a| a.is_array()) {
        props["attachments"] = a.clone();
    }
    props["from_webhook"] = json!("true");
    if answer["response_type"].as_str() == Some("ephemeral") {
        inner.ephemerals.push(MmEphemeral {
            user_id: hook.user_id.clone(),
            channel_id: hook.channel_id.clone(),
            message: text.to_owned(),
            via: "response_url".into(),
        });
        return None;
    }
    let id = inner
        .add_post(&hook.channel_id, &hook.user_id, via, text, props)
        .id;
    if let Some(p) = inner.posts.iter_mut().find(|p| p.id == id) {
        p.response_url = Some(hook.url.clone());
    }
    Some(id)
}

fn record(shared: &Shared, method: &str, path: &str, status: StatusCode, body: &[u8]) {
    shared.lock().requests.push(MmRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        status: status.as_u16(),
        body: String::from_utf8_lossy(body).into_owned(),
    });
}

fn error(status: StatusCode, id: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"id": id, "message": message, "status_code": status.as_u16()})),
    )
        .into_response()
}

/// The bearer token check every REST call makes.
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.token)
}

fn json_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn post_json(p: &MmPost) -> Value {
    json!({"id": p.id, "channel_id": p.channel_id, "user_id": p.user_id,
           "message": p.message, "props": p.props})
}

async fn hook(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    let path = format!("/hooks/commands/{id}");
    let mut inner = s.lock();
    let (status, resp) = match (inner.hooks.get(&id).cloned(), json_body(&body)) {
        (None, _) => (
            StatusCode::NOT_FOUND,
            error(
                StatusCode::NOT_FOUND,
                "web.command_webhook.invalid.app_error",
                "Unable to find the webhook.",
            ),
        ),
        (_, None) => (
            StatusCode::BAD_REQUEST,
            error(
                StatusCode::BAD_REQUEST,
                "web.command_webhook.parse.app_error",
                "Unable to parse incoming data.",
            ),
        ),
        (Some(hook), Some(answer)) => {
            command_response(&mut inner, &hook, &answer, MmVia::ResponseUrl);
            (StatusCode::OK, (StatusCode::OK, "").into_response())
        }
    };
    drop(inner);
    record(&s, "POST", &path, status, &body);
    resp
}

async fn create_post(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let path = "/api/v4/posts";
    if !authorized(&s, &headers) {
        record(&s, "POST", path, StatusCode::UNAUTHORIZED, &body);
        return error(
            StatusCode::UNAUTHORIZED,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        );
    }
    let Some(v) = json_body(&body) else {
        record(&s, "POST", path, StatusCode::BAD_REQUEST, &body);
        return error(
            StatusCode::BAD_REQUEST,
            "api.context.invalid_body_param.app_error",
            "Invalid or missing post in request body.",
        );
    };
    let channel = v["channel_id"].as_str().unwrap_or_default().to_owned();
    let known = s.lock().channels.contains_key(&channel);
    if channel.is_empty() || !known {
        record(&s, "POST", path, StatusCode::FORBIDDEN, &body);
        return error(
            StatusCode::FORBIDDEN,
            "api.context.permissions.app_error",
            "You do not have the appropriate permissions.",
        );
    }
    let props = v
        .get("props")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let p = s.lock().add_post(
        &channel,
        BOT_USER_ID,
        MmVia::Api,
        v["message"].as_str().unwrap_or_default(),
        props,
    );
    record(&s, "POST", path, StatusCode::CREATED, &body);
    (StatusCode::CREATED, axum::Json(post_json(&p))).into_response()
}

async fn patch_post(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/v4/posts/{id}/patch");
    if !authorized(&s, &headers) {
        record(&s, "PUT", &path, StatusCode::UNAUTHORIZED, &body);
        return error(
            StatusCode::UNAUTHORIZED,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        );
    }
    let Some(v) = json_body(&body) else {
        record(&s, "PUT", &path, StatusCode::BAD_REQUEST, &body);
        return error(
            StatusCode::BAD_REQUEST,
            "api.context.invalid_body_param.app_error",
            "Invalid or missing post in request body.",
        );
    };
    let admin = s.is_admin();
    let mut inner = s.lock();
    let Some(p) = inner.posts.iter_mut().find(|p| p.id == id) else {
        drop(inner);
        record(&s, "PUT", &path, StatusCode::NOT_FOUND, &body);
        return error(
            StatusCode::NOT_FOUND,
            "app.post.get.app_error",
            "Unable to get the post.",
        );
    };
    if p.user_id != BOT_USER_ID && !admin {
        drop(inner);
        record(&s, "PUT", &path, StatusCode::FORBIDDEN, &body);
        return error(
            StatusCode::FORBIDDEN,
            "api.context.permissions.app_error",
            "You do not have the appropriate permissions.",
        );
    }
    if let Some(m) = v["message"].as_str() {
        p.message = m.to_owned();
    }
    // Mattermost's patch replaces the props when given.
    if let Some(props) = v.get("props").filter(|p| p.is_object()) {
        p.props = props.clone();
    }
    p.edits += 1;
    p.versions.push((p.message.clone(), p.props.clone()));
    let out = post_json(p);
    drop(inner);
    record(&s, "PUT", &path, StatusCode::OK, &body);
    (StatusCode::OK, axum::Json(out)).into_response()
}

async fn create_ephemeral(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/api/v4/posts/ephemeral";
    if !authorized(&s, &headers) {
        record(&s, "POST", path, StatusCode::UNAUTHORIZED, &body);
        return error(
            StatusCode::UNAUTHORIZED,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        );
    }
    if !s.is_admin() {
        record(&s, "POST", path, StatusCode::FORBIDDEN, &body);
        return error(
            StatusCode::FORBIDDEN,
            "api.context.permissions.app_error",
            "You do not have the appropriate permissions.",
        );
    }
    let parsed = json_body(&body).and_then(|v| {
        let user = v["user_id"].as_str()?.to_owned();
        let channel = v["post"]["channel_id"].as_str()?.to_owned();
        let message = v["post"]["message"].as_str()?.to_owned();
        (!user.is_empty() && !channel.is_empty()).then_some((user, channel, message))
    });
    let Some((user_id, channel_id, message)) = parsed else {
        record(&s, "POST", path, StatusCode::BAD_REQUEST, &body);
        return error(
            StatusCode::BAD_REQUEST,
            "api.context.invalid_body_param.app_error",
            "Invalid or missing post in request body.",
        );
    };
    let mut inner = s.lock();
    let id = inner.id("ephe");
    inner.ephemerals.push(MmEphemeral {
        user_id: user_id.clone(),
        channel_id: channel_id.clone(),
        message: message.clone(),
        via: "api".into(),
    });
    drop(inner);
    record(&s, "POST", path, StatusCode::CREATED, &body);
    (
        StatusCode::CREATED,
        axum::Json(
            json!({"id": id, "user_id": BOT_USER_ID, "channel_id": channel_id, "message": message}),
        ),
    )
        .into_response()
}

async fn me(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        record(&s, "GET", "/api/v4/users/me", StatusCode::UNAUTHORIZED, b"");
        return error(
            StatusCode::UNAUTHORIZED,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        );
    }
    record(&s, "GET", "/api/v4/users/me", StatusCode::OK, b"");
    axum::Json(json!({"id": BOT_USER_ID, "username": "chatops"})).into_response()
}

async fn direct(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let path = "/api/v4/channels/direct";
    if !authorized(&s, &headers) {
        record(&s, "POST", path, StatusCode::UNAUTHORIZED, &body);
        return error(
            StatusCode::UNAUTHORIZED,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        );
    }
    let users: Vec<String> = serde_json::from_slice(&body).unwrap_or_default();
    if users.len() != 2 {
        record(&s, "POST", path, StatusCode::BAD_REQUEST, &body);
        return error(
            StatusCode::BAD_REQUEST,
            "api.context.invalid_body_param.app_error",
            "Invalid or missing user_ids in request body.",
        );
    }
    let mut sorted = users.clone();
    sorted.sort();
    let id: String = sorted
        .concat()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(26)
        .collect();
    s.lock().channels.entry(id.clone()).or_insert(Channel {
        team_id: String::new(),
        name: sorted.join("__"),
    });
    record(&s, "POST", path, StatusCode::CREATED, &body);
    (
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "type": "D"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn posts_patches_and_ephemerals_follow_mattermost() {
        let mm = MattermostStandIn::start("bot-token").await.unwrap();
        mm.add_channel("chan1", "team1", "ops");
        let http = reqwest::Client::new();
        let api = |p: &str| format!("{}/api/v4/{p}", mm.base_url());
        let r = http
            .post(api("posts"))
            .json(&json!({"channel_id": "chan1", "message": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "no bot token");
        let r = http
            .post(api("posts"))
            .bearer_auth("bot-token")
            .json(&json!({"channel_id": "chan1", "message": "hi", "props": {"attachments": []}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 26);
        let r = http
            .put(api(&format!("posts/{id}/patch")))
            .bearer_auth("bot-token")
            .json(&json!({"message": "changed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(mm.post(&id).unwrap().message, "changed");
        assert_eq!(mm.post(&id).unwrap().edits, 1);

        // A command's answer is the person's post: the bot edits it only as a system admin.
        let url = mm.response_url("chan1", "user1");
        let theirs = mm
            .command_answered(
                &url,
                &json!({"response_type": "in_channel", "text": "card"}),
            )
            .unwrap();
        mm.set_system_admin(false);
        let patch = |id: String| {
            http.put(api(&format!("posts/{id}/patch")))
                .bearer_auth("bot-token")
                .json(&json!({"message": "x"}))
                .send()
        };
        assert_eq!(patch(theirs.clone()).await.unwrap().status(), 403);
        assert_eq!(patch("nosuchpost".into()).await.unwrap().status(), 404);
        let eph =
            json!({"user_id": "user1", "post": {"channel_id": "chan1", "message": "only you"}});
        let r = http
            .post(api("posts/ephemeral"))
            .bearer_auth("bot-token")
            .json(&eph)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "create_post_ephemeral is a system admin's");
        mm.set_system_admin(true);
        assert_eq!(patch(theirs).await.unwrap().status(), 200);
        let r = http
            .post(api("posts/ephemeral"))
            .bearer_auth("bot-token")
            .json(&eph)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(mm.ephemerals().last().unwrap().message, "only you");
        // A command's response_url post.
        let r = http
            .post(&url)
            .json(&json!({"response_type": "in_channel", "text": "reply"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(mm
            .posts()
            .iter()
            .any(|p| p.message == "reply" && p.user_id == "user1"));
    }

    #[tokio::test]
    async fn a_click_posts_what_mattermost_posts_and_applies_the_answer() {
        let mm = MattermostStandIn::start("bot-token").await.unwrap();
        mm.add_channel("chan1", "team1", "ops");
        mm.add_team("team1", "acme");
        // The integration: answers with an update and an ephemeral text.
        let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
        let sink = seen.clone();
        let app = Router::new().route(
            "/act",
            post(move |body: Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    axum::Json(json!({"update": {"message": "done"}, "ephemeral_text": "ok"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/act", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let props = json!({"attachments": [{"actions": [{"id": "go", "type": "button", "name": "Go",
                          "integration": {"url": url, "context": {"k": "v"}}}]}]});
        let id = {
            let mut inner = mm.shared.lock();
            inner
                .add_post("chan1", BOT_USER_ID, MmVia::Api, "card", props)
                .id
        };
        assert_eq!(mm.post(&id).unwrap().action_ids(), vec!["go"]);
        let a = mm.click(&id, "go", ("user1", "carol")).await.unwrap();
        let b = mm.click(&id, "go", ("user1", "carol")).await.unwrap();
        assert_eq!((a.status, b.status), (200, 200));
        let sent = seen.lock().unwrap().clone();
        assert_eq!(sent[0]["context"], json!({"k": "v"}));
        assert_eq!(sent[0]["team_id"], "team1");
        assert_eq!(sent[0]["team_domain"], "acme");
        assert_eq!(sent[0]["post_id"], id.as_str());
        assert_eq!(sent[0]["type"], "button");
        assert_ne!(
            sent[0]["trigger_id"], sent[1]["trigger_id"],
            "one per click"
        );
        assert_eq!(mm.post(&id).unwrap().message, "done");
        assert_eq!(mm.ephemerals()[0].message, "ok");
        assert!(mm.click(&id, "nosuch", ("user1", "carol")).await.is_none());
    }
}
