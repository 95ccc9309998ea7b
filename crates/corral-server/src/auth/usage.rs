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
                // A counter only this map holds has no cache entry left to
                // count into it (new ones come through `counter`, under
                // this lock): forget it, unless a last request counted
                // into it after the swap (the fence pairs with the release
                // of that request's reference, so its count is seen).
                keys.retain(|_, key| {
                    Arc::strong_count(key) > 1 || {
                        std::sync::atomic::fence(Ordering::Acquire);
                        key.uses.load(Ordering::Relaxed) > 0
                    }
                });
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

/// Pending daily counts per subject, then per (metric, day). Nested so that
/// counting for a subject already pending looks it up by `&str`, with no
/// allocation.
#[derive(Debug, Default)]
pub struct DailyBuffer {
    pending: Mutex<HashMap<String, DailyCounts>>,
}

/// One subject's pending counts by (metric, day).
type DailyCounts = HashMap<(&'static str, i64), i64>;

impl DailyBuffer {
    /// Notes one unit of `metric` for `subject` on `day`.
    pub fn record(&self, subject: &str, metric: &'static str, day: i64) {
        if let Ok(mut pending) = self.pending.lock() {
            let counts = match pending.get_mut(subject) {
                Some(counts) => counts,
                None => pending.entry(subject.to_owned()).or_default(),
            };
            *counts.entry((metric, day)).or_insert(0) += 1;
        }
    }

    /// Writes everything pending. On failure the unwritten counts are put back.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let batch: Vec<((String, &'static str, i64), i64)> = match self.pending.lock() {
            Ok(mut pending) => pending
                .drain()
                .flat_map(|(subject, counts)| {
                    counts
                        .into_iter()
                        .map(move |((metric, day), count)| ((subject.clone(), metric, day), count))
                })
                .collect(),
            Err(_) => return Ok(()),
        };
        let mut batch = batch.into_iter();
        while let Some(((subject, metric, day), count)) = batch.next() {
            if let Err(error) = store.add_daily(&subject, metric, day, count).await {
                if let Ok(mut pending) = self.pending.lock() {
                    let first = ((subject, metric, day), count);
                    for ((subject, metric, day), count) in std::iter::once(first).chain(batch) {
                        *pending
                            .entry(subject)
                            .or_default()
                            .entry((metric, day))
                            .or_insert(0) += count;
                    }
                }
                return Err(error);
            }
        }
        Ok(())
    }
}
