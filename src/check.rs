//! `chatops gitlab check [--project P] [--job J] [--webhook-url URL]`: is a project ready for
//! chat? Reads, with the administrator's token:
//!
//! - the project (`GET /projects/:id`): its default branch, "Minimum role to use pipeline
//!   variables" (`ci_pipeline_variables_minimum_override_role`) against the token's own role;
//! - its CI configuration on the default branch with every `include:` merged
//!   (`GET /projects/:id/ci/lint?content_ref=<branch>&include_merged_yaml=true`), evaluated
//!   with the demo runner's rules evaluator (`chatops_sim::runner`) for the pipeline the
//!   dispatcher creates: source `api`, the default branch, the contract's variables
//!   (`chatops_core::dispatcher::pipeline_variables`);
//! - with `--webhook-url`, the project's webhooks (`GET /projects/:id/hooks`).
//!
//! It prints every `workflow:rules` that would drop a chat pipeline, every job that would
//! wrongly join one (templates' jobs included: they are in the merged YAML), every chat job
//! that would not join its own pipeline, and for each the exact YAML to change. Each printed
//! edit is applied to the configuration and evaluated again before it is shown, so it is
//! known to work. Nothing is changed on GitLab.
//!
//! Chat jobs are the jobs that join a pipeline asking for them and stay out of one asking
//! for another job (or the `--job` names). `exists:` cannot be checked without the
//! repository, so it counts as found: a job that may join is reported.
//!
//! Exit code: 0 chat-ready, 1 something must change, 2 the check could not be done (bad
//! usage or configuration, GitLab unreachable, a CI syntax the evaluator does not know).

use chatops_adapters::aws::{sdk_config, SsmSecrets};
use chatops_adapters::gitlab::GitLabClient;
use chatops_core::config::{ConfigError, Env, NoSecrets, SecretSource};
use chatops_core::gitlab::{AccessLevel, GitLab, GitLabError, Project, VariablesRole};
use chatops_core::ids::{ChannelId, ChatUserId, ProjectRef, RequestId, TeamId};
use chatops_core::run::{Platform, RunRequest, RUN_REQUEST_VERSION};
use chatops_sim::runner::{CiFile, JobDef, PipelineContext, When, WorkflowVerdict};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::fmt;

/// What to check besides the project itself.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Check only these chat jobs (default: every job that selects itself).
    pub jobs: Vec<String>,
    /// Check that a webhook to this URL exists with pipeline and job events.
    pub webhook_url: Option<String>,
}

/// Something that must change, with the edit that does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    /// What is wrong, in one or two sentences.
    pub text: String,
    /// What to do: a setting, a command, or how to apply `yaml`.
    pub fix: String,
    /// The YAML edit, when the fix is one: top-level keys as in `.gitlab-ci.yml` (a job or
    /// `workflow`), each with the whole new value of the key it changes.
    pub yaml: Option<String>,
    /// For a YAML edit: whether it was applied to the configuration and evaluated again
    /// with the expected result.
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    NoDefaultBranch,
    PipelineVariables,
    Webhook,
    CiInvalid,
    NoChatJob,
    NoSuchJob(String),
    ExcludedFromChat(String),
    /// The chat job does not join the pipeline that asks for it.
    ChatJobStaysOut(String),
    /// `workflow: rules` drop the pipeline of these chat jobs.
    WorkflowDrops(Vec<String>),
    /// This job joins the pipelines of these chat jobs.
    Joins(String, Vec<String>),
}

/// A chat job found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatJob {
    pub name: String,
    pub manual: bool,
}

/// What `check` found for one project.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub project: String,
    pub project_id: u64,
    pub branch: Option<String>,
    pub chat_jobs: Vec<ChatJob>,
    /// What is fine, one line each.
    pub fine: Vec<String>,
    /// Worth knowing, changes nothing.
    pub notes: Vec<String>,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn ready(&self) -> bool {
        self.findings.is_empty()
    }

    pub fn exit_code(&self) -> i32 {
        if self.ready() {
            0
        } else {
            1
        }
    }

    /// The jobs that wrongly join chat pipelines.
    pub fn joining(&self) -> Vec<&str> {
        self.findings
            .iter()
            .filter_map(|f| match &f.kind {
                FindingKind::Joins(job, _) => Some(job.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn finding(&self, kind: impl Fn(&FindingKind) -> bool) -> Option<&Finding> {
        self.findings.iter().find(|f| kind(&f.kind))
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GitLab project {} (id {})",
            self.project, self.project_id
        )?;
        match &self.branch {
            Some(b) => writeln!(f, ", default branch {b}")?,
            None => writeln!(f)?,
        }
        for line in &self.fine {
            writeln!(f, "  ok: {line}")?;
        }
        for line in &self.notes {
            writeln!(f, "  note: {line}")?;
        }
        for (i, finding) in self.findings.iter().enumerate() {
            writeln!(f, "\n{}. {}", i + 1, finding.text)?;
            for line in finding.fix.lines() {
                if line.is_empty() {
                    writeln!(f)?;
                } else {
                    writeln!(f, "   {line}")?;
                }
            }
            if let Some(yaml) = &finding.yaml {
                writeln!(f)?;
                for line in yaml.lines() {
                    writeln!(f, "       {line}")?;
                }
                if !finding.verified {
                    writeln!(
                        f,
                        "   (this check could not confirm that the edit is enough: check the \
                         job by hand)"
                    )?;
                }
            }
        }
        if self.ready() {
            writeln!(f, "Chat-ready: nothing to change.")
        } else {
            let n = self.findings.len();
            writeln!(
                f,
                "\n{n} thing{} to change in {} before chat commands work as they should.",
                if n == 1 { "" } else { "s" },
                self.project
            )
        }
    }
}

/// Why the check could not be done (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "project {project} was not found, or the token cannot see it: check the project \
         (numeric id or group/project path) and GITLAB_URL ({detail})"
    )]
    ProjectNotFound { project: String, detail: String },
    #[error(
        "GitLab refused the token: it may be expired or revoked, or lack the `api` scope ({0})"
    )]
    TokenRefused(String),
    #[error(
        "the CI configuration of {project} uses something this check cannot evaluate ({detail}); \
         GitLab itself may accept it: check the jobs by hand with the README's \"Make your CI \
         config chat-ready\""
    )]
    Evaluate { project: String, detail: String },
    #[error(transparent)]
    GitLab(#[from] GitLabError),
}

/// Check one project.
pub async fn check(
    gitlab: &dyn GitLab,
    project: &ProjectRef,
    opts: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    let settings = gitlab
        .project_settings(project)
        .await
        .map_err(|e| match e {
            GitLabError::NotFound(detail) => CheckError::ProjectNotFound {
                project: project.to_string(),
                detail,
            },
            GitLabError::Unauthorized(detail) | GitLabError::Forbidden(detail) => {
                CheckError::TokenRefused(detail)
            }
            other => CheckError::GitLab(other),
        })?;
    let p = settings.project.clone();
    let mut report = CheckReport {
        project: p.path_with_namespace.clone(),
        project_id: p.id.0,
        branch: p.default_branch.clone(),
        chat_jobs: Vec::new(),
        fine: Vec::new(),
        notes: Vec::new(),
        findings: Vec::new(),
    };

    check_variables(&settings, &mut report);
    if let Some(url) = &opts.webhook_url {
        check_webhook(gitlab, &p, url, &mut report).await?;
    }

    let Some(branch) = p.default_branch.clone().filter(|b| !b.is_empty()) else {
        report.findings.push(Finding {
            kind: FindingKind::NoDefaultBranch,
            text: "The project has no default branch (is the repository empty?): chat \
                   pipelines run on the default branch."
                .into(),
            fix: "Push a first commit with a .gitlab-ci.yml to the project.".into(),
            yaml: None,
            verified: false,
        });
        return Ok(report);
    };
    let merged = gitlab.merged_ci_yaml(p.id, &branch).await?;
    let yaml = match (merged.valid, merged.merged_yaml) {
        (true, Some(y)) => y,
        (valid, _) => {
            let errors = if merged.errors.is_empty() {
                if valid {
                    "GitLab sent no merged configuration".to_owned()
                } else {
                    "GitLab gave no details".to_owned()
                }
            } else {
                merged.errors.join("; ")
            };
            report.findings.push(Finding {
                kind: FindingKind::CiInvalid,
                text: format!("The CI configuration on {branch} is not usable: {errors}."),
                fix: "Fix it in the pipeline editor (Build > Pipeline editor shows GitLab's own \
                      validation), then run this check again."
                    .into(),
                yaml: None,
                verified: false,
            });
            return Ok(report);
        }
    };
    let ci = CiFile::parse_merged(&yaml).map_err(|e| CheckError::Evaluate {
        project: p.path_with_namespace.clone(),
        detail: e.to_string(),
    })?;
    Evaluation {
        ci: &ci,
        project: &p,
        branch: &branch,
    }
    .run(opts, &mut report)
    .map_err(|detail| CheckError::Evaluate {
        project: p.path_with_namespace.clone(),
        detail,
    })?;
    Ok(report)
}

fn role_name(a: AccessLevel) -> String {
    match a.0 {
        10 => "Guest".into(),
        15 => "Planner".into(),
        20 => "Reporter".into(),
        30 => "Developer".into(),
        40 => "Maintainer".into(),
        50 => "Owner".into(),
        n => format!("access level {n}"),
    }
}

const VARIABLES_SETTING: &str =
    "Settings > CI/CD > Variables > \"Minimum role to use pipeline variables\"";

fn check_variables(s: &chatops_core::gitlab::ProjectSettings, report: &mut CheckReport) {
    let token = s.token_access;
    let token_name = token.map(role_name);
    let fix_to_developer = |current: &str| {
        format!(
            "In {VARIABLES_SETTING}, choose Developer (it is {current}); a Maintainer of the \
             project can change it (an Owner, when it is Owner). Or let chatops do it with the \
             admin's consent:\n\n    chatops gitlab setup --webhook-url <GitLabWebhookUrl> \
             --fix-variables-role"
        )
    };
    if s.restrict_user_defined_variables == Some(false) {
        report.fine.push(
            "pipeline variables: the project does not restrict them (restrict_user_defined_variables is off)"
                .into(),
        );
        return;
    }
    match (&s.variables_role, &s.variables_role_raw) {
        (Some(role), _) => {
            let allowed = match token {
                Some(level) => role.allows(level),
                // Creating a pipeline takes Developer, so Developer always suffices.
                None => *role == VariablesRole::Developer,
            };
            if allowed {
                report.fine.push(format!(
                    "pipeline variables: the minimum role is {}{}",
                    role.label(),
                    token_name
                        .as_ref()
                        .map(|t| format!(", the token is {t}"))
                        .unwrap_or_default()
                ));
            } else {
                let who = token_name
                    .as_ref()
                    .map(|t| format!("the token's role, {t}"))
                    .unwrap_or_else(|| "the token's role (GitLab did not say which)".into());
                report.findings.push(Finding {
                    kind: FindingKind::PipelineVariables,
                    text: format!(
                        "GitLab refuses the variables of every chat pipeline: \"Minimum role to \
                         use pipeline variables\" is {}, above {who} (GitLab answers \
                         \"Insufficient permissions to set pipeline variables\").",
                        role.label()
                    ),
                    fix: fix_to_developer(role.label()),
                    yaml: None,
                    verified: false,
                });
            }
        }
        (None, Some(raw)) => report.findings.push(Finding {
            kind: FindingKind::PipelineVariables,
            text: format!(
                "\"Minimum role to use pipeline variables\" has a value this check does not \
                 know ({raw:?})."
            ),
            fix: fix_to_developer(raw),
            yaml: None,
            verified: false,
        }),
        (None, None) if token.is_some_and(|t| t < AccessLevel::MAINTAINER) => {
            report.findings.push(Finding {
                kind: FindingKind::PipelineVariables,
                text: format!(
                    "The token ({}) cannot read \"Minimum role to use pipeline variables\": \
                     GitLab shows the CI/CD settings to Maintainers and Owners only.",
                    token_name.clone().unwrap_or_default()
                ),
                fix: format!(
                    "Give the token the Maintainer role (chatops gitlab setup needs it for the \
                     webhook too), or check {VARIABLES_SETTING} by hand: it must be Developer, \
                     or at most the token's role."
                ),
                yaml: None,
                verified: false,
            })
        }
        (None, None) => match s.restrict_user_defined_variables {
            Some(true) if token.is_some_and(|t| t < AccessLevel::MAINTAINER) => {
                report.findings.push(Finding {
                    kind: FindingKind::PipelineVariables,
                    text: "The project restricts pipeline variables to Maintainers \
                           (restrict_user_defined_variables), above the token's role."
                        .into(),
                    fix: "Give the token Maintainer, or turn the restriction off in Settings > \
                          CI/CD > Variables."
                        .into(),
                    yaml: None,
                    verified: false,
                })
            }
            _ => report.notes.push(
                "pipeline variables: this GitLab shows no minimum role for them (before 17.1); \
                 nothing to change"
                    .into(),
            ),
        },
    }
}

async fn check_webhook(
    gitlab: &dyn GitLab,
    p: &Project,
    url: &str,
    report: &mut CheckReport,
) -> Result<(), CheckError> {
    let setup = format!(
        "chatops gitlab setup --webhook-url {url}   (with GITLAB_PROJECT={})",
        p.path_with_namespace
    );
    let hooks = match gitlab.hooks(p.id).await {
        Ok(h) => h,
        Err(GitLabError::Unauthorized(detail))
        | Err(GitLabError::Forbidden(detail))
        | Err(GitLabError::NotFound(detail)) => {
            report.findings.push(Finding {
                kind: FindingKind::Webhook,
                text: format!(
                    "The token cannot list the project's webhooks ({detail}): it needs the \
                     Maintainer role."
                ),
                fix: "Give the token Maintainer on the project (or a group above it), then run \
                      this check again."
                    .into(),
                yaml: None,
                verified: false,
            });
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let same = |h: &&chatops_core::gitlab::Hook| {
        h.url.trim_end_matches('/') == url.trim().trim_end_matches('/')
    };
    match hooks.iter().find(same) {
        Some(h) if h.pipeline_events => report
            .fine
            .push(format!("webhook {} -> {} (pipeline events)", h.id, h.url)),
        Some(h) => report.findings.push(Finding {
            kind: FindingKind::Webhook,
            text: format!(
                "Webhook {} -> {} lacks pipeline events: replies would come only through the \
                 sweep, minutes late.",
                h.id, h.url,
            ),
            fix: format!("Run {setup} (it updates the hook)."),
            yaml: None,
            verified: false,
        }),
        None => report.findings.push(Finding {
            kind: FindingKind::Webhook,
            text: format!(
                "No webhook of the project points at {url} ({} other webhook{}): replies would \
                 come only through the 5-minute sweep.",
                hooks.len(),
                if hooks.len() == 1 { "" } else { "s" }
            ),
            fix: format!("Run {setup}."),
            yaml: None,
            verified: false,
        }),
    }
    Ok(())
}

/// A job name no configuration uses: "a pipeline asking for another job".
const OTHER_JOB: &str = "chatops-check-another-job";

struct Evaluation<'a> {
    ci: &'a CiFile,
    project: &'a Project,
    branch: &'a str,
}

/// What a chat pipeline asking for one job holds.
struct Outcome {
    workflow: WorkflowVerdict,
    /// Joining jobs with the rule index that let them in.
    joined: Vec<(String, Option<usize>, When)>,
}

impl Evaluation<'_> {
    /// The pipeline the dispatcher creates for `job`: source `api`, the default branch, the
    /// contract's variables (computed by the dispatcher's own function).
    fn context(&self, job: &str) -> PipelineContext {
        let req = RunRequest {
            version: RUN_REQUEST_VERSION,
            kind: chatops_core::run::RequestKind::Run,
            request_id: RequestId::new("chatops-check"),
            platform: Platform::Slack,
            team_id: TeamId::new("T0000000000"),
            team_domain: None,
            channel_id: ChannelId::new("C0000000000"),
            channel_name: "chatops-check".into(),
            user_id: ChatUserId::new("U0000000000"),
            user_name: "chatops-check".into(),
            command: "/chatops".into(),
            job: job.to_owned(),
            input: String::new(),
            response_url: String::new(),
            received_at: 0,
            public_base: None,
        };
        let vars = chatops_core::dispatcher::pipeline_variables(&req);
        let mut ctx = PipelineContext::api(&self.project.path_with_namespace, self.branch, &vars);
        ctx.project_id = self.project.id.0;
        ctx
    }

    fn outcome(ci: &CiFile, ctx: &PipelineContext) -> Result<Outcome, String> {
        let workflow = ci.workflow_verdict(ctx).map_err(|e| e.to_string())?;
        let joined = ci
            .job_verdicts(ctx)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|(j, v)| v.planned.map(|p| (j.name.clone(), v.rule, p.when)))
            .collect();
        Ok(Outcome { workflow, joined })
    }

    fn run(&self, opts: &CheckOptions, report: &mut CheckReport) -> Result<(), String> {
        let ci = self.ci;
        let other = Self::outcome(ci, &self.context(OTHER_JOB))?;
        let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
        for job in &ci.jobs {
            outcomes.insert(
                job.name.clone(),
                Self::outcome(ci, &self.context(&job.name))?,
            );
        }
        let joins = |o: &Outcome, name: &str| o.joined.iter().find(|(n, _, _)| n == name).cloned();

        // The chat jobs to check.
        let targets: Vec<String> = if opts.jobs.is_empty() {
            ci.jobs
                .iter()
                .filter(|j| {
                    joins(&outcomes[&j.name], &j.name).is_some() && joins(&other, &j.name).is_none()
                })
                .map(|j| j.name.clone())
                .collect()
        } else {
            opts.jobs.clone()
        };
        if targets.is_empty() {
            let example = Value::Mapping(mapping([
                ("rules", Value::Sequence(vec![contract_rule(false)])),
                (
                    "script",
                    Value::Sequence(vec!["echo \"Hello World.\"".into()]),
                ),
            ]));
            // The example joins the pipeline asking for it (what else joins is said below).
            let works = self
                .patched(|root| {
                    root.insert("hello-world".into(), example.clone());
                    Some(())
                })
                .and_then(|ci| Self::outcome(&ci, &self.context("hello-world")).ok())
                .is_some_and(|o| o.joined.iter().any(|(n, _, _)| n == "hello-world"));
            report.findings.push(Finding {
                kind: FindingKind::NoChatJob,
                text: format!(
                    "No job on {} selects itself for chat: /chatops run <job> has nothing to run.",
                    self.branch
                ),
                fix: "Add a chat job to .gitlab-ci.yml, for example:".into(),
                yaml: Some(yaml_of(&[("hello-world", example)])),
                verified: works,
            });
        }

        let mut dropped: Vec<String> = Vec::new();
        let mut dropping_rule: Option<Option<usize>> = None;
        // job -> (chat jobs whose pipeline it joins, rule that let it in)
        let mut foreign: BTreeMap<String, (Vec<String>, Option<usize>)> = BTreeMap::new();
        let mut checked: Vec<&str> = Vec::new();
        for name in &targets {
            let Some(def) = ci.job(name) else {
                report.findings.push(Finding {
                    kind: FindingKind::NoSuchJob(name.clone()),
                    text: format!("There is no job named {name:?} on {}.", self.branch),
                    fix: format!(
                        "Check the name, or add the job to .gitlab-ci.yml with the rule \
                         `- if: '$CHATOPS_JOB == $CI_JOB_NAME'` (jobs: {}).",
                        ci.jobs
                            .iter()
                            .map(|j| j.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    yaml: None,
                    verified: false,
                });
                continue;
            };
            if def.excepts_chat() {
                report.findings.push(Finding {
                    kind: FindingKind::ExcludedFromChat(name.clone()),
                    text: format!(
                        "The job {name} has `except: [chat]`: the dispatcher refuses to run it \
                         from chat."
                    ),
                    fix: "If it should run from chat, remove `chat` from its `except:` and give \
                          it the rule `- if: '$CHATOPS_JOB == $CI_JOB_NAME'`; otherwise nothing \
                          to do (and do not pass it to --job)."
                        .into(),
                    yaml: None,
                    verified: false,
                });
                continue;
            }
            let o = &outcomes[name];
            if let WorkflowVerdict::Dropped { rule } = o.workflow {
                dropped.push(name.clone());
                dropping_rule.get_or_insert(rule);
            }
            match joins(o, name) {
                None => report.findings.push(self.stays_out(def)?),
                Some((_, _, when)) => {
                    checked.push(name);
                    report.chat_jobs.push(ChatJob {
                        name: name.clone(),
                        manual: when == When::Manual,
                    });
                }
            }
            for (joined, rule, _) in &o.joined {
                if joined != name {
                    let entry = foreign.entry(joined.clone()).or_insert((Vec::new(), *rule));
                    entry.0.push(name.clone());
                }
            }
        }
        // Without any chat job, still say which jobs would join a chat pipeline.
        if targets.is_empty() {
            for (joined, rule, _) in &other.joined {
                foreign.insert(joined.clone(), (Vec::new(), *rule));
            }
            if let WorkflowVerdict::Dropped { rule } = other.workflow {
                dropping_rule = Some(rule);
            }
        }

        if let Some(rule) = dropping_rule {
            report.findings.push(self.workflow_fix(rule, &dropped)?);
        }
        for (job, (chat_jobs, rule)) in &foreign {
            let Some(def) = ci.job(job) else { continue };
            report
                .findings
                .push(self.exclusion(def, *rule, chat_jobs, &targets)?);
        }
        if !report.chat_jobs.is_empty() {
            let list: Vec<String> = report
                .chat_jobs
                .iter()
                .map(|j| {
                    if j.manual {
                        format!("{} (manual: waits for someone to play it)", j.name)
                    } else {
                        j.name.clone()
                    }
                })
                .collect();
            report.fine.push(format!("chat jobs: {}", list.join(", ")));
        }
        if !checked.is_empty() && foreign.is_empty() && dropping_rule.is_none() {
            report
                .fine
                .push("each chat job's pipeline would hold that job only".into());
        }
        if ci.jobs.iter().any(|j| has_exists(&j.source)) {
            report.notes.push(
                "`exists:` rules were counted as matching (the repository's files are not read)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The chat job does not join the pipeline asking for it.
    fn stays_out(&self, def: &JobDef) -> Result<Finding, String> {
        let manual = def.when == When::Manual;
        let mut rules = vec![contract_rule(manual)];
        let why;
        let mut remove: Vec<&str> = Vec::new();
        if let Some(Value::Sequence(existing)) = def.source.get("rules") {
            why = "none of its rules lets it into a pipeline asking for it";
            rules.extend(existing.iter().cloned());
        } else if def.only.is_some() || def.except.is_some() {
            why = if def
                .only
                .as_ref()
                .is_some_and(|o| o.refs.iter().any(|r| r == "chat"))
            {
                "`only: [chat]` never matches: pipelines started through the API have the \
                 source `api`"
            } else {
                "its `only`/`except` keep it out"
            };
            remove = vec!["only", "except"];
        } else {
            why = "it stays out";
        }
        let edit = self.patched(|root| {
            let job = job_mapping(root, &def.name)?;
            for k in &remove {
                job.remove(*k);
            }
            job.insert("rules".into(), Value::Sequence(rules.clone()));
            Some(())
        });
        let works = edit.as_ref().is_some_and(|ci| {
            Self::outcome(ci, &self.context(&def.name))
                .ok()
                .is_some_and(|o| o.joined.iter().any(|(n, _, _)| *n == def.name))
        });
        let snippet = yaml_of(&[(
            def.name.as_str(),
            Value::Mapping(mapping([("rules", Value::Sequence(rules))])),
        )]);
        Ok(Finding {
            kind: FindingKind::ChatJobStaysOut(def.name.clone()),
            text: format!(
                "The chat job {} does not join the pipeline that asks for it: {why}.",
                def.name
            ),
            fix: if remove.is_empty() {
                "Give it the contract rule first:".to_owned()
            } else {
                "Replace its `only:`/`except:` with the contract rule:".to_owned()
            },
            yaml: Some(snippet),
            verified: works,
        })
    }

    fn workflow_fix(&self, rule: Option<usize>, dropped: &[String]) -> Result<Finding, String> {
        let existing: Vec<Value> = self
            .root()
            .and_then(|r| r.get("workflow").cloned())
            .and_then(|w| w.get("rules").cloned())
            .and_then(|r| r.as_sequence().cloned())
            .unwrap_or_default();
        let why = match rule {
            Some(i) => format!(
                "rule {}, {}, matches with `when: never`",
                i + 1,
                describe_rule(existing.get(i))
            ),
            None => "none of the rules matches a pipeline started through the API".to_owned(),
        };
        let mut rules = vec![Value::Mapping(mapping([("if", "$CHATOPS_JOB".into())]))];
        rules.extend(existing.iter().cloned());
        let edit = self.patched(|root| {
            let wf = root
                .entry("workflow".into())
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            wf.as_mapping_mut()?
                .insert("rules".into(), Value::Sequence(rules.clone()));
            Some(())
        });
        let probe = dropped.first().map(String::as_str).unwrap_or(OTHER_JOB);
        let works = edit.as_ref().is_some_and(|ci| {
            matches!(
                ci.workflow_verdict(&self.context(probe)),
                Ok(WorkflowVerdict::Runs { .. }) | Ok(WorkflowVerdict::NoRules)
            )
        });
        let snippet = yaml_of(&[(
            "workflow",
            Value::Mapping(mapping([("rules", Value::Sequence(rules))])),
        )]);
        Ok(Finding {
            kind: FindingKind::WorkflowDrops(dropped.to_vec()),
            text: format!(
                "`workflow: rules` drop the chat pipeline{}: {why}, so GitLab answers \
                 \"Pipeline filtered out by workflow rules\".",
                if dropped.is_empty() {
                    "s".to_owned()
                } else {
                    format!(" of {}", dropped.join(", "))
                }
            ),
            fix: "Put a rule for chat pipelines first:".into(),
            yaml: Some(snippet),
            verified: works,
        })
    }

    /// A job that joins chat pipelines, and the edit that keeps it out.
    fn exclusion(
        &self,
        def: &JobDef,
        rule: Option<usize>,
        chat_jobs: &[String],
        all_targets: &[String],
    ) -> Result<Finding, String> {
        // A chat job that also joins other chat jobs' pipelines must keep joining its own.
        let is_chat_job = all_targets.contains(&def.name);
        let never_if = if is_chat_job {
            "$CHATOPS_JOB && $CHATOPS_JOB != $CI_JOB_NAME"
        } else {
            "$CHATOPS_JOB"
        };
        let never = Value::Mapping(mapping([("if", never_if.into()), ("when", "never".into())]));
        let (key, value, why) = match def.source.get("rules") {
            Some(Value::Sequence(existing)) => {
                let mut rules = vec![never];
                rules.extend(existing.iter().cloned());
                let why = match rule {
                    Some(i) => format!(
                        "its rule {}, {}, matches",
                        i + 1,
                        describe_rule(existing.get(i))
                    ),
                    None => "one of its rules matches".into(),
                };
                ("rules", Value::Sequence(rules), why)
            }
            _ => {
                let mut except = match def.source.get("except") {
                    Some(Value::Mapping(m)) => m.clone(),
                    Some(refs @ (Value::Sequence(_) | Value::String(_))) => {
                        mapping([("refs", refs.clone())])
                    }
                    _ => Mapping::new(),
                };
                let mut vars = match except.get("variables") {
                    Some(Value::Sequence(v)) => v.clone(),
                    Some(v @ Value::String(_)) => vec![v.clone()],
                    _ => Vec::new(),
                };
                vars.insert(0, "$CHATOPS_JOB".into());
                except.insert("variables".into(), Value::Sequence(vars));
                let why = if def.excepts_chat() {
                    "`except: [chat]` does not keep it out: pipelines started through the API \
                     have the source `api`, not `chat`"
                        .to_owned()
                } else if let Some(only) = &def.only {
                    format!(
                        "its `only:` ({}) matches the default branch or the `api` source",
                        only.refs.join(", ")
                    )
                } else if let Some(except) = &def.except {
                    format!(
                        "its `except:` ({}) does not exclude pipelines started through the API \
                         on the default branch",
                        except.refs.join(", ")
                    )
                } else {
                    "it has no `rules`, `only` or `except`, so it runs in every branch pipeline"
                        .to_owned()
                };
                ("except", Value::Mapping(except), why)
            }
        };
        let edit = self.patched(|root| {
            job_mapping(root, &def.name)?.insert(key.into(), value.clone());
            Some(())
        });
        let mut probes: Vec<&str> = all_targets
            .iter()
            .map(String::as_str)
            .filter(|t| *t != def.name)
            .collect();
        if probes.is_empty() {
            probes.push(OTHER_JOB);
        }
        let joins_in = |ci: &CiFile, t: &str| {
            Self::outcome(ci, &self.context(t))
                .ok()
                .map(|o| o.joined.iter().any(|(n, _, _)| *n == def.name))
        };
        let works = edit.as_ref().is_some_and(|ci| {
            probes.iter().all(|t| joins_in(ci, t) == Some(false))
                && (!is_chat_job || joins_in(ci, &def.name) == Some(true))
        });
        let every = chat_jobs.len() == all_targets.len() && chat_jobs.len() > 1;
        let whose = if chat_jobs.is_empty() || every {
            "every chat pipeline".to_owned()
        } else {
            format!("the chat pipeline of {}", chat_jobs.join(", "))
        };
        let how = if key == "rules" {
            "Give the job these `rules`: the chat exclusion first, then its own. For a job \
             from an `include:`d template, add just this after the `include:` (GitLab merges \
             it into the template's job and replaces its rules):"
        } else {
            "Give the job this `except:` (its other keys stay as they are; for a job from an \
             `include:`, add just this after the `include:`):"
        };
        let snippet = yaml_of(&[(def.name.as_str(), Value::Mapping(mapping([(key, value)])))]);
        Ok(Finding {
            kind: FindingKind::Joins(def.name.clone(), chat_jobs.to_vec()),
            text: format!(
                "The job {} joins {whose}: {why}. The dispatcher would cancel the pipeline \
                 (after GitLab created it, so a first-stage job may already have started).",
                def.name
            ),
            fix: how.into(),
            yaml: Some(snippet),
            verified: works,
        })
    }

    fn root(&self) -> Option<Mapping> {
        match serde_yaml::from_str::<Value>(&self.ci.merged_yaml) {
            Ok(Value::Mapping(m)) => Some(m),
            _ => None,
        }
    }

    /// The configuration with `edit` applied, parsed again.
    fn patched(&self, edit: impl FnOnce(&mut Mapping) -> Option<()>) -> Option<CiFile> {
        let mut root = self.root()?;
        edit(&mut root)?;
        let text = serde_yaml::to_string(&Value::Mapping(root)).ok()?;
        CiFile::parse_merged(&text).ok()
    }
}

fn job_mapping<'a>(root: &'a mut Mapping, name: &str) -> Option<&'a mut Mapping> {
    root.get_mut(name).and_then(Value::as_mapping_mut)
}

fn mapping<const N: usize>(pairs: [(&str, Value); N]) -> Mapping {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(k.into(), v);
    }
    m
}

fn contract_rule(manual: bool) -> Value {
    let mut m = mapping([("if", "$CHATOPS_JOB == $CI_JOB_NAME".into())]);
    if manual {
        m.insert("when".into(), "manual".into());
    }
    Value::Mapping(m)
}

fn describe_rule(rule: Option<&Value>) -> String {
    match rule.and_then(|r| r.get("if")).and_then(Value::as_str) {
        Some(cond) => format!("`if: {cond}`"),
        None => "a rule without `if`".to_owned(),
    }
}

fn has_exists(job: &Mapping) -> bool {
    job.get("rules")
        .and_then(Value::as_sequence)
        .is_some_and(|rs| rs.iter().any(|r| r.get("exists").is_some()))
}

fn yaml_of(entries: &[(&str, Value)]) -> String {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert((*k).into(), v.clone());
    }
    serde_yaml::to_string(&Value::Mapping(m)).unwrap_or_default()
}

/// The projects commands can reach: `GITLAB_PROJECT` and every project of
/// `CHANNEL_PROJECTS`, each once, in that order.
pub fn routed_projects(env: &Env) -> Result<Vec<ProjectRef>, ConfigError> {
    let mut out: Vec<ProjectRef> = Vec::new();
    if let Some(p) = env
        .get("GITLAB_PROJECT")
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        out.push(ProjectRef::new(p));
    }
    if let Some(cp) = env.get("CHANNEL_PROJECTS") {
        let mut extra: Vec<(String, ProjectRef)> =
            chatops_core::dispatcher::parse_channel_projects(cp)?
                .into_iter()
                .collect();
        extra.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, p) in extra {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    if out.is_empty() {
        return Err(ConfigError::Missing(
            "GITLAB_PROJECT (or CHANNEL_PROJECTS)".into(),
        ));
    }
    Ok(out)
}

/// The GitLab client the administrator's commands use: `GITLAB_URL` and `GITLAB_TOKEN` (or
/// `GITLAB_TOKEN_PARAM`, read from SSM only then).
pub async fn admin_client(env: &Env) -> Result<GitLabClient, String> {
    let secrets: Box<dyn SecretSource> =
        if env.get("GITLAB_TOKEN").is_none() && env.get("GITLAB_TOKEN_PARAM").is_some() {
            Box::new(SsmSecrets::new(sdk_config().await))
        } else {
            Box::new(NoSecrets)
        };
    let token = env
        .required_secret("GITLAB_TOKEN", secrets.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let url = env.or("GITLAB_URL", chatops_core::gitlab::DEFAULT_GITLAB_URL);
    GitLabClient::new(&url, token).map_err(|e| e.to_string())
}

/// The CLI: every routed project (or `--project`), printed; the highest exit code wins.
pub async fn run_cli(
    env: &Env,
    project: Option<&str>,
    opts: &CheckOptions,
    out: &mut dyn std::io::Write,
) -> i32 {
    let projects = match project.map(str::trim) {
        Some("") => {
            eprintln!("chatops gitlab check: --project is empty");
            return 2;
        }
        Some(p) => vec![ProjectRef::new(p)],
        None => match routed_projects(env) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("chatops gitlab check: {e}");
                return 2;
            }
        },
    };
    if let Some(url) = &opts.webhook_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            eprintln!("chatops gitlab check: --webhook-url {url:?} is not an http(s) URL");
            return 2;
        }
    }
    if opts.jobs.iter().any(|j| j.trim().is_empty()) {
        eprintln!("chatops gitlab check: --job is empty");
        return 2;
    }
    let client = match admin_client(env).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatops gitlab check: {e}");
            return 2;
        }
    };
    let mut code = 0;
    let mut seen: Vec<u64> = Vec::new();
    for p in &projects {
        match check(&client, p, opts).await {
            // The same project by id and by path (`GITLAB_PROJECT=g/p`, `C1=42`): once.
            Ok(report) if seen.contains(&report.project_id) => {}
            Ok(report) => {
                if !seen.is_empty() {
                    let _ = writeln!(out);
                }
                seen.push(report.project_id);
                let _ = write!(out, "{report}");
                code = code.max(report.exit_code());
            }
            Err(e) => {
                eprintln!("chatops gitlab check: {e}");
                code = 2;
            }
        }
    }
    code
}
