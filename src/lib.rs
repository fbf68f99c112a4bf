//! The `chatops` command line, as a library so the end-to-end tests drive the same code:
//!
//! - `cli`: the clap parser and the dispatch to each subcommand;
//! - `audit_cli`: `chatops audit` (reads the audit log, filters, table or JSON lines);
//! - `users`: `chatops users link|unlink|list` (the use case is `chatops_core::users`);
//! - `setup`: `chatops gitlab setup` (the project webhooks and the pipeline-variables role,
//!   with the admin's own token);
//! - `check`: `chatops gitlab check` (is a project's CI configuration chat-ready?);
//! - `deploy`: `chatops deploy` (`make deploy`), the guided first deploy;
//! - `reply_cli`: `chatops reply <log>`;
//! - `local`: `chatops local`, the whole product in one process (axum + in-process workers);
//! - `demo`: `chatops demo`, local mode between the stand-ins of `chatops-sim`.
//!
//! Nothing here is linked by a function: the Lambdas depend on `chatops-core` and
//! `chatops-adapters` only.

pub mod audit_cli;
pub mod check;
pub mod cli;
pub mod demo;
pub mod deploy;
pub mod local;
pub mod reply_cli;
pub mod setup;
pub mod users;
