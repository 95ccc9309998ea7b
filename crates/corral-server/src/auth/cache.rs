//! A short-lived cache of authenticated callers, so a request with a known
//! API key or access token costs no database round trip.
//!
//! Correctness rests on the store's auth epoch ([`corral_store::Store::auth_epoch`]):
//! every write that can change who a caller is or what they may do (key
//! disabled or deleted, user disabled, role or plan changed, membership
//! changed, org deleted) moves the epoch, and an entry from an older epoch
//! is never used. On PostgreSQL other replicas' writes move it too, through
//! `LISTEN/NOTIFY`; the TTL only bounds staleness if a notification is lost.
//! Failures (unknown keys, non-members) are never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use corral_core::auth::Principal;
use corral_store::User;

/// How long an entry may be used at most, even with no change seen (ms).
const TTL_MS: i64 = 10_000;
/// Entries kept at most; the cache empties itself when full (cheap, rare).
const CAPACITY: usize = 10_000;

/// Who a credential belongs to, as of `epoch`.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The caller.
    pub principal: Principal,
    /// The caller's account.
    pub user: Arc<User>,
    /// When the credential expires (Unix ms): an API key's expiry, a
    /// browser session's end.
    pub expires_at: Option<i64>,
    epoch: u64,
    stored_at: i64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<String, Cached>>,
}

impl AuthCache {
    /// The entry for `key` if it is from the current epoch and fresh.
    pub fn get(&self, key: &str, epoch: u64, now: i64) -> Option<Cached> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|e| e.epoch == epoch && now - e.stored_at < TTL_MS)
            .cloned()
    }

    /// Remembers a successful authentication made at `epoch` (read before
    /// the lookups that produced it, so a change racing the lookups leaves
    /// the entry already stale), and returns the entry.
    pub fn put(
        &self,
        key: String,
        epoch: u64,
        now: i64,
        principal: Principal,
        user: User,
        expires_at: Option<i64>,
    ) -> Cached {
        let entry = Cached {
            principal,
            user: Arc::new(user),
            expires_at,
            epoch,
            stored_at: now,
        };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(key, entry.clone());
        }
        entry
    }
}
