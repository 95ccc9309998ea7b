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

    /// Default wall time of one exec.
    pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
}
