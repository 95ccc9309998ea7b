//! A sandbox's own cgroup as the host reads it: the CPU time and memory of
//! every process that ran in the sandbox, not only of the ones a parent
//! waited for, and a way to end them all but the agent.
//!
//! `wait4` counts a program and the children it waited for; a child that
//! is forked and never waited for (or that left with `setsid`) escapes it.
//! The cgroup's counters do not: the kernel charges every task of the
//! cgroup. The judge reads them around each run ([`Sandbox::exec_measured`]).
//!
//! Where the cgroup is: the OCI runtime's state file
//! (`<root>/<id>/state.json`, host-only) names the cgroup of each
//! controller and the agent's host PID. Both layouts are read: cgroup v1
//! (`cpuacct.usage`, `memory.max_usage_in_bytes`, `memory.oom_control`;
//! what runc uses on a hybrid host) and v2 (`cpu.stat`, `memory.peak`,
//! `memory.events`).
//!
//! [`Sandbox::exec_measured`]: crate::Sandbox::exec_measured

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::RuntimeError;

/// How often the CPU watchdog of a measured run reads the counter, ms.
pub const WATCH_INTERVAL_MS: u64 = 10;

/// The cgroup files of one sandbox.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// cgroup v1 `cpuacct` directory, or the v2 directory.
    cpu: PathBuf,
    /// cgroup v1 `memory` directory, or the v2 directory.
    memory: PathBuf,
    /// Where `cgroup.procs` is (the cpu one).
    procs: PathBuf,
    v2: bool,
    /// The agent's PID on the host.
    agent_pid: i32,
}

fn unreadable(what: &str, path: &Path, error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Runtime {
        stderr: format!("reading the sandbox's {what} ({}): {error}", path.display()),
    }
}

impl Cgroup {
    /// The cgroup of sandbox `id`, from the runtime's state under `root`.
    pub fn of(root: &Path, id: &str) -> Result<Cgroup, RuntimeError> {
        let path = root.join(id).join("state.json");
        let text = std::fs::read(&path).map_err(|e| unreadable("runtime state", &path, e))?;
        let state: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| unreadable("runtime state", &path, e))?;
        let agent_pid = state["init_process_pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| unreadable("runtime state", &path, "no init_process_pid"))?;
        let paths = &state["cgroup_paths"];
        let dir = |key: &str| paths[key].as_str().map(PathBuf::from);
        let (cpu, memory, v2) = match (dir("cpuacct"), dir("memory"), dir("")) {
            (Some(cpu), Some(memory), _) => (cpu, memory, false),
            (_, _, Some(unified)) => (unified.clone(), unified, true),
            _ => {
                return Err(unreadable(
                    "runtime state",
                    &path,
                    "no cpuacct and memory cgroups, nor a unified one",
                ));
            }
        };
        Ok(Cgroup {
            procs: cpu.join("cgroup.procs"),
            cpu,
            memory,
            v2,
            agent_pid,
        })
    }

    /// CPU time of every task that ran in the cgroup, ns.
    pub fn cpu_ns(&self) -> Result<u64, RuntimeError> {
        if self.v2 {
            let path = self.cpu.join("cpu.stat");
            let text =
                std::fs::read_to_string(&path).map_err(|e| unreadable("CPU time", &path, e))?;
            field(&text, "usage_usec")
                .map(|us| us * 1000)
                .ok_or_else(|| unreadable("CPU time", &path, "no usage_usec"))
        } else {
            read_number(&self.cpu.join("cpuacct.usage"), "CPU time")
        }
    }

    /// Memory charged to the cgroup now, bytes.
    pub fn memory_bytes(&self) -> Result<u64, RuntimeError> {
        let file = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        read_number(&self.memory.join(file), "memory use")
    }

    /// Starts a new peak: the highest memory charged from now on.
    pub fn watch_peak(&self) -> Result<PeakWatch, RuntimeError> {
        if self.v2 {
            // v2 resets the peak for the descriptor that writes to it, and
            // that descriptor reads the new peak.
            let path = self.memory.join("memory.peak");
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| unreadable("memory peak", &path, e))?;
            file.write_all(b"reset")
                .map_err(|e| unreadable("memory peak", &path, e))?;
            Ok(PeakWatch::V2(file, path))
        } else {
            let path = self.memory.join("memory.max_usage_in_bytes");
            std::fs::write(&path, b"0").map_err(|e| unreadable("memory peak", &path, e))?;
            Ok(PeakWatch::V1(path))
        }
    }

    /// How many times the memory limit's OOM killer has killed in it.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.memory.join(file))
            .ok()
            .and_then(|text| field(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// `SIGKILL` to every process of the cgroup but the agent; how many.
    /// The PIDs are the host's, read from the cgroup itself, so only the
    /// sandbox's processes are reached (a PID that ended and was reused
    /// between the read and the kill would be a new process of this same
    /// cgroup, which the pids limit keeps small; the agent is never one).
    pub fn kill_all_but_agent(&self) -> usize {
        let Ok(text) = std::fs::read_to_string(&self.procs) else {
            return 0;
        };
        text.lines()
            .filter_map(|line| line.trim().parse::<i32>().ok())
            .filter(|pid| *pid != self.agent_pid && *pid > 1)
            .filter(|pid| {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .is_ok()
            })
            .count()
    }
}

/// A run measured by its sandbox's cgroup ([`crate::Sandbox::exec_measured`]).
#[derive(Debug, Clone)]
pub struct Measured {
    /// What the agent reported (its `cpu_ms` and `memory_kb` are `wait4`'s).
    pub result: corral_types::agent::ExecResult,
    /// CPU time of everything in the sandbox during the run, ms (the
    /// agent's share of serving it included).
    pub cpu_ms: u64,
    /// How far the sandbox's memory rose above where it was when the run
    /// began, at its highest, KiB.
    pub memory_growth_kb: u64,
    /// Whether the memory limit's OOM killer killed something during it.
    pub oom_killed: bool,
    /// Whether the CPU limit was reached (everything but the agent was
    /// then killed).
    pub cpu_limit_hit: bool,
}

/// The peak memory of a cgroup since [`Cgroup::watch_peak`].
#[derive(Debug)]
pub enum PeakWatch {
    /// v1: `memory.max_usage_in_bytes`, reset for everyone.
    V1(PathBuf),
    /// v2: `memory.peak`, reset for this descriptor.
    V2(std::fs::File, PathBuf),
}

impl PeakWatch {
    /// The highest memory charged since the watch began, bytes.
    pub fn peak(&mut self) -> Result<u64, RuntimeError> {
        match self {
            PeakWatch::V1(path) => read_number(path, "memory peak"),
            PeakWatch::V2(file, path) => {
                let mut text = String::new();
                file.rewind()
                    .and_then(|()| file.read_to_string(&mut text))
                    .map_err(|e| unreadable("memory peak", path, e))?;
                text.trim()
                    .parse()
                    .map_err(|e| unreadable("memory peak", path, e))
            }
        }
    }
}

fn read_number(path: &Path, what: &str) -> Result<u64, RuntimeError> {
    std::fs::read_to_string(path)
        .map_err(|e| unreadable(what, path, e))?
        .trim()
        .parse()
        .map_err(|e| unreadable(what, path, e))
}

/// The value of `name` in a flat keyed file (`name value` lines).
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn keyed_files_are_read_by_name() {
        let stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(field(stat, "usage_usec"), Some(1500));
        assert_eq!(field(stat, "system_usec"), Some(500));
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(field(oom, "oom_kill"), Some(3));
        assert_eq!(field(oom, "nothing"), None);
    }
}
