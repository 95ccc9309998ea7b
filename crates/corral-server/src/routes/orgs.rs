//! Organizations, members, invitations and each org's audit log.
//!
//! The org in the path is the org the request acts in: the authorization
//! middleware resolves the caller's role there (404 when not a member); the
//! finer rules (owners are managed by owners, an org keeps an owner) are
//! [`corral_service::orgs`]'s.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_service::orgs;
use corral_types::identity::{
    AuditPage, CreateInvitationRequest, CreatedInvitationResponse, InvitationResponse,
    MemberResponse, OrgRequest, OrgResponse, UpdateMemberRequest,
};

use crate::auth::{Caller, ClientInfo};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orgs", get(list).post(create))
        .route("/api/v1/orgs/{org}", get(show).patch(rename).delete(remove))
        .route("/api/v1/orgs/{org}/members", get(members))
        .route(
            "/api/v1/orgs/{org}/members/{user}",
            patch(update_member).delete(remove_member),
        )
        .route(
            "/api/v1/orgs/{org}/invitations",
            get(invitations).post(invite),
        )
        .route("/api/v1/orgs/{org}/invitations/{id}", delete(uninvite))
        .route("/api/v1/orgs/{org}/audit", get(org_audit))
        .route("/api/v1/invitations/{token}/accept", post(accept))
}

/// Creates an organization with the caller as owner.
#[utoipa::path(
    post, path = "/api/v1/orgs", tag = "orgs", security(("bearer" = [])),
    request_body = OrgRequest,
    responses((status = 201, description = "Created", body = OrgResponse))
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    ApiJson(body): ApiJson<OrgRequest>,
) -> Result<(StatusCode, Json<OrgResponse>), ApiError> {
    let org = orgs::create(&state, &principal, &client, body).await?;
    Ok((StatusCode::CREATED, Json(org)))
}

/// The organizations the caller belongs to.
#[utoipa::path(
    get, path = "/api/v1/orgs", tag = "orgs", security(("bearer" = [])),
    responses((status = 200, description = "Orgs with the caller's role", body = [OrgResponse]))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
) -> Result<Json<Vec<OrgResponse>>, ApiError> {
    Ok(Json(orgs::list(&state, &principal).await?))
}

/// One organization.
#[utoipa::path(
    get, path = "/api/v1/orgs/{org}", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id")),
    responses(
        (status = 200, description = "The org", body = OrgResponse),
        (status = 404, description = "No such org of yours", body = corral_types::Problem),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    principal: Caller,
) -> Result<Json<OrgResponse>, ApiError> {
    Ok(Json(orgs::show(&state, &principal).await?))
}

/// Renames an organization (admins and owners).
#[utoipa::path(
    patch, path = "/api/v1/orgs/{org}", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id")),
    request_body = OrgRequest,
    responses((status = 200, description = "Renamed", body = OrgResponse))
)]
pub async fn rename(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    ApiJson(body): ApiJson<OrgRequest>,
) -> Result<Json<OrgResponse>, ApiError> {
    Ok(Json(orgs::rename(&state, &principal, &client, body).await?))
}

/// Deletes an organization (owners; never a personal org).
#[utoipa::path(
    delete, path = "/api/v1/orgs/{org}", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "A personal org", body = corral_types::Problem),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
) -> Result<StatusCode, ApiError> {
    orgs::remove(&state, &principal, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The organization's members.
#[utoipa::path(
    get, path = "/api/v1/orgs/{org}/members", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id")),
    responses((status = 200, description = "Members", body = [MemberResponse]))
)]
pub async fn members(
    State(state): State<AppState>,
    principal: Caller,
) -> Result<Json<Vec<MemberResponse>>, ApiError> {
    Ok(Json(orgs::members(&state, &principal).await?))
}

/// Changes a member's role (admins and owners; owners are managed by owners;
/// the last owner cannot be demoted).
#[utoipa::path(
    patch, path = "/api/v1/orgs/{org}/members/{user}", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id"), ("user" = String, Path, description = "User id")),
    request_body = UpdateMemberRequest,
    responses(
        (status = 200, description = "Updated", body = MemberResponse),
        (status = 409, description = "Would leave no owner", body = corral_types::Problem),
    )
)]
pub async fn update_member(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path((_org, user)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateMemberRequest>,
) -> Result<Json<MemberResponse>, ApiError> {
    Ok(Json(
        orgs::update_member(&state, &principal, &client, &user, body).await?,
    ))
}

/// Removes a member, or leaves the org when `user` is the caller. Removing
/// others needs admin (owners need an owner); the last owner cannot leave.
#[utoipa::path(
    delete, path = "/api/v1/orgs/{org}/members/{user}", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id"), ("user" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 409, description = "Would leave no owner", body = corral_types::Problem),
    )
)]
pub async fn remove_member(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path((_org, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    orgs::remove_member(&state, &principal, &client, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invites someone by email. The token is returned once; with email
/// delivery configured it is also mailed (the default console backend logs it).
#[utoipa::path(
    post, path = "/api/v1/orgs/{org}/invitations", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id")),
    request_body = CreateInvitationRequest,
    responses((status = 201, description = "Created; `token` is shown once", body = CreatedInvitationResponse))
)]
pub async fn invite(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateInvitationRequest>,
) -> Result<(StatusCode, Json<CreatedInvitationResponse>), ApiError> {
    let created = orgs::invite(&state, &principal, &client, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Open invitations of the organization.
#[utoipa::path(
    get, path = "/api/v1/orgs/{org}/invitations", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id")),
    responses((status = 200, description = "Open invitations", body = [InvitationResponse]))
)]
pub async fn invitations(
    State(state): State<AppState>,
    principal: Caller,
) -> Result<Json<Vec<InvitationResponse>>, ApiError> {
    Ok(Json(orgs::invitations(&state, &principal).await?))
}

/// Withdraws an invitation.
#[utoipa::path(
    delete, path = "/api/v1/orgs/{org}/invitations/{id}", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id"), ("id" = String, Path, description = "Invitation id")),
    responses((status = 204, description = "Withdrawn"), (status = 404, description = "No such invitation", body = corral_types::Problem))
)]
pub async fn uninvite(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path((_org, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    orgs::uninvite(&state, &principal, &client, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accepts an invitation: single use, before expiry, and only by the account
/// whose email was invited (anything else is "not found").
#[utoipa::path(
    post, path = "/api/v1/invitations/{token}/accept", tag = "orgs", security(("bearer" = [])),
    params(("token" = String, Path, description = "The invitation token (`cri_…`)")),
    responses(
        (status = 200, description = "Joined", body = OrgResponse),
        (status = 404, description = "No usable invitation for you", body = corral_types::Problem),
    )
)]
pub async fn accept(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(token): Path<String>,
) -> Result<Json<OrgResponse>, ApiError> {
    Ok(Json(
        orgs::accept(&state, &principal, &client, &token).await?,
    ))
}

/// Paging of an org's audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OrgAuditQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

/// The organization's audit log (admins and owners), newest first.
#[utoipa::path(
    get, path = "/api/v1/orgs/{org}/audit", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "Org id"), OrgAuditQuery),
    responses((status = 200, description = "A page of records", body = AuditPage))
)]
pub async fn org_audit(
    State(state): State<AppState>,
    principal: Caller,
    Query(query): Query<OrgAuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    Ok(Json(
        orgs::audit_log(&state, &principal, query.cursor, query.limit).await?,
    ))
}
