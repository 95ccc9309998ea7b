//! Browser sessions: the cookie's attributes, CSRF protection on every
//! state-changing request, sign-out, and sessions ending with the password.

use axum::body::Body;
use http::Request;
use serde_json::json;

use crate::support::{TestApp, TestResponse, on_both_backends};

/// Signs `name` in through `POST /auth/session`; returns the response.
async fn sign_in(app: &TestApp, name: &str) -> TestResponse {
    app.post_json(
        "/api/v1/auth/session",
        &json!({"login": name, "password": "correct horse battery"}).to_string(),
    )
    .await
}

/// `name=value` from a `Set-Cookie` header.
fn cookie_pair(res: &TestResponse) -> String {
    let set = res.header("set-cookie").unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// A request carrying `cookie`, optionally a CSRF token, Origin and JSON body.
async fn with_cookie(
    app: &TestApp,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    origin: Option<&str>,
    body: Option<serde_json::Value>,
) -> TestResponse {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "corral.test")
        .header("cookie", format!("theme=dark; {cookie}"));
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    app.send(request.body(body).unwrap()).await
}

on_both_backends!(
    a_cookie_session_signs_in_and_refuses_cross_site_writes,
    |app| {
        app.register_and_login("browser").await;
        let wrong = app
            .post_json(
                "/api/v1/auth/session",
                &json!({"login": "browser", "password": "not the password"}).to_string(),
            )
            .await;
        wrong.assert_problem(401, "unauthorized");
        assert!(wrong.header("set-cookie").is_none());

        let res = sign_in(&app, "browser").await;
        assert_eq!(res.status, 200, "{}", res.text());
        let set = res.header("set-cookie").unwrap().to_owned();
        assert!(set.starts_with("corral_session="), "{set}");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
            assert!(set.contains(attribute), "{attribute} missing from {set}");
        }
        assert!(!set.contains("Secure"), "no Secure over plain HTTP: {set}");
        let body = res.json();
        let csrf = body["csrf_token"].as_str().unwrap().to_owned();
        assert_eq!(body["user"]["username"], "browser");
        let cookie = cookie_pair(&res);
        assert!(
            !body.to_string().contains(&cookie[15..]),
            "the token is only in the cookie"
        );

        // Reads need no CSRF token.
        let me = with_cookie(&app, "GET", "/api/v1/users/me", &cookie, None, None, None).await;
        assert_eq!(me.status, 200, "{}", me.text());
        let session = with_cookie(
            &app,
            "GET",
            "/api/v1/auth/session",
            &cookie,
            None,
            None,
            None,
        )
        .await;
        assert_eq!(session.json()["csrf_token"], csrf);

        // Writes need the CSRF token, and a foreign Origin is refused even with it.
        let create = json!({"name": "from the browser", "scopes": ["orgs:read"]});
        for (token, origin, why) in [
            (None, None, "missing X-CSRF-Token"),
            (Some("0".repeat(64)), None, "wrong X-CSRF-Token"),
            (
                Some(csrf.clone()),
                Some("https://evil.example"),
                "the Origin is not this server",
            ),
        ] {
            let res = with_cookie(
                &app,
                "POST",
                "/api/v1/api-keys",
                &cookie,
                token.as_deref(),
                origin,
                Some(create.clone()),
            )
            .await;
            let problem = res.assert_problem(403, "forbidden");
            assert!(
                problem["detail"].as_str().unwrap().contains(why),
                "{problem}"
            );
        }
        let made = with_cookie(
            &app,
            "POST",
            "/api/v1/api-keys",
            &cookie,
            Some(&csrf),
            Some("http://corral.test"),
            Some(create.clone()),
        )
        .await;
        assert_eq!(made.status, 201, "{}", made.text());

        // Sign-out needs the token too, clears the cookie and ends the session.
        with_cookie(
            &app,
            "DELETE",
            "/api/v1/auth/session",
            &cookie,
            None,
            None,
            None,
        )
        .await
        .assert_problem(403, "forbidden");
        let out = with_cookie(
            &app,
            "DELETE",
            "/api/v1/auth/session",
            &cookie,
            Some(&csrf),
            None,
            None,
        )
        .await;
        assert_eq!(out.status, 204);
        assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
        with_cookie(&app, "GET", "/api/v1/users/me", &cookie, None, None, None)
            .await
            .assert_problem(401, "unauthorized");
    }
);

on_both_backends!(changing_the_password_ends_browser_sessions, |app| {
    let (access, _) = app.register_and_login("rotating").await;
    let cookie = cookie_pair(&sign_in(&app, "rotating").await);
    assert_eq!(
        with_cookie(&app, "GET", "/api/v1/users/me", &cookie, None, None, None)
            .await
            .status,
        200
    );
    let changed = app
        .call(
            "POST",
            "/api/v1/users/me/password",
            &access,
            Some(json!({"current_password": "correct horse battery", "new_password": "another good passphrase"})),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.text());
    with_cookie(&app, "GET", "/api/v1/users/me", &cookie, None, None, None)
        .await
        .assert_problem(401, "unauthorized");
    // A made-up cookie is just unauthorized.
    with_cookie(
        &app,
        "GET",
        "/api/v1/users/me",
        "corral_session=forged",
        None,
        None,
        None,
    )
    .await
    .assert_problem(401, "unauthorized");
});

#[tokio::test]
async fn over_https_the_cookie_is_secure_and_host_prefixed() {
    let app = TestApp::builder(corral_store::Backend::Sqlite)
        .config(|c| c.server.public_url = Some("https://corral.example.com".to_owned()))
        .build()
        .await;
    app.register_and_login("secure").await;
    let res = sign_in(&app, "secure").await;
    let set = res.header("set-cookie").unwrap().to_owned();
    assert!(set.starts_with("__Host-corral_session="), "{set}");
    assert!(set.contains("Secure"), "{set}");
    let csrf = res.json()["csrf_token"].as_str().unwrap().to_owned();
    let cookie = cookie_pair(&res);
    // The Origin must be the public URL's, not whatever Host says.
    let create = json!({"name": "k", "scopes": ["orgs:read"]});
    with_cookie(
        &app,
        "POST",
        "/api/v1/api-keys",
        &cookie,
        Some(&csrf),
        Some("https://corral.test"),
        Some(create.clone()),
    )
    .await
    .assert_problem(403, "forbidden");
    let made = with_cookie(
        &app,
        "POST",
        "/api/v1/api-keys",
        &cookie,
        Some(&csrf),
        Some("https://corral.example.com"),
        Some(create),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    // The unprefixed name is not accepted over HTTPS.
    let plain = cookie.replace("__Host-corral_session", "corral_session");
    with_cookie(&app, "GET", "/api/v1/users/me", &plain, None, None, None)
        .await
        .assert_problem(401, "unauthorized");
}
