//! What a new operator hit on first contact (the try report): malformed locations, flags
//! whose partner comes from the config file, the metrics file when it matters, `config
//! show`, exit codes, a closed pipe, init's refusals and the wording. Each test keeps the
//! tester's input.

use crate::report::parse_prometheus;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

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
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qvault"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("QVAULT_CACHE_DIR", self.path("cache"));
        cmd
    }
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
    fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(envs.iter().copied());
        cmd.output().unwrap()
    }
    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path(name), text).unwrap();
        name.to_string()
    }
    /// repo1 with one backup of f1.bin; the identity in id.txt.
    fn repo_with_backup(&self) {
        ok(&self.run(&["init", "--repo", "repo1", "--identity", "id.txt"]));
        self.write("f1.bin", "hello");
        ok(&self.run(&["--repo", "repo1", "-i", "id.txt", "backup", "--file", "f1.bin"]));
    }
    fn public_key(&self) -> String {
        let text = std::fs::read_to_string(self.path("id.txt")).unwrap();
        let line = text.lines().find(|l| l.starts_with("# public key: ")).unwrap();
        line.trim_start_matches("# public key: ").to_string()
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}
fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}
fn ok(out: &Output) {
    assert_eq!(code(out), 0, "stdout: {}\nstderr: {}", stdout(out), stderr(out));
}
fn fails(out: &Output, expected: i32, says: &str) {
    assert_eq!(code(out), expected, "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    assert!(stderr(out).contains(says), "wanted {says:?} in: {}", stderr(out));
}

// 2/12: one location parser, the same for init and config check.

#[test]
fn init_refuses_a_url_missing_its_slashes_instead_of_making_a_local_directory() {
    let env = Env::new();
    let out = env.run(&["init", "--repo", "s3:/bucket", "--identity", "id.txt"]);
    fails(&out, 2, "two slashes after the colon (e.g. s3://bucket/prefix)");
    assert!(!env.path("s3:").exists(), "a local s3: directory was made");
    assert!(!env.path("id.txt").exists(), "an identity was written for nothing");
}

#[test]
fn config_check_refuses_every_location_a_command_would_refuse() {
    let env = Env::new();
    for (location, says) in [
        ("s3:/bucket", "two slashes after the colon"),
        ("s3://", "names no valid bucket"),
        ("file://relative", "needs an absolute path"),
    ] {
        let file = env.write("config.toml", &format!("repository = {location:?}\n"));
        let out = env.run(&["config", "check", &file]);
        assert_eq!(code(&out), 2, "{location}: {}", stdout(&out));
        assert!(stdout(&out).contains("config.toml:1:14: repository"), "{}", stdout(&out));
        assert!(stdout(&out).contains(says), "{location}: {}", stdout(&out));
    }
}

// 10: a flag's partner may come from the config file.

#[test]
fn notify_always_as_a_flag_takes_notify_from_the_config_file() {
    let env = Env::new();
    env.repo_with_backup();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = vec![0u8; 65536];
        let mut got = 0;
        while !String::from_utf8_lossy(&request[..got]).contains("\"command\"") {
            got += conn.read(&mut request[got..]).unwrap();
        }
        conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").unwrap();
        String::from_utf8_lossy(&request[..got]).to_string()
    });
    let config = env.write("config2.toml", &format!("notify = {url:?}\n"));
    let args = ["--config", &config, "--repo", "repo1", "-i", "id.txt", "--notify-always"];
    let out = env.run(&[&args[..], &["backups"]].concat());
    ok(&out);
    assert_eq!(stdout(&out).lines().count(), 2, "the command ran: {}", stdout(&out));
    assert!(received.join().unwrap().contains("\"command\":\"backups\""));

    let out = env.run(&["--repo", "repo1", "--notify-always", "backups"]);
    fails(&out, 2, "--notify-always needs --notify URL");
}

#[test]
fn backups_qdrant_flags_take_their_partner_from_the_config_file() {
    let env = Env::new();
    env.repo_with_backup();
    // Nothing listens there: the backup runs and fails reaching Qdrant (6), not on usage (2).
    let config = env.write(
        "config.toml",
        "repository = \"repo1\"\nidentity = \"id.txt\"\n[qdrant]\nurl = \"http://127.0.0.1:9\"\n\
         [backup]\ncollections = [\"docs\"]\n",
    );
    for flag in
        [&["--sample-points", "5"][..], &["--no-sample"], &["--streamed"], &["--keep-remote"]]
    {
        let mut args = vec!["--config", &config, "backup"];
        args.extend_from_slice(flag);
        let out = env.run(&args);
        assert_eq!(code(&out), 6, "{flag:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("needs"), "{flag:?}: {}", stderr(&out));
    }
    let args = ["--repo", "repo1", "-i", "id.txt", "backup", "--file", "f1.bin"];
    let out = env.run(&[&args[..], &["--sample-points", "5"]].concat());
    fails(&out, 2, "--sample-points needs --qdrant URL");
    let out = env.run(&[&args[..], &["--streamed"]].concat());
    fails(&out, 2, "--streamed needs --collection NAME");
}

// 11: the metrics file keeps what alerts need.

fn samples(env: &Env, file: &str) -> Vec<(String, std::collections::HashMap<String, String>, f64)> {
    parse_prometheus(&std::fs::read_to_string(env.path(file)).unwrap())
}

fn value(
    samples: &[(String, std::collections::HashMap<String, String>, f64)],
    metric: &str,
    command: Option<&str>,
) -> Option<f64> {
    samples
        .iter()
        .find(|(m, labels, _)| {
            m == metric
                && command.is_none_or(|c| labels.get("command").map(String::as_str) == Some(c))
        })
        .map(|(_, _, v)| *v)
}

#[test]
fn the_metrics_file_keeps_the_last_known_repository_series_when_storage_is_down() {
    let env = Env::new();
    env.repo_with_backup();
    let base = ["--repo", "repo1", "-i", "id.txt", "--metrics-file", "m3.prom"];
    ok(&env.run(&[&base[..], &["backups"]].concat()));
    let before = samples(&env, "m3.prom");
    let last = value(&before, "qvault_backup_last_success_timestamp_seconds", None).unwrap();
    assert_eq!(value(&before, "qvault_repository_up", None), Some(1.0));

    std::fs::rename(env.path("repo1"), env.path("gone")).unwrap();
    let out = env.run(&[&base[..], &["backups"]].concat());
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let after = samples(&env, "m3.prom");
    assert_eq!(value(&after, "qvault_backup_last_success_timestamp_seconds", None), Some(last));
    assert_eq!(value(&after, "qvault_repository_up", None), Some(0.0));
    assert_eq!(value(&after, "qvault_command_exit_code", Some("backups")), Some(3.0));

    // Never opened: the gauge alone still says so.
    let out = env.run(&["--repo", "nope", "--metrics-file", "m5.prom", "backups"]);
    assert_eq!(code(&out), 3);
    assert_eq!(value(&samples(&env, "m5.prom"), "qvault_repository_up", None), Some(0.0));
}

#[test]
fn a_failed_backups_exit_code_survives_the_next_check_in_the_shared_metrics_file() {
    let env = Env::new();
    env.repo_with_backup();
    let base = ["--repo", "repo1", "-i", "id.txt", "--metrics-file", "m4.prom"];
    let out = env.run(&[&base[..], &["backup", "--file", "missing.bin"]].concat());
    assert_ne!(code(&out), 0);
    let failed = f64::from(u8::try_from(code(&out)).unwrap());
    ok(&env.run(&[&base[..], &["check", "--skip-verify"]].concat()));
    let m = samples(&env, "m4.prom");
    assert_eq!(value(&m, "qvault_command_exit_code", Some("backup")), Some(failed));
    assert_eq!(value(&m, "qvault_command_exit_code", Some("check")), Some(0.0));
    let runs = m.iter().filter(|(name, _, _)| name == "qvault_command_exit_code").count();
    assert_eq!(runs, 2, "{m:?}");
    assert_eq!(value(&m, "qvault_repository_up", None), Some(1.0));
}

// 13: config show shows what is in effect.

#[test]
fn config_show_reports_flags_over_the_file_and_only_the_profiles_forget_policy() {
    let env = Env::new();
    let config = env.write(
        "config.toml",
        "repository = \"/srv/file-repo\"\nnotify = \"http://file.example/hook\"\n[forget]\n\
         keep-within-daily = \"7d\"\n[profiles.p.forget]\nkeep-last = 5\n",
    );
    let out = env
        .run(&["--config", &config, "--repo", "repo4", "--notify", "http://x", "config", "show"]);
    ok(&out);
    let text = stdout(&out);
    assert!(text.contains("repository = \"repo4\"  # flag --repo"), "{text}");
    assert!(text.contains("notify = \"http://x\"  # flag --notify"), "{text}");
    assert!(!text.contains("file-repo") && !text.contains("file.example"), "{text}");

    let out = env.run(&["--config", &config, "--profile", "p", "config", "show"]);
    ok(&out);
    let text = stdout(&out);
    assert!(text.contains("forget.keep-last = 5  # profile p"), "{text}");
    assert!(!text.contains("keep-within-daily"), "the profile's [forget] replaces it: {text}");
}

#[test]
fn config_problems_inside_a_profile_name_the_profile() {
    let env = Env::new();
    let config =
        env.write("config.toml", "max_age = \"1d\"\n[profiles.nightly]\nmax_age = \"a week\"\n");
    let out = env.run(&["config", "check", &config]);
    assert_eq!(code(&out), 2);
    let text = stdout(&out);
    assert!(text.contains("config.toml:3:11: max_age"), "{text}");
    assert!(text.trim_end().ends_with("(in [profiles.nightly])"), "{text}");
}

// 14: exit codes.

#[test]
fn wrong_or_missing_key_identity_and_config_files_are_usage_errors_naming_the_file() {
    let env = Env::new();
    env.repo_with_backup();
    let repo = ["--repo", "repo1"];
    let out = env.run(&[&repo[..], &["--key", "id.txt", "backups"]].concat());
    fails(&out, 2, "key file id.txt is not a qvault repository key file: it holds an age identity");
    env.write("garbage.txt", "not a key at all\n");
    let out = env.run(&[&repo[..], &["--key", "garbage.txt", "backups"]].concat());
    fails(&out, 2, "key file garbage.txt is not a qvault repository key file");
    let out = env.run(&[&repo[..], &["--key", "nope.key", "backups"]].concat());
    fails(&out, 2, "key file nope.key does not exist: fix --key or QVAULT_KEY");
    let out = env.run(&[&repo[..], &["-i", "nope.txt", "backups"]].concat());
    fails(&out, 2, "identity file nope.txt does not exist");
    let out = env.run(&[&repo[..], &["--config", "nope.toml", "backups"]].concat());
    fails(&out, 2, "config file nope.toml does not exist");
}

#[test]
fn init_into_a_file_and_a_garbage_expect_key_are_usage_errors() {
    let env = Env::new();
    env.repo_with_backup();
    let recipient = env.public_key();
    let out = env.run(&["init", "--repo", "f1.bin", "--recipient", &recipient]);
    fails(&out, 2, "f1.bin is a file, not a directory");
    let out = env.run(&["--repo", "repo1", "-i", "id.txt", "--expect-key", "garbage", "backups"]);
    fails(&out, 2, "\"garbage\" is not a repository key fingerprint");
    assert!(!stderr(&out).contains("replaced"), "{}", stderr(&out));
}

#[test]
fn with_json_a_failure_is_a_json_error_object_on_stdout() {
    let env = Env::new();
    let out = env.run(&["--repo", "nope", "--json", "backups"]);
    assert_eq!(code(&out), 3);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["error"]["exit_code"], 3);
    assert_eq!(json["error"]["kind"], "NotARepository");
    assert!(json["error"]["message"].as_str().unwrap().contains("no qvault repository at nope"));
    // A command that printed its own verdict adds nothing after it.
    let config = env.write("config.toml", "max_age = \"soon\"\n");
    let out = env.run(&["--json", "config", "check", &config]);
    assert_eq!(code(&out), 2);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["ok"], false);
}

// 15: a closed pipe.

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let env = Env::new();
    env.repo_with_backup();
    for args in [&["backups"][..], &["--json", "report"], &["--json", "check", "--skip-verify"]] {
        let mut cmd = env.command(&[&["--repo", "repo1", "-i", "id.txt"][..], args].concat());
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
    }
}

// 16: init's refusals say what to do.

#[test]
fn init_with_an_exported_identity_hints_at_recipient_and_refuses_a_non_empty_directory() {
    let env = Env::new();
    env.repo_with_backup();
    let recipient = env.public_key();
    let out = env.run_env(&["init", "--repo", "repo2"], &[("QVAULT_IDENTITY", "id.txt")]);
    fails(&out, 8, &format!("give its public key with --recipient {recipient}"));
    assert!(!env.path("repo2").exists());

    std::fs::create_dir(env.path("d1")).unwrap();
    env.write("d1/data.bin", "someone's data");
    let out = env.run(&["init", "--repo", "d1", "--recipient", &recipient]);
    fails(&out, 8, "d1 is not empty (data.bin and maybe more) and holds no qvault repository");
    assert_eq!(std::fs::read_dir(env.path("d1")).unwrap().count(), 1);
    // lost+found alone (a fresh volume) does not count.
    std::fs::create_dir_all(env.path("vol/lost+found")).unwrap();
    ok(&env.run(&["init", "--repo", "vol", "--recipient", &recipient]));
}

// 17: wording.

#[test]
fn empty_stream_forget_prune_and_log_wording() {
    let env = Env::new();
    env.repo_with_backup();
    let repo = ["--repo", "repo1", "-i", "id.txt"];
    env.write("empty.bin", "");
    let out = env.run(&[&repo[..], &["backup", "--file", "empty.bin"]].concat());
    fails(&out, 2, "pass --allow-empty if an empty stream is expected");
    assert!(!stderr(&out).contains("BackupOptions"), "{}", stderr(&out));

    env.write("f1.bin", "second version");
    ok(&env.run(&[&repo[..], &["backup", "--file", "f1.bin"]].concat()));
    let forget = [&repo[..], &["forget", "--keep-last", "1"]].concat();
    let out = env.run(&[&forget[..], &["--dry-run", "--prune"]].concat());
    ok(&out);
    assert!(!stdout(&out).contains("nothing to prune"), "{}", stdout(&out));
    assert!(stdout(&out).contains("see `qvault prune --dry-run` after it"), "{}", stdout(&out));
    let out = env.run(&[&forget[..], &["--prune"]].concat());
    ok(&out);
    assert!(stdout(&out).contains("forgot 1 backups, kept 1; prune follows"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("stays until prune"), "{}", stdout(&out));

    let out = env.run(&[&repo[..], &["log", "--last", "0"]].concat());
    ok(&out);
    assert!(!stderr(&out).contains("is empty"), "{}", stderr(&out));
    let out = env.run(&[&repo[..], &["--json", "log"]].concat());
    let log: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let users: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["user"].as_str().or(e["record"]["user"].as_str()))
        .collect();
    assert!(!users.is_empty() && !users.contains(&"unknown"), "no $USER: {users:?}");
}

// The second tester: a name with a newline forged a row in `backups`, `forget --dry-run` and
// `log`; a 5,000-character name was taken.
#[test]
fn names_and_tags_with_control_characters_or_too_long_are_refused_before_anything_is_stored() {
    let env = Env::new();
    env.repo_with_backup();
    let long = "n".repeat(300);
    let base = ["--repo", "repo1", "-i", "id.txt", "backup", "--file", "f1.bin"];
    for extra in
        [&["--name", "a\nb 2026-01-01 forged"][..], &["--name", &long], &["--tag", "env=prod\tx"]]
    {
        let args = [&base[..], extra].concat();
        let out = env.run(&args);
        assert_eq!(code(&out), 2, "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("backup"), "{}", stderr(&out));
    }
    let listed = env.run(&["--repo", "repo1", "-i", "id.txt", "--json", "backups"]);
    let backups: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(backups.as_array().map(Vec::len), Some(1), "nothing stored: {backups}");
    assert_eq!(std::fs::read_dir(env.path("repo1/locks")).map_or(0, |d| d.count()), 0);
}
