//! Workers: handlers by kind, concurrency, heartbeats, panics, middleware,
//! graceful shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_queue::{
    JobContext, JobError, JobState, Logging, NewJob, Throttle, Timing, WorkerOptions, Workers,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{on_all_drivers, wait_until};

fn options(concurrency: usize) -> WorkerOptions {
    WorkerOptions {
        concurrency,
        poll_interval: Duration::from_millis(50),
        ..WorkerOptions::default()
    }
}

#[derive(Deserialize)]
struct Numbered {
    n: u64,
}

on_all_drivers!(many_workers_run_every_job_exactly_once, |h| {
    const JOBS: u64 = 200;
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let mut handles = Vec::new();
    // Two "replicas", four loops each.
    for replica in 0..2 {
        let queue = if replica == 0 {
            h.queue.clone()
        } else {
            h.replica().await
        };
        let mut workers = Workers::new(queue);
        let runs = runs.clone();
        workers.register("count", move |job: Numbered, _ctx: JobContext| {
            let runs = runs.clone();
            async move {
                *runs.lock().unwrap().entry(job.n).or_default() += 1;
                Ok(())
            }
        });
        handles.push(workers.start(WorkerOptions {
            name: format!("replica-{replica}"),
            ..options(4)
        }));
    }
    for n in 0..JOBS {
        h.queue
            .enqueue(NewJob::new("count", json!({ "n": n })))
            .await
            .unwrap();
    }
    wait_until(Duration::from_secs(60), "every job to complete", || {
        let queue = h.queue.clone();
        async move { queue.stats().await.unwrap()[0].completed == JOBS }
    })
    .await;
    let mut completed = 0;
    for handle in handles {
        completed += handle.completed();
        let report = handle.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report.released, 0);
    }
    assert_eq!(completed, JOBS);
    {
        let runs = runs.lock().unwrap();
        assert_eq!(runs.len() as u64, JOBS);
        assert!(runs.values().all(|&n| n == 1), "a job ran twice: {runs:?}");
    }
    let stats = h.queue.stats().await.unwrap();
    assert_eq!(stats[0].completed_last_minute, JOBS);
    assert_eq!(
        (stats[0].pending, stats[0].running, stats[0].failed),
        (0, 0, 0)
    );
});

on_all_drivers!(heartbeats_keep_a_long_job_leased, |h| {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..2 {
        let mut workers = Workers::new(h.replica().await);
        let runs = runs.clone();
        workers.register("long", move |_: Value, _ctx: JobContext| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(())
            }
        });
        handles.push(workers.start(WorkerOptions {
            lease: Duration::from_millis(400),
            heartbeat: Some(Duration::from_millis(100)),
            ..options(2)
        }));
    }
    let id = h
        .queue
        .enqueue(NewJob::new("long", json!({})))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the long job", || {
        let queue = h.queue.clone();
        let id = id.id().to_owned();
        async move { queue.job(&id).await.unwrap().unwrap().state == JobState::Completed }
    })
    .await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "never reclaimed while heartbeating"
    );
    assert_eq!(h.queue.job(id.id()).await.unwrap().unwrap().attempts, 1);
    for handle in handles {
        handle.shutdown(Duration::from_secs(1)).await;
    }
});

on_all_drivers!(a_stalled_worker_loses_its_job_and_its_result, |h| {
    // Worker A stalls past its lease without heartbeating; B reclaims the
    // job and is still running it when A comes back and reports success:
    // A's report must be refused (fenced), and B's recorded.
    let runs = Arc::new(Mutex::new(Vec::<i64>::new()));
    let register = |workers: &mut Workers, stall: bool| {
        let runs = runs.clone();
        workers.register("stall", move |_: Value, ctx: JobContext| {
            let runs = runs.clone();
            async move {
                runs.lock().unwrap().push(ctx.fence());
                let ms = if stall { 1200 } else { 1500 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
        });
    };
    let mut a = Workers::new(h.queue.clone());
    register(&mut a, true);
    let a = a.start(WorkerOptions {
        lease: Duration::from_millis(300),
        heartbeat: None,
        ..options(1)
    });
    let id = h
        .queue
        .enqueue(NewJob::new("stall", json!({})))
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "A to take the job", || {
        let runs = runs.clone();
        async move { !runs.lock().unwrap().is_empty() }
    })
    .await;
    let mut b = Workers::new(h.replica().await);
    register(&mut b, false);
    let b = b.start(options(1));
    wait_until(Duration::from_secs(10), "B to finish the job", || {
        let queue = h.queue.clone();
        let id = id.id().to_owned();
        async move { queue.job(&id).await.unwrap().unwrap().state == JobState::Completed }
    })
    .await;
    // The counters move just after the result is written.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*runs.lock().unwrap(), vec![1, 2]);
    assert_eq!(
        a.completed() + b.completed(),
        1,
        "exactly one result recorded"
    );
    assert_eq!(b.completed(), 1);
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
});

on_all_drivers!(panicking_handlers_fail_the_attempt_not_the_worker, |h| {
    let mut workers = Workers::new(h.queue.clone());
    workers.register("poison", |_: Value, _ctx: JobContext| async move {
        if true {
            panic!("poison job");
        }
        Ok(())
    });
    workers.register("fine", |_: Value, _ctx: JobContext| async move { Ok(()) });
    workers.register(
        "typed",
        |_: Numbered, _ctx: JobContext| async move { Ok(()) },
    );
    let handle = workers.start(options(2));
    let poison =
        h.queue
            .enqueue(NewJob::new("poison", json!({})).max_attempts(3).backoff(
                corral_queue::Backoff {
                    base: Duration::from_millis(10),
                    max: Duration::from_millis(20),
                },
            ))
            .await
            .unwrap();
    let mistyped = h
        .queue
        .enqueue(NewJob::new("typed", json!({ "n": "not a number" })).max_attempts(5))
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the poison job to be dead-lettered",
        || {
            let queue = h.queue.clone();
            let id = poison.id().to_owned();
            async move { queue.job(&id).await.unwrap().unwrap().state == JobState::Failed }
        },
    )
    .await;
    let record = h.queue.job(poison.id()).await.unwrap().unwrap();
    assert_eq!(record.attempts, 3);
    assert_eq!(record.last_error.as_deref(), Some("the handler panicked"));
    let fine = h
        .queue
        .enqueue(NewJob::new("fine", json!({})))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the worker to go on", || {
        let queue = h.queue.clone();
        let id = fine.id().to_owned();
        async move { queue.job(&id).await.unwrap().unwrap().state == JobState::Completed }
    })
    .await;
    let record = h.queue.job(mistyped.id()).await.unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Failed, 1));
    assert!(
        record
            .last_error
            .unwrap()
            .contains("does not fit kind typed")
    );
    handle.shutdown(Duration::from_secs(1)).await;
});

on_all_drivers!(middleware_logs_times_and_throttles, |h| {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let timing = Timing::new();
    let mut workers = Workers::new(h.queue.clone());
    workers
        .wrap(Logging)
        .wrap(timing.clone())
        .wrap(Throttle::per_kind(1).only(&["serial"]));
    for kind in ["serial", "parallel"] {
        let running = running.clone();
        let peak = peak.clone();
        let fail = kind == "parallel";
        workers.register(kind, move |job: Numbered, _ctx: JobContext| {
            let running = running.clone();
            let peak = peak.clone();
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if fail && job.n == 0 {
                    return Err(JobError::permanent("parallel job 0 fails"));
                }
                Ok(())
            }
        });
    }
    let handle = workers.start(options(4));
    for n in 0..6 {
        h.queue
            .enqueue(NewJob::new("serial", json!({ "n": n })))
            .await
            .unwrap();
    }
    wait_until(Duration::from_secs(20), "the serial jobs", || {
        let timing = timing.clone();
        async move {
            timing
                .snapshot()
                .get("serial")
                .is_some_and(|t| t.count == 6)
        }
    })
    .await;
    assert_eq!(peak.load(Ordering::SeqCst), 1, "throttled to one at a time");

    peak.store(0, Ordering::SeqCst);
    for n in 0..8 {
        h.queue
            .enqueue(NewJob::new("parallel", json!({ "n": n })))
            .await
            .unwrap();
    }
    wait_until(Duration::from_secs(20), "the parallel jobs", || {
        let timing = timing.clone();
        async move {
            timing
                .snapshot()
                .get("parallel")
                .is_some_and(|t| t.count == 8)
        }
    })
    .await;
    assert!(
        peak.load(Ordering::SeqCst) > 1,
        "other kinds run side by side"
    );
    let stats = timing.snapshot();
    let serial = stats["serial"];
    assert_eq!(serial.errors, 0);
    assert!(serial.total >= Duration::from_millis(300));
    assert!(serial.max >= Duration::from_millis(50));
    assert_eq!(stats["parallel"].errors, 1);
    handle.shutdown(Duration::from_secs(1)).await;
});

on_all_drivers!(
    graceful_shutdown_finishes_quick_jobs_and_releases_slow_ones,
    |h| {
        let started = Arc::new(AtomicUsize::new(0));
        let mut workers = Workers::new(h.queue.clone());
        for (kind, ms) in [("quick", 300u64), ("slow", 60_000)] {
            let started = started.clone();
            workers.register(kind, move |_: Value, _ctx: JobContext| {
                let started = started.clone();
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(())
                }
            });
        }
        let handle = workers.start(options(2));
        let quick = h
            .queue
            .enqueue(NewJob::new("quick", json!({})))
            .await
            .unwrap();
        let slow = h
            .queue
            .enqueue(NewJob::new("slow", json!({})))
            .await
            .unwrap();
        wait_until(Duration::from_secs(5), "both jobs to start", || {
            let started = started.clone();
            async move { started.load(Ordering::SeqCst) == 2 }
        })
        .await;
        let report = handle.shutdown(Duration::from_millis(800)).await;
        assert_eq!(report.in_flight, 2);
        assert_eq!(report.released, 1);

        let quick = h.queue.job(quick.id()).await.unwrap().unwrap();
        assert_eq!(
            quick.state,
            JobState::Completed,
            "finished within the grace period"
        );
        let slow = h.queue.job(slow.id()).await.unwrap().unwrap();
        assert_eq!(slow.state, JobState::Pending, "released, not left leased");
        assert_eq!(slow.attempts, 0, "a released attempt is not spent");

        // Stopped workers claim nothing more.
        let later = h
            .queue
            .enqueue(NewJob::new("quick", json!({})))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            h.queue.job(later.id()).await.unwrap().unwrap().state,
            JobState::Pending
        );
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }
);
