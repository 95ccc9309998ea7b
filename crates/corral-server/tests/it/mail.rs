//! Email flows against a real SMTP server on loopback (Python's aiosmtpd,
//! storing what it receives in a maildir): verification, password reset,
//! invitations, invite-only registration, administrator resets; and the
//! `file` backend.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use corral_service::config::{EmailBackend, SmtpTls};
use corral_store::Backend;

use crate::support::{TestApp, on_both_backends};

/// `python3 -m aiosmtpd` on a free loopback port, killed on drop.
struct SmtpCapture {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpCapture {
    fn start() -> SmtpCapture {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            // aiosmtpd creates the maildir only where nothing exists yet.
            .arg(maildir.path().join("box"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/deps.sh test installs it)");
        let capture = SmtpCapture {
            child,
            port,
            maildir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        capture
    }

    /// An app whose mail goes to this server.
    async fn app(
        &self,
        backend: Backend,
        change: impl FnOnce(&mut corral_service::Config),
    ) -> TestApp {
        let port = self.port;
        TestApp::builder(backend)
            .config(move |c| {
                c.email.backend = EmailBackend::Smtp;
                c.email.from = "Corral <corral@corral.test>".into();
                c.email.smtp.host = "127.0.0.1".into();
                c.email.smtp.port = port;
                c.email.smtp.tls = SmtpTls::None;
                change(c);
            })
            .build()
            .await
    }

    /// Waits for the `n`th mail (1-based) to `to`, and returns it raw.
    async fn mail_to(&self, to: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mails = mails_in(&self.maildir.path().join("box/new"), to);
            if mails.len() >= n {
                return mails[n - 1].clone();
            }
            assert!(Instant::now() < deadline, "no mail #{n} to {to} arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn count_to(&self, to: &str) -> usize {
        mails_in(&self.maildir.path().join("box/new"), to).len()
    }
}

impl Drop for SmtpCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mails in `dir` addressed to `to`, oldest first.
fn mails_in(dir: &Path, to: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, path)| std::fs::read_to_string(path).unwrap())
        .filter(|mail| {
            mail.lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("To: {to}")))
        })
        .collect()
}

/// The first `prefix` token (prefix + 40 alphanumerics) in a mail, after
/// undoing quoted-printable soft line breaks.
fn token(mail: &str, prefix: &str) -> String {
    let unfolded = mail.replace("=\r\n", "").replace("=\n", "");
    let mail = unfolded.as_str();
    mail.match_indices(prefix)
        .map(|(i, _)| &mail[i..])
        .find(|rest| {
            rest.len() >= prefix.len() + 40
                && rest[prefix.len()..prefix.len() + 40]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric())
        })
        .map(|rest| rest[..prefix.len() + 40].to_owned())
        .unwrap_or_else(|| panic!("no {prefix} token in {mail}"))
}

on_both_backends!(
    registration_mails_a_verification_token_that_works_once,
    |app| {
        let smtp = SmtpCapture::start();
        let app = smtp.app(app.state.store.backend(), |_| {}).await;
        let (access, _) = app.register_and_login("mailer").await;
        let mail = smtp.mail_to("mailer@example.com", 1).await;
        assert!(
            mail.contains("Subject: Confirm your email address"),
            "{mail}"
        );
        assert!(mail.contains("From: Corral <corral@corral.test>"), "{mail}");
        assert!(
            mail.contains("text/html"),
            "a plain and an HTML part: {mail}"
        );
        let verify = token(&mail, "crv_");
        for value in corral_store::testing::all_text(&app.state.store, "email_tokens").await {
            assert!(
                !value.contains(&verify),
                "email_tokens stores the token: {value}"
            );
        }
        let me = app
            .call("GET", "/api/v1/users/me", &access, None)
            .await
            .json();
        assert_eq!(me["email_verified"], false);

        let res = app
            .post_json(
                "/api/v1/auth/verify-email",
                &json!({"token": verify}).to_string(),
            )
            .await;
        assert_eq!(res.status, 204, "{}", res.text());
        let me = app
            .call("GET", "/api/v1/users/me", &access, None)
            .await
            .json();
        assert_eq!(me["email_verified"], true);
        // Single use; made-up tokens are refused the same way.
        for bad in [verify.as_str(), "crv_made_up"] {
            app.post_json(
                "/api/v1/auth/verify-email",
                &json!({"token": bad}).to_string(),
            )
            .await
            .assert_problem(422, "validation_failed");
        }
        // Already verified: nothing to resend.
        app.call("POST", "/api/v1/users/me/verify-email", &access, None)
            .await
            .assert_problem(409, "conflict");

        // A new address is unverified; a resent mail verifies it, and the older
        // link (sent to the old address) no longer does.
        let changed = app
            .call(
                "PATCH",
                "/api/v1/users/me",
                &access,
                Some(json!({"email": "moved@example.com"})),
            )
            .await;
        assert_eq!(changed.json()["email_verified"], false);
        let resent = app
            .call("POST", "/api/v1/users/me/verify-email", &access, None)
            .await;
        assert_eq!(resent.status, 202, "{}", resent.text());
        let mail = smtp.mail_to("moved@example.com", 1).await;
        let res = app
            .post_json(
                "/api/v1/auth/verify-email",
                &json!({"token": token(&mail, "crv_")}).to_string(),
            )
            .await;
        assert_eq!(res.status, 204);
        assert_eq!(
            app.call("GET", "/api/v1/users/me", &access, None)
                .await
                .json()["email_verified"],
            true
        );
    }
);

on_both_backends!(
    password_reset_by_mail_is_single_use_and_reveals_nothing,
    |app| {
        let smtp = SmtpCapture::start();
        let app = smtp.app(app.state.store.backend(), |_| {}).await;
        let (_, refresh) = app.register_and_login("forgetful").await;
        let ask = |email: &str| {
            let (app, body) = (&app, json!({"email": email}).to_string());
            async move { app.post_json("/api/v1/auth/password-reset", &body).await }
        };
        // Known and unknown addresses get the same answer.
        let unknown = ask("nobody@example.com").await;
        let known = ask("Forgetful@Example.com").await;
        assert_eq!((unknown.status.as_u16(), known.status.as_u16()), (202, 202));
        assert_eq!(unknown.json(), known.json());
        let mail = smtp.mail_to("forgetful@example.com", 2).await; // 1: verification
        assert!(
            mail.contains("Subject: Reset your Corral password"),
            "{mail}"
        );
        let reset = token(&mail, "crp_");

        // A refused password does not spend the token.
        let confirm = |token: &str, password: &str| {
            let body = json!({"token": token, "new_password": password}).to_string();
            let app = &app;
            async move {
                app.post_json("/api/v1/auth/password-reset/confirm", &body)
                    .await
            }
        };
        let weak = confirm(&reset, "short")
            .await
            .assert_problem(422, "validation_failed");
        assert_eq!(weak["errors"][0]["field"], "new_password");
        assert_eq!(confirm(&reset, "a brand new passphrase").await.status, 204);
        confirm(&reset, "another brand new one")
            .await
            .assert_problem(422, "validation_failed");

        assert_eq!(
            app.login("forgetful", "correct horse battery").await.status,
            401
        );
        assert_eq!(
            app.login("forgetful", "a brand new passphrase")
                .await
                .status,
            200
        );
        let old = app
            .post_json(
                "/api/v1/auth/refresh",
                &json!({"refresh_token": refresh}).to_string(),
            )
            .await;
        old.assert_problem(401, "unauthorized");

        // Links expire after an hour; asking again replaces the older link.
        assert_eq!(ask("forgetful@example.com").await.status, 202);
        let first = token(&smtp.mail_to("forgetful@example.com", 3).await, "crp_");
        assert_eq!(ask("forgetful@example.com").await.status, 202);
        let second = token(&smtp.mail_to("forgetful@example.com", 4).await, "crp_");
        confirm(&first, "yet another passphrase")
            .await
            .assert_problem(422, "validation_failed");
        app.clock.advance(61 * 60 * 1000);
        confirm(&second, "yet another passphrase")
            .await
            .assert_problem(422, "validation_failed");
        // Nothing was mailed for the unknown address.
        assert_eq!(smtp.count_to("nobody@example.com"), 0);
    }
);

on_both_backends!(
    invitations_are_mailed_and_invite_only_registration_needs_one,
    |app| {
        let smtp = SmtpCapture::start();
        let app = smtp
            .app(app.state.store.backend(), |c| {
                c.auth.registration = corral_service::config::Registration::InviteOnly;
            })
            .await;
        // The first account comes from an administrator, as on any invite-only server.
        let owner = corral_service::accounts::create_checked(
            &app.state,
            "owner@example.com",
            "owner",
            "correct horse battery",
            corral_core::auth::PlatformRole::User,
            "free",
        )
        .await
        .unwrap();
        let access = app.login("owner", "correct horse battery").await.json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let register = |name: &str, token: Option<&str>| {
            let mut body = json!({"email": format!("{name}@example.com"), "username": name, "password": "correct horse battery"});
            if let Some(token) = token {
                body["invitation_token"] = json!(token);
            }
            let (app, body) = (&app, body.to_string());
            async move { app.post_json("/api/v1/auth/register", &body).await }
        };
        register("stranger", None)
            .await
            .assert_problem(403, "forbidden");

        let org = app
            .call(
                "POST",
                "/api/v1/orgs",
                &access,
                Some(json!({"name": "Team"})),
            )
            .await
            .json();
        let org_id = org["id"].as_str().unwrap();
        let invited = app
            .call(
                "POST",
                &format!("/api/v1/orgs/{org_id}/invitations"),
                &access,
                Some(json!({"email": "newcomer@example.com", "role": "admin"})),
            )
            .await;
        assert_eq!(invited.status, 201, "{}", invited.text());
        let mail = smtp.mail_to("newcomer@example.com", 1).await;
        assert!(mail.contains("owner invites you"), "{mail}");
        assert!(mail.contains("\"Team\"") || mail.contains("Team"), "{mail}");
        let token_in_mail = token(&mail, "cri_");
        assert_eq!(token_in_mail, invited.json()["token"]);

        // The token only works for the invited address.
        register("impostor", Some(&token_in_mail))
            .await
            .assert_problem(422, "validation_failed");
        let res = register("newcomer", Some(&token_in_mail)).await;
        assert_eq!(res.status, 201, "{}", res.text());
        assert_eq!(
            res.json()["email_verified"],
            true,
            "the invitation proved the address"
        );
        let newcomer = app.login("newcomer", "correct horse battery").await.json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let orgs = app
            .call("GET", "/api/v1/orgs", &newcomer, None)
            .await
            .json();
        assert!(
            orgs.as_array()
                .unwrap()
                .iter()
                .any(|o| o["id"] == org_id && o["role"] == "admin"),
            "{orgs}"
        );
        // Used up.
        register("newcomer2", Some(&token_in_mail))
            .await
            .assert_problem(422, "validation_failed");
        assert_eq!(
            smtp.count_to("newcomer@example.com"),
            1,
            "no verification mail needed"
        );
        drop(owner);
    }
);

on_both_backends!(an_admin_resets_a_password_by_mail_or_directly, |app| {
    let smtp = SmtpCapture::start();
    let app = smtp.app(app.state.store.backend(), |_| {}).await;
    let (user_access, user_refresh) = app.register_and_login("member").await;
    let user_id = app
        .call("GET", "/api/v1/users/me", &user_access, None)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    corral_service::accounts::create_checked(
        &app.state,
        "boss@example.com",
        "boss",
        "correct horse battery",
        corral_core::auth::PlatformRole::Admin,
        "free",
    )
    .await
    .unwrap();
    let admin = app.login("boss", "correct horse battery").await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/admin/users/{user_id}/password-reset");
    app.call("POST", &path, &user_access, Some(json!({})))
        .await
        .assert_problem(403, "forbidden");

    let mailed = app.call("POST", &path, &admin, Some(json!({}))).await;
    assert_eq!(mailed.status, 202, "{}", mailed.text());
    let mail = smtp.mail_to("member@example.com", 2).await;
    assert!(mail.contains("an administrator for you"), "{mail}");
    // Every sign-in of the user ended.
    app.post_json(
        "/api/v1/auth/refresh",
        &json!({"refresh_token": user_refresh}).to_string(),
    )
    .await
    .assert_problem(401, "unauthorized");
    let res = app
        .post_json(
            "/api/v1/auth/password-reset/confirm",
            &json!({"token": token(&mail, "crp_"), "new_password": "chosen by the member"})
                .to_string(),
        )
        .await;
    assert_eq!(res.status, 204);

    // Directly, with the password policy.
    app.call(
        "POST",
        &path,
        &admin,
        Some(json!({"new_password": "member"})),
    )
    .await
    .assert_problem(422, "validation_failed");
    let set = app
        .call(
            "POST",
            &path,
            &admin,
            Some(json!({"new_password": "set by the admin now"})),
        )
        .await;
    assert_eq!(set.status, 204, "{}", set.text());
    assert_eq!(
        app.login("member", "set by the admin now").await.status,
        200
    );
    app.call(
        "POST",
        "/api/v1/admin/users/nobody/password-reset",
        &admin,
        Some(json!({})),
    )
    .await
    .assert_problem(404, "not_found");
    // An admin cannot reset another admin's password (only a super admin can).
    let boss_id = app
        .call("GET", "/api/v1/users/me", &admin, None)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.call(
        "POST",
        &format!("/api/v1/admin/users/{boss_id}/password-reset"),
        &admin,
        Some(json!({})),
    )
    .await
    .assert_problem(403, "forbidden");
});

#[tokio::test]
async fn the_file_backend_writes_each_mail_as_an_eml_file() {
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("outbox");
    let app = TestApp::builder(Backend::Sqlite)
        .config({
            let mail_dir = mail_dir.clone();
            move |c| {
                c.email.backend = EmailBackend::File;
                c.email.dir = Some(mail_dir);
            }
        })
        .build()
        .await;
    app.register_and_login("filed").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mail = loop {
        if let Some(entry) = std::fs::read_dir(&mail_dir).ok().and_then(|mut d| d.next()) {
            let path = entry.unwrap().path();
            assert_eq!(path.extension().unwrap(), "eml");
            break std::fs::read_to_string(path).unwrap();
        }
        assert!(Instant::now() < deadline, "no mail file written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(mail.contains("To: filed@example.com"), "{mail}");
    token(&mail, "crv_");
}

/// `application/x-www-form-urlencoded` POST, as a browser's form sends it.
async fn post_form(app: &TestApp, path: &str, body: String) -> crate::support::TestResponse {
    app.send(
        http::Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(body))
            .unwrap(),
    )
    .await
}

// The links in the mails open pages that work without the dashboard or
// JavaScript: GET shows a form (a mail scanner's prefetch spends nothing),
// POST does the work.
on_both_backends!(the_links_in_mails_open_pages_that_do_the_work, |app| {
    let smtp = SmtpCapture::start();
    let app = smtp.app(app.state.store.backend(), |_| {}).await;
    app.register_and_login("clicker").await;
    let mail = smtp.mail_to("clicker@example.com", 1).await;
    let verify = token(&mail, "crv_");
    assert!(
        mail.replace("=\r\n", "")
            .replace("=\n", "")
            .contains(&format!("/verify-email?token=3D{verify}"))
            || mail.contains(&format!("/verify-email?token={verify}")),
        "the mail links to the page: {mail}"
    );

    let form = app.get(&format!("/verify-email?token={verify}")).await;
    assert_eq!(form.status, 200);
    assert!(
        form.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = form.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert!(
        form.text().contains(&format!("value=\"{verify}\"")),
        "{}",
        form.text()
    );
    // Looking at the page did not verify anything.
    let unverified = corral_store::testing::scalar_i64(
        &app.state.store,
        "SELECT email_verified FROM users WHERE username = 'clicker'",
    )
    .await;
    assert_eq!(unverified, 0);

    let done = post_form(&app, "/verify-email", format!("token={verify}")).await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(done.text().contains("confirmed"));
    let again = post_form(&app, "/verify-email", format!("token={verify}")).await;
    assert_eq!(again.status, 422);
    assert!(again.text().contains("does not work"), "{}", again.text());

    // Reset: a refused password keeps the form and the token; a good one works.
    app.post_json(
        "/api/v1/auth/password-reset",
        &json!({"email": "clicker@example.com"}).to_string(),
    )
    .await;
    let reset = token(&smtp.mail_to("clicker@example.com", 2).await, "crp_");
    let page = app.get(&format!("/reset-password?token={reset}")).await;
    assert!(page.text().contains("type=\"password\""));
    let weak = post_form(
        &app,
        "/reset-password",
        format!("token={reset}&new_password=short"),
    )
    .await;
    assert_eq!(weak.status, 422);
    assert!(
        weak.text().contains(&format!("value=\"{reset}\"")),
        "the form stays"
    );
    let good = post_form(
        &app,
        "/reset-password",
        format!("token={reset}&new_password=clicked+a+good+one"),
    )
    .await;
    assert_eq!(good.status, 200, "{}", good.text());
    assert_eq!(app.login("clicker", "clicked a good one").await.status, 200);

    // Values are escaped, never markup.
    let hostile = app
        .get("/verify-email?token=%22%3E%3Cscript%3Ealert(1)%3C/script%3E")
        .await;
    assert!(!hostile.text().contains("<script>"), "{}", hostile.text());
});

// The invitation link opens a page a person can use: it says who is invited
// to what, and its forms join with an existing account or register one. It
// used to tell the reader to "send POST …/accept" by hand.
on_both_backends!(
    the_invitation_link_opens_a_page_that_joins_or_registers,
    |app| {
        let (alice, _) = app.register_and_login("alice").await;
        app.register_and_login("bob").await;
        let org = app
            .call(
                "POST",
                "/api/v1/orgs",
                &alice,
                Some(json!({"name": "Acme <b>"})),
            )
            .await;
        assert_eq!(org.status, 201, "{}", org.text());
        let org_id = org.json()["id"].as_str().unwrap().to_owned();
        let invite = |email: &'static str, role: &'static str| {
            let (app, alice, org_id) = (&app, &alice, &org_id);
            async move {
                let inv = app
                    .call(
                        "POST",
                        &format!("/api/v1/orgs/{org_id}/invitations"),
                        alice,
                        Some(json!({"email": email, "role": role})),
                    )
                    .await;
                assert_eq!(inv.status, 201, "{}", inv.text());
                inv.json()["token"].as_str().unwrap().to_owned()
            }
        };
        let for_bob = invite("bob@example.com", "member").await;
        let for_newbie = invite("newbie@example.com", "viewer").await;
        let members = || async {
            app.call(
                "GET",
                &format!("/api/v1/orgs/{org_id}/members"),
                &alice,
                None,
            )
            .await
            .text()
        };

        // Looking shows the org, the role and both forms, and joins nobody.
        let page = app.get(&format!("/invitations/{for_bob}")).await;
        assert_eq!(page.status, 200);
        let html = page.text();
        assert!(html.contains("Acme &lt;b&gt;"), "escaped org name: {html}");
        assert!(
            html.contains("member") && html.contains("bob@example.com"),
            "{html}"
        );
        assert!(
            html.contains("name=\"login\"") && html.contains("value=\"register\""),
            "{html}"
        );
        assert!(!html.contains("send POST"), "{html}");
        assert!(!members().await.contains("bob"));

        // A wrong password keeps the page, says why, and spends nothing.
        let path = format!("/invitations/{for_bob}");
        let wrong = post_form(&app, &path, "action=join&login=bob&password=nope".into()).await;
        assert_eq!(wrong.status, 401, "{}", wrong.text());
        assert!(
            wrong.text().contains("invalid credentials") && wrong.text().contains("name=\"login\"")
        );
        assert!(!members().await.contains("bob"));

        let joined = post_form(
            &app,
            &path,
            "action=join&login=bob&password=correct+horse+battery".into(),
        )
        .await;
        assert_eq!(joined.status, 200, "{}", joined.text());
        assert!(
            joined.text().contains("You are now a member"),
            "{}",
            joined.text()
        );
        assert!(members().await.contains("\"bob\""));
        // Single use: the link now says it does not work.
        let spent = app.get(&path).await;
        assert_eq!(spent.status, 404);
        assert!(spent.text().contains("does not work"), "{}", spent.text());

        // A newcomer registers through the page and lands in the org.
        let path = format!("/invitations/{for_newbie}");
        let weak = post_form(
            &app,
            &path,
            "action=register&email=newbie%40example.com&username=newbie&password=short".into(),
        )
        .await;
        assert_eq!(weak.status, 422, "{}", weak.text());
        assert!(weak.text().contains("password"), "{}", weak.text());
        let made = post_form(
            &app,
            &path,
            "action=register&email=newbie%40example.com&username=newbie&password=a+good+long+one"
                .into(),
        )
        .await;
        assert_eq!(made.status, 200, "{}", made.text());
        assert_eq!(app.login("newbie", "a good long one").await.status, 200);
        let listed = members().await;
        assert!(
            listed.contains("\"newbie\"") && listed.contains("viewer"),
            "{listed}"
        );

        assert_eq!(app.get("/invitations/cri_unknown").await.status, 404);
        let bad = post_form(&app, "/invitations/cri_unknown", "action=dance".into()).await;
        assert_eq!(bad.status, 404, "{}", bad.text());
    }
);
