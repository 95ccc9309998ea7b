//! Platform administration.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use corral_core::clock::{parse_rfc3339, rfc3339};
use corral_store::AuditFilter;
use corral_types::FieldError;
use corral_types::identity::{AuditPage, AuditRecordResponse};

use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/admin/audit", get(audit_log))
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
            parse_rfc3339(v).ok_or_else(|| {
                ApiError::validation(vec![FieldError {
                    field: field.to_owned(),
                    message: "must be an RFC 3339 time".into(),
                }])
            })
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
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation(vec![FieldError {
            field: "limit".into(),
            message: "must be between 1 and 200".into(),
        }]));
    }
    let filter = AuditFilter {
        user_id: query.user_id,
        org_id: query.org_id,
        action: query.action,
        resource_type: query.resource_type,
        since: time("since", query.since.as_deref())?,
        until: time("until", query.until.as_deref())?,
        before_id: query.cursor,
        limit: limit + 1,
    };
    let mut records = state.store.list_audit(&filter).await?;
    let next_cursor = if records.len() as i64 > limit {
        records.truncate(limit as usize);
        records.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(AuditPage {
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
    }))
}
