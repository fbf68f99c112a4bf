//! Reply extraction through its public interface: GitLab's own trace fixtures, logs generated
//! in the exact format of the runner's source (common/build_logger.go, helpers/trace_section.go,
//! shells/bash.go, shells/abstract.go) for the ChatOps docs' example jobs, every chunking, the
//! memory bound, random and mutated input (no panic, same result whatever the chunking, same
//! section choice as a whole-buffer implementation of GitLab's rule), and the `chatops reply` CLI.

use chatops_core::reply::{
    extract, marker, Entry, Extraction, Extractor, Outcome, Reply, SectionKind,
};
use std::io::Write;
use std::process::{Command, Stdio};

const TRACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gitlab-traces");

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{TRACES}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Logs in the modern runner format.

const TS: u64 = 1_730_000_000;

/// Options of a generated job log.
#[derive(Clone, Copy, Default)]
struct Opts {
    /// Docker executor: the step_script section starts with `Using docker image ...`.
    docker: bool,
    /// FF_SCRIPT_SECTIONS: each command in its own `section_script_step_N` section.
    script_sections: bool,
    /// Options on the nested sections, as some runner versions write them.
    nested_options: &'static str,
    /// The job fails with this exit code.
    fail: Option<u8>,
}

/// `Println`: ANSI_CLEAR + text + ANSI_RESET + "\n" (common/build_logger.go).
fn println(log: &mut String, text: &str) {
    log.push_str(&format!("\x1b[0K{text}\x1b[0;m\n"));
}

/// A runner stage: raw section start marker, then the bold cyan header through `Println`.
fn stage(log: &mut String, name: &str, header: &str, ts: u64) {
    log.push_str(&format!("section_start:{ts}:{name}\r\x1b[0K"));
    println(log, &format!("\x1b[36;1m{header}\x1b[0;m"));
}

fn stage_end(log: &mut String, name: &str, ts: u64) {
    log.push_str(&format!("section_end:{ts}:{name}\r\x1b[0K"));
}

/// A whole job log: `commands` are (first line of the command as echoed, its output).
fn job_log(commands: &[(&str, &str)], opts: Opts) -> Vec<u8> {
    let mut log = String::new();
    println(&mut log, "Running with gitlab-runner 17.5.0 (8ec04662)");
    println(
        &mut log,
        "  on shared-runner-1 t3_Xa1b2c3, system ID: s_0123456789ab",
    );
    let executor = if opts.docker { "docker" } else { "shell" };
    stage(
        &mut log,
        "prepare_executor",
        &format!("Preparing the \"{executor}\" executor"),
        TS,
    );
    println(&mut log, "Using Shell (bash) executor...");
    stage_end(&mut log, "prepare_executor", TS);
    stage(&mut log, "prepare_script", "Preparing environment", TS);
    log.push_str("Running on runner-t3xa1b2c-project-42-concurrent-0 via host-1...\n");
    stage_end(&mut log, "prepare_script", TS + 1);
    stage(
        &mut log,
        "get_sources",
        "Getting source from Git repository",
        TS + 1,
    );
    log.push_str("\x1b[32;1mFetching changes with git depth set to 20...\x1b[0;m\n");
    log.push_str("Initialized empty Git repository in /builds/group/project/.git/\n");
    log.push_str("\x1b[32;1mCreated fresh repository.\x1b[0;m\n");
    log.push_str("\x1b[32;1mChecking out 1a2b3c4d as detached HEAD (ref is main)...\x1b[0;m\n\n");
    log.push_str("\x1b[32;1mSkipping Git submodules setup\x1b[0;m\n");
    stage_end(&mut log, "get_sources", TS + 2);
    stage(
        &mut log,
        "step_script",
        "Executing \"step_script\" stage of the job script",
        TS + 2,
    );
    if opts.docker {
        println(
            &mut log,
            "Using docker image sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb \
             for alpine:3.20 with digest alpine@sha256:beefdbd8a1da6d2915566fde36db9db0b524eb737fc57cd1367effd16dc0d06d ...",
        );
    }
    for (i, (cmd, output)) in commands.iter().enumerate() {
        let echo = format!("\x1b[32;1m$ {cmd}\x1b[0;m");
        if opts.script_sections {
            let o = opts.nested_options;
            log.push_str(&format!(
                "\x1b[0Ksection_start:{TS}:section_script_step_{i}{o}\r\x1b[0K{echo}\n"
            ));
            log.push_str(output);
            log.push_str(&format!(
                "\x1b[0Ksection_end:{TS}:section_script_step_{i}\r\x1b[0K\n"
            ));
        } else {
            log.push_str(&echo);
            log.push('\n');
            log.push_str(output);
        }
    }
    stage_end(&mut log, "step_script", TS + 3);
    stage(
        &mut log,
        "cleanup_file_variables",
        "Cleaning up project directory and file based variables",
        TS + 3,
    );
    stage_end(&mut log, "cleanup_file_variables", TS + 3);
    match opts.fail {
        None => log.push_str("\x1b[32;1mJob succeeded\x1b[0;m\n"),
        Some(code) => log.push_str(&format!(
            "\x1b[31;1mERROR: Job failed: exit code {code}\n\x1b[0;m\n"
        )),
    }
    log.into_bytes()
}

/// What `ls -la` printed in the docs' `ls` job (command substitution drops the final newline).
const LS_LA: &str = "total 16\n\
drwxr-xr-x 3 root root 4096 Nov 22 02:10 .\n\
drwxr-xr-x 3 root root 4096 Nov 22 02:10 ..\n\
drwxr-xr-x 8 root root 4096 Nov 22 02:10 .git\n\
-rw-r--r-- 1 root root  312 Nov 22 02:10 .gitlab-ci.yml\n\
-rw-r--r-- 1 root root   38 Nov 22 02:10 README.md";

/// The `ls` job of the ChatOps docs, as the runner logs it.
fn ls_job(opts: Opts) -> Vec<u8> {
    let reply_cmd = r#"echo -e "section_start:$( date +%s ):chat_reply\r\033[0K\n$( ls -la )\nsection_end:$( date +%s ):chat_reply\r\033[0K""#;
    let reply_out = format!(
        "section_start:{TS}:chat_reply\r\x1b[0K\n{LS_LA}\nsection_end:{TS}:chat_reply\r\x1b[0K\n"
    );
    job_log(
        &[
            (
                r#"echo "This command will not be shown.""#,
                "This command will not be shown.\n",
            ),
            (reply_cmd, &reply_out),
        ],
        opts,
    )
}

fn reply(section: SectionKind, entries: Vec<Entry>) -> Outcome {
    Outcome::Reply(Reply {
        section,
        entries,
        omitted_bytes: 0,
        omitted_at: None,
    })
}

fn out(s: &str) -> Entry {
    Entry::Output(s.to_string())
}

fn cmd(s: &str) -> Entry {
    Entry::Command(s.to_string())
}

/// Every named log with the outcome it must give.
fn cases() -> Vec<(String, Vec<u8>, Outcome)> {
    let mut cases = vec![
        (
            "trace_with_sections".to_string(),
            fixture("trace_with_sections"),
            reply(SectionKind::BuildScript, vec![out("root")]),
        ),
        (
            "trace_with_duplicate_sections".to_string(),
            fixture("trace_with_duplicate_sections"),
            Outcome::NoReplySection,
        ),
        (
            "ansi-sequence-and-unicode".to_string(),
            fixture("ansi-sequence-and-unicode"),
            Outcome::NoReplySection,
        ),
    ];
    let hello = [(r#"echo "Hello World.""#, "Hello World.\n")];
    let two = [
        ("echo one", "one\n"),
        ("printf 'two\\nlines\\n'", "two\nlines\n"),
    ];
    let before = [
        ("export GREETING=Hi", ""),
        ("echo \"$GREETING $CHAT_INPUT\"", "Hi production\n"),
    ];
    let ff = Opts {
        script_sections: true,
        ..Opts::default()
    };
    let ff_opts = Opts {
        script_sections: true,
        nested_options: "[hide_duration=true,collapsed=true]",
        ..Opts::default()
    };
    let docker = Opts {
        docker: true,
        ..Opts::default()
    };
    let two_entries = vec![
        cmd("echo one"),
        out("one"),
        cmd("printf 'two\\nlines\\n'"),
        out("two\nlines"),
    ];
    let before_entries = vec![
        cmd("export GREETING=Hi"),
        cmd("echo \"$GREETING $CHAT_INPUT\""),
        out("Hi production"),
    ];
    let ls = reply(SectionKind::ChatReply, vec![out(LS_LA)]);
    let generated: Vec<(&str, Vec<u8>, Outcome)> = vec![
        ("hello-world", job_log(&hello, Opts::default()), reply(SectionKind::StepScript, vec![out("Hello World.")])),
        ("hello-world docker", job_log(&hello, docker), reply(SectionKind::StepScript, vec![out("Hello World.")])),
        ("hello-world FF_SCRIPT_SECTIONS", job_log(&hello, ff), reply(SectionKind::StepScript, vec![out("Hello World.")])),
        ("ls chat_reply", ls_job(Opts::default()), ls.clone()),
        ("ls chat_reply docker", ls_job(docker), ls.clone()),
        ("ls chat_reply FF_SCRIPT_SECTIONS", ls_job(ff_opts), ls),
        ("two commands", job_log(&two, Opts::default()), reply(SectionKind::StepScript, two_entries.clone())),
        ("two commands docker", job_log(&two, docker), reply(SectionKind::StepScript, two_entries.clone())),
        ("two commands FF_SCRIPT_SECTIONS", job_log(&two, ff), reply(SectionKind::StepScript, two_entries.clone())),
        ("two commands FF options", job_log(&two, ff_opts), reply(SectionKind::StepScript, two_entries)),
        // before_script runs in the same step_script section: two commands.
        ("before_script", job_log(&before, Opts::default()), reply(SectionKind::StepScript, before_entries.clone())),
        ("before_script FF", job_log(&before, ff), reply(SectionKind::StepScript, before_entries)),
        (
            "multi-line command",
            job_log(
                &[
                    ("if [ -n \"$CHAT_INPUT\" ]; then # collapsed multi-line command", "deploying production\ndone\n"),
                    ("echo ok", "ok\n"),
                ],
                ff,
            ),
            reply(
                SectionKind::StepScript,
                vec![
                    cmd("if [ -n \"$CHAT_INPUT\" ]; then # collapsed multi-line command"),
                    out("deploying production\ndone"),
                    cmd("echo ok"),
                    out("ok"),
                ],
            ),
        ),
        (
            "single multi-line command",
            job_log(&[("for i in 1 2; do # collapsed multi-line command", "1\n2\n")], Opts::default()),
            reply(SectionKind::StepScript, vec![out("1\n2")]),
        ),
        (
            "progress bar and colours",
            job_log(
                &[(
                    "./deploy.sh",
                    "\x1b[1mUploading\x1b[0m 10%\rUploading 55%\r\x1b[0KUploading 100%\r\n\x1b[31;1mred\x1b[0m \x1b]8;;https://x.test\x1b\\link\x1b]8;;\x1b\\\n",
                )],
                Opts::default(),
            ),
            reply(SectionKind::StepScript, vec![out("Uploading 100%\nred link")]),
        ),
        (
            "failed job still replies with its output",
            job_log(&[("./check.sh", "check failed: disk full\n")], Opts { fail: Some(1), ..Opts::default() }),
            reply(SectionKind::StepScript, vec![out("check failed: disk full")]),
        ),
        (
            "invalid UTF-8 is replaced",
            job_log(&[("cat blob", "ok \u{1F63A} \u{8a31}\n")], Opts::default())
                .into_iter()
                .map(|b| if b == 0xba { 0xff } else { b })
                .collect(),
            reply(SectionKind::StepScript, vec![out("ok \u{fffd}\u{fffd} \u{8a31}")]),
        ),
        (
            "empty output",
            job_log(&[("true", "")], Opts::default()),
            reply(SectionKind::StepScript, vec![]),
        ),
        (
            "truncated log: step_script never ends",
            {
                let log = job_log(&hello, Opts::default());
                let cut = find(&log, b"section_end:1730000003:step_script");
                log[..cut].to_vec()
            },
            Outcome::NoReplySection,
        ),
        (
            "two chat_reply sections fall back to step_script",
            job_log(
                &[(
                    "./report.sh",
                    "section_start:1:chat_reply\r\x1b[0K\na\nsection_end:2:chat_reply\r\x1b[0K\nsection_start:3:chat_reply\r\x1b[0K\nb\nsection_end:4:chat_reply\r\x1b[0K\n",
                )],
                Opts::default(),
            ),
            reply(SectionKind::StepScript, vec![out("a\nb")]),
        ),
        (
            "chat_reply end before start is invalid",
            job_log(
                &[("./r.sh", "section_end:1:chat_reply\r\x1b[0K\nsection_start:2:chat_reply\r\x1b[0K\nx\n")],
                Opts::default(),
            ),
            reply(SectionKind::StepScript, vec![out("x")]),
        ),
        (
            "chat_reply with collapsed option and text on the marker lines",
            job_log(
                &[(
                    "./r.sh",
                    "section_start:1:chat_reply[collapsed=true]\r\x1b[0Kdropped header\n\x1b[1mbold\x1b[0m\n\n  indented\nlast section_end:2:chat_reply\r\x1b[0K\n",
                )],
                Opts::default(),
            ),
            reply(SectionKind::ChatReply, vec![out("bold\n\n  indented\nlast ")]),
        ),
        (
            "chat_reply with CRLF output",
            job_log(
                &[("./r.ps1", "section_start:1:chat_reply\r\x1b[0K\r\nline 1\r\nline 2\r\nsection_end:2:chat_reply\r\x1b[0K\r\n")],
                Opts::default(),
            ),
            reply(SectionKind::ChatReply, vec![out("line 1\nline 2")]),
        ),
        (
            "no sections at all",
            b"just some output\nwithout any section\n".to_vec(),
            Outcome::NoReplySection,
        ),
        ("empty log", Vec::new(), Outcome::NoReplySection),
    ];
    cases.extend(generated.into_iter().map(|(n, l, o)| (n.to_string(), l, o)));
    cases
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle")
}

/// Equal extractions, or a failure message short enough to read.
#[track_caller]
fn assert_same(got: &Extraction, want: &Extraction, what: &str) {
    if got != want {
        let short = |e: &Extraction| {
            let s = format!("{e:?}");
            if s.len() > 600 {
                format!("{}...{}", &s[..300], &s[s.len() - 300..])
            } else {
                s
            }
        };
        panic!("{what}\n got: {}\nwant: {}", short(got), short(want));
    }
}

fn chunked(log: &[u8], size: usize) -> Extraction {
    let mut x = Extractor::new();
    for c in log.chunks(size.max(1)) {
        x.push(c);
    }
    x.finish()
}

#[test]
fn table() {
    for (name, log, want) in cases() {
        let got = extract(&log);
        assert_eq!(got.outcome, want, "{name}");
        assert_eq!(got.log_bytes, log.len() as u64, "{name}");
    }
}

#[test]
fn every_chunking_gives_the_same_result() {
    let mut logs: Vec<(String, Vec<u8>)> = cases().into_iter().map(|(n, l, _)| (n, l)).collect();
    logs.push(("big".into(), big_log(20_000, 1)));
    for (name, log) in logs {
        let whole = extract(&log);
        for size in [1, 2, 3, 7, 4096] {
            assert_same(
                &chunked(&log, size),
                &whole,
                &format!("{name}, chunks of {size}"),
            );
        }
    }
}

#[test]
fn ansi_fixture_text_survives_colours_go() {
    let want = ["."; 1]
        .into_iter()
        .chain([
            "..",
            "\u{1F63A}",
            "\u{30FE}(\u{B4}\u{F0E}\u{EB6}\u{414}\u{F0E}\u{EB6}`)\u{FF89}",
            "\u{8A31}\u{529F}\u{84CB}",
        ])
        .map(String::from)
        .collect::<Vec<_>>();
    assert_eq!(
        extract(&fixture("ansi-sequence-and-unicode")).log_tail,
        want
    );
    // The same bytes as a job's output.
    let text = String::from_utf8(fixture("ansi-sequence-and-unicode")).unwrap();
    let got = extract(&job_log(&[("./show.sh", &text)], Opts::default()));
    assert_eq!(
        got.outcome,
        reply(SectionKind::StepScript, vec![out(&want.join("\n"))])
    );
}

#[test]
fn log_tail_is_the_end_of_the_log_as_read() {
    let log = job_log(
        &[("./check.sh", "check failed\n")],
        Opts {
            fail: Some(2),
            ..Opts::default()
        },
    );
    let tail = extract(&log).log_tail;
    assert_eq!(
        tail.last().map(String::as_str),
        Some("ERROR: Job failed: exit code 2")
    );
    assert!(
        tail.contains(&"Executing \"step_script\" stage of the job script".to_string()),
        "{tail:?}"
    );
    assert!(
        tail.iter()
            .all(|l| !l.contains('\x1b') && !l.contains("section_")),
        "{tail:?}"
    );
    // Only the last lines of a long log.
    let long = big_log(100_000, 1);
    let tail = extract(&long).log_tail;
    assert_eq!(tail.len(), chatops_core::reply::LOG_TAIL_LINES);
    assert_eq!(tail.last().map(String::as_str), Some("Job succeeded"));
}

/// A log whose single command prints `lines` numbered lines, then `chat_replies` chat_reply
/// sections (0 or 1) at the end.
fn big_log(lines: usize, commands: usize) -> Vec<u8> {
    let mut output = String::with_capacity(lines * 40);
    for i in 0..lines {
        output.push_str(&format!("\x1b[32mline {i:08}\x1b[0m of the build output\n"));
    }
    let mut cmds = vec![("./build.sh", output.as_str())];
    if commands > 1 {
        cmds.push(("echo done", "done\n"));
    }
    job_log(&cmds, Opts::default())
}

#[test]
fn a_long_section_keeps_head_and_tail_and_counts_the_middle() {
    let lines = 200_000;
    let log = big_log(lines, 1);
    let got = extract(&log);
    let Outcome::Reply(r) = &got.outcome else {
        panic!("{:?}", got.outcome)
    };
    assert_eq!(r.section, SectionKind::StepScript);
    assert_eq!(r.omitted_at, Some(1));
    let [Entry::Output(head), Entry::Output(tail)] = r.entries.as_slice() else {
        panic!("{:?}", r.entries.len())
    };
    assert!(head.starts_with("line 00000000 of the build output\n"));
    assert!(tail.ends_with(&format!("line {:08} of the build output", lines - 1)));
    let shown = head.lines().count() + tail.lines().count();
    let line_bytes = "\x1b[32mline 00000000\x1b[0m of the build output\n".len() as u64;
    assert_eq!(r.omitted_bytes, (lines - shown) as u64 * line_bytes);
    // Head and tail are whole, consecutive lines of the output.
    let first_tail: usize = tail[5..13].parse().unwrap();
    assert_eq!(first_tail, lines - tail.lines().count());
    assert!(r
        .to_text()
        .contains(&format!("[... {} bytes omitted ...]", r.omitted_bytes)));

    // With a second command after the gap, commands are shown.
    let got = extract(&big_log(lines, 2));
    let Outcome::Reply(r) = &got.outcome else {
        panic!()
    };
    assert_eq!(r.entries.first(), Some(&cmd("./build.sh")));
    assert_eq!(
        &r.entries[r.entries.len() - 2..],
        [cmd("echo done"), out("done")]
    );
}

#[test]
fn memory_stays_bounded_whatever_the_log_size() {
    let mut x = Extractor::new();
    let mut log = Vec::new();
    log.extend_from_slice(b"section_start:1:step_script\r\x1b[0K\x1b[32;1m$ ./build.sh\x1b[0;m\n");
    x.push(&log);
    let block: Vec<u8> = (0..64 * 1024)
        .map(|i| {
            if i % 80 == 79 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let mut peak = 0;
    for _ in 0..(48 * 1024 * 1024 / block.len()) {
        x.push(&block);
        x.push(b"section_start:2:chat_reply\r\x1b[0Kpartial\r\x1b[0K\n");
        peak = peak.max(x.retained_bytes());
    }
    // 48 MB went through; the buffers stay a fixed size (head, tail window, log tail).
    assert!(peak < 2 * 1024 * 1024, "retained {peak} bytes");
}

// ---------------------------------------------------------------------------------------
// Random and mutated input.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"section_start:",
    b"section_end:",
    b"section_",
    b"1730000000",
    b"$( date +%s )",
    b":",
    b"chat_reply",
    b"step_script",
    b"build_script",
    b"section_script_step_0",
    b"[collapsed=true]",
    b"[a=b, c=d]",
    b"[",
    b"]",
    b"\r",
    b"\x1b[0K",
    b"\r\x1b[0K",
    b"\x1b[32;1m$ ",
    b"\x1b[0;m",
    b"\x1b[",
    b"\x1b]8;;",
    b"\x1b\\",
    b"\x07",
    b"\x1b",
    b"\n",
    b"\r\n",
    b"\x08",
    b"Executing \"step_script\" stage of the job script",
    b"hello world",
    b"\xe8\xa8\xb1",
    b"\xe8\xa8",
    b"\xf0\x9f\x98\xba",
    b"\xff",
    b"\x1b[999C",
    b"# collapsed multi-line command",
];

fn random_log(rng: &mut Rng) -> Vec<u8> {
    let mut log = Vec::new();
    for _ in 0..rng.below(300) {
        if rng.below(10) == 0 {
            log.push(rng.next() as u8);
        } else {
            log.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
        }
        // Often a well-formed marker, so sections really open and close.
        if rng.below(6) == 0 {
            let kind = ["start", "end"][rng.below(2)];
            let name = ["chat_reply", "step_script", "build_script", "other"][rng.below(4)];
            log.extend_from_slice(
                format!("section_{kind}:{}:{name}\r\x1b[0K", rng.below(99)).as_bytes(),
            );
        }
    }
    log
}

fn mutate(rng: &mut Rng, mut log: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(8) {
        let at = if log.is_empty() {
            0
        } else {
            rng.below(log.len())
        };
        match rng.below(4) {
            0 if !log.is_empty() => log[at] = rng.next() as u8,
            1 if !log.is_empty() => {
                log.remove(at);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                log.splice(at..at, t.iter().copied());
            }
            _ => {
                let end = (at + rng.below(64)).min(log.len());
                let copy = log[at..end].to_vec();
                log.splice(at..at, copy);
            }
        }
    }
    log
}

/// GitLab's rule on the whole buffer (lib/gitlab/ci/trace/section_parser.rb): scan for
/// `section_`, a section is valid when its name has exactly a start then an end marker;
/// chat_reply, else step_script, else build_script.
fn reference_section(log: &[u8]) -> Option<SectionKind> {
    let mut markers: std::collections::HashMap<Vec<u8>, Vec<marker::Kind>> = Default::default();
    let mut i = 0;
    while let Some(p) = memchr::memmem::find(&log[i..], b"section_") {
        let at = i + p;
        match marker::parse_forward(&log[at..]) {
            Some(m) => {
                markers.entry(m.name.to_vec()).or_default().push(m.kind);
                i = at + m.len;
            }
            None => i = at + 8,
        }
    }
    let valid = |n: &[u8]| {
        markers
            .get(n)
            .is_some_and(|k| k[..] == [marker::Kind::Start, marker::Kind::End])
    };
    [
        (&b"chat_reply"[..], SectionKind::ChatReply),
        (b"step_script", SectionKind::StepScript),
        (b"build_script", SectionKind::BuildScript),
    ]
    .into_iter()
    .find(|(n, _)| valid(n))
    .map(|(_, k)| k)
}

#[test]
fn random_and_mutated_logs_never_panic_and_agree() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds: Vec<Vec<u8>> = cases().into_iter().map(|(_, l, _)| l).collect();
    let mut with_reply = [0usize; 3];
    for round in 0..3000 {
        let log = if round % 2 == 0 {
            random_log(&mut rng)
        } else {
            let seed = seeds[rng.below(seeds.len())].clone();
            mutate(&mut rng, seed)
        };
        let whole = extract(&log);
        let section = match &whole.outcome {
            Outcome::Reply(r) => {
                let _ = r.to_text();
                with_reply[r.section as usize] += 1;
                Some(r.section)
            }
            Outcome::NoReplySection => None,
        };
        assert_eq!(
            section,
            reference_section(&log),
            "round {round}: {:?}",
            String::from_utf8_lossy(&log)
        );
        // Random chunk sizes, 1..=17 bytes.
        let mut x = Extractor::new();
        let mut rest = &log[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(17)).min(rest.len());
            x.push(&rest[..n]);
            rest = &rest[n..];
        }
        assert_same(
            &x.finish(),
            &whole,
            &format!("round {round}: {:?}", String::from_utf8_lossy(&log)),
        );
    }
    // The inputs really open and close sections of every kind.
    assert!(
        with_reply.iter().all(|&n| n >= 50),
        "replies per section kind: {with_reply:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The CLI.

fn chatops(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatops"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chatops");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_on_a_fixture_file() {
    let path = format!("{TRACES}/trace_with_sections");
    assert_eq!(
        chatops(&["reply", &path], None),
        (0, "root\n".to_string(), String::new())
    );
}

#[test]
fn cli_on_stdin_shows_commands_as_dollar_lines() {
    let log = job_log(
        &[("echo one", "one\n"), ("echo two", "two\n")],
        Opts::default(),
    );
    let (code, stdout, _) = chatops(&["reply", "-"], Some(&log));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "$ echo one\none\n$ echo two\ntwo\n")
    );
    let hello = job_log(
        &[(r#"echo "Hello World.""#, "Hello World.\n")],
        Opts::default(),
    );
    assert_eq!(chatops(&["reply", "-"], Some(&hello)).1, "Hello World.\n");
}

#[test]
fn cli_raw_prints_the_extraction_as_json() {
    let (code, stdout, _) = chatops(&["reply", "--raw", "-"], Some(&ls_job(Opts::default())));
    assert_eq!(code, 0);
    let e: Extraction = serde_json::from_str(&stdout).expect("json");
    assert_eq!(e.outcome, reply(SectionKind::ChatReply, vec![out(LS_LA)]));
    assert!(stdout.contains("\"section\": \"chat_reply\""), "{stdout}");
}

#[test]
fn cli_without_a_reply_section_exits_3() {
    let path = format!("{TRACES}/trace_with_duplicate_sections");
    let (code, stdout, stderr) = chatops(&["reply", &path], None);
    assert_eq!((code, stdout.as_str()), (3, ""));
    assert!(
        stderr.contains("no chat_reply, step_script or build_script section"),
        "{stderr}"
    );
    let (code, stdout, _) = chatops(&["reply", "--raw", &path], None);
    assert_eq!(code, 3);
    assert!(stdout.contains("no_reply_section"), "{stdout}");
}

#[test]
fn cli_names_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-job.log");
    let missing = missing.to_str().unwrap();
    let (code, stdout, stderr) = chatops(&["reply", missing], None);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(
        stderr.contains(missing) && stderr.contains("No such file"),
        "{stderr}"
    );
    let dir_path = dir.path().to_str().unwrap();
    let (code, _, stderr) = chatops(&["reply", dir_path], None);
    assert_eq!(code, 1);
    assert!(stderr.contains(dir_path), "{stderr}");
}
