//! Reply extraction: from a raw GitLab job log (bytes, any size, in chunks) to the text the
//! chat reply shows. Owned by the reply issue.
//!
//! Use: `let mut x = Extractor::new(); x.push(&chunk); ...; let e = x.finish();`
//!
//! How: the hot loop only looks for `\r` (memchr): every section marker ends in `\r\e[0K`,
//! so a marker is recognised by looking back from its `\r`. Only the three candidate
//! sections (`chat_reply`, `step_script`, `build_script`) are captured, as raw bytes: the
//! first 64 KiB and a sliding window over the last 64 KiB of each, plus the last 32 KiB of
//! the whole log. Cleaning (ANSI, `\r` overwrites, UTF-8) and reply structure happen once, in
//! [`Extractor::finish`], on those few bytes. Memory is therefore the same for 1 MB and 1 GB.

pub mod ansi;
pub mod marker;
mod sections;

use marker::{Kind, SUFFIX};
use memchr::memmem;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

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
    /// Counted in raw log bytes (escape codes included).
    pub omitted_bytes: u64,
    /// When bytes were omitted: `entries[..i]` come before the gap, `entries[i..]` after it.
    #[serde(default)]
    pub omitted_at: Option<usize>,
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

/// Raw bytes kept from the start of each candidate section.
pub const HEAD_BYTES: usize = 64 * 1024;
/// Raw bytes kept from the end of each candidate section.
pub const TAIL_BYTES: usize = 64 * 1024;
/// Raw bytes kept from the end of the whole log, for [`Extraction::log_tail`].
pub const LOG_TAIL_BYTES: usize = 32 * 1024;
/// Lines in [`Extraction::log_tail`].
pub const LOG_TAIL_LINES: usize = 20;

/// Section names in order of preference.
const CANDIDATES: [(&[u8], SectionKind); 3] = [
    (b"chat_reply", SectionKind::ChatReply),
    (b"step_script", SectionKind::StepScript),
    (b"build_script", SectionKind::BuildScript),
];
/// Bytes remembered from previous chunks so a marker split across chunks is still seen.
const LOOK: usize = marker::MAX_PREFIX + 16;

static ECHO: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\x1b[32;1m$ "));
const ECHO_LEN: usize = 9;

/// The last `cap` bytes of a stream (deterministic whatever the chunking, once
/// [`Window::settle`] ran). While streaming it keeps a margin beyond `cap`, so that removing
/// an end marker's bytes from the end still leaves `cap` bytes of content.
#[derive(Debug)]
struct Window {
    buf: Vec<u8>,
    cap: usize,
    keep: usize,
    /// Bytes that left the window.
    dropped: u64,
}

impl Window {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            keep: cap + LOOK + SUFFIX.len(),
            dropped: 0,
        }
    }

    fn push(&mut self, b: &[u8]) {
        if b.len() >= self.keep {
            self.dropped += (self.buf.len() + b.len() - self.keep) as u64;
            self.buf.clear();
            self.buf.extend_from_slice(&b[b.len() - self.keep..]);
            return;
        }
        self.buf.extend_from_slice(b);
        // Trimming moves `keep` bytes; doing it rarely keeps the copying per byte low.
        if self.buf.len() > 4 * self.keep {
            self.trim(self.keep);
        }
    }

    fn trim(&mut self, to: usize) {
        if self.buf.len() > to {
            let d = self.buf.len() - to;
            self.buf.drain(..d);
            self.dropped += d as u64;
        }
    }

    fn settle(&mut self) {
        self.trim(self.cap);
    }

    /// The kept bytes, minus a first partial line when bytes were dropped.
    fn lines_part(&self) -> (&[u8], u64) {
        if self.dropped == 0 {
            return (&self.buf, 0);
        }
        let cut = memchr::memchr(b'\n', &self.buf).map_or(0, |i| i + 1);
        (&self.buf[cut..], self.dropped + cut as u64)
    }
}

/// The bytes of one candidate section.
#[derive(Debug)]
struct Capture {
    head: Vec<u8>,
    window: Window,
    /// Stream offset right after the last byte appended.
    end: u64,
    count_echoes: bool,
    echoes: u8,
    carry: Vec<u8>,
}

impl Capture {
    fn new(start: u64, count_echoes: bool) -> Self {
        Self {
            head: Vec::new(),
            window: Window::new(TAIL_BYTES),
            end: start,
            count_echoes,
            echoes: 0,
            carry: Vec::new(),
        }
    }

    fn append(&mut self, mut b: &[u8]) {
        self.end += b.len() as u64;
        if self.count_echoes && self.echoes < 2 {
            self.count(b);
        }
        if self.head.len() < HEAD_BYTES {
            let n = (HEAD_BYTES - self.head.len()).min(b.len());
            self.head.extend_from_slice(&b[..n]);
            b = &b[n..];
        }
        if !b.is_empty() {
            self.window.push(b);
        }
    }

    /// Counts runner command echoes, also across chunk boundaries.
    fn count(&mut self, b: &[u8]) {
        if !self.carry.is_empty() {
            let mut j = [0u8; 2 * (ECHO_LEN - 1)];
            let n = self.carry.len();
            let m = b.len().min(ECHO_LEN - 1);
            j[..n].copy_from_slice(&self.carry);
            j[n..n + m].copy_from_slice(&b[..m]);
            self.echoes = self
                .echoes
                .saturating_add(ECHO.find_iter(&j[..n + m]).take(2).count() as u8);
        }
        self.echoes = self
            .echoes
            .saturating_add(ECHO.find_iter(b).take(2).count() as u8);
        if b.len() >= ECHO_LEN - 1 {
            self.carry.clear();
            self.carry.extend_from_slice(&b[b.len() - (ECHO_LEN - 1)..]);
        } else {
            self.carry.extend_from_slice(b);
            let extra = self.carry.len().saturating_sub(ECHO_LEN - 1);
            self.carry.drain(..extra);
        }
    }

    /// Forget the bytes from stream offset `at` on (the end marker's own bytes).
    fn truncate_to(&mut self, at: u64) {
        let mut n = self.end.saturating_sub(at) as usize;
        let w = n.min(self.window.buf.len());
        self.window.buf.truncate(self.window.buf.len() - w);
        n -= w;
        self.head.truncate(self.head.len().saturating_sub(n));
        self.end = at;
    }

    fn reply(mut self, kind: SectionKind) -> Reply {
        self.window.settle();
        let (entries, omitted_bytes, omitted_at) = if self.window.dropped == 0 {
            let mut all = self.head;
            all.extend_from_slice(&self.window.buf);
            let content = sections::Content {
                head: &all,
                tail: None,
                echoes_seen: self.echoes,
            };
            let (entries, _) = sections::entries(kind, &content);
            (entries, 0, None)
        } else {
            let head_cut = memchr::memrchr(b'\n', &self.head).map_or(self.head.len(), |i| i + 1);
            let (tail, dropped) = self.window.lines_part();
            let content = sections::Content {
                head: &self.head[..head_cut],
                tail: Some(tail),
                echoes_seen: self.echoes,
            };
            let (entries, gap) = sections::entries(kind, &content);
            let omitted = dropped + (self.head.len() - head_cut) as u64;
            (entries, omitted, gap)
        };
        Reply {
            section: kind,
            entries,
            omitted_bytes,
            omitted_at,
        }
    }

    fn retained(&self) -> usize {
        self.head.capacity() + self.window.buf.capacity() + self.carry.capacity()
    }
}

#[derive(Debug)]
enum Slot {
    Unseen,
    Open(Box<Capture>),
    Closed(Box<Capture>),
    /// Seen in a way GitLab does not accept (not exactly one start then one end).
    Invalid,
}

/// A `\r` after a candidate marker, waiting for the rest of `\e[0K` in the next chunk.
#[derive(Debug)]
struct Pending {
    kind: Kind,
    which: usize,
    start: u64,
    matched: usize,
}

/// The streaming extractor.
#[derive(Debug)]
pub struct Extractor {
    offset: u64,
    /// The last bytes before the current chunk.
    look: Vec<u8>,
    pending: Option<Pending>,
    slots: [Slot; 3],
    log_tail: Window,
    scratch: Vec<u8>,
}

impl Default for Extractor {
    fn default() -> Self {
        Self::new()
    }
}

impl Extractor {
    pub fn new() -> Self {
        Self {
            offset: 0,
            look: Vec::with_capacity(2 * LOOK),
            pending: None,
            slots: [Slot::Unseen, Slot::Unseen, Slot::Unseen],
            log_tail: Window::new(LOG_TAIL_BYTES),
            scratch: Vec::new(),
        }
    }

    /// Feed the next chunk (chunk boundaries may fall anywhere, even inside a marker or a
    /// UTF-8 sequence).
    pub fn push(&mut self, chunk: &[u8]) {
        let base = self.offset;
        if let Some(mut p) = self.pending.take() {
            let need = SUFFIX.len() - p.matched;
            let n = need.min(chunk.len());
            if chunk[..n] == SUFFIX[p.matched..p.matched + n] {
                if n == need {
                    self.event(chunk, base, p.kind, p.which, p.start, base + n as u64);
                } else {
                    p.matched += n;
                    self.pending = Some(p);
                }
            }
        }
        for r in memchr::memchr_iter(b'\r', chunk) {
            self.at_cr(chunk, base, r);
        }
        self.sync(chunk, base, base + chunk.len() as u64);
        self.log_tail.push(chunk);
        if chunk.len() >= LOOK {
            self.look.clear();
            self.look.extend_from_slice(&chunk[chunk.len() - LOOK..]);
        } else {
            self.look.extend_from_slice(chunk);
            let extra = self.look.len().saturating_sub(LOOK);
            self.look.drain(..extra);
        }
        self.offset += chunk.len() as u64;
    }

    /// A `\r` at `chunk[r]`: a marker of a candidate section may end here.
    fn at_cr(&mut self, chunk: &[u8], base: u64, r: usize) {
        let avail = (chunk.len() - r).min(SUFFIX.len());
        if chunk[r..r + avail] != SUFFIX[..avail] {
            return;
        }
        let prev = if r > 0 {
            chunk.get(r - 1)
        } else {
            self.look.last()
        };
        if !prev
            .is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b']'))
        {
            return;
        }
        let before: &[u8] = if r >= LOOK {
            &chunk[r - LOOK..r]
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.look);
            self.scratch.extend_from_slice(&chunk[..r]);
            &self.scratch
        };
        let Some((kind, name, len)) = marker::parse_backward(before) else {
            return;
        };
        let Some(which) = CANDIDATES.iter().position(|(n, _)| *n == name) else {
            return;
        };
        let start = base + r as u64 - len as u64;
        if avail == SUFFIX.len() {
            self.event(chunk, base, kind, which, start, base + (r + avail) as u64);
        } else {
            self.pending = Some(Pending {
                kind,
                which,
                start,
                matched: avail,
            });
        }
    }

    /// A complete candidate marker spanning stream offsets `start..end`.
    fn event(&mut self, chunk: &[u8], base: u64, kind: Kind, which: usize, start: u64, end: u64) {
        self.sync(chunk, base, end);
        let slot = std::mem::replace(&mut self.slots[which], Slot::Invalid);
        self.slots[which] = match (slot, kind) {
            (Slot::Unseen, Kind::Start) => Slot::Open(Box::new(Capture::new(end, which != 0))),
            (Slot::Open(mut c), Kind::End) => {
                c.truncate_to(start);
                Slot::Closed(c)
            }
            _ => Slot::Invalid,
        };
    }

    /// Appends the chunk's bytes up to stream offset `upto` to every open capture.
    fn sync(&mut self, chunk: &[u8], base: u64, upto: u64) {
        for slot in &mut self.slots {
            if let Slot::Open(c) = slot {
                if c.end < upto {
                    let from = (c.end - base) as usize;
                    c.append(&chunk[from..(upto - base) as usize]);
                }
            }
        }
    }

    /// Bytes held by the extractor's buffers (for the memory-bound test).
    pub fn retained_bytes(&self) -> usize {
        let slots: usize = self
            .slots
            .iter()
            .map(|s| match s {
                Slot::Open(c) | Slot::Closed(c) => c.retained(),
                _ => 0,
            })
            .sum();
        slots + self.look.capacity() + self.log_tail.buf.capacity() + self.scratch.capacity()
    }

    /// The result once the whole log was pushed.
    pub fn finish(mut self) -> Extraction {
        // A section still open at the end has one marker, not two: GitLab ignores it.
        let picked = self
            .slots
            .iter_mut()
            .zip(CANDIDATES)
            .find_map(
                |(slot, (_, kind))| match std::mem::replace(slot, Slot::Invalid) {
                    Slot::Closed(c) => Some((c, kind)),
                    _ => None,
                },
            );
        let outcome = match picked {
            Some((c, kind)) => Outcome::Reply(c.reply(kind)),
            None => Outcome::NoReplySection,
        };
        self.log_tail.settle();
        let (bytes, _) = self.log_tail.lines_part();
        let mut lines: Vec<String> = ansi::clean_lines(bytes)
            .into_iter()
            .filter(|l| !l.invisible())
            .map(|l| l.text)
            .collect();
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        let log_tail = lines.split_off(lines.len().saturating_sub(LOG_TAIL_LINES));
        Extraction {
            outcome,
            log_tail,
            log_bytes: self.offset,
        }
    }
}

/// Extract from a complete log in memory.
pub fn extract(log: &[u8]) -> Extraction {
    let mut x = Extractor::new();
    x.push(log);
    x.finish()
}

impl Reply {
    /// The reply as plain text: commands as `$ cmd` lines, output as is, a note where bytes
    /// were omitted.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, e) in self.entries.iter().enumerate() {
            if self.omitted_at == Some(i) {
                out.push_str(&omitted_note(self.omitted_bytes));
            }
            match e {
                Entry::Command(c) => {
                    out.push_str("$ ");
                    out.push_str(c);
                }
                Entry::Output(t) => out.push_str(t),
            }
            out.push('\n');
        }
        if self.omitted_at == Some(self.entries.len()) {
            out.push_str(&omitted_note(self.omitted_bytes));
        }
        out
    }
}

fn omitted_note(bytes: u64) -> String {
    format!("[... {bytes} bytes omitted ...]\n")
}
