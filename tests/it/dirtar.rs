//! `backup --dir` and `restore --to-dir`: a directory as a deterministic tar stream, dedup
//! run to run, safe extraction.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use qvault::backup::{backup, BackupOptions, Progress, StreamSource};
use qvault::dirtar::{tar_reader, DirExtractor};
use qvault::format::manifest::StreamKind;
use qvault::repo::Repository;
use qvault::restore::{restore_stream, RestoreOptions};
use qvault_synth::pseudo_random;
use support::TestRepo;

/// A storage-directory-like tree: segments, a WAL, small JSON files, a symlink.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("collections/c/0/segments/seg-a")).unwrap();
    std::fs::create_dir_all(root.join("collections/c/0/wal")).unwrap();
    std::fs::write(
        root.join("collections/c/0/segments/seg-a/vectors.dat"),
        pseudo_random(3 << 20, 1),
    )
    .unwrap();
    std::fs::write(
        root.join("collections/c/0/segments/seg-a/payload.dat"),
        pseudo_random(1 << 20, 2),
    )
    .unwrap();
    std::fs::write(root.join("collections/c/0/wal/open-1"), vec![0u8; 2 << 20]).unwrap();
    std::fs::write(root.join("collections/c/config.json"), br#"{"params":{}}"#).unwrap();
    std::fs::write(root.join("raft_state.json"), b"{}").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("collections/c/config.json", root.join("link")).unwrap();
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

/// Every file's relative path and content (symlinks as their target).
fn snapshot_of(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.push((
                    rel,
                    std::fs::read_link(&p).unwrap().to_string_lossy().as_bytes().to_vec(),
                ));
            } else if ft.is_dir() {
                out.push((rel.clone() + "/", Vec::new()));
                walk(root, &p, out);
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

async fn backup_dir(repo: &Repository, dir: &Path) -> qvault::backup::BackupSummary {
    let source = StreamSource {
        name: "storage".into(),
        kind: StreamKind::Directory,
        reader: tar_reader(dir).unwrap(),
        source: None,
        expected_sha256: None,
        left_out: None,
    };
    backup(repo, vec![source], &BackupOptions::default(), Arc::new(Progress::default()))
        .await
        .unwrap()
}

#[test]
fn the_tar_stream_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    make_tree(tmp.path());
    let a = read_all(tar_reader(tmp.path()).unwrap());
    let b = read_all(tar_reader(tmp.path()).unwrap());
    assert_eq!(a, b);
    // Sorted order, relative paths.
    let mut archive = tar::Archive::new(&a[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names.first().map(String::as_str), Some("collections"));
    assert!(names.iter().all(|n| !n.starts_with('/')), "{names:?}");
    assert_eq!(names.len(), sorted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_round_trip_and_dedup_run_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    make_tree(&src);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;

    let first = backup_dir(&repo, &src).await;
    // A small change: one small file rewritten, one WAL page written.
    std::fs::write(src.join("raft_state.json"), b"{\"term\":2}").unwrap();
    let mut wal = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("collections/c/0/wal/open-1"))
        .unwrap();
    wal.write_all(&pseudo_random(4096, 9)).unwrap();
    drop(wal);
    let second = backup_dir(&repo, &src).await;
    let (a, b) = (&first.manifest.summary, &second.manifest.summary);
    println!(
        "dir dedup: first read {} added {}; second read {} added {} ({} of {} chunks new)",
        a.bytes_read, a.bytes_added, b.bytes_read, b.bytes_added, b.new_chunks, b.chunks
    );
    assert!(b.bytes_added * 4 < a.bytes_added, "unchanged files must dedup");

    let out = tmp.path().join("restored");
    let extractor = DirExtractor::new(&out).unwrap();
    let stream = &second.manifest.streams[0];
    let (extractor, _) =
        restore_stream(&repo, second.id, stream, extractor, &RestoreOptions::default())
            .await
            .unwrap();
    extractor.finish().unwrap();
    assert_eq!(snapshot_of(&out), snapshot_of(&src));
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A tar whose one entry has the raw name `name` (tar-rs's builder refuses such names).
fn tar_with_raw_name(name: &str) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(5);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(b"evil\n");
    out.resize(1024, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn extraction_refuses_parent_and_absolute_paths() {
    for name in ["../evil.txt", "/tmp/qvault-evil.txt", "a/../../evil.txt"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut extractor = DirExtractor::new(&out).unwrap();
        let _ = extractor.write_all(&tar_with_raw_name(name));
        let e = extractor.finish().unwrap_err();
        assert!(e.to_string().contains("outside the target directory"), "{name}: {e}");
        assert!(!tmp.path().join("evil.txt").exists());
        assert!(!out.exists(), "nothing extracted");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "staging removed");
    }
    assert!(!Path::new("/tmp/qvault-evil.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_backup_dir_and_restore_to_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    make_tree(&src);
    let repo = TestRepo::new(None).await;
    let run = |args: Vec<String>| {
        let mut cmd = repo.cli();
        cmd.args(args);
        async move { tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap() }
    };
    let out =
        run(vec!["--json".into(), "backup".into(), "--dir".into(), src.to_string_lossy().into()])
            .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let dest = tmp.path().join("back");
    let args = vec!["--json".into(), "restore".into(), id.clone(), "--to-dir".into()];
    let out = run([args, vec![dest.to_string_lossy().into()]].concat()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot_of(&dest), snapshot_of(&src));
    // The report: the stream restore's fields, and where the tree went.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["id"].as_str(), v["dir"].as_str()), (Some(&*id), dest.to_str()));
    assert!(v["entries"].as_u64().unwrap() > 0 && v["sha256"].is_string(), "{v}");
    assert!(v["bytes"].as_u64().unwrap() > 0 && v["seconds"].is_f64(), "{v}");
}
