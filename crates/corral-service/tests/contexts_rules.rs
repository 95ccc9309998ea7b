//! Interpreter contexts' rules, driven without HTTP: what is refused
//! before any sandbox is reached.

mod common;

use corral_service::ServiceError;
use corral_service::audit::ClientInfo;
use corral_service::contexts;
use corral_types::contexts::{CreateContextRequest, RunCodeRequest};

#[tokio::test]
async fn an_unsupported_language_is_refused_naming_the_field() {
    let t = common::TestService::new().await;
    let (_, caller) = t.user("alice", "free").await;
    let request = CreateContextRequest {
        language: "ruby".to_owned(),
        cwd: None,
        env: Default::default(),
    };
    let refused = contexts::create(
        &t.service,
        &caller,
        &ClientInfo::default(),
        "sbx_x",
        request,
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&refused, ServiceError::Validation(e) if e[0].field == "language" && e[0].message.contains("python")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_zero_time_limit_is_refused_and_another_orgs_sandbox_is_not_found() {
    let t = common::TestService::new().await;
    let (user, caller) = t.user("bob", "free").await;
    let run = |timeout_ms| RunCodeRequest {
        code: "1".to_owned(),
        timeout_ms,
    };
    let refused = contexts::run(
        &t.service,
        &caller,
        &user,
        &ClientInfo::default(),
        "sbx_x",
        "ctx_x",
        run(Some(0)),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&refused, ServiceError::Validation(e) if e[0].field == "timeout_ms"),
        "{refused:?}"
    );
    for result in [
        contexts::run(
            &t.service,
            &caller,
            &user,
            &ClientInfo::default(),
            "sbx_x",
            "ctx_x",
            run(None),
        )
        .await
        .map(|_| ()),
        contexts::list(&t.service, &caller, "sbx_x")
            .await
            .map(|_| ()),
        contexts::remove(
            &t.service,
            &caller,
            &ClientInfo::default(),
            "sbx_x",
            "ctx_x",
        )
        .await,
    ] {
        assert!(
            matches!(&result, Err(ServiceError::NotFound(m)) if m == "sandbox not found"),
            "{result:?}"
        );
    }
}
