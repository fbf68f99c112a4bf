//! The offline demo (`chatops demo`): the GitLab and Slack stand-ins of `chatops-sim` (the
//! jobs of `tests/demo-project` run for real in bash), local mode wired to them, GitLab's
//! example jobs sent as signed slash commands, and the channel printed as a person reads it.
//! The end-to-end tests drive the same world.

use crate::local::{init_tracing, offline_sdk_config, Local, LocalError, Running};
use chatops_adapters::services::Inbox;
use chatops_core::config::Env;
use chatops_sim::gitlab::{GitLabStandin, STANDIN_TOKEN};
use chatops_sim::runner::{standin_jobs, CiFile, Runner, ShellExecutor};
use chatops_sim::slack::{render_posts, Post, SlackStandIn, Via};
use std::sync::Arc;
use std::time::Duration;

/// The demo's Slack workspace and GitLab project.
pub const DEMO_TEAM: &str = "T0DEMO";
pub const DEMO_CHANNEL: &str = "C0OPS";
pub const DEMO_CHANNEL_NAME: &str = "ops";
pub const DEMO_PROJECT: &str = "demo/ops";
pub const DEMO_PROJECT_ID: u64 = 1;
const DEMO_SIGNING_SECRET: &str = "demo-signing-secret-not-a-real-one";
const DEMO_BOT_TOKEN: &str = "xoxb-demo-bot-token";
const DEMO_WEBHOOK_SECRET: &str = "demo-webhook-secret";
/// The demo's GitLab OAuth application (registered on the stand-in).
pub const DEMO_OAUTH_CLIENT_ID: &str = "demo-chatops-app";
const DEMO_OAUTH_CLIENT_SECRET: &str = "gloas-demo-secret-not-a-real-one";

/// A chat user of the demo and the GitLab account it is linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoUser {
    pub slack_id: &'static str,
    pub name: &'static str,
    pub gitlab_id: u64,
    pub access_level: u32,
}

/// Developer: may run jobs.
pub const ALICE: DemoUser = DemoUser {
    slack_id: "U0ALICE",
    name: "alice",
    gitlab_id: 11,
    access_level: 30,
};
/// Reporter: linked, but too little access.
pub const BOB: DemoUser = DemoUser {
    slack_id: "U0BOB",
    name: "bob",
    gitlab_id: 12,
    access_level: 20,
};
/// Maintainer: may run pipelines on a protected default branch.
pub const CAROL: DemoUser = DemoUser {
    slack_id: "U0CAROL",
    name: "carol",
    gitlab_id: 13,
    access_level: 40,
};

/// What the demo sends, in order: GitLab's example jobs and the ways a run can end.
pub const DEMO_SCRIPT: &[(DemoUser, &str, &str)] = &[
    (
        ALICE,
        "run hello-world",
        "the docs' first example: one command, its output",
    ),
    (
        ALICE,
        "run ls",
        "the docs' chat_reply example: only that section comes back",
    ),
    (
        ALICE,
        "run greet the release notes",
        "several commands: commands and output",
    ),
    (ALICE, "run db-check", "a job that fails"),
    (ALICE, "run rollback", "a job the project does not define"),
    (
        ALICE,
        "run deploy-production",
        "a job marked except: [chat]",
    ),
    (ALICE, "run restart", "a when: manual job"),
    (BOB, "run hello-world", "a Reporter may not run jobs"),
];

/// Which backends the demo's local mode uses.
pub enum DemoBackends {
    /// The in-memory queue and store (`chatops demo`).
    Embedded,
    /// SQS and DynamoDB at `sdk`'s endpoint (moto in tests); queue and table must exist.
    Aws {
        sdk: Box<aws_config::SdkConfig>,
        queue_url: String,
        table: String,
    },
}

/// One slash command as sent, with Slack's immediate answer.
#[derive(Debug, Clone)]
pub struct SentCommand {
    pub user: DemoUser,
    pub text: String,
    pub response_url: String,
    /// The HTTP status of the ingress's answer.
    pub status: u16,
    /// The answer's body (a slash-command response).
    pub answer: serde_json::Value,
    /// The answer as a message in the channel (a run's card), when Slack showed one.
    pub answer_ts: Option<String>,
}

/// Slack's documented `block_actions` example (docs.slack.dev, "block_actions payload"):
/// every click the demo sends is this payload with the click's values patched in.
const BLOCK_ACTIONS_EXAMPLE: &str = include_str!("../tests/fixtures/slack/block_actions.json");

/// A click as sent: the interaction's own `response_url` and the ingress's HTTP status.
#[derive(Debug, Clone)]
pub struct SentClick {
    pub user: DemoUser,
    pub response_url: String,
    pub status: u16,
}

/// GitLab and Slack stand-ins with local mode between them.
pub struct DemoWorld {
    pub gitlab: GitLabStandin,
    pub slack: SlackStandIn,
    pub local: Local,
    pub running: Running,
    http: reqwest::Client,
    next_trigger: std::sync::atomic::AtomicU64,
}

/// Who acts in GitLab in a demo world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoIdentity {
    /// Bot mode: one token, people linked by an administrator (alice and bob are).
    Bot,
    /// OAuth: people connect their own GitLab accounts; nobody is linked at start.
    OAuth,
}

/// What a person's browser saw on following a connect link.
#[derive(Debug, Clone)]
pub struct BrowserVisit {
    /// GitLab's redirect to our callback (with `code` and `state`), if it redirected there.
    pub callback_url: Option<String>,
    /// Our callback page's status and text (tags stripped).
    pub status: u16,
    pub page: String,
}

impl DemoWorld {
    /// Start everything; the GitLab project's jobs come from `project_dir/.gitlab-ci.yml`.
    pub async fn start(
        backends: DemoBackends,
        project_dir: &std::path::Path,
    ) -> Result<DemoWorld, LocalError> {
        Self::start_with(backends, project_dir, &[]).await
    }

    /// Like `start`, with more variables for local mode (e.g. `SWEEP_EVERY_SECS`).
    pub async fn start_with(
        backends: DemoBackends,
        project_dir: &std::path::Path,
        extra_env: &[(&str, &str)],
    ) -> Result<DemoWorld, LocalError> {
        Self::start_as(backends, project_dir, extra_env, DemoIdentity::Bot).await
    }

    /// A world where people connect their own GitLab accounts (OAuth); tokens are sealed
    /// with a fresh local key unless `extra_env` names a KMS key (`TOKEN_KEY_ID`).
    pub async fn start_oauth(
        backends: DemoBackends,
        project_dir: &std::path::Path,
        extra_env: &[(&str, &str)],
    ) -> Result<DemoWorld, LocalError> {
        Self::start_as(backends, project_dir, extra_env, DemoIdentity::OAuth).await
    }

    pub async fn start_as(
        backends: DemoBackends,
        project_dir: &std::path::Path,
        extra_env: &[(&str, &str)],
        identity: DemoIdentity,
    ) -> Result<DemoWorld, LocalError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| LocalError::Setup(format!("{what}: {e}"));
        let ci = CiFile::load(project_dir).map_err(|e| setup("the demo project", &e))?;
        let gitlab = GitLabStandin::start().await;
        let slack = SlackStandIn::start(DEMO_BOT_TOKEN)
            .await
            .map_err(|e| setup("the Slack stand-in", &e))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| setup("binding 127.0.0.1", &e))?;
        let local_url = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(|e| setup("local address", &e))?
        );

        let gl = gitlab.state();
        gl.add_project(DEMO_PROJECT_ID, DEMO_PROJECT);
        gl.set_ci_jobs(DEMO_PROJECT_ID, standin_jobs(&ci));
        // What `ci/lint` answers as `merged_yaml` (`chatops gitlab check` reads it).
        gl.set_merged_yaml(DEMO_PROJECT_ID, Some(ci.merged_yaml.clone()));
        let mut runner = Runner::new(project_dir);
        runner.timeout = Duration::from_secs(120);
        gl.set_executor(Arc::new(ShellExecutor::new(
            runner,
            ci,
            gl.clone(),
            &gitlab.url(),
        )));
        gl.set_webhook(
            &format!("{local_url}{}", chatops_core::completion::WEBHOOK_PATH),
            DEMO_WEBHOOK_SECRET,
        );
        for u in [ALICE, BOB, CAROL] {
            gl.add_user(u.gitlab_id, u.name);
            gl.set_member(DEMO_PROJECT_ID, u.gitlab_id, u.access_level);
        }

        // The same variables a laptop user would export for `chatops local`.
        let mut env = Env::from_pairs([
            ("SLACK_SIGNING_SECRET", DEMO_SIGNING_SECRET.to_owned()),
            ("SLACK_BOT_TOKEN", DEMO_BOT_TOKEN.to_owned()),
            ("SLACK_API_URL", slack.api_url()),
            (
                "ALLOWED_RESPONSE_URL_PREFIXES",
                format!("{0}/commands/,{0}/actions/", slack.base_url()),
            ),
            ("GITLAB_URL", gitlab.url()),
            ("GITLAB_TOKEN", STANDIN_TOKEN.to_owned()),
            ("GITLAB_PROJECT", DEMO_PROJECT.to_owned()),
            ("GITLAB_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET.to_owned()),
            ("LOG_RETRY_SECS", "0.2".to_owned()),
            (
                "LOCAL_USER_LINKS",
                format!(
                    "{DEMO_TEAM}/{}={},{DEMO_TEAM}/{}={}",
                    ALICE.slack_id, ALICE.name, BOB.slack_id, BOB.name
                ),
            ),
        ]);
        if identity == DemoIdentity::OAuth {
            // People pass the contract's variables with their own role now: Developers may
            // (what `chatops gitlab setup --fix-variables-role` sets).
            gl.set_variables_role(DEMO_PROJECT_ID, "developer");
            gl.register_oauth_app(
                DEMO_OAUTH_CLIENT_ID,
                DEMO_OAUTH_CLIENT_SECRET,
                &format!("{local_url}{}", chatops_core::oauth::CALLBACK_PATH),
            );
            env.remove("LOCAL_USER_LINKS");
            env.set("GITLAB_OAUTH_CLIENT_ID", DEMO_OAUTH_CLIENT_ID);
            env.set("GITLAB_OAUTH_CLIENT_SECRET", DEMO_OAUTH_CLIENT_SECRET);
            env.set("PUBLIC_BASE_URL", local_url.clone());
            if !extra_env.iter().any(|(k, _)| *k == "TOKEN_KEY_ID") {
                let (_, key) = chatops_adapters::seal::LocalSealer::generate();
                env.set("TOKEN_KEY", key);
            }
        }
        for (k, v) in extra_env {
            env.set(*k, *v);
        }
        let (aws, sdk) = match backends {
            DemoBackends::Embedded => (false, Some(offline_sdk_config())),
            DemoBackends::Aws {
                sdk,
                queue_url,
                table,
            } => {
                env.set("RUN_QUEUE_URL", queue_url);
                env.set("RUNS_TABLE", table);
                (true, Some(*sdk))
            }
        };
        let local = Local::from_env(&env, aws, sdk).await?;
        let running = local
            .start(listener)
            .map_err(|e| setup("starting local mode", &e))?;
        Ok(DemoWorld {
            gitlab,
            slack,
            local,
            running,
            http: reqwest::Client::new(),
            next_trigger: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Send `/chatops <text>` from `user` in the demo channel, signed as Slack signs.
    pub async fn command(&self, user: DemoUser, text: &str) -> Result<SentCommand, LocalError> {
        let response_url = self.slack.command_response_url_in(DEMO_TEAM, DEMO_CHANNEL);
        let n = self
            .next_trigger
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let body = serde_urlencoded::to_string([
            ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
            ("team_id", DEMO_TEAM),
            ("team_domain", "demo"),
            ("channel_id", DEMO_CHANNEL),
            ("channel_name", DEMO_CHANNEL_NAME),
            ("user_id", user.slack_id),
            ("user_name", user.name),
            ("command", "/chatops"),
            ("text", text),
            ("api_app_id", "A0DEMO"),
            ("is_enterprise_install", "false"),
            ("response_url", &response_url),
            (
                "trigger_id",
                &format!("{n}.{}.demo", self.local.clock.now()),
            ),
        ])
        .map_err(|e| LocalError::Setup(format!("encoding a slash command: {e}")))?;
        let resp = self
            .post_signed(chatops_core::ingress::SLACK_PATH, body, None, None)
            .await
            .map_err(|e| LocalError::Setup(format!("sending a slash command: {e}")))?;
        let status = resp.status().as_u16();
        let answer = resp.json().await.unwrap_or(serde_json::Value::Null);
        // Slack shows the answer as a message; the command's response_url can replace it. (A
        // refused request shows nothing, but it was answered: messages waiting go ahead.)
        let shown = if status == 200 {
            &answer
        } else {
            &serde_json::Value::Null
        };
        let answer_ts = self.slack.command_answered(&response_url, shown);
        Ok(SentCommand {
            user,
            text: text.to_owned(),
            response_url,
            status,
            answer,
            answer_ts,
        })
    }

    /// The run card of `cmd` as the channel shows it now (the command's answer, replaced in
    /// place as the run moves on).
    pub fn card(&self, cmd: &SentCommand) -> Option<Post> {
        let ts = cmd.answer_ts.as_deref()?;
        self.slack.transcript().into_iter().find(|p| p.ts == ts)
    }

    /// `user` presses the button `action_id` on `card` (a message as the channel showed it;
    /// an old copy clicks a stale card), in `team`.
    pub async fn click(
        &self,
        user: DemoUser,
        card: &Post,
        action_id: &str,
    ) -> Result<SentClick, LocalError> {
        let value = card
            .blocks
            .as_ref()
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
            .find(|e| e["action_id"] == action_id)
            .and_then(|e| e["value"].as_str().map(str::to_owned))
            .ok_or_else(|| LocalError::Setup(format!("the card has no {action_id} button")))?;
        let (payload, response_url) =
            self.click_payload(user, DEMO_TEAM, &card.ts, action_id, &value)?;
        let status = self.send_interaction(&payload, None, None).await?;
        Ok(SentClick {
            user,
            response_url,
            status,
        })
    }

    /// Slack's `block_actions` example as `user` of `team` pressing `action_id` (value
    /// `value`) on the message `ts`, with a fresh click `response_url`; returns the payload
    /// JSON and that URL.
    pub fn click_payload(
        &self,
        user: DemoUser,
        team: &str,
        ts: &str,
        action_id: &str,
        value: &str,
    ) -> Result<(String, String), LocalError> {
        let bad = |e: &dyn std::fmt::Display| LocalError::Setup(format!("click payload: {e}"));
        let mut p: serde_json::Value =
            serde_json::from_str(BLOCK_ACTIONS_EXAMPLE).map_err(|e| bad(&e))?;
        let response_url = self
            .slack
            .action_response_url(team, ts)
            .unwrap_or_else(|| format!("{}/actions/{team}/0/none", self.slack.base_url()));
        let n = self
            .next_trigger
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let now = self.local.clock.now();
        p["team"] = serde_json::json!({"id": team, "domain": "demo"});
        p["user"] = serde_json::json!({"id": user.slack_id, "username": user.name,
                                       "name": user.name, "team_id": team});
        p["api_app_id"] = serde_json::json!("A0DEMO");
        p["container"] = serde_json::json!({"type": "message", "message_ts": ts,
                                            "channel_id": DEMO_CHANNEL, "is_ephemeral": false});
        p["channel"] = serde_json::json!({"id": DEMO_CHANNEL, "name": DEMO_CHANNEL_NAME});
        p["message"]["ts"] = serde_json::json!(ts);
        p["trigger_id"] = serde_json::json!(format!("{n}.{now}.demo-click"));
        p["response_url"] = serde_json::json!(response_url);
        p["actions"][0]["action_id"] = serde_json::json!(action_id);
        p["actions"][0]["value"] = serde_json::json!(value);
        p["actions"][0]["action_ts"] = serde_json::json!(format!("{now}.{n:06}"));
        Ok((p.to_string(), response_url))
    }

    /// POST `payload` to the interactivity URL as Slack does (form `payload=…`), signed with
    /// the demo's signing secret (or `secret`) at `timestamp` (default now); the HTTP status.
    pub async fn send_interaction(
        &self,
        payload: &str,
        secret: Option<&str>,
        timestamp: Option<u64>,
    ) -> Result<u16, LocalError> {
        let body = serde_urlencoded::to_string([("payload", payload)])
            .map_err(|e| LocalError::Setup(format!("encoding a click: {e}")))?;
        let resp = self
            .post_signed(
                chatops_core::interaction::SLACK_INTERACTIONS_PATH,
                body,
                secret,
                timestamp,
            )
            .await
            .map_err(|e| LocalError::Setup(format!("sending a click: {e}")))?;
        Ok(resp.status().as_u16())
    }

    /// POST a form body to one of local mode's Slack paths, signed as Slack signs (with the
    /// demo's signing secret unless `secret`, at `timestamp` unless now).
    async fn post_signed(
        &self,
        path: &str,
        body: String,
        secret: Option<&str>,
        timestamp: Option<u64>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let timestamp = timestamp
            .unwrap_or_else(|| self.local.clock.now())
            .to_string();
        let signature = chatops_core::slack::verify::sign(
            &chatops_core::secret::Secret::new(secret.unwrap_or(DEMO_SIGNING_SECRET)),
            &timestamp,
            body.as_bytes(),
        );
        self.http
            .post(format!("{}{path}", self.running.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(chatops_core::slack::verify::TIMESTAMP_HEADER, timestamp)
            .header(chatops_core::slack::verify::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
    }

    /// Messages that reached Slack through a click's `response_url` (what the clicker saw).
    pub fn click_posts(&self, click: &SentClick) -> Vec<Post> {
        let id = response_url_id(&click.response_url);
        self.slack
            .transcript()
            .into_iter()
            .filter(|p| matches!(&p.via, Via::ResponseUrl { id: i, .. } if Some(i.as_str()) == id))
            .collect()
    }

    /// The connect link ChatOps showed for `cmd` (its immediate answer, or what came back
    /// through its `response_url`), unescaped.
    pub fn connect_link(&self, cmd: &SentCommand) -> Option<String> {
        let mut texts = vec![cmd.answer["text"].as_str().unwrap_or("").to_owned()];
        texts.extend(self.posts_for(cmd).into_iter().map(|p| p.text));
        let authorize = format!("{}/oauth/authorize?", self.gitlab.url());
        texts.iter().rev().find_map(|t| {
            let start = t.find(&authorize)?;
            let rest = &t[start..];
            let end = rest.find(['|', '>', ')', ' ']).unwrap_or(rest.len());
            Some(rest[..end].replace("&amp;", "&"))
        })
    }

    /// Follow a connect link in `user`'s browser (signed in to GitLab as them): GitLab's
    /// authorize page approves and redirects to our callback, whose page is returned.
    pub async fn open_in_browser(
        &self,
        user: DemoUser,
        url: &str,
    ) -> Result<BrowserVisit, LocalError> {
        let fail = |e: &dyn std::fmt::Display| LocalError::Setup(format!("browser: {e}"));
        self.gitlab.state().sign_in_browser_as(user.name);
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| fail(&e))?;
        let resp = no_redirects.get(url).send().await.map_err(|e| fail(&e))?;
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(callback) = location.filter(|l| l.starts_with(&self.running.url())) else {
            let status = resp.status().as_u16();
            let page = strip_tags(&resp.text().await.unwrap_or_default());
            return Ok(BrowserVisit {
                callback_url: None,
                status,
                page,
            });
        };
        self.visit(&callback).await
    }

    /// Open a URL of ours (a callback) in a browser.
    pub async fn visit(&self, url: &str) -> Result<BrowserVisit, LocalError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| LocalError::Setup(format!("browser: {e}")))?;
        let status = resp.status().as_u16();
        let page = strip_tags(&resp.text().await.unwrap_or_default());
        Ok(BrowserVisit {
            callback_url: Some(url.to_owned()),
            status,
            page,
        })
    }

    /// Messages of this command: its answer (as it reads now) and what came through its
    /// `response_url`.
    /// `user` connects their GitLab account: `/chatops link`, then the link in their
    /// browser; whether the callback page said they are connected.
    pub async fn connect(&self, user: DemoUser) -> Result<bool, LocalError> {
        let c = self.command(user, "link").await?;
        let mut link = None;
        eventually(Duration::from_secs(60), || {
            link = self.connect_link(&c);
            link.is_some()
        })
        .await;
        let Some(link) = link else { return Ok(false) };
        let visit = self.open_in_browser(user, &link).await?;
        Ok(visit.page.contains(&format!("Connected as @{}", user.name)))
    }

    /// The run's card once it shows the button `action_id`: the command's answer replaced in
    /// place, or (when that could not be done) the card posted anew for the run.
    pub fn card_with(&self, cmd: &SentCommand, action_id: &str) -> Option<Post> {
        self.card(cmd)
            .filter(|c| has_button(c, action_id))
            .or_else(|| {
                self.channel_posts()
                    .into_iter()
                    .rev()
                    .find(|p| has_button(p, action_id))
            })
    }

    /// A run's card as the channel shows it now, then its other messages (the job's reply).
    pub fn transcript_after_card(&self, cmd: &SentCommand) -> String {
        let mut posts: Vec<Post> = self.card(cmd).into_iter().collect();
        posts.extend(
            self.posts_for(cmd)
                .into_iter()
                .filter(|p| !matches!(p.via, Via::CommandAnswer { .. })),
        );
        render_posts(&posts)
    }

    pub fn posts_for(&self, cmd: &SentCommand) -> Vec<Post> {
        let id = response_url_id(&cmd.response_url);
        self.slack
            .transcript()
            .into_iter()
            .filter(|p| match &p.via {
                Via::ResponseUrl { id: i, .. } | Via::CommandAnswer { id: i, .. } => {
                    Some(i.as_str()) == id
                }
                _ => false,
            })
            .collect()
    }

    /// Messages that reached the channel another way (Web API, files).
    pub fn channel_posts(&self) -> Vec<Post> {
        self.slack
            .transcript()
            .into_iter()
            .filter(|p| !matches!(p.via, Via::ResponseUrl { .. } | Via::CommandAnswer { .. }))
            .collect()
    }

    /// Wait until every command was answered and nothing moves any more: no run in flight
    /// (only runs waiting for a manual play stay open) and no new message for 0.6 s.
    pub async fn settle(&self, cmds: &[SentCommand], timeout: Duration) -> bool {
        use chatops_core::gitlab::Status;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_len = usize::MAX;
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            let len = self.slack.transcript().len();
            if len != last_len {
                last_len = len;
                quiet_since = now;
            }
            // Answered: something came after the answer, or the answer (the card) changed.
            let answered = cmds.iter().all(|c| {
                c.status != 200
                    || is_final_answer(c)
                    || self
                        .posts_for(c)
                        .iter()
                        .any(|p| !matches!(p.via, Via::CommandAnswer { .. }) || p.edits > 0)
            });
            let runs_settled = match self.local.store.due_runs(u64::MAX, 1000).await {
                Ok(runs) => runs
                    .iter()
                    .all(|r| r.status == chatops_core::run::RunStatus::WaitingManual),
                Err(_) => false,
            };
            let gitlab_idle = self.gitlab.state().pipelines().iter().all(|p| {
                self.gitlab
                    .state()
                    .jobs_of(p.id)
                    .iter()
                    .all(|j| j.status.is_final() || j.status == Status::Manual)
            });
            let queue_empty = match &self.local.inbox {
                Inbox::Embedded(q) => q.is_empty(),
                Inbox::Sqs { .. } => true,
            };
            if answered
                && runs_settled
                && gitlab_idle
                && queue_empty
                && now.duration_since(quiet_since) >= Duration::from_millis(600)
            {
                return true;
            }
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The channel as a person reads it: each command, Slack's immediate answer, then what
    /// came back for it.
    pub fn transcript(&self, cmds: &[SentCommand]) -> String {
        let mut out = format!("#{DEMO_CHANNEL_NAME}\n");
        for c in cmds {
            out.push_str(&format!("\n{} › /chatops {}\n", c.user.name, c.text));
            if c.status != 200 {
                out.push_str(&format!(
                    "  Slack: \"/chatops\" failed with the error \"http_{}\"\n",
                    c.status
                ));
            }
            for p in self.posts_for(c) {
                let how = match p.via {
                    Via::CommandAnswer { .. } if p.edits > 0 => "answer, updated in place",
                    Via::CommandAnswer { .. } => "answer",
                    _ => "response_url",
                };
                out.push_str(&speak(&p, how));
            }
        }
        let others = self.channel_posts();
        if !others.is_empty() {
            out.push_str("\nposted to the channel by the bot:\n");
            for p in &others {
                out.push_str(&speak(p, "chat.postMessage"));
            }
        }
        for u in [ALICE, BOB, CAROL] {
            out = out.replace(&format!("@{}", u.slack_id), &format!("@{}", u.name));
        }
        out
    }
}

/// A page's text without its markup (the demo prints what a person reads).
fn strip_tags(html: &str) -> String {
    let body = html
        .split_once("<body")
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(html, |(_, rest)| rest);
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                if !out.ends_with(' ') && !out.is_empty() {
                    out.push(' ');
                }
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the immediate answer ended the command (help, refusal, "could not schedule").
fn is_final_answer(c: &SentCommand) -> bool {
    c.answer["response_type"].as_str() == Some("ephemeral")
}

fn response_url_id(url: &str) -> Option<&str> {
    // …/commands/<team>/<id>/<token>
    let mut parts = url.rsplit('/');
    parts.next()?;
    parts.next()
}

/// One message as the channel shows it: who sees it, then its text.
fn speak(p: &Post, how: &str) -> String {
    let seen = match (p.response_type.as_deref(), &p.via) {
        (Some("in_channel"), _) => "everyone sees".to_owned(),
        (_, Via::ResponseUrl { .. } | Via::CommandAnswer { .. }) => {
            "only visible to you".to_owned()
        }
        (_, Via::PostMessage) => format!("in #{}", p.channel.as_deref().unwrap_or("?")),
        (_, Via::FileUpload) => "file".to_owned(),
    };
    let rendered = render_posts(std::slice::from_ref(p));
    let mut out = format!("  ChatOps ({seen}; {how}):\n");
    for line in rendered.lines().skip(1) {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// AWS configuration for the embedded backends: nothing reaches AWS, and loading it must
/// not look for credentials, profiles or instance metadata.
/// Where the demo project lives: `CHATOPS_DEMO_PROJECT`, else this checkout's
/// `tests/demo-project`.
pub fn demo_project_dir() -> std::path::PathBuf {
    std::env::var_os("CHATOPS_DEMO_PROJECT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/demo-project")
        })
}

/// Run the demo script in `world`: each command, waiting for it to settle before the next
/// so the channel reads in order.
pub async fn run_script(world: &DemoWorld) -> Result<(Vec<SentCommand>, bool), LocalError> {
    let mut sent = Vec::new();
    let mut settled = true;
    for (user, text, _) in DEMO_SCRIPT {
        let c = world.command(*user, text).await?;
        sent.push(c);
        settled &= world.settle(&sent, Duration::from_secs(60)).await;
    }
    Ok((sent, settled))
}

/// `chatops demo`: the whole product offline; prints the channel; 0 when every command got
/// its answer and Slack refused nothing.
pub async fn run_demo() -> anyhow::Result<i32> {
    if std::env::var_os("RUST_LOG").is_some() {
        init_tracing();
    }
    let dir = demo_project_dir();
    println!("chatops demo: GitLab and Slack stand-ins on 127.0.0.1, no network, no accounts.");
    println!(
        "GitLab project {DEMO_PROJECT} = {} (jobs run for real in bash)",
        dir.display()
    );
    println!(
        "{} is a Developer, {} a Reporter; both are linked to their GitLab accounts.",
        ALICE.name, BOB.name
    );
    let world = match DemoWorld::start(DemoBackends::Embedded, &dir).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("chatops demo: {e}");
            return Ok(1);
        }
    };
    println!(
        "local mode on {} ({})\n",
        world.running.url(),
        world.local.describe_backends()
    );
    let (sent, settled) = run_script(&world).await?;
    print!("{}", world.transcript(&sent));

    let refusals = world.slack.refusals();
    let unanswered: Vec<_> = sent
        .iter()
        .filter(|c| c.status != 200 || (world.posts_for(c).is_empty() && !is_final_answer(c)))
        .map(|c| c.text.as_str())
        .collect();
    println!();
    if !refusals.is_empty() {
        println!("Slack refused {} request(s): {refusals:?}", refusals.len());
    }
    if !unanswered.is_empty() || !settled {
        println!("not answered in time: {unanswered:?}");
        return Ok(1);
    }
    if !refusals.is_empty() {
        return Ok(1);
    }
    println!("{} commands, every one answered.", sent.len());
    drop(world);

    println!(
        "\n--- Identity: with a GitLab OAuth application, people connect their own accounts and \
         every GitLab action runs as them. Nobody is linked yet; the deployment holds no token \
         that can create pipelines."
    );
    let world = match DemoWorld::start_oauth(DemoBackends::Embedded, &dir, &[]).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("chatops demo: {e}");
            return Ok(1);
        }
    };
    let (story, ok) = identity_script(&world).await?;
    print!("{story}");
    if !ok {
        println!("\nthe identity part did not go as it should");
        return Ok(1);
    }
    drop(world);

    println!(
        "\n--- Cards: each run is one message that changes in place, and its buttons act in \
         GitLab as whoever clicks. The project's .gitlab/chatops.yml makes `release` a \
         four-eyes job."
    );
    let world = match DemoWorld::start_oauth(DemoBackends::Embedded, &dir, &[]).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("chatops demo: {e}");
            return Ok(1);
        }
    };
    let (story, ok) = cards_script(&world).await?;
    print!("{story}");
    if !ok {
        println!("\nthe cards part did not go as it should");
        return Ok(1);
    }
    println!("\nEvery command answered. Try your own: `chatops local` (README, 'Local mode').");
    Ok(0)
}

/// The demo's four-eyes rule (what a project keeps in `.gitlab/chatops.yml`).
pub const DEMO_POLICY: &str = "jobs:\n  release:\n    description: Release to staging\n    \
approvals: 1\n    min_role_to_approve: maintainer\n";

/// Wait until `cond` holds or `timeout` passes; whether it held.
async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// The cards part of the demo: alice asks for the four-eyes `release`, cannot approve it
/// herself, carol (a Maintainer) approves and it runs as alice with `CHAT_APPROVED_BY`;
/// then a runaway `slow-task` is cancelled from its card by carol. Returns the story and
/// whether each step happened.
pub async fn cards_script(world: &DemoWorld) -> Result<(String, bool), LocalError> {
    let mut out = String::new();
    let mut ok = true;
    world.gitlab.state().set_file(
        DEMO_PROJECT_ID,
        chatops_core::policy::POLICY_PATH,
        Some(DEMO_POLICY),
    );
    out.push_str(&format!(
        "{}:\n{}",
        chatops_core::policy::POLICY_PATH,
        DEMO_POLICY
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    ));
    for user in [ALICE, CAROL] {
        ok &= world.connect(user).await?;
    }
    out.push_str("alice and carol connect their GitLab accounts (`/chatops link`).\n");

    let release = world.command(ALICE, "run release v1.2").await?;
    let approve = chatops_core::card::APPROVE_ACTION_ID;
    let mut card = None;
    ok &= eventually(Duration::from_secs(60), || {
        card = world.card_with(&release, approve);
        card.is_some()
    })
    .await;
    let Some(card) = card else {
        out.push_str("  (no card asked for an approval; what the channel saw:)\n");
        out.push_str(&indent(&world.slack.render_transcript()));
        return Ok((out, false));
    };
    out.push_str("\nalice › /chatops run release v1.2\n");
    out.push_str(&indent(&render_posts(std::slice::from_ref(&card))));
    ok &= world.gitlab.state().pipelines().is_empty();
    out.push_str("  (GitLab: no pipeline yet)\n");

    let own = world.click(ALICE, &card, approve).await?;
    ok &= eventually(Duration::from_secs(60), || {
        !world.click_posts(&own).is_empty()
    })
    .await;
    out.push_str("\nalice presses Approve; only she sees:\n");
    out.push_str(&indent(&render_posts(&world.click_posts(&own))));

    let yes = world.click(CAROL, &card, approve).await?;
    ok &= yes.status == 200;
    ok &= eventually(Duration::from_secs(60), || {
        world
            .card(&release)
            .is_some_and(|c| render_posts(&[c]).contains("*Succeeded*"))
            && world.posts_for(&release).len() > 1
    })
    .await;
    out.push_str("\ncarol (a Maintainer) presses Approve; the card, then the job's reply:\n");
    out.push_str(&indent(&world.transcript_after_card(&release)));
    let pipeline = world.gitlab.state().pipelines().last().cloned();
    let creator = pipeline
        .as_ref()
        .and_then(|p| world.gitlab.state().pipeline_creator(p.id));
    let approved_by = pipeline
        .as_ref()
        .and_then(|p| p.variable("CHAT_APPROVED_BY").map(str::to_owned));
    out.push_str(&format!(
        "  (GitLab: the pipeline was created by {}, with CHAT_APPROVED_BY={})\n",
        creator.as_deref().unwrap_or("nobody"),
        approved_by.as_deref().unwrap_or("")
    ));
    ok &= creator.as_deref() == Some(ALICE.name) && approved_by.as_deref() == Some(CAROL.name);

    let slow = world.command(ALICE, "run slow-task").await?;
    let cancel = chatops_core::card::CANCEL_ACTION_ID;
    let mut card = None;
    ok &= eventually(Duration::from_secs(60), || {
        card = world.card_with(&slow, cancel);
        card.is_some()
    })
    .await;
    let Some(card) = card else {
        out.push_str("  (no card with Cancel; what the channel saw:)\n");
        out.push_str(&indent(&world.slack.render_transcript()));
        return Ok((out, false));
    };
    out.push_str("\nalice › /chatops run slow-task   (a runaway job: it sleeps a minute)\n");
    out.push_str(&indent(&render_posts(std::slice::from_ref(&card))));
    world.click(CAROL, &card, cancel).await?;
    ok &= eventually(Duration::from_secs(60), || {
        world.card(&slow).is_some_and(|c| {
            let t = render_posts(&[c]);
            t.contains("*Cancelled*") && t.contains("cancelled by")
        }) && world.posts_for(&slow).len() > 1
    })
    .await;
    out.push_str("\ncarol presses Cancel (Slack asks her to confirm); the card, then the reply:\n");
    out.push_str(&indent(&world.transcript_after_card(&slow)));
    let cancelled_by = world
        .gitlab
        .state()
        .pipelines()
        .last()
        .and_then(|p| world.gitlab.state().pipeline_canceller(p.id));
    out.push_str(&format!(
        "  (GitLab: the pipeline was cancelled by {})\n",
        cancelled_by.as_deref().unwrap_or("nobody")
    ));
    ok &= cancelled_by.as_deref() == Some(CAROL.name);
    Ok((out, ok))
}

/// Every line indented by two spaces.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn has_button(card: &Post, action_id: &str) -> bool {
    card.blocks
        .as_ref()
        .is_some_and(|b| b.to_string().contains(&format!("\"{action_id}\"")))
}

/// The identity part of the demo: alice connects from her first command (the demo "clicks"
/// the link in her browser) and it runs as her; a Maintainer protects `main`, and alice, a
/// Developer, is refused by GitLab itself, though the deployment's Maintainer token could
/// have run it; `whoami` and `unlink`. Returns the story and whether each step happened.
pub async fn identity_script(world: &DemoWorld) -> Result<(String, bool), LocalError> {
    let mut out = String::new();
    let mut ok = true;
    let mut sent = Vec::new();

    let c = world.command(ALICE, "run hello-world").await?;
    ok &= world
        .settle(std::slice::from_ref(&c), Duration::from_secs(30))
        .await;
    sent.push(c.clone());
    out.push_str(&world.transcript(std::slice::from_ref(&c)));
    let Some(link) = world.connect_link(&c) else {
        out.push_str("  (no connect link was shown)\n");
        return Ok((out, false));
    };
    let visit = world.open_in_browser(ALICE, &link).await?;
    out.push_str(&format!(
        "\nalice clicks the link; GitLab asks her to authorize ChatOps, she does; her browser shows:\n  {}\n",
        visit.page
    ));
    ok &= visit.status == 200;
    ok &= world.settle(&sent, Duration::from_secs(60)).await;
    out.push_str("\nthen, in the channel:\n");
    let shown = world.transcript(std::slice::from_ref(&c));
    // What came after the connect link: the run itself.
    let after = shown
        .split("starts by itself")
        .nth(1)
        .and_then(|rest| rest.split_once('\n').map(|(_, r)| r))
        .unwrap_or(&shown);
    out.push_str(after);
    let created_by = world
        .gitlab
        .state()
        .pipelines()
        .last()
        .and_then(|p| world.gitlab.state().pipeline_creator(p.id));
    out.push_str(&format!(
        "  (GitLab: the pipeline was created by {})\n",
        created_by.as_deref().unwrap_or("nobody")
    ));
    ok &= created_by.as_deref() == Some(ALICE.name);

    let who = world.command(ALICE, "whoami").await?;
    out.push('\n');
    out.push_str(
        &world
            .transcript(std::slice::from_ref(&who))
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    out.push('\n');

    world
        .gitlab
        .state()
        .protect_branch(DEMO_PROJECT_ID, "main", 40);
    out.push_str(
        "\nA Maintainer protects main: only Maintainers may run pipelines on it. The \
         deployment's own token is a Maintainer; alice is a Developer.\n",
    );
    let refused = world.command(ALICE, "run hello-world").await?;
    ok &= world
        .settle(std::slice::from_ref(&refused), Duration::from_secs(30))
        .await;
    let shown = world.transcript(std::slice::from_ref(&refused));
    ok &= shown.contains("sufficient permission to run a pipeline on 'main'");
    out.push_str(&shown.lines().skip(1).collect::<Vec<_>>().join("\n"));
    out.push('\n');

    let bye = world.command(ALICE, "unlink").await?;
    let shown = world.transcript(std::slice::from_ref(&bye));
    ok &= shown.contains("GitLab revoked the tokens");
    out.push_str(&shown.lines().skip(1).collect::<Vec<_>>().join("\n"));
    out.push('\n');
    Ok((out, ok))
}
