//! Standard input of the running execs that keep it open
//! (`stream_stdin`): the exec's event stream registers a channel here under
//! a fresh id, and `POST /api/v1/sandboxes/{id}/exec/{exec_id}/stdin` finds
//! it again, for the same org and sandbox only. The entry goes when the
//! exec ends, which also ends the channel.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use corral_types::terminal::ProcessStdinRequest;

/// Writes a client may have in flight to one exec before the next waits
/// for the program to read (backpressure instead of unbounded memory).
const QUEUED_WRITES: usize = 8;

/// Every open exec standard input on this server.
#[derive(Debug, Default)]
pub struct ExecInputs {
    open: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    org_id: String,
    sandbox_id: String,
    tx: SyncSender<ProcessStdinRequest>,
    closed: bool,
}

/// Why a write to an exec's standard input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinRefused {
    /// No such exec of this org and sandbox (or it has ended).
    NotFound,
    /// An earlier write closed it.
    Closed,
}

/// Removes its entry when dropped (the exec ended, however it ended).
#[derive(Debug)]
pub struct Registration {
    inputs: Arc<ExecInputs>,
    exec_id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inputs.lock().remove(&self.exec_id);
    }
}

impl ExecInputs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new exec of `sandbox_id`: its id, where its input
    /// arrives, and the registration that ends with it.
    pub fn open(
        self: &Arc<Self>,
        org_id: &str,
        sandbox_id: &str,
    ) -> (String, Receiver<ProcessStdinRequest>, Registration) {
        let exec_id = corral_core::id::new_id();
        let (tx, rx) = sync_channel(QUEUED_WRITES);
        self.lock().insert(
            exec_id.clone(),
            Entry {
                org_id: org_id.to_owned(),
                sandbox_id: sandbox_id.to_owned(),
                tx,
                closed: false,
            },
        );
        let registration = Registration {
            inputs: self.clone(),
            exec_id: exec_id.clone(),
        };
        (exec_id, rx, registration)
    }

    /// Where a write to exec `exec_id` of `org_id`'s `sandbox_id` goes
    /// (marking it closed when this write closes it).
    pub fn sender(
        &self,
        org_id: &str,
        sandbox_id: &str,
        exec_id: &str,
        closing: bool,
    ) -> Result<SyncSender<ProcessStdinRequest>, StdinRefused> {
        let mut open = self.lock();
        let entry = open
            .get_mut(exec_id)
            .filter(|e| e.org_id == org_id && e.sandbox_id == sandbox_id)
            .ok_or(StdinRefused::NotFound)?;
        if entry.closed {
            return Err(StdinRefused::Closed);
        }
        entry.closed = closing;
        Ok(entry.tx.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_org_and_sandbox_find_an_open_input_until_it_closes_or_ends() {
        let inputs = Arc::new(ExecInputs::default());
        let (id, rx, registration) = inputs.open("org-a", "sb-1");
        assert_eq!(
            inputs.sender("org-b", "sb-1", &id, false).err(),
            Some(StdinRefused::NotFound)
        );
        assert_eq!(
            inputs.sender("org-a", "sb-2", &id, false).err(),
            Some(StdinRefused::NotFound)
        );
        let tx = inputs.sender("org-a", "sb-1", &id, true).unwrap();
        tx.send(ProcessStdinRequest {
            data: "x".into(),
            close: true,
        })
        .unwrap();
        assert_eq!(rx.recv().unwrap().data, "x");
        assert_eq!(
            inputs.sender("org-a", "sb-1", &id, false).err(),
            Some(StdinRefused::Closed)
        );
        drop(registration);
        assert_eq!(
            inputs.sender("org-a", "sb-1", &id, false).err(),
            Some(StdinRefused::NotFound)
        );
    }
}
