//! The vendor's signing-key file: `#` comment lines and one line with the 32-byte Ed25519 seed
//! in hex. The repository holds one such file, the TEST key (`test-signing-key.txt`); the
//! production keys never enter it.

use ed25519_dalek::SigningKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("no key line (64 hex digits) in the signing-key file")]
    Missing,
    #[error("more than one key line in the signing-key file")]
    Several,
    // The line itself is not quoted: it may be most of a secret.
    #[error("the key line is not 64 hex digits (a 32-byte Ed25519 seed)")]
    NotHex,
}

/// Reads a signing-key file's text.
pub fn read_signing_key(text: &str) -> Result<SigningKey, SigningKeyError> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or(SigningKeyError::Missing)?;
    if lines.next().is_some() {
        return Err(SigningKeyError::Several);
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(line, &mut seed).map_err(|_| SigningKeyError::NotHex)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A signing-key file for `key`, with a header that says what it is and where it must not go.
pub fn signing_key_file(key: &SigningKey, kid: &str) -> String {
    format!(
        "# Quire licence SIGNING key, kid {kid}. SECRET: whoever holds it can issue licences.\n\
         # Keep it off the repository and off servers; the binary holds only its public key:\n\
         # {public}\n\
         {seed}\n",
        public = hex::encode(key.verifying_key().as_bytes()),
        seed = hex::encode(key.to_bytes()),
    )
}

/// The TEST signing key (kid `test-1`): what the unit tests issue their keys with.
#[cfg(test)]
pub(crate) fn test_signing_key() -> SigningKey {
    read_signing_key(include_str!("test-signing-key.txt")).expect("the committed test key reads")
}

/// Claims the unit tests start from (TEST kid, licence `L-1` for Acme, valid from 2026-01-01
/// without expiry, one server plus one of allowance); a test overrides what it is about.
#[cfg(test)]
pub(crate) fn test_claims() -> super::Claims {
    let day = jiff::civil::date(2026, 1, 1);
    super::Claims {
        kid: super::TEST_KID.to_owned(),
        id: "L-1".to_owned(),
        customer: "Acme".to_owned(),
        issued_at: day,
        not_before: day,
        expires_at: None,
        servers: 1,
        allowance: 1,
        features: vec![],
    }
}

/// `claims` signed with the TEST key.
#[cfg(test)]
pub(crate) fn test_key(claims: &super::Claims) -> String {
    super::issue(claims, &test_signing_key()).expect("valid test claims")
}

/// `claims` signed with the TEST key and verified, as a running instance holds it.
#[cfg(test)]
pub(crate) fn test_license(claims: &super::Claims) -> super::License {
    super::parse_and_verify(&test_key(claims), &super::Keyring::builtin_for(false))
        .expect("the TEST key verifies outside a release")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let text = signing_key_file(&key, "prod-2");
        assert_eq!(read_signing_key(&text).unwrap().to_bytes(), key.to_bytes());
    }

    #[test]
    fn bad_files_are_refused() {
        assert_eq!(
            read_signing_key("# only a comment\n").unwrap_err(),
            SigningKeyError::Missing
        );
        let seed = "ab".repeat(32);
        assert_eq!(
            read_signing_key(&format!("{seed}\n{seed}\n")).unwrap_err(),
            SigningKeyError::Several
        );
        assert_eq!(
            read_signing_key("abcd").unwrap_err(),
            SigningKeyError::NotHex
        );
    }
}
