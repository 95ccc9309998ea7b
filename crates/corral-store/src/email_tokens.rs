//! Single-use tokens mailed to users: email verification and password reset.

use corral_core::id::new_id;

use crate::{Store, StoreError};

/// What an email token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Proves the user reads the mail of their account's address.
    VerifyEmail,
    /// Lets the user choose a new password.
    PasswordReset,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::VerifyEmail => "verify_email",
            TokenPurpose::PasswordReset => "password_reset",
        }
    }
}

impl Store {
    /// Stores a new token (by hash) for `user_id`, sent to `email`; earlier
    /// unused tokens of the same purpose stop working, so only the latest
    /// mail counts.
    pub async fn create_email_token(
        &self,
        now: i64,
        user_id: &str,
        purpose: TokenPurpose,
        token_hash: &str,
        email: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE email_tokens SET used_at = $3 \
             WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        )
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO email_tokens (id, user_id, purpose, token_hash, email, created_at, expires_at, used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(new_id())
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(token_hash)
        .bind(email)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Consumes a live token: one statement, so of two concurrent uses only
    /// one succeeds. Returns the user id and the address the token was sent
    /// to, or `None` for an unknown, used, expired or wrong-purpose token.
    pub async fn consume_email_token(
        &self,
        now: i64,
        purpose: TokenPurpose,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "UPDATE email_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
             RETURNING user_id, email",
        )
        .bind(now)
        .bind(token_hash)
        .bind(purpose.as_str())
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// Who a live token belongs to, without consuming it.
    pub async fn email_token_owner(
        &self,
        now: i64,
        purpose: TokenPurpose,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT user_id, email FROM email_tokens \
             WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(token_hash)
        .bind(purpose.as_str())
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// Marks `user_id`'s address verified if it is still `email` (an address
    /// changed since the mail was sent stays unverified). `false` otherwise.
    pub async fn mark_email_verified(
        &self,
        now: i64,
        user_id: &str,
        email: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET email_verified = 1, updated_at = $3 WHERE id = $1 AND email = $2",
        )
        .bind(user_id)
        .bind(email)
        .bind(now)
        .execute(self.pool())
        .await?;
        self.auth_changed().await;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every sign-in of a user without touching the password: refresh
    /// tokens revoked, browser sessions deleted.
    pub async fn end_all_sessions(&self, now: i64, user_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        end_sessions_in(&mut tx, now, user_id).await?;
        tx.commit().await?;
        self.auth_changed().await;
        Ok(())
    }
}

/// Revokes `user_id`'s refresh tokens and deletes their browser sessions,
/// inside `tx`.
pub(crate) async fn end_sessions_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    now: i64,
    user_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
