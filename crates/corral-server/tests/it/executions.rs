//! Executions (the judge) against real sandboxes: verdicts, limits, the
//! queue, batches, callbacks, quotas and history.

use std::time::Duration;

use serde_json::{Value, json};

use crate::sandboxes::{app_configured, app_in};
use crate::support::{TestApp, on_both_backends};

async fn judge(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app
        .call("POST", "/api/v1/executions", token, Some(body))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

/// Waits until execution `id` has a verdict.
async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..600 {
        let now = app
            .call("GET", &format!("/api/v1/executions/{id}"), token, None)
            .await
            .json();
        if !matches!(now["status"].as_str(), Some("queued" | "running")) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("execution {id} did not finish");
}

on_both_backends!(the_judge_gives_each_verdict, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(app.state.store.backend(), dir.path()).await;
    let token = app.register_on_plan("judge", "enterprise").await;
    let languages = app
        .call("GET", "/api/v1/languages", &token, None)
        .await
        .json();
    let names: Vec<&str> = languages
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    for expected in ["python", "bash", "c", "cpp", "javascript"] {
        assert!(names.contains(&expected), "{languages}");
    }

    let ok = judge(&app, &token, json!({"language": "python", "code": "import sys\nprint(sys.stdin.read().upper())", "stdin": "shout", "expected_output": "SHOUT\n\n", "wait": true})).await;
    assert_eq!(ok["status"], "ok", "{ok}");
    assert_eq!(ok["stdout"], "SHOUT\n");
    assert_eq!(ok["exit_code"], 0);
    assert!(ok["memory_kb"].as_i64().unwrap() > 1000, "{ok}");
    assert!(
        ok["wall_ms"].as_i64().is_some() && ok["time_ms"].as_i64().is_some(),
        "{ok}"
    );

    let wrong = judge(
        &app,
        &token,
        json!({"language": "bash", "code": "echo 41", "expected_output": "42", "wait": true}),
    )
    .await;
    assert_eq!(wrong["status"], "wrong_answer", "{wrong}");

    let c = judge(&app, &token, json!({"language": "c", "code": "#include <stdio.h>\nint main(void){int a,b;scanf(\"%d %d\",&a,&b);printf(\"%d\\n\",a+b);return 0;}", "stdin": "20 22", "wait": true})).await;
    assert_eq!(
        (c["status"].as_str(), c["stdout"].as_str()),
        (Some("ok"), Some("42\n")),
        "{c}"
    );
    let cpp = judge(&app, &token, json!({"language": "cpp", "code": "#include <iostream>\nint main(){std::cout<<6*7<<std::endl;}", "wait": true})).await;
    assert_eq!(cpp["stdout"], "42\n", "{cpp}");
    let js = judge(
        &app,
        &token,
        json!({"language": "javascript", "code": "console.log(6*7)", "wait": true}),
    )
    .await;
    assert_eq!(js["stdout"], "42\n", "{js}");

    let broken = judge(
        &app,
        &token,
        json!({"language": "c", "code": "int main( {", "wait": true}),
    )
    .await;
    assert_eq!(broken["status"], "compile_error", "{broken}");
    assert!(
        broken["compile_output"].as_str().unwrap().contains("error"),
        "{broken}"
    );

    let crash = judge(
        &app,
        &token,
        json!({"language": "python", "code": "raise ValueError('no')", "wait": true}),
    )
    .await;
    assert_eq!(crash["status"], "runtime_error", "{crash}");
    assert!(
        crash["stderr"].as_str().unwrap().contains("ValueError"),
        "{crash}"
    );

    let spin = judge(&app, &token, json!({"language": "python", "code": "while True: pass", "limits": {"time_ms": 500}, "wait": true})).await;
    assert_eq!(spin["status"], "time_limit", "{spin}");
    let sleeper = judge(
        &app,
        &token,
        json!({"language": "bash", "code": "sleep 30", "limits": {"time_ms": 300}, "wait": true}),
    )
    .await;
    assert_eq!(sleeper["status"], "time_limit", "{sleeper}");
    assert!(sleeper["wall_ms"].as_i64().unwrap() < 10_000, "{sleeper}");

    let hog = judge(&app, &token, json!({"language": "python", "code": "x = bytearray(400 * 1024 * 1024)\nprint(len(x))", "limits": {"memory_mb": 64}, "wait": true})).await;
    assert_eq!(hog["status"], "memory_limit", "{hog}");

    let chatty = judge(&app, &token, json!({"language": "python", "code": "print('x' * 100000)", "limits": {"output_kb": 1}, "wait": true})).await;
    assert_eq!(chatty["status"], "output_limit", "{chatty}");
    assert!(chatty["stdout"].as_str().unwrap().len() <= 1024, "{chatty}");

    // Extra files sit beside the source.
    let files = judge(&app, &token, json!({"language": "python", "code": "print(open('data.txt').read())", "files": [{"name": "data.txt", "content": "from a file"}], "wait": true})).await;
    assert_eq!(files["stdout"], "from a file\n", "{files}");

    // Nothing crosses from one run to the next.
    judge(&app, &token, json!({"language": "bash", "code": "echo left > /tmp/left-behind; touch /tmp/run/also", "wait": true})).await;
    let after = judge(&app, &token, json!({"language": "bash", "code": "ls /tmp/left-behind /tmp/run/also 2>&1; true", "wait": true})).await;
    assert!(
        after["stdout"].as_str().unwrap().contains("No such file"),
        "{after}"
    );

    // History, newest first, filtered by status.
    let page = app
        .call(
            "GET",
            "/api/v1/executions?status=compile_error",
            &token,
            None,
        )
        .await
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    let all = app
        .call("GET", "/api/v1/executions?limit=3", &token, None)
        .await
        .json();
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    assert!(all["next_cursor"].is_string());
});

on_both_backends!(executions_are_validated_capped_and_counted, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_configured(app.state.store.backend(), dir.path(), |c| {
        c.executions.callback_secret = "s3cret".into();
    })
    .await;
    let (free, _) = app.register_and_login("freeloader").await;
    let post = |body: Value| {
        let (app, free) = (&app, free.clone());
        async move {
            app.call("POST", "/api/v1/executions", &free, Some(body))
                .await
        }
    };
    for (body, field) in [
        (json!({"language": "cobol", "code": "x"}), "language"),
        (json!({"language": "python", "code": ""}), "code"),
        (
            json!({"language": "python", "code": "1", "limits": {"time_ms": 60000}}),
            "limits.time_ms",
        ),
        (
            json!({"language": "python", "code": "1", "limits": {"memory_mb": 4096}}),
            "limits.memory_mb",
        ),
        (
            json!({"language": "python", "code": "1", "files": [{"name": "../x", "content": ""}]}),
            "files",
        ),
        (
            json!({"language": "python", "code": "1", "callback_url": "http://127.0.0.1:9/hook"}),
            "callback_url",
        ),
        (
            json!({"language": "python", "code": "1", "callback_url": "http://169.254.169.254/latest"}),
            "callback_url",
        ),
        (
            json!({"language": "python", "code": "1", "callback_url": "file:///etc/passwd"}),
            "callback_url",
        ),
    ] {
        let problem = post(body.clone())
            .await
            .assert_problem(422, "validation_failed");
        assert_eq!(problem["errors"][0]["field"], field, "{body} → {problem}");
    }
    post(json!({"language": "python", "code": "1", "owner": "me"}))
        .await
        .assert_problem(422, "validation_failed");
    // The Free plan runs 10 a day.
    for i in 0..10 {
        let res = post(json!({"language": "bash", "code": format!("echo {i}")})).await;
        assert_eq!(res.status, 202, "{}", res.text());
    }
    let over = post(json!({"language": "bash", "code": "echo 11"}))
        .await
        .assert_problem(429, "quota_exceeded");
    assert!(
        over["detail"].as_str().unwrap().contains("executions"),
        "{over}"
    );
    // Another tenant sees none of them.
    let (other, _) = app.register_and_login("other").await;
    let mine = app
        .call("GET", "/api/v1/executions", &free, None)
        .await
        .json();
    let id = mine["items"][0]["id"].as_str().unwrap().to_owned();
    app.call("GET", &format!("/api/v1/executions/{id}"), &other, None)
        .await
        .assert_problem(404, "not_found");
    let theirs = app
        .call("GET", "/api/v1/executions", &other, None)
        .await
        .json();
    assert_eq!(theirs["items"], json!([]));
    app.call("GET", "/api/v1/admin/executions", &free, None)
        .await
        .assert_problem(403, "forbidden");
});

on_both_backends!(
    queued_executions_batches_and_callbacks_run_on_the_workers,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        // A receiver for callbacks on loopback (allowed here by configuration).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(4);
        let receiver = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let signature = headers["x-corral-signature"].to_str().unwrap().to_owned();
                    let _ = tx.send((signature, body.to_vec())).await;
                    "thanks"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, receiver).await });
        let app = app_configured(app.state.store.backend(), dir.path(), |c| {
            c.executions.callback_secret = "s3cret".into();
            c.executions.allow_private_callbacks = true;
        })
        .await;
        let workers = corral_server::jobs::start(
            &app.state,
            corral_server::jobs::worker_options(&app.state.config),
        );
        let token = app.register_on_plan("batcher", "premium").await;
        let queued = app
            .call(
                "POST",
                "/api/v1/executions",
                &token,
                Some(json!({"language": "python", "code": "print(2**10)", "callback_url": hook})),
            )
            .await;
        assert_eq!(queued.status, 202, "{}", queued.text());
        assert_eq!(queued.json()["status"], "queued");
        let id = queued.json()["id"].as_str().unwrap().to_owned();
        let done = finished(&app, &token, &id).await;
        assert_eq!(
            (done["status"].as_str(), done["stdout"].as_str()),
            (Some("ok"), Some("1024\n")),
            "{done}"
        );
        // The callback came, signed with the configured secret.
        let (signature, body) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the callback arrived")
            .unwrap();
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(&body);
        assert_eq!(
            signature,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let posted: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(posted["id"], id.as_str());
        assert_eq!(posted["stdout"], "1024\n");

        // A batch: queued together, read together, in order.
        let batch = app
            .call(
                "POST",
                "/api/v1/executions/batch",
                &token,
                Some(json!({"executions": [
                    {"language": "bash", "code": "echo one"},
                    {"language": "python", "code": "print('two')"},
                    {"language": "bash", "code": "exit 3"},
                ]})),
            )
            .await;
        assert_eq!(batch.status, 202, "{}", batch.text());
        let batch_id = batch.json()["id"].as_str().unwrap().to_owned();
        let mut seen = Value::Null;
        for _ in 0..600 {
            seen = app
                .call(
                    "GET",
                    &format!("/api/v1/executions/batch/{batch_id}"),
                    &token,
                    None,
                )
                .await
                .json();
            if seen["finished"] == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen["finished"], 3, "{seen}");
        let outs: Vec<&str> = seen["executions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        assert_eq!(outs, ["ok", "ok", "runtime_error"], "{seen}");
        assert_eq!(seen["executions"][1]["stdout"], "two\n");
        let bad = app
        .call(
            "POST",
            "/api/v1/executions/batch",
            &token,
            Some(json!({"executions": [{"language": "bash", "code": "true"}, {"language": "nope", "code": "x"}]})),
        )
        .await
        .assert_problem(422, "validation_failed");
        assert_eq!(bad["errors"][0]["field"], "executions[1].language");
        workers.shutdown(Duration::from_secs(5)).await;
    }
);

on_both_backends!(library_snippets_run_as_executions, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(app.state.store.backend(), dir.path()).await;
    let author = app.register_on_plan("author", "enterprise").await;
    let reader = app.register_on_plan("reader", "enterprise").await;
    let snippet = |public: bool| {
        let (app, author) = (&app, author.clone());
        async move {
            let made = app
                .call(
                    "POST",
                    "/api/v1/library",
                    &author,
                    Some(
                        json!({"title": "upper", "language": "python", "is_public": public,
                                "code": "import sys\nprint(sys.stdin.read().upper())"}),
                    ),
                )
                .await;
            assert_eq!(made.status, 201, "{}", made.text());
            made.json()["id"].as_str().unwrap().to_owned()
        }
    };
    let public = snippet(true).await;
    let private = snippet(false).await;
    // Anyone may run a public snippet; the answer is the finished run.
    let ran = app
        .call(
            "POST",
            &format!("/api/v1/library/{public}/run"),
            &reader,
            Some(json!({"stdin": "loud"})),
        )
        .await;
    assert_eq!(ran.status, 200, "{}", ran.text());
    assert_eq!(ran.json()["status"], "ok");
    assert_eq!(ran.json()["stdout"], "LOUD\n");
    // A private one only its owner; for others it does not exist.
    app.call(
        "POST",
        &format!("/api/v1/library/{private}/run"),
        &reader,
        Some(json!({})),
    )
    .await
    .assert_problem(404, "not_found");
    let own = app
        .call(
            "POST",
            &format!("/api/v1/library/{private}/run"),
            &author,
            Some(json!({"stdin": "mine", "wait": false})),
        )
        .await;
    assert_eq!(own.status, 202, "{}", own.text());
});

on_both_backends!(
    sandboxes_are_reset_and_reused_within_an_organization_only,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let alice = app.register_on_plan("reuse-a", "enterprise").await;
        let bob = app.register_on_plan("reuse-b", "enterprise").await;
        // The host uid range a sandbox's root maps to tells sandboxes apart.
        let identity = "head -1 /proc/self/uid_map";
        let leave = format!(
            "{identity}; echo x > /tmp/left; echo y > /dev/shm/left; ipcmk -M 4096 >/dev/null; \
             (setsid sleep 1000 >/dev/null 2>&1 &); chmod 700 /tmp"
        );
        let first = judge(
            &app,
            &alice,
            json!({"language": "bash", "code": leave, "wait": true}),
        )
        .await;
        assert_eq!(first["status"], "ok", "{first}");
        let look = format!(
            "{identity}; ls -A /tmp/left /dev/shm/left 2>&1; ipcs -m | grep -c '^0x'; \
             grep -l sleep /proc/[0-9]*/comm 2>/dev/null | wc -l; stat -c %a /tmp"
        );
        let second = judge(
            &app,
            &alice,
            json!({"language": "bash", "code": look, "wait": true}),
        )
        .await;
        let (was, now) = (
            first["stdout"].as_str().unwrap(),
            second["stdout"].as_str().unwrap(),
        );
        let sandbox_of = |out: &str| out.lines().next().unwrap().to_owned();
        assert_eq!(
            sandbox_of(now),
            sandbox_of(was),
            "the sandbox was reused: {was} / {now}"
        );
        let rest: Vec<&str> = now.lines().skip(1).collect();
        assert_eq!(rest.len(), 5, "{now}");
        assert!(
            rest[0].contains("No such file") && rest[1].contains("No such file"),
            "{now}"
        );
        assert_eq!(
            rest[2..],
            ["0", "0", "1777"],
            "nothing of the first run is left (/tmp is 1777 again): {now}"
        );
        // Another organization never gets that sandbox.
        let other = judge(
            &app,
            &bob,
            json!({"language": "bash", "code": identity, "wait": true}),
        )
        .await;
        assert_ne!(
            sandbox_of(other["stdout"].as_str().unwrap()),
            sandbox_of(was),
            "{other}"
        );
        assert!(app.state.sandboxes.pool.reused() >= 2);
    }
);

on_both_backends!(with_reuse_off_every_execution_gets_a_new_sandbox, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_configured(app.state.store.backend(), dir.path(), |c| {
        c.executions.reuse_sandboxes = 0;
    })
    .await;
    let token = app.register_on_plan("no-reuse", "enterprise").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let out = judge(
            &app,
            &token,
            json!({"language": "bash", "code": "head -1 /proc/self/uid_map", "wait": true}),
        )
        .await;
        seen.push(out["stdout"].as_str().unwrap().to_owned());
    }
    assert_ne!(seen[0], seen[1]);
    assert_eq!(app.state.sandboxes.pool.reused(), 0);
});

/// Executions counted against `token`'s daily quota today.
async fn executions_used(app: &TestApp, token: &str) -> i64 {
    let usage = app
        .call("GET", "/api/v1/users/me/usage", token, None)
        .await
        .json();
    usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "executions")
        .unwrap()["used"]
        .as_i64()
        .unwrap()
}

// Issue 17 item 1: a program that prints NUL bytes gets its verdict and
// its output, byte for byte, on both backends (on PostgreSQL the request
// was a 500 and the record stayed `running`); and an execution whose
// outcome the database refuses ends as `internal_error`, with its quota
// given back, instead of staying `running` and being run again.
on_both_backends!(
    nul_output_is_kept_and_unrecordable_outcomes_end_the_run,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (token, _) = app.register_and_login("nulprinter").await;
        let printed = judge(
        &app,
        &token,
        json!({"language": "python", "code": "import sys\nsys.stdout.write('a\\0b\\\\0')\nsys.stderr.write('\\0')", "wait": true}),
    )
    .await;
        assert_eq!(printed["status"], "ok", "{printed}");
        assert_eq!(printed["stdout"], "a\u{0}b\\0", "{printed}");
        assert_eq!(printed["stderr"], "\u{0}", "{printed}");
        let id = printed["id"].as_str().unwrap();
        let again = finished(&app, &token, id).await;
        assert_eq!(again["stdout"], printed["stdout"]);

        // The database refuses this program's outcome.
        let refuse: &[&str] = match app.state.store.backend() {
            corral_store::Backend::Sqlite => {
                &["CREATE TRIGGER refuse_outcome BEFORE UPDATE ON executions \
             WHEN NEW.stdout LIKE '%unrecordable%' BEGIN SELECT RAISE(ABORT, 'refused'); END"]
            }
            corral_store::Backend::Postgres => &[
                "CREATE FUNCTION refuse_outcome() RETURNS trigger AS $$ BEGIN \
             IF NEW.stdout LIKE '%unrecordable%' THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER refuse_outcome BEFORE UPDATE ON executions FOR EACH ROW \
             EXECUTE FUNCTION refuse_outcome()",
            ],
        };
        for sql in refuse {
            sqlx::query(sqlx::AssertSqlSafe(*sql))
                .execute(app.state.store.pool())
                .await
                .unwrap();
        }
        let before = executions_used(&app, &token).await;
        let refused = judge(
            &app,
            &token,
            json!({"language": "bash", "code": "echo unrecordable", "wait": true}),
        )
        .await;
        assert_eq!(refused["status"], "internal_error", "{refused}");
        assert_eq!(refused["stdout"], "", "{refused}");
        assert_eq!(
            executions_used(&app, &token).await,
            before,
            "the quota was given back"
        );
    }
);
