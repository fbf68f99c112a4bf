//! `chatops gitlab setup --webhook-url <url>`: the GitLab half of a deployment. Checks that
//! the token can read the project and manage its webhooks, then creates the project webhook
//! that feeds the completion function (pipeline and job events, secret token, no push
//! events), or updates the one already pointing at the same URL, so running it again is safe.
//!
//! Reads `GITLAB_URL` (default gitlab.com), `GITLAB_TOKEN`, `GITLAB_PROJECT`,
//! `GITLAB_WEBHOOK_SECRET`; each secret may instead be given as `NAME_PARAM`, an SSM
//! parameter name, like the functions read it.

use chatops_adapters::aws::{sdk_config, SsmSecrets};
use chatops_adapters::gitlab::GitLabClient;
use chatops_core::config::{ConfigError, Env, NoSecrets, SecretSource};
use chatops_core::gitlab::{GitLab, GitLabError, Hook, Project};
use chatops_core::ids::ProjectRef;
use chatops_core::secret::Secret;
use std::fmt;

/// The path the completion function serves GitLab webhooks on.
pub use chatops_core::completion::WEBHOOK_PATH;

/// What `chatops gitlab setup` needs.
pub struct SetupConfig {
    pub gitlab_url: String,
    pub token: Secret,
    pub project: ProjectRef,
    pub webhook_secret: Secret,
}

impl SetupConfig {
    pub const ENV: &'static [&'static str] = &[
        "GITLAB_URL",
        "GITLAB_TOKEN",
        "GITLAB_TOKEN_PARAM",
        "GITLAB_PROJECT",
        "GITLAB_WEBHOOK_SECRET",
        "GITLAB_WEBHOOK_SECRET_PARAM",
    ];

    pub async fn from_env(env: &Env, secrets: &dyn SecretSource) -> Result<Self, ConfigError> {
        Ok(Self {
            gitlab_url: env.or("GITLAB_URL", chatops_core::gitlab::DEFAULT_GITLAB_URL),
            token: env.required_secret("GITLAB_TOKEN", secrets).await?,
            project: ProjectRef::new(env.required("GITLAB_PROJECT")?.trim()),
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
    #[error("GitLab did not keep the webhook's pipeline and job events (hook {0})")]
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
        GitLabError::Unauthorized(detail) | GitLabError::NotFound(detail) => {
            SetupError::NoHookAccess {
                project: found.path_with_namespace.clone(),
                detail,
            }
        }
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
            GitLabError::Unauthorized(detail) => SetupError::NoHookAccess {
                project: found.path_with_namespace.clone(),
                detail,
            },
            other => SetupError::GitLab(other),
        })?;
    if !(hook.pipeline_events && hook.job_events) {
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

/// The CLI: configuration from `env`, a real GitLab client; prints the report. Returns the
/// exit code (0 done, 1 GitLab or input trouble, 2 configuration missing).
pub async fn run_cli(env: &Env, webhook_url: &str, out: &mut dyn std::io::Write) -> i32 {
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
    match setup(
        &client,
        &config.project,
        webhook_url,
        &config.webhook_secret,
    )
    .await
    {
        Ok(report) => {
            let _ = write!(out, "{report}");
            0
        }
        Err(e) => {
            eprintln!("chatops gitlab setup: {e}");
            1
        }
    }
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
        assert!(hook.pipeline_events && hook.job_events);
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
        assert_eq!(run_cli(&env, URL, &mut out).await, 0);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Created webhook 1 -> "), "{text}");
        assert_eq!(gl.state().hooks().len(), 1);

        let mut out = Vec::new();
        let missing = Env::from_pairs([("GITLAB_URL", gl.url())]);
        assert_eq!(run_cli(&missing, URL, &mut out).await, 2);
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn config_names_the_missing_variable() {
        let env = Env::from_pairs([("GITLAB_TOKEN", "t"), ("GITLAB_WEBHOOK_SECRET", "s")]);
        let err = SetupConfig::from_env(&env, &NoSecrets).await.err().unwrap();
        assert!(err.to_string().contains("GITLAB_PROJECT"));
    }
}
