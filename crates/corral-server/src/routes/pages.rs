//! The few HTML pages mails link to: confirm an address, choose a new
//! password, accept an invitation (signing in or registering). They work without the
//! dashboard and without JavaScript: a GET shows a form (mail scanners that
//! prefetch links spend nothing), the POST does the work through the same
//! code as the API.

use std::sync::LazyLock;

use axum::extract::{Form, Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use minijinja::Environment;
use serde::Deserialize;
use serde_json::json;
use tower_http::set_header::SetResponseHeaderLayer;

use corral_service::{ServiceError, accounts, email, orgs, sessions};
use corral_types::identity::{LoginRequest, OrgResponse, RegisterRequest};

use crate::ApiError;
use crate::AppState;
use crate::auth::ClientInfo;

/// No scripts, no outside resources; forms post only here.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                        frame-ancestors 'none'; base-uri 'none'";

static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    if let Err(error) =
        env.add_template("page.html", include_str!("../../templates/pages/page.html"))
    {
        tracing::error!(%error, "the page template does not compile");
    }
    env
});

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/verify-email", get(verify_form).post(verify))
        .route("/reset-password", get(reset_form).post(reset))
        .route(
            "/invitations/{token}",
            get(invitation).post(invitation_submit),
        )
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        ))
}

fn page(status: StatusCode, context: serde_json::Value) -> Response {
    let html = PAGES
        .get_template("page.html")
        .and_then(|t| t.render(&context))
        .unwrap_or_else(|error| {
            tracing::error!(%error, "rendering a page failed");
            "<!doctype html><p>Something went wrong.</p>".to_owned()
        });
    // KeepBody: a 4xx page is a deliberate answer, not to be replaced by a problem.
    let mut response = (status, Html(html)).into_response();
    response
        .extensions_mut()
        .insert(crate::middleware::KeepBody);
    response
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

async fn verify_form(Query(query): Query<TokenQuery>) -> Response {
    page(
        StatusCode::OK,
        json!({"title": "Confirm your email address", "form": "verify", "token": query.token}),
    )
}

async fn verify(
    State(state): State<AppState>,
    client: ClientInfo,
    Form(form): Form<TokenQuery>,
) -> Response {
    match email::verify_with_token(&state, &client, &form.token)
        .await
        .map_err(ApiError::from)
    {
        Ok(()) => page(
            StatusCode::OK,
            json!({"title": "Email address confirmed", "kind": "ok",
                   "message": "Thank you: your address is confirmed. You can close this page."}),
        ),
        Err(error) => page(
            StatusCode::from_u16(error.problem().status).unwrap_or(StatusCode::BAD_REQUEST),
            json!({"title": "This link does not work", "kind": "error",
                   "message": error.problem().detail}),
        ),
    }
}

async fn reset_form(Query(query): Query<TokenQuery>) -> Response {
    page(
        StatusCode::OK,
        json!({"title": "Choose a new password", "form": "reset", "token": query.token}),
    )
}

#[derive(Debug, Deserialize)]
struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    new_password: String,
}

async fn reset(
    State(state): State<AppState>,
    client: ClientInfo,
    Form(form): Form<ResetForm>,
) -> Response {
    match email::reset_with_token(&state, &client, &form.token, form.new_password)
        .await
        .map_err(ApiError::from)
    {
        Ok(()) => page(
            StatusCode::OK,
            json!({"title": "Password changed", "kind": "ok",
                   "message": "Your new password is set, and every earlier sign-in has ended. You can sign in now."}),
        ),
        // A refused password keeps the form (the token is not spent).
        Err(error) => page(
            StatusCode::from_u16(error.problem().status).unwrap_or(StatusCode::BAD_REQUEST),
            json!({"title": "Choose a new password", "kind": "error", "form": "reset",
                   "token": form.token, "message": error.problem().detail}),
        ),
    }
}

/// The invitation link: who invites whom to what, then two forms — sign in
/// and join, or (when this server lets people register) create the account
/// and join. Looking spends nothing; a spent, expired or unknown token says
/// so in words.
async fn invitation(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    invitation_page(&state, &token, StatusCode::OK, None).await
}

async fn invitation_page(
    state: &AppState,
    token: &str,
    status: StatusCode,
    message: Option<String>,
) -> Response {
    let preview = match orgs::preview_invitation(state, token).await {
        Ok(preview) => preview,
        Err(error) => {
            tracing::error!(%error, "reading an invitation failed");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"title": "Try again later", "kind": "error",
                       "message": "The invitation cannot be read right now."}),
            );
        }
    };
    let Some(orgs::InvitationPreview {
        invitation: inv,
        org_name: org,
    }) = preview
    else {
        return page(
            StatusCode::NOT_FOUND,
            json!({"title": "This invitation does not work", "kind": "error",
                   "message": "It was already used, has expired or was withdrawn. \
                               Ask for a new invitation."}),
        );
    };
    page(
        status,
        json!({
            "title": "You are invited to an organization",
            "form": "invitation",
            "token": token,
            "org": org,
            "role": inv.role.as_str(),
            "email": inv.email,
            "expires_at": corral_core::clock::rfc3339(inv.expires_at),
            "can_register": accounts::can_register(state),
            "kind": "error",
            "message": message,
        }),
    )
}

#[derive(Debug, Deserialize)]
struct InvitationForm {
    /// `join` (sign in with an existing account) or `register`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// Does what the invitation page's forms ask, through the same code as the
/// API: [`sessions::check_sign_in`] (lockout, audit) and
/// [`orgs::join_by_invitation`], or [`accounts::register`] with the
/// invitation token. A refusal shows the page again
/// with the reason; the token is not spent.
async fn invitation_submit(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(token): Path<String>,
    Form(form): Form<InvitationForm>,
) -> Response {
    let joined = match form.action.as_str() {
        "join" => join_signed_in(&state, &client, &token, form.login, form.password).await,
        "register" => {
            let body = RegisterRequest {
                email: form.email,
                username: form.username,
                password: form.password,
                invitation_token: Some(token.clone()),
            };
            accounts::register(&state, &client, body)
                .await
                .map(|_| None)
        }
        _ => Err(ServiceError::invalid_field(
            "action",
            "must be `join` or `register`",
        )),
    };
    let joined = joined.map_err(ApiError::from);
    match joined {
        Ok(org) => {
            let message = match org {
                Some(org) => format!(
                    "You are now a member of \u{201c}{}\u{201d} as {}. You can close this page.",
                    org.name, org.role
                ),
                None => "Your account is created and you are a member of the organization. \
                         Sign in to start."
                    .to_owned(),
            };
            page(
                StatusCode::OK,
                json!({"title": "Invitation accepted", "kind": "ok", "message": message}),
            )
        }
        Err(error) => {
            let problem = error.problem();
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut message = problem
                .detail
                .clone()
                .unwrap_or_else(|| problem.title.clone());
            for e in &problem.errors {
                message.push_str(&format!(" {}: {}.", e.field, e.message));
            }
            invitation_page(&state, &token, status, Some(message)).await
        }
    }
}

async fn join_signed_in(
    state: &AppState,
    client: &ClientInfo,
    token: &str,
    login: String,
    password: String,
) -> Result<Option<OrgResponse>, ServiceError> {
    let user = sessions::check_sign_in(state, client, LoginRequest { login, password }).await?;
    orgs::join_by_invitation(state, client, &user, token)
        .await
        .map(Some)
}
