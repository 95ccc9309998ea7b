//! Hostile programs of `../shared/security.md` that attack the platform
//! through the API (symlinks the platform later reads or writes, network
//! escapes, descriptor and early-fork floods). Each checks the outcome on
//! the host: canary files, the test process's own secrets, the server's
//! answers. The isolation-only items run in `corral-runtime`'s tests.

use std::os::unix::fs::MetadataExt;

use axum::body::Body;
use http::Request;
use serde_json::json;
use sha2::Digest;

use crate::sandboxes::app_in;
use crate::support::TestApp;

/// A host file's hash, owner and mode.
fn fingerprint(path: &std::path::Path) -> (Vec<u8>, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (
        sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec(),
        meta.uid(),
        meta.mode(),
    )
}

struct Hostile {
    app: TestApp,
    key: String,
    id: String,
    _dir: tempfile::TempDir,
}

impl Hostile {
    async fn new() -> Hostile {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(corral_store::Backend::Sqlite, dir.path()).await;
        let (key, _) = app.register_and_login("mallory").await;
        let created = app
            .call("POST", "/api/v1/sandboxes", &key, Some(json!({})))
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let id = created.json()["id"].as_str().unwrap().to_owned();
        Hostile {
            app,
            key,
            id,
            _dir: dir,
        }
    }

    async fn sh(&self, command: &str) -> serde_json::Value {
        let out = self
            .app
            .call(
                "POST",
                &format!("/api/v1/sandboxes/{}/exec", self.id),
                &self.key,
                Some(json!({ "command": command, "timeout_ms": 20_000 })),
            )
            .await;
        assert_eq!(out.status, 200, "{}", out.text());
        out.json()
    }

    async fn files(
        &self,
        method: &str,
        op: &str,
        body: Option<serde_json::Value>,
    ) -> crate::support::TestResponse {
        self.app
            .call(
                method,
                &format!("/api/v1/sandboxes/{}/files{op}", self.id),
                &self.key,
                body,
            )
            .await
    }

    async fn upload(&self, path: &str, bytes: &[u8]) -> crate::support::TestResponse {
        let request = Request::put(format!(
            "/api/v1/sandboxes/{}/files/content?path={path}",
            self.id
        ))
        .header("authorization", format!("Bearer {}", self.key))
        .header("content-type", "application/octet-stream")
        .body(Body::from(bytes.to_vec()))
        .unwrap();
        self.app.send(request).await
    }
}

/// #1 symlink-plant, #2 symlink-chown, #5 download-symlink: links planted
/// inside the sandbox resolve inside it, so a host canary at the very path
/// they name is never read, written, chmod-ed, moved or deleted.
#[tokio::test]
async fn planted_symlinks_never_reach_the_host() {
    let hostile = Hostile::new().await;
    // A canary on the host, at a path the sandbox also has a name for.
    let canary_dir = tempfile::Builder::new()
        .prefix("corral-canary")
        .tempdir_in("/tmp")
        .unwrap();
    let canary = canary_dir.path().join("canary");
    std::fs::write(&canary, "host secret canary\n").unwrap();
    let before = fingerprint(&canary);
    let target = canary.display().to_string();
    let out = hostile
        .sh(&format!(
            "cd /tmp && ln -s {target} up && ln -s {target} chm && ln -s {dir} d && \
             ln -s /proc/1/environ env && ln -s /etc/shadow shadow && ln -s /.corral/agent agent",
            dir = canary_dir.path().display()
        ))
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");

    // Upload onto a link replaces the link itself (never writes through it);
    // through a linked directory, the sandbox has no such directory.
    hostile
        .upload("/tmp/d/canary", b"overwritten")
        .await
        .assert_problem(404, "not_found");
    assert_eq!(
        hostile.upload("/tmp/agent", b"overwritten").await.status,
        204
    );
    let out = hostile
        .sh("test -L /tmp/agent || cat /tmp/agent; echo; test -x /.corral/agent && echo agent-intact")
        .await;
    assert_eq!(out["stdout"], "overwritten\nagent-intact\n", "{out}");
    // Download through the link: never the host's file.
    let read = hostile
        .files("GET", &format!("/content?path={target}"), None)
        .await;
    assert_eq!(read.status, 404, "{}", read.text());
    hostile
        .files("GET", "/content?path=/tmp/up", None)
        .await
        .assert_problem(404, "not_found");
    hostile
        .files("GET", "/content?path=/tmp/shadow", None)
        .await
        .assert_problem(404, "not_found");
    // /proc/1/environ is the agent's own: the file API refuses it, through
    // a link too (and it never held the host's environment; that is
    // checked from the host in corral-runtime's sandbox tests).
    let environ = hostile.files("GET", "/content?path=/tmp/env", None).await;
    let text = String::from_utf8_lossy(&environ.body).into_owned();
    environ.assert_problem(422, "validation_failed");
    for secret in [
        "CORRAL_TEST_POSTGRES_URL",
        "DATABASE_URL",
        "HOME=/root",
        "CARGO",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    // chmod, move and delete through links act inside the sandbox.
    hostile
        .files(
            "POST",
            "/chmod",
            Some(json!({"path": "/tmp/chm", "mode": "777"})),
        )
        .await
        .assert_problem(404, "not_found");
    let moved = hostile
        .files(
            "POST",
            "/move",
            Some(json!({"from": "/tmp/d/canary", "to": "/tmp/stolen"})),
        )
        .await;
    assert_eq!(moved.status, 404, "{}", moved.text());
    let deleted = hostile
        .files(
            "POST",
            "/delete",
            Some(json!({"path": "/tmp/d", "recursive": true})),
        )
        .await;
    assert_eq!(
        deleted.status,
        204,
        "the link itself is removed: {}",
        deleted.text()
    );
    // Search and replace do not follow them either.
    let found = hostile
        .files("GET", "/search?path=/tmp&contains=canary", None)
        .await
        .json();
    assert_eq!(found["matches"], json!([]), "{found}");
    hostile
        .files(
            "POST",
            "/replace",
            Some(json!({"path": "/tmp/up", "find": "host", "replace": "x"})),
        )
        .await
        .assert_problem(422, "validation_failed");

    // The upload onto the planted link replaced the link, inside.
    assert_eq!(hostile.upload("/tmp/up", b"overwritten").await.status, 204);
    assert_eq!(
        hostile
            .sh("test -L /tmp/up && echo link; cat /tmp/up")
            .await["stdout"],
        "overwritten"
    );

    // Cleanup path: deleting the sandbox removes its directory without
    // following anything the sandbox planted.
    let gone = hostile
        .app
        .call(
            "DELETE",
            &format!("/api/v1/sandboxes/{}", hostile.id),
            &hostile.key,
            None,
        )
        .await;
    assert_eq!(gone.status, 204);
    assert_eq!(fingerprint(&canary), before, "the canary is untouched");
    assert!(canary_dir.path().is_dir());
}

/// #3 internal-ssrf, #4 metadata-ssrf, #27 net-exfil (network off), #31
/// vsock: the sandbox reaches nothing — not the host's PostgreSQL or Redis
/// on loopback, not the metadata address in any spelling, not the
/// hypervisor over AF_VSOCK.
#[tokio::test]
async fn the_network_reaches_nothing_outside() {
    let hostile = Hostile::new().await;
    let probe = r#"
import socket
for host, port in [("127.0.0.1", 5432), ("127.0.0.1", 6379), ("169.254.169.254", 80),
                   ("2852039166", 80), ("0xa9fea9fe", 80), ("::1", 5432), ("fd00:ec2::254", 80)]:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect((host, port))
        print("CONNECTED", host, port)
    except Exception as e:
        print("refused", host, port, type(e).__name__)
try:
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect((2, 22))
    print("CONNECTED vsock")
except Exception as e:
    print("refused vsock", type(e).__name__, e.errno)
"#;
    let out = hostile.sh(&format!("python3 -c '{probe}'")).await;
    let stdout = out["stdout"].as_str().unwrap();
    assert_eq!(stdout.lines().count(), 8, "{out}");
    // #31 vsock: refused by seccomp when the socket is made (ENOSYS), not
    // only when nothing answers.
    assert!(stdout.contains("refused vsock OSError 38"), "{stdout}");
    assert!(!stdout.contains("CONNECTED"), "{stdout}");
}

/// #20 fd-flood and #22 early-fork: descriptors stop at the limit; a
/// program that forks first and then allocates is held by the sandbox's
/// memory limit as a whole, and the sandbox (and the server) go on.
#[tokio::test]
async fn descriptor_and_fork_then_memory_floods_are_contained() {
    let hostile = Hostile::new().await;
    let out = hostile
        .sh("python3 -c '
import os, socket
fds, socks = [], []
try:
    while True:
        fds.append(os.open(\"/dev/null\", os.O_RDONLY))
        socks.append(socket.socket())
except OSError as e:
    print(\"stopped\", e.errno, len(fds) + len(socks) < 1030)
'")
        .await;
    assert_eq!(
        out["stdout"], "stopped 24 True\n",
        "EMFILE at the open-files limit: {out}"
    );
    let out = hostile
        .sh("python3 -c '
import os
for _ in range(20):
    if os.fork() == 0:
        b = bytearray(64 * 1024 * 1024)
        for i in range(0, len(b), 4096): b[i] = 1
        os._exit(0)
ok = sum(1 for _ in range(20) if os.wait()[1] == 0)
print(\"survivors\", ok < 20)
'")
        .await;
    assert_eq!(
        out["stdout"], "survivors True\n",
        "the memory limit held: {out}"
    );
    // Still usable, and the server still answers.
    assert_eq!(hostile.sh("echo alive").await["stdout"], "alive\n");
    assert_eq!(hostile.app.get("/health").await.status, 200);
}

/// #11 procfs-sysfs, #13 thread bomb, #19 output-flood, #21 time-evasion,
/// #29 compile-time-exec, each through exec, checked from the host side:
/// the host's files stay as they were and the server's answers stay bounded.
#[tokio::test]
async fn proc_writes_floods_evasion_and_compile_tricks_are_contained() {
    let hostile = Hostile::new().await;
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    // #11: masked and read-only /proc and /sys.
    let out = hostile
        .sh(
            "echo c > /proc/sysrq-trigger; echo '|/tmp/x' > /proc/sys/kernel/core_pattern; \
             cat /proc/kcore | head -c 1 | wc -c; ls /sys/firmware | wc -l; echo done",
        )
        .await;
    assert!(
        out["stdout"].as_str().unwrap().ends_with("0\n0\ndone\n"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern,
        "the host's core_pattern is unchanged"
    );
    // #13: a thread bomb stops at the pids limit; the sandbox goes on.
    let out = hostile
        .sh("python3 -c '
import threading, time
n = 0
try:
    while True:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        n += 1
except RuntimeError:
    print(\"capped\", n < 1024)
'")
        .await;
    assert_eq!(out["stdout"], "capped True\n", "{out}");
    // #19: a flood of stderr is cut at the capture limit; the answer stays small.
    let flood = hostile
        .app
        .call(
            "POST",
            &format!("/api/v1/sandboxes/{}/exec", hostile.id),
            &hostile.key,
            Some(json!({"command": "head -c 1000000000 /dev/zero | tr '\\0' x >&2; echo end"})),
        )
        .await;
    assert_eq!(flood.status, 200);
    assert!(flood.body.len() < 3 << 20, "{} bytes", flood.body.len());
    let flood = flood.json();
    assert_eq!(flood["truncated"], true);
    assert_eq!(flood["stdout"], "end\n");
    // #21: a program that blocks on stdin or sleeps forever is ended on time.
    let started = std::time::Instant::now();
    let out = hostile
        .app
        .call(
            "POST",
            &format!("/api/v1/sandboxes/{}/exec", hostile.id),
            &hostile.key,
            Some(json!({"command": "cat; sleep 1000000000", "timeout_ms": 500})),
        )
        .await
        .json();
    assert_eq!(out["timed_out"], true, "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // #29: a compile step that reads host secrets sees only the sandbox.
    let out = hostile
        .sh(
            "printf '#include \"/etc/shadow\"\\nint main(){return 0;}\\n' > /tmp/x.c; \
             cc /tmp/x.c -o /tmp/x 2>&1 | head -2; ls /etc/shadow 2>&1",
        )
        .await;
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.contains("No such file"), "{out}");
    assert!(!stdout.contains("root:"), "{out}");
}
