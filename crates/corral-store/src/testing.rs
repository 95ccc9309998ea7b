//! Fresh, throw-away databases for tests: one per test, on either backend.
//!
//! PostgreSQL tests use the server named by `CORRAL_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`); each test gets a new
//! database, dropped when the [`TestDatabase`] is dropped.

#![allow(
    clippy::expect_used,
    reason = "test support: a broken fixture should abort the test"
)]

use std::time::Duration;

use sqlx::{Connection, Executor};

use crate::{Backend, StoreConfig};

/// The admin URL of the PostgreSQL server used by tests.
pub fn postgres_admin_url() -> String {
    std::env::var("CORRAL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// How to connect to it.
    pub config: StoreConfig,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDatabase {
    /// A new empty database on `backend`.
    pub async fn new(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => TestDatabase::sqlite(),
            Backend::Postgres => TestDatabase::postgres().await,
        }
    }

    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().expect("create temp dir");
        TestDatabase {
            config: StoreConfig::sqlite_in(dir.path()),
            backend: Backend::Sqlite,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    /// A fresh PostgreSQL database.
    pub async fn postgres() -> TestDatabase {
        sqlx::any::install_default_drivers();
        let admin = postgres_admin_url();
        let name = format!("corral_t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL server (is it running?)");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        TestDatabase {
            config: StoreConfig {
                url: format!("{base}/{name}"),
                max_connections: 5,
                acquire_timeout: Duration::from_secs(5),
            },
            backend: Backend::Postgres,
            _dir: None,
            pg_name: Some(name),
        }
    }

    /// Which backend this database is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // a separate thread with its own runtime can.
        let admin = postgres_admin_url();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Runs a query returning one text value, for assertions on backend settings.
pub async fn scalar_text(store: &crate::Store, sql: &'static str) -> String {
    let row: (String,) = sqlx::query_as(sql)
        .fetch_one(store.pool())
        .await
        .expect("scalar query");
    row.0
}

/// Runs a query returning one integer, for assertions on backend settings.
pub async fn scalar_i64(store: &crate::Store, sql: &'static str) -> i64 {
    let row: (i64,) = sqlx::query_as(sql)
        .fetch_one(store.pool())
        .await
        .expect("scalar query");
    row.0
}

impl TestDatabase {
    /// [`TestDatabase::postgres`] for synchronous tests.
    pub fn new_blocking_postgres() -> TestDatabase {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a runtime");
        rt.block_on(TestDatabase::postgres())
    }
}

/// Every text value stored in `table`, for asserting that no secret is kept.
pub async fn all_text(store: &crate::Store, table: &'static str) -> Vec<String> {
    use sqlx::Row;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
        .fetch_all(store.pool())
        .await
        .expect("select");
    let mut out = Vec::new();
    for row in rows {
        for i in 0..row.len() {
            if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                out.push(text);
            }
        }
    }
    out
}
