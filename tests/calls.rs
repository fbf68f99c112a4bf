//! Calls per run (issue 14), `make bench-calls`: one run of each kind — success, failure (the
//! job fails), manual (a `when: manual` job: dispatched, waiting), missing job (refused) and
//! refused (a linked user without Developer access) — driven through the real handlers as the
//! Lambdas wire them (`chatops_adapters::services`), and every request they make counted by
//! the system it went to:
//!
//! - GitLab: the stand-in records every request (`requests()`);
//! - DynamoDB and SQS: a `FaultProxy` without rules sits between the product and moto (the
//!   SDK's endpoint is the proxy); `seen()` gives every request's `X-Amz-Target`, and its
//!   body's `TableName` tells the audit table's writes ("DynamoDB audit", counted apart so
//!   the runs table's figures stay comparable) from the runs table's;
//! - Slack: a second `FaultProxy` in front of the Slack stand-in (both the `response_url`s
//!   and the Web API go through it), counting paths;
//! - invocations: `Ingress::handle`, `dispatch_batch` (once per SQS delivery) and
//!   `Completion::handle_webhook` (once per webhook the GitLab stand-in sends to the endpoint
//!   this test serves); an invocation that made no GitLab, AWS or Slack request did no I/O.
//!
//! One run: a signed slash command → `Ingress::handle` (queues through the proxy) → the
//! message received from moto (as Lambda's poller would; the receive and delete are the event
//! source's, not the product's, and are not counted) → `dispatch_batch` → the GitLab
//! stand-in's runner takes the job once the dispatcher has returned (a runner picks a job up
//! seconds after the pipeline is created, never before the dispatcher has saved) and finishes
//! it at once, sending its Job and Pipeline hooks → the run at rest: its end recorded in the
//! table (replied, refused or waiting to be played) and no request anywhere for 0.5 s. A run
//! still open after the hooks is given to the sweep once (counted as a completion invocation).
//!
//! Setup (table, queue, linked users) is not counted: it goes to moto directly.
//!
//! The table prints with `--nocapture` (`make bench-calls`); the test fails when a successful
//! run exceeds [`BUDGET`] on any system. The budget is what the product in this tree does,
//! plus nothing (README "Calls per run"): lower it when the product makes fewer calls.

mod support;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use bytes::Bytes;
use chatops_adapters::dynamo::DynamoStore;
use chatops_adapters::lambda::dispatch_batch;
use chatops_adapters::services;
use chatops_core::clock::{Clock, SystemClock};
use chatops_core::completion::{Completion, CompletionConfig, WEBHOOK_PATH};
use chatops_core::config::{Env, NoSecrets};
use chatops_core::dispatcher::{Dispatcher, DispatcherConfig, MAX_ATTEMPTS};
use chatops_core::gitlab::Status;
use chatops_core::ids::{ChatUserId, RequestId, TeamId};
use chatops_core::ingress::{Ingress, IngressConfig, SLACK_PATH};
use chatops_core::run::{RunRequest, RunStatus, UserLink};
use chatops_core::secret::Secret;
use chatops_core::slack::verify::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use chatops_core::store::RunStore;
use chatops_sim::faults::FaultProxy;
use chatops_sim::gitlab::{
    ExecJob, ExecOutcome, GitLabStandin, JobExecutor, RecordedRequest, StandinCiJob, StandinHandle,
};
use chatops_sim::slack::SlackStandIn;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROJECT: u64 = 42;
const PROJECT_PATH: &str = "group/proj";
const TEAM: &str = "T1";
const CHANNEL: &str = "C0PS";
const BOT: &str = "xoxb-calls-bot";
const SIGNING_SECRET: &str = "calls-signing-secret";
const WEBHOOK_SECRET: &str = "calls-webhook-secret";
/// No request anywhere for this long: the run is at rest.
const QUIET: Duration = Duration::from_millis(500);
/// Longest wait for a run to come to rest before the sweep is asked (and then again).
const SETTLE: Duration = Duration::from_secs(20);

/// The most a successful run may cost: what the product in this tree does, plus nothing.
/// Lower it when the product makes fewer calls (README "Calls per run").
const BUDGET: Figures = Figures {
    gitlab: 7,
    dynamodb_reads: 2,
    // The claim (which also counts the card's response_url use), the run saved, the reply
    // taken, the reply recorded.
    dynamodb_writes: 4,
    // command received, pipeline created, result.
    audit_writes: 3,
    sqs: 1,
    // The card shown as started, the card's last state, the reply (issue 12: one card per
    // run, updated in place; its last state costs this one request).
    slack: 3,
    invocations: 4,
    invocations_with_io: 3,
};

// ---------------------------------------------------------------------------------------
// What is counted.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    GitLab,
    DynamoDb,
    /// The audit table (`AUDIT_TABLE`), apart from the runs table.
    DynamoDbAudit,
    Sqs,
    Slack,
    /// Anything else that reached the AWS endpoint (SSM, KMS, …).
    OtherAws,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::GitLab => "GitLab",
            System::DynamoDb => "DynamoDB",
            System::DynamoDbAudit => "DynamoDB audit",
            System::Sqs => "SQS",
            System::Slack => "Slack",
            System::OtherAws => "other AWS",
        }
    }
}

/// One request the product made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    system: System,
    op: String,
}

impl Call {
    fn is_dynamodb_write(&self) -> bool {
        self.system == System::DynamoDb
            && matches!(
                self.op.as_str(),
                "PutItem"
                    | "UpdateItem"
                    | "DeleteItem"
                    | "BatchWriteItem"
                    | "TransactWriteItems"
                    | "ExecuteStatement"
                    | "ExecuteTransaction"
            )
    }
}

/// `GET /projects/:id/pipelines/:pipeline_id/jobs`, with the query's keys
/// (`GET /users?username=`), ids replaced by their names.
fn gitlab_op(r: &RecordedRequest) -> String {
    let path = r.path.strip_prefix("/api/v4").unwrap_or(&r.path);
    let mut out = Vec::new();
    let mut prev = "";
    for seg in path.split('/') {
        let numeric = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
        let name = match prev {
            "projects" => ":id",
            "pipelines" if numeric => ":pipeline_id",
            "jobs" if numeric => ":job_id",
            "all" | "members" if numeric => ":user_id",
            "hooks" if numeric => ":hook_id",
            _ => seg,
        };
        out.push(name.to_owned());
        prev = seg;
    }
    let mut keys: Vec<String> = serde_urlencoded::from_str::<Vec<(String, String)>>(&r.query)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, _)| format!("{k}="))
        .collect();
    keys.dedup();
    let query = if keys.is_empty() {
        String::new()
    } else {
        format!("?{}", keys.join("&"))
    };
    format!("{} {}{query}", r.method, out.join("/"))
}

/// An AWS request by its `X-Amz-Target` (`DynamoDB_20120810.GetItem`, `AmazonSQS.SendMessage`);
/// a DynamoDB request to `audit_table` (its body's `TableName`) is the audit log's.
fn aws_call(target: &str, body: &[u8], audit_table: &str) -> Call {
    let table = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["TableName"].as_str().map(str::to_owned));
    let (system, op) = if let Some(op) = target.strip_prefix("DynamoDB_20120810.") {
        if table.as_deref() == Some(audit_table) {
            (System::DynamoDbAudit, op)
        } else {
            (System::DynamoDb, op)
        }
    } else if let Some(op) = target.strip_prefix("AmazonSQS.") {
        (System::Sqs, op)
    } else {
        (System::OtherAws, target)
    };
    Call {
        system,
        op: op.to_owned(),
    }
}

/// A Slack request by its path: a `response_url` or a Web API method.
fn slack_call(path: &str) -> Call {
    let op = if path.starts_with("/commands/") {
        "POST response_url".to_owned()
    } else if let Some(m) = path.strip_prefix("/api/") {
        format!("POST {m}")
    } else {
        format!("POST {path}")
    };
    Call {
        system: System::Slack,
        op,
    }
}

/// Where the three counters stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    gitlab: usize,
    aws: usize,
    slack: usize,
}

// ---------------------------------------------------------------------------------------
// The GitLab stand-in's runner: takes a job once the test releases its run (after the
// dispatcher returned), then finishes it at once with a runner-format log. `db-check` fails.

struct Runner {
    released: tokio::sync::watch::Receiver<HashSet<String>>,
}

#[async_trait::async_trait]
impl JobExecutor for Runner {
    async fn run(&self, job: ExecJob) -> ExecOutcome {
        let var = |name: &str| {
            job.variables
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
                .to_owned()
        };
        let request_id = var("CHATOPS_REQUEST_ID");
        let mut released = self.released.clone();
        // A job of a pipeline chatops did not create runs at once.
        if !request_id.is_empty() {
            let _ = released.wait_for(|s| s.contains(&request_id)).await;
        }
        let t = 1_730_000_000u64 + job.job_id;
        let start = format!(
            "\x1b[0KRunning with gitlab-runner 17.5.0 (calls)\x1b[0;m\n\
             section_start:{t}:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" \
             stage of the job script\x1b[0;m\x1b[0;m\n"
        );
        let (status, body) = if job.name == "db-check" {
            (
                Status::Failed,
                format!(
                    "\x1b[32;1m$ psql -c 'select 1'\x1b[0;m\n\
                     psql: error: connection refused\n\
                     section_end:{t}:step_script\r\x1b[0K\x1b[31;1mERROR: Job failed: exit code 1\x1b[0;m\n"
                ),
            )
        } else {
            (
                Status::Success,
                format!(
                    "\x1b[32;1m$ echo \"deployed $CHAT_INPUT\"\x1b[0;m\n\
                     deployed {}\n\
                     section_end:{t}:step_script\r\x1b[0K\x1b[32;1mJob succeeded\x1b[0;m\n",
                    var("CHAT_INPUT")
                ),
            )
        };
        ExecOutcome {
            status,
            trace: format!("{start}{body}").into_bytes(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The webhook endpoint: GitLab's hooks → `Completion::handle_webhook`, one at a time, each
// with the requests it made.

#[derive(Debug, Clone)]
struct HookCall {
    event: String,
    status: u16,
    answer: String,
    calls: Vec<Call>,
}

#[derive(Default)]
struct HookLog {
    received: usize,
    done: Vec<HookCall>,
}

// ---------------------------------------------------------------------------------------
// The world.

struct World {
    /// Kept running for the run's lifetime.
    _gitlab: GitLabStandin,
    slack: SlackStandIn,
    /// GitLab's requests, and the proxies between the product and moto and in front of
    /// the Slack stand-in.
    counters: Counters,
    /// Where the product's Slack requests go (the proxy).
    slack_proxy_url: String,
    /// The table straight to moto: the test's own reads, not counted.
    direct: DynamoStore,
    /// The queue straight to moto: the event source's receive and delete, not counted.
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    ingress: Ingress,
    dispatcher: Dispatcher,
    completion: Arc<Completion>,
    hooks: Arc<Mutex<HookLog>>,
    release: tokio::sync::watch::Sender<HashSet<String>>,
    _hook_server: tokio::task::JoinHandle<()>,
}

/// The three request logs, shared with the webhook endpoint.
#[derive(Clone)]
struct Counters {
    gitlab: StandinHandle,
    aws: Arc<FaultProxy>,
    slack: Arc<FaultProxy>,
    audit_table: String,
}

impl Counters {
    fn mark(&self) -> Mark {
        Mark {
            gitlab: self.gitlab.requests().len(),
            aws: self.aws.seen().len(),
            slack: self.slack.seen().len(),
        }
    }

    /// The requests made since `from`, by system.
    fn since(&self, from: Mark) -> Vec<Call> {
        let mut out: Vec<Call> = self.gitlab.requests()[from.gitlab..]
            .iter()
            .map(|r| Call {
                system: System::GitLab,
                op: gitlab_op(r),
            })
            .collect();
        // The bodies after the targets: there are at least as many.
        let seen = self.aws.seen();
        let bodies = self.aws.seen_bodies();
        out.extend(
            seen[from.aws..]
                .iter()
                .zip(&bodies[from.aws..])
                .map(|((t, _), b)| aws_call(t, b, &self.audit_table)),
        );
        out.extend(
            self.slack.seen()[from.slack..]
                .iter()
                .map(|(p, _)| slack_call(p)),
        );
        out
    }
}

/// Who acts in GitLab: the bot token (admin-made links), or each person with their own OAuth
/// token (linked through the real connect flow; tokens sealed with KMS on moto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bot,
    OAuth,
}

const OAUTH_CLIENT: &str = "calls-app";
const OAUTH_SECRET: &str = "calls-app-secret";
const PUBLIC_BASE: &str = "https://chatops.calls.test";

async fn world() -> World {
    world_as(Mode::Bot).await
}

/// People connect as the product has them do: a connect link, GitLab's authorize page
/// approving as them (the stand-in's browser), the callback exchanging the code.
async fn connect_people(
    gitlab: &GitLabStandin,
    sdk: &aws_config::SdkConfig,
    env: &Env,
    table: &str,
) {
    let settings = chatops_core::oauth::OAuthSettings::from_env(env, &NoSecrets, &gitlab.url())
        .await
        .expect("OAuth settings")
        .expect("OAuth is configured");
    let services = services::Services::new(
        &services::Backend::Aws {
            queue_url: String::new(),
            table: table.to_owned(),
        },
        sdk,
    );
    let identity = services.identity(&settings).expect("identity");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (user, name) in [("U1", "alice"), ("U2", "bob")] {
        let person = chatops_core::identity::ChatPerson {
            platform: chatops_core::run::Platform::Slack,
            team_id: TeamId::new(TEAM),
            user_id: ChatUserId::new(user),
        };
        let redirect = settings.redirect_uri(None).expect("redirect URI");
        let url = identity
            .connect_link(&person, &redirect, None)
            .await
            .expect("connect link");
        gitlab.state().sign_in_browser_as(name);
        let resp = browser.get(&url).send().await.expect("authorize");
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("GitLab redirects to the callback")
            .to_owned();
        let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
        identity.complete(query).await.expect("connected");
    }
}

async fn world_as(mode: Mode) -> World {
    let gitlab = GitLabStandin::start().await;
    let gl = gitlab.state();
    gl.add_project(PROJECT, PROJECT_PATH);
    gl.add_user(7, "alice");
    gl.set_member(PROJECT, 7, 30); // Developer
    gl.add_user(8, "bob");
    gl.set_member(PROJECT, 8, 20); // Reporter: may not run jobs
    gl.set_ci_jobs(
        PROJECT,
        vec![
            StandinCiJob::chat("deploy"),
            StandinCiJob::chat("db-check"),
            StandinCiJob::chat("restart").manual(),
        ],
    );
    let (release, released) = tokio::sync::watch::channel(HashSet::new());
    gl.set_executor(Arc::new(Runner { released }));

    let slack = SlackStandIn::start_with(BOT, Arc::new(SystemClock), false)
        .await
        .expect("Slack stand-in");
    let slack_proxy = Arc::new(FaultProxy::start(&slack.base_url()).await);

    // Setup goes to moto directly; the product's SDK config points at the proxy.
    let moto_sdk = support::aws_config().await;
    let aws = Arc::new(FaultProxy::start(&support::moto_endpoint()).await);
    let sdk = moto_sdk.to_builder().endpoint_url(aws.url()).build();
    let table = support::unique_name("calls");
    DynamoStore::create_table(&aws_sdk_dynamodb::Client::new(&moto_sdk), &table)
        .await
        .expect("table");
    let audit_table = support::unique_name("calls-audit");
    chatops_adapters::audit::DynamoAudit::create_table(
        &aws_sdk_dynamodb::Client::new(&moto_sdk),
        &audit_table,
    )
    .await
    .expect("audit table");
    let direct = DynamoStore::new(aws_sdk_dynamodb::Client::new(&moto_sdk), table.clone());
    // Bot mode: as `chatops users link` leaves them, checked on GitLab, with the user's id.
    // OAuth: connected below, through the connect flow.
    let admin_links: &[(&str, &str, u64)] = match mode {
        Mode::Bot => &[("U1", "alice", 7), ("U2", "bob", 8)],
        Mode::OAuth => &[],
    };
    for &(user, name, id) in admin_links {
        direct
            .link_user(&UserLink {
                team_id: TeamId::new(TEAM),
                chat_user_id: ChatUserId::new(user),
                gitlab_username: name.into(),
                gitlab_user_id: Some(chatops_core::ids::GitLabUserId(id)),
                linked_at: 1,
                platform: None,
                grant: None,
            })
            .await
            .expect("link");
    }
    let sqs = aws_sdk_sqs::Client::new(&moto_sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(support::unique_name("calls-q"))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");

    // The three functions, configured from their environment and wired as their mains do.
    let slack_api = format!("{}/api/", slack_proxy.url());
    let ingress_env = Env::from_pairs([
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_owned()),
        ("RUN_QUEUE_URL", queue_url.clone()),
        (
            "ALLOWED_RESPONSE_URL_PREFIXES",
            format!("{}/commands/", slack_proxy.url()),
        ),
        ("AUDIT_TABLE", audit_table.clone()),
    ]);
    let ingress = services::aws_ingress(
        IngressConfig::from_env(&ingress_env, &NoSecrets)
            .await
            .expect("ingress config"),
        &sdk,
    )
    .expect("ingress services");
    let mut dispatcher_env = Env::from_pairs([
        ("GITLAB_URL", gitlab.url()),
        ("GITLAB_TOKEN", gitlab.token()),
        ("GITLAB_PROJECT", PROJECT_PATH.to_owned()),
        ("RUNS_TABLE", table.clone()),
        ("SLACK_BOT_TOKEN", BOT.to_owned()),
        ("SLACK_API_URL", slack_api.clone()),
        ("AUDIT_TABLE", audit_table.clone()),
    ]);
    if mode == Mode::OAuth {
        gl.register_oauth_app(
            OAUTH_CLIENT,
            OAUTH_SECRET,
            &format!("{PUBLIC_BASE}{}", chatops_core::oauth::CALLBACK_PATH),
        );
        // Developers may pass the contract's variables (people act with their own role).
        gl.set_variables_role(PROJECT, "developer");
        let key = support::new_kms_key(&moto_sdk).await;
        // No GitLab token: every call of a run is made with the person's.
        dispatcher_env = Env::from_pairs([
            ("GITLAB_URL", gitlab.url()),
            ("GITLAB_PROJECT", PROJECT_PATH.to_owned()),
            ("RUNS_TABLE", table.clone()),
            ("SLACK_BOT_TOKEN", BOT.to_owned()),
            ("SLACK_API_URL", slack_api.clone()),
            ("GITLAB_OAUTH_CLIENT_ID", OAUTH_CLIENT.to_owned()),
            ("GITLAB_OAUTH_CLIENT_SECRET", OAUTH_SECRET.to_owned()),
            ("PUBLIC_BASE_URL", PUBLIC_BASE.to_owned()),
            ("TOKEN_KEY_ID", key),
            ("AUDIT_TABLE", audit_table.clone()),
        ]);
        connect_people(&gitlab, &moto_sdk, &dispatcher_env, &table).await;
    }
    let dispatcher = services::aws_dispatcher(
        DispatcherConfig::from_env(&dispatcher_env, &NoSecrets)
            .await
            .expect("dispatcher config"),
        &sdk,
    )
    .expect("dispatcher");
    let completion_env = Env::from_pairs([
        ("GITLAB_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("GITLAB_URL", gitlab.url()),
        ("GITLAB_TOKEN", gitlab.token()),
        ("RUNS_TABLE", table.clone()),
        ("SLACK_BOT_TOKEN", BOT.to_owned()),
        ("SLACK_API_URL", slack_api),
        ("AUDIT_TABLE", audit_table.clone()),
    ]);
    let completion = Arc::new(
        services::aws_completion(
            CompletionConfig::from_env(&completion_env, &NoSecrets)
                .await
                .expect("completion config"),
            &sdk,
        )
        .expect("completion"),
    );

    // The webhook endpoint, where the GitLab stand-in sends its hooks.
    let hooks = Arc::new(Mutex::new(HookLog::default()));
    let serial = Arc::new(tokio::sync::Mutex::new(()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the webhook endpoint");
    let hook_url = format!(
        "http://{}{WEBHOOK_PATH}",
        listener.local_addr().expect("address")
    );
    let counters = Counters {
        gitlab: gitlab.state(),
        aws: aws.clone(),
        slack: slack_proxy.clone(),
        audit_table,
    };
    let app = {
        let (completion, hooks, counters) = (completion.clone(), hooks.clone(), counters.clone());
        axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (completion, hooks, serial, counters) = (
                    completion.clone(),
                    hooks.clone(),
                    serial.clone(),
                    counters.clone(),
                );
                async move {
                    hooks.lock().unwrap().received += 1;
                    // One at a time, so each hook's requests are its own.
                    let _one = serial.lock().await;
                    let event = headers
                        .get("x-gitlab-event")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let mut req = http::Request::new(body);
                    *req.method_mut() = method;
                    *req.uri_mut() = uri;
                    *req.headers_mut() = headers;
                    let from = counters.mark();
                    let resp = completion.handle_webhook(req).await;
                    let calls = counters.since(from);
                    let status = resp.status().as_u16();
                    let answer = resp.body().clone();
                    hooks.lock().unwrap().done.push(HookCall {
                        event,
                        status,
                        answer: answer.clone(),
                        calls,
                    });
                    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    (code, answer).into_response()
                }
            },
        )
    };
    let _hook_server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    gl.set_webhook(&hook_url, WEBHOOK_SECRET);

    World {
        slack_proxy_url: slack_proxy.url().to_owned(),
        _gitlab: gitlab,
        slack,
        counters,
        direct,
        sqs,
        queue_url,
        ingress,
        dispatcher,
        completion,
        hooks,
        release,
        _hook_server,
    }
}

// ---------------------------------------------------------------------------------------
// One run.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Success,
    Failure,
    Manual,
    MissingJob,
    Refused,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Success,
        Kind::Failure,
        Kind::Manual,
        Kind::MissingJob,
        Kind::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Success => "success",
            Kind::Failure => "failure",
            Kind::Manual => "manual",
            Kind::MissingJob => "missing job",
            Kind::Refused => "refused",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Kind::Success | Kind::Refused => "run deploy production",
            Kind::Failure => "run db-check",
            Kind::Manual => "run restart",
            Kind::MissingJob => "run rollback",
        }
    }

    /// (Slack user id, name): bob is linked but only a Reporter.
    fn user(self) -> (&'static str, &'static str) {
        match self {
            Kind::Refused => ("U2", "bob"),
            _ => ("U1", "alice"),
        }
    }

    /// Where the run ends.
    fn end(self) -> RunStatus {
        match self {
            Kind::Success | Kind::Failure => RunStatus::Replied,
            Kind::Manual => RunStatus::WaitingManual,
            Kind::MissingJob | Kind::Refused => RunStatus::Refused,
        }
    }

    /// What the person must have been told (the run's posts, joined).
    fn told(self) -> &'static [&'static str] {
        match self {
            Kind::Success => &["deployed production", "succeeded"],
            Kind::Failure => &["psql: error: connection refused", "failed"],
            Kind::Manual => &["manual", "/-/jobs/"],
            Kind::MissingJob => &["There is no job named `rollback`"],
            Kind::Refused => &["You are not allowed"],
        }
    }
}

/// One invocation of a function and the requests it made.
#[derive(Debug, Clone)]
struct Invocation {
    function: &'static str,
    detail: String,
    calls: Vec<Call>,
}

#[derive(Debug, Clone)]
struct RunReport {
    kind: Kind,
    end: RunStatus,
    invocations: Vec<Invocation>,
    /// Every request made from the command to rest (also any made outside an invocation,
    /// which would be a bug in this harness: checked against the invocations' sum).
    all: Vec<Call>,
    took: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Figures {
    gitlab: usize,
    dynamodb_reads: usize,
    dynamodb_writes: usize,
    /// `PutItem`s on the audit table.
    audit_writes: usize,
    sqs: usize,
    slack: usize,
    invocations: usize,
    invocations_with_io: usize,
}

impl RunReport {
    fn figures(&self) -> Figures {
        let count = |s: System| self.all.iter().filter(|c| c.system == s).count();
        let writes = self.all.iter().filter(|c| c.is_dynamodb_write()).count();
        Figures {
            gitlab: count(System::GitLab),
            dynamodb_reads: count(System::DynamoDb) - writes,
            dynamodb_writes: writes,
            audit_writes: count(System::DynamoDbAudit),
            sqs: count(System::Sqs),
            slack: count(System::Slack),
            invocations: self.invocations.len(),
            invocations_with_io: self
                .invocations
                .iter()
                .filter(|i| !i.calls.is_empty())
                .count(),
        }
    }

    /// `ingress 1/1, dispatcher 1/1, completion 2/1`: total / with I/O per function.
    fn by_function(&self) -> String {
        let mut per: BTreeMap<usize, (&str, usize, usize)> = BTreeMap::new();
        for inv in &self.invocations {
            let order = match inv.function {
                "ingress" => 0,
                "dispatcher" => 1,
                "completion" => 2,
                _ => 3,
            };
            let e = per.entry(order).or_insert((inv.function, 0, 0));
            e.1 += 1;
            e.2 += usize::from(!inv.calls.is_empty());
        }
        per.values()
            .map(|(f, n, io)| format!("{f} {n}/{io}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn signed_command(
    text: &str,
    user: (&str, &str),
    response_url: &str,
    trigger: &str,
) -> chatops_core::web::HttpRequest {
    let body = serde_urlencoded::to_string([
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", TEAM),
        ("team_domain", "acme"),
        ("channel_id", CHANNEL),
        ("channel_name", "ops"),
        ("user_id", user.0),
        ("user_name", user.1),
        ("command", "/chatops"),
        ("text", text),
        ("api_app_id", "A0CALLS"),
        ("response_url", response_url),
        ("trigger_id", trigger),
    ])
    .expect("form");
    let ts = SystemClock.now().to_string();
    let sig = sign(&Secret::new(SIGNING_SECRET), &ts, body.as_bytes());
    http::Request::builder()
        .method("POST")
        .uri(SLACK_PATH)
        .header("content-type", "application/x-www-form-urlencoded")
        .header(TIMESTAMP_HEADER, ts)
        .header(SIGNATURE_HEADER, sig)
        .body(Bytes::from(body))
        .expect("request")
}

fn sqs_event(m: &aws_sdk_sqs::types::Message, receive_count: u32) -> SqsEvent {
    let mut msg = SqsMessage::default();
    msg.message_id = m.message_id.clone();
    msg.receipt_handle = m.receipt_handle.clone();
    msg.body = m.body.clone();
    msg.attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    msg.event_source = Some("aws:sqs".into());
    let mut e = SqsEvent::default();
    e.records = vec![msg];
    e
}

impl World {
    fn mark(&self) -> Mark {
        self.counters.mark()
    }

    fn since(&self, from: Mark) -> Vec<Call> {
        self.counters.since(from)
    }

    fn hooks_received(&self) -> usize {
        self.hooks.lock().unwrap().received
    }

    fn hooks_done(&self) -> usize {
        self.hooks.lock().unwrap().done.len()
    }

    /// The event source: the one message the ingress queued (straight from moto).
    async fn receive(&self) -> aws_sdk_sqs::types::Message {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default();
            assert!(got.len() <= 1, "one command queued {} messages", got.len());
            if let Some(m) = got.into_iter().next() {
                return m;
            }
            assert!(Instant::now() < deadline, "the ingress queued nothing");
        }
    }

    /// Wait until the run is at rest: its end recorded, every hook answered, no request
    /// anywhere for `QUIET`. Returns its status.
    async fn settle(&self, id: &RequestId, end: RunStatus) -> Option<RunStatus> {
        let deadline = Instant::now() + SETTLE;
        let mut last = (self.mark(), self.hooks_received());
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = (self.mark(), self.hooks_received());
            if now != last {
                last = now;
                quiet_since = Instant::now();
                continue;
            }
            let status = self
                .direct
                .get_run(id)
                .await
                .expect("the test's own read")
                .map(|r| r.status);
            let at_end = status == Some(end);
            if at_end
                && self.hooks_done() == self.hooks_received()
                && quiet_since.elapsed() >= QUIET
            {
                return status;
            }
            if Instant::now() >= deadline {
                return status;
            }
        }
    }

    async fn one_run(&self, kind: Kind, n: usize) -> RunReport {
        let started = Instant::now();
        let standin_url = self.slack.response_url(TEAM);
        let path = standin_url
            .strip_prefix(&self.slack.base_url())
            .expect("a stand-in response_url");
        let response_url = format!("{}{path}", self.slack_proxy_url);
        let posts_before = self.slack.transcript().len();
        let hooks_before = self.hooks_done();
        let first = self.mark();
        let mut invocations = Vec::new();

        // 1. Slack → ingress.
        let from = self.mark();
        let resp = self
            .ingress
            .handle(signed_command(
                kind.text(),
                kind.user(),
                &response_url,
                &format!("{n}.{}.calls", SystemClock.now()),
            ))
            .await;
        assert_eq!(resp.status(), 200, "{}: {}", kind.label(), resp.body());
        assert!(
            resp.body().contains("Scheduling job"),
            "{}: {}",
            kind.label(),
            resp.body()
        );
        invocations.push(Invocation {
            function: "ingress",
            detail: "Ingress::handle".into(),
            calls: self.since(from),
        });

        // 2. SQS → dispatcher, again while it asks for a retry (SQS would redeliver).
        let message = self.receive().await;
        let request: RunRequest =
            serde_json::from_str(message.body().expect("a body")).expect("a RunRequest");
        let id = request.request_id.clone();
        let mut receive_count = 1;
        loop {
            let from = self.mark();
            let out = dispatch_batch(
                &self.dispatcher,
                sqs_event(&message, receive_count),
                Some(Instant::now() + Duration::from_secs(30)),
            )
            .await;
            invocations.push(Invocation {
                function: "dispatcher",
                detail: format!("dispatch_batch (receive {receive_count})"),
                calls: self.since(from),
            });
            if out.batch_item_failures.is_empty() {
                break;
            }
            receive_count += 1;
            assert!(
                receive_count <= MAX_ATTEMPTS,
                "{}: the dispatcher asked for a retry {MAX_ATTEMPTS} times",
                kind.label()
            );
        }
        self.sqs
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(message.receipt_handle().expect("receipt handle"))
            .send()
            .await
            .expect("delete");

        // 3. The runner takes the job; its hooks come to the completion endpoint.
        self.release.send_modify(|s| {
            s.insert(id.0.clone());
        });
        let mut status = self.settle(&id, kind.end()).await;
        let mut sweeps = 0;
        while status.is_some_and(|s| s.is_open()) && status != Some(kind.end()) && sweeps < 3 {
            // Still owed a reply after its hooks: the sweep finishes it (as it would within
            // minutes in production); counted as a completion invocation.
            sweeps += 1;
            let from = self.mark();
            let report = self.completion.sweep(SystemClock.now() + 24 * 3600).await;
            invocations.push(Invocation {
                function: "completion",
                detail: format!("sweep: {report:?}"),
                calls: self.since(from),
            });
            status = self.settle(&id, kind.end()).await;
        }
        let hooks: Vec<HookCall> = self.hooks.lock().unwrap().done[hooks_before..].to_vec();
        // The hooks ran while nothing else did: put them before any sweep, in order.
        let at = invocations.len() - sweeps;
        for (i, h) in hooks.into_iter().enumerate() {
            invocations.insert(
                at + i,
                Invocation {
                    function: "completion",
                    detail: format!("handle_webhook {} → {} {}", h.event, h.status, h.answer),
                    calls: h.calls,
                },
            );
        }
        let all = self.since(first);
        let report = RunReport {
            kind,
            end: status.unwrap_or(RunStatus::Dispatching),
            invocations,
            all,
            took: started.elapsed(),
        };

        // The run did what it should: the numbers are of a run that worked.
        assert_eq!(
            status,
            Some(kind.end()),
            "{}: the run did not end as it should\n{}",
            kind.label(),
            detail(&report)
        );
        let told: String = self.slack.transcript()[posts_before..]
            .iter()
            .map(|p| serde_json::to_string(p).expect("post"))
            .collect::<Vec<_>>()
            .join("\n");
        for words in kind.told() {
            assert!(
                told.contains(words),
                "{}: not told {words:?}:\n{told}",
                kind.label()
            );
        }
        let mut in_invocations: Vec<Call> = report
            .invocations
            .iter()
            .flat_map(|i| i.calls.iter().cloned())
            .collect();
        let mut all = report.all.clone();
        in_invocations.sort();
        all.sort();
        assert_eq!(
            in_invocations,
            all,
            "{}: requests made outside any invocation",
            kind.label()
        );
        report
    }
}

// ---------------------------------------------------------------------------------------
// The table.

fn row(label: &str, f: &Figures, by_function: &str) -> String {
    format!(
        "  {label:<12} {:>6} {:>10} {:>6} {:>5} {:>6} {:>13}   {by_function}",
        f.gitlab,
        format!("{}/{}", f.dynamodb_reads, f.dynamodb_writes),
        f.audit_writes,
        f.sqs,
        f.slack,
        format!("{}/{}", f.invocations, f.invocations_with_io),
    )
}

fn table(reports: &[RunReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "calls per run, from the signed slash command until the run is at rest \
         (GitLab and Slack stand-ins, SQS and DynamoDB on moto):"
    );
    let header = |cells: [&str; 8]| {
        format!(
            "  {:<12} {:>6} {:>10} {:>6} {:>5} {:>6} {:>13}   {}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
        )
    };
    let _ = writeln!(
        out,
        "{}",
        header([
            "kind",
            "GitLab",
            "DynamoDB",
            "audit",
            "SQS",
            "Slack",
            "invocations",
            "by function"
        ])
    );
    let _ = writeln!(
        out,
        "{}",
        header([
            "",
            "",
            "reads/wr.",
            "writes",
            "",
            "",
            "total/I/O",
            "total/I/O"
        ])
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{}",
            row(r.kind.label(), &r.figures(), &r.by_function())
        );
    }
    let _ = writeln!(out, "{}", row("budget", &BUDGET, "(a successful run)"));
    out
}

/// Every invocation of a run with its requests, grouped by operation.
fn detail(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} run, per invocation and operation (ended {:?}, {} ms):",
        r.kind.label(),
        r.end,
        r.took.as_millis()
    );
    for inv in &r.invocations {
        let _ = writeln!(
            out,
            "  {:<10} {} — {} request(s)",
            inv.function,
            inv.detail,
            inv.calls.len()
        );
        let mut ops: BTreeMap<(System, &str), usize> = BTreeMap::new();
        for c in &inv.calls {
            *ops.entry((c.system, c.op.as_str())).or_default() += 1;
        }
        for ((system, op), n) in ops {
            let _ = writeln!(out, "  {:<10}   {:<9} {op}  ×{n}", "", system.name());
        }
    }
    out
}

fn over_budget(f: &Figures) -> Vec<String> {
    let mut over = Vec::new();
    let mut check = |what: &str, got: usize, budget: usize| {
        if got > budget {
            over.push(format!("{what}: {got} > budget {budget}"));
        }
    };
    check("GitLab", f.gitlab, BUDGET.gitlab);
    check("DynamoDB reads", f.dynamodb_reads, BUDGET.dynamodb_reads);
    check("DynamoDB writes", f.dynamodb_writes, BUDGET.dynamodb_writes);
    check("DynamoDB audit writes", f.audit_writes, BUDGET.audit_writes);
    check("SQS", f.sqs, BUDGET.sqs);
    check("Slack", f.slack, BUDGET.slack);
    check("invocations", f.invocations, BUDGET.invocations);
    check(
        "invocations doing I/O",
        f.invocations_with_io,
        BUDGET.invocations_with_io,
    );
    over
}

/// One run of each kind through the real handlers: the table (with `--nocapture`), the
/// success run's detail, and a successful run within [`BUDGET`] on every system.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_run_within_budget() {
    let w = world().await;
    let mut reports = Vec::new();
    for (n, kind) in Kind::ALL.into_iter().enumerate() {
        reports.push(w.one_run(kind, n).await);
    }
    println!();
    println!("{}", table(&reports));
    for r in &reports {
        println!("{}", detail(r));
    }
    let success = &reports[0];
    assert_eq!(success.kind, Kind::Success);
    let over = over_budget(&success.figures());
    assert!(
        over.is_empty(),
        "a successful run is over its budget: {}\n{}",
        over.join("; "),
        detail(success)
    );
    assert!(
        success.all.iter().all(|c| c.system != System::OtherAws),
        "a successful run reached AWS services other than SQS and DynamoDB:\n{}",
        detail(success)
    );
}

/// The same runs with people's own tokens (OAuth): GitLab decides access (no members
/// lookup), and the person's tokens are opened once per dispatch (KMS `Decrypt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_run_with_oauth_within_budget() {
    let w = world_as(Mode::OAuth).await;
    let mut reports = Vec::new();
    for (n, kind) in Kind::ALL.into_iter().enumerate() {
        reports.push(w.one_run(kind, n).await);
    }
    println!();
    println!("with OAuth (each person's own token; KMS on moto):");
    println!("{}", table(&reports));
    for r in &reports {
        let kms: Vec<&str> = r
            .all
            .iter()
            .filter(|c| c.system == System::OtherAws)
            .map(|c| c.op.as_str())
            .collect();
        println!("  {:<12} other AWS: {kms:?}", r.kind.label());
    }
    for r in &reports {
        println!("{}", detail(r));
    }
    let success = &reports[0];
    assert_eq!(success.kind, Kind::Success);
    assert_eq!(success.end, RunStatus::Replied, "{}", detail(success));
    let over = over_budget(&success.figures());
    assert!(
        over.is_empty(),
        "over budget: {}\n{}",
        over.join("; "),
        detail(success)
    );
    let others: Vec<&str> = success
        .all
        .iter()
        .filter(|c| c.system == System::OtherAws)
        .map(|c| c.op.as_str())
        .collect();
    assert_eq!(
        others,
        vec!["TrentService.Decrypt"],
        "one KMS Decrypt per run, nothing else:\n{}",
        detail(success)
    );
    // Access is GitLab's to decide: no members lookup with the person's own token.
    assert!(
        !success.all.iter().any(|c| c.op.contains("/members/")),
        "{}",
        detail(success)
    );
    // The Reporter was refused by GitLab itself.
    let refused = reports
        .iter()
        .find(|r| r.kind == Kind::Refused)
        .expect("refused run");
    assert_eq!(refused.end, RunStatus::Refused);
}
