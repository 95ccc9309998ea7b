//! The placement seam: where and how a sandbox runs, behind one trait, so
//! the use cases do not know whether it is a container on this host or a
//! pod elsewhere. `Sandboxes` (in `sandboxes.rs`: an OCI runtime on this
//! host) is the only driver today (its implementation is in that module); ARCHITECTURE.md says what a second one
//! (Kubernetes) must provide.
//!
//! Every method is named by the sandbox's id (the store's `sbx_…`); a
//! driver maps it to its own objects. Blocking work runs off the async
//! threads inside the driver.

use std::future::Future;
use std::pin::Pin;

use corral_runtime::{Limits, RuntimeError, Sandbox};
use corral_types::agent::{ExecRequest, ExecResult};
use corral_types::sandbox::SandboxStats;

use crate::Service;

/// The image name of the host's own root (read-only), not an OCI image.
pub const HOST_IMAGE: &str = "host";

/// A future a driver returns (boxed: the trait is used as an object).
pub type DriverFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A container of a driver and its runtime status (`running`, `paused`,
/// `stopped`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The driver's name of it (`corral-<sandbox id>` for the local one).
    pub container: String,
    /// Its runtime status.
    pub status: String,
}

/// What a driver needs to run one sandbox.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The sandbox's id.
    pub id: String,
    /// Its uid range (see `corral_store::ID_SLOTS`).
    pub slot: i64,
    /// Its resources.
    pub limits: Limits,
    /// Its image (`host` or a normalised reference).
    pub image: String,
}

impl Placement {
    /// The placement of a recorded sandbox.
    pub fn of(record: &corral_store::SandboxRecord) -> Placement {
        Placement {
            id: record.id.clone(),
            slot: record.id_slot.unwrap_or(0),
            limits: crate::sandbox::limits_of(record),
            image: record.image.clone(),
        }
    }
}

/// Where sandboxes run.
pub trait SandboxDriver: Send + Sync + std::fmt::Debug {
    /// Makes the sandbox `placement` names and starts it, on its disk
    /// (made empty if it has none); answers once its agent does. The
    /// message says why it could not.
    fn create(&self, placement: Placement) -> DriverFuture<'_, Result<(), String>>;

    /// Starts a stopped sandbox again on the disk it had (whatever a crash
    /// left of its old container goes first).
    fn start(&self, placement: Placement) -> DriverFuture<'_, Result<(), String>>;

    /// Ends the sandbox's programs and releases what it holds but its disk
    /// (thawing it first when `paused`). Idempotent.
    fn stop<'a>(&'a self, id: &'a str, paused: bool) -> DriverFuture<'a, ()>;

    /// Ends the sandbox and removes everything of it, its disk too. Idempotent.
    fn kill<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()>;

    /// Runs a program in the running sandbox to completion.
    fn exec<'a>(
        &'a self,
        id: &'a str,
        request: ExecRequest,
    ) -> DriverFuture<'a, Result<ExecResult, RuntimeError>>;

    /// A handle on the running sandbox's agent, for streams (exec output,
    /// terminals, processes, files). The local runtime's type: a remote
    /// driver provides the same agent protocol over its own transport.
    fn attach(&self, id: &str) -> Sandbox;

    /// What the sandbox uses now.
    fn stats<'a>(&'a self, id: &'a str) -> DriverFuture<'a, Result<SandboxStats, RuntimeError>>;

    /// Every container this driver runs (records or not), for the reconciler.
    fn list(&self) -> DriverFuture<'_, Result<Vec<Placed>, String>>;
}

impl Service {
    /// Where this service's sandboxes run.
    pub fn driver(&self) -> &dyn SandboxDriver {
        &self.sandboxes
    }
}
