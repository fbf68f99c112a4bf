//! Local mode (`chatops local`).
//!
//! Local mode is the whole product in one process: the ingress and completion routes
//! (`POST /slack/commands`, `POST /slack/interactions`, `POST /mattermost/commands`,
//! `POST /mattermost/interactions`, `POST /gitlab/webhook`) on
//! `127.0.0.1:$PORT`, with the dispatcher and the sweep as in-process workers. The handlers
//! are exactly the ones the Lambdas run; only the transport differs (axum instead of a
//! Function URL, a worker loop instead of the SQS event source).
//!
//! Backends: embedded by default (an in-memory queue and run store: nothing survives a
//! restart), or SQS + DynamoDB with `--aws` or when `RUN_QUEUE_URL`/`RUNS_TABLE` are set
//! (`AWS_ENDPOINT_URL` points them at moto). Configuration comes from the same variables as
//! the functions, read once at start.
//! The services come from `chatops_adapters::services`, the same wiring as the Lambdas'.

use axum::body::Body;
use axum::response::IntoResponse;
use chatops_adapters::aws::{sdk_config, SsmSecrets};
use chatops_adapters::services::{Backend, Inbox, Services, ServicesError};
use chatops_core::clock::Clock;
use chatops_core::completion::{Completion, CompletionConfig};
use chatops_core::config::{ConfigError, Env};
use chatops_core::dispatcher::{Delivery, Dispatcher, DispatcherConfig, MAX_ATTEMPTS};
use chatops_core::ingress::{Ingress, IngressConfig};
use chatops_core::run::UserLink;
use chatops_core::store::RunStore;
use chatops_core::web::{HttpRequest, HttpResponse};
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
    "MATTERMOST_ACTIONS_SECRET_PARAM",
    "GITLAB_OAUTH_CLIENT_SECRET_PARAM",
    "TOKEN_KEY_PARAM",
    "TOKEN_KEY_ID",
];

/// Placeholders the functions' configs require but the embedded backends do not use.
const EMBEDDED_QUEUE: &str = "embedded://memory";
const EMBEDDED_TABLE: &str = "embedded-memory";

/// Bodies bigger than this are refused before any handler sees them (GitLab's pipeline
/// hooks for big pipelines are the largest thing we receive).
const MAX_BODY: usize = 8 * 1024 * 1024;

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
    #[error(transparent)]
    Services(#[from] ServicesError),
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
            None if needs_aws => sdk_config().await,
            None => offline_sdk_config(),
        };
        let secrets = SsmSecrets::new(sdk.clone());
        let mut env = env.clone();
        let backend = if aws {
            Backend::Aws {
                queue_url: env.required("RUN_QUEUE_URL")?,
                table: env.required("RUNS_TABLE")?,
            }
        } else {
            env.set("RUN_QUEUE_URL", EMBEDDED_QUEUE);
            env.set("RUNS_TABLE", EMBEDDED_TABLE);
            Backend::Embedded
        };
        // One process: the ingress knows the dispatcher beside it holds a Mattermost bot token
        // (the template says so with the same variable).
        if env.get("MATTERMOST_BOT_CONFIGURED").is_none()
            && (env.get("MATTERMOST_BOT_TOKEN").is_some()
                || env.get("MATTERMOST_BOT_TOKEN_PARAM").is_some())
        {
            env.set("MATTERMOST_BOT_CONFIGURED", "true");
        }
        let services = Services::new(&backend, &sdk);
        let ingress = services.ingress(IngressConfig::from_env(&env, &secrets).await?)?;
        let dispatcher = services.dispatcher(DispatcherConfig::from_env(&env, &secrets).await?)?;
        let completion = services.completion(CompletionConfig::from_env(&env, &secrets).await?)?;
        let sweep_every = Duration::from_secs(env.parse_or("SWEEP_EVERY_SECS", 60u64)?.max(1));
        let local = Local {
            ingress: Arc::new(ingress),
            dispatcher: Arc::new(dispatcher),
            completion: Arc::new(completion),
            store: services.store,
            inbox: services.inbox,
            clock: services.clock,
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
                team_id: chatops_core::ids::TeamId::new(team),
                chat_user_id: chatops_core::ids::ChatUserId::new(user),
                gitlab_username: gitlab.to_owned(),
                gitlab_user_id: None,
                linked_at: self.clock.now(),
                platform: None,
                grant: None,
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
            chatops_core::ingress::SLACK_PATH
            | chatops_core::interaction::SLACK_INTERACTIONS_PATH
            | chatops_core::ingress::MATTERMOST_PATH
            | chatops_core::mattermost::actions::MATTERMOST_INTERACTIONS_PATH
            | chatops_core::oauth::CALLBACK_PATH => self.ingress.handle(req).await,
            p if p.trim_end_matches('/') == chatops_core::completion::WEBHOOK_PATH => {
                self.completion.handle_webhook(req).await
            }
            "/" | "/healthz" => chatops_core::web::text(200, "chatops local: ok\n"),
            _ => chatops_core::web::json(
                404,
                &serde_json::json!({"error": "not found", "routes": [
                    "POST /slack/commands", "POST /slack/interactions",
                    "POST /mattermost/commands", "POST /mattermost/interactions",
                    "POST /gitlab/webhook"]}),
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
            match self
                .dispatcher
                .handle_delivery("embedded", &body, receive_count, None)
                .await
            {
                Delivery::Done => return,
                Delivery::Retry => {
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
                .handle_delivery(
                    m.message_id.as_deref().unwrap_or(""),
                    m.body.as_deref().unwrap_or(""),
                    count,
                    None,
                )
                .await;
            (m, result)
        }))
        .await;
        for (m, result) in handled {
            // Left on the queue: visible again after the visibility timeout, as for the
            // Lambda's batch item failures.
            if result == Delivery::Retry {
                continue;
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

    pub fn describe_backends(&self) -> String {
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
    if env.get("GITLAB_OAUTH_CLIENT_ID").is_some() {
        println!(
            "  GitLab OAuth redirect URI:    {}{}",
            env.get("PUBLIC_BASE_URL").unwrap_or(&url),
            chatops_core::oauth::CALLBACK_PATH
        );
    }
    println!(
        "  dispatcher and sweep (every {}s) run in this process; Ctrl-C stops",
        local.sweep_every.as_secs()
    );
    tokio::signal::ctrl_c().await?;
    drop(running);
    println!("chatops local: stopped");
    Ok(0)
}

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// An SDK configuration that never looks for credentials (embedded backends, no `_PARAM`).
pub(crate) fn offline_sdk_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build()
}
