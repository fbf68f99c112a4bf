//! Getting a message to the channel of a run: through `response_url` while Slack still takes
//! it (younger than 30 minutes, fewer than 5 uses, counted in the run record), else through
//! the Web API to the channel. Owned by the completion issue; the dispatcher uses it for its
//! follow-ups so that every use of `response_url` is counted in one place.
//!
//! Fallbacks, in order: `response_url` answering any error → the channel; the channel
//! answering `not_in_channel`/`channel_not_found` → a direct message to the user. Rate limits
//! (429 `Retry-After`) are waited out when short (`MAX_RATE_LIMIT_WAIT_SECS`), a bounded
//! number of times; longer ones fail the delivery so the caller can try again later.

use crate::chat::{ChatApi, ChatError, OutgoingMessage, Visibility};
use crate::clock::Clock;
use crate::config::{ConfigError, Env, SecretSource};
use crate::ids::ChannelId;
use crate::mattermost::actions::ButtonSettings;
use crate::run::{Platform, RunRequest};
use crate::secret::Secret;
use crate::slack::DEFAULT_API_URL;
use crate::store::{RunStore, StoreError};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Slack's documented limits for one `response_url`.
pub const RESPONSE_URL_MAX_AGE_SECS: u64 = 30 * 60;
pub const RESPONSE_URL_MAX_USES: u32 = 5;
/// The longest `Retry-After` we wait out inside one invocation.
pub const MAX_RATE_LIMIT_WAIT_SECS: u64 = 5;
/// How many times one call is retried after a 429.
pub const MAX_RATE_LIMIT_RETRIES: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a message went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ResponseUrl,
    Channel,
    DirectMessage,
}

pub struct Deliverer {
    pub slack: Arc<dyn ChatApi>,
    pub mattermost: Arc<dyn ChatApi>,
    /// Buttons on Mattermost cards (`None`: text-only cards, as before).
    pub mattermost_buttons: Option<ButtonSettings>,
    pub store: Arc<dyn RunStore>,
    pub clock: Arc<dyn Clock>,
}

/// Where messages leave for each platform, read the same way by the dispatcher and
/// completion: Slack's Web API (and bot token), Mattermost's site (and bot token).
#[derive(Debug, Clone)]
pub struct ChatSettings {
    pub slack_api_url: String,
    pub slack_bot_token: Option<Secret>,
    pub mattermost_url: Option<String>,
    pub mattermost_bot_token: Option<Secret>,
    /// `MATTERMOST_ACTIONS_SECRET`: buttons on Mattermost cards, signed with it.
    pub mattermost_buttons: Option<ButtonSettings>,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            slack_api_url: DEFAULT_API_URL.to_owned(),
            slack_bot_token: None,
            mattermost_url: None,
            mattermost_bot_token: None,
            mattermost_buttons: None,
        }
    }
}

impl ChatSettings {
    /// The variables `from_env` reads (part of each function's `ENV`).
    pub const ENV: &[&str] = &[
        "SLACK_BOT_TOKEN",
        "SLACK_BOT_TOKEN_PARAM",
        "SLACK_API_URL",
        "MATTERMOST_URL",
        "MATTERMOST_BOT_TOKEN",
        "MATTERMOST_BOT_TOKEN_PARAM",
        "MATTERMOST_ACTIONS_SECRET",
        "MATTERMOST_ACTIONS_SECRET_PARAM",
        "PUBLIC_BASE_URL",
    ];

    pub async fn from_env(env: &Env, secrets: &dyn SecretSource) -> Result<Self, ConfigError> {
        Ok(Self {
            slack_api_url: env.or("SLACK_API_URL", DEFAULT_API_URL),
            slack_bot_token: env.secret("SLACK_BOT_TOKEN", secrets).await?,
            mattermost_url: env.get("MATTERMOST_URL").map(str::to_owned),
            mattermost_bot_token: env.secret("MATTERMOST_BOT_TOKEN", secrets).await?,
            mattermost_buttons: ButtonSettings::from_env(env, secrets).await?,
        })
    }
}

/// Run `call`, waiting out short rate limits.
pub(crate) async fn with_rate_limit<T, F, Fut>(
    what: &str,
    waits: bool,
    mut call: F,
) -> Result<T, ChatError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ChatError>>,
{
    let mut retries = 0;
    loop {
        match call().await {
            Err(ChatError::RateLimited(secs))
                if waits
                    && retries < MAX_RATE_LIMIT_RETRIES
                    && secs <= MAX_RATE_LIMIT_WAIT_SECS =>
            {
                retries += 1;
                tracing::info!(what, retry_after = secs, "rate limited; waiting");
                tokio::time::sleep(Duration::from_secs(secs.max(1))).await;
            }
            other => return other,
        }
    }
}

impl Deliverer {
    fn api(&self, platform: Platform) -> &dyn ChatApi {
        match platform {
            Platform::Slack => self.slack.as_ref(),
            Platform::Mattermost => self.mattermost.as_ref(),
        }
    }

    /// Whether the command's `response_url` is there and young enough to take messages.
    pub fn response_url_usable(&self, request: &RunRequest) -> bool {
        let age = self.clock.now().saturating_sub(request.received_at);
        !request.response_url.is_empty() && age < RESPONSE_URL_MAX_AGE_SECS
    }

    /// Whether `response_url` may still be used, taking one use when it may.
    async fn take_response_url(&self, request: &RunRequest) -> Result<bool, StoreError> {
        if !self.response_url_usable(request) {
            return Ok(false);
        }
        Ok(self
            .store
            .take_response_url_use(&request.request_id, RESPONSE_URL_MAX_USES)
            .await?
            .is_some())
    }

    /// Deliver `msg` for the run of `request` (which must already be stored), counting the
    /// `response_url` use in the store. A file in the message is uploaded to the same
    /// conversation afterwards where the bot can (see `deliver_taken`).
    pub async fn deliver(
        &self,
        request: &RunRequest,
        msg: &OutgoingMessage,
    ) -> Result<Route, DeliveryError> {
        let taken = self.take_response_url(request).await?;
        self.deliver_taken(request, msg, taken, true).await
    }

    /// Deliver with the `response_url` use already taken (`taken`) or not available, e.g.
    /// folded into the write that claimed the reply. `waits`: short rate limits are waited
    /// out (background); on the webhook path a 429 fails the delivery at once instead.
    pub async fn deliver_taken(
        &self,
        request: &RunRequest,
        msg: &OutgoingMessage,
        taken: bool,
        waits: bool,
    ) -> Result<Route, DeliveryError> {
        let api = self.api(request.platform);
        let mut done = None;
        if taken {
            match with_rate_limit("response_url", waits, || {
                api.respond(&request.response_url, msg)
            })
            .await
            {
                Ok(()) => done = Some((Route::ResponseUrl, request.channel_id.clone())),
                Err(e) => tracing::warn!(
                    request_id = %request.request_id,
                    error = %e,
                    "response_url refused the message; posting to the channel instead"
                ),
            }
        }
        let (route, channel) = match done {
            Some(d) => d,
            None => self.post_to_channel(api, request, msg, waits).await?,
        };
        if let Some(file) = &msg.file {
            let comment = format!("Full output: {}", file.title);
            if let Err(e) = with_rate_limit("file upload", waits, || {
                api.upload_file(&channel, file, &comment)
            })
            .await
            {
                tracing::warn!(
                    request_id = %request.request_id,
                    channel = %channel,
                    error = %e,
                    "could not upload the full output as a file"
                );
            }
        }
        Ok(route)
    }

    /// Deliver without the run store (it may be the thing that is down): `response_url` while
    /// it is young enough, uncounted (the last word on a run whose record cannot be written),
    /// else the channel. Used only when the store failed, so the person still hears why.
    pub async fn deliver_unrecorded(
        &self,
        request: &RunRequest,
        msg: &OutgoingMessage,
    ) -> Result<Route, DeliveryError> {
        let api = self.api(request.platform);
        let age = self.clock.now().saturating_sub(request.received_at);
        if !request.response_url.is_empty() && age < RESPONSE_URL_MAX_AGE_SECS {
            match with_rate_limit("response_url", true, || {
                api.respond(&request.response_url, msg)
            })
            .await
            {
                Ok(()) => return Ok(Route::ResponseUrl),
                Err(e) => tracing::warn!(
                    request_id = %request.request_id,
                    error = %e,
                    "response_url refused the message; posting to the channel instead"
                ),
            }
        }
        Ok(self.post_to_channel(api, request, msg, true).await?.0)
    }

    async fn post_to_channel(
        &self,
        api: &dyn ChatApi,
        request: &RunRequest,
        msg: &OutgoingMessage,
        waits: bool,
    ) -> Result<(Route, ChannelId), DeliveryError> {
        let channel = &request.channel_id;
        if msg.visibility == Visibility::Ephemeral {
            // Only the person may see it: without response_url that is a direct message, never
            // a post everyone in the channel reads.
            let dm = api.open_dm(&request.user_id).await?;
            with_rate_limit("dm", waits, || api.post_message(&dm, msg)).await?;
            return Ok((Route::DirectMessage, dm));
        }
        match with_rate_limit("post", waits, || api.post_message(channel, msg)).await {
            Ok(()) => Ok((Route::Channel, channel.clone())),
            Err(ChatError::ChannelUnavailable(reason)) => {
                tracing::error!(
                    request_id = %request.request_id,
                    channel = %channel,
                    %reason,
                    "cannot post in the channel (invite the app to it); sending the reply to \
                     the user by direct message instead"
                );
                let dm = api.open_dm(&request.user_id).await?;
                let note = dm_note(request, &reason, msg);
                with_rate_limit("dm", waits, || api.post_message(&dm, &note)).await?;
                Ok((Route::DirectMessage, dm))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The message, prefixed with why it comes by direct message.
fn dm_note(request: &RunRequest, reason: &str, msg: &OutgoingMessage) -> OutgoingMessage {
    let why = match request.platform {
        Platform::Slack => format!(
            "I could not post in <#{}> ({reason}: the app is not in that channel), so here is \
             the reply to your command.",
            request.channel_id
        ),
        Platform::Mattermost => format!(
            "I could not post in ~{} ({reason}), so here is the reply to your command.",
            request.channel_name
        ),
    };
    let mut out = msg.clone();
    out.text = format!("{why}\n{}", msg.text);
    if let Some(Value::Array(blocks)) = &mut out.blocks {
        blocks.insert(
            0,
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": why}]}),
        );
    }
    out
}
