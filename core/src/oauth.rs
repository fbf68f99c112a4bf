//! GitLab OAuth 2 (authorization code + PKCE S256) as the product uses it: the settings, the
//! port to GitLab's `/oauth/token` and `/oauth/revoke` (`chatops_adapters::oauth`), the
//! tokens it returns, and the pure parts of the flow (random state and verifier, the S256
//! challenge, the authorize URL, the callback's query).
//!
//! Facts that shape it (GitLab/Doorkeeper): access tokens live 2 hours; a refresh returns a
//! new pair and invalidates the old one, so two concurrent refreshes cannot both win (the
//! caller serialises them, see `identity`); codes are single use and live 10 minutes.

use crate::config::{ConfigError, Env, SecretSource};
use crate::secret::Secret;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// The callback path on the ingress function.
pub const CALLBACK_PATH: &str = "/oauth/gitlab/callback";
/// How long a connect link (its `state`) may be used.
pub const STATE_TTL_SECS: u64 = 600;
/// Refresh an access token this long before it expires (clock skew, a slow run).
pub const REFRESH_EARLY_SECS: u64 = 300;
/// The scope asked for: `api` (create pipelines, cancel, play, retry as the person).
pub const SCOPE: &str = "api";

/// OAuth application settings, read once at cold start. Absent (no `GITLAB_OAUTH_CLIENT_ID`)
/// means bot mode: administrators link people by hand and one token acts for everyone.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub client_id: String,
    pub client_secret: Secret,
    /// The GitLab instance (`https://gitlab.com`), without `/api/v4`.
    pub gitlab_url: String,
    /// `PUBLIC_BASE_URL`: the callback's base URL for custom domains; otherwise derived from
    /// the request the Function URL received.
    pub public_base_url: Option<String>,
    /// The key people's tokens are sealed with.
    pub token_key: TokenKey,
}

/// Where the key that seals people's tokens lives.
#[derive(Debug, Clone)]
pub enum TokenKey {
    /// `TOKEN_KEY_ID`: a KMS key (ARN, id or alias) the template creates.
    Kms(String),
    /// `TOKEN_KEY` (or `TOKEN_KEY_PARAM`): a base64 AES-256 key, for local mode.
    Local(Secret),
}

impl OAuthSettings {
    pub const ENV: &'static [&'static str] = &[
        "GITLAB_OAUTH_CLIENT_ID",
        "GITLAB_OAUTH_CLIENT_SECRET",
        "GITLAB_OAUTH_CLIENT_SECRET_PARAM",
        "PUBLIC_BASE_URL",
        "TOKEN_KEY_ID",
        "TOKEN_KEY",
        "TOKEN_KEY_PARAM",
    ];

    /// `None` in bot mode (no client id); a client id without its secret is an error.
    pub async fn from_env(
        env: &Env,
        secrets: &dyn SecretSource,
        gitlab_url: &str,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(client_id) = env
            .get("GITLAB_OAUTH_CLIENT_ID")
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let client_secret = env
            .required_secret("GITLAB_OAUTH_CLIENT_SECRET", secrets)
            .await?;
        let public_base_url = env
            .get("PUBLIC_BASE_URL")
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty());
        if let Some(u) = &public_base_url {
            if !u.starts_with("https://") && !u.starts_with("http://") {
                return Err(ConfigError::Invalid {
                    name: "PUBLIC_BASE_URL".into(),
                    reason: "must start with https://".into(),
                });
            }
        }
        let token_key = match env
            .get("TOKEN_KEY_ID")
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(id) => TokenKey::Kms(id.to_owned()),
            None => match env.secret("TOKEN_KEY", secrets).await? {
                Some(k) => TokenKey::Local(k),
                None => {
                    return Err(ConfigError::Missing(
                        "TOKEN_KEY_ID (a KMS key) or TOKEN_KEY (or TOKEN_KEY_PARAM): people's \
                         GitLab tokens are stored encrypted"
                            .into(),
                    ))
                }
            },
        };
        Ok(Some(Self {
            client_id: client_id.to_owned(),
            client_secret,
            gitlab_url: gitlab_url.trim_end_matches('/').to_owned(),
            public_base_url,
            token_key,
        }))
    }

    /// The redirect URI registered with the GitLab application: the override, else the
    /// base the request came to.
    pub fn redirect_uri(&self, request_base: Option<&str>) -> Option<String> {
        self.public_base_url
            .as_deref()
            .or(request_base)
            .map(|b| format!("{}{CALLBACK_PATH}", b.trim_end_matches('/')))
    }

    /// `GET <gitlab>/oauth/authorize?…` for one connect link.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str, verifier: &Secret) -> String {
        let q = |s: &str| utf8_percent_encode(s, QUERY).to_string();
        format!(
            "{}/oauth/authorize?client_id={}&redirect_uri={}&response_type=code&state={}&scope={}&code_challenge={}&code_challenge_method=S256",
            self.gitlab_url,
            q(&self.client_id),
            q(redirect_uri),
            q(state),
            SCOPE,
            pkce_challenge(verifier),
        )
    }
}

/// Everything but unreserved characters is encoded in query values.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A fresh random value, base64url: 32 bytes (256 bits) for states and verifiers.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// PKCE S256: BASE64URL-NOPAD(SHA256(verifier)).
pub fn pkce_challenge(verifier: &Secret) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()))
}

/// A token pair as GitLab's `/oauth/token` answers it.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Unix seconds.
    pub expires_at: u64,
}

impl Tokens {
    /// Both tokens as one secret (sealed as one value: one KMS call per run).
    pub fn to_secret(&self) -> Secret {
        Secret::new(
            serde_json::json!({
                "a": self.access_token.expose(),
                "r": self.refresh_token.expose(),
            })
            .to_string(),
        )
    }

    pub fn from_secret(s: &Secret, expires_at: u64) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(s.expose()).ok()?;
        Some(Self {
            access_token: Secret::new(v.get("a")?.as_str()?),
            refresh_token: Secret::new(v.get("r")?.as_str()?),
            expires_at,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// `invalid_grant`: the code or refresh token is invalid, expired, used or revoked.
    #[error("GitLab refused the grant: {0}")]
    InvalidGrant(String),
    /// `invalid_client`: the application's id or secret is wrong.
    #[error("GitLab refused the OAuth application: {0}")]
    InvalidClient(String),
    /// 429, 5xx, timeouts: try again later.
    #[error("GitLab's OAuth endpoint is unavailable ({0})")]
    Unavailable(String),
    /// Anything else GitLab answered that we cannot use.
    #[error("unexpected answer from GitLab's OAuth endpoint: {0}")]
    Protocol(String),
}

/// GitLab's OAuth endpoints.
#[async_trait::async_trait]
pub trait OAuthClient: Send + Sync {
    /// `POST /oauth/token` `grant_type=authorization_code`.
    async fn exchange_code(
        &self,
        code: &str,
        verifier: &Secret,
        redirect_uri: &str,
        now: u64,
    ) -> Result<Tokens, OAuthError>;
    /// `POST /oauth/token` `grant_type=refresh_token`: a new pair; the old one stops working.
    async fn refresh(
        &self,
        refresh_token: &Secret,
        redirect_uri: Option<&str>,
        now: u64,
    ) -> Result<Tokens, OAuthError>;
    /// `POST /oauth/revoke`.
    async fn revoke(&self, token: &Secret) -> Result<(), OAuthError>;
}

/// What GitLab sent to the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackQuery {
    Code {
        code: String,
        state: String,
    },
    /// The person denied access (or GitLab refused): `error`, `error_description`.
    Error {
        error: String,
        description: String,
        state: Option<String>,
    },
}

/// Parse the callback's query string; `None` when it is neither a code nor an error.
pub fn parse_callback(query: &str) -> Option<CallbackQuery> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    if let Some(error) = get("error") {
        return Some(CallbackQuery::Error {
            error,
            description: get("error_description").unwrap_or_default(),
            state: get("state"),
        });
    }
    Some(CallbackQuery::Code {
        code: get("code")?,
        state: get("state")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let v = Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            pkce_challenge(&v),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn random_tokens_differ_and_are_url_safe() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn authorize_url_carries_every_parameter_encoded() {
        let s = OAuthSettings {
            client_id: "app id".into(),
            client_secret: Secret::new("s"),
            gitlab_url: "https://gitlab.example".into(),
            public_base_url: None,
            token_key: TokenKey::Local(Secret::new("k")),
        };
        let redirect = s.redirect_uri(Some("https://abc.lambda-url.aws/")).unwrap();
        assert_eq!(redirect, "https://abc.lambda-url.aws/oauth/gitlab/callback");
        let url = s.authorize_url(&redirect, "st&x", &Secret::new("v"));
        assert!(url.starts_with("https://gitlab.example/oauth/authorize?client_id=app%20id&redirect_uri=https%3A%2F%2Fabc.lambda-url.aws%2Foauth%2Fgitlab%2Fcallback&response_type=code&state=st%26x&scope=api&code_challenge="), "{url}");
        assert!(url.ends_with("&code_challenge_method=S256"));
    }

    #[test]
    fn override_wins_over_the_request_base() {
        let s = OAuthSettings {
            client_id: "id".into(),
            client_secret: Secret::new("s"),
            gitlab_url: "https://gitlab.example".into(),
            public_base_url: Some("https://chatops.example.com".into()),
            token_key: TokenKey::Local(Secret::new("k")),
        };
        assert_eq!(
            s.redirect_uri(Some("https://abc.lambda-url.aws")).unwrap(),
            "https://chatops.example.com/oauth/gitlab/callback"
        );
        assert_eq!(
            s.redirect_uri(None).as_deref(),
            Some("https://chatops.example.com/oauth/gitlab/callback")
        );
    }

    #[test]
    fn callback_queries_parse() {
        let table: &[(&str, Option<CallbackQuery>)] = &[
            (
                "code=abc&state=xyz",
                Some(CallbackQuery::Code {
                    code: "abc".into(),
                    state: "xyz".into(),
                }),
            ),
            (
                "error=access_denied&error_description=The+resource+owner+denied&state=xyz",
                Some(CallbackQuery::Error {
                    error: "access_denied".into(),
                    description: "The resource owner denied".into(),
                    state: Some("xyz".into()),
                }),
            ),
            ("code=abc", None),
            ("state=xyz", None),
            ("", None),
            ("code=&state=", None),
        ];
        for (q, want) in table {
            assert_eq!(&parse_callback(q), want, "{q:?}");
        }
    }

    #[test]
    fn tokens_round_trip_through_one_secret_and_never_print() {
        let t = Tokens {
            access_token: Secret::new("glA-123"),
            refresh_token: Secret::new("glR-456"),
            expires_at: 7,
        };
        let s = t.to_secret();
        let back = Tokens::from_secret(&s, 7).unwrap();
        assert_eq!(back.access_token.expose(), "glA-123");
        assert_eq!(back.refresh_token.expose(), "glR-456");
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("glA-123") && !shown.contains("glR-456"),
            "{shown}"
        );
    }
}
