//! Slack request signing (`v0`): `X-Slack-Signature` is `v0=` + hex HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` keyed with the app's signing secret. We check
//! it over the raw bytes, before anything parses the body, and refuse timestamps more than
//! 300 s away from our clock in either direction (replays).

use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far (seconds, either direction) a request timestamp may be from our clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// The header names Slack uses.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub const SIGNATURE_HEADER: &str = "x-slack-signature";

/// Why a request failed verification. Only for logs and tests: the caller answers 401 with
/// no detail whatever the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no signing secret configured")]
    NoSecret,
    #[error("timestamp is not a unix time")]
    BadTimestamp,
    #[error("timestamp outside the {MAX_SKEW_SECS} s window")]
    Stale,
    #[error("signature is not of the form v0=<64 lowercase hex digits>")]
    BadSignatureFormat,
    #[error("signature does not match")]
    Mismatch,
}

fn mac_for(secret: &Secret, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// The `X-Slack-Signature` value Slack would send for this timestamp and body.
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(mac_for(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Parse a decimal unix timestamp strictly (ASCII digits only, no sign, no spaces).
fn parse_timestamp(timestamp: &str) -> Option<u64> {
    if timestamp.is_empty()
        || timestamp.len() > 19
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    timestamp.parse().ok()
}

/// Lowercase hex only: Slack sends lowercase, and accepting one canonical spelling keeps a
/// signature a single exact string.
fn decode_signature(signature: &str) -> Option<[u8; 32]> {
    let hex_part = signature.strip_prefix("v0=")?;
    if hex_part.len() != 64
        || !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// Check a Slack request: `timestamp` and `signature` are the header values, `body` the raw
/// bytes as received, `now` our clock in unix seconds.
pub fn verify(
    secret: &Secret,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: u64,
) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let ts = parse_timestamp(timestamp).ok_or(VerifyError::BadTimestamp)?;
    if ts.abs_diff(now) > MAX_SKEW_SECS {
        return Err(VerifyError::Stale);
    }
    let presented = decode_signature(signature).ok_or(VerifyError::BadSignatureFormat)?;
    // `verify_slice` compares in constant time.
    mac_for(secret, timestamp, body)
        .verify_slice(&presented)
        .map_err(|_| VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn sign_reproduces_slacks_example() {
        assert_eq!(sign(&Secret::new(SECRET), TS, BODY.as_bytes()), SIG);
    }

    #[test]
    fn window_is_300_seconds_both_ways() {
        let s = Secret::new(SECRET);
        let ts: u64 = TS.parse().unwrap();
        for now in [ts - 300, ts, ts + 300] {
            assert_eq!(
                verify(&s, TS, SIG, BODY.as_bytes(), now),
                Ok(()),
                "now={now}"
            );
        }
        for now in [ts - 301, ts + 301, 0, u64::MAX] {
            assert_eq!(
                verify(&s, TS, SIG, BODY.as_bytes(), now),
                Err(VerifyError::Stale),
                "now={now}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let s = Secret::new(SECRET);
        let now: u64 = TS.parse().unwrap();
        let b = BODY.as_bytes();
        for ts in [
            "",
            " 1531420618",
            "+1531420618",
            "1531420618.0",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(
                verify(&s, ts, SIG, b, now),
                Err(VerifyError::BadTimestamp),
                "{ts:?}"
            );
        }
        let upper = format!("v0={}", SIG[3..].to_uppercase());
        let v1 = SIG.replacen("v0=", "v1=", 1);
        for sig in ["", "v0=", &SIG[3..], &upper, &v1, &SIG[..SIG.len() - 2]] {
            assert_eq!(
                verify(&s, TS, sig, b, now),
                Err(VerifyError::BadSignatureFormat),
                "{sig:?}"
            );
        }
        assert_eq!(
            verify(&Secret::new(""), TS, SIG, b, now),
            Err(VerifyError::NoSecret)
        );
        assert_eq!(
            verify(&Secret::new("other"), TS, SIG, b, now),
            Err(VerifyError::Mismatch)
        );
    }
}
