//! Corral's persistence layer: the only crate that knows SQL.
//!
//! One code path serves SQLite and PostgreSQL through sqlx's `Any` driver.
//! Queries are written in the portable subset both accept (`$1` placeholders,
//! TEXT/BIGINT/BOOLEAN columns, UUIDv7 text ids, Unix-millisecond times,
//! JSON as TEXT). Where the two backends truly differ, the difference lives
//! behind one method of [`Backend`] rather than as `if` chains in queries.

mod audit;
mod backend;
mod changes;
mod email_tokens;
mod error;
mod executions;
mod identity;
mod instance;
mod library;
mod limits;
mod orgs;
mod plans;
mod sandboxes;
mod sessions;

pub use audit::{AuditDimension, AuditEntry, AuditFilter, AuditRecord};
pub use backend::Backend;
pub use email_tokens::TokenPurpose;
pub use error::StoreError;
pub use executions::{ExecutionFilter, ExecutionOutcome, ExecutionRecord};
pub use identity::{ApiKey, NewApiKey, NewUser, RefreshUse, User};
pub use instance::Instance;
pub use library::{NewSnippet, Snippet, SnippetChanges, SnippetFilter};
pub use orgs::{Invitation, Member, MembershipChange, Org};
pub use plans::Plan;
pub use sandboxes::{ID_SLOTS, NewSandbox, SandboxChanges, SandboxFilter, SandboxRecord};

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor};

/// Migrations embedded at build time from `crates/corral-store/migrations`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://…` or `postgres://…`.
    pub url: String,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing.
    pub acquire_timeout: Duration,
}

/// The SQLite database's file name inside the data directory.
pub const SQLITE_FILE: &str = "corral.db";

impl StoreConfig {
    /// A SQLite database file inside `data_dir` (created when missing).
    pub fn sqlite_in(data_dir: &Path) -> StoreConfig {
        StoreConfig {
            url: sqlite_url(&data_dir.join(SQLITE_FILE)),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The `sqlite://` URL of a database file, created on first connect.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Pool occupancy, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The configured maximum.
    pub max: u32,
}

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: RedactedUrl,
    max_connections: u32,
    epoch: changes::AuthEpoch,
}

impl Store {
    /// Connects to the database named by `config.url` (not yet migrated).
    pub async fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(&config.url)?;
        if backend == Backend::Sqlite {
            create_sqlite_parent_dir(&config.url)?;
        }
        let options = AnyConnectOptions::from_str(&config.url)
            .map_err(|source| StoreError::Connect { backend, source })?
            // Statement logging at INFO drowns the server log; keep it at TRACE.
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    for statement in backend.session_setup() {
                        conn.execute(*statement).await?;
                    }
                    Ok(())
                })
            })
            .after_release(|conn, _meta| Box::pin(leaves_no_transaction_behind(conn)))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { backend, source })?;
        Ok(Store {
            pool,
            backend,
            url: RedactedUrl(config.url.as_str().into()),
            max_connections: config.max_connections,
            epoch: changes::AuthEpoch::default(),
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let store = Store::connect(config).await?;
        store.migrate().await?;
        store.spawn_auth_listener(&config.url);
        Ok(store)
    }

    /// Applies every pending migration; a no-op when the schema is current.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let before = self.applied_migrations().await.unwrap_or(0);
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)?;
        let after = self.applied_migrations().await?;
        Ok(MigrationReport {
            applied_now: after.saturating_sub(before),
            total: after,
        })
    }

    async fn applied_migrations(&self) -> Result<u64, StoreError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Round-trips a trivial query; used by `/ready`.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(started.elapsed())
    }

    /// Which backend this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Current pool occupancy.
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.max_connections,
        }
    }

    /// Closes every connection; waits for checked-out ones to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool. Repositories in this crate use it; so does `corral-queue`,
    /// the one other crate that owns tables (its `queue_*` tables), and
    /// callers that need a transaction spanning store writes and a
    /// transactional enqueue (`pool().begin()`).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A dedicated PostgreSQL connection for `LISTEN`; `None` on SQLite,
    /// which has no notifications (one process by construction).
    pub async fn pg_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        Ok(Some(
            sqlx::postgres::PgListener::connect(&self.url.0).await?,
        ))
    }
}

/// The database URL, kept for opening listener connections; it may hold a
/// password, so `Debug` does not show it.
#[derive(Clone)]
struct RedactedUrl(std::sync::Arc<str>);

impl std::fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedactedUrl(..)")
    }
}

/// What [`Store::migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations applied by this call.
    pub applied_now: u64,
    /// Migrations applied in total.
    pub total: u64,
}

/// Whether a connection coming back to the pool may be handed out again:
/// not while sqlx still counts a transaction open on it; the pool closes it
/// instead (closing rolls back whatever the database still holds open).
///
/// SQLite ends a transaction by itself when a write or `COMMIT` fails with
/// `SQLITE_FULL` (or an I/O error). The `ROLLBACK` sqlx then sends for the
/// dropped [`sqlx::Transaction`] fails ("no transaction is active"), so
/// sqlx's count stays at one. Handed out again, such a connection turns the
/// next `begin()` into a `SAVEPOINT` and its rollback into `ROLLBACK TO`,
/// which leaves a real transaction open: it holds the write lock (everyone
/// else's writes fail with "database is locked") and every later write on
/// it is answered as done but never committed.
///
/// Free on the usual path (a committed transaction or none: the count is
/// already zero). Only after a dropped transaction does SQLite need one
/// round trip to its connection's worker thread, which runs the queued
/// rollback before it answers; PostgreSQL lowers its count when it queues
/// the rollback, so it never waits here.
async fn leaves_no_transaction_behind(conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!(
            "closing a pooled connection whose transaction the database ended by itself \
             (a failed write or COMMIT, e.g. a full disk)"
        );
        return Ok(false);
    }
    Ok(true)
}

fn create_sqlite_parent_dir(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::DataDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(feature = "testing")]
pub mod testing;
