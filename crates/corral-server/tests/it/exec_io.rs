//! What an exec gives back and takes in (its output cap, standard input
//! streamed while it runs), the times of listings, and the administrators'
//! view of every org's sandboxes: against real sandboxes.

use std::time::Duration;

use serde_json::json;

use corral_core::auth::PlatformRole;
use corral_core::clock::parse_rfc3339;
use corral_service::credentials::hash_password;
use corral_store::NewUser;

use crate::sandboxes::{app_configured, app_in};
use crate::support::{TestApp, on_both_backends};

/// A running sandbox of a new user's: (token, sandbox id).
async fn sandbox_of(app: &TestApp, name: &str) -> (String, String) {
    let (access, _) = app.register_and_login(name).await;
    let created = app
        .call(
            "POST",
            "/api/v1/sandboxes",
            &access,
            Some(json!({"resources": {"memory_mb": 64}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    (access, created.json()["id"].as_str().unwrap().to_owned())
}

/// Whether `value` is an RFC 3339 time within a day of now.
fn recent_rfc3339(value: &serde_json::Value) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    value
        .as_str()
        .and_then(parse_rfc3339)
        .is_some_and(|ms| (ms - now).abs() < 86_400_000)
}

on_both_backends!(
    exec_output_is_capped_as_asked_within_the_server_limit,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_configured(app.state.store.backend(), dir.path(), |c| {
            c.sandbox.exec_max_output_bytes = 4 * 1024 * 1024;
        })
        .await;
        let (key, id) = sandbox_of(&app, "capped").await;
        let path = format!("/api/v1/sandboxes/{id}/exec");
        let exec = |body: serde_json::Value| {
            let (app, key, path) = (&app, key.clone(), path.clone());
            async move { app.call("POST", &path, &key, Some(body)).await }
        };
        // Asked for 1000 bytes: 1000 kept, the rest dropped and said so;
        // the program ran to its end.
        let out = exec(json!({
            "command": "head -c 5000 /dev/zero | tr '\\0' x; echo end >&2",
            "max_output_bytes": 1000,
        }))
        .await;
        assert_eq!(out.status, 200, "{}", out.text());
        let result = out.json();
        assert_eq!(result["stdout"].as_str().unwrap().len(), 1000);
        assert_eq!(result["stderr"], "end\n");
        assert_eq!(result["truncated"], true);
        assert_eq!(result["exit_code"], 0);
        // Under the cap: whole, not truncated.
        let result = exec(json!({"command": "echo small", "max_output_bytes": 1000}))
            .await
            .json();
        assert_eq!(result["stdout"], "small\n");
        assert_eq!(result["truncated"], false);
        // More than the 1 MiB default, up to the server's limit.
        let result = exec(json!({
            "command": "head -c 3000000 /dev/zero",
            "max_output_bytes": 3_000_000,
        }))
        .await
        .json();
        assert_eq!(result["stdout"].as_str().unwrap().len(), 3_000_000);
        assert_eq!(result["truncated"], false);
        // The default: 1 MiB.
        let result = exec(json!({"command": "head -c 1100000 /dev/zero"}))
            .await
            .json();
        assert_eq!(result["stdout"].as_str().unwrap().len(), 1 << 20);
        assert_eq!(result["truncated"], true);
        // Out of range: a clear 422 naming the field.
        for bad in [0u64, 4 * 1024 * 1024 + 1] {
            let problem = exec(json!({"command": "true", "max_output_bytes": bad}))
                .await
                .assert_problem(422, "validation_failed");
            assert!(
                problem.to_string().contains("max_output_bytes"),
                "{problem}"
            );
        }
        // stream_stdin needs an event stream, and excludes stdin.
        exec(json!({"command": "cat", "stream_stdin": true}))
            .await
            .assert_problem(422, "validation_failed");
    }
);

on_both_backends!(listings_give_rfc3339_times, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(app.state.store.backend(), dir.path()).await;
    let (key, id) = sandbox_of(&app, "timer").await;
    let files = app
        .call(
            "GET",
            &format!("/api/v1/sandboxes/{id}/files?path=/"),
            &key,
            None,
        )
        .await
        .json();
    let first = &files.as_array().unwrap()[0];
    assert!(
        first["modified"].as_str().and_then(parse_rfc3339).is_some(),
        "{files}"
    );
    let processes = format!("/api/v1/sandboxes/{id}/processes");
    let started = app
        .call("POST", &processes, &key, Some(json!({"command": "true"})))
        .await;
    assert!(started.status.is_success(), "{}", started.text());
    assert!(
        recent_rfc3339(&started.json()["started_at"]),
        "{}",
        started.text()
    );
    let pid = started.json()["pid"].as_i64().unwrap();
    // Followed to its end, the process carries its end time too.
    let logs = app
        .call(
            "GET",
            &format!("{processes}/{pid}/logs?follow=true"),
            &key,
            None,
        )
        .await
        .text();
    let listed = app.call("GET", &processes, &key, None).await.json();
    assert!(recent_rfc3339(&listed[0]["started_at"]), "{listed} {logs}");
    assert!(recent_rfc3339(&listed[0]["ended_at"]), "{listed}");
    let terminals = format!("/api/v1/sandboxes/{id}/terminals");
    let opened = app
        .call(
            "POST",
            &terminals,
            &key,
            Some(json!({"command": ["/bin/sh"]})),
        )
        .await
        .json();
    assert!(recent_rfc3339(&opened["created_at"]), "{opened}");
});

/// Reads server-sent events off a live response: (event, data).
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn next(&mut self) -> (String, serde_json::Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(d).ok();
                    }
                }
                if let (Some(event), Some(data)) = (event, data) {
                    return (event, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("no event within 30 s")
                .unwrap()
                .expect("the stream ended");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_input_is_streamed_into_a_running_exec() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(corral_store::Backend::Sqlite, dir.path()).await;
    let address = app.serve().await;
    let (key, id) = sandbox_of(&app, "typist").await;
    let (other, other_id) = sandbox_of(&app, "mallory").await;
    let http = reqwest::Client::new();
    let base = format!("http://{address}/api/v1/sandboxes/{id}/exec");
    let response = http
        .post(&base)
        .bearer_auth(&key)
        .header("accept", "text/event-stream")
        .json(&json!({
            "command": "read a; echo got-$a; read b; echo got-$b; cat; echo eof; \
                        until [ -e /tmp/go ]; do sleep 0.05; done",
            "stream_stdin": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    let (first, started) = events.next().await;
    assert_eq!(first, "started", "{started}");
    let exec_id = started["exec_id"].as_str().unwrap().to_owned();
    let write = |token: &str, sandbox: &str, data: &str, close: bool| {
        let request = http
            .post(format!(
                "http://{address}/api/v1/sandboxes/{sandbox}/exec/{exec_id}/stdin"
            ))
            .bearer_auth(token)
            .json(&json!({"data": data, "close": close}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Each line reaches the program while it runs: its answer comes before
    // the next line is written.
    assert_eq!(write(&key, &id, "one\n", false).await, 204);
    assert_eq!(
        events.next().await,
        ("stdout".to_owned(), json!({"data": "got-one\n"}))
    );
    assert_eq!(write(&key, &id, "two\n", false).await, 204);
    assert_eq!(
        events.next().await,
        ("stdout".to_owned(), json!({"data": "got-two\n"}))
    );
    // Another org's caller cannot reach it, even through its own sandbox.
    assert_eq!(write(&other, &id, "x\n", false).await, 404);
    assert_eq!(write(&other, &other_id, "x\n", false).await, 404);
    assert_eq!(write(&key, &id, "rest\n", true).await, 204);
    let mut output = String::new();
    while output != "rest\neof\n" {
        let (event, data) = events.next().await;
        assert_eq!(event, "stdout", "{data}");
        output.push_str(data["data"].as_str().unwrap());
    }
    // Closed, and the program still runs: a clear refusal.
    assert_eq!(write(&key, &id, "late\n", false).await, 422);
    let go = http
        .post(&base)
        .bearer_auth(&key)
        .json(&json!({"command": "touch /tmp/go"}))
        .send()
        .await
        .unwrap();
    assert_eq!(go.status(), 200);
    let result = loop {
        match events.next().await {
            (event, data) if event == "stdout" => output.push_str(data["data"].as_str().unwrap()),
            (event, data) if event == "exit" => break data,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(output, "rest\neof\n");
    assert_eq!(result["exit_code"], 0);
    // Over: the id is gone.
    assert_eq!(write(&key, &id, "x\n", false).await, 404);

    // A program that never reads its input ends the exec all the same, and
    // a write then finds it gone.
    let response = http
        .post(&base)
        .bearer_auth(&key)
        .header("accept", "text/event-stream")
        .json(&json!({"argv": ["echo", "hi"], "stream_stdin": true}))
        .send()
        .await
        .unwrap();
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    let (_, started) = events.next().await;
    let exec_id = started["exec_id"].as_str().unwrap().to_owned();
    assert_eq!(
        events.next().await,
        ("stdout".to_owned(), json!({"data": "hi\n"}))
    );
    assert_eq!(events.next().await.0, "exit");
    let status = http
        .post(format!(
            "http://{address}/api/v1/sandboxes/{id}/exec/{exec_id}/stdin"
        ))
        .bearer_auth(&key)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status == 404 || status == 409, "{status}");
}

async fn admin(app: &TestApp, name: &str) -> String {
    app.state
        .store
        .create_user(
            1,
            NewUser {
                email: format!("{name}@example.com"),
                username: name.into(),
                password_hash: hash_password("correct horse battery staple").unwrap(),
                role: PlatformRole::Admin,
                plan_id: "free".into(),
            },
        )
        .await
        .unwrap();
    app.login(name, "correct horse battery staple").await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

on_both_backends!(admins_list_every_org_s_sandboxes, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(app.state.store.backend(), dir.path()).await;
    let (alice, a) = sandbox_of(&app, "alice").await;
    let (_bob, b) = sandbox_of(&app, "bob").await;
    let root = admin(&app, "root").await;
    // Not for members, whatever their org role.
    app.call("GET", "/api/v1/admin/sandboxes", &alice, None)
        .await
        .assert_problem(403, "forbidden");
    let all = app
        .call("GET", "/api/v1/admin/sandboxes", &root, None)
        .await;
    assert_eq!(all.status, 200, "{}", all.text());
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(ids(&all.json()), both);
    // Filters: org, state, image; pages follow the cursor.
    let alice_org = all.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == a.as_str())
        .unwrap()["org_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let of_alice = app
        .call(
            "GET",
            &format!("/api/v1/admin/sandboxes?org_id={alice_org}"),
            &root,
            None,
        )
        .await
        .json();
    assert_eq!(ids(&of_alice), vec![a.clone()]);
    let stopped = app
        .call("GET", "/api/v1/admin/sandboxes?state=stopped", &root, None)
        .await
        .json();
    assert!(ids(&stopped).is_empty());
    let on_host = app
        .call("GET", "/api/v1/admin/sandboxes?image=host", &root, None)
        .await
        .json();
    assert_eq!(ids(&on_host), both);
    let elsewhere = app
        .call("GET", "/api/v1/admin/sandboxes?image=busybox", &root, None)
        .await
        .json();
    assert!(ids(&elsewhere).is_empty());
    let first = app
        .call("GET", "/api/v1/admin/sandboxes?limit=1", &root, None)
        .await
        .json();
    assert_eq!(ids(&first), vec![both[0].clone()]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .call(
            "GET",
            &format!("/api/v1/admin/sandboxes?limit=1&cursor={cursor}"),
            &root,
            None,
        )
        .await
        .json();
    assert_eq!(ids(&second), vec![both[1].clone()]);
    assert!(second.get("next_cursor").is_none(), "{second}");
    app.call("GET", "/api/v1/admin/sandboxes?state=gone", &root, None)
        .await
        .assert_problem(422, "validation_failed");
    // The members' own list is still their org's only.
    let own = app
        .call("GET", "/api/v1/sandboxes", &alice, None)
        .await
        .json();
    assert_eq!(ids(&own), vec![a]);
});
