//! Mattermost: slash-command payloads and token check (`incoming`), and posting replies
//! (`api`: `response_url`, and the REST API with a bot token when configured).

pub mod api;
pub mod incoming;
