//! Queue tests. Each behaviour runs on the database driver over SQLite and
//! over PostgreSQL, and on the Redis driver (127.0.0.1:6379, or
//! `CORRAL_TEST_REDIS_URL`) under a key prefix of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

mod batching;
mod periodic;
mod queue;
mod workers;

use std::future::Future;
use std::time::{Duration, Instant};

use corral_queue::{DriverConfig, EncryptionKey, Queue, QueueConfig};
use corral_store::testing::TestDatabase;
use corral_store::{Backend, Store};

/// Where a test's jobs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    Redis,
}

/// A fresh store (and, for Redis, a fresh key prefix) and a queue on it.
pub struct Harness {
    pub kind: Kind,
    pub store: Store,
    pub queue: Queue,
    pub config: QueueConfig,
    _db: TestDatabase,
    redis_prefix: Option<String>,
}

pub fn redis_url() -> String {
    std::env::var("CORRAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn test_key() -> EncryptionKey {
    EncryptionKey::from_bytes([42; 32])
}

impl Harness {
    pub async fn new(kind: Kind) -> Harness {
        Harness::with(kind, |_| {}).await
    }

    /// A harness whose queue configuration `adjust` changes first.
    pub async fn with(kind: Kind, adjust: impl FnOnce(&mut QueueConfig)) -> Harness {
        let mut db = match kind {
            Kind::Postgres => TestDatabase::new(Backend::Postgres).await,
            Kind::Sqlite | Kind::Redis => TestDatabase::new(Backend::Sqlite).await,
        };
        db.config.max_connections = 16;
        let store = Store::open(&db.config).await.expect("open store");
        let redis_prefix =
            (kind == Kind::Redis).then(|| format!("corral-test-{}", uuid::Uuid::now_v7().simple()));
        let mut config = QueueConfig {
            driver: match &redis_prefix {
                Some(prefix) => DriverConfig::Redis {
                    url: redis_url(),
                    prefix: prefix.clone(),
                },
                None => DriverConfig::Database,
            },
            encryption_key: Some(test_key()),
            rate_limits: Vec::new(),
        };
        adjust(&mut config);
        let queue = Queue::open(store.clone(), config.clone())
            .await
            .expect("open queue");
        Harness {
            kind,
            store,
            queue,
            config,
            _db: db,
            redis_prefix,
        }
    }

    /// Another handle on the same jobs, as a second replica would have.
    pub async fn replica(&self) -> Queue {
        Queue::open(self.store.clone(), self.config.clone())
            .await
            .expect("open second queue")
    }

    /// The raw Redis key prefix (hash tag included) of a Redis harness.
    pub fn redis_prefix(&self) -> Option<String> {
        self.redis_prefix.as_ref().map(|p| format!("{{{p}}}"))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let Some(prefix) = self.redis_prefix.take() else {
            return;
        };
        // Synchronous client: Drop cannot await.
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{prefix}}}*"))
            .query(&mut conn)
            .unwrap_or_default();
        for key in keys {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query(&mut conn);
        }
    }
}

/// Declares one test per driver from a body taking the fresh `Harness`.
#[macro_export]
macro_rules! on_all_drivers {
    ($name:ident, |$h:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($h: $crate::Harness) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() { run($crate::Harness::new($crate::Kind::Sqlite).await).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() { run($crate::Harness::new($crate::Kind::Postgres).await).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() { run($crate::Harness::new($crate::Kind::Redis).await).await }
        }
    };
}

/// Like `on_all_drivers`, for the database driver only.
#[macro_export]
macro_rules! on_database_drivers {
    ($name:ident, |$h:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($h: $crate::Harness) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() { run($crate::Harness::new($crate::Kind::Sqlite).await).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() { run($crate::Harness::new($crate::Kind::Postgres).await).await }
        }
    };
}

/// Polls `check` until it holds or `timeout` passes; panics with `what`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The queue names a test passes to claims.
pub fn queues(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}
