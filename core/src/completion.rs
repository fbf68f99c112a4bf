//! The completion handler and sweep: a GitLab webhook (or the scheduled sweep) becomes exactly
//! one reply in the channel of the run that started the pipeline.
//!
//! The webhook decides from the authenticated payload before any I/O. A Pipeline Hook carries
//! the pipeline's variables, so `CHATOPS_REQUEST_ID` names the run (one `GetItem`, no index)
//! and the build named by `CHATOPS_JOB` says whether the job has ended (no `GET job`). Job
//! Hooks, foreign pipelines and unfinished jobs are answered at once. The final hook finishes
//! the run (`finish`): log, render, one conditional write that takes the reply (and its
//! `response_url` use), post, record. Anything slow (a log without its reply section yet, a
//! slow trace, a Slack 429) is not waited for: the run is made due soon and the sweep
//! finishes it. A hook that comes while the run is still being dispatched marks it, and the
//! dispatcher finishes it right after saving.
//!
//! GitLab never retries a webhook and disables hooks that keep failing, so every failure after
//! authentication answers 200 and leaves the run to the sweep (`sweep`), which takes the open
//! runs whose `due_at` has come (most overdue first, a bounded number, within a time budget)
//! and backs each one off on its own.

use crate::audit::{Audit, AuditSettings};
use crate::clock::Clock;
use crate::config::{ConfigError, Env, SecretSource};
use crate::delivery::{ChatSettings, Deliverer};
use crate::dispatcher::REQUEST_ID_VARIABLE;
use crate::finish::{next_check, FinishSettings, Finisher, Mode, ReadLog, RETRY_SOON_SECS};
pub use crate::finish::{Completed, Deferral};
use crate::gitlab::{GitLab, Job, Status};
use crate::ids::{JobId, PipelineId, ProjectId, RequestId};
use crate::report::chain;
use crate::run::RunStatus;
use crate::secret::Secret;
use crate::store::RunStore;
use crate::web::{self, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    /// Delay between reads of a log that has no reply section yet (it may be incomplete).
    pub log_retry_delay: Duration,
    /// How many times such a log is read again before concluding.
    pub log_retries: u32,
    /// Where each run's `result` goes (`AUDIT_*`).
    pub audit: AuditSettings,
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
        "MATTERMOST_ACTIONS_SECRET",
        "MATTERMOST_ACTIONS_SECRET_PARAM",
        "PUBLIC_BASE_URL",
        "LOG_RETRY_SECS",
        "LOG_RETRIES",
        "AUDIT_TABLE",
        "AUDIT_INPUT",
        "AUDIT_RETENTION_DAYS",
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
            log_retry_delay: Duration::from_secs_f64(delay),
            log_retries: env.parse_or("LOG_RETRIES", 3)?,
            audit: AuditSettings::from_env(env)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Webhook payloads, parsed at the edge into our own types.

/// One job as a Pipeline Hook lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildStatus {
    pub id: JobId,
    pub name: String,
    pub status: Status,
    pub stage: String,
    pub duration: Option<f64>,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineEvent {
    pub pipeline_id: PipelineId,
    pub project_id: Option<ProjectId>,
    pub status: Status,
    pub builds: Vec<BuildStatus>,
    /// `CHATOPS_REQUEST_ID` among the pipeline's variables: the run this pipeline is.
    pub request_id: Option<RequestId>,
    /// `CHATOPS_JOB` among the pipeline's variables.
    pub job_name: Option<String>,
    /// The project's web URL (job links are built from it).
    pub project_web_url: Option<String>,
}

impl PipelineEvent {
    /// Our job, when the event says it has ended: the build named by `CHATOPS_JOB` (its
    /// newest, if retried) in a final state.
    pub fn our_job(&self) -> Option<Job> {
        let name = self.job_name.as_deref()?;
        let b = self
            .builds
            .iter()
            .filter(|b| b.name == name)
            .max_by_key(|b| b.id)?;
        if !b.status.is_final() {
            return None;
        }
        Some(Job {
            id: b.id,
            name: b.name.clone(),
            status: b.status,
            stage: b.stage.clone(),
            web_url: self
                .project_web_url
                .as_deref()
                .map(|w| format!("{}/-/jobs/{}", w.trim_end_matches('/'), b.id))
                .unwrap_or_default(),
            duration: b.duration,
            failure_reason: b.failure_reason.clone(),
            started_at: None,
            finished_at: None,
            allow_failure: false,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub job_id: JobId,
    pub job_name: String,
    pub status: Status,
    pub pipeline_id: PipelineId,
    pub project_id: ProjectId,
}

#[derive(Debug, Clone, PartialEq)]
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
struct WireBuild {
    id: u64,
    name: String,
    status: Status,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default)]
    failure_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireVariable {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct WirePipelineAttrs {
    id: u64,
    status: Status,
    #[serde(default)]
    variables: Vec<WireVariable>,
}

#[derive(Deserialize)]
struct WireProject {
    id: u64,
    #[serde(default)]
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct WirePipelineHook {
    object_kind: String,
    object_attributes: WirePipelineAttrs,
    #[serde(default)]
    project: Option<WireProject>,
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
            let var = |k: &str| {
                w.object_attributes
                    .variables
                    .iter()
                    .find(|v| v.key == k)
                    .map(|v| v.value.clone())
            };
            let request_id = var(REQUEST_ID_VARIABLE)
                .filter(|v| !v.is_empty())
                .map(RequestId::new);
            let job_name = var("CHATOPS_JOB");
            Ok(Some(WebhookEvent::Pipeline(PipelineEvent {
                pipeline_id: PipelineId(w.object_attributes.id),
                project_id: w.project.as_ref().map(|p| ProjectId(p.id)),
                project_web_url: w.project.and_then(|p| p.web_url),
                status: w.object_attributes.status,
                builds: w
                    .builds
                    .into_iter()
                    .map(|b| BuildStatus {
                        id: JobId(b.id),
                        name: b.name,
                        status: b.status,
                        stage: b.stage,
                        duration: b.duration,
                        failure_reason: b.failure_reason,
                    })
                    .collect(),
                request_id,
                job_name,
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
}

// ---------------------------------------------------------------------------------------
// The handler.

/// How long the webhook path may take: GitLab gives a hook 10 s and disables hooks that keep
/// failing; whatever GitLab and Slack do, the answer comes well within a second.
pub const WEBHOOK_BUDGET: Duration = Duration::from_millis(800);
/// How long one sweep may work (the function's timeout is longer): what is left waits for
/// the next sweep, most overdue first.
pub const SWEEP_BUDGET: Duration = Duration::from_secs(40);
/// How many due runs one sweep takes.
pub const SWEEP_LIMIT: usize = 50;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub examined: usize,
    pub replied: usize,
    pub already_replied: usize,
    pub still_running: usize,
    pub busy: usize,
    pub deferred: usize,
    /// Due runs left for the next sweep because the time budget ran out.
    pub left: usize,
    /// Four-eyes requests nobody decided in time, ended by this sweep.
    pub expired: usize,
}

pub struct Completion {
    pub config: CompletionConfig,
    pub gitlab: Arc<dyn GitLab>,
    pub store: Arc<dyn RunStore>,
    pub deliverer: Deliverer,
    pub clock: Arc<dyn Clock>,
    /// Each run's `result` entry.
    pub audit: Audit,
}

fn reply(status: u16, result: &str, detail: impl Into<String>) -> HttpResponse {
    web::json(status, &json!({"result": result, "detail": detail.into()}))
}

impl Completion {
    fn settings(&self) -> FinishSettings {
        FinishSettings {
            can_upload: self.config.chat.slack_bot_token.is_some(),
            log_retries: self.config.log_retries,
            log_retry_delay: self.config.log_retry_delay,
        }
    }

    /// `POST /gitlab/webhook`. Decided from the authenticated payload before any I/O: only
    /// a Pipeline Hook of a pipeline we created (it carries `CHATOPS_REQUEST_ID`) whose job
    /// has ended reads the run (one `GetItem`), the log and posts; everything else answers at
    /// once. Job Hooks carry no pipeline variables, so they are not used.
    pub async fn handle_webhook(&self, req: HttpRequest) -> HttpResponse {
        let started = Instant::now();
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
            Ok(Some(WebhookEvent::Pipeline(p))) => p,
            Ok(Some(WebhookEvent::Job(_))) => {
                return reply(
                    200,
                    "ignored",
                    "job events are not used: pipeline events carry the run",
                )
            }
            Ok(None) => return reply(200, "ignored", format!("event {kind:?} is not handled")),
            Err(e) => {
                tracing::warn!(error = %e, "malformed webhook");
                return reply(400, "malformed", e.to_string());
            }
        };
        let Some(request_id) = event.request_id.clone() else {
            return reply(200, "ignored", "not a pipeline chatops started");
        };
        let Some(job) = event.our_job() else {
            return reply(200, "waiting", "the job has not ended yet");
        };
        let settings = self.settings();
        let finisher = self.finisher(&settings);
        let mode = Mode::Webhook {
            deadline: started + WEBHOOK_BUDGET,
        };
        // The job's log is read while the run is read from the table: the hook names both
        // (authenticated), and `finish_with_log` uses the log only if it is the run's job's.
        let read_log = async {
            let project = event.project_id?;
            let log = finisher.read_log(project, &job, mode).await;
            Some(ReadLog {
                project,
                job: job.id,
                log,
            })
        };
        let (run, log) = tokio::join!(self.store.get_run(&request_id), read_log);
        let run = match run {
            Ok(Some(run)) => run,
            Ok(None) => return reply(200, "ignored", "no such run"),
            Err(e) => {
                tracing::error!(error = %e, "run store unavailable; the sweep will complete it");
                return reply(200, "deferred", chain(&e));
            }
        };
        let run = if run.status == RunStatus::Dispatching {
            // The job ended before the dispatcher saved the run: mark it, and the dispatcher
            // finishes it as soon as it has saved (it reads the mark back from that write).
            match self
                .store
                .mark_early_hook(&request_id, self.clock.now())
                .await
            {
                Ok(Some(_)) => return reply(200, "early", "the dispatcher finishes it"),
                Ok(None) => match self.store.get_run(&request_id).await {
                    Ok(Some(run)) => run,
                    Ok(None) => return reply(200, "ignored", "no such run"),
                    Err(e) => return reply(200, "deferred", chain(&e)),
                },
                Err(e) => return reply(200, "deferred", chain(&e)),
            }
        } else {
            run
        };
        if !run.status.is_open() {
            return reply(200, "duplicate", "the run has its reply already");
        }
        let mut run = run;
        if run.project_id.is_none() {
            run.project_id = event.project_id;
        }
        match finisher.finish_with_log(&run, Some(job), log, mode).await {
            Completed::Replied(route) => reply(200, "replied", format!("{route:?}")),
            Completed::AlreadyReplied => reply(200, "duplicate", "the reply was sent already"),
            Completed::Busy => reply(200, "duplicate", "another delivery is sending the reply"),
            Completed::NotFinished(s) => reply(200, "waiting", format!("job is {s:?}")),
            Completed::Deferred(why) => {
                // Off the webhook path: the sweep finishes it soon.
                let due = self.clock.now() + RETRY_SOON_SECS;
                if let Err(e) = self
                    .store
                    .schedule_check(&request_id, due, run.checks)
                    .await
                {
                    tracing::warn!(error = %e, "could not make the run due soon; its own due time stands");
                }
                tracing::info!(request_id = %request_id, why = %chain(&why), "finish deferred to the sweep");
                reply(200, "deferred", chain(&why))
            }
        }
    }

    fn finisher<'a>(&'a self, settings: &'a FinishSettings) -> Finisher<'a> {
        Finisher {
            gitlab: self.gitlab.as_ref(),
            store: self.store.as_ref(),
            deliverer: &self.deliverer,
            clock: self.clock.as_ref(),
            settings,
            audit: &self.audit,
        }
    }

    /// Look at the open runs that are due, most overdue first, within a time budget; each
    /// one not finished is looked at again later (backing off; rarely for a job waiting to
    /// be played). Progress is kept in each run's `due_at`, so a starved run is first next time.
    pub async fn sweep(&self, now: u64) -> SweepReport {
        self.sweep_until(now, Instant::now() + SWEEP_BUDGET).await
    }

    pub async fn sweep_until(&self, now: u64, deadline: Instant) -> SweepReport {
        let mut report = SweepReport::default();
        let runs = match self.store.due_runs(now, SWEEP_LIMIT).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "sweep cannot list due runs");
                report.deferred = 1;
                return report;
            }
        };
        let settings = self.settings();
        let finisher = self.finisher(&settings);
        let total = runs.len();
        for run in runs {
            if Instant::now() + Duration::from_secs(2) >= deadline {
                report.left = total - report.examined;
                break;
            }
            report.examined += 1;
            let id = run.request.request_id.clone();
            if run.status == RunStatus::AwaitingApproval {
                // Its due time is its expiry: no GitLab call, the request just ends.
                let expiry = crate::approval::Expiry {
                    store: self.store.as_ref(),
                    deliverer: &self.deliverer,
                    clock: self.clock.as_ref(),
                    audit: &self.audit,
                };
                match expiry.expire(&run).await {
                    Ok(true) => report.expired += 1,
                    Ok(false) => report.already_replied += 1,
                    Err(e) => {
                        tracing::warn!(request_id = %id, error = %e, "could not end an expired approval request");
                        report.deferred += 1;
                    }
                }
                continue;
            }
            let mode = Mode::Background { deadline };
            let outcome = finisher.finish(&run, None, mode).await;
            let later = match &outcome {
                Completed::Replied(_) => {
                    report.replied += 1;
                    None
                }
                Completed::AlreadyReplied => {
                    report.already_replied += 1;
                    None
                }
                Completed::NotFinished(_) => {
                    report.still_running += 1;
                    Some(next_check(self.clock.now(), run.status, run.checks))
                }
                Completed::Busy => {
                    report.busy += 1;
                    None
                }
                Completed::Deferred(why) => {
                    tracing::warn!(request_id = %id, error = %chain(why), "sweep could not complete a run");
                    report.deferred += 1;
                    Some(
                        next_check(self.clock.now(), RunStatus::Running, 0)
                            .min(self.clock.now() + RETRY_SOON_SECS * u64::from(run.checks + 1)),
                    )
                }
            };
            if let Some(due) = later {
                if let Err(e) = self.store.schedule_check(&id, due, run.checks + 1).await {
                    tracing::warn!(request_id = %id, error = %e, "could not schedule the next check");
                }
            }
        }
        tracing::info!(?report, "sweep done");
        report
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
        assert_eq!(c.log_retry_delay, Duration::ZERO);
        assert_eq!(c.chat.slack_api_url, crate::slack::DEFAULT_API_URL);
        assert!(c.chat.slack_bot_token.is_none());
    }
}
