//! Mattermost: slash-command payloads and token check (`incoming`), the buttons on a run's
//! card and the clicks on them (`actions`: signed contexts; `intake`: the ingress half);
//! posting replies is an adapter (`chatops_adapters::mattermost`).

pub mod actions;
pub mod incoming;
pub mod intake;
