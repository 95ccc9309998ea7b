//! Configuration: built-in defaults < config file (TOML, YAML or JSON) <
//! `CORRAL_*` environment < command-line flags, and `DATABASE_URL` above all
//! database settings.
//!
//! Nested keys are separated by a double underscore in the environment:
//! `CORRAL_SERVER__LISTEN=0.0.0.0:8080`, `CORRAL_LOG__FORMAT=json`.
//! Unknown keys in a file are errors, so a typo never passes silently.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Json, Serialized, Toml, Yaml};
use serde::{Deserialize, Serialize};

use corral_store::StoreConfig;

/// Everything `corral serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where Corral keeps its SQLite database and, later, images and sandboxes.
    pub data_dir: PathBuf,
    /// HTTP serving.
    pub server: ServerConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Logging.
    pub log: LogConfig,
    /// Accounts and sign-in.
    pub auth: AuthConfig,
    /// Rate limits, and where their counters live.
    pub limits: LimitsConfig,
    /// Outgoing email (verification, password reset, invitations).
    pub email: EmailConfig,
    /// Sandboxes: the OCI runtime and where sandboxes live.
    pub sandbox: SandboxConfig,
    /// Executions (the judge).
    pub executions: ExecutionsConfig,
    /// The job queue and the workers this process runs.
    pub queue: QueueSettings,
}

/// The job queue (`corral-queue`) and this process's workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Where jobs are kept.
    pub driver: QueueDriver,
    /// `redis://host:port[/db]`, for the `redis` driver.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key of the queue, so deployments can share a Redis.
    pub prefix: String,
    /// Standard base64 of 32 bytes (`openssl rand -base64 32`): the key that
    /// seals sensitive job payloads. Without it, sensitive jobs are refused.
    /// Best given as `CORRAL_QUEUE__ENCRYPTION_KEY`, not in a file.
    pub encryption_key: Option<String>,
    /// Jobs this process runs at once; 0 runs no workers here (jobs are
    /// then left to `corral queue work` processes).
    pub workers: usize,
    /// The queues this process's workers take jobs from.
    pub queues: Vec<String>,
    /// How long in-flight jobs may run on at shutdown before they are
    /// released for another worker, seconds.
    pub shutdown_grace_secs: u64,
    /// How long a claim lasts without a heartbeat, seconds.
    pub lease_secs: u64,
    /// Completed jobs older than this are deleted, hours.
    pub prune_completed_after_hours: u64,
    /// Daily quota counts (usage history) older than this are deleted, days.
    pub prune_usage_after_days: u64,
}

impl Default for QueueSettings {
    fn default() -> QueueSettings {
        QueueSettings {
            driver: QueueDriver::Database,
            redis_url: None,
            prefix: "corral".to_owned(),
            encryption_key: None,
            workers: 4,
            queues: vec!["default".to_owned(), "maintenance".to_owned()],
            shutdown_grace_secs: 30,
            lease_secs: 30,
            prune_completed_after_hours: 24 * 7,
            prune_usage_after_days: 400,
        }
    }
}

/// Where jobs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueDriver {
    /// In the store's database (transactional enqueue).
    Database,
    /// In Redis Streams.
    Redis,
}

/// Executions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionsConfig {
    /// Sandboxes kept after an execution, reset to how they started, for
    /// the next execution of the same organization with the same limits
    /// (0: every execution starts a sandbox of its own and destroys it).
    pub reuse_sandboxes: usize,
    /// The key of callbacks' `X-Corral-Signature` (HMAC-SHA256). Callbacks
    /// are refused while it is empty.
    pub callback_secret: String,
    /// Let callbacks reach loopback and private addresses (for a judge
    /// whose receiver runs on the same network; off by default: SSRF).
    pub allow_private_callbacks: bool,
}

impl Default for ExecutionsConfig {
    fn default() -> ExecutionsConfig {
        ExecutionsConfig {
            reuse_sandboxes: 8,
            callback_secret: String::new(),
            allow_private_callbacks: false,
        }
    }
}

/// Sandboxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// The OCI runtime binary (`runc`, `crun`, `youki`, `runsc`…), by path
    /// or looked up in `PATH`.
    pub runtime: PathBuf,
    /// The runtime's state directory (default `runtime` in this data
    /// directory's memory-backed state directory, see
    /// [`corral_runtime::state`]; `<data_dir>/runtime` when not root).
    pub runtime_root: Option<PathBuf>,
    /// Where sandbox directories go (default `sandboxes` beside the
    /// runtime's default state directory).
    pub dir: Option<PathBuf>,
    /// The `corral-agent` binary (default: next to the `corral` binary).
    pub agent: Option<PathBuf>,
    /// Memory of a sandbox when the request names none, MiB.
    pub default_memory_mb: i64,
    /// How often auto-stop, auto-delete and the reconciler run, seconds.
    pub sweep_interval_secs: u64,
    /// Pull an image a create names that this host does not have yet
    /// (anonymously; private images are pulled with `corral image pull`).
    pub pull_missing_images: bool,
    /// Registries spoken to over plain HTTP (`host:port`), such as a local one.
    pub insecure_registries: Vec<String>,
    /// Registries (`host` or `host:port`, HTTPS) a pull may reach although
    /// they resolve to a loopback, private or metadata address; every other
    /// connection of a pull must go to a public address.
    pub allowed_registries: Vec<String>,
    /// Time an image pull may take in all, seconds.
    pub pull_timeout_secs: u64,
    /// Bytes an image pull may download, all layers together.
    pub pull_max_bytes: u64,
    /// Warm pools: classes of sandboxes kept started and unassigned, so a
    /// create that asks for exactly such a sandbox gets one at once.
    pub pool: Vec<PoolClass>,
    /// A terminal WebSocket with no message from its client for this long
    /// is closed (clients send `ping` to stay), seconds.
    pub terminal_idle_secs: u64,
    /// Largest message a terminal client may send, bytes.
    pub terminal_max_message_bytes: usize,
    /// Most output an exec may ask to keep per stream (its
    /// `max_output_bytes`; the default is 1 MiB), bytes.
    pub exec_max_output_bytes: u64,
}

/// One warm-pool class: an image and resources (each defaulting as a
/// create request's does), and how many to keep ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolClass {
    /// Image (default `host`).
    #[serde(default = "host_image")]
    pub image: String,
    /// Memory, MiB (default `sandbox.default_memory_mb`).
    #[serde(default)]
    pub memory_mb: Option<i64>,
    /// CPU cores (default 1).
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Writable space, MiB (default 256).
    #[serde(default)]
    pub disk_mb: Option<i64>,
    /// Processes (default 256).
    #[serde(default)]
    pub pids: Option<i64>,
    /// How many to keep ready.
    pub size: usize,
}

impl SandboxConfig {
    /// What an image pull may reach, how long and how large.
    pub fn pull_policy(&self) -> corral_runtime::image::PullPolicy {
        corral_runtime::image::PullPolicy {
            insecure_registries: self.insecure_registries.clone(),
            allowed_registries: self.allowed_registries.clone(),
            timeout: std::time::Duration::from_secs(self.pull_timeout_secs),
            max_bytes: self.pull_max_bytes,
        }
    }
}

fn host_image() -> String {
    "host".to_owned()
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            runtime: PathBuf::from("runc"),
            runtime_root: None,
            dir: None,
            agent: None,
            default_memory_mb: 128,
            sweep_interval_secs: 30,
            pull_missing_images: true,
            insecure_registries: Vec::new(),
            allowed_registries: Vec::new(),
            pull_timeout_secs: 600,
            pull_max_bytes: 4 << 30,
            pool: Vec::new(),
            terminal_idle_secs: 900,
            terminal_max_message_bytes: 64 * 1024,
            exec_max_output_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Outgoing email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `console` (log each mail; the zero-config default), `file` (write
    /// `.eml` files) or `smtp`.
    pub backend: EmailBackend,
    /// The sender, `Corral <corral@example.com>` or a bare address.
    pub from: String,
    /// For the `file` backend: where mails go (default `<data_dir>/mail`).
    pub dir: Option<PathBuf>,
    /// For the `smtp` backend.
    pub smtp: SmtpConfig,
}

impl Default for EmailConfig {
    fn default() -> EmailConfig {
        EmailConfig {
            backend: EmailBackend::Console,
            from: "Corral <corral@localhost>".to_owned(),
            dir: None,
            smtp: SmtpConfig::default(),
        }
    }
}

/// Email delivery backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailBackend {
    /// Log every mail (recipient, subject, text) at info level.
    Console,
    /// Write every mail as an `.eml` file.
    File,
    /// Send through an SMTP server.
    Smtp,
}

/// An SMTP relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Host name.
    pub host: String,
    /// Port (587 for STARTTLS, 465 for TLS, 25 without).
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: SmtpTls,
    /// User name, when the relay needs authentication.
    pub username: Option<String>,
    /// Password, when the relay needs authentication.
    pub password: Option<String>,
    /// Give up on one delivery after this long.
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> SmtpConfig {
        SmtpConfig {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            timeout_secs: 15,
        }
    }
}

/// Transport security towards the SMTP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text (only for a relay on the same host or network).
    None,
    /// Upgrade with STARTTLS; refuse a relay that cannot.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// Request rate limits. Each limit counts requests per minute; 0 turns it off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Where counters live (and sign-in lockout state, with `redis`).
    pub backend: LimitsBackend,
    /// `redis://host:port[/db]`, for the `redis` backend.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so deployments can share a Redis.
    pub redis_key_prefix: String,
    /// API requests per minute from one client IP address.
    pub per_ip_per_minute: u32,
    /// API requests per minute by one signed-in user (sessions and tokens).
    pub per_user_per_minute: u32,
    /// API requests per minute with one API key.
    pub per_key_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            backend: LimitsBackend::Auto,
            redis_url: None,
            redis_key_prefix: "corral".to_owned(),
            per_ip_per_minute: 600,
            per_user_per_minute: 1200,
            per_key_per_minute: 600,
        }
    }
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsBackend {
    /// `redis` when `redis_url` is set, else `memory` on SQLite (one
    /// replica by construction) and `database` on PostgreSQL.
    Auto,
    /// In this process only: exact for a single replica, cheapest.
    Memory,
    /// In the database, shared by every replica.
    Database,
    /// In Redis, shared by every replica; sign-in lockout moves there too.
    Redis,
}

/// Account settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Who may create an account through the API.
    pub registration: Registration,
}

/// Registration modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Anyone may register.
    #[default]
    Open,
    /// Only people holding an invitation to an organization, for the
    /// invited email address (`invitation_token` at registration).
    InviteOnly,
    /// Only administrators create accounts (`corral admin create-user`).
    Closed,
}

/// HTTP serving settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The URL users reach Corral at, when behind a proxy (`https://corral.example.com`).
    pub public_url: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Largest streamed file upload (`PUT …/files/content` with a
    /// `Content-Length`; it goes to the sandbox as it arrives, whose disk
    /// caps it too), in bytes. An upload without a length is taken whole
    /// and stays under `body_limit_bytes`.
    pub upload_limit_bytes: usize,
    /// Seconds a client may take to send its request headers.
    pub header_read_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Send `Strict-Transport-Security`; turn on when served over TLS.
    /// Defaults to on when `public_url` is `https://…`.
    pub hsts: Option<bool>,
    /// Origins allowed to call the API from a browser (exact `scheme://host[:port]`).
    pub cors_allowed_origins: Vec<String>,
}

/// Database settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; empty means SQLite in the data directory.
    pub url: Option<String>,
    /// Most pooled connections.
    pub max_connections: u32,
    /// Seconds a request waits for a pooled connection.
    pub acquire_timeout_secs: u64,
}

/// Log settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `corral_server=debug,info`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("./corral-data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            email: EmailConfig::default(),
            sandbox: SandboxConfig::default(),
            executions: ExecutionsConfig::default(),
            queue: QueueSettings::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            body_limit_bytes: 10 * 1024 * 1024,
            upload_limit_bytes: 1024 * 1024 * 1024,
            header_read_timeout_secs: 10,
            shutdown_grace_secs: 30,
            hsts: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> DatabaseConfig {
        DatabaseConfig {
            url: None,
            max_connections: 10,
            acquire_timeout_secs: 5,
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// A configuration that cannot be used; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file's extension names no supported format.
    #[error("config file {path}: unsupported extension; use .toml, .yaml, .yml or .json")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The config file does not exist.
    #[error("config file {path} does not exist")]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// A value could not be read as its key's type (or the key is unknown).
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value has the right type but is not acceptable.
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// A queue name as the admin API and `queue.queues` accept it.
pub fn is_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Flags given on the command line; they win over every other source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<String>,
}

/// Top-level keys the environment may set; other `CORRAL_*` variables
/// (`CORRAL_CONFIG`, test settings) are not configuration keys.
const ENV_SECTIONS: &[&str] = &[
    "data_dir",
    "server",
    "database",
    "log",
    "auth",
    "limits",
    "email",
    "sandbox",
    "executions",
    "queue",
];

impl Config {
    /// Loads the configuration from every source: defaults, the file named by
    /// `--config` or `CORRAL_CONFIG`, `CORRAL_*` variables, flags, `DATABASE_URL`.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut figment = Figment::from(Serialized::defaults(Config::default()));

        let file = overrides
            .config_file
            .clone()
            .or_else(|| var("CORRAL_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            figment = merge_file(figment, &path)?;
        }

        figment = figment.merge(
            Env::prefixed("CORRAL_")
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    let section = key.split("__").next().unwrap_or_default();
                    ENV_SECTIONS.contains(&section)
                })
                .split("__"),
        );

        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Named::new("--data-dir", "data_dir", dir));
        }
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Named::new("--listen", "server.listen", listen));
        }
        if let Some(url) = var("DATABASE_URL") {
            figment = figment.merge(Named::new(
                "environment variable DATABASE_URL",
                "database.url",
                url,
            ));
        }

        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.server.body_limit_bytes == 0 {
            return Err(invalid("server.body_limit_bytes", "must be greater than 0"));
        }
        if self.server.upload_limit_bytes < self.server.body_limit_bytes {
            return Err(invalid(
                "server.upload_limit_bytes",
                "must be at least server.body_limit_bytes",
            ));
        }
        if self.server.header_read_timeout_secs == 0 {
            return Err(invalid(
                "server.header_read_timeout_secs",
                "must be greater than 0",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid(
                "database.max_connections",
                "must be greater than 0",
            ));
        }
        if self.database.acquire_timeout_secs == 0 {
            return Err(invalid(
                "database.acquire_timeout_secs",
                "must be greater than 0",
            ));
        }
        if let Some(url) = &self.database.url {
            corral_store::Backend::from_url(url)
                .map_err(|e| invalid("database.url", &e.to_string()))?;
        }
        if let Some(url) = &self.server.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
        for origin in &self.server.cors_allowed_origins {
            if !is_exact_origin(origin) {
                return Err(ConfigError::Invalid {
                    key: "server.cors_allowed_origins",
                    message: format!(
                        "`{origin}` is not an origin; write scheme://host[:port] with no path or wildcard"
                    ),
                });
            }
        }
        match (&self.limits.redis_url, self.limits.backend) {
            (Some(url), _) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                return Err(invalid(
                    "limits.redis_url",
                    "must start with redis:// or rediss://",
                ));
            }
            (None, LimitsBackend::Redis) => {
                return Err(invalid(
                    "limits.redis_url",
                    "is required when limits.backend is `redis`",
                ));
            }
            _ => {}
        }
        self.validate_queue()?;
        if self.sandbox.default_memory_mb < 16 {
            return Err(invalid("sandbox.default_memory_mb", "must be at least 16"));
        }
        if self.sandbox.sweep_interval_secs == 0 {
            return Err(invalid("sandbox.sweep_interval_secs", "must be at least 1"));
        }
        if self.sandbox.pool.iter().any(|class| class.size > 1000) {
            return Err(invalid(
                "sandbox.pool",
                "a class keeps at most 1000 sandboxes",
            ));
        }
        if self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "email.from",
                "must be an address such as `Corral <corral@example.com>`",
            ));
        }
        if self.email.backend == EmailBackend::Smtp && self.email.smtp.host.is_empty() {
            return Err(invalid(
                "email.smtp.host",
                "is required when email.backend is `smtp`",
            ));
        }
        if self.email.smtp.username.is_some() != self.email.smtp.password.is_some() {
            return Err(invalid(
                "email.smtp.password",
                "username and password go together",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", &e.to_string()))?;
        Ok(())
    }

    fn validate_queue(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        let queue = &self.queue;
        match (&queue.redis_url, queue.driver) {
            (Some(url), _) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                return Err(invalid(
                    "queue.redis_url",
                    "must start with redis:// or rediss://",
                ));
            }
            (None, QueueDriver::Redis) => {
                return Err(invalid(
                    "queue.redis_url",
                    "is required when queue.driver is `redis`",
                ));
            }
            _ => {}
        }
        if queue.prefix.is_empty() {
            return Err(invalid("queue.prefix", "must not be empty"));
        }
        if let Some(key) = &queue.encryption_key {
            corral_queue::EncryptionKey::from_base64(key).map_err(|_| {
                invalid(
                    "queue.encryption_key",
                    "must be standard base64 of 32 bytes (make one with `openssl rand -base64 32`)",
                )
            })?;
        }
        if queue.workers > 1024 {
            return Err(invalid("queue.workers", "must be at most 1024"));
        }
        if queue.workers > 0 && queue.queues.is_empty() {
            return Err(invalid(
                "queue.queues",
                "must name at least one queue when queue.workers is above 0",
            ));
        }
        if queue.queues.iter().any(|name| !is_queue_name(name)) {
            return Err(invalid(
                "queue.queues",
                "names are 1 to 64 of a-z, 0-9, `-`, `_` and `.`",
            ));
        }
        if queue.lease_secs < 2 {
            return Err(invalid("queue.lease_secs", "must be at least 2"));
        }
        if queue.prune_usage_after_days < 2 {
            return Err(invalid(
                "queue.prune_usage_after_days",
                "must be at least 2",
            ));
        }
        if queue.prune_completed_after_hours == 0 {
            return Err(invalid(
                "queue.prune_completed_after_hours",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// How to open the job queue.
    pub fn queue_config(&self) -> corral_queue::QueueConfig {
        let driver = match (&self.queue.driver, &self.queue.redis_url) {
            (QueueDriver::Redis, Some(url)) => corral_queue::DriverConfig::Redis {
                url: url.clone(),
                prefix: self.queue.prefix.clone(),
            },
            _ => corral_queue::DriverConfig::Database,
        };
        corral_queue::QueueConfig {
            driver,
            // Checked by `validate`.
            encryption_key: self
                .queue
                .encryption_key
                .as_deref()
                .and_then(|key| corral_queue::EncryptionKey::from_base64(key).ok()),
            rate_limits: Vec::new(),
        }
    }

    /// The database connection settings, SQLite in the data directory by default.
    pub fn store(&self) -> StoreConfig {
        let mut store = StoreConfig::sqlite_in(&self.data_dir);
        if let Some(url) = &self.database.url {
            store.url = url.clone();
        }
        store.max_connections = self.database.max_connections;
        store.acquire_timeout = Duration::from_secs(self.database.acquire_timeout_secs);
        store
    }

    /// Whether responses carry `Strict-Transport-Security`.
    pub fn hsts(&self) -> bool {
        self.server.hsts.unwrap_or_else(|| {
            self.server
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        })
    }

    /// Where mail of the `file` backend goes.
    pub fn mail_dir(&self) -> PathBuf {
        self.email
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("mail"))
    }

    /// The URL to print for people: the public URL, else the listen address.
    pub fn display_url(&self) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.server.listen),
        }
    }
}

fn merge_file(figment: Figment, path: &Path) -> Result<Figment, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    Ok(match ext.as_str() {
        "toml" => figment.merge(Toml::file_exact(path)),
        "yaml" | "yml" => figment.merge(Yaml::file_exact(path)),
        "json" => figment.merge(Json::file_exact(path)),
        _ => {
            return Err(ConfigError::UnknownFormat {
                path: path.to_path_buf(),
            });
        }
    })
}

/// Figment's message, with the key and the source named plainly.
/// One value set by a flag or a lone variable, named for error messages
/// (`(from --listen)`), where figment's own provider would name a Rust type
/// and a source line.
struct Named<T> {
    name: &'static str,
    value: Serialized<T>,
}

impl<T: Serialize> Named<T> {
    fn new(name: &'static str, key: &str, value: T) -> Named<T> {
        Named {
            name,
            value: Serialized::default(key, value),
        }
    }
}

impl<T: Serialize> figment::Provider for Named<T> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.name)
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.value.data()
    }
}

fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::from("(top level)")
            } else {
                e.path.join(".")
            };
            let source = match e.metadata.as_ref() {
                Some(m) if m.name.contains("environment") => {
                    format!(
                        " (from environment variable CORRAL_{})",
                        e.path.join("__").to_ascii_uppercase()
                    )
                }
                Some(m) => match &m.source {
                    Some(src) => format!(" (from {} {src})", m.name),
                    None => format!(" (from {})", m.name),
                },
                None => String::new(),
            };
            let hint = match key.as_str() {
                "server.listen" => "; write IP:PORT, such as 127.0.0.1:8080 or 0.0.0.0:8080",
                _ => "",
            };
            format!("`{key}`: {}{hint}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn is_exact_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '*', '?', '#', ' '])
        // What a header value may hold (`http::HeaderValue::from_str`'s
        // rule), so the server can send it back in `Access-Control-Allow-Origin`.
        && origin.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment's Jail API returns figment::Error"
)]
mod tests {
    use super::*;
    use figment::Jail;

    /// Environment variables of one case, and the words its error must contain.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

    /// Runs `check` with exactly these environment variables set (Jail
    /// serializes tests that touch the process environment and restores it).
    fn with_env(pairs: &[(&str, &str)], check: impl FnOnce(&mut Jail)) {
        Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in pairs {
                jail.set_env(k, v);
            }
            check(jail);
            Ok(())
        });
    }

    fn load_file(path: &Path) -> Result<Config, ConfigError> {
        Config::load(&Overrides {
            config_file: Some(path.to_path_buf()),
            ..Overrides::default()
        })
    }

    #[test]
    fn smtp_needs_a_host_and_a_valid_sender() {
        with_env(&[("CORRAL_EMAIL__BACKEND", "smtp")], |_| {
            let error = Config::load(&Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("email.smtp.host"), "{error}");
        });
        with_env(&[("CORRAL_EMAIL__FROM", "not an address")], |_| {
            let error = Config::load(&Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("email.from"), "{error}");
        });
        with_env(&[("CORRAL_EMAIL__BACKEND", "carrier_pigeon")], |_| {
            let error = Config::load(&Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("carrier_pigeon"), "{error}");
        });
    }

    #[test]
    fn a_redis_limits_backend_needs_a_redis_url() {
        with_env(&[("CORRAL_LIMITS__BACKEND", "redis")], |_| {
            let error = Config::load(&Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("limits.redis_url"), "{error}");
        });
        with_env(&[("CORRAL_LIMITS__REDIS_URL", "http://nope")], |_| {
            let error = Config::load(&Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("redis://"), "{error}");
        });
    }

    #[test]
    fn bad_queue_settings_name_their_key() {
        for (var, value, key) in [
            ("CORRAL_QUEUE__DRIVER", "redis", "queue.redis_url"),
            ("CORRAL_QUEUE__REDIS_URL", "http://nope", "queue.redis_url"),
            (
                "CORRAL_QUEUE__ENCRYPTION_KEY",
                "c2hvcnQ=",
                "queue.encryption_key",
            ),
            ("CORRAL_QUEUE__LEASE_SECS", "1", "queue.lease_secs"),
            ("CORRAL_QUEUE__QUEUES", "[\"Bad Name\"]", "queue.queues"),
        ] {
            with_env(&[(var, value)], |_| {
                let error = Config::load(&Overrides::default()).unwrap_err().to_string();
                assert!(error.contains(key), "{var}={value}: {error}");
            });
        }
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        with_env(&[("CORRAL_QUEUE__ENCRYPTION_KEY", key)], |_| {
            let config = Config::load(&Overrides::default()).unwrap();
            assert!(config.queue_config().encryption_key.is_some());
        });
    }

    #[test]
    fn nothing_at_all_gives_sqlite_in_data_dir_on_localhost_8080() {
        with_env(&[], |_| {
            let config = Config::load(&Overrides::default()).unwrap();
            assert_eq!(config, Config::default());
            assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(
                config.store().url,
                "sqlite://./corral-data/corral.db?mode=rwc"
            );
            assert!(!config.hsts());
        });
    }

    #[test]
    fn layers_apply_in_order_file_env_flags_database_url() {
        with_env(
            &[
                ("CORRAL_SERVER__LISTEN", "127.0.0.1:2222"),
                ("CORRAL_SERVER__BODY_LIMIT_BYTES", "7"),
                ("CORRAL_EXECUTIONS__REUSE_SANDBOXES", "3"),
                ("CORRAL_EXECUTIONS__CALLBACK_SECRET", "from-env"),
                ("CORRAL_DATA_DIR", "/from-env"),
                ("CORRAL_TEST_POSTGRES_URL", "ignored: not a config key"),
                ("DATABASE_URL", "postgres://env/db"),
            ],
            |jail| {
                jail.create_file(
                    "corral.toml",
                    "data_dir = \"/from-file\"\n[server]\nlisten = \"127.0.0.1:1111\"\nbody_limit_bytes = 5\n[database]\nurl = \"postgres://file/db\"\nmax_connections = 3\n",
                )
                .unwrap();
                let overrides = Overrides {
                    config_file: Some(jail.directory().join("corral.toml")),
                    data_dir: None,
                    listen: Some("127.0.0.1:3333".into()),
                };
                let config = Config::load(&overrides).unwrap();
                assert_eq!(config.data_dir, PathBuf::from("/from-env"));
                assert_eq!(config.server.listen.to_string(), "127.0.0.1:3333");
                assert_eq!(config.server.body_limit_bytes, 7);
                assert_eq!(config.executions.reuse_sandboxes, 3);
                assert_eq!(config.executions.callback_secret, "from-env");
                assert_eq!(config.database.max_connections, 3);
                assert_eq!(config.store().url, "postgres://env/db");
            },
        );
    }

    #[test]
    fn config_file_from_environment_and_yaml_json_formats() {
        with_env(&[], |jail| {
            jail.create_file("c.yaml", "log:\n  format: json\n")
                .unwrap();
            jail.create_file("c.json", r#"{"server": {"hsts": true}}"#)
                .unwrap();
            assert_eq!(
                load_file(&jail.directory().join("c.yaml"))
                    .unwrap()
                    .log
                    .format,
                LogFormat::Json
            );
            assert!(load_file(&jail.directory().join("c.json")).unwrap().hsts());
            jail.set_env("CORRAL_CONFIG", jail.directory().join("c.yaml").display());
            assert_eq!(
                Config::load(&Overrides::default()).unwrap().log.format,
                LogFormat::Json
            );
        });
    }

    /// A bad flag is named as the flag, never as a Rust type and source line.
    #[test]
    fn bad_flags_are_named_as_flags() {
        with_env(&[], |_| {
            let err = Config::load(&Overrides {
                listen: Some("notanaddr".into()),
                ..Overrides::default()
            })
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("server.listen") && err.contains("(from --listen)"),
                "{err}"
            );
            assert!(err.contains("127.0.0.1:8080"), "an example: {err}");
            assert!(
                !err.contains("alloc::") && !err.contains(".rs:"),
                "no Rust type or source path: {err}"
            );
        });
        with_env(&[("DATABASE_URL", "mysql://x/y")], |_| {
            let err = Config::load(&Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("database.url"), "{err}");
        });
    }

    /// Each bad input and the words its message must contain.
    #[test]
    fn bad_values_name_the_key_and_the_problem() {
        let cases: &[Case] = &[
            (
                &[("CORRAL_SERVER__LISTEN", "not-an-address")],
                &["server.listen", "CORRAL_SERVER__LISTEN"],
            ),
            (
                &[("CORRAL_SERVER__BODY_LIMIT_BYTES", "lots")],
                &["server.body_limit_bytes"],
            ),
            (
                &[("CORRAL_SERVER__BODY_LIMIT_BYTES", "0")],
                &["server.body_limit_bytes", "greater than 0"],
            ),
            (
                &[("CORRAL_SERVER__UPLOAD_LIMIT_BYTES", "1024")],
                &[
                    "server.upload_limit_bytes",
                    "at least server.body_limit_bytes",
                ],
            ),
            (
                &[("CORRAL_EXECUTIONS__REUSE_SANDBOXES", "-1")],
                &["executions.reuse_sandboxes"],
            ),
            (&[("CORRAL_EXECUTIONS__NO_SUCH_KEY", "1")], &["no_such_key"]),
            (&[("CORRAL_LOG__FORMAT", "xml")], &["log.format", "xml"]),
            (&[("CORRAL_LOG__LEVEL", "info,[[[")], &["log.level"]),
            (
                &[("DATABASE_URL", "mysql://x/y")],
                &["database.url", "mysql"],
            ),
            (
                &[("CORRAL_SERVER__PUBLIC_URL", "corral.example.com")],
                &["server.public_url"],
            ),
            (
                &[("CORRAL_SERVER__CORS_ALLOWED_ORIGINS", "[\"*\"]")],
                &["server.cors_allowed_origins", "`*`"],
            ),
            (&[("CORRAL_SERVER__NO_SUCH_KEY", "1")], &["no_such_key"]),
        ];
        for (vars, words) in cases {
            with_env(vars, |_| {
                let err = Config::load(&Overrides::default()).unwrap_err().to_string();
                for word in *words {
                    assert!(err.contains(word), "{vars:?}: `{err}` lacks `{word}`");
                }
            });
        }
    }

    #[test]
    fn unknown_keys_and_formats_in_files_are_errors() {
        with_env(&[], |jail| {
            jail.create_file("c.toml", "[server]\nlisten_addr = \"127.0.0.1:1\"\n")
                .unwrap();
            let err = load_file(&jail.directory().join("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen_addr"), "{err}");
            assert!(err.contains("c.toml"), "{err}");

            jail.create_file("c.ini", "").unwrap();
            let err = load_file(&jail.directory().join("c.ini")).unwrap_err();
            assert!(matches!(err, ConfigError::UnknownFormat { .. }), "{err}");

            let err = load_file(&jail.directory().join("nope.toml")).unwrap_err();
            assert!(matches!(err, ConfigError::MissingFile { .. }), "{err}");
        });
    }
}
