//! The sandbox lifecycle rules shared by every surface and by the judge:
//! default resources, the runtime limits of a recorded sandbox, stopping,
//! recovering from `error`, and the automatic sweep; the use cases on top
//! of them in [`lifecycle`], [`exec`], [`files`] and [`processes`] (and
//! terminals).

pub mod exec;
pub mod files;
pub mod lifecycle;
pub mod processes;

use corral_core::auth::Principal;
use corral_runtime::Limits;
use corral_store::{ID_SLOTS, SandboxRecord};

use crate::audit::{ClientInfo, audit};
use crate::{Service, ServiceError};

/// Processes and threads per sandbox.
pub const SANDBOX_PIDS: i64 = 256;
/// Writable space of a sandbox whose request names none, MiB.
pub const SANDBOX_DISK_MB: i64 = 256;

/// The runtime limits of a recorded sandbox.
pub fn limits_of(r: &SandboxRecord) -> Limits {
    limits_for(r.memory_mb, r.cpu_millicores, r.pids, r.disk_mb)
}

/// The runtime limits of a sandbox with these resources.
pub fn limits_for(memory_mb: i64, cpu_millicores: i64, pids: i64, disk_mb: i64) -> Limits {
    Limits {
        memory_mb: u64::try_from(memory_mb).unwrap_or(16),
        pids,
        cpu_millicores: u64::try_from(cpu_millicores).unwrap_or(1000),
        tmp_mb: u64::try_from(disk_mb).unwrap_or(1),
        tmp_inodes: u64::try_from(disk_mb * 64).unwrap_or(4096).max(1024),
        open_files: 1024,
        file_size_mb: u64::try_from(disk_mb).unwrap_or(1),
    }
}

/// A random id slot (the uid range and address a sandbox gets).
pub fn rand_slot() -> i64 {
    use rand::Rng;
    rand::rng().random_range(0..ID_SLOTS)
}

/// The sandbox's agent could not be reached or broke the protocol.
pub fn unreachable_sandbox(error: &corral_runtime::RuntimeError) -> ServiceError {
    ServiceError::unavailable(format!("the sandbox did not answer: {error}"))
}

/// Stops the container of a running or paused sandbox and records it
/// stopped (also the auto-stop sweep's way). The state moves to `stopping`
/// first, so no other request (or the reconciler) acts on it meanwhile;
/// `false` when it was no longer running or paused.
pub async fn stop_sandbox(service: &Service, record: &SandboxRecord) -> Result<bool, ServiceError> {
    let (manager, sandbox_id, paused) = (
        service.sandboxes.clone(),
        record.id.clone(),
        record.state == "paused",
    );
    // From the move to `stopping` on, on a task of its own: a client that
    // goes away (dropping the caller) must not leave the sandbox
    // `stopping` with no one to finish.
    let (service, record_id, from) = (service.clone(), record.id.clone(), record.state.clone());
    tokio::spawn(async move {
        if !service
            .store
            .sandbox_transition(service.clock.now_ms(), &record_id, &from, "stopping")
            .await?
        {
            return Ok(false);
        }
        tokio::task::spawn_blocking(move || manager.stop(&sandbox_id, paused))
            .await
            .map_err(ServiceError::internal)?;
        service
            .store
            .sandbox_stopped(service.clock.now_ms(), &record_id)
            .await?;
        Ok::<_, ServiceError>(true)
    })
    .await
    .map_err(ServiceError::internal)?
}

/// Cleans up what is left of a sandbox in `error` (its container, mounts
/// and directory; its disk is kept) and records it `stopped`; `false` when
/// it was no longer in `error`.
pub async fn recover_sandbox(
    service: &Service,
    record: &SandboxRecord,
) -> Result<bool, ServiceError> {
    let (manager, sandbox_id) = (service.sandboxes.clone(), record.id.clone());
    tokio::task::spawn_blocking(move || manager.stop(&sandbox_id, false))
        .await
        .map_err(ServiceError::internal)?;
    Ok(service
        .store
        .sandbox_recovered(service.clock.now_ms(), &record.id, |_| rand_slot())
        .await?)
}

/// Whether a client is attached to one of the sandbox's terminals.
async fn has_attached_terminal(service: &Service, id: &str) -> bool {
    let sandbox = service.sandboxes.attach(id);
    tokio::task::spawn_blocking(move || sandbox.terminals())
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|terminals| terminals.iter().any(|t| t.attached > 0))
}

/// The automatic steps, run on a timer: stops sandboxes idle past their
/// `auto_stop_minutes`, deletes those stopped past `auto_delete_minutes`.
/// Each is audited with no actor. Returns (stopped, deleted).
pub async fn sweep(service: &Service) -> Result<(usize, usize), ServiceError> {
    let now = service.clock.now_ms();
    let system = ClientInfo::automatic();
    let (mut stopped, mut deleted) = (0, 0);
    for record in service.store.sandboxes_in(&["running", "paused"]).await? {
        let Some(idle) = record.auto_stop_minutes else {
            continue;
        };
        if record.last_active_at + idle * 60_000 > now {
            continue;
        }
        if record.state == "running" && has_attached_terminal(service, &record.id).await {
            // Someone is at a terminal: that is activity.
            service.store.sandbox_touch(now, &record.id).await?;
            continue;
        }
        if stop_sandbox(service, &record).await? {
            audit(
                service,
                &system,
                None,
                Some(&record.org_id),
                "sandbox.auto_stop",
                "sandbox",
                Some(&record.id),
                "success",
            )
            .await;
            stopped += 1;
        }
    }
    for record in service.store.sandboxes_in(&["stopped"]).await? {
        let (Some(after), Some(since)) = (record.auto_delete_minutes, record.stopped_at) else {
            continue;
        };
        if since + after * 60_000 <= now {
            let sandbox = service.sandboxes.attach(&record.id);
            tokio::task::spawn_blocking(move || sandbox.destroy())
                .await
                .map_err(ServiceError::internal)?;
            if service
                .store
                .delete_sandbox(&record.org_id, &record.id)
                .await?
            {
                audit(
                    service,
                    &system,
                    None,
                    Some(&record.org_id),
                    "sandbox.auto_delete",
                    "sandbox",
                    Some(&record.id),
                    "success",
                )
                .await;
                deleted += 1;
            }
        }
    }
    Ok((stopped, deleted))
}

/// How stale a sandbox's recorded activity may get.
const ACTIVITY_RESOLUTION_MS: i64 = 30_000;

/// A running sandbox of the caller's org, or 404 / 409.
pub async fn running(
    service: &Service,
    principal: &Principal,
    id: &str,
) -> Result<SandboxRecord, ServiceError> {
    let record = find(service, principal, id).await?;
    if record.state != "running" {
        return Err(ServiceError::conflict(format!(
            "the sandbox is {}, not running",
            record.state
        )));
    }
    // Activity, for auto-stop (minutes): written at most every 30 s, so a
    // busy sandbox does not cost a database write per request.
    let now = service.clock.now_ms();
    if now - record.last_active_at >= ACTIVITY_RESOLUTION_MS {
        service.store.sandbox_touch(now, &record.id).await?;
    }
    Ok(record)
}

/// A sandbox of the caller's org, or 404.
pub async fn find(
    service: &Service,
    principal: &Principal,
    id: &str,
) -> Result<SandboxRecord, ServiceError> {
    service
        .store
        .sandbox(&principal.org_id, id)
        .await?
        .ok_or_else(|| ServiceError::not_found("sandbox"))
}

/// The program a request names: `command` (a shell command line, run by
/// `/bin/sh -c`) or a non-empty `argv`, never both.
pub fn command_argv(
    command: Option<String>,
    argv: Option<Vec<String>>,
) -> Result<Vec<String>, ServiceError> {
    match (command, argv) {
        (Some(command), None) if !command.trim().is_empty() => {
            Ok(vec!["/bin/sh".to_owned(), "-c".to_owned(), command])
        }
        (None, Some(argv)) if !argv.is_empty() => Ok(argv),
        _ => Err(ServiceError::invalid_field(
            "command",
            "give either `command` (a shell command line) or a non-empty `argv`",
        )),
    }
}

/// The environment a program in the sandbox starts with: defaults, then
/// the sandbox's own, then the request's.
pub fn program_env(
    record: &SandboxRecord,
    extra: std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ("HOME".to_owned(), "/tmp".to_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    let base: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&record.env).unwrap_or_default();
    env.extend(base);
    env.extend(extra);
    env
}

/// Audits a lifecycle step on sandbox `id`.
pub async fn audit_step(
    service: &Service,
    client: &ClientInfo,
    principal: &Principal,
    action: &str,
    id: &str,
    outcome: &str,
) {
    audit(
        service,
        client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        action,
        "sandbox",
        Some(id),
        outcome,
    )
    .await;
}
