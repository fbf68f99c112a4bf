//! Slack: request signing (`verify`), slash-command payloads (`slash`), button clicks
//! (`interaction`); the outgoing side (`response_url`, the Web API) is an adapter
//! (`chatops_adapters::slack`).

pub mod interaction;
pub mod slash;
pub mod verify;

/// Slack's Web API base, the default `SLACK_API_URL`.
pub const DEFAULT_API_URL: &str = "https://slack.com/api/";
