//! Reliability under faults, through the real interfaces: moto (behind `FaultProxy`, which
//! makes SQS or DynamoDB slow, hanging or failing), the GitLab stand-in (which can accept a
//! create and then not answer in time) and the Slack stand-in. Each test is one way a team
//! would lose trust (issue 16): a contradicting ack, a duplicate pipeline, an invocation that
//! outlives Lambda's timeout, a message parked in the DLQ without a word to the person.

mod support;

use bytes::Bytes;
use chatops_adapters::dynamo::DynamoStore;
use chatops_adapters::gitlab::{GitLabClient, RetryPolicy};
use chatops_adapters::services;
use chatops_adapters::slack::SlackApi;
use chatops_adapters::sqs::SqsQueue;
use chatops_core::clock::{Clock, SystemClock};
use chatops_core::config::{Env, NoSecrets};
use chatops_core::delivery::Deliverer;
use chatops_core::dispatcher::{DispatchError, Dispatcher, MAX_ATTEMPTS, REQUEST_ID_VARIABLE};
use chatops_core::ids::{ChannelId, ChatUserId, RequestId, TeamId};
use chatops_core::ingress::{Ingress, IngressConfig};
use chatops_core::run::{Platform, RunRequest, RunStatus, RUN_REQUEST_VERSION};
use chatops_core::secret::Secret;
use chatops_core::slack::verify::sign;
use chatops_core::store::RunStore;
use chatops_sim::faults::{FaultProxy, Rule};
use chatops_sim::gitlab::{Fault, GitLabStandin, StandinCiJob};
use chatops_sim::slack::SlackStandIn;
use chatops_sim::RecordingChat;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROJECT: u64 = 42;
const BOT: &str = "xoxb-faults-bot";
const SECRET: &str = "faults-signing-secret";

struct World {
    gitlab: GitLabStandin,
    slack: SlackStandIn,
    /// Between the product and moto.
    proxy: FaultProxy,
    /// The same table, straight to moto (for the test's own reads).
    direct: DynamoStore,
    dispatcher: Dispatcher,
    sdk: aws_config::SdkConfig,
}

/// GitLab calls give up quickly, so a slow GitLab shows within a test's time.
fn quick_gitlab() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        max_wait: Duration::from_secs(2),
        backoff: Duration::from_millis(20),
        timeout: Duration::from_millis(800),
    }
}

async fn world() -> World {
    let gitlab = GitLabStandin::start().await;
    let gl = gitlab.state();
    gl.add_project(PROJECT, "group/proj");
    gl.add_user(7, "alice");
    gl.set_member(PROJECT, 7, 30);
    gl.set_ci_jobs(PROJECT, vec![StandinCiJob::chat("deploy")]);
    let slack = SlackStandIn::start_with(BOT, Arc::new(SystemClock), false)
        .await
        .unwrap();

    let moto_sdk = support::aws_config().await;
    let proxy = FaultProxy::start(&support::moto_endpoint()).await;
    let sdk = moto_sdk.to_builder().endpoint_url(proxy.url()).build();
    let table = support::unique_name("faults");
    DynamoStore::create_table(&aws_sdk_dynamodb::Client::new(&moto_sdk), &table)
        .await
        .unwrap();
    let direct = DynamoStore::new(aws_sdk_dynamodb::Client::new(&moto_sdk), table.clone());
    direct.link_user(&support::alice_link()).await.unwrap();
    // The product's own wiring of the store: the AWS client timeouts under test.
    let store: Arc<dyn RunStore> = Arc::new(services::store(&sdk, &table));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config =
        support::dispatcher_config(gitlab.url(), &gitlab.token(), table, slack.api_url(), BOT);
    let dispatcher = Dispatcher {
        audit: Default::default(),
        identity: None,
        gitlab: Arc::new(
            GitLabClient::with_policy(&gitlab.url(), Secret::new(gitlab.token()), quick_gitlab())
                .unwrap(),
        ),
        store: store.clone(),
        deliverer: Deliverer {
            slack: Arc::new(SlackApi::new(&slack.api_url(), Some(Secret::new(BOT)))),
            mattermost: Arc::new(RecordingChat::default()),
            mattermost_buttons: None,
            store,
            clock: clock.clone(),
        },
        clock,
        config,
    };
    World {
        gitlab,
        slack,
        proxy,
        direct,
        dispatcher,
        sdk,
    }
}

impl World {
    fn request(&self, id: &str) -> RunRequest {
        RunRequest {
            version: RUN_REQUEST_VERSION,
            kind: chatops_core::run::RequestKind::Run,
            request_id: RequestId::new(id),
            platform: Platform::Slack,
            team_id: TeamId::new("T1"),
            team_domain: None,
            channel_id: ChannelId::new("C0PS"),
            channel_name: "ops".into(),
            user_id: ChatUserId::new("U1"),
            user_name: "alice".into(),
            command: "/chatops".into(),
            job: "deploy".into(),
            input: "production".into(),
            response_url: self.slack.response_url("T1"),
            received_at: SystemClock.now(),
            public_base: None,
        }
    }

    fn pipelines_of(&self, id: &str) -> usize {
        self.gitlab
            .state()
            .pipelines()
            .iter()
            .filter(|p| p.variable(REQUEST_ID_VARIABLE) == Some(id))
            .count()
    }

    fn texts(&self) -> Vec<String> {
        self.slack
            .transcript()
            .into_iter()
            .map(|p| p.text)
            .collect()
    }
}

/// Item 2: GitLab creates the pipeline but its answer comes after the client gave up. The
/// redelivery finds that pipeline by its request id instead of creating a second one.
#[tokio::test]
async fn an_ambiguous_create_never_makes_a_second_pipeline() {
    let w = world().await;
    let req = w.request("req-ambiguous");
    let body = serde_json::to_string(&req).unwrap();
    w.gitlab.state().fail_next(
        Fault::AcceptThenDelay(Duration::from_secs(2)),
        1,
        Some("/pipeline"),
    );
    let first = w.dispatcher.handle_message(&body, 1).await;
    assert!(
        matches!(first, Err(DispatchError::Retryable(_))),
        "{first:?}"
    );
    assert_eq!(w.pipelines_of("req-ambiguous"), 1, "GitLab did create it");
    // SQS redelivers it.
    w.dispatcher.handle_message(&body, 2).await.unwrap();
    assert_eq!(
        w.pipelines_of("req-ambiguous"),
        1,
        "the retry found it instead of creating another"
    );
    let run = w.direct.get_run(&req.request_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    let texts = w.texts();
    assert_eq!(texts.len(), 1, "{texts:#?}");
    assert!(texts[0].contains("started"), "{texts:#?}");
}

/// Item 3: DynamoDB hangs. Every AWS client has timeouts, so the attempt ends well within the
/// dispatcher's 30 s Lambda timeout and the message goes back to the queue.
#[tokio::test]
async fn a_hanging_dynamodb_ends_the_attempt_in_time() {
    let w = world().await;
    w.proxy.add(Rule::aws("DynamoDB").hang());
    let body = serde_json::to_string(&w.request("req-hang")).unwrap();
    let started = Instant::now();
    let out = w.dispatcher.handle_message(&body, 1).await;
    let took = started.elapsed();
    assert!(matches!(out, Err(DispatchError::Retryable(_))), "{out:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(w.pipelines_of("req-hang"), 0);
}

/// Item 4: GitLab is slow and the invocation's deadline is near. The attempt stops before
/// it (never in the middle of a create), releases its claim, and the next one runs once.
#[tokio::test]
async fn work_stops_before_the_invocations_deadline() {
    let w = world().await;
    w.gitlab
        .state()
        .fail_next(Fault::Delay(Duration::from_millis(600)), 10, None);
    let req = w.request("req-deadline");
    let body = serde_json::to_string(&req).unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    let out = w.dispatcher.handle_attempt(&body, 1, deadline).await;
    assert!(Instant::now() < deadline, "answered before the deadline");
    assert!(matches!(out, Err(DispatchError::Retryable(_))), "{out:?}");
    assert_eq!(w.pipelines_of("req-deadline"), 0, "no create was started");
    let run = w.direct.get_run(&req.request_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Dispatching);
    assert_eq!(run.lease_until, 0, "the claim was released for the retry");
    w.gitlab.state().clear_faults();
    w.dispatcher.handle_message(&body, 2).await.unwrap();
    assert_eq!(w.pipelines_of("req-deadline"), 1);
}

/// Item 5: DynamoDB fails for the whole retry window. On the last receive the person is told
/// (without the store), and the message is acknowledged instead of parked silently.
#[tokio::test]
async fn the_last_attempt_tells_the_person_even_without_the_store() {
    let w = world().await;
    w.proxy.add(Rule::aws("DynamoDB").status(500));
    let req = w.request("req-store-down");
    let body = serde_json::to_string(&req).unwrap();
    for n in 1..MAX_ATTEMPTS {
        let out = w.dispatcher.handle_message(&body, n).await;
        assert!(matches!(out, Err(DispatchError::Retryable(_))), "{out:?}");
    }
    assert!(
        w.texts().is_empty(),
        "nobody is told before the last attempt"
    );
    w.dispatcher
        .handle_message(&body, MAX_ATTEMPTS)
        .await
        .expect("the last attempt is acknowledged");
    let texts = w.texts();
    assert_eq!(texts.len(), 1, "{texts:#?}");
    assert!(
        texts[0].contains("could not be scheduled") && texts[0].contains("tried 5 times"),
        "{}",
        texts[0]
    );
    assert_eq!(w.pipelines_of("req-store-down"), 0);
}

fn signed_run(text: &str) -> chatops_core::web::HttpRequest {
    let body = serde_urlencoded::to_string([
        ("team_id", "T1"),
        ("team_domain", "acme"),
        ("channel_id", "C0PS"),
        ("channel_name", "ops"),
        ("user_id", "U1"),
        ("user_name", "alice"),
        ("command", "/chatops"),
        ("text", text),
        ("response_url", "https://hooks.slack.com/commands/T1/1/x"),
        ("trigger_id", "1.2.3"),
    ])
    .unwrap();
    let ts = SystemClock.now().to_string();
    let sig = sign(&Secret::new(SECRET), &ts, body.as_bytes());
    http::Request::builder()
        .method("POST")
        .uri("/slack/commands")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(Bytes::from(body))
        .unwrap()
}

/// Item 1: SQS takes the message but answers after the ingress's budget. The person is not
/// told it failed (it is queued, and runs); every copy the SDK's retries queued is absorbed
/// by the dispatcher, so the job runs once.
#[tokio::test]
async fn an_unconfirmed_send_is_acknowledged_truthfully_and_runs_once() {
    let w = world().await;
    let sqs = aws_sdk_sqs::Client::new(&support::aws_config().await);
    let queue_url = sqs
        .create_queue()
        .queue_name(support::unique_name("faults-q"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    w.proxy
        .add(Rule::aws("AmazonSQS.SendMessage").delay_after(Duration::from_millis(1500)));
    let env = Env::from_pairs([
        ("SLACK_SIGNING_SECRET", SECRET),
        ("RUN_QUEUE_URL", queue_url.as_str()),
    ]);
    let ingress = Ingress::new(
        IngressConfig::from_env(&env, &NoSecrets).await.unwrap(),
        Arc::new(SqsQueue::from_sdk_config(&w.sdk, &queue_url)),
        Arc::new(SystemClock),
    );
    let started = Instant::now();
    let resp = ingress.handle(signed_run("run deploy production")).await;
    assert!(started.elapsed() < Duration::from_millis(2900));
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = serde_json::from_str(resp.body()).unwrap();
    let text = answer["text"].as_str().unwrap();
    assert!(
        !text.contains("Could not schedule"),
        "the ack must not say it failed: {text}"
    );
    assert!(text.contains("did not confirm"), "{text}");

    // Whatever reached the queue, every copy is the same request: one pipeline.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let got = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert!(!got.is_empty(), "the message was queued");
    for (n, m) in got.iter().enumerate() {
        let mut req: RunRequest = serde_json::from_str(m.body().unwrap()).unwrap();
        // The stand-in's response_url, so the follow-up is observable.
        req.response_url = w.slack.response_url("T1");
        w.dispatcher
            .handle_message(&serde_json::to_string(&req).unwrap(), n as u32 + 1)
            .await
            .unwrap();
    }
    let pipelines = w.gitlab.state().pipelines();
    assert_eq!(pipelines.len(), 1, "{} copies, one pipeline", got.len());
}

/// A job that ends at once: our tiny runner.
struct EndsAtOnce;

#[async_trait::async_trait]
impl chatops_sim::gitlab::JobExecutor for EndsAtOnce {
    async fn run(&self, _job: chatops_sim::gitlab::ExecJob) -> chatops_sim::gitlab::ExecOutcome {
        let trace = "section_start:1767225602:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \
             \"step_script\" stage of the job script\x1b[0;m\n\x1b[32;1m$ echo fast\x1b[0;m\n\
             fast\nsection_end:1767225603:step_script\r\x1b[0K\x1b[32;1mJob succeeded\x1b[0;m\n";
        chatops_sim::gitlab::ExecOutcome {
            status: chatops_core::gitlab::Status::Success,
            trace: trace.as_bytes().to_vec(),
        }
    }
}

/// Item 8: the job ends before the dispatcher has saved its run (its webhook would find the
/// run still dispatching). The dispatcher finishes the run itself right after saving: the
/// reply comes at once, not after the sweep.
#[tokio::test]
async fn a_job_that_ends_before_the_run_is_saved_is_answered_at_once() {
    let w = world().await;
    let gl = w.gitlab.state();
    gl.set_executor(Arc::new(EndsAtOnce));
    // GitLab is a little slow listing the pipeline's jobs: by then the job has ended.
    gl.fail_next(Fault::Delay(Duration::from_millis(400)), 1, Some("/jobs"));
    let req = w.request("req-fast");
    w.dispatcher
        .handle_message(&serde_json::to_string(&req).unwrap(), 1)
        .await
        .unwrap();
    let texts = w.texts();
    assert_eq!(texts.len(), 2, "{texts:#?}");
    // The run's card, already in its last state, then the reply.
    assert!(texts[0].contains("*Succeeded*"), "{texts:#?}");
    assert!(texts[1].contains("deploy succeeded"), "{texts:#?}");
    let reply = serde_json::to_string(&w.slack.transcript()[1]).unwrap();
    assert!(reply.contains("fast"), "the job's output: {reply}");
    let run = w.direct.get_run(&req.request_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Replied);
}
