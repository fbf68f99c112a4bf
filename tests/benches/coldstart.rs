//! Cold starts of the three functions, each against its floor, from one run
//! (`make bench-coldstart`, `cargo bench --bench coldstart`).
//!
//! Process start → first response at a local Lambda Runtime API
//! (tests/benches/lambda_runtime_api.rs), release binaries (the deployed profile), AWS on
//! moto, GitLab and Slack on their stand-ins in this process:
//!
//! - `ingress` vs `ingress-floor` (a lambda_http function that only sends the raw body to SQS):
//!   a signed Slack command, queued to SQS. Printed as `cargo bench --bench ingress` prints it.
//! - `dispatcher` vs `dispatcher-floor` (an SQS lambda_runtime function making one GitLab GET
//!   and one DynamoDB PutItem): an SQS event whose body is a fresh `RunRequest` from a linked
//!   Developer for a chat job; the real dispatcher claims it, checks, creates the pipeline,
//!   saves the run and posts the follow-up (checked after each start: the run is running).
//! - `completion` vs `completion-floor` (a Function URL lambda_runtime function making one
//!   DynamoDB GetItem, one log GET and one Slack POST): a Function URL event with the GitLab
//!   stand-in's Pipeline Hook for a run whose job has ended (it carries `CHATOPS_REQUEST_ID`
//!   and `CHATOPS_JOB`), so the real completion does its real work — reads the run, reads the
//!   log, posts the reply, records it (checked: it answers `replied`). Each start gets a
//!   run of its own, dispatched beforehand (not timed) by an in-process dispatcher.
//!
//! Every binary gets its production configuration from the environment (the variables of
//! `IngressConfig::ENV`, `DispatcherConfig::ENV`, `CompletionConfig::ENV`) with its floor
//! getting the same. Each pair runs interleaved (which goes first alternates) so that drift
//! (moto, page cache, the other load on the machine) hits both alike; the medians and their
//! ratio are printed per function, then the three ratios together. `CHATOPS_COLDSTART_RUNS`
//! sets the number of starts per binary (default 40), after 3 warm-up starts each.
//! `CHATOPS_COLDSTART_PROFILE=dev CHATOPS_COLDSTART_RUNS=2 cargo test --bench coldstart` checks
//! the harness quickly with debug binaries (its figures mean nothing).
//!
//! Warm: each started process then gets a second event of the same kind (a fresh command, a
//! fresh run request, another ended run's hook), timed from the invoke to its response: the
//! warm container's per-event cost (its caches filled by the first event, as in production),
//! printed beside the cold figures with its own ratio.

#[path = "lambda_runtime_api.rs"]
mod runtime_api;
#[path = "../support/mod.rs"]
mod support;

use chatops_adapters::dynamo::DynamoStore;
use chatops_adapters::services;
use chatops_core::clock::{Clock, SystemClock};
use chatops_core::completion::WEBHOOK_PATH;
use chatops_core::config::{Env, NoSecrets};
use chatops_core::dispatcher::{Dispatcher, DispatcherConfig, REQUEST_ID_VARIABLE};
use chatops_core::gitlab::Status;
use chatops_core::ids::{ChannelId, ChatUserId, RequestId, TeamId};
use chatops_core::run::{Platform, RunRequest, RunStatus, UserLink, RUN_REQUEST_VERSION};
use chatops_core::secret::Secret;
use chatops_core::slack::verify::sign;
use chatops_core::store::RunStore;
use chatops_sim::gitlab::{GitLabStandin, StandinCiJob};
use chatops_sim::slack::SlackStandIn;
use runtime_api::{function_url_event, lambda_env, Outcome, OutcomeKind, RuntimeApi};
use serde_json::{json, Value};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SIGNING_SECRET: &str = "bench-signing-secret";
const WEBHOOK_SECRET: &str = "bench-webhook-secret";
const BOT: &str = "xoxb-bench-bot";
const PROJECT: u64 = 42;
const PROJECT_PATH: &str = "group/proj";
const TEAM: &str = "T0001";
const USER: &str = "U2147483697";
const WARM_UP: usize = 3;

/// The release binaries, built as deployed (`[profile.release]`).
struct Bins {
    ingress: PathBuf,
    ingress_floor: PathBuf,
    dispatcher: PathBuf,
    dispatcher_floor: PathBuf,
    completion: PathBuf,
    completion_floor: PathBuf,
}

/// `CHATOPS_COLDSTART_PROFILE=dev` builds debug binaries instead: a quick check of this
/// harness (`cargo test --bench coldstart`), not a measurement.
fn release_binaries() -> Bins {
    let profile = std::env::var("CHATOPS_COLDSTART_PROFILE").unwrap_or_else(|_| "release".into());
    let dir = runtime_api::cargo_build(
        &profile,
        &[
            "-p",
            "ingress",
            "-p",
            "dispatcher",
            "-p",
            "completion",
            "-p",
            "chatops",
            "--bin",
            "ingress",
            "--bin",
            "ingress-floor",
            "--bin",
            "dispatcher",
            "--bin",
            "dispatcher-floor",
            "--bin",
            "completion",
            "--bin",
            "completion-floor",
        ],
    );
    Bins {
        ingress: dir.join("ingress"),
        ingress_floor: dir.join("ingress-floor"),
        dispatcher: dir.join("dispatcher"),
        dispatcher_floor: dir.join("dispatcher-floor"),
        completion: dir.join("completion"),
        completion_floor: dir.join("completion-floor"),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn slack_body(text: &str) -> String {
    serde_urlencoded::to_string([
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", TEAM),
        ("team_domain", "example"),
        ("channel_id", "C2147483705"),
        ("channel_name", "test"),
        ("user_id", USER),
        ("user_name", "Steve"),
        ("command", "/chatops"),
        ("text", text),
        ("api_app_id", "A123456"),
        (
            "response_url",
            "https://hooks.slack.com/commands/T0001/5678/abcDEF",
        ),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
    ])
    .unwrap()
}

/// A runner-format log of a successful job whose output is `deployed production`.
fn trace(job: u64) -> String {
    let t = 1_767_225_600 + job;
    format!(
        "\x1b[0KRunning with gitlab-runner 17.5.0 (bench)\x1b[0;m\n\
         section_start:{t}:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" \
         stage of the job script\x1b[0;m\x1b[0;m\n\
         \x1b[32;1m$ echo \"deployed $CHAT_INPUT\"\x1b[0;m\n\
         deployed production\n\
         section_end:{t}:step_script\r\x1b[0K\x1b[32;1mJob succeeded\x1b[0;m\n"
    )
}

/// An SQS event with one message, as Lambda's poller hands it over.
fn sqs_event(message_id: &str, body: &str) -> Value {
    json!({
        "Records": [{
            "messageId": message_id,
            "receiptHandle": format!("AQEB{message_id}"),
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": (now_secs() * 1000).to_string(),
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": (now_secs() * 1000).to_string()
            },
            "messageAttributes": {},
            "md5OfBody": "a4d214f88e9a97af4730602d526181aa",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:chatops-runs",
            "awsRegion": "us-east-1"
        }]
    })
}

/// A run whose job has ended: what completion is started for.
struct EndedRun {
    request_id: RequestId,
    job: u64,
    /// The Pipeline Hook as a Function URL event.
    event: Value,
}

struct Bench {
    rt: tokio::runtime::Runtime,
    moto: String,
    queue_url: String,
    table: String,
    gitlab: GitLabStandin,
    slack: SlackStandIn,
    /// The table straight to moto: the checks after each start.
    store: DynamoStore,
    /// Dispatches the runs completion is started for (not timed).
    prepare: Dispatcher,
    next: Cell<u64>,
}

impl Bench {
    fn setup() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let moto = support::moto_endpoint();
        let (queue_url, table, gitlab, slack, store, prepare) = rt.block_on(async {
            let sdk = support::aws_config().await;
            let queue_url = aws_sdk_sqs::Client::new(&sdk)
                .create_queue()
                .queue_name(support::unique_name("coldstart"))
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap();
            let table = support::unique_name("coldstart-runs");
            let ddb = aws_sdk_dynamodb::Client::new(&sdk);
            DynamoStore::create_table(&ddb, &table).await.unwrap();
            let store = DynamoStore::new(ddb, table.clone());
            store
                .link_user(&UserLink {
                    team_id: TeamId::new(TEAM),
                    chat_user_id: ChatUserId::new(USER),
                    gitlab_username: "alice".into(),
                    gitlab_user_id: Some(chatops_core::ids::GitLabUserId(7)),
                    linked_at: 1,
                    platform: None,
                    grant: None,
                })
                .await
                .unwrap();

            let gitlab = GitLabStandin::start().await;
            let gl = gitlab.state();
            gl.add_project(PROJECT, PROJECT_PATH);
            gl.add_user(7, "alice");
            gl.set_member(PROJECT, 7, 30);
            gl.set_ci_jobs(PROJECT, vec![StandinCiJob::chat("deploy")]);
            // Hooks are built (pipeline_hook), never sent: no executor runs the jobs.
            gl.set_webhook("http://127.0.0.1:9/gitlab/webhook", WEBHOOK_SECRET);
            let slack = SlackStandIn::start_with(BOT, Arc::new(SystemClock), false)
                .await
                .unwrap();

            let env = Env::from_pairs([
                ("GITLAB_URL", gitlab.url()),
                ("GITLAB_TOKEN", gitlab.token()),
                ("GITLAB_PROJECT", PROJECT_PATH.to_owned()),
                ("RUNS_TABLE", table.clone()),
                ("SLACK_BOT_TOKEN", BOT.to_owned()),
                ("SLACK_API_URL", slack.api_url()),
            ]);
            let config = DispatcherConfig::from_env(&env, &NoSecrets).await.unwrap();
            let prepare = services::aws_dispatcher(config, &sdk).unwrap();
            (queue_url, table, gitlab, slack, store, prepare)
        });
        Self {
            rt,
            moto,
            queue_url,
            table,
            gitlab,
            slack,
            store,
            prepare,
            next: Cell::new(0),
        }
    }

    fn fresh_id(&self, prefix: &str) -> String {
        let n = self.next.get() + 1;
        self.next.set(n);
        format!("{prefix}-{}-{n}", std::process::id())
    }

    /// What the dispatcher and completion read from their environment (and their floors).
    fn function_env(&self) -> Vec<(String, String)> {
        [
            ("GITLAB_URL", self.gitlab.url()),
            ("GITLAB_TOKEN", self.gitlab.token()),
            ("GITLAB_PROJECT", PROJECT_PATH.to_owned()),
            ("RUNS_TABLE", self.table.clone()),
            ("SLACK_BOT_TOKEN", BOT.to_owned()),
            ("SLACK_API_URL", self.slack.api_url()),
            ("GITLAB_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn run_request(&self, id: &str) -> RunRequest {
        RunRequest {
            version: RUN_REQUEST_VERSION,
            kind: chatops_core::run::RequestKind::Run,
            request_id: RequestId::new(id),
            platform: Platform::Slack,
            team_id: TeamId::new(TEAM),
            team_domain: Some("example".into()),
            channel_id: ChannelId::new("C2147483705"),
            channel_name: "test".into(),
            user_id: ChatUserId::new(USER),
            user_name: "Steve".into(),
            command: "/chatops".into(),
            job: "deploy".into(),
            input: "production".into(),
            response_url: self.slack.response_url(TEAM),
            received_at: SystemClock.now(),
            public_base: None,
        }
    }

    /// Start `bin` as Lambda would with `event` queued; process start → its first answer,
    /// then `warm` invoked on the same process: invoke → its answer.
    fn start(
        &self,
        bin: &Path,
        function: &str,
        env: &[(String, String)],
        event: Value,
        warm: Value,
    ) -> (Duration, Outcome, Duration, Outcome) {
        self.rt.block_on(async {
            let api = RuntimeApi::start().await;
            api.invoke("cold", event);
            let started = Instant::now();
            let mut child = function_command(bin)
                .env_clear()
                .envs(lambda_env(&api.endpoint(), function))
                .env("AWS_ENDPOINT_URL", &self.moto)
                .envs(env.iter().cloned())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let outcome = api.outcome(Duration::from_secs(30)).await;
            let invoked = Instant::now();
            api.invoke("warm", warm);
            let second = match &outcome {
                Some(_) => api.outcome(Duration::from_secs(30)).await,
                None => None,
            };
            let _ = child.kill();
            let _ = child.wait();
            let answered = |o: Option<Outcome>, what: &str| {
                let o = o.unwrap_or_else(|| panic!("{} did not answer {what}", bin.display()));
                assert_eq!(
                    o.kind,
                    OutcomeKind::Response,
                    "{} ({what}): {}",
                    bin.display(),
                    String::from_utf8_lossy(&o.body)
                );
                o
            };
            let outcome = answered(outcome, "cold");
            let second = answered(second, "warm");
            (
                outcome.at - started,
                outcome,
                second.at.saturating_duration_since(invoked),
                second,
            )
        })
    }

    /// A signed `/chatops run deploy production` as a Function URL event.
    fn command_event(&self) -> Value {
        let now = now_secs().to_string();
        let body = slack_body("run deploy production");
        let sig = sign(&Secret::new(SIGNING_SECRET), &now, body.as_bytes());
        let headers = [
            ("x-slack-request-timestamp", now.as_str()),
            ("x-slack-signature", sig.as_str()),
        ];
        function_url_event("/slack/commands", &headers, body.as_bytes())
    }

    fn ingress(&self, bin: &Path) -> (Duration, Duration) {
        let env = [
            ("RUN_QUEUE_URL".to_owned(), self.queue_url.clone()),
            ("SLACK_SIGNING_SECRET".to_owned(), SIGNING_SECRET.to_owned()),
        ];
        let (took, outcome, warm, second) = self.start(
            bin,
            "chatops-ingress",
            &env,
            self.command_event(),
            self.command_event(),
        );
        assert_eq!(outcome.json()["statusCode"], 200, "{}", bin.display());
        assert_eq!(second.json()["statusCode"], 200, "{}", bin.display());
        (took, warm)
    }

    fn dispatcher(&self, bin: &Path, floor: bool) -> (Duration, Duration) {
        let requests = [
            self.run_request(&self.fresh_id("cold-dispatch")),
            self.run_request(&self.fresh_id("warm-dispatch")),
        ];
        let [cold, warm] = requests.clone().map(|r| {
            let body = serde_json::to_string(&r).unwrap();
            sqs_event(&self.fresh_id("msg"), &body)
        });
        let (took, outcome, warm_took, second) =
            self.start(bin, "chatops-dispatcher", &self.function_env(), cold, warm);
        for answer in [outcome.json(), second.json()] {
            assert_eq!(
                answer["batchItemFailures"],
                json!([]),
                "{}: {answer}",
                bin.display()
            );
        }
        if !floor {
            for request in &requests {
                let run = self
                    .rt
                    .block_on(self.store.get_run(&request.request_id))
                    .unwrap()
                    .unwrap_or_else(|| panic!("{}: no run recorded", bin.display()));
                assert_eq!(run.status, RunStatus::Running, "{}", bin.display());
            }
        }
        (took, warm_took)
    }

    /// A run dispatched and its job ended, with the Pipeline Hook GitLab would send.
    fn ended_run(&self) -> EndedRun {
        let id = self.fresh_id("cold-complete");
        let request = self.run_request(&id);
        self.rt
            .block_on(
                self.prepare
                    .handle_message(&serde_json::to_string(&request).unwrap(), 1),
            )
            .unwrap();
        let gl = self.gitlab.state();
        let pipeline = gl
            .pipelines()
            .into_iter()
            .find(|p| p.variable(REQUEST_ID_VARIABLE) == Some(id.as_str()))
            .expect("the run's pipeline");
        let job = gl.jobs_of(pipeline.id)[0].id;
        gl.finish_job(job, Status::Success, trace(job));
        let hook = gl.pipeline_hook(pipeline.id).expect("a Pipeline Hook");
        let headers: Vec<(String, String)> = hook
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        EndedRun {
            request_id: request.request_id,
            job,
            event: function_url_event(WEBHOOK_PATH, &headers, hook.body.as_bytes()),
        }
    }

    fn completion(
        &self,
        bin: &Path,
        run: &EndedRun,
        second: &EndedRun,
        floor: bool,
    ) -> (Duration, Duration) {
        let mut env = self.function_env();
        env.extend([
            (
                "FLOOR_RUN_KEY".to_owned(),
                format!("run#{}", run.request_id),
            ),
            (
                "FLOOR_LOG_URL".to_owned(),
                format!(
                    "{}/api/v4/projects/{PROJECT}/jobs/{}/trace",
                    self.gitlab.url(),
                    run.job
                ),
            ),
            ("FLOOR_POST_URL".to_owned(), self.slack.response_url(TEAM)),
        ]);
        let (took, outcome, warm, again) = self.start(
            bin,
            "chatops-completion",
            &env,
            run.event.clone(),
            second.event.clone(),
        );
        for answer in [outcome.json(), again.json()] {
            assert_eq!(answer["statusCode"], 200, "{}: {answer}", bin.display());
            if !floor {
                let body: Value =
                    serde_json::from_str(answer["body"].as_str().unwrap_or_default()).unwrap();
                assert_eq!(
                    body["result"],
                    "replied",
                    "{}: the measured hook must do the real work: {body}",
                    bin.display()
                );
            }
        }
        (took, warm)
    }

    fn purge(&self) {
        self.rt.block_on(async {
            let sdk = support::aws_config().await;
            let _ = aws_sdk_sqs::Client::new(&sdk)
                .purge_queue()
                .queue_url(&self.queue_url)
                .send()
                .await;
        });
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The starts of one function and of its floor.
/// How a function process is started: as is, or (with `CHATOPS_COLDSTART_CGROUP`, a cgroup v1
/// `cpu` directory) inside that cgroup, whose CPU quota stands in for the share of a vCPU
/// Lambda gives a memory size (`make bench-memory`). The shell that joins the cgroup `exec`s
/// the function, so the timed process is the function itself, started a shell's start later
/// (the same for the floor and the function). `CHATOPS_COLDSTART_WRAP` (a command line, e.g.
/// `strace -ff -ttt -e trace=network -o /tmp/st/t`) starts each process under that command
/// instead, to see where a start's time goes (its figures are then the wrapper's, not ours).
fn function_command(bin: &Path) -> Command {
    if let Ok(wrap) = std::env::var("CHATOPS_COLDSTART_WRAP") {
        let mut parts = wrap.split_whitespace();
        if let Some(program) = parts.next() {
            let mut c = Command::new(program);
            c.args(parts).arg(bin);
            return c;
        }
    }
    match std::env::var("CHATOPS_COLDSTART_CGROUP") {
        Ok(dir) if !dir.is_empty() => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg("echo $$ > \"$0/tasks\" && exec \"$1\"")
                .arg(dir)
                .arg(bin);
            c
        }
        _ => Command::new(bin),
    }
}

#[derive(Default)]
struct Pair {
    floor: Vec<Duration>,
    function: Vec<Duration>,
    floor_warm: Vec<Duration>,
    function_warm: Vec<Duration>,
}

impl Pair {
    fn push(&mut self, floor: bool, (cold, warm): (Duration, Duration)) {
        if floor {
            self.floor.push(cold);
            self.floor_warm.push(warm);
        } else {
            self.function.push(cold);
            self.function_warm.push(warm);
        }
    }
}

/// Print one pair as the ingress bench prints it; returns the ratio function/floor.
fn report(
    name: &str,
    what: &str,
    goal: f64,
    pair: &mut Pair,
    floor_bin: &Path,
    function_bin: &Path,
) -> f64 {
    let runs = pair.function.len();
    let (mf, mi) = (median(&mut pair.floor), median(&mut pair.function));
    let p90 = |v: &[Duration]| v[(v.len() * 9 / 10).min(v.len() - 1)];
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let w = name.len().max(5);
    println!();
    println!(
        "cold start, process start -> first response ({what}), {runs} runs each, interleaved:"
    );
    println!(
        "  {:<w$} median {:7.2} ms  p90 {:7.2} ms  binary {:>9} bytes",
        "floor",
        ms(mf),
        ms(p90(&pair.floor)),
        size(floor_bin)
    );
    println!(
        "  {:<w$} median {:7.2} ms  p90 {:7.2} ms  binary {:>9} bytes",
        name,
        ms(mi),
        ms(p90(&pair.function)),
        size(function_bin)
    );
    let ratio = mi.as_secs_f64() / mf.as_secs_f64();
    println!(
        "  ratio {name}/floor {ratio:.3} (goal <= {goal}): {}",
        if ratio <= goal { "met" } else { "NOT met" }
    );
    let (wf, wi) = (
        median(&mut pair.floor_warm),
        median(&mut pair.function_warm),
    );
    let warm = wi.as_secs_f64() / wf.as_secs_f64();
    println!(
        "  warm (a second event, invoke -> response): floor median {:.2} ms, {name} median \
         {:.2} ms, ratio {warm:.2} (goal <= {WARM_GOAL}): {}",
        ms(wf),
        ms(wi),
        if warm <= WARM_GOAL { "met" } else { "NOT met" }
    );
    ratio
}

/// The goal for warm invocations: at most twice the floor.
const WARM_GOAL: f64 = 2.0;

fn main() {
    // `cargo bench` passes `--bench`; a name filter that matches none of the functions skips
    // the whole run (as `cargo bench -- <other bench's filter>` would expect).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let names = ["ingress", "dispatcher", "completion", "cold_start"];
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|f| names.iter().any(|n| n.contains(f.as_str())))
    {
        return;
    }
    let bins = release_binaries();
    let bench = Bench::setup();
    let runs: usize = std::env::var("CHATOPS_COLDSTART_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);

    let (mut ingress, mut dispatcher, mut completion) =
        (Pair::default(), Pair::default(), Pair::default());
    for k in 0..WARM_UP + runs {
        let floor_first = k % 2 == 0;
        let keep = k >= WARM_UP;
        let mut ing = [(true, &bins.ingress_floor), (false, &bins.ingress)];
        let mut dis = [(true, &bins.dispatcher_floor), (false, &bins.dispatcher)];
        let mut com = [(true, &bins.completion_floor), (false, &bins.completion)];
        if !floor_first {
            ing.reverse();
            dis.reverse();
            com.reverse();
        }
        for (floor, bin) in ing {
            let t = bench.ingress(bin);
            if keep {
                ingress.push(floor, t);
            }
        }
        for (floor, bin) in dis {
            let t = bench.dispatcher(bin, floor);
            if keep {
                dispatcher.push(floor, t);
            }
        }
        for (floor, bin) in com {
            // Each start gets runs of its own: a hook answered twice is a duplicate.
            let (run, second) = (bench.ended_run(), bench.ended_run());
            let t = bench.completion(bin, &run, &second, floor);
            if keep {
                completion.push(floor, t);
            }
        }
    }
    bench.purge();

    let ri = report(
        "ingress",
        "SQS send to moto",
        1.25,
        &mut ingress,
        &bins.ingress_floor,
        &bins.ingress,
    );
    let rd = report(
        "dispatcher",
        "SQS event with a RunRequest; floor: 1 GitLab GET + 1 DynamoDB PutItem",
        1.5,
        &mut dispatcher,
        &bins.dispatcher_floor,
        &bins.dispatcher,
    );
    let rc = report(
        "completion",
        "final Pipeline Hook; floor: 1 DynamoDB GetItem + 1 log GET + 1 Slack POST",
        1.5,
        &mut completion,
        &bins.completion_floor,
        &bins.completion,
    );
    println!();
    println!(
        "cold start ratios (function/floor, medians of {runs} interleaved starts each): \
         ingress {ri:.2}, dispatcher {rd:.2}, completion {rc:.2}"
    );
    println!();
}
