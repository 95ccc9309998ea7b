//! Flows that go through the user's mailbox: email verification, password
//! reset (self-service and by an administrator), and the mails they send.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use corral_service::email::{self, AdminReset};
use corral_types::identity::{
    Accepted, AdminPasswordReset, PasswordResetConfirm, PasswordResetRequest, VerifyEmailRequest,
};

use crate::auth::{Caller, ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/verify-email", post(verify_email))
        .route("/api/v1/users/me/verify-email", post(resend_verification))
        .route("/api/v1/auth/password-reset", post(request_reset))
        .route("/api/v1/auth/password-reset/confirm", post(confirm_reset))
        .route("/api/v1/admin/users/{id}/password-reset", post(admin_reset))
}

/// Confirms an email address with the token from the verification mail.
#[utoipa::path(
    post, path = "/api/v1/auth/verify-email", tag = "auth", request_body = VerifyEmailRequest,
    responses(
        (status = 204, description = "Verified"),
        (status = 422, description = "Unknown, used or expired token", body = corral_types::Problem),
    )
)]
pub async fn verify_email(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<VerifyEmailRequest>,
) -> Result<StatusCode, ApiError> {
    email::verify_with_token(&state, &client, &body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends the verification mail again (the previous link stops working).
#[utoipa::path(
    post, path = "/api/v1/users/me/verify-email", tag = "account", security(("bearer" = [])),
    responses(
        (status = 202, description = "A new mail is on its way", body = Accepted),
        (status = 409, description = "Already verified", body = corral_types::Problem),
    )
)]
pub async fn resend_verification(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let address = email::resend_verification(&state, &user).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            message: format!("a verification mail is on its way to {address}"),
        }),
    ))
}

/// Asks for a password-reset mail. The answer is the same whether or not an
/// account has this address, so it cannot be used to find accounts.
#[utoipa::path(
    post, path = "/api/v1/auth/password-reset", tag = "auth", request_body = PasswordResetRequest,
    responses(
        (status = 202, description = "If an account has this address, a mail is on its way", body = Accepted),
        (status = 422, description = "Not an email address", body = corral_types::Problem),
    )
)]
pub async fn request_reset(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<PasswordResetRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    email::request_reset(&state, &client, body).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            message: "if an account has this address, a reset mail is on its way".into(),
        }),
    ))
}

/// Sets a new password with the token from the reset mail. Every sign-in
/// of the account ends (refresh tokens, browser sessions).
#[utoipa::path(
    post, path = "/api/v1/auth/password-reset/confirm", tag = "auth", request_body = PasswordResetConfirm,
    responses(
        (status = 204, description = "Password changed"),
        (status = 422, description = "Bad token or refused password", body = corral_types::Problem),
    )
)]
pub async fn confirm_reset(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<PasswordResetConfirm>,
) -> Result<StatusCode, ApiError> {
    email::reset_with_token(&state, &client, &body.token, body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An administrator resets a user's password: mails them a reset link, or
/// sets `new_password` directly. Every sign-in of the user ends either way.
#[utoipa::path(
    post, path = "/api/v1/admin/users/{id}/password-reset", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    request_body = AdminPasswordReset,
    responses(
        (status = 202, description = "Reset mail sent", body = Accepted),
        (status = 204, description = "Password set"),
        (status = 403, description = "Not an administrator, or the user outranks you", body = corral_types::Problem),
        (status = 404, description = "No such user", body = corral_types::Problem),
    )
)]
pub async fn admin_reset(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AdminPasswordReset>,
) -> Result<(StatusCode, Json<Option<Accepted>>), ApiError> {
    Ok(
        match email::admin_reset(&state, &principal, &client, &id, body).await? {
            AdminReset::Set => (StatusCode::NO_CONTENT, Json(None)),
            AdminReset::Mailed(address) => (
                StatusCode::ACCEPTED,
                Json(Some(Accepted {
                    message: format!("a reset mail is on its way to {address}"),
                })),
            ),
        },
    )
}
