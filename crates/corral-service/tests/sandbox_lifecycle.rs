//! The sandbox use cases driven without HTTP, against real runc (root):
//! create, list, stop, start, exec, remove; the plan's caps; other orgs.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use corral_service::ServiceError;
use corral_service::audit::ClientInfo;
use corral_service::sandbox::exec::{ExecAnswer, exec};
use corral_service::sandbox::lifecycle::{self, ListQuery};
use corral_types::sandbox::{CreateSandboxRequest, ExecRequestBody, Resources};

fn client() -> ClientInfo {
    ClientInfo {
        ip: Some("127.0.0.1".into()),
        user_agent: Some("sandbox_lifecycle".into()),
    }
}

fn shell(command: &str) -> ExecRequestBody {
    serde_json::from_value(serde_json::json!({ "command": command })).unwrap()
}

#[tokio::test]
async fn a_sandbox_is_created_listed_stopped_started_and_removed_through_the_service() {
    let t = common::TestService::with_sandboxes().await;
    let (alice, caller) = t.user("alice", "basic").await;
    let s = &t.service;
    let created = lifecycle::create(
        s,
        &caller,
        &alice,
        &client(),
        CreateSandboxRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(created.state, "running", "{created:?}");
    let listed = lifecycle::list(s, &caller, ListQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].id, created.id);

    // /tmp is everyone's scratch space: sticky and writable by all.
    let ran = exec(
        s,
        &caller,
        &alice,
        &client(),
        &created.id,
        shell("stat -c %a /tmp; echo hi > /tmp/kept"),
        false,
    )
    .await
    .unwrap();
    let ExecAnswer::Done(result) = ran else {
        panic!("not streaming, yet a stream");
    };
    assert_eq!(result.stdout, "1777\n", "{result:?}");

    let stopped = lifecycle::stop(s, &caller, &client(), &created.id)
        .await
        .unwrap();
    assert_eq!(stopped.state, "stopped");
    let started = lifecycle::start(s, &caller, &client(), &created.id)
        .await
        .unwrap();
    assert_eq!(started.state, "running");
    let ran = exec(
        s,
        &caller,
        &alice,
        &client(),
        &created.id,
        shell("cat /tmp/kept"),
        false,
    )
    .await
    .unwrap();
    let ExecAnswer::Done(result) = ran else {
        panic!("not streaming, yet a stream");
    };
    assert_eq!(
        result.stdout, "hi\n",
        "the disk outlives a stop: {result:?}"
    );

    lifecycle::remove(s, &caller, &client(), &created.id)
        .await
        .unwrap();
    let gone = lifecycle::show(s, &caller, &created.id).await;
    assert!(matches!(gone, Err(ServiceError::NotFound(_))), "{gone:?}");
    assert!(s.sandboxes.containers().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_create_beyond_the_plans_caps_is_refused_naming_the_field() {
    let t = common::TestService::new().await;
    let (alice, caller) = t.user("alice", "free").await;
    for (resources, field) in [
        (
            Resources {
                memory_mb: Some(100_000),
                ..Resources::default()
            },
            "resources.memory_mb",
        ),
        (
            Resources {
                cpu: Some(64.0),
                ..Resources::default()
            },
            "resources.cpu",
        ),
        (
            Resources {
                disk_mb: Some(1 << 30),
                ..Resources::default()
            },
            "resources.disk_mb",
        ),
        (
            Resources {
                pids: Some(1 << 20),
                ..Resources::default()
            },
            "resources.pids",
        ),
    ] {
        let body = CreateSandboxRequest {
            resources,
            ..CreateSandboxRequest::default()
        };
        let refused = lifecycle::create(&t.service, &caller, &alice, &client(), body).await;
        assert!(
            matches!(&refused, Err(ServiceError::Validation(fields)) if fields[0].field == field),
            "{field}: {refused:?}"
        );
    }
    let listed = lifecycle::list(&t.service, &caller, ListQuery::default())
        .await
        .unwrap();
    assert!(listed.items.is_empty(), "nothing was made: {listed:?}");
}

#[tokio::test]
async fn another_orgs_sandbox_is_not_found_for_every_use_case() {
    let t = common::TestService::new().await;
    let (_, alice) = t.user("alice", "basic").await;
    let (_, bob) = t.user("bob", "basic").await;
    // A stopped record is enough: no use case below may reach the runtime.
    let record = t
        .service
        .store
        .create_sandbox(
            t.service.clock.now_ms(),
            corral_store::NewSandbox {
                id: None,
                running: false,
                org_id: alice.org_id.clone(),
                created_by: alice.user_id.clone(),
                max_live: None,
                name: "alices".into(),
                image: "host".into(),
                memory_mb: 64,
                cpu_millicores: 1000,
                pids: 64,
                disk_mb: 16,
                env: "{}".into(),
                labels: "{}".into(),
                auto_stop_minutes: None,
                auto_delete_minutes: None,
            },
            |_| 1,
        )
        .await
        .unwrap();
    let id = record.id.as_str();
    let s = &t.service;
    let answers = [
        lifecycle::show(s, &bob, id).await.map(drop),
        lifecycle::stop(s, &bob, &client(), id).await.map(drop),
        lifecycle::start(s, &bob, &client(), id).await.map(drop),
        lifecycle::pause(s, &bob, &client(), id).await.map(drop),
        lifecycle::stats(s, &bob, id).await.map(drop),
        lifecycle::update(s, &bob, &client(), id, Default::default())
            .await
            .map(drop),
        lifecycle::remove(s, &bob, &client(), id).await,
    ];
    for answer in answers {
        assert!(
            matches!(answer, Err(ServiceError::NotFound(_))),
            "{answer:?}"
        );
    }
    let bobs = lifecycle::list(s, &bob, ListQuery::default())
        .await
        .unwrap();
    assert!(bobs.items.is_empty());
    assert!(
        lifecycle::show(s, &alice, id).await.is_ok(),
        "still alice's"
    );
}
