//! The `chatops` command line: the operator's and the developer's face of the library.
//! Each subcommand's work lives in the module that owns it; this file only parses.

use crate::users::UsersCommand;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "chatops",
    version,
    about = "GitLab ChatOps for Slack and Mattermost"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the chat reply a raw GitLab job log would produce.
    Reply {
        /// The log file, or `-` for standard input.
        file: String,
        /// Print the structured reply as JSON.
        #[arg(long)]
        raw: bool,
    },
    /// Manage links from chat users to GitLab users (reads RUNS_TABLE like the functions).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// GitLab-side setup.
    Gitlab {
        #[command(subcommand)]
        command: GitlabCommand,
    },
    /// Serve the whole product on one port, with in-process dispatcher and sweep.
    Local {
        /// Port on 127.0.0.1.
        #[arg(long, env = "PORT", default_value_t = 3000)]
        port: u16,
        /// Use SQS and DynamoDB (RUN_QUEUE_URL, RUNS_TABLE, AWS_ENDPOINT_URL) instead of the
        /// embedded queue and store.
        #[arg(long)]
        aws: bool,
    },
    /// Run the offline demo: stand-ins for GitLab and Slack, the example jobs, a transcript.
    Demo,
    /// The guided deploy (make deploy): secrets into SSM, the stack, GitLab webhooks, the
    /// Slack manifest, and what is left to do. Safe to run again.
    Deploy(Box<crate::deploy::DeployArgs>),
    /// Read the audit log (AUDIT_TABLE): who ran what, refusals, pipelines, results; as a
    /// table or as JSON lines.
    Audit(crate::audit_cli::AuditArgs),
}

#[derive(Debug, Subcommand)]
pub enum GitlabCommand {
    /// Create or update the project webhook (pipeline and job events, secret token) and
    /// check the token's access.
    /// For GITLAB_PROJECT and every project of CHANNEL_PROJECTS; also checks each
    /// project's "Minimum role to use pipeline variables".
    Setup {
        /// The completion function's URL (ends in /gitlab/webhook).
        #[arg(long)]
        webhook_url: String,
        /// Set "Minimum role to use pipeline variables" to Developer on the projects where it
        /// refuses the token's role (your consent; without it setup only says what to change).
        #[arg(long)]
        fix_variables_role: bool,
    },
    /// Is the project chat-ready? Evaluates its merged CI configuration for the pipelines
    /// chat commands create and prints every change needed, with the YAML for each; checks
    /// the pipeline-variables role and, with --webhook-url, the webhook. Changes nothing.
    /// Exit code 0 ready, 1 something must change, 2 could not check.
    Check {
        /// The project (id or group/project); default: GITLAB_PROJECT and every project of
        /// CHANNEL_PROJECTS.
        #[arg(long)]
        project: Option<String>,
        /// Check only this chat job (repeatable); default: every job that selects itself
        /// with the CHATOPS_JOB rule.
        #[arg(long = "job", value_name = "JOB")]
        jobs: Vec<String>,
        /// Also check that a webhook to this URL (the stack's GitLabWebhookUrl) exists.
        #[arg(long)]
        webhook_url: Option<String>,
    },
}

/// Run the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Reply { file, raw } => crate::reply_cli::run(&file, raw),
        Command::Users { command } => crate::users::run_cli(&command).await,
        Command::Gitlab {
            command:
                GitlabCommand::Setup {
                    webhook_url,
                    fix_variables_role,
                },
        } => Ok(crate::setup::run_cli(
            &chatops_core::config::Env::from_process(),
            &webhook_url,
            fix_variables_role,
            &mut std::io::stdout(),
        )
        .await),
        Command::Gitlab {
            command:
                GitlabCommand::Check {
                    project,
                    jobs,
                    webhook_url,
                },
        } => Ok(crate::check::run_cli(
            &chatops_core::config::Env::from_process(),
            project.as_deref(),
            &crate::check::CheckOptions { jobs, webhook_url },
            &mut std::io::stdout(),
        )
        .await),
        Command::Local { port, aws } => crate::local::run_cli(port, aws).await,
        Command::Demo => crate::demo::run_demo().await,
        Command::Audit(args) => crate::audit_cli::run_cli(&args).await,
        Command::Deploy(args) => Ok(crate::deploy::run_cli(
            &args,
            &chatops_core::config::Env::from_process(),
            &mut std::io::stdout(),
        )
        .await),
    }
}
