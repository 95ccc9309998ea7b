//! The sandbox use cases of every surface: create (the plan's caps, the
//! image, the warm pool), list, show, change, delete, start, stop, pause,
//! resume and counters. Each takes the authenticated caller; another org's
//! sandbox is never told apart from a missing one.

use std::collections::BTreeMap;

use corral_core::auth::Principal;
use corral_core::clock::rfc3339;
use corral_store::{NewSandbox, SandboxChanges, SandboxFilter, SandboxRecord, User};
use corral_types::sandbox::{
    CreateSandboxRequest, SandboxPage, SandboxResponse, SandboxStats, UpdateSandboxRequest,
};

use super::{
    SANDBOX_DISK_MB, SANDBOX_PIDS, audit_step, find, rand_slot, recover_sandbox, stop_sandbox,
    unreachable_sandbox,
};
use crate::audit::ClientInfo;
use crate::driver::HOST_IMAGE;
use crate::driver::Placement;
use crate::paging::{page_cut, page_limit};
use crate::pool::PoolKey;
use crate::{Service, ServiceError, ServiceResult};

/// Idle minutes before auto-stop: up to a week.
const MAX_AUTO_STOP_MINUTES: i64 = 7 * 24 * 60;
/// Stopped minutes before auto-delete: up to a year.
const MAX_AUTO_DELETE_MINUTES: i64 = 365 * 24 * 60;
/// Longest sandbox name, characters.
const MAX_NAME_CHARS: usize = 64;
/// Labels per sandbox.
const MAX_LABELS: usize = 16;
/// Longest label key and value, characters.
const MAX_LABEL_CHARS: usize = 64;
/// Memory a sandbox may have when the caller's plan is unknown, MiB.
const UNKNOWN_PLAN_MEMORY_MB: i64 = 128;
/// Smallest memory a sandbox may have, MiB.
const MIN_MEMORY_MB: i64 = 16;
/// CPU of a sandbox whose request names none, and the least and most any
/// may have (with no plan cap), millicores.
const DEFAULT_CPU_MILLICORES: i64 = 1000;
const MIN_CPU_MILLICORES: i64 = 100;
const UNCAPPED_CPU_MILLICORES: i64 = 64_000;
/// Disk of a sandbox when the plan has no cap, MiB.
const UNCAPPED_DISK_MB: i64 = 1 << 20;
/// Processes a sandbox may have.
const MIN_PIDS: i64 = 16;
const MAX_PIDS: i64 = 1024;

/// Every state a sandbox can be in (what a list may filter on).
const STATES: &[&str] = &[
    "creating", "starting", "running", "paused", "stopped", "error",
];

/// A sandbox record as every surface shows it.
pub fn response(r: SandboxRecord) -> SandboxResponse {
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

/// An optional minutes setting within `1..=max`, else refused naming `field`.
fn minutes(field: &str, value: Option<i64>, max: i64) -> ServiceResult<Option<i64>> {
    match value {
        Some(m) if !(1..=max).contains(&m) => Err(ServiceError::invalid_field(
            field,
            format!("must be between 1 and {max} minutes"),
        )),
        other => Ok(other),
    }
}

fn check_name(name: Option<&String>) -> ServiceResult<()> {
    match name {
        Some(name) if !(1..=MAX_NAME_CHARS).contains(&name.chars().count()) => Err(
            ServiceError::invalid_field("name", "must be 1 to 64 characters"),
        ),
        _ => Ok(()),
    }
}

/// At most 16 labels, keys and values 1–64 and 0–64 characters.
fn check_labels(labels: &BTreeMap<String, String>) -> ServiceResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(ServiceError::invalid_field("labels", "at most 16 labels"));
    }
    for (key, value) in labels {
        if !(1..=MAX_LABEL_CHARS).contains(&key.chars().count())
            || value.chars().count() > MAX_LABEL_CHARS
        {
            return Err(ServiceError::invalid_field(
                "labels",
                "keys are 1 to 64 characters, values at most 64",
            ));
        }
    }
    Ok(())
}

/// `value`, or `default`, within `min..=max` (the plan's cap), else refused naming `field`.
fn within(field: &str, value: Option<i64>, default: i64, min: i64, max: i64) -> ServiceResult<i64> {
    let value = value.unwrap_or(default.min(max));
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ServiceError::invalid_field(
            field,
            format!("must be between {min} and {max} on your plan"),
        ))
    }
}

fn json(value: &BTreeMap<String, String>) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

/// Creates and starts a sandbox in the caller's org, within `user`'s plan:
/// a warm one of exactly this class when the pool has one, else a new one.
pub async fn create(
    service: &Service,
    caller: &Principal,
    user: &User,
    client: &ClientInfo,
    body: CreateSandboxRequest,
) -> ServiceResult<SandboxResponse> {
    let (image, image_env) = resolve_image(service, body.image.as_deref()).await?;
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
            return Err(ServiceError::invalid_field(
                "env",
                format!("`{key}` is not a variable name"),
            ));
        }
    }
    let plan = service.plans.get(&user.plan_id);
    let max_memory = plan.map_or(UNKNOWN_PLAN_MEMORY_MB, |p| p.max_memory_mb);
    let max_cpu = plan
        .and_then(|p| p.max_cpus)
        .map_or(UNCAPPED_CPU_MILLICORES, |c| c * 1000);
    let max_disk = plan
        .and_then(|p| p.max_disk_mb)
        .map_or(UNCAPPED_DISK_MB, |d| d);
    let resources = &body.resources;
    let memory_mb = within(
        "resources.memory_mb",
        resources.memory_mb,
        service.config.sandbox.default_memory_mb,
        MIN_MEMORY_MB,
        max_memory,
    )?;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "validated to a small range below"
    )]
    let cpu = resources.cpu.map(|c| (c * 1000.0).round() as i64);
    let cpu_millicores = within(
        "resources.cpu",
        cpu,
        DEFAULT_CPU_MILLICORES,
        MIN_CPU_MILLICORES,
        max_cpu,
    )?;
    let disk_mb = within(
        "resources.disk_mb",
        resources.disk_mb,
        SANDBOX_DISK_MB,
        1,
        max_disk,
    )?;
    let pids = within(
        "resources.pids",
        resources.pids,
        SANDBOX_PIDS,
        MIN_PIDS,
        MAX_PIDS,
    )?;
    // The image's environment (its PATH and the like) under the caller's.
    let mut env = image_env;
    env.extend(body.env);
    let now = service.clock.now_ms();
    let key = PoolKey {
        image: image.clone(),
        memory_mb,
        cpu_millicores,
        pids,
        disk_mb,
    };
    // A warm sandbox of exactly this class, if the pool has one.
    let warm = service.sandboxes.pool.take(&key);
    let new = NewSandbox {
        id: warm.as_ref().map(|w| w.id.clone()),
        running: warm.is_some(),
        org_id: caller.org_id.clone(),
        created_by: caller.user_id.clone(),
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
        let claimed = service
            .store
            .create_sandbox(now, new.clone(), |_| slot)
            .await;
        service.sandboxes.pool.settle(&warm.id);
        match claimed {
            // Recorded `running` at once: it already is.
            Ok(record) => {
                audit_step(
                    service,
                    client,
                    caller,
                    "sandbox.create",
                    &record.id,
                    "success",
                )
                .await;
                return Ok(response(record));
            }
            Err(error) => {
                // Not claimed (over quota, or the slot was taken meanwhile):
                // it goes back, or away.
                if matches!(error, corral_store::StoreError::QuotaExceeded(_)) {
                    service.sandboxes.pool.put_back(key, warm);
                    return Err(error.into());
                }
                service.sandboxes.destroy_blocking(&warm.id).await;
            }
        }
    }
    let new = NewSandbox {
        id: None,
        running: false,
        ..new
    };
    // From the record on, on a task of its own: a caller that goes away
    // (dropping this future) must not leave the sandbox `creating` with no
    // one to finish.
    let finish = {
        let service = service.clone();
        tokio::spawn(async move {
            let record = service
                .store
                .create_sandbox(now, new, |_| rand_slot())
                .await?;
            let started = service.driver().create(Placement::of(&record)).await;
            match &started {
                Ok(()) => {
                    service
                        .store
                        .sandbox_running(service.clock.now_ms(), &record.id)
                        .await?;
                }
                Err(message) => {
                    tracing::warn!(sandbox = %record.id, %message, "a sandbox failed to start");
                    service
                        .store
                        .sandbox_failed(service.clock.now_ms(), &record.id, message)
                        .await?;
                }
            }
            Ok::<_, ServiceError>((record, started))
        })
    };
    let (record, started) = finish.await.map_err(ServiceError::internal)??;
    let outcome = if started.is_ok() {
        "success"
    } else {
        "failure"
    };
    audit_step(
        service,
        client,
        caller,
        "sandbox.create",
        &record.id,
        outcome,
    )
    .await;
    if let Err(message) = started {
        return Err(ServiceError::unavailable(format!(
            "the sandbox could not start: {message}"
        )));
    }
    find(service, caller, &record.id).await.map(response)
}

/// The image a create names (`host` when none): its normalised reference
/// and environment. One this host lacks is pulled when configured to.
async fn resolve_image(
    service: &Service,
    wanted: Option<&str>,
) -> ServiceResult<(String, BTreeMap<String, String>)> {
    let wanted = wanted.unwrap_or(HOST_IMAGE);
    if wanted == HOST_IMAGE {
        return Ok((HOST_IMAGE.to_owned(), BTreeMap::new()));
    }
    let reference = corral_runtime::image::normalize(wanted)
        .map_err(|e| ServiceError::invalid_field("image", e.to_string()))?;
    let store = service
        .sandboxes
        .images()
        .map_err(|e| ServiceError::internal(anyhow::anyhow!(e)))?;
    let lookup = store.clone();
    let found = {
        let reference = reference.clone();
        tokio::task::spawn_blocking(move || lookup.root(&reference))
            .await
            .map_err(ServiceError::internal)?
    };
    let root = match found {
        Ok(root) => root,
        Err(corral_runtime::image::ImageError::NotFound(_))
            if service.config.sandbox.pull_missing_images =>
        {
            let pulled = store
                .pull(
                    &reference,
                    &corral_runtime::image::RegistryAuth::Anonymous,
                    &service.config.sandbox.pull_policy(),
                    &mut |_| {},
                )
                .await;
            if let Err(error) = pulled {
                return Err(pull_refused(wanted, &error));
            }
            store
                .root(&reference)
                .map_err(|e| ServiceError::internal(anyhow::anyhow!(e.to_string())))?
        }
        Err(corral_runtime::image::ImageError::NotFound(_)) => {
            return Err(ServiceError::invalid_field(
                "image",
                format!(
                    "`{wanted}` is not on this host (add it with `corral image pull` or `corral image import`)"
                ),
            ));
        }
        Err(other) => {
            return Err(ServiceError::internal(anyhow::anyhow!(other.to_string())));
        }
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
fn pull_refused(wanted: &str, error: &corral_runtime::image::ImageError) -> ServiceError {
    use corral_runtime::image::ImageError;
    tracing::info!(%error, image = wanted, "an image pull failed");
    let why = match error {
        ImageError::Refused { .. }
        | ImageError::PullLimit { .. }
        | ImageError::LimitExceeded { .. }
        | ImageError::InvalidReference { .. } => error.to_string(),
        _ => "its registry did not provide it".to_owned(),
    };
    ServiceError::invalid_field(
        "image",
        format!("`{wanted}` is not on this host and could not be pulled: {why}"),
    )
}

/// What a list of sandboxes asks for: a page and filters, unchecked.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (see [`crate::paging`]).
    pub limit: Option<i64>,
    /// Only sandboxes in this state.
    pub state: Option<String>,
    /// Only sandboxes with this label, as `key=value`.
    pub label: Option<String>,
    /// Only this org's sandboxes (administrators' list only).
    pub org_id: Option<String>,
    /// Only sandboxes on this image (administrators' list only).
    pub image: Option<String>,
}

/// The caller's org's sandboxes, oldest first. `org_id` and `image` of the
/// query are not the caller's to choose and are ignored.
pub async fn list(
    service: &Service,
    caller: &Principal,
    query: ListQuery,
) -> ServiceResult<SandboxPage> {
    let filter = SandboxFilter {
        org_id: Some(&caller.org_id),
        ..filter_of(query.state.as_deref(), query.label.as_deref())?
    };
    sandbox_page(service, &filter, query.cursor.as_deref(), query.limit).await
}

/// Every org's sandboxes, oldest first (who may ask is the surface's
/// policy: platform administrators).
pub async fn admin_list(service: &Service, query: ListQuery) -> ServiceResult<SandboxPage> {
    let image = query
        .image
        .as_deref()
        .map(|wanted| match wanted {
            HOST_IMAGE => Ok(HOST_IMAGE.to_owned()),
            other => corral_runtime::image::normalize(other)
                .map_err(|e| ServiceError::invalid_field("image", e.to_string())),
        })
        .transpose()?;
    let filter = SandboxFilter {
        org_id: query.org_id.as_deref(),
        image: image.as_deref(),
        ..filter_of(query.state.as_deref(), query.label.as_deref())?
    };
    sandbox_page(service, &filter, query.cursor.as_deref(), query.limit).await
}

/// A state and a `key=value` label from a query, checked.
fn filter_of<'a>(
    wanted: Option<&'a str>,
    label: Option<&'a str>,
) -> ServiceResult<SandboxFilter<'a>> {
    if let Some(wanted) = wanted
        && !STATES.contains(&wanted)
    {
        return Err(ServiceError::invalid_field(
            "state",
            format!("must be one of {}", STATES.join(", ")),
        ));
    }
    let label = match label {
        Some(pair) => Some(
            pair.split_once('=')
                .filter(|(key, _)| !key.is_empty())
                .ok_or_else(|| ServiceError::invalid_field("label", "must be `key=value`"))?,
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
    service: &Service,
    filter: &SandboxFilter<'_>,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> ServiceResult<SandboxPage> {
    let limit = page_limit(limit)?;
    let mut items = service
        .store
        .sandboxes_matching(filter, cursor, limit + 1)
        .await?;
    let next_cursor = page_cut(&mut items, limit, |s| s.id.clone());
    Ok(SandboxPage {
        items: items.into_iter().map(response).collect(),
        next_cursor,
    })
}

/// One sandbox of the caller's org; a running one with its terminals and
/// processes (left out when its agent does not answer).
pub async fn show(
    service: &Service,
    caller: &Principal,
    id: &str,
) -> ServiceResult<SandboxResponse> {
    let record = find(service, caller, id).await?;
    let running = record.state == "running";
    let sandbox = service.sandboxes.attach(&record.id);
    let mut detail = response(record);
    if running {
        let inside = tokio::task::spawn_blocking(move || {
            Ok::<_, corral_runtime::RuntimeError>((sandbox.terminals()?, sandbox.processes()?))
        })
        .await
        .map_err(ServiceError::internal)?;
        match inside {
            Ok((terminals, processes)) => {
                detail.terminals = Some(terminals);
                detail.processes = Some(processes);
            }
            Err(error) => tracing::warn!(%error, id = %detail.id, "asking the agent what runs"),
        }
    }
    Ok(detail)
}

/// Changes a sandbox's name, labels or automatic stop and delete.
pub async fn update(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    body: UpdateSandboxRequest,
) -> ServiceResult<SandboxResponse> {
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
        labels: body.labels.as_ref().map(json),
        auto_stop_minutes,
        auto_delete_minutes,
    };
    if !service
        .store
        .update_sandbox(service.clock.now_ms(), &caller.org_id, id, &changes)
        .await?
    {
        return Err(ServiceError::not_found("sandbox"));
    }
    audit_step(service, client, caller, "sandbox.update", id, "success").await;
    find(service, caller, id).await.map(response)
}

/// Stops and deletes a sandbox and everything in it.
pub async fn remove(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
) -> ServiceResult<()> {
    let record = find(service, caller, id).await?;
    service.driver().kill(&record.id).await;
    service
        .store
        .delete_sandbox(&caller.org_id, &record.id)
        .await?;
    audit_step(
        service,
        client,
        caller,
        "sandbox.delete",
        &record.id,
        "success",
    )
    .await;
    Ok(())
}

/// Starts a stopped sandbox again (a running one is left as it is), on the
/// disk it had. One in `error` is first cleaned up as a stop would. Its
/// place counts against whoever created it, under their plan.
pub async fn start(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
) -> ServiceResult<SandboxResponse> {
    let mut record = find(service, caller, id).await?;
    match record.state.as_str() {
        "running" => return Ok(response(record)),
        "stopped" => {}
        "error" => {
            if !recover_sandbox(service, &record).await? {
                return Err(changed_meanwhile());
            }
            record = find(service, caller, id).await?;
        }
        other => {
            return Err(ServiceError::conflict(format!(
                "the sandbox is {other}; only a stopped sandbox (or one in error) can be started"
            )));
        }
    }
    let creator = service.store.user_by_id(&record.created_by).await?;
    let max_live = creator
        .and_then(|u| service.plans.get(&u.plan_id))
        .and_then(|p| p.max_sandboxes);
    // From the move to `starting` on, on a task of its own: a caller that
    // goes away must not leave the sandbox `starting` with no one to finish.
    let finish = {
        let service = service.clone();
        tokio::spawn(async move {
            let now = service.clock.now_ms();
            if !service
                .store
                .sandbox_starting(now, &record.id, &record.created_by, max_live)
                .await?
            {
                return Err(changed_meanwhile());
            }
            let started = service.driver().start(Placement::of(&record)).await;
            let now = service.clock.now_ms();
            match &started {
                Ok(()) => service.store.sandbox_running(now, &record.id).await?,
                // Back to stopped, its place given back: nothing of it is lost.
                Err(_) => {
                    service.store.sandbox_stopped(now, &record.id).await?;
                }
            }
            Ok::<_, ServiceError>(started)
        })
    };
    match finish.await.map_err(ServiceError::internal)?? {
        Ok(()) => {
            audit_step(service, client, caller, "sandbox.start", id, "success").await;
            find(service, caller, id).await.map(response)
        }
        Err(message) => {
            audit_step(service, client, caller, "sandbox.start", id, "failure").await;
            Err(ServiceError::unavailable(format!(
                "the sandbox could not start: {message}"
            )))
        }
    }
}

fn changed_meanwhile() -> ServiceError {
    ServiceError::conflict("the sandbox changed state; try again")
}

/// Stops a sandbox: its programs end and it holds no place in the plan's
/// concurrent sandboxes until started again; its disk is kept. A stopped
/// one is left as it is; one in `error` is cleaned up and becomes `stopped`.
pub async fn stop(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
) -> ServiceResult<SandboxResponse> {
    let record = find(service, caller, id).await?;
    match record.state.as_str() {
        "stopped" => return Ok(response(record)),
        "running" | "paused" => {
            if !stop_sandbox(service, &record).await? {
                return Err(changed_meanwhile());
            }
        }
        "error" => {
            if !recover_sandbox(service, &record).await? {
                return Err(changed_meanwhile());
            }
        }
        other => {
            return Err(ServiceError::conflict(format!(
                "the sandbox is {other}; only a running, paused or failed sandbox can be stopped"
            )));
        }
    }
    audit_step(service, client, caller, "sandbox.stop", id, "success").await;
    find(service, caller, id).await.map(response)
}

/// Freezes every program of a running sandbox; memory and files are kept.
pub async fn pause(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
) -> ServiceResult<SandboxResponse> {
    freeze_step(service, caller, client, id, true).await
}

/// Thaws a paused sandbox.
pub async fn resume(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
) -> ServiceResult<SandboxResponse> {
    freeze_step(service, caller, client, id, false).await
}

/// Pause (`freeze`) or resume: the state moves first (so two requests
/// cannot both act), then the runtime; a runtime failure moves it back.
async fn freeze_step(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    freeze: bool,
) -> ServiceResult<SandboxResponse> {
    let (from, to, action) = if freeze {
        ("running", "paused", "sandbox.pause")
    } else {
        ("paused", "running", "sandbox.resume")
    };
    let record = find(service, caller, id).await?;
    if record.state == to {
        return Ok(response(record));
    }
    if !service
        .store
        .sandbox_transition(service.clock.now_ms(), &record.id, from, to)
        .await?
    {
        return Err(ServiceError::conflict(format!(
            "the sandbox is {}, not {from}",
            record.state
        )));
    }
    let sandbox = service.sandboxes.attach(&record.id);
    let done = tokio::task::spawn_blocking(move || {
        if freeze {
            sandbox.pause()
        } else {
            sandbox.resume()
        }
    })
    .await
    .map_err(ServiceError::internal)?;
    if let Err(error) = done {
        service
            .store
            .sandbox_transition(service.clock.now_ms(), &record.id, to, from)
            .await?;
        audit_step(service, client, caller, action, id, "failure").await;
        return Err(ServiceError::unavailable(format!(
            "the runtime refused: {error}"
        )));
    }
    audit_step(service, client, caller, action, id, "success").await;
    find(service, caller, id).await.map(response)
}

/// What a running or paused sandbox uses now: CPU time, memory, processes.
pub async fn stats(service: &Service, caller: &Principal, id: &str) -> ServiceResult<SandboxStats> {
    let record = find(service, caller, id).await?;
    if record.state != "running" && record.state != "paused" {
        return Err(ServiceError::conflict(format!(
            "the sandbox is {}; only a running or paused one has counters",
            record.state
        )));
    }
    service
        .driver()
        .stats(&record.id)
        .await
        .map_err(|e| unreachable_sandbox(&e))
}
