//! Retention: which backups a policy keeps, and forgetting the others.
//!
//! ```text
//! ForgetOptions ─┐
//! backups ───────┼─► plan() ─► ForgetPlan ─► execute() ─► ForgetReport
//! now, zone ─────┘   (pure)    (printable)   (deletes backups/<id>)
//! ```
//!
//! Guarantees:
//! - [`plan`] is a pure function of (backups, options, now): the same input always gives the
//!   same plan, and `--dry-run` prints exactly what [`execute`] would do.
//! - Backups are grouped (by default by source, name and stream names) and each group gets
//!   its policy on its own; a backup is kept if any rule keeps it, and the plan names each rule.
//! - A policy that would remove every backup of a group is refused unless `allow_empty`;
//!   an empty policy is refused (it would say nothing), unless explicit ids are given.
//! - Forgetting removes manifests only: no chunk, pack or index file is touched, so it
//!   never loses data another backup needs. Space comes back with prune.
//!
//! The rules, time zones and grouping are described in docs/retention.md.

mod execute;
mod policy;
#[cfg(test)]
mod tests;

pub use execute::{execute, load_backups, ForgetReport, RemovalFailure};
pub use policy::{Period, Policy, Reason, RetentionDuration};

use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::Manifest;
use crate::id::BackupId;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// What retention needs to know of a backup (read from its manifest).
#[derive(Clone, Debug, PartialEq)]
pub struct BackupInfo {
    pub id: BackupId,
    pub time: Timestamp,
    pub host: String,
    pub name: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Stream names, sorted.
    pub streams: Vec<String>,
    /// The Qdrant URL the streams came from (a cluster's: its nodes' URLs, sorted, comma
    /// separated), else the host and what it read: `host:/abs/path` for files and
    /// directories, `host:command#<digest>` for a command's output, the host alone for stdin.
    pub source: String,
    /// Paths the backup's sources could not read and left out (`backup --dir`); 0 for a
    /// complete backup.
    pub unreadable: u64,
}

impl BackupInfo {
    pub fn from_manifest(id: BackupId, m: &Manifest) -> Result<BackupInfo> {
        let time = m.time.parse::<Timestamp>().map_err(|e| {
            Error::corrupt(format!(
                "backup {id} has the time {:?}, which is not RFC 3339 ({e}): forget it by id",
                m.time
            ))
        })?;
        let mut streams: Vec<String> = m.streams.iter().map(|s| s.name.clone()).collect();
        streams.sort();
        let qdrant_url = m.streams.iter().find_map(|s| {
            let source = s.source.as_ref()?;
            // A cluster backup reads each shard from whichever node has it that day: its
            // source is the cluster, every node given, not the node of its first shard.
            let nodes = source.get("topology").and_then(|t| t.get("nodes")?.as_array());
            if let Some(nodes) = nodes {
                let mut urls: Vec<&str> =
                    nodes.iter().filter_map(|n| n.get("url")?.as_str()).collect();
                urls.sort_unstable();
                return Some(urls.join(","));
            }
            source.get("qdrant")?.get("url")?.as_str().map(str::to_string)
        });
        let source = qdrant_url.unwrap_or_else(|| local_source(m));
        Ok(BackupInfo {
            id,
            time,
            host: m.host.clone(),
            name: m.name.clone(),
            tags: m.tags.clone(),
            streams,
            source,
            unreadable: m.unreadable_count(),
        })
    }
}

/// The source of a backup that read no Qdrant: the host, and each path or command it read.
/// Stream names alone are basenames and program names: `/a/x.snap` and `/b/x.snap`, or two
/// jobs running `curl`, would otherwise be one history, and forget would thin one job by
/// the other's backups. A command is named by a digest of its argv: command lines carry
/// tokens and URLs with passwords, and group keys reach logs and metric labels.
fn local_source(m: &Manifest) -> String {
    let mut origins: Vec<String> = m
        .streams
        .iter()
        .filter_map(|s| {
            let source = s.source.as_ref()?;
            if let Some(path) = source.get("path").and_then(|p| p.as_str()) {
                return Some(path.to_string());
            }
            let argv = source.get("command")?;
            let digest = blake3::hash(argv.to_string().as_bytes()).to_hex();
            Some(format!("command#{}", &digest[..8]))
        })
        .collect();
    origins.sort();
    origins.dedup();
    if origins.is_empty() {
        return m.host.clone();
    }
    format!("{}:{}", m.host, origins.join(","))
}

/// One property backups are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupField {
    /// The Qdrant URL of the streams, else the host.
    Source,
    Host,
    Name,
    Tags,
    /// The stream names (Qdrant collection or shard, file name, …).
    Streams,
}

/// The properties backups are grouped by; none puts every backup in one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupBy(pub BTreeSet<GroupField>);

impl Default for GroupBy {
    /// Source, name and stream names: one Qdrant's collection (or shard) is one history, and
    /// so is each named job. `forget`, `check`, `report`, `metrics` and `verify
    /// --restore-test` all start from this one default.
    fn default() -> Self {
        GroupBy([GroupField::Source, GroupField::Name, GroupField::Streams].into())
    }
}

impl FromStr for GroupBy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut fields = BTreeSet::new();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            fields.insert(match word {
                "source" => GroupField::Source,
                "host" => GroupField::Host,
                "name" => GroupField::Name,
                "tags" => GroupField::Tags,
                "streams" => GroupField::Streams,
                _ => {
                    return Err(Error::invalid_input(format!(
                        "cannot group by {word:?}: give a comma-separated list of source, host, \
                         name, tags, streams (or an empty string for one group)"
                    )))
                }
            });
        }
        Ok(GroupBy(fields))
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = self.0.iter().map(|g| g.word()).collect();
        f.write_str(&words.join(","))
    }
}

impl GroupField {
    fn word(self) -> &'static str {
        match self {
            GroupField::Source => "source",
            GroupField::Host => "host",
            GroupField::Name => "name",
            GroupField::Tags => "tags",
            GroupField::Streams => "streams",
        }
    }

    fn value(self, b: &BackupInfo) -> String {
        match self {
            GroupField::Source => b.source.clone(),
            GroupField::Host => b.host.clone(),
            GroupField::Name => b.name.clone().unwrap_or_else(|| "-".into()),
            GroupField::Tags => {
                let tags: Vec<String> = b.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                tags.join(",")
            }
            GroupField::Streams => b.streams.join(","),
        }
    }
}

/// A group's key as text, `source=http://qdrant:6333 name=nightly streams=products`: printed
/// by the plan, and what the config file's per-group policies are keyed by.
impl GroupBy {
    /// The group `b` belongs to, as `field=value` words (`all` with no fields).
    pub fn key(&self, b: &BackupInfo) -> String {
        group_key(self, b)
    }
}

fn group_key(group_by: &GroupBy, b: &BackupInfo) -> String {
    if group_by.0.is_empty() {
        return "all".into();
    }
    // An unnamed backup leaves `name` out of a key with other fields: its key is the one it
    // had before the default grouped by name, so per-group policies keep matching.
    let unnamed = b.name.is_none() && group_by.0.len() > 1;
    let parts: Vec<String> = group_by
        .0
        .iter()
        .filter(|g| !(unnamed && **g == GroupField::Name))
        .map(|g| format!("{}={}", g.word(), g.value(b)))
        .collect();
    parts.join(" ")
}

/// The knobs of `forget`.
#[derive(Clone, Debug)]
pub struct ForgetOptions {
    /// The policy of every group without its own.
    pub policy: Policy,
    /// Policies for single groups, by group key (as the plan prints it).
    pub group_policies: BTreeMap<String, Policy>,
    pub group_by: GroupBy,
    /// The zone calendar buckets and durations are counted in.
    pub time_zone: TimeZone,
    /// Let a policy remove every backup of a group.
    pub allow_empty: bool,
    /// Forget exactly these backups instead of applying a policy.
    pub ids: Vec<BackupId>,
}

impl Default for ForgetOptions {
    /// No policy, default grouping, UTC: the same plan whichever host computes it.
    fn default() -> Self {
        ForgetOptions {
            policy: Policy::default(),
            group_policies: BTreeMap::new(),
            group_by: GroupBy::default(),
            time_zone: TimeZone::UTC,
            allow_empty: false,
            ids: Vec::new(),
        }
    }
}

/// What `forget` would do: every backup, by group, with why it is kept, or "remove".
#[derive(Clone, Debug, serde::Serialize)]
pub struct ForgetPlan {
    #[serde(serialize_with = "display")]
    pub now: Timestamp,
    pub time_zone: String,
    #[serde(serialize_with = "display")]
    pub group_by: GroupBy,
    pub groups: Vec<GroupPlan>,
    /// Per-group policies whose group holds no backup (a typo, or a source retired).
    pub unmatched_group_policies: Vec<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupPlan {
    pub key: String,
    pub policy: Policy,
    /// Oldest first.
    pub backups: Vec<PlannedBackup>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PlannedBackup {
    pub id: BackupId,
    #[serde(serialize_with = "display")]
    pub time: Timestamp,
    /// The time in the plan's zone, as the buckets see it.
    pub local_time: String,
    pub name: Option<String>,
    /// Why it is kept; empty when it is removed.
    pub keep: Vec<Reason>,
    pub remove: bool,
}

fn display<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(value)
}

impl ForgetPlan {
    /// The backups to forget, oldest first within each group.
    pub fn removals(&self) -> Vec<BackupId> {
        self.groups.iter().flat_map(|g| &g.backups).filter(|b| b.remove).map(|b| b.id).collect()
    }

    pub fn kept_count(&self) -> usize {
        self.groups.iter().flat_map(|g| &g.backups).filter(|b| !b.remove).count()
    }
}

/// Decides the fate of every backup. Pure: `now` and the zone are inputs.
pub fn plan(backups: &[BackupInfo], options: &ForgetOptions, now: Timestamp) -> Result<ForgetPlan> {
    let has_policy = !options.policy.is_empty() || !options.group_policies.is_empty();
    if options.ids.is_empty() && !has_policy {
        return Err(Error::invalid_input(
            "no retention policy: give keep rules (--keep-last, --keep-daily, --keep-within-hourly, \
             …), a [forget] table in the config file, or the ids of the backups to forget",
        ));
    }
    if !options.ids.is_empty() && has_policy {
        return Err(Error::invalid_input(
            "give either backup ids or a retention policy, not both: ids are forgotten as given",
        ));
    }
    if let Some(missing) = options.ids.iter().find(|id| !backups.iter().any(|b| b.id == **id)) {
        return Err(Error::not_found(format!(
            "no backup {missing}: list them with `qvault backups`"
        )));
    }
    let mut groups: BTreeMap<String, Vec<&BackupInfo>> = BTreeMap::new();
    for b in backups {
        groups.entry(group_key(&options.group_by, b)).or_default().push(b);
    }
    let mut planned = Vec::new();
    let mut emptied = Vec::new();
    for (key, mut members) in groups {
        // Time, then id: two backups in the same instant still have one order.
        members.sort_by_key(|b| (b.time, b.id));
        let policy = options.group_policies.get(&key).unwrap_or(&options.policy).clone();
        let reasons = if options.ids.is_empty() {
            policy.apply(&members, now, &options.time_zone)
        } else {
            let listed = |b: &BackupInfo| options.ids.contains(&b.id);
            members
                .iter()
                .map(|b| if listed(b) { vec![] } else { vec![Reason::NotListed] })
                .collect()
        };
        let backups: Vec<PlannedBackup> = members
            .iter()
            .zip(reasons)
            .map(|(b, keep)| PlannedBackup {
                id: b.id,
                time: b.time,
                local_time: b
                    .time
                    .to_zoned(options.time_zone.clone())
                    .strftime("%Y-%m-%d %H:%M:%S%:z")
                    .to_string(),
                name: b.name.clone(),
                remove: keep.is_empty(),
                keep,
            })
            .collect();
        if options.ids.is_empty() && !options.allow_empty && backups.iter().all(|b| b.remove) {
            emptied.push(format!("{key} ({} backups; {policy})", backups.len()));
        }
        planned.push(GroupPlan { key, policy, backups });
    }
    if !emptied.is_empty() {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "the policy would remove every backup of {}: add a rule that keeps one \
                 (e.g. --keep-last 1), or pass --allow-empty if that is meant",
                emptied.join("; ")
            ),
        ));
    }
    let unmatched_group_policies = options
        .group_policies
        .keys()
        .filter(|k| !planned.iter().any(|g| &g.key == *k))
        .cloned()
        .collect();
    Ok(ForgetPlan {
        now,
        time_zone: zone_name(&options.time_zone),
        group_by: options.group_by.clone(),
        groups: planned,
        unmatched_group_policies,
    })
}

/// The zone's IANA name, else its fixed offset.
pub fn zone_name(zone: &TimeZone) -> String {
    match zone.iana_name() {
        Some(name) => name.to_string(),
        None => zone.to_offset(Timestamp::UNIX_EPOCH).to_string(),
    }
}

/// Parses `--time-zone`: an IANA name (`Europe/Berlin`), `UTC`, or `local` for the system's
/// zone (`TZ`, else /etc/localtime).
pub fn parse_time_zone(name: &str) -> Result<TimeZone> {
    match name {
        "local" => Ok(TimeZone::system()),
        "UTC" | "utc" => Ok(TimeZone::UTC),
        _ => TimeZone::get(name).map_err(|e| {
            Error::invalid_input(format!(
                "unknown time zone {name:?} ({e}): give an IANA name such as Europe/Berlin, UTC, \
                 or local"
            ))
        }),
    }
}
