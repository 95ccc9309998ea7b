//! What can go wrong talking to a Corral server.

use corral_types::{ErrorCode, FieldError, Problem};

/// An error of a [`crate::Client`] call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status (its RFC 9457 problem, when
    /// it sent one).
    #[error("{0}")]
    Api(Box<ApiError>),
    /// No connection could be made (refused, no route, DNS, timeout).
    #[error("cannot reach the Corral server at {url}: {reason}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// The underlying cause, such as `Connection refused (os error 111)`.
        reason: String,
    },
    /// The connection broke during the exchange.
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The request URL.
        url: String,
        /// The underlying cause.
        reason: String,
    },
    /// The server answered with something that is not what this call expects.
    #[error("unexpected answer from {url}: {reason}")]
    Decode {
        /// The request URL.
        url: String,
        /// What did not fit.
        reason: String,
    },
    /// The base URL given to [`crate::Client::new`] is unusable.
    #[error("invalid server URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// The server's error, when the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(api) => Some(api),
            _ => None,
        }
    }

    /// The problem `code` (`not_found`, `validation_failed`, …), when the
    /// server answered with an error.
    pub fn code(&self) -> Option<&str> {
        self.api().map(|a| a.code.as_str())
    }

    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|a| a.status)
    }
}

/// An error answer of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable code from the problem body (or derived from the status when
    /// the body was not problem+json). Kept as a string so codes newer than
    /// this client are still shown.
    pub code: String,
    /// The occurrence's explanation.
    pub detail: Option<String>,
    /// Field errors of `validation_failed`.
    pub errors: Vec<FieldError>,
    /// The request id, to quote when reporting a problem.
    pub request_id: Option<String>,
    /// Seconds until a retry may succeed.
    pub retry_after_secs: Option<u64>,
    /// The whole problem body, when it parsed as one this client knows.
    pub problem: Option<Problem>,
}

impl ApiError {
    /// Reads an error answer: a problem+json body if there is one, else a
    /// summary of the status and the start of the body.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> ApiError {
        let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let code = value
            .as_ref()
            .and_then(|v| v.get("code"))
            .and_then(|c| c.as_str())
            .map(str::to_owned);
        let Some((value, code)) = value.zip(code) else {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let snippet: String = text.chars().take(200).collect();
            return ApiError {
                status,
                code: ErrorCode::for_status(status).as_str().to_owned(),
                detail: Some(if snippet.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {snippet}")
                }),
                errors: Vec::new(),
                request_id: None,
                retry_after_secs: None,
                problem: None,
            };
        };
        let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let errors = value
            .get("errors")
            .and_then(|e| serde_json::from_value::<Vec<FieldError>>(e.clone()).ok())
            .unwrap_or_default();
        ApiError {
            status: value
                .get("status")
                .and_then(serde_json::Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(status),
            detail: text("detail").or_else(|| text("title")),
            request_id: text("request_id"),
            retry_after_secs: value
                .get("retry_after_secs")
                .and_then(serde_json::Value::as_u64),
            errors,
            problem: serde_json::from_value(value).ok(),
            code,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        if self.errors.len() > 1 {
            for e in &self.errors {
                write!(f, "; `{}`: {}", e.field, e.message)?;
            }
        }
        if let Some(secs) = self.retry_after_secs {
            write!(f, " (retry after {secs} s)")?;
        }
        Ok(())
    }
}

/// The innermost cause of an error: for a refused connection
/// `Connection refused (os error 111)` rather than reqwest's outer
/// "error sending request".
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn a_problem_body_gives_code_detail_and_fields() {
        let body = br#"{"type":"urn:corral:error:validation_failed","title":"Validation failed",
            "status":422,"detail":"`resources.memory_mb`: must be between 16 and 128 on your plan",
            "code":"validation_failed","request_id":"r1",
            "errors":[{"field":"resources.memory_mb","message":"must be between 16 and 128 on your plan"}]}"#;
        let e = ApiError::from_body(422, body);
        assert_eq!(e.code, "validation_failed");
        assert_eq!(e.status, 422);
        assert_eq!(e.request_id.as_deref(), Some("r1"));
        assert_eq!(e.errors.len(), 1);
        assert!(e.problem.is_some());
        assert_eq!(
            e.to_string(),
            "validation_failed: `resources.memory_mb`: must be between 16 and 128 on your plan"
        );
    }

    #[test]
    fn an_unknown_code_is_kept_as_is() {
        let body =
            br#"{"type":"x","title":"T","status":418,"code":"teapot_busy","detail":"later"}"#;
        let e = ApiError::from_body(418, body);
        assert_eq!(e.to_string(), "teapot_busy: later");
        assert!(e.problem.is_none(), "not a code this client knows");
    }

    #[test]
    fn several_field_errors_are_all_listed_and_retry_after_shown() {
        let body = br#"{"status":422,"code":"validation_failed","detail":"2 fields are invalid",
            "errors":[{"field":"a","message":"bad"},{"field":"b","message":"worse"}]}"#;
        let e = ApiError::from_body(422, body);
        assert_eq!(
            e.to_string(),
            "validation_failed: 2 fields are invalid; `a`: bad; `b`: worse"
        );
        let body = br#"{"status":429,"code":"quota_exceeded","detail":"daily executions used up","retry_after_secs":60}"#;
        assert_eq!(
            ApiError::from_body(429, body).to_string(),
            "quota_exceeded: daily executions used up (retry after 60 s)"
        );
    }

    #[test]
    fn a_body_that_is_not_a_problem_is_summarised_by_status() {
        let e = ApiError::from_body(502, b"<html>Bad Gateway</html>");
        assert_eq!(e.code, "internal");
        assert_eq!(
            e.to_string(),
            "internal: HTTP 502: <html>Bad Gateway</html>"
        );
        let e = ApiError::from_body(404, b"");
        assert_eq!(e.to_string(), "not_found: HTTP 404");
    }
}
