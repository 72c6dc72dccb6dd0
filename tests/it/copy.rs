//! `qvault copy`: backups to a second repository, only missing chunks, resumable, never a
//! manifest whose chunks are not all there; on the filesystem and S3 in both directions.

use crate::support::{self, backup_bytes, restore_bytes, TestRepo};
use age::x25519;
use qvault::copy::{copy, init_target, CopyOptions};
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::storage::Storage;
use qvault::ErrorKind;

/// Incompressible bytes (xorshift64*), so every backup has several chunks of its own.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A copy target of `source` on `storage`, with its own data identity.
async fn make_target(source: &Repository, storage: Storage) -> (Repository, x25519::Identity) {
    let identity = x25519::Identity::generate();
    let options = InitOptions { recipients: vec![identity.to_public()], ..Default::default() };
    init_target(storage.clone(), source, options, &Cache::InMemory).await.unwrap();
    let credentials = Credentials { identities: vec![identity.clone()], key: None };
    let target = Repository::open(storage, credentials, &Cache::InMemory).await.unwrap();
    (target, identity)
}

fn all() -> CopyOptions {
    CopyOptions { concurrency: 2, ..Default::default() }
}

/// The source's backups restore byte-exact from the target with the target's own identity,
/// a second copy transfers nothing, and a backup sharing data transfers only its new chunks.
async fn round_trip(source: &Repository, target: &Repository) {
    let a = noise(600_000, 1);
    let b = noise(400_000, 2);
    let sa = backup_bytes(source, "a.bin", a.clone()).await;
    let sb = backup_bytes(source, "b.bin", b.clone()).await;

    let report = copy(source, target, &all(), false).await.unwrap();
    assert_eq!(report.copied.len(), 2);
    assert!(report.skipped.is_empty());
    let chunks = sa.manifest.summary.chunks + sb.manifest.summary.chunks;
    assert_eq!(report.chunks_copied, chunks);
    assert_eq!(report.plan.chunks, chunks);
    assert!(report.bytes_written > 1_000_000, "{}", report.bytes_written);

    for (summary, data) in [(&sa, &a), (&sb, &b)] {
        let copied = report.copied[&summary.id];
        let mut in_target = summary.clone();
        in_target.id = copied;
        assert_eq!(&restore_bytes(target, &in_target).await.unwrap(), data);
    }

    let again = copy(source, target, &all(), false).await.unwrap();
    assert!(again.copied.is_empty());
    assert_eq!(again.skipped, vec![sa.id, sb.id]);
    assert_eq!((again.chunks_copied, again.bytes_written), (0, 0));

    // Half of `a` again plus new bytes: only the new chunks travel.
    let mut c = a[..300_000].to_vec();
    c.extend(noise(200_000, 3));
    let sc = backup_bytes(source, "c.bin", c.clone()).await;
    let third = copy(source, target, &all(), false).await.unwrap();
    assert_eq!(third.copied.len(), 1);
    assert_eq!(third.chunks_copied, sc.manifest.summary.new_chunks);
    assert!(third.chunks_copied < sc.manifest.summary.chunks);
    let mut in_target = sc.clone();
    in_target.id = third.copied[&sc.id];
    assert_eq!(restore_bytes(target, &in_target).await.unwrap(), c);
    let report = qvault::verify::verify(target, &Default::default()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.backups, 3);
}

#[tokio::test]
async fn copy_fs_to_fs_transfers_only_missing_chunks() {
    let t = TestRepo::new(None).await;
    let source = t.open().await;
    let dir = tempfile::tempdir().unwrap();
    let storage =
        Storage::open(dir.path().join("copy").to_str().unwrap(), &Default::default()).unwrap();
    let (target, _) = make_target(&source, storage).await;
    round_trip(&source, &target).await;
}

#[tokio::test]
async fn copy_fs_to_s3() {
    let Some(storage) = support::s3_storage(&support::unique_prefix("copy-target")) else {
        return;
    };
    let t = TestRepo::new(None).await;
    let source = t.open().await;
    let (target, _) = make_target(&source, storage).await;
    round_trip(&source, &target).await;
}

#[tokio::test]
async fn copy_s3_to_fs() {
    let Some(storage) = support::s3_storage(&support::unique_prefix("copy-source")) else {
        return;
    };
    let identity = x25519::Identity::generate();
    let options = InitOptions { recipients: vec![identity.to_public()], ..Default::default() };
    Repository::init(storage.clone(), options, &Cache::InMemory).await.unwrap();
    let credentials = Credentials { identities: vec![identity], key: None };
    let source = Repository::open(storage, credentials, &Cache::InMemory).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fs = Storage::open(dir.path().join("copy").to_str().unwrap(), &Default::default()).unwrap();
    let (target, _) = make_target(&source, fs).await;
    round_trip(&source, &target).await;
}

/// A copy that fails midway (a source pack is gone) writes no manifest; once the pack is
/// back, the rerun transfers only what the failed run did not.
#[tokio::test]
async fn failed_copy_leaves_no_manifest_and_a_rerun_sends_only_the_rest() {
    let t = TestRepo::new(None).await;
    let source = t.open().await;
    let a = backup_bytes(&source, "a.bin", noise(500_000, 11)).await;
    let b = backup_bytes(&source, "b.bin", noise(500_000, 12)).await;
    let dir = tempfile::tempdir().unwrap();
    let storage =
        Storage::open(dir.path().join("copy").to_str().unwrap(), &Default::default()).unwrap();
    let (target, _) = make_target(&source, storage.clone()).await;

    // b's chunks live in packs of their own (each backup writes its own packs).
    let b_pack = source
        .index()
        .locate(&crate::support::data_chunks(&source, &b.manifest).await[0])
        .unwrap()
        .unwrap()
        .pack;
    let path = t.location().join(qvault::repo::pack_path(&b_pack));
    let aside = t.dir.path().join("aside");
    std::fs::rename(&path, &aside).unwrap();
    let err = copy(&source, &target, &all(), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(&format!("pack {b_pack}")), "{err}");
    assert!(storage.list("backups").await.unwrap().is_empty(), "no manifest after a failure");

    std::fs::rename(&aside, &path).unwrap();
    // A fresh process: only what storage holds counts (the cache is in memory).
    let credentials = Credentials {
        identities: vec![],
        key: Some(
            qvault::format::keyfile::decode(target.export_key().unwrap().expose(), "k").unwrap(),
        ),
    };
    drop(target);
    let target = Repository::open(storage, credentials, &Cache::InMemory).await.unwrap();
    let rerun = copy(&source, &target, &all(), false).await.unwrap();
    assert_eq!(rerun.copied.len(), 2);
    assert_eq!(rerun.chunks_copied, b.manifest.summary.chunks, "a's chunks were not sent again");
    assert!(rerun.plan.chunks < a.manifest.summary.chunks + b.manifest.summary.chunks);
}

#[tokio::test]
async fn a_target_not_made_from_the_source_is_refused() {
    let t = TestRepo::new(None).await;
    let source = t.open().await;
    backup_bytes(&source, "a.bin", noise(100_000, 5)).await;
    let other = TestRepo::new(None).await;
    let other_repo = other.open().await;
    let err = copy(&source, &other_repo, &all(), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(err.to_string().contains("qvault init --copy-from"), "{err}");
    assert!(other_repo.backups().unwrap().is_empty());
}

#[tokio::test]
async fn copy_needs_the_source_data_identity_and_a_dry_run_writes_nothing() {
    let t = TestRepo::new(None).await;
    let admin = t.open().await;
    let a = backup_bytes(&admin, "a.bin", noise(200_000, 7)).await;
    let host = support::open_as_backup_host(&admin, &t.storage()).await;
    let dir = tempfile::tempdir().unwrap();
    let storage =
        Storage::open(dir.path().join("copy").to_str().unwrap(), &Default::default()).unwrap();
    let (target, _) = make_target(&admin, storage.clone()).await;

    let dry = copy(&host, &target, &all(), true).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.plan.chunks, a.manifest.summary.chunks);
    assert_eq!(dry.plan.backups.len(), 1);
    assert!(storage.list("data").await.unwrap().is_empty());

    let err = copy(&host, &target, &all(), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NeedsDataIdentity, "{err}");
    assert!(storage.list("backups").await.unwrap().is_empty());
}

#[tokio::test]
async fn copy_selects_by_id_latest_name_and_tag() {
    let t = TestRepo::new(None).await;
    let source = t.open().await;
    let a = backup_bytes(&source, "a.bin", noise(50_000, 21)).await;
    let b = backup_bytes(&source, "b.bin", noise(50_000, 22)).await;
    let dir = tempfile::tempdir().unwrap();
    let storage =
        Storage::open(dir.path().join("copy").to_str().unwrap(), &Default::default()).unwrap();
    let (target, _) = make_target(&source, storage).await;
    let only = |ids: &[&str]| CopyOptions {
        backups: ids.iter().map(|s| s.to_string()).collect(),
        ..all()
    };
    let latest = copy(&source, &target, &only(&["latest"]), true).await.unwrap();
    let ids: Vec<_> = latest.plan.backups.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![b.id]);
    let by_id = copy(&source, &target, &only(&[&a.id.to_hex()[..8]]), false).await.unwrap();
    assert_eq!(by_id.copied.keys().copied().collect::<Vec<_>>(), vec![a.id]);
    let named = CopyOptions { name: Some("nightly".into()), ..all() };
    assert!(copy(&source, &target, &named, true).await.unwrap().plan.backups.is_empty());
    let tagged = CopyOptions { tags: vec![("env".into(), None)], ..all() };
    assert!(copy(&source, &target, &tagged, true).await.unwrap().plan.backups.is_empty());
}

/// The binary with the test's cache and config directories but no repository or identity.
fn bare(t: &TestRepo) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qvault"));
    cmd.env("QVAULT_CACHE_DIR", t.dir.path().join("cli-cache"))
        .env("XDG_CONFIG_HOME", t.dir.path().join("config"))
        .env_remove("QVAULT_REPOSITORY")
        .env_remove("QVAULT_IDENTITY")
        .env_remove("QVAULT_KEY")
        .env_remove("QVAULT_EXPECT_KEY");
    cmd
}

/// The operator's path: `init --copy-from`, then `copy --json`, then the copy restores.
#[tokio::test]
async fn cli_init_copy_from_then_copy_json() {
    let t = TestRepo::new(None).await;
    let data = noise(300_000, 31);
    std::fs::write(t.dir.path().join("in.bin"), &data).unwrap();
    let out = t
        .cli()
        .args(["backup", "--name", "db", "--file"])
        .arg(t.dir.path().join("in.bin"))
        .output();
    assert!(out.unwrap().status.success());
    let target = t.dir.path().join("offsite");
    let target_identity = t.dir.path().join("offsite-identity.txt");
    let key = t.dir.path().join("offsite.key");
    let out = bare(&t)
        .args(["init", "--copy-from"])
        .arg(t.location())
        .arg("--from-identity")
        .arg(t.identity_path())
        .arg("--repo")
        .arg(&target)
        .arg("--identity")
        .arg(&target_identity)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bare(&t)
        .args(["key", "export", "--out"])
        .arg(&key)
        .arg("--repo")
        .arg(&target)
        .arg("--identity")
        .arg(&target_identity)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out =
        t.cli().args(["--json", "copy", "--to"]).arg(&target).arg("--to-key").arg(&key).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["copied"].as_object().unwrap().len(), 1);
    assert!(json["bytes_written"].as_u64().unwrap() > 300_000);
    let copied_id = json["copied"].as_object().unwrap().values().next().unwrap().clone();

    let restored = t.dir.path().join("out.bin");
    let out = bare(&t)
        .args(["restore", copied_id.as_str().unwrap(), "--to"])
        .arg(&restored)
        .arg("--repo")
        .arg(&target)
        .arg("--identity")
        .arg(&target_identity)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&restored).unwrap(), data);

    // Without credentials for the target: a usage error that says which flag.
    let out = t.cli().args(["copy", "--to"]).arg(&target).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to-key"));
}

/// A copy killed after its pack uploads but before any index file or manifest: the rerun
/// indexes the packs it finds unlisted and sends nothing again.
#[tokio::test]
async fn a_rerun_after_a_kill_reuses_the_packs_the_killed_copy_uploaded() {
    let t = TestRepo::new(None).await;
    let source = t.open().await;
    let a = backup_bytes(&source, "a.bin", noise(400_000, 41)).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("copy");
    let storage = Storage::open(root.to_str().unwrap(), &Default::default()).unwrap();
    let (target, _) = make_target(&source, storage.clone()).await;
    let first = copy(&source, &target, &all(), false).await.unwrap();
    assert_eq!(first.chunks_copied, a.manifest.summary.chunks);
    let key = qvault::format::keyfile::decode(target.export_key().unwrap().expose(), "k").unwrap();
    drop(target);
    // What a kill between the pack uploads and the index file leaves: packs only.
    for dir in ["index", "backups"] {
        std::fs::remove_dir_all(root.join(dir)).unwrap();
    }
    let packs_before = storage.list("data").await.unwrap().len();
    let credentials = Credentials { identities: vec![], key: Some(key) };
    let target = Repository::open(storage.clone(), credentials, &Cache::InMemory).await.unwrap();
    assert!(target.backups().unwrap().is_empty());
    let rerun = copy(&source, &target, &all(), false).await.unwrap();
    assert_eq!(rerun.chunks_copied, 0, "the uploaded packs were reused");
    assert_eq!(rerun.copied.len(), 1);
    assert_eq!(storage.list("data").await.unwrap().len(), packs_before);
    let report = qvault::verify::verify(&target, &Default::default()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// A prune of the target marked the packs holding a backup's chunks (the target's copy of
/// it was forgotten); copying the backup again must not reference those packs, which the
/// next prune deletes: the chunks are copied again and the copy restores after that prune.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_never_dedups_against_packs_a_prune_of_the_target_marked() {
    use qvault::prune::{prune, PruneOptions};
    let source_dir = TestRepo::new(None).await;
    let source = source_dir.open().await;
    let target_dir = tempfile::tempdir().unwrap();
    let root = target_dir.path().join("copy");
    let storage = Storage::open(root.to_str().unwrap(), &Default::default()).unwrap();
    let (target, _) = make_target(&source, storage).await;
    let data = noise(500_000, 7);
    let summary = backup_bytes(&source, "a.bin", data.clone()).await;

    let first = copy(&source, &target, &all(), false).await.unwrap();
    target.delete_manifest(first.copied[&summary.id]).await.unwrap();
    let marked = prune(&target, &PruneOptions::default()).await.unwrap();
    assert!(marked.packs_marked > 0 && marked.packs_deleted == 0, "{marked:?}");

    let again = copy(&source, &target, &all(), false).await.unwrap();
    assert_eq!(again.chunks_copied, first.chunks_copied, "marked packs count as missing");
    let deleted = prune(&target, &PruneOptions::default()).await.unwrap();
    assert_eq!(deleted.packs_deleted, marked.packs_marked, "{deleted:?}");

    let mut in_target = summary.clone();
    in_target.id = again.copied[&summary.id];
    assert_eq!(restore_bytes(&target, &in_target).await.unwrap(), data);
    assert!(
        std::fs::read_dir(root.join("locks")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("lease")),
        "the copy's lease is released"
    );
}

/// List blocks go into packs sealed to the target's metadata key, as a backup writes them: a
/// host holding only the target's repository key walks every copied backup's references, finds
/// each in its index, and a prune there reads them all and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_list_blocks_are_readable_with_the_target_key_alone() {
    // The smallest chunks FastCDC allows: a few MB need two levels of list blocks.
    let tiny = qvault::format::config::ChunkerConfig {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        tar_aware: false,
        ..Default::default()
    };
    let t = TestRepo::new(Some(tiny)).await;
    let source = t.open().await;
    let a = backup_bytes(&source, "a", qvault_synth::pseudo_random(3 << 20, 41)).await;
    let b = backup_bytes(&source, "b", qvault_synth::pseudo_random(2 << 20, 42)).await;
    let levels = a.manifest.streams[0].list.as_ref().map(|l| l.levels);
    assert!(levels >= Some(1), "{levels:?}");
    let dir = tempfile::tempdir().unwrap();
    let storage =
        Storage::open(dir.path().join("copy").to_str().unwrap(), &Default::default()).unwrap();
    let (target, _) = make_target(&source, storage.clone()).await;
    let report = copy(&source, &target, &all(), false).await.unwrap();
    assert_eq!(report.copied.len(), 2);

    let host = support::open_as_backup_host(&target, &storage).await;
    for summary in [&a, &b] {
        let manifest = host.read_manifest(report.copied[&summary.id]).await.unwrap();
        let mut lists = 0;
        let mut refs = std::collections::HashSet::new();
        qvault::refs::for_each_reference(&host, &manifest, |id, kind| {
            lists += usize::from(kind == qvault::refs::RefKind::ListBlock);
            refs.insert(*id);
        })
        .await
        .unwrap();
        assert!(lists > 1, "{lists}");
        assert_eq!(refs, qvault::refs::chunk_set(&source, &summary.manifest).await.unwrap());
        for id in &refs {
            assert!(host.index().contains_chunk(id).unwrap(), "{id} missing in the target");
        }
    }
    let pruned = qvault::prune::prune(&host, &Default::default()).await.unwrap();
    assert!(pruned.plan.delete_packs.is_empty(), "{:?}", pruned.plan);
    assert!(pruned.plan.mark_unused.is_empty(), "{:?}", pruned.plan);
    let report = qvault::verify::verify(&host, &Default::default()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}
