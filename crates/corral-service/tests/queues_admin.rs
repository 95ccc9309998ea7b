//! Administration of the job queue, driven without HTTP.

mod common;

use corral_core::auth::PlatformRole;
use corral_service::ServiceError;
use corral_service::audit::ClientInfo;
use corral_service::queues::{self, JobSearch};

fn field_of(error: &ServiceError) -> Option<&str> {
    match error {
        ServiceError::Validation(errors) => errors.first().map(|e| e.field.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn bad_names_and_states_are_refused_and_only_a_failed_job_is_retried() {
    let t = common::TestService::new().await;
    let (_, mut admin) = t.user("root", "free").await;
    admin.platform_role = PlatformRole::Admin;
    let client = ClientInfo::default();

    let refused = queues::clear_queue(&t.service, &admin, &client, "Bad Name")
        .await
        .expect_err("refused");
    assert_eq!(field_of(&refused), Some("name"));
    let refused = queues::list_jobs(
        &t.service,
        JobSearch {
            state: Some("lost".to_owned()),
            ..JobSearch::default()
        },
    )
    .await
    .expect_err("refused");
    assert_eq!(field_of(&refused), Some("state"));
    let refused = queues::list_jobs(
        &t.service,
        JobSearch {
            queue: Some("no/slashes".to_owned()),
            ..JobSearch::default()
        },
    )
    .await
    .expect_err("refused");
    assert_eq!(field_of(&refused), Some("queue"));

    let id = t
        .service
        .queue
        .enqueue(corral_queue::NewJob::new(
            "test.nothing",
            serde_json::json!({}),
        ))
        .await
        .unwrap()
        .id()
        .to_owned();
    let pending = queues::retry_job(&t.service, &admin, &client, &id).await;
    assert!(
        matches!(&pending, Err(ServiceError::Conflict(m)) if m == "the job is pending, not failed"),
        "{pending:?}"
    );
    let missing = queues::job(&t.service, "job_missing").await;
    assert!(
        matches!(missing, Err(ServiceError::NotFound(_))),
        "{missing:?}"
    );
    let page = queues::list_jobs(&t.service, JobSearch::default())
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.next_cursor), (1, None));
}
