//! The ingress through its real interface: `Ingress::handle` with a real `SqsQueue` over
//! moto's SQS wire protocol. A signed command comes out of the queue with every field; every
//! bad input gets its answer and queues nothing. Also: Slack's published signing example,
//! byte by byte, and base64 Function URL bodies through lambda_http's own deserialisation.

mod support;

use base64::Engine;
use bytes::Bytes;
use chatops_adapters::sqs::SqsQueue;
use chatops_core::config::{Env, NoSecrets};
use chatops_core::ids::{ChannelId, ChatUserId, TeamId};
use chatops_core::ingress::{Ingress, IngressConfig, MAX_BODY_BYTES};
use chatops_core::queue::{MemoryQueue, RunQueue};
use chatops_core::run::{Platform, RunRequest, RUN_REQUEST_VERSION};
use chatops_core::secret::Secret;
use chatops_core::slack::verify::{sign, verify};
use chatops_core::web::{HttpRequest, HttpResponse};
use chatops_sim::ManualClock;
use serde_json::Value;
use std::sync::Arc;

const SECRET: &str = "test-signing-secret";
const MM_TOKEN: &str = "test-mattermost-token";
const NOW: u64 = 1_767_225_600;

fn repo_file(rel: &str) -> Vec<u8> {
    let path = format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

fn slack_fields(text: &str) -> Vec<(&'static str, String)> {
    vec![
        ("token", "deprecated-verification-token".into()),
        ("team_id", "T0001".into()),
        ("team_domain", "example".into()),
        ("channel_id", "C2147483705".into()),
        ("channel_name", "test".into()),
        ("user_id", "U2147483697".into()),
        ("user_name", "Steve".into()),
        ("command", "/chatops".into()),
        ("text", text.into()),
        ("api_app_id", "A123456".into()),
        (
            "response_url",
            "https://hooks.slack.com/commands/T0001/5678/abcDEF".into(),
        ),
        (
            "trigger_id",
            "13345224609.738474920.8088930838d88f008e0".into(),
        ),
    ]
}

fn encode(fields: &[(&'static str, String)]) -> String {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    form(&pairs)
}

fn with(
    mut fields: Vec<(&'static str, String)>,
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    for f in fields.iter_mut() {
        if f.0 == key {
            f.1 = value.into();
        }
    }
    fields
}

fn without(fields: Vec<(&'static str, String)>, key: &str) -> Vec<(&'static str, String)> {
    fields.into_iter().filter(|f| f.0 != key).collect()
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpRequest {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.into()).unwrap()
}

/// A request Slack would send at `ts`, signed with `secret`.
fn slack_signed(body: impl Into<Bytes>, ts: u64, secret: &str) -> HttpRequest {
    let body = body.into();
    let ts = ts.to_string();
    let sig = sign(&Secret::new(secret), &ts, &body);
    request(
        "POST",
        "/slack/commands",
        &[
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &sig),
        ],
        body,
    )
}

fn slack(body: impl Into<Bytes>) -> HttpRequest {
    slack_signed(body, NOW, SECRET)
}

fn mm_fields(text: &str) -> Vec<(&'static str, String)> {
    vec![
        ("channel_id", "fukyvsrqe3fmmfqs8s8ot7aqdo".into()),
        ("channel_name", "town-square".into()),
        ("command", "/chatops".into()),
        (
            "response_url",
            "https://mattermost.example.com/hooks/commands/qw8rj7ztnbyhbkr7".into(),
        ),
        ("team_domain", "acme".into()),
        ("team_id", "tc3kpbe4m7gm3pc8ih4ge7rkpe".into()),
        ("text", text.into()),
        ("token", MM_TOKEN.into()),
        ("trigger_id", "dHJpZ2dlcjox".into()),
        ("user_id", "ukzbfd5tqjr5jjkn8ffzoid6ma".into()),
        ("user_name", "alice".into()),
    ]
}

fn mattermost(fields: &[(&'static str, String)], auth: Option<&str>) -> HttpRequest {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    request("POST", "/mattermost/commands", &headers, encode(fields))
}

async fn config(queue_url: &str) -> IngressConfig {
    let env = Env::from_pairs([
        ("SLACK_SIGNING_SECRET", SECRET),
        ("MATTERMOST_TOKEN", MM_TOKEN),
        ("RUN_QUEUE_URL", queue_url),
        ("MATTERMOST_URL", "https://mattermost.example.com"),
    ]);
    IngressConfig::from_env(&env, &NoSecrets).await.unwrap()
}

struct Moto {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    ingress: Ingress,
    clock: ManualClock,
}

async fn moto_ingress() -> Moto {
    let sdk = support::aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(support::unique_name("ingress"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let clock = ManualClock::at(NOW);
    let queue: Arc<dyn RunQueue> = Arc::new(SqsQueue::from_sdk_config(&sdk, &queue_url));
    let ingress = Ingress::new(config(&queue_url).await, queue, Arc::new(clock.clone()));
    Moto {
        sqs,
        queue_url,
        ingress,
        clock,
    }
}

impl Moto {
    /// Every message now in the queue (deleted as read).
    async fn drain(&self) -> Vec<RunRequest> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(if out.is_empty() { 1 } else { 0 })
                .send()
                .await
                .unwrap();
            let msgs = got.messages.unwrap_or_default();
            if msgs.is_empty() {
                return out;
            }
            for m in msgs {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

fn json_body(resp: &HttpResponse) -> Value {
    assert_eq!(
        resp_header(resp, "content-type").as_deref(),
        Some("application/json"),
        "{resp:?}"
    );
    serde_json::from_str(resp.body()).unwrap_or_else(|e| panic!("{e}: {}", resp.body()))
}

fn resp_header(resp: &HttpResponse, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[test]
fn slacks_signing_example_verifies_and_any_changed_byte_does_not() {
    let ex: Value =
        serde_json::from_slice(&repo_file("tests/fixtures/slack/signature_example.json")).unwrap();
    let secret = Secret::new(ex["signing_secret"].as_str().unwrap());
    let ts = ex["timestamp"].as_str().unwrap();
    let sig = ex["expected_signature"].as_str().unwrap();
    let body = ex["body"].as_str().unwrap().as_bytes();
    let now = ex["valid_now_unix_example"].as_u64().unwrap();
    assert_eq!(ex["headers"]["X-Slack-Signature"].as_str(), Some(sig));
    assert_eq!(verify(&secret, ts, sig, body, now), Ok(()));
    assert_eq!(sign(&secret, ts, body), sig);
    assert!(verify(
        &secret,
        ts,
        sig,
        body,
        ex["stale_now_unix_example"].as_u64().unwrap()
    )
    .is_err());

    let mut checked = 0usize;
    // Every byte of the body, the timestamp and the signature, replaced by every other value.
    for i in 0..body.len() {
        let mut b = body.to_vec();
        for v in 0..=255u8 {
            if v == body[i] {
                continue;
            }
            b[i] = v;
            assert!(
                verify(&secret, ts, sig, &b, now).is_err(),
                "body byte {i} -> {v}"
            );
            checked += 1;
        }
    }
    for (name, field) in [("timestamp", ts), ("signature", sig)] {
        for i in 0..field.len() {
            for v in 0..=255u8 {
                let mut f = field.as_bytes().to_vec();
                if f[i] == v {
                    continue;
                }
                f[i] = v;
                let Ok(changed) = String::from_utf8(f) else {
                    continue;
                };
                let r = if name == "timestamp" {
                    verify(&secret, &changed, sig, body, now)
                } else {
                    verify(&secret, ts, &changed, body, now)
                };
                assert!(r.is_err(), "{name} byte {i} -> {v}: {changed}");
                checked += 1;
            }
        }
    }
    // Dropping or adding a byte fails too.
    assert!(verify(&secret, ts, sig, &body[..body.len() - 1], now).is_err());
    assert!(verify(&secret, ts, sig, &[body, b"&"].concat(), now).is_err());
    assert!(checked > 100_000, "{checked}");
}

#[tokio::test]
async fn signing_example_through_the_handler() {
    let ex: Value =
        serde_json::from_slice(&repo_file("tests/fixtures/slack/signature_example.json")).unwrap();
    let secret = ex["signing_secret"].as_str().unwrap();
    let ts = ex["timestamp"].as_str().unwrap();
    let sig = ex["expected_signature"].as_str().unwrap();
    let body = ex["body"].as_str().unwrap().as_bytes().to_vec();
    let queue = Arc::new(MemoryQueue::new());
    let env = Env::from_pairs([
        ("SLACK_SIGNING_SECRET", secret),
        ("RUN_QUEUE_URL", "memory"),
    ]);
    let ingress = Ingress::new(
        IngressConfig::from_env(&env, &NoSecrets).await.unwrap(),
        queue.clone(),
        Arc::new(ManualClock::at(
            ex["valid_now_unix_example"].as_u64().unwrap(),
        )),
    );
    let headers = [
        ("x-slack-request-timestamp", ts),
        ("x-slack-signature", sig),
    ];
    // The example's text is empty: a verified request that asks for the usage (and queues
    // the job list for the dispatcher to follow up with).
    let resp = ingress
        .handle(request("POST", "/slack/commands", &headers, body.clone()))
        .await;
    let queued = queue.drain();
    assert_eq!(queued.len(), 1, "the help follow-up");
    let help: chatops_core::run::RunRequest = serde_json::from_str(&queued[0]).unwrap();
    assert_eq!(help.kind, chatops_core::run::RequestKind::Help);
    assert_eq!(resp.status(), 200, "{}", resp.body());
    let v = json_body(&resp);
    assert_eq!(v["response_type"], "ephemeral");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("/webhook-collect run &lt;job&gt;"),
        "{v}"
    );
    for i in 0..body.len() {
        let mut b = body.clone();
        b[i] ^= 0x01;
        let resp = ingress
            .handle(request("POST", "/slack/commands", &headers, b))
            .await;
        assert_eq!(resp.status(), 401, "byte {i}");
        assert_eq!(resp.body(), "");
    }
    assert!(queue.is_empty());
}

#[tokio::test]
async fn signed_slack_run_is_queued_with_every_field() {
    let m = moto_ingress().await;
    let text = "run deploy production\n  region=eu-west-1 & <more>";
    let resp = m.ingress.handle(slack(encode(&slack_fields(text)))).await;
    assert_eq!(resp.status(), 200);
    let v = json_body(&resp);
    assert_eq!(
        v["response_type"], "in_channel",
        "the command stays visible: {v}"
    );
    assert!(v["text"].as_str().unwrap().contains("`deploy`"), "{v}");

    let got = m.drain().await;
    assert_eq!(got.len(), 1, "{got:?}");
    let r = &got[0];
    assert_eq!(r.request_id.as_str().len(), 32);
    assert!(r.request_id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    let want = RunRequest {
        version: RUN_REQUEST_VERSION,
        kind: chatops_core::run::RequestKind::Run,
        request_id: r.request_id.clone(),
        platform: Platform::Slack,
        team_id: TeamId::new("T0001"),
        team_domain: Some("example".into()),
        channel_id: ChannelId::new("C2147483705"),
        channel_name: "test".into(),
        user_id: ChatUserId::new("U2147483697"),
        user_name: "Steve".into(),
        command: "/chatops".into(),
        job: "deploy".into(),
        input: "production\n  region=eu-west-1 & <more>".into(),
        response_url: "https://hooks.slack.com/commands/T0001/5678/abcDEF".into(),
        received_at: NOW,
        public_base: None,
    };
    assert_eq!(r, &want);

    // The same Slack request again (a retry, re-signed later) keeps its id; another
    // invocation (new trigger id) gets a new one.
    m.clock.advance(5);
    let resp = m
        .ingress
        .handle(slack_signed(encode(&slack_fields(text)), NOW + 5, SECRET))
        .await;
    assert_eq!(resp.status(), 200);
    let other = with(
        slack_fields(text),
        "trigger_id",
        "13345224609.738474920.ffff",
    );
    let resp = m
        .ingress
        .handle(slack_signed(encode(&other), NOW + 5, SECRET))
        .await;
    assert_eq!(resp.status(), 200);
    let again = m.drain().await;
    assert_eq!(again.len(), 2);
    let ids: Vec<_> = again.iter().map(|r| r.request_id.clone()).collect();
    assert!(ids.contains(&r.request_id), "{ids:?}");
    assert!(ids.iter().any(|id| id != &r.request_id), "{ids:?}");
    assert!(again.iter().all(|r| r.received_at == NOW + 5));
}

#[tokio::test]
async fn mattermost_run_is_queued_with_token_in_form_or_header() {
    let m = moto_ingress().await;
    let resp = m
        .ingress
        .handle(mattermost(&mm_fields("run deploy production"), None))
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.body());
    assert_eq!(json_body(&resp)["response_type"], "in_channel");
    let header_only = without(mm_fields("run ls -la\n/tmp"), "token");
    let resp = m
        .ingress
        .handle(mattermost(&header_only, Some(&format!("Token {MM_TOKEN}"))))
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.body());

    let mut got = m.drain().await;
    got.sort_by(|a, b| a.job.cmp(&b.job));
    assert_eq!(got.len(), 2, "{got:?}");
    let r = &got[0];
    assert_eq!(r.platform, Platform::Mattermost);
    assert_eq!(r.team_id.as_str(), "tc3kpbe4m7gm3pc8ih4ge7rkpe");
    assert_eq!(r.team_domain.as_deref(), Some("acme"));
    assert_eq!(r.channel_id.as_str(), "fukyvsrqe3fmmfqs8s8ot7aqdo");
    assert_eq!(r.channel_name, "town-square");
    assert_eq!(r.user_id.as_str(), "ukzbfd5tqjr5jjkn8ffzoid6ma");
    assert_eq!(r.user_name, "alice");
    assert_eq!(r.command, "/chatops");
    assert_eq!((r.job.as_str(), r.input.as_str()), ("deploy", "production"));
    assert_eq!(
        r.response_url,
        "https://mattermost.example.com/hooks/commands/qw8rj7ztnbyhbkr7"
    );
    assert_eq!(r.received_at, NOW);
    assert_eq!(
        (got[1].job.as_str(), got[1].input.as_str()),
        ("ls", "-la\n/tmp")
    );
}

#[tokio::test]
async fn every_bad_input_gets_its_answer_and_queues_nothing() {
    let m = moto_ingress().await;
    let good = encode(&slack_fields("run deploy production"));
    let sig = sign(&Secret::new(SECRET), &NOW.to_string(), good.as_bytes());
    let ts = NOW.to_string();
    let big = format!("{good}&pad={}", "x".repeat(MAX_BODY_BYTES));
    let dup = format!("{good}&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2Fother");

    // (case, request, status, body must contain; "" = empty body).
    let cases: Vec<(&str, HttpRequest, u16, &str)> = vec![
        (
            "no signature headers",
            request("POST", "/slack/commands", &[], good.clone()),
            401,
            "",
        ),
        (
            "no signature",
            request(
                "POST",
                "/slack/commands",
                &[("x-slack-request-timestamp", &ts)],
                good.clone(),
            ),
            401,
            "",
        ),
        (
            "no timestamp",
            request(
                "POST",
                "/slack/commands",
                &[("x-slack-signature", &sig)],
                good.clone(),
            ),
            401,
            "",
        ),
        (
            "wrong secret",
            slack_signed(good.clone(), NOW, "not-the-secret"),
            401,
            "",
        ),
        (
            "stale timestamp",
            slack_signed(good.clone(), NOW - 301, SECRET),
            401,
            "",
        ),
        (
            "future timestamp",
            slack_signed(good.clone(), NOW + 301, SECRET),
            401,
            "",
        ),
        (
            "timestamp swapped after signing",
            request(
                "POST",
                "/slack/commands",
                &[
                    ("x-slack-request-timestamp", &(NOW + 1).to_string()),
                    ("x-slack-signature", &sig),
                ],
                good.clone(),
            ),
            401,
            "",
        ),
        (
            "body changed after signing",
            request(
                "POST",
                "/slack/commands",
                &[
                    ("x-slack-request-timestamp", &ts),
                    ("x-slack-signature", &sig),
                ],
                good.replace("deploy", "destroy"),
            ),
            401,
            "",
        ),
        (
            "GET",
            request("GET", "/slack/commands", &[], ""),
            405,
            "method not allowed",
        ),
        (
            "PUT signed",
            {
                let mut r = slack(good.clone());
                *r.method_mut() = http::Method::PUT;
                r
            },
            405,
            "method not allowed",
        ),
        (
            "unknown path",
            request("POST", "/slack/events", &[], good.clone()),
            404,
            "not found",
        ),
        (
            "root",
            request("POST", "/", &[], good.clone()),
            404,
            "not found",
        ),
        (
            "trailing slash",
            request("POST", "/slack/commands/", &[], good.clone()),
            404,
            "not found",
        ),
        ("body over 64 KiB", slack(big), 413, "too large"),
        ("duplicate field", slack(dup), 400, "bad request"),
        (
            "missing channel_id",
            slack(encode(&without(slack_fields("run deploy"), "channel_id"))),
            400,
            "channel_id",
        ),
        (
            "missing response_url",
            slack(encode(&without(slack_fields("run deploy"), "response_url"))),
            400,
            "response_url",
        ),
        ("not a form", slack("\u{0}\u{ff}garbage"), 400, "team_id"),
        (
            "response_url elsewhere",
            slack(encode(&with(
                slack_fields("run deploy"),
                "response_url",
                "https://attacker.example/x",
            ))),
            400,
            "response_url",
        ),
        (
            "response_url look-alike host",
            slack(encode(&with(
                slack_fields("run deploy"),
                "response_url",
                "https://hooks.slack.com.attacker.example/x",
            ))),
            400,
            "response_url",
        ),
        (
            "response_url over http",
            slack(encode(&with(
                slack_fields("run deploy"),
                "response_url",
                "http://hooks.slack.com/commands/x",
            ))),
            400,
            "response_url",
        ),
        (
            "response_url elsewhere, help",
            slack(encode(&with(
                slack_fields("help"),
                "response_url",
                "https://attacker.example/x",
            ))),
            400,
            "response_url",
        ),
        ("ssl_check", slack("ssl_check=1&token=abc"), 200, ""),
        (
            "mattermost no token",
            mattermost(&without(mm_fields("run deploy"), "token"), None),
            401,
            "",
        ),
        (
            "mattermost wrong token",
            mattermost(&with(mm_fields("run deploy"), "token", "nope"), None),
            401,
            "",
        ),
        (
            "mattermost wrong header",
            mattermost(
                &without(mm_fields("run deploy"), "token"),
                Some("Token nope"),
            ),
            401,
            "",
        ),
        (
            "mattermost bearer",
            mattermost(
                &without(mm_fields("run deploy"), "token"),
                Some(&format!("Bearer {MM_TOKEN}")),
            ),
            401,
            "",
        ),
        (
            "mattermost slack url",
            mattermost(
                &with(
                    mm_fields("run deploy"),
                    "response_url",
                    "https://mattermost.example.com/api/v4/posts",
                ),
                None,
            ),
            400,
            "response_url",
        ),
        (
            "mattermost missing user",
            mattermost(&without(mm_fields("run deploy"), "user_id"), None),
            400,
            "user_id",
        ),
        (
            "mattermost over 64 KiB",
            mattermost(
                &with(mm_fields("run deploy"), "text", &"y".repeat(MAX_BODY_BYTES)),
                None,
            ),
            413,
            "too large",
        ),
        (
            "mattermost GET",
            request("GET", "/mattermost/commands", &[], ""),
            405,
            "method not allowed",
        ),
    ];
    for (case, req, status, contains) in cases {
        let resp = m.ingress.handle(req).await;
        assert_eq!(resp.status().as_u16(), status, "{case}: {}", resp.body());
        if contains.is_empty() {
            assert_eq!(resp.body(), "", "{case}");
        } else {
            assert!(resp.body().contains(contains), "{case}: {}", resp.body());
        }
        if status == 405 {
            assert_eq!(
                resp_header(&resp, "allow").as_deref(),
                Some("POST"),
                "{case}"
            );
        }
    }

    // Texts that are not `run`: an ephemeral answer, nothing queued (`help` queues only the
    // job list, checked below).
    for (text, says) in [
        ("", "*Usage*"),
        ("help", "$CHATOPS_JOB == $CI_JOB_NAME"),
        ("run", "not a valid command"),
        (
            "deploy production",
            "`deploy production` is not a valid command",
        ),
    ] {
        let resp = m.ingress.handle(slack(encode(&slack_fields(text)))).await;
        assert_eq!(resp.status(), 200, "{text:?}");
        let v = json_body(&resp);
        assert_eq!(v["response_type"], "ephemeral", "{text:?}");
        assert!(v["text"].as_str().unwrap().contains(says), "{text:?}: {v}");
        assert!(
            v["text"]
                .as_str()
                .unwrap()
                .contains("/chatops run &lt;job&gt;"),
            "{text:?}: {v}"
        );
        let resp = m.ingress.handle(mattermost(&mm_fields(text), None)).await;
        assert_eq!(json_body(&resp)["response_type"], "ephemeral", "{text:?}");
    }

    let queued = m.drain().await;
    assert!(
        queued
            .iter()
            .all(|r| r.kind == chatops_core::run::RequestKind::Help && r.job.is_empty()),
        "bad input must queue nothing: {queued:?}"
    );
    assert_eq!(
        queued.len(),
        4,
        "`` and `help`, on both platforms: the job list"
    );
    // The check above can see a message: a good request still lands.
    assert_eq!(m.ingress.handle(slack(good)).await.status(), 200);
    assert_eq!(m.drain().await.len(), 1);
}

#[tokio::test]
async fn queue_unreachable_is_a_200_ephemeral_try_again() {
    let sdk = support::aws_config().await;
    // A queue that does not exist, and an endpoint where nothing listens.
    let missing = format!(
        "{}/123456789012/{}",
        support::moto_endpoint(),
        support::unique_name("missing")
    );
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead_sdk = sdk
        .to_builder()
        .endpoint_url(format!("http://127.0.0.1:{closed_port}"))
        .build();
    for (case, queue) in [
        ("no such queue", SqsQueue::from_sdk_config(&sdk, &missing)),
        (
            "nothing listening",
            SqsQueue::from_sdk_config(&dead_sdk, &missing),
        ),
    ] {
        let ingress = Ingress::new(
            config(&missing).await,
            Arc::new(queue),
            Arc::new(ManualClock::at(NOW)),
        );
        let started = std::time::Instant::now();
        let resp = ingress
            .handle(slack(encode(&slack_fields("run deploy"))))
            .await;
        assert!(
            started.elapsed() < std::time::Duration::from_millis(2900),
            "{case}: {:?}",
            started.elapsed()
        );
        assert_eq!(resp.status(), 200, "{case}");
        let v = json_body(&resp);
        assert_eq!(v["response_type"], "ephemeral", "{case}");
        let text = v["text"].as_str().unwrap();
        assert!(
            text.contains("Could not schedule job `deploy`") && text.contains("try again"),
            "{case}: {text}"
        );
    }
}

#[tokio::test]
async fn an_unconfigured_platform_is_not_served() {
    let queue = Arc::new(MemoryQueue::new());
    let env = Env::from_pairs([
        ("SLACK_SIGNING_SECRET", SECRET),
        ("RUN_QUEUE_URL", "memory"),
    ]);
    let slack_only = Ingress::new(
        IngressConfig::from_env(&env, &NoSecrets).await.unwrap(),
        queue.clone(),
        Arc::new(ManualClock::at(NOW)),
    );
    let resp = slack_only
        .handle(mattermost(&mm_fields("run deploy"), None))
        .await;
    assert_eq!(resp.status(), 404);
    let env = Env::from_pairs([
        ("MATTERMOST_TOKEN", MM_TOKEN),
        ("RUN_QUEUE_URL", "memory"),
        ("MATTERMOST_URL", "https://mattermost.example.com"),
    ]);
    let mm_only = Ingress::new(
        IngressConfig::from_env(&env, &NoSecrets).await.unwrap(),
        queue.clone(),
        Arc::new(ManualClock::at(NOW)),
    );
    assert_eq!(
        mm_only
            .handle(slack(encode(&slack_fields("run deploy"))))
            .await
            .status(),
        404
    );
    assert!(queue.is_empty());
    assert_eq!(
        mm_only
            .handle(mattermost(&mm_fields("run deploy"), None))
            .await
            .status(),
        200
    );
    assert_eq!(queue.len(), 1);
    // Without MATTERMOST_ACTIONS_SECRET there are no Mattermost buttons, so nothing is
    // served where their clicks would go.
    let click = request(
        "POST",
        "/mattermost/interactions",
        &[("content-type", "application/json")],
        r#"{"user_id":"u1","channel_id":"c1","post_id":"p1","context":{"run":"r1"}}"#,
    );
    assert_eq!(mm_only.handle(click).await.status(), 404);
    assert_eq!(queue.len(), 1);
}

/// A Function URL event as Lambda delivers it (body base64-encoded), through lambda_http's
/// own deserialisation and `web::from_lambda`: the handler sees the bytes Slack signed.
#[tokio::test]
async fn base64_function_url_body_reaches_the_handler_byte_for_byte() {
    let event: Value = serde_json::from_slice(&repo_file("events/slack-command-run.json")).unwrap();
    assert_eq!(event["isBase64Encoded"], true);
    let sent = base64::engine::general_purpose::STANDARD
        .decode(event["body"].as_str().unwrap())
        .unwrap();
    let ts = event["headers"]["x-slack-request-timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    let sig = event["headers"]["x-slack-signature"]
        .as_str()
        .unwrap()
        .to_owned();

    let lambda_req: lambda_http::request::LambdaRequest = serde_json::from_value(event).unwrap();
    let req = chatops_adapters::lambda::from_lambda(lambda_http::Request::from(lambda_req));
    assert_eq!(req.body().as_ref(), sent.as_slice());
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(req.uri().path(), "/slack/commands");
    let secret = Secret::new("local-signing-secret");
    let now: u64 = ts.parse().unwrap();
    assert_eq!(verify(&secret, &ts, &sig, req.body(), now), Ok(()));

    let queue = Arc::new(MemoryQueue::new());
    let env = Env::from_pairs([
        ("SLACK_SIGNING_SECRET", "local-signing-secret"),
        ("RUN_QUEUE_URL", "memory"),
    ]);
    let ingress = Ingress::new(
        IngressConfig::from_env(&env, &NoSecrets).await.unwrap(),
        queue.clone(),
        Arc::new(ManualClock::at(now)),
    );
    let resp = ingress.handle(req).await;
    assert_eq!(resp.status(), 200, "{}", resp.body());
    let bodies = queue.drain();
    assert_eq!(bodies.len(), 1);
    let r: RunRequest = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(
        (r.job.as_str(), r.input.as_str()),
        ("deploy", "production\nregion=eu-west-1")
    );

    // The response converts back for lambda_http unchanged.
    let out = chatops_adapters::lambda::to_lambda(resp);
    assert_eq!(out.status(), 200);
}

/// The plain-text Mattermost sample event goes through the same path.
#[tokio::test]
async fn mattermost_sample_event_is_accepted() {
    let event: Value =
        serde_json::from_slice(&repo_file("events/mattermost-command-run.json")).unwrap();
    let lambda_req: lambda_http::request::LambdaRequest = serde_json::from_value(event).unwrap();
    let req = chatops_adapters::lambda::from_lambda(lambda_http::Request::from(lambda_req));
    let queue = Arc::new(MemoryQueue::new());
    let env = Env::from_pairs([
        ("MATTERMOST_TOKEN", "local-mattermost-token"),
        ("RUN_QUEUE_URL", "memory"),
        ("MATTERMOST_URL", "https://mattermost.example.com/"),
    ]);
    let ingress = Ingress::new(
        IngressConfig::from_env(&env, &NoSecrets).await.unwrap(),
        queue.clone(),
        Arc::new(ManualClock::at(NOW)),
    );
    let resp = ingress.handle(req).await;
    assert_eq!(resp.status(), 200, "{}", resp.body());
    assert_eq!(queue.len(), 1);
}

/// The sample SQS event carries a RunRequest the dispatcher can read.
#[test]
fn sqs_sample_event_holds_a_run_request() {
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_slice(&repo_file("events/sqs-run-request.json")).unwrap();
    let body = event.records[0].body.as_deref().unwrap();
    let r: RunRequest = serde_json::from_str(body).unwrap();
    assert_eq!(r.version, RUN_REQUEST_VERSION);
    assert_eq!(r.job, "deploy");
}
