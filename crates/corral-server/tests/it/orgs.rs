//! Organizations, members and invitations: the role × endpoint table, the
//! last-owner rule, invitation misuse, and tenancy, on both backends.

use serde_json::json;

use crate::support::{TestApp, on_both_backends};

/// alice owns a new org; bob (admin), carol (member) and dave (viewer) join
/// by invitation; eve is an outsider. Returns (org id, [tokens...]).
async fn team(app: &TestApp) -> (String, [String; 5]) {
    let names = ["alice", "bob", "carol", "dave", "eve"];
    let mut tokens = Vec::new();
    for name in names {
        tokens.push(app.register_and_login(name).await.0);
    }
    let org = app
        .call(
            "POST",
            "/api/v1/orgs",
            &tokens[0],
            Some(json!({"name": "Acme"})),
        )
        .await;
    assert_eq!(org.status, 201, "{}", org.text());
    let org_id = org.json()["id"].as_str().unwrap().to_owned();
    for (i, role) in [(1, "admin"), (2, "member"), (3, "viewer")] {
        let inv = app
            .call(
                "POST",
                &format!("/api/v1/orgs/{org_id}/invitations"),
                &tokens[0],
                Some(json!({"email": format!("{}@example.com", names[i]), "role": role})),
            )
            .await;
        assert_eq!(inv.status, 201, "{}", inv.text());
        let token = inv.json()["token"].as_str().unwrap().to_owned();
        let joined = app
            .call(
                "POST",
                &format!("/api/v1/invitations/{token}/accept"),
                &tokens[i],
                None,
            )
            .await;
        assert_eq!(joined.json()["role"], role, "{}", joined.text());
    }
    (org_id, tokens.try_into().unwrap())
}

on_both_backends!(role_by_endpoint_table, |app| {
    let (org, [alice, bob, carol, dave, eve]) = team(&app).await;
    // (method, path, body, [viewer, member, admin, owner, outsider])
    let table: Vec<(&str, String, Option<serde_json::Value>, [u16; 5])> = vec![
        (
            "GET",
            format!("/api/v1/orgs/{org}"),
            None,
            [200, 200, 200, 200, 404],
        ),
        (
            "GET",
            format!("/api/v1/orgs/{org}/members"),
            None,
            [200, 200, 200, 200, 404],
        ),
        (
            "PATCH",
            format!("/api/v1/orgs/{org}"),
            Some(json!({"name": "Acme 2"})),
            [403, 403, 200, 200, 404],
        ),
        (
            "GET",
            format!("/api/v1/orgs/{org}/invitations"),
            None,
            [403, 403, 200, 200, 404],
        ),
        (
            "POST",
            format!("/api/v1/orgs/{org}/invitations"),
            Some(json!({"email": "x@example.com"})),
            [403, 403, 201, 201, 404],
        ),
        (
            "GET",
            format!("/api/v1/orgs/{org}/audit"),
            None,
            [403, 403, 200, 200, 404],
        ),
    ];
    for (method, path, body, expected) in table {
        for (token, want) in [&dave, &carol, &bob, &alice, &eve].iter().zip(expected) {
            let res = app.call(method, &path, token, body.clone()).await;
            assert_eq!(res.status.as_u16(), want, "{method} {path}: {}", res.text());
        }
    }
    // Only the owner deletes; a personal org is never deleted.
    app.call("DELETE", &format!("/api/v1/orgs/{org}"), &bob, None)
        .await
        .assert_problem(403, "forbidden");
    let personal = app
        .call("GET", "/api/v1/users/me", &alice, None)
        .await
        .json()["personal_org_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.call("DELETE", &format!("/api/v1/orgs/{personal}"), &alice, None)
        .await
        .assert_problem(409, "conflict");
    assert_eq!(
        app.call("DELETE", &format!("/api/v1/orgs/{org}"), &alice, None)
            .await
            .status,
        204
    );
    app.call("GET", &format!("/api/v1/orgs/{org}"), &bob, None)
        .await
        .assert_problem(404, "not_found");
});

on_both_backends!(
    the_last_owner_stays_and_owners_are_managed_by_owners,
    |app| {
        let app = &app;
        let (org, [alice, bob, carol, _dave, _eve]) = team(app).await;
        let id_of = |token: String| async move {
            app.call("GET", "/api/v1/users/me", &token, None)
                .await
                .json()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let (alice_id, bob_id, carol_id) = (
            id_of(alice.clone()).await,
            id_of(bob.clone()).await,
            id_of(carol.clone()).await,
        );
        let member = |id: &str| format!("/api/v1/orgs/{org}/members/{id}");

        app.call(
            "PATCH",
            &member(&alice_id),
            &alice,
            Some(json!({"role": "admin"})),
        )
        .await
        .assert_problem(409, "conflict");
        app.call("DELETE", &member(&alice_id), &alice, None)
            .await
            .assert_problem(409, "conflict");
        // An admin cannot make owners, change an owner, or remove one.
        app.call(
            "PATCH",
            &member(&carol_id),
            &bob,
            Some(json!({"role": "owner"})),
        )
        .await
        .assert_problem(403, "forbidden");
        app.call(
            "PATCH",
            &member(&alice_id),
            &bob,
            Some(json!({"role": "viewer"})),
        )
        .await
        .assert_problem(403, "forbidden");
        app.call("DELETE", &member(&alice_id), &bob, None)
            .await
            .assert_problem(403, "forbidden");
        // A member cannot raise its own role or remove others, but can leave.
        app.call(
            "PATCH",
            &member(&carol_id),
            &carol,
            Some(json!({"role": "admin"})),
        )
        .await
        .assert_problem(403, "forbidden");
        app.call("DELETE", &member(&bob_id), &carol, None)
            .await
            .assert_problem(403, "forbidden");
        app.call(
            "PATCH",
            &member(&carol_id),
            &bob,
            Some(json!({"role": "boss"})),
        )
        .await
        .assert_problem(422, "validation_failed");
        app.call(
            "PATCH",
            &member(&carol_id),
            &bob,
            Some(json!({"role": "viewer", "org_id": "x"})),
        )
        .await
        .assert_problem(422, "validation_failed");
        assert_eq!(
            app.call("DELETE", &member(&carol_id), &carol, None)
                .await
                .status,
            204
        );
        app.call("GET", &format!("/api/v1/orgs/{org}"), &carol, None)
            .await
            .assert_problem(404, "not_found");

        // Hand over ownership, then the old owner may leave.
        assert_eq!(
            app.call(
                "PATCH",
                &member(&bob_id),
                &alice,
                Some(json!({"role": "owner"}))
            )
            .await
            .json()["role"],
            "owner"
        );
        assert_eq!(
            app.call("DELETE", &member(&alice_id), &alice, None)
                .await
                .status,
            204
        );
        let members = app
            .call("GET", &format!("/api/v1/orgs/{org}/members"), &bob, None)
            .await
            .json();
        let roles: Vec<_> = members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(roles, vec!["owner", "viewer"]);
    }
);

on_both_backends!(invitations_are_single_use_personal_and_expire, |app| {
    let app = &app;
    let (alice, _) = app.register_and_login("alice").await;
    let (bob, _) = app.register_and_login("bob").await;
    let (eve, _) = app.register_and_login("eve").await;
    let org = app
        .call(
            "POST",
            "/api/v1/orgs",
            &alice,
            Some(json!({"name": "Acme"})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let invite = |email: &str| {
        let (alice, org, email) = (alice.clone(), org.clone(), email.to_owned());
        async move {
            app.call(
                "POST",
                &format!("/api/v1/orgs/{org}/invitations"),
                &alice,
                Some(json!({"email": email})),
            )
            .await
            .json()
        }
    };
    let accept = |token: &str, who: &str| {
        let (url, who) = (
            format!("/api/v1/invitations/{token}/accept"),
            who.to_owned(),
        );
        async move { app.call("POST", &url, &who, None).await }
    };
    let inv = invite("bob@example.com").await;
    let token = inv["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("cri_"));
    let listed = app
        .call(
            "GET",
            &format!("/api/v1/orgs/{org}/invitations"),
            &alice,
            None,
        )
        .await;
    assert!(!listed.text().contains(&token), "tokens are shown once");
    // Someone else cannot use Bob's invitation; Bob can, once.
    accept(&token, &eve).await.assert_problem(404, "not_found");
    assert_eq!(accept(&token, &bob).await.json()["role"], "member");
    accept(&token, &bob).await.assert_problem(404, "not_found");
    accept("cri_forged", &eve)
        .await
        .assert_problem(404, "not_found");
    // Expired after 7 days.
    let late = invite("eve@example.com").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.advance(7 * 24 * 3600 * 1000 + 1);
    let (eve, _) = (
        app.login("eve", "correct horse battery").await.json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        (),
    );
    accept(&late, &eve).await.assert_problem(404, "not_found");
    // Withdrawn invitations are gone; another org's invitation id is not found.
    let alice = app.login("alice", "correct horse battery").await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let inv = app
        .call(
            "POST",
            &format!("/api/v1/orgs/{org}/invitations"),
            &alice,
            Some(json!({"email": "z@example.com"})),
        )
        .await
        .json();
    let id = inv["id"].as_str().unwrap();
    let eve_org = app.call("GET", "/api/v1/users/me", &eve, None).await.json()["personal_org_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.call(
        "DELETE",
        &format!("/api/v1/orgs/{eve_org}/invitations/{id}"),
        &eve,
        None,
    )
    .await
    .assert_problem(404, "not_found");
    assert_eq!(
        app.call(
            "DELETE",
            &format!("/api/v1/orgs/{org}/invitations/{id}"),
            &alice,
            None
        )
        .await
        .status,
        204
    );
    // Bad input.
    app.call(
        "POST",
        &format!("/api/v1/orgs/{org}/invitations"),
        &alice,
        Some(json!({"email": "nope"})),
    )
    .await
    .assert_problem(422, "validation_failed");
});

on_both_backends!(keys_act_only_in_their_org_and_org_audit_is_scoped, |app| {
    let (alice, _) = app.register_and_login("alice").await;
    let (bob, _) = app.register_and_login("bob").await;
    let org = app
        .call(
            "POST",
            "/api/v1/orgs",
            &alice,
            Some(json!({"name": "Acme"})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A key made for the personal org cannot reach the new org, even for its owner.
    let (key, _) = app.create_key(&alice, &["orgs:read", "orgs:write"]).await;
    app.call("GET", &format!("/api/v1/orgs/{org}"), &key, None)
        .await
        .assert_problem(404, "not_found");
    let scoped = app
        .call(
            "POST",
            "/api/v1/api-keys",
            &alice,
            Some(json!({"name": "acme", "scopes": ["orgs:read"], "org_id": org})),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.call("GET", &format!("/api/v1/orgs/{org}"), &scoped, None)
            .await
            .status,
        200
    );
    // orgs:read does not allow renaming.
    app.call(
        "PATCH",
        &format!("/api/v1/orgs/{org}"),
        &scoped,
        Some(json!({"name": "x"})),
    )
    .await
    .assert_problem(403, "forbidden");
    // The org's audit log holds the org's actions and nothing of Bob's.
    app.call(
        "PATCH",
        &format!("/api/v1/orgs/{org}"),
        &alice,
        Some(json!({"name": "Acme Inc"})),
    )
    .await;
    let log = app
        .call("GET", &format!("/api/v1/orgs/{org}/audit"), &alice, None)
        .await
        .json();
    let actions: Vec<_> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        actions.contains(&"org.create".to_owned()) && actions.contains(&"org.update".to_owned()),
        "{actions:?}"
    );
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["org_id"] == org.as_str())
    );
    app.call("GET", &format!("/api/v1/orgs/{org}/audit"), &bob, None)
        .await
        .assert_problem(404, "not_found");
    // Listing shows each user only their orgs.
    let bobs: Vec<_> = app
        .call("GET", "/api/v1/orgs", &bob, None)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(bobs.len(), 1);
    assert!(!bobs.contains(&json!(org)));
    app.call("POST", "/api/v1/orgs", &alice, Some(json!({"name": ""})))
        .await
        .assert_problem(422, "validation_failed");
});

// The decision on what a viewer may read, as a table: a viewer sees that
// the org's sandboxes exist, their state and stats, its executions and
// library, but not what is inside a sandbox (files, process output,
// terminals, contexts): those hold members' working data and secrets. A
// member may read all of it. Authorization answers before the handler, so
// a sandbox id that does not exist shows the decision: 403 when refused,
// something else (404, 422, 200) when allowed.
on_both_backends!(viewers_see_sandboxes_but_not_inside_them, |app| {
    let (org, [_alice, _bob, carol, dave, _eve]) = team(&app).await;
    let id = corral_core::id::new_id();
    // (method, path, may a viewer?)
    let table: Vec<(&str, String, bool)> = vec![
        ("GET", "/api/v1/sandboxes".into(), true),
        ("GET", format!("/api/v1/sandboxes/{id}"), true),
        ("GET", format!("/api/v1/sandboxes/{id}/stats"), true),
        ("GET", "/api/v1/executions".into(), true),
        ("GET", "/api/v1/library".into(), true),
        ("GET", format!("/api/v1/sandboxes/{id}/files?path=/"), false),
        (
            "GET",
            format!("/api/v1/sandboxes/{id}/files/content?path=/etc/passwd"),
            false,
        ),
        (
            "GET",
            format!("/api/v1/sandboxes/{id}/files/search?path=/&pattern=x"),
            false,
        ),
        ("GET", format!("/api/v1/sandboxes/{id}/processes"), false),
        (
            "GET",
            format!("/api/v1/sandboxes/{id}/processes/1/logs"),
            false,
        ),
        ("GET", format!("/api/v1/sandboxes/{id}/terminals"), false),
        ("GET", format!("/api/v1/sandboxes/{id}/contexts"), false),
        ("POST", "/api/v1/sandboxes".into(), false),
        ("POST", format!("/api/v1/sandboxes/{id}/stop"), false),
    ];
    let in_org = |method: &str, path: &str, token: &str| {
        axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("x-corral-org", &org)
            .header("content-type", "application/json")
            // Invalid for a create: a member's request stops at validation.
            .body(axum::body::Body::from(if method == "POST" {
                r#"{"resources": {"memory_mb": "x"}}"#
            } else {
                ""
            }))
            .unwrap()
    };
    for (method, path, viewer_may) in table {
        let viewer = app.send(in_org(method, &path, &dave)).await;
        if viewer_may {
            assert_ne!(
                viewer.status,
                403,
                "viewer {method} {path}: {}",
                viewer.text()
            );
        } else {
            let problem = viewer.assert_problem(403, "forbidden");
            assert!(
                problem["detail"].as_str().unwrap().contains("`member`"),
                "the refusal names the role needed: {problem}"
            );
        }
        let member = app.send(in_org(method, &path, &carol)).await;
        assert_ne!(
            member.status,
            403,
            "member {method} {path}: {}",
            member.text()
        );
    }
});
