//! The audit log: who asked for what, what was refused and why, which pipeline ran as which
//! GitLab user, and how it ended. One entry per step, append-only.
//!
//! - `AuditEntry`: one step, flat (every field a column in the table and a field of the log
//!   line), its kind an `AuditEvent` that grows with the product (approvals, cancels, plays
//!   and retries come with the interactive commands).
//! - `AuditLog`: the port. `append` never overwrites (the DynamoDB adapter writes with
//!   `attribute_not_exists`, and the functions' IAM policy allows `PutItem` only);
//!   `read` serves `chatops audit`. `MemoryAudit` is the embedded backend (local mode: kept
//!   in memory like the rest); `LogOnly` is the deployment without `AUDIT_TABLE`.
//! - `Audit`: what the use cases hold. `record` writes the entry as one structured log line
//!   (target `audit`, every field its own), then appends it within a short time bound. An
//!   audit write that fails or is slow never fails or blocks a run: it is logged (the log
//!   line above it is then the record) and the run goes on.
//!
//! Inputs can be sensitive (`CHAT_INPUT` may hold a ticket text, a host name, a token typed
//! by mistake), so they are kept as `AUDIT_INPUT` says: `hash` (default, SHA-256), `truncate`
//! (the first 32 characters) or `full`.

use crate::config::{ConfigError, Env};
use crate::ids::{ChannelId, ChatUserId, JobId, PipelineId, RequestId, TeamId};
use crate::policy::Role;
use crate::run::{Platform, RunRecord, RunRequest, RunResult, Verdict};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long audit entries are kept by default (the table's TTL): a little over a year, so a
/// yearly review still finds last year's same month.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;
/// The longest a run waits for its audit write. A healthy `PutItem` takes milliseconds; past
/// this the entry lives in its log line only and the run goes on.
pub const WRITE_BUDGET: Duration = Duration::from_millis(1000);
/// `AUDIT_INPUT=truncate` keeps this many characters.
pub const TRUNCATE_CHARS: usize = 32;

/// How an input (`CHAT_INPUT`) is kept in the audit log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InputMode {
    /// `sha256:<hex>`: proves what was typed when you have it, shows nothing otherwise.
    /// Short, guessable inputs (`production`) can be found by trying: use `truncate` or
    /// `full` only where inputs are not secret.
    #[default]
    Hash,
    /// The first [`TRUNCATE_CHARS`] characters, then `…`.
    Truncate,
    /// As typed.
    Full,
}

impl InputMode {
    pub fn parse(s: &str) -> Option<InputMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hash" => Some(InputMode::Hash),
            "truncate" => Some(InputMode::Truncate),
            "full" => Some(InputMode::Full),
            _ => None,
        }
    }

    /// The input as this mode keeps it; `None` for no input.
    pub fn keep(&self, input: &str) -> Option<String> {
        if input.is_empty() {
            return None;
        }
        Some(match self {
            InputMode::Hash => format!("sha256:{}", hex::encode(Sha256::digest(input))),
            InputMode::Truncate if input.chars().count() > TRUNCATE_CHARS => {
                let head: String = input.chars().take(TRUNCATE_CHARS).collect();
                format!("{head}…")
            }
            InputMode::Truncate | InputMode::Full => input.to_owned(),
        })
    }
}

/// The audit configuration every function reads (part of each `…Config::ENV`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// `AUDIT_TABLE`: the DynamoDB table; unset → entries are log lines only.
    pub table: Option<String>,
    /// `AUDIT_INPUT`: `hash` (default), `truncate` or `full`.
    pub input: InputMode,
    /// `AUDIT_RETENTION_DAYS` (default 400): each entry's TTL.
    pub retention_days: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            table: None,
            input: InputMode::Hash,
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

impl AuditSettings {
    pub const ENV: &'static [&'static str] =
        &["AUDIT_TABLE", "AUDIT_INPUT", "AUDIT_RETENTION_DAYS"];

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let input = match env.get("AUDIT_INPUT") {
            None => InputMode::Hash,
            Some(v) => InputMode::parse(v).ok_or_else(|| ConfigError::Invalid {
                name: "AUDIT_INPUT".into(),
                reason: format!("{v:?} is not hash, truncate or full"),
            })?,
        };
        let retention_days: u32 = env.parse_or("AUDIT_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)?;
        if retention_days == 0 {
            return Err(ConfigError::Invalid {
                name: "AUDIT_RETENTION_DAYS".into(),
                reason: "must be at least 1 day".into(),
            });
        }
        Ok(Self {
            table: env.get("AUDIT_TABLE").map(|t| t.trim().to_owned()),
            input,
            retention_days,
        })
    }
}

/// What happened. Serialized flat into the entry with its kind as `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// An authenticated slash command was read (`run`, `help`, `status`, …).
    CommandReceived { command: String },
    /// Not done, and why (`reason` a stable code, `detail` what the person was told).
    Refused {
        reason: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    /// GitLab created the pipeline; `as_person` when with the person's own token (OAuth),
    /// else with the bot token. `ran_as` is the GitLab user GitLab created it as (the
    /// person, or the bot's user); the entry's `gitlab_user` is who asked, as linked.
    PipelineCreated {
        as_person: bool,
        manual: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ran_as: Option<String>,
    },
    /// The job ended and its reply was recorded.
    Result {
        result: RunResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_secs: Option<f64>,
    },
    /// The person connected their GitLab account (OAuth); the entry's `gitlab_user` is it.
    Linked,
    /// The person removed their link; `revoked` when GitLab confirmed the tokens revoked.
    Unlinked { revoked: bool },
    /// Four-eyes: the run waits for someone else's approval; no pipeline exists yet.
    ApprovalRequested {
        /// The role an approver needs (`maintainer`, …).
        min_role: Role,
        /// Unix seconds when the request ends undecided.
        expires_at: u64,
    },
    /// Four-eyes: the request was decided. `by` is who decided (none for an expiry), with
    /// their GitLab username when they approved; the entry's user is who asked.
    Decided {
        verdict: Verdict,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ChatUserId>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        by_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by_gitlab_user: Option<String>,
    },
    /// A kind this version does not know (written by a newer one).
    #[serde(other)]
    Other,
}

impl AuditEvent {
    /// The `event` value.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::CommandReceived { .. } => "command_received",
            AuditEvent::Refused { .. } => "refused",
            AuditEvent::PipelineCreated { .. } => "pipeline_created",
            AuditEvent::Result { .. } => "result",
            AuditEvent::Linked => "linked",
            AuditEvent::Unlinked { .. } => "unlinked",
            AuditEvent::ApprovalRequested { .. } => "approval_requested",
            AuditEvent::Decided { .. } => "decided",
            AuditEvent::Other => "other",
        }
    }

    /// The event's own facts in one short phrase (`reason`, `result`…), for tables.
    pub fn summary(&self) -> String {
        match self {
            AuditEvent::CommandReceived { command } => command.clone(),
            AuditEvent::Refused { reason, .. } => reason.clone(),
            AuditEvent::PipelineCreated {
                as_person,
                manual,
                ran_as,
            } => format!(
                "as {}{}",
                match (ran_as, as_person) {
                    (Some(u), _) => format!("@{u}"),
                    (None, true) => "the person".to_owned(),
                    (None, false) => "the bot".to_owned(),
                },
                if *manual { ", manual" } else { "" }
            ),
            AuditEvent::Result {
                result,
                duration_secs,
            } => match duration_secs {
                Some(d) => format!("{} in {:.0}s", result.as_str(), d),
                None => result.as_str().to_owned(),
            },
            AuditEvent::Linked => "GitLab account connected".to_owned(),
            AuditEvent::Unlinked { revoked: true } => "tokens revoked".to_owned(),
            AuditEvent::Unlinked { revoked: false } => "revocation not confirmed".to_owned(),
            AuditEvent::ApprovalRequested { min_role, .. } => {
                format!("needs a {}", min_role.label())
            }
            AuditEvent::Decided {
                verdict,
                by_name,
                by_gitlab_user,
                ..
            } => match (by_gitlab_user, by_name.is_empty()) {
                (Some(u), _) => format!("{} by @{u}", verdict.as_str()),
                (None, false) => format!("{} by {by_name}", verdict.as_str()),
                (None, true) => verdict.as_str().to_owned(),
            },
            AuditEvent::Other => String::new(),
        }
    }
}

/// One audit entry. Absent fields are left out of the table item and the log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `<unix millis, 13 digits>-<16 hex>`: unique, and sorts by time.
    pub id: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_user: Option<ChatUserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_user_name: Option<String>,
    /// The GitLab user the chat user is linked to (who the pipeline ran for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The input as `AUDIT_INPUT` keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The GitLab project (`group/project`, or its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<PipelineId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

impl AuditEntry {
    /// A new entry stamped now, with a fresh id.
    pub fn new(event: AuditEvent) -> Self {
        let at_ms = now_ms();
        Self {
            id: entry_id(at_ms),
            at_ms,
            event,
            platform: None,
            team: None,
            channel: None,
            channel_name: None,
            chat_user: None,
            chat_user_name: None,
            gitlab_user: None,
            job: None,
            input: None,
            project: None,
            pipeline_id: None,
            job_id: None,
            request_id: None,
        }
    }

    /// One JSON object, for `chatops audit --format json` and the log line.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Unix milliseconds, never the same twice in this process: entries written one after the
/// other (a run's steps in one invocation) keep their order even within one millisecond.
pub fn now_ms() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = wall.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

fn entry_id(at_ms: u64) -> String {
    let mut rnd = [0u8; 8];
    // Without the OS's randomness the time alone still orders; the condition on the write
    // refuses a collision rather than overwriting.
    let _ = getrandom::getrandom(&mut rnd);
    format!("{at_ms:013}-{}", hex::encode(rnd))
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The table cannot be reached (throttling, timeouts, permissions).
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// An entry with this id exists: nothing was overwritten.
    #[error("audit entry {0} exists already")]
    Exists(String),
    /// A stored entry that cannot be read.
    #[error("audit entry is corrupt: {0}")]
    Corrupt(String),
    /// This deployment keeps no table (`AUDIT_TABLE` unset): the log lines are the record.
    #[error("no audit table is configured (AUDIT_TABLE); the entries are in the functions' logs")]
    NoTable,
}

/// Where audit entries are kept.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync {
    /// Add one entry; never replaces one (an existing id is `Exists`).
    async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError>;
    /// The entries from `since_ms` up to `until_ms` (Unix milliseconds), oldest first.
    async fn read(&self, since_ms: u64, until_ms: u64) -> Result<Vec<AuditEntry>, AuditError>;
}

/// The embedded audit log (local mode, tests): in this process's memory, lost on exit.
#[derive(Default)]
pub struct MemoryAudit {
    entries: Mutex<Vec<AuditEntry>>,
}

impl MemoryAudit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        let mut v = self.entries.lock().map(|e| e.clone()).unwrap_or_default();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

#[async_trait::async_trait]
impl AuditLog for MemoryAudit {
    async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let mut g = self
            .entries
            .lock()
            .map_err(|_| AuditError::Unavailable("memory audit lock poisoned".into()))?;
        if g.iter().any(|e| e.id == entry.id) {
            return Err(AuditError::Exists(entry.id.clone()));
        }
        g.push(entry.clone());
        Ok(())
    }

    async fn read(&self, since_ms: u64, until_ms: u64) -> Result<Vec<AuditEntry>, AuditError> {
        Ok(self
            .entries()
            .into_iter()
            .filter(|e| e.at_ms >= since_ms && e.at_ms <= until_ms)
            .collect())
    }
}

/// No table: every entry is its log line, and there is nothing to read back.
pub struct LogOnly;

#[async_trait::async_trait]
impl AuditLog for LogOnly {
    async fn append(&self, _entry: &AuditEntry) -> Result<(), AuditError> {
        Ok(())
    }

    async fn read(&self, _since: u64, _until: u64) -> Result<Vec<AuditEntry>, AuditError> {
        Err(AuditError::NoTable)
    }
}

/// What the ingress, the dispatcher and completion hold: where entries go and how inputs are
/// kept. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    log: Arc<dyn AuditLog>,
    input: InputMode,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl Default for Audit {
    /// Log lines only, inputs hashed.
    fn default() -> Self {
        Self::new(Arc::new(LogOnly), InputMode::Hash)
    }
}

impl Audit {
    pub fn new(log: Arc<dyn AuditLog>, input: InputMode) -> Self {
        Self { log, input }
    }

    pub fn log(&self) -> &Arc<dyn AuditLog> {
        &self.log
    }

    /// An entry about one chat user in one channel.
    #[allow(clippy::too_many_arguments)]
    pub fn of_chat(
        &self,
        event: AuditEvent,
        platform: Platform,
        team: &str,
        channel: &str,
        channel_name: &str,
        user: &str,
        user_name: &str,
    ) -> AuditEntry {
        let mut e = AuditEntry::new(event);
        e.platform = Some(platform);
        e.team = Some(TeamId::new(team));
        e.channel = Some(ChannelId::new(channel));
        e.channel_name = Some(channel_name.to_owned()).filter(|n| !n.is_empty());
        e.chat_user = Some(ChatUserId::new(user));
        e.chat_user_name = Some(user_name.to_owned()).filter(|n| !n.is_empty());
        e
    }

    /// The input, kept as configured.
    pub fn input(&self, input: &str) -> Option<String> {
        self.input.keep(input)
    }

    /// An entry about a queued request.
    pub fn of_request(&self, event: AuditEvent, req: &RunRequest) -> AuditEntry {
        let mut e = self.of_chat(
            event,
            req.platform,
            req.team_id.as_str(),
            req.channel_id.as_str(),
            &req.channel_name,
            req.user_id.as_str(),
            &req.user_name,
        );
        e.job = Some(req.job.clone()).filter(|j| !j.is_empty());
        e.input = self.input(&req.input);
        e.request_id = Some(req.request_id.clone());
        e
    }

    /// An entry about a run: its request and what the dispatcher learned.
    pub fn of_run(&self, event: AuditEvent, run: &RunRecord) -> AuditEntry {
        let mut e = self.of_request(event, &run.request);
        e.gitlab_user = run.gitlab_user.clone();
        e.project = run
            .project_path
            .clone()
            .or_else(|| run.project_id.map(|p| p.to_string()));
        e.pipeline_id = run.pipeline_id;
        e.job_id = run.job_id;
        e
    }

    /// Write the entry: its log line first (always), then the log, within [`WRITE_BUDGET`].
    /// Never fails: a lost table write is logged, and the log line is the record.
    pub async fn record(&self, entry: AuditEntry) {
        log_line(&entry);
        match tokio::time::timeout(WRITE_BUDGET, self.log.append(&entry)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                target: "audit",
                audit_id = %entry.id,
                error = %crate::report::chain(&e),
                "audit entry not stored in the audit table; its log line is the record"
            ),
            Err(_) => tracing::error!(
                target: "audit",
                audit_id = %entry.id,
                budget_ms = WRITE_BUDGET.as_millis() as u64,
                "audit table too slow; its log line is the record (the write may still land)"
            ),
        }
    }
}

/// The entry as one structured log line (target `audit`): with the functions' JSON log
/// format every field is a field CloudWatch Logs Insights can filter on
/// (`filter fields.event = "refused"`).
fn log_line(e: &AuditEntry) {
    let mut f = EventFields::default();
    match &e.event {
        AuditEvent::CommandReceived { command } => f.command = Some(command),
        AuditEvent::Refused { reason, detail } => {
            f.reason = Some(reason);
            f.detail = Some(detail);
        }
        AuditEvent::PipelineCreated {
            as_person,
            manual,
            ran_as,
        } => {
            f.as_person = Some(*as_person);
            f.manual = Some(*manual);
            f.ran_as = ran_as.as_deref();
        }
        AuditEvent::Result {
            result,
            duration_secs,
        } => {
            f.result = Some(result.as_str());
            f.duration_secs = *duration_secs;
        }
        AuditEvent::Unlinked { revoked } => {
            f.result = Some(if *revoked { "revoked" } else { "unconfirmed" });
        }
        AuditEvent::ApprovalRequested { min_role, .. } => f.reason = Some(min_role.as_str()),
        AuditEvent::Decided {
            verdict,
            by_name,
            by_gitlab_user,
            ..
        } => {
            f.result = Some(verdict.as_str());
            f.detail = Some(by_gitlab_user.as_deref().unwrap_or(by_name));
        }
        AuditEvent::Linked | AuditEvent::Other => {}
    }
    tracing::info!(
        target: "audit",
        audit_id = %e.id,
        at_ms = e.at_ms,
        event = e.event.kind(),
        platform = e.platform.map(|p| p.as_str()),
        team = e.team.as_ref().map(TeamId::as_str),
        channel = e.channel.as_ref().map(ChannelId::as_str),
        channel_name = e.channel_name.as_deref(),
        chat_user = e.chat_user.as_ref().map(ChatUserId::as_str),
        chat_user_name = e.chat_user_name.as_deref(),
        gitlab_user = e.gitlab_user.as_deref(),
        job = e.job.as_deref(),
        input = e.input.as_deref(),
        project = e.project.as_deref(),
        pipeline_id = e.pipeline_id.map(|p| p.0),
        job_id = e.job_id.map(|j| j.0),
        request_id = e.request_id.as_ref().map(RequestId::as_str),
        command = f.command,
        reason = f.reason,
        detail = f.detail,
        as_person = f.as_person,
        manual = f.manual,
        ran_as = f.ran_as,
        result = f.result,
        duration_secs = f.duration_secs,
        "audit"
    );
}

/// The event's own fields, for the log line.
#[derive(Default)]
struct EventFields<'a> {
    command: Option<&'a str>,
    reason: Option<&'a str>,
    detail: Option<&'a str>,
    as_person: Option<bool>,
    manual: Option<bool>,
    ran_as: Option<&'a str>,
    result: Option<&'a str>,
    duration_secs: Option<f64>,
}

/// `chatops audit`'s filters: every one given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub job: Option<String>,
    /// A chat user id or name, or a GitLab username.
    pub user: Option<String>,
    /// A channel id or name (`#ops` or `ops`).
    pub channel: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        let same = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
        let job = self
            .job
            .as_deref()
            .is_none_or(|j| e.job.as_deref() == Some(j));
        let user = self.user.as_deref().map(|u| u.trim_start_matches('@'));
        let user = user.is_none_or(|u| {
            same(e.chat_user.as_ref().map(ChatUserId::as_str), u)
                || same(e.chat_user_name.as_deref(), u)
                || same(e.gitlab_user.as_deref(), u)
        });
        let channel = self.channel.as_deref().map(|c| c.trim_start_matches('#'));
        let channel = channel.is_none_or(|c| {
            same(e.channel.as_ref().map(ChannelId::as_str), c) || same(e.channel_name.as_deref(), c)
        });
        job && user && channel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_kept_as_configured() {
        let table: &[(InputMode, &str, Option<&str>)] = &[
            (InputMode::Hash, "", None),
            (
                InputMode::Hash,
                "abc",
                // SHA-256("abc"), FIPS 180-2's example.
                Some("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ),
            (InputMode::Truncate, "", None),
            (InputMode::Truncate, "short", Some("short")),
            (
                InputMode::Truncate,
                "0123456789012345678901234567890123456789",
                Some("01234567890123456789012345678901…"),
            ),
            (InputMode::Full, "a\nb <!channel>", Some("a\nb <!channel>")),
        ];
        for (mode, input, want) in table {
            assert_eq!(mode.keep(input).as_deref(), *want, "{mode:?} {input:?}");
        }
        assert_ne!(InputMode::Hash.keep("a"), InputMode::Hash.keep("b"));
    }

    #[test]
    fn settings_from_env() {
        let s = AuditSettings::from_env(&Env::default()).unwrap();
        assert_eq!(s, AuditSettings::default());
        assert_eq!(s.retention_days, 400);
        let s = AuditSettings::from_env(&Env::from_pairs([
            ("AUDIT_TABLE", "audit"),
            ("AUDIT_INPUT", "Truncate"),
            ("AUDIT_RETENTION_DAYS", "30"),
        ]))
        .unwrap();
        assert_eq!(s.table.as_deref(), Some("audit"));
        assert_eq!(s.input, InputMode::Truncate);
        assert_eq!(s.retention_days, 30);
        for (k, v) in [
            ("AUDIT_INPUT", "plain"),
            ("AUDIT_RETENTION_DAYS", "0"),
            ("AUDIT_RETENTION_DAYS", "a year"),
        ] {
            let err = AuditSettings::from_env(&Env::from_pairs([(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    #[test]
    fn ids_sort_by_time_and_never_repeat() {
        let a = AuditEntry::new(AuditEvent::Other);
        let b = AuditEntry::new(AuditEvent::Other);
        assert!(a.at_ms < b.at_ms, "strictly increasing in one process");
        assert!(a.id < b.id);
        assert_eq!(a.id.len(), 13 + 1 + 16);
    }

    #[test]
    fn entries_are_flat_json_and_read_back() {
        let mut e = AuditEntry::new(AuditEvent::Refused {
            reason: "no_such_job".into(),
            detail: "There is no job named `x`".into(),
        });
        e.job = Some("x".into());
        e.pipeline_id = Some(PipelineId(3));
        let v: serde_json::Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(v["event"], "refused");
        assert_eq!(v["reason"], "no_such_job");
        assert_eq!(v["pipeline_id"], 3);
        assert!(v.get("input").is_none(), "absent fields are left out: {v}");
        let back: AuditEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);

        let r = AuditEntry::new(AuditEvent::Result {
            result: RunResult::Failed,
            duration_secs: Some(12.5),
        });
        let back: AuditEntry = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(back.event, r.event);
        assert_eq!(back.event.summary(), "failed in 12s");

        // A kind from a newer version still reads.
        let newer = r#"{"id":"1","at_ms":1,"event":"approved","job":"deploy"}"#;
        let back: AuditEntry = serde_json::from_str(newer).unwrap();
        assert_eq!(back.event, AuditEvent::Other);
        assert_eq!(back.job.as_deref(), Some("deploy"));
    }

    #[tokio::test]
    async fn memory_audit_appends_only() {
        let log = MemoryAudit::new();
        let e = AuditEntry::new(AuditEvent::Other);
        log.append(&e).await.unwrap();
        assert!(matches!(log.append(&e).await, Err(AuditError::Exists(_))));
        assert_eq!(log.entries(), vec![e.clone()]);
        assert_eq!(log.read(e.at_ms, e.at_ms).await.unwrap().len(), 1);
        assert!(log.read(e.at_ms + 1, u64::MAX).await.unwrap().is_empty());
        assert!(matches!(LogOnly.read(0, 1).await, Err(AuditError::NoTable)));
    }

    /// A table that never answers: the run waits at most `WRITE_BUDGET`, and nothing fails.
    #[tokio::test]
    async fn a_hanging_log_never_blocks_for_long() {
        struct Hangs;
        #[async_trait::async_trait]
        impl AuditLog for Hangs {
            async fn append(&self, _: &AuditEntry) -> Result<(), AuditError> {
                std::future::pending().await
            }
            async fn read(&self, _: u64, _: u64) -> Result<Vec<AuditEntry>, AuditError> {
                Ok(vec![])
            }
        }
        let audit = Audit::new(Arc::new(Hangs), InputMode::Hash);
        let started = std::time::Instant::now();
        audit.record(AuditEntry::new(AuditEvent::Other)).await;
        assert!(started.elapsed() < WRITE_BUDGET + Duration::from_millis(500));
    }

    #[test]
    fn filters_match_ids_names_and_gitlab_users() {
        let audit = Audit::default();
        let mut e = audit.of_chat(
            AuditEvent::CommandReceived {
                command: "run".into(),
            },
            Platform::Slack,
            "T1",
            "C1",
            "ops",
            "U1",
            "alice",
        );
        e.job = Some("deploy".into());
        e.gitlab_user = Some("alice.gl".into());
        let f = |job: Option<&str>, user: Option<&str>, channel: Option<&str>| Filter {
            job: job.map(str::to_owned),
            user: user.map(str::to_owned),
            channel: channel.map(str::to_owned),
        };
        let table: &[(Filter, bool)] = &[
            (Filter::default(), true),
            (f(Some("deploy"), None, None), true),
            (f(Some("Deploy"), None, None), false),
            (f(Some("dep"), None, None), false),
            (f(None, Some("U1"), None), true),
            (f(None, Some("@alice"), None), true),
            (f(None, Some("ALICE.GL"), None), true),
            (f(None, Some("bob"), None), false),
            (f(None, None, Some("C1")), true),
            (f(None, None, Some("#ops")), true),
            (f(None, None, Some("C2")), false),
            (f(Some("deploy"), Some("alice"), Some("ops")), true),
            (f(Some("deploy"), Some("alice"), Some("dev")), false),
        ];
        for (filter, want) in table {
            assert_eq!(filter.matches(&e), *want, "{filter:?}");
        }
    }
}
