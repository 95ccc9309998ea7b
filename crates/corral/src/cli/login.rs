//! `corral login` and `corral logout`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use corral_client::Client;
use corral_client::types::identity::CreateApiKeyRequest;

use super::config::{self, Credentials};
use super::{DEFAULT_URL, Failure, GlobalArgs, Outcome};

/// Scopes of the key `corral login` creates: everything the client
/// commands need, nothing that manages the account, keys or orgs.
const CLI_SCOPES: &[&str] = &[
    "sandboxes:read",
    "sandboxes:write",
    "executions:read",
    "executions:write",
    "library:read",
    "library:write",
];

/// `corral login`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    corral login --url https://corral.example.com --username alice\n  \
    echo \"$PASSWORD\" | corral login --username alice --password-stdin\n  \
    corral login --token crl_…")]
pub struct LoginArgs {
    #[command(flatten)]
    global: GlobalArgs,
    /// Username or email to sign in with; an API key named `cli-<hostname>`
    /// is created and saved (instead of --token).
    #[arg(long, value_name = "USER")]
    username: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
}

/// `corral logout`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    global: GlobalArgs,
    /// Keep the API key `corral login` created valid on the server (by
    /// default logout revokes it).
    #[arg(long)]
    keep_key: bool,
}

pub async fn login(args: LoginArgs) -> Outcome {
    let global = &args.global;
    let saved = Credentials::load()?;
    let url = super::non_empty(&global.url)
        .or_else(|| saved.map(|s| s.url))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let anonymous = Client::new(&url, None)?;
    let url = anonymous.base_url().to_owned();
    let credentials = if let Some(username) = &args.username {
        let password = read_password(args.password_stdin)?;
        let tokens = anonymous
            .login(username, &password)
            .await
            .map_err(Failure::SignIn)?;
        let client = anonymous.with_token(Some(tokens.access_token));
        let me = client.me().await?;
        let name = format!("cli-{}", hostname());
        // One CLI key per host: an earlier login's key is replaced, not
        // left behind valid with its secret forgotten.
        for old in client.api_keys().await?.iter().filter(|k| k.name == name) {
            client.delete_api_key(&old.id).await?;
            eprintln!("revoked the earlier API key `{name}` ({}…)", old.prefix);
        }
        let created = client
            .create_api_key(&CreateApiKeyRequest {
                name: name.clone(),
                scopes: CLI_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                org_id: None,
                expires_at: None,
            })
            .await?;
        eprintln!(
            "created API key `{name}` ({}…) with scopes {}",
            created.api_key.prefix,
            CLI_SCOPES.join(", ")
        );
        Credentials {
            url,
            token: created.key,
            username: Some(me.username),
            key_id: Some(created.api_key.id),
        }
    } else if let Some(token) = super::non_empty(&global.token) {
        let me = anonymous.with_token(Some(token.clone())).me().await?;
        Credentials {
            url,
            token,
            username: Some(me.username),
            key_id: None,
        }
    } else {
        return Err(Failure::Usage(
            "give --username USER (with --password-stdin or at the prompt) or --token KEY".into(),
        ));
    };
    let path = credentials.save()?;
    if global.json {
        super::print_json(&serde_json::json!({
            "url": credentials.url,
            "username": credentials.username,
            "credentials_file": path,
        }))?;
    } else {
        println!(
            "Logged in to {} as {}; credentials saved to {}",
            credentials.url,
            credentials.username.as_deref().unwrap_or("?"),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Forgets the saved login and, unless `--keep-key`, revokes the API key
/// `corral login` created for it (a key saved with `--token` is the
/// user's own and stays). A key the server cannot revoke now is named, so
/// it can be revoked later; the login is forgotten either way.
pub async fn logout(args: &LogoutArgs) -> Outcome {
    let saved = Credentials::load().ok().flatten();
    let mut revoked = false;
    let mut still_valid: Option<(String, String)> = None;
    if let Some(saved) = saved.as_ref().filter(|s| s.key_id.is_some()) {
        let key_id = saved.key_id.clone().unwrap_or_default();
        if args.keep_key {
            still_valid = Some((saved.url.clone(), key_id));
        } else {
            let client = Client::new(&saved.url, Some(saved.token.clone()))?;
            match client.revoke_own_key().await {
                Ok(()) => revoked = true,
                // Already revoked or disabled: nothing left to do.
                Err(error) if error.status() == Some(401) => {}
                Err(error) => {
                    eprintln!("warning: could not revoke the API key: {error}");
                    still_valid = Some((saved.url.clone(), key_id));
                }
            }
        }
    }
    let removed = Credentials::remove()?;
    if args.global.json {
        super::print_json(&serde_json::json!({
            "credentials_file": removed,
            "key_revoked": revoked,
            "key_still_valid": still_valid.as_ref().map(|(_, id)| id),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    match removed {
        Some(path) => println!("Removed {}", path.display()),
        None => println!("Not logged in (no {}).", config::path()?.display()),
    }
    if revoked {
        println!("Revoked the API key `corral login` created.");
    }
    if let Some((url, id)) = still_valid {
        println!(
            "The API key stays valid on {url} until it is revoked (DELETE /api/v1/api-keys/{id})."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The password: the first line of stdin with `--password-stdin`, else
/// asked at the terminal without echo.
fn read_password(from_stdin: bool) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    if !from_stdin && !stdin.is_terminal() {
        return Err(Failure::Usage(
            "standard input is not a terminal: pass --password-stdin to read the password from it"
                .into(),
        ));
    }
    let mut line = String::new();
    if from_stdin {
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
    } else {
        eprint!("Password: ");
        std::io::stderr().flush().ok();
        let echo = NoEcho::new();
        let read = stdin.lock().read_line(&mut line);
        drop(echo);
        eprintln!();
        read.context("cannot read the password")?;
    }
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(Failure::Usage("the password is empty".into()));
    }
    Ok(password)
}

/// Turns terminal echo off on stdin while alive.
struct NoEcho(Option<nix::sys::termios::Termios>);

impl NoEcho {
    fn new() -> NoEcho {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return NoEcho(None);
        };
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        if tcsetattr(&stdin, SetArg::TCSANOW, &quiet).is_err() {
            return NoEcho(None);
        }
        NoEcho(Some(saved))
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// This machine's name, for the key's name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
