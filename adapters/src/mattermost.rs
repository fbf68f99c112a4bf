//! Mattermost's outgoing side: the slash command's `response_url` (same JSON as Slack's:
//! `response_type`, `text`, `attachments`), and, when `MATTERMOST_URL` and
//! `MATTERMOST_BOT_TOKEN` are configured, the REST API v4: `POST /api/v4/posts` (a card's
//! post answers its id), `PUT /api/v4/posts/{id}/patch` (a card in place),
//! `POST /api/v4/posts/ephemeral` (what only a clicker sees) and direct channels. Without a
//! bot token there is no REST route: `ChatError::NoToken`.

use chatops_core::chat::{ChatApi, ChatError, FileAttachment, OutgoingMessage};
use chatops_core::ids::{ChannelId, ChatUserId, MessageTs};
use chatops_core::secret::Secret;
use serde_json::{json, Value};
use std::time::Duration;

/// How long one call to Mattermost may take, answer included.
const CHAT_TIMEOUT: Duration = Duration::from_secs(8);

pub struct MattermostApi {
    http: reqwest::Client,
    /// Server base URL and bot token, when both are configured.
    rest: Option<(String, Secret)>,
}

impl MattermostApi {
    pub fn new(url: Option<String>, token: Option<Secret>) -> Self {
        let http = crate::http::shared_client();
        let rest = match (url, token) {
            (Some(u), Some(t)) if !u.trim().is_empty() && !t.is_empty() => {
                Some((u.trim().trim_end_matches('/').to_owned(), t))
            }
            _ => None,
        };
        Self { http, rest }
    }

    fn rest(&self) -> Result<(&str, &Secret), ChatError> {
        self.rest
            .as_ref()
            .map(|(u, t)| (u.as_str(), t))
            .ok_or(ChatError::NoToken)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ChatError> {
        let (base, token) = self.rest()?;
        let mut req = self
            .http
            .request(method, format!("{base}/api/v4/{path}"))
            .bearer_auth(token.expose())
            .timeout(CHAT_TIMEOUT);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ChatError::Retryable(format!("mattermost {path}: {e}")))?;
        let status = resp.status();
        let reset = resp
            .headers()
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let text = crate::http::read_capped_text(resp, crate::http::MAX_CHAT_JSON)
            .await
            .unwrap_or_default();
        match status.as_u16() {
            200..=299 => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
            429 => Err(ChatError::RateLimited(reset)),
            403 | 404 => Err(ChatError::ChannelUnavailable(format!(
                "mattermost {path}: HTTP {status}"
            ))),
            500..=599 => Err(ChatError::Retryable(format!(
                "mattermost {path}: HTTP {status}"
            ))),
            _ => Err(ChatError::Refused(format!(
                "mattermost {path}: HTTP {status} {}",
                text.chars().take(200).collect::<String>()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl ChatApi for MattermostApi {
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
        match status.as_u16() {
            200..=299 => Ok(()),
            404 | 410 => Err(ChatError::ResponseUrlGone(format!("HTTP {status}"))),
            429 => Err(ChatError::RateLimited(1)),
            500..=599 => Err(ChatError::Retryable(format!("response_url: HTTP {status}"))),
            _ => Err(ChatError::Refused(format!("response_url: HTTP {status}"))),
        }
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
        let mut body = json!({"channel_id": channel.as_str(), "message": msg.text});
        if let Some(a) = &msg.attachments {
            body["props"] = json!({"attachments": a});
        }
        let post = self
            .call(reqwest::Method::POST, "posts", Some(body))
            .await?;
        Ok(post["id"]
            .as_str()
            .filter(|id| is_id(id))
            .map(MessageTs::new))
    }

    async fn update_message(
        &self,
        _channel: &ChannelId,
        post: &MessageTs,
        msg: &OutgoingMessage,
    ) -> Result<(), ChatError> {
        if !is_id(post.as_str()) {
            return Err(ChatError::Refused("not a Mattermost post id".into()));
        }
        // `props` replaces the post's props: the attachments (the buttons) go with the state
        // that no longer offers them.
        let attachments = msg.attachments.clone().unwrap_or_else(|| json!([]));
        let body = json!({"message": msg.text, "props": {"attachments": attachments}});
        self.call(
            reqwest::Method::PUT,
            &format!("posts/{}/patch", post.as_str()),
            Some(body),
        )
        .await
        .map(|_| ())
    }

    async fn post_ephemeral(
        &self,
        channel: &ChannelId,
        user: &ChatUserId,
        msg: &OutgoingMessage,
    ) -> Result<(), ChatError> {
        let body = json!({
            "user_id": user.as_str(),
            "post": {"channel_id": channel.as_str(), "message": msg.text},
        });
        self.call(reqwest::Method::POST, "posts/ephemeral", Some(body))
            .await
            .map(|_| ())
    }

    async fn upload_file(
        &self,
        _channel: &ChannelId,
        _file: &FileAttachment,
        _initial_comment: &str,
    ) -> Result<(), ChatError> {
        // Mattermost replies are shortened with a link to the log instead (render::mattermost
        // never attaches a file).
        Err(ChatError::Refused(
            "file uploads are not used on Mattermost".into(),
        ))
    }

    async fn open_dm(&self, user: &ChatUserId) -> Result<ChannelId, ChatError> {
        let me = self.call(reqwest::Method::GET, "users/me", None).await?;
        let me = me["id"]
            .as_str()
            .ok_or_else(|| ChatError::Refused("mattermost users/me: no id".into()))?
            .to_owned();
        let ch = self
            .call(
                reqwest::Method::POST,
                "channels/direct",
                Some(json!([me, user.as_str()])),
            )
            .await?;
        ch["id"]
            .as_str()
            .map(ChannelId::new)
            .ok_or_else(|| ChatError::Refused("mattermost channels/direct: no id".into()))
    }
}

/// A Mattermost id (26 lowercase letters and digits); what goes into an API path is checked.
fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_bot_token_there_is_no_channel_route() {
        let api = MattermostApi::new(Some("https://mm.example.com".into()), None);
        let r = api
            .post_message(&ChannelId::new("abc"), &OutgoingMessage::in_channel("hi"))
            .await;
        assert_eq!(r, Err(ChatError::NoToken));
    }
}
