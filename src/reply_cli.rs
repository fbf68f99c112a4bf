//! `chatops reply <file|->`: the reply a raw job log would produce, read as a stream.

use anyhow::Context;
use chatops_core::reply::{Extraction, Extractor, Outcome};
use std::io::{Read, Write};

/// Exit code when the log has no reply section.
pub const NO_REPLY_SECTION: i32 = 3;

/// Runs the subcommand; returns the exit code. Set `CHATOPS_PRINT_PEAK_MEMORY=1` to get the
/// process's peak resident memory (VmHWM) on stderr, for the memory benchmark.
pub fn run(file: &str, raw: bool) -> anyhow::Result<i32> {
    let extraction = if file == "-" {
        read(std::io::stdin().lock()).context("cannot read the job log from standard input")?
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot read job log {file}"))?;
        read(f).with_context(|| format!("cannot read job log {file}"))?
    };
    let mut out = std::io::stdout().lock();
    if raw {
        serde_json::to_writer_pretty(&mut out, &extraction)?;
        writeln!(out)?;
    } else if let Outcome::Reply(reply) = &extraction.outcome {
        out.write_all(reply.to_text().as_bytes())?;
    }
    out.flush()?;
    if std::env::var_os("CHATOPS_PRINT_PEAK_MEMORY").is_some() {
        eprintln!("peak_memory_kib={}", peak_memory_kib().unwrap_or(0));
    }
    Ok(match extraction.outcome {
        Outcome::Reply(_) => 0,
        Outcome::NoReplySection => {
            if !raw {
                let name = if file == "-" { "standard input" } else { file };
                eprintln!(
                    "chatops reply: no chat_reply, step_script or build_script section in {name}"
                );
            }
            NO_REPLY_SECTION
        }
    })
}

fn read(mut input: impl Read) -> std::io::Result<Extraction> {
    let mut x = Extractor::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(x.finish()),
            Ok(n) => x.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Peak resident set size of this process (Linux `/proc/self/status` VmHWM), in KiB.
pub fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
