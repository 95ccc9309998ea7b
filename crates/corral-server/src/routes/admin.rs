//! Platform administration.

use axum::extract::{Path, Query, State};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::Deserialize;

use corral_service::admin::{self, AuditRange, AuditSearch};
use corral_types::identity::{
    AdminUpdateUserRequest, AuditCount, AuditPage, AuditStats, UserPage, UserResponse,
};

use crate::auth::{Caller, ClientInfo};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/audit", get(audit_log))
        .route("/api/v1/admin/audit/stats", get(audit_stats))
        .route("/api/v1/admin/audit/actions", get(audit_actions))
        .route(
            "/api/v1/admin/audit/resource-types",
            get(audit_resource_types),
        )
        .route("/api/v1/admin/users", get(list_users))
        .route("/api/v1/admin/users/{id}", patch(update_user))
}

/// Filters of `GET /api/v1/admin/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Actor user id.
    user_id: Option<String>,
    /// Org id.
    org_id: Option<String>,
    /// Action, such as `auth.login`.
    action: Option<String>,
    /// Resource type, such as `api_key`.
    resource_type: Option<String>,
    /// From this time (RFC 3339, inclusive).
    since: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    until: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

/// The audit log of the whole installation, newest first.
#[utoipa::path(
    get, path = "/api/v1/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of records", body = AuditPage),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn audit_log(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let search = AuditSearch {
        user_id: query.user_id,
        org_id: query.org_id,
        action: query.action,
        resource_type: query.resource_type,
        since: query.since,
        until: query.until,
        cursor: query.cursor,
        limit: query.limit,
    };
    Ok(Json(admin::audit_log(&state, search).await?))
}

/// Time range of the audit summaries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditRangeQuery {
    /// From this time (RFC 3339, inclusive).
    since: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    until: Option<String>,
}

impl From<AuditRangeQuery> for AuditRange {
    fn from(query: AuditRangeQuery) -> AuditRange {
        AuditRange {
            since: query.since,
            until: query.until,
        }
    }
}

/// The audit log summarized: totals by outcome, action and resource type.
#[utoipa::path(
    get, path = "/api/v1/admin/audit/stats", tag = "admin", security(("bearer" = [])),
    params(AuditRangeQuery),
    responses(
        (status = 200, description = "Counts", body = AuditStats),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn audit_stats(
    State(state): State<AppState>,
    Query(query): Query<AuditRangeQuery>,
) -> Result<Json<AuditStats>, ApiError> {
    Ok(Json(admin::audit_stats(&state, query.into()).await?))
}

/// Every action in the audit log, with how often it occurs (for filter menus).
#[utoipa::path(
    get, path = "/api/v1/admin/audit/actions", tag = "admin", security(("bearer" = [])),
    params(AuditRangeQuery),
    responses(
        (status = 200, description = "Actions, most frequent first", body = [AuditCount]),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn audit_actions(
    State(state): State<AppState>,
    Query(query): Query<AuditRangeQuery>,
) -> Result<Json<Vec<AuditCount>>, ApiError> {
    Ok(Json(admin::audit_actions(&state, query.into()).await?))
}

/// Every resource type in the audit log, with how often it occurs.
#[utoipa::path(
    get, path = "/api/v1/admin/audit/resource-types", tag = "admin", security(("bearer" = [])),
    params(AuditRangeQuery),
    responses(
        (status = 200, description = "Resource types, most frequent first", body = [AuditCount]),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn audit_resource_types(
    State(state): State<AppState>,
    Query(query): Query<AuditRangeQuery>,
) -> Result<Json<Vec<AuditCount>>, ApiError> {
    Ok(Json(
        admin::audit_resource_types(&state, query.into()).await?,
    ))
}

/// Paging of `GET /api/v1/admin/users`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

/// Every account, oldest first.
#[utoipa::path(
    get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])),
    params(UserQuery),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    Query(query): Query<UserQuery>,
) -> Result<Json<UserPage>, ApiError> {
    Ok(Json(
        admin::list_users(&state, query.cursor.as_deref(), query.limit).await?,
    ))
}

/// Changes a user's plan, role or active flag. Admin roles are granted and
/// removed only by a super admin; nobody changes their own role or disables
/// themselves.
#[utoipa::path(
    patch, path = "/api/v1/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    request_body = AdminUpdateUserRequest,
    responses(
        (status = 200, description = "Updated", body = UserResponse),
        (status = 403, description = "Not allowed for this caller", body = corral_types::Problem),
        (status = 404, description = "No such user", body = corral_types::Problem),
        (status = 422, description = "Invalid field", body = corral_types::Problem),
    )
)]
pub async fn update_user(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AdminUpdateUserRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    Ok(Json(
        admin::update_user(&state, &principal, &client, &id, body).await?,
    ))
}
