//! The user-facing client commands of the `corral` binary: `login`,
//! `logout`, `sandbox …`, `run`, `shell`, `judge` and `library …`. They talk to a server over HTTP through
//! `corral-client`; nothing here touches the server's database.
//!
//! Exit codes: 0 success, 1 an API, network or file error, 2 a usage error
//! (clap's own, and the ones found here), and for `sandbox exec` and `run`
//! the program's own exit code (124 when it timed out, 128 + n when signal n
//! killed it).

mod config;
mod judge;
mod login;
mod output;
mod run;
mod sandbox;
mod shell;

use std::process::ExitCode;

use clap::Subcommand;
use corral_client::{Client, ClientError};

pub use judge::{JudgeArgs, LibraryArgs};
pub use login::{LoginArgs, LogoutArgs};
pub use run::RunArgs;
pub use sandbox::SandboxArgs;
pub use shell::ShellArgs;

/// The server a command talks to when neither a flag, the environment nor a
/// saved login names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Client commands, flattened into the binary's top-level commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Sign in to a Corral server and save an API key for the other commands.
    Login(LoginArgs),
    /// Forget the saved login.
    Logout(LogoutArgs),
    /// Sandboxes on a Corral server: create, list, exec, copy files, delete.
    Sandbox(SandboxArgs),
    /// Run one program file in a fresh sandbox, print its output, delete the
    /// sandbox, exit with the program's exit code.
    Run(RunArgs),
    /// An interactive terminal in a sandbox (detach with Ctrl-], re-attach
    /// with --attach).
    Shell(ShellArgs),
    /// Run a program file in the judge and print its verdict (exit 0 when
    /// `ok`, 3 for any other verdict).
    Judge(JudgeArgs),
    /// The code library: save, list, show, run and delete snippets.
    Library(LibraryArgs),
}

/// Flags every client command takes (anywhere on the command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Server URL [default: the saved login's, else http://127.0.0.1:8080].
    #[arg(long, env = "CORRAL_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// API key (`crl_…`) or access token [default: the saved login's].
    #[arg(
        long,
        env = "CORRAL_TOKEN",
        global = true,
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print the server's JSON instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The command line asks for something impossible (exit 2).
    Usage(String),
    /// The server refused, or could not be reached (exit 1).
    Client(ClientError),
    /// The server refused a username and password (exit 1): unlike
    /// [`Failure::Client`], no token was involved.
    SignIn(ClientError),
    /// Anything else, such as a local file (exit 1).
    Other(anyhow::Error),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        match error {
            ClientError::InvalidUrl { .. } => Failure::Usage(error.to_string()),
            other => Failure::Client(other),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::Other(error)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Failure {
        Failure::Other(error.into())
    }
}

/// What a command's success or failure means to the shell.
pub type Outcome = Result<ExitCode, Failure>;

/// Runs a client command and reports its failure on stderr.
pub fn run(command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match command {
            ClientCommand::Login(args) => login::login(args).await,
            ClientCommand::Logout(args) => login::logout(&args).await,
            ClientCommand::Sandbox(args) => sandbox::main(args).await,
            ClientCommand::Run(args) => run::main(args).await,
            ClientCommand::Shell(args) => shell::main(args).await,
            ClientCommand::Judge(args) => judge::judge(args).await,
            ClientCommand::Library(args) => judge::library(args).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(failure) => report(&failure),
    }
}

/// Whether failures are reported as JSON (`--json`); set once at start.
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Reports failures as one JSON object on stderr from now on (`--json`).
pub fn report_errors_as_json() {
    JSON_ERRORS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Prints `error: …` (with a hint where one helps), or with `--json` one
/// JSON object, on stderr, and gives the exit code.
pub(crate) fn report(failure: &Failure) -> ExitCode {
    let (exit, message, hint) = match failure {
        Failure::Usage(message) => (ExitCode::from(2), message.clone(), None),
        Failure::Client(error) => (
            ExitCode::FAILURE,
            error.to_string(),
            (error.status() == Some(401)).then_some(
                "the token was refused; check --token / CORRAL_TOKEN, or sign in again with `corral login`",
            ),
        ),
        Failure::SignIn(error) => (
            ExitCode::FAILURE,
            error.to_string(),
            (error.status() == Some(401)).then_some(
                "check the username and password; after 5 failures in a row the name is locked for a while",
            ),
        ),
        Failure::Other(error) => (ExitCode::FAILURE, format!("{error:#}"), None),
    };
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{}", error_json(failure, &message, hint));
    } else {
        eprintln!("error: {message}");
        if let Some(hint) = hint {
            eprintln!("hint: {hint}");
        }
    }
    exit
}

/// A failure as `{"error": {"code", "message", "hint"?, "status"?, …}}`:
/// `code` is the server's problem code, else `usage`, `unreachable`,
/// `transport`, `decode` or `error`.
fn error_json(failure: &Failure, message: &str, hint: Option<&str>) -> serde_json::Value {
    let client = match failure {
        Failure::Client(error) | Failure::SignIn(error) => Some(error),
        Failure::Usage(_) | Failure::Other(_) => None,
    };
    let code = match (failure, client) {
        (Failure::Usage(_), _) => "usage",
        (_, Some(ClientError::Api(api))) => api.code.as_str(),
        (_, Some(ClientError::Unreachable { .. })) => "unreachable",
        (_, Some(ClientError::Transport { .. })) => "transport",
        (_, Some(ClientError::Decode { .. })) => "decode",
        _ => "error",
    };
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(hint) = hint {
        error["hint"] = hint.into();
    }
    if let Some(api) = client.and_then(ClientError::api) {
        error["status"] = api.status.into();
        if let Some(detail) = &api.detail {
            error["detail"] = detail.as_str().into();
        }
        if !api.errors.is_empty() {
            error["errors"] = serde_json::to_value(&api.errors).unwrap_or_default();
        }
        if let Some(id) = &api.request_id {
            error["request_id"] = id.as_str().into();
        }
    }
    serde_json::json!({ "error": error })
}

/// The client for `global`: its URL and token, else the saved login's (the
/// saved token only goes to the server it was saved for), else the default
/// URL. Without any token, a clear error instead of a server's 401.
pub(crate) fn connect(global: &GlobalArgs) -> Result<Client, Failure> {
    let saved = config::Credentials::load()?;
    let url = non_empty(&global.url)
        .or_else(|| saved.as_ref().map(|s| s.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let token = non_empty(&global.token)
        .or_else(|| saved.filter(|s| same_server(&s.url, &url)).map(|s| s.token));
    let client = Client::new(&url, token.clone())?;
    if token.as_deref().is_none_or(str::is_empty) {
        return Err(Failure::Other(anyhow::anyhow!(
            "not signed in to {url}: run `corral login --url {url} …`, or pass --token / set CORRAL_TOKEN"
        )));
    }
    Ok(client)
}

/// A flag's value, with an empty one (`CORRAL_TOKEN=`) as none.
pub(crate) fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}

/// Whether two spellings of a server URL name the same server
/// (`http://h:8080` and `http://h:8080/`).
fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Parses `KEY=VALUE` (for `--env` and `--label`).
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(anyhow::Error::from)?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn key_value_needs_a_key_and_an_equals_sign() {
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(key_value("a=").unwrap(), ("a".into(), String::new()));
        assert!(key_value("=b").is_err());
        assert!(key_value("ab").is_err());
    }

    #[test]
    fn json_errors_carry_the_code_message_and_hint() {
        let usage = error_json(&Failure::Usage("give --token".into()), "give --token", None);
        assert_eq!(
            usage,
            serde_json::json!({"error": {"code": "usage", "message": "give --token"}})
        );
        let other = error_json(
            &Failure::Other(anyhow::anyhow!("disk")),
            "disk",
            Some("free some space"),
        );
        assert_eq!(other["error"]["code"], "error");
        assert_eq!(other["error"]["hint"], "free some space");
    }

    #[test]
    fn a_trailing_slash_is_the_same_server() {
        assert!(same_server("http://h:1/", "http://h:1"));
        assert!(!same_server("http://h:1", "http://h:2"));
    }
}
