//! The dispatcher: one queued run request becomes exactly one GitLab pipeline running just
//! the requested job, or one clear message to the user saying why not.
//!
//! Flow per message: parse (a malformed body or unknown version is acknowledged and logged:
//! retrying will not fix it) → claim the request in the runs table (a conditional write with
//! a lease, so redeliveries and concurrent invocations never create a second pipeline, and a
//! crash mid-way is taken over once the lease runs out) → the chat user's GitLab link →
//! Developer access on the project (`members/all/:user_id`) → the job on the default branch
//! (`ci/lint?include_jobs=true`) → `POST /pipeline` with the contract's variables → the
//! pipeline must hold exactly that job (else it is cancelled and the user told which jobs
//! joined) → the run is recorded and the user told who started what, with the link.
//!
//! GitLab being unavailable is retryable: the lease is released and the message goes back to
//! SQS; on the `MAX_ATTEMPTS`th receive the user is told instead, so nothing ends silently.
//! Every message to the user goes through the `Deliverer`, which counts `response_url` uses.

use crate::chat::OutgoingMessage;
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, Env, SecretSource};
use crate::delivery::{ChatSettings, Deliverer};
use crate::gitlab::{
    AccessLevel, CiConfig, GitLab, GitLabClient, GitLabError, Job, Project, Status,
};
use crate::ids::{ChannelId, JobId, ProjectRef};
use crate::run::{Platform, RunRecord, RunRequest, RunStatus, UserLink, RUN_REQUEST_VERSION};
use crate::secret::Secret;
use crate::store::{DispatchClaim, DynamoStore, RunStore, StoreError};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use std::collections::HashMap;
use std::sync::Arc;

/// Receives of one message before the user is told it could not be scheduled. Matches the
/// queue's redrive `maxReceiveCount`, so a message reaches the DLQ only after the user knows.
pub const MAX_ATTEMPTS: u32 = 5;
/// How long one dispatcher owns a claimed request (longer than the function's timeout).
pub const LEASE_SECS: u64 = 120;

/// GitLab's own refusal text for a missing job (`Presenters::Run#failed_to_schedule`).
pub fn could_not_schedule(job: &str) -> String {
    format!(
        "The command could not be scheduled. Make sure that your project has a .gitlab-ci.yml \
         that defines a job with the name \"{job}\""
    )
}

/// The dispatcher's configuration, read once at cold start.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub gitlab_url: String,
    pub gitlab_token: Secret,
    /// `GITLAB_PROJECT`: the project runs go to (id or `group/project`).
    pub project: ProjectRef,
    /// `CHANNEL_PROJECTS`: `C123=group/proj,C456=42` sends a channel's runs elsewhere.
    pub channel_projects: HashMap<String, ProjectRef>,
    pub runs_table: String,
    /// Where messages to the channel go (Slack, Mattermost).
    pub chat: ChatSettings,
}

impl DispatcherConfig {
    pub const ENV: &[&str] = &[
        "GITLAB_URL",
        "GITLAB_TOKEN",
        "GITLAB_TOKEN_PARAM",
        "GITLAB_PROJECT",
        "CHANNEL_PROJECTS",
        "RUNS_TABLE",
        "SLACK_BOT_TOKEN",
        "SLACK_BOT_TOKEN_PARAM",
        "SLACK_API_URL",
        "MATTERMOST_URL",
        "MATTERMOST_BOT_TOKEN",
        "MATTERMOST_BOT_TOKEN_PARAM",
    ];

    pub async fn from_env(env: &Env, secrets: &dyn SecretSource) -> Result<Self, ConfigError> {
        Ok(Self {
            gitlab_url: env.or("GITLAB_URL", crate::gitlab::client::DEFAULT_GITLAB_URL),
            gitlab_token: env.required_secret("GITLAB_TOKEN", secrets).await?,
            project: ProjectRef::new(env.required("GITLAB_PROJECT")?.trim()),
            channel_projects: parse_channel_projects(env.get("CHANNEL_PROJECTS").unwrap_or(""))?,
            runs_table: env.required("RUNS_TABLE")?,
            chat: ChatSettings::from_env(env, secrets).await?,
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DispatchError {
    /// Try again later (SQS redelivers the message).
    #[error("retry later: {0}")]
    Retryable(String),
    /// The message can never be processed; acknowledged after logging.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl From<StoreError> for DispatchError {
    fn from(e: StoreError) -> Self {
        DispatchError::Retryable(e.to_string())
    }
}

/// Why a step stopped the run.
enum Stop {
    /// Tell the user this and end the run (`Refused`).
    Refuse(String),
    /// GitLab or the store is unavailable.
    Retry(String),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Retry(e.to_string())
    }
}

pub struct Dispatcher {
    pub config: DispatcherConfig,
    pub gitlab: Arc<dyn GitLab>,
    pub store: Arc<dyn RunStore>,
    pub deliverer: Deliverer,
    pub clock: Arc<dyn Clock>,
}

impl Dispatcher {
    /// The production wiring: GitLab over HTTPS, DynamoDB, Slack/Mattermost APIs.
    pub fn from_config(
        config: DispatcherConfig,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, GitLabError> {
        let gitlab: Arc<dyn GitLab> = Arc::new(GitLabClient::new(
            &config.gitlab_url,
            config.gitlab_token.clone(),
        )?);
        let store: Arc<dyn RunStore> = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.runs_table.clone(),
        ));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let deliverer = Deliverer::over_http(&config.chat, store.clone(), clock.clone());
        Ok(Self {
            config,
            gitlab,
            store,
            deliverer,
            clock,
        })
    }

    /// An SQS batch: each record on its own; the retryable ones are reported as batch item
    /// failures so only they come back.
    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let results =
            futures_util::future::join_all(event.records.iter().map(|m| self.handle_record(m)))
                .await;
        let mut resp = SqsBatchResponse::default();
        for (m, res) in event.records.iter().zip(results) {
            if let Err(DispatchError::Retryable(reason)) = res {
                let id = m.message_id.clone().unwrap_or_default();
                tracing::warn!(message_id = %id, %reason, "run request will be retried");
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                resp.batch_item_failures.push(f);
            }
        }
        resp
    }

    async fn handle_record(&self, m: &SqsMessage) -> Result<(), DispatchError> {
        let receive_count = m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let body = m.body.as_deref().unwrap_or("");
        match self.handle_message(body, receive_count).await {
            Err(DispatchError::Permanent(reason)) => {
                tracing::error!(
                    message_id = m.message_id.as_deref().unwrap_or(""),
                    %reason,
                    "run request dropped: it can never be processed"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// One message body; `receive_count` is SQS's `ApproximateReceiveCount`.
    pub async fn handle_message(
        &self,
        body: &str,
        receive_count: u32,
    ) -> Result<(), DispatchError> {
        let request = parse_request(body)?;
        let now = self.clock.now();
        let claim = self.store.claim_dispatch(&request, now, LEASE_SECS).await?;
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
                return Err(DispatchError::Retryable(format!(
                    "request {} is being dispatched by another invocation",
                    request.request_id
                )))
            }
        };
        let mut rec = rec;
        match self.dispatch(&mut rec).await {
            Ok(()) => Ok(()),
            Err(Stop::Refuse(text)) => self.refuse(rec, &text).await,
            Err(Stop::Retry(reason)) if receive_count >= MAX_ATTEMPTS => {
                tracing::error!(request_id = %rec.request.request_id, %reason, "giving up after {MAX_ATTEMPTS} attempts");
                let text = format!(
                    "{}\nGitLab is unavailable right now ({reason}); the command was tried \
                     {MAX_ATTEMPTS} times. Please try again later.",
                    could_not_schedule(&rec.request.job)
                );
                self.refuse(rec, &text).await
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

    /// Tell the user, then close the run. A message that cannot be delivered keeps the run
    /// open for a retry: the user must hear why.
    async fn refuse(&self, mut rec: RunRecord, text: &str) -> Result<(), DispatchError> {
        let msg = OutgoingMessage::ephemeral(text);
        if let Err(e) = self.deliverer.deliver(&rec.request, &msg).await {
            rec.lease_until = 0;
            let _ = self.save(&mut rec).await;
            return Err(DispatchError::Retryable(format!(
                "could not tell the user: {e}"
            )));
        }
        rec.status = RunStatus::Refused;
        rec.updated_at = self.clock.now();
        self.save(&mut rec).await?;
        tracing::info!(request_id = %rec.request.request_id, reason = %text, "run refused");
        Ok(())
    }

    /// Save, keeping what other writers own (`response_url` uses, the reply claim).
    async fn save(&self, rec: &mut RunRecord) -> Result<(), StoreError> {
        if let Some(cur) = self.store.get_run(&rec.request.request_id).await? {
            rec.response_url_uses = rec.response_url_uses.max(cur.response_url_uses);
            if cur.replied_at.is_some() {
                rec.replied_at = cur.replied_at;
                rec.status = RunStatus::Replied;
            }
        }
        self.store.save_run(rec).await
    }

    async fn dispatch(&self, rec: &mut RunRecord) -> Result<(), Stop> {
        let req = rec.request.clone();
        let link = self
            .store
            .get_user(req.team_id.as_str(), req.user_id.as_str())
            .await?
            .ok_or_else(|| Stop::Refuse(unlinked_text(&req)))?;
        rec.gitlab_user = Some(link.gitlab_username.clone());

        let project_ref = self.config.project_for(&req.channel_id).clone();
        let project = self
            .gitlab
            .project(&project_ref)
            .await
            .map_err(|e| match e {
                GitLabError::NotFound(_) | GitLabError::Unauthorized(_) => Stop::Refuse(format!(
                "{}\nThe GitLab project `{project_ref}` was not found or the ChatOps token cannot \
                 see it ({e}). Ask an administrator to check GITLAB_PROJECT and the token.",
                could_not_schedule(&req.job)
            )),
                other => gitlab_stop(&req, other),
            })?;
        rec.project_id = Some(project.id);
        rec.project_path = Some(project.path_with_namespace.clone());
        rec.project_web_url = Some(project.web_url.clone());

        self.check_access(&req, &link, &project).await?;

        let Some(branch) = project.default_branch.clone().filter(|b| !b.is_empty()) else {
            return Err(Stop::Refuse(format!(
                "{}\nThe project has no default branch (is the repository empty?).",
                could_not_schedule(&req.job)
            )));
        };

        let pipeline = match rec.pipeline_id {
            // An earlier attempt created it, then stopped: go on from there.
            Some(id) => self
                .gitlab
                .pipeline(project.id, id)
                .await
                .map_err(|e| gitlab_stop(&req, e))?,
            None => {
                self.check_job(&req, &project, &branch).await?;
                let vars = pipeline_variables(&req);
                let p = self
                    .gitlab
                    .create_pipeline(project.id, &branch, &vars)
                    .await
                    .map_err(|e| match e {
                        GitLabError::Rejected(m) => Stop::Refuse(format!(
                            "{}\nGitLab did not create the pipeline: {m}\nThe job must select \
                             itself with `rules: - if: '$CHATOPS_JOB == $CI_JOB_NAME'`.",
                            could_not_schedule(&req.job)
                        )),
                        other => gitlab_stop(&req, other),
                    })?;
                rec.pipeline_id = Some(p.id);
                rec.pipeline_url = Some(p.web_url.clone());
                rec.updated_at = self.clock.now();
                // Recorded at once: a crash from here on resumes instead of creating another.
                self.save(rec).await?;
                p
            }
        };
        rec.pipeline_url = Some(pipeline.web_url.clone());

        let jobs = self
            .gitlab
            .pipeline_jobs(project.id, pipeline.id)
            .await
            .map_err(|e| gitlab_stop(&req, e))?;
        let (ours, foreign): (Vec<&Job>, Vec<&Job>) = jobs.iter().partition(|j| j.name == req.job);
        if ours.len() != 1 || !foreign.is_empty() {
            self.gitlab
                .cancel_pipeline(project.id, pipeline.id)
                .await
                .map_err(|e| gitlab_stop(&req, e))?;
            return Err(Stop::Refuse(foreign_jobs_text(
                &req,
                &pipeline.web_url,
                ours.len(),
                &foreign,
            )));
        }
        let job = ours[0];
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
        self.save(rec).await?;

        let text = if manual {
            manual_text(&req, &pipeline.web_url, job.id, &job.web_url)
        } else {
            started_text(&req, &pipeline.web_url, &job.web_url)
        };
        let msg = OutgoingMessage::in_channel(text);
        if let Err(e) = self.deliverer.deliver(&req, &msg).await {
            // The run goes on and its reply comes later; this note is what is lost.
            tracing::error!(request_id = %req.request_id, error = %e, "could not post the follow-up");
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

    async fn check_access(
        &self,
        req: &RunRequest,
        link: &UserLink,
        project: &Project,
    ) -> Result<(), Stop> {
        let user = self
            .gitlab
            .user_by_username(&link.gitlab_username)
            .await
            .map_err(|e| gitlab_stop(req, e))?;
        let Some(user) = user else {
            return Err(Stop::Refuse(format!(
                "Your chat account is linked to the GitLab user `{}`, which does not exist. Ask \
                 an administrator to run `chatops users link {}/{} <gitlab username>` again.",
                link.gitlab_username, req.team_id, req.user_id
            )));
        };
        if user.state == "blocked" || user.state == "banned" {
            return Err(Stop::Refuse(access_denied_text(req, &project.web_url)));
        }
        let level = self
            .gitlab
            .member_access(project.id, user.id)
            .await
            .map_err(|e| gitlab_stop(req, e))?;
        match level {
            Some(l) if l >= AccessLevel::DEVELOPER => Ok(()),
            _ => Err(Stop::Refuse(access_denied_text(req, &project.web_url))),
        }
    }

    async fn check_job(
        &self,
        req: &RunRequest,
        project: &Project,
        branch: &str,
    ) -> Result<(), Stop> {
        let config = self
            .gitlab
            .ci_jobs(project.id, branch)
            .await
            .map_err(|e| match e {
                GitLabError::NotFound(m) => Stop::Refuse(format!(
                    "{}\nThere is no CI configuration on `{branch}` ({m}).",
                    could_not_schedule(&req.job)
                )),
                other => gitlab_stop(req, other),
            })?;
        let why = match config {
            CiConfig::Invalid(errors) => format!(
                "The CI configuration on `{branch}` is invalid: {}",
                if errors.is_empty() {
                    "GitLab gave no details".to_owned()
                } else {
                    errors.join("; ")
                }
            ),
            CiConfig::Valid(jobs) => match jobs.iter().find(|j| j.name == req.job) {
                None => format!("There is no job named `{}` on `{branch}`.", req.job),
                Some(j) if j.excluded_from_chat => format!(
                    "The job `{}` is excluded from chat (`except: [chat]`).",
                    req.job
                ),
                Some(_) => return Ok(()),
            },
        };
        Err(Stop::Refuse(format!(
            "{}\n{why}",
            could_not_schedule(&req.job)
        )))
    }
}

fn parse_request(body: &str) -> Result<RunRequest, DispatchError> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| DispatchError::Permanent(format!("body is not JSON: {e}")))?;
    match v.get("version").and_then(|v| v.as_u64()) {
        Some(n) if n == RUN_REQUEST_VERSION as u64 => {}
        Some(n) => {
            return Err(DispatchError::Permanent(format!(
                "run request version {n} is not supported (this dispatcher reads {RUN_REQUEST_VERSION})"
            )))
        }
        None => return Err(DispatchError::Permanent("run request has no version".into())),
    }
    serde_json::from_value(v)
        .map_err(|e| DispatchError::Permanent(format!("malformed run request: {e}")))
}

fn gitlab_stop(req: &RunRequest, e: GitLabError) -> Stop {
    match e {
        GitLabError::Retryable(m) => Stop::Retry(m),
        GitLabError::Protocol(m) => Stop::Retry(format!("unexpected answer from GitLab: {m}")),
        GitLabError::Unauthorized(m) => Stop::Refuse(format!(
            "{}\nGitLab refused the ChatOps token ({m}). Ask an administrator to check it.",
            could_not_schedule(&req.job)
        )),
        GitLabError::NotFound(m) | GitLabError::Rejected(m) => Stop::Refuse(format!(
            "{}\nGitLab answered: {m}",
            could_not_schedule(&req.job)
        )),
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
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn link(platform: Platform, url: &str, text: &str) -> String {
    match platform {
        Platform::Slack => format!("<{url}|{text}>"),
        Platform::Mattermost => format!("[{text}]({url})"),
    }
}

fn mention(req: &RunRequest) -> String {
    match req.platform {
        Platform::Slack => format!("<@{}>", req.user_id),
        Platform::Mattermost => format!("@{}", req.user_name),
    }
}

fn unlinked_text(req: &RunRequest) -> String {
    format!(
        "Your chat account is not linked to a GitLab user yet, so I cannot run `{}` for you. \
         Ask a ChatOps administrator to run:\n`chatops users link {}/{} <your GitLab username>`",
        req.job, req.team_id, req.user_id
    )
}

/// GitLab's access-denied text (`Presenters::Access#access_denied`).
fn access_denied_text(req: &RunRequest, project_url: &str) -> String {
    format!(
        "You are not allowed to perform the given ChatOps command. Most likely you do not have \
         access to the GitLab project for this ChatOps integration.\n\nThe GitLab project for \
         this ChatOps integration can be found at {}.",
        link(req.platform, project_url, project_url)
    )
}

fn foreign_jobs_text(
    req: &RunRequest,
    pipeline_url: &str,
    ours: usize,
    foreign: &[&Job],
) -> String {
    let mut names: Vec<&str> = foreign.iter().map(|j| j.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut text = format!(
        "{}\nThe pipeline {} was cancelled: a chat pipeline must hold only the job `{}`.",
        could_not_schedule(&req.job),
        link(req.platform, pipeline_url, "(cancelled)"),
        req.job
    );
    if ours == 0 {
        text.push_str(&format!(
            "\nThe job `{}` did not join it: give it `rules: - if: '$CHATOPS_JOB == $CI_JOB_NAME'` \
             (an `only: [chat]` job never runs in a pipeline started through the API).",
            req.job
        ));
    }
    if !names.is_empty() {
        text.push_str(&format!(
            "\nThese jobs joined it too: {}. Keep them out of chat pipelines with a first rule \
             `- if: '$CHATOPS_JOB'` + `when: never` (or `except: variables: [$CHATOPS_JOB]`).",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text
}

fn input_suffix(req: &RunRequest) -> String {
    let first = req.input.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        String::new()
    } else if req.input.contains('\n') || first.chars().count() > 80 {
        let short: String = first.chars().take(80).collect();
        format!(" `{short}…`")
    } else {
        format!(" `{first}`")
    }
}

fn started_text(req: &RunRequest, pipeline_url: &str, job_url: &str) -> String {
    format!(
        "{} started {}{} ({}).",
        mention(req),
        link(req.platform, job_url, &req.job),
        input_suffix(req),
        link(req.platform, pipeline_url, "pipeline")
    )
}

fn manual_text(req: &RunRequest, pipeline_url: &str, job: JobId, job_url: &str) -> String {
    format!(
        "{} requested {}{} ({}). It is a manual job: it waits for someone to play it at {} \
         (job {job}). Its output comes here when it has run.",
        mention(req),
        link(req.platform, job_url, &req.job),
        input_suffix(req),
        link(req.platform, pipeline_url, "pipeline"),
        link(req.platform, job_url, job_url)
    )
}

// ---------------------------------------------------------------------------------------
// `chatops users …`

/// What `chatops users` needs: the store, and GitLab when a token is set (to check names).
pub async fn users_command(
    cmd: &crate::cli::UsersCommand,
    store: &dyn RunStore,
    gitlab: Option<&dyn GitLab>,
    now: u64,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<i32> {
    use crate::cli::UsersCommand;
    let split = |s: &str| -> anyhow::Result<(String, String)> {
        match s.split_once('/') {
            Some((t, u)) if !t.trim().is_empty() && !u.trim().is_empty() => {
                Ok((t.trim().to_owned(), u.trim().to_owned()))
            }
            _ => anyhow::bail!("expected <team id>/<chat user id>, e.g. T0123/U0456; got {s:?}"),
        }
    };
    match cmd {
        UsersCommand::Link {
            chat_user,
            gitlab_username,
        } => {
            let (team, user) = split(chat_user)?;
            let username = gitlab_username.trim().trim_start_matches('@');
            if username.is_empty() {
                anyhow::bail!("the GitLab username is empty");
            }
            let mut canonical = username.to_owned();
            match gitlab {
                Some(gl) => match gl.user_by_username(username).await? {
                    Some(u) => canonical = u.username,
                    None => {
                        writeln!(
                            out,
                            "GitLab has no user named {username:?}; nothing linked."
                        )?;
                        return Ok(1);
                    }
                },
                None => writeln!(
                    out,
                    "note: GITLAB_TOKEN is not set, so {username:?} was not checked on GitLab"
                )?,
            }
            store
                .link_user(&UserLink {
                    team_id: crate::ids::TeamId::new(&team),
                    chat_user_id: crate::ids::ChatUserId::new(&user),
                    gitlab_username: canonical.clone(),
                    linked_at: now,
                })
                .await?;
            writeln!(out, "linked {team}/{user} -> {canonical}")?;
            Ok(0)
        }
        UsersCommand::Unlink { chat_user } => {
            let (team, user) = split(chat_user)?;
            if store.unlink_user(&team, &user).await? {
                writeln!(out, "unlinked {team}/{user}")?;
                Ok(0)
            } else {
                writeln!(out, "{team}/{user} was not linked")?;
                Ok(1)
            }
        }
        UsersCommand::List => {
            let links = store.list_users().await?;
            if links.is_empty() {
                writeln!(out, "no linked users")?;
            }
            for l in links {
                writeln!(
                    out,
                    "{}/{}\t{}",
                    l.team_id, l.chat_user_id, l.gitlab_username
                )?;
            }
            Ok(0)
        }
    }
}

/// `chatops users …` from the process environment (`RUNS_TABLE`, AWS variables, and
/// `GITLAB_URL`/`GITLAB_TOKEN` when set), as the functions read them.
pub async fn users_cli(cmd: &crate::cli::UsersCommand) -> anyhow::Result<i32> {
    let env = Env::from_process();
    let table = env.required("RUNS_TABLE")?;
    let sdk = crate::config::aws_sdk_config().await;
    let secrets = crate::config::SsmSecrets::new(sdk.clone());
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let gitlab = match env.secret("GITLAB_TOKEN", &secrets).await? {
        Some(token) => Some(GitLabClient::new(
            &env.or("GITLAB_URL", crate::gitlab::client::DEFAULT_GITLAB_URL),
            token,
        )?),
        None => None,
    };
    let mut out = std::io::stdout();
    users_command(
        cmd,
        &store,
        gitlab.as_ref().map(|g| g as &dyn GitLab),
        SystemClock.now(),
        &mut out,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::RecordingChat;
    use crate::clock::ManualClock;
    use crate::gitlab::FakeGitLab;
    use crate::ids::{ChatUserId, RequestId, TeamId};
    use crate::store::MemoryStore;

    fn config() -> DispatcherConfig {
        DispatcherConfig {
            gitlab_url: "https://gitlab.example.com".into(),
            gitlab_token: Secret::new("t"),
            project: ProjectRef::new("group/proj"),
            channel_projects: HashMap::new(),
            runs_table: "runs".into(),
            chat: ChatSettings::default(),
        }
    }

    fn request() -> RunRequest {
        RunRequest {
            version: RUN_REQUEST_VERSION,
            request_id: RequestId::new("req-1"),
            platform: Platform::Slack,
            team_id: TeamId::new("T1"),
            team_domain: None,
            channel_id: ChannelId::new("C1"),
            channel_name: "ops".into(),
            user_id: ChatUserId::new("U1"),
            user_name: "alice".into(),
            command: "/chatops".into(),
            job: "deploy".into(),
            input: "production".into(),
            response_url: "https://hooks.slack.com/commands/1".into(),
            received_at: 1_000,
        }
    }

    fn setup() -> (
        Dispatcher,
        Arc<FakeGitLab>,
        Arc<MemoryStore>,
        Arc<RecordingChat>,
    ) {
        let gl = Arc::new(FakeGitLab::new());
        let p = gl.add_project(42, "group/proj");
        let u = gl.add_user(7, "alice");
        gl.set_member(p.id, u.id, AccessLevel::DEVELOPER);
        gl.set_ci_jobs(p.id, vec![FakeGitLab::ci_job("deploy")]);
        let store = Arc::new(MemoryStore::new());
        let chat = Arc::new(RecordingChat::default());
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(1_010));
        let d = Dispatcher {
            config: config(),
            gitlab: gl.clone(),
            store: store.clone(),
            deliverer: Deliverer {
                slack: chat.clone(),
                mattermost: chat.clone(),
                store: store.clone(),
                clock: clock.clone(),
            },
            clock,
        };
        (d, gl, store, chat)
    }

    async fn link(store: &MemoryStore) {
        store
            .link_user(&UserLink {
                team_id: TeamId::new("T1"),
                chat_user_id: ChatUserId::new("U1"),
                gitlab_username: "alice".into(),
                linked_at: 1,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn happy_path_creates_one_pipeline_and_tells_who_started_it() {
        let (d, gl, store, chat) = setup();
        link(&store).await;
        let body = serde_json::to_string(&request()).unwrap();
        d.handle_message(&body, 1).await.unwrap();
        d.handle_message(&body, 2).await.unwrap();
        let created = gl.created_pipelines();
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].variable("CHATOPS_JOB"), Some("deploy"));
        let rec = store
            .get_run(&RequestId::new("req-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.status, RunStatus::Running);
        assert_eq!(rec.response_url_uses, 1);
        let sent = chat.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert!(
            sent[0].1.text.starts_with("<@U1> started <"),
            "{}",
            sent[0].1.text
        );
    }

    #[tokio::test]
    async fn malformed_and_unknown_versions_are_permanent() {
        let (d, ..) = setup();
        assert!(matches!(
            d.handle_message("not json", 1).await,
            Err(DispatchError::Permanent(_))
        ));
        let mut v = serde_json::to_value(request()).unwrap();
        v["version"] = 99.into();
        assert!(matches!(
            d.handle_message(&v.to_string(), 1).await,
            Err(DispatchError::Permanent(m)) if m.contains("99")
        ));
        v["version"] = 1.into();
        v["job"] = serde_json::Value::Null;
        assert!(matches!(
            d.handle_message(&v.to_string(), 1).await,
            Err(DispatchError::Permanent(_))
        ));
    }

    #[tokio::test]
    async fn retryable_then_told_at_max_attempts() {
        let (d, gl, store, chat) = setup();
        link(&store).await;
        gl.fail_next(Some("project"), GitLabError::Retryable("503".into()), 100);
        let body = serde_json::to_string(&request()).unwrap();
        for n in 1..MAX_ATTEMPTS {
            assert!(matches!(
                d.handle_message(&body, n).await,
                Err(DispatchError::Retryable(_))
            ));
        }
        assert!(chat.sent.lock().unwrap().is_empty());
        d.handle_message(&body, MAX_ATTEMPTS).await.unwrap();
        let sent = chat.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].1.text.contains("GitLab is unavailable"));
        assert_eq!(
            store
                .get_run(&RequestId::new("req-1"))
                .await
                .unwrap()
                .unwrap()
                .status,
            RunStatus::Refused
        );
    }

    #[tokio::test]
    async fn crash_after_creation_resumes_without_a_second_pipeline() {
        let (d, gl, store, _chat) = setup();
        link(&store).await;
        gl.fail_next(
            Some("pipeline_jobs"),
            GitLabError::Retryable("timeout".into()),
            1,
        );
        let body = serde_json::to_string(&request()).unwrap();
        assert!(d.handle_message(&body, 1).await.is_err());
        d.handle_message(&body, 2).await.unwrap();
        assert_eq!(gl.created_pipelines().len(), 1);
        assert_eq!(
            store
                .get_run(&RequestId::new("req-1"))
                .await
                .unwrap()
                .unwrap()
                .status,
            RunStatus::Running
        );
    }

    #[test]
    fn channel_projects_parse() {
        let m = parse_channel_projects("C123=group/proj, C456=42").unwrap();
        assert_eq!(m["C123"], ProjectRef::new("group/proj"));
        assert_eq!(m["C456"], ProjectRef::new("42"));
        assert!(parse_channel_projects("C1").is_err());
        assert!(parse_channel_projects("").unwrap().is_empty());
    }

    #[tokio::test]
    async fn config_names_missing_variables() {
        let env = Env::from_pairs([("GITLAB_TOKEN", "t"), ("RUNS_TABLE", "r")]);
        let e = DispatcherConfig::from_env(&env, &crate::config::NoSecrets)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("GITLAB_PROJECT"));
        let env = Env::from_pairs([
            ("GITLAB_TOKEN", "t"),
            ("RUNS_TABLE", "r"),
            ("GITLAB_PROJECT", "g/p"),
            ("CHANNEL_PROJECTS", "C9=other/proj"),
        ]);
        let c = DispatcherConfig::from_env(&env, &crate::config::NoSecrets)
            .await
            .unwrap();
        assert_eq!(c.gitlab_url, "https://gitlab.com");
        assert_eq!(c.project_for(&ChannelId::new("C9")).0, "other/proj");
        assert_eq!(c.project_for(&ChannelId::new("C1")).0, "g/p");
    }

    #[tokio::test]
    async fn users_cli_links_checks_and_lists() {
        let store = MemoryStore::new();
        let gl = FakeGitLab::new();
        gl.add_user(1, "Alice");
        let mut out = Vec::new();
        use crate::cli::UsersCommand;
        let link = UsersCommand::Link {
            chat_user: "T1/U1".into(),
            gitlab_username: "@alice".into(),
        };
        assert_eq!(
            users_command(&link, &store, Some(&gl), 5, &mut out)
                .await
                .unwrap(),
            0
        );
        let bad = UsersCommand::Link {
            chat_user: "T1/U2".into(),
            gitlab_username: "nobody".into(),
        };
        assert_eq!(
            users_command(&bad, &store, Some(&gl), 5, &mut out)
                .await
                .unwrap(),
            1
        );
        assert!(users_command(
            &UsersCommand::Unlink {
                chat_user: "T1".into()
            },
            &store,
            None,
            5,
            &mut out
        )
        .await
        .is_err());
        users_command(&UsersCommand::List, &store, None, 5, &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("T1/U1\tAlice"), "{text}");
        assert!(!text.contains("T1/U2\t"), "{text}");
    }
}
