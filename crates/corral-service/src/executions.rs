//! The judge: runs one program to a verdict in a sandbox of its own.
//!
//! Every execution gets a sandbox that is new or as new: one its
//! organization used before and the agent reset to how it started (every
//! process killed, every writable filesystem back to its start, System V
//! IPC removed), else a warm one from the pool when a class matches, else
//! one started now. Nothing crosses from one run to the next; a sandbox
//! that cannot be reset is destroyed, and sandboxes are never shared
//! between organizations. The source and extra files are written by the agent;
//! compilation and the run are two execs in that sandbox, under its
//! memory limit.
//!
//! Verdicts depend on what the run used, never on how busy the machine
//! was: CPU time is what the sandbox's cgroup counts (every process of the
//! run, also those never waited for; a watchdog kills the run when it
//! reaches its CPU limit), and memory is the cgroup's peak. The wall-clock
//! limit is separate and generous (default 3 × the CPU limit + 2 s); it
//! only ends programs that sleep or wait. When the program ends or a
//! limit is reached, every process left in the sandbox is killed, so
//! nothing that left the program's process group holds its output open.
//! Fairness between orgs comes before the run: [`crate::admission`].

use std::sync::OnceLock;

use serde::Deserialize;

use corral_store::{ExecutionOutcome, ExecutionRecord};
use corral_types::agent::ExecRequest;
use corral_types::executions::{ExecutionLimits, ExecutionResponse, LanguageResponse};

use crate::Service;
use crate::pool::PoolKey;

/// The job that runs a queued execution.
pub const RUN_JOB: &str = "execution.run";
/// The queue executions are run from.
pub const QUEUE: &str = "default";

/// Higher plans' executions are taken from the queue first.
pub fn priority(user: &corral_store::User) -> i64 {
    match user.plan_id.as_str() {
        "enterprise" => 30,
        "premium" => 20,
        "basic" => 10,
        _ => 0,
    }
}

/// Where the program lives inside its sandbox.
const WORK_DIR: &str = "/tmp/run";
/// Wall time a compiler may take, ms.
const COMPILE_WALL_MS: u64 = 30_000;
/// Compiler output kept.
const COMPILE_OUTPUT: usize = 64 * 1024;
/// CPU of an execution's sandbox, thousandths of a core.
const EXECUTION_CPU: i64 = 1000;

/// The wall-clock limit of a run whose request names none: room to wait
/// for I/O and for a share of a busy machine's CPUs.
pub fn default_wall_ms(time_ms: u64) -> u64 {
    time_ms.saturating_mul(3).saturating_add(2000)
}

/// One language, from `languages/<name>.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Language {
    /// Its name in requests.
    pub name: String,
    /// For people.
    pub display_name: String,
    /// The image it runs in.
    pub image: String,
    /// The file the source is written to.
    pub source_file: String,
    /// Compiler command, run in the work directory.
    #[serde(default)]
    pub compile: Option<Vec<String>>,
    /// Run command.
    pub run: Vec<String>,
    /// Programs the image must have.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Default limits.
    pub limits: DefaultLimits,
}

/// A language's default limits.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultLimits {
    /// CPU ms.
    pub time_ms: u64,
    /// MiB.
    pub memory_mb: u64,
    /// KiB per stream.
    pub output_kb: u64,
}

/// The language files in the repository, embedded.
const LANGUAGE_FILES: &[(&str, &str)] = &[
    ("python", include_str!("../languages/python.yaml")),
    ("bash", include_str!("../languages/bash.yaml")),
    ("c", include_str!("../languages/c.yaml")),
    ("cpp", include_str!("../languages/cpp.yaml")),
    ("javascript", include_str!("../languages/javascript.yaml")),
];

/// The languages this host can run: those whose required programs exist
/// (only the `host` image is offered here; its programs are the host's).
pub fn languages() -> &'static [Language] {
    static LANGUAGES: OnceLock<Vec<Language>> = OnceLock::new();
    LANGUAGES.get_or_init(|| {
        LANGUAGE_FILES
            .iter()
            .filter_map(|(file, text)| {
                use figment::providers::Format;
                let parsed = figment::Figment::from(figment::providers::Yaml::string(text))
                    .extract::<Language>();
                match parsed {
                    Ok(language) => Some(language),
                    Err(error) => {
                        tracing::error!(%error, file, "a language file does not parse");
                        None
                    }
                }
            })
            .filter(|l| {
                l.image == crate::driver::HOST_IMAGE
                    && l.requires.iter().all(|p| std::path::Path::new(p).exists())
            })
            .collect()
    })
}

/// The language called `name`, if this host runs it.
pub fn language(name: &str) -> Option<&'static Language> {
    languages().iter().find(|l| l.name == name)
}

impl Language {
    /// As `GET /api/v1/languages` shows it.
    pub fn describe(&self) -> LanguageResponse {
        LanguageResponse {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            compiled: self.compile.is_some(),
            source_file: self.source_file.clone(),
            limits: ExecutionLimits {
                time_ms: Some(self.limits.time_ms),
                wall_time_ms: Some(default_wall_ms(self.limits.time_ms)),
                memory_mb: Some(self.limits.memory_mb),
                output_kb: Some(self.limits.output_kb),
            },
        }
    }
}

/// An execution as the API shows it.
pub fn response(r: &ExecutionRecord) -> ExecutionResponse {
    let u = |v: i64| Some(u64::try_from(v).unwrap_or(0));
    ExecutionResponse {
        id: r.id.clone(),
        language: r.language.clone(),
        status: r.status.clone(),
        exit_code: r.exit_code,
        signal: r.signal,
        stdout: r.stdout.clone(),
        stderr: r.stderr.clone(),
        compile_output: r.compile_output.clone(),
        time_ms: r.time_ms,
        wall_ms: r.wall_ms,
        memory_kb: r.memory_kb,
        limits: ExecutionLimits {
            time_ms: u(r.time_limit_ms),
            wall_time_ms: r.wall_limit_ms.and_then(u),
            memory_mb: u(r.memory_limit_mb),
            output_kb: u(r.output_limit_kb),
        },
        batch_id: r.batch_id.clone(),
        error: r.error.clone(),
        created_at: corral_core::clock::rfc3339(r.created_at),
        finished_at: r.finished_at.map(corral_core::clock::rfc3339),
    }
}

/// Output as judged: trailing whitespace of each line and trailing empty
/// lines do not count.
fn normalized(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_owned()
}

fn to_i64(v: u64) -> Option<i64> {
    i64::try_from(v).ok()
}

/// How long a queued execution whose org has no free place waits before
/// its job is tried again.
const DEFER: std::time::Duration = std::time::Duration::from_secs(1);

/// The execution `id` if it still has to run.
async fn pending(state: &Service, id: &str) -> Result<Option<ExecutionRecord>, String> {
    let record = state
        .store
        .execution(None, id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(record.filter(|r| matches!(r.status.as_str(), "queued" | "running")))
}

/// The places of the org's line (its plan's concurrent executions) and the
/// job priority of the user who asked.
async fn line_of(state: &Service, record: &ExecutionRecord) -> (usize, Option<corral_store::User>) {
    let user = state.store.user_by_id(&record.user_id).await.ok().flatten();
    let places = user
        .as_ref()
        .and_then(|user| state.plans.get(&user.plan_id))
        .map_or(1, |plan| {
            usize::try_from(plan.max_concurrent_executions).unwrap_or(1)
        });
    (places, user)
}

/// Runs a recorded execution when its org has a free place (waiting in
/// line for one) and writes its outcome (once: a second delivery of the
/// same job finds it finished and does nothing). For `wait=true`.
pub async fn run_recorded(state: &Service, id: &str) -> Result<(), String> {
    let Some(record) = pending(state, id).await? else {
        return Ok(());
    };
    let (places, _) = line_of(state, &record).await;
    let place = state.admission.enter(&record.org_id, places).await;
    run_admitted(state, &record, place).await
}

/// A queued execution's job: runs it if its org has a free place now;
/// otherwise queues a new job for it, [`DEFER`] later, and ends, so a queue
/// worker never waits in one org's line while other orgs' jobs could run.
pub async fn run_queued(state: &Service, id: &str) -> Result<(), String> {
    let Some(record) = pending(state, id).await? else {
        return Ok(());
    };
    let (places, user) = line_of(state, &record).await;
    if let Some(place) = state.admission.try_enter(&record.org_id, places) {
        return run_admitted(state, &record, place).await;
    }
    let priority = user.as_ref().map_or(0, crate::executions::priority);
    let job =
        corral_queue::NewJob::new(crate::executions::RUN_JOB, serde_json::json!({ "id": id }))
            .queue(crate::executions::QUEUE)
            .priority(priority)
            .delay(DEFER);
    state
        .queue
        .enqueue(job)
        .await
        .map_err(|e| format!("queueing the execution again: {e}"))?;
    Ok(())
}

/// Runs a pending execution that holds a place in its org's line.
async fn run_admitted(
    state: &Service,
    record: &ExecutionRecord,
    _place: crate::admission::Place,
) -> Result<(), String> {
    let id = record.id.as_str();
    // The wall clock starts here, after the wait for a place.
    let now = state.clock.now_ms();
    state
        .store
        .execution_started(now, id)
        .await
        .map_err(|e| e.to_string())?;
    let outcome = match run(state, record).await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(%error, id, "an execution could not run");
            ExecutionOutcome {
                status: "internal_error".to_owned(),
                error: Some(error),
                ..ExecutionOutcome::default()
            }
        }
    };
    let finished = match state
        .store
        .execution_finished(state.clock.now_ms(), id, &outcome)
        .await
    {
        Ok(finished) => finished,
        Err(error) => unrecorded(state, record, &error).await?,
    };
    if finished
        && let Some(url) = &record.callback_url
        && let Ok(Some(done)) = state.store.execution(None, id).await
    {
        crate::callbacks::deliver(state, url, &response(&done)).await;
    }
    Ok(())
}

/// Ends an execution whose outcome the store refused (`error`) as
/// `internal_error`, without its output, and gives its quota back: the
/// platform failed, not the program. Without this the record stayed
/// `running` forever and the job ran the program again on every retry.
/// An `Err` only when even that cannot be written (the database is gone):
/// the job is then retried.
async fn unrecorded(
    state: &Service,
    record: &ExecutionRecord,
    error: &corral_store::StoreError,
) -> Result<bool, String> {
    tracing::error!(%error, id = %record.id, "an execution's outcome could not be recorded");
    let failed = ExecutionOutcome {
        status: "internal_error".to_owned(),
        error: Some("the outcome could not be recorded".to_owned()),
        ..ExecutionOutcome::default()
    };
    let finished = state
        .store
        .execution_finished(state.clock.now_ms(), &record.id, &failed)
        .await
        .map_err(|e| e.to_string())?;
    if finished
        && let Err(error) = crate::quota::refund(
            state,
            &record.user_id,
            crate::quota::Daily::Executions,
            record.created_at,
        )
        .await
    {
        tracing::error!(%error, id = %record.id, "an execution's quota could not be given back");
    }
    Ok(finished)
}

/// Runs one execution in a sandbox of its own.
async fn run(state: &Service, record: &ExecutionRecord) -> Result<ExecutionOutcome, String> {
    let language = language(&record.language)
        .ok_or_else(|| format!("the language {} is not available here", record.language))?;
    let key = PoolKey {
        image: language.image.clone(),
        memory_mb: record.memory_limit_mb,
        cpu_millicores: EXECUTION_CPU,
        pids: crate::sandbox::SANDBOX_PIDS,
        disk_mb: crate::sandbox::SANDBOX_DISK_MB,
    };
    let pool = state.sandboxes.pool.clone();
    let warm = match pool.take_reused(&key, &record.org_id) {
        Some(warm) => warm,
        None => {
            pool.take_or_start(state.driver(), &state.store, &key)
                .await?
        }
    };
    let sandbox = state.sandboxes.attach(&warm.id);
    let files: Vec<corral_types::executions::ExecutionFile> =
        serde_json::from_str(&record.files).unwrap_or_default();
    let (org_id, record, language) = (record.org_id.clone(), record.clone(), language.clone());
    let id = warm.id.clone();
    let judged = tokio::task::spawn_blocking(move || {
        let outcome = judge(&sandbox, &record, &language, &files);
        // Nothing of this run reaches the next one: the sandbox is reset to
        // how it started (and kept for this organization's next run), or,
        // where that fails, destroyed.
        let reset = sandbox.reset();
        if let Err(error) = &reset {
            tracing::debug!(%error, sandbox = %id, "not reusable; destroying it");
            sandbox.destroy();
        }
        (outcome, reset.is_ok())
    })
    .await
    .map_err(|e| e.to_string());
    match judged {
        Ok((outcome, true)) => {
            if let Some(evicted) = pool.keep_reused(key, &org_id, warm) {
                state.sandboxes.destroy_blocking(&evicted.id).await;
                pool.settle(&evicted.id);
            }
            outcome
        }
        Ok((outcome, false)) => {
            pool.settle(&warm.id);
            outcome
        }
        Err(error) => {
            pool.settle(&warm.id);
            Err(error)
        }
    }
}

/// Writes the files, compiles, runs and decides (blocking).
fn judge(
    sandbox: &corral_runtime::Sandbox,
    record: &ExecutionRecord,
    language: &Language,
    files: &[corral_types::executions::ExecutionFile],
) -> Result<ExecutionOutcome, String> {
    let failed = |what: &str, e: corral_runtime::RuntimeError| format!("{what}: {e}");
    let mkdir = corral_types::agent::AgentRequest::Mkdir {
        path: WORK_DIR.to_owned(),
        parents: true,
    };
    sandbox
        .file_op(&mkdir)
        .map_err(|e| failed("making the work directory", e))?;
    let source = format!("{WORK_DIR}/{}", language.source_file);
    sandbox
        .write_file(&source, record.code.as_bytes(), None)
        .map_err(|e| failed("writing the source", e))?;
    for file in files {
        sandbox
            .write_file(
                &format!("{WORK_DIR}/{}", file.name),
                file.content.as_bytes(),
                None,
            )
            .map_err(|e| failed("writing a file", e))?;
    }
    let env: Vec<(String, String)> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("LANG", "C.UTF-8"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let request =
        |argv: &[String], stdin: &str, timeout_ms: u64, output_limit: usize| ExecRequest {
            argv: argv.to_vec(),
            env: env.clone(),
            cwd: WORK_DIR.to_owned(),
            stdin: stdin.to_owned(),
            timeout_ms,
            output_limit,
            stream: false,
            stdin_stream: false,
            sole: true,
        };
    let mut outcome = ExecutionOutcome::default();
    if let Some(compile) = &language.compile {
        let compiled = sandbox
            .exec(request(compile, "", COMPILE_WALL_MS, COMPILE_OUTPUT))
            .map_err(|e| failed("compiling", e))?;
        outcome.compile_output = format!("{}{}", compiled.stdout, compiled.stderr);
        if compiled.exit_code != Some(0) {
            outcome.status = "compile_error".to_owned();
            outcome.exit_code = compiled.exit_code.map(i64::from);
            outcome.signal = compiled.signal.map(i64::from);
            return Ok(outcome);
        }
    }
    let time_limit = u64::try_from(record.time_limit_ms).unwrap_or(1000);
    let output_limit = usize::try_from(record.output_limit_kb).unwrap_or(64) * 1024;
    // The CPU limit is what the cgroup counts; the wall clock only ends a
    // program that sleeps or waits (see the module's comment).
    let wall = record
        .wall_limit_ms
        .and_then(|w| u64::try_from(w).ok())
        .unwrap_or_else(|| default_wall_ms(time_limit));
    let measured = sandbox
        .exec_measured(
            request(&language.run, &record.stdin, wall, output_limit),
            time_limit,
        )
        .map_err(|e| failed("running", e))?;
    let ran = measured.result;
    // Every process of the run, from the cgroup; at least what wait4 saw.
    let memory_kb = measured.memory_growth_kb.max(ran.memory_kb);
    outcome.exit_code = ran.exit_code.map(i64::from);
    outcome.signal = ran.signal.map(i64::from);
    outcome.stdout = ran.stdout;
    outcome.stderr = ran.stderr;
    outcome.time_ms = to_i64(measured.cpu_ms);
    outcome.wall_ms = to_i64(ran.duration_ms);
    outcome.memory_kb = to_i64(memory_kb);
    let memory_limit_kb = u64::try_from(record.memory_limit_mb).unwrap_or(0) * 1024;
    outcome.status = if ran.timed_out || measured.cpu_limit_hit {
        "time_limit"
    } else if measured.oom_killed
        || ran.signal == Some(9)
        || (ran.exit_code != Some(0) && memory_kb >= memory_limit_kb)
    {
        // The watchdog's SIGKILL is a time limit (above); any other is
        // the memory cgroup's OOM killer.
        "memory_limit"
    } else if ran.truncated {
        "output_limit"
    } else if ran.exit_code != Some(0) {
        "runtime_error"
    } else if record
        .expected_output
        .as_deref()
        .is_some_and(|expected| normalized(expected) != normalized(&outcome.stdout))
    {
        "wrong_answer"
    } else {
        "ok"
    }
    .to_owned();
    Ok(outcome)
}

/// Checks a language's extra file names: plain names, no directories.
pub fn valid_file_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
