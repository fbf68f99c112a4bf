//! Rendering a finished job as a chat message, for Slack (Block Kit + mrkdwn) and Mattermost
//! (markdown + attachment colours), within each platform's limits.
//!
//! Slack: a section is at most 3,000 characters, a message at most 50 blocks and 40,000
//! characters; in practice Slack refuses messages whose block text nears 13,000 characters
//! (`msg_blocks_too_long`), so output shown inline stays under `SLACK_INLINE_OUTPUT_MAX` and
//! longer output is shown as head and tail, with the full text as a file (when a bot token
//! can upload it) or a link to the job log. Mattermost caps a post at 16,383 characters.

use crate::chat::{FileAttachment, OutgoingMessage};
use crate::gitlab::Status;
use crate::ids::JobId;
use crate::markup::Rich;
use crate::reply::{Entry, Extraction, Outcome, Reply};
use crate::run::Platform;
use serde_json::{json, Value};

pub const SLACK_SECTION_MAX: usize = 3_000;
pub const SLACK_BLOCKS_MAX: usize = 50;
pub const SLACK_MESSAGE_MAX: usize = 40_000;
/// Escaped output characters shown inline before shortening to head and tail.
pub const SLACK_INLINE_OUTPUT_MAX: usize = 8_000;
pub const MATTERMOST_POST_MAX: usize = 16_383;
/// Output characters shown inline on Mattermost before shortening to head and tail.
pub const MATTERMOST_INLINE_OUTPUT_MAX: usize = 12_000;

/// Room a fenced block takes besides its content (fences, newlines).
const FENCE_OVERHEAD: usize = 8;
/// Each of head and tail, when output is shortened.
const SLACK_HEAD_TAIL_MAX: usize = SLACK_SECTION_MAX - 2 * FENCE_OVERHEAD;
const MATTERMOST_HEAD_TAIL_MAX: usize = 5_000;

/// Everything a reply says about a finished job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub job_name: String,
    pub job_id: JobId,
    pub status: Status,
    pub duration_secs: Option<f64>,
    pub failure_reason: Option<String>,
    pub job_url: String,
    /// Slack user id (`U…`), mentioned as `<@U…>`.
    pub user_id: String,
    /// Mattermost username, mentioned as `@name`.
    pub user_name: String,
    pub extraction: Extraction,
}

/// What the reply shows, decided once for both platforms.
enum Body {
    /// The job succeeded with this output (commands as `$ cmd` lines).
    Output { text: String, omitted_bytes: u64 },
    /// Succeeded, printed nothing.
    Empty,
    /// Succeeded, but the log has no section to reply with.
    NoSection,
    /// Failed: the last lines of the log.
    Failed { tail: String },
    /// Cancelled or skipped: nothing more to say.
    Stopped,
}

impl JobReport {
    fn body(&self) -> Body {
        match self.status {
            Status::Failed => Body::Failed {
                tail: failure_tail(&self.extraction),
            },
            Status::Canceled | Status::Canceling | Status::Skipped => Body::Stopped,
            _ => match &self.extraction.outcome {
                Outcome::NoReplySection => Body::NoSection,
                Outcome::Reply(r) => {
                    let text = reply_text(r);
                    if text.trim().is_empty() && r.omitted_bytes == 0 {
                        Body::Empty
                    } else {
                        Body::Output {
                            text,
                            omitted_bytes: r.omitted_bytes,
                        }
                    }
                }
            },
        }
    }

    fn mention(&self) -> Rich {
        if self.user_id.is_empty() && self.user_name.is_empty() {
            Rich::new()
        } else {
            Rich::new()
                .mention(&self.user_id, &self.user_name)
                .text(" ")
        }
    }

    fn job_link(&self) -> Rich {
        Rich::new().link(&self.job_url, format!("job #{}", self.job_id))
    }

    /// The first line of every reply: emoji, who, which job, how it ended, the link.
    fn header(&self, body: &Body) -> Rich {
        let mut r = Rich::new()
            .emoji(self.emoji(body))
            .text(" ")
            .then(self.mention())
            .code(&self.job_name)
            .text(format!(" {}", self.verb()));
        if let Some(reason) = self.failure_reason_text() {
            r = r.text(format!(" ({reason})"));
        }
        r.text(" · ").then(self.job_link())
    }

    /// The notification text (no markup beyond the mention).
    fn fallback(&self) -> Rich {
        self.mention()
            .text(format!("{} {}", self.job_name, self.verb()))
    }

    fn verb(&self) -> String {
        let d = self.duration_secs.map(human_duration);
        match (self.status, d) {
            (Status::Success, Some(d)) => format!("succeeded in {d}"),
            (Status::Success, None) => "succeeded".into(),
            (Status::Failed, Some(d)) => format!("failed after {d}"),
            (Status::Failed, None) => "failed".into(),
            (Status::Canceled | Status::Canceling, Some(d)) => format!("was cancelled after {d}"),
            (Status::Canceled | Status::Canceling, None) => "was cancelled".into(),
            (Status::Skipped, _) => "was skipped".into(),
            (other, _) => format!("ended as {}", status_word(other)),
        }
    }

    fn emoji(&self, body: &Body) -> &'static str {
        match (self.status, body) {
            (Status::Failed, _) => "x",
            (Status::Canceled | Status::Canceling | Status::Skipped, _) => "no_entry_sign",
            (_, Body::NoSection) => "warning",
            _ => "white_check_mark",
        }
    }

    fn failure_reason_text(&self) -> Option<String> {
        self.failure_reason
            .as_deref()
            .filter(|r| !r.is_empty() && self.status == Status::Failed)
            .map(|r| r.replace('_', " "))
    }

    fn file_name(&self) -> String {
        let safe: String = self
            .job_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{safe}-{}.txt", self.job_id)
    }
}

fn status_word(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// The reply as plain text: output as printed, commands as `$ cmd` lines, and a marker where
/// the extractor dropped bytes from the middle.
pub fn reply_text(reply: &Reply) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (i, e) in reply.entries.iter().enumerate() {
        if reply.omitted_bytes > 0 && reply.omitted_at == Some(i) {
            parts.push(format!("[… {} bytes omitted …]", reply.omitted_bytes));
        }
        match e {
            Entry::Command(c) => parts.push(format!("$ {c}")),
            Entry::Output(o) => {
                let o = o.trim_end_matches(['\n', '\r']);
                if !o.is_empty() {
                    parts.push(o.to_owned());
                }
            }
        }
    }
    if reply.omitted_bytes > 0 && reply.omitted_at.is_none_or(|i| i >= reply.entries.len()) {
        parts.push(format!("[… {} bytes omitted …]", reply.omitted_bytes));
    }
    parts.join("\n")
}

/// Lines of a failed job's output shown in the reply.
const FAILURE_TAIL_LINES: usize = 20;

/// What a failed job said: the end of its script section (the user's commands and their
/// output, not the runner's preamble), then the runner's verdict line (`ERROR: Job failed…`).
/// The raw end of the log only when there is no script section to read.
fn failure_tail(x: &Extraction) -> String {
    let Outcome::Reply(reply) = &x.outcome else {
        return x.log_tail.join("\n").trim_end().to_owned();
    };
    let text = reply_text(reply);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let mut out = lines[lines.len().saturating_sub(FAILURE_TAIL_LINES)..].join("\n");
    if let Some(verdict) = x.log_tail.iter().rev().find(|l| l.starts_with("ERROR: ")) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(verdict.trim_end());
    }
    out
}

/// `12s`, `1m 5s`, `2h 3m`.
pub fn human_duration(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs.round() as u64
    } else {
        0
    };
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

pub use crate::markup::slack_escape;

/// Text for inside a Slack code block: escaped, and ``` broken up with zero-width spaces
/// (Slack has no escape for backticks, and a ``` in the output would end the block).
fn slack_code_text(s: &str) -> String {
    slack_escape(s).replace("```", "`\u{200b}`\u{200b}`")
}

fn slack_cost(c: char) -> usize {
    match c {
        '&' => 5,
        '<' | '>' => 4,
        _ => 1,
    }
}

fn text_cost(s: &str, cost: fn(char) -> usize) -> usize {
    s.chars().map(cost).sum::<usize>() + 2 * s.matches("```").count()
}

fn plain_cost(_: char) -> usize {
    1
}

/// A character's cost when a line must be split by characters (a backtick may grow by one).
fn char_cost(c: char, cost: fn(char) -> usize) -> usize {
    cost(c) + usize::from(c == '`')
}

/// Split into chunks of at most `max` cost each, at line ends where possible.
fn chunk_lines(text: &str, max: usize, cost: fn(char) -> usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut cur = String::new();
    let mut cur_cost = 0;
    let mut has = false;
    for line in text.split('\n') {
        let lc = text_cost(line, cost);
        let add = if has { lc + 1 } else { lc };
        if cur_cost + add <= max {
            if has {
                cur.push('\n');
            }
            cur.push_str(line);
            cur_cost += add;
            has = true;
            continue;
        }
        if has {
            chunks.push(std::mem::take(&mut cur));
        }
        if lc <= max {
            cur.push_str(line);
            cur_cost = lc;
        } else {
            // One line longer than a chunk: split it by characters.
            let mut part = String::new();
            let mut pc = 0;
            for c in line.chars() {
                let cc = char_cost(c, cost);
                if pc + cc > max {
                    chunks.push(std::mem::take(&mut part));
                    pc = 0;
                }
                part.push(c);
                pc += cc;
            }
            cur = part;
            cur_cost = pc;
        }
        has = true;
    }
    if has || chunks.is_empty() {
        chunks.push(cur);
    }
    chunks
}

/// The first lines of `text` within `max` cost, and how many lines that is.
fn head(text: &str, max: usize, cost: fn(char) -> usize) -> (String, usize) {
    let first = chunk_lines(text, max, cost)
        .into_iter()
        .next()
        .unwrap_or_default();
    let n = first.split('\n').count();
    (first, n)
}

/// The last lines of `text` within `max` cost, and how many lines that is.
fn tail(text: &str, max: usize, cost: fn(char) -> usize) -> (String, usize) {
    let mut taken: Vec<String> = Vec::new();
    let mut total = 0;
    for line in text.split('\n').rev() {
        let lc = text_cost(line, cost);
        let add = if taken.is_empty() { lc } else { lc + 1 };
        if total + add > max {
            if taken.is_empty() {
                // A single huge last line: keep its end.
                let chars: Vec<char> = line.chars().collect();
                let mut budget = max;
                let mut start = chars.len();
                while start > 0 && budget >= char_cost(chars[start - 1], cost) {
                    budget -= char_cost(chars[start - 1], cost);
                    start -= 1;
                }
                taken.push(chars[start..].iter().collect());
            }
            break;
        }
        taken.push(line.to_owned());
        total += add;
    }
    taken.reverse();
    let n = taken.len();
    (taken.join("\n"), n)
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn context(text: String) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
}

fn slack_code(text: &str) -> String {
    format!("```\n{}\n```", slack_code_text(text))
}

/// The Slack reply. `can_upload`: a bot token is configured, so shortened output can carry the
/// full text as a file.
pub fn slack(report: &JobReport, can_upload: bool) -> OutgoingMessage {
    let body = report.body();
    let link = report.job_link().render(Platform::Slack);
    let header = report.header(&body).render(Platform::Slack);
    let fallback = report.fallback().render(Platform::Slack);

    let mut blocks = vec![section(header)];
    let mut file = None;
    match &body {
        Body::Output {
            text,
            omitted_bytes,
        } => {
            let total = text_cost(text, slack_cost);
            if total <= SLACK_INLINE_OUTPUT_MAX {
                for chunk in chunk_lines(text, SLACK_SECTION_MAX - FENCE_OVERHEAD, slack_cost) {
                    blocks.push(section(slack_code(&chunk)));
                }
            } else {
                let lines = text.split('\n').count();
                let (h, hn) = head(text, SLACK_HEAD_TAIL_MAX, slack_cost);
                let (t, tn) = tail(text, SLACK_HEAD_TAIL_MAX, slack_cost);
                let omitted = lines.saturating_sub(hn + tn);
                blocks.push(section(slack_code(&h)));
                // The log link is always true. The file is uploaded after the message, with
                // its own comment, and only shows where the app may post files (a channel it
                // was not invited to refuses it): the message never claims it.
                let note = format!("… {omitted} lines not shown … Full output in the log: {link}");
                if can_upload {
                    file = Some(FileAttachment {
                        filename: report.file_name(),
                        title: format!("Output of {} (job #{})", report.job_name, report.job_id),
                        content: text.clone(),
                    });
                }
                blocks.push(context(note));
                blocks.push(section(slack_code(&t)));
            }
            if *omitted_bytes > 0 {
                blocks.push(context(format!(
                    "{omitted_bytes} bytes of output were too long to keep; the full log: {link}"
                )));
            }
        }
        Body::Empty => blocks.push(context("The job printed no output.".into())),
        Body::NoSection => blocks.push(context(format!(
            "The log has no reply section (`chat_reply`, `step_script` or `build_script`), so \
             there is no output to show. The full log: {link}"
        ))),
        Body::Failed { tail: log_tail } => {
            if !log_tail.is_empty() {
                let (t, _) = tail(log_tail, SLACK_SECTION_MAX - 2 * FENCE_OVERHEAD, slack_cost);
                blocks.push(context("Last lines of the log:".into()));
                blocks.push(section(slack_code(&t)));
            }
        }
        Body::Stopped => {}
    }
    blocks.truncate(SLACK_BLOCKS_MAX);
    OutgoingMessage {
        visibility: crate::chat::Visibility::InChannel,
        text: fallback,
        blocks: Some(Value::Array(blocks)),
        attachments: None,
        file,
        replace_original: false,
    }
}

fn fence_for(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

fn fenced(text: &str) -> String {
    let f = fence_for(text);
    format!("{f}\n{text}\n{f}")
}

/// The Mattermost reply: a markdown line and one coloured attachment with the output.
pub fn mattermost(report: &JobReport) -> OutgoingMessage {
    let body = report.body();
    let link = report.job_link().render(Platform::Mattermost);
    let header = report.header(&body).render(Platform::Mattermost);

    let color = match (&body, report.status) {
        (Body::Failed { .. }, _) => "danger",
        (Body::Stopped | Body::NoSection, _) => "warning",
        _ => "good",
    };
    let attachment_text = match &body {
        Body::Output {
            text,
            omitted_bytes,
        } => {
            let mut s = if text.chars().count() <= MATTERMOST_INLINE_OUTPUT_MAX {
                fenced(text)
            } else {
                let lines = text.split('\n').count();
                let (h, hn) = head(text, MATTERMOST_HEAD_TAIL_MAX, plain_cost);
                let (t, tn) = tail(text, MATTERMOST_HEAD_TAIL_MAX, plain_cost);
                format!(
                    "{}\n_… {} lines not shown; the full output is in the log: {link}_\n{}",
                    fenced(&h),
                    lines.saturating_sub(hn + tn),
                    fenced(&t)
                )
            };
            if *omitted_bytes > 0 {
                s.push_str(&format!(
                    "\n_{omitted_bytes} bytes of output were too long to keep; the full log: {link}_"
                ));
            }
            s
        }
        Body::Empty => "The job printed no output.".into(),
        Body::NoSection => format!(
            "The log has no reply section (`chat_reply`, `step_script` or `build_script`), so \
             there is no output to show. The full log: {link}"
        ),
        Body::Failed { tail: log_tail } if !log_tail.is_empty() => {
            let (t, _) = tail(log_tail, MATTERMOST_HEAD_TAIL_MAX, plain_cost);
            format!("Last lines of the log:\n{}", fenced(&t))
        }
        Body::Failed { .. } | Body::Stopped => String::new(),
    };
    // The cap counts everything the post carries.
    let budget = MATTERMOST_POST_MAX.saturating_sub(header.chars().count() + 16);
    let attachment_text: String = if attachment_text.chars().count() > budget {
        attachment_text.chars().take(budget).collect()
    } else {
        attachment_text
    };
    let attachments = if attachment_text.is_empty() {
        json!([{"color": color, "fallback": header}])
    } else {
        json!([{"color": color, "fallback": header, "text": attachment_text}])
    };
    OutgoingMessage {
        visibility: crate::chat::Visibility::InChannel,
        text: header,
        blocks: None,
        attachments: Some(attachments),
        file: None,
        replace_original: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::SectionKind;

    fn report(status: Status, outcome: Outcome, tail: &[&str]) -> JobReport {
        JobReport {
            job_name: "deploy".into(),
            job_id: JobId(4242),
            status,
            duration_secs: Some(83.4),
            failure_reason: (status == Status::Failed).then(|| "script_failure".into()),
            job_url: "https://gitlab.example.com/group/proj/-/jobs/4242".into(),
            user_id: "U024BE7LH".into(),
            user_name: "alice".into(),
            extraction: Extraction {
                outcome,
                log_tail: tail.iter().map(|s| s.to_string()).collect(),
                log_bytes: 1234,
            },
        }
    }

    fn reply(entries: Vec<Entry>) -> Outcome {
        Outcome::Reply(Reply {
            section: SectionKind::StepScript,
            entries,
            omitted_bytes: 0,
            omitted_at: None,
        })
    }

    fn out(s: &str) -> Entry {
        Entry::Output(s.into())
    }

    /// What a snapshot keeps of a message: everything, with a file summarised.
    fn view(m: &OutgoingMessage) -> Value {
        let mut v = serde_json::to_value(m).unwrap();
        if let Some(f) = &m.file {
            v["file"] = json!({
                "filename": f.filename,
                "title": f.title,
                "chars": f.content.chars().count(),
                "first_line": f.content.lines().next(),
                "last_line": f.content.lines().last(),
            });
        }
        v
    }

    fn huge_text() -> String {
        (1..=3000)
            .map(|i| format!("line {i}: deployed <service-{i}> & checked"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn cases() -> Vec<(&'static str, JobReport)> {
        vec![
            (
                "success_one_command",
                report(
                    Status::Success,
                    reply(vec![out("Hello World.")]),
                    &["Hello World.", "Job succeeded"],
                ),
            ),
            (
                "multi_command",
                report(
                    Status::Success,
                    reply(vec![
                        Entry::Command("echo \"a < b && c > d\"".into()),
                        out("a < b && c > d"),
                        Entry::Command("ls".into()),
                        out("README.md\nsrc\n```not a fence```"),
                    ]),
                    &[],
                ),
            ),
            (
                "failed",
                report(
                    Status::Failed,
                    reply(vec![
                        Entry::Command("./deploy.sh production".into()),
                        out("error: <production> is locked"),
                    ]),
                    &[
                        "$ ./deploy.sh production",
                        "error: <production> is locked",
                        "ERROR: Job failed: exit code 1",
                    ],
                ),
            ),
            (
                "cancelled",
                report(Status::Canceled, reply(vec![out("half way")]), &[]),
            ),
            ("empty", report(Status::Success, reply(vec![]), &[])),
            (
                "huge",
                report(Status::Success, reply(vec![out(&huge_text())]), &[]),
            ),
            (
                "no_section",
                report(Status::Success, Outcome::NoReplySection, &["done"]),
            ),
        ]
    }

    #[test]
    fn slack_snapshots() {
        for (name, r) in cases() {
            insta::assert_json_snapshot!(format!("slack_{name}"), view(&slack(&r, true)));
        }
    }

    #[test]
    fn mattermost_snapshots() {
        for (name, r) in cases() {
            insta::assert_json_snapshot!(format!("mattermost_{name}"), view(&mattermost(&r)));
        }
    }

    fn section_texts(m: &OutgoingMessage) -> Vec<String> {
        m.blocks
            .as_ref()
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .filter_map(|b| {
                b.pointer("/text/text")
                    .or_else(|| b.pointer("/elements/0/text"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    }

    #[test]
    fn every_slack_message_is_within_limits() {
        let long_line = "x<&>".repeat(5000);
        let mut all = cases();
        all.push((
            "long_line",
            report(Status::Success, reply(vec![out(&long_line)]), &[]),
        ));
        all.push((
            "huge_failure_tail",
            report(
                Status::Failed,
                Outcome::NoReplySection,
                &[long_line.as_str(), long_line.as_str()],
            ),
        ));
        for (name, r) in all {
            for upload in [true, false] {
                let m = slack(&r, upload);
                let texts = section_texts(&m);
                assert!(texts.len() <= SLACK_BLOCKS_MAX, "{name}");
                for t in &texts {
                    assert!(
                        t.chars().count() <= SLACK_SECTION_MAX,
                        "{name}: {}",
                        t.len()
                    );
                }
                let total: usize = texts.iter().map(|t| t.chars().count()).sum();
                assert!(total + m.text.chars().count() <= 13_000, "{name}: {total}");
                let mm = mattermost(&r);
                let mm_total = mm.text.chars().count()
                    + mm.attachments.as_ref().unwrap()[0]["text"]
                        .as_str()
                        .map_or(0, |s| s.chars().count());
                assert!(mm_total <= MATTERMOST_POST_MAX, "{name}");
            }
        }
    }

    #[test]
    fn output_is_escaped_and_mentions_cannot_be_injected() {
        let r = report(
            Status::Success,
            reply(vec![out("<!channel> & <@U999> <https://evil|click>")]),
            &[],
        );
        let m = slack(&r, false);
        let texts = section_texts(&m).join("\n");
        assert!(texts.contains("&lt;!channel&gt; &amp; &lt;@U999&gt;"));
        assert!(!texts.contains("<!channel>"));
        assert!(texts.contains("<@U024BE7LH>"));
    }

    #[test]
    fn huge_output_without_token_links_the_log() {
        let r = report(Status::Success, reply(vec![out(&huge_text())]), &[]);
        let m = slack(&r, false);
        assert!(m.file.is_none());
        let texts = section_texts(&m).join("\n");
        assert!(texts.contains("line 1: deployed &lt;service-1&gt; &amp; checked"));
        assert!(texts.contains("line 3000: deployed"));
        assert!(texts.contains("Full output in the log: <https://gitlab.example.com"));
        let with = slack(&r, true);
        assert_eq!(with.file.as_ref().unwrap().content, huge_text());
    }

    #[test]
    fn chunks_keep_every_character() {
        let text = format!("{}\nshort\n{}", "a&".repeat(4000), "b".repeat(10));
        let chunks = chunk_lines(&text, 1000, slack_cost);
        assert_eq!(chunks.concat().replace('\n', ""), text.replace('\n', ""));
        for c in &chunks {
            assert!(text_cost(c, slack_cost) <= 1000);
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(0.4), "0s");
        assert_eq!(human_duration(59.0), "59s");
        assert_eq!(human_duration(83.4), "1m 23s");
        assert_eq!(human_duration(7322.0), "2h 2m");
    }

    #[test]
    fn failure_shows_the_script_output_and_verdict_not_the_runner_preamble() {
        let r = report(
            Status::Failed,
            reply(vec![
                Entry::Command("./deploy.sh".into()),
                out("error: locked"),
            ]),
            &[
                "Running with gitlab-runner 17.11.0",
                "Executing \"step_script\" stage of the job script",
                "$ ./deploy.sh",
                "error: locked",
                "ERROR: Job failed: exit code 1",
            ],
        );
        let Body::Failed { tail } = r.body() else {
            panic!("a failed job renders as a failure");
        };
        assert_eq!(
            tail,
            "$ ./deploy.sh\nerror: locked\nERROR: Job failed: exit code 1"
        );
        let raw = report(Status::Failed, Outcome::NoReplySection, &["a", "b"]);
        let Body::Failed { tail } = raw.body() else {
            panic!("a failed job renders as a failure");
        };
        assert_eq!(tail, "a\nb");
    }
}
