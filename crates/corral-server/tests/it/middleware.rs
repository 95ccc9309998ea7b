//! Request ids, security headers, CORS.

use axum::body::Body;
use http::Request;

use corral_store::Backend;

use crate::support::TestApp;

#[tokio::test]
async fn every_response_has_a_v7_request_id_and_security_headers() {
    let app = TestApp::new(Backend::Sqlite).await;
    for path in ["/health", "/nope", "/docs/", "/openapi.json"] {
        let res = app.get(path).await;
        let id = res
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{path}: no request id"));
        assert_eq!(
            uuid::Uuid::parse_str(id).unwrap().get_version_num(),
            7,
            "{path}"
        );
        assert_eq!(
            res.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(res.header("referrer-policy"), Some("no-referrer"), "{path}");
        let csp = res.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        if path.starts_with("/docs") {
            assert!(
                csp.starts_with("default-src 'self'"),
                "{path}: docs are locked to 'self': {csp}"
            );
        }
        assert_eq!(
            res.header("strict-transport-security"),
            None,
            "{path}: no HSTS without TLS"
        );
    }
}

#[tokio::test]
async fn a_plain_caller_request_id_is_kept_and_a_hostile_one_replaced() {
    let app = TestApp::new(Backend::Sqlite).await;
    let with_id = |id: &str| {
        Request::get("/nope")
            .header("x-request-id", id)
            .body(Body::empty())
            .unwrap()
    };

    let res = app.send(with_id("trace-abc_123.4")).await;
    assert_eq!(res.header("x-request-id"), Some("trace-abc_123.4"));
    assert_eq!(res.json()["request_id"], "trace-abc_123.4");

    for hostile in ["x".repeat(65), "a b".into(), "<script>".into()] {
        let res = app.send(with_id(&hostile)).await;
        let id = res.header("x-request-id").unwrap();
        assert_ne!(id, hostile);
        assert!(uuid::Uuid::parse_str(id).is_ok());
    }
}

#[tokio::test]
async fn hsts_is_sent_when_served_over_tls() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.server.public_url = Some("https://corral.example.com".into()))
        .build()
        .await;
    let res = app.get("/health").await;
    assert_eq!(
        res.header("strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
}

#[tokio::test]
async fn cors_allows_only_configured_origins_and_never_reflects_others() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.server.cors_allowed_origins = vec!["https://app.example.com".into()])
        .build()
        .await;
    let preflight = |origin: &str| {
        Request::options("/health")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = app.send(preflight("https://app.example.com")).await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );

    let evil = app.send(preflight("https://evil.example.net")).await;
    assert_eq!(evil.header("access-control-allow-origin"), None);

    let simple = app
        .send(
            Request::get("/health")
                .header("origin", "https://evil.example.net")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(simple.header("access-control-allow-origin"), None);

    // With no origins configured, no CORS headers at all.
    let closed = TestApp::new(Backend::Sqlite).await;
    let res = closed.send(preflight("https://app.example.com")).await;
    assert_eq!(res.header("access-control-allow-origin"), None);
}
