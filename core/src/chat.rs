//! What we say in a channel, independent of the platform, and the trait through which it is
//! said. `slack::api` (Slack's `response_url` and Web API) and `mattermost` implement it.

use crate::ids::{ChannelId, ChatUserId, MessageTs};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Everyone in the channel sees it.
    #[default]
    InChannel,
    /// Only the user who typed the command sees it.
    Ephemeral,
}

/// A message ready for a platform: `text` is always set (notification and fallback text);
/// `blocks` (Slack Block Kit) and `attachments` (Mattermost/Slack secondary attachments) are
/// the platform's rich form when the renderer made one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct OutgoingMessage {
    pub visibility: Visibility,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<serde_json::Value>,
    /// The full output, to upload as a file when the message had to be shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileAttachment>,
    /// Through a `response_url`: replace the message it belongs to (a run's card) instead of
    /// posting a new one (Slack's `replace_original`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_original: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttachment {
    pub filename: String,
    pub title: String,
    pub content: String,
}

impl OutgoingMessage {
    pub fn in_channel(text: impl Into<String>) -> Self {
        Self {
            visibility: Visibility::InChannel,
            text: text.into(),
            ..Self::default()
        }
    }

    pub fn ephemeral(text: impl Into<String>) -> Self {
        Self {
            visibility: Visibility::Ephemeral,
            text: text.into(),
            ..Self::default()
        }
    }

    /// The JSON body of a slash-command response (immediate answer or `response_url` post),
    /// as Slack and Mattermost both read it.
    pub fn to_response_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "response_type": match self.visibility {
                Visibility::InChannel => "in_channel",
                Visibility::Ephemeral => "ephemeral",
            },
            "text": self.text,
        });
        if let Some(b) = &self.blocks {
            v["blocks"] = b.clone();
        }
        if let Some(a) = &self.attachments {
            v["attachments"] = a.clone();
        }
        if self.replace_original {
            v["replace_original"] = serde_json::Value::Bool(true);
        }
        v
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChatError {
    /// The `response_url` no longer takes messages (expired, used up, or unknown).
    #[error("response_url no longer accepts messages: {0}")]
    ResponseUrlGone(String),
    /// Rate limited; retry after this many seconds.
    #[error("rate limited, retry after {0} s")]
    RateLimited(u64),
    /// The bot is not in the channel / the channel is gone: try another route.
    #[error("cannot post to the channel: {0}")]
    ChannelUnavailable(String),
    /// No bot token configured, so no Web API.
    #[error("no bot token configured")]
    NoToken,
    /// Network trouble or 5xx: may work later.
    #[error("chat platform unavailable: {0}")]
    Retryable(String),
    /// Anything else the platform refused.
    #[error("chat platform refused the message: {0}")]
    Refused(String),
}

#[async_trait::async_trait]
pub trait ChatApi: Send + Sync {
    /// Post to a slash command's `response_url`.
    async fn respond(&self, response_url: &str, msg: &OutgoingMessage) -> Result<(), ChatError>;
    /// Post to a channel through the Web API (`chat.postMessage`).
    async fn post_message(
        &self,
        channel: &ChannelId,
        msg: &OutgoingMessage,
    ) -> Result<(), ChatError>;
    /// Upload a file into a channel (`files.getUploadURLExternal` +
    /// `files.completeUploadExternal`).
    async fn upload_file(
        &self,
        channel: &ChannelId,
        file: &FileAttachment,
        initial_comment: &str,
    ) -> Result<(), ChatError>;
    /// The id of a direct-message channel with the user (`conversations.open`).
    async fn open_dm(&self, user: &ChatUserId) -> Result<ChannelId, ChatError>;

    /// Post to a channel like `post_message`, and say which message it became (Slack's
    /// `ts`), so it can be updated later. `None` where the platform cannot say.
    async fn post_card(
        &self,
        channel: &ChannelId,
        msg: &OutgoingMessage,
    ) -> Result<Option<MessageTs>, ChatError> {
        self.post_message(channel, msg).await.map(|()| None)
    }

    /// Show `msg` to `user` alone in `channel` (Mattermost's `POST /api/v4/posts/ephemeral`,
    /// how a Mattermost click is answered: its actions have no `response_url`). Platforms
    /// without it refuse.
    async fn post_ephemeral(
        &self,
        channel: &ChannelId,
        user: &ChatUserId,
        msg: &OutgoingMessage,
    ) -> Result<(), ChatError> {
        let _ = (channel, user, msg);
        Err(ChatError::Refused(
            "this platform's ephemeral messages are not sent here".into(),
        ))
    }

    /// Replace a message the bot posted (`chat.update`). Platforms without it refuse.
    async fn update_message(
        &self,
        channel: &ChannelId,
        ts: &MessageTs,
        msg: &OutgoingMessage,
    ) -> Result<(), ChatError> {
        let _ = (channel, ts, msg);
        Err(ChatError::Refused(
            "this platform's messages cannot be updated here".into(),
        ))
    }
}
