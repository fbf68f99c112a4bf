//! Fuzz target: GitLab webhook bodies through `completion::parse_webhook(event, body)`, for
//! the two events we handle (`Pipeline Hook`, `Job Hook`) and any other `X-Gitlab-Event`.
//!
//! Input: `<X-Gitlab-Event>\n<raw body>`. Every body is also parsed as both handled events,
//! so a mutated name never hides the body from them. Seeds are GitLab's documented payloads
//! and the sample hooks of `events/` (see ../README.md).
//!
//! Checked:
//! - nothing panics, whatever the bytes;
//! - an event we do not handle is `Ok(None)` without looking at the body;
//! - a handled event is a value of its own kind, or `Malformed` naming the event;
//! - what is parsed is what the JSON says (ids, `object_kind`, names), and each build of a
//!   pipeline hook is one of its `builds`;
//! - the result is a function of the input (same result twice).
#![no_main]

use chatops_core::completion::{parse_webhook, WebhookError, WebhookEvent};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn u64_at(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

fn check(event: &str, body: &[u8]) {
    let got = parse_webhook(event, body);
    assert_eq!(got, parse_webhook(event, body), "not deterministic");
    // serde skips ignored fields without checking their UTF-8, so a body with invalid UTF-8
    // in a field we do not read is accepted (harmless); the oracle reads it lossily.
    let json: Option<Value> = serde_json::from_slice(body)
        .or_else(|_| serde_json::from_str(&String::from_utf8_lossy(body)))
        .ok();
    match (event, got) {
        ("Pipeline Hook", Ok(Some(WebhookEvent::Pipeline(p)))) => {
            let v = json.expect("accepted a body that is not JSON");
            assert_eq!(v["object_kind"], "pipeline");
            assert_eq!(u64_at(&v, "/object_attributes/id"), Some(p.pipeline_id.0));
            assert_eq!(p.project_id.map(|id| id.0), u64_at(&v, "/project/id"));
            let builds = v["builds"].as_array().map_or(&[][..], Vec::as_slice);
            assert_eq!(builds.len(), p.builds.len());
            for (b, w) in p.builds.iter().zip(builds) {
                assert_eq!(u64_at(w, "/id"), Some(b.id.0));
                assert_eq!(w["name"].as_str(), Some(b.name.as_str()));
            }
            assert_eq!(
                WebhookEvent::Pipeline(p.clone()).pipeline_id(),
                p.pipeline_id
            );
        }
        ("Job Hook", Ok(Some(WebhookEvent::Job(j)))) => {
            let v = json.expect("accepted a body that is not JSON");
            assert_eq!(v["object_kind"], "build");
            assert_eq!(u64_at(&v, "/build_id"), Some(j.job_id.0));
            assert_eq!(u64_at(&v, "/pipeline_id"), Some(j.pipeline_id.0));
            assert_eq!(u64_at(&v, "/project_id"), Some(j.project_id.0));
            assert_eq!(v["build_name"].as_str(), Some(j.job_name.as_str()));
            let e = WebhookEvent::Job(j.clone());
            assert_eq!(e.project_id(), Some(j.project_id));
        }
        ("Pipeline Hook" | "Job Hook", Ok(other)) => {
            panic!("{event} gave {other:?}")
        }
        ("Pipeline Hook" | "Job Hook", Err(WebhookError::Malformed { event: e, .. })) => {
            assert_eq!(e, event, "the error names another event");
        }
        (_, got) => assert_eq!(got, Ok(None), "event {event:?} is not ours"),
    }
}

fuzz_target!(|data: &[u8]| {
    let (event, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    };
    check(&event, body);
    check("Pipeline Hook", body);
    check("Job Hook", body);
    check("Pipeline Hook", data);
    check("Job Hook", data);
});
