//! Importing images from disk: an OCI image layout (directory or tarball) or
//! a plain root filesystem (directory or tarball), all through the same
//! safe unpacker as pulls.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::unpack::{self, Compression};
use super::{
    ImageError, ImageInfo, ImageStore, NewImage, diff_ids, digest_hex, normalize, sha256_digest,
    verify,
};

/// Manifests, indexes and configs are small; anything bigger is refused.
const MAX_JSON: u64 = 16 << 20;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

pub(super) fn import(store: &ImageStore, path: &Path, name: &str) -> Result<ImageInfo, ImageError> {
    let reference = normalize(name)?;
    let _lock = store.lock(false)?;
    let meta = std::fs::metadata(path).map_err(ImageError::io("read", path))?;
    if meta.is_dir() {
        if path.join("index.json").is_file() {
            return import_layout(store, path, &reference);
        }
        return import_rootfs_dir(store, path, &reference);
    }
    if !meta.is_file() {
        return Err(ImageError::invalid(
            format!("source {}", path.display()),
            "it is neither a directory nor a file",
        ));
    }
    let mut file = File::open(path).map_err(ImageError::io("open", path))?;
    let compression = Compression::sniff(&mut file, path)?;
    let what = format!("archive {}", path.display());
    if unpack::is_oci_layout(file, compression, &what, &store.limits)? {
        // Unpack the layout safely, then read it like a directory.
        let staging = store.staging("");
        std::fs::create_dir(&staging.path).map_err(ImageError::io("create", &staging.path))?;
        let file = File::open(path).map_err(ImageError::io("open", path))?;
        unpack::unpack_layer(file, compression, &staging.path, &what, &store.limits)?;
        return import_layout(store, &staging.path, &reference);
    }
    import_rootfs_tar(store, path, &reference)
}

/// A plain directory: archived (symlinks as symlinks, never followed) into
/// `tmp/`, then imported as a one-layer rootfs tarball.
fn import_rootfs_dir(
    store: &ImageStore,
    dir: &Path,
    reference: &str,
) -> Result<ImageInfo, ImageError> {
    let staging = store.staging(".tar");
    let file = File::create(&staging.path).map_err(ImageError::io("create", &staging.path))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .map_err(ImageError::io("archive the directory", dir))?;
    builder
        .into_inner()
        .map_err(ImageError::io("write", &staging.path))
        .and_then(|w| {
            w.into_inner()
                .map_err(|e| ImageError::io("write", &staging.path)(e.into_error()))
        })?;
    import_rootfs_tar(store, &staging.path, reference)
}

/// A plain rootfs tarball (tar, tar+gzip, tar+zstd): one layer.
fn import_rootfs_tar(
    store: &ImageStore,
    path: &Path,
    reference: &str,
) -> Result<ImageInfo, ImageError> {
    let mut file = File::open(path).map_err(ImageError::io("open", path))?;
    let compression = Compression::sniff(&mut file, path)?;
    let (digest, size) = hash_file(&mut file, path)?;
    let media_type = match compression {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    };
    store.store_layer(file, path, Some(media_type), &digest, None)?;
    let mut config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
    });
    if compression == Compression::None {
        config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": [digest]});
    }
    let config = config.to_string().into_bytes();
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{"mediaType": media_type, "digest": digest, "size": size}],
    })
    .to_string();
    store.record(NewImage {
        reference,
        manifest_digest: &sha256_digest(manifest.as_bytes()),
        config_digest: &config_digest,
        config: &config,
        layers: &[(digest, size)],
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The linux/amd64 manifest of an index, else its only or first one.
fn choose(index: &Index, what: &str) -> Result<Descriptor, ImageError> {
    index
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .or_else(|| {
            index
                .manifests
                .iter()
                .find(|m| m.platform.as_ref().is_none_or(|p| p.os == "linux"))
        })
        .cloned()
        .ok_or_else(|| ImageError::invalid(what, "it lists no linux manifest"))
}

/// An OCI image layout directory. Every file is opened beneath `dir` with
/// no symlink resolved, and every blob's digest is checked.
fn import_layout(store: &ImageStore, dir: &Path, reference: &str) -> Result<ImageInfo, ImageError> {
    let layout = Layout::open(dir)?;
    let index: Index = parse_json(&layout.read_small("index.json")?, "index.json")?;
    let mut chosen = choose(&index, "index.json")?;
    for _ in 0..4 {
        if !INDEX_TYPES.contains(&chosen.media_type.as_str()) {
            break;
        }
        let bytes = layout.read_blob(&chosen.digest)?;
        let nested: Index = parse_json(&bytes, "nested index")?;
        chosen = choose(&nested, "nested index")?;
    }
    let manifest_bytes = layout.read_blob(&chosen.digest)?;
    let manifest: Manifest = parse_json(&manifest_bytes, "manifest")?;
    let config = layout.read_blob(&manifest.config.digest)?;
    let diff_ids = diff_ids(&config, manifest.layers.len())?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
        let hex = digest_hex(&layer.digest)?;
        let path = dir.join("blobs/sha256").join(hex);
        let mut file = layout.open_file(&format!("blobs/sha256/{hex}"))?;
        let (actual, size) = hash_file(&mut file, &path)?;
        if actual != layer.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("layer blob {}", path.display()),
                expected: layer.digest.clone(),
                actual,
            });
        }
        if layer.size >= 0 && u64::try_from(layer.size).ok() != Some(size) {
            return Err(ImageError::invalid(
                format!("layer {}", layer.digest),
                format!(
                    "the manifest says {} bytes, the blob has {size}",
                    layer.size
                ),
            ));
        }
        let media_type = (!layer.media_type.is_empty()).then_some(layer.media_type.as_str());
        store.store_layer(file, &path, media_type, &layer.digest, diff_id.as_deref())?;
        layers.push((layer.digest.clone(), size));
    }
    store.record(NewImage {
        reference,
        manifest_digest: &chosen.digest,
        config_digest: &manifest.config.digest,
        config: &config,
        layers: &layers,
    })
}

struct Layout<'a> {
    dir: &'a Path,
    fd: OwnedFd,
}

impl Layout<'_> {
    fn open(dir: &Path) -> Result<Layout<'_>, ImageError> {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ImageError::io("open", dir)(e.into()))?;
        Ok(Layout { dir, fd })
    }

    /// Opens the regular file `rel` beneath the layout, resolving no symlink.
    fn open_file(&self, rel: &str) -> Result<File, ImageError> {
        let path = self.dir.join(rel);
        let fd = rustix::fs::openat2(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| ImageError::io("open", &path)(e.into()))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(ImageError::io("read", &path))?;
        if !meta.is_file() {
            return Err(ImageError::invalid(
                format!("layout {}", self.dir.display()),
                format!("{rel} is not a regular file"),
            ));
        }
        Ok(file)
    }

    fn read_small(&self, rel: &str) -> Result<Vec<u8>, ImageError> {
        let file = self.open_file(rel)?;
        let mut bytes = Vec::new();
        file.take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(ImageError::io("read", self.dir.join(rel)))?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(ImageError::invalid(
                format!("layout {}", self.dir.display()),
                format!("{rel} is larger than {MAX_JSON} bytes"),
            ));
        }
        Ok(bytes)
    }

    /// A small blob (index, manifest, config), digest verified.
    fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let hex = digest_hex(digest)?;
        let bytes = self.read_small(&format!("blobs/sha256/{hex}"))?;
        verify(|| format!("blob {digest} of the layout"), digest, &bytes)?;
        Ok(bytes)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::invalid(what, e.to_string()))
}

/// `sha256:…` and size of a file, left rewound.
fn hash_file(file: &mut File, path: &Path) -> Result<(String, u64), ImageError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImageError::io("read", path)(e)),
        };
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    file.rewind().map_err(ImageError::io("read", path))?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}
