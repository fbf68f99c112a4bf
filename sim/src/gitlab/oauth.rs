//! GitLab's OAuth 2 provider (Doorkeeper), as the GitLab stand-in models it: one registered
//! application, the browser side of `GET /oauth/authorize` (a chosen signed-in user approves or
//! denies), `POST /oauth/token` (authorization code with PKCE S256, refresh with rotation),
//! `POST /oauth/revoke` (RFC 7009), and the lookup of OAuth access tokens for API calls.
//!
//! Answers follow Doorkeeper 5 as GitLab configures it (`config/initializers/doorkeeper.rb`):
//! token endpoint errors are `{"error","error_description"}` with Doorkeeper's English texts,
//! `Cache-Control: no-store`, `Pragma: no-cache` and `WWW-Authenticate: Bearer
//! realm="Doorkeeper", error=…, error_description=…`; 401 for `invalid_client`, 400 otherwise.
//! Tokens are 64 hex characters (`default_generator_method :hex`), access tokens live
//! `access_token_expires_in 7200`, refresh tokens do not expire and are revoked on use together
//! with their access token (GitLab does not set `revoke_previous_refresh_token_on_use`), codes
//! live 10 minutes (`authorization_code_expires_in`) and are single use.
//!
//! Where the stand-in is stricter than GitLab, on purpose: the application requires PKCE with
//! `S256` (GitLab accepts a confidential client without PKCE, and `plain`), so a client that
//! forgets it is caught by the tests; and `GET /oauth/authorize` with a signed-in user stands
//! for the user clicking "Authorize" (GitLab shows a consent page first, whose form POST then
//! redirects): errors that Doorkeeper redirects from that POST (`invalid_request`,
//! `invalid_scope`, `unsupported_response_type`, `access_denied`) come back as a 302 to the
//! client's `redirect_uri`, errors it never redirects (unknown client, a `redirect_uri` not
//! exactly registered) render GitLab's error page (200, HTML).

use super::{message, now, query_map, Actor, Refusal, StandinHandle, State};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Doorkeeper's texts (`config/locales/en.yml`), GitLab's where it overrides them.
const INVALID_CLIENT: &str = "Client authentication failed due to unknown client, no client \
     authentication included, or unsupported authentication method.";
const INVALID_GRANT: &str = "The provided authorization grant is invalid, expired, revoked, does \
     not match the redirection URI used in the authorization request, or was issued to another \
     client.";
const INVALID_REDIRECT_URI: &str = "The redirect URI included is not valid.";
const INVALID_SCOPE: &str = "The requested scope is invalid, unknown, or malformed.";
const ACCESS_DENIED: &str = "The resource owner or authorization server denied the request.";
const UNSUPPORTED_RESPONSE_TYPE: &str =
    "The authorization server does not support this response type.";
const UNSUPPORTED_GRANT_TYPE: &str =
    "The authorization grant type is not supported by the authorization server.";
const PKCE_REQUIRED: &str = "Code challenge is required.";
const PKCE_S256_ONLY: &str = "The code challenge method must be S256.";
const REVOKE_UNAUTHORIZED: &str = "You are not authorized to revoke this token";

/// What GitLab's API guard answers for an expired OAuth access token (`lib/api/api_guard.rb`).
pub(super) const TOKEN_EXPIRED: &str =
    "Token is expired. You can either do re-authorization or token refresh.";
/// … and for a revoked one (revoked by the user, by `/oauth/revoke`, or by a refresh).
pub(super) const TOKEN_REVOKED: &str = "Token was revoked. You have to re-authorize from the user.";

/// Scopes the registered application may ask for.
const APP_SCOPES: &[&str] = &["api", "read_api"];

struct App {
    client_id: String,
    client_secret: String,
    redirect_uri: String,
}

/// An authorization code (Doorkeeper's access grant).
struct Grant {
    code: String,
    user: u64,
    redirect_uri: String,
    challenge: String,
    scopes: String,
    issued: Instant,
    lifetime: Duration,
    used: bool,
}

/// An access token and its refresh token (one Doorkeeper `oauth_access_tokens` row: revoking
/// it revokes both).
struct TokenPair {
    access: String,
    refresh: String,
    user: u64,
    scopes: String,
    issued: Instant,
    lifetime: Duration,
    revoked: bool,
}

impl TokenPair {
    fn expired(&self) -> bool {
        self.issued.elapsed() >= self.lifetime
    }
}

/// The OAuth provider's state, inside the stand-in's [`State`].
pub(super) struct OAuthState {
    app: Option<App>,
    grants: Vec<Grant>,
    tokens: Vec<TokenPair>,
    /// The user whose browser session approves authorizations.
    signed_in: Option<u64>,
    deny_next: bool,
    code_lifetime: Duration,
    access_lifetime: Duration,
    issued: usize,
    refreshes: usize,
    revocations: usize,
}

impl Default for OAuthState {
    fn default() -> Self {
        Self {
            app: None,
            grants: Vec::new(),
            tokens: Vec::new(),
            signed_in: None,
            deny_next: false,
            code_lifetime: Duration::from_secs(600),
            access_lifetime: Duration::from_secs(7200),
            issued: 0,
            refreshes: 0,
            revocations: 0,
        }
    }
}

/// What an API request's OAuth token is.
pub(super) enum OAuthLookup {
    /// Not an OAuth access token this stand-in issued (maybe a personal access token).
    Unknown,
    Valid {
        user: u64,
        scopes: String,
    },
    Expired,
    Revoked,
}

impl OAuthState {
    /// GitLab's order (`AccessTokenValidationService#validate`): expired before revoked.
    pub(super) fn lookup(&self, token: &str) -> OAuthLookup {
        match self.tokens.iter().find(|t| t.access == token) {
            None => OAuthLookup::Unknown,
            Some(t) if t.expired() => OAuthLookup::Expired,
            Some(t) if t.revoked => OAuthLookup::Revoked,
            Some(t) => OAuthLookup::Valid {
                user: t.user,
                scopes: t.scopes.clone(),
            },
        }
    }
}

/// Whether a token with `scopes` may make a request with `method` (`read_api` reads only).
pub(super) fn scope_allows(scopes: &str, method: &Method) -> bool {
    scopes.split(' ').any(|s| {
        s == "api" || (s == "read_api" && (method == Method::GET || method == Method::HEAD))
    })
}

/// `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A token endpoint error, as Doorkeeper's `ErrorResponse` renders it.
fn oauth_error(error: &str, description: &str) -> Response {
    let status = if error == "invalid_client" || error == "unauthorized_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut r = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    let h = r.headers_mut();
    no_store(h);
    let www = format!(
        "Bearer realm=\"Doorkeeper\", error=\"{error}\", error_description=\"{description}\""
    );
    if let Ok(v) = HeaderValue::from_str(&www) {
        h.insert("WWW-Authenticate", v);
    }
    r
}

fn no_store(h: &mut HeaderMap) {
    h.insert("Cache-Control", HeaderValue::from_static("no-store"));
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
}

fn found(location: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert("Location", v);
    }
    r
}

/// `redirect_uri` with `params` added to its query (Doorkeeper's `uri_with_query`).
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let params: Vec<(&str, &str)> = params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .copied()
        .collect();
    let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
    let (base, fragment) = match uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (uri, None),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{sep}{qs}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// GitLab's `doorkeeper/authorizations/error` page: rendered, never redirected.
fn error_page(description: &str) -> Response {
    let escaped = description
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>An error has occurred · GitLab</title></head>\n<body><main>\
         <h3>An error has occurred</h3>\n<p>{escaped}</p></main></body></html>\n"
    );
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn sign_in_page() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in · \
         GitLab</title></head>\n<body><main><h1>Sign in</h1></main></body></html>\n",
    )
        .into_response()
}

/// Client credentials from HTTP Basic, else from the form (Doorkeeper's default order).
fn client_credentials(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Option<(String, String)> {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
        });
    basic.or_else(|| {
        let id = params.get("client_id").filter(|s| !s.is_empty())?;
        let secret = params.get("client_secret").cloned().unwrap_or_default();
        Some((id.clone(), secret))
    })
}

impl State {
    fn client_ok(&self, creds: Option<&(String, String)>) -> bool {
        match (&self.oauth.app, creds) {
            (Some(app), Some((id, secret))) => *id == app.client_id && *secret == app.client_secret,
            _ => false,
        }
    }

    /// A new access/refresh pair for `user`, answered as Doorkeeper's `TokenResponse`.
    fn issue_pair(&mut self, user: u64, scopes: String) -> Response {
        let access = self.random_hex(64);
        let refresh = self.random_hex(64);
        let lifetime = self.oauth.access_lifetime;
        let created_at = now();
        self.oauth.tokens.push(TokenPair {
            access: access.clone(),
            refresh: refresh.clone(),
            user,
            scopes: scopes.clone(),
            issued: Instant::now(),
            lifetime,
            revoked: false,
        });
        self.oauth.issued += 1;
        let mut r = axum::Json(json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "refresh_token": refresh,
            "scope": scopes,
            "created_at": created_at,
        }))
        .into_response();
        no_store(r.headers_mut());
        r
    }

    fn user_is_active(&self, id: u64) -> bool {
        self.users.iter().any(|u| u.id == id && u.state == "active")
    }
}

impl StandinHandle {
    // ----- test-facing OAuth state -----

    /// Register the OAuth application (one is enough: registering again replaces it). It is
    /// confidential, may ask for `api` and `read_api`, and `redirect_uri` must match exactly.
    pub fn register_oauth_app(&self, client_id: &str, client_secret: &str, redirect_uri: &str) {
        self.lock().oauth.app = Some(App {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
        });
    }

    /// The user whose browser session is signed in to GitLab: `GET /oauth/authorize` approves
    /// as them. A blocked or unknown user counts as nobody (the browser is sent to sign in).
    pub fn sign_in_browser_as(&self, username: &str) {
        let mut g = self.lock();
        let id = g
            .users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
            .map(|u| u.id);
        g.oauth.signed_in = id;
    }

    /// Nobody is signed in any more: `GET /oauth/authorize` redirects to `/users/sign_in`.
    pub fn sign_out_browser(&self) {
        self.lock().oauth.signed_in = None;
    }

    /// The next authorization the signed-in user sees, they click "Deny".
    pub fn deny_next_authorization(&self) {
        self.lock().oauth.deny_next = true;
    }

    /// How long codes issued from now on stay valid (Doorkeeper's default: 600 s; 0: a code
    /// is expired as soon as it is issued).
    pub fn set_code_lifetime_secs(&self, secs: u64) {
        self.lock().oauth.code_lifetime = Duration::from_secs(secs);
    }

    /// `expires_in` of access tokens issued from now on, and how long they really work
    /// (GitLab: 7200 s; 0: expired as soon as issued). Refreshed tokens get the current value.
    pub fn set_access_token_lifetime_secs(&self, secs: u64) {
        self.lock().oauth.access_lifetime = Duration::from_secs(secs);
    }

    /// Access/refresh pairs issued by `POST /oauth/token` (codes exchanged and refreshes).
    pub fn oauth_tokens_issued(&self) -> usize {
        self.lock().oauth.issued
    }

    /// Every access and refresh token issued so far, for tests that check none of them leaks
    /// into a log line, a reply or a stored item.
    pub fn oauth_issued_secrets(&self) -> Vec<String> {
        self.lock()
            .oauth
            .tokens
            .iter()
            .flat_map(|t| [t.access.clone(), t.refresh.clone()])
            .collect()
    }

    /// Successful `grant_type=refresh_token` exchanges.
    pub fn oauth_refresh_count(&self) -> usize {
        self.lock().oauth.refreshes
    }

    /// `POST /oauth/revoke` requests that named a token the stand-in issued, with the right
    /// client credentials (whether or not the token still worked).
    pub fn oauth_revocations(&self) -> usize {
        self.lock().oauth.revocations
    }

    /// Codes issued by `GET /oauth/authorize` and not exchanged yet (expired ones included).
    pub fn oauth_pending_codes(&self) -> usize {
        self.lock().oauth.grants.iter().filter(|g| !g.used).count()
    }

    /// Whether `access_token` would be accepted by the API now (issued, not expired, not
    /// revoked).
    pub fn oauth_access_token_valid(&self, access_token: &str) -> bool {
        matches!(
            self.lock().oauth.lookup(access_token),
            OAuthLookup::Valid { .. }
        )
    }

    /// The user revokes the application in their GitLab profile ("Applications" →
    /// "Revoke"): every token pair and unused code of theirs stops working. Returns how many
    /// token pairs were still live. Not counted in [`Self::oauth_revocations`].
    pub fn revoke_all_tokens_of(&self, username: &str) -> usize {
        let mut g = self.lock();
        let Some(id) = g
            .users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
            .map(|u| u.id)
        else {
            return 0;
        };
        for grant in g.oauth.grants.iter_mut().filter(|x| x.user == id) {
            grant.used = true;
        }
        let mut live = 0;
        for t in g.oauth.tokens.iter_mut().filter(|t| t.user == id) {
            if !t.revoked {
                live += 1;
                t.revoked = true;
            }
        }
        live
    }

    // ----- HTTP -----

    /// `/oauth/*` and `/users/sign_in`; `None` for any other path.
    pub(super) fn oauth_route(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Response> {
        let form = || {
            let mut p = query_map(query);
            p.extend(query_map(&String::from_utf8_lossy(body)));
            p
        };
        Some(match (method.as_str(), path) {
            ("GET", "/users/sign_in") => sign_in_page(),
            ("GET", "/oauth/authorize") => self.authorize(&query_map(query)),
            ("POST", "/oauth/token") => self.token(headers, &form()),
            ("POST", "/oauth/revoke") => self.revoke(headers, &form()),
            (_, p) if p.starts_with("/oauth/") => message(404, "404 Not Found"),
            _ => return None,
        })
    }

    /// `GET /oauth/authorize`, the signed-in user approving (or denying) at once.
    fn authorize(&self, q: &HashMap<String, String>) -> Response {
        let mut g = self.lock();
        let base = g.base_url.clone();
        let param = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        // Doorkeeper's `authenticate_resource_owner!` runs before anything is validated.
        let Some(user) = g.oauth.signed_in.filter(|u| g.user_is_active(*u)) else {
            return found(&format!("{base}/users/sign_in"));
        };
        let Some((client_id, registered)) = g
            .oauth
            .app
            .as_ref()
            .map(|a| (a.client_id.clone(), a.redirect_uri.clone()))
        else {
            return error_page(INVALID_CLIENT);
        };
        if param("client_id").is_empty() || param("client_id") != client_id {
            return error_page(INVALID_CLIENT);
        }
        let redirect_uri = param("redirect_uri");
        if redirect_uri != registered {
            return error_page(INVALID_REDIRECT_URI);
        }
        let state = param("state");
        let refuse = |error: &str, description: &str| {
            found(&with_query(
                redirect_uri,
                &[
                    ("error", error),
                    ("error_description", description),
                    ("state", state),
                ],
            ))
        };
        match param("response_type") {
            "" => {
                return refuse(
                    "invalid_request",
                    "Missing required parameter: response_type.",
                )
            }
            "code" => {}
            _ => return refuse("unsupported_response_type", UNSUPPORTED_RESPONSE_TYPE),
        }
        // No scope: GitLab's default scopes (`api`) the application has.
        let scopes = match param("scope").split_whitespace().collect::<Vec<_>>() {
            v if v.is_empty() => "api".to_owned(),
            v => {
                if !v.iter().all(|s| APP_SCOPES.contains(s)) {
                    return refuse("invalid_scope", INVALID_SCOPE);
                }
                v.join(" ")
            }
        };
        let challenge = param("code_challenge");
        if challenge.is_empty() {
            return refuse("invalid_request", PKCE_REQUIRED);
        }
        if param("code_challenge_method") != "S256" {
            return refuse("invalid_request", PKCE_S256_ONLY);
        }
        if std::mem::take(&mut g.oauth.deny_next) {
            return refuse("access_denied", ACCESS_DENIED);
        }
        let code = g.random_hex(64);
        let lifetime = g.oauth.code_lifetime;
        g.oauth.grants.push(Grant {
            code: code.clone(),
            user,
            redirect_uri: redirect_uri.to_owned(),
            challenge: challenge.to_owned(),
            scopes,
            issued: Instant::now(),
            lifetime,
            used: false,
        });
        found(&with_query(
            redirect_uri,
            &[("code", &code), ("state", state)],
        ))
    }

    /// `POST /oauth/token`. Everything happens under the stand-in's lock, so two concurrent
    /// refreshes with one refresh token are serialised: one wins, the other is refused.
    fn token(&self, headers: &HeaderMap, p: &HashMap<String, String>) -> Response {
        let mut g = self.lock();
        let param = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        let creds = client_credentials(headers, p);
        match param("grant_type") {
            "" => oauth_error("invalid_request", "Missing required parameter: grant_type."),
            "authorization_code" => {
                // Doorkeeper's `AuthorizationCodeRequest` validations, in its order: params,
                // client, grant, redirect_uri, code_verifier.
                let idx = g.oauth.grants.iter().position(|x| x.code == param("code"));
                if idx.is_some() && param("code_verifier").is_empty() {
                    return oauth_error(
                        "invalid_request",
                        "Missing required parameter: code_verifier.",
                    );
                }
                if param("redirect_uri").is_empty() {
                    return oauth_error(
                        "invalid_request",
                        "Missing required parameter: redirect_uri.",
                    );
                }
                if !g.client_ok(creds.as_ref()) {
                    return oauth_error("invalid_client", INVALID_CLIENT);
                }
                let Some(idx) = idx else {
                    return oauth_error("invalid_grant", INVALID_GRANT);
                };
                let grant = &g.oauth.grants[idx];
                if grant.used
                    || grant.issued.elapsed() >= grant.lifetime
                    || grant.redirect_uri != param("redirect_uri")
                    || grant.challenge != pkce_challenge(param("code_verifier"))
                {
                    return oauth_error("invalid_grant", INVALID_GRANT);
                }
                // Single use: the grant is revoked before the token is created.
                let grant = &mut g.oauth.grants[idx];
                grant.used = true;
                let (user, scopes) = (grant.user, grant.scopes.clone());
                g.issue_pair(user, scopes)
            }
            "refresh_token" => {
                // Doorkeeper's `RefreshTokenRequest` order: presence, token, client, match.
                let presented = param("refresh_token");
                if presented.is_empty() {
                    return oauth_error(
                        "invalid_request",
                        "Missing required parameter: refresh_token.",
                    );
                }
                let Some(idx) = g
                    .oauth
                    .tokens
                    .iter()
                    .position(|t| t.refresh == presented && !t.revoked)
                else {
                    return oauth_error("invalid_grant", INVALID_GRANT);
                };
                if creds.is_some() && !g.client_ok(creds.as_ref()) {
                    return oauth_error("invalid_client", INVALID_CLIENT);
                }
                if creds.is_none() {
                    return oauth_error("invalid_grant", INVALID_GRANT);
                }
                let old = &mut g.oauth.tokens[idx];
                old.revoked = true;
                let (user, scopes) = (old.user, old.scopes.clone());
                g.oauth.refreshes += 1;
                g.issue_pair(user, scopes)
            }
            _ => oauth_error("unsupported_grant_type", UNSUPPORTED_GRANT_TYPE),
        }
    }

    /// `POST /oauth/revoke` (RFC 7009, Doorkeeper's `TokensController#revoke`): 200 `{}` for
    /// a token nobody holds or once revoked; 403 `unauthorized_client` when the client
    /// credentials are not those of the application the token was issued to.
    fn revoke(&self, headers: &HeaderMap, p: &HashMap<String, String>) -> Response {
        let mut g = self.lock();
        let token = p.get("token").map(String::as_str).unwrap_or("");
        let creds = client_credentials(headers, p);
        let client_ok = g.client_ok(creds.as_ref());
        let Some(idx) = g
            .oauth
            .tokens
            .iter()
            .position(|t| !token.is_empty() && (t.access == token || t.refresh == token))
        else {
            return (StatusCode::OK, axum::Json(json!({}))).into_response();
        };
        if !client_ok {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(
                    json!({"error": "unauthorized_client", "error_description": REVOKE_UNAUTHORIZED}),
                ),
            )
                .into_response();
        }
        g.oauth.tokens[idx].revoked = true;
        g.oauth.revocations += 1;
        (StatusCode::OK, axum::Json(json!({}))).into_response()
    }
}

/// The API's answer to an OAuth token it cannot accept (`API::APIGuard`'s error responders:
/// rack-oauth2's `Bearer::Unauthorized`, whose realm is its default, "Protected by OAuth 2.0").
pub(super) fn invalid_token(description: &str) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "invalid_token", "error_description": description})),
    )
        .into_response();
    let www = format!(
        "Bearer realm=\"Protected by OAuth 2.0\", error=\"invalid_token\", \
         error_description=\"{description}\""
    );
    if let Ok(v) = HeaderValue::from_str(&www) {
        r.headers_mut().insert("WWW-Authenticate", v);
    }
    r
}

/// The API's answer to an OAuth token without the scope an endpoint needs (rack-oauth2's
/// `Bearer::Forbidden`, which sets no `WWW-Authenticate`).
pub(super) fn insufficient_scope() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({
            "error": "insufficient_scope",
            "error_description": "The request requires higher privileges than provided by the access token.",
            "scope": "api"
        })),
    )
        .into_response()
}

/// Who an OAuth access token acts for, for the API's authentication; `None` when it is no
/// OAuth access token the stand-in issued.
pub(super) fn api_actor(g: &State, token: &str, method: &Method) -> Option<Result<Actor, Refusal>> {
    match g.oauth.lookup(token) {
        OAuthLookup::Unknown => None,
        OAuthLookup::Expired => Some(Err(Refusal::TokenExpired)),
        OAuthLookup::Revoked => Some(Err(Refusal::TokenRevoked)),
        OAuthLookup::Valid { user, scopes } => Some(if scope_allows(&scopes, method) {
            Ok(Actor::User(user))
        } else {
            Err(Refusal::InsufficientScope)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn redirect_keeps_existing_query_and_encodes_state() {
        assert_eq!(
            with_query(
                "https://a.example/cb?x=1",
                &[("code", "c"), ("state", "a b&c")]
            ),
            "https://a.example/cb?x=1&code=c&state=a+b%26c"
        );
        assert_eq!(
            with_query("https://a.example/cb", &[("code", "c"), ("state", "")]),
            "https://a.example/cb?code=c"
        );
    }

    #[test]
    fn read_api_reads_only() {
        assert!(scope_allows("read_api", &Method::GET));
        assert!(!scope_allows("read_api", &Method::POST));
        assert!(scope_allows("api", &Method::POST));
        assert!(scope_allows("read_api api", &Method::PUT));
    }
}
