//! The installation record: one row written at first start.

use corral_core::clock::Clock;
use corral_core::id::new_id;

use crate::{Store, StoreError};

/// This Corral installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Stable id of the installation.
    pub id: String,
    /// When it was first started (Unix ms).
    pub created_at: i64,
    /// The version that created it.
    pub version: String,
}

impl Store {
    /// Returns the installation record, creating it on first start.
    ///
    /// Safe to race: should two replicas both insert on first start, every
    /// reader picks the same (earliest) row.
    pub async fn ensure_instance(
        &self,
        clock: &dyn Clock,
        version: &str,
    ) -> Result<Instance, StoreError> {
        sqlx::query(
            "INSERT INTO instance (id, created_at, version) \
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM instance)",
        )
        .bind(new_id())
        .bind(clock.now_ms())
        .bind(version)
        .execute(self.pool())
        .await?;
        let (id, created_at, version): (String, i64, String) = sqlx::query_as(
            "SELECT id, created_at, version FROM instance ORDER BY created_at, id LIMIT 1",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(Instance {
            id,
            created_at,
            version,
        })
    }
}
