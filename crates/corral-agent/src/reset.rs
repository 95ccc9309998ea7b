//! Reset: puts a used sandbox back into the state it started in, so the
//! judge can run its next program here instead of starting a new sandbox.
//!
//! All or nothing: either every trace of what ran is gone (every other
//! process killed, every writable filesystem back to what it held when the
//! agent started, extended attributes included, System V IPC objects
//! removed, the agent's own nice value, `oom_score_adj` and
//! `coredump_filter` back to what they were, the PID counter rewound), or
//! the reset is refused and the host discards the sandbox. It is refused where something
//! writable cannot be restored from here (an image's overlay root, a
//! volume), and while a terminal, a background process or an exec is live.
//!
//! The baseline is taken when the agent starts, before it serves anyone.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::libc;

use crate::pids::PidCounter;

/// How long the processes killed may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// What one entry of a writable filesystem was.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// `st_mode`: type and permissions.
    mode: u32,
    uid: u32,
    gid: u32,
    /// Size and modification time of a regular file, target of a link.
    content: String,
    /// Extended attributes (name, value), sorted by name.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One writable mount and what it held at start.
#[derive(Debug)]
struct Writable {
    root: PathBuf,
    dev: u64,
    /// Relative path → entry; "" is the mount's root.
    entries: BTreeMap<PathBuf, Entry>,
}

/// The state a reset returns to.
#[derive(Debug)]
pub struct Baseline {
    writable: Vec<Writable>,
    /// The PID counter, and the last PID it had handed out once the
    /// first request was being served.
    pids: Option<(PidCounter, i32)>,
    hostname: String,
    /// The agent's own scheduling and OOM settings.
    settings: Settings,
    /// Why this sandbox cannot be reset at all, found at start.
    refusal: Option<String>,
}

/// Filesystems a program can write to that reset restores (`ext4`: the
/// sandbox's disk, whose `tmp` directory is its `/tmp`).
const RESTORABLE: &[&str] = &["tmpfs", "mqueue", "ext4"];
/// Filesystems that are "rw" but hold nothing a program can leave behind
/// (processes' entries vanish with them; ptys close with their holders).
const STATELESS: &[&str] = &["proc", "devpts", "sysfs", "cgroup", "cgroup2"];

/// Takes the baseline (at start, before serving).
pub fn baseline() -> Baseline {
    let mut refusal = None;
    // First: it adopts a descriptor, which nothing opened here may take.
    let pids = PidCounter::adopt()
        .and_then(|counter| {
            // The first request's thread takes the next PID: rewound to
            // just after it, a reused sandbox hands out the PIDs a fresh
            // one hands out after its first request (the host's ping).
            let first_request = counter.last()? + 1;
            Ok((counter, first_request))
        })
        .map_err(|why| refusal = Some(format!("the PID counter cannot be rewound: {why}")))
        .ok();
    let mut writable = Vec::new();
    for (point, fstype) in writable_mounts() {
        if STATELESS.contains(&fstype.as_str()) {
            continue;
        }
        // A device node bound in (`/dev/null`): a file, not a place to
        // leave files in, and the node itself belongs to the host.
        if fstype == "devtmpfs" && !point.is_dir() {
            continue;
        }
        if !RESTORABLE.contains(&fstype.as_str()) {
            refusal.get_or_insert(format!(
                "{} is a writable {fstype} filesystem, which a reset cannot restore",
                point.display()
            ));
            continue;
        }
        match std::fs::symlink_metadata(&point) {
            Ok(meta) => {
                let mut entries = BTreeMap::new();
                walk(&point, Path::new(""), meta.dev(), &mut entries);
                writable.push(Writable {
                    root: point,
                    dev: meta.dev(),
                    entries,
                });
            }
            Err(error) => {
                refusal.get_or_insert(format!("{}: {error}", point.display()));
            }
        }
    }
    Baseline {
        writable,
        pids,
        hostname: hostname(),
        settings: Settings::now(),
        refusal,
    }
}

/// Settings of the agent (PID 1) that a program running with its uid can
/// change through `/proc/1` or `setpriority`, and that would otherwise
/// reach the next run: its nice value, `oom_score_adj` and
/// `coredump_filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    nice: i32,
    oom_score_adj: i32,
    coredump_filter: String,
}

impl Settings {
    fn now() -> Settings {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/self/{name}"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        Settings {
            nice: nice(),
            oom_score_adj: read("oom_score_adj").parse().unwrap_or(0),
            coredump_filter: read("coredump_filter"),
        }
    }

    /// Puts them back; an error where the kernel refuses (raising its
    /// priority back needs a privilege it may not have): the reset is then
    /// refused and the sandbox discarded.
    fn restore(&self) -> Result<(), String> {
        let now = Settings::now();
        if now.nice != self.nice {
            // SAFETY: setpriority on this process has no memory effects.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.nice) };
            if rc != 0 {
                return Err(format!(
                    "the agent's nice value was changed to {} and cannot be restored: {}",
                    now.nice,
                    std::io::Error::last_os_error()
                ));
            }
        }
        // Only ever lowered back: a value below the baseline was set by
        // the host (a program cannot go below the floor the host's write
        // set), and making the agent a likelier OOM victim is what a
        // program could do.
        if now.oom_score_adj > self.oom_score_adj {
            std::fs::write("/proc/self/oom_score_adj", self.oom_score_adj.to_string()).map_err(
                |e| {
                    format!(
                        "restoring the agent's oom_score_adj (was {}): {e}",
                        now.oom_score_adj
                    )
                },
            )?;
        }
        if now.coredump_filter != self.coredump_filter {
            // Read back as hex digits with leading zeros, which the kernel
            // would parse as octal: written back with `0x`.
            let hex = format!("0x{}", self.coredump_filter);
            std::fs::write("/proc/self/coredump_filter", hex).map_err(|e| {
                format!(
                    "restoring the agent's coredump_filter (was {}): {e}",
                    now.coredump_filter
                )
            })?;
        }
        let after = Settings::now();
        if after.nice != self.nice
            || after.oom_score_adj > self.oom_score_adj
            || after.coredump_filter != self.coredump_filter
        {
            return Err(format!(
                "the agent's settings are {after:?} after restoring {self:?}"
            ));
        }
        Ok(())
    }
}

/// This process's nice value.
fn nice() -> i32 {
    // SAFETY: getpriority has no memory effects; -1 is also a valid value,
    // and nothing here can fail for the calling process.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Resets the sandbox to `baseline`. `busy` says why it must not now.
pub fn reset(baseline: &Baseline, busy: Option<String>) -> Result<(), String> {
    if let Some(why) = &baseline.refusal {
        return Err(why.clone());
    }
    if let Some(why) = busy {
        return Err(why);
    }
    kill_everyone_else()?;
    remove_ipc()?;
    for mount in &baseline.writable {
        restore(mount)?;
    }
    baseline.settings.restore()?;
    // Everyone else is gone, their PIDs free: the next run's come out as
    // this sandbox's first run's did.
    if let Some((counter, last)) = &baseline.pids {
        counter.rewind(*last)?;
    }
    if hostname() != baseline.hostname {
        return Err("the hostname changed".to_owned());
    }
    Ok(())
}

/// `SIGKILL` to every process but the agent (PID 1); `false` when there
/// was nobody else.
pub fn kill_all_others() -> bool {
    // SAFETY: kill(2) with pid -1 and a valid signal has no memory effects;
    // from PID 1 it reaches every other process of the namespace.
    unsafe { libc::kill(-1, libc::SIGKILL) == 0 }
}

/// `SIGKILL` to every process but the agent (PID 1), then waits until the
/// reaper has reaped them all.
fn kill_everyone_else() -> Result<(), String> {
    if !kill_all_others() {
        let error = std::io::Error::last_os_error();
        // ESRCH: there was nobody else.
        if error.raw_os_error() != Some(libc::ESRCH) {
            return Err(format!("killing the sandbox's processes: {error}"));
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let others = other_processes();
        if others == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{others} processes did not end after SIGKILL"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Processes in the namespace other than PID 1 (zombies count: the reaper
/// has not reaped them yet).
fn other_processes() -> usize {
    std::fs::read_dir("/proc").map_or(usize::MAX, |dir| {
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != 1)
            .count()
    })
}

/// Removes every System V shared memory segment, semaphore set and
/// message queue of the sandbox's IPC namespace.
fn remove_ipc() -> Result<(), String> {
    for (table, kind) in [("shm", 0), ("sem", 1), ("msg", 2)] {
        let path = format!("/proc/sysvipc/{table}");
        let ids = ipc_ids(&path);
        for id in ids {
            let remove = || {
                // SAFETY: IPC_RMID takes no buffer (a null pointer is what
                // it expects); the calls have no other memory effects.
                let removed = unsafe {
                    match kind {
                        0 => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                        1 => libc::semctl(id, 0, libc::IPC_RMID),
                        _ => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                    }
                };
                if removed == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            // Only the owner (or CAP_SYS_ADMIN, which the agent lacks)
            // may remove one: what a judge run made is the run user's.
            let removed = match remove() {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    crate::privileges::as_run_user_on_this_thread(remove)?
                }
                other => other,
            };
            if let Err(error) = removed
                && error.raw_os_error() != Some(libc::EINVAL)
                && error.raw_os_error() != Some(libc::EIDRM)
            {
                return Err(format!("removing IPC {table} {id}: {error}"));
            }
        }
        // A shared memory segment still attached is only marked; nobody
        // is left to hold one, so every table must now be empty.
        if !ipc_ids(&path).is_empty() {
            return Err(format!("System V IPC {table} objects remain"));
        }
    }
    Ok(())
}

/// The ids in a `/proc/sysvipc` table (second column; first line is a header).
fn ipc_ids(path: &str) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// Brings one mount back to its baseline: removes what was not there,
/// restores owner and mode of what was, refuses what cannot be restored.
fn restore(mount: &Writable) -> Result<(), String> {
    let mut now = BTreeMap::new();
    walk(&mount.root, Path::new(""), mount.dev, &mut now);
    // Deepest first would not matter: a whole new directory goes at once.
    for relative in now.keys() {
        if mount.entries.contains_key(relative) {
            continue;
        }
        // Inside a directory already removed.
        if relative
            .ancestors()
            .skip(1)
            .any(|a| !a.as_os_str().is_empty() && !mount.entries.contains_key(a))
        {
            continue;
        }
        let path = mount.root.join(relative);
        let removed = if now[relative].mode & libc::S_IFMT == libc::S_IFDIR {
            // Symlink-safe (it never follows a link out of the tree).
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    for (relative, was) in &mount.entries {
        let path = mount.root.join(relative);
        let Some(is) = now.get(relative) else {
            return Err(format!("{} is gone", path.display()));
        };
        if is == was {
            continue;
        }
        let same_kind = is.mode & libc::S_IFMT == was.mode & libc::S_IFMT;
        if !same_kind || is.content != was.content || was.mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(format!("{} changed", path.display()));
        }
        if is.xattrs != was.xattrs {
            restore_xattrs(&path, &was.xattrs, &is.xattrs)?;
        }
        std::os::unix::fs::lchown(&path, Some(was.uid), Some(was.gid))
            .map_err(|e| format!("restoring the owner of {}: {e}", path.display()))?;
        std::fs::set_permissions(
            &path,
            std::os::unix::fs::PermissionsExt::from_mode(was.mode & 0o7777),
        )
        .map_err(|e| format!("restoring the mode of {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Records every entry under `root/relative` on device `dev` (not crossing
/// into other mounts: their mount points are recorded, not entered).
fn walk(root: &Path, relative: &Path, dev: u64, into: &mut BTreeMap<PathBuf, Entry>) {
    let path = root.join(relative);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return;
    };
    let kind = meta.mode() & libc::S_IFMT;
    let content = match kind {
        libc::S_IFREG => format!("{} {}.{}", meta.size(), meta.mtime(), meta.mtime_nsec()),
        libc::S_IFLNK => std::fs::read_link(&path)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    };
    into.insert(
        relative.to_path_buf(),
        Entry {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            content,
            xattrs: xattrs(&path),
        },
    );
    if kind != libc::S_IFDIR || meta.dev() != dev {
        return;
    }
    let Ok(dir) = std::fs::read_dir(&path) else {
        return;
    };
    for entry in dir.flatten() {
        walk(root, &relative.join(entry.file_name()), dev, into);
    }
}

/// The extended attributes of `path` itself (a link is not followed),
/// sorted by name; none where it has none or cannot have any.
fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: llistxattr writes at most `names.len()` bytes into `names`;
    // `c_path` is a NUL-terminated string that outlives the call.
    let len = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let Ok(len) = usize::try_from(len) else {
        return Vec::new();
    };
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = names[..len]
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let mut value = vec![0u8; 64 * 1024];
            let mut c_name = name.to_vec();
            c_name.push(0);
            // SAFETY: as above; `c_name` is NUL-terminated, and lgetxattr
            // writes at most `value.len()` bytes into `value`.
            let got = unsafe {
                libc::lgetxattr(
                    c_path.as_ptr(),
                    c_name.as_ptr().cast(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            value.truncate(usize::try_from(got).unwrap_or(0));
            (name.to_vec(), value)
        })
        .collect();
    all.sort();
    all
}

/// Removes the extended attributes of `path` that were not there and
/// puts back the values of those that were.
fn restore_xattrs(
    path: &Path,
    was: &[(Vec<u8>, Vec<u8>)],
    is: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} has a NUL byte", path.display()))?;
    let c = |name: &[u8]| {
        let mut c_name = name.to_vec();
        c_name.push(0);
        c_name
    };
    let failed = |what: &str, name: &[u8]| {
        format!(
            "{what} the extended attribute {} of {}: {}",
            String::from_utf8_lossy(name),
            path.display(),
            std::io::Error::last_os_error()
        )
    };
    for (name, _) in is {
        if !was.iter().any(|(n, _)| n == name) {
            let c_name = c(name);
            // SAFETY: both pointers are NUL-terminated strings that outlive the call.
            if unsafe { libc::lremovexattr(c_path.as_ptr(), c_name.as_ptr().cast()) } != 0 {
                return Err(failed("removing", name));
            }
        }
    }
    for (name, value) in was {
        if !is.iter().any(|(n, v)| n == name && v == value) {
            let c_name = c(name);
            // SAFETY: NUL-terminated path and name; lsetxattr reads
            // `value.len()` bytes of `value`.
            let rc = unsafe {
                libc::lsetxattr(
                    c_path.as_ptr(),
                    c_name.as_ptr().cast(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if rc != 0 {
                return Err(failed("restoring", name));
            }
        }
    }
    Ok(())
}

/// Mount points whose mount and superblock are both read-write, with
/// their filesystem type (from `/proc/self/mountinfo`).
fn writable_mounts() -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root point options [optional…] - type source super
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let point = unescape(left.get(4)?);
            let options = left.get(5)?;
            let fstype = right.first()?;
            let super_options = right.get(2).copied().unwrap_or("");
            let rw = |opts: &str| opts.split(',').any(|o| o == "rw");
            (rw(options) && rw(super_options)).then(|| (PathBuf::from(point), (*fstype).to_owned()))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = field.get(i + 1..i + 4)
            && let Ok(value) = u8::from_str_radix(octal, 8)
        {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The UTS namespace's host name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/odd\9"), r"/odd\9");
    }

    #[test]
    fn a_directory_is_restored_to_its_baseline() {
        let dir = std::env::temp_dir().join(format!("corral-reset-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kept")).unwrap();
        std::fs::write(dir.join("kept/file"), b"x").unwrap();
        let dev = std::fs::metadata(&dir).unwrap().dev();
        let mut entries = BTreeMap::new();
        walk(&dir, Path::new(""), dev, &mut entries);
        let mount = Writable {
            root: dir.clone(),
            dev,
            entries,
        };
        std::fs::create_dir_all(dir.join("new/deep")).unwrap();
        std::fs::write(dir.join("new/deep/f"), b"y").unwrap();
        std::fs::write(dir.join("kept/extra"), b"z").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        std::fs::set_permissions(
            dir.join("kept"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        // An extended attribute left on a directory of the baseline.
        let c_kept = std::ffi::CString::new(dir.join("kept").to_str().unwrap()).unwrap();
        // SAFETY: NUL-terminated path and name, a 1-byte value.
        let set = unsafe {
            libc::lsetxattr(
                c_kept.as_ptr(),
                c"user.left".as_ptr(),
                b"x".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
        assert_eq!(xattrs(&dir.join("kept")).len(), 1);
        restore(&mount).unwrap();
        assert!(xattrs(&dir.join("kept")).is_empty());
        let mut after = BTreeMap::new();
        walk(&dir, Path::new(""), dev, &mut after);
        assert_eq!(after, mount.entries);
        assert!(std::fs::symlink_metadata("/etc/passwd").is_ok());
        // A file of the baseline that changed cannot be restored: refused.
        std::fs::write(dir.join("kept/file"), b"changed!").unwrap();
        assert!(restore(&mount).unwrap_err().contains("changed"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
