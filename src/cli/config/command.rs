//! `qvault config check|reference|show`: validate a file, print the reference of every
//! setting (docs/configuration.md is its output), show what is in effect and from where.

use super::document::{At, Problem};
use super::settings::SETTINGS;
use super::value::Kind;
use super::{Origin, Resolved};
use crate::cli::common;
use crate::cli::GlobalArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file: unknown keys, wrong types, bad URLs, durations and groupings,
    /// missing key files, an unknown --profile. Exit 2 names each problem's line and column.
    Check(CheckArgs),
    /// Print the reference of every setting (key, type, environment variable, flag) as
    /// Markdown: docs/configuration.md.
    Reference,
    /// Print the settings in effect (secrets hidden) and where each comes from.
    Show,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The file (default: --config, QVAULT_CONFIG, then ~/.config/qvault/config.toml).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// `config check`'s verdict.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub file: PathBuf,
    pub ok: bool,
    pub problems: Vec<Problem>,
    /// Settings at the top level.
    pub settings: usize,
    /// Each profile and how many settings it overrides.
    pub profiles: std::collections::BTreeMap<String, usize>,
}

pub fn run(global: &GlobalArgs, command: &ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Check(args) => check(global, args),
        ConfigCommand::Reference => {
            print!("{}", reference());
            Ok(())
        }
        ConfigCommand::Show => show(global),
    }
}

fn check(global: &GlobalArgs, args: &CheckArgs) -> Result<()> {
    let Some(file) = args.file.clone().or_else(|| super::path(global)) else {
        return Err(qvault::Error::invalid_input(
            "no config file to check: give FILE, --config or QVAULT_CONFIG, or create \
             ~/.config/qvault/config.toml",
        )
        .into());
    };
    let (doc, mut problems) = super::read_document(&file)?;
    let levels = std::iter::once(&doc.top).chain(doc.profiles.values());
    for found in levels.flat_map(|l| l.values.values()) {
        let path = found.value.text().map(PathBuf::from);
        if let (Kind::File, Some(path)) = (found.setting.kind, path) {
            if !path.is_file() {
                problems.push(Problem {
                    at: found.at,
                    message: format!("{}: there is no file {}", found.setting.key, path.display()),
                });
            }
        }
    }
    if let Some(profile) = global.profile.as_deref().filter(|p| !p.is_empty()) {
        if let Err(e) = super::resolve(&doc, Some(&file), Some(profile), &|_| None) {
            problems.push(Problem { at: At { line: 1, column: 1 }, message: e.to_string() });
        }
    }
    problems.sort_by_key(|p| (p.at.line, p.at.column));
    let report = CheckReport {
        file: file.clone(),
        ok: problems.is_empty(),
        problems,
        settings: doc.top.values.len(),
        profiles: doc.profiles.iter().map(|(k, l)| (k.clone(), l.values.len())).collect(),
    };
    if global.json {
        common::print_json(&report)?;
    } else {
        for p in &report.problems {
            println!("{}:{}:{}: {}", file.display(), p.at.line, p.at.column, p.message);
        }
        if report.ok {
            let profiles: Vec<String> =
                report.profiles.iter().map(|(name, n)| format!("{name} ({n})")).collect();
            println!(
                "{} is valid: {} settings{}",
                file.display(),
                report.settings,
                if profiles.is_empty() {
                    String::new()
                } else {
                    format!(", profiles {}", profiles.join(", "))
                }
            );
        }
    }
    if report.ok {
        return Ok(());
    }
    let n = report.problems.len();
    Err(qvault::Error::invalid_input(format!(
        "config file {} has {n} {} (listed on stdout)",
        file.display(),
        if n == 1 { "problem" } else { "problems" }
    ))
    .into())
}

/// The global flags typed on the command line, as the settings they beat.
fn typed_flags(global: &GlobalArgs) -> Vec<(&'static str, &'static str, super::Value)> {
    use super::Value;
    let text = |v: &Option<String>| v.clone().map(Value::Text);
    let path = |v: &Option<PathBuf>| v.as_ref().map(|p| Value::Text(p.display().to_string()));
    let candidates = [
        ("repo", "repository", "--repo", text(&global.repo)),
        ("identity", "identity", "--identity", path(&global.identity)),
        ("key", "key", "--key", path(&global.key)),
        ("expect_key", "expect_key", "--expect-key", text(&global.expect_key)),
        ("cache_dir", "cache_dir", "--cache-dir", path(&global.cache_dir)),
        ("no_cache", "no_cache", "--no-cache", Some(Value::Bool(global.no_cache))),
        ("notify", "notify", "--notify", text(&global.notify)),
        (
            "notify_always",
            "notify_always",
            "--notify-always",
            Some(Value::Bool(global.notify_always)),
        ),
        ("metrics_file", "metrics_file", "--metrics-file", path(&global.metrics_file)),
        ("s3_endpoint", "s3.endpoint", "--s3-endpoint", text(&global.s3_endpoint)),
        ("s3_region", "s3.region", "--s3-region", text(&global.s3_region)),
        ("azure_endpoint", "azure.endpoint", "--azure-endpoint", text(&global.azure_endpoint)),
    ];
    candidates
        .into_iter()
        .filter(|(id, ..)| crate::cli::typed_global(id))
        .filter_map(|(_, key, flag, value)| Some((key, flag, value?)))
        .collect()
}

/// What a command would run with: the resolved file and environment, then the flags typed
/// on this command line over them.
fn in_effect(global: &GlobalArgs) -> Result<Resolved> {
    let mut resolved: Resolved = super::load(global)?;
    for (key, flag, value) in typed_flags(global) {
        resolved.values.retain(|(s, _, _)| s.key != key);
        if let Some(setting) = super::settings::find(key) {
            resolved.values.push((setting, value, Origin::Flag(flag)));
        }
    }
    let order = |key: &str| SETTINGS.iter().position(|s| s.key == key);
    resolved.values.sort_by_key(|(s, _, _)| order(s.key));
    Ok(resolved)
}

fn show(global: &GlobalArgs) -> Result<()> {
    let resolved = in_effect(global)?;
    // Secrets hidden, and URLs redacted: a webhook or a location can carry a token.
    let shown = |kind: Kind, v: &super::Value| -> serde_json::Value {
        match (kind, v) {
            (Kind::Secret, _) => "***".into(),
            (Kind::Url | Kind::Urls | Kind::Location, super::Value::Text(t)) => {
                qvault::redact::url(t).into()
            }
            (Kind::Urls, super::Value::List(l)) => {
                l.iter().map(|u| qvault::redact::url(u)).collect::<Vec<_>>().into()
            }
            (_, super::Value::Table) => "(a table: see the config file)".into(),
            _ => serde_json::to_value(v).unwrap_or_default(),
        }
    };
    if global.json {
        let mut settings = serde_json::Map::new();
        for (s, v, origin) in &resolved.values {
            settings.insert(
                s.key.to_string(),
                serde_json::json!({ "value": shown(s.kind, v), "origin": origin_word(origin) }),
            );
        }
        return common::print_json(&serde_json::json!({
            "file": resolved.file,
            "profile": resolved.profile,
            "settings": settings,
        }));
    }
    match &resolved.file {
        Some(f) => println!("# config file {}", f.display()),
        None => println!("# no config file"),
    }
    for (s, v, origin) in &resolved.values {
        println!("{} = {}  # {origin}", s.key, shown(s.kind, v));
    }
    Ok(())
}

fn origin_word(origin: &Origin) -> String {
    match origin {
        Origin::Flag(flag) => format!("flag:{flag}"),
        Origin::Env(var) => format!("env:{var}"),
        Origin::Profile(name) => format!("profile:{name}"),
        Origin::File => "file".to_string(),
    }
}

/// docs/configuration.md: generated from [`SETTINGS`], so it lists exactly what the loader
/// accepts.
pub fn reference() -> String {
    let mut out = String::from(REFERENCE_INTRO);
    out.push_str("| key | type | environment | flag | meaning |\n|---|---|---|---|---|\n");
    for s in SETTINGS {
        let code = |t: Option<&str>| t.map_or("–".to_string(), |t| format!("`{t}`"));
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            s.key,
            s.kind.name(),
            code(s.env),
            code(s.flag),
            s.meaning.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
        );
    }
    out.push_str(REFERENCE_OUTRO);
    out
}

const REFERENCE_INTRO: &str = "# Configuration reference

<!-- Generated by `qvault config reference` from src/cli/config/settings.rs: do not edit.
     After changing a setting, run `QVAULT_BLESS=1 cargo test --test it config::`. -->

Every option a cron job needs can live in one TOML file: `--config FILE` or `QVAULT_CONFIG`,
else `$XDG_CONFIG_HOME/qvault/config.toml` (`~/.config/qvault/config.toml`) when it exists.
`qvault config check [FILE]` validates a file and names the line and column of each problem;
`qvault config show` prints the settings in effect and where each comes from.

## Precedence

Highest first:

1. a flag on the command line;
2. an environment variable (set and not empty);
3. the selected profile: `--profile NAME` or `QVAULT_PROFILE` picks the `[profiles.NAME]`
   table, which holds the same keys as the top level;
4. the top level of the file;
5. the built-in default.

A profile's `[profiles.NAME.forget]` table replaces the top level's `[forget]` as a whole,
and forget's keep flags replace the file's policy as a whole: a retention policy is never a
mix of two. Switches (`no_cache`, `notify_always`, `qdrant.bearer`,
`backup.all_collections`) can only be turned on by the file: a flag cannot turn them off.
Paths are used as written (relative ones from the working directory): prefer absolute
paths in a file a scheduler reads.

## Example

```toml
repository = \"s3://backups/qdrant\"
key = \"/etc/qvault/repository.key\"      # backup hosts: the repository key only
cache_dir = \"/var/cache/qvault\"
metrics_file = \"/var/lib/node_exporter/textfile/qvault.prom\"
notify = \"https://hooks.example.com/qvault\"
max_age = \"26h\"

[s3]
endpoint = \"https://s3.eu-central-1.amazonaws.com\"
region = \"eu-central-1\"

[qdrant]
url = \"http://qdrant:6333\"

[backup]
all_collections = true

[forget]
keep-within-hourly = \"2d\"
keep-within-daily = \"30d\"
keep-within-weekly = \"6m\"

[profiles.staging]
repository = \"s3://backups-staging/qdrant\"
[profiles.staging.qdrant]
url = \"http://qdrant.staging:6333\"
[profiles.staging.forget]
keep-last = 24
```

`qvault --profile staging backup` backs up the staging node into the staging repository
with the staging policy; everything else comes from the top level.

## Settings

";

const REFERENCE_OUTRO: &str = "
Secrets (`string (secret)`) are scrubbed from every log line and error. Keep them out of the
file where you can: the environment, a mounted secret file (`webdav.password_file`), or the
backend's own credential chain. Each backend's URL form and credentials: docs/backends.md.
";
