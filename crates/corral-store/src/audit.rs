//! The audit log: who did what, where from, with what outcome.

use corral_core::id::new_id;

use crate::{Store, StoreError};

/// An action to record.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    /// Who (absent for unknown users, e.g. a failed login for an unknown name).
    pub actor_user_id: Option<String>,
    /// In which org.
    pub org_id: Option<String>,
    /// What, as `domain.verb` (`auth.login`, `api_key.create`).
    pub action: String,
    /// Type of the object acted on.
    pub resource_type: String,
    /// Id of the object acted on.
    pub resource_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Short extra context (never a secret).
    pub detail: Option<String>,
}

/// A recorded action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Id (UUIDv7, so ids sort by time).
    pub id: String,
    /// When (Unix ms).
    pub at: i64,
    /// Who.
    pub actor_user_id: Option<String>,
    /// In which org.
    pub org_id: Option<String>,
    /// What.
    pub action: String,
    /// Type of the object.
    pub resource_type: String,
    /// Id of the object.
    pub resource_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Extra context.
    pub detail: Option<String>,
}

/// Which records to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Actor.
    pub user_id: Option<String>,
    /// Org.
    pub org_id: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Resource type.
    pub resource_type: Option<String>,
    /// From this time (Unix ms, inclusive).
    pub since: Option<i64>,
    /// Before this time (Unix ms, exclusive).
    pub until: Option<i64>,
    /// Only records with an id below this (the page cursor).
    pub before_id: Option<String>,
    /// Page size.
    pub limit: i64,
}

/// A column the audit log can be counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditDimension {
    /// `auth.login`, `api_key.create`, …
    Action,
    /// `user`, `api_key`, `org`, …
    ResourceType,
    /// `success`, `failure`, `denied`.
    Outcome,
}

type AuditRow = (
    String,
    i64,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
);

impl Store {
    /// Appends a record.
    pub async fn audit(&self, now: i64, entry: AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor_user_id, org_id, action, resource_type, resource_id, \
             ip, user_agent, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(new_id())
        .bind(now)
        .bind(entry.actor_user_id)
        .bind(entry.org_id)
        .bind(entry.action)
        .bind(entry.resource_type)
        .bind(entry.resource_id)
        .bind(entry.ip)
        .bind(entry.user_agent)
        .bind(entry.outcome)
        .bind(entry.detail)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records matching `filter`, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        // Optional filters as `($n IS NULL OR col = $n)`: one static statement
        // for every combination, on both backends.
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, actor_user_id, org_id, action, resource_type, resource_id, ip, user_agent, outcome, detail \
             FROM audit_log \
             WHERE ($1 IS NULL OR actor_user_id = $1) \
               AND ($2 IS NULL OR org_id = $2) \
               AND ($3 IS NULL OR action = $3) \
               AND ($4 IS NULL OR resource_type = $4) \
               AND ($5 IS NULL OR at >= $5) \
               AND ($6 IS NULL OR at < $6) \
               AND ($7 IS NULL OR id < $7) \
             ORDER BY id DESC LIMIT $8",
        )
        .bind(filter.user_id.clone())
        .bind(filter.org_id.clone())
        .bind(filter.action.clone())
        .bind(filter.resource_type.clone())
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.before_id.clone())
        .bind(filter.limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                id: r.0,
                at: r.1,
                actor_user_id: r.2,
                org_id: r.3,
                action: r.4,
                resource_type: r.5,
                resource_id: r.6,
                ip: r.7,
                user_agent: r.8,
                outcome: r.9,
                detail: r.10,
            })
            .collect())
    }

    /// Records per distinct value of `by` in `[since, until)` (either bound
    /// optional), most frequent first.
    pub async fn audit_counts(
        &self,
        by: AuditDimension,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        // One fixed statement per column: no identifier is ever spliced in.
        let sql = match by {
            AuditDimension::Action => {
                "SELECT action, COUNT(*) AS n FROM audit_log \
                 WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) \
                 GROUP BY action ORDER BY n DESC, action"
            }
            AuditDimension::ResourceType => {
                "SELECT resource_type, COUNT(*) AS n FROM audit_log \
                 WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) \
                 GROUP BY resource_type ORDER BY n DESC, resource_type"
            }
            AuditDimension::Outcome => {
                "SELECT outcome, COUNT(*) AS n FROM audit_log \
                 WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) \
                 GROUP BY outcome ORDER BY n DESC, outcome"
            }
        };
        let rows: Vec<(String, i64)> = sqlx::query_as(sql)
            .bind(since)
            .bind(until)
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }
}
