//! `DynamoStore` over moto's DynamoDB wire protocol: every conditional write the product
//! relies on, against a table created with the production schema.

mod support;

use chatops_adapters::dynamo::DynamoStore;
use chatops_core::ids::{ChatUserId, PipelineId, RequestId, TeamId};
use chatops_core::run::{RunRecord, RunRequest, RunStatus, UserLink};
use chatops_core::store::{DispatchClaim, ReplyClaim, RunStore};
use std::sync::Arc;

async fn store() -> DynamoStore {
    let cfg = support::aws_config().await;
    let client = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique_name("runs");
    DynamoStore::create_table(&client, &table).await.unwrap();
    DynamoStore::new(client, table)
}

fn request(id: &str) -> RunRequest {
    support::run_request(
        id,
        "deploy",
        "production",
        "https://hooks.slack.com/commands/T1/1/x",
        1_000,
    )
}

#[tokio::test]
async fn claim_twice_then_done_after_save() {
    let st = store().await;
    let req = request("r-claim");
    let first = st.claim_dispatch(&req, 1_000, 60).await.unwrap();
    let DispatchClaim::Claimed(rec) = first else {
        panic!("first claim must win: {first:?}")
    };
    assert_eq!(rec.status, RunStatus::Dispatching);
    assert_eq!(
        st.claim_dispatch(&req, 1_010, 60).await.unwrap(),
        DispatchClaim::Busy
    );

    let mut rec = *rec;
    rec.status = RunStatus::Running;
    rec.pipeline_id = Some(PipelineId(77));
    st.save_run(&rec).await.unwrap();
    match st.claim_dispatch(&req, 1_020, 60).await.unwrap() {
        DispatchClaim::Done(r) => assert_eq!(r.pipeline_id, Some(PipelineId(77))),
        other => panic!("expected Done, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_lease_is_taken_over_once() {
    let st = store().await;
    let req = request("r-lease");
    assert!(matches!(
        st.claim_dispatch(&req, 1_000, 60).await.unwrap(),
        DispatchClaim::Claimed(_)
    ));
    // The first dispatcher crashed; its lease ends at 1060.
    let taken = st.claim_dispatch(&req, 1_061, 60).await.unwrap();
    let DispatchClaim::Claimed(rec) = taken else {
        panic!("expired lease must be taken: {taken:?}")
    };
    assert_eq!(rec.lease_until, 1_121);
    assert_eq!(
        st.claim_dispatch(&req, 1_062, 60).await.unwrap(),
        DispatchClaim::Busy
    );
}

#[tokio::test]
async fn expired_record_is_claimed_fresh() {
    let st = store().await;
    let req = request("r-expired");
    let DispatchClaim::Claimed(rec) = st.claim_dispatch(&req, 1_000, 60).await.unwrap() else {
        panic!()
    };
    let mut rec = *rec;
    rec.status = RunStatus::Refused;
    st.save_run(&rec).await.unwrap();
    let later = rec.expires_at + 1;
    assert!(matches!(
        st.claim_dispatch(&req, later, 60).await.unwrap(),
        DispatchClaim::Claimed(_)
    ));
}

#[tokio::test]
async fn one_reply_under_concurrency_in_one_write_each() {
    let st = Arc::new(store().await);
    let req = request("r-reply");
    let DispatchClaim::Claimed(rec) = st.claim_dispatch(&req, 1_000, 60).await.unwrap() else {
        panic!()
    };
    let mut rec = *rec;
    rec.status = RunStatus::Running;
    rec.pipeline_id = Some(PipelineId(5));
    st.save_run(&rec).await.unwrap();

    // Ten webhooks or sweeps at once: exactly one takes the reply, with a response_url use.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let st = st.clone();
        let id = req.request_id.clone();
        tasks.push(tokio::spawn(async move {
            st.begin_reply(&id, 2_000, 120, Some(5), 1).await.unwrap()
        }));
    }
    let mut claims = Vec::new();
    for t in tasks {
        claims.push(t.await.unwrap());
    }
    let wins: Vec<_> = claims
        .iter()
        .filter(|c| matches!(c, ReplyClaim::Claimed { .. }))
        .collect();
    assert_eq!(wins, [&ReplyClaim::Claimed { response_url: true }]);
    assert_eq!(claims.iter().filter(|c| **c == ReplyClaim::Busy).count(), 9);
    let stored = st.get_run(&req.request_id).await.unwrap().unwrap();
    assert_eq!(
        stored.response_url_uses, 2,
        "the claim counted the card's use; the reply's was taken in the same write"
    );
    assert!(stored.reply_lease_until > 2_000);

    // A failed delivery gives it back; the next one takes it again.
    st.release_reply(&req.request_id, 2_030).await.unwrap();
    assert!(matches!(
        st.begin_reply(&req.request_id, 2_001, 120, Some(5), 1)
            .await
            .unwrap(),
        ReplyClaim::Claimed { .. }
    ));
    assert!(st.finish_reply(&req.request_id, 2_002, None).await.unwrap());
    assert!(!st.finish_reply(&req.request_id, 2_003, None).await.unwrap());
    let stored = st.get_run(&req.request_id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Replied);
    // A later save by a slow owner must not reopen it.
    let saved = st.save_run(&rec).await.unwrap();
    assert_eq!(saved.status, RunStatus::Replied);
    assert_eq!(
        st.begin_reply(&req.request_id, 9_000, 120, Some(5), 1)
            .await
            .unwrap(),
        ReplyClaim::Done
    );
    // Unknown runs cannot be claimed.
    assert_eq!(
        st.begin_reply(&RequestId::new("nope"), 3_000, 120, None, 1)
            .await
            .unwrap(),
        ReplyClaim::Done
    );
}

#[tokio::test]
async fn spent_response_url_still_claims_the_reply_without_it() {
    let st = store().await;
    let req = request("r-spent");
    let DispatchClaim::Claimed(rec) = st.claim_dispatch(&req, 1_000, 60).await.unwrap() else {
        panic!()
    };
    let mut rec = *rec;
    rec.status = RunStatus::Running;
    st.save_run(&rec).await.unwrap();
    for _ in 0..5 {
        st.take_response_url_use(&req.request_id, 5).await.unwrap();
    }
    assert_eq!(
        st.begin_reply(&req.request_id, 2_000, 120, Some(5), 1)
            .await
            .unwrap(),
        ReplyClaim::Claimed {
            response_url: false
        }
    );
}

#[tokio::test]
async fn an_early_hook_is_marked_only_while_dispatching() {
    let st = store().await;
    let req = request("r-early");
    let DispatchClaim::Claimed(rec) = st.claim_dispatch(&req, 1_000, 60).await.unwrap() else {
        panic!()
    };
    let marked = st.mark_early_hook(&req.request_id, 1_001).await.unwrap();
    assert_eq!(marked.and_then(|r| r.early_hook_at), Some(1_001));
    // The dispatcher's save reads the mark back.
    let mut rec = *rec;
    rec.status = RunStatus::Running;
    let stored = st.save_run(&rec).await.unwrap();
    assert_eq!(stored.early_hook_at, Some(1_001));
    assert_eq!(
        st.mark_early_hook(&req.request_id, 1_002).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn response_url_uses_stop_at_five_and_survive_saves() {
    let st = store().await;
    let req = request("r-uses");
    let DispatchClaim::Claimed(rec) = st.claim_dispatch(&req, 1_000, 60).await.unwrap() else {
        panic!()
    };
    // The claim of a Slack command counted the use of its first card, in the same write.
    assert_eq!((rec.response_url_uses, rec.announce_use), (1, true));
    assert_eq!(
        st.get_run(&req.request_id)
            .await
            .unwrap()
            .map(|r| (r.response_url_uses, r.announce_use)),
        Some((1, false)),
        "counted in the table; that it is unspent is the claimer's alone"
    );
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(st.take_response_url_use(&req.request_id, 5).await.unwrap());
        // The owner saving its (stale) record in between must not reset the count.
        st.save_run(&rec).await.unwrap();
    }
    assert_eq!(got, vec![Some(2), Some(3), Some(4), Some(5), None, None]);
    assert_eq!(
        st.get_run(&req.request_id)
            .await
            .unwrap()
            .unwrap()
            .response_url_uses,
        5
    );
    assert_eq!(
        st.take_response_url_use(&RequestId::new("missing"), 5)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn users_link_unlink_list() {
    let st = store().await;
    let link = |team: &str, user: &str, gl: &str| UserLink {
        team_id: TeamId::new(team),
        chat_user_id: ChatUserId::new(user),
        gitlab_username: gl.into(),
        gitlab_user_id: None,
        linked_at: 1_000,
        platform: None,
        grant: None,
    };
    st.link_user(&link("T2", "U9", "zed")).await.unwrap();
    st.link_user(&link("T1", "U1", "alice")).await.unwrap();
    st.link_user(&link("T1", "U1", "alice2")).await.unwrap();
    assert_eq!(
        st.get_user("T1", "U1")
            .await
            .unwrap()
            .unwrap()
            .gitlab_username,
        "alice2"
    );
    // Runs in the same table are not users.
    st.claim_dispatch(&request("r-users"), 1_000, 60)
        .await
        .unwrap();
    let all = st.list_users().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|l| l.gitlab_username.as_str())
            .collect::<Vec<_>>(),
        ["alice2", "zed"]
    );
    assert!(st.unlink_user("T1", "U1").await.unwrap());
    assert!(!st.unlink_user("T1", "U1").await.unwrap());
    assert_eq!(st.get_user("T1", "U1").await.unwrap(), None);
}

#[tokio::test]
async fn due_runs_and_find_by_pipeline_use_the_indexes() {
    let st = store().await;
    let mut saved: Vec<RunRecord> = Vec::new();
    for (i, status) in [
        RunStatus::Running,
        RunStatus::WaitingManual,
        RunStatus::Refused,
        RunStatus::Running,
    ]
    .into_iter()
    .enumerate()
    {
        let req = request(&format!("r-open-{i}"));
        let DispatchClaim::Claimed(rec) = st.claim_dispatch(&req, 1_000, 60).await.unwrap() else {
            panic!()
        };
        let mut rec = *rec;
        rec.status = status;
        rec.pipeline_id = Some(PipelineId(900 + i as u64));
        rec.updated_at = 1_000 + i as u64 * 100;
        rec.due_at = 1_300 - i as u64 * 100;
        st.save_run(&rec).await.unwrap();
        saved.push(rec);
    }
    // Due (due_at <= now) open runs, most overdue first; closed ones never.
    let open = st.due_runs(1_250, 10).await.unwrap();
    let ids: Vec<_> = open
        .iter()
        .map(|r| r.request.request_id.0.as_str())
        .collect();
    assert_eq!(ids, ["r-open-3", "r-open-1"]);
    assert_eq!(
        st.due_runs(10_000, 1).await.unwrap().len(),
        1,
        "the limit holds"
    );

    // Replying closes a run: it leaves the open index. A check pushes one back.
    assert!(matches!(
        st.begin_reply(&RequestId::new("r-open-3"), 1_400, 60, None, 1)
            .await
            .unwrap(),
        ReplyClaim::Claimed { .. }
    ));
    assert!(st
        .finish_reply(&RequestId::new("r-open-3"), 1_400, None)
        .await
        .unwrap());
    st.schedule_check(&RequestId::new("r-open-1"), 5_000, 1)
        .await
        .unwrap();
    let open = st.due_runs(4_999, 10).await.unwrap();
    let ids: Vec<_> = open
        .iter()
        .map(|r| r.request.request_id.0.as_str())
        .collect();
    assert_eq!(ids, ["r-open-0"]);
    let later = st.due_runs(5_000, 10).await.unwrap();
    assert_eq!(later.len(), 2);
    assert_eq!(later[1].checks, 1);

    let found = st.find_by_pipeline(PipelineId(902)).await.unwrap().unwrap();
    assert_eq!(found.request.request_id.0, "r-open-2");
    assert_eq!(found.status, RunStatus::Refused);
    assert_eq!(st.find_by_pipeline(PipelineId(1)).await.unwrap(), None);
}

/// `status` and `history` read a channel's runs: newest first, only that channel (the same
/// channel id in another team or on another platform is another channel), at most `limit`,
/// each with how its job ended once the reply is recorded. The contract, for both stores.
async fn channel_runs_contract(st: &dyn RunStore) {
    use chatops_core::ids::ChannelId;
    use chatops_core::run::{JobOutcome, Platform, RunResult};
    let mut at = 5_000;
    let mut put = |id: &str, platform: Platform, team: &str, channel: &str| {
        at += 10;
        let mut r = request(id);
        r.platform = platform;
        r.team_id = TeamId::new(team);
        r.channel_id = ChannelId::new(channel);
        r.received_at = at;
        r
    };
    let reqs = [
        put("ch-1", Platform::Slack, "T1", "C1"),
        put("ch-2", Platform::Slack, "T1", "C2"),
        put("ch-3", Platform::Slack, "T2", "C1"),
        put("ch-4", Platform::Mattermost, "T1", "C1"),
        put("ch-5", Platform::Slack, "T1", "C1"),
        put("ch-6", Platform::Slack, "T1", "C1"),
    ];
    for r in &reqs {
        let DispatchClaim::Claimed(rec) = st.claim_dispatch(r, r.received_at, 60).await.unwrap()
        else {
            panic!("claimed {}", r.request_id)
        };
        let mut rec = *rec;
        rec.status = RunStatus::Running;
        st.save_run(&rec).await.unwrap();
    }
    let outcome = JobOutcome {
        result: RunResult::Failed,
        duration_secs: Some(12.5),
    };
    assert!(matches!(
        st.begin_reply(&RequestId::new("ch-5"), 6_000, 60, None, 1)
            .await
            .unwrap(),
        ReplyClaim::Claimed { .. }
    ));
    assert!(st
        .finish_reply(&RequestId::new("ch-5"), 6_000, Some(&outcome))
        .await
        .unwrap());

    let (t1, c1) = (TeamId::new("T1"), ChannelId::new("C1"));
    let runs = st
        .channel_runs(Platform::Slack, &t1, &c1, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.request.request_id.as_str()).collect();
    assert_eq!(
        ids,
        ["ch-6", "ch-5", "ch-1"],
        "newest first, this channel only"
    );
    assert_eq!(runs[1].status, RunStatus::Replied);
    assert_eq!(
        runs[1].outcome,
        Some(outcome),
        "the outcome came with the reply"
    );
    assert_eq!(runs[0].outcome, None);
    let two = st.channel_runs(Platform::Slack, &t1, &c1, 2).await.unwrap();
    assert_eq!(two.len(), 2, "the limit holds");
    let mm = st
        .channel_runs(Platform::Mattermost, &t1, &c1, 10)
        .await
        .unwrap();
    assert_eq!(mm.len(), 1);
    assert!(st
        .channel_runs(Platform::Slack, &t1, &ChannelId::new("C9"), 10)
        .await
        .unwrap()
        .is_empty());
    // A later save by a slow owner keeps the outcome (finish_reply owns it).
    let mut stale = st.get_run(&RequestId::new("ch-5")).await.unwrap().unwrap();
    stale.outcome = None;
    stale.status = RunStatus::Running;
    let saved = st.save_run(&stale).await.unwrap();
    assert_eq!(saved.outcome, Some(outcome));
    assert_eq!(saved.status, RunStatus::Replied);
}

#[tokio::test]
async fn channel_runs_on_dynamodb() {
    channel_runs_contract(&store().await).await;
}

#[tokio::test]
async fn channel_runs_in_memory() {
    channel_runs_contract(&chatops_core::store::MemoryStore::new()).await;
}

/// The card's buttons: one press claimed in one conditional write (a double click or two
/// people act once; the same click again is told it is its own), released only by its own
/// key, and neither a press nor the card's place is undone by a later `save_run`. The same
/// contract for DynamoDB (moto) and the in-memory store.
#[tokio::test]
async fn button_presses_are_claimed_once_and_survive_saves() {
    use chatops_core::ids::{ChannelId, MessageTs};
    use chatops_core::run::{ActionKind, ActionTaken, CardRef};
    use chatops_core::store::{ActionClaim, MemoryStore};
    let stores: Vec<(&str, Arc<dyn RunStore>)> = vec![
        ("dynamodb", Arc::new(store().await)),
        ("memory", Arc::new(MemoryStore::new())),
    ];
    for (name, st) in stores {
        let press = |key: &str, by: &str| ActionTaken {
            key: key.into(),
            by: ChatUserId::new(by),
            by_name: by.to_lowercase(),
            at: 1_100,
        };
        let id = RequestId::new("r-press");
        assert_eq!(
            st.claim_action(&id, ActionKind::Cancel, &press("k1", "U1"))
                .await
                .unwrap(),
            ActionClaim::NoRun,
            "{name}"
        );
        let DispatchClaim::Claimed(rec) = st
            .claim_dispatch(&request("r-press"), 1_000, 60)
            .await
            .unwrap()
        else {
            panic!("{name}: claim")
        };
        let mut rec = *rec;
        rec.status = RunStatus::Running;
        st.save_run(&rec).await.unwrap();

        // Concurrent presses: exactly one wins.
        let attempts: Vec<_> = (0..6)
            .map(|i| {
                let st = st.clone();
                let id = id.clone();
                let p = press(&format!("k{i}"), &format!("U{i}"));
                tokio::spawn(async move { st.claim_action(&id, ActionKind::Cancel, &p).await })
            })
            .collect();
        let mut won = Vec::new();
        for (i, a) in attempts.into_iter().enumerate() {
            if let ActionClaim::Claimed { again } = a.await.unwrap().unwrap() {
                assert!(!again, "{name}");
                won.push(i);
            }
        }
        assert_eq!(won.len(), 1, "{name}: {won:?}");
        let winner = format!("k{}", won[0]);
        let by = format!("U{}", won[0]);
        // The same click again is its own; another is told who was first.
        assert_eq!(
            st.claim_action(&id, ActionKind::Cancel, &press(&winner, &by))
                .await
                .unwrap(),
            ActionClaim::Claimed { again: true },
            "{name}"
        );
        assert_eq!(
            st.claim_action(&id, ActionKind::Cancel, &press("k-late", "U9"))
                .await
                .unwrap(),
            ActionClaim::Taken(press(&winner, &by)),
            "{name}"
        );
        // Other buttons are separate.
        assert_eq!(
            st.claim_action(&id, ActionKind::Play, &press("k-play", "U9"))
                .await
                .unwrap(),
            ActionClaim::Claimed { again: false },
            "{name}"
        );

        // Neither the presses nor the card's place are undone by a save of an older view.
        let card = CardRef {
            channel: ChannelId::new("C1"),
            ts: Some(MessageTs::new("1700000000.000100")),
            answer: true,
        };
        st.set_card(&id, &card).await.unwrap();
        rec.due_at = 2_000;
        let saved = st.save_run(&rec).await.unwrap();
        let read = st.get_run(&id).await.unwrap().unwrap();
        for r in [&saved, &read] {
            assert_eq!(r.card.as_ref(), Some(&card), "{name}");
            assert_eq!(r.actions.cancel, Some(press(&winner, &by)), "{name}");
            assert_eq!(
                r.actions.play.as_ref().map(|p| p.key.as_str()),
                Some("k-play")
            );
        }

        // Only the press's own key releases it; then someone else may press.
        st.release_action(&id, ActionKind::Cancel, "k-late")
            .await
            .unwrap();
        assert!(st
            .get_run(&id)
            .await
            .unwrap()
            .unwrap()
            .actions
            .cancel
            .is_some());
        st.release_action(&id, ActionKind::Cancel, &winner)
            .await
            .unwrap();
        assert_eq!(st.get_run(&id).await.unwrap().unwrap().actions.cancel, None);
        assert_eq!(
            st.claim_action(&id, ActionKind::Cancel, &press("k-late", "U9"))
                .await
                .unwrap(),
            ActionClaim::Claimed { again: false },
            "{name}"
        );
    }
}

/// The reply and the card's last state take their two `response_url` uses together or not at
/// all: never more than five.
#[tokio::test]
async fn the_reply_takes_the_cards_use_with_its_own_or_neither() {
    let st = store().await;
    for (used, want, after) in [(3, true, 5), (4, false, 4)] {
        let req = request(&format!("r-two-{used}"));
        let DispatchClaim::Claimed(rec) = st.claim_dispatch(&req, 1_000, 60).await.unwrap() else {
            panic!()
        };
        let mut rec = *rec;
        rec.status = RunStatus::Running;
        st.save_run(&rec).await.unwrap();
        // The claim counted the first (the card's).
        for _ in 1..used {
            st.take_response_url_use(&req.request_id, 5).await.unwrap();
        }
        assert_eq!(
            st.begin_reply(&req.request_id, 2_000, 120, Some(5), 2)
                .await
                .unwrap(),
            ReplyClaim::Claimed { response_url: want },
            "{used} used"
        );
        let stored = st.get_run(&req.request_id).await.unwrap().unwrap();
        assert_eq!(stored.response_url_uses, after, "{used} used");
    }
}
