//! Corral's HTTP API: the only crate that knows HTTP.
//!
//! [`app`] builds the whole `Router` from an [`AppState`] with no socket, so
//! tests drive it with `tower::ServiceExt::oneshot`; [`serve`] binds a
//! listener and runs it until SIGTERM/SIGINT.

pub mod admission;
pub mod auth;
pub mod callbacks;
pub mod config;
pub mod error;
pub mod exec_stdin;
pub mod executions;
pub mod extract;
pub mod jobs;
pub mod limits;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pool;
pub mod quota;
mod routes;
pub mod sandboxes;
mod serve;

use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use tower_http::cors::{AllowOrigin, CorsLayer};

use corral_core::clock::{Clock, SystemClock};
use corral_store::Store;
use corral_types::ErrorCode;

pub use config::Config;

/// Account creation shared by the API and the CLI.
pub mod accounts {
    pub use crate::routes::auth::create_checked;
}
pub use error::ApiError;
/// The automatic sandbox steps (auto-stop, auto-delete) the server runs on a timer.
pub use routes::sandboxes::sweep as sweep_sandboxes;
pub use serve::{ServeError, serve, shutdown_signal};

/// Everything a handler may reach. One `Arc`, so the clones axum makes for
/// every extractor and middleware cost one reference count, not one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Services {
    /// The database.
    pub store: Store,
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Signs and checks access tokens (shared: the state is cloned per request).
    pub tokens: Arc<auth::credentials::TokenKeys>,
    /// API-key usage not yet written to the store.
    pub key_usage: Arc<auth::usage::UsageBuffer>,
    /// Daily counts of unlimited quotas not yet written to the store.
    pub daily_usage: Arc<auth::usage::DailyBuffer>,
    /// Recently authenticated callers.
    pub auth_cache: Arc<auth::cache::AuthCache>,
    /// Rate limits and sign-in lockout.
    pub limiter: Arc<limits::Limiter>,
    /// Outgoing email.
    pub mailer: Arc<mail::Mailer>,
    /// Sandboxes on this host.
    pub sandboxes: sandboxes::Sandboxes,
    /// Every plan, by id (plans change only with migrations).
    pub plans: Arc<std::collections::HashMap<String, corral_store::Plan>>,
    /// The durable job queue (`[queue]`); handlers are registered in [`jobs`].
    pub queue: corral_queue::Queue,
    /// How many of each org's executions run at once ([`admission`]).
    pub admission: Arc<admission::Admission>,
}

/// Why the server state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database.
    #[error(transparent)]
    Store(#[from] corral_store::StoreError),
    /// The rate-limit backend.
    #[error(transparent)]
    Limits(#[from] limits::LimitsError),
    /// The email backend.
    #[error("cannot set up email")]
    Mail(#[from] mail::MailError),
    /// The job queue.
    #[error("cannot open the job queue")]
    Queue(#[from] corral_queue::QueueError),
}

impl AppState {
    /// Opens (and migrates) the store named by `config` and records the installation.
    pub async fn open(config: Config) -> Result<AppState, StartError> {
        let store = Store::open(&config.store()).await?;
        AppState::assemble(store, config, Arc::new(SystemClock)).await
    }

    /// State over an open, migrated store: records the installation and
    /// loads (or creates) the token signing key shared by all replicas.
    pub async fn assemble(
        store: Store,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<AppState, StartError> {
        store
            .ensure_instance(clock.as_ref(), env!("CARGO_PKG_VERSION"))
            .await?;
        let secret = store
            .token_signing_key(|| auth::credentials::random_token(64))
            .await?;
        let limiter = limits::Limiter::connect(&config.limits, &store).await?;
        let plans = store
            .plans()
            .await?
            .into_iter()
            .map(|plan| (plan.id.clone(), plan))
            .collect();
        let mailer = mail::Mailer::new(&config)?;
        let queue = corral_queue::Queue::open(store.clone(), config.queue_config()).await?;
        Ok(AppState(Arc::new(Services {
            queue,
            admission: Arc::default(),
            mailer: Arc::new(mailer),
            sandboxes: sandboxes::Sandboxes::new(&config),
            limiter: Arc::new(limiter),
            plans: Arc::new(plans),
            store,
            config: Arc::new(config),
            metrics: Arc::new(metrics::Metrics::new()),
            clock,
            tokens: Arc::new(auth::credentials::TokenKeys::new(&secret)),
            key_usage: Arc::default(),
            auth_cache: Arc::default(),
            daily_usage: Arc::default(),
        })))
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
                state.metrics.clone(),
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
