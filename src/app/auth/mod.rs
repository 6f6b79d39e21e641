//! Who is calling and what they may do: users with roles (viewer < editor < admin), the root user
//! from the config, sessions for the console (cookie + CSRF token), personal API tokens (Bearer),
//! and sign-in rate limiting.

pub mod accounts;
pub mod password;
pub mod ratelimit;
pub mod token;

use std::path::PathBuf;

use super::model::{User, UserRole};
use super::store::{Store, StoreError};
use crate::app::config::AppConfig;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub via: Via,
}

#[derive(Debug, Clone)]
pub enum Via {
    /// The console's session cookie; unsafe requests must echo the session's CSRF token.
    Session { token_hash: String, csrf: String },
    /// A personal API token.
    Token { id: String },
}

/// The caller's role is below what the action needs.
#[derive(Debug, thiserror::Error)]
#[error("this needs the {needed} role; you are {actual}")]
pub struct Forbidden {
    pub needed: &'static str,
    pub actual: &'static str,
}

impl Principal {
    pub fn require(&self, role: UserRole) -> Result<(), Forbidden> {
        if self.user.role >= role {
            Ok(())
        } else {
            Err(Forbidden {
                needed: role.as_str(),
                actual: self.user.role.as_str(),
            })
        }
    }

    /// Editors and admins see every job; viewers see their own.
    pub fn sees_all_jobs(&self) -> bool {
        self.user.role >= UserRole::Editor
    }
}

/// The email of the root user created when the config names none.
pub const DEFAULT_ROOT_EMAIL: &str = "admin@quire.local";

#[derive(Debug)]
pub enum RootUser {
    /// The configured root user exists with the configured password.
    Configured(String),
    /// No user existed and none was configured: one was created with a random password.
    Generated { email: String, saved_to: PathBuf },
    /// Not configured; users already exist.
    Unchanged,
}

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error("cannot save the generated root password to {path}: {source}")]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Makes the root user match the config, or creates a first admin when there is nobody.
pub async fn ensure_root(store: &dyn Store, config: &AppConfig) -> Result<RootUser, RootError> {
    if let (Some(email), Some(pw)) = (&config.root_user.email, &config.root_user.password) {
        let email = email.to_lowercase();
        let existing = store.user_by_email(&email).await?;
        let current = existing.as_ref().filter(|u| u.is_root && !u.disabled);
        let matches = match current {
            Some(u) => {
                // Busy at start (no slot in seconds) just means the hash is written again.
                password::verify_blocking(pw.expose().to_owned(), u.password_hash.clone())
                    .await
                    .unwrap_or(false)
            }
            None => false,
        };
        if !matches {
            let hash = password::hash_blocking(pw.expose().to_owned()).await?;
            let user = store.upsert_root(&email, &hash).await?;
            // A changed password signs out every session of the old one.
            store.delete_user_sessions(&user.id).await?;
        }
        return Ok(RootUser::Configured(email));
    }
    if !store.users().await?.is_empty() {
        return Ok(RootUser::Unchanged);
    }
    let pw = token::secret()[..20].to_owned();
    let hash = password::hash_blocking(pw.clone()).await?;
    // Several instances may start at once on an empty database: only the one whose insert wins
    // keeps its password.
    if !store.create_first_root(DEFAULT_ROOT_EMAIL, &hash).await? {
        return Ok(RootUser::Unchanged);
    }
    let path = config.data_dir.join("root-password.txt");
    save_private(&path, &format!("{DEFAULT_ROOT_EMAIL}\n{pw}\n")).map_err(|source| {
        RootError::Save {
            path: path.clone(),
            source,
        }
    })?;
    Ok(RootUser::Generated {
        email: DEFAULT_ROOT_EMAIL.to_owned(),
        saved_to: path,
    })
}

/// Writes a file only its owner can read.
fn save_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Parses and normalizes an email address enough to reject obvious mistakes.
pub fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !e.contains(char::is_whitespace) && e.len() <= 254)
        .then_some(e)
}

/// Minimum password length for users created through the API.
pub const MIN_PASSWORD_LEN: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_or_refused() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").as_deref(),
            Some("ada@example.com")
        );
        assert_eq!(normalize_email("nobody"), None);
        assert_eq!(normalize_email("a b@c.d"), None);
        assert_eq!(normalize_email("@c.d"), None);
    }
}
