//! The audit log: one record per security-relevant action, written by the
//! use case that did it, so every surface audits alike.

use corral_store::AuditEntry;

use crate::Service;

/// Where a request came from (a surface fills it in: the HTTP adapter from
/// the peer address and `User-Agent`; the worker as "automatic").
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Peer IP address.
    pub ip: Option<String>,
    /// `User-Agent`, truncated.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The server acting on its own (the sweep, the reconciler).
    pub fn automatic() -> ClientInfo {
        ClientInfo {
            ip: None,
            user_agent: Some("corral (automatic)".to_owned()),
        }
    }
}

/// Appends an audit record; a failure to write it is logged, never shown.
#[expect(
    clippy::too_many_arguments,
    reason = "one flat call per audited action reads best"
)]
pub async fn audit(
    service: &Service,
    client: &ClientInfo,
    actor: Option<&str>,
    org: Option<&str>,
    action: &str,
    resource_type: &str,
    resource_id: Option<&str>,
    outcome: &str,
) {
    let entry = AuditEntry {
        actor_user_id: actor.map(str::to_owned),
        org_id: org.map(str::to_owned),
        action: action.to_owned(),
        resource_type: resource_type.to_owned(),
        resource_id: resource_id.map(str::to_owned),
        ip: client.ip.clone(),
        user_agent: client.user_agent.clone(),
        outcome: outcome.to_owned(),
        detail: None,
    };
    if let Err(error) = service.store.audit(service.clock.now_ms(), entry).await {
        tracing::error!(%error, action, "writing the audit log failed");
    }
}

/// Audits what the user `user_id` did to their own account (the actor and
/// the resource are the same user, in no org).
pub async fn audit_account(
    service: &Service,
    client: &ClientInfo,
    user_id: &str,
    action: &str,
    outcome: &str,
) {
    audit(
        service,
        client,
        Some(user_id),
        None,
        action,
        "user",
        Some(user_id),
        outcome,
    )
    .await;
}
