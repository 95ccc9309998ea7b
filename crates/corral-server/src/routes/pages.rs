//! The few HTML pages mails link to: confirm an address, choose a new
//! password, see how to accept an invitation. They work without the
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

use crate::AppState;
use crate::auth::ClientInfo;
use crate::routes::email::{reset_with_token, verify_with_token};

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
        .route("/invitations/{token}", get(invitation))
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
    match verify_with_token(&state, &client, &form.token).await {
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
    match reset_with_token(&state, &client, &form.token, form.new_password).await {
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

async fn invitation(Path(token): Path<String>) -> Response {
    page(
        StatusCode::OK,
        json!({"title": "You are invited to an organization", "form": "invitation", "token": token}),
    )
}
