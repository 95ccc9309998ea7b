//! The two database backends and the few places where they truly differ.

use crate::StoreError;

/// A supported database backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite: the zero-configuration single-machine default.
    Sqlite,
    /// PostgreSQL: for several replicas and larger installations.
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::UnsupportedUrl {
                scheme: scheme.to_owned(),
            }),
        }
    }

    /// The backend's name, as shown in `/ready` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Statements run on every new connection.
    ///
    /// SQLite needs WAL (readers never block the writer), enforced foreign keys
    /// (off by default in SQLite) and a busy timeout (so concurrent writers wait
    /// instead of failing with `SQLITE_BUSY`). PostgreSQL needs nothing: we
    /// only pin the session time zone so no server default can leak into times.
    pub(crate) fn session_setup(self) -> &'static [&'static str] {
        match self {
            Backend::Sqlite => &[
                "PRAGMA journal_mode = WAL",
                "PRAGMA foreign_keys = ON",
                "PRAGMA busy_timeout = 5000",
                "PRAGMA synchronous = NORMAL",
            ],
            Backend::Postgres => &["SET TIME ZONE 'UTC'"],
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
