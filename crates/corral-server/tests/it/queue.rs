//! The job queue through the server: the admin API (403 for non-admins,
//! failed jobs listed, retried and cleared, sensitive payloads withheld),
//! queue gauges in `/metrics`, and the maintenance jobs.

use std::time::Duration;

use corral_core::auth::PlatformRole;
use corral_queue::NewJob;
use corral_service::credentials::hash_password;
use corral_store::NewUser;
use serde_json::json;

use crate::support::{TestApp, on_both_backends};

const PASSWORD: &str = "correct horse battery";

async fn admin_token(app: &TestApp) -> String {
    app.state
        .store
        .create_user(
            1,
            NewUser {
                email: "root@example.com".into(),
                username: "root".into(),
                password_hash: hash_password(PASSWORD).unwrap(),
                role: PlatformRole::Admin,
                plan_id: "enterprise".into(),
            },
        )
        .await
        .unwrap();
    app.login("root", PASSWORD).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Enqueues a job on `queue` and fails it for good; its id.
async fn failed_job(app: &TestApp, queue: &str, payload: serde_json::Value) -> String {
    let q = &app.state.queue;
    let id = q
        .enqueue(
            NewJob::new("test.boom", payload)
                .queue(queue)
                .max_attempts(1),
        )
        .await
        .unwrap()
        .id()
        .to_owned();
    let claimed = q
        .claim(&[queue.to_owned()], "test", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the job is ready");
    q.fail(&claimed, "it went boom", false).await.unwrap();
    id
}

on_both_backends!(queue_admin_is_for_admins_only, |app| {
    let (alice, _) = app.register_and_login("alice").await;
    for (method, path) in [
        ("GET", "/api/v1/admin/queues"),
        ("GET", "/api/v1/admin/jobs?state=failed"),
        ("GET", "/api/v1/admin/jobs/0190"),
        ("POST", "/api/v1/admin/jobs/0190/retry"),
        ("POST", "/api/v1/admin/queues/default/retry"),
        ("POST", "/api/v1/admin/queues/default/clear"),
    ] {
        app.call(method, path, &alice, None)
            .await
            .assert_problem(403, "forbidden");
    }
    app.call("GET", "/api/v1/admin/queues", "", None)
        .await
        .assert_problem(401, "unauthorized");
});

on_both_backends!(a_failed_job_is_listed_retried_and_cleared, |app| {
    let admin = admin_token(&app).await;
    let id = failed_job(&app, "default", json!({"n": 1})).await;

    let queues = app.call("GET", "/api/v1/admin/queues", &admin, None).await;
    assert_eq!(queues.status, 200, "{}", queues.text());
    let queues = queues.json();
    let default = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "default")
        .expect("the default queue is listed")
        .clone();
    assert_eq!(default["failed"], 1, "{queues}");

    let page = app
        .call(
            "GET",
            "/api/v1/admin/jobs?state=failed&queue=default",
            &admin,
            None,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let page = page.json();
    assert_eq!(page["items"][0]["id"], id.as_str(), "{page}");
    assert_eq!(page["items"][0]["last_error"], "it went boom");
    assert_eq!(page["items"][0]["payload"], json!({"n": 1}));
    assert!(page["next_cursor"].is_null());

    app.call("GET", "/api/v1/admin/jobs?state=bogus", &admin, None)
        .await
        .assert_problem(422, "validation_failed");

    let retried = app
        .call(
            "POST",
            &format!("/api/v1/admin/jobs/{id}/retry"),
            &admin,
            None,
        )
        .await;
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.json()["state"], "pending");
    // Not failed any more: a second retry conflicts.
    app.call(
        "POST",
        &format!("/api/v1/admin/jobs/{id}/retry"),
        &admin,
        None,
    )
    .await
    .assert_problem(409, "conflict");
    app.call("GET", "/api/v1/admin/jobs/nope", &admin, None)
        .await
        .assert_problem(404, "not_found");

    failed_job(&app, "other", json!({})).await;
    let all = app
        .call("POST", "/api/v1/admin/queues/other/retry", &admin, None)
        .await;
    assert_eq!(all.json()["count"], 1, "{}", all.text());

    let cleared = app
        .call("POST", "/api/v1/admin/queues/default/clear", &admin, None)
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    assert_eq!(cleared.json()["count"], 1);
    app.call("GET", &format!("/api/v1/admin/jobs/{id}"), &admin, None)
        .await
        .assert_problem(404, "not_found");

    let audit = app
        .call("GET", "/api/v1/admin/audit?limit=200", &admin, None)
        .await
        .json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for action in ["queue.job_retry", "queue.retry_all", "queue.clear"] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
});

on_both_backends!(job_pages_follow_the_cursor, |app| {
    let admin = admin_token(&app).await;
    for n in 0..3 {
        failed_job(&app, "default", json!({ "n": n })).await;
    }
    let first = app
        .call(
            "GET",
            "/api/v1/admin/jobs?state=failed&limit=2",
            &admin,
            None,
        )
        .await
        .json();
    assert_eq!(first["items"].as_array().unwrap().len(), 2, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = app
        .call(
            "GET",
            &format!("/api/v1/admin/jobs?state=failed&limit=2&cursor={cursor}"),
            &admin,
            None,
        )
        .await
        .json();
    assert_eq!(second["items"].as_array().unwrap().len(), 1, "{second}");
    assert!(second["next_cursor"].is_null());
});

#[tokio::test]
async fn sensitive_payloads_are_never_shown() {
    let app = TestApp::builder(corral_store::Backend::Sqlite)
        .config(|c| {
            c.queue.encryption_key = Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into());
        })
        .build()
        .await;
    let admin = admin_token(&app).await;
    let id = app
        .state
        .queue
        .enqueue(NewJob::new("test.secret", json!({"password": "hunter2"})).sensitive())
        .await
        .unwrap()
        .id()
        .to_owned();
    for path in [
        format!("/api/v1/admin/jobs/{id}"),
        "/api/v1/admin/jobs".to_owned(),
    ] {
        let res = app.call("GET", &path, &admin, None).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(!res.text().contains("hunter2"), "{}", res.text());
    }
    let job = app
        .call("GET", &format!("/api/v1/admin/jobs/{id}"), &admin, None)
        .await
        .json();
    assert_eq!(job["sensitive"], true);
    assert!(job["payload"].is_null());
}

on_both_backends!(metrics_show_queue_gauges, |app| {
    failed_job(&app, "default", json!({})).await;
    app.state
        .queue
        .enqueue(NewJob::new("test.wait", json!({})).queue("default"))
        .await
        .unwrap();
    let text = app.get("/metrics").await.text();
    for line in [
        "corral_queue_jobs{queue=\"default\",state=\"failed\"} 1",
        "corral_queue_jobs{queue=\"default\",state=\"pending\"} 1",
        "corral_queue_jobs{queue=\"default\",state=\"running\"} 0",
        "corral_queue_completed_last_minute{queue=\"default\"} 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(text.contains("corral_queue_oldest_pending_seconds{queue=\"default\"}"));
});

on_both_backends!(maintenance_jobs_run_on_workers, |app| {
    use corral_core::clock::Clock;
    // A daily count from long ago and one from today.
    let today = corral_service::quota::day_of(app.clock.now_ms());
    app.state
        .store
        .add_daily("someone", "executions", today - 1000, 3)
        .await
        .unwrap();
    app.state
        .store
        .add_daily("someone", "executions", today, 2)
        .await
        .unwrap();
    let q = &app.state.queue;
    for kind in [
        corral_service::jobs::USAGE_PRUNE,
        corral_service::jobs::QUEUE_PRUNE,
    ] {
        q.enqueue(NewJob::new(kind, json!({})).queue(corral_service::jobs::MAINTENANCE_QUEUE))
            .await
            .unwrap();
    }
    let mut options = corral_service::jobs::worker_options(&app.state.config);
    options.poll_interval = Duration::from_millis(50);
    let background = corral_service::jobs::start(&app.state, options);
    for _ in 0..200 {
        let stats = q.stats().await.unwrap();
        let done = stats
            .iter()
            .find(|s| s.queue == corral_service::jobs::MAINTENANCE_QUEUE)
            .is_some_and(|s| s.completed == 2);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    background.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        app.state
            .store
            .daily_usage("someone", today - 1000)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        app.state.store.daily_usage("someone", today).await.unwrap(),
        vec![("executions".to_owned(), 2)]
    );
    let failed = q.failed(None, 10).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
});
