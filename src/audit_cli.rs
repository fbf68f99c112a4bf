//! `chatops audit`: reads the audit log (`AUDIT_TABLE`, the stack's `AuditTableName`) for a
//! time window, filters it by job, user and channel, and prints it as an aligned table or as
//! JSON lines (one entry per line, for export). The read is a `Query` per day of the window
//! (`chatops_adapters::audit`), never a scan.

use chatops_adapters::audit::DynamoAudit;
use chatops_adapters::aws::sdk_config;
use chatops_core::audit::{AuditEntry, AuditLog, Filter};
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, oldest first.
    Table,
    /// One JSON object per line (every field of the entry).
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// How far back: `30m`, `12h`, `7d`, `2w`, or a UTC date or time (`2025-01-31`,
    /// `2025-01-31T10:00:00Z`).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Only entries of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Only entries of this person: chat user id or name, or GitLab username.
    #[arg(long)]
    pub user: Option<String>,
    /// Only entries of this channel: id or name (`ops` or `#ops`).
    #[arg(long)]
    pub channel: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The audit table (the stack's AuditTableName output).
    #[arg(long, env = "AUDIT_TABLE")]
    pub table: String,
}

/// `--since` as Unix milliseconds, relative to `now_ms`.
pub fn parse_since(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "--since {s:?}: give a duration (30m, 12h, 7d, 2w) or a UTC date (2025-01-31) \
             or time (2025-01-31T10:00:00Z)"
        )
    };
    let duration = s
        .char_indices()
        .last()
        .filter(|(i, c)| c.is_ascii_alphabetic() && !s[..*i].contains(['-', ':', 'T']));
    if let Some((i, unit)) = duration {
        let n: u64 = s[..i].parse().map_err(|_| bad())?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(bad());
        }
        return Ok(now_ms.saturating_sub(n.saturating_mul(secs).saturating_mul(1000)));
    }
    let iso = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    chatops_core::clock::parse_iso8601(&iso)
        .map(|secs| secs * 1000)
        .filter(|ms| *ms <= now_ms)
        .ok_or_else(bad)
}

/// `2025-01-31 14:05:09` (UTC).
fn time(at_ms: u64) -> String {
    let iso = chatops_core::clock::iso8601(at_ms / 1000);
    format!("{} {}", &iso[..10], &iso[11..19])
}

/// The table's columns for one entry.
fn row(e: &AuditEntry) -> [String; 9] {
    let who = match (&e.chat_user_name, &e.chat_user) {
        (Some(n), _) => n.clone(),
        (None, Some(id)) => id.to_string(),
        _ => String::new(),
    };
    let place = match (&e.platform, &e.team, &e.channel_name, &e.channel) {
        (Some(p), Some(t), Some(n), _) => format!("{}:{t}/#{n}", p.as_str()),
        (Some(p), Some(t), None, Some(c)) => format!("{}:{t}/{c}", p.as_str()),
        _ => String::new(),
    };
    let ids = match (e.pipeline_id, e.job_id) {
        (Some(p), Some(j)) => format!("{p}/{j}"),
        (Some(p), None) => p.to_string(),
        _ => String::new(),
    };
    // One line per entry: what a person typed is shown on one line.
    let one_line = |s: &str| s.replace(['\n', '\r', '\t'], " ");
    [
        time(e.at_ms),
        e.event.kind().to_owned(),
        one_line(&who),
        e.gitlab_user.clone().unwrap_or_default(),
        one_line(&place),
        one_line(e.job.as_deref().unwrap_or_default()),
        one_line(e.input.as_deref().unwrap_or_default()),
        format!("{} {ids}", e.project.as_deref().unwrap_or_default())
            .trim()
            .to_owned(),
        one_line(&e.event.summary()),
    ]
}

/// The entries as aligned columns.
pub fn table(entries: &[AuditEntry]) -> String {
    let header = [
        "TIME (UTC)",
        "EVENT",
        "USER",
        "GITLAB USER",
        "CHANNEL",
        "JOB",
        "INPUT",
        "PROJECT PIPELINE/JOB",
        "DETAIL",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 9]> = std::iter::once(header)
        .chain(entries.iter().map(row))
        .collect();
    let mut widths = [0usize; 9];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Read, filter and print; returns the exit code.
pub async fn run(
    args: &AuditArgs,
    log: &dyn AuditLog,
    now_ms: u64,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<i32> {
    let since = match parse_since(&args.since, now_ms) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chatops audit: {e}");
            return Ok(2);
        }
    };
    let filter = Filter {
        job: args.job.clone(),
        user: args.user.clone(),
        channel: args.channel.clone(),
    };
    let entries: Vec<AuditEntry> = log
        .read(since, now_ms)
        .await?
        .into_iter()
        .filter(|e| filter.matches(e))
        .collect();
    match args.format {
        Format::Json => {
            for e in &entries {
                writeln!(out, "{}", e.to_json_line())?;
            }
        }
        Format::Table if entries.is_empty() => {
            writeln!(out, "no audit entries since {} UTC", time(since))?;
        }
        Format::Table => out.write_all(table(&entries).as_bytes())?,
    }
    Ok(0)
}

/// `chatops audit …` against the table, with the process's AWS credentials.
pub async fn run_cli(args: &AuditArgs) -> anyhow::Result<i32> {
    let sdk = sdk_config().await;
    // Retention only matters for writing; the CLI only reads.
    let log = DynamoAudit::new(chatops_adapters::aws::dynamodb(&sdk), &args.table, 1);
    run(
        args,
        &log,
        chatops_core::audit::now_ms(),
        &mut std::io::stdout(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_table() {
        let now = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let table: &[(&str, Option<u64>)] = &[
            ("7d", Some(now - 7 * 86_400_000)),
            ("12h", Some(now - 12 * 3_600_000)),
            ("30m", Some(now - 30 * 60_000)),
            ("45s", Some(now - 45_000)),
            ("2w", Some(now - 14 * 86_400_000)),
            (" 1d ", Some(now - 86_400_000)),
            ("2025-12-31", Some(now - 86_400_000)),
            ("2025-12-31T12:00:00Z", Some(now - 12 * 3_600_000)),
            ("0d", None),
            ("7y", None),
            ("d", None),
            ("-1d", None),
            ("yesterday", None),
            ("2026-02-01", None),
            ("", None),
        ];
        for (s, want) in table {
            assert_eq!(parse_since(s, now).ok(), *want, "{s:?}");
        }
    }
}
