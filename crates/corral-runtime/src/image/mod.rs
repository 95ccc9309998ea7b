//! The OCI image store: images pulled from registries or imported from disk,
//! their layers unpacked once, safely, into a content-addressed tree.
//!
//! Layout under the store root (mode 0700):
//! - `layers/sha256/<hex>/` — one unpacked layer per layer blob digest, with
//!   overlayfs whiteouts, ready to be a `lowerdir`;
//! - `images/<hex of sha256(reference)>.json` — one [`ImageInfo`] per image;
//! - `tmp/` — staging: downloads and layers being unpacked, renamed into
//!   place when complete (so a reader never sees half a layer, and two
//!   pulls of the same layer cannot corrupt it: the second rename loses and
//!   is dropped);
//! - `lock` — `flock`ed shared by pulls and imports, exclusively by
//!   `remove`, so a layer is never deleted under a pull that is reusing it.

mod egress;
mod error;
mod import;
mod pull;
mod unpack;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use error::ImageError;
use unpack::Compression;
pub use unpack::UnpackLimits;

/// Where a pull may connect, and how long and large it may be.
#[derive(Debug, Clone)]
pub struct PullPolicy {
    /// Registries spoken to over plain HTTP (`host:port`), such as a local
    /// one; the operator's choice, so any address.
    pub insecure_registries: Vec<String>,
    /// Registries (`host` or `host:port`, HTTPS) a pull may reach although
    /// they resolve to a loopback, private or metadata address. Every other
    /// connection of a pull (the registry, its token service, redirects)
    /// must go to a public address.
    pub allowed_registries: Vec<String>,
    /// Time for the whole pull.
    pub timeout: std::time::Duration,
    /// Bytes a pull may download, all layers together.
    pub max_bytes: u64,
}

impl Default for PullPolicy {
    fn default() -> PullPolicy {
        PullPolicy {
            insecure_registries: Vec::new(),
            allowed_registries: Vec::new(),
            timeout: std::time::Duration::from_secs(600),
            max_bytes: 4 << 30,
        }
    }
}

/// Credentials for a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    Basic { username: String, password: String },
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// Where a layer of a pull is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPhase {
    /// Bytes are arriving (`done` of `total`).
    Downloading,
    /// Downloaded and verified; being unpacked.
    Unpacking,
    /// Unpacked into the store.
    Done,
    /// Already in the store: nothing downloaded.
    Cached,
}

/// Progress of one layer of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// `sha256:…` of the layer blob.
    pub digest: String,
    /// Bytes downloaded so far.
    pub done: u64,
    /// Size of the blob, from the manifest.
    pub total: u64,
    pub phase: PullPhase,
}

/// An image in the store, as recorded in `images/<hash>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// `sha256:…` of the image manifest.
    pub manifest_digest: String,
    /// `sha256:…` of the image config.
    pub config_digest: String,
    /// Layer blob digests, bottom first.
    pub layers: Vec<String>,
    /// Sum of the layer blob sizes, bytes.
    pub size: u64,
    /// The config's `created` time (RFC 3339), when it has one.
    pub created: Option<String>,
    /// When this store got the image, Unix seconds.
    pub stored_at: u64,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub user: String,
}

/// What starting a sandbox from an image needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRoot {
    pub reference: String,
    /// Unpacked layer directories, bottom first, absolute.
    pub layers: Vec<PathBuf>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub user: String,
}

/// The store. Cheap to clone (a path and the limits).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: UnpackLimits,
}

impl ImageStore {
    /// Opens the store at `root`, creating it if needed.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        use std::os::unix::fs::DirBuilderExt;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder
            .create(root)
            .map_err(ImageError::io("create the image store", root))?;
        let root =
            std::fs::canonicalize(root).map_err(ImageError::io("open the image store", root))?;
        for sub in ["layers/sha256", "images", "tmp"] {
            let dir = root.join(sub);
            builder
                .create(&dir)
                .map_err(ImageError::io("create the image store directory", &dir))?;
        }
        remove_stale_staging(&root.join("tmp"));
        Ok(ImageStore {
            root,
            limits: UnpackLimits::default(),
        })
    }

    /// The same store with other unpack limits.
    pub fn with_limits(mut self, limits: UnpackLimits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// The store's root directory (absolute).
    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn limits(&self) -> UnpackLimits {
        self.limits
    }

    /// Pulls `reference` from its registry as `policy` allows, verifying
    /// every digest, and unpacks the layers the store does not have yet.
    pub async fn pull(
        &self,
        reference: &str,
        auth: &RegistryAuth,
        policy: &PullPolicy,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<ImageInfo, ImageError> {
        let pulling = pull::pull(self, reference, auth, policy, progress);
        match tokio::time::timeout(policy.timeout, pulling).await {
            Ok(pulled) => pulled,
            Err(_) => Err(ImageError::PullLimit {
                reference: reference.to_owned(),
                what: format!("{} seconds", policy.timeout.as_secs()),
            }),
        }
    }

    /// Imports an OCI image layout (directory or tarball) or a plain root
    /// filesystem (directory or tarball, one layer) as `name`.
    pub fn import(&self, path: &Path, name: &str) -> Result<ImageInfo, ImageError> {
        import::import(self, path, name)
    }

    /// Every image, sorted by reference.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let dir = self.root.join("images");
        let mut images = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(ImageError::io("list", &dir))? {
            let entry = entry.map_err(ImageError::io("list", &dir))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                images.push(read_info(&path)?);
            }
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(images)
    }

    /// The image called `name` (normalised like a reference: `busybox` is
    /// `docker.io/library/busybox:latest`).
    pub fn get(&self, name: &str) -> Result<Option<ImageInfo>, ImageError> {
        let reference = normalize(name)?;
        let path = self.info_path(&reference);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => read_info(&path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("read", path)(e)),
        }
    }

    /// Removes the image `name` and the layers no other image uses.
    /// `false` when there was no such image.
    pub fn remove(&self, name: &str) -> Result<bool, ImageError> {
        let reference = normalize(name)?;
        let _lock = self.lock(true)?;
        let path = self.info_path(&reference);
        let Some(info) = self.get(&reference)? else {
            return Ok(false);
        };
        std::fs::remove_file(&path).map_err(ImageError::io("remove", &path))?;
        let in_use: std::collections::HashSet<String> = self
            .list()?
            .into_iter()
            .flat_map(|image| image.layers)
            .collect();
        for layer in info.layers.iter().filter(|l| !in_use.contains(*l)) {
            let dir = self.layer_dir(layer)?;
            // remove_dir_all never follows symlinks it meets inside.
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("remove the layer", dir)(e)),
            }
        }
        Ok(true)
    }

    /// The layers and process defaults of image `name`, for starting a sandbox.
    pub fn root(&self, name: &str) -> Result<ImageRoot, ImageError> {
        let info = self
            .get(name)?
            .ok_or_else(|| ImageError::NotFound(name.to_owned()))?;
        let mut layers = Vec::with_capacity(info.layers.len());
        for layer in &info.layers {
            let dir = self.layer_dir(layer)?;
            if !dir.is_dir() {
                return Err(ImageError::invalid(
                    info.reference.clone(),
                    format!("layer {layer} is missing from the store; pull or import it again"),
                ));
            }
            layers.push(dir);
        }
        Ok(ImageRoot {
            reference: info.reference,
            layers,
            env: info.env,
            entrypoint: info.entrypoint,
            cmd: info.cmd,
            workdir: info.workdir,
            user: info.user,
        })
    }

    // ---- internals shared by pull and import ----

    fn info_path(&self, reference: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(reference.as_bytes()));
        self.root.join("images").join(format!("{name}.json"))
    }

    /// `layers/sha256/<hex>` for a `sha256:<hex>` digest (validated, so a
    /// digest can never name a path outside the store).
    fn layer_dir(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers/sha256").join(digest_hex(digest)?))
    }

    fn has_layer(&self, digest: &str) -> Result<bool, ImageError> {
        Ok(self.layer_dir(digest)?.is_dir())
    }

    /// A fresh path under `tmp/`, removed on drop unless kept.
    fn staging(&self, suffix: &str) -> Staging {
        let name = format!("{:032x}{suffix}", rand::random::<u128>());
        Staging {
            path: self.root.join("tmp").join(name),
        }
    }

    /// `flock` on `<root>/lock`: shared for pulls and imports, exclusive for removal.
    fn lock(&self, exclusive: bool) -> Result<File, ImageError> {
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io("open", &path))?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, op).map_err(|e| ImageError::io("lock", &path)(e.into()))?;
        Ok(file)
    }

    /// Unpacks a verified layer blob into `layers/`, unless it is there
    /// already. `diff_id`, when the config names one, must match the
    /// uncompressed stream. Blocking.
    fn store_layer(
        &self,
        mut blob: File,
        blob_path: &Path,
        media_type: Option<&str>,
        digest: &str,
        diff_id: Option<&str>,
    ) -> Result<(), ImageError> {
        let dest = self.layer_dir(digest)?;
        if dest.is_dir() {
            return Ok(());
        }
        let compression = match media_type {
            Some(media_type) => match Compression::from_media_type(media_type)? {
                Compression::None => Compression::sniff(&mut blob, blob_path)?,
                known => known,
            },
            None => Compression::sniff(&mut blob, blob_path)?,
        };
        let staging = self.staging("");
        std::fs::create_dir(&staging.path).map_err(ImageError::io("create", &staging.path))?;
        let unpacked =
            unpack::unpack_layer(blob, compression, &staging.path, digest, &self.limits)?;
        tracing::debug!(layer = digest, bytes = unpacked.bytes, "unpacked a layer");
        if let Some(expected) = diff_id
            && expected != unpacked.diff_id
        {
            return Err(ImageError::DigestMismatch {
                what: format!("the uncompressed contents of layer {digest}"),
                expected: expected.to_owned(),
                actual: unpacked.diff_id,
            });
        }
        match std::fs::rename(&staging.path, &dest) {
            Ok(()) => {
                staging.keep();
                Ok(())
            }
            // Another pull got there first: its copy is as good as ours.
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(ImageError::io("move the unpacked layer to", dest)(e)),
        }
    }

    /// Records an image whose config and layers are in hand.
    fn record(&self, image: NewImage<'_>) -> Result<ImageInfo, ImageError> {
        let config = parse_config(image.config)?;
        let settings = config.config.unwrap_or_default();
        let stored_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let info = ImageInfo {
            reference: image.reference.to_owned(),
            manifest_digest: image.manifest_digest.to_owned(),
            config_digest: image.config_digest.to_owned(),
            layers: image.layers.iter().map(|(d, _)| d.clone()).collect(),
            size: image.layers.iter().map(|(_, s)| *s).sum(),
            created: config.created,
            stored_at,
            env: settings.env.unwrap_or_default(),
            entrypoint: settings.entrypoint.unwrap_or_default(),
            cmd: settings.cmd.unwrap_or_default(),
            workdir: settings.working_dir.unwrap_or_default(),
            user: settings.user.unwrap_or_default(),
        };
        let path = self.info_path(&info.reference);
        let staging = self.staging(".json");
        let json = serde_json::to_vec_pretty(&info).map_err(|e| ImageError::Other {
            action: "encode the image record",
            reason: e.to_string(),
        })?;
        let mut file =
            File::create(&staging.path).map_err(ImageError::io("create", &staging.path))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(ImageError::io("write", &staging.path))?;
        std::fs::rename(&staging.path, &path).map_err(ImageError::io("write", &path))?;
        staging.keep();
        Ok(info)
    }
}

/// Staging entries left by a process that died mid-pull: anything in
/// `tmp/` untouched for a day. Best effort.
fn remove_stale_staging(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let day = std::time::Duration::from_secs(24 * 3600);
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let stale = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > day);
        if stale {
            let path = entry.path();
            let _ = if meta.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// An image about to be recorded.
struct NewImage<'a> {
    reference: &'a str,
    manifest_digest: &'a str,
    config_digest: &'a str,
    config: &'a [u8],
    /// (blob digest, blob size), bottom first.
    layers: &'a [(String, u64)],
}

/// A path under `tmp/` that is removed (file or tree) when dropped, unless kept.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn keep(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
    }
}

/// The parts of an image config the store keeps.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    created: Option<String>,
    config: Option<ConfigSettings>,
    rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigSettings {
    env: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn parse_config(bytes: &[u8]) -> Result<ConfigFile, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::invalid("config", e.to_string()))
}

/// The diff ids a config lists, checked against the number of layers.
fn diff_ids(config: &[u8], layers: usize) -> Result<Vec<Option<String>>, ImageError> {
    let ids = parse_config(config)?
        .rootfs
        .map(|r| r.diff_ids)
        .unwrap_or_default();
    if ids.is_empty() {
        return Ok(vec![None; layers]);
    }
    if ids.len() != layers {
        return Err(ImageError::invalid(
            "config",
            format!("it lists {} diff ids for {layers} layers", ids.len()),
        ));
    }
    Ok(ids.into_iter().map(Some).collect())
}

fn read_info(path: &Path) -> Result<ImageInfo, ImageError> {
    let bytes = std::fs::read(path).map_err(ImageError::io("read", path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::invalid(format!("record {}", path.display()), e.to_string()))
}

/// Normalises an image name the way registries do: `busybox` →
/// `docker.io/library/busybox:latest`.
pub fn normalize(name: &str) -> Result<String, ImageError> {
    parse_reference(name).map(|r| r.whole())
}

fn parse_reference(name: &str) -> Result<oci_client::Reference, ImageError> {
    name.parse::<oci_client::Reference>()
        .map_err(|e| ImageError::InvalidReference {
            reference: name.to_owned(),
            reason: e.to_string(),
        })
}

/// The hex part of a `sha256:<64 hex>` digest; anything else is refused.
fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| ImageError::Unsupported {
            what: "digest algorithm",
            value: digest.to_owned(),
        })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ImageError::invalid(
            "digest",
            format!("`{digest}` is not sha256:<64 hex>"),
        ));
    }
    Ok(hex)
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn verify(what: impl FnOnce() -> String, expected: &str, bytes: &[u8]) -> Result<(), ImageError> {
    digest_hex(expected)?;
    let actual = sha256_digest(bytes);
    if actual != expected {
        return Err(ImageError::DigestMismatch {
            what: what(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_like_registries_do() {
        assert_eq!(
            normalize("busybox").ok().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(
            normalize("127.0.0.1:5000/a/b:v1").ok().as_deref(),
            Some("127.0.0.1:5000/a/b:v1")
        );
        assert!(normalize("UPPER case").is_err());
    }

    #[test]
    fn digests_cannot_name_paths() {
        assert!(digest_hex("sha256:../../etc").is_err());
        assert!(digest_hex("md5:abc").is_err());
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_err());
    }
}
