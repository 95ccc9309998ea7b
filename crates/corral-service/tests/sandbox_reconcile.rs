//! The reconciler against real runc (root): it removes only its own
//! orphans and those whose owner is gone, and it finds sandboxes started
//! under the old default paths.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::sync::Arc;

use corral_core::clock::SystemClock;
use corral_service::Service;
use corral_service::audit::ClientInfo;
use corral_service::sandbox::exec::{ExecAnswer, exec};
use corral_service::sandbox::lifecycle;
use corral_service::sandbox::limits_for;
use corral_service::sandboxes::Sandboxes;
use corral_types::sandbox::ExecRequestBody;

async fn start(sandboxes: &Sandboxes, id: &str, slot: i64) {
    let (manager, id) = (sandboxes.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || {
        manager.start(&id, slot, limits_for(64, 1000, 64, 16), "host")
    })
    .await
    .unwrap()
    .unwrap();
}

async fn containers(sandboxes: &Sandboxes) -> Vec<String> {
    let mut ids: Vec<String> = sandboxes
        .containers()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_restarted_server_leaves_a_running_workers_sandboxes_alone_until_it_ends() {
    let t = common::TestService::new().await;
    let config = common::sandbox_config(t.dir.path());
    let store = &t.service.store;
    let now = t.service.clock.now_ms();
    // `corral queue work` runs a judge's sandbox (no record) ...
    let worker = Sandboxes::new(&config);
    start(&worker, "judged", 7).await;
    // ... when `corral serve` on the same data directory (re)starts.
    let server = Sandboxes::new(&config);
    let done = server.reconcile(store, now, true).await.unwrap();
    assert_eq!(done.orphans, 0, "{done:?}");
    assert_eq!(containers(&server).await, ["corral-judged"]);
    let done = server.reconcile(store, now, false).await.unwrap();
    assert_eq!(done.orphans, 0, "{done:?}");

    // The worker ends without cleaning up (a crash): its sandbox is an orphan.
    drop(worker);
    let done = server.reconcile(store, now, true).await.unwrap();
    assert_eq!(done.orphans, 1, "{done:?}");
    assert!(containers(&server).await.is_empty());
}

#[tokio::test]
async fn a_sandbox_started_under_the_old_default_paths_is_found_after_an_upgrade() {
    let t = common::TestService::new().await;
    let data = t.dir.path();
    let config = common::sandbox_config(data);
    // Before sandbox state moved to memory, it lived in the data directory.
    let mut old = config.clone();
    old.sandbox.runtime_root = Some(data.join("runtime"));
    old.sandbox.dir = Some(data.join("sandboxes"));
    let before = Service::assemble(t.service.store.clone(), old.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    let (alice, caller) = t.user("alice", "basic").await;
    let client = ClientInfo::automatic();
    let kept = lifecycle::create(&before, &caller, &alice, &client, Default::default())
        .await
        .unwrap();
    let body: ExecRequestBody =
        serde_json::from_value(serde_json::json!({"command": "echo mine > /tmp/file"})).unwrap();
    exec(&before, &caller, &alice, &client, &kept.id, body, false)
        .await
        .unwrap();
    start(&before.sandboxes, "unrecorded", 9).await;
    assert_eq!(containers(&before.sandboxes).await.len(), 2);
    drop(before);

    // The upgraded server starts with today's defaults.
    let after = Service::assemble(t.service.store.clone(), config, Arc::new(SystemClock))
        .await
        .unwrap();
    let done = after
        .sandboxes
        .reconcile(&after.store, after.clock.now_ms(), true)
        .await
        .unwrap();
    assert_eq!((done.retired, done.failed), (2, 1), "{done:?}");
    let old_paths = Sandboxes::new(&old);
    assert!(
        containers(&old_paths).await.is_empty(),
        "nothing runs under the old paths"
    );
    assert!(!data.join("sandboxes").join(&kept.id).exists());

    // The recorded one kept its disk: a start brings it back with its files.
    let shown = lifecycle::show(&after, &caller, &kept.id).await.unwrap();
    assert_eq!(shown.state, "error", "{shown:?}");
    let started = lifecycle::start(&after, &caller, &client, &kept.id)
        .await
        .unwrap();
    assert_eq!(started.state, "running");
    let body: ExecRequestBody =
        serde_json::from_value(serde_json::json!({"command": "cat /tmp/file"})).unwrap();
    let ExecAnswer::Done(result) = exec(&after, &caller, &alice, &client, &kept.id, body, false)
        .await
        .unwrap()
    else {
        panic!("not streaming, yet a stream");
    };
    assert_eq!(result.stdout, "mine\n", "{result:?}");
    lifecycle::remove(&after, &caller, &client, &kept.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn with_an_explicit_runtime_root_todays_sandboxes_are_not_taken_for_old_ones() {
    let t = common::TestService::new().await;
    let mut config = common::sandbox_config(t.dir.path());
    // Only the runtime's root is set: it is the same before and after the
    // move of the default state, and what runs there is today's.
    config.sandbox.runtime_root = Some(t.dir.path().join("rt"));
    let service = Service::assemble(t.service.store.clone(), config, Arc::new(SystemClock))
        .await
        .unwrap();
    let (alice, caller) = t.user("alice", "basic").await;
    let client = ClientInfo::automatic();
    let created = lifecycle::create(&service, &caller, &alice, &client, Default::default())
        .await
        .unwrap();
    let done = service
        .sandboxes
        .reconcile(&service.store, service.clock.now_ms(), true)
        .await
        .unwrap();
    assert_eq!(
        (done.kept, done.retired, done.failed),
        (1, 0, 0),
        "{done:?}"
    );
    let shown = lifecycle::show(&service, &caller, &created.id)
        .await
        .unwrap();
    assert_eq!(shown.state, "running");
    lifecycle::remove(&service, &caller, &client, &created.id)
        .await
        .unwrap();
}
