//! Directory trees restore as they were (`backup --dir` / `restore --to-dir`): read-only
//! directories, sparse files, symlinks (relative, absolute, dangling), hard links, names
//! that are not UTF-8, long names, empty directories, mtimes and modes. One test per kind.

#![cfg(unix)]

use crate::support;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qvault::backup::{backup, BackupOptions, Progress, StreamSource};
use qvault::dirtar::{tar_reader, DirExtractor};
use qvault::format::manifest::StreamKind;
use qvault::restore::{restore_stream, RestoreOptions};
use support::TestRepo;

/// Backs `src` up as a directory stream and restores it into a new `restored/` beside it.
async fn round_trip(src: &Path) -> PathBuf {
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let source = StreamSource {
        name: "storage".into(),
        kind: StreamKind::Directory,
        reader: tar_reader(src).unwrap(),
        source: None,
        expected_sha256: None,
        left_out: None,
    };
    let summary =
        backup(&repo, vec![source], &BackupOptions::default(), Arc::new(Progress::default()))
            .await
            .unwrap();
    let out = src.with_file_name("restored");
    let extractor = DirExtractor::new(&out).unwrap();
    let stream = &summary.manifest.streams[0];
    let (extractor, _) =
        restore_stream(&repo, summary.id, stream, extractor, &RestoreOptions::default())
            .await
            .unwrap();
    extractor.finish().unwrap();
    out
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Sets `path`'s mtime without following a symlink.
fn set_mtime(path: &Path, secs: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec { tv_sec: secs, tv_nsec: 0 };
    let times = [t, t];
    // SAFETY: a valid path and two initialized timespecs.
    let rc = unsafe {
        libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

fn mtime_of(path: &Path) -> i64 {
    std::fs::symlink_metadata(path).unwrap().mtime()
}

/// Makes a read-only tree writable again so the temporary directory can be removed.
fn open_up(dir: &Path) {
    chmod(dir, 0o755);
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            open_up(&e.path());
        }
    }
}

fn read_only_tree(src: &Path) {
    std::fs::create_dir_all(src.join("ro/inner")).unwrap();
    std::fs::write(src.join("ro/a.json"), b"{\"a\":1}").unwrap();
    std::fs::write(src.join("ro/inner/b.dat"), b"bbbb").unwrap();
    chmod(&src.join("ro/a.json"), 0o444);
    chmod(&src.join("ro/inner"), 0o555);
    chmod(&src.join("ro"), 0o555);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_directories_get_their_mode_after_their_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    read_only_tree(&src);
    let out = round_trip(&src).await;
    assert_eq!(mode_of(&out.join("ro")), 0o555);
    assert_eq!(mode_of(&out.join("ro/inner")), 0o555);
    assert_eq!(mode_of(&out.join("ro/a.json")), 0o444);
    assert_eq!(std::fs::read(out.join("ro/inner/b.dat")).unwrap(), b"bbbb");
    open_up(&src);
    open_up(&out);
}

/// The same restore by the CLI as an unprivileged user (where permission checks bite),
/// when the tests run as root and `setpriv` can drop privileges; skipped loudly otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_directories_restore_for_a_non_root_user() {
    let repo = TestRepo::new(None).await;
    let Some(mut cmd) = support::as_nobody(&repo.cli()) else { return };
    let src = repo.dir.path().join("storage");
    read_only_tree(&src);
    let out = repo.cli().args(["--json", "backup", "--dir"]).arg(&src).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    // Let the unprivileged user read the repository and write the cache and the target.
    support::chmod_r("a+rwX", repo.dir.path());
    let dest = repo.dir.path().join("back");
    let out = cmd.arg("restore").arg(&id).arg("--to-dir").arg(&dest).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(&dest).unwrap().uid(), 65534, "restored by the dropped user");
    assert_eq!(mode_of(&dest.join("ro")), 0o555);
    assert_eq!(mode_of(&dest.join("ro/inner")), 0o555);
    assert_eq!(std::fs::read(dest.join("ro/inner/b.dat")).unwrap(), b"bbbb");
    open_up(&src);
    open_up(&dest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_file_stays_sparse() {
    const SIZE: u64 = 256 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    std::fs::create_dir_all(&src).unwrap();
    let path = src.join("wal-segment");
    let mut f = std::fs::File::create(&path).unwrap();
    f.set_len(SIZE).unwrap();
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(100 << 20)).unwrap();
    let data = qvault_synth::pseudo_random(4096, 7);
    f.write_all(&data).unwrap();
    drop(f);
    let src_blocks = std::fs::metadata(&path).unwrap().blocks();
    if src_blocks * 512 > 1 << 20 {
        eprintln!("SKIPPED: this filesystem does not keep holes ({src_blocks} blocks)");
        return;
    }
    let out = round_trip(&src).await;
    let restored = out.join("wal-segment");
    let meta = std::fs::metadata(&restored).unwrap();
    assert_eq!(meta.len(), SIZE);
    assert!(meta.blocks() * 512 <= 64 << 10, "{} blocks allocated after restore", meta.blocks());
    let mut f = std::fs::File::open(&restored).unwrap();
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            let at = offset + i as u64;
            let want = if (100 << 20..(100 << 20) + 4096).contains(&at) {
                data[(at - (100 << 20)) as usize]
            } else {
                0
            };
            if *b != want {
                panic!("byte {at} differs");
            }
        }
        offset += n as u64;
    }
    assert_eq!(offset, SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_restore_as_links_relative_absolute_and_dangling() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("a/file"), b"content").unwrap();
    std::os::unix::fs::symlink("../a/file", src.join("b/link")).unwrap();
    std::os::unix::fs::symlink("/mnt/qdrant-snapshots", src.join("snapshots")).unwrap();
    std::os::unix::fs::symlink("../../nowhere", src.join("b/dangling")).unwrap();
    let out = round_trip(&src).await;
    assert_eq!(std::fs::read_link(out.join("b/link")).unwrap(), Path::new("../a/file"));
    assert_eq!(std::fs::read(out.join("b/link")).unwrap(), b"content");
    assert_eq!(
        std::fs::read_link(out.join("snapshots")).unwrap(),
        Path::new("/mnt/qdrant-snapshots")
    );
    assert_eq!(std::fs::read_link(out.join("b/dangling")).unwrap(), Path::new("../../nowhere"));
}

/// A tar with a symlink `x -> target` and then a file `x/evil` (or `x` itself) that a naive
/// extractor would write through the link.
fn tar_writing_through(link_target: &Path, file_path: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "x", link_target).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(5);
    h.set_mode(0o644);
    b.append_data(&mut h, file_path, &b"evil\n"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn nothing_is_written_through_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // Through a link to a directory outside: refused, nothing written there.
    let out = tmp.path().join("out");
    let mut extractor = DirExtractor::new(&out).unwrap();
    let _ = extractor.write_all(&tar_writing_through(&outside, "x/evil"));
    let e = extractor.finish().unwrap_err();
    assert_eq!(e.kind(), qvault::ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("would be written through `x`"), "{e}");
    assert!(!outside.join("evil").exists());
    assert!(!out.exists());
    // A file entry at the link's own name replaces the link; the outside file is untouched.
    let victim = outside.join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    let out2 = tmp.path().join("out2");
    let mut extractor = DirExtractor::new(&out2).unwrap();
    extractor.write_all(&tar_writing_through(&victim, "x")).unwrap();
    extractor.finish().unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(out2.join("x")).unwrap().is_file());
    assert_eq!(std::fs::read(out2.join("x")).unwrap(), b"evil\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_restore_as_one_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("a/data"), qvault_synth::pseudo_random(100_000, 3)).unwrap();
    std::fs::hard_link(src.join("a/data"), src.join("b/same")).unwrap();
    let out = round_trip(&src).await;
    let (a, b) = (
        std::fs::metadata(out.join("a/data")).unwrap(),
        std::fs::metadata(out.join("b/same")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "one inode, two names");
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        std::fs::read(out.join("b/same")).unwrap(),
        std::fs::read(src.join("a/data")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_utf8_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    let dir = src.join(OsStr::from_bytes(b"d\xff\xfe"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(OsStr::from_bytes(b"caf\xe9.json")), b"latin-1").unwrap();
    let out = round_trip(&src).await;
    let restored =
        out.join(OsStr::from_bytes(b"d\xff\xfe")).join(OsStr::from_bytes(b"caf\xe9.json"));
    assert_eq!(std::fs::read(restored).unwrap(), b"latin-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_and_long_paths_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    let long = "n".repeat(200); // over ustar's 100-byte name field
    let mut deep = src.clone();
    for i in 0..3 {
        deep.push(format!("{i}-{}", "d".repeat(120))); // a path far over 255 bytes
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join(&long), b"deep").unwrap();
    let link_target = format!("{}/{}", "t".repeat(150), "u".repeat(150));
    std::os::unix::fs::symlink(&link_target, src.join("longlink")).unwrap();
    let rel = deep.strip_prefix(&src).unwrap().join(&long);
    assert!(rel.as_os_str().len() > 255);
    let out = round_trip(&src).await;
    assert_eq!(std::fs::read(out.join(&rel)).unwrap(), b"deep");
    assert_eq!(std::fs::read_link(out.join("longlink")).unwrap(), Path::new(&link_target));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_directories_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    std::fs::create_dir_all(src.join("collections/empty/deeper")).unwrap();
    std::fs::create_dir_all(src.join("snapshots")).unwrap();
    let out = round_trip(&src).await;
    assert!(out.join("collections/empty/deeper").is_dir());
    assert_eq!(std::fs::read_dir(out.join("collections/empty/deeper")).unwrap().count(), 0);
    assert!(out.join("snapshots").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtimes_round_trip_for_files_directories_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("dir/sub/file"), b"x").unwrap();
    std::os::unix::fs::symlink("sub/file", src.join("dir/link")).unwrap();
    set_mtime(&src.join("dir/sub/file"), 1_500_000_000);
    set_mtime(&src.join("dir/link"), 1_500_000_100);
    set_mtime(&src.join("dir/sub"), 1_400_000_000);
    set_mtime(&src.join("dir"), 1_300_000_000);
    let out = round_trip(&src).await;
    assert_eq!(mtime_of(&out.join("dir/sub/file")), 1_500_000_000);
    assert_eq!(mtime_of(&out.join("dir/link")), 1_500_000_100);
    assert_eq!(mtime_of(&out.join("dir/sub")), 1_400_000_000, "set after its contents");
    assert_eq!(mtime_of(&out.join("dir")), 1_300_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_directory_modes_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("storage");
    std::fs::create_dir_all(src.join("private")).unwrap();
    let files = [("private/key", 0o600), ("run.sh", 0o755), ("group", 0o640), ("sticky", 0o1644)];
    for (name, mode) in files {
        std::fs::write(src.join(name), name.as_bytes()).unwrap();
        chmod(&src.join(name), mode);
    }
    chmod(&src.join("private"), 0o700);
    let out = round_trip(&src).await;
    for (name, mode) in files {
        assert_eq!(mode_of(&out.join(name)), mode, "{name}");
    }
    assert_eq!(mode_of(&out.join("private")), 0o700);
}

/// A directory entry later replaced by a symlink to outside: the directory's mode, applied
/// at the end, must not be applied through the link.
#[test]
fn a_directory_mode_is_never_applied_through_a_later_link() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    chmod(&outside, 0o700);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_data(&mut h, "d", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "d", &outside).unwrap();
    let out = tmp.path().join("out");
    let mut extractor = DirExtractor::new(&out).unwrap();
    extractor.write_all(&b.into_inner().unwrap()).unwrap();
    extractor.finish().unwrap();
    assert_eq!(std::fs::read_link(out.join("d")).unwrap(), outside);
    assert_eq!(mode_of(&outside), 0o700, "the outside directory's mode is untouched");
}
