//! Sign-up, sign-in, token refresh and sign-out.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use corral_core::auth::PlatformRole;
use corral_core::validate::{check_password, check_username, normalize_email};
use corral_store::{NewUser, RefreshUse, StoreError};
use corral_types::identity::{
    LoginRequest, RefreshRequest, RegisterRequest, TokenResponse, UserResponse,
};
use corral_types::{ErrorCode, FieldError};

use crate::auth::ClientInfo;
use crate::auth::credentials::{self, ACCESS_TOKEN_SECS, REFRESH_TOKEN_SECS};
use crate::config::Registration;
use crate::extract::ApiJson;
use crate::routes::account::user_response;
use crate::{ApiError, AppState};

/// Consecutive failures before a login name is locked.
const LOCK_AFTER_FAILURES: i64 = 5;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
}

/// Lock length after `failures` consecutive failures: 30 s, doubling, at most an hour.
fn lock_ms(failures: i64) -> Option<i64> {
    (failures >= LOCK_AFTER_FAILURES).then(|| {
        let doublings = (failures - LOCK_AFTER_FAILURES).min(7) as u32;
        (30_000i64 << doublings).min(3_600_000)
    })
}

/// Creates an account with a personal organization.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 409, description = "Email or username taken", body = corral_types::Problem),
        (status = 422, description = "Invalid field", body = corral_types::Problem),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let now = state.clock.now_ms();
    let invitation = match (&body.invitation_token, state.config.auth.registration) {
        (_, Registration::Closed) => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "registration is closed on this server; ask an administrator for an account",
            ));
        }
        (None, Registration::InviteOnly) => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "registration on this server is by invitation only; \
                 register with the `invitation_token` from your invitation mail",
            ));
        }
        (None, Registration::Open) => None,
        (Some(token), _) => {
            let email = normalize_email(&body.email).unwrap_or_default();
            let hash = credentials::sha256_hex(token);
            match state.store.open_invitation(now, &hash, &email).await? {
                Some(_) => Some(hash),
                None => {
                    return Err(ApiError::invalid_field(
                        "invitation_token",
                        "no open invitation with this token for this email address",
                    ));
                }
            }
        }
    };
    let user = create_checked(
        &state,
        &body.email,
        &body.username,
        &body.password,
        PlatformRole::User,
        "free",
    )
    .await?;
    let user = match invitation {
        // The invitation mail reached this address: it is verified, and the
        // new account joins the inviting org.
        Some(hash) => {
            state
                .store
                .accept_invitation(now, &hash, &user.id, &user.email)
                .await?;
            state
                .store
                .mark_email_verified(now, &user.id, &user.email)
                .await?;
            state.store.user_by_id(&user.id).await?.unwrap_or(user)
        }
        None => {
            crate::routes::email::send_verification(&state, &user).await?;
            user
        }
    };
    audit(
        &state,
        &client,
        Some(&user.id),
        Some(&user.personal_org_id),
        "auth.register",
        "user",
        Some(&user.id),
        "success",
    )
    .await;
    Ok((StatusCode::CREATED, Json(user_response(&user))))
}

/// Validates every field, then creates the account with `role` on `plan`;
/// used by registration (always a user on the free plan: the API never
/// grants a platform role) and by `corral admin create-user`.
pub async fn create_checked(
    state: &AppState,
    email: &str,
    username: &str,
    password: &str,
    role: PlatformRole,
    plan: &str,
) -> Result<corral_store::User, ApiError> {
    let mut errors = Vec::new();
    let normalized = normalize_email(email).map_err(|m| field("email", m));
    if let Err(e) = &normalized {
        errors.push(e.clone());
    }
    if let Err(e) = check_username(username) {
        errors.push(field("username", e));
    }
    if let Err(e) = check_password(password, username, email) {
        errors.push(field("password", e));
    }
    match normalized {
        Ok(email) if errors.is_empty() => {
            create_account(state, email, username.to_owned(), password, role, plan).await
        }
        _ => Err(ApiError::validation(errors)),
    }
}

/// Hashes the password off the async threads and stores the user.
async fn create_account(
    state: &AppState,
    email: String,
    username: String,
    password: &str,
    role: PlatformRole,
    plan: &str,
) -> Result<corral_store::User, ApiError> {
    let password = password.to_owned();
    let password_hash = tokio::task::spawn_blocking(move || credentials::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing failed: {e}")))?;
    let new = NewUser {
        email,
        username,
        password_hash,
        role,
        plan_id: plan.to_owned(),
    };
    state
        .store
        .create_user(state.clock.now_ms(), new)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            other => other.into(),
        })
}

/// Exchanges a username or email and password for a token pair.
///
/// Unknown users and wrong passwords get the same answer in similar time;
/// after 5 consecutive failures a login name is locked with growing back-off
/// (429 with `Retry-After`), whether or not the user exists.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Invalid credentials", body = corral_types::Problem),
        (status = 429, description = "Locked after repeated failures", body = corral_types::Problem),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let user = check_sign_in(&state, &client, body).await?;
    let family = corral_core::id::new_id();
    issue_tokens(&state, &user.id, &family).await.map(Json)
}

/// Checks a sign-in (password, lockout, audit) for every way of signing in.
pub(crate) async fn check_sign_in(
    state: &AppState,
    client: &ClientInfo,
    body: LoginRequest,
) -> Result<corral_store::User, ApiError> {
    let now = state.clock.now_ms();
    let login_hash = credentials::sha256_hex(&body.login.trim().to_lowercase());
    if let Some(until) = state
        .limiter
        .login_locked_until(&state.store, &login_hash)
        .await?
        && until > now
    {
        let secs = ((until - now) as u64).div_ceil(1000);
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many failed sign-ins; try again later",
        )
        .retry_after(secs));
    }
    let user = state.store.user_by_login(body.login.trim()).await?;
    let hash = user.as_ref().map_or_else(
        || credentials::dummy_password_hash().to_owned(),
        |u| u.password_hash.clone(),
    );
    let password = body.password;
    let matches =
        tokio::task::spawn_blocking(move || credentials::verify_password(&password, &hash))
            .await
            .map_err(ApiError::internal)?;
    let user = match user {
        Some(user) if matches && user.is_active => user,
        other => {
            state
                .limiter
                .record_login_failure(&state.store, &login_hash, now, lock_ms)
                .await?;
            let actor = other.as_ref().map(|u| u.id.as_str());
            audit(
                state,
                client,
                actor,
                None,
                "auth.login",
                "user",
                actor,
                "failure",
            )
            .await;
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "invalid credentials",
            ));
        }
    };
    state
        .limiter
        .record_login_success(&state.store, &login_hash)
        .await?;
    audit(
        state,
        client,
        Some(&user.id),
        Some(&user.personal_org_id),
        "auth.login",
        "user",
        Some(&user.id),
        "success",
    )
    .await;
    Ok(user)
}

async fn issue_tokens(
    state: &AppState,
    user_id: &str,
    family: &str,
) -> Result<TokenResponse, ApiError> {
    let now = state.clock.now_ms();
    let access_token = state
        .tokens
        .issue(user_id, family, now / 1000)
        .map_err(ApiError::internal)?;
    let refresh_token = credentials::new_refresh_token();
    state
        .store
        .insert_refresh_token(
            now,
            user_id,
            family,
            &credentials::sha256_hex(&refresh_token),
            now + REFRESH_TOKEN_SECS * 1000,
        )
        .await?;
    Ok(TokenResponse {
        access_token,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: ACCESS_TOKEN_SECS,
    })
}

/// Exchanges a refresh token for a new pair. Each refresh token works once;
/// presenting a spent one revokes every token descended from the same sign-in.
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New token pair", body = TokenResponse),
        (status = 401, description = "Invalid, expired or reused token", body = corral_types::Problem),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let hash = credentials::sha256_hex(&body.refresh_token);
    match state
        .store
        .use_refresh_token(&hash, state.clock.now_ms())
        .await?
    {
        RefreshUse::Valid { user_id, family_id } => {
            let user = state.store.user_by_id(&user_id).await?;
            if !user.is_some_and(|u| u.is_active) {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "invalid refresh token",
                ));
            }
            issue_tokens(&state, &user_id, &family_id).await.map(Json)
        }
        RefreshUse::Reused => {
            audit(
                &state,
                &client,
                None,
                None,
                "auth.refresh_reuse",
                "refresh_token",
                None,
                "denied",
            )
            .await;
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this refresh token was already used; every session from that sign-in is now revoked",
            ))
        }
        RefreshUse::Revoked => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this refresh token was revoked: its sign-in ended (signed out, or the password changed); sign in again",
        )),
        RefreshUse::Invalid => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "invalid refresh token",
        )),
    }
}

/// Revokes the refresh token and every token of its sign-in, the access
/// tokens included. Always 204, so it reveals nothing about the token.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "Signed out"))
)]
pub async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let hash = credentials::sha256_hex(&body.refresh_token);
    if let Some((family, user_id)) = state.store.refresh_family_of(&hash).await? {
        state
            .store
            .revoke_refresh_family(&family, state.clock.now_ms())
            .await?;
        audit(
            &state,
            &client,
            Some(&user_id),
            None,
            "auth.logout",
            "user",
            Some(&user_id),
            "success",
        )
        .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

fn field(name: &str, message: String) -> FieldError {
    FieldError {
        field: name.to_owned(),
        message,
    }
}

pub use corral_service::audit::audit;
