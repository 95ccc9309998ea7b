//! The code library: CRUD, search, visibility, plan limits, validation, audit.

use std::sync::Arc;

use corral_core::auth::PlatformRole;
use corral_service::credentials::hash_password;
use corral_store::NewUser;
use serde_json::{Value, json};

use crate::support::{TestApp, TestResponse, on_both_backends};

const PASSWORD: &str = "correct horse battery";

fn snippet(title: &str) -> Value {
    json!({"title": title, "language": "python", "code": "print(1)\n"})
}

async fn create(app: &TestApp, token: &str, body: Value) -> TestResponse {
    app.call("POST", "/api/v1/library", token, Some(body)).await
}

async fn created(app: &TestApp, token: &str, body: Value) -> String {
    let res = create(app, token, body).await;
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()["id"].as_str().unwrap().to_owned()
}

/// The titles of one search page, and its cursor.
async fn search(app: &TestApp, token: &str, query: &str) -> (Vec<String>, Option<String>) {
    let res = app
        .call("GET", &format!("/api/v1/library?{query}"), token, None)
        .await;
    assert_eq!(res.status, 200, "{query}: {}", res.text());
    let body = res.json();
    let titles = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_owned())
        .collect();
    (titles, body["next_cursor"].as_str().map(str::to_owned))
}

async fn user_with_plan(app: &TestApp, name: &str, role: PlatformRole, plan: &str) -> String {
    app.state
        .store
        .create_user(
            1,
            NewUser {
                email: format!("{name}@example.com"),
                username: name.into(),
                password_hash: hash_password(PASSWORD).unwrap(),
                role,
                plan_id: plan.into(),
            },
        )
        .await
        .unwrap();
    app.login(name, PASSWORD).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

on_both_backends!(a_snippet_is_created_read_changed_and_deleted, |app| {
    let (alice, _) = app.register_and_login("alice").await;
    let res = create(
        &app,
        &alice,
        json!({"title": "  Hello  ", "description": "says hello", "language": "python",
               "code": "print('hello')\n", "tags": ["demo", "io", "demo"], "is_public": false}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let body = res.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["title"], "Hello");
    assert_eq!(body["tags"], json!(["demo", "io"]), "duplicates dropped");
    assert_eq!(body["is_public"], false);
    let me = app
        .call("GET", "/api/v1/users/me", &alice, None)
        .await
        .json();
    assert_eq!(body["owner_id"], me["id"]);
    assert_eq!(body["org_id"], me["personal_org_id"]);

    let shown = app
        .call("GET", &format!("/api/v1/library/{id}"), &alice, None)
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["code"], "print('hello')\n");

    let changed = app
        .call(
            "PATCH",
            &format!("/api/v1/library/{id}"),
            &alice,
            Some(json!({"code": "print('bye')\n", "tags": ["farewell"], "is_public": true})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    let changed = changed.json();
    assert_eq!(changed["code"], "print('bye')\n");
    assert_eq!(changed["title"], "Hello", "unchanged fields stay");
    assert_eq!(changed["tags"], json!(["farewell"]));
    assert_eq!(changed["is_public"], true);
    assert_eq!(
        search(&app, &alice, "tag=demo").await.0,
        Vec::<String>::new()
    );
    assert_eq!(search(&app, &alice, "tag=farewell").await.0, ["Hello"]);

    let listed = app
        .call("GET", "/api/v1/library", &alice, None)
        .await
        .json();
    assert_eq!(listed["items"][0]["code_bytes"], 13);
    assert!(listed["items"][0].get("code").is_none(), "{listed}");

    let gone = app
        .call("DELETE", &format!("/api/v1/library/{id}"), &alice, None)
        .await;
    assert_eq!(gone.status, 204);
    app.call("GET", &format!("/api/v1/library/{id}"), &alice, None)
        .await
        .assert_problem(404, "not_found");
    app.call("DELETE", &format!("/api/v1/library/{id}"), &alice, None)
        .await
        .assert_problem(404, "not_found");

    // Each write is in the audit log.
    let admin = user_with_plan(&app, "root", PlatformRole::Admin, "enterprise").await;
    let audit = app
        .call(
            "GET",
            "/api/v1/admin/audit?resource_type=snippet",
            &admin,
            None,
        )
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text());
    let mut actions: Vec<String> = audit.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resource_id"] == id.as_str())
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        ["library.create", "library.delete", "library.update"]
    );
});

on_both_backends!(
    search_by_text_tag_language_owner_and_visibility_pages,
    |app| {
        // Basic: room for more than the Free plan's 5 snippets.
        let alice = user_with_plan(&app, "alice", PlatformRole::User, "basic").await;
        let (bob, _) = app.register_and_login("bob").await;
        for i in 0..5 {
            created(
                &app,
                &alice,
                json!({"title": format!("sort {i}"), "language": "python",
                   "code": "xs.sort()", "tags": ["sorting"], "is_public": true}),
            )
            .await;
        }
        created(
            &app,
            &alice,
            json!({"title": "Quick", "description": "a QuickSort in C", "language": "c",
               "code": "void qsort();", "tags": ["sorting", "c"], "is_public": false}),
        )
        .await;
        created(
            &app,
            &bob,
            json!({"title": "bob's", "language": "c", "code": "int main(){return 100;}",
               "is_public": true}),
        )
        .await;

        // Pages of two through alice's five public python snippets.
        let (page, cursor) = search(&app, &bob, "language=python&limit=2").await;
        assert_eq!(page, ["sort 0", "sort 1"]);
        let (page, cursor) = search(
            &app,
            &bob,
            &format!("language=python&limit=2&cursor={}", cursor.unwrap()),
        )
        .await;
        assert_eq!(page, ["sort 2", "sort 3"]);
        let (page, cursor) = search(
            &app,
            &bob,
            &format!("language=python&limit=2&cursor={}", cursor.unwrap()),
        )
        .await;
        assert_eq!((page, cursor), (vec!["sort 4".to_owned()], None));

        // Text in title, description or code, ignoring case.
        assert_eq!(search(&app, &alice, "q=quicksort").await.0, ["Quick"]);
        assert_eq!(
            search(&app, &alice, "q=XS.SORT&limit=1").await.0,
            ["sort 0"]
        );
        assert_eq!(search(&app, &alice, "q=RETURN").await.0, ["bob's"]);
        // Bob never sees alice's private snippet, however he searches.
        assert_eq!(
            search(&app, &bob, "q=quicksort").await.0,
            Vec::<String>::new()
        );
        assert_eq!(search(&app, &bob, "tag=c").await.0, Vec::<String>::new());
        assert_eq!(search(&app, &bob, "language=c").await.0, ["bob's"]);
        assert_eq!(
            search(&app, &alice, "language=c").await.0,
            ["Quick", "bob's"]
        );
        assert_eq!(
            search(&app, &alice, "tag=sorting&language=c").await.0,
            ["Quick"]
        );
        assert_eq!(search(&app, &bob, "tag=sorting").await.0.len(), 5);
        assert_eq!(search(&app, &bob, "owner=me").await.0, ["bob's"]);
        assert_eq!(
            search(&app, &alice, "visibility=private").await.0,
            ["Quick"]
        );
        assert_eq!(
            search(&app, &bob, "visibility=private").await.0,
            Vec::<String>::new()
        );
        assert_eq!(
            search(&app, &alice, "owner=me&visibility=public")
                .await
                .0
                .len(),
            5
        );

        // LIKE wildcards are literal.
        assert_eq!(search(&app, &alice, "q=%25").await.0, Vec::<String>::new());
        assert_eq!(search(&app, &alice, "q=_").await.0, Vec::<String>::new());
        assert_eq!(search(&app, &alice, "q=100").await.0, ["bob's"]);
        created(
            &app,
            &alice,
            json!({"title": "100% of a_b", "language": "text", "code": "x"}),
        )
        .await;
        assert_eq!(search(&app, &alice, "q=0%25%20of").await.0, ["100% of a_b"]);
        assert_eq!(search(&app, &alice, "q=a_b").await.0, ["100% of a_b"]);
        assert_eq!(
            search(&app, &alice, "q=a%25b").await.0,
            Vec::<String>::new()
        );

        for (query, field) in [
            ("owner=bob", "owner"),
            ("visibility=secret", "visibility"),
            ("limit=0", "limit"),
        ] {
            let res = app
                .call("GET", &format!("/api/v1/library?{query}"), &alice, None)
                .await;
            assert_eq!(
                res.assert_problem(422, "validation_failed")["errors"][0]["field"],
                field,
                "{query}"
            );
        }
    }
);

on_both_backends!(
    private_snippets_are_not_found_by_others_and_only_owners_write,
    |app| {
        let (alice, _) = app.register_and_login("alice").await;
        let (bob, _) = app.register_and_login("bob").await;
        let private = created(&app, &alice, snippet("mine")).await;
        let mut public = snippet("shared");
        public["is_public"] = json!(true);
        let public = created(&app, &alice, public).await;

        let shared = app
            .call("GET", &format!("/api/v1/library/{public}"), &bob, None)
            .await;
        assert_eq!(shared.status, 200, "{}", shared.text());
        assert_eq!(shared.json()["code"], "print(1)\n");
        for id in [&private, &public] {
            app.call(
                "PATCH",
                &format!("/api/v1/library/{id}"),
                &bob,
                Some(json!({"title": "taken"})),
            )
            .await
            .assert_problem(404, "not_found");
            app.call("DELETE", &format!("/api/v1/library/{id}"), &bob, None)
                .await
                .assert_problem(404, "not_found");
        }
        app.call("GET", &format!("/api/v1/library/{private}"), &bob, None)
            .await
            .assert_problem(404, "not_found");
        let still = app
            .call("GET", &format!("/api/v1/library/{public}"), &alice, None)
            .await
            .json();
        assert_eq!(still["title"], "shared");

        // Keys need the library scopes.
        let (reader, _) = app.create_key(&bob, &["library:read"]).await;
        assert_eq!(
            app.call("GET", &format!("/api/v1/library/{public}"), &reader, None)
                .await
                .status,
            200
        );
        create(&app, &reader, snippet("by key"))
            .await
            .assert_problem(403, "forbidden");
        let (other, _) = app.create_key(&bob, &["sandboxes:read"]).await;
        app.call("GET", "/api/v1/library", &other, None)
            .await
            .assert_problem(403, "forbidden");

        // An administrator may delete anyone's snippet.
        let admin = user_with_plan(&app, "root", PlatformRole::Admin, "enterprise").await;
        let gone = app
            .call(
                "DELETE",
                &format!("/api/v1/library/{private}"),
                &admin,
                None,
            )
            .await;
        assert_eq!(gone.status, 204, "{}", gone.text());
        app.call("GET", &format!("/api/v1/library/{private}"), &alice, None)
            .await
            .assert_problem(404, "not_found");
    }
);

// The Free plan's 5 snippets hold exactly under 8 concurrent creates, and
// the usage endpoint counts them.
on_both_backends!(the_plan_limit_on_snippets_holds_under_concurrency, |app| {
    let (alice, _) = app.register_and_login("alice").await;
    let app = Arc::new(app);
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (app, alice) = (app.clone(), alice.clone());
        creates.spawn(async move { create(&app, &alice, snippet(&format!("s{i}"))).await });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(res) = creates.join_next().await {
        let res = res.unwrap();
        if res.status == 201 {
            ok += 1;
        } else {
            let problem = res.assert_problem(429, "quota_exceeded");
            assert!(
                problem["detail"].as_str().unwrap().contains('5'),
                "{problem}"
            );
            refused += 1;
        }
    }
    assert_eq!((ok, refused), (5, 3), "exactly the plan's 5 succeed");
    let usage = app
        .call("GET", "/api/v1/users/me/usage", &alice, None)
        .await
        .json();
    let quota = usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "library_snippets")
        .unwrap()
        .clone();
    assert_eq!(
        (
            quota["used"].clone(),
            quota["limit"].clone(),
            quota["remaining"].clone()
        ),
        (json!(5), json!(5), json!(0))
    );

    // A delete gives the place back.
    let (mine, _) = search(&app, &alice, "owner=me&limit=1").await;
    assert_eq!(mine.len(), 1);
    let page = app
        .call("GET", "/api/v1/library?limit=1", &alice, None)
        .await
        .json();
    let id = page["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call("DELETE", &format!("/api/v1/library/{id}"), &alice, None)
            .await
            .status,
        204
    );
    created(&app, &alice, snippet("again")).await;
    create(&app, &alice, snippet("one too many"))
        .await
        .assert_problem(429, "quota_exceeded");

    // Enterprise is unlimited.
    let big = user_with_plan(&app, "big", PlatformRole::User, "enterprise").await;
    for i in 0..7 {
        created(&app, &big, snippet(&format!("e{i}"))).await;
    }
});

on_both_backends!(bad_input_is_refused_per_field, |app| {
    let (alice, _) = app.register_and_login("alice").await;
    let with = |field: &str, value: Value| {
        let mut body = snippet("ok");
        body[field] = value;
        body
    };
    let cases = [
        (with("title", json!("")), "title"),
        (with("title", json!("   ")), "title"),
        (with("title", json!("t".repeat(201))), "title"),
        (with("description", json!("d".repeat(2001))), "description"),
        (with("code", json!("")), "code"),
        (with("code", json!("x".repeat(256 * 1024 + 1))), "code"),
        (with("language", json!("")), "language"),
        (with("language", json!("Python")), "language"),
        (with("language", json!("l".repeat(33))), "language"),
        (with("tags", json!(["ok", "Not ok"])), "tags[1]"),
        (with("tags", json!([""])), "tags[0]"),
        (with("tags", json!(["t".repeat(33)])), "tags[0]"),
        (
            with(
                "tags",
                json!((0..17).map(|i| format!("t{i}")).collect::<Vec<_>>()),
            ),
            "tags",
        ),
        (with("is_public", json!("yes")), "is_public"),
        // Mass assignment: the owner and org come from the caller.
        (with("owner_id", json!("someone")), "owner_id"),
        (with("org_id", json!("elsewhere")), "org_id"),
        (json!({"language": "python", "code": "x"}), "title"),
    ];
    for (body, field) in cases {
        let res = create(&app, &alice, body.clone()).await;
        let problem = res.assert_problem(422, "validation_failed");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{field}: {problem}");
    }
    // The largest code and 16 tags are fine; every bad field is named at once.
    let mut body = with("code", json!("x".repeat(256 * 1024)));
    body["tags"] = json!((0..16).map(|i| format!("t{i}")).collect::<Vec<_>>());
    let id = created(&app, &alice, body).await;
    let res = app
        .call(
            "PATCH",
            &format!("/api/v1/library/{id}"),
            &alice,
            Some(json!({"title": "", "language": "C++ "})),
        )
        .await;
    let problem = res.assert_problem(422, "validation_failed");
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "{problem}");
    app.call(
        "PATCH",
        &format!("/api/v1/library/{id}"),
        &alice,
        Some(json!({"owner_id": "someone"})),
    )
    .await
    .assert_problem(422, "validation_failed");
});
