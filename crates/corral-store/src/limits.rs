//! Counters behind rate limits and daily plan quotas.
//!
//! Both are single atomic upserts, so concurrent requests on any number of
//! replicas count exactly: `INSERT … ON CONFLICT DO UPDATE … RETURNING` is
//! one statement on SQLite (≥ 3.35) and PostgreSQL alike.

use crate::{Store, StoreError};

impl Store {
    /// Adds one hit to `name`'s window starting at `window_start` (Unix ms)
    /// and returns the window's count including this hit.
    pub async fn rate_hit(
        &self,
        name: &str,
        window_start: i64,
        expires_at: i64,
    ) -> Result<i64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "INSERT INTO rate_windows (name, window_start, count, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (name, window_start) DO UPDATE SET count = rate_windows.count + 1 \
             RETURNING count",
        )
        .bind(name)
        .bind(window_start)
        .bind(expires_at)
        .fetch_one(self.pool())
        .await?;
        Ok(count)
    }

    /// Deletes rate windows that ended before `now`; returns how many.
    pub async fn prune_rate_windows(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM rate_windows WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Takes one unit of `subject`'s daily `metric` for `day` (days since the
    /// Unix epoch, UTC) if that stays within `limit` (`None`: unlimited).
    /// Returns the count after taking, or `None` when the quota is used up,
    /// in which case nothing was taken. Atomic: concurrent callers can never
    /// take more than `limit` in total.
    pub async fn take_daily(
        &self,
        subject: &str,
        metric: &str,
        day: i64,
        limit: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        if limit.is_some_and(|l| l <= 0) {
            return Ok(None);
        }
        let count: Option<i64> = sqlx::query_scalar(
            "INSERT INTO usage_daily (subject, metric, day, count) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (subject, metric, day) DO UPDATE SET count = usage_daily.count + 1 \
             WHERE $4 < 0 OR usage_daily.count < $4 \
             RETURNING count",
        )
        .bind(subject)
        .bind(metric)
        .bind(day)
        .bind(limit.unwrap_or(-1))
        .fetch_optional(self.pool())
        .await?;
        Ok(count)
    }

    /// Adds `count` to `subject`'s daily `metric` with no limit (batched
    /// counts of unlimited quotas).
    pub async fn add_daily(
        &self,
        subject: &str,
        metric: &str,
        day: i64,
        count: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO usage_daily (subject, metric, day, count) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subject, metric, day) DO UPDATE SET count = usage_daily.count + $4",
        )
        .bind(subject)
        .bind(metric)
        .bind(day)
        .bind(count)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes daily counts of days before `day` (quotas only ever read
    /// today's row; older rows are usage history); returns how many.
    pub async fn prune_daily_usage(&self, before_day: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM usage_daily WHERE day < $1")
            .bind(before_day)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// `subject`'s counts for `day`, by metric.
    pub async fn daily_usage(
        &self,
        subject: &str,
        day: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT metric, count FROM usage_daily WHERE subject = $1 AND day = $2 ORDER BY metric",
        )
        .bind(subject)
        .bind(day)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
