//! Retention at calendar edges: a table of (zone, now, backups, policy) → backups kept.

use super::*;
use crate::error::ErrorKind;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn info(n: u32, time: &str) -> BackupInfo {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&n.to_be_bytes());
    BackupInfo {
        id: BackupId(id),
        time: ts(time),
        host: "h".into(),
        name: None,
        tags: BTreeMap::new(),
        streams: vec!["products".into()],
        source: "http://qdrant:6333".into(),
        unreadable: 0,
    }
}

fn infos(times: &[&str]) -> Vec<BackupInfo> {
    times.iter().enumerate().map(|(i, t)| info(i as u32, t)).collect()
}

fn policy(text: &str) -> Policy {
    toml::from_str(text).unwrap()
}

fn options(policy: Policy, zone: &str) -> ForgetOptions {
    ForgetOptions { policy, time_zone: parse_time_zone(zone).unwrap(), ..Default::default() }
}

/// The times of the backups the plan keeps, as given.
fn kept(backups: &[BackupInfo], options: &ForgetOptions, now: &str) -> Vec<String> {
    let plan = plan(backups, options, ts(now)).unwrap();
    let removals = plan.removals();
    backups.iter().filter(|b| !removals.contains(&b.id)).map(|b| b.time.to_string()).collect()
}

struct Case {
    what: &'static str,
    zone: &'static str,
    now: &'static str,
    policy: &'static str,
    backups: &'static [&'static str],
    kept: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        what: "month ends: the newest of each of the last 3 months",
        zone: "UTC",
        now: "2026-04-01T00:00:00Z",
        policy: "keep-monthly = 3",
        backups: &[
            "2026-01-31T23:00:00Z",
            "2026-02-01T00:00:00Z",
            "2026-02-28T22:00:00Z",
            "2026-03-01T00:30:00Z",
            "2026-03-31T23:59:00Z",
        ],
        kept: &["2026-01-31T23:00:00Z", "2026-02-28T22:00:00Z", "2026-03-31T23:59:00Z"],
    },
    Case {
        what: "month ends in Berlin: 23:00Z on Jan 31 is February there, 23:59Z on Mar 31 April",
        zone: "Europe/Berlin",
        now: "2026-04-02T00:00:00Z",
        policy: "keep-monthly = 3",
        backups: &[
            "2026-01-31T23:00:00Z",
            "2026-02-01T00:00:00Z",
            "2026-02-28T22:00:00Z",
            "2026-03-01T00:30:00Z",
            "2026-03-31T23:59:00Z",
        ],
        kept: &["2026-02-28T22:00:00Z", "2026-03-01T00:30:00Z", "2026-03-31T23:59:00Z"],
    },
    Case {
        what: "leap day is a day of its own",
        zone: "UTC",
        now: "2024-03-02T00:00:00Z",
        policy: "keep-daily = 3",
        backups: &[
            "2024-02-28T12:00:00Z",
            "2024-02-29T01:00:00Z",
            "2024-02-29T23:00:00Z",
            "2024-03-01T00:00:00Z",
        ],
        kept: &["2024-02-28T12:00:00Z", "2024-02-29T23:00:00Z", "2024-03-01T00:00:00Z"],
    },
    Case {
        what: "a year before a leap day is Feb 28 (clamped), and the boundary itself is out",
        zone: "UTC",
        now: "2024-02-29T12:00:00Z",
        policy: "keep-within = \"1y\"",
        backups: &[
            "2023-02-28T12:00:00Z",
            "2023-02-28T12:00:01Z",
            "2023-03-01T00:00:00Z",
            "2024-02-29T12:00:00Z",
        ],
        kept: &["2023-02-28T12:00:01Z", "2023-03-01T00:00:00Z", "2024-02-29T12:00:00Z"],
    },
    Case {
        what: "2020-12-31 to 2021-01-03 are all ISO week 2020-W53; 2021-01-04 is 2021-W01",
        zone: "UTC",
        now: "2021-01-05T00:00:00Z",
        policy: "keep-weekly = 10",
        backups: &[
            "2020-12-31T12:00:00Z",
            "2021-01-01T12:00:00Z",
            "2021-01-03T12:00:00Z",
            "2021-01-04T12:00:00Z",
        ],
        kept: &["2021-01-03T12:00:00Z", "2021-01-04T12:00:00Z"],
    },
    Case {
        what: "2026-12-31 and 2027-01-01 share ISO week 2026-W53",
        zone: "UTC",
        now: "2027-01-05T00:00:00Z",
        policy: "keep-weekly = 10",
        backups: &[
            "2026-12-28T00:00:00Z",
            "2026-12-31T12:00:00Z",
            "2027-01-01T12:00:00Z",
            "2027-01-04T12:00:00Z",
        ],
        kept: &["2027-01-01T12:00:00Z", "2027-01-04T12:00:00Z"],
    },
    Case {
        what: "but not a calendar year",
        zone: "UTC",
        now: "2027-01-05T00:00:00Z",
        policy: "keep-yearly = 10",
        backups: &["2026-12-31T12:00:00Z", "2027-01-01T12:00:00Z"],
        kept: &["2026-12-31T12:00:00Z", "2027-01-01T12:00:00Z"],
    },
    Case {
        what: "2025-12-29 starts ISO week 2026-W01",
        zone: "UTC",
        now: "2026-01-05T00:00:00Z",
        policy: "keep-weekly = 5",
        backups: &["2025-12-28T12:00:00Z", "2025-12-29T12:00:00Z", "2026-01-04T12:00:00Z"],
        kept: &["2025-12-28T12:00:00Z", "2026-01-04T12:00:00Z"],
    },
    Case {
        what:
            "Berlin springs forward on 2026-03-29: 01:00Z is 03:00 CEST, one hour after 01:59 CET",
        zone: "Europe/Berlin",
        now: "2026-03-29T02:00:00Z",
        policy: "keep-hourly = 10",
        backups: &[
            "2026-03-29T00:00:00Z",
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
        ],
        kept: &["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"],
    },
    Case {
        what: "Berlin falls back on 2026-10-25: 02:30 CEST and 02:30 CET are two hours",
        zone: "Europe/Berlin",
        now: "2026-10-25T03:00:00Z",
        policy: "keep-hourly = 10",
        backups: &[
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:00:00Z",
        ],
        kept: &["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"],
    },
    Case {
        what: "the repeated hour counts twice against keep-hourly",
        zone: "Europe/Berlin",
        now: "2026-10-25T03:00:00Z",
        policy: "keep-hourly = 2",
        backups: &["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"],
        kept: &["2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"],
    },
    Case {
        what: "the 25-hour day is one day",
        zone: "Europe/Berlin",
        now: "2026-10-26T00:00:00Z",
        policy: "keep-daily = 2",
        backups: &[
            "2026-10-24T21:59:00Z",
            "2026-10-24T22:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T22:59:00Z",
        ],
        kept: &["2026-10-24T21:59:00Z", "2026-10-25T22:59:00Z"],
    },
    Case {
        what: "1d back across the fall-back is 25 hours",
        zone: "Europe/Berlin",
        now: "2026-10-25T11:00:00Z",
        policy: "keep-within = \"1d\"",
        backups: &["2026-10-24T10:00:00Z", "2026-10-24T10:30:00Z", "2026-10-25T11:00:00Z"],
        kept: &["2026-10-24T10:30:00Z", "2026-10-25T11:00:00Z"],
    },
    Case {
        what: "24h back across the fall-back is 24 hours",
        zone: "Europe/Berlin",
        now: "2026-10-25T11:00:00Z",
        policy: "keep-within = \"24h\"",
        backups: &["2026-10-24T10:30:00Z", "2026-10-24T11:00:01Z", "2026-10-25T11:00:00Z"],
        kept: &["2026-10-24T11:00:01Z", "2026-10-25T11:00:00Z"],
    },
    Case {
        what: "keep-within: exactly at the boundary is out, a millisecond later is in",
        zone: "UTC",
        now: "2026-06-10T00:00:00Z",
        policy: "keep-within = \"2d\"",
        backups: &["2026-06-08T00:00:00Z", "2026-06-08T00:00:00.001Z", "2026-06-10T00:00:00Z"],
        kept: &["2026-06-08T00:00:00.001Z", "2026-06-10T00:00:00Z"],
    },
    Case {
        what: "keep-within counts from the newest backup when backups stopped",
        zone: "UTC",
        now: "2026-12-31T00:00:00Z",
        policy: "keep-within = \"2d\"",
        backups: &["2026-06-01T00:00:00Z", "2026-06-08T12:00:00Z", "2026-06-10T00:00:00Z"],
        kept: &["2026-06-08T12:00:00Z", "2026-06-10T00:00:00Z"],
    },
    Case {
        what: "a backup from the future anchors nothing: durations count from now",
        zone: "UTC",
        now: "2026-06-01T00:00:00Z",
        policy: "keep-within = \"1d\"",
        backups: &["2026-05-30T23:00:00Z", "2026-05-31T12:00:00Z", "2026-06-05T00:00:00Z"],
        kept: &["2026-05-31T12:00:00Z", "2026-06-05T00:00:00Z"],
    },
    Case {
        what: "a backup from the future is the newest for keep-last",
        zone: "UTC",
        now: "2026-06-01T00:00:00Z",
        policy: "keep-last = 1",
        backups: &["2026-05-31T12:00:00Z", "2026-06-05T00:00:00Z"],
        kept: &["2026-06-05T00:00:00Z"],
    },
    Case {
        what: "keep-within-daily keeps the newest per day inside the window only",
        zone: "UTC",
        now: "2026-06-10T12:00:00Z",
        policy: "keep-within-daily = \"2d\"",
        backups: &[
            "2026-06-08T11:00:00Z",
            "2026-06-08T13:00:00Z",
            "2026-06-09T01:00:00Z",
            "2026-06-09T02:00:00Z",
            "2026-06-10T12:00:00Z",
        ],
        kept: &["2026-06-08T13:00:00Z", "2026-06-09T02:00:00Z", "2026-06-10T12:00:00Z"],
    },
];

#[test]
fn calendar_edges_table() {
    for case in CASES {
        let backups = infos(case.backups);
        let got = kept(&backups, &options(policy(case.policy), case.zone), case.now);
        let want: Vec<String> = case.kept.iter().map(|t| ts(t).to_string()).collect();
        assert_eq!(got, want, "{}", case.what);
    }
}

#[test]
fn two_backups_in_the_same_second_order_by_id_whatever_the_input_order() {
    let mut backups = vec![info(2, "2026-06-01T00:00:00Z"), info(1, "2026-06-01T00:00:00Z")];
    let options = options(policy("keep-last = 1"), "UTC");
    for _ in 0..2 {
        let plan = plan(&backups, &options, ts("2026-06-02T00:00:00Z")).unwrap();
        let ids: Vec<_> = plan.groups[0].backups.iter().map(|b| (b.id, b.remove)).collect();
        assert_eq!(
            ids,
            [
                (info(1, "2026-01-01T00:00:00Z").id, true),
                (info(2, "2026-01-01T00:00:00Z").id, false)
            ]
        );
        backups.reverse();
    }
}

#[test]
fn every_rule_that_keeps_a_backup_is_named() {
    let mut backups = infos(&["2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z"]);
    backups[0].tags.insert("release".into(), "1.2".into());
    backups[0].name = Some("before-upgrade".into());
    let options = options(
        policy(
            "keep-last = 1\nkeep-daily = 1\nkeep-within-hourly = \"1h\"\n\
             keep-tag = [\"release\", \"release=1.3\"]\nkeep-name = [\"before-upgrade\"]",
        ),
        "UTC",
    );
    // One history although only one is named: the default grouping now separates names.
    let options = ForgetOptions { group_by: "source,streams".parse().unwrap(), ..options };
    let plan = plan(&backups, &options, ts("2026-06-02T00:00:00Z")).unwrap();
    let reasons: Vec<_> = plan.groups[0].backups.iter().map(|b| b.keep.clone()).collect();
    assert_eq!(
        reasons,
        [
            vec![Reason::Tag("release".into()), Reason::Name("before-upgrade".into())],
            vec![Reason::Last, Reason::Every(Period::Daily), Reason::WithinEvery(Period::Hourly)],
        ]
    );
    let text: Vec<String> = reasons[1].iter().map(|r| r.to_string()).collect();
    assert_eq!(text, ["last", "daily", "within-hourly"]);
}

/// Qdrant's runbook policy: hourly for 7 days, daily for 30, weekly for 6 months, monthly for
/// 2 years, over three years of hourly backups (2023-12-01 to 2026-11-30 23:00 UTC).
#[test]
fn runbook_policy_on_three_years_of_hourly_backups_keeps_exact_counts() {
    let start = ts("2023-12-01T00:00:00Z");
    let backups: Vec<BackupInfo> = (0..26_304u32)
        .map(|h| BackupInfo {
            time: start + jiff::SignedDuration::from_hours(i64::from(h)),
            ..info(h, "2023-12-01T00:00:00Z")
        })
        .collect();
    assert_eq!(backups.last().unwrap().time, ts("2026-11-30T23:00:00Z"));
    let options = options(
        policy(
            "keep-within-hourly = \"7d\"\nkeep-within-daily = \"30d\"\n\
             keep-within-weekly = \"6m\"\nkeep-within-monthly = \"2y\"",
        ),
        "UTC",
    );
    let plan = plan(&backups, &options, ts("2026-12-01T00:10:00Z")).unwrap();
    let kept: Vec<&PlannedBackup> = plan.groups[0].backups.iter().filter(|b| !b.remove).collect();
    let by = |r: Reason| kept.iter().filter(|b| b.keep.contains(&r)).count();
    assert_eq!(by(Reason::WithinEvery(Period::Hourly)), 168);
    assert_eq!(by(Reason::WithinEvery(Period::Daily)), 30);
    // ISO weeks 2026-W22 (its Sunday, May 31) to 2026-W49 (Monday, Nov 30).
    assert_eq!(by(Reason::WithinEvery(Period::Weekly)), 28);
    // December 2024 to November 2026.
    assert_eq!(by(Reason::WithinEvery(Period::Monthly)), 24);
    assert_eq!(kept.len(), 235);
    assert_eq!(kept[0].time, ts("2024-12-31T23:00:00Z"));
}

#[test]
fn a_policy_that_empties_a_group_is_refused_unless_allowed() {
    let backups = infos(&["2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z"]);
    let mut options = options(policy("keep-tag = [\"keep\"]"), "UTC");
    let err = plan(&backups, &options, ts("2026-06-03T00:00:00Z")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(err.message().contains("every backup of source=http://qdrant:6333 streams=products"));
    assert!(err.message().contains("--allow-empty"));
    options.allow_empty = true;
    let plan = plan(&backups, &options, ts("2026-06-03T00:00:00Z")).unwrap();
    assert_eq!(plan.removals().len(), 2);
}

#[test]
fn an_empty_policy_is_refused_and_ids_exclude_a_policy() {
    let backups = infos(&["2026-06-01T00:00:00Z"]);
    let now = ts("2026-06-03T00:00:00Z");
    let err = plan(&backups, &ForgetOptions::default(), now).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().starts_with("no retention policy"));
    let both = ForgetOptions {
        policy: policy("keep-last = 1"),
        ids: vec![backups[0].id],
        ..Default::default()
    };
    assert_eq!(plan(&backups, &both, now).unwrap_err().kind(), ErrorKind::InvalidInput);
    let unknown =
        ForgetOptions { ids: vec![info(9, "2026-01-01T00:00:00Z").id], ..Default::default() };
    assert_eq!(plan(&backups, &unknown, now).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn explicit_ids_remove_exactly_those_even_the_last_of_a_group() {
    let backups = infos(&["2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z"]);
    let mut backups = backups;
    backups[1].streams = vec!["users".into()];
    let options = ForgetOptions { ids: vec![backups[1].id], ..Default::default() };
    let plan = plan(&backups, &options, ts("2026-06-03T00:00:00Z")).unwrap();
    assert_eq!(plan.removals(), [backups[1].id]);
    assert_eq!(plan.groups[0].backups[0].keep, [Reason::NotListed]);
}

#[test]
fn groups_default_to_source_and_streams_and_take_their_own_policy() {
    let mut backups = infos(&[
        "2026-06-01T00:00:00Z",
        "2026-06-02T00:00:00Z",
        "2026-06-01T00:00:00Z",
        "2026-06-02T00:00:00Z",
    ]);
    backups[2].streams = vec!["users".into()];
    backups[3].streams = vec!["users".into()];
    backups[3].host = "other".into();
    let mut opts = options(policy("keep-last = 1"), "UTC");
    opts.group_policies
        .insert("source=http://qdrant:6333 streams=users".into(), policy("keep-last = 2"));
    opts.group_policies.insert("source=typo streams=users".into(), policy("keep-last = 2"));
    let now = ts("2026-06-03T00:00:00Z");
    let p = plan(&backups, &opts, now).unwrap();
    let keys: Vec<&str> = p.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(
        keys,
        ["source=http://qdrant:6333 streams=products", "source=http://qdrant:6333 streams=users"]
    );
    assert_eq!(p.removals(), [backups[0].id]);
    assert_eq!(p.unmatched_group_policies, ["source=typo streams=users"]);

    opts.group_by = "host".parse().unwrap();
    let p = plan(&backups, &opts, now).unwrap();
    let keys: Vec<&str> = p.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(keys, ["host=h", "host=other"]);
    assert_eq!(p.removals(), [backups[0].id, backups[2].id]);
    opts.group_by = "".parse().unwrap();
    assert_eq!(plan(&backups, &opts, now).unwrap().groups[0].key, "all");
    let err = "host,colour".parse::<GroupBy>().unwrap_err();
    assert!(err.message().starts_with("cannot group by \"colour\""));
}

#[test]
fn the_source_is_the_qdrant_url_else_the_host() {
    let manifest = |source: Option<serde_json::Value>| Manifest {
        time: "2026-06-01T00:00:00.000Z".into(),
        name: None,
        tags: BTreeMap::new(),
        host: "backup-host".into(),
        tool_version: "t".into(),
        streams: vec![crate::format::manifest::StreamRecord {
            name: "products".into(),
            kind: crate::format::manifest::StreamKind::QdrantCollection,
            size: 0,
            sha256: String::new(),
            blake3: String::new(),
            chunks: vec![],
            list: None,
            source,
            unreadable: None,
        }],
        summary: Default::default(),
    };
    let id = info(1, "2026-06-01T00:00:00Z").id;
    let url = serde_json::json!({"qdrant": {"url": "http://qdrant:6333"}});
    assert_eq!(
        BackupInfo::from_manifest(id, &manifest(Some(url))).unwrap().source,
        "http://qdrant:6333"
    );
    assert_eq!(BackupInfo::from_manifest(id, &manifest(None)).unwrap().source, "backup-host");
    // A cluster backup: the same source whichever node gave its first shard.
    let cluster = serde_json::json!({"qdrant": {"url": "http://q1:6333"},
        "topology": {"nodes": [{"url": "http://q1:6333"}, {"url": "http://q0:6333", "down": "x"}]}});
    assert_eq!(
        BackupInfo::from_manifest(id, &manifest(Some(cluster))).unwrap().source,
        "http://q0:6333,http://q1:6333"
    );
    let mut bad = manifest(None);
    bad.time = "yesterday".into();
    assert_eq!(BackupInfo::from_manifest(id, &bad).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn durations_parse_as_restic_writes_them() {
    let d: RetentionDuration = "1y2m3w4d5h".parse().unwrap();
    assert_eq!(
        d,
        RetentionDuration {
            years: 1,
            months: 2,
            weeks: 3,
            days: 4,
            hours: 5,
            minutes: 0,
            seconds: 0
        }
    );
    assert_eq!(d.to_string(), "1y2m3w4d5h");
    assert_eq!("6m".parse::<RetentionDuration>().unwrap().to_string(), "6m");
    for bad in ["", "5", "d", "1x", "1d1d", "0d", "99999999999d"] {
        let err = bad.parse::<RetentionDuration>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        assert!(err.message().contains("1y2m3d4h"), "{bad}");
    }
    let huge = options(policy("keep-within = \"9999y\""), "UTC");
    let backups = infos(&["1990-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]);
    assert_eq!(kept(&backups, &huge, "2026-01-02T00:00:00Z").len(), 2);
}

#[test]
fn short_durations_take_minutes_and_seconds_and_refuse_a_bare_m() {
    // The README's `rto = "30m"` read as 30 months: where a short span is meant, `m` is
    // refused instead of silently meaning months.
    let err = RetentionDuration::parse_short("30m").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.message().contains("is ambiguous: write 30min for minutes or 30mo for months"),
        "{}",
        err.message()
    );
    let now: Timestamp = "2026-11-30T06:00:00Z".parse().unwrap();
    let thirty = RetentionDuration::parse_short("30min").unwrap();
    assert_eq!(thirty.seconds_before(now), 1800);
    assert_eq!(thirty.to_string(), "30min");
    assert_eq!(RetentionDuration::parse_short("1h30min15s").unwrap().seconds_before(now), 5415);
    assert_eq!(RetentionDuration::parse_short("90s").unwrap().seconds_before(now), 90);
    assert_eq!(RetentionDuration::parse_short("2mo").unwrap().months, 2);
    // Restic's syntax keeps `m` as months, and takes the new units too.
    assert_eq!("6m".parse::<RetentionDuration>().unwrap().months, 6);
    assert_eq!("6mo".parse::<RetentionDuration>().unwrap().months, 6);
    assert_eq!("45min".parse::<RetentionDuration>().unwrap().minutes, 45);
    for bad in ["1m1mo", "5min5min", "1mi", "min"] {
        let err = bad.parse::<RetentionDuration>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
    }
}

#[test]
fn policies_print_as_their_flags_and_zones_by_name() {
    let p = policy("keep-last = 3\nkeep-within-hourly = \"7d\"\nkeep-tag = [\"a=b\"]");
    assert_eq!(p.to_string(), "keep-last 3, keep-within-hourly 7d, keep-tag a=b");
    assert_eq!(Policy::default().to_string(), "no rules");
    assert!(toml::from_str::<Policy>("keep-lats = 3").is_err());
    assert_eq!(zone_name(&parse_time_zone("Europe/Berlin").unwrap()), "Europe/Berlin");
    let err = parse_time_zone("Mars/Olympus").unwrap_err();
    assert!(err.message().starts_with("unknown time zone \"Mars/Olympus\""));
}
