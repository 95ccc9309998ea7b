//! Interpreter contexts: persistent interpreters in a sandbox that run
//! code sent one piece at a time and keep their variables between runs
//! (like a Jupyter kernel).
//!
//! A context is a background process of the agent running a small kernel
//! (`kernels/python.py`, sent on its standard input at start). The service
//! keeps no state for it: the context id is written into the process's
//! argv (`… corral-context <id> <language>`), so a context is found by
//! listing the sandbox's processes; it survives a server restart and dies
//! with its sandbox. A run writes one request line (with a fresh random
//! nonce) to the kernel's standard input and follows the process's log
//! from where it stood until the result line carrying that nonce appears.
//! The kernel answers a request that arrives while another runs with
//! `busy`, so the interrupt (`SIGINT`) sent at a run's time limit always
//! reaches the code it is meant for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;

use corral_core::auth::Principal;
use corral_runtime::{RuntimeError, Sandbox};
use corral_store::User;
use corral_types::agent::SpawnRequest;
use corral_types::contexts::{
    ContextInfo, CreateContextRequest, RunCodeRequest, RunError, RunResult,
};
use corral_types::terminal::ProcessInfo;

use crate::audit::ClientInfo;
use crate::credentials::random_token;
use crate::sandbox::{audit_step, program_env, running, unreachable_sandbox};
use crate::{Service, ServiceError, ServiceResult};

/// The languages a context can run.
const LANGUAGES: &[&str] = &["python"];

/// The Python kernel, sent to the interpreter on its standard input.
const PYTHON_KERNEL: &str = include_str!("../kernels/python.py");

/// Reads exactly `argv[1]` bytes of kernel from standard input and runs
/// them (read unbuffered, so no request line is swallowed with it).
const PYTHON_BOOTSTRAP: &str = "import os,sys
n=int(sys.argv[1]);s=b''
while len(s)<n:
 c=os.read(0,n-len(s))
 if not c:raise SystemExit('corral-context: no kernel on standard input')
 s+=c
del n,c
exec(compile(s,'<corral-kernel>','exec'))
";

/// The argv word that marks a background process as a context; the id and
/// the language follow it.
const MARKER: &str = "corral-context";

/// How the kernel starts each line it writes for the server.
const RESULT_MARK: &str = "\u{1e}corral-result";

/// How long a new interpreter may take to say it is ready.
const START_WAIT: Duration = Duration::from_secs(20);

/// How long interrupted code may take to stop before its context is ended.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

const DEFAULT_TIMEOUT_MS: u64 = 30_000;

const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;

/// Creates an interpreter context (a persistent interpreter) in the sandbox.
pub async fn create(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    sandbox_id: &str,
    mut input: CreateContextRequest,
) -> ServiceResult<ContextInfo> {
    if !LANGUAGES.contains(&input.language.as_str()) {
        return Err(ServiceError::invalid_field(
            "language",
            format!(
                "`{}` is not supported; supported languages: {}",
                input.language,
                LANGUAGES.join(", ")
            ),
        ));
    }
    let record = running(service, caller, sandbox_id).await?;
    let cid = format!("ctx_{}", random_token(16));
    input
        .env
        .entry("MPLBACKEND".to_owned())
        .or_insert_with(|| "Agg".to_owned());
    let request = SpawnRequest {
        argv: [
            "python3",
            "-u",
            "-c",
            PYTHON_BOOTSTRAP,
            &PYTHON_KERNEL.len().to_string(),
            MARKER,
            &cid,
            &input.language,
        ]
        .map(str::to_owned)
        .to_vec(),
        env: program_env(&record, input.env),
        cwd: input.cwd.unwrap_or_else(|| "/tmp".to_owned()),
        cols: 0,
        rows: 0,
    };
    let sandbox = service.sandboxes.attach(&record.id);
    let info = start_kernel(sandbox, request).await?;
    audit_step(
        service,
        client,
        caller,
        "sandbox.context.create",
        &record.id,
        "success",
    )
    .await;
    Ok(info)
}

/// Starts the interpreter, hands it the kernel and waits for it to be ready.
async fn start_kernel(sandbox: Sandbox, request: SpawnRequest) -> ServiceResult<ContextInfo> {
    let starter = sandbox.clone();
    let process = blocking(move || {
        let process = starter
            .process_start(request)
            .map_err(|error| match error {
                RuntimeError::Refused { kind, message } if kind == "not_found" => {
                    ServiceError::invalid_field(
                        "language",
                        format!("the sandbox has no interpreter for it: {message}"),
                    )
                }
                RuntimeError::Refused { message, .. } => ServiceError::conflict(message),
                other => unreachable_sandbox(&other),
            })?;
        match starter.process_input(process.pid, PYTHON_KERNEL, false) {
            Ok(()) => Ok(process),
            Err(error) => {
                let _ = starter.process_signal(process.pid, SIGKILL);
                Err(unreachable_sandbox(&error))
            }
        }
    })
    .await?;
    let info = context_of(&process).ok_or_else(|| {
        ServiceError::internal(anyhow::anyhow!("a context started without its marker"))
    });
    let pid = process.pid;
    let stop = Arc::new(AtomicBool::new(false));
    let (follower, stopped) = (sandbox.clone(), stop.clone());
    let waiting =
        tokio::task::spawn_blocking(move || await_line(&follower, pid, 0, "ready", &stopped));
    let refusal = match tokio::time::timeout(START_WAIT, waiting).await {
        Ok(Ok(Ok(Awaited::Line { .. }))) => return info,
        Ok(Ok(Ok(Awaited::Ended { stray_err, .. }))) => ServiceError::invalid_field(
            "language",
            format!("the interpreter did not start: {}", tail(&stray_err)),
        ),
        Ok(Ok(Ok(_))) | Err(_) => {
            ServiceError::invalid_field("language", "the interpreter did not get ready in time")
        }
        Ok(Ok(Err(error))) => unreachable_sandbox(&error),
        Ok(Err(error)) => ServiceError::internal(error),
    };
    stop.store(true, Ordering::Relaxed);
    let _ = blocking(move || Ok(sandbox.process_signal(pid, SIGKILL))).await;
    Err(refusal)
}

/// The sandbox's live contexts, oldest first.
pub async fn list(
    service: &Service,
    caller: &Principal,
    sandbox_id: &str,
) -> ServiceResult<Vec<ContextInfo>> {
    let record = running(service, caller, sandbox_id).await?;
    let sandbox = service.sandboxes.attach(&record.id);
    let processes =
        blocking(move || sandbox.processes().map_err(|e| unreachable_sandbox(&e))).await?;
    Ok(processes
        .iter()
        .filter(|p| p.status == "running")
        .filter_map(context_of)
        .collect())
}

/// Ends a context (its interpreter is killed; its state is gone).
pub async fn remove(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    sandbox_id: &str,
    cid: &str,
) -> ServiceResult<()> {
    let record = running(service, caller, sandbox_id).await?;
    let sandbox = service.sandboxes.attach(&record.id);
    let cid = cid.to_owned();
    blocking(move || {
        let process = find(&sandbox, &cid)?;
        if process.status == "running" {
            match sandbox.process_signal(process.pid, SIGKILL) {
                // It ended meanwhile.
                Ok(()) | Err(RuntimeError::Refused { .. }) => {}
                Err(other) => return Err(unreachable_sandbox(&other)),
            }
        }
        Ok(())
    })
    .await?;
    audit_step(
        service,
        client,
        caller,
        "sandbox.context.delete",
        &record.id,
        "success",
    )
    .await;
    Ok(())
}

/// Runs code in a context. Its variables, imports and definitions stay for
/// the next run; the value of a final expression and any matplotlib
/// figures come back in `results`. An exception is reported in `error`
/// (the context stays usable); so is a run past its time limit, which is
/// interrupted (a `TimeoutError`; code that ignores the interrupt ends its
/// context).
pub async fn run(
    service: &Service,
    caller: &Principal,
    user: &User,
    client: &ClientInfo,
    sandbox_id: &str,
    cid: &str,
    input: RunCodeRequest,
) -> ServiceResult<RunResult> {
    let max_ms = service.plans.get(&user.plan_id).map_or(30_000, |p| {
        u64::try_from(p.max_time_secs).unwrap_or(30) * 1000
    });
    let timeout_ms = input.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).min(max_ms);
    if timeout_ms == 0 {
        return Err(ServiceError::invalid_field(
            "timeout_ms",
            "must be greater than 0",
        ));
    }
    let record = running(service, caller, sandbox_id).await?;
    let sandbox = service.sandboxes.attach(&record.id);
    // On its own task, so the time limit holds even if the client goes away.
    let result = tokio::spawn(run_in(
        sandbox,
        cid.to_owned(),
        input.code,
        Duration::from_millis(timeout_ms),
    ))
    .await
    .map_err(ServiceError::internal)??;
    let outcome = match &result.error {
        Some(error) if error.name == "TimeoutError" => "timeout",
        Some(_) => "error",
        None => "success",
    };
    audit_step(
        service,
        client,
        caller,
        "sandbox.context.run",
        &record.id,
        outcome,
    )
    .await;
    Ok(result)
}

async fn run_in(
    sandbox: Sandbox,
    cid: String,
    code: String,
    limit: Duration,
) -> ServiceResult<RunResult> {
    let nonce = random_token(32);
    let line = serde_json::json!({ "nonce": nonce, "code": code }).to_string() + "\n";
    let follower = sandbox.clone();
    let (pid, offset) = blocking(move || {
        let process = find(&follower, &cid)?;
        if process.status != "running" {
            return Err(ended(&process));
        }
        follower
            .process_input(process.pid, &line, false)
            .map_err(|error| match error {
                RuntimeError::Refused { .. } => ServiceError::conflict("the context has ended"),
                other => unreachable_sandbox(&other),
            })?;
        Ok((process.pid, process.output_bytes))
    })
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let follower = sandbox.clone();
    let stopped = stop.clone();
    let tag = nonce.clone();
    let mut waiting =
        tokio::task::spawn_blocking(move || await_line(&follower, pid, offset, &tag, &stopped));
    let signal = |number| {
        let sandbox = sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.process_signal(pid, number))
    };
    let mut timed_out = false;
    let awaited = match tokio::time::timeout(limit, &mut waiting).await {
        Ok(awaited) => awaited,
        Err(_) => {
            timed_out = true;
            let _ = signal(SIGINT).await;
            match tokio::time::timeout(INTERRUPT_GRACE, &mut waiting).await {
                Ok(awaited) => awaited,
                Err(_) => {
                    // It ignores interrupts: end it. The follower stops
                    // when the process does (or at its next heartbeat).
                    stop.store(true, Ordering::Relaxed);
                    let _ = signal(SIGKILL).await;
                    return Ok(RunResult {
                        stdout: String::new(),
                        stderr: String::new(),
                        error: Some(timeout_error(
                            limit,
                            "and did not stop when interrupted, so the context was ended",
                            String::new(),
                        )),
                        results: Vec::new(),
                        execution_count: 0,
                    });
                }
            }
        }
    };
    let awaited = awaited
        .map_err(ServiceError::internal)?
        .map_err(|e| unreachable_sandbox(&e))?;
    match awaited {
        Awaited::Line {
            reply,
            stray_out,
            stray_err,
        } => {
            let reply: KernelReply = serde_json::from_str(&reply).map_err(|_| {
                ServiceError::conflict("the context answered with something that is not a result")
            })?;
            if reply.busy {
                return Err(ServiceError::conflict(
                    "the context is running other code; wait for it to finish",
                ));
            }
            let mut error = reply.error;
            if timed_out
                && error
                    .as_ref()
                    .is_some_and(|e| e.name == "KeyboardInterrupt")
            {
                let traceback = error.map(|e| e.traceback).unwrap_or_default();
                error = Some(timeout_error(limit, "and was interrupted", traceback));
            }
            Ok(RunResult {
                stdout: stray_out + &reply.stdout,
                stderr: stray_err + &reply.stderr,
                error,
                results: reply.results,
                execution_count: reply.execution_count,
            })
        }
        Awaited::Ended { process, .. } => Err(ended(&process)),
        Awaited::Lost => Err(ServiceError::conflict(
            "the context's output was lost before its result could be read",
        )),
        Awaited::Stopped => Err(ServiceError::conflict("the context stopped answering")),
    }
}

fn timeout_error(limit: Duration, what: &str, traceback: String) -> RunError {
    RunError {
        name: "TimeoutError".to_owned(),
        value: format!(
            "the code ran past its time limit of {} ms {what}",
            limit.as_millis()
        ),
        traceback,
    }
}

/// The kernel's result line.
#[derive(Deserialize)]
struct KernelReply {
    #[serde(default)]
    busy: bool,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    #[serde(default)]
    error: Option<RunError>,
    #[serde(default)]
    results: Vec<BTreeMap<String, String>>,
    #[serde(default)]
    execution_count: u64,
}

/// How waiting for a kernel's line ended.
#[derive(Debug, PartialEq)]
enum Awaited {
    /// The line's JSON, and whatever else the process wrote meanwhile (a
    /// program the code left running, the interpreter's own complaints).
    Line {
        reply: String,
        stray_out: String,
        stray_err: String,
    },
    /// The process ended first.
    Ended {
        process: ProcessInfo,
        stray_err: String,
    },
    /// The log dropped output we had not read.
    Lost,
    /// Asked to stop.
    Stopped,
}

/// Follows the log of process `pid` from `offset` until the kernel's line
/// tagged `tag` appears.
fn await_line(
    sandbox: &Sandbox,
    pid: i32,
    offset: u64,
    tag: &str,
    stop: &AtomicBool,
) -> Result<Awaited, RuntimeError> {
    let mut scanner = LineScanner::new(format!("{RESULT_MARK} {tag} "));
    let mut stray_err = String::new();
    let mut awaited = None;
    let mut last = None;
    sandbox.process_follow(pid, offset, |logs| {
        if logs.truncated {
            awaited = Some(Awaited::Lost);
            return false;
        }
        for chunk in &logs.chunks {
            if chunk.stream == "stderr" {
                stray_err.push_str(&chunk.data);
            } else if let Some((reply, stray_out)) = scanner.push(&chunk.data) {
                awaited = Some(Awaited::Line {
                    reply,
                    stray_out,
                    stray_err: std::mem::take(&mut stray_err),
                });
                return false;
            }
        }
        last = Some(logs.process);
        if stop.load(Ordering::Relaxed) {
            awaited = Some(Awaited::Stopped);
            return false;
        }
        true
    })?;
    Ok(match (awaited, last) {
        (Some(awaited), _) => awaited,
        (None, Some(process)) => Awaited::Ended { process, stray_err },
        (None, None) => Awaited::Stopped,
    })
}

/// Finds `mark … \n` in text that arrives in pieces.
struct LineScanner {
    mark: String,
    text: String,
    /// Where the mark starts, once found.
    found: Option<usize>,
    /// How far the text has been searched.
    scanned: usize,
}

impl LineScanner {
    fn new(mark: String) -> LineScanner {
        LineScanner {
            mark,
            text: String::new(),
            found: None,
            scanned: 0,
        }
    }

    /// Adds a piece; once the line is whole, what follows the mark on it
    /// and all the text around it.
    fn push(&mut self, piece: &str) -> Option<(String, String)> {
        self.text.push_str(piece);
        let start = match self.found {
            Some(start) => start,
            None => {
                let start = self.text[self.scanned..]
                    .find(&self.mark)
                    .map(|at| self.scanned + at);
                let Some(start) = start else {
                    // The mark may begin in this piece and end in the next.
                    let mut keep = self.text.len().saturating_sub(self.mark.len());
                    while !self.text.is_char_boundary(keep) {
                        keep -= 1;
                    }
                    self.scanned = keep;
                    return None;
                };
                self.found = Some(start);
                self.scanned = start + self.mark.len();
                start
            }
        };
        let Some(end) = self.text[self.scanned..]
            .find('\n')
            .map(|at| self.scanned + at)
        else {
            self.scanned = self.text.len();
            return None;
        };
        let reply = self.text[start + self.mark.len()..end].to_owned();
        let mut around = self.text[..start].to_owned();
        around.push_str(&self.text[end + 1..]);
        Some((reply, around))
    }
}

/// The context a process is, if it is one.
fn context_of(process: &ProcessInfo) -> Option<ContextInfo> {
    match process.command.as_slice() {
        [.., marker, id, language] if marker == MARKER => Some(ContextInfo {
            id: id.clone(),
            language: language.clone(),
            pid: process.pid,
            created_at: process.started_at,
        }),
        _ => None,
    }
}

/// The process of context `cid`, or 404.
fn find(sandbox: &Sandbox, cid: &str) -> ServiceResult<ProcessInfo> {
    sandbox
        .processes()
        .map_err(|e| unreachable_sandbox(&e))?
        .into_iter()
        .rev()
        .find(|p| context_of(p).is_some_and(|c| c.id == cid))
        .ok_or_else(|| ServiceError::not_found("context"))
}

fn ended(process: &ProcessInfo) -> ServiceError {
    let how = match (process.exit_code, process.signal) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (Some(code), None) => format!("exit code {code}"),
        (None, None) => "ended".to_owned(),
    };
    ServiceError::conflict(format!("the context has ended ({how}); create a new one"))
}

/// The last lines of an interpreter's complaint.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let text = lines[lines.len().saturating_sub(5)..].join("\n");
    if text.is_empty() {
        "it exited".to_owned()
    } else {
        text
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ServiceResult<T> + Send + 'static,
) -> ServiceResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ServiceError::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` to a scanner for mark `M `; what it found.
    fn check(pieces: &[&str], expected: Option<(&str, &str)>) {
        let mut scanner = LineScanner::new("M ".to_owned());
        let mut found = None;
        for piece in pieces {
            assert!(found.is_none(), "found before the last piece: {pieces:?}");
            found = scanner.push(piece);
        }
        assert_eq!(
            found,
            expected.map(|(r, a)| (r.to_owned(), a.to_owned())),
            "{pieces:?}"
        );
    }

    #[test]
    fn a_result_line_is_found_across_pieces() {
        check(&["M {}\n"], Some(("{}", "")));
        check(
            &["noise M {\"a\"", ":1}\nafter"],
            Some(("{\"a\":1}", "noise after")),
        );
        check(&["x", "M", " ", "{}", "\n"], Some(("{}", "x")));
        check(&["é", "M {}"], None);
        check(&["no mark here\n"], None);
        // A mark without its space is not the mark.
        check(&["M{}\n", "M ok\n"], Some(("ok", "M{}\n")));
    }

    #[test]
    fn contexts_are_recognised_by_their_argv() {
        let process = |command: &[&str]| ProcessInfo {
            pid: 7,
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            status: "running".to_owned(),
            exit_code: None,
            signal: None,
            started_at: 1,
            ended_at: None,
            output_bytes: 0,
        };
        let found = context_of(&process(&[
            "python3", "-c", "…", "9", MARKER, "ctx_a", "python",
        ]));
        assert_eq!(
            found.map(|c| (c.id, c.language)),
            Some(("ctx_a".into(), "python".into()))
        );
        assert_eq!(context_of(&process(&["/bin/sh", "-c", "sleep 1"])), None);
    }
}
