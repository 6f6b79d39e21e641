//! Licensing (issue 17). So far the key alone: its format and signature (`key.rs`), the public
//! keys this binary trusts (`keyring.rs`), what a licence allows on a given day (`validity.rs`),
//! and the vendor's signing-key file (`signing.rs`). Everything here works offline: a key is
//! checked against the keys compiled into the binary, never against a server.

pub mod key;
pub mod keyring;
pub mod signing;
pub mod validity;

pub use key::{Claims, KeyError, License, Part, issue, parse_and_verify};
pub use keyring::{Keyring, RELEASE_BUILD, TEST_KID};
pub use signing::{SigningKeyError, read_signing_key, signing_key_file};
pub use validity::{GRACE_DAYS, Validity, WARN_DAYS};
