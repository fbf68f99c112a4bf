//! From raw log bytes to the lines a person sees in a terminal: section markers removed,
//! SGR colours and every other CSI/OSC/escape sequence removed, `\r` and `\b` overwrites
//! applied (a progress bar collapses to its last frame), `\e[K` erases applied, invalid
//! UTF-8 replaced. Works on complete byte strings (the streaming part only keeps bytes), so
//! chunk boundaries never reach this code.

use super::marker;

/// The runner's command echo: bold green `$ ` (shells/bash.go `Noticef("$ %s")`).
const ECHO: &[u8] = b"\x1b[32;1m$ ";
/// Cursor moves are capped so a hostile `\e[999999999C` cannot allocate.
const MAX_COLUMN: usize = 4096;

/// One visible line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    /// The raw line held at least one section marker (a marker-only line is invisible in
    /// GitLab's job view, so an empty one is dropped).
    pub had_marker: bool,
    /// The raw line is a runner command echo (`\e[32;1m$ cmd`), possibly after
    /// `\e[0K`/reset codes or a section marker (FF_SCRIPT_SECTIONS).
    pub echo: bool,
}

impl Line {
    /// The command of an echo line, without the `$ ` prefix.
    pub fn command(&self) -> Option<&str> {
        if self.echo {
            self.text.strip_prefix("$ ")
        } else {
            None
        }
    }

    /// Shown nowhere: a line that only carried section markers.
    pub fn invisible(&self) -> bool {
        self.had_marker && self.text.trim().is_empty()
    }
}

/// Split on `\n` (a final piece without `\n` counts; an empty one after the last `\n` does
/// not) and clean each line.
pub fn clean_lines(raw: &[u8]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut term = Term::default();
    let mut rest = raw;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        out.push(clean_line(line, &mut term));
        rest = next;
    }
    out
}

/// Clean one line (no `\n` inside).
pub fn clean_line(raw: &[u8], term: &mut Term) -> Line {
    term.reset();
    let mut had_marker = false;
    let mut echo = false;
    // Still before any visible text or non-reset escape: where a command echo may begin.
    let mut at_start = true;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b's' => {
                if let Some(m) = marker::parse_forward(&raw[i..]) {
                    had_marker = true;
                    i += m.len;
                    continue;
                }
                i = text_run(raw, i, term);
                at_start = false;
            }
            0x1b => {
                if at_start && raw[i..].starts_with(ECHO) {
                    echo = true;
                    at_start = false;
                }
                let (len, action) = escape(&raw[i..]);
                if at_start && !matches!(action, Action::Reset | Action::Erase(0)) {
                    at_start = false;
                }
                term.apply(action);
                i += len;
            }
            b'\r' => {
                term.cur = 0;
                i += 1;
            }
            0x08 => {
                term.cur = term.cur.saturating_sub(1);
                i += 1;
            }
            b'\t' => {
                term.put('\t');
                at_start = false;
                i += 1;
            }
            0..=0x1f | 0x7f => i += 1,
            _ => {
                i = text_run(raw, i, term);
                at_start = false;
            }
        }
    }
    Line {
        text: term.text(),
        had_marker,
        echo,
    }
}

/// Writes the printable run starting at `i` (up to the next control byte, escape or
/// possible marker) and returns where it ended.
fn text_run(raw: &[u8], i: usize, term: &mut Term) -> usize {
    // The first byte is always taken (it may be an `s` that did not start a marker).
    let mut j = i + 1;
    while j < raw.len() {
        let c = raw[j];
        if c < 0x20 || c == 0x7f || c == b's' {
            break;
        }
        j += 1;
    }
    for ch in String::from_utf8_lossy(&raw[i..j]).chars() {
        // C1 controls (U+0080..U+009F) are terminal controls, not text.
        if !('\u{80}'..='\u{9f}').contains(&ch) {
            term.put(ch);
        }
    }
    j
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    None,
    /// SGR 0 (`\e[0;m`, `\e[0m`, `\e[m`): the runner's resets.
    Reset,
    /// `\e[nK`.
    Erase(u16),
    /// `\e[nG`.
    Column(u16),
    /// `\e[nC`.
    Forward(u16),
    /// `\e[nD`.
    Back(u16),
}

/// Length and meaning of the escape sequence at `b[0] == ESC`. Malformed sequences end at
/// the first byte that does not fit (that byte is then read as text).
fn escape(b: &[u8]) -> (usize, Action) {
    match b.get(1) {
        None => (1, Action::None),
        Some(b'[') => {
            let mut i = 2;
            while i < b.len() && (0x30..=0x3f).contains(&b[i]) {
                i += 1;
            }
            let params = &b[2..i];
            while i < b.len() && (0x20..=0x2f).contains(&b[i]) {
                i += 1;
            }
            match b.get(i) {
                Some(&f) if (0x40..=0x7e).contains(&f) => (i + 1, csi(params, f)),
                _ => (i, Action::None),
            }
        }
        Some(b']' | b'P' | b'X' | b'^' | b'_') => {
            // String sequence (OSC, DCS, ...): up to BEL or ST (`ESC \`), else the line end.
            let mut i = 2;
            while i < b.len() {
                match b[i] {
                    0x07 => return (i + 1, Action::None),
                    0x1b if b.get(i + 1) == Some(&b'\\') => return (i + 2, Action::None),
                    _ => i += 1,
                }
            }
            (i, Action::None)
        }
        Some(&c) if (0x20..=0x2f).contains(&c) => {
            // nF: intermediates then one final byte (e.g. `ESC ( B`).
            let mut i = 2;
            while i < b.len() && (0x20..=0x2f).contains(&b[i]) {
                i += 1;
            }
            match b.get(i) {
                Some(&f) if (0x30..=0x7e).contains(&f) => (i + 1, Action::None),
                _ => (i, Action::None),
            }
        }
        Some(&c) if (0x30..=0x7e).contains(&c) => (2, Action::None),
        Some(_) => (1, Action::None),
    }
}

fn csi(params: &[u8], f: u8) -> Action {
    let first = || -> Option<u16> {
        let p = params.split(|&c| c == b';').next().unwrap_or(&[]);
        if p.is_empty() {
            return None;
        }
        let mut n: u16 = 0;
        for &d in p {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n.saturating_mul(10).saturating_add(u16::from(d - b'0'));
        }
        Some(n)
    };
    match f {
        b'm' if params.iter().all(|&c| c == b'0' || c == b';') => Action::Reset,
        b'K' => Action::Erase(first().unwrap_or(0)),
        b'G' => Action::Column(first().unwrap_or(1)),
        b'C' => Action::Forward(first().unwrap_or(1).max(1)),
        b'D' => Action::Back(first().unwrap_or(1).max(1)),
        _ => Action::None,
    }
}

/// One terminal line: cells and a cursor.
#[derive(Debug, Default)]
pub struct Term {
    cells: Vec<char>,
    cur: usize,
}

impl Term {
    fn reset(&mut self) {
        self.cells.clear();
        self.cur = 0;
    }

    fn put(&mut self, c: char) {
        if self.cur < self.cells.len() {
            self.cells[self.cur] = c;
        } else {
            self.cells.resize(self.cur, ' ');
            self.cells.push(c);
        }
        self.cur += 1;
    }

    fn apply(&mut self, a: Action) {
        let limit = MAX_COLUMN.max(self.cells.len());
        match a {
            Action::None | Action::Reset => {}
            Action::Erase(0) => self.cells.truncate(self.cur),
            Action::Erase(1) => {
                let n = (self.cur + 1).min(self.cells.len());
                self.cells[..n].iter_mut().for_each(|c| *c = ' ');
            }
            Action::Erase(_) => self.cells.clear(),
            Action::Column(n) => self.cur = usize::from(n.max(1) - 1).min(limit),
            Action::Forward(n) => self.cur = (self.cur + usize::from(n)).min(limit),
            Action::Back(n) => self.cur = self.cur.saturating_sub(usize::from(n)),
        }
    }

    fn text(&self) -> String {
        self.cells.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(raw: &[u8]) -> Line {
        clean_line(raw, &mut Term::default())
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], &str, bool, bool)] = &[
            (b"plain", "plain", false, false),
            (b"\x1b[32;1m$ whoami\x1b[0;m", "$ whoami", false, true),
            (b"\x1b[0;m\x1b[32;1m$ ls\x1b[0;m", "$ ls", false, true),
            (
                b"\x1b[0Ksection_start:1:section_script_step_0\r\x1b[0K\x1b[32;1m$ ls\x1b[0;m",
                "$ ls",
                true,
                true,
            ),
            (
                b"\x1b[32;1mCloning repository...\x1b[0;m",
                "Cloning repository...",
                false,
                false,
            ),
            (
                b"x \x1b[32;1m$ not-a-command",
                "x $ not-a-command",
                false,
                false,
            ),
            (b"10%\r20%\r100%", "100%", false, false),
            (b"abcdef\rXY", "XYcdef", false, false),
            (b"abcdef\r\x1b[0KXY", "XY", false, false),
            (b"abc\r\x1b[2Kd", "d", false, false),
            (b"done\r", "done", false, false),
            (b"ab\x08c", "ac", false, false),
            (
                b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\",
                "link",
                false,
                false,
            ),
            (b"\x1b]0;title\x07t", "t", false, false),
            (b"\x1b(Bx", "x", false, false),
            (b"a\x00b\x7fc", "abc", false, false),
            (b"\xff\xfeok", "\u{fffd}\u{fffd}ok", false, false),
            (
                b"\xe8\xa8\xb1\x1b[0m\xe5\x8a\x9f",
                "\u{8a31}\u{529f}",
                false,
                false,
            ),
            (
                b"section_end:1:step_script\r\x1b[0Ksection_start:2:after_script\r\x1b[0K",
                "",
                true,
                false,
            ),
            (
                b"section_start:$( date +%s ):chat_reply\\r\\033[0K",
                "section_start:$( date +%s ):chat_reply\\r\\033[0K",
                false,
                false,
            ),
            (b"\x1b[999999999Cx", "", false, false),
            (b"\x1b[", "", false, false),
            (b"\x1b[31", "", false, false),
            (b"\x1b", "", false, false),
        ];
        for (raw, text, marker, echo) in cases {
            let l = one(raw);
            if raw.starts_with(b"\x1b[999999999C") {
                assert_eq!(l.text.chars().count(), MAX_COLUMN + 1);
                continue;
            }
            assert_eq!(
                (l.text.as_str(), l.had_marker, l.echo),
                (*text, *marker, *echo),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn lines() {
        let ls = clean_lines(b"a\r\nb\n\nc");
        let texts: Vec<_> = ls.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "", "c"]);
        assert!(clean_lines(b"").is_empty());
        assert_eq!(clean_lines(b"x\n").len(), 1);
    }
}
