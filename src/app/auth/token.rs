//! Random secrets for sessions, CSRF and API tokens. Secrets are high-entropy, so a plain SHA-256
//! is enough to store them (a slow hash protects guessable passwords, not random tokens).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Prefix of personal API tokens, so they are recognisable in logs and secret scanners.
pub const API_TOKEN_PREFIX: &str = "qt_";

/// 256 random bits, URL-safe.
pub fn secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// A new personal API token.
pub fn api_token() -> String {
    format!("{API_TOKEN_PREFIX}{}", secret())
}

/// What the database stores instead of the secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares secrets in constant time.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_digested() {
        let t = api_token();
        assert!(t.starts_with("qt_") && t.len() > 40);
        assert_ne!(t, api_token());
        assert_eq!(digest(&t), digest(&t));
        assert_eq!(digest(&t).len(), 64);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
