//! Submitting executions, driven without HTTP: the checks against the
//! language and the plan, the daily quota, waiting versus queueing,
//! batches, and a real run to a verdict.

mod common;

use corral_service::ServiceError;
use corral_service::audit::ClientInfo;
use corral_service::quota::{Daily, day_of};
use corral_service::submit::{self, HistorySearch, Submitted};
use corral_types::executions::{BatchRequest, CreateExecutionRequest, ExecutionLimits};

/// A bash program (bash is on every host the tests run on).
fn bash(code: &str) -> CreateExecutionRequest {
    CreateExecutionRequest {
        language: "bash".to_owned(),
        code: code.to_owned(),
        ..CreateExecutionRequest::default()
    }
}

/// The one field a validation error names.
fn refused_field(error: ServiceError) -> String {
    match error {
        ServiceError::Validation(errors) if errors.len() == 1 => errors[0].field.clone(),
        other => panic!("not a validation error of one field: {other:?}"),
    }
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_field_before_any_quota_is_taken() {
    let t = common::TestService::new().await;
    let (user, caller) = t.user("alice", "free").await;
    let client = ClientInfo::default();
    // The free plan runs for at most 30 s (wall clock: 4 × that) in at most 128 MiB.
    let limits = |set: fn(&mut ExecutionLimits)| {
        let mut request = bash("echo hi");
        set(&mut request.limits);
        request
    };
    let cases = [
        (
            CreateExecutionRequest {
                language: "cobol".to_owned(),
                ..bash("x")
            },
            "language",
        ),
        (bash(""), "code"),
        (bash(&"x".repeat(256 * 1024 + 1)), "code"),
        (
            CreateExecutionRequest {
                stdin: Some("x".repeat(1024 * 1024 + 1)),
                ..bash("cat")
            },
            "stdin",
        ),
        (limits(|l| l.time_ms = Some(30_001)), "limits.time_ms"),
        (limits(|l| l.memory_mb = Some(129)), "limits.memory_mb"),
        (
            limits(|l| l.wall_time_ms = Some(120_001)),
            "limits.wall_time_ms",
        ),
        (limits(|l| l.output_kb = Some(1025)), "limits.output_kb"),
        (
            CreateExecutionRequest {
                callback_url: Some("https://example.com/hook".to_owned()),
                ..bash("echo hi")
            },
            "callback_url",
        ),
    ];
    for (request, field) in cases {
        let refused = submit::submit(&t.service, &caller, &user, &client, &request)
            .await
            .expect_err("refused");
        assert_eq!(refused_field(refused), field);
    }
    let today = day_of(t.service.clock.now_ms());
    let used = t.service.store.daily_usage(&user.id, today).await.unwrap();
    assert!(used.iter().all(|(_, count)| *count == 0), "{used:?}");
}

#[tokio::test]
async fn a_used_up_daily_quota_is_a_quota_error_saying_when_it_resets() {
    let t = common::TestService::new().await;
    let (user, caller) = t.user("bob", "free").await;
    let today = day_of(t.service.clock.now_ms());
    // The free plan's ten executions of today, all used.
    t.service
        .store
        .add_daily(&user.id, Daily::Executions.name(), today, 10)
        .await
        .unwrap();
    let refused = submit::submit(
        &t.service,
        &caller,
        &user,
        &ClientInfo::default(),
        &bash("echo hi"),
    )
    .await
    .expect_err("refused");
    let ServiceError::Quota {
        resets_at: Some(resets_at),
        retry_after_secs: Some(_),
        ..
    } = refused
    else {
        panic!("not a daily quota error: {refused:?}");
    };
    let midnight = corral_core::clock::rfc3339((today + 1) * corral_service::quota::DAY_MS);
    assert_eq!(resets_at, midnight);
    let history = submit::history(&t.service, &caller, HistorySearch::default())
        .await
        .unwrap();
    assert!(history.items.is_empty(), "nothing was recorded");
}

#[tokio::test]
async fn without_wait_an_execution_is_queued_and_found_by_its_org_only() {
    let t = common::TestService::new().await;
    let (user, caller) = t.user("carol", "basic").await;
    let (_, stranger) = t.user("dave", "basic").await;
    let submitted = submit::submit(
        &t.service,
        &caller,
        &user,
        &ClientInfo::default(),
        &bash("echo hi"),
    )
    .await
    .unwrap();
    let Submitted::Queued(queued) = submitted else {
        panic!("not queued: {submitted:?}");
    };
    assert_eq!(queued.status, "queued");
    let job = t
        .service
        .queue
        .list(&corral_queue::JobFilter::default())
        .await
        .unwrap();
    assert_eq!(job.len(), 1, "one job runs it");
    assert_eq!(job[0].priority, 10, "at the basic plan's priority");
    let shown = submit::show(&t.service, &caller, &queued.id).await.unwrap();
    assert_eq!(shown.id, queued.id);
    let hidden = submit::show(&t.service, &stranger, &queued.id).await;
    assert!(
        matches!(hidden, Err(ServiceError::NotFound(_))),
        "{hidden:?}"
    );
}

#[tokio::test]
async fn a_batch_is_all_valid_or_nothing_and_reads_back_in_order() {
    let t = common::TestService::new().await;
    let (user, caller) = t.user("erin", "premium").await;
    let client = ClientInfo::default();
    let waiting = BatchRequest {
        executions: vec![
            bash("echo 1"),
            CreateExecutionRequest {
                wait: true,
                ..bash("echo 2")
            },
        ],
    };
    let refused = submit::submit_batch(&t.service, &caller, &user, &client, &waiting)
        .await
        .expect_err("refused");
    assert_eq!(refused_field(refused), "executions[1].wait");
    let empty = BatchRequest { executions: vec![] };
    let refused = submit::submit_batch(&t.service, &caller, &user, &client, &empty)
        .await
        .expect_err("refused");
    assert_eq!(refused_field(refused), "executions");

    let good = BatchRequest {
        executions: vec![bash("echo 1"), bash("echo 2"), bash("echo 3")],
    };
    let made = submit::submit_batch(&t.service, &caller, &user, &client, &good)
        .await
        .unwrap();
    assert_eq!((made.total, made.finished), (3, 0));
    let read = submit::batch(&t.service, &caller, &made.id).await.unwrap();
    let order = |b: &corral_types::executions::BatchResponse| {
        b.executions
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&read), order(&made));
}

#[tokio::test]
async fn history_pages_follow_the_cursor_and_refuse_a_bad_page_size() {
    let t = common::TestService::new().await;
    let (user, caller) = t.user("frank", "premium").await;
    for i in 0..3 {
        submit::submit(
            &t.service,
            &caller,
            &user,
            &ClientInfo::default(),
            &bash(&format!("echo {i}")),
        )
        .await
        .unwrap();
    }
    let page = |limit, cursor| {
        let search = HistorySearch {
            limit: Some(limit),
            cursor,
            ..HistorySearch::default()
        };
        submit::history(&t.service, &caller, search)
    };
    let first = page(2, None).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = page(2, first.next_cursor.clone()).await.unwrap();
    assert_eq!((rest.items.len(), rest.next_cursor), (1, None));
    let refused = page(0, None).await.expect_err("refused");
    assert_eq!(refused_field(refused), "limit");
}

#[tokio::test]
async fn with_wait_a_python_program_runs_to_its_verdict() {
    let t = common::TestService::with_judge().await;
    let (user, caller) = t.user("grace", "premium").await;
    let request = CreateExecutionRequest {
        language: "python".to_owned(),
        code: "print(input()[::-1])".to_owned(),
        stdin: Some("olleh\n".to_owned()),
        expected_output: Some("hello".to_owned()),
        wait: true,
        ..CreateExecutionRequest::default()
    };
    let submitted = submit::submit(&t.service, &caller, &user, &ClientInfo::default(), &request)
        .await
        .unwrap();
    let Submitted::Finished(done) = submitted else {
        panic!("not finished: {submitted:?}");
    };
    assert_eq!(
        (done.status.as_str(), done.stdout.as_str(), done.exit_code),
        ("ok", "hello\n", Some(0)),
        "{done:?}"
    );
}
