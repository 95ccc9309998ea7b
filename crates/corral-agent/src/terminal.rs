//! Persistent terminals: a program on a PTY that keeps running with no
//! client attached, like a tmux session.
//!
//! Output flows from one reader thread per PTY to every attached client.
//! The reader sends each read straight to a client's connection when that
//! connection has room and nothing is queued for it (a non-blocking send:
//! one system call, no hand-off to another thread); what does not fit is
//! queued, bounded by [`CLIENT_QUEUE_BYTES`], for the client's pump thread,
//! which writes it in large pieces. A client whose queue fills is waited
//! for, as any terminal waits for its reader, but at most [`CATCH_UP`] and
//! only once: a client that gets back to half a queue in that time keeps
//! receiving every byte (it paces the program); one that does not is slow:
//! it loses its queue, gets the screen redrawn when it catches up, and is
//! never waited for again. So no client holds up the PTY or the others for
//! longer than that one wait.
//!
//! The screen (a `vt100` parser) is kept off that path: parsing runs at
//! about 10 MB/s, far below what a PTY delivers, so a parser thread parses
//! the recent-output ring in passes, once output pauses (or every
//! [`PARSE_STALE`] during a flood). When more than [`PARSE_WINDOW`] came
//! since the last pass (a flood, such as `cat` of a big file) only the last
//! window is parsed, onto a blank screen: the visible screen after a flood
//! is determined by its last lines, and the agent spends a few percent of a
//! core keeping up, never a share per byte. A redraw first parses whatever
//! is still unparsed, so what it paints matches the output that follows it
//! exactly.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::num::NonZeroU16;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use corral_types::agent::{AgentResponse, SpawnRequest};
use corral_types::terminal::{TerminalInfo, TerminalInput};

use crate::privileges::RunAs;
use crate::{Waiters, fs, send, spawn_watched, unix_now};

/// Most terminals one sandbox keeps (running or ended).
const MAX_TERMINALS: usize = 32;
/// Most clients attached to one terminal at once.
const MAX_CLIENTS: usize = 16;
/// Raw output kept for a client that attaches (the "recent output"); the
/// parser reads its input from the same ring.
const RECENT_BYTES: usize = 64 * 1024;
/// Output a client may be behind (queued, or taken by its pump and not yet
/// written) before it is waited for, or dropped and redrawn.
const CLIENT_QUEUE_BYTES: usize = 2 * 1024 * 1024;
/// How long the reader waits, once per client, for a full client to get
/// back to half a queue before it counts as slow.
const CATCH_UP: Duration = Duration::from_millis(500);
/// Largest write of the pump: the backlog shrinks piece by piece, so a
/// reader waiting for it sees the client's progress.
const WRITE_PIECE: usize = 64 * 1024;
/// A queue buffer larger than this is given back once the client caught up.
const KEEP_QUEUE_BYTES: usize = 256 * 1024;
/// The most output parsed in one pass; older output is skipped.
const PARSE_WINDOW: usize = 64 * 1024;
/// The parser waits for output to pause this long before a pass...
const PARSE_QUIET: Duration = Duration::from_millis(10);
/// ...but no longer than this during a flood.
const PARSE_STALE: Duration = Duration::from_millis(250);
/// Longest a `TerminalWait` waits for a program to end.
const EXIT_WAIT: Duration = Duration::from_secs(5);
/// Largest terminal, in rows or columns.
const MAX_SIZE: u16 = 1000;

// The parser's input is the tail of the recent-output ring.
const _: () = assert!(PARSE_WINDOW <= RECENT_BYTES);

nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, nix::pty::Winsize);
nix::ioctl_write_int_bad!(set_controlling_tty, nix::libc::TIOCSCTTY);
nix::ioctl_write_int_bad!(open_peer, nix::libc::TIOCGPTPEER);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// Every terminal of the sandbox.
#[derive(Default)]
pub struct Terminals {
    by_id: Mutex<Vec<Arc<Terminal>>>,
    next_id: AtomicU64,
}

struct Terminal {
    id: String,
    pid: i32,
    command: Vec<String>,
    created_at: i64,
    /// For input and resizes.
    master: File,
    /// The screen model; lock before `output` when both are needed.
    screen: Mutex<Screen>,
    output: Mutex<Output>,
    /// Wakes the parser thread.
    unparsed: Condvar,
    /// Signalled when `output.ended` is set.
    exited: Condvar,
}

struct Screen {
    parser: vt100::Parser,
}

impl Screen {
    /// Parses output taken by [`Output::take_unparsed`].
    fn apply(&mut self, (unparsed, skipped): (Vec<u8>, bool), rows: u16, cols: u16) {
        if skipped {
            self.parser = new_parser(rows, cols);
        }
        self.parser.process(&unparsed);
    }
}

struct Output {
    /// The most recent raw output, at most [`RECENT_BYTES`].
    recent: VecDeque<u8>,
    /// Bytes of output so far.
    written: u64,
    /// Bytes of output the screen has been given (or has skipped).
    parsed: u64,
    /// The parser thread waits for output: the reader must wake it.
    parser_waiting: bool,
    clients: Vec<Arc<Client>>,
    cols: u16,
    rows: u16,
    /// How the program ended, once it has.
    ended: Option<(Option<i32>, Option<i32>)>,
    /// The PTY has no writer left (everything on it exited).
    closed: bool,
}

impl Output {
    /// Appends one read to the recent-output ring.
    fn record(&mut self, data: &[u8]) {
        self.recent.extend(data);
        let excess = self.recent.len().saturating_sub(RECENT_BYTES);
        self.recent.drain(..excess);
        self.written += data.len() as u64;
    }

    /// The output the screen has not seen, and whether the screen must
    /// start blank (more than a window of it came since the last pass).
    fn take_unparsed(&mut self) -> (Vec<u8>, bool) {
        let behind = self.written - self.parsed;
        self.parsed = self.written;
        let skipped = behind > PARSE_WINDOW as u64;
        let take = usize::try_from(behind)
            .unwrap_or(usize::MAX)
            .min(PARSE_WINDOW)
            .min(self.recent.len());
        (tail(&self.recent, take), skipped)
    }
}

/// The last `n` bytes of a ring (`n` at most its length).
fn tail(ring: &VecDeque<u8>, n: usize) -> Vec<u8> {
    let (front, back) = ring.as_slices();
    let mut out = Vec::with_capacity(n);
    if n > back.len() {
        let from_front = (n - back.len()).min(front.len());
        out.extend_from_slice(&front[front.len() - from_front..]);
        out.extend_from_slice(back);
    } else {
        out.extend_from_slice(&back[back.len() - n..]);
    }
    out
}

/// One attached connection.
struct Client {
    queue: Mutex<ClientQueue>,
    /// Wakes the pump.
    ready: Condvar,
    /// Wakes a reader waiting for this client to catch up.
    drained: Condvar,
    /// The connection, for the reader's non-blocking sends.
    socket: UnixStream,
}

struct ClientQueue {
    /// Output for the pump to write, oldest first.
    queued: Vec<u8>,
    /// Output the pump took and has not written yet.
    in_flight: usize,
    /// The pump owns the connection (it has output to write, or the
    /// greeting is still being sent): the reader only queues.
    pumping: bool,
    /// The queue overflowed: send a redraw instead of what was dropped.
    redraw: bool,
    /// No more output will come (the terminal ended, it was closed, or the
    /// connection broke).
    done: bool,
    /// This client fell behind once: it is never waited for again.
    slow: bool,
    /// The reader waits on `drained`.
    reader_waiting: bool,
}

impl ClientQueue {
    /// How far behind the client is.
    fn behind(&self) -> usize {
        self.queued.len() + self.in_flight
    }

    /// Drops what is queued: the client gets a redraw instead.
    fn drop_for_redraw(&mut self) {
        self.queued.clear();
        self.redraw = true;
    }
}

impl Client {
    /// A client whose pump is about to send the greeting.
    fn new(socket: UnixStream) -> Client {
        Client {
            queue: Mutex::new(ClientQueue {
                queued: Vec::new(),
                in_flight: 0,
                pumping: true,
                redraw: false,
                done: false,
                slow: false,
                reader_waiting: false,
            }),
            ready: Condvar::new(),
            drained: Condvar::new(),
            socket,
        }
    }

    /// Gives the client one read of output without ever blocking: straight
    /// to its connection when nothing is queued, else to its queue. `true`
    /// when the client is a queue behind and may be waited for
    /// ([`Client::catch_up`]).
    fn push(&self, data: &[u8]) -> bool {
        let mut queue = lock(&self.queue);
        if queue.redraw || queue.done {
            // The redraw will paint this output; after the end there is none.
            return false;
        }
        if !queue.pumping {
            let sent = match send_now(&self.socket, data) {
                Ok(sent) => sent,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => 0,
                Err(_) => {
                    // The host went away: the pump ends the connection.
                    queue.done = true;
                    self.ready.notify_one();
                    return false;
                }
            };
            if sent == data.len() {
                return false;
            }
            queue.queued.extend_from_slice(&data[sent..]);
            queue.pumping = true;
            self.ready.notify_one();
            return false;
        }
        if queue.behind() + data.len() > CLIENT_QUEUE_BYTES {
            if queue.slow {
                queue.drop_for_redraw();
                return false;
            }
            // Over by one read at most: the reader now waits for it.
            queue.queued.extend_from_slice(data);
            return true;
        }
        queue.queued.extend_from_slice(data);
        false
    }

    /// Waits (until `deadline`) for a full client to get back to half a
    /// queue; a client that does not is slow: dropped, redrawn, and never
    /// waited for again.
    fn catch_up(&self, deadline: Instant) {
        let mut queue = lock(&self.queue);
        while queue.behind() > CLIENT_QUEUE_BYTES / 2 && !queue.redraw && !queue.done {
            let now = Instant::now();
            if now >= deadline {
                queue.drop_for_redraw();
                queue.slow = true;
                break;
            }
            queue.reader_waiting = true;
            queue = self
                .drained
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        queue.reader_waiting = false;
    }

    /// Counts `written` bytes off the backlog; `true` when a redraw is due
    /// (it replaces what is left in flight).
    fn wrote(&self, written: usize) -> bool {
        let mut queue = lock(&self.queue);
        queue.in_flight = queue.in_flight.saturating_sub(written);
        if queue.reader_waiting && queue.behind() <= CLIENT_QUEUE_BYTES / 2 {
            queue.reader_waiting = false;
            self.drained.notify_one();
        }
        if queue.redraw {
            queue.in_flight = 0;
        }
        queue.redraw
    }

    fn finish(&self) {
        lock(&self.queue).done = true;
        self.ready.notify_one();
        self.drained.notify_one();
    }
}

/// One non-blocking send on a client's connection.
fn send_now(socket: &UnixStream, data: &[u8]) -> nix::Result<usize> {
    use nix::sys::socket::{MsgFlags, send};
    send(
        socket.as_raw_fd(),
        data,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
}

fn size(rows: u16, cols: u16) -> (NonZeroU16, NonZeroU16) {
    let one = NonZeroU16::MIN;
    (
        NonZeroU16::new(rows).unwrap_or(one),
        NonZeroU16::new(cols).unwrap_or(one),
    )
}

fn new_parser(rows: u16, cols: u16) -> vt100::Parser {
    let (rows, cols) = size(rows, cols);
    vt100::Parser::new(rows, cols, 0)
}

impl Terminal {
    fn info(&self) -> TerminalInfo {
        let output = lock(&self.output);
        TerminalInfo {
            id: self.id.clone(),
            pid: self.pid,
            command: self.command.clone(),
            cols: output.cols,
            rows: output.rows,
            running: output.ended.is_none(),
            exit_code: output.ended.and_then(|e| e.0),
            signal: output.ended.and_then(|e| e.1),
            attached: u32::try_from(output.clients.len()).unwrap_or(u32::MAX),
            created_at: self.created_at,
        }
    }

    /// The bytes that paint the current screen and modes on a terminal,
    /// with `then` run while no output can arrive, so nothing is lost or
    /// painted twice between the redraw and what follows it.
    fn redraw(&self, then: impl FnOnce(&mut Output, &[u8])) {
        let mut screen = lock(&self.screen);
        let mut output = lock(&self.output);
        let unparsed = output.take_unparsed();
        screen.apply(unparsed, output.rows, output.cols);
        let mut bytes = b"\x1b[0m".to_vec();
        bytes.extend_from_slice(screen.parser.screen().state_formatted().as_bytes());
        then(&mut output, &bytes);
    }

    /// The parser thread: keeps the screen close to the output, a pass
    /// each time output pauses (every [`PARSE_STALE`] during a flood), and
    /// at most about a quarter of a core even then.
    fn parse_forever(&self) {
        loop {
            {
                let mut output = lock(&self.output);
                while output.written == output.parsed && !output.closed {
                    output.parser_waiting = true;
                    output = wait(&self.unparsed, output);
                }
                output.parser_waiting = false;
                if output.written == output.parsed {
                    // Closed, and everything parsed.
                    return;
                }
                // Let a burst finish: one pass over its end, not many over
                // its middle.
                let burst = Instant::now();
                while !output.closed && burst.elapsed() < PARSE_STALE {
                    let seen = output.written;
                    drop(output);
                    std::thread::sleep(PARSE_QUIET);
                    output = lock(&self.output);
                    if output.written == seen {
                        break;
                    }
                }
            }
            let started = Instant::now();
            {
                let mut screen = lock(&self.screen);
                let mut output = lock(&self.output);
                let unparsed = output.take_unparsed();
                let (rows, cols) = (output.rows, output.cols);
                // Parse without holding up the PTY reader.
                drop(output);
                screen.apply(unparsed, rows, cols);
            }
            let spent = started.elapsed();
            if spent > Duration::from_millis(2) {
                std::thread::sleep(spent * 3);
            }
        }
    }

    /// The PTY reader: fans output out to the clients.
    fn read_forever(&self, mut pty: File) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut behind: Vec<Arc<Client>> = Vec::new();
        loop {
            let n = match pty.read(&mut buf) {
                Ok(n) if n > 0 => n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                // EIO: every holder of the PTY's other side has gone.
                _ => break,
            };
            let data = &buf[..n];
            {
                let mut output = lock(&self.output);
                output.record(data);
                if output.parser_waiting {
                    output.parser_waiting = false;
                    self.unparsed.notify_one();
                }
                for client in &output.clients {
                    if client.push(data) {
                        behind.push(client.clone());
                    }
                }
            }
            // Flow control, outside the output lock: attaching, redraws
            // and the other clients go on meanwhile.
            if !behind.is_empty() {
                let deadline = Instant::now() + CATCH_UP;
                for client in behind.drain(..) {
                    client.catch_up(deadline);
                }
            }
        }
        let mut output = lock(&self.output);
        output.closed = true;
        for client in output.clients.drain(..) {
            client.finish();
        }
        self.unparsed.notify_one();
    }

    fn resize(&self, cols: u16, rows: u16) -> Result<(), String> {
        if !(1..=MAX_SIZE).contains(&cols) || !(1..=MAX_SIZE).contains(&rows) {
            return Err(format!("cols and rows must be 1–{MAX_SIZE}"));
        }
        let winsize = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which
        // points at a live local; the descriptor is this terminal's master.
        unsafe { set_window_size(self.master.as_raw_fd(), &winsize) }
            .map_err(|e| format!("resizing: {e}"))?;
        let mut screen = lock(&self.screen);
        let mut output = lock(&self.output);
        output.cols = cols;
        output.rows = rows;
        let (rows, cols) = size(rows, cols);
        screen.parser.screen_mut().set_size(rows, cols);
        Ok(())
    }

    /// Hangs the terminal up: its process group gets SIGHUP, then SIGKILL.
    fn hang_up(self: &Arc<Self>) {
        let group = Pid::from_raw(self.pid);
        let _ = killpg(group, Signal::SIGHUP);
        let _ = killpg(group, Signal::SIGCONT);
        let terminal = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            if lock(&terminal.output).ended.is_none() {
                let _ = killpg(group, Signal::SIGKILL);
            }
        });
        for client in lock(&self.output).clients.drain(..) {
            client.finish();
        }
    }
}

/// Opens a PTY pair: the master (close-on-exec from the start, so no
/// program spawned meanwhile by another thread inherits it) and its peer.
fn open_pty(rows: u16, cols: u16) -> std::io::Result<(File, OwnedFd)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let flags = (OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).bits();
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new
    // descriptor of the peer; no memory is passed. Opening the peer from
    // the master (not by its /dev/pts path) cannot be redirected.
    let peer = unsafe { open_peer(master.as_fd().as_raw_fd(), flags) }?;
    // SAFETY: the ioctl just returned this descriptor; nothing else owns it.
    let peer = unsafe { OwnedFd::from_raw_fd(peer) };
    let master = File::from(OwnedFd::from(master));
    let winsize = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: as in `Terminal::resize`.
    unsafe { set_window_size(master.as_raw_fd(), &winsize) }?;
    Ok((master, peer))
}

impl Terminals {
    /// Whether there are none (a reset is refused while there are).
    pub fn is_empty(&self) -> bool {
        lock(&self.by_id).is_empty()
    }

    fn find(&self, id: &str) -> Option<Arc<Terminal>> {
        lock(&self.by_id).iter().find(|t| t.id == id).cloned()
    }

    /// Starts a program on a new PTY.
    pub fn open(self: &Arc<Self>, request: SpawnRequest, waiters: &Arc<Waiters>) -> AgentResponse {
        let (cols, rows) = (request.cols, request.rows);
        if !(1..=MAX_SIZE).contains(&cols) || !(1..=MAX_SIZE).contains(&rows) {
            return fs::error("invalid", format!("cols and rows must be 1–{MAX_SIZE}"));
        }
        let Some((program, args)) = request.argv.split_first() else {
            return fs::error("invalid", "argv is empty");
        };
        {
            let mut all = lock(&self.by_id);
            if all.len() >= MAX_TERMINALS {
                // Make room by forgetting the oldest ended terminal.
                match all.iter().position(|t| lock(&t.output).ended.is_some()) {
                    Some(oldest) => {
                        all.remove(oldest);
                    }
                    None => {
                        return fs::error(
                            "too_large",
                            format!("this sandbox already has {MAX_TERMINALS} running terminals"),
                        );
                    }
                }
            }
        }
        let (master, peer) = match open_pty(rows, cols) {
            Ok(pair) => pair,
            Err(error) => return fs::error("failed", format!("opening a PTY: {error}")),
        };
        let stdio = || peer.try_clone().map(Stdio::from);
        let (Ok(stdin), Ok(stdout), Ok(stderr)) = (stdio(), stdio(), stdio()) else {
            return fs::error("failed", "duplicating the PTY");
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&request.cwd)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: between fork and exec the closure makes only two raw
        // system calls (setsid, ioctl), which are async-signal-safe, and
        // touches no memory the parent's other threads might hold locked.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                // Make the PTY (now stdin) the new session's controlling
                // terminal, so job control and ^C work.
                set_controlling_tty(0, 0)?;
                Ok(())
            });
        }
        let (child, ended) = match spawn_watched(&mut command, waiters, RunAs::Root) {
            Ok(spawned) => spawned,
            Err(error) => return fs::error("not_found", format!("cannot run {program}: {error}")),
        };
        drop(command);
        drop(peer);
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let (Ok(reader), Ok(input)) = (master.try_clone(), master.try_clone()) else {
            return fs::error("failed", "duplicating the PTY");
        };
        let terminal = Arc::new(Terminal {
            id: format!("t{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1),
            pid,
            command: request.argv.clone(),
            created_at: unix_now(),
            master: input,
            screen: Mutex::new(Screen {
                parser: new_parser(rows, cols),
            }),
            output: Mutex::new(Output {
                recent: VecDeque::new(),
                written: 0,
                parsed: 0,
                parser_waiting: false,
                clients: Vec::new(),
                cols,
                rows,
                ended: None,
                closed: false,
            }),
            unparsed: Condvar::new(),
            exited: Condvar::new(),
        });
        drop(master);
        {
            let terminal = terminal.clone();
            std::thread::spawn(move || terminal.read_forever(reader));
        }
        {
            let terminal = terminal.clone();
            std::thread::spawn(move || terminal.parse_forever());
        }
        {
            let terminal = terminal.clone();
            std::thread::spawn(move || {
                let how = ended.recv().map_or((None, None), |(how, _)| how);
                lock(&terminal.output).ended = Some(how);
                terminal.exited.notify_all();
                // The program is gone: its group's leftovers go with it, so
                // the PTY closes and attached clients see the end.
                let _ = killpg(Pid::from_raw(terminal.pid), Signal::SIGHUP);
                drop(child);
            });
        }
        let info = terminal.info();
        lock(&self.by_id).push(terminal);
        AgentResponse::Terminal(info)
    }

    /// Every terminal.
    pub fn list(&self) -> AgentResponse {
        let all: Vec<Arc<Terminal>> = lock(&self.by_id).clone();
        AgentResponse::Terminals {
            terminals: all.iter().map(|t| t.info()).collect(),
        }
    }

    /// Answers once the terminal's program has ended (or after
    /// [`EXIT_WAIT`], still running): its PTY can close a moment before
    /// its exit status is collected, and the host asks for that status
    /// when an attached connection ends.
    pub fn wait(&self, id: &str) -> AgentResponse {
        let Some(terminal) = self.find(id) else {
            return fs::error("not_found", format!("no terminal {id}"));
        };
        {
            let output = lock(&terminal.output);
            let _unused = terminal
                .exited
                .wait_timeout_while(output, EXIT_WAIT, |output| output.ended.is_none())
                .unwrap_or_else(PoisonError::into_inner);
        }
        AgentResponse::Terminal(terminal.info())
    }

    /// Ends one and forgets it.
    pub fn close(&self, id: &str) -> AgentResponse {
        let removed = {
            let mut all = lock(&self.by_id);
            all.iter()
                .position(|t| t.id == id)
                .map(|index| all.remove(index))
        };
        match removed {
            Some(terminal) => {
                terminal.hang_up();
                AgentResponse::Done
            }
            None => fs::error("not_found", format!("no terminal {id}")),
        }
    }

    /// Serves an attached connection until the terminal ends or the host
    /// goes away.
    pub fn attach(&self, id: &str, stream: &UnixStream, reader: BufReader<&UnixStream>) {
        let Some(terminal) = self.find(id) else {
            let _ = send(
                &mut &*stream,
                &fs::error("not_found", format!("no terminal {id}")),
            );
            return;
        };
        let (Ok(mut writer), Ok(direct)) = (stream.try_clone(), stream.try_clone()) else {
            return;
        };
        // The pump owns the connection until the greeting is out.
        let client = Arc::new(Client::new(direct));
        let mut refused = None;
        let mut greeting = Vec::new();
        let mut ended = false;
        terminal.redraw(|output, screen| {
            if output.closed {
                // Too late for live output, not for what it wrote: a
                // short program may end before anyone attaches.
                ended = true;
                greeting = output.recent.iter().copied().collect();
                return;
            }
            if output.clients.len() >= MAX_CLIENTS {
                refused = Some("too many clients are attached to this terminal");
                return;
            }
            // Recent output from a line start (the cut may split a line or
            // an escape sequence), then the exact screen.
            let (front, back) = output.recent.as_slices();
            let mut recent = [front, back].concat();
            if output.recent.len() >= RECENT_BYTES
                && let Some(newline) = recent.iter().position(|b| *b == b'\n')
            {
                recent.drain(..=newline);
            }
            greeting = recent;
            greeting.extend_from_slice(screen);
            output.clients.push(client.clone());
        });
        if let Some(why) = refused {
            let _ = send(&mut writer, &fs::error("invalid", why));
            return;
        }
        if ended {
            if send(&mut writer, &AgentResponse::Terminal(terminal.info())).is_ok() {
                let _ = writer.write_all(&greeting);
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        if send(&mut writer, &AgentResponse::Terminal(terminal.info())).is_err()
            || writer.write_all(&greeting).is_err()
        {
            detach(&terminal, &client);
            return;
        }
        let pump = {
            let terminal = terminal.clone();
            let client = client.clone();
            std::thread::spawn(move || pump(&terminal, &client, writer))
        };
        for line in reader.take(u64::MAX).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<TerminalInput>(&line) {
                Ok(TerminalInput::Input { data }) => {
                    if (&terminal.master).write_all(data.as_bytes()).is_err() {
                        break;
                    }
                }
                Ok(TerminalInput::Resize { cols, rows }) => {
                    let _ = terminal.resize(cols, rows);
                }
                Err(_) => break,
            }
        }
        // The host went away (or the terminal ended and the host closed).
        detach(&terminal, &client);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = pump.join();
    }
}

fn detach(terminal: &Terminal, client: &Arc<Client>) {
    lock(&terminal.output)
        .clients
        .retain(|c| !Arc::ptr_eq(c, client));
    client.finish();
}

/// Writes what the reader could not send at once to the client's
/// connection, redrawing after an overflow.
fn pump(terminal: &Terminal, client: &Client, mut out: UnixStream) {
    enum Work {
        Write,
        Redraw,
        Done,
    }
    let mut taken: Vec<u8> = Vec::new();
    loop {
        let work = {
            let mut queue = lock(&client.queue);
            loop {
                if queue.redraw {
                    break Work::Redraw;
                }
                if !queue.queued.is_empty() {
                    taken.clear();
                    std::mem::swap(&mut taken, &mut queue.queued);
                    queue.in_flight = taken.len();
                    break Work::Write;
                }
                if queue.done {
                    break Work::Done;
                }
                // Caught up: the reader sends directly again.
                queue.pumping = false;
                if queue.queued.capacity() > KEEP_QUEUE_BYTES {
                    queue.queued = Vec::new();
                }
                if taken.capacity() > KEEP_QUEUE_BYTES {
                    taken = Vec::new();
                }
                queue = wait(&client.ready, queue);
            }
        };
        match work {
            Work::Done => break,
            Work::Redraw => {
                // Clear first: the client's screen holds a torn mix.
                taken.clear();
                taken.extend_from_slice(b"\x1b[H\x1b[2J");
                terminal.redraw(|_, screen| {
                    let mut queue = lock(&client.queue);
                    queue.queued.clear();
                    queue.redraw = false;
                    taken.extend_from_slice(screen);
                    queue.in_flight = taken.len();
                });
            }
            Work::Write => {}
        }
        if write_out(client, &mut out, &taken).is_err() {
            break;
        }
    }
    // No more output: the host sees the end of the stream, and the reader
    // neither sends nor waits for this client any more.
    let _ = out.shutdown(std::net::Shutdown::Write);
    let mut queue = lock(&client.queue);
    queue.done = true;
    queue.queued = Vec::new();
    queue.in_flight = 0;
    client.drained.notify_one();
}

/// Writes `bytes` a piece at a time, counting each piece off the client's
/// backlog; stops early when a redraw is due (it replaces the rest).
fn write_out(client: &Client, out: &mut UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    for piece in bytes.chunks(WRITE_PIECE) {
        out.write_all(piece)?;
        if client.wrote(piece.len()) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The output path against real PTYs, with the host's side of each
    //! connection read here.
    use super::*;

    const REDRAW: &[u8] = b"\x1b[H\x1b[2J";
    /// `x`s the program prints between its markers.
    const FLOOD: usize = 24_000_000;

    /// A terminal printing `START`, [`FLOOD`] `x`s (no newline, so the TTY
    /// adds nothing) and `END` once it reads a line.
    fn flood_terminal() -> (Arc<Terminals>, String) {
        let terminals = Arc::new(Terminals::default());
        let script =
            format!("read go; printf START; head -c {FLOOD} /dev/zero | tr '\\0' x; printf END");
        let request = SpawnRequest {
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/".into(),
            cols: 80,
            rows: 24,
        };
        // Kept for the life of the test: a terminal whose exit can no longer
        // be reported counts as ended and is hung up.
        let waiters = Box::leak(Box::new(Arc::new(Waiters::default())));
        let AgentResponse::Terminal(info) = terminals.open(request, waiters) else {
            panic!("the terminal did not open");
        };
        (terminals, info.id)
    }

    /// Attaches a client: the host's end of its connection, past the answer.
    fn attach(terminals: &Arc<Terminals>, id: &str) -> BufReader<UnixStream> {
        let (agent, host) = UnixStream::pair().unwrap();
        let (terminals, id) = (terminals.clone(), id.to_owned());
        std::thread::spawn(move || terminals.attach(&id, &agent, BufReader::new(&agent)));
        let mut host = BufReader::new(host);
        let mut answer = String::new();
        host.read_line(&mut answer).unwrap();
        assert!(answer.contains("\"terminal\""), "{answer}");
        host
    }

    fn type_line(host: &BufReader<UnixStream>, data: &str) {
        let mut line = serde_json::to_vec(&TerminalInput::Input { data: data.into() }).unwrap();
        line.push(b'\n');
        host.get_ref().write_all(&line).unwrap();
    }

    /// Reads to the end, pausing `pause` after every `every` bytes.
    fn read_all(host: &mut BufReader<UnixStream>, every: usize, pause: Duration) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut next_pause = every;
        loop {
            let n = host.read(&mut buf).unwrap();
            if n == 0 {
                return seen;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.len() >= next_pause {
                std::thread::sleep(pause);
                next_pause += every;
            }
        }
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    /// The output between the markers, which must be every `x`.
    fn check_complete(seen: &[u8]) {
        let start = seen
            .windows(5)
            .position(|w| w == b"START")
            .unwrap_or_else(|| {
                panic!(
                    "no START in {:?}",
                    String::from_utf8_lossy(&seen[..seen.len().min(2000)])
                )
            });
        let flood = &seen[start + 5..];
        assert_eq!(
            count(flood, REDRAW),
            0,
            "a client that keeps up was redrawn"
        );
        let xs = flood.iter().take_while(|b| **b == b'x').count();
        assert_eq!(xs, FLOOD, "bytes lost");
        assert_eq!(&flood[xs..], b"END");
    }

    #[test]
    fn a_client_that_keeps_up_receives_every_byte_of_a_flood() {
        let (terminals, id) = flood_terminal();
        let mut host = attach(&terminals, &id);
        type_line(&host, "go\n");
        // Pauses well past what the 2 MiB queue holds at PTY speed.
        let seen = read_all(&mut host, 4_000_000, Duration::from_millis(150));
        check_complete(&seen);
    }

    #[test]
    fn a_stalled_client_is_redrawn_and_holds_up_no_one_for_long() {
        let (terminals, id) = flood_terminal();
        let mut stalled = attach(&terminals, &id);
        let mut reader = attach(&terminals, &id);
        type_line(&reader, "go\n");
        let started = Instant::now();
        let seen = read_all(&mut reader, usize::MAX, Duration::ZERO);
        let took = started.elapsed();
        // Every byte for the reader, which the stalled client held up only
        // once, for at most CATCH_UP.
        check_complete(&seen);
        eprintln!("{FLOOD} bytes past a stalled client in {took:?}");
        // The stalled client catches up by a redraw that shows the end of
        // the flood, without all of it.
        let late = read_all(&mut stalled, usize::MAX, Duration::ZERO);
        assert!(
            late.len() < FLOOD / 2,
            "{} bytes: nothing was dropped",
            late.len()
        );
        let redraw = late
            .windows(REDRAW.len())
            .rposition(|w| w == REDRAW)
            .expect("a redraw");
        let after = String::from_utf8_lossy(&late[redraw..]);
        assert!(
            after.contains("END"),
            "the redraw does not show the end: {after:?}"
        );
    }
}
