//! Claiming, completing and enqueueing many jobs per round trip: each job
//! keeps its own lease, fencing token, priority order and unique key.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corral_queue::{
    Enqueued, JobContext, JobState, NewBatch, NewJob, QueueError, WorkerOptions, Workers,
};
use serde_json::{Value, json};

use crate::{on_all_drivers, queues, wait_until};

const LEASE: Duration = Duration::from_secs(30);

fn job(n: i64) -> NewJob {
    NewJob::new("work", json!({ "n": n }))
}

on_all_drivers!(
    claim_many_takes_the_best_jobs_each_under_its_own_lease,
    |h| {
        let mut by_priority = Vec::new();
        for (n, priority) in [(0, 0), (1, 5), (2, 1), (3, 5), (4, 3), (5, -1)] {
            let id = h.queue.enqueue(job(n).priority(priority)).await.unwrap();
            by_priority.push((priority, id.id().to_owned()));
        }
        let claimed = h
            .queue
            .claim_many(&queues(&["default"]), "batch", LEASE, 3)
            .await
            .unwrap();
        let priorities: Vec<i64> = claimed
            .iter()
            .map(|c| by_priority.iter().find(|(_, id)| *id == c.id).unwrap().0)
            .collect();
        assert_eq!(priorities, [5, 5, 3], "the three best, best first");
        assert!(claimed.iter().all(|c| c.attempt == 1 && c.spent == 1));
        // The rest is still there, in order.
        let rest = h
            .queue
            .claim_many(&queues(&["default"]), "batch", LEASE, 10)
            .await
            .unwrap();
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[0].payload, json!({ "n": 2 }));
        assert_eq!(rest[2].payload, json!({ "n": 5 }));
        assert!(
            h.queue
                .claim_many(&queues(&["default"]), "batch", LEASE, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let results = h.queue.complete_many(&claimed).await.unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        for c in &claimed {
            let record = h.queue.job(&c.id).await.unwrap().unwrap();
            assert_eq!(record.state, JobState::Completed);
        }
        // Completing again: the leases are gone.
        let again = h.queue.complete_many(&claimed).await.unwrap();
        assert!(
            again
                .iter()
                .all(|r| matches!(r, Err(QueueError::LeaseLost { attempt: 1, .. }))),
            "{again:?}"
        );
    }
);

on_all_drivers!(concurrent_claim_many_never_leases_more_than_asked, |h| {
    const JOBS: i64 = 200;
    let jobs = (0..JOBS).map(job).collect();
    h.queue.enqueue_many(jobs).await.unwrap();
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let queue = if worker % 2 == 0 {
            h.queue.clone()
        } else {
            h.replica().await
        };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = queue
                    .claim_many(&queues(&["default"]), &format!("w{worker}"), LEASE, 7)
                    .await
                    .unwrap();
                assert!(got.len() <= 7, "asked for 7, leased {}", got.len());
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), distinct.len(), "a job was leased twice");
    assert_eq!(all.len() as i64, JOBS);
    let stats = h.queue.stats().await.unwrap();
    assert_eq!(stats[0].running, JOBS as u64);
});

on_all_drivers!(complete_many_is_fenced_per_job, |h| {
    h.queue.enqueue_many(vec![job(1), job(2)]).await.unwrap();
    let short = Duration::from_millis(300);
    let stale = h
        .queue
        .claim_many(&queues(&["default"]), "paused", short, 2)
        .await
        .unwrap();
    assert_eq!(stale.len(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.queue.reap_expired().await.unwrap(), 2);
    // Another worker reclaims one of the two; the other waits as pending.
    let fresh = h
        .queue
        .claim(&queues(&["default"]), "other", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.attempt, 2);
    let mut mixed = stale.clone();
    mixed.push(fresh.clone());
    let results = h.queue.complete_many(&mixed).await.unwrap();
    assert!(matches!(
        results[0],
        Err(QueueError::LeaseLost { attempt: 1, .. })
    ));
    assert!(matches!(
        results[1],
        Err(QueueError::LeaseLost { attempt: 1, .. })
    ));
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let done = h.queue.job(&fresh.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    let other = stale.iter().find(|c| c.id != fresh.id).unwrap();
    let waiting = h.queue.job(&other.id).await.unwrap().unwrap();
    assert_eq!(
        waiting.state,
        JobState::Pending,
        "a stale completion wrote nothing"
    );
});

on_all_drivers!(complete_many_moves_batches_and_chains_on, |h| {
    let batch = h
        .queue
        .enqueue_batch(NewBatch {
            jobs: vec![job(1), job(2)],
            callback: Some(NewJob::new("done", json!({}))),
            allowed_failures: 0,
        })
        .await
        .unwrap();
    let chain = h.queue.enqueue_chain(vec![job(10), job(11)]).await.unwrap();
    let claimed = h
        .queue
        .claim_many(&queues(&["default"]), "batch", LEASE, 10)
        .await
        .unwrap();
    // The two batch members and the chain's head; the callback and the
    // chain's second job wait.
    assert_eq!(claimed.len(), 3);
    let results = h.queue.complete_many(&claimed).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let status = h.queue.batch(&batch.batch_id).await.unwrap().unwrap();
    assert_eq!(status.succeeded, 2);
    assert!(status.finished_at.is_some());
    let next = h
        .queue
        .claim_many(&queues(&["default"]), "batch", LEASE, 10)
        .await
        .unwrap();
    let ids: HashSet<&str> = next.iter().map(|c| c.id.as_str()).collect();
    let expected: HashSet<&str> = [
        batch.callback_job_id.as_deref().unwrap(),
        chain.job_ids[1].as_str(),
    ]
    .into();
    assert_eq!(
        ids, expected,
        "the callback and the chain's next job are ready"
    );
});

on_all_drivers!(enqueue_many_answers_in_order_and_dedupes_unique_keys, |h| {
    let kept = h.queue.enqueue(job(0).unique("k1")).await.unwrap();
    let answers = h
        .queue
        .enqueue_many(vec![
            job(1),
            job(2).unique("k1"),
            job(3).unique("k2"),
            job(4).unique("k2"),
            job(5).delay(Duration::from_secs(3600)),
        ])
        .await
        .unwrap();
    assert_eq!(answers.len(), 5);
    assert!(answers[0].is_created());
    assert_eq!(answers[1], Enqueued::Duplicate(kept.id().to_owned()));
    assert!(answers[2].is_created());
    assert_eq!(
        answers[3],
        Enqueued::Duplicate(answers[2].id().to_owned()),
        "a key repeated within the call is kept once"
    );
    assert!(answers[4].is_created());
    let first = h.queue.job(answers[0].id()).await.unwrap().unwrap();
    assert_eq!(first.payload, Some(json!({ "n": 1 })));
    let ready = h
        .queue
        .claim_many(&queues(&["default"]), "w", LEASE, 10)
        .await
        .unwrap();
    // k1's kept job, job 1 and k2's first; the delayed one is not ready.
    assert_eq!(ready.len(), 3);
    assert!(h.queue.enqueue_many(Vec::new()).await.unwrap().is_empty());
});

on_all_drivers!(
    workers_never_run_more_handlers_than_their_concurrency,
    |h| {
        const JOBS: i64 = 60;
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut workers = Workers::new(h.queue.clone());
        {
            let (running, most) = (running.clone(), most.clone());
            workers.register("work", move |_: Value, _ctx: JobContext| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            });
        }
        let handle = workers.start(WorkerOptions {
            concurrency: 5,
            poll_interval: Duration::from_millis(50),
            ..WorkerOptions::default()
        });
        h.queue
            .enqueue_many((0..JOBS).map(job).collect())
            .await
            .unwrap();
        wait_until(Duration::from_secs(60), "every job to complete", || {
            let queue = h.queue.clone();
            async move { queue.stats().await.unwrap()[0].completed == JOBS as u64 }
        })
        .await;
        assert_eq!(handle.completed(), JOBS as u64);
        handle.shutdown(Duration::from_secs(5)).await;
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 5, "{most} handlers ran at once");
        assert!(
            most >= 2,
            "claims should fill several slots at once ({most})"
        );
    }
);
