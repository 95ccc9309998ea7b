//! Sandboxes as records: who owns them, their limits and their state. The
//! running containers are `corral-runtime`'s business.

use corral_core::id::new_id;

use crate::{Store, StoreError};

/// How many uid/gid ranges sandboxes can hold at once (each 65 536 ids,
/// starting at 1 000 000 on the host).
pub const ID_SLOTS: i64 = 60_000;

/// A sandbox record (its fields are the columns of `COLUMNS`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
    /// Stop after this many idle minutes.
    pub auto_stop_minutes: Option<i64>,
    /// Delete after this many minutes stopped.
    pub auto_delete_minutes: Option<i64>,
    /// Last exec, file operation or terminal input (Unix ms).
    pub last_active_at: i64,
    /// When it was last stopped (Unix ms).
    pub stopped_at: Option<i64>,
}

/// The editable parts of a sandbox (`None`: unchanged; for the minutes,
/// `Some(None)` clears the setting).
#[derive(Debug, Clone, Default)]
pub struct SandboxChanges {
    /// Display name.
    pub name: Option<String>,
    /// Labels, a JSON object (replaces them all).
    pub labels: Option<String>,
    /// Idle minutes before an automatic stop.
    pub auto_stop_minutes: Option<Option<i64>>,
    /// Stopped minutes before an automatic delete.
    pub auto_delete_minutes: Option<Option<i64>>,
}

/// Which sandboxes [`Store::sandboxes_matching`] lists (`None`: any).
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxFilter<'a> {
    /// Of this org.
    pub org_id: Option<&'a str>,
    /// In this state.
    pub state: Option<&'a str>,
    /// With this label (`key`, `value`).
    pub label: Option<(&'a str, &'a str)>,
    /// On this image (its normalised reference).
    pub image: Option<&'a str>,
}

/// A sandbox to record.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    /// Its id, when it has one already (a warm sandbox); else a new one.
    pub id: Option<String>,
    /// Already running (a warm sandbox): recorded `running`, not `creating`.
    pub running: bool,
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
    /// Idle minutes before an automatic stop.
    pub auto_stop_minutes: Option<i64>,
    /// Stopped minutes before an automatic delete.
    pub auto_delete_minutes: Option<i64>,
}

const COLUMNS: &str = "id, org_id, created_by, name, image, state, id_slot, memory_mb, \
     cpu_millicores, pids, disk_mb, error, created_at, env, labels, auto_stop_minutes, \
     auto_delete_minutes, last_active_at, stopped_at";

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
        let id = new.id.clone().unwrap_or_else(new_id);
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
                 memory_mb, cpu_millicores, pids, disk_mb, error, created_at, updated_at, env, labels, \
                 auto_stop_minutes, auto_delete_minutes, last_active_at, counted) \
                 VALUES ($1, $2, $3, $4, $5, $16, $6, $7, $8, $9, $10, NULL, $11, $11, $12, $13, \
                 $14, $15, $11, 1)",
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
            .bind(new.auto_stop_minutes)
            .bind(new.auto_delete_minutes)
            .bind(if new.running { "running" } else { "creating" })
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
        let row: Option<SandboxRecord> = sqlx::query_as(sql)
            .bind(org_id)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row)
    }

    /// Sandboxes of `org_id` (in `state`, with the label `key: value`, when
    /// given), oldest first, after `after_id`.
    pub async fn sandboxes(
        &self,
        org_id: &str,
        state: Option<&str>,
        label: Option<(&str, &str)>,
        after_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SandboxRecord>, StoreError> {
        let filter = SandboxFilter {
            org_id: Some(org_id),
            state,
            label,
            image: None,
        };
        self.sandboxes_matching(&filter, after_id, limit).await
    }

    /// Sandboxes of every org that match `filter`, oldest first (by id),
    /// after `after_id`: the administrators' view, and the image store's
    /// check that no sandbox still runs on an image it removes.
    pub async fn sandboxes_matching(
        &self,
        filter: &SandboxFilter<'_>,
        after_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SandboxRecord>, StoreError> {
        let label = filter.label;
        // Labels are a JSON object in text: look for the exact `"key":"value"`
        // pair as serde_json writes it (LIKE wildcards escaped). SQLite's LIKE
        // ignores ASCII case, so matches are checked again exactly below.
        let pattern = label.map(|(key, value)| {
            let pair = format!(
                "{}:{}",
                serde_json::Value::from(key),
                serde_json::Value::from(value)
            );
            let escaped = pair
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE ($1 IS NULL OR org_id = $1) \
             AND ($2 IS NULL OR id > $2) \
             AND ($4 IS NULL OR state = $4) AND ($5 IS NULL OR labels LIKE $5 ESCAPE '\\') \
             AND ($6 IS NULL OR image = $6) ORDER BY id LIMIT $3"
        ));
        let rows: Vec<SandboxRecord> = sqlx::query_as(sql)
            .bind(filter.org_id.map(str::to_owned))
            .bind(after_id.map(str::to_owned))
            .bind(limit)
            .bind(filter.state.map(str::to_owned))
            .bind(pattern)
            .bind(filter.image.map(str::to_owned))
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .into_iter()
            .filter(|r| {
                label.is_none_or(|(key, value)| {
                    serde_json::from_str::<std::collections::BTreeMap<String, String>>(&r.labels)
                        .is_ok_and(|labels| labels.get(key).is_some_and(|v| v == value))
                })
            })
            .collect())
    }

    /// Every sandbox in one of `states`, in every org (the reconciler and
    /// the lifecycle sweeps).
    pub async fn sandboxes_in(&self, states: &[&str]) -> Result<Vec<SandboxRecord>, StoreError> {
        let mut rows = Vec::new();
        for state in states {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM sandboxes WHERE state = $1 ORDER BY id"
            ));
            let found: Vec<SandboxRecord> = sqlx::query_as(sql)
                .bind(*state)
                .fetch_all(self.pool())
                .await?;
            rows.extend(found);
        }
        Ok(rows)
    }

    /// Whether a sandbox holds uid-range slot `slot`.
    pub async fn sandbox_slot_taken(&self, slot: i64) -> Result<bool, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM sandboxes WHERE id_slot = $1")
            .bind(slot)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Moves a sandbox to `running`.
    pub async fn sandbox_running(&self, now: i64, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sandboxes SET state = 'running', error = NULL, updated_at = $2, \
             last_active_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Moves a sandbox from `from` to `to` if it is still in `from`; `false`
    /// when another request changed it first.
    pub async fn sandbox_transition(
        &self,
        now: i64,
        id: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sandboxes SET state = $3, updated_at = $4 WHERE id = $1 AND state = $2",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records activity (exec, files, terminal input): what auto-stop measures.
    pub async fn sandbox_touch(&self, now: i64, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sandboxes SET last_active_at = $2 WHERE id = $1 AND last_active_at < $2",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Moves a `running`, `paused`, `starting` or `stopping` sandbox to `stopped`, giving back its
    /// place in the creator's count (it keeps its uid range: its files are
    /// still owned by it). `false` when it was in neither state.
    pub async fn sandbox_stopped(&self, now: i64, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Every state it may leave holds a place (`counted = 1`).
        let row: Option<(String,)> = sqlx::query_as(
            "UPDATE sandboxes SET state = 'stopped', stopped_at = $2, updated_at = $2, counted = 0 \
             WHERE id = $1 AND state IN ('running', 'paused', 'starting', 'stopping') RETURNING created_by",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user,)) = row else {
            return Ok(false);
        };
        release_live(&mut tx, &user).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Moves a `stopped` sandbox to `starting`, taking a place in the
    /// creator's count within `max_live` (`QuotaExceeded` past it; `false`
    /// when it is not stopped).
    pub async fn sandbox_starting(
        &self,
        now: i64,
        id: &str,
        created_by: &str,
        max_live: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let counted = sqlx::query(
            "UPDATE users SET live_sandboxes = live_sandboxes + 1 \
             WHERE id = $1 AND ($2 < 0 OR live_sandboxes < $2)",
        )
        .bind(created_by)
        .bind(max_live.unwrap_or(-1))
        .execute(&mut *tx)
        .await?;
        if counted.rows_affected() == 0 {
            return Err(StoreError::QuotaExceeded("concurrent sandboxes".into()));
        }
        let moved = sqlx::query(
            "UPDATE sandboxes SET state = 'starting', counted = 1, updated_at = $2 \
             WHERE id = $1 AND state = 'stopped'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            // Rolled back: the place is not taken.
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Applies `changes` to a sandbox of `org_id`; `false` when there is none.
    pub async fn update_sandbox(
        &self,
        now: i64,
        org_id: &str,
        id: &str,
        changes: &SandboxChanges,
    ) -> Result<bool, StoreError> {
        let (stop_set, stop) = changes.auto_stop_minutes.map_or((0, None), |v| (1, v));
        let (delete_set, delete) = changes.auto_delete_minutes.map_or((0, None), |v| (1, v));
        let done = sqlx::query(
            "UPDATE sandboxes SET name = COALESCE($3, name), labels = COALESCE($4, labels), \
             auto_stop_minutes = CASE WHEN $5 = 1 THEN $6 ELSE auto_stop_minutes END, \
             auto_delete_minutes = CASE WHEN $7 = 1 THEN $8 ELSE auto_delete_minutes END, \
             updated_at = $9 WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id)
        .bind(id)
        .bind(changes.name.clone())
        .bind(changes.labels.clone())
        .bind(stop_set)
        .bind(stop)
        .bind(delete_set)
        .bind(delete)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a sandbox to `error` with `message`, releasing its place in the
    /// creator's live count (it runs nothing any more). It keeps its id
    /// range: the files on its disk are owned by it, and a stop and a start
    /// bring it back ([`Store::sandbox_recovered`]).
    pub async fn sandbox_failed(
        &self,
        now: i64,
        id: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT created_by, counted FROM sandboxes WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "UPDATE sandboxes SET state = 'error', error = $2, counted = 0, \
             updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some((user, 1)) = row {
            release_live(&mut tx, &user).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Moves a sandbox in `error` to `stopped` (what is left of its
    /// container has been cleaned up), so it can be started again; `false`
    /// when it is not in `error`. It holds no place in the live count
    /// either way. One that lost its id range (recorded before ranges were
    /// kept) gets a free one from `pick_slot`.
    pub async fn sandbox_recovered(
        &self,
        now: i64,
        id: &str,
        pick_slot: impl Fn(u32) -> i64,
    ) -> Result<bool, StoreError> {
        for attempt in 0..8 {
            let moved = sqlx::query(
                "UPDATE sandboxes SET state = 'stopped', error = NULL, stopped_at = $2, \
                 updated_at = $2, id_slot = COALESCE(id_slot, $3) \
                 WHERE id = $1 AND state = 'error'",
            )
            .bind(id)
            .bind(now)
            .bind(pick_slot(attempt))
            .execute(self.pool())
            .await;
            match moved {
                Ok(done) => return Ok(done.rows_affected() == 1),
                // The slot was taken: try another.
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {}
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::Conflict(
            "no free sandbox id range; try again".into(),
        ))
    }

    /// Deletes a sandbox record of `org_id`; `false` when there is none.
    pub async fn delete_sandbox(&self, org_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let row: Option<(String, i64)> = sqlx::query_as(
            "DELETE FROM sandboxes WHERE org_id = $1 AND id = $2 RETURNING created_by, counted",
        )
        .bind(org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let found = row.is_some();
        if let Some((user, 1)) = row {
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
