//! Errors of the store.

use std::path::PathBuf;

use crate::Backend;

/// A failure talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported backend.
    #[error("unsupported database url scheme `{scheme}`: use sqlite:// or postgres://")]
    UnsupportedUrl {
        /// The scheme found.
        scheme: String,
    },
    /// The SQLite file's directory could not be created.
    #[error("cannot create the database directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Opening the pool failed.
    #[error("cannot connect to the {backend} database")]
    Connect {
        /// Which backend.
        backend: Backend,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed; the schema was left at the last good migration.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The write would break a uniqueness rule (the message says which).
    #[error("{0}")]
    Conflict(String),
    /// A plan limit is reached (the message names the resource).
    #[error("plan limit reached for {0}")]
    QuotaExceeded(String),
    /// A stored value cannot be read back (a bug or manual tampering).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether the database itself is unreachable, full or overloaded (as opposed to a
    /// bad query), so callers can answer 503 instead of 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Connect { .. } => true,
            StoreError::Query(sqlx::Error::Database(e)) => {
                e.code().is_some_and(|code| unavailable_code(&code))
            }
            StoreError::Query(e) => matches!(
                e,
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
            ),
            _ => false,
        }
    }
}

/// Whether a database error code says the database cannot work right now,
/// not that the query was wrong. PostgreSQL's are SQLSTATEs (five
/// characters): disk full (53100), out of memory (53200), too many
/// connections (53300), a server shutting down or starting (57P01 to
/// 57P03). SQLite's are numbers whose low byte is the primary code:
/// `SQLITE_BUSY` (5: another connection held the write lock past the busy
/// timeout; a retry soon succeeds), `SQLITE_IOERR` (10, with its extended
/// write and fsync codes) and `SQLITE_FULL` (13).
fn unavailable_code(code: &str) -> bool {
    if code.len() == 5 && !code.starts_with('0') {
        return ["53100", "53200", "53300", "57P01", "57P02", "57P03"].contains(&code);
    }
    code.parse::<u32>()
        .is_ok_and(|n| matches!(n & 0xff, 5 | 10 | 13))
}

#[cfg(test)]
mod tests {
    use super::unavailable_code;

    #[test]
    fn a_busy_full_or_failing_database_is_unavailable_a_bad_query_is_not() {
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_IOERR_WRITE, SQLITE_FULL; PostgreSQL's disk full.
        for code in ["5", "517", "778", "13", "53100", "57P01"] {
            assert!(unavailable_code(code), "{code}");
        }
        // SQLITE_CONSTRAINT_UNIQUE, SQLITE_ERROR; PostgreSQL's unique and syntax errors.
        for code in ["2067", "1", "23505", "42601"] {
            assert!(!unavailable_code(code), "{code}");
        }
    }
}
