//! Organizations, members and invitations, driven without HTTP: who may
//! change whom, an org keeps an owner, an invitation works once, before
//! it expires, for the invited address only.

mod common;

use corral_core::auth::OrgRole;
use corral_core::clock::ManualClock;
use corral_service::audit::ClientInfo;
use corral_service::{ServiceError, orgs};
use corral_types::identity::{CreateInvitationRequest, OrgRequest, UpdateMemberRequest};

use common::{TestService, member_of};

const START_MS: i64 = 1_800_000_000_000;

/// An org "team" owned by `owner`, and `members` invited into it with
/// their roles (each accepted the invitation mailed to their address).
#[expect(
    clippy::unwrap_used,
    reason = "test helper: a failed step fails the test"
)]
async fn team(
    t: &TestService,
    owner: &corral_store::User,
    members: &[(&corral_store::User, OrgRole)],
) -> String {
    let client = ClientInfo::default();
    let owner_principal = member_of(owner, &owner.personal_org_id, OrgRole::Owner);
    let org = orgs::create(
        &t.service,
        &owner_principal,
        &client,
        OrgRequest {
            name: " team ".to_owned(),
        },
    )
    .await
    .unwrap();
    assert_eq!(org.name, "team");
    let in_org = member_of(owner, &org.id, OrgRole::Owner);
    for (user, role) in members {
        let invitation = orgs::invite(
            &t.service,
            &in_org,
            &client,
            CreateInvitationRequest {
                email: user.email.to_uppercase(),
                role: Some(role.as_str().to_owned()),
            },
        )
        .await
        .unwrap();
        let joined = orgs::join_by_invitation(&t.service, &client, user, &invitation.token)
            .await
            .unwrap();
        assert_eq!(joined.role, role.as_str());
    }
    org.id
}

#[tokio::test]
async fn a_viewer_cannot_remove_others_but_may_leave() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let (owner, bob, carol) = (
        t.account("owner", "free").await,
        t.account("bob", "free").await,
        t.account("carol", "free").await,
    );
    let org = team(
        &t,
        &owner,
        &[(&bob, OrgRole::Viewer), (&carol, OrgRole::Member)],
    )
    .await;
    let bob_in_org = member_of(&bob, &org, OrgRole::Viewer);

    let refused = orgs::remove_member(&t.service, &bob_in_org, &client, &carol.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Forbidden(m) if m.contains("admin or owner")),
        "{refused:?}"
    );
    orgs::remove_member(&t.service, &bob_in_org, &client, &bob.id)
        .await
        .unwrap();
    let left: Vec<_> = orgs::members(&t.service, &member_of(&owner, &org, OrgRole::Owner))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.username)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&"bob".to_owned()), "{left:?}");
}

#[tokio::test]
async fn owners_are_managed_by_owners_and_an_org_keeps_one() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let (owner, admin) = (
        t.account("owner", "free").await,
        t.account("admin", "free").await,
    );
    let org = team(&t, &owner, &[(&admin, OrgRole::Admin)]).await;
    let as_admin = member_of(&admin, &org, OrgRole::Admin);
    let as_owner = member_of(&owner, &org, OrgRole::Owner);
    let role = |role: &str| UpdateMemberRequest {
        role: role.to_owned(),
    };

    for attempt in [
        orgs::update_member(&t.service, &as_admin, &client, &owner.id, role("member"))
            .await
            .map(drop),
        orgs::update_member(&t.service, &as_admin, &client, &admin.id, role("owner"))
            .await
            .map(drop),
        orgs::remove_member(&t.service, &as_admin, &client, &owner.id).await,
    ] {
        let refused = attempt.unwrap_err();
        assert!(
            matches!(&refused, ServiceError::Forbidden(m) if m.contains("only an owner")),
            "{refused:?}"
        );
    }
    let refused = orgs::remove_member(&t.service, &as_owner, &client, &owner.id)
        .await
        .unwrap_err();
    assert!(matches!(refused, ServiceError::Conflict(_)), "{refused:?}");
    let refused = orgs::update_member(&t.service, &as_owner, &client, &owner.id, role("admin"))
        .await
        .unwrap_err();
    assert!(matches!(refused, ServiceError::Conflict(_)), "{refused:?}");
    let refused = orgs::update_member(&t.service, &as_owner, &client, &admin.id, role("boss"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Validation(f) if f[0].field == "role"),
        "{refused:?}"
    );

    // With a second owner, the first may step down.
    orgs::update_member(&t.service, &as_owner, &client, &admin.id, role("owner"))
        .await
        .unwrap();
    let demoted = orgs::update_member(&t.service, &as_owner, &client, &owner.id, role("member"))
        .await
        .unwrap();
    assert_eq!(demoted.role, "member");
}

#[tokio::test]
async fn only_an_owner_invites_an_owner_and_a_personal_org_is_never_deleted() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let (owner, admin) = (
        t.account("owner", "free").await,
        t.account("admin", "free").await,
    );
    let org = team(&t, &owner, &[(&admin, OrgRole::Admin)]).await;
    let refused = orgs::invite(
        &t.service,
        &member_of(&admin, &org, OrgRole::Admin),
        &client,
        CreateInvitationRequest {
            email: "new@example.com".to_owned(),
            role: Some("owner".to_owned()),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(refused, ServiceError::Forbidden(_)), "{refused:?}");

    let personal = member_of(&owner, &owner.personal_org_id, OrgRole::Owner);
    let refused = orgs::remove(&t.service, &personal, &client)
        .await
        .unwrap_err();
    assert!(matches!(refused, ServiceError::Conflict(_)), "{refused:?}");
    orgs::remove(
        &t.service,
        &member_of(&owner, &org, OrgRole::Owner),
        &client,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_invitation_is_for_the_invited_address_once_and_before_it_expires() {
    let clock = ManualClock::at(START_MS);
    let t = TestService::for_accounts(clock.clone(), |_| {}).await;
    let client = ClientInfo::default();
    let (owner, bob, eve) = (
        t.account("owner", "free").await,
        t.account("bob", "free").await,
        t.account("eve", "free").await,
    );
    let org = team(&t, &owner, &[]).await;
    let as_owner = member_of(&owner, &org, OrgRole::Owner);
    let invite = || {
        orgs::invite(
            &t.service,
            &as_owner,
            &client,
            CreateInvitationRequest {
                email: bob.email.clone(),
                role: None,
            },
        )
    };
    let not_found = |result: Result<_, ServiceError>| {
        let refused = result.unwrap_err();
        assert!(
            matches!(&refused, ServiceError::NotFound(m) if m == "invitation not found"),
            "{refused:?}"
        );
    };

    let first = invite().await.unwrap();
    assert_eq!(first.invitation.role, "member");
    let preview = orgs::preview_invitation(&t.service, &first.token)
        .await
        .unwrap()
        .expect("an open invitation shows");
    assert_eq!(preview.org_name, "team");
    not_found(orgs::join_by_invitation(&t.service, &client, &eve, &first.token).await);
    clock.advance(orgs::INVITATION_TTL_MS + 1);
    assert!(
        orgs::preview_invitation(&t.service, &first.token)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    not_found(orgs::join_by_invitation(&t.service, &client, &bob, &first.token).await);

    let second = invite().await.unwrap();
    orgs::join_by_invitation(&t.service, &client, &bob, &second.token)
        .await
        .unwrap();
    not_found(orgs::join_by_invitation(&t.service, &client, &bob, &second.token).await);
}
