//! Linux isolation for Corral sandboxes.
//!
//! [`bundle`] turns a [`SandboxSpec`] into an OCI bundle (the `config.json`
//! of the OCI runtime spec, built with the `oci-spec` crate, and a root
//! directory) carrying Corral's isolation baseline; [`oci`] drives an OCI
//! runtime (`runc` by default; any runtime with the same CLI) through it.
//! No async code and no database here: the server calls this from blocking
//! tasks.
//!
//! The baseline, for every sandbox, with no opt-out: a user namespace
//! mapping sandbox root to an unprivileged host uid range; pid, mount,
//! network (loopback only), ipc, uts and cgroup namespaces; memory without
//! swap, CPU, pids, a size- and inode-capped `/tmp` (a tmpfs for one-off
//! runs; for long-lived sandboxes a directory on their own disk, see
//! [`disk`]), open files, file size and core dumps capped; the seccomp allowlist in
//! `seccomp/profile.json` (installed by runc, or, when the agent is PID 1,
//! by the agent itself from a copy compiled at its build); a minimal
//! capability set; `no_new_privs`; masked
//! `/proc` paths, read-only `/sys`, a read-only root; only the environment
//! the spec names.

pub mod bundle;
pub mod cgroup;
pub mod disk;
pub mod image;
pub mod oci;
pub mod rootfs;
pub mod sandbox;
pub mod state;

pub use bundle::{AGENT_PATH, Bundle, Limits, SandboxSpec};
pub use disk::Disk;
pub use oci::{OciRuntime, RunOutput, RuntimeError};
pub use rootfs::{ImageLayers, RootSource, WritableLayer};
pub use sandbox::Sandbox;

/// The agent binary tests run their sandboxes with, for every crate's
/// tests: `CORRAL_AGENT_BIN` (under `make test`, the static build that
/// ships), else the workspace's debug build (`cargo build -p
/// corral-agent`; `make test` builds it too). Panics, naming the command
/// to run, when neither exists: a test cannot go on without it.
pub fn test_agent_binary() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("CORRAL_AGENT_BIN") {
        return std::path::PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        std::path::PathBuf::from,
    );
    let path = target.join("debug/corral-agent");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p corral-agent` first (make test does)",
        path.display()
    );
    path
}
