//! The saved login: `credentials.toml` in `$CORRAL_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/corral`, else `~/.config/corral`. The file is 0600 and
//! a directory created for it 0700, since it holds an API key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// File name inside the configuration directory.
const FILE: &str = "credentials.toml";

/// What `corral login` saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The server's base URL.
    pub url: String,
    /// The API key (`crl_…`).
    pub token: String,
    /// Who signed in, for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The API key's id, to revoke it on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// The directory the credentials live in.
pub fn dir() -> anyhow::Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("CORRAL_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("corral"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(PathBuf::from(home).join(".config/corral"));
    }
    anyhow::bail!("cannot tell where to keep credentials: set CORRAL_CONFIG_DIR or HOME")
}

/// The credentials file's path.
pub fn path() -> anyhow::Result<PathBuf> {
    Ok(dir()?.join(FILE))
}

impl Credentials {
    /// The saved login, if there is one.
    pub fn load() -> anyhow::Result<Option<Credentials>> {
        let path = path()?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        toml::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a valid credentials file", path.display()))
    }

    /// Saves, replacing any saved login; returns the file's path.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let dir = dir()?;
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let path = dir.join(FILE);
        let text = toml::to_string(self).context("cannot encode the credentials")?;
        // Written beside, then renamed: a reader never sees half a file, and
        // the key is never in a file with wider permissions.
        let temp = dir.join(format!(".{FILE}.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
        })?;
        Ok(path)
    }

    /// Removes the saved login; the path if there was one.
    pub fn remove() -> anyhow::Result<Option<PathBuf>> {
        let path = path()?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(Some(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
}
