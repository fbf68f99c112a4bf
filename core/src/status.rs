//! `status` and `history [job]`: a channel's runs, read from the run store with one indexed
//! query (`RunStore::channel_runs`, the `by-channel` index: newest first), answered by the
//! ingress at once and only to the person who asked. Nothing here calls GitLab: what a list
//! shows is what the runs table knows (a run's state as of its last webhook or sweep).

use crate::ids::{ChannelId, TeamId};
use crate::notice::{Notice, RunLine, RunState};
use crate::run::{Platform, RunRecord, RunResult, RunStatus};
use crate::store::RunStore;

/// How many of the channel's most recent runs `status` looks through for open ones.
pub const STATUS_WINDOW: usize = 50;
/// How many runs `history` shows.
pub const HISTORY_LIMIT: usize = 10;
/// How many recent runs `history <job>` looks through for that job's last ones.
pub const HISTORY_JOB_WINDOW: usize = 100;
/// A run still "starting" this long after its command was received will not start any more
/// (the queue gave up on it well before): `status` leaves it out.
pub const STALE_START_SECS: u64 = 3600;

/// Which channel, for whom.
#[derive(Debug, Clone, Copy)]
pub struct Channel<'a> {
    pub platform: Platform,
    pub team: &'a TeamId,
    pub channel: &'a ChannelId,
}

/// A run as a list shows it.
pub fn line(run: &RunRecord, now: u64) -> RunLine {
    let state = match (run.status, run.outcome.map(|o| o.result)) {
        (RunStatus::Dispatching, _) => RunState::Starting,
        (RunStatus::Running, _) => RunState::Running,
        (RunStatus::WaitingManual, _) => RunState::Manual,
        (RunStatus::AwaitingApproval, _) => RunState::AwaitingApproval,
        (RunStatus::Refused, _) => RunState::Refused,
        (RunStatus::Replied, Some(RunResult::Success)) => RunState::Succeeded,
        (RunStatus::Replied, Some(RunResult::Failed)) => RunState::Failed,
        (RunStatus::Replied, Some(RunResult::Canceled)) => RunState::Canceled,
        (RunStatus::Replied, Some(RunResult::Skipped)) => RunState::Skipped,
        (RunStatus::Replied, Some(RunResult::Gone)) => RunState::Gone,
        (RunStatus::Replied, None) => RunState::Ended,
    };
    let secs = match run.status {
        s if s.is_open() || s == RunStatus::Dispatching => {
            Some(now.saturating_sub(run.request.received_at))
        }
        _ => run
            .outcome
            .and_then(|o| o.duration_secs)
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map(|d| d.round() as u64),
    };
    RunLine {
        job: run.request.job.clone(),
        user_name: run.request.user_name.clone(),
        state,
        received_at: run.request.received_at,
        secs,
        url: run.job_url.clone().or_else(|| run.pipeline_url.clone()),
    }
}

async fn runs(
    store: &dyn RunStore,
    at: Channel<'_>,
    window: usize,
    now: u64,
) -> Option<Vec<RunRecord>> {
    match store
        .channel_runs(at.platform, at.team, at.channel, window)
        .await
    {
        // The table's TTL deletes expired items within days, not at once.
        Ok(v) => Some(v.into_iter().filter(|r| r.expires_at >= now).collect()),
        Err(e) => {
            tracing::error!(error = %crate::report::chain(&e), "could not read the channel's runs");
            None
        }
    }
}

/// `status`: the channel's open runs, newest first.
pub async fn status(store: &dyn RunStore, at: Channel<'_>, now: u64) -> Notice {
    let Some(runs) = runs(store, at, STATUS_WINDOW, now).await else {
        return Notice::ActivityUnavailable;
    };
    let lines = runs
        .iter()
        .filter(|r| match r.status {
            RunStatus::Dispatching => now.saturating_sub(r.request.received_at) < STALE_START_SECS,
            s => s.is_open(),
        })
        .map(|r| line(r, now))
        .collect();
    Notice::ChannelStatus { runs: lines, now }
}

/// `history [job]`: the channel's last runs (of `job`), newest first.
pub async fn history(store: &dyn RunStore, at: Channel<'_>, job: Option<&str>, now: u64) -> Notice {
    let window = if job.is_some() {
        HISTORY_JOB_WINDOW
    } else {
        HISTORY_LIMIT
    };
    let Some(runs) = runs(store, at, window, now).await else {
        return Notice::ActivityUnavailable;
    };
    let lines = runs
        .iter()
        .filter(|r| job.is_none_or(|j| r.request.job == j))
        .take(HISTORY_LIMIT)
        .map(|r| line(r, now))
        .collect();
    Notice::ChannelHistory {
        runs: lines,
        job: job.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChatUserId, RequestId};
    use crate::run::{JobOutcome, RequestKind, RunRequest, RUN_REQUEST_VERSION};
    use crate::store::{DispatchClaim, MemoryStore};

    fn request(id: &str, channel: &str, job: &str, at: u64) -> RunRequest {
        RunRequest {
            version: RUN_REQUEST_VERSION,
            kind: RequestKind::Run,
            request_id: RequestId::new(id),
            platform: Platform::Slack,
            team_id: TeamId::new("T1"),
            team_domain: None,
            channel_id: ChannelId::new(channel),
            channel_name: channel.to_lowercase(),
            user_id: ChatUserId::new("U1"),
            user_name: "alice".into(),
            command: "/chatops".into(),
            job: job.into(),
            input: String::new(),
            response_url: String::new(),
            received_at: at,
            public_base: None,
        }
    }

    async fn put(
        store: &MemoryStore,
        req: RunRequest,
        status: RunStatus,
        outcome: Option<JobOutcome>,
    ) {
        let at = req.received_at;
        let DispatchClaim::Claimed(rec) = store.claim_dispatch(&req, at, 60).await.unwrap() else {
            panic!("claimed")
        };
        let mut rec = *rec;
        rec.status = status;
        rec.job_url = Some(format!("https://gitlab.example.com/-/jobs/{at}"));
        store.save_run(&rec).await.unwrap();
        if let Some(o) = outcome {
            rec.status = RunStatus::Running;
            store.save_run(&rec).await.unwrap();
            assert!(store
                .finish_reply(&req.request_id, at + 5, Some(&o))
                .await
                .unwrap());
        }
    }

    #[tokio::test]
    async fn status_and_history_show_this_channel_only() {
        let store = MemoryStore::new();
        let ok = Some(JobOutcome {
            result: RunResult::Success,
            duration_secs: Some(83.4),
        });
        put(
            &store,
            request("a", "C1", "deploy", 1_000),
            RunStatus::Running,
            None,
        )
        .await;
        put(
            &store,
            request("b", "C1", "deploy", 1_010),
            RunStatus::Running,
            ok,
        )
        .await;
        put(
            &store,
            request("c", "C2", "deploy", 1_020),
            RunStatus::Running,
            None,
        )
        .await;
        put(
            &store,
            request("d", "C1", "lint", 1_030),
            RunStatus::Refused,
            None,
        )
        .await;
        put(
            &store,
            request("e", "C1", "restart", 1_040),
            RunStatus::WaitingManual,
            None,
        )
        .await;
        put(
            &store,
            request("f", "C1", "old", 1_050),
            RunStatus::Dispatching,
            None,
        )
        .await;
        let (team, c1) = (TeamId::new("T1"), ChannelId::new("C1"));
        let at = Channel {
            platform: Platform::Slack,
            team: &team,
            channel: &c1,
        };
        let now = 1_100;
        let Notice::ChannelStatus { runs, .. } = status(&store, at, now).await else {
            panic!()
        };
        let got: Vec<(&str, RunState, Option<u64>)> = runs
            .iter()
            .map(|l| (l.job.as_str(), l.state, l.secs))
            .collect();
        assert_eq!(
            got,
            [
                ("old", RunState::Starting, Some(50)),
                ("restart", RunState::Manual, Some(60)),
                ("deploy", RunState::Running, Some(100)),
            ]
        );
        // A start that never happened is no longer shown an hour later.
        let Notice::ChannelStatus { runs, .. } = status(&store, at, 1_050 + STALE_START_SECS).await
        else {
            panic!()
        };
        assert!(runs.iter().all(|l| l.job != "old"));

        let Notice::ChannelHistory { runs, job } = history(&store, at, None, now).await else {
            panic!()
        };
        assert_eq!(job, None);
        let got: Vec<(&str, RunState, Option<u64>)> = runs
            .iter()
            .map(|l| (l.job.as_str(), l.state, l.secs))
            .collect();
        assert_eq!(
            got,
            [
                ("old", RunState::Starting, Some(50)),
                ("restart", RunState::Manual, Some(60)),
                ("lint", RunState::Refused, None),
                ("deploy", RunState::Succeeded, Some(83)),
                ("deploy", RunState::Running, Some(100)),
            ]
        );
        let Notice::ChannelHistory { runs, .. } = history(&store, at, Some("deploy"), now).await
        else {
            panic!()
        };
        assert_eq!(runs.len(), 2, "only deploy, only this channel");
    }

    #[tokio::test]
    async fn history_shows_ten_and_expired_runs_are_gone() {
        let store = MemoryStore::new();
        for i in 0..15u64 {
            put(
                &store,
                request(&format!("r{i}"), "C1", "j", 1_000 + i),
                RunStatus::Refused,
                None,
            )
            .await;
        }
        let (team, c1) = (TeamId::new("T1"), ChannelId::new("C1"));
        let at = Channel {
            platform: Platform::Slack,
            team: &team,
            channel: &c1,
        };
        let Notice::ChannelHistory { runs, .. } = history(&store, at, None, 2_000).await else {
            panic!()
        };
        assert_eq!(runs.len(), HISTORY_LIMIT);
        assert_eq!(runs[0].received_at, 1_014, "newest first");
        let later = 1_000 + crate::run::RUN_RETENTION_SECS + 100;
        let Notice::ChannelHistory { runs, .. } = history(&store, at, None, later).await else {
            panic!()
        };
        assert!(runs.is_empty());
    }
}
