//! End to end: signed slash commands into local mode (the Lambdas' own handlers behind one
//! HTTP port), the dispatcher and the sweep as in-process workers, the GitLab stand-in running
//! `tests/demo-project`'s jobs for real and sending its webhooks back, and the Slack stand-in
//! enforcing Slack's rules and recording what the channel sees. The same scenarios run with
//! the embedded queue and store, and over SQS + DynamoDB (moto); the last test runs the built
//! `chatops demo` binary, which is what `make demo` runs.

mod support;

use chatops::demo::{
    demo_project_dir, run_script, DemoBackends, DemoWorld, SentCommand, ALICE, BOB, DEMO_SCRIPT,
};
use chatops_core::gitlab::Status;
use chatops_sim::slack::render_posts;
use std::time::Duration;

fn find<'a>(sent: &'a [SentCommand], text: &str, user: &str) -> &'a SentCommand {
    sent.iter()
        .find(|c| c.text == text && c.user.name == user)
        .unwrap_or_else(|| panic!("{user} did not send {text}"))
}

fn shown(world: &DemoWorld, c: &SentCommand) -> String {
    render_posts(&world.posts_for(c))
}

fn pipelines_for(world: &DemoWorld, job: &str) -> Vec<u64> {
    world
        .gitlab
        .state()
        .pipelines()
        .iter()
        .filter(|p| p.variable("CHATOPS_JOB") == Some(job))
        .map(|p| p.id)
        .collect()
}

/// Every scenario of the demo, as assertions on what the channel saw and what GitLab did.
fn check_scenarios(world: &DemoWorld, sent: &[SentCommand]) {
    assert_eq!(sent.len(), DEMO_SCRIPT.len());
    for c in sent {
        assert_eq!(
            c.status, 200,
            "{}: Slack shows any non-200 as an error",
            c.text
        );
        assert_eq!(c.answer["response_type"], "in_channel", "{}", c.text);
        assert!(
            c.answer["text"]
                .as_str()
                .unwrap_or("")
                .contains("Scheduling job"),
            "{}: {}",
            c.text,
            c.answer
        );
    }
    let transcript = world.transcript(sent);

    // hello-world: one command, so the reply is its output only.
    let hw = find(sent, "run hello-world", "alice");
    let text = shown(world, hw);
    assert!(text.contains("Hello World."), "{text}");
    assert!(!text.contains("$ echo"), "one command: output only\n{text}");
    assert_eq!(
        text.matches("succeeded").count(),
        1,
        "exactly one final reply\n{text}"
    );
    let vars = &world
        .gitlab
        .state()
        .pipelines()
        .into_iter()
        .find(|p| p.variable("CHATOPS_JOB") == Some("hello-world"))
        .expect("a pipeline for hello-world")
        .variables;
    for (k, v) in [
        ("CHATOPS_JOB", "hello-world"),
        ("CHAT_INPUT", ""),
        ("CHAT_CHANNEL", "C0OPS"),
        ("CHAT_USER_ID", ALICE.slack_id),
        ("CHAT_PLATFORM", "slack"),
    ] {
        assert!(
            vars.iter().any(|(a, b)| a == k && b == v),
            "{k}={v} missing in {vars:?}"
        );
    }

    // ls: only the chat_reply section comes back.
    let text = shown(world, find(sent, "run ls", "alice"));
    assert!(
        text.contains(".gitlab-ci.yml") && text.contains("README.md"),
        "{text}"
    );
    assert!(!text.contains("This command will not be shown"), "{text}");

    // Several commands: commands and output, CHAT_INPUT passed through.
    let text = shown(world, find(sent, "run greet the release notes", "alice"));
    assert!(
        text.contains("$ echo \"$GREETING, $CHAT_USER_NAME!\""),
        "{text}"
    );
    assert!(text.contains("Hello, alice!"), "{text}");
    assert!(text.contains("You asked for: the release notes"), "{text}");

    // A failing job: said so, with the end of the log.
    let text = shown(world, find(sent, "run db-check", "alice"));
    assert!(text.contains("failed"), "{text}");
    assert!(text.contains("psql: error: connection refused"), "{text}");
    assert!(text.contains("exit code 1"), "{text}");

    // A missing job and an excluded one: GitLab's words, and no pipeline at all.
    for job in ["rollback", "deploy-production"] {
        let text = shown(world, find(sent, &format!("run {job}"), "alice"));
        assert!(
            text.contains("The command could not be scheduled")
                && text.contains(&format!("\"{job}\"")),
            "{text}"
        );
        assert!(pipelines_for(world, job).is_empty(), "{job} got a pipeline");
    }
    assert!(shown(world, find(sent, "run deploy-production", "alice")).contains("except"));

    // A manual job: the pipeline exists, the job waits, the user is told with the link.
    let text = shown(world, find(sent, "run restart", "alice"));
    assert!(
        text.contains("manual") && text.contains("/-/jobs/"),
        "{text}"
    );
    let p = pipelines_for(world, "restart");
    assert_eq!(p.len(), 1);
    let jobs = world.gitlab.state().jobs_of(p[0]);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, Status::Manual);

    // A Reporter: refused, and nothing ran for them.
    let text = shown(world, find(sent, "run hello-world", "bob"));
    assert!(text.contains("You are not allowed"), "{text}");
    assert!(world
        .gitlab
        .state()
        .pipelines()
        .iter()
        .all(|p| p.variable("CHAT_USER_ID") != Some(BOB.slack_id)));

    // Each started job ran exactly once, in a pipeline holding only itself.
    for job in ["hello-world", "ls", "greet", "db-check"] {
        let p = pipelines_for(world, job);
        assert_eq!(p.len(), 1, "{job}: {p:?}");
        let jobs = world.gitlab.state().jobs_of(p[0]);
        assert_eq!(jobs.len(), 1, "{job}");
        assert!(jobs[0].status.is_final(), "{job}: {:?}", jobs[0].status);
    }
    assert_eq!(world.gitlab.state().pipelines().len(), 5);

    // Slack's rules held: nothing refused, nothing sent around the response_urls.
    assert_eq!(world.slack.refusals(), vec![], "{transcript}");
    assert!(world.channel_posts().is_empty(), "{transcript}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_scenarios_with_embedded_backends() {
    let world = DemoWorld::start(DemoBackends::Embedded, &demo_project_dir())
        .await
        .expect("demo world");
    let (sent, settled) = run_script(&world).await.expect("script");
    assert!(settled, "did not settle:\n{}", world.transcript(&sent));
    check_scenarios(&world, &sent);
}

/// Markup a person typed (`<!channel>`, `<@U123>`, `&`) travels through the whole flow: the
/// ack, the dispatcher's follow-up or refusal, and the job's reply (the `greet` job echoes
/// `CHAT_INPUT`). Every message that reaches Slack has it escaped, so nobody is pinged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_commands_is_escaped_in_every_message() {
    let world = DemoWorld::start(DemoBackends::Embedded, &demo_project_dir())
        .await
        .expect("demo world");
    let hostile = "<!channel> <@U123> &";
    let mut sent = Vec::new();
    for text in [
        format!("run echo-input {hostile}"),
        format!("run greet {hostile}"),
        "run <!channel>".to_owned(),
    ] {
        sent.push(world.command(ALICE, &text).await.expect("command"));
    }
    assert!(
        world.settle(&sent, Duration::from_secs(60)).await,
        "did not settle:\n{}",
        world.transcript(&sent)
    );
    let greet = &sent[1];
    let reply = shown(&world, greet);
    assert!(
        reply.contains("You asked for"),
        "the job ran and replied\n{reply}"
    );

    let mut everything = Vec::new();
    for c in &sent {
        everything.push(c.answer.to_string());
        for p in world.posts_for(c) {
            everything.push(serde_json::to_string(&p).expect("post as JSON"));
        }
    }
    for p in world.channel_posts() {
        everything.push(serde_json::to_string(&p).expect("post as JSON"));
    }
    assert!(everything.len() >= 6, "{everything:#?}");
    for m in &everything {
        for raw in ["<!channel>", "<@U123>"] {
            assert!(!m.contains(raw), "{raw} reached Slack unescaped: {m}");
        }
        // Every `&` is an entity Slack decodes, never a bare one.
        for (i, _) in m.match_indices('&') {
            let rest = &m[i..];
            assert!(
                rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;"),
                "bare & in {m}"
            );
        }
    }
    assert!(
        everything
            .iter()
            .any(|m| m.contains("&lt;!channel&gt; &lt;@U123&gt; &amp;")),
        "{everything:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_scenarios_over_sqs_and_dynamodb() {
    let sdk = support::aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = support::new_queue(&sdk, "e2e-runs", 5).await;
    let table = support::new_runs_table(&sdk, "e2e-runs").await;
    let world = DemoWorld::start(
        DemoBackends::Aws {
            sdk: Box::new(sdk.clone()),
            queue_url: queue_url.clone(),
            table: table.clone(),
        },
        &demo_project_dir(),
    )
    .await
    .expect("demo world");
    let (sent, settled) = run_script(&world).await.expect("script");
    assert!(settled, "did not settle:\n{}", world.transcript(&sent));
    check_scenarios(&world, &sent);

    // The runs really went through DynamoDB and the queue is drained.
    let store =
        chatops_adapters::dynamo::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    use chatops_core::store::RunStore;
    let p = pipelines_for(&world, "hello-world")[0];
    let run = store
        .find_by_pipeline(chatops_core::ids::PipelineId(p))
        .await
        .expect("store")
        .expect("the run is in DynamoDB");
    assert_eq!(run.status, chatops_core::run::RunStatus::Replied);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    for (k, v) in attrs {
        assert_eq!(v, "0", "{k:?}: handled messages are deleted");
    }
}

/// GitLab never retries a webhook: when every hook is lost, the sweep still replies, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_replies_when_every_webhook_is_lost() {
    let world = DemoWorld::start_with(
        DemoBackends::Embedded,
        &demo_project_dir(),
        &[("SWEEP_EVERY_SECS", "1"), ("SWEEP_AFTER_SECS", "0")],
    )
    .await
    .expect("demo world");
    // Hooks now go nowhere (port 9 on 127.0.0.1: connection refused).
    world
        .gitlab
        .state()
        .set_webhook("http://127.0.0.1:9/gitlab/webhook", "whatever");
    let c = world.command(ALICE, "run hello-world").await.unwrap();
    let settled = world
        .settle(std::slice::from_ref(&c), Duration::from_secs(30))
        .await;
    assert!(settled);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !shown(&world, &c).contains("Hello World.") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = shown(&world, &c);
    assert!(text.contains("Hello World."), "{text}");
    // More sweeps come and go; the reply stays single.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(shown(&world, &c).matches("Hello World.").count(), 1);
}

/// The HTTP edge of local mode answers bad input itself, before any work is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_refuses_bad_requests() {
    let world = DemoWorld::start(DemoBackends::Embedded, &demo_project_dir())
        .await
        .expect("demo world");
    let http = reqwest::Client::new();
    let url = world.running.url();
    let unsigned = http
        .post(format!("{url}/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=run+hello-world")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let hook = http
        .post(format!("{url}/gitlab/webhook"))
        .header("X-Gitlab-Event", "Job Hook")
        .header("X-Gitlab-Token", "wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 401);
    assert_eq!(
        http.get(format!("{url}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(world.gitlab.state().pipelines().is_empty());
    assert!(world.slack.transcript().is_empty());
}

/// `make demo` runs exactly this: the built binary prints the channel and exits 0.
#[test]
fn demo_binary_prints_the_transcript() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatops"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .expect("run chatops demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    for needle in [
        "alice › /chatops run hello-world",
        "Hello World.",
        "alice › /chatops run ls",
        ".gitlab-ci.yml",
        "You asked for: the release notes",
        "psql: error: connection refused",
        "defines a job with the name \"rollback\"",
        "defines a job with the name \"deploy-production\"",
        "manual job",
        "bob › /chatops run hello-world",
        "You are not allowed",
        "8 commands, every one answered",
        "Connect your GitLab account",
        "Connected as @alice. You can close this tab.",
        "the pipeline was created by alice",
        "You do not have sufficient permission to run a pipeline on 'main'",
        "GitLab revoked the tokens",
        "Every command answered.",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    assert!(
        !stdout.contains("This command will not be shown"),
        "{stdout}"
    );
}
