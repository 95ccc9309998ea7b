//! The library's rules, driven without HTTP: who sees, changes, deletes
//! and runs which snippet, and the checks on what a snippet holds.

mod common;

use corral_core::auth::PlatformRole;
use corral_service::ServiceError;
use corral_service::audit::ClientInfo;
use corral_service::library::{self, LibrarySearch};
use corral_service::submit::{self, Submitted};
use corral_types::executions::RunSnippetRequest;
use corral_types::library::{CreateSnippetRequest, UpdateSnippetRequest};

fn snippet(title: &str, is_public: bool) -> CreateSnippetRequest {
    CreateSnippetRequest {
        title: title.to_owned(),
        language: "bash".to_owned(),
        code: "echo hi".to_owned(),
        is_public,
        ..CreateSnippetRequest::default()
    }
}

fn is_not_found<T: std::fmt::Debug>(result: &Result<T, ServiceError>) -> bool {
    matches!(result, Err(ServiceError::NotFound(m)) if m == "snippet not found")
}

#[tokio::test]
async fn a_private_snippet_does_not_exist_for_another_org_and_a_public_one_is_read_only() {
    let t = common::TestService::new().await;
    let client = ClientInfo::default();
    let (owner_user, owner) = t.user("owner", "free").await;
    let (other_user, other) = t.user("other", "free").await;
    assert_ne!(owner.org_id, other.org_id);
    let private = library::create(
        &t.service,
        &owner,
        &owner_user,
        &client,
        snippet("mine", false),
    )
    .await
    .unwrap();
    let public = library::create(
        &t.service,
        &owner,
        &owner_user,
        &client,
        snippet("ours", true),
    )
    .await
    .unwrap();

    // The owner sees both; the other sees the public one only.
    assert!(library::show(&t.service, &owner, &private.id).await.is_ok());
    assert!(is_not_found(
        &library::show(&t.service, &other, &private.id).await
    ));
    assert_eq!(
        library::show(&t.service, &other, &public.id)
            .await
            .unwrap()
            .code,
        "echo hi"
    );
    let listed = library::list(&t.service, &other, LibrarySearch::default())
        .await
        .unwrap();
    let titles: Vec<&str> = listed.items.iter().map(|s| s.title.as_str()).collect();
    assert_eq!(titles, ["ours"]);

    // Nobody but the owner changes or deletes, not even a public one.
    let change = UpdateSnippetRequest {
        title: Some("taken".to_owned()),
        ..UpdateSnippetRequest::default()
    };
    assert!(is_not_found(
        &library::update(&t.service, &other, &client, &public.id, change.clone()).await
    ));
    assert!(is_not_found(
        &library::remove(&t.service, &other, &client, &public.id).await
    ));
    // Nor runs a private one.
    let run = submit::run_snippet(
        &t.service,
        &other,
        &other_user,
        &client,
        &private.id,
        RunSnippetRequest::default(),
    )
    .await;
    assert!(is_not_found(&run), "{run:?}");
    // A public one runs for anyone, in their own org (queued here: no wait).
    let run = submit::run_snippet(
        &t.service,
        &other,
        &other_user,
        &client,
        &public.id,
        RunSnippetRequest::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(run, Submitted::Queued(ref e) if e.language == "bash"),
        "{run:?}"
    );

    // The owner changes it; a platform administrator deletes it.
    let changed = library::update(&t.service, &owner, &client, &public.id, change)
        .await
        .unwrap();
    assert_eq!(changed.title, "taken");
    let (_, mut admin) = t.user("admin", "free").await;
    admin.platform_role = PlatformRole::Admin;
    library::remove(&t.service, &admin, &client, &public.id)
        .await
        .unwrap();
    assert!(is_not_found(
        &library::show(&t.service, &owner, &public.id).await
    ));
}

#[tokio::test]
async fn every_bad_field_is_named_at_once_and_the_plan_caps_the_count() {
    let t = common::TestService::new().await;
    let client = ClientInfo::default();
    let (user, caller) = t.user("writer", "free").await;
    let bad = CreateSnippetRequest {
        title: " ".to_owned(),
        language: "Python".to_owned(),
        code: String::new(),
        tags: vec!["ok".to_owned(), "Not Ok".to_owned()],
        ..CreateSnippetRequest::default()
    };
    let Err(ServiceError::Validation(errors)) =
        library::create(&t.service, &caller, &user, &client, bad).await
    else {
        panic!("not refused");
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["title", "language", "code", "tags[1]"]);

    // The free plan holds five snippets.
    for i in 0..5 {
        library::create(
            &t.service,
            &caller,
            &user,
            &client,
            snippet(&format!("s{i}"), false),
        )
        .await
        .unwrap();
    }
    let sixth = library::create(&t.service, &caller, &user, &client, snippet("s5", false)).await;
    assert!(
        matches!(&sixth, Err(ServiceError::Quota { detail, resets_at: None, .. }) if detail.contains("limit of 5")),
        "{sixth:?}"
    );
    let refused = library::list(
        &t.service,
        &caller,
        LibrarySearch {
            visibility: Some("everyone".to_owned()),
            ..LibrarySearch::default()
        },
    )
    .await;
    assert!(
        matches!(&refused, Err(ServiceError::Validation(e)) if e[0].field == "visibility"),
        "{refused:?}"
    );
}
