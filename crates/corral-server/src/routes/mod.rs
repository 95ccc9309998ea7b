//! HTTP handlers, grouped by domain. Each module exposes `fn routes() -> Router<AppState>`.

pub mod docs;
pub mod meta;
