//! `/api/v1/sandboxes`: create, list, show, change, delete; start, stop,
//! pause, resume; exec.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_core::auth::Principal;
use corral_core::clock::rfc3339;
use corral_store::{NewSandbox, SandboxChanges, SandboxFilter, SandboxRecord};
use corral_types::ErrorCode;
use corral_types::agent::{ExecRequest, ExecResult};
use corral_types::sandbox::{
    CreateSandboxRequest, ExecRequestBody, SandboxPage, SandboxResponse, UpdateSandboxRequest,
};

use crate::auth::Caller;
use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::routes::admin::{page_cut, page_limit};
use crate::routes::auth::audit;
use crate::sandboxes::HOST_IMAGE;
use crate::{ApiError, AppState};
use corral_service::sandbox::{
    SANDBOX_DISK_MB, SANDBOX_PIDS, audit_step, command_argv, find, limits_of, program_env,
    rand_slot, recover_sandbox, running, stop_sandbox,
};

/// Output kept per stream of an exec that names no `max_output_bytes`.
const EXEC_OUTPUT_LIMIT: u64 = 1 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sandboxes", post(create).get(list))
        .route(
            "/api/v1/sandboxes/{id}",
            get(show).patch(update).delete(remove),
        )
        .route("/api/v1/sandboxes/{id}/start", post(start))
        .route("/api/v1/sandboxes/{id}/stop", post(stop))
        .route("/api/v1/sandboxes/{id}/pause", post(pause))
        .route("/api/v1/sandboxes/{id}/resume", post(resume))
        .route("/api/v1/sandboxes/{id}/exec", post(exec))
        .route(
            "/api/v1/sandboxes/{id}/exec/{exec_id}/stdin",
            post(exec_stdin),
        )
        .route("/api/v1/sandboxes/{id}/stats", get(stats))
        .route("/api/v1/admin/sandboxes", get(admin_list))
}

fn response(r: SandboxRecord) -> SandboxResponse {
    SandboxResponse {
        org_id: r.org_id,
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
        auto_stop_minutes: r.auto_stop_minutes,
        auto_delete_minutes: r.auto_delete_minutes,
        last_active_at: rfc3339(r.last_active_at),
        stopped_at: r.stopped_at.map(rfc3339),
        terminals: None,
        processes: None,
    }
}

/// Idle minutes before auto-stop: up to a week.
const MAX_AUTO_STOP_MINUTES: i64 = 7 * 24 * 60;
/// Stopped minutes before auto-delete: up to a year.
const MAX_AUTO_DELETE_MINUTES: i64 = 365 * 24 * 60;

/// An optional minutes setting within `1..=max`, else 422 naming `field`.
fn minutes(field: &str, value: Option<i64>, max: i64) -> Result<Option<i64>, ApiError> {
    match value {
        Some(m) if !(1..=max).contains(&m) => Err(ApiError::invalid_field(
            field,
            format!("must be between 1 and {max} minutes"),
        )),
        other => Ok(other),
    }
}

fn check_name(name: Option<&String>) -> Result<(), ApiError> {
    match name {
        Some(name) if !(1..=64).contains(&name.chars().count()) => Err(ApiError::invalid_field(
            "name",
            "must be 1 to 64 characters",
        )),
        _ => Ok(()),
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
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateSandboxRequest>,
) -> Result<(StatusCode, Json<SandboxResponse>), ApiError> {
    let (image, image_env) = resolve_image(&state, body.image.as_deref()).await?;
    check_name(body.name.as_ref())?;
    check_labels(&body.labels)?;
    let auto_stop_minutes = minutes(
        "auto_stop_minutes",
        body.auto_stop_minutes,
        MAX_AUTO_STOP_MINUTES,
    )?;
    let auto_delete_minutes = minutes(
        "auto_delete_minutes",
        body.auto_delete_minutes,
        MAX_AUTO_DELETE_MINUTES,
    )?;
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
    let disk_mb = within(
        "resources.disk_mb",
        resources.disk_mb,
        SANDBOX_DISK_MB,
        1,
        max_disk,
    )?;
    let pids = within("resources.pids", resources.pids, SANDBOX_PIDS, 16, 1024)?;
    let json = |value: &std::collections::BTreeMap<String, String>| {
        serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
    };
    // The image's environment (its PATH and the like) under the caller's.
    let mut env = image_env;
    env.extend(body.env);
    let now = state.clock.now_ms();
    let key = crate::pool::PoolKey {
        image: image.clone(),
        memory_mb,
        cpu_millicores,
        pids,
        disk_mb,
    };
    // A warm sandbox of exactly this class, if the pool has one.
    let warm = state.sandboxes.pool.take(&key);
    let new = NewSandbox {
        id: warm.as_ref().map(|w| w.id.clone()),
        running: warm.is_some(),
        org_id: principal.org_id.clone(),
        created_by: principal.user_id.clone(),
        max_live: plan.and_then(|p| p.max_sandboxes),
        name: body.name.unwrap_or_default(),
        image,
        memory_mb,
        cpu_millicores,
        pids,
        disk_mb,
        env: json(&env),
        labels: json(&body.labels),
        auto_stop_minutes,
        auto_delete_minutes,
    };
    if let Some(warm) = warm {
        let slot = warm.slot;
        let claimed = state.store.create_sandbox(now, new.clone(), |_| slot).await;
        state.sandboxes.pool.settle(&warm.id);
        match claimed {
            // Recorded `running` at once: it already is.
            Ok(record) => {
                audit_step(
                    &state,
                    &client,
                    &principal,
                    "sandbox.create",
                    &record.id,
                    "success",
                )
                .await;
                return Ok((StatusCode::CREATED, Json(response(record))));
            }
            Err(error) => {
                // Not claimed (over quota, or the slot was taken meanwhile):
                // it goes back, or away.
                if matches!(error, corral_store::StoreError::QuotaExceeded(_)) {
                    state.sandboxes.pool.put_back(key, warm);
                    return Err(error.into());
                }
                state.sandboxes.destroy_blocking(&warm.id).await;
            }
        }
    }
    let new = NewSandbox {
        id: None,
        running: false,
        ..new
    };
    // From the record on, on a task of its own: a client that goes away
    // (dropping this handler) must not leave the sandbox `creating` with no
    // one to finish.
    let finish = {
        let state = state.clone();
        tokio::spawn(async move {
            let record = state
                .store
                .create_sandbox(now, new, |_| rand_slot())
                .await?;
            let limits = limits_of(&record);
            let (manager, id, slot, image, record_id) = (
                state.sandboxes.clone(),
                record.id.clone(),
                record.id_slot.unwrap_or(0),
                record.image.clone(),
                record.id.clone(),
            );
            let started =
                tokio::task::spawn_blocking(move || manager.start(&id, slot, limits, &image))
                    .await
                    .map_err(ApiError::internal)?;
            match &started {
                Ok(()) => {
                    state
                        .store
                        .sandbox_running(state.clock.now_ms(), &record_id)
                        .await?;
                }
                Err(message) => {
                    tracing::warn!(sandbox = %record_id, %message, "a sandbox failed to start");
                    state
                        .store
                        .sandbox_failed(state.clock.now_ms(), &record_id, message)
                        .await?;
                }
            }
            Ok::<_, ApiError>((record, started))
        })
    };
    let (record, started) = finish.await.map_err(ApiError::internal)??;
    let outcome = if started.is_ok() {
        "success"
    } else {
        "failure"
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

/// The image a create names (`host` when none): its normalised reference
/// and environment. One this host lacks is pulled when configured to.
async fn resolve_image(
    state: &AppState,
    wanted: Option<&str>,
) -> Result<(String, std::collections::BTreeMap<String, String>), ApiError> {
    let wanted = wanted.unwrap_or(HOST_IMAGE);
    if wanted == HOST_IMAGE {
        return Ok((HOST_IMAGE.to_owned(), std::collections::BTreeMap::new()));
    }
    let reference = corral_runtime::image::normalize(wanted)
        .map_err(|e| ApiError::invalid_field("image", e.to_string()))?;
    let store = state
        .sandboxes
        .images()
        .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    let lookup = store.clone();
    let found = {
        let reference = reference.clone();
        tokio::task::spawn_blocking(move || lookup.root(&reference))
            .await
            .map_err(ApiError::internal)?
    };
    let root = match found {
        Ok(root) => root,
        Err(corral_runtime::image::ImageError::NotFound(_))
            if state.config.sandbox.pull_missing_images =>
        {
            let pulled = store
                .pull(
                    &reference,
                    &corral_runtime::image::RegistryAuth::Anonymous,
                    &state.config.sandbox.pull_policy(),
                    &mut |_| {},
                )
                .await;
            if let Err(error) = pulled {
                return Err(pull_refused(wanted, &error));
            }
            store
                .root(&reference)
                .map_err(|e| ApiError::internal(anyhow::anyhow!(e.to_string())))?
        }
        Err(corral_runtime::image::ImageError::NotFound(_)) => {
            return Err(ApiError::invalid_field(
                "image",
                format!(
                    "`{wanted}` is not on this host (add it with `corral image pull` or `corral image import`)"
                ),
            ));
        }
        Err(other) => return Err(ApiError::internal(anyhow::anyhow!(other.to_string()))),
    };
    let env = root
        .env
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok((root.reference, env))
}

/// A failed pull as the caller sees it. What the registry's address
/// answered (a closed port, another service, silence) stays in the log:
/// told to the caller, it would make pulls a port scanner.
fn pull_refused(wanted: &str, error: &corral_runtime::image::ImageError) -> ApiError {
    use corral_runtime::image::ImageError;
    tracing::info!(%error, image = wanted, "an image pull failed");
    let why = match error {
        ImageError::Refused { .. }
        | ImageError::PullLimit { .. }
        | ImageError::LimitExceeded { .. }
        | ImageError::InvalidReference { .. } => error.to_string(),
        _ => "its registry did not provide it".to_owned(),
    };
    ApiError::invalid_field(
        "image",
        format!("`{wanted}` is not on this host and could not be pulled: {why}"),
    )
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

/// Paging of `GET /api/v1/sandboxes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SandboxQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
    /// Only sandboxes in this state.
    state: Option<String>,
    /// Only sandboxes with this label, as `key=value`.
    label: Option<String>,
}

/// Every state a sandbox can be in.
const STATES: &[&str] = &[
    "creating", "starting", "running", "paused", "stopped", "error",
];

/// The org's sandboxes, oldest first.
#[utoipa::path(
    get, path = "/api/v1/sandboxes", tag = "sandboxes", security(("bearer" = [])),
    params(SandboxQuery),
    responses((status = 200, description = "A page of sandboxes", body = SandboxPage))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
    Query(query): Query<SandboxQuery>,
) -> Result<Json<SandboxPage>, ApiError> {
    let filter = SandboxFilter {
        org_id: Some(&principal.org_id),
        ..filter_of(query.state.as_deref(), query.label.as_deref())?
    };
    sandbox_page(&state, &filter, query.cursor.as_deref(), query.limit).await
}

/// A state and a `key=value` label from a query, checked.
fn filter_of<'a>(
    wanted: Option<&'a str>,
    label: Option<&'a str>,
) -> Result<SandboxFilter<'a>, ApiError> {
    if let Some(wanted) = wanted
        && !STATES.contains(&wanted)
    {
        return Err(ApiError::invalid_field(
            "state",
            format!("must be one of {}", STATES.join(", ")),
        ));
    }
    let label = match label {
        Some(pair) => Some(
            pair.split_once('=')
                .filter(|(key, _)| !key.is_empty())
                .ok_or_else(|| ApiError::invalid_field("label", "must be `key=value`"))?,
        ),
        None => None,
    };
    Ok(SandboxFilter {
        state: wanted,
        label,
        ..SandboxFilter::default()
    })
}

/// One page of the sandboxes `filter` matches.
async fn sandbox_page(
    state: &AppState,
    filter: &SandboxFilter<'_>,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> Result<Json<SandboxPage>, ApiError> {
    let limit = page_limit(limit)?;
    let mut items = state
        .store
        .sandboxes_matching(filter, cursor, limit + 1)
        .await?;
    let next_cursor = page_cut(&mut items, limit, |s| s.id.clone());
    Ok(Json(SandboxPage {
        items: items.into_iter().map(response).collect(),
        next_cursor,
    }))
}

/// Paging and filters of `GET /api/v1/admin/sandboxes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AdminSandboxQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
    /// Only sandboxes in this state.
    state: Option<String>,
    /// Only sandboxes with this label, as `key=value`.
    label: Option<String>,
    /// Only this org's sandboxes.
    org_id: Option<String>,
    /// Only sandboxes on this image (as `corral image ls` names it).
    image: Option<String>,
}

/// Every org's sandboxes, oldest first (platform administrators only).
#[utoipa::path(
    get, path = "/api/v1/admin/sandboxes", tag = "admin", security(("bearer" = [])),
    params(AdminSandboxQuery),
    responses(
        (status = 200, description = "A page of sandboxes", body = SandboxPage),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
        (status = 422, description = "Invalid filter", body = corral_types::Problem),
    )
)]
pub async fn admin_list(
    State(state): State<AppState>,
    Query(query): Query<AdminSandboxQuery>,
) -> Result<Json<SandboxPage>, ApiError> {
    let image = query
        .image
        .as_deref()
        .map(|wanted| match wanted {
            HOST_IMAGE => Ok(HOST_IMAGE.to_owned()),
            other => corral_runtime::image::normalize(other)
                .map_err(|e| ApiError::invalid_field("image", e.to_string())),
        })
        .transpose()?;
    let filter = SandboxFilter {
        org_id: query.org_id.as_deref(),
        image: image.as_deref(),
        ..filter_of(query.state.as_deref(), query.label.as_deref())?
    };
    sandbox_page(&state, &filter, query.cursor.as_deref(), query.limit).await
}

/// The sandbox's agent could not be reached or broke the protocol.
pub(crate) fn unreachable_sandbox(error: &corral_runtime::RuntimeError) -> ApiError {
    corral_service::sandbox::unreachable_sandbox(error).into()
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
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    let record = find(&state, &principal, &id).await?;
    let running = record.state == "running";
    let sandbox = state.sandboxes.attach(&record.id);
    let mut detail = response(record);
    if running {
        // What runs inside, from the agent; a sandbox that does not answer
        // still has its record shown.
        let inside = tokio::task::spawn_blocking(move || {
            Ok::<_, corral_runtime::RuntimeError>((sandbox.terminals()?, sandbox.processes()?))
        })
        .await
        .map_err(ApiError::internal)?;
        match inside {
            Ok((terminals, processes)) => {
                detail.terminals = Some(terminals);
                detail.processes = Some(processes);
            }
            Err(error) => tracing::warn!(%error, id = %detail.id, "asking the agent what runs"),
        }
    }
    Ok(Json(detail))
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
    principal: Caller,
    client: ClientInfo,
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

/// Runs a command in a sandbox and returns how it ended. With
/// `Accept: text/event-stream` the answer is a stream of server-sent events
/// instead: with `stream_stdin`, first `started` (`{"exec_id"}`); then
/// `stdout` and `stderr` (`{"data": "…"}`, as the program writes), then
/// one `exit` (the result, with empty stdout and stderr) or `error`
/// (`{"code", "detail"}`). Output past `max_output_bytes` per stream is
/// dropped and the result says `truncated: true`.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/exec", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = ExecRequestBody,
    responses(
        (status = 200, description = "Finished (any exit code), or the event stream", content((ExecResult = "application/json"), (String = "text/event-stream"))),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "The sandbox is not running", body = corral_types::Problem),
        (status = 422, description = "Neither or both of command and argv; max_output_bytes out of range; stream_stdin without an event stream or with stdin", body = corral_types::Problem),
    )
)]
pub async fn exec(
    State(state): State<AppState>,
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<ExecRequestBody>,
) -> Result<axum::response::Response, ApiError> {
    let streaming = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let argv = command_argv(body.command, body.argv)?;
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
    let max_output = state.config.sandbox.exec_max_output_bytes;
    let output_limit = body.max_output_bytes.unwrap_or(EXEC_OUTPUT_LIMIT);
    if !(1..=max_output).contains(&output_limit) {
        return Err(ApiError::invalid_field(
            "max_output_bytes",
            format!("must be 1–{max_output} (this server's limit)"),
        ));
    }
    if body.stream_stdin && !streaming {
        return Err(ApiError::invalid_field(
            "stream_stdin",
            "needs an event stream (Accept: text/event-stream)",
        ));
    }
    if body.stream_stdin && body.stdin.is_some() {
        return Err(ApiError::invalid_field(
            "stdin",
            "give either `stdin` or `stream_stdin`, not both",
        ));
    }
    let record = running(&state, &principal, &id).await?;
    let request = ExecRequest {
        argv,
        env: program_env(&record, body.env),
        cwd: body.cwd.unwrap_or_else(|| "/tmp".to_owned()),
        stdin: body.stdin.unwrap_or_default(),
        timeout_ms,
        output_limit: usize::try_from(output_limit).unwrap_or(usize::MAX),
        stream: false,
        stdin_stream: false,
        sole: false,
    };
    let sandbox = state.sandboxes.attach(&record.id);
    if streaming {
        let input = body.stream_stdin.then(|| {
            state
                .sandboxes
                .exec_inputs
                .open(&principal.org_id, &record.id)
        });
        return Ok(exec_events(
            state, client, principal, sandbox, request, input,
        ));
    }
    let result = tokio::task::spawn_blocking(move || sandbox.exec(request))
        .await
        .map_err(ApiError::internal)?
        .map_err(exec_refused)?;
    audit_exec(&state, &client, &principal, &record.id, &result).await;
    Ok(Json(result).into_response())
}

fn exec_refused(error: corral_runtime::RuntimeError) -> ApiError {
    match error {
        corral_runtime::RuntimeError::Refused { message, .. } => {
            ApiError::invalid_field("argv", message)
        }
        other => unreachable_sandbox(&other),
    }
}

async fn audit_exec(
    state: &AppState,
    client: &ClientInfo,
    principal: &Principal,
    id: &str,
    result: &ExecResult,
) {
    let outcome = if result.timed_out {
        "timeout"
    } else {
        "success"
    };
    audit_step(state, client, principal, "sandbox.exec", id, outcome).await;
}

/// The event stream of an exec. The program's output is read as fast as
/// the client takes it (a slow client slows the program down, it never
/// loses output); a client that goes away ends the program.
fn exec_events(
    state: AppState,
    client: ClientInfo,
    principal: Caller,
    sandbox: corral_runtime::Sandbox,
    request: ExecRequest,
    input: Option<ExecInput>,
) -> axum::response::Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let id = sandbox.id.trim_start_matches("corral-").to_owned();
    tokio::spawn(async move {
        let (stdin, registration) = match input {
            Some((exec_id, stdin, registration)) => {
                let started = Event::default()
                    .event("started")
                    .json_data(corral_types::sandbox::ExecStarted { exec_id });
                if let Ok(started) = started
                    && tx.send(started).await.is_err()
                {
                    return;
                }
                (Some(stdin), Some(registration))
            }
            None => (None, None),
        };
        let output = tx.clone();
        let ran = tokio::task::spawn_blocking(move || {
            sandbox.exec_stream_with_stdin(request, stdin, |stream, data| {
                let event = Event::default()
                    .event(stream)
                    .json_data(serde_json::json!({ "data": data }));
                event.is_ok_and(|event| output.blocking_send(event).is_ok())
            })
        })
        .await;
        let last = match ran {
            Ok(Ok(result)) => {
                audit_exec(&state, &client, &principal, &id, &result).await;
                Event::default().event("exit").json_data(&result)
            }
            Ok(Err(error)) => {
                let problem = exec_refused(error);
                let problem = problem.problem();
                Event::default()
                    .event("error")
                    .json_data(serde_json::json!({
                        "code": problem.code.as_str(),
                        "detail": problem.detail,
                    }))
            }
            Err(join) => {
                tracing::error!(%join, "a streaming exec panicked");
                Event::default()
                    .event("error")
                    .json_data(serde_json::json!({
                        "code": "internal_error",
                        "detail": "the exec failed",
                    }))
            }
        };
        // The exec is over: its standard input takes no more writes.
        drop(registration);
        if let Ok(last) = last {
            let _ = tx.send(last).await;
        }
    });
    let events = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Ok::<_, std::convert::Infallible>,
    );
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A streaming exec's open standard input: its id, where writes arrive,
/// and its registration.
type ExecInput = (
    String,
    std::sync::mpsc::Receiver<corral_types::terminal::ProcessStdinRequest>,
    crate::exec_stdin::Registration,
);

/// Writes to the standard input of a running exec started with
/// `stream_stdin` (and, with `close`, ends it). A write waits while the
/// program has not read the earlier ones.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/exec/{exec_id}/stdin", tag = "sandboxes", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("exec_id" = String, Path, description = "From the exec stream's `started` event"),
    ),
    request_body = corral_types::terminal::ProcessStdinRequest,
    responses(
        (status = 204, description = "Written"),
        (status = 404, description = "No such sandbox, or no running exec with that id in it", body = corral_types::Problem),
        (status = 409, description = "The exec ended", body = corral_types::Problem),
        (status = 422, description = "Its standard input is closed", body = corral_types::Problem),
    )
)]
pub async fn exec_stdin(
    State(state): State<AppState>,
    principal: Caller,
    Path((id, exec_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<corral_types::terminal::ProcessStdinRequest>,
) -> Result<StatusCode, ApiError> {
    use crate::exec_stdin::StdinRefused;
    let record = running(&state, &principal, &id).await?;
    let tx = state
        .sandboxes
        .exec_inputs
        .sender(&principal.org_id, &record.id, &exec_id, body.close)
        .map_err(|refused| match refused {
            StdinRefused::NotFound => ApiError::new(
                ErrorCode::NotFound,
                format!("no running exec {exec_id} with open standard input in this sandbox"),
            ),
            StdinRefused::Closed => {
                ApiError::invalid_field("data", "this exec's standard input is closed")
            }
        })?;
    tokio::task::spawn_blocking(move || tx.send(body))
        .await
        .map_err(ApiError::internal)?
        .map_err(|_| conflict("the exec has ended"))?;
    Ok(StatusCode::NO_CONTENT)
}

fn conflict(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Conflict, detail)
}

/// The sandbox as it is now in the store.
async fn current(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Json<SandboxResponse>, ApiError> {
    Ok(Json(response(find(state, principal, id).await?)))
}

/// Changes a sandbox's name, labels or automatic stop and delete.
#[utoipa::path(
    patch, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = UpdateSandboxRequest,
    responses(
        (status = 200, description = "Changed", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 422, description = "A value is refused", body = corral_types::Problem),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateSandboxRequest>,
) -> Result<Json<SandboxResponse>, ApiError> {
    check_name(body.name.as_ref())?;
    if let Some(labels) = &body.labels {
        check_labels(labels)?;
    }
    let auto_stop_minutes = match body.auto_stop_minutes {
        Some(value) => Some(minutes("auto_stop_minutes", value, MAX_AUTO_STOP_MINUTES)?),
        None => None,
    };
    let auto_delete_minutes = match body.auto_delete_minutes {
        Some(value) => Some(minutes(
            "auto_delete_minutes",
            value,
            MAX_AUTO_DELETE_MINUTES,
        )?),
        None => None,
    };
    let changes = SandboxChanges {
        name: body.name,
        labels: body
            .labels
            .map(|l| serde_json::to_string(&l).unwrap_or_else(|_| "{}".to_owned())),
        auto_stop_minutes,
        auto_delete_minutes,
    };
    if !state
        .store
        .update_sandbox(state.clock.now_ms(), &principal.org_id, &id, &changes)
        .await?
    {
        return Err(ApiError::not_found("sandbox"));
    }
    audit_step(
        &state,
        &client,
        &principal,
        "sandbox.update",
        &id,
        "success",
    )
    .await;
    current(&state, &principal, &id).await
}

/// Starts a stopped sandbox again (a running one is left as it is), on the
/// disk it had. One in `error` is first cleaned up as a stop would.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/start", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Running", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not stopped or in error (paused, creating, starting or stopping)", body = corral_types::Problem),
        (status = 429, description = "The plan's concurrent sandboxes are all in use", body = corral_types::Problem),
        (status = 503, description = "It could not start; it stays stopped", body = corral_types::Problem),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    let mut record = find(&state, &principal, &id).await?;
    match record.state.as_str() {
        "running" => return Ok(Json(response(record))),
        "stopped" => {}
        "error" => {
            if !recover_sandbox(&state, &record).await? {
                return Err(conflict("the sandbox changed state; try again"));
            }
            record = find(&state, &principal, &id).await?;
        }
        other => {
            return Err(conflict(format!(
                "the sandbox is {other}; only a stopped sandbox (or one in error) can be started"
            )));
        }
    }
    // The place counts against whoever created the sandbox, under their plan.
    let creator = state.store.user_by_id(&record.created_by).await?;
    let max_live = creator
        .and_then(|u| state.plans.get(&u.plan_id))
        .and_then(|p| p.max_sandboxes);
    let (manager, sandbox_id, slot, limits, image) = (
        state.sandboxes.clone(),
        record.id.clone(),
        record.id_slot.unwrap_or(0),
        limits_of(&record),
        record.image.clone(),
    );
    // From the move to `starting` on, on a task of its own: a client that
    // goes away (dropping this handler) must not leave the sandbox
    // `starting` with no one to finish.
    let finish = {
        let state = state.clone();
        tokio::spawn(async move {
            let now = state.clock.now_ms();
            if !state
                .store
                .sandbox_starting(now, &record.id, &record.created_by, max_live)
                .await?
            {
                return Err(conflict("the sandbox changed state; try again"));
            }
            let started = tokio::task::spawn_blocking(move || {
                manager.restart(&sandbox_id, slot, limits, &image)
            })
            .await
            .map_err(ApiError::internal)?;
            let now = state.clock.now_ms();
            match &started {
                Ok(()) => state.store.sandbox_running(now, &record.id).await?,
                // Back to stopped, its place given back: nothing of it is lost.
                Err(_) => {
                    state.store.sandbox_stopped(now, &record.id).await?;
                }
            }
            Ok::<_, ApiError>(started)
        })
    };
    match finish.await.map_err(ApiError::internal)?? {
        Ok(()) => {
            audit_step(&state, &client, &principal, "sandbox.start", &id, "success").await;
            current(&state, &principal, &id).await
        }
        Err(message) => {
            audit_step(&state, &client, &principal, "sandbox.start", &id, "failure").await;
            Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!("the sandbox could not start: {message}"),
            ))
        }
    }
}

/// Stops a sandbox: its programs end and it holds no place in the plan's
/// concurrent sandboxes until started again; its disk (`/tmp` and, for an
/// image, its writable layer) is kept. A stopped one is left as it is; one
/// in `error` is cleaned up (what is left of its container ends) and
/// becomes `stopped`, ready to start again.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/stop", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Stopped", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Creating, starting or stopping", body = corral_types::Problem),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    let record = find(&state, &principal, &id).await?;
    match record.state.as_str() {
        "stopped" => return Ok(Json(response(record))),
        "running" | "paused" => {}
        "error" => {
            if !recover_sandbox(&state, &record).await? {
                return Err(conflict("the sandbox changed state; try again"));
            }
            audit_step(&state, &client, &principal, "sandbox.stop", &id, "success").await;
            return current(&state, &principal, &id).await;
        }
        other => {
            return Err(conflict(format!(
                "the sandbox is {other}; only a running, paused or failed sandbox can be stopped"
            )));
        }
    }
    if !stop_sandbox(&state, &record).await? {
        return Err(conflict("the sandbox changed state; try again"));
    }
    audit_step(&state, &client, &principal, "sandbox.stop", &id, "success").await;
    current(&state, &principal, &id).await
}

/// Freezes every program of a running sandbox; memory and files are kept.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/pause", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Paused", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not running", body = corral_types::Problem),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    freeze_step(&state, &client, &principal, &id, true).await
}

/// Thaws a paused sandbox.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/resume", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Running", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not paused", body = corral_types::Problem),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    freeze_step(&state, &client, &principal, &id, false).await
}

/// Pause (`freeze`) or resume: the state moves first (so two requests
/// cannot both act), then the runtime; a runtime failure moves it back.
async fn freeze_step(
    state: &AppState,
    client: &ClientInfo,
    principal: &Principal,
    id: &str,
    freeze: bool,
) -> Result<Json<SandboxResponse>, ApiError> {
    let (from, to, action) = if freeze {
        ("running", "paused", "sandbox.pause")
    } else {
        ("paused", "running", "sandbox.resume")
    };
    let record = find(state, principal, id).await?;
    if record.state == to {
        return Ok(Json(response(record)));
    }
    if !state
        .store
        .sandbox_transition(state.clock.now_ms(), &record.id, from, to)
        .await?
    {
        return Err(conflict(format!(
            "the sandbox is {}, not {from}",
            record.state
        )));
    }
    let sandbox = state.sandboxes.attach(&record.id);
    let done = tokio::task::spawn_blocking(move || {
        if freeze {
            sandbox.pause()
        } else {
            sandbox.resume()
        }
    })
    .await
    .map_err(ApiError::internal)?;
    if let Err(error) = done {
        state
            .store
            .sandbox_transition(state.clock.now_ms(), &record.id, to, from)
            .await?;
        audit_step(state, client, principal, action, id, "failure").await;
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("the runtime refused: {error}"),
        ));
    }
    audit_step(state, client, principal, action, id, "success").await;
    current(state, principal, id).await
}

/// What a running or paused sandbox uses now: CPU time, memory, processes.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/stats", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Its counters", body = corral_types::sandbox::SandboxStats),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not running or paused", body = corral_types::Problem),
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<corral_types::sandbox::SandboxStats>, ApiError> {
    let record = find(&state, &principal, &id).await?;
    if record.state != "running" && record.state != "paused" {
        return Err(conflict(format!(
            "the sandbox is {}; only a running or paused one has counters",
            record.state
        )));
    }
    let sandbox = state.sandboxes.attach(&record.id);
    tokio::task::spawn_blocking(move || sandbox.stats())
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .map_err(|e| unreachable_sandbox(&e))
}
