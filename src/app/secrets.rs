//! Secrets stored in the database (an SMTP password set in the console) are sealed with
//! AES-256-GCM under a key derived from `encryption.key`, so a database dump does not reveal
//! them. Every instance must share the key (the HA page warns when they differ).

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::config::Secret;

const PREFIX: &str = "v1:";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SealError {
    #[error("storing secrets needs encryption.key (32 characters, the same on every instance)")]
    NoKey,
    #[error(
        "a stored secret cannot be read: it was sealed with another encryption.key, or damaged"
    )]
    Unreadable,
}

/// Seals and opens secrets with the configured key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<Aes256Gcm>,
}

impl Sealer {
    pub fn new(key: Option<&Secret>) -> Self {
        // Hashing makes any configured key exactly 256 bits (and separates this use of it).
        let cipher = key.and_then(|k| {
            let derived = Sha256::digest(format!("quire-seal:{}", k.expose()).as_bytes());
            Aes256Gcm::new_from_slice(&derived).ok()
        });
        Sealer { cipher }
    }

    pub fn seal(&self, plaintext: &str) -> Result<String, SealError> {
        let cipher = self.cipher.as_ref().ok_or(SealError::NoKey)?;
        let nonce: [u8; 12] = rand::random();
        let sealed = cipher
            .encrypt(&nonce.into(), plaintext.as_bytes())
            .map_err(|_| SealError::Unreadable)?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SealError> {
        let cipher = self.cipher.as_ref().ok_or(SealError::NoKey)?;
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or(SealError::Unreadable)?;
        if raw.len() < 12 {
            return Err(SealError::Unreadable);
        }
        let (nonce, body) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SealError::Unreadable)?;
        let plain = cipher
            .decrypt(&nonce.into(), body)
            .map_err(|_| SealError::Unreadable)?;
        String::from_utf8(plain).map_err(|_| SealError::Unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_with_the_same_key_only() {
        let a = Sealer::new(Some(&Secret::new("0123456789abcdef0123456789abcdef")));
        let sealed = a.seal("smtp://u:p@host").unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("smtp"));
        assert_ne!(
            sealed,
            a.seal("smtp://u:p@host").unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(a.open(&sealed).unwrap(), "smtp://u:p@host");
        let b = Sealer::new(Some(&Secret::new("ffffffffffffffffffffffffffffffff")));
        assert_eq!(b.open(&sealed), Err(SealError::Unreadable));
        assert_eq!(Sealer::new(None).seal("x"), Err(SealError::NoKey));
        assert_eq!(a.open("v1:garbage"), Err(SealError::Unreadable));
    }
}
