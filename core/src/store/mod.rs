//! The runs table: run records (keyed by request id), webhook delivery dedup, and the links
//! from chat users to GitLab users. One trait; a DynamoDB adapter for production and tests
//! over moto, an in-memory fake for unit tests and the embedded local mode.
//!
//! Every state change that must happen at most once (dispatch claim, reply claim,
//! response_url use) is a single conditional write, so concurrent invocations agree.

pub mod memory;

use crate::ids::{PipelineId, RequestId};
use crate::run::{RunRecord, RunRequest, UserLink};

pub use memory::MemoryStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttling, timeouts, 5xx: try again later.
    #[error("run store unavailable: {0}")]
    Unavailable(String),
    /// A stored item we cannot read (schema drift, manual edit).
    #[error("run store item is corrupt: {0}")]
    Corrupt(String),
}

/// The outcome of trying to claim a request for dispatch.
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchClaim {
    /// We hold the lease (a new request, or an earlier attempt's lease expired): go ahead.
    /// Carries the record as stored (an expired attempt's record keeps what it had done).
    Claimed(Box<RunRecord>),
    /// Another invocation holds a live lease: retry later.
    Busy,
    /// Already dispatched (or refused): nothing to do.
    Done(Box<RunRecord>),
}

#[async_trait::async_trait]
pub trait RunStore: Send + Sync {
    /// Claim `request` for dispatch with a lease of `lease_secs`.
    async fn claim_dispatch(
        &self,
        request: &RunRequest,
        now: u64,
        lease_secs: u64,
    ) -> Result<DispatchClaim, StoreError>;

    /// Write the whole record (after dispatch, or any other update by the owner).
    async fn save_run(&self, run: &RunRecord) -> Result<(), StoreError>;

    async fn get_run(&self, id: &RequestId) -> Result<Option<RunRecord>, StoreError>;

    /// The run that started this pipeline, if it was ours.
    async fn find_by_pipeline(&self, pipeline: PipelineId)
        -> Result<Option<RunRecord>, StoreError>;

    /// Runs still owed a reply (`status.is_open()`) last updated before `updated_before`.
    async fn open_runs(&self, updated_before: u64) -> Result<Vec<RunRecord>, StoreError>;

    /// Claim the final reply: true for exactly one caller per run.
    async fn claim_reply(&self, id: &RequestId, now: u64) -> Result<bool, StoreError>;

    /// Take one use of the run's `response_url` if fewer than `max` were used; returns the
    /// new count, or `None` when they are used up.
    async fn take_response_url_use(
        &self,
        id: &RequestId,
        max: u32,
    ) -> Result<Option<u32>, StoreError>;

    /// Record a webhook delivery key; true the first time it is seen.
    async fn first_delivery(&self, key: &str, now: u64, ttl_secs: u64) -> Result<bool, StoreError>;

    async fn link_user(&self, link: &UserLink) -> Result<(), StoreError>;
    /// True when a link was removed.
    async fn unlink_user(&self, team_id: &str, chat_user_id: &str) -> Result<bool, StoreError>;
    async fn get_user(
        &self,
        team_id: &str,
        chat_user_id: &str,
    ) -> Result<Option<UserLink>, StoreError>;
    async fn list_users(&self) -> Result<Vec<UserLink>, StoreError>;
}
