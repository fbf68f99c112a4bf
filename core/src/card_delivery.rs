//! Putting a run's card on screen, in place: the one place that decides how a card is updated.
//!
//! Slack, in order:
//! 1. the card's `ts` is known (posted with `chat.postMessage`, or reported by a click on
//!    it): `chat.update` with the bot token (no `response_url` use spent);
//! 2. the card is the slash command's own answer (or that update was refused) and the
//!    command's `response_url` still takes messages: `replace_original: true` through it,
//!    counted like every use (`RunStore::take_response_url_use`; the last state's in the
//!    write that takes the reply), always leaving the last use for the job's reply;
//! 3. announcing a run (the dispatcher) when neither works: a new card with
//!    `chat.postMessage`, whose `ts` is recorded for the next updates;
//! 4. otherwise the card stays as it is (the reply still says how the job ended, and a click
//!    on the stale card answers with the current state).
//!
//! A click's own `response_url` replaces the clicked card directly (`replace_clicked`).
//!
//! Mattermost (`show_mattermost`), with its buttons when they are configured
//! (`mattermost::actions`):
//! 1. the card's post id is known (the bot posted it, or a click on it reported it):
//!    `PUT /api/v4/posts/{id}/patch` with the bot token (the bot may edit its own posts;
//!    another's only with the edit-others permission, else the card stays as it is);
//! 2. announcing a run: a post by the bot (`POST /api/v4/posts`), whose id is recorded for
//!    the next states; without a bot token (or when the bot may not post there), through the
//!    command's `response_url` as before, and later states are left to the reply.
//!
//! A Mattermost click has no `response_url`: the clicker is answered with an ephemeral post
//! (`POST /api/v4/posts/ephemeral`) and the clicked post is patched (`tell_clicker`,
//! `replace_clicked` decide by platform).

use crate::action::ActionMessage;
use crate::card::Card;
use crate::chat::{ChatApi, ChatError, OutgoingMessage};
use crate::delivery::{with_rate_limit, Deliverer, DeliveryError, RESPONSE_URL_MAX_USES};
use crate::mattermost::actions::{self, Place};
use crate::run::{CardRef, Platform, RunRecord};

/// Why a card is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The run started (or waits to be run): a card must be on screen, new if need be.
    Announce,
    /// A later state of a card already shown: in place, or not at all.
    Update,
    /// The last state, just before the reply: like `Update`, but a `response_url` use for it
    /// was taken already (`taken`), in the write that took the reply (`begin_reply`).
    Final { taken: bool },
}

/// How a card got on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// `chat.update` on its `ts`.
    Updated,
    /// `replace_original` through the command's `response_url`.
    Replaced,
    /// A new message (its `ts` recorded when the platform said it).
    Posted,
    /// Left as it was.
    Skipped,
}

/// The ports a card needs, borrowed from the use case that shows it.
pub struct CardDesk<'a> {
    pub deliverer: &'a Deliverer,
    /// Short Slack rate limits are waited out (background work); on the webhook path a 429
    /// leaves the card as it is instead.
    pub waits: bool,
}

impl CardDesk<'_> {
    fn api(&self, platform: Platform) -> &dyn ChatApi {
        match platform {
            Platform::Slack => self.deliverer.slack.as_ref(),
            Platform::Mattermost => self.deliverer.mattermost.as_ref(),
        }
    }

    /// Show `card` for `run` (which must be stored).
    pub async fn show(
        &self,
        run: &RunRecord,
        card: &Card,
        purpose: Purpose,
    ) -> Result<Shown, DeliveryError> {
        let req = &run.request;
        if req.platform == Platform::Mattermost {
            return self.show_mattermost(run, card, purpose).await;
        }
        let msg = card.render(req.platform);
        let api = self.api(req.platform);
        if let Some(CardRef {
            channel,
            ts: Some(ts),
            ..
        }) = &run.card
        {
            match with_rate_limit("chat.update", self.waits, || {
                api.update_message(channel, ts, &msg)
            })
            .await
            {
                Ok(()) => return Ok(Shown::Updated),
                Err(e) => {
                    tracing::info!(request_id = %req.request_id, error = %e, "chat.update refused the card; trying the response_url")
                }
            }
        }
        // Only the command's answer may be replaced through its response_url: anything else
        // there would replace the wrong message.
        let is_answer = match &run.card {
            Some(c) => c.answer,
            None => purpose == Purpose::Announce,
        };
        let use_taken = match purpose {
            Purpose::Final { taken } => taken,
            Purpose::Announce | Purpose::Update => {
                is_answer && self.take_response_url(run, purpose).await?
            }
        };
        if is_answer && use_taken {
            let replace = OutgoingMessage {
                replace_original: true,
                ..msg.clone()
            };
            match with_rate_limit("response_url", self.waits, || {
                api.respond(&req.response_url, &replace)
            })
            .await
            {
                Ok(()) => return Ok(Shown::Replaced),
                Err(e) => {
                    tracing::info!(request_id = %req.request_id, error = %e, "the response_url did not take the card")
                }
            }
        }
        if purpose != Purpose::Announce {
            return Ok(Shown::Skipped);
        }
        let ts = with_rate_limit("chat.postMessage", self.waits, || {
            api.post_card(&req.channel_id, &msg)
        })
        .await?;
        if let Some(ts) = ts {
            let card = CardRef {
                channel: req.channel_id.clone(),
                ts: Some(ts),
                answer: false,
            };
            if let Err(e) = self.deliverer.store.set_card(&req.request_id, &card).await {
                // The card is up; only its later updates are lost (a click reports it again).
                tracing::warn!(request_id = %req.request_id, error = %e, "could not record where the card is");
            }
        }
        Ok(Shown::Posted)
    }

    /// The card as Mattermost shows it at `place`: with its signed buttons when configured.
    fn mattermost_card(&self, card: &Card, place: Place<'_>) -> OutgoingMessage {
        actions::render_card(card, self.deliverer.mattermost_buttons.as_ref(), place)
    }

    /// Mattermost's card: patched in place when its post is known, posted by the bot when
    /// announcing (its id recorded), else through the command's `response_url`.
    async fn show_mattermost(
        &self,
        run: &RunRecord,
        card: &Card,
        purpose: Purpose,
    ) -> Result<Shown, DeliveryError> {
        let req = &run.request;
        let api = self.api(Platform::Mattermost);
        let msg = self.mattermost_card(
            card,
            Place {
                team: &req.team_id,
                channel: &req.channel_id,
                public_base: req.public_base.as_deref(),
            },
        );
        if let Some(CardRef {
            channel,
            ts: Some(post),
            ..
        }) = &run.card
        {
            match with_rate_limit("posts/patch", self.waits, || {
                api.update_message(channel, post, &msg)
            })
            .await
            {
                Ok(()) => return Ok(Shown::Updated),
                Err(e) => {
                    tracing::info!(request_id = %req.request_id, error = %e, "Mattermost did not let the bot update the card")
                }
            }
        }
        if purpose != Purpose::Announce {
            return Ok(Shown::Skipped);
        }
        match with_rate_limit("posts", self.waits, || api.post_card(&req.channel_id, &msg)).await {
            Ok(post) => {
                if let Some(post) = post {
                    let card = CardRef {
                        channel: req.channel_id.clone(),
                        ts: Some(post),
                        answer: false,
                    };
                    if let Err(e) = self.deliverer.store.set_card(&req.request_id, &card).await {
                        tracing::warn!(request_id = %req.request_id, error = %e, "could not record where the card is");
                    }
                }
                return Ok(Shown::Posted);
            }
            Err(ChatError::NoToken) => {}
            Err(e) => {
                tracing::info!(request_id = %req.request_id, error = %e, "the bot could not post the card; through the command's response_url")
            }
        }
        self.deliverer.deliver(req, &msg).await?;
        Ok(Shown::Posted)
    }

    /// One use of the command's `response_url` for a card, if it is young enough and more
    /// than one use is left (the last is the reply's). The first card of a run this attempt
    /// claimed spends the use the claim counted (`RunRecord::announce_use`).
    async fn take_response_url(
        &self,
        run: &RunRecord,
        purpose: Purpose,
    ) -> Result<bool, DeliveryError> {
        let req = &run.request;
        if !self.deliverer.response_url_usable(req) {
            return Ok(false);
        }
        if purpose == Purpose::Announce && run.announce_use {
            return Ok(true);
        }
        Ok(self
            .deliverer
            .store
            .take_response_url_use(&req.request_id, RESPONSE_URL_MAX_USES - 1)
            .await?
            .is_some())
    }

    /// Redraw the clicked card: through the click's own `response_url` (Slack), or by
    /// patching the clicked post (Mattermost, whose clicks have no `response_url`).
    pub async fn replace_clicked(
        &self,
        click: &ActionMessage,
        card: &Card,
    ) -> Result<(), ChatError> {
        let api = self.api(click.platform);
        match click.platform {
            Platform::Slack => {
                let msg = OutgoingMessage {
                    replace_original: true,
                    ..card.render(click.platform)
                };
                api.respond(&click.response_url, &msg).await
            }
            Platform::Mattermost => {
                let Some(CardRef {
                    channel,
                    ts: Some(post),
                    ..
                }) = &click.card
                else {
                    return Err(ChatError::Refused("the click names no post".into()));
                };
                // The click's team is the run's (signed, and checked against the run).
                let msg = self.mattermost_card(
                    card,
                    Place {
                        team: &click.team_id,
                        channel,
                        public_base: click.public_base.as_deref(),
                    },
                );
                with_rate_limit("posts/patch", self.waits, || {
                    api.update_message(channel, post, &msg)
                })
                .await
            }
        }
    }

    /// Tell the clicker something only they see: through the click's `response_url`
    /// (Slack), or an ephemeral post in the card's channel (Mattermost).
    pub async fn tell_clicker(
        &self,
        click: &ActionMessage,
        msg: &OutgoingMessage,
    ) -> Result<(), ChatError> {
        let api = self.api(click.platform);
        match click.platform {
            Platform::Slack => api.respond(&click.response_url, msg).await,
            Platform::Mattermost => {
                with_rate_limit("posts/ephemeral", self.waits, || {
                    api.post_ephemeral(&click.channel_id, &click.user_id, msg)
                })
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::CardState;
    use crate::clock::Clock;
    use crate::ids::{ChannelId, ChatUserId, MessageTs, RequestId, TeamId};
    use crate::run::{RunRequest, RunStatus, RUN_REQUEST_VERSION};
    use crate::store::{MemoryStore, RunStore};
    use std::sync::{Arc, Mutex};

    struct FixedClock(u64);
    impl Clock for FixedClock {
        fn now(&self) -> u64 {
            self.0
        }
    }

    /// Records every call, answering `ts` "1.000001" to posts; `update` fails when asked.
    #[derive(Default)]
    struct Chat {
        calls: Mutex<Vec<String>>,
        refuse_updates: bool,
    }

    #[async_trait::async_trait]
    impl ChatApi for Chat {
        async fn respond(&self, url: &str, msg: &OutgoingMessage) -> Result<(), ChatError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("respond {url} replace={}", msg.replace_original));
            Ok(())
        }
        async fn post_message(
            &self,
            channel: &ChannelId,
            _msg: &OutgoingMessage,
        ) -> Result<(), ChatError> {
            self.calls.lock().unwrap().push(format!("post {channel}"));
            Ok(())
        }
        async fn post_card(
            &self,
            channel: &ChannelId,
            msg: &OutgoingMessage,
        ) -> Result<Option<MessageTs>, ChatError> {
            self.post_message(channel, msg).await?;
            Ok(Some(MessageTs::new("1.000001")))
        }
        async fn update_message(
            &self,
            channel: &ChannelId,
            ts: &MessageTs,
            _msg: &OutgoingMessage,
        ) -> Result<(), ChatError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("update {channel} {ts}"));
            if self.refuse_updates {
                return Err(ChatError::Refused("cant_update_message".into()));
            }
            Ok(())
        }
        async fn upload_file(
            &self,
            _: &ChannelId,
            _: &crate::chat::FileAttachment,
            _: &str,
        ) -> Result<(), ChatError> {
            Ok(())
        }
        async fn open_dm(&self, user: &ChatUserId) -> Result<ChannelId, ChatError> {
            Ok(ChannelId::new(format!("D{user}")))
        }
    }

    fn request(response_url: &str) -> RunRequest {
        RunRequest {
            version: RUN_REQUEST_VERSION,
            request_id: RequestId::new("r1"),
            platform: Platform::Slack,
            team_id: TeamId::new("T1"),
            team_domain: None,
            channel_id: ChannelId::new("C1"),
            channel_name: "ops".into(),
            user_id: ChatUserId::new("U1"),
            user_name: "alice".into(),
            command: "/chatops".into(),
            job: "deploy".into(),
            input: String::new(),
            response_url: response_url.into(),
            received_at: 1000,
            public_base: None,
            kind: crate::run::RequestKind::Run,
        }
    }

    async fn setup(
        chat: Arc<Chat>,
        response_url: &str,
        now: u64,
    ) -> (Deliverer, Arc<MemoryStore>, RunRecord) {
        let store = Arc::new(MemoryStore::new());
        let mut run = RunRecord::claimed(request(response_url), 1000, 60);
        run.status = RunStatus::Running;
        let run = store.save_run(&run).await.unwrap();
        (deliverer(&chat, &store, now), store, run)
    }

    /// Both platforms through `chat`, runs in `store`, the time `now`.
    fn deliverer(chat: &Arc<Chat>, store: &Arc<MemoryStore>, now: u64) -> Deliverer {
        Deliverer {
            slack: chat.clone(),
            mattermost: chat.clone(),
            mattermost_buttons: None,
            store: store.clone(),
            clock: Arc::new(FixedClock(now)),
        }
    }

    fn card(run: &RunRecord) -> Card {
        Card::of_run(run, CardState::Running)
    }

    /// The claim of a new run counted its first card's use: announcing spends that one (no
    /// second count); a later update, or another attempt's announcement, takes its own.
    #[tokio::test]
    async fn the_first_card_spends_the_use_its_claim_counted() {
        let chat = Arc::new(Chat::default());
        let store = Arc::new(MemoryStore::new());
        let req = request("https://hooks/1");
        let crate::store::DispatchClaim::Claimed(run) =
            store.claim_dispatch(&req, 1000, 60).await.unwrap()
        else {
            panic!("a new run is claimed")
        };
        let mut run = *run;
        assert_eq!((run.response_url_uses, run.announce_use), (1, true));
        run.card = Some(CardRef {
            channel: ChannelId::new("C1"),
            ts: None,
            answer: true,
        });
        let d = deliverer(&chat, &store, 1010);
        let desk = CardDesk {
            deliverer: &d,
            waits: false,
        };
        let uses = || async {
            store
                .get_run(&req.request_id)
                .await
                .unwrap()
                .unwrap()
                .response_url_uses
        };
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Announce)
                .await
                .unwrap(),
            Shown::Replaced
        );
        assert_eq!(uses().await, 1, "the claim's count, not a second");
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Update).await.unwrap(),
            Shown::Replaced
        );
        assert_eq!(uses().await, 2);
        // The stored record (what another attempt reads) has nothing left to spend.
        let stored = store.get_run(&req.request_id).await.unwrap().unwrap();
        assert!(!stored.announce_use);
        desk.show(&stored, &card(&stored), Purpose::Announce)
            .await
            .unwrap();
        assert_eq!(uses().await, 3);
        assert_eq!(
            chat.calls.lock().unwrap().as_slice(),
            ["respond https://hooks/1 replace=true"; 3]
        );
    }

    #[tokio::test]
    async fn the_commands_answer_is_replaced_keeping_the_last_use_for_the_reply() {
        let chat = Arc::new(Chat::default());
        let (d, store, mut run) = setup(chat.clone(), "https://hooks/1", 1010).await;
        run.card = Some(CardRef {
            channel: ChannelId::new("C1"),
            ts: None,
            answer: true,
        });
        let desk = CardDesk {
            deliverer: &d,
            waits: false,
        };
        for _ in 0..4 {
            assert_eq!(
                desk.show(&run, &card(&run), Purpose::Update).await.unwrap(),
                Shown::Replaced
            );
        }
        // The fifth use is the reply's: an update now leaves the card alone.
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Update).await.unwrap(),
            Shown::Skipped
        );
        let stored = store
            .get_run(&run.request.request_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.response_url_uses, 4);
        assert!(chat
            .calls
            .lock()
            .unwrap()
            .iter()
            .all(|c| c == "respond https://hooks/1 replace=true"));
    }

    #[tokio::test]
    async fn a_known_ts_is_updated_and_only_the_answer_falls_back_to_the_response_url() {
        let chat = Arc::new(Chat::default());
        let (d, store, mut run) = setup(chat.clone(), "https://hooks/1", 1010).await;
        run.card = Some(CardRef {
            channel: ChannelId::new("C1"),
            ts: Some(MessageTs::new("9.1")),
            answer: false,
        });
        let desk = CardDesk {
            deliverer: &d,
            waits: false,
        };
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Update).await.unwrap(),
            Shown::Updated
        );
        assert_eq!(*chat.calls.lock().unwrap(), vec!["update C1 9.1"]);
        let id = run.request.request_id.clone();
        assert_eq!(
            store.get_run(&id).await.unwrap().unwrap().response_url_uses,
            0
        );

        // Slack refuses the update. A card the bot posted is left as it is (the command's
        // response_url would replace another message); the command's own answer is replaced
        // through it instead.
        let refusing = Arc::new(Chat {
            refuse_updates: true,
            ..Chat::default()
        });
        let (d, _, _) = setup(refusing.clone(), "https://hooks/1", 1010).await;
        let desk = CardDesk {
            deliverer: &d,
            waits: false,
        };
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Update).await.unwrap(),
            Shown::Skipped
        );
        if let Some(c) = run.card.as_mut() {
            c.answer = true;
        }
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Update).await.unwrap(),
            Shown::Replaced
        );
        assert_eq!(
            *refusing.calls.lock().unwrap(),
            vec![
                "update C1 9.1",
                "update C1 9.1",
                "respond https://hooks/1 replace=true"
            ]
        );
    }

    #[tokio::test]
    async fn a_mattermost_card_is_posted_by_the_bot_then_patched_in_place() {
        let chat = Arc::new(Chat::default());
        let store = Arc::new(MemoryStore::new());
        let mut req = request("https://mm.example.com/hooks/commands/x");
        req.platform = Platform::Mattermost;
        let mut run = RunRecord::claimed(req, 1000, 60);
        run.status = RunStatus::Running;
        let run = store.save_run(&run).await.unwrap();
        let d = deliverer(&chat, &store, 1010);
        let desk = CardDesk {
            deliverer: &d,
            waits: false,
        };
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Update).await.unwrap(),
            Shown::Skipped,
            "no card shown yet: nothing to patch"
        );
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Announce)
                .await
                .unwrap(),
            Shown::Posted
        );
        let run = store
            .get_run(&run.request.request_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            run.card.as_ref().and_then(|c| c.ts.clone()),
            Some(MessageTs::new("1.000001"))
        );
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Final { taken: false })
                .await
                .unwrap(),
            Shown::Updated
        );
        assert_eq!(
            *chat.calls.lock().unwrap(),
            vec!["post C1", "update C1 1.000001"],
            "the response_url is left to the reply"
        );
        assert_eq!(run.response_url_uses, 0);
    }

    #[tokio::test]
    async fn announcing_without_a_usable_response_url_posts_and_records_the_ts() {
        let chat = Arc::new(Chat::default());
        // 31 minutes after the command: the response_url is over.
        let (d, store, run) = setup(chat.clone(), "https://hooks/1", 1000 + 31 * 60).await;
        let desk = CardDesk {
            deliverer: &d,
            waits: false,
        };
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Update).await.unwrap(),
            Shown::Skipped,
            "no card was ever shown: nothing to update"
        );
        assert_eq!(
            desk.show(&run, &card(&run), Purpose::Announce)
                .await
                .unwrap(),
            Shown::Posted
        );
        let stored = store
            .get_run(&run.request.request_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.card,
            Some(CardRef {
                channel: ChannelId::new("C1"),
                ts: Some(MessageTs::new("1.000001")),
                answer: false,
            })
        );
        assert_eq!(*chat.calls.lock().unwrap(), vec!["post C1"]);
    }
}
