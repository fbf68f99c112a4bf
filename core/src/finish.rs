//! Finishing a run: its job has ended, so its log becomes one reply in the channel, exactly
//! once. Used by the webhook (completion), the sweep, and the dispatcher (when the job had
//! already ended by the time the run was saved).
//!
//! Exactly once, in two conditional writes on the run item and nothing else:
//! 1. `begin_reply` takes the reply (no reply recorded, no live lease) and, in the same
//!    write, the `response_url` use it will spend — the intent is recorded before posting;
//! 2. the reply is delivered, then `finish_reply` records it and closes the run.
//!
//! The write that records the reply also records how the job ended (`history`), and the
//! run's `result` audit entry is written once, by whoever recorded it.
//!
//! A failed delivery gives the reply back (`release_reply`) and the run is due again soon.
//! A crash between posting and recording can repeat the reply once the lease expires (the
//! window is one DynamoDB write long); nothing can lose it.
//!
//! Two modes: on the webhook path every step is bounded (`Mode::Webhook`): a slow log or a
//! rate-limited post is not waited for, the run is left due and the sweep finishes it. In the
//! background (sweep, dispatcher) slow work is allowed up to the invocation's deadline, and a
//! log that cannot be read in time still ends in an answer with the job's link.

use crate::audit::{Audit, AuditEvent};
use crate::card::{Card, CardState};
use crate::card_delivery::{CardDesk, Purpose};
use crate::chat::OutgoingMessage;
use crate::clock::Clock;
use crate::delivery::{Deliverer, DeliveryError, Route, RESPONSE_URL_MAX_USES};
use crate::gitlab::{GitLab, GitLabError, Job, Status};
use crate::ids::ProjectId;
use crate::notice::Notice;
use crate::render::{self, JobReport};
use crate::reply::{Extraction, Extractor, Outcome};
use crate::run::{JobOutcome, Platform, RunRecord, RunResult, RunStatus};
use crate::store::{ReplyClaim, RunStore, StoreError};
use futures_util::StreamExt;
use std::time::{Duration, Instant};

/// How long one invocation holds the right to deliver a run's reply.
pub const REPLY_LEASE_SECS: u64 = 120;
/// When a run whose finish was put off (slow log, failed post) is looked at again.
pub const RETRY_SOON_SECS: u64 = 10;
/// The first sweep check of a running job whose webhook never came, doubling per check…
pub const FIRST_CHECK_SECS: u64 = 300;
/// …up to this.
pub const MAX_CHECK_SECS: u64 = 3600;
/// A job waiting to be played (or approved) is looked at this rarely.
pub const WAITING_CHECK_SECS: u64 = 6 * 3600;

/// When the sweep should look at an open run next, after `checks` looks.
pub fn next_check(now: u64, status: RunStatus, checks: u32) -> u64 {
    match status {
        RunStatus::WaitingManual => now + WAITING_CHECK_SECS,
        _ => now + (FIRST_CHECK_SECS << checks.min(4)).min(MAX_CHECK_SECS),
    }
}

/// What finishing needs besides the ports.
#[derive(Debug, Clone)]
pub struct FinishSettings {
    /// A Slack bot token is configured: shortened output can come with the full text as a
    /// file (only where the bot can upload).
    pub can_upload: bool,
    /// Background only: reads of a successful job's log that has no reply section yet.
    pub log_retries: u32,
    pub log_retry_delay: Duration,
}

impl Default for FinishSettings {
    fn default() -> Self {
        Self {
            can_upload: false,
            log_retries: 3,
            log_retry_delay: Duration::from_secs(2),
        }
    }
}

/// How much time finishing may take, and whether it may wait.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// GitLab is waiting for the answer: nothing slow, nothing after `deadline`.
    Webhook { deadline: Instant },
    /// The sweep or the dispatcher: slow reads and rate-limit waits until `deadline`.
    Background { deadline: Instant },
}

impl Mode {
    fn deadline(&self) -> Instant {
        match self {
            Mode::Webhook { deadline } | Mode::Background { deadline } => *deadline,
        }
    }
    fn is_webhook(&self) -> bool {
        matches!(self, Mode::Webhook { .. })
    }
}

/// What one attempt to finish a run did.
#[derive(Debug)]
pub enum Completed {
    Replied(Route),
    /// Someone else recorded the reply (or the run is no longer open).
    AlreadyReplied,
    /// The job has not ended yet (running, pending, waiting to be played…).
    NotFinished(Status),
    /// Another invocation is delivering this reply right now.
    Busy,
    /// Not now; the run stays open and is due again.
    Deferred(Deferral),
}

/// Why a run could not be finished now.
#[derive(Debug, thiserror::Error)]
pub enum Deferral {
    #[error("the run has no project id")]
    NoProject,
    #[error("GitLab could not say how the job ended")]
    Job(#[source] GitLabError),
    #[error("the job log could not be read")]
    Log(#[source] GitLabError),
    #[error("the job log is not complete yet")]
    LogIncomplete,
    #[error("not finished within the webhook's time budget")]
    TooSlow,
    #[error("the run store failed")]
    Store(#[source] StoreError),
    #[error("the reply could not be delivered")]
    Delivery(#[source] DeliveryError),
}

/// The ports finishing uses, borrowed from whoever finishes (completion or dispatcher).
pub struct Finisher<'a> {
    pub gitlab: &'a dyn GitLab,
    pub store: &'a dyn RunStore,
    pub deliverer: &'a Deliverer,
    pub clock: &'a dyn Clock,
    pub settings: &'a FinishSettings,
    pub audit: &'a Audit,
}

/// How an ended job is recorded; `None` for a status that is not an end.
pub fn outcome_of(job: &Job) -> Option<JobOutcome> {
    let result = match job.status {
        Status::Success => RunResult::Success,
        Status::Failed => RunResult::Failed,
        Status::Canceled => RunResult::Canceled,
        Status::Skipped => RunResult::Skipped,
        _ => return None,
    };
    Some(JobOutcome {
        result,
        duration_secs: job.duration,
    })
}

/// A job's log as `Finisher::read_log` read it, and whose it is.
pub struct ReadLog {
    pub project: ProjectId,
    pub job: crate::ids::JobId,
    pub log: Result<Extraction, Deferral>,
}

impl Finisher<'_> {
    /// Finish `run` if its job has ended. `known` is the job as an authenticated webhook
    /// reported it (saves asking GitLab).
    pub async fn finish(&self, run: &RunRecord, known: Option<Job>, mode: Mode) -> Completed {
        self.finish_with_log(run, known, None, mode).await
    }

    /// As `finish`, with the job's log already read (`read_log`) while the run was being read
    /// from the table: one round trip fewer on the webhook path. It is used only when it is
    /// the log of the job the run finishes, in the run's project.
    pub async fn finish_with_log(
        &self,
        run: &RunRecord,
        known: Option<Job>,
        log: Option<ReadLog>,
        mode: Mode,
    ) -> Completed {
        if !run.status.is_open() {
            return Completed::AlreadyReplied;
        }
        let Some(project) = run.project_id else {
            return Completed::Deferred(Deferral::NoProject);
        };
        let job = match known {
            Some(j) => j,
            None => match self.bounded(mode, self.find_job(run, project)).await {
                None => return Completed::Deferred(Deferral::TooSlow),
                Some(Ok(j)) => j,
                Some(Err(GitLabError::NotFound(what))) => {
                    let msg = OutgoingMessage::in_channel(
                        Notice::JobGone {
                            job: run.request.job.clone(),
                            detail: what,
                        }
                        .render(run.request.platform),
                    );
                    let gone = JobOutcome {
                        result: RunResult::Gone,
                        duration_secs: None,
                    };
                    return self
                        .reply(run, &msg, Some(gone), CardState::Failed, mode)
                        .await;
                }
                Some(Err(e)) => return Completed::Deferred(Deferral::Job(e)),
            },
        };
        if !job.status.is_final() {
            return Completed::NotFinished(job.status);
        }
        let log = match log.filter(|l| l.project == project && l.job == job.id) {
            Some(l) => l.log,
            None => self.read_log(project, &job, mode).await,
        };
        let msg = match log {
            Ok(extraction) => self.render(run, &job, extraction),
            Err(Deferral::TooSlow) if !mode.is_webhook() => {
                // The log does not come in time even in the background: answer with the link
                // rather than never (issue: a 10 s+ download was retried until the TTL).
                OutgoingMessage::in_channel(
                    Notice::LogUnreadable {
                        job: job.name.clone(),
                        status: format!("{:?}", job.status).to_lowercase(),
                        job_url: job_url(run, &job),
                    }
                    .render(run.request.platform),
                )
            }
            Err(d) => return Completed::Deferred(d),
        };
        self.reply(
            run,
            &msg,
            outcome_of(&job),
            CardState::of_job(job.status),
            mode,
        )
        .await
    }

    async fn bounded<T>(&self, mode: Mode, f: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout_at(mode.deadline().into(), f)
            .await
            .ok()
    }

    async fn find_job(&self, run: &RunRecord, project: ProjectId) -> Result<Job, GitLabError> {
        if let Some(id) = run.job_id {
            return self.gitlab.job(project, id).await;
        }
        let Some(pipeline) = run.pipeline_id else {
            return Err(GitLabError::NotFound("the run has no pipeline".into()));
        };
        self.gitlab
            .pipeline_jobs(project, pipeline)
            .await?
            .into_iter()
            .filter(|j| j.name == run.request.job)
            .max_by_key(|j| j.id)
            .ok_or_else(|| GitLabError::NotFound(format!("job {} in pipeline", run.request.job)))
    }

    /// Stream the log into the extractor within the mode's deadline. A successful job's log
    /// without a reply section may not be complete yet (GitLab archives logs
    /// asynchronously): in the background it is read again a few times; on the webhook path
    /// the run is left for the sweep instead of waiting.
    pub async fn read_log(
        &self,
        project: ProjectId,
        job: &Job,
        mode: Mode,
    ) -> Result<Extraction, Deferral> {
        let mut attempt = 0;
        loop {
            let read = async {
                let mut stream = self.gitlab.job_trace(project, job.id).await?;
                let mut x = Extractor::new();
                while let Some(chunk) = stream.next().await {
                    x.push(&chunk?);
                }
                Ok::<_, GitLabError>(x.finish())
            };
            let extraction = match self.bounded(mode, read).await {
                None => return Err(Deferral::TooSlow),
                Some(Err(e)) => return Err(Deferral::Log(e)),
                Some(Ok(x)) => x,
            };
            let incomplete =
                extraction.outcome == Outcome::NoReplySection && job.status == Status::Success;
            if !incomplete || attempt >= self.settings.log_retries {
                return Ok(extraction);
            }
            if mode.is_webhook() {
                return Err(Deferral::LogIncomplete);
            }
            attempt += 1;
            tracing::info!(job = %job.id, attempt, "log has no reply section yet; reading again");
            if self
                .bounded(mode, tokio::time::sleep(self.settings.log_retry_delay))
                .await
                .is_none()
            {
                return Ok(extraction);
            }
        }
    }

    fn render(&self, run: &RunRecord, job: &Job, extraction: Extraction) -> OutgoingMessage {
        let report = JobReport {
            job_name: job.name.clone(),
            job_id: job.id,
            status: job.status,
            duration_secs: job.duration,
            failure_reason: job.failure_reason.clone(),
            job_url: job_url(run, job),
            user_id: run.request.user_id.0.clone(),
            user_name: run.request.user_name.clone(),
            extraction,
        };
        match run.request.platform {
            Platform::Slack => render::slack(&report, self.settings.can_upload),
            Platform::Mattermost => render::mattermost(&report),
        }
    }

    /// Take the reply, show the run's card in its final `state`, deliver the reply, record it
    /// (with the job's outcome, audited once).
    async fn reply(
        &self,
        run: &RunRecord,
        msg: &OutgoingMessage,
        outcome: Option<JobOutcome>,
        state: CardState,
        mode: Mode,
    ) -> Completed {
        let id = &run.request.request_id;
        let now = self.clock.now();
        let response_url = self
            .deliverer
            .response_url_usable(&run.request)
            .then_some(RESPONSE_URL_MAX_USES);
        // The card's last state replaces the command's answer through the same response_url:
        // its use is taken in the same write as the reply's (both or neither), when two are
        // left (else the reply alone keeps the last one and the card stays as it is).
        let card_by_url = run.request.platform == Platform::Slack
            && run
                .card
                .as_ref()
                .is_some_and(|c| c.answer && c.ts.is_none())
            && run.response_url_uses + 2 <= RESPONSE_URL_MAX_USES;
        let uses = if card_by_url { 2 } else { 1 };
        let taken = match self
            .store
            .begin_reply(id, now, REPLY_LEASE_SECS, response_url, uses)
            .await
        {
            Ok(ReplyClaim::Claimed { response_url }) => response_url,
            Ok(ReplyClaim::Busy) => return Completed::Busy,
            Ok(ReplyClaim::Done) => return Completed::AlreadyReplied,
            Err(e) => return Completed::Deferred(Deferral::Store(e)),
        };
        // The card first: through the command's response_url, "replace the original" must come
        // before the reply is posted there. A card that cannot be updated stays as it was.
        let mut card = Card::of_run(run, state);
        if let Some(d) = outcome.and_then(|o| o.duration_secs) {
            card.duration_secs = Some(d.max(0.0).round() as u64);
        }
        let desk = CardDesk {
            deliverer: self.deliverer,
            waits: !mode.is_webhook(),
        };
        let purpose = Purpose::Final {
            taken: taken && card_by_url,
        };
        if let Err(e) = desk.show(run, &card, purpose).await {
            tracing::warn!(request_id = %id, error = %e, "could not update the run's card");
        }
        let waits = !mode.is_webhook();
        match self
            .deliverer
            .deliver_taken(&run.request, msg, taken, waits)
            .await
        {
            Ok(route) => {
                match self
                    .store
                    .finish_reply(id, self.clock.now(), outcome.as_ref())
                    .await
                {
                    Ok(true) => {
                        tracing::info!(request_id = %id, ?route, "reply delivered");
                        if let Some(o) = outcome {
                            let event = AuditEvent::Result {
                                result: o.result,
                                duration_secs: o.duration_secs,
                            };
                            self.audit.record(self.audit.of_run(event, run)).await;
                        }
                    }
                    Ok(false) => tracing::error!(
                        request_id = %id,
                        "reply delivered, but the run was already marked replied: a duplicate"
                    ),
                    Err(e) => tracing::error!(
                        request_id = %id,
                        error = %e,
                        "reply delivered but not recorded; it may be repeated once the lease ends"
                    ),
                }
                Completed::Replied(route)
            }
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "reply not delivered; the run is due again soon");
                let due = self.clock.now() + RETRY_SOON_SECS;
                if let Err(e) = self.store.release_reply(id, due).await {
                    tracing::warn!(request_id = %id, error = %e, "could not give the reply back; it waits for its lease");
                }
                Completed::Deferred(Deferral::Delivery(e))
            }
        }
    }
}

fn job_url(run: &RunRecord, job: &Job) -> String {
    if job.web_url.is_empty() {
        run.job_url.clone().unwrap_or_default()
    } else {
        job.web_url.clone()
    }
}
