//! chatops core: everything the product decides, and nothing about how it talks to the world.
//!
//! No AWS SDK, no Lambda runtime, no HTTP client or server, no CLI parser: those are
//! adapters (`chatops-adapters`), wired by `chatops_adapters::services`. What is here:
//!
//! - values: `ids` (newtypes), `clock`, `secret`, `run` (request, record, status), `action`
//!   (a queued click on a card's button), `command`
//!   (the slash-command grammar), `runnable` (which jobs of a merged CI configuration chat
//!   can run), `policy` (a project's `.gitlab/chatops.yml`: per-job approvals, roles,
//!   channels, descriptions), `config` (typed configuration read from an `Env` map);
//! - ports (traits the adapters implement): `audit::AuditLog` (+ `MemoryAudit`),
//!   `gitlab::GitLab` (+ `GitLabAs`: as one person), `oauth::OAuthClient` (GitLab's token and
//!   revoke endpoints; PKCE and the callback's parsing), `store::RunStore`,
//!   `queue::RunQueue`, `chat::ChatApi`, `config::SecretSource`, `seal::Sealer` (tokens at
//!   rest, encrypted and bound to whose they are);
//! - text: `markup` (the one layer that escapes, per platform), `notice` (every sentence a
//!   person is told, typed), `card` (a run's card per state, with its buttons), `render` (job
//!   reports), `reply` (reply extraction from job logs);
//! - platform payloads: `slack` (signature check, slash payload), `mattermost` (payload, token);
//! - use cases: `identity` (connect links, the OAuth callback, each person's token refreshed
//!   one at a time, unlink), `interaction` (card clicks: intake and handling as the clicker),
//!   `approval` (four-eyes runs: asked for, decided once from the card, expired by the sweep),
//!   `card_delivery` (a card updated in place), `ingress` (verify, answer, queue; `status` and
//!   `history` from the run store),
//!   `dispatcher` (one request → one pipeline; `help`'s job list), `help`, `status`,
//!   `completion` (webhook and sweep → one reply), `finish` (one reply for a run whose job
//!   ended), `delivery` (response_url or channel), `users` (admin links, bot mode).
//!
//! Modules depend "downwards" only (values ← ports ← text ← use cases); `tests/architecture.rs`
//! checks there is no cycle.

pub mod action;
pub mod clock;
pub mod config;
pub mod ids;
pub mod run;
pub mod secret;
pub mod web;

pub mod command;
pub mod policy;
pub mod runnable;

pub mod audit;
pub mod chat;
pub mod gitlab;
pub mod oauth;
pub mod queue;
pub mod seal;
pub mod store;

pub mod card;
pub mod markup;
pub mod notice;
pub mod render;
pub mod reply;
pub mod report;

pub mod mattermost;
pub mod slack;

pub mod approval;
pub mod card_delivery;
pub mod completion;
pub mod delivery;
pub mod dispatcher;
pub mod finish;
pub mod help;
pub mod identity;
pub mod ingress;
pub mod interaction;
pub mod status;
pub mod users;
