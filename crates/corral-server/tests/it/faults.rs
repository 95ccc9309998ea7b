//! Faults of `../shared/security.md` (issue 17 item 10), automated: the
//! database goes away (fault 5). Each uses a database of its own, never the
//! shared one. Fault 10 (a full data disk) is not here yet: its test found,
//! under load, a write answered 201 after the disk was freed that a later
//! read on SQLite did not see (likely a pooled connection left inside a
//! transaction whose COMMIT failed with SQLITE_FULL); see issue 17.

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
    let app = TestApp::on_store(store_config, corral_server::Config::default()).await;
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
