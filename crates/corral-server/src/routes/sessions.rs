//! Browser sign-in with a cookie session (see [`crate::auth::session`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderMap, header};

use corral_core::clock::rfc3339;
use corral_service::accounts::user_response;
use corral_service::sessions::{self, BrowserSession};
use corral_types::identity::{LoginRequest, SessionResponse};

use crate::auth::session;
use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/auth/session",
        post(sign_in).get(current).delete(sign_out),
    )
}

/// Signs in with a username or email and password and starts a browser
/// session: an HttpOnly cookie, and a CSRF token in the body. Same lockout
/// and answers as `/auth/login`.
#[utoipa::path(
    post, path = "/api/v1/auth/session", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = SessionResponse),
        (status = 401, description = "Invalid credentials", body = corral_types::Problem),
        (status = 429, description = "Locked after repeated failures", body = corral_types::Problem),
    )
)]
pub async fn sign_in(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let started = sessions::start_session(&state, &client, body).await?;
    let cookie = session::set_cookie(&state.config, Some(&started.token));
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(session_response(&started)),
    )
        .into_response())
}

/// The session as the page sees it: the account, the CSRF token derived
/// from the session's secret, and when it ends.
fn session_response(session: &BrowserSession) -> SessionResponse {
    SessionResponse {
        user: user_response(&session.user),
        csrf_token: session::csrf_token(&session.token),
        expires_at: rfc3339(session.expires_at),
    }
}

/// The current browser session and its CSRF token (for a page that loads
/// while already signed in).
#[utoipa::path(
    get, path = "/api/v1/auth/session", tag = "auth",
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        (status = 401, description = "No live session cookie", body = corral_types::Problem),
    )
)]
pub async fn current(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
) -> Result<Json<SessionResponse>, ApiError> {
    let token = session::session_token(&state.config, &headers);
    let current = sessions::current_session(&state, &user, token).await?;
    Ok(Json(session_response(&current)))
}

/// Ends the browser session and clears its cookie (needs the CSRF token).
#[utoipa::path(
    delete, path = "/api/v1/auth/session", tag = "auth",
    responses((status = 204, description = "Signed out; the cookie is cleared"))
)]
pub async fn sign_out(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = session::session_token(&state.config, &headers);
    sessions::end_session(&state, &user, &client, token.as_deref()).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::set_cookie(&state.config, None))],
    )
        .into_response())
}
