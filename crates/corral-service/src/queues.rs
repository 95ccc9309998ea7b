//! Administration of the job queue: numbers per queue, failed jobs, retry
//! and clear. Payloads of sensitive jobs never leave the service. Only
//! platform administrators reach these (each surface checks the right
//! before the call).

use corral_core::auth::Principal;
use corral_core::clock::rfc3339;
use corral_queue::{JobFilter, JobRecord, JobState, QueueStats};
use corral_types::queue::{
    JobPage, JobResponse, QueueActionResponse, QueueList, QueueStatsResponse,
};

use crate::audit::{ClientInfo, audit};
use crate::config::is_queue_name;
use crate::paging::{page_cut, page_limit};
use crate::{Service, ServiceError, ServiceResult};

/// What a bad queue name is told.
const QUEUE_NAME_RULE: &str = "queue names are 1 to 64 of a-z, 0-9, `-`, `_` and `.`";

fn queue_error(error: corral_queue::QueueError) -> ServiceError {
    ServiceError::internal(anyhow::Error::new(error).context("the job queue failed"))
}

/// A queue's numbers as the API shows them.
fn stats_response(stats: QueueStats) -> QueueStatsResponse {
    QueueStatsResponse {
        queue: stats.queue,
        pending: stats.pending,
        scheduled: stats.scheduled,
        waiting: stats.waiting,
        running: stats.running,
        failed: stats.failed,
        completed: stats.completed,
        completed_last_minute: stats.completed_last_minute,
        oldest_pending_ms: stats.oldest_pending_ms,
        mean_wait_ms: stats.mean_wait_ms,
    }
}

fn job_response(job: JobRecord) -> JobResponse {
    JobResponse {
        sensitive: job.payload.is_none(),
        id: job.id,
        queue: job.queue,
        kind: job.kind,
        state: job.state.as_str().to_owned(),
        priority: job.priority,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        run_at: rfc3339(job.run_at),
        last_error: job.last_error,
        payload: job.payload,
        unique_key: job.unique_key,
        batch_id: job.batch_id,
        chain_id: job.chain_id,
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        finished_at: job.finished_at.map(rfc3339),
    }
}

/// `name` if it is a queue name, else a validation error naming `field`.
fn checked_queue(field: &str, name: &str) -> ServiceResult<()> {
    if is_queue_name(name) {
        Ok(())
    } else {
        Err(ServiceError::invalid_field(field, QUEUE_NAME_RULE))
    }
}

/// Every queue that holds a job, with its numbers.
pub async fn list_queues(service: &Service) -> ServiceResult<QueueList> {
    let stats = service.queue.stats().await.map_err(queue_error)?;
    Ok(QueueList {
        driver: service.queue.driver_name().to_owned(),
        queues: stats.into_iter().map(stats_response).collect(),
    })
}

/// Filters of a job listing; every field optional.
#[derive(Debug, Clone, Default)]
pub struct JobSearch {
    /// `pending`, `running`, `completed`, `failed`, `waiting` or `cancelled`.
    pub state: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
}

/// Jobs, newest first (sensitive payloads withheld).
pub async fn list_jobs(service: &Service, search: JobSearch) -> ServiceResult<JobPage> {
    let limit = page_limit(search.limit)?;
    let job_state = search
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ServiceError::invalid_field(
                    "state",
                    "must be pending, running, completed, failed, waiting or cancelled",
                )
            })
        })
        .transpose()?;
    if let Some(queue) = &search.queue {
        checked_queue("queue", queue)?;
    }
    // One more than a page tells whether there is a next page.
    let fetch = u32::try_from(limit + 1).unwrap_or(201);
    let mut jobs = service
        .queue
        .list(&JobFilter {
            queue: search.queue,
            state: job_state,
            before: search.cursor,
            limit: Some(fetch),
        })
        .await
        .map_err(queue_error)?;
    let next_cursor = page_cut(&mut jobs, limit, |job| job.id.clone());
    Ok(JobPage {
        items: jobs.into_iter().map(job_response).collect(),
        next_cursor,
    })
}

async fn job_record(service: &Service, id: &str) -> ServiceResult<JobRecord> {
    service
        .queue
        .job(id)
        .await
        .map_err(queue_error)?
        .ok_or_else(|| ServiceError::not_found("job"))
}

/// One job.
pub async fn job(service: &Service, id: &str) -> ServiceResult<JobResponse> {
    job_record(service, id).await.map(job_response)
}

/// Puts a failed job back in its queue with a fresh attempt budget; a job
/// in any other state is a conflict.
pub async fn retry_job(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
) -> ServiceResult<JobResponse> {
    let job = job_record(service, id).await?;
    if !service.queue.retry(id).await.map_err(queue_error)? {
        return Err(ServiceError::conflict(format!(
            "the job is {}, not failed",
            job.state.as_str()
        )));
    }
    audit_step(service, client, caller, "queue.job_retry", "job", id).await;
    job_record(service, id).await.map(job_response)
}

/// Retries every failed job of queue `name`.
pub async fn retry_queue(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    name: &str,
) -> ServiceResult<QueueActionResponse> {
    checked_queue("name", name)?;
    let count = service
        .queue
        .retry_all(Some(name))
        .await
        .map_err(queue_error)?;
    audit_step(service, client, caller, "queue.retry_all", "queue", name).await;
    Ok(QueueActionResponse {
        queue: name.to_owned(),
        count,
    })
}

/// Deletes every job of queue `name` that no worker holds (running jobs finish).
pub async fn clear_queue(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    name: &str,
) -> ServiceResult<QueueActionResponse> {
    checked_queue("name", name)?;
    let count = service.queue.clear(name).await.map_err(queue_error)?;
    audit_step(service, client, caller, "queue.clear", "queue", name).await;
    Ok(QueueActionResponse {
        queue: name.to_owned(),
        count,
    })
}

/// Audits an administrator's step on the queue (no org: the queue is the
/// platform's).
async fn audit_step(
    service: &Service,
    client: &ClientInfo,
    caller: &Principal,
    action: &str,
    resource_type: &str,
    id: &str,
) {
    audit(
        service,
        client,
        Some(&caller.user_id),
        None,
        action,
        resource_type,
        Some(id),
        "success",
    )
    .await;
}
