//! `corral image …` as a user runs it: the real binary against a data
//! directory, and a real registry (Debian's `docker-registry`) on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn corral(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CORRAL_LOG__LEVEL", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "corral failed: {}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// A one-line `error: …` on stderr and a failing exit code.
fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure: {}",
        text(&output.stdout)
    );
    let stderr = text(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static; scripts/deps.sh test installs it)");
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
}

struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
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
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
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
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Pushes a one-layer image (the tar of `root`) with the plain registry API.
    fn push(&self, repo: &str, tag: &str, root: &Path, auth: Option<(&str, &str)>) -> String {
        let layer = Command::new("tar")
            .arg("-C")
            .arg(root)
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        assert!(layer.status.success());
        let layer = layer.stdout;
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        })
        .to_string()
        .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": sha256(&layer), "size": layer.len()}],
        })
        .to_string()
        .into_bytes();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let with_auth = |request: reqwest::RequestBuilder| match auth {
                Some((u, p)) => request.basic_auth(u, Some(p)),
                None => request,
            };
            for blob in [&config, &layer] {
                let start = with_auth(
                    client.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.addr)),
                )
                .send()
                .await
                .unwrap();
                assert_eq!(start.status(), 202);
                let location = start.headers()["location"].to_str().unwrap().to_owned();
                let location = if location.starts_with("http") {
                    location
                } else {
                    format!("http://{}{location}", self.addr)
                };
                let separator = if location.contains('?') { '&' } else { '?' };
                let done =
                    with_auth(client.put(format!("{location}{separator}digest={}", sha256(blob))))
                        .body(blob.clone())
                        .send()
                        .await
                        .unwrap();
                assert_eq!(done.status(), 201);
            }
            let put =
                with_auth(client.put(format!("http://{}/v2/{repo}/manifests/{tag}", self.addr)))
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(manifest.clone())
                    .send()
                    .await
                    .unwrap();
            assert_eq!(put.status(), 201);
        });
        sha256(&layer)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn import_ls_rm_and_pull_through_the_cli() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let root = work.path().join("rootfs");
    rootfs(&root);

    // import
    let out = ok(&corral(
        &data,
        &[
            "image",
            "import",
            root.to_str().unwrap(),
            "--name",
            "local/busybox:1",
        ],
        None,
    ));
    assert!(
        out.starts_with("imported docker.io/local/busybox:1 ("),
        "{out}"
    );
    assert!(data.join("images/layers/sha256").is_dir());

    // pull from a loopback registry, over plain HTTP as configured
    let registry = Registry::start(None);
    let layer = registry.push("cli/busybox", "1", &root, None);
    let reference = format!("{}/cli/busybox:1", registry.addr);
    let pulled = corral(
        &data,
        &[
            "image",
            "pull",
            &reference,
            "--insecure-registry",
            &registry.addr,
        ],
        None,
    );
    ok(&pulled);
    let progress = text(&pulled.stderr);
    assert!(
        progress.contains(&format!("{}: downloading", &layer[7..19])),
        "{progress}"
    );
    assert!(progress.contains(" MB"), "{progress}");
    assert!(
        progress
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with(&format!("pulled {reference} (")),
        "{progress}"
    );
    let unpacked = data.join("images/layers/sha256").join(&layer[7..]);
    assert_eq!(
        std::fs::read(unpacked.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    // Pulling again downloads nothing.
    let again = corral(
        &data,
        &[
            "image",
            "pull",
            &reference,
            "--insecure-registry",
            &registry.addr,
        ],
        None,
    );
    ok(&again);
    assert!(
        text(&again.stderr).contains("already present"),
        "{}",
        text(&again.stderr)
    );

    // Without --insecure-registry (or `sandbox.allowed_registries`) a
    // loopback registry is refused before anything connects.
    let err = failed(&corral(&data, &["image", "pull", &reference], None));
    assert!(
        err.contains("refusing to pull") && err.contains("allowed_registries"),
        "{err}"
    );

    // ls, table and JSON
    let table = ok(&corral(&data, &["image", "ls"], None));
    assert!(table.starts_with("REFERENCE"), "{table}");
    assert!(table.contains("docker.io/local/busybox:1"), "{table}");
    assert!(table.contains(&reference), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&corral(&data, &["image", "ls", "--json"], None))).unwrap();
    let images = json.as_array().unwrap();
    assert_eq!(images.len(), 2);
    let cli = images
        .iter()
        .find(|i| i["reference"] == reference.as_str())
        .unwrap();
    assert_eq!(cli["layers"], serde_json::json!([layer]));
    assert_eq!(cli["cmd"], serde_json::json!(["/bin/sh"]));

    // rm, then rm again
    let out = ok(&corral(&data, &["image", "rm", "local/busybox:1"], None));
    assert_eq!(out.trim(), "removed docker.io/local/busybox:1");
    let err = failed(&corral(&data, &["image", "rm", "local/busybox:1"], None));
    assert_eq!(
        err.trim(),
        "error: no image named docker.io/local/busybox:1"
    );
    let out = ok(&corral(&data, &["image", "rm", &reference], None));
    assert!(out.contains("removed"));
    assert_eq!(
        ok(&corral(&data, &["image", "ls", "--json"], None)).trim(),
        "[]"
    );
    assert_eq!(
        std::fs::read_dir(data.join("images/layers/sha256"))
            .unwrap()
            .count(),
        0
    );

    // import of something that is not there
    let err = failed(&corral(
        &data,
        &["image", "import", "/nonexistent/rootfs", "--name", "x"],
        None,
    ));
    assert!(err.contains("/nonexistent/rootfs"), "{err}");
}

#[test]
fn pull_with_registry_credentials_from_stdin() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let root = work.path().join("rootfs");
    rootfs(&root);
    let registry = Registry::start(Some(("bob", "hunter2")));
    registry.push("private/img", "v1", &root, Some(("bob", "hunter2")));
    let reference = format!("{}/private/img:v1", registry.addr);
    let pull = |password: &str| {
        corral(
            &data,
            &[
                "image",
                "pull",
                &reference,
                "--insecure-registry",
                &registry.addr,
                "--username",
                "bob",
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        )
    };
    let err = failed(&pull("wrong"));
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
    ok(&pull("hunter2"));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&corral(&data, &["image", "ls", "--json"], None))).unwrap();
    assert_eq!(json[0]["reference"], reference.as_str());
}

/// A server process, stopped (SIGTERM, then waited for) however the test ends.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// The agent binary the sandboxes run (`CORRAL_AGENT_BIN`: the static build
/// `make test` uses; else the debug build).
fn agent() -> std::path::PathBuf {
    corral_runtime::test_agent_binary()
}

/// An image root that can run the agent: busybox, plus the agent's shared
/// libraries when it is not the static build.
fn bootable_rootfs(dir: &Path) {
    rootfs(dir);
    let ldd = Command::new("ldd").arg(agent()).output().unwrap();
    for path in text(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let inside = dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::copy(path, &inside).unwrap();
    }
}

/// The whole path a user takes: an image in a registry, a server that pulls
/// it on the first create that names it, a sandbox running it, and the image
/// then listed by `corral image ls` on the same host.
#[test]
fn a_sandbox_runs_an_image_the_server_pulls_from_a_registry() {
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    bootable_rootfs(root.path());
    let registry = Registry::start(None);
    registry.push("apps/tool", "2", root.path(), None);
    let reference = format!("{}/apps/tool:2", registry.addr);

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Stopped(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CORRAL_LOG__LEVEL", "warn")
            .env("CORRAL_SANDBOX__AGENT", agent())
            .env(
                "CORRAL_SANDBOX__INSECURE_REGISTRIES",
                format!("[\"{}\"]", registry.addr),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{base}/ready")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let post = |path: &str, token: Option<&str>, body: serde_json::Value| {
            let mut request = client.post(format!("{base}{path}")).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        let registered = post(
            "/api/v1/auth/register",
            None,
            serde_json::json!({"email": "u@example.com", "username": "user", "password": "correct horse battery"}),
        )
        .await
        .unwrap();
        assert_eq!(registered.status(), 201);
        let login: serde_json::Value = post(
            "/api/v1/auth/login",
            None,
            serde_json::json!({"login": "user", "password": "correct horse battery"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let token = login["access_token"].as_str().unwrap().to_owned();
        let created = post("/api/v1/sandboxes", Some(&token), serde_json::json!({"image": reference}))
            .await
            .unwrap();
        let status = created.status();
        let sandbox: serde_json::Value = created.json().await.unwrap();
        assert_eq!(status, 201, "{sandbox}");
        assert_eq!(sandbox["image"], reference);
        let id = sandbox["id"].as_str().unwrap().to_owned();
        let out: serde_json::Value = post(
            &format!("/api/v1/sandboxes/{id}/exec"),
            Some(&token),
            serde_json::json!({"command": "echo $PATH; busybox id -u; busybox ls /"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let deleted = client
            .delete(format!("{base}/api/v1/sandboxes/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        (out, deleted, token)
    });
    // The same image through the CLI: create, exec, remove.
    let (out, deleted, token) = outcome;
    let config = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CORRAL_URL", &base)
            .env("CORRAL_TOKEN", &token)
            .env("CORRAL_CONFIG_DIR", config.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let created = cli(&["sandbox", "create", "--image", &reference, "--json"]);
    let created: serde_json::Value = serde_json::from_str(&ok(&created)).unwrap();
    assert_eq!(created["image"], reference);
    let sandbox = created["id"].as_str().unwrap().to_owned();
    let ran = cli(&[
        "sandbox",
        "exec",
        &sandbox,
        "--",
        "busybox",
        "echo",
        "from the image",
    ]);
    assert_eq!(ok(&ran), "from the image\n");
    let code = cli(&["sandbox", "exec", &sandbox, "-c", "exit 7"]);
    assert_eq!(code.status.code(), Some(7));
    // An image a sandbox runs on is not removed: one clear error naming the
    // sandbox, and the sandbox still works.
    let refused = failed(&corral(data.path(), &["image", "rm", &reference], None));
    assert!(
        refused.contains("in use") && refused.contains(&sandbox),
        "{refused}"
    );
    assert!(
        ok(&cli(&[
            "sandbox", "exec", &sandbox, "--", "busybox", "ls", "/"
        ]))
        .contains("bin\n")
    );
    // A stopped sandbox still needs it (it starts from it again).
    ok(&cli(&["sandbox", "stop", &sandbox]));
    failed(&corral(data.path(), &["image", "rm", &reference], None));
    ok(&cli(&["sandbox", "rm", &sandbox]));
    // Once no sandbox uses it, it goes.
    let removed = ok(&corral(data.path(), &["image", "rm", &reference], None));
    assert!(removed.contains("removed"), "{removed}");
    let stdout = out["stdout"].as_str().unwrap();
    assert!(
        stdout.starts_with("/bin\n0\n"),
        "the image's PATH, sandbox root: {out}"
    );
    assert!(stdout.contains("bin\n"), "{out}");
    assert!(
        !stdout.contains("usr\n"),
        "the image's root, not the host's: {out}"
    );
    assert_eq!(deleted, 204);
    // The server pulled it into the store the CLI manages (and `image rm`
    // above removed it from there).
    let listed = ok(&corral(data.path(), &["image", "ls", "--json"], None));
    assert!(!listed.contains(&reference), "{listed}");
}
