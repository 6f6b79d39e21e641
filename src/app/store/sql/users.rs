//! Users, sessions and API tokens.

use async_trait::async_trait;

use super::db::{Backend, Row, Sql};
use super::{SqlStore, conflict};
use crate::app::model::{ApiToken, Millis, NewUser, Session, User, UserChanges, UserRole};
use crate::app::store::{Result, StoreError, UserStore};

const USER_COLS: &str = "id, email, role, password_hash, is_root, disabled, created_at";

const TOKEN_COLS: &str = "id, user_id, name, prefix, created_at, last_used_at, expires_at";

fn user_row(r: &impl Row) -> Result<User> {
    let role: String = r.try_get("role")?;
    Ok(User {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        role: UserRole::parse(&role).ok_or(StoreError::Corrupt("users.role"))?,
        password_hash: r.try_get("password_hash")?,
        is_root: r.try_get::<i64, _>("is_root")? != 0,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

fn token_row(r: &impl Row) -> Result<ApiToken> {
    Ok(ApiToken {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

impl<B: Backend> SqlStore<B> {
    async fn fetch_user(&self, sql: &'static Sql, key: &str) -> Result<Option<User>> {
        self.db
            .query(sql)
            .bind(key)
            .fetch_optional_as(user_row)
            .await
    }
}

#[async_trait]
impl<B: Backend> UserStore for SqlStore<B> {
    async fn upsert_root(&self, email: &str, password_hash: &str) -> Result<User> {
        let mut tx = self.db.begin_write().await?;
        // A root user renamed in the config leaves its old account as a plain admin.
        tx.query("UPDATE users SET is_root = 0 WHERE is_root = 1 AND email <> $1")
            .bind(email)
            .execute()
            .await?;
        static UPSERT: Sql = Sql::new(&[
            "INSERT INTO users (id, email, role, password_hash, is_root, disabled, created_at, \
             updated_at) VALUES ($1, $2, 'admin', $3, 1, 0, {now}, {now}) \
             ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, \
             role = 'admin', is_root = 1, disabled = 0, updated_at = excluded.updated_at \
             RETURNING ",
            USER_COLS,
        ]);
        let row = tx
            .query(&UPSERT)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(email)
            .bind(password_hash)
            .fetch_one()
            .await?;
        tx.commit().await?;
        user_row(&row)
    }

    async fn root_user(&self) -> Result<Option<User>> {
        static ROOT: Sql = Sql::new(&["SELECT ", USER_COLS, " FROM users WHERE is_root = 1"]);
        self.db.query(&ROOT).fetch_optional_as(user_row).await
    }

    async fn create_first_root(&self, email: &str, password_hash: &str) -> Result<bool> {
        static FIRST: Sql = Sql::new(&[
            "INSERT INTO users (id, email, role, password_hash, is_root, disabled, created_at, \
             updated_at) SELECT $1, $2, 'admin', $3, 1, 0, {now}, {now} \
             WHERE NOT EXISTS (SELECT 1 FROM users) ON CONFLICT (email) DO NOTHING RETURNING id",
        ]);
        let row = self
            .db
            .query(&FIRST)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(email)
            .bind(password_hash)
            .fetch_optional()
            .await?;
        Ok(row.is_some())
    }

    async fn create_user(&self, new: &NewUser) -> Result<User> {
        static CREATE: Sql = Sql::new(&[
            "INSERT INTO users (id, email, role, password_hash, is_root, disabled, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, 0, 0, {now}, {now}) RETURNING ",
            USER_COLS,
        ]);
        let row = self
            .db
            .query(&CREATE)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&new.email)
            .bind(new.role.as_str())
            .bind(&new.password_hash)
            .fetch_one()
            .await
            .map_err(|e| conflict(e, "email", || format!("a user with email {}", new.email)))?;
        user_row(&row)
    }

    async fn user(&self, id: &str) -> Result<Option<User>> {
        static BY_ID: Sql = Sql::new(&["SELECT ", USER_COLS, " FROM users WHERE id = $1"]);
        self.fetch_user(&BY_ID, id).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        static BY_EMAIL: Sql = Sql::new(&["SELECT ", USER_COLS, " FROM users WHERE email = $1"]);
        self.fetch_user(&BY_EMAIL, email).await
    }

    async fn users(&self) -> Result<Vec<User>> {
        static ALL: Sql = Sql::new(&["SELECT ", USER_COLS, " FROM users ORDER BY email"]);
        self.db.query(&ALL).fetch_all_as(user_row).await
    }

    async fn update_user(&self, id: &str, c: &UserChanges) -> Result<Option<User>> {
        static UPDATE: Sql = Sql::new(&[
            "UPDATE users SET role = COALESCE($2, role), \
             password_hash = COALESCE($3, password_hash), disabled = COALESCE($4, disabled), \
             updated_at = {now} WHERE id = $1 RETURNING ",
            USER_COLS,
        ]);
        self.db
            .query(&UPDATE)
            .bind(id)
            .bind(c.role.map(UserRole::as_str))
            .bind(&c.password_hash)
            .bind(c.disabled.map(i64::from))
            .fetch_optional_as(user_row)
            .await
    }

    async fn delete_user(&self, id: &str) -> Result<bool> {
        let deleted = self
            .db
            .query("DELETE FROM users WHERE id = $1 AND is_root = 0")
            .bind(id)
            .execute()
            .await?;
        Ok(deleted > 0)
    }

    async fn create_session(&self, s: &Session) -> Result<()> {
        self.db
            .query(
                "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&s.token_hash)
            .bind(&s.user_id)
            .bind(&s.csrf_token)
            .bind(s.created_at)
            .bind(s.expires_at)
            .execute()
            .await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str, now: Millis) -> Result<Option<(Session, User)>> {
        let row = self
            .db
            .query(
                "SELECT s.token_hash, s.csrf_token, s.created_at AS s_created_at, \
                 s.expires_at AS s_expires_at, \
                 u.id, u.email, u.role, u.password_hash, u.is_root, u.disabled, u.created_at \
                 FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled = 0",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional()
            .await?;
        let Some(r) = row else { return Ok(None) };
        let user = user_row(&r)?;
        let session = Session {
            token_hash: r.try_get("token_hash")?,
            user_id: user.id.clone(),
            csrf_token: r.try_get("csrf_token")?,
            created_at: r.try_get("s_created_at")?,
            expires_at: r.try_get("s_expires_at")?,
        };
        Ok(Some((session, user)))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        self.db
            .query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute()
            .await?;
        Ok(())
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<()> {
        self.db
            .query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute()
            .await?;
        Ok(())
    }

    async fn create_token(&self, t: &ApiToken, token_hash: &str) -> Result<()> {
        self.db
            .query(
                "INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, created_at, \
                 last_used_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)",
            )
            .bind(&t.id)
            .bind(&t.user_id)
            .bind(&t.name)
            .bind(token_hash)
            .bind(&t.prefix)
            .bind(t.created_at)
            .bind(t.expires_at)
            .execute()
            .await?;
        Ok(())
    }

    async fn tokens(&self, user_id: &str) -> Result<Vec<ApiToken>> {
        static OF_USER: Sql = Sql::new(&[
            "SELECT ",
            TOKEN_COLS,
            " FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC",
        ]);
        self.db
            .query(&OF_USER)
            .bind(user_id)
            .fetch_all_as(token_row)
            .await
    }

    async fn delete_token(&self, user_id: &str, id: &str) -> Result<bool> {
        let deleted = self
            .db
            .query("DELETE FROM api_tokens WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute()
            .await?;
        Ok(deleted > 0)
    }

    async fn token_user(&self, token_hash: &str, now: Millis) -> Result<Option<(ApiToken, User)>> {
        let row = self
            .db
            .query(
                "SELECT t.id AS t_id, t.name, t.prefix, t.created_at AS t_created_at, \
                 t.last_used_at, t.expires_at, \
                 u.id, u.email, u.role, u.password_hash, u.is_root, u.disabled, u.created_at \
                 FROM api_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) \
                 AND u.disabled = 0",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional()
            .await?;
        let Some(r) = row else { return Ok(None) };
        let user = user_row(&r)?;
        let token = ApiToken {
            id: r.try_get("t_id")?,
            user_id: user.id.clone(),
            name: r.try_get("name")?,
            prefix: r.try_get("prefix")?,
            created_at: r.try_get("t_created_at")?,
            last_used_at: r.try_get("last_used_at")?,
            expires_at: r.try_get("expires_at")?,
        };
        // Record use at most once a minute: a write per API call would be most of the
        // database's work under load.
        if token.last_used_at.is_none_or(|t| t < now - 60_000) {
            self.db
                .query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                .bind(&token.id)
                .bind(now)
                .execute()
                .await?;
        }
        Ok(Some((token, user)))
    }
}
