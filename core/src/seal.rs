//! Tokens at rest: the port that seals and opens secrets with authenticated encryption, bound
//! to whose they are (the context). A person's GitLab OAuth token is stored only sealed; a
//! sealed value opens only with the same key and the same platform, team and user, so a row
//! copied onto another person (or another workspace) is refused instead of acting as them.
//!
//! The adapters are `chatops_adapters::seal::{KmsSealer, LocalSealer}` (AWS KMS in the
//! Lambdas, AES-256-GCM with a local key in local mode and tests). No test double lives here:
//! the compiler keeps doubles out of the functions only when they are in `chatops-sim`.

use crate::secret::Secret;

/// Whose secret a sealed value is. Its three pairs are KMS's encryption context and, encoded
/// by [`SealContext::aad`], the local sealer's additional authenticated data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SealContext {
    pub platform: String,
    pub team: String,
    pub user: String,
}

/// Tags the AAD encoding, so a future encoding can never collide with this one.
const AAD_VERSION: &[u8] = b"chatops-seal-context-v1";

impl SealContext {
    pub fn new(platform: &str, team: &str, user: &str) -> Self {
        Self {
            platform: platform.to_owned(),
            team: team.to_owned(),
            user: user.to_owned(),
        }
    }

    /// The context as name/value pairs, in a fixed order (KMS's `EncryptionContext`).
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            ("platform", self.platform.as_str()),
            ("team", self.team.as_str()),
            ("user", self.user.as_str()),
        ]
    }

    /// A canonical, unambiguous byte encoding of the context: a version tag, then each name
    /// and value prefixed with its length (u32, big endian). Plain concatenation would let
    /// `team "T1", user "2U"` and `team "T12", user "U"` authenticate as each other.
    pub fn aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            4 + AAD_VERSION.len()
                + self
                    .pairs()
                    .iter()
                    .map(|(k, v)| 8 + k.len() + v.len())
                    .sum::<usize>(),
        );
        push_field(&mut out, AAD_VERSION);
        for (name, value) in self.pairs() {
            push_field(&mut out, name.as_bytes());
            push_field(&mut out, value.as_bytes());
        }
        out
    }
}

fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Chat ids are a few dozen bytes; a field over 4 GiB cannot reach here (it would not fit
    // in a request), and saturating keeps the encoding total rather than panicking.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Why a secret could not be sealed or opened. Never carries the plaintext: `Secret` prints
/// as `***`, and the sources are the key service's own errors, which never echo it.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Throttling, timeouts, 5xx: try again later; the sealed value may be fine.
    #[error("the key service is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Wrong key, wrong context, tampered or truncated bytes, or another format: the value
    /// will never open here (the person must link again). Also a plaintext the key service
    /// cannot take (KMS seals 1 to 4096 bytes): retrying would not help either.
    #[error("the sealed value does not open with this key and context")]
    Invalid,
    /// No key, a missing or disabled key, a role that may not use it: an operator's fix.
    #[error("token sealing is not configured: {0}")]
    NotConfigured(String),
}

/// Seals and opens secrets bound to a [`SealContext`].
#[async_trait::async_trait]
pub trait Sealer: Send + Sync {
    /// The sealed bytes (opaque; they start with a format tag of the adapter).
    async fn seal(&self, plaintext: &Secret, ctx: &SealContext) -> Result<Vec<u8>, SealError>;
    /// The secret, only when `sealed` was made by this key for exactly this context.
    async fn open(&self, sealed: &[u8], ctx: &SealContext) -> Result<Secret, SealError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_name_the_three_parts_in_order() {
        let c = SealContext::new("slack", "T1", "U1");
        assert_eq!(
            c.pairs(),
            [("platform", "slack"), ("team", "T1"), ("user", "U1")]
        );
    }

    #[test]
    fn aad_is_unambiguous() {
        let a = SealContext::new("slack", "T1", "2U").aad();
        let b = SealContext::new("slack", "T12", "U").aad();
        let c = SealContext::new("slackT1", "", "2U").aad();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
        assert_eq!(a, SealContext::new("slack", "T1", "2U").aad(), "canonical");
    }

    #[test]
    fn aad_encoding_is_stable() {
        // Stored values depend on it: changing it makes every sealed token unreadable.
        let aad = SealContext::new("p", "t", "u").aad();
        let mut want = Vec::new();
        want.extend_from_slice(&23u32.to_be_bytes());
        want.extend_from_slice(b"chatops-seal-context-v1");
        for part in [&b"platform"[..], b"p", b"team", b"t", b"user", b"u"] {
            want.extend_from_slice(&(part.len() as u32).to_be_bytes());
            want.extend_from_slice(part);
        }
        assert_eq!(aad, want);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            SealError::NotConfigured("TOKEN_KEY_ID is not set".into()).to_string(),
            "token sealing is not configured: TOKEN_KEY_ID is not set"
        );
        let e = SealError::Unavailable("throttled".into());
        assert_eq!(e.to_string(), "the key service is unavailable");
        assert_eq!(
            crate::report::chain(&e),
            "the key service is unavailable: throttled"
        );
    }
}
