//! GitLab: the REST API calls the product makes, behind one trait (the port), and the types
//! they return. The real adapter is `chatops_adapters::gitlab::GitLabClient`; the in-memory
//! fake and the HTTP stand-in live in `chatops-sim`, which no function links.

use crate::ids::{GitLabUserId, JobId, PipelineId, ProjectId, ProjectRef};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// gitlab.com, the default `GITLAB_URL`.
pub const DEFAULT_GITLAB_URL: &str = "https://gitlab.com";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitLabError {
    /// 429, 5xx, timeouts, connection errors: the caller may retry later.
    #[error("GitLab is unavailable ({0})")]
    Retryable(String),
    /// 404 on the resource asked for.
    #[error("not found on GitLab: {0}")]
    NotFound(String),
    /// 401/403: our token is wrong or lacks a scope.
    #[error("GitLab refused our token: {0}")]
    Unauthorized(String),
    /// 400/422 and the like: the request is wrong and retrying will not help. The message
    /// is GitLab's own, for the user.
    #[error("GitLab rejected the request: {0}")]
    Rejected(String),
    /// A response we could not read.
    #[error("unexpected response from GitLab: {0}")]
    Protocol(String),
}

impl GitLabError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, GitLabError::Retryable(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: ProjectId,
    pub path_with_namespace: String,
    pub web_url: String,
    #[serde(default)]
    pub default_branch: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: GitLabUserId,
    pub username: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: String,
}

/// GitLab's access levels (`members` API `access_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccessLevel(pub u32);

impl AccessLevel {
    pub const GUEST: AccessLevel = AccessLevel(10);
    pub const REPORTER: AccessLevel = AccessLevel(20);
    pub const DEVELOPER: AccessLevel = AccessLevel(30);
    pub const MAINTAINER: AccessLevel = AccessLevel(40);
    pub const OWNER: AccessLevel = AccessLevel(50);
}

/// GitLab job and pipeline statuses, as the API and webhooks spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    WaitingForResource,
    Preparing,
    Pending,
    Running,
    Success,
    Failed,
    Canceling,
    Canceled,
    Skipped,
    Manual,
    Scheduled,
    #[serde(other)]
    Unknown,
}

impl Status {
    /// The job will not change any more.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Status::Success | Status::Failed | Status::Canceled | Status::Skipped
        )
    }
}

/// A job as `GET /projects/:id/jobs/:job_id` and `…/pipelines/:id/jobs` return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub status: Status,
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub web_url: String,
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub allow_failure: bool,
}

/// A pipeline as `POST /projects/:id/pipeline` and `GET …/pipelines/:id` return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: PipelineId,
    pub status: Status,
    #[serde(rename = "ref", default)]
    pub git_ref: String,
    #[serde(default)]
    pub web_url: String,
}

/// A job as the CI config defines it (from `ci/lint?include_jobs=true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiJob {
    pub name: String,
    #[serde(default)]
    pub stage: String,
    /// `on_success`, `manual`, … (absent when rules decide).
    #[serde(default)]
    pub when: Option<String>,
    /// `except: [chat]` or an equivalent exclusion of chat pipelines.
    #[serde(default)]
    pub excluded_from_chat: bool,
}

/// What the default branch's CI configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiConfig {
    Valid(Vec<CiJob>),
    /// GitLab's own error messages.
    Invalid(Vec<String>),
}

/// A project webhook (`chatops gitlab setup`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub id: u64,
    pub url: String,
    #[serde(default)]
    pub pipeline_events: bool,
    #[serde(default)]
    pub job_events: bool,
}

/// A job log as it arrives: raw bytes in chunks.
pub type TraceStream = BoxStream<'static, Result<Bytes, GitLabError>>;

#[async_trait::async_trait]
pub trait GitLab: Send + Sync {
    /// `GET /projects/:id`
    async fn project(&self, project: &ProjectRef) -> Result<Project, GitLabError>;
    /// `GET /users?username=…` (None when no such user).
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, GitLabError>;
    /// `GET /projects/:id/members/all/:user_id` (None when not a member).
    async fn member_access(
        &self,
        project: ProjectId,
        user: GitLabUserId,
    ) -> Result<Option<AccessLevel>, GitLabError>;
    /// The jobs the CI config on `git_ref` defines, includes resolved.
    async fn ci_jobs(&self, project: ProjectId, git_ref: &str) -> Result<CiConfig, GitLabError>;
    /// `POST /projects/:id/pipeline` with variables (env_var type).
    async fn create_pipeline(
        &self,
        project: ProjectId,
        git_ref: &str,
        variables: &[(String, String)],
    ) -> Result<Pipeline, GitLabError>;
    /// The newest API pipeline on `git_ref` updated since `since` (Unix seconds) that has the
    /// variable `key` = `value`: `GET /projects/:id/pipelines?source=api&ref=&updated_after=`
    /// (newest first, one page), then `GET …/pipelines/:pipeline_id/variables` of each. This
    /// is how a retried dispatch finds the pipeline an earlier, ambiguous create made.
    async fn find_pipeline(
        &self,
        project: ProjectId,
        git_ref: &str,
        since: u64,
        key: &str,
        value: &str,
    ) -> Result<Option<Pipeline>, GitLabError>;
    /// `GET /projects/:id/pipelines/:pipeline_id`
    async fn pipeline(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<Pipeline, GitLabError>;
    /// `GET /projects/:id/pipelines/:pipeline_id/jobs` (all pages).
    async fn pipeline_jobs(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<Vec<Job>, GitLabError>;
    /// `POST /projects/:id/pipelines/:pipeline_id/cancel`
    async fn cancel_pipeline(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<(), GitLabError>;
    /// `GET /projects/:id/jobs/:job_id`
    async fn job(&self, project: ProjectId, job: JobId) -> Result<Job, GitLabError>;
    /// `GET /projects/:id/jobs/:job_id/trace`, streamed.
    async fn job_trace(&self, project: ProjectId, job: JobId) -> Result<TraceStream, GitLabError>;
    /// `GET /projects/:id/hooks`
    async fn hooks(&self, project: ProjectId) -> Result<Vec<Hook>, GitLabError>;
    /// `POST /projects/:id/hooks`, or `PUT /projects/:id/hooks/:hook_id` when `existing`.
    async fn put_hook(
        &self,
        project: ProjectId,
        existing: Option<u64>,
        url: &str,
        token: &str,
    ) -> Result<Hook, GitLabError>;
}
