//! Corral's use cases, under every surface.
//!
//! The HTTP API (`corral-server`), the MCP endpoint, the CLI and the queue
//! worker (`corral queue work`) are adapters: each turns its input into a
//! call of a function here, with the authenticated caller
//! ([`corral_core::auth::Principal`]) and typed inputs, and renders the
//! typed result or [`ServiceError`] in its own form. Nothing here knows
//! HTTP. Below this crate are the store, the queue and the runtime.
//!
//! [`Service`] is everything a use case may reach, built once per process
//! ([`Service::open`]) and shared by reference count.

pub mod accounts;
pub mod admin;
pub mod admission;
pub mod api_keys;
pub mod audit;
pub mod cache;
pub mod callbacks;
pub mod config;
pub mod contexts;
pub mod credentials;
pub mod driver;
pub mod email;
pub mod error;
pub mod exec_stdin;
pub mod executions;
pub mod jobs;
pub mod library;
pub mod limits;
pub mod logging;
pub mod mail;
pub mod orgs;
pub mod owners;
pub mod paging;
pub mod pool;
pub mod queues;
pub mod quota;
pub mod sandbox;
pub mod sandboxes;
pub mod sessions;
pub mod signals;
pub mod submit;
pub mod usage;

use std::sync::Arc;

use corral_core::clock::{Clock, SystemClock};
use corral_store::Store;

pub use config::Config;
pub use error::{ServiceError, ServiceResult};

/// Everything a use case may reach. Cheap to clone (one reference count).
#[derive(Debug, Clone)]
pub struct Service(Arc<Parts>);

impl std::ops::Deref for Service {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// What [`Service`] holds.
#[derive(Debug)]
pub struct Parts {
    /// The database.
    pub store: Store,
    /// The configuration the process started with.
    pub config: Arc<Config>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Signs and checks access tokens.
    pub tokens: Arc<credentials::TokenKeys>,
    /// API-key usage not yet written to the store.
    pub key_usage: Arc<usage::UsageBuffer>,
    /// Daily counts of unlimited quotas not yet written to the store.
    pub daily_usage: Arc<usage::DailyBuffer>,
    /// Recently authenticated callers.
    pub auth_cache: Arc<cache::AuthCache>,
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

/// Why the service could not be built.
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

impl Service {
    /// Opens (and migrates) the store named by `config` and records the installation.
    pub async fn open(config: Config) -> Result<Service, StartError> {
        let store = Store::open(&config.store()).await?;
        Service::assemble(store, config, Arc::new(SystemClock)).await
    }

    /// The service over an open, migrated store: records the installation
    /// and loads (or creates) the token signing key shared by all replicas.
    pub async fn assemble(
        store: Store,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Service, StartError> {
        store
            .ensure_instance(clock.as_ref(), env!("CARGO_PKG_VERSION"))
            .await?;
        let secret = store
            .token_signing_key(|| credentials::random_token(64))
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
        Ok(Service(Arc::new(Parts {
            queue,
            admission: Arc::default(),
            mailer: Arc::new(mailer),
            sandboxes: sandboxes::Sandboxes::new(&config),
            limiter: Arc::new(limiter),
            plans: Arc::new(plans),
            store,
            config: Arc::new(config),
            clock,
            tokens: Arc::new(credentials::TokenKeys::new(&secret)),
            key_usage: Arc::default(),
            auth_cache: Arc::default(),
            daily_usage: Arc::default(),
        })))
    }
}
