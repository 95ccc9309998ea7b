//! Rate limits (requests per minute per client IP, user and API key) and the
//! sign-in lockout state, on one of three counter backends chosen by
//! `[limits]` config:
//!
//! - `memory`: this process only. Exact for one replica, and what SQLite
//!   deployments get by default (SQLite means one replica).
//! - `database`: an atomic upsert per hit in the store, shared by every
//!   replica; the default on PostgreSQL.
//! - `redis`: `INCR` in a `MULTI` per hit; sign-in lockout state moves to
//!   Redis too.
//!
//! Windows are fixed minutes. A counter backend that fails lets the request
//! through (logged): an outage of the limiter must not take the API down.
//! Lockout failures are not ignored: sign-in answers 503 instead.
//!
//! Daily plan quotas are not here: they are billing data, always kept in the
//! database (`Store::take_daily`), whatever this backend is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::ServiceError;
use crate::config::{LimitsBackend, LimitsConfig};
use corral_store::{Backend, Store, StoreError};

/// Length of a rate-limit window.
const WINDOW_MS: i64 = 60_000;
/// How long lockout state outlives the last failure in Redis.
const LOCKOUT_TTL_MS: i64 = 24 * 3_600_000;
/// Memory-backend entries kept before old windows are swept.
const MEMORY_SWEEP_AT: usize = 50_000;

/// The counter name of a rate-limited subject: `kind:id` (`ip:…`, `user:…`,
/// `key:…`). Built on the stack when it fits (ids are UUIDs, addresses at
/// most 45 characters), so naming the subjects of a request allocates
/// nothing.
pub struct Subject {
    inline: arrayvec::ArrayString<SUBJECT_INLINE>,
    /// Only for a subject longer than `SUBJECT_INLINE`.
    long: Option<String>,
}

const SUBJECT_INLINE: usize = 96;

impl Subject {
    /// `kind:id`, with `id` written by its `Display`.
    pub fn new(kind: &str, id: impl std::fmt::Display) -> Subject {
        use std::fmt::Write;
        let mut subject = Subject {
            inline: arrayvec::ArrayString::new(),
            long: None,
        };
        // Writing to a Subject cannot fail (it spills to the heap).
        let _ = write!(subject, "{kind}:{id}");
        subject
    }

    /// `ip:ADDRESS`, in the address's usual text form. IPv4 is written by
    /// hand: `Display` for addresses goes through the formatter per octet,
    /// which costs more than the counting it names.
    pub fn ip(addr: std::net::IpAddr) -> Subject {
        let std::net::IpAddr::V4(v4) = addr else {
            return Subject::new("ip", addr);
        };
        let mut inline = arrayvec::ArrayString::new();
        // At most 18 characters ("ip:255.255.255.255"), far within the room.
        let mut push = |digit: u8| {
            let _ = inline.try_push(char::from(digit));
        };
        for byte in *b"ip:" {
            push(byte);
        }
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                push(b'.');
            }
            if octet >= 100 {
                push(b'0' + octet / 100);
            }
            if octet >= 10 {
                push(b'0' + octet / 10 % 10);
            }
            push(b'0' + octet % 10);
        }
        Subject { inline, long: None }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        match &self.long {
            Some(long) => long,
            None => &self.inline,
        }
    }
}

impl std::fmt::Write for Subject {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if let Some(long) = &mut self.long {
            long.push_str(s);
        } else if self.inline.try_push_str(s).is_err() {
            let mut long = String::with_capacity(self.inline.len() + s.len());
            long.push_str(&self.inline);
            long.push_str(s);
            self.long = Some(long);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Subject").field(&self.as_str()).finish()
    }
}

impl std::ops::Deref for Subject {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// Allows a request counted `count`th in its window, or refuses it with 429.
fn verdict(
    subject: &str,
    count: Result<i64, anyhow::Error>,
    per_minute: u32,
    window: i64,
    now: i64,
) -> Result<(), ServiceError> {
    let count = match count {
        Ok(count) => count,
        Err(error) => {
            tracing::warn!(%error, subject, "rate-limit counter failed; letting the request through");
            return Ok(());
        }
    };
    if count <= i64::from(per_minute) {
        return Ok(());
    }
    let secs = u64::try_from(window + WINDOW_MS - now)
        .unwrap_or(0)
        .div_ceil(1000)
        .max(1);
    let what = subject.split(':').next().unwrap_or("client");
    Err(ServiceError::RateLimited {
        detail: format!("too many requests for this {what}: at most {per_minute} a minute"),
        retry_after_secs: secs,
    })
}

/// One subject's requests in the current window of the in-process limiter:
/// the window (minutes since the epoch) and the count, packed in one word
/// so a hit is one atomic update. Shared by the map and by whoever counts
/// the subject often (an auth cache entry keeps its user's and key's), who
/// then counts without the map's lock or a lookup.
#[derive(Debug, Default)]
pub struct WindowCounter(AtomicU64);

impl WindowCounter {
    /// Counts one hit in the window starting at `window` (Unix ms); the
    /// count in that window, this hit included.
    fn hit(&self, window: i64) -> i64 {
        let minute = u64::try_from(window / WINDOW_MS).unwrap_or(0) & u64::from(u32::MAX);
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = if current >> 32 == minute {
                // Saturates rather than wrapping into the window bits.
                current + u64::from(current & u64::from(u32::MAX) < u64::from(u32::MAX))
            } else {
                minute << 32 | 1
            };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return i64::from(
                        u32::try_from(next & u64::from(u32::MAX)).unwrap_or(u32::MAX),
                    );
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Whether the counter's window starts before `window` (Unix ms).
    fn is_older_than(&self, window: i64) -> bool {
        let minute = u64::try_from(window / WINDOW_MS).unwrap_or(0);
        self.0.load(Ordering::Relaxed) >> 32 < minute
    }
}

/// A rate-limited subject with its in-process counter, when the limiter
/// keeps its counters in memory (see [`Limiter::counted`]).
#[derive(Debug)]
pub struct Counted {
    /// `kind:id`.
    pub subject: Subject,
    counter: Option<Arc<WindowCounter>>,
}

type MemoryCounters = HashMap<String, Arc<WindowCounter>>;

/// One hit on the in-process counters.
fn memory_hit(
    map: &Mutex<MemoryCounters>,
    subject: &str,
    window: i64,
) -> Result<i64, anyhow::Error> {
    let counter = memory_counter(map, subject, window)?;
    Ok(counter.hit(window))
}

/// The in-process counter of `subject`, made if it has none yet.
fn memory_counter(
    map: &Mutex<MemoryCounters>,
    subject: &str,
    window: i64,
) -> Result<Arc<WindowCounter>, anyhow::Error> {
    let mut map = map
        .lock()
        .map_err(|_| anyhow::anyhow!("rate-limit map poisoned"))?;
    if map.len() >= MEMORY_SWEEP_AT {
        // Counters someone still holds (an auth cache entry) stay, so a
        // subject never has two.
        map.retain(|_, counter| !counter.is_older_than(window) || Arc::strong_count(counter) > 1);
    }
    // Look up before inserting: a known subject costs no allocation.
    if let Some(counter) = map.get(subject) {
        return Ok(counter.clone());
    }
    Ok(map.entry(subject.to_owned()).or_default().clone())
}

/// Counts requests and sign-in failures; see the module docs.
pub struct Limiter {
    counters: Counters,
    prefix: String,
}

enum Counters {
    Memory(Mutex<MemoryCounters>),
    Database(Store),
    Redis(ConnectionManager),
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

/// The limiter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url} for rate limits")]
pub struct LimitsError {
    url: String,
    #[source]
    source: redis::RedisError,
}

impl Limiter {
    /// The limiter `config` asks for, over `store` when it uses the database.
    pub async fn connect(config: &LimitsConfig, store: &Store) -> Result<Limiter, LimitsError> {
        let backend = match (config.backend, &config.redis_url) {
            (LimitsBackend::Auto, Some(_)) => LimitsBackend::Redis,
            (LimitsBackend::Auto, None) if store.backend() == Backend::Postgres => {
                LimitsBackend::Database
            }
            (LimitsBackend::Auto, None) => LimitsBackend::Memory,
            (chosen, _) => chosen,
        };
        let counters = match backend {
            LimitsBackend::Redis => {
                let url = config.redis_url.clone().unwrap_or_default();
                let connect = async {
                    let client = redis::Client::open(url.as_str())?;
                    ConnectionManager::new(client).await
                };
                Counters::Redis(
                    connect
                        .await
                        .map_err(|source| LimitsError { url, source })?,
                )
            }
            LimitsBackend::Database => Counters::Database(store.clone()),
            LimitsBackend::Memory | LimitsBackend::Auto => Counters::Memory(Mutex::default()),
        };
        Ok(Limiter {
            counters,
            prefix: config.redis_key_prefix.clone(),
        })
    }

    /// `memory`, `database` or `redis`.
    pub fn backend_name(&self) -> &'static str {
        match self.counters {
            Counters::Memory(_) => "memory",
            Counters::Database(_) => "database",
            Counters::Redis(_) => "redis",
        }
    }

    /// Counts one request by `subject` (`ip:…`, `user:…`, `key:…`) against
    /// `per_minute` (0: unlimited). Over the limit: 429 `rate_limited` with
    /// `Retry-After` until the window ends.
    pub async fn check(
        &self,
        subject: &str,
        per_minute: u32,
        now: i64,
    ) -> Result<(), ServiceError> {
        if per_minute == 0 {
            return Ok(());
        }
        let window = now - now.rem_euclid(WINDOW_MS);
        let count = self.hit(subject, window, now).await;
        verdict(subject, count, per_minute, window, now)
    }

    /// [`Limiter::check`] without waiting, when the counters are in this
    /// process (`memory`); `None` when they are in the database or Redis.
    pub fn check_now(
        &self,
        subject: &str,
        per_minute: u32,
        now: i64,
    ) -> Option<Result<(), ServiceError>> {
        let Counters::Memory(map) = &self.counters else {
            return None;
        };
        if per_minute == 0 {
            return Some(Ok(()));
        }
        let window = now - now.rem_euclid(WINDOW_MS);
        let count = memory_hit(map, subject, window);
        Some(verdict(subject, count, per_minute, window, now))
    }

    /// `subject` with its in-process counter, for someone who counts it
    /// often (see [`Limiter::check_counted_now`]).
    pub fn counted(&self, subject: Subject, now: i64) -> Counted {
        let counter = match &self.counters {
            Counters::Memory(map) => {
                memory_counter(map, &subject, now - now.rem_euclid(WINDOW_MS)).ok()
            }
            _ => None,
        };
        Counted { subject, counter }
    }

    /// [`Limiter::check_now`] for several subjects (a request's user and
    /// key) held with their counters, in order, stopping at the first
    /// refusal as separate checks would: atomic counts, no lock and no
    /// lookup. `None` when the counters are not in memory.
    pub fn check_counted_now(
        &self,
        checks: &[(&Counted, u32)],
        now: i64,
    ) -> Option<Result<(), ServiceError>> {
        let Counters::Memory(map) = &self.counters else {
            return None;
        };
        let window = now - now.rem_euclid(WINDOW_MS);
        for &(counted, per_minute) in checks {
            if per_minute == 0 {
                continue;
            }
            let count = match &counted.counter {
                Some(counter) => Ok(counter.hit(window)),
                None => memory_hit(map, &counted.subject, window),
            };
            if let Err(error) = verdict(&counted.subject, count, per_minute, window, now) {
                return Some(Err(error));
            }
        }
        Some(Ok(()))
    }

    /// Whether [`Limiter::check_now`] answers (the counters are in memory).
    pub fn is_immediate(&self) -> bool {
        matches!(self.counters, Counters::Memory(_))
    }

    async fn hit(&self, subject: &str, window: i64, now: i64) -> Result<i64, anyhow::Error> {
        match &self.counters {
            Counters::Memory(map) => memory_hit(map, subject, window),
            Counters::Database(store) => {
                Ok(store.rate_hit(subject, window, window + WINDOW_MS).await?)
            }
            Counters::Redis(conn) => {
                let key = format!("{}:rate:{subject}:{window}", self.prefix);
                let mut conn = conn.clone();
                let (count,): (i64,) = redis::pipe()
                    .atomic()
                    .incr(&key, 1)
                    // Relative, so a replica's clock skew against Redis's
                    // cannot expire the key early.
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(window + WINDOW_MS + 1000 - now)
                    .ignore()
                    .query_async(&mut conn)
                    .await?;
                Ok(count)
            }
        }
    }

    /// Deletes finished database windows (the other backends expire their own).
    pub async fn prune(&self, now: i64) -> Result<(), StoreError> {
        if let Counters::Database(store) = &self.counters {
            store.prune_rate_windows(now - WINDOW_MS).await?;
        }
        Ok(())
    }

    /// Until when (Unix ms) sign-in for this login name is refused, if locked.
    pub async fn login_locked_until(
        &self,
        store: &Store,
        login_hash: &str,
    ) -> Result<Option<i64>, ServiceError> {
        match &self.counters {
            Counters::Redis(conn) => {
                let until: Option<i64> = conn
                    .clone()
                    .hget(self.lockout_key(login_hash), "locked_until")
                    .await
                    .map_err(lockout_unavailable)?;
                Ok(until)
            }
            _ => Ok(store.login_locked_until(login_hash).await?),
        }
    }

    /// Records a failed sign-in; `lock_for(failures)` gives the lock length (ms).
    pub async fn record_login_failure(
        &self,
        store: &Store,
        login_hash: &str,
        now: i64,
        lock_for: impl Fn(i64) -> Option<i64>,
    ) -> Result<(), ServiceError> {
        match &self.counters {
            Counters::Redis(conn) => {
                let key = self.lockout_key(login_hash);
                let mut conn = conn.clone();
                let (failures,): (i64,) = redis::pipe()
                    .atomic()
                    .hincr(&key, "failures", 1)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(LOCKOUT_TTL_MS)
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .map_err(lockout_unavailable)?;
                if let Some(ms) = lock_for(failures) {
                    let () = conn
                        .hset(&key, "locked_until", now + ms)
                        .await
                        .map_err(lockout_unavailable)?;
                }
                Ok(())
            }
            _ => {
                store
                    .record_login_failure(login_hash, now, lock_for)
                    .await?;
                Ok(())
            }
        }
    }

    /// Forgets the failures of a login name after a successful sign-in.
    pub async fn record_login_success(
        &self,
        store: &Store,
        login_hash: &str,
    ) -> Result<(), ServiceError> {
        match &self.counters {
            Counters::Redis(conn) => {
                let () = conn
                    .clone()
                    .del(self.lockout_key(login_hash))
                    .await
                    .map_err(lockout_unavailable)?;
                Ok(())
            }
            _ => Ok(store.record_login_success(login_hash).await?),
        }
    }

    fn lockout_key(&self, login_hash: &str) -> String {
        format!("{}:login:{login_hash}", self.prefix)
    }
}

fn lockout_unavailable(error: redis::RedisError) -> ServiceError {
    ServiceError::Unavailable {
        detail: "sign-in is unavailable right now; retry shortly".to_owned(),
        retry_after_secs: Some(5),
        cause: Some(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory-backed limiter (what a single SQLite node gets).
    fn in_memory() -> Limiter {
        Limiter {
            counters: Counters::Memory(Mutex::default()),
            prefix: String::new(),
        }
    }

    #[test]
    fn a_window_counter_counts_per_window_and_saturates() {
        let counter = WindowCounter::default();
        let minute = 29_000_000 * WINDOW_MS;
        assert_eq!(counter.hit(minute), 1);
        assert_eq!(counter.hit(minute), 2);
        assert!(!counter.is_older_than(minute));
        assert!(counter.is_older_than(minute + WINDOW_MS));
        // A new window starts again at one.
        assert_eq!(counter.hit(minute + WINDOW_MS), 1);
        // The count never spills into the window bits.
        counter.0.store(
            29_000_001 << 32 | u64::from(u32::MAX - 1),
            Ordering::Relaxed,
        );
        let max = i64::from(u32::MAX);
        assert_eq!(counter.hit(minute + WINDOW_MS), max);
        assert_eq!(counter.hit(minute + WINDOW_MS), max);
        assert!(!counter.is_older_than(minute + WINDOW_MS));
    }

    #[test]
    fn a_held_counter_is_the_subjects_only_counter() {
        let limiter = in_memory();
        let now = 29_000_000 * WINDOW_MS + 5;
        let held = limiter.counted(Subject::new("user", "u1"), now);
        // Held and by-name checks count into the same window.
        for _ in 0..2 {
            limiter
                .check_counted_now(&[(&held, 3)], now)
                .unwrap()
                .unwrap();
        }
        limiter.check_now("user:u1", 3, now).unwrap().unwrap();
        let refused = limiter.check_counted_now(&[(&held, 3)], now).unwrap();
        assert!(refused.is_err(), "the fourth request in a minute of three");
        assert!(limiter.check_now("user:u1", 3, now).unwrap().is_err());
        // A sweep (a full map) drops finished windows, never a held counter.
        let later = now + 2 * WINDOW_MS;
        let Counters::Memory(map) = &limiter.counters else {
            unreachable!()
        };
        for i in 0..MEMORY_SWEEP_AT {
            memory_hit(map, &format!("ip:{i}"), now - now.rem_euclid(WINDOW_MS)).unwrap();
        }
        limiter.check_now("ip:fresh", 3, later).unwrap().unwrap();
        let kept = map.lock().unwrap().len();
        assert_eq!(kept, 2, "the held user and the fresh IP");
        limiter
            .check_counted_now(&[(&held, 3)], later)
            .unwrap()
            .unwrap();
        limiter.check_now("user:u1", 3, later).unwrap().unwrap();
        let again = limiter.check_counted_now(&[(&held, 2)], later).unwrap();
        assert!(
            again.is_err(),
            "the third request of the new minute, by both names"
        );
    }

    #[test]
    fn subjects_read_as_kind_colon_id() {
        let check = |subject: Subject, expected: &str| assert_eq!(subject.as_str(), expected);
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let addr: std::net::IpAddr = ip.parse().unwrap();
            check(Subject::ip(addr), &format!("ip:{ip}"));
            check(Subject::new("ip", addr), &format!("ip:{ip}"));
        }
        check(
            Subject::new("user", "0190d3c4-e5f6-7a8b-9c0d-1e2f3a4b5c6d"),
            "user:0190d3c4-e5f6-7a8b-9c0d-1e2f3a4b5c6d",
        );
        // Longer than the inline buffer: spills to the heap, whole.
        let long = "x".repeat(300);
        check(Subject::new("key", &long), &format!("key:{long}"));
    }
}
