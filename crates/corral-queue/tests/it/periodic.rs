//! Periodic jobs: two schedulers (two replicas) enqueue each occurrence once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use corral_core::clock::ManualClock;
use corral_queue::{JobFilter, NewJob, PeriodicJob, QueueError, Scheduler, TickReport};
use serde_json::json;

use crate::on_all_drivers;

/// A time on a ten-second boundary.
const T0: i64 = 1_900_000_000_000;

fn scheduler(queue: corral_queue::Queue, clock: &ManualClock) -> Scheduler {
    let mut scheduler = Scheduler::new(queue, Arc::new(clock.clone()));
    scheduler
        .add(
            PeriodicJob::new(
                "sweep",
                "*/10 * * * * *",
                NewJob::new("sweep", json!({})).queue("maintenance"),
            )
            .unwrap(),
        )
        .add(
            PeriodicJob::new(
                "hourly",
                "0 * * * *",
                NewJob::new("prune", json!({})).queue("maintenance"),
            )
            .unwrap(),
        );
    scheduler
}

on_all_drivers!(two_schedulers_enqueue_each_occurrence_once, |h| {
    let clock = ManualClock::at(T0);
    let a = scheduler(h.queue.clone(), &clock);
    let b = scheduler(h.replica().await, &clock);
    let mut total = TickReport::default();
    for _second in 0..60 {
        let (ra, rb) = tokio::join!(a.tick(), b.tick());
        for report in [ra.unwrap(), rb.unwrap()] {
            total.enqueued += report.enqueued;
            total.duplicates += report.duplicates;
        }
        clock.advance(1_000);
    }
    // Six occurrences of the ten-second sweep (T0 … T0+50 s) and none of the
    // hourly job (T0 is not on the hour, and the last hour began too long ago).
    let jobs = h
        .queue
        .list(&JobFilter {
            queue: Some("maintenance".to_owned()),
            limit: Some(1000),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let ticks: HashSet<i64> = jobs.iter().map(|j| j.run_at).collect();
    let expected: HashSet<i64> = (0..6).map(|k| T0 + k * 10_000).collect();
    assert_eq!(ticks, expected);
    assert_eq!(jobs.len(), 6, "one job per occurrence");
    assert!(jobs.iter().all(|j| j.kind == "sweep"));
    assert_eq!(total.enqueued, 6);
    assert_eq!(total.duplicates, 6, "each scheduler saw every occurrence");

    // A scheduler starting late skips occurrences past the lateness bound.
    clock.advance(5_000);
    let mut late = scheduler(h.replica().await, &clock);
    late.max_lateness(Duration::from_secs(1));
    assert_eq!(late.tick().await.unwrap(), TickReport::default());
    // One that is on time catches the current occurrence.
    clock.advance(5_000);
    assert_eq!(late.tick().await.unwrap().enqueued, 1);
});

#[test]
fn bad_cron_patterns_are_refused_with_the_job_name() {
    let error =
        PeriodicJob::new("broken", "every tuesday", NewJob::new("k", json!({}))).unwrap_err();
    assert!(matches!(&error, QueueError::Cron { name, .. } if name == "broken"));
    assert!(error.to_string().contains("every tuesday"));
}
