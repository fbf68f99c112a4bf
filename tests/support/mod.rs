//! Shared test support: a moto server (SQS, DynamoDB, SSM) on a free port, started once per
//! test process, or reused from `CHATOPS_TEST_MOTO_URL` when the Makefile started one.
//! `moto[server]` is installed into the project's `target/tools/moto` virtualenv when missing. The server is killed when the test
//! process exits (a watchdog shell follows the parent pid), so nothing is left behind.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static MOTO: OnceLock<String> = OnceLock::new();

/// The endpoint of a running moto server (e.g. `http://127.0.0.1:41234`).
pub fn moto_endpoint() -> String {
    MOTO.get_or_init(|| {
        if let Ok(url) = std::env::var("CHATOPS_TEST_MOTO_URL") {
            if !url.is_empty() {
                wait_ready(&url);
                return url;
            }
        }
        start_moto()
    })
    .clone()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// The project-local virtualenv moto runs from (`make test-tools` creates the same one);
/// nothing is installed globally, so PEP 668 machines work.
fn moto_python() -> String {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/moto");
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import moto.server, flask, flask_cors"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed to run moto");
        assert!(
            status.success(),
            "python3 -m venv {} failed",
            venv.display()
        );
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "moto[server]>=5.1"])
            .status()
            .expect("the moto virtualenv's python runs");
        assert!(status.success(), "pip install 'moto[server]' failed");
    }
    python.display().to_string()
}

fn start_moto() -> String {
    let python = moto_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/moto_server.py");
    let port = free_port();
    let parent = std::process::id();
    // The watchdog ends moto when this test process is gone.
    let script = format!(
        "'{python}' '{script}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; \
         kill $m 2>/dev/null"
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("could not start moto server");
    // Reap the watchdog when it ends so it never lingers as a zombie.
    std::thread::spawn(move || {
        let _ = watchdog.wait();
    });
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url);
    url
}

fn wait_ready(url: &str) {
    let addr = url.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET /moto-api/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = [0u8; 16];
                if let Ok(n) = s.read(&mut buf) {
                    if buf[..n].starts_with(b"HTTP/1.") {
                        return;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto server at {url} did not become ready within 60 s");
}

/// AWS SDK config pointed at moto with dummy credentials.
pub async fn aws_config() -> aws_config::SdkConfig {
    let endpoint = moto_endpoint();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

/// A name no other test uses (tests share one moto server).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A run request as the ingress would queue it for alice in #ops (team T1, channel C1).
pub fn run_request(
    id: &str,
    job: &str,
    input: &str,
    response_url: &str,
    received_at: u64,
) -> chatops_core::run::RunRequest {
    use chatops_core::ids::{ChannelId, ChatUserId, RequestId, TeamId};
    chatops_core::run::RunRequest {
        version: chatops_core::run::RUN_REQUEST_VERSION,
        kind: chatops_core::run::RequestKind::Run,
        request_id: RequestId::new(id),
        platform: chatops_core::run::Platform::Slack,
        team_id: TeamId::new("T1"),
        team_domain: None,
        channel_id: ChannelId::new("C1"),
        channel_name: "ops".into(),
        user_id: ChatUserId::new("U1"),
        user_name: "alice".into(),
        command: "/chatops".into(),
        job: job.into(),
        input: input.into(),
        response_url: response_url.into(),
        received_at,
        public_base: None,
    }
}

/// The chat user most tests run as: `T1/U1`, linked to the GitLab user `alice`.
pub fn alice_link() -> chatops_core::run::UserLink {
    chatops_core::run::UserLink {
        team_id: chatops_core::ids::TeamId::new("T1"),
        chat_user_id: chatops_core::ids::ChatUserId::new("U1"),
        gitlab_username: "alice".into(),
        gitlab_user_id: None,
        linked_at: 1,
        platform: None,
        grant: None,
    }
}

/// A dispatcher configuration for `group/proj` on a GitLab stand-in, replies through a
/// Slack stand-in with a bot token.
pub fn dispatcher_config(
    gitlab_url: String,
    gitlab_token: &str,
    runs_table: String,
    slack_api_url: String,
    bot_token: &str,
) -> chatops_core::dispatcher::DispatcherConfig {
    use chatops_core::secret::Secret;
    chatops_core::dispatcher::DispatcherConfig {
        audit: Default::default(),
        gitlab_url,
        gitlab_token: Secret::new(gitlab_token),
        oauth: None,
        project: chatops_core::ids::ProjectRef::new("group/proj"),
        channel_projects: Default::default(),
        runs_table,
        chat: chatops_core::delivery::ChatSettings {
            slack_bot_token: Some(Secret::new(bot_token)),
            slack_api_url,
            ..Default::default()
        },
        first_check_secs: 300,
    }
}

/// Everything this test process logs from now on (every level the product's functions log
/// at in production, and debug for our crates), for tests that check what never appears in
/// a log line. One per process (nextest runs each test in its own).
pub fn capture_logs() -> CapturedLogs {
    use std::sync::{Arc, Mutex};
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,chatops=debug,chatops_core=debug,chatops_adapters=debug",
        ))
        .with_ansi(false)
        .with_writer(move || LogWriter(sink.clone()))
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("one log capture per process");
    CapturedLogs(buf)
}

pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().map(|b| b.clone()).unwrap_or_default()).into_owned()
    }
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(data);
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A new SQS queue in moto whose messages come back after `visibility_secs`; its URL.
pub async fn new_queue(sdk: &aws_config::SdkConfig, prefix: &str, visibility_secs: u32) -> String {
    aws_sdk_sqs::Client::new(sdk)
        .create_queue()
        .queue_name(unique_name(prefix))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            visibility_secs.to_string(),
        )
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

/// A new runs table in moto, built as the product builds it; its name.
pub async fn new_runs_table(sdk: &aws_config::SdkConfig, prefix: &str) -> String {
    let table = unique_name(prefix);
    chatops_adapters::dynamo::DynamoStore::create_table(
        &aws_sdk_dynamodb::Client::new(sdk),
        &table,
    )
    .await
    .expect("create table");
    table
}

/// A new symmetric KMS key in moto (what the template's `TokenKey` is); its ARN.
pub async fn new_kms_key(sdk: &aws_config::SdkConfig) -> String {
    chatops_adapters::aws::kms(sdk)
        .create_key()
        .description(unique_name("chatops-tokens"))
        .send()
        .await
        .expect("create KMS key")
        .key_metadata
        .and_then(|m| m.arn)
        .expect("a key ARN")
}
