//! Interactive runs end to end: each run is one card that changes in place, and its buttons act
//! in GitLab as the person who clicked. Through the real interfaces: signed slash commands and
//! signed `block_actions` payloads (Slack's documented example, `tests/fixtures/slack/
//! block_actions.json`, with our values) into local mode's HTTP front (the Lambdas' handlers),
//! people connected through OAuth (the GitLab stand-in's `/oauth/authorize`), SQS + DynamoDB +
//! KMS over moto, the GitLab stand-in running `tests/demo-project`'s jobs in bash (per-user
//! permissions; it records who cancelled and who played), and the Slack stand-in
//! (`replace_original`, `chat.update`, 5 uses per `response_url`).

mod support;

use chatops::demo::{
    demo_project_dir, DemoBackends, DemoUser, DemoWorld, SentClick, SentCommand, ALICE, BOB, CAROL,
    DEMO_PROJECT_ID, DEMO_TEAM,
};
use chatops_core::card::{
    APPROVE_ACTION_ID, CANCEL_ACTION_ID, PLAY_ACTION_ID, REJECT_ACTION_ID, RETRY_ACTION_ID,
};
use chatops_core::gitlab::Status;
use chatops_core::run::RunStatus;
use chatops_sim::slack::{render_posts, Post, Via};
use std::time::Duration;

/// SQS, DynamoDB and a KMS key in moto, and an OAuth world over them.
async fn world() -> DemoWorld {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let sdk = support::aws_config().await;
    let queue_url = aws_sdk_sqs::Client::new(&sdk)
        .create_queue()
        .queue_name(support::unique_name("clicks-q"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "5",
        )
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let table = support::unique_name("clicks");
    chatops_adapters::dynamo::DynamoStore::create_table(
        &aws_sdk_dynamodb::Client::new(&sdk),
        &table,
    )
    .await
    .expect("table");
    let key = chatops_adapters::aws::kms(&sdk)
        .create_key()
        .description("chatops tokens (test)")
        .send()
        .await
        .expect("KMS key")
        .key_metadata
        .and_then(|m| m.arn)
        .expect("key ARN");
    DemoWorld::start_oauth(
        DemoBackends::Aws {
            sdk: Box::new(sdk),
            queue_url,
            table,
        },
        &demo_project_dir(),
        // A retried run's card and its reply are both posted with chat.postMessage; the
        // stand-in's jobs end at once, so the reply meets Slack's one-message-a-second limit
        // and is left to the sweep (as in production): the sweep runs often here.
        &[("TOKEN_KEY_ID", key.as_str()), ("SWEEP_EVERY_SECS", "2")],
    )
    .await
    .expect("OAuth world")
}

/// Wait until `cond` holds (the dispatcher works through SQS).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connect `user` through `/chatops link` and their browser.
async fn connect(world: &DemoWorld, user: DemoUser) {
    assert!(
        world.connect(user).await.expect("connect"),
        "{} connected",
        user.name
    );
}

fn pipelines_of(world: &DemoWorld, job: &str) -> Vec<u64> {
    world
        .gitlab
        .state()
        .pipelines()
        .iter()
        .filter(|p| p.variable("CHATOPS_JOB") == Some(job))
        .map(|p| p.id)
        .collect()
}

fn pipeline_status(world: &DemoWorld, id: u64) -> Option<Status> {
    world
        .gitlab
        .state()
        .pipelines()
        .into_iter()
        .find(|p| p.id == id)
        .map(|p| p.status)
}

/// The run's id (what its buttons carry), from its pipeline's variables.
fn run_id(world: &DemoWorld, pipeline: u64) -> String {
    world
        .gitlab
        .state()
        .pipelines()
        .into_iter()
        .find(|p| p.id == pipeline)
        .and_then(|p| p.variable("CHATOPS_REQUEST_ID").map(str::to_owned))
        .expect("a run id")
}

fn has_button(card: &Post, action_id: &str) -> bool {
    card.blocks
        .as_ref()
        .is_some_and(|b| b.to_string().contains(&format!("\"{action_id}\"")))
}

/// The card as the channel reads it now.
fn card_text(world: &DemoWorld, cmd: &SentCommand) -> String {
    world
        .card(cmd)
        .map(|p| render_posts(&[p]))
        .unwrap_or_default()
}

/// The messages of `cmd` other than its card (the reply, refusals).
fn replies(world: &DemoWorld, cmd: &SentCommand) -> String {
    let posts: Vec<Post> = world
        .posts_for(cmd)
        .into_iter()
        .filter(|p| !matches!(p.via, Via::CommandAnswer { .. }))
        .collect();
    render_posts(&posts)
}

/// What the clicker alone saw (the click's `response_url` posts other than the redrawn card).
fn told(world: &DemoWorld, click: &SentClick) -> String {
    render_posts(&world.click_posts(click))
}

/// Cancel and play calls GitLab received, with who made them.
fn gitlab_actions(world: &DemoWorld, suffix: &str) -> Vec<(u16, Option<String>)> {
    world
        .gitlab
        .state()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(suffix))
        .map(|r| (r.status, r.user))
        .collect()
}

/// `user` runs `text` and waits until its card shows the button `action_id`.
async fn card_with(
    world: &DemoWorld,
    user: DemoUser,
    text: &str,
    action_id: &str,
) -> (SentCommand, Post) {
    let cmd = world.command(user, text).await.expect("command");
    assert_eq!(cmd.status, 200);
    let mut card = None;
    until(&format!("a card with {action_id}"), || {
        card = world.card(&cmd).filter(|c| has_button(c, action_id));
        card.is_some()
    })
    .await;
    (cmd, card.expect("card"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_running_job_from_its_card_as_the_clicker() {
    let world = world().await;
    connect(&world, ALICE).await;
    connect(&world, CAROL).await;
    let (cmd, card) = card_with(&world, ALICE, "run slow-task", CANCEL_ACTION_ID).await;
    let p = pipelines_of(&world, "slow-task")[0];
    assert!(!pipeline_status(&world, p).is_some_and(|s| s.is_final()));
    // The card is the command's answer, replaced in place: who asked, the links, Cancel.
    let shown = card_text(&world, &cmd);
    assert!(
        shown.contains("slow-task") && shown.contains("Requested by @U0ALICE"),
        "{shown}"
    );
    assert!(
        shown.contains("/-/pipelines/") && shown.contains("[Cancel]"),
        "{shown}"
    );

    let click = world
        .click(CAROL, &card, CANCEL_ACTION_ID)
        .await
        .expect("click");
    assert_eq!(click.status, 200, "acknowledged at once");
    until("the pipeline cancelled", || {
        pipeline_status(&world, p) == Some(Status::Canceled)
    })
    .await;
    assert_eq!(
        world.gitlab.state().pipeline_canceller(p).as_deref(),
        Some("carol"),
        "cancelled with carol's own token"
    );
    assert_eq!(
        gitlab_actions(&world, "/cancel"),
        vec![(200, Some("carol".to_owned()))]
    );
    until("the card says who cancelled", || {
        let t = card_text(&world, &cmd);
        t.contains("*Cancelled*") && t.contains("cancelled by @U0CAROL")
    })
    .await;
    // The job's reply still comes, as its own message; the card stays one message.
    until("the reply", || {
        replies(&world, &cmd).contains("was cancelled")
    })
    .await;
    let card_now = world.card(&cmd).expect("card");
    assert!(
        has_button(&card_now, RETRY_ACTION_ID),
        "a cancelled run can be retried"
    );
    assert!(!has_button(&card_now, CANCEL_ACTION_ID));
    assert!(
        world.channel_posts().is_empty(),
        "no status texts in the channel"
    );
    assert!(
        world.slack.refusals().is_empty(),
        "{:?}",
        world.slack.refusals()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_a_manual_job_as_the_clicker() {
    let world = world().await;
    connect(&world, ALICE).await;
    connect(&world, CAROL).await;
    let (cmd, card) = card_with(&world, ALICE, "run restart", PLAY_ACTION_ID).await;
    assert!(card_text(&world, &cmd).contains("manual job"));
    let p = pipelines_of(&world, "restart")[0];
    let job = world.gitlab.state().jobs_of(p)[0].id;
    assert_eq!(world.gitlab.state().job_player(job), None);

    let click = world
        .click(CAROL, &card, PLAY_ACTION_ID)
        .await
        .expect("click");
    assert_eq!(click.status, 200);
    until("the job played", || {
        world.gitlab.state().job_player(job).is_some()
    })
    .await;
    assert_eq!(
        world.gitlab.state().job_player(job).as_deref(),
        Some("carol"),
        "played with carol's own token"
    );
    until("the reply", || {
        replies(&world, &cmd).contains("Restarting the web service")
    })
    .await;
    until("the card's last state", || {
        let t = card_text(&world, &cmd);
        t.contains("*Succeeded*") && t.contains("run by @U0CAROL")
    })
    .await;
    assert_eq!(
        gitlab_actions(&world, "/play"),
        vec![(200, Some("carol".to_owned()))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_click_does_one_thing() {
    let world = world().await;
    connect(&world, ALICE).await;
    connect(&world, CAROL).await;
    let (cmd, card) = card_with(&world, ALICE, "run slow-task", CANCEL_ACTION_ID).await;
    let p = pipelines_of(&world, "slow-task")[0];
    // Two clicks (two payloads, two action_ts), at once, and the first payload sent again.
    let run = run_id(&world, p);
    let (first, url) = world
        .click_payload(CAROL, DEMO_TEAM, &card.ts, CANCEL_ACTION_ID, &run)
        .expect("payload");
    let (second, _) = world
        .click_payload(CAROL, DEMO_TEAM, &card.ts, CANCEL_ACTION_ID, &run)
        .expect("payload");
    let (a, b) = tokio::join!(
        world.send_interaction(&first, None, None),
        world.send_interaction(&second, None, None)
    );
    assert_eq!((a.unwrap(), b.unwrap()), (200, 200));
    until("the pipeline cancelled", || {
        pipeline_status(&world, p) == Some(Status::Canceled)
    })
    .await;
    until("the card says who cancelled", || {
        card_text(&world, &cmd).contains("cancelled by @U0CAROL")
    })
    .await;
    assert_eq!(
        world.send_interaction(&first, None, None).await.unwrap(),
        200
    );
    until("the reply", || {
        replies(&world, &cmd).contains("was cancelled")
    })
    .await;
    // Give the redelivered click time to be handled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        gitlab_actions(&world, "/cancel"),
        vec![(200, Some("carol".to_owned()))],
        "one cancel in GitLab"
    );
    // The other clicks were told, only to the clicker, that it is done already.
    let said = render_posts(
        &world
            .slack
            .transcript()
            .into_iter()
            .filter(|p| p.response_type.as_deref() == Some("ephemeral"))
            .collect::<Vec<_>>(),
    );
    assert!(
        said.contains("already cancelled") || said.contains("was cancelled, so there is nothing"),
        "{said}"
    );
    let _ = url;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_are_rechecked_as_the_clicker_each_time() {
    let world = world().await;
    connect(&world, ALICE).await;
    let (cmd, card) = card_with(&world, ALICE, "run slow-task", CANCEL_ACTION_ID).await;
    let p = pipelines_of(&world, "slow-task")[0];

    // Bob has not connected: a connect link only he sees, and nothing happens.
    let click = world
        .click(BOB, &card, CANCEL_ACTION_ID)
        .await
        .expect("click");
    assert_eq!(click.status, 200);
    until("bob's connect link", || {
        told(&world, &click).contains("Connect your GitLab account")
    })
    .await;
    let link_post = world
        .click_posts(&click)
        .into_iter()
        .find(|p| p.text.contains("Connect your GitLab account"))
        .expect("link");
    assert_eq!(link_post.response_type.as_deref(), Some("ephemeral"));
    assert!(
        link_post.text.contains("/oauth/authorize?"),
        "{}",
        link_post.text
    );

    // Connected, bob is a Reporter: GitLab refuses him, in its words, and the press is free
    // again for someone who may.
    connect(&world, BOB).await;
    let click = world
        .click(BOB, &card, CANCEL_ACTION_ID)
        .await
        .expect("click");
    until("GitLab's refusal", || {
        told(&world, &click).contains("GitLab did not let you cancel")
    })
    .await;
    assert!(
        told(&world, &click).contains("403"),
        "{}",
        told(&world, &click)
    );
    assert!(!pipeline_status(&world, p).is_some_and(|s| s.is_final()));
    assert_eq!(
        gitlab_actions(&world, "/cancel"),
        vec![(403, Some("bob".to_owned()))]
    );

    connect(&world, CAROL).await;
    world
        .click(CAROL, &card, CANCEL_ACTION_ID)
        .await
        .expect("click");
    until("carol cancelled", || {
        world.gitlab.state().pipeline_canceller(p).as_deref() == Some("carol")
    })
    .await;
    until("the card says who cancelled", || {
        card_text(&world, &cmd).contains("cancelled by @U0CAROL")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_foreign_and_unknown_clicks_are_refused() {
    let world = world().await;
    connect(&world, ALICE).await;
    connect(&world, CAROL).await;
    let (cmd, card) = card_with(&world, ALICE, "run slow-task", CANCEL_ACTION_ID).await;
    let p = pipelines_of(&world, "slow-task")[0];
    let run = run_id(&world, p);
    let (payload, _) = world
        .click_payload(CAROL, DEMO_TEAM, &card.ts, CANCEL_ACTION_ID, &run)
        .expect("payload");

    // Forged (another signing secret) and stale (301 s old): 401, as for commands.
    let now = world.local.clock.now();
    assert_eq!(
        world
            .send_interaction(&payload, Some("not-the-signing-secret"), None)
            .await
            .unwrap(),
        401
    );
    assert_eq!(
        world
            .send_interaction(&payload, None, Some(now - 301))
            .await
            .unwrap(),
        401
    );
    // A response_url outside the allowed prefixes: 400, nothing queued.
    let mut evil: serde_json::Value = serde_json::from_str(&payload).unwrap();
    evil["response_url"] = serde_json::json!("https://evil.example.com/hook");
    assert_eq!(
        world
            .send_interaction(&evil.to_string(), None, None)
            .await
            .unwrap(),
        400
    );
    // Not our button (the documentation's own): acknowledged, ignored.
    let (theirs, _) = world
        .click_payload(CAROL, DEMO_TEAM, &card.ts, "WaXA", "click_me_123")
        .expect("payload");
    assert_eq!(
        world.send_interaction(&theirs, None, None).await.unwrap(),
        200
    );

    // Signed, but from another workspace (a shared channel): refused, only to the clicker.
    let (foreign, _) = world
        .click_payload(CAROL, "T0OTHER", &card.ts, CANCEL_ACTION_ID, &run)
        .expect("payload");
    assert_eq!(
        world.send_interaction(&foreign, None, None).await.unwrap(),
        200
    );
    // A run nobody knows.
    let (unknown, _) = world
        .click_payload(CAROL, DEMO_TEAM, &card.ts, CANCEL_ACTION_ID, "0000feed")
        .expect("payload");
    assert_eq!(
        world.send_interaction(&unknown, None, None).await.unwrap(),
        200
    );
    let ephemeral = || {
        render_posts(
            &world
                .slack
                .transcript()
                .into_iter()
                .filter(|p| p.response_type.as_deref() == Some("ephemeral"))
                .collect::<Vec<_>>(),
        )
    };
    until("both told", || {
        let t = ephemeral();
        t.contains("another workspace") && t.contains("no longer known")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        gitlab_actions(&world, "/cancel").is_empty(),
        "nothing was cancelled"
    );
    assert!(!pipeline_status(&world, p).is_some_and(|s| s.is_final()));
    assert!(
        card_text(&world, &cmd).contains("[Cancel]"),
        "the card did not change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_a_finished_run_answers_the_current_state() {
    let world = world().await;
    connect(&world, ALICE).await;
    let cmd = world
        .command(ALICE, "run hello-world")
        .await
        .expect("command");
    until("the reply", || {
        replies(&world, &cmd).contains("Hello World")
    })
    .await;
    until("the card's last state", || {
        card_text(&world, &cmd).contains("*Succeeded*")
    })
    .await;
    let p = pipelines_of(&world, "hello-world")[0];
    let card = world.card(&cmd).expect("card");
    assert!(!has_button(&card, CANCEL_ACTION_ID));
    // A stale copy of the card (the button it had while running).
    let (payload, url) = world
        .click_payload(
            ALICE,
            DEMO_TEAM,
            &card.ts,
            CANCEL_ACTION_ID,
            &run_id(&world, p),
        )
        .expect("payload");
    assert_eq!(
        world.send_interaction(&payload, None, None).await.unwrap(),
        200
    );
    let click = SentClick {
        user: ALICE,
        response_url: url,
        status: 200,
    };
    until("the clicker told", || {
        told(&world, &click).contains("has succeeded, so there is nothing to cancel")
    })
    .await;
    let card_now = world.card(&cmd).expect("card");
    assert!(
        card_now.edits > card.edits,
        "the card was redrawn as it stands"
    );
    assert!(render_posts(&[card_now]).contains("*Succeeded*"));
    assert!(gitlab_actions(&world, "/cancel").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_starts_a_new_run_by_the_clicker() {
    let world = world().await;
    connect(&world, ALICE).await;
    connect(&world, CAROL).await;
    let (cmd, card) = card_with(&world, ALICE, "run db-check", RETRY_ACTION_ID).await;
    assert!(card_text(&world, &cmd).contains("*Failed*"));
    let click = world
        .click(CAROL, &card, RETRY_ACTION_ID)
        .await
        .expect("click");
    assert_eq!(click.status, 200);
    until("a second pipeline", || {
        pipelines_of(&world, "db-check").len() == 2
    })
    .await;
    let second = pipelines_of(&world, "db-check")[1];
    assert_eq!(
        world.gitlab.state().pipeline_creator(second).as_deref(),
        Some("carol"),
        "the retry runs as the clicker"
    );
    // The old card says who retried and offers no second retry.
    until("the old card", || {
        card_text(&world, &cmd).contains("retried by @U0CAROL")
    })
    .await;
    assert!(!has_button(
        &world.card(&cmd).expect("card"),
        RETRY_ACTION_ID
    ));
    // The new run has a card of its own (posted by the bot, then updated in place) and its
    // reply, in the channel.
    until("the new run's card and reply", || {
        let posts = world.channel_posts();
        posts
            .iter()
            .any(|p| p.edits > 0 && render_posts(std::slice::from_ref(p)).contains("*Failed*"))
            && posts
                .iter()
                .any(|p| render_posts(std::slice::from_ref(p)).contains("psql: error"))
    })
    .await;
    // A second click on the stale Retry does nothing new.
    world
        .click(CAROL, &card, RETRY_ACTION_ID)
        .await
        .expect("click");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pipelines_of(&world, "db-check").len(), 2);
}

/// The four-eyes rule the tests give the demo project's `release` job.
const FOUR_EYES: &str = "jobs:\n  release:\n    description: Release to staging\n    approvals: 1\n    min_role_to_approve: maintainer\n";

fn four_eyes(world: &DemoWorld) {
    world
        .gitlab
        .state()
        .set_file(DEMO_PROJECT_ID, ".gitlab/chatops.yml", Some(FOUR_EYES));
}

/// What `user` alone was told through their clicks' `response_url`s and ephemerals.
fn ephemeral_text(world: &DemoWorld) -> String {
    render_posts(
        &world
            .slack
            .transcript()
            .into_iter()
            .filter(|p| p.response_type.as_deref() == Some("ephemeral"))
            .collect::<Vec<_>>(),
    )
}

/// The run a card's buttons carry.
fn button_value(card: &Post, action_id: &str) -> String {
    card.blocks
        .as_ref()
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == action_id)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
        .expect("a button value")
}

async fn run_status(world: &DemoWorld, run: &str) -> Option<RunStatus> {
    world
        .local
        .store
        .get_run(&chatops_core::ids::RequestId::new(run))
        .await
        .expect("store")
        .map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_run_waits_for_someone_elses_approval_then_runs_as_the_requester() {
    let world = world().await;
    four_eyes(&world);
    connect(&world, ALICE).await;
    connect(&world, BOB).await;
    connect(&world, CAROL).await;
    let (cmd, card) = card_with(&world, ALICE, "run release v1.2", APPROVE_ACTION_ID).await;
    let shown = card_text(&world, &cmd);
    assert!(shown.contains("*Waiting for approval*"), "{shown}");
    assert!(
        shown.contains("needs approval by someone else with the Maintainer role or higher"),
        "{shown}"
    );
    assert!(has_button(&card, REJECT_ACTION_ID));
    assert!(!has_button(&card, CANCEL_ACTION_ID));
    assert!(
        pipelines_of(&world, "release").is_empty(),
        "no pipeline before approval"
    );
    let run = button_value(&card, APPROVE_ACTION_ID);
    assert_eq!(
        run_status(&world, &run).await,
        Some(RunStatus::AwaitingApproval)
    );

    // Alice cannot approve her own run.
    let own = world
        .click(ALICE, &card, APPROVE_ACTION_ID)
        .await
        .expect("click");
    until("alice told", || {
        told(&world, &own).contains("someone else must approve it")
    })
    .await;
    // Bob is a Reporter: GitLab (asked with bob's own token) says his role is too low.
    let low = world
        .click(BOB, &card, APPROVE_ACTION_ID)
        .await
        .expect("click");
    until("bob told", || {
        told(&world, &low).contains("needs the Maintainer role or higher")
    })
    .await;
    assert!(pipelines_of(&world, "release").is_empty());
    assert_eq!(
        run_status(&world, &run).await,
        Some(RunStatus::AwaitingApproval)
    );

    // Carol (Maintainer) approves, twice at once: one decision, one pipeline.
    let (a, _) = world
        .click_payload(CAROL, DEMO_TEAM, &card.ts, APPROVE_ACTION_ID, &run)
        .expect("payload");
    let (b, _) = world
        .click_payload(CAROL, DEMO_TEAM, &card.ts, APPROVE_ACTION_ID, &run)
        .expect("payload");
    let (x, y) = tokio::join!(
        world.send_interaction(&a, None, None),
        world.send_interaction(&b, None, None)
    );
    assert_eq!((x.unwrap(), y.unwrap()), (200, 200));
    until("the pipeline", || {
        pipelines_of(&world, "release").len() == 1
    })
    .await;
    let p = pipelines_of(&world, "release")[0];
    let pipeline = world
        .gitlab
        .state()
        .pipelines()
        .into_iter()
        .find(|q| q.id == p)
        .expect("pipeline");
    assert_eq!(pipeline.variable("CHAT_APPROVED_BY"), Some("carol"));
    assert_eq!(pipeline.variable("CHAT_INPUT"), Some("v1.2"));
    assert_eq!(
        world.gitlab.state().pipeline_creator(p).as_deref(),
        Some("alice"),
        "created with the requester's own token"
    );
    until("the reply", || {
        replies(&world, &cmd).contains("approved by carol")
    })
    .await;
    until("the card's last state", || {
        let t = card_text(&world, &cmd);
        t.contains("*Succeeded*") && t.contains("approved by @U0CAROL")
    })
    .await;
    // The second of carol's clicks was told it is decided already (or found it moved on).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pipelines_of(&world, "release").len(), 1, "one pipeline");
    let said = ephemeral_text(&world);
    assert!(
        said.contains("already approved") || said.contains("so there is nothing to approve"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_withdrawn_and_expired_requests_create_no_pipeline() {
    let world = world().await;
    four_eyes(&world);
    connect(&world, ALICE).await;
    connect(&world, CAROL).await;

    // Rejected by a Maintainer.
    let (cmd, card) = card_with(&world, ALICE, "run release v1", REJECT_ACTION_ID).await;
    world
        .click(CAROL, &card, REJECT_ACTION_ID)
        .await
        .expect("click");
    until("the card says who rejected", || {
        let t = card_text(&world, &cmd);
        t.contains("*Rejected*") && t.contains("rejected by @U0CAROL")
    })
    .await;
    let rejected = button_value(&card, APPROVE_ACTION_ID);
    assert_eq!(
        run_status(&world, &rejected).await,
        Some(RunStatus::Refused)
    );
    // Approving it afterwards does nothing.
    let late = world
        .click(CAROL, &card, APPROVE_ACTION_ID)
        .await
        .expect("click");
    until("carol told", || {
        told(&world, &late).contains("already rejected")
    })
    .await;

    // Withdrawn: the person who asked presses Reject.
    let (cmd2, card2) = card_with(&world, ALICE, "run release v2", REJECT_ACTION_ID).await;
    world
        .click(ALICE, &card2, REJECT_ACTION_ID)
        .await
        .expect("click");
    until("the card says withdrawn", || {
        card_text(&world, &cmd2).contains("*Withdrawn*")
    })
    .await;

    // Expired: the sweep, an hour and a minute later, ends it and tells alice.
    let (cmd3, card3) = card_with(&world, ALICE, "run release v3", APPROVE_ACTION_ID).await;
    let expiring = button_value(&card3, APPROVE_ACTION_ID);
    let report = world
        .local
        .completion
        .sweep(world.local.clock.now() + 3_660)
        .await;
    assert!(report.expired >= 1, "{report:?}");
    assert_eq!(
        run_status(&world, &expiring).await,
        Some(RunStatus::Refused)
    );
    until("the card says expired", || {
        card_text(&world, &cmd3).contains("*Expired without approval*")
    })
    .await;
    until("alice told", || {
        ephemeral_text(&world).contains("Nobody approved your request to run `release`")
    })
    .await;
    // A click on the expired card: it moved on.
    let after = world
        .click(CAROL, &card3, APPROVE_ACTION_ID)
        .await
        .expect("click");
    until("carol told", || {
        told(&world, &after).contains("expired without an approval")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        pipelines_of(&world, "release").is_empty(),
        "no pipeline at all"
    );
    let _ = (cmd, cmd2);
}

/// Bot mode: the approver's role is their membership, read with the bot token; the pipeline
/// is the bot's, and `CHAT_APPROVED_BY` still names the approver's linked GitLab user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_in_bot_mode_checks_the_approvers_membership() {
    let world = DemoWorld::start(DemoBackends::Embedded, &demo_project_dir())
        .await
        .expect("bot world");
    four_eyes(&world);
    world
        .local
        .link(DEMO_TEAM, CAROL.slack_id, CAROL.name)
        .await
        .expect("link carol");
    let (_cmd, card) = card_with(&world, ALICE, "run release v7", APPROVE_ACTION_ID).await;
    // Bob is linked but a Reporter: refused before anything is decided.
    let low = world
        .click(BOB, &card, APPROVE_ACTION_ID)
        .await
        .expect("click");
    until("bob told", || {
        told(&world, &low).contains("You are not allowed to perform the given ChatOps command")
    })
    .await;
    assert!(pipelines_of(&world, "release").is_empty());
    let run = button_value(&card, APPROVE_ACTION_ID);
    assert_eq!(
        run_status(&world, &run).await,
        Some(RunStatus::AwaitingApproval)
    );
    world
        .click(CAROL, &card, APPROVE_ACTION_ID)
        .await
        .expect("click");
    until("the pipeline", || {
        pipelines_of(&world, "release").len() == 1
    })
    .await;
    let p = world.gitlab.state().pipelines()[0].clone();
    assert_eq!(p.variable("CHAT_APPROVED_BY"), Some("carol"));
    assert_eq!(p.variable("CHAT_USER_NAME"), Some("alice"));
}
