//! `verify --read-data-subset`: which packs each tier decrypts, that parts cover everything,
//! and that every problem names the backups it affects.

use crate::support::{self, backup_bytes, TestRepo};
use age::secrecy::ExposeSecret;
use age::x25519;
use qvault::format::config::ChunkerConfig;
use qvault::id::PackId;
use qvault::repo::{InitOptions, Repository};
use qvault::verify::{verify, DataSubset, Inventory, VerifyOptions};
use qvault::ErrorKind;
use qvault_synth::pseudo_random;
use std::collections::HashSet;

fn small_chunks() -> ChunkerConfig {
    ChunkerConfig {
        min_size: 1024,
        avg_size: 4096,
        max_size: 16384,
        tar_threshold: 4096,
        ..Default::default()
    }
}

/// A filesystem test repository with small chunks and packs.
async fn small_repo() -> TestRepo {
    let t = TestRepo { dir: tempfile::tempdir().unwrap(), identity: x25519::Identity::generate() };
    let options = InitOptions {
        recipients: vec![t.identity.to_public()],
        chunker: Some(small_chunks()),
        pack_size: Some(64 * 1024),
        ..Default::default()
    };
    Repository::init(t.storage(), options, &t.cache()).await.unwrap();
    std::fs::write(t.identity_path(), t.identity.to_string().expose_secret()).unwrap();
    t
}

/// A repository with small packs: a few hundred KB make a dozen packs or more.
async fn fixture() -> (TestRepo, Repository) {
    let t = small_repo().await;
    let repo = t.open().await;
    backup_bytes(&repo, "a", pseudo_random(400_000, 1)).await;
    backup_bytes(&repo, "b", pseudo_random(300_000, 2)).await;
    (t, repo)
}

fn subset(s: &str) -> VerifyOptions {
    VerifyOptions { read_data_subset: Some(s.parse().unwrap()), ..Default::default() }
}

#[test]
fn subsets_parse_like_restic_and_bad_ones_say_what_to_give() {
    assert_eq!("2/7".parse::<DataSubset>().unwrap(), DataSubset::Part { n: 2, t: 7 });
    assert_eq!("10%".parse::<DataSubset>().unwrap(), DataSubset::Percent(10.0));
    assert_eq!("2.5%".parse::<DataSubset>().unwrap(), DataSubset::Percent(2.5));
    assert_eq!("500M".parse::<DataSubset>().unwrap(), DataSubset::Bytes(500 << 20));
    assert_eq!("1.5GiB".parse::<DataSubset>().unwrap(), DataSubset::Bytes(3 << 29));
    assert_eq!("4096".parse::<DataSubset>().unwrap(), DataSubset::Bytes(4096));
    assert_eq!("2kb".parse::<DataSubset>().unwrap(), DataSubset::Bytes(2048));
    for bad in ["0/3", "4/3", "1/0", "a/b", "0%", "101%", "x", "5Q", "0"] {
        let err = bad.parse::<DataSubset>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        assert!(err.to_string().contains("give N/T"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parts_one_to_t_read_every_pack_exactly_once_and_the_same_part_the_same_packs() {
    let (_t, repo) = fixture().await;
    let inventory = Inventory::read(&repo).await.unwrap();
    let packs: Vec<(PackId, u64)> = inventory.stored.iter().map(|(p, s)| (*p, *s)).collect();
    assert!(packs.len() > 6, "{} packs", packs.len());
    let t = 3;
    let mut seen: HashSet<PackId> = HashSet::new();
    let (mut chunks, mut data_packs) = (0, 0);
    for n in 1..=t {
        let part = DataSubset::Part { n, t };
        let picked = part.select(&packs);
        assert_eq!(picked, part.select(&packs), "deterministic");
        assert!(picked.is_disjoint(&seen));
        seen.extend(picked.iter().copied());
        let report = verify(&repo, &subset(&format!("{n}/{t}"))).await.unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.data_packs, picked.len() as u64);
        assert_eq!(report.packs, packs.len() as u64, "the structural check still covers all");
        assert_eq!(report.data_subset.as_deref(), Some(format!("{n}/{t}").as_str()));
        chunks += report.chunks_read;
        data_packs += report.data_packs;
    }
    assert_eq!(seen.len(), packs.len());
    assert_eq!(data_packs, packs.len() as u64);
    assert_eq!(chunks, repo.index().chunk_count().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_percentage_and_a_byte_budget_pick_that_many_packs() {
    let (_t, repo) = fixture().await;
    let total = Inventory::read(&repo).await.unwrap().stored.len() as u64;
    let all = verify(&repo, &subset("100%")).await.unwrap();
    assert_eq!(all.data_packs, total);
    assert_eq!(all.chunks_read, repo.index().chunk_count().unwrap());
    let half = verify(&repo, &subset("50%")).await.unwrap();
    assert_eq!(half.data_packs, total.div_ceil(2));
    let one = verify(&repo, &subset("1")).await.unwrap();
    assert_eq!(one.data_packs, 1, "a 1-byte budget reads one pack");
    let budget = verify(&repo, &subset("100K")).await.unwrap();
    assert!(budget.data_bytes >= 100 * 1024 || budget.data_packs == total);
    assert!(budget.data_packs < total);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subset_needs_a_data_identity() {
    let (t, repo) = fixture().await;
    let host = support::open_as_backup_host(&repo, &t.storage()).await;
    let err = verify(&host, &subset("1/2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NeedsDataIdentity);
    assert!(err.to_string().contains("verify --read-data-subset"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_pack_names_the_backups_it_affects() {
    let t = small_repo().await;
    let repo = t.open().await;
    let a = backup_bytes(&repo, "a", pseudo_random(200_000, 7)).await;
    let b = backup_bytes(&repo, "b", pseudo_random(200_000, 8)).await;
    let pack = repo
        .index()
        .locate(&crate::support::data_chunks(&repo, &b.manifest).await[0])
        .unwrap()
        .unwrap()
        .pack;
    let path = t.location().join(qvault::repo::pack_path(&pack));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let report = verify(&repo, &subset("1/1")).await.unwrap();
    let problem = report.problems.iter().find(|p| p.object == format!("pack {pack}")).unwrap();
    assert_eq!(problem.backups, vec![b.id]);
    let problem = report.problems.iter().find(|p| p.object == format!("backup {}", b.id)).unwrap();
    assert_eq!(problem.backups, vec![b.id]);
    assert!(!report.damaged_backups.contains_key(&a.id));
    let json = serde_json::to_value(&report).unwrap();
    let listed =
        json["problems"].as_array().unwrap().iter().find(|p| p["object"] == format!("pack {pack}"));
    assert_eq!(listed.unwrap()["backups"][0], b.id.to_hex());
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_read_data_subset_reports_and_keeps_exit_codes() {
    let (t, _repo) = fixture().await;
    let mut data_packs = 0;
    for part in ["1/2", "2/2"] {
        let out = t.cli().args(["--json", "verify", "--read-data-subset", part]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["data_subset"], part);
        data_packs += json["data_packs"].as_u64().unwrap();
        assert!(data_packs <= json["packs"].as_u64().unwrap());
        if part == "2/2" {
            assert_eq!(data_packs, json["packs"].as_u64().unwrap());
        }
    }
    let out = t.cli().args(["verify", "--read-data-subset", "3/2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("N must be between 1 and T"));
    let out = t.cli().args(["verify", "--read-data-subset", "1/2", "--read-data"]).output();
    assert_eq!(out.unwrap().status.code(), Some(2));
}
