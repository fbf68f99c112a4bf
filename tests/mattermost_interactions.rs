//! Buttons on a Mattermost run's card, end to end: Mattermost slash commands (token-checked)
//! into local mode's HTTP front (the Lambdas' handlers), people connected through OAuth (the
//! GitLab stand-in's `/oauth/authorize`), SQS + DynamoDB + KMS over moto, the GitLab stand-in
//! running `tests/demo-project`'s jobs in bash, and the Mattermost stand-in (`chatops_sim::
//! mattermost`): the bot posts each run's card with buttons and patches it in place, and a
//! click is POSTed to our integration URL exactly as Mattermost sends it, with the `context`
//! taken from the card's props. Forged, altered and foreign clicks are refused at the edge.

mod support;

use chatops::demo::{demo_project_dir, DemoBackends, DemoUser, DemoWorld, ALICE, CAROL};
use chatops_core::gitlab::Status;
use chatops_sim::mattermost::{MattermostStandIn, MmPost, MmVia, BOT_USER_ID};
use serde_json::{json, Value};
use std::time::Duration;

const MM_TOKEN: &str = "mm-slash-command-token";
const MM_BOT_TOKEN: &str = "mm-bot-token";
/// The buttons' signing key: it must never be seen outside our functions.
const ACTIONS_SECRET: &str = "mm-actions-secret-4f1c9a7e2b";
const TEAM: &str = "mmteamacme0000000000000000";
const OTHER_TEAM: &str = "mmteamother000000000000000";
const CHANNEL: &str = "mmchannelops00000000000000";
const OTHER_CHANNEL: &str = "mmchannelother000000000000";

const CANCEL: &str = "chatopscancel";
const PLAY: &str = "chatopsplay";
const RETRY: &str = "chatopsretry";

/// A demo person's Mattermost user id (their GitLab account is the demo's).
fn mm_id(user: DemoUser) -> String {
    format!("mmuser{}", user.name)
}

struct MmWorld {
    world: DemoWorld,
    mm: MattermostStandIn,
    http: reqwest::Client,
    next: std::sync::atomic::AtomicU64,
}

/// A command as sent: its `response_url` and the ingress's answer.
struct Sent {
    status: u16,
    answer: Value,
    response_url: String,
}

async fn world(bot_token: bool) -> MmWorld {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let sdk = support::aws_config().await;
    let queue_url = support::new_queue(&sdk, "mm-clicks-q", 5).await;
    let table = support::new_runs_table(&sdk, "mm-clicks").await;
    let key = support::new_kms_key(&sdk).await;
    let mm = MattermostStandIn::start(MM_BOT_TOKEN)
        .await
        .expect("Mattermost stand-in");
    mm.add_team(TEAM, "acme");
    mm.add_channel(CHANNEL, TEAM, "ops");
    mm.add_channel(OTHER_CHANNEL, OTHER_TEAM, "elsewhere");
    let mut env = vec![
        ("TOKEN_KEY_ID", key.clone()),
        ("SWEEP_EVERY_SECS", "2".to_owned()),
        ("MATTERMOST_TOKEN", MM_TOKEN.to_owned()),
        ("MATTERMOST_URL", mm.base_url()),
        ("MATTERMOST_ACTIONS_SECRET", ACTIONS_SECRET.to_owned()),
    ];
    if bot_token {
        env.push(("MATTERMOST_BOT_TOKEN", MM_BOT_TOKEN.to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let world = DemoWorld::start_oauth(
        DemoBackends::Aws {
            sdk: Box::new(sdk),
            queue_url,
            table,
        },
        &demo_project_dir(),
        &env,
    )
    .await
    .expect("OAuth world");
    MmWorld {
        world,
        mm,
        http: reqwest::Client::new(),
        next: std::sync::atomic::AtomicU64::new(1),
    }
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

impl MmWorld {
    /// `/chatops <text>` from `user` in #ops, as Mattermost sends a slash command; its
    /// immediate answer shown as Mattermost shows it.
    async fn command(&self, user: DemoUser, text: &str) -> Sent {
        let response_url = self.mm.response_url(CHANNEL, &mm_id(user));
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let body = serde_urlencoded::to_string([
            ("channel_id", CHANNEL),
            ("channel_name", "ops"),
            ("command", "/chatops"),
            ("response_url", &response_url),
            ("team_domain", "acme"),
            ("team_id", TEAM),
            ("text", text),
            ("token", MM_TOKEN),
            ("trigger_id", &format!("mmtrigger{n}")),
            ("user_id", &mm_id(user)),
            ("user_name", user.name),
        ])
        .expect("form");
        let resp = self
            .http
            .post(format!(
                "{}{}",
                self.world.running.url(),
                chatops_core::ingress::MATTERMOST_PATH
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("command sent");
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 {
            self.mm.command_answered(&response_url, &answer);
        }
        Sent {
            status,
            answer,
            response_url,
        }
    }

    /// Connect `user` through `/chatops link` and their browser.
    async fn connect(&self, user: DemoUser) {
        let sent = self.command(user, "link").await;
        let text = sent.answer["text"].as_str().unwrap_or_default().to_owned();
        let authorize = format!("{}/oauth/authorize?", self.world.gitlab.url());
        let start = text.find(&authorize).expect("a connect link");
        let rest = &text[start..];
        let link = &rest[..rest.find([')', ' ', '>']).unwrap_or(rest.len())];
        let visit = self
            .world
            .open_in_browser(user, link)
            .await
            .expect("browser");
        assert!(
            visit.page.contains(&format!("Connected as @{}", user.name)),
            "{}",
            visit.page
        );
    }

    /// The bot's card for the run of `job` (the latest), once it offers `action`.
    async fn card_with(&self, job: &str, action: &str) -> MmPost {
        let mut card = None;
        until(&format!("a card of {job} with {action}"), || {
            card = self
                .card(job)
                .filter(|p| p.action_ids().iter().any(|a| a == action));
            card.is_some()
        })
        .await;
        card.expect("card")
    }

    /// The bot's card for the latest run of `job`, as the channel shows it now.
    fn card(&self, job: &str) -> Option<MmPost> {
        self.mm
            .posts()
            .into_iter()
            .rev()
            .find(|p| p.user_id == BOT_USER_ID && p.via == MmVia::Api && p.message.contains(job))
    }

    /// What `user` alone was shown (ephemeral posts and click answers).
    fn told(&self, user: DemoUser) -> String {
        self.mm
            .ephemerals()
            .into_iter()
            .filter(|e| e.user_id == mm_id(user))
            .map(|e| e.message + "\n")
            .collect()
    }

    /// Posts through the command's `response_url` (the job's reply: its output is in an
    /// attachment).
    fn replies(&self, sent: &Sent) -> String {
        self.mm
            .posts()
            .into_iter()
            .filter(|p| {
                p.via == MmVia::ResponseUrl
                    && p.response_url.as_deref() == Some(sent.response_url.as_str())
            })
            .map(|p| format!("{}\n{}\n", p.message, p.props))
            .collect()
    }

    fn pipelines_of(&self, job: &str) -> Vec<u64> {
        self.world
            .gitlab
            .state()
            .pipelines()
            .iter()
            .filter(|p| p.variable("CHATOPS_JOB") == Some(job))
            .map(|p| p.id)
            .collect()
    }

    fn pipeline_status(&self, id: u64) -> Option<Status> {
        self.world
            .gitlab
            .state()
            .pipelines()
            .into_iter()
            .find(|p| p.id == id)
            .map(|p| p.status)
    }

    /// Cancel and play calls GitLab received, with who made them.
    fn gitlab_actions(&self, suffix: &str) -> Vec<(u16, Option<String>)> {
        self.world
            .gitlab
            .state()
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(suffix))
            .map(|r| (r.status, r.user))
            .collect()
    }

    /// `user` clicks `action` on `card` as it is now.
    async fn click(&self, card: &MmPost, action: &str, user: DemoUser) -> u16 {
        let click = self
            .mm
            .click(&card.id, action, (&mm_id(user), user.name))
            .await
            .expect("the card has the button");
        click.status
    }

    /// The body Mattermost would send for `user` clicking `action` on `card`.
    fn click_body(&self, card: &MmPost, action: &str, user: DemoUser) -> (String, Value) {
        self.mm
            .click_request(&card.id, None, action, (&mm_id(user), user.name))
            .expect("the card has the button")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_running_job_from_a_mattermost_card() {
    // The one test of this binary that captures logs (one capture per process).
    let logs = support::capture_logs();
    let w = world(true).await;
    w.connect(ALICE).await;
    w.connect(CAROL).await;
    let sent = w.command(ALICE, "run slow-task").await;
    assert_eq!(sent.status, 200);
    let card = w.card_with("slow-task", CANCEL).await;
    let p = w.pipelines_of("slow-task")[0];
    assert!(!w.pipeline_status(p).is_some_and(|s| s.is_final()));
    // The button: a signed context, our integration URL, Mattermost's button shape.
    let action = &card.props["attachments"][0]["actions"][0];
    assert_eq!(action["type"], "button");
    assert_eq!(action["name"], "Cancel");
    assert_eq!(
        action["integration"]["url"],
        format!("{}/mattermost/interactions", w.world.running.url())
    );
    assert_eq!(
        action["integration"]["context"]["sig"]
            .as_str()
            .map(str::len),
        Some(64)
    );

    let click =
        w.mm.click(&card.id, CANCEL, (&mm_id(CAROL), CAROL.name))
            .await
            .expect("click");
    assert_eq!(click.status, 200, "answered at once");
    let said = click.answer["ephemeral_text"].as_str().unwrap_or_default();
    assert!(said.contains("Working on it"), "{said}");
    assert!(click.answer.get("update").is_none());
    until("the pipeline cancelled", || {
        w.pipeline_status(p) == Some(Status::Canceled)
    })
    .await;
    assert_eq!(
        w.world.gitlab.state().pipeline_canceller(p).as_deref(),
        Some("carol"),
        "cancelled with carol's own token"
    );
    assert_eq!(
        w.gitlab_actions("/cancel"),
        vec![(200, Some("carol".to_owned()))]
    );
    // The same post, patched in place: who cancelled, and Retry instead of Cancel.
    until("the card says who cancelled", || {
        w.mm.post(&card.id).is_some_and(|c| {
            c.message.contains("**Cancelled**") && c.message.contains("cancelled by @carol")
        })
    })
    .await;
    until("the reply", || w.replies(&sent).contains("was cancelled")).await;
    let now = w.mm.post(&card.id).expect("card");
    assert!(now.edits > 0);
    assert_eq!(now.action_ids(), vec![RETRY]);
    assert!(
        w.mm.requests()
            .iter()
            .filter(|r| r.path.starts_with("/api/v4/"))
            .all(|r| r.status < 400),
        "{:?}",
        w.mm.requests()
    );

    // The signing key is in no card, no request Mattermost received, no answer, no log line.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let everything = format!(
        "{:?}{:?}{:?}{}",
        w.mm.posts(),
        w.mm.requests(),
        w.mm.ephemerals(),
        click.answer
    );
    assert!(!everything.contains(ACTIONS_SECRET));
    let logged = logs.text();
    assert!(logged.contains("click queued"), "the capture works");
    assert!(!logged.contains(ACTIONS_SECRET), "the key was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_a_manual_job_as_the_clicker() {
    let w = world(true).await;
    w.connect(ALICE).await;
    w.connect(CAROL).await;
    let sent = w.command(ALICE, "run restart").await;
    let card = w.card_with("restart", PLAY).await;
    assert!(card.message.contains("manual job"), "{}", card.message);
    let p = w.pipelines_of("restart")[0];
    let job = w.world.gitlab.state().jobs_of(p)[0].id;
    assert_eq!(w.click(&card, PLAY, CAROL).await, 200);
    until("the job played", || {
        w.world.gitlab.state().job_player(job).is_some()
    })
    .await;
    assert_eq!(
        w.world.gitlab.state().job_player(job).as_deref(),
        Some("carol"),
        "played with carol's own token"
    );
    until("the reply", || {
        w.replies(&sent).contains("Restarting the web service")
    })
    .await;
    until("the card's last state", || {
        w.mm.post(&card.id).is_some_and(|c| {
            c.message.contains("**Succeeded**") && c.message.contains("run by @carol")
        })
    })
    .await;
    assert_eq!(
        w.gitlab_actions("/play"),
        vec![(200, Some("carol".to_owned()))]
    );
    assert!(w.mm.post(&card.id).expect("card").action_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_altered_and_foreign_clicks_are_refused_and_nothing_happens() {
    let w = world(true).await;
    w.connect(ALICE).await;
    w.connect(CAROL).await;
    w.command(ALICE, "run slow-task").await;
    let card = w.card_with("slow-task", CANCEL).await;
    let p = w.pipelines_of("slow-task")[0];
    let (url, good) = w.click_body(&card, CANCEL, CAROL);
    let told_before = w.told(CAROL);
    let send = |body: Value| {
        let http = w.http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("sent");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, u16)] = &[
        (
            "forged signature",
            |v| v["context"]["sig"] = json!("0".repeat(64)),
            401,
        ),
        (
            "no signature",
            |v| {
                v["context"].as_object_mut().map(|c| c.remove("sig"));
            },
            401,
        ),
        (
            "no context",
            |v| {
                v.as_object_mut().map(|c| c.remove("context"));
            },
            401,
        ),
        (
            "action altered",
            |v| v["context"]["action"] = json!("retry"),
            401,
        ),
        (
            "run altered",
            |v| v["context"]["run"] = json!("0000feed0000feed0000feed0000feed"),
            401,
        ),
        (
            "team in the context altered",
            |v| v["context"]["team"] = json!(OTHER_TEAM),
            401,
        ),
        (
            "moved to another channel",
            |v| v["channel_id"] = json!(OTHER_CHANNEL),
            401,
        ),
        (
            "clicked from another team",
            |v| v["team_id"] = json!(OTHER_TEAM),
            403,
        ),
        ("not JSON", |v| *v = json!("payload=x"), 401),
    ];
    for (name, edit, want) in cases {
        let mut body = good.clone();
        edit(&mut body);
        let (status, text) = send(body).await;
        assert_eq!(status, *want, "{name}");
        assert_eq!(text, "", "{name}: no detail");
    }
    // Not even a click: a GET.
    let r = w.http.get(&url).send().await.expect("sent");
    assert_eq!(r.status().as_u16(), 405);

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        w.gitlab_actions("/cancel").is_empty(),
        "nothing was cancelled"
    );
    assert!(!w.pipeline_status(p).is_some_and(|s| s.is_final()));
    assert_eq!(
        w.told(CAROL),
        told_before,
        "nothing queued: nobody answered carol"
    );
    let now = w.mm.post(&card.id).expect("card");
    assert_eq!(now.action_ids(), vec![CANCEL], "the card did not change");

    // The untouched body still works.
    let (status, _) = send(good).await;
    assert_eq!(status, 200);
    until("the pipeline cancelled", || {
        w.pipeline_status(p) == Some(Status::Canceled)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_click_does_one_thing() {
    let w = world(true).await;
    w.connect(ALICE).await;
    w.connect(CAROL).await;
    let sent = w.command(ALICE, "run slow-task").await;
    let card = w.card_with("slow-task", CANCEL).await;
    let p = w.pipelines_of("slow-task")[0];
    // Two clicks (two trigger ids) at once, and the first request sent again.
    let (url, first) = w.click_body(&card, CANCEL, CAROL);
    let (_, second) = w.click_body(&card, CANCEL, CAROL);
    assert_ne!(first["trigger_id"], second["trigger_id"]);
    let (a, b) = tokio::join!(
        w.mm.send_click(&url, first.clone()),
        w.mm.send_click(&url, second)
    );
    assert_eq!((a.status, b.status), (200, 200));
    until("the pipeline cancelled", || {
        w.pipeline_status(p) == Some(Status::Canceled)
    })
    .await;
    assert_eq!(w.mm.send_click(&url, first).await.status, 200);
    until("the reply", || w.replies(&sent).contains("was cancelled")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.gitlab_actions("/cancel"),
        vec![(200, Some("carol".to_owned()))],
        "one cancel in GitLab"
    );
    let told = w.told(CAROL);
    assert!(
        told.contains("already cancelled") || told.contains("was cancelled, so there is nothing"),
        "{told}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_a_finished_run_answers_the_current_state() {
    let w = world(true).await;
    w.connect(ALICE).await;
    // A manual job: its card surely offers Cancel (and Run) while it waits, however fast
    // the job runs once played.
    let sent = w.command(ALICE, "run restart").await;
    let waiting = w.card_with("restart", PLAY).await;
    assert_eq!(w.click(&waiting, PLAY, ALICE).await, 200);
    until("the reply", || {
        w.replies(&sent).contains("Restarting the web service")
    })
    .await;
    let mut card = None;
    until("the card's last state", || {
        card = w
            .card("restart")
            .filter(|c| c.message.contains("**Succeeded**"));
        card.is_some()
    })
    .await;
    let card = card.expect("card");
    assert!(card.action_ids().is_empty());
    // A stale copy of the card: the version that still offered Cancel.
    let stale = card
        .versions
        .iter()
        .position(|(_, props)| props.to_string().contains(CANCEL))
        .expect("the card offered Cancel while the job waited");
    let (url, body) =
        w.mm.click_request(&card.id, Some(stale), CANCEL, (&mm_id(ALICE), ALICE.name))
            .expect("stale button");
    assert_eq!(w.mm.send_click(&url, body).await.status, 200);
    until("the clicker told", || {
        w.told(ALICE)
            .contains("has succeeded, so there is nothing to cancel")
    })
    .await;
    let now = w.mm.post(&card.id).expect("card");
    assert!(now.edits > card.edits, "the card was redrawn as it stands");
    assert!(now.message.contains("**Succeeded**"));
    assert!(w.gitlab_actions("/cancel").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bot_token_the_answer_says_the_card_will_not_change() {
    let w = world(false).await;
    w.connect(ALICE).await;
    w.connect(CAROL).await;
    w.command(ALICE, "run slow-task").await;
    // No bot: the card comes through the command's response_url (alice's post), with buttons.
    let mut card = None;
    until("a card with Cancel", || {
        card =
            w.mm.posts().into_iter().rev().find(|p| {
                p.via == MmVia::ResponseUrl && p.action_ids().iter().any(|a| a == CANCEL)
            });
        card.is_some()
    })
    .await;
    let card = card.expect("card");
    let p = w.pipelines_of("slow-task")[0];
    let click =
        w.mm.click(&card.id, CANCEL, (&mm_id(CAROL), CAROL.name))
            .await
            .expect("click");
    assert_eq!(click.status, 200);
    let said = click.answer["ephemeral_text"].as_str().unwrap_or_default();
    assert!(
        said.contains("was queued") && said.contains("will not change"),
        "{said}"
    );
    until("the pipeline cancelled", || {
        w.pipeline_status(p) == Some(Status::Canceled)
    })
    .await;
    assert_eq!(
        w.world.gitlab.state().pipeline_canceller(p).as_deref(),
        Some("carol")
    );
    assert!(
        w.mm.requests()
            .iter()
            .all(|r| !r.path.starts_with("/api/v4/")),
        "no REST call without a bot token"
    );
}

/// A bot without the system admin role: Mattermost refuses its ephemeral posts, so the
/// clicker hears nothing beyond the click's own answer, but the click acts and the bot's own
/// card is still changed in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_may_not_post_ephemeral_messages_still_acts_and_redraws() {
    let w = world(true).await;
    w.mm.set_system_admin(false);
    w.connect(ALICE).await;
    w.connect(CAROL).await;
    w.command(ALICE, "run slow-task").await;
    let card = w.card_with("slow-task", CANCEL).await;
    let p = w.pipelines_of("slow-task")[0];
    assert_eq!(w.click(&card, CANCEL, CAROL).await, 200);
    until("the pipeline cancelled", || {
        w.pipeline_status(p) == Some(Status::Canceled)
    })
    .await;
    until("the card says who cancelled", || {
        w.mm.post(&card.id)
            .is_some_and(|c| c.message.contains("cancelled by @carol"))
    })
    .await;
    // A click on the stale Cancel: GitLab is not called again; the answer to carol ("was
    // cancelled, so there is nothing to cancel") is refused by Mattermost (403) and logged.
    let (url, body) =
        w.mm.click_request(&card.id, Some(0), CANCEL, (&mm_id(CAROL), CAROL.name))
            .expect("the first version offered Cancel");
    assert_eq!(w.mm.send_click(&url, body).await.status, 200);
    until("an ephemeral post refused", || {
        w.mm.requests()
            .iter()
            .any(|r| r.path == "/api/v4/posts/ephemeral" && r.status == 403)
    })
    .await;
    assert_eq!(w.gitlab_actions("/cancel").len(), 1);
}

/// Four-eyes on Mattermost: the card asks for an approval with Approve / Reject buttons; the
/// person who asked cannot approve; someone else (a Maintainer) does, and the run goes ahead
/// as the person who asked, the same post patched through to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_eyes_run_is_approved_from_the_mattermost_card() {
    let w = world(true).await;
    w.world.gitlab.state().set_file(
        chatops::demo::DEMO_PROJECT_ID,
        chatops_core::policy::POLICY_PATH,
        Some(chatops::demo::DEMO_POLICY),
    );
    w.connect(ALICE).await;
    w.connect(CAROL).await;
    let sent = w.command(ALICE, "run release v3").await;
    assert_eq!(sent.status, 200);
    let card = w.card_with("release", "chatopsapprove").await;
    assert!(
        card.message.contains("**Waiting for approval**"),
        "{}",
        card.message
    );
    assert_eq!(card.action_ids(), vec!["chatopsapprove", "chatopsreject"]);
    assert!(w.pipelines_of("release").is_empty());

    assert_eq!(w.click(&card, "chatopsapprove", ALICE).await, 200);
    until("alice told", || {
        w.told(ALICE).contains("someone else must approve")
    })
    .await;
    assert!(w.pipelines_of("release").is_empty());

    assert_eq!(w.click(&card, "chatopsapprove", CAROL).await, 200);
    until("the pipeline", || w.pipelines_of("release").len() == 1).await;
    let p = w.pipelines_of("release")[0];
    assert_eq!(
        w.world.gitlab.state().pipeline_creator(p).as_deref(),
        Some("alice")
    );
    until("the card's last state", || {
        w.mm.post(&card.id).is_some_and(|c| {
            c.message.contains("**Succeeded**") && c.message.contains("approved by @carol")
        })
    })
    .await;
    until("the reply", || {
        w.replies(&sent).contains("approved by carol")
    })
    .await;
}
