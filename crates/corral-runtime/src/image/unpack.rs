//! The safe layer unpacker.
//!
//! Every entry is written by us, relative to a directory file descriptor
//! opened on the staging directory: each parent is opened with
//! `O_NOFOLLOW | O_DIRECTORY`, so a symlink (planted by an earlier entry, or
//! swapped in by someone racing us) is never followed; `..` and absolute
//! paths refuse the whole layer. Symlinks are created as symlinks, hardlinks
//! only to a regular file this layer already wrote, device nodes and fifos
//! are dropped, setuid/setgid bits are stripped, and OCI whiteouts become
//! overlayfs whiteouts (`.wh.NAME` → char device 0:0 `NAME`,
//! `.wh..wh..opq` → `trusted.overlay.opaque=y` on the directory).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use sha2::{Digest, Sha256};

use super::ImageError;

/// Caps on what one layer may put on disk. Exceeding any refuses the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total bytes of file contents.
    pub max_bytes: u64,
    /// Number of archive entries (of any kind).
    pub max_entries: u64,
    /// Path components of one entry.
    pub max_depth: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 4 << 30,
            max_entries: 500_000,
            max_depth: 128,
        }
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From an OCI or Docker layer media type.
    pub(crate) fn from_media_type(media_type: &str) -> Result<Compression, ImageError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
            // Some tools push tar layers with a generic type; look at the bytes.
            "application/vnd.docker.image.rootfs.diff.tar" | "application/octet-stream" => {
                Ok(Compression::None)
            }
            other => Err(ImageError::Unsupported {
                what: "layer media type",
                value: other.to_owned(),
            }),
        }
    }

    /// From the first bytes of a file (gzip and zstd magic numbers; tar
    /// otherwise). Leaves the file at its start.
    pub(crate) fn sniff(file: &mut File, path: &Path) -> Result<Compression, ImageError> {
        use std::io::Seek;
        let mut magic = [0u8; 4];
        let mut filled = 0;
        while filled < magic.len() {
            match file.read(&mut magic[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ImageError::io("read", path)(e)),
            }
        }
        file.rewind().map_err(ImageError::io("read", path))?;
        Ok(if filled >= 2 && magic[..2] == [0x1f, 0x8b] {
            Compression::Gzip
        } else if filled == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            Compression::Zstd
        } else {
            Compression::None
        })
    }

    /// A reader of the uncompressed stream.
    pub(crate) fn decoder(self, file: File, layer: &str) -> Result<Box<dyn Read>, ImageError> {
        Ok(match self {
            Compression::None => Box::new(io::BufReader::new(file)),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file))),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(file).map_err(|source| {
                    ImageError::Archive {
                        layer: layer.to_owned(),
                        source,
                    }
                })?)
            }
        })
    }
}

/// What unpacking one layer produced.
#[derive(Debug, Clone)]
pub(crate) struct Unpacked {
    /// `sha256:…` of the uncompressed tar stream (the OCI diff id).
    pub diff_id: String,
    /// Bytes of file contents written.
    pub bytes: u64,
}

/// Reads through to the hasher, and refuses to decompress more than `cap` bytes.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    cap: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.cap {
            return Err(io::Error::other(CapExceeded));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[derive(Debug)]
struct CapExceeded;
impl std::fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed stream too large")
    }
}
impl std::error::Error for CapExceeded {}

/// Unpacks the layer blob `blob` into `dest`, a fresh empty directory.
/// `layer` names the layer in errors. On error `dest` may hold a partial
/// tree: the caller removes it.
pub(crate) fn unpack_layer(
    blob: File,
    compression: Compression,
    dest: &Path,
    layer: &str,
    limits: &UnpackLimits,
) -> Result<Unpacked, ImageError> {
    let reader = compression.decoder(blob, layer)?;
    let cap = stream_cap(limits);
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
        read: 0,
        cap,
    };
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::io("open", dest)(e.into()))?;
    let mut unpacker = Unpacker {
        root,
        layer,
        limits,
        entries: 0,
        bytes: 0,
        files: HashSet::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(|source| archive_error(layer, limits, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| archive_error(layer, limits, source))?;
            unpacker.entry(entry)?;
        }
    }
    // The hash covers the whole stream, trailing blocks included.
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|source| archive_error(layer, limits, source))?;
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        bytes: unpacker.bytes,
    })
}

/// Whether the (possibly compressed) tar `file` is an OCI image layout: an
/// `index.json` at the top and a `blobs/` tree. Reads at most what
/// unpacking it would.
pub(crate) fn is_oci_layout(
    file: File,
    compression: Compression,
    name: &str,
    limits: &UnpackLimits,
) -> Result<bool, ImageError> {
    let reader = compression.decoder(file, name)?;
    let mut capped = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
        read: 0,
        cap: stream_cap(limits),
    };
    let mut archive = tar::Archive::new(&mut capped);
    let entries = archive
        .entries()
        .map_err(|source| archive_error(name, limits, source))?;
    let (mut index, mut blobs, mut count) = (false, false, 0u64);
    for entry in entries {
        let entry = entry.map_err(|source| archive_error(name, limits, source))?;
        count += 1;
        if count > limits.max_entries {
            return Err(ImageError::LimitExceeded {
                layer: name.to_owned(),
                what: "entries",
                limit: limits.max_entries,
            });
        }
        let path = entry.path_bytes();
        match components(&path).ok().as_deref() {
            Some([b"index.json"]) => index = true,
            Some([b"blobs", ..]) => blobs = true,
            _ => {}
        }
    }
    Ok(index && blobs)
}

/// Headers and padding come on top of file contents: allow for them, but
/// never let a bomb decompress without bound.
fn stream_cap(limits: &UnpackLimits) -> u64 {
    limits
        .max_bytes
        .saturating_add(limits.max_entries.saturating_mul(3 * 512))
        .saturating_add(1 << 20)
}

fn archive_error(layer: &str, limits: &UnpackLimits, source: io::Error) -> ImageError {
    if source
        .get_ref()
        .is_some_and(|inner| inner.is::<CapExceeded>())
    {
        ImageError::LimitExceeded {
            layer: layer.to_owned(),
            what: "bytes",
            limit: limits.max_bytes,
        }
    } else {
        ImageError::Archive {
            layer: layer.to_owned(),
            source,
        }
    }
}

/// Splits an archive path into its components, refusing absolute paths and `..`.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("has an absolute path");
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("climbs out of the layer with `..`"),
            part => out.push(part),
        }
    }
    Ok(out)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

struct Unpacker<'a> {
    root: OwnedFd,
    layer: &'a str,
    limits: &'a UnpackLimits,
    entries: u64,
    bytes: u64,
    /// Regular files this layer wrote (joined paths): the only hardlink targets.
    files: HashSet<Vec<u8>>,
}

enum Parent {
    Root,
    Dir(OwnedFd),
}

impl Unpacker<'_> {
    fn unsafe_entry(&self, entry: &[u8], reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.layer.to_owned(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    fn limit(&self, what: &'static str, limit: u64) -> ImageError {
        ImageError::LimitExceeded {
            layer: self.layer.to_owned(),
            what,
            limit,
        }
    }

    fn fs_error(&self, entry: &[u8], what: &str, error: Errno) -> ImageError {
        let reason = match error {
            Errno::LOOP | Errno::NOTDIR => {
                format!("cannot be written: {what} goes through a symlink or a non-directory")
            }
            other => format!("cannot be written: {what}: {}", io::Error::from(other)),
        };
        self.unsafe_entry(entry, reason)
    }

    /// Opens (creating as needed) the directory `parts` below the root,
    /// never following a symlink.
    fn open_parent(&self, entry: &[u8], parts: &[&[u8]]) -> Result<Parent, ImageError> {
        let mut current: Option<OwnedFd> = None;
        for part in parts {
            let at: BorrowedFd<'_> = match &current {
                Some(fd) => fd.as_fd(),
                None => self.root.as_fd(),
            };
            let fd = match rustix::fs::openat(at, *part, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(at, *part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.fs_error(entry, "a parent directory", e)),
                    }
                    rustix::fs::openat(at, *part, DIR_FLAGS, Mode::empty())
                        .map_err(|e| self.fs_error(entry, "a parent directory", e))?
                }
                Err(e) => return Err(self.fs_error(entry, "a parent directory", e)),
            };
            current = Some(fd);
        }
        Ok(match current {
            Some(fd) => Parent::Dir(fd),
            None => Parent::Root,
        })
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.limit("entries", self.limits.max_entries));
        }
        let raw_path = entry.path_bytes().into_owned();
        let parts = components(&raw_path).map_err(|reason| self.unsafe_entry(&raw_path, reason))?;
        if parts.len() > self.limits.max_depth {
            return Err(self.limit("path components", self.limits.max_depth as u64));
        }
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644);
        let uid = header.uid().ok();
        let gid = header.gid().ok();
        let mtime = header.mtime().unwrap_or(0);
        if !matches!(
            kind,
            tar::EntryType::Directory
                | tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse
                | tar::EntryType::Symlink
                | tar::EntryType::Link
        ) {
            // Device nodes and fifos never reach a sandbox; global pax
            // headers and anything unknown carry nothing to write.
            tracing::debug!(
                layer = self.layer,
                entry = %String::from_utf8_lossy(&raw_path),
                kind = ?kind,
                "skipping an entry that is not a file, directory or link"
            );
            return Ok(());
        }
        let owner = match (uid.and_then(valid_id), gid.and_then(valid_id)) {
            (Some(u), Some(g)) => (Uid::from_raw(u), Gid::from_raw(g)),
            _ => return Err(self.unsafe_entry(&raw_path, "has an invalid owner")),
        };

        let Some((name, dirs)) = parts.split_last() else {
            // The layer root itself: only a directory entry means anything.
            if kind.is_dir() {
                self.set_owner_mode(&raw_path, self.root.as_fd(), owner, dir_mode(mode))?;
            }
            return Ok(());
        };
        let name: &[u8] = name;
        let joined = parts.join(&b'/');
        let parent = self.open_parent(&raw_path, dirs)?;
        let at = match &parent {
            Parent::Root => self.root.as_fd(),
            Parent::Dir(fd) => fd.as_fd(),
        };

        // OCI whiteouts.
        if name == OPAQUE {
            return rustix::fs::fsetxattr(at, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|e| self.fs_error(&raw_path, "the opaque marker", e));
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.unsafe_entry(&raw_path, "is a malformed whiteout"));
            }
            let mut hidden_path = dirs.join(&b'/');
            if !hidden_path.is_empty() {
                hidden_path.push(b'/');
            }
            hidden_path.extend_from_slice(hidden);
            self.clear(&raw_path, at, hidden, false)?;
            self.files.remove(&hidden_path);
            return rustix::fs::mknodat(
                at,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| self.fs_error(&raw_path, "the whiteout", e));
        }

        match kind {
            tar::EntryType::Directory => {
                let kept = self.clear(&raw_path, at, name, true)?;
                self.files.remove(&joined);
                if !kept {
                    rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| self.fs_error(&raw_path, "the directory", e))?;
                }
                let dir = rustix::fs::openat(at, name, DIR_FLAGS, Mode::empty())
                    .map_err(|e| self.fs_error(&raw_path, "the directory", e))?;
                self.set_owner_mode(&raw_path, dir.as_fd(), owner, dir_mode(mode))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                if self.bytes.saturating_add(size) > self.limits.max_bytes {
                    return Err(self.limit("bytes", self.limits.max_bytes));
                }
                self.clear(&raw_path, at, name, false)?;
                self.files.remove(&joined);
                let fd = rustix::fs::openat(
                    at,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.fs_error(&raw_path, "the file", e))?;
                let mut file = File::from(fd);
                self.copy_contents(&raw_path, &mut entry, &mut file)?;
                self.set_owner_mode(&raw_path, file.as_fd(), owner, mode & 0o777)?;
                let time = Timespec {
                    tv_sec: i64::try_from(mtime).unwrap_or(0),
                    tv_nsec: 0,
                };
                // Best effort: a wrong mtime harms nothing.
                let _ = rustix::fs::futimens(
                    &file,
                    &Timestamps {
                        last_access: time,
                        last_modification: time,
                    },
                );
                self.files.insert(joined);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(self.unsafe_entry(&raw_path, "is a symlink without a target"));
                }
                self.clear(&raw_path, at, name, false)?;
                self.files.remove(&joined);
                rustix::fs::symlinkat(target.as_slice(), at, name)
                    .map_err(|e| self.fs_error(&raw_path, "the symlink", e))?;
                rustix::fs::chownat(
                    at,
                    name,
                    Some(owner.0),
                    Some(owner.1),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| self.fs_error(&raw_path, "the symlink's owner", e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target_parts = components(&target).map_err(|reason| {
                    self.unsafe_entry(&raw_path, format!("is a hardlink whose target {reason}"))
                })?;
                let target_joined = target_parts.join(&b'/');
                if target_joined == joined || !self.files.contains(&target_joined) {
                    return Err(self.unsafe_entry(
                        &raw_path,
                        "is a hardlink to something other than a file earlier in this layer",
                    ));
                }
                let Some((target_name, target_dirs)) = target_parts.split_last() else {
                    return Err(self.unsafe_entry(&raw_path, "is a hardlink to the layer root"));
                };
                let target_parent = self.open_parent(&raw_path, target_dirs)?;
                let target_at = match &target_parent {
                    Parent::Root => self.root.as_fd(),
                    Parent::Dir(fd) => fd.as_fd(),
                };
                let stat = rustix::fs::statat(target_at, *target_name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.fs_error(&raw_path, "the hardlink target", e))?;
                if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                    return Err(self.unsafe_entry(
                        &raw_path,
                        "is a hardlink to something other than a regular file",
                    ));
                }
                self.clear(&raw_path, at, name, false)?;
                self.files.remove(&joined);
                rustix::fs::linkat(target_at, *target_name, at, name, AtFlags::empty())
                    .map_err(|e| self.fs_error(&raw_path, "the hardlink", e))?;
                self.files.insert(joined);
            }
            // Filtered out above.
            _ => {}
        }
        Ok(())
    }

    /// Makes room for a new entry called `name` in `at`. An existing
    /// directory is kept when `keep_dir` (and the answer is `true`); an
    /// empty one is otherwise removed, a non-empty one refuses the layer.
    fn clear(
        &self,
        entry: &[u8],
        at: BorrowedFd<'_>,
        name: &[u8],
        keep_dir: bool,
    ) -> Result<bool, ImageError> {
        let stat = match rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(self.fs_error(entry, "the path", e)),
        };
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(true);
            }
            return match rustix::fs::unlinkat(at, name, AtFlags::REMOVEDIR) {
                Ok(()) => Ok(false),
                Err(Errno::NOTEMPTY | Errno::EXIST) => {
                    Err(self.unsafe_entry(entry, "replaces a non-empty directory"))
                }
                Err(e) => Err(self.fs_error(entry, "the path", e)),
            };
        }
        rustix::fs::unlinkat(at, name, AtFlags::empty())
            .map_err(|e| self.fs_error(entry, "the path", e))?;
        Ok(false)
    }

    fn copy_contents(
        &mut self,
        entry: &[u8],
        from: &mut impl Read,
        to: &mut File,
    ) -> Result<(), ImageError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(archive_error(self.layer, self.limits, source)),
            };
            self.bytes += n as u64;
            if self.bytes > self.limits.max_bytes {
                return Err(self.limit("bytes", self.limits.max_bytes));
            }
            to.write_all(&buf[..n])
                .map_err(|e| self.unsafe_entry(entry, format!("cannot be written: {e}")))?;
        }
    }

    fn set_owner_mode(
        &self,
        entry: &[u8],
        fd: BorrowedFd<'_>,
        owner: (Uid, Gid),
        mode: u32,
    ) -> Result<(), ImageError> {
        // chown first: it clears set-id bits, and we set the mode we want after.
        rustix::fs::fchown(fd, Some(owner.0), Some(owner.1))
            .map_err(|e| self.fs_error(entry, "the owner", e))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
            .map_err(|e| self.fs_error(entry, "the mode", e))
    }
}

/// A directory keeps its permission bits and the sticky bit; never set-id.
fn dir_mode(mode: u32) -> u32 {
    mode & 0o1777
}

fn valid_id(id: u64) -> Option<u32> {
    u32::try_from(id).ok().filter(|id| *id != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::components;

    #[test]
    fn components_refuse_climbing_and_absolute_paths() {
        assert_eq!(
            components(b"./a//b/./c/").ok(),
            Some(vec![&b"a"[..], b"b", b"c"])
        );
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../etc").is_err());
        assert!(components(b"..").is_err());
        assert_eq!(components(b"./").ok(), Some(vec![]));
    }
}
