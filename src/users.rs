//! `chatops users link|unlink|list`: reads `RUNS_TABLE` (and `GITLAB_URL`/`GITLAB_TOKEN` when
//! set, to check names) like the functions, runs `chatops_core::users`, prints the outcome.

use chatops_adapters::aws::{sdk_config, SsmSecrets};
use chatops_adapters::services;
use chatops_core::clock::{Clock, SystemClock};
use chatops_core::config::Env;
use chatops_core::gitlab::{GitLab, DEFAULT_GITLAB_URL};
use chatops_core::store::RunStore;
use chatops_core::users::{self, Linked};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Link `<team>/<chat user id>` to a GitLab username.
    Link {
        chat_user: String,
        gitlab_username: String,
    },
    /// Remove the link of `<team>/<chat user id>`.
    Unlink { chat_user: String },
    /// List all links.
    List,
}

/// Run one `users` subcommand against `store`; returns the exit code.
pub async fn run(
    cmd: &UsersCommand,
    store: &dyn RunStore,
    gitlab: Option<&dyn GitLab>,
    now: u64,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<i32> {
    match cmd {
        UsersCommand::Link {
            chat_user,
            gitlab_username,
        } => match users::link(store, gitlab, chat_user, gitlab_username, now).await? {
            Linked::Linked { username, checked } => {
                if !checked {
                    writeln!(
                        out,
                        "note: GITLAB_TOKEN is not set, so {username:?} was not checked on GitLab"
                    )?;
                }
                writeln!(out, "linked {} -> {username}", chat_user.trim())?;
                Ok(0)
            }
            Linked::NoSuchUser(name) => {
                writeln!(out, "GitLab has no user named {name:?}; nothing linked.")?;
                Ok(1)
            }
        },
        UsersCommand::Unlink { chat_user } => {
            if users::unlink(store, chat_user).await? {
                writeln!(out, "unlinked {}", chat_user.trim())?;
                Ok(0)
            } else {
                writeln!(out, "{} was not linked", chat_user.trim())?;
                Ok(1)
            }
        }
        UsersCommand::List => {
            let links = users::list(store).await?;
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

/// `chatops users …` from the process environment.
pub async fn run_cli(cmd: &UsersCommand) -> anyhow::Result<i32> {
    let env = Env::from_process();
    let table = env.required("RUNS_TABLE")?;
    let sdk = sdk_config().await;
    let secrets = SsmSecrets::new(sdk.clone());
    let store = services::store(&sdk, &table);
    let gitlab = match env.secret("GITLAB_TOKEN", &secrets).await? {
        Some(token) => Some(services::gitlab(
            &env.or("GITLAB_URL", DEFAULT_GITLAB_URL),
            token,
        )?),
        None => None,
    };
    run(
        cmd,
        &store,
        gitlab.as_deref(),
        SystemClock.now(),
        &mut std::io::stdout(),
    )
    .await
}
