//! Who the agent's programs run as, and what of the agent's privilege
//! none of them gets.
//!
//! Whatever the agent starts would otherwise run with the agent's own uid
//! (0 in the sandbox's user namespace) and its capabilities, and could
//! write the agent's `/proc/1/oom_score_adj` (making the agent the OOM
//! victim while the run lasts), its `coredump_filter`, or anything else a
//! process may change about a process of its own uid. A judge run (an exec
//! with `sole`) therefore runs as [`RUN_UID`]:[`RUN_GID`], with no
//! supplementary groups and, through the uid change, no capabilities: the
//! kernel refuses those changes by permission, independently of the PID 1
//! seccomp filter. Everything else (a user's own sandbox, its terminals
//! and background processes) keeps running as root, as users expect.
//!
//! The files the host wrote for the run (the work directory, the source)
//! are the agent's; [`hand_over`] gives them to the run user before the
//! program starts, so a compiler can write next to the source.
//!
//! The agent alone holds `CAP_CHECKPOINT_RESTORE`, to rewind the sandbox's
//! PID counter on reset (see `pids.rs`); a root program loses it between
//! fork and exec ([`drop_agent_only_capabilities`]) and, with
//! `no_new_privs`, cannot get it back from the bounding set, which the
//! agent cannot shrink (that needs `CAP_SETPCAP`).

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{AtFlags, OFlag};
use nix::libc;
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{Gid, Uid, fchownat};

/// The judge's programs' uid and gid inside the sandbox (mapped, like every
/// id below `ID_RANGE`, to a host id of the sandbox's own range).
pub const RUN_UID: u32 = 1000;
pub const RUN_GID: u32 = 1000;

/// Whom a program the agent starts runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// The agent's own uid, 0: the user's own sandbox.
    Root,
    /// [`RUN_UID`], without capabilities: a judge run.
    RunUser,
}

/// `CAP_CHECKPOINT_RESTORE`'s number.
const CAP_CHECKPOINT_RESTORE: u32 = 40;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`: one 32-bit word of each set.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Between fork and exec: removes the capabilities only the agent may
/// hold ([`CAP_CHECKPOINT_RESTORE`]) from the child's effective, permitted
/// and inheritable sets. Raw capget and capset on stack memory
/// (async-signal-safe); a child that cannot drop them is not started.
pub fn drop_agent_only_capabilities() -> std::io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes one header and two data structs, which is
    // what `header` and `data` are (version 3, this process).
    if unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let word = (CAP_CHECKPOINT_RESTORE / 32) as usize;
    let bit = 1u32 << (CAP_CHECKPOINT_RESTORE % 32);
    data[word].effective &= !bit;
    data[word].permitted &= !bit;
    data[word].inheritable &= !bit;
    // SAFETY: capset reads one header and two data structs, as above.
    if unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Between fork and exec: becomes [`RUN_UID`]:[`RUN_GID`] with no
/// supplementary groups. Leaving uid 0 for real, effective and saved uid
/// empties the permitted and effective capability sets. Raw system calls
/// (async-signal-safe, and per process here: the forked child has one
/// thread); a child that cannot change is not started.
pub fn become_run_user() -> std::io::Result<()> {
    let check = |rc: libc::c_long| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: setgroups with size 0 reads no memory; setresgid and
    // setresuid take plain integers. None has other memory effects.
    unsafe {
        check(libc::syscall(
            libc::SYS_setgroups,
            0,
            std::ptr::null::<libc::gid_t>(),
        ))?;
        check(libc::syscall(
            libc::SYS_setresgid,
            RUN_GID,
            RUN_GID,
            RUN_GID,
        ))?;
        check(libc::syscall(
            libc::SYS_setresuid,
            RUN_UID,
            RUN_UID,
            RUN_UID,
        ))?;
    }
    Ok(())
}

/// Runs `f` on the calling thread with [`RUN_UID`] as its effective uid,
/// then returns to uid 0 (the permitted capabilities come back with it).
/// For what only the owner may do and the agent's capabilities do not
/// cover (removing the run user's System V IPC objects needs
/// `CAP_SYS_ADMIN` otherwise). The raw system call changes this thread
/// only, not the agent's other threads.
pub fn as_run_user_on_this_thread<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let set_euid = |euid: u32| {
        // SAFETY: setresuid takes plain integers; -1 (as uid_t) leaves the
        // real and saved uid as they are.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_setresuid,
                libc::uid_t::MAX,
                euid,
                libc::uid_t::MAX,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set_euid(RUN_UID).map_err(|e| format!("becoming uid {RUN_UID} on the reset thread: {e}"))?;
    let result = f();
    if let Err(error) = set_euid(0) {
        // A thread of PID 1 stuck without its capabilities would fail the
        // host's requests in odd ways; better that the sandbox ends.
        eprintln!("corral-agent: cannot return to uid 0: {error}");
        std::process::abort();
    }
    Ok(result)
}

/// Gives `dir` and everything under it that is uid 0's (what the host
/// wrote for the run) to the run user. Only uid 0's directories are
/// entered, so what a program made (compile steps run before the run
/// itself) is not walked; no symbolic link is followed, by name or on the
/// way (every step is relative to an open directory, `O_NOFOLLOW`); other
/// mounts are not entered. Nothing else runs while the judge prepares a
/// run (the previous one's processes are killed), so nothing can race it.
pub fn hand_over(dir: &str) -> Result<(), String> {
    let open = |at: Option<&OwnedFd>, name: &CStr| {
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
        match at {
            Some(parent) => nix::fcntl::openat(parent, name, flags, Mode::empty()),
            None => nix::fcntl::open(name, flags, Mode::empty()),
        }
    };
    let failed = |what: &str, error: nix::Error| format!("{what} {dir} for the run user: {error}");
    let path = std::ffi::CString::new(dir).map_err(|_| format!("{dir} has a NUL byte"))?;
    let root = match open(None, &path) {
        Ok(root) => root,
        // Starting the program says so, as for any exec.
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(error) => return Err(failed("opening", error)),
    };
    let meta = nix::sys::stat::fstat(&root).map_err(|e| failed("reading", e))?;
    if meta.st_uid != 0 {
        return Ok(());
    }
    match give(&root, None) {
        Ok(()) => {}
        // A read-only directory: nothing can be written there, and the
        // run user reads it as anyone does.
        Err(nix::Error::EROFS) => return Ok(()),
        Err(error) => return Err(failed("giving", error)),
    }
    // Directories still to enter: (the open directory, its device).
    let mut pending = vec![root];
    while let Some(parent) = pending.pop() {
        let device = nix::sys::stat::fstat(&parent)
            .map_err(|e| failed("reading", e))?
            .st_dev;
        let mut listing =
            nix::dir::Dir::from_fd(nix::unistd::dup(&parent).map_err(|e| failed("listing", e))?)
                .map_err(|e| failed("listing", e))?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(|e| failed("listing", e))?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        for name in names {
            let meta = fstatat(&parent, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| failed("reading", e))?;
            if meta.st_uid != 0 || meta.st_dev != device {
                continue;
            }
            give(&parent, Some(&name)).map_err(|e| failed("giving", e))?;
            if SFlag::from_bits_truncate(meta.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                pending.push(open(Some(&parent), &name).map_err(|e| failed("opening", e))?);
            }
        }
    }
    Ok(())
}

/// Makes `name` in `parent` (or `parent` itself) the run user's, without
/// following a symbolic link.
fn give(parent: &OwnedFd, name: Option<&CStr>) -> nix::Result<()> {
    let owner = (Some(Uid::from_raw(RUN_UID)), Some(Gid::from_raw(RUN_GID)));
    match name {
        Some(name) => fchownat(
            parent.as_fd(),
            name,
            owner.0,
            owner.1,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ),
        None => nix::unistd::fchown(parent, owner.0, owner.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Whose each entry is after a hand-over: (path, uid).
    fn owners(dir: &std::path::Path, names: &[&str]) -> Vec<(String, u32)> {
        names
            .iter()
            .map(|name| {
                let uid = std::fs::symlink_metadata(dir.join(name)).unwrap().uid();
                ((*name).to_owned(), uid)
            })
            .collect()
    }

    #[test]
    fn the_host_files_are_handed_over_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("corral-hand-over-{}", std::process::id()));
        let outside = dir.with_extension("outside");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("main.c"), b"x").unwrap();
        std::fs::write(dir.join("sub/data"), b"x").unwrap();
        std::fs::write(&outside, b"the host's").unwrap();
        // Planted by a program: a link out, and a directory of its own
        // holding (as if by a hardlink) something of uid 0's.
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        std::fs::create_dir(dir.join("planted")).unwrap();
        std::fs::write(dir.join("planted/root-file"), b"x").unwrap();
        std::os::unix::fs::chown(dir.join("planted"), Some(RUN_UID), Some(RUN_GID)).unwrap();

        hand_over(dir.to_str().unwrap()).unwrap();
        let run = RUN_UID;
        assert_eq!(
            owners(
                &dir,
                &[
                    "",
                    "main.c",
                    "sub",
                    "sub/data",
                    "link",
                    "planted",
                    "planted/root-file"
                ]
            ),
            [
                ("".to_owned(), run),
                ("main.c".to_owned(), run),
                ("sub".to_owned(), run),
                ("sub/data".to_owned(), run),
                // The link itself, never its target.
                ("link".to_owned(), run),
                ("planted".to_owned(), run),
                ("planted/root-file".to_owned(), 0),
            ]
        );
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
        // A missing directory is for the exec to report.
        hand_over(dir.join("missing").to_str().unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&outside).unwrap();
    }
}
