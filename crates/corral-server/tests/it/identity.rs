//! Accounts, tokens, API keys, authorization and the audit log, through the API,
//! on both backends. Attack cases follow shared/security.md (API and identity).

use serde_json::json;

use corral_core::auth::PlatformRole;
use corral_service::credentials::{ACCESS_TOKEN_SECS, hash_password};
use corral_store::NewUser;

use crate::support::{TestApp, on_both_backends};

const PASSWORD: &str = "correct horse battery";

on_both_backends!(register_validates_every_field_and_refuses_extras, |app| {
    // (body, status, code, field)
    let cases = [
        (
            json!({"email": "nope", "username": "alice", "password": PASSWORD}),
            422,
            "validation_failed",
            Some("email"),
        ),
        (
            json!({"email": "a@example.com", "username": "A!", "password": PASSWORD}),
            422,
            "validation_failed",
            Some("username"),
        ),
        (
            json!({"email": "a@example.com", "username": "alice", "password": "short"}),
            422,
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"email": "a@example.com", "username": "alice"}),
            422,
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"email": "a@example.com", "username": "alice", "password": PASSWORD, "role": "admin"}),
            422,
            "validation_failed",
            Some("role"),
        ),
        (
            json!({"email": "a@example.com", "username": "alice", "password": PASSWORD, "plan_id": "enterprise"}),
            422,
            "validation_failed",
            Some("plan_id"),
        ),
    ];
    for (body, status, code, field) in cases {
        let res = app
            .post_json("/api/v1/auth/register", &body.to_string())
            .await;
        let problem = res.assert_problem(status, code);
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        }
    }
    let ok = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "Alice@Example.com", "username": "alice", "password": PASSWORD})
                .to_string(),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text());
    let user = ok.json();
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["role"], "user");
    assert_eq!(user["plan"], "free");
    assert!(user.get("password_hash").is_none() && !ok.text().contains("argon2"));
    let dup = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "alice@example.com", "username": "alice2", "password": PASSWORD})
                .to_string(),
        )
        .await;
    dup.assert_problem(409, "conflict");
});

#[tokio::test]
async fn registration_can_be_closed() {
    let app = TestApp::builder(corral_store::Backend::Sqlite)
        .config(|c| c.auth.registration = corral_service::config::Registration::Closed)
        .build()
        .await;
    let res = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "a@example.com", "username": "alice", "password": PASSWORD})
                .to_string(),
        )
        .await;
    res.assert_problem(403, "forbidden");
}

on_both_backends!(login_gives_tokens_that_reach_the_account, |app| {
    let (access, _) = app.register_and_login("alice").await;
    let me = app.call("GET", "/api/v1/users/me", &access, None).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["username"], "alice");
    // Login by email works too, case-insensitively.
    assert_eq!(app.login("ALICE@example.com", PASSWORD).await.status, 200);
});

on_both_backends!(
    unknown_users_and_wrong_passwords_get_the_same_answer_and_lock_alike,
    |app| {
        app.register_and_login("alice").await;
        let wrong = app.login("alice", "wrong password!").await;
        let unknown = app.login("mallory", "wrong password!").await;
        let strip = |mut v: serde_json::Value| {
            v.as_object_mut().unwrap().remove("request_id");
            v
        };
        wrong.assert_problem(401, "unauthorized");
        assert_eq!(strip(wrong.json()), strip(unknown.json()));

        // Five consecutive failures lock the name, existing or not.
        for name in ["alice", "mallory"] {
            for _ in 0..4 {
                app.login(name, "wrong password!").await;
            }
            let locked = app
                .login(name, if name == "alice" { PASSWORD } else { "x" })
                .await;
            locked.assert_problem(429, "rate_limited");
            let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=30).contains(&retry), "{retry}");
        }
        // The lock expires; success clears the count.
        app.clock.advance(31_000);
        assert_eq!(app.login("alice", PASSWORD).await.status, 200);
        assert_eq!(app.login("alice", "wrong password!").await.status, 401);
        assert_eq!(app.login("alice", PASSWORD).await.status, 200);
    }
);

on_both_backends!(forged_expired_and_missing_tokens_are_401, |app| {
    let (access, _) = app.register_and_login("alice").await;
    let parts: Vec<&str> = access.split('.').collect();
    use base64_url as b64;
    let none_header = b64::encode(r#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let wrong_key = corral_service::credentials::TokenKeys::new("not-the-key")
        .issue(&claims_sub(&access), "any-sign-in", app.clock_secs())
        .unwrap();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64::encode(r#"{"sub":"someone-else","iat":0,"exp":99999999999,"typ":"access"}"#),
        parts[2]
    );
    for (what, token) in [
        ("alg none", alg_none),
        ("wrong key", wrong_key),
        ("tampered", tampered),
        ("garbage", "abc".into()),
        ("unknown key", "crl_doesnotexist".into()),
    ] {
        let res = app.call("GET", "/api/v1/users/me", &token, None).await;
        res.assert_problem(401, "unauthorized");
        assert_eq!(res.header("www-authenticate"), Some("Bearer"), "{what}");
    }
    app.call("GET", "/api/v1/users/me", "", None)
        .await
        .assert_problem(401, "unauthorized");
    // Used (and so cached) 5 s before it expires, refused 1 s after, well
    // within the cache's lifetime: expiry is checked on every hit.
    app.clock.advance(ACCESS_TOKEN_SECS * 1000 - 5_000);
    assert_eq!(
        app.call("GET", "/api/v1/users/me", &access, None)
            .await
            .status,
        200
    );
    app.clock.advance(6_000);
    app.call("GET", "/api/v1/users/me", &access, None)
        .await
        .assert_problem(401, "unauthorized");
});

fn claims_sub(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&base64_url::decode(payload).unwrap()).unwrap();
    json["sub"].as_str().unwrap().to_owned()
}

on_both_backends!(refresh_rotates_and_reuse_revokes_the_whole_sign_in, |app| {
    let (_, refresh1) = app.register_and_login("alice").await;
    let body = |t: &str| json!({"refresh_token": t});
    let r2 = app
        .call("POST", "/api/v1/auth/refresh", "", Some(body(&refresh1)))
        .await;
    assert_eq!(r2.status, 200, "{}", r2.text());
    let refresh2 = r2.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh1, refresh2);
    assert_eq!(
        app.call(
            "GET",
            "/api/v1/users/me",
            r2.json()["access_token"].as_str().unwrap(),
            None
        )
        .await
        .status,
        200
    );
    // Replaying the first token: refused, and its successor dies with it.
    app.call("POST", "/api/v1/auth/refresh", "", Some(body(&refresh1)))
        .await
        .assert_problem(401, "unauthorized");
    app.call("POST", "/api/v1/auth/refresh", "", Some(body(&refresh2)))
        .await
        .assert_problem(401, "unauthorized");
    // Logout revokes; unknown tokens still get 204.
    let (_, refresh3) = (
        String::new(),
        app.login("alice", PASSWORD).await.json()["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    assert_eq!(
        app.call("POST", "/api/v1/auth/logout", "", Some(body(&refresh3)))
            .await
            .status,
        204
    );
    app.call("POST", "/api/v1/auth/refresh", "", Some(body(&refresh3)))
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(
        app.call("POST", "/api/v1/auth/logout", "", Some(body("crr_unknown")))
            .await
            .status,
        204
    );
});

on_both_backends!(api_keys_are_shown_once_scoped_and_revoked_at_once, |app| {
    let (access, _) = app.register_and_login("alice").await;
    let (key, id) = app
        .create_key(&access, &["sandboxes:read", "keys:write"])
        .await;
    assert!(key.starts_with("crl_") && key.len() == 44);

    let list = app.call("GET", "/api/v1/api-keys", &access, None).await;
    assert_eq!(list.status, 200);
    assert!(!list.text().contains(&key), "list must not show the secret");
    let listed = &list.json()[0];
    assert_eq!(listed["prefix"], &key[..12]);
    assert_eq!(listed["scopes"], json!(["sandboxes:read", "keys:write"]));

    // The key authenticates and is counted.
    assert_eq!(
        app.call("GET", "/api/v1/users/me", &key, None).await.status,
        200
    );
    assert_eq!(
        app.call("GET", "/api/v1/api-keys", &key, None).await.status,
        200
    );
    let listed = app
        .call("GET", "/api/v1/api-keys", &access, None)
        .await
        .json();
    assert_eq!(listed[0]["usage_count"], 2);
    assert!(listed[0]["last_used_at"].is_string());

    // A key without keys:write cannot manage keys; nothing can lift a key's scopes.
    let (narrow, _) = app.create_key(&access, &["sandboxes:read"]).await;
    app.call("GET", "/api/v1/api-keys", &narrow, None)
        .await
        .assert_problem(403, "forbidden");

    // Disabled: refused on the next request; enabled again: accepted.
    let off = app
        .call(
            "PATCH",
            &format!("/api/v1/api-keys/{id}"),
            &access,
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(off.status, 200);
    app.call("GET", "/api/v1/users/me", &key, None)
        .await
        .assert_problem(401, "unauthorized");
    app.call(
        "PATCH",
        &format!("/api/v1/api-keys/{id}"),
        &access,
        Some(json!({"is_active": true})),
    )
    .await;
    assert_eq!(
        app.call("GET", "/api/v1/users/me", &key, None).await.status,
        200
    );

    // Deleted: refused at once.
    assert_eq!(
        app.call("DELETE", &format!("/api/v1/api-keys/{id}"), &access, None)
            .await
            .status,
        204
    );
    app.call("GET", "/api/v1/users/me", &key, None)
        .await
        .assert_problem(401, "unauthorized");
    app.call("DELETE", &format!("/api/v1/api-keys/{id}"), &access, None)
        .await
        .assert_problem(404, "not_found");
});

on_both_backends!(api_key_input_is_validated_and_the_plan_limit_holds, |app| {
    let (access, _) = app.register_and_login("alice").await;
    let cases = [
        (
            json!({"name": "x", "scopes": ["sandboxes:delete"]}),
            "scopes[0]",
        ),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "", "scopes": ["admin"]}), "name"),
        (
            json!({"name": "x", "scopes": ["admin"], "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "scopes": ["admin"], "expires_at": "2000-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "scopes": ["admin"], "user_id": "someone"}),
            "user_id",
        ),
    ];
    for (body, field) in cases {
        let res = app
            .call("POST", "/api/v1/api-keys", &access, Some(body.clone()))
            .await;
        assert_eq!(
            res.assert_problem(422, "validation_failed")["errors"][0]["field"],
            field,
            "{body}"
        );
    }
    // Free plan: 2 keys.
    app.create_key(&access, &["admin"]).await;
    app.create_key(&access, &["admin"]).await;
    let third = app
        .call(
            "POST",
            "/api/v1/api-keys",
            &access,
            Some(json!({"name": "x", "scopes": ["admin"]})),
        )
        .await;
    third.assert_problem(429, "quota_exceeded");
});

on_both_backends!(expired_keys_stop_working, |app| {
    let (access, _) = app.register_and_login("alice").await;
    let in_a_minute = corral_core::clock::rfc3339(app.state.clock.now_ms() + 60_000);
    let res = app
        .call(
            "POST",
            "/api/v1/api-keys",
            &access,
            Some(json!({"name": "x", "scopes": ["sandboxes:read"], "expires_at": in_a_minute})),
        )
        .await;
    let key = res.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call("GET", "/api/v1/users/me", &key, None).await.status,
        200
    );
    app.clock.advance(61_000);
    app.call("GET", "/api/v1/users/me", &key, None)
        .await
        .assert_problem(401, "unauthorized");
});

on_both_backends!(another_tenants_objects_are_not_found, |app| {
    let (alice, _) = app.register_and_login("alice").await;
    let (bob, _) = app.register_and_login("bob").await;
    let (_, alice_key_id) = app.create_key(&alice, &["sandboxes:read"]).await;
    let alice_org = app
        .call("GET", "/api/v1/users/me", &alice, None)
        .await
        .json()["personal_org_id"]
        .as_str()
        .unwrap()
        .to_owned();

    app.call(
        "PATCH",
        &format!("/api/v1/api-keys/{alice_key_id}"),
        &bob,
        Some(json!({"is_active": false})),
    )
    .await
    .assert_problem(404, "not_found");
    app.call(
        "DELETE",
        &format!("/api/v1/api-keys/{alice_key_id}"),
        &bob,
        None,
    )
    .await
    .assert_problem(404, "not_found");
    assert_eq!(
        app.call("GET", "/api/v1/api-keys", &bob, None).await.json(),
        json!([])
    );
    // Bob cannot act in, or mint keys for, Alice's org.
    let res = app
        .send(
            http::Request::get("/api/v1/users/me")
                .header("authorization", format!("Bearer {bob}"))
                .header("x-corral-org", &alice_org)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    res.assert_problem(404, "not_found");
    app.call(
        "POST",
        "/api/v1/api-keys",
        &bob,
        Some(json!({"name": "x", "scopes": ["admin"], "org_id": alice_org})),
    )
    .await
    .assert_problem(404, "not_found");
    // Alice's key still works.
    assert_eq!(
        app.call("GET", "/api/v1/api-keys", &alice, None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
});

on_both_backends!(no_secret_is_stored_in_plaintext, |app| {
    let (access, refresh) = app.register_and_login("alice").await;
    let (key, _) = app.create_key(&access, &["admin"]).await;
    // A browser session: its cookie token must not be stored either.
    let session = app
        .post_json(
            "/api/v1/auth/session",
            &json!({"login": "alice", "password": PASSWORD}).to_string(),
        )
        .await;
    let cookie = session
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let cookie = cookie.split_once('=').unwrap().1.to_owned();
    for table in [
        "users",
        "api_keys",
        "refresh_tokens",
        "audit_log",
        "login_throttle",
        "instance",
        "sessions",
        "email_tokens",
    ] {
        for value in corral_store::testing::all_text(&app.state.store, table).await {
            for secret in [
                PASSWORD,
                key.as_str(),
                refresh.as_str(),
                access.as_str(),
                cookie.as_str(),
            ] {
                assert!(!value.contains(secret), "{table} stores a secret: {value}");
            }
        }
    }
});

on_both_backends!(
    the_audit_log_records_actions_and_only_admins_read_it,
    |app| {
        let (alice, _) = app.register_and_login("alice").await;
        app.login("alice", "wrong password!").await;
        app.create_key(&alice, &["sandboxes:read"]).await;
        app.call("GET", "/api/v1/admin/audit", &alice, None)
            .await
            .assert_problem(403, "forbidden");

        let hash = hash_password(PASSWORD).unwrap();
        app.state
            .store
            .create_user(
                1,
                NewUser {
                    email: "root@example.com".into(),
                    username: "root".into(),
                    password_hash: hash,
                    role: PlatformRole::Admin,
                    plan_id: "enterprise".into(),
                },
            )
            .await
            .unwrap();
        let admin = app.login("root", PASSWORD).await.json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let page = app
            .call("GET", "/api/v1/admin/audit?limit=200", &admin, None)
            .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let actions: Vec<String> = page.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}:{}",
                    r["action"].as_str().unwrap(),
                    r["outcome"].as_str().unwrap()
                )
            })
            .collect();
        for expected in [
            "auth.register:success",
            "auth.login:success",
            "auth.login:failure",
            "api_key.create:success",
        ] {
            assert!(
                actions.contains(&expected.to_owned()),
                "{expected} missing from {actions:?}"
            );
        }
        let failures = app
            .call(
                "GET",
                "/api/v1/admin/audit?action=auth.login&limit=200",
                &admin,
                None,
            )
            .await
            .json();
        assert!(
            failures["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["action"] == "auth.login")
        );

        // Pages follow the cursor without overlap.
        let first = app
            .call("GET", "/api/v1/admin/audit?limit=2", &admin, None)
            .await
            .json();
        let cursor = first["next_cursor"].as_str().unwrap();
        let second = app
            .call(
                "GET",
                &format!("/api/v1/admin/audit?limit=2&cursor={cursor}"),
                &admin,
                None,
            )
            .await
            .json();
        assert_ne!(first["items"][1]["id"], second["items"][0]["id"]);
        assert!(second["items"][0]["id"].as_str() < first["items"][1]["id"].as_str());

        app.call("GET", "/api/v1/admin/audit?limit=0", &admin, None)
            .await
            .assert_problem(422, "validation_failed");
        app.call("GET", "/api/v1/admin/audit?since=yesterday", &admin, None)
            .await
            .assert_problem(422, "validation_failed");

        // Summaries: counts by outcome, action and resource type; admins only.
        let stats = app
            .call("GET", "/api/v1/admin/audit/stats", &admin, None)
            .await;
        assert_eq!(stats.status, 200, "{}", stats.text());
        let stats = stats.json();
        let count = |list: &str, name: &str| {
            stats[list]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .map_or(0, |c| c["count"].as_i64().unwrap())
        };
        assert_eq!(count("by_outcome", "failure"), 1, "{stats}");
        assert_eq!(stats["failed"], 1);
        assert_eq!(count("by_action", "api_key.create"), 1);
        assert_eq!(
            stats["total"].as_i64().unwrap(),
            i64::try_from(actions.len()).unwrap(),
            "every record counted once: {stats}"
        );
        assert!(count("by_resource_type", "user") >= 3);
        let actions_list = app
            .call("GET", "/api/v1/admin/audit/actions", &admin, None)
            .await
            .json();
        assert!(
            actions_list
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["name"] == "auth.login")
        );
        let types = app
            .call("GET", "/api/v1/admin/audit/resource-types", &admin, None)
            .await
            .json();
        assert!(
            types
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "api_key")
        );
        // A range after everything counts nothing; a bad time is refused.
        let later = app
            .call(
                "GET",
                "/api/v1/admin/audit/stats?since=2100-01-01T00:00:00Z",
                &admin,
                None,
            )
            .await
            .json();
        assert_eq!(later["total"], 0);
        app.call("GET", "/api/v1/admin/audit/stats?until=soon", &admin, None)
            .await
            .assert_problem(422, "validation_failed");
        for path in ["stats", "actions", "resource-types"] {
            app.call("GET", &format!("/api/v1/admin/audit/{path}"), &alice, None)
                .await
                .assert_problem(403, "forbidden");
        }
        app.call("GET", "/api/v1/admin/audit?bogus=1", &admin, None)
            .await
            .assert_problem(400, "bad_request");
    }
);

on_both_backends!(head_needs_what_get_needs_and_other_methods_are_405, |app| {
    let (token, _) = app.register_and_login("heady").await;
    // The router answers HEAD with the GET handler, so it is authorized as GET.
    let anonymous = app.call("HEAD", "/api/v1/users/me", "", None).await;
    assert_eq!(anonymous.status, 401);
    let signed_in = app.call("HEAD", "/api/v1/users/me", &token, None).await;
    assert_eq!(signed_in.status, 200);
    // A method the route has no policy for never reaches a handler: 405,
    // with the methods it has.
    for (method, path) in [("DELETE", "/api/v1/plans"), ("PUT", "/api/v1/users/me")] {
        let res = app.call(method, path, &token, None).await;
        res.assert_problem(405, "method_not_allowed");
        let allow = res.header("allow").unwrap_or_default().to_owned();
        assert!(
            allow.contains("GET") && allow.contains("HEAD"),
            "{method} {path}: {allow}"
        );
        assert!(!allow.contains(method), "{method} {path}: {allow}");
    }
});

/// An `/api/` route with no entry in the policy table is refused at run
/// time (fail closed), whoever calls it.
#[tokio::test]
async fn an_api_route_without_a_policy_is_refused() {
    let app = TestApp::builder(corral_store::Backend::Sqlite)
        .routes(axum::Router::new().route(
            "/api/v1/undeclared",
            axum::routing::get(|| async { "handler ran" }),
        ))
        .build()
        .await;
    let (token, _) = app.register_and_login("nopolicy").await;
    for token in ["", token.as_str()] {
        let res = app.call("GET", "/api/v1/undeclared", token, None).await;
        res.assert_problem(500, "internal");
        assert!(!res.text().contains("handler ran"));
    }
}

/// Every API operation in the OpenAPI document has an authorization policy,
/// and every policy names a real operation. A new route without a declared
/// policy fails here (and is refused at run time).
#[test]
fn every_api_route_declares_its_authorization() {
    let doc = serde_json::to_value(corral_server::openapi::api_doc()).unwrap();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            assert!(
                corral_server::auth::policy(&method, path).is_some(),
                "{method} {path} has no entry in auth::POLICIES"
            );
            operations.push((method, path.clone()));
        }
    }
    for (method, path, _) in corral_server::auth::POLICIES {
        assert!(
            operations.contains(&((*method).to_owned(), (*path).to_owned())),
            "policy for {method} {path} names no documented operation"
        );
    }
}

/// Creates a user with `role` directly in the store and signs it in.
async fn privileged(app: &TestApp, name: &str, role: PlatformRole) -> String {
    let hash = hash_password(PASSWORD).unwrap();
    app.state
        .store
        .create_user(
            1,
            NewUser {
                email: format!("{name}@example.com"),
                username: name.into(),
                password_hash: hash,
                role,
                plan_id: "free".into(),
            },
        )
        .await
        .unwrap();
    app.login(name, PASSWORD).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

on_both_backends!(
    password_change_needs_the_old_one_and_ends_other_sessions,
    |app| {
        let (access, refresh) = app.register_and_login("alice").await;
        let change =
            |current: &str, new: &str| json!({"current_password": current, "new_password": new});
        let url = "/api/v1/users/me/password";
        app.call(
            "POST",
            url,
            &access,
            Some(change("wrong password!", "another good passphrase")),
        )
        .await
        .assert_problem(403, "forbidden");
        let weak = app
            .call("POST", url, &access, Some(change(PASSWORD, "short")))
            .await;
        assert_eq!(
            weak.assert_problem(422, "validation_failed")["errors"][0]["field"],
            "new_password"
        );
        let (key, _) = app.create_key(&access, &["keys:write"]).await;
        app.call(
            "POST",
            url,
            &key,
            Some(change(PASSWORD, "another good passphrase")),
        )
        .await
        .assert_problem(403, "forbidden");

        assert_eq!(
            app.call(
                "POST",
                url,
                &access,
                Some(change(PASSWORD, "another good passphrase"))
            )
            .await
            .status,
            204
        );
        assert_eq!(app.login("alice", PASSWORD).await.status, 401);
        assert_eq!(
            app.login("alice", "another good passphrase").await.status,
            200
        );
        app.call(
            "POST",
            "/api/v1/auth/refresh",
            "",
            Some(json!({"refresh_token": refresh})),
        )
        .await
        .assert_problem(401, "unauthorized");
    }
);

on_both_backends!(admins_list_and_manage_users_within_their_rank, |app| {
    let (alice, _) = app.register_and_login("alice").await;
    let alice_id = app
        .call("GET", "/api/v1/users/me", &alice, None)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = privileged(&app, "admin1", PlatformRole::Admin).await;
    let root = privileged(&app, "root", PlatformRole::SuperAdmin).await;
    let admin_id = app
        .call("GET", "/api/v1/users/me", &admin, None)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    app.call("GET", "/api/v1/admin/users", &alice, None)
        .await
        .assert_problem(403, "forbidden");
    let page = app
        .call("GET", "/api/v1/admin/users?limit=2", &admin, None)
        .await
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .call(
            "GET",
            &format!("/api/v1/admin/users?cursor={cursor}"),
            &admin,
            None,
        )
        .await
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());

    let app = &app;
    let patch = |token: &str, id: &str, body: serde_json::Value| {
        let (token, url) = (token.to_owned(), format!("/api/v1/admin/users/{id}"));
        async move { app.call("PATCH", &url, &token, Some(body)).await }
    };
    let upgraded = patch(&admin, &alice_id, json!({"plan": "premium"})).await;
    assert_eq!(upgraded.json()["plan"], "premium");
    patch(&admin, &alice_id, json!({"plan": "gold"}))
        .await
        .assert_problem(422, "validation_failed");
    patch(&admin, &alice_id, json!({"role": "owner"}))
        .await
        .assert_problem(422, "validation_failed");
    patch(&admin, &alice_id, json!({"role": "admin"}))
        .await
        .assert_problem(403, "forbidden");
    patch(&admin, &admin_id, json!({"is_active": false}))
        .await
        .assert_problem(403, "forbidden");
    patch(
        &admin,
        "00000000-0000-7000-8000-000000000000",
        json!({"plan": "basic"}),
    )
    .await
    .assert_problem(404, "not_found");
    patch(&admin, &alice_id, json!({"email": "x@example.com"}))
        .await
        .assert_problem(422, "validation_failed");
    assert_eq!(
        patch(&root, &alice_id, json!({"role": "admin"}))
            .await
            .json()["role"],
        "admin"
    );

    // Disabling refuses the user's tokens and keys at once.
    let (key, _) = app.create_key(&alice, &["sandboxes:read"]).await;
    assert_eq!(
        patch(&root, &alice_id, json!({"is_active": false}))
            .await
            .status,
        200
    );
    app.call("GET", "/api/v1/users/me", &alice, None)
        .await
        .assert_problem(401, "unauthorized");
    app.call("GET", "/api/v1/users/me", &key, None)
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(app.login("alice", PASSWORD).await.status, 401);
});

/// Several replicas on one PostgreSQL: a key that one replica has cached is
/// refused by it as soon as another replica revokes it (LISTEN/NOTIFY moves
/// every replica's auth epoch), well before the cache's TTL.
#[tokio::test]
async fn a_key_revoked_on_one_replica_is_refused_by_another_at_once() {
    let a = TestApp::new(corral_store::Backend::Postgres).await;
    let b = a.replica().await;
    let (access, _) = a.register_and_login("replicated").await;
    let (key, id) = a.create_key(&access, &["orgs:read"]).await;
    // Both replicas authenticate (and cache) the key.
    for app in [&a, &b] {
        assert_eq!(
            app.call("GET", "/api/v1/users/me", &key, None).await.status,
            200
        );
    }
    let started = std::time::Instant::now();
    let deleted = a
        .call("DELETE", &format!("/api/v1/api-keys/{id}"), &access, None)
        .await;
    assert_eq!(deleted.status, 204);
    a.call("GET", "/api/v1/users/me", &key, None)
        .await
        .assert_problem(401, "unauthorized");
    loop {
        let res = b.call("GET", "/api/v1/users/me", &key, None).await;
        if res.status == 401 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "replica b still accepts a deleted key after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Disabling the user through b locks out a's cached session too.
    let me = b
        .call("GET", "/api/v1/users/me", &access, None)
        .await
        .json();
    let admin_changed = b
        .state
        .store
        .update_user_admin(0, me["id"].as_str().unwrap(), None, None, Some(false))
        .await
        .unwrap();
    assert!(admin_changed);
    let started = std::time::Instant::now();
    while a
        .call("GET", "/api/v1/users/me", &access, None)
        .await
        .status
        != 401
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "a still serves a disabled user"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(b);
}

on_both_backends!(
    profile_changes_show_at_once_and_a_new_email_is_unverified,
    |app| {
        let (access, _) = app.register_and_login("profiled").await;
        let me = app
            .call("GET", "/api/v1/users/me", &access, None)
            .await
            .json();
        assert_eq!(me["username"], "profiled");
        let changed = app
            .call(
                "PATCH",
                "/api/v1/users/me",
                &access,
                Some(json!({"username": "renamed", "email": "New@Example.com"})),
            )
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text());
        assert_eq!(changed.json()["email"], "new@example.com");
        // The cached account is not served stale after a change.
        let me = app
            .call("GET", "/api/v1/users/me", &access, None)
            .await
            .json();
        assert_eq!(me["username"], "renamed");
        assert_eq!(me["email_verified"], false);
        // Bad values and taken names are refused, naming the field.
        let bad = app
            .call(
                "PATCH",
                "/api/v1/users/me",
                &access,
                Some(json!({"email": "nope"})),
            )
            .await
            .assert_problem(422, "validation_failed");
        assert_eq!(bad["errors"][0]["field"], "email");
        app.call(
            "PATCH",
            "/api/v1/users/me",
            &access,
            Some(json!({"role": "admin"})),
        )
        .await
        .assert_problem(422, "validation_failed");
        app.register_and_login("other").await;
        app.call(
            "PATCH",
            "/api/v1/users/me",
            &access,
            Some(json!({"username": "other"})),
        )
        .await
        .assert_problem(409, "conflict");
        // API keys cannot change the account.
        let (key, _) = app.create_key(&access, &["orgs:read"]).await;
        app.call(
            "PATCH",
            "/api/v1/users/me",
            &key,
            Some(json!({"username": "x"})),
        )
        .await
        .assert_problem(403, "forbidden");
    }
);

on_both_backends!(users_me_answers_the_account_as_it_is_now, |app| {
    // `GET /users/me` is rendered once per cached sign-in; a change to the
    // account must show at once, through a token and through a key.
    let (access, _) = app.register_and_login("alice").await;
    let (key, _) = app.create_key(&access, &["sandboxes:read"]).await;
    for credential in [&access, &key] {
        for _ in 0..2 {
            let me = app.call("GET", "/api/v1/users/me", credential, None).await;
            assert_eq!(me.status, 200, "{}", me.text());
            assert_eq!(me.json()["username"], "alice");
        }
    }
    let patched = app
        .call(
            "PATCH",
            "/api/v1/users/me",
            &access,
            Some(json!({"username": "alice2"})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    for credential in [&access, &key] {
        let me = app.call("GET", "/api/v1/users/me", credential, None).await;
        assert_eq!(me.json()["username"], "alice2", "{}", me.text());
    }
    let admin = privileged(&app, "admin1", PlatformRole::Admin).await;
    let id = app.call("GET", "/api/v1/users/me", &key, None).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = app
        .call(
            "PATCH",
            &format!("/api/v1/admin/users/{id}"),
            &admin,
            Some(json!({"plan": "premium"})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    for credential in [&access, &key] {
        let me = app.call("GET", "/api/v1/users/me", credential, None).await;
        assert_eq!(me.json()["plan"], "premium", "{}", me.text());
    }
});

// Signing out ends that sign-in's access token at once (not 15 minutes
// later), and only that sign-in's; a refresh after it says "revoked"; a
// password change ends every access token of the account.
on_both_backends!(
    sign_out_and_password_change_end_access_tokens_at_once,
    |app| {
        let (access1, refresh1) = app.register_and_login("alice").await;
        let second = app.login("alice", PASSWORD).await.json();
        let access2 = second["access_token"].as_str().unwrap().to_owned();
        let me = |token: String| {
            let app = &app;
            async move { app.call("GET", "/api/v1/users/me", &token, None).await }
        };
        // Both work, and are now in the auth cache.
        assert_eq!(me(access1.clone()).await.status, 200);
        assert_eq!(me(access2.clone()).await.status, 200);
        let with_refresh = |path: &'static str| {
            let (app, body) = (&app, json!({"refresh_token": refresh1}));
            async move { app.call("POST", path, "", Some(body)).await }
        };
        assert_eq!(with_refresh("/api/v1/auth/logout").await.status, 204);
        let refused = me(access1.clone()).await;
        let problem = refused.assert_problem(401, "unauthorized");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("sign in again"),
            "{problem}"
        );
        assert_eq!(
            me(access2.clone()).await.status,
            200,
            "another sign-in goes on"
        );
        let again = with_refresh("/api/v1/auth/refresh").await;
        let problem = again.assert_problem(401, "unauthorized");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("revoked") && !detail.contains("already used"),
            "{problem}"
        );

        let changed = app
            .call(
                "POST",
                "/api/v1/users/me/password",
                &access2,
                Some(json!({"current_password": PASSWORD, "new_password": "a much newer secret"})),
            )
            .await;
        assert!(changed.status.is_success(), "{}", changed.text());
        me(access2).await.assert_problem(401, "unauthorized");
    }
);

// A `…:write` scope includes its `…:read`; a refusal names the public
// scope string, never an internal action name.
on_both_backends!(write_scopes_read_too_and_refusals_name_the_scope, |app| {
    let (access, _) = app.register_and_login("alice").await;
    let (writer, _) = app.create_key(&access, &["sandboxes:write"]).await;
    let list = app.call("GET", "/api/v1/sandboxes", &writer, None).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let (orgs_only, _) = app.create_key(&access, &["orgs:read"]).await;
    let refused = app.call("GET", "/api/v1/sandboxes", &orgs_only, None).await;
    let problem = refused.assert_problem(403, "forbidden");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("`sandboxes:read`"), "{detail}");
    assert!(!detail.contains("ReadSandboxes"), "{detail}");
});

// Running a library snippet reads the library and submits an execution:
// a key needs both scopes.
on_both_backends!(running_a_snippet_needs_library_read_too, |app| {
    let (access, _) = app.register_and_login("alice").await;
    let snippet = corral_core::id::new_id();
    let run = format!("/api/v1/library/{snippet}/run");
    let (runner, _) = app.create_key(&access, &["executions:write"]).await;
    let problem = app
        .call("POST", &run, &runner, Some(json!({})))
        .await
        .assert_problem(403, "forbidden");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("`library:read`"),
        "{problem}"
    );
    let (both, _) = app
        .create_key(&access, &["executions:write", "library:read"])
        .await;
    app.call("POST", &run, &both, Some(json!({})))
        .await
        .assert_problem(404, "not_found");
});

// `X-Corral-Org` that is not an org id is a 400, not the personal org in
// silence; a key stays in its own org whatever the header says; a key
// cannot create an org (it could never act in it).
on_both_backends!(
    the_org_header_is_checked_and_keys_stay_in_their_org,
    |app| {
        let (access, _) = app.register_and_login("alice").await;
        let with_org = |token: &str, org: &str| {
            http::Request::get("/api/v1/users/me")
                .header("authorization", format!("Bearer {token}"))
                .header("x-corral-org", org)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        for bad in ["nope", "", "personal", "0190d3c4e5f67a8b9c0d1e2f3a4b5c6d"] {
            let res = app.send(with_org(&access, bad)).await;
            let problem = res.assert_problem(400, "bad_request");
            assert!(
                problem["detail"].as_str().unwrap().contains("X-Corral-Org"),
                "{bad}: {problem}"
            );
        }
        let stranger = corral_core::id::new_id();
        app.send(with_org(&access, &stranger))
            .await
            .assert_problem(404, "not_found");
        let (key, _) = app.create_key(&access, &["orgs:write"]).await;
        app.send(with_org(&key, "nope"))
            .await
            .assert_problem(400, "bad_request");
        // Twice: the second answer comes from the auth cache.
        for _ in 0..2 {
            app.send(with_org(&key, &stranger))
                .await
                .assert_problem(404, "not_found");
        }
        let own = app
            .call("GET", "/api/v1/users/me", &access, None)
            .await
            .json()["personal_org_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(app.send(with_org(&key, &own)).await.status, 200);

        let problem = app
            .call("POST", "/api/v1/orgs", &key, Some(json!({"name": "Keyed"})))
            .await
            .assert_problem(403, "forbidden");
        assert!(
            problem["detail"].as_str().unwrap().contains("sign in"),
            "{problem}"
        );
        let orgs = app.call("GET", "/api/v1/orgs", &access, None).await.json();
        assert!(
            !orgs.to_string().contains("Keyed"),
            "nothing was created: {orgs}"
        );
    }
);

// Serde fills a struct from an array of its fields in order; a request
// body must be an object.
on_both_backends!(request_bodies_are_objects_not_arrays, |app| {
    let (access, _) = app.register_and_login("alice").await;
    let res = app
        .send(
            http::Request::post("/api/v1/api-keys")
                .header("authorization", format!("Bearer {access}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(r#"["name", ["sandboxes:read"]]"#))
                .unwrap(),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    let keys = app
        .call("GET", "/api/v1/api-keys", &access, None)
        .await
        .json();
    assert_eq!(keys.as_array().unwrap().len(), 0, "{keys}");
});

// Any key may revoke itself (the CLI's logout), whatever its scopes; a
// signed-in session has no key to revoke.
on_both_backends!(a_key_revokes_itself, |app| {
    let (access, _) = app.register_and_login("alice").await;
    let (key, _) = app.create_key(&access, &["sandboxes:read"]).await;
    assert_eq!(
        app.call("GET", "/api/v1/users/me", &key, None).await.status,
        200
    );
    app.call("DELETE", "/api/v1/api-keys/current", &access, None)
        .await
        .assert_problem(400, "bad_request");
    assert_eq!(
        app.call("DELETE", "/api/v1/api-keys/current", &key, None)
            .await
            .status,
        204
    );
    app.call("GET", "/api/v1/users/me", &key, None)
        .await
        .assert_problem(401, "unauthorized");
});
