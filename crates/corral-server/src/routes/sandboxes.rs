//! `/api/v1/sandboxes`: create, list, show, delete, exec.

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_core::auth::Principal;
use corral_core::clock::rfc3339;
use corral_runtime::Limits;
use corral_store::{ID_SLOTS, NewSandbox, SandboxRecord};
use corral_types::ErrorCode;
use corral_types::agent::{ExecRequest, ExecResult};
use corral_types::sandbox::{CreateSandboxRequest, ExecRequestBody, SandboxPage, SandboxResponse};

use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::routes::admin::{page_cut, page_limit};
use crate::routes::auth::audit;
use crate::{ApiError, AppState};

/// Output kept per stream of one exec.
const EXEC_OUTPUT_LIMIT: usize = 1 << 20;
/// Processes and threads per sandbox.
const SANDBOX_PIDS: i64 = 256;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sandboxes", post(create).get(list))
        .route("/api/v1/sandboxes/{id}", get(show).delete(remove))
        .route("/api/v1/sandboxes/{id}/exec", post(exec))
}

fn response(r: SandboxRecord) -> SandboxResponse {
    SandboxResponse {
        id: r.id,
        name: r.name,
        image: r.image,
        state: r.state,
        error: r.error,
        memory_mb: r.memory_mb,
        cpu_millicores: r.cpu_millicores,
        pids: r.pids,
        disk_mb: r.disk_mb,
        created_by: r.created_by,
        labels: serde_json::from_str(&r.labels).unwrap_or_default(),
        created_at: rfc3339(r.created_at),
    }
}

/// `value`, or `default`, within `min..=max` (the plan's cap), else 422 naming `field`.
fn within(
    field: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    let value = value.unwrap_or(default.min(max));
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid_field(
            field,
            format!("must be between {min} and {max} on your plan"),
        ))
    }
}

/// Creates and starts a sandbox in the caller's org.
#[utoipa::path(
    post, path = "/api/v1/sandboxes", tag = "sandboxes", security(("bearer" = [])),
    request_body = CreateSandboxRequest,
    responses(
        (status = 201, description = "Running", body = SandboxResponse),
        (status = 422, description = "A value is refused", body = corral_types::Problem),
        (status = 429, description = "The plan's concurrent sandboxes are all in use", body = corral_types::Problem),
        (status = 503, description = "The sandbox could not start", body = corral_types::Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Extension(client): Extension<ClientInfo>,
    ApiJson(body): ApiJson<CreateSandboxRequest>,
) -> Result<(StatusCode, Json<SandboxResponse>), ApiError> {
    let image = body.image.unwrap_or_else(|| "host".to_owned());
    if image != "host" {
        return Err(ApiError::invalid_field(
            "image",
            "only the `host` image is available so far",
        ));
    }
    if let Some(name) = &body.name
        && !(1..=64).contains(&name.chars().count())
    {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 64 characters",
        ));
    }
    check_labels(&body.labels)?;
    for key in body.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(ApiError::invalid_field(
                "env",
                format!("`{key}` is not a variable name"),
            ));
        }
    }
    let plan = state.plans.get(&user.plan_id);
    let max_memory = plan.map_or(128, |p| p.max_memory_mb);
    let max_cpu = plan.and_then(|p| p.max_cpus).map_or(64_000, |c| c * 1000);
    let max_disk = plan.and_then(|p| p.max_disk_mb).map_or(1 << 20, |d| d);
    let resources = &body.resources;
    let memory_mb = within(
        "resources.memory_mb",
        resources.memory_mb,
        state.config.sandbox.default_memory_mb,
        16,
        max_memory,
    )?;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "validated to a small range below"
    )]
    let cpu = resources.cpu.map(|c| (c * 1000.0).round() as i64);
    let cpu_millicores = within("resources.cpu", cpu, 1000, 100, max_cpu)?;
    let disk_mb = within("resources.disk_mb", resources.disk_mb, 256, 1, max_disk)?;
    let pids = within("resources.pids", resources.pids, SANDBOX_PIDS, 16, 1024)?;
    let json = |value: &std::collections::BTreeMap<String, String>| {
        serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
    };
    let now = state.clock.now_ms();
    let record = state
        .store
        .create_sandbox(
            now,
            NewSandbox {
                org_id: principal.org_id.clone(),
                created_by: principal.user_id.clone(),
                max_live: plan.and_then(|p| p.max_sandboxes),
                name: body.name.unwrap_or_default(),
                image,
                memory_mb,
                cpu_millicores,
                pids,
                disk_mb,
                env: json(&body.env),
                labels: json(&body.labels),
            },
            |_| rand_slot(),
        )
        .await?;
    let limits = Limits {
        memory_mb: u64::try_from(memory_mb).unwrap_or(16),
        pids,
        cpu_millicores: u64::try_from(cpu_millicores).unwrap_or(1000),
        tmp_mb: u64::try_from(disk_mb).unwrap_or(1),
        tmp_inodes: u64::try_from(disk_mb * 64).unwrap_or(4096).max(1024),
        open_files: 1024,
        file_size_mb: u64::try_from(disk_mb).unwrap_or(1),
    };
    let (manager, id, slot) = (
        state.sandboxes.clone(),
        record.id.clone(),
        record.id_slot.unwrap_or(0),
    );
    let started = tokio::task::spawn_blocking(move || manager.start(&id, slot, limits))
        .await
        .map_err(ApiError::internal)?;
    let outcome = match &started {
        Ok(()) => {
            state
                .store
                .sandbox_running(state.clock.now_ms(), &record.id)
                .await?;
            "success"
        }
        Err(message) => {
            tracing::warn!(sandbox = %record.id, %message, "a sandbox failed to start");
            state
                .store
                .sandbox_failed(state.clock.now_ms(), &record.id, message)
                .await?;
            "failure"
        }
    };
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "sandbox.create",
        "sandbox",
        Some(&record.id),
        outcome,
    )
    .await;
    if let Err(message) = started {
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("the sandbox could not start: {message}"),
        ));
    }
    let record = state
        .store
        .sandbox(&principal.org_id, &record.id)
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox"))?;
    Ok((StatusCode::CREATED, Json(response(record))))
}

/// At most 16 labels, keys and values 1–64 and 0–64 characters.
fn check_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > 16 {
        return Err(ApiError::invalid_field("labels", "at most 16 labels"));
    }
    for (key, value) in labels {
        if !(1..=64).contains(&key.chars().count()) || value.chars().count() > 64 {
            return Err(ApiError::invalid_field(
                "labels",
                "keys are 1 to 64 characters, values at most 64",
            ));
        }
    }
    Ok(())
}

fn rand_slot() -> i64 {
    use rand::Rng;
    rand::rng().random_range(0..ID_SLOTS)
}

/// Paging of `GET /api/v1/sandboxes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SandboxQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
    /// Only sandboxes in this state (`creating`, `running`, `error`).
    state: Option<String>,
}

/// The org's sandboxes, oldest first.
#[utoipa::path(
    get, path = "/api/v1/sandboxes", tag = "sandboxes", security(("bearer" = [])),
    params(SandboxQuery),
    responses((status = 200, description = "A page of sandboxes", body = SandboxPage))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<SandboxQuery>,
) -> Result<Json<SandboxPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    if let Some(wanted) = &query.state
        && !["creating", "running", "error"].contains(&wanted.as_str())
    {
        return Err(ApiError::invalid_field(
            "state",
            "must be `creating`, `running` or `error`",
        ));
    }
    let mut items = state
        .store
        .sandboxes(
            &principal.org_id,
            query.state.as_deref(),
            query.cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let next_cursor = page_cut(&mut items, limit, |s| s.id.clone());
    Ok(Json(SandboxPage {
        items: items.into_iter().map(response).collect(),
        next_cursor,
    }))
}

/// The sandbox's agent could not be reached or broke the protocol.
pub(crate) fn unreachable_sandbox(error: &corral_runtime::RuntimeError) -> ApiError {
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!("the sandbox did not answer: {error}"),
    )
}

/// A running sandbox of the caller's org, or 404 / 409.
pub(crate) async fn running(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<SandboxRecord, ApiError> {
    let record = find(state, principal, id).await?;
    if record.state != "running" {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("the sandbox is {}, not running", record.state),
        ));
    }
    Ok(record)
}

async fn find(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<SandboxRecord, ApiError> {
    state
        .store
        .sandbox(&principal.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox"))
}

/// One sandbox.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The sandbox", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    find(&state, &principal, &id).await.map(response).map(Json)
}

/// Stops and deletes a sandbox and everything in it.
#[utoipa::path(
    delete, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<ClientInfo>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let record = find(&state, &principal, &id).await?;
    let sandbox = state.sandboxes.attach(&record.id);
    tokio::task::spawn_blocking(move || sandbox.destroy())
        .await
        .map_err(ApiError::internal)?;
    state
        .store
        .delete_sandbox(&principal.org_id, &record.id)
        .await?;
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "sandbox.delete",
        "sandbox",
        Some(&record.id),
        "success",
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a command in a sandbox and returns how it ended.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/exec", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = ExecRequestBody,
    responses(
        (status = 200, description = "Finished (any exit code)", body = ExecResult),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "The sandbox is not running", body = corral_types::Problem),
        (status = 422, description = "Neither or both of command and argv", body = corral_types::Problem),
    )
)]
pub async fn exec(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Extension(client): Extension<ClientInfo>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecRequestBody>,
) -> Result<Json<ExecResult>, ApiError> {
    let argv = match (body.command, body.argv) {
        (Some(command), None) => vec!["/bin/sh".to_owned(), "-c".to_owned(), command],
        (None, Some(argv)) if !argv.is_empty() => argv,
        _ => {
            return Err(ApiError::invalid_field(
                "command",
                "give either `command` (a shell command line) or a non-empty `argv`",
            ));
        }
    };
    let max_ms = state.plans.get(&user.plan_id).map_or(30_000, |p| {
        u64::try_from(p.max_time_secs).unwrap_or(30) * 1000
    });
    let timeout_ms = body.timeout_ms.unwrap_or(30_000).min(max_ms);
    if timeout_ms == 0 {
        return Err(ApiError::invalid_field(
            "timeout_ms",
            "must be greater than 0",
        ));
    }
    let record = running(&state, &principal, &id).await?;
    let mut env = vec![
        ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ("HOME".to_owned(), "/tmp".to_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    let base: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&record.env).unwrap_or_default();
    env.extend(base);
    env.extend(body.env);
    let request = ExecRequest {
        argv,
        env,
        cwd: body.cwd.unwrap_or_else(|| "/tmp".to_owned()),
        stdin: body.stdin.unwrap_or_default(),
        timeout_ms,
        output_limit: EXEC_OUTPUT_LIMIT,
    };
    let sandbox = state.sandboxes.attach(&record.id);
    let result = tokio::task::spawn_blocking(move || sandbox.exec(request))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            corral_runtime::RuntimeError::Refused { message, .. } => {
                ApiError::invalid_field("argv", message)
            }
            other => unreachable_sandbox(&other),
        })?;
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "sandbox.exec",
        "sandbox",
        Some(&record.id),
        if result.timed_out {
            "timeout"
        } else {
            "success"
        },
    )
    .await;
    Ok(Json(result))
}
