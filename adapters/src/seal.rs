//! The `Sealer` port against the world: AWS KMS for the Lambdas (`KmsSealer`) and AES-256-GCM
//! with a local key for local mode and tests (`LocalSealer`). Both bind a sealed value to its
//! `SealContext` (platform, team, user), so it opens only for the person it was sealed for.
//!
//! Stored bytes start with a one-byte format tag, `k` (KMS) or `l` (local): a value of one
//! format handed to the other sealer is refused as `Invalid` without a call, instead of being
//! sent to KMS as a ciphertext or read as a nonce.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use chatops_core::config::ConfigError;
use chatops_core::seal::{SealContext, SealError, Sealer};
use chatops_core::secret::Secret;
use std::collections::HashMap;
use std::fmt;

/// The first byte of a value sealed by [`KmsSealer`].
pub const KMS_TAG: u8 = b'k';
/// The first byte of a value sealed by [`LocalSealer`].
pub const LOCAL_TAG: u8 = b'l';
/// The variable holding the local sealer's key (base64 of 32 bytes).
pub const TOKEN_KEY: &str = "TOKEN_KEY";
/// KMS `Encrypt` takes 1 to 4096 bytes of plaintext.
pub const KMS_MAX_PLAINTEXT: usize = 4096;

// ------------------------------------------------------------------------------------ KMS

/// Seals with AWS KMS `Encrypt` under one key, the three context pairs as its
/// `EncryptionContext`. KMS authenticates the context: `Decrypt` with another context fails,
/// and the key policy can require the keys to be present (infra/template.yaml). `Decrypt`
/// names the key too, so a ciphertext made under another key is refused (even one this role
/// may use) rather than opened.
pub struct KmsSealer {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsSealer {
    /// `key_id`: the key's ARN (`TOKEN_KEY_ID`); an alias ARN also works for `Encrypt`, but
    /// `Decrypt` compares it with the key the ciphertext names, so give the key ARN.
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn context(ctx: &SealContext) -> HashMap<String, String> {
        ctx.pairs()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
}

impl fmt::Debug for KmsSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsSealer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Which way a failed KMS call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The ciphertext, its context or its key is wrong: it will never open.
    Invalid,
    /// Refused by a policy (IAM, the key policy's context conditions).
    Denied,
    /// The key is missing, disabled, pending deletion or not for encryption.
    Key,
    /// Throttling, timeouts, 5xx, the network: may work later.
    Unavailable,
}

/// Classifies by KMS's error code, which both operations share (a modelled variant of
/// `EncryptError`/`DecryptError` or not: `AccessDeniedException` and `ThrottlingException`
/// are not modelled). Unknown codes and every non-service failure count as unavailable: the
/// caller retries rather than throwing a person's token away.
fn classify<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Failure {
    let SdkError::ServiceError(service) = e else {
        return Failure::Unavailable;
    };
    match service.err().code() {
        Some("InvalidCiphertextException" | "IncorrectKeyException") => Failure::Invalid,
        Some("AccessDeniedException") => Failure::Denied,
        Some(
            "NotFoundException"
            | "DisabledException"
            | "KMSInvalidStateException"
            | "InvalidKeyUsageException"
            | "InvalidGrantTokenException"
            | "DryRunOperationException",
        ) => Failure::Key,
        // KMS says `ValidationException` for a plaintext out of range; `seal` checks the
        // length first, so here it means a request we built wrong: not retryable.
        Some("ValidationException") => Failure::Invalid,
        _ => Failure::Unavailable,
    }
}

fn unavailable<E, R>(e: SdkError<E, R>) -> SealError
where
    E: std::error::Error + 'static,
    R: fmt::Debug,
{
    // The SDK's text with its causes; KMS never echoes the plaintext in an error.
    SealError::Unavailable(DisplayErrorContext(e).to_string().into())
}

fn key_problem<E, R>(key_id: &str, e: &SdkError<E, R>) -> SealError
where
    E: ProvideErrorMetadata,
{
    let (code, message) = match e {
        SdkError::ServiceError(s) => (
            s.err().code().unwrap_or("unknown"),
            s.err().message().unwrap_or(""),
        ),
        _ => ("unknown", ""),
    };
    SealError::NotConfigured(format!(
        "KMS key {key_id} (TOKEN_KEY_ID) cannot be used: {code} {message}"
    ))
}

#[async_trait::async_trait]
impl Sealer for KmsSealer {
    async fn seal(&self, plaintext: &Secret, ctx: &SealContext) -> Result<Vec<u8>, SealError> {
        let bytes = plaintext.expose().as_bytes();
        if bytes.is_empty() || bytes.len() > KMS_MAX_PLAINTEXT {
            // KMS would refuse it with a ValidationException; nothing to retry.
            return Err(SealError::Invalid);
        }
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(bytes))
            .set_encryption_context(Some(Self::context(ctx)))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                return Err(match classify(&e) {
                    // Sealing a fresh value cannot be "invalid" unless the request is: a
                    // refusal here means the role may not use the key.
                    Failure::Denied | Failure::Key => key_problem(&self.key_id, &e),
                    Failure::Invalid => SealError::Invalid,
                    Failure::Unavailable => unavailable(e),
                });
            }
        };
        let blob = out.ciphertext_blob.ok_or_else(|| {
            SealError::Unavailable("KMS Encrypt answered without a CiphertextBlob".into())
        })?;
        let blob = blob.into_inner();
        let mut sealed = Vec::with_capacity(1 + blob.len());
        sealed.push(KMS_TAG);
        sealed.extend_from_slice(&blob);
        Ok(sealed)
    }

    async fn open(&self, sealed: &[u8], ctx: &SealContext) -> Result<Secret, SealError> {
        let ciphertext = match sealed.split_first() {
            Some((&KMS_TAG, rest)) if !rest.is_empty() => rest,
            _ => return Err(SealError::Invalid),
        };
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(Self::context(ctx)))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                return Err(match classify(&e) {
                    Failure::Invalid => SealError::Invalid,
                    // A refusal on Decrypt is about this ciphertext (a key this role may not
                    // use, a context the key policy refuses; moto answers a KeyId mismatch so
                    // too): it will not open. Logged with its code, because a role that lost
                    // kms:Decrypt looks the same from here.
                    Failure::Denied => {
                        tracing::warn!(
                            key_id = %self.key_id,
                            error = %DisplayErrorContext(&e),
                            "KMS refused to decrypt a sealed token (AccessDenied): treated as invalid"
                        );
                        SealError::Invalid
                    }
                    Failure::Key => key_problem(&self.key_id, &e),
                    Failure::Unavailable => unavailable(e),
                });
            }
        };
        let plaintext = out.plaintext.ok_or_else(|| {
            SealError::Unavailable("KMS Decrypt answered without a Plaintext".into())
        })?;
        // We sealed a UTF-8 string; anything else was not sealed by us.
        String::from_utf8(plaintext.into_inner())
            .map(Secret::new)
            .map_err(|_| SealError::Invalid)
    }
}

// ---------------------------------------------------------------------------------- local

/// AES-256-GCM with a key from `TOKEN_KEY`, for local mode and tests: `l` ‖ 96-bit random
/// nonce ‖ ciphertext ‖ 128-bit tag, the context's canonical encoding (`SealContext::aad`) as
/// the additional authenticated data. A random nonce per seal is safe for far more seals than
/// one local key will ever make (the bound is about 2^32).
pub struct LocalSealer {
    key: LessSafeKey,
}

/// Bytes of an AES-256 key.
const KEY_LEN: usize = 32;
/// Bytes of the GCM tag.
const TAG_LEN: usize = 16;

impl LocalSealer {
    fn from_key_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| invalid_key("is not a usable AES-256 key"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// The key from `TOKEN_KEY`: 32 bytes in standard base64 (`openssl rand -base64 32`).
    /// The error says what is wrong, never what the value was.
    pub fn from_base64_key(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid_key("is empty"));
        }
        // The decoder's own message names the offending character: not echoed.
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| {
                invalid_key(
                    "is not standard base64 (A-Z a-z 0-9 + / with = padding); \
                     generate a key with `openssl rand -base64 32`",
                )
            })?;
        if bytes.len() != KEY_LEN {
            return Err(invalid_key(&format!(
                "decodes to {} bytes; an AES-256 key is {KEY_LEN} bytes \
                 (generate one with `openssl rand -base64 32`)",
                bytes.len()
            )));
        }
        Self::from_key_bytes(&bytes)
    }

    /// A fresh random key and its base64 form (for `TOKEN_KEY`), for the demo and tests.
    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; KEY_LEN];
        // AWS-LC's generator does not fail short of a broken system; there is no input to
        // blame and nothing to fall back on.
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random generator failed");
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let sealer = Self::from_key_bytes(&bytes).expect("32 random bytes are an AES-256 key");
        (sealer, encoded)
    }
}

fn invalid_key(reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name: TOKEN_KEY.to_owned(),
        reason: reason.to_owned(),
    }
}

impl fmt::Debug for LocalSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalSealer(AES-256-GCM, key ***)")
    }
}

#[async_trait::async_trait]
impl Sealer for LocalSealer {
    async fn seal(&self, plaintext: &Secret, ctx: &SealContext) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|e| SealError::Unavailable(Box::new(e)))?;
        let mut in_out = plaintext.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ctx.aad()),
                &mut in_out,
            )
            .map_err(|e| SealError::Unavailable(Box::new(e)))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(LOCAL_TAG);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    async fn open(&self, sealed: &[u8], ctx: &SealContext) -> Result<Secret, SealError> {
        let rest = match sealed.split_first() {
            Some((&LOCAL_TAG, rest)) if rest.len() >= NONCE_LEN + TAG_LEN => rest,
            _ => return Err(SealError::Invalid),
        };
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Invalid)?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(ctx.aad()), &mut in_out)
            .map_err(|_| SealError::Invalid)?;
        let plaintext = plaintext.to_vec();
        String::from_utf8(plaintext)
            .map(Secret::new)
            .map_err(|_| SealError::Invalid)
    }
}

// --------------------------------------------------------------------- kept per container

/// How long an opened secret is kept: well inside a GitLab access token's two hours.
pub const KEEP_OPENED: std::time::Duration = std::time::Duration::from_secs(300);
/// At most this many kept at once (a container serves one team's people).
const KEEP_AT_MOST: usize = 512;

/// Keeps what another sealer opened, a few minutes per container, keyed by the sealed bytes
/// and their context: a person's next run in a warm container opens their tokens without a
/// KMS `Decrypt` (one request fewer per run). Never stale: a refresh seals the new pair anew
/// (new bytes, another key), and only an `open` that succeeded is kept, for exactly the
/// bytes and context it succeeded with. What it gives up: a KMS key disabled or a key policy
/// narrowed takes effect in a warm container after [`KEEP_OPENED`] instead of at once.
pub struct KeepOpened<S> {
    inner: S,
    /// Opened secrets by (sealed bytes, context).
    kept: crate::kept::Kept<(Vec<u8>, Vec<u8>), Secret>,
}

impl<S> KeepOpened<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            kept: crate::kept::Kept::new(KEEP_OPENED, KEEP_AT_MOST),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for KeepOpened<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the kept secrets.
        f.debug_struct("KeepOpened")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<S: Sealer> Sealer for KeepOpened<S> {
    async fn seal(&self, plaintext: &Secret, ctx: &SealContext) -> Result<Vec<u8>, SealError> {
        self.inner.seal(plaintext, ctx).await
    }

    async fn open(&self, sealed: &[u8], ctx: &SealContext) -> Result<Secret, SealError> {
        let key = (sealed.to_vec(), ctx.aad());
        if let Some(secret) = self.kept.get(&key) {
            return Ok(secret);
        }
        let secret = self.inner.open(sealed, ctx).await?;
        self.kept.put(key, secret.clone());
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "glpat-oauth-0123456789abcdef";

    /// Counts the opens that reach the sealer underneath.
    #[derive(Debug)]
    struct Counting(LocalSealer, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl Sealer for Counting {
        async fn seal(&self, p: &Secret, ctx: &SealContext) -> Result<Vec<u8>, SealError> {
            self.0.seal(p, ctx).await
        }
        async fn open(&self, sealed: &[u8], ctx: &SealContext) -> Result<Secret, SealError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.open(sealed, ctx).await
        }
    }

    #[tokio::test]
    async fn an_opened_secret_is_kept_for_exactly_its_bytes_and_context() {
        let s = KeepOpened::new(Counting(sealer(), Default::default()));
        let opens = || s.inner.1.load(std::sync::atomic::Ordering::SeqCst);
        let sealed = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        for _ in 0..3 {
            assert_eq!(s.open(&sealed, &alice()).await.unwrap().expose(), TOKEN);
        }
        assert_eq!(opens(), 1, "opened once, then kept");
        // Another context or other bytes go to the sealer underneath, which refuses them.
        let bob = SealContext::new("slack", "T1", "U2");
        assert!(is_invalid(s.open(&sealed, &bob).await));
        let mut tampered = sealed.clone();
        tampered[5] ^= 1;
        assert!(is_invalid(s.open(&tampered, &alice()).await));
        assert_eq!(opens(), 3);
        // A refused open is not kept: asked again, refused again.
        assert!(is_invalid(s.open(&sealed, &bob).await));
        assert_eq!(opens(), 4);
        // A new seal (a refreshed token) is other bytes: opened by the sealer underneath.
        let resealed = s.seal(&Secret::new("glpat-new"), &alice()).await.unwrap();
        assert_eq!(
            s.open(&resealed, &alice()).await.unwrap().expose(),
            "glpat-new"
        );
        assert_eq!(opens(), 5);
        assert!(!format!("{s:?}").contains(TOKEN));
    }

    fn alice() -> SealContext {
        SealContext::new("slack", "T1", "U1")
    }

    fn sealer() -> LocalSealer {
        LocalSealer::generate().0
    }

    fn is_invalid<T: fmt::Debug>(r: Result<T, SealError>) -> bool {
        matches!(r, Err(SealError::Invalid))
    }

    #[tokio::test]
    async fn round_trip() {
        let s = sealer();
        let sealed = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        assert_eq!(sealed[0], LOCAL_TAG);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + TOKEN.len() + TAG_LEN);
        let opened = s.open(&sealed, &alice()).await.unwrap();
        assert_eq!(opened.expose(), TOKEN);
    }

    #[tokio::test]
    async fn every_seal_uses_a_new_nonce() {
        let s = sealer();
        let a = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        let b = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        assert_ne!(a, b);
        assert_ne!(a[1..1 + NONCE_LEN], b[1..1 + NONCE_LEN]);
    }

    #[tokio::test]
    async fn another_context_does_not_open_it() {
        let s = sealer();
        let sealed = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        for other in [
            SealContext::new("slack", "T1", "U2"),
            SealContext::new("slack", "T2", "U1"),
            SealContext::new("mattermost", "T1", "U1"),
            // The same characters split differently: the encoding is length-prefixed.
            SealContext::new("slack", "T1U", "1"),
        ] {
            assert!(is_invalid(s.open(&sealed, &other).await), "{other:?}");
        }
    }

    #[tokio::test]
    async fn any_tampered_byte_is_refused() {
        let s = sealer();
        let sealed = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(is_invalid(s.open(&t, &alice()).await), "byte {i}");
        }
        for len in [
            0,
            1,
            1 + NONCE_LEN,
            1 + NONCE_LEN + TAG_LEN - 1,
            sealed.len() - 1,
        ] {
            assert!(
                is_invalid(s.open(&sealed[..len], &alice()).await),
                "truncated to {len}"
            );
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(is_invalid(s.open(&longer, &alice()).await));
    }

    #[tokio::test]
    async fn another_key_does_not_open_it() {
        let sealed = sealer().seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        assert!(is_invalid(sealer().open(&sealed, &alice()).await));
    }

    #[tokio::test]
    async fn the_sealed_bytes_do_not_contain_the_plaintext() {
        let sealed = sealer().seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        assert!(!sealed.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
        // Nor any 8-byte piece of it.
        for piece in TOKEN.as_bytes().windows(8) {
            assert!(!sealed.windows(8).any(|w| w == piece));
        }
    }

    #[tokio::test]
    async fn a_kms_value_is_not_opened_as_a_local_one() {
        let s = sealer();
        let mut sealed = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        sealed[0] = KMS_TAG;
        assert!(is_invalid(s.open(&sealed, &alice()).await));
    }

    #[tokio::test]
    async fn the_empty_secret_round_trips() {
        let s = sealer();
        let sealed = s.seal(&Secret::new(""), &alice()).await.unwrap();
        assert_eq!(s.open(&sealed, &alice()).await.unwrap().expose(), "");
    }

    #[tokio::test]
    async fn a_key_from_base64_opens_what_the_generated_one_sealed() {
        let (a, key) = LocalSealer::generate();
        let b = LocalSealer::from_base64_key(&format!(" {key}\n")).unwrap();
        let sealed = a.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
        assert_eq!(b.open(&sealed, &alice()).await.unwrap().expose(), TOKEN);
        assert!(!format!("{a:?}").contains(&key));
    }

    #[test]
    fn key_parsing_errors_name_the_variable_and_never_the_key() {
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let long = base64::engine::general_purpose::STANDARD.encode([7u8; 33]);
        let cases = [
            ("", "is empty"),
            ("   ", "is empty"),
            ("not*base64-at-all", "is not standard base64"),
            // URL-safe alphabet is not the standard one.
            (
                "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8=",
                "is not standard base64",
            ),
            (short.as_str(), "decodes to 16 bytes"),
            (long.as_str(), "decodes to 33 bytes"),
        ];
        for (input, want) in cases {
            let e = LocalSealer::from_base64_key(input).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("TOKEN_KEY"), "{text}");
            assert!(text.contains(want), "{input:?}: {text}");
            if !input.trim().is_empty() {
                assert!(!text.contains(input.trim()), "echoes the key: {text}");
            }
            assert!(matches!(e, ConfigError::Invalid { .. }));
        }
    }

    #[test]
    fn kms_errors_are_classified_by_code() {
        use aws_sdk_kms::error::ErrorMetadata;
        use aws_sdk_kms::operation::decrypt::DecryptError;
        // The raw response plays no part in the classification.
        let service = |code: &str| -> SdkError<DecryptError, ()> {
            let err = DecryptError::generic(ErrorMetadata::builder().code(code).build());
            SdkError::service_error(err, ())
        };
        for (code, want) in [
            ("InvalidCiphertextException", Failure::Invalid),
            ("IncorrectKeyException", Failure::Invalid),
            ("AccessDeniedException", Failure::Denied),
            ("NotFoundException", Failure::Key),
            ("DisabledException", Failure::Key),
            ("KMSInvalidStateException", Failure::Key),
            ("ThrottlingException", Failure::Unavailable),
            ("KMSInternalException", Failure::Unavailable),
            ("KeyUnavailableException", Failure::Unavailable),
            ("DependencyTimeoutException", Failure::Unavailable),
            ("SomethingNew", Failure::Unavailable),
        ] {
            assert_eq!(classify(&service(code)), want, "{code}");
        }
        let timeout: SdkError<DecryptError, ()> = SdkError::timeout_error("slow");
        assert_eq!(classify(&timeout), Failure::Unavailable);
    }
}
