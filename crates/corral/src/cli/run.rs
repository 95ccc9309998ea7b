//! `corral run FILE`: a one-shot sandbox. It is created, the file uploaded
//! to `/tmp/<name>` and run with the interpreter its language needs, and the
//! sandbox deleted afterwards whatever happened: success, failure, an error,
//! or Ctrl-C / SIGTERM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use corral_client::Client;
use corral_client::types::sandbox::{CreateSandboxRequest, ExecRequestBody, Resources};

use super::sandbox::{finish_exec, read_stdin};
use super::{Failure, GlobalArgs, Outcome, connect, report};

/// `corral run`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    corral run hello.py\n  \
    corral run main.c -- 3 4\n  \
    corral run script --language sh")]
pub struct RunArgs {
    #[command(flatten)]
    global: GlobalArgs,
    /// The program file.
    file: PathBuf,
    /// Language, instead of the one the file's extension names.
    #[arg(long, short = 'l', value_name = "LANG")]
    language: Option<String>,
    /// Image [server default: host].
    #[arg(long)]
    image: Option<String>,
    /// Memory, MiB [server default].
    #[arg(long, value_name = "MB")]
    memory: Option<i64>,
    /// Kill the program after this many milliseconds [server default: 30000].
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Arguments for the program (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// How a language runs a file at `path` with arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// `program path args…`
    Interpreter(&'static str),
    /// Compile with `compiler`, then run the result.
    Compiler(&'static str),
}

/// Languages: name, other names, extensions, runner.
const LANGUAGES: &[(&str, &[&str], &[&str], Runner)] = &[
    (
        "python",
        &["python3", "py"],
        &["py"],
        Runner::Interpreter("python3"),
    ),
    ("sh", &["shell", "bash"], &["sh"], Runner::Interpreter("sh")),
    (
        "javascript",
        &["js", "node"],
        &["js", "mjs"],
        Runner::Interpreter("node"),
    ),
    ("ruby", &["rb"], &["rb"], Runner::Interpreter("ruby")),
    ("perl", &["pl"], &["pl"], Runner::Interpreter("perl")),
    ("c", &[], &["c"], Runner::Compiler("cc")),
    (
        "cpp",
        &["c++", "cxx"],
        &["cpp", "cc", "cxx"],
        Runner::Compiler("c++"),
    ),
];

fn known_languages() -> String {
    LANGUAGES
        .iter()
        .map(|(name, _, exts, _)| {
            let exts: Vec<String> = exts.iter().map(|e| format!(".{e}")).collect();
            format!("{name} ({})", exts.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The runner for `file`, from `--language` or the extension.
fn runner(file: &Path, language: Option<&str>) -> Result<Runner, Failure> {
    if let Some(wanted) = language {
        let wanted = wanted.to_lowercase();
        return LANGUAGES
            .iter()
            .find(|(name, aliases, _, _)| *name == wanted || aliases.contains(&wanted.as_str()))
            .map(|(_, _, _, runner)| *runner)
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "unknown language `{wanted}`; known: {}",
                    known_languages()
                ))
            });
    }
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    LANGUAGES
        .iter()
        .find(|(_, _, exts, _)| exts.contains(&ext.as_str()))
        .map(|(_, _, _, runner)| *runner)
        .ok_or_else(|| {
            Failure::Usage(format!(
                "cannot tell the language of `{}` from its extension; known: {}; or pass --language",
                file.display(),
                known_languages()
            ))
        })
}

/// The argv that runs `path` (inside the sandbox) with `args`.
fn argv(runner: Runner, path: &str, args: &[String]) -> Vec<String> {
    let mut argv = match runner {
        Runner::Interpreter(program) => vec![program.to_owned(), path.to_owned()],
        // `sh -c SCRIPT $0 $1…`: the file is $0, the program's arguments "$@".
        Runner::Compiler(compiler) => vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!("{compiler} -O2 -o /tmp/a.out \"$0\" && exec /tmp/a.out \"$@\""),
            path.to_owned(),
        ],
    };
    argv.extend(args.iter().cloned());
    argv
}

pub async fn main(args: RunArgs) -> Outcome {
    let runner = runner(&args.file, args.language.as_deref())?;
    let name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .ok_or_else(|| Failure::Usage(format!("`{}` is not a file", args.file.display())))?;
    let content = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let stdin = read_stdin()?;
    let client = connect(&args.global)?;
    #[allow(
        clippy::needless_update,
        reason = "the request type grows optional fields; the server's defaults apply"
    )]
    let request = CreateSandboxRequest {
        name: Some(format!("run {name}").chars().take(64).collect()),
        image: args.image.clone(),
        resources: Resources {
            memory_mb: args.memory,
            ..Resources::default()
        },
        env: BTreeMap::new(),
        labels: BTreeMap::from([("corral.run".to_owned(), "1".to_owned())]),
        ..CreateSandboxRequest::default()
    };

    // Creating: an interrupt waits for the answer, so the sandbox is known
    // and can be deleted, rather than left behind.
    let mut interrupt = std::pin::pin!(interrupted());
    let create = client.create_sandbox(&request);
    tokio::pin!(create);
    let (created, stopped) = tokio::select! {
        created = &mut create => (created, false),
        () = &mut interrupt => (create.await, true),
    };
    let sandbox = created?;
    if stopped {
        cleanup(&client, &sandbox.id).await;
        return Ok(ExitCode::from(130));
    }

    let path = format!("/tmp/{name}");
    let work = async {
        client.upload(&sandbox.id, &path, content).await?;
        let exec = ExecRequestBody {
            argv: Some(argv(runner, &path, &args.args)),
            cwd: Some("/tmp".to_owned()),
            stdin,
            timeout_ms: args.timeout_ms,
            ..ExecRequestBody::default()
        };
        Ok::<_, Failure>(client.exec(&sandbox.id, &exec).await?)
    };
    let outcome = tokio::select! {
        result = work => Some(result),
        () = &mut interrupt => None,
    };
    cleanup(&client, &sandbox.id).await;
    match outcome {
        None => {
            eprintln!("corral: interrupted; the sandbox was deleted");
            Ok(ExitCode::from(130))
        }
        Some(Ok(result)) => finish_exec(&args.global, &result),
        Some(Err(failure)) => Ok(report(&failure)),
    }
}

/// Deletes the one-shot sandbox; a failure is said, not fatal.
async fn cleanup(client: &Client, id: &str) {
    if let Err(error) = client.delete_sandbox(id).await {
        eprintln!("warning: could not delete sandbox {id}: {error}");
    }
}

/// Resolves on Ctrl-C or SIGTERM (never, if neither can be watched).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn the_extension_or_the_language_picks_the_runner() {
        let r = |f: &str, l: Option<&str>| runner(Path::new(f), l);
        assert_eq!(r("a.py", None).unwrap(), Runner::Interpreter("python3"));
        assert_eq!(r("dir/a.PY", None).unwrap(), Runner::Interpreter("python3"));
        assert_eq!(r("a.c", None).unwrap(), Runner::Compiler("cc"));
        assert_eq!(r("a.cpp", None).unwrap(), Runner::Compiler("c++"));
        assert_eq!(r("script", Some("sh")).unwrap(), Runner::Interpreter("sh"));
        assert_eq!(
            r("a.txt", Some("node")).unwrap(),
            Runner::Interpreter("node")
        );
        let Err(Failure::Usage(message)) = r("a.rs", None) else {
            panic!("an unknown extension is a usage error");
        };
        assert!(message.contains("a.rs") && message.contains(".py") && message.contains(".c"));
        assert!(matches!(r("a.py", Some("cobol")), Err(Failure::Usage(_))));
    }

    #[test]
    fn compiled_languages_compile_then_exec_with_the_arguments() {
        assert_eq!(
            argv(Runner::Interpreter("python3"), "/tmp/a.py", &["x".into()]),
            ["python3", "/tmp/a.py", "x"]
        );
        let a = argv(
            Runner::Compiler("cc"),
            "/tmp/m.c",
            &["1".into(), "2 3".into()],
        );
        assert_eq!(a[0..2], ["/bin/sh", "-c"]);
        assert!(a[2].starts_with("cc -O2 -o /tmp/a.out \"$0\" && exec /tmp/a.out"));
        assert_eq!(a[3..], ["/tmp/m.c", "1", "2 3"]);
    }
}
