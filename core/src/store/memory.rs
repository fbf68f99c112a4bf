//! The in-memory run store: unit tests and `chatops local`'s embedded mode. Same semantics
//! as the DynamoDB adapter (one lock stands in for conditional writes).

use super::{ActionClaim, Decided, DispatchClaim, ReplyClaim, RunStore, StoreError};
use crate::ids::{ChannelId, PipelineId, RequestId, TeamId};
use crate::run::{
    channel_key, ActionKind, ActionTaken, CardRef, Decision, Grant, JobOutcome, PendingLink,
    Platform, RunRecord, RunRequest, RunStatus, UserLink, Verdict,
};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    runs: HashMap<String, RunRecord>,
    users: HashMap<(String, String), UserLink>,
    pending: HashMap<String, PendingLink>,
    /// Cards placed by `set_card`: like DynamoDB's separate attribute, a save keeps them.
    cards: HashMap<String, CardRef>,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }

    /// Every run, for tests and the demo transcript.
    pub fn all_runs(&self) -> Vec<RunRecord> {
        self.lock()
            .map(|g| g.runs.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl RunStore for MemoryStore {
    async fn claim_dispatch(
        &self,
        request: &RunRequest,
        now: u64,
        lease_secs: u64,
    ) -> Result<DispatchClaim, StoreError> {
        let mut g = self.lock()?;
        let key = request.request_id.0.clone();
        match g.runs.get_mut(&key) {
            None => {
                let rec = RunRecord::claimed_for_dispatch(request.clone(), now, lease_secs);
                g.runs.insert(key, stored(&rec));
                Ok(DispatchClaim::Claimed(Box::new(rec)))
            }
            Some(old) if old.expires_at < now => {
                let rec = RunRecord::claimed_for_dispatch(request.clone(), now, lease_secs);
                *old = stored(&rec);
                Ok(DispatchClaim::Claimed(Box::new(rec)))
            }
            Some(rec) if rec.status == RunStatus::Dispatching => {
                if rec.lease_until < now {
                    rec.lease_until = now + lease_secs;
                    rec.updated_at = now;
                    Ok(DispatchClaim::Claimed(Box::new(rec.clone())))
                } else {
                    Ok(DispatchClaim::Busy)
                }
            }
            Some(rec) => Ok(DispatchClaim::Done(Box::new(rec.clone()))),
        }
    }

    async fn save_run(&self, run: &RunRecord) -> Result<RunRecord, StoreError> {
        let mut g = self.lock()?;
        let mut rec = run.clone();
        if let Some(cur) = g.runs.get(&run.request.request_id.0) {
            rec.response_url_uses = rec.response_url_uses.max(cur.response_url_uses);
            rec.early_hook_at = rec.early_hook_at.or(cur.early_hook_at);
            rec.reply_lease_until = rec.reply_lease_until.max(cur.reply_lease_until);
            rec.outcome = rec.outcome.or(cur.outcome);
            if cur.replied_at.is_some() {
                rec.replied_at = cur.replied_at;
                rec.status = RunStatus::Replied;
            }
            rec.actions = cur.actions.clone();
            // Like the actions, the decision is its own write: a save keeps it.
            if let (Some(a), Some(d)) = (
                rec.approval.as_mut(),
                cur.approval.as_ref().and_then(|a| a.decision.clone()),
            ) {
                a.decision = Some(d);
            }
        }
        if let Some(card) = g.cards.get(&run.request.request_id.0) {
            rec.card = Some(card.clone());
        }
        let rec = stored(&rec);
        g.runs.insert(rec.request.request_id.0.clone(), rec.clone());
        Ok(rec)
    }

    async fn get_run(&self, id: &RequestId) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.lock()?.runs.get(&id.0).cloned())
    }

    async fn find_by_pipeline(
        &self,
        pipeline: PipelineId,
    ) -> Result<Option<RunRecord>, StoreError> {
        Ok(self
            .lock()?
            .runs
            .values()
            .find(|r| r.pipeline_id == Some(pipeline))
            .cloned())
    }

    async fn due_runs(&self, now: u64, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut v: Vec<RunRecord> = self
            .lock()?
            .runs
            .values()
            .filter(|r| r.status.is_open() && r.due_at <= now)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.due_at);
        v.truncate(limit);
        Ok(v)
    }

    async fn schedule_check(
        &self,
        id: &RequestId,
        due_at: u64,
        checks: u32,
    ) -> Result<(), StoreError> {
        if let Some(rec) = self.lock()?.runs.get_mut(&id.0) {
            rec.due_at = due_at;
            rec.checks = checks;
        }
        Ok(())
    }

    async fn begin_reply(
        &self,
        id: &RequestId,
        now: u64,
        lease_secs: u64,
        response_url: Option<u32>,
        uses: u32,
    ) -> Result<ReplyClaim, StoreError> {
        let mut g = self.lock()?;
        let Some(rec) = g.runs.get_mut(&id.0) else {
            return Ok(ReplyClaim::Done);
        };
        if rec.replied_at.is_some() || !rec.status.is_open() {
            return Ok(ReplyClaim::Done);
        }
        if rec.reply_lease_until >= now {
            return Ok(ReplyClaim::Busy);
        }
        rec.reply_lease_until = now + lease_secs;
        let took = match response_url {
            Some(max) if rec.response_url_uses + uses <= max => {
                rec.response_url_uses += uses;
                true
            }
            _ => false,
        };
        Ok(ReplyClaim::Claimed { response_url: took })
    }

    async fn finish_reply(
        &self,
        id: &RequestId,
        now: u64,
        outcome: Option<&JobOutcome>,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock()?;
        match g.runs.get_mut(&id.0) {
            Some(rec) if rec.replied_at.is_none() => {
                rec.replied_at = Some(now);
                rec.status = RunStatus::Replied;
                rec.updated_at = now;
                rec.reply_lease_until = 0;
                rec.outcome = outcome.copied();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn channel_runs(
        &self,
        platform: Platform,
        team: &TeamId,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let key = channel_key(platform, team, channel);
        let mut v: Vec<RunRecord> = self
            .lock()?
            .runs
            .values()
            .filter(|r| r.request.channel_key() == key)
            .cloned()
            .collect();
        // Newest first; the id breaks ties so the order is stable within one second.
        v.sort_by(|a, b| {
            (b.request.received_at, &b.request.request_id)
                .cmp(&(a.request.received_at, &a.request.request_id))
        });
        v.truncate(limit);
        Ok(v)
    }

    async fn release_reply(&self, id: &RequestId, due_at: u64) -> Result<(), StoreError> {
        if let Some(rec) = self.lock()?.runs.get_mut(&id.0) {
            rec.reply_lease_until = 0;
            rec.due_at = due_at;
        }
        Ok(())
    }

    async fn mark_early_hook(
        &self,
        id: &RequestId,
        now: u64,
    ) -> Result<Option<RunRecord>, StoreError> {
        let mut g = self.lock()?;
        match g.runs.get_mut(&id.0) {
            Some(rec) if rec.status == RunStatus::Dispatching => {
                rec.early_hook_at = Some(now);
                Ok(Some(rec.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn take_response_url_use(
        &self,
        id: &RequestId,
        max: u32,
    ) -> Result<Option<u32>, StoreError> {
        let mut g = self.lock()?;
        match g.runs.get_mut(&id.0) {
            Some(rec) if rec.response_url_uses < max => {
                rec.response_url_uses += 1;
                Ok(Some(rec.response_url_uses))
            }
            _ => Ok(None),
        }
    }

    async fn link_user(&self, link: &UserLink) -> Result<(), StoreError> {
        self.lock()?.users.insert(
            (link.team_id.0.clone(), link.chat_user_id.0.clone()),
            link.clone(),
        );
        Ok(())
    }

    async fn unlink_user(&self, team_id: &str, chat_user_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .users
            .remove(&(team_id.to_owned(), chat_user_id.to_owned()))
            .is_some())
    }

    async fn get_user(
        &self,
        team_id: &str,
        chat_user_id: &str,
    ) -> Result<Option<UserLink>, StoreError> {
        Ok(self
            .lock()?
            .users
            .get(&(team_id.to_owned(), chat_user_id.to_owned()))
            .cloned())
    }

    async fn list_users(&self) -> Result<Vec<UserLink>, StoreError> {
        let mut v: Vec<UserLink> = self.lock()?.users.values().cloned().collect();
        v.sort_by(|a, b| (&a.team_id, &a.chat_user_id).cmp(&(&b.team_id, &b.chat_user_id)));
        Ok(v)
    }

    async fn update_grant(
        &self,
        team_id: &str,
        chat_user_id: &str,
        expected_version: u64,
        grant: &Grant,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock()?;
        match g
            .users
            .get_mut(&(team_id.to_owned(), chat_user_id.to_owned()))
        {
            Some(link) if link.grant.as_ref().map(|g| g.version) == Some(expected_version) => {
                link.grant = Some(grant.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn lock_grant(
        &self,
        team_id: &str,
        chat_user_id: &str,
        version: u64,
        now: u64,
        until: u64,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock()?;
        let Some(grant) = g
            .users
            .get_mut(&(team_id.to_owned(), chat_user_id.to_owned()))
            .and_then(|l| l.grant.as_mut())
        else {
            return Ok(false);
        };
        if grant.version != version || grant.refresh_lock_until > now {
            return Ok(false);
        }
        grant.refresh_lock_until = until;
        Ok(true)
    }

    async fn put_pending_link(&self, pending: &PendingLink) -> Result<(), StoreError> {
        self.lock()?
            .pending
            .insert(pending.state.clone(), pending.clone());
        Ok(())
    }

    async fn take_pending_link(&self, state: &str) -> Result<Option<PendingLink>, StoreError> {
        Ok(self.lock()?.pending.remove(state))
    }

    async fn claim_action(
        &self,
        id: &RequestId,
        kind: ActionKind,
        taken: &ActionTaken,
    ) -> Result<ActionClaim, StoreError> {
        let mut g = self.lock()?;
        let Some(rec) = g.runs.get_mut(&id.0) else {
            return Ok(ActionClaim::NoRun);
        };
        match rec.actions.get(kind) {
            Some(first) if first.key != taken.key => Ok(ActionClaim::Taken(first.clone())),
            Some(_) => Ok(ActionClaim::Claimed { again: true }),
            None => {
                rec.actions.set(kind, Some(taken.clone()));
                Ok(ActionClaim::Claimed { again: false })
            }
        }
    }

    async fn release_action(
        &self,
        id: &RequestId,
        kind: ActionKind,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        if let Some(rec) = g.runs.get_mut(&id.0) {
            if rec.actions.get(kind).is_some_and(|t| t.key == key) {
                rec.actions.set(kind, None);
            }
        }
        Ok(())
    }

    async fn decide(
        &self,
        id: &RequestId,
        decision: &Decision,
        now: u64,
    ) -> Result<Decided, StoreError> {
        let mut g = self.lock()?;
        let Some(rec) = g.runs.get_mut(&id.0) else {
            return Ok(Decided::NoRun);
        };
        let Some(approval) = rec.approval.as_mut() else {
            return Ok(Decided::NotAwaiting);
        };
        match &approval.decision {
            Some(d) if d.key == decision.key => return Ok(Decided::Decided { again: true }),
            Some(d) => return Ok(Decided::Already(d.clone())),
            None if rec.status != RunStatus::AwaitingApproval => return Ok(Decided::NotAwaiting),
            None => {}
        }
        approval.decision = Some(decision.clone());
        rec.status = match decision.verdict {
            Verdict::Approved => RunStatus::Dispatching,
            _ => RunStatus::Refused,
        };
        rec.lease_until = 0;
        rec.updated_at = now;
        Ok(Decided::Decided { again: false })
    }

    async fn set_card(&self, id: &RequestId, card: &CardRef) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        g.cards.insert(id.0.clone(), card.clone());
        if let Some(rec) = g.runs.get_mut(&id.0) {
            rec.card = Some(card.clone());
        }
        Ok(())
    }
}

/// A run as the table would hold it: what is kept in memory only is not stored.
fn stored(rec: &RunRecord) -> RunRecord {
    RunRecord {
        announce_use: false,
        ..rec.clone()
    }
}
