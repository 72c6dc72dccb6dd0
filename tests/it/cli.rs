//! The CLI contract scripts rely on: flags and environment, `--json` shapes, exit codes,
//! and what is left on disk when something fails.
//!
//! Longer than 600 lines on purpose: one scenario per exit code and per `--json` shape, all
//! through the binary with the same `Env`; splitting them would only spread that setup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn repo(&self) -> String {
        self.path("repo").to_str().unwrap().to_string()
    }
    /// Runs qvault with a clean environment pointing at this test's directories.
    fn run(&self, args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qvault"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("QVAULT_CACHE_DIR", self.path("cache"))
            .env("QVAULT_REPOSITORY", self.repo());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if let Some(input) = stdin {
            use std::io::Write;
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            return child.wait_with_output().unwrap();
        }
        cmd.output().unwrap()
    }
    fn identity(&self) -> String {
        self.path("id.txt").to_str().unwrap().to_string()
    }
    /// `init` writing the identity to id.txt.
    fn init(&self) {
        let out = self.run(&["init", "--identity", &self.identity()], &[], None);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}
fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    qvault_synth::pseudo_random(len, u64::from(seed))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn init_backup_list_show_restore_round_trip() {
    let env = Env::new();
    let out = env.run(&["init", "--identity", &env.identity()], &[], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CANNOT BE RESTORED"),
        "init must warn plainly: {}",
        stderr(&out)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.identity()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let id = [("QVAULT_IDENTITY", env.identity())];
    let id: Vec<(&str, &str)> = id.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let input = data(3_000_000, 1);
    write(&env.path("in.bin"), &input);
    let out = env.run(
        &[
            "backup",
            "--file",
            env.path("in.bin").to_str().unwrap(),
            "--name",
            "n1",
            "--tag",
            "env=test",
            "--json",
        ],
        &id,
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let b = json(&out);
    assert_eq!(b["bytes_read"], 3_000_000);
    assert!(b["bytes_added"].as_u64().unwrap() > 0);
    let first_id = b["id"].as_str().unwrap().to_string();

    // stdin, same bytes: everything dedups.
    let out = env.run(&["backup", "-", "--json"], &id, Some(&input));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let b2 = json(&out);
    assert_eq!(b2["new_chunks"], 0);

    let out = env.run(&["backups", "--json"], &id, None);
    let list = json(&out);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for field in ["id", "time", "name", "tags", "bytes"] {
        assert!(list[0].get(field).is_some(), "backups --json lacks {field}");
    }
    assert_eq!(list[0]["tags"]["env"], "test");

    let out = env.run(&["show", &first_id[..8], "--json"], &id, None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["streams"][0]["size"], 3_000_000);

    let target = env.path("out.bin");
    let out = env.run(&["restore", &first_id, "--to", target.to_str().unwrap()], &id, None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), input);
    // Refuses to overwrite without --overwrite.
    let out = env.run(&["restore", &first_id, "--to", target.to_str().unwrap()], &id, None);
    assert_eq!(code(&out), 8, "{}", stderr(&out));

    let out = env.run(&["restore", "latest", "--to", "-"], &id, None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(out.stdout, input);

    // Deleting the cache loses nothing.
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    let out = env.run(&["index", "rebuild", "--json"], &id, None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["backups"], 2);
}

#[test]
fn a_location_without_a_repository_and_init_over_one() {
    let env = Env::new();
    let out = env.run(&["backups"], &[("QVAULT_IDENTITY", "/nonexistent")], None);
    assert_ne!(code(&out), 0);
    let out = env.run(&["backups", "--no-cache"], &[], None);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("there is no qvault repository at"), "{}", stderr(&out));

    env.init();
    let out = env.run(&["init", "--identity", env.path("id2.txt").to_str().unwrap()], &[], None);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(stderr(&out).contains("already holds a qvault repository"), "{}", stderr(&out));
    assert!(!env.path("id2.txt").exists(), "no identity is left for a refused init");
}

#[test]
fn wrong_identity_and_wrong_passphrase_exit_4() {
    let env = Env::new();
    let out = env.run(
        &["init", "--identity", &env.identity(), "--passphrase"],
        &[("QVAULT_PASSPHRASE", "right")],
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let protected = std::fs::read_to_string(env.identity()).unwrap();
    assert!(protected.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!protected.contains("AGE-SECRET-KEY"));

    let ok = env.run(
        &["backups"],
        &[("QVAULT_IDENTITY", &env.identity()), ("QVAULT_PASSPHRASE", "right")],
        None,
    );
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let out = env.run(
        &["backups"],
        &[("QVAULT_IDENTITY", &env.identity()), ("QVAULT_PASSPHRASE", "wrong")],
        None,
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("passphrase does not open"), "{}", stderr(&out));

    let other = env.path("other.txt");
    let identity = age::x25519::Identity::generate();
    write(&other, qvault::crypto::identity_file_text(&identity, "now").as_bytes());
    let out = env.run(&["backups"], &[("QVAULT_IDENTITY", other.to_str().unwrap())], None);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a recipient of the repository"), "{}", stderr(&out));
}

#[test]
fn a_write_only_host_backs_up_and_dedups_but_cannot_restore() {
    let env = Env::new();
    env.init();
    let admin = [("QVAULT_IDENTITY", env.identity())];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let key = env.path("host.key");
    let out = env.run(&["key", "export", "--out", key.to_str().unwrap()], &admin, None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let input = data(500_000, 2);
    let out = env.run(&["backup", "-", "--json"], &admin, Some(&input));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let host = [("QVAULT_KEY", key.to_str().unwrap())];
    let out = env.run(&["backup", "-", "--json"], &host, Some(&input));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["new_chunks"], 0, "the host dedups");
    let out = env.run(&["restore", "latest", "--to", env.path("x").to_str().unwrap()], &host, None);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("needs a data identity"), "{}", stderr(&out));
    assert!(!env.path("x").exists());
}

#[test]
fn an_unknown_format_version_exits_7() {
    let env = Env::new();
    env.init();
    let config_path = env.path("repo").join("config");
    let config = std::fs::read_to_string(&config_path).unwrap();
    // New repositories are version 2 (list blocks); 3 is unknown.
    write(&config_path, config.replace("\"version\": 2,", "\"version\": 3,").as_bytes());
    let out = env.run(&["backups"], &[("QVAULT_IDENTITY", &env.identity())], None);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("format version 3"), "{}", stderr(&out));
}

#[test]
fn a_flipped_byte_in_a_pack_fails_verify_and_restore_with_exit_5_and_leaves_no_output() {
    let env = Env::new();
    env.init();
    let id = [("QVAULT_IDENTITY", env.identity())];
    let id: Vec<(&str, &str)> = id.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = env.run(&["backup", "-", "--json"], &id, Some(&data(400_000, 3)));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let backup_id = json(&out)["id"].as_str().unwrap().to_string();
    let out = env.run(&["verify", "--read-data"], &id, None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no problems found"));
    let data_dir = env.path("repo").join("data");
    // The largest pack holds data chunks (a small one may hold only the chunk list, and pack
    // ids are random).
    let pack = walk(&data_dir)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[1000] ^= 0x40;
    write(&pack, &bytes);

    // verify names the pack and exits 5 too; before the damage it found nothing.
    let out = env.run(&["verify"], &id, None);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let pack_id = pack.file_name().unwrap().to_string_lossy().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains(&format!("PROBLEM pack {pack_id}: ")), "{stdout}");
    // …and the backup that pack keeps from restoring whole.
    assert!(
        stdout.contains(&format!("PROBLEM backup {backup_id}: "))
            && stdout.contains("in damaged packs"),
        "{stdout}"
    );
    assert!(stderr(&out).contains("verify found 2 problems in "), "{}", stderr(&out));

    let target = env.path("restored.bin");
    let out = env.run(&["restore", "latest", "--to", target.to_str().unwrap()], &id, None);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("backup {backup_id}")), "{err}");
    assert!(err.contains("stream \"stdin\""), "{err}");
    assert!(err.contains("chunk "), "{err}");
    let left: Vec<_> =
        std::fs::read_dir(env.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!target.exists(), "no output file after a failed restore");
    assert!(
        !left.iter().any(|n| n.to_string_lossy().contains("qvault-partial")),
        "no partial file left: {left:?}"
    );
}

/// The attack in docs/design.md: storage swaps in its own repository key, encrypted to the
/// admin's public key, and a config MAC'd with it. Everything would open and check.
#[test]
fn a_substituted_repository_key_is_refused_with_exit_4() {
    let env = Env::new();
    let out = env.run(&["init", "--json", "--identity", &env.identity()], &[], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let real_key = json(&out)["repository_key"].as_str().unwrap().to_string();
    assert!(real_key.starts_with("age1"), "{real_key}");
    let id = [("QVAULT_IDENTITY", env.identity())];
    let id: Vec<(&str, &str)> = id.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let known = env.path("home/.config/qvault/known-repositories.json");
    assert!(known.is_file(), "init remembers the repository it made");
    let expect_real: Vec<(&str, &str)> =
        id.iter().copied().chain([("QVAULT_EXPECT_KEY", real_key.as_str())]).collect();
    assert_eq!(code(&env.run(&["backups"], &expect_real, None)), 0);

    // The attacker's repository, readable by the admin's identity, copied over the real one.
    let admin_public = std::fs::read_to_string(env.identity())
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .unwrap();
    let evil = env.path("evil");
    let out = env.run(
        &["init", "--recipient", &admin_public],
        &[
            ("QVAULT_REPOSITORY", evil.to_str().unwrap()),
            ("HOME", env.path("attacker").to_str().unwrap()),
        ],
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let repo = env.path("repo");
    std::fs::copy(evil.join("config"), repo.join("config")).unwrap();
    std::fs::remove_dir_all(repo.join("keys")).unwrap();
    std::fs::create_dir(repo.join("keys")).unwrap();
    for key in std::fs::read_dir(evil.join("keys")).unwrap() {
        let key = key.unwrap().path();
        std::fs::copy(&key, repo.join("keys").join(key.file_name().unwrap())).unwrap();
    }

    // Remembered on first use: refused, naming the file to edit.
    let out = env.run(&["backup", "-"], &id, Some(&data(1000, 1)));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("is not the one this machine used before"), "{}", stderr(&out));
    assert!(stderr(&out).contains("known-repositories.json"), "{}", stderr(&out));
    // Stated by the operator: refused too, on a machine that remembers nothing.
    let fresh_home = env.path("fresh-home");
    let out = env.run(
        &["backups"],
        &[
            ("QVAULT_IDENTITY", &env.identity()),
            ("QVAULT_EXPECT_KEY", &real_key),
            ("HOME", fresh_home.to_str().unwrap()),
        ],
        None,
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("not the expected {real_key}")), "{}", stderr(&out));
    assert!(
        std::fs::read_dir(env.path("repo").join("backups")).map_or(0, |d| d.count()) == 0,
        "nothing was backed up"
    );
}

/// A home directory qvault cannot write (a container's read-only root) must not stop a
/// backup: it warns that the key is not remembered and says how to check it instead.
#[test]
fn an_unwritable_config_directory_warns_and_backs_up() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("home")).unwrap();
    write(&env.path("home/.config"), b"a file where a directory should be");
    env.init();
    let id = [("QVAULT_IDENTITY", env.identity())];
    let id: Vec<(&str, &str)> = id.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = env.run(&["backup", "-"], &id, Some(&data(1000, 2)));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot remember the repository key"), "{}", stderr(&out));
    assert!(stderr(&out).contains("pass --expect-key age1"), "{}", stderr(&out));
}

/// An I/O error's cause is said once, though the error carries it as message and source.
#[test]
fn a_missing_input_file_names_it_and_its_cause_once() {
    let env = Env::new();
    env.init();
    let missing = env.path("missing.bin");
    let out = env.run(
        &["backup", "--file", missing.to_str().unwrap()],
        &[("QVAULT_IDENTITY", &env.identity())],
        None,
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "qvault: error: opening {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn bad_arguments_exit_2() {
    let env = Env::new();
    env.init();
    let out = env.run(&["backup"], &[("QVAULT_IDENTITY", &env.identity())], None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to back up"), "{}", stderr(&out));
    let out = env.run(&["show", "zz"], &[("QVAULT_IDENTITY", &env.identity())], None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

/// `Env::run` with the test's identity.
fn run_as(env: &Env, args: &[&str], stdin: Option<&[u8]>) -> Output {
    env.run(args, &[("QVAULT_IDENTITY", &env.identity())], stdin)
}

fn backup_count(env: &Env) -> usize {
    let out = run_as(env, &["backups", "--json"], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out).as_array().unwrap().len()
}

#[test]
fn a_failing_from_command_records_nothing_and_names_the_command() {
    let env = Env::new();
    env.init();
    let out = run_as(&env, &["backup", "--from-command", "--", "sh", "-c", "exit 3"], None);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no backup recorded: reading stream \"sh\": command `sh -c 'exit 3'` exited with status 3"),
        "{}",
        stderr(&out)
    );
    let out = run_as(&env, &["backup", "--from-command", "--", "sh", "-c", "kill -9 $$"], None);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("was killed"), "{}", stderr(&out));
    assert_eq!(backup_count(&env), 0);
    // The command goes after --, and only with --from-command.
    let out = run_as(&env, &["backup", "--from-command"], None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = run_as(&env, &["backup", "--", "sh"], None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn a_from_command_backup_restores_its_output() {
    let env = Env::new();
    env.init();
    let out =
        run_as(&env, &["backup", "--json", "--from-command", "--", "sh", "-c", "printf abc"], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let b = json(&out);
    assert_eq!(b["bytes_read"], 3);
    assert_eq!(b["streams"][0]["name"], "sh");
    assert_eq!(b["streams"][0]["kind"], "stdin");
    let out = run_as(&env, &["show", "latest", "--json"], None);
    assert_eq!(
        json(&out)["streams"][0]["source"]["command"],
        serde_json::json!(["sh", "-c", "printf abc"])
    );
    let out = run_as(&env, &["restore", "latest", "--to", "-"], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(out.stdout, b"abc");
}

#[test]
fn empty_streams_are_refused_unless_allowed() {
    let env = Env::new();
    env.init();
    let empty = env.path("empty.bin");
    write(&empty, b"");
    let file = ["backup", "--file", empty.to_str().unwrap()];
    let out = run_as(&env, &file, None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("stream \"empty.bin\" is empty (0 bytes)"), "{}", stderr(&out));
    let out = run_as(&env, &["backup", "-"], Some(b""));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("stream \"stdin\" is empty"), "{}", stderr(&out));
    assert_eq!(backup_count(&env), 0);

    let out = run_as(&env, &[&file[..], &["--allow-empty"]].concat(), None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("inf"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run_as(&env, &["backup", "-", "--allow-empty", "--json"], Some(b""));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(json(&out)["dedup_ratio"].is_null());
    assert_eq!(backup_count(&env), 2);
    let out = run_as(&env, &["restore", "latest", "--to", "-"], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn an_all_dedup_backup_summary_prints_no_infinite_ratio() {
    let env = Env::new();
    env.init();
    let input = data(200_000, 5);
    for _ in 0..2 {
        let out = run_as(&env, &["backup", "-"], Some(&input));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(!text.contains("inf"), "{text}");
        assert!(text.contains("ratio "), "{text}");
    }
    let out = run_as(&env, &["backup", "-"], Some(&input));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(0 of "), "the third run dedups fully");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ratio n/a"));
    let out = run_as(&env, &["backup", "-", "--json"], Some(&input));
    let b = json(&out);
    assert_eq!(b["bytes_added"], 0);
    assert!(b["dedup_ratio"].is_null(), "{b}");
}

/// The file grows right after its first bytes were read (a debug-build hook), so the change
/// happens mid-read every time.
#[test]
fn a_file_that_grows_while_read_warns_and_fails_with_strict() {
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: the grow-during-read hook exists only in debug builds");
        return;
    }
    let env = Env::new();
    env.init();
    let path = env.path("growing.log");
    write(&path, &data(300_000, 6));
    let grow =
        [("QVAULT_IDENTITY", env.identity()), ("QVAULT_TEST_APPEND_DURING_READ", "x".repeat(10))];
    let grow: Vec<(&str, &str)> = grow.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = env.run(&["backup", "--file", path.to_str().unwrap()], &grow, None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let warning = format!("qvault: warning: {} changed while it was read", path.display());
    assert!(stderr(&out).contains(&warning), "{}", stderr(&out));
    assert_eq!(backup_count(&env), 1);

    let out = env.run(&["backup", "--strict", "--file", path.to_str().unwrap()], &grow, None);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let error = format!(
        "no backup recorded: reading stream \"growing.log\": {} changed while it was read",
        path.display()
    );
    assert!(stderr(&out).contains(&error), "{}", stderr(&out));
    assert_eq!(backup_count(&env), 1);

    // Unchanged: no warning.
    let out = run_as(&env, &["backup", "--strict", "--file", path.to_str().unwrap()], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("changed"), "{}", stderr(&out));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_config_file_supplies_what_flags_and_environment_leave_unset() {
    let env = Env::new();
    env.init();
    let config = env.path("qvault.toml");
    write(
        &config,
        format!("repository = {:?}\nidentity = {:?}\n", env.repo(), env.identity()).as_bytes(),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_qvault"))
        .args(["backups", "--json", "--config", config.to_str().unwrap()])
        .env_clear()
        .env("QVAULT_CACHE_DIR", env.path("cache"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out), serde_json::json!([]));

    write(&config, b"repositry = \"typo\"\n");
    let out = env.run(&["backups", "--config", config.to_str().unwrap()], &[], None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("is not valid"), "{}", stderr(&out));
}

/// The whole CLI flow on the S3 test server, credentials from a config file.
#[test]
fn backup_and_restore_on_s3_with_credentials_from_a_config_file() {
    let Ok(endpoint) = std::env::var("QVAULT_TEST_S3_ENDPOINT") else {
        assert_ne!(std::env::var("QVAULT_REQUIRE_S3").as_deref(), Ok("1"), "S3 is required");
        eprintln!("SKIPPED: S3 CLI test needs QVAULT_TEST_S3_ENDPOINT (start .ci/s3-server.sh)");
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap();
    let env = Env::new();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let repo = format!("s3://{}/cli-{nanos}", var("QVAULT_TEST_S3_BUCKET"));
    let config = env.path("qvault.toml");
    write(
        &config,
        format!(
            "repository = {repo:?}\nidentity = {:?}\n[s3]\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\n\
             access_key_id = {:?}\nsecret_access_key = {:?}\n",
            env.identity(),
            var("QVAULT_TEST_S3_ACCESS_KEY"),
            var("QVAULT_TEST_S3_SECRET_KEY")
        )
        .as_bytes(),
    );
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut all = args.to_vec();
        all.extend(["--config", config.to_str().unwrap()]);
        env.run(&all, &[("QVAULT_REPOSITORY", "")], stdin)
    };
    let out = run(&["init", "--identity", &env.identity()], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let input = data(700_000, 9);
    let out = run(&["backup", "-", "--json"], Some(&input));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(&["restore", "latest", "--to", "-"], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(out.stdout, input);
}
