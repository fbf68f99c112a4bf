//! `help`'s follow-up: which jobs of the channel's project chat can run. The ingress answers
//! `help` with the grammar at once; the job list needs GitLab, so the request goes through
//! the queue and the dispatcher asks, with the same identity it runs jobs with (the person's
//! own token with OAuth, else the bot's), then sends the list to the person only.
//!
//! The project's policy file (`policy`) adds each job's description and a "needs approval"
//! mark.
//!
//! Three GitLab calls at most, both reused for a minute per container and per token by the
//! REST client (the project, also used by every run; the merged CI configuration; the policy
//! file), so a
//! burst of `help` costs GitLab one call. The jobs are read from the merged YAML by
//! `runnable` (the job contract, not `except: [chat]`).

use crate::gitlab::{GitLab, GitLabError};
use crate::ids::ProjectRef;
use crate::notice::Notice;
use crate::policy::{self, Policy, POLICY_PATH};
use crate::runnable::runnable_jobs;

/// The notice `help` follows up with. GitLab answering (not found, denied, rejected) is
/// said in the notice; GitLab being unavailable (or no longer taking the token) is the
/// error, for the caller to retry or drop.
pub async fn jobs(gl: &dyn GitLab, project_ref: &ProjectRef) -> Result<Notice, GitLabError> {
    let answered = |e: GitLabError| match e {
        GitLabError::NotFound(d) | GitLabError::Forbidden(d) | GitLabError::Rejected(d) => {
            Ok(Notice::JobsUnavailable { detail: d })
        }
        other => Err(other),
    };
    let project = match gl.project(project_ref).await {
        Ok(p) => p,
        Err(e) => return answered(e),
    };
    let Some(branch) = project.default_branch.clone().filter(|b| !b.is_empty()) else {
        return Ok(Notice::JobsUnavailable {
            detail: format!("{} has no default branch", project.path_with_namespace),
        });
    };
    let merged = match gl.merged_ci_yaml(project.id, &branch).await {
        Ok(m) => m,
        Err(e) => return answered(e),
    };
    if !merged.valid {
        return Ok(Notice::HelpCiInvalid {
            project: project.path_with_namespace,
            branch,
            errors: merged.errors,
        });
    }
    // The policy file (cached like the rest) adds each job's description and whether it
    // needs approval; a refused file is said instead of a list that would hide its rules.
    let policy = match gl.repository_file(project.id, POLICY_PATH, &branch).await {
        Ok(None) => Policy::default(),
        Ok(Some(text)) => match policy::parse(&text) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Notice::JobsUnavailable {
                    detail: e.to_string(),
                })
            }
        },
        Err(e) => return answered(e),
    };
    let mut jobs = runnable_jobs(merged.merged_yaml.as_deref().unwrap_or_default());
    for j in &mut jobs {
        if let Some(rule) = policy.job(&j.name) {
            j.description = rule.description.clone();
            j.needs_approval = rule.needs_approval();
        }
    }
    Ok(Notice::RunnableJobs {
        project: project.path_with_namespace,
        branch,
        jobs,
    })
}
