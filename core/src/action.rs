//! A button press on a run's card, as the ingress queues it for the dispatcher
//! (`ActionMessage`): its own versioned message type on the run queue, next to `RunRequest`.
//!
//! Why a separate type rather than a `kind` on `RunRequest`: a `RunRequest` is the run itself
//! (stored in the run record, turned into pipeline variables), and a click has no job, input
//! or command. And it must never be mistaken for a command: the message has no `version`
//! field (its version is `action_version`), so a dispatcher that predates it refuses it as a
//! malformed run request (`BadMessage::NoVersion`) instead of creating a pipeline for it.

use crate::ids::{ChannelId, ChatUserId, RequestId, TeamId};
use crate::run::{ActionKind, CardRef, Platform};
use serde::{Deserialize, Serialize};

/// The value of the `message` field that marks a queued click.
pub const ACTION_MESSAGE: &str = "action";
/// The version of `ActionMessage` this code writes and reads.
pub const ACTION_MESSAGE_VERSION: u32 = 1;

/// One click on a card's button, authenticated by the ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionMessage {
    /// Always [`ACTION_MESSAGE`]: what tells this message from a `RunRequest` on the queue.
    pub message: String,
    pub action_version: u32,
    /// The click's identity (Slack's `action_ts` + user + value, hashed): a redelivery of the
    /// same click carries the same key, a second click another one.
    pub key: String,
    pub kind: ActionKind,
    /// The run whose card was clicked (the button's value).
    pub run: RequestId,
    pub platform: Platform,
    pub team_id: TeamId,
    pub user_id: ChatUserId,
    pub user_name: String,
    pub channel_id: ChannelId,
    /// The click's own `response_url`: it replaces the clicked card, or answers the clicker.
    pub response_url: String,
    /// The clicked card, when the platform said which message it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardRef>,
    /// Unix seconds when the ingress received the click.
    pub received_at: u64,
    /// The base URL the ingress was reached at (for a connect link's callback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base: Option<String>,
}

/// Why a queued body that says it is a click cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ActionMessageError {
    #[error("action message version {0} is not supported (this dispatcher reads {ACTION_MESSAGE_VERSION})")]
    Version(u64),
    #[error("malformed action message")]
    Malformed(#[source] serde_json::Error),
}

impl ActionMessage {
    /// The click in a queued body: `Ok(None)` when the body is not a click (a `RunRequest`, or
    /// not JSON at all: the run-request parser reports that).
    pub fn from_body(body: &str) -> Result<Option<ActionMessage>, ActionMessageError> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
            return Ok(None);
        };
        if v.get("message").and_then(|m| m.as_str()) != Some(ACTION_MESSAGE) {
            return Ok(None);
        }
        match v.get("action_version").and_then(|n| n.as_u64()) {
            Some(n) if n == u64::from(ACTION_MESSAGE_VERSION) => {}
            Some(n) => return Err(ActionMessageError::Version(n)),
            None => return Err(ActionMessageError::Version(0)),
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(ActionMessageError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click() -> ActionMessage {
        ActionMessage {
            message: ACTION_MESSAGE.into(),
            action_version: ACTION_MESSAGE_VERSION,
            key: "k1".into(),
            kind: ActionKind::Cancel,
            run: RequestId::new("r1"),
            platform: Platform::Slack,
            team_id: TeamId::new("T1"),
            user_id: ChatUserId::new("U1"),
            user_name: "alice".into(),
            channel_id: ChannelId::new("C1"),
            response_url: "https://hooks.slack.com/actions/T1/1/x".into(),
            card: None,
            received_at: 1,
            public_base: None,
        }
    }

    #[test]
    fn a_click_round_trips_and_commands_are_not_clicks() {
        let body = serde_json::to_string(&click()).unwrap();
        assert_eq!(ActionMessage::from_body(&body).unwrap(), Some(click()));
        assert!(ActionMessage::from_body(r#"{"version":1,"job":"x"}"#)
            .unwrap()
            .is_none());
        assert!(ActionMessage::from_body("not json").unwrap().is_none());
    }

    #[test]
    fn unknown_versions_and_broken_clicks_are_refused() {
        let mut v = serde_json::to_value(click()).unwrap();
        v["action_version"] = 2.into();
        assert!(matches!(
            ActionMessage::from_body(&v.to_string()),
            Err(ActionMessageError::Version(2))
        ));
        let broken = r#"{"message":"action","action_version":1,"kind":"explode"}"#;
        assert!(matches!(
            ActionMessage::from_body(broken),
            Err(ActionMessageError::Malformed(_))
        ));
    }

    #[test]
    fn a_click_has_no_version_field_so_old_dispatchers_refuse_it() {
        let v = serde_json::to_value(click()).unwrap();
        assert!(v.get("version").is_none(), "{v}");
    }
}
