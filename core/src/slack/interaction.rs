//! Slack interaction payloads: the `application/x-www-form-urlencoded` body Slack POSTs to the
//! interactivity request URL when someone clicks a button, one field `payload` holding JSON.
//! Parsed (after the signature check, which covers the raw body) into our own type; only
//! `block_actions` is acted on, every other `type` is acknowledged and ignored.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct RawForm {
    payload: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawPayload {
    #[serde(rename = "type")]
    kind: Option<String>,
    team: Option<RawTeam>,
    user: Option<RawUser>,
    channel: Option<RawChannel>,
    container: Option<RawContainer>,
    response_url: Option<String>,
    trigger_id: Option<String>,
    #[serde(default)]
    actions: Vec<RawAction>,
    // `token` (the deprecated verification token) is deliberately not kept, nor `message`
    // (the card as Slack shows it: we know what we posted).
}

#[derive(Debug, Default, Deserialize)]
struct RawTeam {
    id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawUser {
    id: Option<String>,
    username: Option<String>,
    name: Option<String>,
    team_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawChannel {
    id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawContainer {
    #[serde(rename = "type")]
    kind: Option<String>,
    message_ts: Option<String>,
    channel_id: Option<String>,
    #[serde(default)]
    is_ephemeral: bool,
}

#[derive(Debug, Default, Deserialize)]
struct RawAction {
    action_id: Option<String>,
    value: Option<String>,
    action_ts: Option<String>,
}

/// One button press in a `block_actions` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonPress {
    pub action_id: String,
    /// What we put in the button (a run id); empty when the element has none.
    pub value: String,
    /// Slack's time of this press: two clicks differ, a resent payload does not.
    pub action_ts: String,
}

/// A `block_actions` payload from a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockActions {
    /// The workspace (for an org-wide install, the clicker's own workspace).
    pub team_id: String,
    pub user_id: String,
    pub user_name: String,
    pub channel_id: String,
    pub response_url: String,
    pub trigger_id: String,
    /// The clicked message's `ts`, when the button was in a (non-ephemeral) message.
    pub message_ts: Option<String>,
    pub actions: Vec<ButtonPress>,
}

/// What a signed POST to the interactivity URL can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    BlockActions(Box<BlockActions>),
    /// Any other payload type (`view_submission`, `shortcut`, …): not ours to handle.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    #[error("malformed form body: {0}")]
    Malformed(String),
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    #[error("missing field {0}")]
    Missing(&'static str),
}

fn required(v: Option<String>, name: &'static str) -> Result<String, InteractionError> {
    v.filter(|s| !s.trim().is_empty())
        .ok_or(InteractionError::Missing(name))
}

/// Parse an interaction form body.
pub fn parse(body: &[u8]) -> Result<Interaction, InteractionError> {
    let form: RawForm = serde_urlencoded::from_bytes(body)
        .map_err(|e| InteractionError::Malformed(e.to_string()))?;
    let payload = required(form.payload, "payload")?;
    let raw: RawPayload =
        serde_json::from_str(&payload).map_err(|e| InteractionError::NotJson(e.to_string()))?;
    let kind = required(raw.kind, "type")?;
    if kind != "block_actions" {
        return Ok(Interaction::Other(kind));
    }
    let user = raw.user.unwrap_or_default();
    let container = raw.container.unwrap_or_default();
    let team_id = raw
        .team
        .and_then(|t| t.id)
        .filter(|t| !t.is_empty())
        .or(user.team_id);
    let channel_id = raw
        .channel
        .and_then(|c| c.id)
        .or(container.channel_id.clone());
    let in_message = container
        .kind
        .as_deref()
        .is_some_and(|k| k.starts_with("message"))
        && !container.is_ephemeral;
    let mut actions = Vec::new();
    for a in raw.actions {
        actions.push(ButtonPress {
            action_id: required(a.action_id, "actions.action_id")?,
            value: a.value.unwrap_or_default(),
            action_ts: required(a.action_ts, "actions.action_ts")?,
        });
    }
    Ok(Interaction::BlockActions(Box::new(BlockActions {
        team_id: required(team_id, "team.id")?,
        user_id: required(user.id, "user.id")?,
        user_name: user.username.or(user.name).unwrap_or_default(),
        channel_id: required(channel_id, "channel.id")?,
        response_url: required(raw.response_url, "response_url")?,
        trigger_id: raw.trigger_id.unwrap_or_default(),
        message_ts: container.message_ts.filter(|_| in_message),
        actions,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's documented example (tests/fixtures/slack/block_actions.json).
    const EXAMPLE: &str = include_str!("../../../tests/fixtures/slack/block_actions.json");

    fn form(json: &str) -> Vec<u8> {
        serde_urlencoded::to_string([("payload", json)])
            .unwrap()
            .into_bytes()
    }

    #[test]
    fn slacks_example_parses() {
        let Interaction::BlockActions(b) = parse(&form(EXAMPLE)).unwrap() else {
            panic!("not block_actions");
        };
        assert_eq!(b.team_id, "T9TK3CUKW");
        assert_eq!(b.user_id, "UA8RXUSPL");
        assert_eq!(b.user_name, "jtorrance");
        assert_eq!(b.channel_id, "CBR2V3XEX");
        assert_eq!(
            b.response_url,
            "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209"
        );
        assert_eq!(b.message_ts.as_deref(), Some("1548261231.000200"));
        assert_eq!(
            b.actions,
            vec![ButtonPress {
                action_id: "WaXA".into(),
                value: "click_me_123".into(),
                action_ts: "1548426417.840180".into(),
            }]
        );
    }

    #[test]
    fn other_types_are_not_ours_and_broken_bodies_say_what_is_wrong() {
        let other = r#"{"type":"view_submission","team":{"id":"T1"}}"#;
        assert_eq!(
            parse(&form(other)).unwrap(),
            Interaction::Other("view_submission".into())
        );
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        v["user"] = serde_json::json!(null);
        assert_eq!(
            parse(&form(&v.to_string())),
            Err(InteractionError::Missing("user.id"))
        );
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        v.as_object_mut().unwrap().remove("response_url");
        assert_eq!(
            parse(&form(&v.to_string())),
            Err(InteractionError::Missing("response_url"))
        );
        assert_eq!(
            parse(b"text=hello"),
            Err(InteractionError::Missing("payload"))
        );
        assert!(matches!(
            parse(&form("{not json")),
            Err(InteractionError::NotJson(_))
        ));
        assert!(matches!(
            parse(b"payload=a&payload=b"),
            Err(InteractionError::Malformed(_))
        ));
    }

    #[test]
    fn an_org_wide_install_names_the_clickers_workspace() {
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        v["team"] = serde_json::json!(null);
        v["user"]["team_id"] = serde_json::json!("T0OTHER");
        let Interaction::BlockActions(b) = parse(&form(&v.to_string())).unwrap() else {
            panic!("not block_actions");
        };
        assert_eq!(b.team_id, "T0OTHER");
    }
}
