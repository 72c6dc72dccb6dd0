//! A retention policy, its durations, and the rules that keep one group's backups.
//!
//! Guarantees: a backup is kept if any rule keeps it, and every rule that keeps it is named;
//! the result depends only on the backups, the policy, `now` and the time zone.

use super::BackupInfo;
use crate::error::{Error, Result};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// A calendar length in restic's form `1y2m3w4d5h` (years, months, weeks, days, hours),
/// plus `mo` (months), `min` (minutes) and `s` (seconds).
///
/// Subtracted from a time in the policy's time zone, largest unit first: years and months
/// are calendar months (2026-03-31 minus `1m` is 2026-02-28, clamped to the month's end),
/// days are calendar days (23 or 25 hours across a DST change), hours, minutes and seconds
/// are exact.
///
/// Bare `m` is months, as restic reads it, only where restic's syntax is expected (the
/// keep-within rules, [`FromStr`]); where a short span is meant (RTO, `--max-age`),
/// [`RetentionDuration::parse_short`] refuses it, since `30m` there means minutes to a reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionDuration {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
}

impl RetentionDuration {
    fn span(&self) -> std::result::Result<Span, jiff::Error> {
        Span::new()
            .try_years(i64::from(self.years))?
            .try_months(i64::from(self.months))?
            .try_weeks(i64::from(self.weeks))?
            .try_days(i64::from(self.days))?
            .try_hours(i64::from(self.hours))?
            .try_minutes(i64::from(self.minutes))?
            .try_seconds(i64::from(self.seconds))
    }

    /// How many seconds this duration spans when counted back from `now` in UTC (months and
    /// years are calendar ones, so the answer depends on `now`).
    pub fn seconds_before(&self, now: Timestamp) -> i64 {
        now.as_second() - self.boundary(&now.to_zoned(jiff::tz::TimeZone::UTC)).as_second()
    }

    /// The first instant *not* within this duration before `anchor`: a backup is within
    /// when it is strictly later, as in restic (so `7d` of hourly backups is 168, not 169).
    pub fn boundary(&self, anchor: &Zoned) -> Timestamp {
        // Out of jiff's range (e.g. `9999y`) means "since forever".
        self.span()
            .and_then(|span| anchor.checked_sub(span))
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN)
    }

    /// Parses a duration where bare `m` would be read as minutes (an RTO, a maximum age):
    /// `30min`, `90s`, `2h`, `1d`, and `mo` for months; `30m` is refused as ambiguous.
    pub fn parse_short(s: &str) -> Result<Self> {
        parse(s, false)
    }

    /// [`RetentionDuration::parse_short`] for clap's `value_parser`.
    pub fn parse_short_arg(s: &str) -> std::result::Result<Self, String> {
        Self::parse_short(s).map_err(|e| e.message().to_string())
    }
}

impl FromStr for RetentionDuration {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse(s, true)
    }
}

/// Both syntaxes: `m_is_months` is restic's reading of a bare `m`; without it, `m` is refused.
fn parse(s: &str, m_is_months: bool) -> Result<RetentionDuration> {
    let bad = |why: &str| {
        let form = if m_is_months {
            "write it as restic does, e.g. 7d, 6m, 2y, 1y2m3d4h (y years, m or mo months, \
             w weeks, d days, h hours, min minutes, s seconds)"
        } else {
            "e.g. 30min, 90s, 2h, 1d, 1d12h (min minutes, s seconds, h hours, d days, w weeks, \
             mo months, y years)"
        };
        Error::invalid_input(format!("duration {s:?} {why}: {form}"))
    };
    let mut out = RetentionDuration::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(bad("ends in a number without a unit"));
        }
        let field = match unit {
            "y" => &mut out.years,
            "mo" => &mut out.months,
            "m" if m_is_months => &mut out.months,
            "m" => {
                return Err(bad(&format!(
                    "is ambiguous: write {digits}min for minutes or {digits}mo for months"
                )))
            }
            "w" => &mut out.weeks,
            "d" => &mut out.days,
            "h" => &mut out.hours,
            "min" => &mut out.minutes,
            "s" => &mut out.seconds,
            _ => return Err(bad(&format!("has the unknown unit {unit:?}"))),
        };
        if digits.is_empty() {
            return Err(bad(&format!("has no number before {unit:?}")));
        }
        // `m` and `mo` are one unit: months given twice either way.
        let canonical = if unit == "m" { "mo" } else { unit };
        if seen.contains(&canonical) {
            return Err(bad(&format!("gives {unit:?} twice")));
        }
        seen.push(canonical);
        *field = digits.parse().map_err(|_| bad("has a number that is too large"))?;
        rest = next;
    }
    if out == RetentionDuration::default() {
        return Err(bad("is empty or zero"));
    }
    Ok(out)
}

impl fmt::Display for RetentionDuration {
    /// Restic's form (`m` is months), with `min` and `s` for minutes and seconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.years, "y"),
            (self.months, "m"),
            (self.weeks, "w"),
            (self.days, "d"),
            (self.hours, "h"),
            (self.minutes, "min"),
            (self.seconds, "s"),
        ];
        for (n, unit) in parts.into_iter().filter(|(n, _)| *n > 0) {
            write!(f, "{n}{unit}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for RetentionDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RetentionDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A calendar bucket size for the `keep-<period>` and `keep-within-<period>` rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] =
        [Period::Hourly, Period::Daily, Period::Weekly, Period::Monthly, Period::Yearly];

    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket `t` falls in. Weeks are ISO weeks (2020-12-31 is in 2020-W53, 2027-01-01
    /// in 2026-W53). An hour carries its UTC offset: the hour a DST change repeats is two
    /// real hours with two backups to keep, not one.
    fn bucket(self, t: &Zoned) -> (i32, i32, i32, i32, i32) {
        let (y, m, d) = (i32::from(t.year()), i32::from(t.month()), i32::from(t.day()));
        match self {
            Period::Hourly => (y, m, d, i32::from(t.hour()), t.offset().seconds()),
            Period::Daily => (y, m, d, 0, 0),
            Period::Weekly => {
                let week = t.date().iso_week_date();
                (i32::from(week.year()), i32::from(week.week()), 0, 0, 0)
            }
            Period::Monthly => (y, m, 0, 0, 0),
            Period::Yearly => (y, 0, 0, 0, 0),
        }
    }
}

/// Why a backup is kept (or, with explicit ids, why it stays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// One of the `keep-last` newest.
    Last,
    /// The newest in one of the `keep-<period>` newest buckets.
    Every(Period),
    /// Within `keep-within` of the group's anchor time.
    Within,
    /// The newest in its bucket, within `keep-within-<period>`.
    WithinEvery(Period),
    /// Carries a tag `keep-tag` names (`key` or `key=value`).
    Tag(String),
    /// Has a name `keep-name` names.
    Name(String),
    /// The group has no policy: nothing in it is touched.
    NoPolicy,
    /// Explicit ids were given, and this is not one of them.
    NotListed,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last => f.write_str("last"),
            Reason::Every(p) => f.write_str(p.name()),
            Reason::Within => f.write_str("within"),
            Reason::WithinEvery(p) => write!(f, "within-{}", p.name()),
            Reason::Tag(t) => write!(f, "tag {t}"),
            Reason::Name(n) => write!(f, "name {n}"),
            Reason::NoPolicy => f.write_str("no policy"),
            Reason::NotListed => f.write_str("not listed"),
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which backups to keep. Counts of 0 and absent durations are rules not given.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_last: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_hourly: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_daily: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_weekly: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_monthly: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_yearly: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<RetentionDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<RetentionDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<RetentionDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<RetentionDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<RetentionDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<RetentionDuration>,
    /// `key` (the tag is present) or `key=value`.
    #[serde(rename = "keep-tag", skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    #[serde(rename = "keep-name", skip_serializing_if = "Vec::is_empty")]
    pub keep_names: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Policy {
    /// No rule at all: such a policy would keep nothing, so it is never applied.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    fn counts(&self) -> [(Period, u32); 5] {
        [
            (Period::Hourly, self.keep_hourly),
            (Period::Daily, self.keep_daily),
            (Period::Weekly, self.keep_weekly),
            (Period::Monthly, self.keep_monthly),
            (Period::Yearly, self.keep_yearly),
        ]
    }

    fn withins(&self) -> [(Period, Option<RetentionDuration>); 5] {
        [
            (Period::Hourly, self.keep_within_hourly),
            (Period::Daily, self.keep_within_daily),
            (Period::Weekly, self.keep_within_weekly),
            (Period::Monthly, self.keep_within_monthly),
            (Period::Yearly, self.keep_within_yearly),
        ]
    }

    /// The reasons each backup is kept, for one group sorted oldest first (by time, then
    /// id); an empty list means "remove".
    ///
    /// Durations count back from the group's anchor: its newest backup, or `now` if that
    /// is in the future. A stalled backup job thus never ages its last backups out, and a
    /// clock running ahead cannot push the window past backups that are really recent.
    pub(super) fn apply(
        &self,
        group: &[&BackupInfo],
        now: Timestamp,
        zone: &TimeZone,
    ) -> Vec<Vec<Reason>> {
        let mut reasons = vec![Vec::new(); group.len()];
        if self.is_empty() {
            reasons.iter_mut().for_each(|r| r.push(Reason::NoPolicy));
            return reasons;
        }
        let Some(newest) = group.last() else { return reasons };
        let anchor = newest.time.min(now).to_zoned(zone.clone());
        // Each boundary once: a zone-aware subtraction is not free over years of backups.
        let boundary = |d: Option<RetentionDuration>| d.map(|d| d.boundary(&anchor));
        let within = |boundary: Option<Timestamp>, t: Timestamp| boundary.is_some_and(|b| t > b);
        let keep_within = boundary(self.keep_within);
        let withins = self.withins().map(|(period, d)| (period, boundary(d)));
        let mut buckets: [HashSet<_>; 5] = Default::default();
        let mut within_buckets: [HashSet<_>; 5] = Default::default();
        // Newest first: each rule keeps the newest backup of a bucket.
        for (rank, (b, reasons)) in group.iter().zip(reasons.iter_mut()).rev().enumerate() {
            if rank < self.keep_last as usize {
                reasons.push(Reason::Last);
            }
            let local = b.time.to_zoned(zone.clone());
            for ((period, count), seen) in self.counts().into_iter().zip(&mut buckets) {
                let bucket = period.bucket(&local);
                if seen.len() < count as usize && !seen.contains(&bucket) {
                    seen.insert(bucket);
                    reasons.push(Reason::Every(period));
                }
            }
            if within(keep_within, b.time) {
                reasons.push(Reason::Within);
            }
            for (&(period, boundary), seen) in withins.iter().zip(&mut within_buckets) {
                if within(boundary, b.time) && seen.insert(period.bucket(&local)) {
                    reasons.push(Reason::WithinEvery(period));
                }
            }
            for tag in &self.keep_tags {
                let has = match tag.split_once('=') {
                    Some((k, v)) => b.tags.get(k).is_some_and(|have| have == v),
                    None => b.tags.contains_key(tag),
                };
                if has {
                    reasons.push(Reason::Tag(tag.clone()));
                }
            }
            if let Some(name) = b.name.as_ref().filter(|n| self.keep_names.contains(n)) {
                reasons.push(Reason::Name(name.clone()));
            }
        }
        reasons
    }
}

impl fmt::Display for Policy {
    /// As the flags that give it: `keep-within-hourly 7d, keep-last 3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.keep_last > 0 {
            parts.push(format!("keep-last {}", self.keep_last));
        }
        for (period, n) in self.counts().into_iter().filter(|(_, n)| *n > 0) {
            parts.push(format!("keep-{} {n}", period.name()));
        }
        if let Some(d) = self.keep_within {
            parts.push(format!("keep-within {d}"));
        }
        for (period, d) in self.withins() {
            if let Some(d) = d {
                parts.push(format!("keep-within-{} {d}", period.name()));
            }
        }
        parts.extend(self.keep_tags.iter().map(|t| format!("keep-tag {t}")));
        parts.extend(self.keep_names.iter().map(|n| format!("keep-name {n}")));
        if parts.is_empty() {
            return f.write_str("no rules");
        }
        f.write_str(&parts.join(", "))
    }
}
