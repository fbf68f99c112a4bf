//! Every sentence the product tells a person (other than a job's reply, which `render`
//! builds), as a typed value. A use case says *what* happened (`Notice::NoSuchJob { … }`);
//! this module says it in words once, through [`Rich`], so it is escaped on every platform.
//! Snapshot tests render each notice for Slack and Mattermost.

use crate::markup::Rich;
use crate::render::human_duration;
use crate::run::{Platform, RunRequest};
use crate::runnable::RunnableJob;

/// Who a notice is about: a chat user, by id (Slack) and name (Mattermost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: String,
    pub name: String,
}

impl Person {
    pub fn of(req: &RunRequest) -> Self {
        Self {
            id: req.user_id.as_str().to_owned(),
            name: req.user_name.clone(),
        }
    }
}

/// One run as `status` and `history` list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLine {
    pub job: String,
    /// Who asked (their chat name; never a mention in a list).
    pub user_name: String,
    pub state: RunState,
    /// Unix seconds the command was received.
    pub received_at: u64,
    /// The job's duration (ended) or the time since the command (open), in seconds.
    pub secs: Option<u64>,
    /// The job's page, else the pipeline's.
    pub url: Option<String>,
}

/// Where a listed run stands, as a person reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Queued or being dispatched: no pipeline yet.
    Starting,
    Running,
    /// Waits for someone to play it.
    Manual,
    /// Four-eyes: waits for someone else's approval (no pipeline yet).
    AwaitingApproval,
    Succeeded,
    Failed,
    Canceled,
    Skipped,
    /// Its job no longer exists on GitLab.
    Gone,
    /// Not run: the person was told why.
    Refused,
    /// Replied before results were recorded.
    Ended,
}

impl RunState {
    /// Still going (or waiting): no result yet.
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            RunState::Starting | RunState::Running | RunState::Manual | RunState::AwaitingApproval
        )
    }

    fn label(&self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Manual => "waiting to be played",
            RunState::AwaitingApproval => "waiting for approval",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Canceled => "canceled",
            RunState::Skipped => "skipped",
            RunState::Gone => "job gone",
            RunState::Refused => "not run",
            RunState::Ended => "ended",
        }
    }
    fn emoji(&self) -> &'static str {
        match self {
            RunState::Starting | RunState::Running => "hourglass_flowing_sand",
            RunState::Manual => "double_vertical_bar",
            RunState::AwaitingApproval => "lock",
            RunState::Succeeded => "white_check_mark",
            RunState::Failed => "x",
            RunState::Canceled | RunState::Skipped | RunState::Gone => "heavy_minus_sign",
            RunState::Refused => "no_entry_sign",
            RunState::Ended => "grey_question",
        }
    }
}

/// The contract rule a job opts in with.
pub const CONTRACT_RULE: &str = "rules: - if: '$CHATOPS_JOB == $CI_JOB_NAME'";

/// Why a command could not be scheduled: each is preceded by GitLab's own sentence
/// (`Presenters::Run#failed_to_schedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unscheduled {
    ProjectNotFound {
        project: String,
        detail: String,
        /// Looked up with the person's own token (OAuth) rather than the bot's.
        personal: bool,
    },
    NoDefaultBranch,
    NoCiConfig {
        branch: String,
        detail: String,
    },
    CiInvalid {
        branch: String,
        errors: Vec<String>,
    },
    NoSuchJob {
        branch: String,
    },
    ExcludedFromChat,
    PipelineRejected {
        message: String,
    },
    /// GitLab refused the contract's variables: the project's "Minimum role to use pipeline
    /// variables" is above the token's role (or "No one allowed").
    PipelineVariablesForbidden {
        project: String,
        message: String,
        /// The pipeline was created with the person's own token (their role counts).
        personal: bool,
    },
    /// The default branch is protected against the person (GitLab's own message).
    ProtectedBranch {
        branch: String,
        message: String,
    },
    /// GitLab denied the person (403), with its message.
    GitLabDenied {
        message: String,
    },
    ForeignJobs {
        pipeline_url: String,
        ours: usize,
        foreign: Vec<String>,
    },
    TokenRefused {
        detail: String,
    },
    GitLabAnswered {
        message: String,
    },
    GaveUp {
        reason: String,
        attempts: u32,
    },
    /// The project's policy file (`.gitlab/chatops.yml`) is refused: its error names the line.
    PolicyInvalid {
        error: String,
    },
    /// The policy file lets the job be asked for only in these channels.
    PolicyChannel {
        channels: Vec<String>,
    },
    /// The policy file asks a higher GitLab role of whoever requests the job.
    PolicyRole {
        role: crate::policy::Role,
    },
}

/// A message to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `help`: the grammar and the job contract.
    Usage { slash: String },
    /// Text that is not a command.
    Invalid { slash: String, text: String },
    /// The ingress queued a run.
    Scheduling { job: String },
    /// The ingress could not queue a run.
    CouldNotQueue { job: String },
    /// The queue took the request but did not confirm in time: it may run.
    QueueUnconfirmed { job: String },
    /// The pipeline started.
    Started {
        who: Person,
        job: String,
        input: String,
        job_url: String,
        pipeline_url: String,
    },
    /// The job is `when: manual` and waits to be played.
    ManualWaiting {
        who: Person,
        job: String,
        input: String,
        job_id: u64,
        job_url: String,
        pipeline_url: String,
    },
    /// Four-eyes: nobody approved the run in time; no pipeline was created.
    ApprovalExpired { job: String, minutes: u64 },
    /// The chat user has no GitLab link.
    Unlinked {
        job: String,
        team: String,
        user: String,
    },
    /// The linked GitLab user does not exist.
    LinkedUserMissing {
        username: String,
        team: String,
        user: String,
    },
    /// GitLab's access-denied text (`Presenters::Access#access_denied`).
    AccessDenied { project_url: String },
    /// The job ended but its log could not be read in time: the answer is its link.
    LogUnreadable {
        job: String,
        status: String,
        job_url: String,
    },
    /// The run's job is gone from GitLab, so there is no output to show.
    JobGone { job: String, detail: String },
    /// The command could not be scheduled, and why.
    Unscheduled { job: String, why: Unscheduled },
    /// Connect (or reconnect) your GitLab account; `job` runs once connected.
    Connect {
        url: String,
        job: Option<String>,
        again: bool,
    },
    /// Connecting is configured but no callback URL is known (`PUBLIC_BASE_URL`).
    ConnectUnavailable,
    /// `link` in bot mode: an administrator links people.
    LinkByAdmin { team: String, user: String },
    /// `whoami`: linked to this GitLab user; `personal` when through OAuth (runs as them).
    LinkedAs {
        username: String,
        personal: bool,
        broken: bool,
    },
    /// `whoami` or `unlink` with no link.
    NotConnected { slash: String },
    /// `unlink` removed the link; `revoked` when GitLab confirmed the tokens are revoked.
    Disconnected {
        username: String,
        personal: bool,
        revoked: bool,
    },
    /// The connection could not be looked up or changed right now.
    IdentityUnavailable,
    /// `help`'s follow-up: the jobs of the channel's project that chat can run.
    RunnableJobs {
        project: String,
        branch: String,
        jobs: Vec<RunnableJob>,
    },
    /// `help`'s follow-up when the project's CI configuration is invalid (GitLab's errors).
    HelpCiInvalid {
        project: String,
        branch: String,
        errors: Vec<String>,
    },
    /// `help`'s follow-up when GitLab could not list the jobs.
    JobsUnavailable { detail: String },
    /// `status`: the channel's open runs (`now` for how long each has been going).
    ChannelStatus { runs: Vec<RunLine>, now: u64 },
    /// `history [job]`: the channel's last runs.
    ChannelHistory {
        runs: Vec<RunLine>,
        job: Option<String>,
    },
    /// `status`/`history` where runs cannot be read (no table here, or it failed).
    ActivityUnavailable,
}

impl Notice {
    pub fn render(&self, platform: Platform) -> String {
        self.rich().render(platform)
    }

    pub fn rich(&self) -> Rich {
        match self {
            Notice::Usage { slash } => usage(slash),
            Notice::Invalid { slash, text } => Rich::new()
                .code(text.lines().next().unwrap_or_default())
                .text(" is not a valid command.")
                .br()
                .br()
                .then(usage(slash)),
            Notice::Scheduling { job } => Rich::new()
                .text("Scheduling job ")
                .code(job)
                .text("… its output will be posted here when it finishes."),
            Notice::CouldNotQueue { job } => Rich::new()
                .text("Could not schedule job ")
                .code(job)
                .text(" right now; please try again in a moment."),
            Notice::QueueUnconfirmed { job } => Rich::new().text("Job ").code(job).text(
                " was handed to the queue, which did not confirm in time. If it starts, its \
                     output will be posted here. If nothing is posted within two minutes it did \
                     not arrive, and running the command again is safe.",
            ),
            Notice::Started {
                who,
                job,
                input,
                job_url,
                pipeline_url,
            } => Rich::new()
                .mention(&who.id, &who.name)
                .text(" started ")
                .link(job_url, job)
                .then(input_suffix(input))
                .text(" (")
                .link(pipeline_url, "pipeline")
                .text(")."),
            Notice::ManualWaiting {
                who,
                job,
                input,
                job_id,
                job_url,
                pipeline_url,
            } => Rich::new()
                .mention(&who.id, &who.name)
                .text(" requested ")
                .link(job_url, job)
                .then(input_suffix(input))
                .text(" (")
                .link(pipeline_url, "pipeline")
                .text("). It is a manual job: it waits for someone to play it at ")
                .link(job_url, job_url)
                .text(format!(
                    " (job {job_id}). Its output comes here when it has run."
                )),
            Notice::ApprovalExpired { job, minutes } => Rich::new()
                .text("Nobody approved your request to run ")
                .code(job)
                .text(format!(
                    " within {minutes} minutes, so it ended and no pipeline was created. \
                     Ask again when an approver is around."
                )),
            Notice::Unlinked { job, team, user } => Rich::new()
                .text("Your chat account is not linked to a GitLab user yet, so I cannot run ")
                .code(job)
                .text(" for you. Ask a ChatOps administrator to run:")
                .br()
                .code(format!(
                    "chatops users link {team}/{user} <your GitLab username>"
                )),
            Notice::LinkedUserMissing {
                username,
                team,
                user,
            } => Rich::new()
                .text("Your chat account is linked to the GitLab user ")
                .code(username)
                .text(", which does not exist. Ask an administrator to run ")
                .code(format!(
                    "chatops users link {team}/{user} <gitlab username>"
                ))
                .text(" again."),
            Notice::AccessDenied { project_url } => Rich::new()
                .text(
                    "You are not allowed to perform the given ChatOps command. Most likely you \
                     do not have access to the GitLab project for this ChatOps integration.",
                )
                .br()
                .br()
                .text("The GitLab project for this ChatOps integration can be found at ")
                .link(project_url, project_url)
                .text("."),
            Notice::LogUnreadable {
                job,
                status,
                job_url,
            } => Rich::new()
                .text("The job ")
                .code(job)
                .text(format!(
                    " ended ({status}), but its log could not be read in time, so its output \
                     is not shown here. The full log: "
                ))
                .link(job_url, job_url),
            Notice::JobGone { job, detail } => {
                Rich::new().text("The job ").code(job).text(format!(
                    " of this command no longer exists on GitLab ({detail}), so there is no \
                     output to show."
                ))
            }
            // GitLab's sentence is about a missing job; a refusal of the person is not.
            // GitLab's own access-denied text (`Presenters::Access#access_denied`).
            Notice::Unscheduled {
                job,
                why: why @ Unscheduled::GitLabDenied { .. },
            } => why.rich(job),
            Notice::Unscheduled {
                job,
                why: why @ Unscheduled::ProtectedBranch { .. },
            } => Rich::new()
                .text("The command could not be scheduled.")
                .br()
                .then(why.rich(job)),
            Notice::Unscheduled { job, why } => could_not_schedule(job).br().then(why.rich(job)),
            Notice::Connect { url, job, again } => {
                let mut r = if *again {
                    Rich::new().text(
                        "GitLab no longer accepts your connection (it was revoked or has \
                         expired). ",
                    )
                } else {
                    Rich::new()
                };
                r = r
                    .link(url, "Connect your GitLab account")
                    .text(" so that ChatOps acts in GitLab as you, with your own permissions.");
                if let Some(job) = job {
                    r = r
                        .text(" Once you are connected, ")
                        .code(job)
                        .text(" starts by itself.");
                }
                r.text(" The link is only for you and works once, within 10 minutes.")
            }
            Notice::ConnectUnavailable => Rich::new().text(
                "Connecting GitLab accounts is not available: the ChatOps deployment does not \
                 know its public address. Ask an administrator to set PUBLIC_BASE_URL.",
            ),
            Notice::LinkByAdmin { team, user } => Rich::new()
                .text(
                    "This ChatOps runs without a GitLab OAuth application, so accounts are \
                     linked by an administrator. Ask one to run:",
                )
                .br()
                .code(format!(
                    "chatops users link {team}/{user} <your GitLab username>"
                )),
            Notice::LinkedAs {
                username,
                personal,
                broken,
            } => {
                let r = Rich::new()
                    .text("You are linked to the GitLab user ")
                    .code(format!("@{username}"))
                    .text(".");
                match (personal, broken) {
                    (true, false) => r.text(
                        " Commands you run here act in GitLab as you, with your permissions.",
                    ),
                    (true, true) => r.text(
                        " GitLab no longer accepts the connection: run the command again to \
                         get a link that reconnects it.",
                    ),
                    (false, _) => r.text(
                        " An administrator made this link; commands run with the ChatOps bot's \
                         GitLab token.",
                    ),
                }
            }
            Notice::NotConnected { slash } => Rich::new()
                .text("You have not connected a GitLab account. ")
                .code(format!("{} link", slash_or_default(slash)))
                .text(" connects it."),
            Notice::Disconnected {
                username,
                personal,
                revoked,
            } => {
                let r = Rich::new()
                    .text("Your chat account is no longer linked to ")
                    .code(format!("@{username}"))
                    .text(".");
                match (personal, revoked) {
                    (true, true) => r.text(" GitLab revoked the tokens ChatOps held for you."),
                    (true, false) => r.text(
                        " GitLab did not confirm revoking the tokens ChatOps held for you: \
                         revoke ChatOps under Preferences > Applications in GitLab to be sure.",
                    ),
                    (false, _) => r,
                }
            }
            Notice::IdentityUnavailable => Rich::new().text(
                "Your GitLab connection could not be looked up or changed right now; please \
                 try again in a moment.",
            ),
            Notice::RunnableJobs {
                project,
                branch,
                jobs,
            } => runnable_jobs(project, branch, jobs),
            Notice::HelpCiInvalid {
                project,
                branch,
                errors,
            } => {
                let mut r = Rich::new()
                    .text("The CI configuration of ")
                    .code(project)
                    .text(" on ")
                    .code(branch)
                    .text(" is invalid, so no job can run from chat. GitLab says:");
                for e in errors.iter().take(5) {
                    r = r.br().text("• ").text(e);
                }
                r
            }
            Notice::JobsUnavailable { detail } => Rich::new().text(format!(
                "The jobs you can run here could not be listed right now ({detail}); please try \
                 again later."
            )),
            Notice::ChannelStatus { runs, now } => {
                if runs.is_empty() {
                    return Rich::new().text("Nothing is running from this channel.");
                }
                let mut r = Rich::new().bold("Running from this channel");
                for l in runs {
                    let since = now.saturating_sub(l.received_at);
                    r = r
                        .br()
                        .emoji(l.state.emoji())
                        .text(" ")
                        .then(job_link(l))
                        .text(format!(
                            " by {} · {} · {}",
                            l.user_name,
                            l.state.label(),
                            human_duration(since as f64)
                        ));
                }
                r
            }
            Notice::ChannelHistory { runs, job } => {
                if runs.is_empty() {
                    return match job {
                        Some(j) => Rich::new()
                            .text("No run of ")
                            .code(j)
                            .text(" from this channel yet."),
                        None => Rich::new().text("No run from this channel yet."),
                    };
                }
                let mut r = match job {
                    Some(j) => Rich::new().bold("Last runs of").text(" ").code(j),
                    None => Rich::new().bold("Last runs from this channel"),
                };
                for l in runs {
                    r = r
                        .br()
                        .emoji(l.state.emoji())
                        .text(" ")
                        .then(job_link(l))
                        .text(format!(" by {} · {}", l.user_name, l.state.label()));
                    if let Some(secs) = l.secs {
                        // An open run has been going this long; an ended one took this long.
                        let how = if l.state.is_open() { "for" } else { "in" };
                        r = r.text(format!(" {how} {}", human_duration(secs as f64)));
                    }
                    r = r.text(format!(" · {}", when(l.received_at)));
                }
                r
            }
            Notice::ActivityUnavailable => Rich::new().text(
                "This channel's runs could not be read right now; please try again in a moment.",
            ),
        }
    }

    /// A stable code for why a run was not done (the audit log's `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Notice::Unscheduled { why, .. } => why.reason(),
            Notice::Invalid { .. } => "invalid_command",
            Notice::CouldNotQueue { .. } => "could_not_queue",
            Notice::QueueUnconfirmed { .. } => "queue_unconfirmed",
            Notice::Unlinked { .. } => "unlinked",
            Notice::ApprovalExpired { .. } => "approval_expired",
            Notice::LinkedUserMissing { .. } => "linked_user_missing",
            Notice::AccessDenied { .. } => "access_denied",
            Notice::Connect { again: false, .. } => "must_connect",
            Notice::Connect { again: true, .. } => "must_reconnect",
            Notice::ConnectUnavailable => "connect_unavailable",
            Notice::IdentityUnavailable => "identity_unavailable",
            _ => "other",
        }
    }
}

/// The job's name, linked to its page when there is one.
fn job_link(l: &RunLine) -> Rich {
    match &l.url {
        Some(url) => Rich::new().link(url, &l.job),
        None => Rich::new().code(&l.job),
    }
}

/// `2025-01-31 14:05 UTC`.
fn when(secs: u64) -> String {
    let iso = crate::clock::iso8601(secs);
    format!("{} {} UTC", &iso[..10], &iso[11..16])
}

fn runnable_jobs(project: &str, branch: &str, jobs: &[RunnableJob]) -> Rich {
    if jobs.is_empty() {
        return Rich::new()
            .text("No job of ")
            .code(project)
            .text(" on ")
            .code(branch)
            .text(" can be run from chat yet. A job opts in with ")
            .code(CONTRACT_RULE)
            .text(".");
    }
    let mut r = Rich::new()
        .bold("Jobs you can run here")
        .text(" (")
        .code(project)
        .text(" on ")
        .code(branch)
        .text(")");
    for j in jobs {
        r = r.br().text("• ").code(&j.name);
        if j.needs_approval {
            r = r.text(" (needs approval)");
        }
        if j.manual {
            r = r.text(" (waits to be played in GitLab)");
        }
        if let Some(d) = &j.description {
            r = r.text(" — ").text(d.lines().next().unwrap_or_default());
        }
    }
    r
}

impl Unscheduled {
    /// The audit log's `reason` for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Unscheduled::ProjectNotFound { .. } => "project_not_found",
            Unscheduled::NoDefaultBranch => "no_default_branch",
            Unscheduled::NoCiConfig { .. } => "no_ci_config",
            Unscheduled::CiInvalid { .. } => "ci_invalid",
            Unscheduled::NoSuchJob { .. } => "no_such_job",
            Unscheduled::ExcludedFromChat => "excluded_from_chat",
            Unscheduled::PipelineRejected { .. } => "pipeline_rejected",
            Unscheduled::PipelineVariablesForbidden { .. } => "pipeline_variables_forbidden",
            Unscheduled::ProtectedBranch { .. } => "protected_branch",
            Unscheduled::GitLabDenied { .. } => "gitlab_denied",
            Unscheduled::ForeignJobs { .. } => "foreign_jobs",
            Unscheduled::TokenRefused { .. } => "token_refused",
            Unscheduled::GitLabAnswered { .. } => "gitlab_answered",
            Unscheduled::GaveUp { .. } => "gave_up",
            Unscheduled::PolicyInvalid { .. } => "policy_invalid",
            Unscheduled::PolicyChannel { .. } => "policy_channel",
            Unscheduled::PolicyRole { .. } => "policy_role",
        }
    }

    fn rich(&self, job: &str) -> Rich {
        match self {
            Unscheduled::ProjectNotFound {
                project,
                detail,
                personal: false,
            } => Rich::new()
                .text("The GitLab project ")
                .code(project)
                .text(format!(
                    " was not found or the ChatOps token cannot see it ({detail}). Ask an \
                     administrator to check GITLAB_PROJECT and the token."
                )),
            Unscheduled::ProjectNotFound {
                project,
                detail,
                personal: true,
            } => Rich::new()
                .text("The GitLab project ")
                .code(project)
                .text(format!(
                    " was not found, or your GitLab account cannot see it ({detail}). Ask a \
                     Maintainer of the project for access."
                )),
            Unscheduled::ProtectedBranch { branch, message } => Rich::new()
                .text(format!("GitLab refused: {message}"))
                .br()
                .text("The branch ")
                .code(branch)
                .text(
                    " is protected and your GitLab role may not run pipelines on it. A \
                     Maintainer can give you the role, or run the job for you.",
                ),
            Unscheduled::GitLabDenied { message } => Rich::new()
                .text(
                    "You are not allowed to perform the given ChatOps command. Most likely you \
                     do not have access to the GitLab project for this ChatOps integration.",
                )
                .br()
                .text(format!(
                    "GitLab answered: {message}. Your role on the project decides what you can \
                     run from chat; a Maintainer of the project can give you access."
                )),
            Unscheduled::NoDefaultBranch => {
                Rich::new().text("The project has no default branch (is the repository empty?).")
            }
            Unscheduled::NoCiConfig { branch, detail } => Rich::new()
                .text("There is no CI configuration on ")
                .code(branch)
                .text(format!(" ({detail}).")),
            Unscheduled::CiInvalid { branch, errors } => Rich::new()
                .text("The CI configuration on ")
                .code(branch)
                .text(" is invalid: ")
                .text(if errors.is_empty() {
                    "GitLab gave no details".to_owned()
                } else {
                    errors.join("; ")
                }),
            Unscheduled::NoSuchJob { branch } => Rich::new()
                .text("There is no job named ")
                .code(job)
                .text(" on ")
                .code(branch)
                .text("."),
            Unscheduled::ExcludedFromChat => Rich::new()
                .text("The job ")
                .code(job)
                .text(" is excluded from chat (")
                .code("except: [chat]")
                .text(")."),
            Unscheduled::PipelineRejected { message } => Rich::new()
                .text(format!("GitLab did not create the pipeline: {message}"))
                .br()
                .text("The job must select itself with ")
                .code(CONTRACT_RULE)
                .text(", and ")
                .code("workflow: rules")
                .text(" must let pipelines started through the API in. ")
                .then(check_hint()),
            Unscheduled::PipelineVariablesForbidden {
                project,
                message,
                personal,
            } => Rich::new()
                .text(format!(
                    "GitLab refused the pipeline's variables ({message}): "
                ))
                .text("the project ")
                .code(project)
                .text(if *personal {
                    " does not let your GitLab role pass pipeline variables, and every chat \
                     pipeline carries "
                } else {
                    " does not let the ChatOps token pass pipeline variables, and every chat \
                     pipeline carries "
                })
                .code("CHATOPS_JOB")
                .text(" and ")
                .code("CHAT_INPUT")
                .text(".")
                .br()
                .text("A Maintainer or Owner of the project can change ")
                .bold("Settings > CI/CD > Variables > Minimum role to use pipeline variables")
                .text(if *personal {
                    " to Developer (or at most your role), or run "
                } else {
                    " to Developer (or at most the token's role), or run "
                })
                .code("chatops gitlab setup --fix-variables-role")
                .text("; ")
                .code(format!("chatops gitlab check --project {project}"))
                .text(" shows the setting."),
            Unscheduled::ForeignJobs {
                pipeline_url,
                ours,
                foreign,
            } => foreign_jobs(job, pipeline_url, *ours, foreign),
            Unscheduled::TokenRefused { detail } => Rich::new().text(format!(
                "GitLab refused the ChatOps token ({detail}). Ask an administrator to check it."
            )),
            Unscheduled::GitLabAnswered { message } => {
                Rich::new().text(format!("GitLab answered: {message}"))
            }
            Unscheduled::GaveUp { reason, attempts } => Rich::new().text(format!(
                "It could not be done right now ({reason}); the command was tried {attempts} \
                 times. Please try again later."
            )),
            Unscheduled::PolicyInvalid { error } => Rich::new()
                .text(
                    "The project's policy file is refused, so no job runs from chat until it \
                       is fixed on the default branch: ",
                )
                .text(error),
            Unscheduled::PolicyChannel { channels } => {
                let mut r = Rich::new()
                    .text("The project's policy file (")
                    .code(crate::policy::POLICY_PATH)
                    .text(") lets ")
                    .code(job)
                    .text(" be run only in ");
                for (i, c) in channels.iter().enumerate() {
                    if i > 0 {
                        r = r.text(", ");
                    }
                    r = r.code(c);
                }
                r.text(".")
            }
            Unscheduled::PolicyRole { role } => Rich::new()
                .text("The project's policy file (")
                .code(crate::policy::POLICY_PATH)
                .text(format!(
                    ") asks the {} role or higher on the project to run ",
                    role.label()
                ))
                .code(job)
                .text("."),
        }
    }
}

/// Where an administrator finds every change the CI configuration needs.
fn check_hint() -> Rich {
    Rich::new()
        .text("An administrator can run ")
        .code("chatops gitlab check")
        .text(" to see every change the CI configuration needs.")
}

/// The pipeline held other jobs (or not ours): it was cancelled; say which and how to fix.
fn foreign_jobs(job: &str, pipeline_url: &str, ours: usize, foreign: &[String]) -> Rich {
    let mut names = foreign.to_vec();
    names.sort_unstable();
    names.dedup();
    let mut r = Rich::new()
        .text("The pipeline ")
        .link(pipeline_url, "(cancelled)")
        .text(" was cancelled: a chat pipeline must hold only the job ")
        .code(job)
        .text(".");
    if ours == 0 {
        r = r
            .br()
            .text("The job ")
            .code(job)
            .text(" did not join it: give it ")
            .code(CONTRACT_RULE)
            .text(" (an ")
            .code("only: [chat]")
            .text(" job never runs in a pipeline started through the API).");
    }
    if !names.is_empty() {
        r = r
            .br()
            .text("These jobs joined it too: ")
            .code_list(names, ", ")
            .text(". Keep them out of chat pipelines with a first rule ")
            .code("- if: '$CHATOPS_JOB'")
            .text(" + ")
            .code("when: never")
            .text(" (or ")
            .code("except: variables: [$CHATOPS_JOB]")
            .text(").");
    }
    r.br().then(check_hint())
}

/// GitLab's own refusal text for a job it cannot schedule (`Presenters::Run#failed_to_schedule`).
fn could_not_schedule(job: &str) -> Rich {
    Rich::new().text(format!(
        "The command could not be scheduled. Make sure that your project has a .gitlab-ci.yml \
         that defines a job with the name \"{job}\""
    ))
}

fn usage(slash: &str) -> Rich {
    let slash = if slash.trim().is_empty() {
        "/chatops"
    } else {
        slash.trim()
    };
    Rich::new()
        .bold("Usage")
        .br()
        .text("• ")
        .code(format!("{slash} run <job> [arguments]"))
        .text(": run the CI job ")
        .code("<job>")
        .text(" of the project on its default branch; ")
        .code("[arguments]")
        .text(" become ")
        .code("CHAT_INPUT")
        .text(". The job's output is posted back here.")
        .br()
        .text("• ")
        .code(format!("{slash} help"))
        .text(": this message, then the jobs you can run here.")
        .br()
        .text("• ")
        .code(format!("{slash} status"))
        .text(": what is running from this channel; ")
        .code(format!("{slash} history [job]"))
        .text(": its last runs.")
        .br()
        .text("• ")
        .code(format!("{slash} link"))
        .text(", ")
        .code(format!("{slash} whoami"))
        .text(", ")
        .code(format!("{slash} unlink"))
        .text(": connect, show or remove your GitLab account.")
        .br()
        .text("A job can be run from chat only if it opts in with ")
        .code(CONTRACT_RULE)
        .text("; you need Developer access or more.")
}

fn slash_or_default(slash: &str) -> &str {
    if slash.trim().is_empty() {
        "/chatops"
    } else {
        slash.trim()
    }
}

/// The first line of the input, shortened, as inline code after the job's name.
fn input_suffix(input: &str) -> Rich {
    let first = input.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        Rich::new()
    } else if input.contains('\n') || first.chars().count() > 80 {
        let short: String = first.chars().take(80).collect();
        Rich::new().text(" ").code(format!("{short}…"))
    } else {
        Rich::new().text(" ").code(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Person {
        Person {
            id: "U024BE7LH".into(),
            name: "alice".into(),
        }
    }

    /// One of each notice, with hostile data wherever data goes.
    pub fn every_notice() -> Vec<(&'static str, Notice)> {
        let job = "echo-input <!channel>".to_owned();
        let input = "<!channel> <@U123> & @here".to_owned();
        let u = |why| Notice::Unscheduled {
            job: job.clone(),
            why,
        };
        vec![
            (
                "usage",
                Notice::Usage {
                    slash: "/chatops".into(),
                },
            ),
            (
                "invalid",
                Notice::Invalid {
                    slash: "/chatops".into(),
                    text: "frobnicate <!here>".into(),
                },
            ),
            ("scheduling", Notice::Scheduling { job: job.clone() }),
            (
                "could_not_queue",
                Notice::CouldNotQueue { job: job.clone() },
            ),
            (
                "queue_unconfirmed",
                Notice::QueueUnconfirmed { job: job.clone() },
            ),
            (
                "started",
                Notice::Started {
                    who: who(),
                    job: job.clone(),
                    input: input.clone(),
                    job_url: "https://gitlab.example.com/g/p/-/jobs/7".into(),
                    pipeline_url: "https://gitlab.example.com/g/p/-/pipelines/3".into(),
                },
            ),
            (
                "manual_waiting",
                Notice::ManualWaiting {
                    who: who(),
                    job: job.clone(),
                    input: input.clone(),
                    job_id: 7,
                    job_url: "https://gitlab.example.com/g/p/-/jobs/7".into(),
                    pipeline_url: "https://gitlab.example.com/g/p/-/pipelines/3".into(),
                },
            ),
            (
                "unlinked",
                Notice::Unlinked {
                    job: job.clone(),
                    team: "T1".into(),
                    user: "U1".into(),
                },
            ),
            (
                "linked_user_missing",
                Notice::LinkedUserMissing {
                    username: "ghost".into(),
                    team: "T1".into(),
                    user: "U1".into(),
                },
            ),
            (
                "access_denied",
                Notice::AccessDenied {
                    project_url: "https://gitlab.example.com/g/p".into(),
                },
            ),
            (
                "log_unreadable",
                Notice::LogUnreadable {
                    job: job.clone(),
                    status: "success".into(),
                    job_url: "https://gitlab.example.com/g/p/-/jobs/7".into(),
                },
            ),
            (
                "job_gone",
                Notice::JobGone {
                    job: job.clone(),
                    detail: "404 Job Not Found".into(),
                },
            ),
            (
                "project_not_found",
                u(Unscheduled::ProjectNotFound {
                    project: "g/p".into(),
                    detail: "404 Project Not Found".into(),
                    personal: false,
                }),
            ),
            (
                "project_not_found_personal",
                u(Unscheduled::ProjectNotFound {
                    project: "g/p".into(),
                    detail: "404 Project Not Found".into(),
                    personal: true,
                }),
            ),
            (
                "protected_branch",
                u(Unscheduled::ProtectedBranch {
                    branch: "main <!here>".into(),
                    message: "You do not have sufficient permission to run a pipeline on 'main'. Please select a different branch or contact your administrator for assistance.".into(),
                }),
            ),
            (
                "gitlab_denied",
                u(Unscheduled::GitLabDenied {
                    message: "403 Forbidden".into(),
                }),
            ),
            (
                "connect",
                Notice::Connect {
                    url: "https://gitlab.example.com/oauth/authorize?client_id=a&state=b".into(),
                    job: Some(job.clone()),
                    again: false,
                },
            ),
            (
                "reconnect",
                Notice::Connect {
                    url: "https://gitlab.example.com/oauth/authorize?client_id=a&state=b".into(),
                    job: None,
                    again: true,
                },
            ),
            ("connect_unavailable", Notice::ConnectUnavailable),
            (
                "link_by_admin",
                Notice::LinkByAdmin {
                    team: "T1".into(),
                    user: "U1".into(),
                },
            ),
            (
                "linked_as",
                Notice::LinkedAs {
                    username: "alice <!channel>".into(),
                    personal: true,
                    broken: false,
                },
            ),
            (
                "linked_as_broken",
                Notice::LinkedAs {
                    username: "alice".into(),
                    personal: true,
                    broken: true,
                },
            ),
            (
                "linked_as_admin",
                Notice::LinkedAs {
                    username: "alice".into(),
                    personal: false,
                    broken: false,
                },
            ),
            (
                "not_connected",
                Notice::NotConnected {
                    slash: "/chatops".into(),
                },
            ),
            (
                "disconnected",
                Notice::Disconnected {
                    username: "alice".into(),
                    personal: true,
                    revoked: true,
                },
            ),
            (
                "disconnected_unconfirmed",
                Notice::Disconnected {
                    username: "alice".into(),
                    personal: true,
                    revoked: false,
                },
            ),
            ("identity_unavailable", Notice::IdentityUnavailable),
            ("no_default_branch", u(Unscheduled::NoDefaultBranch)),
            (
                "no_ci_config",
                u(Unscheduled::NoCiConfig {
                    branch: "main".into(),
                    detail: "404".into(),
                }),
            ),
            (
                "ci_invalid",
                u(Unscheduled::CiInvalid {
                    branch: "main".into(),
                    errors: vec!["jobs:x config contains unknown keys: <!channel>".into()],
                }),
            ),
            (
                "no_such_job",
                u(Unscheduled::NoSuchJob {
                    branch: "main".into(),
                }),
            ),
            ("excluded", u(Unscheduled::ExcludedFromChat)),
            (
                "pipeline_rejected",
                u(Unscheduled::PipelineRejected {
                    message: "Pipeline filtered out by workflow rules.".into(),
                }),
            ),
            (
                "pipeline_variables_forbidden",
                u(Unscheduled::PipelineVariablesForbidden {
                    project: "g/p <!channel>".into(),
                    message: "Insufficient permissions to set pipeline variables".into(),
                    personal: false,
                }),
            ),
            (
                "pipeline_variables_forbidden_personal",
                u(Unscheduled::PipelineVariablesForbidden {
                    project: "g/p".into(),
                    message: "Insufficient permissions to set pipeline variables".into(),
                    personal: true,
                }),
            ),
            (
                "foreign_jobs",
                u(Unscheduled::ForeignJobs {
                    pipeline_url: "https://gitlab.example.com/g/p/-/pipelines/3".into(),
                    ours: 0,
                    foreign: vec!["lint".into(), "test <!here>".into(), "lint".into()],
                }),
            ),
            (
                "token_refused",
                u(Unscheduled::TokenRefused {
                    detail: "401 Unauthorized".into(),
                }),
            ),
            (
                "gitlab_answered",
                u(Unscheduled::GitLabAnswered {
                    message: "Reference not found".into(),
                }),
            ),
            (
                "gave_up",
                u(Unscheduled::GaveUp {
                    reason: "502 Bad Gateway".into(),
                    attempts: 5,
                }),
            ),
            (
                "policy_invalid",
                u(Unscheduled::PolicyInvalid {
                    error: ".gitlab/chatops.yml line 3: job \"d\": unknown key \"<!channel>\"".into(),
                }),
            ),
            (
                "policy_channel",
                u(Unscheduled::PolicyChannel {
                    channels: vec!["C0123".into(), "<!here>".into()],
                }),
            ),
            (
                "policy_role",
                u(Unscheduled::PolicyRole {
                    role: crate::policy::Role::Maintainer,
                }),
            ),
            (
                "approval_expired",
                Notice::ApprovalExpired {
                    job: job.clone(),
                    minutes: 60,
                },
            ),
            (
                "runnable_jobs",
                Notice::RunnableJobs {
                    project: "g/p <!here>".into(),
                    branch: "main".into(),
                    jobs: vec![
                        RunnableJob {
                            name: "deploy".into(),
                            manual: true,
                            description: Some("Deploys <!channel> to production\nsecond line".into()),
                            needs_approval: true,
                        },
                        RunnableJob {
                            name: job.clone(),
                            manual: false,
                            description: None,
                            needs_approval: false,
                        },
                    ],
                },
            ),
            (
                "runnable_jobs_none",
                Notice::RunnableJobs {
                    project: "g/p".into(),
                    branch: "main".into(),
                    jobs: vec![],
                },
            ),
            (
                "help_ci_invalid",
                Notice::HelpCiInvalid {
                    project: "g/p".into(),
                    branch: "main".into(),
                    errors: vec!["jobs:x config contains unknown keys: <!channel>".into()],
                },
            ),
            (
                "jobs_unavailable",
                Notice::JobsUnavailable {
                    detail: "GitLab is unavailable (502)".into(),
                },
            ),
            (
                "channel_status",
                Notice::ChannelStatus {
                    runs: vec![
                        RunLine {
                            job: job.clone(),
                            user_name: "<!channel> @here".into(),
                            state: RunState::Running,
                            received_at: 1_767_225_600,
                            secs: Some(125),
                            url: Some("https://gitlab.example.com/g/p/-/jobs/7".into()),
                        },
                        RunLine {
                            job: "restart".into(),
                            user_name: "bob".into(),
                            state: RunState::Manual,
                            received_at: 1_767_222_000,
                            secs: None,
                            url: None,
                        },
                    ],
                    now: 1_767_225_725,
                },
            ),
            (
                "channel_status_empty",
                Notice::ChannelStatus {
                    runs: vec![],
                    now: 1,
                },
            ),
            (
                "channel_history",
                Notice::ChannelHistory {
                    runs: vec![
                        RunLine {
                            job: "deploy".into(),
                            user_name: "alice".into(),
                            state: RunState::Succeeded,
                            received_at: 1_767_225_600,
                            secs: Some(83),
                            url: Some("https://gitlab.example.com/g/p/-/jobs/7".into()),
                        },
                        RunLine {
                            job: job.clone(),
                            user_name: "bob".into(),
                            state: RunState::Refused,
                            received_at: 1_767_139_200,
                            secs: None,
                            url: None,
                        },
                        RunLine {
                            job: "restart".into(),
                            user_name: "alice".into(),
                            state: RunState::Manual,
                            received_at: 1_767_139_150,
                            secs: Some(86_450),
                            url: Some("https://gitlab.example.com/g/p/-/jobs/9".into()),
                        },
                        RunLine {
                            job: "db-check".into(),
                            user_name: "alice".into(),
                            state: RunState::Failed,
                            received_at: 1_767_139_100,
                            secs: Some(12),
                            url: Some("https://gitlab.example.com/g/p/-/jobs/6".into()),
                        },
                    ],
                    job: None,
                },
            ),
            (
                "channel_history_of_job",
                Notice::ChannelHistory {
                    runs: vec![RunLine {
                        job: job.clone(),
                        user_name: "alice".into(),
                        state: RunState::Canceled,
                        received_at: 1_767_225_600,
                        secs: Some(4000),
                        url: None,
                    }],
                    job: Some(job.clone()),
                },
            ),
            (
                "channel_history_of_job_empty",
                Notice::ChannelHistory {
                    runs: vec![],
                    job: Some(job.clone()),
                },
            ),
            ("activity_unavailable", Notice::ActivityUnavailable),
        ]
    }

    #[test]
    fn every_notice_on_both_platforms() {
        let mut all = String::new();
        for (name, n) in every_notice() {
            for p in [Platform::Slack, Platform::Mattermost] {
                let text = n.render(p);
                // Data never forms a broadcast or a mention other than the asker's.
                let forbidden: &[&str] = match p {
                    Platform::Slack => &["<!channel>", "<!here>", "<@U123>"],
                    Platform::Mattermost => &["@here", "@channel", "@U123"],
                };
                for f in forbidden {
                    assert!(!text.contains(f), "{name} {p:?}: {text}");
                }
                all.push_str(&format!("--- {name} ({})\n{text}\n", p.as_str()));
            }
        }
        insta::assert_snapshot!(all);
    }
}
