//! Users, sessions and API tokens as people manage them, with their rules: sign-in within the
//! rate limits, the root user changed only by root, a new password signs the user out
//! everywhere and (unless asked not to) revokes their tokens.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::password::{self, HashError};
use super::ratelimit::LoginLimiter;
use super::{MIN_PASSWORD_LEN, normalize_email, token};
use crate::app::model::{ApiToken, NewUser, Session, User, UserChanges, UserRole, millis, now_ms};
use crate::app::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("too many sign-ins; wait and try again")]
    RateLimited { retry_after_secs: u64 },
    #[error("wrong email or password")]
    WrongPassword,
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> AccountError {
    AccountError::Invalid {
        field,
        message: message.into(),
    }
}

/// A change an admin asks for.
pub struct UserPatch {
    pub role: Option<UserRole>,
    pub password: Option<String>,
    pub disabled: Option<bool>,
    /// With a new password: also revoke the user's API tokens, since whoever knew the old
    /// password may have made one.
    pub revoke_tokens: bool,
}

/// A session just opened: its secret goes into the cookie and is kept nowhere.
pub struct SignedIn {
    pub user: User,
    pub session: Session,
    pub secret: String,
}

#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    limiter: LoginLimiter,
    session_ttl: Duration,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, limiter: LoginLimiter, session_ttl: Duration) -> Self {
        Accounts {
            store,
            limiter,
            session_ttl,
        }
    }

    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }

    /// Checks `password` for `email` from `ip` within the sign-in limits and opens a session.
    pub async fn sign_in(
        &self,
        email: &str,
        password: String,
        ip: IpAddr,
    ) -> Result<SignedIn, AccountError> {
        let email =
            normalize_email(email).ok_or_else(|| invalid("email", "not an email address"))?;
        // Reserved before the check, so parallel guesses count against the limit in flight.
        let attempt = self
            .limiter
            .begin(ip, &email)
            .map_err(|r| AccountError::RateLimited {
                retry_after_secs: r.retry_after_secs,
            })?;
        tokio::time::sleep(attempt.delay).await;
        let user = self
            .store
            .user_by_email(&email)
            .await?
            .filter(|u| !u.disabled);
        let hash = user.as_ref().map_or_else(
            || password::DUMMY_HASH.to_owned(),
            |u| u.password_hash.clone(),
        );
        let ok = match password::verify_blocking(password, hash).await {
            Ok(ok) => ok,
            Err(password::Busy) => {
                // Not a guess that was checked: released without counting a failure.
                attempt.not_checked();
                return Err(AccountError::RateLimited {
                    retry_after_secs: 1,
                });
            }
        };
        let Some(user) = user.filter(|_| ok) else {
            attempt.failed();
            tracing::info!(email = %email, ip = %ip, "failed sign-in");
            return Err(AccountError::WrongPassword);
        };
        attempt.succeeded();
        let secret = token::secret();
        let now = now_ms();
        let session = Session {
            token_hash: token::digest(&secret),
            user_id: user.id.clone(),
            csrf_token: token::secret(),
            created_at: now,
            expires_at: now.saturating_add(millis(self.session_ttl)),
        };
        self.store.create_session(&session).await?;
        tracing::info!(email = %email, ip = %ip, "signed in");
        Ok(SignedIn {
            user,
            session,
            secret,
        })
    }

    pub async fn sign_out(&self, token_hash: &str) -> Result<(), AccountError> {
        Ok(self.store.delete_session(token_hash).await?)
    }

    pub async fn users(&self) -> Result<Vec<User>, AccountError> {
        Ok(self.store.users().await?)
    }

    pub async fn create_user(
        &self,
        email: &str,
        password: String,
        role: UserRole,
    ) -> Result<User, AccountError> {
        let email =
            normalize_email(email).ok_or_else(|| invalid("email", "not an email address"))?;
        check_password(&password)?;
        let password_hash = password::hash_blocking(password).await?;
        let user = NewUser {
            email,
            password_hash,
            role,
        };
        Ok(self.store.create_user(&user).await?)
    }

    /// Applies an admin's change to user `id`.
    pub async fn update_user(
        &self,
        actor: &User,
        id: &str,
        patch: UserPatch,
    ) -> Result<User, AccountError> {
        let target = self.user(id).await?;
        if target.is_root && !actor.is_root {
            return Err(AccountError::Forbidden(
                "only the root user (or the configuration, root_user) changes the root user",
            ));
        }
        if target.is_root
            && (patch.role.is_some_and(|r| r != UserRole::Admin) || patch.disabled == Some(true))
        {
            return Err(invalid(
                "role",
                "the root user is managed by the configuration (root_user) and stays an admin",
            ));
        }
        let password_hash = match patch.password {
            Some(pw) => {
                check_password(&pw)?;
                Some(password::hash_blocking(pw).await?)
            }
            None => None,
        };
        let new_password = password_hash.is_some();
        let changes = UserChanges {
            role: patch.role,
            password_hash,
            disabled: patch.disabled,
        };
        let user = self
            .store
            .update_user(id, &changes)
            .await?
            .ok_or(AccountError::NotFound("user"))?;
        if new_password || patch.disabled == Some(true) {
            self.store.delete_user_sessions(id).await?;
        }
        if new_password && patch.revoke_tokens {
            for t in self.store.tokens(id).await? {
                self.store.delete_token(id, &t.id).await?;
            }
        }
        tracing::info!(by = %actor.email, email = %user.email, new_password, "user changed");
        Ok(user)
    }

    pub async fn delete_user(&self, id: &str) -> Result<(), AccountError> {
        if self.user(id).await?.is_root {
            return Err(invalid(
                "id",
                "the root user is managed by the configuration and cannot be deleted",
            ));
        }
        self.store.delete_user(id).await?;
        Ok(())
    }

    pub async fn tokens(&self, user_id: &str) -> Result<Vec<ApiToken>, AccountError> {
        Ok(self.store.tokens(user_id).await?)
    }

    /// Makes a personal API token; its secret is returned here only (the store keeps a digest).
    pub async fn create_token(
        &self,
        user_id: &str,
        name: &str,
        expires_in_days: Option<u32>,
    ) -> Result<(ApiToken, String), AccountError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(invalid("name", "must have 1 to 100 characters"));
        }
        let secret = token::api_token();
        let now = now_ms();
        let t = ApiToken {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            prefix: secret.chars().take(8).collect(),
            created_at: now,
            last_used_at: None,
            expires_at: expires_in_days.map(|d| now + i64::from(d) * 86_400_000),
        };
        self.store.create_token(&t, &token::digest(&secret)).await?;
        Ok((t, secret))
    }

    /// Revokes one of `user_id`'s tokens; false when it has none by that id.
    pub async fn delete_token(&self, user_id: &str, id: &str) -> Result<bool, AccountError> {
        Ok(self.store.delete_token(user_id, id).await?)
    }

    async fn user(&self, id: &str) -> Result<User, AccountError> {
        self.store
            .user(id)
            .await?
            .ok_or(AccountError::NotFound("user"))
    }
}

fn check_password(pw: &str) -> Result<(), AccountError> {
    if pw.chars().count() < MIN_PASSWORD_LEN {
        return Err(invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}
