//! HTTP stand-ins for GitLab and Slack that follow their public APIs, for integration tests,
//! end-to-end tests and the offline demo. They bind to 127.0.0.1 on a free port.

pub mod gitlab;
pub mod runner;
pub mod slack;
