//! An in-memory GitLab for unit tests: projects, users, members, the CI jobs the default
//! branch defines, pipelines and their jobs, job logs, hooks, and injected errors. Every
//! method of the `GitLab` trait is implemented; tests change state through `&self` methods
//! (the fake is shared behind an `Arc`) and read back what was asked of it.
//!
//! Pipeline creation applies the job contract: a created pipeline holds the CI job named by
//! the `CHATOPS_JOB` variable (status `manual` when that job is `when: manual`, else
//! `pending`), plus any job the test marked with `add_joining_job` (a job without rules that
//! joins every pipeline).
//!
//! ```
//! # use chatops_sim::FakeGitLab;
//! # use chatops_core::gitlab::{AccessLevel, CiJob, GitLab, Status};
//! # use chatops_core::ids::ProjectRef;
//! # tokio_test_block(async {
//! let gl = FakeGitLab::new();
//! let p = gl.add_project(42, "group/proj");
//! let u = gl.add_user(7, "alice");
//! gl.set_member(p.id, u.id, AccessLevel::DEVELOPER);
//! gl.set_ci_jobs(p.id, vec![FakeGitLab::ci_job("deploy")]);
//! let vars = vec![("CHATOPS_JOB".to_string(), "deploy".to_string())];
//! let pipe = gl.create_pipeline(p.id, "main", &vars).await.unwrap();
//! let jobs = gl.pipeline_jobs(p.id, pipe.id).await.unwrap();
//! gl.finish_job(jobs[0].id, Status::Success, b"hello\n");
//! # });
//! # fn tokio_test_block<F: std::future::Future>(f: F) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f);
//! # }
//! ```

use bytes::Bytes;
use chatops_core::gitlab::{
    AccessLevel, CiConfig, CiJob, GitLab, GitLabError, Hook, Job, MergedCi, Pipeline, Project,
    ProjectSettings, Status, TraceStream, User, VariablesRole,
};
use chatops_core::ids::{GitLabUserId, JobId, PipelineId, ProjectId, ProjectRef};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// The base URL the fake's `web_url`s use.
pub const FAKE_GITLAB_URL: &str = "https://gitlab.example.com";

/// A pipeline the fake created, with the variables it was created with.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedPipeline {
    pub project: ProjectId,
    pub pipeline: Pipeline,
    pub git_ref: String,
    pub variables: Vec<(String, String)>,
    pub cancelled: bool,
}

impl CreatedPipeline {
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Injected {
    /// Trait method name (`"create_pipeline"`), or None for any call.
    method: Option<String>,
    error: GitLabError,
    remaining: usize,
}

#[derive(Default)]
struct State {
    projects: Vec<Project>,
    users: Vec<User>,
    members: HashMap<(ProjectId, GitLabUserId), AccessLevel>,
    ci: HashMap<ProjectId, CiConfig>,
    joining: HashMap<ProjectId, HashSet<String>>,
    pipelines: Vec<CreatedPipeline>,
    /// job id -> (project, pipeline, job)
    jobs: Vec<(ProjectId, PipelineId, Job)>,
    traces: HashMap<JobId, Vec<u8>>,
    hooks: HashMap<ProjectId, Vec<(Hook, String)>>,
    /// "Minimum role to use pipeline variables" per project (Maintainer when unset).
    variables_roles: HashMap<ProjectId, VariablesRole>,
    /// `ci/lint`'s `merged_yaml` per project.
    merged_yaml: HashMap<ProjectId, String>,
    /// Repository files on the default branch: `(project, path)` → text.
    files: HashMap<(ProjectId, String), String>,
    injected: Vec<Injected>,
    calls: Vec<String>,
    next_pipeline: u64,
    next_job: u64,
    next_hook: u64,
    trace_chunk: usize,
}

/// In-memory GitLab.
pub struct FakeGitLab {
    state: Mutex<State>,
}

impl Default for FakeGitLab {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeGitLab {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                next_pipeline: 1000,
                next_job: 5000,
                next_hook: 1,
                trace_chunk: 4096,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the assertion that follows.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A CI job with no `when` and not excluded from chat.
    pub fn ci_job(name: &str) -> CiJob {
        CiJob {
            name: name.to_owned(),
            stage: "test".to_owned(),
            when: None,
            excluded_from_chat: false,
        }
    }

    /// Add a project (default branch `main`, web URL under `FAKE_GITLAB_URL`).
    pub fn add_project(&self, id: u64, path: &str) -> Project {
        let p = Project {
            id: ProjectId(id),
            path_with_namespace: path.to_owned(),
            web_url: format!("{FAKE_GITLAB_URL}/{path}"),
            default_branch: Some("main".to_owned()),
        };
        let mut g = self.lock();
        g.projects.retain(|x| x.id != p.id);
        g.projects.push(p.clone());
        p
    }

    /// Add or replace a project as given.
    pub fn put_project(&self, p: Project) {
        let mut g = self.lock();
        g.projects.retain(|x| x.id != p.id);
        g.projects.push(p);
    }

    pub fn add_user(&self, id: u64, username: &str) -> User {
        let u = User {
            id: GitLabUserId(id),
            username: username.to_owned(),
            name: username.to_owned(),
            state: "active".to_owned(),
        };
        let mut g = self.lock();
        g.users.retain(|x| x.id != u.id);
        g.users.push(u.clone());
        u
    }

    pub fn set_member(&self, project: ProjectId, user: GitLabUserId, level: AccessLevel) {
        self.lock().members.insert((project, user), level);
    }

    pub fn remove_member(&self, project: ProjectId, user: GitLabUserId) {
        self.lock().members.remove(&(project, user));
    }

    /// The jobs the project's CI config defines (a valid config).
    pub fn set_ci_jobs(&self, project: ProjectId, jobs: Vec<CiJob>) {
        self.lock().ci.insert(project, CiConfig::Valid(jobs));
    }

    /// Make the project's CI config invalid with these GitLab error messages.
    pub fn set_ci_invalid(&self, project: ProjectId, errors: Vec<String>) {
        self.lock().ci.insert(project, CiConfig::Invalid(errors));
    }

    /// What `merged_ci_yaml` answers for the project.
    pub fn set_merged_yaml(&self, project: ProjectId, yaml: &str) {
        self.lock().merged_yaml.insert(project, yaml.to_owned());
    }

    /// Put a file on the project's default branch (`repository_file` reads it).
    pub fn set_file(&self, project: ProjectId, path: &str, text: &str) {
        self.lock()
            .files
            .insert((project, path.to_owned()), text.to_owned());
    }

    /// Mark a CI job as joining every pipeline (a job without rules or only/except).
    pub fn add_joining_job(&self, project: ProjectId, name: &str) {
        self.lock()
            .joining
            .entry(project)
            .or_default()
            .insert(name.to_owned());
    }

    /// The next `times` calls of `method` (a `GitLab` trait method name, or `None` for any)
    /// fail with `error`.
    pub fn fail_next(&self, method: Option<&str>, error: GitLabError, times: usize) {
        self.lock().injected.push(Injected {
            method: method.map(str::to_owned),
            error,
            remaining: times,
        });
    }

    /// Remove every injected error.
    pub fn clear_failures(&self) {
        self.lock().injected.clear();
    }

    /// Every trait call so far, as method names in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// How many times `method` was called.
    pub fn call_count(&self, method: &str) -> usize {
        self.lock().calls.iter().filter(|c| *c == method).count()
    }

    /// Every pipeline created so far.
    pub fn created_pipelines(&self) -> Vec<CreatedPipeline> {
        self.lock().pipelines.clone()
    }

    /// The jobs of a pipeline as the fake holds them.
    pub fn jobs_of(&self, pipeline: PipelineId) -> Vec<Job> {
        self.lock()
            .jobs
            .iter()
            .filter(|(_, p, _)| *p == pipeline)
            .map(|(_, _, j)| j.clone())
            .collect()
    }

    /// Set a job's status (and its pipeline's, which follows its only job's).
    pub fn set_job_status(&self, job: JobId, status: Status) {
        let mut g = self.lock();
        let mut pipeline = None;
        for (_, p, j) in g.jobs.iter_mut() {
            if j.id == job {
                j.status = status;
                if status.is_final() {
                    j.finished_at = Some("2024-01-01T00:00:10.000Z".to_owned());
                    j.duration = Some(10.0);
                }
                if status == Status::Running {
                    j.started_at = Some("2024-01-01T00:00:00.000Z".to_owned());
                }
                if status == Status::Failed {
                    j.failure_reason = Some("script_failure".to_owned());
                }
                pipeline = Some(*p);
            }
        }
        if let Some(p) = pipeline {
            for c in g.pipelines.iter_mut() {
                if c.pipeline.id == p && !c.cancelled {
                    c.pipeline.status = status;
                }
            }
        }
    }

    /// Set a job's log.
    pub fn set_trace(&self, job: JobId, trace: impl Into<Vec<u8>>) {
        self.lock().traces.insert(job, trace.into());
    }

    /// Set a job's log and final status in one go.
    pub fn finish_job(&self, job: JobId, status: Status, trace: impl Into<Vec<u8>>) {
        self.set_trace(job, trace);
        self.set_job_status(job, status);
    }

    /// Size of the chunks `job_trace` streams (default 4096).
    pub fn set_trace_chunk_size(&self, n: usize) {
        self.lock().trace_chunk = n.max(1);
    }

    /// The hooks of a project with their secret tokens.
    pub fn hooks_with_tokens(&self, project: ProjectId) -> Vec<(Hook, String)> {
        self.lock().hooks.get(&project).cloned().unwrap_or_default()
    }

    /// Record the call and return an injected error, if one is due.
    fn enter(&self, method: &str) -> Result<MutexGuard<'_, State>, GitLabError> {
        let mut g = self.lock();
        g.calls.push(method.to_owned());
        let due = g
            .injected
            .iter_mut()
            .find(|i| i.remaining > 0 && i.method.as_deref().is_none_or(|m| m == method));
        if let Some(i) = due {
            i.remaining -= 1;
            let e = i.error.clone();
            g.injected.retain(|i| i.remaining > 0);
            return Err(e);
        }
        Ok(g)
    }
}

fn find_project<'a>(g: &'a State, project: &ProjectRef) -> Option<&'a Project> {
    g.projects
        .iter()
        .find(|p| p.id.0.to_string() == project.0 || p.path_with_namespace == project.0)
}

fn has_project(g: &State, id: ProjectId) -> Result<(), GitLabError> {
    if g.projects.iter().any(|p| p.id == id) {
        Ok(())
    } else {
        Err(GitLabError::NotFound("404 Project Not Found".into()))
    }
}

#[async_trait::async_trait]
impl GitLab for FakeGitLab {
    /// The fake models one token: its user is the first user added (401 when there is none).
    async fn current_user(&self) -> Result<User, GitLabError> {
        let g = self.enter("current_user")?;
        g.users
            .first()
            .cloned()
            .ok_or_else(|| GitLabError::Unauthorized("401 Unauthorized".into()))
    }

    async fn project(&self, project: &ProjectRef) -> Result<Project, GitLabError> {
        let g = self.enter("project")?;
        find_project(&g, project)
            .cloned()
            .ok_or_else(|| GitLabError::NotFound("404 Project Not Found".into()))
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>, GitLabError> {
        let g = self.enter("user_by_username")?;
        Ok(g.users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
            .cloned())
    }

    async fn member_access(
        &self,
        project: ProjectId,
        user: GitLabUserId,
    ) -> Result<Option<AccessLevel>, GitLabError> {
        let g = self.enter("member_access")?;
        has_project(&g, project)?;
        Ok(g.members.get(&(project, user)).copied())
    }

    async fn ci_jobs(&self, project: ProjectId, _git_ref: &str) -> Result<CiConfig, GitLabError> {
        let g = self.enter("ci_jobs")?;
        has_project(&g, project)?;
        Ok(g.ci
            .get(&project)
            .cloned()
            .unwrap_or(CiConfig::Invalid(vec![
                "Please provide content of .gitlab-ci.yml".into(),
            ])))
    }

    async fn create_pipeline(
        &self,
        project: ProjectId,
        git_ref: &str,
        variables: &[(String, String)],
    ) -> Result<Pipeline, GitLabError> {
        let mut g = self.enter("create_pipeline")?;
        has_project(&g, project)?;
        let web = g
            .projects
            .iter()
            .find(|p| p.id == project)
            .map(|p| p.web_url.clone())
            .unwrap_or_default();
        let wanted = variables
            .iter()
            .find(|(k, _)| k == "CHATOPS_JOB")
            .map(|(_, v)| v.clone());
        let ci_jobs = match g.ci.get(&project) {
            Some(CiConfig::Valid(j)) => j.clone(),
            _ => Vec::new(),
        };
        let joining = g.joining.get(&project).cloned().unwrap_or_default();
        let members: Vec<CiJob> = ci_jobs
            .into_iter()
            .filter(|j| Some(&j.name) == wanted.as_ref() || joining.contains(&j.name))
            .collect();
        if members.is_empty() {
            return Err(GitLabError::Rejected(
                "Pipeline will not run for the selected trigger. The rules configuration \
                 prevented any jobs from being added to the pipeline."
                    .into(),
            ));
        }
        g.next_pipeline += 1;
        let id = PipelineId(g.next_pipeline);
        let mut pipeline_status = Status::Pending;
        for cj in members {
            g.next_job += 1;
            let job_id = JobId(g.next_job);
            let status = if cj.when.as_deref() == Some("manual") {
                Status::Manual
            } else {
                Status::Pending
            };
            if status == Status::Manual {
                pipeline_status = Status::Manual;
            }
            g.jobs.push((
                project,
                id,
                Job {
                    id: job_id,
                    name: cj.name.clone(),
                    status,
                    stage: cj.stage.clone(),
                    web_url: format!("{web}/-/jobs/{job_id}"),
                    duration: None,
                    failure_reason: None,
                    started_at: None,
                    finished_at: None,
                    allow_failure: false,
                },
            ));
        }
        let pipeline = Pipeline {
            id,
            status: pipeline_status,
            git_ref: git_ref.to_owned(),
            web_url: format!("{web}/-/pipelines/{id}"),
            user: None,
        };
        g.pipelines.push(CreatedPipeline {
            project,
            pipeline: pipeline.clone(),
            git_ref: git_ref.to_owned(),
            variables: variables.to_vec(),
            cancelled: false,
        });
        Ok(pipeline)
    }

    async fn find_pipeline(
        &self,
        project: ProjectId,
        git_ref: &str,
        _since: u64,
        key: &str,
        value: &str,
    ) -> Result<Option<Pipeline>, GitLabError> {
        let g = self.enter("find_pipeline")?;
        Ok(g.pipelines
            .iter()
            .rev()
            .find(|c| {
                c.project == project
                    && c.git_ref == git_ref
                    && c.variables.iter().any(|(k, v)| k == key && v == value)
            })
            .map(|c| c.pipeline.clone()))
    }

    async fn pipeline(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<Pipeline, GitLabError> {
        let g = self.enter("pipeline")?;
        g.pipelines
            .iter()
            .find(|c| c.project == project && c.pipeline.id == pipeline)
            .map(|c| c.pipeline.clone())
            .ok_or_else(|| GitLabError::NotFound("404 Not found".into()))
    }

    async fn pipeline_jobs(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<Vec<Job>, GitLabError> {
        let g = self.enter("pipeline_jobs")?;
        if !g
            .pipelines
            .iter()
            .any(|c| c.project == project && c.pipeline.id == pipeline)
        {
            return Err(GitLabError::NotFound("404 Not found".into()));
        }
        Ok(g.jobs
            .iter()
            .filter(|(pr, p, _)| *pr == project && *p == pipeline)
            .map(|(_, _, j)| j.clone())
            .collect())
    }

    async fn cancel_pipeline(
        &self,
        project: ProjectId,
        pipeline: PipelineId,
    ) -> Result<(), GitLabError> {
        let mut g = self.enter("cancel_pipeline")?;
        let Some(c) = g
            .pipelines
            .iter_mut()
            .find(|c| c.project == project && c.pipeline.id == pipeline)
        else {
            return Err(GitLabError::NotFound("404 Not found".into()));
        };
        c.cancelled = true;
        c.pipeline.status = Status::Canceled;
        for (_, p, j) in g.jobs.iter_mut() {
            if *p == pipeline && !j.status.is_final() {
                j.status = Status::Canceled;
            }
        }
        Ok(())
    }

    async fn play_job(&self, project: ProjectId, job: JobId) -> Result<Job, GitLabError> {
        let mut g = self.enter("play_job")?;
        let Some((_, _, j)) = g
            .jobs
            .iter_mut()
            .find(|(pr, _, j)| *pr == project && j.id == job)
        else {
            return Err(GitLabError::NotFound("404 Not found".into()));
        };
        if j.status != Status::Manual {
            return Err(GitLabError::Rejected(
                "400 Bad request - Unplayable Job".into(),
            ));
        }
        j.status = Status::Pending;
        Ok(j.clone())
    }

    async fn job(&self, project: ProjectId, job: JobId) -> Result<Job, GitLabError> {
        let g = self.enter("job")?;
        g.jobs
            .iter()
            .find(|(pr, _, j)| *pr == project && j.id == job)
            .map(|(_, _, j)| j.clone())
            .ok_or_else(|| GitLabError::NotFound("404 Not found".into()))
    }

    async fn job_trace(&self, project: ProjectId, job: JobId) -> Result<TraceStream, GitLabError> {
        let g = self.enter("job_trace")?;
        if !g
            .jobs
            .iter()
            .any(|(pr, _, j)| *pr == project && j.id == job)
        {
            return Err(GitLabError::NotFound("404 Not found".into()));
        }
        let trace = g.traces.get(&job).cloned().unwrap_or_default();
        let chunks: VecDeque<Result<Bytes, GitLabError>> = trace
            .chunks(g.trace_chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }

    async fn repository_file(
        &self,
        project: ProjectId,
        path: &str,
        _git_ref: &str,
    ) -> Result<Option<String>, GitLabError> {
        let g = self.enter("repository_file")?;
        has_project(&g, project)?;
        Ok(g.files.get(&(project, path.to_owned())).cloned())
    }

    /// The fake's one token is the first user added (like `current_user`).
    async fn project_access(&self, project: ProjectId) -> Result<Option<AccessLevel>, GitLabError> {
        let g = self.enter("project_access")?;
        has_project(&g, project)?;
        Ok(g.users
            .first()
            .and_then(|u| g.members.get(&(project, u.id)).copied()))
    }

    async fn hooks(&self, project: ProjectId) -> Result<Vec<Hook>, GitLabError> {
        let g = self.enter("hooks")?;
        has_project(&g, project)?;
        Ok(g.hooks
            .get(&project)
            .map(|v| v.iter().map(|(h, _)| h.clone()).collect())
            .unwrap_or_default())
    }

    async fn put_hook(
        &self,
        project: ProjectId,
        existing: Option<u64>,
        url: &str,
        token: &str,
    ) -> Result<Hook, GitLabError> {
        let mut g = self.enter("put_hook")?;
        has_project(&g, project)?;
        let id = match existing {
            Some(id) => id,
            None => {
                g.next_hook += 1;
                g.next_hook
            }
        };
        let hook = Hook {
            id,
            url: url.to_owned(),
            pipeline_events: true,
            job_events: true,
        };
        let list = g.hooks.entry(project).or_default();
        if existing.is_some() {
            let Some(slot) = list.iter_mut().find(|(h, _)| h.id == id) else {
                return Err(GitLabError::NotFound("404 Not found".into()));
            };
            *slot = (hook.clone(), token.to_owned());
        } else {
            list.push((hook.clone(), token.to_owned()));
        }
        Ok(hook)
    }

    async fn project_settings(&self, project: &ProjectRef) -> Result<ProjectSettings, GitLabError> {
        let g = self.enter("project_settings")?;
        let p = find_project(&g, project)
            .cloned()
            .ok_or_else(|| GitLabError::NotFound("404 Project Not Found".into()))?;
        let role = g
            .variables_roles
            .get(&p.id)
            .copied()
            .unwrap_or(VariablesRole::Maintainer);
        Ok(ProjectSettings {
            project: p,
            variables_role: Some(role),
            variables_role_raw: Some(role.as_str().to_owned()),
            restrict_user_defined_variables: Some(true),
            token_access: Some(AccessLevel::MAINTAINER),
        })
    }

    async fn set_variables_role(
        &self,
        project: ProjectId,
        role: VariablesRole,
    ) -> Result<ProjectSettings, GitLabError> {
        let p = {
            let mut g = self.enter("set_variables_role")?;
            has_project(&g, project)?;
            g.variables_roles.insert(project, role);
            g.projects.iter().find(|p| p.id == project).cloned()
        };
        let p = p.ok_or_else(|| GitLabError::NotFound("404 Project Not Found".into()))?;
        Ok(ProjectSettings {
            project: p,
            variables_role: Some(role),
            variables_role_raw: Some(role.as_str().to_owned()),
            restrict_user_defined_variables: Some(true),
            token_access: Some(AccessLevel::MAINTAINER),
        })
    }

    async fn merged_ci_yaml(
        &self,
        project: ProjectId,
        _git_ref: &str,
    ) -> Result<MergedCi, GitLabError> {
        let g = self.enter("merged_ci_yaml")?;
        has_project(&g, project)?;
        Ok(match (g.merged_yaml.get(&project), g.ci.get(&project)) {
            (_, Some(CiConfig::Invalid(errors))) => MergedCi {
                valid: false,
                errors: errors.clone(),
                merged_yaml: None,
            },
            (Some(y), _) => MergedCi {
                valid: true,
                errors: vec![],
                merged_yaml: Some(y.clone()),
            },
            (None, _) => MergedCi {
                valid: false,
                errors: vec!["Please provide content of .gitlab-ci.yml".into()],
                merged_yaml: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn vars(job: &str) -> Vec<(String, String)> {
        vec![("CHATOPS_JOB".into(), job.into())]
    }

    #[tokio::test]
    async fn pipeline_follows_the_contract() {
        let gl = FakeGitLab::new();
        let p = gl.add_project(1, "g/p");
        let mut manual = FakeGitLab::ci_job("deploy");
        manual.when = Some("manual".into());
        gl.set_ci_jobs(p.id, vec![FakeGitLab::ci_job("lint"), manual]);
        let pipe = gl
            .create_pipeline(p.id, "main", &vars("deploy"))
            .await
            .unwrap();
        let jobs = gl.pipeline_jobs(p.id, pipe.id).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].status, Status::Manual);

        gl.add_joining_job(p.id, "lint");
        let pipe = gl
            .create_pipeline(p.id, "main", &vars("deploy"))
            .await
            .unwrap();
        let names: Vec<_> = gl
            .pipeline_jobs(p.id, pipe.id)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.name)
            .collect();
        assert_eq!(names, ["lint", "deploy"]);
        gl.cancel_pipeline(p.id, pipe.id).await.unwrap();
        assert!(gl.created_pipelines()[1].cancelled);
    }

    #[tokio::test]
    async fn injected_errors_fire_the_given_number_of_times() {
        let gl = FakeGitLab::new();
        gl.add_project(1, "g/p");
        gl.fail_next(Some("project"), GitLabError::Retryable("503".into()), 2);
        let r = ProjectRef::new("g/p");
        assert!(gl.project(&r).await.unwrap_err().is_retryable());
        assert!(gl.user_by_username("x").await.is_ok());
        assert!(gl.project(&r).await.is_err());
        assert_eq!(gl.project(&r).await.unwrap().id, ProjectId(1));
        assert_eq!(gl.call_count("project"), 3);
    }

    #[tokio::test]
    async fn job_status_and_trace_are_settable() {
        let gl = FakeGitLab::new();
        let p = gl.add_project(1, "g/p");
        gl.set_ci_jobs(p.id, vec![FakeGitLab::ci_job("hello")]);
        gl.set_trace_chunk_size(3);
        let pipe = gl
            .create_pipeline(p.id, "main", &vars("hello"))
            .await
            .unwrap();
        let job = gl.jobs_of(pipe.id)[0].id;
        gl.finish_job(job, Status::Success, b"hello world".to_vec());
        assert_eq!(gl.job(p.id, job).await.unwrap().status, Status::Success);
        assert_eq!(
            gl.pipeline(p.id, pipe.id).await.unwrap().status,
            Status::Success
        );
        let chunks: Vec<_> = gl.job_trace(p.id, job).await.unwrap().collect().await;
        assert_eq!(chunks.len(), 4);
    }

    #[tokio::test]
    async fn hooks_are_created_and_updated() {
        let gl = FakeGitLab::new();
        let p = gl.add_project(1, "g/p");
        let h = gl
            .put_hook(p.id, None, "https://a/gitlab/webhook", "t1")
            .await
            .unwrap();
        gl.put_hook(p.id, Some(h.id), "https://b/gitlab/webhook", "t2")
            .await
            .unwrap();
        let hooks = gl.hooks_with_tokens(p.id);
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].0.url, "https://b/gitlab/webhook");
        assert_eq!(hooks[0].1, "t2");
    }
}
