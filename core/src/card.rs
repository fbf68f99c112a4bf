//! The card: one message per run that says where it stands (requested → waiting for
//! approval → pending → running → succeeded / failed / cancelled, or waiting for someone to
//! run a `when: manual` job; an approval request may end rejected, withdrawn or expired),
//! who asked, who approved, ran, cancelled or retried it, with links to the job and the
//! pipeline and the buttons that fit the state (Approve, Reject, Cancel, Run, Retry). The job's output still comes as its own
//! reply (`render`); the card replaces the stream of status texts.
//!
//! Rendered per platform: Slack Block Kit (a section, a context line, an actions block: far
//! under Slack's 50 blocks and 3,000 characters a section), Mattermost text (its buttons,
//! signed, are added by `mattermost::actions`). Every text goes
//! through [`Rich`], so a job name or input can never ping anyone. `ClickNotice` is what the
//! person who pressed a button is told when the press did not (or could not) act.

use crate::chat::{OutgoingMessage, Visibility};
use crate::gitlab::Status;
use crate::ids::RequestId;
use crate::markup::Rich;
use crate::notice::{Notice, Person};
use crate::policy::Role;
use crate::run::{ActionKind, Platform, RunRecord, RunRequest, Verdict};
use serde_json::{json, Value};

/// The `action_id` of each button (what a click payload names).
pub const CANCEL_ACTION_ID: &str = "chatops_cancel";
pub const PLAY_ACTION_ID: &str = "chatops_play";
pub const RETRY_ACTION_ID: &str = "chatops_retry";
pub const APPROVE_ACTION_ID: &str = "chatops_approve";
pub const REJECT_ACTION_ID: &str = "chatops_reject";

/// Job names longer than this are shortened on the card (a section holds 3,000 characters).
const MAX_JOB_CHARS: usize = 100;
/// The first line of the input is shown up to this many characters.
const MAX_INPUT_CHARS: usize = 80;

/// The button a click payload's `action_id` names; `None` for anything that is not ours.
pub fn action_kind(action_id: &str) -> Option<ActionKind> {
    match action_id {
        CANCEL_ACTION_ID => Some(ActionKind::Cancel),
        PLAY_ACTION_ID => Some(ActionKind::Play),
        RETRY_ACTION_ID => Some(ActionKind::Retry),
        APPROVE_ACTION_ID => Some(ActionKind::Approve),
        REJECT_ACTION_ID => Some(ActionKind::Reject),
        _ => None,
    }
}

pub fn action_id(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Cancel => CANCEL_ACTION_ID,
        ActionKind::Play => PLAY_ACTION_ID,
        ActionKind::Retry => RETRY_ACTION_ID,
        ActionKind::Approve => APPROVE_ACTION_ID,
        ActionKind::Reject => REJECT_ACTION_ID,
    }
}

/// Where a run stands, as its card shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardState {
    /// The ingress took the command; no pipeline yet.
    Requested,
    /// Four-eyes: no pipeline until someone else approves.
    AwaitingApproval,
    /// The approval request was turned down (no pipeline was created).
    Rejected,
    /// The person who asked took the request back.
    Withdrawn,
    /// Nobody approved in time.
    Expired,
    /// Refused before any pipeline ran (the person who asked was told why, only them).
    NotRun,
    /// The pipeline exists; the job waits for a runner.
    Pending,
    Running,
    /// A `when: manual` job waits for someone to run it.
    WaitingManual,
    Succeeded,
    Failed,
    Cancelled,
}

impl CardState {
    /// The card state of a job in this GitLab status.
    pub fn of_job(status: Status) -> CardState {
        match status {
            Status::Created
            | Status::WaitingForResource
            | Status::Preparing
            | Status::Pending
            | Status::Scheduled
            | Status::Unknown => CardState::Pending,
            Status::Running => CardState::Running,
            Status::Manual => CardState::WaitingManual,
            Status::Success => CardState::Succeeded,
            Status::Failed => CardState::Failed,
            Status::Canceling | Status::Canceled | Status::Skipped => CardState::Cancelled,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            CardState::Succeeded
                | CardState::Failed
                | CardState::Cancelled
                | CardState::Rejected
                | CardState::Withdrawn
                | CardState::Expired
                | CardState::NotRun
        )
    }

    /// How a decided approval request leaves its card.
    pub fn of_verdict(verdict: Verdict) -> CardState {
        match verdict {
            // Approved: the dispatch is under way (the card moves on when it started).
            Verdict::Approved => CardState::Requested,
            Verdict::Rejected => CardState::Rejected,
            Verdict::Withdrawn => CardState::Withdrawn,
            Verdict::Expired => CardState::Expired,
        }
    }

    /// Whether a button of `kind` acts in this state.
    pub fn offers(&self, kind: ActionKind) -> bool {
        match kind {
            ActionKind::Cancel => matches!(
                self,
                CardState::Pending | CardState::Running | CardState::WaitingManual
            ),
            ActionKind::Play => *self == CardState::WaitingManual,
            ActionKind::Retry => matches!(self, CardState::Failed | CardState::Cancelled),
            ActionKind::Approve | ActionKind::Reject => *self == CardState::AwaitingApproval,
        }
    }

    /// As the card's headline says it.
    fn label(&self) -> &'static str {
        match self {
            CardState::Requested => "Requested",
            CardState::AwaitingApproval => "Waiting for approval",
            CardState::Rejected => "Rejected",
            CardState::Withdrawn => "Withdrawn",
            CardState::Expired => "Expired without approval",
            CardState::NotRun => "Not run",
            CardState::Pending => "Pending",
            CardState::Running => "Running",
            CardState::WaitingManual => "Waiting for someone to run this manual job",
            CardState::Succeeded => "Succeeded",
            CardState::Failed => "Failed",
            CardState::Cancelled => "Cancelled",
        }
    }

    /// As a sentence says it ("`deploy` …").
    fn words(&self) -> &'static str {
        match self {
            CardState::Requested => "has not started yet",
            CardState::AwaitingApproval => "is waiting for approval",
            CardState::Rejected => "was rejected",
            CardState::Withdrawn => "was withdrawn",
            CardState::Expired => "expired without an approval",
            CardState::NotRun => "was not run",
            CardState::Pending => "is pending",
            CardState::Running => "is running",
            CardState::WaitingManual => "is waiting for someone to run it",
            CardState::Succeeded => "has succeeded",
            CardState::Failed => "has failed",
            CardState::Cancelled => "was cancelled",
        }
    }

    fn emoji(&self) -> &'static str {
        match self {
            CardState::Requested | CardState::Pending => "hourglass_flowing_sand",
            CardState::AwaitingApproval => "lock",
            CardState::Rejected | CardState::Withdrawn | CardState::Expired | CardState::NotRun => {
                "no_entry_sign"
            }
            CardState::Running => "arrow_forward",
            CardState::WaitingManual => "raised_hand",
            CardState::Succeeded => "white_check_mark",
            CardState::Failed => "x",
            CardState::Cancelled => "no_entry_sign",
        }
    }
}

/// One run's card, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// The run (the buttons' value).
    pub run: RequestId,
    pub job: String,
    pub input: String,
    pub requested_by: Person,
    pub state: CardState,
    pub job_id: Option<u64>,
    pub job_url: Option<String>,
    pub pipeline_url: Option<String>,
    pub played_by: Option<Person>,
    pub cancelled_by: Option<Person>,
    pub retried_by: Option<Person>,
    /// Four-eyes runs: what approval they need, and who decided.
    pub approval: Option<CardApproval>,
    /// Unix seconds when the command was received: shown as a time of day, so a running
    /// card says how long it has been going without being redrawn every minute.
    pub requested_at: u64,
    /// How long the job ran, once it ended (GitLab's duration).
    pub duration_secs: Option<u64>,
}

/// What a four-eyes run's card says about its approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardApproval {
    /// The role an approver needs on the project.
    pub min_role: Role,
    pub requester_can_approve: bool,
    /// How long the request waits (from when it was asked for).
    pub minutes: u64,
    /// The decision and who took it (nobody for an expiry).
    pub verdict: Option<Verdict>,
    pub by: Option<Person>,
}

fn person(id: &crate::ids::ChatUserId, name: &str) -> Person {
    Person {
        id: id.as_str().to_owned(),
        name: name.to_owned(),
    }
}

impl Card {
    /// The card the ingress answers a command with.
    pub fn requested(req: &RunRequest) -> Card {
        Card {
            run: req.request_id.clone(),
            job: req.job.clone(),
            input: req.input.clone(),
            requested_by: Person::of(req),
            state: CardState::Requested,
            job_id: None,
            job_url: None,
            pipeline_url: None,
            played_by: None,
            cancelled_by: None,
            retried_by: None,
            approval: None,
            requested_at: req.received_at,
            duration_secs: None,
        }
    }

    /// The card of a stored run in `state`, with the presses recorded on it.
    pub fn of_run(run: &RunRecord, state: CardState) -> Card {
        let by = |kind: ActionKind| run.actions.get(kind).map(|t| person(&t.by, &t.by_name));
        Card {
            job_id: run.job_id.map(|j| j.0),
            job_url: run.job_url.clone(),
            pipeline_url: run.pipeline_url.clone(),
            played_by: by(ActionKind::Play),
            cancelled_by: by(ActionKind::Cancel),
            retried_by: by(ActionKind::Retry),
            approval: run.approval.as_ref().map(|a| {
                let decision = a.decision.as_ref();
                CardApproval {
                    min_role: a.min_role,
                    requester_can_approve: a.requester_can_approve,
                    minutes: a.expires_at.saturating_sub(run.request.received_at) / 60,
                    verdict: decision.map(|d| d.verdict),
                    by: decision.and_then(|d| d.by.as_ref().map(|id| person(id, &d.by_name))),
                }
            }),
            duration_secs: run
                .outcome
                .and_then(|o| o.duration_secs)
                .filter(|d| d.is_finite() && *d >= 0.0)
                .map(|d| d.round() as u64),
            state,
            ..Card::requested(&run.request)
        }
    }

    /// The buttons shown: those the state offers, less a retry already made.
    pub fn buttons(&self) -> Vec<ActionKind> {
        [
            ActionKind::Approve,
            ActionKind::Reject,
            ActionKind::Play,
            ActionKind::Cancel,
            ActionKind::Retry,
        ]
        .into_iter()
        .filter(|k| self.state.offers(*k))
        .filter(|k| !(*k == ActionKind::Retry && self.retried_by.is_some()))
        .collect()
    }

    pub fn render(&self, platform: Platform) -> OutgoingMessage {
        match platform {
            Platform::Slack => self.slack(),
            Platform::Mattermost => OutgoingMessage::in_channel(self.text().render(platform)),
        }
    }

    /// The job, as a link to it once it exists.
    fn job_span(&self) -> Rich {
        let job = shorten(&self.job, MAX_JOB_CHARS);
        match &self.job_url {
            Some(url) => Rich::new().link(url, job),
            None => Rich::new().code(job),
        }
    }

    /// `:emoji: job input · *State*`
    fn headline(&self) -> Rich {
        Rich::new()
            .emoji(self.state.emoji())
            .text(" ")
            .then(self.job_span())
            .then(input_suffix(&self.input))
            .text(" · ")
            .bold(self.state.label())
    }

    /// Who asked, the pipeline, who acted.
    fn context(&self) -> Rich {
        let mention = |p: &Person| Rich::new().mention(&p.id, &p.name);
        let mut r = Rich::new()
            .text("Requested by ")
            .then(mention(&self.requested_by));
        if self.requested_at > 0 {
            r = r.text(" at ").time(self.requested_at);
        }
        if let Some(a) = &self.approval {
            r = match (a.verdict, &a.by) {
                (None, _) => {
                    let who = if a.requester_can_approve {
                        "someone"
                    } else {
                        "someone else"
                    };
                    r.text(format!(
                        " · needs approval by {who} with the {} role or higher, within {} minutes",
                        a.min_role.label(),
                        a.minutes
                    ))
                }
                (Some(Verdict::Approved), Some(p)) => r.text(" · approved by ").then(mention(p)),
                (Some(Verdict::Rejected), Some(p)) => r.text(" · rejected by ").then(mention(p)),
                (Some(Verdict::Withdrawn), _) => r.text(" · withdrawn by who asked"),
                (Some(Verdict::Expired), _) => r.text(format!(
                    " · nobody approved it within {} minutes, so no pipeline was created",
                    a.minutes
                )),
                (Some(_), None) => r,
            };
        }
        if let Some(url) = &self.pipeline_url {
            r = r.text(" · ").link(url, "pipeline");
        }
        if let Some(p) = &self.played_by {
            r = r.text(" · run by ").then(mention(p));
        }
        if let (CardState::Cancelled, Some(p)) = (self.state, &self.cancelled_by) {
            r = r.text(" · cancelled by ").then(mention(p));
        }
        if let Some(p) = &self.retried_by {
            r = r.text(" · retried by ").then(mention(p));
        }
        if self.state == CardState::NotRun {
            r = r
                .text(" · ")
                .then(mention(&self.requested_by))
                .text(" was told why");
        }
        if let (true, Some(d)) = (self.state.is_final(), self.duration_secs) {
            r = r.text(format!(" · took {}", duration(d)));
        }
        r
    }

    /// The whole card as text: Mattermost's message and Slack's notification text. The states
    /// the product announced before cards existed keep their sentences.
    fn text(&self) -> Rich {
        let started = |job_url: &String, pipeline_url: &String| Notice::Started {
            who: self.requested_by.clone(),
            job: self.job.clone(),
            input: self.input.clone(),
            job_url: job_url.clone(),
            pipeline_url: pipeline_url.clone(),
        };
        match (self.state, &self.job_url, &self.pipeline_url, self.job_id) {
            (CardState::Requested, ..) if self.approval.is_none() => Notice::Scheduling {
                job: self.job.clone(),
            }
            .rich(),
            (CardState::WaitingManual, Some(job_url), Some(pipeline_url), Some(job_id))
                if self.played_by.is_none() =>
            {
                Notice::ManualWaiting {
                    who: self.requested_by.clone(),
                    job: self.job.clone(),
                    input: self.input.clone(),
                    job_id,
                    job_url: job_url.clone(),
                    pipeline_url: pipeline_url.clone(),
                }
                .rich()
            }
            (CardState::Pending | CardState::Running, Some(j), Some(p), _)
                if self.played_by.is_none() && self.approval.is_none() =>
            {
                started(j, p).rich()
            }
            _ => self.headline().br().then(self.context()),
        }
    }

    fn slack(&self) -> OutgoingMessage {
        let mut blocks = vec![
            json!({"type": "section",
                   "text": {"type": "mrkdwn", "text": self.headline().render(Platform::Slack)}}),
            json!({"type": "context",
                   "elements": [{"type": "mrkdwn", "text": self.context().render(Platform::Slack)}]}),
        ];
        let buttons: Vec<Value> = self.buttons().into_iter().map(|k| self.button(k)).collect();
        if !buttons.is_empty() {
            blocks.push(json!({"type": "actions", "elements": buttons}));
        }
        OutgoingMessage {
            visibility: Visibility::InChannel,
            text: self.text().render(Platform::Slack),
            blocks: Some(Value::Array(blocks)),
            ..OutgoingMessage::default()
        }
    }

    /// One Slack button; Mattermost's buttons take their name and style from it
    /// (`mattermost::actions`), so the two platforms read the same.
    pub(crate) fn button(&self, kind: ActionKind) -> Value {
        let plain = |s: &str| json!({"type": "plain_text", "text": s});
        let mut b = json!({
            "type": "button",
            "action_id": action_id(kind),
            "value": self.run.as_str(),
        });
        match kind {
            ActionKind::Cancel => {
                b["text"] = plain("Cancel");
                b["style"] = json!("danger");
                // A cancel cannot be undone: Slack asks first.
                b["confirm"] = json!({
                    "title": plain("Cancel this run?"),
                    "text": {"type": "mrkdwn", "text": Rich::new()
                        .text("This cancels the pipeline of ")
                        .code(shorten(&self.job, MAX_JOB_CHARS))
                        .text(" in GitLab, as you.")
                        .render(Platform::Slack)},
                    "confirm": plain("Cancel it"),
                    "deny": plain("Keep it"),
                });
            }
            ActionKind::Play => {
                b["text"] = plain("Run");
                b["style"] = json!("primary");
            }
            ActionKind::Retry => b["text"] = plain("Retry"),
            ActionKind::Approve => {
                b["text"] = plain("Approve");
                b["style"] = json!("primary");
                // An approval creates a pipeline: Slack asks first.
                b["confirm"] = json!({
                    "title": plain("Approve this run?"),
                    "text": {"type": "mrkdwn", "text": Rich::new()
                        .text("This lets ")
                        .code(shorten(&self.job, MAX_JOB_CHARS))
                        .text(" run as ")
                        .mention(&self.requested_by.id, &self.requested_by.name)
                        .text(" asked; you are recorded as its approver.")
                        .render(Platform::Slack)},
                    "confirm": plain("Approve"),
                    "deny": plain("Not now"),
                });
            }
            ActionKind::Reject => {
                b["text"] = plain("Reject");
                b["style"] = json!("danger");
            }
        }
        b
    }
}

/// `83` → `1m 23s`, `7` → `7s`, `3725` → `1h 2m`.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// `s` cut to `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// The first line of the input, shortened, as inline code after the job's name.
fn input_suffix(input: &str) -> Rich {
    let first = input.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return Rich::new();
    }
    let cut = input.contains('\n') || first.chars().count() > MAX_INPUT_CHARS;
    let mut shown: String = first.chars().take(MAX_INPUT_CHARS).collect();
    if cut {
        shown.push('…');
    }
    Rich::new().text(" ").code(shown)
}

/// What the person who pressed a button is told when the press did not act (only they see
/// it; the card itself shows the run's state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickNotice {
    /// The button names a run we do not know (expired after 30 days, or never ours).
    UnknownRun,
    /// The card belongs to a run of another workspace (a shared channel).
    ForeignTeam,
    /// The run has no pipeline yet.
    NotStarted { job: String, kind: ActionKind },
    /// The run moved on: the button no longer fits.
    MovedOn {
        job: String,
        kind: ActionKind,
        state: CardState,
    },
    /// Someone pressed it first.
    AlreadyDone {
        job: String,
        kind: ActionKind,
        by: Person,
    },
    /// GitLab refused the clicker (their role, a protected branch), in its words.
    Refused {
        job: String,
        kind: ActionKind,
        message: String,
    },
    /// The run's job no longer exists on GitLab.
    JobGone { job: String },
    /// The press could not be handled, even after retries.
    GaveUp { job: String },
    /// Four-eyes: the person who asked cannot approve their own run.
    OwnRequest { job: String },
    /// Four-eyes: approving (or rejecting) needs this role on the project.
    ApproverRole { job: String, role: Role },
}

fn verb(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Cancel => "cancel",
        ActionKind::Play => "run",
        ActionKind::Retry => "retry",
        ActionKind::Approve => "approve",
        ActionKind::Reject => "reject",
    }
}

fn done_verb(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Cancel => "cancelled",
        ActionKind::Play => "ran",
        ActionKind::Retry => "retried",
        ActionKind::Approve => "approved",
        ActionKind::Reject => "rejected",
    }
}

impl ClickNotice {
    pub fn render(&self, platform: Platform) -> OutgoingMessage {
        OutgoingMessage::ephemeral(self.rich().render(platform))
    }

    pub fn rich(&self) -> Rich {
        let job = |j: &str| Rich::new().code(shorten(j, MAX_JOB_CHARS));
        match self {
            ClickNotice::UnknownRun => Rich::new().text(
                "This run is no longer known to ChatOps (runs are kept for 30 days), so nothing \
                 was done.",
            ),
            ClickNotice::ForeignTeam => Rich::new()
                .text("This card belongs to a run of another workspace, so nothing was done."),
            ClickNotice::NotStarted { job: j, kind } => job(j).text(format!(
                " has not started yet, so there is nothing to {} yet.",
                verb(*kind)
            )),
            ClickNotice::MovedOn {
                job: j,
                kind,
                state,
            } => job(j).text(format!(
                " {}, so there is nothing to {}. The card shows where it stands.",
                state.words(),
                verb(*kind)
            )),
            ClickNotice::AlreadyDone { job: j, kind, by } => Rich::new()
                .mention(&by.id, &by.name)
                .text(format!(" already {} ", done_verb(*kind)))
                .then(job(j))
                .text(". The card shows where it stands."),
            ClickNotice::Refused {
                job: j,
                kind,
                message,
            } => Rich::new()
                .text(format!("GitLab did not let you {} ", verb(*kind)))
                .then(job(j))
                .text(format!(
                    " ({message}). Your role on the project decides what you can do from chat; \
                     ask a Maintainer of the project for access."
                )),
            ClickNotice::JobGone { job: j } => Rich::new()
                .text("The job ")
                .then(job(j))
                .text(" of this run no longer exists on GitLab, so nothing was done."),
            ClickNotice::GaveUp { job: j } => Rich::new()
                .text("Your click on ")
                .then(job(j))
                .text(" could not be handled right now; please try again in a moment."),
            ClickNotice::OwnRequest { job: j } => {
                Rich::new().text("You asked for ").then(job(j)).text(
                    ", so someone else must approve it (four-eyes). Nothing was done; \
                     Reject takes your request back.",
                )
            }
            ClickNotice::ApproverRole { job: j, role } => Rich::new()
                .text("Approving or rejecting ")
                .then(job(j))
                .text(format!(
                    " needs the {} role or higher on the project, and GitLab says yours is \
                     lower. Nothing was done.",
                    role.label()
                )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE_JOB: &str = "deploy <!channel>";
    const HOSTILE_INPUT: &str = "<!channel> <@U123> & @here";

    fn who(id: &str, name: &str) -> Person {
        Person {
            id: id.into(),
            name: name.into(),
        }
    }

    fn card(state: CardState) -> Card {
        let started = state != CardState::Requested;
        Card {
            run: RequestId::new("0123456789abcdef0123456789abcdef"),
            job: HOSTILE_JOB.into(),
            input: HOSTILE_INPUT.into(),
            requested_by: who("U024BE7LH", "alice"),
            state,
            job_id: started.then_some(7),
            job_url: started.then(|| "https://gitlab.example.com/g/p/-/jobs/7".to_owned()),
            pipeline_url: started
                .then(|| "https://gitlab.example.com/g/p/-/pipelines/3".to_owned()),
            played_by: None,
            cancelled_by: None,
            retried_by: None,
            approval: None,
            requested_at: 1_764_620_730,
            duration_secs: matches!(state, CardState::Succeeded | CardState::Failed).then_some(83),
        }
    }

    fn four_eyes(state: CardState, verdict: Option<Verdict>, by: Option<Person>) -> Card {
        let mut c = card(state);
        c.approval = Some(CardApproval {
            min_role: Role::Maintainer,
            requester_can_approve: false,
            minutes: 60,
            verdict,
            by,
        });
        c
    }

    /// Every state, and the presses a card can show.
    fn every_card() -> Vec<(&'static str, Card)> {
        let mut v = vec![
            ("requested", card(CardState::Requested)),
            ("pending", card(CardState::Pending)),
            ("running", card(CardState::Running)),
            ("waiting_manual", card(CardState::WaitingManual)),
            ("succeeded", card(CardState::Succeeded)),
            ("failed", card(CardState::Failed)),
            ("cancelled", card(CardState::Cancelled)),
        ];
        let mut played = card(CardState::Running);
        played.played_by = Some(who("U0CAROL", "carol"));
        v.push(("running_played", played));
        let mut cancelled = card(CardState::Cancelled);
        cancelled.cancelled_by = Some(who("U0BOB", "bob <!here>"));
        v.push(("cancelled_by", cancelled));
        let mut retried = card(CardState::Failed);
        retried.retried_by = Some(who("U0BOB", "bob"));
        v.push(("failed_retried", retried));
        let mut awaiting = four_eyes(CardState::AwaitingApproval, None, None);
        awaiting.job_id = None;
        awaiting.job_url = None;
        awaiting.pipeline_url = None;
        v.push(("awaiting_approval", awaiting));
        let bob = || Some(who("U0BOB", "bob <!here>"));
        v.push((
            "approved_running",
            four_eyes(CardState::Running, Some(Verdict::Approved), bob()),
        ));
        v.push((
            "rejected",
            four_eyes(CardState::Rejected, Some(Verdict::Rejected), bob()),
        ));
        v.push((
            "withdrawn",
            four_eyes(CardState::Withdrawn, Some(Verdict::Withdrawn), None),
        ));
        v.push((
            "expired",
            four_eyes(CardState::Expired, Some(Verdict::Expired), None),
        ));
        let mut not_run = card(CardState::NotRun);
        not_run.job_id = None;
        not_run.job_url = None;
        not_run.pipeline_url = None;
        v.push(("not_run", not_run));
        v
    }

    fn forbidden(p: Platform) -> &'static [&'static str] {
        match p {
            Platform::Slack => &["<!channel>", "<!here>", "<@U123>"],
            Platform::Mattermost => &["@here", "@channel", "@U123"],
        }
    }

    #[test]
    fn every_card_state_on_both_platforms() {
        let mut all = String::new();
        for (name, c) in every_card() {
            for p in [Platform::Slack, Platform::Mattermost] {
                let msg = c.render(p);
                let shown = serde_json::to_string_pretty(&msg.to_response_json()).unwrap();
                for f in forbidden(p) {
                    assert!(!shown.contains(f), "{name} {p:?}: {shown}");
                }
                if let Some(blocks) = msg.blocks.as_ref().and_then(Value::as_array) {
                    assert!(blocks.len() <= 50, "{name}");
                    for b in blocks {
                        let t = b
                            .pointer("/text/text")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        assert!(t.chars().count() <= 3000, "{name}");
                    }
                }
                all.push_str(&format!("--- {name} ({})\n{shown}\n", p.as_str()));
            }
        }
        insta::assert_snapshot!(all);
    }

    #[test]
    fn buttons_fit_the_state() {
        let kinds = |s: CardState| card(s).buttons();
        use ActionKind::*;
        assert!(kinds(CardState::Requested).is_empty());
        assert_eq!(kinds(CardState::Pending), vec![Cancel]);
        assert_eq!(kinds(CardState::Running), vec![Cancel]);
        assert_eq!(kinds(CardState::WaitingManual), vec![Play, Cancel]);
        assert!(kinds(CardState::Succeeded).is_empty());
        assert_eq!(kinds(CardState::Failed), vec![Retry]);
        assert_eq!(kinds(CardState::Cancelled), vec![Retry]);
        assert_eq!(kinds(CardState::AwaitingApproval), vec![Approve, Reject]);
        for s in [
            CardState::Rejected,
            CardState::Withdrawn,
            CardState::Expired,
            CardState::NotRun,
        ] {
            assert!(kinds(s).is_empty(), "{s:?}");
            assert!(s.is_final());
        }
        let mut retried = card(CardState::Failed);
        retried.retried_by = Some(who("U1", "bob"));
        assert!(retried.buttons().is_empty(), "one retry per run");
        for k in ActionKind::ALL {
            assert_eq!(action_kind(action_id(k)), Some(k));
        }
        assert_eq!(action_kind("WaXA"), None);
    }

    #[test]
    fn the_cancel_button_names_the_run_and_asks_first() {
        let msg = card(CardState::Running).render(Platform::Slack);
        let blocks = msg.blocks.unwrap();
        let button = &blocks[2]["elements"][0];
        assert_eq!(button["action_id"], CANCEL_ACTION_ID);
        assert_eq!(button["value"], "0123456789abcdef0123456789abcdef");
        assert!(button["confirm"]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("&lt;!channel&gt;"));
    }

    #[test]
    fn job_states_map_to_card_states() {
        let table = [
            (Status::Created, CardState::Pending),
            (Status::Pending, CardState::Pending),
            (Status::Running, CardState::Running),
            (Status::Manual, CardState::WaitingManual),
            (Status::Success, CardState::Succeeded),
            (Status::Failed, CardState::Failed),
            (Status::Canceled, CardState::Cancelled),
            (Status::Canceling, CardState::Cancelled),
        ];
        for (s, want) in table {
            assert_eq!(CardState::of_job(s), want, "{s:?}");
        }
    }

    #[test]
    fn every_click_notice_on_both_platforms() {
        let job = HOSTILE_JOB.to_owned();
        let notices = vec![
            ("unknown_run", ClickNotice::UnknownRun),
            ("foreign_team", ClickNotice::ForeignTeam),
            (
                "not_started",
                ClickNotice::NotStarted {
                    job: job.clone(),
                    kind: ActionKind::Cancel,
                },
            ),
            (
                "moved_on",
                ClickNotice::MovedOn {
                    job: job.clone(),
                    kind: ActionKind::Cancel,
                    state: CardState::Succeeded,
                },
            ),
            (
                "already_done",
                ClickNotice::AlreadyDone {
                    job: job.clone(),
                    kind: ActionKind::Play,
                    by: who("U0CAROL", "carol"),
                },
            ),
            (
                "refused",
                ClickNotice::Refused {
                    job: job.clone(),
                    kind: ActionKind::Cancel,
                    message: "403 Forbidden <!here>".into(),
                },
            ),
            ("job_gone", ClickNotice::JobGone { job: job.clone() }),
            ("gave_up", ClickNotice::GaveUp { job: job.clone() }),
            ("own_request", ClickNotice::OwnRequest { job: job.clone() }),
            (
                "approver_role",
                ClickNotice::ApproverRole {
                    job,
                    role: Role::Maintainer,
                },
            ),
        ];
        let mut all = String::new();
        for (name, n) in notices {
            for p in [Platform::Slack, Platform::Mattermost] {
                let msg = n.render(p);
                assert_eq!(msg.visibility, Visibility::Ephemeral);
                for f in forbidden(p) {
                    assert!(!msg.text.contains(f), "{name} {p:?}: {}", msg.text);
                }
                all.push_str(&format!("--- {name} ({})\n{}\n", p.as_str(), msg.text));
            }
        }
        insta::assert_snapshot!(all);
    }
}
