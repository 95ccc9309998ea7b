//! Sandboxes as records: who owns them, their limits and their state. The
//! running containers are `corral-runtime`'s business.

use corral_core::id::new_id;

use crate::{Store, StoreError};

/// How many uid/gid ranges sandboxes can hold at once (each 65 536 ids,
/// starting at 1 000 000 on the host).
pub const ID_SLOTS: i64 = 60_000;

/// A sandbox record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Who created it.
    pub created_by: String,
    /// Display name.
    pub name: String,
    /// Image reference (`host` for the host image).
    pub image: String,
    /// `creating`, `running`, `error`.
    pub state: String,
    /// Its uid/gid range slot while it holds one.
    pub id_slot: Option<i64>,
    /// Memory limit, MiB.
    pub memory_mb: i64,
    /// CPU limit, thousandths of a core.
    pub cpu_millicores: i64,
    /// Process limit.
    pub pids: i64,
    /// Writable space, MiB.
    pub disk_mb: i64,
    /// Why it is in `error`.
    pub error: Option<String>,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Base environment, a JSON object.
    pub env: String,
    /// Labels, a JSON object.
    pub labels: String,
}

/// A sandbox to record.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    /// Owning org.
    pub org_id: String,
    /// Creator.
    pub created_by: String,
    /// The creator's plan limit of live sandboxes (`None`: unlimited).
    pub max_live: Option<i64>,
    /// Display name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Memory, MiB.
    pub memory_mb: i64,
    /// CPU, thousandths of a core.
    pub cpu_millicores: i64,
    /// Processes.
    pub pids: i64,
    /// Writable space, MiB.
    pub disk_mb: i64,
    /// Base environment, a JSON object.
    pub env: String,
    /// Labels, a JSON object.
    pub labels: String,
}

type SandboxRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    i64,
    String,
    String,
);

const COLUMNS: &str = "id, org_id, created_by, name, image, state, id_slot, memory_mb, \
     cpu_millicores, pids, disk_mb, error, created_at, env, labels";

fn record(r: SandboxRow) -> SandboxRecord {
    SandboxRecord {
        id: r.0,
        org_id: r.1,
        created_by: r.2,
        name: r.3,
        image: r.4,
        state: r.5,
        id_slot: r.6,
        memory_mb: r.7,
        cpu_millicores: r.8,
        pids: r.9,
        disk_mb: r.10,
        error: r.11,
        created_at: r.12,
        env: r.13,
        labels: r.14,
    }
}

impl Store {
    /// Records a new sandbox in `creating` with a free id slot, within the
    /// creator's plan limit (`QuotaExceeded` past it; the counter update
    /// serializes concurrent creations, as for API keys).
    pub async fn create_sandbox(
        &self,
        now: i64,
        new: NewSandbox,
        pick_slot: impl Fn(u32) -> i64,
    ) -> Result<SandboxRecord, StoreError> {
        let id = new_id();
        for attempt in 0..8 {
            let mut tx = self.pool().begin().await?;
            let counted = sqlx::query(
                "UPDATE users SET live_sandboxes = live_sandboxes + 1 \
                 WHERE id = $1 AND ($2 < 0 OR live_sandboxes < $2)",
            )
            .bind(&new.created_by)
            .bind(new.max_live.unwrap_or(-1))
            .execute(&mut *tx)
            .await?;
            if counted.rows_affected() == 0 {
                return Err(StoreError::QuotaExceeded("concurrent sandboxes".into()));
            }
            let inserted = sqlx::query(
                "INSERT INTO sandboxes (id, org_id, created_by, name, image, state, id_slot, \
                 memory_mb, cpu_millicores, pids, disk_mb, error, created_at, updated_at, env, labels) \
                 VALUES ($1, $2, $3, $4, $5, 'creating', $6, $7, $8, $9, $10, NULL, $11, $11, $12, $13)",
            )
            .bind(&id)
            .bind(&new.org_id)
            .bind(&new.created_by)
            .bind(&new.name)
            .bind(&new.image)
            .bind(pick_slot(attempt))
            .bind(new.memory_mb)
            .bind(new.cpu_millicores)
            .bind(new.pids)
            .bind(new.disk_mb)
            .bind(now)
            .bind(&new.env)
            .bind(&new.labels)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    tx.commit().await?;
                    return self.sandbox(&new.org_id, &id).await?.ok_or_else(|| {
                        StoreError::Corrupt("sandbox vanished after insert".into())
                    });
                }
                // The slot was taken: roll back and try another.
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {}
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::Conflict(
            "no free sandbox id range; try again".into(),
        ))
    }

    /// One sandbox of `org_id`.
    pub async fn sandbox(
        &self,
        org_id: &str,
        id: &str,
    ) -> Result<Option<SandboxRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE org_id = $1 AND id = $2"
        ));
        let row: Option<SandboxRow> = sqlx::query_as(sql)
            .bind(org_id)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(record))
    }

    /// Sandboxes of `org_id` (in `state`, when given), oldest first, after `after_id`.
    pub async fn sandboxes(
        &self,
        org_id: &str,
        state: Option<&str>,
        after_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SandboxRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE org_id = $1 AND ($2 IS NULL OR id > $2) \
             AND ($4 IS NULL OR state = $4) ORDER BY id LIMIT $3"
        ));
        let rows: Vec<SandboxRow> = sqlx::query_as(sql)
            .bind(org_id)
            .bind(after_id.map(str::to_owned))
            .bind(limit)
            .bind(state.map(str::to_owned))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(record).collect())
    }

    /// Every sandbox that should have a container (`creating` or `running`),
    /// in every org: what the reconciler checks against the runtime.
    pub async fn live_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE state IN ('creating', 'running') ORDER BY id"
        ));
        let rows: Vec<SandboxRow> = sqlx::query_as(sql).fetch_all(self.pool()).await?;
        Ok(rows.into_iter().map(record).collect())
    }

    /// Moves a sandbox to `running`.
    pub async fn sandbox_running(&self, now: i64, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sandboxes SET state = 'running', updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Moves a sandbox to `error` with `message`, releasing its id range and
    /// its place in the creator's live count (it runs nothing any more).
    pub async fn sandbox_failed(
        &self,
        now: i64,
        id: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT created_by, id_slot FROM sandboxes WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "UPDATE sandboxes SET state = 'error', error = $2, id_slot = NULL, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some((user, Some(_))) = row {
            release_live(&mut tx, &user).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a sandbox record of `org_id`; `false` when there is none.
    pub async fn delete_sandbox(&self, org_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let row: Option<(String, Option<i64>)> = sqlx::query_as(
            "DELETE FROM sandboxes WHERE org_id = $1 AND id = $2 RETURNING created_by, id_slot",
        )
        .bind(org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let found = row.is_some();
        if let Some((user, Some(_))) = row {
            release_live(&mut tx, &user).await?;
        }
        tx.commit().await?;
        Ok(found)
    }
}

async fn release_live(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE users SET live_sandboxes = live_sandboxes - 1 WHERE id = $1 AND live_sandboxes > 0",
    )
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
