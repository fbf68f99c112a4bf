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
    /// 401: the token is wrong, expired or revoked.
    #[error("GitLab refused the token: {0}")]
    Unauthorized(String),
    /// 403: the token is valid but its user (or its scope) may not do this.
    #[error("GitLab denied access: {0}")]
    Forbidden(String),
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

/// Whether GitLab's refusal of a new pipeline is about its variables: the project's
/// "Minimum role to use pipeline variables" is above the caller's role. GitLab answers 400
/// `{"message":{"base":["Insufficient permissions to set pipeline variables"]}}`.
pub fn refuses_pipeline_variables(message: &str) -> bool {
    message
        .to_ascii_lowercase()
        .contains("insufficient permissions to set pipeline variables")
}

/// Whether GitLab's refusal of a new pipeline is about the ref being protected against the
/// caller (`Gitlab::Ci::Pipeline::Chain::Validate::Abilities`: "You do not have sufficient
/// permission to run a pipeline on '<ref>'…"; older versions: "Insufficient permissions for
/// protected ref").
pub fn refuses_protected_ref(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("sufficient permission to run a pipeline on")
        || m.contains("insufficient permissions for protected ref")
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
    /// Whom GitLab created it as (the token's user).
    #[serde(default)]
    pub user: Option<PipelineUser>,
}

/// A pipeline's `user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineUser {
    pub username: String,
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

/// "Minimum role to use pipeline variables" (Settings > CI/CD > Variables), the project
/// attribute `ci_pipeline_variables_minimum_override_role`. Every chat pipeline carries the
/// contract's variables, so the token's user must reach this role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariablesRole {
    /// No pipeline may carry variables (the default of new projects in new GitLab.com
    /// namespaces since GitLab 17.7).
    NoOneAllowed,
    Developer,
    Maintainer,
    Owner,
}

impl VariablesRole {
    pub const ALL: [VariablesRole; 4] = [
        VariablesRole::NoOneAllowed,
        VariablesRole::Developer,
        VariablesRole::Maintainer,
        VariablesRole::Owner,
    ];

    /// The API value (`no_one_allowed`, `developer`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            VariablesRole::NoOneAllowed => "no_one_allowed",
            VariablesRole::Developer => "developer",
            VariablesRole::Maintainer => "maintainer",
            VariablesRole::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<VariablesRole> {
        Self::ALL.into_iter().find(|r| r.as_str() == s.trim())
    }

    /// How GitLab's settings page names it.
    pub fn label(&self) -> &'static str {
        match self {
            VariablesRole::NoOneAllowed => "No one allowed",
            VariablesRole::Developer => "Developer",
            VariablesRole::Maintainer => "Maintainer",
            VariablesRole::Owner => "Owner",
        }
    }

    /// Whether a user with `access` may create pipelines with variables.
    pub fn allows(&self, access: AccessLevel) -> bool {
        match self {
            VariablesRole::NoOneAllowed => false,
            VariablesRole::Developer => access >= AccessLevel::DEVELOPER,
            VariablesRole::Maintainer => access >= AccessLevel::MAINTAINER,
            VariablesRole::Owner => access >= AccessLevel::OWNER,
        }
    }
}

/// The project settings `chatops gitlab check` and `setup` read (`GET /projects/:id`, whose
/// CI/CD settings GitLab shows only to Maintainers and Owners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSettings {
    pub project: Project,
    /// `ci_pipeline_variables_minimum_override_role`: `None` when GitLab did not show it
    /// (the token is below Maintainer) or the instance predates it (GitLab < 17.1).
    pub variables_role: Option<VariablesRole>,
    /// The raw value when GitLab sent one this client does not know.
    pub variables_role_raw: Option<String>,
    /// `restrict_user_defined_variables`: when `false`, GitLab ignores the minimum role and
    /// anyone who may run a pipeline may pass variables.
    pub restrict_user_defined_variables: Option<bool>,
    /// The token user's own access to the project (`permissions`: the higher of project
    /// and group access), when GitLab says.
    pub token_access: Option<AccessLevel>,
}

/// The project's CI configuration with every `include:` resolved (`ci/lint`'s `merged_yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedCi {
    pub valid: bool,
    pub errors: Vec<String>,
    pub merged_yaml: Option<String>,
}

/// A job log as it arrives: raw bytes in chunks.
pub type TraceStream = BoxStream<'static, Result<Bytes, GitLabError>>;

/// GitLab as one person: the same API with their own OAuth access token
/// (`Authorization: Bearer`), so GitLab applies that person's permissions.
pub trait GitLabAs: Send + Sync {
    fn as_person(&self, access_token: &crate::secret::Secret) -> std::sync::Arc<dyn GitLab>;
}

#[async_trait::async_trait]
pub trait GitLab: Send + Sync {
    /// `GET /user`: whom the token belongs to.
    async fn current_user(&self) -> Result<User, GitLabError>;
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
    /// `GET /projects/:id/pipelines/:pipeline_id/jobs` (all pages), with the pipeline's
    /// trigger jobs (`…/bridges`, which GitLab lists apart).
    async fn pipeline_jobs(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<Vec<Job>, GitLabError>;
    /// The pipeline's jobs without asking for its trigger jobs: for a pipeline whose CI
    /// configuration has none (`ci_may_trigger`), one request instead of two.
    async fn pipeline_jobs_without_bridges(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<Vec<Job>, GitLabError> {
        self.pipeline_jobs(project, pipeline).await
    }
    /// Whether `git_ref`'s CI configuration may hold trigger jobs: false only when the answer
    /// `ci_jobs` keeps (at most a minute old) showed none; true when nothing says so. No
    /// request.
    async fn ci_may_trigger(&self, _project: ProjectId, _git_ref: &str) -> bool {
        true
    }
    /// `POST /projects/:id/pipelines/:pipeline_id/cancel`
    async fn cancel_pipeline(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<(), GitLabError>;
    /// `GET /projects/:id/jobs/:job_id`
    async fn job(&self, project: ProjectId, job: JobId) -> Result<Job, GitLabError>;
    /// `POST /projects/:id/jobs/:job_id/play`: runs a `when: manual` job, as the caller
    /// (GitLab: Developer+, push access on a protected ref; 400 `Unplayable Job` otherwise).
    async fn play_job(&self, project: ProjectId, job: JobId) -> Result<Job, GitLabError>;
    /// `GET /projects/:id/jobs/:job_id/trace`, streamed.
    async fn job_trace(&self, project: ProjectId, job: JobId) -> Result<TraceStream, GitLabError>;
    /// `GET /projects/:id/repository/files/:file_path/raw?ref=`: a file's text on `git_ref`
    /// (the project's policy file); `None` when the file does not exist (GitLab's 404 `File
    /// Not Found`: the project itself was read before). Reporter+ (`download_code`).
    async fn repository_file(
        &self,
        project: ProjectId,
        path: &str,
        git_ref: &str,
    ) -> Result<Option<String>, GitLabError>;
    /// The token user's own access to the project: `GET /projects/:id`'s `permissions` (the
    /// higher of project and group access); `None` when GitLab gives none. How an approver's
    /// role is read with their own token: GitLab decides, as for everything they do.
    async fn project_access(&self, project: ProjectId) -> Result<Option<AccessLevel>, GitLabError>;
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

    // The administrator's calls (`chatops gitlab check` / `setup`); no Lambda makes them.
    // They refuse by default so a test double need not model them.

    /// `GET /projects/:id`, with the CI/CD settings a Maintainer sees.
    async fn project_settings(&self, project: &ProjectRef) -> Result<ProjectSettings, GitLabError> {
        let _ = project;
        Err(GitLabError::Protocol(
            "reading project settings is not supported by this GitLab".into(),
        ))
    }
    /// `PUT /projects/:id` with `ci_pipeline_variables_minimum_override_role`.
    async fn set_variables_role(
        &self,
        project: ProjectId,
        role: VariablesRole,
    ) -> Result<ProjectSettings, GitLabError> {
        let _ = (project, role);
        Err(GitLabError::Protocol(
            "changing project settings is not supported by this GitLab".into(),
        ))
    }
    /// `GET /projects/:id/ci/lint?content_ref=<ref>&include_merged_yaml=true`: the CI
    /// configuration on `git_ref` with its includes merged.
    async fn merged_ci_yaml(
        &self,
        project: ProjectId,
        git_ref: &str,
    ) -> Result<MergedCi, GitLabError> {
        let _ = (project, git_ref);
        Err(GitLabError::Protocol(
            "reading the merged CI configuration is not supported by this GitLab".into(),
        ))
    }
}
