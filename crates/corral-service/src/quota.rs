//! Daily plan quotas: taken atomically in the database before the work they
//! pay for, refused with 429 `quota_exceeded` saying when they reset.

use corral_core::clock::rfc3339;
use corral_store::User;

use crate::{Service, ServiceError};

/// A day in milliseconds; quotas reset at 00:00 UTC.
pub const DAY_MS: i64 = 86_400_000;

/// A quota counted per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daily {
    /// Code executions.
    Executions,
    /// API requests authenticated with an API key.
    ApiCalls,
}

impl Daily {
    /// Every daily quota.
    pub const ALL: [Daily; 2] = [Daily::Executions, Daily::ApiCalls];

    /// The metric's name in the store and the API.
    pub fn name(self) -> &'static str {
        match self {
            Daily::Executions => "executions",
            Daily::ApiCalls => "api_calls",
        }
    }

    /// The limit of `user`'s plan (`None`: unlimited, or no such plan).
    pub fn limit(self, state: &Service, user: &User) -> Option<i64> {
        let plan = state.plans.get(&user.plan_id)?;
        match self {
            Daily::Executions => plan.executions_per_day,
            Daily::ApiCalls => plan.api_calls_per_day,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Daily::Executions => "executions",
            Daily::ApiCalls => "API requests with keys",
        }
    }
}

/// The UTC day (days since the Unix epoch) of `now_ms`.
pub fn day_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

/// [`take`] without waiting, when the plan has no limit for `quota` (the
/// unit is only counted, in memory); `None` when the database must be asked.
pub fn take_now(state: &Service, user: &User, quota: Daily, now: i64) -> Option<()> {
    if quota.limit(state, user).is_some() {
        return None;
    }
    state
        .daily_usage
        .record(&user.id, quota.name(), day_of(now));
    Some(())
}

/// The counter of `quota` for `user` today (`now`'s day), with the day,
/// when the plan has no limit for it: what an auth cache entry counts
/// into (see `auth::cache::Cached::api_calls`). `None` for a limited plan.
pub fn uncapped_counter(
    state: &Service,
    user: &User,
    quota: Daily,
    now: i64,
) -> Option<(i64, std::sync::Arc<std::sync::atomic::AtomicI64>)> {
    if quota.limit(state, user).is_some() {
        return None;
    }
    let day = day_of(now);
    Some((day, state.daily_usage.counter(&user.id, quota.name(), day)))
}

/// Takes one unit of `quota` for `user`, or refuses with 429.
pub async fn take(
    state: &Service,
    user: &User,
    quota: Daily,
    now: i64,
) -> Result<(), ServiceError> {
    let limit = quota.limit(state, user);
    let day = day_of(now);
    let Some(_) = limit else {
        // Unlimited: count for the usage report, batched; nothing to enforce.
        state.daily_usage.record(&user.id, quota.name(), day);
        return Ok(());
    };
    if state
        .store
        .take_daily(&user.id, quota.name(), day, limit)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let resets = (day + 1) * DAY_MS;
    Err(ServiceError::Quota {
        detail: format!(
            "your plan allows {} {} a day; the quota resets at {}",
            limit.unwrap_or(0),
            quota.describe(),
            rfc3339(resets)
        ),
        resets_at: Some(rfc3339(resets)),
        retry_after_secs: Some(u64::try_from(resets - now).unwrap_or(0).div_ceil(1000)),
    })
}

/// Gives back one unit of `quota` that `user_id` was charged on the day of
/// `taken_at` (Unix ms), for work the platform failed to do.
pub async fn refund(
    state: &Service,
    user_id: &str,
    quota: Daily,
    taken_at: i64,
) -> Result<(), corral_store::StoreError> {
    state
        .store
        .add_daily(user_id, quota.name(), day_of(taken_at), -1)
        .await
}
