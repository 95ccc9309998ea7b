//! HTTP tests of the whole application, driven without a socket through
//! `tower::ServiceExt::oneshot`. Tests that touch the database run on both
//! SQLite and PostgreSQL.

mod support;

mod docs;
mod errors;
mod meta;
mod middleware;
