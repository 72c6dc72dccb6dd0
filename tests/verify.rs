//! `verify` and `index rebuild --read-packs`: what they find after each kind of damage, and
//! the repository state they leave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use qvault::format::config::ChunkerConfig;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::restore::restore_stream;
use qvault::storage::Storage;
use qvault::synth::pseudo_random;
use qvault::verify::{index_unindexed_packs, verify, VerifyOptions};
use qvault::ErrorKind;
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
    backup_bytes(&repo, "s", pseudo_random(300_000, 3)).await;
    let packs = fixture.packs().await;
    let victim = &packs[1];
    let mut bytes = fixture.storage.read(victim).await.unwrap().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fixture.storage.write(victim, bytes.into()).await.unwrap();

    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    assert_eq!(report.packs, packs.len() as u64, "every pack is checked");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let id = victim.rsplit('/').next().unwrap();
    assert_eq!(report.problems[0].object, format!("pack {id}"));
    assert!(report.problems[0].message.contains("does not match its id"), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_pack_names_the_pack_and_the_backups_it_breaks() {
    let fixture = Fixture::new().await;
    let repo = fixture.open().await;
    let summary = backup_bytes(&repo, "s", pseudo_random(300_000, 4)).await;
    let packs = fixture.packs().await;
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

    let indexed = index_unindexed_packs(&repo).await.unwrap();
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
    assert!(index_unindexed_packs(&repo).await.unwrap().is_empty());
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
