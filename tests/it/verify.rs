//! `verify`, `index rebuild --read-packs` and `repair`: what they find after each kind of damage, and
//! the repository state they leave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use qvault::format::config::ChunkerConfig;
use qvault::index::sync::index_unlisted_packs;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::restore::restore_stream;
use qvault::storage::Storage;
use qvault::verify::{verify, VerifyOptions};
use qvault::ErrorKind;
use qvault_synth::pseudo_random;
use support::{backup_bytes, open_as_backup_host};

/// A memory repository with small chunks and small packs, so a few hundred KB make
/// several packs and index entries.
struct Fixture {
    storage: Storage,
    identity: age::x25519::Identity,
}

impl Fixture {
    async fn new() -> Fixture {
        let storage = Storage::memory();
        let identity = age::x25519::Identity::generate();
        let options = InitOptions {
            recipients: vec![identity.to_public()],
            chunker: Some(ChunkerConfig {
                min_size: 1024,
                avg_size: 4096,
                max_size: 16384,
                tar_threshold: 4096,
                ..Default::default()
            }),
            pack_size: Some(64 * 1024),
            ..Default::default()
        };
        Repository::init(storage.clone(), options, &Cache::InMemory).await.unwrap();
        Fixture { storage, identity }
    }

    /// A fresh cache each time, as a new process would have.
    async fn open(&self) -> Repository {
        let credentials = Credentials { identities: vec![self.identity.clone()], key: None };
        Repository::open(self.storage.clone(), credentials, &Cache::InMemory).await.unwrap()
    }

    async fn packs(&self) -> Vec<String> {
        let mut packs: Vec<String> =
            self.storage.list("data/").await.unwrap().into_iter().map(|o| o.path).collect();
        packs.sort();
        packs
    }
}

fn read_data() -> VerifyOptions {
    VerifyOptions { read_data: true, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_repository_verifies_with_and_without_reading_data() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let first = backup_bytes(&repo, "s", pseudo_random(300_000, 1)).await;
    backup_bytes(&repo, "s", pseudo_random(200_000, 2)).await;
    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.backups, 2);
    assert_eq!(report.packs, fixture.packs().await.len() as u64);
    assert!(report.packs > 3, "small packs: several per backup");
    assert_eq!(report.chunks_read, 0);
    let report = verify(&repo, &read_data()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.chunks_read, repo.index().chunk_count().unwrap());
    assert!(report.chunks_read >= first.manifest.summary.new_chunks);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_pack_is_named_and_the_rest_still_checked() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let summary = backup_bytes(&repo, "s", pseudo_random(300_000, 3)).await;
    let packs = fixture.packs().await;
    // A pack of data chunks (pack ids are random: `packs[1]` may hold the chunk list).
    let victim = &packs_of(&repo, &summary).await[1];
    let mut bytes = fixture.storage.read(victim).await.unwrap().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fixture.storage.write(victim, bytes.into()).await.unwrap();

    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    assert_eq!(report.packs, packs.len() as u64, "every pack is checked");
    // The pack, and the one backup it keeps from restoring whole.
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    let id = victim.rsplit('/').next().unwrap();
    let pack = report.problems.iter().find(|p| p.object == format!("pack {id}")).unwrap();
    assert!(pack.message.contains("does not match its id"), "{:?}", report.problems);
    let why = report.damaged_backups.get(&summary.id).expect("the backup is named");
    assert!(why.ends_with(" of its chunks are in damaged packs"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_pack_names_the_pack_and_the_backups_it_breaks() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let summary = backup_bytes(&repo, "s", pseudo_random(300_000, 4)).await;
    // A pack of data chunks (pack ids are random: the first may hold the chunk list).
    let packs = packs_of(&repo, &summary).await;
    fixture.storage.delete(&packs[0]).await.unwrap();

    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    let id = packs[0].rsplit('/').next().unwrap();
    let missing = report.problems.iter().find(|p| p.object == format!("pack {id}")).unwrap();
    assert_eq!(missing.message, "listed in an index file but missing from storage");
    let why = report.damaged_backups.get(&summary.id).expect("the backup is damaged");
    assert!(why.ends_with(" of its chunks are in packs missing from storage"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn packs_without_an_index_file_are_reported_and_read_packs_makes_them_usable() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let data = pseudo_random(300_000, 5);
    let summary = backup_bytes(&repo, "s", data.clone()).await;
    // What a backup killed before its index file leaves: packs no index file lists.
    let index_files = fixture.storage.list("index/").await.unwrap();
    assert_eq!(index_files.len(), 1);
    fixture.storage.delete(&index_files[0].path).await.unwrap();

    let repo = fixture.open().await;
    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    assert_eq!(report.unindexed_packs.len(), fixture.packs().await.len());
    assert!(report.damaged_backups.contains_key(&summary.id));
    let stream = &summary.manifest.streams[0];
    let err = restore_stream(&repo, summary.id, stream, Vec::new(), &Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let indexed = index_unlisted_packs(&repo).await.unwrap().indexed;
    assert_eq!(indexed.len(), report.unindexed_packs.len());
    assert_eq!(fixture.storage.list("index/").await.unwrap().len(), 1, "one new index file");
    // A fresh process sees a whole repository again, and the backup restores.
    let repo = fixture.open().await;
    let report = verify(&repo, &read_data()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.unindexed_packs.is_empty());
    let (out, _) =
        restore_stream(&repo, summary.id, stream, Vec::new(), &Default::default()).await.unwrap();
    assert_eq!(out, data);
    // Nothing left to index: a second run writes nothing.
    assert!(index_unlisted_packs(&repo).await.unwrap().indexed.is_empty());
    assert_eq!(fixture.storage.list("index/").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_data_needs_a_data_identity() {
    let fixture = Fixture::new().await;
    let admin = fixture.open().await;
    backup_bytes(&admin, "s", pseudo_random(50_000, 6)).await;
    let host = open_as_backup_host(&admin, &fixture.storage).await;
    assert!(verify(&host, &VerifyOptions::default()).await.unwrap().is_ok());
    let err = verify(&host, &read_data()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NeedsDataIdentity);
}

// ----- repair: lost and damaged objects (the repository survives) -----

use qvault::repair::{
    plan_repair_backups, plan_repair_index, repair_backups, repair_index, RepairIndexOptions,
};
use support::restore_bytes;

/// The packs a backup's chunks live in, as storage paths.
async fn packs_of(repo: &Repository, summary: &qvault::backup::BackupSummary) -> Vec<String> {
    let mut packs: Vec<String> = support::data_chunks(repo, &summary.manifest)
        .await
        .iter()
        .map(|c| qvault::repo::pack_path(&repo.index().locate(c).unwrap().unwrap().pack))
        .collect();
    packs.sort();
    packs.dedup();
    packs
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_pack_is_never_deduplicated_against_and_repair_index_heals_the_repository() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let a = pseudo_random(300_000, 21);
    let b = pseudo_random(200_000, 22);
    let first = backup_bytes(&repo, "a", a.clone()).await;
    let other = backup_bytes(&repo, "b", b.clone()).await;
    let lost = packs_of(&repo, &first).await[0].clone();
    assert!(!packs_of(&repo, &other).await.contains(&lost), "the packs of b are not touched");
    fixture.storage.delete(&lost).await.unwrap();

    // verify names the pack and exactly the backup it breaks.
    let repo = fixture.open().await;
    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    assert_eq!(report.damaged_backups.keys().collect::<Vec<_>>(), [&first.id]);

    // A later backup of the same data (on a fresh machine too: no verify needed) stores the
    // lost chunks again instead of referencing the missing pack, and restores byte-exact.
    let fresh = fixture.open().await;
    let again = backup_bytes(&fresh, "a", a.clone()).await;
    assert!(again.manifest.summary.new_chunks > 0, "the lost chunks are stored again");
    assert_eq!(restore_bytes(&fixture.open().await, &again).await.unwrap(), a);

    // repair index stops listing the lost pack; afterwards verify is clean (the re-stored
    // chunks made the first backup whole again) and every backup restores.
    let repo = fixture.open().await;
    let plan = plan_repair_index(&repo, &RepairIndexOptions::default()).await.unwrap();
    assert_eq!(plan.missing_packs.len(), 1);
    assert_eq!(qvault::repo::pack_path(&plan.missing_packs[0]), lost);
    let report = repair_index(&repo, &plan).await.unwrap();
    assert!(report.index_files_deleted >= 1);
    let repo = fixture.open().await;
    let report = verify(&repo, &read_data()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(restore_bytes(&repo, &first).await.unwrap(), a);
    assert_eq!(restore_bytes(&repo, &other).await.unwrap(), b);
    let plan = plan_repair_index(&repo, &RepairIndexOptions::default()).await.unwrap();
    assert!(plan.is_empty(), "nothing left to repair: {plan:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_repair_index_verify_names_only_the_backup_that_lost_data() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let first = backup_bytes(&repo, "a", pseudo_random(300_000, 23)).await;
    let b = pseudo_random(200_000, 24);
    let other = backup_bytes(&repo, "b", b.clone()).await;
    fixture.storage.delete(&packs_of(&repo, &first).await[0]).await.unwrap();

    let repo = fixture.open().await;
    let plan = plan_repair_index(&repo, &RepairIndexOptions::default()).await.unwrap();
    repair_index(&repo, &plan).await.unwrap();
    let repo = fixture.open().await;
    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    assert_eq!(report.damaged_backups.keys().collect::<Vec<_>>(), [&first.id]);
    assert!(report.damaged_backups[&first.id].contains("in no index file"));
    assert_eq!(restore_bytes(&repo, &other).await.unwrap(), b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_manifest_is_skipped_reported_and_moved_to_quarantine() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let a = pseudo_random(100_000, 25);
    let intact = backup_bytes(&repo, "a", a.clone()).await;
    let victim = backup_bytes(&repo, "b", pseudo_random(100_000, 26)).await;
    let victim_path = qvault::repo::backup_path(&victim.id);
    fixture.storage.write(&victim_path, Vec::new().into()).await.unwrap();

    // A fresh cache (a CronJob's emptyDir): opening works, lists the intact backup only.
    let repo = fixture.open().await;
    assert_eq!(repo.damaged_objects().len(), 1);
    assert_eq!(repo.damaged_objects()[0].path, victim_path);
    let listed: Vec<_> = repo.backups().unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(listed, [intact.id]);
    assert_eq!(restore_bytes(&repo, &intact).await.unwrap(), a);
    backup_bytes(&repo, "c", pseudo_random(50_000, 27)).await;
    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    assert!(report.problems.iter().any(|p| p.object == victim_path), "{:?}", report.problems);
    assert!(report.damaged_backups.contains_key(&victim.id));

    let plan = plan_repair_backups(&repo).await.unwrap();
    assert_eq!(plan.damaged_manifests.len(), 1);
    let moved = repair_backups(&repo, &plan).await.unwrap();
    assert_eq!(moved, std::slice::from_ref(&victim_path));
    assert!(fixture.storage.exists(&format!("quarantine/{victim_path}")).await.unwrap());
    let repo = fixture.open().await;
    assert!(repo.damaged_objects().is_empty());
    assert!(verify(&repo, &VerifyOptions::default()).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_index_file_is_skipped_and_repair_index_relists_its_packs() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let a = pseudo_random(300_000, 28);
    let summary = backup_bytes(&repo, "a", a.clone()).await;
    let index = fixture.storage.list("index/").await.unwrap();
    let bytes = fixture.storage.read(&index[0].path).await.unwrap();
    fixture.storage.write(&index[0].path, bytes.slice(..bytes.len() - 10)).await.unwrap();

    let repo = fixture.open().await;
    assert_eq!(repo.damaged_objects()[0].path, index[0].path);
    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    assert!(report.problems.iter().any(|p| p.object == index[0].path));
    assert!(report.damaged_backups.contains_key(&summary.id));

    let plan = plan_repair_index(&repo, &RepairIndexOptions::default()).await.unwrap();
    assert_eq!(plan.damaged_index_files.len(), 1);
    let report = repair_index(&repo, &plan).await.unwrap();
    assert_eq!(report.quarantined, std::slice::from_ref(&index[0].path));
    assert_eq!(report.packs_indexed, fixture.packs().await.len() as u64);
    // Found by a tester: the index file listing them was written but not counted.
    assert_eq!(report.index_files_written, 1, "{report:?}");
    let repo = fixture.open().await;
    assert!(verify(&repo, &read_data()).await.unwrap().is_ok());
    assert_eq!(restore_bytes(&repo, &summary).await.unwrap(), a);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_after_a_killed_backup_reuses_every_pack_it_uploaded() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let data = pseudo_random(400_000, 29);
    let killed = backup_bytes(&repo, "a", data.clone()).await;
    // What a kill after the uploads leaves: packs, but no index file and no manifest.
    for object in fixture.storage.list("index/").await.unwrap() {
        fixture.storage.delete(&object.path).await.unwrap();
    }
    fixture.storage.delete(&qvault::repo::backup_path(&killed.id)).await.unwrap();

    let repo = fixture.open().await;
    let rerun = backup_bytes(&repo, "a", data.clone()).await;
    assert_eq!(rerun.manifest.summary.new_chunks, 0, "every uploaded pack is reused");
    let stored = killed.manifest.summary.bytes_added;
    assert!(rerun.manifest.summary.bytes_added * 20 < stored, "only an index file is added");
    assert_eq!(restore_bytes(&fixture.open().await, &rerun).await.unwrap(), data);
}
