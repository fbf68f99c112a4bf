//! From a selected section's captured bytes to reply entries: what the ChatOps docs promise
//! (chat_reply verbatim; one command: its output; several: commands and outputs), without the
//! runner's stage header, the executor's preamble or the colour codes GitLab itself leaks.

use super::ansi::{clean_lines, Line};
use super::{Entry, SectionKind};

/// The bytes kept of one section: all of it, or a head and a tail around a gap.
pub struct Content<'a> {
    pub head: &'a [u8],
    /// `Some` when bytes were omitted between head and tail.
    pub tail: Option<&'a [u8]>,
    /// Runner command echoes seen in the whole section (counted up to 2 while streaming);
    /// decides "one command or several" when the gap may hide some.
    pub echoes_seen: u8,
}

/// Entries, and the index of the first entry after the gap (when there is one).
pub fn entries(kind: SectionKind, content: &Content<'_>) -> (Vec<Entry>, Option<usize>) {
    let mut head = clean_lines(content.head);
    // The rest of the start-marker line: GitLab drops it for every section; for script
    // sections it is the runner's stage header, or (before runner 13) the first command echo.
    if !head.is_empty() {
        let first = &head[0];
        let drop = match kind {
            SectionKind::ChatReply => true,
            SectionKind::StepScript | SectionKind::BuildScript => {
                first.text.trim().is_empty() || is_stage_header(&first.text, kind)
            }
        };
        if drop {
            head.remove(0);
        }
    }
    let tail = content.tail.map(clean_lines);
    match kind {
        SectionKind::ChatReply => chat_reply(head, tail),
        _ => script(head, tail, content.echoes_seen),
    }
}

fn is_stage_header(text: &str, kind: SectionKind) -> bool {
    let name = match kind {
        SectionKind::StepScript => "step_script",
        _ => "build_script",
    };
    text.trim() == format!("Executing \"{name}\" stage of the job script")
}

fn visible(lines: Vec<Line>) -> impl Iterator<Item = Line> {
    lines.into_iter().filter(|l| !l.invisible())
}

fn chat_reply(head: Vec<Line>, tail: Option<Vec<Line>>) -> (Vec<Entry>, Option<usize>) {
    let mut entries = Vec::new();
    push_output(&mut entries, visible(head).map(|l| l.text).collect(), false);
    let gap = tail.map(|tail| {
        let at = entries.len();
        push_output(&mut entries, visible(tail).map(|l| l.text).collect(), false);
        at
    });
    (entries, gap)
}

/// One piece of a script section, in order.
enum Item {
    Command(String),
    Output(String),
}

fn items(lines: Vec<Line>) -> Vec<Item> {
    visible(lines)
        .map(|l| match l.command() {
            Some(c) => Item::Command(c.to_string()),
            None => Item::Output(l.text),
        })
        .collect()
}

fn script(
    head: Vec<Line>,
    tail: Option<Vec<Line>>,
    echoes_seen: u8,
) -> (Vec<Entry>, Option<usize>) {
    let head = items(head);
    let tail = tail.map(items);
    let count = |items: &[Item]| {
        items
            .iter()
            .filter(|i| matches!(i, Item::Command(_)))
            .count()
    };
    let visible_commands = count(&head) + tail.as_deref().map_or(0, count);
    let commands = if tail.is_some() {
        visible_commands.max(usize::from(echoes_seen))
    } else {
        visible_commands
    };

    let several = commands >= 2;
    let mut entries = Vec::new();
    // Output before the first command is the executor's (`Using docker image ...`), unless
    // the section ran no command at all.
    emit(head, several, commands == 0, &mut entries);
    let gap = tail.map(|tail| {
        let at = entries.len();
        // Whatever the tail starts with belongs to a command before the gap.
        emit(tail, several, true, &mut entries);
        at
    });
    (entries, gap)
}

fn emit(items: Vec<Item>, several: bool, mut in_command: bool, entries: &mut Vec<Entry>) {
    let mut lines: Vec<String> = Vec::new();
    for item in items {
        match item {
            Item::Command(c) => {
                push_output(entries, std::mem::take(&mut lines), true);
                in_command = true;
                if several {
                    entries.push(Entry::Command(c));
                }
            }
            Item::Output(t) if in_command => lines.push(t),
            Item::Output(_) => {}
        }
    }
    push_output(entries, lines, true);
}

/// Adds the lines as one Output entry, unless there is nothing to show. Script output loses
/// trailing blank lines; a chat_reply section is kept exactly.
fn push_output(entries: &mut Vec<Entry>, mut lines: Vec<String>, trim: bool) {
    if trim {
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
    }
    if lines.is_empty() {
        return;
    }
    entries.push(Entry::Output(lines.join("\n")));
}
