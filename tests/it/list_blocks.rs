//! Format version 2: a stream's chunk list stored as list blocks, end to end — backup,
//! restore, `refs`, verify, a backup host's view, and what an unchanged or edited stream
//! costs.

use crate::support::{self, backup_bytes, data_chunks, restore_bytes, TestRepo};
use qvault::format::config::ChunkerConfig;
use qvault::format::list::ChunkList;
use qvault::refs::{for_each_reference, RefKind};
use qvault::repo::Repository;
use qvault::ErrorKind;
use qvault_synth::pseudo_random;
use std::collections::HashSet;

/// The smallest chunks FastCDC allows: a few MB make tens of thousands of chunks, so the
/// list needs two levels of blocks.
fn tiny_chunker() -> ChunkerConfig {
    ChunkerConfig {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        tar_aware: false,
        ..Default::default()
    }
}

fn list_of(summary: &qvault::backup::BackupSummary) -> ChunkList {
    summary.manifest.streams[0].list.clone().expect("a version-2 stream record")
}

async fn list_blocks(
    repo: &Repository,
    manifest: &qvault::format::manifest::Manifest,
) -> Vec<qvault::id::ChunkId> {
    let mut ids = Vec::new();
    for_each_reference(repo, manifest, |id, kind| {
        if kind == RefKind::ListBlock {
            ids.push(*id);
        }
    })
    .await
    .unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_round_trips_through_a_two_level_tree() {
    let dir = TestRepo::new(Some(tiny_chunker())).await;
    let repo = dir.open().await;
    assert_eq!(repo.config().version, 2);
    let data = pseudo_random(12 << 20, 31);
    let summary = backup_bytes(&repo, "big", data.clone()).await;
    let list = list_of(&summary);
    assert_eq!(summary.manifest.version(), 2);
    assert!(summary.manifest.streams[0].chunks.is_empty());
    assert_eq!(list.levels, 2, "{list:?}");
    assert!(list.top.len() <= qvault::format::list::TOP_MAX);
    assert_eq!(list.chunks, summary.manifest.summary.chunks);
    assert_eq!(data_chunks(&repo, &summary.manifest).await.len() as u64, list.chunks);
    let blocks = list_blocks(&repo, &summary.manifest).await;
    assert!(blocks.len() > 16, "{} list blocks", blocks.len());
    assert_eq!(restore_bytes(&repo, &summary).await.unwrap(), data);
    // Reopened from storage alone (a fresh cache): the manifest and blocks are enough.
    let fresh = dir.open().await;
    assert_eq!(restore_bytes(&fresh, &summary).await.unwrap(), data);
    let report = qvault::verify::verify(
        &repo,
        &qvault::verify::VerifyOptions { read_data: true, ..Default::default() },
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_stream_adds_nothing_and_its_manifest_stays_small() {
    let dir = TestRepo::new(Some(tiny_chunker())).await;
    let repo = dir.open().await;
    let data = pseudo_random(4 << 20, 32);
    let first = backup_bytes(&repo, "s", data.clone()).await;
    let again = backup_bytes(&repo, "s", data.clone()).await;
    assert_eq!(again.manifest.summary.new_chunks, 0);
    assert_eq!(again.manifest.summary.bytes_added, 0, "list blocks deduplicate too");
    assert_eq!(list_of(&again), list_of(&first));
    let manifest_bytes = again.manifest.encode().unwrap().len();
    assert!(manifest_bytes < 2048, "{manifest_bytes} bytes for {} chunks", list_of(&again).chunks);
    assert_eq!(restore_bytes(&repo, &again).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insertion_stores_only_the_list_blocks_around_it() {
    let dir = TestRepo::new(Some(tiny_chunker())).await;
    let repo = dir.open().await;
    let v0 = pseudo_random(6 << 20, 33);
    let v1 = [&v0[..3 << 20], &pseudo_random(5000, 34)[..], &v0[3 << 20..]].concat();
    let first = backup_bytes(&repo, "s", v0).await;
    let second = backup_bytes(&repo, "s", v1.clone()).await;
    let old: HashSet<_> = list_blocks(&repo, &first.manifest).await.into_iter().collect();
    let new = list_blocks(&repo, &second.manifest).await;
    let changed = new.iter().filter(|id| !old.contains(id)).count();
    // The level-1 block(s) holding the insert and the level-2 block above them.
    assert!(changed <= 3, "{changed} of {} list blocks are new", new.len());
    assert_eq!(restore_bytes(&repo, &second).await.unwrap(), v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_host_walks_the_lists_without_a_data_identity() {
    let dir = TestRepo::new(Some(tiny_chunker())).await;
    let admin = dir.open().await;
    let summary = backup_bytes(&admin, "s", pseudo_random(3 << 20, 35)).await;
    let host = support::open_as_backup_host(&admin, &dir.storage()).await;
    let set = qvault::refs::chunk_set(&host, &summary.manifest).await.unwrap();
    assert_eq!(set, qvault::refs::chunk_set(&admin, &summary.manifest).await.unwrap());
    let report = qvault::verify::verify(&host, &Default::default()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_list_block_pack_fails_verify_and_restore() {
    let dir = TestRepo::new(Some(tiny_chunker())).await;
    let repo = dir.open().await;
    let summary = backup_bytes(&repo, "s", pseudo_random(3 << 20, 36)).await;
    let block = list_blocks(&repo, &summary.manifest).await[0];
    let pack = repo.index().locate(&block).unwrap().unwrap().pack;
    dir.storage().delete(&qvault::repo::pack_path(&pack)).await.unwrap();
    let report = qvault::verify::verify(&repo, &Default::default()).await.unwrap();
    assert!(report.damaged_backups.contains_key(&summary.id), "{:?}", report.problems);
    let err = restore_bytes(&repo, &summary).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(&block.to_string()), "{err}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A version-1 repository stays version 1: new backups list their chunks inline, so every
/// qvault that read it still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_repository_keeps_writing_version_1_manifests() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    copy_dir(&fixtures.join("repo-v1"), &dir);
    let text = std::fs::read_to_string(fixtures.join("repo-v1.identity")).unwrap();
    let identities = qvault::crypto::parse_identities(&text, "fixture identity").unwrap();
    let storage =
        qvault::storage::Storage::open(dir.to_str().unwrap(), &Default::default()).unwrap();
    let credentials = qvault::repo::Credentials { identities, key: None };
    let repo =
        Repository::open(storage, credentials, &qvault::repo::Cache::InMemory).await.unwrap();
    assert_eq!(repo.config().version, 1);
    let data = pseudo_random(300_000, 37);
    let summary = backup_bytes(&repo, "new", data.clone()).await;
    assert_eq!(summary.manifest.version(), 1);
    assert!(summary.manifest.streams[0].list.is_none());
    assert_eq!(summary.manifest.streams[0].chunks.len() as u64, summary.manifest.summary.chunks);
    assert_eq!(restore_bytes(&repo, &summary).await.unwrap(), data);
}
