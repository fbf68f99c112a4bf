//! Reply extraction: from a raw GitLab job log (bytes, any size, in chunks) to the text the
//! chat reply shows. Owned by the reply issue.
//!
//! Use: `let mut x = Extractor::new(); x.push(&chunk); ...; let e = x.finish();`

use serde::{Deserialize, Serialize};

/// Which section the reply came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionKind {
    ChatReply,
    StepScript,
    BuildScript,
}

/// One piece of a reply, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "text", rename_all = "snake_case")]
pub enum Entry {
    /// An echoed command (`$ cmd`), without the `$ ` prefix; shown only when the section ran
    /// several commands (or a before_script).
    Command(String),
    /// Output text (ANSI removed, `\r` overwrites collapsed), lines joined with `\n`.
    Output(String),
}

/// A reply found in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub section: SectionKind,
    pub entries: Vec<Entry>,
    /// Bytes of reply text dropped from the middle to keep memory bounded (0 when complete).
    pub omitted_bytes: u64,
}

/// What a log yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Reply(Reply),
    /// No valid `chat_reply`, `step_script` or `build_script` section.
    NoReplySection,
}

/// The result of reading a whole log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extraction {
    pub outcome: Outcome,
    /// The last lines of the whole log as a person would read them (for failure replies).
    pub log_tail: Vec<String>,
    /// Total bytes read.
    pub log_bytes: u64,
}

/// The streaming extractor.
#[derive(Debug, Default)]
pub struct Extractor {
    log_bytes: u64,
}

impl Extractor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next chunk (chunk boundaries may fall anywhere, even inside a marker or a
    /// UTF-8 sequence).
    pub fn push(&mut self, chunk: &[u8]) {
        self.log_bytes += chunk.len() as u64;
    }

    /// The result once the whole log was pushed.
    pub fn finish(self) -> Extraction {
        Extraction {
            outcome: Outcome::NoReplySection,
            log_tail: Vec::new(),
            log_bytes: self.log_bytes,
        }
    }
}

/// Extract from a complete log in memory.
pub fn extract(log: &[u8]) -> Extraction {
    let mut x = Extractor::new();
    x.push(log);
    x.finish()
}
