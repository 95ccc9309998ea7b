//! Browser sessions, looked up by the SHA-256 of the cookie's token.

use corral_core::id::new_id;

use crate::{Store, StoreError};

impl Store {
    /// Starts a session for `user_id` until `expires_at` (Unix ms).
    pub async fn create_session(
        &self,
        now: i64,
        user_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new_id())
        .bind(user_id)
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The user and expiry of the live session with this token hash.
    pub async fn session_by_hash(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT user_id, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// Ends the session with this token hash (signing out); idempotent.
    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        self.auth_changed().await;
        Ok(())
    }
}
