//! Plans: the limits a user's account runs under. Seeded by migration.

use crate::{Store, StoreError};

/// A plan; `None` limits are unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Id (`free`, `basic`, `premium`, `enterprise`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Executions per day.
    pub executions_per_day: Option<i64>,
    /// API calls per day made with API keys.
    pub api_calls_per_day: Option<i64>,
    /// Longest execution, seconds.
    pub max_time_secs: i64,
    /// Most memory per execution, MB.
    pub max_memory_mb: i64,
    /// Library snippets.
    pub max_snippets: Option<i64>,
    /// API keys.
    pub max_api_keys: Option<i64>,
    /// Concurrent sandboxes.
    pub max_sandboxes: Option<i64>,
    /// CPUs per sandbox.
    pub max_cpus: Option<i64>,
    /// Disk per sandbox, MB.
    pub max_disk_mb: Option<i64>,
    /// Executions of one org that run at once; more wait in line.
    pub max_concurrent_executions: i64,
}

type PlanRow = (
    String,
    String,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
);

const PLAN_SELECT: &str = "SELECT id, name, executions_per_day, api_calls_per_day, max_time_secs, \
     max_memory_mb, max_snippets, max_api_keys, max_sandboxes, max_cpus, max_disk_mb, max_concurrent_executions FROM plans";

fn plan(row: PlanRow) -> Plan {
    let (id, name, executions_per_day, api_calls_per_day, max_time_secs, max_memory_mb) =
        (row.0, row.1, row.2, row.3, row.4, row.5);
    Plan {
        id,
        name,
        executions_per_day,
        api_calls_per_day,
        max_time_secs,
        max_memory_mb,
        max_snippets: row.6,
        max_api_keys: row.7,
        max_sandboxes: row.8,
        max_cpus: row.9,
        max_disk_mb: row.10,
        max_concurrent_executions: row.11,
    }
}

impl Store {
    /// Every plan, cheapest first.
    pub async fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{PLAN_SELECT} ORDER BY sort_order"));
        let rows: Vec<PlanRow> = sqlx::query_as(sql).fetch_all(self.pool()).await?;
        Ok(rows.into_iter().map(plan).collect())
    }

    /// One plan.
    pub async fn plan(&self, id: &str) -> Result<Option<Plan>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{PLAN_SELECT} WHERE id = $1"));
        let row: Option<PlanRow> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(plan))
    }
}
