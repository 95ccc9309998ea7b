//! API keys, driven without HTTP: the fields a key is made of, the org it
//! acts in, the plan's number of keys, and what authenticates with one.

mod common;

use corral_core::auth::{Credential, OrgRole, Scope};
use corral_core::clock::ManualClock;
use corral_service::audit::ClientInfo;
use corral_service::credentials::sha256_hex;
use corral_service::{ServiceError, api_keys, sessions};
use corral_types::identity::{CreateApiKeyRequest, UpdateApiKeyRequest};

use common::{TestService, member_of};

const START_MS: i64 = 1_800_000_000_000;

fn request(name: &str, scopes: &[&str]) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        name: name.to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        org_id: None,
    }
}

fn field_of(error: ServiceError) -> String {
    match error {
        ServiceError::Validation(fields) => fields[0].field.clone(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_key_needs_a_name_known_scopes_and_a_future_expiry() {
    let t = TestService::for_accounts(ManualClock::at(START_MS), |_| {}).await;
    let client = ClientInfo::default();
    let (_, alice) = t.user("alice", "free").await;
    let mut past = request("ci", &["sandboxes:read"]);
    past.expires_at = Some("2020-01-01T00:00:00Z".to_owned());
    let mut garbled = request("ci", &["sandboxes:read"]);
    garbled.expires_at = Some("tomorrow".to_owned());
    for (input, field) in [
        (request("  ", &["sandboxes:read"]), "name"),
        (request(&"n".repeat(101), &["sandboxes:read"]), "name"),
        (request("ci", &[]), "scopes"),
        (request("ci", &["sandboxes:read", "root"]), "scopes[1]"),
        (past, "expires_at"),
        (garbled, "expires_at"),
    ] {
        let refused = api_keys::create(&t.service, &alice, &client, input)
            .await
            .unwrap_err();
        assert_eq!(field_of(refused), field);
    }
    let created = api_keys::create(
        &t.service,
        &alice,
        &client,
        request(" ci ", &["sandboxes:read", "sandboxes:read"]),
    )
    .await
    .unwrap();
    assert_eq!(created.api_key.name, "ci");
    assert_eq!(
        created.api_key.scopes,
        ["sandboxes:read"],
        "repeats dropped"
    );
    assert!(created.key.starts_with(&created.api_key.prefix));
}

#[tokio::test]
async fn a_key_acts_in_an_org_of_its_owner_only() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let (_, alice) = t.user("alice", "free").await;
    let (bob, _) = t.user("bob", "free").await;
    let mut elsewhere = request("ci", &["sandboxes:read"]);
    elsewhere.org_id = Some(bob.personal_org_id.clone());
    let refused = api_keys::create(&t.service, &alice, &client, elsewhere)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::NotFound(m) if m == "organization not found"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_plan_caps_the_number_of_keys() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let (user, alice) = t.user("alice", "free").await;
    let cap = t.service.plans[&user.plan_id]
        .max_api_keys
        .expect("the free plan caps keys");
    for i in 0..cap {
        api_keys::create(
            &t.service,
            &alice,
            &client,
            request(&format!("k{i}"), &["sandboxes:read"]),
        )
        .await
        .unwrap();
    }
    let refused = api_keys::create(
        &t.service,
        &alice,
        &client,
        request("one more", &["sandboxes:read"]),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Quota { detail, .. } if detail.contains("API keys")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_key_authenticates_with_its_scopes_until_turned_off_or_revoked() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let user = t.account("alice", "free").await;
    let alice = member_of(&user, &user.personal_org_id, OrgRole::Owner);
    let created = api_keys::create(
        &t.service,
        &alice,
        &client,
        request("ci", &["sandboxes:read"]),
    )
    .await
    .unwrap();
    let hash = sha256_hex(&created.key);

    let (principal, owner, _) = sessions::key_principal(&t.service, &hash).await.unwrap();
    assert_eq!(owner.id, user.id);
    assert!(
        matches!(&principal.credential, Credential::ApiKey { scopes, .. } if scopes == &[Scope::SandboxesRead]),
        "{principal:?}"
    );

    let off = UpdateApiKeyRequest { is_active: false };
    api_keys::update(&t.service, &alice, &client, &created.api_key.id, off)
        .await
        .unwrap();
    let refused = sessions::key_principal(&t.service, &hash)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Unauthorized(m) if m.contains("disabled")),
        "{refused:?}"
    );

    // A signed-in caller revokes by id; "the current key" needs a key.
    let refused = api_keys::revoke_current(&t.service, &alice, &client)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ServiceError::BadRequest(_)),
        "{refused:?}"
    );
    api_keys::revoke_current(&t.service, &principal, &client)
        .await
        .unwrap();
    let refused = sessions::key_principal(&t.service, &hash)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Unauthorized(m) if m == "invalid API key"),
        "{refused:?}"
    );
    assert!(api_keys::list(&t.service, &alice).await.unwrap().is_empty());
    let refused = api_keys::revoke(&t.service, &alice, &client, &created.api_key.id)
        .await
        .unwrap_err();
    assert!(matches!(refused, ServiceError::NotFound(_)), "{refused:?}");
}

#[tokio::test]
async fn a_key_cannot_create_an_org_whatever_its_scopes() {
    let t = TestService::new().await;
    let client = ClientInfo::default();
    let user = t.account("alice", "free").await;
    let alice = member_of(&user, &user.personal_org_id, OrgRole::Owner);
    let created = api_keys::create(&t.service, &alice, &client, request("ci", &["orgs:write"]))
        .await
        .unwrap();
    let (with_key, _, _) = sessions::key_principal(&t.service, &sha256_hex(&created.key))
        .await
        .unwrap();
    let refused = corral_service::orgs::create(
        &t.service,
        &with_key,
        &client,
        corral_types::identity::OrgRequest {
            name: "side project".to_owned(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::Forbidden(m) if m.contains("cannot create one")),
        "{refused:?}"
    );
    assert_eq!(
        corral_service::orgs::list(&t.service, &alice)
            .await
            .unwrap()
            .len(),
        1,
        "only the personal org"
    );
}
