//! Who may sign in: users (one of them the root user from the config), their browser sessions and
//! their API tokens.

use async_trait::async_trait;

use super::Result;
use crate::app::model::{ApiToken, Millis, NewUser, Session, User, UserChanges};

/// Users, sessions and API tokens.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the root user, or updates its email, password and role to match the config.
    async fn upsert_root(&self, email: &str, password_hash: &str) -> Result<User>;
    /// The root user, if there is one.
    async fn root_user(&self) -> Result<Option<User>>;
    /// Creates the first user as root, only while there are no users at all; false when there
    /// already were (another instance starting at the same moment created one).
    async fn create_first_root(&self, email: &str, password_hash: &str) -> Result<bool>;
    /// Creates a user; `Conflict` on `email` when the address is taken.
    async fn create_user(&self, new: &NewUser) -> Result<User>;
    async fn user(&self, id: &str) -> Result<Option<User>>;
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    /// Every user, by email.
    async fn users(&self) -> Result<Vec<User>>;
    /// Applies the changes that are set; `None` when there is no such user.
    async fn update_user(&self, id: &str, changes: &UserChanges) -> Result<Option<User>>;
    /// Deletes a user other than the root user; false when nothing was deleted.
    async fn delete_user(&self, id: &str) -> Result<bool>;

    async fn create_session(&self, session: &Session) -> Result<()>;
    /// The unexpired session with this token hash and its (enabled) user.
    async fn session(&self, token_hash: &str, now: Millis) -> Result<Option<(Session, User)>>;
    async fn delete_session(&self, token_hash: &str) -> Result<()>;
    /// Signs a user out everywhere.
    async fn delete_user_sessions(&self, user_id: &str) -> Result<()>;
    /// Stores a token; only the hash of its secret is kept.
    async fn create_token(&self, token: &ApiToken, token_hash: &str) -> Result<()>;
    /// A user's tokens, newest first.
    async fn tokens(&self, user_id: &str) -> Result<Vec<ApiToken>>;
    /// Deletes one of the user's tokens; false when the user has no such token.
    async fn delete_token(&self, user_id: &str, id: &str) -> Result<bool>;
    /// The unexpired token with this hash and its (enabled) user; records the use.
    async fn token_user(&self, token_hash: &str, now: Millis) -> Result<Option<(ApiToken, User)>>;
}
