//! End-to-end tests of the `corral` binary as a user runs it: real process,
//! real socket, real signals, both database backends.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_store::testing::TestDatabase;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// Runs async client code from a synchronous test.
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A running `corral serve`, stopped with SIGTERM on drop.
struct Server {
    child: Child,
    url: String,
    stdout_lines: Vec<String>,
}

impl Server {
    /// Starts `corral serve ARGS` in `cwd` with exactly `env` (plus PATH) and
    /// waits for its "listening" line.
    fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CORRAL_LOG__LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line
                        .split_once("is listening on ")
                        .map(|(_, url)| url.trim().to_owned());
                    lines.push(line);
                    if let Some(url) = found {
                        // Collect the rest of the banner.
                        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                            lines.push(line);
                        }
                        return Server {
                            child,
                            url,
                            stdout_lines: lines,
                        };
                    }
                }
                Err(_) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                    panic!("server did not start: stdout {lines:?} stderr {err}");
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let mut err = String::new();
                        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                        panic!("server exited with {status}: {err}");
                    }
                }
            }
        }
    }

    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        block_on(async {
            let res = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
            let status = res.status().as_u16();
            let body = res.json().await.unwrap_or(serde_json::Value::Null);
            (status, body)
        })
    }

    fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// SIGTERM, then the exit status within `within`.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The promise to a newcomer: `corral serve` with nothing at all serves
/// SQLite from ./corral-data on 127.0.0.1:8080 and says where.
#[test]
fn serve_with_no_configuration_uses_sqlite_on_localhost_8080() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[]);
    assert_eq!(server.url, "http://127.0.0.1:8080");
    let banner = server.stdout_lines.join("\n");
    assert!(banner.contains("/docs"), "{banner}");
    assert!(banner.contains("sqlite"), "{banner}");
    let (status, body) = server.get("/ready");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database_backend"], "sqlite");
    assert!(dir.path().join("corral-data/corral.db").is_file());
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "graceful stop exits 0, got {status}");
}

#[test]
fn serve_on_postgres_when_database_url_points_there() {
    let db = TestDatabase::new_blocking_postgres();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0"],
        &[("DATABASE_URL", &db.config.url)],
    );
    let (status, body) = server.get("/ready");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database_backend"], "postgres");
    assert!(
        !dir.path().join("corral-data").exists(),
        "no SQLite file when PostgreSQL is configured"
    );
    assert!(server.terminate(Duration::from_secs(10)).success());
}

#[test]
fn a_bad_config_value_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("CORRAL_SERVER__LISTEN", "nowhere")], "server.listen"),
        (&[("CORRAL_LOG__FORMAT", "xml")], "log.format"),
        (&[("DATABASE_URL", "mysql://db/x")], "database.url"),
    ];
    for (env, key) in cases {
        let (code, _out, err) = run(dir.path(), &["serve"], env);
        assert_eq!(code, 1, "{env:?}: {err}");
        assert!(
            err.contains(key),
            "{env:?}: stderr `{err}` does not name `{key}`"
        );
    }
    // A bad flag is named as the flag, not as a Rust type and source path.
    let (code, _out, err) = run(dir.path(), &["serve", "--listen", "notanaddr"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("(from --listen)"), "{err}");
    assert!(!err.contains("alloc::") && !err.contains(".rs:"), "{err}");
    std::fs::write(dir.path().join("c.toml"), "[server]\nport = 1\n").unwrap();
    let (code, _out, err) = run(dir.path(), &["serve", "--config", "c.toml"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("port") && err.contains("c.toml"), "{err}");
}

#[test]
fn migrate_applies_once_then_reports_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(dir.path(), &["migrate", "--data-dir", "data"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied now"), "{out}");
    assert!(!out.contains(" 0 migration(s) applied now"), "{out}");
    let (code, out, _) = run(dir.path(), &["migrate", "--data-dir", "data"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains(" 0 migration(s) applied now"), "{out}");
    assert!(dir.path().join("data/corral.db").is_file());
}

#[test]
fn version_and_openapi_print() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(dir.path(), &["version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("corral {}", env!("CARGO_PKG_VERSION")));
    let (code, out, _) = run(dir.path(), &["openapi"], &[]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["info"]["title"], "Corral API");
}

/// Slowloris: a client that never finishes its headers is disconnected
/// after the header-read timeout instead of holding a connection forever.
#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0"],
        &[("CORRAL_SERVER__HEADER_READ_TIMEOUT_SECS", "1")],
    );
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server answers 408 and/or closes; either way the read ends.
    let _ = stream.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "connection held for {waited:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

/// In-flight requests finish after SIGTERM; new connections are refused.
#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    // A request whose body is still arriving when the signal comes.
    let mut slow = TcpStream::connect(server.addr()).unwrap();
    slow.write_all(
        b"POST /api/v1/none HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{}",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    slow.write_all(b"  ").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = String::new();
    let _ = slow.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 404"),
        "in-flight request was dropped: {response:?}"
    );
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

/// The first administrator comes from the CLI (never a default password),
/// and can then sign in over HTTP. The admin commands work on the server's
/// database and say so when there is none, rather than make one.
#[test]
fn admin_create_user_makes_an_account_that_can_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = ["--data-dir", "data"];
    for command in [
        &[
            "admin",
            "create-user",
            "--username",
            "root",
            "--email",
            "root@example.com",
            "--password",
            "correct horse battery",
        ][..],
        &["admin", "set-plan", "--user", "root", "--plan", "free"][..],
        &["queue", "stats"][..],
    ] {
        let (code, _, err) = run(dir.path(), &[command, &data[..]].concat(), &[]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("no Corral database") && err.contains("--data-dir"),
            "{err}"
        );
        assert!(!dir.path().join("data").exists(), "nothing made: {err}");
    }
    let (code, _, err) = run(dir.path(), &["migrate", "--data-dir", "data"], &[]);
    assert_eq!(code, 0, "{err}");
    let mut child = Command::new(BIN)
        .args([
            "admin",
            "create-user",
            "--username",
            "root",
            "--email",
            "root@example.com",
            "--password-stdin",
            "--admin",
        ])
        .args(data)
        .current_dir(dir.path())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // The first account: super_admin on the plan without daily limits,
    // whatever `--admin` says.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("created super_admin `root`") && said.contains("plan enterprise"),
        "{said}"
    );
    // Later accounts: a user on the free plan unless --role / --plan say otherwise.
    let account = |name: &str, extra: &[&str]| {
        let email = format!("{name}@example.com");
        let args = [
            &[
                "admin",
                "create-user",
                "--username",
                name,
                "--email",
                &email,
                "--password",
                "correct horse battery",
            ][..],
            extra,
            &data[..],
        ]
        .concat();
        run(dir.path(), &args, &[])
    };
    let (code, out, err) = account("plain", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("created user `plain`") && out.contains("plan free"),
        "{out}"
    );
    let (code, out, err) = account("helper", &["--role", "admin", "--plan", "basic"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("created admin `helper`") && out.contains("plan basic"),
        "{out}"
    );
    let (code, _, err) = account("nope", &["--plan", "gold"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no plan `gold`") && err.contains("enterprise"),
        "{err}"
    );
    let (code, _, err) = account("nope", &["--role", "emperor"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = run(
        dir.path(),
        &[
            &["admin", "set-plan", "--user", "plain", "--plan", "premium"][..],
            &data[..],
        ]
        .concat(),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("premium") && out.contains("was free"), "{out}");

    let (code, _, err) = run(
        dir.path(),
        &[
            "admin",
            "create-user",
            "--username",
            "X",
            "--email",
            "bad",
            "--password",
            "short",
            "--data-dir",
            "data",
        ],
        &[],
    );
    assert_eq!(code, 1);
    for field in ["--email", "--username", "--password"] {
        assert!(err.contains(field), "{err}");
    }
    let (code, _, err) = run(
        dir.path(),
        &[
            "admin",
            "create-user",
            "--username",
            "root",
            "--email",
            "r@example.com",
            "--password",
            "correct horse battery",
            "--data-dir",
            "data",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("already registered"), "{err}");

    let server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", "data"],
        &[],
    );
    assert!(!server.stdout_lines.join("\n").contains("no accounts yet"));
    block_on(async {
        let client = reqwest::Client::new();
        let login: serde_json::Value = client
            .post(format!("{}/api/v1/auth/login", server.url))
            .json(&serde_json::json!({"login": "root", "password": "correct horse battery"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap();
        let audit = client
            .get(format!("{}/api/v1/admin/audit", server.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(audit.status(), 200, "the CLI-made admin can administer");
        let body: serde_json::Value = audit.json().await.unwrap();
        // Over a real socket the audit log has the client's IP.
        assert_eq!(body["items"][0]["ip"], "127.0.0.1");
    });
}

/// The hint names the data directory and config file the server runs
/// with, so the command it prints acts on the same database from any
/// directory.
#[test]
fn a_fresh_server_says_how_to_make_the_first_admin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "[log]\nformat = \"pretty\"\n").unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "elsewhere",
            "--config",
            "c.toml",
        ],
        &[],
    );
    let banner = server.stdout_lines.join("\n");
    let data = dir.path().join("elsewhere");
    let config = dir.path().join("c.toml");
    let line = banner
        .lines()
        .find(|l| l.contains("corral admin create-user"))
        .unwrap_or_else(|| panic!("{banner}"));
    assert!(
        line.contains(&format!("--data-dir {}", data.display()))
            && line.contains(&format!("--config {}", config.display())),
        "{banner}"
    );
    // The command as printed works from another directory.
    let other = tempfile::tempdir().unwrap();
    let printed: Vec<&str> = line.split_whitespace().skip(1).collect();
    let out = Command::new(BIN)
        .args(&printed)
        .current_dir(other.path())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    out.stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = out.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("created super_admin `admin`"),
        "{out:?}"
    );
}

/// `/health` over a real socket is answered before the router (the liveness
/// fast path): the same body as the routed handler, the security headers,
/// and still counted in `/metrics`.
#[test]
fn health_over_the_socket_matches_the_routed_answer_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    block_on(async {
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let res = client
                .get(format!("{}/health", server.url))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let headers = res.headers().clone();
            assert_eq!(headers["content-type"], "application/json");
            assert_eq!(headers["x-content-type-options"], "nosniff");
            assert_eq!(headers["referrer-policy"], "no-referrer");
            assert_eq!(headers["content-security-policy"], "frame-ancestors 'none'");
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["status"], "ok");
            assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        }
        // With a query string the router answers, with the same body plus a request id.
        let routed = client
            .get(format!("{}/health?check=1", server.url))
            .send()
            .await
            .unwrap();
        assert!(routed.headers().contains_key("x-request-id"));
        assert_eq!(
            routed.json::<serde_json::Value>().await.unwrap()["status"],
            "ok"
        );
        // Only GET takes the fast path; other methods get the router's 405.
        let res = client
            .post(format!("{}/health", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405);
        let metrics = client
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("corral_http_requests_total{")
                    && l.contains("route=\"/health\"")
                    && l.contains("status=\"200\"")
            })
            .unwrap_or_else(|| panic!("no /health series in {metrics}"));
        assert!(line.ends_with(" 4"), "four probes counted: {line}");
    });
}

/// Sends `request` and reads its JSON answer.
async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Signs up `name` on `url` and returns an access token.
async fn sign_up(client: &reqwest::Client, url: &str, name: &str) -> String {
    let body = serde_json::json!({"email": format!("{name}@example.com"), "username": name, "password": "correct horse battery"});
    let res = client
        .post(format!("{url}/api/v1/auth/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let tokens = json_of(
        client
            .post(format!("{url}/api/v1/auth/login"))
            .json(&serde_json::json!({"login": name, "password": "correct horse battery"})),
    )
    .await;
    tokens["access_token"].as_str().unwrap().to_owned()
}

/// `kill -9` of `corral serve`, then a restart: a sandbox whose container
/// still runs is re-adopted and works; one whose container died meanwhile
/// becomes `error` and frees its place; a stray directory is removed.
#[test]
fn after_a_crash_sandboxes_are_re_adopted_or_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", "data"];
    let mut server = Server::start(dir.path(), &args, &[]);
    let (alice, bob, kept, lost) = block_on(async {
        let client = reqwest::Client::new();
        let alice = sign_up(&client, &server.url, "alice").await;
        let bob = sign_up(&client, &server.url, "bob").await;
        let mut ids = Vec::new();
        for token in [&alice, &bob] {
            let res = client
                .post(format!("{}/api/v1/sandboxes", server.url))
                .bearer_auth(token)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
            let body: serde_json::Value = res.json().await.unwrap();
            ids.push(body["id"].as_str().unwrap().to_owned());
        }
        (alice, bob, ids[0].clone(), ids[1].clone())
    });
    // Crash.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // Where the server keeps sandbox state by default (in memory).
    let state = corral_runtime::state::dir_of(&dir.path().join("data"));
    let runtime_root = state.join("runtime");
    // Bob's sandbox dies while Corral is down.
    let deleted = Command::new("runc")
        .arg("--root")
        .arg(&runtime_root)
        .args(["delete", "--force", &format!("corral-{lost}")])
        .status()
        .unwrap();
    assert!(deleted.success());
    std::fs::create_dir_all(state.join("sandboxes/left-behind")).unwrap();

    let server = Server::start(dir.path(), &args, &[]);
    block_on(async {
        let client = reqwest::Client::new();
        let out = json_of(
            client
                .post(format!("{}/api/v1/sandboxes/{kept}/exec", server.url))
                .bearer_auth(&alice)
                .json(&serde_json::json!({"command": "echo still here"})),
        )
        .await;
        assert_eq!(out["stdout"], "still here\n", "{out}");
        let gone = json_of(
            client
                .get(format!("{}/api/v1/sandboxes/{lost}", server.url))
                .bearer_auth(&bob),
        )
        .await;
        assert_eq!(gone["state"], "error", "{gone}");
        // Its place on the plan is free again.
        let again = client
            .post(format!("{}/api/v1/sandboxes", server.url))
            .bearer_auth(&bob)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 201, "{}", again.text().await.unwrap());
        let again: serde_json::Value = again.json().await.unwrap();
        for (token, id) in [
            (&alice, kept.as_str()),
            (&bob, again["id"].as_str().unwrap()),
        ] {
            client
                .delete(format!("{}/api/v1/sandboxes/{id}", server.url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
        }
    });
    assert!(!state.join("sandboxes/left-behind").exists());
}
