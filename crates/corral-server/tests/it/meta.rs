//! `/health`, `/ready`, `/metrics`.

use crate::support::on_both_backends;

on_both_backends!(health_is_ok_with_version, |app| {
    let res = app.get("/health").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["status"], "ok");
    assert_eq!(res.json()["version"], env!("CARGO_PKG_VERSION"));
});

on_both_backends!(ready_reports_the_backend_and_database_check, |app| {
    let res = app.get("/ready").await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"]["status"], "ok");
    assert_eq!(body["database_backend"], app.state.store.backend().as_str());
});

on_both_backends!(
    ready_is_503_with_a_report_when_the_database_is_gone,
    |app| {
        app.state.store.close().await;
        let res = app.get("/ready").await;
        assert_eq!(res.status, 503);
        assert_eq!(res.header("content-type"), Some("application/json"));
        let body = res.json();
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["database"]["status"], "fail");
        // Liveness does not depend on the database.
        assert_eq!(app.get("/health").await.status, 200);
    }
);

on_both_backends!(
    metrics_count_requests_per_route_template_and_show_the_pool,
    |app| {
        for _ in 0..3 {
            app.get("/health").await;
        }
        app.get("/no/such/route/123").await;
        app.get("/ready").await;
        let res = app.get("/metrics").await;
        assert_eq!(res.status, 200);
        assert!(
            res.header("content-type")
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = res.text();
        let has = |needle: &str| assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        has(r#"corral_http_requests_total{method="GET",route="/health",status="200"} 3"#);
        has(r#"corral_http_requests_total{method="GET",route="unmatched",status="404"} 1"#);
        has(r#"corral_http_request_duration_seconds_count{method="GET",route="/health"} 3"#);
        has("corral_db_pool_connections ");
        has("corral_db_pool_idle_connections ");
        has("corral_db_pool_max_connections ");
        assert!(
            !text.contains("/no/such/route/123"),
            "raw paths must not become labels"
        );
    }
);
