//! Runner section markers, recognised exactly as GitLab's trace section parser does
//! (`Gitlab::Regex.build_trace_section_regex`):
//! `section_(start|end):\d+:[A-Za-z0-9_.-]+(\[\w+=\w+(, ?\w+=\w+)*\])?\r\e[0K`.
//!
//! Two entry points that must agree: [`parse_forward`] (the cleaner, which has whole lines)
//! and [`parse_backward`] (the streaming scanner, which finds the `\r` first and looks back).

/// Every marker ends with a real carriage return and "erase in line".
pub const SUFFIX: &[u8] = b"\r\x1b[0K";

/// Longest name the streaming scanner looks back over (it only acts on short, known names).
const MAX_NAME: usize = 64;
/// Longest `[options]` the streaming scanner looks back over.
const MAX_OPTIONS: usize = 256;
/// Longest timestamp (digits) the streaming scanner accepts; `u64::MAX` has 20.
const MAX_DIGITS: usize = 20;
/// How many bytes before a `\r` the scanner may need: keyword + digits + name + options.
pub const MAX_PREFIX: usize = 14 + MAX_DIGITS + 1 + MAX_NAME + MAX_OPTIONS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Start,
    End,
}

/// A marker found at the start of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker<'a> {
    pub kind: Kind,
    pub name: &'a [u8],
    /// Bytes from `section_` to the end of `\r\e[0K`.
    pub len: usize,
}

fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `section_(start|end):\d+:name(options)?` covering all of `b`, or the length it covers.
/// Returns the kind, the name's range and the length of the prefix parsed.
fn parse_prefix(b: &[u8]) -> Option<(Kind, std::ops::Range<usize>, usize)> {
    let (kind, mut i) = if b.starts_with(b"section_start:") {
        (Kind::Start, 14)
    } else if b.starts_with(b"section_end:") {
        (Kind::End, 12)
    } else {
        return None;
    };
    let digits = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == digits || b.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    let name = i;
    while i < b.len() && is_name(b[i]) {
        i += 1;
    }
    if i == name {
        return None;
    }
    let name = name..i;
    if b.get(i) == Some(&b'[') {
        i += options_len(&b[i..])?;
    }
    Some((kind, name, i))
}

/// Length of `[k=v(, ?k=v)*]` at the start of `b` (which starts with `[`).
fn options_len(b: &[u8]) -> Option<usize> {
    let word = |mut i: usize| -> Option<usize> {
        let start = i;
        while i < b.len() && is_word(b[i]) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    let mut i = 1;
    loop {
        i = word(i)?;
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i = word(i + 1)?;
        match b.get(i) {
            Some(b']') => return Some(i + 1),
            Some(b',') => {
                i += 1;
                if b.get(i) == Some(&b' ') {
                    i += 1;
                }
            }
            _ => return None,
        }
    }
}

/// A marker starting at `b[0]`, if there is one.
pub fn parse_forward(b: &[u8]) -> Option<Marker<'_>> {
    let (kind, name, end) = parse_prefix(b)?;
    if !b[end..].starts_with(SUFFIX) {
        return None;
    }
    Some(Marker {
        kind,
        name: &b[name],
        len: end + SUFFIX.len(),
    })
}

/// The marker ending right before a `\r`: `before` holds the bytes before it. Returns the
/// kind, the name and how many bytes of `before` belong to the marker. Names longer than 64
/// bytes, options longer than 256 and timestamps longer than 20 digits are not looked for.
pub fn parse_backward(before: &[u8]) -> Option<(Kind, &[u8], usize)> {
    let mut end = before.len();
    if end > 0 && before[end - 1] == b']' {
        let lim = end.saturating_sub(MAX_OPTIONS);
        end = lim + memchr::memrchr(b'[', &before[lim..end])?;
    }
    let mut i = end;
    while i > 0 && is_name(before[i - 1]) {
        i -= 1;
        if end - i > MAX_NAME {
            return None;
        }
    }
    if i == end || i == 0 || before[i - 1] != b':' {
        return None;
    }
    let digits_end = i - 1;
    let mut j = digits_end;
    while j > 0 && before[j - 1].is_ascii_digit() {
        j -= 1;
        if digits_end - j > MAX_DIGITS {
            return None;
        }
    }
    if j == digits_end || j == 0 || before[j - 1] != b':' {
        return None;
    }
    let head = &before[..j - 1];
    let start = if head.ends_with(b"section_start") {
        head.len() - 13
    } else if head.ends_with(b"section_end") {
        head.len() - 11
    } else {
        return None;
    };
    // The forward grammar is the reference: it must cover exactly these bytes.
    let (kind, name, len) = parse_prefix(&before[start..])?;
    if start + len != before.len() {
        return None;
    }
    Some((kind, &before[start + name.start..start + name.end], len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(s: &[u8]) -> Option<(Kind, String, usize)> {
        parse_forward(s).map(|m| (m.kind, String::from_utf8_lossy(m.name).into_owned(), m.len))
    }

    #[test]
    fn forward_table() {
        type Case<'a> = (&'a [u8], Option<(Kind, &'a str)>);
        let cases: &[Case] = &[
            (
                b"section_start:1506004958:build_script\r\x1b[0K",
                Some((Kind::Start, "build_script")),
            ),
            (
                b"section_end:1:step_script\r\x1b[0K",
                Some((Kind::End, "step_script")),
            ),
            (
                b"section_start:1:a.b-c_9[collapsed=true]\r\x1b[0K",
                Some((Kind::Start, "a.b-c_9")),
            ),
            (
                b"section_start:1:x[hide_duration=true,collapsed=true]\r\x1b[0K",
                Some((Kind::Start, "x")),
            ),
            (
                b"section_start:1:x[a=b, c=d]\r\x1b[0K",
                Some((Kind::Start, "x")),
            ),
            (b"section_start:1:x[a=b=c]\r\x1b[0K", None),
            (b"section_start:1:x[]\r\x1b[0K", None),
            (b"section_start:1:x[a=]\r\x1b[0K", None),
            (b"section_start:$( date +%s ):chat_reply\r\x1b[0K", None),
            (b"section_start:1:chat_reply\\r\\033[0K", None),
            (b"section_start:1:chat_reply\r", None),
            (b"section_start::chat_reply\r\x1b[0K", None),
            (b"section_start:1:\r\x1b[0K", None),
            (b"section_middle:1:x\r\x1b[0K", None),
        ];
        for (input, want) in cases {
            let got = fwd(input).map(|(k, n, _)| (k, n));
            let want = want.map(|(k, n)| (k, n.to_string()));
            assert_eq!(got, want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn backward_agrees_with_forward() {
        let inputs: &[&[u8]] = &[
            b"xx section_start:1506004958:build_script\r\x1b[0K",
            b"section_end:1:step_script\r\x1b[0K",
            b"section_start:1:a.b-c_9[collapsed=true]\r\x1b[0K",
            b"section_start:1:x[a=b=c]\r\x1b[0K",
            b"section_start:1:section_end:2:chat_reply\r\x1b[0K",
            b"section_start:12:x[a=b, c=d]\r\x1b[0K",
            b"asection_end:9:y\r\x1b[0K",
            b"section_start:$( date +%s ):chat_reply\r\x1b[0K",
        ];
        for input in inputs {
            let cr = memchr::memchr(b'\r', input).unwrap();
            let back = parse_backward(&input[..cr]).map(|(k, n, len)| (k, n.to_vec(), cr - len));
            let fwd = memchr::memmem::find_iter(input, b"section_")
                .find_map(|s| parse_forward(&input[s..]).map(|m| (m.kind, m.name.to_vec(), s)));
            assert_eq!(back, fwd, "{}", String::from_utf8_lossy(input));
        }
    }
}
