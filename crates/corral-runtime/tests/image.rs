//! The image store against real components: a real registry on loopback
//! (Debian's `docker-registry`), images built here from Debian's
//! `busybox-static`, and hostile archives through import. Runs as root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_runtime::image::{
    ImageError, ImageStore, PullPhase, PullPolicy, PullProgress, RegistryAuth, UnpackLimits,
};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

// ---------------------------------------------------------------- archives

/// Builds tar archives entry by entry, writing names and link targets raw
/// (so hostile `..` and absolute paths can be made).
struct Tar {
    builder: tar::Builder<Vec<u8>>,
}

impl Tar {
    fn new() -> Tar {
        Tar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        name: &[u8],
        kind: EntryType,
        mode: u32,
        owner: (u64, u64),
        link: &[u8],
        data: &[u8],
    ) -> &mut Tar {
        let mut header = Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(owner.0);
        header.set_gid(owner.1);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Tar {
        self.raw(
            name.as_bytes(),
            EntryType::Directory,
            mode,
            (0, 0),
            b"",
            b"",
        )
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Tar {
        self.raw(name.as_bytes(), EntryType::Regular, mode, (0, 0), b"", data)
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(
            name.as_bytes(),
            EntryType::Symlink,
            0o777,
            (0, 0),
            target.as_bytes(),
            b"",
        )
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(
            name.as_bytes(),
            EntryType::Link,
            0o644,
            (0, 0),
            target.as_bytes(),
            b"",
        )
    }

    fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A layer: the blob as pushed, its media type, its uncompressed digest.
struct Layer {
    blob: Vec<u8>,
    media_type: &'static str,
    diff_id: String,
}

impl Layer {
    fn new(tar: Vec<u8>, media_type: &'static str) -> Layer {
        let diff_id = sha256(&tar);
        let blob = match media_type {
            GZIP => gzip(&tar),
            ZSTD => zstd(&tar),
            _ => tar,
        };
        Layer {
            blob,
            media_type,
            diff_id,
        }
    }
}

struct TestImage {
    layers: Vec<Layer>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

impl TestImage {
    fn new(layers: Vec<Layer>) -> TestImage {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-02T03:04:05Z",
            "config": {
                "Env": ["PATH=/bin", "GREETING=hello"],
                "Cmd": ["/bin/sh", "-c", "echo hi"],
                "Entrypoint": null,
                "WorkingDir": "/opt",
                "User": "1000:1000",
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
        })
        .to_string()
        .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(&config),
                "size": config.len(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": l.media_type,
                "digest": sha256(&l.blob),
                "size": l.blob.len(),
            })).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        TestImage {
            layers,
            config,
            manifest,
        }
    }

    fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha256(&l.blob)).collect()
    }

    /// Writes the image as an OCI image layout directory.
    fn write_layout(&self, dir: &Path) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let digest = sha256(bytes);
            std::fs::write(blobs.join(&digest[7..]), bytes).unwrap();
        };
        put(&self.config);
        put(&self.manifest);
        for layer in &self.layers {
            put(&layer.blob);
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST,
                "digest": sha256(&self.manifest),
                "size": self.manifest.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        });
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    }
}

fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox")
        .expect("/bin/busybox (Debian's busybox-static; scripts/deps.sh test installs it)")
}

/// Layer 1 (gzip): busybox with links, a file layer 2 deletes, a directory
/// layer 2 makes opaque. Layer 2 (zstd): the whiteouts and a new file.
fn busybox_image() -> TestImage {
    let mut base = Tar::new();
    base.dir("bin/", 0o755)
        .file("bin/busybox", 0o755, &busybox())
        .symlink("bin/sh", "busybox")
        .symlink("bin/ls", "/bin/busybox")
        .dir("etc/", 0o755)
        .file("etc/hello", 0o644, b"hello\n")
        .dir("opt/", 0o755)
        .file("opt/old", 0o644, b"old\n")
        .raw(
            b"home/user/owned",
            EntryType::Regular,
            0o600,
            (1234, 5678),
            b"",
            b"mine",
        );
    let mut top = Tar::new();
    top.file("etc/.wh.hello", 0o644, b"")
        .file("opt/.wh..wh..opq", 0o644, b"")
        .file("opt/new", 0o644, b"new\n");
    TestImage::new(vec![
        Layer::new(base.finish(), GZIP),
        Layer::new(top.finish(), ZSTD),
    ])
}

// ---------------------------------------------------------------- registry

/// A `docker-registry` on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start(credentials: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = credentials {
            let hash = bcrypt::hash_with_result(password, 4)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoY);
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: corral-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/bin/docker-registry (Debian's docker-registry; scripts/deps.sh test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, addr, dir }
    }

    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn insecure(&self) -> Vec<String> {
        vec![self.addr.clone()]
    }

    /// Pushes with the plain registry API: blobs (monolithic), then the manifest.
    async fn push(&self, repo: &str, tag: &str, image: &TestImage, auth: Option<(&str, &str)>) {
        let mut blobs: Vec<&[u8]> = vec![&image.config];
        blobs.extend(image.layers.iter().map(|l| l.blob.as_slice()));
        for blob in blobs {
            self.push_blob(repo, blob, auth).await;
        }
        self.push_manifest(repo, tag, &image.manifest, MANIFEST, auth)
            .await;
    }

    async fn push_blob(&self, repo: &str, blob: &[u8], auth: Option<(&str, &str)>) {
        let client = reqwest::Client::new();
        let with_auth = |request: reqwest::RequestBuilder| match auth {
            Some((u, p)) => request.basic_auth(u, Some(p)),
            None => request,
        };
        let start =
            with_auth(client.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.addr)))
                .send()
                .await
                .unwrap();
        assert_eq!(start.status(), 202, "starting an upload");
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.addr)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = with_auth(client.put(format!("{location}{separator}digest={}", sha256(blob))))
            .header("content-type", "application/octet-stream")
            .body(blob.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201, "finishing an upload");
    }

    async fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        manifest: &[u8],
        media_type: &str,
        auth: Option<(&str, &str)>,
    ) {
        let mut request = reqwest::Client::new()
            .put(format!("http://{}/v2/{repo}/manifests/{tag}", self.addr))
            .header("content-type", media_type)
            .body(manifest.to_vec());
        if let Some((u, p)) = auth {
            request = request.basic_auth(u, Some(p));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 201, "pushing a manifest");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // reqwest (here and in oci-client) uses rustls with ring, installed once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn pull(
    store: &ImageStore,
    reference: &str,
    auth: &RegistryAuth,
    insecure: &[String],
) -> (
    Result<corral_runtime::image::ImageInfo, ImageError>,
    Vec<PullProgress>,
) {
    let policy = PullPolicy {
        insecure_registries: insecure.to_vec(),
        ..PullPolicy::default()
    };
    let mut events = Vec::new();
    let result = store
        .pull(reference, auth, &policy, &mut |p| events.push(p))
        .await;
    (result, events)
}

/// Names of the entries of a directory (empty if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn assert_store_empty(store: &ImageStore) {
    let root = store.path();
    assert_eq!(
        entries(&root.join("layers/sha256")),
        Vec::<String>::new(),
        "layers/"
    );
    assert_eq!(entries(&root.join("tmp")), Vec::<String>::new(), "tmp/");
    assert_eq!(
        entries(&root.join("images")),
        Vec::<String>::new(),
        "images/"
    );
}

// ---------------------------------------------------------------- pulls

#[test]
fn pull_unpacks_layers_whiteouts_and_config_and_is_idempotent() {
    let registry = Registry::start(None);
    let image = busybox_image();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&store_dir.path().join("images")).unwrap();
    let reference = format!("{}/corral/busybox:1", registry.addr);
    runtime().block_on(async {
        registry.push("corral/busybox", "1", &image, None).await;
        let (info, events) = pull(
            &store,
            &reference,
            &RegistryAuth::Anonymous,
            &registry.insecure(),
        )
        .await;
        let info = info.unwrap();

        assert_eq!(info.reference, reference);
        assert_eq!(info.manifest_digest, sha256(&image.manifest));
        assert_eq!(info.config_digest, sha256(&image.config));
        assert_eq!(info.layers, image.layer_digests());
        assert_eq!(
            info.size,
            image
                .layers
                .iter()
                .map(|l| l.blob.len() as u64)
                .sum::<u64>()
        );
        assert_eq!(info.env, ["PATH=/bin", "GREETING=hello"]);
        assert_eq!(info.cmd, ["/bin/sh", "-c", "echo hi"]);
        assert!(info.entrypoint.is_empty());
        assert_eq!(info.workdir, "/opt");
        assert_eq!(info.user, "1000:1000");
        assert_eq!(info.created.as_deref(), Some("2026-01-02T03:04:05Z"));

        // Progress: every layer downloaded to its full size, then done.
        for (digest, layer) in image.layer_digests().iter().zip(&image.layers) {
            let mine: Vec<_> = events.iter().filter(|e| &e.digest == digest).collect();
            assert!(mine.iter().any(|e| e.phase == PullPhase::Downloading
                && e.done == layer.blob.len() as u64
                && e.total == layer.blob.len() as u64));
            assert_eq!(mine.last().unwrap().phase, PullPhase::Done);
        }

        // Layers on disk, bottom first.
        let root = store.root("127.0.0.1:0/nothing").err();
        assert!(matches!(root, Some(ImageError::NotFound(_))));
        let root = store.root(&reference).unwrap();
        assert_eq!(root.layers.len(), 2);
        assert!(root.layers.iter().all(|l| l.is_absolute()));
        assert_eq!(root.env, info.env);
        assert_eq!(root.workdir, "/opt");
        let (base, top) = (&root.layers[0], &root.layers[1]);
        assert_eq!(
            base,
            &store
                .path()
                .join("layers/sha256")
                .join(&info.layers[0][7..])
        );
        assert_eq!(std::fs::read(base.join("bin/busybox")).unwrap(), busybox());
        assert_eq!(
            std::fs::metadata(base.join("bin/busybox"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o755
        );
        assert_eq!(
            std::fs::read_link(base.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            std::fs::read_link(base.join("bin/ls")).unwrap(),
            Path::new("/bin/busybox")
        );
        // The unpacked binary really is busybox.
        let out = Command::new(base.join("bin/busybox"))
            .args(["echo", "works"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "works\n");
        let owned = std::fs::metadata(base.join("home/user/owned")).unwrap();
        assert_eq!(
            (owned.uid(), owned.gid(), owned.mode() & 0o7777),
            (1234, 5678, 0o600)
        );

        // Whiteout: a 0:0 character device; opaque: the xattr.
        let whiteout = std::fs::symlink_metadata(top.join("etc/hello")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        assert!(!top.join("etc/.wh.hello").exists());
        let mut value = [0u8; 8];
        let n = rustix::fs::getxattr(top.join("opt"), "trusted.overlay.opaque", &mut value[..])
            .unwrap();
        assert_eq!(&value[..n], b"y");
        assert!(!top.join("opt/.wh..wh..opq").exists());
        assert_eq!(std::fs::read(top.join("opt/new")).unwrap(), b"new\n");

        // A second pull downloads nothing and changes nothing.
        let inode = std::fs::metadata(base.join("bin/busybox")).unwrap().ino();
        let (again, events) = pull(
            &store,
            &reference,
            &RegistryAuth::Anonymous,
            &registry.insecure(),
        )
        .await;
        let again = again.unwrap();
        assert_eq!(again.layers, info.layers);
        assert_eq!(again.manifest_digest, info.manifest_digest);
        assert!(
            events.iter().all(|e| e.phase == PullPhase::Cached),
            "{events:?}"
        );
        assert_eq!(
            std::fs::metadata(base.join("bin/busybox")).unwrap().ino(),
            inode
        );
        assert_eq!(entries(&store.path().join("tmp")), Vec::<String>::new());

        // Listing, lookup, removal.
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(store.get(&reference).unwrap().unwrap().layers, info.layers);
        assert!(store.remove(&reference).unwrap());
        assert!(!store.remove(&reference).unwrap());
        assert!(store.get(&reference).unwrap().is_none());
        assert_store_empty(&store);
    });
}

#[test]
fn concurrent_pulls_and_a_manifest_list_pick_linux_amd64() {
    let registry = Registry::start(None);
    let image = busybox_image();
    // An index with an arm64 decoy first: the amd64 manifest must be chosen.
    let decoy = TestImage::new(vec![Layer::new(
        {
            let mut t = Tar::new();
            t.file("arm64", 0o644, b"wrong platform");
            t.finish()
        },
        TAR,
    )]);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {"mediaType": MANIFEST, "digest": sha256(&decoy.manifest), "size": decoy.manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": MANIFEST, "digest": sha256(&image.manifest), "size": image.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    })
    .to_string()
    .into_bytes();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(store_dir.path()).unwrap();
    runtime().block_on(async {
        registry.push("multi/arch", "amd64", &image, None).await;
        registry.push("multi/arch", "arm64", &decoy, None).await;
        registry
            .push_manifest("multi/arch", "latest", &index, INDEX, None)
            .await;
        let reference = format!("{}/multi/arch", registry.addr);
        let insecure = registry.insecure();
        let (a, b) = tokio::join!(
            pull(&store, &reference, &RegistryAuth::Anonymous, &insecure),
            pull(&store, &reference, &RegistryAuth::Anonymous, &insecure),
        );
        let (a, b) = (a.0.unwrap(), b.0.unwrap());
        assert_eq!(a.reference, format!("{reference}:latest"));
        assert_eq!(a.layers, image.layer_digests());
        assert_eq!(a.layers, b.layers);
        assert_eq!(a.manifest_digest, sha256(&image.manifest));
        let root = store.root(&reference).unwrap();
        assert_eq!(
            std::fs::read(root.layers[0].join("bin/busybox")).unwrap(),
            busybox()
        );
        assert_eq!(entries(&store.path().join("layers/sha256")).len(), 2);
        assert_eq!(entries(&store.path().join("tmp")), Vec::<String>::new());
    });
}

#[test]
fn a_tampered_blob_fails_the_pull_and_leaves_nothing() {
    let registry = Registry::start(None);
    let mut unique = Tar::new();
    unique.file("unique", 0o644, b"only in this image");
    let image = TestImage::new(vec![Layer::new(unique.finish(), GZIP)]);
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(store_dir.path()).unwrap();
    runtime().block_on(async {
        registry.push("tampered/image", "1", &image, None).await;
        // Same length, one byte changed, behind the registry's back.
        let blob = registry.blob_file(&image.layer_digests()[0]);
        let mut bytes = std::fs::read(&blob).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&blob, &bytes).unwrap();

        let reference = format!("{}/tampered/image:1", registry.addr);
        let (result, _) = pull(
            &store,
            &reference,
            &RegistryAuth::Anonymous,
            &registry.insecure(),
        )
        .await;
        let error = result.unwrap_err();
        assert!(
            matches!(error, ImageError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("digest mismatch"), "{error}");
        assert_store_empty(&store);
    });
}

#[test]
fn basic_auth_pulls_with_the_right_password_only() {
    let registry = Registry::start(Some(("alice", "s3cret")));
    let image = busybox_image();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(store_dir.path()).unwrap();
    let reference = format!("{}/private/busybox:1", registry.addr);
    runtime().block_on(async {
        registry
            .push("private/busybox", "1", &image, Some(("alice", "s3cret")))
            .await;
        for auth in [
            RegistryAuth::Basic {
                username: "alice".into(),
                password: "wrong".into(),
            },
            RegistryAuth::Anonymous,
        ] {
            let (result, _) = pull(&store, &reference, &auth, &registry.insecure()).await;
            let error = result.unwrap_err();
            assert!(
                matches!(error, ImageError::Unauthorized { .. }),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(message.contains("refused the credentials"), "{message}");
            assert!(
                !message.contains("wrong"),
                "no password in errors: {message}"
            );
            assert_store_empty(&store);
        }
        let auth = RegistryAuth::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{auth:?}").contains("s3cret"));
        let (result, _) = pull(&store, &reference, &auth, &registry.insecure()).await;
        assert_eq!(result.unwrap().layers, image.layer_digests());
    });
}

#[test]
fn an_unreachable_or_unknown_image_is_a_clear_error() {
    let registry = Registry::start(None);
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(store_dir.path()).unwrap();
    runtime().block_on(async {
        let reference = format!("{}/no/such:image", registry.addr);
        let (result, _) = pull(
            &store,
            &reference,
            &RegistryAuth::Anonymous,
            &registry.insecure(),
        )
        .await;
        let message = result.unwrap_err().to_string();
        assert!(
            message.starts_with("cannot pull the manifest of"),
            "{message}"
        );
        let (result, _) = pull(&store, "Not A Reference", &RegistryAuth::Anonymous, &[]).await;
        assert!(matches!(result, Err(ImageError::InvalidReference { .. })));
        assert_store_empty(&store);
    });
}

// ---------------------------------------------------------------- SSRF

/// A TCP listener that counts the connections it accepts (it answers none).
fn tripwire(ip: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, hits)
}

/// A minimal registry that answers every request with `response`.
fn fake_registry(response: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut stream, &mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

/// Issue 17 item 5 (security row 36): an image reference naming a
/// loopback, private or metadata address, in any spelling, is refused
/// before anything connects (a real registry listens at the loopback one),
/// and the error says "refused", not what answered.
#[test]
fn pulls_from_internal_addresses_are_refused_before_connecting() {
    let registry = Registry::start(None);
    let image = busybox_image();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(store_dir.path()).unwrap();
    let (trip, hits) = tripwire("127.0.0.1");
    let port = trip.rsplit_once(':').unwrap().1.to_owned();
    runtime().block_on(async {
        registry.push("ssrf/x", "latest", &image, None).await;
        for reference in [
            format!("{}/ssrf/x:latest", registry.addr),
            format!("{trip}/x:latest"),
            format!("localhost:{port}/x:latest"),
            format!("127.1:{port}/x:latest"),
            format!("2130706433:{port}/x:latest"),
            "169.254.169.254/x:latest".to_owned(),
            "10.0.0.1:5000/x:latest".to_owned(),
            format!("[::ffff:127.0.0.1]:{port}/x:latest"),
        ] {
            let (result, _) = pull(&store, &reference, &RegistryAuth::Anonymous, &[]).await;
            match result {
                Err(ImageError::Refused { .. } | ImageError::InvalidReference { .. }) => {}
                other => panic!("{reference}: {other:?}"),
            }
        }
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The operator opens a registry explicitly.
        let reference = format!("{}/ssrf/x:latest", registry.addr);
        let (result, _) = pull(
            &store,
            &reference,
            &RegistryAuth::Anonymous,
            &registry.insecure(),
        )
        .await;
        result.unwrap();
    });
}

/// The check is made again for every connection a pull makes: a registry
/// the operator opened cannot send the pull elsewhere with its token
/// realm or with a redirect.
#[test]
fn auth_realms_and_redirects_to_internal_addresses_are_refused() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(store_dir.path()).unwrap();
    let (trip, hits) = tripwire("127.0.0.2");
    let realm = fake_registry(format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{trip}/token\",service=\"x\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    let redirect = fake_registry(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{trip}/v2/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    runtime().block_on(async {
        for registry in [realm, redirect] {
            let reference = format!("{registry}/x:latest");
            let (result, _) = pull(
                &store,
                &reference,
                &RegistryAuth::Anonymous,
                std::slice::from_ref(&registry),
            )
            .await;
            match result {
                Err(ImageError::Refused { host, .. }) => assert_eq!(host, trip, "{reference}"),
                other => panic!("{reference}: {other:?}"),
            }
        }
    });
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A pull is bounded in time and in bytes.
#[test]
fn pulls_are_capped_in_time_and_size() {
    let registry = Registry::start(None);
    let image = busybox_image();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(store_dir.path()).unwrap();
    // A registry that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    runtime().block_on(async {
        registry.push("caps/x", "latest", &image, None).await;
        let small = PullPolicy {
            insecure_registries: registry.insecure(),
            max_bytes: 100,
            ..PullPolicy::default()
        };
        let reference = format!("{}/caps/x:latest", registry.addr);
        let result = store
            .pull(&reference, &RegistryAuth::Anonymous, &small, &mut |_| {})
            .await;
        assert!(
            matches!(result, Err(ImageError::PullLimit { .. })),
            "{result:?}"
        );
        let quick = PullPolicy {
            insecure_registries: vec![silent_addr.clone()],
            timeout: Duration::from_millis(500),
            ..PullPolicy::default()
        };
        let started = Instant::now();
        let result = store
            .pull(
                &format!("{silent_addr}/x:latest"),
                &RegistryAuth::Anonymous,
                &quick,
                &mut |_| {},
            )
            .await;
        assert!(
            matches!(result, Err(ImageError::PullLimit { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_store_empty(&store);
    });
    drop(silent);
}

// ---------------------------------------------------------------- imports

#[test]
fn import_oci_layouts_and_plain_root_filesystems() {
    let image = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();

    // An OCI layout directory.
    let layout = work.path().join("layout");
    image.write_layout(&layout);
    let info = store.import(&layout, "local/busybox:layout").unwrap();
    assert_eq!(info.reference, "docker.io/local/busybox:layout");
    assert_eq!(info.layers, image.layer_digests());
    assert_eq!(info.manifest_digest, sha256(&image.manifest));
    assert_eq!(info.cmd, ["/bin/sh", "-c", "echo hi"]);

    // The same layout as a tarball: same layers, nothing unpacked twice.
    let tarball = work.path().join("layout.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let from_tar = store.import(&tarball, "layout-tar").unwrap();
    assert_eq!(from_tar.reference, "docker.io/library/layout-tar:latest");
    assert_eq!(from_tar.layers, info.layers);
    assert_eq!(entries(&store.path().join("layers/sha256")).len(), 2);

    // A plain root filesystem directory: one layer, links kept as links.
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", rootfs.join("shadow-link")).unwrap();
    let plain = store.import(&rootfs, "plain").unwrap();
    assert_eq!(plain.layers.len(), 1);
    let root = store.root("plain").unwrap();
    assert_eq!(
        std::fs::read(root.layers[0].join("bin/busybox")).unwrap(),
        busybox()
    );
    assert_eq!(
        std::fs::read_link(root.layers[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::read_link(root.layers[0].join("shadow-link")).unwrap(),
        Path::new("/etc/shadow")
    );
    assert!(root.env.iter().any(|e| e.starts_with("PATH=")));

    // A plain rootfs tarball, zstd-compressed.
    let mut t = Tar::new();
    t.dir("etc/", 0o755)
        .file("etc/os-release", 0o644, b"ID=test\n");
    let zst = work.path().join("rootfs.tar.zst");
    std::fs::write(&zst, zstd(&t.finish())).unwrap();
    let zinfo = store.import(&zst, "zstd-rootfs").unwrap();
    let root = store.root("zstd-rootfs").unwrap();
    assert_eq!(
        std::fs::read(root.layers[0].join("etc/os-release")).unwrap(),
        b"ID=test\n"
    );
    assert_eq!(zinfo.layers, [sha256(&std::fs::read(&zst).unwrap())]);

    // Removing keeps layers another image still uses.
    assert_eq!(store.list().unwrap().len(), 4);
    assert!(store.remove("local/busybox:layout").unwrap());
    assert!(store.root("layout-tar").is_ok());
    assert_eq!(entries(&store.path().join("layers/sha256")).len(), 4);
    assert!(store.remove("layout-tar").unwrap());
    assert_eq!(entries(&store.path().join("layers/sha256")).len(), 2);
    assert!(store.remove("plain").unwrap());
    assert!(store.remove("zstd-rootfs").unwrap());
    assert_store_empty(&store);
}

#[test]
fn a_layout_whose_blob_does_not_match_its_digest_is_refused() {
    let image = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let layout = work.path().join("layout");
    image.write_layout(&layout);
    let digest = &image.layer_digests()[1];
    let blob = layout.join("blobs/sha256").join(&digest[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let error = store.import(&layout, "bad").unwrap_err();
    assert!(
        matches!(error, ImageError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(store.get("bad").unwrap().is_none());
    assert_eq!(entries(&store.path().join("tmp")), Vec::<String>::new());

    // A layout blob that is a symlink (to a host file) is never read.
    let work2 = tempfile::tempdir().unwrap();
    let layout = work2.path().join("layout");
    image.write_layout(&layout);
    let blob = layout
        .join("blobs/sha256")
        .join(&image.layer_digests()[0][7..]);
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &blob).unwrap();
    let error = store.import(&layout, "linked").unwrap_err();
    assert!(error.to_string().contains("cannot open"), "{error}");
}

// ---------------------------------------------------------------- hostile archives

/// A file outside the store whose content, mode and owner must never change.
struct Canary {
    path: PathBuf,
    before: (String, u32, u32, u32),
}

impl Canary {
    fn plant(dir: &Path) -> Canary {
        let path = dir.join("canary");
        std::fs::write(&path, b"precious").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = Canary::observe(&path);
        Canary { path, before }
    }

    fn observe(path: &Path) -> (String, u32, u32, u32) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        (
            sha256(&std::fs::read(path).unwrap()),
            meta.mode(),
            meta.uid(),
            meta.gid(),
        )
    }

    fn check(&self) {
        assert_eq!(
            Canary::observe(&self.path),
            self.before,
            "the canary changed"
        );
        assert_eq!(
            entries(self.path.parent().unwrap()).len(),
            1,
            "nothing new next to the canary"
        );
    }
}

/// Imports `archive` (a plain rootfs tarball) into a fresh store under
/// `limits`, next to a canary.
fn import_hostile(
    archive: Vec<u8>,
    limits: UnpackLimits,
) -> (
    Result<(), ImageError>,
    ImageStore,
    tempfile::TempDir,
    Canary,
) {
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let canary = Canary::plant(&outside);
    // The store lives at a known depth, so `../../../outside/canary` from a
    // layer directory would reach the canary if followed.
    let store = ImageStore::open(&work.path().join("store"))
        .unwrap()
        .with_limits(limits);
    let tar = work.path().join("hostile.tar");
    std::fs::write(&tar, archive).unwrap();
    let result = store.import(&tar, "hostile").map(|_| ());
    (result, store, work, canary)
}

fn refused(archive: Vec<u8>, limits: UnpackLimits, expect: &str) {
    let (result, store, _work, canary) = import_hostile(archive, limits);
    let error = result.expect_err("the archive must be refused");
    let message = error.to_string();
    assert!(
        message.contains(expect),
        "expected `{expect}` in: {message}"
    );
    canary.check();
    assert_store_empty(&store);
}

#[test]
fn climbing_and_absolute_paths_are_refused() {
    let canary_rel = b"../../../../outside/canary";
    let mut t = Tar::new();
    t.file("ok", 0o644, b"fine")
        .raw(canary_rel, EntryType::Regular, 0o644, (0, 0), b"", b"pwned");
    refused(
        t.finish(),
        UnpackLimits::default(),
        "climbs out of the layer",
    );

    let mut t = Tar::new();
    t.raw(
        b"a/b/../../../x",
        EntryType::Regular,
        0o644,
        (0, 0),
        b"",
        b"pwned",
    );
    refused(
        t.finish(),
        UnpackLimits::default(),
        "climbs out of the layer",
    );

    let mut t = Tar::new();
    t.raw(
        b"/tmp/corral-absolute-canary",
        EntryType::Regular,
        0o644,
        (0, 0),
        b"",
        b"pwned",
    );
    refused(t.finish(), UnpackLimits::default(), "absolute path");
    assert!(!Path::new("/tmp/corral-absolute-canary").exists());
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    // Symlink to the canary's directory, then a file through it.
    let mut t = Tar::new();
    t.symlink("escape", outside.to_str().unwrap())
        .file("escape/canary", 0o777, b"pwned");
    let (result, store, _w, canary) = import_hostile_at(&work, t.finish());
    let message = result.unwrap_err().to_string();
    assert!(message.contains("goes through a symlink"), "{message}");
    canary.check();
    assert_store_empty(&store);

    // A relative symlink climbing out, then a directory and file under it.
    let mut t = Tar::new();
    t.symlink("up", "../../../../../..")
        .dir("up/tmp/", 0o777)
        .file("up/tmp/pwned", 0o644, b"x");
    refused(
        t.finish(),
        UnpackLimits::default(),
        "goes through a symlink",
    );

    // A symlink to the canary itself, then a file of the same name: the
    // symlink is replaced, never written through.
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("outside/canary");
    let mut t = Tar::new();
    t.symlink("victim", target.to_str().unwrap())
        .file("victim", 0o644, b"pwned");
    let (result, store, _w, canary) = import_hostile_at(&work, t.finish());
    result.unwrap();
    canary.check();
    let root = store.root("hostile").unwrap();
    let victim = root.layers[0].join("victim");
    assert!(std::fs::symlink_metadata(&victim).unwrap().is_file());
    assert_eq!(std::fs::read(victim).unwrap(), b"pwned");
}

/// Hostile program 7 (extract-race): a directory is swapped for a symlink
/// in the middle of a layer (a directory, a file in it, then a symlink of
/// the same name pointing outside, then more files "into" it), which is
/// what a racing writer would do to an unpacker that checks paths before
/// writing. Nothing is written outside the store.
#[test]
fn a_directory_swapped_for_a_symlink_mid_layer_writes_nothing_outside() {
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    let mut t = Tar::new();
    t.dir("d/", 0o755)
        .file("d/a", 0o644, b"a")
        .symlink("d", outside.to_str().unwrap())
        .file("d/canary", 0o777, b"pwned")
        .file("d/new", 0o644, b"pwned");
    let (result, store, _w, canary) = import_hostile_at(&work, t.finish());
    canary.check();
    assert!(
        !outside.join("new").exists(),
        "a file was written through the symlink"
    );
    match result {
        // Refused: the swap itself (`d` replaces a non-empty directory) or
        // the write through it.
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.contains("replaces a non-empty directory")
                    || message.contains("goes through a symlink"),
                "{message}"
            );
            assert_store_empty(&store);
        }
        // Confined: whatever the layer now holds, it holds inside the store.
        Ok(()) => {
            let root = store.root("hostile").unwrap();
            let d = root.layers[0].join("d");
            assert!(d.starts_with(work.path().join("store")));
        }
    }
}

fn import_hostile_at(
    work: &tempfile::TempDir,
    archive: Vec<u8>,
) -> (Result<(), ImageError>, ImageStore, (), Canary) {
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let canary = Canary::plant(&outside);
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let tar = work.path().join("hostile.tar");
    std::fs::write(&tar, archive).unwrap();
    let result = store.import(&tar, "hostile").map(|_| ());
    std::fs::remove_file(&tar).unwrap();
    (result, store, (), canary)
}

#[test]
fn hardlinks_only_reach_files_of_the_same_layer() {
    let work = tempfile::tempdir().unwrap();
    let canary_abs = work.path().join("outside/canary");
    let mut t = Tar::new();
    t.hardlink("grab", canary_abs.to_str().unwrap());
    let (result, store, _w, canary) = import_hostile_at(&work, t.finish());
    assert!(result.unwrap_err().to_string().contains("absolute path"));
    canary.check();
    assert_store_empty(&store);

    let mut t = Tar::new();
    t.hardlink("grab", "../../../../outside/canary");
    refused(
        t.finish(),
        UnpackLimits::default(),
        "climbs out of the layer",
    );

    // A path that exists on the host but not in this layer.
    let mut t = Tar::new();
    t.hardlink("passwd", "etc/passwd");
    refused(
        t.finish(),
        UnpackLimits::default(),
        "file earlier in this layer",
    );

    // A symlink to the outside, then a hardlink to the symlink.
    let mut t = Tar::new();
    t.symlink("s", "/etc/passwd").hardlink("h", "s");
    refused(
        t.finish(),
        UnpackLimits::default(),
        "file earlier in this layer",
    );

    // A file, then a hardlink to it: fine, same inode.
    let mut t = Tar::new();
    t.file("a", 0o644, b"shared").hardlink("b", "a");
    let (result, store, _w, canary) = import_hostile(t.finish(), UnpackLimits::default());
    result.unwrap();
    canary.check();
    let layer = &store.root("hostile").unwrap().layers[0];
    assert_eq!(
        std::fs::metadata(layer.join("a")).unwrap().ino(),
        std::fs::metadata(layer.join("b")).unwrap().ino()
    );
}

#[test]
fn devices_are_dropped_and_setid_bits_stripped() {
    let mut t = Tar::new();
    let device = |t: &mut Tar, name: &[u8], kind: EntryType| {
        let mut header = Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_mode(0o666);
        header.set_size(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_device_major(1).unwrap();
        header.set_device_minor(1).unwrap();
        header.set_cksum();
        t.builder.append(&header, &b""[..]).unwrap();
    };
    device(&mut t, b"dev/mem", EntryType::Char);
    device(&mut t, b"dev/sda", EntryType::Block);
    device(&mut t, b"dev/fifo", EntryType::Fifo);
    t.file("bin/su", 0o4755, b"setuid")
        .file("bin/wall", 0o2755, b"setgid")
        .dir("tmp/", 0o1777)
        .dir("shared/", 0o2775)
        .raw(b"bin/owned", EntryType::Regular, 0o6711, (0, 42), b"", b"x");
    let (result, store, _w, canary) = import_hostile(t.finish(), UnpackLimits::default());
    result.unwrap();
    canary.check();
    let layer = &store.root("hostile").unwrap().layers[0];
    for name in ["dev/mem", "dev/sda", "dev/fifo"] {
        assert!(
            std::fs::symlink_metadata(layer.join(name)).is_err(),
            "{name} must not exist"
        );
    }
    let mode = |p: &str| std::fs::metadata(layer.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("bin/su"), 0o755);
    assert_eq!(mode("bin/wall"), 0o755);
    assert_eq!(mode("bin/owned"), 0o711);
    assert_eq!(
        std::fs::metadata(layer.join("bin/owned")).unwrap().gid(),
        42
    );
    assert_eq!(mode("tmp"), 0o1777, "sticky kept on directories");
    assert_eq!(mode("shared"), 0o775);
}

#[test]
fn bombs_hit_the_entry_depth_and_byte_caps() {
    let limits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 100,
        max_depth: 8,
    };
    let mut t = Tar::new();
    for i in 0..101 {
        t.file(&format!("f{i}"), 0o644, b"");
    }
    refused(t.finish(), limits, "limit of 100 entries");

    let mut t = Tar::new();
    t.file("a/b/c/d/e/f/g/h/i", 0o644, b"deep");
    refused(t.finish(), limits, "limit of 8 path components");

    let mut t = Tar::new();
    t.file("big", 0o644, &vec![0u8; (1 << 20) + 1]);
    refused(t.finish(), limits, "limit of 1048576 bytes");

    // Many small files adding up past the cap.
    let mut t = Tar::new();
    for i in 0..5 {
        t.file(&format!("part{i}"), 0o644, &vec![7u8; 300 << 10]);
    }
    refused(t.finish(), limits, "limit of 1048576 bytes");

    // A gzip bomb: 64 MiB of zeros in a few KiB.
    let mut t = Tar::new();
    t.file("zeros", 0o644, &vec![0u8; 64 << 20]);
    let bomb = gzip(&t.finish());
    assert!(bomb.len() < 1 << 20);
    refused(bomb, limits, "limit of 1048576 bytes");

    // The default caps are the documented ones.
    let defaults = UnpackLimits::default();
    assert_eq!(
        (defaults.max_bytes, defaults.max_entries, defaults.max_depth),
        (4 << 30, 500_000, 128)
    );
}
