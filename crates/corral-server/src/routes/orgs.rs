//! Organizations, members, invitations and each org's audit log.
//!
//! The org in the path is the org the request acts in: the authorization
//! middleware resolves the caller's role there (404 when not a member), so
//! handlers only apply the finer rules (owners are managed by owners, an org
//! keeps an owner).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_core::auth::{Action, OrgRole, can};
use corral_core::clock::rfc3339;
use corral_core::validate::normalize_email;
use corral_store::{AuditFilter, MembershipChange, StoreError};
use corral_types::ErrorCode;
use corral_types::identity::{
    AuditPage, CreateInvitationRequest, CreatedInvitationResponse, InvitationResponse,
    MemberResponse, OrgRequest, OrgResponse, UpdateMemberRequest,
};

use crate::auth::Caller;
use crate::auth::ClientInfo;
use crate::auth::credentials;
use crate::extract::ApiJson;
use crate::mail::Mail;
use crate::routes::admin::audit_page;
use crate::routes::auth::audit;
use crate::{ApiError, AppState};

/// How long an invitation can be accepted.
const INVITATION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

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

fn org_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    Ok(name.to_owned())
}

fn parse_role(field: &str, text: &str) -> Result<OrgRole, ApiError> {
    text.parse()
        .map_err(|e: corral_core::auth::UnknownValue| ApiError::invalid_field(field, e.to_string()))
}

fn org_response(org: corral_store::Org, role: OrgRole) -> OrgResponse {
    OrgResponse {
        id: org.id,
        name: org.name,
        is_personal: org.is_personal,
        role: role.as_str().to_owned(),
        created_at: rfc3339(org.created_at),
    }
}

fn invitation_response(inv: corral_store::Invitation) -> InvitationResponse {
    InvitationResponse {
        id: inv.id,
        org_id: inv.org_id,
        email: inv.email,
        role: inv.role.as_str().to_owned(),
        expires_at: rfc3339(inv.expires_at),
        created_at: rfc3339(inv.created_at),
    }
}

fn member_response(m: corral_store::Member) -> MemberResponse {
    MemberResponse {
        user_id: m.user_id,
        username: m.username,
        email: m.email,
        role: m.role.as_str().to_owned(),
        joined_at: rfc3339(m.joined_at),
    }
}

fn last_owner() -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        "an organization must keep at least one owner; make someone else owner first",
    )
}

fn owners_only() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "only an owner may grant the owner role or change an owner",
    )
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
    let name = org_name(&body.name)?;
    let org = state
        .store
        .create_org(state.clock.now_ms(), &name, &principal.user_id)
        .await?;
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&org.id),
        "org.create",
        "org",
        Some(&org.id),
        "success",
    )
    .await;
    Ok((StatusCode::CREATED, Json(org_response(org, OrgRole::Owner))))
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
    let orgs = state.store.orgs_of(&principal.user_id).await?;
    Ok(Json(
        orgs.into_iter().map(|(o, r)| org_response(o, r)).collect(),
    ))
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
    let (org, role) = state
        .store
        .org_for_member(&principal.org_id, &principal.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(Json(org_response(org, role)))
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
    let name = org_name(&body.name)?;
    state.store.rename_org(&principal.org_id, &name).await?;
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "org.update",
        "org",
        Some(&principal.org_id),
        "success",
    )
    .await;
    show(State(state), principal).await
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
    state
        .store
        .delete_org(&principal.org_id)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            other => other.into(),
        })?;
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "org.delete",
        "org",
        Some(&principal.org_id),
        "success",
    )
    .await;
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
    let members = state.store.members(&principal.org_id).await?;
    Ok(Json(members.into_iter().map(member_response).collect()))
}

async fn member_role(state: &AppState, org: &str, user: &str) -> Result<OrgRole, ApiError> {
    state
        .store
        .org_role(org, user)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))
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
    let new_role = parse_role("role", &body.role)?;
    let current = member_role(&state, &principal.org_id, &user).await?;
    let touches_owner = current == OrgRole::Owner || new_role == OrgRole::Owner;
    if touches_owner && principal.org_role != OrgRole::Owner {
        return Err(owners_only());
    }
    match state
        .store
        .set_member_role(&principal.org_id, &user, new_role)
        .await?
    {
        MembershipChange::Done => {}
        MembershipChange::NotMember => return Err(ApiError::not_found("member")),
        MembershipChange::LastOwner => return Err(last_owner()),
    }
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "org.member_update",
        "user",
        Some(&user),
        "success",
    )
    .await;
    let member = state
        .store
        .members(&principal.org_id)
        .await?
        .into_iter()
        .find(|m| m.user_id == user)
        .ok_or_else(|| ApiError::not_found("member"))?;
    Ok(Json(member_response(member)))
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
    let current = member_role(&state, &principal.org_id, &user).await?;
    if user != principal.user_id {
        if !can(&principal, Action::ManageMembers) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "removing other members needs the admin or owner role",
            ));
        }
        if current == OrgRole::Owner && principal.org_role != OrgRole::Owner {
            return Err(owners_only());
        }
    }
    match state.store.remove_member(&principal.org_id, &user).await? {
        MembershipChange::Done => {}
        MembershipChange::NotMember => return Err(ApiError::not_found("member")),
        MembershipChange::LastOwner => return Err(last_owner()),
    }
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "org.member_remove",
        "user",
        Some(&user),
        "success",
    )
    .await;
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
    let email = normalize_email(&body.email).map_err(|m| ApiError::invalid_field("email", m))?;
    let role = match body.role.as_deref() {
        None => OrgRole::Member,
        Some(text) => parse_role("role", text)?,
    };
    if role == OrgRole::Owner && principal.org_role != OrgRole::Owner {
        return Err(owners_only());
    }
    let token = format!("cri_{}", credentials::random_token(40));
    let now = state.clock.now_ms();
    let inv = state
        .store
        .create_invitation(
            now,
            &principal.org_id,
            &email,
            role,
            &credentials::sha256_hex(&token),
            &principal.user_id,
            now + INVITATION_TTL_MS,
        )
        .await?;
    let org = state
        .store
        .org_for_member(&principal.org_id, &principal.user_id)
        .await?;
    let inviter = state.store.user_by_id(&principal.user_id).await?;
    state.mailer.send(Mail {
        to: email.clone(),
        subject: "You are invited to an organization on Corral".into(),
        template: "invite",
        context: serde_json::json!({
            "inviter": inviter.map_or_else(|| "Someone".to_owned(), |u| u.username),
            "org": org.map_or_else(String::new, |(o, _)| o.name),
            "role": role.as_str(),
            "token": token,
            "link": state.mailer.link(&format!("/invitations/{token}")),
            "expires_at": rfc3339(inv.expires_at),
        }),
    });
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "org.invite",
        "invitation",
        Some(&inv.id),
        "success",
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvitationResponse {
            token,
            invitation: invitation_response(inv),
        }),
    ))
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
    let list = state.store.invitations(&principal.org_id).await?;
    Ok(Json(list.into_iter().map(invitation_response).collect()))
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
    if !state
        .store
        .delete_invitation(&principal.org_id, &id)
        .await?
    {
        return Err(ApiError::not_found("invitation"));
    }
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "org.uninvite",
        "invitation",
        Some(&id),
        "success",
    )
    .await;
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
    let user = state
        .store
        .user_by_id(&principal.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    join_by_invitation(&state, &client, &user, &token)
        .await
        .map(Json)
}

/// `user` joins the org of the invitation `token` (single use, before
/// expiry, for the invited address only; anything else is "not found"):
/// the API's accept and the invitation page's sign-in form.
pub(crate) async fn join_by_invitation(
    state: &AppState,
    client: &ClientInfo,
    user: &corral_store::User,
    token: &str,
) -> Result<OrgResponse, ApiError> {
    let inv = state
        .store
        .accept_invitation(
            state.clock.now_ms(),
            &credentials::sha256_hex(token),
            &user.id,
            &user.email,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("invitation"))?;
    audit(
        state,
        client,
        Some(&user.id),
        Some(&inv.org_id),
        "org.join",
        "invitation",
        Some(&inv.id),
        "success",
    )
    .await;
    let (org, role) = state
        .store
        .org_for_member(&inv.org_id, &user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(org_response(org, role))
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
    let filter = AuditFilter {
        org_id: Some(principal.org_id.clone()),
        before_id: query.cursor,
        ..AuditFilter::default()
    };
    audit_page(&state, filter, query.limit).await.map(Json)
}
