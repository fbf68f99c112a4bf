//! Fuzz target: Slack's slash-command request as the ingress receives it — the two signing
//! headers and the raw form body — through the signature check (`slack::verify`) and the
//! form parser (`slack::slash`).
//!
//! Input: `<X-Slack-Request-Timestamp>\n<X-Slack-Signature>\n<raw body>` (the headers as
//! lossy UTF-8, as `web::header` would hand them over; the body as raw bytes). Seeds are
//! Slack's documented payloads (see ../README.md).
//!
//! Checked:
//! - nothing panics, whatever the bytes;
//! - `verify` accepts only when the signature is exactly `sign(secret, ts, body)` and the
//!   timestamp is a plain decimal within 300 s of the clock; a signature we make ourselves
//!   always verifies; one flipped body byte, or another secret, never does;
//! - `parse` is a function of the body (same result twice); a parsed command has its five
//!   required fields non-blank and equal to the form's own (decoded) values;
//!   `ssl_check=1` is the SSL probe.
#![no_main]

use chatops_core::secret::Secret;
use chatops_core::slack::slash::{self, SlashError, SlashRequest};
use chatops_core::slack::verify::{self, VerifyError, MAX_SKEW_SECS};
use libfuzzer_sys::fuzz_target;

/// Slack's documentation placeholder secret (tests/fixtures/slack/signature_example.json).
const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// The example's timestamp: the clock when the presented one is not a number.
const DOC_NOW: u64 = 1_531_420_618;

fn split_input(data: &[u8]) -> (String, String, &[u8]) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let ts = parts.next().unwrap_or_default();
    let sig = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    (
        String::from_utf8_lossy(ts).into_owned(),
        String::from_utf8_lossy(sig).into_owned(),
        body,
    )
}

/// The timestamp as the product must read it: ASCII digits only, at most 19 of them.
fn strict_timestamp(ts: &str) -> Option<u64> {
    if ts.is_empty() || ts.len() > 19 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ts.parse().ok()
}

fn check_verify(secret: &Secret, ts: &str, sig: &str, body: &[u8]) {
    let expected = verify::sign(secret, ts, body);
    let strict = strict_timestamp(ts);
    // Two clocks: the timestamp's own (fresh) and the documentation's (mostly stale).
    for now in [strict.unwrap_or(DOC_NOW), DOC_NOW] {
        let got = verify::verify(secret, ts, sig, body, now);
        if got.is_ok() {
            assert_eq!(sig, expected, "accepted a signature that does not match");
            let t = strict.expect("accepted a timestamp that is not a plain number");
            assert!(
                t.abs_diff(now) <= MAX_SKEW_SECS,
                "accepted a stale timestamp"
            );
        }
        match strict {
            None => assert_eq!(got, Err(VerifyError::BadTimestamp), "{ts:?}"),
            Some(t) if t.abs_diff(now) > MAX_SKEW_SECS => {
                assert_eq!(got, Err(VerifyError::Stale))
            }
            Some(_) if sig == expected => assert_eq!(got, Ok(()), "our own signature refused"),
            Some(_) => assert!(got.is_err(), "accepted {sig:?}"),
        }
        if let Some(t) = strict.filter(|t| t.abs_diff(now) <= MAX_SKEW_SECS) {
            let _ = t;
            // Our own signature verifies; it never verifies for a changed body or secret.
            assert_eq!(verify::verify(secret, ts, &expected, body, now), Ok(()));
            let mut tampered = body.to_vec();
            match tampered.first_mut() {
                Some(b) => *b ^= 0x01,
                None => tampered.push(b'x'),
            }
            assert_eq!(
                verify::verify(secret, ts, &expected, &tampered, now),
                Err(VerifyError::Mismatch)
            );
            let other = Secret::new(format!("{SECRET}-other"));
            assert_eq!(
                verify::verify(&other, ts, &expected, body, now),
                Err(VerifyError::Mismatch)
            );
        }
    }
    assert_eq!(
        verify::verify(&Secret::new(""), ts, sig, body, DOC_NOW),
        Err(VerifyError::NoSecret)
    );
}

fn single(pairs: &[(String, String)], key: &str) -> Option<String> {
    let mut it = pairs.iter().filter(|(k, _)| k == key);
    let first = it.next()?.1.clone();
    assert!(it.next().is_none(), "a duplicated {key} was accepted");
    Some(first)
}

fn check_parse(body: &[u8]) {
    let got = slash::parse(body);
    assert_eq!(got, slash::parse(body), "parse is not deterministic");
    let pairs: Option<Vec<(String, String)>> = serde_urlencoded::from_bytes(body).ok();
    match got {
        Ok(SlashRequest::SslCheck) => {
            let pairs = pairs.expect("accepted a body that is not a form");
            assert_eq!(single(&pairs, "ssl_check").as_deref(), Some("1"));
        }
        Ok(SlashRequest::Command(c)) => {
            let pairs = pairs.expect("accepted a body that is not a form");
            for (name, value) in [
                ("team_id", &c.team_id),
                ("channel_id", &c.channel_id),
                ("user_id", &c.user_id),
                ("command", &c.command),
                ("response_url", &c.response_url),
            ] {
                assert!(!value.trim().is_empty(), "{name} is blank");
                assert_eq!(single(&pairs, name).as_ref(), Some(value), "{name}");
            }
            assert_eq!(single(&pairs, "text").unwrap_or_default(), c.text);
            assert_ne!(single(&pairs, "ssl_check").as_deref(), Some("1"));
        }
        Err(SlashError::Missing(name)) => {
            // A named field is really missing or blank.
            if let Some(pairs) = pairs {
                let v = single(&pairs, name);
                assert!(v.is_none_or(|v| v.trim().is_empty()), "{name} was there");
            }
        }
        Err(SlashError::Malformed(_)) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let (ts, sig, body) = split_input(data);
    check_verify(&Secret::new(SECRET), &ts, &sig, body);
    check_parse(body);
    // The whole input as a body, too: forms with newlines and no headers.
    check_parse(data);
});
