//! `/api/v1/library`: the code library, over
//! [`corral_service::library`] (which holds its rules: who sees and
//! changes what, the sizes). To anyone but its owner a private snippet
//! does not exist: 404, never 403.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use corral_service::library::{self as use_case, LibrarySearch};
use corral_types::library::{
    CreateSnippetRequest, SnippetPage, SnippetResponse, UpdateSnippetRequest,
};

use crate::auth::Caller;
use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/library", get(list).post(create))
        .route(
            "/api/v1/library/{id}",
            get(show).patch(update).delete(remove),
        )
}

/// Creates a snippet owned by the caller, in the caller's org.
#[utoipa::path(
    post, path = "/api/v1/library", tag = "library", security(("bearer" = [])),
    request_body = CreateSnippetRequest,
    responses(
        (status = 201, description = "Created", body = SnippetResponse),
        (status = 422, description = "A value is refused", body = corral_types::Problem),
        (status = 429, description = "The plan's snippet limit is reached", body = corral_types::Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateSnippetRequest>,
) -> Result<(StatusCode, Json<SnippetResponse>), ApiError> {
    let snippet = use_case::create(&state, &principal, &user, &client, body).await?;
    Ok((StatusCode::CREATED, Json(snippet)))
}

/// Search of `GET /api/v1/library`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LibraryQuery {
    /// Text in the title, description or code (ignoring case; `%` and `_`
    /// are literal).
    q: Option<String>,
    /// Only snippets with this tag.
    tag: Option<String>,
    /// Only snippets in this language.
    language: Option<String>,
    /// `me`: only the caller's own snippets.
    owner: Option<String>,
    /// `public` or `private` (private ones are only ever the caller's).
    visibility: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

impl From<LibraryQuery> for LibrarySearch {
    fn from(query: LibraryQuery) -> LibrarySearch {
        LibrarySearch {
            q: query.q,
            tag: query.tag,
            language: query.language,
            owner: query.owner,
            visibility: query.visibility,
            cursor: query.cursor,
            limit: query.limit,
        }
    }
}

/// Snippets the caller may see (public ones and their own), oldest first.
#[utoipa::path(
    get, path = "/api/v1/library", tag = "library", security(("bearer" = [])),
    params(LibraryQuery),
    responses(
        (status = 200, description = "A page of snippets, without their code", body = SnippetPage),
        (status = 422, description = "A parameter is refused", body = corral_types::Problem),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
    Query(query): Query<LibraryQuery>,
) -> Result<Json<SnippetPage>, ApiError> {
    Ok(Json(
        use_case::list(&state, &principal, query.into()).await?,
    ))
}

/// One snippet with its code.
#[utoipa::path(
    get, path = "/api/v1/library/{id}", tag = "library", security(("bearer" = [])),
    params(("id" = String, Path, description = "Snippet id")),
    responses(
        (status = 200, description = "The snippet", body = SnippetResponse),
        (status = 404, description = "No such snippet you may see", body = corral_types::Problem),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<SnippetResponse>, ApiError> {
    Ok(Json(use_case::show(&state, &principal, &id).await?))
}

/// Changes one of the caller's snippets.
#[utoipa::path(
    patch, path = "/api/v1/library/{id}", tag = "library", security(("bearer" = [])),
    params(("id" = String, Path, description = "Snippet id")),
    request_body = UpdateSnippetRequest,
    responses(
        (status = 200, description = "Changed", body = SnippetResponse),
        (status = 404, description = "No such snippet of yours", body = corral_types::Problem),
        (status = 422, description = "A value is refused", body = corral_types::Problem),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateSnippetRequest>,
) -> Result<Json<SnippetResponse>, ApiError> {
    Ok(Json(
        use_case::update(&state, &principal, &client, &id, body).await?,
    ))
}

/// Deletes one of the caller's snippets; a platform administrator may
/// delete any.
#[utoipa::path(
    delete, path = "/api/v1/library/{id}", tag = "library", security(("bearer" = [])),
    params(("id" = String, Path, description = "Snippet id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such snippet of yours", body = corral_types::Problem),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    use_case::remove(&state, &principal, &client, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
