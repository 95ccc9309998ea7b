//! Running a program in a sandbox: to completion, or as a stream of typed
//! events (the surface frames them, as server-sent events over HTTP), with
//! its standard input optionally kept open for later writes.

use corral_core::auth::Principal;
use corral_runtime::{RuntimeError, Sandbox};
use corral_store::User;
use corral_types::agent::{ExecRequest, ExecResult};
use corral_types::sandbox::ExecRequestBody;
use corral_types::terminal::ProcessStdinRequest;
use tokio::sync::mpsc;

use super::{audit_step, command_argv, program_env, running, unreachable_sandbox};
use crate::audit::ClientInfo;
use crate::exec_stdin::{Registration, StdinRefused};
use crate::{Service, ServiceError, ServiceResult};

/// Output kept per stream of an exec that names no `max_output_bytes`.
pub const EXEC_OUTPUT_LIMIT: u64 = 1 << 20;
/// Wall time of an exec that names none, and the cap when the plan is unknown, ms.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Events of a streaming exec not yet taken by its caller; past them the
/// program waits (a slow reader slows it down, it never loses output).
const QUEUED_EVENTS: usize = 64;

/// What happens in a streaming exec, in order: `Started` (only with
/// `stream_stdin`), output, then one `Exit` or `Failed` or `Panicked`.
#[derive(Debug)]
pub enum ExecEvent {
    /// The exec's standard input is open; writes name this id.
    Started {
        /// The id [`write_stdin`] takes.
        exec_id: String,
    },
    /// The program wrote to `stream` (`stdout` or `stderr`).
    Output {
        /// `stdout` or `stderr`.
        stream: String,
        /// What it wrote.
        data: String,
    },
    /// How the program ended (its output already sent).
    Exit(ExecResult),
    /// The exec could not run or its sandbox stopped answering.
    Failed(ServiceError),
    /// The exec's task failed unexpectedly (logged).
    Panicked,
}

/// The answer to an exec: its result, or its events as they come.
#[derive(Debug)]
pub enum ExecAnswer {
    /// The program ran to completion (any exit code).
    Done(ExecResult),
    /// The events of a streaming exec.
    Stream(mpsc::Receiver<ExecEvent>),
}

/// Runs `body`'s program in the caller's running sandbox `id`, within
/// `user`'s plan's time: to completion, or (`streaming`) as events.
pub async fn exec(
    service: &Service,
    caller: &Principal,
    user: &User,
    client: &ClientInfo,
    id: &str,
    body: ExecRequestBody,
    streaming: bool,
) -> ServiceResult<ExecAnswer> {
    let argv = command_argv(body.command, body.argv)?;
    let max_ms = service
        .plans
        .get(&user.plan_id)
        .map_or(DEFAULT_TIMEOUT_MS, |p| {
            u64::try_from(p.max_time_secs).unwrap_or(30) * 1000
        });
    let timeout_ms = body.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).min(max_ms);
    if timeout_ms == 0 {
        return Err(ServiceError::invalid_field(
            "timeout_ms",
            "must be greater than 0",
        ));
    }
    let max_output = service.config.sandbox.exec_max_output_bytes;
    let output_limit = body.max_output_bytes.unwrap_or(EXEC_OUTPUT_LIMIT);
    if !(1..=max_output).contains(&output_limit) {
        return Err(ServiceError::invalid_field(
            "max_output_bytes",
            format!("must be 1–{max_output} (this server's limit)"),
        ));
    }
    if body.stream_stdin && !streaming {
        return Err(ServiceError::invalid_field(
            "stream_stdin",
            "needs an event stream (Accept: text/event-stream)",
        ));
    }
    if body.stream_stdin && body.stdin.is_some() {
        return Err(ServiceError::invalid_field(
            "stdin",
            "give either `stdin` or `stream_stdin`, not both",
        ));
    }
    let record = running(service, caller, id).await?;
    let request = ExecRequest {
        argv,
        env: program_env(&record, body.env),
        cwd: body.cwd.unwrap_or_else(|| "/tmp".to_owned()),
        stdin: body.stdin.unwrap_or_default(),
        timeout_ms,
        output_limit: usize::try_from(output_limit).unwrap_or(usize::MAX),
        stream: false,
        stdin_stream: false,
        sole: false,
    };
    if streaming {
        let sandbox = service.driver().attach(&record.id);
        let input = body.stream_stdin.then(|| {
            service
                .sandboxes
                .exec_inputs
                .open(&caller.org_id, &record.id)
        });
        return Ok(ExecAnswer::Stream(exec_events(
            service.clone(),
            client.clone(),
            caller.clone(),
            sandbox,
            request,
            input,
        )));
    }
    let result = service
        .driver()
        .exec(&record.id, request)
        .await
        .map_err(exec_refused)?;
    audit_exec(service, client, caller, &record.id, &result).await;
    Ok(ExecAnswer::Done(result))
}

fn exec_refused(error: RuntimeError) -> ServiceError {
    match error {
        RuntimeError::Refused { message, .. } => ServiceError::invalid_field("argv", message),
        other => unreachable_sandbox(&other),
    }
}

async fn audit_exec(
    service: &Service,
    client: &ClientInfo,
    caller: &Principal,
    id: &str,
    result: &ExecResult,
) {
    let outcome = if result.timed_out {
        "timeout"
    } else {
        "success"
    };
    audit_step(service, client, caller, "sandbox.exec", id, outcome).await;
}

/// A streaming exec's open standard input: its id, where writes arrive,
/// and its registration.
type ExecInput = (
    String,
    std::sync::mpsc::Receiver<ProcessStdinRequest>,
    Registration,
);

/// The events of an exec. A caller that drops the receiver ends the program.
fn exec_events(
    service: Service,
    client: ClientInfo,
    caller: Principal,
    sandbox: Sandbox,
    request: ExecRequest,
    input: Option<ExecInput>,
) -> mpsc::Receiver<ExecEvent> {
    let (tx, rx) = mpsc::channel::<ExecEvent>(QUEUED_EVENTS);
    let id = sandbox.id.trim_start_matches("corral-").to_owned();
    tokio::spawn(async move {
        let (stdin, registration) = match input {
            Some((exec_id, stdin, registration)) => {
                if tx.send(ExecEvent::Started { exec_id }).await.is_err() {
                    return;
                }
                (Some(stdin), Some(registration))
            }
            None => (None, None),
        };
        let output = tx.clone();
        let ran = tokio::task::spawn_blocking(move || {
            sandbox.exec_stream_with_stdin(request, stdin, |stream, data| {
                let event = ExecEvent::Output {
                    stream: stream.to_owned(),
                    data,
                };
                output.blocking_send(event).is_ok()
            })
        })
        .await;
        let last = match ran {
            Ok(Ok(result)) => {
                audit_exec(&service, &client, &caller, &id, &result).await;
                ExecEvent::Exit(result)
            }
            Ok(Err(error)) => ExecEvent::Failed(exec_refused(error)),
            Err(join) => {
                tracing::error!(%join, "a streaming exec panicked");
                ExecEvent::Panicked
            }
        };
        // The exec is over: its standard input takes no more writes.
        drop(registration);
        let _ = tx.send(last).await;
    });
    rx
}

/// Writes to the standard input of the caller's running exec `exec_id` in
/// sandbox `id` (started with `stream_stdin`), and with `close` ends it. A
/// write waits while the program has not read the earlier ones.
pub async fn write_stdin(
    service: &Service,
    caller: &Principal,
    id: &str,
    exec_id: &str,
    body: ProcessStdinRequest,
) -> ServiceResult<()> {
    let record = running(service, caller, id).await?;
    let tx = service
        .sandboxes
        .exec_inputs
        .sender(&caller.org_id, &record.id, exec_id, body.close)
        .map_err(|refused| match refused {
            StdinRefused::NotFound => ServiceError::NotFound(format!(
                "no running exec {exec_id} with open standard input in this sandbox"
            )),
            StdinRefused::Closed => {
                ServiceError::invalid_field("data", "this exec's standard input is closed")
            }
        })?;
    tokio::task::spawn_blocking(move || tx.send(body))
        .await
        .map_err(ServiceError::internal)?
        .map_err(|_| ServiceError::conflict("the exec has ended"))
}
