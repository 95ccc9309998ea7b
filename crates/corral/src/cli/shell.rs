//! `corral shell`: a sandbox terminal in the local one. The local terminal
//! goes into raw mode (every key goes to the sandbox, ^C included), window
//! size changes follow it, and a detach key leaves the terminal running
//! for `corral shell --attach`.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use corral_client::types::terminal::OpenTerminalRequest;
use corral_client::{Client, TerminalEvent};
use nix::sys::termios::{self, SetArg, Termios};

use super::{Failure, GlobalArgs, Outcome, connect};

/// How often an attached shell tells the server it is still there.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);

/// `corral shell`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    corral shell $ID                  a new login shell\n  \
    corral shell $ID -- python3       a new terminal running python3\n  \
    corral shell $ID --attach t1      back to a terminal after detaching\n\n\
    Detach with Ctrl-] (the terminal keeps running); exit the shell to end it.")]
pub struct ShellArgs {
    #[command(flatten)]
    global: GlobalArgs,
    /// Sandbox id.
    sandbox: String,
    /// Attach to this existing terminal (see `corral sandbox ps`) instead
    /// of opening a new one.
    #[arg(long, value_name = "TID", conflicts_with = "command")]
    attach: Option<String>,
    /// The key that detaches, as `ctrl-X` (X a letter or one of `[ \ ] ^ _`).
    #[arg(long, default_value = "ctrl-]", value_name = "KEY", value_parser = ctrl_key)]
    detach_key: u8,
    /// Program and arguments [default: the sandbox's login shell].
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

/// `ctrl-X` → its control byte.
fn ctrl_key(text: &str) -> Result<u8, String> {
    let key = text
        .strip_prefix("ctrl-")
        .or_else(|| text.strip_prefix("C-"))
        .ok_or("write it as ctrl-X, such as ctrl-] or ctrl-q")?;
    match key.as_bytes() {
        [c @ (b'a'..=b'z' | b'A'..=b'Z' | b'[' | b'\\' | b']' | b'^' | b'_')] => {
            Ok(c.to_ascii_uppercase() & 0x1f)
        }
        _ => Err(format!("`{key}` cannot follow ctrl- here")),
    }
}

/// The local terminal in raw mode until dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Result<Option<RawMode>, Failure> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| Failure::Other(anyhow::anyhow!("reading the terminal's mode: {e}")))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| Failure::Other(anyhow::anyhow!("setting raw mode: {e}")))?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The local window's size (columns, rows), if stdout is a terminal.
fn window_size() -> Option<(u16, u16)> {
    terminal_size::terminal_size().map(|(w, h)| (w.0, h.0))
}

pub async fn main(args: ShellArgs) -> Outcome {
    let client = connect(&args.global)?;
    let tid = match &args.attach {
        Some(tid) => tid.clone(),
        None => open(&client, &args).await?,
    };
    let session = client.attach_terminal(&args.sandbox, &tid).await?;
    let key = match args.detach_key {
        0x1d => "Ctrl-]".to_owned(),
        byte => format!("Ctrl-{}", char::from(byte | 0x40)),
    };
    eprint!(
        "attached to terminal {tid} of {}; detach with {key}\r\n",
        args.sandbox
    );
    let raw = RawMode::enter()?;
    let (mut writer, mut reader) = session.split();
    if let Some((cols, rows)) = window_size() {
        writer.resize(cols, rows).await;
    }
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| Failure::Other(e.into()))?;
    let mut stdin = stdin_chunks();
    let mut partial = Vec::new();
    let mut stdin_open = true;
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    let mut stdout = std::io::stdout();
    let mut exited = None;
    let ended = loop {
        tokio::select! {
            event = reader.next() => match event {
                TerminalEvent::Output(bytes) => {
                    let _ = stdout.write_all(&bytes);
                    let _ = stdout.flush();
                }
                TerminalEvent::Pong => {}
                TerminalEvent::Exited { exit_code, signal } => exited = Some((exit_code, signal)),
                TerminalEvent::Closed { code, reason } => break Some((code, reason)),
            },
            read = stdin.recv(), if stdin_open => match read {
                None => stdin_open = false,
                Some(typed) => {
                    let typed = &typed[..];
                    if let Some(at) = typed.iter().position(|b| *b == args.detach_key) {
                        partial.extend_from_slice(&typed[..at]);
                        let text = String::from_utf8_lossy(&partial).into_owned();
                        if !text.is_empty() {
                            writer.input(&text).await;
                        }
                        break None;
                    }
                    partial.extend_from_slice(typed);
                    let whole = match std::str::from_utf8(&partial) {
                        Ok(_) => partial.len(),
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => partial.len(),
                    };
                    let rest = partial.split_off(whole);
                    let text = String::from_utf8_lossy(&partial).into_owned();
                    partial = rest;
                    if !writer.input(&text).await {
                        break Some((1006, "the connection broke".to_owned()));
                    }
                }
            },
            _ = resized.recv() => {
                if let Some((cols, rows)) = window_size() {
                    writer.resize(cols, rows).await;
                }
            },
            _ = keepalive.tick() => {
                writer.ping().await;
            },
        }
    };
    drop(raw);
    match ended {
        None => {
            writer.close().await;
            eprintln!(
                "\ndetached from terminal {tid}; it keeps running. Re-attach with: corral shell {} --attach {tid}",
                args.sandbox
            );
            Ok(ExitCode::SUCCESS)
        }
        Some((1000, reason)) => {
            // The program's own status, as a shell gives it: its code, or
            // 128 + the signal that ended it.
            let code = match exited {
                Some((Some(code), _)) => {
                    eprintln!("\n[{reason}: exit code {code}]");
                    u8::try_from(code & 0xff).unwrap_or(1)
                }
                Some((None, Some(signal))) => {
                    eprintln!("\n[{reason}: killed by signal {signal}]");
                    u8::try_from((128 + signal).clamp(0, 255)).unwrap_or(1)
                }
                _ => {
                    eprintln!("\n[{reason}]");
                    0
                }
            };
            Ok(ExitCode::from(code))
        }
        Some((code, reason)) => Err(Failure::Other(anyhow::anyhow!(
            "the terminal connection closed ({code}): {reason}"
        ))),
    }
}

/// Standard input, read on a thread of its own: a read that never returns
/// (nobody types) must not keep the program from exiting, as a read on
/// tokio's blocking pool would.
pub(crate) fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Opens a terminal the size of the local window; its id.
async fn open(client: &Client, args: &ShellArgs) -> Result<String, Failure> {
    let (cols, rows) = window_size().unwrap_or((80, 24));
    let mut env = std::collections::BTreeMap::new();
    if let Ok(term) = std::env::var("TERM")
        && !term.is_empty()
    {
        env.insert("TERM".to_owned(), term);
    }
    let request = OpenTerminalRequest {
        cols,
        rows,
        command: (!args.command.is_empty()).then(|| args.command.clone()),
        env,
        cwd: None,
    };
    Ok(client.open_terminal(&args.sandbox, &request).await?.id)
}
