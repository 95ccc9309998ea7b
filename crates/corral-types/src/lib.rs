//! Everything Corral sends or receives over the wire.
//!
//! Only this crate defines wire shapes, so the server, the Rust client and the
//! generated OpenAPI document cannot drift apart. It does no IO.

pub mod agent;
pub mod contexts;
pub mod error;
pub mod executions;
pub mod identity;
pub mod library;
pub mod meta;
pub mod queue;
pub mod sandbox;
pub mod terminal;
pub mod times;

pub use error::{ErrorCode, FieldError, Problem};
