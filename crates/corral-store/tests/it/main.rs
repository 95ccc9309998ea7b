//! Store tests; every behaviour is checked on both SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use corral_core::clock::ManualClock;
use corral_store::testing::{TestDatabase, scalar_i64, scalar_text};
use corral_store::{Backend, Store, StoreConfig, StoreError};

/// Declares one test per backend from a body taking the fresh `TestDatabase`.
macro_rules! on_both_backends {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            use super::*;
            async fn run($db: TestDatabase) $body
            #[tokio::test]
            async fn sqlite() { run(TestDatabase::new(Backend::Sqlite).await).await }
            #[tokio::test]
            async fn postgres() { run(TestDatabase::new(Backend::Postgres).await).await }
        }
    };
}

on_both_backends!(migrations_apply_once_and_are_idempotent, |db| {
    let store = Store::connect(&db.config).await.unwrap();
    let first = store.migrate().await.unwrap();
    assert!(first.applied_now >= 1);
    assert_eq!(first.applied_now, first.total);
    let second = store.migrate().await.unwrap();
    assert_eq!(second.applied_now, 0);
    assert_eq!(second.total, first.total);
    assert_eq!(store.backend(), db.backend());
});

on_both_backends!(ping_round_trips, |db| {
    let store = Store::open(&db.config).await.unwrap();
    store.ping().await.unwrap();
    let stats = store.pool_stats();
    assert!(stats.size >= 1 && stats.size <= stats.max);
});

on_both_backends!(instance_record_is_created_once, |db| {
    let store = Store::open(&db.config).await.unwrap();
    let clock = ManualClock::at(1_000);
    let first = store.ensure_instance(&clock, "0.1.0").await.unwrap();
    clock.advance(5_000);
    let again = store.ensure_instance(&clock, "0.2.0").await.unwrap();
    assert_eq!(first, again, "a later start must not replace the record");
    assert_eq!(first.created_at, 1_000);
    assert_eq!(first.version, "0.1.0");
    assert_eq!(scalar_i64(&store, "SELECT COUNT(*) FROM instance").await, 1);
});

on_both_backends!(data_survives_reopening, |db| {
    let clock = ManualClock::at(42);
    let id = {
        let store = Store::open(&db.config).await.unwrap();
        let id = store.ensure_instance(&clock, "x").await.unwrap().id;
        store.close().await;
        id
    };
    let store = Store::open(&db.config).await.unwrap();
    assert_eq!(store.ensure_instance(&clock, "y").await.unwrap().id, id);
});

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys_and_busy_timeout() {
    let db = TestDatabase::sqlite();
    let store = Store::open(&db.config).await.unwrap();
    assert_eq!(scalar_text(&store, "PRAGMA journal_mode").await, "wal");
    assert_eq!(scalar_i64(&store, "PRAGMA foreign_keys").await, 1);
    assert_eq!(scalar_i64(&store, "PRAGMA busy_timeout").await, 5000);
}

#[tokio::test]
async fn sqlite_creates_missing_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c");
    let store = Store::open(&StoreConfig::sqlite_in(&nested)).await.unwrap();
    store.ping().await.unwrap();
    assert!(nested.join("corral.db").exists());
}

#[tokio::test]
async fn unsupported_url_is_a_clear_error() {
    let mut config = TestDatabase::sqlite().config.clone();
    config.url = "mysql://localhost/db".into();
    let err = Store::connect(&config).await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err:?}");
    assert!(err.to_string().contains("`mysql`"), "{err}");
}

#[tokio::test]
async fn unreachable_postgres_is_reported_as_unavailable() {
    let mut config = TestDatabase::sqlite().config.clone();
    // Port 1 on loopback: nothing listens there.
    config.url = "postgres://postgres@127.0.0.1:1/nothing".into();
    config.acquire_timeout = std::time::Duration::from_secs(2);
    let err = Store::connect(&config).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}
