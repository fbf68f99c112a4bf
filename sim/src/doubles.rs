//! In-memory test doubles of core ports: a clock moved by hand and a chat API that records.
//! They live here, in the simulation crate, so no function can link them.

use async_trait::async_trait;
use chatops_core::chat::{ChatApi, ChatError, FileAttachment, OutgoingMessage};
use chatops_core::clock::Clock;
use chatops_core::ids::{ChannelId, ChatUserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A clock tests move by hand.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn at(now: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now)))
    }
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The in-memory fake of [`ChatApi`] for unit tests: every message is recorded with where it
/// went (the `response_url` or the channel id), and every call succeeds.
#[derive(Debug, Default)]
pub struct RecordingChat {
    pub sent: std::sync::Mutex<Vec<(String, OutgoingMessage)>>,
}

impl RecordingChat {
    fn record(&self, to: &str, msg: &OutgoingMessage) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push((to.to_owned(), msg.clone()));
        }
    }
}

#[async_trait]
impl ChatApi for RecordingChat {
    async fn respond(&self, response_url: &str, msg: &OutgoingMessage) -> Result<(), ChatError> {
        self.record(response_url, msg);
        Ok(())
    }
    async fn post_message(
        &self,
        channel: &ChannelId,
        msg: &OutgoingMessage,
    ) -> Result<(), ChatError> {
        self.record(channel.as_str(), msg);
        Ok(())
    }
    async fn upload_file(
        &self,
        _channel: &ChannelId,
        _file: &FileAttachment,
        _initial_comment: &str,
    ) -> Result<(), ChatError> {
        Ok(())
    }
    async fn open_dm(&self, user: &ChatUserId) -> Result<ChannelId, ChatError> {
        Ok(ChannelId::new(format!("D{user}")))
    }
}
