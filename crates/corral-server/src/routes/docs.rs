//! The OpenAPI document and the two documentation pages, all served from the
//! binary so they work with no internet: Swagger UI at `/docs` (assets from
//! the `utoipa-swagger-ui` crate) and Redoc at `/redoc` (script vendored from
//! npm into `assets/`).

use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_swagger_ui::SwaggerUi;

use super::openapi::api_doc;
use crate::AppState;

static REDOC_JS: &[u8] = include_bytes!("../../assets/redoc.standalone.js");

const REDOC_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Corral API reference</title>
<link rel="icon" href="data:,">
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/redoc/redoc.standalone.js"></script>
</body>
</html>
"#;

/// The docs pages load nothing from elsewhere: a strict policy makes the
/// browser refuse any other origin (Redoc's CDN logo included).
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        // The document is built on its first request, not at start: it is
        // large, and building it touches megabytes of code and heap that an
        // idle server never needs.
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .route("/openapi.json", get(openapi_json))
        .route("/redoc", get(redoc_page))
        .route("/redoc/redoc.standalone.js", get(redoc_js))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CSP),
        ))
}

async fn openapi_json() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = DOCUMENT.get_or_init(|| {
        api_doc()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response()
}

async fn redoc_page() -> Html<&'static str> {
    Html(REDOC_PAGE)
}

async fn redoc_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS,
    )
        .into_response()
}
