//! Fuzz target: Mattermost's slash-command request — its `Authorization` header and the raw
//! form body — through `mattermost::incoming::parse_and_check`.
//!
//! Input: `<Authorization header>\n<raw body>`; an empty first line means no header. Seeds
//! are the sample Mattermost command of `events/` (see ../README.md).
//!
//! Checked:
//! - nothing panics, whatever the bytes;
//! - a command is accepted only with our token, in the form's single `token` field or as
//!   `Authorization: Token <token>`; with neither it is always `Unauthorized`, whatever else
//!   is wrong with the body (an unauthenticated sender learns nothing);
//! - with the right header it is never `Unauthorized`;
//! - an accepted command has its five required fields non-blank and equal to the form's;
//! - a second, different token never accepts what the first one did not authenticate.
#![no_main]

use chatops_core::mattermost::incoming::{parse_and_check, token_matches, IncomingError};
use chatops_core::secret::Secret;
use libfuzzer_sys::fuzz_target;

/// The sample token of `events/mattermost-command-run.json` and `infra/watch.env`.
const TOKEN: &str = "local-mattermost-token";

/// The header as the product reads it: `Token <value>`, any case, spaces trimmed.
fn header_is_ours(authorization: Option<&str>, token: &str) -> bool {
    authorization
        .and_then(|h| h.trim().split_once(' '))
        .is_some_and(|(scheme, v)| scheme.eq_ignore_ascii_case("token") && v.trim() == token)
}

fn field(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

fn check(body: &[u8], authorization: Option<&str>, token: &str) {
    let secret = Secret::new(token);
    let got = parse_and_check(body, authorization, &secret);
    let pairs: Option<Vec<(String, String)>> = serde_urlencoded::from_bytes(body).ok();
    let by_header = header_is_ours(authorization, token);
    let by_form = pairs
        .as_ref()
        .is_some_and(|p| field(p, "token") == [token.to_owned()]);
    assert_eq!(
        token_matches(
            &secret,
            pairs
                .as_ref()
                .and_then(|p| field(p, "token").pop())
                .as_deref(),
            authorization
        ),
        by_header
            || pairs
                .as_ref()
                .and_then(|p| field(p, "token").pop())
                .is_some_and(|t| t == token),
        "token_matches disagrees"
    );
    match &got {
        Ok(c) => {
            assert!(by_header || by_form, "accepted without our token");
            let pairs = pairs.expect("accepted a body that is not a form");
            for (name, value) in [
                ("team_id", &c.team_id),
                ("channel_id", &c.channel_id),
                ("user_id", &c.user_id),
                ("command", &c.command),
                ("response_url", &c.response_url),
            ] {
                assert!(!value.trim().is_empty(), "{name} is blank");
                assert_eq!(field(&pairs, name), [value.clone()], "{name}");
            }
        }
        Err(IncomingError::Unauthorized) => {
            assert!(!by_header, "our header was refused as unauthorized");
        }
        Err(IncomingError::Malformed(_) | IncomingError::Missing(_)) => {
            // Only an authenticated sender is told what is wrong with the body.
            assert!(by_header || by_form, "told an unauthenticated sender why");
        }
    }
    if !by_header && !by_form {
        assert_eq!(got, Err(IncomingError::Unauthorized));
    }
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let head = String::from_utf8_lossy(head);
    let authorization = (!head.is_empty()).then_some(head.as_ref());
    check(body, authorization, TOKEN);
    check(body, None, TOKEN);
    // Another deployment's token: what ours authenticated must not pass there.
    check(body, authorization, "another-token");
    check(data, None, TOKEN);
});
