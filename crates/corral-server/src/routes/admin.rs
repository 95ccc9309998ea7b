//! Platform administration.

use axum::extract::{Path, Query, State};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::Deserialize;

use corral_core::auth::PlatformRole;
use corral_core::clock::{parse_rfc3339, rfc3339};
use corral_store::StoreError;
use corral_store::{AuditDimension, AuditFilter};
use corral_types::ErrorCode;
use corral_types::identity::{
    AdminUpdateUserRequest, AuditCount, AuditPage, AuditRecordResponse, AuditStats, UserPage,
    UserResponse,
};

use crate::auth::Caller;
use crate::auth::ClientInfo;
use crate::extract::ApiJson;
use crate::routes::account::user_response;
use crate::routes::auth::audit;

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

fn time(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            parse_rfc3339(v)
                .ok_or_else(|| ApiError::invalid_field(field, "must be an RFC 3339 time"))
        })
        .transpose()
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
    let filter = AuditFilter {
        user_id: query.user_id,
        org_id: query.org_id,
        action: query.action,
        resource_type: query.resource_type,
        since: time("since", query.since.as_deref())?,
        until: time("until", query.until.as_deref())?,
        before_id: query.cursor,
        limit: 0,
    };
    audit_page(&state, filter, query.limit).await.map(Json)
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

impl AuditRangeQuery {
    fn range(&self) -> Result<(Option<i64>, Option<i64>), ApiError> {
        Ok((
            time("since", self.since.as_deref())?,
            time("until", self.until.as_deref())?,
        ))
    }
}

async fn audit_counts(
    state: &AppState,
    by: AuditDimension,
    (since, until): (Option<i64>, Option<i64>),
) -> Result<Vec<AuditCount>, ApiError> {
    Ok(state
        .store
        .audit_counts(by, since, until)
        .await?
        .into_iter()
        .map(|(name, count)| AuditCount { name, count })
        .collect())
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
    let range = query.range()?;
    let by_outcome = audit_counts(&state, AuditDimension::Outcome, range).await?;
    let total = by_outcome.iter().map(|c| c.count).sum();
    let failed = by_outcome
        .iter()
        .filter(|c| c.name == "failure" || c.name == "denied")
        .map(|c| c.count)
        .sum();
    Ok(Json(AuditStats {
        total,
        failed,
        by_outcome,
        by_action: audit_counts(&state, AuditDimension::Action, range).await?,
        by_resource_type: audit_counts(&state, AuditDimension::ResourceType, range).await?,
    }))
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
    audit_counts(&state, AuditDimension::Action, query.range()?)
        .await
        .map(Json)
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
    audit_counts(&state, AuditDimension::ResourceType, query.range()?)
        .await
        .map(Json)
}

/// One page of audit records matching `filter`, newest first.
pub async fn audit_page(
    state: &AppState,
    mut filter: AuditFilter,
    limit: Option<i64>,
) -> Result<AuditPage, ApiError> {
    let limit = page_limit(limit)?;
    filter.limit = limit + 1;
    let mut records = state.store.list_audit(&filter).await?;
    let next_cursor = page_cut(&mut records, limit, |r| r.id.clone());
    Ok(AuditPage {
        items: records
            .into_iter()
            .map(|r| AuditRecordResponse {
                id: r.id,
                at: rfc3339(r.at),
                actor_user_id: r.actor_user_id,
                org_id: r.org_id,
                action: r.action,
                resource_type: r.resource_type,
                resource_id: r.resource_id,
                ip: r.ip,
                user_agent: r.user_agent,
                outcome: r.outcome,
                detail: r.detail,
            })
            .collect(),
        next_cursor,
    })
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

/// Given `limit + 1` rows, keeps `limit` and returns the cursor of the next
/// page (the last kept row's), or `None` when this page is the last.
pub(crate) fn page_cut<T>(
    rows: &mut Vec<T>,
    limit: i64,
    cursor: impl Fn(&T) -> String,
) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor)
    } else {
        None
    }
}

pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=200).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 200",
        ))
    }
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
    let limit = page_limit(query.limit)?;
    let mut users = state
        .store
        .list_users(query.cursor.as_deref(), limit + 1)
        .await?;
    let next_cursor = page_cut(&mut users, limit, |u| u.id.clone());
    Ok(Json(UserPage {
        items: users.iter().map(user_response).collect(),
        next_cursor,
    }))
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
    let role = body
        .role
        .as_deref()
        .map(|r| {
            r.parse::<PlatformRole>()
                .map_err(|e| ApiError::invalid_field("role", e.to_string()))
        })
        .transpose()?;
    let target = state
        .store
        .user_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if id == principal.user_id && (role.is_some() || body.is_active == Some(false)) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "you cannot change your own role or disable yourself; ask another administrator",
        ));
    }
    let touches_admins =
        target.role >= PlatformRole::Admin || role.is_some_and(|r| r >= PlatformRole::Admin);
    if touches_admins && principal.platform_role < PlatformRole::SuperAdmin {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only a super admin may change administrators or grant admin roles",
        ));
    }
    state
        .store
        .update_user_admin(
            state.clock.now_ms(),
            &id,
            body.plan.as_deref(),
            role,
            body.is_active,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => ApiError::invalid_field("plan", message),
            other => other.into(),
        })?;
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        None,
        "admin.user_update",
        "user",
        Some(&id),
        "success",
    )
    .await;
    let user = state
        .store
        .user_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user_response(&user)))
}
