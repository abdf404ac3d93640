//! Meta signs every webhook POST with `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of
//! the raw body keyed with the app secret. Checked here on the bytes as received, before any
//! parsing, in constant time: re-serialised JSON would not match, and an early-exit comparison
//! would let a prober learn the signature byte by byte.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Meta signs webhooks with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Why a POST was not accepted as coming from Meta. Each variant is a 401; they differ only
/// in what the log line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not `sha256=` followed by 64 hex digits")]
    Malformed,
    #[error(
        "X-Hub-Signature-256 does not match the body (wrong HERALD_APP_SECRET, or not from Meta)"
    )]
    Mismatch,
}

/// Checks a header value (`sha256=…`, `None` when the header is absent) against `body`.
pub fn verify(app_secret: &[u8], body: &[u8], header: Option<&[u8]>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let header = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed)?;
    let header = header.trim();
    // The algorithm name is case-insensitive (`SHA256=` from proxies that upper-case it); the
    // hex digest decodes in either case anyway.
    let hex_digest = header
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("sha256="))
        .map(|_| &header[7..])
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value Meta would send for `body`: for tests and tools that post webhooks.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Compares two secrets (verify token, admin token) without an early exit on the first
/// differing byte. The length is not hidden; it is not the secret.
pub fn secrets_match(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-app-secret";

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = sign(SECRET, body);
        assert_eq!(verify(SECRET, body, Some(sig.as_bytes())), Ok(()));
    }

    #[test]
    fn the_prefix_and_the_digest_are_case_insensitive() {
        let body = br#"{"entry":[]}"#;
        let sig = sign(SECRET, body);
        let upper = sig.replacen("sha256=", "SHA256=", 1);
        assert_eq!(verify(SECRET, body, Some(upper.as_bytes())), Ok(()));
        assert_eq!(
            verify(SECRET, body, Some(sig.to_ascii_uppercase().as_bytes())),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, body, Some("ä".repeat(40).as_bytes())),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn one_changed_byte_in_the_body_fails() {
        let sig = sign(SECRET, b"{\"a\":1}");
        assert_eq!(
            verify(SECRET, b"{\"a\":2}", Some(sig.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn another_secret_fails() {
        let sig = sign(b"other", b"{}");
        assert_eq!(
            verify(SECRET, b"{}", Some(sig.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_told_apart() {
        assert_eq!(verify(SECRET, b"{}", None), Err(SignatureError::Missing));
        for bad in ["", "sha1=abcd", "sha256=zz", "sha256=abcd", "sha256"] {
            assert_eq!(
                verify(SECRET, b"{}", Some(bad.as_bytes())),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(secrets_match(b"token", b"token"));
        assert!(!secrets_match(b"token", b"tokeN"));
        assert!(!secrets_match(b"tok", b"token"));
        assert!(!secrets_match(b"", b"token"));
    }
}
