//! Licence keys and seats, as every mode reads them (issue 17): the key's format and signature
//! (`key.rs`), the public keys this binary trusts (`keyring.rs`), what a licence allows on a
//! given day (`validity.rs`), the vendor's signing-key file (`signing.rs`), and the seats the
//! store keeps (`model.rs`). Everything here works offline: a key is checked against the keys
//! compiled into the binary, never against a server. The report service's licensing at run time
//! (activation, the free tier) is `app/license/`.

pub mod key;
pub mod keyring;
pub mod model;
pub mod signing;
pub mod validity;

pub use key::{Claims, KeyError, License, Part, issue, parse_and_verify};
pub use keyring::{Keyring, RELEASE_BUILD, TEST_KID};
pub use signing::{SigningKeyError, read_signing_key, signing_key_file};
pub use validity::{GRACE_DAYS, Validity, WARN_DAYS};
