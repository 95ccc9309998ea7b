//! Platform administration, driven without HTTP: who may change whom, and
//! the audit log's filters.

mod common;

use corral_core::auth::{OrgRole, PlatformRole};
use corral_service::admin::{self, AuditRange, AuditSearch};
use corral_service::audit::ClientInfo;
use corral_service::{ServiceError, accounts};
use corral_types::identity::AdminUpdateUserRequest;

use common::{ACCOUNT_PASSWORD, TestService, member_of};

fn change(role: Option<&str>, is_active: Option<bool>) -> AdminUpdateUserRequest {
    AdminUpdateUserRequest {
        plan: None,
        role: role.map(str::to_owned),
        is_active,
    }
}

#[tokio::test]
async fn only_a_super_admin_touches_administrators_and_nobody_demotes_themselves() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let root = accounts::create_checked(
        &t.service,
        "root@example.com",
        "root",
        ACCOUNT_PASSWORD,
        PlatformRole::SuperAdmin,
        "free",
    )
    .await
    .unwrap();
    let admin = accounts::create_checked(
        &t.service,
        "admin@example.com",
        "admin",
        ACCOUNT_PASSWORD,
        PlatformRole::Admin,
        "free",
    )
    .await
    .unwrap();
    let user = t.account("user", "free").await;
    let as_admin = member_of(&admin, &admin.personal_org_id, OrgRole::Owner);
    let as_root = member_of(&root, &root.personal_org_id, OrgRole::Owner);

    for (target, input) in [
        (&user.id, change(Some("admin"), None)),
        (&root.id, change(None, Some(false))),
    ] {
        let refused = admin::update_user(&t.service, &as_admin, &client, target, input)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, ServiceError::Forbidden(m) if m.contains("super admin")),
            "{refused:?}"
        );
    }
    let refused = admin::update_user(
        &t.service,
        &as_root,
        &client,
        &root.id,
        change(Some("user"), None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Forbidden(m) if m.contains("your own role")),
        "{refused:?}"
    );
    let refused = admin::update_user(
        &t.service,
        &as_admin,
        &client,
        &user.id,
        change(Some("god"), None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Validation(f) if f[0].field == "role"),
        "{refused:?}"
    );
    let mut no_plan = change(None, None);
    no_plan.plan = Some("platinum".to_owned());
    let refused = admin::update_user(&t.service, &as_admin, &client, &user.id, no_plan)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Validation(f) if f[0].field == "plan"),
        "{refused:?}"
    );

    let disabled = admin::update_user(
        &t.service,
        &as_admin,
        &client,
        &user.id,
        change(None, Some(false)),
    )
    .await
    .unwrap();
    assert!(!disabled.is_active);
    let promoted = admin::update_user(
        &t.service,
        &as_root,
        &client,
        &user.id,
        change(Some("admin"), None),
    )
    .await
    .unwrap();
    assert_eq!(promoted.role, "admin");
}

#[tokio::test]
async fn audit_times_and_page_sizes_are_checked_and_pages_chain() {
    let t = TestService::new().await;
    for (search, field) in [
        (
            AuditSearch {
                since: Some("yesterday".to_owned()),
                ..AuditSearch::default()
            },
            "since",
        ),
        (
            AuditSearch {
                limit: Some(201),
                ..AuditSearch::default()
            },
            "limit",
        ),
    ] {
        let refused = admin::audit_log(&t.service, search).await.unwrap_err();
        assert!(
            matches!(&refused, ServiceError::Validation(f) if f[0].field == field),
            "{refused:?}"
        );
    }
    let range = AuditRange {
        until: Some("soon".to_owned()),
        ..AuditRange::default()
    };
    let refused = admin::audit_stats(&t.service, range).await.unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Validation(f) if f[0].field == "until"),
        "{refused:?}"
    );

    // Three audited actions (account creation audits nothing; orgs do).
    let owner = t.account("owner", "free").await;
    let principal = member_of(&owner, &owner.personal_org_id, OrgRole::Owner);
    for name in ["a", "b", "c"] {
        corral_service::orgs::create(
            &t.service,
            &principal,
            &ClientInfo::default(),
            corral_types::identity::OrgRequest {
                name: name.to_owned(),
            },
        )
        .await
        .unwrap();
    }
    let first = admin::audit_log(
        &t.service,
        AuditSearch {
            action: Some("org.create".to_owned()),
            limit: Some(2),
            ..AuditSearch::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = admin::audit_log(
        &t.service,
        AuditSearch {
            action: Some("org.create".to_owned()),
            cursor: first.next_cursor,
            limit: Some(2),
            ..AuditSearch::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next_cursor, None);
    let stats = admin::audit_stats(&t.service, AuditRange::default())
        .await
        .unwrap();
    assert_eq!(stats.total, 3);
}
