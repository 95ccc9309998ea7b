//! The queue's primitives: claims, leases and fencing, ordering, unique
//! keys, transactions, batches, chains, rate limits, encryption, admin.

use std::collections::HashSet;
use std::time::Duration;

use corral_core::clock::{Clock, SystemClock};
use corral_queue::{
    Backoff, Enqueued, FailOutcome, JobFilter, JobState, NewBatch, NewJob, Queue, QueueError,
    RateLimit, RateScope,
};
use serde_json::json;

use crate::{Harness, Kind, on_all_drivers, on_database_drivers, queues};

const LEASE: Duration = Duration::from_secs(30);

fn job(kind: &str, n: i64) -> NewJob {
    NewJob::new(kind, json!({ "n": n }))
}

async fn claim(queue: &Queue, names: &[&str]) -> Option<corral_queue::Claimed> {
    queue.claim(&queues(names), "test", LEASE).await.unwrap()
}

/// Claims from the default queue, waiting up to `timeout` for a job.
async fn claim_within(queue: &Queue, timeout: Duration) -> corral_queue::Claimed {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(job) = claim(queue, &["default"]).await {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "no job became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_all_drivers!(concurrent_claims_never_hand_out_a_job_twice, |h| {
    const JOBS: i64 = 120;
    for n in 0..JOBS {
        h.queue.enqueue(job("work", n)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for worker in 0..8 {
        // Half the claimers go through a second handle, as another replica.
        let queue = if worker % 2 == 0 {
            h.queue.clone()
        } else {
            h.replica().await
        };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut empty = 0;
            while empty < 3 {
                match queue
                    .claim(&queues(&["default"]), &format!("w{worker}"), LEASE)
                    .await
                    .unwrap()
                {
                    Some(job) => {
                        assert_eq!(job.spent, 1);
                        mine.push(job.id);
                    }
                    None => {
                        empty += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), distinct.len(), "a job was claimed twice");
    assert_eq!(all.len() as i64, JOBS, "every job claimed once");
    let stats = h.queue.stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].running, JOBS as u64);
    assert_eq!(stats[0].pending, 0);
});

on_all_drivers!(
    lost_lease_is_reclaimed_and_the_late_completion_rejected,
    |h| {
        let id = h.queue.enqueue(job("slow", 1)).await.unwrap();
        let short = Duration::from_millis(300);
        let first = h
            .queue
            .claim(&queues(&["default"]), "paused-worker", short)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.id, id.id());
        assert_eq!(first.attempt, 1);
        // Still leased: nothing to reap, nothing to claim.
        assert_eq!(h.queue.reap_expired().await.unwrap(), 0);
        assert!(claim(&h.queue, &["default"]).await.is_none());

        tokio::time::sleep(Duration::from_millis(500)).await;
        let other = h.replica().await;
        assert_eq!(other.reap_expired().await.unwrap(), 1);
        let second = claim(&other, &["default"]).await.unwrap();
        assert_eq!(second.id, first.id);
        assert_eq!(second.attempt, 2, "the fencing token moved on");
        assert_eq!(second.spent, 2);

        // The first worker wakes up: everything it reports is refused.
        for result in [
            h.queue.complete(&first).await,
            h.queue.heartbeat(&first, LEASE).await,
            h.queue.release(&first, Duration::ZERO).await,
            h.queue.fail(&first, "late", true).await.map(|_| ()),
        ] {
            assert!(
                matches!(result, Err(QueueError::LeaseLost { attempt: 1, .. })),
                "{result:?}"
            );
        }
        let record = h.queue.job(&first.id).await.unwrap().unwrap();
        assert_eq!(record.state, JobState::Running);
        assert!(
            record
                .last_error
                .as_deref()
                .unwrap_or_default()
                .contains("lease expired")
        );

        other.heartbeat(&second, LEASE).await.unwrap();
        other.complete(&second).await.unwrap();
        let record = h.queue.job(&first.id).await.unwrap().unwrap();
        assert_eq!(record.state, JobState::Completed);
        assert_eq!(record.attempts, 2);
        // A completed job cannot be completed again, even by its last holder.
        assert!(matches!(
            other.complete(&second).await,
            Err(QueueError::LeaseLost { .. })
        ));
    }
);

on_all_drivers!(expired_lease_on_the_last_attempt_fails_the_job, |h| {
    h.queue
        .enqueue(job("poison", 1).max_attempts(1))
        .await
        .unwrap();
    let short = Duration::from_millis(200);
    let held = h
        .queue
        .claim(&queues(&["default"]), "crashing-worker", short)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.queue.reap_expired().await.unwrap(), 1);
    assert!(claim(&h.queue, &["default"]).await.is_none());
    let record = h.queue.job(&held.id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Failed);
    assert!(record.last_error.unwrap().contains("last attempt"));
});

on_all_drivers!(priority_then_run_at_decides_the_order, |h| {
    let now = SystemClock.now_ms();
    let low = h.queue.enqueue(job("k", 1).priority(0)).await.unwrap();
    let newer = h
        .queue
        .enqueue(job("k", 2).priority(5).run_at(now - 1_000))
        .await
        .unwrap();
    let older = h
        .queue
        .enqueue(job("k", 3).priority(5).run_at(now - 2_000))
        .await
        .unwrap();
    let high = h.queue.enqueue(job("k", 4).priority(10)).await.unwrap();
    let delayed = h
        .queue
        .enqueue(job("k", 5).priority(100).delay(Duration::from_millis(700)))
        .await
        .unwrap();
    let future = h
        .queue
        .enqueue(job("k", 6).priority(100).run_at(now + 60_000))
        .await
        .unwrap();

    let mut order = Vec::new();
    while let Some(job) = claim(&h.queue, &["default"]).await {
        order.push(job.id);
    }
    // Within a priority the database orders by run_at; Redis streams keep
    // the order in which jobs became ready (enqueue order here).
    let (first, second) = if h.kind == Kind::Redis {
        (&newer, &older)
    } else {
        (&older, &newer)
    };
    assert_eq!(
        order,
        vec![
            high.id().to_owned(),
            first.id().to_owned(),
            second.id().to_owned(),
            low.id().to_owned()
        ]
    );
    let stats = h.queue.stats().await.unwrap();
    assert_eq!(stats[0].scheduled, 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let next = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(next.id, delayed.id());
    assert!(claim(&h.queue, &["default"]).await.is_none());
    let kept = h.queue.job(future.id()).await.unwrap().unwrap();
    assert_eq!(kept.state, JobState::Pending);
    assert_eq!(kept.run_at, now + 60_000);
});

on_all_drivers!(named_queues_are_separate, |h| {
    let mail = h.queue.enqueue(job("k", 1).queue("mail")).await.unwrap();
    h.queue.enqueue(job("k", 2).queue("other")).await.unwrap();
    assert!(claim(&h.queue, &["default"]).await.is_none());
    let got = claim(&h.queue, &["mail"]).await.unwrap();
    assert_eq!(got.id, mail.id());
    assert_eq!(got.queue, "mail");
    assert!(claim(&h.queue, &["mail"]).await.is_none());
    assert!(claim(&h.queue, &["mail", "other"]).await.is_some());
});

on_all_drivers!(unique_keys_dedupe_while_the_job_is_kept, |h| {
    let first = h
        .queue
        .enqueue(job("k", 1).unique("report:42"))
        .await
        .unwrap();
    assert!(first.is_created());
    let again = h
        .queue
        .enqueue(job("k", 2).unique("report:42"))
        .await
        .unwrap();
    assert_eq!(again, Enqueued::Duplicate(first.id().to_owned()));
    let other = h
        .queue
        .enqueue(job("k", 3).unique("report:43"))
        .await
        .unwrap();
    assert!(other.is_created());
    assert_ne!(other.id(), first.id());

    // Completed but kept: still a duplicate.
    let held = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(held.payload, json!({ "n": 1 }));
    h.queue.complete(&held).await.unwrap();
    let after = h
        .queue
        .enqueue(job("k", 4).unique("report:42"))
        .await
        .unwrap();
    assert!(!after.is_created());

    // Pruned: the key is free again.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.queue.prune(Duration::ZERO).await.unwrap(), 1);
    assert!(h.queue.job(first.id()).await.unwrap().is_none());
    let fresh = h
        .queue
        .enqueue(job("k", 5).unique("report:42"))
        .await
        .unwrap();
    assert!(fresh.is_created());

    // Concurrent enqueues of one key make one job.
    let mut tasks = Vec::new();
    for n in 0..8 {
        let queue = h.queue.clone();
        tasks.push(tokio::spawn(async move {
            queue.enqueue(job("k", n).unique("race")).await.unwrap()
        }));
    }
    let mut created = 0;
    let mut ids = HashSet::new();
    for task in tasks {
        let done = task.await.unwrap();
        created += usize::from(done.is_created());
        ids.insert(done.id().to_owned());
    }
    assert_eq!((created, ids.len()), (1, 1));
});

on_database_drivers!(transactional_enqueue_follows_the_transaction, |h| {
    let mut tx = h.store.pool().begin().await.unwrap();
    let rolled_back = h
        .queue
        .enqueue_in(&mut tx, job("k", 1).unique("tx-key"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = h.store.pool().begin().await.unwrap();
    let committed = h.queue.enqueue_in(&mut tx, job("k", 2)).await.unwrap();
    // Not visible outside the transaction before the commit. (On SQLite a
    // claim would wait for the open write transaction, so look, don't claim.)
    assert!(h.queue.job(committed.id()).await.unwrap().is_none());
    assert!(h.queue.stats().await.unwrap().is_empty());
    tx.commit().await.unwrap();

    assert!(h.queue.job(rolled_back.id()).await.unwrap().is_none());
    let got = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(got.id, committed.id());
    assert!(claim(&h.queue, &["default"]).await.is_none());
    // The rolled-back job left no unique key behind.
    assert!(
        h.queue
            .enqueue(job("k", 3).unique("tx-key"))
            .await
            .unwrap()
            .is_created()
    );
});

#[tokio::test]
async fn transactional_enqueue_is_refused_on_redis() {
    let h = Harness::new(Kind::Redis).await;
    let mut conn = h.store.pool().acquire().await.unwrap();
    assert!(matches!(
        h.queue.enqueue_in(&mut conn, job("k", 1)).await,
        Err(QueueError::Unsupported { .. })
    ));
}

on_all_drivers!(retries_back_off_then_keep_the_job_as_failed, |h| {
    let backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(10),
    };
    let id = h
        .queue
        .enqueue(job("flaky", 1).max_attempts(3).backoff(backoff))
        .await
        .unwrap();
    let mut claimed_at = Vec::new();
    for attempt in 1..=3u32 {
        let held = claim_within(&h.queue, Duration::from_secs(5)).await;
        assert_eq!(held.spent, attempt);
        claimed_at.push(held.claimed_at);
        let outcome = h
            .queue
            .fail(&held, &format!("boom {attempt}"), true)
            .await
            .unwrap();
        if attempt < 3 {
            let FailOutcome::Retrying { at } = outcome else {
                panic!("attempt {attempt} should retry, got {outcome:?}");
            };
            // Equal jitter: at least half the exponential step.
            let floor = 100 * 2i64.pow(attempt - 1);
            assert!(at - held.claimed_at >= floor, "attempt {attempt}");
            assert!(at - held.claimed_at <= 2 * floor);
            assert!(
                claim(&h.queue, &["default"]).await.is_none(),
                "not before the backoff"
            );
        } else {
            assert_eq!(outcome, FailOutcome::Failed);
        }
    }
    assert!(claimed_at[1] - claimed_at[0] >= 100);
    assert!(claimed_at[2] - claimed_at[1] >= 200);

    let failed = h.queue.failed(None, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, id.id());
    assert_eq!(failed[0].attempts, 3);
    assert_eq!(failed[0].last_error.as_deref(), Some("boom 3"));
    assert_eq!(failed[0].payload, Some(json!({ "n": 1 })));
    assert_eq!(h.queue.stats().await.unwrap()[0].failed, 1);

    // Retry on demand: a fresh budget.
    assert!(h.queue.retry(id.id()).await.unwrap());
    assert!(
        !h.queue.retry(id.id()).await.unwrap(),
        "only failed jobs retry"
    );
    let again = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(again.spent, 1);
    assert_eq!(again.attempt, 4, "the fencing token never goes back");
    h.queue.complete(&again).await.unwrap();
    assert!(h.queue.failed(None, 10).await.unwrap().is_empty());
});

on_all_drivers!(permanent_failures_skip_the_retries, |h| {
    h.queue
        .enqueue(job("bad", 1).max_attempts(5))
        .await
        .unwrap();
    let held = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(
        h.queue.fail(&held, "invalid input", false).await.unwrap(),
        FailOutcome::Failed
    );
    let record = h.queue.job(&held.id).await.unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Failed, 1));
});

on_all_drivers!(failed_jobs_retry_all_and_clear, |h| {
    for (n, queue) in [(1, "a"), (2, "a"), (3, "b")] {
        h.queue
            .enqueue(job("k", n).queue(queue).max_attempts(1))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let held = claim(&h.queue, &["a", "b"]).await.unwrap();
        h.queue.fail(&held, "no", true).await.unwrap();
    }
    assert_eq!(h.queue.failed(Some("a"), 10).await.unwrap().len(), 2);
    assert_eq!(h.queue.failed(None, 10).await.unwrap().len(), 3);
    assert_eq!(h.queue.retry_all(Some("a")).await.unwrap(), 2);
    assert_eq!(h.queue.failed(None, 10).await.unwrap().len(), 1);
    let stats = h.queue.stats().await.unwrap();
    let a = stats.iter().find(|s| s.queue == "a").unwrap();
    assert_eq!((a.pending, a.failed), (2, 0));

    // Clear removes everything no worker holds, unique keys included.
    h.queue
        .enqueue(job("k", 4).queue("a").unique("u1"))
        .await
        .unwrap();
    let held = claim(&h.queue, &["a"]).await.unwrap();
    assert_eq!(h.queue.clear("a").await.unwrap(), 2);
    assert!(claim(&h.queue, &["a"]).await.is_none());
    assert!(
        h.queue.job(&held.id).await.unwrap().is_some(),
        "running jobs stay"
    );
    h.queue.complete(&held).await.unwrap();
    assert_eq!(h.queue.clear("a").await.unwrap(), 1);
    assert!(
        h.queue
            .enqueue(job("k", 5).queue("a").unique("u1"))
            .await
            .unwrap()
            .is_created()
    );
    assert_eq!(h.queue.failed(Some("b"), 10).await.unwrap().len(), 1);

    // Listing pages newest first.
    let page = h
        .queue
        .list(&JobFilter {
            limit: Some(1),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let next = h
        .queue
        .list(&JobFilter {
            before: Some(page[0].id.clone()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(next.iter().all(|j| j.id < page[0].id));
    assert_eq!(
        next.len() + 1,
        2,
        "two jobs are kept (the failed b and the new a)"
    );
});

on_all_drivers!(batches_count_progress_and_release_the_callback_last, |h| {
    let batch = h
        .queue
        .enqueue_batch(NewBatch {
            jobs: vec![job("member", 1), job("member", 2), job("member", 3)],
            allowed_failures: 1,
            callback: Some(job("batch_done", 0).queue("callbacks")),
        })
        .await
        .unwrap();
    let callback_id = batch.callback_job_id.clone().unwrap();
    let status = h.queue.batch(&batch.batch_id).await.unwrap().unwrap();
    assert_eq!((status.total, status.succeeded, status.failed), (3, 0, 0));
    assert!(!status.is_finished());

    for step in 0..3 {
        assert!(
            claim(&h.queue, &["callbacks"]).await.is_none(),
            "callback waits"
        );
        let member = claim(&h.queue, &["default"]).await.unwrap();
        assert_eq!(member.batch_id.as_deref(), Some(batch.batch_id.as_str()));
        if step == 1 {
            h.queue.fail(&member, "one fails", false).await.unwrap();
        } else {
            h.queue.complete(&member).await.unwrap();
        }
        let status = h.queue.batch(&batch.batch_id).await.unwrap().unwrap();
        assert_eq!(status.succeeded + status.failed, step + 1);
    }
    let status = h.queue.batch(&batch.batch_id).await.unwrap().unwrap();
    assert_eq!((status.succeeded, status.failed), (2, 1));
    assert!(status.is_finished());
    assert!(status.is_success(), "one failure is allowed");
    let callback = claim(&h.queue, &["callbacks"]).await.unwrap();
    assert_eq!(callback.id, callback_id);
    assert_eq!(
        callback.callback_for.as_deref(),
        Some(batch.batch_id.as_str())
    );
    h.queue.complete(&callback).await.unwrap();
    assert!(claim(&h.queue, &["default", "callbacks"]).await.is_none());

    // Too many failures: finished, not a success. No callback: fine.
    let strict = h
        .queue
        .enqueue_batch(NewBatch {
            jobs: vec![job("member", 4)],
            allowed_failures: 0,
            callback: None,
        })
        .await
        .unwrap();
    let member = claim(&h.queue, &["default"]).await.unwrap();
    h.queue.fail(&member, "no", false).await.unwrap();
    let status = h.queue.batch(&strict.batch_id).await.unwrap().unwrap();
    assert!(status.is_finished() && !status.is_success());

    // An empty batch is finished at once and its callback ready.
    let empty = h
        .queue
        .enqueue_batch(NewBatch {
            jobs: Vec::new(),
            allowed_failures: 0,
            callback: Some(job("batch_done", 1).queue("callbacks")),
        })
        .await
        .unwrap();
    assert!(
        h.queue
            .batch(&empty.batch_id)
            .await
            .unwrap()
            .unwrap()
            .is_success()
    );
    assert!(claim(&h.queue, &["callbacks"]).await.is_some());
});

on_all_drivers!(chains_run_in_order_and_stop_at_the_first_failure, |h| {
    let chain = h
        .queue
        .enqueue_chain(vec![job("step", 1), job("step", 2), job("step", 3)])
        .await
        .unwrap();
    let [a, b, c] = chain.job_ids.as_slice() else {
        panic!("three ids");
    };
    let first = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(&first.id, a);
    assert!(
        claim(&h.queue, &["default"]).await.is_none(),
        "b waits for a"
    );
    h.queue.complete(&first).await.unwrap();

    let second = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(&second.id, b);
    h.queue.fail(&second, "step 2 broke", false).await.unwrap();
    assert!(
        claim(&h.queue, &["default"]).await.is_none(),
        "c never runs"
    );
    let third = h.queue.job(c).await.unwrap().unwrap();
    assert_eq!(third.state, JobState::Cancelled);
    assert_eq!(third.chain_id.as_deref(), Some(chain.chain_id.as_str()));

    // Retrying the failed member resumes the chain.
    assert!(h.queue.retry(b).await.unwrap());
    assert_eq!(
        h.queue.job(c).await.unwrap().unwrap().state,
        JobState::Waiting
    );
    let again = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(&again.id, b);
    h.queue.complete(&again).await.unwrap();
    let last = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(&last.id, c);
    h.queue.complete(&last).await.unwrap();
    let stats = h.queue.stats().await.unwrap();
    assert_eq!((stats[0].completed, stats[0].waiting), (3, 0));

    // A retried job's failure within its budget does not break the chain.
    let chain = h
        .queue
        .enqueue_chain(vec![job("step", 4).max_attempts(2), job("step", 5)])
        .await
        .unwrap();
    let held = claim(&h.queue, &["default"]).await.unwrap();
    assert!(matches!(
        h.queue.fail(&held, "transient", true).await.unwrap(),
        FailOutcome::Retrying { .. }
    ));
    assert_eq!(
        h.queue.job(&chain.job_ids[1]).await.unwrap().unwrap().state,
        JobState::Waiting
    );
});

/// Sleeps until at least `margin_ms` remain in the current `window_ms`
/// window of the clock the databases and Redis share with this machine.
async fn align_to_window(window_ms: i64, margin_ms: i64) {
    let now = SystemClock.now_ms();
    let into = now.rem_euclid(window_ms);
    if window_ms - into < margin_ms {
        tokio::time::sleep(Duration::from_millis((window_ms - into + 20) as u64)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_sqlite() {
    rate_limits(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_postgres() {
    rate_limits(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_redis() {
    rate_limits(Kind::Redis).await;
}

async fn rate_limits(kind: Kind) {
    const WINDOW: i64 = 3_000;
    let h = Harness::with(kind, |config| {
        config.rate_limits = vec![
            RateLimit {
                scope: RateScope::Queue("limited".to_owned()),
                max: 2,
                per: Duration::from_millis(WINDOW as u64),
            },
            RateLimit {
                scope: RateScope::EachKey("keyed".to_owned()),
                max: 1,
                per: Duration::from_millis(WINDOW as u64),
            },
        ];
    })
    .await;
    for n in 0..5 {
        h.queue.enqueue(job("k", n).queue("limited")).await.unwrap();
    }
    for (n, key) in [(1, "org-a"), (2, "org-a"), (3, "org-b"), (4, "org-a")] {
        h.queue
            .enqueue(job("k", n).queue("keyed").rate_key(key))
            .await
            .unwrap();
    }
    h.queue.enqueue(job("k", 9).queue("free")).await.unwrap();
    align_to_window(WINDOW, 1_500).await;

    let mut limited = 0;
    while claim(&h.queue, &["limited"]).await.is_some() {
        limited += 1;
    }
    assert_eq!(limited, 2, "two per window");
    let mut keys = Vec::new();
    while let Some(job) = claim(&h.queue, &["keyed"]).await {
        keys.push(job.rate_key.unwrap());
    }
    keys.sort();
    assert_eq!(keys, ["org-a", "org-b"], "one per key per window");
    assert!(
        claim(&h.queue, &["free"]).await.is_some(),
        "other queues are not limited"
    );

    // The deferred jobs wait for the next window, their attempts given back.
    let stats = h.queue.stats().await.unwrap();
    let s = stats.iter().find(|s| s.queue == "limited").unwrap();
    assert_eq!((s.pending, s.scheduled, s.running), (0, 3, 2));
    let waiting = h
        .queue
        .list(&JobFilter {
            queue: Some("limited".to_owned()),
            state: Some(JobState::Pending),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(waiting.iter().all(|j| j.attempts == 0));

    let mut next_window = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while next_window < 2 && std::time::Instant::now() < deadline {
        while claim(&h.queue, &["limited"]).await.is_some() {
            next_window += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(next_window, 2, "again two in the next window");
}

on_all_drivers!(sensitive_payloads_are_encrypted_at_rest, |h| {
    let secret = "hunter2-very-secret";
    let id = h
        .queue
        .enqueue(NewJob::new("login", json!({ "password": secret })).sensitive())
        .await
        .unwrap();
    h.queue
        .enqueue(NewJob::new("plain", json!({ "visible": "in-the-clear" })))
        .await
        .unwrap();

    let stored: Vec<String> = match h.redis_prefix() {
        None => corral_store::testing::all_text(&h.store, "queue_jobs").await,
        Some(prefix) => {
            let client = redis::Client::open(crate::redis_url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let map: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(format!("{prefix}:job:{}", id.id()))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(!map.is_empty(), "the raw job hash was found");
            map.into_values().collect()
        }
    };
    assert!(stored.iter().any(|t| t.starts_with("gcm1:")), "{stored:?}");
    assert!(stored.iter().all(|t| !t.contains(secret)), "{stored:?}");
    if h.redis_prefix().is_none() {
        assert!(
            stored.iter().any(|t| t.contains("in-the-clear")),
            "the check can see text"
        );
    }
    // Listings never show it; the worker gets it decrypted.
    assert_eq!(h.queue.job(id.id()).await.unwrap().unwrap().payload, None);
    let held = claim(&h.queue, &["default"]).await.unwrap();
    assert_eq!(held.id, id.id());
    assert_eq!(held.payload, json!({ "password": secret }));

    // Without a key, sensitive jobs are refused, not stored in the clear.
    let mut config = h.config.clone();
    config.encryption_key = None;
    let keyless = Queue::open(h.store.clone(), config).await.unwrap();
    assert!(matches!(
        keyless
            .enqueue(NewJob::new("login", json!({})).sensitive())
            .await,
        Err(QueueError::NoKey { .. })
    ));
    // A worker with the wrong key fails the job instead of running it.
    let mut config = h.config.clone();
    config.encryption_key = Some(corral_queue::EncryptionKey::from_bytes([1; 32]));
    let wrong = Queue::open(h.store.clone(), config).await.unwrap();
    let other = h
        .queue
        .enqueue(
            NewJob::new("login", json!({ "password": secret }))
                .sensitive()
                .queue("s"),
        )
        .await
        .unwrap();
    assert!(claim(&wrong, &["s"]).await.is_none());
    let record = h.queue.job(other.id()).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Failed);
    assert!(record.last_error.unwrap().contains("decrypt"));
});
