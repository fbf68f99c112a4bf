//! The job runner behind the GitLab stand-in: reads a project folder's `.gitlab-ci.yml`,
//! decides which jobs a pipeline gets (rules, only/except, `when`, workflow rules), and runs a
//! job's script in a real `bash`, writing the log the way gitlab-runner 17's shell executor
//! does (header lines, `section_start`/`section_end` markers, `$ cmd` echoes, the final
//! `Job succeeded` / `ERROR: Job failed: exit code N`). The point is that the product reads
//! logs it did not write itself: whatever a real runner emits, this emits.
//!
//! Supported CI syntax (enough for the ChatOps contract, refused clearly otherwise): `stages`,
//! `default`, top-level and job `before_script`/`after_script`/`variables`, `include: local`,
//! `extends`, `!reference`, YAML merge keys, `rules` (`if`, `when`, `allow_failure`,
//! `variables`, `exists`, `changes`), `only`/`except` (refs keywords, branch names,
//! `variables`; `changes`/`kubernetes` read cautiously), `when`, `allow_failure`, `trigger`
//! jobs, `workflow: rules`. Expressions: `$VAR`, `"str"`, `null`, `==`, `!=`, `=~`/`!~`
//! with `/regex/flags` (or a variable holding one), `&&`, `||`, `( )`.
//!
//! The same evaluator answers `chatops gitlab check` ([`CiFile::parse_merged`] over GitLab's
//! merged YAML, [`CiFile::workflow_verdict`], [`CiFile::job_verdicts`]).

use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

/// The version the log header claims (a released 17.x runner).
pub const RUNNER_VERSION: &str = "17.11.0 (0f67ff19)";

const RESET: &str = "\x1b[0;m";
const CLEAR: &str = "\x1b[0K";
const BOLD_GREEN: &str = "\x1b[32;1m";
const BOLD_RED: &str = "\x1b[31;1m";
const BOLD_CYAN: &str = "\x1b[36;1m";

/// Top-level keys that are not jobs.
const RESERVED: &[&str] = &[
    "image",
    "services",
    "stages",
    "types",
    "before_script",
    "after_script",
    "variables",
    "cache",
    "include",
    "default",
    "workflow",
    "spec",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CiError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// The config is invalid; the text is what GitLab's lint would say (as near as we can).
    #[error("{0}")]
    Invalid(String),
}

/// `when:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
    Manual,
    Delayed,
    Never,
}

impl When {
    fn parse(s: &str) -> Result<When, CiError> {
        Ok(match s {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "delayed" => When::Delayed,
            "never" => When::Never,
            other => {
                return Err(CiError::Invalid(format!(
                    "when config should be one of on_success, on_failure, always, manual, delayed, never (got {other})"
                )))
            }
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Delayed => "delayed",
            When::Never => "never",
        }
    }
}

/// One entry of `rules:` (or `workflow: rules:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub condition: Option<String>,
    pub when: Option<When>,
    pub allow_failure: Option<bool>,
    pub variables: Vec<(String, String)>,
    pub exists: Option<Vec<String>>,
}

/// `only:` / `except:` in either form (a list of refs, or `refs:` + `variables:`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefPolicy {
    pub refs: Vec<String>,
    pub variables: Vec<String>,
}

/// A job as the CI config defines it, after `include`, `default` and `extends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDef {
    pub name: String,
    pub stage: String,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    pub rules: Option<Vec<Rule>>,
    pub only: Option<RefPolicy>,
    pub except: Option<RefPolicy>,
    pub when: When,
    pub allow_failure: Option<bool>,
    pub variables: Vec<(String, String)>,
    /// The job's definition as written, `extends` merged in (what `chatops gitlab check`
    /// edits to print a fix).
    pub source: Mapping,
}

impl JobDef {
    /// GitLab's own chat exclusion: `except` lists the `chat` ref.
    pub fn excepts_chat(&self) -> bool {
        self.except
            .as_ref()
            .is_some_and(|e| e.refs.iter().any(|r| r == "chat"))
    }

    /// The job as `ci/lint?include_jobs=true` lists it.
    pub fn lint_json(&self) -> serde_json::Value {
        let policy = |p: &Option<RefPolicy>| match p {
            None => serde_json::Value::Null,
            Some(p) => {
                let mut m = serde_json::Map::new();
                m.insert("refs".into(), serde_json::json!(p.refs));
                if !p.variables.is_empty() {
                    m.insert("variables".into(), serde_json::json!(p.variables));
                }
                serde_json::Value::Object(m)
            }
        };
        // Jobs without rules get GitLab's default `only: {refs: [branches, tags]}`.
        let only = match (&self.rules, &self.only) {
            (None, None) => serde_json::json!({"refs": ["branches", "tags"]}),
            (_, p) => policy(p),
        };
        serde_json::json!({
            "name": self.name,
            "stage": self.stage,
            "before_script": self.before_script,
            "script": self.script,
            "after_script": self.after_script,
            "tag_list": [],
            "environment": null,
            "when": self.when.as_str(),
            "allow_failure": self.allow_failure.unwrap_or(self.when == When::Manual),
            "only": only,
            "except": policy(&self.except),
        })
    }
}

/// A job a pipeline holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedJob {
    pub name: String,
    pub stage: String,
    /// `Manual` jobs wait to be played; everything else starts as `created`.
    pub when: When,
    pub allow_failure: bool,
    /// Variables a matching rule added (`rules: variables:`).
    pub rule_variables: Vec<(String, String)>,
}

/// What a pipeline is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineContext {
    /// `CI_PIPELINE_SOURCE`: `api` for pipelines created through the REST API.
    pub source: String,
    pub git_ref: String,
    pub default_branch: String,
    pub project_id: u64,
    pub project_path: String,
    pub server_url: String,
    pub pipeline_id: u64,
    /// The variables passed to `POST /projects/:id/pipeline` (highest precedence).
    pub variables: Vec<(String, String)>,
}

impl PipelineContext {
    /// An API pipeline on the default branch, as the dispatcher creates them.
    pub fn api(project_path: &str, default_branch: &str, variables: &[(String, String)]) -> Self {
        Self {
            source: "api".into(),
            git_ref: default_branch.into(),
            default_branch: default_branch.into(),
            project_id: 1,
            project_path: project_path.into(),
            server_url: "http://127.0.0.1".into(),
            pipeline_id: 1,
            variables: variables.to_vec(),
        }
    }
}

/// Why a pipeline could not be created (GitLab answers 400 with these texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("Pipeline filtered out by workflow rules.")]
    FilteredByWorkflow,
    #[error("No stages / jobs for this pipeline.")]
    NoJobs,
    #[error("{0}")]
    Invalid(String),
}

/// What `rules: exists:` can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Files {
    /// The project folder.
    Folder(PathBuf),
    /// Nothing (a config parsed on its own): no `exists:` matches.
    NonePresent,
    /// Unknown, as for GitLab's merged YAML: every `exists:` counts as found, so a job that
    /// may join a pipeline is planned as joining (`chatops gitlab check` errs on the safe side).
    AssumePresent,
}

/// How `workflow: rules` treat a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowVerdict {
    /// No `workflow: rules`: every pipeline is created.
    NoRules,
    /// Rule `rule` (0-based) matched and lets the pipeline be created.
    Runs { rule: usize },
    /// The pipeline is not created: rule `rule` matched with `when: never`, or (None) no
    /// rule matched.
    Dropped { rule: Option<usize> },
}

/// Whether a job joins a pipeline, and what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobVerdict {
    /// The job as the pipeline holds it; None when it stays out.
    pub planned: Option<PlannedJob>,
    /// For a job with `rules`: the rule that matched (0-based); None when none did.
    pub rule: Option<usize>,
}

/// A parsed `.gitlab-ci.yml`.
#[derive(Debug, Clone)]
pub struct CiFile {
    pub stages: Vec<String>,
    pub jobs: Vec<JobDef>,
    pub workflow_rules: Option<Vec<Rule>>,
    pub variables: Vec<(String, String)>,
    /// The configuration with includes merged (lint's `merged_yaml`).
    pub merged_yaml: String,
    /// Where `exists:` rules look.
    pub files: Files,
}

impl CiFile {
    /// Read `<dir>/.gitlab-ci.yml` (and its local includes).
    pub fn load(dir: &Path) -> Result<CiFile, CiError> {
        let path = dir.join(".gitlab-ci.yml");
        let text = std::fs::read_to_string(&path).map_err(|e| CiError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut ci = Self::parse_in(&text, Some(dir), false)?;
        ci.files = Files::Folder(dir.to_path_buf());
        Ok(ci)
    }

    /// Parse a config with no folder around it (`include: local` is refused; no `exists:`
    /// matches).
    pub fn parse(text: &str) -> Result<CiFile, CiError> {
        Self::parse_in(text, None, false)
    }

    /// Parse GitLab's `merged_yaml` (`ci/lint`): includes already merged, keys possibly in
    /// the Ruby symbol form older GitLab versions wrote (`:job:`), and the repository
    /// unknown, so every `exists:` counts as found.
    pub fn parse_merged(text: &str) -> Result<CiFile, CiError> {
        let mut ci = Self::parse_in(text, None, true)?;
        ci.files = Files::AssumePresent;
        Ok(ci)
    }

    fn parse_in(text: &str, dir: Option<&Path>, symbol_keys: bool) -> Result<CiFile, CiError> {
        let mut root: Value = serde_yaml::from_str(text)
            .map_err(|e| CiError::Invalid(format!("Invalid configuration format: {e}")))?;
        if symbol_keys {
            strip_symbol_keys(&mut root);
        }
        // YAML merge keys (`<<: *defaults`), as GitLab's YAML loader applies them.
        root.apply_merge()
            .map_err(|e| CiError::Invalid(format!("Invalid configuration format: {e}")))?;
        let mut root = match root {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            _ => return Err(CiError::Invalid("Invalid configuration format".into())),
        };
        resolve_includes(&mut root, dir, 0)?;
        resolve_references(&mut root)?;
        let merged_yaml = serde_yaml::to_string(&root).unwrap_or_default();

        let stages = match root.get("stages").or_else(|| root.get("types")) {
            None => vec![
                ".pre".into(),
                "build".into(),
                "test".into(),
                "deploy".into(),
                ".post".into(),
            ],
            Some(v) => {
                let mut s = vec![".pre".to_owned()];
                s.extend(string_list(v, "stages")?);
                s.push(".post".into());
                s
            }
        };
        let default = root.get("default").and_then(Value::as_mapping).cloned();
        let inherited = |key: &str| -> Option<Value> {
            default
                .as_ref()
                .and_then(|d| d.get(key).cloned())
                .or_else(|| root.get(key).cloned())
        };
        let default_before = inherited("before_script");
        let default_after = inherited("after_script");
        let variables = match root.get("variables") {
            Some(v) => variables(v)?,
            None => Vec::new(),
        };
        let workflow_rules = match root
            .get("workflow")
            .and_then(Value::as_mapping)
            .and_then(|w| w.get("rules"))
        {
            Some(r) => Some(rules(r)?),
            None => None,
        };

        let mut jobs = Vec::new();
        for (key, body) in &root {
            let Some(name) = key.as_str() else { continue };
            if RESERVED.contains(&name) || name.starts_with('.') {
                continue;
            }
            let body = expand_extends(&root, name, body, 0)?;
            let Value::Mapping(body) = body else {
                return Err(CiError::Invalid(format!(
                    "jobs:{name} config should be a hash"
                )));
            };
            jobs.push(job(
                name,
                &body,
                default_before.as_ref(),
                default_after.as_ref(),
            )?);
        }
        if jobs.is_empty() {
            return Err(CiError::Invalid(
                "jobs config should contain at least one visible job".into(),
            ));
        }
        for j in &jobs {
            if !stages.contains(&j.stage) {
                return Err(CiError::Invalid(format!(
                    "{} job: chosen stage {} does not exist; available stages are {}",
                    j.name,
                    j.stage,
                    stages.join(", ")
                )));
            }
        }
        Ok(CiFile {
            stages,
            jobs,
            workflow_rules,
            variables,
            merged_yaml,
            files: Files::NonePresent,
        })
    }

    pub fn job(&self, name: &str) -> Option<&JobDef> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The jobs a pipeline created in `ctx` holds, in stage order.
    pub fn plan(&self, ctx: &PipelineContext) -> Result<Vec<PlannedJob>, PlanError> {
        if let WorkflowVerdict::Dropped { .. } = self.workflow_verdict(ctx)? {
            return Err(PlanError::FilteredByWorkflow);
        }
        let mut planned: Vec<PlannedJob> = self
            .job_verdicts(ctx)?
            .into_iter()
            .filter_map(|(_, v)| v.planned)
            .collect();
        if planned.is_empty() {
            return Err(PlanError::NoJobs);
        }
        planned.sort_by_key(|p| self.stages.iter().position(|s| *s == p.stage));
        Ok(planned)
    }

    /// Whether `workflow: rules` let a pipeline in `ctx` be created, and which rule decided.
    pub fn workflow_verdict(&self, ctx: &PipelineContext) -> Result<WorkflowVerdict, PlanError> {
        let Some(rules) = &self.workflow_rules else {
            return Ok(WorkflowVerdict::NoRules);
        };
        let base = self.pipeline_variables(ctx);
        Ok(match self.first_matching_rule(rules, &base)? {
            Some((i, r)) if r.when == Some(When::Never) => {
                WorkflowVerdict::Dropped { rule: Some(i) }
            }
            Some((i, _)) => WorkflowVerdict::Runs { rule: i },
            None => WorkflowVerdict::Dropped { rule: None },
        })
    }

    /// Every job, in file order, with whether it would join a pipeline in `ctx` (workflow
    /// rules aside) and what decided it.
    pub fn job_verdicts(
        &self,
        ctx: &PipelineContext,
    ) -> Result<Vec<(&JobDef, JobVerdict)>, PlanError> {
        let base = self.pipeline_variables(ctx);
        let mut out = Vec::new();
        for job in &self.jobs {
            let mut vars = base.clone();
            set(&mut vars, "CI_JOB_NAME", &job.name);
            set(&mut vars, "CI_JOB_STAGE", &job.stage);
            for (k, v) in &job.variables {
                set_unless_present(&mut vars, k, v, &ctx.variables);
            }
            let verdict = self.evaluate_job(job, ctx, &vars).map_err(|e| match e {
                PlanError::Invalid(m) => PlanError::Invalid(format!("jobs:{}: {m}", job.name)),
                other => other,
            })?;
            out.push((job, verdict));
        }
        Ok(out)
    }

    fn evaluate_job(
        &self,
        job: &JobDef,
        ctx: &PipelineContext,
        vars: &Vars,
    ) -> Result<JobVerdict, PlanError> {
        let out = |planned: Option<PlannedJob>, rule: Option<usize>| JobVerdict { planned, rule };
        let planned = |when: When, allow_failure: Option<bool>, rule_variables| PlannedJob {
            name: job.name.clone(),
            stage: job.stage.clone(),
            when,
            // Manual jobs outside rules may fail without failing the pipeline.
            allow_failure: allow_failure.unwrap_or(when == When::Manual && job.rules.is_none()),
            rule_variables,
        };
        if let Some(rules) = &job.rules {
            let Some((i, rule)) = self.first_matching_rule(rules, vars)? else {
                return Ok(out(None, None));
            };
            let when = rule.when.unwrap_or(job.when);
            if when == When::Never {
                return Ok(out(None, Some(i)));
            }
            let allow = rule.allow_failure.or(job.allow_failure);
            return Ok(out(
                Some(planned(when, allow, rule.variables.clone())),
                Some(i),
            ));
        }
        let only = job.only.clone().unwrap_or(RefPolicy {
            refs: vec!["branches".into(), "tags".into()],
            variables: vec![],
        });
        // `only`: every given key must match; `except`: any matching key excludes.
        let only_refs = only.refs.is_empty() || self.refs_match(&only.refs, ctx)?;
        let only_vars = only.variables.is_empty() || any_expression(&only.variables, vars)?;
        if !(only_refs && only_vars) {
            return Ok(out(None, None));
        }
        if let Some(except) = &job.except {
            let refs = !except.refs.is_empty() && self.refs_match(&except.refs, ctx)?;
            let v = !except.variables.is_empty() && any_expression(&except.variables, vars)?;
            if refs || v {
                return Ok(out(None, None));
            }
        }
        if job.when == When::Never {
            return Ok(out(None, None));
        }
        Ok(out(
            Some(planned(job.when, job.allow_failure, Vec::new())),
            None,
        ))
    }

    fn refs_match(&self, refs: &[String], ctx: &PipelineContext) -> Result<bool, PlanError> {
        for r in refs {
            let hit = match r.as_str() {
                "branches" => true, // API pipelines here always run on a branch
                "tags" => false,
                "api"
                | "chat"
                | "pushes"
                | "schedules"
                | "triggers"
                | "web"
                | "pipelines"
                | "external"
                | "merge_requests"
                | "external_pull_requests" => {
                    let source = match r.as_str() {
                        "pushes" => "push",
                        "schedules" => "schedule",
                        "triggers" => "trigger",
                        "pipelines" => "pipeline",
                        "merge_requests" => "merge_request_event",
                        "external_pull_requests" => "external_pull_request_event",
                        s => s,
                    };
                    ctx.source == source
                }
                s if s.starts_with('/') => {
                    return Err(PlanError::Invalid(format!(
                    "ref pattern {s}: regular expressions are not supported by the stand-in runner"
                )))
                }
                s => s.split('@').next() == Some(ctx.git_ref.as_str()),
            };
            if hit {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn first_matching_rule<'a>(
        &self,
        rules: &'a [Rule],
        vars: &Vars,
    ) -> Result<Option<(usize, &'a Rule)>, PlanError> {
        for (i, rule) in rules.iter().enumerate() {
            let cond = match &rule.condition {
                None => true,
                Some(expr) => evaluate(expr, vars).map_err(PlanError::Invalid)?,
            };
            let exists = match &rule.exists {
                None => true,
                Some(globs) => self.any_exists(globs),
            };
            if cond && exists {
                return Ok(Some((i, rule)));
            }
        }
        Ok(None)
    }

    fn any_exists(&self, paths: &[String]) -> bool {
        match &self.files {
            Files::Folder(root) => paths
                .iter()
                .any(|p| !p.contains('*') && root.join(p.trim_start_matches('/')).exists()),
            Files::NonePresent => false,
            Files::AssumePresent => true,
        }
    }

    /// Predefined variables, then global YAML variables, then the pipeline's own.
    fn pipeline_variables(&self, ctx: &PipelineContext) -> Vars {
        let name = ctx
            .project_path
            .rsplit('/')
            .next()
            .unwrap_or(&ctx.project_path)
            .to_owned();
        let namespace = ctx
            .project_path
            .rsplit_once('/')
            .map(|(ns, _)| ns.to_owned())
            .unwrap_or_default();
        let mut v: Vars = vec![
            ("CI".into(), "true".into()),
            ("GITLAB_CI".into(), "true".into()),
            ("CI_SERVER_URL".into(), ctx.server_url.clone()),
            ("CI_PIPELINE_SOURCE".into(), ctx.source.clone()),
            ("CI_PIPELINE_ID".into(), ctx.pipeline_id.to_string()),
            ("CI_PROJECT_ID".into(), ctx.project_id.to_string()),
            ("CI_PROJECT_PATH".into(), ctx.project_path.clone()),
            ("CI_PROJECT_NAME".into(), name),
            ("CI_PROJECT_NAMESPACE".into(), namespace),
            (
                "CI_PROJECT_URL".into(),
                format!(
                    "{}/{}",
                    ctx.server_url.trim_end_matches('/'),
                    ctx.project_path
                ),
            ),
            ("CI_COMMIT_REF_NAME".into(), ctx.git_ref.clone()),
            ("CI_COMMIT_REF_SLUG".into(), slug(&ctx.git_ref)),
            ("CI_COMMIT_BRANCH".into(), ctx.git_ref.clone()),
            ("CI_DEFAULT_BRANCH".into(), ctx.default_branch.clone()),
        ];
        for (k, val) in &self.variables {
            set_unless_present(&mut v, k, val, &ctx.variables);
        }
        for (k, val) in &ctx.variables {
            set(&mut v, k, val);
        }
        v
    }
}

type Vars = Vec<(String, String)>;

fn set(vars: &mut Vars, key: &str, value: &str) {
    match vars.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_owned(),
        None => vars.push((key.to_owned(), value.to_owned())),
    }
}

/// Set a YAML-defined variable unless the pipeline passed its own (pipeline variables win).
fn set_unless_present(vars: &mut Vars, key: &str, value: &str, pipeline: &[(String, String)]) {
    if !pipeline.iter().any(|(k, _)| k == key) {
        set(vars, key, value);
    }
}

fn slug(s: &str) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(63);
    out.trim_matches('-').to_owned()
}

// ---------------------------------------------------------------------------------------
// YAML → our types

fn resolve_includes(root: &mut Mapping, dir: Option<&Path>, depth: usize) -> Result<(), CiError> {
    let Some(include) = root.remove("include") else {
        return Ok(());
    };
    if depth > 10 {
        return Err(CiError::Invalid(
            "Maximum of 10 nested includes are allowed!".into(),
        ));
    }
    let items = match include {
        Value::Sequence(s) => s,
        other => vec![other],
    };
    let mut merged = Mapping::new();
    for item in items {
        let local = match &item {
            Value::String(s) if !s.starts_with("http") => s.clone(),
            Value::Mapping(m) => match m.get("local").and_then(Value::as_str) {
                Some(s) => s.to_owned(),
                None => {
                    return Err(CiError::Invalid(format!(
                        "Included file {}: only `include: local` is supported by the stand-in",
                        serde_yaml::to_string(&item).unwrap_or_default().trim()
                    )))
                }
            },
            _ => {
                return Err(CiError::Invalid(
                    "Included file: only `include: local` is supported by the stand-in".into(),
                ))
            }
        };
        let Some(dir) = dir else {
            return Err(CiError::Invalid(format!(
                "Local file `{local}` does not have project!"
            )));
        };
        let path = dir.join(local.trim_start_matches('/'));
        let text = std::fs::read_to_string(&path)
            .map_err(|_| CiError::Invalid(format!("Local file `{local}` does not exist!")))?;
        let mut inc: Mapping = match serde_yaml::from_str(&text) {
            Ok(Value::Mapping(m)) => m,
            _ => {
                return Err(CiError::Invalid(format!(
                    "Local file `{local}` does not have valid YAML syntax!"
                )))
            }
        };
        resolve_includes(&mut inc, Some(dir), depth + 1)?;
        deep_merge(&mut merged, inc);
    }
    // The including file wins over what it includes.
    let own = std::mem::take(root);
    deep_merge(&mut merged, own);
    *root = merged;
    Ok(())
}

/// GitLab's merge: hashes merge key by key, anything else is replaced.
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

/// Older GitLab versions wrote `merged_yaml` from a Ruby hash with symbol keys (`:job:`).
fn strip_symbol_keys(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            let old = std::mem::take(m);
            for (k, mut val) in old {
                strip_symbol_keys(&mut val);
                let k = match k {
                    Value::String(s) if s.starts_with(':') && s.len() > 1 => {
                        Value::String(s[1..].to_owned())
                    }
                    other => other,
                };
                m.insert(k, val);
            }
        }
        Value::Sequence(xs) => xs.iter_mut().for_each(strip_symbol_keys),
        Value::Tagged(t) => strip_symbol_keys(&mut t.value),
        _ => {}
    }
}

/// Resolve `!reference [key, sub, …]` tags against the whole configuration, as GitLab does
/// (up to 10 levels of references in references). A reference that yields a list inside a
/// list (`script`, `rules`) is spliced into it.
fn resolve_references(root: &mut Mapping) -> Result<(), CiError> {
    fn lookup(root: &Mapping, path: &Value) -> Result<Value, CiError> {
        let keys = string_list(path, "!reference")?;
        let mut cur: Option<&Value> = None;
        for (i, k) in keys.iter().enumerate() {
            cur = match (i, cur) {
                (0, _) => root.get(k.as_str()),
                (_, Some(Value::Mapping(m))) => m.get(k.as_str()),
                _ => None,
            };
        }
        cur.cloned().ok_or_else(|| {
            CiError::Invalid(format!(
                "!reference [{}] could not be found",
                keys.join(", ")
            ))
        })
    }
    fn walk(v: &mut Value, root: &Mapping, depth: usize) -> Result<(), CiError> {
        if depth > 10 {
            return Err(CiError::Invalid(
                "!reference: too many nested references (10 at most)".into(),
            ));
        }
        match v {
            Value::Tagged(t) if t.tag == "reference" => {
                let mut found = lookup(root, &t.value)?;
                walk(&mut found, root, depth + 1)?;
                *v = found;
            }
            Value::Mapping(m) => {
                for (_, val) in m.iter_mut() {
                    walk(val, root, depth)?;
                }
            }
            Value::Sequence(xs) => {
                let mut out = Vec::with_capacity(xs.len());
                for mut x in std::mem::take(xs) {
                    let spliced = matches!(&x, Value::Tagged(t) if t.tag == "reference");
                    walk(&mut x, root, depth)?;
                    match x {
                        Value::Sequence(inner) if spliced => out.extend(inner),
                        other => out.push(other),
                    }
                }
                *xs = out;
            }
            _ => {}
        }
        Ok(())
    }
    let snapshot = root.clone();
    for (_, v) in root.iter_mut() {
        walk(v, &snapshot, 0)?;
    }
    Ok(())
}

fn expand_extends(
    root: &Mapping,
    name: &str,
    body: &Value,
    depth: usize,
) -> Result<Value, CiError> {
    if depth > 11 {
        return Err(CiError::Invalid(format!(
            "{name}: nesting too deep (circular extends?)"
        )));
    }
    let Value::Mapping(m) = body else {
        return Ok(body.clone());
    };
    let parents = match m.get("extends") {
        None => return Ok(body.clone()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(v) => string_list(v, "extends")?,
    };
    let mut merged = Mapping::new();
    for parent in parents {
        let Some(pbody) = root.get(parent.as_str()) else {
            return Err(CiError::Invalid(format!(
                "{name}: unknown key in `extends` ({parent})"
            )));
        };
        if let Value::Mapping(pm) = expand_extends(root, &parent, pbody, depth + 1)? {
            deep_merge(&mut merged, pm);
        }
    }
    let mut own = m.clone();
    own.remove("extends");
    deep_merge(&mut merged, own);
    Ok(Value::Mapping(merged))
}

fn job(
    name: &str,
    body: &Mapping,
    default_before: Option<&Value>,
    default_after: Option<&Value>,
) -> Result<JobDef, CiError> {
    let ctx = |key: &str| format!("jobs:{name}:{key}");
    let script = match body.get("script") {
        Some(v) => script_lines(v, &ctx("script"))?,
        // A trigger job (a bridge) starts another pipeline; it has no script of its own.
        None if body.contains_key("trigger") => Vec::new(),
        None => {
            return Err(CiError::Invalid(format!(
                "jobs:{name} config should implement a script: or a trigger: keyword"
            )))
        }
    };
    let before_script = match body.get("before_script").or(default_before) {
        Some(v) => script_lines(v, &ctx("before_script"))?,
        None => Vec::new(),
    };
    let after_script = match body.get("after_script").or(default_after) {
        Some(v) => script_lines(v, &ctx("after_script"))?,
        None => Vec::new(),
    };
    let stage = match body.get("stage") {
        None => "test".to_owned(),
        Some(v) => v
            .as_str()
            .ok_or_else(|| CiError::Invalid(format!("{} config should be a string", ctx("stage"))))?
            .to_owned(),
    };
    let rules = match body.get("rules") {
        Some(v) => Some(rules(v)?),
        None => None,
    };
    let only = body.get("only").map(ref_policy).transpose()?;
    let except = body.get("except").map(ref_policy).transpose()?;
    if rules.is_some() && (only.is_some() || except.is_some()) {
        return Err(CiError::Invalid(format!(
            "jobs:{name} config key may not be used with `rules`: only, except"
        )));
    }
    let when = match body.get("when") {
        None => When::OnSuccess,
        Some(v) => When::parse(v.as_str().unwrap_or_default())?,
    };
    let allow_failure = match body.get("allow_failure") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Mapping(_)) => Some(true), // `exit_codes:`: the stand-in only tracks the flag
        Some(_) => {
            return Err(CiError::Invalid(format!(
                "{} config should be a boolean",
                ctx("allow_failure")
            )))
        }
    };
    let variables = match body.get("variables") {
        Some(v) => variables(v)?,
        None => Vec::new(),
    };
    Ok(JobDef {
        name: name.to_owned(),
        stage,
        before_script,
        script,
        after_script,
        rules,
        only,
        except,
        when,
        allow_failure,
        variables,
        source: body.clone(),
    })
}

/// A script: a string or a list, nested lists flattened (as GitLab does).
fn script_lines(v: &Value, what: &str) -> Result<Vec<String>, CiError> {
    fn walk(v: &Value, out: &mut Vec<String>, what: &str, depth: usize) -> Result<(), CiError> {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Bool(b) => out.push(b.to_string()),
            Value::Sequence(items) if depth < 10 => {
                for i in items {
                    walk(i, out, what, depth + 1)?;
                }
            }
            _ => {
                return Err(CiError::Invalid(format!(
                    "{what} config should be a string or a nested array of strings up to 10 levels deep"
                )))
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(v, &mut out, what, 0)?;
    Ok(out)
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, CiError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).ok_or_else(|| {
                    CiError::Invalid(format!("{what} config should be an array of strings"))
                })
            })
            .collect(),
        _ => Err(CiError::Invalid(format!(
            "{what} config should be an array of strings"
        ))),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn variables(v: &Value) -> Result<Vars, CiError> {
    let Value::Mapping(m) = v else {
        return Err(CiError::Invalid("variables config should be a hash".into()));
    };
    let mut out = Vec::new();
    for (k, val) in m {
        let key = scalar(k).ok_or_else(|| {
            CiError::Invalid("variables config should be a hash of key value pairs".into())
        })?;
        let value = match val {
            Value::Mapping(full) => full.get("value").and_then(scalar).unwrap_or_default(),
            other => scalar(other).ok_or_else(|| {
                CiError::Invalid(format!(
                    "variables config: {key} should be a string or a hash with value"
                ))
            })?,
        };
        out.push((key, value));
    }
    Ok(out)
}

fn rules(v: &Value) -> Result<Vec<Rule>, CiError> {
    let Value::Sequence(items) = v else {
        return Err(CiError::Invalid(
            "rules config should be an array of hashes".into(),
        ));
    };
    items
        .iter()
        .map(|item| {
            let Value::Mapping(m) = item else {
                return Err(CiError::Invalid(
                    "rules config should be an array of hashes".into(),
                ));
            };
            let condition = match m.get("if") {
                None => None,
                Some(v) => Some(
                    v.as_str()
                        .ok_or_else(|| {
                            CiError::Invalid("rules:if config should be a string".into())
                        })?
                        .to_owned(),
                ),
            };
            if let Some(c) = &condition {
                // Catch syntax errors at load time, as GitLab's lint does.
                parse_expression(c)
                    .map_err(|e| CiError::Invalid(format!("rules:if `{c}`: {e}")))?;
            }
            let when = match m.get("when") {
                None => None,
                Some(v) => Some(When::parse(v.as_str().unwrap_or_default())?),
            };
            let allow_failure = m.get("allow_failure").and_then(Value::as_bool);
            let variables = match m.get("variables") {
                Some(v) => variables(v)?,
                None => Vec::new(),
            };
            let exists = match m.get("exists") {
                None => None,
                Some(Value::Mapping(e)) => match e.get("paths") {
                    Some(p) => Some(string_list(p, "rules:exists")?),
                    None => Some(Vec::new()),
                },
                Some(v) => Some(string_list(v, "rules:exists")?),
            };
            Ok(Rule {
                condition,
                when,
                allow_failure,
                variables,
                exists,
            })
        })
        .collect()
}

fn ref_policy(v: &Value) -> Result<RefPolicy, CiError> {
    match v {
        Value::String(_) | Value::Sequence(_) => Ok(RefPolicy {
            refs: string_list(v, "only/except")?,
            variables: vec![],
        }),
        Value::Mapping(m) => {
            let refs = match m.get("refs") {
                Some(r) => string_list(r, "only/except:refs")?,
                None => vec![],
            };
            let variables = match m.get("variables") {
                Some(r) => string_list(r, "only/except:variables")?,
                None => vec![],
            };
            for key in m.keys() {
                let k = key.as_str().unwrap_or_default();
                // `changes` is true in pipelines without a push (API, schedules), and
                // `kubernetes` cannot be known here: both are left out of the decision, so
                // `only` may join and `except` does not exclude (the cautious reading).
                if !matches!(k, "refs" | "variables" | "changes" | "kubernetes") {
                    return Err(CiError::Invalid(format!(
                        "only/except:{k} is not supported by the stand-in runner"
                    )));
                }
            }
            Ok(RefPolicy { refs, variables })
        }
        _ => Err(CiError::Invalid(
            "only/except config should be an array of strings or a hash".into(),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// CI/CD variable expressions

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Var(String),
    Str(String),
    /// `/pattern/flags`
    Regex(String, String),
    Null,
    Eq,
    Ne,
    Match,
    NoMatch,
    And,
    Or,
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'$' => {
                i += 1;
                let braced = b.get(i) == Some(&b'{');
                if braced {
                    i += 1;
                }
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if start == i {
                    return Err("a variable name is expected after `$`".into());
                }
                out.push(Token::Var(s[start..i].to_owned()));
                if braced {
                    if b.get(i) != Some(&b'}') {
                        return Err("missing `}`".into());
                    }
                    i += 1;
                }
            }
            b'"' | b'\'' => {
                let start = i + 1;
                let end = s[start..]
                    .find(c as char)
                    .ok_or_else(|| "unterminated string".to_owned())?;
                out.push(Token::Str(s[start..start + end].to_owned()));
                i = start + end + 1;
            }
            b'=' if b.get(i + 1) == Some(&b'=') => {
                out.push(Token::Eq);
                i += 2;
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push(Token::Ne);
                i += 2;
            }
            b'=' if b.get(i + 1) == Some(&b'~') => {
                out.push(Token::Match);
                i += 2;
            }
            b'!' if b.get(i + 1) == Some(&b'~') => {
                out.push(Token::NoMatch);
                i += 2;
            }
            b'/' => {
                // A regex literal: up to the next unescaped `/`, then its flags.
                let mut j = i + 1;
                let mut pattern = String::new();
                loop {
                    match b.get(j) {
                        None => return Err("unterminated regular expression".into()),
                        Some(b'\\') if b.get(j + 1) == Some(&b'/') => {
                            pattern.push('/');
                            j += 2;
                        }
                        Some(b'/') => break,
                        Some(_) => {
                            let c = s[j..].chars().next().unwrap_or_default();
                            pattern.push(c);
                            j += c.len_utf8();
                        }
                    }
                }
                j += 1;
                let start = j;
                while j < b.len() && b[j].is_ascii_alphabetic() {
                    j += 1;
                }
                out.push(Token::Regex(pattern, s[start..j].to_owned()));
                i = j;
            }
            b'&' if b.get(i + 1) == Some(&b'&') => {
                out.push(Token::And);
                i += 2;
            }
            b'|' if b.get(i + 1) == Some(&b'|') => {
                out.push(Token::Or);
                i += 2;
            }
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            _ if s[i..].starts_with("null") => {
                out.push(Token::Null);
                i += 4;
            }
            _ => return Err(format!("unexpected `{}`", &s[i..])),
        }
    }
    Ok(out)
}

/// The parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Var(String),
    Str(String),
    Regex(String, String),
    Null,
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    /// `=~` (`false`) or `!~` (`true`).
    Match(Box<Expr>, Box<Expr>, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    // or := and ('||' and)*
    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }
    // and := cmp ('&&' cmp)*
    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.cmp()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.cmp()?));
        }
        Ok(left)
    }
    // cmp := atom (('==' | '!=' | '=~' | '!~') atom)?
    fn cmp(&mut self) -> Result<Expr, String> {
        let left = self.atom()?;
        match self.peek() {
            Some(Token::Match) | Some(Token::NoMatch) => {
                let negated = self.peek() == Some(&Token::NoMatch);
                self.pos += 1;
                let right = self.atom()?;
                if let Expr::Regex(p, f) = &right {
                    compile_regex(p, f)?;
                }
                Ok(Expr::Match(Box::new(left), Box::new(right), negated))
            }
            Some(Token::Eq) => {
                self.pos += 1;
                Ok(Expr::Eq(Box::new(left), Box::new(self.atom()?)))
            }
            Some(Token::Ne) => {
                self.pos += 1;
                Ok(Expr::Ne(Box::new(left), Box::new(self.atom()?)))
            }
            _ => Ok(left),
        }
    }
    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Var(v)) => Ok(Expr::Var(v)),
            Some(Token::Str(s)) => Ok(Expr::Str(s)),
            Some(Token::Regex(p, f)) => Ok(Expr::Regex(p, f)),
            Some(Token::Null) => Ok(Expr::Null),
            Some(Token::Open) => {
                let e = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(e),
                    _ => Err("missing `)`".into()),
                }
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

fn parse_expression(s: &str) -> Result<Expr, String> {
    let mut p = Parser {
        tokens: tokenize(s)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos != p.tokens.len() {
        return Err(format!("unexpected {:?}", p.tokens[p.pos]));
    }
    Ok(e)
}

/// A value during evaluation: undefined variables are `null`, as in GitLab.
fn value<'a>(e: &'a Expr, vars: &'a Vars) -> Result<Option<&'a str>, String> {
    match e {
        Expr::Var(name) => Ok(vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())),
        Expr::Str(s) => Ok(Some(s.as_str())),
        Expr::Regex(..) => Err("a regular expression can only follow =~ or !~".into()),
        Expr::Null => Ok(None),
        _ => Err("a comparison cannot be compared".into()),
    }
}

/// A `/pattern/flags` regex as GitLab reads it (RE2 syntax; flags `i`, `m`, `s`, `x`).
fn compile_regex(pattern: &str, flags: &str) -> Result<regex::Regex, String> {
    let mut b = regex::RegexBuilder::new(pattern);
    for f in flags.chars() {
        match f {
            'i' => b.case_insensitive(true),
            'm' => b.multi_line(true),
            's' => b.dot_matches_new_line(true),
            'x' => b.ignore_whitespace(true),
            other => return Err(format!("unknown regular expression flag `{other}`")),
        };
    }
    b.build()
        .map_err(|e| format!("invalid regular expression /{pattern}/: {e}"))
}

/// The right side of `=~`: a regex literal, or a variable (or string) holding `/…/flags`.
fn regex_of(e: &Expr, vars: &Vars) -> Result<Option<regex::Regex>, String> {
    let text = match e {
        Expr::Regex(p, f) => return compile_regex(p, f).map(Some),
        other => value(other, vars)?,
    };
    let Some(text) = text else { return Ok(None) };
    let Some(body) = text.strip_prefix('/') else {
        return Err(format!(
            "the right side of =~ must be a regular expression /…/, found {text:?}"
        ));
    };
    let Some(end) = body.rfind('/') else {
        return Err(format!("unterminated regular expression {text:?}"));
    };
    compile_regex(&body[..end], &body[end + 1..]).map(Some)
}

fn truthy(e: &Expr, vars: &Vars) -> Result<bool, String> {
    Ok(match e {
        Expr::Eq(a, b) => value(a, vars)? == value(b, vars)?,
        Expr::Ne(a, b) => value(a, vars)? != value(b, vars)?,
        Expr::Match(a, b, negated) => {
            let hit = match (value(a, vars)?, regex_of(b, vars)?) {
                (Some(text), Some(re)) => re.is_match(text),
                _ => false,
            };
            hit != *negated
        }
        Expr::And(a, b) => truthy(a, vars)? && truthy(b, vars)?,
        Expr::Or(a, b) => truthy(a, vars)? || truthy(b, vars)?,
        // A lone variable or string is true when set and non-empty.
        other => value(other, vars)?.is_some_and(|v| !v.is_empty()),
    })
}

/// Evaluate a `rules: if:` expression against variables (later entries win).
pub fn evaluate(expr: &str, vars: &[(String, String)]) -> Result<bool, String> {
    let e = parse_expression(expr)?;
    truthy(&e, &vars.to_vec())
}

fn any_expression(exprs: &[String], vars: &Vars) -> Result<bool, PlanError> {
    for e in exprs {
        if evaluate(e, vars).map_err(PlanError::Invalid)? {
            return Ok(true);
        }
    }
    Ok(false)
}

// ---------------------------------------------------------------------------------------
// Running a job

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Success,
    Failed,
    Canceled,
}

#[derive(Debug, Clone)]
pub struct JobResult {
    pub outcome: JobOutcome,
    /// The script's exit code (None when cancelled or timed out).
    pub exit_code: Option<i32>,
    /// GitLab's `failure_reason` (`script_failure`, `job_execution_timeout`, …).
    pub failure_reason: Option<String>,
    /// The whole log, exactly as streamed.
    pub log: Vec<u8>,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
}

impl JobResult {
    pub fn duration(&self) -> Duration {
        self.finished_at
            .duration_since(self.started_at)
            .unwrap_or_default()
    }
}

/// Runs jobs of one project folder with `bash`, the way the shell executor does.
#[derive(Debug, Clone)]
pub struct Runner {
    dir: PathBuf,
    /// Kill the job after this long (GitLab's default job timeout is 1 h).
    pub timeout: Duration,
    /// The runner's description in the header (`on <name>`).
    pub name: String,
}

impl Runner {
    pub fn new(project_dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: project_dir.into(),
            timeout: Duration::from_secs(3600),
            name: "chatops-standin-runner".into(),
        }
    }

    pub fn project_dir(&self) -> &Path {
        &self.dir
    }

    /// Run `job` to the end; `sink` receives the log as it is written.
    pub async fn run(
        &self,
        ci: &CiFile,
        job: &PlannedJob,
        ctx: &PipelineContext,
        job_id: u64,
        sink: &mut (dyn FnMut(&[u8]) + Send),
    ) -> JobResult {
        self.run_until(ci, job, ctx, job_id, sink, std::future::pending())
            .await
    }

    /// Like `run`, but the job is cancelled (its processes killed) when `cancel` completes.
    pub async fn run_until(
        &self,
        ci: &CiFile,
        job: &PlannedJob,
        ctx: &PipelineContext,
        job_id: u64,
        sink: &mut (dyn FnMut(&[u8]) + Send),
        cancel: impl std::future::Future<Output = ()> + Send,
    ) -> JobResult {
        let started_at = SystemTime::now();
        let mut log = LogWriter {
            log: Vec::new(),
            sink,
        };
        let Some(def) = ci.job(&job.name) else {
            log.write(
                format!(
                    "{BOLD_RED}ERROR: Job failed (system failure): job {} is not defined{RESET}\n",
                    job.name
                )
                .as_bytes(),
            );
            return log.finish(
                JobOutcome::Failed,
                None,
                Some("unknown_failure"),
                started_at,
            );
        };

        log.write(
            format!(
                "{CLEAR}Running with gitlab-runner {RUNNER_VERSION}{RESET}\n\
                 {CLEAR}  on {} {}, system ID: s_{:012x}{RESET}\n",
                self.name,
                short_token(&self.name),
                fnv(&self.name) & 0xffff_ffff_ffff
            )
            .as_bytes(),
        );
        log.section_start("prepare_executor", "Preparing the \"shell\" executor");
        log.write(format!("{CLEAR}Using Shell (bash) executor...{RESET}\n").as_bytes());
        log.section_end("prepare_executor");
        log.section_start("prepare_script", "Preparing environment");
        log.write(format!("Running on {}...\n", hostname()).as_bytes());
        log.section_end("prepare_script");
        log.section_start("get_sources", "Getting source from Git repository");
        let (root, build_dir) = match copy_project(&self.dir, &ctx.project_path, job_id) {
            Ok(d) => d,
            Err(e) => {
                log.write(format!("{BOLD_RED}ERROR: Job failed (system failure): preparing the build directory: {e}{RESET}\n").as_bytes());
                return log.finish(
                    JobOutcome::Failed,
                    None,
                    Some("runner_system_failure"),
                    started_at,
                );
            }
        };
        log.write(
            format!(
                "{BOLD_GREEN}Skipping Git repository setup{RESET}\n\
                 {BOLD_GREEN}Skipping Git checkout{RESET}\n\
                 {BOLD_GREEN}Skipping Git submodules setup{RESET}\n"
            )
            .as_bytes(),
        );
        log.section_end("get_sources");

        let env = self.job_env(ci, job, ctx, job_id, &root.join("builds"), &build_dir);
        let mut commands = def.before_script.clone();
        commands.extend(def.script.iter().cloned());
        log.section_start(
            "step_script",
            "Executing \"step_script\" stage of the job script",
        );
        let deadline = tokio::time::Instant::now() + self.timeout;
        let script = root.join("tmp").join("script.sh");
        let step = run_script(
            &commands, &env, &build_dir, &script, &mut log, deadline, cancel,
        )
        .await;
        log.ensure_newline();
        log.section_end("step_script");

        if !def.after_script.is_empty() && step != Step::Canceled {
            log.section_start("after_script", "Running after_script");
            log.write(format!("{BOLD_GREEN}Running after script...{RESET}\n").as_bytes());
            let after_deadline = tokio::time::Instant::now() + Duration::from_secs(300);
            let mut after_env = env.clone();
            after_env.push((
                "CI_JOB_STATUS".into(),
                if step == Step::Exited(0) {
                    "success"
                } else {
                    "failed"
                }
                .into(),
            ));
            let after = run_script(
                &def.after_script,
                &after_env,
                &build_dir,
                &script,
                &mut log,
                after_deadline,
                std::future::pending(),
            )
            .await;
            log.ensure_newline();
            if let Step::Exited(code) = after {
                if code != 0 {
                    log.write(format!("{BOLD_RED}WARNING: after_script failed, but job will continue unaffected: exit code {code}{RESET}\n").as_bytes());
                }
            }
            log.section_end("after_script");
        }
        log.section_start(
            "cleanup_file_variables",
            "Cleaning up project directory and file based variables",
        );
        let _ = std::fs::remove_dir_all(&root);
        log.section_end("cleanup_file_variables");

        match step {
            Step::Exited(0) => {
                log.write(format!("{BOLD_GREEN}Job succeeded{RESET}\n").as_bytes());
                log.finish(JobOutcome::Success, Some(0), None, started_at)
            }
            Step::Exited(code) => {
                log.write(
                    format!("{BOLD_RED}ERROR: Job failed: exit code {code}{RESET}\n").as_bytes(),
                );
                log.finish(
                    JobOutcome::Failed,
                    Some(code),
                    Some("script_failure"),
                    started_at,
                )
            }
            Step::TimedOut => {
                log.write(
                    format!(
                        "{BOLD_RED}ERROR: Job failed: execution took longer than {} seconds{RESET}\n",
                        go_duration(self.timeout)
                    )
                    .as_bytes(),
                );
                log.finish(
                    JobOutcome::Failed,
                    None,
                    Some("job_execution_timeout"),
                    started_at,
                )
            }
            Step::Canceled => {
                log.write(format!("{BOLD_RED}ERROR: Job failed: canceled{RESET}\n").as_bytes());
                log.finish(JobOutcome::Canceled, None, None, started_at)
            }
            Step::SpawnFailed(e) => {
                log.write(
                    format!("{BOLD_RED}ERROR: Job failed (system failure): {e}{RESET}\n")
                        .as_bytes(),
                );
                log.finish(
                    JobOutcome::Failed,
                    None,
                    Some("runner_system_failure"),
                    started_at,
                )
            }
        }
    }

    /// The job's environment: predefined, YAML (global, job, rule), then pipeline variables.
    fn job_env(
        &self,
        ci: &CiFile,
        job: &PlannedJob,
        ctx: &PipelineContext,
        job_id: u64,
        builds_dir: &Path,
        build_dir: &Path,
    ) -> Vars {
        let mut vars = ci.pipeline_variables(ctx);
        let server = ctx.server_url.trim_end_matches('/');
        for (k, v) in [
            ("CI_JOB_ID", job_id.to_string()),
            ("CI_JOB_NAME", job.name.clone()),
            ("CI_JOB_STAGE", job.stage.clone()),
            (
                "CI_JOB_URL",
                format!("{server}/{}/-/jobs/{job_id}", ctx.project_path),
            ),
            ("CI_JOB_STATUS", "running".into()),
            ("CI_PROJECT_DIR", build_dir.display().to_string()),
            ("CI_BUILDS_DIR", builds_dir.display().to_string()),
            ("CI_RUNNER_DESCRIPTION", self.name.clone()),
            (
                "CI_RUNNER_VERSION",
                RUNNER_VERSION.split(' ').next().unwrap_or("").into(),
            ),
            ("CI_SERVER", "yes".into()),
            ("GIT_STRATEGY", "none".into()),
        ] {
            set(&mut vars, k, &v);
        }
        let job_vars = ci
            .job(&job.name)
            .map(|d| d.variables.as_slice())
            .unwrap_or(&[]);
        for (k, v) in job_vars.iter().chain(job.rule_variables.iter()) {
            set_unless_present(&mut vars, k, v, &ctx.variables);
        }
        vars
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Exited(i32),
    TimedOut,
    Canceled,
    SpawnFailed(String),
}

struct LogWriter<'a> {
    log: Vec<u8>,
    sink: &'a mut (dyn FnMut(&[u8]) + Send),
}

impl LogWriter<'_> {
    fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.log.extend_from_slice(bytes);
        (self.sink)(bytes);
    }

    fn ensure_newline(&mut self) {
        if !self.log.is_empty() && self.log.last() != Some(&b'\n') {
            self.write(b"\n");
        }
    }

    fn section_start(&mut self, name: &str, title: &str) {
        self.write(
            format!(
                "section_start:{}:{name}\r{CLEAR}{CLEAR}{BOLD_CYAN}{title}{RESET}{RESET}\n",
                unix_now()
            )
            .as_bytes(),
        );
    }

    fn section_end(&mut self, name: &str) {
        self.write(format!("section_end:{}:{name}\r{CLEAR}", unix_now()).as_bytes());
    }

    fn finish(
        self,
        outcome: JobOutcome,
        exit_code: Option<i32>,
        failure_reason: Option<&str>,
        started_at: SystemTime,
    ) -> JobResult {
        JobResult {
            outcome,
            exit_code,
            failure_reason: failure_reason.map(str::to_owned),
            log: self.log,
            started_at,
            finished_at: SystemTime::now(),
        }
    }
}

/// The script bash runs: stderr joined to stdout, each command echoed in bold green before
/// it runs (only its first line, marked when collapsed), stopping at the first failure.
fn build_script(commands: &[String]) -> String {
    let mut s = String::from("exec 2>&1\nset -eo pipefail\nset +o noclobber\n");
    for cmd in commands {
        let cmd = cmd.trim();
        if cmd.is_empty() {
            s.push_str("echo\n");
            continue;
        }
        let mut lines = cmd.splitn(2, '\n');
        let first = lines.next().unwrap_or_default();
        let echo = if lines.next().is_some() {
            format!("$ {first} # collapsed multi-line command")
        } else {
            format!("$ {first}")
        };
        s.push_str(&format!(
            "printf '\\033[32;1m%s\\033[0;m\\n' {}\n{cmd}\n",
            single_quote(&echo)
        ));
    }
    s.push_str("exit 0\n");
    s
}

fn single_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

async fn run_script(
    commands: &[String],
    env: &Vars,
    dir: &Path,
    script_path: &Path,
    log: &mut LogWriter<'_>,
    deadline: tokio::time::Instant,
    cancel: impl std::future::Future<Output = ()> + Send,
) -> Step {
    if let Err(e) = std::fs::write(script_path, build_script(commands)) {
        return Step::SpawnFailed(format!("writing the job script: {e}"));
    }
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("--noprofile")
        .arg("--norc")
        .arg(script_path)
        .current_dir(dir)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    // A clean environment: the job sees CI variables and the basics, never our secrets.
    for key in ["PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Step::SpawnFailed(format!("starting bash: {e}")),
    };
    let pid = child.id();
    let Some(mut out) = child.stdout.take() else {
        return Step::SpawnFailed("no stdout pipe".into());
    };
    let mut buf = vec![0u8; 8192];
    tokio::pin!(cancel);
    let stop = loop {
        tokio::select! {
            n = out.read(&mut buf) => match n {
                Ok(0) | Err(_) => break None,
                Ok(n) => log.write(&buf[..n]),
            },
            _ = tokio::time::sleep_until(deadline) => break Some(Step::TimedOut),
            _ = &mut cancel => break Some(Step::Canceled),
        }
    };
    let result = match stop {
        Some(step) => {
            kill_group(pid);
            let _ = child.wait().await;
            step
        }
        None => match child.wait().await {
            Ok(status) => Step::Exited(status.code().unwrap_or(1)),
            Err(e) => Step::SpawnFailed(format!("waiting for bash: {e}")),
        },
    };
    let _ = std::fs::remove_file(script_path);
    result
}

/// Kill the job's whole process group (bash and anything it started).
fn kill_group(pid: Option<u32>) {
    // Never 0 or 1: `kill -- -0` would hit our own process group.
    if let Some(pid) = pid.filter(|p| *p > 1) {
        let _ = std::process::Command::new("kill")
            .args(["-s", "KILL", "--"])
            .arg(format!("-{pid}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A fresh copy of the project folder for one job (jobs may write files), laid out as the
/// runner does: `<root>/builds/<project path>`, with the job script in `<root>/tmp`.
fn copy_project(
    src: &Path,
    project_path: &str,
    job_id: u64,
) -> std::io::Result<(PathBuf, PathBuf)> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let root = std::env::temp_dir().join(format!(
        "chatops-runner-{}-{job_id}-{nanos}",
        std::process::id()
    ));
    let safe: String = project_path
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .collect::<Vec<_>>()
        .join("/");
    let build = root
        .join("builds")
        .join(if safe.is_empty() { "project" } else { &safe });
    copy_dir(src, &build)?;
    std::fs::create_dir_all(root.join("tmp"))?;
    Ok((root, build))
}

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let to = dst.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A runner token's short form as the header shows it (`t1_` + 8 characters).
fn short_token(name: &str) -> String {
    format!("t1_{:08x}", fnv(name) as u32)
}

/// Go's `time.Duration` formatting, as the runner prints timeouts (`1h0m0s`).
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

/// Where `stage` comes in the pipeline (stand-ins list jobs by stage).
pub fn stage_index(ci: &CiFile, stage: &str) -> usize {
    ci.stages
        .iter()
        .position(|s| s == stage)
        .unwrap_or(usize::MAX)
}

/// Every job of the file as `ci/lint?include_jobs=true` lists them.
pub fn lint_jobs(ci: &CiFile) -> Vec<serde_json::Value> {
    ci.jobs.iter().map(JobDef::lint_json).collect()
}

// ---------------------------------------------------------------------------------------
// Plugging the runner into the GitLab stand-in

/// Variables the GitLab stand-in adds to a job's pipeline variables (we compute our own).
const STANDIN_PREDEFINED: &[&str] = &[
    "CI",
    "GITLAB_CI",
    "CI_JOB_ID",
    "CI_JOB_NAME",
    "CI_JOB_STAGE",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_SOURCE",
    "CI_PROJECT_ID",
    "CI_PROJECT_PATH",
    "CI_COMMIT_REF_NAME",
    "CI_DEFAULT_BRANCH",
];

/// The CI file as the GitLab stand-in models jobs: how each joins an API pipeline (decided
/// by our own planner, so rules, only/except and `when` mean what GitLab means), whether it
/// is manual, and whether lint reports `except: chat`.
pub fn standin_jobs(ci: &CiFile) -> Vec<crate::gitlab::StandinCiJob> {
    use crate::gitlab::{JoinRule, StandinCiJob};
    let joins = |name: &str, wanted: &str| -> Option<PlannedJob> {
        let ctx = PipelineContext::api(
            "standin/project",
            "main",
            &[("CHATOPS_JOB".to_owned(), wanted.to_owned())],
        );
        ci.plan(&ctx).ok()?.into_iter().find(|p| p.name == name)
    };
    ci.jobs
        .iter()
        .map(|j| {
            let named = joins(&j.name, &j.name);
            let other = joins(&j.name, "\u{1}another-job");
            let rule = match (&other, &named) {
                (Some(_), _) => JoinRule::Always,
                (None, Some(_)) => JoinRule::ChatopsRule,
                (None, None) => JoinRule::OnlyChat,
            };
            let manual = named.or(other).is_some_and(|p| p.when == When::Manual);
            let mut script = j.before_script.clone();
            script.extend(j.script.iter().cloned());
            StandinCiJob {
                name: j.name.clone(),
                stage: j.stage.clone(),
                when_manual: manual,
                except_chat: j.excepts_chat(),
                rule,
                script,
                // The local runner runs scripts; trigger jobs are not planned here.
                trigger: None,
            }
        })
        .collect()
}

/// A CI file plans the stand-in's pipelines as GitLab would: workflow rules, rules,
/// only/except. No job: an empty plan (the stand-in answers GitLab's "no jobs" 400).
impl crate::gitlab::PipelinePlanner for CiFile {
    fn plan(
        &self,
        project: &crate::gitlab::StandinProject,
        git_ref: &str,
        variables: &[(String, String)],
    ) -> Result<Vec<crate::gitlab::PlannedJob>, String> {
        let mut ctx = PipelineContext::api(&project.path, git_ref, variables);
        ctx.project_id = project.id;
        ctx.default_branch = project.default_branch.clone();
        let planned = match CiFile::plan(self, &ctx) {
            Ok(p) => p,
            Err(PlanError::NoJobs) => return Ok(Vec::new()),
            Err(e) => return Err(e.to_string()),
        };
        Ok(planned
            .into_iter()
            .map(|j| {
                let def = self.job(&j.name);
                let mut script = def.map(|d| d.before_script.clone()).unwrap_or_default();
                script.extend(def.map(|d| d.script.clone()).unwrap_or_default());
                crate::gitlab::PlannedJob {
                    manual: j.when == When::Manual,
                    name: j.name,
                    stage: j.stage,
                    script,
                    bridge: false,
                }
            })
            .collect())
    }
}

impl crate::gitlab::StandinHandle {
    /// The project's CI configuration as a `.gitlab-ci.yml` text, or as GitLab's merged YAML
    /// of one (what `ci/lint` reports as `merged_yaml`; `include: local` is refused as there is
    /// no repository, and every `rules: exists:` counts as found). Pipelines then hold what
    /// this evaluator plans for them, workflow rules included. An invalid text makes the
    /// configuration invalid with the evaluator's message.
    pub fn set_ci_yaml(&self, project: u64, yaml: &str) {
        use crate::gitlab::CiDefinition;
        match CiFile::parse_merged(yaml) {
            Ok(ci) => {
                let jobs = standin_jobs(&ci);
                let merged = ci.merged_yaml.clone();
                self.set_ci_definition(
                    project,
                    CiDefinition::Valid(jobs),
                    Some(merged),
                    Some(std::sync::Arc::new(ci)),
                );
            }
            Err(e) => self.set_ci_definition(
                project,
                CiDefinition::Invalid(vec![e.to_string()]),
                None,
                None,
            ),
        }
    }
}

/// A [`JobExecutor`](crate::gitlab::JobExecutor) for the GitLab stand-in that runs jobs of a
/// project folder for real. The trace grows in the stand-in while the job runs (as GitLab's
/// does), and a job the stand-in cancels is killed.
pub struct ShellExecutor {
    runner: Runner,
    ci: CiFile,
    gitlab: crate::gitlab::StandinHandle,
    server_url: String,
}

impl ShellExecutor {
    pub fn new(
        runner: Runner,
        ci: CiFile,
        gitlab: crate::gitlab::StandinHandle,
        server_url: &str,
    ) -> Self {
        Self {
            runner,
            ci,
            gitlab,
            server_url: server_url.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl crate::gitlab::JobExecutor for ShellExecutor {
    async fn run(&self, job: crate::gitlab::ExecJob) -> crate::gitlab::ExecOutcome {
        use chatops_core::gitlab::Status;
        let get = |key: &str| {
            job.variables
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let default_branch = get("CI_DEFAULT_BRANCH").unwrap_or_else(|| "main".into());
        let ctx = PipelineContext {
            source: get("CI_PIPELINE_SOURCE").unwrap_or_else(|| "api".into()),
            git_ref: get("CI_COMMIT_REF_NAME").unwrap_or_else(|| default_branch.clone()),
            default_branch,
            project_id: job.project_id,
            project_path: job.project_path.clone(),
            server_url: self.server_url.clone(),
            pipeline_id: job.pipeline_id,
            variables: job
                .variables
                .iter()
                .filter(|(k, _)| !STANDIN_PREDEFINED.contains(&k.as_str()))
                .cloned()
                .collect(),
        };
        let planned = self
            .ci
            .plan(&ctx)
            .ok()
            .and_then(|p| p.into_iter().find(|p| p.name == job.name))
            .unwrap_or_else(|| PlannedJob {
                name: job.name.clone(),
                stage: self
                    .ci
                    .job(&job.name)
                    .map(|j| j.stage.clone())
                    .unwrap_or_else(|| "test".into()),
                when: When::OnSuccess,
                allow_failure: false,
                rule_variables: Vec::new(),
            });
        let handle = self.gitlab.clone();
        let job_id = job.job_id;
        let mut so_far = Vec::new();
        let mut sink = |chunk: &[u8]| {
            so_far.extend_from_slice(chunk);
            handle.set_trace(job_id, so_far.clone());
        };
        let watcher = self.gitlab.clone();
        let canceled = async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if watcher
                    .job(job_id)
                    .is_none_or(|j| j.status == Status::Canceled)
                {
                    return;
                }
            }
        };
        let result = self
            .runner
            .run_until(&self.ci, &planned, &ctx, job_id, &mut sink, canceled)
            .await;
        crate::gitlab::ExecOutcome {
            status: match result.outcome {
                JobOutcome::Success => Status::Success,
                JobOutcome::Failed => Status::Failed,
                JobOutcome::Canceled => Status::Canceled,
            },
            trace: result.log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/demo-project")
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn chat(job: &str) -> PipelineContext {
        PipelineContext::api(
            "demo/ops",
            "main",
            &vars(&[("CHATOPS_JOB", job), ("CHAT_INPUT", "")]),
        )
    }

    fn names(plan: &[PlannedJob]) -> Vec<&str> {
        plan.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn expressions() {
        let v = vars(&[
            ("A", "x"),
            ("B", "x"),
            ("C", "y"),
            ("EMPTY", ""),
            ("RE", "/^Y$/i"),
            ("P", "a/b"),
            ("SAST_EXCLUDED_ANALYZERS", "semgrep, gosec"),
        ]);
        let table: &[(&str, bool)] = &[
            ("$A =~ /^x$/", true),
            ("$C =~ /Y/i", true),
            ("$C =~ /Y/", false),
            ("$C !~ /x/", true),
            ("$C =~ $RE", true),
            ("$P =~ /a\\/b/", true),
            ("$UNSET =~ /.*/", false),
            ("$UNSET !~ /x/", true),
            ("$SAST_EXCLUDED_ANALYZERS =~ /semgrep/", true),
            (
                "$SAST_EXCLUDED_ANALYZERS =~ /spotbugs/ || $A == \"x\"",
                true,
            ),
            ("$A == $B", true),
            ("$A == $C", false),
            ("$A != $C", true),
            ("$A == \"x\"", true),
            ("$A == 'x'", true),
            ("${A} == \"x\"", true),
            ("$A", true),
            ("$EMPTY", false),
            ("$UNSET", false),
            ("$UNSET == null", true),
            ("$EMPTY == null", false),
            ("$EMPTY == \"\"", true),
            ("$UNSET == $ALSO_UNSET", true),
            ("$UNSET == \"\"", false),
            ("$A == \"x\" && $C == \"y\"", true),
            ("$A == \"x\" && $C == \"x\"", false),
            ("$A == \"z\" || $C == \"y\"", true),
            ("$A == \"z\" || $C == \"y\" && $B == \"z\"", false),
            ("($A == \"z\" || $C == \"y\") && $B == \"x\"", true),
        ];
        for (expr, want) in table {
            assert_eq!(evaluate(expr, &v), Ok(*want), "{expr}");
        }
        for bad in [
            "$A ==",
            "$A == \"x",
            "$A =~ /x",
            "$A =~ /[/",
            "$A =~ /x/q",
            "/x/",
            "($A",
            "== $A",
            "$",
        ] {
            assert!(evaluate(bad, &v).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn chat_pipeline_holds_only_the_asked_job() {
        let ci = CiFile::load(&demo_dir()).unwrap();
        for job in ["hello-world", "ls", "greet", "db-check"] {
            let plan = ci.plan(&chat(job)).unwrap();
            assert_eq!(names(&plan), [job]);
            assert_eq!(plan[0].when, When::OnSuccess);
            assert_eq!(plan[0].stage, "chatops");
        }
        let manual = ci.plan(&chat("restart")).unwrap();
        assert_eq!(names(&manual), ["restart"]);
        assert_eq!(manual[0].when, When::Manual);
        assert!(
            !manual[0].allow_failure,
            "manual by rules is not allow_failure"
        );
        // A missing job and the excluded one: no jobs at all (GitLab answers 400).
        assert_eq!(ci.plan(&chat("nope")), Err(PlanError::NoJobs));
        assert_eq!(ci.plan(&chat("deploy-production")), Err(PlanError::NoJobs));
        assert_eq!(ci.plan(&chat("test")), Err(PlanError::NoJobs));
    }

    #[test]
    fn push_pipeline_runs_the_ordinary_jobs() {
        let ci = CiFile::load(&demo_dir()).unwrap();
        let mut ctx = PipelineContext::api("demo/ops", "main", &[]);
        ctx.source = "push".into();
        assert_eq!(
            names(&ci.plan(&ctx).unwrap()),
            ["test", "deploy-production"]
        );
    }

    #[test]
    fn demo_lint_marks_the_excluded_job() {
        let ci = CiFile::load(&demo_dir()).unwrap();
        let excluded: Vec<_> = ci
            .jobs
            .iter()
            .filter(|j| j.excepts_chat())
            .map(|j| j.name.as_str())
            .collect();
        assert_eq!(excluded, ["deploy-production"]);
        let lint = lint_jobs(&ci);
        let dp = lint
            .iter()
            .find(|j| j["name"] == "deploy-production")
            .unwrap();
        assert_eq!(dp["except"]["refs"], serde_json::json!(["chat"]));
        let hw = lint.iter().find(|j| j["name"] == "hello-world").unwrap();
        assert_eq!(hw["when"], "on_success");
        assert!(hw["only"].is_null(), "jobs with rules have no only");
        // extends resolved: ls got the rule and the stage from .chatops.
        let ls = ci.job("ls").unwrap();
        assert_eq!(ls.stage, "chatops");
        assert_eq!(
            ls.rules.as_ref().unwrap()[0].condition.as_deref(),
            Some("$CHATOPS_JOB == $CI_JOB_NAME")
        );
        assert_eq!(
            ci.job("greet").unwrap().before_script,
            ["export GREETING=\"Hello\""]
        );
    }

    #[test]
    fn gitlab_only_chat_never_runs_in_api_pipelines() {
        let ci = CiFile::parse(
            "hello-world:\n  stage: test\n  only: [chat]\n  script:\n    - echo hi\n\
             deploy:\n  except: [chat]\n  script: echo deploy\n",
        )
        .unwrap();
        // The API pipeline gets the except-chat job and not the only-chat one: exactly why
        // the dispatcher must check what joined.
        assert_eq!(names(&ci.plan(&chat("hello-world")).unwrap()), ["deploy"]);
        let mut in_chat = chat("hello-world");
        in_chat.source = "chat".into();
        assert_eq!(names(&ci.plan(&in_chat).unwrap()), ["hello-world"]);
        assert!(ci.job("deploy").unwrap().excepts_chat());
        let lint = lint_jobs(&ci);
        assert_eq!(
            lint[1]["only"]["refs"],
            serde_json::json!(["branches", "tags"])
        );
    }

    #[test]
    fn workflow_rules_variables_and_when() {
        let yaml = r#"
variables:
  GLOBAL: g
  OVERRIDDEN: yaml
workflow:
  rules:
    - if: '$CI_PIPELINE_SOURCE == "api"'
a:
  variables:
    JOB: j
  rules:
    - if: '$JOB == "j" && $GLOBAL == "g" && $OVERRIDDEN == "pipeline"'
      variables:
        FROM_RULE: r
  script: [echo a]
b:
  when: manual
  script: [echo b]
c:
  when: never
  script: [echo c]
"#;
        let ci = CiFile::parse(yaml).unwrap();
        let ctx = PipelineContext::api("g/p", "main", &vars(&[("OVERRIDDEN", "pipeline")]));
        let plan = ci.plan(&ctx).unwrap();
        assert_eq!(names(&plan), ["a", "b"]);
        assert_eq!(plan[0].rule_variables, vars(&[("FROM_RULE", "r")]));
        assert_eq!(plan[1].when, When::Manual);
        assert!(plan[1].allow_failure, "manual jobs without rules may fail");
        let mut web = ctx.clone();
        web.source = "web".into();
        assert_eq!(ci.plan(&web), Err(PlanError::FilteredByWorkflow));
    }

    #[test]
    fn invalid_configs_are_named() {
        for (yaml, needle) in [
            ("a: [", "Invalid configuration format"),
            (
                "a:\n  stage: nope\n  script: x\n",
                "chosen stage nope does not exist",
            ),
            ("a:\n  stage: test\n", "script"),
            (".hidden:\n  script: x\n", "at least one visible job"),
            ("a:\n  script: x\n  extends: .missing\n", ".missing"),
            (
                "a:\n  script: x\n  rules:\n    - if: '$A =~ /x(/'\n",
                "invalid regular expression",
            ),
            (
                "a:\n  script: x\n  only: [chat]\n  rules:\n    - when: always\n",
                "may not be used with `rules`",
            ),
            (
                "include: other.yml\na:\n  script: x\n",
                "does not have project",
            ),
        ] {
            let err = CiFile::parse(yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn references_merge_keys_triggers_and_symbol_keys() {
        let yaml = r#"
.defaults: &defaults
  stage: test
.chatops-never:
  rules:
    - if: $CHATOPS_JOB
      when: never
build:
  <<: *defaults
  rules:
    - !reference [.chatops-never, rules]
    - if: $CI_COMMIT_BRANCH
  script: make
downstream:
  trigger: group/other
"#;
        let ci = CiFile::parse(yaml).unwrap();
        let build = ci.job("build").unwrap();
        assert_eq!(build.stage, "test");
        let rules = build.rules.as_ref().unwrap();
        assert_eq!(rules.len(), 2, "the referenced rule is spliced in");
        assert_eq!(rules[0].condition.as_deref(), Some("$CHATOPS_JOB"));
        assert_eq!(rules[0].when, Some(When::Never));
        assert!(ci.job("downstream").unwrap().script.is_empty());
        // A chat pipeline: build stays out by its first rule, the trigger job joins.
        let v = ci.job_verdicts(&chat("x")).unwrap();
        let by_name = |n: &str| v.iter().find(|(j, _)| j.name == n).unwrap().1.clone();
        assert_eq!(by_name("build").planned, None);
        assert_eq!(by_name("build").rule, Some(0));
        assert!(by_name("downstream").planned.is_some());

        // Older GitLab's merged_yaml: Ruby symbol keys.
        let merged = "---\n:stages:\n- test\n:job:\n  :script: echo 1\n  :rules:\n  - :if: $CI_COMMIT_BRANCH\n    :exists:\n    - '**/*.py'\n";
        let ci = CiFile::parse_merged(merged).unwrap();
        let job = ci.job("job").unwrap();
        assert_eq!(job.script, ["echo 1"]);
        // `exists:` is unknown in merged YAML: the job is planned as joining.
        assert_eq!(names(&ci.plan(&chat("x")).unwrap()), ["job"]);
        assert_eq!(
            CiFile::parse(&ci.merged_yaml).unwrap().plan(&chat("x")),
            Err(PlanError::NoJobs),
            "with no files at all, exists: never matches"
        );
    }

    #[test]
    fn workflow_verdicts_name_the_deciding_rule() {
        let yaml = r#"
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "api"
      when: never
    - if: $CI_PIPELINE_SOURCE == "push"
job:
  script: x
"#;
        let ci = CiFile::parse(yaml).unwrap();
        assert_eq!(
            ci.workflow_verdict(&chat("job")).unwrap(),
            WorkflowVerdict::Dropped { rule: Some(0) }
        );
        let mut push = chat("job");
        push.source = "push".into();
        assert_eq!(
            ci.workflow_verdict(&push).unwrap(),
            WorkflowVerdict::Runs { rule: 1 }
        );
        let mut web = chat("job");
        web.source = "web".into();
        assert_eq!(
            ci.workflow_verdict(&web).unwrap(),
            WorkflowVerdict::Dropped { rule: None }
        );
        assert_eq!(ci.plan(&chat("job")), Err(PlanError::FilteredByWorkflow));
    }

    async fn run(
        dir: &Path,
        yaml: Option<&str>,
        job: &str,
        extra: &[(&str, &str)],
    ) -> (JobResult, Vec<u8>) {
        let ci = match yaml {
            Some(y) => CiFile::parse(y).unwrap(),
            None => CiFile::load(dir).unwrap(),
        };
        let mut v = vars(&[("CHATOPS_JOB", job)]);
        v.extend(vars(extra));
        let ctx = PipelineContext::api("demo/ops", "main", &v);
        let plan = ci.plan(&ctx).unwrap();
        let mut streamed = Vec::new();
        let runner = Runner::new(dir);
        let result = runner
            .run(&ci, &plan[0], &ctx, 42, &mut |b: &[u8]| {
                streamed.extend_from_slice(b)
            })
            .await;
        (result, streamed)
    }

    fn text(log: &[u8]) -> String {
        String::from_utf8_lossy(log).into_owned()
    }

    #[tokio::test]
    async fn hello_world_log_is_in_runner_format() {
        let (r, streamed) = run(&demo_dir(), None, "hello-world", &[]).await;
        assert_eq!(r.outcome, JobOutcome::Success);
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(streamed, r.log, "the sink sees exactly the log");
        let log = text(&r.log);
        assert!(
            log.starts_with("\x1b[0KRunning with gitlab-runner 17."),
            "{log:?}"
        );
        assert!(log.contains("section_start:"));
        let step = log.find(":step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" stage of the job script\x1b[0;m\x1b[0;m\n").expect("step_script header");
        let body = &log[step..];
        assert!(
            body.contains(
                "\n\x1b[32;1m$ echo \"Hello World.\"\x1b[0;m\nHello World.\nsection_end:"
            ),
            "{body:?}"
        );
        assert!(
            log.ends_with(":cleanup_file_variables\r\x1b[0K\x1b[32;1mJob succeeded\x1b[0;m\n"),
            "{log:?}"
        );
        // Each section starts and ends exactly once.
        for name in [
            "prepare_executor",
            "prepare_script",
            "get_sources",
            "step_script",
            "cleanup_file_variables",
        ] {
            assert_eq!(
                log.matches(&format!(":{name}\r\x1b[0K")).count(),
                2,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn failing_job_logs_exit_code_and_stderr() {
        let (r, _) = run(&demo_dir(), None, "db-check", &[]).await;
        assert_eq!(r.outcome, JobOutcome::Failed);
        assert_eq!(r.exit_code, Some(1));
        assert_eq!(r.failure_reason.as_deref(), Some("script_failure"));
        let log = text(&r.log);
        assert!(log.contains("Connecting to db-primary.internal:5432...\n"));
        assert!(log.contains("\x1b[32;1m$ echo \"psql: error: connection refused\" >&2\x1b[0;m\npsql: error: connection refused\n"));
        assert!(log.contains("\x1b[32;1m$ exit 1\x1b[0;m\nsection_end:"));
        assert!(
            log.ends_with("\x1b[31;1mERROR: Job failed: exit code 1\x1b[0;m\n"),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn variables_reach_the_script_and_secrets_do_not() {
        let (r, _) = run(
            &demo_dir(),
            None,
            "greet",
            &[
                ("CHAT_INPUT", "the logs\nplease"),
                ("CHAT_USER_NAME", "alice"),
                ("CHAT_CHANNEL", "C1"),
                ("CHAT_PLATFORM", "slack"),
            ],
        )
        .await;
        assert_eq!(r.outcome, JobOutcome::Success);
        let log = text(&r.log);
        assert!(log.contains("\x1b[32;1m$ export GREETING=\"Hello\"\x1b[0;m\n\x1b[32;1m$ echo \"$GREETING, $CHAT_USER_NAME!\"\x1b[0;m\nHello, alice!\n"), "{log:?}");
        assert!(log.contains("You asked for: the logs\nplease\n"));
        assert!(log.contains("from channel C1 on slack\n"));

        let yaml = "a:\n  script:\n    - echo \"[$CI_JOB_NAME $CI_JOB_ID $CI_PIPELINE_SOURCE $CI_COMMIT_REF_NAME $CI_PROJECT_PATH]\"\n    - echo \"[${CARGO_PKG_NAME:-clean}]\"\n    - test \"$PWD\" = \"$CI_PROJECT_DIR\" && test -f .gitlab-ci.yml && echo in-copy\n";
        let dir = demo_dir();
        let (r, _) = run(&dir, Some(yaml), "a", &[]).await;
        let log = text(&r.log);
        assert!(log.contains("[a 42 api main demo/ops]\n"), "{log:?}");
        assert!(
            log.contains("[clean]\n"),
            "the runner's own environment leaks: {log:?}"
        );
        assert!(log.contains("in-copy\n"), "{log:?}");
    }

    #[tokio::test]
    async fn multi_line_commands_are_collapsed() {
        let yaml = "a:\n  script:\n    - |\n      echo first\n      echo second\n";
        let (r, _) = run(&demo_dir(), Some(yaml), "a", &[]).await;
        let log = text(&r.log);
        assert!(
            log.contains(
                "\x1b[32;1m$ echo first # collapsed multi-line command\x1b[0;m\nfirst\nsecond\n"
            ),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn ls_job_builds_a_chat_reply_section() {
        let (r, _) = run(&demo_dir(), None, "ls", &[]).await;
        assert_eq!(r.outcome, JobOutcome::Success);
        let log = text(&r.log);
        let start = log
            .find(":chat_reply\r\x1b[0K\n")
            .expect("chat_reply start");
        let end = log.rfind(":chat_reply\r\x1b[0K").unwrap();
        let section = &log[start..end];
        assert!(
            section.contains(".gitlab-ci.yml") && section.contains("README.md"),
            "{section:?}"
        );
        assert!(!section.contains("This command will not be shown."));
    }

    #[tokio::test]
    async fn after_script_runs_in_its_own_section() {
        let yaml = "a:\n  script: [\"false\"]\n  after_script: [\"echo cleanup $CI_JOB_STATUS\"]\n";
        let (r, _) = run(&demo_dir(), Some(yaml), "a", &[]).await;
        let log = text(&r.log);
        assert_eq!(r.exit_code, Some(1));
        assert!(log.contains("\x1b[36;1mRunning after_script\x1b[0;m\x1b[0;m\n\x1b[32;1mRunning after script...\x1b[0;m\n\x1b[32;1m$ echo cleanup $CI_JOB_STATUS\x1b[0;m\ncleanup failed\n"), "{log:?}");
    }

    #[tokio::test]
    async fn timeout_and_cancel_kill_the_job() {
        let ci = CiFile::parse("a:\n  script: [\"echo started\", \"sleep 30\"]\n").unwrap();
        let ctx = PipelineContext::api("g/p", "main", &[]);
        let plan = ci.plan(&ctx).unwrap();
        let mut runner = Runner::new(demo_dir());
        runner.timeout = Duration::from_millis(500);
        let t0 = std::time::Instant::now();
        let r = runner.run(&ci, &plan[0], &ctx, 1, &mut |_: &[u8]| {}).await;
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(r.outcome, JobOutcome::Failed);
        assert_eq!(r.failure_reason.as_deref(), Some("job_execution_timeout"));
        assert!(text(&r.log).contains("started\n"));
        assert!(text(&r.log)
            .ends_with("ERROR: Job failed: execution took longer than 0s seconds\x1b[0;m\n"));

        let runner = Runner::new(demo_dir());
        let t0 = std::time::Instant::now();
        let cancel = tokio::time::sleep(Duration::from_millis(300));
        let r = runner
            .run_until(&ci, &plan[0], &ctx, 2, &mut |_: &[u8]| {}, cancel)
            .await;
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(r.outcome, JobOutcome::Canceled);
        assert!(text(&r.log).ends_with("ERROR: Job failed: canceled\x1b[0;m\n"));
    }

    /// The product's own reader gets from these logs what GitLab's docs promise.
    #[tokio::test]
    async fn logs_read_back_as_the_docs_promise() {
        use chatops_core::reply::{extract, Entry, Outcome, SectionKind};
        let reply = |log: &[u8]| match extract(log).outcome {
            Outcome::Reply(r) => r,
            other => panic!("no reply: {other:?}"),
        };
        let (r, _) = run(&demo_dir(), None, "hello-world", &[]).await;
        let hw = reply(&r.log);
        assert_eq!(hw.section, SectionKind::StepScript);
        assert_eq!(hw.to_text().trim_end(), "Hello World.");

        let (r, _) = run(&demo_dir(), None, "ls", &[]).await;
        let ls = reply(&r.log);
        assert_eq!(ls.section, SectionKind::ChatReply);
        let text = ls.to_text();
        assert!(
            text.contains(".gitlab-ci.yml") && !text.contains("will not be shown"),
            "{text}"
        );

        let (r, _) = run(&demo_dir(), None, "greet", &[("CHAT_USER_NAME", "bob")]).await;
        let greet = reply(&r.log);
        assert!(
            greet
                .entries
                .contains(&Entry::Command("export GREETING=\"Hello\"".into())),
            "{greet:?}"
        );
        assert!(greet.to_text().contains("Hello, bob!"));

        let (r, _) = run(&demo_dir(), None, "db-check", &[]).await;
        let x = extract(&r.log);
        assert!(
            x.log_tail
                .iter()
                .any(|l| l.contains("ERROR: Job failed: exit code 1")),
            "{:?}",
            x.log_tail
        );
    }

    #[test]
    fn demo_jobs_map_onto_the_standin_model() {
        use crate::gitlab::JoinRule;
        let ci = CiFile::load(&demo_dir()).unwrap();
        let jobs = standin_jobs(&ci);
        let get = |n: &str| jobs.iter().find(|j| j.name == n).unwrap().clone();
        assert_eq!(get("hello-world").rule, JoinRule::ChatopsRule);
        assert_eq!(get("ls").rule, JoinRule::ChatopsRule);
        assert!(get("restart").when_manual);
        assert!(!get("hello-world").when_manual);
        let dp = get("deploy-production");
        assert!(dp.except_chat);
        assert_eq!(
            dp.rule,
            JoinRule::OnlyChat,
            "never joins an API chat pipeline"
        );
        assert_eq!(get("test").rule, JoinRule::OnlyChat);
        let plain = standin_jobs(&CiFile::parse("lint:\n  script: [x]\n").unwrap());
        assert_eq!(plain[0].rule, JoinRule::Always);
    }

    /// The runner behind the stand-in's REST API: a pipeline created over HTTP runs for
    /// real, its trace is served by `…/jobs/:id/trace`, and cancelling kills the job.
    #[tokio::test]
    async fn shell_executor_runs_pipelines_of_the_standin() {
        use crate::gitlab::GitLabStandin;
        use chatops_core::gitlab::Status;
        use std::sync::Arc;
        let dir = demo_dir();
        let yaml = std::fs::read_to_string(dir.join(".gitlab-ci.yml")).unwrap()
            + "\nslow:\n  extends: .chatops\n  script: [\"echo waiting\", \"sleep 30\"]\n";
        let ci = CiFile::parse(&yaml).unwrap();
        let gl = GitLabStandin::start().await;
        let state = gl.state();
        state.add_project(7, "demo/ops");
        state.set_ci_jobs(7, standin_jobs(&ci));
        state.set_executor(Arc::new(ShellExecutor::new(
            Runner::new(&dir),
            ci,
            state.clone(),
            &gl.url(),
        )));
        let http = reqwest::Client::new();
        let create = |job: &str| {
            http.post(format!("{}/api/v4/projects/7/pipeline", gl.url()))
                .header("PRIVATE-TOKEN", gl.token())
                .json(&serde_json::json!({"ref": "main", "variables": [
                    {"key": "CHATOPS_JOB", "value": job, "variable_type": "env_var"},
                    {"key": "CHAT_INPUT", "value": "x", "variable_type": "env_var"}]}))
                .send()
        };
        let wait_final = |pipeline: u64| {
            let state = state.clone();
            async move {
                for _ in 0..200 {
                    let jobs = state.jobs_of(pipeline);
                    if jobs.iter().all(|j| j.status.is_final()) {
                        return jobs;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!(
                    "pipeline {pipeline} did not finish: {:?}",
                    state.jobs_of(pipeline)
                );
            }
        };
        let p: serde_json::Value = create("hello-world").await.unwrap().json().await.unwrap();
        let pid = p["id"].as_u64().unwrap();
        let jobs = wait_final(pid).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].status, Status::Success);
        let trace = http
            .get(format!(
                "{}/api/v4/projects/7/jobs/{}/trace",
                gl.url(),
                jobs[0].id
            ))
            .header("PRIVATE-TOKEN", gl.token())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(text(&trace).contains("\nHello World.\n"));
        assert!(text(&trace).ends_with("Job succeeded\x1b[0;m\n"));

        // A pipeline that holds nothing is refused by the stand-in, as GitLab does.
        assert_eq!(create("deploy-production").await.unwrap().status(), 400);

        let p: serde_json::Value = create("slow").await.unwrap().json().await.unwrap();
        let pid = p["id"].as_u64().unwrap();
        let job = state.jobs_of(pid)[0].id;
        for _ in 0..100 {
            if text(&state.job(job).unwrap().trace).contains("waiting\n") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            text(&state.job(job).unwrap().trace).contains("waiting\n"),
            "trace grows while running"
        );
        let t0 = std::time::Instant::now();
        let r = http
            .post(format!(
                "{}/api/v4/projects/7/pipelines/{pid}/cancel",
                gl.url()
            ))
            .header("PRIVATE-TOKEN", gl.token())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for _ in 0..100 {
            if text(&state.job(job).unwrap().trace).contains("canceled") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
        let j = state.job(job).unwrap();
        assert_eq!(j.status, Status::Canceled);
        assert!(text(&j.trace).ends_with("ERROR: Job failed: canceled\x1b[0;m\n"));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(5)), "5s");
    }
}
