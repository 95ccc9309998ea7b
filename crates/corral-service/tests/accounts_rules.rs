//! Accounts and sign-in, driven without HTTP: the field rules, the lockout,
//! tokens and what a password change ends.

mod common;

use corral_core::auth::PlatformRole;
use corral_core::clock::ManualClock;
use corral_service::audit::ClientInfo;
use corral_service::config::Registration;
use corral_service::{ServiceError, accounts, sessions};
use corral_types::identity::{ChangePasswordRequest, LoginRequest, RegisterRequest};

use common::{ACCOUNT_PASSWORD, TestService};

const START_MS: i64 = 1_800_000_000_000;

fn login(name: &str, password: &str) -> LoginRequest {
    LoginRequest {
        login: name.to_owned(),
        password: password.to_owned(),
    }
}

fn fields(error: &ServiceError) -> Vec<&str> {
    match error {
        ServiceError::Validation(fields) => fields.iter().map(|f| f.field.as_str()).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn every_bad_field_of_a_new_account_is_named_at_once() {
    let t = TestService::new().await;
    let refused = accounts::create_checked(
        &t.service,
        "not an address",
        "x",
        "short",
        PlatformRole::User,
        "free",
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&refused), ["email", "username", "password"]);

    let refused = accounts::create_checked(
        &t.service,
        "ok@example.com",
        "fine_name",
        "fine_name",
        PlatformRole::User,
        "free",
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&refused), ["password"], "the username as password");
}

#[tokio::test]
async fn a_taken_username_or_email_is_a_conflict_and_emails_are_normalized() {
    let t = TestService::new().await;
    t.account("alice", "free").await;
    for (email, username) in [
        ("other@example.com", "alice"),
        ("  ALICE@Example.com ", "alice2"),
    ] {
        let taken = accounts::create_checked(
            &t.service,
            email,
            username,
            ACCOUNT_PASSWORD,
            PlatformRole::User,
            "free",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(taken, ServiceError::Conflict(_)),
            "{email} {username}: {taken:?}"
        );
    }
}

#[tokio::test]
async fn registration_follows_the_servers_setting() {
    let register = |name: &str, token: Option<&str>| RegisterRequest {
        email: format!("{name}@example.com"),
        username: name.to_owned(),
        password: ACCOUNT_PASSWORD.to_owned(),
        invitation_token: token.map(str::to_owned),
    };
    let client = ClientInfo::default();

    let open = TestService::new().await;
    let user = accounts::register(&open.service, &client, register("alice", None))
        .await
        .unwrap();
    assert_eq!((user.plan.as_str(), user.role.as_str()), ("free", "user"));
    assert!(!user.email_verified, "verified only by the mailed link");

    for (mode, message) in [
        (Registration::Closed, "closed"),
        (Registration::InviteOnly, "by invitation only"),
    ] {
        let t = TestService::for_accounts(ManualClock::at(START_MS), |c| {
            c.auth.registration = mode;
        })
        .await;
        let refused = accounts::register(&t.service, &client, register("bob", None))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, ServiceError::Forbidden(m) if m.contains(message)),
            "{mode:?}: {refused:?}"
        );
    }

    let invite_only = TestService::for_accounts(ManualClock::at(START_MS), |c| {
        c.auth.registration = Registration::InviteOnly;
    })
    .await;
    let refused = accounts::register(
        &invite_only.service,
        &client,
        register("bob", Some("cri_unknown")),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&refused), ["invitation_token"]);
}

#[tokio::test]
async fn five_failed_sign_ins_lock_the_name_with_a_retry_time_then_the_lock_ends() {
    let clock = ManualClock::at(START_MS);
    let t = TestService::for_accounts(clock.clone(), |_| {}).await;
    t.account("alice", "free").await;
    let client = ClientInfo::default();
    for attempt in 1..=sessions::LOCK_AFTER_FAILURES {
        let refused = sessions::check_sign_in(&t.service, &client, login("alice", "wrong"))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, ServiceError::Unauthorized(ref m) if m == "invalid credentials"),
            "attempt {attempt}: {refused:?}"
        );
    }
    // Locked now, even with the right password (and for any spelling of the name).
    let locked = sessions::check_sign_in(&t.service, &client, login(" ALICE ", ACCOUNT_PASSWORD))
        .await
        .unwrap_err();
    match locked {
        ServiceError::RateLimited {
            retry_after_secs, ..
        } => assert_eq!(retry_after_secs, 30),
        other => panic!("expected a lock, got {other:?}"),
    }
    clock.advance(30_001);
    let user = sessions::check_sign_in(&t.service, &client, login("alice", ACCOUNT_PASSWORD))
        .await
        .unwrap();
    assert_eq!(user.username, "alice");
}

#[test]
fn the_lock_doubles_from_thirty_seconds_up_to_an_hour() {
    let locks: Vec<_> = (4..=13).map(sessions::lock_ms).collect();
    assert_eq!(
        locks,
        [
            None,
            Some(30_000),
            Some(60_000),
            Some(120_000),
            Some(240_000),
            Some(480_000),
            Some(960_000),
            Some(1_920_000),
            Some(3_600_000),
            Some(3_600_000)
        ]
    );
}

#[tokio::test]
async fn an_unknown_name_and_a_disabled_account_are_refused_like_a_wrong_password() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let alice = t.account("alice", "free").await;
    t.service
        .store
        .update_user_admin(t.service.clock.now_ms(), &alice.id, None, None, Some(false))
        .await
        .unwrap();
    for name in ["nobody", "alice"] {
        let refused = sessions::check_sign_in(&t.service, &client, login(name, ACCOUNT_PASSWORD))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, ServiceError::Unauthorized(ref m) if m == "invalid credentials"),
            "{name}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_refresh_token_works_once_and_its_reuse_revokes_the_sign_in() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    t.account("alice", "free").await;
    let first = sessions::login(&t.service, &client, login("alice", ACCOUNT_PASSWORD))
        .await
        .unwrap();
    let second = sessions::refresh(&t.service, &client, &first.refresh_token)
        .await
        .unwrap();
    let reused = sessions::refresh(&t.service, &client, &first.refresh_token)
        .await
        .unwrap_err();
    assert!(
        matches!(&reused, ServiceError::Unauthorized(m) if m.contains("already used")),
        "{reused:?}"
    );
    // The reuse ended the whole sign-in: the newer token is revoked too.
    let revoked = sessions::refresh(&t.service, &client, &second.refresh_token)
        .await
        .unwrap_err();
    assert!(
        matches!(&revoked, ServiceError::Unauthorized(m) if m.contains("revoked")),
        "{revoked:?}"
    );
}

#[tokio::test]
async fn a_password_change_needs_the_current_one_and_ends_every_sign_in() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let (_, alice) = {
        let user = t.account("alice", "free").await;
        let principal = common::member_of(
            &user,
            &user.personal_org_id,
            corral_core::auth::OrgRole::Owner,
        );
        (user, principal)
    };
    let tokens = sessions::login(&t.service, &client, login("alice", ACCOUNT_PASSWORD))
        .await
        .unwrap();
    let browser = sessions::start_session(&t.service, &client, login("alice", ACCOUNT_PASSWORD))
        .await
        .unwrap();
    let change = |current: &str, new: &str| ChangePasswordRequest {
        current_password: current.to_owned(),
        new_password: new.to_owned(),
    };

    let wrong = accounts::change_password(
        &t.service,
        &alice,
        &client,
        change("wrong", "a new long password"),
    )
    .await
    .unwrap_err();
    assert!(matches!(wrong, ServiceError::Forbidden(_)), "{wrong:?}");
    let weak = accounts::change_password(
        &t.service,
        &alice,
        &client,
        change(ACCOUNT_PASSWORD, "short"),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&weak), ["new_password"]);

    accounts::change_password(
        &t.service,
        &alice,
        &client,
        change(ACCOUNT_PASSWORD, "a new long password"),
    )
    .await
    .unwrap();
    let revoked = sessions::refresh(&t.service, &client, &tokens.refresh_token)
        .await
        .unwrap_err();
    assert!(
        matches!(&revoked, ServiceError::Unauthorized(m) if m.contains("revoked")),
        "{revoked:?}"
    );
    let ended = sessions::current_session(&t.service, &browser.user, Some(browser.token.clone()))
        .await
        .unwrap_err();
    assert!(matches!(ended, ServiceError::Unauthorized(_)), "{ended:?}");
    sessions::check_sign_in(&t.service, &client, login("alice", "a new long password"))
        .await
        .unwrap();
}
