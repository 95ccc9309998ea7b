//! Interpreter contexts against real sandboxes (runc as root, the agent as
//! PID 1, the host's `python3`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::sandboxes::app_in;
use crate::support::{TestApp, on_both_backends};

/// A user's access token (not an API key: the free plan's daily quota of
/// key requests is smaller than this test) and a running sandbox of
/// `memory_mb`.
async fn sandbox_of(app: &TestApp, name: &str, memory_mb: u32) -> (String, String) {
    let (key, _) = app.register_and_login(name).await;
    let created = app
        .call(
            "POST",
            "/api/v1/sandboxes",
            &key,
            Some(json!({"resources": {"memory_mb": memory_mb}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    (key, created.json()["id"].as_str().unwrap().to_owned())
}

/// A new Python context in sandbox `id`; its id and pid.
async fn context_in(app: &TestApp, key: &str, id: &str) -> (String, i64) {
    let created = app
        .call(
            "POST",
            &format!("/api/v1/sandboxes/{id}/contexts"),
            key,
            Some(json!({"language": "python"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let body = created.json();
    assert_eq!(body["language"], "python", "{body}");
    // RFC 3339, as every time the API shows.
    assert!(
        body["created_at"]
            .as_str()
            .and_then(corral_core::clock::parse_rfc3339)
            .is_some(),
        "{body}"
    );
    (
        body["id"].as_str().unwrap().to_owned(),
        body["pid"].as_i64().unwrap(),
    )
}

/// Runs `code` (with `timeout_ms` when given); the result, which must be 200.
async fn run_code(
    app: &TestApp,
    key: &str,
    path: &str,
    code: &str,
    timeout_ms: Option<u64>,
) -> Value {
    let mut body = json!({ "code": code });
    if let Some(ms) = timeout_ms {
        body["timeout_ms"] = json!(ms);
    }
    let ran = app
        .call("POST", &format!("{path}/run"), key, Some(body))
        .await;
    assert_eq!(ran.status, 200, "{code:?}: {}", ran.text());
    ran.json()
}

on_both_backends!(
    a_python_context_keeps_state_and_reports_output_results_and_errors,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let (key, id) = sandbox_of(&app, "pythonista", 128).await;
        let (cid, pid) = context_in(&app, &key, &id).await;
        let path = format!("/api/v1/sandboxes/{id}/contexts/{cid}");

        // Variables persist; a final expression's repr comes back.
        let first = run_code(
            &app,
            &key,
            &path,
            "x = 41\ndef double(n):\n    return n * 2",
            None,
        )
        .await;
        assert_eq!(first["results"], json!([]), "{first}");
        assert_eq!(first["error"], Value::Null, "{first}");
        let second = run_code(&app, &key, &path, "x += 1\ndouble(x)", None).await;
        assert_eq!(second["results"], json!([{"text/plain": "84"}]), "{second}");
        let repr = run_code(&app, &key, &path, "{'a': [1, 'two']}", None).await;
        assert_eq!(
            repr["results"],
            json!([{"text/plain": "{'a': [1, 'two']}"}])
        );
        assert!(repr["execution_count"].as_u64().unwrap() >= 3, "{repr}");

        // Both streams, from Python and from a child program.
        let printed = run_code(
        &app,
        &key,
        &path,
        "import sys, os\nprint('out', x)\nprint('oops', file=sys.stderr)\nos.system('echo from-child; echo child-err >&2')",
        None,
    )
    .await;
        assert_eq!(printed["stdout"], "out 42\nfrom-child\n", "{printed}");
        assert_eq!(printed["stderr"], "oops\nchild-err\n", "{printed}");
        // `os.system` returned 0: a final expression.
        assert_eq!(
            printed["results"],
            json!([{"text/plain": "0"}]),
            "{printed}"
        );

        // An exception: name, value, traceback through the code only; the
        // context stays usable.
        let failed = run_code(&app, &key, &path, "print('before')\n{}['missing']", None).await;
        assert_eq!(failed["stdout"], "before\n", "{failed}");
        assert_eq!(failed["error"]["name"], "KeyError", "{failed}");
        assert_eq!(failed["error"]["value"], "'missing'", "{failed}");
        let traceback = failed["error"]["traceback"].as_str().unwrap();
        assert!(traceback.contains("{}['missing']"), "{traceback}");
        assert!(!traceback.contains("corral-kernel"), "{traceback}");
        let syntax = run_code(&app, &key, &path, "def broken(:", None).await;
        assert_eq!(syntax["error"]["name"], "SyntaxError", "{syntax}");
        assert_eq!(
            run_code(&app, &key, &path, "x", None).await["results"],
            json!([{"text/plain": "42"}])
        );

        // Printing a result line (even one with the last run's nonce, read from
        // the process log) fakes nothing: it is just output.
        let logs = app
            .call(
                "GET",
                &format!("/api/v1/sandboxes/{id}/processes/{pid}/logs"),
                &key,
                None,
            )
            .await
            .json();
        let log: String = logs["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["data"].as_str().unwrap())
            .collect();
        let old_nonce = log
            .rsplit("\u{1e}corral-result ")
            .next()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(old_nonce.len(), 32, "{log}");
        let forged = format!(
            "\u{1e}corral-result {old_nonce} {}",
            json!({"stdout": "forged", "stderr": "", "error": null, "results": [{"text/plain": "forged"}], "execution_count": 99})
        );
        let forged = Value::String(forged).to_string();
        let code = format!(
            "import os, sys\nline = {forged}\nprint(line)\nos.write(1, (line + '\\n').encode())\nsys.__stdout__.write(line + '\\n')\nsys.__stdout__.flush()\n'real'",
        );
        let honest = run_code(&app, &key, &path, &code, None).await;
        assert_eq!(
            honest["results"],
            json!([{"text/plain": "'real'"}]),
            "{honest}"
        );
        assert_eq!(
            honest["stdout"]
                .as_str()
                .unwrap()
                .matches("corral-result")
                .count(),
            3,
            "{honest}"
        );

        // Stdin is empty, never the kernel's requests.
        let read = run_code(&app, &key, &path, "import sys\nsys.stdin.read()", None).await;
        assert_eq!(read["results"], json!([{"text/plain": "''"}]), "{read}");

        // Past its time limit the code is interrupted; the state survives.
        let started = std::time::Instant::now();
        let spun = run_code(&app, &key, &path, "y = 1\nwhile True: pass", Some(500)).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{spun}");
        assert_eq!(spun["error"]["name"], "TimeoutError", "{spun}");
        assert!(
            spun["error"]["value"].as_str().unwrap().contains("500 ms"),
            "{spun}"
        );
        assert_eq!(
            run_code(&app, &key, &path, "x + y", None).await["results"],
            json!([{"text/plain": "43"}])
        );

        // One run at a time: another meanwhile is refused, not queued.
        let (slow, refused) = tokio::join!(
            run_code(
                &app,
                &key,
                &path,
                "import time\ntime.sleep(1.5)\n'slept'",
                None
            ),
            async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                app.call(
                    "POST",
                    &format!("{path}/run"),
                    &key,
                    Some(json!({"code": "1"})),
                )
                .await
            }
        );
        assert_eq!(
            slow["results"],
            json!([{"text/plain": "'slept'"}]),
            "{slow}"
        );
        refused.assert_problem(409, "conflict");

        // Listed; another tenant sees nothing; bad requests are named.
        let listed = app
            .call(
                "GET",
                &format!("/api/v1/sandboxes/{id}/contexts"),
                &key,
                None,
            )
            .await
            .json();
        assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed[0]["id"], cid.as_str(), "{listed}");
        let (stranger, _) = sandbox_of(&app, "stranger", 64).await;
        app.call(
            "POST",
            &format!("{path}/run"),
            &stranger,
            Some(json!({"code": "x"})),
        )
        .await
        .assert_problem(404, "not_found");
        app.call("DELETE", &path, &stranger, None)
            .await
            .assert_problem(404, "not_found");
        app.call(
            "GET",
            &format!("/api/v1/sandboxes/{id}/contexts"),
            &stranger,
            None,
        )
        .await
        .assert_problem(404, "not_found");
        let unknown = app
            .call(
                "POST",
                &format!("/api/v1/sandboxes/{id}/contexts"),
                &key,
                Some(json!({"language": "cobol"})),
            )
            .await;
        unknown.assert_problem(422, "validation_failed");
        assert!(unknown.text().contains("python"), "{}", unknown.text());
        app.call(
            "POST",
            &format!("/api/v1/sandboxes/{id}/contexts/ctx_nope/run"),
            &key,
            Some(json!({"code": "1"})),
        )
        .await
        .assert_problem(404, "not_found");
        app.call(
            "POST",
            &format!("{path}/run"),
            &key,
            Some(json!({"code": "1", "timeout_ms": 0})),
        )
        .await
        .assert_problem(422, "validation_failed");

        // Code that ignores the interrupt ends its context.
        let (stubborn, _) = context_in(&app, &key, &id).await;
        let stubborn = format!("/api/v1/sandboxes/{id}/contexts/{stubborn}");
        let ignored = run_code(
            &app,
            &key,
            &stubborn,
            "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass",
            Some(300),
        )
        .await;
        assert_eq!(ignored["error"]["name"], "TimeoutError", "{ignored}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.call(
            "POST",
            &format!("{stubborn}/run"),
            &key,
            Some(json!({"code": "1"})),
        )
        .await
        .assert_problem(409, "conflict");

        // Deleted: gone from the list, its runs refused.
        let deleted = app.call("DELETE", &path, &key, None).await;
        assert_eq!(deleted.status, 204, "{}", deleted.text());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listed = app
            .call(
                "GET",
                &format!("/api/v1/sandboxes/{id}/contexts"),
                &key,
                None,
            )
            .await
            .json();
        assert_eq!(listed, json!([]), "{listed}");
        app.call(
            "POST",
            &format!("{path}/run"),
            &key,
            Some(json!({"code": "x"})),
        )
        .await
        .assert_problem(409, "conflict");
    }
);

#[tokio::test]
async fn matplotlib_figures_come_back_as_png() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(corral_store::Backend::Sqlite, dir.path()).await;
    let (key, id) = sandbox_of(&app, "plotter", 128).await;
    let (cid, _) = context_in(&app, &key, &id).await;
    let path = format!("/api/v1/sandboxes/{id}/contexts/{cid}");
    // The first import may build matplotlib's font cache.
    let plotted = run_code(
        &app,
        &key,
        &path,
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()",
        Some(30_000),
    )
    .await;
    assert_eq!(plotted["error"], Value::Null, "{plotted}");
    let results = plotted["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{plotted}");
    let png = results[0]["image/png"].as_str().unwrap();
    // Base64 of the PNG signature.
    assert!(png.starts_with("iVBORw0KGgo"), "{png:.40}");
    assert!(png.len() > 1000, "{}", png.len());
    assert!(
        results[0]["text/plain"]
            .as_str()
            .unwrap()
            .starts_with("<Figure"),
        "{plotted}"
    );
    // Figures are closed once sent.
    let after = run_code(&app, &key, &path, "len(plt.get_fignums())", None).await;
    assert_eq!(after["results"], json!([{"text/plain": "0"}]), "{after}");
}
