//! Rate limits per IP, user and API key on every counter backend, sign-in
//! lockout shared through Redis, and the daily API-call quota.

use std::sync::Arc;

use axum::body::Body;
use http::Request;
use serde_json::json;

use corral_service::config::{Config, LimitsBackend};
use corral_store::Backend;

use crate::support::{TestApp, on_both_backends};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Limits with every knob off except those `change` sets.
fn limits(backend: LimitsBackend, change: impl FnOnce(&mut Config)) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        config.limits.backend = backend;
        config.limits.per_ip_per_minute = 0;
        config.limits.per_user_per_minute = 0;
        config.limits.per_key_per_minute = 0;
        if backend == LimitsBackend::Redis {
            config.limits.redis_url = Some(REDIS_URL.to_owned());
            // Tests run in parallel on one Redis: keep each test's keys apart.
            config.limits.redis_key_prefix = format!("corral-test-{}", corral_core::id::new_id());
        }
        change(config);
    }
}

async fn plans_from(app: &TestApp, ip: [u8; 4]) -> crate::support::TestResponse {
    app.send_from(
        ip,
        Request::get("/api/v1/plans").body(Body::empty()).unwrap(),
    )
    .await
}

/// Three a minute per IP: the fourth is 429 with `Retry-After` until the
/// minute ends; another IP is unaffected; the next minute starts afresh.
async fn per_ip_limit_holds(backend: Backend, limits_backend: LimitsBackend) {
    let app = TestApp::builder(backend)
        .config(limits(limits_backend, |c| c.limits.per_ip_per_minute = 3))
        .build()
        .await;
    // Start at the beginning of a minute so the whole test stays inside it.
    let now = app.clock_secs() * 1000;
    app.clock.advance(60_000 - now.rem_euclid(60_000));
    for _ in 0..3 {
        assert_eq!(plans_from(&app, [10, 0, 0, 1]).await.status, 200);
    }
    app.clock.advance(15_000);
    let refused = plans_from(&app, [10, 0, 0, 1]).await;
    let problem = refused.assert_problem(429, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("45"), "{problem}");
    assert_eq!(problem["retry_after_secs"], 45);
    assert_eq!(
        plans_from(&app, [10, 0, 0, 2]).await.status,
        200,
        "other IPs are not limited"
    );
    app.clock.advance(45_000);
    assert_eq!(
        plans_from(&app, [10, 0, 0, 1]).await.status,
        200,
        "a new minute"
    );
}

on_both_backends!(per_ip_limits_in_memory, |app| {
    per_ip_limit_holds(app.state.store.backend(), LimitsBackend::Memory).await;
});

on_both_backends!(per_ip_limits_in_the_database, |app| {
    per_ip_limit_holds(app.state.store.backend(), LimitsBackend::Database).await;
});

#[tokio::test]
async fn per_ip_limits_in_redis() {
    per_ip_limit_holds(Backend::Sqlite, LimitsBackend::Redis).await;
}

#[tokio::test]
async fn the_default_backend_is_memory_on_sqlite_database_on_postgres_and_redis_when_set() {
    let sqlite = TestApp::new(Backend::Sqlite).await;
    assert_eq!(sqlite.state.limiter.backend_name(), "memory");
    let postgres = TestApp::new(Backend::Postgres).await;
    assert_eq!(postgres.state.limiter.backend_name(), "database");
    let redis = TestApp::builder(Backend::Sqlite)
        .config(|c| c.limits.redis_url = Some(REDIS_URL.to_owned()))
        .build()
        .await;
    assert_eq!(redis.state.limiter.backend_name(), "redis");
}

on_both_backends!(keys_and_users_have_their_own_limits, |app| {
    let app = TestApp::builder(app.state.store.backend())
        .config(limits(LimitsBackend::Database, |c| {
            c.limits.per_key_per_minute = 2;
            c.limits.per_user_per_minute = 4;
        }))
        .build()
        .await;
    let now = app.clock_secs() * 1000;
    app.clock.advance(60_000 - now.rem_euclid(60_000));
    let (access, _) = app.register_and_login("limited").await;
    let (first, _) = app.create_key(&access, &["orgs:read"]).await; // user: 1
    let (second, _) = app.create_key(&access, &["orgs:read"]).await; // user: 2
    for _ in 0..2 {
        assert_eq!(
            app.call("GET", "/api/v1/users/me", &first, None)
                .await
                .status,
            200
        );
    }
    // user: 4 — the first key is at its own limit now.
    app.call("GET", "/api/v1/users/me", &first, None)
        .await
        .assert_problem(429, "rate_limited");
    // That refusal counted for the user (5 > 4): every credential of the user is limited.
    app.call("GET", "/api/v1/users/me", &second, None)
        .await
        .assert_problem(429, "rate_limited");
    app.call("GET", "/api/v1/users/me", &access, None)
        .await
        .assert_problem(429, "rate_limited");
    // Another user is not.
    let (other, _) = app.register_and_login("unlimited").await;
    assert_eq!(
        app.call("GET", "/api/v1/users/me", &other, None)
            .await
            .status,
        200
    );
});

/// Two replicas on one PostgreSQL count together through the database.
#[tokio::test]
async fn replicas_share_rate_limits_through_the_database() {
    let a = TestApp::builder(Backend::Postgres)
        .config(limits(LimitsBackend::Database, |c| {
            c.limits.per_ip_per_minute = 4
        }))
        .build()
        .await;
    replicas_share_a_limit(&a, a.replica().await).await;
}

/// Two replicas count together through Redis, and share the sign-in lockout.
#[tokio::test]
async fn replicas_share_rate_limits_and_lockout_through_redis() {
    let a = TestApp::builder(Backend::Postgres)
        .config(limits(LimitsBackend::Redis, |c| {
            c.limits.per_ip_per_minute = 4
        }))
        .build()
        .await;
    let b = a.replica().await;
    replicas_share_a_limit(&a, b).await;

    // Lockout: five failures through A, then even the right password through B is refused.
    let a = TestApp::builder(Backend::Postgres)
        .config(limits(LimitsBackend::Redis, |_| {}))
        .build()
        .await;
    let b = a.replica().await;
    a.register_and_login("locked").await;
    for _ in 0..5 {
        assert_eq!(a.login("locked", "wrong password!!").await.status, 401);
    }
    let refused = b.login("locked", "correct horse battery").await;
    refused.assert_problem(429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    // No lockout row went to the database: the state lives in Redis.
    let rows =
        corral_store::testing::scalar_i64(&a.state.store, "SELECT COUNT(*) FROM login_throttle")
            .await;
    assert_eq!(rows, 0);
    // After the lock, a success clears the count on every replica.
    a.clock.advance(31_000);
    assert_eq!(b.login("locked", "correct horse battery").await.status, 200);
    assert_eq!(
        a.login("locked", "wrong password!!").await.status,
        401,
        "count starts again"
    );
    drop(b);
}

async fn replicas_share_a_limit(a: &TestApp, b: TestApp) {
    let now = a.clock_secs() * 1000;
    a.clock.advance(60_000 - now.rem_euclid(60_000));
    for app in [a, &b, a, &b] {
        assert_eq!(plans_from(app, [10, 0, 0, 9]).await.status, 200);
    }
    plans_from(a, [10, 0, 0, 9])
        .await
        .assert_problem(429, "rate_limited");
    plans_from(&b, [10, 0, 0, 9])
        .await
        .assert_problem(429, "rate_limited");
}

// The Free plan's 20 API calls a day hold exactly under 30 concurrent
// requests of new work (turning a key on); sessions are not counted; the
// usage endpoint shows it; the quota resets at midnight UTC.
on_both_backends!(the_daily_api_call_quota_is_exact_under_concurrency, |app| {
    let (access, _) = app.register_and_login("quota").await;
    let (key, key_id) = app.create_key(&access, &["keys:write"]).await;
    let app = Arc::new(app);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let (app, key) = (app.clone(), key.clone());
        let path = format!("/api/v1/api-keys/{key_id}");
        requests.spawn(async move {
            app.call("PATCH", &path, &key, Some(json!({"is_active": true})))
                .await
        });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(res) = requests.join_next().await {
        let res = res.unwrap();
        match res.status.as_u16() {
            200 => ok += 1,
            _ => {
                let problem = res.assert_problem(429, "quota_exceeded");
                assert!(
                    problem["resets_at"]
                        .as_str()
                        .unwrap()
                        .ends_with("T00:00:00Z"),
                    "{problem}"
                );
                assert!(
                    problem["detail"].as_str().unwrap().contains("20"),
                    "{problem}"
                );
                assert!(res.header("retry-after").is_some());
                refused += 1;
            }
        }
    }
    assert_eq!(
        (ok, refused),
        (20, 10),
        "exactly the plan's 20 calls succeed"
    );

    // The signed-in session is not an API call with a key.
    let usage = app
        .call("GET", "/api/v1/users/me/usage", &access, None)
        .await;
    assert_eq!(usage.status, 200, "{}", usage.text());
    let usage = usage.json();
    assert_eq!(usage["plan"], "free");
    let quota = |name: &str| {
        usage["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        quota("api_calls"),
        json!({"name": "api_calls", "period": "day", "used": 20, "limit": 20, "remaining": 0})
    );
    assert_eq!(quota("executions")["limit"], 10);
    assert_eq!(
        quota("api_keys"),
        json!({"name": "api_keys", "used": 1, "limit": 2, "remaining": 1})
    );

    // Midnight UTC: a new day's quota.
    let now = app.clock_secs() * 1000;
    app.clock.advance(86_400_000 - now.rem_euclid(86_400_000));
    let path = format!("/api/v1/api-keys/{key_id}");
    assert_eq!(
        app.call("PATCH", &path, &key, Some(json!({"is_active": true})))
            .await
            .status,
        200
    );
});

// A spent daily quota refuses new work, never reading one's own data or
// cleaning up: reads, stops and deletes pass (counted while the quota
// lasts, uncounted after).
on_both_backends!(a_spent_quota_still_lets_one_read_stop_and_delete, |app| {
    let (access, _) = app.register_and_login("spent").await;
    let (key, _) = app.create_key(&access, &["sandboxes:write"]).await;
    // 20 creates that fail validation: each is new work, taken from the quota.
    let bad_create = json!({"resources": {"memory_mb": "lots"}});
    for _ in 0..20 {
        let res = app
            .call("POST", "/api/v1/sandboxes", &key, Some(bad_create.clone()))
            .await;
        res.assert_problem(422, "validation_failed");
    }
    app.call("POST", "/api/v1/sandboxes", &key, Some(bad_create.clone()))
        .await
        .assert_problem(429, "quota_exceeded");
    let id = corral_core::id::new_id();
    // (method, path, status): reads and clean-up reach their handlers.
    let cleanup = [
        ("GET", "/api/v1/sandboxes".to_owned(), 200),
        ("GET", "/api/v1/users/me".to_owned(), 200),
        ("GET", "/api/v1/users/me/usage".to_owned(), 200),
        ("GET", format!("/api/v1/sandboxes/{id}"), 404),
        ("POST", format!("/api/v1/sandboxes/{id}/stop"), 404),
        ("DELETE", format!("/api/v1/sandboxes/{id}"), 404),
    ];
    for _ in 0..2 {
        for (method, path, status) in &cleanup {
            let res = app.call(method, path, &key, None).await;
            assert_eq!(res.status, *status, "{method} {path}: {}", res.text());
        }
    }
    app.call("POST", "/api/v1/sandboxes", &key, Some(bad_create))
        .await
        .assert_problem(429, "quota_exceeded");
});

// Unlimited plans are not refused, and their calls are still counted.
on_both_backends!(unlimited_plans_are_counted_but_never_refused, |app| {
    let (access, _) = app.register_and_login("big").await;
    let id = app
        .call("GET", "/api/v1/users/me", &access, None)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.state
        .store
        .update_user_admin(0, &id, Some("enterprise"), None, None)
        .await
        .unwrap();
    let (key, _) = app.create_key(&access, &["orgs:read"]).await;
    let api_calls = || async {
        let usage = app
            .call("GET", "/api/v1/users/me/usage", &access, None)
            .await
            .json();
        usage["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == "api_calls")
            .cloned()
            .unwrap()
    };
    let (app, key) = (&app, &key);
    let calls = |n: usize| async move {
        for _ in 0..n {
            assert_eq!(
                app.call("GET", "/api/v1/users/me", key, None).await.status,
                200
            );
        }
    };
    calls(25).await;
    assert_eq!(
        api_calls().await,
        json!({"name": "api_calls", "period": "day", "used": 25, "limit": null, "remaining": null})
    );
    // The key's cache entry counts into the same counter after the report
    // flushed it: nothing is lost or counted twice.
    calls(5).await;
    assert_eq!(api_calls().await["used"], 30);
});
