//! The real GitLab adapter: REST API v4 over HTTPS (reqwest + rustls): `PRIVATE-TOKEN` auth
//! for the deployment's own (read-only) token, `Authorization: Bearer` for a person's OAuth
//! token (`GitLabAs::as_person`: the same client, caches kept apart per token).
//!
//! Failure policy, per call:
//! - 429: wait as `Retry-After` (seconds) or `RateLimit-Reset` (unix time) says, if that fits
//!   in the call's wait budget (default 10 s in total); otherwise `Retryable`, so the SQS
//!   message comes back later instead of holding the Lambda.
//! - 5xx, timeouts, connection errors: a few backoffs within the same budget, then `Retryable`.
//!   Requests that create something (`POST …/pipeline`, `POST …/hooks`) are not repeated after
//!   an ambiguous failure (5xx or timeout once the request was sent): a second pipeline is
//!   worse than a later retry from the queue.
//! - 404 → `NotFound`, 401 → `Unauthorized`, 403 → `Forbidden`, 400/409/422 and other 4xx → `Rejected`, each
//!   with GitLab's own message (`{"message": …}` string or field map, or `{"error": …}`).
//! - Lists follow pagination (`X-Next-Page`, else the `Link: rel="next"` URL), 100 per page.

use crate::kept::Kept;
use chatops_core::gitlab::{
    AccessLevel, CiConfig, CiJob, GitLab, GitLabError, Hook, Job, MergedCi, Pipeline, Project,
    ProjectSettings, TraceStream, User, VariablesRole,
};
use chatops_core::ids::{GitLabUserId, JobId, PipelineId, ProjectId, ProjectRef};
use chatops_core::secret::Secret;
use futures_util::StreamExt;
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default GitLab.
pub use chatops_core::gitlab::DEFAULT_GITLAB_URL;

/// How hard one call tries before giving the failure back as `Retryable`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Total time one call may spend waiting between attempts.
    pub max_wait: Duration,
    /// First backoff after a 5xx or timeout; doubles each time.
    pub backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            max_wait: Duration::from_secs(10),
            backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(10),
        }
    }
}

/// How a request authenticates.
#[derive(Clone)]
enum Auth {
    /// A personal, project or group access token (`PRIVATE-TOKEN`).
    PrivateToken(Secret),
    /// A person's OAuth access token (`Authorization: Bearer`).
    Bearer(Secret),
}

/// `(token, project)` → the project.
type ProjectCache = Arc<Kept<(u64, String), Project>>;
/// `(token, project, ref)` → the branch's jobs, and whether its configuration may hold
/// trigger jobs.
type CiCache = Arc<Kept<(u64, u64, String), (CiConfig, bool)>>;
type MergedCache = Arc<Kept<(u64, u64, String), MergedCi>>;
/// `(token, project, path, ref)` → the file's text (`None`: no such file).
type FileCache = Arc<Kept<(u64, u64, String, String), Option<String>>>;

/// The most answers each of the client's caches keeps (per container, all tokens).
const KEPT_AT_MOST: usize = 1024;

fn kept<K: Eq + std::hash::Hash, V: Clone>() -> Arc<Kept<K, V>> {
    Arc::new(Kept::new(PROJECT_CACHE_TTL, KEPT_AT_MOST))
}

/// The largest repository file read (the policy file is a few hundred bytes).
const MAX_REPOSITORY_FILE: usize = 256 * 1024;

/// GitLab REST API v4 client.
pub struct GitLabClient {
    http: reqwest::Client,
    api: String,
    auth: Auth,
    /// Keys this token's cache entries: what one person may see is never answered to another.
    token_key: u64,
    hasher: std::hash::RandomState,
    policy: RetryPolicy,
    /// Projects looked up recently (per warm container): a project's id, path, URL and
    /// default branch change rarely, and every run needs them.
    projects: ProjectCache,
    /// The jobs of a project's default branch, likewise (`ci/lint` is the slowest call).
    ci: CiCache,
    /// The merged CI configuration likewise (`help`: a burst of it asks GitLab once), when
    /// `cache_merged_ci` asked for it (the functions do; `chatops gitlab check` reads it
    /// fresh, as an administrator checks an edit).
    merged: MergedCache,
    cache_merged: bool,
    /// Repository files (the policy file) likewise: every run reads it, and an edit to it is
    /// seen within [`PROJECT_CACHE_TTL`].
    files: FileCache,
}

impl chatops_core::gitlab::GitLabAs for GitLabClient {
    fn as_person(&self, access_token: &Secret) -> std::sync::Arc<dyn GitLab> {
        std::sync::Arc::new(GitLabClient {
            http: self.http.clone(),
            api: self.api.clone(),
            token_key: std::hash::BuildHasher::hash_one(&self.hasher, access_token.expose()),
            auth: Auth::Bearer(access_token.clone()),
            hasher: self.hasher.clone(),
            policy: self.policy.clone(),
            projects: self.projects.clone(),
            ci: self.ci.clone(),
            merged: self.merged.clone(),
            cache_merged: self.cache_merged,
            files: self.files.clone(),
        })
    }
}

/// How long a looked-up project, or a branch's CI jobs, are reused in one container. A job
/// newly marked `except: [chat]` is seen within this long.
pub const PROJECT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Whether repeating a request after an ambiguous failure is safe.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    OnlyIfNotSent,
}

impl GitLabClient {
    /// `base_url` is the instance (`https://gitlab.com`), without `/api/v4`.
    pub fn new(base_url: &str, token: Secret) -> Result<Self, GitLabError> {
        Self::with_policy(base_url, token, RetryPolicy::default())
    }

    pub fn with_policy(
        base_url: &str,
        token: Secret,
        policy: RetryPolicy,
    ) -> Result<Self, GitLabError> {
        let http = crate::http::shared_client();
        let base = base_url.trim_end_matches('/');
        let api = if base.ends_with("/api/v4") {
            base.to_owned()
        } else {
            format!("{base}/api/v4")
        };
        let hasher = std::hash::RandomState::new();
        Ok(Self {
            http,
            api,
            token_key: std::hash::BuildHasher::hash_one(&hasher, token.expose()),
            auth: Auth::PrivateToken(token),
            hasher,
            policy,
            projects: kept(),
            ci: kept(),
            merged: kept(),
            cache_merged: false,
            files: kept(),
        })
    }

    /// Reuse the merged CI configuration for [`PROJECT_CACHE_TTL`] per token and ref, as the
    /// project and the CI jobs are (the functions' clients).
    pub fn cache_merged_ci(mut self) -> Self {
        self.cache_merged = true;
        self
    }

    /// The API root, e.g. `https://gitlab.com/api/v4`.
    pub fn api_url(&self) -> &str {
        &self.api
    }

    /// Send one request with the retry policy; returns a 2xx response.
    async fn send(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        repeat: Repeat,
    ) -> Result<Response, GitLabError> {
        let started = Instant::now();
        let mut backoff = self.policy.backoff;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let req = self
                .http
                .request(method.clone(), url)
                .timeout(self.policy.timeout);
            let mut req = match &self.auth {
                Auth::PrivateToken(t) => req.header("PRIVATE-TOKEN", t.expose()),
                Auth::Bearer(t) => req.bearer_auth(t.expose()),
            }
            .query(query);
            if let Some(b) = body {
                req = req.json(b);
            }
            let last = attempt >= self.policy.max_attempts;
            let waited = started.elapsed();
            let budget = self.policy.max_wait.saturating_sub(waited);
            let (wait, reason) = match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let wait = rate_limit_wait(&resp).unwrap_or(backoff);
                    let msg = error_message(resp).await;
                    if wait > budget || last {
                        return Err(GitLabError::Retryable(format!(
                            "rate limited by GitLab (retry after {} s): {msg}",
                            wait.as_secs().max(1)
                        )));
                    }
                    (wait, "429")
                }
                Ok(resp) if resp.status().is_server_error() => {
                    let status = resp.status();
                    let msg = error_message(resp).await;
                    if repeat == Repeat::OnlyIfNotSent || last || backoff > budget {
                        return Err(GitLabError::Retryable(format!("{status}: {msg}")));
                    }
                    (backoff, "5xx")
                }
                Ok(resp) => return Err(map_client_error(resp).await),
                Err(e) => {
                    let not_sent = e.is_connect();
                    let text = describe(&e);
                    if (repeat == Repeat::OnlyIfNotSent && !not_sent) || last || backoff > budget {
                        return Err(GitLabError::Retryable(text));
                    }
                    (backoff, "transport")
                }
            };
            tracing::info!(%url, attempt, wait_ms = wait.as_millis() as u64, reason, "GitLab call will be retried");
            tokio::time::sleep(wait).await;
            if reason != "429" {
                backoff *= 2;
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, GitLabError> {
        let url = format!("{}{}", self.api, path);
        let resp = self
            .send(Method::GET, &url, query, None, Repeat::Safe)
            .await?;
        read_json(resp).await
    }

    /// Every page of a list.
    async fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>, GitLabError> {
        const MAX_PAGES: usize = 100;
        let mut out = Vec::new();
        let mut q: Vec<(&str, String)> = query.to_vec();
        q.push(("per_page", "100".into()));
        let mut url = format!("{}{}", self.api, path);
        let mut pages = 0;
        loop {
            pages += 1;
            let resp = self.send(Method::GET, &url, &q, None, Repeat::Safe).await?;
            let next_page = header(&resp, "x-next-page").filter(|s| !s.is_empty());
            let next_link = header(&resp, "link").and_then(|l| link_next(&l));
            let mut items: Vec<T> = read_json(resp).await?;
            out.append(&mut items);
            if pages >= MAX_PAGES {
                tracing::warn!(%path, "stopped following pagination after {MAX_PAGES} pages");
                return Ok(out);
            }
            match (next_page, next_link) {
                (Some(p), _) => {
                    q.retain(|(k, _)| *k != "page");
                    q.push(("page", p));
                }
                (None, Some(link)) => {
                    // The link carries every query parameter itself.
                    url = link;
                    q.clear();
                }
                (None, None) => return Ok(out),
            }
        }
    }

    fn project_path(project: ProjectId) -> String {
        format!("/projects/{}", project.0)
    }
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

/// `rel="next"` target of a `Link` header.
fn link_next(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        (is_next && target.starts_with('<') && target.ends_with('>'))
            .then(|| target[1..target.len() - 1].to_owned())
    })
}

/// How long a 429 asks us to wait: `Retry-After` seconds, else `RateLimit-Reset` unix time.
fn rate_limit_wait(resp: &Response) -> Option<Duration> {
    if let Some(secs) = header(resp, "retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    let reset = header(resp, "ratelimit-reset").and_then(|v| v.parse::<u64>().ok())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "GitLab did not answer in time".into()
    } else if e.is_connect() {
        "could not connect to GitLab".into()
    } else {
        format!("GitLab request failed: {e}")
    }
}

async fn read_json<T: DeserializeOwned>(resp: Response) -> Result<T, GitLabError> {
    let url = resp.url().path().to_owned();
    let bytes = crate::http::read_capped(resp, crate::http::MAX_GITLAB_JSON)
        .await
        .map_err(|e| match e {
            crate::http::ReadError::TooLarge(_) => {
                GitLabError::Protocol(format!("answer from {url} too large: {e}"))
            }
            crate::http::ReadError::Body(e) => GitLabError::Retryable(describe(&e)),
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| GitLabError::Protocol(format!("unreadable answer from {url}: {e}")))
}

/// GitLab's message from an error body: `{"message": "…"}`, `{"message": {"field": ["…"]}}`,
/// `{"error": "…"}`, or plain text.
pub fn gitlab_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let s = String::from_utf8_lossy(body).trim().to_owned();
            return (!s.is_empty()).then(|| s.chars().take(300).collect());
        }
    };
    fn flatten(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => a.iter().map(flatten).collect::<Vec<_>>().join(", "),
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    if k == "base" {
                        flatten(v)
                    } else {
                        format!("{k} {}", flatten(v))
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    }
    ["message", "error_description", "error"]
        .iter()
        .find_map(|k| v.get(*k))
        .map(flatten)
        .filter(|s| !s.is_empty())
}

async fn error_message(resp: Response) -> String {
    let status = resp.status();
    // An error body is only ever shortened into a message: 64 KiB is plenty.
    let body = crate::http::read_capped(resp, 64 * 1024)
        .await
        .unwrap_or_default();
    gitlab_message(&body).unwrap_or_else(|| status.to_string())
}

async fn map_client_error(resp: Response) -> GitLabError {
    let status = resp.status();
    let msg = error_message(resp).await;
    match status {
        StatusCode::NOT_FOUND => GitLabError::NotFound(msg),
        StatusCode::UNAUTHORIZED => GitLabError::Unauthorized(msg),
        StatusCode::FORBIDDEN => GitLabError::Forbidden(msg),
        StatusCode::REQUEST_TIMEOUT => GitLabError::Retryable(msg),
        _ => GitLabError::Rejected(msg),
    }
}

#[derive(Deserialize)]
struct Member {
    access_level: AccessLevel,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
struct LintResult {
    valid: bool,
    #[serde(default)]
    errors: Vec<String>,
    #[serde(default)]
    jobs: Option<Vec<LintJob>>,
    /// The configuration with its includes expanded (GitLab answers it with every lint).
    #[serde(default)]
    merged_yaml: Option<String>,
}

/// Whether a merged CI configuration may hold a trigger job. Conservative by design: any
/// mention of `trigger` (a key, a value, a word in a script) counts, and so does an answer
/// without the merged configuration; only a configuration that never says the word is known
/// to have no trigger job (its pipelines' `bridges` need not be asked for).
fn may_trigger(merged_yaml: Option<&str>) -> bool {
    merged_yaml.is_none_or(|y| y.to_ascii_lowercase().contains("trigger"))
}

#[derive(Deserialize)]
struct LintJob {
    name: String,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    except: Option<serde_json::Value>,
}

/// Whether an `except` value (as CI lint reports it: `{"refs": [...]}`, or a plain list in
/// older versions) names chat pipelines.
pub fn except_names_chat(except: &serde_json::Value) -> bool {
    let refs = match except {
        serde_json::Value::Object(m) => m.get("refs"),
        other => Some(other),
    };
    match refs {
        Some(serde_json::Value::Array(a)) => a.iter().any(|r| r.as_str() == Some("chat")),
        Some(serde_json::Value::String(s)) => s == "chat",
        _ => false,
    }
}

impl From<LintJob> for CiJob {
    fn from(j: LintJob) -> Self {
        CiJob {
            excluded_from_chat: j.except.as_ref().is_some_and(except_names_chat),
            name: j.name,
            stage: j.stage.unwrap_or_default(),
            when: j.when,
        }
    }
}

/// A project as `GET`/`PUT /projects/:id` answer it, with the settings `check` reads.
pub fn project_settings_from_json(v: serde_json::Value) -> Result<ProjectSettings, GitLabError> {
    let raw_role = v
        .get("ci_pipeline_variables_minimum_override_role")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let restrict = v
        .get("restrict_user_defined_variables")
        .and_then(serde_json::Value::as_bool);
    let level = |k: &str| {
        v.get("permissions")
            .and_then(|p| p.get(k))
            .and_then(|a| a.get("access_level"))
            .and_then(serde_json::Value::as_u64)
            .map(|l| AccessLevel(l as u32))
    };
    let token_access = level("project_access").max(level("group_access"));
    let project: Project = serde_json::from_value(v)
        .map_err(|e| GitLabError::Protocol(format!("unreadable project: {e}")))?;
    Ok(ProjectSettings {
        project,
        variables_role: raw_role.as_deref().and_then(VariablesRole::parse),
        variables_role_raw: raw_role,
        restrict_user_defined_variables: restrict,
        token_access,
    })
}

#[derive(Deserialize)]
struct MergedLint {
    valid: bool,
    #[serde(default)]
    errors: Vec<String>,
    #[serde(default)]
    merged_yaml: Option<String>,
}

#[async_trait::async_trait]
impl GitLab for GitLabClient {
    async fn project(&self, project: &ProjectRef) -> Result<Project, GitLabError> {
        let key = (self.token_key, project.url_segment());
        if let Some(p) = self.projects.get(&key) {
            return Ok(p);
        }
        let p: Project = self.get_json(&format!("/projects/{}", key.1), &[]).await?;
        self.projects.put(key, p.clone());
        Ok(p)
    }

    async fn current_user(&self) -> Result<User, GitLabError> {
        self.get_json("/user", &[]).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>, GitLabError> {
        let users: Vec<User> = self
            .get_json("/users", &[("username", username.to_owned())])
            .await?;
        Ok(users
            .into_iter()
            .find(|u| u.username.eq_ignore_ascii_case(username)))
    }

    async fn member_access(
        &self,
        project: ProjectId,
        user: GitLabUserId,
    ) -> Result<Option<AccessLevel>, GitLabError> {
        let path = format!("{}/members/all/{}", Self::project_path(project), user.0);
        match self.get_json::<Member>(&path, &[]).await {
            // An invited member who has not accepted yet, or a blocked, banned or deactivated
            // user, has no access: only an active member counts.
            Ok(m) if m.state.as_deref().is_some_and(|s| s != "active") => Ok(None),
            Ok(m) => Ok(Some(m.access_level)),
            Err(GitLabError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn ci_jobs(&self, project: ProjectId, git_ref: &str) -> Result<CiConfig, GitLabError> {
        let key = (self.token_key, project.0, git_ref.to_owned());
        if let Some((ci, _)) = self.ci.get(&key) {
            return Ok(ci);
        }
        let (ci, may_trigger) = self.ci_jobs_uncached(project, git_ref).await?;
        self.ci.put(key, (ci.clone(), may_trigger));
        Ok(ci)
    }

    async fn ci_may_trigger(&self, project: ProjectId, git_ref: &str) -> bool {
        let key = (self.token_key, project.0, git_ref.to_owned());
        self.ci.get(&key).is_none_or(|(_, may_trigger)| may_trigger)
    }
    async fn create_pipeline(
        &self,
        project: ProjectId,
        git_ref: &str,
        variables: &[(String, String)],
    ) -> Result<Pipeline, GitLabError> {
        let url = format!("{}{}/pipeline", self.api, Self::project_path(project));
        let vars: Vec<serde_json::Value> = variables
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v, "variable_type": "env_var"}))
            .collect();
        let body = serde_json::json!({"ref": git_ref, "variables": vars});
        let resp = self
            .send(Method::POST, &url, &[], Some(&body), Repeat::OnlyIfNotSent)
            .await?;
        read_json(resp).await
    }

    async fn find_pipeline(
        &self,
        project: ProjectId,
        git_ref: &str,
        since: u64,
        key: &str,
        value: &str,
    ) -> Result<Option<Pipeline>, GitLabError> {
        #[derive(Deserialize)]
        struct Variable {
            key: String,
            value: String,
        }
        let base = Self::project_path(project);
        let candidates: Vec<Pipeline> = self
            .get_json(
                &format!("{base}/pipelines"),
                &[
                    ("source", "api".into()),
                    ("ref", git_ref.into()),
                    ("updated_after", chatops_core::clock::iso8601(since)),
                    ("order_by", "id".into()),
                    ("sort", "desc".into()),
                    ("per_page", "20".into()),
                ],
            )
            .await?;
        for p in candidates {
            let vars: Vec<Variable> = self
                .get_json(&format!("{base}/pipelines/{}/variables", p.id.0), &[])
                .await?;
            if vars.iter().any(|v| v.key == key && v.value == value) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    async fn pipeline(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<Pipeline, GitLabError> {
        self.get_json(
            &format!("{}/pipelines/{}", Self::project_path(project), pipeline.0),
            &[],
        )
        .await
    }

    async fn pipeline_jobs(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<Vec<Job>, GitLabError> {
        let base = format!("{}/pipelines/{}", Self::project_path(project), pipeline.0);
        // Trigger jobs (bridges) are listed apart; they join a pipeline all the same. Both
        // lists are asked for at once: one round trip to GitLab instead of two, per run.
        let (jobs_url, bridges_url) = (format!("{base}/jobs"), format!("{base}/bridges"));
        let (jobs, bridges) = tokio::join!(
            self.get_all::<Job>(&jobs_url, &[]),
            self.get_all::<Job>(&bridges_url, &[])
        );
        let mut jobs = jobs?;
        match bridges {
            Ok(b) => jobs.extend(b),
            Err(GitLabError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(jobs)
    }

    async fn pipeline_jobs_without_bridges(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<Vec<Job>, GitLabError> {
        let url = format!(
            "{}/pipelines/{}/jobs",
            Self::project_path(project),
            pipeline.0
        );
        self.get_all::<Job>(&url, &[]).await
    }

    async fn cancel_pipeline(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<(), GitLabError> {
        let url = format!(
            "{}{}/pipelines/{}/cancel",
            self.api,
            Self::project_path(project),
            pipeline.0
        );
        self.send(Method::POST, &url, &[], None, Repeat::Safe)
            .await
            .map(|_| ())
    }

    async fn job(&self, project: ProjectId, job: JobId) -> Result<Job, GitLabError> {
        self.get_json(
            &format!("{}/jobs/{}", Self::project_path(project), job.0),
            &[],
        )
        .await
    }

    async fn play_job(&self, project: ProjectId, job: JobId) -> Result<Job, GitLabError> {
        let url = format!(
            "{}{}/jobs/{}/play",
            self.api,
            Self::project_path(project),
            job.0
        );
        // Not repeated once sent: a second play of a job the first one started answers
        // `Unplayable Job`, which would hide that the first one worked.
        let resp = self
            .send(Method::POST, &url, &[], None, Repeat::OnlyIfNotSent)
            .await?;
        read_json(resp).await
    }

    async fn job_trace(&self, project: ProjectId, job: JobId) -> Result<TraceStream, GitLabError> {
        let url = format!(
            "{}{}/jobs/{}/trace",
            self.api,
            Self::project_path(project),
            job.0
        );
        let resp = self
            .send(Method::GET, &url, &[], None, Repeat::Safe)
            .await?;
        Ok(Box::pin(resp.bytes_stream().map(|r| {
            r.map_err(|e| GitLabError::Retryable(describe(&e)))
        })))
    }

    async fn hooks(&self, project: ProjectId) -> Result<Vec<Hook>, GitLabError> {
        self.get_all(&format!("{}/hooks", Self::project_path(project)), &[])
            .await
    }

    async fn put_hook(
        &self,
        project: ProjectId,
        existing: Option<u64>,
        url: &str,
        token: &str,
    ) -> Result<Hook, GitLabError> {
        let body = serde_json::json!({
            "url": url,
            "token": token,
            // Pipeline events carry the pipeline's variables (the run's id) and its jobs'
            // states: all completion needs. Job events would be invocations that do nothing.
            "pipeline_events": true,
            "job_events": false,
            "push_events": false,
            "enable_ssl_verification": true,
        });
        let (method, target, repeat) = match existing {
            Some(id) => (
                Method::PUT,
                format!("{}{}/hooks/{id}", self.api, Self::project_path(project)),
                Repeat::Safe,
            ),
            None => (
                Method::POST,
                format!("{}{}/hooks", self.api, Self::project_path(project)),
                Repeat::OnlyIfNotSent,
            ),
        };
        let resp = self.send(method, &target, &[], Some(&body), repeat).await?;
        read_json(resp).await
    }

    async fn project_settings(&self, project: &ProjectRef) -> Result<ProjectSettings, GitLabError> {
        let v: serde_json::Value = self
            .get_json(&format!("/projects/{}", project.url_segment()), &[])
            .await?;
        project_settings_from_json(v)
    }

    async fn set_variables_role(
        &self,
        project: ProjectId,
        role: VariablesRole,
    ) -> Result<ProjectSettings, GitLabError> {
        let url = format!("{}{}", self.api, Self::project_path(project));
        let body =
            serde_json::json!({"ci_pipeline_variables_minimum_override_role": role.as_str()});
        let resp = self
            .send(Method::PUT, &url, &[], Some(&body), Repeat::Safe)
            .await?;
        project_settings_from_json(read_json(resp).await?)
    }

    async fn repository_file(
        &self,
        project: ProjectId,
        path: &str,
        git_ref: &str,
    ) -> Result<Option<String>, GitLabError> {
        let key = (
            self.token_key,
            project.0,
            path.to_owned(),
            git_ref.to_owned(),
        );
        if let Some(f) = self.files.get(&key) {
            return Ok(f);
        }
        let file = self
            .repository_file_uncached(project, path, git_ref)
            .await?;
        self.files.put(key, file.clone());
        Ok(file)
    }

    async fn project_access(&self, project: ProjectId) -> Result<Option<AccessLevel>, GitLabError> {
        // Never cached: a role just taken away must stop an approval at once.
        let v: serde_json::Value = self.get_json(&Self::project_path(project), &[]).await?;
        Ok(project_settings_from_json(v)?.token_access)
    }

    async fn merged_ci_yaml(
        &self,
        project: ProjectId,
        git_ref: &str,
    ) -> Result<MergedCi, GitLabError> {
        if !self.cache_merged {
            return self.merged_ci_yaml_uncached(project, git_ref).await;
        }
        let key = (self.token_key, project.0, git_ref.to_owned());
        if let Some(m) = self.merged.get(&key) {
            return Ok(m);
        }
        let m = self.merged_ci_yaml_uncached(project, git_ref).await?;
        self.merged.put(key, m.clone());
        Ok(m)
    }
}

impl GitLabClient {
    async fn repository_file_uncached(
        &self,
        project: ProjectId,
        path: &str,
        git_ref: &str,
    ) -> Result<Option<String>, GitLabError> {
        // The file's path is one URL segment: `.gitlab%2Fchatops.yml`.
        let encoded =
            percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC);
        let url = format!(
            "{}{}/repository/files/{encoded}/raw",
            self.api,
            Self::project_path(project)
        );
        let query = [("ref", git_ref.to_owned())];
        let resp = match self
            .send(Method::GET, &url, &query, None, Repeat::Safe)
            .await
        {
            Ok(r) => r,
            // The project was read just before: a 404 here is the file (or the ref).
            Err(GitLabError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = crate::http::read_capped(resp, MAX_REPOSITORY_FILE)
            .await
            .map_err(|e| match e {
                crate::http::ReadError::TooLarge(_) => {
                    GitLabError::Protocol(format!("{path} is too large: {e}"))
                }
                crate::http::ReadError::Body(e) => GitLabError::Retryable(describe(&e)),
            })?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| GitLabError::Protocol(format!("{path} is not UTF-8 text")))
    }

    async fn merged_ci_yaml_uncached(
        &self,
        project: ProjectId,
        git_ref: &str,
    ) -> Result<MergedCi, GitLabError> {
        let path = format!("{}/ci/lint", Self::project_path(project));
        // Current GitLab always answers with `merged_yaml` here; `include_merged_yaml` is the
        // flag older lint endpoints wanted, and is ignored where it is not needed.
        let r: MergedLint = self
            .get_json(
                &path,
                &[
                    ("content_ref", git_ref.to_owned()),
                    ("include_merged_yaml", "true".into()),
                ],
            )
            .await?;
        Ok(MergedCi {
            valid: r.valid,
            errors: r.errors,
            merged_yaml: r.merged_yaml.filter(|y| !y.trim().is_empty()),
        })
    }
}

impl GitLabClient {
    /// The branch's jobs, and whether its configuration may hold trigger jobs.
    async fn ci_jobs_uncached(
        &self,
        project: ProjectId,
        git_ref: &str,
    ) -> Result<(CiConfig, bool), GitLabError> {
        let path = format!("{}/ci/lint", Self::project_path(project));
        let r: LintResult = self
            .get_json(
                &path,
                &[
                    ("content_ref", git_ref.to_owned()),
                    ("include_jobs", "true".into()),
                ],
            )
            .await?;
        let triggers = may_trigger(r.merged_yaml.as_deref());
        if !r.valid {
            return Ok((CiConfig::Invalid(r.errors), triggers));
        }
        let jobs = CiConfig::Valid(
            r.jobs
                .unwrap_or_default()
                .into_iter()
                .map(CiJob::from)
                .collect(),
        );
        Ok((jobs, triggers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_may_trigger_unless_it_never_says_so() {
        let cases: &[(Option<&str>, bool)] = &[
            (None, true),
            (Some("deploy:\n  script:\n  - echo hi\n"), false),
            (Some("downstream:\n  trigger: group/other\n"), true),
            (Some("child:\n  trigger:\n    include: child.yml\n"), true),
            (Some("\"weird\":\n  \"TRIGGER\": x\n"), true),
            (Some("job:\n  script:\n  - ./trigger-build.sh\n"), true),
        ];
        for (yaml, want) in cases {
            assert_eq!(may_trigger(*yaml), *want, "{yaml:?}");
        }
    }

    #[test]
    fn messages_are_read_in_every_shape() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"message":"404 Project Not Found"}"#,
                "404 Project Not Found",
            ),
            (
                br#"{"message":{"base":["Pipeline will not run for the selected trigger."]}}"#,
                "Pipeline will not run for the selected trigger.",
            ),
            (br#"{"message":{"url":["is blocked"]}}"#, "url is blocked"),
            (
                br#"{"error":"invalid_token","error_description":"Token was revoked."}"#,
                "Token was revoked.",
            ),
            (br#"{"error":"ref is missing"}"#, "ref is missing"),
            (b"Retry later\n", "Retry later"),
        ];
        for (body, want) in cases {
            assert_eq!(gitlab_message(body).as_deref(), Some(*want));
        }
        assert_eq!(gitlab_message(b""), None);
    }

    #[test]
    fn link_header_next_is_found() {
        let l = r#"<https://g/api/v4/x?page=1&per_page=2>; rel="prev", <https://g/api/v4/x?page=3&per_page=2>; rel="next", <https://g/api/v4/x?page=1>; rel="first""#;
        assert_eq!(
            link_next(l).as_deref(),
            Some("https://g/api/v4/x?page=3&per_page=2")
        );
        assert_eq!(link_next(r#"<https://g/x?page=1>; rel="first""#), None);
    }

    #[test]
    fn except_chat_in_both_forms() {
        use serde_json::json;
        assert!(except_names_chat(&json!({"refs": ["chat"]})));
        assert!(except_names_chat(&json!(["tags", "chat"])));
        assert!(!except_names_chat(
            &json!({"refs": ["master@gitlab-org/gitlab"]})
        ));
        assert!(!except_names_chat(&json!(null)));
    }

    #[test]
    fn base_url_gets_api_root() {
        let c = GitLabClient::new("https://gitlab.example.com/", Secret::new("t")).unwrap();
        assert_eq!(c.api_url(), "https://gitlab.example.com/api/v4");
    }
}
