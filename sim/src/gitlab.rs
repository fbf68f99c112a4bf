//! A GitLab HTTP stand-in that follows the public REST API v4 for every call `GitLabClient`
//! makes, for integration tests, end-to-end tests and the offline demo.
//!
//! Start: `let gl = GitLabStandin::start().await;` (binds 127.0.0.1:0; stops when dropped).
//! Point a `GitLabClient` at `gl.url()` with token `gl.token()`.
//!
//! Identities: every API request authenticates as one of
//! - the bot: the token the stand-in started with (`STANDIN_TOKEN`, `gl.token()`), user
//!   `chatops-bot` (id 1), its access level on every project set by `set_token_access`
//!   (default 40, Maintainer);
//! - a user (`add_user_with_access`, or `add_user` + `set_member`), by their personal token
//!   (`StandinUser::personal_token`) or an OAuth access token (see below).
//!
//! A personal token is read from `PRIVATE-TOKEN`, `private_token=` or `Authorization: Bearer`;
//! an OAuth access token only from `Authorization: Bearer` or `access_token=` (GitLab looks up
//! `PRIVATE-TOKEN` as a personal token only). Refusals, as GitLab's API guard gives them: no
//! token or an unknown one, 401 `{"message":"401 Unauthorized"}`; an expired or revoked OAuth
//! token, 401 `{"error":"invalid_token","error_description":…}` with `WWW-Authenticate: Bearer
//! realm="Protected by OAuth 2.0", error="invalid_token", error_description="…"`; a `read_api`
//! token on a write, 403 `insufficient_scope`; a blocked user, 403 `{"message":"403 Forbidden -
//! Your account has been blocked."}`. Every project is private: a non-member gets 404
//! `{"message":"404 Project Not Found"}` for it and everything under it. Permissions follow
//! the caller's access level on the project.
//!
//! Endpoints under `/api/v4` (`:id` is a numeric id or URL-encoded path):
//! - `GET /user` (the caller: `id`, `username`, `name`, `state`, `avatar_url`, `web_url`, …)
//! - `GET /projects/:id` (with `permissions` of the caller, and the CI/CD settings
//!   `restrict_user_defined_variables` / `ci_pipeline_variables_minimum_override_role` when
//!   the caller is Maintainer or more), `PUT /projects/:id` (that role; GitLab's 403/400s),
//!   `GET /users?username=`, `GET /projects/:id/members/all/:user_id`
//! - `GET /projects/:id/repository/files/:file_path/raw?ref=` (Reporter+; the default
//!   branch's files set with `set_file`; 404 `File Not Found`, 404 `Commit Not Found` for
//!   another ref)
//! - `GET /projects/:id/ci/lint?content_ref=&include_jobs=true` (Reporter+; `valid`,
//!   `errors`, `warnings`, `merged_yaml`, `jobs` with `name`/`stage`/`when`/`only`/`except` as
//!   GitLab reports them)
//! - `POST /projects/:id/pipeline` (JSON `{ref, variables:[{key,value,variable_type}]}`;
//!   403 `{"message":"403 Forbidden"}` below Developer; 400
//!   `{"message":{"base":["Insufficient permissions to set pipeline variables"]}}` when the
//!   project's minimum role for pipeline variables is above the caller's; 400 `{"message":
//!   {"base":["You do not have sufficient permission to run a pipeline on '<ref>'. Please
//!   select a different branch or contact your administrator for assistance."]}}` on a
//!   protected branch (`protect_branch`) the caller may not push to),
//!   `GET /projects/:id/pipelines/:pid` (with `user`, its creator), `GET …/pipelines/:pid/jobs`,
//!   `GET …/bridges`, `POST …/pipelines/:pid/cancel` (Developer+, push access on a protected
//!   ref; the jobs it cancels stay cancelled when their script ends, and the Job and Pipeline
//!   hooks go out as for any end), `GET /projects/:id/pipelines` (`source`, `ref`, `updated_after`, `sort`),
//!   `GET …/pipelines/:pid/variables` (Developer+)
//! - `GET /projects/:id/jobs/:job_id` (with `user`), `GET …/jobs/:job_id/trace`,
//!   `POST …/jobs/:job_id/play` (Developer+, push access on a protected ref, 400 `Unplayable
//!   Job` unless manual; runs as the caller)
//! - `GET/POST /projects/:id/hooks`, `PUT /projects/:id/hooks/:hook_id` (Maintainer+)
//!
//! OAuth 2 (GitLab's Doorkeeper; `gitlab/oauth.rs`): `GET /oauth/authorize` (the user signed
//! in with `sign_in_browser_as` approves at once, or denies after `deny_next_authorization`;
//! PKCE `S256` required), `POST /oauth/token` (`authorization_code` with `code_verifier`,
//! `refresh_token` with rotation), `POST /oauth/revoke`, and `GET /users/sign_in` (where an
//! authorization goes when nobody is signed in).
//!
//! Lists paginate like GitLab (`page`, `per_page` default 20 max 100; headers `X-Page`,
//! `X-Per-Page`, `X-Next-Page`, `X-Prev-Page`, `X-Total`, `X-Total-Pages`, `Link`). Every
//! answer carries `RateLimit-Limit/-Observed/-Remaining/-Reset/-ResetTime`. Errors are JSON
//! `{"message": …}` with GitLab's status codes (400 with `{"message":{"base":[…]}}` when a
//! pipeline cannot be created).
//!
//! Which jobs a created pipeline holds follows the job contract by default: a job with the
//! `CHATOPS_JOB` rule joins when the variable names it; a plain job (no rules/only) joins every
//! pipeline; an `only: [chat]` job never joins an API pipeline (see [`JoinRule`]). A job
//! `when: manual` is created `manual`; others `pending`, and an attached [`JobExecutor`] runs
//! them (the local mode plugs a shell runner in here), after which the job's status and trace
//! are set and, when a webhook is configured, Job and Pipeline hooks are delivered.
//!
//! Test handle (`gl.state()`, a cheap clone): `add_project`, `add_user`, `set_member`,
//! `add_user_with_access`, `user`, `set_user_access`, `block_user`/`unblock_user`,
//! `protect_branch`/`unprotect_branch`, `set_ci_jobs`/`set_ci_invalid`/`set_ci_yaml` (a real
//! `.gitlab-ci.yml`, planned by the runner's rules evaluator), `set_variables_role`,
//! `set_token_access`, `set_job_status`, `set_trace`, `finish_job`, `play_job`, `pipelines()`,
//! `jobs_of()`, `pipeline_creator`/`job_player`/`pipeline_canceller`, `requests()` (each with
//! the user it authenticated as), `created_variables()`, `fail_next(Fault, n)` (on `/oauth/*`
//! too), `set_webhook(url, token)`, `job_hook()`/`pipeline_hook()` + `deliver()` (or
//! `send_job_hook` / `send_pipeline_hook`), `set_executor()`, `set_planner()` (a
//! [`PipelinePlanner`] decides pipeline contents and `ci/lint` answers from a real
//! `.gitlab-ci.yml`); OAuth: `register_oauth_app`, `sign_in_browser_as`/`sign_out_browser`,
//! `deny_next_authorization`, `set_code_lifetime_secs`, `set_access_token_lifetime_secs`,
//! `revoke_all_tokens_of`, `oauth_tokens_issued`, `oauth_refresh_count`, `oauth_revocations`,
//! `oauth_pending_codes`, `oauth_access_token_valid`.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chatops_core::gitlab::Status;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod oauth;

pub use oauth::pkce_challenge;

/// A user of the stand-in (`add_user_with_access`, or `add_user` + `set_member`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandinUser {
    pub id: u64,
    pub username: String,
    /// A personal access token (`glpat-…`, scope `api`) the user's API calls may use.
    pub personal_token: String,
}

/// Who a request authenticates as: the token the stand-in was started with (the
/// administrator's bot, `STANDIN_TOKEN`) or a user (personal or OAuth access token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Bot,
    User(u64),
}

/// Who did something (a snapshot: the pipeline's `user`, the job's, hooks').
#[derive(Debug, Clone, PartialEq, Eq)]
struct ActorInfo {
    id: u64,
    username: String,
    name: String,
}

/// Why the API refuses a request before it reaches an endpoint's own checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No token, or one nobody issued: 401 `{"message":"401 Unauthorized"}`.
    Unauthorized,
    /// A blocked user's valid token: 403 with `UserAccessDeniedReason`'s text.
    Blocked,
    /// OAuth access tokens: 401 `invalid_token` (see `oauth::invalid_token`).
    TokenExpired,
    TokenRevoked,
    /// An OAuth token without the `api` scope on a write: 403 `insufficient_scope`.
    InsufficientScope,
    /// The project does not exist, or the caller is not a member (all projects are private).
    ProjectNotFound,
}

impl Refusal {
    fn response(self) -> Response {
        match self {
            Refusal::Unauthorized => message(401, "401 Unauthorized"),
            Refusal::Blocked => message(403, "403 Forbidden - Your account has been blocked."),
            Refusal::TokenExpired => oauth::invalid_token(oauth::TOKEN_EXPIRED),
            Refusal::TokenRevoked => oauth::invalid_token(oauth::TOKEN_REVOKED),
            Refusal::InsufficientScope => oauth::insufficient_scope(),
            Refusal::ProjectNotFound => not_found("Project"),
        }
    }
}

/// The bot identity behind `STANDIN_TOKEN` (the user of webhooks and of its pipelines).
const BOT_ID: u64 = 1;
const BOT_USERNAME: &str = "chatops-bot";
const BOT_NAME: &str = "ChatOps Bot";

impl ActorInfo {
    fn bot() -> Self {
        Self {
            id: BOT_ID,
            username: BOT_USERNAME.to_owned(),
            name: BOT_NAME.to_owned(),
        }
    }
}

struct UserRecord {
    id: u64,
    username: String,
    name: String,
    /// `active` or `blocked`.
    state: String,
    personal_token: String,
    /// The access level on every project without a `members` entry (0: not a member).
    default_access: u32,
}

/// How a CI job decides whether it joins a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRule {
    /// `rules: - if: '$CHATOPS_JOB == $CI_JOB_NAME'`: joins when `CHATOPS_JOB` names it.
    ChatopsRule,
    /// No `rules`/`only`: joins every pipeline (the foreign job of the contract).
    Always,
    /// `only: [chat]`: never in an API pipeline.
    OnlyChat,
}

/// A job in the stand-in's CI configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct StandinCiJob {
    pub name: String,
    pub stage: String,
    pub when_manual: bool,
    pub except_chat: bool,
    pub rule: JoinRule,
    pub script: Vec<String>,
    /// A trigger job (`trigger: <project>`): it joins pipelines as a bridge, which GitLab
    /// lists at `…/bridges`, never at `…/jobs`, and no runner runs.
    pub trigger: Option<String>,
}

impl StandinCiJob {
    /// A chat job following the contract.
    pub fn chat(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            stage: "chatops".to_owned(),
            when_manual: false,
            except_chat: false,
            rule: JoinRule::ChatopsRule,
            script: vec![format!("echo {name}")],
            trigger: None,
        }
    }
    /// A trigger job without rules: it joins every pipeline, as a bridge.
    pub fn trigger(name: &str, downstream: &str) -> Self {
        Self {
            stage: "deploy".to_owned(),
            rule: JoinRule::Always,
            script: Vec::new(),
            trigger: Some(downstream.to_owned()),
            ..Self::chat(name)
        }
    }
    /// A plain job that joins every pipeline.
    pub fn plain(name: &str) -> Self {
        Self {
            stage: "test".to_owned(),
            rule: JoinRule::Always,
            ..Self::chat(name)
        }
    }
    /// An `only: [chat]` job (GitLab's own ChatOps style).
    pub fn only_chat(name: &str) -> Self {
        Self {
            rule: JoinRule::OnlyChat,
            ..Self::chat(name)
        }
    }
    pub fn manual(mut self) -> Self {
        self.when_manual = true;
        self
    }
    pub fn except_chat(mut self) -> Self {
        self.except_chat = true;
        self
    }
    pub fn script(mut self, lines: &[&str]) -> Self {
        self.script = lines.iter().map(|s| s.to_string()).collect();
        self
    }

    fn lint_json(&self) -> Value {
        let only = match self.rule {
            JoinRule::ChatopsRule => Value::Null,
            JoinRule::Always => json!({"refs": ["branches", "tags"]}),
            JoinRule::OnlyChat => json!({"refs": ["chat"]}),
        };
        json!({
            "name": self.name,
            "stage": self.stage,
            "before_script": [],
            "script": self.script,
            "after_script": [],
            "tag_list": [],
            "environment": null,
            "when": if self.when_manual { "manual" } else { "on_success" },
            "allow_failure": false,
            "only": only,
            "except": if self.except_chat { json!({"refs": ["chat"]}) } else { Value::Null },
        })
    }
}

#[derive(Debug, Clone)]
pub enum CiDefinition {
    Valid(Vec<StandinCiJob>),
    Invalid(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct StandinProject {
    pub id: u64,
    pub path: String,
    pub default_branch: String,
    pub ci: CiDefinition,
    /// `ci_pipeline_variables_minimum_override_role` as the API spells it (`maintainer`
    /// unless set: GitLab's default outside new GitLab.com namespaces).
    pub variables_role: String,
    /// `ci/lint`'s `merged_yaml`; derived from `ci` when no YAML was given.
    pub merged_yaml: Option<String>,
    /// The project's own planner (a real CI file: `set_ci_yaml` in `runner`): pipelines then
    /// hold what it plans, workflow rules included, instead of what the [`JoinRule`]s say.
    pub planner: Option<ProjectPlanner>,
    /// Files on the default branch (`repository/files/:path/raw`): path → text.
    pub files: HashMap<String, String>,
}

/// A [`PipelinePlanner`] attached to one project.
#[derive(Clone)]
pub struct ProjectPlanner(pub Arc<dyn PipelinePlanner>);

impl std::fmt::Debug for ProjectPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProjectPlanner")
    }
}

#[derive(Debug, Clone)]
pub struct StandinPipeline {
    pub id: u64,
    pub iid: u64,
    pub project: u64,
    pub git_ref: String,
    pub status: Status,
    pub variables: Vec<(String, String)>,
    pub created_at: u64,
}

impl StandinPipeline {
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct StandinJob {
    pub id: u64,
    pub project: u64,
    pub pipeline: u64,
    pub name: String,
    pub stage: String,
    pub status: Status,
    pub manual: bool,
    pub script: Vec<String>,
    pub trace: Vec<u8>,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// A trigger job (bridge): listed at `…/bridges`, not `…/jobs`; never run here.
    pub bridge: bool,
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query, percent-encoding kept (`/api/v4/projects/g%2Fp`).
    pub path: String,
    pub query: String,
    pub body: String,
    /// The status the stand-in answered.
    pub status: u16,
    /// The username an API request authenticated as (`chatops-bot` for the stand-in's own
    /// token); `None` when it did not authenticate or is no API call (`/oauth/*`).
    pub user: Option<String>,
}

impl RecordedRequest {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A fault to inject into the next requests.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 `Retry later`, with `Retry-After` when given (and `RateLimit-Reset` always).
    RateLimited { retry_after: Option<u64> },
    /// Answer with this status and `{"message": "<status> <reason>"}`.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Do what was asked (a create creates), then wait this long before answering: the caller
    /// times out on a request GitLab carried out.
    AcceptThenDelay(Duration),
}

struct PendingFault {
    fault: Fault,
    remaining: usize,
    /// Only requests whose path contains this.
    path_contains: Option<String>,
}

/// What a job executor is given.
#[derive(Debug, Clone)]
pub struct ExecJob {
    pub project_id: u64,
    pub project_path: String,
    pub pipeline_id: u64,
    pub job_id: u64,
    pub name: String,
    pub script: Vec<String>,
    /// Pipeline variables plus the predefined ones a runner would set (`CI_JOB_NAME`, …).
    pub variables: Vec<(String, String)>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub status: Status,
    /// The raw runner log (sections, ANSI and all).
    pub trace: Vec<u8>,
}

/// Runs jobs of created pipelines (and played manual jobs). Without one, jobs stay `pending`
/// until a test sets their status.
#[async_trait::async_trait]
pub trait JobExecutor: Send + Sync {
    async fn run(&self, job: ExecJob) -> ExecOutcome;
}

/// One job a planner puts in a new pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedJob {
    pub name: String,
    pub stage: String,
    /// Created `manual` (waits for `play`) instead of `pending`.
    pub manual: bool,
    pub script: Vec<String>,
    /// A trigger job: a bridge (listed at `…/bridges`, never run by a runner).
    pub bridge: bool,
}

/// Decides which jobs a created pipeline holds, in place of the [`JoinRule`]s (the local mode
/// evaluates a real `.gitlab-ci.yml` here). `Err(message)` answers 400
/// `{"message":{"base":[message]}}`, as GitLab does when no job would run.
pub trait PipelinePlanner: Send + Sync {
    fn plan(
        &self,
        project: &StandinProject,
        git_ref: &str,
        variables: &[(String, String)],
    ) -> Result<Vec<PlannedJob>, String>;

    /// What `ci/lint` reports for the project: `Some(Ok(jobs))`, `Some(Err(errors))` for an
    /// invalid configuration, or `None` to use the project's `set_ci_jobs` definition.
    fn lint(&self, _project: &StandinProject) -> Option<Result<Vec<StandinCiJob>, Vec<String>>> {
        None
    }
}

/// A webhook request, ready to deliver (and to deliver again: same `Idempotency-Key`).
#[derive(Debug, Clone)]
pub struct HookDelivery {
    pub url: String,
    /// `Job Hook` or `Pipeline Hook`.
    pub event: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

struct State {
    token: String,
    base_url: String,
    projects: Vec<StandinProject>,
    users: Vec<UserRecord>,
    /// `(project, user)` → access level; 0 (only `set_user_access`) keeps a user with a
    /// default access out of that project.
    members: HashMap<(u64, u64), u32>,
    /// `(project, branch)` → the minimum access level allowed to push and merge (0: no one).
    protected: HashMap<(u64, String), u32>,
    /// Who created each pipeline, played each job, cancelled each pipeline.
    creators: HashMap<u64, ActorInfo>,
    players: HashMap<u64, ActorInfo>,
    cancellers: HashMap<u64, ActorInfo>,
    oauth: oauth::OAuthState,
    /// Entropy for tokens and codes (a hash chain: no `rand` dependency for a stand-in).
    seed: [u8; 32],
    entropy: u64,
    pipelines: Vec<StandinPipeline>,
    jobs: Vec<StandinJob>,
    hooks: Vec<(u64, chatops_core::gitlab::Hook, String)>,
    requests: Vec<RecordedRequest>,
    faults: VecDeque<PendingFault>,
    /// The token user's access level on every project.
    token_access: u32,
    executor: Option<Arc<dyn JobExecutor>>,
    planner: Option<Arc<dyn PipelinePlanner>>,
    webhook: Option<(String, String)>,
    observed: u64,
    next_pipeline: u64,
    next_job: u64,
    next_hook: u64,
    next_uuid: u64,
}

/// Shared handle on the stand-in's state.
#[derive(Clone)]
pub struct StandinHandle(Arc<Mutex<State>>);

/// A running GitLab stand-in; stops when dropped.
pub struct GitLabStandin {
    addr: SocketAddr,
    handle: StandinHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitLabStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The token the stand-in accepts unless told otherwise.
pub const STANDIN_TOKEN: &str = "glpat-standin-token";

impl GitLabStandin {
    pub async fn start() -> Self {
        Self::start_with_token(STANDIN_TOKEN).await
    }

    pub async fn start_with_token(token: &str) -> Self {
        Self::bind("127.0.0.1:0", token)
            .await
            .expect("bind 127.0.0.1:0 for the GitLab stand-in")
    }

    /// Bind a given address (the demo uses a fixed port).
    pub async fn bind(addr: &str, token: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let handle = StandinHandle(Arc::new(Mutex::new(State {
            token: token.to_owned(),
            base_url: format!("http://{addr}"),
            projects: Vec::new(),
            users: Vec::new(),
            members: HashMap::new(),
            protected: HashMap::new(),
            creators: HashMap::new(),
            players: HashMap::new(),
            cancellers: HashMap::new(),
            oauth: oauth::OAuthState::default(),
            seed: seed(&addr),
            entropy: 0,
            pipelines: Vec::new(),
            jobs: Vec::new(),
            hooks: Vec::new(),
            requests: Vec::new(),
            faults: VecDeque::new(),
            token_access: 40,
            executor: None,
            planner: None,
            webhook: None,
            observed: 0,
            next_pipeline: 100,
            next_job: 1000,
            next_hook: 0,
            next_uuid: 0,
        })));
        let h = handle.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let h = h.clone();
                async move { h.serve(method, uri, headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, handle, task })
    }

    /// The instance URL (`http://127.0.0.1:PORT`), what `GITLAB_URL` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token(&self) -> String {
        self.handle.lock().token.clone()
    }

    pub fn state(&self) -> StandinHandle {
        self.handle.clone()
    }
}

/// A per-instance seed for [`State::random_hex`].
fn seed(addr: &SocketAddr) -> [u8; 32] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(addr.to_string().as_bytes());
    h.update(std::process::id().to_le_bytes());
    h.finalize().into()
}

impl State {
    /// `len` hex characters no caller can predict (SHA-256 of the seed, a counter and the
    /// time): tokens and codes.
    fn random_hex(&mut self, len: usize) -> String {
        let mut out = String::with_capacity(len + 64);
        while out.len() < len {
            self.entropy += 1;
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.entropy.to_le_bytes());
            h.update(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
                    .to_le_bytes(),
            );
            out.push_str(&hex::encode(h.finalize()));
        }
        out.truncate(len);
        out
    }

    /// A user's personal access token: stable for a given id in one stand-in.
    fn personal_token_for(&self, id: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(b"personal access token");
        h.update(id.to_le_bytes());
        format!("glpat-{}", &hex::encode(h.finalize())[..20])
    }

    fn user(&self, id: u64) -> Option<&UserRecord> {
        self.users.iter().find(|u| u.id == id)
    }

    fn user_named(&self, username: &str) -> Option<&UserRecord> {
        self.users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
    }

    /// `actor`'s access level on `project` (0: not a member).
    fn access(&self, actor: Actor, project: u64) -> u32 {
        match actor {
            Actor::Bot => self.token_access,
            Actor::User(id) => match self.members.get(&(project, id)) {
                Some(level) => *level,
                None => self.user(id).map_or(0, |u| u.default_access),
            },
        }
    }

    fn actor_info(&self, actor: Actor) -> ActorInfo {
        match actor {
            Actor::Bot => ActorInfo::bot(),
            Actor::User(id) => match self.user(id) {
                Some(u) => ActorInfo {
                    id: u.id,
                    username: u.username.clone(),
                    name: u.name.clone(),
                },
                None => ActorInfo {
                    id,
                    username: format!("user{id}"),
                    name: format!("user{id}"),
                },
            },
        }
    }

    /// GitLab's `UserBasic` entity (a pipeline's or a job's `user`).
    fn user_basic_json(&self, who: &ActorInfo) -> Value {
        let state = self
            .users
            .iter()
            .find(|u| u.id == who.id && u.username == who.username)
            .map_or("active", |u| u.state.as_str());
        json!({
            "id": who.id,
            "username": who.username,
            "name": who.name,
            "state": state,
            "locked": state == "blocked",
            "avatar_url": null,
            "web_url": format!("{}/{}", self.base_url, who.username)
        })
    }

    /// Whether `actor` may push to (and so run pipelines, play and cancel jobs on) `branch`
    /// (`Gitlab::UserAccess#can_update_branch?` against the protected branch's level).
    fn can_update_branch(&self, actor: Actor, project: u64, branch: &str) -> bool {
        match self.protected.get(&(project, branch.to_owned())) {
            None => self.access(actor, project) >= 30,
            Some(0) => false,
            Some(level) => self.access(actor, project) >= *level,
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub use chatops_core::clock::{iso8601, parse_iso8601};

fn status_str(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn message(status: u16, msg: impl Into<Value>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(json!({ "message": msg.into() }))).into_response()
}

fn not_found(what: &str) -> Response {
    message(404, format!("404 {what} Not Found"))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn query_map(q: &str) -> HashMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

impl StandinHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- test-facing state -----

    /// Add a project with default branch `main` and no CI configuration.
    pub fn add_project(&self, id: u64, path: &str) {
        let mut g = self.lock();
        g.projects.retain(|p| p.id != id);
        g.projects.push(StandinProject {
            id,
            path: path.to_owned(),
            default_branch: "main".to_owned(),
            ci: CiDefinition::Invalid(vec!["Please provide content of .gitlab-ci.yml".into()]),
            variables_role: "maintainer".to_owned(),
            merged_yaml: None,
            planner: None,
            files: HashMap::new(),
        });
    }

    /// Put a file on the project's default branch (`None` removes it).
    pub fn set_file(&self, project: u64, path: &str, text: Option<&str>) {
        if let Some(p) = self.lock().projects.iter_mut().find(|p| p.id == project) {
            match text {
                Some(t) => p.files.insert(path.to_owned(), t.to_owned()),
                None => p.files.remove(path),
            };
        }
    }

    /// The project's "Minimum role to use pipeline variables" (`no_one_allowed`,
    /// `developer`, `maintainer`, `owner`).
    pub fn set_variables_role(&self, project: u64, role: &str) {
        if let Some(p) = self.lock().projects.iter_mut().find(|p| p.id == project) {
            p.variables_role = role.to_owned();
        }
    }

    pub fn variables_role(&self, project: u64) -> Option<String> {
        self.lock()
            .projects
            .iter()
            .find(|p| p.id == project)
            .map(|p| p.variables_role.clone())
    }

    /// The token's access level on every project (10 guest … 50 owner; default 40, a
    /// Maintainer project access token as the README asks for).
    pub fn set_token_access(&self, access_level: u32) {
        self.lock().token_access = access_level;
    }

    /// The project's CI configuration at once: what `ci/lint` reports (`ci`, `merged_yaml`)
    /// and, when given, the planner that decides what its pipelines hold
    /// (`StandinHandle::set_ci_yaml` in `runner` builds all three from a `.gitlab-ci.yml`).
    pub fn set_ci_definition(
        &self,
        project: u64,
        ci: CiDefinition,
        merged_yaml: Option<String>,
        planner: Option<Arc<dyn PipelinePlanner>>,
    ) {
        if let Some(p) = self.lock().projects.iter_mut().find(|p| p.id == project) {
            p.ci = ci;
            p.merged_yaml = merged_yaml;
            p.planner = planner.map(ProjectPlanner);
        }
    }

    /// Set `ci/lint`'s `merged_yaml` alone (e.g. the demo project's file with its local
    /// includes merged), keeping the jobs as set.
    pub fn set_merged_yaml(&self, project: u64, yaml: Option<String>) {
        if let Some(p) = self.lock().projects.iter_mut().find(|p| p.id == project) {
            p.merged_yaml = yaml;
        }
    }

    pub fn set_default_branch(&self, project: u64, branch: &str) {
        if let Some(p) = self.lock().projects.iter_mut().find(|p| p.id == project) {
            p.default_branch = branch.to_owned();
        }
    }

    pub fn project_web_url(&self, project: u64) -> String {
        let g = self.lock();
        let path = g
            .projects
            .iter()
            .find(|p| p.id == project)
            .map(|p| p.path.clone())
            .unwrap_or_default();
        format!("{}/{path}", g.base_url)
    }

    /// A user with this id (replacing one with the same id), member of no project until
    /// `set_member`. Their personal token: `user(username).personal_token`.
    pub fn add_user(&self, id: u64, username: &str) {
        let mut g = self.lock();
        g.users.retain(|u| u.id != id);
        let personal_token = g.personal_token_for(id);
        g.users.push(UserRecord {
            id,
            username: username.to_owned(),
            name: username.to_owned(),
            state: "active".to_owned(),
            personal_token,
            default_access: 0,
        });
    }

    /// A user with `access_level` on every project (10 guest … 50 owner; 0 none), the way
    /// `set_token_access` sets the bot's; `set_user_access` overrides it per project. A user
    /// already named so keeps their id and token and gets the new level.
    pub fn add_user_with_access(&self, username: &str, access_level: u32) -> StandinUser {
        let mut g = self.lock();
        if let Some(u) = g
            .users
            .iter_mut()
            .find(|u| u.username.eq_ignore_ascii_case(username))
        {
            u.default_access = access_level;
        } else {
            let id = (1001..)
                .find(|i| !g.users.iter().any(|u| u.id == *i))
                .unwrap_or(u64::MAX);
            let personal_token = g.personal_token_for(id);
            g.users.push(UserRecord {
                id,
                username: username.to_owned(),
                name: username.to_owned(),
                state: "active".to_owned(),
                personal_token,
                default_access: access_level,
            });
        }
        let u = g.user_named(username).expect("just added");
        StandinUser {
            id: u.id,
            username: u.username.clone(),
            personal_token: u.personal_token.clone(),
        }
    }

    /// A user by username (case-insensitive), with their personal token.
    pub fn user(&self, username: &str) -> Option<StandinUser> {
        self.lock().user_named(username).map(|u| StandinUser {
            id: u.id,
            username: u.username.clone(),
            personal_token: u.personal_token.clone(),
        })
    }

    /// `username`'s access level on one project, over their level on every project; 0 makes
    /// them a non-member there (GitLab then answers 404 for the project).
    pub fn set_user_access(&self, username: &str, project: u64, access_level: u32) {
        let mut g = self.lock();
        if let Some(id) = g.user_named(username).map(|u| u.id) {
            g.members.insert((project, id), access_level);
        }
    }

    /// Block the user (an administrator's "Block"): their personal and OAuth tokens then get
    /// 403 `{"message":"403 Forbidden - Your account has been blocked."}` from the API. GitLab
    /// answers 403, not 401, because the token is valid: `API::APIGuard#find_current_user!`
    /// finds the user, then `api_access_allowed?` fails and it calls `forbidden!` with
    /// `Gitlab::Auth::UserAccessDeniedReason#rejection_message`.
    pub fn block_user(&self, username: &str) {
        self.set_user_state(username, "blocked");
    }

    pub fn unblock_user(&self, username: &str) {
        self.set_user_state(username, "active");
    }

    fn set_user_state(&self, username: &str, state: &str) {
        let mut g = self.lock();
        if let Some(u) = g
            .users
            .iter_mut()
            .find(|u| u.username.eq_ignore_ascii_case(username))
        {
            u.state = state.to_owned();
        }
    }

    /// Protect `branch`: only `min_access_level` and above may push and merge (30: Developers
    /// and Maintainers, 40: Maintainers, 0: no one). Creating a pipeline there, playing its
    /// jobs or cancelling it then needs that level, as on GitLab. No branch is protected
    /// unless told (GitLab protects the default branch of a new project; the stand-in does
    /// not, so a Developer bot keeps working).
    pub fn protect_branch(&self, project: u64, branch: &str, min_access_level: u32) {
        self.lock()
            .protected
            .insert((project, branch.to_owned()), min_access_level);
    }

    pub fn unprotect_branch(&self, project: u64, branch: &str) {
        self.lock().protected.remove(&(project, branch.to_owned()));
    }

    /// Who created the pipeline (`chatops-bot` for the token the stand-in started with).
    pub fn pipeline_creator(&self, pipeline: u64) -> Option<String> {
        self.lock()
            .creators
            .get(&pipeline)
            .map(|a| a.username.clone())
    }

    /// Who played the manual job through `POST …/jobs/:id/play`.
    pub fn job_player(&self, job: u64) -> Option<String> {
        self.lock().players.get(&job).map(|a| a.username.clone())
    }

    /// Who cancelled the pipeline through `POST …/pipelines/:id/cancel`.
    pub fn pipeline_canceller(&self, pipeline: u64) -> Option<String> {
        self.lock()
            .cancellers
            .get(&pipeline)
            .map(|a| a.username.clone())
    }

    /// Membership with an access level (10 guest … 50 owner); 0 removes it.
    pub fn set_member(&self, project: u64, user: u64, access_level: u32) {
        let mut g = self.lock();
        if access_level == 0 {
            g.members.remove(&(project, user));
        } else {
            g.members.insert((project, user), access_level);
        }
    }

    pub fn set_ci_jobs(&self, project: u64, jobs: Vec<StandinCiJob>) {
        if let Some(p) = self.lock().projects.iter_mut().find(|p| p.id == project) {
            p.ci = CiDefinition::Valid(jobs);
            p.merged_yaml = None;
            p.planner = None;
        }
    }

    pub fn set_ci_invalid(&self, project: u64, errors: Vec<String>) {
        if let Some(p) = self.lock().projects.iter_mut().find(|p| p.id == project) {
            p.ci = CiDefinition::Invalid(errors);
            p.merged_yaml = None;
            p.planner = None;
        }
    }

    pub fn pipelines(&self) -> Vec<StandinPipeline> {
        self.lock().pipelines.clone()
    }

    pub fn jobs_of(&self, pipeline: u64) -> Vec<StandinJob> {
        self.lock()
            .jobs
            .iter()
            .filter(|j| j.pipeline == pipeline)
            .cloned()
            .collect()
    }

    pub fn job(&self, job: u64) -> Option<StandinJob> {
        self.lock().jobs.iter().find(|j| j.id == job).cloned()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The variables of every `POST …/pipeline` request, as sent.
    pub fn created_variables(&self) -> Vec<Vec<(String, String)>> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/pipeline"))
            .filter_map(|r| r.json())
            .map(|v| {
                v["variables"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                (
                                    x["key"].as_str().unwrap_or_default().to_owned(),
                                    x["value"].as_str().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The next `times` requests (whose path contains `path_contains`, when given) get `fault`.
    pub fn fail_next(&self, fault: Fault, times: usize, path_contains: Option<&str>) {
        self.lock().faults.push_back(PendingFault {
            fault,
            remaining: times,
            path_contains: path_contains.map(str::to_owned),
        });
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn set_executor(&self, executor: Arc<dyn JobExecutor>) {
        self.lock().executor = Some(executor);
    }

    /// Let `planner` decide which jobs new pipelines hold (instead of the `JoinRule`s).
    pub fn set_planner(&self, planner: Arc<dyn PipelinePlanner>) {
        self.lock().planner = Some(planner);
    }

    /// Where Job and Pipeline hooks go after an executor finishes a job (and what
    /// `send_job_hook` uses), with the secret token GitLab sends as `X-Gitlab-Token`.
    pub fn set_webhook(&self, url: &str, token: &str) {
        self.lock().webhook = Some((url.to_owned(), token.to_owned()));
    }

    /// Set a job's status (timestamps follow); the pipeline's status is derived again.
    pub fn set_job_status(&self, job: u64, status: Status) {
        let mut g = self.lock();
        let t = now();
        let mut pipeline = None;
        if let Some(j) = g.jobs.iter_mut().find(|j| j.id == job) {
            j.status = status;
            if matches!(status, Status::Running) && j.started_at.is_none() {
                j.started_at = Some(t);
            }
            if status.is_final() {
                j.started_at.get_or_insert(t);
                j.finished_at = Some(t);
            }
            pipeline = Some(j.pipeline);
        }
        if let Some(p) = pipeline {
            derive_pipeline_status(&mut g, p);
        }
    }

    pub fn set_trace(&self, job: u64, trace: impl Into<Vec<u8>>) {
        if let Some(j) = self.lock().jobs.iter_mut().find(|j| j.id == job) {
            j.trace = trace.into();
        }
    }

    pub fn finish_job(&self, job: u64, status: Status, trace: impl Into<Vec<u8>>) {
        self.set_trace(job, trace);
        self.set_job_status(job, status);
    }

    /// Play a manual job as `POST /jobs/:id/play` would (runs it on the executor, if any);
    /// no player is recorded.
    pub fn play_job(&self, job: u64) -> bool {
        self.play_job_as(job, None)
    }

    fn play_job_as(&self, job: u64, by: Option<ActorInfo>) -> bool {
        let run = {
            let mut g = self.lock();
            let Some(j) = g
                .jobs
                .iter_mut()
                .find(|j| j.id == job && j.status == Status::Manual)
            else {
                return false;
            };
            j.status = Status::Pending;
            let p = j.pipeline;
            if let Some(by) = by {
                g.players.insert(job, by);
            }
            derive_pipeline_status(&mut g, p);
            exec_job(&g, job)
        };
        if let Some((exec, ej)) = run {
            self.spawn_run(exec, ej);
        }
        true
    }

    // ----- webhooks -----

    fn uuid(&self) -> String {
        let mut g = self.lock();
        g.next_uuid += 1;
        let n = g.next_uuid;
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let hex = format!(
            "{:016x}{:016x}",
            t as u64,
            n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        format!(
            "{}-{}-4{}-8{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }

    fn delivery(&self, event: &str, body: Value) -> Option<HookDelivery> {
        let (url, token) = self.lock().webhook.clone()?;
        let key = self.uuid();
        let event_uuid = self.uuid();
        Some(HookDelivery {
            url,
            event: event.to_owned(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("User-Agent".into(), "GitLab/17.6.0".into()),
                ("X-Gitlab-Event".into(), event.to_owned()),
                ("X-Gitlab-Token".into(), token),
                ("X-Gitlab-Instance".into(), self.lock().base_url.clone()),
                (
                    "X-Gitlab-Webhook-UUID".into(),
                    "5b3e4d2c-0000-4000-8000-standin00001".into(),
                ),
                ("X-Gitlab-Event-UUID".into(), event_uuid),
                ("Idempotency-Key".into(), key),
            ],
            body: body.to_string(),
        })
    }

    /// A Job Hook for the job's current state (None when no webhook is set or no such job).
    pub fn job_hook(&self, job: u64) -> Option<HookDelivery> {
        let body = {
            let g = self.lock();
            let j = g.jobs.iter().find(|j| j.id == job)?;
            let p = g.projects.iter().find(|p| p.id == j.project)?;
            let pipe = g.pipelines.iter().find(|x| x.id == j.pipeline)?;
            let web = format!("{}/{}", g.base_url, p.path);
            let opt = |t: Option<u64>| t.map(iso8601).map(Value::String).unwrap_or(Value::Null);
            let duration = match (j.started_at, j.finished_at) {
                (Some(s), Some(f)) => json!((f - s) as f64),
                _ => Value::Null,
            };
            json!({
                "object_kind": "build",
                "ref": pipe.git_ref,
                "tag": false,
                "before_sha": "0000000000000000000000000000000000000000",
                "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
                "build_id": j.id,
                "build_name": j.name,
                "build_stage": j.stage,
                "build_status": status_str(j.status),
                "build_created_at": iso8601(j.created_at),
                "build_started_at": opt(j.started_at),
                "build_finished_at": opt(j.finished_at),
                "build_duration": duration,
                "build_queued_duration": 0.5,
                "build_allow_failure": false,
                "build_failure_reason": if j.status == Status::Failed { "script_failure" } else { "unknown_failure" },
                "retries_count": 0,
                "pipeline_id": j.pipeline,
                "project_id": p.id,
                "project_name": p.path,
                "user": hook_user(&job_user(&g, j)),
                "commit": {
                    "id": pipe.id,
                    "name": null,
                    "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
                    "message": "chatops\n",
                    "author_name": "ChatOps Bot",
                    "author_email": "[REDACTED]",
                    "status": status_str(pipe.status),
                    "duration": null,
                    "started_at": null,
                    "finished_at": null
                },
                "repository": {"name": p.path, "homepage": web},
                "project": {
                    "id": p.id,
                    "name": p.path,
                    "web_url": web,
                    "path_with_namespace": p.path,
                    "default_branch": p.default_branch
                },
                "runner": null,
                "environment": null
            })
        };
        self.delivery("Job Hook", body)
    }

    /// A Pipeline Hook for the pipeline's current state.
    pub fn pipeline_hook(&self, pipeline: u64) -> Option<HookDelivery> {
        let body = {
            let g = self.lock();
            let pipe = g.pipelines.iter().find(|x| x.id == pipeline)?;
            let p = g.projects.iter().find(|p| p.id == pipe.project)?;
            let web = format!("{}/{}", g.base_url, p.path);
            let builds: Vec<Value> = g
                .jobs
                .iter()
                .filter(|j| j.pipeline == pipeline)
                .map(|j| {
                    json!({
                        "id": j.id,
                        "stage": j.stage,
                        "name": j.name,
                        "status": status_str(j.status),
                        "created_at": iso8601(j.created_at),
                        "started_at": j.started_at.map(iso8601),
                        "finished_at": j.finished_at.map(iso8601),
                        "when": if j.manual { "manual" } else { "on_success" },
                        "manual": j.manual,
                        "allow_failure": false,
                        "failure_reason": if j.status == Status::Failed { Some("script_failure") } else { None },
                        "runner": null,
                        "environment": null
                    })
                })
                .collect();
            json!({
                "object_kind": "pipeline",
                "object_attributes": {
                    "id": pipe.id,
                    "iid": pipe.iid,
                    "name": null,
                    "ref": pipe.git_ref,
                    "tag": false,
                    "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
                    "source": "api",
                    "status": status_str(pipe.status),
                    "stages": [],
                    "created_at": iso8601(pipe.created_at),
                    "variables": pipe.variables.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                    "url": format!("{web}/-/pipelines/{}", pipe.id)
                },
                "user": hook_user(&pipeline_user(&g, pipe.id)),
                "project": {
                    "id": p.id,
                    "name": p.path,
                    "web_url": web,
                    "path_with_namespace": p.path,
                    "default_branch": p.default_branch
                },
                "builds": builds
            })
        };
        self.delivery("Pipeline Hook", body)
    }

    /// POST a delivery; returns the receiver's status.
    pub async fn deliver(&self, d: &HookDelivery) -> Result<u16, String> {
        let client = reqwest::Client::new();
        let mut req = client.post(&d.url).body(d.body.clone());
        for (k, v) in &d.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }

    pub async fn send_job_hook(&self, job: u64) -> Result<u16, String> {
        let d = self
            .job_hook(job)
            .ok_or("no webhook configured or no such job")?;
        self.deliver(&d).await
    }

    pub async fn send_pipeline_hook(&self, pipeline: u64) -> Result<u16, String> {
        let d = self
            .pipeline_hook(pipeline)
            .ok_or("no webhook configured or no such pipeline")?;
        self.deliver(&d).await
    }

    fn spawn_run(&self, exec: Arc<dyn JobExecutor>, ej: ExecJob) {
        let h = self.clone();
        tokio::spawn(async move {
            let job = ej.job_id;
            let pipeline = ej.pipeline_id;
            h.set_job_status(job, Status::Running);
            let out = exec.run(ej).await;
            if h.job(job).is_some_and(|j| j.status == Status::Canceled) {
                // Cancelled while it ran: GitLab stops the job and keeps it cancelled (its
                // hooks went out with the cancel); the runner's late result changes nothing.
                return;
            }
            h.finish_job(job, out.status, out.trace);
            if h.lock().webhook.is_some() {
                if let Err(e) = h.send_job_hook(job).await {
                    tracing::warn!(error = %e, "stand-in job hook not delivered");
                }
                if let Err(e) = h.send_pipeline_hook(pipeline).await {
                    tracing::warn!(error = %e, "stand-in pipeline hook not delivered");
                }
            }
        });
    }

    // ----- HTTP -----

    async fn serve(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let path = uri.path().to_owned();
        let query = uri.query().unwrap_or("").to_owned();
        let fault = {
            let mut g = self.lock();
            g.observed += 1;
            let hit = g.faults.iter_mut().find(|f| {
                f.remaining > 0 && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
            });
            let fault = hit.map(|f| {
                f.remaining -= 1;
                f.fault.clone()
            });
            g.faults.retain(|f| f.remaining > 0);
            fault
        };
        let mut resp = match fault {
            Some(Fault::RateLimited { retry_after }) => {
                let mut r = (StatusCode::TOO_MANY_REQUESTS, "Retry later\n").into_response();
                if let Some(s) = retry_after {
                    r.headers_mut().insert("Retry-After", HeaderValue::from(s));
                }
                r
            }
            Some(Fault::Status(s)) => {
                let reason = StatusCode::from_u16(s)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("Error");
                message(s, format!("{s} {reason}"))
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.route(&method, &path, &query, &headers, &body)
            }
            Some(Fault::AcceptThenDelay(d)) => {
                let resp = self.route(&method, &path, &query, &headers, &body);
                tokio::time::sleep(d).await;
                resp
            }
            None => self.route(&method, &path, &query, &headers, &body),
        };
        self.rate_limit_headers(resp.headers_mut());
        let user = resp
            .extensions_mut()
            .remove::<ActorInfo>()
            .map(|a| a.username);
        self.lock().requests.push(RecordedRequest {
            method: method.to_string(),
            path,
            query,
            body: String::from_utf8_lossy(&body).into_owned(),
            status: resp.status().as_u16(),
            user,
        });
        resp
    }

    fn rate_limit_headers(&self, h: &mut HeaderMap) {
        let observed = self.lock().observed;
        let limit = 2000u64;
        let reset = now() + 60;
        h.insert("RateLimit-Limit", HeaderValue::from(limit));
        h.insert("RateLimit-Observed", HeaderValue::from(observed));
        h.insert(
            "RateLimit-Remaining",
            HeaderValue::from(limit.saturating_sub(observed)),
        );
        h.insert("RateLimit-Reset", HeaderValue::from(reset));
        if let Ok(v) = HeaderValue::from_str(&iso8601(reset)) {
            h.insert("RateLimit-ResetTime", v);
        }
    }

    /// Who the request authenticates as, as GitLab's API guard finds it: an OAuth access
    /// token from `Authorization: Bearer` (or `access_token=`), else a personal access token
    /// from `PRIVATE-TOKEN` (or `private_token=`) or the Bearer header. An OAuth token in
    /// `PRIVATE-TOKEN` is looked up as a personal token, found nowhere, and refused, as on
    /// GitLab (`Gitlab::Auth::AuthFinders#access_token`). `Err` says why not.
    fn authenticate(
        &self,
        method: &Method,
        query: &str,
        headers: &HeaderMap,
    ) -> Result<Actor, Refusal> {
        let g = self.lock();
        let q = query_map(query);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let bearer = q.get("access_token").cloned().or_else(|| {
            header("authorization")
                .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
        });
        let mut actor = None;
        if let Some(t) = &bearer {
            match oauth::api_actor(&g, t, method) {
                Some(Ok(a)) => actor = Some(a),
                Some(Err(refusal)) => return Err(refusal),
                None => {}
            }
        }
        let actor = match actor {
            Some(a) => a,
            None => {
                let pat = q
                    .get("private_token")
                    .cloned()
                    .or_else(|| header("private-token"))
                    .or(bearer);
                match pat {
                    Some(t) if t == g.token => Actor::Bot,
                    Some(t) => match g.users.iter().find(|u| u.personal_token == t) {
                        Some(u) => Actor::User(u.id),
                        None => return Err(Refusal::Unauthorized),
                    },
                    None => return Err(Refusal::Unauthorized),
                }
            }
        };
        if let Actor::User(id) = actor {
            if g.user(id).is_some_and(|u| u.state == "blocked") {
                return Err(Refusal::Blocked);
            }
        }
        Ok(actor)
    }

    fn route(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Response {
        if let Some(resp) = self.oauth_route(method, path, query, headers, body) {
            return resp;
        }
        let Some(rest) = path.strip_prefix("/api/v4/") else {
            return not_found("");
        };
        let actor = match self.authenticate(method, query, headers) {
            Ok(a) => a,
            Err(refusal) => return refusal.response(),
        };
        let mut resp = self.api(actor, method, path, rest, query, headers, body);
        let who = self.lock().actor_info(actor);
        resp.extensions_mut().insert(who);
        resp
    }

    #[allow(clippy::too_many_arguments)]
    fn api(
        &self,
        actor: Actor,
        method: &Method,
        path: &str,
        rest: &str,
        query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Response {
        let seg: Vec<String> = rest.split('/').map(percent_decode).collect();
        let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
        let q = query_map(query);
        match (method.as_str(), seg.as_slice()) {
            ("GET", ["user"]) => {
                let g = self.lock();
                axum::Json(current_user_json(&g, actor)).into_response()
            }
            ("GET", ["users"]) => self.users(&q),
            ("GET", ["projects", id]) => self.with_project(id, actor, |g, p, access| {
                axum::Json(project_json(&g.base_url, p, access)).into_response()
            }),
            ("PUT", ["projects", id]) => self.update_project(actor, id, query, headers, body),
            ("GET", ["projects", id, "members", "all", user]) => {
                self.with_project(id, actor, |g, p, _| {
                    let uid: u64 = user.parse().unwrap_or(0);
                    let level = g.access(Actor::User(uid), p.id);
                    match g.user(uid) {
                        Some(u) if level > 0 => axum::Json(json!({
                            "id": u.id,
                            "username": u.username,
                            "name": u.name,
                            "state": u.state,
                            "access_level": level,
                            "web_url": format!("{}/{}", g.base_url, u.username),
                            "expires_at": null
                        }))
                        .into_response(),
                        _ => message(404, "404 Not found"),
                    }
                })
            }
            ("GET", ["projects", id, "ci", "lint"]) => {
                let include_jobs = q.get("include_jobs").map(String::as_str) == Some("true");
                let content_ref = q.get("content_ref").cloned();
                self.with_project(id, actor, |g, p, access| {
                    // `authorize! :download_code` (Reporter+ on a private project).
                    if access < 20 {
                        return message(403, "403 Forbidden");
                    }
                    if let Some(r) = &content_ref {
                        if r != &p.default_branch {
                            return message(404, "404 Commit Not Found");
                        }
                    }
                    let ci = match g.planner.as_ref().and_then(|pl| pl.lint(p)) {
                        Some(Ok(jobs)) => CiDefinition::Valid(jobs),
                        Some(Err(errors)) => CiDefinition::Invalid(errors),
                        None => p.ci.clone(),
                    };
                    let (valid, errors, jobs) = match &ci {
                        CiDefinition::Valid(j) => (
                            true,
                            vec![],
                            j.iter().map(StandinCiJob::lint_json).collect(),
                        ),
                        CiDefinition::Invalid(e) => (false, e.clone(), vec![]),
                    };
                    let merged = match (&ci, &p.merged_yaml) {
                        (CiDefinition::Invalid(_), _) => Value::Null,
                        (_, Some(y)) => Value::String(y.clone()),
                        (CiDefinition::Valid(jobs), None) => Value::String(merged_yaml_of(jobs)),
                    };
                    let mut v = json!({
                        "valid": valid,
                        "errors": errors,
                        "warnings": [],
                        "merged_yaml": merged,
                        "includes": []
                    });
                    if include_jobs {
                        v["jobs"] = Value::Array(jobs);
                    }
                    axum::Json(v).into_response()
                })
            }
            ("GET", ["projects", id, "repository", "files", file, "raw"]) => {
                let wanted_ref = q.get("ref").cloned();
                self.with_project(id, actor, |_, p, access| {
                    // `authorize! :download_code` (Reporter+ on a private project).
                    if access < 20 {
                        return message(403, "403 Forbidden");
                    }
                    // Only the default branch holds files here; GitLab's `ref` is required.
                    match wanted_ref.as_deref() {
                        None | Some("") => return message(400, "400 Bad request - ref is missing"),
                        Some(r) if r != p.default_branch => {
                            return message(404, "404 Commit Not Found")
                        }
                        Some(_) => {}
                    }
                    match p.files.get(*file) {
                        Some(text) => (
                            StatusCode::OK,
                            [("content-type", "text/plain; charset=utf-8")],
                            text.clone(),
                        )
                            .into_response(),
                        None => message(404, "404 File Not Found"),
                    }
                })
            }
            ("POST", ["projects", id, "pipeline"]) => self.create_pipeline(actor, id, body),
            ("GET", ["projects", id, "pipelines"]) => self.with_project(id, actor, |g, p, _| {
                let source_ok = q.get("source").is_none_or(|s| s == "api");
                let since = q.get("updated_after").map(|s| parse_iso8601(s));
                if let Some(None) = since {
                    return message(400, "400 Bad request - updated_after is invalid");
                }
                let since = since.flatten().unwrap_or(0);
                let mut list: Vec<&StandinPipeline> = g
                    .pipelines
                    .iter()
                    .filter(|x| x.project == p.id && source_ok)
                    .filter(|x| q.get("ref").is_none_or(|r| *r == x.git_ref))
                    .filter(|x| x.created_at >= since)
                    .collect();
                list.sort_by_key(|x| x.id);
                if q.get("sort").is_none_or(|s| s == "desc") {
                    list.reverse();
                }
                let items = list
                    .into_iter()
                    .map(|x| pipeline_json(g, x, false))
                    .collect();
                paginate(&g.base_url, path, &q, items)
            }),
            ("GET", ["projects", id, "pipelines", pid, "variables"]) => {
                self.with_pipeline(id, pid, actor, |_, pipe, access| {
                    // `read_pipeline_variable` follows `update_pipeline` (Developer+).
                    if access < 30 {
                        return message(403, "403 Forbidden");
                    }
                    let vars: Vec<Value> = pipe
                        .variables
                        .iter()
                        .map(|(k, v)| json!({"key": k, "value": v, "variable_type": "env_var"}))
                        .collect();
                    axum::Json(vars).into_response()
                })
            }
            ("GET", ["projects", id, "pipelines", pid]) => {
                self.with_pipeline(id, pid, actor, |g, pipe, _| {
                    axum::Json(pipeline_json(g, pipe, true)).into_response()
                })
            }
            ("GET", ["projects", id, "pipelines", pid, "jobs"]) => {
                self.with_pipeline(id, pid, actor, |g, pipe, _| {
                    let jobs: Vec<Value> = g
                        .jobs
                        .iter()
                        .filter(|j| j.pipeline == pipe.id && !j.bridge)
                        .map(|j| job_json(g, j))
                        .collect();
                    paginate(&g.base_url, path, &q, jobs)
                })
            }
            ("GET", ["projects", id, "pipelines", pid, "bridges"]) => {
                self.with_pipeline(id, pid, actor, |g, pipe, _| {
                    let bridges: Vec<Value> = g
                        .jobs
                        .iter()
                        .filter(|j| j.pipeline == pipe.id && j.bridge)
                        .map(|j| job_json(g, j))
                        .collect();
                    paginate(&g.base_url, path, &q, bridges)
                })
            }
            ("POST", ["projects", id, "pipelines", pid, "cancel"]) => self.cancel(actor, id, pid),
            ("GET", ["projects", id, "jobs", jid]) => self.with_job(id, jid, actor, |g, j, _| {
                axum::Json(job_json(g, j)).into_response()
            }),
            ("GET", ["projects", id, "jobs", jid, "trace"]) => {
                self.with_job(id, jid, actor, |_, j, _| {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; charset=utf-8",
                        )],
                        j.trace.clone(),
                    )
                        .into_response()
                })
            }
            ("POST", ["projects", id, "jobs", jid, "play"]) => {
                // GitLab's order: the job (404), `authorize!(:play_job)` (403: Developer+,
                // and push access when the ref is protected), then `playable?` (400).
                let job = self.with_job(id, jid, actor, |g, j, access| {
                    let git_ref = g
                        .pipelines
                        .iter()
                        .find(|x| x.id == j.pipeline)
                        .map(|x| x.git_ref.clone())
                        .unwrap_or_default();
                    if access < 30 || !g.can_update_branch(actor, j.project, &git_ref) {
                        message(403, "403 Forbidden")
                    } else if j.status == Status::Manual {
                        StatusCode::OK.into_response()
                    } else {
                        message(400, "400 Bad request - Unplayable Job")
                    }
                });
                if job.status() != StatusCode::OK {
                    return job;
                }
                let jid: u64 = jid.parse().unwrap_or(0);
                let who = self.lock().actor_info(actor);
                self.play_job_as(jid, Some(who));
                let g = self.lock();
                match g.jobs.iter().find(|j| j.id == jid) {
                    Some(j) => axum::Json(job_json(&g, j)).into_response(),
                    None => not_found("Job"),
                }
            }
            ("GET", ["projects", id, "hooks"]) => self.with_project(id, actor, |g, p, access| {
                // `authorize! :admin_project` (Maintainer+).
                if access < 40 {
                    return message(403, "403 Forbidden");
                }
                let hooks: Vec<Value> = g
                    .hooks
                    .iter()
                    .filter(|(pid, _, _)| *pid == p.id)
                    .map(|(_, h, _)| hook_json(h, p.id))
                    .collect();
                paginate(&g.base_url, path, &q, hooks)
            }),
            ("POST", ["projects", id, "hooks"]) => self.put_hook(actor, id, None, body),
            ("PUT", ["projects", id, "hooks", hid]) => {
                self.put_hook(actor, id, Some(hid.parse().unwrap_or(0)), body)
            }
            _ => message(404, "404 Not Found"),
        }
    }

    /// The project as `actor` sees it, with their access level: every project is private, so
    /// a non-member gets 404 `{"message":"404 Project Not Found"}`, as on GitLab.
    fn find_project<'a>(
        g: &'a State,
        id: &str,
        actor: Actor,
    ) -> Result<(&'a StandinProject, u32), Refusal> {
        let Some(p) = g
            .projects
            .iter()
            .find(|p| p.id.to_string() == id || p.path == id)
        else {
            return Err(Refusal::ProjectNotFound);
        };
        match g.access(actor, p.id) {
            0 => Err(Refusal::ProjectNotFound),
            access => Ok((p, access)),
        }
    }

    fn with_project(
        &self,
        id: &str,
        actor: Actor,
        f: impl FnOnce(&State, &StandinProject, u32) -> Response,
    ) -> Response {
        let g = self.lock();
        match Self::find_project(&g, id, actor) {
            Ok((p, access)) => f(&g, p, access),
            Err(refusal) => refusal.response(),
        }
    }

    fn with_pipeline(
        &self,
        id: &str,
        pid: &str,
        actor: Actor,
        f: impl FnOnce(&State, &StandinPipeline, u32) -> Response,
    ) -> Response {
        let g = self.lock();
        let (p, access) = match Self::find_project(&g, id, actor) {
            Ok(found) => found,
            Err(refusal) => return refusal.response(),
        };
        match g
            .pipelines
            .iter()
            .find(|x| x.project == p.id && x.id.to_string() == pid)
        {
            Some(pipe) => f(&g, pipe, access),
            None => message(404, "404 Not found"),
        }
    }

    fn with_job(
        &self,
        id: &str,
        jid: &str,
        actor: Actor,
        f: impl FnOnce(&State, &StandinJob, u32) -> Response,
    ) -> Response {
        let g = self.lock();
        let (p, access) = match Self::find_project(&g, id, actor) {
            Ok(found) => found,
            Err(refusal) => return refusal.response(),
        };
        match g
            .jobs
            .iter()
            .find(|j| j.project == p.id && j.id.to_string() == jid)
        {
            Some(j) => f(&g, j, access),
            None => message(404, "404 Not found"),
        }
    }

    fn users(&self, q: &HashMap<String, String>) -> Response {
        let g = self.lock();
        let users: Vec<Value> = g
            .users
            .iter()
            .filter(|u| {
                q.get("username")
                    .is_none_or(|n| u.username.eq_ignore_ascii_case(n))
            })
            .map(|u| {
                json!({
                    "id": u.id,
                    "username": u.username,
                    "name": u.name,
                    "state": u.state,
                    "locked": u.state == "blocked",
                    "avatar_url": null,
                    "web_url": format!("{}/{}", g.base_url, u.username)
                })
            })
            .collect();
        axum::Json(users).into_response()
    }

    /// `POST /projects/:id/pipeline` as `actor`: GitLab's `authorize! :create_pipeline` (403
    /// below Developer), then `Ci::CreatePipelineService`'s chain: variables
    /// (`Build::Associations`), the protected ref (`Validate::Abilities`), the ref's existence
    /// (`Validate::Repository`), the configuration.
    fn create_pipeline(&self, actor: Actor, id: &str, body: &Bytes) -> Response {
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return message(400, "400 Bad request - ref is missing");
        };
        let Some(git_ref) = req["ref"].as_str().map(str::to_owned) else {
            return json_error(400, "ref is missing");
        };
        let mut variables = Vec::new();
        if let Some(vars) = req["variables"].as_array() {
            for v in vars {
                match (v["key"].as_str(), v["value"].as_str()) {
                    (Some(k), Some(val)) if !k.is_empty() => {
                        variables.push((k.to_owned(), val.to_owned()))
                    }
                    _ => return message(400, json!({"variables.key": ["is invalid"]})),
                }
            }
        }
        let run = {
            let mut g = self.lock();
            let (p, access) = match Self::find_project(&g, id, actor) {
                Ok((p, access)) => (p.clone(), access),
                Err(refusal) => return refusal.response(),
            };
            if access < 30 {
                return message(403, "403 Forbidden");
            }
            // GitLab checks this before the ref and the configuration
            // (`Chain::Build::Associations`), and answers with the pipeline's base error.
            if !variables.is_empty() && !variables_allowed(&p.variables_role, access) {
                return message(
                    400,
                    json!({"base": ["Insufficient permissions to set pipeline variables"]}),
                );
            }
            // Only the default branch exists; a missing ref passes this check and fails the
            // next one, as on GitLab.
            if git_ref == p.default_branch && !g.can_update_branch(actor, p.id, &git_ref) {
                return message(
                    400,
                    json!({"base": [format!(
                        "You do not have sufficient permission to run a pipeline on '{git_ref}'. \
                         Please select a different branch or contact your administrator for \
                         assistance."
                    )]}),
                );
            }
            if git_ref != p.default_branch {
                return message(400, json!({"base": ["Reference not found"]}));
            }
            let own = p
                .planner
                .as_ref()
                .map(|pl| pl.0.plan(&p, &git_ref, &variables));
            let joining: Vec<PlannedJob> = match (own, g.planner.clone()) {
                (Some(Ok(jobs)), _) => jobs,
                (Some(Err(m)), _) => return message(400, json!({"base": [m]})),
                (None, planner) => match planner {
                    Some(planner) => match planner.plan(&p, &git_ref, &variables) {
                        Ok(jobs) => jobs,
                        Err(m) => return message(400, json!({"base": [m]})),
                    },
                    None => {
                        let ci_jobs = match &p.ci {
                            CiDefinition::Valid(j) => j.clone(),
                            CiDefinition::Invalid(errors) => {
                                return message(400, json!({"base": errors}))
                            }
                        };
                        let wanted = variables
                            .iter()
                            .find(|(k, _)| k == "CHATOPS_JOB")
                            .map(|(_, v)| v.clone());
                        ci_jobs
                            .into_iter()
                            .filter(|j| match j.rule {
                                JoinRule::ChatopsRule => wanted.as_deref() == Some(j.name.as_str()),
                                JoinRule::Always => true,
                                JoinRule::OnlyChat => false,
                            })
                            .map(|j| PlannedJob {
                                bridge: j.trigger.is_some(),
                                name: j.name,
                                stage: j.stage,
                                manual: j.when_manual,
                                script: j.script,
                            })
                            .collect()
                    }
                },
            };
            if joining.is_empty() {
                return message(
                    400,
                    json!({"base": ["Pipeline will not run for the selected trigger. The rules configuration prevented any jobs from being added to the pipeline."]}),
                );
            }
            g.next_pipeline += 1;
            let pid = g.next_pipeline;
            let iid = g.pipelines.iter().filter(|x| x.project == p.id).count() as u64 + 1;
            let t = now();
            g.pipelines.push(StandinPipeline {
                id: pid,
                iid,
                project: p.id,
                git_ref,
                status: Status::Created,
                variables,
                created_at: t,
            });
            let creator = g.actor_info(actor);
            g.creators.insert(pid, creator);
            let mut to_run = Vec::new();
            for cj in joining {
                g.next_job += 1;
                let jid = g.next_job;
                g.jobs.push(StandinJob {
                    id: jid,
                    project: p.id,
                    pipeline: pid,
                    name: cj.name.clone(),
                    stage: cj.stage.clone(),
                    status: if cj.manual {
                        Status::Manual
                    } else {
                        Status::Pending
                    },
                    manual: cj.manual,
                    script: cj.script.clone(),
                    trace: Vec::new(),
                    created_at: t,
                    started_at: None,
                    finished_at: None,
                    bridge: cj.bridge,
                });
                if !cj.manual && !cj.bridge {
                    to_run.push(jid);
                }
            }
            derive_pipeline_status(&mut g, pid);
            let runs: Vec<_> = to_run.iter().filter_map(|j| exec_job(&g, *j)).collect();
            let pipe = g.pipelines.iter().find(|x| x.id == pid).cloned();
            let resp = match pipe {
                Some(pipe) => (
                    StatusCode::CREATED,
                    axum::Json(pipeline_json(&g, &pipe, true)),
                )
                    .into_response(),
                None => message(500, "500 Internal Server Error"),
            };
            (resp, runs)
        };
        let (resp, runs) = run;
        for (exec, ej) in runs {
            self.spawn_run(exec, ej);
        }
        resp
    }

    /// `POST …/pipelines/:pid/cancel` as `actor`: `authorize! :cancel_pipeline` (Developer+,
    /// and push access when the ref is protected: `PipelinePolicy`'s `protected_ref`).
    fn cancel(&self, actor: Actor, id: &str, pid: &str) -> Response {
        let mut g = self.lock();
        let (p, access) = match Self::find_project(&g, id, actor) {
            Ok((p, access)) => (p.clone(), access),
            Err(refusal) => return refusal.response(),
        };
        let Some((pipe_id, git_ref)) = g
            .pipelines
            .iter()
            .find(|x| x.project == p.id && x.id.to_string() == pid)
            .map(|x| (x.id, x.git_ref.clone()))
        else {
            return message(404, "404 Not found");
        };
        if access < 30 || !g.can_update_branch(actor, p.id, &git_ref) {
            return message(403, "403 Forbidden");
        }
        let canceller = g.actor_info(actor);
        g.cancellers.insert(pipe_id, canceller);
        let t = now();
        let mut cancelled = Vec::new();
        for j in g.jobs.iter_mut().filter(|j| j.pipeline == pipe_id) {
            if !j.status.is_final() {
                j.status = Status::Canceled;
                j.finished_at = Some(t);
                cancelled.push(j.id);
            }
        }
        derive_pipeline_status(&mut g, pipe_id);
        let resp = match g.pipelines.iter().find(|x| x.id == pipe_id) {
            Some(pipe) => axum::Json(pipeline_json(&g, pipe, true)).into_response(),
            None => message(404, "404 Not found"),
        };
        if g.webhook.is_some() && !cancelled.is_empty() {
            // GitLab sends the Job and Pipeline hooks of a cancel like those of any end.
            let h = self.clone();
            tokio::spawn(async move {
                for job in cancelled {
                    if let Err(e) = h.send_job_hook(job).await {
                        tracing::warn!(error = %e, "stand-in job hook not delivered");
                    }
                }
                if let Err(e) = h.send_pipeline_hook(pipe_id).await {
                    tracing::warn!(error = %e, "stand-in pipeline hook not delivered");
                }
            });
        }
        resp
    }

    fn put_hook(&self, actor: Actor, id: &str, existing: Option<u64>, body: &Bytes) -> Response {
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return json_error(400, "url is missing");
        };
        let mut g = self.lock();
        let pid = match Self::find_project(&g, id, actor) {
            Ok((_, access)) if access < 40 => return message(403, "403 Forbidden"),
            Ok((p, _)) => p.id,
            Err(refusal) => return refusal.response(),
        };
        let url = req["url"].as_str().unwrap_or_default().to_owned();
        if url.is_empty() && existing.is_none() {
            return json_error(400, "url is missing");
        }
        let token = req["token"].as_str().unwrap_or_default().to_owned();
        let flag = |k: &str| req[k].as_bool().unwrap_or(false);
        let hook = match existing {
            Some(hid) => {
                let Some(slot) = g
                    .hooks
                    .iter_mut()
                    .find(|(p, h, _)| *p == pid && h.id == hid)
                else {
                    return message(404, "404 Not found");
                };
                if !url.is_empty() {
                    slot.1.url = url;
                }
                slot.1.pipeline_events = flag("pipeline_events");
                slot.1.job_events = flag("job_events");
                if !token.is_empty() {
                    slot.2 = token;
                }
                slot.1.clone()
            }
            None => {
                g.next_hook += 1;
                let h = chatops_core::gitlab::Hook {
                    id: g.next_hook,
                    url,
                    pipeline_events: flag("pipeline_events"),
                    job_events: flag("job_events"),
                };
                g.hooks.push((pid, h.clone(), token));
                h
            }
        };
        let status = if existing.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        (status, axum::Json(hook_json(&hook, pid))).into_response()
    }

    /// `PUT /projects/:id`: the stand-in keeps `ci_pipeline_variables_minimum_override_role`
    /// (JSON, form or query parameters, as Grape reads them), with GitLab's rules: Maintainer
    /// or more (else 403); only an Owner may set `owner` or change it away from `owner`
    /// (400 with GitLab's message); an unknown value is a 400 naming the parameter.
    fn update_project(
        &self,
        actor: Actor,
        id: &str,
        query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Response {
        let is_json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let mut params: HashMap<String, String> = query_map(query);
        if is_json {
            if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
                for (k, v) in m {
                    let v = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    params.insert(k, v);
                }
            }
        } else {
            params.extend(query_map(&String::from_utf8_lossy(body)));
        }
        let mut g = self.lock();
        let access = match Self::find_project(&g, id, actor) {
            Ok((_, access)) => access,
            Err(refusal) => return refusal.response(),
        };
        let base = g.base_url.clone();
        let Some(p) = g
            .projects
            .iter_mut()
            .find(|p| p.id.to_string() == id || p.path == id)
        else {
            return not_found("Project");
        };
        if access < 40 {
            return message(403, "403 Forbidden");
        }
        let Some(role) = params.get("ci_pipeline_variables_minimum_override_role") else {
            return json_error(
                400,
                "name, description, ci_pipeline_variables_minimum_override_role, ... are \
                 missing, at least one parameter must be provided",
            );
        };
        if !VARIABLES_ROLES.contains(&role.as_str()) {
            return json_error(
                400,
                "ci_pipeline_variables_minimum_override_role does not have a valid value",
            );
        }
        if role == "owner" && access < 50 {
            return message(
                400,
                "Changing the ci_pipeline_variables_minimum_override_role to the owner role is \
                 not allowed",
            );
        }
        if p.variables_role == "owner" && access < 50 {
            return message(
                400,
                "Changing the restrict_user_defined_variables or \
                 ci_pipeline_variables_minimum_override_role is not allowed",
            );
        }
        p.variables_role = role.clone();
        axum::Json(project_json(&base, p, access)).into_response()
    }

    /// Hooks with their secret tokens (what `chatops gitlab setup` configured).
    pub fn hooks(&self) -> Vec<(u64, chatops_core::gitlab::Hook, String)> {
        self.lock().hooks.clone()
    }
}

fn json_error(status: u16, error: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (code, axum::Json(json!({ "error": error }))).into_response()
}

fn exec_job(g: &State, job: u64) -> Option<(Arc<dyn JobExecutor>, ExecJob)> {
    let exec = g.executor.clone()?;
    let j = g.jobs.iter().find(|j| j.id == job)?;
    let p = g.projects.iter().find(|p| p.id == j.project)?;
    let pipe = g.pipelines.iter().find(|x| x.id == j.pipeline)?;
    let script = j.script.clone();
    let mut variables = pipe.variables.clone();
    variables.extend([
        ("CI".to_owned(), "true".to_owned()),
        ("GITLAB_CI".to_owned(), "true".to_owned()),
        ("CI_JOB_ID".to_owned(), j.id.to_string()),
        ("CI_JOB_NAME".to_owned(), j.name.clone()),
        ("CI_JOB_STAGE".to_owned(), j.stage.clone()),
        ("CI_PIPELINE_ID".to_owned(), pipe.id.to_string()),
        ("CI_PIPELINE_SOURCE".to_owned(), "api".to_owned()),
        ("CI_PROJECT_ID".to_owned(), p.id.to_string()),
        ("CI_PROJECT_PATH".to_owned(), p.path.clone()),
        ("CI_COMMIT_REF_NAME".to_owned(), pipe.git_ref.clone()),
        ("CI_DEFAULT_BRANCH".to_owned(), p.default_branch.clone()),
    ]);
    Some((
        exec,
        ExecJob {
            project_id: p.id,
            project_path: p.path.clone(),
            pipeline_id: pipe.id,
            job_id: j.id,
            name: j.name.clone(),
            script,
            variables,
        },
    ))
}

/// A pipeline's status from its jobs, as GitLab composes it.
fn derive_pipeline_status(g: &mut State, pipeline: u64) {
    let statuses: Vec<Status> = g
        .jobs
        .iter()
        .filter(|j| j.pipeline == pipeline)
        .map(|j| j.status)
        .collect();
    let any = |s: Status| statuses.contains(&s);
    let status = if statuses.is_empty() {
        Status::Created
    } else if any(Status::Running) {
        Status::Running
    } else if any(Status::Pending) || any(Status::Preparing) {
        Status::Pending
    } else if any(Status::Manual)
        && statuses
            .iter()
            .all(|s| s.is_final() || *s == Status::Manual)
    {
        if any(Status::Failed) {
            Status::Failed
        } else {
            Status::Manual
        }
    } else if any(Status::Failed) {
        Status::Failed
    } else if any(Status::Canceled) {
        Status::Canceled
    } else if statuses.iter().all(|s| *s == Status::Skipped) {
        Status::Skipped
    } else if statuses.iter().all(|s| s.is_final()) {
        Status::Success
    } else {
        Status::Created
    };
    if let Some(p) = g.pipelines.iter_mut().find(|p| p.id == pipeline) {
        p.status = status;
    }
}

/// `GET /projects/:id` as the caller sees it: `permissions` always, the CI/CD
/// settings only for Maintainers and Owners (`admin_project`), as GitLab's entity does.
fn project_json(base: &str, p: &StandinProject, access: u32) -> Value {
    let name = p.path.rsplit('/').next().unwrap_or(&p.path);
    let mut v = json!({
        "id": p.id,
        "name": name,
        "path": name,
        "path_with_namespace": p.path,
        "default_branch": p.default_branch,
        "web_url": format!("{base}/{}", p.path),
        "visibility": "private",
        "permissions": {
            "project_access": {"access_level": access, "notification_level": 3},
            "group_access": null
        }
    });
    if access >= 40 {
        v["restrict_user_defined_variables"] = json!(true);
        v["ci_pipeline_variables_minimum_override_role"] = json!(p.variables_role);
    }
    v
}

/// Whether a user with `access` may pass pipeline variables under `role` (GitLab's
/// `set_pipeline_variables` policy with `restrict_user_defined_variables` on).
fn variables_allowed(role: &str, access: u32) -> bool {
    match role {
        "no_one_allowed" => false,
        "developer" => access >= 30,
        "owner" => access >= 50,
        _ => access >= 40,
    }
}

const VARIABLES_ROLES: &[&str] = &["no_one_allowed", "developer", "maintainer", "owner"];

/// The YAML a job list stands for (`ci/lint`'s `merged_yaml` when no file was given): the
/// contract rule, no rules (joins everything), or `only: [chat]`.
fn merged_yaml_of(jobs: &[StandinCiJob]) -> String {
    let mut stages: Vec<String> = Vec::new();
    for j in jobs {
        if !stages.contains(&j.stage) {
            stages.push(j.stage.clone());
        }
    }
    let mut root = serde_yaml::Mapping::new();
    root.insert(
        "stages".into(),
        serde_yaml::to_value(&stages).unwrap_or_default(),
    );
    for j in jobs {
        let mut m = serde_yaml::Mapping::new();
        m.insert("stage".into(), j.stage.clone().into());
        match j.rule {
            JoinRule::ChatopsRule => {
                let mut rule = serde_yaml::Mapping::new();
                rule.insert("if".into(), "$CHATOPS_JOB == $CI_JOB_NAME".into());
                if j.when_manual {
                    rule.insert("when".into(), "manual".into());
                }
                m.insert(
                    "rules".into(),
                    vec![serde_yaml::Value::Mapping(rule)].into(),
                );
            }
            JoinRule::Always => {
                if j.when_manual {
                    m.insert("when".into(), "manual".into());
                }
            }
            JoinRule::OnlyChat => {
                m.insert("only".into(), vec!["chat"].into());
            }
        }
        if j.except_chat && j.rule != JoinRule::ChatopsRule {
            m.insert("except".into(), vec!["chat"].into());
        }
        match &j.trigger {
            Some(downstream) => {
                m.insert("trigger".into(), downstream.clone().into());
            }
            None => {
                m.insert(
                    "script".into(),
                    serde_yaml::to_value(&j.script).unwrap_or_default(),
                );
            }
        }
        root.insert(j.name.clone().into(), serde_yaml::Value::Mapping(m));
    }
    serde_yaml::to_string(&root).unwrap_or_default()
}

/// Who created the pipeline (the bot when no creator was recorded).
fn pipeline_user(g: &State, pipeline: u64) -> ActorInfo {
    g.creators
        .get(&pipeline)
        .cloned()
        .unwrap_or_else(ActorInfo::bot)
}

/// A job's `user`: who played it, else who created its pipeline (GitLab sets `user` on play).
fn job_user(g: &State, j: &StandinJob) -> ActorInfo {
    g.players
        .get(&j.id)
        .cloned()
        .unwrap_or_else(|| pipeline_user(g, j.pipeline))
}

/// The `user` of Job and Pipeline hooks (GitLab redacts the email).
fn hook_user(who: &ActorInfo) -> Value {
    json!({
        "id": who.id,
        "name": who.name,
        "username": who.username,
        "avatar_url": null,
        "email": "[REDACTED]"
    })
}

/// `GET /user`: the authenticated user (GitLab's `UserPublic` entity, the fields that matter).
fn current_user_json(g: &State, actor: Actor) -> Value {
    let who = g.actor_info(actor);
    let mut v = g.user_basic_json(&who);
    v["created_at"] = json!("2024-01-01T00:00:00.000Z");
    v["bio"] = json!("");
    v["public_email"] = Value::Null;
    v["email"] = json!(format!("{}@example.com", who.username));
    v["bot"] = json!(actor == Actor::Bot);
    v["two_factor_enabled"] = json!(false);
    v["external"] = json!(false);
    v["private_profile"] = json!(false);
    v
}

/// A pipeline as the API shows it: `detailed` (`GET …/pipelines/:id`, create, cancel) is
/// GitLab's `Ci::Pipeline` entity with `user`; lists use `PipelineBasic`, without.
fn pipeline_json(g: &State, pipe: &StandinPipeline, detailed: bool) -> Value {
    let path = g
        .projects
        .iter()
        .find(|p| p.id == pipe.project)
        .map(|p| p.path.clone())
        .unwrap_or_default();
    let mut v = json!({
        "id": pipe.id,
        "iid": pipe.iid,
        "project_id": pipe.project,
        "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
        "ref": pipe.git_ref,
        "status": status_str(pipe.status),
        "source": "api",
        "created_at": iso8601(pipe.created_at),
        "updated_at": iso8601(now()),
        "web_url": format!("{}/{path}/-/pipelines/{}", g.base_url, pipe.id)
    });
    if detailed {
        v["user"] = g.user_basic_json(&pipeline_user(g, pipe.id));
    }
    v
}

fn job_json(g: &State, j: &StandinJob) -> Value {
    let path = g
        .projects
        .iter()
        .find(|p| p.id == j.project)
        .map(|p| p.path.clone())
        .unwrap_or_default();
    let duration = match (j.started_at, j.finished_at) {
        (Some(s), Some(f)) => json!((f - s) as f64),
        _ => Value::Null,
    };
    json!({
        "id": j.id,
        "name": j.name,
        "stage": j.stage,
        "status": status_str(j.status),
        "ref": "main",
        "allow_failure": false,
        "created_at": iso8601(j.created_at),
        "started_at": j.started_at.map(iso8601),
        "finished_at": j.finished_at.map(iso8601),
        "duration": duration,
        "failure_reason": if j.status == Status::Failed { Some("script_failure") } else { None },
        "pipeline": {"id": j.pipeline, "project_id": j.project},
        "user": g.user_basic_json(&job_user(g, j)),
        "web_url": format!("{}/{path}/-/jobs/{}", g.base_url, j.id)
    })
}

fn hook_json(h: &chatops_core::gitlab::Hook, project: u64) -> Value {
    json!({
        "id": h.id,
        "url": h.url,
        "project_id": project,
        "pipeline_events": h.pipeline_events,
        "job_events": h.job_events,
        "push_events": false,
        "enable_ssl_verification": true
    })
}

/// One page of `items`, with GitLab's pagination headers.
fn paginate(base: &str, path: &str, q: &HashMap<String, String>, items: Vec<Value>) -> Response {
    let per_page = q
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page = q
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut resp = axum::Json(slice).into_response();
    let h = resp.headers_mut();
    let next = if page < pages {
        (page + 1).to_string()
    } else {
        String::new()
    };
    let prev = if page > 1 {
        (page - 1).to_string()
    } else {
        String::new()
    };
    let link_to = |p: usize| {
        let mut params: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| *k != "page" && *k != "per_page")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.sort();
        params.push(("page".into(), p.to_string()));
        params.push(("per_page".into(), per_page.to_string()));
        let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
        format!("<{base}{path}?{qs}>")
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
    }
    if page < pages {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
    }
    links.push(format!("{}; rel=\"first\"", link_to(1)));
    links.push(format!("{}; rel=\"last\"", link_to(pages)));
    for (k, v) in [
        ("X-Page", page.to_string()),
        ("X-Per-Page", per_page.to_string()),
        ("X-Next-Page", next),
        ("X-Prev-Page", prev),
        ("X-Total", total.to_string()),
        ("X-Total-Pages", pages.to_string()),
        ("Link", links.join(", ")),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_matches_known_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_580_393_717), "2020-01-30T14:15:17.000Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
    }
}
