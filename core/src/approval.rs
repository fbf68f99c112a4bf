//! Four-eyes runs: a job whose policy (`.gitlab/chatops.yml`, `approvals: 1`) wants someone
//! else's approval gets no pipeline until that person approves it from the run's card.
//!
//! - Asked for (the dispatcher, `request`): the run is stored `AwaitingApproval` with the
//!   rule as the policy said it then (who may approve, until when), its card shows Approve /
//!   Reject, and the sweep will look at it when it expires.
//! - Decided (a click, `Clicks::decide`): the approver must be linked, someone other than the
//!   person who asked (another chat account linked to the same GitLab user is the same
//!   person), and hold the policy's role on the project — asked of GitLab with their own
//!   token (OAuth) or their membership (bot mode). One conditional write (`RunStore::decide`)
//!   takes the one decision: a double click, or two approvers at once, decide once; the same
//!   click delivered again resumes. Approved → the run is dispatched like a command, as the
//!   person who asked, with `CHAT_APPROVED_BY`; the person who asked pressing Reject takes it
//!   back.
//! - Expired (the sweep, `Expiry`): undecided at `expires_at`, the request ends: its card says
//!   so and the person who asked is told.
//!
//! Every step is audited (`approval_requested`, `decided`).

use crate::action::ActionMessage;
use crate::audit::{Audit, AuditEvent};
use crate::card::{Card, CardState, ClickNotice};
use crate::card_delivery::{CardDesk, Purpose};
use crate::chat::OutgoingMessage;
use crate::clock::Clock;
use crate::delivery::Deliverer;
use crate::interaction::{ClickError, Clicker, Clicks, Handled};
use crate::notice::{Notice, Person};
use crate::policy::JobPolicy;
use crate::run::{ActionKind, ApprovalRequest, Decision, RunRecord, RunStatus, Verdict};
use crate::store::{Decided, RunStore, StoreError};

/// The key of the expiry's decision (a click's key is a hash, never this).
pub const EXPIRED_KEY: &str = "expired";

/// The approval a run of a job with this rule waits for, asked for at `now`.
pub fn request(rule: &JobPolicy, now: u64) -> ApprovalRequest {
    ApprovalRequest {
        expires_at: now + u64::from(rule.approval_expires_minutes) * 60,
        min_role: rule.min_role_to_approve,
        requester_can_approve: rule.requester_can_approve,
        decision: None,
    }
}

/// The audit entry of a decision.
fn decided(decision: &Decision) -> AuditEvent {
    AuditEvent::Decided {
        verdict: decision.verdict,
        by: decision.by.clone(),
        by_name: decision.by_name.clone(),
        by_gitlab_user: decision.gitlab_user.clone(),
    }
}

/// Where a run stands as its card would say it, without asking GitLab.
fn stored_state(run: &RunRecord) -> CardState {
    match (
        run.status,
        run.approval.as_ref().and_then(|a| a.decision.as_ref()),
    ) {
        (RunStatus::AwaitingApproval, _) => CardState::AwaitingApproval,
        (_, Some(d)) if d.verdict != Verdict::Approved => CardState::of_verdict(d.verdict),
        (RunStatus::WaitingManual, _) => CardState::WaitingManual,
        (RunStatus::Running, _) => CardState::Running,
        _ => CardState::Requested,
    }
}

impl Clicks<'_> {
    /// Approve or Reject pressed on a run's card.
    pub(crate) async fn decide(
        &self,
        click: &ActionMessage,
        mut run: RunRecord,
    ) -> Result<Handled, ClickError> {
        let job = run.request.job.clone();
        let Some(asked) = run.approval.clone() else {
            // The run never needed an approval.
            self.moved_on(click, &run, stored_state(&run)).await;
            return Ok(Handled::Done);
        };
        if let Some(first) = &asked.decision {
            if first.key == click.key {
                // This very click decided it; its first delivery may not have finished.
                return Ok(self.after_decision(click, &run, first, true).await);
            }
            self.decided_before(click, &run, first.clone()).await;
            return Ok(Handled::Done);
        }
        if run.status != RunStatus::AwaitingApproval {
            self.moved_on(click, &run, stored_state(&run)).await;
            return Ok(Handled::Done);
        }
        let now = self.clock.now();
        if now >= asked.expires_at {
            // Past its time and not swept yet: it ends now, whoever pressed.
            let expiry = Expiry {
                store: self.store,
                deliverer: self.deliverer,
                clock: self.clock,
                audit: self.audit,
            };
            expiry.expire(&run).await?;
            if let Some(a) = run.approval.as_mut() {
                a.decision = Some(expired_decision(now));
            }
            self.moved_on(click, &run, CardState::Expired).await;
            return Ok(Handled::Done);
        }
        let own = click.user_id == run.request.user_id && click.team_id == run.request.team_id;
        let verdict = match click.kind {
            ActionKind::Reject if own => Verdict::Withdrawn,
            ActionKind::Reject => Verdict::Rejected,
            _ => Verdict::Approved,
        };
        if verdict == Verdict::Approved && own && !asked.requester_can_approve {
            self.notice(click, ClickNotice::OwnRequest { job }).await;
            return Ok(Handled::Done);
        }
        // Taking one's own request back needs nobody's permission; deciding someone
        // else's needs the policy's role on the project, as GitLab knows the clicker.
        let mut gitlab_user = None;
        if verdict != Verdict::Withdrawn {
            let Some(project) = run.project_id else {
                self.notice(
                    click,
                    ClickNotice::NotStarted {
                        job,
                        kind: click.kind,
                    },
                )
                .await;
                return Ok(Handled::Done);
            };
            let (gl, access, username) = match self.clicker(click, &run, project).await? {
                Clicker::Acts {
                    gl,
                    access,
                    gitlab_user,
                } => (gl, access, gitlab_user),
                Clicker::Told => return Ok(Handled::Done),
            };
            let same_person = run
                .gitlab_user
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(&username));
            if verdict == Verdict::Approved && same_person && !asked.requester_can_approve {
                // Another chat account of the same GitLab user is still the same person.
                self.notice(click, ClickNotice::OwnRequest { job }).await;
                return Ok(Handled::Done);
            }
            let access = match access {
                Some(a) => Some(a),
                None => match gl.project_access(project).await {
                    Ok(a) => a,
                    Err(e) => return self.refused(click, &run, e).await.map(|()| Handled::Done),
                },
            };
            if !asked.min_role.allows(access) {
                tracing::info!(run = %click.run, user = %click.user_id, role = asked.min_role.as_str(), "approver's role too low");
                self.notice(
                    click,
                    ClickNotice::ApproverRole {
                        job,
                        role: asked.min_role,
                    },
                )
                .await;
                return Ok(Handled::Done);
            }
            gitlab_user = Some(username);
        }
        let decision = Decision {
            verdict,
            key: click.key.clone(),
            by: Some(click.user_id.clone()),
            by_name: click.user_name.clone(),
            gitlab_user,
            at: now,
        };
        let again = match self
            .store
            .decide(&run.request.request_id, &decision, now)
            .await?
        {
            Decided::Decided { again } => again,
            Decided::Already(first) => {
                self.decided_before(click, &run, first).await;
                return Ok(Handled::Done);
            }
            Decided::NotAwaiting => {
                self.moved_on(click, &run, stored_state(&run)).await;
                return Ok(Handled::Done);
            }
            Decided::NoRun => {
                self.notice(click, ClickNotice::UnknownRun).await;
                return Ok(Handled::Done);
            }
        };
        if let Some(a) = run.approval.as_mut() {
            a.decision = Some(decision.clone());
        }
        tracing::info!(run = %click.run, verdict = verdict.as_str(), user = %click.user_id, "approval request decided");
        Ok(self.after_decision(click, &run, &decision, again).await)
    }

    /// What follows a decision this click took: the audit entry (once), the card, and for
    /// an approval the run's dispatch (idempotent: the dispatcher claims the run).
    async fn after_decision(
        &self,
        click: &ActionMessage,
        run: &RunRecord,
        decision: &Decision,
        again: bool,
    ) -> Handled {
        if !again {
            self.audit
                .record(self.audit.of_run(decided(decision), run))
                .await;
        }
        self.redraw(
            click,
            &Card::of_run(run, CardState::of_verdict(decision.verdict)),
        )
        .await;
        match decision.verdict {
            Verdict::Approved => Handled::Dispatch(Box::new(run.request.clone())),
            _ => Handled::Done,
        }
    }

    /// Someone (or the expiry) decided first: the card as it is, and who.
    async fn decided_before(&self, click: &ActionMessage, run: &RunRecord, first: Decision) {
        let mut run = run.clone();
        if let Some(a) = run.approval.as_mut() {
            a.decision = Some(first.clone());
        }
        let state = match first.verdict {
            // Approved: its dispatch may be under way or done; the card moves on with it.
            Verdict::Approved => stored_state(&run),
            v => CardState::of_verdict(v),
        };
        let kind = match first.verdict {
            Verdict::Approved => ActionKind::Approve,
            _ => ActionKind::Reject,
        };
        match (first.verdict, first.by) {
            (Verdict::Expired, _) | (_, None) => self.moved_on(click, &run, state).await,
            (_, Some(id)) => {
                self.redraw(click, &Card::of_run(&run, state)).await;
                let by = Person {
                    id: id.as_str().to_owned(),
                    name: first.by_name,
                };
                let job = run.request.job.clone();
                self.notice(click, ClickNotice::AlreadyDone { job, kind, by })
                    .await;
            }
        }
    }
}

fn expired_decision(now: u64) -> Decision {
    Decision {
        verdict: Verdict::Expired,
        key: EXPIRED_KEY.into(),
        by: None,
        by_name: String::new(),
        gitlab_user: None,
        at: now,
    }
}

/// Ends approval requests nobody decided in time (the sweep, or a late click).
pub struct Expiry<'a> {
    pub store: &'a dyn RunStore,
    pub deliverer: &'a Deliverer,
    pub clock: &'a dyn Clock,
    pub audit: &'a Audit,
}

impl Expiry<'_> {
    /// End `run`'s request if it is still undecided: true when this call ended it. Its card
    /// says so and the person who asked is told (both best effort: the run is closed
    /// either way, and its card answers any later click with where it stands).
    pub async fn expire(&self, run: &RunRecord) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let decision = expired_decision(now);
        match self
            .store
            .decide(&run.request.request_id, &decision, now)
            .await?
        {
            Decided::Decided { again: false } => {}
            _ => return Ok(false),
        }
        let mut run = run.clone();
        run.status = RunStatus::Refused;
        let minutes = match run.approval.as_mut() {
            Some(a) => {
                a.decision = Some(decision.clone());
                a.expires_at.saturating_sub(run.request.received_at) / 60
            }
            None => 0,
        };
        self.audit
            .record(self.audit.of_run(decided(&decision), &run))
            .await;
        tracing::info!(request_id = %run.request.request_id, "approval request expired");
        let desk = CardDesk {
            deliverer: self.deliverer,
            waits: true,
        };
        let card = Card::of_run(&run, CardState::Expired);
        if let Err(e) = desk.show(&run, &card, Purpose::Update).await {
            tracing::warn!(request_id = %run.request.request_id, error = %e, "could not show the expired card");
        }
        let notice = Notice::ApprovalExpired {
            job: run.request.job.clone(),
            minutes,
        };
        let msg = OutgoingMessage::ephemeral(notice.render(run.request.platform));
        if let Err(e) = self.deliverer.deliver(&run.request, &msg).await {
            tracing::warn!(request_id = %run.request.request_id, error = %e, "could not tell the person their request expired");
        }
        Ok(true)
    }
}
