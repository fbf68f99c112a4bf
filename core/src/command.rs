//! The command grammar, as GitLab's slash commands read it: `run <job> [args]` where the job
//! is the first run of non-space characters and the arguments are everything after the
//! following whitespace, verbatim (newlines kept; they become `CHAT_INPUT`). `help` or no
//! text asks for the usage and the jobs chat can run; `status` lists the channel's open runs
//! and `history [job]` its last ones; `link`, `unlink` and `whoami` manage the person's
//! GitLab account; anything else is not a valid command.

/// What the text of a slash command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run {
        job: String,
        input: String,
    },
    Help,
    /// The channel's open runs.
    Status,
    /// The channel's last runs, of one job when given.
    History {
        job: Option<String>,
    },
    /// Connect your GitLab account (OAuth).
    Link,
    /// Remove your link and revoke its tokens.
    Unlink,
    /// Which GitLab user you are linked to.
    WhoAmI,
    /// Not a command we know; holds the text as typed (for the answer).
    Invalid(String),
}

impl Command {
    /// The command's name, as the audit log records what was received.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run { .. } => "run",
            Command::Help => "help",
            Command::Status => "status",
            Command::History { .. } => "history",
            Command::Link => "link",
            Command::Unlink => "unlink",
            Command::WhoAmI => "whoami",
            Command::Invalid(_) => "invalid",
        }
    }
}

/// Parse the `text` field of a slash command.
pub fn parse(text: &str) -> Command {
    let trimmed = text.trim();
    match trimmed {
        "" | "help" => return Command::Help,
        "status" => return Command::Status,
        "history" => return Command::History { job: None },
        "link" | "connect" => return Command::Link,
        "unlink" | "disconnect" => return Command::Unlink,
        "whoami" => return Command::WhoAmI,
        _ => {}
    }
    if let Some(rest) = trimmed.strip_prefix("history") {
        // `history <job>`: exactly one job name after the word.
        let job = rest.trim();
        if rest.starts_with(char::is_whitespace) && !job.contains(char::is_whitespace) {
            return Command::History {
                job: Some(job.to_owned()),
            };
        }
        return Command::Invalid(trimmed.to_owned());
    }
    let Some(rest) = trimmed.strip_prefix("run") else {
        return Command::Invalid(trimmed.to_owned());
    };
    // `run` must be followed by whitespace (`runner` is not `run ner`).
    if !rest.starts_with(char::is_whitespace) {
        return Command::Invalid(trimmed.to_owned());
    }
    let rest = rest.trim_start();
    let (job, after) = match rest.find(char::is_whitespace) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // After the job, the separating whitespace goes; the arguments are kept as typed (the
    // text as a whole was trimmed, so trailing blanks are already gone).
    Command::Run {
        job: job.to_owned(),
        input: after.trim_start().to_owned(),
    }
}

/// Escape the three characters Slack's mrkdwn treats as control characters.
pub fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Show a user-supplied name as inline code when it can be, escaped either way.
pub fn code(s: &str) -> String {
    if s.contains('`') || s.contains('\n') {
        escape_mrkdwn(s)
    } else {
        format!("`{}`", escape_mrkdwn(s))
    }
}

/// The help text (ephemeral): the grammar and the CI contract a job must follow.
pub fn usage(slash: &str) -> String {
    let slash = if slash.trim().is_empty() {
        "/chatops"
    } else {
        slash.trim()
    };
    let slash = escape_mrkdwn(slash);
    format!(
        "*Usage*\n\
         • `{slash} run <job> [arguments]`: run the CI job `<job>` of the project on its default \
         branch; `[arguments]` become `CHAT_INPUT`. The job's output is posted back here.\n\
         • `{slash} help`: this message.\n\
         A job can be run from chat only if it opts in with \
         `rules: - if: '$CHATOPS_JOB == $CI_JOB_NAME'`; you need Developer access or more."
    )
}

/// The answer to text that is not a command (ephemeral).
pub fn invalid(slash: &str, text: &str) -> String {
    format!(
        "{} is not a valid command.\n\n{}",
        code(text.lines().next().unwrap_or_default()),
        usage(slash)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, input: &str) -> Command {
        Command::Run {
            job: job.into(),
            input: input.into(),
        }
    }

    #[test]
    fn grammar_table() {
        let cases: &[(&str, Command)] = &[
            ("", Command::Help),
            ("   \n ", Command::Help),
            ("help", Command::Help),
            ("link", Command::Link),
            (" connect ", Command::Link),
            ("unlink", Command::Unlink),
            ("disconnect", Command::Unlink),
            ("whoami", Command::WhoAmI),
            ("whoami now", Command::Invalid("whoami now".into())),
            ("status", Command::Status),
            ("  status\n", Command::Status),
            ("status now", Command::Invalid("status now".into())),
            ("Status", Command::Invalid("Status".into())),
            ("statuses", Command::Invalid("statuses".into())),
            ("history", Command::History { job: None }),
            (
                "history deploy",
                Command::History {
                    job: Some("deploy".into()),
                },
            ),
            (
                "history\tdé-ploy ",
                Command::History {
                    job: Some("dé-ploy".into()),
                },
            ),
            (
                "history deploy prod",
                Command::Invalid("history deploy prod".into()),
            ),
            ("historyx", Command::Invalid("historyx".into())),
            ("run status", run("status", "")),
            ("run history deploy", run("history", "deploy")),
            ("linked", Command::Invalid("linked".into())),
            (" help ", Command::Help),
            ("run deploy", run("deploy", "")),
            ("run  deploy ", run("deploy", "")),
            ("run deploy production", run("deploy", "production")),
            ("run deploy  a  b", run("deploy", "a  b")),
            ("run deploy a\nb\n\nc", run("deploy", "a\nb\n\nc")),
            ("run deploy\nsecond line", run("deploy", "second line")),
            ("run\tdeploy\tx y", run("deploy", "x y")),
            ("run\ndeploy", run("deploy", "")),
            (
                "run auto_deploy status abc123",
                run("auto_deploy", "status abc123"),
            ),
            (
                "run deploy \"quoted args\" --flag",
                run("deploy", "\"quoted args\" --flag"),
            ),
            ("run dé-ploy ünïcode", run("dé-ploy", "ünïcode")),
            ("  run deploy x", run("deploy", "x")),
            ("run", Command::Invalid("run".into())),
            ("run   ", Command::Invalid("run".into())),
            ("runner", Command::Invalid("runner".into())),
            ("Run deploy", Command::Invalid("Run deploy".into())),
            ("help me", Command::Invalid("help me".into())),
            (
                "deploy production",
                Command::Invalid("deploy production".into()),
            ),
            ("issue show 1", Command::Invalid("issue show 1".into())),
        ];
        for (text, want) in cases {
            assert_eq!(&parse(text), want, "text={text:?}");
        }
    }

    #[test]
    fn usage_names_the_command_and_the_rule_contract() {
        let u = usage("/ops");
        assert!(u.contains("`/ops run <job> [arguments]`"));
        assert!(u.contains("$CHATOPS_JOB == $CI_JOB_NAME"));
        assert!(usage("").contains("/chatops run"));
    }

    #[test]
    fn invalid_text_is_escaped_and_followed_by_usage() {
        let m = invalid("/ops", "<!channel> & more");
        assert!(m.starts_with("`&lt;!channel&gt; &amp; more` is not a valid command."));
        assert!(m.contains("/ops help"));
        assert!(invalid("/ops", "a`b").starts_with("a`b is not"));
    }
}
