//! A new user's first hour, as they drive it: the README's quick start run
//! as written, and the path fresh install → first admin → key → sandbox →
//! upload 150 MB → exec → shell → judge → library with the CLI, each step's
//! outcome checked. Both start from an empty data directory, the way
//! `make run` starts (`corral serve` in the checkout, `./corral-data`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::path::Path;
use std::process::{Child, Command};

mod common;

use common::agent;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const PASSWORD: &str = "a first admin's password";

/// What a command did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:#?}");
        &self.stdout
    }
}

/// `corral serve` started as `make run` starts it: in a fresh folder that
/// stands for the checkout, with no flags, so its data is `./corral-data`
/// there. Only the address is a free port instead of 8080.
struct FreshInstall {
    dir: tempfile::TempDir,
    server: Child,
    url: String,
}

impl FreshInstall {
    fn start() -> FreshInstall {
        let dir = tempfile::tempdir().unwrap();
        // The checkout's build output, as `make run` leaves it.
        let release = dir.path().join("target/release");
        std::fs::create_dir_all(&release).unwrap();
        std::os::unix::fs::symlink(BIN, release.join("corral")).unwrap();
        let (server, url) = common::serve(
            Command::new(BIN)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("CORRAL_LOG__LEVEL", "warn")
                .env("CORRAL_SANDBOX__AGENT", agent()),
        );
        FreshInstall { dir, server, url }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A command in the checkout folder with `corral` on the PATH and a
    /// home of its own (the CLI saves its login under it).
    fn command(&self, program: &str) -> Command {
        let path = format!(
            "{}:{}",
            self.path().join("target/release").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(program);
        command
            .current_dir(self.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.path())
            .env("TERM", "xterm");
        command
    }

    fn run(&self, mut command: Command, stdin: &[u8]) -> Out {
        let out = common::run_with_stdin(&mut command, stdin);
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `corral ARGS` with `stdin`.
    fn corral(&self, args: &[&str], stdin: &str) -> Out {
        let mut command = self.command("corral");
        command.args(args);
        self.run(command, stdin.as_bytes())
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }
}

impl Drop for FreshInstall {
    fn drop(&mut self) {
        // Sandboxes a failed test left are removed by the server's own
        // shutdown and reconciler; end it politely.
        let pid = nix::unistd::Pid::from_raw(self.server.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.server.wait();
    }
}

/// The shell blocks of README.md's quick start, as a user pastes them: the
/// lines between the `quick-start` markers, with the server's address for
/// 8080 and the password already chosen (the `read` line asks a person).
fn readme_quick_start(url: &str) -> String {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("<!-- quick-start")
        .expect("README.md has a quick-start section");
    let end = readme[start..]
        .find("<!-- /quick-start -->")
        .expect("the quick-start section ends")
        + start;
    let mut script = String::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        match line.trim_start() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            text if in_block && !text.starts_with("read ") => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    let addr = url.trim_start_matches("http://");
    script
        .replace("http://127.0.0.1:8080", url)
        .replace("localhost:8080", addr)
}

/// README.md's quick start runs as written on a fresh install: every line
/// succeeds and each shows what it promises.
#[test]
fn the_readme_quick_start_runs_as_written() {
    let install = FreshInstall::start();
    let script = readme_quick_start(&install.url);
    assert!(script.contains("corral admin create-user"), "{script}");
    let mut bash = install.command("bash");
    bash.args(["-euo", "pipefail", "-c", &script])
        .env("PASSWORD", PASSWORD);
    let out = install.run(bash, b"");
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.code, 0,
        "the quick start failed:\n{all}\nscript:\n{script}"
    );
    for expected in [
        "Linux",                                // uname -a
        "157286400",                            // ls -l of the 150 MiB upload
        "hi from a terminal",                   // corral shell's output
        "the terminal's program exited with 3", // and its exit code
        "olleh",                                // the judge
        "cba",                                  // the library
        "\"state\":\"running\"",                // a sandboxes:write key reads its sandbox
        "42",                                   // exec through the API
    ] {
        assert!(all.contains(expected), "no {expected:?} in:\n{all}");
    }
    assert!(!out.stdout.contains("\"code\":"), "an API error:\n{all}");
}

/// `GET /api/v1/users/me` for admin, signed in with the password.
fn signed_in_user(url: &str) -> serde_json::Value {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let http = reqwest::Client::new();
            let tokens: serde_json::Value = http
                .post(format!("{url}/api/v1/auth/login"))
                .json(&serde_json::json!({"login": "admin", "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let access = tokens["access_token"].as_str().unwrap().to_owned();
            http.get(format!("{url}/api/v1/users/me"))
                .bearer_auth(access)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
}

/// The first hour with the CLI, each step checked.
#[test]
fn a_new_users_first_hour_has_no_dead_end() {
    let install = FreshInstall::start();
    let url = install.url.clone();

    // The first administrator: super_admin, not stuck on the free plan.
    let made = install.corral(
        &[
            "admin",
            "create-user",
            "--username",
            "admin",
            "--email",
            "you@example.com",
            "--password-stdin",
        ],
        PASSWORD,
    );
    made.ok();
    install
        .corral(
            &[
                "login",
                "--url",
                &url,
                "--username",
                "admin",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .ok();
    let me = signed_in_user(&url);
    assert_eq!(me["role"], "super_admin", "{me}");
    assert_eq!(me["plan"], "enterprise", "{me}");

    // A sandbox with the defaults, a 150 MB upload (more than its 128 MB of
    // memory: the disk is not memory), and an exec that reads it back.
    let id = install.corral(&["sandbox", "create", "--name", "first"], "");
    let id = id.ok().trim().to_owned();
    let big: Vec<u8> = (0..150u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(install.path().join("big.bin"), &big).unwrap();
    drop(big);
    let local = install.run(
        {
            let mut c = install.command("sha256sum");
            c.arg("big.bin");
            c
        },
        b"",
    );
    let local_sum = local.ok().split_whitespace().next().unwrap().to_owned();
    install
        .corral(&["sandbox", "cp", "big.bin", &format!("{id}:/tmp/")], "")
        .ok();
    let remote = install.corral(
        &["sandbox", "exec", &id, "--", "sha256sum", "/tmp/big.bin"],
        "",
    );
    assert!(remote.ok().starts_with(&local_sum), "{remote:?}");
    let hello = install.corral(
        &["sandbox", "exec", &id, "-c", "echo hello from $(uname -s)"],
        "",
    );
    assert_eq!(hello.ok(), "hello from Linux\n");

    // A terminal: short output and the exit code both reach the user.
    let mut shell = install.command("script");
    shell.args([
        "-qec",
        &format!("corral shell {id} -- sh -c 'echo hi; exit 3'"),
        "/dev/null",
    ]);
    let shell = install.run(shell, b"");
    assert_eq!(shell.code, 3, "{shell:?}");
    assert!(shell.stdout.contains("hi"), "{shell:?}");

    // The judge: a verdict and an exit code that says it.
    install.write("reverse.py", "print(input()[::-1])\n");
    install.write("expected.txt", "cba\n");
    install.write("wrong.txt", "abc\n");
    let ok = install.corral(
        &["judge", "reverse.py", "--expected", "expected.txt"],
        "abc\n",
    );
    assert_eq!(ok.ok(), "cba\n");
    assert!(ok.stderr.contains("corral: ok"), "{ok:?}");
    let wrong = install.corral(&["judge", "reverse.py", "--expected", "wrong.txt"], "abc\n");
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(wrong.stderr.contains("wrong_answer"), "{wrong:?}");
    install.write("reverse.cobol", "DISPLAY 'HI'.\n");
    let unknown = install.corral(&["judge", "reverse.cobol"], "");
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.stderr.contains("--language"), "{unknown:?}");

    // The library: save, find, show, run, delete.
    let snippet = install.corral(
        &[
            "library",
            "add",
            "reverse.py",
            "--title",
            "Reverse",
            "--tag",
            "demo",
        ],
        "",
    );
    let snippet = snippet.ok().trim().to_owned();
    let listed = install.corral(&["library", "ls", "--tag", "demo"], "");
    assert!(listed.ok().contains("Reverse"), "{listed:?}");
    let code = install.corral(&["library", "get", &snippet], "");
    assert_eq!(code.ok(), "print(input()[::-1])\n");
    let ran = install.corral(&["library", "run", &snippet], "hello\n");
    assert_eq!(ran.ok(), "olleh\n");
    install.corral(&["library", "rm", &snippet], "").ok();
    let gone = install.corral(&["library", "get", &snippet], "");
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("not_found"), "{gone:?}");

    // Stop, start (the upload is still there), delete.
    install.corral(&["sandbox", "stop", &id], "").ok();
    install.corral(&["sandbox", "start", &id], "").ok();
    let kept = install.corral(
        &[
            "sandbox",
            "exec",
            &id,
            "--",
            "stat",
            "-c",
            "%s",
            "/tmp/big.bin",
        ],
        "",
    );
    assert_eq!(kept.ok(), "157286400\n");
    install.corral(&["sandbox", "rm", &id], "").ok();
}
