//! Ingress benchmarks (`cargo bench --bench ingress`).
//!
//! - `ingress_handler/*`: latency of `Ingress::handle` on a signed Slack request (with an
//!   in-memory queue, so the figure is ours: verification, parsing, the answer).
//!
//! Cold starts (all three functions against their floors) are `tests/benches/coldstart.rs`
//! (`make bench-coldstart`).

use bytes::Bytes;
use chatops_core::config::{Env, NoSecrets};
use chatops_core::ingress::{Ingress, IngressConfig};
use chatops_core::queue::MemoryQueue;
use chatops_core::secret::Secret;
use chatops_core::slack::verify::{sign, verify};
use chatops_sim::ManualClock;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::Arc;

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

criterion_group!(benches, handler_latency);
criterion_main!(benches);
