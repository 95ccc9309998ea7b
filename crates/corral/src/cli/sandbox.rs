//! `corral sandbox …`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use corral_client::types::agent::ExecResult;
use corral_client::types::sandbox::{
    CreateSandboxRequest, ExecRequestBody, Resources, SandboxPage,
};
use corral_client::types::terminal::StartProcessRequest;
use corral_client::{Client, ExecEvent, SandboxFilter};

use super::output;
use super::{Failure, GlobalArgs, Outcome, connect, key_value, print_json};

/// `corral sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Create and start a sandbox; prints its id.
    #[command(
        after_help = "Example:\n  corral sandbox create --name dev --memory 256 --label team=ml"
    )]
    Create(CreateArgs),
    /// List sandboxes (all pages).
    #[command(visible_alias = "list")]
    Ls {
        /// Only sandboxes in this state (creating, starting, running, paused, stopped, error).
        #[arg(long)]
        state: Option<String>,
        /// Only sandboxes with this label (repeatable: all must match).
        #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
        label: Vec<(String, String)>,
        /// Every org's sandboxes, with an ORG column (platform
        /// administrators only).
        #[arg(long)]
        all: bool,
    },
    /// Show one sandbox.
    Get {
        /// Sandbox id.
        id: String,
    },
    /// Run a command in a sandbox, printing its output as it comes; exits
    /// with its exit code (124 on timeout, 125 when output was truncated).
    #[command(after_help = "Examples:\n  \
        corral sandbox exec $ID -- python3 -c 'print(1)'\n  \
        corral sandbox exec $ID -c 'ls /tmp | wc -l'\n  \
        corral sandbox exec $ID -d -c 'python3 -m http.server'   (background: prints its PID)\n  \
        echo hello | corral sandbox exec $ID -- cat\n\n\
        Standard input: from a pipe it is streamed to the program while it runs (and the\n\
        command ends when the program does, whether or not it read it all); from a file it\n\
        is sent whole; from a terminal, or with --no-stdin, the program gets none.\n\n\
        Exit status: the program's exit code; 128+N when signal N killed it; 124 when the\n\
        timeout killed it; 125 when output went past --max-output (a warning on stderr\n\
        gives the program's own code); 1 when corral itself failed.")]
    Exec(ExecArgs),
    /// Copy a file into or out of a sandbox: one side is `ID:/path`, the
    /// other a local path (`-` for stdin or stdout).
    #[command(after_help = "Examples:\n  \
        corral sandbox cp data.csv $ID:/tmp/\n  \
        corral sandbox cp $ID:/tmp/out.png ./out.png\n  \
        corral sandbox cp $ID:/tmp/log.txt -")]
    Cp {
        /// Source: a local file, `-` (stdin) or `ID:/path`.
        src: String,
        /// Destination: a local file or directory, `-` (stdout) or `ID:/path`
        /// (a trailing `/` keeps the source's file name).
        dst: String,
    },
    /// Delete sandboxes and everything in them.
    #[command(visible_alias = "delete")]
    Rm {
        /// Sandbox ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Start a stopped sandbox.
    Start {
        /// Sandbox id.
        id: String,
    },
    /// Stop a sandbox (its record stays; `start` brings it back).
    Stop {
        /// Sandbox id.
        id: String,
    },
    /// List a sandbox's background processes and terminals.
    Ps {
        /// Sandbox id.
        id: String,
    },
    /// Print a background process's output (stdout to stdout, stderr to
    /// stderr); with -f, keep printing until it ends and exit with its code.
    #[command(after_help = "Example:\n  corral sandbox logs $ID 42 -f")]
    Logs {
        /// Sandbox id.
        id: String,
        /// The process's PID (from `corral sandbox ps`).
        pid: i32,
        /// Follow: print new output as it comes, until the process ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Image [server default: host].
    #[arg(long)]
    image: Option<String>,
    /// CPU cores, such as 0.5.
    #[arg(long, value_name = "CORES")]
    cpu: Option<f64>,
    /// Memory, MiB.
    #[arg(long, value_name = "MB")]
    memory: Option<i64>,
    /// Writable space (/tmp), MiB.
    #[arg(long, value_name = "MB")]
    disk: Option<i64>,
    /// Processes and threads.
    #[arg(long, value_name = "N")]
    pids: Option<i64>,
    /// Environment of every command (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// Label (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    label: Vec<(String, String)>,
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// Sandbox id.
    id: String,
    /// A shell command line, run by /bin/sh -c (instead of ARGV).
    #[arg(
        short = 'c',
        long = "command",
        value_name = "COMMAND",
        conflicts_with = "argv"
    )]
    command: Option<String>,
    /// Working directory [default: /tmp].
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Extra environment (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// Kill the command after this many milliseconds [server default: 30000].
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Do not send standard input even when it is not a terminal.
    #[arg(long)]
    no_stdin: bool,
    /// Keep at most this many bytes of each of stdout and stderr [server
    /// default: 1048576; at most the server's sandbox.exec_max_output_bytes].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    max_output: Option<u64>,
    /// Run it in the background: print its PID and return at once (see
    /// `corral sandbox ps` and `corral sandbox logs`).
    #[arg(short = 'd', long, conflicts_with_all = ["timeout_ms", "no_stdin", "max_output"])]
    background: bool,
    /// Program and arguments (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGV",
        required_unless_present = "command"
    )]
    argv: Vec<String>,
}

pub async fn main(args: SandboxArgs) -> Outcome {
    let global = &args.global;
    let client = connect(global)?;
    match args.command {
        SandboxCommand::Create(create) => {
            #[allow(
                clippy::needless_update,
                reason = "the request type grows optional fields; the server's defaults apply"
            )]
            let request = CreateSandboxRequest {
                name: create.name,
                image: create.image,
                resources: Resources {
                    cpu: create.cpu,
                    memory_mb: create.memory,
                    disk_mb: create.disk,
                    pids: create.pids,
                },
                env: create.env.into_iter().collect(),
                labels: create.label.into_iter().collect(),
                ..CreateSandboxRequest::default()
            };
            let sandbox = client.create_sandbox(&request).await?;
            if global.json {
                print_json(&sandbox)?;
            } else {
                println!("{}", sandbox.id);
            }
        }
        SandboxCommand::Ls { state, label, all } => {
            let filter = SandboxFilter {
                state,
                labels: label,
                limit: Some(200),
                all_orgs: all,
            };
            let items = client.list_all_sandboxes(&filter).await?;
            if global.json {
                print_json(&SandboxPage {
                    items,
                    next_cursor: None,
                })?;
            } else if all {
                let rows: Vec<_> = items
                    .iter()
                    .map(|s| {
                        let mut row = output::sandbox_row(s);
                        row.push(s.org_id.clone());
                        row
                    })
                    .collect();
                let [id, name, image, state, cpu, mem, created] = output::SANDBOX_HEADERS;
                let headers = [id, name, image, state, cpu, mem, created, "ORG"];
                print!("{}", output::table(headers, &rows));
            } else {
                let rows: Vec<_> = items.iter().map(output::sandbox_row).collect();
                print!("{}", output::table(output::SANDBOX_HEADERS, &rows));
            }
        }
        SandboxCommand::Get { id } => {
            let sandbox = client.sandbox(&id).await?;
            if global.json {
                print_json(&sandbox)?;
            } else {
                print!("{}", output::sandbox_details(&sandbox));
            }
        }
        SandboxCommand::Start { id } => {
            let sandbox = client.start_sandbox(&id).await?;
            show_state(global, &sandbox)?;
        }
        SandboxCommand::Stop { id } => {
            let sandbox = client.stop_sandbox(&id).await?;
            show_state(global, &sandbox)?;
        }
        SandboxCommand::Ps { id } => ps(&client, global, &id).await?,
        SandboxCommand::Logs { id, pid, follow } => {
            return logs(&client, &id, pid, follow).await;
        }
        SandboxCommand::Rm { ids } => return remove(&client, global, &ids).await,
        SandboxCommand::Exec(exec) => return run_exec(&client, global, exec).await,
        SandboxCommand::Cp { src, dst } => return copy(&client, &src, &dst).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn ps(client: &Client, global: &GlobalArgs, id: &str) -> Result<(), Failure> {
    let processes = client.processes(id).await?;
    let terminals = client.terminals(id).await?;
    if global.json {
        return print_json(&serde_json::json!({
            "processes": processes,
            "terminals": terminals,
        }));
    }
    let ended = |code: Option<i32>, signal: Option<i32>| match (code, signal) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "-".to_owned(),
    };
    let rows: Vec<Vec<String>> = processes
        .iter()
        .map(|p| {
            vec![
                p.pid.to_string(),
                "process".to_owned(),
                p.status.clone(),
                ended(p.exit_code, p.signal),
                p.command.join(" "),
            ]
        })
        .chain(terminals.iter().map(|t| {
            vec![
                t.pid.to_string(),
                format!("terminal {} ({} attached)", t.id, t.attached),
                if t.running { "running" } else { "exited" }.to_owned(),
                ended(t.exit_code, t.signal),
                t.command.join(" "),
            ]
        }))
        .collect();
    print!(
        "{}",
        output::table(["PID", "KIND", "STATUS", "EXIT", "COMMAND"], &rows)
    );
    Ok(())
}

/// Prints a process's output; following, polls for more until it ends.
async fn logs(client: &Client, id: &str, pid: i32, follow: bool) -> Outcome {
    let mut offset = 0;
    loop {
        let logs = client.process_logs(id, pid, offset).await?;
        if logs.truncated && offset == 0 {
            eprintln!("(older output was dropped: the log keeps the last megabyte)");
        }
        for chunk in &logs.chunks {
            if chunk.stream == "stderr" {
                let mut err = std::io::stderr();
                let _ = err.write_all(chunk.data.as_bytes());
                let _ = err.flush();
            } else {
                let mut out = std::io::stdout();
                out.write_all(chunk.data.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|e| Failure::Other(e.into()))?;
            }
        }
        offset = logs.next_offset;
        let over = logs.process.status != "running";
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        if over && logs.chunks.is_empty() {
            let code = match (logs.process.exit_code, logs.process.signal) {
                (Some(code), _) => code,
                (None, Some(signal)) => 128 + signal,
                (None, None) => 1,
            };
            return Ok(ExitCode::from(
                u8::try_from(code.clamp(0, 255)).unwrap_or(1),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn show_state(
    global: &GlobalArgs,
    sandbox: &corral_client::types::sandbox::SandboxResponse,
) -> Result<(), Failure> {
    if global.json {
        print_json(sandbox)
    } else {
        println!("{} {}", sandbox.id, sandbox.state);
        Ok(())
    }
}

/// Deletes each; one failure does not stop the others, but fails the command.
async fn remove(client: &Client, global: &GlobalArgs, ids: &[String]) -> Outcome {
    let mut failed = false;
    for id in ids {
        match client.delete_sandbox(id).await {
            Ok(()) => {
                if !global.json {
                    println!("{id}");
                }
            }
            Err(error) => {
                eprintln!("error: {id}: {error}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_exec(client: &Client, global: &GlobalArgs, args: ExecArgs) -> Outcome {
    if args.background {
        let request = StartProcessRequest {
            command: args.command,
            argv: (!args.argv.is_empty()).then_some(args.argv),
            cwd: args.cwd,
            env: args.env.into_iter().collect(),
        };
        let process = client.start_process(&args.id, &request).await?;
        if global.json {
            print_json(&process)?;
        } else {
            println!("{}", process.pid);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let input = if args.no_stdin {
        Input::Nothing
    } else {
        exec_input()?
    };
    let request = ExecRequestBody {
        command: args.command,
        argv: (!args.argv.is_empty()).then_some(args.argv),
        env: args.env.into_iter().collect::<BTreeMap<_, _>>(),
        cwd: args.cwd,
        stream_stdin: matches!(input, Input::Stream),
        stdin: match input {
            Input::Text(text) => Some(text),
            Input::Nothing | Input::Stream => None,
        },
        timeout_ms: args.timeout_ms,
        max_output_bytes: args.max_output,
    };
    let mut events = client.exec_stream(&args.id, &request).await?;
    let mut feeding = None;
    // With --json the output goes into the one result printed at the end.
    let (mut stdout, mut stderr) = (String::new(), String::new());
    loop {
        match events.next().await? {
            ExecEvent::Started(exec_id) => {
                let (client, id) = (client.clone(), args.id.clone());
                feeding = Some(tokio::spawn(feed_stdin(client, id, exec_id)));
            }
            ExecEvent::Stdout(data) if global.json => stdout.push_str(&data),
            ExecEvent::Stderr(data) if global.json => stderr.push_str(&data),
            ExecEvent::Stdout(data) => {
                let mut out = std::io::stdout().lock();
                out.write_all(data.as_bytes())?;
                out.flush()?;
            }
            ExecEvent::Stderr(data) => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(data.as_bytes());
                let _ = err.flush();
            }
            ExecEvent::Exited(mut result) => {
                // Whatever the program left unread of standard input stays
                // unread: the command is over when the program is.
                if let Some(feeding) = feeding {
                    feeding.abort();
                }
                result.stdout = stdout;
                result.stderr = stderr;
                return finish_exec(global, &result);
            }
        }
    }
}

/// What the program's standard input is.
enum Input {
    /// None: a terminal, or `--no-stdin`.
    Nothing,
    /// All of it, read before the program starts (a file, or empty).
    Text(String),
    /// A pipe or socket: written to the program as it comes.
    Stream,
}

/// Decides how standard input reaches the program: a pipe is streamed
/// (its writer may never finish, as `sleep 8 | corral sandbox exec …`), a
/// file is read whole at once.
fn exec_input() -> Result<Input, Failure> {
    use std::os::unix::fs::FileTypeExt;
    if std::io::stdin().is_terminal() {
        return Ok(Input::Nothing);
    }
    let streamed = std::fs::metadata("/dev/stdin")
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false);
    if streamed {
        return Ok(Input::Stream);
    }
    Ok(read_stdin()?.map_or(Input::Nothing, Input::Text))
}

/// Most standard input sent in one write request, bytes.
const STDIN_BATCH: usize = 256 * 1024;

/// Writes standard input to a running exec as it arrives, then closes it.
/// Ends early (quietly) when the exec has ended.
async fn feed_stdin(client: Client, id: String, exec_id: String) {
    let mut chunks = super::shell::stdin_chunks();
    let mut pending = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        pending.extend_from_slice(&chunk);
        // What has piled up goes in one request (a fast pipe is not one
        // request per read).
        while pending.len() < STDIN_BATCH
            && let Ok(more) = chunks.try_recv()
        {
            pending.extend_from_slice(&more);
        }
        let whole = match std::str::from_utf8(&pending) {
            Ok(_) => pending.len(),
            // A character cut at the end: its rest comes with the next chunk.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                eprintln!(
                    "corral: standard input is not UTF-8 text; the program's was closed there \
                     (copy binary data in with `corral sandbox cp`)"
                );
                break;
            }
        };
        let rest = pending.split_off(whole);
        let text = String::from_utf8_lossy(&pending).into_owned();
        pending = rest;
        if !text.is_empty()
            && client
                .exec_stdin(&id, &exec_id, &text, false)
                .await
                .is_err()
        {
            return;
        }
    }
    let _ = client.exec_stdin(&id, &exec_id, "", true).await;
}

/// Standard input for the program: everything, when it is not a terminal.
pub(crate) fn read_stdin() -> Result<Option<String>, Failure> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    if bytes.is_empty() {
        return Ok(None);
    }
    String::from_utf8(bytes).map(Some).map_err(|_| {
        Failure::Usage(
            "standard input is not UTF-8 text (exec takes text; copy binary data in with `corral sandbox cp`, or pass --no-stdin)"
                .into(),
        )
    })
}

/// Prints a finished program's output and gives its exit code.
pub(crate) fn finish_exec(global: &GlobalArgs, result: &ExecResult) -> Outcome {
    if global.json {
        print_json(result)?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(result.stdout.as_bytes())?;
        out.flush()?;
        let mut err = std::io::stderr().lock();
        err.write_all(result.stderr.as_bytes())?;
        if result.truncated {
            let own = match (result.exit_code, result.signal) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(signal)) => format!("signal {signal}"),
                (None, None) => "no exit status".to_owned(),
            };
            writeln!(
                err,
                "corral: output was truncated: past the limit per stream (--max-output), the rest \
                 was dropped; exiting with 125 (the program ended with {own})"
            )?;
        }
        if result.timed_out {
            writeln!(
                err,
                "corral: timed out after {} ms and was killed",
                result.duration_ms
            )?;
        }
    }
    Ok(ExitCode::from(exit_code(result)))
}

/// The exit status for output that was cut short (as `timeout(1)` uses
/// 125 for its own failures: not one of the program's).
pub(crate) const TRUNCATED: u8 = 125;

/// The shell's view of how a program ended: its code, 124 after a timeout
/// (as `timeout(1)`), 128 + n after signal n; 125 when its output was
/// truncated (the program's own status is then on stderr).
pub(crate) fn exit_code(result: &ExecResult) -> u8 {
    if result.timed_out {
        return 124;
    }
    if result.truncated {
        return TRUNCATED;
    }
    match (result.exit_code, result.signal) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from((128 + signal).clamp(0, 255)).unwrap_or(1),
        (None, None) => 1,
    }
}

/// `ID:/path`, when `s` names a path in a sandbox.
fn remote(s: &str) -> Option<(&str, &str)> {
    let (id, path) = s.split_once(':')?;
    (!id.is_empty() && !id.contains('/') && path.starts_with('/')).then_some((id, path))
}

async fn copy(client: &Client, src: &str, dst: &str) -> Outcome {
    match (remote(src), remote(dst)) {
        (None, Some((id, path))) => {
            let content = if src == "-" {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .context("cannot read standard input")?;
                bytes
            } else {
                std::fs::read(src).with_context(|| format!("cannot read {src}"))?
            };
            let target = if path.ends_with('/') {
                let name = Path::new(src)
                    .file_name()
                    .filter(|_| src != "-")
                    .ok_or_else(|| {
                        Failure::Usage(format!("`{dst}` is a directory: name the file to write"))
                    })?;
                format!("{path}{}", name.to_string_lossy())
            } else {
                path.to_owned()
            };
            client.upload(id, &target, content).await?;
        }
        (Some((id, path)), None) => {
            let mut download = client.download_stream(id, path).await?;
            if dst == "-" {
                let mut out = std::io::stdout().lock();
                while let Some(chunk) = download.chunk().await? {
                    out.write_all(&chunk)?;
                }
                out.flush()?;
            } else {
                let mut target = PathBuf::from(dst);
                if target.is_dir() {
                    let name = Path::new(path)
                        .file_name()
                        .ok_or_else(|| Failure::Usage(format!("`{src}` names no file")))?;
                    target.push(name);
                }
                let mut file = std::fs::File::create(&target)
                    .with_context(|| format!("cannot create {}", target.display()))?;
                let written: Result<(), Failure> = async {
                    while let Some(chunk) = download.chunk().await? {
                        file.write_all(&chunk)
                            .with_context(|| format!("cannot write {}", target.display()))?;
                    }
                    Ok(())
                }
                .await;
                if written.is_err() {
                    let _ = std::fs::remove_file(&target);
                }
                written?;
            }
        }
        (Some(_), Some(_)) => {
            return Err(Failure::Usage(
                "both sides are in a sandbox; copy through a local file".into(),
            ));
        }
        (None, None) => {
            return Err(Failure::Usage(format!(
                "neither `{src}` nor `{dst}` is a sandbox path: write one side as ID:/absolute/path"
            )));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(exit_code: Option<i32>, signal: Option<i32>, timed_out: bool) -> ExecResult {
        ExecResult {
            exit_code,
            signal,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            timed_out,
            duration_ms: 1,
            cpu_ms: 0,
            memory_kb: 0,
        }
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(&result(Some(0), None, false)), 0);
        assert_eq!(exit_code(&result(Some(3), None, false)), 3);
        assert_eq!(exit_code(&result(Some(256 + 7), None, false)), 7);
        assert_eq!(exit_code(&result(None, Some(9), false)), 137);
        assert_eq!(exit_code(&result(None, Some(9), true)), 124);
        assert_eq!(exit_code(&result(None, None, false)), 1);
        let cut = ExecResult {
            truncated: true,
            ..result(Some(0), None, false)
        };
        assert_eq!(exit_code(&cut), TRUNCATED);
        let cut_and_late = ExecResult {
            truncated: true,
            ..result(None, Some(9), true)
        };
        assert_eq!(exit_code(&cut_and_late), 124);
    }

    #[test]
    fn a_sandbox_path_is_id_colon_absolute_path() {
        assert_eq!(remote("abc:/tmp/x"), Some(("abc", "/tmp/x")));
        assert_eq!(remote("abc:tmp/x"), None);
        assert_eq!(remote("./a:/b"), None);
        assert_eq!(remote(":/b"), None);
        assert_eq!(remote("plain.txt"), None);
        assert_eq!(remote("-"), None);
    }
}
