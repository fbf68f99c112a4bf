//! Identity end to end: people connect their own GitLab accounts (OAuth with PKCE) and every
//! GitLab action of their commands is taken with their own token. Through the real
//! interfaces: signed slash commands into local mode's HTTP front (the Lambdas' handlers), the
//! browser following the connect link to the GitLab stand-in's `/oauth/authorize` and back to
//! our callback, SQS + DynamoDB + KMS over moto, the GitLab stand-in (OAuth, per-user
//! permissions, protected branches) and the Slack stand-in over HTTP.

mod support;

use chatops::demo::{
    demo_project_dir, DemoBackends, DemoUser, DemoWorld, SentCommand, ALICE, BOB, CAROL, DEMO_TEAM,
};
use chatops_adapters::dynamo::DynamoStore;
use chatops_core::run::RunStatus;
use chatops_core::store::RunStore;
use std::time::Duration;

const PROJECT: u64 = 1;

struct Aws {
    sdk: aws_config::SdkConfig,
    table: String,
    key: String,
}

impl Aws {
    fn store(&self) -> DynamoStore {
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&self.sdk), self.table.clone())
    }
}

/// SQS, DynamoDB and a KMS key in moto, and an OAuth world over them.
async fn world() -> (DemoWorld, Aws) {
    world_with(&[]).await
}

async fn world_with(extra: &[(&str, &str)]) -> (DemoWorld, Aws) {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let sdk = support::aws_config().await;
    let queue_url = support::new_queue(&sdk, "identity-q", 5).await;
    let table = support::new_runs_table(&sdk, "identity").await;
    let key = support::new_kms_key(&sdk).await;
    let mut env: Vec<(&str, &str)> = vec![("TOKEN_KEY_ID", key.as_str())];
    env.extend_from_slice(extra);
    let world = DemoWorld::start_oauth(
        DemoBackends::Aws {
            sdk: Box::new(sdk.clone()),
            queue_url,
            table: table.clone(),
        },
        &demo_project_dir(),
        &env,
    )
    .await
    .expect("OAuth world");
    (world, Aws { sdk, table, key })
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

/// Everything the person saw for `c`: the immediate answer, then every message that came
/// through its `response_url` as Slack shows it (blocks included).
fn texts(world: &DemoWorld, c: &SentCommand) -> String {
    let mut out = c.answer["text"].as_str().unwrap_or("").to_owned();
    out.push('\n');
    out.push_str(&chatops_sim::slack::render_posts(&world.posts_for(c)));
    out
}

/// `user` types `text`; waits for ChatOps' connect link and returns it.
async fn connect_link_for(world: &DemoWorld, user: DemoUser, text: &str) -> (SentCommand, String) {
    let c = world.command(user, text).await.expect("command");
    assert_eq!(c.status, 200);
    let mut link = None;
    until("a connect link", || {
        link = world.connect_link(&c);
        link.is_some()
    })
    .await;
    (c, link.unwrap_or_default())
}

fn state_of(link: &str) -> String {
    let q = link.split_once('?').map(|(_, q)| q).unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).expect("query");
    pairs
        .into_iter()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v)
        .expect("a state")
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

async fn links(aws: &Aws) -> Vec<chatops_core::run::UserLink> {
    aws.store().list_users().await.expect("links")
}

/// Connect `user` through `/chatops link` and their browser.
async fn connect(world: &DemoWorld, user: DemoUser) {
    let (_, link) = connect_link_for(world, user, "link").await;
    let visit = world.open_in_browser(user, &link).await.expect("browser");
    assert_eq!(visit.status, 200, "{}", visit.page);
    assert!(
        visit.page.contains(&format!("Connected as @{}", user.name)),
        "{}",
        visit.page
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_person_connects_and_their_command_runs_as_them() {
    let (world, aws) = world().await;
    let (cmd, link) = connect_link_for(&world, ALICE, "run hello-world").await;
    assert!(pipelines_of(&world, "hello-world").is_empty());
    let shown = texts(&world, &cmd);
    assert!(shown.contains("Connect your GitLab account"), "{shown}");
    assert!(shown.contains("starts by itself"), "{shown}");
    // The link goes to GitLab's authorize endpoint with PKCE S256 and only the api scope.
    assert!(link.contains("code_challenge_method=S256"), "{link}");
    assert!(link.contains("scope=api&"), "{link}");
    assert!(link.contains("response_type=code"), "{link}");

    let visit = world.open_in_browser(ALICE, &link).await.expect("browser");
    assert_eq!(visit.status, 200, "{}", visit.page);
    assert!(
        visit
            .page
            .contains("Connected as @alice. You can close this tab."),
        "{}",
        visit.page
    );
    assert!(visit.page.contains("hello-world"), "{}", visit.page);

    // The command runs by itself, created with alice's own token, and its output comes back.
    until("the pipeline", || {
        !pipelines_of(&world, "hello-world").is_empty()
    })
    .await;
    let p = pipelines_of(&world, "hello-world")[0];
    assert_eq!(
        world.gitlab.state().pipeline_creator(p).as_deref(),
        Some("alice")
    );
    until("the reply", || texts(&world, &cmd).contains("Hello World")).await;

    // Every GitLab call the dispatcher made for it authenticated as alice, none as the bot.
    let as_bot: Vec<_> = world
        .gitlab
        .state()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/pipeline"))
        .filter(|r| r.user.as_deref() != Some("alice"))
        .collect();
    assert!(as_bot.is_empty(), "{as_bot:?}");

    // The link is stored with the GitLab id and sealed tokens.
    let stored = links(&aws).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].gitlab_username, "alice");
    assert_eq!(stored[0].gitlab_user_id.map(|i| i.0), Some(ALICE.gitlab_id));
    assert!(stored[0].grant.is_some());

    // whoami says so.
    let who = world.command(ALICE, "whoami").await.expect("whoami");
    let said = who.answer["text"].as_str().unwrap_or("");
    assert!(
        said.contains("`@alice`") && said.contains("as you"),
        "{said}"
    );
    let _ = aws.key;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_never_stored_or_shown_in_plaintext() {
    let (world, aws) = world().await;
    let (cmd, link) = connect_link_for(&world, ALICE, "run hello-world").await;
    world.open_in_browser(ALICE, &link).await.expect("browser");
    until("the reply", || texts(&world, &cmd).contains("Hello World")).await;
    let secrets = world.gitlab.state().oauth_issued_secrets();
    assert_eq!(secrets.len(), 2, "one access and one refresh token");

    // The raw items of the table: no token, in any attribute.
    let scan = aws_sdk_dynamodb::Client::new(&aws.sdk)
        .scan()
        .table_name(&aws.table)
        .send()
        .await
        .expect("scan");
    let raw = format!("{:?}", scan.items());
    assert!(raw.contains("grant_sealed"), "the link is there");
    for s in &secrets {
        assert!(!raw.contains(s.as_str()), "a token is in the table");
    }
    // Nor in anything Slack received.
    let posted = format!("{:?}", world.slack.transcript());
    for s in &secrets {
        assert!(!posted.contains(s.as_str()), "a token reached Slack");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_expired_or_unknown_state_links_nothing() {
    let (world, aws) = world().await;

    // Replayed: the callback URL a browser already used.
    let (_, link) = connect_link_for(&world, ALICE, "run hello-world").await;
    let first = world.open_in_browser(ALICE, &link).await.expect("browser");
    let callback = first.callback_url.clone().expect("GitLab redirected to us");
    until("the pipeline", || {
        !pipelines_of(&world, "hello-world").is_empty()
    })
    .await;
    let again = world.visit(&callback).await.expect("replay");
    assert_eq!(again.status, 400);
    assert!(again.page.contains("already used"), "{}", again.page);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pipelines_of(&world, "hello-world").len(),
        1,
        "not run twice"
    );

    // Unknown: a state we never issued.
    let forged = format!(
        "{}/oauth/gitlab/callback?code=abc&state=forged",
        world.running.url()
    );
    let page = world.visit(&forged).await.expect("forged");
    assert_eq!(page.status, 400);
    assert!(page.page.contains("Nothing was linked"), "{}", page.page);

    // Expired: bob's link, aged past its 10 minutes in the store.
    let (_, link) = connect_link_for(&world, BOB, "link").await;
    let store = aws.store();
    let mut pending = store
        .take_pending_link(&state_of(&link))
        .await
        .expect("store")
        .expect("bob's connect link is stored");
    pending.expires_at = 1;
    store.put_pending_link(&pending).await.expect("store");
    let expired = world.open_in_browser(BOB, &link).await.expect("browser");
    assert_eq!(expired.status, 400);
    assert!(expired.page.contains("expired"), "{}", expired.page);

    // Malformed, and a person who denies access in GitLab.
    let page = world
        .visit(&format!("{}/oauth/gitlab/callback", world.running.url()))
        .await
        .expect("bare");
    assert_eq!(page.status, 400);
    let (_, link) = connect_link_for(&world, BOB, "link").await;
    world.gitlab.state().deny_next_authorization();
    let denied = world.open_in_browser(BOB, &link).await.expect("browser");
    assert_eq!(denied.status, 400);
    assert!(denied.page.contains("did not authorize"), "{}", denied.page);

    let linked: Vec<_> = links(&aws)
        .await
        .into_iter()
        .map(|l| l.gitlab_username)
        .collect();
    assert_eq!(
        linked,
        vec!["alice".to_owned()],
        "only the first, valid callback linked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_decides_who_is_linked_and_a_wrong_verifier_links_nothing() {
    let (world, aws) = world().await;
    // Query parameters naming someone else change nothing: the state is bound server-side
    // to the chat user who asked.
    let (_, link) = connect_link_for(&world, BOB, "link").await;
    world.gitlab.state().sign_in_browser_as("bob");
    let visit = world
        .open_in_browser(BOB, &format!("{link}&user_id={}", ALICE.slack_id))
        .await
        .expect("browser");
    assert_eq!(visit.status, 200, "{}", visit.page);
    let stored = links(&aws).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].chat_user_id.as_str(), BOB.slack_id);
    assert_eq!(stored[0].team_id.as_str(), DEMO_TEAM);

    // A verifier that does not match the challenge GitLab saw: GitLab refuses the code.
    let (_, link) = connect_link_for(&world, CAROL, "link").await;
    let store = aws.store();
    let mut pending = store
        .take_pending_link(&state_of(&link))
        .await
        .expect("store")
        .expect("carol's connect link");
    pending.verifier = "not-the-verifier-whose-challenge-gitlab-saw".into();
    store.put_pending_link(&pending).await.expect("store");
    let refused = world.open_in_browser(CAROL, &link).await.expect("browser");
    assert_eq!(refused.status, 400);
    assert!(refused.page.contains("GitLab refused"), "{}", refused.page);
    assert_eq!(links(&aws).await.len(), 1, "carol is not linked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_branch_refuses_a_developer_that_the_bot_could_have_used() {
    let (world, _aws) = world().await;
    connect(&world, ALICE).await;
    connect(&world, CAROL).await;
    // Maintainers only on main; the deployment's own token is a Maintainer.
    world.gitlab.state().protect_branch(PROJECT, "main", 40);

    let c = world.command(ALICE, "run hello-world").await.expect("cmd");
    until("the refusal", || texts(&world, &c).contains("protected")).await;
    let shown = texts(&world, &c);
    assert!(
        shown.contains("You do not have sufficient permission to run a pipeline on 'main'"),
        "GitLab's own sentence: {shown}"
    );
    assert!(pipelines_of(&world, "hello-world").is_empty());

    // Carol, a Maintainer, may.
    let c = world.command(CAROL, "run hello-world").await.expect("cmd");
    until("carol's reply", || {
        texts(&world, &c).contains("Hello World")
    })
    .await;
    let p = pipelines_of(&world, "hello-world");
    assert_eq!(p.len(), 1);
    assert_eq!(
        world.gitlab.state().pipeline_creator(p[0]).as_deref(),
        Some("carol")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporter_gets_gitlabs_refusal() {
    let (world, _aws) = world().await;
    connect(&world, BOB).await;
    let c = world.command(BOB, "run hello-world").await.expect("cmd");
    until("the refusal", || {
        texts(&world, &c).contains("You are not allowed")
    })
    .await;
    assert!(pipelines_of(&world, "hello-world").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_refreshed_once_under_ten_concurrent_dispatches() {
    let (world, aws) = world().await;
    // The first pair lives 60 s, inside the 5-minute early-refresh window; refreshed pairs
    // live GitLab's 2 hours.
    world.gitlab.state().set_access_token_lifetime_secs(60);
    connect(&world, ALICE).await;
    world.gitlab.state().set_access_token_lifetime_secs(7200);
    let old = world.gitlab.state().oauth_issued_secrets();

    let now = chatops_core::clock::Clock::now(&chatops_core::clock::SystemClock);
    let requests: Vec<String> = (0..10)
        .map(|i| {
            let mut r = support::run_request(
                &format!("refresh-{i}"),
                "hello-world",
                "",
                &world.slack.response_url(DEMO_TEAM),
                now,
            );
            r.team_id = chatops_core::ids::TeamId::new(DEMO_TEAM);
            r.user_id = chatops_core::ids::ChatUserId::new(ALICE.slack_id);
            r.channel_id = chatops_core::ids::ChannelId::new(chatops::demo::DEMO_CHANNEL);
            serde_json::to_string(&r).expect("json")
        })
        .collect();
    let dispatcher = world.local.dispatcher.clone();
    let handles: Vec<_> = requests
        .into_iter()
        .map(|body| {
            let d = dispatcher.clone();
            tokio::spawn(async move { d.handle_delivery("concurrent", &body, 1, None).await })
        })
        .collect();
    for h in handles {
        assert_eq!(
            h.await.expect("task"),
            chatops_core::dispatcher::Delivery::Done
        );
    }
    assert_eq!(
        world.gitlab.state().oauth_refresh_count(),
        1,
        "exactly one refresh"
    );
    let created = pipelines_of(&world, "hello-world");
    assert_eq!(created.len(), 10, "all ten succeed");
    for p in created {
        assert_eq!(
            world.gitlab.state().pipeline_creator(p).as_deref(),
            Some("alice")
        );
    }
    // The old pair is dead (GitLab rotated it), the stored one is the new one.
    assert!(!world.gitlab.state().oauth_access_token_valid(&old[0]));
    let link = aws
        .store()
        .get_user(DEMO_TEAM, ALICE.slack_id)
        .await
        .expect("store")
        .expect("link");
    let grant = link.grant.expect("grant");
    assert!(grant.expires_at > now + 3600);
    assert_eq!(grant.refresh_lock_until, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_connection_asks_the_person_to_reconnect() {
    let (world, aws) = world().await;
    world.gitlab.state().set_access_token_lifetime_secs(60);
    connect(&world, ALICE).await;
    // Alice revokes ChatOps in her GitLab profile: the refresh token is refused.
    assert_eq!(world.gitlab.state().revoke_all_tokens_of("alice"), 1);

    let c = world.command(ALICE, "run hello-world").await.expect("cmd");
    until("the reconnect link", || world.connect_link(&c).is_some()).await;
    let shown = texts(&world, &c);
    assert!(
        shown.contains("no longer accepts your connection"),
        "{shown}"
    );
    assert!(pipelines_of(&world, "hello-world").is_empty());
    let link = aws
        .store()
        .get_user(DEMO_TEAM, ALICE.slack_id)
        .await
        .expect("store")
        .expect("link");
    assert!(link.grant.expect("grant").broken, "marked broken");

    // Reconnecting runs the command after all.
    world.gitlab.state().set_access_token_lifetime_secs(7200);
    let link = world.connect_link(&c).expect("link");
    let visit = world.open_in_browser(ALICE, &link).await.expect("browser");
    assert_eq!(visit.status, 200, "{}", visit.page);
    until("the reply", || texts(&world, &c).contains("Hello World")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_revokes_the_tokens_at_gitlab() {
    let (world, aws) = world().await;
    connect(&world, ALICE).await;
    let issued = world.gitlab.state().oauth_issued_secrets();
    assert!(world.gitlab.state().oauth_access_token_valid(&issued[0]));

    let c = world.command(ALICE, "unlink").await.expect("unlink");
    let said = c.answer["text"].as_str().unwrap_or("");
    assert!(said.contains("GitLab revoked the tokens"), "{said}");
    assert_eq!(world.gitlab.state().oauth_revocations(), 1);
    assert!(!world.gitlab.state().oauth_access_token_valid(&issued[0]));
    assert!(links(&aws).await.is_empty());

    let c = world.command(ALICE, "whoami").await.expect("whoami");
    assert!(
        c.answer["text"]
            .as_str()
            .unwrap_or("")
            .contains("not connected"),
        "{}",
        c.answer
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_of_a_full_run_hold_no_token() {
    let logs = support::capture_logs();
    let (world, aws) = world().await;
    let (cmd, link) = connect_link_for(&world, ALICE, "run hello-world").await;
    world.open_in_browser(ALICE, &link).await.expect("browser");
    until("the reply", || texts(&world, &cmd).contains("Hello World")).await;
    world.command(ALICE, "unlink").await.expect("unlink");
    let captured = logs.text();
    assert!(
        captured.contains("GitLab account connected"),
        "the capture works: {captured}"
    );
    for s in world.gitlab.state().oauth_issued_secrets() {
        assert!(!captured.contains(&s), "a token is in the logs");
    }
    // Nor the connect link's state, which would let someone else finish the link.
    assert!(
        !captured.contains(&state_of(&link)),
        "the state is in the logs"
    );
    // Connecting and unlinking are audited (the audit's JSON log line; no table here).
    assert!(captured.contains(r#"event="linked""#), "{captured}");
    assert!(captured.contains(r#"event="unlinked""#), "{captured}");
    let _ = aws;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_mode_still_links_by_administrator() {
    let world = DemoWorld::start(DemoBackends::Embedded, &demo_project_dir())
        .await
        .expect("bot world");
    let c = world.command(ALICE, "link").await.expect("link");
    let said = c.answer["text"].as_str().unwrap_or("");
    assert!(said.contains("chatops users link"), "{said}");
    let c = world.command(ALICE, "whoami").await.expect("whoami");
    let said = c.answer["text"].as_str().unwrap_or("");
    assert!(said.contains("administrator made this link"), "{said}");
    let done = world
        .local
        .store
        .due_runs(u64::MAX, 10)
        .await
        .expect("store")
        .iter()
        .all(|r| r.status != RunStatus::Dispatching);
    assert!(done);
}

/// Mattermost: the same flow, the person named by its payload's team and user ids, the
/// ingress wired as its Lambda main wires it (`aws_ingress`), its link sealed with KMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mattermost_user_connects_the_same_way() {
    use chatops_core::config::{Env, NoSecrets};
    use chatops_core::ingress::IngressConfig;
    const MM_TOKEN: &str = "mm-slash-token";
    const TEAM: &str = "tc3kpbe4m7gm3pc8ih4ge7rkpe";
    const USER: &str = "ukzbfd5tqjr5jjkn8ffzoid6ma";

    let (world, aws) = world().await;
    let gitlab = &world.gitlab;
    let env = Env::from_pairs([
        ("MATTERMOST_TOKEN", MM_TOKEN.to_owned()),
        (
            "MATTERMOST_URL",
            "https://mattermost.example.com".to_owned(),
        ),
        ("RUN_QUEUE_URL", "https://sqs.invalid/unused".to_owned()),
        ("RUNS_TABLE", aws.table.clone()),
        ("GITLAB_URL", gitlab.url()),
        (
            "GITLAB_OAUTH_CLIENT_ID",
            chatops::demo::DEMO_OAUTH_CLIENT_ID.to_owned(),
        ),
        (
            "GITLAB_OAUTH_CLIENT_SECRET",
            "gloas-demo-secret-not-a-real-one".to_owned(),
        ),
        ("TOKEN_KEY_ID", aws.key.clone()),
    ]);
    let ingress = chatops_adapters::services::aws_ingress(
        IngressConfig::from_env(&env, &NoSecrets)
            .await
            .expect("config"),
        &aws.sdk,
    )
    .expect("ingress");
    // The Function URL's host is where the callback goes (no PUBLIC_BASE_URL here): the
    // demo world registered its own address, so use it as the host.
    let host = world.running.url().trim_start_matches("http://").to_owned();
    let body = serde_urlencoded::to_string([
        ("channel_id", "fukyvsrqe3fmmfqs8s8ot7aqdo"),
        ("channel_name", "town-square"),
        ("command", "/chatops"),
        (
            "response_url",
            "https://mattermost.example.com/hooks/commands/qw8rj7ztnbyhbkr7",
        ),
        ("team_domain", "acme"),
        ("team_id", TEAM),
        ("text", "link"),
        ("token", MM_TOKEN),
        ("trigger_id", "dHJpZ2dlcjox"),
        ("user_id", USER),
        ("user_name", "alice"),
    ])
    .expect("form");
    let req = http::Request::builder()
        .method("POST")
        .uri("/mattermost/commands")
        .header("host", &host)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(bytes::Bytes::from(body))
        .expect("request");
    let resp = ingress.handle(req).await;
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = serde_json::from_str(resp.body()).expect("json");
    let text = answer["text"].as_str().unwrap_or("");
    assert_eq!(answer["response_type"], "ephemeral");
    // Mattermost markdown: [Connect your GitLab account](<authorize URL>).
    let url = text
        .split_once("](")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(u, _)| u.to_owned())
        .expect("a markdown link");
    assert!(url.contains(&format!(
        "redirect_uri=http%3A%2F%2F{}%2Foauth%2Fgitlab%2Fcallback",
        host.replace(':', "%3A")
    )));

    // The browser: GitLab approves as alice and sends it to the callback on this ingress.
    gitlab.state().sign_in_browser_as("alice");
    let location = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(&url)
        .send()
        .await
        .expect("authorize")
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirected")
        .to_owned();
    let path_and_query = location.trim_start_matches(&format!("http://{host}"));
    let req = http::Request::builder()
        .method("GET")
        .uri(path_and_query)
        .header("host", &host)
        .body(bytes::Bytes::new())
        .expect("request");
    let resp = ingress.handle(req).await;
    assert_eq!(resp.status(), 200, "{}", resp.body());
    assert!(
        resp.body().contains("Connected as @alice"),
        "{}",
        resp.body()
    );

    let link = aws
        .store()
        .get_user(TEAM, USER)
        .await
        .expect("store")
        .expect("linked");
    assert_eq!(link.platform, Some(chatops_core::run::Platform::Mattermost));
    assert_eq!(link.gitlab_username, "alice");
    assert!(link.grant.is_some());
}

/// `help` lists the jobs with the person's own token (what they can see is what GitLab
/// shows them); someone not connected gets the grammar, not a connect link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_reads_the_jobs_as_the_person() {
    let (world, _aws) = world().await;
    let c = world.command(BOB, "help").await.expect("help");
    assert!(texts(&world, &c).contains("Usage"), "{}", texts(&world, &c));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(world.connect_link(&c).is_none(), "{}", texts(&world, &c));
    assert!(!texts(&world, &c).contains("Jobs you can run here"));

    connect(&world, ALICE).await;
    let c = world.command(ALICE, "help").await.expect("help");
    until("the jobs", || {
        texts(&world, &c).contains("Jobs you can run here")
    })
    .await;
    let shown = texts(&world, &c);
    assert!(shown.contains("hello-world"), "{shown}");
    assert!(
        !shown.contains("deploy-production"),
        "except: [chat] is not listed: {shown}"
    );
    let lint_as: Vec<Option<String>> = world
        .gitlab
        .state()
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/ci/lint"))
        .map(|r| r.user)
        .collect();
    assert!(!lint_as.is_empty());
    assert!(
        lint_as.iter().all(|u| u.as_deref() == Some("alice")),
        "{lint_as:?}"
    );
}
