//! The sandbox API against real sandboxes (runc as root, the agent as PID 1).

use std::path::PathBuf;

use serde_json::json;

use crate::support::{TestApp, on_both_backends};

/// The agent binary: `CORRAL_AGENT_BIN` (make test: the static build that
/// ships), else the one `cargo build -p corral-agent` makes.
pub(crate) fn agent() -> PathBuf {
    corral_runtime::test_agent_binary()
}

/// An app whose sandboxes live in `dir`.
pub(crate) async fn app_in(backend: corral_store::Backend, dir: &std::path::Path) -> TestApp {
    app_configured(backend, dir, |_| {}).await
}

/// [`app_in`] with more configuration on top.
pub(crate) async fn app_configured(
    backend: corral_store::Backend,
    dir: &std::path::Path,
    more: impl FnOnce(&mut corral_service::Config) + Send + 'static,
) -> TestApp {
    let dir = dir.to_path_buf();
    TestApp::builder(backend)
        .config(move |c| {
            c.sandbox.agent = Some(agent());
            // Disks and images of this app only (the reconciler removes
            // disks no record of its own claims).
            c.data_dir = dir.clone();
            c.sandbox.dir = Some(dir.join("sandboxes"));
            c.sandbox.runtime_root = Some(dir.join("runtime"));
            more(c);
        })
        .build()
        .await
}

on_both_backends!(
    a_sandbox_is_created_used_and_deleted_through_the_api,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (access, _) = app.register_and_login("builder").await;
        let (key, _) = app
            .create_key(&access, &["sandboxes:read", "sandboxes:write"])
            .await;

        let created = app
            .call(
                "POST",
                "/api/v1/sandboxes",
                &key,
                Some(json!({"name": "first", "resources": {"memory_mb": 64, "cpu": 0.5}, "env": {"BASE": "from-create"}, "labels": {"team": "a"}})),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let sandbox = created.json();
        assert_eq!(sandbox["state"], "running");
        assert_eq!(sandbox["memory_mb"], 64);
        assert_eq!(sandbox["cpu_millicores"], 500);
        assert_eq!(sandbox["labels"], json!({"team": "a"}));
        let id = sandbox["id"].as_str().unwrap().to_owned();

        let exec = |body: serde_json::Value| {
            let (app, key, path) = (&app, key.clone(), format!("/api/v1/sandboxes/{id}/exec"));
            async move { app.call("POST", &path, &key, Some(body)).await }
        };
        let out = exec(json!({"command": "echo hi > note; cat note; whoami; echo $GREETING $BASE", "env": {"GREETING": "hello"}})).await;
        assert_eq!(out.status, 200, "{}", out.text());
        let out = out.json();
        assert_eq!(out["stdout"], "hi\nroot\nhello from-create\n");
        assert_eq!(out["exit_code"], 0);
        // State persists between commands; argv runs without a shell.
        let out = exec(json!({"argv": ["cat", "/tmp/note"]})).await.json();
        assert_eq!(out["stdout"], "hi\n");
        let out = exec(json!({"command": "sleep 5", "timeout_ms": 200}))
            .await
            .json();
        assert_eq!(out["timed_out"], true);
        // Bad input is named.
        exec(json!({}))
            .await
            .assert_problem(422, "validation_failed");
        exec(json!({"command": "true", "argv": ["true"]}))
            .await
            .assert_problem(422, "validation_failed");
        let missing = exec(json!({"argv": ["/no/such/program"]}))
            .await
            .assert_problem(422, "validation_failed");
        assert_eq!(missing["errors"][0]["field"], "argv");

        let list = app
            .call("GET", "/api/v1/sandboxes", &key, None)
            .await
            .json();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        // Every exec is in the audit log, with how it ended.
        let execs = app
            .state
            .store
            .list_audit(&corral_store::AuditFilter {
                action: Some("sandbox.exec".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(execs.iter().any(|r| r.outcome == "timeout"), "{execs:?}");
        assert!(
            execs
                .iter()
                .all(|r| r.resource_id.as_deref() == Some(id.as_str()))
        );
        assert_eq!(
            app.call("GET", &format!("/api/v1/sandboxes/{id}"), &key, None)
                .await
                .json()["name"],
            "first"
        );

        let deleted = app
            .call("DELETE", &format!("/api/v1/sandboxes/{id}"), &key, None)
            .await;
        assert_eq!(deleted.status, 204);
        app.call("GET", &format!("/api/v1/sandboxes/{id}"), &key, None)
            .await
            .assert_problem(404, "not_found");
        exec(json!({"command": "true"}))
            .await
            .assert_problem(404, "not_found");
        assert!(
            !dir.path().join("sandboxes").join(&id).exists(),
            "the sandbox directory is gone"
        );
    }
);

on_both_backends!(
    sandboxes_are_tenant_scoped_scoped_by_key_and_limited_by_plan,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (alice, _) = app.register_and_login("alice").await;
        let (eve, _) = app.register_and_login("eve").await;
        let created = app
            .call("POST", "/api/v1/sandboxes", &alice, Some(json!({})))
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let id = created.json()["id"].as_str().unwrap().to_owned();

        // Another tenant sees nothing and can touch nothing.
        for (method, path, body) in [
            ("GET", format!("/api/v1/sandboxes/{id}"), None),
            ("DELETE", format!("/api/v1/sandboxes/{id}"), None),
            (
                "POST",
                format!("/api/v1/sandboxes/{id}/exec"),
                Some(json!({"command": "id"})),
            ),
        ] {
            app.call(method, &path, &eve, body)
                .await
                .assert_problem(404, "not_found");
        }
        assert_eq!(
            app.call("GET", "/api/v1/sandboxes", &eve, None)
                .await
                .json()["items"],
            json!([])
        );

        // A read-only key cannot create or exec.
        let (reader, _) = app.create_key(&alice, &["sandboxes:read"]).await;
        app.call("POST", "/api/v1/sandboxes", &reader, Some(json!({})))
            .await
            .assert_problem(403, "forbidden");
        app.call(
            "POST",
            &format!("/api/v1/sandboxes/{id}/exec"),
            &reader,
            Some(json!({"command": "id"})),
        )
        .await
        .assert_problem(403, "forbidden");

        // The Free plan: one sandbox at a time, 128 MB, 512 MB of disk.
        app.call("POST", "/api/v1/sandboxes", &alice, Some(json!({})))
            .await
            .assert_problem(429, "quota_exceeded");
        let too_big = app
            .call(
                "POST",
                "/api/v1/sandboxes",
                &eve,
                Some(json!({"resources": {"memory_mb": 4096}})),
            )
            .await
            .assert_problem(422, "validation_failed");
        assert_eq!(too_big["errors"][0]["field"], "resources.memory_mb");
        app.call(
            "POST",
            "/api/v1/sandboxes",
            &eve,
            Some(json!({"resources": {"cpu": 8}})),
        )
        .await
        .assert_problem(422, "validation_failed");
        app.call(
            "POST",
            "/api/v1/sandboxes",
            &eve,
            Some(json!({"resources": {"gpus": 1}})),
        )
        .await
        .assert_problem(422, "validation_failed");
        app.call(
            "POST",
            "/api/v1/sandboxes",
            &eve,
            Some(json!({"image": "docker.io/evil"})),
        )
        .await
        .assert_problem(422, "validation_failed");
        // Deleting frees the place.
        assert_eq!(
            app.call("DELETE", &format!("/api/v1/sandboxes/{id}"), &alice, None)
                .await
                .status,
            204
        );
        let again = app
            .call("POST", "/api/v1/sandboxes", &alice, Some(json!({})))
            .await;
        assert_eq!(again.status, 201, "{}", again.text());
        let again_id = again.json()["id"].as_str().unwrap().to_owned();
        app.call(
            "DELETE",
            &format!("/api/v1/sandboxes/{again_id}"),
            &alice,
            None,
        )
        .await;
    }
);

#[tokio::test]
async fn without_an_agent_binary_creation_fails_cleanly_and_frees_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    let app = TestApp::builder(corral_store::Backend::Sqlite)
        .config(move |c| {
            c.sandbox.agent = Some(dir_path.join("no-such-agent"));
            c.data_dir = dir_path.clone();
            c.sandbox.dir = Some(dir_path.join("sandboxes"));
            c.sandbox.runtime_root = Some(dir_path.join("runtime"));
        })
        .build()
        .await;
    let (alice, _) = app.register_and_login("alice").await;
    let failed = app
        .call("POST", "/api/v1/sandboxes", &alice, Some(json!({})))
        .await;
    failed.assert_problem(503, "service_unavailable");
    let list = app
        .call("GET", "/api/v1/sandboxes", &alice, None)
        .await
        .json();
    assert_eq!(list["items"][0]["state"], "error", "{list}");
    let errors = app
        .call("GET", "/api/v1/sandboxes?state=error", &alice, None)
        .await
        .json();
    assert_eq!(errors["items"].as_array().unwrap().len(), 1);
    let running = app
        .call("GET", "/api/v1/sandboxes?state=running", &alice, None)
        .await
        .json();
    assert_eq!(running["items"], json!([]));
    app.call("GET", "/api/v1/sandboxes?state=sleeping", &alice, None)
        .await
        .assert_problem(422, "validation_failed");
    assert!(list["items"][0]["error"].as_str().is_some());
    // The failed sandbox does not count against the plan's one live sandbox.
    let again = app
        .call("POST", "/api/v1/sandboxes", &alice, Some(json!({})))
        .await;
    again.assert_problem(503, "service_unavailable");
}

on_both_backends!(
    files_are_listed_read_written_and_managed_inside_the_sandbox,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (access, _) = app.register_and_login("filer").await;
        let (eve, _) = app.register_and_login("eve").await;
        let created = app
            .call("POST", "/api/v1/sandboxes", &access, Some(json!({})))
            .await;
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let base = format!("/api/v1/sandboxes/{id}/files");

        let upload = |path: &str, bytes: Vec<u8>, token: &str| {
            let request = http::Request::put(format!("{base}/content?path={path}"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/octet-stream")
                .body(axum::body::Body::from(bytes))
                .unwrap();
            let app = &app;
            async move { app.send(request).await }
        };
        let payload: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        assert_eq!(
            upload("/tmp/data.bin", payload.clone(), &access)
                .await
                .status,
            204
        );
        let back = app
            .call(
                "GET",
                &format!("{base}/content?path=/tmp/data.bin"),
                &access,
                None,
            )
            .await;
        assert_eq!(back.status, 200);
        assert_eq!(back.body, payload, "binary content round-trips");

        let made = app
            .call(
                "POST",
                &format!("{base}/mkdir"),
                &access,
                Some(json!({"path": "/tmp/a/b", "parents": true})),
            )
            .await;
        assert_eq!(made.status, 204, "{}", made.text());
        app.call(
            "POST",
            &format!("{base}/mkdir"),
            &access,
            Some(json!({"path": "/tmp/a/b"})),
        )
        .await
        .assert_problem(409, "conflict");
        let moved = app
            .call(
                "POST",
                &format!("{base}/move"),
                &access,
                Some(json!({"from": "/tmp/data.bin", "to": "/tmp/a/b/data.bin"})),
            )
            .await;
        assert_eq!(moved.status, 204, "{}", moved.text());
        let chmod = app
            .call(
                "POST",
                &format!("{base}/chmod"),
                &access,
                Some(json!({"path": "/tmp/a/b/data.bin", "mode": "750"})),
            )
            .await;
        assert_eq!(chmod.status, 204);
        let listing = app
            .call("GET", &format!("{base}?path=/tmp/a/b"), &access, None)
            .await
            .json();
        assert_eq!(listing[0]["name"], "data.bin");
        assert_eq!(listing[0]["kind"], "file");
        assert_eq!(listing[0]["size"], 300_000);
        assert_eq!(listing[0]["mode"], 0o750);
        // The sandbox's programs see the same files.
        let seen = app
            .call(
                "POST",
                &format!("/api/v1/sandboxes/{id}/exec"),
                &access,
                Some(json!({"command": "stat -c '%s %a' /tmp/a/b/data.bin"})),
            )
            .await
            .json();
        assert_eq!(seen["stdout"], "300000 750\n");

        // Errors name what is wrong.
        app.call(
            "GET",
            &format!("{base}/content?path=/tmp/nope"),
            &access,
            None,
        )
        .await
        .assert_problem(404, "not_found");
        app.call("GET", &format!("{base}?path=relative/path"), &access, None)
            .await
            .assert_problem(422, "validation_failed");
        app.call(
            "POST",
            &format!("{base}/delete"),
            &access,
            Some(json!({"path": "/tmp/a"})),
        )
        .await
        .assert_problem(422, "validation_failed");
        app.call(
            "POST",
            &format!("{base}/chmod"),
            &access,
            Some(json!({"path": "/tmp/a", "mode": "999"})),
        )
        .await
        .assert_problem(422, "validation_failed");
        // The read-only root stays read-only for uploads too.
        upload("/usr/bin/evil", b"x".to_vec(), &access)
            .await
            .assert_problem(422, "validation_failed");
        // Paths are the sandbox's: `..` cannot climb out of its root.
        let climbed = app
            .call(
                "GET",
                &format!("{base}/content?path=/../../../../etc/hostname"),
                &access,
                None,
            )
            .await;
        assert_eq!(
            climbed.text(),
            "sandbox\n",
            "the sandbox's own /etc/hostname"
        );
        // Another tenant reaches nothing.
        app.call("GET", &format!("{base}?path=/tmp"), &eve, None)
            .await
            .assert_problem(404, "not_found");
        assert_eq!(upload("/tmp/x", b"x".to_vec(), &eve).await.status, 404);

        let removed = app
            .call(
                "POST",
                &format!("{base}/delete"),
                &access,
                Some(json!({"path": "/tmp/a", "recursive": true})),
            )
            .await;
        assert_eq!(removed.status, 204);
        assert_eq!(
            app.call("GET", &format!("{base}?path=/tmp"), &access, None)
                .await
                .json(),
            json!([])
        );
        app.call("DELETE", &format!("/api/v1/sandboxes/{id}"), &access, None)
            .await;
    }
);
