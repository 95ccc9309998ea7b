//! Submitting executions: one-shot runs to a verdict, waited for, queued,
//! or in batches; and reading them back (one, a batch, history pages).
//!
//! A submission is checked against the language and the caller's plan
//! (code, input and file sizes, CPU, wall-clock and memory limits, the
//! callback URL), then one unit of the daily executions quota is taken,
//! the record is written `queued` and audited, and the run happens here
//! ([`Submitted::Finished`], with `wait`) or through the job queue, higher
//! plans first ([`Submitted::Queued`]). The run itself is [`crate::executions`].

use corral_core::auth::Principal;
use corral_store::{ExecutionFilter, ExecutionRecord, User};
use corral_types::executions::{
    BatchRequest, BatchResponse, CreateExecutionRequest, ExecutionPage, ExecutionResponse,
    LanguageResponse, RunSnippetRequest,
};

use crate::audit::{ClientInfo, audit};
use crate::executions::{
    QUEUE, RUN_JOB, default_wall_ms, language, languages, priority, response, valid_file_name,
};
use crate::paging::{page_cut, page_limit};
use crate::quota::Daily;
use crate::{Service, ServiceError, ServiceResult};

/// Largest source.
const MAX_CODE: usize = 256 * 1024;
/// Largest standard input.
const MAX_STDIN: usize = 1024 * 1024;
/// Most extra files.
const MAX_FILES: usize = 16;
/// Most executions in a batch.
pub const MAX_BATCH: usize = 100;
/// Largest output limit, KiB.
const MAX_OUTPUT_KB: u64 = 1024;

/// What became of a submitted execution.
#[derive(Debug)]
pub enum Submitted {
    /// It ran (`wait`): its verdict.
    Finished(ExecutionResponse),
    /// It waits in the queue: poll it by id, or await its callback.
    Queued(ExecutionResponse),
}

/// The languages this host runs.
pub fn list_languages() -> Vec<LanguageResponse> {
    languages().iter().map(|l| l.describe()).collect()
}

/// Checks a request against the language and `user`'s plan and makes it a
/// record (`queued`). Field names start with `field` (a batch's
/// `executions[i].`).
async fn record_of(
    service: &Service,
    caller: &Principal,
    user: &User,
    request: &CreateExecutionRequest,
    batch_id: Option<&str>,
    field: &str,
) -> ServiceResult<ExecutionRecord> {
    let at = |name: &str| format!("{field}{name}");
    let Some(lang) = language(&request.language) else {
        let known: Vec<&str> = languages().iter().map(|l| l.name.as_str()).collect();
        return Err(ServiceError::invalid_field(
            &at("language"),
            format!("unknown language; this server runs: {}", known.join(", ")),
        ));
    };
    if request.code.is_empty() || request.code.len() > MAX_CODE {
        return Err(ServiceError::invalid_field(
            &at("code"),
            "must be 1 byte to 256 KiB",
        ));
    }
    let stdin = request.stdin.clone().unwrap_or_default();
    if stdin.len() > MAX_STDIN {
        return Err(ServiceError::invalid_field(&at("stdin"), "at most 1 MiB"));
    }
    if request.files.len() > MAX_FILES {
        return Err(ServiceError::invalid_field(
            &at("files"),
            "at most 16 files",
        ));
    }
    for file in &request.files {
        if !valid_file_name(&file.name) || file.name == lang.source_file {
            return Err(ServiceError::invalid_field(
                &at("files"),
                format!(
                    "`{}`: a plain file name of [A-Za-z0-9._-] (no directories), not the source file",
                    file.name
                ),
            ));
        }
    }
    let plan = service.plans.get(&user.plan_id);
    let max_time_ms = plan.map_or(30_000, |p| {
        u64::try_from(p.max_time_secs).unwrap_or(30) * 1000
    });
    let max_memory = plan.map_or(128, |p| u64::try_from(p.max_memory_mb).unwrap_or(128));
    let time_ms = request
        .limits
        .time_ms
        .unwrap_or(lang.limits.time_ms.min(max_time_ms));
    let memory_mb = request
        .limits
        .memory_mb
        .unwrap_or(lang.limits.memory_mb.min(max_memory));
    let output_kb = request.limits.output_kb.unwrap_or(lang.limits.output_kb);
    if !(1..=max_time_ms).contains(&time_ms) {
        return Err(ServiceError::invalid_field(
            &at("limits.time_ms"),
            format!("must be 1–{max_time_ms} (your plan's limit)"),
        ));
    }
    let max_wall_ms = max_time_ms.saturating_mul(4);
    let wall_ms = request
        .limits
        .wall_time_ms
        .unwrap_or_else(|| default_wall_ms(time_ms).min(max_wall_ms));
    if !(1..=max_wall_ms).contains(&wall_ms) {
        return Err(ServiceError::invalid_field(
            &at("limits.wall_time_ms"),
            format!("must be 1–{max_wall_ms} (4 × your plan's longest execution)"),
        ));
    }
    if !(16..=max_memory).contains(&memory_mb) {
        return Err(ServiceError::invalid_field(
            &at("limits.memory_mb"),
            format!("must be 16–{max_memory} (your plan's limit)"),
        ));
    }
    if !(1..=MAX_OUTPUT_KB).contains(&output_kb) {
        return Err(ServiceError::invalid_field(
            &at("limits.output_kb"),
            format!("must be 1–{MAX_OUTPUT_KB}"),
        ));
    }
    if let Some(url) = &request.callback_url {
        if service.config.executions.callback_secret.is_empty() {
            return Err(ServiceError::invalid_field(
                &at("callback_url"),
                "callbacks are off on this server (executions.callback_secret is not set)",
            ));
        }
        crate::callbacks::resolve(url, service.config.executions.allow_private_callbacks)
            .await
            .map_err(|why| ServiceError::invalid_field(&at("callback_url"), why))?;
    }
    let files = serde_json::to_string(&request.files).map_err(ServiceError::internal)?;
    let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Ok(ExecutionRecord {
        id: corral_core::id::new_id(),
        org_id: caller.org_id.clone(),
        user_id: caller.user_id.clone(),
        batch_id: batch_id.map(str::to_owned),
        language: lang.name.clone(),
        status: "queued".to_owned(),
        code: request.code.clone(),
        stdin,
        files,
        expected_output: request.expected_output.clone(),
        time_limit_ms: big(time_ms),
        wall_limit_ms: Some(big(wall_ms)),
        memory_limit_mb: big(memory_mb),
        output_limit_kb: big(output_kb),
        callback_url: request.callback_url.clone(),
        exit_code: None,
        signal: None,
        stdout: String::new(),
        stderr: String::new(),
        compile_output: String::new(),
        time_ms: None,
        wall_ms: None,
        memory_kb: None,
        error: None,
        created_at: service.clock.now_ms(),
        started_at: None,
        finished_at: None,
    })
}

/// Queues a recorded execution at `user`'s plan's priority (once: a second
/// job for the same execution is not made).
async fn enqueue(service: &Service, user: &User, id: &str) -> ServiceResult<()> {
    let job = corral_queue::NewJob::new(RUN_JOB, serde_json::json!({ "id": id }))
        .queue(QUEUE)
        .priority(priority(user))
        .unique(format!("execution:{id}"));
    service
        .queue
        .enqueue(job)
        .await
        .map_err(|e| ServiceError::internal(anyhow::anyhow!("queueing the execution: {e}")))?;
    Ok(())
}

/// Records, counts and runs (with `wait`) or queues one execution.
pub async fn submit(
    service: &Service,
    caller: &Principal,
    user: &User,
    client: &ClientInfo,
    input: &CreateExecutionRequest,
) -> ServiceResult<Submitted> {
    let record = record_of(service, caller, user, input, None, "").await?;
    crate::quota::take(service, user, Daily::Executions, service.clock.now_ms()).await?;
    service
        .store
        .insert_executions(std::slice::from_ref(&record))
        .await?;
    audit(
        service,
        client,
        Some(&caller.user_id),
        Some(&caller.org_id),
        "execution.create",
        "execution",
        Some(&record.id),
        "success",
    )
    .await;
    if input.wait {
        crate::executions::run_recorded(service, &record.id)
            .await
            .map_err(|e| ServiceError::internal(anyhow::anyhow!(e)))?;
        let done = service
            .store
            .execution(Some(&caller.org_id), &record.id)
            .await?
            .ok_or_else(|| ServiceError::not_found("execution"))?;
        return Ok(Submitted::Finished(response(&done)));
    }
    enqueue(service, user, &record.id).await?;
    Ok(Submitted::Queued(response(&record)))
}

/// Runs a library snippet the caller may see (their own or a public one)
/// as an execution.
pub async fn run_snippet(
    service: &Service,
    caller: &Principal,
    user: &User,
    client: &ClientInfo,
    snippet_id: &str,
    input: RunSnippetRequest,
) -> ServiceResult<Submitted> {
    let snippet = crate::library::snippet_for(service, caller, snippet_id).await?;
    let request = CreateExecutionRequest {
        language: snippet.language,
        code: snippet.code,
        stdin: input.stdin,
        limits: input.limits,
        wait: input.wait,
        ..CreateExecutionRequest::default()
    };
    submit(service, caller, user, client, &request).await
}

/// Queues several executions as one batch; each counts against the daily
/// quota, and none is queued unless all are valid and paid for.
pub async fn submit_batch(
    service: &Service,
    caller: &Principal,
    user: &User,
    client: &ClientInfo,
    input: &BatchRequest,
) -> ServiceResult<BatchResponse> {
    if input.executions.is_empty() || input.executions.len() > MAX_BATCH {
        return Err(ServiceError::invalid_field(
            "executions",
            format!("give 1–{MAX_BATCH} executions"),
        ));
    }
    let batch_id = corral_core::id::new_id();
    let mut records = Vec::with_capacity(input.executions.len());
    for (i, request) in input.executions.iter().enumerate() {
        if request.wait {
            return Err(ServiceError::invalid_field(
                &format!("executions[{i}].wait"),
                "a batch runs in the background: wait must be false",
            ));
        }
        let field = format!("executions[{i}].");
        records.push(record_of(service, caller, user, request, Some(&batch_id), &field).await?);
    }
    let now = service.clock.now_ms();
    for _ in &records {
        crate::quota::take(service, user, Daily::Executions, now).await?;
    }
    service.store.insert_executions(&records).await?;
    for record in &records {
        enqueue(service, user, &record.id).await?;
    }
    audit(
        service,
        client,
        Some(&caller.user_id),
        Some(&caller.org_id),
        "execution.batch",
        "execution_batch",
        Some(&batch_id),
        "success",
    )
    .await;
    Ok(BatchResponse {
        id: batch_id,
        finished: 0,
        total: records.len(),
        executions: records.iter().map(response).collect(),
    })
}

/// A batch of the caller's org, its executions in the order they were given.
pub async fn batch(
    service: &Service,
    caller: &Principal,
    id: &str,
) -> ServiceResult<BatchResponse> {
    let mut records = service
        .store
        .executions(&ExecutionFilter {
            org_id: Some(caller.org_id.clone()),
            batch_id: Some(id.to_owned()),
            limit: i64::try_from(MAX_BATCH).unwrap_or(100),
            ..ExecutionFilter::default()
        })
        .await?;
    if records.is_empty() {
        return Err(ServiceError::not_found("batch"));
    }
    // Ids are time-ordered: ascending is the order they were made in.
    records.reverse();
    let finished = records
        .iter()
        .filter(|r| !matches!(r.status.as_str(), "queued" | "running"))
        .count();
    Ok(BatchResponse {
        id: id.to_owned(),
        finished,
        total: records.len(),
        executions: records.iter().map(response).collect(),
    })
}

/// One execution of the caller's org.
pub async fn show(
    service: &Service,
    caller: &Principal,
    id: &str,
) -> ServiceResult<ExecutionResponse> {
    service
        .store
        .execution(Some(&caller.org_id), id)
        .await?
        .map(|r| response(&r))
        .ok_or_else(|| ServiceError::not_found("execution"))
}

/// Filters of execution history; every field optional.
#[derive(Debug, Clone, Default)]
pub struct HistorySearch {
    /// Only in this status.
    pub status: Option<String>,
    /// Only this language.
    pub language: Option<String>,
    /// Only this user's.
    pub user: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (1–200, default 50).
    pub limit: Option<i64>,
}

async fn page(
    service: &Service,
    org_id: Option<String>,
    search: HistorySearch,
) -> ServiceResult<ExecutionPage> {
    let limit = page_limit(search.limit)?;
    let mut rows = service
        .store
        .executions(&ExecutionFilter {
            org_id,
            user_id: search.user,
            status: search.status,
            language: search.language,
            batch_id: None,
            before_id: search.cursor,
            limit: limit + 1,
        })
        .await?;
    let next_cursor = page_cut(&mut rows, limit, |r| r.id.clone());
    Ok(ExecutionPage {
        items: rows.iter().map(response).collect(),
        next_cursor,
    })
}

/// The caller's org's executions, newest first.
pub async fn history(
    service: &Service,
    caller: &Principal,
    search: HistorySearch,
) -> ServiceResult<ExecutionPage> {
    page(service, Some(caller.org_id.clone()), search).await
}

/// Every org's executions, newest first (platform administrators; the
/// surface checks the right).
pub async fn admin_history(
    service: &Service,
    search: HistorySearch,
) -> ServiceResult<ExecutionPage> {
    page(service, None, search).await
}
