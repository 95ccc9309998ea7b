//! The auth epoch: a counter that moves whenever something a signed-in
//! caller's identity depends on changes (a user's role, plan or active flag,
//! an API key's state, a membership, an org), so a cache of authenticated
//! principals can drop everything older at once.
//!
//! Within one process the store bumps it itself after each such write. On
//! PostgreSQL the write also sends `NOTIFY corral_auth_changed`, and every
//! replica's listener bumps its own epoch, so a key revoked through one
//! replica is refused by the others within a round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Backend, Store, StoreError};

/// The PostgreSQL notification channel.
const CHANNEL: &str = "corral_auth_changed";

/// A shared counter; see the module docs.
#[derive(Debug, Default, Clone)]
pub(crate) struct AuthEpoch(Arc<AtomicU64>);

impl AuthEpoch {
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

impl Store {
    /// The current auth epoch; a cached principal from an older epoch is stale.
    pub fn auth_epoch(&self) -> u64 {
        self.epoch.get()
    }

    /// Records that identity data changed: bumps the epoch here and tells
    /// the other replicas. A failed notification only costs them freshness
    /// until their cache entries expire, so it is logged, not returned.
    pub(crate) async fn auth_changed(&self) {
        self.epoch.bump();
        if self.backend() == Backend::Postgres
            && let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(self.pool())
                .await
        {
            tracing::warn!(%error, "notifying other replicas of an auth change failed");
        }
    }

    /// On PostgreSQL, listens for other replicas' auth changes and bumps the
    /// local epoch on each (and on every reconnect, since notifications sent
    /// while disconnected are lost). Returns at once on SQLite, which has one
    /// replica by construction.
    pub(crate) fn spawn_auth_listener(&self, url: &str) {
        if self.backend() != Backend::Postgres {
            return;
        }
        let epoch = self.epoch.clone();
        let url = url.to_owned();
        tokio::spawn(async move {
            loop {
                match listen(&url, &epoch).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, "auth change listener lost its connection; reconnecting");
                        epoch.bump();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}

async fn listen(url: &str, epoch: &AuthEpoch) -> Result<(), StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    epoch.bump();
    loop {
        // `try_recv` yields `None` when the connection dropped; start over
        // (bumping the epoch) rather than let sqlx reconnect silently.
        match listener.try_recv().await? {
            Some(_) => epoch.bump(),
            None => return Err(sqlx::Error::PoolClosed.into()),
        }
    }
}
