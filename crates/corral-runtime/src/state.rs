//! Where a host keeps its sandboxes' working state (bundles, control
//! sockets, the OCI runtime's own state): in memory, under `/run/corral`,
//! as container engines keep theirs under `/run`.
//!
//! None of it outlives the containers it describes (a reboot ends both),
//! and every create writes a few dozen small files that the matching
//! delete removes. On a disk filesystem that churn is not free: measured on
//! ext4, allocating inodes next to recently deleted ones cost about 4 ms of
//! a 45 ms create (`recently_deleted` in the kernel's inode allocator). On
//! tmpfs it costs nothing. `/run` is a tmpfs on most hosts; where it is not
//! (this project's CI machine), `/run/corral` is made one.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{TMPFS_MAGIC, statfs};

/// The memory-backed directory every Corral on this host shares.
pub const RUN_DIR: &str = "/run/corral";

/// Most memory the shared tmpfs may hold when Corral mounts it: bundles
/// are a few dozen KiB each, agent logs small; the cap only stops a runaway.
const RUN_DIR_SIZE: &str = "size=512m";

/// The state directory of the server with data directory `data_dir`:
/// `RUN_DIR/<first 8 bytes of sha256 of its canonical path, in hex>`, so
/// several servers on one host stay apart. Only names it; see [`memory_dir`].
pub fn dir_of(data_dir: &Path) -> PathBuf {
    use sha2::Digest;
    let canonical = canonical_even_if_missing(data_dir);
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    Path::new(RUN_DIR).join(hex::encode(&digest[..8]))
}

/// `path` made absolute with its symlinks resolved as far as it exists, so
/// it names the same directory before and after that is created.
fn canonical_even_if_missing(path: &Path) -> PathBuf {
    let Ok(absolute) = std::path::absolute(path) else {
        return path.to_path_buf();
    };
    for ancestor in absolute.ancestors() {
        if let Ok(canonical) = ancestor.canonicalize() {
            return match absolute.strip_prefix(ancestor) {
                // (`join("")` would add a trailing slash.)
                Ok(rest) if !rest.as_os_str().is_empty() => canonical.join(rest),
                _ => canonical,
            };
        }
    }
    absolute
}

/// `RUN_DIR/<name>` (created, mode 711 so sandbox users can pass through
/// to their bundles), with `RUN_DIR` on tmpfs, mounted here if it is not.
/// Needs root; an error means the caller keeps its state on disk instead.
pub fn memory_dir(name: &str) -> std::io::Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(std::io::Error::other(format!(
            "bad state directory name `{name}`"
        )));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "a memory-backed state directory needs root",
        ));
    }
    let run = Path::new(RUN_DIR);
    ensure_tmpfs(run)?;
    let dir = run.join(name);
    match fs::DirBuilder::new().mode(0o711).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))?;
    Ok(dir)
}

/// Makes `dir` a tmpfs unless it already is one. Two processes starting at
/// once must not both mount: the second mount would hide what the first
/// one's users already put there. So the check and the mount happen under
/// an exclusive lock on a file beside `dir`.
fn ensure_tmpfs(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)?;
    if is_tmpfs(dir)? {
        return Ok(());
    }
    let lock_path = dir.with_extension("lock");
    let lock = File::create(&lock_path)?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    if is_tmpfs(dir)? {
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=711,{RUN_DIR_SIZE}").as_str()),
    )
    .map_err(std::io::Error::from)?;
    tracing::info!(dir = %dir.display(), "mounted a tmpfs for sandbox state");
    Ok(())
}

fn is_tmpfs(dir: &Path) -> std::io::Result<bool> {
    Ok(statfs(dir).map_err(std::io::Error::from)?.filesystem_type() == TMPFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_names_the_same_state_before_and_after_it_exists() {
        let base = tempfile::tempdir().expect("a temporary directory");
        let data = base.path().join("data");
        let before = dir_of(&data);
        fs::create_dir(&data).expect("mkdir");
        assert_eq!(before, dir_of(&data));
        assert_ne!(before, dir_of(base.path()));
        assert!(before.starts_with(RUN_DIR));
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for name in ["", "a/b", "..", ".hidden"] {
            assert!(memory_dir(name).is_err(), "{name:?} was accepted");
        }
    }

    #[test]
    fn the_state_directory_is_memory_backed_and_passable() {
        // Mounting needs root: CI runs the tests as root.
        let dir = memory_dir("unit-test").expect("a state directory");
        assert!(
            is_tmpfs(&dir).expect("statfs"),
            "{} is not on tmpfs",
            dir.display()
        );
        let mode = fs::metadata(&dir).expect("metadata").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o711);
        // Asking again (another server on this host) mounts nothing new.
        let mounts_before = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        memory_dir("unit-test").expect("again");
        let mounts_after = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert_eq!(
            mounts_before.matches(RUN_DIR).count(),
            mounts_after.matches(RUN_DIR).count()
        );
    }
}
