//! Slack's outgoing side: posting to a slash command's (or a click's) `response_url`, with
//! `replace_original` when a run's card is updated in place, and the Web API
//! (`chat.postMessage`, which answers the message's `ts`, `chat.update` for a card the bot
//! posted, `files.getUploadURLExternal` + upload + `files.completeUploadExternal`,
//! `conversations.open`) at `SLACK_API_URL` with the bot token as a Bearer header.
//!
//! The Web API answers HTTP 200 with `{"ok": false, "error": "…"}` for most failures and HTTP
//! 429 with `Retry-After` when rate limited; `response_url` answers 404 `expired_url` /
//! `used_url` once it no longer takes messages. All of it is mapped to `ChatError` here.

use chatops_core::chat::{ChatApi, ChatError, FileAttachment, OutgoingMessage};
use chatops_core::ids::{ChannelId, ChatUserId, MessageTs};
use chatops_core::secret::Secret;
use serde_json::{json, Value};
use std::time::Duration;

pub use chatops_core::slack::DEFAULT_API_URL;

/// Slack's answers on a `response_url` that no longer takes messages.
/// How long one call to Slack may take, answer included.
const CHAT_TIMEOUT: Duration = Duration::from_secs(8);

const GONE: &[&str] = &["expired_url", "used_url", "invalid_token", "no_service"];

pub struct SlackApi {
    http: reqwest::Client,
    api_url: String,
    token: Option<Secret>,
}

impl SlackApi {
    /// `api_url` is the Web API base (`https://slack.com/api/`); `token` the bot token, if any.
    pub fn new(api_url: &str, token: Option<Secret>) -> Self {
        Self::with_client(crate::http::shared_client(), api_url, token)
    }

    pub fn with_client(http: reqwest::Client, api_url: &str, token: Option<Secret>) -> Self {
        let mut api_url = api_url.trim().to_owned();
        if !api_url.ends_with('/') {
            api_url.push('/');
        }
        Self {
            http,
            api_url,
            token: token.filter(|t| !t.is_empty()),
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn token(&self) -> Result<&Secret, ChatError> {
        self.token.as_ref().ok_or(ChatError::NoToken)
    }

    /// Call a Web API method with a JSON body.
    async fn call_json(&self, method: &str, body: &Value) -> Result<Value, ChatError> {
        let token = self.token()?;
        let resp = self
            .http
            .post(format!("{}{method}", self.api_url))
            .bearer_auth(token.expose())
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .timeout(CHAT_TIMEOUT)
            .send()
            .await
            .map_err(|e| ChatError::Retryable(format!("{method}: {e}")))?;
        web_api_result(method, resp).await
    }

    /// Call a Web API method with a form body (the encoding every method accepts).
    async fn call_form(&self, method: &str, form: &[(&str, &str)]) -> Result<Value, ChatError> {
        let token = self.token()?;
        let resp = self
            .http
            .post(format!("{}{method}", self.api_url))
            .bearer_auth(token.expose())
            .form(form)
            .timeout(CHAT_TIMEOUT)
            .send()
            .await
            .map_err(|e| ChatError::Retryable(format!("{method}: {e}")))?;
        web_api_result(method, resp).await
    }
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1)
}

async fn web_api_result(method: &str, resp: reqwest::Response) -> Result<Value, ChatError> {
    let status = resp.status();
    if status.as_u16() == 429 {
        return Err(ChatError::RateLimited(retry_after(&resp)));
    }
    let wait = retry_after(&resp);
    let text = crate::http::read_capped_text(resp, crate::http::MAX_CHAT_JSON)
        .await
        .map_err(|e| ChatError::Retryable(format!("{method}: {e}")))?;
    if status.is_server_error() {
        return Err(ChatError::Retryable(format!("{method}: HTTP {status}")));
    }
    let v: Value = serde_json::from_str(&text).map_err(|_| {
        ChatError::Refused(format!(
            "{method}: HTTP {status}, not JSON: {}",
            text.chars().take(200).collect::<String>()
        ))
    })?;
    if v["ok"].as_bool() == Some(true) {
        return Ok(v);
    }
    let error = v["error"].as_str().unwrap_or("unknown_error").to_owned();
    Err(map_error(method, &error, wait))
}

/// The JSON body of `chat.postMessage` (no `ts`) or `chat.update` (with the message's `ts`).
fn message_body(channel: &ChannelId, ts: Option<&MessageTs>, msg: &OutgoingMessage) -> Value {
    let mut body = json!({"channel": channel.as_str(), "text": msg.text});
    if let Some(ts) = ts {
        body["ts"] = json!(ts.as_str());
    }
    if let Some(b) = &msg.blocks {
        body["blocks"] = b.clone();
    }
    if let Some(a) = &msg.attachments {
        body["attachments"] = a.clone();
    }
    body
}

/// One Slack error code to the kind of failure it is.
pub fn map_error(method: &str, error: &str, retry_after: u64) -> ChatError {
    match error {
        "not_in_channel" | "channel_not_found" | "is_archived" => {
            ChatError::ChannelUnavailable(error.to_owned())
        }
        "ratelimited" | "rate_limited" => ChatError::RateLimited(retry_after),
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            ChatError::Retryable(format!("{method}: {error}"))
        }
        _ => ChatError::Refused(format!("{method}: {error}")),
    }
}

#[async_trait::async_trait]
impl ChatApi for SlackApi {
    async fn respond(&self, response_url: &str, msg: &OutgoingMessage) -> Result<(), ChatError> {
        let resp = self
            .http
            .post(response_url)
            .json(&msg.to_response_json())
            .timeout(CHAT_TIMEOUT)
            .send()
            .await
            .map_err(|e| ChatError::Retryable(format!("response_url: {e}")))?;
        let status = resp.status();
        if status.as_u16() == 429 {
            return Err(ChatError::RateLimited(retry_after(&resp)));
        }
        let body = crate::http::read_capped_text(resp, crate::http::MAX_CHAT_JSON)
            .await
            .unwrap_or_default();
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                if v["ok"].as_bool() == Some(false) {
                    v["error"].as_str().map(str::to_owned)
                } else {
                    None
                }
            })
            .unwrap_or_else(|| body.trim().to_owned());
        if status.is_success() && !GONE.contains(&code.as_str()) && !body.contains("\"ok\":false") {
            return Ok(());
        }
        if GONE.contains(&code.as_str()) || matches!(status.as_u16(), 404 | 410) {
            return Err(ChatError::ResponseUrlGone(code));
        }
        if status.is_server_error() {
            return Err(ChatError::Retryable(format!("response_url: HTTP {status}")));
        }
        Err(ChatError::Refused(format!(
            "response_url: HTTP {status} {code}"
        )))
    }

    async fn post_message(
        &self,
        channel: &ChannelId,
        msg: &OutgoingMessage,
    ) -> Result<(), ChatError> {
        self.post_card(channel, msg).await.map(|_| ())
    }

    async fn post_card(
        &self,
        channel: &ChannelId,
        msg: &OutgoingMessage,
    ) -> Result<Option<MessageTs>, ChatError> {
        let v = self
            .call_json("chat.postMessage", &message_body(channel, None, msg))
            .await?;
        Ok(v["ts"].as_str().map(MessageTs::new))
    }

    async fn update_message(
        &self,
        channel: &ChannelId,
        ts: &MessageTs,
        msg: &OutgoingMessage,
    ) -> Result<(), ChatError> {
        self.call_json("chat.update", &message_body(channel, Some(ts), msg))
            .await
            .map(|_| ())
    }

    async fn upload_file(
        &self,
        channel: &ChannelId,
        file: &FileAttachment,
        initial_comment: &str,
    ) -> Result<(), ChatError> {
        let length = file.content.len().to_string();
        let got = self
            .call_form(
                "files.getUploadURLExternal",
                &[("filename", &file.filename), ("length", &length)],
            )
            .await?;
        let (Some(upload_url), Some(file_id)) =
            (got["upload_url"].as_str(), got["file_id"].as_str())
        else {
            return Err(ChatError::Refused(
                "files.getUploadURLExternal: no upload_url or file_id".into(),
            ));
        };
        let resp = self
            .http
            .post(upload_url)
            .header("content-type", "text/plain; charset=utf-8")
            .body(file.content.clone())
            .timeout(CHAT_TIMEOUT)
            .send()
            .await
            .map_err(|e| ChatError::Retryable(format!("file upload: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(if status.is_server_error() {
                ChatError::Retryable(format!("file upload: HTTP {status}"))
            } else {
                ChatError::Refused(format!("file upload: HTTP {status}"))
            });
        }
        let files = json!([{"id": file_id, "title": file.title}]).to_string();
        self.call_form(
            "files.completeUploadExternal",
            &[
                ("files", &files),
                ("channel_id", channel.as_str()),
                ("initial_comment", initial_comment),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn open_dm(&self, user: &ChatUserId) -> Result<ChannelId, ChatError> {
        let v = self
            .call_form("conversations.open", &[("users", user.as_str())])
            .await?;
        v.pointer("/channel/id")
            .and_then(Value::as_str)
            .map(ChannelId::new)
            .ok_or_else(|| ChatError::Refused("conversations.open: no channel id".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_what_the_caller_can_do() {
        assert_eq!(
            map_error("chat.postMessage", "not_in_channel", 1),
            ChatError::ChannelUnavailable("not_in_channel".into())
        );
        assert_eq!(
            map_error("chat.postMessage", "ratelimited", 3),
            ChatError::RateLimited(3)
        );
        assert!(matches!(
            map_error("chat.postMessage", "invalid_blocks", 1),
            ChatError::Refused(_)
        ));
        assert!(matches!(
            map_error("chat.postMessage", "internal_error", 1),
            ChatError::Retryable(_)
        ));
    }

    #[tokio::test]
    async fn web_api_without_token_says_so() {
        let api = SlackApi::new("http://127.0.0.1:9/api", None);
        let r = api
            .post_message(&ChannelId::new("C1"), &OutgoingMessage::in_channel("hi"))
            .await;
        assert_eq!(r, Err(ChatError::NoToken));
        assert!(!api.has_token());
    }
}
