//! API-key usage (count, last use) gathered in memory and written in batches.
//!
//! Writing it on every request would put every API-key call behind the
//! database's write lock (SQLite has one writer); measured, that held keyed
//! requests to 0.03× of `/health`. Usage is statistics, so a few seconds of
//! delay is fine; it is flushed on a timer, before keys are listed, and at
//! shutdown. Whether a key is valid never waits for this: see the auth
//! cache, which drops a revoked or disabled key at once.
//!
//! [`DailyBuffer`] does the same for daily counts that have no limit to
//! enforce (plans with unlimited API calls): counted for usage reports,
//! without a write per request. Limited quotas never go through it; they
//! are taken atomically in the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use corral_store::{Store, StoreError};

/// One key's uses since the last flush, counted without a lock: the auth
/// cache's entry for the key holds it, so a request adds to it directly.
#[derive(Debug, Default)]
pub struct KeyUse {
    uses: AtomicI64,
    last: AtomicI64,
}

impl KeyUse {
    /// Notes one use at `now`.
    pub fn record(&self, now: i64) {
        self.uses.fetch_add(1, Ordering::Relaxed);
        self.last.fetch_max(now, Ordering::Relaxed);
    }
}

/// Pending usage per key id; see [`KeyUse`].
#[derive(Debug, Default)]
pub struct UsageBuffer {
    keys: Mutex<HashMap<String, Arc<KeyUse>>>,
}

impl UsageBuffer {
    /// The counter of `key_id` (for the auth cache's entry of the key).
    pub fn counter(&self, key_id: &str) -> Arc<KeyUse> {
        let Ok(mut keys) = self.keys.lock() else {
            // Poisoned: count into a counter no flush sees rather than fail.
            return Arc::default();
        };
        keys.entry(key_id.to_owned()).or_default().clone()
    }

    /// Writes everything pending. On failure the unwritten usage is put back.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let batch: Vec<(String, i64, i64)> = match self.keys.lock() {
            Ok(mut keys) => {
                let batch = keys
                    .iter()
                    .filter_map(|(id, key)| {
                        let uses = key.uses.swap(0, Ordering::Relaxed);
                        (uses > 0).then(|| (id.clone(), uses, key.last.load(Ordering::Relaxed)))
                    })
                    .collect();
                keys.retain(|_, key| still_counted(key, |key| key.uses.load(Ordering::Relaxed)));
                batch
            }
            Err(_) => return Ok(()),
        };
        let mut batch = batch.into_iter();
        while let Some((id, uses, last)) = batch.next() {
            if let Err(error) = store.add_api_key_usage(&id, uses, last).await {
                for (id, uses, last) in std::iter::once((id, uses, last)).chain(batch) {
                    let key = self.counter(&id);
                    key.uses.fetch_add(uses, Ordering::Relaxed);
                    key.last.fetch_max(last, Ordering::Relaxed);
                }
                return Err(error);
            }
        }
        Ok(())
    }
}

/// Whether a counter is kept after a flush. One only the buffer holds has
/// no cache entry left to count into it (new ones come through the
/// buffer's `counter`, under its lock): it is forgotten, unless a last
/// request counted into it after the flush took its count (the fence pairs
/// with the release of that request's reference, so its count is seen).
fn still_counted<T>(counter: &Arc<T>, pending: impl Fn(&T) -> i64) -> bool {
    Arc::strong_count(counter) > 1 || {
        std::sync::atomic::fence(Ordering::Acquire);
        pending(counter) > 0
    }
}

/// Pending daily counts per subject, then per (metric, day). Nested so that
/// counting for a subject already pending looks it up by `&str`, with no
/// allocation. A count is an atomic counter, so that the auth cache's
/// entry of an API key can hold the counter of its account's API calls
/// today and count into it without the lock (see `cache::Cached::api_calls`).
#[derive(Debug, Default)]
pub struct DailyBuffer {
    pending: Mutex<HashMap<String, DailyCounts>>,
}

/// One subject's pending counts by (metric, day).
type DailyCounts = HashMap<(&'static str, i64), Arc<AtomicI64>>;

impl DailyBuffer {
    /// The counter of `metric` for `subject` on `day`.
    pub fn counter(&self, subject: &str, metric: &'static str, day: i64) -> Arc<AtomicI64> {
        let Ok(mut pending) = self.pending.lock() else {
            // Poisoned: count into a counter no flush sees rather than fail.
            return Arc::default();
        };
        let counts = match pending.get_mut(subject) {
            Some(counts) => counts,
            None => pending.entry(subject.to_owned()).or_default(),
        };
        counts.entry((metric, day)).or_default().clone()
    }

    /// Notes one unit of `metric` for `subject` on `day`.
    pub fn record(&self, subject: &str, metric: &'static str, day: i64) {
        self.counter(subject, metric, day)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Writes everything pending. On failure the unwritten counts are put back.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let batch: Vec<(String, &'static str, i64, i64)> = match self.pending.lock() {
            Ok(mut pending) => {
                let mut batch = Vec::new();
                for (subject, counts) in pending.iter() {
                    for (&(metric, day), count) in counts {
                        let count = count.swap(0, Ordering::Relaxed);
                        if count > 0 {
                            batch.push((subject.clone(), metric, day, count));
                        }
                    }
                }
                pending.retain(|_, counts| {
                    counts.retain(|_, count| still_counted(count, |c| c.load(Ordering::Relaxed)));
                    !counts.is_empty()
                });
                batch
            }
            Err(_) => return Ok(()),
        };
        let mut batch = batch.into_iter();
        while let Some((subject, metric, day, count)) = batch.next() {
            if let Err(error) = store.add_daily(&subject, metric, day, count).await {
                let first = (subject, metric, day, count);
                for (subject, metric, day, count) in std::iter::once(first).chain(batch) {
                    self.counter(&subject, metric, day)
                        .fetch_add(count, Ordering::Relaxed);
                }
                return Err(error);
            }
        }
        Ok(())
    }
}
