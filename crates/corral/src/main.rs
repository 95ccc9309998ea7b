//! `corral`: one binary for the server and its maintenance commands.

mod cli;
mod image_cmd;
mod queue_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use corral_core::auth::PlatformRole;
use corral_server::{AppState, StartError};
use corral_service::config::{Config, Overrides};
use corral_service::logging;

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
        /// Make the user a platform administrator (the same as `--role admin`).
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// Platform role: user, admin or super_admin [default: super_admin
        /// for the first account, else user].
        #[arg(long, value_name = "ROLE")]
        role: Option<PlatformRole>,
        /// Plan (see `GET /api/v1/plans`) [default: enterprise, the plan
        /// without daily limits, for the first account, else free].
        #[arg(long, value_name = "PLAN")]
        plan: Option<String>,
    },
    /// Move an account to another plan (takes effect on the running server
    /// within seconds).
    SetPlan {
        #[command(flatten)]
        config: ConfigArgs,
        /// The account's username or email.
        #[arg(long, value_name = "USER")]
        user: String,
        /// The plan's id: free, basic, premium, enterprise.
        #[arg(long, value_name = "PLAN")]
        plan: String,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    if asks_for_json(&matches) {
        cli::report_errors_as_json();
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
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
            let flags = config_flags(&config);
            load(&config, listen).and_then(|c| runtime()?.block_on(serve(c, flags)))
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
            role,
            plan,
        }) => read_password(password, password_stdin).and_then(|password| {
            let config = load_existing(&config)?;
            let account = NewAccount {
                username,
                email,
                password,
                role,
                admin,
                plan,
            };
            runtime()?.block_on(create_user(config, account))
        }),
        Command::Admin(AdminCommand::SetPlan { config, user, plan }) => load_existing(&config)
            .and_then(|config| runtime()?.block_on(set_plan(config, &user, &plan))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the innermost subcommand has `--json` (a client command's global
/// flag): its failures are then reported as JSON too.
fn asks_for_json(matches: &clap::ArgMatches) -> bool {
    let mut matches = matches;
    while let Some((_, inner)) = matches.subcommand() {
        matches = inner;
    }
    matches
        .try_get_one::<bool>("json")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false)
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

/// [`load`] for the admin and queue commands, which work on the server's existing
/// database: a SQLite database that is not there is an error naming where
/// it was looked for, never a new empty one made in silence.
fn load_existing(args: &ConfigArgs) -> anyhow::Result<Config> {
    let config = load(args, None)?;
    if config.database.url.is_none() {
        let file = config.data_dir.join(corral_store::SQLITE_FILE);
        if !file.exists() {
            let dir = std::path::absolute(&config.data_dir).unwrap_or(config.data_dir.clone());
            anyhow::bail!(
                "no Corral database in {} (no {}): name the server's data directory with \
                 --data-dir DIR (or its config file with --config FILE), as `corral serve` \
                 printed at start",
                dir.display(),
                corral_store::SQLITE_FILE,
            );
        }
    }
    Ok(config)
}

/// `--data-dir` and `--config` as the server runs with them, absolute and
/// quoted for a shell: what a command printed for the operator must add to
/// act on the same database.
fn config_flags(args: &ConfigArgs) -> String {
    let config_file = args
        .config
        .clone()
        .or_else(|| std::env::var_os("CORRAL_CONFIG").map(PathBuf::from))
        .filter(|path| !path.as_os_str().is_empty());
    let mut flags = String::new();
    if let Some(file) = config_file {
        flags.push_str(" --config ");
        flags.push_str(&shell_quote(&std::path::absolute(&file).unwrap_or(file)));
    }
    flags
}

/// `--data-dir DIR` for `config`'s data directory, absolute and quoted.
fn data_dir_flag(config: &Config) -> String {
    let dir = std::path::absolute(&config.data_dir).unwrap_or(config.data_dir.clone());
    format!(" --data-dir {}", shell_quote(&dir))
}

/// A path as one shell word: bare when it is plain, else in single quotes.
fn shell_quote(path: &std::path::Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve(config: Config, config_flags: String) -> anyhow::Result<()> {
    let backend = corral_store::Backend::from_url(&config.store().url)?;
    let admin_flags = format!("{}{config_flags}", data_dir_flag(&config));
    let data_dir = config.data_dir.clone();
    let display_url = config.display_url();
    let state = AppState::open(config).await.map_err(|error| match error {
        StartError::Store(error) => {
            anyhow::Error::new(error).context(format!("cannot open the {backend} database"))
        }
        other => other.into(),
    })?;
    let no_users = state.store.count_users().await? == 0;
    corral_server::serve(state, corral_service::signals::shutdown_signal(), |addr| {
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
                "  no accounts yet: create the first administrator (super_admin, plan enterprise) with\n    corral admin create-user{admin_flags} --username admin --email you@example.com --password-stdin"
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

/// `corral admin create-user`'s account.
struct NewAccount {
    username: String,
    email: String,
    password: String,
    /// `--role`; `None`: super_admin for the first account, else admin
    /// with `--admin`, else user.
    role: Option<PlatformRole>,
    /// `--admin`.
    admin: bool,
    /// `None`: enterprise for the first account, else free.
    plan: Option<String>,
}

/// The plan the first account gets: the one without daily limits, so the
/// README's examples run as written on a fresh install.
const FIRST_ACCOUNT_PLAN: &str = "enterprise";

async fn create_user(config: Config, account: NewAccount) -> anyhow::Result<()> {
    let service = corral_service::Service::open(config)
        .await
        .context("cannot open the database")?;
    let first = service.store.count_users().await? == 0;
    // The first account manages the rest (plans included), so it gets the
    // top role unless one is named.
    let role = account.role.unwrap_or(if first {
        PlatformRole::SuperAdmin
    } else if account.admin {
        PlatformRole::Admin
    } else {
        PlatformRole::User
    });
    let plan = account
        .plan
        .unwrap_or_else(|| if first { FIRST_ACCOUNT_PLAN } else { "free" }.to_owned());
    check_plan(&service.store, &plan).await?;
    let user = corral_service::accounts::create_checked(
        &service,
        &account.email,
        &account.username,
        &account.password,
        role,
        &plan,
    )
    .await
    .map_err(|error| match error {
        // Named as the command's flags, every bad one at once.
        corral_service::ServiceError::Validation(fields) => anyhow::anyhow!(
            "{}",
            fields
                .iter()
                .map(|f| format!("--{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("{other}"),
    })?;
    println!(
        "created {} `{}` <{}> on plan {} (id {})",
        role, user.username, user.email, user.plan_id, user.id
    );
    service.store.close().await;
    Ok(())
}

/// A plan that exists, or an error listing the ones that do.
async fn check_plan(store: &corral_store::Store, plan: &str) -> anyhow::Result<()> {
    let plans = store.plans().await?;
    if plans.iter().any(|p| p.id == plan) {
        return Ok(());
    }
    let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    anyhow::bail!("no plan `{plan}`; the plans are: {}", ids.join(", "))
}

async fn set_plan(config: Config, login: &str, plan: &str) -> anyhow::Result<()> {
    let store_config = config.store();
    let store = corral_store::Store::open(&store_config)
        .await
        .context("cannot open the database")?;
    check_plan(&store, plan).await?;
    let user = store
        .user_by_login(login)
        .await?
        .with_context(|| format!("no account with username or email `{login}`"))?;
    let now = corral_core::clock::Clock::now_ms(&corral_core::clock::SystemClock);
    store
        .update_user_admin(now, &user.id, Some(plan), None, None)
        .await?;
    println!(
        "`{}` is now on plan {plan} (was {})",
        user.username, user.plan_id
    );
    store.close().await;
    Ok(())
}
