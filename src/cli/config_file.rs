//! The optional TOML config file: defaults for what flags and the environment leave unset.
//!
//! Precedence: flag > environment > config file. The file is `--config`/`QVAULT_CONFIG`,
//! else `$XDG_CONFIG_HOME/qvault/config.toml` (or `~/.config/qvault/config.toml`) when it
//! exists. Example:
//!
//! ```toml
//! repository = "s3://backups/qdrant"
//! identity = "/etc/qvault/identity.txt"
//! [s3]
//! endpoint = "https://s3.example.com"
//! region = "eu-central-1"
//! access_key_id = "…"
//! secret_access_key = "…"
//! ```

use super::GlobalArgs;
use anyhow::Result;
use std::path::PathBuf;

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub repository: Option<String>,
    pub identity: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub expect_key: Option<String>,
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub s3: S3Section,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFile").field("repository", &self.repository).finish_non_exhaustive()
    }
}

fn default_path() -> Option<PathBuf> {
    Some(super::common::config_dir()?.join("config.toml")).filter(|p| p.is_file())
}

/// Reads the config file named by the flags, or the default one if it exists.
pub fn load(global: &GlobalArgs) -> Result<ConfigFile> {
    let Some(path) = global.config.clone().or_else(default_path) else {
        return Ok(ConfigFile::default());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| qvault::Error::io(format!("reading config file {}", path.display()), e))?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        qvault::Error::invalid_input(format!("config file {} is not valid: {e}", path.display()))
    })?;
    Ok(file)
}

fn set<T: AsRef<std::ffi::OsStr>>(value: Option<T>) -> Option<T> {
    value.filter(|v| !v.as_ref().is_empty())
}

/// Fills what flags and environment left unset (or set empty) from the config file.
pub fn apply(global: &mut GlobalArgs, file: ConfigFile) {
    global.repo = set(global.repo.take()).or(file.repository);
    global.identity = set(global.identity.take()).or(file.identity);
    global.key = set(global.key.take()).or(file.key);
    global.expect_key = set(global.expect_key.take()).or(file.expect_key);
    global.cache_dir = set(global.cache_dir.take()).or(file.cache_dir);
    global.s3_endpoint = set(global.s3_endpoint.take()).or(file.s3.endpoint);
    global.s3_region = set(global.s3_region.take()).or(file.s3.region);
    global.s3_access_key_id = file.s3.access_key_id;
    global.s3_secret_access_key = file.s3.secret_access_key;
}
