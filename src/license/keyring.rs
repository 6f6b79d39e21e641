//! The public keys a licence key is verified against, by kid, compiled into the binary: a new
//! signing key is a new kid, so keys issued with the old one keep working after a rotation.
//!
//! Two lists: the vendor's production keys, trusted by every build, and the TEST key of the
//! repository (`test-signing-key.txt`, kid `test-1`), trusted only by builds that are not the
//! release: its private half is public, so a customer's binary must never accept it.
//! `scripts/build-release` marks the release by setting `QUIRE_RELEASE_BUILD` at compile time.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;

/// Whether this binary was built by `scripts/build-release` (`QUIRE_RELEASE_BUILD` set, to any
/// value, while compiling). Read with `option_env!`, which cargo records as an input of the
/// crate: setting or clearing it rebuilds, so a release binary never keeps a dev keyring.
pub const RELEASE_BUILD: bool = option_env!("QUIRE_RELEASE_BUILD").is_some();

/// The vendor's production public keys: (kid, 32-byte Ed25519 public key in hex). Empty until
/// the vendor makes the first one with `cargo run --example issue-license -- --generate FILE`
/// and adds the kid and the printed public key here. Rotation adds an entry; an entry leaves
/// only once no customer's key is signed with it.
const PRODUCTION_KEYS: &[(&str, &str)] = &[];

/// The TEST key's kid; its signing key is `test-signing-key.txt`.
pub const TEST_KID: &str = "test-1";
const TEST_PUBLIC_KEY: &str = "2c7459d0e489557fa27786d1859c5cf6670bb583bbe0123e359f0ca4d99d28f7";

#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, VerifyingKey>,
}

impl Keyring {
    /// The keys this binary trusts.
    pub fn builtin() -> Keyring {
        Keyring::builtin_for(RELEASE_BUILD)
    }

    /// The keys a release build (`release`) or any other build trusts: the production keys,
    /// plus the TEST key outside a release.
    pub fn builtin_for(release: bool) -> Keyring {
        let mut ring = Keyring::default();
        for (kid, public) in PRODUCTION_KEYS {
            ring = ring.with(*kid, builtin_key(public));
        }
        if !release {
            ring = ring.with(TEST_KID, builtin_key(TEST_PUBLIC_KEY));
        }
        ring
    }

    /// This keyring with `key` trusted as `kid` (the issuing tool checks a key it made).
    pub fn with(mut self, kid: impl Into<String>, key: VerifyingKey) -> Keyring {
        self.keys.insert(kid.into(), key);
        self
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The kid under which `key` is trusted, if it is.
    pub fn kid_of(&self, key: &VerifyingKey) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(kid, _)| kid.as_str())
    }
}

/// Decodes a public key constant of this file; `every_builtin_key_decodes` checks them all, so
/// this cannot fail in a built binary.
fn builtin_key(public: &str) -> VerifyingKey {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(public, &mut bytes).expect("built-in public keys are 64 hex digits");
    VerifyingKey::from_bytes(&bytes).expect("built-in public keys are Ed25519 points")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::key::{KeyError, parse_and_verify};
    use crate::license::signing::test_signing_key;

    fn test_signed_key() -> String {
        crate::license::signing::test_key(&crate::license::Claims {
            servers: 2,
            ..crate::license::signing::test_claims()
        })
    }

    #[test]
    fn every_builtin_key_decodes() {
        for (_, public) in PRODUCTION_KEYS {
            builtin_key(public);
        }
        builtin_key(TEST_PUBLIC_KEY);
    }

    #[test]
    fn the_committed_test_key_matches_the_builtin_public_key() {
        assert_eq!(
            test_signing_key().verifying_key(),
            builtin_key(TEST_PUBLIC_KEY)
        );
    }

    #[test]
    fn release_keyring_refuses_the_test_key() {
        let release = Keyring::builtin_for(true);
        assert_eq!(release.get(TEST_KID), None);
        assert_eq!(release.kid_of(&test_signing_key().verifying_key()), None);
        assert_eq!(
            parse_and_verify(&test_signed_key(), &release).unwrap_err(),
            KeyError::UnknownKid {
                kid: TEST_KID.to_owned()
            }
        );
    }

    #[test]
    fn dev_keyring_accepts_the_test_key() {
        let dev = Keyring::builtin_for(false);
        assert_eq!(
            dev.kid_of(&test_signing_key().verifying_key()),
            Some(TEST_KID)
        );
        assert!(parse_and_verify(&test_signed_key(), &dev).is_ok());
    }

    #[test]
    fn the_test_key_is_no_production_key() {
        let test_public = builtin_key(TEST_PUBLIC_KEY);
        for (kid, public) in PRODUCTION_KEYS {
            assert_ne!(*kid, TEST_KID);
            assert_ne!(builtin_key(public), test_public, "{kid}");
        }
    }
}
