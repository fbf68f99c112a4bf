//! The runs table: run records (keyed by request id), webhook delivery dedup, and the links
//! from chat users to GitLab users. One trait; a DynamoDB adapter for production and tests
//! over moto, an in-memory fake for unit tests and the embedded local mode.
//!
//! Every state change that must happen at most once (dispatch claim, reply claim,
//! response_url use) is a single conditional write, so concurrent invocations agree.

pub mod memory;

use crate::ids::{ChannelId, PipelineId, RequestId, TeamId};
use crate::run::{
    ActionKind, ActionTaken, CardRef, Decision, Grant, JobOutcome, PendingLink, Platform,
    RunRecord, RunRequest, UserLink,
};

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

/// The outcome of trying to take the reply of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClaim {
    /// This caller delivers it; `response_url` says whether one of its uses was taken for it.
    Claimed { response_url: bool },
    /// Another invocation holds a live reply lease.
    Busy,
    /// The reply was recorded already (or the run is gone / not open).
    Done,
}

/// The outcome of claiming a button press on a run (`RunStore::claim_action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionClaim {
    /// This press is the one that acts; `again` when this very click (same key) had claimed
    /// it already: a redelivery, whose first delivery may have acted.
    Claimed { again: bool },
    /// Someone pressed it first: their press.
    Taken(ActionTaken),
    /// No such run.
    NoRun,
}

/// The outcome of deciding an approval request (`RunStore::decide`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// This decision holds; `again` when this very decision (same key) had been taken
    /// already: a redelivered click, whose first delivery may not have finished.
    Decided { again: bool },
    /// Another decision came first (another click, or the expiry): that one.
    Already(Decision),
    /// The run does not wait for an approval (it never needed one).
    NotAwaiting,
    /// No such run.
    NoRun,
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

    /// Write the record as its owner sees it, keeping what other writers own (the
    /// `response_url` count, a recorded reply, an early hook mark); returns it as stored.
    async fn save_run(&self, run: &RunRecord) -> Result<RunRecord, StoreError>;

    async fn get_run(&self, id: &RequestId) -> Result<Option<RunRecord>, StoreError>;

    /// The run that started this pipeline, if it was ours.
    async fn find_by_pipeline(&self, pipeline: PipelineId)
        -> Result<Option<RunRecord>, StoreError>;

    /// Open runs whose `due_at` has come, most overdue first, at most `limit`.
    async fn due_runs(&self, now: u64, limit: usize) -> Result<Vec<RunRecord>, StoreError>;

    /// When the sweep looks next, and how many times it has looked.
    async fn schedule_check(
        &self,
        id: &RequestId,
        due_at: u64,
        checks: u32,
    ) -> Result<(), StoreError>;

    /// One conditional write that takes the reply: no reply recorded, no live lease; sets a
    /// lease until `now + lease_secs` and, when `response_url` (the most uses, `max`) is asked
    /// and `uses` more fit under it, takes `uses` of them (all or none: the reply's, and the
    /// card's when it is replaced just before the reply).
    async fn begin_reply(
        &self,
        id: &RequestId,
        now: u64,
        lease_secs: u64,
        response_url: Option<u32>,
        uses: u32,
    ) -> Result<ReplyClaim, StoreError>;

    /// Record the reply as delivered (closes the run), with how the job ended when known;
    /// false when it was recorded already.
    async fn finish_reply(
        &self,
        id: &RequestId,
        now: u64,
        outcome: Option<&JobOutcome>,
    ) -> Result<bool, StoreError>;

    /// The runs started from one channel, newest first (by when the command was received),
    /// at most `limit`: `status` and `history`. One indexed query (`by-channel`), no scan.
    async fn channel_runs(
        &self,
        platform: Platform,
        team: &TeamId,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError>;

    /// Give the reply back (delivery failed): drop the lease, look again at `due_at`.
    async fn release_reply(&self, id: &RequestId, due_at: u64) -> Result<(), StoreError>;

    /// Mark that a final webhook came while the run was `Dispatching`. `None` when it is no
    /// longer dispatching (the caller reads it again and completes it itself).
    async fn mark_early_hook(
        &self,
        id: &RequestId,
        now: u64,
    ) -> Result<Option<RunRecord>, StoreError>;

    /// Take one use of the run's `response_url` if fewer than `max` were used; returns the
    /// new count, or `None` when they are used up.
    async fn take_response_url_use(
        &self,
        id: &RequestId,
        max: u32,
    ) -> Result<Option<u32>, StoreError>;

    async fn link_user(&self, link: &UserLink) -> Result<(), StoreError>;
    /// True when a link was removed.
    async fn unlink_user(&self, team_id: &str, chat_user_id: &str) -> Result<bool, StoreError>;
    async fn get_user(
        &self,
        team_id: &str,
        chat_user_id: &str,
    ) -> Result<Option<UserLink>, StoreError>;
    async fn list_users(&self) -> Result<Vec<UserLink>, StoreError>;

    /// Replace the link's tokens if its grant is still at `expected_version` (a refresh, or
    /// marking it broken). False when another writer got there first (re-read it).
    async fn update_grant(
        &self,
        team_id: &str,
        chat_user_id: &str,
        expected_version: u64,
        grant: &Grant,
    ) -> Result<bool, StoreError>;

    /// Take the right to refresh the link's tokens until `until`: only while the grant is at
    /// `version` and nobody else holds it. False when someone else is refreshing.
    async fn lock_grant(
        &self,
        team_id: &str,
        chat_user_id: &str,
        version: u64,
        now: u64,
        until: u64,
    ) -> Result<bool, StoreError>;

    /// Remember a connect link until it is used or expires.
    async fn put_pending_link(&self, pending: &PendingLink) -> Result<(), StoreError>;

    /// Take (and delete, atomically: single use) the connect link with this `state`.
    async fn take_pending_link(&self, state: &str) -> Result<Option<PendingLink>, StoreError>;

    // Cards and their buttons (interactive runs). Both are kept apart from the record
    // `save_run` writes, so a save never undoes them, and every read of the run shows them.

    /// One conditional write: record `taken` as the run's `kind` press unless another press
    /// (with another key) was recorded first. A double click therefore acts once.
    async fn claim_action(
        &self,
        id: &RequestId,
        kind: ActionKind,
        taken: &ActionTaken,
    ) -> Result<ActionClaim, StoreError>;

    /// Undo this press's claim (GitLab refused it, so someone else may try); nothing when
    /// another press holds it.
    async fn release_action(
        &self,
        id: &RequestId,
        kind: ActionKind,
        key: &str,
    ) -> Result<(), StoreError>;

    /// Remember where the run's card is on screen (a posted card's `ts`, or the clicked one).
    async fn set_card(&self, id: &RequestId, card: &CardRef) -> Result<(), StoreError>;

    /// Four-eyes: one conditional write decides a run that waits for approval (or finds the
    /// same decision, by its key, taken already). Approved → `Dispatching` with a lease
    /// anyone may take at once (the dispatcher then claims it like a command); any other
    /// verdict → `Refused`. Either way the run leaves the sweep's index.
    async fn decide(
        &self,
        id: &RequestId,
        decision: &Decision,
        now: u64,
    ) -> Result<Decided, StoreError>;
}
