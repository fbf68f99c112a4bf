//! Mattermost buttons on a run's card: the signed `context` each button carries, the card's
//! `props.attachments[].actions[]`, and the request Mattermost POSTs when one is clicked,
//! parsed at the edge into our own type.
//!
//! Mattermost does not sign what it sends to an integration URL (no header, no token), so
//! every button's `context` carries `sig`: hex HMAC-SHA256, keyed with
//! `MATTERMOST_ACTIONS_SECRET`, over the run, the action, the run's team and the card's
//! channel. A click is taken only when the signature matches the context it came with and the
//! channel Mattermost says the post is in: a forged, altered or moved button is refused.
//! What the signature cannot prove is who clicked: `user_id` is Mattermost's word (README,
//! "Buttons on Mattermost").
//!
//! Buttons are off (the card is text only, as before) without the secret, or without a URL
//! Mattermost can reach (`PUBLIC_BASE_URL`, else the base the command came to): never a
//! button that cannot work.

use crate::card::Card;
use crate::chat::OutgoingMessage;
use crate::config::{ConfigError, Env, SecretSource};
use crate::ids::{ChannelId, ChatUserId, MessageTs, RequestId, TeamId};
use crate::run::{ActionKind, Platform};
use crate::secret::Secret;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Where Mattermost POSTs a click (the buttons' `integration.url`, under the ingress's base).
pub const MATTERMOST_INTERACTIONS_PATH: &str = "/mattermost/interactions";

/// What the signature is over starts with this, so a MAC made for anything else never
/// verifies here (and the format can change with a new version).
const SIGNED_PREFIX: &[u8] = b"chatops/mattermost-action/v1";

/// The key that signs (and checks) every button's context. Never printed.
#[derive(Debug, Clone)]
pub struct ActionSigner {
    key: Secret,
}

/// What one button is bound to: these, and nothing else, are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub run: &'a str,
    pub action: ActionKind,
    /// The run's team (the one its command came from).
    pub team: &'a str,
    /// The channel the card is in.
    pub channel: &'a str,
}

impl ActionSigner {
    /// `None` for an empty key: buttons off rather than signed with nothing.
    pub fn new(key: Secret) -> Option<Self> {
        (!key.expose().trim().is_empty()).then_some(Self { key })
    }

    fn mac(&self, b: &Binding<'_>) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.key.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        // Length-prefixed, so no two different bindings write the same bytes.
        for part in [
            SIGNED_PREFIX,
            b.run.as_bytes(),
            b.action.as_str().as_bytes(),
            b.team.as_bytes(),
            b.channel.as_bytes(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The `sig` of a button bound to `b`: 64 lowercase hex digits.
    pub fn sign(&self, b: &Binding<'_>) -> String {
        hex::encode(self.mac(b).finalize().into_bytes())
    }

    /// Whether `sig` is ours for `b`, compared in constant time (`Mac::verify_slice`).
    pub fn verify(&self, b: &Binding<'_>, sig: &str) -> bool {
        if sig.len() != 64 || !sig.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return false;
        }
        match hex::decode(sig) {
            Ok(bytes) => self.mac(b).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

/// The buttons' settings, read once at cold start by each function that renders cards
/// (dispatcher, completion): the signing key and the public base URL override.
#[derive(Debug, Clone)]
pub struct ButtonSettings {
    pub signer: ActionSigner,
    /// `PUBLIC_BASE_URL` (a custom domain in front of the ingress); otherwise the base the
    /// run's command came to (`RunRequest::public_base`).
    pub public_base_url: Option<String>,
}

impl ButtonSettings {
    /// The variables `from_env` reads (part of each function's `ENV`).
    pub const ENV: &'static [&'static str] = &[
        "MATTERMOST_ACTIONS_SECRET",
        "MATTERMOST_ACTIONS_SECRET_PARAM",
        "PUBLIC_BASE_URL",
    ];

    /// `None` without `MATTERMOST_ACTIONS_SECRET` (said once in the log when Mattermost is
    /// configured, so a deploy without buttons is visible, not broken).
    pub async fn from_env(
        env: &Env,
        secrets: &dyn SecretSource,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(signer) = signer_from_env(env, secrets).await? else {
            return Ok(None);
        };
        let public_base_url = match env.get("PUBLIC_BASE_URL") {
            None => None,
            Some(u) => {
                let u = u.trim().trim_end_matches('/');
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(ConfigError::Invalid {
                        name: "PUBLIC_BASE_URL".into(),
                        reason: "must start with https://".into(),
                    });
                }
                Some(u.to_owned())
            }
        };
        Ok(Some(Self {
            signer,
            public_base_url,
        }))
    }

    /// Where Mattermost must POST a click of a card whose command came to `request_base`.
    pub fn url(&self, request_base: Option<&str>) -> Option<String> {
        let base = self
            .public_base_url
            .as_deref()
            .or(request_base)
            .map(|b| b.trim().trim_end_matches('/'))
            .filter(|b| b.starts_with("https://") || b.starts_with("http://"))?;
        Some(format!("{base}{MATTERMOST_INTERACTIONS_PATH}"))
    }
}

/// The signing key from `MATTERMOST_ACTIONS_SECRET` (or `_PARAM`); `None` (buttons off, said
/// in the log when Mattermost is in use) without it.
pub async fn signer_from_env(
    env: &Env,
    secrets: &dyn SecretSource,
) -> Result<Option<ActionSigner>, ConfigError> {
    let signer = env
        .secret("MATTERMOST_ACTIONS_SECRET", secrets)
        .await?
        .and_then(ActionSigner::new);
    let mattermost_in_use = [
        "MATTERMOST_URL",
        "MATTERMOST_TOKEN",
        "MATTERMOST_TOKEN_PARAM",
    ]
    .iter()
    .any(|v| env.get(v).is_some());
    if signer.is_none() && mattermost_in_use {
        tracing::info!(
            "Mattermost buttons are off: MATTERMOST_ACTIONS_SECRET (or its _PARAM) is not set, \
             so Mattermost cards are text only"
        );
    }
    Ok(signer)
}

/// Where a card is, as its buttons are bound: the run's team, the card's channel, and the
/// base URL the run's command came to.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub team: &'a TeamId,
    pub channel: &'a ChannelId,
    pub public_base: Option<&'a str>,
}

/// The card as Mattermost shows it: its text, and its buttons as message attachment actions
/// when `settings` allow (else exactly the text-only card).
pub fn render_card(
    card: &Card,
    settings: Option<&ButtonSettings>,
    place: Place<'_>,
) -> OutgoingMessage {
    let mut msg = card.render(Platform::Mattermost);
    let Some((settings, url)) = settings.and_then(|s| Some((s, s.url(place.public_base)?))) else {
        return msg;
    };
    let actions: Vec<Value> = card
        .buttons()
        .into_iter()
        .map(|kind| action(card, kind, &url, settings, place))
        .collect();
    if !actions.is_empty() {
        msg.attachments = Some(json!([{ "actions": actions }]));
    }
    msg
}

/// Mattermost routes a click by the action's id (`/posts/{id}/actions/{action_id}`, letters
/// and digits only).
pub fn action_id(kind: ActionKind) -> String {
    format!("chatops{}", kind.as_str())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// One button. Its name and style are the Slack button's, so both platforms (and any kind
/// of button added later) read the same; Mattermost has no confirmation step.
fn action(
    card: &Card,
    kind: ActionKind,
    url: &str,
    settings: &ButtonSettings,
    place: Place<'_>,
) -> Value {
    let slack = card.button(kind);
    let name = slack
        .pointer("/text/text")
        .and_then(Value::as_str)
        .unwrap_or(kind.as_str())
        .to_owned();
    let binding = Binding {
        run: card.run.as_str(),
        action: kind,
        team: place.team.as_str(),
        channel: place.channel.as_str(),
    };
    let mut a = json!({
        "id": action_id(kind),
        "type": "button",
        "name": name,
        "integration": {
            "url": url,
            "context": {
                "run": card.run.as_str(),
                "action": kind.as_str(),
                "team": place.team.as_str(),
                "sig": settings.signer.sign(&binding),
            }
        }
    });
    if let Some(style) = slack.get("style").and_then(Value::as_str) {
        a["style"] = json!(style);
    }
    a
}

// ---------------------------------------------------------------------------------------
// The click, as Mattermost POSTs it (`PostActionIntegrationRequest`).

#[derive(Debug, Default, Deserialize)]
struct RawClick {
    user_id: Option<String>,
    user_name: Option<String>,
    channel_id: Option<String>,
    team_id: Option<String>,
    post_id: Option<String>,
    trigger_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    context: Option<Value>,
    // `channel_name`, `team_domain`, `data_source` are not kept: nothing here needs them.
}

/// The context our button carried, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickContext {
    pub run: RequestId,
    pub action: ActionKind,
    /// The run's team, as signed.
    pub team: TeamId,
    pub sig: String,
}

/// One click on one of our buttons, parsed; not yet verified (`Click::verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub user_id: ChatUserId,
    pub user_name: String,
    pub channel_id: ChannelId,
    /// The team of the channel the post is in; `None` in direct and group messages, which
    /// belong to no team.
    pub team_id: Option<TeamId>,
    pub post_id: MessageTs,
    /// Minted by Mattermost for each click (random id, user, time; signed by Mattermost).
    pub trigger_id: String,
    pub context: ClickContext,
}

/// Why a click body is not one of ours. Only for logs and tests: the ingress answers every
/// one the same way (401, no detail), since nothing about the sender is proven yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickError {
    #[error("the body is not a JSON object")]
    NotJson,
    #[error("not a button click (type {0:?})")]
    NotAButton(String),
    #[error("no context, or not ours")]
    NoContext,
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {0} is not a Mattermost id")]
    BadId(&'static str),
    #[error("the context names no action of ours")]
    UnknownAction,
}

/// Mattermost ids are 26 lowercase letters and digits; anything in that alphabet (and of a
/// sane length) is accepted, and nothing else: post ids go into API paths.
fn id(v: Option<String>, name: &'static str) -> Result<String, ClickError> {
    let v = v
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or(ClickError::Missing(name))?;
    if v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ClickError::BadId(name));
    }
    Ok(v)
}

fn context_str(ctx: &Value, key: &str) -> Option<String> {
    ctx.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

/// Parse a click body. The context is read first: a body without one of ours says nothing
/// more about what we expect.
pub fn parse(body: &[u8]) -> Result<Click, ClickError> {
    let raw: RawClick = serde_json::from_slice(body).map_err(|_| ClickError::NotJson)?;
    let ctx = raw.context.as_ref().ok_or(ClickError::NoContext)?;
    let (Some(run), Some(action), Some(team), Some(sig)) = (
        context_str(ctx, "run"),
        context_str(ctx, "action"),
        context_str(ctx, "team"),
        context_str(ctx, "sig"),
    ) else {
        return Err(ClickError::NoContext);
    };
    let action = ActionKind::ALL
        .into_iter()
        .find(|k| k.as_str() == action)
        .ok_or(ClickError::UnknownAction)?;
    match raw.kind.as_deref() {
        None | Some("") | Some("button") => {}
        Some(other) => return Err(ClickError::NotAButton(other.to_owned())),
    }
    Ok(Click {
        user_id: ChatUserId::new(id(raw.user_id, "user_id")?),
        user_name: raw.user_name.unwrap_or_default(),
        channel_id: ChannelId::new(id(raw.channel_id, "channel_id")?),
        team_id: match raw.team_id.filter(|t| !t.trim().is_empty()) {
            None => None,
            Some(t) => Some(TeamId::new(id(Some(t), "team_id")?)),
        },
        post_id: MessageTs::new(id(raw.post_id, "post_id")?),
        trigger_id: raw.trigger_id.unwrap_or_default(),
        context: ClickContext {
            run: RequestId::new(run),
            action,
            team: TeamId::new(team),
            sig,
        },
    })
}

/// Why a parsed click is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    /// The signature does not match the context and channel: forged, altered or moved.
    #[error("the button's signature does not match")]
    BadSignature,
    /// Signed, but Mattermost says the post is in another team than the run's.
    #[error("the click comes from another team than the run's")]
    ForeignTeam,
}

impl Click {
    /// Check the button is ours, unaltered, in the channel it was posted to, and clicked in
    /// the run's team (direct and group messages have none: the channel decides there).
    pub fn verify(&self, signer: &ActionSigner) -> Result<(), Unverified> {
        let binding = Binding {
            run: self.context.run.as_str(),
            action: self.context.action,
            team: self.context.team.as_str(),
            channel: self.channel_id.as_str(),
        };
        if !signer.verify(&binding, &self.context.sig) {
            return Err(Unverified::BadSignature);
        }
        match &self.team_id {
            Some(t) if *t != self.context.team => Err(Unverified::ForeignTeam),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::CardState;
    use crate::notice::Person;

    const RUN: &str = "0123456789abcdef0123456789abcdef";
    const TEAM: &str = "tc3kpbe4m7gm3pc8ih4ge7rkpe";
    const CHANNEL: &str = "fukyvsrqe3fmmfqs8s8ot7aqdo";
    const KEY: &str = "mattermost-actions-test-key";

    fn signer() -> ActionSigner {
        ActionSigner::new(Secret::new(KEY)).unwrap()
    }

    fn binding(action: ActionKind) -> Binding<'static> {
        Binding {
            run: RUN,
            action,
            team: TEAM,
            channel: CHANNEL,
        }
    }

    #[test]
    fn signatures_bind_run_action_team_and_channel() {
        let s = signer();
        let sig = s.sign(&binding(ActionKind::Cancel));
        assert_eq!(sig.len(), 64);
        assert!(s.verify(&binding(ActionKind::Cancel), &sig));
        let other_key = ActionSigner::new(Secret::new("another-key")).unwrap();
        let table: &[(&str, Binding<'_>, &ActionSigner, bool)] = &[
            ("as signed", binding(ActionKind::Cancel), &s, true),
            ("other action", binding(ActionKind::Play), &s, false),
            (
                "other run",
                Binding {
                    run: "0123456789abcdef0123456789abcdee",
                    ..binding(ActionKind::Cancel)
                },
                &s,
                false,
            ),
            (
                "other team",
                Binding {
                    team: "otherteam",
                    ..binding(ActionKind::Cancel)
                },
                &s,
                false,
            ),
            (
                "other channel",
                Binding {
                    channel: "otherchannel",
                    ..binding(ActionKind::Cancel)
                },
                &s,
                false,
            ),
            (
                // Moving bytes between fields does not keep the signature.
                "shifted",
                Binding {
                    team: "tc3kpbe4m7gm3pc8ih4ge7rkp",
                    channel: "efukyvsrqe3fmmfqs8s8ot7aqdo",
                    ..binding(ActionKind::Cancel)
                },
                &s,
                false,
            ),
            ("other key", binding(ActionKind::Cancel), &other_key, false),
        ];
        for (name, b, key, want) in table {
            assert_eq!(key.verify(b, &sig), *want, "{name}");
        }
        for bad in [
            "",
            "00",
            &sig.to_uppercase(),
            &format!("{sig}00"),
            &sig[..63],
            &"z".repeat(64),
        ] {
            assert!(!s.verify(&binding(ActionKind::Cancel), bad), "{bad:?}");
        }
        assert!(ActionSigner::new(Secret::new("  ")).is_none());
    }

    fn body(ctx: Value) -> Vec<u8> {
        json!({
            "user_id": "ukzbfd5tqjr5jjkn8ffzoid6ma",
            "user_name": "carol",
            "channel_id": CHANNEL,
            "channel_name": "town-square",
            "team_id": TEAM,
            "team_domain": "acme",
            "post_id": "p9ocxjsmkfgr8ruw4wdmqz3rxa",
            "trigger_id": "dHJpZ2dlcg==",
            "type": "button",
            "data_source": "",
            "context": ctx,
        })
        .to_string()
        .into_bytes()
    }

    fn ctx(action: &str) -> Value {
        json!({"run": RUN, "action": action, "team": TEAM,
               "sig": signer().sign(&binding(ActionKind::Cancel))})
    }

    #[test]
    fn click_bodies_parse_into_our_type() {
        let c = parse(&body(ctx("cancel"))).unwrap();
        assert_eq!(c.user_id.as_str(), "ukzbfd5tqjr5jjkn8ffzoid6ma");
        assert_eq!(c.user_name, "carol");
        assert_eq!(c.channel_id.as_str(), CHANNEL);
        assert_eq!(c.team_id.as_ref().map(TeamId::as_str), Some(TEAM));
        assert_eq!(c.post_id.as_str(), "p9ocxjsmkfgr8ruw4wdmqz3rxa");
        assert_eq!(c.context.action, ActionKind::Cancel);
        assert_eq!(c.context.run.as_str(), RUN);
        assert_eq!(c.verify(&signer()), Ok(()));

        let edit = |f: &dyn Fn(&mut Value)| {
            let mut v: Value = serde_json::from_slice(&body(ctx("cancel"))).unwrap();
            f(&mut v);
            parse(v.to_string().as_bytes())
        };
        type Edit = fn(&mut Value);
        let table: &[(&str, Edit, Result<(), ClickError>)] = &[
            ("as sent", |_| {}, Ok(())),
            (
                "no context",
                |v| {
                    v.as_object_mut().unwrap().remove("context");
                },
                Err(ClickError::NoContext),
            ),
            (
                "context not ours",
                |v| v["context"] = json!({"action": "do_something"}),
                Err(ClickError::NoContext),
            ),
            (
                "context values not strings",
                |v| v["context"]["run"] = json!(7),
                Err(ClickError::NoContext),
            ),
            (
                "unknown action",
                |v| v["context"]["action"] = json!("explode"),
                Err(ClickError::UnknownAction),
            ),
            (
                "a select, not a button",
                |v| v["type"] = json!("select"),
                Err(ClickError::NotAButton("select".into())),
            ),
            (
                "no user",
                |v| v["user_id"] = json!(""),
                Err(ClickError::Missing("user_id")),
            ),
            (
                "no post",
                |v| {
                    v.as_object_mut().unwrap().remove("post_id");
                },
                Err(ClickError::Missing("post_id")),
            ),
            (
                "a path in the post id",
                |v| v["post_id"] = json!("../users/me"),
                Err(ClickError::BadId("post_id")),
            ),
            (
                "a direct message (no team)",
                |v| v["team_id"] = json!(""),
                Ok(()),
            ),
            (
                "older Mattermost: no user_name",
                |v| {
                    v.as_object_mut().unwrap().remove("user_name");
                },
                Ok(()),
            ),
        ];
        for (name, f, want) in table {
            assert_eq!(edit(f).map(|_| ()), *want, "{name}");
        }
        for junk in [
            &b""[..],
            b"not json",
            b"[]",
            b"{\"context\": \"x\"}",
            b"null",
        ] {
            assert!(parse(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn altered_forged_and_foreign_clicks_do_not_verify() {
        let s = signer();
        let ok = parse(&body(ctx("cancel"))).unwrap();
        let mut altered = ok.clone();
        altered.context.action = ActionKind::Retry;
        let mut other_run = ok.clone();
        other_run.context.run = RequestId::new("ffff");
        let mut moved = ok.clone();
        moved.channel_id = ChannelId::new("otherchannel");
        let mut claimed_team = ok.clone();
        claimed_team.context.team = TeamId::new("otherteam");
        let mut foreign = ok.clone();
        foreign.team_id = Some(TeamId::new("otherteam"));
        let mut dm = ok.clone();
        dm.team_id = None;
        let table = [
            ("as signed", &ok, Ok(())),
            ("action altered", &altered, Err(Unverified::BadSignature)),
            ("run altered", &other_run, Err(Unverified::BadSignature)),
            ("another channel", &moved, Err(Unverified::BadSignature)),
            ("team altered", &claimed_team, Err(Unverified::BadSignature)),
            (
                "clicked in another team",
                &foreign,
                Err(Unverified::ForeignTeam),
            ),
            ("a direct message", &dm, Ok(())),
        ];
        for (name, click, want) in table {
            assert_eq!(click.verify(&s), want, "{name}");
        }
    }

    fn card(state: CardState) -> Card {
        let started = state != CardState::Requested;
        Card {
            run: RequestId::new(RUN),
            job: "deploy <!channel> @here".into(),
            input: "@channel & <b>".into(),
            requested_by: Person {
                id: "ukzbfd5tqjr5jjkn8ffzoid6ma".into(),
                name: "alice".into(),
            },
            state,
            job_id: started.then_some(7),
            job_url: started.then(|| "https://gitlab.example.com/g/p/-/jobs/7".to_owned()),
            pipeline_url: started
                .then(|| "https://gitlab.example.com/g/p/-/pipelines/3".to_owned()),
            played_by: None,
            cancelled_by: None,
            retried_by: None,
            approval: None,
            requested_at: 1_764_620_730,
            duration_secs: None,
        }
    }

    fn settings(public_base_url: Option<&str>) -> ButtonSettings {
        ButtonSettings {
            signer: signer(),
            public_base_url: public_base_url.map(str::to_owned),
        }
    }

    #[test]
    fn every_card_state_with_mattermost_buttons() {
        let (team, channel) = (TeamId::new(TEAM), ChannelId::new(CHANNEL));
        let place = Place {
            team: &team,
            channel: &channel,
            public_base: Some("https://abc.lambda-url.eu-west-1.on.aws"),
        };
        let s = settings(None);
        let mut all = String::new();
        let mut cancelled_by = card(CardState::Cancelled);
        cancelled_by.cancelled_by = Some(Person {
            id: "u0bob".into(),
            name: "bob @all".into(),
        });
        let mut awaiting = card(CardState::AwaitingApproval);
        awaiting.approval = Some(crate::card::CardApproval {
            min_role: crate::policy::Role::Maintainer,
            requester_can_approve: false,
            minutes: 60,
            verdict: None,
            by: None,
        });
        let states = [
            ("requested", card(CardState::Requested)),
            ("pending", card(CardState::Pending)),
            ("running", card(CardState::Running)),
            ("waiting_manual", card(CardState::WaitingManual)),
            ("succeeded", card(CardState::Succeeded)),
            ("failed", card(CardState::Failed)),
            ("cancelled", card(CardState::Cancelled)),
            ("cancelled_by", cancelled_by),
            ("awaiting_approval", awaiting),
        ];
        for (name, c) in states {
            let msg = render_card(&c, Some(&s), place);
            let shown = serde_json::to_string_pretty(&msg.to_response_json()).unwrap();
            for f in ["@here", "@channel", "@all"] {
                assert!(!shown.contains(f), "{name}: {shown}");
            }
            assert!(!shown.contains(KEY), "the secret is never in a card");
            // Every button's context verifies for its action, and only for it.
            let actions = msg
                .attachments
                .as_ref()
                .and_then(|a| a[0]["actions"].as_array().cloned())
                .unwrap_or_default();
            assert_eq!(actions.len(), c.buttons().len(), "{name}");
            for (a, kind) in actions.iter().zip(c.buttons()) {
                assert_eq!(a["type"], "button");
                assert_eq!(
                    a["integration"]["url"],
                    "https://abc.lambda-url.eu-west-1.on.aws/mattermost/interactions"
                );
                let sig = a["integration"]["context"]["sig"].as_str().unwrap();
                let b = Binding {
                    action: kind,
                    ..binding(kind)
                };
                assert!(s.signer.verify(&b, sig), "{name} {kind:?}");
                assert!(a["id"]
                    .as_str()
                    .unwrap()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric()));
            }
            all.push_str(&format!("--- {name}\n{shown}\n"));
        }
        insta::assert_snapshot!(all);
    }

    #[test]
    fn no_secret_or_no_url_is_the_text_card() {
        let (team, channel) = (TeamId::new(TEAM), ChannelId::new(CHANNEL));
        let c = card(CardState::Running);
        let text_only = c.render(Platform::Mattermost);
        let nowhere = Place {
            team: &team,
            channel: &channel,
            public_base: None,
        };
        assert_eq!(render_card(&c, None, nowhere), text_only);
        assert_eq!(
            render_card(&c, Some(&settings(None)), nowhere),
            text_only,
            "no URL Mattermost could reach: no buttons"
        );
        // PUBLIC_BASE_URL wins over the base the command came to.
        let custom = render_card(
            &c,
            Some(&settings(Some("https://chatops.example.com"))),
            Place {
                public_base: Some("https://abc.lambda-url.eu-west-1.on.aws"),
                ..nowhere
            },
        );
        assert_eq!(
            custom.attachments.unwrap()[0]["actions"][0]["integration"]["url"],
            "https://chatops.example.com/mattermost/interactions"
        );
        for kind in ActionKind::ALL {
            let id = action_id(kind);
            assert!(id.starts_with("chatops") && id.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[tokio::test]
    async fn settings_come_from_the_secret_and_public_base() {
        use crate::config::NoSecrets;
        let env = |pairs: &[(&str, &str)]| Env::from_pairs(pairs.iter().copied());
        assert!(
            ButtonSettings::from_env(&env(&[("MATTERMOST_URL", "https://mm")]), &NoSecrets)
                .await
                .unwrap()
                .is_none()
        );
        let s = ButtonSettings::from_env(
            &env(&[
                ("MATTERMOST_ACTIONS_SECRET", KEY),
                ("PUBLIC_BASE_URL", "https://chatops.example.com/"),
            ]),
            &NoSecrets,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            s.public_base_url.as_deref(),
            Some("https://chatops.example.com")
        );
        assert!(!format!("{s:?}").contains(KEY), "never printed");
        let err = ButtonSettings::from_env(
            &env(&[
                ("MATTERMOST_ACTIONS_SECRET", KEY),
                ("PUBLIC_BASE_URL", "chatops.example.com"),
            ]),
            &NoSecrets,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("PUBLIC_BASE_URL"), "{err}");
    }
}
