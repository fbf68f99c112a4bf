//! `chatops gitlab check` through its real interfaces: the GitLab stand-in serving a
//! project's CI configuration (`ci/lint`'s `merged_yaml`), project settings and hooks; the
//! real `GitLabClient`; the CLI entry point for exit codes and output.
//!
//! Each row of the table is a CI configuration of a shape teams have; the check must name
//! every job that would wrongly join a chat pipeline (and nothing else), every workflow rule
//! that drops one, and print an edit that, applied to the configuration, makes the stand-in
//! (which plans pipelines with the same rules evaluator) create a pipeline holding the chat
//! job alone.

use chatops::check::{check, run_cli, CheckOptions, CheckReport, FindingKind};
use chatops_adapters::gitlab::GitLabClient;
use chatops_core::config::Env;
use chatops_core::gitlab::GitLab;
use chatops_core::ids::{ProjectId, ProjectRef};
use chatops_core::secret::Secret;
use chatops_sim::gitlab::GitLabStandin;
use serde_yaml::{Mapping, Value};

const PROJECT: u64 = 42;
const PATH: &str = "group/proj";

async fn standin() -> (GitLabStandin, GitLabClient) {
    let gl = GitLabStandin::start().await;
    gl.state().add_project(PROJECT, PATH);
    gl.state().set_variables_role(PROJECT, "developer");
    let client = GitLabClient::new(&gl.url(), Secret::new(gl.token())).unwrap();
    (gl, client)
}

async fn run_check(gl: &GitLabStandin, client: &GitLabClient, yaml: &str) -> CheckReport {
    gl.state().set_ci_yaml(PROJECT, yaml);
    check(client, &ProjectRef::new(PATH), &CheckOptions::default())
        .await
        .unwrap_or_else(|e| panic!("check failed: {e}\n{yaml}"))
}

/// GitLab's merge of a redeclared key: hashes merge, anything else is replaced.
fn deep_merge(base: &mut Mapping, over: Mapping) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Apply every printed YAML edit to the configuration, as a person pasting them would.
fn apply_fixes(yaml: &str, report: &CheckReport) -> String {
    let mut root: Mapping = serde_yaml::from_str(yaml).unwrap();
    for f in &report.findings {
        let Some(edit) = &f.yaml else { continue };
        assert!(f.verified, "unverified edit for {:?}", f.kind);
        let edit: Mapping = serde_yaml::from_str(edit)
            .unwrap_or_else(|e| panic!("the printed edit is not YAML ({e}):\n{edit}"));
        if let FindingKind::ChatJobStaysOut(job) = &f.kind {
            // "Replace its only:/except: with the contract rule".
            if let Some(Value::Mapping(j)) = root.get_mut(job.as_str()) {
                j.remove("only");
                j.remove("except");
            }
        }
        deep_merge(&mut root, edit);
    }
    serde_yaml::to_string(&root).unwrap()
}

/// The jobs the stand-in puts in the pipeline the dispatcher would create for `job`.
async fn chat_pipeline(gl: &GitLabStandin, client: &GitLabClient, job: &str) -> Vec<String> {
    let vars: Vec<(String, String)> = [
        ("CHATOPS_JOB", job),
        ("CHAT_INPUT", ""),
        ("CHAT_CHANNEL", "C1"),
        ("CHAT_USER_ID", "U1"),
        ("CHAT_USER_NAME", "alice"),
        ("CHAT_PLATFORM", "slack"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    match client
        .create_pipeline(ProjectId(PROJECT), "main", &vars)
        .await
    {
        Ok(p) => {
            let mut names: Vec<String> = gl
                .state()
                .jobs_of(p.id.0)
                .into_iter()
                .map(|j| j.name)
                .collect();
            names.sort();
            names
        }
        Err(e) => vec![format!("refused: {e}")],
    }
}

struct Case {
    name: &'static str,
    yaml: &'static str,
    chat_jobs: &'static [&'static str],
    joining: &'static [&'static str],
    workflow_drops: bool,
    /// Text every listed finding's edit must contain, per job (or "workflow").
    edits: &'static [(&'static str, &'static str)],
}

const WORKFLOW_MR_AND_PUSH: &str = r#"
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
    - if: $CI_PIPELINE_SOURCE == "push"
stages: [test, chatops]
hello-world:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
  script: echo "Hello World."
test:
  rules:
    - if: $CHATOPS_JOB
      when: never
    - when: on_success
  script: make test
"#;

const WORKFLOW_NEVER_API: &str = r#"
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "api"
      when: never
    - when: always
hello-world:
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
  script: echo hi
"#;

const ONLY_EXCEPT: &str = r#"
hello-world:
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
  script: echo hi
test:
  only: [main, merge_requests]
  script: make test
docs:
  except: [schedules]
  script: make docs
nightly:
  only: [schedules]
  script: make nightly
lint:
  only:
    refs: [branches]
    variables: [$LINT == "yes"]
  script: make lint
"#;

const NO_RULES: &str = r#"
stages: [build, test, chatops]
build:
  stage: build
  script: make
unit:
  stage: test
  needs: []
  script: make unit
hello-world:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
  script: echo hi
"#;

/// What GitLab's `merged_yaml` holds for a project with `include: - template:
/// Security/SAST.gitlab-ci.yml` (trimmed to two analyzers; the rules as the template writes
/// them): the template's jobs are in it like the project's own.
const SAST_MERGED: &str = r#"
stages: [build, test, chatops]
variables:
  SAST_EXCLUDED_ANALYZERS: "nodejs-scan"
  SECURE_ANALYZERS_PREFIX: "$CI_TEMPLATE_REGISTRY_HOST/security-products"
sast:
  stage: test
  artifacts:
    reports:
      sast: gl-sast-report.json
  rules:
    - when: never
  script:
    - echo "$CI_JOB_NAME is used for configuration only, and its script should not be executed"
    - exit 1
.sast-analyzer:
  extends: sast
  allow_failure: true
  script:
    - /analyzer run
semgrep-sast:
  extends: .sast-analyzer
  rules:
    - if: $SAST_DISABLED == 'true' || $SAST_DISABLED == '1'
      when: never
    - if: $SAST_EXCLUDED_ANALYZERS =~ /semgrep/
      when: never
    - if: $CI_COMMIT_BRANCH
      exists:
        - '**/*.py'
        - '**/*.js'
        - '**/*.go'
nodejs-scan-sast:
  extends: .sast-analyzer
  rules:
    - if: $SAST_DISABLED == 'true' || $SAST_DISABLED == '1'
      when: never
    - if: $SAST_EXCLUDED_ANALYZERS =~ /nodejs-scan/
      when: never
    - if: $CI_COMMIT_BRANCH
      exists:
        - '**/package.json'
deploy:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
      when: manual
  script: ./deploy.sh "$CHAT_INPUT"
"#;

const DEDICATED: &str = r#"
stages: [chatops]
.chatops:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
.chatops-manual:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
      when: manual
hello-world:
  extends: .chatops
  script:
    - echo "Hello World."
deploy:
  extends: .chatops-manual
  script:
    - ./deploy.sh "$CHAT_INPUT"
"#;

const EXCEPT_CHAT: &str = r#"
stages: [chatops, deploy]
hello-world:
  stage: chatops
  rules:
    - if: '$CHATOPS_JOB == $CI_JOB_NAME'
  script: echo hi
deploy-production:
  stage: deploy
  except: [chat]
  script: ./deploy.sh production
"#;

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "workflow rules for merge requests and pushes only",
            yaml: WORKFLOW_MR_AND_PUSH,
            chat_jobs: &["hello-world"],
            joining: &[],
            workflow_drops: true,
            edits: &[("workflow", "- if: $CHATOPS_JOB\n")],
        },
        Case {
            name: "workflow rule refusing api pipelines",
            yaml: WORKFLOW_NEVER_API,
            chat_jobs: &["hello-world"],
            joining: &[],
            workflow_drops: true,
            edits: &[("workflow", "- if: $CHATOPS_JOB\n")],
        },
        Case {
            name: "only/except jobs",
            yaml: ONLY_EXCEPT,
            chat_jobs: &["hello-world"],
            joining: &["docs", "test"],
            workflow_drops: false,
            edits: &[
                ("test", "except:\n    variables:\n    - $CHATOPS_JOB"),
                (
                    "docs",
                    "refs:\n    - schedules\n    variables:\n    - $CHATOPS_JOB",
                ),
            ],
        },
        Case {
            name: "jobs with no rules join everything",
            yaml: NO_RULES,
            chat_jobs: &["hello-world"],
            joining: &["build", "unit"],
            workflow_drops: false,
            edits: &[("build", "except:\n    variables:\n    - $CHATOPS_JOB")],
        },
        Case {
            name: "an included SAST template's jobs",
            yaml: SAST_MERGED,
            chat_jobs: &["deploy"],
            joining: &["semgrep-sast"],
            workflow_drops: false,
            edits: &[(
                "semgrep-sast",
                "rules:\n  - if: $CHATOPS_JOB\n    when: never\n  - if: $SAST_DISABLED",
            )],
        },
        Case {
            name: "a dedicated chat-jobs project",
            yaml: DEDICATED,
            chat_jobs: &["deploy", "hello-world"],
            joining: &[],
            workflow_drops: false,
            edits: &[],
        },
        Case {
            name: "except: [chat]",
            yaml: EXCEPT_CHAT,
            chat_jobs: &["hello-world"],
            joining: &["deploy-production"],
            workflow_drops: false,
            edits: &[(
                "deploy-production",
                "except:\n    refs:\n    - chat\n    variables:\n    - $CHATOPS_JOB",
            )],
        },
        Case {
            name: "the demo project",
            yaml: include_str!("demo-project/.gitlab-ci.yml"),
            chat_jobs: &[
                "db-check",
                "greet",
                "hello-world",
                "ls",
                "release",
                "restart",
                "slow-task",
            ],
            joining: &[],
            workflow_drops: false,
            edits: &[],
        },
    ]
}

#[tokio::test]
async fn ci_configs_of_every_shape_are_judged_and_their_fixes_work() {
    for case in cases() {
        let (gl, client) = standin().await;
        let report = run_check(&gl, &client, case.yaml).await;
        let text = report.to_string();
        let ctx = format!("{}:\n{text}", case.name);

        let mut chat: Vec<&str> = report.chat_jobs.iter().map(|j| j.name.as_str()).collect();
        chat.sort_unstable();
        assert_eq!(chat, case.chat_jobs, "{ctx}");
        let mut joining = report.joining();
        joining.sort_unstable();
        assert_eq!(joining, case.joining, "{ctx}");
        let drops = report
            .finding(|k| matches!(k, FindingKind::WorkflowDrops(_)))
            .is_some();
        assert_eq!(drops, case.workflow_drops, "{ctx}");
        let expected_findings = case.joining.len() + usize::from(case.workflow_drops);
        assert_eq!(report.findings.len(), expected_findings, "{ctx}");
        assert_eq!(report.ready(), expected_findings == 0, "{ctx}");
        assert_eq!(
            report.exit_code(),
            i32::from(expected_findings > 0),
            "{ctx}"
        );
        for (what, needle) in case.edits {
            let f = report
                .findings
                .iter()
                .find(|f| match &f.kind {
                    FindingKind::Joins(j, _) => j == what,
                    FindingKind::WorkflowDrops(_) => *what == "workflow",
                    _ => false,
                })
                .unwrap_or_else(|| panic!("no finding for {what}: {ctx}"));
            let yaml = f.yaml.as_deref().unwrap_or_default();
            assert!(
                yaml.contains(needle),
                "{what}: {needle:?} not in\n{yaml}\n{ctx}"
            );
            assert!(text.contains(&f.text), "{ctx}");
        }

        // Before: the chat pipeline holds more than the job, or is refused.
        let first = case.chat_jobs[0];
        let before = chat_pipeline(&gl, &client, first).await;
        assert_eq!(
            before == vec![first.to_owned()],
            expected_findings == 0,
            "{}: before the edits the stand-in planned {before:?}",
            case.name
        );
        if expected_findings == 0 {
            continue;
        }
        // After pasting every printed edit: ready, and each chat pipeline holds its job alone.
        let fixed = apply_fixes(case.yaml, &report);
        let again = run_check(&gl, &client, &fixed).await;
        assert!(
            again.ready(),
            "{}: after the edits:\n{again}\n{fixed}",
            case.name
        );
        for job in case.chat_jobs {
            assert_eq!(
                chat_pipeline(&gl, &client, job).await,
                vec![job.to_string()],
                "{}: after the edits\n{fixed}",
                case.name
            );
        }
    }
}

#[tokio::test]
async fn job_option_checks_the_named_jobs_only() {
    let (gl, client) = standin().await;
    gl.state()
        .set_ci_yaml(PROJECT, include_str!("demo-project/.gitlab-ci.yml"));
    let opts = |jobs: &[&str]| CheckOptions {
        jobs: jobs.iter().map(|s| s.to_string()).collect(),
        webhook_url: None,
    };
    let p = ProjectRef::new(PATH);

    let r = check(&client, &p, &opts(&["greet"])).await.unwrap();
    assert!(r.ready(), "{r}");
    assert_eq!(r.chat_jobs.len(), 1);

    let r = check(&client, &p, &opts(&["deploy-production"]))
        .await
        .unwrap();
    let f = r
        .finding(|k| matches!(k, FindingKind::ExcludedFromChat(j) if j == "deploy-production"))
        .unwrap_or_else(|| panic!("{r}"));
    assert!(f.text.contains("except: [chat]"), "{r}");

    let r = check(&client, &p, &opts(&["nope"])).await.unwrap();
    let f = r
        .finding(|k| matches!(k, FindingKind::NoSuchJob(j) if j == "nope"))
        .unwrap_or_else(|| panic!("{r}"));
    assert!(
        f.fix.contains("hello-world"),
        "lists the jobs there are: {r}"
    );
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test]
async fn a_chat_job_that_never_joins_gets_the_contract_rule() {
    let (gl, client) = standin().await;
    let yaml = "hello-world:\n  only: [chat]\n  script: echo hi\nbuild:\n  script: make\n";
    gl.state().set_ci_yaml(PROJECT, yaml);
    let opts = CheckOptions {
        jobs: vec!["hello-world".into()],
        webhook_url: None,
    };
    let r = check(&client, &ProjectRef::new(PATH), &opts).await.unwrap();
    let f = r
        .finding(|k| matches!(k, FindingKind::ChatJobStaysOut(j) if j == "hello-world"))
        .unwrap_or_else(|| panic!("{r}"));
    assert!(f.text.contains("only: [chat]"), "{r}");
    assert!(f
        .yaml
        .as_deref()
        .unwrap()
        .contains("$CHATOPS_JOB == $CI_JOB_NAME"));
    assert!(f.verified);
    assert_eq!(r.joining(), ["build"], "{r}");
    let fixed = apply_fixes(yaml, &r);
    gl.state().set_ci_yaml(PROJECT, &fixed);
    assert_eq!(
        chat_pipeline(&gl, &client, "hello-world").await,
        ["hello-world"]
    );
}

#[tokio::test]
async fn a_project_without_chat_jobs_is_told_what_would_join() {
    let (gl, client) = standin().await;
    let r = run_check(&gl, &client, "build:\n  script: make\n").await;
    assert!(r.finding(|k| *k == FindingKind::NoChatJob).is_some(), "{r}");
    assert_eq!(r.joining(), ["build"], "{r}");
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test]
async fn invalid_configuration_is_reported_with_gitlabs_errors() {
    let (gl, client) = standin().await;
    gl.state().set_ci_invalid(
        PROJECT,
        vec!["jobs:deploy config contains unknown keys: scriptt".into()],
    );
    let r = check(&client, &ProjectRef::new(PATH), &CheckOptions::default())
        .await
        .unwrap();
    let f = r.finding(|k| *k == FindingKind::CiInvalid).unwrap();
    assert!(f.text.contains("unknown keys: scriptt"), "{r}");
}

#[tokio::test]
async fn pipeline_variables_role_is_checked_against_the_tokens_role() {
    // (minimum role, token access, finding expected, text it must contain)
    let table: &[(&str, u32, bool, &str)] = &[
        (
            "developer",
            40,
            false,
            "minimum role is Developer, the token is Maintainer",
        ),
        ("maintainer", 40, false, "minimum role is Maintainer"),
        (
            "no_one_allowed",
            50,
            true,
            "is No one allowed, above the token's role, Owner",
        ),
        (
            "owner",
            40,
            true,
            "is Owner, above the token's role, Maintainer",
        ),
        // A Developer token cannot see the CI/CD settings at all.
        (
            "developer",
            30,
            true,
            "cannot read \"Minimum role to use pipeline variables\"",
        ),
    ];
    for (role, access, bad, needle) in table {
        let (gl, client) = standin().await;
        gl.state().set_variables_role(PROJECT, role);
        gl.state().set_token_access(*access);
        let r = run_check(&gl, &client, DEDICATED).await;
        let f = r.finding(|k| *k == FindingKind::PipelineVariables);
        assert_eq!(f.is_some(), *bad, "{role}/{access}:\n{r}");
        assert!(
            r.to_string().contains(needle),
            "{role}/{access}: {needle:?}\n{r}"
        );
        if let Some(f) = f {
            assert!(f.fix.contains("--fix-variables-role") || f.fix.contains("Maintainer"));
        }
    }
}

#[tokio::test]
async fn webhook_is_checked_when_its_url_is_given() {
    let (gl, client) = standin().await;
    gl.state().set_ci_yaml(PROJECT, DEDICATED);
    let url = "https://abc.lambda-url.eu-west-1.on.aws/gitlab/webhook";
    let opts = CheckOptions {
        jobs: vec![],
        webhook_url: Some(url.into()),
    };
    let p = ProjectRef::new(PATH);
    let r = check(&client, &p, &opts).await.unwrap();
    let f = r.finding(|k| *k == FindingKind::Webhook).unwrap();
    assert!(f.fix.contains("chatops gitlab setup --webhook-url"), "{r}");

    client
        .put_hook(ProjectId(PROJECT), None, url, "secret-token")
        .await
        .unwrap();
    let r = check(&client, &p, &opts).await.unwrap();
    assert!(r.ready(), "{r}");
    assert!(r.to_string().contains("(pipeline events)"), "{r}");
    assert!(!r.to_string().contains("secret-token"));
}

#[tokio::test]
async fn cli_checks_every_routed_project_with_exit_codes() {
    let (gl, _client) = standin().await;
    gl.state().add_project(43, "group/jobs");
    gl.state().set_variables_role(43, "developer");
    gl.state().set_ci_yaml(PROJECT, DEDICATED);
    gl.state().set_ci_yaml(43, NO_RULES);
    let env = |pairs: &[(&str, String)]| {
        let mut e = Env::from_pairs([("GITLAB_URL", gl.url()), ("GITLAB_TOKEN", gl.token())]);
        for (k, v) in pairs {
            e.set(*k, v.clone());
        }
        e
    };
    let opts = CheckOptions::default();

    let mut out = Vec::new();
    let ready = env(&[("GITLAB_PROJECT", PATH.into())]);
    assert_eq!(run_cli(&ready, None, &opts, &mut out).await, 0);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("Chat-ready"), "{text}");

    let mut out = Vec::new();
    let both = env(&[
        ("GITLAB_PROJECT", PATH.into()),
        ("CHANNEL_PROJECTS", "C1=group/jobs,C2=42".into()),
    ]);
    assert_eq!(run_cli(&both, None, &opts, &mut out).await, 1);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("GitLab project group/proj"), "{text}");
    assert!(text.contains("GitLab project group/jobs"), "{text}");
    assert_eq!(
        text.matches("GitLab project group/proj").count(),
        1,
        "each project once"
    );
    assert!(text.contains("The job build joins"), "{text}");
    assert!(!text.contains(&gl.token()), "the token is never printed");

    let mut out = Vec::new();
    assert_eq!(run_cli(&both, Some("group/jobs"), &opts, &mut out).await, 1);

    // Bad usage and configuration: 2, nothing printed on stdout.
    for (e, project, opts) in [
        (env(&[]), None, CheckOptions::default()),
        (
            Env::from_pairs([("GITLAB_PROJECT", PATH)]),
            None,
            CheckOptions::default(),
        ),
        (env(&[]), Some("  "), CheckOptions::default()),
        (env(&[]), Some("group/nope"), CheckOptions::default()),
        (
            env(&[("GITLAB_PROJECT", PATH.into())]),
            None,
            CheckOptions {
                jobs: vec![],
                webhook_url: Some("not a url".into()),
            },
        ),
        (
            env(&[("CHANNEL_PROJECTS", "C1".into())]),
            None,
            CheckOptions::default(),
        ),
    ] {
        let mut out = Vec::new();
        assert_eq!(
            run_cli(&e, project, &opts, &mut out).await,
            2,
            "{project:?}"
        );
        assert!(out.is_empty());
    }
}

#[tokio::test]
async fn wrong_token_cannot_check() {
    let (gl, _client) = standin().await;
    let client = GitLabClient::new(&gl.url(), Secret::new("glpat-wrong")).unwrap();
    let err = check(&client, &ProjectRef::new(PATH), &CheckOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused the token"), "{err}");
}
