//! What is wrong with a configuration, said so an operator can fix it: the key, where its value
//! came from, and what would be valid.

use std::fmt;
use std::path::PathBuf;

use super::source::{EnvFileError, describe};

/// A setting that is wrong: which key, what value, where it came from, what would be valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub origin: String,
    pub message: String,
}

impl Problem {
    /// A value that did not deserialize, as figment found it: its key (`(file)` when the file
    /// itself is unreadable) and where it came from.
    pub(crate) fn from_figment(err: figment::Error) -> Vec<Problem> {
        err.into_iter()
            .map(|e| {
                let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
                Problem {
                    key: if path.is_empty() {
                        "(file)".to_owned()
                    } else {
                        path.join(".")
                    },
                    origin: describe(e.metadata.as_ref(), &path),
                    message: e.kind.to_string(),
                }
            })
            .collect()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {}): {}", self.key, self.origin, self.message)
    }
}

/// Why the configuration cannot be used; the process exits with `EX_CONFIG` (78).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} (given by {given_by}) does not exist")]
    MissingFile {
        path: PathBuf,
        given_by: &'static str,
    },
    #[error("{0}")]
    EnvFile(#[from] EnvFileError),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Where a section's rules report what they find: keys are written below the section's own key
/// (`upstreams.0.weight` in `[lb]`), and each problem is given its full key and the origin of its
/// value.
pub struct Problems<'a> {
    section: &'a str,
    origin: &'a dyn Fn(&str) -> String,
    found: Vec<Problem>,
}

impl<'a> Problems<'a> {
    /// Problems of the section at `section` (`""` for top-level keys); `origin` says where the
    /// value at a full key came from.
    pub fn new(section: &'a str, origin: &'a dyn Fn(&str) -> String) -> Self {
        Problems {
            section,
            origin,
            found: Vec::new(),
        }
    }

    /// Reports the value at `key` (below the section) as wrong.
    pub fn add(&mut self, key: &str, message: impl Into<String>) {
        self.add_with_origin_of(key, key, message);
    }

    /// As `add`, naming the origin of `origin_key` instead (for a list item, the list's).
    pub fn add_with_origin_of(&mut self, key: &str, origin_key: &str, message: impl Into<String>) {
        let origin = (self.origin)(&full_key(self.section, origin_key));
        self.found.push(Problem {
            key: full_key(self.section, key),
            origin,
            message: message.into(),
        });
    }

    /// Everything reported, in order.
    pub fn into_vec(self) -> Vec<Problem> {
        self.found
    }

    /// Nothing reported, or `ConfigError::Invalid` with all of it.
    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.found))
        }
    }
}

/// `section.key`, or `key` for a top-level section.
pub fn full_key(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}
