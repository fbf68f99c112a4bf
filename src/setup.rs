//! `chatops gitlab setup --webhook-url <url> [--fix-variables-role]`: the GitLab half of a
//! deployment, for every project commands can reach (`GITLAB_PROJECT` and each project of
//! `CHANNEL_PROJECTS`, each once). Per project it checks that the token can read the project
//! and manage its webhooks, then creates the project webhook that feeds the completion
//! function (pipeline and job events, secret token, no push events), or updates the one
//! already pointing at the same URL, so running it again is safe. Then it checks "Minimum
//! role to use pipeline variables" against the token's role: every chat pipeline carries
//! variables, so a role above the token's (GitLab.com's default for new projects is "No one
//! allowed") refuses every command. With `--fix-variables-role` (the administrator's consent)
//! it sets the role to Developer (`PUT /projects/:id`); without, it says what to change.
//!
//! Reads `GITLAB_URL` (default gitlab.com), `GITLAB_TOKEN`, `GITLAB_PROJECT`,
//! `CHANNEL_PROJECTS`, `GITLAB_WEBHOOK_SECRET`; each secret may instead be given as
//! `NAME_PARAM`, an SSM parameter name, like the functions read it.

use chatops_adapters::aws::{sdk_config, SsmSecrets};
use chatops_adapters::gitlab::GitLabClient;
use chatops_core::config::{ConfigError, Env, NoSecrets, SecretSource};
use chatops_core::gitlab::{AccessLevel, GitLab, GitLabError, Hook, Project, VariablesRole};
use chatops_core::ids::ProjectRef;
use chatops_core::secret::Secret;
use std::fmt;

/// The path the completion function serves GitLab webhooks on.
pub use chatops_core::completion::WEBHOOK_PATH;

/// What `chatops gitlab setup` needs.
pub struct SetupConfig {
    pub gitlab_url: String,
    pub token: Secret,
    /// Every project commands can reach: `GITLAB_PROJECT`, then `CHANNEL_PROJECTS`'.
    pub projects: Vec<ProjectRef>,
    pub webhook_secret: Secret,
}

impl SetupConfig {
    pub const ENV: &'static [&'static str] = &[
        "GITLAB_URL",
        "GITLAB_TOKEN",
        "GITLAB_TOKEN_PARAM",
        "GITLAB_PROJECT",
        "CHANNEL_PROJECTS",
        "GITLAB_WEBHOOK_SECRET",
        "GITLAB_WEBHOOK_SECRET_PARAM",
    ];

    pub async fn from_env(env: &Env, secrets: &dyn SecretSource) -> Result<Self, ConfigError> {
        Ok(Self {
            gitlab_url: env.or("GITLAB_URL", chatops_core::gitlab::DEFAULT_GITLAB_URL),
            token: env.required_secret("GITLAB_TOKEN", secrets).await?,
            projects: crate::check::routed_projects(env)?,
            webhook_secret: env
                .required_secret("GITLAB_WEBHOOK_SECRET", secrets)
                .await?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the webhook URL {0:?} is not usable: {1}")]
    BadUrl(String, &'static str),
    #[error("GITLAB_WEBHOOK_SECRET is empty: GitLab would send webhooks without a secret")]
    EmptySecret,
    #[error(
        "project {project} was not found, or the token cannot see it: check GITLAB_PROJECT \
         (numeric id or group/project path) and GITLAB_URL ({detail})"
    )]
    ProjectNotFound { project: String, detail: String },
    #[error(
        "GitLab refused the token: it may be expired or revoked, or lack the `api` scope \
         ({0})"
    )]
    TokenRefused(String),
    #[error(
        "the token can read {project} but cannot manage its webhooks: give its user the \
         Maintainer role (or more) on the project and the token the `api` scope ({detail})"
    )]
    NoHookAccess { project: String, detail: String },
    #[error("GitLab did not keep the webhook's pipeline events (hook {0})")]
    EventsNotKept(u64),
    #[error(transparent)]
    GitLab(#[from] GitLabError),
}

/// Whether the hook was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    Created,
    Updated,
}

/// What `setup` did.
#[derive(Debug, Clone)]
pub struct SetupReport {
    pub project: Project,
    pub action: HookAction,
    pub hook: Hook,
    /// Hooks of the project pointing elsewhere (left alone).
    pub other_hooks: usize,
    pub warnings: Vec<String>,
}

impl fmt::Display for SetupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "GitLab project {} (id {}): the token can read it and manage its webhooks.",
            self.project.path_with_namespace, self.project.id
        )?;
        let verb = match self.action {
            HookAction::Created => "Created",
            HookAction::Updated => "Updated",
        };
        writeln!(
            f,
            "{verb} webhook {} -> {}\n  pipeline events: on, job events: on, push events: off, \
             secret token: set, SSL verification: on",
            self.hook.id, self.hook.url
        )?;
        if self.other_hooks > 0 {
            writeln!(
                f,
                "Left alone: {} other webhook(s) of the project pointing elsewhere.",
                self.other_hooks
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Check the URL before GitLab does: GitLab answers a bad one with a terse 422.
fn check_url(url: &str) -> Result<Vec<String>, SetupError> {
    let bad = |why| Err(SetupError::BadUrl(url.to_owned(), why));
    let Ok(parsed) = url.parse::<http::Uri>() else {
        return bad("not a URL");
    };
    let host = parsed.host().unwrap_or_default();
    match parsed.scheme_str() {
        Some("https") => {}
        // Plain HTTP only for the local mode and tests on this machine.
        Some("http") if host == "127.0.0.1" || host == "localhost" || host == "[::1]" => {}
        Some("http") => return bad("use https (GitLab would send the secret token in clear)"),
        _ => return bad("it must start with https://"),
    }
    if host.is_empty() {
        return bad("it has no host");
    }
    let mut warnings = Vec::new();
    if !parsed.path().ends_with(WEBHOOK_PATH) {
        warnings.push(format!(
            "the URL does not end in {WEBHOOK_PATH}: the completion function only answers \
             there (use the stack's GitLabWebhookUrl output)"
        ));
    }
    Ok(warnings)
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Create or update the project webhook at `webhook_url` with `secret` as its token.
pub async fn setup(
    gitlab: &dyn GitLab,
    project: &ProjectRef,
    webhook_url: &str,
    secret: &Secret,
) -> Result<SetupReport, SetupError> {
    let webhook_url = webhook_url.trim();
    let mut warnings = check_url(webhook_url)?;
    if secret.expose().trim().is_empty() {
        return Err(SetupError::EmptySecret);
    }
    if secret.expose().len() < 16 {
        warnings.push(
            "the webhook secret is shorter than 16 characters: use a random one \
             (openssl rand -hex 32)"
                .to_owned(),
        );
    }

    let found = gitlab.project(project).await.map_err(|e| match e {
        GitLabError::NotFound(detail) => SetupError::ProjectNotFound {
            project: project.to_string(),
            detail,
        },
        GitLabError::Unauthorized(detail) => SetupError::TokenRefused(detail),
        other => SetupError::GitLab(other),
    })?;

    // Listing hooks needs the same rights as changing them (Maintainer), so this is the
    // access check, done before anything is written.
    let hooks = gitlab.hooks(found.id).await.map_err(|e| match e {
        GitLabError::Unauthorized(detail)
        | GitLabError::Forbidden(detail)
        | GitLabError::NotFound(detail) => SetupError::NoHookAccess {
            project: found.path_with_namespace.clone(),
            detail,
        },
        other => SetupError::GitLab(other),
    })?;
    let existing = hooks.iter().find(|h| same_url(&h.url, webhook_url));
    let other_hooks = hooks.len() - usize::from(existing.is_some());
    let action = match existing {
        Some(_) => HookAction::Updated,
        None => HookAction::Created,
    };

    let hook = gitlab
        .put_hook(
            found.id,
            existing.map(|h| h.id),
            webhook_url,
            secret.expose(),
        )
        .await
        .map_err(|e| match e {
            GitLabError::Unauthorized(detail) | GitLabError::Forbidden(detail) => {
                SetupError::NoHookAccess {
                    project: found.path_with_namespace.clone(),
                    detail,
                }
            }
            other => SetupError::GitLab(other),
        })?;
    if !hook.pipeline_events {
        return Err(SetupError::EventsNotKept(hook.id));
    }
    Ok(SetupReport {
        project: found,
        action,
        hook,
        other_hooks,
        warnings,
    })
}

/// "Minimum role to use pipeline variables" on one project, after `setup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariablesOutcome {
    /// The token's role reaches the minimum role: nothing to do.
    Allowed {
        role: VariablesRole,
        token: Option<AccessLevel>,
    },
    /// The project does not restrict pipeline variables, or this GitLab has no such setting.
    Unrestricted,
    /// Changed to Developer (`--fix-variables-role`, or a yes at `chatops deploy`'s question).
    Changed { from: String },
    /// Refused today, left alone (no `--fix-variables-role`).
    MustChange {
        current: String,
        token: Option<AccessLevel>,
    },
    /// `--fix-variables-role` was given, and GitLab refused the change.
    ChangeRefused { current: String, detail: String },
    /// GitLab did not show the setting (the token is below Maintainer).
    Unreadable { detail: String },
}

impl VariablesOutcome {
    /// Chat commands will pass GitLab's pipeline-variables check.
    pub fn ok(&self) -> bool {
        matches!(
            self,
            VariablesOutcome::Allowed { .. }
                | VariablesOutcome::Unrestricted
                | VariablesOutcome::Changed { .. }
        )
    }
}

fn access_name(a: Option<AccessLevel>) -> String {
    match a.map(|a| a.0) {
        Some(30) => "Developer".into(),
        Some(40) => "Maintainer".into(),
        Some(50) => "Owner".into(),
        Some(n) => format!("access level {n}"),
        None => "unknown to GitLab's answer".into(),
    }
}

fn role_label(raw: &str) -> String {
    VariablesRole::parse(raw)
        .map(|r| r.label().to_owned())
        .unwrap_or_else(|| raw.to_owned())
}

impl fmt::Display for VariablesOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SETTING: &str = "\"Minimum role to use pipeline variables\"";
        match self {
            VariablesOutcome::Allowed { role, token } => writeln!(
                f,
                "Pipeline variables: allowed ({SETTING} is {}; the token is {}).",
                role.label(),
                access_name(*token)
            ),
            VariablesOutcome::Unrestricted => writeln!(
                f,
                "Pipeline variables: allowed (the project does not restrict them)."
            ),
            VariablesOutcome::Changed { from } => writeln!(
                f,
                "Pipeline variables: changed {SETTING} from {} to Developer.",
                role_label(from)
            ),
            VariablesOutcome::MustChange { current, token } => writeln!(
                f,
                "Pipeline variables: REFUSED: {SETTING} is {}, above the token's role ({}), so \
                 GitLab refuses every chat pipeline (\"Insufficient permissions to set pipeline \
                 variables\"). Left as it is. Change it to Developer in Settings > CI/CD > \
                 Variables (a Maintainer can; an Owner when it is Owner), or run this again \
                 with --fix-variables-role.",
                role_label(current),
                access_name(*token)
            ),
            VariablesOutcome::ChangeRefused { current, detail } => writeln!(
                f,
                "Pipeline variables: NOT changed: GitLab refused to set {SETTING} to Developer \
                 ({detail}); it is still {}. An Owner of the project must change it in \
                 Settings > CI/CD > Variables.",
                role_label(current)
            ),
            VariablesOutcome::Unreadable { detail } => writeln!(
                f,
                "Pipeline variables: not checked ({detail}): make sure {SETTING} in Settings > \
                 CI/CD > Variables is Developer, or at most the token's role."
            ),
        }
    }
}

/// Check (and with `fix`, set to Developer) the project's minimum role for pipeline
/// variables against the token's role.
pub async fn pipeline_variables(
    gitlab: &dyn GitLab,
    project: &ProjectRef,
    fix: bool,
) -> VariablesOutcome {
    let s = match gitlab.project_settings(project).await {
        Ok(s) => s,
        Err(e) => {
            return VariablesOutcome::Unreadable {
                detail: e.to_string(),
            }
        }
    };
    if s.restrict_user_defined_variables == Some(false) {
        return VariablesOutcome::Unrestricted;
    }
    let current = match (&s.variables_role, &s.variables_role_raw) {
        (Some(role), _) => {
            let allowed = match s.token_access {
                Some(level) => role.allows(level),
                None => *role == VariablesRole::Developer,
            };
            if allowed {
                return VariablesOutcome::Allowed {
                    role: *role,
                    token: s.token_access,
                };
            }
            role.as_str().to_owned()
        }
        (None, Some(raw)) => raw.clone(),
        (None, None) if s.token_access.is_some_and(|t| t < AccessLevel::MAINTAINER) => {
            return VariablesOutcome::Unreadable {
                detail: "GitLab shows the CI/CD settings to Maintainers and Owners only".into(),
            }
        }
        (None, None) => return VariablesOutcome::Unrestricted,
    };
    if !fix {
        return VariablesOutcome::MustChange {
            current,
            token: s.token_access,
        };
    }
    match gitlab
        .set_variables_role(s.project.id, VariablesRole::Developer)
        .await
    {
        Ok(after) if after.variables_role == Some(VariablesRole::Developer) => {
            VariablesOutcome::Changed { from: current }
        }
        Ok(after) => VariablesOutcome::ChangeRefused {
            current: after.variables_role_raw.unwrap_or(current),
            detail: "GitLab answered without applying it".into(),
        },
        Err(e) => VariablesOutcome::ChangeRefused {
            current,
            detail: match e {
                GitLabError::Rejected(m) | GitLabError::Unauthorized(m) => m,
                other => other.to_string(),
            },
        },
    }
}

/// What setup did for one project.
#[derive(Debug)]
pub struct ProjectSetup {
    pub project: ProjectRef,
    pub hook: Result<SetupReport, SetupError>,
    /// None when the hook step failed (the project was not reached).
    pub variables: Option<VariablesOutcome>,
}

impl ProjectSetup {
    pub fn ok(&self) -> bool {
        self.hook.is_ok() && self.variables.as_ref().is_some_and(VariablesOutcome::ok)
    }
}

impl fmt::Display for ProjectSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hook {
            Ok(report) => write!(f, "{report}")?,
            Err(e) => writeln!(f, "GitLab project {}: NOT set up: {e}", self.project)?,
        }
        if let Some(v) = &self.variables {
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// `setup` and the pipeline-variables check for every project, each project once (the same
/// project given by id and by path is set up once).
pub async fn setup_projects(
    gitlab: &dyn GitLab,
    projects: &[ProjectRef],
    webhook_url: &str,
    secret: &Secret,
    fix_variables_role: bool,
) -> Vec<ProjectSetup> {
    let mut out: Vec<ProjectSetup> = Vec::new();
    for project in projects {
        let hook = setup(gitlab, project, webhook_url, secret).await;
        if let Ok(r) = &hook {
            let done = out
                .iter()
                .any(|p| p.hook.as_ref().is_ok_and(|h| h.project.id == r.project.id));
            if done {
                continue;
            }
        }
        let variables = match &hook {
            Ok(r) => Some(
                pipeline_variables(
                    gitlab,
                    &ProjectRef::new(r.project.id.0.to_string()),
                    fix_variables_role,
                )
                .await,
            ),
            Err(_) => None,
        };
        out.push(ProjectSetup {
            project: project.clone(),
            hook,
            variables,
        });
    }
    out
}

/// The CLI: configuration from `env`, a real GitLab client; prints what was done for each
/// project. Returns the exit code (0 every project is ready, 1 GitLab or input trouble or a
/// setting left to change, 2 configuration missing).
pub async fn run_cli(
    env: &Env,
    webhook_url: &str,
    fix_variables_role: bool,
    out: &mut dyn std::io::Write,
) -> i32 {
    // SSM only when a secret is given by reference: an operator's shell usually has the
    // values themselves and maybe no AWS configuration at all.
    let by_reference = ["GITLAB_TOKEN", "GITLAB_WEBHOOK_SECRET"]
        .iter()
        .any(|n| env.get(n).is_none() && env.get(&format!("{n}_PARAM")).is_some());
    let secrets: Box<dyn SecretSource> = if by_reference {
        Box::new(SsmSecrets::new(sdk_config().await))
    } else {
        Box::new(NoSecrets)
    };
    let config = match SetupConfig::from_env(env, secrets.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatops gitlab setup: {e}");
            return 2;
        }
    };
    let client = match GitLabClient::new(&config.gitlab_url, config.token.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatops gitlab setup: {e}");
            return 1;
        }
    };
    // Refuse a bad URL once, before touching any project.
    if let Err(e) = check_url(webhook_url.trim()) {
        eprintln!("chatops gitlab setup: {e}");
        return 1;
    }
    let done = setup_projects(
        &client,
        &config.projects,
        webhook_url,
        &config.webhook_secret,
        fix_variables_role,
    )
    .await;
    let mut code = 0;
    for (i, p) in done.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(out);
        }
        let _ = write!(out, "{p}");
        if !p.ok() {
            code = 1;
        }
    }
    if code != 0 {
        let _ = writeln!(
            out,
            "\nNot everything is set up: see the lines above (chatops gitlab check --project \
             <project> shows what else a project needs)."
        );
    }
    code
}

#[cfg(test)]
mod tests {
    //! Driven through the GitLab HTTP stand-in (its hooks endpoints) with the real client.
    use super::*;
    use chatops_sim::gitlab::{Fault, GitLabStandin};

    const URL: &str = "https://abc.lambda-url.eu-west-1.on.aws/gitlab/webhook";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    async fn standin() -> (GitLabStandin, GitLabClient) {
        let gl = GitLabStandin::start().await;
        gl.state().add_project(42, "ops/deploy");
        let client = GitLabClient::new(&gl.url(), Secret::new(gl.token())).unwrap();
        (gl, client)
    }

    fn project() -> ProjectRef {
        ProjectRef::new("ops/deploy")
    }

    #[tokio::test]
    async fn creates_the_hook_with_events_and_secret() {
        let (gl, client) = standin().await;
        let report = setup(&client, &project(), URL, &Secret::new(SECRET))
            .await
            .unwrap();
        assert_eq!(report.action, HookAction::Created);
        assert_eq!(report.project.id.0, 42);
        let hooks = gl.state().hooks();
        assert_eq!(hooks.len(), 1);
        let (pid, hook, token) = &hooks[0];
        assert_eq!((*pid, hook.url.as_str(), token.as_str()), (42, URL, SECRET));
        assert!(hook.pipeline_events && !hook.job_events);
        let create = gl
            .state()
            .requests()
            .into_iter()
            .find(|r| r.method == "POST" && r.path.ends_with("/hooks"))
            .expect("a POST …/hooks");
        let body = create.json().unwrap();
        assert_eq!(body["push_events"], false);
        assert_eq!(body["enable_ssl_verification"], true);
        let text = report.to_string();
        assert!(
            text.contains("Created webhook") && text.contains("ops/deploy"),
            "{text}"
        );
        assert!(
            !text.contains(SECRET),
            "the report must not print the secret"
        );
    }

    #[tokio::test]
    async fn running_again_updates_the_same_hook() {
        let (gl, client) = standin().await;
        setup(&client, &project(), URL, &Secret::new(SECRET))
            .await
            .unwrap();
        let new_secret = "fedcba9876543210fedcba9876543210";
        let again = setup(&client, &project(), URL, &Secret::new(new_secret))
            .await
            .unwrap();
        assert_eq!(again.action, HookAction::Updated);
        let hooks = gl.state().hooks();
        assert_eq!(hooks.len(), 1, "no second hook");
        assert_eq!(hooks[0].1.id, again.hook.id);
        assert_eq!(hooks[0].2, new_secret, "the secret is rotated");
        assert!(gl
            .state()
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && r.path.ends_with(&format!("/hooks/{}", again.hook.id))));
    }

    #[tokio::test]
    async fn other_hooks_are_left_alone() {
        let (gl, client) = standin().await;
        let other = "https://ci.example.com/hook";
        client
            .put_hook(ProjectId(42), None, other, "x")
            .await
            .unwrap();
        let report = setup(&client, &project(), URL, &Secret::new(SECRET))
            .await
            .unwrap();
        assert_eq!(
            (report.action, report.other_hooks),
            (HookAction::Created, 1)
        );
        let urls: Vec<String> = gl.state().hooks().into_iter().map(|h| h.1.url).collect();
        assert_eq!(urls, vec![other.to_owned(), URL.to_owned()]);
    }

    use chatops_core::ids::ProjectId;

    #[tokio::test]
    async fn unknown_project_is_named() {
        let (_gl, client) = standin().await;
        let err = setup(
            &client,
            &ProjectRef::new("ops/nope"),
            URL,
            &Secret::new(SECRET),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SetupError::ProjectNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("ops/nope"));
    }

    #[tokio::test]
    async fn wrong_token_is_explained() {
        let (gl, _client) = standin().await;
        let client = GitLabClient::new(&gl.url(), Secret::new("glpat-wrong")).unwrap();
        let err = setup(&client, &project(), URL, &Secret::new(SECRET))
            .await
            .unwrap_err();
        assert!(matches!(err, SetupError::TokenRefused(_)), "{err:?}");
        assert!(gl.state().hooks().is_empty());
    }

    #[tokio::test]
    async fn token_without_maintainer_is_told_before_anything_is_written() {
        let (gl, client) = standin().await;
        gl.state().fail_next(Fault::Status(403), 5, Some("/hooks"));
        let err = setup(&client, &project(), URL, &Secret::new(SECRET))
            .await
            .unwrap_err();
        assert!(matches!(err, SetupError::NoHookAccess { .. }), "{err:?}");
        assert!(err.to_string().contains("Maintainer"));
        assert!(!gl.state().requests().iter().any(|r| r.method != "GET"));
    }

    #[tokio::test]
    async fn bad_urls_and_secrets_are_refused_before_any_call() {
        let (gl, client) = standin().await;
        for (url, secret) in [
            ("http://example.com/gitlab/webhook", SECRET),
            ("ftp://example.com/gitlab/webhook", SECRET),
            ("not a url", SECRET),
            (URL, "  "),
        ] {
            let err = setup(&client, &project(), url, &Secret::new(secret))
                .await
                .unwrap_err();
            assert!(
                matches!(err, SetupError::BadUrl(..) | SetupError::EmptySecret),
                "{url}: {err:?}"
            );
        }
        assert!(gl.state().requests().is_empty());
    }

    #[tokio::test]
    async fn odd_path_and_short_secret_warn() {
        let (_gl, client) = standin().await;
        let report = setup(
            &client,
            &project(),
            "https://example.com/hook",
            &Secret::new("short"),
        )
        .await
        .unwrap();
        assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
    }

    #[tokio::test]
    async fn cli_reads_env_and_prints_what_it_did() {
        let (gl, _client) = standin().await;
        let env = Env::from_pairs([
            ("GITLAB_URL", gl.url()),
            ("GITLAB_TOKEN", gl.token()),
            ("GITLAB_PROJECT", "42".to_owned()),
            ("GITLAB_WEBHOOK_SECRET", SECRET.to_owned()),
        ]);
        let mut out = Vec::new();
        assert_eq!(run_cli(&env, URL, false, &mut out).await, 0);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Created webhook 1 -> "), "{text}");
        assert!(text.contains("Pipeline variables: allowed"), "{text}");
        assert_eq!(gl.state().hooks().len(), 1);

        let mut out = Vec::new();
        let missing = Env::from_pairs([("GITLAB_URL", gl.url())]);
        assert_eq!(run_cli(&missing, URL, false, &mut out).await, 2);
        assert!(out.is_empty());
    }

    fn env_for(gl: &GitLabStandin, pairs: &[(&str, &str)]) -> Env {
        let mut env = Env::from_pairs([
            ("GITLAB_URL", gl.url()),
            ("GITLAB_TOKEN", gl.token()),
            ("GITLAB_WEBHOOK_SECRET", SECRET.to_owned()),
        ]);
        for (k, v) in pairs {
            env.set(*k, *v);
        }
        env
    }

    #[tokio::test]
    async fn every_routed_project_gets_its_hook_once() {
        let (gl, _client) = standin().await;
        gl.state().add_project(43, "ops/jobs");
        gl.state().add_project(44, "ops/other");
        let env = env_for(
            &gl,
            &[
                ("GITLAB_PROJECT", "ops/deploy"),
                // 42 is ops/deploy again, by id: set up once.
                ("CHANNEL_PROJECTS", "C1=ops/jobs, C2=44,C3=42"),
            ],
        );
        let mut out = Vec::new();
        assert_eq!(run_cli(&env, URL, false, &mut out).await, 0);
        let text = String::from_utf8(out).unwrap();
        let mut hooked: Vec<u64> = gl.state().hooks().iter().map(|h| h.0).collect();
        hooked.sort_unstable();
        assert_eq!(hooked, [42, 43, 44], "{text}");
        assert!(gl
            .state()
            .hooks()
            .iter()
            .all(|h| h.2 == SECRET && h.1.url == URL));
        for p in ["ops/deploy", "ops/jobs", "ops/other"] {
            assert_eq!(
                text.matches(&format!("GitLab project {p} ")).count(),
                1,
                "{text}"
            );
        }
        assert!(
            !text.contains(SECRET) && !text.contains(&gl.token()),
            "{text}"
        );

        // Again: the same hooks are updated, none added.
        let mut out = Vec::new();
        assert_eq!(run_cli(&env, URL, false, &mut out).await, 0);
        assert_eq!(gl.state().hooks().len(), 3);
        assert_eq!(
            String::from_utf8(out)
                .unwrap()
                .matches("Updated webhook")
                .count(),
            3
        );
    }

    #[tokio::test]
    async fn a_refusing_variables_role_is_reported_and_left_alone_without_consent() {
        let (gl, _client) = standin().await;
        gl.state().add_project(43, "ops/jobs");
        gl.state().set_variables_role(43, "no_one_allowed");
        let env = env_for(
            &gl,
            &[
                ("GITLAB_PROJECT", "ops/deploy"),
                ("CHANNEL_PROJECTS", "C1=ops/jobs"),
            ],
        );
        let mut out = Vec::new();
        assert_eq!(run_cli(&env, URL, false, &mut out).await, 1);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\"Minimum role to use pipeline variables\" is No one allowed"),
            "{text}"
        );
        assert!(text.contains("--fix-variables-role"), "{text}");
        assert!(text.contains("Left as it is"), "{text}");
        assert_eq!(
            gl.state().variables_role(43).as_deref(),
            Some("no_one_allowed")
        );
        assert!(!gl
            .state()
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && !r.path.contains("/hooks")));
        // Both hooks are there all the same.
        assert_eq!(gl.state().hooks().len(), 2);
    }

    #[tokio::test]
    async fn fix_variables_role_sets_developer_where_needed() {
        let (gl, _client) = standin().await;
        gl.state().add_project(43, "ops/jobs");
        gl.state().set_variables_role(43, "no_one_allowed");
        let env = env_for(
            &gl,
            &[
                ("GITLAB_PROJECT", "ops/deploy"),
                ("CHANNEL_PROJECTS", "C1=ops/jobs"),
            ],
        );
        let mut out = Vec::new();
        assert_eq!(run_cli(&env, URL, true, &mut out).await, 0);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("changed \"Minimum role to use pipeline variables\" from No one allowed to Developer"),
            "{text}"
        );
        assert_eq!(gl.state().variables_role(43).as_deref(), Some("developer"));
        // ops/deploy (maintainer, the token's role) is left alone.
        assert_eq!(gl.state().variables_role(42).as_deref(), Some("maintainer"));
        let puts: Vec<_> = gl
            .state()
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT" && !r.path.contains("/hooks"))
            .collect();
        assert_eq!(puts.len(), 1);
        assert!(puts[0].path.ends_with("/projects/43"), "{:?}", puts[0]);
        assert_eq!(
            puts[0].json().unwrap()["ci_pipeline_variables_minimum_override_role"],
            "developer"
        );
    }

    #[tokio::test]
    async fn a_change_gitlab_refuses_is_reported_as_not_done() {
        let (gl, _client) = standin().await;
        // Only an Owner may change it away from `owner`; the token is Maintainer.
        gl.state().set_variables_role(42, "owner");
        let env = env_for(&gl, &[("GITLAB_PROJECT", "ops/deploy")]);
        let mut out = Vec::new();
        assert_eq!(run_cli(&env, URL, true, &mut out).await, 1);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("NOT changed"), "{text}");
        assert!(
            text.contains("is not allowed"),
            "GitLab's own message: {text}"
        );
        assert!(text.contains("An Owner of the project"), "{text}");
        assert!(!text.contains("changed \""), "{text}");
        assert_eq!(gl.state().variables_role(42).as_deref(), Some("owner"));
    }

    #[tokio::test]
    async fn config_names_the_missing_variable() {
        let env = Env::from_pairs([("GITLAB_TOKEN", "t"), ("GITLAB_WEBHOOK_SECRET", "s")]);
        let err = SetupConfig::from_env(&env, &NoSecrets).await.err().unwrap();
        assert!(err.to_string().contains("GITLAB_PROJECT"));
    }
}
