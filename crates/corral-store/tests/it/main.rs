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

async fn insert_probe(conn: &mut sqlx::AnyConnection, name: &str) {
    sqlx::query("INSERT INTO probe (name) VALUES ($1)")
        .bind(name)
        .execute(conn)
        .await
        .unwrap();
}

// SQLite ends a transaction by itself when a write or COMMIT fails with
// SQLITE_FULL (issue 17, fault 10); a raw ROLLBACK inside sqlx's
// transaction does the same without filling a disk. The connection must
// not go back to the pool still counted as in a transaction: its next
// transaction became a savepoint whose rollback left a real transaction
// open, and later acknowledged writes on it were never committed.
on_both_backends!(
    a_transaction_the_database_ended_itself_loses_no_later_write,
    |db| {
        // One connection, so every step below runs on the same one (or its replacement).
        let config = StoreConfig {
            max_connections: 1,
            ..db.config.clone()
        };
        let store = Store::connect(&config).await.unwrap();
        sqlx::query("CREATE TABLE probe (name TEXT NOT NULL)")
            .execute(store.pool())
            .await
            .unwrap();

        let mut ended_by_the_database = store.pool().begin().await.unwrap();
        insert_probe(&mut ended_by_the_database, "ended").await;
        sqlx::query("ROLLBACK")
            .execute(&mut *ended_by_the_database)
            .await
            .unwrap();
        drop(ended_by_the_database);
        let mut failed = store.pool().begin().await.unwrap();
        insert_probe(&mut failed, "failed").await;
        drop(failed);
        let mut acknowledged = store.pool().begin().await.unwrap();
        insert_probe(&mut acknowledged, "acknowledged").await;
        acknowledged.commit().await.unwrap();
        store.close().await;

        let reopened = Store::connect(&config).await.unwrap();
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM probe")
            .fetch_all(reopened.pool())
            .await
            .unwrap();
        assert_eq!(names, ["acknowledged"]);
    }
);

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

mod identity {
    use super::*;
    use corral_core::auth::{OrgRole, PlatformRole, Scope};
    use corral_store::{AuditEntry, AuditFilter, NewApiKey, NewUser, RefreshUse};

    fn alice() -> NewUser {
        NewUser {
            email: "alice@example.com".into(),
            username: "alice".into(),
            password_hash: "$argon2id$fake".into(),
            role: PlatformRole::User,
            plan_id: "free".into(),
        }
    }

    fn key(user_id: &str, org_id: &str, hash: &str, max: Option<i64>) -> NewApiKey {
        NewApiKey {
            user_id: user_id.into(),
            org_id: org_id.into(),
            name: "ci".into(),
            prefix: "crl_abcd".into(),
            key_hash: hash.into(),
            scopes: vec![Scope::SandboxesRead, Scope::ExecutionsWrite],
            expires_at: None,
            max_keys: max,
        }
    }

    on_both_backends!(users_get_a_personal_org_and_unique_names, |db| {
        let store = Store::open(&db.config).await.unwrap();
        let user = store.create_user(10, alice()).await.unwrap();
        assert_eq!(
            store
                .org_role(&user.personal_org_id, &user.id)
                .await
                .unwrap(),
            Some(OrgRole::Owner)
        );
        assert_eq!(
            store.user_by_login("alice").await.unwrap().unwrap().id,
            user.id
        );
        assert_eq!(
            store
                .user_by_login("ALICE@example.com")
                .await
                .unwrap()
                .unwrap()
                .id,
            user.id
        );
        let dup = store
            .create_user(
                11,
                NewUser {
                    username: "other".into(),
                    ..alice()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(dup, StoreError::Conflict(ref m) if m.contains("email")),
            "{dup:?}"
        );
        let dup = store
            .create_user(
                11,
                NewUser {
                    email: "o@example.com".into(),
                    ..alice()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(dup, StoreError::Conflict(ref m) if m.contains("username")),
            "{dup:?}"
        );
    });

    on_both_backends!(api_keys_respect_the_plan_limit_even_concurrently, |db| {
        let store = Store::open(&db.config).await.unwrap();
        let user = store.create_user(10, alice()).await.unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                let k = key(
                    &user.id,
                    &user.personal_org_id,
                    &format!("hash{i}"),
                    Some(2),
                );
                tokio::spawn(async move { store.create_api_key(20, k).await })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::QuotaExceeded(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(created, 2);
        let keys = store.list_api_keys(&user.id).await.unwrap();
        assert_eq!(keys.len(), 2);
        assert!(store.delete_api_key(&user.id, &keys[0].id).await.unwrap());
        store
            .create_api_key(
                30,
                key(&user.id, &user.personal_org_id, "hash-new", Some(2)),
            )
            .await
            .unwrap();
        let found = store.api_key_by_hash("hash-new").await.unwrap().unwrap();
        assert_eq!(
            found.scopes,
            vec![Scope::SandboxesRead, Scope::ExecutionsWrite]
        );
        store.add_api_key_usage(&found.id, 3, 40).await.unwrap();
        store.add_api_key_usage(&found.id, 2, 35).await.unwrap();
        let used = store.api_key_by_hash("hash-new").await.unwrap().unwrap();
        assert_eq!(
            (used.usage_count, used.last_used_at),
            (5, Some(40)),
            "last use never moves back"
        );
        assert!(store.api_key_by_hash("nope").await.unwrap().is_none());
    });

    on_both_backends!(
        refresh_tokens_are_single_use_and_reuse_revokes_the_family,
        |db| {
            let store = Store::open(&db.config).await.unwrap();
            let user = store.create_user(10, alice()).await.unwrap();
            store
                .insert_refresh_token(10, &user.id, "fam", "t1", 1_000)
                .await
                .unwrap();
            assert!(matches!(
                store.use_refresh_token("t1", 20).await.unwrap(),
                RefreshUse::Valid { .. }
            ));
            store
                .insert_refresh_token(20, &user.id, "fam", "t2", 1_000)
                .await
                .unwrap();
            assert_eq!(
                store.use_refresh_token("t1", 30).await.unwrap(),
                RefreshUse::Reused
            );
            // The successor died with its family, and so did the sign-in.
            assert_eq!(
                store.use_refresh_token("t2", 31).await.unwrap(),
                RefreshUse::Revoked
            );
            assert!(!store.sign_in_active("fam").await.unwrap());
            assert_eq!(
                store.use_refresh_token("unknown", 31).await.unwrap(),
                RefreshUse::Invalid
            );
            store
                .insert_refresh_token(40, &user.id, "fam2", "t3", 50)
                .await
                .unwrap();
            assert!(store.sign_in_active("fam2").await.unwrap());
            assert_eq!(
                store.use_refresh_token("t3", 60).await.unwrap(),
                RefreshUse::Invalid,
                "expired"
            );
        }
    );

    on_both_backends!(audit_filters_and_pages, |db| {
        let store = Store::open(&db.config).await.unwrap();
        for (i, action) in ["auth.login", "auth.login", "api_key.create"]
            .iter()
            .enumerate()
        {
            store
                .audit(
                    100 + i as i64,
                    AuditEntry {
                        actor_user_id: Some("u1".into()),
                        org_id: Some(if i == 2 { "o2" } else { "o1" }.into()),
                        action: (*action).into(),
                        resource_type: "user".into(),
                        outcome: "success".into(),
                        ..AuditEntry::default()
                    },
                )
                .await
                .unwrap();
        }
        let all = store
            .list_audit(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].action, "api_key.create", "newest first");
        let logins = store
            .list_audit(&AuditFilter {
                action: Some("auth.login".into()),
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(logins.len(), 2);
        let windowed = store
            .list_audit(&AuditFilter {
                since: Some(101),
                until: Some(102),
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(windowed.len(), 1);
        let page2 = store
            .list_audit(&AuditFilter {
                before_id: Some(all[0].id.clone()),
                limit: 1,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(page2[0].id, all[1].id);
        let org = store
            .list_audit(&AuditFilter {
                org_id: Some("o2".into()),
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(org.len(), 1);
    });

    on_both_backends!(plans_are_seeded_with_the_four_tiers, |db| {
        let store = Store::open(&db.config).await.unwrap();
        let plans = store.plans().await.unwrap();
        let summary: Vec<_> = plans
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.executions_per_day,
                    p.api_calls_per_day,
                    p.max_time_secs,
                    p.max_memory_mb,
                    p.max_snippets,
                    p.max_api_keys,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("free", Some(10), Some(20), 30, 128, Some(5), Some(2)),
                ("basic", Some(50), Some(100), 60, 256, Some(20), Some(5)),
                (
                    "premium",
                    Some(200),
                    Some(500),
                    120,
                    512,
                    Some(100),
                    Some(10)
                ),
                ("enterprise", None, None, 300, 1024, None, None),
            ]
        );
    });

    on_both_backends!(the_token_signing_key_is_made_once, |db| {
        let store = Store::open(&db.config).await.unwrap();
        store
            .ensure_instance(&ManualClock::at(1), "x")
            .await
            .unwrap();
        let a = store.token_signing_key(|| "first".into()).await.unwrap();
        let b = store.token_signing_key(|| "second".into()).await.unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("first", "first"));
    });
}

mod login_throttle {
    use super::*;

    on_both_backends!(failures_count_up_lock_and_clear, |db| {
        let store = Store::open(&db.config).await.unwrap();
        let lock = |n: i64| (n >= 3).then_some(1_000);
        assert_eq!(store.login_locked_until("h").await.unwrap(), None);
        for expected in 1..=3 {
            assert_eq!(
                store.record_login_failure("h", 100, lock).await.unwrap(),
                expected
            );
        }
        assert_eq!(store.login_locked_until("h").await.unwrap(), Some(1_100));
        assert_eq!(store.login_locked_until("other").await.unwrap(), None);
        store.record_login_success("h").await.unwrap();
        assert_eq!(store.login_locked_until("h").await.unwrap(), None);

        // Concurrent first failures for a new name all count; none errors.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.record_login_failure("race", 200, |_| None).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            store
                .record_login_failure("race", 201, |_| None)
                .await
                .unwrap(),
            9
        );
    });
}

// Issue 17 item 1: a program's output with NUL bytes (and text that
// looks like the escaping) is stored and read back exactly, on both
// backends (PostgreSQL's text cannot hold a NUL).
on_both_backends!(execution_output_with_nul_bytes_round_trips, |db| {
    use corral_store::{ExecutionFilter, ExecutionOutcome, ExecutionRecord};
    let store = Store::open(&db.config).await.unwrap();
    let record = ExecutionRecord {
        id: "exe_1".into(),
        org_id: "org_1".into(),
        user_id: "usr_1".into(),
        batch_id: None,
        language: "c".into(),
        status: "queued".into(),
        code: "int main(){putchar(0);}".into(),
        stdin: String::new(),
        files: "[]".into(),
        expected_output: None,
        time_limit_ms: 1000,
        wall_limit_ms: Some(3000),
        memory_limit_mb: 64,
        output_limit_kb: 64,
        callback_url: None,
        exit_code: None,
        signal: None,
        stdout: String::new(),
        stderr: String::new(),
        compile_output: String::new(),
        time_ms: None,
        wall_ms: None,
        memory_kb: None,
        error: None,
        created_at: 1,
        started_at: None,
        finished_at: None,
    };
    store.insert_executions(&[record]).await.unwrap();
    let outcome = ExecutionOutcome {
        status: "ok".into(),
        exit_code: Some(0),
        stdout: "a\0b\\0\0".into(),
        stderr: "\u{1}corral-escaped:plain".into(),
        compile_output: "warning\0".into(),
        error: Some("\0".into()),
        ..ExecutionOutcome::default()
    };
    assert!(
        store
            .execution_finished(2, "exe_1", &outcome)
            .await
            .unwrap()
    );
    let read = store.execution(None, "exe_1").await.unwrap().unwrap();
    assert_eq!(read.stdout, outcome.stdout);
    assert_eq!(read.stderr, outcome.stderr);
    assert_eq!(read.compile_output, outcome.compile_output);
    assert_eq!(read.error, outcome.error);
    let listed = store
        .executions(&ExecutionFilter {
            limit: 10,
            ..ExecutionFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed[0].stdout, outcome.stdout);
});
