//! AWS plumbing shared by every adapter: the SDK configuration (loaded once per process) and
//! SSM Parameter Store as the production `SecretSource`.

use chatops_core::config::{SecretError, SecretSource};

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
        let client = aws_sdk_ssm::Client::new(&self.sdk);
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
