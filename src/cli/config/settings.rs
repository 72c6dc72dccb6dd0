//! Every setting the config file, a profile or the environment can give: one table that the
//! loader checks files against, `qvault config check` validates with, and `qvault config
//! reference` prints as docs/configuration.md. A setting missing here cannot be set in a
//! file; one listed here is documented.

use super::value::{Kind, Value};
use crate::cli::{Cli, Command};
use qvault::retention::{GroupBy, RetentionDuration};
use std::path::PathBuf;

/// One setting: its dotted key in the file, its type, the environment variable and flag
/// that beat it, and where its value goes.
pub struct Setting {
    /// Dotted path: `repository`, `s3.endpoint`, `forget.keep-last`.
    pub key: &'static str,
    pub kind: Kind,
    /// The environment variable that overrides the file.
    pub env: Option<&'static str>,
    /// The command-line flag that overrides everything.
    pub flag: Option<&'static str>,
    pub meaning: &'static str,
    /// Puts the value where the command reads it, unless a flag or the environment set it
    /// already. An `Err` says why the value cannot apply to this command.
    pub apply: fn(&mut Cli, &Value) -> Result<(), String>,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key)
    }
}

/// The table of every setting, in the order the reference lists them.
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: "repository",
        kind: Kind::Location,
        env: Some("QVAULT_REPOSITORY"),
        flag: Some("--repo"),
        meaning: "The repository: a path or a URL (docs/backends.md).",
        apply: |cli, v| fill_text(&mut cli.global.repo, v),
    },
    Setting {
        key: "identity",
        kind: Kind::File,
        env: Some("QVAULT_IDENTITY"),
        flag: Some("--identity"),
        meaning: "Data identity file (age X25519): restore and `verify --read-data` need it.",
        apply: |cli, v| fill_path(&mut cli.global.identity, v),
    },
    Setting {
        key: "key",
        kind: Kind::File,
        env: Some("QVAULT_KEY"),
        flag: Some("--key"),
        meaning: "Repository key file (`qvault key export`): enough to back up, not to restore.",
        apply: |cli, v| fill_path(&mut cli.global.key, v),
    },
    Setting {
        key: "expect_key",
        kind: Kind::Text,
        env: Some("QVAULT_EXPECT_KEY"),
        flag: Some("--expect-key"),
        meaning: "The repository key fingerprint (`age1…`) the repository must present.",
        apply: |cli, v| fill_text(&mut cli.global.expect_key, v),
    },
    Setting {
        key: "cache_dir",
        kind: Kind::Path,
        env: Some("QVAULT_CACHE_DIR"),
        flag: Some("--cache-dir"),
        meaning: "Directory of the local index cache (an `emptyDir` in Kubernetes is fine).",
        apply: |cli, v| fill_path(&mut cli.global.cache_dir, v),
    },
    Setting {
        key: "no_cache",
        kind: Kind::Bool,
        env: None,
        flag: Some("--no-cache"),
        meaning: "Keep the local index in memory only.",
        apply: |cli, v| fill_bool(&mut cli.global.no_cache, v),
    },
    Setting {
        key: "notify",
        kind: Kind::Url,
        env: Some("QVAULT_NOTIFY_URL"),
        flag: Some("--notify"),
        meaning: "Webhook that gets a JSON summary when a command fails.",
        apply: |cli, v| fill_text(&mut cli.global.notify, v),
    },
    Setting {
        key: "notify_always",
        kind: Kind::Bool,
        env: None,
        flag: Some("--notify-always"),
        meaning: "Also notify when the command succeeds.",
        apply: |cli, v| fill_bool(&mut cli.global.notify_always, v),
    },
    Setting {
        key: "metrics_file",
        kind: Kind::Path,
        env: Some("QVAULT_METRICS_FILE"),
        flag: Some("--metrics-file"),
        meaning: "Prometheus text file written after every command (node_exporter textfile).",
        apply: |cli, v| fill_path(&mut cli.global.metrics_file, v),
    },
    Setting {
        key: "group_by",
        kind: Kind::Fields,
        env: Some("QVAULT_GROUP_BY"),
        flag: Some("--group-by"),
        meaning: "How backups are grouped (source, host, name, tags, streams) by check, \
                  report, metrics, forget and `verify --restore-test`; `forget.group-by` \
                  beats it for forget.",
        apply: |cli, v| {
            let Some(fields) = v.text().and_then(|t| t.parse::<GroupBy>().ok()) else {
                return Ok(());
            };
            let slot = match &mut cli.command {
                Command::Check(a) => &mut a.group_by,
                Command::Report(a) => &mut a.group_by,
                Command::Metrics(a) => &mut a.group_by,
                Command::Verify(a) if a.restore_test => &mut a.group_by,
                _ => return Ok(()),
            };
            slot.get_or_insert(fields);
            Ok(())
        },
    },
    Setting {
        key: "max_age",
        kind: Kind::ShortDuration,
        env: Some("QVAULT_MAX_AGE"),
        flag: Some("--max-age"),
        meaning: "check fails, and report marks a group stale, when its latest backup is older.",
        apply: |cli, v| {
            let Some(d) = short_duration(v) else { return Ok(()) };
            match &mut cli.command {
                Command::Check(a) => {
                    a.max_age.get_or_insert(d);
                }
                Command::Report(a) => {
                    a.max_age.get_or_insert(d);
                }
                _ => {}
            }
            Ok(())
        },
    },
    Setting {
        key: "max_verify_age",
        kind: Kind::ShortDuration,
        env: Some("QVAULT_MAX_VERIFY_AGE"),
        flag: Some("--max-verify-age"),
        meaning: "check fails when a group's newest verify is older (default 8d).",
        apply: |cli, v| {
            if let (Command::Check(a), Some(d)) = (&mut cli.command, short_duration(v)) {
                a.max_verify_age.get_or_insert(d);
            }
            Ok(())
        },
    },
    Setting {
        key: "max_size_change",
        kind: Kind::Percent,
        env: None,
        flag: Some("--max-size-change"),
        meaning: "check fails when the latest backup's size changed by more (percent).",
        apply: |cli, v| {
            if let (Command::Check(a), Value::Number(n)) = (&mut cli.command, v) {
                a.max_size_change.get_or_insert(*n);
            }
            Ok(())
        },
    },
    Setting {
        key: "rto",
        kind: Kind::ShortDuration,
        env: Some("QVAULT_RTO"),
        flag: Some("--rto"),
        meaning: "Recovery time objective: report compares each group's last restore-test \
                  time with it.",
        apply: |cli, v| {
            if let (Command::Report(a), Some(d)) = (&mut cli.command, short_duration(v)) {
                a.rto.get_or_insert(d);
            }
            Ok(())
        },
    },
    Setting {
        key: "s3.endpoint",
        kind: Kind::Url,
        env: Some("QVAULT_S3_ENDPOINT"),
        flag: Some("--s3-endpoint"),
        meaning: "S3 endpoint, for S3-compatible servers (default: AWS_ENDPOINT_URL, then AWS).",
        apply: |cli, v| fill_text(&mut cli.global.s3_endpoint, v),
    },
    Setting {
        key: "s3.region",
        kind: Kind::Text,
        env: Some("QVAULT_S3_REGION"),
        flag: Some("--s3-region"),
        meaning: "S3 region (default: AWS_REGION, then us-east-1).",
        apply: |cli, v| fill_text(&mut cli.global.s3_region, v),
    },
    Setting {
        key: "s3.access_key_id",
        kind: Kind::Text,
        env: Some("AWS_ACCESS_KEY_ID"),
        flag: None,
        meaning: "S3 access key id.",
        apply: |cli, v| fill_text(&mut cli.global.s3_access_key_id, v),
    },
    Setting {
        key: "s3.secret_access_key",
        kind: Kind::Secret,
        env: Some("AWS_SECRET_ACCESS_KEY"),
        flag: None,
        meaning: "S3 secret access key.",
        apply: |cli, v| fill_text(&mut cli.global.s3_secret_access_key, v),
    },
    Setting {
        key: "azure.endpoint",
        kind: Kind::Url,
        env: Some("QVAULT_AZURE_ENDPOINT"),
        flag: Some("--azure-endpoint"),
        meaning: "Azure Blob endpoint, e.g. Azurite's http://127.0.0.1:10000/devstoreaccount1 \
                  (default: AZURE_STORAGE_ENDPOINT, then https://ACCOUNT.blob.core.windows.net).",
        apply: |cli, v| fill_text(&mut cli.global.azure_endpoint, v),
    },
    Setting {
        key: "azure.account",
        kind: Kind::Text,
        env: Some("AZURE_STORAGE_ACCOUNT"),
        flag: None,
        meaning: "Azure storage account name.",
        apply: |cli, v| fill_text(&mut cli.global.azure_account, v),
    },
    Setting {
        key: "azure.key",
        kind: Kind::Secret,
        env: Some("AZURE_STORAGE_KEY"),
        flag: None,
        meaning: "Azure storage account key.",
        apply: |cli, v| fill_text(&mut cli.global.azure_key, v),
    },
    Setting {
        key: "gcs.credential_file",
        kind: Kind::File,
        env: Some("GOOGLE_APPLICATION_CREDENTIALS"),
        flag: None,
        meaning: "Google service-account JSON file.",
        apply: |cli, v| fill_path(&mut cli.global.gcs_credential_file, v),
    },
    Setting {
        key: "webdav.password",
        kind: Kind::Secret,
        env: Some("QVAULT_WEBDAV_PASSWORD"),
        flag: None,
        meaning: "WebDAV password (the user goes in the URL: webdav+https://user@host/path).",
        apply: |cli, v| fill_text(&mut cli.global.webdav_password, v),
    },
    Setting {
        key: "webdav.password_file",
        kind: Kind::File,
        env: Some("QVAULT_WEBDAV_PASSWORD_FILE"),
        flag: None,
        meaning: "File whose first line is the WebDAV password (a mounted secret).",
        apply: |cli, v| fill_path(&mut cli.global.webdav_password_file, v),
    },
    Setting {
        key: "qdrant.url",
        kind: Kind::Urls,
        env: Some("QVAULT_QDRANT_URL"),
        flag: Some("--qdrant"),
        meaning: "Qdrant REST URL for `backup` (when no other source is given; a list: every node \
                  of a cluster) and `qdrant snapshots`; never a restore target, which is always \
                  given on the command line.",
        apply: |cli, v| {
            let urls = v.list();
            // `qdrant snapshots …` talks to one node; a backup takes every node of a cluster.
            let one_node = matches!(cli.command, Command::Qdrant(_));
            let Some(conn) = qdrant_source(cli) else { return Ok(()) };
            if !conn.qdrant.is_empty() {
                return Ok(());
            }
            if one_node && urls.len() > 1 {
                return Err(format!(
                    "qdrant.url lists {} URLs, but this command reaches one node: give one",
                    urls.len()
                ));
            }
            conn.qdrant = urls;
            Ok(())
        },
    },
    Setting {
        key: "qdrant.api_key",
        kind: Kind::Secret,
        env: Some("QDRANT_API_KEY"),
        flag: Some("--api-key"),
        meaning: "Qdrant API key.",
        apply: |cli, v| {
            if let Some(conn) = qdrant_conn(cli) {
                fill_text(&mut conn.api_key, v)?;
            }
            Ok(())
        },
    },
    Setting {
        key: "qdrant.bearer",
        kind: Kind::Bool,
        env: None,
        flag: Some("--bearer"),
        meaning: "Send the API key as `Authorization: Bearer` (a JWT).",
        apply: |cli, v| match qdrant_conn(cli) {
            Some(conn) => fill_bool(&mut conn.bearer, v),
            None => Ok(()),
        },
    },
    Setting {
        key: "qdrant.ca_cert",
        kind: Kind::File,
        env: None,
        flag: Some("--ca-cert"),
        meaning: "PEM file with the CA certificate of a private TLS setup.",
        apply: |cli, v| match qdrant_conn(cli) {
            Some(conn) => fill_path(&mut conn.ca_cert, v),
            None => Ok(()),
        },
    },
    // After qdrant.url: these two apply only to a backup from Qdrant, known once the URL
    // is filled.
    Setting {
        key: "backup.collections",
        kind: Kind::Strings,
        env: None,
        flag: Some("--collection"),
        meaning: "Collections `backup --qdrant` snapshots when the command names none.",
        apply: |cli, v| {
            if let Command::Backup(a) = &mut cli.command {
                if !a.qdrant.qdrant.is_empty() && qdrant_scope_unset(a) {
                    a.collections = v.list();
                }
            }
            Ok(())
        },
    },
    Setting {
        key: "backup.all_collections",
        kind: Kind::Bool,
        env: None,
        flag: Some("--all-collections"),
        meaning: "`backup --qdrant` snapshots every collection when the command names none.",
        apply: |cli, v| {
            if let Command::Backup(a) = &mut cli.command {
                if !a.qdrant.qdrant.is_empty() && qdrant_scope_unset(a) {
                    fill_bool(&mut a.all_collections, v)?;
                }
            }
            Ok(())
        },
    },
    policy("forget.keep-last", "--keep-last", Kind::Count, "Keep the N newest backups."),
    policy(
        "forget.keep-hourly",
        "--keep-hourly",
        Kind::Count,
        "Keep the newest backup of each of N hours.",
    ),
    policy(
        "forget.keep-daily",
        "--keep-daily",
        Kind::Count,
        "Keep the newest backup of each of N days.",
    ),
    policy(
        "forget.keep-weekly",
        "--keep-weekly",
        Kind::Count,
        "Keep the newest backup of each of N ISO weeks.",
    ),
    policy(
        "forget.keep-monthly",
        "--keep-monthly",
        Kind::Count,
        "Keep the newest backup of each of N months.",
    ),
    policy(
        "forget.keep-yearly",
        "--keep-yearly",
        Kind::Count,
        "Keep the newest backup of each of N years.",
    ),
    policy(
        "forget.keep-within",
        "--keep-within",
        Kind::Duration,
        "Keep every backup within this of the newest.",
    ),
    policy(
        "forget.keep-within-hourly",
        "--keep-within-hourly",
        Kind::Duration,
        "One backup per hour within this.",
    ),
    policy(
        "forget.keep-within-daily",
        "--keep-within-daily",
        Kind::Duration,
        "One backup per day within this.",
    ),
    policy(
        "forget.keep-within-weekly",
        "--keep-within-weekly",
        Kind::Duration,
        "One backup per ISO week within this.",
    ),
    policy(
        "forget.keep-within-monthly",
        "--keep-within-monthly",
        Kind::Duration,
        "One backup per month within this.",
    ),
    policy(
        "forget.keep-within-yearly",
        "--keep-within-yearly",
        Kind::Duration,
        "One backup per year within this.",
    ),
    policy(
        "forget.keep-tag",
        "--keep-tag",
        Kind::StringArray,
        "Keep backups with these tags (key or key=value).",
    ),
    policy("forget.keep-name", "--keep-name", Kind::StringArray, "Keep backups with these names."),
    Setting {
        key: "forget.group-by",
        kind: Kind::Fields,
        env: None,
        flag: Some("--group-by"),
        meaning: "forget's grouping (default: group_by, then source,name,streams).",
        apply: |_, _| Ok(()),
    },
    Setting {
        key: "forget.time-zone",
        kind: Kind::Zone,
        env: Some("QVAULT_TIME_ZONE"),
        flag: Some("--time-zone"),
        meaning: "Zone of forget's calendar buckets: an IANA name, UTC or local (default UTC).",
        apply: |_, _| Ok(()),
    },
    Setting {
        key: "forget.groups",
        kind: Kind::GroupPolicies,
        env: None,
        flag: None,
        meaning: "`[forget.groups.\"<group key>\"]`: a policy (the forget.keep-* keys) that \
                  replaces forget's for one group, keyed as `forget --dry-run` prints it.",
        apply: |_, _| Ok(()),
    },
];

/// A `forget.keep-*` rule: read by `qvault forget` from the `[forget]` table as a whole
/// (flags replace the file's policy as a whole), so nothing to fill here.
const fn policy(
    key: &'static str,
    flag: &'static str,
    kind: Kind,
    meaning: &'static str,
) -> Setting {
    Setting { key, kind, env: None, flag: Some(flag), meaning, apply: |_, _| Ok(()) }
}

/// The setting with this dotted key.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Whether `key` is a table that holds settings (`s3`, `forget`).
pub fn is_section(key: &str) -> bool {
    SETTINGS.iter().any(|s| s.key.strip_prefix(key).is_some_and(|rest| rest.starts_with('.')))
}

/// The keys a `[forget.groups."…"]` policy may hold: the `forget.keep-*` rules.
pub fn group_policy_rule(key: &str) -> Option<&'static Setting> {
    find(&format!("forget.{key}")).filter(|_| key.starts_with("keep-"))
}

fn fill_text(slot: &mut Option<String>, v: &Value) -> Result<(), String> {
    if slot.as_deref().is_none_or(str::is_empty) {
        *slot = v.text().map(str::to_string);
    }
    Ok(())
}

fn fill_path(slot: &mut Option<PathBuf>, v: &Value) -> Result<(), String> {
    if slot.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
        *slot = v.text().map(PathBuf::from);
    }
    Ok(())
}

/// A switch: a flag can only turn it on, so the file's `true` applies when the flag is off.
fn fill_bool(slot: &mut bool, v: &Value) -> Result<(), String> {
    if let Value::Bool(b) = v {
        *slot |= *b;
    }
    Ok(())
}

fn short_duration(v: &Value) -> Option<RetentionDuration> {
    v.text().and_then(|t| RetentionDuration::parse_short(t).ok())
}

/// The Qdrant connection of a command that reads from Qdrant: `backup` with no other
/// source, `qdrant snapshots …`.
fn qdrant_source(cli: &mut Cli) -> Option<&mut crate::cli::qdrant::QdrantConnArgs> {
    match &mut cli.command {
        Command::Backup(a)
            if a.file.is_none() && a.stdin.is_none() && a.dir.is_none() && !a.from_command =>
        {
            Some(&mut a.qdrant)
        }
        Command::Qdrant(q) => Some(q.conn_mut()),
        _ => None,
    }
}

/// The Qdrant connection of any command that has one (credentials apply to all of them).
fn qdrant_conn(cli: &mut Cli) -> Option<&mut crate::cli::qdrant::QdrantConnArgs> {
    match &mut cli.command {
        Command::Restore(a) => Some(&mut a.qdrant),
        Command::Backup(a) => Some(&mut a.qdrant),
        Command::Qdrant(q) => Some(q.conn_mut()),
        _ => None,
    }
}

fn qdrant_scope_unset(a: &crate::cli::backup::BackupArgs) -> bool {
    a.collections.is_empty()
        && !a.all_collections
        && !a.full_storage
        && a.shards.is_empty()
        && a.snapshot.is_none()
}
