//! Sandboxes on this host: records in the store, containers through
//! `corral-runtime` (blocking calls run on tokio's blocking pool).

use std::path::PathBuf;
use std::time::Duration;

use corral_runtime::{Limits, OciRuntime, Sandbox, SandboxSpec};

use crate::config::Config;

/// First host uid of sandbox ranges; slot `n` maps sandbox root to
/// `ID_BASE + n × 65 536`.
const ID_BASE: i64 = 1_000_000;
const ID_RANGE: i64 = 65_536;

/// Where and how this host runs sandboxes.
#[derive(Debug, Clone)]
pub struct Sandboxes {
    runtime: OciRuntime,
    dir: PathBuf,
    agent: Option<PathBuf>,
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
        Sandboxes {
            runtime: OciRuntime {
                binary: config.sandbox.runtime.clone(),
                root: config
                    .sandbox
                    .runtime_root
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("runtime")),
            },
            dir: config
                .sandbox
                .dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("sandboxes")),
            agent,
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

    /// Starts sandbox `id` (blocking: call from a blocking task).
    pub fn start(&self, id: &str, slot: i64, limits: Limits) -> Result<(), String> {
        let agent = self.agent()?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let spec = SandboxSpec {
            argv: Vec::new(),
            env: Vec::new(),
            cwd: "/tmp".into(),
            host_id_base: u32::try_from(ID_BASE + slot * ID_RANGE).map_err(|e| e.to_string())?,
            limits,
            agent: None,
        };
        Sandbox::start(
            &self.runtime,
            &Self::container_id(id),
            &self.dir.join(id),
            spec,
            &agent,
        )
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
    }

    /// The running sandbox `id`.
    pub fn attach(&self, id: &str) -> Sandbox {
        Sandbox::attach(&self.runtime, &Self::container_id(id), &self.dir.join(id))
    }

    /// Brings the runtime and the store into agreement, after a crash or a
    /// restart: sandboxes whose container still runs are kept (re-adopted:
    /// nothing else holds them); those whose container is gone become
    /// `error` (which frees their place) and lose their directory;
    /// containers and directories no record claims are destroyed. Returns
    /// (kept, failed, orphans removed).
    pub async fn reconcile(
        &self,
        store: &corral_store::Store,
        now: i64,
    ) -> Result<(usize, usize, usize), String> {
        let live = store.live_sandboxes().await.map_err(|e| e.to_string())?;
        let runtime = self.runtime.clone();
        // No state directory yet: no container was ever made (and asking the
        // runtime would create the directory).
        let containers = if runtime.root.exists() {
            tokio::task::spawn_blocking(move || runtime.list())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{e:#}"))?
        } else {
            Vec::new()
        };
        let running: std::collections::HashSet<String> = containers
            .iter()
            .filter(|(_, status)| status == "running")
            .map(|(id, _)| id.clone())
            .collect();
        let claimed: std::collections::HashSet<String> =
            live.iter().map(|s| Self::container_id(&s.id)).collect();
        let (mut kept, mut failed, mut orphans) = (0, 0, 0);
        for record in &live {
            if running.contains(&Self::container_id(&record.id)) {
                kept += 1;
                continue;
            }
            let sandbox = self.attach(&record.id);
            let _ = tokio::task::spawn_blocking(move || sandbox.destroy()).await;
            store
                .sandbox_failed(
                    now,
                    &record.id,
                    "the sandbox stopped while Corral was not running",
                )
                .await
                .map_err(|e| e.to_string())?;
            failed += 1;
        }
        let mut stray: Vec<String> = containers
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.starts_with("corral-") && !claimed.contains(id))
            .collect();
        // Directories without a container or record (a crash mid-create).
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let id = Self::container_id(&entry.file_name().to_string_lossy());
                if !claimed.contains(&id) && !stray.contains(&id) {
                    stray.push(id);
                }
            }
        }
        for container in stray {
            let id = container.trim_start_matches("corral-").to_owned();
            let sandbox = self.attach(&id);
            let _ = tokio::task::spawn_blocking(move || sandbox.destroy()).await;
            orphans += 1;
        }
        Ok((kept, failed, orphans))
    }

    /// Default wall time of one exec.
    pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
}
