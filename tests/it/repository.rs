//! The repository end to end through the library: round trips, dedup, keys and roles, and
//! the repository's state after faults. Runs on the filesystem, and on a real S3 server when
//! `.ci/s3-server.sh` is running (skipped loudly otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use age::x25519;
use proptest::prelude::*;
use qvault::backup::{backup, BackupOptions, StreamSource};
use qvault::format::config::ChunkerConfig;
use qvault::format::manifest::StreamKind;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::restore::restore_stream;
use qvault::storage::Storage;
use qvault::ErrorKind;
use qvault_synth::pseudo_random;
use sha2::Digest;
use std::io::Write;
use std::sync::Arc;
use support::{backup_bytes, open_as_backup_host, restore_bytes, sha256_hex};

fn small_chunker() -> ChunkerConfig {
    ChunkerConfig {
        min_size: 1024,
        avg_size: 4096,
        max_size: 16384,
        tar_threshold: 4096,
        ..Default::default()
    }
}

struct Fixture {
    storage: Storage,
    identity: x25519::Identity,
    cache: tempfile::TempDir,
}

impl Fixture {
    async fn new(storage: Storage, chunker: Option<ChunkerConfig>) -> Fixture {
        Self::with_pack_size(storage, chunker, None).await
    }

    async fn with_pack_size(
        storage: Storage,
        chunker: Option<ChunkerConfig>,
        pack_size: Option<u64>,
    ) -> Fixture {
        let identity = x25519::Identity::generate();
        let cache = tempfile::tempdir().unwrap();
        let options = InitOptions {
            recipients: vec![identity.to_public()],
            chunker,
            pack_size,
            ..Default::default()
        };
        Repository::init(storage.clone(), options, &Cache::Dir(cache.path().to_path_buf()))
            .await
            .unwrap();
        Fixture { storage, identity, cache }
    }

    async fn fs(chunker: Option<ChunkerConfig>) -> (Fixture, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("repo");
        let storage = Storage::open(location.to_str().unwrap(), &Default::default()).unwrap();
        (Fixture::new(storage, chunker).await, dir)
    }

    fn cache(&self) -> Cache {
        Cache::Dir(self.cache.path().to_path_buf())
    }

    async fn open(&self) -> Repository {
        let credentials = Credentials { identities: vec![self.identity.clone()], key: None };
        Repository::open(self.storage.clone(), credentials, &self.cache()).await.unwrap()
    }

    /// Opens with only `identities` and a throwaway cache, for tests of what fails.
    async fn open_as(&self, identities: Vec<x25519::Identity>) -> qvault::Result<Repository> {
        let credentials = Credentials { identities, key: None };
        Repository::open(self.storage.clone(), credentials, &Cache::InMemory).await
    }
}

/// A writer that only hashes, so 200 MB restores need no 200 MB buffer.
#[derive(Default)]
struct HashingWriter(sha2::Sha256, u64);
impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The dedup contract from the issue: 200 MB of random bytes, then a copy with four 512 KiB
/// runs rewritten in place and 1 MB inserted in the middle, stores < 10% of the first.
async fn dedup_contract(storage: Storage) {
    let fixture = Fixture::new(storage, None).await;
    let repo = fixture.open().await;
    let first = pseudo_random(200_000_000, 1);
    let mut second = first.clone();
    for (i, at) in [10_000_000usize, 60_000_000, 130_000_000, 190_000_000].iter().enumerate() {
        second[*at..*at + 512 * 1024].copy_from_slice(&pseudo_random(512 * 1024, 100 + i as u64));
    }
    let middle = second.len() / 2;
    second.splice(middle..middle, pseudo_random(1_000_000, 7));
    let (first_sha, second_sha) = (sha256_hex(&first), sha256_hex(&second));

    let a = backup_bytes(&repo, "first", first).await;
    let b = backup_bytes(&repo, "second", second).await;
    let (added_a, added_b) = (a.manifest.summary.bytes_added, b.manifest.summary.bytes_added);
    eprintln!(
        "dedup on {}: first added {added_a}, second added {added_b} ({:.2}%)",
        fixture.storage.location(),
        added_b as f64 * 100.0 / added_a as f64
    );
    assert!(added_b * 10 < added_a, "second backup added {added_b} of {added_a}");

    for (summary, sha) in [(&a, first_sha), (&b, second_sha)] {
        let stream = &summary.manifest.streams[0];
        let (w, _) = restore_stream(
            &repo,
            summary.id,
            stream,
            HashingWriter::default(),
            &Default::default(),
        )
        .await
        .unwrap();
        assert_eq!(hex::encode(w.0.finalize()), sha);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dedup_contract_on_fs() {
    let dir = tempfile::tempdir().unwrap();
    let storage =
        Storage::open(dir.path().join("repo").to_str().unwrap(), &Default::default()).unwrap();
    dedup_contract(storage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dedup_contract_on_s3() {
    let Some(storage) = support::s3_storage(&support::unique_prefix("dedup")) else { return };
    dedup_contract(storage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn small_round_trip_on_s3() {
    let Some(storage) = support::s3_storage(&support::unique_prefix("roundtrip")) else { return };
    let fixture = Fixture::new(storage, Some(small_chunker())).await;
    let repo = fixture.open().await;
    let data = pseudo_random(300_000, 3);
    let summary = backup_bytes(&repo, "s3", data.clone()).await;
    assert_eq!(restore_bytes(&repo, &summary).await.unwrap(), data);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn any_bytes_round_trip(seed in any::<u64>(), len in 0usize..200_000, repeats in 1usize..3) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let fixture = Fixture::new(Storage::memory(), Some(small_chunker())).await;
            let repo = fixture.open().await;
            // Repeated content exercises dedup inside one stream.
            let unit = pseudo_random(len, seed);
            let data: Vec<u8> = std::iter::repeat_n(unit, repeats).flatten().collect();
            let summary = backup_bytes(&repo, "p", data.clone()).await;
            assert_eq!(summary.manifest.streams[0].size, data.len() as u64);
            assert_eq!(restore_bytes(&repo, &summary).await.unwrap(), data);
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    /// Restore reads ranges of packs: with small packs, edits and repeats, a later backup's
    /// chunks come from many packs, at every position relative to the 64 KiB age segments.
    #[test]
    fn edited_versions_over_many_packs_round_trip(
        seed in any::<u64>(),
        len in 1usize..400_000,
        pack_size in 20_000u64..300_000,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1usize..20_000, any::<bool>()), 0..6),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let fixture =
                Fixture::with_pack_size(Storage::memory(), Some(small_chunker()), Some(pack_size)).await;
            let repo = fixture.open().await;
            let v0 = pseudo_random(len, seed);
            let mut v1 = v0.clone();
            for (i, (at, n, insert)) in edits.iter().enumerate() {
                let at = at.index(v1.len() + 1);
                let new = pseudo_random(*n, seed ^ (i as u64 + 1));
                if *insert {
                    v1.splice(at..at, new);
                } else {
                    let end = (at + n).min(v1.len());
                    v1.splice(at..end, new);
                }
            }
            // The start of v0 again at the end: a repeat served from the first pack.
            v1.extend_from_slice(&v0[..len.min(70_000)]);
            let first = backup_bytes(&repo, "v", v0.clone()).await;
            let second = backup_bytes(&repo, "v", v1.clone()).await;
            assert_eq!(restore_bytes(&repo, &second).await.unwrap(), v1);
            assert_eq!(restore_bytes(&repo, &first).await.unwrap(), v0);
        });
    }
}

/// An insertion in the middle of a stream does not split the run of old chunks around it:
/// one read for the old pack, one for the new, and the writer puts them back in order.
#[tokio::test(flavor = "multi_thread")]
async fn an_insertion_costs_one_more_piece_not_two() {
    let fixture = Fixture::new(Storage::memory(), Some(small_chunker())).await;
    let repo = fixture.open().await;
    let v0 = pseudo_random(200_000, 21);
    let v1 = [&v0[..100_000], &pseudo_random(30_000, 22)[..], &v0[100_000..]].concat();
    let first = backup_bytes(&repo, "v", v0).await;
    let second = backup_bytes(&repo, "v", v1.clone()).await;
    let stream = &second.manifest.streams[0];
    let plan = qvault::restore::RestorePlan::new(&repo, second.id, stream).await.unwrap();
    let pieces = plan.pieces(&repo).await.unwrap();
    assert_eq!(pieces.len(), 2, "{pieces:?}");
    let first_chunk = support::data_chunks(&repo, &first.manifest).await[0];
    let old_pack = repo.index().locate(&first_chunk).unwrap().unwrap().pack;
    assert_eq!(pieces[0].pack, old_pack);
    let seqs = &pieces[0].seqs;
    assert_eq!(seqs[0], 0);
    assert!(seqs.windows(2).any(|w| w[1] > w[0] + 1), "the old run jumps over the insertion");
    assert_eq!(pieces.iter().map(|p| p.seqs.len() as u64).sum::<u64>(), stream.chunk_count());
    assert_eq!(restore_bytes(&repo, &second).await.unwrap(), v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_streams_in_one_backup() {
    let fixture = Fixture::new(Storage::memory(), Some(small_chunker())).await;
    let repo = fixture.open().await;
    let sources: Vec<StreamSource> = (0..3)
        .map(|i| StreamSource {
            name: format!("shard-{i}"),
            kind: StreamKind::QdrantShard,
            reader: Box::new(std::io::Cursor::new(pseudo_random(50_000, i))),
            source: Some(serde_json::json!({ "shard": i })),
            expected_sha256: None,
            left_out: None,
        })
        .collect();
    let summary = backup(&repo, sources, &BackupOptions::default(), Arc::default()).await.unwrap();
    assert_eq!(summary.manifest.streams.len(), 3);
    for (i, stream) in summary.manifest.streams.iter().enumerate() {
        let (out, _) = restore_stream(&repo, summary.id, stream, Vec::new(), &Default::default())
            .await
            .unwrap();
        assert_eq!(out, pseudo_random(50_000, i as u64));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_cache_loses_nothing() {
    let (fixture, _dir) = Fixture::fs(Some(small_chunker())).await;
    let data = pseudo_random(100_000, 5);
    let summary = backup_bytes(&fixture.open().await, "x", data.clone()).await;
    std::fs::remove_dir_all(fixture.cache.path()).unwrap();
    let repo = fixture.open().await;
    assert_eq!(repo.backups().unwrap().len(), 1);
    assert_eq!(restore_bytes(&repo, &summary).await.unwrap(), data);
    // And it dedups against what the rebuilt cache knows.
    let again = backup_bytes(&repo, "x", data).await;
    assert_eq!(again.manifest.summary.new_chunks, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn write_only_host_backs_up_and_dedups_but_cannot_restore() {
    let fixture = Fixture::new(Storage::memory(), Some(small_chunker())).await;
    let admin = fixture.open().await;
    let data = pseudo_random(100_000, 9);
    let first = backup_bytes(&admin, "a", data.clone()).await;

    let host = open_as_backup_host(&admin, &fixture.storage).await;
    let second = backup_bytes(&host, "b", data.clone()).await;
    assert_eq!(second.manifest.summary.new_chunks, 0, "the host dedups against the admin's backup");
    let err = restore_bytes(&host, &first).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NeedsDataIdentity);
    assert!(err.to_string().contains("needs a data identity"), "{err}");
    // What the host wrote, the admin restores.
    let admin = fixture.open().await;
    let third = backup_bytes(&host, "c", pseudo_random(10_000, 10)).await;
    admin.sync().await.unwrap();
    assert_eq!(restore_bytes(&admin, &third).await.unwrap(), pseudo_random(10_000, 10));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_identity_is_rejected_by_name() {
    let fixture = Fixture::new(Storage::memory(), None).await;
    let other = x25519::Identity::generate();
    let err = fixture.open_as(vec![other]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyRejected);
    assert!(err.to_string().contains("is not a recipient of the repository at memory"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_an_existing_repository_and_open_refuses_a_non_repository() {
    let fixture = Fixture::new(Storage::memory(), None).await;
    let options =
        InitOptions { recipients: vec![fixture.identity.to_public()], ..Default::default() };
    let err =
        Repository::init(fixture.storage.clone(), options, &Cache::InMemory).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    let dir = tempfile::tempdir().unwrap();
    let missing =
        Storage::open(dir.path().join("nothing").to_str().unwrap(), &Default::default()).unwrap();
    let err =
        Repository::open(missing, Credentials::default(), &Cache::InMemory).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotARepository);
    assert!(
        err.to_string().contains("run `qvault init`") || err.to_string().contains("qvault init"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_config_version_is_refused() {
    let fixture = Fixture::new(Storage::memory(), None).await;
    let config = fixture.storage.read("config").await.unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&config).unwrap();
    value["version"] = serde_json::json!(99);
    fixture.storage.write("config", serde_json::to_vec(&value).unwrap().into()).await.unwrap();
    let err = fixture.open_as(vec![fixture.identity.clone()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
    assert!(err.to_string().contains("format version 99"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_compression_algorithm_asks_for_a_newer_qvault() {
    let fixture = Fixture::new(Storage::memory(), None).await;
    let config = fixture.storage.read("config").await.unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&config).unwrap();
    value["compression"]["algorithm"] = serde_json::json!("brotli");
    fixture.storage.write("config", serde_json::to_vec(&value).unwrap().into()).await.unwrap();
    let err = fixture.open_as(vec![fixture.identity.clone()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
    assert_eq!(
        err.to_string(),
        "the repository at memory:// uses compression algorithm \"brotli\", this qvault knows \
         only [\"zstd\", \"none\"]: use a newer qvault"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunker_normalization_this_qvault_does_not_implement_is_refused() {
    let fixture = Fixture::new(Storage::memory(), None).await;
    let config = fixture.storage.read("config").await.unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&config).unwrap();
    value["chunker"]["normalization"] = serde_json::json!(2);
    fixture.storage.write("config", serde_json::to_vec(&value).unwrap().into()).await.unwrap();
    let err = fixture.open_as(vec![fixture.identity.clone()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
    assert_eq!(
        err.to_string(),
        "the repository at memory:// uses FastCDC normalization level 2, this qvault implements \
         only level 1: use a newer qvault"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_slipped_into_the_config_is_detected() {
    let fixture = Fixture::new(Storage::memory(), None).await;
    let config = fixture.storage.read("config").await.unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let intruder = x25519::Identity::generate().to_public().to_string();
    value["data_recipients"].as_array_mut().unwrap().push(intruder.into());
    fixture.storage.write("config", serde_json::to_vec(&value).unwrap().into()).await.unwrap();
    let err = fixture.open_as(vec![fixture.identity.clone()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("fails its MAC check"), "{err}");
}

/// The one pack object of a small repository.
async fn only_pack(storage: &Storage) -> String {
    let packs = storage.list("data/").await.unwrap();
    assert_eq!(packs.len(), 1, "expected one pack");
    packs[0].path.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_a_pack_fails_restore_naming_backup_stream_and_chunk() {
    let fixture = Fixture::new(Storage::memory(), Some(small_chunker())).await;
    let repo = fixture.open().await;
    let summary = backup_bytes(&repo, "victim", pseudo_random(50_000, 11)).await;
    let path = only_pack(&fixture.storage).await;
    let mut pack = fixture.storage.read(&path).await.unwrap().to_vec();
    // A byte in the first 64 KiB segment of the data (the age header before it varies in
    // size: age adds random grease stanzas): the first blob read from that segment, the one
    // at offset 0, is the chunk to name.
    let header =
        qvault::format::pack::read_header(&pack, repo.key().metadata_identity(), "p").unwrap();
    let damaged = header.entries.iter().min_by_key(|e| e.offset).unwrap().chunk.to_hex();
    pack[header.payload_start as usize + 100] ^= 1;
    fixture.storage.write(&path, pack.into()).await.unwrap();
    let err = restore_bytes(&repo, &summary).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let msg = err.to_string();
    assert!(msg.contains(&format!("backup {}", summary.id)), "{msg}");
    assert!(msg.contains("stream \"victim\""), "{msg}");
    assert!(msg.contains(&format!("chunk {damaged}")), "{msg}");
    assert!(msg.contains("fails authentication"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_or_missing_pack_fails_restore() {
    let fixture = Fixture::new(Storage::memory(), Some(small_chunker())).await;
    let repo = fixture.open().await;
    let summary = backup_bytes(&repo, "t", pseudo_random(50_000, 12)).await;
    let path = only_pack(&fixture.storage).await;
    let pack = fixture.storage.read(&path).await.unwrap();
    fixture.storage.write(&path, pack.slice(..pack.len() / 2)).await.unwrap();
    assert_eq!(restore_bytes(&repo, &summary).await.unwrap_err().kind(), ErrorKind::Corrupt);
    fixture.storage.delete(&path).await.unwrap();
    let err = restore_bytes(&repo, &summary).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("is missing from memory"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_truncated_index_file() {
    let fixture = Fixture::new(Storage::memory(), Some(small_chunker())).await;
    let summary = backup_bytes(&fixture.open().await, "i", pseudo_random(50_000, 13)).await;
    let index = fixture.storage.list("index/").await.unwrap();
    assert_eq!(index.len(), 1);
    let bytes = fixture.storage.read(&index[0].path).await.unwrap();

    // Truncated: opening the repository with a fresh cache skips it and names it; its
    // chunks are unknown, so the restore fails and says so.
    fixture.storage.write(&index[0].path, bytes.slice(..bytes.len() - 10)).await.unwrap();
    let repo = fixture.open_as(vec![fixture.identity.clone()]).await.unwrap();
    let damaged = repo.damaged_objects();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0].path, index[0].path);
    assert!(damaged[0].reason.contains("does not match its id"), "{damaged:?}");
    let err = restore_bytes(&repo, &summary).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Missing: the chunks are unknown, and restore says which and what to do.
    fixture.storage.delete(&index[0].path).await.unwrap();
    let repo = fixture.open().await;
    let err = restore_bytes(&repo, &summary).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("is in no index file"), "{err}");
}

/// A reader that fails after `limit` bytes, like a dropped network stream.
struct FailingReader {
    data: std::io::Cursor<Vec<u8>>,
    limit: u64,
}
impl std::io::Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.data.position() >= self.limit {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "source cut"));
        }
        let room = (self.limit - self.data.position()).min(buf.len() as u64) as usize;
        self.data.read(&mut buf[..room])
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_source_records_no_backup_and_a_rerun_reuses_its_packs() {
    let chunker =
        ChunkerConfig { min_size: 1024, avg_size: 4096, max_size: 16384, ..Default::default() };
    let fixture = Fixture::new(Storage::memory(), Some(chunker)).await;
    // Small packs so the failed run uploads (and indexes) some before it fails.
    let repo = fixture.open().await;
    let data = pseudo_random(3_000_000, 14);
    let source = StreamSource {
        name: "cut".into(),
        kind: StreamKind::Stdin,
        reader: Box::new(FailingReader {
            data: std::io::Cursor::new(data.clone()),
            limit: 2_500_000,
        }),
        source: None,
        expected_sha256: None,
        left_out: None,
    };
    let err =
        backup(&repo, vec![source], &BackupOptions::default(), Arc::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("no backup recorded"), "{err}");
    assert!(err.to_string().contains("source cut"), "{err}");
    assert!(fixture.storage.list("backups/").await.unwrap().is_empty());
    let summary = backup_bytes(&repo, "cut", data.clone()).await;
    assert_eq!(restore_bytes(&repo, &summary).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_announced_checksum_records_no_backup() {
    let fixture = Fixture::new(Storage::memory(), Some(small_chunker())).await;
    let repo = fixture.open().await;
    let source = StreamSource {
        name: "snap".into(),
        kind: StreamKind::QdrantCollection,
        reader: Box::new(std::io::Cursor::new(pseudo_random(10_000, 15))),
        source: None,
        expected_sha256: Some("00".repeat(32)),
        left_out: None,
    };
    let err =
        backup(&repo, vec![source], &BackupOptions::default(), Arc::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(fixture.storage.list("backups/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_added_recipient_can_restore_new_backups() {
    let fixture = Fixture::new(Storage::memory(), Some(small_chunker())).await;
    let mut repo = fixture.open().await;
    let escrow = x25519::Identity::generate();
    repo.add_recipient(escrow.to_public()).await.unwrap();
    let summary = backup_bytes(&repo, "n", pseudo_random(20_000, 16)).await;
    let as_escrow = fixture.open_as(vec![escrow]).await.unwrap();
    assert_eq!(restore_bytes(&as_escrow, &summary).await.unwrap(), pseudo_random(20_000, 16));
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_that_is_down_gives_a_storage_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let options = qvault::storage::StorageOptions {
        s3_endpoint: Some(format!("http://127.0.0.1:{port}")),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        retries: Some(0),
        ..Default::default()
    };
    let storage = Storage::open("s3://bucket/repo", &options).unwrap();
    let err =
        Repository::open(storage, Credentials::default(), &Cache::InMemory).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_that_refuses_the_credentials_gives_a_storage_error() {
    let Some((bucket, mut options)) = support::s3_options() else { return };
    options.secret_access_key = Some("wrong-secret".into());
    let storage = Storage::open(&format!("s3://{bucket}/creds"), &options).unwrap();
    let err =
        Repository::open(storage, Credentials::default(), &Cache::InMemory).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("credentials"), "{err}");
}
