//! `GET /health` before the router: the liveness probe the connection's
//! service answers itself (see [`LivenessProbe`]), and the body it shares
//! with the routed `/health` handler.

use std::sync::LazyLock;

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};

use corral_types::meta::Health;

use crate::AppState;

/// The content type of `/health`.
pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// `/health`'s body, serialized once.
pub(crate) fn health_body() -> Bytes {
    static BODY: LazyLock<Bytes> = LazyLock::new(|| {
        let health = Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        Bytes::from(serde_json::to_vec(&health).unwrap_or_default())
    });
    BODY.clone()
}

/// `GET /health` answered by the connection's service before the router.
///
/// Liveness probes come often and must answer even if a middleware or
/// handler misbehaves, so this skips routing and the middleware stack: the
/// same body and security headers, a prebuilt response, one atomic counter
/// increment (the `http_requests` series for `/health`; no latency sample,
/// no request id). Through [`crate::app`] alone (as in tests) the routed
/// `/health` handler (`routes::meta`) answers with the same body.
#[derive(Debug, Clone)]
pub(crate) struct LivenessProbe {
    headers: http::HeaderMap,
    served: prometheus_client::metrics::counter::Counter,
}

impl LivenessProbe {
    pub(crate) fn new(state: &AppState) -> LivenessProbe {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, JSON);
        for (name, value) in crate::middleware::security_headers(state.config.hsts()) {
            headers.insert(name, value);
        }
        LivenessProbe {
            headers,
            served: state.metrics().request_counter("GET", "/health", 200),
        }
    }

    /// The response when `request` is `GET /health`, else `None`.
    pub(crate) fn answer<B>(&self, request: &http::Request<B>) -> Option<Response> {
        // Exactly `GET /health`: anything else (another method, a query
        // string) is the router's business.
        let uri = request.uri();
        if request.method() != http::Method::GET || uri.path() != "/health" || uri.query().is_some()
        {
            return None;
        }
        self.served.inc();
        let mut response = Response::new(axum::body::Body::from(health_body()));
        *response.headers_mut() = self.headers.clone();
        Some(response)
    }
}
