//! The configuration mechanism: built-in defaults < TOML file < alias variables < `QUIRE_*`
//! variables (with `*_FILE` secrets) < platform settings, every value remembering where it came
//! from. Values are validated while they are deserialized (see `types`), and each section's
//! cross-field rules once at load, so a bad setting stops the process with its key, the place it
//! came from and what would be valid.
//!
//! This module knows no mode and no concrete key: each mode owns its part of the file as a
//! [`Section`] (`app::config`, `lb::config`, `nats::config`, `telemetry`), and the binary lists
//! the sections it reads as a [`Layout`] (`cli/config.rs`).

mod check;
pub mod connstring;
mod credential;
mod load;
mod problem;
mod redact;
mod section;
mod source;
pub mod types;

pub(crate) use check::report;
pub(crate) use load::{Loaded, load};
pub(crate) use problem::Problems;
pub use problem::{ConfigError, Problem};
pub use redact::{hide_url_credentials, redact_server, redact_url};
pub(crate) use section::{EachSection, Layout, SecretKey, Section, Shown};
#[cfg(test)]
pub(crate) use source::test_env;
pub(crate) use source::{Setting, alias_settings, numbered_alias, set_by_quire_env};
pub use types::{ByteSize, Secret, Span, one_or_many};
