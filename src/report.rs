//! The repository at a glance: per group of backups, what each backup stored and added over
//! time, how fresh the latest one is, when it was last verified and restore-tested (and how
//! long that restore took against the recovery time objective), and what the repository
//! holds in total. Verify and restore-test results come from the operation log
//! ([`crate::oplog`]); records with fields this version does not know are read all the same.
//!
//! [`build`] collects a [`Report`] (Serialize: `qvault report --json`); [`html`] renders it
//! as one self-contained page (inline SVG, no script, nothing fetched from a network) for
//! `qvault report --html OUT`.

use crate::error::Result;
use crate::id::BackupId;
use crate::repo::Repository;
use crate::retention::{BackupInfo, GroupBy};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One backup as the report shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReportBackup {
    pub id: BackupId,
    /// RFC 3339 UTC.
    pub time: String,
    /// Bytes in its streams.
    pub bytes: u64,
    /// Bytes it added to the repository (packs and index files).
    pub bytes_added: u64,
    /// Bytes read per byte added; `None` when it added nothing.
    pub dedup_ratio: Option<f64>,
    pub duration_seconds: f64,
    /// Paths its sources could not read and left out (`backup --dir`): 0 when complete.
    pub unreadable: u64,
}

/// One verify or restore-test run as it concerned a group.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckRun {
    /// When it started: RFC 3339 UTC.
    pub time: String,
    /// What it was asked (`structure`, `read-data-subset 1/7`, `restore-test`).
    pub what: String,
    /// Whether it found every backup of the group it checked restorable.
    pub passed: bool,
    /// How long the run took. For a restore test this is the recovery time measured: the
    /// whole run's, which covers every group it tested.
    pub duration_seconds: f64,
}

/// One group of backups (the retention grouping: source, name and stream names by default).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReportGroup {
    pub key: String,
    /// Oldest first.
    pub backups: Vec<ReportBackup>,
    /// Seconds since the latest backup started, at the time of the report.
    pub latest_age_seconds: Option<i64>,
    /// Whether the latest backup is younger than the report's `max_age`.
    pub fresh: Option<bool>,
    /// The newest verify (other than a restore test) that checked a backup of the group.
    pub last_verify: Option<CheckRun>,
    /// When the newest verify that passed started.
    pub last_verify_success: Option<String>,
    /// The newest restore test of a backup of the group.
    pub last_restore_test: Option<CheckRun>,
    /// When the newest restore test that passed started.
    pub last_restore_test_success: Option<String>,
    /// Whether the last restore test passed within the report's `rto_seconds`.
    pub rto_met: Option<bool>,
}

/// What [`build_with`] reports on.
#[derive(Clone, Debug, Default)]
pub struct ReportOptions {
    pub group_by: GroupBy,
    /// A group is fresh when its latest backup is at most this old.
    pub max_age_seconds: Option<i64>,
    /// The recovery time objective restore tests are held to.
    pub rto_seconds: Option<i64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub repository: String,
    /// RFC 3339 UTC.
    pub generated: String,
    pub backups: usize,
    /// Sum of every backup's stream bytes.
    pub original_bytes: u64,
    /// The repository's packs, as `qvault stats` counts them ([`crate::stats::stored_bytes`]).
    pub stored_bytes: u64,
    pub max_age_seconds: Option<i64>,
    /// The recovery time objective, when one was given.
    pub rto_seconds: Option<i64>,
    pub groups: Vec<ReportGroup>,
}

/// Reads every manifest (one pass) and groups the backups by `group_by`. `max_age` (seconds)
/// marks each group fresh or stale; `now` is injected so a report is reproducible.
pub async fn build(
    repo: &Repository,
    group_by: &GroupBy,
    max_age_seconds: Option<i64>,
    now: jiff::Timestamp,
) -> Result<Report> {
    let options = ReportOptions { group_by: group_by.clone(), max_age_seconds, rto_seconds: None };
    build_with(repo, &options, now).await
}

/// [`build`] with every option, and the verify and restore-test history from the operation
/// log.
pub async fn build_with(
    repo: &Repository,
    options: &ReportOptions,
    now: jiff::Timestamp,
) -> Result<Report> {
    let (group_by, max_age_seconds) = (&options.group_by, options.max_age_seconds);
    let log = crate::oplog::read(repo).await?;
    let mut groups: BTreeMap<String, Vec<(jiff::Timestamp, ReportBackup)>> = BTreeMap::new();
    let mut report = Report {
        repository: repo.storage().location().to_string(),
        generated: now.to_string(),
        backups: 0,
        original_bytes: 0,
        stored_bytes: crate::stats::stored_bytes(repo).await?,
        max_age_seconds,
        rto_seconds: options.rto_seconds,
        groups: Vec::new(),
    };
    for listing in repo.backups()? {
        let manifest = repo.read_manifest(listing.id).await?;
        let info = BackupInfo::from_manifest(listing.id, &manifest)?;
        let s = &manifest.summary;
        let backup = ReportBackup {
            id: listing.id,
            time: manifest.time.clone(),
            bytes: manifest.total_size(),
            bytes_added: s.bytes_added,
            dedup_ratio: (s.bytes_added > 0).then(|| s.bytes_read as f64 / s.bytes_added as f64),
            duration_seconds: s.duration_ms as f64 / 1000.0,
            unreadable: info.unreadable,
        };
        report.backups += 1;
        report.original_bytes += backup.bytes;
        groups.entry(group_by.key(&info)).or_default().push((info.time, backup));
    }
    for (key, mut backups) in groups {
        backups.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
        let latest_age_seconds = backups.last().map(|(t, _)| now.as_second() - t.as_second());
        let fresh = max_age_seconds.zip(latest_age_seconds).map(|(max, age)| age <= max);
        let ids: Vec<BackupId> = backups.iter().map(|(_, b)| b.id).collect();
        let verifies = runs(&log, &ids, false);
        let tests = runs(&log, &ids, true);
        let last_restore_test = tests.last().cloned();
        let rto_met = options
            .rto_seconds
            .zip(last_restore_test.as_ref())
            .map(|(rto, run)| run.passed && run.duration_seconds <= rto as f64);
        report.groups.push(ReportGroup {
            key,
            backups: backups.into_iter().map(|(_, b)| b).collect(),
            latest_age_seconds,
            fresh,
            last_verify: verifies.last().cloned(),
            last_verify_success: last_success(&verifies),
            last_restore_test,
            last_restore_test_success: last_success(&tests),
            rto_met,
        });
    }
    Ok(report)
}

/// The verify runs (or the restore tests) that checked any of `ids`, oldest first: each
/// passed when it found every one of them it checked restorable.
///
/// A restore test's duration is the group's recovery time: the restores of `ids`' streams
/// as the record's `restore_times` give them (a run covers every group, so its own
/// duration would charge each group for all of them); records without them fall back to
/// the whole run's duration.
fn runs(log: &[crate::oplog::LogEntry], ids: &[BackupId], restore_tests: bool) -> Vec<CheckRun> {
    log.iter()
        .filter(|e| e.record.is_restore_test() == restore_tests)
        .filter_map(|e| {
            let r = &e.record;
            let verdicts: Vec<bool> = ids.iter().filter_map(|id| r.verdict(id)).collect();
            let restores: Vec<u64> = r
                .restore_times
                .iter()
                .filter(|t| ids.contains(&t.backup))
                .map(|t| t.restore_ms)
                .collect();
            let ms = if restores.is_empty() { r.duration_ms } else { restores.iter().sum() };
            (!verdicts.is_empty()).then(|| CheckRun {
                time: r.time.clone(),
                what: r.what.clone(),
                passed: verdicts.iter().all(|v| *v),
                duration_seconds: ms as f64 / 1000.0,
            })
        })
        .collect()
}

fn last_success(runs: &[CheckRun]) -> Option<String> {
    runs.iter().rev().find(|r| r.passed).map(|r| r.time.clone())
}

/// Chart geometry (SVG user units).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const PAD: f64 = 48.0;

/// The report as one self-contained HTML page: a table and a plot per group, one point
/// (`<circle class="point">`) per backup for the bytes it added.
pub fn html(report: &Report) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>qvault report: {repo}</title><style>{STYLE}</style></head><body>\
         <h1>qvault report</h1><p class=\"meta\">{repo} · generated {generated} · {n} backups · \
         {orig} original, {stored} stored</p>",
        repo = escape(&report.repository),
        generated = escape(&report.generated),
        n = report.backups,
        orig = human_bytes(report.original_bytes),
        stored = human_bytes(report.stored_bytes),
    );
    if report.groups.is_empty() {
        page.push_str("<p>No backups yet.</p>");
    }
    for group in &report.groups {
        let status = match group.fresh {
            Some(true) => "<span class=\"ok\">fresh</span>",
            Some(false) => "<span class=\"bad\">STALE</span>",
            None => "",
        };
        let age = group.latest_age_seconds.map(age_text).unwrap_or_default();
        let _ = write!(
            page,
            "<section class=\"group\"><h2>{key}</h2><p>{count} backups · latest {age} ago {status}</p>\
             <p class=\"checks\">{checks}</p>",
            key = escape(&group.key),
            count = group.backups.len(),
            checks = checks_html(group, report.rto_seconds),
        );
        page.push_str(&plot(&group.backups));
        page.push_str(
            "<table><thead><tr><th>time</th><th>id</th><th>size</th><th>added</th>\
             <th>dedup</th><th>seconds</th></tr></thead><tbody>",
        );
        for b in group.backups.iter().rev() {
            let ratio = b.dedup_ratio.map_or_else(|| "n/a".into(), |r| format!("{r:.1}×"));
            let incomplete = if b.unreadable == 0 {
                String::new()
            } else {
                let paths = count_of(b.unreadable, "path");
                format!(" <span class=\"bad\">INCOMPLETE: {paths} left out</span>")
            };
            let _ = write!(
                page,
                "<tr><td>{}</td><td><code>{}</code>{incomplete}</td><td>{}</td><td>{}</td>\
                 <td>{ratio}</td><td>{:.1}</td></tr>",
                escape(&b.time),
                b.id.short(),
                human_bytes(b.bytes),
                human_bytes(b.bytes_added),
                b.duration_seconds
            );
        }
        page.push_str("</tbody></table></section>");
    }
    page.push_str("</body></html>\n");
    page
}

/// The last verify and restore test of a group, and the recovery time against the RTO.
fn checks_html(group: &ReportGroup, rto_seconds: Option<i64>) -> String {
    let verdict = |passed: bool| {
        if passed {
            "<span class=\"ok\">passed</span>"
        } else {
            "<span class=\"bad\">FAILED</span>"
        }
    };
    let verify = match &group.last_verify {
        Some(v) => {
            format!("last verify {} ({}) {}", escape(&v.time), escape(&v.what), verdict(v.passed))
        }
        None => "<span class=\"bad\">never verified</span>".to_string(),
    };
    let test = match &group.last_restore_test {
        Some(t) => format!(
            "last restore test {} {}, recovery time {:.1} s",
            escape(&t.time),
            verdict(t.passed),
            t.duration_seconds
        ),
        None => "never restore-tested".to_string(),
    };
    let rto = match (rto_seconds, group.rto_met) {
        (Some(rto), Some(true)) => {
            format!(" <span class=\"ok\">within the RTO of {}</span>", age_text(rto))
        }
        (Some(rto), Some(false)) if group.last_restore_test.as_ref().is_some_and(|t| !t.passed) => {
            format!(
                " <span class=\"bad\">the RTO of {} is not met: the restore failed</span>",
                age_text(rto)
            )
        }
        (Some(rto), Some(false)) => {
            format!(" <span class=\"bad\">MISSES the RTO of {}</span>", age_text(rto))
        }
        (Some(rto), None) => format!(" (RTO {}: untested)", age_text(rto)),
        (None, _) => String::new(),
    };
    format!("{verify} · {test}{rto}")
}

/// Bytes added per backup over its position in time: a polyline with one circle per backup.
fn plot(backups: &[ReportBackup]) -> String {
    let max = backups.iter().map(|b| b.bytes_added).max().unwrap_or(0).max(1) as f64;
    let step =
        if backups.len() > 1 { (WIDTH - 2.0 * PAD) / (backups.len() - 1) as f64 } else { 0.0 };
    let points: Vec<(f64, f64)> = backups
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let x = PAD + step * i as f64;
            let y = HEIGHT - PAD - (HEIGHT - 2.0 * PAD) * (b.bytes_added as f64 / max);
            (x, y)
        })
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"plot\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"bytes added per backup\"><line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" \
         class=\"axis\"/><line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" class=\"axis\"/>\
         <text x=\"4\" y=\"{t}\">{top}</text><text x=\"4\" y=\"{b}\">0</text>",
        b = HEIGHT - PAD,
        r = WIDTH - PAD,
        t = PAD + 4.0,
        top = human_bytes(max as u64),
    );
    let line: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(svg, "<polyline points=\"{}\" class=\"line\"/>", line.join(" "));
    for ((x, y), b) in points.iter().zip(backups) {
        let _ = write!(
            svg,
            "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\"><title>{} added {}</title>\
             </circle>",
            escape(&b.time),
            human_bytes(b.bytes_added)
        );
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
h1{margin-bottom:0}.meta{color:#666}.group{margin:2em 0}\
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}\
td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#f4f4f4}\
.plot{width:100%;max-width:720px;height:auto}.axis{stroke:#999}\
.line{fill:none;stroke:#3367d6;stroke-width:2}.point{fill:#3367d6}\
.ok{color:#137333;font-weight:bold}.bad{color:#c5221f;font-weight:bold}text{font-size:11px;fill:#666}";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `n` things for people: `1 path`, `2 paths` (`noun` takes an `s`).
pub fn count_of(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// What `show`, `check` and a backup's exit-10 error say about `n` paths a backup left out.
pub fn unreadable_paths(n: u64) -> String {
    let were = if n == 1 { "was" } else { "were" };
    format!("{} could not be read and {were} left out", count_of(n, "path"))
}

/// `n` bytes for people: `512 B`, `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn age_text(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// The report in Prometheus text format (for node_exporter's textfile collector): per group
/// the latest backup's time, duration and bytes, and the repository's totals. Names follow
/// Prometheus conventions, units in the name.
pub fn prometheus(report: &Report) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let repo = label_value(&crate::redact::url(&report.repository));
    // `field:value` words: some text-format parsers split label values on `=`.
    let group_labels = |g: &ReportGroup| {
        format!("{{repository=\"{repo}\",group=\"{}\"}}", label_value(&g.key.replace('=', ":")))
    };
    let checks = |f: &dyn Fn(&ReportGroup) -> Option<f64>| -> Vec<(String, f64)> {
        report.groups.iter().filter_map(|g| Some((group_labels(g), f(g)?))).collect()
    };
    let per_group = |f: &dyn Fn(&ReportBackup) -> f64| checks(&|g| Some(f(g.backups.last()?)));
    let time = |b: &ReportBackup| {
        b.time.parse::<jiff::Timestamp>().map(|t| t.as_second() as f64).unwrap_or(f64::NAN)
    };
    // An incomplete backup (paths left out) is not a success: an alert on this age fires
    // when every recent backup of the group misses files.
    family(
        "qvault_backup_last_success_timestamp_seconds",
        "gauge",
        "When the group's latest complete backup started (Unix time).",
        checks(&|g| g.backups.iter().rev().find(|b| b.unreadable == 0).map(time)),
    );
    family(
        "qvault_backup_last_unreadable_paths",
        "gauge",
        "Paths the group's latest backup could not read and left out (0: complete).",
        per_group(&|b| b.unreadable as f64),
    );
    family(
        "qvault_backup_last_duration_seconds",
        "gauge",
        "How long the group's latest backup took.",
        per_group(&|b| b.duration_seconds),
    );
    family(
        "qvault_backup_last_size_bytes",
        "gauge",
        "Bytes in the streams of the group's latest backup.",
        per_group(&|b| b.bytes as f64),
    );
    family(
        "qvault_backup_last_added_bytes",
        "gauge",
        "Bytes the group's latest backup added to the repository.",
        per_group(&|b| b.bytes_added as f64),
    );
    let timestamp = |t: &str| t.parse::<jiff::Timestamp>().ok().map(|t| t.as_second() as f64);
    let success = |passed: bool| if passed { 1.0 } else { 0.0 };
    family(
        "qvault_verify_last_success_timestamp_seconds",
        "gauge",
        "When the newest verify that found the group's backups restorable started (Unix time).",
        checks(&|g| timestamp(g.last_verify_success.as_deref()?)),
    );
    family(
        "qvault_verify_last_run_success",
        "gauge",
        "Whether the newest verify of the group's backups passed (1) or not (0).",
        checks(&|g| Some(success(g.last_verify.as_ref()?.passed))),
    );
    family(
        "qvault_restore_test_last_success_timestamp_seconds",
        "gauge",
        "When the newest restore test that passed for the group started (Unix time).",
        checks(&|g| timestamp(g.last_restore_test_success.as_deref()?)),
    );
    family(
        "qvault_restore_test_last_run_success",
        "gauge",
        "Whether the newest restore test of the group passed (1) or not (0).",
        checks(&|g| Some(success(g.last_restore_test.as_ref()?.passed))),
    );
    family(
        "qvault_restore_test_duration_seconds",
        "gauge",
        "Recovery time: how long the newest restore test of the group took.",
        checks(&|g| Some(g.last_restore_test.as_ref()?.duration_seconds)),
    );
    let total = format!("{{repository=\"{repo}\"}}");
    family(
        "qvault_repository_backups",
        "gauge",
        "Backups in the repository.",
        vec![(total.clone(), report.backups as f64)],
    );
    family(
        "qvault_repository_stored_bytes",
        "gauge",
        "Bytes of the repository's packs, as qvault stats counts them.",
        vec![(total.clone(), report.stored_bytes as f64)],
    );
    family(
        "qvault_repository_original_bytes",
        "gauge",
        "Bytes in all backups' streams, before dedup and compression.",
        vec![(total, report.original_bytes as f64)],
    );
    out
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
