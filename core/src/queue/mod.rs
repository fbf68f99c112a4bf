//! The run queue between the ingress and the dispatcher: SQS in production (and over moto in
//! tests), an in-memory channel for unit tests and `chatops local`'s embedded mode.

pub mod memory;

use crate::action::ActionMessage;
use crate::run::RunRequest;

pub use memory::MemoryQueue;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue did not take the request: certain (refused, unreachable, not sent).
    #[error("run queue unavailable: {0}")]
    Unavailable(String),
    /// The request was sent but no answer came in time: it may or may not be queued. The
    /// person must not be told it failed (it may run); a repeat is absorbed downstream,
    /// where the dispatcher deduplicates on the request id.
    #[error("run queue did not confirm in time: {0}")]
    Unconfirmed(String),
    #[error("run request could not be encoded: {0}")]
    Encode(String),
}

#[async_trait::async_trait]
pub trait RunQueue: Send + Sync {
    /// Send one run request; returns when the queue has accepted it.
    async fn send(&self, request: &RunRequest) -> Result<(), QueueError>;
    /// Send one button click (its own message type, see `action`); returns when the queue
    /// has accepted it.
    async fn send_action(&self, action: &ActionMessage) -> Result<(), QueueError>;
}
