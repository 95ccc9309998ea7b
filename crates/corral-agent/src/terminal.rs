//! Persistent terminals: a program on a PTY that keeps running with no
//! client attached, like a tmux session.
//!
//! Output flows from one reader thread per PTY to every attached client
//! through a bounded queue per client. A client that falls behind loses its
//! queue and gets the screen redrawn instead, so it never holds up the PTY
//! or the other clients.
//!
//! The screen (a `vt100` parser) is kept off that path: parsing runs at
//! about 10 MB/s, far below what a PTY delivers, so a parser thread takes
//! the unparsed output in passes. When more than [`PARSE_WINDOW`] piles up
//! (a flood, such as `cat` of a big file) only the last window is parsed,
//! onto a blank screen: the visible screen after a flood is determined by
//! its last lines, and the agent never spends more than a share of a core
//! keeping up. A redraw first parses whatever is still pending, so what it
//! paints matches the output that follows it exactly.

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

use crate::{Waiters, fs, send, spawn_watched, unix_now};

/// Most terminals one sandbox keeps (running or ended).
const MAX_TERMINALS: usize = 32;
/// Most clients attached to one terminal at once.
const MAX_CLIENTS: usize = 16;
/// Raw output kept for a client that attaches (the "recent output").
const RECENT_BYTES: usize = 64 * 1024;
/// Output a client may have queued before it is dropped and redrawn.
const CLIENT_QUEUE_BYTES: usize = 2 * 1024 * 1024;
/// The most unparsed output parsed in one pass; older output is skipped.
const PARSE_WINDOW: usize = 64 * 1024;
/// Largest terminal, in rows or columns.
const MAX_SIZE: u16 = 1000;

nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, nix::pty::Winsize);
nix::ioctl_write_int_bad!(set_controlling_tty, nix::libc::TIOCSCTTY);
nix::ioctl_write_int_bad!(open_peer, nix::libc::TIOCGPTPEER);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
}

struct Screen {
    parser: vt100::Parser,
}

impl Screen {
    /// Parses output taken by [`Output::take_unparsed`].
    fn apply(&mut self, (mut unparsed, skipped): (Vec<u8>, bool), rows: u16, cols: u16) {
        if skipped {
            self.parser = new_parser(rows, cols);
            let keep = unparsed.len().min(PARSE_WINDOW);
            unparsed.drain(..unparsed.len() - keep);
        }
        self.parser.process(&unparsed);
    }
}

struct Output {
    /// The most recent raw output, at most [`RECENT_BYTES`].
    recent: VecDeque<u8>,
    /// Output not yet given to the parser.
    pending: Vec<u8>,
    /// Output was skipped: the parser starts again on a blank screen.
    skipped: bool,
    clients: Vec<Arc<Client>>,
    cols: u16,
    rows: u16,
    /// How the program ended, once it has.
    ended: Option<(Option<i32>, Option<i32>)>,
    /// The PTY has no writer left (everything on it exited).
    closed: bool,
}

impl Output {
    /// The unparsed output, and whether the screen must start blank (output
    /// was skipped, or there is more than a window of it).
    fn take_unparsed(&mut self) -> (Vec<u8>, bool) {
        let pending = std::mem::take(&mut self.pending);
        let skipped = std::mem::take(&mut self.skipped) || pending.len() > PARSE_WINDOW;
        (pending, skipped)
    }
}

/// One attached connection's queue.
#[derive(Default)]
struct Client {
    queue: Mutex<ClientQueue>,
    ready: Condvar,
}

#[derive(Default)]
struct ClientQueue {
    chunks: VecDeque<Arc<[u8]>>,
    bytes: usize,
    /// The queue overflowed: send a redraw instead of what was dropped.
    redraw: bool,
    /// No more output will come (the terminal ended, or it was closed).
    done: bool,
}

impl Client {
    fn push(&self, chunk: &Arc<[u8]>) {
        let mut queue = lock(&self.queue);
        if queue.bytes + chunk.len() > CLIENT_QUEUE_BYTES {
            queue.chunks.clear();
            queue.bytes = 0;
            queue.redraw = true;
        } else {
            queue.bytes += chunk.len();
            queue.chunks.push_back(chunk.clone());
        }
        self.ready.notify_one();
    }

    fn finish(&self) {
        lock(&self.queue).done = true;
        self.ready.notify_one();
    }
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

    /// The parser thread: keeps the screen close to the output, using at
    /// most about a quarter of a core during a flood.
    fn parse_forever(&self) {
        loop {
            {
                let mut output = lock(&self.output);
                while output.pending.is_empty() && !output.closed {
                    output = self
                        .unparsed
                        .wait(output)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if output.pending.is_empty() && output.closed {
                    return;
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
        loop {
            let n = match pty.read(&mut buf) {
                // EIO: every holder of the PTY's other side has gone.
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk: Arc<[u8]> = Arc::from(&buf[..n]);
            let mut output = lock(&self.output);
            output.recent.extend(chunk.iter());
            let excess = output.recent.len().saturating_sub(RECENT_BYTES);
            output.recent.drain(..excess);
            if output.pending.len() > 4 * PARSE_WINDOW {
                // Far behind: what is pending will be skipped anyway.
                output.pending.clear();
                output.skipped = true;
            }
            output.pending.extend_from_slice(&chunk);
            for client in &output.clients {
                client.push(&chunk);
            }
            self.unparsed.notify_one();
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
        let (child, ended) = match spawn_watched(&mut command, waiters) {
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
                pending: Vec::new(),
                skipped: false,
                clients: Vec::new(),
                cols,
                rows,
                ended: None,
                closed: false,
            }),
            unparsed: Condvar::new(),
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
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        let client = Arc::new(Client::default());
        let mut refused = None;
        let mut greeting = Vec::new();
        terminal.redraw(|output, screen| {
            if output.closed {
                refused = Some("the terminal has ended");
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

/// Writes a client's queue to its connection, redrawing after an overflow.
fn pump(terminal: &Terminal, client: &Client, mut out: UnixStream) {
    loop {
        let mut queue = lock(&client.queue);
        while queue.chunks.is_empty() && !queue.redraw && !queue.done {
            queue = client
                .ready
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if queue.redraw {
            drop(queue);
            let mut screen_bytes = Vec::new();
            terminal.redraw(|_, screen| {
                let mut queue = lock(&client.queue);
                queue.chunks.clear();
                queue.bytes = 0;
                queue.redraw = false;
                screen_bytes = screen.to_vec();
            });
            // Clear first: the client's screen holds a torn mix.
            if out.write_all(b"\x1b[H\x1b[2J").is_err() || out.write_all(&screen_bytes).is_err() {
                break;
            }
            continue;
        }
        let Some(chunk) = queue.chunks.pop_front() else {
            // Done and drained.
            break;
        };
        queue.bytes -= chunk.len();
        drop(queue);
        if out.write_all(&chunk).is_err() {
            break;
        }
    }
    // No more output: the host sees the end of the stream.
    let _ = out.shutdown(std::net::Shutdown::Write);
}
