//! Completion end to end through its real interfaces: GitLab's documented webhook payloads
//! (`../shared/fixtures/gitlab-webhooks`, ids patched to the run) go into
//! `Completion::handle_webhook`; the job and its log come from the GitLab HTTP stand-in through
//! `GitLabClient`; run records live in DynamoDB (moto) through `DynamoStore`; replies go to
//! the Slack HTTP stand-in through `SlackApi`. Time is a `ManualClock`, never slept.

mod support;

use chatops_adapters::dynamo::DynamoStore;
use chatops_adapters::gitlab::GitLabClient;
use chatops_adapters::mattermost::MattermostApi;
use chatops_adapters::slack::SlackApi;
use chatops_core::chat::OutgoingMessage;
use chatops_core::clock::Clock;
use chatops_core::completion::{Completion, CompletionConfig, SweepReport};
use chatops_core::delivery::{ChatSettings, Deliverer, Route};
use chatops_core::dispatcher::REQUEST_ID_VARIABLE;
use chatops_core::finish::RETRY_SOON_SECS;
use chatops_core::gitlab::{GitLab, Status};
use chatops_core::ids::{JobId, ProjectId};
use chatops_core::run::{RunRecord, RunStatus};
use chatops_core::secret::Secret;
use chatops_core::store::RunStore;
use chatops_core::web::HttpRequest;
use chatops_sim::gitlab::{Fault, GitLabStandin, StandinCiJob};
use chatops_sim::slack::{SlackStandIn, Via};
use chatops_sim::ManualClock;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const T0: u64 = 1_767_225_600;
const HOOK_SECRET: &str = "hook-secret";
const BOT_TOKEN: &str = "xoxb-test-bot";
const PROJECT: u64 = 42;

const PIPELINE_FIXTURE: &str = include_str!("fixtures/gitlab-webhooks/pipeline_event.json");
const JOB_FIXTURE: &str = include_str!("fixtures/gitlab-webhooks/job_event.clean.json");
const JOB_PUBLISHED: &str = include_str!("fixtures/gitlab-webhooks/job_event.json");

struct H {
    gl: GitLabStandin,
    slack: SlackStandIn,
    store: Arc<DynamoStore>,
    clock: ManualClock,
    c: Completion,
    run: RunRecord,
}

struct Opts {
    bot_token: bool,
    manual: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            bot_token: true,
            manual: false,
        }
    }
}

async fn harness(opts: Opts) -> H {
    let clock = ManualClock::at(T0);
    let slack = SlackStandIn::start_with(BOT_TOKEN, Arc::new(clock.clone()), true)
        .await
        .unwrap();
    let gl = GitLabStandin::start().await;
    let st = gl.state();
    st.add_project(PROJECT, "group/proj");
    let mut job = StandinCiJob::chat("deploy");
    if opts.manual {
        job = job.manual();
    }
    st.set_ci_jobs(PROJECT, vec![job]);
    let client = GitLabClient::new(&gl.url(), Secret::new(gl.token())).unwrap();
    let request = support::run_request(
        &support::unique_name("req"),
        "deploy",
        "production",
        &slack.response_url("T1"),
        T0,
    );
    let vars = vec![
        ("CHATOPS_JOB".to_string(), "deploy".to_string()),
        (
            REQUEST_ID_VARIABLE.to_string(),
            request.request_id.as_str().to_string(),
        ),
    ];
    let pipeline = client
        .create_pipeline(ProjectId(PROJECT), "main", &vars)
        .await
        .unwrap();
    let jobs = client
        .pipeline_jobs(ProjectId(PROJECT), pipeline.id)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);

    let cfg = support::aws_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique_name("completion");
    DynamoStore::create_table(&dynamo, &table).await.unwrap();
    let store = Arc::new(DynamoStore::new(dynamo, table.clone()));

    let mut run = RunRecord::claimed(request, T0, 60);
    run.status = if opts.manual {
        RunStatus::WaitingManual
    } else {
        RunStatus::Running
    };
    run.project_id = Some(ProjectId(PROJECT));
    run.pipeline_id = Some(pipeline.id);
    run.job_id = Some(jobs[0].id);
    run.job_url = Some(jobs[0].web_url.clone());
    // As the dispatcher leaves it: the sweep first looks after 5 minutes.
    run.due_at = T0 + 300;
    store.save_run(&run).await.unwrap();

    let token = opts.bot_token.then(|| Secret::new(BOT_TOKEN));
    let config = CompletionConfig {
        audit: Default::default(),
        webhook_secret: Secret::new(HOOK_SECRET),
        gitlab_url: gl.url(),
        gitlab_token: Secret::new(gl.token()),
        runs_table: table,
        chat: ChatSettings {
            slack_bot_token: token.clone(),
            slack_api_url: slack.api_url(),
            ..ChatSettings::default()
        },
        log_retry_delay: Duration::ZERO,
        log_retries: 2,
    };
    let store_dyn: Arc<dyn RunStore> = store.clone();
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let deliverer = Deliverer {
        slack: Arc::new(SlackApi::new(&slack.api_url(), token)),
        mattermost: Arc::new(MattermostApi::new(None, None)),
        mattermost_buttons: None,
        store: store_dyn.clone(),
        clock: clock_dyn.clone(),
    };
    let c = Completion {
        audit: Default::default(),
        config,
        gitlab: Arc::new(client),
        store: store_dyn,
        deliverer,
        clock: clock_dyn,
    };
    H {
        gl,
        slack,
        store,
        clock,
        c,
        run,
    }
}

impl H {
    fn job(&self) -> u64 {
        self.run.job_id.unwrap().0
    }

    fn finish(&self, status: Status, log: Vec<u8>) {
        self.gl.state().finish_job(self.job(), status, log);
    }

    /// GitLab's documented Job Hook, patched to this run's job.
    fn job_hook(&self, status: &str) -> Value {
        let mut v: Value = serde_json::from_str(JOB_FIXTURE).unwrap();
        v["build_id"] = json!(self.job());
        v["build_name"] = json!("deploy");
        v["build_status"] = json!(status);
        v["pipeline_id"] = json!(self.run.pipeline_id.unwrap().0);
        v["project_id"] = json!(PROJECT);
        v["project"]["id"] = json!(PROJECT);
        v
    }

    /// GitLab's documented Pipeline Hook, patched to this run's pipeline and job.
    fn pipeline_hook(&self, status: &str) -> Value {
        let mut v: Value = serde_json::from_str(PIPELINE_FIXTURE).unwrap();
        v["object_attributes"]["id"] = json!(self.run.pipeline_id.unwrap().0);
        v["object_attributes"]["status"] = json!(status);
        v["object_attributes"]["source"] = json!("api");
        v["object_attributes"]["variables"] = json!([
            {"key": "CHATOPS_JOB", "value": "deploy"},
            {"key": REQUEST_ID_VARIABLE, "value": self.run.request.request_id.as_str()},
        ]);
        v["project"]["id"] = json!(PROJECT);
        v["project"]["web_url"] = json!(format!("{}/group/proj", self.gl.url()));
        let mut build = v["builds"][1].clone();
        build["id"] = json!(self.job());
        build["name"] = json!("deploy");
        build["status"] = json!(status);
        build["duration"] = json!(17.0);
        build["failure_reason"] = if status == "failed" {
            json!("script_failure")
        } else {
            Value::Null
        };
        v["builds"] = json!([build]);
        v
    }

    async fn send(&self, event: &str, body: &Value, key: &str) -> (u16, Value) {
        let resp = self
            .c
            .handle_webhook(request(event, &body.to_string(), HOOK_SECRET, Some(key)))
            .await;
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_str(resp.body()).unwrap_or(Value::Null),
        )
    }

    async fn stored(&self) -> RunRecord {
        self.store
            .get_run(&self.run.request.request_id)
            .await
            .unwrap()
            .unwrap()
    }

    fn trace_reads(&self) -> usize {
        self.gl
            .state()
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/trace"))
            .count()
    }
}

fn request(event: &str, body: &str, token: &str, key: Option<&str>) -> HttpRequest {
    let mut b = http::Request::builder()
        .method("POST")
        .uri("/gitlab/webhook")
        .header("content-type", "application/json")
        .header("x-gitlab-event", event)
        .header("x-gitlab-token", token);
    if let Some(k) = key {
        b = b
            .header("idempotency-key", k)
            .header("x-gitlab-event-uuid", format!("uuid-{k}"));
    }
    b.body(bytes::Bytes::from(body.to_owned())).unwrap()
}

/// A runner log as GitLab stores it: sections, echoed commands, ANSI colours.
fn runner_log(commands: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::from(
        "\x1b[0KRunning with gitlab-runner 17.0.0 (44feccdf)\n\x1b[0;m\
         section_start:1767225601:prepare_script\r\x1b[0K\x1b[0K\x1b[36;1mPreparing environment\x1b[0;m\n\
         Running on runner-1 via host...\n\
         section_end:1767225602:prepare_script\r\x1b[0K\
         section_start:1767225602:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" stage of the job script\x1b[0;m\n",
    );
    for (cmd, out) in commands {
        s.push_str(&format!("\x1b[32;1m$ {cmd}\x1b[0;m\n"));
        if !out.is_empty() {
            s.push_str(out);
            s.push('\n');
        }
    }
    s.push_str("section_end:1767225610:step_script\r\x1b[0K");
    s.into_bytes()
}

fn succeeded(mut log: Vec<u8>) -> Vec<u8> {
    log.extend_from_slice(b"\x1b[32;1mJob succeeded\x1b[0;m\n");
    log
}

fn posted_text(h: &H) -> String {
    h.slack.render_transcript()
}

#[tokio::test]
async fn success_reply_goes_to_the_response_url() {
    let h = harness(Opts::default()).await;
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("echo \"Hello World.\"", "Hello World.")])),
    );
    let (status, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "k1")
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("replied")),
        "{body}"
    );
    let t = h.slack.transcript();
    assert_eq!(t.len(), 1);
    assert!(matches!(t[0].via, Via::ResponseUrl { .. }));
    assert_eq!(t[0].response_type.as_deref(), Some("in_channel"));
    let text = posted_text(&h);
    assert!(text.contains("@U1 `deploy` succeeded"), "{text}");
    assert!(text.contains("Hello World."), "{text}");
    assert!(
        !text.contains("echo"),
        "one command shows output only: {text}"
    );
    let stored = h.stored().await;
    assert_eq!(stored.status, RunStatus::Replied);
    assert_eq!(stored.response_url_uses, 1);
    assert_eq!(h.slack.response_url_uses(&h.run.request.response_url), 1);
}

#[tokio::test]
async fn multi_command_reply_shows_commands() {
    let h = harness(Opts::default()).await;
    h.finish(
        Status::Success,
        succeeded(runner_log(&[
            ("echo a", "a"),
            ("echo '<b> & c'", "<b> & c"),
        ])),
    );
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "p1")
        .await;
    assert_eq!(body["result"], "replied", "{body}");
    let text = posted_text(&h);
    assert!(
        text.contains("$ echo a\n    a\n    $ echo '<b> & c'\n    <b> & c"),
        "{text}"
    );
    let raw = serde_json::to_string(&h.slack.transcript()[0].blocks).unwrap();
    assert!(
        raw.contains("&lt;b&gt; &amp; c"),
        "escaped on the wire: {raw}"
    );
}

#[tokio::test]
async fn failure_says_why_with_the_last_lines() {
    let h = harness(Opts::default()).await;
    let mut log = runner_log(&[("./deploy.sh production", "error: production is locked")]);
    log.extend_from_slice(b"\x1b[31;1mERROR: Job failed: exit code 1\x1b[0;m\n");
    h.finish(Status::Failed, log);
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("failed"), "f1")
        .await;
    assert_eq!(body["result"], "replied", "{body}");
    let text = posted_text(&h);
    assert!(text.contains("`deploy` failed"), "{text}");
    assert!(text.contains("(script failure)"), "{text}");
    assert!(text.contains("ERROR: Job failed: exit code 1"), "{text}");
    assert!(
        text.contains("/group/proj/-/jobs/"),
        "link to the job: {text}"
    );
}

#[tokio::test]
async fn cancelled_is_said_as_cancelled() {
    let h = harness(Opts::default()).await;
    h.finish(Status::Canceled, runner_log(&[("sleep 600", "")]));
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("canceled"), "c1")
        .await;
    assert_eq!(body["result"], "replied", "{body}");
    assert!(posted_text(&h).contains("`deploy` was cancelled"));
}

#[tokio::test]
async fn empty_output_says_succeeded_with_no_output() {
    let h = harness(Opts::default()).await;
    h.finish(Status::Success, succeeded(runner_log(&[("true", "")])));
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "e1")
        .await;
    assert_eq!(body["result"], "replied", "{body}");
    let text = posted_text(&h);
    assert!(
        text.contains("succeeded") && text.contains("printed no output"),
        "{text}"
    );
}

#[tokio::test]
async fn huge_output_is_shortened_and_uploaded_as_a_file() {
    let h = harness(Opts::default()).await;
    let lines: Vec<String> = (1..=5000).map(|i| format!("row {i} <ok>")).collect();
    let out = lines.join("\n");
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("./report", &out)])),
    );
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "h1")
        .await;
    assert_eq!(body["result"], "replied", "{body}");
    let t = h.slack.transcript();
    assert_eq!(t.len(), 2, "{}", posted_text(&h));
    let text = posted_text(&h);
    assert!(
        text.contains("row 1 <ok>") && text.contains("row 5000 <ok>"),
        "{text}"
    );
    assert!(!text.contains("row 2500 <ok>"), "middle not inline");
    assert!(text.contains("Full output in the log"), "{text}");
    assert!(
        !text.contains("attached"),
        "the message never claims the file: {text}"
    );
    assert_eq!(t[1].via, Via::FileUpload);
    assert_eq!(t[1].channel.as_deref(), Some("C1"));
    let file = t[1].file.as_ref().unwrap();
    assert_eq!(file.content, out);
    assert!(file.filename.starts_with("deploy-"));
}

#[tokio::test]
async fn huge_output_without_bot_token_links_the_log() {
    let h = harness(Opts {
        bot_token: false,
        ..Opts::default()
    })
    .await;
    let out = (1..=5000)
        .map(|i| format!("row {i}"))
        .collect::<Vec<_>>()
        .join("\n");
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("./report", &out)])),
    );
    h.send("Pipeline Hook", &h.pipeline_hook("success"), "h2")
        .await;
    let t = h.slack.transcript();
    assert_eq!(t.len(), 1);
    assert!(posted_text(&h).contains("Full output in the log: job #"));
}

#[tokio::test]
async fn no_reply_section_is_concluded_after_retries_with_the_link() {
    let h = harness(Opts::default()).await;
    h.finish(
        Status::Success,
        b"\x1b[32;1mJob succeeded\x1b[0;m\n".to_vec(),
    );
    // The webhook does not wait for a log that may still be incomplete…
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "n1")
        .await;
    assert_eq!(body["result"], "deferred", "{body}");
    assert_eq!(h.trace_reads(), 1);
    assert!(h.slack.transcript().is_empty());
    // …the sweep reads it again (twice more) off the webhook path, then concludes.
    h.clock.advance(RETRY_SOON_SECS);
    let report = h.c.sweep(h.clock.now()).await;
    assert_eq!(report.replied, 1, "{report:?}");
    assert_eq!(
        h.trace_reads(),
        4,
        "webhook, then first read and two retries"
    );
    let text = posted_text(&h);
    assert!(text.contains("no reply section"), "{text}");
    assert!(text.contains("/-/jobs/"), "{text}");
}

#[tokio::test]
async fn a_log_completed_after_the_job_ended_is_waited_for() {
    let mut h = harness(Opts::default()).await;
    h.c.config.log_retry_delay = Duration::from_millis(300);
    h.c.config.log_retries = 5;
    h.finish(Status::Success, b"Running with gitlab-runner\n".to_vec());
    let st = h.gl.state();
    let job = h.job();
    let full = succeeded(runner_log(&[("echo late", "late")]));
    let writer = tokio::spawn(async move {
        while !st.requests().iter().any(|r| r.path.ends_with("/trace")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        st.set_trace(job, full);
    });
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "l1")
        .await;
    writer.await.unwrap();
    assert_eq!(body["result"], "deferred", "{body}");
    h.clock.advance(RETRY_SOON_SECS);
    let report = h.c.sweep(h.clock.now()).await;
    assert_eq!(report.replied, 1, "{report:?}");
    let text = posted_text(&h);
    assert!(
        text.contains("late") && !text.contains("no reply section"),
        "{text}"
    );
}

/// The webhook is answered well within a second whatever GitLab and Slack do: here the
/// trace takes 8 s and Slack answers 429. The reply still comes, exactly once, off the
/// webhook path.
#[tokio::test]
async fn a_slow_trace_and_a_rate_limited_slack_do_not_hold_the_webhook() {
    let h = harness(Opts::default()).await;
    h.finish(Status::Success, succeeded(runner_log(&[("echo ok", "ok")])));
    h.gl.state()
        .fail_next(Fault::Delay(Duration::from_secs(8)), 1, Some("/trace"));
    let started = std::time::Instant::now();
    let (status, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "slow")
        .await;
    let took = started.elapsed();
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("deferred")),
        "{body}"
    );
    assert!(took < Duration::from_secs(1), "the webhook took {took:?}");

    // Slack rate-limits the channel when the sweep gets to it (after 30 minutes the reply
    // goes through chat.postMessage): the webhook would not wait, the sweep does.
    h.clock.advance(31 * 60);
    h.slack.rate_limit_next("C1", 1);
    let started = std::time::Instant::now();
    let (_, again) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "slow-2")
        .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(again["result"], "deferred", "{again}");
    assert!(h.slack.transcript().is_empty());

    h.clock.advance(RETRY_SOON_SECS);
    let report = h.c.sweep(h.clock.now()).await;
    assert_eq!(report.replied, 1, "{report:?}");
    assert_eq!(h.slack.transcript().len(), 1);
    assert!(posted_text(&h).contains("ok"));
    // And never again.
    h.clock.advance(3600);
    assert_eq!(h.c.sweep(h.clock.now()).await.replied, 0);
    let (_, late) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "slow-3")
        .await;
    assert_eq!(late["result"], "duplicate");
    assert_eq!(h.slack.transcript().len(), 1);
}

/// Job Hooks carry no pipeline variables: they are answered at once, with no I/O.
#[tokio::test]
async fn job_events_are_answered_without_any_call() {
    let h = harness(Opts::default()).await;
    h.finish(Status::Success, succeeded(runner_log(&[("echo x", "x")])));
    let before = h.gl.state().requests().len();
    let (_, body) = h.send("Job Hook", &h.job_hook("success"), "j1").await;
    assert_eq!(body["result"], "ignored", "{body}");
    // A pipeline event of a pipeline we did not start, and one not finished: no I/O either.
    let mut foreign = h.pipeline_hook("success");
    foreign["object_attributes"]["variables"] = json!([]);
    let (_, f) = h.send("Pipeline Hook", &foreign, "j2").await;
    assert_eq!(f["result"], "ignored", "{f}");
    let (_, r) = h
        .send("Pipeline Hook", &h.pipeline_hook("running"), "j3")
        .await;
    assert_eq!(r["result"], "waiting", "{r}");
    assert_eq!(h.gl.state().requests().len(), before, "no GitLab call");
    assert!(h.slack.transcript().is_empty());
    assert_eq!(h.stored().await.status, RunStatus::Running);
}

#[tokio::test]
async fn after_30_minutes_the_reply_goes_through_chat_post_message() {
    let h = harness(Opts::default()).await;
    h.finish(Status::Success, succeeded(runner_log(&[("echo hi", "hi")])));
    h.clock.advance(30 * 60);
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "t1")
        .await;
    assert_eq!(body["result"], "replied", "{body}");
    assert_eq!(body["detail"], "Channel");
    let t = h.slack.transcript();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].via, Via::PostMessage);
    assert_eq!(t[0].channel.as_deref(), Some("C1"));
    assert_eq!(h.stored().await.response_url_uses, 0);
}

#[tokio::test]
async fn response_url_is_used_at_most_five_times() {
    let h = harness(Opts::default()).await;
    // Five follow-ups (as the dispatcher sends) use the response_url up.
    for i in 0..5 {
        let route =
            h.c.deliverer
                .deliver(
                    &h.run.request,
                    &OutgoingMessage::in_channel(format!("update {i}")),
                )
                .await
                .unwrap();
        assert_eq!(route, Route::ResponseUrl);
    }
    h.finish(Status::Success, succeeded(runner_log(&[("echo hi", "hi")])));
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "u1")
        .await;
    assert_eq!(body["detail"], "Channel", "{body}");
    assert_eq!(h.slack.response_url_uses(&h.run.request.response_url), 5);
    assert!(h.slack.refusals().is_empty(), "{:?}", h.slack.refusals());
    assert_eq!(h.slack.transcript().last().unwrap().via, Via::PostMessage);
}

#[tokio::test]
async fn a_used_up_response_url_falls_back_to_the_channel() {
    let h = harness(Opts::default()).await;
    // Someone else used the URL five times: our count says 0, Slack says used_url.
    let http = reqwest::Client::new();
    for _ in 0..5 {
        http.post(&h.run.request.response_url)
            .json(&json!({"text": "elsewhere"}))
            .send()
            .await
            .unwrap();
    }
    h.finish(Status::Success, succeeded(runner_log(&[("echo hi", "hi")])));
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "u2")
        .await;
    assert_eq!(body["detail"], "Channel", "{body}");
    assert_eq!(h.slack.refusals()[0].error, "used_url");
}

#[tokio::test]
async fn duplicated_webhooks_yield_one_post() {
    let h = harness(Opts::default()).await;
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("echo once", "once")])),
    );
    let hook = h.pipeline_hook("success");
    let (_, first) = h.send("Pipeline Hook", &hook, "same-key").await;
    let (_, again) = h.send("Pipeline Hook", &hook, "same-key").await;
    let (_, other) = h.send("Pipeline Hook", &hook, "other").await;
    let (_, job) = h.send("Job Hook", &h.job_hook("success"), "job").await;
    assert_eq!(first["result"], "replied");
    assert_eq!(again["result"], "duplicate");
    assert_eq!(other["result"], "duplicate");
    assert_eq!(job["result"], "ignored");
    assert_eq!(h.slack.transcript().len(), 1);
}

#[tokio::test]
async fn concurrent_webhooks_yield_one_post() {
    let h = harness(Opts::default()).await;
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("echo once", "once")])),
    );
    let job_hook = h.job_hook("success").to_string();
    let pipe_hook = h.pipeline_hook("success").to_string();
    let reqs: Vec<HttpRequest> = (0..8)
        .map(|i| {
            let (event, body) = if i % 2 == 0 {
                ("Job Hook", &job_hook)
            } else {
                ("Pipeline Hook", &pipe_hook)
            };
            request(event, body, HOOK_SECRET, Some(&format!("key-{i}")))
        })
        .collect();
    let results =
        futures_util::future::join_all(reqs.into_iter().map(|r| h.c.handle_webhook(r))).await;
    let replied = results
        .iter()
        .filter(|r| r.body().contains("\"replied\""))
        .count();
    assert_eq!(
        replied,
        1,
        "{:?}",
        results.iter().map(|r| r.body()).collect::<Vec<_>>()
    );
    assert!(results.iter().all(|r| r.status() == 200));
    assert_eq!(h.slack.transcript().len(), 1);
}

#[tokio::test]
async fn out_of_order_events_do_not_reply_early_or_twice() {
    let h = harness(Opts::default()).await;
    h.gl.state().set_job_status(h.job(), Status::Running);
    // A pipeline still running: nothing is read, nothing posted.
    let (_, early) = h
        .send("Pipeline Hook", &h.pipeline_hook("running"), "o1")
        .await;
    assert_eq!(early["result"], "waiting", "{early}");
    h.finish(Status::Success, succeeded(runner_log(&[("echo x", "x")])));
    let (_, done) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "o2")
        .await;
    assert_eq!(done["result"], "replied", "{done}");
    // A late "running" event after the reply, then a repeated success.
    let (_, late) = h
        .send("Pipeline Hook", &h.pipeline_hook("running"), "o3")
        .await;
    assert_eq!(late["result"], "waiting", "{late}");
    let (_, again) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "o4")
        .await;
    assert_eq!(again["result"], "duplicate", "{again}");
    assert_eq!(h.slack.transcript().len(), 1);
}

#[tokio::test]
async fn manual_job_replies_when_played_and_finished() {
    let h = harness(Opts {
        manual: true,
        ..Opts::default()
    })
    .await;
    let (_, waiting) = h
        .send("Pipeline Hook", &h.pipeline_hook("manual"), "m1")
        .await;
    assert_eq!(waiting["result"], "waiting");
    assert_eq!(h.stored().await.status, RunStatus::WaitingManual);
    let report = h.c.sweep(T0 + 3600).await;
    assert_eq!(report.still_running, 1, "{report:?}");
    assert!(h.gl.state().play_job(h.job()));
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("echo played", "played")])),
    );
    h.clock.advance(3600);
    let (_, done) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "m2")
        .await;
    assert_eq!(done["result"], "replied", "{done}");
    assert!(posted_text(&h).contains("played"));
}

#[tokio::test]
async fn a_missed_webhook_is_completed_by_the_sweep() {
    let h = harness(Opts::default()).await;
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("echo swept", "swept")])),
    );
    // Too recent: left alone.
    assert_eq!(h.c.sweep(T0 + 10).await, SweepReport::default());
    h.clock.advance(301);
    let report = h.c.sweep(T0 + 301).await;
    assert_eq!(report.replied, 1, "{report:?}");
    assert!(posted_text(&h).contains("swept"));
    assert_eq!(h.stored().await.status, RunStatus::Replied);
    assert_eq!(h.c.sweep(T0 + 900).await.examined, 0);
    // A webhook arriving after the sweep replied changes nothing.
    let (_, late) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "s1")
        .await;
    assert_eq!(late["result"], "duplicate");
    assert_eq!(h.slack.transcript().len(), 1);
}

#[tokio::test]
async fn bad_or_missing_token_is_rejected() {
    let h = harness(Opts::default()).await;
    h.finish(Status::Success, succeeded(runner_log(&[("echo x", "x")])));
    let body = h.job_hook("success").to_string();
    for token in ["wrong", "", "hook-secreT"] {
        let resp =
            h.c.handle_webhook(request("Job Hook", &body, token, Some("b1")))
                .await;
        assert_eq!(resp.status(), 401);
    }
    assert!(h.slack.transcript().is_empty());
}

#[tokio::test]
async fn malformed_and_foreign_payloads() {
    let h = harness(Opts::default()).await;
    let resp =
        h.c.handle_webhook(request("Job Hook", JOB_PUBLISHED, HOOK_SECRET, Some("x1")))
            .await;
    assert_eq!(resp.status(), 400, "{}", resp.body());
    // The documented payloads as published are for pipelines we did not start.
    let resp =
        h.c.handle_webhook(request(
            "Pipeline Hook",
            PIPELINE_FIXTURE,
            HOOK_SECRET,
            Some("x2"),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.body().contains("not a pipeline chatops started"));
    let resp =
        h.c.handle_webhook(request("Push Hook", "{}", HOOK_SECRET, Some("x3")))
            .await;
    assert_eq!(resp.status(), 200);
    assert!(h.slack.transcript().is_empty());
}

#[tokio::test]
async fn bot_not_in_channel_falls_back_to_a_direct_message() {
    let h = harness(Opts::default()).await;
    h.slack.remove_bot_from("C1");
    h.finish(Status::Success, succeeded(runner_log(&[("echo dm", "dm")])));
    h.clock.advance(31 * 60);
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "d1")
        .await;
    assert_eq!(body["detail"], "DirectMessage", "{body}");
    let t = h.slack.transcript();
    assert_eq!(t[0].channel.as_deref(), Some("DU1"));
    assert!(posted_text(&h).contains("I could not post in #C1"));
    assert_eq!(h.slack.refusals()[0].error, "not_in_channel");
}

#[tokio::test]
async fn rate_limited_post_is_retried_after_retry_after() {
    let h = harness(Opts::default()).await;
    h.slack.rate_limit_next("C1", 2);
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("echo later", "later")])),
    );
    h.clock.advance(31 * 60);
    // The webhook does not wait out a 429: the reply is given back at once…
    let (_, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "r1")
        .await;
    assert_eq!(body["result"], "deferred", "{body}");
    assert_eq!(h.slack.refusals()[0].status, 429);
    // …and the sweep, which may wait, delivers it after Retry-After.
    h.clock.advance(RETRY_SOON_SECS);
    let report = h.c.sweep(h.clock.now()).await;
    assert_eq!(report.replied, 1, "{report:?}");
    assert_eq!(h.slack.refusals().len(), 2);
    assert_eq!(h.slack.transcript().len(), 1);
}

#[tokio::test]
async fn undeliverable_reply_is_left_for_the_sweep_and_not_lost() {
    let h = harness(Opts::default()).await;
    // Slack keeps answering 429 longer than one invocation waits.
    h.slack.rate_limit_next("C1", 4);
    h.finish(Status::Success, succeeded(runner_log(&[("echo x", "x")])));
    h.clock.advance(31 * 60);
    let (status, body) = h
        .send("Pipeline Hook", &h.pipeline_hook("success"), "z1")
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("deferred")),
        "{body}"
    );
    let stored = h.stored().await;
    assert_eq!(stored.status, RunStatus::Running);
    assert_eq!(stored.replied_at, None);
    assert_eq!(
        stored.reply_lease_until, 0,
        "the reply was given back, not held"
    );
    assert!(h.slack.transcript().is_empty());
    // The sweep tries soon (not after a 120 s lease): still limited, given back again.
    h.clock.advance(RETRY_SOON_SECS);
    let report = h.c.sweep(h.clock.now()).await;
    assert_eq!(report.deferred, 1, "{report:?}");
    h.clock.advance(RETRY_SOON_SECS * 2);
    let report = h.c.sweep(h.clock.now()).await;
    assert_eq!(report.replied, 1, "{report:?}");
    assert_eq!(h.slack.transcript().len(), 1);
    assert_eq!(h.stored().await.status, RunStatus::Replied);
}

#[tokio::test]
async fn lambda_events_reach_the_handler_and_the_sweep() {
    let h = harness(Opts::default()).await;
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("echo via lambda", "via lambda")])),
    );
    let mut event: Value =
        serde_json::from_str(include_str!("../events/gitlab-job-hook.json")).unwrap();
    event["headers"]["x-gitlab-token"] = json!(HOOK_SECRET);
    event["headers"]["x-gitlab-event"] = json!("Pipeline Hook");
    event["body"] = json!(h.pipeline_hook("success").to_string());
    let out = chatops_adapters::lambda::completion_event(&h.c, event)
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    assert!(out["body"].as_str().unwrap().contains("replied"), "{out}");
    let sweep: Value =
        serde_json::from_str(include_str!("../events/eventbridge-sweep.json")).unwrap();
    let report = chatops_adapters::lambda::completion_event(&h.c, sweep)
        .await
        .unwrap();
    assert_eq!(report["examined"], 0, "{report}");
    assert_eq!(h.slack.transcript().len(), 1);
}

#[tokio::test]
async fn unknown_job_is_reported_instead_of_left_open() {
    let h = harness(Opts::default()).await;
    let mut run = h.stored().await;
    run.job_id = Some(JobId(999_999));
    h.store.save_run(&run).await.unwrap();
    let report = h.c.sweep(T0 + 3600).await;
    assert_eq!(report.replied, 1, "{report:?}");
    assert!(posted_text(&h).contains("no longer exists on GitLab"));
}

/// Item 6: the sweep cannot be starved. 24 runs wait for a manual job nobody plays, GitLab
/// answers each look slowly, and one run's webhook was lost. Within a bounded time budget per
/// sweep, the most overdue runs come first, each waiting run is pushed back hours, and the
/// lost-webhook run gets its reply by the next sweep.
#[tokio::test]
async fn the_sweep_is_bounded_and_fair() {
    let h = harness(Opts::default()).await;
    let st = h.gl.state();
    st.set_ci_jobs(PROJECT, vec![StandinCiJob::chat("wait").manual()]);
    let client = GitLabClient::new(&h.gl.url(), Secret::new(h.gl.token())).unwrap();
    for i in 0..24 {
        let request = support::run_request(
            &support::unique_name("waiting"),
            "wait",
            "",
            &h.slack.response_url("T1"),
            T0,
        );
        let vars = vec![("CHATOPS_JOB".to_string(), "wait".to_string())];
        let p = client
            .create_pipeline(ProjectId(PROJECT), "main", &vars)
            .await
            .unwrap();
        let jobs = client
            .pipeline_jobs(ProjectId(PROJECT), p.id)
            .await
            .unwrap();
        let mut run = RunRecord::claimed(request, T0, 60);
        run.status = RunStatus::WaitingManual;
        run.project_id = Some(ProjectId(PROJECT));
        run.pipeline_id = Some(p.id);
        run.job_id = Some(jobs[0].id);
        // Due before the lost-webhook run: they would be looked at first, forever.
        run.due_at = T0 + 100 + i;
        h.store.save_run(&run).await.unwrap();
    }
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("echo swept", "swept")])),
    );
    // Every look at a job takes 0.5 s.
    st.fail_next(
        Fault::Delay(Duration::from_millis(500)),
        100,
        Some("/jobs/"),
    );
    h.clock.advance(400);
    let budget = Duration::from_secs(5);
    let first =
        h.c.sweep_until(h.clock.now(), std::time::Instant::now() + budget)
            .await;
    assert!(first.left > 0, "bounded: {first:?}");
    assert_eq!(first.replied, 0, "{first:?}");
    // The next sweeps go on where the last stopped: the waiting runs looked at are pushed
    // back hours, so the lost-webhook run comes up.
    let mut sweeps = 1;
    while h.slack.transcript().is_empty() {
        assert!(sweeps < 6, "starved after {sweeps} sweeps");
        h.clock.advance(60);
        h.c.sweep_until(h.clock.now(), std::time::Instant::now() + budget)
            .await;
        sweeps += 1;
    }
    assert!(posted_text(&h).contains("swept"));
    let waiting = h.store.due_runs(h.clock.now() + 3600, 100).await.unwrap();
    assert!(
        waiting
            .iter()
            .all(|r| r.request.job != "wait" || r.checks == 0),
        "a waiting run looked at is not due again within an hour"
    );
}

/// Item 7: a log that cannot be downloaded within the sweep's time still ends in an answer:
/// the job's result and its link.
#[tokio::test]
async fn a_log_too_slow_to_read_still_gets_an_answer_with_the_link() {
    let h = harness(Opts::default()).await;
    h.finish(
        Status::Success,
        succeeded(runner_log(&[("echo big", "big")])),
    );
    h.gl.state()
        .fail_next(Fault::Delay(Duration::from_secs(6)), 2, Some("/trace"));
    h.clock.advance(301);
    let report =
        h.c.sweep_until(
            h.clock.now(),
            std::time::Instant::now() + Duration::from_secs(4),
        )
        .await;
    assert_eq!(report.replied, 1, "{report:?}");
    let text = posted_text(&h);
    assert!(text.contains("could not be read in time"), "{text}");
    assert!(text.contains("/-/jobs/"), "{text}");
    assert_eq!(h.stored().await.status, RunStatus::Replied);
}
