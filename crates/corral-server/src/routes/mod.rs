//! HTTP handlers, grouped by domain. Each module exposes `fn routes() -> Router<AppState>`.

pub mod account;
pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod contexts;
pub mod docs;
pub mod email;
pub mod executions;
pub mod files;
pub mod library;
pub mod meta;
pub mod openapi;
pub mod orgs;
pub mod pages;
pub mod processes;
pub mod queues;
pub mod sandboxes;
pub mod sessions;
pub mod terminals;

use axum::Router;

use crate::AppState;

/// Every `/api/v1` route; the authorization middleware wraps all of them.
pub fn api() -> Router<AppState> {
    Router::new()
        .merge(auth::routes())
        .merge(account::routes())
        .merge(api_keys::routes())
        .merge(admin::routes())
        .merge(queues::routes())
        .merge(orgs::routes())
        .merge(sessions::routes())
        .merge(email::routes())
        .merge(sandboxes::routes())
        .merge(files::routes())
        .merge(terminals::routes())
        .merge(processes::routes())
        .merge(library::routes())
        .merge(contexts::routes())
        .merge(executions::routes())
}
