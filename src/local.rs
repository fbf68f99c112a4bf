//! Local mode (`chatops local`) and the offline demo (`chatops demo`).
//!
//! Local mode is the whole product in one process: the ingress and completion routes
//! (`POST /slack/commands`, `POST /mattermost/commands`, `POST /gitlab/webhook`) on
//! `127.0.0.1:$PORT`, with the dispatcher and the sweep as in-process workers. The handlers
//! are exactly the ones the Lambdas run; only the transport differs (axum instead of a
//! Function URL, a worker loop instead of the SQS event source).
//!
//! Backends: embedded by default (an in-memory queue and run store: nothing survives a
//! restart), or SQS + DynamoDB with `--aws` or when `RUN_QUEUE_URL`/`RUNS_TABLE` are set
//! (`AWS_ENDPOINT_URL` points them at moto). Configuration comes from the same variables as
//! the functions, read once at start.
//!
//! The demo starts the GitLab and Slack stand-ins (jobs of `tests/demo-project` run for real
//! in `bash`), local mode wired to them, sends GitLab's example jobs as signed slash commands
//! and prints the channel as a person would read it.

use crate::clock::{Clock, SystemClock};
use crate::completion::{Completion, CompletionConfig};
use crate::config::{ConfigError, Env, SsmSecrets};
use crate::delivery::Deliverer;
use crate::dispatcher::{DispatchError, Dispatcher, DispatcherConfig, MAX_ATTEMPTS};
use crate::gitlab::{GitLab, GitLabClient};
use crate::ingress::{Ingress, IngressConfig};
use crate::queue::{MemoryQueue, RunQueue, SqsQueue};
use crate::run::UserLink;
use crate::store::{DynamoStore, MemoryStore, RunStore};
use crate::web::{HttpRequest, HttpResponse};
use axum::body::Body;
use axum::response::IntoResponse;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What local mode reads on top of the functions' own variables.
pub const ENV: &[&str] = &[
    "PORT",
    "SWEEP_EVERY_SECS",
    "LOCAL_USER_LINKS",
    "AWS_ENDPOINT_URL",
];

/// Secrets given by SSM reference: local mode needs AWS credentials for these.
const SECRET_REFS: &[&str] = &[
    "SLACK_SIGNING_SECRET_PARAM",
    "MATTERMOST_TOKEN_PARAM",
    "GITLAB_TOKEN_PARAM",
    "GITLAB_WEBHOOK_SECRET_PARAM",
    "SLACK_BOT_TOKEN_PARAM",
    "MATTERMOST_BOT_TOKEN_PARAM",
];

/// Placeholders the functions' configs require but the embedded backends do not use.
const EMBEDDED_QUEUE: &str = "embedded://memory";
const EMBEDDED_TABLE: &str = "embedded-memory";

/// Bodies bigger than this are refused before any handler sees them (GitLab's pipeline
/// hooks for big pipelines are the largest thing we receive).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Where run requests wait for the dispatcher.
#[derive(Clone)]
pub enum Inbox {
    Embedded(Arc<MemoryQueue>),
    Sqs {
        client: aws_sdk_sqs::Client,
        queue_url: String,
    },
}

/// The three handlers and what they share, wired once.
#[derive(Clone)]
pub struct Local {
    pub ingress: Arc<Ingress>,
    pub dispatcher: Arc<Dispatcher>,
    pub completion: Arc<Completion>,
    pub store: Arc<dyn RunStore>,
    pub inbox: Inbox,
    pub clock: Arc<dyn Clock>,
    /// How often the sweep looks for runs whose webhook never came.
    pub sweep_every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Setup(String),
}

impl Local {
    /// Whether the environment asks for SQS + DynamoDB.
    pub fn wants_aws(env: &Env, flag: bool) -> bool {
        flag || env.get("RUN_QUEUE_URL").is_some() || env.get("RUNS_TABLE").is_some()
    }

    /// Wire everything from the functions' variables. `sdk` is the AWS configuration (the
    /// process's own when `None`); it is only used for SQS, DynamoDB and `*_PARAM` secrets.
    pub async fn from_env(
        env: &Env,
        aws: bool,
        sdk: Option<aws_config::SdkConfig>,
    ) -> Result<Local, LocalError> {
        // Embedded and every secret given directly: nothing talks to AWS, so the SDK's
        // credential and region chain (which probes instance metadata) is never loaded.
        let needs_aws = aws || SECRET_REFS.iter().any(|name| env.get(name).is_some());
        let sdk = match sdk {
            Some(s) => s,
            None if needs_aws => crate::config::aws_sdk_config().await,
            None => offline_sdk_config(),
        };
        let secrets = SsmSecrets::new(sdk.clone());
        let mut env = env.clone();
        let (store, queue, inbox): (Arc<dyn RunStore>, Arc<dyn RunQueue>, Inbox) = if aws {
            let queue_url = env.required("RUN_QUEUE_URL")?;
            let table = env.required("RUNS_TABLE")?;
            let sqs = SqsQueue::from_sdk_config(&sdk, queue_url.clone());
            (
                Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table)),
                Arc::new(sqs),
                Inbox::Sqs {
                    client: aws_sdk_sqs::Client::new(&sdk),
                    queue_url,
                },
            )
        } else {
            env.set("RUN_QUEUE_URL", EMBEDDED_QUEUE);
            env.set("RUNS_TABLE", EMBEDDED_TABLE);
            let q = Arc::new(MemoryQueue::new());
            (Arc::new(MemoryStore::new()), q.clone(), Inbox::Embedded(q))
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);

        let ingress_config = IngressConfig::from_env(&env, &secrets).await?;
        let dispatcher_config = DispatcherConfig::from_env(&env, &secrets).await?;
        let completion_config = CompletionConfig::from_env(&env, &secrets).await?;

        let gitlab: Arc<dyn GitLab> = Arc::new(
            GitLabClient::new(
                &dispatcher_config.gitlab_url,
                dispatcher_config.gitlab_token.clone(),
            )
            .map_err(|e| LocalError::Setup(format!("GITLAB_URL: {e}")))?,
        );
        let dispatcher = Dispatcher {
            deliverer: Deliverer::over_http(&dispatcher_config.chat, store.clone(), clock.clone()),
            config: dispatcher_config,
            gitlab: gitlab.clone(),
            store: store.clone(),
            clock: clock.clone(),
        };
        let completion = Completion {
            deliverer: Deliverer::over_http(&completion_config.chat, store.clone(), clock.clone()),
            config: completion_config,
            gitlab,
            store: store.clone(),
            clock: clock.clone(),
        };
        let sweep_every = Duration::from_secs(env.parse_or("SWEEP_EVERY_SECS", 60u64)?.max(1));
        let local = Local {
            ingress: Arc::new(Ingress::new(ingress_config, queue, clock.clone())),
            dispatcher: Arc::new(dispatcher),
            completion: Arc::new(completion),
            store,
            inbox,
            clock,
            sweep_every,
        };
        if let Some(links) = env.get("LOCAL_USER_LINKS") {
            local.link_users(links).await?;
        }
        Ok(local)
    }

    /// `LOCAL_USER_LINKS=T1/U1=alice,T1/U2=bob`: links made at start (the embedded store
    /// lives in this process, so `chatops users link` cannot reach it).
    pub async fn link_users(&self, spec: &str) -> Result<(), LocalError> {
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once('=').and_then(|(who, gl)| {
                let (team, user) = who.trim().split_once('/')?;
                Some((team.trim(), user.trim(), gl.trim()))
            });
            let Some((team, user, gitlab)) =
                parsed.filter(|(t, u, g)| !t.is_empty() && !u.is_empty() && !g.is_empty())
            else {
                return Err(ConfigError::Invalid {
                    name: "LOCAL_USER_LINKS".into(),
                    reason: format!("entry {entry:?} is not TEAM/USER=gitlab-username"),
                }
                .into());
            };
            self.link(team, user, gitlab).await?;
        }
        Ok(())
    }

    pub async fn link(&self, team: &str, user: &str, gitlab: &str) -> Result<(), LocalError> {
        self.store
            .link_user(&UserLink {
                team_id: crate::ids::TeamId::new(team),
                chat_user_id: crate::ids::ChatUserId::new(user),
                gitlab_username: gitlab.to_owned(),
                linked_at: self.clock.now(),
            })
            .await
            .map_err(|e| LocalError::Setup(format!("linking {team}/{user}: {e}")))
    }

    /// The HTTP front: our routes to the same handlers the Lambdas call.
    pub fn router(&self) -> axum::Router {
        let local = self.clone();
        axum::Router::new().fallback(move |req: axum::extract::Request| {
            let local = local.clone();
            async move { local.serve(req).await }
        })
    }

    async fn serve(&self, req: axum::extract::Request) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return (
                    http::StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large\n",
                )
                    .into_response()
            }
        };
        let req: HttpRequest = http::Request::from_parts(parts, bytes);
        let resp = match req.uri().path() {
            crate::ingress::SLACK_PATH | crate::ingress::MATTERMOST_PATH => {
                self.ingress.handle(req).await
            }
            p if p.trim_end_matches('/') == crate::completion::WEBHOOK_PATH => {
                self.completion.handle_webhook(req).await
            }
            "/" | "/healthz" => crate::web::text(200, "chatops local: ok\n"),
            _ => crate::web::json(
                404,
                &serde_json::json!({"error": "not found", "routes": [
                    "POST /slack/commands", "POST /mattermost/commands", "POST /gitlab/webhook"]}),
            ),
        };
        to_axum(resp)
    }

    /// Serve on `listener` and start the dispatcher and sweep workers. Everything stops when
    /// the returned handle is dropped.
    pub fn start(&self, listener: tokio::net::TcpListener) -> std::io::Result<Running> {
        let addr = listener.local_addr()?;
        let app = self.router();
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "local HTTP server stopped");
            }
        })];
        let me = self.clone();
        tasks.push(tokio::spawn(async move { me.dispatch_loop().await }));
        let me = self.clone();
        tasks.push(tokio::spawn(async move { me.sweep_loop().await }));
        Ok(Running { addr, tasks })
    }

    /// The dispatcher worker: the Lambda's SQS event source, in process.
    async fn dispatch_loop(&self) {
        match &self.inbox {
            Inbox::Embedded(queue) => loop {
                for body in queue.recv_all().await {
                    let me = self.clone();
                    tokio::spawn(async move { me.dispatch_embedded(body).await });
                }
            },
            Inbox::Sqs { client, queue_url } => loop {
                self.poll_sqs(client, queue_url).await;
            },
        }
    }

    /// One embedded message, redelivered like SQS would (with a growing pause) until it is
    /// done or the dispatcher has told the user on the last attempt.
    async fn dispatch_embedded(&self, body: String) {
        for receive_count in 1..=MAX_ATTEMPTS {
            match self.dispatcher.handle_message(&body, receive_count).await {
                Ok(()) => return,
                Err(DispatchError::Permanent(reason)) => {
                    tracing::error!(%reason, "run request dropped: it can never be processed");
                    return;
                }
                Err(DispatchError::Retryable(reason)) => {
                    tracing::warn!(%reason, receive_count, "run request will be retried");
                    tokio::time::sleep(Duration::from_secs(u64::from(receive_count) * 2)).await;
                }
            }
        }
        tracing::error!("run request still failing after {MAX_ATTEMPTS} attempts; dropped");
    }

    async fn poll_sqs(&self, client: &aws_sdk_sqs::Client, queue_url: &str) {
        use aws_sdk_sqs::types::MessageSystemAttributeName;
        let received = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(5)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "cannot receive from the run queue");
                tokio::time::sleep(Duration::from_secs(5)).await;
                return;
            }
        };
        let handled = futures_util::future::join_all(messages.iter().map(|m| async move {
            let count = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let result = self
                .dispatcher
                .handle_message(m.body.as_deref().unwrap_or(""), count)
                .await;
            (m, result)
        }))
        .await;
        for (m, result) in handled {
            match result {
                // Left on the queue: visible again after the visibility timeout, as for
                // the Lambda's batch item failures.
                Err(DispatchError::Retryable(reason)) => {
                    tracing::warn!(%reason, "run request will be retried");
                    continue;
                }
                Err(DispatchError::Permanent(reason)) => {
                    tracing::error!(%reason, "run request dropped: it can never be processed");
                }
                Ok(()) => {}
            }
            if let Some(handle) = &m.receipt_handle {
                if let Err(e) = client
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "could not delete a handled message");
                }
            }
        }
    }

    /// The scheduled sweep, every `sweep_every`.
    async fn sweep_loop(&self) {
        let mut tick = tokio::time::interval(self.sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.completion.sweep(self.clock.now()).await;
        }
    }

    fn describe_backends(&self) -> String {
        match &self.inbox {
            Inbox::Embedded(_) => {
                "embedded queue and run store, kept in memory: nothing survives a restart".into()
            }
            Inbox::Sqs { queue_url, .. } => format!("SQS queue {queue_url} and DynamoDB"),
        }
    }
}

fn to_axum(resp: HttpResponse) -> axum::response::Response {
    resp.map(Body::from)
}

/// A running local server and its workers; dropping it stops them.
pub struct Running {
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `chatops local`: serve until Ctrl-C.
pub async fn run_cli(port: u16, aws_flag: bool) -> anyhow::Result<i32> {
    init_tracing();
    let env = Env::from_process();
    let aws = Local::wants_aws(&env, aws_flag);
    let local = match Local::from_env(&env, aws, None).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chatops local: {e}");
            eprintln!("see README.md, 'Local mode', for the variables it reads");
            return Ok(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chatops local: cannot listen on 127.0.0.1:{port}: {e}");
            return Ok(1);
        }
    };
    let running = local.start(listener)?;
    let url = running.url();
    println!("chatops local on {url} ({})", local.describe_backends());
    println!("  Slack slash command URL:      {url}/slack/commands");
    println!("  Mattermost slash command URL: {url}/mattermost/commands");
    println!("  GitLab webhook URL:           {url}/gitlab/webhook");
    println!(
        "  dispatcher and sweep (every {}s) run in this process; Ctrl-C stops",
        local.sweep_every.as_secs()
    );
    tokio::signal::ctrl_c().await?;
    drop(running);
    println!("chatops local: stopped");
    Ok(0)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

// ---------------------------------------------------------------------------------------
// The offline demo: stand-ins for GitLab and Slack, local mode between them.

use crate::standin::gitlab::{GitLabStandin, STANDIN_TOKEN};
use crate::standin::runner::{standin_jobs, CiFile, Runner, ShellExecutor};
use crate::standin::slack::{render_posts, Post, SlackStandIn, Via};

/// The demo's Slack workspace and GitLab project.
pub const DEMO_TEAM: &str = "T0DEMO";
pub const DEMO_CHANNEL: &str = "C0OPS";
pub const DEMO_CHANNEL_NAME: &str = "ops";
pub const DEMO_PROJECT: &str = "demo/ops";
const DEMO_PROJECT_ID: u64 = 1;
const DEMO_SIGNING_SECRET: &str = "demo-signing-secret-not-a-real-one";
const DEMO_BOT_TOKEN: &str = "xoxb-demo-bot-token";
const DEMO_WEBHOOK_SECRET: &str = "demo-webhook-secret";

/// A chat user of the demo and the GitLab account it is linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoUser {
    pub slack_id: &'static str,
    pub name: &'static str,
    pub gitlab_id: u64,
    pub access_level: u32,
}

/// Developer: may run jobs.
pub const ALICE: DemoUser = DemoUser {
    slack_id: "U0ALICE",
    name: "alice",
    gitlab_id: 11,
    access_level: 30,
};
/// Reporter: linked, but too little access.
pub const BOB: DemoUser = DemoUser {
    slack_id: "U0BOB",
    name: "bob",
    gitlab_id: 12,
    access_level: 20,
};

/// What the demo sends, in order: GitLab's example jobs and the ways a run can end.
pub const DEMO_SCRIPT: &[(DemoUser, &str, &str)] = &[
    (
        ALICE,
        "run hello-world",
        "the docs' first example: one command, its output",
    ),
    (
        ALICE,
        "run ls",
        "the docs' chat_reply example: only that section comes back",
    ),
    (
        ALICE,
        "run greet the release notes",
        "several commands: commands and output",
    ),
    (ALICE, "run db-check", "a job that fails"),
    (ALICE, "run rollback", "a job the project does not define"),
    (
        ALICE,
        "run deploy-production",
        "a job marked except: [chat]",
    ),
    (ALICE, "run restart", "a when: manual job"),
    (BOB, "run hello-world", "a Reporter may not run jobs"),
];

/// Which backends the demo's local mode uses.
pub enum DemoBackends {
    /// The in-memory queue and store (`chatops demo`).
    Embedded,
    /// SQS and DynamoDB at `sdk`'s endpoint (moto in tests); queue and table must exist.
    Aws {
        sdk: Box<aws_config::SdkConfig>,
        queue_url: String,
        table: String,
    },
}

/// One slash command as sent, with Slack's immediate answer.
#[derive(Debug, Clone)]
pub struct SentCommand {
    pub user: DemoUser,
    pub text: String,
    pub response_url: String,
    /// The HTTP status of the ingress's answer.
    pub status: u16,
    /// The answer's body (a slash-command response).
    pub answer: serde_json::Value,
}

/// GitLab and Slack stand-ins with local mode between them.
pub struct DemoWorld {
    pub gitlab: GitLabStandin,
    pub slack: SlackStandIn,
    pub local: Local,
    pub running: Running,
    http: reqwest::Client,
    next_trigger: std::sync::atomic::AtomicU64,
}

impl DemoWorld {
    /// Start everything; the GitLab project's jobs come from `project_dir/.gitlab-ci.yml`.
    pub async fn start(
        backends: DemoBackends,
        project_dir: &std::path::Path,
    ) -> Result<DemoWorld, LocalError> {
        Self::start_with(backends, project_dir, &[]).await
    }

    /// Like `start`, with more variables for local mode (e.g. `SWEEP_EVERY_SECS`).
    pub async fn start_with(
        backends: DemoBackends,
        project_dir: &std::path::Path,
        extra_env: &[(&str, &str)],
    ) -> Result<DemoWorld, LocalError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| LocalError::Setup(format!("{what}: {e}"));
        let ci = CiFile::load(project_dir).map_err(|e| setup("the demo project", &e))?;
        let gitlab = GitLabStandin::start().await;
        let slack = SlackStandIn::start(DEMO_BOT_TOKEN)
            .await
            .map_err(|e| setup("the Slack stand-in", &e))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| setup("binding 127.0.0.1", &e))?;
        let local_url = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(|e| setup("local address", &e))?
        );

        let gl = gitlab.state();
        gl.add_project(DEMO_PROJECT_ID, DEMO_PROJECT);
        gl.set_ci_jobs(DEMO_PROJECT_ID, standin_jobs(&ci));
        let mut runner = Runner::new(project_dir);
        runner.timeout = Duration::from_secs(120);
        gl.set_executor(Arc::new(ShellExecutor::new(
            runner,
            ci,
            gl.clone(),
            &gitlab.url(),
        )));
        gl.set_webhook(
            &format!("{local_url}{}", crate::completion::WEBHOOK_PATH),
            DEMO_WEBHOOK_SECRET,
        );
        for u in [ALICE, BOB] {
            gl.add_user(u.gitlab_id, u.name);
            gl.set_member(DEMO_PROJECT_ID, u.gitlab_id, u.access_level);
        }

        // The same variables a laptop user would export for `chatops local`.
        let mut env = Env::from_pairs([
            ("SLACK_SIGNING_SECRET", DEMO_SIGNING_SECRET.to_owned()),
            ("SLACK_BOT_TOKEN", DEMO_BOT_TOKEN.to_owned()),
            ("SLACK_API_URL", slack.api_url()),
            (
                "ALLOWED_RESPONSE_URL_PREFIXES",
                format!("{}/commands/", slack.base_url()),
            ),
            ("GITLAB_URL", gitlab.url()),
            ("GITLAB_TOKEN", STANDIN_TOKEN.to_owned()),
            ("GITLAB_PROJECT", DEMO_PROJECT.to_owned()),
            ("GITLAB_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET.to_owned()),
            ("LOG_RETRY_SECS", "0.2".to_owned()),
            (
                "LOCAL_USER_LINKS",
                format!(
                    "{DEMO_TEAM}/{}={},{DEMO_TEAM}/{}={}",
                    ALICE.slack_id, ALICE.name, BOB.slack_id, BOB.name
                ),
            ),
        ]);
        for (k, v) in extra_env {
            env.set(*k, *v);
        }
        let (aws, sdk) = match backends {
            DemoBackends::Embedded => (false, Some(offline_sdk_config())),
            DemoBackends::Aws {
                sdk,
                queue_url,
                table,
            } => {
                env.set("RUN_QUEUE_URL", queue_url);
                env.set("RUNS_TABLE", table);
                (true, Some(*sdk))
            }
        };
        let local = Local::from_env(&env, aws, sdk).await?;
        let running = local
            .start(listener)
            .map_err(|e| setup("starting local mode", &e))?;
        Ok(DemoWorld {
            gitlab,
            slack,
            local,
            running,
            http: reqwest::Client::new(),
            next_trigger: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Send `/chatops <text>` from `user` in the demo channel, signed as Slack signs.
    pub async fn command(&self, user: DemoUser, text: &str) -> Result<SentCommand, LocalError> {
        let response_url = self.slack.response_url(DEMO_TEAM);
        let n = self
            .next_trigger
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let body = serde_urlencoded::to_string([
            ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
            ("team_id", DEMO_TEAM),
            ("team_domain", "demo"),
            ("channel_id", DEMO_CHANNEL),
            ("channel_name", DEMO_CHANNEL_NAME),
            ("user_id", user.slack_id),
            ("user_name", user.name),
            ("command", "/chatops"),
            ("text", text),
            ("api_app_id", "A0DEMO"),
            ("is_enterprise_install", "false"),
            ("response_url", &response_url),
            (
                "trigger_id",
                &format!("{n}.{}.demo", self.local.clock.now()),
            ),
        ])
        .map_err(|e| LocalError::Setup(format!("encoding a slash command: {e}")))?;
        let timestamp = self.local.clock.now().to_string();
        let signature = crate::slack::verify::sign(
            &crate::secret::Secret::new(DEMO_SIGNING_SECRET),
            &timestamp,
            body.as_bytes(),
        );
        let resp = self
            .http
            .post(format!(
                "{}{}",
                self.running.url(),
                crate::ingress::SLACK_PATH
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(crate::slack::verify::TIMESTAMP_HEADER, timestamp)
            .header(crate::slack::verify::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| LocalError::Setup(format!("sending a slash command: {e}")))?;
        let status = resp.status().as_u16();
        let answer = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok(SentCommand {
            user,
            text: text.to_owned(),
            response_url,
            status,
            answer,
        })
    }

    /// Messages that reached Slack through this command's `response_url`.
    pub fn posts_for(&self, cmd: &SentCommand) -> Vec<Post> {
        let id = response_url_id(&cmd.response_url);
        self.slack
            .transcript()
            .into_iter()
            .filter(|p| matches!(&p.via, Via::ResponseUrl { id: i, .. } if Some(i.as_str()) == id))
            .collect()
    }

    /// Messages that reached the channel another way (Web API, files).
    pub fn channel_posts(&self) -> Vec<Post> {
        self.slack
            .transcript()
            .into_iter()
            .filter(|p| !matches!(p.via, Via::ResponseUrl { .. }))
            .collect()
    }

    /// Wait until every command was answered and nothing moves any more: no run in flight
    /// (only runs waiting for a manual play stay open) and no new message for 0.6 s.
    pub async fn settle(&self, cmds: &[SentCommand], timeout: Duration) -> bool {
        use crate::gitlab::Status;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_len = usize::MAX;
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            let len = self.slack.transcript().len();
            if len != last_len {
                last_len = len;
                quiet_since = now;
            }
            let answered = cmds
                .iter()
                .all(|c| c.status != 200 || !self.posts_for(c).is_empty() || is_final_answer(c));
            let runs_settled = match self.local.store.open_runs(u64::MAX).await {
                Ok(runs) => runs
                    .iter()
                    .all(|r| r.status == crate::run::RunStatus::WaitingManual),
                Err(_) => false,
            };
            let gitlab_idle = self.gitlab.state().pipelines().iter().all(|p| {
                self.gitlab
                    .state()
                    .jobs_of(p.id)
                    .iter()
                    .all(|j| j.status.is_final() || j.status == Status::Manual)
            });
            let queue_empty = match &self.local.inbox {
                Inbox::Embedded(q) => q.is_empty(),
                Inbox::Sqs { .. } => true,
            };
            if answered
                && runs_settled
                && gitlab_idle
                && queue_empty
                && now.duration_since(quiet_since) >= Duration::from_millis(600)
            {
                return true;
            }
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The channel as a person reads it: each command, Slack's immediate answer, then what
    /// came back for it.
    pub fn transcript(&self, cmds: &[SentCommand]) -> String {
        let mut out = format!("#{DEMO_CHANNEL_NAME}\n");
        for c in cmds {
            out.push_str(&format!("\n{} › /chatops {}\n", c.user.name, c.text));
            if c.status != 200 {
                out.push_str(&format!(
                    "  Slack: \"/chatops\" failed with the error \"http_{}\"\n",
                    c.status
                ));
            } else if !c.answer.is_null() && !c.answer["text"].as_str().unwrap_or("").is_empty() {
                out.push_str(&speak(&answer_post(c), "answer"));
            }
            for p in self.posts_for(c) {
                out.push_str(&speak(&p, "response_url"));
            }
        }
        let others = self.channel_posts();
        if !others.is_empty() {
            out.push_str("\nposted to the channel by the bot:\n");
            for p in &others {
                out.push_str(&speak(p, "chat.postMessage"));
            }
        }
        for u in [ALICE, BOB] {
            out = out.replace(&format!("@{}", u.slack_id), &format!("@{}", u.name));
        }
        out
    }
}

/// Whether the immediate answer ended the command (help, refusal, "could not schedule").
fn is_final_answer(c: &SentCommand) -> bool {
    c.answer["response_type"].as_str() == Some("ephemeral")
}

fn response_url_id(url: &str) -> Option<&str> {
    // …/commands/<team>/<id>/<token>
    let mut parts = url.rsplit('/');
    parts.next()?;
    parts.next()
}

fn answer_post(c: &SentCommand) -> Post {
    Post {
        via: Via::ResponseUrl {
            team: DEMO_TEAM.into(),
            id: response_url_id(&c.response_url).unwrap_or("").into(),
        },
        channel: None,
        response_type: c.answer["response_type"].as_str().map(str::to_owned),
        text: c.answer["text"].as_str().unwrap_or("").to_owned(),
        blocks: c.answer.get("blocks").cloned(),
        attachments: c.answer.get("attachments").cloned(),
        file: None,
    }
}

/// One message as the channel shows it: who sees it, then its text.
fn speak(p: &Post, how: &str) -> String {
    let seen = match (p.response_type.as_deref(), &p.via) {
        (Some("in_channel"), _) => "everyone sees".to_owned(),
        (_, Via::ResponseUrl { .. }) => "only visible to you".to_owned(),
        (_, Via::PostMessage) => format!("in #{}", p.channel.as_deref().unwrap_or("?")),
        (_, Via::FileUpload) => "file".to_owned(),
    };
    let rendered = render_posts(std::slice::from_ref(p));
    let mut out = format!("  ChatOps ({seen}; {how}):\n");
    for line in rendered.lines().skip(1) {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// AWS configuration for the embedded backends: nothing reaches AWS, and loading it must
/// not look for credentials, profiles or instance metadata.
fn offline_sdk_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build()
}

/// Where the demo project lives: `CHATOPS_DEMO_PROJECT`, else this checkout's
/// `tests/demo-project`.
pub fn demo_project_dir() -> std::path::PathBuf {
    std::env::var_os("CHATOPS_DEMO_PROJECT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/demo-project")
        })
}

/// Run the demo script in `world`: each command, waiting for it to settle before the next
/// so the channel reads in order.
pub async fn run_script(world: &DemoWorld) -> Result<(Vec<SentCommand>, bool), LocalError> {
    let mut sent = Vec::new();
    let mut settled = true;
    for (user, text, _) in DEMO_SCRIPT {
        let c = world.command(*user, text).await?;
        sent.push(c);
        settled &= world.settle(&sent, Duration::from_secs(60)).await;
    }
    Ok((sent, settled))
}

/// `chatops demo`: the whole product offline; prints the channel; 0 when every command got
/// its answer and Slack refused nothing.
pub async fn run_demo() -> anyhow::Result<i32> {
    if std::env::var_os("RUST_LOG").is_some() {
        init_tracing();
    }
    let dir = demo_project_dir();
    println!("chatops demo: GitLab and Slack stand-ins on 127.0.0.1, no network, no accounts.");
    println!(
        "GitLab project {DEMO_PROJECT} = {} (jobs run for real in bash)",
        dir.display()
    );
    println!(
        "{} is a Developer, {} a Reporter; both are linked to their GitLab accounts.",
        ALICE.name, BOB.name
    );
    let world = match DemoWorld::start(DemoBackends::Embedded, &dir).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("chatops demo: {e}");
            return Ok(1);
        }
    };
    println!(
        "local mode on {} ({})\n",
        world.running.url(),
        world.local.describe_backends()
    );
    let (sent, settled) = run_script(&world).await?;
    print!("{}", world.transcript(&sent));

    let refusals = world.slack.refusals();
    let unanswered: Vec<_> = sent
        .iter()
        .filter(|c| c.status != 200 || (world.posts_for(c).is_empty() && !is_final_answer(c)))
        .map(|c| c.text.as_str())
        .collect();
    println!();
    if !refusals.is_empty() {
        println!("Slack refused {} request(s): {refusals:?}", refusals.len());
    }
    if !unanswered.is_empty() || !settled {
        println!("not answered in time: {unanswered:?}");
        return Ok(1);
    }
    if !refusals.is_empty() {
        return Ok(1);
    }
    println!(
        "{} commands, every one answered. Try your own: `chatops local` (README, 'Local mode').",
        sent.len()
    );
    Ok(0)
}
