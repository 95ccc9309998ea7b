//! `corral`: one binary for the server and its maintenance commands.

mod cli;
mod image_cmd;
mod queue_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use corral_server::config::{Config, Overrides};
use corral_server::{AppState, StartError, logging};

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "Run untrusted code: sandboxes, executions and more"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration comes from; shared by every server-side command.
#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// Configuration file (.toml, .yaml, .yml or .json); also `CORRAL_CONFIG`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory for the SQLite database and other state [default: ./corral-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server (migrates the database first).
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Bring the database schema up to date, then exit.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Administration on the server's own database.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print the OpenAPI document of this version's API.
    Openapi,
    /// Print the version.
    Version,
    /// Images on this host: pull, import, list, remove.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// The job queue: stats, failed jobs, retry, clear, and workers without the HTTP server.
    #[command(subcommand)]
    Queue(queue_cmd::QueueCommand),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an account (the way to make the first administrator; there is no default password).
    CreateUser {
        #[command(flatten)]
        config: ConfigArgs,
        /// Username (3-32 of a-z 0-9 _ - .).
        #[arg(long)]
        username: String,
        /// Email address.
        #[arg(long)]
        email: String,
        /// Password (visible in the process list and shell history; prefer --password-stdin).
        #[arg(
            long,
            conflicts_with = "password_stdin",
            required_unless_present = "password_stdin"
        )]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Make the user a platform administrator.
        #[arg(long)]
        admin: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Client(command) => return cli::run(command),
        Command::Image(command) => image_cmd::run(command),
        Command::Queue(command) => queue_cmd::run(command),
        Command::Version => {
            println!("corral {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Openapi => {
            print!("{}", corral_server::openapi::api_doc_json());
            Ok(())
        }
        Command::Serve { config, listen } => {
            load(&config, listen).and_then(|c| runtime()?.block_on(serve(c)))
        }
        Command::Migrate { config } => {
            load(&config, None).and_then(|c| runtime()?.block_on(migrate(c)))
        }
        Command::Admin(AdminCommand::CreateUser {
            config,
            username,
            email,
            password,
            password_stdin,
            admin,
        }) => read_password(password, password_stdin).and_then(|password| {
            let config = load(&config, None)?;
            runtime()?.block_on(create_user(config, username, email, password, admin))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ConfigArgs, listen: Option<String>) -> anyhow::Result<Config> {
    let config = Config::load(&Overrides {
        config_file: args.config.clone(),
        data_dir: args.data_dir.clone(),
        listen,
    })?;
    logging::init(&config.log);
    Ok(config)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let backend = corral_store::Backend::from_url(&config.store().url)?;
    let data_dir = config.data_dir.clone();
    let display_url = config.display_url();
    let state = AppState::open(config).await.map_err(|error| match error {
        StartError::Store(error) => {
            anyhow::Error::new(error).context(format!("cannot open the {backend} database"))
        }
        other => other.into(),
    })?;
    let no_users = state.store.count_users().await? == 0;
    corral_server::serve(state, corral_server::shutdown_signal(), |addr| {
        let url = if display_url.ends_with(":0") {
            format!("http://{addr}")
        } else {
            display_url
        };
        tracing::info!(%addr, backend = %backend, "listening");
        println!("Corral {} is listening on {url}", env!("CARGO_PKG_VERSION"));
        println!(
            "  database: {backend}{}",
            if backend == corral_store::Backend::Sqlite {
                format!(" in {}", data_dir.display())
            } else {
                String::new()
            }
        );
        println!("  API docs: {url}/docs   health: {url}/health   ready: {url}/ready");
        if no_users {
            println!(
                "  no accounts yet: create the first administrator with\n    corral admin create-user --username admin --email you@example.com --password-stdin --admin"
            );
        }
    })
    .await?;
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store_config = config.store();
    let backend = corral_store::Backend::from_url(&store_config.url)?;
    let store = corral_store::Store::connect(&store_config)
        .await
        .with_context(|| format!("cannot open the {backend} database"))?;
    let report = store.migrate().await?;
    println!(
        "{backend} database is up to date: {} migration(s) applied now, {} in total",
        report.applied_now, report.total
    );
    store.close().await;
    Ok(())
}

fn read_password(given: Option<String>, from_stdin: bool) -> anyhow::Result<String> {
    if let Some(password) = given {
        return Ok(password);
    }
    debug_assert!(from_stdin);
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn create_user(
    config: Config,
    username: String,
    email: String,
    password: String,
    admin: bool,
) -> anyhow::Result<()> {
    let state = AppState::open(config)
        .await
        .context("cannot open the database")?;
    let role = if admin {
        corral_core::auth::PlatformRole::Admin
    } else {
        corral_core::auth::PlatformRole::User
    };
    let user = corral_server::accounts::create_checked(&state, &email, &username, &password, role)
        .await
        .map_err(|e| {
            let problem = e.problem();
            let message = if problem.errors.is_empty() {
                problem.detail.clone().unwrap_or_default()
            } else {
                problem
                    .errors
                    .iter()
                    .map(|f| format!("--{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            anyhow::anyhow!("{message}")
        })?;
    println!(
        "created {} `{}` <{}> (id {})",
        role, user.username, user.email, user.id
    );
    state.store.close().await;
    Ok(())
}
