//! A sandbox's disk, its memory and its way out of `error`, through the API
//! on real sandboxes with the default resources (128 MB of memory, a 256 MB
//! disk): a disk larger than memory can be filled, a full disk answers
//! `no_space`, running out of memory kills the program and not the
//! sandbox, and a sandbox whose container died is stopped and started
//! again with its files.

use corral_core::clock::Clock;
use serde_json::json;

use crate::sandboxes::app_in;
use crate::support::{TestApp, TestResponse, on_both_backends};

async fn sh(app: &TestApp, key: &str, id: &str, command: &str) -> serde_json::Value {
    let out = app
        .call(
            "POST",
            &format!("/api/v1/sandboxes/{id}/exec"),
            key,
            Some(json!({ "command": command, "timeout_ms": 60_000 })),
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.text());
    out.json()
}

async fn state_of(app: &TestApp, key: &str, id: &str) -> serde_json::Value {
    app.call("GET", &format!("/api/v1/sandboxes/{id}"), key, None)
        .await
        .json()
}

/// Streams `size` bytes of `byte` to `path` in sandbox `id`, with a
/// `Content-Length` as real clients send it.
async fn upload(
    app: &TestApp,
    key: &str,
    id: &str,
    path: &str,
    byte: u8,
    size: usize,
) -> TestResponse {
    let request = http::Request::put(format!("/api/v1/sandboxes/{id}/files/content?path={path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/octet-stream")
        .header("content-length", size.to_string())
        .body(axum::body::Body::from(vec![byte; size]))
        .unwrap();
    app.send(request).await
}

async fn create(app: &TestApp, key: &str) -> String {
    let created = app
        .call("POST", "/api/v1/sandboxes", key, Some(json!({})))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let sandbox = created.json();
    // The defaults this file is about.
    assert_eq!(sandbox["memory_mb"], 128, "{sandbox}");
    assert_eq!(sandbox["disk_mb"], 256, "{sandbox}");
    sandbox["id"].as_str().unwrap().to_owned()
}

const MB: usize = 1 << 20;

on_both_backends!(
    a_disk_larger_than_memory_is_usable_and_a_full_one_answers_no_space,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (key, _) = app.register_and_login("filler").await;
        let id = create(&app, &key).await;

        // /tmp is everyone's scratch space.
        let mode = sh(&app, &key, &id, "stat -c %a /tmp").await;
        assert_eq!(mode["stdout"], "1777\n", "{mode}");

        // 150 MB into a sandbox of 128 MB of memory.
        let big = upload(&app, &key, &id, "/tmp/big", b'a', 150 * MB).await;
        assert_eq!(big.status, 204, "{}", big.text());
        let seen = sh(
            &app,
            &key,
            &id,
            "wc -c < /tmp/big; tr -d a < /tmp/big | wc -c",
        )
        .await;
        assert_eq!(seen["stdout"], format!("{}\n0\n", 150 * MB), "{seen}");

        // Another 150 MB does not fit: 507 no_space, nothing half-written,
        // the first file intact.
        let refused = upload(&app, &key, &id, "/tmp/more", b'b', 150 * MB).await;
        refused.assert_problem(507, "no_space");
        let left = sh(&app, &key, &id, "ls -A /tmp; wc -c < /tmp/big").await;
        assert_eq!(left["stdout"], format!("big\n{}\n", 150 * MB), "{left}");
        // Replacing the big file with one that does not fit beside it keeps
        // the old one.
        let replaced = upload(&app, &key, &id, "/tmp/big", b'c', 150 * MB).await;
        replaced.assert_problem(507, "no_space");
        let kept = sh(&app, &key, &id, "ls -A /tmp; tr -d a < /tmp/big | wc -c").await;
        assert_eq!(kept["stdout"], "big\n0\n", "{kept}");

        // A program filling the disk gets ENOSPC; nothing is killed.
        let dd = sh(
            &app,
            &key,
            &id,
            "dd if=/dev/zero of=/tmp/fill bs=1M count=400 2>&1; echo exit=$?",
        )
        .await;
        let text = dd["stdout"].as_str().unwrap();
        assert!(text.contains("No space left on device"), "{dd}");
        assert!(text.contains("exit=1"), "{dd}");
        assert_eq!(dd["signal"], serde_json::Value::Null, "{dd}");

        // The sandbox goes on working, and space comes back.
        let after = sh(
            &app,
            &key,
            &id,
            "rm /tmp/fill /tmp/big && echo ok > /tmp/ok && cat /tmp/ok",
        )
        .await;
        assert_eq!(after["stdout"], "ok\n", "{after}");
        assert_eq!(state_of(&app, &key, &id).await["state"], "running");
        let small = upload(&app, &key, &id, "/tmp/small", b's', MB).await;
        assert_eq!(small.status, 204, "{}", small.text());

        // The disk is on the data directory's disk, and goes with the sandbox.
        let disk = dir.path().join("disks").join(format!("{id}.img"));
        assert!(disk.is_file(), "{} missing", disk.display());
        let deleted = app
            .call("DELETE", &format!("/api/v1/sandboxes/{id}"), &key, None)
            .await;
        assert_eq!(deleted.status, 204, "{}", deleted.text());
        assert!(!disk.exists(), "the disk outlived its sandbox");
    }
);

on_both_backends!(
    a_program_out_of_memory_is_killed_and_the_sandbox_lives_on,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (key, _) = app.register_and_login("hungry").await;
        let id = create(&app, &key).await;

        // The user's programs are the OOM killer's first choice; the agent
        // (PID 1) is not.
        let scores = sh(
            &app,
            &key,
            &id,
            "cat /proc/self/oom_score_adj /proc/1/oom_score_adj",
        )
        .await;
        assert_eq!(scores["stdout"], "1000\n0\n", "{scores}");

        // A terminal open across the OOM.
        let opened = app
            .call(
                "POST",
                &format!("/api/v1/sandboxes/{id}/terminals"),
                &key,
                Some(json!({"cols": 80, "rows": 24, "command": ["/bin/sh"]})),
            )
            .await;
        assert_eq!(opened.status, 201, "{}", opened.text());
        let terminal = opened.json()["id"].as_str().unwrap().to_owned();

        // 500 MB, touched, in 128 MB.
        let hog = sh(
            &app,
            &key,
            &id,
            "exec python3 -c 'b = bytearray(b\"x\") * (500 << 20); print(len(b))'",
        )
        .await;
        assert_eq!(hog["signal"], 9, "{hog}");
        assert_eq!(hog["stdout"], "", "{hog}");

        // Exec, files and terminals still work in the same sandbox.
        let alive = sh(&app, &key, &id, "echo alive > /tmp/a && cat /tmp/a").await;
        assert_eq!(alive["stdout"], "alive\n", "{alive}");
        let read = app
            .call(
                "GET",
                &format!("/api/v1/sandboxes/{id}/files/content?path=/tmp/a"),
                &key,
                None,
            )
            .await;
        assert_eq!(read.status, 200, "{}", read.text());
        assert_eq!(read.body, b"alive\n");
        let terminals = app
            .call(
                "GET",
                &format!("/api/v1/sandboxes/{id}/terminals"),
                &key,
                None,
            )
            .await;
        assert_eq!(terminals.status, 200, "{}", terminals.text());
        assert!(terminals.text().contains(&terminal), "{}", terminals.text());
        let another = app
            .call(
                "POST",
                &format!("/api/v1/sandboxes/{id}/terminals"),
                &key,
                Some(json!({"cols": 80, "rows": 24, "command": ["/bin/sh"]})),
            )
            .await;
        assert_eq!(another.status, 201, "{}", another.text());

        // Still running, also to the reconciler and the sweep.
        let done = app
            .state
            .sandboxes
            .reconcile(&app.state.store, app.clock.now_ms(), false)
            .await
            .unwrap();
        assert_eq!(done.failed, 0, "{done:?}");
        corral_service::sandbox::sweep(&app.state).await.unwrap();
        assert_eq!(state_of(&app, &key, &id).await["state"], "running");
        let again = sh(&app, &key, &id, "echo still").await;
        assert_eq!(again["stdout"], "still\n", "{again}");
    }
);

/// Kills every process of sandbox `id`'s container from the host, as a
/// crash or an outside `kill` would.
fn kill_container(app: &TestApp, id: &str) {
    let sandbox = app.state.sandboxes.attach(id);
    let runtime = corral_runtime::OciRuntime {
        binary: "runc".into(),
        root: app.state.config.sandbox.runtime_root.clone().unwrap(),
    };
    let pid = runtime.init_pid(&sandbox.id).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // PID 1 gone, the kernel ends the rest of its namespace; the runtime
    // then reports the container stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sandbox.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container lives on"
        );
        std::thread::yield_now();
    }
}

on_both_backends!(
    a_sandbox_in_error_is_stopped_and_started_again_with_its_files,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (key, _) = app.register_and_login("phoenix").await;
        let id = create(&app, &key).await;
        let kept = sh(&app, &key, &id, "echo precious > /tmp/keep").await;
        assert_eq!(kept["exit_code"], 0, "{kept}");

        for round in ["stop then start", "start at once"] {
            kill_container(&app, &id);
            let done = app
                .state
                .sandboxes
                .reconcile(&app.state.store, app.clock.now_ms(), false)
                .await
                .unwrap();
            assert_eq!(done.failed, 1, "{round}: {done:?}");
            let failed = state_of(&app, &key, &id).await;
            assert_eq!(failed["state"], "error", "{round}: {failed}");
            // Its disk is not an orphan.
            let done = app
                .state
                .sandboxes
                .reconcile(&app.state.store, app.clock.now_ms(), true)
                .await
                .unwrap();
            assert_eq!(done.orphans, 0, "{round}: {done:?}");

            if round == "stop then start" {
                let stopped = app
                    .call("POST", &format!("/api/v1/sandboxes/{id}/stop"), &key, None)
                    .await;
                assert_eq!(stopped.status, 200, "{round}: {}", stopped.text());
                assert_eq!(stopped.json()["state"], "stopped");
                assert_eq!(stopped.json()["error"], serde_json::Value::Null);
            }
            let started = app
                .call("POST", &format!("/api/v1/sandboxes/{id}/start"), &key, None)
                .await;
            assert_eq!(started.status, 200, "{round}: {}", started.text());
            assert_eq!(started.json()["state"], "running");
            let back = sh(&app, &key, &id, "cat /tmp/keep; id -u").await;
            assert_eq!(back["stdout"], "precious\n0\n", "{round}: {back}");
        }

        // Stop and start keep /tmp too.
        for step in ["stop", "start"] {
            let done = app
                .call(
                    "POST",
                    &format!("/api/v1/sandboxes/{id}/{step}"),
                    &key,
                    None,
                )
                .await;
            assert_eq!(done.status, 200, "{step}: {}", done.text());
        }
        let back = sh(&app, &key, &id, "cat /tmp/keep").await;
        assert_eq!(back["stdout"], "precious\n", "{back}");
    }
);

/// Sandbox `id`'s state as the store has it (no API call: polling the API
/// would meet its rate limit).
async fn stored_state(app: &TestApp, id: &str) -> String {
    let all = app
        .state
        .store
        .sandboxes_in(&[
            "creating", "starting", "running", "stopping", "stopped", "error",
        ])
        .await
        .unwrap();
    all.into_iter()
        .find(|s| s.id == id)
        .map(|s| s.state)
        .unwrap_or_default()
}

/// Sends `POST /api/v1/sandboxes/{id}/{step}` and drops the request (as a
/// client that goes away does) as soon as the sandbox shows `transitional`;
/// `false` when the request finished before it could be cut short.
async fn cut_short(app: &TestApp, key: &str, id: &str, step: &str, transitional: &str) -> bool {
    let path = format!("/api/v1/sandboxes/{id}/{step}");
    let mut call = Box::pin(app.call("POST", &path, key, None));
    loop {
        tokio::select! {
            biased;
            _ = &mut call => return false,
            () = tokio::task::yield_now() => {}
        }
        if stored_state(app, id).await == transitional {
            return true;
        }
    }
}

/// Waits until sandbox `id` is in none of the transitional states, and
/// returns the state it settled in.
async fn settled(app: &TestApp, id: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let state = stored_state(app, id).await;
        if !["creating", "starting", "stopping"].contains(&state.as_str())
            || std::time::Instant::now() > deadline
        {
            return state;
        }
        tokio::task::yield_now().await;
    }
}

on_both_backends!(
    a_stop_or_start_whose_client_went_away_still_finishes,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (key, _) = app.register_and_login("impatient").await;
        let id = create(&app, &key).await;
        sh(&app, &key, &id, "echo here > /tmp/here").await;

        assert!(cut_short(&app, &key, &id, "stop", "stopping").await);
        assert_eq!(settled(&app, &id).await, "stopped");
        assert!(cut_short(&app, &key, &id, "start", "starting").await);
        assert_eq!(settled(&app, &id).await, "running");
        let back = sh(&app, &key, &id, "cat /tmp/here").await;
        assert_eq!(back["stdout"], "here\n", "{back}");
    }
);
