//! Golden tests of format version 2 (docs/design.md, "Format version 2"): list-block bytes
//! and cut points for a known id list, and `tests/fixtures/repo-v2/`, a small version-2
//! repository this build must open, walk and restore byte-exact. Same rules as `golden`:
//! a failure here is a format change, never a value to paste in.
//!
//! The fixture is regenerated only with a format version bump (keep the old one under its
//! name):
//!
//! ```text
//! rm -r tests/fixtures/repo-v2
//! cargo test --test it -- --ignored golden_v2::generate_fixture_repository_v2 --nocapture
//! ```

use super::golden::{data_identity, pseudo_random, test_key};
use qvault::crypto;
use qvault::format::config::ChunkerConfig;
use qvault::format::list::{self, decode_block, encode_block};
use qvault::format::manifest::StreamKind;
use qvault::id::{BackupId, ChunkId};
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::storage::{Storage, StorageOptions};
use std::io::Cursor;
use std::path::PathBuf;

/// `n` known ids: BLAKE3 of i as u64 LE.
fn known_ids(n: u64) -> Vec<ChunkId> {
    (0..n).map(|i| ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect()
}

#[test]
fn list_block_bytes_are_pinned() {
    let ids = known_ids(2);
    let block = encode_block(1, &ids);
    assert_eq!(hex::encode(&block[..12]), "51564c42".to_string() + "02000000" + "01000000");
    assert_eq!(&block[12..44], &ids[0].0);
    assert_eq!(&block[44..], &ids[1].0);
    assert_eq!(decode_block(&block, "golden block").unwrap(), (1, ids));
    assert_eq!(
        test_key().chunk_id(&block).to_string(),
        "f774442cbb26b198479dfd3cedfc6e7ae15596b89925c085651fb69b19989ada"
    );
}

/// Where blocks end for 6,000 known ids with the test key: the rule of docs/design.md.
#[test]
fn list_block_cut_points_are_pinned() {
    let key = test_key();
    let ids = known_ids(6000);
    let (top, blocks) = list::build(&ids, |b| key.chunk_id(b));
    let sizes: Vec<(u32, usize)> = blocks
        .iter()
        .map(|(_, bytes)| {
            let (level, ids) = decode_block(bytes, "block").unwrap();
            (level, ids.len())
        })
        .collect();
    // Level 1 (6,000 ids, ~320 per block): blocks end on the content rule, or at the
    // 1024-id maximum (the second and fifth), the last where the list ends; its 17 blocks
    // are more than a top holds, so one level-2 block names them.
    assert_eq!(
        format!("{sizes:?}"),
        "[(1, 784), (1, 1024), (1, 125), (1, 178), (1, 1024), (1, 241), (1, 143), (1, 325), \
         (1, 78), (1, 257), (1, 145), (1, 447), (1, 210), (1, 460), (1, 79), (1, 205), \
         (1, 275), (2, 17)]"
    );
    let level1 = &sizes[..sizes.len() - 1];
    let mut end = 0;
    for (i, (_, count)) in level1.iter().enumerate() {
        end += count;
        let last = ids[end - 1].0;
        let content_cut = u16::from_le_bytes([last[0], last[1]]) % list::TARGET == 0;
        let at_max = *count == list::MAX_IDS;
        assert!(*count >= list::MIN_IDS || i == level1.len() - 1, "block {i}");
        assert_eq!(content_cut, !at_max && i != level1.len() - 1, "block {i}");
    }
    assert_eq!(end, 6000);
    assert_eq!(top.levels, 2);
    assert_eq!(top.chunks, 6000);
    assert_eq!(top.top, vec![blocks.last().unwrap().0]);
    assert_eq!(
        top.top[0].to_string(),
        "6be1bba8ceb2b2e6cf966bb6416f553c6527e0a187b1e096c7c1eb64ef9d6353"
    );
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v2")
}

fn fixture_identity_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v2.identity")
}

/// Ids of the fixture's backups, oldest first.
const FIXTURE_BACKUPS: [&str; 2] = [
    "ff499b29d74bf681073b74c910dc61cb6239ba974183b4a32b6de0fd3402645b",
    "c21663270996badc11d3122c656429db41f074ab03d2830a34c96806713b9f02",
];

/// The fixture's backups (name, one stream each): the second edits the first in the middle.
fn fixture_streams() -> Vec<(&'static str, Vec<u8>)> {
    let first = pseudo_random(200 * 1024, 0x5eed);
    let mut second = first.clone();
    second.splice(100_000..100_000, pseudo_random(3000, 0xed17));
    vec![("first", first), ("second", second)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the committed fixture; run by hand only with a format version bump"]
async fn generate_fixture_repository_v2() {
    let dir = fixture_dir();
    assert!(!dir.exists(), "{} exists: remove it first", dir.display());
    let storage = Storage::open(dir.to_str().unwrap(), &StorageOptions::default()).unwrap();
    storage.create_root().await.unwrap();
    let options = InitOptions {
        recipients: vec![data_identity().to_public()],
        // The smallest chunks FastCDC allows: 200 KiB give hundreds of chunks, so the list
        // needs list blocks (more than 16 ids), and the edit shares most of them.
        chunker: Some(ChunkerConfig {
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
            tar_aware: false,
            ..ChunkerConfig::default()
        }),
        compression: None,
        pack_size: Some(64 * 1024),
    };
    let repo = Repository::init(storage, options, &Cache::InMemory).await.unwrap();
    std::fs::write(
        fixture_identity_path(),
        crypto::identity_file_text(&data_identity(), "2026-01-01T00:00:00Z"),
    )
    .unwrap();
    for (name, bytes) in fixture_streams() {
        let source = qvault::backup::StreamSource {
            name: "data.bin".to_string(),
            kind: StreamKind::File,
            reader: Box::new(Cursor::new(bytes)),
            source: None,
            expected_sha256: None,
            left_out: None,
        };
        let options = qvault::backup::BackupOptions {
            name: Some(name.to_string()),
            tags: [("fixture".to_string(), "repo-v2".to_string())].into(),
            host: Some("golden".to_string()),
            workers: Some(1),
            upload_concurrency: 1,
            ..Default::default()
        };
        let summary = qvault::backup::backup(&repo, vec![source], &options, Default::default())
            .await
            .unwrap();
        println!("backup {name}: {}", summary.id);
    }
}

async fn open_fixture() -> Repository {
    let storage =
        Storage::open(fixture_dir().to_str().unwrap(), &StorageOptions::default()).unwrap();
    let text = std::fs::read_to_string(fixture_identity_path()).unwrap();
    let identities = crypto::parse_identities(&text, "fixture identity").unwrap();
    Repository::open(storage, Credentials { identities, key: None }, &Cache::InMemory)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_repository_v2_opens_walks_and_restores() {
    let repo = open_fixture().await;
    assert_eq!(repo.config().version, 2);
    let ids: Vec<String> = repo.backups().unwrap().iter().map(|b| b.id.to_hex()).collect();
    assert_eq!(ids, FIXTURE_BACKUPS);
    let mut data_sets = Vec::new();
    for ((name, bytes), id) in fixture_streams().into_iter().zip(FIXTURE_BACKUPS) {
        let id = BackupId::from_hex(id).unwrap();
        let manifest = repo.read_manifest(id).await.unwrap();
        assert_eq!(manifest.name.as_deref(), Some(name));
        assert_eq!(manifest.version(), 2);
        let record = &manifest.streams[0];
        let list = record.list.as_ref().unwrap();
        assert!(list.levels >= 1, "{list:?}");
        let (out, _) =
            qvault::restore::restore_stream(&repo, id, record, Vec::new(), &Default::default())
                .await
                .unwrap();
        assert!(out == bytes, "backup {name} restored differently");
        let data = super::support::data_chunks(&repo, &manifest).await;
        assert_eq!(data.len() as u64, list.chunks);
        data_sets.push(data.into_iter().collect::<std::collections::HashSet<_>>());
    }
    let report = qvault::verify::verify(
        &repo,
        &qvault::verify::VerifyOptions { read_data: true, ..Default::default() },
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    // The edit shares most chunks with the first backup: references across backups.
    assert!(data_sets[1].intersection(&data_sets[0]).count() * 10 > data_sets[1].len() * 9);
}
