//! The in-memory run store: unit tests and `chatops local`'s embedded mode. Same semantics
//! as the DynamoDB adapter (one lock stands in for conditional writes).

use super::{DispatchClaim, RunStore, StoreError};
use crate::ids::{PipelineId, RequestId};
use crate::run::{RunRecord, RunRequest, RunStatus, UserLink};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    runs: HashMap<String, RunRecord>,
    deliveries: HashMap<String, u64>,
    users: HashMap<(String, String), UserLink>,
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
                let rec = RunRecord::claimed(request.clone(), now, lease_secs);
                g.runs.insert(key, rec.clone());
                Ok(DispatchClaim::Claimed(Box::new(rec)))
            }
            Some(rec) if rec.expires_at < now => {
                *rec = RunRecord::claimed(request.clone(), now, lease_secs);
                Ok(DispatchClaim::Claimed(Box::new(rec.clone())))
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

    async fn save_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.lock()?
            .runs
            .insert(run.request.request_id.0.clone(), run.clone());
        Ok(())
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

    async fn open_runs(&self, updated_before: u64) -> Result<Vec<RunRecord>, StoreError> {
        let mut v: Vec<RunRecord> = self
            .lock()?
            .runs
            .values()
            .filter(|r| r.status.is_open() && r.updated_at < updated_before)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.updated_at);
        Ok(v)
    }

    async fn claim_reply(&self, id: &RequestId, now: u64) -> Result<bool, StoreError> {
        let mut g = self.lock()?;
        match g.runs.get_mut(&id.0) {
            Some(rec) if rec.replied_at.is_none() => {
                rec.replied_at = Some(now);
                rec.status = RunStatus::Replied;
                rec.updated_at = now;
                Ok(true)
            }
            _ => Ok(false),
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

    async fn first_delivery(&self, key: &str, now: u64, ttl_secs: u64) -> Result<bool, StoreError> {
        let mut g = self.lock()?;
        match g.deliveries.get(key) {
            Some(&expires) if expires >= now => Ok(false),
            _ => {
                g.deliveries.insert(key.to_owned(), now + ttl_secs);
                Ok(true)
            }
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
}
