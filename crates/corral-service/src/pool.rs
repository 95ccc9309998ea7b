//! Warm pools: sandboxes started ahead of demand, one pool per class
//! (image and resources, from `sandbox.pool`), so a create asking for
//! exactly such a sandbox takes one that is already running instead of
//! waiting for the runtime.
//!
//! A warm sandbox has a container, a directory and a uid-range slot, but no
//! record: nobody owns it yet. Creating takes one ([`Pool::take`]) and
//! records it under its own id and slot; the slot is checked free in the
//! store when the warm sandbox is made, and the store's UNIQUE slot column
//! has the last word. Ids stay [`Pool::holds`]-protected from the
//! reconciler until the claim is settled, so a sandbox is never destroyed
//! as an orphan between leaving the pool and its record being written.
//! After a crash, warm sandboxes have no record and the start-up
//! reconciler removes them like any orphan.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Config;

/// How long the refill waits after a take before it starts a replacement.
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// What makes two sandboxes interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Image.
    pub image: String,
    /// Memory, MiB.
    pub memory_mb: i64,
    /// CPU, thousandths of a core.
    pub cpu_millicores: i64,
    /// Processes.
    pub pids: i64,
    /// Writable space, MiB.
    pub disk_mb: i64,
}

/// A started sandbox waiting for an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warm {
    /// Its id (it keeps it when claimed).
    pub id: String,
    /// Its uid-range slot.
    pub slot: i64,
}

/// A reset execution sandbox waiting for its organization's next run.
#[derive(Debug)]
struct Reused {
    key: PoolKey,
    org_id: String,
    warm: Warm,
}

/// The warm pools of this host.
#[derive(Debug, Default)]
pub struct Pool {
    /// Each class and how many to keep ready.
    classes: Vec<(PoolKey, usize)>,
    ready: Mutex<HashMap<PoolKey, Vec<Warm>>>,
    /// Execution sandboxes that were reset after a run, oldest first, each
    /// kept for its organization only (`executions.reuse_sandboxes` at most).
    reused: Mutex<VecDeque<Reused>>,
    reuse_limit: usize,
    /// Ids ready or being claimed: not orphans.
    held: Mutex<HashSet<String>>,
    /// Wakes the refill loop after a take.
    wake: Notify,
    /// Sandboxes being started for the pool right now.
    starting: std::sync::atomic::AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pool {
    /// The classes of `sandbox.pool`, with a create request's defaults.
    pub fn new(config: &Config) -> Pool {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "a CPU count in cores, far below i64::MAX"
        )]
        let classes = config
            .sandbox
            .pool
            .iter()
            .filter(|class| class.size > 0)
            .map(|class| {
                let image = if class.image == crate::driver::HOST_IMAGE {
                    class.image.clone()
                } else {
                    corral_runtime::image::normalize(&class.image)
                        .unwrap_or_else(|_| class.image.clone())
                };
                let key = PoolKey {
                    image,
                    memory_mb: class.memory_mb.unwrap_or(config.sandbox.default_memory_mb),
                    cpu_millicores: class.cpu.map_or(1000, |c| (c * 1000.0).round() as i64),
                    pids: class.pids.unwrap_or(crate::sandbox::SANDBOX_PIDS),
                    disk_mb: class.disk_mb.unwrap_or(crate::sandbox::SANDBOX_DISK_MB),
                };
                (key, class.size)
            })
            .collect();
        Pool {
            classes,
            reuse_limit: config.executions.reuse_sandboxes,
            ..Pool::default()
        }
    }

    /// Whether any class is configured.
    pub fn enabled(&self) -> bool {
        !self.classes.is_empty()
    }

    /// A ready sandbox of class `key`, if there is one. Settle it with
    /// [`Pool::settle`] once it is recorded (or destroyed).
    pub fn take(&self, key: &PoolKey) -> Option<Warm> {
        let warm = lock(&self.ready).get_mut(key).and_then(Vec::pop);
        if warm.is_some() {
            self.wake.notify_one();
        }
        warm
    }

    /// The claim of `id` is over: it is recorded, or destroyed.
    pub fn settle(&self, id: &str) {
        lock(&self.held).remove(id);
    }

    /// Returns a taken sandbox that could not be claimed.
    pub fn put_back(&self, key: PoolKey, warm: Warm) {
        lock(&self.ready).entry(key).or_default().push(warm);
    }

    /// Whether `id` is a warm sandbox (ready or being claimed).
    pub fn holds(&self, id: &str) -> bool {
        lock(&self.held).contains(id)
    }

    /// Whether `slot` belongs to a warm sandbox.
    fn slot_held(&self, slot: i64) -> bool {
        lock(&self.ready)
            .values()
            .flatten()
            .any(|warm| warm.slot == slot)
            || lock(&self.reused).iter().any(|r| r.warm.slot == slot)
    }

    /// A reset execution sandbox of class `key` that last ran for `org_id`
    /// (the most recently kept: its pages are the warmest). Settle it like
    /// a taken one.
    pub fn take_reused(&self, key: &PoolKey, org_id: &str) -> Option<Warm> {
        let mut reused = lock(&self.reused);
        let at = reused
            .iter()
            .rposition(|r| r.key == *key && r.org_id == org_id)?;
        reused.remove(at).map(|r| r.warm)
    }

    /// Keeps a reset execution sandbox for `org_id`'s next run of class
    /// `key`; it stays held. Returns what no longer fits (the oldest kept,
    /// or this one when reuse is off), for the caller to destroy and settle.
    pub fn keep_reused(&self, key: PoolKey, org_id: &str, warm: Warm) -> Option<Warm> {
        if self.reuse_limit == 0 {
            return Some(warm);
        }
        let mut reused = lock(&self.reused);
        reused.push_back(Reused {
            key,
            org_id: org_id.to_owned(),
            warm,
        });
        (reused.len() > self.reuse_limit)
            .then(|| reused.pop_front().map(|r| r.warm))
            .flatten()
    }

    /// How many reset execution sandboxes are kept.
    pub fn reused(&self) -> usize {
        lock(&self.reused).len()
    }

    /// How many are ready in class `key`.
    pub fn ready(&self, key: &PoolKey) -> usize {
        lock(&self.ready).get(key).map_or(0, Vec::len)
    }

    /// How many sandboxes are being started for the pool right now.
    pub fn starting(&self) -> usize {
        self.starting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every ready sandbox, removed from the pool (for shutdown).
    pub fn drain(&self) -> Vec<Warm> {
        let mut drained: Vec<Warm> = lock(&self.ready).drain().flat_map(|(_, v)| v).collect();
        drained.extend(lock(&self.reused).drain(..).map(|r| r.warm));
        let mut held = lock(&self.held);
        for warm in &drained {
            held.remove(&warm.id);
        }
        drained
    }

    /// Keeps every class full, forever: starts one sandbox at a time where
    /// one is missing; sleeps until a take (or a minute) when all are full,
    /// and backs off (up to five minutes) while starts fail.
    pub async fn refill(
        &self,
        driver: &dyn crate::driver::SandboxDriver,
        store: &corral_store::Store,
    ) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let missing = self
                .classes
                .iter()
                .find(|(key, size)| self.ready(key) < *size)
                .map(|(key, _)| key.clone());
            let Some(key) = missing else {
                if tokio::time::timeout(Duration::from_secs(60), self.wake.notified())
                    .await
                    .is_ok()
                {
                    // Woken by a take: let that create finish before a new
                    // start competes with it for the CPUs.
                    tokio::time::sleep(REFILL_DELAY).await;
                }
                continue;
            };
            self.starting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let made = self.make(driver, store, &key).await;
            if let Ok(warm) = &made {
                self.put_back(key.clone(), warm.clone());
            }
            self.starting
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            match made {
                Ok(_) => backoff = Duration::from_secs(1),
                Err(error) => {
                    tracing::warn!(%error, image = %key.image, "cannot start a warm sandbox; will retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                }
            }
        }
    }

    /// A sandbox of class `key` for one-off work with no record (an
    /// execution): a warm one when there is one, else started now. It is
    /// protected from the reconciler until [`Pool::settle`]; the caller
    /// destroys it and settles.
    pub async fn take_or_start(
        &self,
        driver: &dyn crate::driver::SandboxDriver,
        store: &corral_store::Store,
        key: &PoolKey,
    ) -> Result<Warm, String> {
        match self.take(key) {
            Some(warm) => Ok(warm),
            None => self.make(driver, store, key).await,
        }
    }

    /// Starts one warm sandbox of class `key` in a free slot.
    async fn make(
        &self,
        driver: &dyn crate::driver::SandboxDriver,
        store: &corral_store::Store,
        key: &PoolKey,
    ) -> Result<Warm, String> {
        let mut slot = None;
        for _ in 0..8 {
            let candidate = crate::sandbox::rand_slot();
            if !self.slot_held(candidate)
                && !store
                    .sandbox_slot_taken(candidate)
                    .await
                    .map_err(|e| e.to_string())?
            {
                slot = Some(candidate);
                break;
            }
        }
        let slot = slot.ok_or("no free sandbox id range")?;
        let warm = Warm {
            id: corral_core::id::new_id(),
            slot,
        };
        lock(&self.held).insert(warm.id.clone());
        let started = driver
            .create(crate::driver::Placement {
                id: warm.id.clone(),
                slot,
                limits: crate::sandbox::limits_for(
                    key.memory_mb,
                    key.cpu_millicores,
                    key.pids,
                    key.disk_mb,
                ),
                image: key.image.clone(),
            })
            .await;
        if let Err(error) = started {
            self.settle(&warm.id);
            return Err(error);
        }
        Ok(warm)
    }
}
