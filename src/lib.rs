//! chatops: GitLab ChatOps as a serverless Slack and Mattermost bridge.
//!
//! The library owns the whole domain; the three Lambda binaries in `functions/` and the
//! `chatops` CLI only wire configuration, clients and these handlers together.
//!
//! Flow: `ingress` (verify + acknowledge + queue) → `dispatcher` (access, job lookup,
//! pipeline) → `completion` (webhook or sweep → log → reply → channel).

pub mod clock;
pub mod config;
pub mod ids;
pub mod secret;
pub mod web;

pub mod command;
pub mod run;

pub mod chat;
pub mod gitlab;
pub mod mattermost;
pub mod queue;
pub mod slack;
pub mod store;

pub mod delivery;
pub mod render;
pub mod reply;

pub mod completion;
pub mod dispatcher;
pub mod ingress;

pub mod cli;
pub mod local;
pub mod standin;
