//! The one HTTP error type. Handlers return `Result<_, ApiError>`; every
//! error body is RFC 9457 problem+json with a stable code from
//! [`corral_types::ErrorCode`].
//!
//! Bad input is shown to the caller as it is. Internal errors become an
//! opaque 500: the cause is kept in a response extension so the problem
//! middleware can log it next to the request id, and never reaches the body.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use corral_service::ServiceError;
use corral_store::StoreError;
use corral_types::error::PROBLEM_CONTENT_TYPE;
use corral_types::{ErrorCode, FieldError, Problem};

/// An error answered to an API caller.
#[derive(Debug)]
pub struct ApiError {
    // Boxed: handlers return Result<_, ApiError> everywhere; keep the Err small.
    problem: Box<Problem>,
    cause: Option<anyhow::Error>,
    headers: Vec<(http::HeaderName, HeaderValue)>,
}

/// The cause of an internal error, carried from the handler to the logging middleware.
#[derive(Debug, Clone)]
pub(crate) struct InternalCause(pub(crate) Arc<anyhow::Error>);

impl ApiError {
    /// An error with `code` and a message for the caller.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            problem: Box::new(Problem::new(code, Some(detail.into()))),
            cause: None,
            headers: Vec::new(),
        }
    }

    /// 404 for `what` (for example `sandbox`); also used for other tenants' objects.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// 422 with one message per bad field.
    pub fn validation(errors: Vec<FieldError>) -> ApiError {
        let detail = match errors.as_slice() {
            [one] => format!("`{}`: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        let mut error = ApiError::new(ErrorCode::ValidationFailed, detail);
        error.problem.errors = errors;
        error
    }

    /// 422 for one bad field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    /// An unexpected fault: the caller sees only an opaque 500 and a request id.
    pub fn internal(cause: impl Into<anyhow::Error>) -> ApiError {
        ApiError {
            problem: Box::new(Problem::new(
                ErrorCode::Internal,
                Some("an internal error occurred; quote the request id when reporting it".into()),
            )),
            cause: Some(cause.into()),
            headers: Vec::new(),
        }
    }

    /// Adds a response header (such as `WWW-Authenticate`).
    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// Says when a used-up quota resets (RFC 3339).
    pub fn set_resets_at(&mut self, at: String) {
        self.problem.resets_at = Some(at);
    }

    /// Keeps `cause` for the log (5xx responses log it with the request id).
    pub fn with_cause(mut self, cause: impl Into<anyhow::Error>) -> ApiError {
        self.cause = Some(cause.into());
        self
    }

    /// Adds `Retry-After` (and `retry_after_secs` in the body).
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.problem.retry_after_secs = Some(secs);
        self
    }

    /// The problem body this error answers with.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ServiceError::from(error).into()
    }
}

/// The one mapping from the use cases' errors to problems. Codes and
/// statuses come from [`ServiceError::code`]; causes go to the log only.
impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        let code = error.code();
        match error {
            ServiceError::Validation(errors) => ApiError::validation(errors),
            ServiceError::Internal(cause) => ApiError::internal(cause),
            ServiceError::Quota {
                detail,
                resets_at,
                retry_after_secs,
            } => {
                let mut api = ApiError::new(code, detail);
                if let Some(at) = resets_at {
                    api.set_resets_at(at);
                }
                match retry_after_secs {
                    Some(secs) => api.retry_after(secs),
                    None => api,
                }
            }
            ServiceError::RateLimited {
                detail,
                retry_after_secs,
            } => ApiError::new(code, detail).retry_after(retry_after_secs),
            ServiceError::Unavailable {
                detail,
                retry_after_secs,
                cause,
            } => {
                let mut api = ApiError::new(code, detail);
                api.cause = cause;
                match retry_after_secs {
                    Some(secs) => api.retry_after(secs),
                    None => api,
                }
            }
            ServiceError::NotFound(detail)
            | ServiceError::Forbidden(detail)
            | ServiceError::Unauthorized(detail)
            | ServiceError::Conflict(detail)
            | ServiceError::BadRequest(detail)
            | ServiceError::TooLarge(detail)
            | ServiceError::NoSpace(detail) => ApiError::new(code, detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = problem_response(&self.problem);
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        if let Some(cause) = self.cause {
            response
                .extensions_mut()
                .insert(InternalCause(Arc::new(cause)));
        }
        response.extensions_mut().insert(*self.problem);
        response
    }
}

/// Renders a problem as a complete response (status, content type, `Retry-After`).
pub(crate) fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    if let Some(secs) = problem.retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
