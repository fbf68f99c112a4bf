//! `KmsSealer` over the KMS wire protocol, against moto: a token sealed for one person opens
//! for that person only, under that key only, and the two sealed formats (KMS, local) are
//! never taken for each other.
//!
//! What moto 5.2 does with the encryption context (moto/kms/utils.py, `encrypt`/`decrypt`):
//! it is the additional authenticated data of moto's own AES-256-GCM, serialised as the
//! sorted keys and values concatenated with no lengths (not KMS's format, and ambiguous:
//! `team "Tuser", user "X"` and `team "T", user "userX"` give the same bytes; real KMS is not
//! ambiguous, and `LocalSealer` length-prefixes). Decrypting with another context fails the
//! GCM tag check → `InvalidCiphertextException`, as in KMS. A `KeyId` on Decrypt that is not
//! the ciphertext's key gives `AccessDeniedException` in moto (KMS: `IncorrectKeyException`);
//! both map to `SealError::Invalid`. Key policies are stored but not enforced (moto checks
//! only a `*`-principal DescribeKey), so the template's `kms:EncryptionContextKeys`
//! condition is checked by tests/template.rs, not here. Empty plaintext: ValidationException
//! (KmsSealer refuses it before calling).

mod support;

use chatops_adapters::seal::{KmsSealer, LocalSealer, KMS_TAG, LOCAL_TAG};
use chatops_core::seal::{SealContext, SealError, Sealer};
use chatops_core::secret::Secret;

const TOKEN: &str = "gloas-0123456789abcdef0123456789abcdef0123456789abcdef01234567";

fn alice() -> SealContext {
    SealContext::new("slack", "T1", "U1")
}

async fn kms() -> aws_sdk_kms::Client {
    chatops_adapters::aws::kms(&support::aws_config().await)
}

/// A fresh symmetric key; its ARN, as the template passes `TOKEN_KEY_ID`.
async fn new_key(client: &aws_sdk_kms::Client) -> String {
    let out = client
        .create_key()
        .description(support::unique_name("chatops-token-key"))
        .send()
        .await
        .expect("CreateKey in moto");
    out.key_metadata
        .and_then(|m| m.arn)
        .expect("CreateKey answers the key's ARN")
}

async fn sealer() -> KmsSealer {
    let client = kms().await;
    let key = new_key(&client).await;
    KmsSealer::new(client, key)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_sealed_token_opens_for_its_person() {
    let s = sealer().await;
    let sealed = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
    assert_eq!(sealed[0], KMS_TAG);
    assert_eq!(s.open(&sealed, &alice()).await.unwrap().expose(), TOKEN);
    // Another seal of the same token is different bytes (a fresh IV), and opens the same.
    let again = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
    assert_ne!(sealed, again);
    assert_eq!(s.open(&again, &alice()).await.unwrap().expose(), TOKEN);
}

#[tokio::test]
async fn the_sealed_bytes_do_not_contain_the_token() {
    let s = sealer().await;
    let sealed = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
    assert!(!contains(&sealed, TOKEN.as_bytes()));
    for piece in TOKEN.as_bytes().windows(8) {
        assert!(!contains(&sealed, piece), "a piece of the token shows");
    }
}

#[tokio::test]
async fn another_context_does_not_open_it() {
    let s = sealer().await;
    let sealed = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
    for other in [
        SealContext::new("slack", "T1", "U2"),
        SealContext::new("slack", "T2", "U1"),
        SealContext::new("mattermost", "T1", "U1"),
    ] {
        let r = s.open(&sealed, &other).await;
        assert!(matches!(r, Err(SealError::Invalid)), "{other:?}: {r:?}");
    }
}

#[tokio::test]
async fn another_key_does_not_open_it() {
    let client = kms().await;
    let mine = KmsSealer::new(client.clone(), new_key(&client).await);
    let other = KmsSealer::new(client.clone(), new_key(&client).await);
    let sealed = mine.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
    // Decrypt names the sealer's key, so a ciphertext of another key this role may also
    // use is refused rather than opened.
    let r = other.open(&sealed, &alice()).await;
    assert!(matches!(r, Err(SealError::Invalid)), "{r:?}");
}

#[tokio::test]
async fn tampered_or_truncated_bytes_do_not_open() {
    let s = sealer().await;
    let sealed = s.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
    let mut last = sealed.clone();
    let n = last.len() - 1;
    last[n] ^= 0x01;
    let mut middle = sealed.clone();
    middle[sealed.len() / 2 + 20] ^= 0x80;
    for (what, bytes) in [
        ("last byte flipped", last),
        ("a byte of the ciphertext flipped", middle),
        ("truncated", sealed[..sealed.len() - 4].to_vec()),
        ("the tag alone", vec![KMS_TAG]),
        ("empty", Vec::new()),
    ] {
        let r = s.open(&bytes, &alice()).await;
        assert!(matches!(r, Err(SealError::Invalid)), "{what}: {r:?}");
    }
}

#[tokio::test]
async fn the_two_formats_are_never_confused() {
    let kms = sealer().await;
    let (local, _key) = LocalSealer::generate();

    let by_local = local.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
    assert_eq!(by_local[0], LOCAL_TAG);
    let r = kms.open(&by_local, &alice()).await;
    assert!(matches!(r, Err(SealError::Invalid)), "{r:?}");

    let by_kms = kms.seal(&Secret::new(TOKEN), &alice()).await.unwrap();
    let r = local.open(&by_kms, &alice()).await;
    assert!(matches!(r, Err(SealError::Invalid)), "{r:?}");

    // Re-tagged, a KMS ciphertext is still not a local one (and the reverse never reaches
    // KMS as anything it made).
    let mut retagged = by_kms.clone();
    retagged[0] = LOCAL_TAG;
    assert!(matches!(
        local.open(&retagged, &alice()).await,
        Err(SealError::Invalid)
    ));
    let mut retagged = by_local.clone();
    retagged[0] = KMS_TAG;
    assert!(matches!(
        kms.open(&retagged, &alice()).await,
        Err(SealError::Invalid)
    ));
}

#[tokio::test]
async fn a_missing_key_is_a_configuration_problem() {
    let client = kms().await;
    let s = KmsSealer::new(
        client,
        "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
    );
    match s.seal(&Secret::new(TOKEN), &alice()).await {
        Err(SealError::NotConfigured(why)) => {
            assert!(why.contains("TOKEN_KEY_ID"), "{why}");
            assert!(!why.contains(TOKEN));
        }
        other => panic!("expected NotConfigured, got {other:?}"),
    }
}

#[tokio::test]
async fn an_empty_or_oversized_token_is_refused_before_kms() {
    let s = sealer().await;
    for plaintext in [String::new(), "x".repeat(4097)] {
        let r = s.seal(&Secret::new(plaintext), &alice()).await;
        assert!(matches!(r, Err(SealError::Invalid)), "{r:?}");
    }
    assert!(s
        .seal(&Secret::new("x".repeat(4096)), &alice())
        .await
        .is_ok());
}

#[tokio::test]
async fn an_unreachable_kms_is_unavailable_and_says_nothing_of_the_token() {
    // A port nothing listens on: connection refused, retried, then given up.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let s = KmsSealer::new(
        chatops_adapters::aws::kms(&cfg),
        "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
    );
    let e = s
        .seal(&Secret::new(TOKEN), &alice())
        .await
        .expect_err("nothing listens there");
    assert!(matches!(e, SealError::Unavailable(_)), "{e:?}");
    let text = chatops_core::report::chain(&e);
    assert!(!text.contains(TOKEN), "{text}");
    let e = s
        .open(&[KMS_TAG, 1, 2, 3], &alice())
        .await
        .expect_err("nothing listens there");
    assert!(matches!(e, SealError::Unavailable(_)), "{e:?}");
}
