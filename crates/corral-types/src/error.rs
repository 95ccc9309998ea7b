//! The stable error-code table and the RFC 9457 problem body.
//!
//! SDKs branch on `code`, never on `title` or `detail`, so a code, once
//! published, keeps its meaning and its HTTP status forever. Add new codes at
//! the end of the table; never rename one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:literal, $title:literal), )*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status that always accompanies this code.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// A short human summary, the same for every occurrence.
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }
        }
    };
}

error_codes! {
    /// The request is malformed in a way no more specific code covers.
    BadRequest => ("bad_request", 400, "Bad request"),
    /// The body is not syntactically valid JSON.
    MalformedJson => ("malformed_json", 400, "Malformed JSON"),
    /// The body or query is well-formed but a field is missing, unknown or invalid.
    ValidationFailed => ("validation_failed", 422, "Validation failed"),
    /// No valid credentials were presented.
    Unauthorized => ("unauthorized", 401, "Unauthorized"),
    /// The credentials are valid but do not allow this action.
    Forbidden => ("forbidden", 403, "Forbidden"),
    /// The resource does not exist, or is not visible to the caller.
    NotFound => ("not_found", 404, "Not found"),
    /// The route exists but not with this HTTP method.
    MethodNotAllowed => ("method_not_allowed", 405, "Method not allowed"),
    /// The server gave up waiting for the request.
    RequestTimeout => ("request_timeout", 408, "Request timeout"),
    /// The request conflicts with the current state of the resource.
    Conflict => ("conflict", 409, "Conflict"),
    /// The body is larger than the configured limit.
    PayloadTooLarge => ("payload_too_large", 413, "Payload too large"),
    /// The body's content type is not one this route accepts.
    UnsupportedMediaType => ("unsupported_media_type", 415, "Unsupported media type"),
    /// A plan quota is used up until it resets.
    QuotaExceeded => ("quota_exceeded", 429, "Quota exceeded"),
    /// Too many requests; retry after the `Retry-After` header.
    RateLimited => ("rate_limited", 429, "Rate limited"),
    /// An unexpected server fault; the body carries a request id for the logs.
    Internal => ("internal", 500, "Internal server error"),
    /// A dependency (such as the database) is unavailable; retry later.
    ServiceUnavailable => ("service_unavailable", 503, "Service unavailable"),
    /// The sandbox's disk has no room for this (bytes or files); nothing was
    /// written, and the sandbox goes on working.
    NoSpace => ("no_space", 507, "Insufficient storage"),
}

impl ErrorCode {
    /// The code that best describes an HTTP status produced outside Corral's
    /// own handlers (framework rejections, middleware).
    pub fn for_status(status: u16) -> ErrorCode {
        match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            408 => ErrorCode::RequestTimeout,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            422 => ErrorCode::ValidationFailed,
            429 => ErrorCode::RateLimited,
            503 => ErrorCode::ServiceUnavailable,
            507 => ErrorCode::NoSpace,
            400..=499 => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }

    /// The RFC 9457 `type` URI for this code.
    pub fn type_uri(self) -> String {
        format!("urn:corral:error:{}", self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// Dotted path of the field (`resources.memory_mb`, `items[2].name`); `.` for the whole body.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem details body (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// URI naming the problem type (`urn:corral:error:<code>`).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Human explanation of this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path this problem occurred on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Stable machine-readable code; branch on this.
    pub code: ErrorCode,
    /// The request id, to quote when reporting a problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Field-level errors for `validation_failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds until a retry may succeed (`rate_limited`, `quota_exceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// When a used-up quota resets (RFC 3339), for `quota_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

impl Problem {
    /// A problem of the given code with an optional detail.
    pub fn new(code: ErrorCode, detail: impl Into<Option<String>>) -> Problem {
        Problem {
            type_uri: code.type_uri(),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            instance: None,
            code,
            request_id: None,
            errors: Vec::new(),
            retry_after_secs: None,
            resets_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_serialize_as_their_table_string() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
            assert!(
                (400..600).contains(&code.status()),
                "{code} has a non-error status"
            );
        }
    }

    #[test]
    fn status_mapping_round_trips_for_specific_codes() {
        for code in ErrorCode::ALL {
            let back = ErrorCode::for_status(code.status());
            assert_eq!(back.status(), code.status(), "{code}");
        }
        assert_eq!(ErrorCode::for_status(418), ErrorCode::BadRequest);
        assert_eq!(ErrorCode::for_status(502), ErrorCode::Internal);
    }
}
