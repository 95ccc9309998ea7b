//! The sandbox's PID counter, rewound by a reset.
//!
//! A PID namespace hands out PIDs in turn, so without a rewind the next
//! run in a reused sandbox would see, in its own PIDs, how many processes
//! (and agent threads) the runs before it made. The counter is the PID
//! namespace's `kernel.ns_last_pid`: writing it needs
//! `CAP_CHECKPOINT_RESTORE` in the namespace's user namespace, which the
//! agent holds and its programs never do (see `privileges.rs`), and a
//! writable `/proc/sys`, which the sandbox's is not. So the host opens its
//! own `/proc/sys/kernel/ns_last_pid` and passes it as [`PIDS_FD`]: the
//! kernel applies a read or write of that file to the PID namespace of
//! the process doing it, here the sandbox's.

use std::fs::File;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// The descriptor the host passes `ns_last_pid` on (after the listening
/// socket at 3).
pub const PIDS_FD: i32 = 4;

/// The sandbox's `ns_last_pid`.
#[derive(Debug)]
pub struct PidCounter {
    file: File,
}

impl PidCounter {
    /// Adopts [`PIDS_FD`]; an error when it is not open or not an
    /// `ns_last_pid` this process can read (a host that could not open
    /// its own passes `/dev/null`).
    pub fn adopt() -> Result<PidCounter, String> {
        // SAFETY: `fcntl(F_GETFD)` only asks whether the descriptor is
        // open; it has no other effect.
        let borrowed = unsafe { BorrowedFd::borrow_raw(PIDS_FD) };
        nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)
            .map_err(|e| format!("no PID counter on fd {PIDS_FD}: {e}"))?;
        // SAFETY: fd 4 is open (checked above; the OCI runtime passed it
        // with `--preserve-fds 2`) and nothing else in the agent owns or
        // closes it: ownership moves here exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(PIDS_FD) };
        // Inheritable as passed: no program may have it.
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| format!("making fd {PIDS_FD} close-on-exec: {e}"))?;
        let counter = PidCounter {
            file: File::from(fd),
        };
        counter.last()?;
        Ok(counter)
    }

    /// The last PID handed out in the sandbox.
    pub fn last(&self) -> Result<i32, String> {
        let mut text = [0u8; 16];
        let read = self
            .file
            .read_at(&mut text, 0)
            .map_err(|e| format!("reading the PID counter: {e}"))?;
        let text = std::str::from_utf8(&text[..read])
            .unwrap_or_default()
            .trim();
        text.parse()
            .map_err(|_| format!("the PID counter reads {text:?}, not a number"))
    }

    /// Makes `last` the last PID handed out: the next process or thread
    /// gets `last + 1` (or the next free one after it).
    pub fn rewind(&self, last: i32) -> Result<(), String> {
        self.file
            .write_all_at(last.to_string().as_bytes(), 0)
            .map_err(|e| format!("rewinding the PID counter to {last}: {e}"))
    }
}
