//! The completion handler and sweep: a GitLab webhook (or the scheduled sweep) becomes exactly
//! one reply in the channel of the run that started the pipeline.
//!
//! Webhooks are only a trigger. Once an event says our job (or its pipeline) reached a final
//! state, the job is read from GitLab itself, so stale or out-of-order events do no harm; the
//! log is streamed into the reply extractor and rendered. Duplicate deliveries (same
//! `Idempotency-Key` / `X-Gitlab-Event-UUID`) stop at `RunStore::first_delivery`; concurrent
//! events for the same run stop at a short reply lease (one conditional write), and the
//! delivered reply is recorded with `RunStore::claim_reply`, after which every later event or
//! sweep leaves the run alone. When delivery fails the run stays open and the sweep tries
//! again once the lease expires: nothing is lost.
//!
//! GitLab never retries a webhook and disables hooks that keep failing, so every failure after
//! authentication answers 200 and leaves the run to the sweep (`sweep`), which looks at runs
//! still open after `SWEEP_AFTER_SECS` and completes them the same way.

use crate::chat::OutgoingMessage;
use crate::clock::Clock;
use crate::config::{ConfigError, Env, SecretSource};
use crate::delivery::{ChatSettings, Deliverer, DeliveryError, Route};
use crate::gitlab::{GitLab, GitLabError, Job, Status};
use crate::ids::{JobId, PipelineId, ProjectId};
use crate::notice::Notice;
use crate::render::{self, JobReport};
use crate::reply::{Extraction, Extractor, Outcome};
use crate::report::chain;
use crate::run::{Platform, RunRecord};
use crate::secret::Secret;
use crate::store::{RunStore, StoreError};
use crate::web::{self, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How long a webhook delivery key is remembered.
pub const DELIVERY_TTL_SECS: u64 = 7 * 24 * 3600;
/// How long one invocation holds the right to deliver a run's reply (well over the longest
/// delivery, well under the sweep threshold).
pub const REPLY_LEASE_SECS: u64 = 120;
pub const WEBHOOK_PATH: &str = "/gitlab/webhook";

/// The completion function's configuration, read once at cold start.
#[derive(Debug, Clone)]
pub struct CompletionConfig {
    pub webhook_secret: Secret,
    pub gitlab_url: String,
    pub gitlab_token: Secret,
    pub runs_table: String,
    /// Where messages to the channel go (Slack, Mattermost).
    pub chat: ChatSettings,
    /// Runs still open this long after their last update are completed by the sweep.
    pub sweep_after_secs: u64,
    /// Delay between reads of a log that has no reply section yet (it may be incomplete).
    pub log_retry_delay: Duration,
    /// How many times such a log is read again before concluding.
    pub log_retries: u32,
}

impl CompletionConfig {
    pub const ENV: &[&str] = &[
        "CONFIG_VERSION",
        "GITLAB_WEBHOOK_SECRET",
        "GITLAB_WEBHOOK_SECRET_PARAM",
        "GITLAB_URL",
        "GITLAB_TOKEN",
        "GITLAB_TOKEN_PARAM",
        "RUNS_TABLE",
        "SLACK_BOT_TOKEN",
        "SLACK_BOT_TOKEN_PARAM",
        "SLACK_API_URL",
        "MATTERMOST_URL",
        "MATTERMOST_BOT_TOKEN",
        "MATTERMOST_BOT_TOKEN_PARAM",
        "SWEEP_AFTER_SECS",
        "LOG_RETRY_SECS",
        "LOG_RETRIES",
    ];

    pub async fn from_env(env: &Env, secrets: &dyn SecretSource) -> Result<Self, ConfigError> {
        env.log_config_version();
        let delay: f64 = env.parse_or("LOG_RETRY_SECS", 2.0)?;
        if !(0.0..=60.0).contains(&delay) {
            return Err(ConfigError::Invalid {
                name: "LOG_RETRY_SECS".into(),
                reason: "must be between 0 and 60 seconds".into(),
            });
        }
        Ok(Self {
            webhook_secret: env
                .required_secret("GITLAB_WEBHOOK_SECRET", secrets)
                .await?,
            gitlab_url: env.or("GITLAB_URL", crate::gitlab::DEFAULT_GITLAB_URL),
            gitlab_token: env.required_secret("GITLAB_TOKEN", secrets).await?,
            runs_table: env.required("RUNS_TABLE")?,
            chat: ChatSettings::from_env(env, secrets).await?,
            sweep_after_secs: env.parse_or("SWEEP_AFTER_SECS", 300)?,
            log_retry_delay: Duration::from_secs_f64(delay),
            log_retries: env.parse_or("LOG_RETRIES", 3)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Webhook payloads, parsed at the edge into our own types.

/// One job as a Pipeline Hook lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStatus {
    pub id: JobId,
    pub name: String,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineEvent {
    pub pipeline_id: PipelineId,
    pub project_id: Option<ProjectId>,
    pub status: Status,
    pub builds: Vec<BuildStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub job_id: JobId,
    pub job_name: String,
    pub status: Status,
    pub pipeline_id: PipelineId,
    pub project_id: ProjectId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    Pipeline(PipelineEvent),
    Job(JobEvent),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("the body is not a valid {event} payload: {reason}")]
    Malformed { event: String, reason: String },
}

#[derive(Deserialize)]
struct WireId {
    id: u64,
}

#[derive(Deserialize)]
struct WireBuild {
    id: u64,
    name: String,
    status: Status,
}

#[derive(Deserialize)]
struct WirePipelineAttrs {
    id: u64,
    status: Status,
}

#[derive(Deserialize)]
struct WirePipelineHook {
    object_kind: String,
    object_attributes: WirePipelineAttrs,
    #[serde(default)]
    project: Option<WireId>,
    #[serde(default)]
    builds: Vec<WireBuild>,
}

#[derive(Deserialize)]
struct WireJobHook {
    object_kind: String,
    build_id: u64,
    build_name: String,
    build_status: Status,
    pipeline_id: u64,
    project_id: u64,
}

/// Parse a webhook body by its `X-Gitlab-Event`; `Ok(None)` for events we do not handle.
pub fn parse_webhook(event: &str, body: &[u8]) -> Result<Option<WebhookEvent>, WebhookError> {
    let malformed = |reason: String| WebhookError::Malformed {
        event: event.to_owned(),
        reason,
    };
    match event {
        "Pipeline Hook" => {
            let w: WirePipelineHook =
                serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
            if w.object_kind != "pipeline" {
                return Err(malformed(format!("object_kind is {:?}", w.object_kind)));
            }
            Ok(Some(WebhookEvent::Pipeline(PipelineEvent {
                pipeline_id: PipelineId(w.object_attributes.id),
                project_id: w.project.map(|p| ProjectId(p.id)),
                status: w.object_attributes.status,
                builds: w
                    .builds
                    .into_iter()
                    .map(|b| BuildStatus {
                        id: JobId(b.id),
                        name: b.name,
                        status: b.status,
                    })
                    .collect(),
            })))
        }
        "Job Hook" => {
            let w: WireJobHook =
                serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
            if w.object_kind != "build" {
                return Err(malformed(format!("object_kind is {:?}", w.object_kind)));
            }
            Ok(Some(WebhookEvent::Job(JobEvent {
                job_id: JobId(w.build_id),
                job_name: w.build_name,
                status: w.build_status,
                pipeline_id: PipelineId(w.pipeline_id),
                project_id: ProjectId(w.project_id),
            })))
        }
        _ => Ok(None),
    }
}

impl WebhookEvent {
    pub fn pipeline_id(&self) -> PipelineId {
        match self {
            WebhookEvent::Pipeline(p) => p.pipeline_id,
            WebhookEvent::Job(j) => j.pipeline_id,
        }
    }

    pub fn project_id(&self) -> Option<ProjectId> {
        match self {
            WebhookEvent::Pipeline(p) => p.project_id,
            WebhookEvent::Job(j) => Some(j.project_id),
        }
    }

    /// Whether the event says the run's job may have ended: our job final, or (pipeline
    /// event without our job in it) the pipeline final.
    pub fn may_have_ended(&self, run: &RunRecord) -> bool {
        let ours = |id: JobId, name: &str| match run.job_id {
            Some(j) => j == id,
            None => name == run.request.job,
        };
        match self {
            WebhookEvent::Job(j) => ours(j.job_id, &j.job_name) && j.status.is_final(),
            WebhookEvent::Pipeline(p) => match p.builds.iter().find(|b| ours(b.id, &b.name)) {
                Some(b) => b.status.is_final(),
                None => p.status.is_final(),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// The handler.

/// What one attempt to complete a run did.
#[derive(Debug)]
pub enum Completed {
    Replied(Route),
    /// Someone else claimed the reply (or the run is no longer open).
    AlreadyReplied,
    /// The job has not ended yet (running, pending, waiting to be played…).
    NotFinished(Status),
    /// Another invocation is delivering this reply right now.
    Busy,
    /// Something failed; the run stays open for the sweep.
    Deferred(Deferral),
}

/// Why a run could not be completed now (it stays open; the sweep tries again).
#[derive(Debug, thiserror::Error)]
pub enum Deferral {
    #[error("the run has no project id")]
    NoProject,
    #[error("GitLab could not say how the job ended")]
    Job(#[source] GitLabError),
    #[error("the job log could not be read")]
    Log(#[source] GitLabError),
    #[error("the reply lease could not be taken")]
    Lease(#[source] StoreError),
    #[error("the run record is gone")]
    RunGone,
    #[error("the run store failed")]
    Store(#[source] StoreError),
    #[error("the reply could not be delivered")]
    Delivery(#[source] DeliveryError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub examined: usize,
    pub replied: usize,
    pub already_replied: usize,
    pub still_running: usize,
    pub busy: usize,
    pub deferred: usize,
}

pub struct Completion {
    pub config: CompletionConfig,
    pub gitlab: Arc<dyn GitLab>,
    pub store: Arc<dyn RunStore>,
    pub deliverer: Deliverer,
    pub clock: Arc<dyn Clock>,
}

fn reply(status: u16, result: &str, detail: impl Into<String>) -> HttpResponse {
    web::json(status, &json!({"result": result, "detail": detail.into()}))
}

impl Completion {
    /// `POST /gitlab/webhook`.
    pub async fn handle_webhook(&self, req: HttpRequest) -> HttpResponse {
        if req.uri().path().trim_end_matches('/') != WEBHOOK_PATH {
            return reply(404, "not_found", "the webhook is at /gitlab/webhook");
        }
        if req.method() != http::Method::POST {
            return reply(405, "method_not_allowed", "use POST");
        }
        let token = req
            .headers()
            .get("x-gitlab-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !self.config.webhook_secret.matches(token) {
            tracing::warn!("webhook with a missing or wrong X-Gitlab-Token");
            return reply(401, "unauthorized", "X-Gitlab-Token does not match");
        }
        let kind = web::header(&req, "x-gitlab-event").unwrap_or("");
        let event = match parse_webhook(kind, req.body()) {
            Ok(Some(e)) => e,
            Ok(None) => return reply(200, "ignored", format!("event {kind:?} is not handled")),
            Err(e) => {
                tracing::warn!(error = %e, "malformed webhook");
                return reply(400, "malformed", e.to_string());
            }
        };
        let run = match self.store.find_by_pipeline(event.pipeline_id()).await {
            Ok(Some(run)) => run,
            Ok(None) => return reply(200, "ignored", "not a pipeline chatops started"),
            Err(e) => {
                tracing::error!(error = %e, "run store unavailable; the sweep will complete it");
                return reply(200, "deferred", e.to_string());
            }
        };
        let key = web::header(&req, "idempotency-key")
            .or_else(|| web::header(&req, "x-gitlab-event-uuid"))
            .filter(|k| !k.is_empty());
        if let Some(key) = key {
            let now = self.clock.now();
            match self
                .store
                .first_delivery(&format!("gitlab:{key}"), now, DELIVERY_TTL_SECS)
                .await
            {
                Ok(true) => {}
                Ok(false) => return reply(200, "duplicate", "this delivery was handled already"),
                Err(e) => {
                    tracing::error!(error = %e, "run store unavailable; the sweep will complete it");
                    return reply(200, "deferred", e.to_string());
                }
            }
        }
        if !run.status.is_open() {
            return reply(200, "ignored", "the run has its reply already");
        }
        if !event.may_have_ended(&run) {
            return reply(200, "waiting", "the job has not ended yet");
        }
        match self.complete_run(run, event.project_id()).await {
            Completed::Replied(route) => reply(200, "replied", format!("{route:?}")),
            Completed::AlreadyReplied => reply(200, "duplicate", "the reply was sent already"),
            Completed::Busy => reply(200, "duplicate", "another delivery is sending the reply"),
            Completed::NotFinished(s) => reply(200, "waiting", format!("job is {s:?}")),
            Completed::Deferred(why) => reply(200, "deferred", chain(&why)),
        }
    }

    /// Complete every run still open `sweep_after_secs` after its last update.
    pub async fn sweep(&self, now: u64) -> SweepReport {
        let mut report = SweepReport::default();
        let runs = match self
            .store
            .open_runs(now.saturating_sub(self.config.sweep_after_secs))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "sweep cannot list open runs");
                report.deferred = 1;
                return report;
            }
        };
        for run in runs {
            report.examined += 1;
            let id = run.request.request_id.clone();
            match self.complete_run(run, None).await {
                Completed::Replied(_) => report.replied += 1,
                Completed::AlreadyReplied => report.already_replied += 1,
                Completed::NotFinished(_) => report.still_running += 1,
                Completed::Busy => report.busy += 1,
                Completed::Deferred(why) => {
                    tracing::warn!(request_id = %id, error = %chain(&why), "sweep could not complete a run");
                    report.deferred += 1;
                }
            }
        }
        tracing::info!(?report, "sweep done");
        report
    }

    /// Look at the run's job on GitLab and, when it has ended, reply (exactly once).
    pub async fn complete_run(&self, run: RunRecord, hint: Option<ProjectId>) -> Completed {
        if !run.status.is_open() {
            return Completed::AlreadyReplied;
        }
        let Some(project) = run.project_id.or(hint) else {
            return Completed::Deferred(Deferral::NoProject);
        };
        let job = match self.find_job(&run, project).await {
            Ok(job) => job,
            Err(GitLabError::NotFound(what)) => {
                let msg = OutgoingMessage::in_channel(
                    Notice::JobGone {
                        job: run.request.job.clone(),
                        detail: what,
                    }
                    .render(run.request.platform),
                );
                return self.claim_and_deliver(&run, &msg).await;
            }
            Err(e) => return Completed::Deferred(Deferral::Job(e)),
        };
        if !job.status.is_final() {
            return Completed::NotFinished(job.status);
        }
        let extraction = match self.read_log(project, &job).await {
            Ok(x) => x,
            Err(e) => return Completed::Deferred(Deferral::Log(e)),
        };
        let report = JobReport {
            job_name: job.name.clone(),
            job_id: job.id,
            status: job.status,
            duration_secs: job.duration,
            failure_reason: job.failure_reason.clone(),
            job_url: if job.web_url.is_empty() {
                run.job_url.clone().unwrap_or_default()
            } else {
                job.web_url.clone()
            },
            user_id: run.request.user_id.0.clone(),
            user_name: run.request.user_name.clone(),
            extraction,
        };
        let msg = match run.request.platform {
            Platform::Slack => render::slack(&report, self.config.chat.slack_bot_token.is_some()),
            Platform::Mattermost => render::mattermost(&report),
        };
        self.claim_and_deliver(&run, &msg).await
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

    /// Stream the log into the extractor. A successful job's log without a reply section may
    /// not be complete yet (GitLab archives logs asynchronously): read it again a few times.
    async fn read_log(&self, project: ProjectId, job: &Job) -> Result<Extraction, GitLabError> {
        let mut attempt = 0;
        loop {
            let mut stream = self.gitlab.job_trace(project, job.id).await?;
            let mut x = Extractor::new();
            while let Some(chunk) = stream.next().await {
                x.push(&chunk?);
            }
            let extraction = x.finish();
            let incomplete =
                extraction.outcome == Outcome::NoReplySection && job.status == Status::Success;
            if !incomplete || attempt >= self.config.log_retries {
                return Ok(extraction);
            }
            attempt += 1;
            tracing::info!(job = %job.id, attempt, "log has no reply section yet; reading again");
            tokio::time::sleep(self.config.log_retry_delay).await;
        }
    }

    /// Deliver the reply once. A short lease (a `first_delivery` key that expires) lets one
    /// invocation at a time deliver; the reply is then recorded with `claim_reply`. When
    /// delivery fails the run stays open and the lease expires, so the sweep tries again: a
    /// reply can be repeated only if an invocation dies between delivering and recording,
    /// never lost.
    async fn claim_and_deliver(&self, run: &RunRecord, msg: &OutgoingMessage) -> Completed {
        let id = &run.request.request_id;
        let lease = format!("reply-lease:{id}");
        match self
            .store
            .first_delivery(&lease, self.clock.now(), REPLY_LEASE_SECS)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Completed::Busy,
            Err(e) => return Completed::Deferred(Deferral::Lease(e)),
        }
        // Another invocation may have replied while this one read the log.
        match self.store.get_run(id).await {
            Ok(Some(cur)) if cur.replied_at.is_some() || !cur.status.is_open() => {
                return Completed::AlreadyReplied
            }
            Ok(Some(_)) => {}
            Ok(None) => return Completed::Deferred(Deferral::RunGone),
            Err(e) => return Completed::Deferred(Deferral::Store(e)),
        }
        match self.deliverer.deliver(&run.request, msg).await {
            Ok(route) => {
                match self.store.claim_reply(id, self.clock.now()).await {
                    Ok(true) => tracing::info!(request_id = %id, ?route, "reply delivered"),
                    Ok(false) => tracing::error!(
                        request_id = %id,
                        "reply delivered, but the run was already marked replied: a duplicate"
                    ),
                    Err(e) => tracing::error!(
                        request_id = %id,
                        error = %e,
                        "reply delivered but not recorded; the sweep may repeat it"
                    ),
                }
                Completed::Replied(route)
            }
            Err(e) => {
                tracing::error!(
                    request_id = %id,
                    error = %e,
                    "reply not delivered; the run stays open for the sweep"
                );
                Completed::Deferred(Deferral::Delivery(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &[u8] =
        include_bytes!("../../tests/fixtures/gitlab-webhooks/pipeline_event.json");
    const JOB_CLEAN: &[u8] =
        include_bytes!("../../tests/fixtures/gitlab-webhooks/job_event.clean.json");
    const JOB_PUBLISHED: &[u8] =
        include_bytes!("../../tests/fixtures/gitlab-webhooks/job_event.json");

    #[test]
    fn documented_payloads_parse() {
        let Some(WebhookEvent::Pipeline(p)) = parse_webhook("Pipeline Hook", PIPELINE).unwrap()
        else {
            panic!("not a pipeline event")
        };
        assert_eq!(p.pipeline_id, PipelineId(31));
        assert_eq!(p.project_id, Some(ProjectId(1)));
        assert_eq!(p.status, Status::Success);
        assert_eq!(p.builds.len(), 5);
        assert_eq!(p.builds[2].status, Status::Failed);

        let Some(WebhookEvent::Job(j)) = parse_webhook("Job Hook", JOB_CLEAN).unwrap() else {
            panic!("not a job event")
        };
        assert_eq!(
            j,
            JobEvent {
                job_id: JobId(1977),
                job_name: "test".into(),
                status: Status::Created,
                pipeline_id: PipelineId(2366),
                project_id: ProjectId(380),
            }
        );
    }

    #[test]
    fn the_published_job_example_with_comments_is_malformed() {
        let err = parse_webhook("Job Hook", JOB_PUBLISHED).unwrap_err();
        assert!(err.to_string().contains("Job Hook"));
    }

    #[test]
    fn other_events_and_wrong_kinds() {
        assert_eq!(parse_webhook("Push Hook", b"{}").unwrap(), None);
        assert!(parse_webhook("Pipeline Hook", JOB_CLEAN).is_err());
        assert!(parse_webhook("Job Hook", PIPELINE).is_err());
        assert!(parse_webhook("Job Hook", b"").is_err());
    }

    #[tokio::test]
    async fn config_names_what_is_missing() {
        let env = Env::from_pairs([("GITLAB_WEBHOOK_SECRET", "s"), ("GITLAB_URL", "https://g")]);
        let err = CompletionConfig::from_env(&env, &crate::config::NoSecrets)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("GITLAB_TOKEN"), "{err}");
        let env = Env::from_pairs([
            ("GITLAB_WEBHOOK_SECRET", "s"),
            ("GITLAB_URL", "https://g"),
            ("GITLAB_TOKEN", "t"),
            ("RUNS_TABLE", "runs"),
            ("LOG_RETRY_SECS", "0"),
        ]);
        let c = CompletionConfig::from_env(&env, &crate::config::NoSecrets)
            .await
            .unwrap();
        assert_eq!(c.sweep_after_secs, 300);
        assert_eq!(c.log_retry_delay, Duration::ZERO);
        assert_eq!(c.chat.slack_api_url, crate::slack::DEFAULT_API_URL);
        assert!(c.chat.slack_bot_token.is_none());
    }
}
