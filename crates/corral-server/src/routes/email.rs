//! Flows that go through the user's mailbox: email verification, password
//! reset (self-service and by an administrator), and the mails they send.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use corral_core::auth::PlatformRole;
use corral_core::validate::{check_password, normalize_email};
use corral_store::{TokenPurpose, User};
use corral_types::ErrorCode;
use corral_types::identity::{
    Accepted, AdminPasswordReset, PasswordResetConfirm, PasswordResetRequest, VerifyEmailRequest,
};

use crate::auth::Caller;
use crate::auth::credentials::{self, random_token, sha256_hex};
use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::mail::Mail;
use crate::routes::auth::audit;
use crate::{ApiError, AppState};

/// How long a verification link works.
const VERIFY_TTL_MS: i64 = 48 * 3_600_000;
/// How long a password-reset link works.
const RESET_TTL_MS: i64 = 3_600_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/verify-email", post(verify_email))
        .route("/api/v1/users/me/verify-email", post(resend_verification))
        .route("/api/v1/auth/password-reset", post(request_reset))
        .route("/api/v1/auth/password-reset/confirm", post(confirm_reset))
        .route("/api/v1/admin/users/{id}/password-reset", post(admin_reset))
}

/// Stores a new single-use token for `user` (replacing older ones of the
/// same purpose) and returns it, to be mailed.
async fn new_email_token(
    state: &AppState,
    user: &User,
    purpose: TokenPurpose,
    ttl_ms: i64,
) -> Result<String, ApiError> {
    let prefix = match purpose {
        TokenPurpose::VerifyEmail => "crv_",
        TokenPurpose::PasswordReset => "crp_",
    };
    let token = format!("{prefix}{}", random_token(40));
    let now = state.clock.now_ms();
    state
        .store
        .create_email_token(
            now,
            &user.id,
            purpose,
            &sha256_hex(&token),
            &user.email,
            now + ttl_ms,
        )
        .await?;
    Ok(token)
}

/// Mails `user` a link proving they read mail at their address.
pub async fn send_verification(state: &AppState, user: &User) -> Result<(), ApiError> {
    let token = new_email_token(state, user, TokenPurpose::VerifyEmail, VERIFY_TTL_MS).await?;
    state.mailer.send(Mail {
        to: user.email.clone(),
        subject: "Confirm your email address".into(),
        template: "verify",
        context: json!({
            "username": user.username,
            "email": user.email,
            "token": token,
            "link": state.mailer.link(&format!("/verify-email?token={token}")),
            "hours": VERIFY_TTL_MS / 3_600_000,
        }),
    });
    Ok(())
}

/// Mails `user` a password-reset link.
async fn send_reset(state: &AppState, user: &User, by_admin: bool) -> Result<(), ApiError> {
    let token = new_email_token(state, user, TokenPurpose::PasswordReset, RESET_TTL_MS).await?;
    state.mailer.send(Mail {
        to: user.email.clone(),
        subject: "Reset your Corral password".into(),
        template: "reset",
        context: json!({
            "username": user.username,
            "token": token,
            "link": state.mailer.link(&format!("/reset-password?token={token}")),
            "minutes": RESET_TTL_MS / 60_000,
            "by_admin": by_admin,
        }),
    });
    Ok(())
}

fn bad_token() -> ApiError {
    ApiError::invalid_field(
        "token",
        "this token is unknown, already used or expired; ask for a new mail",
    )
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
    verify_with_token(&state, &client, &body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Verifies the address a verification token was mailed to.
pub async fn verify_with_token(
    state: &AppState,
    client: &ClientInfo,
    token: &str,
) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    let (user_id, email) = state
        .store
        .consume_email_token(now, TokenPurpose::VerifyEmail, &sha256_hex(token))
        .await?
        .ok_or_else(bad_token)?;
    if !state
        .store
        .mark_email_verified(now, &user_id, &email)
        .await?
    {
        // The address changed after the mail was sent.
        return Err(bad_token());
    }
    audit(
        state,
        client,
        Some(&user_id),
        None,
        "user.verify_email",
        "user",
        Some(&user_id),
        "success",
    )
    .await;
    Ok(())
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
    if user.email_verified {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this address is already verified",
        ));
    }
    send_verification(&state, &user).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            message: format!("a verification mail is on its way to {}", user.email),
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
    let email = normalize_email(&body.email).map_err(|m| ApiError::invalid_field("email", m))?;
    let user = state.store.user_by_login(&email).await?;
    let outcome = match user.as_ref().filter(|u| u.is_active && u.email == email) {
        Some(user) => {
            send_reset(&state, user, false).await?;
            "success"
        }
        None => "failure",
    };
    let actor = user.as_ref().map(|u| u.id.as_str());
    audit(
        &state,
        &client,
        actor,
        None,
        "auth.password_reset_request",
        "user",
        actor,
        outcome,
    )
    .await;
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
    reset_with_token(&state, &client, &body.token, body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a new password with a reset token; the token is spent only when
/// the password is accepted.
pub async fn reset_with_token(
    state: &AppState,
    client: &ClientInfo,
    token: &str,
    new_password: String,
) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    let hash = sha256_hex(token);
    let (user_id, _) = state
        .store
        .email_token_owner(now, TokenPurpose::PasswordReset, &hash)
        .await?
        .ok_or_else(bad_token)?;
    let user = state
        .store
        .user_by_id(&user_id)
        .await?
        .ok_or_else(bad_token)?;
    check_password(&new_password, &user.username, &user.email)
        .map_err(|m| ApiError::invalid_field("new_password", m))?;
    state
        .store
        .consume_email_token(now, TokenPurpose::PasswordReset, &hash)
        .await?
        .ok_or_else(bad_token)?;
    set_password(state, &user.id, new_password).await?;
    audit(
        state,
        client,
        Some(&user.id),
        None,
        "auth.password_reset",
        "user",
        Some(&user.id),
        "success",
    )
    .await;
    Ok(())
}

/// Hashes (off the async threads) and stores a new password; ends every sign-in.
async fn set_password(state: &AppState, user_id: &str, password: String) -> Result<(), ApiError> {
    let hash = tokio::task::spawn_blocking(move || credentials::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing failed: {e}")))?;
    state
        .store
        .set_password(state.clock.now_ms(), user_id, &hash)
        .await?;
    Ok(())
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
    let user = state
        .store
        .user_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if user.role >= PlatformRole::Admin && principal.platform_role < PlatformRole::SuperAdmin {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only a super admin may reset an administrator's password",
        ));
    }
    let answer = match body.new_password {
        Some(password) => {
            check_password(&password, &user.username, &user.email)
                .map_err(|m| ApiError::invalid_field("new_password", m))?;
            set_password(&state, &user.id, password).await?;
            (StatusCode::NO_CONTENT, Json(None))
        }
        None => {
            state
                .store
                .end_all_sessions(state.clock.now_ms(), &user.id)
                .await?;
            send_reset(&state, &user, true).await?;
            (
                StatusCode::ACCEPTED,
                Json(Some(Accepted {
                    message: format!("a reset mail is on its way to {}", user.email),
                })),
            )
        }
    };
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        None,
        "admin.password_reset",
        "user",
        Some(&user.id),
        "success",
    )
    .await;
    Ok(answer)
}
