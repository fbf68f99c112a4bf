//! Ingress benchmarks (`cargo bench --bench ingress`).
//!
//! - `ingress_handler/*`: latency of `Ingress::handle` on a signed Slack request (with an
//!   in-memory queue, so the figure is ours: verification, parsing, the answer).
//! - `cold_start/*`: process start → first response of the release `ingress` binary and of
//!   the floor (`ingress-floor`: a lambda_http function that only sends the raw body to SQS
//!   with the same SDK), each under a local Lambda Runtime API with the SQS send going to
//!   moto. Then a side-by-side interleaved run prints both medians and the ratio; the goal is
//!   ingress ≤ 1.25 × floor. `CHATOPS_COLDSTART_RUNS` sets the side-by-side count (default 40).

#[path = "lambda_runtime_api.rs"]
mod runtime_api;
#[path = "../support/mod.rs"]
mod support;

use bytes::Bytes;
use chatops_core::config::{Env, NoSecrets};
use chatops_core::ingress::{Ingress, IngressConfig};
use chatops_core::queue::MemoryQueue;
use chatops_core::secret::Secret;
use chatops_core::slack::verify::{sign, verify};
use chatops_sim::ManualClock;
use criterion::{criterion_group, criterion_main, Criterion};
use runtime_api::{function_url_event, lambda_env, OutcomeKind, RuntimeApi};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "bench-signing-secret";
const NOW: u64 = 1_767_225_600;

fn slack_body(text: &str) -> String {
    serde_urlencoded::to_string([
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "T0001"),
        ("team_domain", "example"),
        ("channel_id", "C2147483705"),
        ("channel_name", "test"),
        ("user_id", "U2147483697"),
        ("user_name", "Steve"),
        ("command", "/chatops"),
        ("text", text),
        ("api_app_id", "A123456"),
        (
            "response_url",
            "https://hooks.slack.com/commands/T0001/5678/abcDEF",
        ),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
    ])
    .unwrap()
}

fn signed(body: &Bytes, ts: u64, signature: &str) -> chatops_core::web::HttpRequest {
    http::Request::builder()
        .method("POST")
        .uri("/slack/commands")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", signature)
        .body(body.clone())
        .unwrap()
}

fn handler_latency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let queue = Arc::new(MemoryQueue::new());
    let env = Env::from_pairs([
        ("SLACK_SIGNING_SECRET", SECRET),
        ("RUN_QUEUE_URL", "memory"),
    ]);
    let config = rt
        .block_on(IngressConfig::from_env(&env, &NoSecrets))
        .unwrap();
    let ingress = Ingress::new(config, queue.clone(), Arc::new(ManualClock::at(NOW)));
    let body = Bytes::from(slack_body("run deploy production\nregion=eu-west-1"));
    let sig = sign(&Secret::new(SECRET), &NOW.to_string(), &body);
    let bad_sig = sign(&Secret::new("wrong"), &NOW.to_string(), &body);
    let help = Bytes::from(slack_body("help"));
    let help_sig = sign(&Secret::new(SECRET), &NOW.to_string(), &help);

    // Sanity: the measured paths do what they say.
    let resp = rt.block_on(ingress.handle(signed(&body, NOW, &sig)));
    assert_eq!(resp.status(), 200);
    assert_eq!(queue.drain().len(), 1);
    assert_eq!(
        rt.block_on(ingress.handle(signed(&body, NOW, &bad_sig)))
            .status(),
        401
    );

    let mut g = c.benchmark_group("ingress_handler");
    g.bench_function("slack_run_queued", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = ingress.handle(signed(&body, NOW, &sig)).await;
            queue.drain();
            black_box(resp)
        })
    });
    g.bench_function("slack_help", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(ingress.handle(signed(&help, NOW, &help_sig)).await) })
    });
    g.bench_function("slack_bad_signature_401", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(ingress.handle(signed(&body, NOW, &bad_sig)).await) })
    });
    g.bench_function("verify_only", |b| {
        let secret = Secret::new(SECRET);
        let ts = NOW.to_string();
        b.iter(|| black_box(verify(&secret, &ts, &sig, &body, NOW)))
    });
    g.finish();
}

struct ColdStart {
    rt: tokio::runtime::Runtime,
    moto: String,
    queue_url: String,
}

impl ColdStart {
    fn setup() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let moto = support::moto_endpoint();
        let queue_url = rt.block_on(async {
            let sdk = support::aws_config().await;
            aws_sdk_sqs::Client::new(&sdk)
                .create_queue()
                .queue_name(support::unique_name("coldstart"))
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap()
        });
        Self {
            rt,
            moto,
            queue_url,
        }
    }

    /// Start `bin` as Lambda would, hand it one signed Slack command, and time process start
    /// → its response arriving at the Runtime API.
    fn run_once(&self, bin: &Path) -> Duration {
        self.rt.block_on(async {
            let api = RuntimeApi::start().await;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                .to_string();
            let body = slack_body("run deploy production");
            let sig = sign(&Secret::new(SECRET), &now, body.as_bytes());
            let headers = [
                ("x-slack-request-timestamp", now.as_str()),
                ("x-slack-signature", sig.as_str()),
            ];
            api.invoke(
                "cold",
                function_url_event("/slack/commands", &headers, body.as_bytes()),
            );
            let started = Instant::now();
            let mut child = Command::new(bin)
                .env_clear()
                .envs(lambda_env(&api.endpoint(), "chatops-ingress"))
                .env("AWS_ENDPOINT_URL", &self.moto)
                .env("RUN_QUEUE_URL", &self.queue_url)
                .env("SLACK_SIGNING_SECRET", SECRET)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let outcome = api.outcome(Duration::from_secs(30)).await;
            let _ = child.kill();
            let _ = child.wait();
            let outcome = outcome.unwrap_or_else(|| panic!("{} did not answer", bin.display()));
            assert_eq!(outcome.kind, OutcomeKind::Response, "{}", bin.display());
            assert_eq!(outcome.json()["statusCode"], 200, "{}", bin.display());
            outcome.at - started
        })
    }

    fn purge(&self) {
        self.rt.block_on(async {
            let sdk = support::aws_config().await;
            let _ = aws_sdk_sqs::Client::new(&sdk)
                .purge_queue()
                .queue_url(&self.queue_url)
                .send()
                .await;
        });
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn release_binaries() -> (PathBuf, PathBuf) {
    let dir = runtime_api::cargo_build(
        "release",
        &[
            "-p",
            "ingress",
            "-p",
            "chatops",
            "--bin",
            "ingress",
            "--bin",
            "ingress-floor",
        ],
    );
    (dir.join("ingress"), dir.join("ingress-floor"))
}

/// Criterion's name filter (`cargo bench --bench ingress -- <filter>`) does not reach code
/// outside `bench_function`: skip the release build and the side-by-side run when a filter
/// is given that cannot match the cold-start benches.
fn cold_start_selected() -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters.iter().any(|f| {
            ["cold_start/floor", "cold_start/ingress"]
                .iter()
                .any(|n| n.contains(f.as_str()))
        })
}

fn cold_start(c: &mut Criterion) {
    if !cold_start_selected() {
        return;
    }
    let (ingress, floor) = release_binaries();
    let cs = ColdStart::setup();
    // Warm the page cache and moto before measuring.
    for _ in 0..3 {
        cs.run_once(&floor);
        cs.run_once(&ingress);
    }

    let mut g = c.benchmark_group("cold_start");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    for (name, bin) in [("floor", &floor), ("ingress", &ingress)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| cs.run_once(bin)).sum())
        });
        cs.purge();
    }
    g.finish();

    // Side by side, interleaved so that drift (moto, page cache, CPU) hits both alike.
    let runs: usize = std::env::var("CHATOPS_COLDSTART_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let (mut f, mut i) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for k in 0..runs {
        if k % 2 == 0 {
            f.push(cs.run_once(&floor));
            i.push(cs.run_once(&ingress));
        } else {
            i.push(cs.run_once(&ingress));
            f.push(cs.run_once(&floor));
        }
    }
    cs.purge();
    let (mf, mi) = (median(&mut f), median(&mut i));
    let p90 = |v: &[Duration]| v[(v.len() * 9 / 10).min(v.len() - 1)];
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!();
    println!("cold start, process start -> first response (SQS send to moto), {runs} runs each, interleaved:");
    println!(
        "  floor   median {:7.2} ms  p90 {:7.2} ms  binary {:>9} bytes",
        ms(mf),
        ms(p90(&f)),
        size(&floor)
    );
    println!(
        "  ingress median {:7.2} ms  p90 {:7.2} ms  binary {:>9} bytes",
        ms(mi),
        ms(p90(&i)),
        size(&ingress)
    );
    let ratio = mi.as_secs_f64() / mf.as_secs_f64();
    println!(
        "  ratio ingress/floor {ratio:.3} (goal <= 1.25): {}",
        if ratio <= 1.25 { "met" } else { "NOT met" }
    );
    println!();
}

criterion_group!(benches, handler_latency, cold_start);
criterion_main!(benches);
