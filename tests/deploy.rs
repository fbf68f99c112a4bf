//! `chatops deploy` (what `make deploy` runs) on its real interfaces: SSM and CloudFormation
//! over a moto server (the region asked for is the only one written to), the GitLab
//! stand-in over HTTP with the real client, the files it writes. The one step replaced is
//! `sam build` + `sam deploy` (minutes, Docker-free but AWS-bound): a [`StackDeployer`] that
//! creates the stack in moto from a small template with the real stack's outputs, and
//! records the parameters the deploy passed.

mod support;

use chatops::deploy::{
    self, DeployArgs, DeployError, DeployPlan, NoPrompt, Prompt, StackDeployer, Stored,
};
use chatops_adapters::gitlab::GitLabClient;
use chatops_core::config::Env;
use chatops_core::secret::Secret;
use chatops_sim::gitlab::GitLabStandin;
use std::collections::BTreeMap;
use std::sync::Mutex;

const TOKEN_OUT: &str = "glpat-standin-token";
const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT: &str = "xoxb-1234-5678-abcdefghijklmnop";

const CHAT_READY: &str = r#"
hello-world:
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
  script: echo "Hello World."
"#;

async fn sdk(region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(support::moto_endpoint())
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

/// In place of `sam deploy`: the stack, in moto, with the outputs the real template has.
struct MotoStack {
    sdk: aws_config::SdkConfig,
    calls: Mutex<Vec<BTreeMap<String, String>>>,
}

impl MotoStack {
    fn template(params: &BTreeMap<String, String>) -> String {
        let parameters: serde_json::Map<String, serde_json::Value> = params
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    serde_json::json!({"Type": "String", "Default": ""}),
                )
            })
            .collect();
        serde_json::json!({
            "Parameters": parameters,
            "Resources": {
                "Marker": {
                    "Type": "AWS::SSM::Parameter",
                    "Properties": {
                        "Name": {"Fn::Sub": "/${AWS::StackName}/marker"},
                        "Type": "String",
                        "Value": "x"
                    }
                }
            },
            "Outputs": {
                "SlackRequestUrl": {"Value": {"Fn::Sub": "https://ingress.lambda-url.${AWS::Region}.on.aws/slack/commands"}},
                "MattermostRequestUrl": {"Value": {"Fn::Sub": "https://ingress.lambda-url.${AWS::Region}.on.aws/mattermost/commands"}},
                "GitLabWebhookUrl": {"Value": {"Fn::Sub": "https://completion.lambda-url.${AWS::Region}.on.aws/gitlab/webhook"}},
                "RunsTableName": {"Value": "chatops-runs-table"}
            }
        })
        .to_string()
    }
}

#[async_trait::async_trait]
impl StackDeployer for MotoStack {
    async fn deploy(
        &self,
        plan: &DeployPlan,
        params: &[(String, String)],
    ) -> Result<(), DeployError> {
        let map: BTreeMap<String, String> = params.iter().cloned().collect();
        self.calls.lock().unwrap().push(map.clone());
        let cfn = aws_sdk_cloudformation::Client::new(&self.sdk);
        let cf_params: Vec<_> = map
            .iter()
            .map(|(k, v)| {
                aws_sdk_cloudformation::types::Parameter::builder()
                    .parameter_key(k)
                    .parameter_value(v)
                    .build()
            })
            .collect();
        let exists = cfn
            .describe_stacks()
            .stack_name(&plan.stack)
            .send()
            .await
            .is_ok();
        let failed = |e: String| DeployError::Stack(e);
        if exists {
            cfn.update_stack()
                .stack_name(&plan.stack)
                .template_body(Self::template(&map))
                .set_parameters(Some(cf_params))
                .send()
                .await
                .map(|_| ())
                .or_else(|e| {
                    let text = aws_sdk_cloudformation::error::DisplayErrorContext(e).to_string();
                    // What `sam deploy --no-fail-on-empty-changeset` lets through.
                    if text.contains("No updates are to be performed") {
                        Ok(())
                    } else {
                        Err(failed(text))
                    }
                })
        } else {
            cfn.create_stack()
                .stack_name(&plan.stack)
                .template_body(Self::template(&map))
                .set_parameters(Some(cf_params))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    failed(aws_sdk_cloudformation::error::DisplayErrorContext(e).to_string())
                })
        }
    }
}

/// Answers given in order; records what was asked.
struct Scripted {
    answers: Vec<&'static str>,
    asked: Vec<(String, bool)>,
}

impl Prompt for Scripted {
    fn interactive(&self) -> bool {
        true
    }
    fn ask(&mut self, question: &str, secret: bool) -> Option<String> {
        self.asked.push((question.to_owned(), secret));
        if self.answers.is_empty() {
            return None;
        }
        Some(self.answers.remove(0).to_owned())
    }
}

async fn ssm_get(sdk: &aws_config::SdkConfig, name: &str) -> Option<String> {
    aws_sdk_ssm::Client::new(sdk)
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .ok()
        .and_then(|o| o.parameter)
        .and_then(|p| p.value)
}

struct World {
    gitlab: GitLabStandin,
    client: GitLabClient,
    stack: String,
    region: &'static str,
    sdk: aws_config::SdkConfig,
    deployer: MotoStack,
    dir: tempfile::TempDir,
}

async fn world(region: &'static str) -> World {
    let gitlab = GitLabStandin::start().await;
    let gl = gitlab.state();
    gl.add_project(42, "group/proj");
    gl.add_project(43, "group/jobs");
    // GitLab.com's default for new projects: every chat pipeline refused.
    gl.set_variables_role(42, "no_one_allowed");
    gl.set_variables_role(43, "developer");
    gl.set_ci_yaml(42, CHAT_READY);
    gl.set_ci_yaml(43, CHAT_READY);
    let client = GitLabClient::new(&gitlab.url(), Secret::new(gitlab.token())).unwrap();
    let sdk = sdk(region).await;
    World {
        client,
        stack: support::unique_name("chatops").replace('_', "-"),
        region,
        deployer: MotoStack {
            sdk: sdk.clone(),
            calls: Mutex::new(Vec::new()),
        },
        sdk,
        gitlab,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl World {
    fn env(&self, extra: &[(&str, &str)]) -> Env {
        let mut env = Env::from_pairs([
            ("GITLAB_URL", self.gitlab.url()),
            ("GITLAB_PROJECT", "group/proj".to_owned()),
            ("CHANNEL_PROJECTS", "C0123=group/jobs".to_owned()),
            ("GITLAB_TOKEN", self.gitlab.token()),
        ]);
        for (k, v) in extra {
            env.set(*k, *v);
        }
        env
    }

    fn args(&self) -> DeployArgs {
        DeployArgs {
            region: Some(self.region.to_owned()),
            stack_name: Some(self.stack.clone()),
            non_interactive: true,
            ..DeployArgs::default()
        }
    }

    async fn deploy(
        &self,
        args: &DeployArgs,
        env: &Env,
        prompt: &mut dyn Prompt,
    ) -> (deploy::DeployOutcome, String) {
        let plan = deploy::plan(args, env, prompt).expect("a complete plan");
        let mut out = Vec::new();
        let outcome = deploy::run(
            plan,
            &self.sdk,
            &self.client,
            &self.deployer,
            prompt,
            self.dir.path(),
            &mut out,
        )
        .await
        .unwrap_or_else(|e| panic!("deploy failed: {e}\n{}", String::from_utf8_lossy(&out)));
        (outcome, String::from_utf8(out).unwrap())
    }

    fn name(&self, leaf: &str) -> String {
        format!("/{}/{leaf}", self.stack)
    }
}

fn assert_no_secret(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !s.is_empty() && !text.contains(s),
            "a secret was printed:\n{text}"
        );
    }
}

#[tokio::test]
async fn first_deploy_stores_secrets_in_the_region_asked_and_sets_up_every_project() {
    let w = world("eu-west-3").await;
    let env = w.env(&[("SLACK_SIGNING_SECRET", SIGNING), ("SLACK_BOT_TOKEN", BOT)]);
    let mut args = w.args();
    args.fix_variables_role = true;
    let (outcome, text) = w.deploy(&args, &env, &mut NoPrompt).await;

    // Secrets: in eu-west-3, under the stack's names; the webhook secret generated.
    assert_eq!(
        ssm_get(&w.sdk, &w.name("gitlab-token")).await.as_deref(),
        Some(TOKEN_OUT)
    );
    assert_eq!(
        ssm_get(&w.sdk, &w.name("slack-signing-secret"))
            .await
            .as_deref(),
        Some(SIGNING)
    );
    assert_eq!(
        ssm_get(&w.sdk, &w.name("slack-bot-token")).await.as_deref(),
        Some(BOT)
    );
    let webhook_secret = ssm_get(&w.sdk, &w.name("gitlab-webhook-secret"))
        .await
        .expect("a generated webhook secret");
    assert_eq!(webhook_secret.len(), 64);
    assert!(webhook_secret.chars().all(|c| c.is_ascii_hexdigit()));
    // …and nowhere else.
    let elsewhere = sdk("us-east-1").await;
    for leaf in [
        "gitlab-token",
        "gitlab-webhook-secret",
        "slack-signing-secret",
    ] {
        assert_eq!(ssm_get(&elsewhere, &w.name(leaf)).await, None, "{leaf}");
    }
    let stored: BTreeMap<&str, &Stored> = outcome
        .stored
        .iter()
        .map(|(n, s)| (n.rsplit('/').next().unwrap(), s))
        .collect();
    assert_eq!(stored["gitlab-token"], &Stored::Created);
    assert_eq!(stored["gitlab-webhook-secret"], &Stored::Generated);
    assert_eq!(
        outcome.config_version, None,
        "a new stack reads what is there"
    );

    // The stack got the parameters naming them, and the projects.
    let calls = w.deployer.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let p = &calls[0];
    assert_eq!(p["GitLabTokenParam"], w.name("gitlab-token"));
    assert_eq!(
        p["GitLabWebhookSecretParam"],
        w.name("gitlab-webhook-secret")
    );
    assert_eq!(p["SlackSigningSecretParam"], w.name("slack-signing-secret"));
    assert_eq!(p["SlackBotTokenParam"], w.name("slack-bot-token"));
    assert_eq!(p["GitLabProject"], "group/proj");
    assert_eq!(p["ChannelProjects"], "C0123=group/jobs");
    assert_eq!(p["GitLabUrl"], w.gitlab.url());
    assert!(!p.contains_key("ConfigVersion"));
    assert!(p
        .values()
        .all(|v| !v.contains(TOKEN_OUT) && !v.contains(BOT)));

    // Every routed project: a hook to the stack's webhook URL with the stored secret.
    let url = format!(
        "https://completion.lambda-url.{}.on.aws/gitlab/webhook",
        w.region
    );
    assert_eq!(outcome.outputs["GitLabWebhookUrl"], url);
    let mut hooks: Vec<(u64, String, String)> = w
        .gitlab
        .state()
        .hooks()
        .into_iter()
        .map(|(p, h, t)| (p, h.url, t))
        .collect();
    hooks.sort();
    assert_eq!(
        hooks,
        vec![
            (42, url.clone(), webhook_secret.clone()),
            (43, url.clone(), webhook_secret.clone())
        ]
    );
    // The variables role: checked on both, set to Developer where it refused (consent given).
    assert_eq!(
        w.gitlab.state().variables_role(42).as_deref(),
        Some("developer")
    );
    assert!(text.contains("from No one allowed to Developer"), "{text}");
    assert!(text.contains("group/proj: chat-ready"), "{text}");
    assert!(text.contains("group/jobs: chat-ready"), "{text}");

    // The Slack manifest, filled, and the create-from-manifest link.
    let manifest = std::fs::read_to_string(w.dir.path().join("slack-app-manifest.yaml")).unwrap();
    let slack_url = format!(
        "https://ingress.lambda-url.{}.on.aws/slack/commands",
        w.region
    );
    assert!(
        manifest.contains(&format!("url: {slack_url}")),
        "{manifest}"
    );
    assert!(!manifest.contains("REPLACE_WITH"));
    let parsed: serde_yaml::Value = serde_yaml::from_str(&manifest).unwrap();
    assert_eq!(
        parsed["features"]["slash_commands"][0]["url"],
        slack_url.as_str()
    );
    let link = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("https://api.slack.com/apps?new_app=1&manifest_json="))
        .expect("the create link");
    let json = percent_encoding::percent_decode_str(link.split_once("manifest_json=").unwrap().1)
        .decode_utf8()
        .unwrap();
    let from_link: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(from_link["features"]["slash_commands"][0]["url"], slack_url);

    // The checklist, and never a secret.
    assert!(text.contains("What is left"), "{text}");
    assert!(text.contains("/invite @chatops"), "{text}");
    assert!(text.contains("users link"), "{text}");
    assert!(text.contains("RUNS_TABLE=chatops-runs-table"), "{text}");
    assert_no_secret(&text, &[TOKEN_OUT, SIGNING, BOT, &webhook_secret]);
    assert!(outcome.ready, "{text}");
}

#[tokio::test]
async fn running_it_again_changes_only_what_changed() {
    let w = world("eu-central-1").await;
    let env = w.env(&[("SLACK_SIGNING_SECRET", SIGNING), ("SLACK_BOT_TOKEN", BOT)]);
    let mut args = w.args();
    args.fix_variables_role = true;
    w.deploy(&args, &env, &mut NoPrompt).await;
    let secret = ssm_get(&w.sdk, &w.name("gitlab-webhook-secret")).await;

    // The same answers again.
    let (again, text) = w.deploy(&args, &env, &mut NoPrompt).await;
    assert!(
        again
            .stored
            .iter()
            .all(|(_, s)| matches!(s, Stored::Unchanged | Stored::Kept)),
        "{:?}",
        again.stored
    );
    assert!(text.contains("left alone"), "{text}");
    assert_eq!(
        again.config_version, None,
        "nothing changed, nothing restarts"
    );
    assert_eq!(
        ssm_get(&w.sdk, &w.name("gitlab-webhook-secret")).await,
        secret,
        "the webhook secret is kept"
    );
    assert_eq!(
        w.gitlab.state().hooks().len(),
        2,
        "the hooks are updated, not added"
    );
    assert!(text.contains("Updated webhook"), "{text}");

    // A new bot token: stored, and ConfigVersion changes so the functions read it.
    let rotated = "xoxb-9999-rotated-token";
    let env = w.env(&[
        ("SLACK_SIGNING_SECRET", SIGNING),
        ("SLACK_BOT_TOKEN", rotated),
    ]);
    let (third, text) = w.deploy(&args, &env, &mut NoPrompt).await;
    let bot = third
        .stored
        .iter()
        .find(|(n, _)| n.ends_with("slack-bot-token"))
        .unwrap();
    assert_eq!(bot.1, Stored::Updated);
    assert_eq!(
        ssm_get(&w.sdk, &w.name("slack-bot-token")).await.as_deref(),
        Some(rotated)
    );
    let v = third.config_version.clone().expect("a new ConfigVersion");
    let calls = w.deployer.calls.lock().unwrap().clone();
    assert_eq!(calls.last().unwrap()["ConfigVersion"], v);
    assert!(text.contains(&format!("ConfigVersion={v}")), "{text}");
    assert_no_secret(&text, &[rotated, SIGNING, TOKEN_OUT]);

    // Without GITLAB_TOKEN: the stored one is used.
    let mut no_token = w.env(&[]);
    no_token.set("GITLAB_TOKEN", "");
    let plan = deploy::plan(&args, &no_token, &mut NoPrompt).unwrap();
    assert!(plan.gitlab_token.is_none());
    assert_eq!(
        deploy::gitlab_token(&plan, &w.sdk).await.unwrap().expose(),
        TOKEN_OUT
    );
}

#[tokio::test]
async fn a_person_at_the_terminal_is_asked_and_the_slack_secrets_can_come_later() {
    let w = world("ap-southeast-2").await;
    let env = Env::from_pairs([("GITLAB_URL", w.gitlab.url())]);
    let stack: &'static str = w.stack.clone().leak();
    let mut prompt = Scripted {
        answers: vec![
            "ap-southeast-2", // region
            stack,            // stack name
            "group/proj",     // project (GITLAB_URL comes from the environment)
            "",               // channel projects: none
            TOKEN_OUT,        // token
            "",               // Slack signing secret: the app does not exist yet
            "",               // bot token
            "y",              // set the variables role to Developer?
        ],
        asked: Vec::new(),
    };
    let args = DeployArgs::default();
    let (outcome, text) = w.deploy(&args, &env, &mut prompt).await;

    let secrets: Vec<&str> = prompt
        .asked
        .iter()
        .filter(|(_, s)| *s)
        .map(|(q, _)| q.as_str())
        .collect();
    assert_eq!(
        secrets.len(),
        3,
        "token and both Slack secrets, without echo: {:?}",
        prompt.asked
    );
    assert!(secrets[0].contains("GitLab access token"));
    assert!(prompt.asked[0].0.contains("AWS region"));
    assert!(prompt
        .asked
        .last()
        .unwrap()
        .0
        .contains("Set it to Developer?"));

    assert_eq!(
        ssm_get(&w.sdk, &w.name("gitlab-token")).await.as_deref(),
        Some(TOKEN_OUT)
    );
    assert_eq!(ssm_get(&w.sdk, &w.name("slack-signing-secret")).await, None);
    let pending: Vec<&str> = outcome
        .stored
        .iter()
        .filter(|(_, s)| *s == Stored::Pending)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(pending.len(), 2, "{:?}", outcome.stored);
    // The stack still names the Slack parameters (the functions start once they exist).
    let calls = w.deployer.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0]["SlackSigningSecretParam"],
        w.name("slack-signing-secret")
    );
    assert!(text.contains("Create the Slack app"), "{text}");
    assert!(
        text.contains("run make deploy again with SLACK_SIGNING_SECRET"),
        "{text}"
    );
    assert_eq!(
        w.gitlab.state().variables_role(42).as_deref(),
        Some("developer"),
        "the person said yes"
    );
    assert!(!outcome.ready, "the Slack secrets are still to come");
    assert_no_secret(&text, &[TOKEN_OUT]);
}

#[tokio::test]
async fn without_consent_the_variables_role_is_left_and_put_on_the_checklist() {
    let w = world("eu-west-1").await;
    let env = w.env(&[("SLACK_SIGNING_SECRET", SIGNING), ("SLACK_BOT_TOKEN", BOT)]);
    let (outcome, text) = w.deploy(&w.args(), &env, &mut NoPrompt).await;
    assert_eq!(
        w.gitlab.state().variables_role(42).as_deref(),
        Some("no_one_allowed")
    );
    assert!(text.contains("Pipeline variables: REFUSED"), "{text}");
    assert!(text.contains("--fix-variables-role"), "{text}");
    assert!(
        text.contains("GitLab: finish what step 4 reports"),
        "{text}"
    );
    assert!(!outcome.ready);
}

#[tokio::test]
async fn missing_or_bad_answers_stop_before_anything_is_written() {
    let w = world("eu-west-1").await;
    let base = w.args();
    let cases: Vec<(DeployArgs, Env, &str)> = vec![
        (
            DeployArgs {
                region: None,
                ..base.clone()
            },
            w.env(&[]),
            "AWS_DEFAULT_REGION",
        ),
        (
            DeployArgs {
                region: Some("Europe".into()),
                ..base.clone()
            },
            w.env(&[]),
            "not an AWS region",
        ),
        (
            DeployArgs {
                stack_name: Some("1 bad".into()),
                ..base.clone()
            },
            w.env(&[]),
            "not a stack name",
        ),
        (
            base.clone(),
            {
                let mut e = w.env(&[]);
                e.set("GITLAB_PROJECT", "");
                e
            },
            "GITLAB_PROJECT",
        ),
        (
            base.clone(),
            w.env(&[("GITLAB_URL", "https://gitlab.com/api/v4")]),
            "without /api/v4",
        ),
        (
            base.clone(),
            w.env(&[("CHANNEL_PROJECTS", "C1")]),
            "CHANNEL_PROJECTS",
        ),
        (
            base.clone(),
            w.env(&[("SLACK_BOT_TOKEN", "xoxp-user-token")]),
            "xoxb-",
        ),
        (
            base.clone(),
            w.env(&[("GITLAB_WEBHOOK_SECRET", "short")]),
            "shorter than 16",
        ),
        (
            base.clone(),
            w.env(&[("MATTERMOST_TOKEN", "mm-token")]),
            "MATTERMOST_URL",
        ),
    ];
    for (args, env, needle) in cases {
        let err = deploy::plan(&args, &env, &mut NoPrompt).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }

    // A token GitLab refuses: stopped at the preflight, nothing stored, no stack.
    let mut env = w.env(&[]);
    env.set("GITLAB_TOKEN", "glpat-wrong");
    let plan = deploy::plan(&base, &env, &mut NoPrompt).unwrap();
    let wrong = GitLabClient::new(&w.gitlab.url(), Secret::new("glpat-wrong")).unwrap();
    let mut out = Vec::new();
    let err = deploy::run(
        plan,
        &w.sdk,
        &wrong,
        &w.deployer,
        &mut NoPrompt,
        w.dir.path(),
        &mut out,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("refused the token"), "{err}");
    assert_eq!(ssm_get(&w.sdk, &w.name("gitlab-token")).await, None);
    assert!(w.deployer.calls.lock().unwrap().is_empty());
}

#[test]
fn sam_parameter_overrides_keep_commas_and_equals_inside_values() {
    let s = deploy::sam_overrides(&[
        ("ChannelProjects".into(), "C1=group/a,C2=42".into()),
        ("SlackBotTokenParam".into(), "".into()),
        ("GitLabUrl".into(), "https://gitlab.example.com".into()),
        ("Odd".into(), "a \"quoted\" \\ value".into()),
    ]);
    assert_eq!(
        s,
        r#"ChannelProjects="C1=group/a,C2=42" SlackBotTokenParam="" GitLabUrl="https://gitlab.example.com" Odd="a \"quoted\" \\ value""#
    );
}

#[tokio::test]
async fn an_oauth_application_is_stored_and_passed_and_its_redirect_uri_printed() {
    let w = world("eu-west-2").await;
    let env = w.env(&[
        ("SLACK_SIGNING_SECRET", SIGNING),
        ("SLACK_BOT_TOKEN", BOT),
        ("GITLAB_OAUTH_CLIENT_ID", "app-id-123"),
        ("GITLAB_OAUTH_CLIENT_SECRET", "gloas-app-secret-value"),
        ("GITLAB_READ_TOKEN", "glpat-read-api-only"),
    ]);
    let (_, text) = w.deploy(&w.args(), &env, &mut NoPrompt).await;
    // The functions get the read token; the administrator's token (which set up the
    // webhook) is not stored.
    assert_eq!(
        ssm_get(&w.sdk, &w.name("gitlab-token")).await.as_deref(),
        Some("glpat-read-api-only")
    );
    assert_eq!(
        ssm_get(&w.sdk, &w.name("gitlab-oauth-client-secret"))
            .await
            .as_deref(),
        Some("gloas-app-secret-value")
    );
    let calls = w.deployer.calls.lock().unwrap().clone();
    let p = &calls[0];
    assert_eq!(p["GitLabOAuthClientId"], "app-id-123");
    assert_eq!(
        p["GitLabOAuthClientSecretParam"],
        w.name("gitlab-oauth-client-secret")
    );
    assert!(
        text.contains("/oauth/gitlab/callback"),
        "the redirect URI is printed:\n{text}"
    );
    assert_no_secret(&text, &["gloas-app-secret-value"]);
    assert!(
        !text.contains("users link"),
        "people connect themselves:\n{text}"
    );

    // A secret without its id is a mistake, said before anything is written.
    let env = w.env(&[("GITLAB_OAUTH_CLIENT_SECRET", "gloas-x")]);
    let err = deploy::plan(&w.args(), &env, &mut NoPrompt).unwrap_err();
    assert!(err.to_string().contains("GITLAB_OAUTH_CLIENT_ID"), "{err}");
}
