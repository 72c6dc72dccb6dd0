//! Fault injection: a storage that fails, stalls or loses answers for a seeded fraction of
//! requests, and backups killed at seeded points. Either way a backup succeeds or fails with
//! a clear error, and no backup is ever recorded that cannot be restored.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use qvault::format::config::ChunkerConfig;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::storage::{FaultPlan, Storage};
use qvault::verify::{verify, VerifyOptions};
use qvault::ErrorKind;
use qvault_synth::pseudo_random;
use support::TestRepo;

/// Small chunks and packs, so a megabyte makes a few dozen packs and index files.
fn small_options(identity: &age::x25519::Identity) -> InitOptions {
    InitOptions {
        recipients: vec![identity.to_public()],
        chunker: Some(ChunkerConfig {
            min_size: 4 << 10,
            avg_size: 16 << 10,
            max_size: 64 << 10,
            ..ChunkerConfig::default()
        }),
        pack_size: Some(64 << 10),
        ..Default::default()
    }
}

/// A failure from a faulty storage must say it is a storage error and name the request.
fn assert_clear(e: &qvault::Error, what: &str) {
    let text = e.to_string();
    assert!(
        e.kind() == ErrorKind::Storage
            && text.contains("injected fault")
            && text.contains("memory://"),
        "{what}: unclear error {:?}: {text}",
        e.kind()
    );
}

/// Every backup the repository lists verifies and restores byte-exact (read fault-free).
async fn assert_every_backup_restores(
    clean: &Storage,
    identity: &age::x25519::Identity,
    data: &[u8],
) -> usize {
    let credentials = Credentials { identities: vec![identity.clone()], key: None };
    let repo = Repository::open(clean.clone(), credentials, &Cache::InMemory).await.unwrap();
    let report =
        verify(&repo, &VerifyOptions { read_data: true, ..Default::default() }).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.damaged_backups.is_empty(), "{:?}", report.damaged_backups);
    let listed = repo.backups().unwrap();
    for b in &listed {
        let manifest = repo.read_manifest(b.id).await.unwrap();
        let stream = &manifest.streams[0];
        let (out, _) =
            qvault::restore::restore_stream(&repo, b.id, stream, Vec::new(), &Default::default())
                .await
                .unwrap();
        assert!(out == data, "backup {} restores different bytes", b.id);
    }
    listed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_storage_never_records_a_backup_that_cannot_be_restored() {
    let identity = age::x25519::Identity::generate();
    let data = pseudo_random(768 << 10, 42);
    let (mut backups_ok, mut restores_ok, mut failures) = (0, 0, 0);
    for seed in 0..16u64 {
        let plan = FaultPlan {
            seed,
            fail_per_mille: 15,
            cut_per_mille: 15,
            delay_per_mille: 50,
            delay: Duration::from_millis(2),
        };
        let (faulty, clean) = Storage::memory_with_faults(plan);
        Repository::init(clean.clone(), small_options(&identity), &Cache::InMemory).await.unwrap();
        let credentials = Credentials { identities: vec![identity.clone()], key: None };
        let repo = match Repository::open(faulty.clone(), credentials, &Cache::InMemory).await {
            Ok(r) => r,
            Err(e) => {
                assert_clear(&e, "open");
                failures += 1;
                continue;
            }
        };
        let source = qvault::backup::StreamSource {
            name: "data".into(),
            kind: qvault::format::manifest::StreamKind::File,
            reader: Box::new(std::io::Cursor::new(data.clone())),
            source: None,
            expected_sha256: None,
            left_out: None,
        };
        let result =
            qvault::backup::backup(&repo, vec![source], &Default::default(), Arc::default()).await;
        match &result {
            Ok(summary) => {
                backups_ok += 1;
                let stream = &summary.manifest.streams[0];
                match qvault::restore::restore_stream(
                    &repo,
                    summary.id,
                    stream,
                    Vec::new(),
                    &Default::default(),
                )
                .await
                {
                    Ok((out, _)) => {
                        assert!(out == data, "seed {seed}: restore through faults differs");
                        restores_ok += 1;
                    }
                    Err(e) => assert_clear(&e, "restore"),
                }
            }
            Err(e) => {
                failures += 1;
                assert_clear(e, "backup");
            }
        }
        let listed = assert_every_backup_restores(&clean, &identity, &data).await;
        if result.is_ok() {
            assert_eq!(listed, 1, "seed {seed}: a backup that returned Ok is recorded");
        }
    }
    println!(
        "faults: {backups_ok} backups ok, {restores_ok} restores ok, {failures} clear failures"
    );
    assert!(backups_ok > 0 && failures > 0, "the plan must exercise both outcomes");
}

/// The repository's stored bytes under `data/`.
fn stored_pack_bytes(repo: &TestRepo) -> u64 {
    fn walk(dir: &std::path::Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries
            .map(|e| e.unwrap())
            .map(|e| {
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path())
                } else {
                    e.metadata().unwrap().len()
                }
            })
            .sum()
    }
    walk(&repo.location().join("data"))
}

/// Kills `qvault backup` at 32 seeded points (right after its Nth pack upload, before an
/// index file names that pack); after each kill `verify` is clean, the next backup reuses
/// what the killed run stored, and it restores byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_leaves_a_clean_repository_and_the_rerun_reuses_its_packs() {
    let dir = tempfile::tempdir().unwrap();
    let identity = age::x25519::Identity::generate();
    let repo = TestRepo { dir, identity };
    Repository::init(repo.storage(), small_options(&repo.identity), &repo.cache()).await.unwrap();
    std::fs::write(repo.identity_path(), repo.identity.to_string().expose_secret()).unwrap();
    let file = repo.dir.path().join("source.bin");
    let size = 768 << 10;
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut killed = 0;
    for round in 0..32u64 {
        // A new file each round, so every killed run has packs to upload.
        let data = pseudo_random(size, 1000 + round);
        std::fs::write(&file, &data).unwrap();
        rng_state = rng_state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let abort_after = 1 + (rng_state >> 33) % 10; // 768 KiB make ~12 packs
        let before = stored_pack_bytes(&repo);
        let run = |hook: Option<u64>| {
            let mut cmd = repo.cli();
            cmd.args(["--json", "backup", "--file"]).arg(&file);
            if let Some(n) = hook {
                cmd.env("QVAULT_TEST_ABORT_AFTER_PACKS", n.to_string());
            }
            async move { tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap() }
        };
        let out = run(Some(abort_after)).await;
        if out.status.success() {
            continue; // fewer packs than the abort point: nothing was killed
        }
        killed += 1;
        let killed_added = stored_pack_bytes(&repo) - before;
        assert!(killed_added > 0, "round {round}: the killed run stored packs");

        let opened = repo.open().await;
        let report = verify(&opened, &VerifyOptions::default()).await.unwrap();
        assert!(report.problems.is_empty(), "round {round}: {:?}", report.problems);
        assert!(report.damaged_backups.is_empty(), "round {round}");
        drop(opened);

        let out = run(None).await;
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let added = v["bytes_added"].as_u64().unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        // Random data does not compress: one full copy is about `size` plus overhead. The
        // killed run's packs are reused, so the two runs together store one copy, not more.
        assert!(
            killed_added + added < size as u64 * 115 / 100,
            "round {round}: killed run stored {killed_added}, rerun added {added} of {size}"
        );
        let opened = repo.open().await;
        let id = opened.resolve_backup(&id).unwrap();
        let manifest = opened.read_manifest(id).await.unwrap();
        let (out, _) = qvault::restore::restore_stream(
            &opened,
            id,
            &manifest.streams[0],
            Vec::new(),
            &Default::default(),
        )
        .await
        .unwrap();
        assert!(out == data, "round {round}: restore differs");
    }
    assert!(killed >= 30, "only {killed} runs were killed");
}

/// A partial object a killed run left in a filesystem repository's `.qvault-tmp/` is
/// removed by the next backup once it is over an hour old; a fresh one (maybe another
/// host's write in progress) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_temporary_files_are_removed_at_backup_start() {
    let repo = TestRepo::new(None).await;
    let tmp = repo.location().join(".qvault-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let old = tmp.join("data-partial-old");
    let fresh = tmp.join("data-partial-fresh");
    std::fs::write(&old, vec![7u8; 5000]).unwrap();
    std::fs::write(&fresh, vec![7u8; 3000]).unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(two_hours_ago).unwrap();
    let opened = repo.open().await;
    support::backup_bytes(&opened, "f", pseudo_random(10_000, 1)).await;
    assert!(!old.exists(), "an old partial object is removed");
    assert!(fresh.exists(), "a fresh temporary file is left alone");
    let again = repo.storage().remove_stale_temporaries(qvault::storage::STALE_TMP_AGE).await;
    assert_eq!(again.unwrap(), qvault::storage::StaleTemporaries::default());
    let all = repo.storage().remove_stale_temporaries(Duration::ZERO).await.unwrap();
    assert_eq!(all, qvault::storage::StaleTemporaries { files: 1, bytes: 3000 });
}
