//! The dispatcher end to end on its real interfaces: SQS (moto) → `handle_batch` →
//! `DynamoStore` (moto) + `GitLabClient` against the GitLab stand-in + `SlackApi` against the
//! Slack stand-in (which counts `response_url` uses like Slack).

mod support;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chatops_adapters::dynamo::DynamoStore;
use chatops_adapters::gitlab::GitLabClient;
use chatops_adapters::gitlab::RetryPolicy;
use chatops_adapters::slack::SlackApi;
use chatops_core::clock::{Clock, SystemClock};
use chatops_core::delivery::{ChatSettings, Deliverer};
use chatops_core::dispatcher::{DispatchError, Dispatcher, DispatcherConfig, MAX_ATTEMPTS};
use chatops_core::gitlab::{AccessLevel, GitLab, GitLabError, Status};
use chatops_core::ids::{
    ChannelId, ChatUserId, PipelineId, ProjectId, ProjectRef, RequestId, TeamId,
};
use chatops_core::run::{Platform, RunRequest, RunStatus, UserLink, RUN_REQUEST_VERSION};
use chatops_core::secret::Secret;
use chatops_core::store::{MemoryStore, RunStore};
use chatops_sim::gitlab::{Fault, GitLabStandin, StandinCiJob};
use chatops_sim::slack::{Post, SlackStandIn};
use chatops_sim::FakeGitLab;
use chatops_sim::RecordingChat;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROJECT: u64 = 42;
const USER: u64 = 7;
const BOT: &str = "xoxb-test-bot";

struct Harness {
    gitlab: GitLabStandin,
    slack: SlackStandIn,
    store: Arc<DynamoStore>,
    dispatcher: Dispatcher,
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        max_wait: Duration::from_secs(3),
        backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
    }
}

async fn harness() -> Harness {
    let gitlab = GitLabStandin::start().await;
    let gl = gitlab.state();
    gl.add_project(PROJECT, "group/proj");
    gl.add_user(USER, "alice");
    gl.set_member(PROJECT, USER, 30);
    gl.set_ci_jobs(PROJECT, vec![StandinCiJob::chat("deploy")]);

    let slack = SlackStandIn::start_with(BOT, Arc::new(SystemClock), false)
        .await
        .unwrap();

    let cfg = support::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique_name("dispatch-runs");
    DynamoStore::create_table(&ddb, &table).await.unwrap();
    let store = Arc::new(DynamoStore::new(ddb, table.clone()));
    store.link_user(&support::alice_link()).await.unwrap();

    let config =
        support::dispatcher_config(gitlab.url(), &gitlab.token(), table, slack.api_url(), BOT);
    let client =
        GitLabClient::with_policy(&gitlab.url(), Secret::new(gitlab.token()), fast_policy())
            .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dispatcher = Dispatcher {
        audit: Default::default(),
        identity: None,
        gitlab: Arc::new(client),
        store: store.clone(),
        deliverer: Deliverer {
            slack: Arc::new(SlackApi::new(
                &config.chat.slack_api_url,
                Some(Secret::new(BOT)),
            )),
            mattermost: Arc::new(RecordingChat::default()),
            mattermost_buttons: None,
            store: store.clone(),
            clock: clock.clone(),
        },
        clock,
        config,
    };
    Harness {
        gitlab,
        slack,
        store,
        dispatcher,
    }
}

impl Harness {
    fn request(&self, id: &str, job: &str, input: &str) -> RunRequest {
        RunRequest {
            version: RUN_REQUEST_VERSION,
            kind: chatops_core::run::RequestKind::Run,
            request_id: RequestId::new(id),
            platform: Platform::Slack,
            team_id: TeamId::new("T1"),
            team_domain: Some("acme".into()),
            channel_id: ChannelId::new("C0PS"),
            channel_name: "ops".into(),
            user_id: ChatUserId::new("U1"),
            user_name: "alice".into(),
            command: "/chatops".into(),
            job: job.into(),
            input: input.into(),
            response_url: self.slack.response_url("T1"),
            received_at: SystemClock.now(),
            public_base: None,
        }
    }

    async fn run(&self, req: &RunRequest) -> Result<(), DispatchError> {
        self.dispatcher
            .handle_message(&serde_json::to_string(req).unwrap(), 1)
            .await
    }

    async fn status(&self, req: &RunRequest) -> RunStatus {
        self.store
            .get_run(&req.request_id)
            .await
            .unwrap()
            .expect("run recorded")
            .status
    }

    /// The single message the user got, besides a refused run's card ("Not run": the
    /// harness sends no command answer, so the card's `replace_original` posts it anew).
    fn only_post(&self) -> Post {
        let (cards, t) = without_cards(self.slack.transcript());
        assert!(cards <= 1, "one card at most");
        assert_eq!(t.len(), 1, "expected one message, got {t:#?}");
        t.into_iter().next().unwrap()
    }
}

/// The posts that are not a refused run's card, and how many were.
fn without_cards(t: Vec<Post>) -> (usize, Vec<Post>) {
    let (cards, rest): (Vec<Post>, Vec<Post>) =
        t.into_iter().partition(|p| p.text.contains("· *Not run*"));
    (cards.len(), rest)
}

fn sqs_message(id: &str, body: &str, receive_count: u32) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.to_owned());
    m.body = Some(body.to_owned());
    m.attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    m
}

fn batch(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = messages;
    e
}

fn failures(resp: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    resp.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn happy_path_sends_exactly_the_contract_variables() {
    let h = harness().await;
    let req = h.request("req-happy", "deploy", "production\nregion=eu-west-1");
    h.run(&req).await.unwrap();

    let sent = h.gitlab.state().created_variables();
    assert_eq!(sent.len(), 1);
    let expected: Vec<(String, String)> = [
        ("CHATOPS_JOB", "deploy"),
        ("CHAT_INPUT", "production\nregion=eu-west-1"),
        ("CHAT_CHANNEL", "C0PS"),
        ("CHAT_USER_ID", "U1"),
        ("CHAT_USER_NAME", "alice"),
        ("CHAT_PLATFORM", "slack"),
        ("CHATOPS_REQUEST_ID", "req-happy"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(sent[0], expected);
    let create = h
        .gitlab
        .state()
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/api/v4/projects/42/pipeline")
        .unwrap();
    let body = create.json().unwrap();
    assert_eq!(body["ref"], "main");
    assert!(body["variables"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["variable_type"] == "env_var"));

    let pipe = &h.gitlab.state().pipelines()[0];
    let jobs = h.gitlab.state().jobs_of(pipe.id);
    assert_eq!(jobs.len(), 1);
    let rec = h.store.get_run(&req.request_id).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Running);
    assert_eq!(rec.project_id, Some(ProjectId(PROJECT)));
    assert_eq!(rec.project_path.as_deref(), Some("group/proj"));
    assert_eq!(rec.pipeline_id, Some(PipelineId(pipe.id)));
    assert_eq!(rec.job_id.map(|j| j.0), Some(jobs[0].id));
    assert_eq!(rec.gitlab_user.as_deref(), Some("alice"));
    assert_eq!(rec.response_url_uses, 1);
    let by_pipe = h.store.find_by_pipeline(PipelineId(pipe.id)).await.unwrap();
    assert_eq!(by_pipe.unwrap().request.request_id, req.request_id);

    let post = h.only_post();
    assert_eq!(post.response_type.as_deref(), Some("in_channel"));
    assert!(post.text.starts_with("<@U1> started <"), "{}", post.text);
    assert!(
        post.text
            .contains(&format!("/group/proj/-/pipelines/{}|pipeline>", pipe.id)),
        "{}",
        post.text
    );
    assert_eq!(h.slack.response_url_uses(&req.response_url), 1);
}

#[tokio::test]
async fn same_message_received_three_times_from_sqs_makes_one_pipeline() {
    let h = harness().await;
    let cfg = support::aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let url = sqs
        .create_queue()
        .queue_name(support::unique_name("runs"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "0",
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let req = h.request("req-thrice", "deploy", "");
    sqs.send_message()
        .queue_url(&url)
        .message_body(serde_json::to_string(&req).unwrap())
        .send()
        .await
        .unwrap();

    let mut counts = Vec::new();
    for _ in 0..3 {
        let got = sqs
            .receive_message()
            .queue_url(&url)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let msgs = got.messages.unwrap_or_default();
        assert_eq!(msgs.len(), 1, "the message comes back until deleted");
        let m = &msgs[0];
        let count: u32 = m
            .attributes
            .as_ref()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            })
            .and_then(|v| v.parse().ok())
            .unwrap();
        counts.push(count);
        let event = batch(vec![sqs_message(
            m.message_id.as_deref().unwrap(),
            m.body.as_deref().unwrap(),
            count,
        )]);
        let resp = chatops_adapters::lambda::dispatch_batch(&h.dispatcher, event, None).await;
        assert!(failures(&resp).is_empty());
    }
    assert_eq!(counts, [1, 2, 3]);
    assert_eq!(h.gitlab.state().pipelines().len(), 1);
    assert_eq!(h.slack.transcript().len(), 1, "one follow-up, not three");
    assert_eq!(h.status(&req).await, RunStatus::Running);
}

#[tokio::test]
async fn same_record_thrice_in_one_batch_makes_one_pipeline() {
    let h = harness().await;
    let req = h.request("req-batch", "deploy", "");
    let body = serde_json::to_string(&req).unwrap();
    let resp = chatops_adapters::lambda::dispatch_batch(
        &h.dispatcher,
        batch(vec![
            sqs_message("m1", &body, 1),
            sqs_message("m2", &body, 1),
            sqs_message("m3", &body, 1),
        ]),
        None,
    )
    .await;
    // The copies that lost the claim come back later and find the run done.
    let retried = failures(&resp);
    assert!(retried.len() <= 2, "{retried:?}");
    let again: Vec<SqsMessage> = retried.iter().map(|id| sqs_message(id, &body, 2)).collect();
    let resp = chatops_adapters::lambda::dispatch_batch(&h.dispatcher, batch(again), None).await;
    assert!(failures(&resp).is_empty());
    assert_eq!(h.gitlab.state().pipelines().len(), 1);
    assert_eq!(h.slack.transcript().len(), 1);
}

#[tokio::test]
async fn missing_job_is_refused_with_gitlabs_text() {
    let h = harness().await;
    let req = h.request("req-missing", "nope", "");
    h.run(&req).await.unwrap();
    let post = h.only_post();
    assert_eq!(post.response_type.as_deref(), Some("ephemeral"));
    assert!(
        post.text.starts_with(&could_not_schedule("nope")),
        "{}",
        post.text
    );
    assert!(post
        .text
        .contains("There is no job named `nope` on `main`."));
    assert!(h.gitlab.state().pipelines().is_empty());
    assert_eq!(h.status(&req).await, RunStatus::Refused);
    let lint = h
        .gitlab
        .state()
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/ci/lint"))
        .unwrap();
    assert!(lint.query.contains("include_jobs=true"));
    assert!(lint.query.contains("content_ref=main"));
}

#[tokio::test]
async fn invalid_ci_config_is_refused_with_gitlabs_errors() {
    let h = harness().await;
    h.gitlab.state().set_ci_invalid(
        PROJECT,
        vec!["jobs:deploy config contains unknown keys: scriptt".into()],
    );
    let req = h.request("req-invalid", "deploy", "");
    h.run(&req).await.unwrap();
    let text = h.only_post().text;
    assert!(text.starts_with(&could_not_schedule("deploy")));
    assert!(text.contains("is invalid: jobs:deploy config contains unknown keys: scriptt"));
}

#[tokio::test]
async fn job_excluded_from_chat_is_refused() {
    let h = harness().await;
    h.gitlab
        .state()
        .set_ci_jobs(PROJECT, vec![StandinCiJob::chat("deploy").except_chat()]);
    let req = h.request("req-excluded", "deploy", "");
    h.run(&req).await.unwrap();
    let text = h.only_post().text;
    assert!(text.starts_with(&could_not_schedule("deploy")));
    assert!(
        text.contains("excluded from chat (`except: [chat]`)"),
        "{text}"
    );
    assert!(h.gitlab.state().pipelines().is_empty());
}

/// GitLab.com's default for new projects ("No one allowed"), and a minimum role above the
/// token's: GitLab refuses the pipeline's variables, and the person is told which setting
/// to change, who can, and the command that checks or fixes it (not a hint about `rules`).
#[tokio::test]
async fn pipeline_variables_refused_by_the_project_setting_are_explained() {
    for (role, token_access) in [("no_one_allowed", 50), ("owner", 40), ("maintainer", 30)] {
        let h = harness().await;
        let gl = h.gitlab.state();
        gl.set_variables_role(PROJECT, role);
        gl.set_token_access(token_access);
        let req = h.request(&format!("req-vars-{role}"), "deploy", "production");
        h.run(&req).await.unwrap();

        let refused = gl
            .requests()
            .into_iter()
            .find(|r| r.method == "POST" && r.path.ends_with("/pipeline"))
            .expect("the dispatcher asked GitLab for the pipeline");
        assert_eq!(refused.status, 400, "{role}");
        assert!(gl.pipelines().is_empty(), "{role}: no pipeline exists");
        let post = h.only_post();
        assert_eq!(post.response_type.as_deref(), Some("ephemeral"), "{role}");
        let text = post.text;
        assert!(
            text.contains("Insufficient permissions to set pipeline variables"),
            "{text}"
        );
        assert!(
            text.contains("Minimum role to use pipeline variables")
                && text.contains("Settings &gt; CI/CD &gt; Variables"),
            "{role}: names the setting: {text}"
        );
        assert!(
            text.contains("Maintainer or Owner"),
            "{role}: who may change it: {text}"
        );
        assert!(
            text.contains("`chatops gitlab check --project group/proj`")
                && text.contains("--fix-variables-role"),
            "{role}: names the commands: {text}"
        );
        assert!(
            !text.contains("must select itself"),
            "{role}: no misleading hint about rules: {text}"
        );
        assert_eq!(h.status(&req).await, RunStatus::Refused, "{role}");
    }
}

/// A role the token reaches lets the variables through.
#[tokio::test]
async fn pipeline_variables_allowed_by_the_project_setting_start_the_job() {
    let h = harness().await;
    let gl = h.gitlab.state();
    gl.set_variables_role(PROJECT, "developer");
    gl.set_token_access(30);
    let req = h.request("req-vars-ok", "deploy", "");
    h.run(&req).await.unwrap();
    assert_eq!(gl.pipelines().len(), 1);
    assert!(h.only_post().text.contains("started"));
}

#[tokio::test]
async fn foreign_jobs_joining_cancel_the_pipeline_and_are_named() {
    let h = harness().await;
    h.gitlab.state().set_ci_jobs(
        PROJECT,
        vec![
            StandinCiJob::chat("deploy"),
            StandinCiJob::plain("test"),
            StandinCiJob::plain("lint"),
        ],
    );
    let req = h.request("req-foreign", "deploy", "");
    h.run(&req).await.unwrap();
    let pipes = h.gitlab.state().pipelines();
    assert_eq!(pipes.len(), 1);
    assert_eq!(pipes[0].status, Status::Canceled);
    assert!(h
        .gitlab
        .state()
        .requests()
        .iter()
        .any(|r| r.method == "POST"
            && r.path
                .ends_with(&format!("/pipelines/{}/cancel", pipes[0].id))));
    let text = h.only_post().text;
    assert!(text.contains("was cancelled"), "{text}");
    assert!(
        text.contains("These jobs joined it too: `lint`, `test`."),
        "{text}"
    );
    assert!(
        text.contains("`- if: '$CHATOPS_JOB'` + `when: never`"),
        "{text}"
    );
    assert_eq!(h.status(&req).await, RunStatus::Refused);
}

/// GitLab lists trigger jobs apart (`…/bridges`): they are asked for when the branch's
/// configuration may hold one — and a trigger job joining then cancels the pipeline like any
/// foreign job — and not asked for when it holds none (one request fewer per run).
#[tokio::test]
async fn a_trigger_job_joining_is_caught_and_bridges_are_asked_only_when_one_may() {
    let bridge_requests = |h: &Harness| {
        h.gitlab
            .state()
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/bridges"))
            .count()
    };
    let h = harness().await;
    let req = h.request("req-no-trigger", "deploy", "");
    h.run(&req).await.unwrap();
    assert_eq!(h.status(&req).await, RunStatus::Running);
    assert_eq!(bridge_requests(&h), 0, "no trigger job: bridges not asked");

    // A fresh container (the job list is kept a minute), a trigger job without rules.
    let h = harness().await;
    h.gitlab.state().set_ci_jobs(
        PROJECT,
        vec![
            StandinCiJob::chat("deploy"),
            StandinCiJob::trigger("downstream", "group/other"),
        ],
    );
    let req = h.request("req-trigger", "deploy", "");
    h.run(&req).await.unwrap();
    assert_eq!(bridge_requests(&h), 1);
    let pipes = h.gitlab.state().pipelines();
    assert_eq!(pipes.len(), 1);
    assert_eq!(pipes[0].status, Status::Canceled);
    let text = h.only_post().text;
    assert!(
        text.contains("These jobs joined it too: `downstream`."),
        "{text}"
    );
    assert_eq!(h.status(&req).await, RunStatus::Refused);
}

#[tokio::test]
async fn only_chat_job_never_joins_and_is_explained() {
    let h = harness().await;
    h.gitlab.state().set_ci_jobs(
        PROJECT,
        vec![
            StandinCiJob::only_chat("deploy"),
            StandinCiJob::plain("test"),
        ],
    );
    let req = h.request("req-onlychat", "deploy", "");
    h.run(&req).await.unwrap();
    let text = h.only_post().text;
    assert!(text.contains("The job `deploy` did not join it"), "{text}");
    assert!(text.contains("`test`"), "{text}");
    assert_eq!(h.gitlab.state().pipelines()[0].status, Status::Canceled);
}

#[tokio::test]
async fn many_foreign_jobs_are_all_found_across_pages() {
    let h = harness().await;
    let mut jobs = vec![StandinCiJob::chat("deploy")];
    jobs.extend((0..130).map(|i| StandinCiJob::plain(&format!("job-{i:03}"))));
    h.gitlab.state().set_ci_jobs(PROJECT, jobs);
    let req = h.request("req-pages", "deploy", "");
    h.run(&req).await.unwrap();
    let text = h.only_post().text;
    assert!(
        text.contains("`job-000`") && text.contains("`job-129`"),
        "{text}"
    );
    let pages: Vec<String> = h
        .gitlab
        .state()
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/jobs") && r.path.contains("/pipelines/"))
        .map(|r| r.query)
        .collect();
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(pages[1].contains("page=2"));
}

#[tokio::test]
async fn manual_job_waits_and_the_user_is_told() {
    let h = harness().await;
    h.gitlab
        .state()
        .set_ci_jobs(PROJECT, vec![StandinCiJob::chat("deploy").manual()]);
    let req = h.request("req-manual", "deploy", "production");
    h.run(&req).await.unwrap();
    let pipe = &h.gitlab.state().pipelines()[0];
    let job = &h.gitlab.state().jobs_of(pipe.id)[0];
    assert_eq!(job.status, Status::Manual);
    assert_eq!(h.status(&req).await, RunStatus::WaitingManual);
    let text = h.only_post().text;
    assert!(text.contains("waits for someone to play it"), "{text}");
    assert!(
        text.contains(&format!("/group/proj/-/jobs/{}", job.id)),
        "{text}"
    );
    let open = h.store.due_runs(u64::MAX, 1000).await.unwrap();
    assert!(open.iter().any(|r| r.request.request_id == req.request_id));
}

#[tokio::test]
async fn unlinked_user_is_told_how_to_get_linked() {
    let h = harness().await;
    h.store.unlink_user("T1", "U1").await.unwrap();
    let req = h.request("req-unlinked", "deploy", "");
    h.run(&req).await.unwrap();
    let post = h.only_post();
    assert_eq!(post.response_type.as_deref(), Some("ephemeral"));
    assert!(
        post.text
            .contains("`chatops users link T1/U1 &lt;your GitLab username&gt;`"),
        "{}",
        post.text
    );
    assert!(
        h.gitlab.state().requests().is_empty(),
        "GitLab is not asked"
    );
    assert_eq!(h.status(&req).await, RunStatus::Refused);
}

#[tokio::test]
async fn reporter_is_denied_with_the_project_url() {
    let h = harness().await;
    h.gitlab.state().set_member(PROJECT, USER, 20);
    let req = h.request("req-reporter", "deploy", "");
    h.run(&req).await.unwrap();
    let text = h.only_post().text;
    assert!(text.starts_with("You are not allowed to perform the given ChatOps command."));
    let url = h.gitlab.state().project_web_url(PROJECT);
    assert!(
        text.contains(&format!("can be found at <{url}|{url}>.")),
        "{text}"
    );
    assert!(h.gitlab.state().pipelines().is_empty());
    let asked = h
        .gitlab
        .state()
        .requests()
        .into_iter()
        .any(|r| r.path == format!("/api/v4/projects/{PROJECT}/members/all/{USER}"));
    assert!(asked);
}

#[tokio::test]
async fn non_member_is_denied() {
    let h = harness().await;
    h.gitlab.state().set_member(PROJECT, USER, 0);
    let req = h.request("req-nonmember", "deploy", "");
    h.run(&req).await.unwrap();
    assert!(h.only_post().text.starts_with("You are not allowed"));
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_waited_out() {
    let h = harness().await;
    h.gitlab.state().fail_next(
        Fault::RateLimited {
            retry_after: Some(1),
        },
        1,
        Some("/pipeline"),
    );
    let req = h.request("req-429", "deploy", "");
    let started = Instant::now();
    h.run(&req).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    let creates: Vec<u16> = h
        .gitlab
        .state()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/pipeline"))
        .map(|r| r.status)
        .collect();
    assert_eq!(creates, [429, 201]);
    assert_eq!(h.gitlab.state().pipelines().len(), 1);
    assert_eq!(h.status(&req).await, RunStatus::Running);
}

#[tokio::test]
async fn long_rate_limit_goes_back_to_the_queue() {
    let h = harness().await;
    h.gitlab.state().fail_next(
        Fault::RateLimited {
            retry_after: Some(60),
        },
        1,
        None,
    );
    let req = h.request("req-429-long", "deploy", "");
    let started = Instant::now();
    let err = h.run(&req).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        chatops_core::report::chain(&err).contains("rate limited"),
        "{err:?}"
    );
    assert!(matches!(err, DispatchError::Retryable(_)));
    // The next delivery goes through.
    h.run(&req).await.unwrap();
    assert_eq!(h.gitlab.state().pipelines().len(), 1);
}

#[tokio::test]
async fn server_errors_forever_are_retried_then_the_user_is_told() {
    let h = harness().await;
    h.gitlab.state().fail_next(Fault::Status(500), 10_000, None);
    let req = h.request("req-500", "deploy", "");
    let body = serde_json::to_string(&req).unwrap();
    for n in 1..MAX_ATTEMPTS {
        let resp = chatops_adapters::lambda::dispatch_batch(
            &h.dispatcher,
            batch(vec![sqs_message("m-500", &body, n)]),
            None,
        )
        .await;
        assert_eq!(failures(&resp), ["m-500"], "attempt {n} goes back to SQS");
        assert!(h.slack.transcript().is_empty());
    }
    let resp = chatops_adapters::lambda::dispatch_batch(
        &h.dispatcher,
        batch(vec![sqs_message("m-500", &body, MAX_ATTEMPTS)]),
        None,
    )
    .await;
    assert!(
        failures(&resp).is_empty(),
        "acknowledged once the user knows"
    );
    let post = h.only_post();
    assert!(post.text.starts_with(&could_not_schedule("deploy")));
    assert!(post.text.contains("GitLab is unavailable"), "{}", post.text);
    assert_eq!(h.status(&req).await, RunStatus::Refused);
    assert!(h.gitlab.state().pipelines().is_empty());
}

#[tokio::test]
async fn a_bad_record_never_fails_its_neighbours() {
    let h = harness().await;
    let good = h.request("req-neighbour", "deploy", "");
    let mut future = serde_json::to_value(&good).unwrap();
    future["version"] = 2.into();
    future["request_id"] = "req-future".into();
    let resp = chatops_adapters::lambda::dispatch_batch(
        &h.dispatcher,
        batch(vec![
            sqs_message("bad-json", "{not json", 1),
            sqs_message("future", &future.to_string(), 1),
            sqs_message("good", &serde_json::to_string(&good).unwrap(), 1),
        ]),
        None,
    )
    .await;
    assert!(failures(&resp).is_empty());
    assert_eq!(h.gitlab.state().pipelines().len(), 1);
    assert_eq!(h.status(&good).await, RunStatus::Running);
}

#[tokio::test]
async fn client_maps_gitlab_errors_with_their_messages() {
    let gitlab = GitLabStandin::start().await;
    gitlab.state().add_project(1, "g/p");
    let wrong =
        GitLabClient::with_policy(&gitlab.url(), Secret::new("nope"), fast_policy()).unwrap();
    assert_eq!(
        wrong.project(&ProjectRef::new("g/p")).await.unwrap_err(),
        GitLabError::Unauthorized("401 Unauthorized".into())
    );
    let ok = GitLabClient::with_policy(&gitlab.url(), Secret::new(gitlab.token()), fast_policy())
        .unwrap();
    assert_eq!(
        ok.project(&ProjectRef::new("g/p")).await.unwrap().id,
        ProjectId(1)
    );
    assert_eq!(
        ok.project(&ProjectRef::new("g/missing")).await.unwrap_err(),
        GitLabError::NotFound("404 Project Not Found".into())
    );
    assert_eq!(ok.user_by_username("ghost").await.unwrap(), None);
    let err = ok
        .create_pipeline(ProjectId(1), "main", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, GitLabError::Rejected(m) if m.contains("Please provide content")));
    // A 500 on a create is not repeated: a second pipeline is worse than a later retry.
    gitlab
        .state()
        .set_ci_jobs(1, vec![StandinCiJob::plain("x")]);
    gitlab
        .state()
        .fail_next(Fault::Status(500), 1, Some("/pipeline"));
    assert!(ok
        .create_pipeline(ProjectId(1), "main", &[])
        .await
        .unwrap_err()
        .is_retryable());
    let posts = gitlab
        .state()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 2);
    // A 502 on a read is retried within the call.
    gitlab
        .state()
        .fail_next(Fault::Status(502), 2, Some("/projects/g%2Fp"));
    assert_eq!(
        ok.project(&ProjectRef::new("g/p")).await.unwrap().id,
        ProjectId(1)
    );
    assert_eq!(
        ok.member_access(ProjectId(1), chatops_core::ids::GitLabUserId(9))
            .await
            .unwrap(),
        None
    );
    gitlab.state().add_user(9, "bob");
    gitlab.state().set_member(1, 9, 40);
    assert_eq!(
        ok.member_access(ProjectId(1), chatops_core::ids::GitLabUserId(9))
            .await
            .unwrap(),
        Some(AccessLevel::MAINTAINER)
    );
}

// ----- the sample event, against in-memory fakes -----

#[tokio::test]
async fn sample_sqs_event_dispatches() {
    let event: SqsEvent =
        serde_json::from_str(include_str!("../events/sqs-run-request.json")).unwrap();
    let request: RunRequest =
        serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();

    let gl = Arc::new(FakeGitLab::new());
    let p = gl.add_project(42, "group/proj");
    let u = gl.add_user(7, "steve");
    gl.set_member(p.id, u.id, AccessLevel::DEVELOPER);
    gl.set_ci_jobs(p.id, vec![FakeGitLab::ci_job(&request.job)]);
    let store = Arc::new(MemoryStore::new());
    store
        .link_user(&UserLink {
            team_id: request.team_id.clone(),
            chat_user_id: request.user_id.clone(),
            gitlab_username: "steve".into(),
            gitlab_user_id: None,
            linked_at: 1,
            platform: None,
            grant: None,
        })
        .await
        .unwrap();
    let chat = Arc::new(RecordingChat::default());
    let clock: Arc<dyn Clock> = Arc::new(chatops_sim::ManualClock::at(request.received_at + 2));
    let d = Dispatcher {
        audit: Default::default(),
        identity: None,
        config: DispatcherConfig {
            audit: Default::default(),
            gitlab_url: "https://gitlab.example.com".into(),
            gitlab_token: Secret::new("t"),
            oauth: None,
            project: ProjectRef::new("group/proj"),
            channel_projects: HashMap::new(),
            runs_table: "unused".into(),
            chat: ChatSettings::default(),
            first_check_secs: 300,
        },
        gitlab: gl.clone(),
        store: store.clone(),
        deliverer: Deliverer {
            slack: chat.clone(),
            mattermost: chat.clone(),
            mattermost_buttons: None,
            store: store.clone(),
            clock: clock.clone(),
        },
        clock,
    };
    let resp = chatops_adapters::lambda::dispatch_batch(&d, event, None).await;
    assert!(resp.batch_item_failures.is_empty());
    let created = gl.created_pipelines();
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].variable("CHAT_INPUT"),
        Some("production\nregion=eu-west-1")
    );
    assert_eq!(created[0].variable("CHAT_CHANNEL"), Some("C2147483705"));
    let sent = chat.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, request.response_url);
}

#[tokio::test]
async fn sample_mixed_batch_acknowledges_the_bad_and_runs_the_good() {
    let event: SqsEvent =
        serde_json::from_str(include_str!("../events/sqs-batch-mixed.json")).unwrap();
    assert_eq!(event.records.len(), 3);
    let good: RunRequest = serde_json::from_str(event.records[2].body.as_deref().unwrap()).unwrap();
    let gl = Arc::new(FakeGitLab::new());
    let p = gl.add_project(42, "group/proj");
    let u = gl.add_user(7, "steve");
    gl.set_member(p.id, u.id, AccessLevel::MAINTAINER);
    gl.set_ci_jobs(p.id, vec![FakeGitLab::ci_job(&good.job)]);
    let store = Arc::new(MemoryStore::new());
    store
        .link_user(&UserLink {
            team_id: good.team_id.clone(),
            chat_user_id: good.user_id.clone(),
            gitlab_username: "steve".into(),
            gitlab_user_id: None,
            linked_at: 1,
            platform: None,
            grant: None,
        })
        .await
        .unwrap();
    let chat = Arc::new(RecordingChat::default());
    let clock: Arc<dyn Clock> = Arc::new(chatops_sim::ManualClock::at(good.received_at + 60));
    let d = Dispatcher {
        audit: Default::default(),
        identity: None,
        config: DispatcherConfig {
            audit: Default::default(),
            gitlab_url: "https://gitlab.example.com".into(),
            gitlab_token: Secret::new("t"),
            oauth: None,
            project: ProjectRef::new("42"),
            channel_projects: HashMap::new(),
            runs_table: "unused".into(),
            chat: ChatSettings::default(),
            first_check_secs: 300,
        },
        gitlab: gl.clone(),
        store: store.clone(),
        deliverer: Deliverer {
            slack: chat.clone(),
            mattermost: chat.clone(),
            mattermost_buttons: None,
            store: store.clone(),
            clock: clock.clone(),
        },
        clock,
    };
    let resp = chatops_adapters::lambda::dispatch_batch(&d, event, None).await;
    assert!(resp.batch_item_failures.is_empty());
    let created = gl.created_pipelines();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].variable("CHATOPS_JOB"), Some("hello-world"));
    assert_eq!(created[0].variable("CHAT_INPUT"), Some(""));
    assert_eq!(
        store.all_runs().len(),
        1,
        "bad records leave nothing behind"
    );
}

#[test]
fn ci_template_carries_the_contract_rules() {
    let v: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../infra/gitlab/chatops-job.gitlab-ci.yml")).unwrap();
    assert_eq!(
        v[".chatops"]["rules"][0]["if"].as_str(),
        Some("$CHATOPS_JOB == $CI_JOB_NAME")
    );
    assert_eq!(
        v[".chatops-manual"]["rules"][0]["if"].as_str(),
        Some("$CHATOPS_JOB == $CI_JOB_NAME")
    );
    assert_eq!(
        v[".chatops-manual"]["rules"][0]["when"].as_str(),
        Some("manual")
    );
    assert_eq!(
        v[".chatops-never"]["rules"][0]["if"].as_str(),
        Some("$CHATOPS_JOB")
    );
    assert_eq!(
        v[".chatops-never"]["rules"][0]["when"].as_str(),
        Some("never")
    );
    // The README's copy-paste example uses the same rule text.
    let readme = include_str!("../README.md");
    assert!(readme.contains("- if: '$CHATOPS_JOB == $CI_JOB_NAME'"));
}

struct EchoExecutor;

#[async_trait::async_trait]
impl chatops_sim::gitlab::JobExecutor for EchoExecutor {
    async fn run(&self, job: chatops_sim::gitlab::ExecJob) -> chatops_sim::gitlab::ExecOutcome {
        let input = job
            .variables
            .iter()
            .find(|(k, _)| k == "CHAT_INPUT")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        chatops_sim::gitlab::ExecOutcome {
            status: Status::Success,
            trace: format!("{} says {input}\n", job.name).into_bytes(),
        }
    }
}

#[tokio::test]
async fn standin_runs_jobs_and_delivers_gitlab_webhooks() {
    use futures_util::StreamExt;
    type Seen = Arc<Mutex<Vec<(HashMap<String, String>, serde_json::Value)>>>;
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/gitlab/webhook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/gitlab/webhook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let s2 = s2.clone();
            async move {
                let h = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                s2.lock()
                    .unwrap()
                    .push((h, serde_json::from_str(&body).unwrap()));
                "ok"
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let gitlab = GitLabStandin::start().await;
    let st = gitlab.state();
    st.add_project(5, "g/p");
    st.set_ci_jobs(5, vec![StandinCiJob::chat("hello")]);
    st.set_webhook(&hook_url, "hook-secret");
    st.set_executor(Arc::new(EchoExecutor));
    let client =
        GitLabClient::with_policy(&gitlab.url(), Secret::new(gitlab.token()), fast_policy())
            .unwrap();
    let vars = vec![
        ("CHATOPS_JOB".to_string(), "hello".to_string()),
        ("CHAT_INPUT".to_string(), "hi".to_string()),
    ];
    let pipe = client
        .create_pipeline(ProjectId(5), "main", &vars)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hooks = seen.lock().unwrap().clone();
    assert_eq!(hooks.len(), 2, "a Job Hook and a Pipeline Hook");
    let (jh, job_body) = &hooks[0];
    assert_eq!(jh["x-gitlab-event"], "Job Hook");
    assert_eq!(jh["x-gitlab-token"], "hook-secret");
    assert!(!jh["idempotency-key"].is_empty() && !jh["x-gitlab-event-uuid"].is_empty());
    assert_eq!(job_body["object_kind"], "build");
    assert_eq!(job_body["build_status"], "success");
    assert_eq!(job_body["pipeline_id"], pipe.id.0);
    let (ph, pipe_body) = &hooks[1];
    assert_eq!(ph["x-gitlab-event"], "Pipeline Hook");
    assert_eq!(pipe_body["object_attributes"]["status"], "success");
    assert_eq!(pipe_body["builds"][0]["name"], "hello");

    let job_id = chatops_core::ids::JobId(job_body["build_id"].as_u64().unwrap());
    let job = client.job(ProjectId(5), job_id).await.unwrap();
    assert_eq!(job.status, Status::Success);
    let trace: Vec<u8> = client
        .job_trace(ProjectId(5), job_id)
        .await
        .unwrap()
        .map(|c| c.unwrap().to_vec())
        .concat()
        .await;
    assert_eq!(trace, b"hello says hi\n");
    assert_eq!(
        client.pipeline(ProjectId(5), pipe.id).await.unwrap().status,
        Status::Success
    );

    // Resending the same delivery keeps its Idempotency-Key (what completion dedups on).
    let d = st.job_hook(job_id.0).unwrap();
    st.deliver(&d).await.unwrap();
    st.deliver(&d).await.unwrap();
    let keys: Vec<String> = seen.lock().unwrap()[2..]
        .iter()
        .map(|(h, _)| h["idempotency-key"].clone())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    server.abort();
}

/// GitLab's own first sentence when a command cannot be scheduled, as Slack shows it.
fn could_not_schedule(job: &str) -> String {
    format!(
        "The command could not be scheduled. Make sure that your project has a .gitlab-ci.yml \
         that defines a job with the name \"{job}\""
    )
}

/// The project's `.gitlab/chatops.yml` (issue 12, item 4): its rules refuse a run before any
/// pipeline exists, each saying why; a file that does not name the job changes nothing.
#[tokio::test]
async fn policy_file_rules_refuse_before_any_pipeline() {
    use chatops_core::policy::POLICY_PATH;
    let h = harness().await;
    let set = |text: &str| h.gitlab.state().set_file(PROJECT, POLICY_PATH, Some(text));
    let cases: &[(&str, &str, &str)] = &[
        (
            "p-channel",
            "jobs:\n  deploy:\n    channels: [C0THER, releases]\n",
            "lets `deploy` be run only in `C0THER`, `releases`.",
        ),
        (
            "p-role",
            "jobs:\n  deploy:\n    min_role_to_request: maintainer\n",
            "asks the Maintainer role or higher on the project to run `deploy`.",
        ),
        (
            "p-invalid",
            "jobs:\n  deploy:\n    aprovals: 1\n",
            ".gitlab/chatops.yml line 3: job \"deploy\": unknown key \"aprovals\"",
        ),
    ];
    for (i, (id, text, said)) in cases.iter().enumerate() {
        set(text);
        // The client keeps a read file for a minute per token: each case with a fresh one.
        let h2 = fresh_client(&h);
        let req = h.request(id, "deploy", "");
        h2.handle_message(&serde_json::to_string(&req).unwrap(), 1)
            .await
            .unwrap();
        let (cards, t) = without_cards(h.slack.transcript());
        assert_eq!(cards, i + 1, "each refused run's card says it did not run");
        assert_eq!(t.len(), i + 1, "{t:#?}");
        let post = &t[i];
        assert!(
            post.text.starts_with(&could_not_schedule("deploy")),
            "{}",
            post.text
        );
        assert!(post.text.contains(said), "{id}: {}", post.text);
        assert_eq!(h.status(&req).await, RunStatus::Refused, "{id}");
        assert!(h.gitlab.state().pipelines().is_empty(), "{id}");
    }

    // Rules that fit (this channel by name, Developer asked of a Developer), or a file that
    // does not name the job: the run goes ahead as without a file.
    for (id, text) in [
        (
            "p-fits",
            "jobs:\n  deploy:\n    channels: [ops]\n    min_role_to_request: developer\n",
        ),
        ("p-other", "jobs:\n  restart:\n    approvals: 1\n"),
    ] {
        set(text);
        let h2 = fresh_client(&h);
        let req = h.request(id, "deploy", "");
        h2.handle_message(&serde_json::to_string(&req).unwrap(), 1)
            .await
            .unwrap();
        assert_eq!(h.status(&req).await, RunStatus::Running, "{id}");
    }
    assert_eq!(h.gitlab.state().pipelines().len(), 2);
}

/// The harness's dispatcher with a GitLab client of its own (empty caches).
fn fresh_client(h: &Harness) -> Dispatcher {
    let client = GitLabClient::with_policy(
        &h.gitlab.url(),
        Secret::new(h.gitlab.token()),
        fast_policy(),
    )
    .unwrap();
    Dispatcher {
        audit: Default::default(),
        identity: None,
        gitlab: Arc::new(client),
        store: h.store.clone(),
        deliverer: Deliverer {
            slack: h.dispatcher.deliverer.slack.clone(),
            mattermost: h.dispatcher.deliverer.mattermost.clone(),
            mattermost_buttons: None,
            store: h.store.clone(),
            clock: h.dispatcher.clock.clone(),
        },
        clock: h.dispatcher.clock.clone(),
        config: h.dispatcher.config.clone(),
    }
}
