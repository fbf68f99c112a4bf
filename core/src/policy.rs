//! The per-job policy a project keeps in its own repository: `.gitlab/chatops.yml` on the
//! default branch, read through GitLab's repository files API. It says, per job, whether a run
//! needs someone else's approval, the GitLab role needed to request or to approve it, the
//! channels it may be asked from, and a one-line description for `help`. No file → no policy:
//! every job behaves as it did before the file existed.
//!
//! The functions may not link a YAML library (`tests/architecture.rs`), so this reads a small,
//! documented subset of YAML (the README's "The policy file"):
//!
//! ```yaml
//! # .gitlab/chatops.yml
//! jobs:
//!   deploy:
//!     description: Deploy the main branch to production
//!     approvals: 1                  # 0 (default) or 1
//!     requester_can_approve: false  # the default
//!     min_role_to_request: developer
//!     min_role_to_approve: maintainer
//!     channels: [C0123456, ops]     # ids or names; also a block list (`- ops`)
//!     approval_expires_minutes: 60  # the default
//! ```
//!
//! Block mappings indented with spaces, `#` comments, plain / 'single' / "double" quoted
//! scalars, flow (`[a, b]`) and block (`- a`) lists of scalars. Anything else — an unknown
//! key, a bad value, a tab, a duplicate, anchors — is refused with the line it is on: a
//! policy that reads differently from what its authors meant would be worse than none, so a
//! refused file refuses runs (the person is told which line) instead of being ignored.

use crate::gitlab::AccessLevel;
use std::collections::BTreeMap;

/// Where the policy file is, on the project's default branch.
pub const POLICY_PATH: &str = ".gitlab/chatops.yml";
/// How long an approval request waits when the file does not say.
pub const DEFAULT_EXPIRY_MINUTES: u32 = 60;
/// The longest an approval request may wait (the run's `response_url` lasts 30 minutes, the
/// card is updated with the bot token after that; a day keeps stale requests out).
pub const MAX_EXPIRY_MINUTES: u32 = 24 * 60;

/// A GitLab role, as the policy names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Guest,
        Role::Reporter,
        Role::Developer,
        Role::Maintainer,
        Role::Owner,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Guest => "guest",
            Role::Reporter => "reporter",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Owner => "owner",
        }
    }

    /// How GitLab names it.
    pub fn label(&self) -> &'static str {
        match self {
            Role::Guest => "Guest",
            Role::Reporter => "Reporter",
            Role::Developer => "Developer",
            Role::Maintainer => "Maintainer",
            Role::Owner => "Owner",
        }
    }

    pub fn access(&self) -> AccessLevel {
        match self {
            Role::Guest => AccessLevel::GUEST,
            Role::Reporter => AccessLevel::REPORTER,
            Role::Developer => AccessLevel::DEVELOPER,
            Role::Maintainer => AccessLevel::MAINTAINER,
            Role::Owner => AccessLevel::OWNER,
        }
    }

    /// Whether someone with `access` on the project has this role or a higher one.
    pub fn allows(&self, access: Option<AccessLevel>) -> bool {
        access.is_some_and(|a| a >= self.access())
    }

    fn parse(s: &str) -> Option<Role> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }
}

/// What the policy says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPolicy {
    pub description: Option<String>,
    /// How many other people must approve a run before its pipeline exists (0 or 1).
    pub approvals: u32,
    /// Whether the person who asked may approve their own run (default: no).
    pub requester_can_approve: bool,
    /// The role needed to ask for a run (`None`: whatever GitLab lets the person do).
    pub min_role_to_request: Option<Role>,
    /// The role needed to approve (default: Developer, who could run the job themselves).
    pub min_role_to_approve: Role,
    /// The channels (ids or names) the job may be asked from; empty: any.
    pub channels: Vec<String>,
    /// How long an approval request waits before it ends.
    pub approval_expires_minutes: u32,
}

impl Default for JobPolicy {
    fn default() -> Self {
        Self {
            description: None,
            approvals: 0,
            requester_can_approve: false,
            min_role_to_request: None,
            min_role_to_approve: Role::Developer,
            channels: Vec::new(),
            approval_expires_minutes: DEFAULT_EXPIRY_MINUTES,
        }
    }
}

impl JobPolicy {
    pub fn needs_approval(&self) -> bool {
        self.approvals > 0
    }

    /// Whether the job may be asked for in this channel (by id or by name).
    pub fn allows_channel(&self, channel_id: &str, channel_name: &str) -> bool {
        self.channels.is_empty()
            || self.channels.iter().any(|c| {
                c == channel_id || c.trim_start_matches('#').eq_ignore_ascii_case(channel_name)
            })
    }
}

/// A project's policy: the jobs it names. A job it does not name has no policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub jobs: BTreeMap<String, JobPolicy>,
}

impl Policy {
    pub fn job(&self, name: &str) -> Option<&JobPolicy> {
        self.jobs.get(name)
    }
}

/// Why a policy file is refused: the line (1-based) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{POLICY_PATH} line {line}: {reason}")]
pub struct PolicyError {
    pub line: usize,
    pub reason: String,
}

fn bad(line: usize, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        line,
        reason: reason.into(),
    }
}

/// One meaningful line: number, indentation, content without comment.
struct Line<'a> {
    no: usize,
    indent: usize,
    text: &'a str,
}

/// The content before a `#` comment (a `#` that starts the line or follows a space, outside
/// quotes), right-trimmed.
fn strip_comment(s: &str) -> &str {
    let mut quote: Option<char> = None;
    // What came before: a quote opens a value only at its start (after a space, `[` or `,`),
    // so the apostrophe in `don't` is text.
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' && prev == ' ' => return s[..i].trim_end(),
            None if (c == '"' || c == '\'') && matches!(prev, ' ' | '[' | ',') => quote = Some(c),
            None => {}
        }
        prev = c;
    }
    s.trim_end()
}

fn lines(text: &str) -> Result<Vec<Line<'_>>, PolicyError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let body = strip_comment(raw);
        if body.trim().is_empty() {
            continue;
        }
        let indent = body.len() - body.trim_start_matches(' ').len();
        if body[indent..].starts_with('\t') || body[..indent].contains('\t') {
            return Err(bad(no, "tabs are not allowed for indentation; use spaces"));
        }
        if no == 1 && body.trim() == "---" {
            continue;
        }
        out.push(Line {
            no,
            indent,
            text: body[indent..].trim_end(),
        });
    }
    Ok(out)
}

/// `key: value` → (key, value); `key:` → (key, "").
fn key_value(line: &Line<'_>) -> Result<(String, String), PolicyError> {
    let t = line.text;
    if t.starts_with('-') {
        return Err(bad(line.no, "a list item is not expected here"));
    }
    let (key, value) = match t.find(": ") {
        Some(i) => (&t[..i], t[i + 2..].trim()),
        None if t.ends_with(':') => (&t[..t.len() - 1], ""),
        None => return Err(bad(line.no, format!("expected `key: value`, found {t:?}"))),
    };
    let key = scalar(key.trim(), line.no)?;
    if key.is_empty() {
        return Err(bad(line.no, "empty key"));
    }
    Ok((key, value.to_owned()))
}

/// A plain, 'single' or "double" quoted scalar.
fn scalar(s: &str, no: usize) -> Result<String, PolicyError> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('\'') {
        let Some(inner) = inner.strip_suffix('\'') else {
            return Err(bad(no, "unterminated 'quoted' value"));
        };
        return Ok(inner.replace("''", "'"));
    }
    if let Some(inner) = s.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return Err(bad(no, "unterminated \"quoted\" value"));
        };
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    return Err(bad(
                        no,
                        format!("the escape \\{other} is not supported in this file"),
                    ))
                }
                None => return Err(bad(no, "a value ends with a lone backslash")),
            }
        }
        return Ok(out);
    }
    if let Some(c) = s.chars().next() {
        if matches!(c, '&' | '*' | '!' | '|' | '>' | '{' | '@' | '`' | '%') {
            return Err(bad(
                no,
                format!("{s:?}: anchors, tags, block scalars and flow mappings are not supported in this file"),
            ));
        }
    }
    Ok(s.to_owned())
}

/// `[a, "b"]` → items (no nesting).
fn flow_list(s: &str, no: usize) -> Result<Vec<String>, PolicyError> {
    let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return Err(bad(no, format!("expected a list like [a, b], found {s:?}")));
    };
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in inner.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c);
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            None if c == ',' => items.push(std::mem::take(&mut cur)),
            None if c == '[' || c == ']' => {
                return Err(bad(no, "nested lists are not supported in this file"))
            }
            None => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(bad(no, "unterminated quoted value in a list"));
    }
    if !cur.trim().is_empty() || !items.is_empty() {
        items.push(cur);
    }
    items
        .iter()
        .map(|i| {
            let v = scalar(i, no)?;
            if v.is_empty() {
                Err(bad(no, "empty list item"))
            } else {
                Ok(v)
            }
        })
        .collect()
}

fn parse_bool(v: &str, no: usize, key: &str) -> Result<bool, PolicyError> {
    match v {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        _ => Err(bad(no, format!("{key} must be true or false, not {v:?}"))),
    }
}

fn parse_role(v: &str, no: usize, key: &str) -> Result<Role, PolicyError> {
    Role::parse(v).ok_or_else(|| {
        bad(
            no,
            format!(
                "{key} must be one of guest, reporter, developer, maintainer, owner; not {v:?}"
            ),
        )
    })
}

fn parse_number(v: &str, no: usize, key: &str) -> Result<u32, PolicyError> {
    v.parse::<u32>()
        .map_err(|_| bad(no, format!("{key} must be a whole number, not {v:?}")))
}

/// The job keys this file knows.
const JOB_KEYS: &[&str] = &[
    "description",
    "approvals",
    "requester_can_approve",
    "min_role_to_request",
    "min_role_to_approve",
    "channels",
    "approval_expires_minutes",
];

/// Parse a policy file.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let lines = lines(text)?;
    let mut policy = Policy::default();
    let mut i = 0;
    let mut seen_jobs = false;
    while i < lines.len() {
        let line = &lines[i];
        if line.indent != 0 {
            return Err(bad(line.no, "unexpected indentation"));
        }
        let (key, value) = key_value(line)?;
        if key != "jobs" {
            return Err(bad(
                line.no,
                format!("unknown top-level key {key:?} (this file has only `jobs:`)"),
            ));
        }
        if seen_jobs {
            return Err(bad(line.no, "`jobs:` appears twice"));
        }
        seen_jobs = true;
        if !value.is_empty() && value != "{}" {
            return Err(bad(
                line.no,
                "`jobs:` is followed by the jobs, one per line",
            ));
        }
        i += 1;
        // The jobs: every line until the next top-level one.
        let start = i;
        while i < lines.len() && lines[i].indent > 0 {
            i += 1;
        }
        parse_jobs(&lines[start..i], &mut policy)?;
    }
    Ok(policy)
}

fn parse_jobs(lines: &[Line<'_>], policy: &mut Policy) -> Result<(), PolicyError> {
    let Some(first) = lines.first() else {
        return Ok(());
    };
    let job_indent = first.indent;
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if line.indent != job_indent {
            return Err(bad(line.no, "unexpected indentation (expected a job name)"));
        }
        let (name, value) = key_value(line)?;
        if !value.is_empty() && value != "{}" {
            return Err(bad(
                line.no,
                format!("job {name:?}: its settings go on the lines below it, indented"),
            ));
        }
        if policy.jobs.contains_key(&name) {
            return Err(bad(line.no, format!("job {name:?} appears twice")));
        }
        i += 1;
        let start = i;
        while i < lines.len() && lines[i].indent > job_indent {
            i += 1;
        }
        let job = parse_job(&name, &lines[start..i])?;
        policy.jobs.insert(name, job);
    }
    Ok(())
}

fn parse_job(name: &str, lines: &[Line<'_>]) -> Result<JobPolicy, PolicyError> {
    let mut job = JobPolicy::default();
    let Some(first) = lines.first() else {
        return Ok(job);
    };
    let key_indent = first.indent;
    let mut seen: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        let no = line.no;
        if line.indent != key_indent {
            return Err(bad(no, "unexpected indentation"));
        }
        let (key, value) = key_value(line)?;
        if !JOB_KEYS.contains(&key.as_str()) {
            return Err(bad(
                no,
                format!(
                    "job {name:?}: unknown key {key:?} (known: {})",
                    JOB_KEYS.join(", ")
                ),
            ));
        }
        if seen.contains(&key) {
            return Err(bad(no, format!("job {name:?}: {key} appears twice")));
        }
        seen.push(key.clone());
        i += 1;
        // A block list: `- item` lines below `channels:`, deeper or at the key's indentation.
        let mut items = Vec::new();
        while key == "channels"
            && value.is_empty()
            && i < lines.len()
            && lines[i].indent >= key_indent
            && lines[i].text.starts_with('-')
        {
            let item = lines[i].text[1..].trim();
            if item.is_empty() || !lines[i].text[1..].starts_with(' ') {
                return Err(bad(lines[i].no, "expected `- <channel>`"));
            }
            items.push(scalar(item, lines[i].no)?);
            i += 1;
        }
        if value.is_empty() && key != "channels" {
            return Err(bad(no, format!("job {name:?}: {key} has no value")));
        }
        let v = if key == "description" {
            value.clone()
        } else {
            scalar(&value, no)?
        };
        match key.as_str() {
            "description" => {
                let d = scalar(&v, no)?;
                if d.chars().count() > 200 {
                    return Err(bad(
                        no,
                        "the description is one line of at most 200 characters",
                    ));
                }
                job.description = Some(d).filter(|d| !d.is_empty());
            }
            "approvals" => {
                let n = parse_number(&v, no, &key)?;
                if n > 1 {
                    // One approver is what the run record and its card hold today.
                    return Err(bad(
                        no,
                        format!("approvals: {n} is not supported yet (0 or 1)"),
                    ));
                }
                job.approvals = n;
            }
            "requester_can_approve" => job.requester_can_approve = parse_bool(&v, no, &key)?,
            "min_role_to_request" => job.min_role_to_request = Some(parse_role(&v, no, &key)?),
            "min_role_to_approve" => job.min_role_to_approve = parse_role(&v, no, &key)?,
            "approval_expires_minutes" => {
                let n = parse_number(&v, no, &key)?;
                if n == 0 || n > MAX_EXPIRY_MINUTES {
                    return Err(bad(
                        no,
                        format!("{key} must be between 1 and {MAX_EXPIRY_MINUTES}"),
                    ));
                }
                job.approval_expires_minutes = n;
            }
            "channels" => {
                job.channels = if value.is_empty() {
                    items
                } else {
                    flow_list(&value, no)?
                };
            }
            _ => unreachable!("checked against JOB_KEYS"),
        }
    }
    if job.min_role_to_approve < Role::Reporter && job.needs_approval() {
        // A Guest cannot see the pipeline it would let run.
        return Err(bad(
            first.no,
            format!("job {name:?}: min_role_to_approve must be reporter or higher"),
        ));
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
# who may deploy
jobs:
  deploy:
    description: Deploy main to production   # shown by help
    approvals: 1
    requester_can_approve: false
    min_role_to_request: developer
    min_role_to_approve: Maintainer
    channels: [C0123, \"ops\", 'on-call']
    approval_expires_minutes: 30
  restart:
    description: \"Restart a service # not a comment\"
    channels:
      - C1
      - ops
  status: {}
";

    #[test]
    fn a_full_file_reads_into_typed_rules() {
        let p = parse(FULL).unwrap();
        let deploy = p.job("deploy").unwrap();
        assert_eq!(
            deploy,
            &JobPolicy {
                description: Some("Deploy main to production".into()),
                approvals: 1,
                requester_can_approve: false,
                min_role_to_request: Some(Role::Developer),
                min_role_to_approve: Role::Maintainer,
                channels: vec!["C0123".into(), "ops".into(), "on-call".into()],
                approval_expires_minutes: 30,
            }
        );
        assert!(deploy.needs_approval());
        let restart = p.job("restart").unwrap();
        assert_eq!(
            restart.description.as_deref(),
            Some("Restart a service # not a comment")
        );
        assert_eq!(restart.channels, vec!["C1".to_owned(), "ops".to_owned()]);
        assert!(!restart.needs_approval());
        assert_eq!(p.job("status"), Some(&JobPolicy::default()));
        assert_eq!(p.job("other"), None);
    }

    #[test]
    fn defaults_and_empty_files() {
        assert_eq!(parse("").unwrap(), Policy::default());
        assert_eq!(parse("# nothing\n\n").unwrap(), Policy::default());
        assert_eq!(parse("---\njobs:\n").unwrap(), Policy::default());
        let p = parse("jobs:\n  deploy:\n    approvals: 1\n").unwrap();
        let d = p.job("deploy").unwrap();
        assert!(!d.requester_can_approve);
        assert_eq!(d.min_role_to_approve, Role::Developer);
        assert_eq!(d.approval_expires_minutes, DEFAULT_EXPIRY_MINUTES);
        assert!(d.channels.is_empty());
        assert!(d.allows_channel("C9", "anything"));
    }

    #[test]
    fn channels_match_by_id_or_name() {
        let p = parse("jobs:\n  d:\n    channels: [C1, '#ops']\n").unwrap();
        let d = p.job("d").unwrap();
        assert!(d.allows_channel("C1", "random"));
        assert!(d.allows_channel("C2", "ops"));
        assert!(!d.allows_channel("C2", "dev"));
    }

    #[test]
    fn roles_compare_with_gitlab_access() {
        assert!(Role::Developer.allows(Some(AccessLevel::MAINTAINER)));
        assert!(Role::Developer.allows(Some(AccessLevel::DEVELOPER)));
        assert!(!Role::Developer.allows(Some(AccessLevel::REPORTER)));
        assert!(!Role::Guest.allows(None));
    }

    /// Every refusal names the line it is about.
    #[test]
    fn bad_files_are_refused_naming_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("jobz:\n", 1, "unknown top-level key \"jobz\""),
            (
                "jobs:\n  d:\n    approval: 1\n",
                3,
                "unknown key \"approval\"",
            ),
            ("jobs:\n  d:\n    approvals: two\n", 3, "whole number"),
            ("jobs:\n  d:\n    approvals: 2\n", 3, "not supported yet"),
            ("jobs:\n  d:\n    approvals: -1\n", 3, "whole number"),
            (
                "jobs:\n  d:\n    requester_can_approve: yes\n",
                3,
                "true or false",
            ),
            (
                "jobs:\n  d:\n    min_role_to_approve: admin\n",
                3,
                "must be one of",
            ),
            ("jobs:\n  d:\n    channels: ops\n", 3, "expected a list"),
            ("jobs:\n  d:\n    channels: [a, [b]]\n", 3, "nested lists"),
            (
                "jobs:\n  d:\n    channels:\n      -ops\n",
                4,
                "expected `- <channel>`",
            ),
            (
                "jobs:\n  d:\n    approvals: 1\n    approvals: 0\n",
                4,
                "appears twice",
            ),
            ("jobs:\n  d:\n    approvals:\n", 3, "has no value"),
            ("jobs:\n  d:\n\tapprovals: 1\n", 3, "tabs"),
            (
                "jobs:\n  d:\n    approvals: 1\n   channels: [a]\n",
                4,
                "indentation",
            ),
            ("jobs:\n  d:\n  d:\n", 3, "appears twice"),
            ("jobs:\n  d: deploy\n", 2, "settings go on the lines below"),
            ("jobs:\n  d:\n    description: &a x\n", 3, "anchors"),
            ("jobs:\n  d:\n    description: \"open\n", 3, "unterminated"),
            (
                "jobs:\n  d:\n    approval_expires_minutes: 0\n",
                3,
                "between 1 and",
            ),
            (
                "jobs:\n  d:\n    approvals: 1\n    min_role_to_approve: guest\n",
                3,
                "reporter or higher",
            ),
            ("jobs:\n  d:\n    just text\n", 3, "expected `key: value`"),
            ("  jobs:\n", 1, "unexpected indentation"),
        ];
        for (text, line, reason) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
            assert!(
                e.to_string().starts_with(".gitlab/chatops.yml line "),
                "{e}"
            );
        }
    }
}
