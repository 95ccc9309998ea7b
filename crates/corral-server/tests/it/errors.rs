//! Every bad input is a 4xx with a problem+json body; internal errors are opaque.

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::Request;
use serde::Deserialize;

use corral_server::extract::ApiJson;
use corral_server::{ApiError, AppState};
use corral_store::Backend;

use crate::support::TestApp;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "fields exist to be deserialized")]
struct CreateThing {
    name: String,
    size: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "fields exist to be deserialized")]
struct Size {
    memory_mb: u32,
}

/// Routes exercising the shared extractor and error paths.
fn probe_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/probe/things",
            post(|ApiJson(thing): ApiJson<CreateThing>| async move { thing.name }),
        )
        .route(
            "/probe/internal",
            get(|| async {
                Err::<(), _>(ApiError::internal(anyhow::anyhow!(
                    "secret connection string postgres://admin:hunter2@db"
                )))
            }),
        )
        .route(
            "/probe/panic-free-store-error",
            get(
                |axum::extract::State(state): axum::extract::State<AppState>| async move {
                    state.store.close().await;
                    state.store.ping().await.map_err(ApiError::from)?;
                    Ok::<_, ApiError>("unreachable")
                },
            ),
        )
}

async fn app() -> TestApp {
    TestApp::builder(Backend::Sqlite)
        .routes(probe_routes())
        .config(|c| c.server.body_limit_bytes = 1024)
        .build()
        .await
}

#[tokio::test]
async fn unknown_route_is_404_problem() {
    let app = app().await;
    let res = app.get("/api/v1/nope").await;
    let body = res.assert_problem(404, "not_found");
    assert_eq!(body["instance"], "/api/v1/nope");
}

#[tokio::test]
async fn wrong_method_is_405_problem_with_allow() {
    let app = app().await;
    let res = app
        .send(Request::delete("/health").body(Body::empty()).unwrap())
        .await;
    res.assert_problem(405, "method_not_allowed");
    assert!(
        res.header("allow").unwrap_or_default().contains("GET"),
        "{:?}",
        res.headers
    );
}

/// (content type, body, status, code, field)
#[tokio::test]
async fn bad_json_bodies_get_4xx_naming_the_field() {
    let app = app().await;
    let cases: &[(&str, &str, u16, &str, Option<&str>)] = &[
        (
            "application/json",
            r#"{"name": "#,
            400,
            "malformed_json",
            None,
        ),
        (
            "application/json",
            r#"not json"#,
            400,
            "malformed_json",
            None,
        ),
        (
            "application/json",
            r#"{"name": 42}"#,
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "application/json",
            r#"{}"#,
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "application/json",
            r#"{"name": "a", "org_id": "x"}"#,
            422,
            "validation_failed",
            Some("org_id"),
        ),
        (
            "application/json",
            r#"{"name": "a", "size": {"memory_mb": "big"}}"#,
            422,
            "validation_failed",
            Some("size.memory_mb"),
        ),
        (
            "text/plain",
            r#"{"name": "a"}"#,
            415,
            "unsupported_media_type",
            None,
        ),
        ("", r#"{"name": "a"}"#, 415, "unsupported_media_type", None),
    ];
    for (content_type, body, status, code, field) in cases {
        let mut request = Request::post("/probe/things");
        if !content_type.is_empty() {
            request = request.header("content-type", *content_type);
        }
        let res = app
            .send(request.body(Body::from(body.to_string())).unwrap())
            .await;
        let problem = res.assert_problem(*status, code);
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], *field, "{body}: {problem}");
            assert!(
                problem["detail"].as_str().unwrap().contains(field),
                "{problem}"
            );
        }
    }
    let ok = app.post_json("/probe/things", r#"{"name": "fine"}"#).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "fine");
}

#[tokio::test]
async fn body_over_the_limit_is_413_problem_with_or_without_content_length() {
    let app = app().await;
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(4096));

    let declared = app.post_json("/probe/things", &big).await;
    declared.assert_problem(413, "payload_too_large");

    // Chunked: no Content-Length, so the limit trips while reading.
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(100)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let streamed = app
        .send(
            Request::post("/probe/things")
                .header("content-type", "application/json")
                .body(Body::from_stream(futures_stream(chunks)))
                .unwrap(),
        )
        .await;
    streamed.assert_problem(413, "payload_too_large");

    // Even a route that reads no body refuses an oversized declared one.
    let res = app
        .send(
            Request::post("/health")
                .header("content-length", "999999")
                .body(Body::from(vec![b'x'; 999_999]))
                .unwrap(),
        )
        .await;
    assert!(res.status == 413 || res.status == 405, "{}", res.status);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
}

fn futures_stream(
    items: Vec<Result<String, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<String, std::io::Error>> + Send + 'static {
    tokio_stream::iter(items)
}

#[tokio::test]
async fn internal_errors_are_opaque_500_with_request_id() {
    let app = app().await;
    let res = app.get("/probe/internal").await;
    let body = res.assert_problem(500, "internal");
    let text = res.text();
    assert!(
        !text.contains("hunter2") && !text.contains("postgres://"),
        "{text}"
    );
    assert!(body["detail"].as_str().unwrap().contains("request id"));
}

#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after() {
    let app = app().await;
    let res = app.get("/probe/panic-free-store-error").await;
    let body = res.assert_problem(503, "service_unavailable");
    assert_eq!(res.header("retry-after"), Some("5"));
    assert_eq!(body["retry_after_secs"], 5);
}
