//! Background processes and terminals in a running sandbox, run and
//! watched by the agent inside it. A terminal's live connection and a
//! process's followed logs are handed to the surface, which frames them.

use corral_core::auth::Principal;
use corral_runtime::{RuntimeError, Sandbox};
use corral_store::SandboxRecord;
use corral_types::agent::SpawnRequest;
use corral_types::terminal::{
    LogChunk, OpenTerminalRequest, ProcessInfo, ProcessLogs, ProcessSignalRequest,
    ProcessStdinRequest, StartProcessRequest, TerminalInfo, signal_number,
};
use tokio::sync::mpsc;

use super::{audit_step, command_argv, program_env, running, unreachable_sandbox};
use crate::audit::ClientInfo;
use crate::{Service, ServiceError, ServiceResult};

/// Largest terminal, in rows or columns.
pub const MAX_TERMINAL_SIZE: u16 = 1000;
/// Followed log events not yet taken by the caller; past them the agent's
/// output waits.
const QUEUED_EVENTS: usize = 64;

/// The shell a terminal runs when the request names none.
const DEFAULT_SHELL: &[&str] = &[
    "/bin/sh",
    "-c",
    "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi",
];

/// The agent's refusal of a terminal or process operation, naming `field`.
pub fn agent_refused(field: &'static str) -> impl Fn(RuntimeError) -> ServiceError {
    move |error| match error {
        RuntimeError::Refused { kind, message } => match kind.as_str() {
            "not_found" if field == "command" || field == "argv" => {
                ServiceError::invalid_field(field, message)
            }
            "not_found" => ServiceError::NotFound(message),
            "too_large" => ServiceError::Conflict(message),
            _ => ServiceError::invalid_field(field, message),
        },
        other => unreachable_sandbox(&other),
    }
}

/// Runs an agent operation on the caller's running sandbox `id` off the
/// async threads; a refusal names `field`. Returns the record too.
async fn on_agent<T: Send + 'static>(
    service: &Service,
    caller: &Principal,
    id: &str,
    field: &'static str,
    op: impl FnOnce(Sandbox) -> Result<T, RuntimeError> + Send + 'static,
) -> ServiceResult<(SandboxRecord, T)> {
    let record = running(service, caller, id).await?;
    let sandbox = service.driver().attach(&record.id);
    let done = tokio::task::spawn_blocking(move || op(sandbox))
        .await
        .map_err(ServiceError::internal)?
        .map_err(agent_refused(field))?;
    Ok((record, done))
}

/// Starts a background process.
pub async fn start(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    body: StartProcessRequest,
) -> ServiceResult<ProcessInfo> {
    let argv = command_argv(body.command, body.argv)?;
    let record = running(service, caller, id).await?;
    let request = SpawnRequest {
        argv,
        env: program_env(&record, body.env),
        cwd: body.cwd.unwrap_or_else(|| "/tmp".to_owned()),
        cols: 0,
        rows: 0,
    };
    let (record, info) = on_agent(service, caller, id, "command", move |s| {
        s.process_start(request)
    })
    .await?;
    audit_step(
        service,
        client,
        caller,
        "sandbox.process.start",
        &record.id,
        "success",
    )
    .await;
    Ok(info)
}

/// The sandbox's background processes, oldest first.
pub async fn list(
    service: &Service,
    caller: &Principal,
    id: &str,
) -> ServiceResult<Vec<ProcessInfo>> {
    on_agent(service, caller, id, "pid", |s| s.processes())
        .await
        .map(|(_, processes)| processes)
}

/// A process's stored output from `offset` on.
pub async fn logs(
    service: &Service,
    caller: &Principal,
    id: &str,
    pid: i32,
    offset: u64,
) -> ServiceResult<ProcessLogs> {
    on_agent(service, caller, id, "pid", move |s| {
        s.process_logs(pid, offset)
    })
    .await
    .map(|(_, logs)| logs)
}

/// What a followed process log sends: its output as it comes, then one
/// `Exit` (the process as it ended) or `Failed`.
#[derive(Debug)]
pub enum LogEvent {
    /// A piece of output.
    Log(LogChunk),
    /// The process ended.
    Exit(ProcessInfo),
    /// Following failed (the agent went away).
    Failed(String),
}

/// Follows a process's output from `offset` until it ends. An unknown
/// process is refused before anything is sent; a caller that drops the
/// receiver stops the following.
pub async fn follow(
    service: &Service,
    caller: &Principal,
    id: &str,
    pid: i32,
    offset: u64,
) -> ServiceResult<mpsc::Receiver<LogEvent>> {
    let (record, _) = on_agent(service, caller, id, "pid", move |s| {
        s.process_logs(pid, u64::MAX)
    })
    .await?;
    let sandbox = service.driver().attach(&record.id);
    let (tx, rx) = mpsc::channel(QUEUED_EVENTS);
    tokio::task::spawn_blocking(move || {
        let mut last = None;
        let followed = sandbox.process_follow(pid, offset, |logs| {
            for chunk in logs.chunks {
                if tx.blocking_send(LogEvent::Log(chunk)).is_err() {
                    // The caller went away.
                    return false;
                }
            }
            last = Some(logs.process);
            true
        });
        let end = match (followed, last) {
            (Ok(()), Some(process)) => LogEvent::Exit(process),
            (Ok(()), None) => return,
            (Err(error), _) => LogEvent::Failed(error.to_string()),
        };
        let _ = tx.blocking_send(end);
    });
    Ok(rx)
}

/// Writes to a process's standard input (and, with `close`, ends it).
pub async fn write_stdin(
    service: &Service,
    caller: &Principal,
    id: &str,
    pid: i32,
    body: ProcessStdinRequest,
) -> ServiceResult<()> {
    on_agent(service, caller, id, "data", move |s| {
        s.process_input(pid, &body.data, body.close)
    })
    .await
    .map(drop)
}

/// Sends a signal (by name) to a process and its process group.
pub async fn signal(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    pid: i32,
    body: ProcessSignalRequest,
) -> ServiceResult<()> {
    let number = signal_number(&body.signal).ok_or_else(|| {
        ServiceError::invalid_field(
            "signal",
            "use TERM, KILL, INT, HUP, QUIT, USR1, USR2, STOP, CONT or WINCH",
        )
    })?;
    let (record, ()) = on_agent(service, caller, id, "signal", move |s| {
        s.process_signal(pid, number)
    })
    .await?;
    audit_step(
        service,
        client,
        caller,
        "sandbox.process.signal",
        &record.id,
        "success",
    )
    .await;
    Ok(())
}

/// Opens a terminal: a program on a PTY that keeps running with no client
/// attached (a login shell when the request names none).
pub async fn open_terminal(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    body: OpenTerminalRequest,
) -> ServiceResult<TerminalInfo> {
    for (field, value) in [("cols", body.cols), ("rows", body.rows)] {
        if !(1..=MAX_TERMINAL_SIZE).contains(&value) {
            return Err(ServiceError::invalid_field(
                field,
                format!("must be 1–{MAX_TERMINAL_SIZE}"),
            ));
        }
    }
    let argv = match body.command {
        Some(argv) if argv.is_empty() => {
            return Err(ServiceError::invalid_field("command", "must not be empty"));
        }
        Some(argv) => argv,
        None => DEFAULT_SHELL.iter().map(|a| (*a).to_owned()).collect(),
    };
    let record = running(service, caller, id).await?;
    let mut env = program_env(&record, body.env);
    if !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".to_owned(), "xterm-256color".to_owned()));
    }
    let request = SpawnRequest {
        argv,
        env,
        cwd: body.cwd.unwrap_or_else(|| "/tmp".to_owned()),
        cols: body.cols,
        rows: body.rows,
    };
    let (record, info) = on_agent(service, caller, id, "command", move |s| {
        s.terminal_open(request)
    })
    .await?;
    audit_step(
        service,
        client,
        caller,
        "sandbox.terminal.open",
        &record.id,
        "success",
    )
    .await;
    Ok(info)
}

/// The sandbox's terminals, oldest first.
pub async fn terminals(
    service: &Service,
    caller: &Principal,
    id: &str,
) -> ServiceResult<Vec<TerminalInfo>> {
    super::files::on_sandbox(service, caller, id, |s| s.terminals()).await
}

/// Ends a terminal (its program is hung up, then killed) and forgets it.
pub async fn close_terminal(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    tid: String,
) -> ServiceResult<()> {
    let (record, ()) =
        on_agent(service, caller, id, "tid", move |s| s.terminal_close(&tid)).await?;
    audit_step(
        service,
        client,
        caller,
        "sandbox.terminal.close",
        &record.id,
        "success",
    )
    .await;
    Ok(())
}

/// Attaches to terminal `tid`: the sandbox's record, the agent connection
/// (the surface relays it) and the output the agent sent with its answer.
pub async fn attach_terminal(
    service: &Service,
    caller: &Principal,
    id: &str,
    tid: String,
) -> ServiceResult<(SandboxRecord, std::os::unix::net::UnixStream, Vec<u8>)> {
    let (record, (_, stream, early)) =
        on_agent(service, caller, id, "tid", move |s| s.terminal_attach(&tid)).await?;
    Ok((record, stream, early))
}
