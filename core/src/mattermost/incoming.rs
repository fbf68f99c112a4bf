//! Mattermost incoming slash commands: the form Mattermost POSTs for `/chatops …` and the
//! check of its token (`MATTERMOST_TOKEN`), which Mattermost sends both as the form field
//! `token` and as `Authorization: Token <token>`. Either one matching is enough; the
//! comparison is constant time.

use crate::secret::Secret;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
struct RawForm {
    token: Option<String>,
    team_id: Option<String>,
    team_domain: Option<String>,
    channel_id: Option<String>,
    channel_name: Option<String>,
    user_id: Option<String>,
    user_name: Option<String>,
    command: Option<String>,
    text: Option<String>,
    response_url: Option<String>,
    trigger_id: Option<String>,
}

/// One Mattermost slash command. The token is not kept: it is checked and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MattermostCommand {
    pub team_id: String,
    pub team_domain: String,
    pub channel_id: String,
    pub channel_name: String,
    pub user_id: String,
    pub user_name: String,
    pub command: String,
    pub text: String,
    pub response_url: String,
    pub trigger_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncomingError {
    /// No token, or not ours. The caller answers 401 with no detail.
    #[error("token missing or wrong")]
    Unauthorized,
    #[error("malformed form body: {0}")]
    Malformed(String),
    #[error("missing field {0}")]
    Missing(&'static str),
}

/// Does the request carry our token (form field or `Authorization: Token …`)?
pub fn token_matches(
    expected: &Secret,
    form_token: Option<&str>,
    authorization: Option<&str>,
) -> bool {
    let header_token = authorization.and_then(|h| {
        let (scheme, value) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("token").then(|| value.trim())
    });
    // Evaluate both so the time taken does not say which one was present.
    let by_header = header_token.is_some_and(|t| expected.matches(t.as_bytes()));
    let by_form = form_token.is_some_and(|t| expected.matches(t.as_bytes()));
    by_header | by_form
}

fn required(v: Option<String>, name: &'static str) -> Result<String, IncomingError> {
    v.filter(|s| !s.trim().is_empty())
        .ok_or(IncomingError::Missing(name))
}

/// Parse the form and check the token; the token is checked before any field is required,
/// so an unauthenticated sender learns nothing about what we expect.
pub fn parse_and_check(
    body: &[u8],
    authorization: Option<&str>,
    expected: &Secret,
) -> Result<MattermostCommand, IncomingError> {
    let raw: Result<RawForm, _> = serde_urlencoded::from_bytes(body);
    let raw = match raw {
        Ok(raw) => raw,
        // Unparseable form: authenticated by header alone, it is a 400; otherwise a 401.
        Err(e) => {
            return Err(if token_matches(expected, None, authorization) {
                IncomingError::Malformed(e.to_string())
            } else {
                IncomingError::Unauthorized
            })
        }
    };
    if !token_matches(expected, raw.token.as_deref(), authorization) {
        return Err(IncomingError::Unauthorized);
    }
    Ok(MattermostCommand {
        team_id: required(raw.team_id, "team_id")?,
        channel_id: required(raw.channel_id, "channel_id")?,
        user_id: required(raw.user_id, "user_id")?,
        command: required(raw.command, "command")?,
        response_url: required(raw.response_url, "response_url")?,
        team_domain: raw.team_domain.unwrap_or_default(),
        channel_name: raw.channel_name.unwrap_or_default(),
        user_name: raw.user_name.unwrap_or_default(),
        text: raw.text.unwrap_or_default(),
        trigger_id: raw.trigger_id.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "channel_id=fukyvsrqe3fmmfqs8s8ot7aqdo&channel_name=town-square&command=%2Fchatops&response_url=https%3A%2F%2Fmm.example.com%2Fhooks%2Fcommands%2Fabc&team_domain=acme&team_id=tc3kpbe4m7gm3pc8ih4ge7rkpe&text=run+deploy+prod&token=tok123&trigger_id=dHJpZ2dlcg&user_id=ukzbfd5tqjr5jjkn8ffzoid6ma&user_name=alice";

    #[test]
    fn parses_a_mattermost_command() {
        let c = parse_and_check(BODY.as_bytes(), None, &Secret::new("tok123")).unwrap();
        assert_eq!(c.team_id, "tc3kpbe4m7gm3pc8ih4ge7rkpe");
        assert_eq!(c.channel_name, "town-square");
        assert_eq!(c.user_name, "alice");
        assert_eq!(c.command, "/chatops");
        assert_eq!(c.text, "run deploy prod");
        assert_eq!(c.response_url, "https://mm.example.com/hooks/commands/abc");
        assert_eq!(c.trigger_id, "dHJpZ2dlcg");
    }

    #[test]
    fn token_table() {
        let s = Secret::new("tok123");
        let cases: &[(Option<&str>, Option<&str>, bool)] = &[
            (Some("tok123"), None, true),
            (None, Some("Token tok123"), true),
            (None, Some("token  tok123 "), true),
            (Some("wrong"), Some("Token tok123"), true),
            (Some("tok123"), Some("Token wrong"), true),
            (None, None, false),
            (Some(""), None, false),
            (Some("tok12"), None, false),
            (Some("tok1234"), None, false),
            (None, Some("Bearer tok123"), false),
            (None, Some("tok123"), false),
            (None, Some("Token "), false),
            (Some("wrong"), Some("Token wrong"), false),
        ];
        for (form, header, want) in cases {
            assert_eq!(
                token_matches(&s, *form, *header),
                *want,
                "{form:?} {header:?}"
            );
        }
        assert!(!token_matches(&Secret::new(""), Some(""), Some("Token ")));
    }

    #[test]
    fn wrong_token_is_unauthorized_before_fields_are_checked() {
        let s = Secret::new("other");
        assert_eq!(
            parse_and_check(BODY.as_bytes(), None, &s),
            Err(IncomingError::Unauthorized)
        );
        assert_eq!(
            parse_and_check(b"", None, &s),
            Err(IncomingError::Unauthorized)
        );
        assert_eq!(
            parse_and_check(b"token=other", None, &s),
            Err(IncomingError::Missing("team_id"))
        );
        let dup = format!("{BODY}&token=tok123");
        assert_eq!(
            parse_and_check(dup.as_bytes(), None, &Secret::new("tok123")),
            Err(IncomingError::Unauthorized)
        );
        assert!(matches!(
            parse_and_check(dup.as_bytes(), Some("Token tok123"), &Secret::new("tok123")),
            Err(IncomingError::Malformed(_))
        ));
    }
}
