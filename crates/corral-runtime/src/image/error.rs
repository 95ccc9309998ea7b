//! The one error type of the image store.

use std::path::PathBuf;

/// What went wrong while pulling, importing, unpacking or reading an image.
///
/// Every message says what was being attempted, in lowercase, so the CLI can
/// print it as a one-line `error: …`.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error(
        "registry {registry} refused the credentials for {reference} (authentication failed: {detail})"
    )]
    Unauthorized {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error("cannot {action} {reference}: {}", chain(.source))]
    Registry {
        action: &'static str,
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error(
        "refusing to pull {reference}: it would connect to {host}, which is not a public HTTPS address (`sandbox.allowed_registries` and `sandbox.insecure_registries` open a registry)"
    )]
    Refused { reference: String, host: String },
    #[error("refusing to pull {reference}: it exceeds the limit of {what}")]
    PullLimit { reference: String, what: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing layer {layer}: entry `{entry}` {reason}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("refusing layer {layer}: it exceeds the limit of {limit} {what}")]
    LimitExceeded {
        layer: String,
        what: &'static str,
        limit: u64,
    },
    #[error("cannot read layer {layer}: {source}")]
    Archive {
        layer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image {what}: {reason}")]
    InvalidImage { what: String, reason: String },
    #[error("unsupported {what}: {value}")]
    Unsupported { what: &'static str, value: String },
    #[error("no image named {0}")]
    NotFound(String),
    #[error("cannot {action}: {reason}")]
    Other {
        action: &'static str,
        reason: String,
    },
}

/// An error and its causes on one line (`a: b: c`), skipping a cause whose
/// text its parent already shows.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

impl ImageError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> ImageError {
        ImageError::InvalidImage {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
