//! The dispatcher: one queued run request becomes exactly one GitLab pipeline running just
//! the requested job, or one clear message to the user saying why not.
//!
//! Flow per message: parse (a malformed body or unknown version is acknowledged and logged:
//! retrying will not fix it) → claim the request in the runs table (a conditional write with
//! a lease, so redeliveries and concurrent invocations never create a second pipeline, and a
//! crash mid-way is taken over once the lease runs out) → the chat user's GitLab link → who
//! acts in GitLab: with OAuth, the person's own token (refreshed when due; not connected →
//! an ephemeral connect link, and the command runs once they connected), so GitLab's
//! protected branches, variables and approvals apply to them; in bot mode, the one token
//! after a Developer check (`members/all/:user_id`) → the job on the default branch
//! (`ci/lint?include_jobs=true`) → `POST /pipeline` with the contract's variables → the
//! pipeline must hold exactly that job (else it is cancelled and the user told which jobs
//! joined) → the run is recorded and its card (the command's answer, replaced in place)
//! shows who started what, with the links. A queued click on a card (`action`) is handed to
//! `interaction::Clicks`; a Retry comes back here as a new run.
//!
//! GitLab being unavailable is retryable: the lease is released and the message goes back to
//! SQS; on the `MAX_ATTEMPTS`th receive the user is told instead, so nothing ends silently.
//! Every message to the user goes through the `Deliverer`, which counts `response_url` uses.
//!
//! A `help` request is no run: nothing is claimed or recorded; the job list (`help`) goes to
//! the person as they are known to GitLab, and nobody is sent a connect link for it.
//! Refusals and created pipelines are audited (`audit`).

use crate::audit::{Audit, AuditEvent, AuditSettings};
use crate::chat::OutgoingMessage;
use crate::clock::Clock;
use crate::config::{ConfigError, Env, SecretSource};
use crate::delivery::{ChatSettings, Deliverer, DeliveryError};
use crate::finish::{FinishSettings, Finisher};
use crate::gitlab::{AccessLevel, CiConfig, GitLab, GitLabError, Job, Pipeline, Project, Status};
use crate::identity::{ChatPerson, CredentialError, Identity, IdentityError};
use crate::ids::{ChannelId, ProjectRef, RequestId};
use crate::notice::{Notice, Unscheduled};
use crate::oauth::OAuthSettings;
use crate::policy::{JobPolicy, POLICY_PATH};
use crate::report::chain;
use crate::run::{RequestKind, RunRecord, RunRequest, RunStatus, UserLink, RUN_REQUEST_VERSION};
use crate::secret::Secret;
use crate::store::{DispatchClaim, RunStore, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Receives of one message before the user is told it could not be scheduled. Matches the
/// queue's redrive `maxReceiveCount`, so a message reaches the DLQ only after the user knows.
pub const MAX_ATTEMPTS: u32 = 5;
/// How long one dispatcher owns a claimed request (longer than the function's timeout).
pub const LEASE_SECS: u64 = 120;
/// The time one attempt may take when the transport gives no deadline (local mode, tests):
/// the function's 30 s timeout less a margin.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(25);
/// Kept free at the end of an attempt: releasing the lease (one store write, bounded by the
/// AWS client's own timeouts) and answering the invocation.
pub const FINISH_MARGIN: Duration = Duration::from_secs(3);
/// A pipeline is only created when at least this much time is left: the create is never cut
/// in the middle (its outcome would be unknown), and the run must be recorded after it.
pub const CREATE_NEEDS: Duration = Duration::from_secs(15);
/// The pipeline variable that carries the request id, so a retry finds the pipeline an
/// earlier attempt created (when that attempt died or timed out on the create's answer).
pub const REQUEST_ID_VARIABLE: &str = "CHATOPS_REQUEST_ID";
/// Four-eyes runs: who approved (their GitLab username), so the job can record or check it.
pub const APPROVED_BY_VARIABLE: &str = "CHAT_APPROVED_BY";
/// How far before the request a found pipeline may have been updated (clock skew).
const FIND_SLACK_SECS: u64 = 300;

/// The dispatcher's configuration, read once at cold start.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub gitlab_url: String,
    /// Bot mode's token (acts for everyone). Empty with OAuth: every GitLab call of a run is
    /// made with the person's own token, and no deployed secret can create pipelines.
    pub gitlab_token: Secret,
    /// The GitLab OAuth application (`GITLAB_OAUTH_CLIENT_ID`); `None` is bot mode.
    pub oauth: Option<OAuthSettings>,
    /// `GITLAB_PROJECT`: the project runs go to (id or `group/project`).
    pub project: ProjectRef,
    /// `CHANNEL_PROJECTS`: `C123=group/proj,C456=42` sends a channel's runs elsewhere.
    pub channel_projects: HashMap<String, ProjectRef>,
    pub runs_table: String,
    /// Where messages to the channel go (Slack, Mattermost).
    pub chat: ChatSettings,
    /// `SWEEP_AFTER_SECS`: when the sweep first looks at a running job whose webhook never
    /// came (it backs off from there).
    pub first_check_secs: u64,
    /// Where refusals and created pipelines are audited (`AUDIT_*`).
    pub audit: AuditSettings,
}

impl DispatcherConfig {
    pub const ENV: &[&str] = &[
        "CONFIG_VERSION",
        "SWEEP_AFTER_SECS",
        "GITLAB_URL",
        "GITLAB_TOKEN",
        "GITLAB_TOKEN_PARAM",
        "GITLAB_OAUTH_CLIENT_ID",
        "GITLAB_OAUTH_CLIENT_SECRET",
        "GITLAB_OAUTH_CLIENT_SECRET_PARAM",
        "PUBLIC_BASE_URL",
        "TOKEN_KEY_ID",
        "GITLAB_PROJECT",
        "CHANNEL_PROJECTS",
        "RUNS_TABLE",
        "SLACK_BOT_TOKEN",
        "SLACK_BOT_TOKEN_PARAM",
        "SLACK_API_URL",
        "MATTERMOST_URL",
        "MATTERMOST_BOT_TOKEN",
        "MATTERMOST_BOT_TOKEN_PARAM",
        "MATTERMOST_ACTIONS_SECRET",
        "MATTERMOST_ACTIONS_SECRET_PARAM",
        "AUDIT_TABLE",
        "AUDIT_INPUT",
        "AUDIT_RETENTION_DAYS",
    ];

    pub async fn from_env(env: &Env, secrets: &dyn SecretSource) -> Result<Self, ConfigError> {
        env.log_config_version();
        let gitlab_url = env.or("GITLAB_URL", crate::gitlab::DEFAULT_GITLAB_URL);
        let oauth = OAuthSettings::from_env(env, secrets, &gitlab_url).await?;
        let gitlab_token = match &oauth {
            Some(_) => env
                .secret("GITLAB_TOKEN", secrets)
                .await?
                .unwrap_or_default(),
            None => {
                tracing::warn!(
                    "bot mode: GITLAB_OAUTH_CLIENT_ID is not set, so every pipeline is created \
                     with GITLAB_TOKEN and GitLab's protections apply to its user, not to the \
                     person who asked (see the README, \"Bot mode\")"
                );
                env.required_secret("GITLAB_TOKEN", secrets).await?
            }
        };
        Ok(Self {
            gitlab_url,
            gitlab_token,
            oauth,
            project: ProjectRef::new(env.required("GITLAB_PROJECT")?.trim()),
            channel_projects: parse_channel_projects(env.get("CHANNEL_PROJECTS").unwrap_or(""))?,
            runs_table: env.required("RUNS_TABLE")?,
            chat: ChatSettings::from_env(env, secrets).await?,
            first_check_secs: env.parse_or("SWEEP_AFTER_SECS", crate::finish::FIRST_CHECK_SECS)?,
            audit: AuditSettings::from_env(env)?,
        })
    }

    /// The project a channel's runs go to.
    pub fn project_for(&self, channel: &ChannelId) -> &ProjectRef {
        self.channel_projects
            .get(channel.as_str())
            .unwrap_or(&self.project)
    }
}

/// `C123=group/proj, C456=42` → map; an entry without `=` or with an empty side is refused.
pub fn parse_channel_projects(s: &str) -> Result<HashMap<String, ProjectRef>, ConfigError> {
    let mut out = HashMap::new();
    for entry in s
        .split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match entry.split_once('=') {
            Some((c, p)) if !c.trim().is_empty() && !p.trim().is_empty() => {
                out.insert(c.trim().to_owned(), ProjectRef::new(p.trim()));
            }
            _ => {
                return Err(ConfigError::Invalid {
                    name: "CHANNEL_PROJECTS".into(),
                    reason: format!("entry {entry:?} is not CHANNEL=PROJECT"),
                })
            }
        }
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Try again later (SQS redelivers the message).
    #[error("retry later")]
    Retryable(#[source] RetryReason),
    /// The message can never be processed; acknowledged after logging.
    #[error("the message can never be processed")]
    Permanent(#[source] BadMessage),
}

/// Why a message goes back to the queue.
#[derive(Debug, thiserror::Error)]
pub enum RetryReason {
    #[error("the run store failed")]
    Store(#[from] StoreError),
    #[error("GitLab failed")]
    GitLab(#[from] GitLabError),
    #[error("request {0} is being dispatched by another invocation")]
    Busy(RequestId),
    #[error("the person could not be told")]
    Undelivered(#[from] DeliveryError),
    #[error("the invocation's deadline is near; the message goes back to the queue")]
    Deadline,
    #[error("the person's GitLab identity is not available")]
    Identity(#[from] IdentityError),
    #[error("a click could not be handled")]
    Click(#[from] crate::interaction::ClickError),
}

/// Why a message can never be processed.
#[derive(Debug, thiserror::Error)]
pub enum BadMessage {
    #[error("the body is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error(
        "run request version {0} is not supported (this dispatcher reads {RUN_REQUEST_VERSION})"
    )]
    Version(u64),
    #[error("the run request has no version")]
    NoVersion,
    #[error("malformed run request")]
    Malformed(#[source] serde_json::Error),
    #[error("unreadable click")]
    Click(#[source] crate::action::ActionMessageError),
}

impl From<StoreError> for DispatchError {
    fn from(e: StoreError) -> Self {
        DispatchError::Retryable(e.into())
    }
}

/// What one attempt has: which receive this is, and when it must be done.
struct Attempt {
    receive_count: u32,
    deadline: Instant,
}

impl Attempt {
    /// Time left before the margin kept for releasing and answering.
    fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(FINISH_MARGIN)
    }

    /// Run one step, or stop with `Deadline` when it would outlive the attempt.
    async fn within<T>(&self, step: impl Future<Output = Result<T, Stop>>) -> Result<T, Stop> {
        match tokio::time::timeout(self.remaining(), step).await {
            Ok(r) => r,
            Err(_) => Err(Stop::Retry(RetryReason::Deadline)),
        }
    }
}

/// What became of one delivery of a queued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handled (or dropped for good, logged): acknowledge it.
    Done,
    /// Leave it on the queue: it comes back after the visibility timeout.
    Retry,
}

/// Why a step stopped the run.
enum Stop {
    /// Tell the user this and end the run (`Refused`).
    Refuse(Notice),
    /// GitLab or the store is unavailable.
    Retry(RetryReason),
    /// GitLab no longer accepts the person's token: they are sent a connect link.
    Reconnect,
    /// Four-eyes: the job's policy wants someone else's approval first (`approval`).
    AwaitApproval(Box<JobPolicy>),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Retry(e.into())
    }
}

pub struct Dispatcher {
    pub config: DispatcherConfig,
    /// Bot mode's GitLab (the one token). With OAuth, runs use `identity` instead.
    pub gitlab: Arc<dyn GitLab>,
    /// People's own GitLab identities (OAuth); `None` in bot mode.
    pub identity: Option<Arc<Identity>>,
    pub store: Arc<dyn RunStore>,
    pub deliverer: Deliverer,
    pub clock: Arc<dyn Clock>,
    /// Refusals and created pipelines (`Audit::default()`: log lines only).
    pub audit: Audit,
}

impl Dispatcher {
    /// One delivery of a queued message, as every transport (the Lambda's SQS batch, local
    /// mode's workers) hands it over: handled, or to be retried. A message that can never
    /// be processed is logged and acknowledged here, in one place.
    pub async fn handle_delivery(
        &self,
        message_id: &str,
        body: &str,
        receive_count: u32,
        deadline: Option<Instant>,
    ) -> Delivery {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + DEFAULT_BUDGET);
        match self.handle_attempt(body, receive_count, deadline).await {
            Ok(()) => Delivery::Done,
            Err(e @ DispatchError::Permanent(_)) => {
                tracing::error!(message_id, error = %chain(&e), "run request dropped");
                Delivery::Done
            }
            Err(e @ DispatchError::Retryable(_)) => {
                tracing::warn!(message_id, error = %chain(&e), receive_count, "run request will be retried");
                Delivery::Retry
            }
        }
    }

    /// One message body; `receive_count` is SQS's `ApproximateReceiveCount`. Works within
    /// [`DEFAULT_BUDGET`].
    pub async fn handle_message(
        &self,
        body: &str,
        receive_count: u32,
    ) -> Result<(), DispatchError> {
        self.handle_attempt(body, receive_count, Instant::now() + DEFAULT_BUDGET)
            .await
    }

    /// One attempt, done (or stopped and released) before `deadline`.
    pub async fn handle_attempt(
        &self,
        body: &str,
        receive_count: u32,
        deadline: Instant,
    ) -> Result<(), DispatchError> {
        if let Some(click) = crate::action::ActionMessage::from_body(body)
            .map_err(|e| DispatchError::Permanent(BadMessage::Click(e)))?
        {
            return self.click(&click, receive_count, deadline).await;
        }
        let request = parse_request(body)?;
        self.attempt_request(request, receive_count, deadline).await
    }

    /// A click on a card (`interaction::Clicks`); a Retry dispatches its new run right here.
    async fn click(
        &self,
        click: &crate::action::ActionMessage,
        receive_count: u32,
        deadline: Instant,
    ) -> Result<(), DispatchError> {
        let clicks = crate::interaction::Clicks {
            gitlab: &self.gitlab,
            identity: self.identity.as_ref(),
            store: self.store.as_ref(),
            deliverer: &self.deliverer,
            clock: self.clock.as_ref(),
            audit: &self.audit,
            deadline: deadline.checked_sub(FINISH_MARGIN).unwrap_or(deadline),
            first_check_secs: self.config.first_check_secs,
        };
        match clicks.handle(click).await {
            Ok(crate::interaction::Handled::Done) => Ok(()),
            Ok(crate::interaction::Handled::Dispatch(request)) => {
                self.attempt_request(*request, receive_count, deadline)
                    .await
            }
            Err(e) if receive_count >= MAX_ATTEMPTS => {
                tracing::error!(run = %click.run, error = %chain(&e), "giving up on a click");
                clicks.give_up(click).await;
                Ok(())
            }
            Err(e) => Err(DispatchError::Retryable(e.into())),
        }
    }

    /// One attempt at a parsed run request.
    async fn attempt_request(
        &self,
        request: RunRequest,
        receive_count: u32,
        deadline: Instant,
    ) -> Result<(), DispatchError> {
        if request.kind == RequestKind::Help {
            return self.help(&request, receive_count, deadline).await;
        }
        let now = self.clock.now();
        // The person's link is read while the request is claimed: one round trip to the
        // table instead of two (wasted only when the claim finds the run taken or done).
        let (claim, link) = tokio::join!(
            self.store.claim_dispatch(&request, now, LEASE_SECS),
            self.store
                .get_user(request.team_id.as_str(), request.user_id.as_str())
        );
        let claim = match claim {
            Ok(c) => c,
            Err(e) if receive_count >= MAX_ATTEMPTS => {
                // The store is down for the whole retry window: the message would go to the
                // DLQ and the person would never hear. Tell them without the store.
                return self.last_word(&request, RetryReason::Store(e)).await;
            }
            Err(e) => return Err(e.into()),
        };
        let rec = match claim {
            DispatchClaim::Claimed(rec) => *rec,
            DispatchClaim::Done(rec) => {
                tracing::info!(request_id = %rec.request.request_id, status = ?rec.status, "already dispatched");
                return Ok(());
            }
            DispatchClaim::Busy if receive_count >= MAX_ATTEMPTS => {
                // The lease holder is alive and will finish (or its lease runs out and the
                // sweep of open runs never sees it): nothing more this copy can do.
                tracing::warn!(request_id = %request.request_id, "still claimed by another dispatcher on the last attempt");
                return Ok(());
            }
            DispatchClaim::Busy => {
                return Err(DispatchError::Retryable(RetryReason::Busy(
                    request.request_id.clone(),
                )))
            }
        };
        let mut rec = rec;
        let attempt = Attempt {
            receive_count,
            deadline,
        };
        let outcome = match self.dispatch(&mut rec, link, &attempt).await {
            Err(Stop::Reconnect) => Err(self.connect(&rec.request, true).await),
            other => other,
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Stop::Reconnect) => unreachable_reconnect(),
            Err(Stop::AwaitApproval(rule)) => self.await_approval(rec, &rule).await,
            Err(Stop::Refuse(notice)) => self.refuse(rec, &notice).await,
            Err(Stop::Retry(reason)) if receive_count >= MAX_ATTEMPTS => {
                let why = chain(&reason);
                tracing::error!(request_id = %rec.request.request_id, error = %why, "giving up after {MAX_ATTEMPTS} attempts");
                let notice = unscheduled(
                    &rec.request,
                    Unscheduled::GaveUp {
                        reason: why,
                        attempts: MAX_ATTEMPTS,
                    },
                );
                match self.refuse(rec.clone(), &notice).await {
                    Err(DispatchError::Retryable(e)) => self.last_word(&rec.request, e).await,
                    other => other,
                }
            }
            Err(Stop::Retry(reason)) => {
                // Let the redelivery claim it at once instead of waiting for the lease.
                rec.lease_until = 0;
                rec.updated_at = self.clock.now();
                if let Err(e) = self.save(&mut rec).await {
                    tracing::warn!(error = %e, "could not release the lease");
                }
                Err(DispatchError::Retryable(reason))
            }
        }
    }

    /// The last attempt could not record anything: tell the person directly, uncounted, and
    /// acknowledge the message (an alarm on the dispatcher's errors and logs remain).
    async fn last_word(
        &self,
        request: &RunRequest,
        reason: RetryReason,
    ) -> Result<(), DispatchError> {
        let why = chain(&reason);
        tracing::error!(request_id = %request.request_id, error = %why, "giving up after {MAX_ATTEMPTS} attempts; telling the person without the run store");
        let notice = unscheduled(
            request,
            Unscheduled::GaveUp {
                reason: why,
                attempts: MAX_ATTEMPTS,
            },
        );
        let msg = OutgoingMessage::ephemeral(notice.render(request.platform).as_str());
        match self.deliverer.deliver_unrecorded(request, &msg).await {
            Ok(_) => {
                let event = refused(&notice, request.platform);
                self.audit
                    .record(self.audit.of_request(event, request))
                    .await;
                Ok(())
            }
            Err(e) => {
                // Nothing more can be done from here: the DLQ keeps the message and its
                // alarm fires.
                tracing::error!(request_id = %request.request_id, error = %e, "the person could not be told either");
                Err(DispatchError::Retryable(e.into()))
            }
        }
    }

    /// Tell the user, then close the run. A message that cannot be delivered keeps the run
    /// open for a retry: the user must hear why.
    async fn refuse(&self, mut rec: RunRecord, notice: &Notice) -> Result<(), DispatchError> {
        let text = notice.render(rec.request.platform);
        let msg = OutgoingMessage::ephemeral(text.as_str());
        // A run refused before its card was shown: the use its claim counted for the card
        // carries the refusal instead of a second one being counted.
        let sent = if rec.announce_use && self.deliverer.response_url_usable(&rec.request) {
            rec.announce_use = false;
            self.deliverer
                .deliver_taken(&rec.request, &msg, true, true)
                .await
        } else {
            self.deliverer.deliver(&rec.request, &msg).await
        };
        if let Err(e) = sent {
            rec.lease_until = 0;
            let _ = self.save(&mut rec).await;
            return Err(DispatchError::Retryable(e.into()));
        }
        rec.status = RunStatus::Refused;
        rec.updated_at = self.clock.now();
        let connecting = matches!(notice, Notice::Connect { .. });
        if !connecting {
            // The command's answer ("Requested") is the run's card: it ends "Not run".
            answer_is_the_card(&mut rec);
        }
        let stored = self.save(&mut rec).await?;
        if connecting {
            // The link's state is single use but still a credential: never in a log line.
            tracing::info!(request_id = %rec.request.request_id, "connect link sent; the run waits for the person to connect");
        } else {
            tracing::info!(request_id = %rec.request.request_id, reason = %text, "run refused");
            // The channel saw "Requested": it sees that it did not run (the reason stays
            // with the person who asked). Best effort: the reply is what counts.
            self.show_card(
                &stored,
                crate::card::CardState::NotRun,
                crate::card_delivery::Purpose::Update,
            )
            .await;
        }
        let event = refused(notice, rec.request.platform);
        self.audit.record(self.audit.of_run(event, &rec)).await;
        Ok(())
    }

    /// Save (the store keeps what other writers own: `response_url` uses, a recorded reply,
    /// an early-hook mark); returns the run as stored.
    async fn save(&self, rec: &mut RunRecord) -> Result<RunRecord, StoreError> {
        self.store.save_run(rec).await
    }

    /// The steps of one dispatch, in order; each returns what the next needs or stops.
    async fn dispatch(
        &self,
        rec: &mut RunRecord,
        link: Result<Option<UserLink>, StoreError>,
        at: &Attempt,
    ) -> Result<(), Stop> {
        let req = rec.request.clone();
        let link = self.linked_user(&req, link?).await?;
        rec.gitlab_user = Some(link.gitlab_username.clone());
        let gl = self.acting_as(&req, &link, at).await?;
        let gl = gl.as_ref();
        let project = at.within(self.project(gl, &req)).await?;
        rec.project_id = Some(project.id);
        rec.project_path = Some(project.path_with_namespace.clone());
        rec.project_web_url = Some(project.web_url.clone());
        let branch = project.default_branch.clone().filter(|b| !b.is_empty());
        // Bot mode: the one token could do more than the person may; check their role. With
        // their own token, GitLab itself decides.
        let access = async {
            match self.identity {
                None => self.check_access(gl, &req, &link, &project).await.map(Some),
                Some(_) => Ok(None),
            }
        };
        // The person's role, the policy file and the job list (for `job_refusal`, before
        // creating) do not depend on each other: asked for at once, one round trip to GitLab
        // instead of three when none is cached (a cold container, or a person's first run in
        // a minute). Each answer is only acted on below, in the order the checks have always
        // had: the role first, so someone without access learns nothing of the project's jobs.
        let creating = rec.pipeline_id.is_none();
        let ci_jobs = async {
            match &branch {
                Some(branch) if creating => {
                    self.ci_config(gl, &req, project.id, branch).await.map(Some)
                }
                _ => Ok(None),
            }
        };
        let policy = async {
            match &branch {
                Some(branch) => self.job_policy(gl, &req, &project, branch).await,
                None => Ok(None),
            }
        };
        let (access, policy, ci) = at
            .within(async { Ok(tokio::join!(access, policy, ci_jobs)) })
            .await?;
        let access = access?;
        let Some(branch) = branch else {
            return Err(Stop::Refuse(unscheduled(
                &req,
                Unscheduled::NoDefaultBranch,
            )));
        };
        let policy = policy?;
        // The job must exist and not be `except: [chat]` before anything is created (an
        // `except: [chat]` job would join an API pipeline), and before anyone is asked to
        // approve a run of it.
        if let Some(ci) = ci? {
            if let Some(refusal) = Self::job_refusal(&req, &branch, ci) {
                return Err(Stop::Refuse(refusal));
            }
        }
        if let Some(rule) = policy {
            let approved = rec.approved().is_some();
            at.within(self.check_policy(gl, &req, &project, &rule, access, approved))
                .await?;
        }
        let pipeline = self.pipeline(gl, rec, &project, &branch, at).await?;
        rec.pipeline_url = Some(pipeline.web_url.clone());
        // GitLab lists trigger jobs apart: asked for only when the configuration the job list
        // came from may hold one (a minute old at most, like the job list itself).
        let bridges = gl.ci_may_trigger(project.id, &branch).await;
        let job = at
            .within(self.only_our_job(gl, &req, &project, &pipeline, bridges))
            .await?;
        rec.job_id = Some(job.id);
        rec.job_url = Some(job.web_url.clone());
        rec.lease_until = 0;
        rec.updated_at = self.clock.now();
        let manual = job.status == Status::Manual;
        rec.status = if manual {
            RunStatus::WaitingManual
        } else {
            RunStatus::Running
        };
        let now = self.clock.now();
        rec.due_at = if manual {
            crate::finish::next_check(now, RunStatus::WaitingManual, 0)
        } else {
            now + self.config.first_check_secs
        };
        // Audited before the run is saved: once saved, its webhook may finish it (and audit
        // its result) at any moment, and the entries must keep the run's order.
        let event = AuditEvent::PipelineCreated {
            as_person: self.identity.is_some(),
            manual,
            ran_as: pipeline.user.as_ref().map(|u| u.username.clone()),
        };
        let entry = self.audit.of_run(event, rec);
        answer_is_the_card(rec);
        // The card before the save: a card posted anew (no response_url to replace the answer
        // through) has its `ts` recorded (`set_card`, kept by every save) before the run is
        // Running, so the webhook of a job that ends at once finds where the card is and shows
        // its last state there. (A webhook meanwhile finds the run Dispatching and leaves it
        // to `finish_now` below; a redelivery after a failed save finds the card's `ts` and
        // updates it instead of posting another.) The audit entry and the card do not depend
        // on each other: written at once, both before the save.
        let state = crate::card::CardState::of_job(job.status);
        tokio::join!(self.audit.record(entry), self.announce(rec, state));
        rec.announce_use = false;
        let stored = self.save(rec).await?;
        if job.status.is_final() || stored.early_hook_at.is_some() {
            // The job ended before the run was saved: its webhook found the run still
            // dispatching (and marked it), so it is finished here rather than by the sweep.
            self.finish_now(gl, &stored, at).await;
        }
        tracing::info!(
            request_id = %req.request_id,
            pipeline = %pipeline.id,
            job = %job.id,
            manual,
            "pipeline created"
        );
        Ok(())
    }

    async fn finish_now(&self, gl: &dyn GitLab, run: &RunRecord, at: &Attempt) {
        let settings = FinishSettings {
            can_upload: self.config.chat.slack_bot_token.is_some(),
            ..FinishSettings::default()
        };
        let finisher = Finisher {
            gitlab: gl,
            store: self.store.as_ref(),
            deliverer: &self.deliverer,
            clock: self.clock.as_ref(),
            settings: &settings,
            audit: &self.audit,
        };
        let deadline = at
            .deadline
            .checked_sub(FINISH_MARGIN)
            .unwrap_or(at.deadline);
        let outcome = finisher
            .finish(run, None, crate::finish::Mode::Background { deadline })
            .await;
        tracing::info!(request_id = %run.request.request_id, ?outcome, "finished right after dispatch");
    }

    /// The person's link (read with the claim), or why there is none to act with.
    async fn linked_user(
        &self,
        req: &RunRequest,
        link: Option<UserLink>,
    ) -> Result<UserLink, Stop> {
        match link {
            Some(link) => Ok(link),
            None if self.identity.is_some() => Err(self.connect(req, false).await),
            None => Err(Stop::Refuse(Notice::Unlinked {
                job: req.job.clone(),
                team: req.team_id.to_string(),
                user: req.user_id.to_string(),
            })),
        }
    }

    /// Who acts in GitLab for this run: the person (OAuth), else the bot token.
    async fn acting_as(
        &self,
        req: &RunRequest,
        link: &UserLink,
        at: &Attempt,
    ) -> Result<Arc<dyn GitLab>, Stop> {
        let Some(identity) = &self.identity else {
            return Ok(self.gitlab.clone());
        };
        let deadline = at
            .deadline
            .checked_sub(FINISH_MARGIN)
            .unwrap_or(at.deadline);
        match identity
            .gitlab_for(&ChatPerson::of(req), link, deadline)
            .await
        {
            Ok(gl) => Ok(gl),
            Err(CredentialError::Reconnect(why)) => {
                tracing::info!(request_id = %req.request_id, why, "the person must connect GitLab");
                Err(self.connect(req, link.grant.is_some()).await)
            }
            Err(CredentialError::Unavailable(e)) => Err(Stop::Retry(e.into())),
        }
    }

    /// The person gets a connect link (ephemeral); their command runs once they connected.
    async fn connect(&self, req: &RunRequest, again: bool) -> Stop {
        let Some(identity) = &self.identity else {
            return Stop::Refuse(unscheduled(
                req,
                Unscheduled::TokenRefused {
                    detail: "401".into(),
                },
            ));
        };
        let Some(redirect) = identity.settings.redirect_uri(req.public_base.as_deref()) else {
            tracing::error!(request_id = %req.request_id, "no callback URL: set PUBLIC_BASE_URL");
            return Stop::Refuse(Notice::ConnectUnavailable);
        };
        match identity
            .connect_link(&ChatPerson::of(req), &redirect, Some(req.clone()))
            .await
        {
            Ok(url) => Stop::Refuse(Notice::Connect {
                url,
                job: Some(req.job.clone()),
                again,
            }),
            Err(e) => Stop::Retry(e.into()),
        }
    }

    async fn project(&self, gl: &dyn GitLab, req: &RunRequest) -> Result<Project, Stop> {
        let project_ref = self.config.project_for(&req.channel_id);
        let personal = self.identity.is_some();
        gl.project(project_ref).await.map_err(|e| {
            // With a person's token a 401 means reconnecting (`gitlab_stop`), not a project
            // the token cannot see.
            let unseen = matches!(e, GitLabError::NotFound(_) | GitLabError::Forbidden(_))
                || (matches!(e, GitLabError::Unauthorized(_)) && !personal);
            if !unseen {
                return self.gitlab_stop(req, e);
            }
            Stop::Refuse(unscheduled(
                req,
                Unscheduled::ProjectNotFound {
                    project: project_ref.to_string(),
                    detail: e.to_string(),
                    personal,
                },
            ))
        })
    }

    /// The run's pipeline: the one an earlier attempt created (resumed), else a new one,
    /// recorded at once so a crash from here on resumes instead of creating another.
    async fn pipeline(
        &self,
        gl: &dyn GitLab,
        rec: &mut RunRecord,
        project: &Project,
        branch: &str,
        at: &Attempt,
    ) -> Result<Pipeline, Stop> {
        let req = rec.request.clone();
        if let Some(id) = rec.pipeline_id {
            return at
                .within(async {
                    gl.pipeline(project.id, id)
                        .await
                        .map_err(|e| self.gitlab_stop(&req, e))
                })
                .await;
        }
        if at.receive_count > 1 {
            // An earlier attempt may have created it and died (or timed out on GitLab's
            // answer) before recording it: look for our request id before creating again.
            let found = at
                .within(async {
                    gl.find_pipeline(
                        project.id,
                        branch,
                        req.received_at.saturating_sub(FIND_SLACK_SECS),
                        REQUEST_ID_VARIABLE,
                        req.request_id.as_str(),
                    )
                    .await
                    .map_err(|e| self.gitlab_stop(&req, e))
                })
                .await?;
            if let Some(p) = found {
                tracing::warn!(request_id = %req.request_id, pipeline = %p.id, "found the pipeline an earlier attempt created");
                rec.pipeline_id = Some(p.id);
                rec.pipeline_url = Some(p.web_url.clone());
                rec.updated_at = self.clock.now();
                self.save(rec).await?;
                return Ok(p);
            }
        }
        // The job was checked by `dispatch` (`job_refusal`) before this point.
        if at.remaining() < CREATE_NEEDS {
            // Never start a create that the deadline could cut: its outcome would be unknown.
            return Err(Stop::Retry(RetryReason::Deadline));
        }
        let mut vars = pipeline_variables(&req);
        if let Some(d) = rec.approved() {
            let by = d.gitlab_user.clone().unwrap_or_else(|| d.by_name.clone());
            vars.push((APPROVED_BY_VARIABLE.to_owned(), by));
        }
        let personal = self.identity.is_some();
        let p = match gl.create_pipeline(project.id, branch, &vars).await {
            Ok(p) => p,
            Err(GitLabError::Rejected(message))
                if crate::gitlab::refuses_pipeline_variables(&message) =>
            {
                let project = project.path_with_namespace.clone();
                let why = Unscheduled::PipelineVariablesForbidden {
                    project,
                    message,
                    personal,
                };
                return Err(Stop::Refuse(unscheduled(&req, why)));
            }
            Err(GitLabError::Rejected(message))
                if crate::gitlab::refuses_protected_ref(&message) =>
            {
                let why = Unscheduled::ProtectedBranch {
                    branch: branch.to_owned(),
                    message,
                };
                return Err(Stop::Refuse(unscheduled(&req, why)));
            }
            Err(GitLabError::Rejected(message)) => {
                return Err(Stop::Refuse(unscheduled(
                    &req,
                    Unscheduled::PipelineRejected { message },
                )));
            }
            Err(other) => return Err(self.gitlab_stop(&req, other)),
        };
        // Not saved here: a retry finds this pipeline by its CHATOPS_REQUEST_ID, so the
        // run is written once, when the dispatch is done.
        rec.pipeline_id = Some(p.id);
        rec.pipeline_url = Some(p.web_url.clone());
        rec.updated_at = self.clock.now();
        Ok(p)
    }

    /// The pipeline must hold exactly the asked job; otherwise it is cancelled and the
    /// person told which jobs joined.
    async fn only_our_job(
        &self,
        gl: &dyn GitLab,
        req: &RunRequest,
        project: &Project,
        pipeline: &Pipeline,
        bridges: bool,
    ) -> Result<Job, Stop> {
        let jobs = if bridges {
            gl.pipeline_jobs(project.id, pipeline.id).await
        } else {
            gl.pipeline_jobs_without_bridges(project.id, pipeline.id)
                .await
        };
        let jobs = jobs.map_err(|e| self.gitlab_stop(req, e))?;
        let (mut ours, foreign): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.name == req.job);
        if ours.len() == 1 && foreign.is_empty() {
            return Ok(ours.remove(0));
        }
        gl.cancel_pipeline(project.id, pipeline.id)
            .await
            .map_err(|e| self.gitlab_stop(req, e))?;
        Err(Stop::Refuse(unscheduled(
            req,
            Unscheduled::ForeignJobs {
                pipeline_url: pipeline.web_url.clone(),
                ours: ours.len(),
                foreign: foreign.into_iter().map(|j| j.name).collect(),
            },
        )))
    }

    /// Four-eyes: no pipeline yet. The run waits (stored first, so a click on its card finds
    /// it waiting), its card asks for an approval in the channel, and the sweep ends it when
    /// it expires.
    async fn await_approval(
        &self,
        mut rec: RunRecord,
        rule: &JobPolicy,
    ) -> Result<(), DispatchError> {
        let now = self.clock.now();
        let asked = crate::approval::request(rule, now);
        rec.due_at = asked.expires_at;
        rec.checks = 0;
        rec.approval = Some(asked.clone());
        rec.status = RunStatus::AwaitingApproval;
        rec.lease_until = 0;
        rec.updated_at = now;
        answer_is_the_card(&mut rec);
        let mut stored = self.save(&mut rec).await?;
        // The card may spend the use this attempt's claim counted.
        stored.announce_use = rec.announce_use;
        let event = AuditEvent::ApprovalRequested {
            min_role: asked.min_role,
            expires_at: asked.expires_at,
        };
        self.audit.record(self.audit.of_run(event, &stored)).await;
        tracing::info!(request_id = %stored.request.request_id, expires_at = asked.expires_at, "waiting for approval");
        self.announce(&stored, crate::card::CardState::AwaitingApproval)
            .await;
        Ok(())
    }

    /// The run's card shows who started what (or that a manual job waits, or that it needs
    /// an approval), in place of the command's answer. Losing this is not worth failing the
    /// run: its reply comes anyway (an approval request unseen ends when it expires).
    async fn announce(&self, run: &RunRecord, state: crate::card::CardState) {
        self.show_card(run, state, crate::card_delivery::Purpose::Announce)
            .await;
    }

    /// The run's card in `state`; a card that cannot be shown is logged (best effort).
    async fn show_card(
        &self,
        run: &RunRecord,
        state: crate::card::CardState,
        purpose: crate::card_delivery::Purpose,
    ) {
        let card = crate::card::Card::of_run(run, state);
        let desk = crate::card_delivery::CardDesk {
            deliverer: &self.deliverer,
            waits: true,
        };
        if let Err(e) = desk.show(run, &card, purpose).await {
            tracing::error!(request_id = %run.request.request_id, error = %e, ?purpose, "could not show the run's card");
        }
    }

    /// What the project's policy file says about the job: `None` without a file (today's
    /// behaviour exactly) or when the file does not name the job. A refused file refuses the
    /// run, naming the line: rules that read differently from what was meant must not run.
    async fn job_policy(
        &self,
        gl: &dyn GitLab,
        req: &RunRequest,
        project: &Project,
        branch: &str,
    ) -> Result<Option<JobPolicy>, Stop> {
        let text = gl
            .repository_file(project.id, POLICY_PATH, branch)
            .await
            .map_err(|e| self.gitlab_stop(req, e))?;
        let Some(text) = text else { return Ok(None) };
        match crate::policy::parse(&text) {
            Ok(policy) => Ok(policy.job(&req.job).cloned()),
            Err(e) => Err(Stop::Refuse(unscheduled(
                req,
                Unscheduled::PolicyInvalid {
                    error: e.to_string(),
                },
            ))),
        }
    }

    /// The job's rule against this request: the channel, the requester's role (bot mode: the
    /// membership just read; with their own token: their `permissions`, read only when the
    /// rule asks for a role), and approval (checked last: nobody is asked to approve a run
    /// that would be refused anyway).
    async fn check_policy(
        &self,
        gl: &dyn GitLab,
        req: &RunRequest,
        project: &Project,
        rule: &JobPolicy,
        access: Option<AccessLevel>,
        approved: bool,
    ) -> Result<(), Stop> {
        if !rule.allows_channel(req.channel_id.as_str(), &req.channel_name) {
            return Err(Stop::Refuse(unscheduled(
                req,
                Unscheduled::PolicyChannel {
                    channels: rule.channels.clone(),
                },
            )));
        }
        if let Some(role) = rule.min_role_to_request {
            let access = match access {
                Some(a) => Some(a),
                None => gl
                    .project_access(project.id)
                    .await
                    .map_err(|e| self.gitlab_stop(req, e))?,
            };
            if !role.allows(access) {
                return Err(Stop::Refuse(unscheduled(
                    req,
                    Unscheduled::PolicyRole { role },
                )));
            }
        }
        if rule.needs_approval() && !approved {
            return Err(Stop::AwaitApproval(Box::new(rule.clone())));
        }
        Ok(())
    }

    /// Bot mode: the person's role on the project, refused below Developer.
    async fn check_access(
        &self,
        gl: &dyn GitLab,
        req: &RunRequest,
        link: &UserLink,
        project: &Project,
    ) -> Result<AccessLevel, Stop> {
        // The id is kept in the link when it was checked on GitLab: then one call (the
        // membership, whose state also says blocked/banned) instead of two.
        let user_id = match link.gitlab_user_id {
            Some(id) => id,
            None => {
                let user = gl
                    .user_by_username(&link.gitlab_username)
                    .await
                    .map_err(|e| self.gitlab_stop(req, e))?;
                let Some(user) = user else {
                    return Err(Stop::Refuse(Notice::LinkedUserMissing {
                        username: link.gitlab_username.clone(),
                        team: req.team_id.to_string(),
                        user: req.user_id.to_string(),
                    }));
                };
                if user.state == "blocked" || user.state == "banned" {
                    return Err(Stop::Refuse(Notice::AccessDenied {
                        project_url: project.web_url.clone(),
                    }));
                }
                user.id
            }
        };
        let level = gl
            .member_access(project.id, user_id)
            .await
            .map_err(|e| self.gitlab_stop(req, e))?;
        match level {
            Some(l) if l >= AccessLevel::DEVELOPER => Ok(l),
            _ => Err(Stop::Refuse(Notice::AccessDenied {
                project_url: project.web_url.clone(),
            })),
        }
    }

    /// The jobs of the default branch's CI configuration (cached a minute per container and
    /// token by the client).
    async fn ci_config(
        &self,
        gl: &dyn GitLab,
        req: &RunRequest,
        project: crate::ids::ProjectId,
        branch: &str,
    ) -> Result<CiConfig, Stop> {
        gl.ci_jobs(project, branch).await.map_err(|e| match e {
            GitLabError::NotFound(detail) => Stop::Refuse(unscheduled(
                req,
                Unscheduled::NoCiConfig {
                    branch: branch.to_owned(),
                    detail,
                },
            )),
            other => self.gitlab_stop(req, other),
        })
    }

    /// Why the asked job cannot run: not in the configuration, `except: [chat]`, or the
    /// configuration is invalid; `None` when it can.
    fn job_refusal(req: &RunRequest, branch: &str, config: CiConfig) -> Option<Notice> {
        let why = match config {
            CiConfig::Invalid(errors) => Unscheduled::CiInvalid {
                branch: branch.to_owned(),
                errors,
            },
            CiConfig::Valid(jobs) => match jobs.iter().find(|j| j.name == req.job) {
                None => Unscheduled::NoSuchJob {
                    branch: branch.to_owned(),
                },
                Some(j) if j.excluded_from_chat => Unscheduled::ExcludedFromChat,
                Some(_) => return None,
            },
        };
        Some(unscheduled(req, why))
    }
}

fn parse_request(body: &str) -> Result<RunRequest, DispatchError> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| DispatchError::Permanent(BadMessage::NotJson(e)))?;
    match v.get("version").and_then(|v| v.as_u64()) {
        Some(n) if n == RUN_REQUEST_VERSION as u64 => {}
        Some(n) => return Err(DispatchError::Permanent(BadMessage::Version(n))),
        None => return Err(DispatchError::Permanent(BadMessage::NoVersion)),
    }
    serde_json::from_value(v).map_err(|e| DispatchError::Permanent(BadMessage::Malformed(e)))
}

impl Dispatcher {
    /// GitLab's answer as a stop: unavailable → retry; with the person's token, 401 → they
    /// reconnect and 403 → GitLab's own refusal; with the bot token, 401/403 → the token.
    fn gitlab_stop(&self, req: &RunRequest, e: GitLabError) -> Stop {
        let personal = self.identity.is_some();
        match e {
            e @ (GitLabError::Retryable(_) | GitLabError::Protocol(_)) => Stop::Retry(e.into()),
            GitLabError::Unauthorized(_) if personal => Stop::Reconnect,
            GitLabError::Forbidden(message) if personal => {
                Stop::Refuse(unscheduled(req, Unscheduled::GitLabDenied { message }))
            }
            GitLabError::Unauthorized(detail) | GitLabError::Forbidden(detail) => {
                Stop::Refuse(unscheduled(req, Unscheduled::TokenRefused { detail }))
            }
            GitLabError::NotFound(message) | GitLabError::Rejected(message) => {
                Stop::Refuse(unscheduled(req, Unscheduled::GitLabAnswered { message }))
            }
        }
    }
}

/// The command's answer is the run's card (its `response_url` replaces it), unless the run
/// has a card already or no `response_url` (a retry: its card is posted anew).
fn answer_is_the_card(rec: &mut RunRecord) {
    if rec.card.is_none() && !rec.request.response_url.is_empty() {
        rec.card = Some(crate::run::CardRef {
            channel: rec.request.channel_id.clone(),
            ts: None,
            answer: true,
        });
    }
}

/// `dispatch` never returns `Reconnect` past `handle_attempt`'s first match.
fn unreachable_reconnect() -> Result<(), DispatchError> {
    tracing::error!("a reconnect stop escaped; acknowledged");
    Ok(())
}

/// The audit entry of a refusal: its code, and what the person was told (shortened).
fn refused(notice: &Notice, platform: crate::run::Platform) -> AuditEvent {
    // A connect link's state is a credential: the audit says a link was sent, not which.
    let told = match notice {
        Notice::Connect { .. } => "sent a connect link (GitLab account not connected)".to_owned(),
        other => other.render(platform),
    };
    let mut detail: String = told.chars().take(300).collect();
    if detail.len() < told.len() {
        detail.push('…');
    }
    AuditEvent::Refused {
        reason: notice.reason().to_owned(),
        detail,
    }
}

fn unscheduled(req: &RunRequest, why: Unscheduled) -> Notice {
    Notice::Unscheduled {
        job: req.job.clone(),
        why,
    }
}

/// The variables of the job contract.
pub fn pipeline_variables(req: &RunRequest) -> Vec<(String, String)> {
    [
        ("CHATOPS_JOB", req.job.clone()),
        ("CHAT_INPUT", req.input.clone()),
        ("CHAT_CHANNEL", req.channel_id.0.clone()),
        ("CHAT_USER_ID", req.user_id.0.clone()),
        ("CHAT_USER_NAME", req.user_name.clone()),
        ("CHAT_PLATFORM", req.platform.as_str().to_owned()),
        (REQUEST_ID_VARIABLE, req.request_id.as_str().to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

impl Dispatcher {
    /// `help`'s follow-up: the jobs chat can run here, to the person only, read with the
    /// identity their runs use. Nothing is claimed or recorded: a help request is no run, and
    /// a repeated delivery only answers again. Someone not linked, or whose GitLab
    /// connection must be made again, has the grammar already: no connect link for `help`.
    async fn help(
        &self,
        req: &RunRequest,
        receive_count: u32,
        deadline: Instant,
    ) -> Result<(), DispatchError> {
        let last = receive_count >= MAX_ATTEMPTS;
        let retry = |reason: RetryReason| {
            if last {
                tracing::error!(request_id = %req.request_id, error = %chain(&reason), "help: giving up; the person has the grammar");
                Ok(())
            } else {
                Err(DispatchError::Retryable(reason))
            }
        };
        let link = match self
            .store
            .get_user(req.team_id.as_str(), req.user_id.as_str())
            .await
        {
            Ok(Some(link)) => link,
            Ok(None) => {
                tracing::info!(request_id = %req.request_id, "help from someone not linked: the grammar is their answer");
                return Ok(());
            }
            Err(e) => return retry(e.into()),
        };
        let personal = self.identity.is_some();
        let gl = match &self.identity {
            None => self.gitlab.clone(),
            Some(identity) => {
                let until = deadline.checked_sub(FINISH_MARGIN).unwrap_or(deadline);
                match identity
                    .gitlab_for(&ChatPerson::of(req), &link, until)
                    .await
                {
                    Ok(gl) => gl,
                    Err(CredentialError::Reconnect(why)) => {
                        tracing::info!(request_id = %req.request_id, why, "help: the person must connect GitLab; the grammar is their answer");
                        return Ok(());
                    }
                    Err(CredentialError::Unavailable(e)) => return retry(e.into()),
                }
            }
        };
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(FINISH_MARGIN);
        let project = self.config.project_for(&req.channel_id);
        let notice = match tokio::time::timeout(budget, crate::help::jobs(gl.as_ref(), project))
            .await
        {
            Ok(Ok(notice)) => notice,
            Ok(Err(GitLabError::Unauthorized(why))) if personal => {
                tracing::info!(request_id = %req.request_id, why, "help: GitLab no longer takes the person's token");
                return Ok(());
            }
            Ok(Err(e @ (GitLabError::Retryable(_) | GitLabError::Protocol(_)))) if !last => {
                return Err(DispatchError::Retryable(e.into()))
            }
            Ok(Err(e)) => Notice::JobsUnavailable {
                detail: e.to_string(),
            },
            Err(_) if !last => return Err(DispatchError::Retryable(RetryReason::Deadline)),
            Err(_) => Notice::JobsUnavailable {
                detail: "GitLab did not answer in time".into(),
            },
        };
        let msg = OutgoingMessage::ephemeral(notice.render(req.platform));
        match self.deliverer.deliver_unrecorded(req, &msg).await {
            Ok(route) => {
                tracing::info!(request_id = %req.request_id, ?route, "help: job list sent");
                Ok(())
            }
            Err(e) => retry(e.into()),
        }
    }
}
