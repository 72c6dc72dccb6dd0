//! `qvault report`: one entry per backup in its group, freshness against --max-age, and a
//! page that needs nothing from a network (rendered in Chromium by .ci/report-check.sh).

use crate::support::{backup_bytes, TestRepo};
use qvault::report::{build, html};
use qvault::retention::GroupBy;
use qvault_synth::pseudo_random;

#[tokio::test(flavor = "multi_thread")]
async fn each_group_lists_its_backups_oldest_first_with_freshness_against_max_age() {
    let dir = TestRepo::new(None).await;
    let repo = dir.open().await;
    let a1 = backup_bytes(&repo, "a.bin", pseudo_random(100_000, 1)).await;
    let a2 = backup_bytes(&repo, "a.bin", pseudo_random(100_000, 1)).await;
    let b1 = backup_bytes(&repo, "b.bin", pseudo_random(50_000, 2)).await;
    let latest: jiff::Timestamp = b1.manifest.time.parse().unwrap();

    let now = latest + jiff::SignedDuration::from_secs(600);
    let report = build(&repo, &GroupBy::default(), Some(300), now).await.unwrap();
    assert_eq!(report.backups, 3);
    assert_eq!(report.groups.len(), 2, "one group per stream name");
    let a = report.groups.iter().find(|g| g.key.contains("a.bin")).unwrap();
    let ids: Vec<_> = a.backups.iter().map(|b| b.id).collect();
    assert_eq!(ids, [a1.id, a2.id], "oldest first");
    assert_eq!(a.backups[1].dedup_ratio, None, "the unchanged backup added nothing");
    assert!(a.backups[0].bytes_added > 100_000);
    let b = report.groups.iter().find(|g| g.key.contains("b.bin")).unwrap();
    assert_eq!(b.latest_age_seconds, Some(600));
    assert_eq!(b.fresh, Some(false), "600 s old against a 300 s max age");
    let report = build(&repo, &GroupBy::default(), Some(900), now).await.unwrap();
    assert!(report.groups.iter().all(|g| g.fresh == Some(true)));

    let page = html(&report);
    assert_eq!(page.matches("class=\"point\"").count(), 3, "one point per backup");
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
}
