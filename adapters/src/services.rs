//! The one place that builds the product's services for a backend: the three Lambda mains,
//! local mode and the tests all come through here, so the wiring exists once.
//!
//! - `Backend::Aws`: SQS for the run queue, DynamoDB for the runs table (their endpoints
//!   follow the SDK configuration, so moto in tests);
//! - `Backend::Embedded`: the in-memory queue and store of `chatops_core` (local mode).
//!
//! The audit log follows each function's `AUDIT_TABLE`: a DynamoDB table, else log lines
//! only; the embedded backend keeps it in memory (`MemoryAudit`), like its runs.
//!
//! GitLab is always the REST client and chat always Slack's and Mattermost's HTTP APIs; their
//! base URLs come from the configuration, which is how tests point them at the stand-ins.
//! With a GitLab OAuth application configured, the ingress and the dispatcher also get the
//! `Identity` (people's tokens, sealed with KMS on AWS or a local key in local mode).

use crate::audit::DynamoAudit;
use crate::dynamo::DynamoStore;
use crate::gitlab::GitLabClient;
use crate::mattermost::MattermostApi;
use crate::oauth::GitLabOAuth;
use crate::seal::{KeepOpened, KmsSealer, LocalSealer};
use crate::slack::SlackApi;
use crate::sqs::SqsQueue;
use chatops_core::audit::{Audit, AuditLog, AuditSettings, LogOnly, MemoryAudit};
use chatops_core::clock::{Clock, SystemClock};
use chatops_core::completion::{Completion, CompletionConfig};
use chatops_core::delivery::{ChatSettings, Deliverer};
use chatops_core::dispatcher::{Dispatcher, DispatcherConfig};
use chatops_core::gitlab::{GitLab, GitLabError};
use chatops_core::identity::Identity;
use chatops_core::ingress::{Ingress, IngressConfig};
use chatops_core::oauth::{OAuthError, OAuthSettings, TokenKey};
use chatops_core::queue::{MemoryQueue, RunQueue};
use chatops_core::seal::Sealer;
use chatops_core::secret::Secret;
use chatops_core::store::{MemoryStore, RunStore};
use std::sync::Arc;

/// Where runs are queued and recorded.
#[derive(Debug, Clone)]
pub enum Backend {
    /// SQS + DynamoDB.
    Aws { queue_url: String, table: String },
    /// In memory, in this process: nothing survives a restart.
    Embedded,
}

/// Where the dispatcher's messages wait: what a worker loop reads from.
#[derive(Clone)]
pub enum Inbox {
    Embedded(Arc<MemoryQueue>),
    Sqs {
        client: aws_sdk_sqs::Client,
        queue_url: String,
    },
}

/// The queue, the store and the clock of one backend, shared by every handler it serves.
#[derive(Clone)]
pub struct Services {
    pub queue: Arc<dyn RunQueue>,
    pub store: Arc<dyn RunStore>,
    pub inbox: Inbox,
    pub clock: Arc<dyn Clock>,
    /// The embedded backend's audit log, shared by its handlers (`None` on AWS, where each
    /// function's `AUDIT_TABLE` says).
    pub memory_audit: Option<Arc<MemoryAudit>>,
    /// For the AWS clients built on demand (KMS when people's tokens are sealed with it).
    sdk: aws_config::SdkConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("GITLAB_URL is not usable")]
    GitLabUrl(#[source] GitLabError),
    #[error("the GitLab OAuth client could not be built")]
    OAuth(#[source] OAuthError),
    #[error("TOKEN_KEY is not usable")]
    TokenKey(#[source] chatops_core::config::ConfigError),
}

impl Services {
    pub fn new(backend: &Backend, sdk: &aws_config::SdkConfig) -> Self {
        match backend {
            Backend::Aws { queue_url, table } => Self {
                queue: Arc::new(SqsQueue::from_sdk_config(sdk, queue_url.clone())),
                store: Arc::new(store(sdk, table)),
                inbox: Inbox::Sqs {
                    client: aws_sdk_sqs::Client::new(sdk),
                    queue_url: queue_url.clone(),
                },
                clock: Arc::new(SystemClock),
                memory_audit: None,
                sdk: sdk.clone(),
            },
            Backend::Embedded => {
                let q = Arc::new(MemoryQueue::new());
                Self {
                    queue: q.clone(),
                    store: Arc::new(MemoryStore::new()),
                    inbox: Inbox::Embedded(q),
                    clock: Arc::new(SystemClock),
                    memory_audit: Some(Arc::new(MemoryAudit::new())),
                    sdk: sdk.clone(),
                }
            }
        }
    }

    /// A store with no queue in front of it (the dispatcher's and completion's view).
    fn over_store(store: Arc<dyn RunStore>, sdk: &aws_config::SdkConfig) -> Self {
        let q = Arc::new(MemoryQueue::new());
        Self {
            queue: q.clone(),
            store,
            inbox: Inbox::Embedded(q),
            clock: Arc::new(SystemClock),
            memory_audit: None,
            sdk: sdk.clone(),
        }
    }

    /// The audit log a function's settings name: this backend's memory, else the DynamoDB
    /// table, else log lines only.
    pub fn audit(&self, settings: &AuditSettings) -> Audit {
        match &self.memory_audit {
            Some(m) => Audit::new(m.clone(), settings.input),
            None => audit(settings, &self.sdk),
        }
    }

    pub fn ingress(&self, config: IngressConfig) -> Result<Ingress, ServicesError> {
        let identity = config
            .oauth
            .as_ref()
            .map(|o| self.identity(o))
            .transpose()?;
        let audit = self.audit(&config.audit);
        let mut ingress = Ingress::new(config, self.queue.clone(), self.clock.clone())
            .with_store(self.store.clone())
            .with_audit(audit);
        if let Some(identity) = identity {
            ingress = ingress.with_identity(identity);
        }
        Ok(ingress)
    }

    /// People's GitLab identities: GitLab's OAuth endpoints, the REST client as a person,
    /// and the sealer the settings name.
    pub fn identity(&self, settings: &OAuthSettings) -> Result<Arc<Identity>, ServicesError> {
        let sealer: Arc<dyn Sealer> = match &settings.token_key {
            // Opened tokens are kept a few minutes per container (`KeepOpened`): a person's
            // next run here makes no KMS request.
            TokenKey::Kms(key_id) => Arc::new(KeepOpened::new(KmsSealer::new(
                crate::aws::kms(&self.sdk),
                key_id,
            ))),
            TokenKey::Local(key) => Arc::new(
                LocalSealer::from_base64_key(key.expose()).map_err(ServicesError::TokenKey)?,
            ),
        };
        let oauth = GitLabOAuth::new(
            &settings.gitlab_url,
            &settings.client_id,
            settings.client_secret.clone(),
        )
        .map_err(ServicesError::OAuth)?;
        // No deployed token: this client only ever acts with a person's token.
        let gitlab_as = GitLabClient::new(&settings.gitlab_url, Secret::default())
            .map_err(ServicesError::GitLabUrl)?
            .cache_merged_ci();
        Ok(Arc::new(Identity {
            settings: settings.clone(),
            store: self.store.clone(),
            sealer,
            oauth: Arc::new(oauth),
            gitlab_as: Arc::new(gitlab_as),
            clock: self.clock.clone(),
        }))
    }

    pub fn dispatcher(&self, config: DispatcherConfig) -> Result<Dispatcher, ServicesError> {
        let identity = config
            .oauth
            .as_ref()
            .map(|o| self.identity(o))
            .transpose()?;
        Ok(Dispatcher {
            identity,
            gitlab: gitlab(&config.gitlab_url, config.gitlab_token.clone())?,
            deliverer: self.deliverer(&config.chat),
            audit: self.audit(&config.audit),
            config,
            store: self.store.clone(),
            clock: self.clock.clone(),
        })
    }

    pub fn completion(&self, config: CompletionConfig) -> Result<Completion, ServicesError> {
        Ok(Completion {
            gitlab: gitlab(&config.gitlab_url, config.gitlab_token.clone())?,
            deliverer: self.deliverer(&config.chat),
            audit: self.audit(&config.audit),
            config,
            store: self.store.clone(),
            clock: self.clock.clone(),
        })
    }

    /// Slack's and Mattermost's HTTP APIs as `chat` says, counting `response_url` uses in
    /// this backend's store.
    pub fn deliverer(&self, chat: &ChatSettings) -> Deliverer {
        Deliverer {
            slack: Arc::new(SlackApi::new(
                &chat.slack_api_url,
                chat.slack_bot_token.clone(),
            )),
            mattermost: Arc::new(MattermostApi::new(
                chat.mattermost_url.clone(),
                chat.mattermost_bot_token.clone(),
            )),
            mattermost_buttons: chat.mattermost_buttons.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// The ingress Lambda's wiring: the SQS queue (its cold start is measured against a function
/// that only sends to SQS), and, when `RUNS_TABLE` is set, the links in DynamoDB and people's
/// identities (OAuth). Clients are built without I/O: nothing is called before a request.
pub fn aws_ingress(
    config: IngressConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<Ingress, ServicesError> {
    let queue: Arc<dyn RunQueue> =
        Arc::new(SqsQueue::from_sdk_config(sdk, config.run_queue_url.clone()));
    match config.runs_table.clone() {
        None => {
            let audit = audit(&config.audit, sdk);
            Ok(Ingress::new(config, queue, Arc::new(SystemClock)).with_audit(audit))
        }
        Some(table) => {
            let mut services = Services::over_store(Arc::new(store(sdk, &table)), sdk);
            services.queue = queue;
            services.ingress(config)
        }
    }
}

/// The dispatcher Lambda's wiring: DynamoDB, GitLab, chat.
pub fn aws_dispatcher(
    config: DispatcherConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<Dispatcher, ServicesError> {
    Services::over_store(Arc::new(store(sdk, &config.runs_table)), sdk).dispatcher(config)
}

/// The completion Lambda's wiring: DynamoDB, GitLab, chat.
pub fn aws_completion(
    config: CompletionConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<Completion, ServicesError> {
    Services::over_store(Arc::new(store(sdk, &config.runs_table)), sdk).completion(config)
}

/// The audit log `settings` name on AWS: the DynamoDB table (`AUDIT_TABLE`), else log
/// lines only. The client is built without I/O.
pub fn audit(settings: &AuditSettings, sdk: &aws_config::SdkConfig) -> Audit {
    let log: Arc<dyn AuditLog> = match &settings.table {
        Some(table) => Arc::new(DynamoAudit::new(
            crate::aws::dynamodb(sdk),
            table,
            settings.retention_days,
        )),
        None => Arc::new(LogOnly),
    };
    Audit::new(log, settings.input)
}

/// The runs table in DynamoDB.
pub fn store(sdk: &aws_config::SdkConfig, table: &str) -> DynamoStore {
    DynamoStore::new(crate::aws::dynamodb(sdk), table)
}

/// GitLab's REST API at `url` with `token`, its answers reused a minute per container (the
/// functions').
pub fn gitlab(url: &str, token: Secret) -> Result<Arc<dyn GitLab>, ServicesError> {
    Ok(Arc::new(
        GitLabClient::new(url, token)
            .map_err(ServicesError::GitLabUrl)?
            .cache_merged_ci(),
    ))
}
