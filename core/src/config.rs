//! Reading configuration once at cold start: environment variables by name, and secrets that
//! are either given directly (`NAME`, for local use) or by reference (`NAME_PARAM`, an SSM
//! parameter name resolved once, for production). The direct value wins when both are set.
//!
//! Each function's typed config (`IngressConfig`, `DispatcherConfig`, `CompletionConfig`)
//! lives beside its handler and lists the variables it reads in an `ENV` constant, which the
//! template-agreement test checks against `infra/template.yaml`.

use crate::secret::Secret;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing environment variable {0}")]
    Missing(String),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
    #[error("could not read secret {name} from SSM parameter {param}")]
    Ssm {
        name: String,
        param: String,
        #[source]
        source: SecretError,
    },
}

/// Why a secret reference could not be resolved. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
    #[error("the parameter has no value")]
    NoValue,
    #[error("no secret store is configured to resolve {0}")]
    NoStore(String),
}

/// A snapshot of the environment. Tests build one from pairs instead of mutating the
/// process environment.
#[derive(Debug, Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn remove(&mut self, key: &str) {
        self.0.remove(key);
    }

    /// A set, non-empty variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or_else(|| ConfigError::Missing(name.to_owned()))
    }

    pub fn or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                name: name.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Log `CONFIG_VERSION` (a template parameter bumped to roll every function onto fresh
    /// configuration, e.g. after rotating a secret), so a rotation can be confirmed in the logs.
    pub fn log_config_version(&self) {
        tracing::info!(
            config_version = self.get("CONFIG_VERSION").unwrap_or("unset"),
            "reading configuration"
        );
    }

    /// A secret: `NAME` directly, else the SSM parameter named by `NAME_PARAM`.
    pub async fn secret(
        &self,
        name: &str,
        ssm: &dyn SecretSource,
    ) -> Result<Option<Secret>, ConfigError> {
        if let Some(v) = self.get(name) {
            return Ok(Some(Secret::new(v)));
        }
        let param_var = format!("{name}_PARAM");
        match self.get(&param_var) {
            None => Ok(None),
            Some(param) => ssm
                .get_secure(param)
                .await
                .map(|v| Some(Secret::new(v)))
                .map_err(|source| ConfigError::Ssm {
                    name: name.to_owned(),
                    param: param.to_owned(),
                    source,
                }),
        }
    }

    /// A secret that must be there.
    pub async fn required_secret(
        &self,
        name: &str,
        ssm: &dyn SecretSource,
    ) -> Result<Secret, ConfigError> {
        self.secret(name, ssm)
            .await?
            .ok_or_else(|| ConfigError::Missing(format!("{name} (or {name}_PARAM)")))
    }
}

/// Where secret references are resolved: SSM Parameter Store in production.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    async fn get_secure(&self, name: &str) -> Result<String, SecretError>;
}

/// Resolves nothing: for local use where every secret is given directly.
pub struct NoSecrets;

#[async_trait::async_trait]
impl SecretSource for NoSecrets {
    async fn get_secure(&self, name: &str) -> Result<String, SecretError> {
        Err(SecretError::NoStore(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeSsm;
    #[async_trait::async_trait]
    impl SecretSource for FakeSsm {
        async fn get_secure(&self, name: &str) -> Result<String, SecretError> {
            if name == "/chatops/secret" {
                Ok("from-ssm".into())
            } else {
                Err(SecretError::Unavailable("ParameterNotFound".into()))
            }
        }
    }

    #[tokio::test]
    async fn plain_variable_wins_over_reference() {
        let env = Env::from_pairs([("S", "plain"), ("S_PARAM", "/chatops/secret")]);
        let s = env.required_secret("S", &FakeSsm).await.unwrap();
        assert_eq!(s.expose(), "plain");
    }

    #[tokio::test]
    async fn reference_is_resolved() {
        let env = Env::from_pairs([("S_PARAM", "/chatops/secret")]);
        assert_eq!(
            env.required_secret("S", &FakeSsm).await.unwrap().expose(),
            "from-ssm"
        );
    }

    #[tokio::test]
    async fn missing_secret_is_named() {
        let err = Env::default()
            .required_secret("SLACK_SIGNING_SECRET", &FakeSsm)
            .await;
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("SLACK_SIGNING_SECRET"));
    }

    #[tokio::test]
    async fn bad_reference_is_named_without_value() {
        let env = Env::from_pairs([("S_PARAM", "/nope")]);
        let msg = env
            .required_secret("S", &FakeSsm)
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("S") && msg.contains("/nope"));
    }
}
