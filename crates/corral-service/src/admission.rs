//! Fair judging: how many of one org's executions run at once.
//!
//! Each org has a line of its own with as many places as its plan's
//! `max_concurrent_executions`; an execution takes a place before its
//! sandbox is chosen and gives it back when its verdict is written. The
//! rest wait in line, first come first served (tokio's semaphore is fair).
//! So one org's flood holds at most its own places' share of the CPUs, and
//! another org's run waits at most for a place of its own line, never
//! behind the flood. Verdicts do not depend on it either way: the CPU limit
//! is what the cgroup counts, and the wall limit starts when the run does.
//!
//! Per server process: replicas each admit up to the cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

impl Admission {
    /// `org`'s line, made (or remade, when its plan changed: runs already
    /// in the old one finish there) with `places` (at least one).
    fn line(&self, org: &str, places: usize) -> Arc<Semaphore> {
        let places = places.max(1);
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = lines
            .entry(org.to_owned())
            .or_insert_with(|| (places, Arc::new(Semaphore::new(places))));
        if entry.0 != places {
            *entry = (places, Arc::new(Semaphore::new(places)));
        }
        entry.1.clone()
    }
}

/// The lines of every org that has run something.
#[derive(Debug, Default)]
pub struct Admission {
    /// org → (places, its line).
    lines: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

/// A place in an org's line: held while the execution runs.
#[derive(Debug)]
pub struct Place {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Admission {
    /// Waits for one of `org`'s `places` (at least one) to be free.
    pub async fn enter(&self, org: &str, places: usize) -> Place {
        let line = self.line(org, places);
        // Never closed, so acquiring cannot fail; if it ever did, running
        // without a place is better than refusing the execution.
        Place {
            _permit: line.acquire_owned().await.ok(),
        }
    }

    /// One of `org`'s `places` if one is free now, without waiting.
    pub fn try_enter(&self, org: &str, places: usize) -> Option<Place> {
        let line = self.line(org, places);
        line.try_acquire_owned().ok().map(|permit| Place {
            _permit: Some(permit),
        })
    }

    /// How many of `org`'s executions hold a place now.
    pub fn running(&self, org: &str) -> usize {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .get(org)
            .map_or(0, |(places, line)| places - line.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_org_runs_at_most_its_places_and_others_are_not_held_up() {
        let admission = Arc::new(Admission::default());
        let first = admission.enter("flood", 2).await;
        let _second = admission.enter("flood", 2).await;
        assert_eq!(admission.running("flood"), 2);
        // A third of the same org waits…
        let waiting = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.enter("flood", 2).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // …while another org gets its place at once.
        let other = admission.enter("other", 2).await;
        assert_eq!(admission.running("other"), 1);
        drop(other);
        // Without waiting: none free for the flood, one for the other org.
        assert!(admission.try_enter("flood", 2).is_none());
        assert!(admission.try_enter("other", 2).is_some());
        // A place freed goes to the one waiting.
        drop(first);
        let third = waiting.await.unwrap();
        assert_eq!(admission.running("flood"), 2);
        drop(third);
        assert_eq!(admission.running("flood"), 1);
    }
}
