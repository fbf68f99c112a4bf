//! Buttons on a run's card: a click becomes one GitLab action taken as the person who clicked.
//!
//! Two halves, like a command:
//! - `Intake` (the ingress, `POST /slack/interactions`): the signature is checked on the raw
//!   body exactly as for slash commands (`slack::verify`: 300 s window, constant time), the
//!   `block_actions` payload parsed, the click's `response_url` checked against the allowed
//!   prefixes, and each press of one of our buttons queued as an `ActionMessage`, all before
//!   the 3-second answer (an empty 200).
//! - `Clicks` (the dispatcher, from the queue): the run is looked up (unknown → said so; a
//!   run of another workspace → refused), the clicker acts in GitLab with their own link
//!   (OAuth: their token; unlinked → a connect link only they see; bot mode: their role is
//!   checked first), the run's current state is read from GitLab, and only if the button
//!   still fits does one conditional write claim the press (`RunStore::claim_action`): a
//!   double click, or two people, act once; the same click delivered again resumes. Then:
//!   Cancel → `POST …/pipelines/:id/cancel`, Run → `POST …/jobs/:id/play`, Retry → a new run
//!   of the same job and input by the clicker (returned to the dispatcher, which dispatches
//!   it like a command); Approve / Reject decide a four-eyes run (`approval`). GitLab refusing the clicker releases the claim and tells them, in
//!   GitLab's words. A button on a run that moved on answers with the current state (the
//!   card redrawn), never an error.

use crate::action::{ActionMessage, ACTION_MESSAGE, ACTION_MESSAGE_VERSION};
use crate::card::{self, Card, CardState, ClickNotice};
use crate::card_delivery::CardDesk;
use crate::chat::OutgoingMessage;
use crate::clock::Clock;
use crate::delivery::Deliverer;
use crate::gitlab::{AccessLevel, GitLab, GitLabError};
use crate::identity::{ChatPerson, CredentialError, Identity, IdentityError};
use crate::ids::{ChannelId, ChatUserId, MessageTs, ProjectId, RequestId, TeamId};
use crate::notice::Notice;
use crate::queue::{QueueError, RunQueue};
use crate::run::{
    ActionKind, ActionTaken, CardRef, Platform, RunRecord, RunRequest, RUN_REQUEST_VERSION,
};
use crate::secret::Secret;
use crate::slack::interaction::{self as payload, Interaction};
use crate::slack::verify;
use crate::store::{ActionClaim, RunStore, StoreError};
use crate::web::{self, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;

/// Slack's interactivity request URL (the app manifest's `settings.interactivity`).
pub const SLACK_INTERACTIONS_PATH: &str = "/slack/interactions";

/// Why a click is not taken; the ingress maps each to the same HTTP answer as for commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickRefusal {
    /// Bad or missing signature, or a timestamp outside the window: 401 with no detail.
    Unauthorized,
    BadRequest(String),
    ResponseUrlNotAllowed,
}

/// A stable hash of the parts (length-prefixed so `("ab","c")` and `("a","bc")` differ).
fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

/// The ingress half: authenticate, parse, queue.
pub struct Intake<'a> {
    pub signing_secret: &'a Secret,
    pub queue: &'a dyn RunQueue,
    pub clock: &'a dyn Clock,
    /// May our functions ever post to this URL (the ingress's allowed prefixes)?
    pub response_url_allowed: &'a (dyn Fn(&str) -> bool + Send + Sync),
}

impl Intake<'_> {
    /// One signed POST from Slack's interactivity; `public_base` is where the ingress was
    /// reached (for a connect link's callback).
    pub async fn slack(
        &self,
        req: &HttpRequest,
        public_base: Option<String>,
    ) -> Result<HttpResponse, ClickRefusal> {
        let timestamp = web::header(req, verify::TIMESTAMP_HEADER).unwrap_or_default();
        let signature = web::header(req, verify::SIGNATURE_HEADER).unwrap_or_default();
        let body = req.body().as_ref();
        let now = self.clock.now();
        if let Err(e) = verify::verify(self.signing_secret, timestamp, signature, body, now) {
            tracing::warn!(reason = %e, "slack interaction failed verification");
            return Err(ClickRefusal::Unauthorized);
        }
        let clicks =
            match payload::parse(body).map_err(|e| ClickRefusal::BadRequest(e.to_string()))? {
                Interaction::Other(kind) => {
                    tracing::info!(kind, "slack interaction that is not ours; acknowledged");
                    return Ok(web::text(200, ""));
                }
                Interaction::BlockActions(b) => *b,
            };
        if !(self.response_url_allowed)(&clicks.response_url) {
            tracing::warn!(team = %clicks.team_id, "refused a click whose response_url is not under an allowed prefix");
            return Err(ClickRefusal::ResponseUrlNotAllowed);
        }
        for press in &clicks.actions {
            let Some(kind) = card::action_kind(&press.action_id) else {
                tracing::info!(action_id = %press.action_id, "a press of a button that is not ours");
                continue;
            };
            if press.value.is_empty() {
                return Err(ClickRefusal::BadRequest("the button has no value".into()));
            }
            let message = ActionMessage {
                message: ACTION_MESSAGE.into(),
                action_version: ACTION_MESSAGE_VERSION,
                key: digest(&[
                    b"slack",
                    clicks.team_id.as_bytes(),
                    clicks.user_id.as_bytes(),
                    press.action_ts.as_bytes(),
                    press.action_id.as_bytes(),
                    press.value.as_bytes(),
                ]),
                kind,
                run: RequestId::new(press.value.clone()),
                platform: Platform::Slack,
                team_id: TeamId::new(clicks.team_id.clone()),
                user_id: ChatUserId::new(clicks.user_id.clone()),
                user_name: clicks.user_name.clone(),
                channel_id: ChannelId::new(clicks.channel_id.clone()),
                response_url: clicks.response_url.clone(),
                card: clicks.message_ts.as_ref().map(|ts| CardRef {
                    channel: ChannelId::new(clicks.channel_id.clone()),
                    ts: Some(MessageTs::new(ts.clone())),
                    answer: false,
                }),
                received_at: now,
                public_base: public_base.clone(),
            };
            match self.queue.send_action(&message).await {
                Ok(()) => tracing::info!(
                    run = %message.run,
                    kind = kind.as_str(),
                    team = %message.team_id,
                    user = %message.user_id,
                    "click queued"
                ),
                // It may be queued: Slack must not show the click as failed.
                Err(e @ QueueError::Unconfirmed(_)) => {
                    tracing::warn!(run = %message.run, error = %e, "the queue did not confirm a click")
                }
                Err(e) => {
                    // Slack marks the click as failed (a non-200), so the person clicks again.
                    tracing::error!(run = %message.run, error = %e, "could not queue a click");
                    return Ok(web::text(503, "the click could not be queued; try again"));
                }
            }
        }
        Ok(web::text(200, ""))
    }
}

/// What handling a click leaves to the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Done,
    /// Retry: dispatch this new run like a command.
    Dispatch(Box<RunRequest>),
}

/// Why a click must be tried again later (the queue redelivers it).
#[derive(Debug, thiserror::Error)]
pub enum ClickError {
    #[error("the run store failed")]
    Store(#[from] StoreError),
    #[error("GitLab failed")]
    GitLab(#[source] GitLabError),
    #[error("the clicker's GitLab identity is not available")]
    Identity(#[source] IdentityError),
}

/// Who acts for a click.
pub(crate) enum Clicker {
    Acts {
        gl: Arc<dyn GitLab>,
        /// Their role on the project when it was read on the way (bot mode); with their own
        /// token GitLab decides each action, and `project_access` says it when asked.
        access: Option<AccessLevel>,
        /// The GitLab user their link names.
        gitlab_user: String,
    },
    /// Cannot act; they were told why (connect, not linked, no access).
    Told,
}

/// The dispatcher half, over the ports the dispatcher already has.
pub struct Clicks<'a> {
    /// Bot mode's GitLab (unused with OAuth: every click acts with the clicker's token).
    pub gitlab: &'a Arc<dyn GitLab>,
    pub identity: Option<&'a Arc<Identity>>,
    pub store: &'a dyn RunStore,
    pub deliverer: &'a Deliverer,
    pub clock: &'a dyn Clock,
    /// Four-eyes decisions are audited.
    pub audit: &'a crate::audit::Audit,
    /// When this attempt must be done (a token refresh waits at most until then).
    pub deadline: Instant,
    /// When the sweep first looks at a job a click started.
    pub first_check_secs: u64,
}

impl Clicks<'_> {
    fn desk(&self) -> CardDesk<'_> {
        CardDesk {
            deliverer: self.deliverer,
            waits: true,
        }
    }

    /// Tell the clicker (only them). A message that cannot be delivered is logged: the
    /// click's state change (if any) is done, and repeating it would not help.
    async fn tell(&self, click: &ActionMessage, msg: &OutgoingMessage) {
        if let Err(e) = self.desk().tell_clicker(click, msg).await {
            tracing::warn!(run = %click.run, error = %e, "could not answer the clicker");
        }
    }

    pub(crate) async fn notice(&self, click: &ActionMessage, notice: ClickNotice) {
        self.tell(click, &notice.render(click.platform)).await;
    }

    /// Redraw the clicked card.
    pub(crate) async fn redraw(&self, click: &ActionMessage, card: &Card) {
        if let Err(e) = self.desk().replace_clicked(click, card).await {
            tracing::warn!(run = %click.run, error = %e, "could not redraw the clicked card");
        }
    }

    /// Handle one click.
    pub async fn handle(&self, click: &ActionMessage) -> Result<Handled, ClickError> {
        let Some(mut run) = self.store.get_run(&click.run).await? else {
            self.notice(click, ClickNotice::UnknownRun).await;
            return Ok(Handled::Done);
        };
        if run.request.team_id != click.team_id || run.request.platform != click.platform {
            tracing::warn!(
                run = %click.run,
                team = %click.team_id,
                run_team = %run.request.team_id,
                "refused a click on a run of another workspace"
            );
            self.notice(click, ClickNotice::ForeignTeam).await;
            return Ok(Handled::Done);
        }
        self.remember_card(&mut run, click).await;
        let kind = click.kind;
        if kind.decides() {
            return self.decide(click, run).await;
        }
        let job = run.request.job.clone();
        if run.status == crate::run::RunStatus::AwaitingApproval {
            self.moved_on(click, &run, CardState::AwaitingApproval)
                .await;
            return Ok(Handled::Done);
        }
        let (Some(project), Some(job_id), Some(pipeline)) =
            (run.project_id, run.job_id, run.pipeline_id)
        else {
            self.notice(click, ClickNotice::NotStarted { job, kind })
                .await;
            return Ok(Handled::Done);
        };
        let gl = match self.clicker(click, &run, project).await? {
            Clicker::Acts { gl, .. } => gl,
            Clicker::Told => return Ok(Handled::Done),
        };
        // Where the run stands now, as the clicker sees it.
        let state = match gl.job(project, job_id).await {
            Ok(j) => CardState::of_job(j.status),
            Err(e) => return self.refused(click, &run, e).await.map(|()| Handled::Done),
        };
        if !state.offers(kind) {
            self.moved_on(click, &run, state).await;
            return Ok(Handled::Done);
        }
        let taken = ActionTaken {
            key: click.key.clone(),
            by: click.user_id.clone(),
            by_name: click.user_name.clone(),
            at: self.clock.now(),
        };
        let id = run.request.request_id.clone();
        let again = match self.store.claim_action(&id, kind, &taken).await? {
            ActionClaim::Claimed { again } => again,
            ActionClaim::NoRun => {
                self.notice(click, ClickNotice::UnknownRun).await;
                return Ok(Handled::Done);
            }
            ActionClaim::Taken(first) => {
                tracing::info!(run = %id, kind = kind.as_str(), by = %first.by, "pressed already");
                run.actions.set(kind, Some(first.clone()));
                self.redraw(click, &Card::of_run(&run, state)).await;
                let by = crate::notice::Person {
                    id: first.by.as_str().to_owned(),
                    name: first.by_name,
                };
                self.notice(click, ClickNotice::AlreadyDone { job, kind, by })
                    .await;
                return Ok(Handled::Done);
            }
        };
        run.actions.set(kind, Some(taken));
        let acted = match kind {
            ActionKind::Cancel => gl.cancel_pipeline(project, pipeline).await,
            ActionKind::Play => gl.play_job(project, job_id).await.map(|_| ()),
            // Retry dispatches below; Approve / Reject were decided in `decide` above.
            ActionKind::Retry | ActionKind::Approve | ActionKind::Reject => Ok(()),
        };
        let acted = match acted {
            // `Unplayable Job` on a click delivered again: its first delivery played it.
            Err(GitLabError::Rejected(_)) if again && kind == ActionKind::Play => Ok(()),
            other => other,
        };
        if let Err(e) = acted {
            if !(e.is_retryable() || matches!(e, GitLabError::Protocol(_))) {
                // Refused: someone else may press it.
                self.store.release_action(&id, kind, &click.key).await?;
            }
            if kind == ActionKind::Play && matches!(e, GitLabError::Rejected(_)) {
                // `Unplayable Job`: it was played meanwhile (in GitLab, or by a click whose
                // claim was released). Say where it stands now.
                run.actions.set(kind, None);
                let state = match gl.job(project, job_id).await {
                    Ok(j) => CardState::of_job(j.status),
                    Err(_) => CardState::Running,
                };
                self.moved_on(click, &run, state).await;
                return Ok(Handled::Done);
            }
            return self.refused(click, &run, e).await.map(|()| Handled::Done);
        }
        tracing::info!(run = %id, kind = kind.as_str(), user = %click.user_id, "click acted");
        match kind {
            ActionKind::Cancel => {
                self.redraw(click, &Card::of_run(&run, CardState::Cancelled))
                    .await;
                Ok(Handled::Done)
            }
            ActionKind::Play => {
                // Its webhook ends it; if that is lost, the sweep looks soon rather than in
                // the hours a waiting job is given.
                let due = self.clock.now() + self.first_check_secs;
                if let Err(e) = self.store.schedule_check(&id, due, 0).await {
                    tracing::warn!(run = %id, error = %e, "could not bring the sweep forward");
                }
                self.redraw(click, &Card::of_run(&run, CardState::Running))
                    .await;
                Ok(Handled::Done)
            }
            ActionKind::Retry => {
                self.redraw(click, &Card::of_run(&run, state)).await;
                Ok(Handled::Dispatch(Box::new(retry_request(
                    &run,
                    click,
                    self.clock.now(),
                ))))
            }
            ActionKind::Approve | ActionKind::Reject => Ok(Handled::Done),
        }
    }

    /// A click reports which message the card is: later updates can then use `chat.update`.
    async fn remember_card(&self, run: &mut RunRecord, click: &ActionMessage) {
        let Some(clicked) = &click.card else { return };
        if run.card.as_ref().is_some_and(|c| c.ts == clicked.ts) {
            return;
        }
        let card = CardRef {
            answer: run.card.as_ref().is_some_and(|c| c.answer),
            ..clicked.clone()
        };
        match self.store.set_card(&run.request.request_id, &card).await {
            Ok(()) => run.card = Some(card),
            Err(e) => {
                tracing::warn!(run = %click.run, error = %e, "could not record where the card is")
            }
        }
    }

    /// The card redrawn in its current state, and the clicker told the button no longer fits.
    pub(crate) async fn moved_on(&self, click: &ActionMessage, run: &RunRecord, state: CardState) {
        self.redraw(click, &Card::of_run(run, state)).await;
        self.notice(
            click,
            ClickNotice::MovedOn {
                job: run.request.job.clone(),
                kind: click.kind,
                state,
            },
        )
        .await;
    }

    /// GitLab's refusal, told to the clicker; unavailable GitLab is tried again later.
    pub(crate) async fn refused(
        &self,
        click: &ActionMessage,
        run: &RunRecord,
        e: GitLabError,
    ) -> Result<(), ClickError> {
        let job = run.request.job.clone();
        match e {
            e @ (GitLabError::Retryable(_) | GitLabError::Protocol(_)) => {
                Err(ClickError::GitLab(e))
            }
            GitLabError::Unauthorized(_) if self.identity.is_some() => {
                // GitLab no longer takes their token (revoked, expired grant).
                if let Some(identity) = self.identity {
                    self.connect(identity, click, true).await?;
                }
                Ok(())
            }
            GitLabError::NotFound(_) if run.job_id.is_some() => {
                self.notice(click, ClickNotice::JobGone { job }).await;
                Ok(())
            }
            GitLabError::Unauthorized(message)
            | GitLabError::Forbidden(message)
            | GitLabError::NotFound(message)
            | GitLabError::Rejected(message) => {
                tracing::info!(run = %click.run, user = %click.user_id, %message, "GitLab refused the clicker");
                self.notice(
                    click,
                    ClickNotice::Refused {
                        job,
                        kind: click.kind,
                        message,
                    },
                )
                .await;
                Ok(())
            }
        }
    }

    /// The clicker's GitLab: their own token (OAuth), or the bot's after checking their role.
    pub(crate) async fn clicker(
        &self,
        click: &ActionMessage,
        run: &RunRecord,
        project: ProjectId,
    ) -> Result<Clicker, ClickError> {
        let link = self
            .store
            .get_user(click.team_id.as_str(), click.user_id.as_str())
            .await?;
        let person = ChatPerson {
            platform: click.platform,
            team_id: click.team_id.clone(),
            user_id: click.user_id.clone(),
        };
        match (self.identity, link) {
            (Some(identity), None) => {
                self.connect(identity, click, false).await?;
                Ok(Clicker::Told)
            }
            (Some(identity), Some(link)) => {
                match identity.gitlab_for(&person, &link, self.deadline).await {
                    Ok(gl) => Ok(Clicker::Acts {
                        gl,
                        access: None,
                        gitlab_user: link.gitlab_username,
                    }),
                    Err(CredentialError::Reconnect(why)) => {
                        tracing::info!(run = %click.run, why, "the clicker must connect GitLab");
                        self.connect(identity, click, link.grant.is_some()).await?;
                        Ok(Clicker::Told)
                    }
                    Err(CredentialError::Unavailable(e)) => Err(ClickError::Identity(e)),
                }
            }
            (None, None) => {
                let notice = Notice::Unlinked {
                    job: run.request.job.clone(),
                    team: click.team_id.to_string(),
                    user: click.user_id.to_string(),
                };
                self.tell(
                    click,
                    &OutgoingMessage::ephemeral(notice.render(click.platform)),
                )
                .await;
                Ok(Clicker::Told)
            }
            (None, Some(link)) => {
                // Bot mode: the one token could do more than the person may (GitLab lets
                // Developers and up cancel and play); check their role first.
                let user = match link.gitlab_user_id {
                    Some(id) => Some(id),
                    None => self
                        .gitlab
                        .user_by_username(&link.gitlab_username)
                        .await
                        .map_err(ClickError::GitLab)?
                        .filter(|u| u.state != "blocked" && u.state != "banned")
                        .map(|u| u.id),
                };
                let level = match user {
                    Some(u) => self
                        .gitlab
                        .member_access(project, u)
                        .await
                        .map_err(ClickError::GitLab)?,
                    None => None,
                };
                if level.is_some_and(|l| l >= AccessLevel::DEVELOPER) {
                    return Ok(Clicker::Acts {
                        gl: self.gitlab.clone(),
                        access: level,
                        gitlab_user: link.gitlab_username,
                    });
                }
                let notice = Notice::AccessDenied {
                    project_url: run.project_web_url.clone().unwrap_or_default(),
                };
                self.tell(
                    click,
                    &OutgoingMessage::ephemeral(notice.render(click.platform)),
                )
                .await;
                Ok(Clicker::Told)
            }
        }
    }

    /// A connect link only the clicker sees; they click again once connected.
    async fn connect(
        &self,
        identity: &Identity,
        click: &ActionMessage,
        again: bool,
    ) -> Result<(), ClickError> {
        let person = ChatPerson {
            platform: click.platform,
            team_id: click.team_id.clone(),
            user_id: click.user_id.clone(),
        };
        let notice = match identity.settings.redirect_uri(click.public_base.as_deref()) {
            None => Notice::ConnectUnavailable,
            Some(redirect) => Notice::Connect {
                url: identity
                    .connect_link(&person, &redirect, None)
                    .await
                    .map_err(ClickError::Identity)?,
                job: None,
                again,
            },
        };
        // The link is a credential for ten minutes: never in a log line.
        tracing::info!(run = %click.run, user = %click.user_id, "connect link sent to the clicker");
        self.tell(
            click,
            &OutgoingMessage::ephemeral(notice.render(click.platform)),
        )
        .await;
        Ok(())
    }

    /// The last attempt failed too: tell the clicker rather than nothing.
    pub async fn give_up(&self, click: &ActionMessage) {
        let job = match self.store.get_run(&click.run).await {
            Ok(Some(run)) => run.request.job,
            _ => String::new(),
        };
        self.notice(click, ClickNotice::GaveUp { job }).await;
    }
}

/// The id of a run's retry: one per run (the retry press is claimed once), the same on every
/// redelivery, so the new run is dispatched once.
pub fn retry_request_id(original: &RequestId) -> RequestId {
    RequestId::new(digest(&[b"retry", original.as_str().as_bytes()]))
}

/// The new run a Retry press makes: the same job and input, in the same channel, by the
/// clicker.
fn retry_request(run: &RunRecord, click: &ActionMessage, now: u64) -> RunRequest {
    let old = &run.request;
    RunRequest {
        version: RUN_REQUEST_VERSION,
        request_id: retry_request_id(&old.request_id),
        platform: click.platform,
        team_id: click.team_id.clone(),
        team_domain: old.team_domain.clone(),
        channel_id: old.channel_id.clone(),
        channel_name: old.channel_name.clone(),
        user_id: click.user_id.clone(),
        user_name: click.user_name.clone(),
        command: old.command.clone(),
        job: old.job.clone(),
        input: old.input.clone(),
        // The new run gets a card of its own, posted with the bot token: the click's
        // response_url would replace the old run's card instead.
        response_url: String::new(),
        received_at: now,
        public_base: click.public_base.clone(),
        kind: crate::run::RequestKind::Run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_ids_are_stable_and_new() {
        let a = retry_request_id(&RequestId::new("r1"));
        assert_eq!(a, retry_request_id(&RequestId::new("r1")));
        assert_ne!(a, retry_request_id(&RequestId::new("r2")));
        assert_ne!(a.as_str(), "r1");
        assert_eq!(a.as_str().len(), 32);
    }

    #[test]
    fn click_keys_tell_two_clicks_apart_but_not_a_resend() {
        let k = |ts: &str| {
            digest(&[
                b"slack",
                b"T1",
                b"U1",
                ts.as_bytes(),
                b"chatops_cancel",
                b"r1",
            ])
        };
        assert_eq!(k("1.1"), k("1.1"));
        assert_ne!(k("1.1"), k("1.2"));
    }
}
