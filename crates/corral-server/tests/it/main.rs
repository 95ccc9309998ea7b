//! HTTP tests of the whole application, driven without a socket through
//! `tower::ServiceExt::oneshot`. Tests that touch the database run on both
//! SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

mod support;

mod contexts;
mod docs;
mod errors;
mod exec_io;
mod executions;
mod faults;
mod hostile;
mod identity;
mod library;
mod lifecycle;
mod limits;
mod mail;
mod meta;
mod middleware;
mod nul;
mod orgs;
mod queue;
mod sandboxes;
mod sessions;
mod storage;
mod terminals;
