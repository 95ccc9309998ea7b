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
use std::sync::Mutex;

use corral_store::{Store, StoreError};

/// Pending usage per key id: (uses, last use in Unix ms).
#[derive(Debug, Default)]
pub struct UsageBuffer {
    pending: Mutex<HashMap<String, (i64, i64)>>,
}

impl UsageBuffer {
    /// Notes one use of `key_id` at `now`.
    pub fn record(&self, key_id: &str, now: i64) {
        if let Ok(mut pending) = self.pending.lock() {
            // Look up before inserting: a key seen since the last flush
            // costs no allocation.
            let entry = match pending.get_mut(key_id) {
                Some(entry) => entry,
                None => pending.entry(key_id.to_owned()).or_insert((0, now)),
            };
            entry.0 += 1;
            entry.1 = entry.1.max(now);
        }
    }

    /// Writes everything pending. On failure the unwritten usage is put back.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let batch: Vec<(String, (i64, i64))> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(()),
        };
        let mut batch = batch.into_iter();
        while let Some((id, (uses, last))) = batch.next() {
            if let Err(error) = store.add_api_key_usage(&id, uses, last).await {
                if let Ok(mut pending) = self.pending.lock() {
                    for (id, (uses, last)) in std::iter::once((id, (uses, last))).chain(batch) {
                        let entry = pending.entry(id).or_insert((0, last));
                        entry.0 += uses;
                        entry.1 = entry.1.max(last);
                    }
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
