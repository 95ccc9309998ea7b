//! The client commands (`corral login`, `corral sandbox …`, `corral run`)
//! against a real `corral serve` with real sandboxes (runc as root, the
//! agent as PID 1), driven as a user would: the binary, its exit codes, its
//! stdout and stderr.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::agent;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const PASSWORD: &str = "correct horse battery staple";

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// What a CLI run did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    fn ok(&self) -> String {
        assert_eq!(self.code, 0, "{self:?}");
        self.out()
    }
}

/// A `corral serve` on a free port with its own data directory, an
/// administrator `root` and a user `alice` (moved to the enterprise plan so
/// daily quotas do not interfere), and a config directory for the CLI.
struct Corral {
    dir: tempfile::TempDir,
    child: Child,
    url: String,
}

impl Corral {
    fn start() -> Corral {
        Corral::start_with(&[])
    }

    /// [`Corral::start`] with extra environment for the server.
    fn start_with(env: &[(&str, &str)]) -> Corral {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // The admin commands work on an existing database only.
        let out = raw_run(
            dir.path(),
            &["migrate", "--data-dir", data.to_str().unwrap()],
            b"",
            &[],
        );
        assert_eq!(out.code, 0, "{out:?}");
        for (user, admin) in [("root", true), ("alice", false)] {
            let mut args = vec![
                "admin",
                "create-user",
                "--data-dir",
                data.to_str().unwrap(),
                "--username",
                user,
                "--email",
                if admin {
                    "root@example.com"
                } else {
                    "alice@example.com"
                },
                "--password-stdin",
            ];
            if admin {
                args.push("--admin");
            }
            let out = raw_run(dir.path(), &args, PASSWORD.as_bytes(), &[]);
            assert_eq!(out.code, 0, "{out:?}");
        }
        let (child, url) = common::serve(
            Command::new(BIN)
                .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(&data)
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("CORRAL_LOG__LEVEL", "warn")
                .env("CORRAL_SANDBOX__AGENT", agent())
                .envs(env.iter().copied()),
        );
        let corral = Corral { dir, child, url };
        corral.upgrade_alice();
        corral
    }

    /// As `root`, moves alice to the enterprise plan.
    fn upgrade_alice(&self) {
        let url = self.url.clone();
        block_on(async move {
            let http = reqwest::Client::new();
            let token: serde_json::Value = http
                .post(format!("{url}/api/v1/auth/login"))
                .json(&serde_json::json!({"login": "root", "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = token["access_token"].as_str().unwrap().to_owned();
            let users: serde_json::Value = http
                .get(format!("{url}/api/v1/admin/users"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let alice = users["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["username"] == "alice")
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let res = http
                .patch(format!("{url}/api/v1/admin/users/{alice}"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"plan": "enterprise"}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{:?}", res.text().await);
        });
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config/corral")
    }

    /// `corral ARGS` with `stdin`, the CLI's environment only (no
    /// CORRAL_URL/CORRAL_TOKEN unless `env` gives them).
    fn cli_with(&self, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Out {
        let config = self.config_dir();
        let mut all = vec![("CORRAL_CONFIG_DIR", config.to_str().unwrap())];
        all.extend_from_slice(env);
        raw_run(self.dir.path(), args, stdin, &all)
    }

    fn cli(&self, args: &[&str]) -> Out {
        self.cli_with(args, b"", &[])
    }

    fn login(&self) {
        let out = self.cli_with(
            &[
                "login",
                "--url",
                &self.url,
                "--username",
                "alice",
                "--password-stdin",
            ],
            format!("{PASSWORD}\n").as_bytes(),
            &[],
        );
        assert_eq!(out.code, 0, "{out:?}");
    }

    /// Creates a sandbox with `args`; its id.
    fn create(&self, args: &[&str]) -> String {
        let mut all = vec!["sandbox", "create", "--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert_eq!(out.code, 0, "{out:?}");
        let sandbox = out.json();
        assert_eq!(sandbox["state"], "running", "{sandbox}");
        sandbox["id"].as_str().unwrap().to_owned()
    }

    /// Ids `sandbox ls --json` lists.
    fn ids(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["sandbox", "ls", "--json"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert_eq!(out.code, 0, "{out:?}");
        out.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        // SIGTERM first: the server stops gracefully; then make sure.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Sandboxes a failed test left behind: their containers.
        let runtime_root =
            corral_runtime::state::dir_of(&self.dir.path().join("data")).join("runtime");
        if let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(&runtime_root)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runtime_root)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
    }
}

fn raw_run(cwd: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Out {
    let out = common::run_with_stdin(
        Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", cwd)
            .envs(env.iter().copied()),
        stdin,
    );
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn login_saves_a_private_api_key_that_the_other_commands_use_and_logout_forgets_it() {
    let corral = Corral::start();
    // Not signed in yet: a clear error, exit 1.
    let out = corral.cli(&["sandbox", "ls", "--url", &corral.url]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not signed in"), "{out:?}");

    corral.login();
    let file = corral.config_dir().join("credentials.toml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials file mode {mode:o}");
    let mode = std::fs::metadata(corral.config_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "config dir mode {mode:o}");
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains(&corral.url), "{saved}");
    let key = saved_token(&saved);
    assert!(key.starts_with("crl_"), "{saved}");

    // The saved login is used without flags.
    assert_eq!(corral.ids(&[]), Vec::<String>::new());
    // An empty CORRAL_TOKEN / CORRAL_URL counts as unset.
    let out = corral.cli_with(
        &["sandbox", "ls", "--json"],
        b"",
        &[("CORRAL_TOKEN", ""), ("CORRAL_URL", "")],
    );
    assert_eq!(out.code, 0, "{out:?}");

    // A wrong password: the server's error, nothing saved over the login.
    let wrong_password = |extra: &[&str]| {
        let args = [
            &["login", "--url", &corral.url, "--username", "alice"][..],
            &["--password-stdin"],
            extra,
        ]
        .concat();
        corral.cli_with(&args, b"wrong\n", &[])
    };
    let out = wrong_password(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("error: unauthorized"), "{out:?}");
    // The hint is about the password, not about a token nobody gave.
    assert!(
        out.stderr.contains("username and password") && !out.stderr.contains("--token"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), saved);
    // With --json the failure is JSON too.
    let out = wrong_password(&["--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let error: serde_json::Value = serde_json::from_str(out.stderr.trim())
        .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {out:?}"));
    assert_eq!(error["error"]["code"], "unauthorized", "{error}");
    assert_eq!(error["error"]["status"], 401, "{error}");

    // A second login replaces this host's CLI key rather than adding one.
    corral.login();
    let new_key = saved_token(&std::fs::read_to_string(&file).unwrap());
    assert_ne!(new_key, key);
    let out = corral.cli(&["sandbox", "ls", "--token", &key]);
    assert_eq!(out.code, 1, "the earlier key is revoked: {out:?}");
    assert!(out.stderr.contains("unauthorized"), "{out:?}");
    assert_eq!(cli_keys(&corral), 1);

    // Logout removes the login and revokes its key; then nothing is signed in.
    let out = corral.cli(&["logout"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.out().contains("Revoked"), "{out:?}");
    assert!(!file.exists());
    let out = corral.cli(&["sandbox", "ls"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not signed in"), "{out:?}");
    assert_eq!(cli_keys(&corral), 0);

    // --token checks the key before saving it: a bad one is refused (and
    // so is the key logout revoked)...
    for bad in ["crl_bogus", new_key.as_str()] {
        let out = corral.cli(&["login", "--url", &corral.url, "--token", bad]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("unauthorized"), "{out:?}");
        assert!(!file.exists(), "a refused key is not saved");
    }
    // ...a good one saved: one kept by `logout --keep-key`.
    corral.login();
    let key = saved_token(&std::fs::read_to_string(&file).unwrap());
    let out = corral.cli(&["logout", "--keep-key"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.out().contains("stays valid"), "{out:?}");
    let out = corral.cli(&["login", "--url", &corral.url, "--token", &key]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.out().contains("alice"), "{out:?}");
    assert!(file.exists());
    assert_eq!(corral.ids(&[]), Vec::<String>::new());

    // The saved key is not sent to another server named with --url.
    let other = format!("http://127.0.0.1:{}", closed_port());
    let out = corral.cli(&["sandbox", "ls", "--url", &other]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not signed in"), "{out:?}");

    // Neither --username nor --token: a usage error.
    let out = corral.cli(&["login", "--url", &corral.url]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn sandbox_create_ls_get_exec_cp_rm() {
    let corral = Corral::start();
    corral.login();
    let id = corral.create(&[
        "--name",
        "cli-test",
        "--memory",
        "64",
        "--cpu",
        "0.5",
        "--env",
        "GREETING=hello there",
        "--label",
        "team=ml",
        "--label",
        "tier=dev",
    ]);

    // ls: the human table and the JSON.
    let table = corral.cli(&["sandbox", "ls"]).ok();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "NAME", "IMAGE", "STATE", "CPU", "MEM", "CREATED"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[..6],
        [id.as_str(), "cli-test", "host", "running", "0.5", "64M"]
    );
    assert_eq!(corral.ids(&[]), vec![id.clone()]);
    assert_eq!(corral.ids(&["--state", "running"]), vec![id.clone()]);
    // --label: one label is filtered by the server, more are checked too.
    assert_eq!(corral.ids(&["--label", "team=ml"]), vec![id.clone()]);
    assert_eq!(
        corral.ids(&["--label", "team=ml", "--label", "tier=dev"]),
        vec![id.clone()]
    );
    assert!(corral.ids(&["--label", "team=web"]).is_empty());
    assert!(
        corral
            .ids(&["--label", "team=ml", "--label", "tier=prod"])
            .is_empty()
    );

    // get
    let details = corral.cli(&["sandbox", "get", &id]).ok();
    assert!(
        details.contains("cli-test") && details.contains("team=ml"),
        "{details}"
    );
    let json = corral.cli(&["sandbox", "get", &id, "--json"]).json();
    assert_eq!(json["memory_mb"], 64);
    assert_eq!(json["cpu_millicores"], 500);

    // exec: the program's exit code is the command's.
    let out = corral.cli(&["sandbox", "exec", &id, "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "{out:?}");
    // -c: a shell line; stdout and stderr go to their own streams.
    let out = corral.cli(&["sandbox", "exec", &id, "-c", "echo hi; echo err >&2"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.out(), "hi\n");
    assert_eq!(out.stderr, "err\n");
    // The sandbox's env, --env, --cwd and piped stdin.
    let out = corral.cli_with(
        &[
            "sandbox",
            "exec",
            &id,
            "--env",
            "EXTRA=x",
            "--cwd",
            "/",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING $EXTRA $(pwd)\"; cat",
        ],
        b"from stdin\n",
        &[],
    );
    assert_eq!(out.out(), "hello there x /\nfrom stdin\n", "{out:?}");
    // A signal: 128 + n, like a shell.
    let out = corral.cli(&["sandbox", "exec", &id, "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.code, 137, "{out:?}");
    // Timeout: 124, like timeout(1).
    let out = corral.cli(&[
        "sandbox",
        "exec",
        &id,
        "--timeout-ms",
        "300",
        "--",
        "sleep",
        "10",
    ]);
    assert_eq!(out.code, 124, "{out:?}");
    assert!(out.stderr.contains("timed out"), "{out:?}");
    // --json: the server's result, still with the program's exit code.
    let out = corral.cli(&["sandbox", "exec", &id, "--json", "-c", "echo j; exit 5"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert_eq!(out.json()["stdout"], "j\n");
    assert_eq!(out.json()["exit_code"], 5);
    // Neither argv nor -c: clap's usage error.
    let out = corral.cli(&["sandbox", "exec", &id]);
    assert_eq!(out.code, 2, "{out:?}");

    // cp up and down: bytes round-trip, binary included.
    let local = corral.dir.path().join("blob.bin");
    let blob: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&local, &blob).unwrap();
    corral
        .cli(&[
            "sandbox",
            "cp",
            local.to_str().unwrap(),
            &format!("{id}:/tmp/"),
        ])
        .ok();
    let out = corral.cli(&["sandbox", "exec", &id, "--", "wc", "-c", "/tmp/blob.bin"]);
    assert_eq!(
        out.out().split_whitespace().next(),
        Some("70000"),
        "{out:?}"
    );
    let back = corral.dir.path().join("back.bin");
    corral
        .cli(&[
            "sandbox",
            "cp",
            &format!("{id}:/tmp/blob.bin"),
            back.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(std::fs::read(&back).unwrap(), blob);
    // To stdout with `-`, and into a local directory by the file's name.
    let out = corral.cli(&["sandbox", "cp", &format!("{id}:/tmp/blob.bin"), "-"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, blob);
    let sub = corral.dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    corral
        .cli(&[
            "sandbox",
            "cp",
            &format!("{id}:/tmp/blob.bin"),
            sub.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(std::fs::read(sub.join("blob.bin")).unwrap(), blob);
    // From stdin with `-` to a named file.
    let out = corral.cli_with(
        &["sandbox", "cp", "-", &format!("{id}:/tmp/in.txt")],
        b"piped bytes",
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = corral.cli(&["sandbox", "exec", &id, "--", "cat", "/tmp/in.txt"]);
    assert_eq!(out.out(), "piped bytes");
    // A missing file in the sandbox: the server's not_found; nothing written.
    let missing = corral.dir.path().join("missing.bin");
    let out = corral.cli(&[
        "sandbox",
        "cp",
        &format!("{id}:/tmp/nope"),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not_found"), "{out:?}");
    assert!(!missing.exists());
    // Neither side or both sides in a sandbox: usage errors.
    assert_eq!(corral.cli(&["sandbox", "cp", "a", "b"]).code, 2);
    assert_eq!(
        corral
            .cli(&["sandbox", "cp", &format!("{id}:/a"), &format!("{id}:/b")])
            .code,
        2
    );

    // rm: gone from ls; a second rm is not_found and exits 1.
    assert_eq!(corral.cli(&["sandbox", "rm", &id]).ok().trim(), id);
    assert!(corral.ids(&[]).is_empty());
    let out = corral.cli(&["sandbox", "rm", &id]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not_found"), "{out:?}");
}

/// The token in a saved `credentials.toml`.
fn saved_token(saved: &str) -> String {
    saved
        .lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned()
}

/// alice's API keys named `cli-…`.
fn cli_keys(corral: &Corral) -> usize {
    let token = alice_token(corral);
    let url = corral.url.clone();
    block_on(async move {
        let keys: serde_json::Value = reqwest::Client::new()
            .get(format!("{url}/api/v1/api-keys"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys.as_array()
            .unwrap()
            .iter()
            .filter(|k| k["name"].as_str().unwrap().starts_with("cli-"))
            .count()
    })
}

#[test]
fn errors_are_one_clear_line_with_exit_1() {
    let corral = Corral::start();
    corral.login();

    // An unknown sandbox.
    for args in [
        &["sandbox", "get", "nope"][..],
        &["sandbox", "exec", "nope", "--", "true"][..],
    ] {
        let out = corral.cli(args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: not_found"), "{out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    }

    // A bad token.
    let out = corral.cli(&["sandbox", "ls", "--token", "crl_not_a_key"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("error: unauthorized"), "{out:?}");
    let out = corral.cli_with(&["sandbox", "ls"], b"", &[("CORRAL_TOKEN", "crl_nope")]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("unauthorized"), "{out:?}");

    // The server's validation message.
    let out = corral.cli(&["sandbox", "create", "--memory", "999999"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: validation_failed: `resources.memory_mb`: must be between"),
        "{out:?}"
    );
    assert!(corral.ids(&[]).is_empty());

    // Bad input clap catches: exit 2.
    let out = corral.cli(&["sandbox", "create", "--memory", "lots"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = corral.cli(&["sandbox", "create", "--label", "nolabel"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("KEY=VALUE"), "{out:?}");
    let out = corral.cli(&["sandbox", "ls", "--url", "not a url"]);
    assert_eq!(out.code, 2, "{out:?}");

    // A server that is not there: exit 1 naming the URL.
    let down = format!("http://127.0.0.1:{}", closed_port());
    let out = corral.cli(&["sandbox", "ls", "--url", &down, "--token", "crl_x"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("cannot reach") && out.stderr.contains(&down),
        "{out:?}"
    );
    let out = corral.cli_with(
        &["sandbox", "ls"],
        b"",
        &[("CORRAL_URL", &down), ("CORRAL_TOKEN", "crl_x")],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&down), "{out:?}");
}

#[test]
fn run_executes_a_file_prints_its_output_and_leaves_no_sandbox() {
    let corral = Corral::start();
    corral.login();
    let dir = corral.dir.path();

    std::fs::write(
        dir.join("hello.py"),
        "import sys\nprint('hello from', sys.argv[1:])\nprint('to stderr', file=sys.stderr)\nsys.exit(4)\n",
    )
    .unwrap();
    let out = corral.cli(&["run", "hello.py", "--", "a", "b c"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(out.out(), "hello from ['a', 'b c']\n");
    assert_eq!(out.stderr, "to stderr\n");
    assert!(corral.ids(&[]).is_empty(), "run left a sandbox");

    std::fs::write(
        dir.join("sum.c"),
        "#include <stdio.h>\n#include <stdlib.h>\nint main(int c, char **v) { int s = 0; for (int i = 1; i < c; i++) s += atoi(v[i]); printf(\"sum=%d\\n\", s); return 0; }\n",
    )
    .unwrap();
    let out = corral.cli(&["run", "sum.c", "--", "3", "4"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.out(), "sum=7\n");
    assert!(corral.ids(&[]).is_empty(), "run left a sandbox");

    // A compile error: the compiler's message and exit code.
    std::fs::write(dir.join("bad.c"), "int main( {\n").unwrap();
    let out = corral.cli(&["run", "bad.c"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("error"), "{out:?}");

    // --language for a file without a known extension; stdin is passed on.
    std::fs::write(dir.join("script"), "read x; echo \"got $x\"\n").unwrap();
    let out = corral.cli_with(&["run", "script", "--language", "sh"], b"42\n", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.out(), "got 42\n");

    // An unknown extension: a usage error naming the known ones, no sandbox.
    std::fs::write(dir.join("main.rs"), "fn main() {}\n").unwrap();
    let out = corral.cli(&["run", "main.rs"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(".py")
            && out.stderr.contains(".c")
            && out.stderr.contains("--language"),
        "{out:?}"
    );
    // A missing file.
    let out = corral.cli(&["run", "absent.py"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("absent.py"), "{out:?}");

    // An error after the sandbox exists still deletes it.
    let out = corral.cli(&["run", "hello.py", "--timeout-ms", "0"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("validation_failed"), "{out:?}");
    assert!(
        corral.ids(&[]).is_empty(),
        "run left a sandbox after an error"
    );

    // SIGINT while the program runs: the sandbox is deleted, exit 130.
    std::fs::write(dir.join("slow.sh"), "sleep 20\n").unwrap();
    let config = corral.config_dir();
    let mut child = Command::new(BIN)
        .args(["run", "slow.sh"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CORRAL_CONFIG_DIR", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while corral.ids(&[]).is_empty() {
        assert!(Instant::now() < deadline, "run never created its sandbox");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give it a moment to be in the exec.
    std::thread::sleep(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        corral.ids(&[]).is_empty(),
        "run left a sandbox after Ctrl-C"
    );
}

#[test]
fn stop_keeps_the_sandbox_and_start_brings_it_back() {
    let corral = Corral::start();
    corral.login();
    let id = corral.create(&["--name", "sleeper"]);

    let out = corral.cli(&["sandbox", "stop", &id]).ok();
    assert_eq!(out.trim(), format!("{id} stopped"));
    assert_eq!(
        corral.cli(&["sandbox", "get", &id, "--json"]).json()["state"],
        "stopped"
    );
    assert_eq!(corral.ids(&["--state", "stopped"]), vec![id.clone()]);
    assert!(corral.ids(&["--state", "running"]).is_empty());
    // A stopped sandbox runs nothing: the server's conflict, exit 1.
    let out = corral.cli(&["sandbox", "exec", &id, "--", "true"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("error: conflict"), "{out:?}");

    let out = corral.cli(&["sandbox", "start", &id, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["state"], "running");
    let out = corral.cli(&["sandbox", "exec", &id, "-c", "echo back"]);
    assert_eq!(out.out(), "back\n", "{out:?}");

    // Unknown ids.
    for verb in ["start", "stop"] {
        let out = corral.cli(&["sandbox", verb, "nope"]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("not_found"), "{out:?}");
    }
    corral.cli(&["sandbox", "rm", &id]).ok();
}

/// A tmux server of its own (`-L`), so tests never touch a user's sessions.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        // One server per test: tests in this binary run at the same time.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: format!("corral-test-{}-{n}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed (scripts/deps.sh test installs it)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A detached session of `cols`×`rows` running `command` (kept open
    /// after it exits, to read its last words).
    fn session(&self, name: &str, cols: u16, rows: u16, command: &str) {
        let size = (cols.to_string(), rows.to_string());
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &size.0,
            "-y",
            &size.1,
            &format!("{command}; echo EXITED-$?; sleep 60"),
        ]);
    }

    /// Types `keys` (tmux key names: `Enter`, `C-c`, `C-]`…).
    fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Waits until the pane (with its history) shows `needle`; the pane.
    #[track_caller]
    fn until(&self, name: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pane = self.run(&["capture-pane", "-p", "-J", "-S", "-200", "-t", name]);
            if pane.contains(needle) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the pane:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// `corral shell` in a real terminal: raw mode (keys and ^C go to the
/// sandbox), window size changes, detach and re-attach with the shell's
/// state intact, and the end of the shell.
#[test]
fn shell_runs_in_a_real_terminal_detaches_and_reattaches() {
    let corral = Corral::start();
    corral.login();
    let id = corral.create(&[]);
    let tmux = Tmux::new();
    let config = corral.config_dir();
    let shell = |extra: &str| {
        format!(
            "env -i PATH=/usr/bin:/bin TERM=xterm HOME={home} CORRAL_CONFIG_DIR={config} {BIN} shell {id} {extra}",
            home = corral.dir.path().display(),
            config = config.display(),
        )
    };
    tmux.session("first", 100, 30, &shell("-- /bin/sh"));
    tmux.until("first", "attached to terminal t1");
    tmux.keys(
        "first",
        &["export MARK=kept; echo typed-$((40+2))", "Enter"],
    );
    tmux.until("first", "typed-42");
    // The PTY has the local window's size, and follows it.
    tmux.keys("first", &["stty size", "Enter"]);
    tmux.until("first", "30 100");
    tmux.run(&["resize-window", "-t", "first", "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys("first", &["stty size", "Enter"]);
    tmux.until("first", "40 120");
    // ^C reaches the program in the sandbox, not the local client.
    tmux.keys("first", &["sleep 60; echo not-inter$((0))rupted", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys("first", &["C-c"]);
    tmux.keys("first", &["echo back-$((1+2))", "Enter"]);
    let pane = tmux.until("first", "back-3");
    assert!(!pane.contains("not-inter0rupted"), "{pane}");
    // Detach: the client exits, the terminal keeps running.
    tmux.keys("first", &["C-]"]);
    let pane = tmux.until("first", "EXITED-0");
    assert!(
        pane.contains("corral shell") && pane.contains("--attach t1"),
        "{pane}"
    );
    let ps = corral.cli(&["sandbox", "ps", &id]).ok();
    assert!(
        ps.contains("terminal t1 (0 attached)") && ps.contains("running"),
        "{ps}"
    );

    // Re-attach: the earlier output is redrawn and the shell kept its state.
    tmux.session("second", 100, 30, &shell("--attach t1"));
    tmux.until("second", "typed-42");
    tmux.keys("second", &["echo mark=$MARK", "Enter"]);
    tmux.until("second", "mark=kept");
    // Leaving the shell ends the terminal and the client, with the shell's
    // exit status.
    tmux.keys("second", &["exit 4", "Enter"]);
    let pane = tmux.until("second", "EXITED-4");
    assert!(pane.contains("[the terminal ended: exit code 4]"), "{pane}");
    // Attaching to one that has ended shows what it last wrote and ends
    // at once with its status.
    let gone = corral.cli(&["shell", &id, "--attach", "t1"]);
    assert_eq!(gone.code, 4, "{gone:?}");
    assert!(gone.out().contains("mark=kept"), "{gone:?}");
    assert!(gone.stderr.contains("exit code 4"), "{gone:?}");
    // One that is gone is one clear error.
    let gone = corral.cli(&["shell", &id, "--attach", "t9"]);
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("no terminal"), "{gone:?}");
}

/// `corral shell ID -- CMD` with a program that ends at once: its output
/// is shown and its exit status is the command's.
#[test]
fn shell_with_a_short_command_shows_its_output_and_exits_with_its_status() {
    let corral = Corral::start();
    corral.login();
    let id = corral.create(&[]);
    let tmux = Tmux::new();
    let command = format!(
        "env -i PATH=/usr/bin:/bin TERM=xterm HOME={home} CORRAL_CONFIG_DIR={config} {BIN} shell {id} -- sh -c 'echo hi-$((40+2)); exit 3'",
        home = corral.dir.path().display(),
        config = corral.config_dir().display(),
    );
    tmux.session("short", 100, 30, &command);
    let pane = tmux.until("short", "EXITED-");
    assert!(pane.contains("hi-42"), "{pane}");
    assert!(pane.contains("EXITED-3"), "{pane}");
    assert!(!pane.contains("error"), "{pane}");
}

/// A `corral` child with its own pipes, for tests that watch it run.
fn spawn_cli(corral: &Corral, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .current_dir(corral.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", corral.dir.path())
        .env("CORRAL_CONFIG_DIR", corral.config_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn exec_streams_output_and_stdin_and_says_when_it_truncated() {
    let corral = Corral::start();
    corral.login();
    let id = corral.create(&[]);

    // Output is printed as the program writes it, not when it ends.
    let mut child = spawn_cli(
        &corral,
        &[
            "sandbox",
            "exec",
            &id,
            "--no-stdin",
            "-c",
            "echo first; sleep 5; echo second",
        ],
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first line came only when the program ended"
    );
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "second\n");
    assert!(child.wait().unwrap().success());

    // Piped standard input that never ends (`sleep 8 | corral sandbox exec
    // … -- echo hi`): a program that does not read it ends the command.
    let mut child = spawn_cli(&corral, &["sandbox", "exec", &id, "--", "echo", "hi"]);
    let held_open = child.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still waiting for standard input after 8 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "hi\n");
    drop(held_open);

    // Piped standard input is streamed: each line is answered before the
    // next is written.
    let mut child = spawn_cli(
        &corral,
        &[
            "sandbox",
            "exec",
            &id,
            "-c",
            "read a; echo got-$a; read b; echo got-$b",
        ],
    );
    let mut input = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    input.write_all(b"one\n").unwrap();
    input.flush().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got-one\n");
    input.write_all(b"two\n").unwrap();
    drop(input);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got-two\n");
    assert!(child.wait().unwrap().success());

    // A megabyte through the pipe arrives whole.
    let out = corral.cli_with(
        &["sandbox", "exec", &id, "--", "wc", "-c"],
        &vec![b'a'; 1_000_000],
        &[],
    );
    assert_eq!(out.out().trim(), "1000000", "{out:?}");

    // Output past --max-output: cut there, a warning, and exit 125.
    let flood = "head -c 5000 /dev/zero | tr '\\0' x; echo done >&2";
    let out = corral.cli(&["sandbox", "exec", &id, "--max-output", "100", "-c", flood]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_eq!(out.stdout, vec![b'x'; 100]);
    assert!(out.stderr.starts_with("done\n"), "{out:?}");
    assert!(
        out.stderr.contains("truncated") && out.stderr.contains("exit code 0"),
        "{out:?}"
    );
    let out = corral.cli(&[
        "sandbox",
        "exec",
        &id,
        "--json",
        "--max-output",
        "100",
        "-c",
        flood,
    ]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_eq!(out.json()["truncated"], true);
    assert_eq!(out.json()["stdout"].as_str().unwrap().len(), 100);
    // More than the server allows: one clear error.
    let out = corral.cli(&[
        "sandbox",
        "exec",
        &id,
        "--max-output",
        "999999999999",
        "--",
        "true",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("max_output_bytes"), "{out:?}");
}

#[test]
fn administrators_list_every_org_s_sandboxes() {
    let corral = Corral::start();
    corral.login();
    let id = corral.create(&[]);
    // alice is no administrator.
    let out = corral.cli(&["sandbox", "ls", "--all"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("forbidden") || out.stderr.contains("dministrator"),
        "{out:?}"
    );
    // root sees alice's sandbox (root's own org has none), with its org.
    let url = corral.url.clone();
    let token = block_on(async move {
        let token: serde_json::Value = reqwest::Client::new()
            .post(format!("{url}/api/v1/auth/login"))
            .json(&serde_json::json!({"login": "root", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        token["access_token"].as_str().unwrap().to_owned()
    });
    let as_root = |args: &[&str]| {
        corral.cli_with(
            args,
            b"",
            &[
                ("CORRAL_URL", corral.url.as_str()),
                ("CORRAL_TOKEN", token.as_str()),
            ],
        )
    };
    let own = as_root(&["sandbox", "ls", "--json"]).json();
    assert_eq!(own["items"], serde_json::json!([]), "{own}");
    let all = as_root(&["sandbox", "ls", "--all", "--json"]).json();
    assert_eq!(all["items"][0]["id"], id.as_str(), "{all}");
    let table = as_root(&["sandbox", "ls", "--all"]).ok();
    let org = all["items"][0]["org_id"].as_str().unwrap();
    assert!(
        table.contains("ORG") && table.contains(&id) && table.contains(org),
        "{table}"
    );
}

#[test]
fn background_processes_from_the_cli() {
    let corral = Corral::start();
    corral.login();
    let id = corral.create(&[]);
    let pid = corral
        .cli(&[
            "sandbox",
            "exec",
            &id,
            "--background",
            "-c",
            "for i in 1 2 3; do echo line-$i; sleep 0.2; done; echo oops >&2; exit 5",
        ])
        .ok();
    let pid = pid.trim();
    assert!(pid.parse::<i32>().is_ok(), "{pid:?}");
    let ps = corral.cli(&["sandbox", "ps", &id]).ok();
    assert!(ps.contains(pid) && ps.contains("process"), "{ps}");
    // Following prints everything and exits with the process's code.
    let logs = corral.cli(&["sandbox", "logs", &id, pid, "-f"]);
    assert_eq!(logs.code, 5, "{logs:?}");
    assert_eq!(logs.out(), "line-1\nline-2\nline-3\n");
    assert_eq!(logs.stderr, "oops\n");
    let again = corral.cli(&["sandbox", "logs", &id, pid]).ok();
    assert_eq!(again, "line-1\nline-2\nline-3\n");
    let ps = corral.cli(&["sandbox", "ps", &id]).ok();
    assert!(ps.contains("exited") && ps.contains(" 5 "), "{ps}");
    let missing = corral.cli(&["sandbox", "logs", &id, "999999"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("no background process"),
        "{missing:?}"
    );
}

/// An access token of alice's.
fn alice_token(corral: &Corral) -> String {
    let url = corral.url.clone();
    block_on(async move {
        let token: serde_json::Value = reqwest::Client::new()
            .post(format!("{url}/api/v1/auth/login"))
            .json(&serde_json::json!({"login": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        token["access_token"].as_str().unwrap().to_owned()
    })
}

/// `corral queue work` runs jobs the server queued, without an HTTP server
/// of its own; a worker killed mid-job (SIGKILL) loses nothing: the job is
/// run again by the next worker once its lease runs out; one stopped past
/// its lease (SIGSTOP, SIGCONT) has its late result rejected; SIGTERM stops
/// a worker cleanly.
#[test]
fn queue_workers_run_apart_from_the_server_and_survive_kill_and_stop() {
    // The server's reconciler sweeps every 2 s meanwhile: it must leave the
    // worker process's record-less execution sandboxes alone.
    let lease = [
        ("CORRAL_QUEUE__WORKERS", "0"),
        ("CORRAL_QUEUE__LEASE_SECS", "2"),
        ("CORRAL_SANDBOX__SWEEP_INTERVAL_SECS", "2"),
    ];
    let corral = Corral::start_with(&lease);
    let token = alice_token(&corral);
    let url = corral.url.clone();
    let submit = |code: &str| {
        let (url, token, code) = (url.clone(), token.clone(), code.to_owned());
        block_on(async move {
            let res = reqwest::Client::new()
                .post(format!("{url}/api/v1/executions"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"language": "bash", "code": code}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
            res.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    };
    let status = |id: &str| {
        let (url, token, id) = (url.clone(), token.clone(), id.to_owned());
        block_on(async move {
            let v: serde_json::Value = reqwest::Client::new()
                .get(format!("{url}/api/v1/executions/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        })
    };
    let wait_for = |id: &str, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = status(id);
            if now["status"] == want {
                return now;
            }
            assert!(Instant::now() < deadline, "{now}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let data = corral.dir.path().join("data");
    let worker = || {
        Command::new(BIN)
            .args([
                "queue",
                "work",
                "--queues",
                "default",
                "--concurrency",
                "1",
                "--data-dir",
            ])
            .arg(&data)
            .env("CORRAL_SANDBOX__AGENT", agent())
            .env("CORRAL_LOG__LEVEL", "warn")
            .envs(lease.iter().copied())
            .env("CORRAL_QUEUE__WORKERS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Nothing runs it until a worker process comes.
    let slow = submit("sleep 3; echo survived");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status(&slow)["status"], "queued");
    let mut first = worker();
    wait_for(&slow, "running");
    // Killed mid-job: no goodbye, the lease is left to run out.
    first.kill().unwrap();
    first.wait().unwrap();
    let second = worker();
    let done = wait_for(&slow, "ok");
    assert_eq!(done["stdout"], "survived\n", "{done}");
    let quick = submit("echo hi");
    assert_eq!(wait_for(&quick, "ok")["stdout"], "hi\n");

    // Fault 7: a worker stopped past its lease (SIGSTOP) while its job is
    // reclaimed and finished by another; resumed (SIGCONT), its late
    // result is rejected by the fencing attempt number, and the visible
    // result stays the one the other worker recorded.
    use nix::sys::signal::{Signal, kill};
    let pid = nix::unistd::Pid::from_raw(second.id() as i32);
    let fenced = submit("sleep 3; cat /proc/sys/kernel/random/uuid");
    wait_for(&fenced, "running");
    kill(pid, Signal::SIGSTOP).unwrap();
    let third = worker();
    let recorded = wait_for(&fenced, "ok");
    kill(pid, Signal::SIGCONT).unwrap();
    // Long enough for the resumed worker to finish its run and report it.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(status(&fenced), recorded, "the late run changed nothing");

    // SIGTERM: a clean stop.
    kill(pid, Signal::SIGTERM).unwrap();
    let out = second.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("lease lost") || log.contains("result rejected"),
        "the stopped worker's result was rejected: {log}"
    );
    let third_pid = nix::unistd::Pid::from_raw(third.id() as i32);
    kill(third_pid, Signal::SIGTERM).unwrap();
    assert!(third.wait_with_output().unwrap().status.success());
    // The queue commands see the jobs.
    let stats = raw_run(
        corral.dir.path(),
        &["queue", "stats", "--data-dir", data.to_str().unwrap()],
        b"",
        &[],
    );
    assert_eq!(stats.code, 0, "{stats:?}");
    assert!(stats.out().contains("default"), "{stats:?}");
    let failed = raw_run(
        corral.dir.path(),
        &["queue", "failed", "--data-dir", data.to_str().unwrap()],
        b"",
        &[],
    );
    assert_eq!(failed.out(), "no failed jobs\n", "{failed:?}");
}
