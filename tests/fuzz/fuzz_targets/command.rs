//! Fuzz target: the text of a slash command through `command::parse`, then every notice the
//! product may answer it with, rendered for Slack and Mattermost.
//!
//! Input: any UTF-8 (other bytes are skipped), the `text` field as a person typed it. Seeds
//! are the `text` of the real payloads and the hostile strings of the markup tests (see
//! ../README.md).
//!
//! Checked:
//! - nothing panics;
//! - the grammar: `run <job> [input]` has a non-empty job without whitespace, the input is
//!   the rest after the job, verbatim (trimmed at its ends only); blank or `help` is help;
//! - markup from the input is always escaped: the Slack rendering of an invalid command, the
//!   usage or a scheduling notice contains no `<` at all (so no `<!channel>`, `<@U…>` or
//!   `<url|…>` from the input), every `&` is an entity; a started notice holds exactly the
//!   one mention and two links the product put there; on Mattermost every `@` that came from
//!   the input is followed by a word joiner (no `@channel`/`@here`/`@someone`).
#![no_main]

use chatops_core::command::{self, Command};
use chatops_core::notice::{Notice, Person, Unscheduled};
use chatops_core::run::Platform;
use libfuzzer_sys::fuzz_target;

const WORD_JOINER: char = '\u{2060}';

/// Every `&` starts one of the three entities Slack decodes.
fn entities_only(s: &str) {
    for (i, _) in s.match_indices('&') {
        let rest = &s[i..];
        assert!(
            rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;"),
            "bare & in {s:?}"
        );
    }
}

/// Slack text built from the input alone: no markup at all can come through.
fn slack_plain(notice: &Notice) {
    let s = notice.render(Platform::Slack);
    assert!(!s.contains("<!"), "raw <! in {s:?}");
    assert!(!s.contains("<@"), "raw <@ in {s:?}");
    assert!(!s.contains('<') && !s.contains('>'), "raw < or > in {s:?}");
    entities_only(&s);
}

/// Mattermost: every `@` is followed by a word joiner, except the product's own mentions of
/// `allowed` (each exactly once).
fn mattermost_no_mentions(notice: &Notice, allowed: &[&str]) {
    let m = notice.render(Platform::Mattermost);
    let mut rest = m.as_str();
    let mut allowed_seen = 0;
    while let Some(i) = rest.find('@') {
        let after = &rest[i + 1..];
        if let Some(name) = allowed.iter().find(|a| after.starts_with(**a)) {
            allowed_seen += 1;
            rest = &after[name.len()..];
            continue;
        }
        assert!(
            after.starts_with(WORD_JOINER),
            "an @ without a word joiner in {m:?}"
        );
        rest = after;
    }
    assert_eq!(allowed_seen, allowed.len(), "{m:?}");
}

fn check_grammar(text: &str, cmd: &Command) {
    let trimmed = text.trim();
    match cmd {
        Command::Help => assert!(trimmed.is_empty() || trimmed == "help"),
        Command::Invalid(t) => {
            assert_eq!(t, trimmed);
            assert!(!trimmed.is_empty() && trimmed != "help");
        }
        Command::Run { job, input } => {
            assert!(!job.is_empty(), "empty job from {text:?}");
            assert!(!job.contains(char::is_whitespace), "job {job:?}");
            let rest = trimmed.strip_prefix("run").expect("run without `run`");
            assert!(rest.starts_with(char::is_whitespace));
            let rest = rest.trim_start();
            assert!(rest.starts_with(job.as_str()));
            assert_eq!(input.as_str(), rest[job.len()..].trim_start());
        }
    }
}

fn check_notices(text: &str, cmd: &Command) {
    // Help and invalid texts, with the input as the slash command too (it is typed as well).
    for slash in ["/chatops", text] {
        let usage = Notice::Usage {
            slash: slash.to_owned(),
        };
        slack_plain(&usage);
        mattermost_no_mentions(&usage, &[]);
        let invalid = Notice::Invalid {
            slash: slash.to_owned(),
            text: text.to_owned(),
        };
        slack_plain(&invalid);
        mattermost_no_mentions(&invalid, &[]);
    }
    let Command::Run { job, input } = cmd else {
        return;
    };
    for notice in [
        Notice::Scheduling { job: job.clone() },
        Notice::CouldNotQueue { job: job.clone() },
        Notice::Unscheduled {
            job: job.clone(),
            why: Unscheduled::NoSuchJob {
                branch: "main".into(),
            },
        },
        Notice::Unscheduled {
            job: job.clone(),
            why: Unscheduled::ExcludedFromChat,
        },
    ] {
        slack_plain(&notice);
        mattermost_no_mentions(&notice, &[]);
    }
    let started = Notice::Started {
        who: Person {
            id: "U0ALICE".into(),
            name: "alice".into(),
        },
        job: job.clone(),
        input: input.clone(),
        job_url: "https://gitlab.example.com/demo/ops/-/jobs/1000".into(),
        pipeline_url: "https://gitlab.example.com/demo/ops/-/pipelines/100".into(),
    };
    let s = started.render(Platform::Slack);
    assert!(!s.contains("<!"), "raw <! in {s:?}");
    assert_eq!(s.matches("<@").count(), 1, "{s:?}");
    assert!(s.starts_with("<@U0ALICE>"), "{s:?}");
    // The mention and two links, nothing else opens a Slack control sequence.
    assert_eq!(s.matches('<').count(), 3, "{s:?}");
    assert_eq!(s.matches('>').count(), 3, "{s:?}");
    entities_only(&s);
    mattermost_no_mentions(&started, &["alice"]);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cmd = command::parse(text);
    assert_eq!(cmd, command::parse(text), "not deterministic");
    check_grammar(text, &cmd);
    check_notices(text, &cmd);
});
