//! `DynamoStore` over moto's DynamoDB wire protocol: every conditional write the product
//! relies on, against a table created with the production schema.

mod support;

use chatops_adapters::dynamo::DynamoStore;
use chatops_core::ids::{ChatUserId, PipelineId, RequestId, TeamId};
use chatops_core::run::{RunRecord, RunRequest, RunStatus, UserLink};
use chatops_core::store::{DispatchClaim, RunStore};
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
async fn claim_reply_exactly_once_under_concurrency() {
    let st = Arc::new(store().await);
    let req = request("r-reply");
    let DispatchClaim::Claimed(rec) = st.claim_dispatch(&req, 1_000, 60).await.unwrap() else {
        panic!()
    };
    let mut rec = *rec;
    rec.status = RunStatus::Running;
    rec.pipeline_id = Some(PipelineId(5));
    st.save_run(&rec).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..10 {
        let st = st.clone();
        let id = req.request_id.clone();
        tasks.push(tokio::spawn(async move {
            st.claim_reply(&id, 2_000 + i).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    let stored = st.get_run(&req.request_id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Replied);
    assert!(stored.replied_at.is_some());
    // A later save by a slow owner must not clear the claim.
    st.save_run(&rec).await.unwrap();
    assert!(!st.claim_reply(&req.request_id, 3_000).await.unwrap());
    // Unknown runs cannot be claimed.
    assert!(!st
        .claim_reply(&RequestId::new("nope"), 3_000)
        .await
        .unwrap());
}

#[tokio::test]
async fn response_url_uses_stop_at_five_and_survive_saves() {
    let st = store().await;
    let req = request("r-uses");
    let DispatchClaim::Claimed(rec) = st.claim_dispatch(&req, 1_000, 60).await.unwrap() else {
        panic!()
    };
    let mut got = Vec::new();
    for _ in 0..7 {
        got.push(st.take_response_url_use(&req.request_id, 5).await.unwrap());
        // The owner saving its (stale) record in between must not reset the count.
        st.save_run(&rec).await.unwrap();
    }
    assert_eq!(
        got,
        vec![Some(1), Some(2), Some(3), Some(4), Some(5), None, None]
    );
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
async fn first_delivery_once_until_expiry() {
    let st = store().await;
    assert!(st.first_delivery("key-1", 1_000, 3_600).await.unwrap());
    assert!(!st.first_delivery("key-1", 1_001, 3_600).await.unwrap());
    assert!(st.first_delivery("key-2", 1_001, 3_600).await.unwrap());
    // moto never expires TTL items; the condition compares expires_at itself.
    assert!(st.first_delivery("key-1", 4_601, 3_600).await.unwrap());
}

#[tokio::test]
async fn users_link_unlink_list() {
    let st = store().await;
    let link = |team: &str, user: &str, gl: &str| UserLink {
        team_id: TeamId::new(team),
        chat_user_id: ChatUserId::new(user),
        gitlab_username: gl.into(),
        linked_at: 1_000,
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
    // Runs and deliveries in the same table are not users.
    st.claim_dispatch(&request("r-users"), 1_000, 60)
        .await
        .unwrap();
    st.first_delivery("d", 1_000, 60).await.unwrap();
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
async fn open_runs_and_find_by_pipeline_use_the_indexes() {
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
        st.save_run(&rec).await.unwrap();
        saved.push(rec);
    }
    let open = st.open_runs(1_250).await.unwrap();
    let ids: Vec<_> = open
        .iter()
        .map(|r| r.request.request_id.0.as_str())
        .collect();
    assert_eq!(ids, ["r-open-0", "r-open-1"]);

    // Replying closes a run: it leaves the open index.
    assert!(st
        .claim_reply(&RequestId::new("r-open-0"), 1_400)
        .await
        .unwrap());
    let open = st.open_runs(10_000).await.unwrap();
    let ids: Vec<_> = open
        .iter()
        .map(|r| r.request.request_id.0.as_str())
        .collect();
    assert_eq!(ids, ["r-open-1", "r-open-3"]);

    let found = st.find_by_pipeline(PipelineId(902)).await.unwrap().unwrap();
    assert_eq!(found.request.request_id.0, "r-open-2");
    assert_eq!(found.status, RunStatus::Refused);
    assert_eq!(st.find_by_pipeline(PipelineId(1)).await.unwrap(), None);
}
