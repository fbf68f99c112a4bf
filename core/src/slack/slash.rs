//! Slack slash-command payloads: the `application/x-www-form-urlencoded` body Slack POSTs
//! when someone types `/chatops …`, parsed (after the signature check) into our own type.
//! Slack's `ssl_check=1` probe is its own variant: it carries none of the command fields.

use serde::Deserialize;

/// The form exactly as sent; every field optional so that a missing one is reported by name.
/// A field given twice is a malformed form (serde refuses duplicates).
#[derive(Debug, Default, Deserialize)]
struct RawForm {
    ssl_check: Option<String>,
    team_id: Option<String>,
    team_domain: Option<String>,
    enterprise_id: Option<String>,
    enterprise_name: Option<String>,
    channel_id: Option<String>,
    channel_name: Option<String>,
    user_id: Option<String>,
    user_name: Option<String>,
    command: Option<String>,
    text: Option<String>,
    response_url: Option<String>,
    trigger_id: Option<String>,
    api_app_id: Option<String>,
    // `token` (the deprecated verification token) is deliberately not kept.
}

/// One slash command as Slack sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlashCommand {
    pub team_id: String,
    pub team_domain: String,
    pub enterprise_id: Option<String>,
    pub enterprise_name: Option<String>,
    pub channel_id: String,
    pub channel_name: String,
    pub user_id: String,
    pub user_name: String,
    /// The command as typed, e.g. `/chatops`.
    pub command: String,
    pub text: String,
    pub response_url: String,
    /// Unique per invocation (empty only from senders that are not Slack).
    pub trigger_id: String,
    pub api_app_id: Option<String>,
}

/// What a signed POST to the commands endpoint can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlashRequest {
    /// Slack checking our certificate (`ssl_check=1`): answer 200, do nothing.
    SslCheck,
    Command(Box<SlashCommand>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlashError {
    #[error("malformed form body: {0}")]
    Malformed(String),
    #[error("missing field {0}")]
    Missing(&'static str),
}

fn required(v: Option<String>, name: &'static str) -> Result<String, SlashError> {
    v.filter(|s| !s.trim().is_empty())
        .ok_or(SlashError::Missing(name))
}

/// Parse a slash-command form body.
pub fn parse(body: &[u8]) -> Result<SlashRequest, SlashError> {
    let raw: RawForm =
        serde_urlencoded::from_bytes(body).map_err(|e| SlashError::Malformed(e.to_string()))?;
    if raw.ssl_check.as_deref() == Some("1") {
        return Ok(SlashRequest::SslCheck);
    }
    Ok(SlashRequest::Command(Box::new(SlashCommand {
        team_id: required(raw.team_id, "team_id")?,
        channel_id: required(raw.channel_id, "channel_id")?,
        user_id: required(raw.user_id, "user_id")?,
        command: required(raw.command, "command")?,
        response_url: required(raw.response_url, "response_url")?,
        team_domain: raw.team_domain.unwrap_or_default(),
        enterprise_id: raw.enterprise_id.filter(|s| !s.is_empty()),
        enterprise_name: raw.enterprise_name.filter(|s| !s.is_empty()),
        channel_name: raw.channel_name.unwrap_or_default(),
        user_name: raw.user_name.unwrap_or_default(),
        text: raw.text.unwrap_or_default(),
        trigger_id: raw.trigger_id.unwrap_or_default(),
        api_app_id: raw.api_app_id.filter(|s| !s.is_empty()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/slack/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn command(body: &[u8]) -> SlashCommand {
        match parse(body).unwrap() {
            SlashRequest::Command(c) => *c,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    #[test]
    fn parses_slacks_documented_slash_command() {
        let c = command(fixture("slash_command.txt").trim_ascii_end());
        assert_eq!(
            c,
            SlashCommand {
                team_id: "T0001".into(),
                team_domain: "example".into(),
                enterprise_id: Some("E0001".into()),
                enterprise_name: Some("Globular Construct Inc".into()),
                channel_id: "C2147483705".into(),
                channel_name: "test".into(),
                user_id: "U2147483697".into(),
                user_name: "Steve".into(),
                command: "/weather".into(),
                text: "94070".into(),
                response_url: "https://hooks.slack.com/commands/1234/5678".into(),
                trigger_id: "13345224609.738474920.8088930838d88f008e0".into(),
                api_app_id: Some("A123456".into()),
            }
        );
    }

    #[test]
    fn parses_the_signing_example_body() {
        let json: serde_json::Value =
            serde_json::from_slice(&fixture("signature_example.json")).unwrap();
        let c = command(json["body"].as_str().unwrap().as_bytes());
        assert_eq!(c.team_id, "T1DC2JH3J");
        assert_eq!(c.channel_id, "G8PSS9T3V");
        assert_eq!(c.channel_name, "foobar");
        assert_eq!(c.user_name, "roadrunner");
        assert_eq!(c.command, "/webhook-collect");
        assert_eq!(c.text, "");
        assert_eq!(
            c.response_url,
            "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN"
        );
        assert_eq!(
            c.trigger_id,
            "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
        );
    }

    #[test]
    fn text_keeps_newlines_and_plus_is_space() {
        let c = command(
            b"team_id=T&channel_id=C&user_id=U&command=%2Fchatops&response_url=https%3A%2F%2Fhooks.slack.com%2Fx&text=run+deploy+a%0Ab",
        );
        assert_eq!(c.text, "run deploy a\nb");
    }

    #[test]
    fn ssl_check_needs_no_other_field() {
        assert_eq!(
            parse(b"ssl_check=1&token=abc").unwrap(),
            SlashRequest::SslCheck
        );
    }

    #[test]
    fn bad_forms_are_named() {
        let full = "team_id=T&channel_id=C&user_id=U&command=%2Fc&response_url=https%3A%2F%2Fh%2F";
        assert!(matches!(
            parse(full.as_bytes()),
            Ok(SlashRequest::Command(_))
        ));
        for field in [
            "team_id",
            "channel_id",
            "user_id",
            "command",
            "response_url",
        ] {
            let body: Vec<&str> = full
                .split('&')
                .filter(|kv| !kv.starts_with(field))
                .collect();
            assert_eq!(
                parse(body.join("&").as_bytes()),
                Err(SlashError::Missing(field))
            );
            let blank: Vec<String> = full
                .split('&')
                .map(|kv| {
                    if kv.starts_with(field) {
                        format!("{field}=")
                    } else {
                        kv.into()
                    }
                })
                .collect();
            assert_eq!(
                parse(blank.join("&").as_bytes()),
                Err(SlashError::Missing(field))
            );
        }
        let dup = format!("{full}&response_url=https%3A%2F%2Fevil.example%2F");
        assert!(matches!(
            parse(dup.as_bytes()),
            Err(SlashError::Malformed(_))
        ));
        assert_eq!(parse(b""), Err(SlashError::Missing("team_id")));
    }
}
