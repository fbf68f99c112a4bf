//! The ingress: the HTTP edge Slack and Mattermost call. It authenticates the request on the
//! raw bytes (Slack signature or Mattermost token), parses the slash command, refuses
//! `response_url`s outside the allowed prefixes, queues a versioned `RunRequest` and answers
//! within Slack's 3 seconds. The queue send completes before the answer: Lambda may freeze
//! the function as soon as it has answered.
//!
//! It is also where people manage their GitLab account: `link` (a connect link), `whoami`,
//! `unlink` (tokens revoked), and the OAuth callback (`GET /oauth/gitlab/callback`) that
//! stores the link and queues the command the person had typed before connecting.
//!
//! `status` and `history` are answered here from the runs table (`status`); `help` is
//! answered with the grammar at once and queued, so the dispatcher follows up with the jobs
//! chat can run. Every command received, and every refusal after authentication, is
//! audited (`audit`); unauthenticated requests are only logged, so nobody outside can fill
//! the audit table.
//! Clicks on a run card's buttons (`POST /slack/interactions`) are routed to
//! `interaction::Intake`, which checks them exactly as commands are checked; clicks on a
//! Mattermost card's buttons (`POST /mattermost/interactions`) to `mattermost::intake`, which
//! checks the button's signed context (`MATTERMOST_ACTIONS_SECRET`).
//!
//! Every refusal is decided in one place (`Refusal`) and mapped to HTTP once.

use crate::audit::{Audit, AuditEvent, AuditSettings};
use crate::chat::OutgoingMessage;
use crate::clock::Clock;
use crate::command::{self, Command};
use crate::config::{ConfigError, Env, SecretSource};
use crate::identity::{self, ChatPerson, Connected, Identity, Unlinked};
use crate::ids::{ChannelId, ChatUserId, RequestId, TeamId};
use crate::interaction::ClickRefusal;
use crate::mattermost::actions::{self as mm_actions, ActionSigner};
use crate::mattermost::incoming::{self, IncomingError};
use crate::notice::Notice;
use crate::oauth::{OAuthSettings, CALLBACK_PATH};
use crate::queue::RunQueue;
use crate::run::{Platform, RequestKind, RunRequest, RUN_REQUEST_VERSION};
use crate::secret::Secret;
use crate::slack::slash::{self, SlashRequest};
use crate::slack::verify;
use crate::store::RunStore;
use crate::web::{self, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub const SLACK_PATH: &str = "/slack/commands";
pub const MATTERMOST_PATH: &str = "/mattermost/commands";
/// Slack's slash-command bodies are a few hundred bytes; anything this big is not one.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_ALLOWED_PREFIXES: &str = "https://hooks.slack.com/";

/// Every variable the ingress reads (checked against `infra/template.yaml`).
pub const ENV: &[&str] = IngressConfig::ENV;

/// The ingress configuration, read once at cold start.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub slack_signing_secret: Option<Secret>,
    pub mattermost_token: Option<Secret>,
    pub run_queue_url: String,
    /// Normalised: each ends its host part with `/`, so a prefix can never be extended into
    /// another host (`https://hooks.slack.com` would otherwise admit `…slack.com.evil.io`).
    pub allowed_response_url_prefixes: Vec<String>,
    pub mattermost_url: Option<String>,
    /// `RUNS_TABLE`: where links live (`whoami`, `unlink`, connect links); without it those
    /// commands answer that they are not available.
    pub runs_table: Option<String>,
    /// The GitLab OAuth application (`GITLAB_OAUTH_CLIENT_ID`); `None` is bot mode.
    pub oauth: Option<OAuthSettings>,
    /// Where commands received and refusals are audited (`AUDIT_*`).
    pub audit: AuditSettings,
    /// `MATTERMOST_ACTIONS_SECRET`: checks the buttons on Mattermost cards; `None` is no
    /// Mattermost buttons (their path answers 404).
    pub mattermost_actions: Option<ActionSigner>,
    /// `MATTERMOST_BOT_CONFIGURED`: the dispatcher holds a Mattermost bot token, so a
    /// clicker is told the outcome later; without it the click's answer says it will not be.
    pub mattermost_bot: bool,
}

impl IngressConfig {
    pub const ENV: &'static [&'static str] = &[
        "CONFIG_VERSION",
        "SLACK_SIGNING_SECRET",
        "SLACK_SIGNING_SECRET_PARAM",
        "MATTERMOST_TOKEN",
        "MATTERMOST_TOKEN_PARAM",
        "RUN_QUEUE_URL",
        "ALLOWED_RESPONSE_URL_PREFIXES",
        "MATTERMOST_URL",
        "RUNS_TABLE",
        "GITLAB_URL",
        "GITLAB_OAUTH_CLIENT_ID",
        "GITLAB_OAUTH_CLIENT_SECRET",
        "GITLAB_OAUTH_CLIENT_SECRET_PARAM",
        "PUBLIC_BASE_URL",
        "TOKEN_KEY_ID",
        "AUDIT_TABLE",
        "AUDIT_INPUT",
        "AUDIT_RETENTION_DAYS",
        "MATTERMOST_ACTIONS_SECRET",
        "MATTERMOST_ACTIONS_SECRET_PARAM",
        "MATTERMOST_BOT_CONFIGURED",
    ];

    pub async fn from_env(env: &Env, secrets: &dyn SecretSource) -> Result<Self, ConfigError> {
        env.log_config_version();
        let slack_signing_secret = env.secret("SLACK_SIGNING_SECRET", secrets).await?;
        let mattermost_token = env.secret("MATTERMOST_TOKEN", secrets).await?;
        if slack_signing_secret.is_none() && mattermost_token.is_none() {
            return Err(ConfigError::Missing(
                "SLACK_SIGNING_SECRET or MATTERMOST_TOKEN (or their _PARAM references)".into(),
            ));
        }
        let run_queue_url = env.required("RUN_QUEUE_URL")?;
        let mut allowed = Vec::new();
        for p in env
            .or("ALLOWED_RESPONSE_URL_PREFIXES", DEFAULT_ALLOWED_PREFIXES)
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            allowed.push(normalize_prefix(p).map_err(|reason| ConfigError::Invalid {
                name: "ALLOWED_RESPONSE_URL_PREFIXES".into(),
                reason: format!("{p:?} {reason}"),
            })?);
        }
        let mattermost_url = match env.get("MATTERMOST_URL") {
            None => None,
            Some(site) => {
                let site = site.trim().trim_end_matches('/').to_owned();
                let prefix =
                    normalize_prefix(&format!("{site}/hooks/commands/")).map_err(|reason| {
                        ConfigError::Invalid {
                            name: "MATTERMOST_URL".into(),
                            reason,
                        }
                    })?;
                allowed.push(prefix);
                Some(site)
            }
        };
        if mattermost_token.is_some() && mattermost_url.is_none() {
            tracing::warn!(
                "MATTERMOST_TOKEN is set but MATTERMOST_URL is not: Mattermost response URLs \
                 are refused unless ALLOWED_RESPONSE_URL_PREFIXES admits them"
            );
        }
        let gitlab_url = env.or("GITLAB_URL", crate::gitlab::DEFAULT_GITLAB_URL);
        let oauth = OAuthSettings::from_env(env, secrets, &gitlab_url).await?;
        let runs_table = env
            .get("RUNS_TABLE")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if oauth.is_some() && runs_table.is_none() {
            return Err(ConfigError::Missing(
                "RUNS_TABLE (GITLAB_OAUTH_CLIENT_ID is set: connect links and links are stored there)"
                    .into(),
            ));
        }
        Ok(Self {
            slack_signing_secret,
            mattermost_token,
            run_queue_url,
            allowed_response_url_prefixes: allowed,
            mattermost_url,
            runs_table,
            oauth,
            audit: AuditSettings::from_env(env)?,
            mattermost_actions: mm_actions::signer_from_env(env, secrets).await?,
            mattermost_bot: env.parse_or("MATTERMOST_BOT_CONFIGURED", false)?,
        })
    }

    /// May our functions ever call this URL? Only under an allowed prefix, and only if it is
    /// a plain URL (no spaces, control characters or backslashes for a client to reinterpret).
    pub fn response_url_allowed(&self, url: &str) -> bool {
        !url.bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\')
            && self
                .allowed_response_url_prefixes
                .iter()
                .any(|p| url.starts_with(p.as_str()) && url.len() > p.len())
    }
}

/// `scheme://host[:port]/path…`: the host part must be there and end with `/`.
fn normalize_prefix(p: &str) -> Result<String, String> {
    let rest = p
        .strip_prefix("https://")
        .or_else(|| p.strip_prefix("http://"))
        .ok_or("must start with https:// (or http:// for local stand-ins)")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b == b'@' || b == b'\\' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("has no valid host".into());
    }
    Ok(if rest.len() == host.len() {
        format!("{p}/")
    } else {
        p.to_owned()
    })
}

/// Why a request is not acted on; mapped to HTTP in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    NotFound,
    /// The method the path takes.
    MethodNotAllowed(&'static str),
    TooLarge,
    /// Bad or missing credentials: 401 with no detail.
    Unauthorized,
    /// Authentic, but not from where it may come (a Mattermost click from another team):
    /// 403 with no detail.
    Forbidden,
    BadRequest(String),
    ResponseUrlNotAllowed,
}

impl Refusal {
    fn into_response(self) -> HttpResponse {
        match self {
            Refusal::NotFound => web::text(404, "not found"),
            Refusal::MethodNotAllowed(allow) => {
                let mut r = web::text(405, "method not allowed");
                r.headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
                r
            }
            Refusal::TooLarge => web::text(413, "request body too large"),
            Refusal::Unauthorized => web::text(401, ""),
            Refusal::Forbidden => web::text(403, ""),
            Refusal::BadRequest(why) => web::text(400, format!("bad request: {why}")),
            Refusal::ResponseUrlNotAllowed => {
                web::text(400, "bad request: response_url is not an allowed address")
            }
        }
    }
}

/// A slash command from either platform, authenticated and parsed.
struct Incoming {
    platform: Platform,
    team_id: String,
    team_domain: String,
    channel_id: String,
    channel_name: String,
    user_id: String,
    user_name: String,
    command: String,
    text: String,
    response_url: String,
    request_id: RequestId,
    /// `https://<host>` the request came to (for OAuth callbacks).
    public_base: Option<String>,
}

/// The base URL a request was addressed to: `x-forwarded-proto` (the Function URL sets it;
/// without it https, or http on loopback for local mode) and the `Host` header, when it is a
/// plain host name.
fn public_base(req: &HttpRequest) -> Option<String> {
    let host = web::header(req, http::header::HOST.as_str())?.trim();
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
    if !plain {
        return None;
    }
    let loopback = ["localhost", "127.0.0.1"]
        .iter()
        .any(|h| host == *h || host.starts_with(&format!("{h}:")));
    let scheme = match web::header(req, "x-forwarded-proto") {
        Some("http") => "http",
        Some(_) => "https",
        // Local mode on a laptop serves plain HTTP.
        None if loopback => "http",
        None => "https",
    };
    Some(format!("{scheme}://{host}"))
}

/// A request id that is the same for the same request: from the platform's per-invocation
/// trigger id when there is one, else from what uniquely identifies the request.
fn request_id(parts: &[&[u8]]) -> RequestId {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefix each part so that ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    RequestId::new(hex::encode(&h.finalize()[..16]))
}

pub struct Ingress {
    config: IngressConfig,
    queue: Arc<dyn RunQueue>,
    clock: Arc<dyn Clock>,
    /// Links (`whoami`, `unlink` in bot mode).
    store: Option<Arc<dyn RunStore>>,
    /// People's GitLab identities (OAuth); `None` in bot mode.
    identity: Option<Arc<Identity>>,
    /// Commands received and refusals (log lines only until `with_audit`).
    audit: Audit,
}

impl Ingress {
    pub fn new(config: IngressConfig, queue: Arc<dyn RunQueue>, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            queue,
            clock,
            store: None,
            identity: None,
            audit: Audit::default(),
        }
    }

    /// Commands received and refusals go to `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Links are read from `store` (`whoami`, `unlink`).
    pub fn with_store(mut self, store: Arc<dyn RunStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// People connect their GitLab accounts through `identity` (OAuth mode).
    pub fn with_identity(mut self, identity: Arc<Identity>) -> Self {
        self.identity = Some(identity);
        self
    }

    pub fn config(&self) -> &IngressConfig {
        &self.config
    }

    /// Answer one HTTP request. Never panics on input; every answer is a complete response.
    pub async fn handle(&self, req: HttpRequest) -> HttpResponse {
        match self.route(&req).await {
            Ok(resp) => resp,
            Err(refusal) => {
                tracing::info!(path = req.uri().path(), ?refusal, "request refused");
                refusal.into_response()
            }
        }
    }

    async fn route(&self, req: &HttpRequest) -> Result<HttpResponse, Refusal> {
        if req.uri().path() == CALLBACK_PATH {
            let identity = self.identity.as_ref().ok_or(Refusal::NotFound)?;
            if req.method() != http::Method::GET {
                return Err(Refusal::MethodNotAllowed("GET"));
            }
            return Ok(self
                .callback(identity, req.uri().query().unwrap_or(""))
                .await);
        }
        if req.uri().path() == crate::interaction::SLACK_INTERACTIONS_PATH {
            return self.slack_interaction(req).await;
        }
        if req.uri().path() == mm_actions::MATTERMOST_INTERACTIONS_PATH {
            return self.mattermost_interaction(req).await;
        }
        let platform = match req.uri().path() {
            SLACK_PATH if self.config.slack_signing_secret.is_some() => Platform::Slack,
            MATTERMOST_PATH if self.config.mattermost_token.is_some() => Platform::Mattermost,
            _ => return Err(Refusal::NotFound),
        };
        if req.method() != http::Method::POST {
            return Err(Refusal::MethodNotAllowed("POST"));
        }
        if req.body().len() > MAX_BODY_BYTES {
            return Err(Refusal::TooLarge);
        }
        let incoming = match platform {
            Platform::Slack => match self.slack(req)? {
                Some(incoming) => incoming,
                None => return Ok(web::text(200, "")),
            },
            Platform::Mattermost => self.mattermost(req)?,
        };
        Ok(self.command(incoming).await)
    }

    /// A click on a card's button (`interaction::Intake`), refused like a command would be.
    async fn slack_interaction(&self, req: &HttpRequest) -> Result<HttpResponse, Refusal> {
        let secret = self
            .config
            .slack_signing_secret
            .as_ref()
            .ok_or(Refusal::NotFound)?;
        if req.method() != http::Method::POST {
            return Err(Refusal::MethodNotAllowed("POST"));
        }
        if req.body().len() > MAX_BODY_BYTES {
            return Err(Refusal::TooLarge);
        }
        let allowed = |url: &str| self.config.response_url_allowed(url);
        let intake = crate::interaction::Intake {
            signing_secret: secret,
            queue: self.queue.as_ref(),
            clock: self.clock.as_ref(),
            response_url_allowed: &allowed,
        };
        intake
            .slack(req, public_base(req))
            .await
            .map_err(|r| match r {
                ClickRefusal::Unauthorized => Refusal::Unauthorized,
                ClickRefusal::BadRequest(why) => Refusal::BadRequest(why),
                ClickRefusal::ResponseUrlNotAllowed => Refusal::ResponseUrlNotAllowed,
            })
    }

    /// A click on a Mattermost card's button (`mattermost::intake`): 404 while Mattermost
    /// buttons are off.
    async fn mattermost_interaction(&self, req: &HttpRequest) -> Result<HttpResponse, Refusal> {
        let signer = self
            .config
            .mattermost_actions
            .as_ref()
            .ok_or(Refusal::NotFound)?;
        if req.method() != http::Method::POST {
            return Err(Refusal::MethodNotAllowed("POST"));
        }
        if req.body().len() > MAX_BODY_BYTES {
            return Err(Refusal::TooLarge);
        }
        let intake = crate::mattermost::intake::Intake {
            signer,
            queue: self.queue.as_ref(),
            clock: self.clock.as_ref(),
            bot: self.config.mattermost_bot,
        };
        intake
            .click(req.body(), public_base(req))
            .await
            .map_err(|r| match r {
                crate::mattermost::intake::Refused::Unauthorized => Refusal::Unauthorized,
                crate::mattermost::intake::Refused::Forbidden => Refusal::Forbidden,
            })
    }

    /// Authenticate and parse a Slack request; `None` for Slack's `ssl_check` probe.
    fn slack(&self, req: &HttpRequest) -> Result<Option<Incoming>, Refusal> {
        let secret = self
            .config
            .slack_signing_secret
            .as_ref()
            .ok_or(Refusal::NotFound)?;
        let timestamp = web::header(req, verify::TIMESTAMP_HEADER).unwrap_or_default();
        let signature = web::header(req, verify::SIGNATURE_HEADER).unwrap_or_default();
        let body = req.body().as_ref();
        if let Err(e) = verify::verify(secret, timestamp, signature, body, self.clock.now()) {
            tracing::warn!(reason = %e, "slack request failed verification");
            return Err(Refusal::Unauthorized);
        }
        let c = match slash::parse(body).map_err(|e| Refusal::BadRequest(e.to_string()))? {
            SlashRequest::SslCheck => return Ok(None),
            SlashRequest::Command(c) => *c,
        };
        let request_id = if c.trigger_id.is_empty() {
            request_id(&[b"slack", timestamp.as_bytes(), body])
        } else {
            request_id(&[b"slack", c.team_id.as_bytes(), c.trigger_id.as_bytes()])
        };
        Ok(Some(Incoming {
            platform: Platform::Slack,
            team_id: c.team_id,
            team_domain: c.team_domain,
            channel_id: c.channel_id,
            channel_name: c.channel_name,
            user_id: c.user_id,
            user_name: c.user_name,
            command: c.command,
            text: c.text,
            response_url: c.response_url,
            request_id,
            public_base: public_base(req),
        }))
    }

    fn mattermost(&self, req: &HttpRequest) -> Result<Incoming, Refusal> {
        let token = self
            .config
            .mattermost_token
            .as_ref()
            .ok_or(Refusal::NotFound)?;
        let body = req.body().as_ref();
        let auth = web::header(req, http::header::AUTHORIZATION.as_str());
        let c = incoming::parse_and_check(body, auth, token).map_err(|e| match e {
            IncomingError::Unauthorized => {
                tracing::warn!("mattermost request with a missing or wrong token");
                Refusal::Unauthorized
            }
            other => Refusal::BadRequest(other.to_string()),
        })?;
        // Mattermost does not resend commands; without a trigger id the body and the second
        // it arrived identify the request.
        let request_id = if c.trigger_id.is_empty() {
            let now = self.clock.now().to_string();
            request_id(&[b"mattermost", now.as_bytes(), body])
        } else {
            request_id(&[b"mattermost", c.team_id.as_bytes(), c.trigger_id.as_bytes()])
        };
        Ok(Incoming {
            platform: Platform::Mattermost,
            team_id: c.team_id,
            team_domain: c.team_domain,
            channel_id: c.channel_id,
            channel_name: c.channel_name,
            user_id: c.user_id,
            user_name: c.user_name,
            command: c.command,
            text: c.text,
            response_url: c.response_url,
            request_id,
            public_base: public_base(req),
        })
    }

    /// An authenticated command: check where replies would go, then act on the text.
    async fn command(&self, c: Incoming) -> HttpResponse {
        if !self.config.response_url_allowed(&c.response_url) {
            tracing::warn!(
                platform = c.platform.as_str(),
                team = %c.team_id,
                "refused a command whose response_url is not under an allowed prefix"
            );
            let event = AuditEvent::Refused {
                reason: "response_url_not_allowed".into(),
                detail: String::new(),
            };
            self.audit.record(self.audited(&c, event, None)).await;
            return Refusal::ResponseUrlNotAllowed.into_response();
        }
        let parsed = command::parse(&c.text);
        let received = AuditEvent::CommandReceived {
            command: parsed.name().to_owned(),
        };
        self.audit
            .record(self.audited(&c, received, Some(&parsed)))
            .await;
        let (job, input) = match parsed {
            Command::Help => return answer(&self.help(&c).await),
            Command::Status | Command::History { .. } => {
                return answer(&self.activity(&c, &parsed).await)
            }
            Command::Invalid(text) => {
                let notice = Notice::Invalid {
                    slash: c.command.clone(),
                    text,
                };
                let event = AuditEvent::Refused {
                    reason: notice.reason().into(),
                    detail: String::new(),
                };
                self.audit.record(self.audited(&c, event, None)).await;
                return answer(&OutgoingMessage::ephemeral(notice.render(c.platform)));
            }
            Command::Link => return answer(&self.link(&c).await),
            Command::Unlink => return answer(&self.unlink(&c).await),
            Command::WhoAmI => return answer(&self.whoami(&c).await),
            Command::Run { job, input } => (job, input),
        };
        let request = self.queued(&c, RequestKind::Run, job, input);
        match self.queue.send(&request).await {
            Ok(()) => {
                tracing::info!(
                    request_id = %request.request_id,
                    platform = request.platform.as_str(),
                    team = %request.team_id,
                    channel = %request.channel_id,
                    user = %request.user_id,
                    job = %request.job,
                    "run request queued"
                );
                // The run's card, in its first state: later states replace it in place.
                answer(&crate::card::Card::requested(&request).render(request.platform))
            }
            Err(e @ crate::queue::QueueError::Unconfirmed(_)) => {
                tracing::warn!(request_id = %request.request_id, error = %e, "the queue did not confirm the run request");
                answer(&OutgoingMessage::ephemeral(
                    Notice::QueueUnconfirmed { job: request.job }.render(request.platform),
                ))
            }
            Err(e) => {
                tracing::error!(request_id = %request.request_id, error = %e, "could not queue run request");
                let notice = Notice::CouldNotQueue {
                    job: request.job.clone(),
                };
                let event = AuditEvent::Refused {
                    reason: notice.reason().into(),
                    detail: e.to_string(),
                };
                self.audit
                    .record(self.audit.of_request(event, &request))
                    .await;
                answer(&OutgoingMessage::ephemeral(notice.render(request.platform)))
            }
        }
    }
}

impl Ingress {
    fn person(c: &Incoming) -> ChatPerson {
        ChatPerson {
            platform: c.platform,
            team_id: TeamId::new(c.team_id.clone()),
            user_id: ChatUserId::new(c.user_id.clone()),
        }
    }

    /// `link`: a connect link (OAuth), or how an administrator links people (bot mode).
    async fn link(&self, c: &Incoming) -> OutgoingMessage {
        let notice = match &self.identity {
            None => Notice::LinkByAdmin {
                team: c.team_id.clone(),
                user: c.user_id.clone(),
            },
            Some(identity) => match identity.settings.redirect_uri(c.public_base.as_deref()) {
                None => Notice::ConnectUnavailable,
                Some(redirect) => {
                    match identity
                        .connect_link(&Self::person(c), &redirect, None)
                        .await
                    {
                        Ok(url) => Notice::Connect {
                            url,
                            job: None,
                            again: false,
                        },
                        Err(e) => {
                            tracing::error!(error = %crate::report::chain(&e), "could not make a connect link");
                            Notice::IdentityUnavailable
                        }
                    }
                }
            },
        };
        OutgoingMessage::ephemeral(notice.render(c.platform))
    }

    /// `whoami`: the person's link.
    async fn whoami(&self, c: &Incoming) -> OutgoingMessage {
        let notice = match &self.store {
            None => Notice::IdentityUnavailable,
            Some(store) => match store.get_user(&c.team_id, &c.user_id).await {
                Ok(Some(link)) => Notice::LinkedAs {
                    username: link.gitlab_username,
                    personal: link.grant.is_some(),
                    broken: link.grant.is_some_and(|g| g.broken),
                },
                Ok(None) => Notice::NotConnected {
                    slash: c.command.clone(),
                },
                Err(e) => {
                    tracing::error!(error = %crate::report::chain(&e), "could not read a link");
                    Notice::IdentityUnavailable
                }
            },
        };
        OutgoingMessage::ephemeral(notice.render(c.platform))
    }

    /// `unlink`: the link removed, and its tokens revoked at GitLab.
    async fn unlink(&self, c: &Incoming) -> OutgoingMessage {
        let notice = match (&self.identity, &self.store) {
            (Some(identity), _) => match identity.unlink(&Self::person(c)).await {
                Ok(Unlinked::NotLinked) => Notice::NotConnected {
                    slash: c.command.clone(),
                },
                Ok(Unlinked::Removed { username, revoked }) => {
                    let mut e = self.audited(c, AuditEvent::Unlinked { revoked }, None);
                    e.gitlab_user = Some(username.clone());
                    self.audit.record(e).await;
                    Notice::Disconnected {
                        username,
                        personal: true,
                        revoked,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %crate::report::chain(&e), "could not unlink");
                    Notice::IdentityUnavailable
                }
            },
            (None, Some(store)) => match store.get_user(&c.team_id, &c.user_id).await {
                Ok(Some(link)) => match store.unlink_user(&c.team_id, &c.user_id).await {
                    Ok(_) => Notice::Disconnected {
                        username: link.gitlab_username,
                        personal: false,
                        revoked: false,
                    },
                    Err(_) => Notice::IdentityUnavailable,
                },
                Ok(None) => Notice::NotConnected {
                    slash: c.command.clone(),
                },
                Err(_) => Notice::IdentityUnavailable,
            },
            (None, None) => Notice::IdentityUnavailable,
        };
        OutgoingMessage::ephemeral(notice.render(c.platform))
    }

    /// GitLab's redirect after the person authorized (or denied) ChatOps: a page for the
    /// browser tab; the command they had typed is queued again.
    async fn callback(&self, identity: &Identity, query: &str) -> HttpResponse {
        let (person, username, pending) = match identity.complete(query).await {
            Ok(Connected::Linked {
                person,
                username,
                pending,
            }) => (person, username, pending),
            Err(refusal) => {
                tracing::info!(?refusal, "OAuth callback refused");
                let (status, sentence) = refusal.page();
                return web::response(
                    status,
                    "text/html; charset=utf-8",
                    identity::html_page("ChatOps: not connected", &sentence),
                );
            }
        };
        // No channel: the callback comes from a browser, not from chat.
        let mut e = self.audit.of_chat(
            AuditEvent::Linked,
            person.platform,
            person.team_id.as_str(),
            "",
            "",
            person.user_id.as_str(),
            "",
        );
        e.channel = None;
        e.gitlab_user = Some(username.clone());
        self.audit.record(e).await;
        let mut sentence = format!("Connected as @{username}. You can close this tab.");
        if let Some(original) = pending {
            let mut request = *original;
            request.request_id = identity::resumed_request_id(&request.request_id);
            match self.queue.send(&request).await {
                Ok(()) => {
                    tracing::info!(request_id = %request.request_id, team = %person.team_id, user = %person.user_id, job = %request.job, "command queued after connecting");
                    sentence.push_str(&format!(
                        " Your command ({}) is starting in chat.",
                        request.job
                    ));
                }
                Err(e) => {
                    tracing::error!(request_id = %request.request_id, error = %e, "could not queue the command after connecting");
                    sentence.push_str(&format!(
                        " Your command ({}) could not be started: please type it again in chat.",
                        request.job
                    ));
                }
            }
        }
        web::response(
            200,
            "text/html; charset=utf-8",
            identity::html_page("ChatOps: connected", &sentence),
        )
    }
}

impl Ingress {
    /// The request the queue carries for this command.
    fn queued(&self, c: &Incoming, kind: RequestKind, job: String, input: String) -> RunRequest {
        RunRequest {
            version: RUN_REQUEST_VERSION,
            kind,
            request_id: c.request_id.clone(),
            platform: c.platform,
            team_id: TeamId::new(c.team_id.clone()),
            team_domain: Some(c.team_domain.clone()).filter(|d| !d.is_empty()),
            channel_id: ChannelId::new(c.channel_id.clone()),
            channel_name: c.channel_name.clone(),
            user_id: ChatUserId::new(c.user_id.clone()),
            user_name: c.user_name.clone(),
            command: c.command.clone(),
            job,
            input,
            response_url: c.response_url.clone(),
            received_at: self.clock.now(),
            public_base: c.public_base.clone(),
        }
    }

    /// An audit entry about this command (its job and input when it names them).
    fn audited(
        &self,
        c: &Incoming,
        event: AuditEvent,
        parsed: Option<&Command>,
    ) -> crate::audit::AuditEntry {
        let mut e = self.audit.of_chat(
            event,
            c.platform,
            &c.team_id,
            &c.channel_id,
            &c.channel_name,
            &c.user_id,
            &c.user_name,
        );
        e.request_id = Some(c.request_id.clone());
        match parsed {
            Some(Command::Run { job, input }) => {
                e.job = Some(job.clone());
                e.input = self.audit.input(input);
            }
            Some(Command::History { job }) => e.job = job.clone(),
            _ => {}
        }
        e
    }

    /// `help`: the grammar now (only to the person); the jobs chat can run here follow from
    /// the dispatcher, which reads them from GitLab. A queue that refuses costs the
    /// follow-up only.
    async fn help(&self, c: &Incoming) -> OutgoingMessage {
        let request = self.queued(c, RequestKind::Help, String::new(), String::new());
        if let Err(e) = self.queue.send(&request).await {
            tracing::warn!(request_id = %request.request_id, error = %e, "help: could not queue the job list; the grammar is the answer");
        }
        OutgoingMessage::ephemeral(
            Notice::Usage {
                slash: c.command.clone(),
            }
            .render(c.platform),
        )
    }

    /// `status` / `history [job]`: from the runs table, only to the person.
    async fn activity(&self, c: &Incoming, parsed: &Command) -> OutgoingMessage {
        let notice = match &self.store {
            None => Notice::ActivityUnavailable,
            Some(store) => {
                let (team, channel) = (
                    TeamId::new(c.team_id.clone()),
                    ChannelId::new(c.channel_id.clone()),
                );
                let at = crate::status::Channel {
                    platform: c.platform,
                    team: &team,
                    channel: &channel,
                };
                let now = self.clock.now();
                match parsed {
                    Command::History { job } => {
                        crate::status::history(store.as_ref(), at, job.as_deref(), now).await
                    }
                    _ => crate::status::status(store.as_ref(), at, now).await,
                }
            }
        };
        OutgoingMessage::ephemeral(notice.render(c.platform))
    }
}

fn answer(msg: &OutgoingMessage) -> HttpResponse {
    web::json(200, &msg.to_response_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    struct FakeSsm;
    #[async_trait::async_trait]
    impl SecretSource for FakeSsm {
        async fn get_secure(&self, name: &str) -> Result<String, crate::config::SecretError> {
            match name {
                "/chatops/slack" => Ok("from-ssm".into()),
                _ => Err(crate::config::SecretError::Unavailable(
                    "ParameterNotFound".into(),
                )),
            }
        }
    }

    #[tokio::test]
    async fn config_needs_a_platform_and_a_queue() {
        let err = IngressConfig::from_env(&env(&[("RUN_QUEUE_URL", "q")]), &FakeSsm)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SLACK_SIGNING_SECRET") && err.contains("MATTERMOST_TOKEN"),
            "{err}"
        );
        let err = IngressConfig::from_env(&env(&[("MATTERMOST_TOKEN", "t")]), &FakeSsm)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("RUN_QUEUE_URL"), "{err}");
    }

    #[tokio::test]
    async fn config_defaults_and_references() {
        let c = IngressConfig::from_env(
            &env(&[
                ("SLACK_SIGNING_SECRET_PARAM", "/chatops/slack"),
                ("RUN_QUEUE_URL", "q"),
            ]),
            &FakeSsm,
        )
        .await
        .unwrap();
        assert_eq!(c.slack_signing_secret.unwrap().expose(), "from-ssm");
        assert!(c.mattermost_token.is_none());
        assert_eq!(
            c.allowed_response_url_prefixes,
            vec!["https://hooks.slack.com/"]
        );
        let err = IngressConfig::from_env(
            &env(&[
                ("SLACK_SIGNING_SECRET_PARAM", "/missing"),
                ("RUN_QUEUE_URL", "q"),
            ]),
            &FakeSsm,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SLACK_SIGNING_SECRET") && err.contains("/missing"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn prefixes_are_normalised_and_mattermost_site_added() {
        let c = IngressConfig::from_env(
            &env(&[
                ("MATTERMOST_TOKEN", "t"),
                ("RUN_QUEUE_URL", "q"),
                (
                    "ALLOWED_RESPONSE_URL_PREFIXES",
                    " https://hooks.slack.com , http://127.0.0.1:9/cb/",
                ),
                ("MATTERMOST_URL", "https://mm.example.com/"),
            ]),
            &FakeSsm,
        )
        .await
        .unwrap();
        assert_eq!(
            c.allowed_response_url_prefixes,
            vec![
                "https://hooks.slack.com/",
                "http://127.0.0.1:9/cb/",
                "https://mm.example.com/hooks/commands/"
            ]
        );
        assert_eq!(c.mattermost_url.as_deref(), Some("https://mm.example.com"));
        let table: &[(&str, bool)] = &[
            ("https://hooks.slack.com/commands/T1/2/x", true),
            ("https://mm.example.com/hooks/commands/abc", true),
            ("http://127.0.0.1:9/cb/1", true),
            ("https://hooks.slack.com/", false),
            ("https://hooks.slack.com.evil.io/commands/x", false),
            ("https://hooks.slack.com@evil.io/x", false),
            ("http://hooks.slack.com/commands/x", false),
            ("https://mm.example.com/api/v4/users", false),
            ("https://hooks.slack.com/commands/x y", false),
            ("https://hooks.slack.com/commands/\\@evil.io", false),
            ("https://hooks.slack.com/commands/x\n", false),
            ("", false),
        ];
        for (url, want) in table {
            assert_eq!(c.response_url_allowed(url), *want, "{url:?}");
        }
        for bad in [
            "hooks.slack.com",
            "https://",
            "https:///x",
            "https://a@b/",
            "ftp://x/",
        ] {
            let r = IngressConfig::from_env(
                &env(&[
                    ("MATTERMOST_TOKEN", "t"),
                    ("RUN_QUEUE_URL", "q"),
                    ("ALLOWED_RESPONSE_URL_PREFIXES", bad),
                ]),
                &FakeSsm,
            )
            .await;
            assert!(
                r.unwrap_err()
                    .to_string()
                    .contains("ALLOWED_RESPONSE_URL_PREFIXES"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn request_ids_are_stable_and_distinct() {
        let a = request_id(&[b"slack", b"T1", b"123.456"]);
        assert_eq!(a, request_id(&[b"slack", b"T1", b"123.456"]));
        assert_eq!(a.as_str().len(), 32);
        assert_ne!(a, request_id(&[b"slack", b"T1", b"123.457"]));
        assert_ne!(a, request_id(&[b"slack", b"T11", b"23.456"]));
        assert_ne!(a, request_id(&[b"mattermost", b"T1", b"123.456"]));
    }

    #[test]
    fn public_base_comes_from_host_and_proto() {
        let table: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
            (
                Some("abc.lambda-url.eu-west-1.on.aws"),
                Some("https"),
                Some("https://abc.lambda-url.eu-west-1.on.aws"),
            ),
            (
                Some("abc.lambda-url.eu-west-1.on.aws"),
                None,
                Some("https://abc.lambda-url.eu-west-1.on.aws"),
            ),
            (Some("127.0.0.1:8080"), None, Some("http://127.0.0.1:8080")),
            (
                Some("localhost:8080"),
                Some("https"),
                Some("https://localhost:8080"),
            ),
            (
                Some("localhost.evil.io"),
                None,
                Some("https://localhost.evil.io"),
            ),
            (Some("evil.io/path?x"), None, None),
            (Some("a b"), None, None),
            (Some(""), None, None),
            (None, None, None),
        ];
        for (host, proto, want) in table {
            let mut b = http::Request::builder().uri("/slack/commands");
            if let Some(h) = host {
                b = b.header("host", *h);
            }
            if let Some(p) = proto {
                b = b.header("x-forwarded-proto", *p);
            }
            let req = b.body(bytes::Bytes::new()).unwrap();
            assert_eq!(public_base(&req).as_deref(), *want, "{host:?} {proto:?}");
        }
    }

    #[test]
    fn env_lists_every_variable() {
        assert_eq!(ENV.len(), 21);
        for v in crate::audit::AuditSettings::ENV {
            assert!(ENV.contains(v), "{v}");
        }
        assert!(ENV.contains(&"GITLAB_OAUTH_CLIENT_ID"));
        assert!(ENV.contains(&"ALLOWED_RESPONSE_URL_PREFIXES"));
    }
}
