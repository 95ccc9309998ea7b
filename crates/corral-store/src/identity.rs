//! Users, organizations, memberships, API keys and refresh tokens.
//!
//! Secrets never reach this module in plaintext: callers pass hashes
//! (Argon2id for passwords, SHA-256 for keys and tokens).

use sqlx::Row;
use sqlx::any::AnyRow;

use corral_core::auth::{OrgRole, PlatformRole, Scope};
use corral_core::id::new_id;

use crate::{Store, StoreError};

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: String,
    /// Lowercased email.
    pub email: String,
    /// Username.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Platform role.
    pub role: PlatformRole,
    /// Plan id.
    pub plan_id: String,
    /// Whether the account may sign in.
    pub is_active: bool,
    /// Whether the email was verified.
    pub email_verified: bool,
    /// The user's personal org.
    pub personal_org_id: String,
    /// Created (Unix ms).
    pub created_at: i64,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Lowercased email.
    pub email: String,
    /// Username.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Platform role.
    pub role: PlatformRole,
    /// Plan id.
    pub plan_id: String,
}

/// A stored API key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// The org the key acts in.
    pub org_id: String,
    /// Name given by the owner.
    pub name: String,
    /// Visible start of the key.
    pub prefix: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Whether it is usable.
    pub is_active: bool,
    /// Expiry (Unix ms).
    pub expires_at: Option<i64>,
    /// Last use (Unix ms).
    pub last_used_at: Option<i64>,
    /// Uses so far.
    pub usage_count: i64,
    /// Created (Unix ms).
    pub created_at: i64,
}

/// An API key to create.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Owner.
    pub user_id: String,
    /// The org the key acts in.
    pub org_id: String,
    /// Name.
    pub name: String,
    /// Visible start of the key.
    pub prefix: String,
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Expiry (Unix ms).
    pub expires_at: Option<i64>,
    /// The owner's plan limit on keys; `None` is unlimited.
    pub max_keys: Option<i64>,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid: it is now used, and a successor may be issued in its family.
    Valid {
        /// The user.
        user_id: String,
        /// The token family.
        family_id: String,
    },
    /// Already used: the whole family has now been revoked.
    Reused,
    /// Revoked (its sign-in ended: signed out, a reuse was detected, or the
    /// password changed).
    Revoked,
    /// Unknown or expired.
    Invalid,
}

const USER_COLUMNS: &str = "id, email, username, password_hash, role, plan_id, is_active, \
     email_verified, personal_org_id, created_at";

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: role
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("users.role: {e}")))?,
        plan_id: row.try_get("plan_id")?,
        is_active: row.try_get::<i64, _>("is_active")? != 0,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
        personal_org_id: row
            .try_get::<Option<String>, _>("personal_org_id")?
            .unwrap_or_default(),
        created_at: row.try_get("created_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<ApiKey, StoreError> {
    let scopes: String = row.try_get("scopes")?;
    let scopes = scopes
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(format!("api_keys.scopes: {e}")))?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes,
        is_active: row.try_get::<i64, _>("is_active")? != 0,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        usage_count: row.try_get("usage_count")?,
        created_at: row.try_get("created_at")?,
    })
}

const KEY_COLUMNS: &str = "id, user_id, org_id, name, prefix, scopes, is_active, expires_at, \
     last_used_at, usage_count, created_at";

impl Store {
    /// Creates a user with a personal org in which the user is owner.
    /// `Conflict` when the email or username is taken.
    pub async fn create_user(&self, now: i64, new: NewUser) -> Result<User, StoreError> {
        let taken: Option<(String, String)> = sqlx::query_as(
            "SELECT email, username FROM users WHERE email = $1 OR username = $2 LIMIT 1",
        )
        .bind(&new.email)
        .bind(&new.username)
        .fetch_optional(self.pool())
        .await?;
        if let Some((email, _)) = taken {
            let field = if email == new.email {
                "email"
            } else {
                "username"
            };
            return Err(StoreError::Conflict(format!(
                "{field} is already registered"
            )));
        }
        let user_id = new_id();
        let org_id = new_id();
        let mut tx = self.pool().begin().await?;
        sqlx::query("INSERT INTO orgs (id, name, is_personal, created_at) VALUES ($1, $2, 1, $3)")
            .bind(&org_id)
            .bind(&new.username)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, username, password_hash, role, plan_id, is_active, \
             email_verified, personal_org_id, api_key_count, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, 0, $7, 0, $8, $8)",
        )
        .bind(&user_id)
        .bind(&new.email)
        .bind(&new.username)
        .bind(&new.password_hash)
        .bind(new.role.as_str())
        .bind(&new.plan_id)
        .bind(&org_id)
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            return Err(conflict_or(e, "email or username is already registered"));
        }
        sqlx::query(
            "INSERT INTO org_members (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&org_id)
        .bind(&user_id)
        .bind(OrgRole::Owner.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.user_by_id(&user_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("user vanished after insert".into()))
    }

    /// Changes a user's own username and/or email (each when given). A new
    /// email is unverified until proven again. `Conflict` when taken.
    pub async fn update_profile(
        &self,
        now: i64,
        id: &str,
        username: Option<&str>,
        email: Option<&str>,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE users SET username = COALESCE($2, username), \
             email_verified = CASE WHEN $3 IS NULL OR $3 = email THEN email_verified ELSE 0 END, \
             email = COALESCE($3, email), updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(username.map(str::to_owned))
        .bind(email.map(str::to_owned))
        .bind(now)
        .execute(self.pool())
        .await;
        if let Err(e) = updated {
            return Err(conflict_or(
                e,
                "that email or username is already registered",
            ));
        }
        self.auth_changed().await;
        Ok(())
    }

    /// Users ordered by id (creation time), after `after_id`, at most `limit`.
    pub async fn list_users(
        &self,
        after_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ));
        let rows = sqlx::query(sql)
            .bind(after_id.map(str::to_owned))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Changes a user's plan, platform role and active flag (each when given);
    /// `false` when there is no such user. A plan that does not exist is a `Conflict`.
    pub async fn update_user_admin(
        &self,
        now: i64,
        id: &str,
        plan_id: Option<&str>,
        role: Option<PlatformRole>,
        is_active: Option<bool>,
    ) -> Result<bool, StoreError> {
        if let Some(plan) = plan_id
            && self.plan(plan).await?.is_none()
        {
            return Err(StoreError::Conflict(format!("no plan `{plan}`")));
        }
        let done = sqlx::query(
            "UPDATE users SET plan_id = COALESCE($2, plan_id), role = COALESCE($3, role), \
             is_active = COALESCE($4, is_active), updated_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(plan_id.map(str::to_owned))
        .bind(role.map(|r| r.as_str().to_owned()))
        .bind(is_active.map(i64::from))
        .bind(now)
        .execute(self.pool())
        .await?;
        self.auth_changed().await;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a user's password hash, revokes every refresh token (other
    /// API clients stop when their access token expires) and ends every
    /// browser session at once.
    pub async fn set_password(
        &self,
        now: i64,
        id: &str,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        crate::email_tokens::end_sessions_in(&mut tx, now, id).await?;
        tx.commit().await?;
        self.auth_changed().await;
        Ok(())
    }

    /// How many accounts exist.
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The user whose username or (lowercased) email is `login`.
    pub async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1 OR email = $2"
        ));
        let row = sqlx::query(sql)
            .bind(login)
            .bind(login.to_lowercase())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// When sign-in for this login name is refused until (Unix ms), if locked.
    pub async fn login_locked_until(&self, login_hash: &str) -> Result<Option<i64>, StoreError> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT locked_until FROM login_throttle WHERE login_hash = $1")
                .bind(login_hash)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|(until,)| until))
    }

    /// Records a failed sign-in for a login name and returns the count of
    /// consecutive failures; `lock_for(count)` gives the lock length in ms.
    pub async fn record_login_failure(
        &self,
        login_hash: &str,
        now: i64,
        lock_for: impl Fn(i64) -> Option<i64>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool().begin().await?;
        // One upsert: concurrent first failures for a new name cannot race.
        sqlx::query(
            "INSERT INTO login_throttle (login_hash, failures, locked_until, updated_at) \
             VALUES ($1, 1, NULL, $2) \
             ON CONFLICT (login_hash) DO UPDATE SET failures = login_throttle.failures + 1, updated_at = $2",
        )
        .bind(login_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let (count,): (i64,) =
            sqlx::query_as("SELECT failures FROM login_throttle WHERE login_hash = $1")
                .bind(login_hash)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(ms) = lock_for(count) {
            sqlx::query("UPDATE login_throttle SET locked_until = $2 WHERE login_hash = $1")
                .bind(login_hash)
                .bind(now + ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// Clears a login name's failures after a successful sign-in.
    pub async fn record_login_success(&self, login_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_throttle WHERE login_hash = $1")
            .bind(login_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The user's role in an org, if a member.
    pub async fn org_role(
        &self,
        org_id: &str,
        user_id: &str,
    ) -> Result<Option<OrgRole>, StoreError> {
        let role: Option<(String,)> =
            sqlx::query_as("SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2")
                .bind(org_id)
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?;
        role.map(|(r,)| {
            r.parse()
                .map_err(|e| StoreError::Corrupt(format!("org_members.role: {e}")))
        })
        .transpose()
    }

    /// Creates an API key, atomically within the owner's plan limit.
    /// `QuotaExceeded` when the limit is reached.
    pub async fn create_api_key(&self, now: i64, new: NewApiKey) -> Result<ApiKey, StoreError> {
        let id = new_id();
        let scopes: Vec<&str> = new.scopes.iter().map(|s| s.as_str()).collect();
        let mut tx = self.pool().begin().await?;
        // The counter update takes the user's row lock (PostgreSQL) or the
        // write lock (SQLite), so concurrent creations cannot overshoot.
        let counted = sqlx::query(
            "UPDATE users SET api_key_count = api_key_count + 1 \
             WHERE id = $1 AND ($2 < 0 OR api_key_count < $2)",
        )
        .bind(&new.user_id)
        .bind(new.max_keys.unwrap_or(-1))
        .execute(&mut *tx)
        .await?;
        if counted.rows_affected() == 0 {
            return Err(StoreError::QuotaExceeded("API keys".into()));
        }
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, org_id, name, prefix, key_hash, scopes, is_active, \
             expires_at, last_used_at, usage_count, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, NULL, 0, $9)",
        )
        .bind(&id)
        .bind(&new.user_id)
        .bind(&new.org_id)
        .bind(&new.name)
        .bind(&new.prefix)
        .bind(&new.key_hash)
        .bind(scopes.join(" "))
        .bind(new.expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.api_key(&new.user_id, &id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("api key vanished after insert".into()))
    }

    /// One of the user's keys.
    pub async fn api_key(&self, user_id: &str, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND user_id = $2"
        ));
        let row = sqlx::query(sql)
            .bind(id)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// The user's keys, newest first.
    pub async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
        ));
        let rows = sqlx::query(sql)
            .bind(user_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// The key with this hash. Inactive and expired keys are returned too;
    /// the caller decides (and says why).
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ));
        let row = sqlx::query(sql)
            .bind(key_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Adds `uses` to a key's usage count and moves `last_used_at` forward.
    pub async fn add_api_key_usage(
        &self,
        id: &str,
        uses: i64,
        last_used_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET usage_count = usage_count + $2, \
             last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $3 THEN $3 ELSE last_used_at END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(uses)
        .bind(last_used_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Turns one of the user's keys on or off; `false` when there is no such key.
    pub async fn set_api_key_active(
        &self,
        user_id: &str,
        id: &str,
        active: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_keys SET is_active = $3 WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .bind(i64::from(active))
            .execute(self.pool())
            .await?;
        self.auth_changed().await;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes one of the user's keys; `false` when there is no such key.
    pub async fn delete_api_key(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            sqlx::query("UPDATE users SET api_key_count = api_key_count - 1 WHERE id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.auth_changed().await;
        Ok(done.rows_affected() == 1)
    }

    /// Stores a new refresh token (by hash) in `family_id`.
    pub async fn insert_refresh_token(
        &self,
        now: i64,
        user_id: &str,
        family_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at, used_at, revoked_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6)",
        )
        .bind(new_id())
        .bind(family_id)
        .bind(user_id)
        .bind(token_hash)
        .bind(expires_at)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Spends a refresh token. A token can be spent once: the conditional
    /// update makes two concurrent uses yield one `Valid` and one `Reused`.
    pub async fn use_refresh_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<RefreshUse, StoreError> {
        let spent: Option<(String, String)> = sqlx::query_as(
            "UPDATE refresh_tokens SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
             RETURNING user_id, family_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        if let Some((user_id, family_id)) = spent {
            return Ok(RefreshUse::Valid { user_id, family_id });
        }
        let known: Option<(String, Option<i64>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT family_id, used_at, revoked_at, expires_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        match known {
            Some((_, _, Some(_), _)) => Ok(RefreshUse::Revoked),
            Some((family_id, Some(_), None, _)) => {
                self.revoke_refresh_family(&family_id, now).await?;
                Ok(RefreshUse::Reused)
            }
            _ => Ok(RefreshUse::Invalid),
        }
    }

    /// Revokes every token of a family (logout, or reuse detected), and
    /// with them the access tokens of that sign-in (see [`Store::sign_in_active`]).
    pub async fn revoke_refresh_family(&self, family_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
        )
        .bind(family_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        self.auth_changed().await;
        Ok(())
    }

    /// Whether the sign-in `family_id` (a refresh token family) still
    /// stands: some token of it is not revoked. Access tokens name their
    /// sign-in, so signing out ends them at once rather than at expiry.
    pub async fn sign_in_active(&self, family_id: &str) -> Result<bool, StoreError> {
        let found: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL LIMIT 1",
        )
        .bind(family_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(found.is_some())
    }

    /// The family of a token, for logout.
    pub async fn refresh_family_of(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// The key that signs access tokens, created at first use and shared by
    /// every replica through the database.
    pub async fn token_signing_key(
        &self,
        fresh: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        sqlx::query("UPDATE instance SET token_signing_key = $1 WHERE token_signing_key IS NULL")
            .bind(fresh())
            .execute(self.pool())
            .await?;
        let (key,): (Option<String>,) = sqlx::query_as(
            "SELECT token_signing_key FROM instance ORDER BY created_at, id LIMIT 1",
        )
        .fetch_one(self.pool())
        .await?;
        key.ok_or_else(|| StoreError::Corrupt("instance has no token signing key".into()))
    }
}

fn conflict_or(error: sqlx::Error, message: &str) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(message.into())
        }
        _ => StoreError::Query(error),
    }
}
