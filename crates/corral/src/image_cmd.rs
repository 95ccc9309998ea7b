//! `corral image …`: the host's image store (`<data_dir>/images`), the one
//! the server starts sandboxes from.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use corral_runtime::image::{ImageInfo, ImageStore, PullPhase, PullProgress, RegistryAuth};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from an OCI/Docker registry (progress on standard error).
    Pull {
        #[command(flatten)]
        config: crate::ConfigArgs,
        /// Image reference, e.g. `busybox`, `ghcr.io/org/image:tag`, `host:5000/name@sha256:…`.
        reference: String,
        /// Registry user name (the password is read from standard input).
        #[arg(long, requires = "password_stdin")]
        username: Option<String>,
        /// Read the registry password from the first line of standard input.
        #[arg(long, requires = "username")]
        password_stdin: bool,
        /// Talk plain HTTP to this registry (repeatable), e.g. `127.0.0.1:5000`.
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure_registries: Vec<String>,
    },
    /// Import an OCI image layout or a root filesystem (directory or tarball).
    Import {
        #[command(flatten)]
        config: crate::ConfigArgs,
        /// Directory or tar file (plain, gzip or zstd).
        path: PathBuf,
        /// Name to give the image, e.g. `myimage:1`.
        #[arg(long)]
        name: String,
    },
    /// List the images in the store.
    Ls {
        #[command(flatten)]
        config: crate::ConfigArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image (and the layers no other image uses). Refused while
    /// any sandbox, running or stopped, was created from it: delete those
    /// sandboxes first.
    Rm {
        #[command(flatten)]
        config: crate::ConfigArgs,
        /// Image name or reference.
        name: String,
    },
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Pull {
            config,
            reference,
            username,
            password_stdin,
            insecure_registries,
        } => {
            let auth = match username {
                Some(username) if password_stdin => RegistryAuth::Basic {
                    username,
                    password: read_password()?,
                },
                _ => RegistryAuth::Anonymous,
            };
            let loaded = crate::load(&config, None)?;
            let store = ImageStore::open(&loaded.data_dir.join("images"))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut policy = loaded.sandbox.pull_policy();
            policy.insecure_registries.extend(insecure_registries);
            let runtime = crate::runtime()?;
            let mut progress = Progress::new();
            let info = runtime
                .block_on(store.pull(&reference, &auth, &policy, &mut |p| progress.report(p)))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "pulled {} ({}, {} layer(s), {})",
                info.reference,
                short(&info.manifest_digest),
                info.layers.len(),
                megabytes(info.size)
            );
            Ok(())
        }
        ImageCommand::Import { config, path, name } => {
            let store = open(&config)?;
            let info = store
                .import(&path, &name)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "imported {} ({}, {} layer(s), {})",
                info.reference,
                short(&info.manifest_digest),
                info.layers.len(),
                megabytes(info.size)
            );
            Ok(())
        }
        ImageCommand::Ls { config, json } => {
            let store = open(&config)?;
            let images = store.list().map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&images)?);
            } else {
                print_table(&images);
            }
            Ok(())
        }
        ImageCommand::Rm { config, name } => {
            let store = open(&config)?;
            let reference =
                corral_runtime::image::normalize(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let users = sandboxes_on(&config, &reference)?;
            if !users.is_empty() {
                let listed: Vec<String> = users
                    .iter()
                    .map(|s| format!("{} ({}, org {})", s.id, s.state, s.org_id))
                    .collect();
                let more = i64::try_from(users.len()).is_ok_and(|n| n >= SHOWN_USERS);
                anyhow::bail!(
                    "image {reference} is in use by sandboxes: {}{}; delete them first \
                     (`corral sandbox rm ID`; `corral sandbox ls --all` lists every org's)",
                    listed.join(", "),
                    if more { ", …" } else { "" },
                );
            }
            if store.remove(&name).map_err(|e| anyhow::anyhow!("{e}"))? {
                println!("removed {reference}");
                Ok(())
            } else {
                anyhow::bail!("no image named {reference}")
            }
        }
    }
}

/// Sandboxes named in a refusal to remove an image (the first few).
const SHOWN_USERS: i64 = 10;

/// Sandboxes (of any org, in any state) created from `reference`: a
/// running one would lose its root filesystem, a stopped one could not
/// start again.
fn sandboxes_on(
    args: &crate::ConfigArgs,
    reference: &str,
) -> anyhow::Result<Vec<corral_store::SandboxRecord>> {
    let config = crate::load(args, None)?;
    let store_config = config.store();
    crate::runtime()?.block_on(async {
        let store = corral_store::Store::connect(&store_config)
            .await
            .context("cannot open the database to see which sandboxes use the image")?;
        // A data directory the server never ran on has no tables yet.
        store.migrate().await?;
        let filter = corral_store::SandboxFilter {
            image: Some(reference),
            ..corral_store::SandboxFilter::default()
        };
        let found = store.sandboxes_matching(&filter, None, SHOWN_USERS).await;
        store.close().await;
        Ok(found?)
    })
}

fn open(args: &crate::ConfigArgs) -> anyhow::Result<ImageStore> {
    let config = crate::load(args, None)?;
    let dir = config.data_dir.join("images");
    ImageStore::open(&dir).map_err(|e| anyhow::anyhow!("{e}"))
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the registry password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

fn print_table(images: &[ImageInfo]) {
    let width = images
        .iter()
        .map(|i| i.reference.len())
        .max()
        .unwrap_or(0)
        .max("REFERENCE".len());
    println!(
        "{:<width$}  {:<12}  {:>6}  {:>10}  CREATED",
        "REFERENCE", "DIGEST", "LAYERS", "SIZE"
    );
    for image in images {
        println!(
            "{:<width$}  {:<12}  {:>6}  {:>10}  {}",
            image.reference,
            short(&image.manifest_digest),
            image.layers.len(),
            megabytes(image.size),
            image.created.as_deref().unwrap_or("-"),
        );
    }
}

/// Per-layer progress lines on standard error: updated in place on a
/// terminal, otherwise a line per phase (and at most one per second while
/// downloading).
struct Progress {
    terminal: bool,
    last: Option<(String, PullPhase, Instant)>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn report(&mut self, p: PullProgress) {
        let now = Instant::now();
        let same_layer = self
            .last
            .as_ref()
            .is_some_and(|(digest, _, _)| *digest == p.digest);
        if let Some((_, phase, at)) = &self.last
            && same_layer
            && *phase == p.phase
            && p.phase == PullPhase::Downloading
            && p.done != p.total
            && now.duration_since(*at)
                < Duration::from_millis(if self.terminal { 100 } else { 1000 })
        {
            return;
        }
        let what = match p.phase {
            PullPhase::Downloading => format!(
                "downloading {:.1}/{:.1} MB",
                p.done as f64 / 1_000_000.0,
                p.total as f64 / 1_000_000.0
            ),
            PullPhase::Unpacking => "unpacking".to_owned(),
            PullPhase::Done => "done".to_owned(),
            PullPhase::Cached => "already present".to_owned(),
        };
        let line = format!("{}: {what}", short(&p.digest));
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r\x1b[2K{line}");
            if matches!(p.phase, PullPhase::Done | PullPhase::Cached) {
                let _ = writeln!(stderr);
            }
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
        self.last = Some((p.digest, p.phase, now));
    }
}
