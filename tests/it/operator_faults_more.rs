//! More faults a tester found (try4): a copy into a full target, an init on a full disk,
//! and file names that would forge lines or colours on a terminal.

use crate::operator_faults::{failed_on_a_full_repository, Mounted};
use crate::prune::data;
use crate::support::{self, TestRepo};
use std::path::Path;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names under `dir`, sorted (empty when it is missing).
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<String> =
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    out.sort();
    out
}

/// A full target names the storage error (exit 6, with the advice), not the stage that
/// stopped because of it; with room, the same copy runs and the copied backup restores.
#[test]
fn a_copy_into_a_full_target_exits_6_naming_the_cause_and_a_rerun_with_room_succeeds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let input = data(3_000_000, 43);
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, &input).unwrap();
    let out = t.cli().args(["backup", "--name", "big", "--file"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let target = t.dir.path().join("target");
    let recipient = t.identity.to_public().to_string();
    let out = t
        .cli_on(&target)
        // Small packs: the uploads fail while the packers still have packs to hand over.
        .args(["init", "--pack-size", "262144", "--recipient", &recipient, "--copy-from"])
        .arg(t.location())
        .arg("--from-identity")
        .arg(t.identity_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let Some(mounted) = Mounted::tmpfs_at(&target, "2m") else { return };

    let copy = || {
        t.cli()
            .args(["copy", "--to"])
            .arg(&target)
            .arg("--to-identity")
            .arg(t.identity_path())
            .output()
            .unwrap()
    };
    let out = copy();
    let err = failed_on_a_full_repository(&out);
    assert!(err.contains("copy failed, no backup copied"), "{err}");
    assert!(!err.contains("pipeline stopped"), "{err}");
    assert_eq!(names(&target.join("backups")), Vec::<String>::new());
    assert_eq!(names(&target.join(".qvault-tmp")), Vec::<String>::new());

    mounted.remount("size=64m");
    let out = copy();
    assert!(out.status.success(), "{}", stderr(&out));
    let back = t.dir.path().join("back.bin");
    let out = t.cli_on(&target).args(["restore", "latest", "--to"]).arg(&back).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&back).unwrap() == input, "restored bytes differ");
}

/// Fills the filesystem holding `dir` but for one page, so init's key object fits and its
/// config does not.
fn fill_but_one_page(dir: &Path) {
    let page = vec![0u8; 4096];
    for n in 0.. {
        if std::fs::write(dir.join(format!("filler-{n}")), &page).is_err() {
            let _ = std::fs::remove_file(dir.join(format!("filler-{n}")));
            std::fs::remove_file(dir.join("filler-0")).unwrap();
            return;
        }
    }
}

/// init on a full disk fails as storage (exit 6), leaves nothing of its own behind, and
/// the same init runs once there is room (it used to refuse the `keys/` it had left).
#[test]
fn an_init_on_a_full_disk_removes_what_it_wrote_and_succeeds_after_space_is_freed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let disk = t.dir.path().join("disk");
    let Some(mounted) = Mounted::tmpfs_at(&disk, "256k") else { return };
    fill_but_one_page(&disk);
    let repo = disk.join("repo");
    let recipient = t.identity.to_public().to_string();
    let init = || t.cli_on(&repo).args(["init", "--recipient", &recipient]).output().unwrap();

    let out = init();
    let err = failed_on_a_full_repository(&out);
    // The key object was written and removed again: the config write is what failed.
    assert!(err.contains("writing config in"), "{err}");
    assert!(!err.contains("`qvault prune` frees"), "{err}");
    let left: Vec<String> = names(&repo).into_iter().filter(|n| n != ".qvault-tmp").collect();
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(names(&repo.join(".qvault-tmp")), Vec::<String>::new());

    mounted.remount("size=8m");
    let out = init();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(names(&repo.join("keys")).len(), 1);
    let out = t.cli_on(&repo).arg("backups").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A file name with a newline and an ANSI escape, unreadable by the backup's user: `show`
/// and the exit-10 error show it escaped (no forged line, no colour); JSON keeps it raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_left_out_path_with_control_characters_is_shown_escaped_not_raw() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestRepo::new(None).await;
    let Some(mut cmd) = support::as_nobody(&t.cli()) else { return };
    let src = t.dir.path().join("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"readable").unwrap();
    let evil = "b\n  and 0 more\nstream   fake (File)\u{1b}[31mRED";
    std::fs::write(src.join(evil), b"no permission").unwrap();
    support::chmod_r("a+rwX", t.dir.path());
    std::fs::set_permissions(src.join(evil), std::fs::Permissions::from_mode(0o000)).unwrap();
    let escaped =
        format!("{}/b\\n  and 0 more\\nstream   fake (File)\\u{{1b}}[31mRED", src.display());

    let out = cmd.args(["backup", "--dir"]).arg(&src).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(err.contains("but 1 path could not be read and was left out: "), "{err}");
    assert!(err.contains(&escaped), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains("\n  and 0 more"), "{err:?}");

    let out = t.cli().args(["show", "latest"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("INCOMPLETE: 1 path could not be read and was left out\n"), "{text}");
    assert!(text.contains(&format!("    {escaped}: ")), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.lines().any(|l| l.starts_with("stream   fake") || l == "  and 0 more"));

    let out = t.cli().args(["--json", "show", "latest"]).output().unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = &shown["streams"][0]["unreadable"]["paths"][0]["path"];
    assert_eq!(path.as_str(), Some(src.join(evil).to_str().unwrap()), "{shown}");
}

/// `restore --to-dir` of a file backup says what it is and what to use (it failed with
/// "failed to read entire block" from the tar reader), and creates nothing.
#[test]
fn restore_to_dir_of_a_file_backup_says_to_use_to_and_creates_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, data(10_000, 44)).unwrap();
    let out = t.cli().args(["backup", "--file"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = t.dir.path().join("tree");
    let out = t.cli().args(["restore", "latest", "--to-dir"]).arg(&dir).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("stream in.bin of backup "), "{err}");
    assert!(err.contains("is not a directory backup (`backup --dir`): restore it with --to FILE"));
    assert!(!dir.exists());
}
