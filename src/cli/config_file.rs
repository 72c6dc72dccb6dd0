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
//!
//! # `qvault backup --collection C` with no --qdrant backs up from these nodes (every
//! # node of a cluster); restore always needs --qdrant.
//! [qdrant]
//! urls = ["http://qdrant-0:6333", "http://qdrant-1:6333", "http://qdrant-2:6333"]
//!
//! # `qvault forget` with no flags applies this; keys are the flags' names.
//! [forget]
//! keep-within-hourly = "7d"
//! keep-within-daily = "30d"
//! time-zone = "Europe/Berlin"   # default UTC
//! group-by = "source,streams"   # the default
//! # One group's own policy, keyed as `forget --dry-run` prints the group.
//! [forget.groups."source=http://qdrant:6333 streams=products"]
//! keep-last = 3
//! ```

use super::GlobalArgs;
use anyhow::Result;
use qvault::retention::{GroupBy, Policy};
use std::collections::BTreeMap;
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
    #[serde(default)]
    pub qdrant: QdrantSection,
    pub forget: Option<ForgetSection>,
}

/// `[qdrant]`: the nodes `backup` reads when no `--qdrant` is given.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QdrantSection {
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// `[forget]`: a policy (the keep flags' names as keys), its grouping and zone, and
/// `[forget.groups."<group key>"]` policies that replace it for one group.
#[derive(Debug, Default)]
pub struct ForgetSection {
    pub policy: Policy,
    pub group_by: Option<GroupBy>,
    pub time_zone: Option<String>,
    pub groups: BTreeMap<String, Policy>,
}

impl<'de> serde::Deserialize<'de> for ForgetSection {
    /// The policy's keys sit beside `group-by`, `time-zone` and `groups`; a key that is
    /// none of them is refused (by `Policy`), so a misspelt rule is never silently ignored.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let text = |table: &mut toml::Table, key: &str| match table.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(D::Error::custom(format!(
                "forget.{key} must be a string, not {}",
                other.type_str()
            ))),
        };
        let group_by = text(&mut table, "group-by")?
            .map(|s| s.parse::<GroupBy>())
            .transpose()
            .map_err(D::Error::custom)?;
        let time_zone = text(&mut table, "time-zone")?;
        let groups = match table.remove("groups") {
            None => BTreeMap::new(),
            Some(groups) => groups.try_into().map_err(D::Error::custom)?,
        };
        let policy = table.try_into().map_err(D::Error::custom)?;
        Ok(ForgetSection { policy, group_by, time_zone, groups })
    }
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
