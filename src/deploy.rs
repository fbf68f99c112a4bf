//! `chatops deploy` (what `make deploy` runs): a first deploy in one guided command, safe to
//! run again. In order:
//!
//! 1. **Answers**: the AWS region, the stack name, GitLab (URL, project, channel projects,
//!    token) and the chat platform's secrets, each from a flag, else the environment, else a
//!    question when a person is at the terminal (secrets are read without echo). Without a
//!    terminal nothing is asked: a missing answer stops it (exit 2) naming the variable.
//! 2. **Preflight**: the GitLab token is tried on every project (read it, list its webhooks)
//!    before anything is written, so a typo costs seconds, not a 10-minute deploy.
//! 3. **Secrets**: each stored as an SSM SecureString in the chosen region under
//!    `/<stack>/…` (the template's default names for the stack `chatops`). The webhook secret
//!    (and, with Mattermost, the key that signs its buttons) is generated when neither the
//!    environment nor SSM has one. A value already stored is
//!    left alone; a changed one is overwritten, and then `ConfigVersion` changes so the
//!    functions start new environments that read it.
//! 4. **Stack**: `sam build` + `sam deploy` with every parameter given ([`SamCli`]; tests
//!    put their own [`StackDeployer`] in its place), then the outputs (`DescribeStacks`).
//! 5. **GitLab**: `chatops gitlab setup` for every project (webhook, pipeline-variables role,
//!    set to Developer with `--fix-variables-role` or a "yes" at the prompt), and
//!    `chatops gitlab check` for each, summarised.
//! 6. **Slack**: `target/slack-app-manifest.yaml` filled with the real request URL, and
//!    Slack's create-from-manifest link.
//! 7. **What is left**: a checklist (create/install the app, store its secrets by running
//!    this again, invite the bot, link users).
//!
//! Secrets are never printed: only the names of the parameters that hold them.

use crate::check::{self, CheckOptions};
use crate::setup::{self, VariablesOutcome};
use chatops_core::config::Env;
use chatops_core::gitlab::{GitLab, GitLabError};
use chatops_core::ids::ProjectRef;
use chatops_core::secret::Secret;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `chatops deploy` flags. Secrets are not flags (they would stay in the shell history):
/// they come from the environment or the prompt.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeployArgs {
    /// AWS region of the stack and of its secrets [env: AWS_DEFAULT_REGION, AWS_REGION]
    #[arg(long)]
    pub region: Option<String>,
    /// CloudFormation stack name [env: CHATOPS_STACK_NAME; default: chatops]
    #[arg(long)]
    pub stack_name: Option<String>,
    /// GitLab instance [env: GITLAB_URL; default: https://gitlab.com]
    #[arg(long)]
    pub gitlab_url: Option<String>,
    /// The project commands run in: id or group/project [env: GITLAB_PROJECT]
    #[arg(long)]
    pub gitlab_project: Option<String>,
    /// Per-channel projects, C0123=group/other,C0456=42 [env: CHANNEL_PROJECTS]
    #[arg(long)]
    pub channel_projects: Option<String>,
    /// Mattermost site, when Mattermost is used [env: MATTERMOST_URL]
    #[arg(long)]
    pub mattermost_url: Option<String>,
    /// An address subscribed to the alarms [env: ALARM_EMAIL]
    #[arg(long)]
    pub alarm_email: Option<String>,
    /// Set ConfigVersion (restarts every function) even when no secret changed.
    #[arg(long)]
    pub config_version: Option<String>,
    /// Set "Minimum role to use pipeline variables" to Developer where it refuses the token.
    #[arg(long)]
    pub fix_variables_role: bool,
    /// Never ask: take answers from flags and the environment only.
    #[arg(long)]
    pub non_interactive: bool,
    /// The SAM CLI (make sam-tools installs it there).
    #[arg(long, default_value = "target/tools/sam/bin/sam")]
    pub sam: PathBuf,
    /// The folder with template.yaml.
    #[arg(long, default_value = "infra")]
    pub infra_dir: PathBuf,
    /// Where the filled Slack manifest goes.
    #[arg(long, default_value = "target")]
    pub out_dir: PathBuf,
    /// More `sam deploy` flags, after `--` (not --parameter-overrides: use the flags above).
    #[arg(last = true)]
    pub sam_args: Vec<String>,
}

/// A secret the stack reads from SSM.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    /// The environment variable it comes from (`GITLAB_TOKEN`).
    pub var: &'static str,
    /// The template parameter that names it (`GitLabTokenParam`).
    pub template_param: &'static str,
    /// The SSM parameter name (`/chatops/gitlab-token`).
    pub name: String,
    /// None: not known yet (a Slack secret before the app exists); the parameter name is
    /// still given to the stack, and the function that needs it starts once it is stored.
    pub value: Option<Secret>,
}

/// Everything a deploy needs, resolved.
#[derive(Debug, Clone)]
pub struct DeployPlan {
    pub region: String,
    pub stack: String,
    pub gitlab_url: String,
    pub project: String,
    pub channel_projects: String,
    pub projects: Vec<ProjectRef>,
    /// None: use the one already stored in SSM (a re-run).
    pub gitlab_token: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    pub slack: bool,
    pub mattermost_url: Option<String>,
    pub alarm_email: Option<String>,
    pub config_version: Option<String>,
    pub fix_variables_role: bool,
    pub secrets: Vec<StoredSecret>,
    /// `GITLAB_OAUTH_CLIENT_ID`: people act in GitLab as themselves (README, "Identity");
    /// `None` is bot mode.
    pub oauth_client_id: Option<String>,
    /// `PUBLIC_BASE_URL`: the callback's base for a custom domain.
    pub public_base_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A missing or bad answer (exit 2).
    #[error("{0}")]
    Input(String),
    #[error("GitLab: {0}")]
    GitLab(String),
    #[error("SSM ({region}): {detail}")]
    Ssm { region: String, detail: String },
    #[error("the stack: {0}")]
    Stack(String),
}

impl DeployError {
    pub fn exit_code(&self) -> i32 {
        match self {
            DeployError::Input(_) => 2,
            _ => 1,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Asking

/// Where answers come from when flags and the environment have none.
pub trait Prompt {
    /// Whether a person can answer.
    fn interactive(&self) -> bool;
    /// The answer to `question`, `None` at end of input. `secret`: read without echo.
    fn ask(&mut self, question: &str, secret: bool) -> Option<String>;
}

/// No one to ask (CI, a pipe, `--non-interactive`).
#[derive(Debug, Default)]
pub struct NoPrompt;

impl Prompt for NoPrompt {
    fn interactive(&self) -> bool {
        false
    }
    fn ask(&mut self, _question: &str, _secret: bool) -> Option<String> {
        None
    }
}

/// The terminal: questions on stderr, answers from stdin, secrets with echo off (`stty`).
#[derive(Debug, Default)]
pub struct Terminal;

impl Prompt for Terminal {
    fn interactive(&self) -> bool {
        std::io::stdin().is_terminal()
    }
    fn ask(&mut self, question: &str, secret: bool) -> Option<String> {
        eprint!("{question}");
        let _ = std::io::stderr().flush();
        let echo = |on: bool| {
            let _ = std::process::Command::new("stty")
                .arg(if on { "echo" } else { "-echo" })
                .stdin(std::process::Stdio::inherit())
                .status();
        };
        if secret {
            echo(false);
        }
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line);
        if secret {
            echo(true);
            eprintln!();
        }
        match read {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim().to_owned()),
        }
    }
}

struct Answers<'a> {
    env: &'a Env,
    prompt: &'a mut dyn Prompt,
}

impl Answers<'_> {
    /// flag, else env; never asks (optional settings).
    fn given(&self, flag: Option<&str>, vars: &[&str]) -> Option<String> {
        flag.map(str::trim)
            .filter(|v| !v.is_empty())
            .or_else(|| {
                vars.iter()
                    .find_map(|n| self.env.get(n))
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
            })
            .map(str::to_owned)
    }

    /// flag, else env, else the prompt (default on Enter), else the default.
    fn value(
        &mut self,
        flag: Option<&str>,
        vars: &[&str],
        question: &str,
        default: Option<&str>,
    ) -> Option<String> {
        if let Some(v) = flag.map(str::trim).filter(|v| !v.is_empty()) {
            return Some(v.to_owned());
        }
        if let Some(v) = vars
            .iter()
            .find_map(|n| self.env.get(n))
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            return Some(v.to_owned());
        }
        if self.prompt.interactive() {
            let q = match default {
                Some(d) if !d.is_empty() => format!("{question} [{d}]: "),
                _ => format!("{question}: "),
            };
            if let Some(a) = self.prompt.ask(&q, false).filter(|a| !a.is_empty()) {
                return Some(a);
            }
        }
        default.map(str::to_owned)
    }

    /// env, else the prompt without echo.
    fn secret(&mut self, var: &str, question: &str) -> Option<Secret> {
        if let Some(v) = self.env.get(var).filter(|v| !v.trim().is_empty()) {
            return Some(Secret::new(v.trim()));
        }
        if self.prompt.interactive() {
            return self
                .prompt
                .ask(&format!("{question}: "), true)
                .filter(|a| !a.is_empty())
                .map(Secret::new);
        }
        None
    }
}

/// A yes/no question; no one to ask is a no.
fn confirm(prompt: &mut dyn Prompt, question: &str) -> bool {
    prompt.interactive()
        && prompt
            .ask(&format!("{question} [y/N]: "), false)
            .is_some_and(|a| a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case("yes"))
}

fn missing(var: &str, what: &str) -> DeployError {
    DeployError::Input(format!(
        "{what} is needed: set {var} (or run make deploy in a terminal to be asked)"
    ))
}

fn valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

fn valid_stack(s: &str) -> bool {
    s.len() <= 128
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Resolve every answer; nothing is written.
pub fn plan(
    args: &DeployArgs,
    env: &Env,
    prompt: &mut dyn Prompt,
) -> Result<DeployPlan, DeployError> {
    let mut nobody = NoPrompt;
    let prompt: &mut dyn Prompt = if args.non_interactive {
        &mut nobody
    } else {
        prompt
    };
    let mut a = Answers { env, prompt };
    let interactive = a.prompt.interactive();
    if interactive {
        eprintln!(
            "chatops deploy: answers in [brackets] are the defaults (Enter keeps them); secrets \
             are not shown as you type."
        );
    }
    let region = a
        .value(
            args.region.as_deref(),
            &["AWS_DEFAULT_REGION", "AWS_REGION"],
            "AWS region of the stack and its secrets (e.g. eu-west-1)",
            None,
        )
        .ok_or_else(|| missing("AWS_DEFAULT_REGION (or --region)", "the AWS region"))?;
    if !valid_region(&region) {
        return Err(DeployError::Input(format!(
            "{region:?} is not an AWS region name (like eu-west-1)"
        )));
    }
    let stack = a
        .value(
            args.stack_name.as_deref(),
            &["CHATOPS_STACK_NAME"],
            "Stack name",
            Some("chatops"),
        )
        .unwrap_or_else(|| "chatops".into());
    if !valid_stack(&stack) {
        return Err(DeployError::Input(format!(
            "{stack:?} is not a stack name (letters, digits and -, starting with a letter)"
        )));
    }
    let gitlab_url = a
        .value(
            args.gitlab_url.as_deref(),
            &["GITLAB_URL"],
            "GitLab URL",
            Some(chatops_core::gitlab::DEFAULT_GITLAB_URL),
        )
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    if !(gitlab_url.starts_with("https://") || gitlab_url.starts_with("http://"))
        || gitlab_url.ends_with("/api/v4")
    {
        return Err(DeployError::Input(format!(
            "GITLAB_URL {gitlab_url:?} must be the instance's address, like https://gitlab.com \
             (without /api/v4)"
        )));
    }
    let project = a
        .value(
            args.gitlab_project.as_deref(),
            &["GITLAB_PROJECT"],
            "GitLab project commands run in (group/project or its id)",
            None,
        )
        .ok_or_else(|| missing("GITLAB_PROJECT (or --gitlab-project)", "the GitLab project"))?;
    let channel_projects = a
        .value(
            args.channel_projects.as_deref(),
            &["CHANNEL_PROJECTS"],
            "Other projects for some channels, C0123=group/other,… (Enter for none)",
            Some(""),
        )
        .unwrap_or_default();
    let mut routing = Env::from_pairs([("GITLAB_PROJECT", project.clone())]);
    routing.set("CHANNEL_PROJECTS", channel_projects.clone());
    let projects =
        check::routed_projects(&routing).map_err(|e| DeployError::Input(e.to_string()))?;

    // None: the one already in SSM (a re-run), read once the region's SSM is at hand.
    let gitlab_token = a.secret(
        "GITLAB_TOKEN",
        "GitLab access token (api scope, Maintainer on the project; Enter to keep the one \
         already stored, on a re-run)",
    );

    let mattermost_url = a.given(args.mattermost_url.as_deref(), &["MATTERMOST_URL"]);
    let mattermost_token = env
        .get("MATTERMOST_TOKEN")
        .filter(|v| !v.trim().is_empty())
        .map(|v| Secret::new(v.trim()));
    if mattermost_token.is_some() && mattermost_url.is_none() {
        return Err(missing(
            "MATTERMOST_URL (or --mattermost-url)",
            "the Mattermost site's URL",
        ));
    }
    let mattermost = mattermost_url.is_some();
    // Slack unless only Mattermost is configured.
    let slack = !mattermost || env.get("SLACK_SIGNING_SECRET").is_some();
    let (slack_signing, slack_bot) = if slack {
        if interactive && env.get("SLACK_SIGNING_SECRET").is_none() {
            eprintln!(
                "Slack: the app is created from a manifest that needs this stack's URL. On a \
                 first deploy, press Enter at both questions; create the app with the link \
                 printed at the end, then run make deploy again to store its two secrets."
            );
        }
        (
            a.secret(
                "SLACK_SIGNING_SECRET",
                "Slack signing secret (Basic Information > App Credentials; Enter if the app \
                 does not exist yet)",
            ),
            a.secret(
                "SLACK_BOT_TOKEN",
                "Slack bot token xoxb-… (OAuth & Permissions; Enter if not yet)",
            ),
        )
    } else {
        (None, None)
    };
    if let Some(t) = &slack_bot {
        if !t.expose().starts_with("xoxb-") {
            return Err(DeployError::Input(
                "SLACK_BOT_TOKEN must be the app's Bot User OAuth Token (it starts with xoxb-)"
                    .into(),
            ));
        }
    }
    let webhook_secret = env
        .get("GITLAB_WEBHOOK_SECRET")
        .filter(|v| !v.trim().is_empty())
        .map(|v| Secret::new(v.trim()));
    if webhook_secret
        .as_ref()
        .is_some_and(|s| s.expose().len() < 16)
    {
        return Err(DeployError::Input(
            "GITLAB_WEBHOOK_SECRET is shorter than 16 characters: unset it and a random one is \
             generated"
                .into(),
        ));
    }
    let alarm_email = a.given(args.alarm_email.as_deref(), &["ALARM_EMAIL"]);
    let oauth_client_id = a.given(None, &["GITLAB_OAUTH_CLIENT_ID"]);
    let oauth_secret = a.given(None, &["GITLAB_OAUTH_CLIENT_SECRET"]);
    if oauth_client_id.is_some() != oauth_secret.is_some() && oauth_secret.is_some() {
        return Err(DeployError::Input(
            "GITLAB_OAUTH_CLIENT_SECRET is set without GITLAB_OAUTH_CLIENT_ID: set both (the \
             GitLab application's ID and secret) or neither"
                .into(),
        ));
    }
    let public_base_url = a.given(None, &["PUBLIC_BASE_URL"]);

    let name = |leaf: &str| format!("/{stack}/{leaf}");
    // Bot mode: the functions act with the administrator's token. With OAuth they only read
    // jobs and logs: a separate read_api token (`GITLAB_READ_TOKEN`) is stored, and the
    // administrator's own token stays on this machine (it sets up the webhook).
    let stored_token = match &oauth_client_id {
        None => ("GITLAB_TOKEN", gitlab_token.clone()),
        Some(_) => (
            "GITLAB_READ_TOKEN",
            a.given(None, &["GITLAB_READ_TOKEN"]).map(Secret::new),
        ),
    };
    let mut secrets = vec![
        StoredSecret {
            var: stored_token.0,
            template_param: "GitLabTokenParam",
            name: name("gitlab-token"),
            value: stored_token.1,
        },
        StoredSecret {
            var: "GITLAB_WEBHOOK_SECRET",
            template_param: "GitLabWebhookSecretParam",
            name: name("gitlab-webhook-secret"),
            value: webhook_secret.clone(),
        },
    ];
    if slack {
        secrets.push(StoredSecret {
            var: "SLACK_SIGNING_SECRET",
            template_param: "SlackSigningSecretParam",
            name: name("slack-signing-secret"),
            value: slack_signing,
        });
        secrets.push(StoredSecret {
            var: "SLACK_BOT_TOKEN",
            template_param: "SlackBotTokenParam",
            name: name("slack-bot-token"),
            value: slack_bot,
        });
    }
    if mattermost {
        secrets.push(StoredSecret {
            var: "MATTERMOST_TOKEN",
            template_param: "MattermostTokenParam",
            name: name("mattermost-token"),
            value: mattermost_token,
        });
        if let Some(bot) = env
            .get("MATTERMOST_BOT_TOKEN")
            .filter(|v| !v.trim().is_empty())
        {
            secrets.push(StoredSecret {
                var: "MATTERMOST_BOT_TOKEN",
                template_param: "MattermostBotTokenParam",
                name: name("mattermost-bot-token"),
                value: Some(Secret::new(bot.trim())),
            });
        }
        // The key that signs the buttons on Mattermost cards: nobody types it; generated
        // once and kept (a new one only invalidates the buttons already shown).
        secrets.push(StoredSecret {
            var: "MATTERMOST_ACTIONS_SECRET",
            template_param: "MattermostActionsSecretParam",
            name: name("mattermost-actions-secret"),
            value: env
                .get("MATTERMOST_ACTIONS_SECRET")
                .filter(|v| !v.trim().is_empty())
                .map(|v| Secret::new(v.trim())),
        });
    }
    if oauth_client_id.is_some() {
        // A re-run may leave it out: the secret stored the first time stays.
        secrets.push(StoredSecret {
            var: "GITLAB_OAUTH_CLIENT_SECRET",
            template_param: "GitLabOAuthClientSecretParam",
            name: name("gitlab-oauth-client-secret"),
            value: oauth_secret.map(Secret::new),
        });
    }
    Ok(DeployPlan {
        oauth_client_id,
        public_base_url,
        region,
        stack,
        gitlab_url,
        project,
        channel_projects,
        projects,
        gitlab_token,
        webhook_secret,
        slack,
        mattermost_url,
        alarm_email,
        config_version: args.config_version.clone(),
        fix_variables_role: args.fix_variables_role,
        secrets,
    })
}

// ---------------------------------------------------------------------------------------
// Secrets

/// What happened to one SSM parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Created,
    Updated,
    Unchanged,
    /// Kept the value SSM already had (the webhook secret on a re-run).
    Kept,
    Generated,
    /// No value yet; the parameter is named in the stack all the same.
    Pending,
}

/// A 64-hex-character random secret (256 bits from the system's generator).
pub fn random_secret() -> Result<Secret, DeployError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| DeployError::Input(format!("cannot read /dev/urandom for a secret: {e}")))?;
    Ok(Secret::new(hex::encode(bytes)))
}

fn ssm_error(region: &str, what: &str, e: impl std::fmt::Display) -> DeployError {
    DeployError::Ssm {
        region: region.to_owned(),
        detail: format!("{what}: {e}"),
    }
}

async fn ssm_value(
    ssm: &aws_sdk_ssm::Client,
    region: &str,
    name: &str,
) -> Result<Option<String>, DeployError> {
    match ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(out) => Ok(out.parameter.and_then(|p| p.value)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_not_found()) =>
        {
            Ok(None)
        }
        Err(e) => Err(ssm_error(
            region,
            &format!("reading {name}"),
            aws_sdk_ssm::error::DisplayErrorContext(e),
        )),
    }
}

/// Store every known secret; returns what happened to each, in order.
pub async fn store_secrets(
    ssm: &aws_sdk_ssm::Client,
    plan: &mut DeployPlan,
) -> Result<Vec<(String, Stored)>, DeployError> {
    let mut out = Vec::new();
    let region = plan.region.clone();
    for s in plan.secrets.iter_mut() {
        let current = ssm_value(ssm, &region, &s.name).await?;
        let (value, generated) = match (&s.value, &current, s.var) {
            (Some(v), _, _) => (v.clone(), false),
            // The webhook secret: keep SSM's, else make one (the Mattermost buttons' key too).
            (None, Some(existing), "GITLAB_WEBHOOK_SECRET") => {
                s.value = Some(Secret::new(existing.clone()));
                out.push((s.name.clone(), Stored::Kept));
                continue;
            }
            (None, None, "GITLAB_WEBHOOK_SECRET" | "MATTERMOST_ACTIONS_SECRET") => {
                (random_secret()?, true)
            }
            (None, Some(_), _) => {
                out.push((s.name.clone(), Stored::Kept));
                continue;
            }
            (None, None, _) => {
                out.push((s.name.clone(), Stored::Pending));
                continue;
            }
        };
        if current.as_deref() == Some(value.expose()) {
            out.push((s.name.clone(), Stored::Unchanged));
            continue;
        }
        ssm.put_parameter()
            .name(&s.name)
            .value(value.expose())
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .description(format!("chatops: {} (stored by chatops deploy)", s.var))
            .send()
            .await
            .map_err(|e| {
                ssm_error(
                    &region,
                    &format!("storing {}", s.name),
                    aws_sdk_ssm::error::DisplayErrorContext(e),
                )
            })?;
        s.value = Some(value);
        out.push((
            s.name.clone(),
            match (generated, current.is_some()) {
                (true, _) => Stored::Generated,
                (false, true) => Stored::Updated,
                (false, false) => Stored::Created,
            },
        ));
    }
    if let Some(s) = plan
        .secrets
        .iter()
        .find(|s| s.var == "GITLAB_WEBHOOK_SECRET")
    {
        plan.webhook_secret = s.value.clone();
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The stack

/// The template's parameters for this plan (`Key`, `Value`).
pub fn parameter_overrides(
    plan: &DeployPlan,
    config_version: Option<&str>,
) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = vec![
        ("GitLabUrl".into(), plan.gitlab_url.clone()),
        ("GitLabProject".into(), plan.project.clone()),
        ("ChannelProjects".into(), plan.channel_projects.clone()),
    ];
    for s in &plan.secrets {
        p.push((s.template_param.into(), s.name.clone()));
    }
    if let Some(url) = &plan.mattermost_url {
        p.push(("MattermostUrl".into(), url.clone()));
    }
    if let Some(email) = &plan.alarm_email {
        p.push(("AlarmEmail".into(), email.clone()));
    }
    if let Some(id) = &plan.oauth_client_id {
        p.push(("GitLabOAuthClientId".into(), id.clone()));
    }
    if let Some(base) = &plan.public_base_url {
        p.push(("PublicBaseUrl".into(), base.clone()));
    }
    if let Some(v) = config_version {
        p.push(("ConfigVersion".into(), v.to_owned()));
    }
    p
}

/// `Key="value"` pairs as `sam deploy --parameter-overrides` reads them (values quoted so
/// commas, `=` and spaces stay inside).
pub fn sam_overrides(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates or updates the stack. The real one runs the SAM CLI; tests create the stack
/// another way.
#[async_trait::async_trait]
pub trait StackDeployer: Send + Sync {
    async fn deploy(
        &self,
        plan: &DeployPlan,
        params: &[(String, String)],
    ) -> Result<(), DeployError>;
}

/// `sam build` and `sam deploy` in the infra folder.
#[derive(Debug, Clone)]
pub struct SamCli {
    pub sam: PathBuf,
    pub infra_dir: PathBuf,
    pub extra: Vec<String>,
}

impl SamCli {
    fn run(&self, args: &[String]) -> Result<(), DeployError> {
        let shown = format!("sam {}", args.join(" "));
        eprintln!("$ {shown}");
        let status = std::process::Command::new(&self.sam)
            .args(args)
            .current_dir(&self.infra_dir)
            .status()
            .map_err(|e| {
                DeployError::Stack(format!(
                    "cannot run {} ({e}): run make sam-tools first, or pass --sam",
                    self.sam.display()
                ))
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(DeployError::Stack(format!(
                "`{}` failed ({status}); its output is above",
                args.first().map(String::as_str).unwrap_or("sam")
            )))
        }
    }
}

#[async_trait::async_trait]
impl StackDeployer for SamCli {
    async fn deploy(
        &self,
        plan: &DeployPlan,
        params: &[(String, String)],
    ) -> Result<(), DeployError> {
        let sam = if self.sam.is_relative() && self.sam.components().count() > 1 {
            std::env::current_dir()
                .map(|d| d.join(&self.sam))
                .unwrap_or_else(|_| self.sam.clone())
        } else {
            self.sam.clone()
        };
        let cli = SamCli {
            sam,
            ..self.clone()
        };
        cli.run(&["build".into(), "--beta-features".into()])?;
        let samconfig =
            std::fs::read_to_string(self.infra_dir.join("samconfig.toml")).unwrap_or_default();
        let mut args: Vec<String> = vec![
            "deploy".into(),
            "--stack-name".into(),
            plan.stack.clone(),
            "--region".into(),
            plan.region.clone(),
            "--capabilities".into(),
            "CAPABILITY_IAM".into(),
            "--no-confirm-changeset".into(),
            "--no-fail-on-empty-changeset".into(),
            "--parameter-overrides".into(),
            sam_overrides(params),
        ];
        if !samconfig.contains("s3_bucket") && !samconfig.contains("resolve_s3") {
            args.push("--resolve-s3".into());
        }
        args.extend(self.extra.iter().cloned());
        cli.run(&args)
    }
}

/// The stack's outputs; None when there is no such stack.
pub async fn stack_outputs(
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<Option<(String, BTreeMap<String, String>)>, DeployError> {
    match cfn.describe_stacks().stack_name(stack).send().await {
        Ok(out) => {
            let Some(s) = out.stacks.unwrap_or_default().into_iter().next() else {
                return Ok(None);
            };
            let status = s
                .stack_status
                .map(|st| st.as_str().to_owned())
                .unwrap_or_default();
            let outputs = s
                .outputs
                .unwrap_or_default()
                .into_iter()
                .filter_map(|o| Some((o.output_key?, o.output_value?)))
                .collect();
            Ok(Some((status, outputs)))
        }
        // CloudFormation answers a missing stack with a ValidationError.
        Err(e)
            if e.as_service_error()
                .and_then(|s| s.meta().message())
                .is_some_and(|m| m.contains("does not exist")) =>
        {
            Ok(None)
        }
        Err(e) => Err(DeployError::Stack(format!(
            "reading stack {stack}: {}",
            aws_sdk_cloudformation::error::DisplayErrorContext(e)
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Slack

/// The manifest with the real request URL (and a header saying what it is for).
pub fn slack_manifest(slack_request_url: &str, stack: &str, region: &str) -> String {
    let template = include_str!("../infra/slack-app-manifest.yaml");
    let body: String = template
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    format!(
        "# Slack app manifest for chatops stack {stack} ({region}), written by chatops deploy.\n\
         # https://api.slack.com/apps -> Create New App -> From an app manifest -> paste this.\n{}",
        body.replace("REPLACE_WITH_SlackRequestUrl", slack_request_url)
            .replace(
                "REPLACE_WITH_SlackInteractivityUrl",
                &interactivity_url(slack_request_url),
            )
    )
}

/// The interactivity request URL (run cards' buttons): the slash-command URL's host with
/// `/slack/interactions`.
pub fn interactivity_url(slack_request_url: &str) -> String {
    let base = slack_request_url
        .strip_suffix(chatops_core::ingress::SLACK_PATH)
        .unwrap_or(slack_request_url.trim_end_matches('/'));
    format!(
        "{base}{}",
        chatops_core::interaction::SLACK_INTERACTIONS_PATH
    )
}

/// Slack's "create an app from this manifest" link (`new_app=1&manifest_json=`).
pub fn slack_create_link(manifest_yaml: &str) -> Option<String> {
    let yaml: serde_yaml::Value = serde_yaml::from_str(manifest_yaml).ok()?;
    let json = serde_json::to_string(&yaml).ok()?;
    let encoded = percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC);
    Some(format!(
        "https://api.slack.com/apps?new_app=1&manifest_json={encoded}"
    ))
}

// ---------------------------------------------------------------------------------------
// The whole deploy

/// What the deploy did, for tests and the summary.
#[derive(Debug, Default)]
pub struct DeployOutcome {
    pub stored: Vec<(String, Stored)>,
    pub config_version: Option<String>,
    pub outputs: BTreeMap<String, String>,
    pub projects: Vec<setup::ProjectSetup>,
    pub manifest: Option<PathBuf>,
    pub ready: bool,
}

fn step(out: &mut dyn Write, started: Instant, title: &str) {
    let _ = writeln!(out, "\n== {title} ({}s)", started.elapsed().as_secs());
}

fn now_version() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().to_string())
        .unwrap_or_else(|_| "2".into())
}

/// Run a planned deploy: preflight, secrets, stack, GitLab, Slack, checklist.
pub async fn run(
    mut plan: DeployPlan,
    sdk: &aws_config::SdkConfig,
    gitlab: &dyn GitLab,
    deployer: &dyn StackDeployer,
    prompt: &mut dyn Prompt,
    out_dir: &Path,
    out: &mut dyn Write,
) -> Result<DeployOutcome, DeployError> {
    let started = Instant::now();
    let mut outcome = DeployOutcome::default();
    let _ = writeln!(
        out,
        "chatops deploy: stack {} in {}, GitLab {} ({})",
        plan.stack,
        plan.region,
        plan.gitlab_url,
        plan.projects
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    step(out, started, "1/6 GitLab token and projects");
    for p in &plan.projects {
        let project = gitlab.project(p).await.map_err(|e| {
            DeployError::GitLab(match e {
                GitLabError::NotFound(d) => format!(
                    "project {p} was not found, or the token cannot see it ({d}): check \
                     GITLAB_PROJECT / CHANNEL_PROJECTS and GITLAB_URL"
                ),
                GitLabError::Unauthorized(d) | GitLabError::Forbidden(d) => format!(
                    "GitLab refused the token ({d}): it may be expired or lack the api scope"
                ),
                other => other.to_string(),
            })
        })?;
        gitlab.hooks(project.id).await.map_err(|e| {
            DeployError::GitLab(format!(
                "the token can read {} but not manage its webhooks ({e}): it needs the \
                 Maintainer role",
                project.path_with_namespace
            ))
        })?;
        let _ = writeln!(
            out,
            "{}: the token can read it and manage its webhooks.",
            project.path_with_namespace
        );
    }

    step(out, started, "2/6 Secrets in SSM Parameter Store");
    let ssm = aws_sdk_ssm::Client::new(sdk);
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let before = stack_outputs(&cfn, &plan.stack).await?;
    outcome.stored = store_secrets(&ssm, &mut plan).await?;
    for (name, what) in &outcome.stored {
        let line = match what {
            Stored::Created => "stored (new)",
            Stored::Updated => "updated (the value changed)",
            Stored::Unchanged => "left alone (same value)",
            Stored::Kept => "left alone (kept the value already stored)",
            Stored::Generated => "generated a random secret and stored it",
            Stored::Pending => "not stored yet (no value given): see the checklist below",
        };
        let _ = writeln!(out, "{name}: {line}");
    }
    let changed = outcome
        .stored
        .iter()
        .any(|(_, s)| matches!(s, Stored::Created | Stored::Updated | Stored::Generated));
    let config_version = plan
        .config_version
        .clone()
        .or_else(|| (changed && before.is_some()).then(now_version));
    if let Some(v) = &config_version {
        let _ = writeln!(
            out,
            "ConfigVersion={v}: the functions start new environments, which read the secrets \
             again."
        );
    }
    outcome.config_version = config_version.clone();

    step(
        out,
        started,
        if before.is_some() {
            "3/6 Updating the stack (sam build + sam deploy)"
        } else {
            "3/6 Creating the stack (sam build + sam deploy; the first build takes minutes)"
        },
    );
    let params = parameter_overrides(&plan, config_version.as_deref());
    deployer.deploy(&plan, &params).await?;
    let Some((status, outputs)) = stack_outputs(&cfn, &plan.stack).await? else {
        return Err(DeployError::Stack(format!(
            "stack {} does not exist in {} after the deploy",
            plan.stack, plan.region
        )));
    };
    if !status.ends_with("_COMPLETE") || status.contains("ROLLBACK") {
        return Err(DeployError::Stack(format!(
            "stack {} is {status}: see its events in the CloudFormation console",
            plan.stack
        )));
    }
    for key in ["GitLabWebhookUrl", "RunsTableName"] {
        if !outputs.contains_key(key) {
            return Err(DeployError::Stack(format!(
                "stack {} has no {key} output: is it this repository's template?",
                plan.stack
            )));
        }
    }
    for (k, v) in &outputs {
        let _ = writeln!(out, "{k}: {v}");
    }
    outcome.outputs = outputs.clone();

    step(out, started, "4/6 GitLab webhooks and pipeline variables");
    let webhook_url = outputs["GitLabWebhookUrl"].clone();
    let secret = plan
        .webhook_secret
        .clone()
        .ok_or_else(|| DeployError::Input("no webhook secret".into()))?;
    let mut done = setup::setup_projects(
        gitlab,
        &plan.projects,
        &webhook_url,
        &secret,
        plan.fix_variables_role,
    )
    .await;
    let refused: Vec<usize> = done
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.variables, Some(VariablesOutcome::MustChange { .. })))
        .map(|(i, _)| i)
        .collect();
    if !refused.is_empty()
        && confirm(
            prompt,
            &format!(
                "\"Minimum role to use pipeline variables\" refuses the token on {}. Set it to \
             Developer?",
                refused
                    .iter()
                    .map(|i| done[*i].project.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    {
        for i in refused {
            let id = done[i]
                .hook
                .as_ref()
                .map(|h| ProjectRef::new(h.project.id.0.to_string()))
                .unwrap_or_else(|_| done[i].project.clone());
            done[i].variables = Some(setup::pipeline_variables(gitlab, &id, true).await);
        }
    }
    for p in &done {
        let _ = write!(out, "{p}");
    }
    let gitlab_ok = done.iter().all(setup::ProjectSetup::ok);

    let mut checks = Vec::new();
    for p in &plan.projects {
        let opts = CheckOptions {
            jobs: vec![],
            webhook_url: Some(webhook_url.clone()),
        };
        let line = match check::check(gitlab, p, &opts).await {
            Ok(r) if r.ready() => {
                format!("{p}: chat-ready ({} chat job(s))", r.chat_jobs.len())
            }
            Ok(r) => {
                checks.push(p.to_string());
                format!(
                    "{p}: {} thing(s) to change: run chatops gitlab check --project {p}",
                    r.findings.len()
                )
            }
            Err(e) => {
                checks.push(p.to_string());
                format!("{p}: could not check ({e})")
            }
        };
        let _ = writeln!(out, "{line}");
    }
    outcome.projects = done;

    step(out, started, "5/6 Chat platform");
    let mut todo: Vec<String> = Vec::new();
    // The OAuth callback lives on the ingress's Function URL (or the custom domain).
    let base = plan.public_base_url.clone().or_else(|| {
        outputs
            .get("SlackRequestUrl")
            .and_then(|u| {
                u.split_once("://")
                    .map(|(s, rest)| (s.to_owned(), rest.to_owned()))
            })
            .map(|(scheme, rest)| format!("{scheme}://{}", rest.split('/').next().unwrap_or("")))
    });
    if let Some(base) = base {
        let redirect = format!(
            "{}{}",
            base.trim_end_matches('/'),
            chatops_core::oauth::CALLBACK_PATH
        );
        match &plan.oauth_client_id {
            Some(_) => {
                let _ = writeln!(
                    out,
                    "GitLab OAuth: people connect their own accounts; the application's redirect \
                     URI must be exactly {redirect}"
                );
            }
            None => todo.push(format!(
                "Bot mode: every pipeline runs as the GitLab token's user. To have people act \
                 as themselves, register a GitLab application (README, \"Register the GitLab \
                 application\") with the redirect URI {redirect} and scope api, then run make \
                 deploy again with GITLAB_OAUTH_CLIENT_ID and GITLAB_OAUTH_CLIENT_SECRET set."
            )),
        }
    }
    let pending: Vec<&str> = outcome
        .stored
        .iter()
        .filter(|(_, s)| *s == Stored::Pending)
        .map(|(n, _)| n.as_str())
        .collect();
    if plan.slack {
        let url = outputs.get("SlackRequestUrl").cloned().unwrap_or_default();
        let manifest = slack_manifest(&url, &plan.stack, &plan.region);
        std::fs::create_dir_all(out_dir)
            .map_err(|e| DeployError::Input(format!("cannot create {}: {e}", out_dir.display())))?;
        let path = out_dir.join("slack-app-manifest.yaml");
        std::fs::write(&path, &manifest)
            .map_err(|e| DeployError::Input(format!("cannot write {}: {e}", path.display())))?;
        let _ = writeln!(
            out,
            "Slack app manifest with the request URL {url}: {}",
            path.display()
        );
        if let Some(link) = slack_create_link(&manifest) {
            let _ = writeln!(out, "Create the app from it in one click:\n  {link}");
        }
        outcome.manifest = Some(path.clone());
        let slack_pending = pending.iter().any(|n| n.contains("slack"));
        if slack_pending {
            todo.push(format!(
                "Create the Slack app: open the link above (or https://api.slack.com/apps -> \
                 Create New App -> From an app manifest, paste {}), then Install to Workspace.",
                path.display()
            ));
            todo.push(
                "Store its secrets: run make deploy again with SLACK_SIGNING_SECRET (Basic \
                 Information > App Credentials) and SLACK_BOT_TOKEN (OAuth & Permissions, \
                 xoxb-…) exported, or answer the two questions: it stores them and restarts the \
                 functions."
                    .into(),
            );
        } else {
            todo.push(
                "If the Slack app's slash command URL is not the one above (a new stack), paste \
                 the new manifest in the app's App Manifest page."
                    .into(),
            );
        }
        todo.push(
            "Invite the bot to private channels where commands are used: /invite @chatops.".into(),
        );
    }
    if let Some(url) = outputs.get("MattermostRequestUrl") {
        if plan.mattermost_url.is_some() {
            let _ = writeln!(out, "Mattermost slash command request URL: {url}");
            if pending.iter().any(|n| n.contains("mattermost")) {
                todo.push(format!(
                    "Create the Mattermost slash command (Integrations > Slash Commands; request \
                     URL {url}, method POST), then run make deploy again with MATTERMOST_TOKEN \
                     set to its token."
                ));
            }
        }
    }
    if !gitlab_ok {
        todo.push(
            "GitLab: finish what step 4 reports above (then run make deploy again, or \
             chatops gitlab setup --webhook-url <GitLabWebhookUrl>)."
                .into(),
        );
    }
    for p in &checks {
        todo.push(format!(
            "Make the CI configuration of {p} chat-ready: chatops gitlab check --project {p} \
             prints each edit."
        ));
    }
    let table = outputs.get("RunsTableName").cloned().unwrap_or_default();
    if plan.oauth_client_id.is_none() {
        todo.push(format!(
            "Link each person to their GitLab user (the answer to their first /chatops run \
             prints their ids): RUNS_TABLE={table} AWS_DEFAULT_REGION={} cargo run --release \
             --bin chatops -- users link <team id>/<user id> <gitlab username>",
            plan.region
        ));
    }
    todo.push("Try it: /chatops run hello-world (see README \"A chat job\").".into());

    step(out, started, "6/6 What is left");
    let mut text = String::new();
    for (i, t) in todo.iter().enumerate() {
        let _ = writeln!(text, "[ ] {}. {t}", i + 1);
    }
    let _ = write!(out, "{text}");
    let _ = writeln!(
        out,
        "Run make deploy again any time: it changes only what changed ({}s).",
        started.elapsed().as_secs()
    );
    outcome.ready = gitlab_ok && checks.is_empty() && pending.is_empty();
    Ok(outcome)
}

/// AWS credentials are there (before anything else talks to AWS).
pub async fn aws_credentials(sdk: &aws_config::SdkConfig) -> Result<(), DeployError> {
    use aws_sdk_ssm::config::ProvideCredentials;
    let help = "set up AWS credentials first (aws configure, AWS_PROFILE, or aws sso login)";
    match sdk.credentials_provider() {
        None => Err(DeployError::Input(format!("no AWS credentials: {help}"))),
        Some(p) => p
            .provide_credentials()
            .await
            .map(|_| ())
            .map_err(|e| DeployError::Input(format!("no usable AWS credentials ({e}): {help}"))),
    }
}

/// The GitLab token: the one given, else the one a previous deploy stored in SSM.
pub async fn gitlab_token(
    plan: &DeployPlan,
    sdk: &aws_config::SdkConfig,
) -> Result<Secret, DeployError> {
    if let Some(t) = &plan.gitlab_token {
        return Ok(t.clone());
    }
    let name = plan
        .secrets
        .iter()
        .find(|s| s.var == "GITLAB_TOKEN")
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let ssm = aws_sdk_ssm::Client::new(sdk);
    match ssm_value(&ssm, &plan.region, &name).await? {
        Some(v) => Ok(Secret::new(v)),
        None => Err(missing("GITLAB_TOKEN", "a GitLab token")),
    }
}

/// The CLI: answers, then the deploy with the SAM CLI and real clients. Exit code: 0 done
/// (even with items left on the checklist), 1 a step failed, 2 a missing or bad answer.
pub async fn run_cli(args: &DeployArgs, env: &Env, out: &mut dyn Write) -> i32 {
    let mut terminal = Terminal;
    let mut nobody = NoPrompt;
    let prompt: &mut dyn Prompt = if args.non_interactive {
        &mut nobody
    } else {
        &mut terminal
    };
    let plan = match plan(args, env, prompt) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chatops deploy: {e}");
            return e.exit_code();
        }
    };
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(plan.region.clone()))
        .load()
        .await;
    if let Err(e) = aws_credentials(&sdk).await {
        eprintln!("chatops deploy: {e}");
        return e.exit_code();
    }
    let token = match gitlab_token(&plan, &sdk).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("chatops deploy: {e}");
            return e.exit_code();
        }
    };
    let gitlab = match chatops_adapters::gitlab::GitLabClient::new(&plan.gitlab_url, token) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatops deploy: {e}");
            return 2;
        }
    };
    let sam = SamCli {
        sam: args.sam.clone(),
        infra_dir: args.infra_dir.clone(),
        extra: args.sam_args.clone(),
    };
    match run(plan, &sdk, &gitlab, &sam, prompt, &args.out_dir, out).await {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("chatops deploy: {e}");
            e.exit_code()
        }
    }
}
