//! The dispatcher's flow over in-memory doubles (`chatops-sim`): fast checks of the claim,
//! retry and resume logic. The same flows over moto and the HTTP stand-ins are in
//! `tests/dispatcher.rs`.

use chatops::users::UsersCommand;
use chatops_core::clock::Clock;
use chatops_core::config::{Env, NoSecrets};
use chatops_core::delivery::{ChatSettings, Deliverer};
use chatops_core::dispatcher::*;
use chatops_core::gitlab::{AccessLevel, GitLabError};
use chatops_core::ids::{ChannelId, ChatUserId, ProjectRef, RequestId, TeamId};
use chatops_core::run::{Platform, RunRequest, RunStatus, UserLink, RUN_REQUEST_VERSION};
use chatops_core::secret::Secret;
use chatops_core::store::{MemoryStore, RunStore};
use chatops_sim::{FakeGitLab, ManualClock, RecordingChat};
use std::collections::HashMap;
use std::sync::Arc;

fn config() -> DispatcherConfig {
    DispatcherConfig {
        audit: Default::default(),
        gitlab_url: "https://gitlab.example.com".into(),
        gitlab_token: Secret::new("t"),
        oauth: None,
        project: ProjectRef::new("group/proj"),
        channel_projects: HashMap::new(),
        runs_table: "runs".into(),
        chat: ChatSettings::default(),
        first_check_secs: 300,
    }
}

fn request() -> RunRequest {
    RunRequest {
        version: RUN_REQUEST_VERSION,
        kind: chatops_core::run::RequestKind::Run,
        request_id: RequestId::new("req-1"),
        platform: Platform::Slack,
        team_id: TeamId::new("T1"),
        team_domain: None,
        channel_id: ChannelId::new("C1"),
        channel_name: "ops".into(),
        user_id: ChatUserId::new("U1"),
        user_name: "alice".into(),
        command: "/chatops".into(),
        job: "deploy".into(),
        input: "production".into(),
        response_url: "https://hooks.slack.com/commands/1".into(),
        received_at: 1_000,
        public_base: None,
    }
}

fn setup() -> (
    Dispatcher,
    Arc<FakeGitLab>,
    Arc<MemoryStore>,
    Arc<RecordingChat>,
) {
    let gl = Arc::new(FakeGitLab::new());
    let p = gl.add_project(42, "group/proj");
    let u = gl.add_user(7, "alice");
    gl.set_member(p.id, u.id, AccessLevel::DEVELOPER);
    gl.set_ci_jobs(p.id, vec![FakeGitLab::ci_job("deploy")]);
    let store = Arc::new(MemoryStore::new());
    let chat = Arc::new(RecordingChat::default());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(1_010));
    let d = Dispatcher {
        audit: Default::default(),
        identity: None,
        config: config(),
        gitlab: gl.clone(),
        store: store.clone(),
        deliverer: Deliverer {
            slack: chat.clone(),
            mattermost: chat.clone(),
            mattermost_buttons: None,
            store: store.clone(),
            clock: clock.clone(),
        },
        clock,
    };
    (d, gl, store, chat)
}

async fn link(store: &MemoryStore) {
    store
        .link_user(&UserLink {
            team_id: TeamId::new("T1"),
            chat_user_id: ChatUserId::new("U1"),
            gitlab_username: "alice".into(),
            gitlab_user_id: None,
            linked_at: 1,
            platform: None,
            grant: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn happy_path_creates_one_pipeline_and_tells_who_started_it() {
    let (d, gl, store, chat) = setup();
    link(&store).await;
    let body = serde_json::to_string(&request()).unwrap();
    d.handle_message(&body, 1).await.unwrap();
    d.handle_message(&body, 2).await.unwrap();
    let created = gl.created_pipelines();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].variable("CHATOPS_JOB"), Some("deploy"));
    let rec = store
        .get_run(&RequestId::new("req-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, RunStatus::Running);
    assert_eq!(rec.response_url_uses, 1);
    let sent = chat.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].1.text.starts_with("<@U1> started <"),
        "{}",
        sent[0].1.text
    );
}

#[tokio::test]
async fn malformed_and_unknown_versions_are_permanent() {
    let (d, ..) = setup();
    assert!(matches!(
        d.handle_message("not json", 1).await,
        Err(DispatchError::Permanent(_))
    ));
    let mut v = serde_json::to_value(request()).unwrap();
    v["version"] = 99.into();
    assert!(matches!(
        d.handle_message(&v.to_string(), 1).await,
        Err(DispatchError::Permanent(BadMessage::Version(99)))
    ));
    v["version"] = 1.into();
    v["job"] = serde_json::Value::Null;
    assert!(matches!(
        d.handle_message(&v.to_string(), 1).await,
        Err(DispatchError::Permanent(_))
    ));
}

#[tokio::test]
async fn retryable_then_told_at_max_attempts() {
    let (d, gl, store, chat) = setup();
    link(&store).await;
    gl.fail_next(Some("project"), GitLabError::Retryable("503".into()), 100);
    let body = serde_json::to_string(&request()).unwrap();
    for n in 1..MAX_ATTEMPTS {
        assert!(matches!(
            d.handle_message(&body, n).await,
            Err(DispatchError::Retryable(_))
        ));
    }
    assert!(chat.sent.lock().unwrap().is_empty());
    d.handle_message(&body, MAX_ATTEMPTS).await.unwrap();
    let sent = chat.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "the reason, then the card");
    assert!(sent[0].1.text.contains("GitLab is unavailable"));
    assert!(sent[1].1.replace_original && sent[1].1.text.contains("*Not run*"));
    assert_eq!(
        store
            .get_run(&RequestId::new("req-1"))
            .await
            .unwrap()
            .unwrap()
            .status,
        RunStatus::Refused
    );
}

#[tokio::test]
async fn crash_after_creation_resumes_without_a_second_pipeline() {
    let (d, gl, store, _chat) = setup();
    link(&store).await;
    gl.fail_next(
        Some("pipeline_jobs"),
        GitLabError::Retryable("timeout".into()),
        1,
    );
    let body = serde_json::to_string(&request()).unwrap();
    assert!(d.handle_message(&body, 1).await.is_err());
    d.handle_message(&body, 2).await.unwrap();
    assert_eq!(gl.created_pipelines().len(), 1);
    assert_eq!(
        store
            .get_run(&RequestId::new("req-1"))
            .await
            .unwrap()
            .unwrap()
            .status,
        RunStatus::Running
    );
}

#[test]
fn channel_projects_parse() {
    let m = parse_channel_projects("C123=group/proj, C456=42").unwrap();
    assert_eq!(m["C123"], ProjectRef::new("group/proj"));
    assert_eq!(m["C456"], ProjectRef::new("42"));
    assert!(parse_channel_projects("C1").is_err());
    assert!(parse_channel_projects("").unwrap().is_empty());
}

#[tokio::test]
async fn config_names_missing_variables() {
    let env = Env::from_pairs([("GITLAB_TOKEN", "t"), ("RUNS_TABLE", "r")]);
    let e = DispatcherConfig::from_env(&env, &NoSecrets)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("GITLAB_PROJECT"));
    let env = Env::from_pairs([
        ("GITLAB_TOKEN", "t"),
        ("RUNS_TABLE", "r"),
        ("GITLAB_PROJECT", "g/p"),
        ("CHANNEL_PROJECTS", "C9=other/proj"),
    ]);
    let c = DispatcherConfig::from_env(&env, &NoSecrets).await.unwrap();
    assert_eq!(c.gitlab_url, "https://gitlab.com");
    assert_eq!(c.project_for(&ChannelId::new("C9")).0, "other/proj");
    assert_eq!(c.project_for(&ChannelId::new("C1")).0, "g/p");
}

#[tokio::test]
async fn users_cli_links_checks_and_lists() {
    let store = MemoryStore::new();
    let gl = FakeGitLab::new();
    gl.add_user(1, "Alice");
    let mut out = Vec::new();
    let link = UsersCommand::Link {
        chat_user: "T1/U1".into(),
        gitlab_username: "@alice".into(),
    };
    assert_eq!(
        chatops::users::run(&link, &store, Some(&gl), 5, &mut out)
            .await
            .unwrap(),
        0
    );
    let bad = UsersCommand::Link {
        chat_user: "T1/U2".into(),
        gitlab_username: "nobody".into(),
    };
    assert_eq!(
        chatops::users::run(&bad, &store, Some(&gl), 5, &mut out)
            .await
            .unwrap(),
        1
    );
    assert!(chatops::users::run(
        &UsersCommand::Unlink {
            chat_user: "T1".into()
        },
        &store,
        None,
        5,
        &mut out
    )
    .await
    .is_err());
    chatops::users::run(&UsersCommand::List, &store, None, 5, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("T1/U1\tAlice"), "{text}");
    assert!(!text.contains("T1/U2\t"), "{text}");
}
