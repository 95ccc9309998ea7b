//! Organizations, members, invitations and each org's audit log.
//!
//! The org a use case acts in is the caller's (`Principal::org_id`): the
//! surface resolved the caller's role there ("not found" when not a
//! member) and checked the role the action needs. The finer rules are
//! here: owners are managed by owners, an org keeps an owner, an invitation
//! works once, before it expires, for the invited address only.

use corral_core::auth::{Action, OrgRole, Principal, can};
use corral_core::clock::rfc3339;
use corral_core::validate::normalize_email;
use corral_store::{AuditFilter, Invitation, MembershipChange, User};
use corral_types::identity::{
    AuditPage, CreateInvitationRequest, CreatedInvitationResponse, InvitationResponse,
    MemberResponse, OrgRequest, OrgResponse, UpdateMemberRequest,
};

use crate::audit::{ClientInfo, audit};
use crate::mail::Mail;
use crate::{Service, ServiceError, ServiceResult, credentials, sessions};

/// How long an invitation can be accepted.
pub const INVITATION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// The longest org name, in characters.
const NAME_MAX_CHARS: usize = 100;

fn org_name(name: &str) -> ServiceResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX_CHARS {
        return Err(ServiceError::invalid_field(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    Ok(name.to_owned())
}

fn parse_role(field: &str, text: &str) -> ServiceResult<OrgRole> {
    text.parse().map_err(|e: corral_core::auth::UnknownValue| {
        ServiceError::invalid_field(field, e.to_string())
    })
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

fn invitation_response(inv: Invitation) -> InvitationResponse {
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

fn last_owner() -> ServiceError {
    ServiceError::conflict(
        "an organization must keep at least one owner; make someone else owner first",
    )
}

fn owners_only() -> ServiceError {
    ServiceError::Forbidden("only an owner may grant the owner role or change an owner".to_owned())
}

/// Audits a successful change the caller made in the org they act in.
async fn audit_in_org(
    service: &Service,
    client: &ClientInfo,
    caller: &Principal,
    action: &str,
    resource_type: &str,
    resource_id: &str,
) {
    audit(
        service,
        client,
        Some(&caller.user_id),
        Some(&caller.org_id),
        action,
        resource_type,
        Some(resource_id),
        "success",
    )
    .await;
}

/// Creates an organization with the caller as owner. An API key cannot:
/// it acts only in its own org.
pub async fn create(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    input: OrgRequest,
) -> ServiceResult<OrgResponse> {
    sessions::require(caller, Action::CreateOrg)?;
    let name = org_name(&input.name)?;
    let org = service
        .store
        .create_org(service.clock.now_ms(), &name, &caller.user_id)
        .await?;
    audit(
        service,
        client,
        Some(&caller.user_id),
        Some(&org.id),
        "org.create",
        "org",
        Some(&org.id),
        "success",
    )
    .await;
    Ok(org_response(org, OrgRole::Owner))
}

/// The organizations the caller belongs to, with their role in each.
pub async fn list(service: &Service, caller: &Principal) -> ServiceResult<Vec<OrgResponse>> {
    let orgs = service.store.orgs_of(&caller.user_id).await?;
    Ok(orgs.into_iter().map(|(o, r)| org_response(o, r)).collect())
}

/// The org the caller acts in.
pub async fn show(service: &Service, caller: &Principal) -> ServiceResult<OrgResponse> {
    let (org, role) = service
        .store
        .org_for_member(&caller.org_id, &caller.user_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("organization"))?;
    Ok(org_response(org, role))
}

/// Renames the org the caller acts in.
pub async fn rename(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    input: OrgRequest,
) -> ServiceResult<OrgResponse> {
    let name = org_name(&input.name)?;
    service.store.rename_org(&caller.org_id, &name).await?;
    audit_in_org(service, client, caller, "org.update", "org", &caller.org_id).await;
    show(service, caller).await
}

/// Deletes the org the caller acts in (never a personal org: a conflict).
pub async fn remove(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
) -> ServiceResult<()> {
    service.store.delete_org(&caller.org_id).await?;
    audit_in_org(service, client, caller, "org.delete", "org", &caller.org_id).await;
    Ok(())
}

/// The members of the org the caller acts in.
pub async fn members(service: &Service, caller: &Principal) -> ServiceResult<Vec<MemberResponse>> {
    let members = service.store.members(&caller.org_id).await?;
    Ok(members.into_iter().map(member_response).collect())
}

async fn member_role(service: &Service, org: &str, user: &str) -> ServiceResult<OrgRole> {
    service
        .store
        .org_role(org, user)
        .await?
        .ok_or_else(|| ServiceError::not_found("member"))
}

/// Changes member `user`'s role (owners are managed by owners; the last
/// owner cannot be demoted).
pub async fn update_member(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    user: &str,
    input: UpdateMemberRequest,
) -> ServiceResult<MemberResponse> {
    let new_role = parse_role("role", &input.role)?;
    let current = member_role(service, &caller.org_id, user).await?;
    let touches_owner = current == OrgRole::Owner || new_role == OrgRole::Owner;
    if touches_owner && caller.org_role != OrgRole::Owner {
        return Err(owners_only());
    }
    membership_changed(
        service
            .store
            .set_member_role(&caller.org_id, user, new_role)
            .await?,
    )?;
    audit_in_org(service, client, caller, "org.member_update", "user", user).await;
    let member = service
        .store
        .members(&caller.org_id)
        .await?
        .into_iter()
        .find(|m| m.user_id == user)
        .ok_or_else(|| ServiceError::not_found("member"))?;
    Ok(member_response(member))
}

fn membership_changed(change: MembershipChange) -> ServiceResult<()> {
    match change {
        MembershipChange::Done => Ok(()),
        MembershipChange::NotMember => Err(ServiceError::not_found("member")),
        MembershipChange::LastOwner => Err(last_owner()),
    }
}

/// Removes member `user`, or leaves the org when `user` is the caller.
/// Removing others needs admin (owners need an owner); the last owner
/// cannot leave.
pub async fn remove_member(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    user: &str,
) -> ServiceResult<()> {
    let current = member_role(service, &caller.org_id, user).await?;
    if user != caller.user_id {
        if !can(caller, Action::ManageMembers) {
            return Err(ServiceError::Forbidden(
                "removing other members needs the admin or owner role".to_owned(),
            ));
        }
        if current == OrgRole::Owner && caller.org_role != OrgRole::Owner {
            return Err(owners_only());
        }
    }
    membership_changed(service.store.remove_member(&caller.org_id, user).await?)?;
    audit_in_org(service, client, caller, "org.member_remove", "user", user).await;
    Ok(())
}

/// Invites someone by email into the caller's org (as a member unless
/// another role is named; only owners invite owners). The token is
/// returned once and mailed.
pub async fn invite(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    input: CreateInvitationRequest,
) -> ServiceResult<CreatedInvitationResponse> {
    let email =
        normalize_email(&input.email).map_err(|m| ServiceError::invalid_field("email", m))?;
    let role = match input.role.as_deref() {
        None => OrgRole::Member,
        Some(text) => parse_role("role", text)?,
    };
    if role == OrgRole::Owner && caller.org_role != OrgRole::Owner {
        return Err(owners_only());
    }
    let token = format!("cri_{}", credentials::random_token(40));
    let now = service.clock.now_ms();
    let inv = service
        .store
        .create_invitation(
            now,
            &caller.org_id,
            &email,
            role,
            &credentials::sha256_hex(&token),
            &caller.user_id,
            now + INVITATION_TTL_MS,
        )
        .await?;
    let org = service
        .store
        .org_for_member(&caller.org_id, &caller.user_id)
        .await?;
    let inviter = service.store.user_by_id(&caller.user_id).await?;
    service.mailer.send(Mail {
        to: email.clone(),
        subject: "You are invited to an organization on Corral".into(),
        template: "invite",
        context: serde_json::json!({
            "inviter": inviter.map_or_else(|| "Someone".to_owned(), |u| u.username),
            "org": org.map_or_else(String::new, |(o, _)| o.name),
            "role": role.as_str(),
            "token": token,
            "link": service.mailer.link(&format!("/invitations/{token}")),
            "expires_at": rfc3339(inv.expires_at),
        }),
    });
    audit_in_org(service, client, caller, "org.invite", "invitation", &inv.id).await;
    Ok(CreatedInvitationResponse {
        token,
        invitation: invitation_response(inv),
    })
}

/// The open invitations of the caller's org.
pub async fn invitations(
    service: &Service,
    caller: &Principal,
) -> ServiceResult<Vec<InvitationResponse>> {
    let list = service.store.invitations(&caller.org_id).await?;
    Ok(list.into_iter().map(invitation_response).collect())
}

/// Withdraws invitation `id` of the caller's org.
pub async fn uninvite(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
) -> ServiceResult<()> {
    if !service.store.delete_invitation(&caller.org_id, id).await? {
        return Err(ServiceError::not_found("invitation"));
    }
    audit_in_org(service, client, caller, "org.uninvite", "invitation", id).await;
    Ok(())
}

/// The caller accepts the invitation `token` (see [`join_by_invitation`]).
pub async fn accept(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    token: &str,
) -> ServiceResult<OrgResponse> {
    let user = service
        .store
        .user_by_id(&caller.user_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    join_by_invitation(service, client, &user, token).await
}

/// `user` joins the org of the invitation `token` (single use, before
/// expiry, for the invited address only; anything else is "not found").
pub async fn join_by_invitation(
    service: &Service,
    client: &ClientInfo,
    user: &User,
    token: &str,
) -> ServiceResult<OrgResponse> {
    let inv = service
        .store
        .accept_invitation(
            service.clock.now_ms(),
            &credentials::sha256_hex(token),
            &user.id,
            &user.email,
        )
        .await?
        .ok_or_else(|| ServiceError::not_found("invitation"))?;
    audit(
        service,
        client,
        Some(&user.id),
        Some(&inv.org_id),
        "org.join",
        "invitation",
        Some(&inv.id),
        "success",
    )
    .await;
    let (org, role) = service
        .store
        .org_for_member(&inv.org_id, &user.id)
        .await?
        .ok_or_else(|| ServiceError::not_found("organization"))?;
    Ok(org_response(org, role))
}

/// What an open invitation shows before it is accepted (spending nothing).
#[derive(Debug, Clone)]
pub struct InvitationPreview {
    /// The invitation.
    pub invitation: Invitation,
    /// The inviting org's name.
    pub org_name: String,
}

/// The open invitation with secret `token`, or `None` when it is unknown,
/// spent, withdrawn or expired.
pub async fn preview_invitation(
    service: &Service,
    token: &str,
) -> ServiceResult<Option<InvitationPreview>> {
    let preview = service
        .store
        .invitation_preview(service.clock.now_ms(), &credentials::sha256_hex(token))
        .await?;
    Ok(preview.map(|(invitation, org_name)| InvitationPreview {
        invitation,
        org_name,
    }))
}

/// A page of the caller's org's audit log, newest first.
pub async fn audit_log(
    service: &Service,
    caller: &Principal,
    cursor: Option<String>,
    limit: Option<i64>,
) -> ServiceResult<AuditPage> {
    let filter = AuditFilter {
        org_id: Some(caller.org_id.clone()),
        before_id: cursor,
        ..AuditFilter::default()
    };
    crate::admin::audit_page(service, filter, limit).await
}
