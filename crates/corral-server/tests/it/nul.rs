//! Issue 17 item 1 (security row 35): a NUL character anywhere in the
//! input is a 4xx on both backends — never a 500 from PostgreSQL, which
//! cannot store or even compare one — and a program's NUL output is kept.

use serde_json::{Value, json};

use crate::support::on_both_backends;

on_both_backends!(nul_in_any_text_input_is_a_4xx, |app| {
    let (token, _) = app.register_and_login("nully").await;
    let nul = "a\u{0}b";
    // (method, path, body, expected status, field named)
    let bodies: Vec<(&str, &str, Value, &str)> = vec![
        (
            "POST",
            "/api/v1/auth/login",
            json!({"login": nul, "password": "x"}),
            "login",
        ),
        (
            "POST",
            "/api/v1/auth/login",
            json!({"login": "nully", "password": nul}),
            "password",
        ),
        (
            "POST",
            "/api/v1/auth/register",
            json!({"email": "n@example.com", "username": nul, "password": "correct horse battery"}),
            "username",
        ),
        ("POST", "/api/v1/orgs", json!({"name": nul}), "name"),
        (
            "POST",
            "/api/v1/api-keys",
            json!({"name": nul, "scopes": ["sandboxes:read"]}),
            "name",
        ),
        (
            "POST",
            "/api/v1/library",
            json!({"title": nul, "language": "python", "code": "print(1)"}),
            "title",
        ),
        (
            "POST",
            "/api/v1/library",
            json!({"title": "t", "language": "python", "code": "print(1)", "tags": ["x", nul]}),
            "tags[1]",
        ),
        ("POST", "/api/v1/sandboxes", json!({"name": nul}), "name"),
        (
            "POST",
            "/api/v1/sandboxes",
            json!({"env": {"A": nul}}),
            "env.A",
        ),
        (
            "POST",
            "/api/v1/executions",
            json!({"language": "python", "code": nul}),
            "code",
        ),
        (
            "POST",
            "/api/v1/executions",
            json!({"language": "python", "code": "1", "stdin": nul}),
            "stdin",
        ),
        (
            "POST",
            "/api/v1/executions",
            json!({"language": "python", "code": "1", "expected_output": nul}),
            "expected_output",
        ),
        (
            "PATCH",
            "/api/v1/users/me",
            json!({"username": nul}),
            "username",
        ),
    ];
    for (method, path, body, field) in bodies {
        let res = app.call(method, path, &token, Some(body.clone())).await;
        let problem = res.assert_problem(422, "validation_failed");
        assert_eq!(
            problem["errors"][0]["field"], field,
            "{method} {path} {body}: {problem}"
        );
    }
    for query in [
        "/api/v1/executions?status=a%00b",
        "/api/v1/executions?cursor=%00",
        "/api/v1/library?q=a%00",
        "/api/v1/library?tag=%00x",
        "/api/v1/library?cursor=a%00b",
        "/api/v1/sandboxes?label=a%00",
        "/api/v1/admin/audit?action=%00",
    ] {
        let res = app.call("GET", query, &token, None).await;
        let problem = res.assert_problem(422, "validation_failed");
        let name = query.split_once('?').unwrap().1.split('=').next().unwrap();
        assert_eq!(problem["errors"][0]["field"], name, "{query}: {problem}");
    }
    for path in [
        "/api/v1/executions/a%00b",
        "/api/v1/library/a%00b",
        "/api/v1/sandboxes/a%00b",
        "/api/v1/orgs/a%00b",
        "/api/v1/executions/batch/%00",
    ] {
        app.call("GET", path, &token, None)
            .await
            .assert_problem(404, "not_found");
    }
    app.call("DELETE", "/api/v1/api-keys/a%00b", &token, None)
        .await
        .assert_problem(404, "not_found");
});
