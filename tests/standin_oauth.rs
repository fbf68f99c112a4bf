//! The GitLab stand-in's users, OAuth 2 provider (Doorkeeper) and protected branches, driven
//! over real HTTP the way a browser and an OAuth client would: authorize → token → API with
//! PKCE, the refusals GitLab gives (codes, refresh rotation, revocation, expiry), and who may
//! run, play and cancel pipelines.

use chatops_sim::gitlab::{pkce_challenge, GitLabStandin, StandinCiJob, StandinUser};
use reqwest::{header, Client, Response, StatusCode, Url};
use serde_json::{json, Value};
use std::collections::HashMap;

const PROJECT: u64 = 42;
const CLIENT_ID: &str = "chatops-client-id";
const CLIENT_SECRET: &str = "gloas-chatops-secret";
const REDIRECT: &str = "https://chatops.example/oauth/gitlab/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-chatops-verifier";

const INVALID_GRANT: &str = "The provided authorization grant is invalid, expired, revoked, does \
     not match the redirection URI used in the authorization request, or was issued to another \
     client.";
const INVALID_CLIENT: &str = "Client authentication failed due to unknown client, no client \
     authentication included, or unsupported authentication method.";
const EXPIRED: &str = "Token is expired. You can either do re-authorization or token refresh.";
const REVOKED: &str = "Token was revoked. You have to re-authorize from the user.";

struct World {
    gl: GitLabStandin,
    /// Follows no redirects: the test reads each `Location`.
    http: Client,
}

async fn world() -> World {
    let gl = GitLabStandin::start().await;
    let s = gl.state();
    s.add_project(PROJECT, "ops/deploy");
    s.set_ci_jobs(
        PROJECT,
        vec![
            StandinCiJob::plain("build"),
            StandinCiJob::plain("release").manual(),
        ],
    );
    s.register_oauth_app(CLIENT_ID, CLIENT_SECRET, REDIRECT);
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    World { gl, http }
}

impl World {
    fn api(&self, path: &str) -> String {
        format!("{}/api/v4{path}", self.gl.url())
    }

    async fn authorize(&self, params: &[(&str, &str)]) -> Response {
        self.http
            .get(format!("{}/oauth/authorize", self.gl.url()))
            .query(params)
            .send()
            .await
            .unwrap()
    }

    /// The usual authorization request, with PKCE S256 for [`VERIFIER`].
    async fn authorize_ok(&self, state: &str) -> Response {
        let challenge = pkce_challenge(VERIFIER);
        self.authorize(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("state", state),
            ("scope", "api"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .await
    }

    /// A fresh code approved by whoever is signed in.
    async fn code(&self) -> String {
        let r = self.authorize_ok("s").await;
        assert_eq!(r.status(), StatusCode::FOUND);
        let q = redirect_query(&r);
        q["code"].clone()
    }

    async fn token(&self, form: &[(&str, &str)]) -> Response {
        self.http
            .post(format!("{}/oauth/token", self.gl.url()))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn exchange(&self, code: &str, verifier: &str, redirect: &str) -> Response {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code_verifier", verifier),
        ])
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> Response {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("redirect_uri", REDIRECT),
        ])
        .await
    }

    /// `(access_token, refresh_token)` for whoever is signed in.
    async fn tokens(&self) -> (String, String) {
        let code = self.code().await;
        let r = self.exchange(&code, VERIFIER, REDIRECT).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        (
            v["access_token"].as_str().unwrap().to_owned(),
            v["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    async fn me(&self, bearer: &str) -> Response {
        self.http
            .get(self.api("/user"))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }

    async fn revoke(&self, token: &str, secret: &str) -> Response {
        self.http
            .post(format!("{}/oauth/revoke", self.gl.url()))
            .form(&[
                ("token", token),
                ("client_id", CLIENT_ID),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap()
    }

    /// `POST /projects/:id/pipeline` on `main` with a personal token in `PRIVATE-TOKEN`.
    async fn create_pipeline(&self, private_token: &str) -> Response {
        self.http
            .post(self.api(&format!("/projects/{PROJECT}/pipeline")))
            .header("PRIVATE-TOKEN", private_token)
            .json(&json!({"ref": "main"}))
            .send()
            .await
            .unwrap()
    }

    fn user(&self, name: &str, access: u32) -> StandinUser {
        self.gl.state().add_user_with_access(name, access)
    }
}

fn location(r: &Response) -> String {
    r.headers()
        .get(header::LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

fn redirect_query(r: &Response) -> HashMap<String, String> {
    let url = Url::parse(&location(r)).unwrap();
    url.query_pairs().into_owned().collect()
}

async fn body(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn assert_invalid_grant(r: Response) {
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(
        www,
        format!(
            "Bearer realm=\"Doorkeeper\", error=\"invalid_grant\", error_description=\"{INVALID_GRANT}\""
        )
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"error": "invalid_grant", "error_description": INVALID_GRANT})
    );
}

#[tokio::test]
async fn authorize_token_user_with_pkce() {
    let w = world().await;
    let alice = w.user("alice", 30);
    w.gl.state().sign_in_browser_as("alice");

    // The state comes back unchanged, whatever it holds.
    let state = "r4nd0m.alice U123/T9&x=y+z%";
    let r = w.authorize_ok(state).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = location(&r);
    assert!(loc.starts_with(&format!("{REDIRECT}?code=")), "{loc}");
    let q = redirect_query(&r);
    assert_eq!(q["state"], state);
    let code = &q["code"];
    assert_eq!(code.len(), 64);
    assert!(code.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(w.gl.state().oauth_pending_codes(), 1);

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = w.exchange(code, VERIFIER, REDIRECT).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 7200);
    assert_eq!(v["scope"], "api");
    let created = v["created_at"].as_u64().unwrap();
    assert!(created >= before && created <= before + 5, "{v}");
    let access = v["access_token"].as_str().unwrap();
    let refresh = v["refresh_token"].as_str().unwrap();
    assert_eq!((access.len(), refresh.len()), (64, 64));
    assert_ne!(access, refresh);
    assert_eq!(w.gl.state().oauth_tokens_issued(), 1);
    assert_eq!(w.gl.state().oauth_pending_codes(), 0);

    let (status, me) = body(w.me(access).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], alice.id);
    assert_eq!(me["username"], "alice");
    assert_eq!(me["state"], "active");
    assert_eq!(me["avatar_url"], Value::Null);
    assert_eq!(me["web_url"], format!("{}/alice", w.gl.url()));
    let rec = w.gl.state().requests();
    let last = rec.last().unwrap();
    assert_eq!(
        (last.path.as_str(), last.user.as_deref()),
        ("/api/v4/user", Some("alice"))
    );

    // An OAuth token is no personal token: GitLab looks it up as one and refuses it.
    let r = w
        .http
        .get(w.api("/user"))
        .header("PRIVATE-TOKEN", access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        body(r).await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"})
        )
    );
    // A personal token works in either header; the bot's token is the bot.
    for (name, value) in [
        ("PRIVATE-TOKEN", alice.personal_token.clone()),
        ("Authorization", format!("Bearer {}", alice.personal_token)),
    ] {
        let r = w
            .http
            .get(w.api("/user"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(body(r).await.1["username"], "alice", "{name}");
    }
    let (_, bot) = body(w.me(&w.gl.token()).await).await;
    assert_eq!(
        (bot["username"].as_str(), bot["bot"].as_bool()),
        (Some("chatops-bot"), Some(true))
    );
    let (status, v) = body(w.me("0123456789abcdef").await).await;
    assert_eq!(
        (status, v),
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"})
        )
    );
}

#[tokio::test]
async fn authorize_refusals_follow_doorkeeper() {
    let w = world().await;
    w.user("alice", 30);
    let challenge = pkce_challenge(VERIFIER);

    // Nobody signed in: to the sign-in page first.
    let r = w.authorize_ok("s1").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), format!("{}/users/sign_in", w.gl.url()));

    w.gl.state().sign_in_browser_as("alice");
    // Unknown client, or a redirect URI not exactly registered: an error page, no redirect.
    for (client, redirect, text) in [
        ("someone-else", REDIRECT, "Client authentication failed"),
        (
            CLIENT_ID,
            "https://chatops.example/oauth/gitlab/callback/",
            "The redirect URI included is not valid.",
        ),
        (
            CLIENT_ID,
            "https://evil.example/cb",
            "The redirect URI included is not valid.",
        ),
    ] {
        let r = w
            .authorize(&[
                ("client_id", client),
                ("redirect_uri", redirect),
                ("response_type", "code"),
                ("state", "s2"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{client} {redirect}");
        assert!(r.headers().get(header::LOCATION).is_none());
        let html = r.text().await.unwrap();
        assert!(html.contains(text), "{html}");
    }

    // PKCE is required, and only S256: back to the client with invalid_request.
    for params in [
        vec![("code_challenge_method", "S256")],
        vec![
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "plain"),
        ],
        vec![("code_challenge", challenge.as_str())],
    ] {
        let mut all = vec![
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("state", "s3"),
        ];
        all.extend(params);
        let r = w.authorize(&all).await;
        assert_eq!(r.status(), StatusCode::FOUND);
        let q = redirect_query(&r);
        assert_eq!(q["error"], "invalid_request", "{q:?}");
        assert_eq!(q["state"], "s3");
        assert!(!q.contains_key("code"));
    }

    // A scope the application may not ask for.
    let r = w
        .authorize(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "api sudo"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .await;
    assert_eq!(redirect_query(&r)["error"], "invalid_scope");

    // The user clicks Deny once.
    w.gl.state().deny_next_authorization();
    let r = w.authorize_ok("s4").await;
    let q = redirect_query(&r);
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "s4")
    );
    assert_eq!(
        q["error_description"],
        "The resource owner or authorization server denied the request."
    );
    assert!(redirect_query(&w.authorize_ok("s5").await).contains_key("code"));

    // A blocked user's session counts as nobody's.
    w.gl.state().block_user("alice");
    let r = w.authorize_ok("s6").await;
    assert_eq!(location(&r), format!("{}/users/sign_in", w.gl.url()));
}

#[tokio::test]
async fn codes_are_checked_and_single_use() {
    let w = world().await;
    w.user("alice", 30);
    w.gl.state().sign_in_browser_as("alice");
    let code = w.code().await;

    assert_invalid_grant(
        w.exchange(&code, "the-wrong-verifier-0123456789-0123456789", REDIRECT)
            .await,
    )
    .await;
    assert_invalid_grant(
        w.exchange(&code, VERIFIER, "https://chatops.example/other")
            .await,
    )
    .await;
    let (status, v) = body(w.exchange(&code, "", REDIRECT).await).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    // Bad client credentials: 401 invalid_client, in the form or in HTTP Basic.
    let r = w
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(
        body(r).await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": INVALID_CLIENT})
        )
    );
    // Failed attempts do not spend the code (Doorkeeper revokes it only when it issues a
    // token); HTTP Basic client authentication works.
    let r = w
        .http
        .post(format!("{}/oauth/token", w.gl.url()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, first) = body(r).await;

    // Used once: refused the second time; the first tokens keep working.
    assert_invalid_grant(w.exchange(&code, VERIFIER, REDIRECT).await).await;
    assert_invalid_grant(w.exchange("no-such-code", VERIFIER, REDIRECT).await).await;
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(w.me(access).await.status(), StatusCode::OK);
    assert_eq!(w.gl.state().oauth_tokens_issued(), 1);

    // Expired: codes live 10 minutes; with a lifetime of 0 they are born expired.
    w.gl.state().set_code_lifetime_secs(0);
    let code = w.code().await;
    assert_invalid_grant(w.exchange(&code, VERIFIER, REDIRECT).await).await;
}

#[tokio::test]
async fn refresh_rotates_and_invalidates_the_old_pair() {
    let w = world().await;
    w.user("alice", 30);
    w.gl.state().sign_in_browser_as("alice");
    let (access, refresh) = w.tokens().await;

    let r = w.refresh(&refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let (access2, refresh2) = (
        v["access_token"].as_str().unwrap(),
        v["refresh_token"].as_str().unwrap(),
    );
    assert!(access2 != access && refresh2 != refresh);
    assert_eq!(
        (v["expires_in"].as_u64(), v["scope"].as_str()),
        (Some(7200), Some("api"))
    );
    assert_eq!(w.gl.state().oauth_refresh_count(), 1);
    assert_eq!(w.gl.state().oauth_tokens_issued(), 2);

    // The old access token is revoked at once, the old refresh token too.
    let r = w.me(&access).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "invalid_token", "error_description": REVOKED})
    );
    assert_invalid_grant(w.refresh(&refresh).await).await;
    assert_eq!(body(w.me(access2).await).await.1["username"], "alice");

    // Without client credentials a confidential application's refresh token is refused.
    let r = w
        .token(&[("grant_type", "refresh_token"), ("refresh_token", refresh2)])
        .await;
    assert_invalid_grant(r).await;
    assert_invalid_grant(w.refresh("unknown-refresh-token").await).await;
    assert_eq!(w.gl.state().oauth_refresh_count(), 1);

    // `/oauth/*` calls are recorded and take injected faults like the API's.
    w.gl.state().fail_next(
        chatops_sim::gitlab::Fault::Status(503),
        1,
        Some("/oauth/token"),
    );
    assert_eq!(
        w.refresh(refresh2).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let calls: Vec<u16> =
        w.gl.state()
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/oauth/token")
            .map(|r| r.status)
            .collect();
    assert_eq!(calls, vec![200, 200, 400, 400, 400, 503]);
    // The fault spent, the refresh token still works.
    assert_eq!(w.refresh(refresh2).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_let_exactly_one_win() {
    let w = world().await;
    w.user("alice", 30);
    w.gl.state().sign_in_browser_as("alice");
    let (_, refresh) = w.tokens().await;

    let attempts = (0..8).map(|_| w.refresh(&refresh));
    let results = futures_util::future::join_all(attempts).await;
    let mut won = Vec::new();
    let mut lost = 0;
    for r in results {
        match r.status() {
            StatusCode::OK => won.push(r.json::<Value>().await.unwrap()),
            _ => {
                assert_invalid_grant(r).await;
                lost += 1;
            }
        }
    }
    assert_eq!((won.len(), lost), (1, 7));
    assert_eq!(w.gl.state().oauth_refresh_count(), 1);
    let access = won[0]["access_token"].as_str().unwrap();
    assert_eq!(w.me(access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revocation_by_the_client_and_by_the_user() {
    let w = world().await;
    w.user("alice", 30);
    w.gl.state().sign_in_browser_as("alice");
    let (access, refresh) = w.tokens().await;

    // Someone else's client may not revoke it; a token nobody holds is a quiet 200.
    let r = w.revoke(&access, "wrong-secret").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    assert_eq!(w.me(&access).await.status(), StatusCode::OK);
    assert_eq!(
        body(w.revoke("never-issued", CLIENT_SECRET).await).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(w.gl.state().oauth_revocations(), 0);

    assert_eq!(
        body(w.revoke(&access, CLIENT_SECRET).await).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(w.gl.state().oauth_revocations(), 1);
    assert!(!w.gl.state().oauth_access_token_valid(&access));
    let r = w.me(&access).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\""));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error_description"],
        REVOKED
    );
    assert_invalid_grant(w.refresh(&refresh).await).await;

    // The user revokes the application in their profile: every token of theirs stops.
    let (a1, r1) = w.tokens().await;
    let (a2, _) = w.tokens().await;
    assert_eq!(w.gl.state().revoke_all_tokens_of("alice"), 2);
    for a in [&a1, &a2] {
        assert_eq!(w.me(a).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_invalid_grant(w.refresh(&r1).await).await;
}

#[tokio::test]
async fn expired_access_tokens_are_refused_and_refresh_still_works() {
    let w = world().await;
    w.user("alice", 30);
    w.gl.state().sign_in_browser_as("alice");
    w.gl.state().set_access_token_lifetime_secs(0);
    let code = w.code().await;
    let (_, v) = body(w.exchange(&code, VERIFIER, REDIRECT).await).await;
    assert_eq!(v["expires_in"], 0);
    let access = v["access_token"].as_str().unwrap();

    let r = w.me(access).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"].to_str().unwrap(),
        format!(
            "Bearer realm=\"Protected by OAuth 2.0\", error=\"invalid_token\", error_description=\"{EXPIRED}\""
        )
    );
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "invalid_token", "error_description": EXPIRED})
    );

    // A refresh token outlives its access token.
    w.gl.state().set_access_token_lifetime_secs(7200);
    let (_, v) = body(w.refresh(v["refresh_token"].as_str().unwrap()).await).await;
    assert_eq!(v["expires_in"], 7200);
    assert_eq!(
        w.me(v["access_token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn protected_branches_roles_and_members() {
    let w = world().await;
    let dev = w.user("dave", 30);
    let maint = w.user("mia", 40);
    let reporter = w.user("rita", 20);
    let outsider = w.user("otto", 0);
    w.gl.state().protect_branch(PROJECT, "main", 40);

    let (status, v) = body(w.create_pipeline(&dev.personal_token).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"message": {"base": ["You do not have sufficient permission to run a pipeline on 'main'. Please select a different branch or contact your administrator for assistance."]}})
    );

    let (status, v) = body(w.create_pipeline(&maint.personal_token).await).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"]["username"], "mia");
    assert_eq!(v["user"]["id"], maint.id);
    let pid = v["id"].as_u64().unwrap();
    assert_eq!(w.gl.state().pipeline_creator(pid).as_deref(), Some("mia"));

    // Below Developer: GitLab's `authorize! :create_pipeline`.
    assert_eq!(
        body(w.create_pipeline(&reporter.personal_token).await).await,
        (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"}))
    );
    // Not a member of the private project: it does not exist for them.
    assert_eq!(
        body(w.create_pipeline(&outsider.personal_token).await).await,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "404 Project Not Found"})
        )
    );
    for path in [
        format!("/projects/{PROJECT}"),
        format!("/projects/{PROJECT}/pipelines/{pid}"),
        "/projects/ops%2Fdeploy".to_owned(),
    ] {
        let r = w
            .http
            .get(w.api(&path))
            .header("PRIVATE-TOKEN", &outsider.personal_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // Each caller sees their own permissions; a per-project override beats the default.
    let r = w
        .http
        .get(w.api(&format!("/projects/{PROJECT}")))
        .header("PRIVATE-TOKEN", &reporter.personal_token)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["permissions"]["project_access"]["access_level"], 20);
    assert!(v
        .get("ci_pipeline_variables_minimum_override_role")
        .is_none());
    w.gl.state().set_user_access("dave", PROJECT, 0);
    let r = w
        .http
        .get(w.api(&format!("/projects/{PROJECT}/members/all/{}", dev.id)))
        .header("PRIVATE-TOKEN", &maint.personal_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = w
        .http
        .get(w.api(&format!("/projects/{PROJECT}/members/all/{}", reporter.id)))
        .header("PRIVATE-TOKEN", &maint.personal_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["access_level"], 20);

    // Unprotected, a Developer may run it.
    w.gl.state().unprotect_branch(PROJECT, "main");
    w.gl.state().set_user_access("dave", PROJECT, 30);
    assert_eq!(
        w.create_pipeline(&dev.personal_token).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn who_created_played_and_cancelled_is_recorded() {
    let w = world().await;
    w.user("alice", 30);
    let bob = w.user("bob", 40);
    let rita = w.user("rita", 20);
    w.gl.state().sign_in_browser_as("alice");
    let (access, _) = w.tokens().await;

    // Alice, through OAuth.
    let r = w
        .http
        .post(w.api(&format!("/projects/{PROJECT}/pipeline")))
        .bearer_auth(&access)
        .json(&json!({"ref": "main"}))
        .send()
        .await
        .unwrap();
    let (status, v) = body(r).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let pid = v["id"].as_u64().unwrap();
    assert_eq!(v["user"]["username"], "alice");
    assert_eq!(w.gl.state().pipeline_creator(pid).as_deref(), Some("alice"));
    let r = w
        .http
        .get(w.api(&format!("/projects/{PROJECT}/pipelines/{pid}")))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["user"]["username"],
        "alice"
    );

    let jobs = w.gl.state().jobs_of(pid);
    let manual = jobs.iter().find(|j| j.manual).unwrap().id;
    let play = |token: String| {
        w.http
            .post(w.api(&format!("/projects/{PROJECT}/jobs/{manual}/play")))
            .header("PRIVATE-TOKEN", token)
            .send()
    };
    assert_eq!(
        body(play(rita.personal_token.clone()).await.unwrap()).await,
        (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"}))
    );
    let (status, v) = body(play(bob.personal_token.clone()).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (v["status"].as_str(), v["user"]["username"].as_str()),
        (Some("pending"), Some("bob"))
    );
    assert_eq!(w.gl.state().job_player(manual).as_deref(), Some("bob"));
    let (status, v) = body(play(bob.personal_token.clone()).await.unwrap()).await;
    assert_eq!(
        (status, v),
        (
            StatusCode::BAD_REQUEST,
            json!({"message": "400 Bad request - Unplayable Job"})
        )
    );

    // A read_api token reads but may not cancel; an api token of bob's may.
    let cancel = |auth: String| {
        w.http
            .post(w.api(&format!("/projects/{PROJECT}/pipelines/{pid}/cancel")))
            .header("Authorization", auth)
            .send()
    };
    w.gl.state().sign_in_browser_as("bob");
    let challenge = pkce_challenge(VERIFIER);
    let r = w
        .authorize(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "read_api"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .await;
    let code = redirect_query(&r)["code"].clone();
    let (_, v) = body(w.exchange(&code, VERIFIER, REDIRECT).await).await;
    assert_eq!(v["scope"], "read_api");
    let read_only = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(w.me(&read_only).await.status(), StatusCode::OK);
    let (status, v) = body(cancel(format!("Bearer {read_only}")).await.unwrap()).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope"))
    );
    assert_eq!(w.gl.state().pipeline_canceller(pid), None);

    let (status, v) = body(
        cancel(format!("Bearer {}", bob.personal_token))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "canceled");
    assert_eq!(
        v["user"]["username"], "alice",
        "the pipeline's user stays its creator"
    );
    assert_eq!(w.gl.state().pipeline_canceller(pid).as_deref(), Some("bob"));

    // The bot's own pipelines are the bot's.
    let (_, v) = body(w.create_pipeline(&w.gl.token()).await).await;
    let bot_pid = v["id"].as_u64().unwrap();
    assert_eq!(
        w.gl.state().pipeline_creator(bot_pid).as_deref(),
        Some("chatops-bot")
    );
}

#[tokio::test]
async fn blocked_users_are_forbidden_whatever_their_token() {
    let w = world().await;
    let alice = w.user("alice", 30);
    w.gl.state().sign_in_browser_as("alice");
    let (access, _) = w.tokens().await;
    w.gl.state().block_user("alice");
    let blocked = (
        StatusCode::FORBIDDEN,
        json!({"message": "403 Forbidden - Your account has been blocked."}),
    );
    assert_eq!(body(w.me(&access).await).await, blocked);
    assert_eq!(body(w.me(&alice.personal_token).await).await, blocked);
    w.gl.state().unblock_user("alice");
    assert_eq!(w.me(&access).await.status(), StatusCode::OK);
    let r = w
        .http
        .get(w.api("/users?username=alice"))
        .header("PRIVATE-TOKEN", w.gl.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()[0]["state"], "active");
}

/// The policy file through the repository files API, and each person's own access, as the
/// REST client reads them: per-user permission, 404 as "no file", a minute's cache per token.
#[tokio::test]
async fn repository_files_and_own_access_per_person() {
    use chatops_adapters::gitlab::GitLabClient;
    use chatops_core::gitlab::{AccessLevel, GitLab, GitLabError};
    use chatops_core::ids::ProjectId;
    use chatops_core::policy::POLICY_PATH;
    use chatops_core::secret::Secret;

    let w = world().await;
    let reporter = w.user("rita", 20);
    let guest = w.user("gus", 10);
    let maint = w.user("mia", 40);
    let client = |u: &StandinUser| {
        GitLabClient::new(&w.gl.url(), Secret::new(u.personal_token.clone())).unwrap()
    };
    let p = ProjectId(PROJECT);
    let text = "jobs:\n  deploy:\n    approvals: 1\n";
    w.gl.state().set_file(PROJECT, POLICY_PATH, Some(text));

    let as_reporter = client(&reporter);
    assert_eq!(
        as_reporter
            .repository_file(p, POLICY_PATH, "main")
            .await
            .unwrap()
            .as_deref(),
        Some(text)
    );
    assert_eq!(
        as_reporter
            .repository_file(p, "no/such.yml", "main")
            .await
            .unwrap(),
        None
    );
    // `download_code` is Reporter+.
    assert!(matches!(
        client(&guest).repository_file(p, POLICY_PATH, "main").await,
        Err(GitLabError::Forbidden(_))
    ));
    // Reused for a minute per token: an edit is seen by a token that has not read it yet.
    w.gl.state().set_file(PROJECT, POLICY_PATH, None);
    assert!(as_reporter
        .repository_file(p, POLICY_PATH, "main")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        client(&maint)
            .repository_file(p, POLICY_PATH, "main")
            .await
            .unwrap(),
        None
    );

    assert_eq!(
        as_reporter.project_access(p).await.unwrap(),
        Some(AccessLevel::REPORTER)
    );
    assert_eq!(
        client(&maint).project_access(p).await.unwrap(),
        Some(AccessLevel::MAINTAINER)
    );
}
