//! Slack: request signing (`verify`), slash-command payloads (`slash`), and the outgoing
//! side, `response_url` and the Web API (`api`).

pub mod api;
pub mod slash;
pub mod verify;
