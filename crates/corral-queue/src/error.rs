//! Errors of the queue.

use corral_store::StoreError;

/// A queue operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store's database refused or failed.
    #[error("queue database operation failed")]
    Store(#[from] StoreError),
    /// A queue query failed.
    #[error("queue database query failed")]
    Query(#[from] sqlx::Error),
    /// A Redis command or script failed.
    #[error("redis queue operation failed")]
    Redis(#[from] redis::RedisError),
    /// The worker no longer holds the job: its lease expired and the job was
    /// reclaimed, released or removed. Whatever it did is not recorded.
    #[error("lost the lease on job {id} (attempt {attempt}): the job was reclaimed or removed")]
    LeaseLost {
        /// The job.
        id: String,
        /// The attempt (fencing token) the worker held.
        attempt: i64,
    },
    /// A payload could not be turned into JSON or back into the handler's type.
    #[error("job payload is not valid json for its kind")]
    Payload(#[source] serde_json::Error),
    /// A sensitive job was enqueued or claimed with no encryption key configured.
    #[error("job {id} is sensitive but no queue encryption key is configured")]
    NoKey {
        /// The job.
        id: String,
    },
    /// A sealed payload did not decrypt (wrong key, or tampered with).
    #[error("cannot decrypt the payload of job {id}: wrong key or tampered data")]
    Decrypt {
        /// The job.
        id: String,
    },
    /// A periodic job's schedule is not a valid cron pattern.
    #[error("invalid cron pattern `{pattern}` for periodic job {name}")]
    Cron {
        /// The periodic job.
        name: String,
        /// The pattern given.
        pattern: String,
        /// Why.
        #[source]
        source: croner::errors::CronError,
    },
    /// The request cannot be carried out as given (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// The configured driver cannot do this.
    #[error("{what} is not supported by the {driver} queue driver")]
    Unsupported {
        /// The operation.
        what: &'static str,
        /// The driver.
        driver: &'static str,
    },
    /// Stored queue data cannot be read back (a bug or manual tampering).
    #[error("stored queue data is inconsistent: {0}")]
    Corrupt(String),
}
