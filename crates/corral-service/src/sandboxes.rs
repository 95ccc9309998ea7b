//! Sandboxes on this host: records in the store, containers through
//! `corral-runtime` (blocking calls run on tokio's blocking pool).

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::Duration;

use corral_runtime::image::ImageStore;
use corral_runtime::{
    ImageLayers, Limits, OciRuntime, RootSource, Sandbox, SandboxSpec, WritableLayer,
};

use crate::config::Config;
use corral_runtime::RuntimeError;
use corral_types::agent::{ExecRequest, ExecResult};
use corral_types::sandbox::SandboxStats;

use crate::driver::{DriverFuture, Placed, Placement, SandboxDriver};
use crate::owners::{Owner, Owners};

/// First host uid of sandbox ranges; slot `n` maps sandbox root to
/// `ID_BASE + n × 65 536`.
const ID_BASE: i64 = 1_000_000;
const ID_RANGE: i64 = 65_536;

/// The runtime mounts each sandbox's root from inside its user namespace,
/// as an unprivileged host uid: every directory on the way to `dir` must let
/// others pass (`o+x`). Says which one does not, and how to fix it.
fn reachable_by_sandboxes(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for ancestor in dir.ancestors() {
        let mode = std::fs::metadata(ancestor)
            .map_err(|e| format!("{}: {e}", ancestor.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "sandboxes cannot reach {}: {} has mode {:o}, and sandbox users need to pass \
                 through it (chmod o+x {}, or set sandbox.dir elsewhere)",
                dir.display(),
                ancestor.display(),
                mode & 0o7777,
                ancestor.display()
            ));
        }
    }
    Ok(())
}

/// Where this data directory's sandbox state goes by default: a directory
/// of its own in memory (see [`corral_runtime::state`]), named by a hash of
/// the data directory so several servers on one host stay apart; the data
/// directory itself when that cannot be had (not root, no tmpfs).
fn state_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    let dir = corral_runtime::state::dir_of(data_dir);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match corral_runtime::state::memory_dir(&name) {
        Ok(dir) => dir,
        // Not root: sandboxes cannot run anyway; say nothing.
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            data_dir.to_path_buf()
        }
        Err(error) => {
            tracing::warn!(%error, "no memory-backed sandbox state directory; keeping it in the data directory");
            data_dir.to_path_buf()
        }
    }
}

pub use crate::driver::HOST_IMAGE;

/// What one reconciliation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Sandboxes whose container runs (re-adopted at start-up).
    pub kept: usize,
    /// Sandboxes whose container was gone: now `error`.
    pub failed: usize,
    /// Containers and directories no record claimed, destroyed.
    pub orphans: usize,
    /// Containers and directories under the old default paths (before
    /// sandbox state moved to memory), ended at start-up; a recorded one's
    /// disk is kept and its record becomes `error`.
    pub retired: usize,
}

/// How long the periodic reconciler leaves a running sandbox with no record
/// alone: longer than any execution takes (the plans' longest run, its
/// wall-clock allowance and a compilation).
const UNOWNED_GRACE: Duration = Duration::from_secs(20 * 60);

/// Where and how this host runs sandboxes.
#[derive(Debug, Clone)]
pub struct Sandboxes {
    runtime: OciRuntime,
    dir: PathBuf,
    agent: Option<PathBuf>,
    /// The image store (`<data_dir>/images`, as `corral image` uses it).
    images: PathBuf,
    /// Sandboxes' disks (`<data_dir>/disks/<id>.img`): on persistent
    /// storage, unlike their directories, so files outlive a stop and a
    /// host restart (see [`corral_runtime::disk`]).
    disks: PathBuf,
    /// Warm sandboxes, started before anyone asked.
    pub pool: std::sync::Arc<crate::pool::Pool>,
    /// Standard input of the running execs that keep it open.
    pub exec_inputs: std::sync::Arc<crate::exec_stdin::ExecInputs>,
    /// Which process started each sandbox (see [`crate::owners`]).
    owners: Owners,
    /// Where sandboxes lived before this data directory's default state
    /// moved to memory, when that differs from where they live now.
    legacy: Option<Legacy>,
}

/// The runtime state and sandbox directories of an older default layout.
#[derive(Debug, Clone)]
struct Legacy {
    runtime: OciRuntime,
    dir: PathBuf,
}

impl Sandboxes {
    /// From configuration: the runtime binary and directories, and the agent
    /// (`sandbox.agent`, else `corral-agent` next to this executable).
    pub fn new(config: &Config) -> Sandboxes {
        let agent = config.sandbox.agent.clone().or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join("corral-agent")))
                .filter(|path| path.is_file())
        });
        let state = match (&config.sandbox.runtime_root, &config.sandbox.dir) {
            (Some(_), Some(_)) => config.data_dir.clone(),
            _ => state_dir(&config.data_dir),
        };
        let runtime = OciRuntime {
            binary: config.sandbox.runtime.clone(),
            root: config
                .sandbox
                .runtime_root
                .clone()
                .unwrap_or_else(|| state.join("runtime")),
        };
        let dir = config
            .sandbox
            .dir
            .clone()
            .unwrap_or_else(|| state.join("sandboxes"));
        // Up to the move of sandbox state to memory, the defaults were in
        // the data directory itself; containers started there before an
        // upgrade are still this data directory's.
        let legacy = Legacy {
            runtime: OciRuntime {
                binary: runtime.binary.clone(),
                root: if config.sandbox.runtime_root.is_some() {
                    runtime.root.clone()
                } else {
                    config.data_dir.join("runtime")
                },
            },
            dir: if config.sandbox.dir.is_some() {
                dir.clone()
            } else {
                config.data_dir.join("sandboxes")
            },
        };
        let legacy = (legacy.runtime.root != runtime.root || legacy.dir != dir).then_some(legacy);
        Sandboxes {
            owners: Owners::beside(&dir),
            legacy,
            runtime,
            dir,
            agent,
            images: config.data_dir.join("images"),
            disks: config.data_dir.join("disks"),
            pool: std::sync::Arc::new(crate::pool::Pool::new(config)),
            exec_inputs: std::sync::Arc::default(),
        }
    }

    /// The agent binary, or why sandboxes cannot run here.
    fn agent(&self) -> Result<PathBuf, String> {
        self.agent.clone().ok_or_else(|| {
            "sandboxes are unavailable: no corral-agent binary (set sandbox.agent, or install \
             corral-agent next to corral)"
                .to_owned()
        })
    }

    fn container_id(id: &str) -> String {
        format!("corral-{id}")
    }

    /// The image store of this host.
    pub fn images(&self) -> Result<ImageStore, String> {
        ImageStore::open(&self.images).map_err(|e| e.to_string())
    }

    /// Where sandbox `id`'s disk image is.
    fn disk_of(&self, id: &str) -> PathBuf {
        self.disks.join(format!("{id}.img"))
    }

    /// What sandboxes of `image` boot from: the host's programs, or the
    /// image's layers under a writable layer on a disk of `limits.tmp_mb`.
    fn root_of(&self, image: &str, limits: &Limits) -> Result<RootSource, String> {
        if image == HOST_IMAGE {
            return Ok(RootSource::Host);
        }
        let root = self.images()?.root(image).map_err(|e| e.to_string())?;
        Ok(RootSource::Image {
            image: ImageLayers {
                layers: root.layers,
                env: root.env,
                workdir: root.workdir,
            },
            writable: WritableLayer {
                size_mb: limits.tmp_mb,
                inodes: limits.tmp_inodes,
            },
        })
    }

    /// Starts sandbox `id` from `image` (blocking: call from a blocking
    /// task) on its disk: made empty if it has none, else the one it had.
    pub fn start(&self, id: &str, slot: i64, limits: Limits, image: &str) -> Result<(), String> {
        let agent = self.agent()?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        reachable_by_sandboxes(&self.dir)?;
        // Only the host mounts disks: no sandbox user needs to pass.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.disks)
            .map_err(|e| format!("cannot create {}: {e}", self.disks.display()))?;
        let root = self.root_of(image, &limits)?;
        // Before the container exists: no reconciler may see it unowned.
        self.owners
            .claim(id)
            .map_err(|e| format!("cannot record the sandbox's owner: {e}"))?;
        let spec = SandboxSpec {
            argv: Vec::new(),
            env: Vec::new(),
            cwd: "/tmp".into(),
            host_id_base: u32::try_from(ID_BASE + slot * ID_RANGE).map_err(|e| e.to_string())?,
            limits,
            agent: None,
        };
        Sandbox::start_on_disk(
            &self.runtime,
            &Self::container_id(id),
            &self.dir.join(id),
            &self.disk_of(id),
            spec,
            &agent,
            &root,
        )
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
    }

    /// Ends sandbox `id`'s container (blocking) and tears it down: its
    /// mounts and directory go, its disk (the writable layer of an image,
    /// and `/tmp`) stays for a later start. A paused one is thawed first so
    /// its processes can die. Also what is left of a sandbox in `error`.
    pub fn stop(&self, id: &str, paused: bool) {
        let sandbox = self.attach(id);
        if paused && let Err(error) = sandbox.resume() {
            tracing::debug!(id, %error, "resuming before a stop failed");
        }
        sandbox.teardown();
    }

    /// Starts a stopped sandbox `id` again in its uid range (blocking), on
    /// the disk it had: every file it wrote is there.
    pub fn restart(&self, id: &str, slot: i64, limits: Limits, image: &str) -> Result<(), String> {
        // Whatever a crash may have left of the old container.
        self.attach(id).teardown();
        self.start(id, slot, limits, image)
    }

    /// The running sandbox `id`.
    pub fn attach(&self, id: &str) -> Sandbox {
        Sandbox::attach_on_disk(
            &self.runtime,
            &Self::container_id(id),
            &self.dir.join(id),
            &self.disk_of(id),
        )
    }

    /// Brings the runtime and the store into agreement. At start-up
    /// (`startup`), after a crash or a restart: sandboxes whose container
    /// still runs are re-adopted (nothing else holds them); those whose
    /// container is gone become `error` (which frees their place); a start
    /// or stop cut short is finished (`starting` with a container → running,
    /// without → stopped; `stopping` → stopped); containers, directories and
    /// disks no record claims are destroyed. A sandbox in `error` keeps its
    /// disk (a stop and a start bring it back). On the timer (`!startup`), requests
    /// may be under way: sandboxes in a transitional state are left alone
    /// and unclaimed directories younger than a minute too (a create may
    /// have written its record after the records were read).
    pub async fn reconcile(
        &self,
        store: &corral_store::Store,
        now: i64,
        startup: bool,
    ) -> Result<Reconciled, String> {
        // The runtime first, then the store: a container that appears in
        // between belongs to a record read afterwards.
        let containers = self.containers().await?;
        let all = store
            .sandboxes_in(&[
                "creating", "starting", "running", "paused", "stopping", "stopped", "error",
            ])
            .await
            .map_err(|e| e.to_string())?;
        // A paused container is alive too: it keeps its processes.
        let mut alive: std::collections::HashSet<String> = containers
            .iter()
            .filter(|(_, status)| status == "running" || status == "paused")
            .map(|(id, _)| id.clone())
            .collect();
        let claimed: std::collections::HashSet<String> =
            all.iter().map(|s| Self::container_id(&s.id)).collect();
        let mut done = Reconciled::default();
        let retired = if startup {
            self.retire_legacy(&claimed).await
        } else {
            Vec::new()
        };
        done.retired = retired.len();
        // Ended just now: their records are reconciled as without a container.
        for container in &retired {
            alive.remove(container);
        }
        for record in &all {
            let has_container = alive.contains(&Self::container_id(&record.id));
            let e = |e: corral_store::StoreError| e.to_string();
            match (record.state.as_str(), has_container) {
                ("running" | "paused", true) => done.kept += 1,
                ("stopped", false) => {}
                ("running" | "paused", false) => {
                    // Its disk is kept: a stop and a start bring it back
                    // with its files.
                    self.stop_blocking(&record.id).await;
                    store
                        .sandbox_failed(
                            now,
                            &record.id,
                            "the sandbox's container ended unexpectedly",
                        )
                        .await
                        .map_err(e)?;
                    done.failed += 1;
                }
                _ if !startup => {}
                ("creating", _) => {
                    self.destroy_blocking(&record.id).await;
                    store
                        .sandbox_failed(
                            now,
                            &record.id,
                            "Corral stopped while the sandbox was being created",
                        )
                        .await
                        .map_err(e)?;
                    done.failed += 1;
                }
                ("starting", true) => {
                    store.sandbox_running(now, &record.id).await.map_err(e)?;
                    done.kept += 1;
                }
                ("starting" | "stopping" | "stopped", _) => {
                    self.stop_blocking(&record.id).await;
                    store.sandbox_stopped(now, &record.id).await.map_err(e)?;
                }
                _ => {}
            }
        }
        // A container with no record may be another process's on this
        // host: executions' one-off sandboxes have no record, and `corral
        // queue work` runs them too. On the timer only those older than
        // any execution can take are orphans; at start-up (after a crash)
        // all are.
        let age = |id: &str| {
            std::fs::metadata(self.dir.join(id.trim_start_matches("corral-")))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
        };
        let running_ids: std::collections::HashSet<String> =
            containers.iter().map(|(id, _)| id.clone()).collect();
        let mut stray: Vec<String> = containers
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| {
                id.starts_with("corral-")
                    && !claimed.contains(id)
                    && !retired.contains(id)
                    && !self.owned_by_another(id)
                    && !self.pool.holds(id.trim_start_matches("corral-"))
                    && (startup || age(id).is_none_or(|a| a >= UNOWNED_GRACE))
            })
            .collect();
        // Directories without a container or record (a crash mid-create).
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let id = Self::container_id(&entry.file_name().to_string_lossy());
                let young = age(&id).is_none_or(|age| age < Duration::from_secs(60));
                let warm = self.pool.holds(id.trim_start_matches("corral-"));
                if !claimed.contains(&id)
                    && !running_ids.contains(&id)
                    && !warm
                    && !self.owned_by_another(&id)
                    && (startup || !young)
                {
                    stray.push(id);
                }
            }
        }
        // Disks with neither a record, a directory nor a container: a
        // sandbox deleted while its disk could not be removed, or a crash
        // between removing its directory and its disk.
        if let Ok(entries) = std::fs::read_dir(&self.disks) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(id) = name
                    .strip_suffix(".img")
                    .or_else(|| name.strip_suffix(".partial"))
                else {
                    continue;
                };
                let container = Self::container_id(id);
                let young = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age < Duration::from_secs(60));
                if !claimed.contains(&container)
                    && !running_ids.contains(&container)
                    && !stray.contains(&container)
                    && !self.dir.join(id).exists()
                    && !self.pool.holds(id)
                    && !self.owned_by_another(&container)
                    && (startup || !young)
                {
                    stray.push(container);
                }
            }
        }
        for container in stray {
            let id = container.trim_start_matches("corral-").to_owned();
            self.destroy_blocking(&id).await;
            done.orphans += 1;
        }
        // Owners of sandboxes of which nothing is left (a judge's sandbox
        // destroyed where it ran).
        for id in self.owners.sandboxes_older_than(Duration::from_secs(60)) {
            let container = Self::container_id(&id);
            if !running_ids.contains(&container)
                && !self.dir.join(&id).exists()
                && !self.disk_of(&id).exists()
            {
                self.owners.release(&id);
            }
        }
        self.owners.prune_instances();
        Ok(done)
    }

    /// Every container of this host's runtime state directory, with its status.
    pub async fn containers(&self) -> Result<Vec<(String, String)>, String> {
        let runtime = self.runtime.clone();
        // No state directory yet: no container was ever made (and asking the
        // runtime would create the directory).
        if !runtime.root.exists() {
            return Ok(Vec::new());
        }
        tokio::task::spawn_blocking(move || runtime.list())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:#}"))
    }

    /// Whether container `container` (`corral-<id>`) belongs to another
    /// process on this host that still runs (a `corral queue work` beside
    /// this server): never this reconciler's orphan.
    fn owned_by_another(&self, container: &str) -> bool {
        self.owners.of(container.trim_start_matches("corral-")) == Owner::Alive
    }

    /// Ends the containers and directories under the old default paths
    /// (see [`Legacy`]): a claimed one is torn down (its disk kept for a
    /// stop and a start on today's paths), others destroyed. Only what
    /// differs from today's paths is looked at (an explicit
    /// `sandbox.runtime_root` or `sandbox.dir` stays where it was). Returns
    /// the containers (`corral-<id>`) ended.
    async fn retire_legacy(&self, claimed: &std::collections::HashSet<String>) -> Vec<String> {
        let Some(legacy) = self.legacy.clone() else {
            return Vec::new();
        };
        let today = self.clone();
        let claimed = claimed.clone();
        let retired = tokio::task::spawn_blocking(move || {
            let mut ids: Vec<String> = Vec::new();
            if legacy.runtime.root != today.runtime.root && legacy.runtime.root.is_dir() {
                match legacy.runtime.list() {
                    Ok(containers) => ids.extend(
                        containers
                            .into_iter()
                            .filter_map(|(id, _)| id.strip_prefix("corral-").map(str::to_owned)),
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "listing containers under the old default paths failed");
                    }
                }
            }
            let dirs = (legacy.dir != today.dir)
                .then(|| std::fs::read_dir(&legacy.dir).ok())
                .flatten();
            if let Some(entries) = dirs {
                for entry in entries.flatten() {
                    let id = entry.file_name().to_string_lossy().into_owned();
                    if entry.path().is_dir() && !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            let owners = Owners::beside(&legacy.dir);
            let mut retired = Vec::new();
            for id in ids {
                if owners.of(&id) == Owner::Alive {
                    continue;
                }
                let container = Self::container_id(&id);
                let sandbox = Sandbox::attach_on_disk(
                    &legacy.runtime,
                    &container,
                    &legacy.dir.join(&id),
                    &today.disk_of(&id),
                );
                if claimed.contains(&container) {
                    sandbox.teardown();
                } else {
                    sandbox.destroy();
                }
                tracing::info!(sandbox = %id, "ended a sandbox under the old default paths");
                retired.push(container);
            }
            retired
        })
        .await;
        retired.unwrap_or_else(|error| {
            tracing::error!(%error, "retiring sandboxes under the old default paths panicked");
            Vec::new()
        })
    }

    /// Destroys sandbox `id`'s container and directory off the async threads.
    pub async fn destroy_blocking(&self, id: &str) {
        let sandbox = self.attach(id);
        let _ = tokio::task::spawn_blocking(move || sandbox.destroy()).await;
        self.owners.release(id);
    }

    /// [`Sandboxes::stop`] off the async threads (thawing it first).
    pub async fn stop_blocking(&self, id: &str) {
        let (manager, id) = (self.clone(), id.to_owned());
        let _ = tokio::task::spawn_blocking(move || manager.stop(&id, true)).await;
    }

    /// Default wall time of one exec.
    pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Sandboxes {
    /// Starts a sandbox afresh, or (`again`) a stopped one on its disk.
    async fn place(&self, placement: Placement, again: bool) -> Result<(), String> {
        let manager = self.clone();
        blocking(move || {
            let Placement {
                id,
                slot,
                limits,
                image,
            } = placement;
            if again {
                manager.restart(&id, slot, limits, &image)
            } else {
                manager.start(&id, slot, limits, &image)
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Runs blocking work of the local runtime off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(work).await
}

fn join_error(error: &tokio::task::JoinError) -> RuntimeError {
    RuntimeError::Runtime {
        stderr: format!("the runtime call failed: {error}"),
    }
}

impl SandboxDriver for Sandboxes {
    fn create(&self, placement: Placement) -> DriverFuture<'_, Result<(), String>> {
        Box::pin(self.place(placement, false))
    }

    fn start(&self, placement: Placement) -> DriverFuture<'_, Result<(), String>> {
        Box::pin(self.place(placement, true))
    }

    fn stop<'a>(&'a self, id: &'a str, paused: bool) -> DriverFuture<'a, ()> {
        let (manager, id) = (self.clone(), id.to_owned());
        Box::pin(async move {
            if let Err(error) = blocking(move || manager.stop(&id, paused)).await {
                tracing::error!(%error, "stopping a sandbox panicked");
            }
        })
    }

    fn kill<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(self.destroy_blocking(id))
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        request: ExecRequest,
    ) -> DriverFuture<'a, Result<ExecResult, RuntimeError>> {
        let sandbox = self.attach(id);
        Box::pin(async move {
            blocking(move || sandbox.exec(request))
                .await
                .map_err(|e| join_error(&e))?
        })
    }

    fn attach(&self, id: &str) -> Sandbox {
        Sandboxes::attach(self, id)
    }

    fn stats<'a>(&'a self, id: &'a str) -> DriverFuture<'a, Result<SandboxStats, RuntimeError>> {
        let sandbox = self.attach(id);
        Box::pin(async move {
            blocking(move || sandbox.stats())
                .await
                .map_err(|e| join_error(&e))?
        })
    }

    fn list(&self) -> DriverFuture<'_, Result<Vec<Placed>, String>> {
        Box::pin(async move {
            let containers = self.containers().await?;
            Ok(containers
                .into_iter()
                .map(|(container, status)| Placed { container, status })
                .collect())
        })
    }
}
