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
//!
//! Entries are keyed by a SHA-256 over the credential and the requested org
//! ([`CacheKey`]), so the cache holds no secret, a lookup allocates nothing,
//! and only a credential that authenticated once (the same bytes) can hit.

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use corral_core::auth::{Credential, Principal};
use corral_store::User;

use crate::limits::{Counted, Limiter, Subject};

/// How long an entry may be used at most, even with no change seen (ms).
const TTL_MS: i64 = 10_000;
/// Entries kept at most; the cache empties itself when full (cheap, rare).
const CAPACITY: usize = 10_000;

/// Which kind of credential a [`CacheKey`] was made from; part of the hash,
/// so the same bytes presented as different kinds never share an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An API key (`crl_…`).
    ApiKey,
    /// A JWT access token.
    AccessToken,
    /// A browser session token.
    Session,
}

/// SHA-256 over (kind, credential, requested org): what entries are found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey([u8; 32]);

/// Hashes a key by its first eight bytes: they already are SHA-256 output,
/// so hashing them again (SipHash, the map's default) buys nothing. Only
/// credentials that authenticated are ever stored, so nobody can fill the
/// map with chosen keys.
impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut prefix = [0; 8];
        prefix.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(prefix));
    }
}

/// A hasher that passes on the one `u64` a [`CacheKey`] writes.
#[derive(Debug, Default)]
struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by CacheKey; fold anything else in rather than drop it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type PrefixHash = std::hash::BuildHasherDefault<PrefixHasher>;

impl CacheKey {
    /// The key of `credential` of `kind` acting in `org` (`None`: the
    /// credential's own org).
    pub fn new(kind: Kind, credential: &[u8], org: Option<&str>) -> CacheKey {
        let mut hash = Sha256::new();
        hash.update([kind as u8]);
        hash.update(credential);
        // 0xFF never occurs in UTF-8, so (credential, org) splits one way only.
        hash.update([0xFF]);
        if let Some(org) = org {
            hash.update([1]);
            hash.update(org.as_bytes());
        }
        CacheKey(hash.finalize().into())
    }
}

/// Who a credential belongs to, as of `epoch`.
#[derive(Debug)]
pub struct Cached {
    /// The caller.
    pub principal: Principal,
    /// The caller's account.
    pub user: Arc<User>,
    /// When the credential expires (Unix ms): an API key's expiry, an access
    /// token's `exp`, a browser session's end.
    pub expires_at: Option<i64>,
    /// `GET /users/me`'s body for this account, rendered on first use: the
    /// most frequent authenticated request then copies bytes instead of
    /// formatting the account anew. As fresh as `user`, with which it goes.
    pub me_body: Arc<std::sync::OnceLock<bytes::Bytes>>,
    /// An API key's usage counter (see `usage::KeyUse`): a request counts
    /// into it without a lock.
    pub key_use: Option<Arc<super::usage::KeyUse>>,
    /// An API key's account's API calls on one day (UTC day number), when
    /// its plan has no daily limit for them (only counted, for the usage
    /// report): a request on that day counts into it without a lock. A
    /// limited plan's calls are taken in the database instead.
    pub api_calls: Option<(i64, Arc<AtomicI64>)>,
    /// The caller's rate-limit subjects, formatted once, with their
    /// in-process counters: `user:ID`, and `key:ID` for an API key.
    pub user_limit: Counted,
    /// See `user_limit`.
    pub key_limit: Option<Counted>,
    epoch: u64,
    stored_at: i64,
}

/// What an authentication found, for [`AuthCache::put`].
#[derive(Debug)]
pub struct Authenticated {
    /// The caller.
    pub principal: Principal,
    /// The caller's account.
    pub user: User,
    /// When the credential expires (Unix ms).
    pub expires_at: Option<i64>,
    /// An API key's usage counter.
    pub key_use: Option<Arc<super::usage::KeyUse>>,
    /// An API key's account's uncapped API calls on a day; see [`Cached::api_calls`].
    pub api_calls: Option<(i64, Arc<AtomicI64>)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<CacheKey, Arc<Cached>, PrefixHash>>,
}

impl AuthCache {
    /// The entry for `key` if it is from the current epoch and fresh.
    pub fn get(&self, key: &CacheKey, epoch: u64, now: i64) -> Option<Arc<Cached>> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|e| e.epoch == epoch && now - e.stored_at < TTL_MS)
            .cloned()
    }

    /// Remembers a successful authentication made at `epoch` (read before
    /// the lookups that produced it, so a change racing the lookups leaves
    /// the entry already stale), and returns the entry.
    /// The entry's rate-limit counters come from `limiter`.
    pub fn put(
        &self,
        key: CacheKey,
        epoch: u64,
        now: i64,
        found: Authenticated,
        limiter: &Limiter,
    ) -> Arc<Cached> {
        let user_limit = limiter.counted(Subject::new("user", &found.principal.user_id), now);
        let key_limit = match &found.principal.credential {
            Credential::ApiKey { key_id, .. } => {
                Some(limiter.counted(Subject::new("key", key_id), now))
            }
            Credential::Session => None,
        };
        let entry = Arc::new(Cached {
            principal: found.principal,
            user: Arc::new(found.user),
            expires_at: found.expires_at,
            me_body: Arc::default(),
            key_use: found.key_use,
            api_calls: found.api_calls,
            user_limit,
            key_limit,
            epoch,
            stored_at: now,
        });
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(key, entry.clone());
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_kinds_credentials_and_orgs() {
        let key = |kind, credential: &str, org| CacheKey::new(kind, credential.as_bytes(), org);
        let base = key(Kind::AccessToken, "token", None);
        assert_eq!(base, key(Kind::AccessToken, "token", None));
        for other in [
            key(Kind::ApiKey, "token", None),
            key(Kind::Session, "token", None),
            key(Kind::AccessToken, "token2", None),
            key(Kind::AccessToken, "token", Some("")),
            key(Kind::AccessToken, "token", Some("org")),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(
            key(Kind::AccessToken, "ab", Some("c")),
            key(Kind::AccessToken, "a", Some("bc"))
        );
    }
}
