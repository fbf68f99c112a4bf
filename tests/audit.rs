//! Issue 13 over HTTP, with SQS and DynamoDB on moto: local mode (the functions' own
//! handlers behind one port, dispatcher and sweep in process, wired by
//! `chatops_adapters::services` from the functions' variables) between the GitLab stand-in
//! (a real `.gitlab-ci.yml`, jobs run by a tiny executor, webhooks sent back) and the Slack
//! stand-in (which records every `response_url` post). Signed Slack and Mattermost commands
//! go in over HTTP; what people read comes back through the stand-in.
//!
//! - `help` answers the grammar at once, then lists exactly the contract jobs of a CI
//!   configuration that also holds non-chat jobs, `except: [chat]` jobs and jobs that get
//!   the contract wrong; once per minute per token from GitLab; nothing for the unlinked;
//!   an invalid configuration is said to be invalid, with GitLab's error;
//! - `status` and `history` after runs in two channels show only that channel's runs;
//! - every step of a full run, of a refusal by the dispatcher and of one by the ingress
//!   leaves its audit entry in the audit table, in order, with the input hashed;
//! - the audit table failing costs nothing but the table entries;
//! - `chatops audit` (the binary) reads the table, filters and formats.

mod support;

use bytes::Bytes;
use chatops::local::{Local, Running};
use chatops_adapters::audit::DynamoAudit;
use chatops_adapters::dynamo::DynamoStore;
use chatops_core::audit::{AuditEntry, AuditEvent, AuditLog, InputMode};
use chatops_core::clock::{Clock, SystemClock};
use chatops_core::config::Env;
use chatops_core::gitlab::Status;
use chatops_core::ids::{ChannelId, TeamId};
use chatops_core::run::{Platform, RunResult, RunStatus};
use chatops_core::secret::Secret;
use chatops_core::slack::verify::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use chatops_core::store::RunStore;
use chatops_sim::gitlab::{ExecJob, ExecOutcome, GitLabStandin, JobExecutor};
use chatops_sim::slack::{Post, SlackStandIn, Via};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROJECT: u64 = 42;
const BROKEN: u64 = 43;
const TEAM: &str = "T1";
const MM_TEAM: &str = "tm1";
const BOT: &str = "xoxb-audit-bot";
const SIGNING_SECRET: &str = "audit-signing-secret";
const MM_TOKEN: &str = "audit-mattermost-token";
const WEBHOOK_SECRET: &str = "audit-webhook-secret";

const ALICE: (&str, &str) = ("U1", "alice");
const BOB: (&str, &str) = ("U2", "bob");
const CAROL: (&str, &str) = ("U3", "carol");
const OPS: (&str, &str) = ("C1", "ops");
const DEV: (&str, &str) = ("C2", "dev");
const BROKEN_CHANNEL: (&str, &str) = ("C3", "broken");

/// The project's `.gitlab-ci.yml`: four chat jobs among everything else a real one holds.
const CI: &str = r#"
stages: [test, chatops, deploy]

variables:
  # Mentions the contract, but variables are no job.
  NOTE: "$CHATOPS_JOB == $CI_JOB_NAME"

# A template: hidden, so no job itself.
.chatops:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'

hello-world:
  extends: .chatops
  script:
    - echo "Hello World."

db-check:
  extends: .chatops
  script:
    - exit 1

restart:
  stage: chatops
  rules:
    - if: '$CI_JOB_NAME == $CHATOPS_JOB'
      when: manual
  script:
    - echo restarting

named:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == "named"'
  script:
    - echo named

# Never from chat (GitLab's except: [chat]); kept out of chat pipelines by the variable.
deploy-production:
  stage: deploy
  except:
    refs: [chat]
    variables: [$CHATOPS_JOB]
  script:
    - echo deploying

# An ordinary CI job.
test:
  stage: test
  rules:
    - if: '$CHATOPS_JOB'
      when: never
    - when: on_success
  script:
    - make test

# GitLab's own ChatOps style: an API pipeline never runs it.
old-style:
  stage: chatops
  only: [chat]
  script:
    - echo old

# The contract misspelt.
typo:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB'
  script:
    - echo typo

# The contract rule, but never.
never:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
      when: never
  script:
    - echo never
"#;

const RUNNABLE: &[&str] = &["db-check", "hello-world", "named", "restart"];

/// Finishes each job at once, in gitlab-runner's log format; `db-check` fails.
struct Runner;

#[async_trait::async_trait]
impl JobExecutor for Runner {
    async fn run(&self, job: ExecJob) -> ExecOutcome {
        let t = 1_730_000_000u64 + job.job_id;
        let (status, body, verdict) = if job.name == "db-check" {
            (
                Status::Failed,
                "\x1b[32;1m$ exit 1\x1b[0;m\n",
                "\x1b[31;1mERROR: Job failed: exit code 1\x1b[0;m",
            )
        } else {
            (
                Status::Success,
                "\x1b[32;1m$ echo ran\x1b[0;m\nran it\n",
                "\x1b[32;1mJob succeeded\x1b[0;m",
            )
        };
        let trace = format!(
            "Running with gitlab-runner 17.5.0\n\
             section_start:{t}:step_script\r\x1b[0KExecuting \"step_script\" stage of the job script\n\
             {body}section_end:{t}:step_script\r\x1b[0K{verdict}\n"
        );
        ExecOutcome {
            status,
            trace: trace.into_bytes(),
        }
    }
}

struct World {
    gitlab: GitLabStandin,
    slack: SlackStandIn,
    _running: Running,
    url: String,
    http: reqwest::Client,
    /// The tables, read by the test straight from moto.
    store: DynamoStore,
    audit: DynamoAudit,
    audit_table: String,
}

/// `audit_table`: create the audit table (`false`: AUDIT_TABLE names a table that does not
/// exist, so every audit write fails).
async fn world(audit_table_exists: bool) -> World {
    let gitlab = GitLabStandin::start().await;
    let gl = gitlab.state();
    gl.add_project(PROJECT, "group/proj");
    gl.add_project(BROKEN, "group/broken");
    gl.add_user(7, "alice");
    gl.set_member(PROJECT, 7, 30);
    gl.set_member(BROKEN, 7, 30);
    gl.add_user(8, "bob");
    gl.set_member(PROJECT, 8, 20); // a Reporter: may not run jobs
    gl.set_ci_yaml(PROJECT, CI);
    gl.set_ci_yaml(BROKEN, "hello: [unclosed");
    gl.set_executor(Arc::new(Runner));
    let slack = SlackStandIn::start_with(BOT, Arc::new(SystemClock), false)
        .await
        .expect("Slack stand-in");

    let sdk = support::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = support::unique_name("audit-runs");
    DynamoStore::create_table(&ddb, &table)
        .await
        .expect("runs table");
    let audit_table = support::unique_name("audit-log");
    if audit_table_exists {
        DynamoAudit::create_table(&ddb, &audit_table)
            .await
            .expect("audit table");
    }
    let queue_url = aws_sdk_sqs::Client::new(&sdk)
        .create_queue()
        .queue_name(support::unique_name("audit-q"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "2",
        )
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let env = Env::from_pairs([
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_owned()),
        ("MATTERMOST_TOKEN", MM_TOKEN.to_owned()),
        (
            "ALLOWED_RESPONSE_URL_PREFIXES",
            format!("{}/commands/", slack.base_url()),
        ),
        ("RUN_QUEUE_URL", queue_url),
        ("RUNS_TABLE", table.clone()),
        ("AUDIT_TABLE", audit_table.clone()),
        ("GITLAB_URL", gitlab.url()),
        ("GITLAB_TOKEN", gitlab.token()),
        ("GITLAB_PROJECT", "group/proj".to_owned()),
        (
            "CHANNEL_PROJECTS",
            format!("{}=group/broken", BROKEN_CHANNEL.0),
        ),
        ("GITLAB_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("SLACK_BOT_TOKEN", BOT.to_owned()),
        ("SLACK_API_URL", slack.api_url()),
        ("SWEEP_EVERY_SECS", "3600".to_owned()),
        (
            "LOCAL_USER_LINKS",
            format!("{TEAM}/U1=alice,{TEAM}/U2=bob,{MM_TEAM}/um1=alice"),
        ),
    ]);
    let local = Local::from_env(&env, true, Some(sdk.clone()))
        .await
        .expect("local mode over moto");
    let running = local.start(listener).expect("local mode serves");
    gl.set_webhook(
        &format!("{url}{}", chatops_core::completion::WEBHOOK_PATH),
        WEBHOOK_SECRET,
    );
    World {
        gitlab,
        slack,
        _running: running,
        url,
        http: reqwest::Client::new(),
        store: DynamoStore::new(ddb.clone(), table),
        audit: DynamoAudit::new(ddb, &audit_table, 400),
        audit_table,
    }
}

/// A command as sent, and where its follow-ups go.
struct Sent {
    answer: serde_json::Value,
    /// The `response_url` id in the Slack stand-in.
    id: String,
}

impl World {
    async fn slack_command(&self, user: (&str, &str), channel: (&str, &str), text: &str) -> Sent {
        let response_url = self.slack.response_url(TEAM);
        let trigger = format!("{}.{}", SystemClock.now(), response_url.len());
        let body = serde_urlencoded::to_string([
            ("token", "legacy-verification-token"),
            ("team_id", TEAM),
            ("team_domain", "acme"),
            ("channel_id", channel.0),
            ("channel_name", channel.1),
            ("user_id", user.0),
            ("user_name", user.1),
            ("command", "/chatops"),
            ("text", text),
            ("api_app_id", "A0AUDIT"),
            ("response_url", &response_url),
            ("trigger_id", &format!("{trigger}.{}", id_of(&response_url))),
        ])
        .expect("form");
        let ts = SystemClock.now().to_string();
        let sig = sign(&Secret::new(SIGNING_SECRET), &ts, body.as_bytes());
        let resp = self
            .http
            .post(format!("{}{}", self.url, chatops_core::ingress::SLACK_PATH))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(TIMESTAMP_HEADER, ts)
            .header(SIGNATURE_HEADER, sig)
            .body(Bytes::from(body))
            .send()
            .await
            .expect("the ingress answers");
        assert_eq!(resp.status(), 200, "{text}");
        Sent {
            answer: resp.json().await.expect("a JSON answer"),
            id: id_of(&response_url),
        }
    }

    async fn mattermost_command(&self, channel: (&str, &str), text: &str) -> Sent {
        let response_url = self.slack.response_url(MM_TEAM);
        let body = serde_urlencoded::to_string([
            ("token", MM_TOKEN),
            ("team_id", MM_TEAM),
            ("team_domain", "acme"),
            ("channel_id", channel.0),
            ("channel_name", channel.1),
            ("user_id", "um1"),
            ("user_name", "alice"),
            ("command", "/chatops"),
            ("text", text),
            ("response_url", &response_url),
            ("trigger_id", &format!("mm-{}", id_of(&response_url))),
        ])
        .expect("form");
        let resp = self
            .http
            .post(format!(
                "{}{}",
                self.url,
                chatops_core::ingress::MATTERMOST_PATH
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("the ingress answers");
        assert_eq!(resp.status(), 200, "{text}");
        Sent {
            answer: resp.json().await.expect("a JSON answer"),
            id: id_of(&response_url),
        }
    }

    /// What came back through the command's `response_url`.
    fn posts(&self, sent: &Sent) -> Vec<Post> {
        self.slack
            .transcript()
            .into_iter()
            .filter(|p| matches!(&p.via, Via::ResponseUrl { id, .. } if *id == sent.id))
            .collect()
    }

    /// The command's follow-ups once one contains `needle` (or panic after 20 s).
    async fn wait_for(&self, sent: &Sent, needle: &str) -> Vec<Post> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let posts = self.posts(sent);
            if posts.iter().any(|p| p.text.contains(needle)) {
                return posts;
            }
            assert!(
                Instant::now() < deadline,
                "no follow-up saying {needle:?}; got {posts:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the channel's runs are `n` and all at rest (replied, refused, or waiting
    /// to be played), as `status` and `history` read them.
    async fn settle(&self, channel: (&str, &str), n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let runs = self
                .store
                .channel_runs(
                    Platform::Slack,
                    &TeamId::new(TEAM),
                    &ChannelId::new(channel.0),
                    50,
                )
                .await
                .expect("runs");
            let at_rest = runs.iter().all(|r| {
                matches!(
                    r.status,
                    RunStatus::Replied | RunStatus::Refused | RunStatus::WaitingManual
                )
            });
            if runs.len() == n && at_rest {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not settle: {:?}",
                channel.1,
                runs.iter()
                    .map(|r| (&r.request.job, r.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn ci_lint_calls(&self, project: u64) -> usize {
        self.gitlab
            .state()
            .requests()
            .iter()
            .filter(|r| r.path.ends_with(&format!("/projects/{project}/ci/lint")))
            .count()
    }

    /// Wait until the audit table holds `n` entries.
    async fn wait_for_audit(&self, n: usize) -> Vec<AuditEntry> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let entries = self.audit_entries().await;
            if entries.len() >= n {
                return entries;
            }
            assert!(Instant::now() < deadline, "{n} audit entries? {entries:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every audit entry of the last hour, oldest first.
    async fn audit_entries(&self) -> Vec<AuditEntry> {
        let now = chatops_core::audit::now_ms();
        self.audit
            .read(now - 3_600_000, now + 60_000)
            .await
            .expect("the audit table reads")
    }
}

/// Sleep into the next second of the clock the ingress stamps commands with.
async fn next_second() {
    let now = SystemClock.now();
    while SystemClock.now() == now {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn id_of(response_url: &str) -> String {
    response_url
        .split('/')
        .rev()
        .nth(1)
        .expect("a stand-in response_url")
        .to_owned()
}

/// The job names a "Jobs you can run here" list names, in order.
fn listed_jobs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("• `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

fn text(sent: &Sent) -> &str {
    sent.answer["text"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_exactly_the_contract_jobs() {
    let w = world(true).await;
    let lint_before = w.ci_lint_calls(PROJECT);

    // Someone not linked: the grammar, and nothing after it.
    let carol = w.slack_command(CAROL, OPS, "help").await;
    assert_eq!(carol.answer["response_type"], "ephemeral");
    assert!(
        text(&carol).contains("/chatops run &lt;job&gt;"),
        "{}",
        carol.answer
    );

    // Alice: the grammar at once (with status and history), then the jobs, only to her.
    let help = w.slack_command(ALICE, OPS, "help").await;
    assert_eq!(help.answer["response_type"], "ephemeral");
    for words in [
        "/chatops run &lt;job&gt;",
        "/chatops status",
        "/chatops history [job]",
    ] {
        assert!(text(&help).contains(words), "{words}: {}", help.answer);
    }
    let posts = w.wait_for(&help, "Jobs you can run here").await;
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0].response_type.as_deref(), Some("ephemeral"));
    assert_eq!(listed_jobs(&posts[0].text), RUNNABLE, "{}", posts[0].text);
    assert!(
        posts[0].text.contains("`group/proj` on `main`"),
        "{}",
        posts[0].text
    );
    let restart = posts[0]
        .text
        .lines()
        .find(|l| l.contains("`restart`"))
        .expect("restart listed");
    assert!(restart.contains("waits to be played"), "{restart}");

    // Empty text is help too; on Mattermost the same list. Within the minute, from cache.
    let empty = w.slack_command(ALICE, OPS, "").await;
    assert!(text(&empty).contains("*Usage*"), "{}", empty.answer);
    let posts = w.wait_for(&empty, "Jobs you can run here").await;
    assert_eq!(listed_jobs(&posts[0].text), RUNNABLE);
    let mm = w.mattermost_command(OPS, "help").await;
    assert_eq!(mm.answer["response_type"], "ephemeral");
    assert!(text(&mm).contains("**Usage**"), "{}", mm.answer);
    let posts = w.wait_for(&mm, "Jobs you can run here").await;
    assert_eq!(listed_jobs(&posts[0].text), RUNNABLE, "{}", posts[0].text);
    assert_eq!(
        w.ci_lint_calls(PROJECT) - lint_before,
        1,
        "a burst of help asks GitLab's ci/lint once"
    );

    // An invalid CI configuration: said so, with GitLab's own error.
    let broken = w.slack_command(ALICE, BROKEN_CHANNEL, "help").await;
    let posts = w.wait_for(&broken, "is invalid").await;
    assert!(
        posts[0].text.contains("`group/broken`"),
        "{}",
        posts[0].text
    );
    assert!(
        posts[0].text.contains("Invalid configuration format"),
        "GitLab's error: {}",
        posts[0].text
    );

    // Carol still has nothing but her grammar (her request was handled long ago).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.posts(&carol).is_empty(), "{:#?}", w.posts(&carol));
    // Help is no run: nothing in the runs table.
    let runs = w
        .store
        .channel_runs(
            Platform::Slack,
            &TeamId::new(TEAM),
            &ChannelId::new(OPS.0),
            50,
        )
        .await
        .unwrap();
    assert!(runs.is_empty(), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_history_show_only_that_channels_runs() {
    let w = world(true).await;
    // Each command in its own second: runs are ordered by when their command was received.
    let hello = w.slack_command(ALICE, OPS, "run hello-world").await;
    w.wait_for(&hello, "succeeded").await;
    next_second().await;
    let db = w.slack_command(ALICE, OPS, "run db-check").await;
    w.wait_for(&db, "failed").await;
    next_second().await;
    let restart = w.slack_command(BOB, OPS, "run restart").await;
    w.wait_for(&restart, "not allowed").await;
    next_second().await;
    let restart = w.slack_command(ALICE, OPS, "run restart now").await;
    w.wait_for(&restart, "manual").await;
    next_second().await;
    let missing = w.slack_command(ALICE, OPS, "run rollback").await;
    w.wait_for(&missing, "could not be scheduled").await;
    let elsewhere = w.slack_command(ALICE, DEV, "run named").await;
    w.wait_for(&elsewhere, "succeeded").await;
    w.settle(OPS, 5).await;
    w.settle(DEV, 1).await;

    // status in #ops: the one open run (restart waits to be played), nothing of #dev.
    let status = w.slack_command(ALICE, OPS, "status").await;
    assert_eq!(status.answer["response_type"], "ephemeral");
    let s = text(&status);
    assert!(s.starts_with("*Running from this channel*"), "{s}");
    let lines: Vec<&str> = s.lines().skip(1).collect();
    assert_eq!(lines.len(), 1, "{s}");
    assert!(
        lines[0].contains("|restart>")
            && lines[0].contains("by alice")
            && lines[0].contains("waiting to be played"),
        "{s}"
    );

    // history in #ops: five runs, newest first, each with its result; none of #dev's.
    let history = w.slack_command(BOB, OPS, "history").await;
    let h = text(&history);
    let lines: Vec<&str> = h.lines().skip(1).collect();
    assert_eq!(lines.len(), 5, "{h}");
    let want = [
        ("rollback", "by alice · not run"),
        ("restart", "by alice · waiting to be played for "),
        ("restart", "by bob · not run"),
        ("db-check", "by alice · failed"),
        ("hello-world", "by alice · succeeded"),
    ];
    for (line, (job, says)) in lines.iter().zip(want) {
        assert!(
            line.contains(job) && line.contains(says),
            "{line:?} ≠ {job} {says}\n{h}"
        );
    }
    assert!(!h.contains("named"), "{h}");

    let of_job = w.slack_command(ALICE, OPS, "history restart").await;
    let lines: Vec<&str> = text(&of_job).lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{}", text(&of_job));
    assert!(text(&of_job).starts_with("*Last runs of* `restart`"));

    // #dev sees its own run only; the same commands on Mattermost see Mattermost's (none).
    let dev = w.slack_command(ALICE, DEV, "history").await;
    let lines: Vec<&str> = text(&dev).lines().skip(1).collect();
    assert_eq!(lines.len(), 1, "{}", text(&dev));
    assert!(lines[0].contains("named") && lines[0].contains("succeeded"));
    let dev_status = w.slack_command(ALICE, DEV, "status").await;
    assert_eq!(text(&dev_status), "Nothing is running from this channel.");
    let mm = w.mattermost_command(OPS, "history").await;
    assert_eq!(mm.answer["response_type"], "ephemeral");
    assert_eq!(
        mm.answer["text"].as_str(),
        Some("No run from this channel yet.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_leaves_its_audit_entry_in_order() {
    let w = world(true).await;
    let input = "production --token=s3cr3t";
    let run = w
        .slack_command(ALICE, OPS, &format!("run hello-world {input}"))
        .await;
    w.wait_for(&run, "succeeded").await;
    let refused = w.slack_command(BOB, OPS, "run hello-world").await;
    w.wait_for(&refused, "not allowed").await;
    let invalid = w.slack_command(BOB, DEV, "frobnicate now").await;
    assert!(text(&invalid).contains("is not a valid command"));
    w.settle(OPS, 2).await;
    // The result is written right after the reply is recorded.
    let entries = w.wait_for_audit(3 + 2 + 2).await;
    let of = |user: &str, channel: &str| -> Vec<&AuditEntry> {
        entries
            .iter()
            .filter(|e| {
                e.chat_user.as_ref().map(|u| u.as_str()) == Some(user)
                    && e.channel.as_ref().map(|c| c.as_str()) == Some(channel)
            })
            .collect()
    };

    // The full run: received → pipeline created (as whom) → result, in order.
    let alice = of(ALICE.0, OPS.0);
    let kinds: Vec<&str> = alice.iter().map(|e| e.event.kind()).collect();
    assert_eq!(
        kinds,
        ["command_received", "pipeline_created", "result"],
        "{alice:#?}"
    );
    let hashed = InputMode::Hash.keep(input);
    for e in &alice {
        assert_eq!(e.platform, Some(Platform::Slack));
        assert_eq!(e.team.as_ref().map(|t| t.as_str()), Some(TEAM));
        assert_eq!(e.channel_name.as_deref(), Some("ops"));
        assert_eq!(e.chat_user_name.as_deref(), Some("alice"));
        assert_eq!(e.job.as_deref(), Some("hello-world"));
        assert_eq!(e.input, hashed, "inputs are hashed by default");
        assert!(e.request_id.is_some());
    }
    assert_eq!(
        alice
            .iter()
            .map(|e| &e.request_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1,
        "one command"
    );
    assert_eq!(
        alice[0].event,
        AuditEvent::CommandReceived {
            command: "run".into()
        }
    );
    let created = alice[1];
    let pipeline = w
        .gitlab
        .state()
        .pipelines()
        .into_iter()
        .find(|p| p.variable("CHATOPS_JOB") == Some("hello-world"))
        .expect("the pipeline");
    assert_eq!(created.pipeline_id.map(|p| p.0), Some(pipeline.id));
    assert!(created.job_id.is_some());
    assert_eq!(created.project.as_deref(), Some("group/proj"));
    assert_eq!(created.gitlab_user.as_deref(), Some("alice"));
    let AuditEvent::PipelineCreated {
        as_person,
        manual,
        ran_as,
    } = &created.event
    else {
        panic!("{created:?}")
    };
    assert!(!as_person && !manual, "bot mode, not manual");
    assert!(
        ran_as.as_deref().is_some_and(|u| !u.is_empty()),
        "GitLab said whom it ran as"
    );
    let result = alice[2];
    assert!(
        matches!(
            result.event,
            AuditEvent::Result {
                result: RunResult::Success,
                duration_secs: _
            }
        ),
        "{result:?}"
    );
    assert_eq!(result.job_id, created.job_id);
    assert!(alice
        .windows(2)
        .all(|w| w[0].at_ms < w[1].at_ms && w[0].id < w[1].id));

    // A refusal by the dispatcher: received → refused, and why.
    let bob = of(BOB.0, OPS.0);
    let kinds: Vec<&str> = bob.iter().map(|e| e.event.kind()).collect();
    assert_eq!(kinds, ["command_received", "refused"], "{bob:#?}");
    let AuditEvent::Refused { reason, detail } = &bob[1].event else {
        panic!()
    };
    assert_eq!(reason, "access_denied");
    assert!(detail.contains("You are not allowed"), "{detail}");
    assert_eq!(bob[1].gitlab_user.as_deref(), Some("bob"));

    // A refusal by the ingress (not a command): received → refused, nothing queued.
    let dev = of(BOB.0, DEV.0);
    let kinds: Vec<&str> = dev.iter().map(|e| e.event.kind()).collect();
    assert_eq!(kinds, ["command_received", "refused"], "{dev:#?}");
    assert_eq!(
        dev[0].event,
        AuditEvent::CommandReceived {
            command: "invalid".into()
        }
    );
    assert!(
        matches!(&dev[1].event, AuditEvent::Refused { reason, .. } if reason == "invalid_command")
    );

    // Nothing else was written, and the input never in clear, in any attribute.
    assert_eq!(entries.len(), 3 + 2 + 2, "{entries:#?}");
    let items = aws_sdk_dynamodb::Client::new(&support::aws_config().await)
        .scan()
        .table_name(&w.audit_table)
        .send()
        .await
        .unwrap();
    assert_eq!(items.count(), 7);
    assert!(!format!("{:?}", items.items()).contains("s3cr3t"));
}

/// The audit table failing (here: it does not exist) costs the table entries and nothing
/// else: commands are answered, runs run and reply as always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_table_that_fails_never_fails_a_run() {
    let w = world(false).await;
    let run = w.slack_command(ALICE, OPS, "run hello-world").await;
    assert!(text(&run).contains("Scheduling job"), "{}", run.answer);
    let posts = w.wait_for(&run, "succeeded").await;
    assert!(
        posts
            .iter()
            .any(|p| serde_json::to_string(p).unwrap().contains("ran it")),
        "the job's output came back: {posts:#?}"
    );
    let refused = w.slack_command(BOB, OPS, "run hello-world").await;
    w.wait_for(&refused, "not allowed").await;
    let status = w.slack_command(ALICE, OPS, "history").await;
    assert!(text(&status).contains("hello-world"), "{}", status.answer);
}

/// `chatops audit`, the binary, against the table of a few commands: filters by job, user
/// and channel, prints a table or JSON lines, refuses a bad `--since`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatops_audit_filters_and_formats() {
    let w = world(true).await;
    let run = w
        .slack_command(ALICE, OPS, "run hello-world production")
        .await;
    w.wait_for(&run, "succeeded").await;
    // Its result is written once the reply is recorded: the next command comes after it.
    w.wait_for_audit(3).await;
    let refused = w.slack_command(BOB, DEV, "run named").await;
    w.wait_for(&refused, "not allowed").await;
    w.wait_for_audit(3 + 2).await;
    let _ = w.slack_command(ALICE, DEV, "status").await;
    w.wait_for_audit(3 + 2 + 1).await;

    let audit = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatops"))
            .arg("audit")
            .args(args)
            .env("AUDIT_TABLE", &w.audit_table)
            .env("AWS_ENDPOINT_URL", support::moto_endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("chatops audit runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let json_lines = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    };

    // Everything of the last hour, as JSON lines, oldest first.
    let (code, out, err) = audit(&["--since", "1h", "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let all = json_lines(&out);
    let events: Vec<&str> = all.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "command_received",
            "pipeline_created",
            "result",
            "command_received",
            "refused",
            "command_received"
        ],
        "{out}"
    );
    assert!(all
        .windows(2)
        .all(|p| p[0]["at_ms"].as_u64() < p[1]["at_ms"].as_u64()));

    // Filters: job, user (chat name, or GitLab username), channel (id or #name).
    let (_, out, _) = audit(&["--job", "hello-world", "--format", "json"]);
    assert_eq!(json_lines(&out).len(), 3, "{out}");
    let (_, out, _) = audit(&["--user", "bob", "--format", "json"]);
    let bob = json_lines(&out);
    assert_eq!(bob.len(), 2, "{out}");
    assert!(bob.iter().all(|e| e["chat_user_name"] == "bob"));
    assert_eq!(bob[1]["reason"], "access_denied");
    let (_, out, _) = audit(&["--channel", "#dev", "--format", "json"]);
    assert_eq!(json_lines(&out).len(), 3, "{out}");
    let (_, out, _) = audit(&["--channel", "C2", "--user", "alice", "--format", "json"]);
    let mine = json_lines(&out);
    assert_eq!(mine.len(), 1, "{out}");
    assert_eq!(mine[0]["command"], "status");
    let (_, out, _) = audit(&["--job", "nothing-like-it", "--format", "json"]);
    assert_eq!(out, "");

    // The table: a header, one aligned row per entry, the input hashed.
    let (code, out, err) = audit(&["--job", "hello-world"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("TIME (UTC)") && lines[0].contains("GITLAB USER"),
        "{out}"
    );
    let event_col = lines[0].find("EVENT").unwrap();
    for (line, event) in lines[1..]
        .iter()
        .zip(["command_received", "pipeline_created", "result"])
    {
        assert_eq!(&line[event_col..event_col + event.len()], event, "{out}");
        assert!(
            line.contains("slack:T1/#ops") && line.contains("sha256:"),
            "{line}"
        );
    }
    assert!(lines[3].contains("success"), "{out}");
    assert!(!out.contains("production"), "the input is hashed: {out}");
    let (_, out, _) = audit(&["--user", "nobody"]);
    assert!(out.starts_with("no audit entries since"), "{out}");

    // A bad --since is refused before anything is read.
    let (code, out, err) = audit(&["--since", "last tuesday"]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty() && err.contains("--since"), "{out}{err}");
}

/// The project's policy file gives `help` its descriptions and "needs approval" marks; a
/// policy file that does not read is said instead of the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_shows_the_policy_files_descriptions_and_marks() {
    let w = world(true).await;
    w.gitlab.state().set_file(
        PROJECT,
        ".gitlab/chatops.yml",
        Some(
            "jobs:\n  hello-world:\n    description: Says hello <!channel>\n  db-check:\n    approvals: 1\n",
        ),
    );
    let help = w.slack_command(ALICE, OPS, "help").await;
    let posts = w.wait_for(&help, "Jobs you can run here").await;
    let list = &posts[0].text;
    assert_eq!(listed_jobs(list), RUNNABLE, "{list}");
    let line = |job: &str| {
        list.lines()
            .find(|l| l.contains(&format!("`{job}`")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("hello-world").contains("Says hello"), "{list}");
    assert!(
        !list.contains("<!channel>"),
        "the description is escaped: {list}"
    );
    assert!(line("db-check").contains("needs approval"), "{list}");
    assert!(!line("restart").contains("needs approval"), "{list}");

    // A file with a typo: the list gives way to the line that does not read (after the
    // minute the file is cached for, so another token, or wait: a new world is simpler).
    let w = world(true).await;
    w.gitlab.state().set_file(
        PROJECT,
        ".gitlab/chatops.yml",
        Some("jobs:\n  hello-world:\n    aprovals: 1\n"),
    );
    let help = w.slack_command(ALICE, OPS, "help").await;
    let posts = w.wait_for(&help, "chatops.yml").await;
    assert!(posts[0].text.contains("line 3"), "{}", posts[0].text);
    assert!(posts[0].text.contains("aprovals"), "{}", posts[0].text);
}
