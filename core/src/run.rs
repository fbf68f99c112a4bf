//! The run: what a slash command asks for (`RunRequest`, the versioned message on the queue)
//! and what we remember about it (`RunRecord`, the row in the runs table), including how its
//! job ended (`JobOutcome`, for `history`).

use crate::ids::{
    ChannelId, ChatUserId, GitLabUserId, JobId, MessageTs, PipelineId, ProjectId, RequestId, TeamId,
};
use serde::{Deserialize, Serialize};

/// The current version of the queued message. A dispatcher refuses versions it does not know
/// (permanently: retrying will not teach it).
pub const RUN_REQUEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Slack,
    Mattermost,
}

impl Platform {
    pub fn as_str(&self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Mattermost => "mattermost",
        }
    }
}

/// What a queued request asks the dispatcher for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// `run <job> [args]`: one pipeline.
    #[default]
    Run,
    /// `help`: the jobs this channel's project lets chat run (read from GitLab, so answered
    /// by the dispatcher as a follow-up to the ingress's grammar).
    Help,
}

impl RequestKind {
    pub fn is_run(&self) -> bool {
        *self == RequestKind::Run
    }
}

/// One request as the ingress queues it: `run <job> [args]`, or `help` (`kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub version: u32,
    /// Messages written before `help` was queued carry no kind: they are runs. A run is
    /// written without it, so a run message reads the same to every dispatcher version.
    #[serde(default, skip_serializing_if = "RequestKind::is_run")]
    pub kind: RequestKind,
    pub request_id: RequestId,
    pub platform: Platform,
    pub team_id: TeamId,
    #[serde(default)]
    pub team_domain: Option<String>,
    pub channel_id: ChannelId,
    pub channel_name: String,
    pub user_id: ChatUserId,
    pub user_name: String,
    /// The slash command as typed, e.g. `/chatops`, for help texts.
    pub command: String,
    pub job: String,
    /// Everything after the job name, verbatim (newlines kept): becomes `CHAT_INPUT`.
    pub input: String,
    pub response_url: String,
    /// Unix seconds when the ingress received the command (starts the 30-minute window).
    pub received_at: u64,
    /// The base URL the ingress was reached at (`https://<function url host>`): where a
    /// connect link's OAuth callback goes, unless `PUBLIC_BASE_URL` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base: Option<String>,
}

impl RunRequest {
    /// The channel as the runs table indexes it (`by-channel`): `platform#team#channel`, so
    /// two workspaces' channels with the same id never mix.
    pub fn channel_key(&self) -> String {
        channel_key(self.platform, &self.team_id, &self.channel_id)
    }
}

/// `platform#team#channel`: the key `status` and `history` look a channel's runs up by.
pub fn channel_key(platform: Platform, team: &TeamId, channel: &ChannelId) -> String {
    format!("{}#{}#{}", platform.as_str(), team, channel)
}

/// How a run's job ended, as its reply said (`history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    Success,
    Failed,
    Canceled,
    Skipped,
    /// The job no longer exists on GitLab (deleted with its pipeline).
    Gone,
}

impl RunResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Failed => "failed",
            RunResult::Canceled => "canceled",
            RunResult::Skipped => "skipped",
            RunResult::Gone => "gone",
        }
    }
}

/// The job's end, recorded with the reply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub result: RunResult,
    /// GitLab's job duration, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The dispatcher holds a lease on it and is creating the pipeline.
    Dispatching,
    /// The pipeline exists; the job has not finished.
    Running,
    /// The job is `when: manual` and waits for someone to play it.
    WaitingManual,
    /// The final reply was claimed (and sent).
    Replied,
    /// The run ended before a pipeline ran (refused, job missing, cancelled foreign jobs,
    /// approval rejected or expired…); the user was told why.
    Refused,
    /// Four-eyes: the job's policy wants someone else's approval before any pipeline exists.
    /// The sweep ends it when the request expires.
    AwaitingApproval,
}

impl RunStatus {
    /// Runs whose reply is still owed: the sweep looks at these (an approval request: when
    /// it expires).
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            RunStatus::Running | RunStatus::WaitingManual | RunStatus::AwaitingApproval
        )
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub request: RunRequest,
    pub status: RunStatus,
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    #[serde(default)]
    pub project_path: Option<String>,
    #[serde(default)]
    pub project_web_url: Option<String>,
    #[serde(default)]
    pub pipeline_id: Option<PipelineId>,
    #[serde(default)]
    pub pipeline_url: Option<String>,
    #[serde(default)]
    pub job_id: Option<JobId>,
    #[serde(default)]
    pub job_url: Option<String>,
    /// The GitLab username the chat user is linked to.
    #[serde(default)]
    pub gitlab_user: Option<String>,
    /// How many times `response_url` has been used (Slack allows 5 in 30 minutes).
    #[serde(default)]
    pub response_url_uses: u32,
    /// Unix seconds: while `status` is `Dispatching`, another dispatcher may take over after.
    #[serde(default)]
    pub lease_until: u64,
    #[serde(default)]
    pub updated_at: u64,
    #[serde(default)]
    pub replied_at: Option<u64>,
    /// Unix seconds: when the sweep should next look at this open run (its webhook may have
    /// been lost). Backs off with `checks`.
    #[serde(default)]
    pub due_at: u64,
    /// How many times the sweep looked at it.
    #[serde(default)]
    pub checks: u32,
    /// A final webhook arrived while the run was still being dispatched: the dispatcher
    /// finishes the run itself once it has saved it.
    #[serde(default)]
    pub early_hook_at: Option<u64>,
    /// Unix seconds: while in the future, one invocation is delivering the reply.
    #[serde(default)]
    pub reply_lease_until: u64,
    /// How the job ended, recorded with the reply (`None` while open, or when refused).
    #[serde(default)]
    pub outcome: Option<JobOutcome>,
    /// Unix seconds: the DynamoDB TTL attribute.
    pub expires_at: u64,
    /// Where the run's card is on screen (`None`: no card was shown for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardRef>,
    /// What people did with the card's buttons, each at most once (`RunStore::claim_action`).
    #[serde(default, skip_serializing_if = "RunActions::is_empty")]
    pub actions: RunActions,
    /// Four-eyes: what the job's policy asked for, and the decision once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRequest>,
    /// The claim that created this run counted one `response_url` use for its first card
    /// (in the same write: one round trip fewer per run), not spent yet. Never stored: only
    /// the attempt that made the claim may spend it; a later attempt takes its own.
    #[serde(skip)]
    pub announce_use: bool,
}

/// A run that needs someone else's approval before its pipeline exists: the rule as the
/// policy said it when the run was asked for (a later edit of the file does not change a
/// request already made), and the one decision (`RunStore::decide`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Unix seconds: undecided by then, the request ends (the sweep).
    pub expires_at: u64,
    /// The GitLab role an approver needs on the project.
    pub min_role: crate::policy::Role,
    /// Whether the person who asked may approve it themselves.
    #[serde(default)]
    pub requester_can_approve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// How an approval request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Someone else approved: the run is dispatched (as the person who asked).
    Approved,
    /// Someone with the approver's role said no.
    Rejected,
    /// The person who asked took it back.
    Withdrawn,
    /// Nobody decided in time.
    Expired,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Rejected => "rejected",
            Verdict::Withdrawn => "withdrawn",
            Verdict::Expired => "expired",
        }
    }
}

/// The decision on an approval request: one per run, taken by one conditional write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// The click that decided (`ActionMessage::key`), or `expired`: the same click delivered
    /// again is recognised as the one that decided.
    pub key: String,
    /// Who decided (none for an expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ChatUserId>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by_name: String,
    /// The approver's GitLab username, as their link says (`CHAT_APPROVED_BY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab_user: Option<String>,
    pub at: u64,
}

impl RunRecord {
    /// The approval that lets this run's pipeline be created, if it was approved.
    pub fn approved(&self) -> Option<&Decision> {
        self.approval
            .as_ref()
            .and_then(|a| a.decision.as_ref())
            .filter(|d| d.verdict == Verdict::Approved)
    }
}

/// Where a run's card is: in `channel`; `ts` once known (`chat.postMessage` answered it, or a
/// click on the card reported it). `answer`: the card is the slash command's own answer,
/// which the command's `response_url` can replace (the only way while `ts` is unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRef {
    pub channel: ChannelId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<MessageTs>,
    #[serde(default)]
    pub answer: bool,
}

/// A card's buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Cancel the run's pipeline.
    Cancel,
    /// Play the run's `when: manual` job.
    Play,
    /// A new run of the same job and input.
    Retry,
    /// Four-eyes: approve someone else's request (its pipeline is then created).
    Approve,
    /// Four-eyes: say no (or, by the person who asked, take the request back).
    Reject,
}

impl ActionKind {
    pub const ALL: [ActionKind; 5] = [
        ActionKind::Cancel,
        ActionKind::Play,
        ActionKind::Retry,
        ActionKind::Approve,
        ActionKind::Reject,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ActionKind::Cancel => "cancel",
            ActionKind::Play => "play",
            ActionKind::Retry => "retry",
            ActionKind::Approve => "approve",
            ActionKind::Reject => "reject",
        }
    }

    /// Approve and Reject decide an approval request (`RunStore::decide`, one decision per
    /// run) instead of being pressed once each (`RunStore::claim_action`).
    pub fn decides(&self) -> bool {
        matches!(self, ActionKind::Approve | ActionKind::Reject)
    }
}

/// One button press that took effect (or is taking it): whose, when, and the click's key
/// (Slack's `action_ts` + user + value), so a redelivered click is recognised as the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionTaken {
    pub key: String,
    pub by: ChatUserId,
    pub by_name: String,
    pub at: u64,
}

/// The buttons pressed on a run's card.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunActions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<ActionTaken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play: Option<ActionTaken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<ActionTaken>,
}

impl RunActions {
    pub fn is_empty(&self) -> bool {
        self.cancel.is_none() && self.play.is_none() && self.retry.is_none()
    }

    /// The press of `kind` (never one for Approve / Reject: those are the run's `Decision`).
    pub fn get(&self, kind: ActionKind) -> Option<&ActionTaken> {
        match kind {
            ActionKind::Cancel => self.cancel.as_ref(),
            ActionKind::Play => self.play.as_ref(),
            ActionKind::Retry => self.retry.as_ref(),
            ActionKind::Approve | ActionKind::Reject => None,
        }
    }

    /// Record the press of `kind` (Approve / Reject are kept as the run's `Decision`).
    pub fn set(&mut self, kind: ActionKind, taken: Option<ActionTaken>) {
        match kind {
            ActionKind::Cancel => self.cancel = taken,
            ActionKind::Play => self.play = taken,
            ActionKind::Retry => self.retry = taken,
            ActionKind::Approve | ActionKind::Reject => {}
        }
    }
}

/// How long run records are kept (the TTL).
pub const RUN_RETENTION_SECS: u64 = 30 * 24 * 3600;

impl RunRecord {
    /// A fresh record for a request the dispatcher has just claimed.
    pub fn claimed(request: RunRequest, now: u64, lease_secs: u64) -> Self {
        Self {
            request,
            status: RunStatus::Dispatching,
            project_id: None,
            project_path: None,
            project_web_url: None,
            pipeline_id: None,
            pipeline_url: None,
            job_id: None,
            job_url: None,
            gitlab_user: None,
            response_url_uses: 0,
            lease_until: now + lease_secs,
            updated_at: now,
            replied_at: None,
            due_at: 0,
            checks: 0,
            early_hook_at: None,
            reply_lease_until: 0,
            outcome: None,
            expires_at: now + RUN_RETENTION_SECS,
            card: None,
            actions: RunActions::default(),
            approval: None,
            announce_use: false,
        }
    }

    /// The record a dispatch claim writes for a new run: as `claimed`, with one
    /// `response_url` use counted for the run's first card when that card will replace a
    /// Slack command's answer through it (Mattermost cards are posted by the bot). The
    /// claim's write counts it: one round trip to the table fewer per run.
    pub fn claimed_for_dispatch(request: RunRequest, now: u64, lease_secs: u64) -> Self {
        let announce_use = request.platform == Platform::Slack && !request.response_url.is_empty();
        Self {
            response_url_uses: u32::from(announce_use),
            announce_use,
            ..Self::claimed(request, now, lease_secs)
        }
    }
}

/// A link from a chat user to a GitLab user: made by the person through GitLab OAuth (with
/// their own tokens, sealed), or by an admin with `chatops users link` (bot mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLink {
    pub team_id: TeamId,
    pub chat_user_id: ChatUserId,
    pub gitlab_username: String,
    /// The GitLab user's id, when the link was checked on GitLab: the dispatcher then asks
    /// for the membership directly instead of looking the username up on every run.
    #[serde(default)]
    pub gitlab_user_id: Option<GitLabUserId>,
    pub linked_at: u64,
    /// The platform the person connected from (part of the tokens' seal context).
    #[serde(default)]
    pub platform: Option<Platform>,
    /// The person's own GitLab tokens (OAuth links only).
    #[serde(default)]
    pub grant: Option<Grant>,
}

/// A person's GitLab OAuth tokens as stored: sealed (`seal::Sealer`, bound to platform, team
/// and user), with what the refresh protocol needs in the clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// base64 of the sealed `oauth::Tokens` (access and refresh token together).
    pub sealed: String,
    /// Unix seconds when the access token expires.
    pub expires_at: u64,
    /// Bumped by every refresh: the conditional write that serialises refreshes.
    pub version: u64,
    /// GitLab refused the refresh token (revoked in GitLab): the person must reconnect.
    #[serde(default)]
    pub broken: bool,
    /// Unix seconds: while in the future, one invocation is refreshing.
    #[serde(default)]
    pub refresh_lock_until: u64,
}

/// A connect link handed out and not used yet (`state` → who asked, the PKCE verifier, and
/// the command to run once connected). Single use; expires with the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLink {
    pub state: String,
    pub platform: Platform,
    pub team_id: TeamId,
    pub chat_user_id: ChatUserId,
    /// The PKCE verifier (useless without the code GitLab sends only to the redirect URI).
    pub verifier: String,
    pub redirect_uri: String,
    /// The command the person typed before connecting: queued again once connected.
    #[serde(default)]
    pub pending: Option<RunRequest>,
    pub expires_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: RequestKind) -> RunRequest {
        RunRequest {
            version: RUN_REQUEST_VERSION,
            kind,
            request_id: RequestId::new("r1"),
            platform: Platform::Slack,
            team_id: TeamId::new("T1"),
            team_domain: None,
            channel_id: ChannelId::new("C1"),
            channel_name: "ops".into(),
            user_id: ChatUserId::new("U1"),
            user_name: "alice".into(),
            command: "/chatops".into(),
            job: "deploy".into(),
            input: String::new(),
            response_url: "https://hooks.slack.com/commands/T1/1/x".into(),
            received_at: 1,
            public_base: None,
        }
    }

    #[test]
    fn a_run_message_has_no_kind_and_an_old_message_is_a_run() {
        let run = serde_json::to_value(request(RequestKind::Run)).unwrap();
        assert!(run.get("kind").is_none(), "{run}");
        let back: RunRequest = serde_json::from_value(run).unwrap();
        assert_eq!(back.kind, RequestKind::Run);

        let help = serde_json::to_value(request(RequestKind::Help)).unwrap();
        assert_eq!(help["kind"], "help");
        let back: RunRequest = serde_json::from_value(help).unwrap();
        assert_eq!(back.kind, RequestKind::Help);
    }

    #[test]
    fn channel_keys_keep_platforms_and_teams_apart() {
        let r = request(RequestKind::Run);
        assert_eq!(r.channel_key(), "slack#T1#C1");
        let mut other = r.clone();
        other.platform = Platform::Mattermost;
        assert_ne!(other.channel_key(), r.channel_key());
        other = r.clone();
        other.team_id = TeamId::new("T2");
        assert_ne!(other.channel_key(), r.channel_key());
    }
}
