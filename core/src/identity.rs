//! Who a person is in GitLab, and acting as them: the connect link (OAuth authorization
//! code + PKCE), the callback that turns a code into a stored link with sealed tokens, the
//! person's access token for each run (refreshed early, one refresh at a time across every
//! invocation), and unlinking (tokens revoked at GitLab).
//!
//! Why one refresh at a time: GitLab rotates both tokens on a refresh and invalidates the old
//! pair, so two concurrent refreshes with the same refresh token cannot both succeed; the
//! loser would hold a dead token. The store's conditional writes decide who refreshes
//! (`lock_grant` on the grant's version); the others wait for the new version and use it.
//!
//! Tokens never leave this module except as a `Secret` handed to the GitLab adapter; they are
//! sealed (`seal::Sealer`) with the person's platform/team/user as context before they are
//! stored.

use crate::clock::Clock;
use crate::gitlab::{GitLab, GitLabAs, GitLabError};
use crate::ids::{ChatUserId, GitLabUserId, RequestId, TeamId};
use crate::markup::html_escape;
use crate::oauth::{
    self, CallbackQuery, OAuthClient, OAuthError, OAuthSettings, Tokens, REFRESH_EARLY_SECS,
    STATE_TTL_SECS,
};
use crate::run::{Grant, PendingLink, Platform, RunRequest, UserLink};
use crate::seal::{SealContext, SealError, Sealer};
use crate::secret::Secret;
use crate::store::{RunStore, StoreError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one invocation may hold the right to refresh a person's tokens.
const REFRESH_LOCK_SECS: u64 = 30;
/// How long `unlink` waits for GitLab to confirm the revocation (the link is gone already).
const REVOKE_BUDGET: Duration = Duration::from_millis(1500);
/// How often a waiting invocation re-reads the link while another one refreshes.
const REFRESH_POLL: Duration = Duration::from_millis(200);

/// A chat user, as the platforms identify them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPerson {
    pub platform: Platform,
    pub team_id: TeamId,
    pub user_id: ChatUserId,
}

impl ChatPerson {
    pub fn of(req: &RunRequest) -> Self {
        Self {
            platform: req.platform,
            team_id: req.team_id.clone(),
            user_id: req.user_id.clone(),
        }
    }

    fn seal_context(&self) -> SealContext {
        SealContext::new(
            self.platform.as_str(),
            self.team_id.as_str(),
            self.user_id.as_str(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the run store failed")]
    Store(#[from] StoreError),
    #[error("the tokens could not be sealed or opened")]
    Seal(#[from] SealError),
    #[error("GitLab's OAuth endpoint failed")]
    OAuth(#[from] OAuthError),
    #[error("GitLab could not say who the token belongs to")]
    GitLab(#[from] GitLabError),
    #[error("no randomness for the connect link")]
    Random,
    #[error("the stored tokens are unreadable")]
    Corrupt,
}

/// Why a person's GitLab token is not available for a run.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Not connected, or GitLab no longer accepts the connection: the person must connect
    /// (again).
    #[error("the person must connect their GitLab account ({0})")]
    Reconnect(&'static str),
    /// The store, the key service or GitLab is unavailable, or another invocation is
    /// refreshing and did not finish in time: try again later.
    #[error("the person's GitLab token is not available right now")]
    Unavailable(#[source] IdentityError),
}

/// What the callback did.
#[derive(Debug)]
pub enum Connected {
    /// Linked; `pending` is the command the person had typed (to queue again).
    Linked {
        person: ChatPerson,
        username: String,
        pending: Option<Box<RunRequest>>,
    },
}

/// Why the callback linked nothing; each is a page the person sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackRefusal {
    /// Not a callback GitLab would send.
    Malformed,
    /// Unknown, already used or from another deployment.
    UnknownState,
    Expired,
    /// The person denied access in GitLab (or GitLab refused the request).
    Denied {
        error: String,
        description: String,
    },
    /// GitLab refused the code (wrong verifier, reused, expired, other redirect URI).
    CodeRefused,
    /// Something on our side or GitLab's failed; the person can try again.
    Unavailable,
}

impl CallbackRefusal {
    /// HTTP status and the page's sentence.
    pub fn page(&self) -> (u16, String) {
        match self {
            CallbackRefusal::Malformed => (
                400,
                "This is not a GitLab authorization answer. Start again from chat with /chatops link.".into(),
            ),
            CallbackRefusal::UnknownState => (
                400,
                "This connect link is not valid: it was already used, or it was not made for this ChatOps. Nothing was linked. Ask for a new one in chat with /chatops link.".into(),
            ),
            CallbackRefusal::Expired => (
                400,
                "This connect link has expired (links work for 10 minutes). Nothing was linked. Ask for a new one in chat with /chatops link.".into(),
            ),
            CallbackRefusal::Denied { description, .. } => (
                400,
                if description.is_empty() {
                    "GitLab did not authorize ChatOps. Nothing was linked.".to_owned()
                } else {
                    format!("GitLab did not authorize ChatOps: {description} Nothing was linked.")
                },
            ),
            CallbackRefusal::CodeRefused => (
                400,
                "GitLab refused this authorization (it was already used, has expired, or does not match this link). Nothing was linked. Ask for a new link in chat with /chatops link.".into(),
            ),
            CallbackRefusal::Unavailable => (
                503,
                "GitLab or ChatOps is not available right now. Nothing was linked. Please ask for a new link in chat with /chatops link in a moment.".into(),
            ),
        }
    }
}

/// What unlinking did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlinked {
    NotLinked,
    /// Removed; `revoked` says whether GitLab confirmed the tokens are revoked.
    Removed {
        username: String,
        revoked: bool,
    },
}

/// A small HTML page for the browser tab of the callback; the text is escaped.
pub fn html_page(title: &str, sentence: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1>\
         <p>{s}</p></body></html>",
        t = html_escape(title),
        s = html_escape(sentence)
    )
}

/// The request id of a command queued again after its person connected: distinct from the
/// original (whose run ended with the connect link), the same for the same original.
pub fn resumed_request_id(original: &RequestId) -> RequestId {
    RequestId::new(format!("{}-connected", original.as_str()))
}

pub struct Identity {
    pub settings: OAuthSettings,
    pub store: Arc<dyn RunStore>,
    pub sealer: Arc<dyn Sealer>,
    pub oauth: Arc<dyn OAuthClient>,
    pub gitlab_as: Arc<dyn GitLabAs>,
    pub clock: Arc<dyn Clock>,
}

impl Identity {
    /// A connect link for `who`, remembered for [`STATE_TTL_SECS`]; `pending` runs once
    /// they connected.
    pub async fn connect_link(
        &self,
        who: &ChatPerson,
        redirect_uri: &str,
        pending: Option<RunRequest>,
    ) -> Result<String, IdentityError> {
        let state = oauth::random_token().map_err(|_| IdentityError::Random)?;
        let verifier = Secret::new(oauth::random_token().map_err(|_| IdentityError::Random)?);
        let url = self.settings.authorize_url(redirect_uri, &state, &verifier);
        self.store
            .put_pending_link(&PendingLink {
                state,
                platform: who.platform,
                team_id: who.team_id.clone(),
                chat_user_id: who.user_id.clone(),
                verifier: verifier.expose().to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                pending,
                expires_at: self.clock.now() + STATE_TTL_SECS,
            })
            .await?;
        Ok(url)
    }

    /// The callback: the state taken (single use), the code exchanged with its verifier, the
    /// GitLab user read with the new token, the link stored with the tokens sealed.
    pub async fn complete(&self, query: &str) -> Result<Connected, CallbackRefusal> {
        let (code, state) = match oauth::parse_callback(query) {
            None => return Err(CallbackRefusal::Malformed),
            Some(CallbackQuery::Error {
                error,
                description,
                state,
            }) => {
                if let Some(state) = state {
                    // The link is spent either way.
                    let _ = self.store.take_pending_link(&state).await;
                }
                return Err(CallbackRefusal::Denied { error, description });
            }
            Some(CallbackQuery::Code { code, state }) => (code, state),
        };
        let pending = match self.store.take_pending_link(&state).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(CallbackRefusal::UnknownState),
            Err(e) => {
                tracing::error!(error = %crate::report::chain(&e), "could not read the connect link");
                return Err(CallbackRefusal::Unavailable);
            }
        };
        let now = self.clock.now();
        if pending.expires_at <= now {
            return Err(CallbackRefusal::Expired);
        }
        let person = ChatPerson {
            platform: pending.platform,
            team_id: pending.team_id.clone(),
            user_id: pending.chat_user_id.clone(),
        };
        let verifier = Secret::new(pending.verifier.clone());
        let tokens = match self
            .oauth
            .exchange_code(&code, &verifier, &pending.redirect_uri, now)
            .await
        {
            Ok(t) => t,
            Err(OAuthError::InvalidGrant(_)) => return Err(CallbackRefusal::CodeRefused),
            Err(e) => {
                tracing::error!(error = %crate::report::chain(&e), "could not exchange the authorization code");
                return Err(CallbackRefusal::Unavailable);
            }
        };
        match self.store_link(&person, &tokens).await {
            Ok(username) => {
                tracing::info!(
                    platform = person.platform.as_str(),
                    team = %person.team_id,
                    user = %person.user_id,
                    gitlab_user = %username,
                    "GitLab account connected"
                );
                Ok(Connected::Linked {
                    person,
                    username,
                    pending: pending.pending.map(Box::new),
                })
            }
            Err(e) => {
                tracing::error!(error = %crate::report::chain(&e), "could not store the connection");
                // Do not leave a working token behind that nobody holds.
                let _ = self.oauth.revoke(&tokens.refresh_token).await;
                Err(CallbackRefusal::Unavailable)
            }
        }
    }

    async fn store_link(
        &self,
        person: &ChatPerson,
        tokens: &Tokens,
    ) -> Result<String, IdentityError> {
        let user = self
            .gitlab_as
            .as_person(&tokens.access_token)
            .current_user()
            .await?;
        let sealed = self
            .sealer
            .seal(&tokens.to_secret(), &person.seal_context())
            .await?;
        let now = self.clock.now();
        self.store
            .link_user(&UserLink {
                team_id: person.team_id.clone(),
                chat_user_id: person.user_id.clone(),
                gitlab_username: user.username.clone(),
                gitlab_user_id: Some(GitLabUserId(user.id.0)),
                linked_at: now,
                platform: Some(person.platform),
                grant: Some(Grant {
                    sealed: STANDARD.encode(sealed),
                    expires_at: tokens.expires_at,
                    version: now,
                    broken: false,
                    refresh_lock_until: 0,
                }),
            })
            .await?;
        Ok(user.username)
    }

    /// GitLab as the person of `link`, with their access token (refreshed first when it
    /// expires within [`REFRESH_EARLY_SECS`]).
    pub async fn gitlab_for(
        &self,
        who: &ChatPerson,
        link: &UserLink,
        deadline: Instant,
    ) -> Result<Arc<dyn GitLab>, CredentialError> {
        let token = self.access_token(who, link, deadline).await?;
        Ok(self.gitlab_as.as_person(&token))
    }

    /// The person's access token.
    pub async fn access_token(
        &self,
        who: &ChatPerson,
        link: &UserLink,
        deadline: Instant,
    ) -> Result<Secret, CredentialError> {
        let ctx = who.seal_context();
        let mut link = link.clone();
        loop {
            let Some(grant) = link.grant.clone() else {
                return Err(CredentialError::Reconnect("not connected"));
            };
            if grant.broken {
                return Err(CredentialError::Reconnect("GitLab refused the connection"));
            }
            let now = self.clock.now();
            if grant.expires_at > now + REFRESH_EARLY_SECS {
                return Ok(self.open(&grant, &ctx).await?.access_token);
            }
            let locked = self
                .store
                .lock_grant(
                    who.team_id.as_str(),
                    who.user_id.as_str(),
                    grant.version,
                    now,
                    now + REFRESH_LOCK_SECS,
                )
                .await
                .map_err(|e| CredentialError::Unavailable(e.into()))?;
            if locked {
                return self.refresh(who, &grant, &ctx).await;
            }
            // Another invocation refreshes: wait for its new version.
            if Instant::now() + REFRESH_POLL >= deadline {
                return Err(CredentialError::Unavailable(IdentityError::Store(
                    StoreError::Unavailable("another invocation is refreshing the token".into()),
                )));
            }
            tokio::time::sleep(REFRESH_POLL).await;
            link = match self
                .store
                .get_user(who.team_id.as_str(), who.user_id.as_str())
                .await
            {
                Ok(Some(l)) => l,
                Ok(None) => return Err(CredentialError::Reconnect("unlinked")),
                Err(e) => return Err(CredentialError::Unavailable(e.into())),
            };
        }
    }

    async fn open(&self, grant: &Grant, ctx: &SealContext) -> Result<Tokens, CredentialError> {
        let bytes = STANDARD
            .decode(&grant.sealed)
            .map_err(|_| CredentialError::Unavailable(IdentityError::Corrupt))?;
        match self.sealer.open(&bytes, ctx).await {
            Ok(secret) => Tokens::from_secret(&secret, grant.expires_at)
                .ok_or(CredentialError::Unavailable(IdentityError::Corrupt)),
            // Sealed for someone else or with a retired key: only connecting again helps.
            Err(SealError::Invalid) => {
                Err(CredentialError::Reconnect("the stored tokens do not open"))
            }
            Err(e) => Err(CredentialError::Unavailable(e.into())),
        }
    }

    /// We hold the refresh lock for `grant.version`: refresh, store the new pair, answer it.
    async fn refresh(
        &self,
        who: &ChatPerson,
        grant: &Grant,
        ctx: &SealContext,
    ) -> Result<Secret, CredentialError> {
        let (team, user) = (who.team_id.as_str(), who.user_id.as_str());
        let old = self.open(grant, ctx).await?;
        let now = self.clock.now();
        match self.oauth.refresh(&old.refresh_token, None, now).await {
            Ok(tokens) => {
                let sealed = self
                    .sealer
                    .seal(&tokens.to_secret(), ctx)
                    .await
                    .map_err(|e| CredentialError::Unavailable(e.into()))?;
                let next = Grant {
                    sealed: STANDARD.encode(sealed),
                    expires_at: tokens.expires_at,
                    version: grant.version + 1,
                    broken: false,
                    refresh_lock_until: 0,
                };
                match self
                    .store
                    .update_grant(team, user, grant.version, &next)
                    .await
                {
                    Ok(true) => {
                        tracing::info!(team, user, "GitLab token refreshed");
                        Ok(tokens.access_token)
                    }
                    // Unlinked meanwhile: the new pair is nobody's; revoke it.
                    Ok(false) => {
                        let _ = self.oauth.revoke(&tokens.refresh_token).await;
                        Err(CredentialError::Reconnect("unlinked while refreshing"))
                    }
                    // The old pair is dead and the new one is not stored: the person must
                    // connect again (no token can be kept that is not sealed and stored).
                    Err(e) => {
                        tracing::error!(team, user, error = %crate::report::chain(&e), "refreshed tokens could not be stored");
                        let _ = self.oauth.revoke(&tokens.refresh_token).await;
                        Err(CredentialError::Unavailable(e.into()))
                    }
                }
            }
            Err(OAuthError::InvalidGrant(_)) => {
                tracing::warn!(
                    team,
                    user,
                    "GitLab refused the refresh token; the person must reconnect"
                );
                let broken = Grant {
                    version: grant.version + 1,
                    broken: true,
                    refresh_lock_until: 0,
                    ..grant.clone()
                };
                let _ = self
                    .store
                    .update_grant(team, user, grant.version, &broken)
                    .await;
                Err(CredentialError::Reconnect(
                    "GitLab refused the refresh token",
                ))
            }
            Err(e) => {
                // Let the next attempt try at once rather than after the lock.
                let released = Grant {
                    refresh_lock_until: 0,
                    ..grant.clone()
                };
                let _ = self
                    .store
                    .update_grant(team, user, grant.version, &released)
                    .await;
                Err(CredentialError::Unavailable(e.into()))
            }
        }
    }

    /// Remove the person's link and revoke their tokens at GitLab.
    pub async fn unlink(&self, who: &ChatPerson) -> Result<Unlinked, IdentityError> {
        let (team, user) = (who.team_id.as_str(), who.user_id.as_str());
        let Some(link) = self.store.get_user(team, user).await? else {
            return Ok(Unlinked::NotLinked);
        };
        // Removed first: whatever GitLab says, no later run uses these tokens.
        self.store.unlink_user(team, user).await?;
        let mut revoked = false;
        if let Some(grant) = link.grant.as_ref().filter(|g| !g.broken) {
            match self.open(grant, &who.seal_context()).await {
                Ok(t) => {
                    // Revoking the refresh token revokes its access token too. Bounded: the
                    // ingress answers within Slack's 3 seconds either way.
                    let revoke = self.oauth.revoke(&t.refresh_token);
                    revoked = matches!(
                        tokio::time::timeout(REVOKE_BUDGET, revoke).await,
                        Ok(Ok(()))
                    );
                    if !revoked {
                        tracing::warn!(team, user, "GitLab did not confirm the revocation");
                    }
                }
                Err(e) => {
                    tracing::warn!(team, user, error = %e, "could not open the tokens to revoke them")
                }
            }
        }
        Ok(Unlinked::Removed {
            username: link.gitlab_username,
            revoked,
        })
    }
}
