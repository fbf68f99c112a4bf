//! AWS plumbing shared by every adapter: the SDK configuration (loaded once per process), the
//! timeouts and retries every AWS client gets, and SSM Parameter Store as the production
//! `SecretSource`.
//!
//! Every client is built with [`timeouts`] and [`retries`]: without them an SDK call waits
//! as long as the server lets it, and a hanging DynamoDB outlives the function's own timeout
//! (Lambda then kills it mid-run). The budget of one call (`OPERATION`, retries included)
//! fits many times into the dispatcher's 30 s, and work stops at the invocation's deadline.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use chatops_core::config::{SecretError, SecretSource};
use std::time::Duration;

/// Connecting to an AWS endpoint.
pub const CONNECT: Duration = Duration::from_millis(1000);
/// One attempt of one call.
pub const ATTEMPT: Duration = Duration::from_millis(2500);
/// One call, all its attempts included.
pub const OPERATION: Duration = Duration::from_secs(6);
/// Attempts per call (the SDK's standard mode: backoff with jitter, retryable errors only).
pub const MAX_ATTEMPTS: u32 = 3;

pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT)
        .operation_attempt_timeout(ATTEMPT)
        .operation_timeout(OPERATION)
        .build()
}

pub fn retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)
}

/// A DynamoDB client with the timeouts and retries above.
pub fn dynamodb(sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .timeout_config(timeouts())
        .retry_config(retries())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// An SSM client with the timeouts and retries above.
pub fn ssm(sdk: &aws_config::SdkConfig) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::config::Builder::from(sdk)
        .timeout_config(timeouts())
        .retry_config(retries())
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

/// A KMS client (token sealing, `seal::KmsSealer`) with the timeouts and retries above.
pub fn kms(sdk: &aws_config::SdkConfig) -> aws_sdk_kms::Client {
    let conf = aws_sdk_kms::config::Builder::from(sdk)
        .timeout_config(timeouts())
        .retry_config(retries())
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// SSM Parameter Store, `WithDecryption` on. The client is built lazily so a function whose
/// secrets are all given directly never pays for it.
pub struct SsmSecrets {
    sdk: aws_config::SdkConfig,
}

impl SsmSecrets {
    pub fn new(sdk: aws_config::SdkConfig) -> Self {
        Self { sdk }
    }
}

#[async_trait::async_trait]
impl SecretSource for SsmSecrets {
    async fn get_secure(&self, name: &str) -> Result<String, SecretError> {
        let client = ssm(&self.sdk);
        let out = client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| {
                SecretError::Unavailable(aws_sdk_ssm::error::DisplayErrorContext(e).to_string())
            })?;
        out.parameter
            .and_then(|p| p.value)
            .ok_or(SecretError::NoValue)
    }
}

/// The shared AWS SDK configuration (region, credentials, `AWS_ENDPOINT_URL`), loaded once.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
