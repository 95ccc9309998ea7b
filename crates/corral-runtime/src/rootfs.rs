//! Roots built from OCI image layers: idmapped read-only lower layers, a
//! writable layer on the sandbox's size- and inode-capped disk (see
//! [`crate::disk`]), and overlayfs over both.
//!
//! The problem: layer files are owned as in the image (uid 0, i.e. host
//! root), while sandbox root is host uid `host_id_base`. Through a plain
//! overlay sandbox root would see its own `/etc` as `nobody`'s. So each
//! layer is first cloned as a detached mount (`open_tree(OPEN_TREE_CLONE)`)
//! and given an id mapping (`mount_setattr(MOUNT_ATTR_IDMAP)`) from a user
//! namespace whose maps are `0 host_id_base 65536`: through that mount, a
//! file owned by host uid 0 appears owned by `host_id_base`, which the
//! sandbox's own user namespace shows as 0. Nothing on disk changes; one
//! unpacked layer serves every sandbox, each through its own mapping.
//!
//! Layout under the sandbox directory (host-only; none of these paths is
//! visible inside the sandbox):
//!
//! ```text
//! <dir>/lower/<i>        layer i (0 = bottom), idmapped, read-only, nodev, nosuid
//! <dir>/rw/              the sandbox's disk (ext4 on a loop device), nodev, nosuid
//! <dir>/rw/upper         the overlay's upper layer, owned by host_id_base
//! <dir>/rw/work          the overlay's work directory
//! <dir>/rw/tmp           the sandbox's /tmp (bound there by the runtime)
//! <dir>/bundle/rootfs    the overlay (nodev, nosuid): the sandbox's `/`
//! ```
//!
//! The host never resolves a path the sandbox can write: everything above
//! is a directory the host made, and unmounting addresses the mount points
//! themselves.

#![allow(
    unsafe_code,
    reason = "the new mount API (open_tree, mount_setattr, move_mount, fsopen, fsconfig, \
              fsmount) and fork have no safe wrappers in nix; each block is audited"
)]

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Component, Path, PathBuf};

use nix::libc;

use crate::oci::RuntimeError;

/// How many ids a sandbox's user namespace (and so each idmapped layer) maps.
pub const ID_RANGE: u32 = 65_536;

/// An image's unpacked layers and configuration, as the image store gives
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayers {
    /// Unpacked layer directories, bottom first, absolute. Owned as in the
    /// image (uid 0 is host root); whiteouts already in overlayfs form
    /// (character device 0:0, `trusted.overlay.opaque`).
    pub layers: Vec<PathBuf>,
    /// The image's environment, `KEY=value` (its `PATH` among them).
    pub env: Vec<String>,
    /// The image's working directory (empty: `/`).
    pub workdir: String,
}

impl ImageLayers {
    /// The image's environment as pairs, for callers to merge theirs over
    /// (entries without `=` are ignored).
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|entry| {
                let (key, value) = entry.split_once('=')?;
                Some((key.to_owned(), value.to_owned()))
            })
            .collect()
    }

    /// Whether the image (its layers merged as overlayfs would) has
    /// something at `path` (absolute, inside the image). Layers are the
    /// image store's, not the sandbox's, and no symlink is followed: a path
    /// that goes through one counts as present (it may resolve to anything).
    pub fn has(&self, path: &str) -> bool {
        let parts: Vec<&OsStr> = Path::new(path)
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(part),
                _ => None,
            })
            .collect();
        if parts.is_empty() {
            return true;
        }
        for layer in self.layers.iter().rev() {
            match lookup_in_layer(layer, &parts) {
                Lookup::Present => return true,
                Lookup::Hidden => return false,
                Lookup::NotHere => {}
            }
        }
        false
    }
}

enum Lookup {
    /// The layer has it (or a symlink on the way).
    Present,
    /// The layer hides it from the layers below (whiteout, opaque
    /// directory, or a non-directory where a directory should be).
    Hidden,
    /// The layer says nothing about it.
    NotHere,
}

fn lookup_in_layer(layer: &Path, parts: &[&OsStr]) -> Lookup {
    let mut at = layer.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        let parent_opaque = is_opaque(&at);
        at.push(part);
        let Ok(meta) = std::fs::symlink_metadata(&at) else {
            return if parent_opaque {
                Lookup::Hidden
            } else {
                Lookup::NotHere
            };
        };
        let kind = meta.file_type();
        if kind.is_char_device() && std::os::unix::fs::MetadataExt::rdev(&meta) == 0 {
            return Lookup::Hidden;
        }
        let last = i + 1 == parts.len();
        if last || kind.is_symlink() {
            return Lookup::Present;
        }
        if !kind.is_dir() {
            return Lookup::Hidden;
        }
    }
    Lookup::Present
}

/// Whether `dir` carries overlayfs's opaque mark (`trusted.overlay.opaque=y`).
fn is_opaque(dir: &Path) -> bool {
    let Ok(path) = c_path(dir) else {
        return false;
    };
    let mut value = [0u8; 4];
    // SAFETY: `path` and the attribute name are NUL-terminated strings that
    // outlive the call; `value` is a writable buffer of the length passed.
    let len = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    len == 1 && value[0] == b'y'
}

/// The caps of an image sandbox's disk, which holds its writable layer and
/// its `/tmp` together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritableLayer {
    /// Size of the disk, MiB.
    pub size_mb: u64,
    /// Files and directories it may hold.
    pub inodes: u64,
}

/// What a sandbox's `/` is made of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RootSource {
    /// The `host` image: read-only binds of the host's programs.
    #[default]
    Host,
    /// An OCI image's layers under a capped writable layer.
    Image {
        /// The layers and the image's configuration.
        image: ImageLayers,
        /// The writable layer's caps.
        writable: WritableLayer,
    },
}

impl RootSource {
    /// The environment the root brings (the image's; none for `host`), for
    /// callers to merge theirs over.
    pub fn base_env(&self) -> Vec<(String, String)> {
        match self {
            RootSource::Host => Vec::new(),
            RootSource::Image { image, .. } => image.env_pairs(),
        }
    }
}

/// Where the idmapped layers are attached, under the sandbox directory.
pub const LOWER_DIR: &str = "lower";
/// Where the sandbox's disk (its writable layer and `/tmp`) is mounted,
/// under the sandbox directory.
pub const RW_DIR: &str = "rw";

// From <linux/mount.h>.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x10_0000;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn c_str(text: &str) -> io::Result<CString> {
    CString::new(text)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a string with a NUL byte"))
}

/// A syscall's result: the error from `errno` when negative.
fn syscall_result(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Adopts a descriptor a syscall has just returned.
fn adopt(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(fd)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "descriptor out of range"))?;
    // SAFETY: `fd` was just returned by the kernel as a new descriptor of
    // this process, and nothing else holds or will close it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)`: a
/// detached copy of the mount at `path` (its subtree only, no submounts).
fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    // SAFETY: `path` is NUL-terminated and outlives the call; the call takes
    // no other pointers and returns a new descriptor (adopted below) or -1.
    let fd = syscall_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    })?;
    adopt(fd)
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH, attr)`.
fn mount_setattr(tree: &OwnedFd, attr: &MountAttr) -> io::Result<()> {
    // SAFETY: `tree` is an open mount descriptor, the empty path is a static
    // NUL-terminated string, and `attr` points to a live `struct mount_attr`
    // whose exact size is passed; the kernel only reads it.
    syscall_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            std::ptr::from_ref(attr),
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// `move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`:
/// attaches a detached mount at `target`.
fn move_mount(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: `tree` is an open mount descriptor; both paths are
    // NUL-terminated strings that outlive the call.
    syscall_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// A filesystem context being configured (`fsopen`).
struct FsContext {
    fd: OwnedFd,
    kind: &'static str,
}

impl FsContext {
    fn open(kind: &'static str) -> io::Result<FsContext> {
        let name = c_str(kind)?;
        // SAFETY: `name` is NUL-terminated and outlives the call; it returns
        // a new descriptor (adopted below) or -1.
        let fd = syscall_result(unsafe {
            libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC)
        })?;
        Ok(FsContext {
            fd: adopt(fd)?,
            kind,
        })
    }

    /// `fsconfig(FSCONFIG_SET_STRING, key, value)`.
    fn set(&self, key: &str, value: &[u8]) -> io::Result<()> {
        let key_c = c_str(key)?;
        let value_c = CString::new(value)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a value with a NUL byte"))?;
        // SAFETY: the context descriptor is open; key and value are
        // NUL-terminated strings that outlive the call; aux is 0 as
        // FSCONFIG_SET_STRING requires.
        syscall_result(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key_c.as_ptr(),
                value_c.as_ptr(),
                0,
            )
        })
        .map(drop)
        .map_err(|e| self.explain(e, &format!("{key}={}", String::from_utf8_lossy(value))))
    }

    /// Creates the superblock and a detached mount of it with `attrs`.
    fn mount(self, attrs: u64) -> io::Result<OwnedFd> {
        // SAFETY: the context descriptor is open; FSCONFIG_CMD_CREATE takes
        // no key, value or aux (null pointers and 0).
        syscall_result(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        })
        .map_err(|e| self.explain(e, "create"))?;
        // SAFETY: the context descriptor is open and configured; the call
        // returns a new mount descriptor (adopted below) or -1.
        let fd = syscall_result(unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        })
        .map_err(|e| self.explain(e, "fsmount"))?;
        adopt(fd)
    }

    /// The error with what the filesystem logged about it (read from the
    /// context descriptor), if anything.
    fn explain(&self, error: io::Error, step: &str) -> io::Error {
        let mut log = String::new();
        let mut buf = [0u8; 512];
        for _ in 0..8 {
            // SAFETY: the descriptor is open and `buf` is writable for its
            // length; a read of the context returns one message or -1.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            log.push_str(&String::from_utf8_lossy(&buf[..n]));
            log.push(' ');
        }
        io::Error::new(
            error.kind(),
            format!("{} {step}: {error} {}", self.kind, log.trim()),
        )
    }
}

/// A user namespace whose uid and gid maps are `0 base ID_RANGE`, as a
/// descriptor (what `MOUNT_ATTR_IDMAP` takes). A short-lived child unshares
/// it and waits while this process writes its maps and opens
/// `/proc/<child>/ns/user`; the descriptor keeps the namespace alive after
/// the child is reaped.
pub fn id_mapped_userns(base: u32) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (hold_r, hold_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_w_raw, hold_r_raw, hold_w_raw) =
        (ready_w.as_raw_fd(), hold_r.as_raw_fd(), hold_w.as_raw_fd());
    // SAFETY: fork in a possibly multithreaded process: the child runs only
    // async-signal-safe calls (close, unshare, write, read, _exit) on
    // descriptors it already holds, touches no lock or allocator, and never
    // returns into Rust code, so no state another thread left half-done is
    // ever used.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; the child's descriptors are its copies of the
        // pipes, and `_exit` ends it without running destructors or atexit
        // handlers.
        unsafe {
            libc::close(hold_w_raw);
            let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
            libc::write(ready_w_raw, std::ptr::from_ref(&ok).cast(), 1);
            let mut byte = 0u8;
            // Wait until the parent closes its end of the hold pipe.
            while libc::read(hold_r_raw, std::ptr::from_mut(&mut byte).cast(), 1) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(hold_r);
    let opened = (|| {
        let mut ok = [0u8; 1];
        File::from(ready_r).read_exact(&mut ok)?;
        if ok[0] != 1 {
            return Err(io::Error::other(
                "unshare(CLONE_NEWUSER) failed in the helper",
            ));
        }
        let map = format!("0 {base} {ID_RANGE}\n");
        // Written by root of the parent namespace (CAP_SETUID/CAP_SETGID
        // there): any mapping is allowed and setgroups need not be denied.
        std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        Ok(OwnedFd::from(File::open(format!("/proc/{pid}/ns/user"))?))
    })();
    // Closing our end lets the child exit.
    drop(hold_w);
    let child = nix::unistd::Pid::from_raw(pid);
    if opened.is_err() {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    }
    while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
    opened
}

fn mount_error(what: String, error: io::Error) -> RuntimeError {
    RuntimeError::Bundle {
        what: format!("{what}: {error}"),
        source: error,
    }
}

/// Mounts an image root for a sandbox whose directory is `dir` (absolute)
/// and whose root maps to host uid `host_id_base`: each layer idmapped at
/// `dir/lower/<i>`, and the overlay at `target` (an empty directory the
/// host made, e.g. `dir/bundle/rootfs`) with its upper layer on the
/// sandbox's disk, which the caller has mounted at `dir/rw` (see
/// [`crate::disk`]).
/// On failure whatever was mounted stays mounted: [`unmount`] removes it.
pub fn mount(
    dir: &Path,
    target: &Path,
    image: &ImageLayers,
    host_id_base: u32,
) -> Result<(), RuntimeError> {
    if image.layers.is_empty() {
        return Err(RuntimeError::Spec("an image with no layers".into()));
    }
    let make_dir = |path: &Path, mode: u32| {
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(path)
            .map_err(|e| mount_error(format!("create {}", path.display()), e))
    };
    let lower = dir.join(LOWER_DIR);
    make_dir(&lower, 0o700)?;
    let userns = id_mapped_userns(host_id_base)
        .map_err(|e| mount_error("make the id-mapping user namespace".into(), e))?;
    let mut lowers = Vec::with_capacity(image.layers.len());
    for (i, layer) in image.layers.iter().enumerate() {
        let at = lower.join(i.to_string());
        make_dir(&at, 0o700)?;
        let what = |step: &str| format!("{step} layer {i} ({})", layer.display());
        let tree = open_tree_clone(layer).map_err(|e| mount_error(what("clone"), e))?;
        mount_setattr(
            &tree,
            &MountAttr {
                attr_set: MOUNT_ATTR_IDMAP
                    | MOUNT_ATTR_RDONLY
                    | MOUNT_ATTR_NOSUID
                    | MOUNT_ATTR_NODEV,
                attr_clr: 0,
                propagation: 0,
                userns_fd: u64::try_from(userns.as_raw_fd()).unwrap_or(u64::MAX),
            },
        )
        .map_err(|e| mount_error(what("idmap"), e))?;
        move_mount(&tree, &at).map_err(|e| mount_error(what("attach"), e))?;
        lowers.push(at);
    }
    drop(userns);

    // The writable layer lives on the sandbox's disk, mounted at `rw` by
    // the caller; a restart finds its upper and work directories there.
    let rw = dir.join(RW_DIR);
    let upper = rw.join("upper");
    let work = rw.join("work");
    crate::disk::owned_dir(&upper, host_id_base, 0o755)?;
    crate::disk::owned_dir(&work, 0, 0o700)?;
    let overlay = (|| {
        let fs = FsContext::open("overlay")?;
        fs.set("source", b"corral-root")?;
        // Top layer first; one `lowerdir+` per layer (Linux 6.8+) needs no
        // escaping and has no length limit; older kernels take the list.
        let mut top_first = lowers.iter().rev();
        let each = top_first
            .next()
            .map(|first| fs.set("lowerdir+", first.as_os_str().as_bytes()));
        match each {
            Some(Ok(())) => {
                for layer in top_first {
                    fs.set("lowerdir+", layer.as_os_str().as_bytes())?;
                }
            }
            Some(Err(error)) if error.raw_os_error() == Some(libc::EINVAL) => {
                fs.set("lowerdir", &lowerdir_list(&lowers))?;
            }
            Some(Err(error)) => return Err(error),
            None => {}
        }
        fs.set("upperdir", upper.as_os_str().as_bytes())?;
        fs.set("workdir", work.as_os_str().as_bytes())?;
        let mnt = fs.mount(MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
        move_mount(&mnt, target)
    })();
    overlay.map_err(|e| mount_error("mount the overlay root".into(), e))
}

/// `lowerdir=` for the overlay: top layer first, `:` and `,` and `\`
/// escaped.
fn lowerdir_list(lowers: &[PathBuf]) -> Vec<u8> {
    let mut list = Vec::new();
    for (i, layer) in lowers.iter().rev().enumerate() {
        if i > 0 {
            list.push(b':');
        }
        for &byte in layer.as_os_str().as_bytes() {
            if matches!(byte, b':' | b',' | b'\\') {
                list.push(b'\\');
            }
            list.push(byte);
        }
    }
    list
}

/// Detaches every mount stacked at `path` (not following a final symlink).
/// Not a mount point, or missing: nothing to do.
fn unmount_at(path: &Path) -> io::Result<()> {
    use nix::mount::{MntFlags, umount2};
    for _ in 0..16 {
        match umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(errno) => return Err(errno.into()),
        }
    }
    Err(io::Error::other(format!(
        "still mounted after 16 unmounts: {}",
        path.display()
    )))
}

/// Unmounts everything [`mount`] made for the sandbox in `dir` (the overlay
/// at `target`, then the lowers, then the disk at `rw`), then anything
/// else still mounted under `dir`. Idempotent, and fine for a half-made
/// root. Only paths the host made are addressed: the mount points, never a
/// path inside a mounted filesystem. Errors if a mount under `dir` remains.
pub fn unmount(dir: &Path, target: &Path) -> io::Result<()> {
    let mut first_error = None;
    let mut note = |result: io::Result<()>| {
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    };
    note(unmount_at(target));
    let lower = dir.join(LOWER_DIR);
    if let Ok(entries) = std::fs::read_dir(&lower) {
        for entry in entries.flatten() {
            note(unmount_at(&entry.path()));
        }
    }
    note(unmount_at(&dir.join(RW_DIR)));
    // Anything else (a mount a crash left half-made), deepest first.
    let mut rest = mounts_under(dir)?;
    rest.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    for path in rest {
        note(unmount_at(&path));
    }
    let left = mounts_under(dir)?;
    if !left.is_empty() {
        return Err(io::Error::other(format!(
            "still mounted under {}: {left:?}",
            dir.display()
        )));
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Mount points at or under `dir` in this process's mount namespace (from
/// `/proc/self/mountinfo`; `dir` should be absolute and canonical, as the
/// kernel reports paths).
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read("/proc/self/mountinfo")?;
    Ok(info
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(field))))
        .filter(|point| point.starts_with(dir))
        .collect())
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// Whether `path` is itself a mount point in this mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    mounts_under(path).is_ok_and(|points| points.iter().any(|p| p == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(br"/a\040b\134c"), b"/a b\\c");
        assert_eq!(unescape_mountinfo(br"/x\04"), br"/x\04");
    }

    #[test]
    fn the_lowerdir_list_is_top_first_and_escaped() {
        let lowers = [PathBuf::from("/s/lower/0"), PathBuf::from("/s,x/lower:1")];
        assert_eq!(
            lowerdir_list(&lowers),
            br"/s\,x/lower\:1:/s/lower/0".to_vec()
        );
    }

    #[test]
    fn the_image_env_becomes_pairs() {
        let image = ImageLayers {
            layers: Vec::new(),
            env: vec!["PATH=/bin:/usr/bin".into(), "EMPTY=".into(), "junk".into()],
            workdir: String::new(),
        };
        assert_eq!(
            image.env_pairs(),
            vec![
                ("PATH".to_owned(), "/bin:/usr/bin".to_owned()),
                ("EMPTY".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn c_strings_refuse_nul() {
        assert!(c_str("a\0b").is_err());
        assert!(c_path(Path::new("/ok")).is_ok());
    }
}
