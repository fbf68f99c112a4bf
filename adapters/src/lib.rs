//! chatops-adapters: the product's ports implemented against the real world, and the glue
//! the three Lambdas need. Depends on `chatops-core` only (never on `chatops-sim`).
//!
//! - `gitlab`: GitLab's REST API (reqwest + rustls; rate limits, retries, pagination), as
//!   the deployment's read token or as a person (`GitLabAs`); `oauth`: GitLab's OAuth
//!   token and revoke endpoints;
//! - `slack`, `mattermost`: posting replies (`response_url`, Web API / REST API);
//! - `dynamo`, `sqs`, `aws`: the runs table, the run queue, SSM secrets and SDK config;
//! - `audit`: the append-only audit table;
//! - `seal`: tokens at rest, sealed with AWS KMS or (local mode, tests) AES-256-GCM;
//! - `http`: reading answers with a size limit;
//! - `lambda`: Function URL, SQS batch and EventBridge event shapes;
//! - `services`: the one place that builds the services for a backend (AWS, embedded).

pub mod audit;
pub mod aws;
pub mod dynamo;
pub mod gitlab;
pub mod http;
pub mod kept;
pub mod lambda;
pub mod mattermost;
pub mod oauth;
pub mod seal;
pub mod services;
pub mod slack;
pub mod sqs;
