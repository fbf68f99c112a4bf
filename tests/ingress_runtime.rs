//! The real artefact: the built `ingress` binary, started as Lambda starts a
//! `provided.al2023` bootstrap, under a local Runtime API (tests/benches/lambda_runtime_api.rs),
//! with RUN_QUEUE_URL on moto. It answers Function URL events and the run request lands in SQS.

#[path = "benches/lambda_runtime_api.rs"]
mod runtime_api;
mod support;

use chatops_core::run::{Platform, RunRequest};
use chatops_core::secret::Secret;
use chatops_core::slack::verify::sign;
use runtime_api::{function_url_event, lambda_env, OutcomeKind, RuntimeApi};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "runtime-test-signing-secret";

fn slack_body(text: &str) -> String {
    serde_urlencoded::to_string([
        ("team_id", "T0001"),
        ("team_domain", "example"),
        ("channel_id", "C2147483705"),
        ("channel_name", "test"),
        ("user_id", "U2147483697"),
        ("user_name", "Steve"),
        ("command", "/chatops"),
        ("text", text),
        (
            "response_url",
            "https://hooks.slack.com/commands/T0001/5678/abcDEF",
        ),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
    ])
    .unwrap()
}

fn ingress_binary() -> std::path::PathBuf {
    runtime_api::cargo_build("dev", &["-p", "ingress", "--bin", "ingress"]).join("ingress")
}

fn lambda_response(o: &runtime_api::Outcome) -> (u16, serde_json::Value, serde_json::Value) {
    assert_eq!(
        o.kind,
        OutcomeKind::Response,
        "{}",
        String::from_utf8_lossy(&o.body)
    );
    let v = o.json();
    let status = v["statusCode"].as_u64().unwrap() as u16;
    let body = v["body"].as_str().unwrap_or_default();
    let parsed = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, v, parsed)
}

#[tokio::test(flavor = "multi_thread")]
async fn built_binary_answers_function_url_events_and_queues_to_sqs() {
    let bin = ingress_binary();
    let sdk = support::aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(support::unique_name("ingress-runtime"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();

    let api = RuntimeApi::start().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let good = slack_body("run deploy production\nregion=eu-west-1");
    let sig = sign(&Secret::new(SECRET), &now, good.as_bytes());
    let headers = [
        ("x-slack-request-timestamp", now.as_str()),
        ("x-slack-signature", sig.as_str()),
    ];
    api.invoke(
        "inv-1",
        function_url_event("/slack/commands", &headers, good.as_bytes()),
    );
    // Same signature over another body: refused.
    let forged = slack_body("run destroy everything");
    api.invoke(
        "inv-2",
        function_url_event("/slack/commands", &headers, forged.as_bytes()),
    );

    let mut child = Command::new(&bin)
        .env_clear()
        .envs(lambda_env(&api.endpoint(), "chatops-ingress"))
        .env("AWS_ENDPOINT_URL", support::moto_endpoint())
        .env("RUN_QUEUE_URL", &queue_url)
        .env("SLACK_SIGNING_SECRET", SECRET)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let first = api.outcome(Duration::from_secs(30)).await;
    let second = api.outcome(Duration::from_secs(30)).await;
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let first = first.unwrap_or_else(|| panic!("no answer from the binary; logs:\n{logs}"));
    let second = second.unwrap_or_else(|| panic!("no second answer; logs:\n{logs}"));

    assert_eq!(first.request_id, "inv-1");
    let (status, raw, body) = lambda_response(&first);
    assert_eq!(status, 200, "{raw}\n{logs}");
    assert_eq!(raw["headers"]["content-type"], "application/json", "{raw}");
    assert_eq!(body["response_type"], "in_channel", "{raw}");
    assert!(body["text"].as_str().unwrap().contains("`deploy`"), "{raw}");

    assert_eq!(second.request_id, "inv-2");
    let (status, raw, _) = lambda_response(&second);
    assert_eq!(status, 401, "{raw}");
    assert_eq!(raw["body"].as_str().unwrap_or_default(), "");

    assert!(
        !logs.contains(SECRET),
        "the signing secret appeared in the logs:\n{logs}"
    );

    let got = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(
        got.len(),
        1,
        "exactly the verified request is queued: {got:?}"
    );
    let r: RunRequest = serde_json::from_str(got[0].body().unwrap()).unwrap();
    assert_eq!(r.platform, Platform::Slack);
    assert_eq!(r.channel_id.as_str(), "C2147483705");
    assert_eq!(r.user_id.as_str(), "U2147483697");
    assert_eq!(
        (r.job.as_str(), r.input.as_str()),
        ("deploy", "production\nregion=eu-west-1")
    );
    assert_eq!(r.received_at.to_string().len(), now.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_configuration_stops_the_cold_start_naming_the_variable() {
    let bin = ingress_binary();
    let api = RuntimeApi::start().await;
    let output = Command::new(&bin)
        .env_clear()
        .envs(lambda_env(&api.endpoint(), "chatops-ingress"))
        .env("SLACK_SIGNING_SECRET", SECRET)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{logs}");
    assert!(logs.contains("RUN_QUEUE_URL"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
}
