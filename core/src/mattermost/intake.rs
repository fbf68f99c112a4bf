//! The ingress half of a click on a Mattermost card's button (`POST /mattermost/interactions`):
//! the JSON body parsed into our own type (`actions::parse`), the button's signed context
//! checked in constant time against the channel Mattermost names (forged, altered, moved or
//! missing → 401; clicked from another team than the run's → 403; no detail either way,
//! nothing queued), and the click queued as an `ActionMessage`, exactly like a Slack click,
//! for the dispatcher (`interaction::Clicks`) to act on as the clicker.
//!
//! Mattermost waits for our answer and shows its `ephemeral_text` to the clicker only; it
//! says the click was received, never what has not happened yet. Without a Mattermost bot
//! token the dispatcher can neither answer the clicker nor redraw the card afterwards, so the
//! answer says so now.

use super::actions::{self, ActionSigner, Click, Unverified};
use crate::action::{ActionMessage, ACTION_MESSAGE, ACTION_MESSAGE_VERSION};
use crate::clock::Clock;
use crate::markup::Rich;
use crate::queue::{QueueError, RunQueue};
use crate::run::{ActionKind, CardRef, Platform};
use crate::web::{self, HttpResponse};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A click's key: a stable hash of the parts, length-prefixed so `("ab","c")` and
/// `("a","bc")` differ (the same form as a Slack click's).
fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

/// Why a click is not taken; the ingress answers with no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not one of our buttons as we signed it: 401.
    Unauthorized,
    /// Our button, clicked from another team than the run's: 403.
    Forbidden,
}

/// The ingress's ports for a click.
pub struct Intake<'a> {
    pub signer: &'a ActionSigner,
    pub queue: &'a dyn RunQueue,
    pub clock: &'a dyn Clock,
    /// A Mattermost bot token is configured where clicks are handled: the clicker is told
    /// the outcome and the card redrawn later (`MATTERMOST_BOT_TOKEN`).
    pub bot: bool,
}

/// What the clicker reads at once (only they see it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Queued; the outcome follows.
    Working(ActionKind),
    /// Queued, but nobody can tell them the outcome here (no bot token).
    NoBot(ActionKind),
    /// The queue did not confirm it: it may or may not be handled.
    Unconfirmed(ActionKind),
    /// Not queued: nothing will happen.
    NotQueued(ActionKind),
}

impl Received {
    pub fn rich(&self) -> Rich {
        match *self {
            Received::Working(k) => Rich::new()
                .text("Working on it: your click (")
                .bold(k.as_str())
                .text(") is being handled as you in GitLab."),
            Received::NoBot(k) => Rich::new().text("Your click (").bold(k.as_str()).text(
                ") was queued and will be handled as you in GitLab. This ChatOps has no \
                     Mattermost bot token, so this card will not change and you will not be \
                     told the outcome here; the run's reply in this channel says how the job \
                     ends.",
            ),
            Received::Unconfirmed(k) => Rich::new().text("Your click (").bold(k.as_str()).text(
                ") may not have been received. If nothing happens within a minute, click \
                     again.",
            ),
            Received::NotQueued(k) => Rich::new()
                .text("Your click (")
                .bold(k.as_str())
                .text(") could not be handled right now, so nothing was done. Please click again."),
        }
    }

    /// The integration response Mattermost reads (`ephemeral_text`; no `update`: the card
    /// changes only once something happened).
    pub fn response(&self) -> HttpResponse {
        web::json(
            200,
            &json!({"ephemeral_text": self.rich().render(Platform::Mattermost)}),
        )
    }
}

impl Intake<'_> {
    /// One click, as Mattermost POSTs it; `public_base` is where the ingress was reached.
    pub async fn click(
        &self,
        body: &[u8],
        public_base: Option<String>,
    ) -> Result<HttpResponse, Refused> {
        let click = match actions::parse(body) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(reason = %e, "mattermost click refused: not one of our buttons");
                return Err(Refused::Unauthorized);
            }
        };
        match click.verify(self.signer) {
            Ok(()) => {}
            Err(e @ Unverified::BadSignature) => {
                tracing::warn!(reason = %e, channel = %click.channel_id, "mattermost click refused");
                return Err(Refused::Unauthorized);
            }
            Err(e @ Unverified::ForeignTeam) => {
                tracing::warn!(
                    reason = %e,
                    team = ?click.team_id.as_ref().map(|t| t.as_str()),
                    run_team = %click.context.team,
                    "mattermost click refused"
                );
                return Err(Refused::Forbidden);
            }
        }
        let message = self.message(&click, public_base);
        let kind = click.context.action;
        let received = match self.queue.send_action(&message).await {
            Ok(()) => {
                tracing::info!(
                    run = %message.run,
                    kind = kind.as_str(),
                    team = %message.team_id,
                    user = %message.user_id,
                    "click queued"
                );
                if self.bot {
                    Received::Working(kind)
                } else {
                    Received::NoBot(kind)
                }
            }
            Err(e @ QueueError::Unconfirmed(_)) => {
                tracing::warn!(run = %message.run, error = %e, "the queue did not confirm a click");
                Received::Unconfirmed(kind)
            }
            Err(e) => {
                // Said in the answer (a non-200 would only show "action failed" to them).
                tracing::error!(run = %message.run, error = %e, "could not queue a click");
                Received::NotQueued(kind)
            }
        };
        Ok(received.response())
    }

    /// The queued click. Its key: Mattermost sends no `action_ts`; its `trigger_id` is minted
    /// for each click (a random id, the user and the time, signed by Mattermost), so two
    /// clicks have two keys, while the same request sent again (Mattermost itself never
    /// resends a click) has the same one. Without a trigger id (older servers, plugins), the
    /// second it arrived stands in, as for commands.
    fn message(&self, click: &Click, public_base: Option<String>) -> ActionMessage {
        let now = self.clock.now();
        let trigger = if click.trigger_id.is_empty() {
            format!("at:{now}")
        } else {
            click.trigger_id.clone()
        };
        let ctx = &click.context;
        ActionMessage {
            message: ACTION_MESSAGE.into(),
            action_version: ACTION_MESSAGE_VERSION,
            key: digest(&[
                b"mattermost",
                ctx.team.as_str().as_bytes(),
                click.user_id.as_str().as_bytes(),
                click.post_id.as_str().as_bytes(),
                trigger.as_bytes(),
                ctx.action.as_str().as_bytes(),
                ctx.run.as_str().as_bytes(),
            ]),
            kind: ctx.action,
            run: ctx.run.clone(),
            platform: Platform::Mattermost,
            // The run's team, as signed: direct messages name no team of their own.
            team_id: ctx.team.clone(),
            user_id: click.user_id.clone(),
            user_name: click.user_name.clone(),
            channel_id: click.channel_id.clone(),
            // Mattermost actions have no response_url: the dispatcher answers through the
            // REST API (`card_delivery`).
            response_url: String::new(),
            card: Some(CardRef {
                channel: click.channel_id.clone(),
                ts: Some(click.post_id.clone()),
                answer: false,
            }),
            received_at: now,
            public_base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MemoryQueue;
    use crate::secret::Secret;
    use serde_json::Value;

    struct At(u64);
    impl Clock for At {
        fn now(&self) -> u64 {
            self.0
        }
    }

    const KEY: &str = "intake-test-key";

    fn signer() -> ActionSigner {
        ActionSigner::new(Secret::new(KEY)).unwrap()
    }

    fn body(trigger: &str, post: &str) -> Vec<u8> {
        let sig = signer().sign(&actions::Binding {
            run: "r1",
            action: ActionKind::Cancel,
            team: "team1",
            channel: "chan1",
        });
        json!({"user_id": "user1", "user_name": "carol", "channel_id": "chan1",
               "team_id": "team1", "post_id": post, "trigger_id": trigger, "type": "button",
               "context": {"run": "r1", "action": "cancel", "team": "team1", "sig": sig}})
        .to_string()
        .into_bytes()
    }

    async fn send(bot: bool, b: &[u8]) -> (Result<HttpResponse, Refused>, Vec<ActionMessage>) {
        let q = MemoryQueue::new();
        let s = signer();
        let intake = Intake {
            signer: &s,
            queue: &q,
            clock: &At(1000),
            bot,
        };
        let r = intake.click(b, Some("https://ingress".into())).await;
        let sent = q
            .drain()
            .into_iter()
            .filter_map(|m| ActionMessage::from_body(&m).ok().flatten())
            .collect();
        (r, sent)
    }

    #[tokio::test]
    async fn a_click_is_queued_and_answered_only_to_the_clicker() {
        let (r, sent) = send(true, &body("t1", "post1")).await;
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        let answer: Value = serde_json::from_str(r.body()).unwrap();
        assert!(answer["ephemeral_text"]
            .as_str()
            .unwrap()
            .contains("Working on it"));
        assert!(
            answer.get("update").is_none(),
            "the card changes once acted"
        );
        let [m] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(m.platform, Platform::Mattermost);
        assert_eq!(m.kind, ActionKind::Cancel);
        assert_eq!(m.run.as_str(), "r1");
        assert_eq!(m.team_id.as_str(), "team1");
        assert_eq!(m.response_url, "");
        assert_eq!(
            m.card
                .as_ref()
                .and_then(|c| c.ts.as_ref())
                .map(|t| t.as_str()),
            Some("post1")
        );
        assert!(!serde_json::to_string(m).unwrap().contains(KEY));

        // Without a bot token, the answer says the card will not change.
        let (r, _) = send(false, &body("t1", "post1")).await;
        let answer: Value = serde_json::from_str(r.unwrap().body()).unwrap();
        let text = answer["ephemeral_text"].as_str().unwrap();
        assert!(
            text.contains("was queued") && text.contains("will not change"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_same_click_has_the_same_key_and_two_clicks_two() {
        let key = |t: &'static str, p: &'static str| async move {
            send(true, &body(t, p)).await.1[0].key.clone()
        };
        assert_eq!(key("t1", "post1").await, key("t1", "post1").await);
        assert_ne!(key("t1", "post1").await, key("t2", "post1").await);
        assert_ne!(key("t1", "post1").await, key("t1", "post2").await);
    }

    #[tokio::test]
    async fn refusals_queue_nothing() {
        let mut v: Value = serde_json::from_slice(&body("t1", "p1")).unwrap();
        v["context"]["action"] = json!("retry");
        let (r, sent) = send(true, v.to_string().as_bytes()).await;
        assert_eq!(r.err(), Some(Refused::Unauthorized));
        assert!(sent.is_empty());
        let mut v: Value = serde_json::from_slice(&body("t1", "p1")).unwrap();
        v["team_id"] = json!("team2");
        let (r, sent) = send(true, v.to_string().as_bytes()).await;
        assert_eq!(r.err(), Some(Refused::Forbidden));
        assert!(sent.is_empty());
        let (r, sent) = send(true, b"payload=x").await;
        assert_eq!(r.err(), Some(Refused::Unauthorized));
        assert!(sent.is_empty());
    }
}
