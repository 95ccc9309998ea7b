//! Platform administration: the installation's audit log (pages and
//! summaries) and account management. Who may call these (administrators)
//! is checked by the surface's authorization; the finer rules (only a super
//! admin touches administrators, nobody demotes or disables themselves)
//! are checked here.

use corral_core::auth::{PlatformRole, Principal};
use corral_core::clock::{parse_rfc3339, rfc3339};
use corral_store::{AuditDimension, AuditFilter, StoreError};
use corral_types::identity::{
    AdminUpdateUserRequest, AuditCount, AuditPage, AuditRecordResponse, AuditStats, UserPage,
    UserResponse,
};

use crate::accounts::user_response;
use crate::audit::{ClientInfo, audit};
use crate::paging::{page_cut, page_limit};
use crate::{Service, ServiceError, ServiceResult};

/// A search of the audit log, as given (times are RFC 3339 text, checked here).
#[derive(Debug, Clone, Default)]
pub struct AuditSearch {
    /// Actor user id.
    pub user_id: Option<String>,
    /// Org id.
    pub org_id: Option<String>,
    /// Action, such as `auth.login`.
    pub action: Option<String>,
    /// Resource type, such as `api_key`.
    pub resource_type: Option<String>,
    /// From this time (inclusive).
    pub since: Option<String>,
    /// Before this time (exclusive).
    pub until: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
}

/// A time range of the audit log, as given (RFC 3339 text, either end open).
#[derive(Debug, Clone, Default)]
pub struct AuditRange {
    /// From this time (inclusive).
    pub since: Option<String>,
    /// Before this time (exclusive).
    pub until: Option<String>,
}

impl AuditRange {
    fn parse(&self) -> ServiceResult<(Option<i64>, Option<i64>)> {
        Ok((
            time("since", self.since.as_deref())?,
            time("until", self.until.as_deref())?,
        ))
    }
}

fn time(field: &str, value: Option<&str>) -> ServiceResult<Option<i64>> {
    value
        .map(|v| {
            parse_rfc3339(v)
                .ok_or_else(|| ServiceError::invalid_field(field, "must be an RFC 3339 time"))
        })
        .transpose()
}

/// The audit log of the whole installation, newest first.
pub async fn audit_log(service: &Service, search: AuditSearch) -> ServiceResult<AuditPage> {
    let filter = AuditFilter {
        user_id: search.user_id,
        org_id: search.org_id,
        action: search.action,
        resource_type: search.resource_type,
        since: time("since", search.since.as_deref())?,
        until: time("until", search.until.as_deref())?,
        before_id: search.cursor,
        limit: 0,
    };
    audit_page(service, filter, search.limit).await
}

/// One page of audit records matching `filter`, newest first.
pub(crate) async fn audit_page(
    service: &Service,
    mut filter: AuditFilter,
    limit: Option<i64>,
) -> ServiceResult<AuditPage> {
    let limit = page_limit(limit)?;
    filter.limit = limit + 1;
    let mut records = service.store.list_audit(&filter).await?;
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

async fn audit_counts(
    service: &Service,
    by: AuditDimension,
    (since, until): (Option<i64>, Option<i64>),
) -> ServiceResult<Vec<AuditCount>> {
    Ok(service
        .store
        .audit_counts(by, since, until)
        .await?
        .into_iter()
        .map(|(name, count)| AuditCount { name, count })
        .collect())
}

/// The audit log summarized: totals by outcome, action and resource type.
pub async fn audit_stats(service: &Service, range: AuditRange) -> ServiceResult<AuditStats> {
    let range = range.parse()?;
    let by_outcome = audit_counts(service, AuditDimension::Outcome, range).await?;
    let total = by_outcome.iter().map(|c| c.count).sum();
    let failed = by_outcome
        .iter()
        .filter(|c| c.name == "failure" || c.name == "denied")
        .map(|c| c.count)
        .sum();
    Ok(AuditStats {
        total,
        failed,
        by_outcome,
        by_action: audit_counts(service, AuditDimension::Action, range).await?,
        by_resource_type: audit_counts(service, AuditDimension::ResourceType, range).await?,
    })
}

/// Every action in the audit log, with how often it occurs, most frequent first.
pub async fn audit_actions(service: &Service, range: AuditRange) -> ServiceResult<Vec<AuditCount>> {
    audit_counts(service, AuditDimension::Action, range.parse()?).await
}

/// Every resource type in the audit log, with how often it occurs.
pub async fn audit_resource_types(
    service: &Service,
    range: AuditRange,
) -> ServiceResult<Vec<AuditCount>> {
    audit_counts(service, AuditDimension::ResourceType, range.parse()?).await
}

/// Every account, oldest first, a page at a time.
pub async fn list_users(
    service: &Service,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> ServiceResult<UserPage> {
    let limit = page_limit(limit)?;
    let mut users = service.store.list_users(cursor, limit + 1).await?;
    let next_cursor = page_cut(&mut users, limit, |u| u.id.clone());
    Ok(UserPage {
        items: users.iter().map(user_response).collect(),
        next_cursor,
    })
}

/// Changes user `id`'s plan, role or active flag. Admin roles are granted
/// and removed only by a super admin; nobody changes their own role or
/// disables themselves.
pub async fn update_user(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    input: AdminUpdateUserRequest,
) -> ServiceResult<UserResponse> {
    let role = input
        .role
        .as_deref()
        .map(|r| {
            r.parse::<PlatformRole>()
                .map_err(|e| ServiceError::invalid_field("role", e.to_string()))
        })
        .transpose()?;
    let target = service
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    if id == caller.user_id && (role.is_some() || input.is_active == Some(false)) {
        return Err(ServiceError::Forbidden(
            "you cannot change your own role or disable yourself; ask another administrator"
                .to_owned(),
        ));
    }
    let touches_admins =
        target.role >= PlatformRole::Admin || role.is_some_and(|r| r >= PlatformRole::Admin);
    if touches_admins && caller.platform_role < PlatformRole::SuperAdmin {
        return Err(ServiceError::Forbidden(
            "only a super admin may change administrators or grant admin roles".to_owned(),
        ));
    }
    service
        .store
        .update_user_admin(
            service.clock.now_ms(),
            id,
            input.plan.as_deref(),
            role,
            input.is_active,
        )
        .await
        .map_err(|e| match e {
            // The store's only conflict here: no plan has this id.
            StoreError::Conflict(message) => ServiceError::invalid_field("plan", message),
            other => other.into(),
        })?;
    audit(
        service,
        client,
        Some(&caller.user_id),
        None,
        "admin.user_update",
        "user",
        Some(id),
        "success",
    )
    .await;
    let user = service
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    Ok(user_response(&user))
}
