//! The one error type of every use case. A surface maps it to its own
//! wire form (the HTTP adapter: one `From<ServiceError> for ApiError`); the
//! code a client sees is [`ServiceError::code`], so every surface answers
//! the same failure with the same stable code.

use corral_store::StoreError;
use corral_types::{ErrorCode, FieldError};

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The object does not exist, or belongs to another tenant (never told apart).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The caller is not (or no longer) authenticated.
    #[error("{0}")]
    Unauthorized(String),
    /// The object is in a state that does not allow this, or a unique value is taken.
    #[error("{0}")]
    Conflict(String),
    /// A plan limit is reached; `resets_at` (RFC 3339) when it is a daily one.
    #[error("{detail}")]
    Quota {
        /// What is used up.
        detail: String,
        /// When a daily quota resets.
        resets_at: Option<String>,
        /// Seconds until it resets.
        retry_after_secs: Option<u64>,
    },
    /// Too many requests in a short time; try again after `retry_after_secs`.
    #[error("{detail}")]
    RateLimited {
        /// What was limited.
        detail: String,
        /// When to try again.
        retry_after_secs: u64,
    },
    /// Input refused, one message per named field.
    #[error("{}", validation_detail(.0))]
    Validation(Vec<FieldError>),
    /// A request that is malformed as a whole (no single field to name).
    #[error("{0}")]
    BadRequest(String),
    /// The input is larger than this operation accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The sandbox's (or the server's) disk is full.
    #[error("{0}")]
    NoSpace(String),
    /// A dependency (database, sandbox agent, queue) cannot answer now; retry.
    #[error("{detail}")]
    Unavailable {
        /// What is unavailable, for the caller.
        detail: String,
        /// Suggested wait before a retry.
        retry_after_secs: Option<u64>,
        /// The cause, for the log only.
        cause: Option<anyhow::Error>,
    },
    /// An unexpected fault; the cause is for the log, never for the caller.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

fn validation_detail(errors: &[FieldError]) -> String {
    match errors {
        [one] => format!("`{}`: {}", one.field, one.message),
        _ => format!("{} fields are invalid", errors.len()),
    }
}

/// What use cases return.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    /// 404 for `what` (for example `sandbox`); also for other tenants' objects.
    pub fn not_found(what: &str) -> ServiceError {
        ServiceError::NotFound(format!("{what} not found"))
    }

    /// One bad field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> ServiceError {
        ServiceError::Validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    /// A conflict with the object's state.
    pub fn conflict(detail: impl Into<String>) -> ServiceError {
        ServiceError::Conflict(detail.into())
    }

    /// A dependency that cannot answer now.
    pub fn unavailable(detail: impl Into<String>) -> ServiceError {
        ServiceError::Unavailable {
            detail: detail.into(),
            retry_after_secs: None,
            cause: None,
        }
    }

    /// An unexpected fault.
    pub fn internal(cause: impl Into<anyhow::Error>) -> ServiceError {
        ServiceError::Internal(cause.into())
    }

    /// The stable code every surface reports.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::Forbidden(_) => ErrorCode::Forbidden,
            ServiceError::Unauthorized(_) => ErrorCode::Unauthorized,
            ServiceError::Conflict(_) => ErrorCode::Conflict,
            ServiceError::Quota { .. } => ErrorCode::QuotaExceeded,
            ServiceError::RateLimited { .. } => ErrorCode::RateLimited,
            ServiceError::Validation(_) => ErrorCode::ValidationFailed,
            ServiceError::BadRequest(_) => ErrorCode::BadRequest,
            ServiceError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            ServiceError::NoSpace(_) => ErrorCode::NoSpace,
            ServiceError::Unavailable { .. } => ErrorCode::ServiceUnavailable,
            ServiceError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> ServiceError {
        match &error {
            StoreError::Conflict(message) => return ServiceError::Conflict(message.clone()),
            StoreError::QuotaExceeded(what) => {
                return ServiceError::Quota {
                    detail: format!("your plan's limit for {what} is reached"),
                    resets_at: None,
                    retry_after_secs: None,
                };
            }
            _ => {}
        }
        if error.is_unavailable() {
            ServiceError::Unavailable {
                detail: "the database is unavailable; retry shortly".to_owned(),
                retry_after_secs: Some(5),
                cause: Some(error.into()),
            }
        } else {
            ServiceError::Internal(error.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_database_is_a_retryable_503_not_a_500() {
        let error = ServiceError::from(StoreError::Query(sqlx::Error::PoolTimedOut));
        assert_eq!(error.code(), ErrorCode::ServiceUnavailable);
        assert!(matches!(
            error,
            ServiceError::Unavailable {
                retry_after_secs: Some(5),
                ..
            }
        ));
    }

    #[test]
    fn a_plan_limit_is_a_quota_error_naming_what() {
        let error = ServiceError::from(StoreError::QuotaExceeded("sandboxes".into()));
        assert_eq!(error.code(), ErrorCode::QuotaExceeded);
        assert!(error.to_string().contains("sandboxes"), "{error}");
    }
}
