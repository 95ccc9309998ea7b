//! OCI bundles: `config.json` plus a root directory, for the `host` image
//! (read-only binds of the host's programs and libraries; nothing to
//! download) or an OCI image (an overlay of its layers, see
//! [`crate::rootfs`]).

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxIdMappingBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::oci::RuntimeError;
use crate::rootfs::{ImageLayers, RootSource};

/// The seccomp allowlist every sandbox runs under (see `seccomp/generate.py`;
/// the agent's build compiles this same file for agent sandboxes).
pub const SECCOMP_PROFILE: &str = include_str!("../seccomp/profile.json");

/// Host directories bound read-only into the `host` image.
const HOST_DIRS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/alternatives",
];
/// Host files of `/etc` that programs need and that hold no secrets.
const HOST_ETC_FILES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "nsswitch.conf",
    "localtime",
    "mime.types",
    "protocols",
    "services",
];
/// `/proc` paths hidden from the sandbox (bound over with /dev/null or made read-only).
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/sysrq-trigger",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"];

/// Resource limits of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory, MiB (swap is never allowed).
    pub memory_mb: u64,
    /// Processes and threads.
    pub pids: i64,
    /// CPU, thousandths of a core.
    pub cpu_millicores: u64,
    /// Size of the writable `/tmp`, MiB.
    pub tmp_mb: u64,
    /// Files and directories in `/tmp`.
    pub tmp_inodes: u64,
    /// Open files per process.
    pub open_files: u64,
    /// Largest file a process may write, MiB.
    pub file_size_mb: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_mb: 256,
            pids: 128,
            cpu_millicores: 1000,
            tmp_mb: 64,
            tmp_inodes: 4096,
            open_files: 256,
            file_size_mb: 64,
        }
    }
}

/// What to run, and under which limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// The whole environment (nothing of the host's crosses in).
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: String,
    /// First host uid (and gid) of the sandbox's range; sandbox root maps here.
    pub host_id_base: u32,
    /// Resource limits.
    pub limits: Limits,
    /// The agent binary to bind read-only at [`AGENT_PATH`] (for sandboxes
    /// whose PID 1 is the agent).
    pub agent: Option<PathBuf>,
}

/// Where the agent binary appears inside a sandbox.
pub const AGENT_PATH: &str = "/.corral/agent";

/// A bundle on disk: `dir/config.json` and `dir/rootfs`.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory, as the OCI runtime's `--bundle` wants it.
    pub dir: PathBuf,
}

/// How many ids the sandbox's user namespace maps.
const ID_RANGE: u32 = crate::rootfs::ID_RANGE;

impl Bundle {
    /// Writes a bundle for `spec` with the host image into `dir` (created;
    /// must not exist yet, so nothing of an older sandbox is reused).
    pub fn create(dir: &Path, spec: &SandboxSpec) -> Result<Bundle, RuntimeError> {
        Bundle::create_with_root(dir, spec, &RootSource::Host)
    }

    /// Writes a bundle for `spec` whose root is `root` into `dir` (created;
    /// must not exist yet). For an image, `dir/rootfs` is left an empty
    /// directory: the overlay is mounted there ([`crate::rootfs::mount`])
    /// before the runtime starts the sandbox, and the runtime itself creates
    /// the mount points it needs inside it. The host writes nothing into
    /// the image root.
    pub fn create_with_root(
        dir: &Path,
        spec: &SandboxSpec,
        root: &RootSource,
    ) -> Result<Bundle, RuntimeError> {
        Bundle::create_with_tmp(dir, spec, root, None)
    }

    /// [`Bundle::create_with_root`] with the sandbox's `/tmp` bound from
    /// `tmp` (a host directory on the sandbox's disk, owned by sandbox
    /// root, mode 1777) instead of a tmpfs of `spec.limits.tmp_mb`.
    pub fn create_with_tmp(
        dir: &Path,
        spec: &SandboxSpec,
        root: &RootSource,
        tmp: Option<&Path>,
    ) -> Result<Bundle, RuntimeError> {
        match root {
            RootSource::Host => Bundle::create_host(dir, spec, tmp),
            RootSource::Image { image, .. } => Bundle::create_image(dir, spec, image, tmp),
        }
    }

    fn create_image(
        dir: &Path,
        spec: &SandboxSpec,
        image: &ImageLayers,
        tmp: Option<&Path>,
    ) -> Result<Bundle, RuntimeError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| RuntimeError::Bundle { what, source }
        };
        fs::create_dir(dir).map_err(io("create the bundle directory"))?;
        fs::create_dir(dir.join("rootfs")).map_err(io("create the root mount point"))?;
        let mut mounts = default_mounts(&spec.limits, tmp);
        // Our own names only where the image has none; bound from the
        // bundle directory, so nothing is written into the image's layers.
        for (name, content) in [
            ("hosts", "127.0.0.1 localhost\n::1 localhost\n"),
            ("hostname", "sandbox\n"),
        ] {
            let inside = format!("/etc/{name}");
            if !image.has(&inside) {
                let source = dir.join(format!("etc-{name}"));
                fs::write(&source, content).map_err(io("write an /etc file"))?;
                mounts.push(read_only_bind(&source.to_string_lossy(), &inside));
            }
        }
        if let Some(agent) = &spec.agent {
            mounts.push(read_only_bind(&agent.to_string_lossy(), AGENT_PATH));
        }
        // The image's environment, with the spec's own entries over it.
        let mut env = image.env_pairs();
        env.retain(|(key, _)| !spec.env.iter().any(|(k, _)| k == key));
        env.extend(spec.env.iter().cloned());
        let config = build_spec(spec, mounts, &env, false)?;
        write_config(dir, &config)
    }

    fn create_host(
        dir: &Path,
        spec: &SandboxSpec,
        tmp: Option<&Path>,
    ) -> Result<Bundle, RuntimeError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| RuntimeError::Bundle { what, source }
        };
        fs::create_dir(dir).map_err(io("create the bundle directory"))?;
        let rootfs = dir.join("rootfs");
        for sub in ["", "proc", "dev", "sys", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(sub)).map_err(io("create the root directory"))?;
        }
        // `/tmp` is everyone's scratch space, in the image as under the
        // disk or tmpfs mounted on it: sticky and writable by all (made
        // 755 by the umask otherwise).
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
                .map_err(io("set the mode of /tmp"))?;
        }
        let mut mounts = default_mounts(&spec.limits, tmp);
        for host in HOST_DIRS {
            let path = Path::new(host);
            let Ok(meta) = fs::symlink_metadata(path) else {
                continue;
            };
            let inside = rootfs.join(host.trim_start_matches('/'));
            if meta.file_type().is_symlink() {
                // Merged-/usr hosts: /bin -> usr/bin; keep the link, it resolves inside.
                let target = fs::read_link(path).map_err(io("read a host symlink"))?;
                std::os::unix::fs::symlink(target, &inside).map_err(io("link a host directory"))?;
            } else {
                fs::create_dir_all(&inside).map_err(io("create a mount point"))?;
                mounts.push(read_only_bind(host, host));
            }
        }
        // A minimal /etc: our own users (no host accounts), plus harmless host files.
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
            .map_err(io("write /etc/passwd"))?;
        fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
            .map_err(io("write /etc/group"))?;
        fs::write(
            rootfs.join("etc/hosts"),
            "127.0.0.1 localhost\n::1 localhost\n",
        )
        .map_err(io("write /etc/hosts"))?;
        fs::write(rootfs.join("etc/hostname"), "sandbox\n").map_err(io("write /etc/hostname"))?;
        for file in HOST_ETC_FILES {
            let host = Path::new("/etc").join(file);
            if host.is_file() {
                fs::write(rootfs.join("etc").join(file), b"")
                    .map_err(io("create a mount point"))?;
                let path = host.to_string_lossy().into_owned();
                mounts.push(read_only_bind(&path, &path));
            }
        }
        if let Some(agent) = &spec.agent {
            fs::create_dir_all(rootfs.join(".corral")).map_err(io("create /.corral"))?;
            fs::write(rootfs.join(".corral/agent"), b"")
                .map_err(io("create the agent mount point"))?;
            mounts.push(read_only_bind(&agent.to_string_lossy(), AGENT_PATH));
        }
        let config = build_spec(spec, mounts, &spec.env, true)?;
        write_config(dir, &config)
    }
}

fn write_config(dir: &Path, config: &Spec) -> Result<Bundle, RuntimeError> {
    let json = serde_json::to_vec_pretty(config)
        .map_err(|e| RuntimeError::Spec(format!("serializing config.json: {e}")))?;
    fs::write(dir.join("config.json"), json).map_err(|source| RuntimeError::Bundle {
        what: "write config.json".into(),
        source,
    })?;
    Ok(Bundle {
        dir: dir.to_path_buf(),
    })
}

fn read_only_bind(source: &str, destination: &str) -> Mount {
    mount(
        destination,
        "bind",
        source,
        &["rbind", "ro", "nosuid", "nodev"],
    )
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()
        .unwrap_or_default()
}

/// The mounts every sandbox has; `/tmp` is a bind of `tmp` when given (a
/// directory on the sandbox's disk), else a capped tmpfs.
fn default_mounts(limits: &Limits, tmp: Option<&Path>) -> Vec<Mount> {
    // tmpfs reads 0 as "no limit": a cap is never below 1.
    let tmp_size = format!("size={}m", limits.tmp_mb.max(1));
    let tmp_inodes = format!("nr_inodes={}", limits.tmp_inodes.max(1));
    let tmp = match tmp {
        Some(dir) => mount(
            "/tmp",
            "bind",
            &dir.to_string_lossy(),
            &["rbind", "rw", "nosuid", "nodev"],
        ),
        None => mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &tmp_size, &tmp_inodes],
        ),
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=16m"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        // The sandbox's own sysfs (its network namespace shows only `lo`), read-only.
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        tmp,
    ]
}

/// The runtime spec: `env` is the process's whole environment; the root is
/// read-only when `readonly_root` (the `host` image; an image root is
/// writable, its writable layer capped).
fn build_spec(
    spec: &SandboxSpec,
    mounts: Vec<Mount>,
    env: &[(String, String)],
    readonly_root: bool,
) -> Result<Spec, RuntimeError> {
    let err = |e: oci_spec::OciSpecError| RuntimeError::Spec(e.to_string());
    let caps: Vec<Capability> = vec![
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fowner,
        Capability::Fsetid,
        Capability::Kill,
        Capability::Setgid,
        Capability::Setuid,
        Capability::NetBindService,
    ];
    let mut caps: std::collections::HashSet<Capability> = caps.into_iter().collect();
    // Only for the agent as PID 1, to rewind the PID counter on reset; it
    // drops it from every program it starts (corral-agent's
    // privileges.rs). A program run directly as PID 1 never gets it.
    if spec.agent.is_some() {
        caps.insert(Capability::CheckpointRestore);
    }
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(err)?;
    let rlimit = |typ, value: u64| {
        PosixRlimitBuilder::default()
            .typ(typ)
            .hard(value)
            .soft(value)
            .build()
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(err)?,
        )
        .args(spec.argv.clone())
        .env(
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(spec.cwd.clone())
        .capabilities(capabilities)
        .no_new_privileges(true)
        .rlimits(vec![
            rlimit(PosixRlimitType::RlimitNofile, spec.limits.open_files).map_err(err)?,
            rlimit(
                PosixRlimitType::RlimitFsize,
                spec.limits.file_size_mb * 1024 * 1024,
            )
            .map_err(err)?,
            rlimit(PosixRlimitType::RlimitCore, 0).map_err(err)?,
        ])
        .build()
        .map_err(err)?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::User,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()
    .map_err(err)?;
    let id_map = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(spec.host_id_base)
        .size(ID_RANGE)
        .build()
        .map_err(err)?;
    let memory = i64::try_from(spec.limits.memory_mb * 1024 * 1024).unwrap_or(i64::MAX);
    let period: u64 = 100_000;
    let resources = LinuxResourcesBuilder::default()
        // Swap limit equal to the memory limit: no swap at all.
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory)
                .swap(memory)
                .build()
                .map_err(err)?,
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(spec.limits.pids)
                .build()
                .map_err(err)?,
        )
        .cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota(
                    i64::try_from(spec.limits.cpu_millicores * period / 1000).unwrap_or(i64::MAX),
                )
                .build()
                .map_err(err)?,
        )
        .build()
        .map_err(err)?;
    let mut linux = LinuxBuilder::default();
    // The agent as PID 1 installs this same profile on itself, compiled at
    // its build, before it runs anything (corral-agent's seccomp.rs): runc
    // compiling it on every create cost about 5 ms of CPU per sandbox.
    // Any other PID 1 (a program run directly) gets it from the runtime.
    if spec.agent.is_none() {
        let seccomp: LinuxSeccomp = serde_json::from_str(SECCOMP_PROFILE)
            .map_err(|e| RuntimeError::Spec(format!("seccomp/profile.json: {e}")))?;
        linux = linux.seccomp(seccomp);
    }
    let linux = linux
        .namespaces(namespaces)
        .uid_mappings(vec![id_map])
        .gid_mappings(vec![id_map])
        .resources(resources)
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(err)?;
    SpecBuilder::default()
        .version("1.0.2")
        .hostname("sandbox")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(readonly_root)
                .build()
                .map_err(err)?,
        )
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed step fails the test"
    )]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_host_images_tmp_is_sticky_and_writable_by_all() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SandboxSpec {
            argv: vec!["/bin/true".into()],
            env: Vec::new(),
            cwd: "/tmp".into(),
            host_id_base: 1_000_000,
            limits: Limits::default(),
            agent: None,
        };
        let bundle = Bundle::create(&dir.path().join("bundle"), &spec).unwrap();
        let mode = fs::metadata(bundle.dir.join("rootfs/tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777, "{mode:o}");
    }
}
