//! Sandboxes whose root is an OCI image's layers (idmapped lowers, a capped
//! writable layer on the sandbox's disk, overlayfs), under real runc as root, with the real agent.
//! The image is made here: Debian's static busybox in one layer, a second
//! layer overriding a file, whiting one out and making a directory opaque.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use corral_runtime::rootfs::{self, mounts_under};
use corral_runtime::{
    ImageLayers, Limits, OciRuntime, RootSource, Sandbox, SandboxSpec, WritableLayer,
};
use corral_types::agent::{ExecRequest, ExecResult};

/// The agent binary: `CORRAL_AGENT_BIN` (`make test` sets the static build
/// that ships), else the workspace's debug build (`cargo build -p
/// corral-agent`). A dynamically linked agent gets its libraries as an
/// extra bottom layer (the busybox image has none).
fn agent() -> PathBuf {
    corral_runtime::test_agent_binary()
}

/// The shared libraries a dynamically linked `binary` needs, as a layer
/// (None for a static one).
fn library_layer(binary: &Path, layer: &Path) -> Option<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains('/') {
        return None;
    }
    for lib in text.split_whitespace().filter(|word| word.starts_with('/')) {
        let inside = layer.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::copy(lib, &inside).unwrap();
    }
    Some(layer.to_path_buf())
}

const APPLETS: &[&str] = &[
    "ln",
    "sh",
    "ls",
    "id",
    "cat",
    "echo",
    "dd",
    "touch",
    "rm",
    "mkdir",
    "stat",
    "printf",
    "test",
    "head",
    "wc",
    "sha256sum",
    "sleep",
    "tr",
    "sort",
];

/// Two layers: busybox, `/etc/motd`, `/etc/removed`, `/opaque/old`, a
/// device node `/devnull` (c 1:3, mode 0666); then `/etc/motd` replaced,
/// `/etc/removed` whited out, `/opaque` opaque with only `new` in it.
struct Image {
    _dir: tempfile::TempDir,
    layers: Vec<PathBuf>,
}

fn busybox_image() -> Image {
    let dir = tempfile::tempdir().unwrap();
    let mut layers = Vec::new();
    if let Some(libs) = library_layer(&agent(), &dir.path().join("libs")) {
        layers.push(libs);
    }
    let one = dir.path().join("layer1");
    for sub in ["bin", "etc", "opaque", "root"] {
        std::fs::create_dir_all(one.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", one.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", one.join("bin").join(applet)).unwrap();
    }
    std::fs::write(one.join("etc/motd"), "layer one\n").unwrap();
    std::fs::write(one.join("etc/removed"), "still here\n").unwrap();
    std::fs::write(one.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(one.join("opaque/old"), "old\n").unwrap();
    mknod(&one.join("devnull"), 1, 3);
    std::fs::set_permissions(one.join("devnull"), PermissionsExt::from_mode(0o666)).unwrap();

    let two = dir.path().join("layer2");
    std::fs::create_dir_all(two.join("etc")).unwrap();
    std::fs::create_dir_all(two.join("opaque")).unwrap();
    std::fs::write(two.join("etc/motd"), "layer two\n").unwrap();
    mknod(&two.join("etc/removed"), 0, 0);
    std::fs::write(two.join("opaque/new"), "new\n").unwrap();
    let set = Command::new("python3")
        .args([
            "-c",
            "import os, sys; os.setxattr(sys.argv[1], 'trusted.overlay.opaque', b'y')",
        ])
        .arg(two.join("opaque"))
        .status()
        .unwrap();
    assert!(set.success(), "setting the opaque xattr");
    layers.push(one);
    layers.push(two);
    Image { _dir: dir, layers }
}

fn mknod(path: &Path, major: u32, minor: u32) {
    let status = Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "mknod {}", path.display());
}

/// Each entry of a tree: (mode with type, uid, gid, contents or link target
/// or device number or opaque mark).
type Tree = BTreeMap<PathBuf, (u32, u32, u32, Vec<u8>)>;

/// Everything about a tree that a sandbox must not change.
fn snapshot(root: &Path) -> Tree {
    let mut all = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        let content = if kind.is_symlink() {
            std::fs::read_link(&path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if kind.is_file() {
            std::fs::read(&path).unwrap()
        } else if kind.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
            Vec::new()
        } else {
            meta.rdev().to_le_bytes().to_vec()
        };
        all.insert(path, (meta.mode(), meta.uid(), meta.gid(), content));
    }
    // The opaque marks are part of the layers too (one Python for the tree).
    let marks = Command::new("python3")
        .args([
            "-c",
            "import os, sys\n\
             for d, _, _ in os.walk(sys.argv[1]):\n\
             \ttry: print(d, os.getxattr(d, 'trusted.overlay.opaque'))\n\
             \texcept OSError: pass",
        ])
        .arg(root)
        .output()
        .unwrap();
    assert!(marks.status.success(), "{marks:?}");
    all.insert(root.join("(opaque marks)"), (0, 0, 0, marks.stdout));
    all
}

fn snapshot_all(image: &Image) -> Vec<Tree> {
    image.layers.iter().map(|l| snapshot(l)).collect()
}

/// A distinct uid range per sandbox.
fn next_base() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    700_000 + NEXT.fetch_add(1, Ordering::Relaxed) * 65_536
}

struct Running {
    sandbox: Sandbox,
    dir: PathBuf,
    id: String,
    tmp: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.sandbox.destroy();
    }
}

fn root_of(image: &Image, writable: WritableLayer) -> RootSource {
    RootSource::Image {
        image: ImageLayers {
            layers: image.layers.clone(),
            env: vec!["PATH=/bin".into(), "IMAGE_SAYS=hello".into()],
            workdir: "/".into(),
        },
        writable,
    }
}

fn runtime(tmp: &Path) -> OciRuntime {
    OciRuntime {
        binary: PathBuf::from(
            std::env::var("CORRAL_TEST_OCI_RUNTIME").unwrap_or_else(|_| "runc".into()),
        ),
        root: tmp.join("state"),
    }
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        argv: Vec::new(),
        env: Vec::new(),
        cwd: "/tmp".into(),
        host_id_base: next_base(),
        limits: Limits::default(),
        agent: None,
    }
}

fn start(name: &str, image: &Image, writable: WritableLayer) -> Running {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sandbox");
    let id = format!("corral-rootfs-{name}-{}", std::process::id());
    let sandbox = Sandbox::start_with_root(
        &runtime(tmp.path()),
        &id,
        &dir,
        spec(),
        &agent(),
        &root_of(image, writable),
    )
    .unwrap();
    Running {
        sandbox,
        dir: dir.canonicalize().unwrap(),
        id,
        tmp,
    }
}

const ROOMY: WritableLayer = WritableLayer {
    size_mb: 32,
    inodes: 4096,
};

fn sh(sandbox: &Sandbox, script: &str) -> ExecResult {
    let request: ExecRequest = serde_json::from_value(serde_json::json!({
        "argv": ["/bin/sh", "-c", script],
        "env": [["PATH", "/bin"]],
        "cwd": "/",
        "timeout_ms": 30_000,
        "output_limit": 1 << 20,
    }))
    .unwrap();
    sandbox.exec(request).unwrap()
}

#[test]
fn sandbox_root_owns_the_image_and_writes_to_its_own_layer_only() {
    let image = busybox_image();
    let before = snapshot_all(&image);
    let running = start("own", &image, ROOMY);
    let sandbox = &running.sandbox;

    let who = sh(sandbox, "id -u; ls -ln /bin/busybox");
    assert_eq!(who.exit_code, Some(0), "{who:?}");
    let mut lines = who.stdout.lines();
    assert_eq!(lines.next(), Some("0"));
    let listing: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        (listing[2], listing[3]),
        ("0", "0"),
        "busybox is root's inside: {who:?}"
    );

    // New files, and a lower file changed (copied up).
    let write = sh(
        sandbox,
        "echo x > /etc/newfile && echo changed >> /etc/motd && cat /etc/newfile /etc/motd \
         && ls -ln /etc/newfile && mkdir -p /root/work && echo w > /root/work/f && cat /root/work/f",
    );
    assert_eq!(write.exit_code, Some(0), "{write:?}");
    assert!(
        write
            .stdout
            .starts_with("x\nlayer two\nchanged\n-rw-r--r--    1 0        0"),
        "{write:?}"
    );
    assert!(write.stdout.ends_with("w\n"), "{write:?}");

    // The upper image layer wins, its whiteout hides, its opaque directory
    // hides what is below; /etc/hosts and /etc/hostname are ours (the image
    // has none); the image's environment reaches PID 1 (runc adds HOME from
    // the image's /etc/passwd).
    let view = sh(
        sandbox,
        "cat /etc/removed 2>&1; ls /opaque; cat /etc/hosts /etc/hostname",
    );
    assert_eq!(
        view.stdout,
        "cat: can't open '/etc/removed': No such file or directory\nnew\n\
         127.0.0.1 localhost\n::1 localhost\nsandbox\n",
        "{view:?}"
    );
    // Read from the host: inside, the agent is not dumpable.
    let pid = runtime(running.tmp.path()).init_pid(&running.id).unwrap();
    let mut environment: Vec<String> =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
            .split('\0')
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
    environment.sort();
    assert_eq!(environment, ["HOME=/root", "IMAGE_SAYS=hello", "PATH=/bin"]);

    // A device node in an image does not open (the overlay is nodev), and
    // nothing setuid helps (nosuid): the root cannot reach host devices.
    let device = sh(sandbox, "echo x > /devnull");
    assert_ne!(device.exit_code, Some(0), "{device:?}");
    assert!(device.stderr.contains("Permission denied"), "{device:?}");

    // The host's layers are untouched: contents, modes and owners.
    assert_eq!(snapshot_all(&image), before, "the layers changed");
    // The writes went to the sandbox's writable layer, owned by its root.
    let upper = running.dir.join("rw/upper/etc/newfile");
    let meta = std::fs::metadata(&upper).unwrap();
    assert_eq!(meta.uid(), running_base(&running));

    drop(running);
    assert_eq!(snapshot_all(&image), before, "the layers changed");
}

/// The host uid sandbox root maps to, read back from the upper layer's root.
fn running_base(running: &Running) -> u32 {
    std::fs::metadata(running.dir.join("rw/upper"))
        .unwrap()
        .uid()
}

/// Bytes in files under `dir` on `dir`'s own filesystem (mounts skipped).
fn bytes_on_host(dir: &Path) -> u64 {
    let device = std::fs::symlink_metadata(dir).unwrap().dev();
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != device {
            continue;
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                todo.extend(entries.flatten().map(|e| e.path()));
            }
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

fn free_bytes(path: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).unwrap();
    stat.blocks_available() * stat.fragment_size()
}

#[test]
fn the_writable_layer_is_capped_in_bytes_and_files() {
    let image = busybox_image();
    let before = snapshot_all(&image);
    let running = start(
        "caps",
        &image,
        WritableLayer {
            size_mb: 8,
            inodes: 300,
        },
    );
    let sandbox = &running.sandbox;
    let host_free = free_bytes(&running.dir);
    let host_used = bytes_on_host(&running.dir);

    // 4 × 40 MiB asked for, 8 MiB allowed.
    let fill = sh(
        sandbox,
        "for i in 1 2 3 4; do dd if=/dev/zero of=/big$i bs=1M count=40 2>&1 | head -n1; done; \
         cat /big1 /big2 /big3 /big4 | wc -c",
    );
    assert!(fill.stdout.contains("No space left on device"), "{fill:?}");
    let written: u64 = fill.stdout.lines().last().unwrap().trim().parse().unwrap();
    assert!(written <= 8 << 20, "{written} bytes fit in an 8 MiB layer");
    assert!(written >= 4 << 20, "only {written} bytes written");
    // Nothing reached the host's disk: no file under the sandbox directory
    // grew, and the filesystem did not lose what was asked for (other
    // builds may write meanwhile, hence the margin).
    assert!(
        bytes_on_host(&running.dir) <= host_used + (64 << 10),
        "the sandbox wrote to the host's disk"
    );
    assert!(
        free_bytes(&running.dir) + (100 << 20) >= host_free,
        "the host's free space dropped"
    );

    // Files: at most the inode cap, then ENOSPC.
    let files = sh(
        sandbox,
        "rm /big1 /big2 /big3 /big4; mkdir /many; i=0; \
         while [ $i -lt 1000 ]; do touch /many/f$i || { echo stopped at $i; exit 9; }; \
         i=$((i+1)); done",
    );
    assert_eq!(files.exit_code, Some(9), "{files:?}");
    assert!(
        files.stderr.contains("No space left on device"),
        "{files:?}"
    );
    let stopped: u32 = files
        .stdout
        .trim()
        .trim_start_matches("stopped at ")
        .parse()
        .unwrap();
    assert!(stopped < 300, "{stopped} files in a 300-inode layer");

    // /tmp is on the same disk: full too, and usable again once the
    // files are gone.
    let full = sh(sandbox, "echo t > /tmp/t");
    assert!(full.stderr.contains("No space left on device"), "{full:?}");
    let tmp = sh(sandbox, "rm -r /many && echo t > /tmp/t && cat /tmp/t");
    assert_eq!(tmp.stdout, "t\n", "{tmp:?}");

    drop(running);
    assert_eq!(snapshot_all(&image), before, "the layers changed");
}

#[test]
fn two_sandboxes_of_one_image_do_not_see_each_others_writes() {
    let image = busybox_image();
    let before = snapshot_all(&image);
    let a = start("share-a", &image, ROOMY);
    let b = start("share-b", &image, ROOMY);
    assert_eq!(
        sh(&a.sandbox, "echo a > /etc/mine; echo a >> /etc/motd").exit_code,
        Some(0)
    );
    assert_eq!(
        sh(&b.sandbox, "echo b > /etc/mine; rm /bin/ls").exit_code,
        Some(0)
    );
    let in_a = sh(&a.sandbox, "cat /etc/mine /etc/motd; ls /bin/ls");
    assert_eq!(in_a.stdout, "a\nlayer two\na\n/bin/ls\n", "{in_a:?}");
    let in_b = sh(&b.sandbox, "cat /etc/mine /etc/motd; ls /bin/ls 2>&1");
    assert_eq!(
        in_b.stdout, "b\nlayer two\nls: /bin/ls: No such file or directory\n",
        "{in_b:?}"
    );
    drop(a);
    drop(b);
    assert_eq!(snapshot_all(&image), before, "the layers changed");
}

#[test]
fn stop_keeps_the_files_and_destroy_leaves_no_mount_and_no_directory() {
    let image = busybox_image();
    let before = snapshot_all(&image);
    let running = start("stop", &image, ROOMY);
    let sandbox = &running.sandbox;
    let dir = running.dir.clone();
    assert_eq!(
        sh(sandbox, "echo kept > /etc/kept; echo home > /root/note").exit_code,
        Some(0)
    );
    let mounted = mounts_under(&dir).unwrap();
    assert!(
        mounted.contains(&dir.join("bundle/rootfs"))
            && mounted.contains(&dir.join("rw"))
            && mounted.contains(&dir.join("lower/0")),
        "{mounted:?}"
    );

    sandbox.stop();
    assert!(!sandbox.is_running());
    assert_eq!(
        mounts_under(&dir).unwrap(),
        mounted,
        "stop keeps the mounts"
    );
    sandbox.stop(); // idempotent

    sandbox.restart().unwrap();
    assert!(sandbox.is_running());
    let after = sh(sandbox, "cat /etc/kept /root/note");
    assert_eq!(after.stdout, "kept\nhome\n", "{after:?}");

    // Links the sandbox plants towards host paths are not followed by the
    // host's clean-up.
    let canary = running.tmp.path().join("canary");
    std::fs::write(&canary, "alive").unwrap();
    let plant = format!(
        "ln -s / /etc/to-root; ln -s {c} /root/to-canary; ln -s {c} /to-canary; \
         mkdir -p /rw /lower /bundle; ln -s {c} /rw/upper; ln -s / /lower/0",
        c = canary.display()
    );
    assert_eq!(sh(sandbox, &plant).exit_code, Some(0));

    sandbox.destroy();
    assert!(mounts_under(&dir).unwrap().is_empty());
    assert!(!dir.exists());
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "alive");
    sandbox.destroy(); // idempotent
    assert!(sandbox.restart().is_err());
    assert_eq!(snapshot_all(&image), before, "the layers changed");
}

#[test]
fn a_half_made_sandbox_is_unmounted_and_removed() {
    let image = busybox_image();
    let before = snapshot_all(&image);
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().canonicalize().unwrap();

    // A missing layer after a good one: the first is mounted, then it fails.
    let mut broken = image.layers.clone();
    broken.push(tmp_path.join("no-such-layer"));
    let root = RootSource::Image {
        image: ImageLayers {
            layers: broken,
            env: Vec::new(),
            workdir: String::new(),
        },
        writable: ROOMY,
    };
    let dir = tmp_path.join("broken");
    let error = Sandbox::start_with_root(
        &runtime(&tmp_path),
        "corral-rootfs-broken",
        &dir,
        spec(),
        &agent(),
        &root,
    )
    .unwrap_err();
    assert!(error.to_string().contains("no-such-layer"), "{error}");
    assert!(!dir.exists());

    // Everything mounted, then the runtime cannot even start.
    let mut no_runtime = runtime(&tmp_path);
    no_runtime.binary = PathBuf::from("/nonexistent/runc");
    let dir = tmp_path.join("no-runtime");
    assert!(
        Sandbox::start_with_root(
            &no_runtime,
            "corral-rootfs-noruntime",
            &dir,
            spec(),
            &agent(),
            &root_of(&image, ROOMY),
        )
        .is_err()
    );
    assert!(!dir.exists());
    assert!(mounts_under(&tmp_path).unwrap().is_empty());

    // A zero cap (an empty disk) is refused.
    let dir = tmp_path.join("uncapped");
    let uncapped = root_of(
        &image,
        WritableLayer {
            size_mb: 0,
            inodes: 100,
        },
    );
    let error = Sandbox::start_with_root(
        &runtime(&tmp_path),
        "corral-rootfs-uncapped",
        &dir,
        spec(),
        &agent(),
        &uncapped,
    )
    .unwrap_err();
    assert!(error.to_string().contains("cap"), "{error}");
    assert!(!dir.exists());

    // Unmounting a root that was never mounted is fine.
    std::fs::create_dir(tmp_path.join("empty")).unwrap();
    rootfs::unmount(
        &tmp_path.join("empty"),
        &tmp_path.join("empty/bundle/rootfs"),
    )
    .unwrap();
    assert_eq!(snapshot_all(&image), before, "the layers changed");
}

#[test]
fn the_image_knows_which_files_it_has() {
    let image = busybox_image();
    let layers = ImageLayers {
        layers: image.layers.clone(),
        env: Vec::new(),
        workdir: String::new(),
    };
    assert!(layers.has("/etc/motd"));
    assert!(layers.has("/bin/sh"));
    assert!(!layers.has("/etc/hosts"));
    assert!(!layers.has("/etc/removed"), "whited out");
    assert!(!layers.has("/opaque/old"), "under an opaque directory");
    assert!(layers.has("/opaque/new"));
    assert!(!layers.has("/etc/motd/x"));
}

/// End to end with the image store: a plain root filesystem imported (the
/// store's own unpacker made the layer) boots, owned by sandbox root.
#[test]
fn an_image_from_the_store_boots_with_its_environment() {
    let image = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let store = corral_runtime::image::ImageStore::open(&work.path().join("store")).unwrap();
    // The busybox layer (without the device node, which the store drops
    // anyway) as a plain root filesystem.
    let plain = work.path().join("plain");
    let copy = Command::new("cp")
        .arg("-a")
        .arg(image.layers.iter().rev().nth(1).unwrap())
        .arg(&plain)
        .status()
        .unwrap();
    assert!(copy.success());
    std::fs::remove_file(plain.join("devnull")).unwrap();
    store.import(&plain, "local/busybox:rootfs").unwrap();
    let root = store.root("local/busybox:rootfs").unwrap();
    let before: Vec<Tree> = root.layers.iter().map(|l| snapshot(l)).collect();

    // Under the store's layers, the agent's libraries if it needs any.
    let mut layers: Vec<PathBuf> = image.layers[..image.layers.len() - 2].to_vec();
    layers.extend(root.layers.iter().cloned());
    let source = RootSource::Image {
        image: ImageLayers {
            layers,
            env: root.env.clone(),
            workdir: root.workdir.clone(),
        },
        writable: ROOMY,
    };
    let base_env = source.base_env();
    assert!(base_env.iter().any(|(k, _)| k == "PATH"), "{base_env:?}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sandbox");
    let sandbox = Sandbox::start_with_root(
        &runtime(tmp.path()),
        &format!("corral-rootfs-store-{}", std::process::id()),
        &dir,
        spec(),
        &agent(),
        &source,
    )
    .unwrap();
    let out = sh(
        &sandbox,
        "id -u; stat -c '%u %g' /bin/busybox /etc; echo ok > /etc/new && cat /etc/new",
    );
    sandbox.destroy();
    assert_eq!(out.stdout, "0\n0 0\n0 0\nok\n", "{out:?}");
    let after: Vec<Tree> = root.layers.iter().map(|l| snapshot(l)).collect();
    assert_eq!(after, before, "the store's layer changed");
}

/// Many layers (more than a one-page `lowerdir=` list of these paths would
/// hold): each is mounted and stacked in order.
#[test]
fn an_image_of_many_layers_stacks_them_in_order() {
    let image = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let mut layers = image.layers.clone();
    for i in 0..80 {
        let layer = work
            .path()
            .join(format!("a-rather-long-layer-directory-name-{i:03}"));
        std::fs::create_dir_all(layer.join("layers")).unwrap();
        std::fs::write(layer.join(format!("layers/{i}")), "").unwrap();
        // Each layer overrides the one below.
        std::fs::write(layer.join("layers/top"), format!("{i}\n")).unwrap();
        layers.push(layer);
    }
    let source = RootSource::Image {
        image: ImageLayers {
            layers,
            env: Vec::new(),
            workdir: String::new(),
        },
        writable: ROOMY,
    };
    let tmp = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start_with_root(
        &runtime(tmp.path()),
        &format!("corral-rootfs-many-{}", std::process::id()),
        &tmp.path().join("sandbox"),
        spec(),
        &agent(),
        &source,
    )
    .unwrap();
    let out = sh(&sandbox, "ls /layers | wc -l; cat /layers/top");
    sandbox.destroy();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["81", "79"],
        "{out:?}"
    );
    assert!(
        mounts_under(&tmp.path().canonicalize().unwrap())
            .unwrap()
            .is_empty()
    );
}
