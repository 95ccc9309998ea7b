//! Faults of `../shared/security.md` (issue 17 item 10), automated: the
//! database goes away (fault 5) and the data directory's disk fills up
//! (fault 10). Each uses a database of its own, never the shared one.
//!
//! Fault 10 writes concurrently while the disk is full: on SQLite a write or
//! COMMIT failing with `SQLITE_FULL` ends the transaction inside SQLite but
//! not in sqlx's count, and a pooled connection left that way once held the
//! write lock and swallowed later acknowledged writes (fixed by
//! `corral-store`'s pool release check). So the test checks what a restart
//! would see, not what the pool answers.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{TestApp, TestResponse};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL cluster in a temporary directory, on its own port,
/// run as the `postgres` user; stopped on drop.
struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateCluster {
    fn create() -> PrivateCluster {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        as_postgres(
            &["chown", "-R", "postgres", &dir.path().display().to_string()],
            true,
        );
        let data = dir.path().join("data");
        let out = as_postgres(
            &[
                &format!("{PG_BIN}/initdb"),
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "-D",
                &data.display().to_string(),
            ],
            false,
        );
        assert!(out.status.success(), "initdb: {out:?}");
        let cluster = PrivateCluster { dir, port };
        cluster.start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let out = as_postgres(
            &[
                &format!("{PG_BIN}/pg_ctl"),
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
            false,
        );
        assert!(out.status.success(), "pg_ctl start: {out:?}");
    }

    fn stop(&self) {
        let out = as_postgres(
            &[
                &format!("{PG_BIN}/pg_ctl"),
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            false,
        );
        assert!(out.status.success(), "pg_ctl stop: {out:?}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = as_postgres(
            &[
                &format!("{PG_BIN}/pg_ctl"),
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "stop",
            ],
            false,
        );
    }
}

/// Runs `argv` as the `postgres` user (`root_too`: as root).
fn as_postgres(argv: &[&str], root_too: bool) -> std::process::Output {
    let mut command = if root_too {
        Command::new(argv[0])
    } else {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", argv[0]]);
        c
    };
    command.args(&argv[1..]).current_dir("/").output().unwrap()
}

/// Asks until the answer is not a 503 (the database came back), for at
/// most `within`.
async fn until_available(
    within: Duration,
    mut ask: impl AsyncFnMut() -> TestResponse,
) -> TestResponse {
    let deadline = Instant::now() + within;
    loop {
        let res = ask().await;
        if res.status != 503 || Instant::now() > deadline {
            return res;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn titles(app: &TestApp, token: &str) -> Vec<String> {
    let res = app
        .call("GET", "/api/v1/library?owner=me", token, None)
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let mut titles: Vec<String> = res.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["title"].as_str().unwrap().to_owned())
        .collect();
    titles.sort();
    titles
}

fn snippet(title: &str, code: &str) -> serde_json::Value {
    json!({"title": title, "language": "python", "code": code})
}

/// Fault 5: PostgreSQL stops. The API answers 503 (with `Retry-After`)
/// quickly instead of hanging or a 500, comes back by itself once the
/// database does, and has lost nothing and done nothing twice.
#[tokio::test]
async fn the_api_answers_503_while_postgres_is_down_and_recovers() {
    let cluster = PrivateCluster::create();
    let store_config = corral_store::StoreConfig {
        url: cluster.url(),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(2),
    };
    let app = TestApp::on_store(store_config, corral_service::Config::default()).await;
    let (token, _) = app.register_and_login("survivor").await;
    let created = app
        .call(
            "POST",
            "/api/v1/library",
            &token,
            Some(snippet("before", "print(1)")),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());

    cluster.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let res = app
            .call(
                "POST",
                "/api/v1/library",
                &token,
                Some(snippet("during", "print(2)")),
            )
            .await;
        let problem = res.assert_problem(503, "service_unavailable");
        assert!(res.header("retry-after").is_some(), "{problem}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered in {:?}",
            started.elapsed()
        );
        let listed = app
            .call("GET", "/api/v1/library?owner=me", &token, None)
            .await;
        listed.assert_problem(503, "service_unavailable");
    }

    cluster.start();
    let after = until_available(Duration::from_secs(30), async || {
        app.call(
            "POST",
            "/api/v1/library",
            &token,
            Some(snippet("after", "print(3)")),
        )
        .await
    })
    .await;
    assert_eq!(after.status, 201, "{}", after.text());
    assert_eq!(titles(&app, &token).await, ["after", "before"]);
}

/// A tmpfs of `size` mounted at a new temporary directory; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a pooled connection the runtime has not closed yet may
        // still hold the database open.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Posts one snippet per title, all at once, and returns the titles whose
/// write was acknowledged (201) and how many were refused cleanly (503
/// with `Retry-After`); anything else fails the test.
async fn post_snippets_at_once(
    app: &TestApp,
    token: &str,
    titles: &[String],
    code: &str,
) -> (Vec<String>, usize) {
    let answers = futures_util::future::join_all(
        titles
            .iter()
            .map(|title| app.call("POST", "/api/v1/library", token, Some(snippet(title, code)))),
    )
    .await;
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for (title, res) in titles.iter().zip(answers) {
        if res.status == 503 {
            let problem = res.assert_problem(503, "service_unavailable");
            assert!(res.header("retry-after").is_some(), "{problem}");
            refused += 1;
        } else {
            assert_eq!(res.status, 201, "{title}: {}", res.text());
            acknowledged.push(title.clone());
        }
    }
    (acknowledged, refused)
}

/// The titles of every snippet in the database, read through a store
/// opened afresh: what a restart would see, so a write held back in a
/// pooled connection's unfinished transaction does not count.
async fn durable_titles(store_config: &corral_store::StoreConfig) -> Vec<String> {
    let store = corral_store::Store::connect(store_config).await.unwrap();
    let mut titles: Vec<String> = sqlx::query_scalar("SELECT title FROM library_snippets")
        .fetch_all(store.pool())
        .await
        .unwrap();
    store.close().await;
    titles.sort();
    titles
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i:02}")).collect()
}

/// Fault 10: the data directory's disk fills up while several writers
/// are at work. Writes get a clean 503 (a problem with `Retry-After`, not
/// a 500), reads go on, and once space is freed writes succeed again with
/// nothing lost: every write answered 201, before, during or after, is in
/// the database a restart would open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_data_disk_gives_clean_errors_and_recovers_when_freed() {
    let disk = SmallDisk::mount("8m");
    let store_config = corral_store::StoreConfig::sqlite_in(disk.path());
    let config = corral_service::Config {
        data_dir: disk.path().to_path_buf(),
        ..corral_service::Config::default()
    };
    let app = TestApp::on_store(store_config.clone(), config).await;
    // A plan with room for every snippet this test writes.
    let token = app.register_on_plan("filler", "enterprise").await;
    let (mut acknowledged, _) =
        post_snippets_at_once(&app, &token, &["before".to_owned()], "print(1)").await;
    assert_eq!(acknowledged, ["before"]);

    // Fill what is left of the disk, then write more than a pool's worth
    // of big snippets at once, several times.
    let filler = disk.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    let big = format!("# {}", "x".repeat(200_000));
    let mut refused = 0;
    for round in 0..3 {
        let (written, refused_now) =
            post_snippets_at_once(&app, &token, &numbered(&format!("full{round}-"), 12), &big)
                .await;
        acknowledged.extend(written);
        refused += refused_now;
    }
    assert!(refused > 0, "the disk never filled");
    let listed = app
        .call("GET", "/api/v1/library?owner=me", &token, None)
        .await;
    assert_eq!(listed.status, 200, "reads go on: {}", listed.text());

    std::fs::remove_file(&filler).unwrap();
    for round in 0..3 {
        let titles = numbered(&format!("after{round}-"), 12);
        let (written, refused_now) = post_snippets_at_once(&app, &token, &titles, "print(3)").await;
        assert_eq!(refused_now, 0, "the disk has room again");
        acknowledged.extend(written);
    }
    // Every connection back and closed, as at a shutdown.
    app.state.store.close().await;
    acknowledged.sort();
    assert_eq!(
        durable_titles(&store_config).await,
        acknowledged,
        "every acknowledged write is durable, no refused write left anything"
    );
}
