//! GitLab's OAuth endpoints (`POST /oauth/token`, `POST /oauth/revoke`) over HTTPS: the
//! `oauth::OAuthClient` port. Client credentials go in the form body (Doorkeeper accepts
//! them there and in HTTP Basic). Nothing here logs a token or puts one in an error.

use chatops_core::oauth::{OAuthClient, OAuthError, Tokens};
use chatops_core::secret::Secret;
use serde::Deserialize;
use std::time::Duration;

pub struct GitLabOAuth {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: Secret,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    created_at: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// How long one call to GitLab's OAuth endpoints may take.
const OAUTH_TIMEOUT: Duration = Duration::from_secs(8);

/// GitLab's access tokens live 2 hours when the answer does not say.
const DEFAULT_EXPIRES_IN: u64 = 7200;

impl GitLabOAuth {
    /// `base_url` is the instance (`https://gitlab.com`).
    pub fn new(base_url: &str, client_id: &str, client_secret: Secret) -> Result<Self, OAuthError> {
        let http = crate::http::shared_client();
        Ok(Self {
            http,
            base: base_url
                .trim_end_matches('/')
                .trim_end_matches("/api/v4")
                .to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
        })
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<reqwest::Response, OAuthError> {
        let mut body: Vec<(&str, &str)> = form.to_vec();
        body.push(("client_id", &self.client_id));
        body.push(("client_secret", self.client_secret.expose()));
        self.http
            .post(format!("{}{path}", self.base))
            .form(&body)
            .timeout(OAUTH_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                OAuthError::Unavailable(if e.is_timeout() {
                    "GitLab did not answer in time".into()
                } else {
                    "could not reach GitLab".into()
                })
            })
    }

    async fn tokens(&self, form: &[(&str, &str)], now: u64) -> Result<Tokens, OAuthError> {
        let resp = self.post("/oauth/token", form).await?;
        let status = resp.status();
        let bytes = crate::http::read_capped(resp, crate::http::MAX_CHAT_JSON)
            .await
            .map_err(|_| OAuthError::Unavailable("the answer could not be read".into()))?;
        if status.is_success() {
            let t: TokenAnswer = serde_json::from_slice(&bytes).map_err(|_| {
                OAuthError::Protocol("the token answer is not what GitLab sends".into())
            })?;
            let issued = t.created_at.unwrap_or(now).min(now);
            return Ok(Tokens {
                access_token: Secret::new(t.access_token),
                refresh_token: Secret::new(t.refresh_token),
                expires_at: issued + t.expires_in.unwrap_or(DEFAULT_EXPIRES_IN),
            });
        }
        Err(error_of(status, &bytes))
    }
}

fn error_of(status: reqwest::StatusCode, body: &[u8]) -> OAuthError {
    let e: ErrorAnswer = serde_json::from_slice(body).unwrap_or(ErrorAnswer {
        error: String::new(),
        error_description: String::new(),
    });
    let text = if e.error_description.is_empty() {
        format!("{status} {}", e.error)
    } else {
        e.error_description.clone()
    };
    match e.error.as_str() {
        "invalid_grant" => OAuthError::InvalidGrant(text),
        "invalid_client" | "unauthorized_client" => OAuthError::InvalidClient(text),
        _ if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
            OAuthError::Unavailable(format!("{status}"))
        }
        _ => OAuthError::Protocol(text),
    }
}

#[async_trait::async_trait]
impl OAuthClient for GitLabOAuth {
    async fn exchange_code(
        &self,
        code: &str,
        verifier: &Secret,
        redirect_uri: &str,
        now: u64,
    ) -> Result<Tokens, OAuthError> {
        self.tokens(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier.expose()),
            ],
            now,
        )
        .await
    }

    async fn refresh(
        &self,
        refresh_token: &Secret,
        redirect_uri: Option<&str>,
        now: u64,
    ) -> Result<Tokens, OAuthError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        if let Some(r) = redirect_uri {
            form.push(("redirect_uri", r));
        }
        self.tokens(&form, now).await
    }

    async fn revoke(&self, token: &Secret) -> Result<(), OAuthError> {
        let resp = self
            .post("/oauth/revoke", &[("token", token.expose())])
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = crate::http::read_capped(resp, crate::http::MAX_CHAT_JSON)
            .await
            .unwrap_or_default();
        Err(error_of(status, &bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP status, GitLab's body, and what the answer must map to.
    type Case = (u16, &'static str, fn(&OAuthError) -> bool);

    #[test]
    fn errors_map_by_oauth_error_code() {
        let table: &[Case] = &[
            (
                400,
                r#"{"error":"invalid_grant","error_description":"The provided authorization grant is invalid"}"#,
                |e| matches!(e, OAuthError::InvalidGrant(_)),
            ),
            (
                401,
                r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
                |e| matches!(e, OAuthError::InvalidClient(_)),
            ),
            (503, "", |e| matches!(e, OAuthError::Unavailable(_))),
            (429, "{}", |e| matches!(e, OAuthError::Unavailable(_))),
            (400, r#"{"error":"invalid_request"}"#, |e| {
                matches!(e, OAuthError::Protocol(_))
            }),
        ];
        for (status, body, ok) in table {
            let e = error_of(
                reqwest::StatusCode::from_u16(*status).unwrap(),
                body.as_bytes(),
            );
            assert!(ok(&e), "{status} {body}: {e:?}");
        }
    }
}
