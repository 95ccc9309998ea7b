//! The sandbox rules every surface shares, driven without HTTP.

mod common;

use corral_service::ServiceError;
use corral_service::sandbox::{command_argv, find, running};

#[tokio::test]
async fn another_orgs_sandbox_is_not_found_and_a_missing_one_neither() {
    let t = common::TestService::new().await;
    let (_, alice) = t.user("alice", "free").await;
    for lookup in [
        find(&t.service, &alice, "sbx_missing").await,
        running(&t.service, &alice, "sbx_missing").await,
    ] {
        assert!(
            matches!(lookup, Err(ServiceError::NotFound(ref m)) if m == "sandbox not found"),
            "{lookup:?}"
        );
    }
}

#[test]
fn a_command_is_a_shell_line_or_an_argv_never_both_or_neither() {
    assert_eq!(
        command_argv(Some("echo hi".into()), None).unwrap(),
        ["/bin/sh", "-c", "echo hi"]
    );
    assert_eq!(
        command_argv(None, Some(vec!["true".into()])).unwrap(),
        ["true"]
    );
    for (command, argv) in [
        (None, None),
        (Some("  ".into()), None),
        (None, Some(vec![])),
        (Some("x".into()), Some(vec!["y".into()])),
    ] {
        let refused = command_argv(command, argv).unwrap_err();
        assert!(
            matches!(&refused, ServiceError::Validation(fields) if fields[0].field == "command"),
            "{refused:?}"
        );
    }
}
