//! Corral's domain rules, free of IO.
//!
//! Time and id generation live here behind small seams ([`clock::Clock`],
//! [`id::new_id`]) so every other crate gets the same representation: UUIDv7
//! ids as lowercase strings and times as UTC instants stored in Unix
//! milliseconds and shown as RFC 3339.

pub mod auth;
pub mod clock;
pub mod id;
pub mod net;
pub mod validate;
