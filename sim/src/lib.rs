//! chatops-sim: the world around the product, for tests and the offline demo. Never a
//! dependency of a function (`tests/architecture.rs` checks `cargo tree`).
//!
//! - `gitlab`: an HTTP stand-in that follows GitLab's REST API (status codes, headers,
//!   pagination, users and permissions per user, protected branches, webhooks) and its OAuth 2
//!   provider (`gitlab/oauth.rs`: authorize, token with PKCE and refresh, revoke), with fault
//!   injection;
//! - `slack`: an HTTP stand-in for `response_url` and Slack's Web API, with its limits;
//! - `mattermost`: an HTTP stand-in for Mattermost's command `response_url`s and REST API v4
//!   (posts, patches, ephemeral posts, bearer auth), which clicks buttons as Mattermost does;
//! - `runner`: reads a project's `.gitlab-ci.yml`, decides which jobs an API pipeline holds,
//!   and runs them in bash, writing logs in the runner's format;
//! - `faults`: a fault-injecting HTTP proxy (slow, hanging, failing AWS or GitLab);
//! - `fake_gitlab`, `doubles`: in-memory doubles of core ports for fast tests.

pub mod doubles;
pub mod fake_gitlab;
pub mod faults;
pub mod gitlab;
pub mod mattermost;
pub mod runner;
pub mod slack;

pub use doubles::{ManualClock, RecordingChat};
pub use fake_gitlab::FakeGitLab;
