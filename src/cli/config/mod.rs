//! The TOML config file, its profiles and the environment: what the command line leaves
//! unset.
//!
//! Precedence, highest first (docs/configuration.md):
//! 1. a command-line flag;
//! 2. an environment variable (set and not empty);
//! 3. the selected profile: `--profile NAME` or `QVAULT_PROFILE` picks `[profiles.NAME]`;
//! 4. the file's top level;
//! 5. the built-in default.
//!
//! The file is `--config`/`QVAULT_CONFIG`, else `$XDG_CONFIG_HOME/qvault/config.toml` (or
//! `~/.config/qvault/config.toml`) when it exists. Guarantees: every key and value is checked
//! against [`settings::SETTINGS`] before anything runs, so a misspelt key or a policy that
//! does not parse stops the command (exit 2) with its line and column instead of being
//! ignored; secret values are registered with the log scrubber as soon as they are read.
//!
//! ```toml
//! repository = "s3://backups/qdrant"
//! key = "/etc/qvault/repository.key"
//! [qdrant]
//! url = "http://qdrant:6333"
//! [forget]
//! keep-within-hourly = "7d"
//! [profiles.staging]
//! repository = "s3://backups-staging/qdrant"
//! ```

pub mod command;
mod document;
pub mod settings;
mod value;

use super::{Cli, GlobalArgs};
use anyhow::Result;
use document::{Document, Problem};
use qvault::retention::{GroupBy, Policy};
use settings::{Setting, SETTINGS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use value::{Kind, Value};

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Typed on the command line (`config show` reports the global flags it was given).
    Flag(&'static str),
    Env(&'static str),
    Profile(String),
    File,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Env(var) => write!(f, "environment {var}"),
            Origin::Profile(name) => write!(f, "profile {name}"),
            Origin::File => f.write_str("config file"),
        }
    }
}

/// The settings in effect: environment over profile over top level.
#[derive(Default)]
pub struct Resolved {
    pub file: Option<PathBuf>,
    pub profile: Option<String>,
    pub values: Vec<(&'static Setting, Value, Origin)>,
    /// The `[forget]` table in effect: the profile's replaces the top level's as a whole.
    pub forget: Option<toml::Table>,
}

/// Names the settings and their origins, never the values: some are secrets.
impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origins: Vec<String> =
            self.values.iter().map(|(s, _, o)| format!("{} from {o}", s.key)).collect();
        f.debug_struct("Resolved")
            .field("file", &self.file)
            .field("profile", &self.profile)
            .field("values", &origins)
            .finish_non_exhaustive()
    }
}

/// The config file the flags name, or the default one if it exists.
pub fn path(global: &GlobalArgs) -> Option<PathBuf> {
    global
        .config
        .clone()
        .or_else(|| Some(super::common::config_dir()?.join("config.toml")).filter(|p| p.is_file()))
}

/// Reads and checks a config file: an error lists every problem with its line and column.
fn read(path: &Path) -> Result<Document> {
    let (doc, problems) = read_document(path)?;
    if problems.is_empty() {
        return Ok(doc);
    }
    let listed: Vec<String> = problems.iter().map(Problem::to_string).collect();
    Err(qvault::Error::invalid_input(format!(
        "config file {} is not valid: {}; `qvault config check` explains each key",
        path.display(),
        listed.join("; ")
    ))
    .into())
}

pub(crate) fn read_document(path: &Path) -> Result<(Document, Vec<Problem>)> {
    let bytes = super::common::read_named_file(path, "config file", "--config or QVAULT_CONFIG")?;
    let text = String::from_utf8(bytes).map_err(|_| {
        qvault::Error::invalid_input(format!("config file {} is not UTF-8 text", path.display()))
    })?;
    Ok(document::parse(&text))
}

/// The settings in effect for `profile`, with `env` read for each setting's variable.
pub fn resolve(
    doc: &Document,
    file: Option<&Path>,
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved> {
    let chosen = match profile {
        None => None,
        Some(name) => Some(doc.profiles.get(name).ok_or_else(|| {
            let known: Vec<&str> = doc.profiles.keys().map(String::as_str).collect();
            qvault::Error::invalid_input(match file {
                Some(file) => format!(
                    "profile {name:?} is not in the config file {} (its profiles: {}); add \
                     [profiles.{name}] or fix --profile / QVAULT_PROFILE",
                    file.display(),
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
                None => format!(
                    "profile {name:?} was asked for, but there is no config file: give \
                     --config FILE (or QVAULT_CONFIG), or create ~/.config/qvault/config.toml"
                ),
            })
        })?),
    };
    let mut resolved = Resolved {
        file: file.map(Path::to_path_buf),
        profile: profile.map(str::to_string),
        values: Vec::new(),
        forget: chosen.and_then(|l| l.forget.clone()).or_else(|| doc.top.forget.clone()),
    };
    // The profile's [forget] replaces the top level's as a whole: none of its keys show
    // through.
    let own_forget = chosen.is_some_and(|l| l.forget.is_some());
    for setting in SETTINGS {
        let from_env = setting.env.and_then(|var| Some((var, env(var)?)));
        let found = if let Some((var, text)) = from_env {
            let value = setting.kind.check_env(&text).map_err(|why| {
                qvault::Error::invalid_input(format!(
                    "environment variable {var} (setting {}): {why}",
                    setting.key
                ))
            })?;
            Some((value, Origin::Env(var)))
        } else if let Some(f) = chosen.and_then(|l| l.values.get(setting.key)) {
            Some((f.value.clone(), Origin::Profile(profile.unwrap_or_default().to_string())))
        } else if own_forget && setting.key.starts_with("forget.") {
            None
        } else {
            doc.top.values.get(setting.key).map(|f| (f.value.clone(), Origin::File))
        };
        if let Some((value, origin)) = found {
            resolved.values.push((setting, value, origin));
        }
    }
    Ok(resolved)
}

/// The process environment: set and not empty.
fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// Reads the config file (if any) and resolves it for the selected profile.
pub fn load(global: &GlobalArgs) -> Result<Resolved> {
    let file = path(global);
    let profile = global.profile.as_deref().filter(|p| !p.is_empty());
    let doc = match &file {
        Some(path) => read(path)?,
        None => Document::default(),
    };
    resolve(&doc, file.as_deref(), profile, &process_env)
}

/// Fills what flags left unset from the environment, the profile and the file, and registers
/// every secret value with the log scrubber.
pub fn configure(cli: &mut Cli) -> Result<()> {
    let resolved = load(&cli.global)?;
    for (setting, value, origin) in &resolved.values {
        if setting.kind == Kind::Secret {
            if let Some(secret) = value.text() {
                super::logging::register_secret(secret);
            }
        }
        (setting.apply)(cli, value).map_err(|why| {
            qvault::Error::invalid_input(format!("{why} (setting {}, from {origin})", setting.key))
        })?;
    }
    Ok(())
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

/// The retention policy in effect; its grouping falls back to the `group_by` setting.
pub fn forget_section(global: &GlobalArgs) -> Result<ForgetSection> {
    let resolved = load(global)?;
    let mut section: ForgetSection = match resolved.forget.clone() {
        None => ForgetSection::default(),
        Some(table) => toml::Value::Table(table).try_into().map_err(|e| {
            qvault::Error::invalid_input(format!(
                "config file {}: [forget] is not valid: {e}",
                resolved.file.as_deref().unwrap_or(Path::new("")).display()
            ))
        })?,
    };
    if section.group_by.is_none() {
        section.group_by = resolved.group_by();
    }
    Ok(section)
}

impl Resolved {
    /// The `group_by` setting, for what has no `--group-by` to fill (`--metrics-file`).
    pub fn group_by(&self) -> Option<GroupBy> {
        let (_, value, _) = self.values.iter().find(|(s, _, _)| s.key == "group_by")?;
        value.text()?.parse().ok()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |var| pairs.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string())
    }

    #[test]
    fn environment_beats_profile_beats_top_level() {
        let (doc, problems) = document::parse(
            "repository = \"/top\"\ncache_dir = \"/top-cache\"\nmetrics_file = \"/top.prom\"\n\
             [profiles.prod]\nrepository = \"/prod\"\ncache_dir = \"/prod-cache\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let env = env_of(&[("QVAULT_CACHE_DIR", "/env-cache")]);
        let resolved = resolve(&doc, None, Some("prod"), &env).unwrap();
        let get = |key: &str| {
            let (_, v, o) = resolved.values.iter().find(|(s, _, _)| s.key == key).unwrap();
            (v.text().unwrap().to_string(), o.clone())
        };
        assert_eq!(get("repository"), ("/prod".into(), Origin::Profile("prod".into())));
        assert_eq!(get("cache_dir"), ("/env-cache".into(), Origin::Env("QVAULT_CACHE_DIR")));
        assert_eq!(get("metrics_file"), ("/top.prom".into(), Origin::File));
        let file = Path::new("/etc/qvault/config.toml");
        let e = resolve(&doc, Some(file), Some("staging"), &env).unwrap_err();
        assert!(
            e.to_string()
                .contains("profile \"staging\" is not in the config file /etc/qvault/config.toml"),
            "{e}"
        );
        assert!(e.to_string().contains("its profiles: prod"), "{e}");
        let e = resolve(&Document::default(), None, Some("prod"), &env).unwrap_err();
        assert!(e.to_string().contains("there is no config file: give --config FILE"), "{e}");
    }

    #[test]
    fn a_profiles_retention_policy_replaces_the_top_levels_as_a_whole() {
        let (doc, problems) = document::parse(
            "[forget]\nkeep-last = 3\nkeep-daily = 7\n[profiles.prod.forget]\nkeep-hourly = 24\n\
             [profiles.dev]\nrepository = \"/dev\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let forget = |profile| {
            let table = resolve(&doc, None, profile, &|_| None).unwrap().forget.unwrap();
            let section: ForgetSection = toml::Value::Table(table).try_into().unwrap();
            section.policy
        };
        let prod = forget(Some("prod"));
        assert_eq!((prod.keep_hourly, prod.keep_last, prod.keep_daily), (24, 0, 0));
        let dev = forget(Some("dev"));
        assert_eq!((dev.keep_hourly, dev.keep_last, dev.keep_daily), (0, 3, 7));
        let keys = |profile| -> Vec<&str> {
            let resolved = resolve(&doc, None, profile, &|_| None).unwrap();
            resolved.values.iter().map(|(s, _, _)| s.key).collect()
        };
        assert_eq!(keys(Some("prod")), ["forget.keep-hourly"]);
        assert_eq!(keys(Some("dev")), ["repository", "forget.keep-last", "forget.keep-daily"]);
    }

    #[test]
    fn every_policy_rule_in_the_table_is_one_the_policy_accepts() {
        for setting in SETTINGS.iter().filter(|s| s.key.starts_with("forget.keep-")) {
            let rule = setting.key.trim_start_matches("forget.");
            let value = match setting.kind {
                Kind::Count => toml::Value::Integer(1),
                Kind::Duration => toml::Value::String("1d".into()),
                _ => toml::Value::Array(vec![toml::Value::String("x".into())]),
            };
            let table: toml::Table = [(rule.to_string(), value)].into_iter().collect();
            let parsed: Result<Policy, _> = toml::Value::Table(table).try_into();
            assert!(parsed.is_ok(), "{rule}: {parsed:?}");
        }
    }
}
