//! Which process on this host owns each sandbox it started, so a
//! reconciler removes only its own orphans and those whose owner is gone,
//! never a sandbox another live process (a `corral queue work` beside a
//! `corral serve`) is using.
//!
//! Each process that starts sandboxes is an *instance*: a random id and a
//! file `instances/<id>` it holds an exclusive lock on for as long as it
//! runs (the kernel releases the lock when the process ends, however it
//! ends, so a crash cannot leave it held). Before a sandbox's container
//! exists, `sandboxes/<sandbox id>` names its instance. Both live in a
//! directory beside the sandboxes' own (`<sandbox dir>.owners`), on the
//! same host state as the containers.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Who owns a sandbox, as one reconciler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This instance.
    Me,
    /// Another instance that still runs: not this reconciler's to remove.
    Alive,
    /// An instance that has ended, or none recorded (started before owners
    /// were recorded): an orphan when no record claims it.
    Gone,
}

/// This process's instance: created (and locked) on its first sandbox.
#[derive(Debug, Clone)]
pub struct Owners {
    dir: PathBuf,
    me: Arc<OnceLock<Instance>>,
}

#[derive(Debug)]
struct Instance {
    id: String,
    /// Held open: the exclusive lock on it is what says this instance runs.
    _lock: File,
}

impl Owners {
    /// The owners of the sandboxes in `sandbox_dir`.
    pub fn beside(sandbox_dir: &Path) -> Owners {
        Owners {
            dir: sandbox_dir.with_extension("owners"),
            me: Arc::default(),
        }
    }

    fn instances(&self) -> PathBuf {
        self.dir.join("instances")
    }

    fn marker(&self, sandbox_id: &str) -> PathBuf {
        self.dir.join("sandboxes").join(sandbox_id)
    }

    /// This instance's id, making and locking its file on first use.
    fn me(&self) -> std::io::Result<&str> {
        if let Some(instance) = self.me.get() {
            return Ok(&instance.id);
        }
        std::fs::create_dir_all(self.instances())?;
        std::fs::create_dir_all(self.dir.join("sandboxes"))?;
        let id = corral_core::id::new_id();
        let lock = File::create(self.instances().join(&id))?;
        // A fresh file no one else knows yet: the lock is free.
        lock.try_lock().map_err(std::io::Error::other)?;
        // Another thread may have won the race; its instance is the one.
        let instance = self.me.get_or_init(|| Instance { id, _lock: lock });
        Ok(&instance.id)
    }

    /// Records this instance as sandbox `sandbox_id`'s owner (before its
    /// container exists, so no reconciler ever sees it unowned).
    pub fn claim(&self, sandbox_id: &str) -> std::io::Result<()> {
        let me = self.me()?.to_owned();
        std::fs::write(self.marker(sandbox_id), me)
    }

    /// Forgets sandbox `sandbox_id`'s owner (it is gone).
    pub fn release(&self, sandbox_id: &str) {
        match std::fs::remove_file(self.marker(sandbox_id)) {
            Err(error) if error.kind() != ErrorKind::NotFound => {
                tracing::warn!(%error, sandbox_id, "removing a sandbox's owner failed");
            }
            _ => {}
        }
    }

    /// Removes the files of instances that have ended (their lock free).
    pub fn prune_instances(&self) {
        let Ok(entries) = std::fs::read_dir(self.instances()) else {
            return;
        };
        let me = self.me.get().map(|me| me.id.as_str());
        for entry in entries.flatten() {
            if me == Some(entry.file_name().to_string_lossy().as_ref()) {
                continue;
            }
            let free = File::open(entry.path()).is_ok_and(|file| file.try_lock().is_ok());
            if free {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Every sandbox whose owner was recorded at least `age` ago (a younger
    /// one may be starting: its directory not made yet).
    pub fn sandboxes_older_than(&self, age: std::time::Duration) -> Vec<String> {
        let old_enough = |entry: &std::fs::DirEntry| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age)
        };
        std::fs::read_dir(self.dir.join("sandboxes"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(old_enough)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Who owns sandbox `sandbox_id`.
    pub fn of(&self, sandbox_id: &str) -> Owner {
        let Ok(instance) = std::fs::read_to_string(self.marker(sandbox_id)) else {
            return Owner::Gone;
        };
        if self.me.get().is_some_and(|me| me.id == instance) {
            return Owner::Me;
        }
        // Not a path elsewhere: instance ids are ours, but the file is on
        // disk and read back.
        if instance.is_empty() || instance.contains(['/', '\0']) || instance.starts_with('.') {
            return Owner::Gone;
        }
        let path = self.instances().join(&instance);
        match File::open(&path).map(|file| file.try_lock()) {
            Ok(Err(std::fs::TryLockError::WouldBlock)) => Owner::Alive,
            Ok(Ok(())) => {
                // No one holds it: that instance has ended.
                let _ = std::fs::remove_file(&path);
                Owner::Gone
            }
            Ok(Err(std::fs::TryLockError::Error(error))) => {
                // Cannot tell: keeping a sandbox is the safe side.
                tracing::warn!(%error, path = %path.display(), "cannot tell whether a sandbox's owner runs");
                Owner::Alive
            }
            Err(_) => Owner::Gone,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed step fails the test"
    )]

    use super::*;

    #[test]
    fn a_sandbox_is_its_owners_while_it_runs_and_an_orphan_after() {
        let dir = tempfile::tempdir().unwrap();
        let sandboxes = dir.path().join("sandboxes");
        let (worker, server) = (Owners::beside(&sandboxes), Owners::beside(&sandboxes));
        worker.claim("judged").unwrap();
        assert_eq!(worker.of("judged"), Owner::Me);
        assert_eq!(server.of("judged"), Owner::Alive);
        assert_eq!(server.of("never-claimed"), Owner::Gone);
        server.prune_instances();
        assert_eq!(server.of("judged"), Owner::Alive, "a live instance is kept");

        drop(worker);
        server.claim("served").unwrap();
        server.prune_instances();
        let instances = std::fs::read_dir(dir.path().join("sandboxes.owners/instances"))
            .unwrap()
            .count();
        assert_eq!(instances, 1, "only the server's instance is left");
        assert_eq!(server.of("judged"), Owner::Gone);
        server.release("judged");
        assert_eq!(
            server.sandboxes_older_than(std::time::Duration::ZERO),
            ["served"]
        );
    }
}
