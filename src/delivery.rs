//! Getting a message to the channel of a run: through `response_url` while Slack still takes
//! it (younger than 30 minutes, fewer than 5 uses, counted in the run record), else through
//! the Web API to the channel. Owned by the completion issue; the dispatcher uses it for its
//! follow-ups so that every use of `response_url` is counted in one place.

use crate::chat::{ChatApi, ChatError, OutgoingMessage};
use crate::clock::Clock;
use crate::run::{Platform, RunRequest};
use crate::store::{RunStore, StoreError};
use std::sync::Arc;

/// Slack's documented limits for one `response_url`.
pub const RESPONSE_URL_MAX_AGE_SECS: u64 = 30 * 60;
pub const RESPONSE_URL_MAX_USES: u32 = 5;

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
    pub store: Arc<dyn RunStore>,
    pub clock: Arc<dyn Clock>,
}

impl Deliverer {
    fn api(&self, platform: Platform) -> &dyn ChatApi {
        match platform {
            Platform::Slack => self.slack.as_ref(),
            Platform::Mattermost => self.mattermost.as_ref(),
        }
    }

    /// Deliver `msg` for the run of `request` (which must already be stored).
    pub async fn deliver(
        &self,
        request: &RunRequest,
        msg: &OutgoingMessage,
    ) -> Result<Route, DeliveryError> {
        let api = self.api(request.platform);
        let age = self.clock.now().saturating_sub(request.received_at);
        if age < RESPONSE_URL_MAX_AGE_SECS
            && self
                .store
                .take_response_url_use(&request.request_id, RESPONSE_URL_MAX_USES)
                .await?
                .is_some()
        {
            match api.respond(&request.response_url, msg).await {
                Ok(()) => return Ok(Route::ResponseUrl),
                Err(ChatError::ResponseUrlGone(reason)) => {
                    tracing::info!(%reason, "response_url refused; posting to the channel");
                }
                Err(e) => return Err(e.into()),
            }
        }
        api.post_message(&request.channel_id, msg).await?;
        Ok(Route::Channel)
    }
}
