//! Corral's HTTP API: the only crate that knows HTTP.
//!
//! [`app`] builds the whole `Router` from an [`AppState`] with no socket, so
//! tests drive it with `tower::ServiceExt::oneshot`; [`serve`] binds a
//! listener and runs it until SIGTERM/SIGINT.

pub mod auth;
pub mod error;
pub mod extract;
mod liveness;
pub mod metrics;
pub mod middleware;
mod routes;
/// The OpenAPI document (`corral openapi`, the committed snapshot).
pub use routes::openapi;
mod serve;

use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use tower_http::cors::{AllowOrigin, CorsLayer};

use corral_core::clock::Clock;
use corral_service::Config;
use corral_store::Store;
use corral_types::ErrorCode;

pub use corral_service::{Service, StartError};

pub use error::ApiError;
pub use serve::{ServeError, serve};

/// Everything a handler may reach: the [`Service`] (every use case's
/// state, reached through `Deref`) and what only HTTP has (metrics). One
/// `Arc`, so the clones axum makes for every extractor and middleware cost
/// one reference count.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Adapter>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Adapter {
    /// The use cases' state.
    pub service: Service,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
}

impl std::ops::Deref for AppState {
    type Target = Service;

    fn deref(&self) -> &Service {
        &self.0.service
    }
}

impl AppState {
    /// The HTTP adapter over `service`.
    pub fn new(service: Service) -> AppState {
        AppState(Arc::new(Adapter {
            service,
            metrics: Arc::new(metrics::Metrics::new()),
        }))
    }

    /// Opens (and migrates) the store named by `config` and records the installation.
    pub async fn open(config: Config) -> Result<AppState, StartError> {
        Service::open(config).await.map(AppState::new)
    }

    /// State over an open, migrated store.
    pub async fn assemble(
        store: Store,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<AppState, StartError> {
        Service::assemble(store, config, clock)
            .await
            .map(AppState::new)
    }

    /// The use cases' state.
    pub fn service(&self) -> &Service {
        &self.0.service
    }

    /// Prometheus metrics.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.0.metrics
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    app_with_routes(state, Router::new())
}

/// The application with `extra` routes mounted beside the built-in ones and
/// wrapped by the same middleware. Used by tests of cross-cutting behaviour
/// (extractor rejections, internal errors) that no public route triggers yet.
#[doc(hidden)]
pub fn app_with_routes(state: AppState, extra: Router<AppState>) -> Router {
    let config = state.config.clone();
    let router = Router::new()
        .merge(routes::api())
        .merge(routes::meta::routes())
        .merge(routes::docs::routes())
        .merge(routes::pages::routes())
        .merge(extra)
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not accept that method",
            )
            .into_response()
        })
        .with_state(state.clone());

    // One `layer` call: axum boxes each one around every route, and calling
    // a route clones every boxed level below it, so the cost grows with the
    // square of the depth. Outermost first: the envelope (request id,
    // problem bodies, metrics, security headers) wraps CORS and the body
    // limit, so their rejections become problems too; authorization is
    // innermost, just before the route (it passes what is not `/api/`).
    router.layer(
        tower::ServiceBuilder::new()
            .layer(middleware::EnvelopeLayer::new(
                state.metrics().clone(),
                config.hsts(),
            ))
            .option_layer(cors_layer(&config))
            .layer(middleware::BodyLimitLayer::new(
                config.server.body_limit_bytes,
                config.server.upload_limit_bytes,
            ))
            .layer(auth::AuthorizeLayer::new(state.clone())),
    )
}

/// CORS for the configured origins only; never a wildcard and never a
/// reflected Origin, so credentials cannot be borrowed by another site.
fn cors_layer(config: &Config) -> Option<CorsLayer> {
    let origins: Vec<http::HeaderValue> = config
        .server
        .cors_allowed_origins
        .iter()
        .filter_map(|o| http::HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                http::Method::GET,
                http::Method::POST,
                http::Method::PUT,
                http::Method::PATCH,
                http::Method::DELETE,
            ])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                http::HeaderName::from_static("idempotency-key"),
                http::HeaderName::from_static("x-corral-org"),
            ])
            .expose_headers([middleware::REQUEST_ID_HEADER.clone()])
            .allow_credentials(true)
            .max_age(std::time::Duration::from_secs(600)),
    )
}
