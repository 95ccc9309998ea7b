//! Wire types of the operational endpoints (`/health`, `/ready`, version).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Liveness: the process is up and serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the endpoint answers.
    pub status: String,
    /// The server's version.
    pub version: String,
}

/// Readiness of one dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// `ok` or `fail`.
    pub status: String,
    /// Round-trip time of the check, in milliseconds.
    pub latency_ms: u64,
    /// Why the check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Readiness: the server can do useful work (its database answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// `ready` or `not_ready`.
    pub status: String,
    /// The database backend in use: `sqlite` or `postgres`.
    pub database_backend: String,
    /// The database check.
    pub database: Check,
}
