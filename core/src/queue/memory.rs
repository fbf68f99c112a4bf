//! An in-memory run queue: messages are the same JSON bodies SQS would carry.

use super::{QueueError, RunQueue};
use crate::action::ActionMessage;
use crate::run::RunRequest;
use std::sync::Mutex;
use tokio::sync::Notify;

#[derive(Default)]
pub struct MemoryQueue {
    bodies: Mutex<Vec<String>>,
    notify: Notify,
    /// When set, `send` fails as an unreachable queue would.
    pub fail: std::sync::atomic::AtomicBool,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take every queued body (oldest first).
    pub fn drain(&self) -> Vec<String> {
        self.bodies
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default()
    }

    /// Wait until at least one body is queued, then take them all.
    pub async fn recv_all(&self) -> Vec<String> {
        loop {
            let notified = self.notify.notified();
            let bodies = self.drain();
            if !bodies.is_empty() {
                return bodies;
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        self.bodies.lock().map(|g| g.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MemoryQueue {
    fn push(&self, body: Result<String, serde_json::Error>) -> Result<(), QueueError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(QueueError::Unavailable("memory queue set to fail".into()));
        }
        let body = body.map_err(|e| QueueError::Encode(e.to_string()))?;
        self.bodies
            .lock()
            .map_err(|_| QueueError::Unavailable("lock poisoned".into()))?
            .push(body);
        self.notify.notify_waiters();
        Ok(())
    }
}

#[async_trait::async_trait]
impl RunQueue for MemoryQueue {
    async fn send(&self, request: &RunRequest) -> Result<(), QueueError> {
        self.push(serde_json::to_string(request))
    }

    async fn send_action(&self, action: &ActionMessage) -> Result<(), QueueError> {
        self.push(serde_json::to_string(action))
    }
}
