//! Mattermost: slash-command payloads and token check (`incoming`), posting replies is an
//! adapter (`chatops_adapters::mattermost`).

pub mod incoming;
