//! Sandbox lifecycle through the API, on real sandboxes: change, stop and
//! start, pause and resume, automatic stop and delete, streamed exec.

use axum::body::Body;
use http::Request;
use serde_json::json;

use crate::sandboxes::{app_configured, app_in};
use crate::support::{TestApp, on_both_backends};

async fn state_of(app: &TestApp, key: &str, id: &str) -> String {
    app.call("GET", &format!("/api/v1/sandboxes/{id}"), key, None)
        .await
        .json()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn sh(app: &TestApp, key: &str, id: &str, command: &str) -> crate::support::TestResponse {
    app.call(
        "POST",
        &format!("/api/v1/sandboxes/{id}/exec"),
        key,
        Some(json!({ "command": command })),
    )
    .await
}

on_both_backends!(
    a_sandbox_is_changed_paused_stopped_and_started_again,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (alice, _) = app.register_and_login("alice").await;
        let created = app
            .call(
                "POST",
                "/api/v1/sandboxes",
                &alice,
                Some(json!({"name": "one", "labels": {"team": "a"}, "auto_stop_minutes": 30})),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let sandbox = created.json();
        assert_eq!(sandbox["auto_stop_minutes"], 30);
        let id = sandbox["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/sandboxes/{id}");

        // PATCH: name, labels, minutes (null clears one).
        let changed = app
            .call(
                "PATCH",
                &path,
                &alice,
                Some(json!({"name": "renamed", "labels": {"team": "b", "tier": "x_1%"}, "auto_stop_minutes": null, "auto_delete_minutes": 60})),
            )
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text());
        let changed = changed.json();
        assert_eq!(changed["name"], "renamed");
        assert_eq!(changed["labels"], json!({"team": "b", "tier": "x_1%"}));
        assert!(changed.get("auto_stop_minutes").is_none(), "{changed}");
        assert_eq!(changed["auto_delete_minutes"], 60);
        for bad in [
            json!({"auto_stop_minutes": 0}),
            json!({"auto_delete_minutes": 10_000_000}),
            json!({"name": ""}),
            json!({"labels": {"": "x"}}),
        ] {
            app.call("PATCH", &path, &alice, Some(bad))
                .await
                .assert_problem(422, "validation_failed");
        }
        app.call("PATCH", &path, &alice, Some(json!({"state": "running"})))
            .await
            .assert_problem(422, "validation_failed");

        // Label and state filters.
        let listed = |query: &'static str| {
            let (app, alice) = (&app, alice.clone());
            async move {
                app.call("GET", &format!("/api/v1/sandboxes?{query}"), &alice, None)
                    .await
            }
        };
        let items = |r: crate::support::TestResponse| r.json()["items"].as_array().unwrap().len();
        assert_eq!(items(listed("label=team=b").await), 1);
        assert_eq!(items(listed("label=tier=x_1%25").await), 1);
        assert_eq!(
            items(listed("label=team=B").await),
            0,
            "labels match exactly"
        );
        assert_eq!(
            items(listed("label=tier=x_1").await),
            0,
            "no partial values"
        );
        assert_eq!(items(listed("label=team=a").await), 0);
        assert_eq!(items(listed("state=running").await), 1);
        assert_eq!(items(listed("state=stopped").await), 0);
        listed("label=team")
            .await
            .assert_problem(422, "validation_failed");
        listed("state=sleeping")
            .await
            .assert_problem(422, "validation_failed");

        // Its counters: a program holding 20 MB shows in memory; pids count.
        let stats = app
            .call("GET", &format!("{path}/stats"), &alice, None)
            .await;
        assert_eq!(stats.status, 200, "{}", stats.text());
        let idle = stats.json();
        assert_eq!(idle["memory_limit_bytes"], 128 << 20, "{idle}");
        assert_eq!(idle["pids_limit"], 256);
        assert!(idle["pids"].as_u64().unwrap() >= 1, "the agent: {idle}");
        // Pause freezes it: exec is refused, state kept; resume thaws it.
        assert_eq!(
            sh(&app, &alice, &id, "echo kept > /tmp/f").await.status,
            200
        );
        let paused = app
            .call("POST", &format!("{path}/pause"), &alice, None)
            .await;
        assert_eq!(paused.status, 200, "{}", paused.text());
        assert_eq!(paused.json()["state"], "paused");
        sh(&app, &alice, &id, "true")
            .await
            .assert_problem(409, "conflict");
        app.call("POST", &format!("{path}/start"), &alice, None)
            .await
            .assert_problem(409, "conflict");
        let resumed = app
            .call("POST", &format!("{path}/resume"), &alice, None)
            .await;
        assert_eq!(resumed.json()["state"], "running");
        assert_eq!(
            sh(&app, &alice, &id, "cat /tmp/f").await.json()["stdout"],
            "kept\n"
        );
        assert_eq!(
            app.call("POST", &format!("{path}/resume"), &alice, None)
                .await
                .json()["state"],
            "running",
            "resuming a running sandbox changes nothing"
        );

        // Stop (from paused, too) gives its place back: the Free plan's one
        // concurrent sandbox can be used by another.
        app.call("POST", &format!("{path}/pause"), &alice, None)
            .await;
        let stopped = app
            .call("POST", &format!("{path}/stop"), &alice, None)
            .await;
        assert_eq!(stopped.status, 200, "{}", stopped.text());
        let stopped = stopped.json();
        assert_eq!(stopped["state"], "stopped");
        assert!(stopped["stopped_at"].is_string());
        assert_eq!(
            app.call("POST", &format!("{path}/stop"), &alice, None)
                .await
                .json()["state"],
            "stopped",
            "stopping a stopped sandbox changes nothing"
        );
        sh(&app, &alice, &id, "true")
            .await
            .assert_problem(409, "conflict");
        app.call("POST", &format!("{path}/pause"), &alice, None)
            .await
            .assert_problem(409, "conflict");
        let other = app
            .call("POST", "/api/v1/sandboxes", &alice, Some(json!({})))
            .await;
        assert_eq!(other.status, 201, "{}", other.text());
        let other = other.json()["id"].as_str().unwrap().to_owned();
        app.call("POST", &format!("{path}/start"), &alice, None)
            .await
            .assert_problem(429, "quota_exceeded");
        assert_eq!(
            state_of(&app, &alice, &id).await,
            "stopped",
            "a refused start changes nothing"
        );
        app.call(
            "DELETE",
            &format!("/api/v1/sandboxes/{other}"),
            &alice,
            None,
        )
        .await;

        let started = app
            .call("POST", &format!("{path}/start"), &alice, None)
            .await;
        assert_eq!(started.status, 200, "{}", started.text());
        assert_eq!(started.json()["state"], "running");
        let out = sh(&app, &alice, &id, "echo again; id -u").await.json();
        assert_eq!(out["stdout"], "again\n0\n");
        assert_eq!(
            app.call("POST", &format!("{path}/start"), &alice, None)
                .await
                .json()["state"],
            "running"
        );

        // Another tenant reaches none of it.
        let (eve, _) = app.register_and_login("eve").await;
        for step in ["start", "stop", "pause", "resume"] {
            app.call("POST", &format!("{path}/{step}"), &eve, None)
                .await
                .assert_problem(404, "not_found");
        }
        app.call("PATCH", &path, &eve, Some(json!({"name": "mine"})))
            .await
            .assert_problem(404, "not_found");

        // Every step is audited.
        let actions: Vec<String> = app
            .state
            .store
            .list_audit(&corral_store::AuditFilter {
                limit: 200,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.resource_id.as_deref() == Some(id.as_str()))
            .map(|r| format!("{}:{}", r.action, r.outcome))
            .collect();
        for wanted in [
            "sandbox.update:success",
            "sandbox.pause:success",
            "sandbox.resume:success",
            "sandbox.stop:success",
            "sandbox.start:success",
        ] {
            assert!(
                actions.iter().any(|a| a == wanted),
                "{wanted} in {actions:?}"
            );
        }
        app.call("DELETE", &path, &alice, None).await;
        assert!(!dir.path().join("sandboxes").join(&id).exists());
    }
);

on_both_backends!(
    idle_sandboxes_stop_and_stopped_ones_are_deleted_on_time,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (access, _) = app.register_and_login("sleepy").await;
        // A key, not the access token: the clock moves past a token's life.
        let (key, _) = app
            .create_key(&access, &["sandboxes:read", "sandboxes:write"])
            .await;
        let created = app
            .call(
                "POST",
                "/api/v1/sandboxes",
                &key,
                Some(json!({"auto_stop_minutes": 10, "auto_delete_minutes": 60})),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let id = created.json()["id"].as_str().unwrap().to_owned();

        // Activity pushes the stop back.
        app.clock.advance(9 * 60_000);
        assert_eq!(
            corral_service::sandbox::sweep(&app.state).await.unwrap(),
            (0, 0)
        );
        assert_eq!(sh(&app, &key, &id, "true").await.status, 200);
        app.clock.advance(9 * 60_000);
        assert_eq!(
            corral_service::sandbox::sweep(&app.state).await.unwrap(),
            (0, 0)
        );
        assert_eq!(state_of(&app, &key, &id).await, "running");
        app.clock.advance(2 * 60_000);
        assert_eq!(
            corral_service::sandbox::sweep(&app.state).await.unwrap(),
            (1, 0)
        );
        assert_eq!(state_of(&app, &key, &id).await, "stopped");

        app.clock.advance(59 * 60_000);
        assert_eq!(
            corral_service::sandbox::sweep(&app.state).await.unwrap(),
            (0, 0)
        );
        app.clock.advance(2 * 60_000);
        assert_eq!(
            corral_service::sandbox::sweep(&app.state).await.unwrap(),
            (0, 1)
        );
        app.call("GET", &format!("/api/v1/sandboxes/{id}"), &key, None)
            .await
            .assert_problem(404, "not_found");
        let automatic = app
            .state
            .store
            .list_audit(&corral_store::AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.action.starts_with("sandbox.auto_"))
            .map(|r| (r.action, r.actor_user_id))
            .collect::<Vec<_>>();
        assert_eq!(
            automatic.len(),
            2,
            "auto-stop and auto-delete are audited with no actor: {automatic:?}"
        );
        assert!(automatic.iter().all(|(_, actor)| actor.is_none()));
    }
);

/// The events of a `text/event-stream` body: (event, data).
fn events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).ok();
                }
            }
            Some((event?, data?))
        })
        .collect()
}

on_both_backends!(exec_streams_output_as_server_sent_events, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(app.state.store.backend(), dir.path()).await;
    let (key, _) = app.register_and_login("streamer").await;
    let created = app
        .call("POST", "/api/v1/sandboxes", &key, Some(json!({})))
        .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let stream = |body: serde_json::Value| {
        let (app, key, id) = (&app, key.clone(), id.clone());
        async move {
            let request = Request::post(format!("/api/v1/sandboxes/{id}/exec"))
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .header("accept", "text/event-stream")
                .body(Body::from(body.to_string()))
                .unwrap();
            app.send(request).await
        }
    };
    let response = stream(
        json!({"command": "echo one; echo oops >&2; sleep 0.2; printf 'tw\\303\\251'; exit 3"}),
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let got = events(&response.text());
    let text_of = |name: &str| -> String {
        got.iter()
            .filter(|(e, _)| e == name)
            .map(|(_, d)| d["data"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(text_of("stdout"), "one\ntwé");
    assert_eq!(text_of("stderr"), "oops\n");
    let (last, result) = got.last().unwrap();
    assert_eq!(last, "exit", "{got:?}");
    assert_eq!(result["exit_code"], 3);
    assert_eq!(
        result["stdout"], "",
        "output came as events, not again at the end"
    );
    // The first line arrived as its own event, before the program ended
    // (stdout and stderr are two pipes: their order between them is free).
    let first = got.iter().find(|(e, _)| e == "stdout").unwrap();
    assert_eq!(first.1["data"], "one\n", "{got:?}");

    // A timeout ends the stream with the result; a bad program with an error event.
    let got = events(
        &stream(json!({"command": "sleep 5", "timeout_ms": 200}))
            .await
            .text(),
    );
    assert_eq!(got.last().unwrap().1["timed_out"], true);
    let got = events(&stream(json!({"argv": ["/no/such"]})).await.text());
    assert_eq!(got.last().unwrap().0, "error");
    assert_eq!(got.last().unwrap().1["code"], "validation_failed");
    // Bad input is still a problem, not a stream.
    stream(json!({}))
        .await
        .assert_problem(422, "validation_failed");
});

on_both_backends!(files_are_found_by_name_and_content_and_replaced, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(app.state.store.backend(), dir.path()).await;
    let (key, _) = app.register_and_login("finder").await;
    let created = app
        .call("POST", "/api/v1/sandboxes", &key, Some(json!({})))
        .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let out = sh(
        &app,
        &key,
        &id,
        "mkdir -p /tmp/p/sub && printf 'x = 1\\nprint(x)\\n' > /tmp/p/a.py && \
         printf 'y = 2\\n' > /tmp/p/sub/b.py && echo note > /tmp/p/c.txt && \
         ln -s /etc /tmp/p/etc-link",
    )
    .await;
    assert_eq!(out.json()["exit_code"], 0, "{}", out.text());
    let search = |query: &str| {
        let (app, key, path) = (
            &app,
            key.clone(),
            format!("/api/v1/sandboxes/{id}/files/search?{query}"),
        );
        async move { app.call("GET", &path, &key, None).await }
    };
    let found = search("path=/tmp/p&pattern=*.py").await;
    assert_eq!(found.status, 200, "{}", found.text());
    let paths: Vec<String> = found.json()["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/tmp/p/a.py", "/tmp/p/sub/b.py"]);
    // Content search: file, line, text; the symlink to /etc is not followed.
    let found = search("path=/tmp/p&contains=x").await.json();
    assert_eq!(
        found["matches"],
        json!([
            {"path": "/tmp/p/a.py", "kind": "file", "line": 1, "text": "x = 1"},
            {"path": "/tmp/p/a.py", "kind": "file", "line": 2, "text": "print(x)"},
        ])
    );
    let limited = search("path=/tmp/p&limit=1").await.json();
    assert_eq!(limited["matches"].as_array().unwrap().len(), 1);
    assert_eq!(limited["truncated"], true);
    search("path=/tmp/p&limit=0")
        .await
        .assert_problem(422, "validation_failed");
    search("path=/nowhere")
        .await
        .assert_problem(404, "not_found");
    search("path=relative")
        .await
        .assert_problem(422, "validation_failed");

    let replace = |body: serde_json::Value| {
        let (app, key, path) = (
            &app,
            key.clone(),
            format!("/api/v1/sandboxes/{id}/files/replace"),
        );
        async move { app.call("POST", &path, &key, Some(body)).await }
    };
    let done = replace(json!({"path": "/tmp/p/a.py", "find": "x", "replace": "value"})).await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["replaced"], 2);
    assert_eq!(
        sh(&app, &key, &id, "cat /tmp/p/a.py; ls -a /tmp/p")
            .await
            .json()["stdout"],
        "value = 1\nprint(value)\n.\n..\na.py\nc.txt\netc-link\nsub\n",
        "replaced in place, no temporary file left"
    );
    assert_eq!(
        replace(json!({"path": "/tmp/p/c.txt", "find": "zzz", "replace": ""}))
            .await
            .json()["replaced"],
        0
    );
    replace(json!({"path": "/tmp/p/a.py", "find": "", "replace": "y"}))
        .await
        .assert_problem(422, "validation_failed");
    replace(json!({"path": "/tmp/p/sub", "find": "a", "replace": "b"}))
        .await
        .assert_problem(422, "validation_failed");
    replace(json!({"path": "/tmp/p/missing", "find": "a", "replace": "b"}))
        .await
        .assert_problem(404, "not_found");
    // A symlink is not a regular file: the host's (or /etc's) files are never rewritten.
    replace(json!({"path": "/tmp/p/etc-link", "find": "a", "replace": "b"}))
        .await
        .assert_problem(422, "validation_failed");
});

on_both_backends!(creates_take_warm_sandboxes_of_their_class, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_configured(app.state.store.backend(), dir.path(), |c| {
        c.sandbox.pool = vec![corral_service::config::PoolClass {
            image: "host".into(),
            memory_mb: Some(64),
            cpu: None,
            disk_mb: None,
            pids: None,
            size: 2,
        }];
    })
    .await;
    let pool = app.state.sandboxes.pool.clone();
    let key = corral_service::pool::PoolKey {
        image: "host".into(),
        memory_mb: 64,
        cpu_millicores: 1000,
        pids: 256,
        disk_mb: 256,
    };
    let refill = {
        let state = app.state.clone();
        tokio::spawn(async move {
            state
                .sandboxes
                .pool
                .refill(&state.sandboxes, &state.store)
                .await
        })
    };
    let wait_full = || async {
        for _ in 0..200 {
            if pool.ready(&key) == 2 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the pool did not fill");
    };
    wait_full().await;
    let warm_dirs: Vec<String> = std::fs::read_dir(dir.path().join("sandboxes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(warm_dirs.len(), 2);
    // The periodic reconciler does not take warm sandboxes for orphans.
    let done = app
        .state
        .sandboxes
        .reconcile(
            &app.state.store,
            {
                use corral_core::clock::Clock;
                app.clock.now_ms()
            },
            false,
        )
        .await
        .unwrap();
    assert_eq!(done.orphans, 0);

    let (key_a, _) = app.register_and_login("warm").await;
    let created = app
        .call(
            "POST",
            "/api/v1/sandboxes",
            &key_a,
            Some(
                json!({"resources": {"memory_mb": 64}, "env": {"WHO": "me"}, "labels": {"k": "v"}}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        warm_dirs.contains(&id),
        "{id} came from the pool {warm_dirs:?}"
    );
    assert_eq!(created["state"], "running");
    assert_eq!(created["labels"], json!({"k": "v"}));
    let out = sh(&app, &key_a, &id, "echo $WHO; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes").await.json();
    assert_eq!(
        out["stdout"].as_str().unwrap().lines().next(),
        Some("me"),
        "{out}"
    );
    // The pool makes up for it; a create of another class starts cold.
    wait_full().await;
    let (key_b, _) = app.register_and_login("cold").await;
    let cold = app
        .call(
            "POST",
            "/api/v1/sandboxes",
            &key_b,
            Some(json!({"resources": {"memory_mb": 32}})),
        )
        .await;
    assert_eq!(cold.status, 201, "{}", cold.text());
    assert!(!warm_dirs.contains(&cold.json()["id"].as_str().unwrap().to_owned()));
    // Over quota: the warm sandbox is not used up.
    app.call(
        "POST",
        "/api/v1/sandboxes",
        &key_a,
        Some(json!({"resources": {"memory_mb": 64}})),
    )
    .await
    .assert_problem(429, "quota_exceeded");
    assert_eq!(pool.ready(&key), 2);

    // Stop refilling between two starts, so none is left half-made.
    while pool.starting() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    refill.abort();
    for warm in pool.drain() {
        app.state.sandboxes.destroy_blocking(&warm.id).await;
    }
    app.call("DELETE", &format!("/api/v1/sandboxes/{id}"), &key_a, None)
        .await;
    let cold_id = cold.json()["id"].as_str().unwrap().to_owned();
    app.call(
        "DELETE",
        &format!("/api/v1/sandboxes/{cold_id}"),
        &key_b,
        None,
    )
    .await;
    assert_eq!(
        std::fs::read_dir(dir.path().join("sandboxes"))
            .unwrap()
            .count(),
        0
    );
});

/// A tiny image root: Debian's static busybox, plus whatever shared
/// libraries the agent binary needs (none for the static build `make test`
/// uses; the debug build's otherwise).
fn busybox_root(at: &std::path::Path) {
    std::fs::create_dir_all(at.join("bin")).unwrap();
    std::fs::create_dir_all(at.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", at.join("bin/busybox")).expect("busybox-static is installed");
    for tool in ["sh", "id", "ls", "cat", "echo", "stat"] {
        std::os::unix::fs::symlink("busybox", at.join("bin").join(tool)).unwrap();
    }
    std::fs::write(at.join("etc/image-release"), "busybox test image\n").unwrap();
    let ldd = std::process::Command::new("ldd")
        .arg(crate::sandboxes::agent())
        .output()
        .unwrap();
    for path in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let inside = at.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::copy(path, &inside).unwrap();
    }
}

on_both_backends!(sandboxes_boot_from_images_in_the_store, |app| {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let app = app_configured(app.state.store.backend(), dir.path(), move |c| {
        c.data_dir = root;
        // Nothing answers there: a missing image's pull fails fast.
        c.sandbox.insecure_registries = vec!["127.0.0.1:1".into()];
    })
    .await;
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    let store = app.state.sandboxes.images().unwrap();
    let info = store.import(&rootfs, "local/busybox:1").unwrap();
    let (key, _) = app.register_and_login("imager").await;

    let created = app
        .call(
            "POST",
            "/api/v1/sandboxes",
            &key,
            Some(json!({"image": "local/busybox:1", "resources": {"disk_mb": 8}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    assert_eq!(created["image"], info.reference);
    let id = created["id"].as_str().unwrap().to_owned();
    let out = sh(&app, &key, &id, "id -u; cat /etc/image-release; ls -ln /bin/busybox | cut -c1-30; echo mine > /etc/mine; ls /usr 2>&1 | head -1").await.json();
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("0\nbusybox test image\n"), "{out}");
    assert!(
        stdout.contains(" 0 "),
        "busybox is owned by sandbox root: {out}"
    );
    assert!(!stdout.contains("bin\n"), "no host /usr inside: {out}");
    // The writable layer is capped by disk_mb.
    let fill = sh(&app, &key, &id, "cat /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox > /big; echo $?").await.json();
    assert!(
        fill["stderr"].as_str().unwrap().contains("No space left"),
        "{fill}"
    );

    // Stop and start: the image sandbox keeps what it wrote.
    let path = format!("/api/v1/sandboxes/{id}");
    assert_eq!(
        app.call("POST", &format!("{path}/stop"), &key, None)
            .await
            .json()["state"],
        "stopped"
    );
    let started = app.call("POST", &format!("{path}/start"), &key, None).await;
    assert_eq!(started.status, 200, "{}", started.text());
    assert_eq!(
        sh(&app, &key, &id, "cat /etc/mine").await.json()["stdout"],
        "mine\n"
    );
    // The layer in the store is unchanged.
    assert!(
        !std::fs::read_dir(&store.root("local/busybox:1").unwrap().layers[0])
            .unwrap()
            .any(|e| e.unwrap().file_name() == "mine")
    );
    assert_eq!(app.call("DELETE", &path, &key, None).await.status, 204);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "no mount of the sandbox remains");
    assert!(!dir.path().join("sandboxes").join(&id).exists());

    // Images this host lacks: pulled when configured (here the registry is
    // unreachable), else refused with how to add them; bad names refused.
    let missing = app
        .call(
            "POST",
            "/api/v1/sandboxes",
            &key,
            Some(json!({"image": "127.0.0.1:1/nothing:1"})),
        )
        .await
        .assert_problem(422, "validation_failed");
    assert!(
        missing["detail"]
            .as_str()
            .unwrap()
            .contains("could not be pulled"),
        "{missing}"
    );
    app.call(
        "POST",
        "/api/v1/sandboxes",
        &key,
        Some(json!({"image": "Not A Name!"})),
    )
    .await
    .assert_problem(422, "validation_failed");
});

#[tokio::test]
async fn a_sandbox_directory_sandbox_users_cannot_reach_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let app = app_in(corral_store::Backend::Sqlite, &closed).await;
    let (key, _) = app.register_and_login("locked").await;
    let refused = app
        .call("POST", "/api/v1/sandboxes", &key, Some(json!({})))
        .await
        .assert_problem(503, "service_unavailable");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("chmod o+x {}", closed.display())),
        "{detail}"
    );
    // Nothing is left half-made, and the place in the plan is free again.
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).unwrap();
    let created = app
        .call("POST", "/api/v1/sandboxes", &key, Some(json!({})))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    app.call("DELETE", &format!("/api/v1/sandboxes/{id}"), &key, None)
        .await;
}

on_both_backends!(
    uploads_stream_and_one_that_breaks_off_keeps_the_old_file,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (key, _) = app.register_and_login("uploader").await;
        let created = app
            .call("POST", "/api/v1/sandboxes", &key, Some(json!({})))
            .await;
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let put = |body: Body, length: Option<usize>| {
            let mut request =
                Request::put(format!("/api/v1/sandboxes/{id}/files/content?path=/tmp/f"))
                    .header("authorization", format!("Bearer {key}"));
            if let Some(length) = length {
                request = request.header("content-length", length.to_string());
            }
            let request = request.body(body).unwrap();
            let app = &app;
            async move { app.send(request).await }
        };
        // Streamed in several chunks, with a length; and chunked, without one.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..8).map(|i| Ok(vec![b'a' + i; 100_000])).collect();
        let done = put(Body::from_stream(tokio_stream::iter(chunks)), Some(800_000)).await;
        assert_eq!(done.status, 204, "{}", done.text());
        let back = app
            .call(
                "GET",
                &format!("/api/v1/sandboxes/{id}/files/content?path=/tmp/f"),
                &key,
                None,
            )
            .await;
        assert_eq!(back.body.len(), 800_000);
        assert_eq!(back.header("content-length"), Some("800000"));
        assert!(
            back.body[..100_000].iter().all(|b| *b == b'a')
                && back.body[700_000..].iter().all(|b| *b == b'h')
        );
        let chunked: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(b"one ".to_vec()), Ok(b"two".to_vec())];
        assert_eq!(
            put(Body::from_stream(tokio_stream::iter(chunked)), None)
                .await
                .status,
            204
        );
        assert_eq!(
            sh(&app, &key, &id, "cat /tmp/f").await.json()["stdout"],
            "one two"
        );

        // A client that breaks off mid-upload: the old file stays, nothing half-written.
        let broken: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(vec![b'x'; 1000]),
            Err(std::io::Error::other("connection reset")),
        ];
        let failed = put(Body::from_stream(tokio_stream::iter(broken)), Some(5000)).await;
        assert!(
            failed.status.is_server_error() || failed.status.is_client_error(),
            "{}",
            failed.status
        );
        let out = sh(&app, &key, &id, "cat /tmp/f; ls -a /tmp").await.json();
        assert_eq!(out["stdout"], "one two.\n..\nf\n", "{out}");
    }
);

on_both_backends!(
    a_streamed_upload_may_pass_the_body_limit_up_to_the_upload_limit,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_configured(app.state.store.backend(), dir.path(), |c| {
            c.server.body_limit_bytes = 1 << 20;
            c.server.upload_limit_bytes = 4 << 20;
        })
        .await;
        let (key, _) = app.register_and_login("big-uploader").await;
        let created = app
            .call("POST", "/api/v1/sandboxes", &key, Some(json!({})))
            .await;
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let put = |size: usize, declared: bool| {
            let mut request = Request::put(format!(
                "/api/v1/sandboxes/{id}/files/content?path=/tmp/big"
            ))
            .header("authorization", format!("Bearer {key}"));
            if declared {
                request = request.header("content-length", size.to_string());
            }
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                (0..size / 65_536).map(|_| Ok(vec![b'z'; 65_536])).collect();
            let request = request
                .body(Body::from_stream(tokio_stream::iter(chunks)))
                .unwrap();
            let app = &app;
            async move { app.send(request).await }
        };
        // 3 MiB with a length: streamed to the sandbox, past the 1 MiB body limit.
        let streamed = put(3 << 20, true).await;
        assert_eq!(streamed.status, 204, "{}", streamed.text());
        let size = sh(&app, &key, &id, "stat -c %s /tmp/big").await.json();
        assert_eq!(size["stdout"], "3145728\n", "{size}");
        // Without a length it would be taken whole: the body limit holds.
        put(3 << 20, false)
            .await
            .assert_problem(413, "payload_too_large");
        // Past the upload limit: refused before anything is written.
        put(5 << 20, true)
            .await
            .assert_problem(413, "payload_too_large");
        let size = sh(&app, &key, &id, "stat -c %s /tmp/big").await.json();
        assert_eq!(size["stdout"], "3145728\n", "the file is unchanged: {size}");
        app.call("DELETE", &format!("/api/v1/sandboxes/{id}"), &key, None)
            .await;
    }
);
