//! The config file as a scheduled job uses it: every setting from the file alone, profiles,
//! the precedence flag > environment > profile > top level, `config check` naming the line
//! and column of each problem, and docs/configuration.md pinned to `config reference`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory and `qvault` run in it with nothing from the caller's environment.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn text(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path(name), text).unwrap();
        self.text(name)
    }
    fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        self.run_in(args, envs, None)
    }
    fn run_in(&self, args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_qvault"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
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
fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// Which repository a command used: `backups` on a location that holds none names it.
fn repository_used(dir: &Dir, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut all = args.to_vec();
    all.push("backups");
    let out = dir.run(&all, envs);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    let at = err.find("there is no qvault repository at ").unwrap_or_else(|| panic!("{err}"));
    let rest = &err[at + "there is no qvault repository at ".len()..];
    let path = rest.split(':').next().unwrap();
    Path::new(path).file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_profile_which_beats_the_top_level() {
    let dir = Dir::new();
    let config = dir.write(
        "qvault.toml",
        &format!(
            "repository = {:?}\n[profiles.prod]\nrepository = {:?}\n",
            dir.text("top"),
            dir.text("prod")
        ),
    );
    let with_config = ["--config", config.as_str()];
    assert_eq!(repository_used(&dir, &with_config, &[]), "top");
    let prod = ["--config", config.as_str(), "--profile", "prod"];
    assert_eq!(repository_used(&dir, &prod, &[]), "prod");
    assert_eq!(
        repository_used(&dir, &with_config, &[("QVAULT_PROFILE", "prod")]),
        "prod",
        "QVAULT_PROFILE selects the profile too"
    );
    let env = dir.text("env");
    assert_eq!(repository_used(&dir, &prod, &[("QVAULT_REPOSITORY", &env)]), "env");
    let flag = dir.text("flag");
    let mut with_flag = prod.to_vec();
    with_flag.extend(["--repo", flag.as_str()]);
    assert_eq!(repository_used(&dir, &with_flag, &[("QVAULT_REPOSITORY", &env)]), "flag");
    // Set but empty is unset: a container template's blank variable does not hide the file.
    assert_eq!(repository_used(&dir, &prod, &[("QVAULT_REPOSITORY", "")]), "prod");

    // `config show` says where each value in effect comes from.
    let out = dir.run(
        &["--json", "--config", &config, "--profile", "prod", "config", "show"],
        &[("QVAULT_CACHE_DIR", "/var/cache/qvault")],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let shown = json(&out);
    assert_eq!(shown["profile"], "prod");
    assert_eq!(shown["settings"]["repository"]["origin"], "profile:prod");
    assert_eq!(shown["settings"]["repository"]["value"], dir.text("prod"));
    assert_eq!(shown["settings"]["cache_dir"]["origin"], "env:QVAULT_CACHE_DIR");
    // What it prints carries no secret: keys hidden, URL credentials and tokens redacted.
    let out = dir.run(
        &["--config", &config, "config", "show"],
        &[
            ("QVAULT_NOTIFY_URL", "https://hooks.example.com/x?token=hook-token-4d1e"),
            ("QVAULT_REPOSITORY", "webdav://bob:dav-password-77c2@dav.example/x"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-key-b81f"),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for secret in ["hook-token-4d1e", "dav-password-77c2", "aws-secret-key-b81f"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(text.contains("s3.secret_access_key = \"***\"  # environment AWS_SECRET_ACCESS_KEY"));

    let out = dir.run(&["--config", &config, "--profile", "staging", "backups"], &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("profile \"staging\" is not in the config file")
            && stderr(&out).contains("(its profiles: prod)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_check_names_the_line_and_column_of_every_problem_and_exits_2() {
    let dir = Dir::new();
    let file = dir.write(
        "bad.toml",
        "repository = \"/srv/repo\"\n\
         identity = \"/nonexistent/identity.txt\"\n\
         notify = \"hooks.example.com/qvault\"\n\
         [s3]\n\
         region = 5\n\
         endpont = \"http://minio:9000\"\n\
         [forget]\n\
         keep-within-daily = \"30 days\"\n\
         [profiles.prod]\n\
         max_age = true\n",
    );
    let out = dir.run(&["config", "check", &file], &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let at = |line: usize, column: usize| format!("{file}:{line}:{column}: ");
    let expect = [
        (at(2, 12), "identity: there is no file /nonexistent/identity.txt"),
        (at(3, 10), "notify hooks.example.com/qvault is not a URL"),
        (at(5, 10), "s3.region must be a string, not integer"),
        (at(6, 1), "unknown key \"s3.endpont\" (did you mean \"s3.endpoint\"?)"),
        (at(8, 21), "forget.keep-within-daily duration \"30 days\""),
        (at(10, 11), "max_age must be a duration (30min, 26h, 7d), not boolean"),
    ];
    assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    for (line, (place, message)) in lines.iter().zip(&expect) {
        assert!(line.starts_with(&format!("{place}{message}")), "{line:?} vs {place}{message}");
    }
    assert!(stderr(&out).contains(&format!("config file {file} has 6 problems")));

    let out = dir.run(&["--json", "--profile", "staging", "config", "check", &file], &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 7, "the unknown profile too: {problems:#?}");
    assert_eq!((problems[0]["line"].as_u64(), problems[0]["column"].as_u64()), (Some(1), Some(1)));
    assert!(problems[0]["message"].as_str().unwrap().contains("profile \"staging\""));
    assert_eq!(problems[3]["message"], "s3.region must be a string, not integer");
    assert_eq!((problems[3]["line"].as_u64(), problems[3]["column"].as_u64()), (Some(5), Some(10)));

    // A syntax error has its place too.
    let broken = dir.write("broken.toml", "repository = \"/srv/repo\"\ncache_dir = \n");
    let out = dir.run(&["config", "check", &broken], &[]);
    assert_eq!(code(&out), 2);
    assert!(stdout(&out).starts_with(&format!("{broken}:2:")), "{}", stdout(&out));

    // Any other command refuses the same file before doing anything.
    let out = dir.run(&["--config", &file, "backups"], &[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("line 6, column 1: unknown key \"s3.endpont\""));
}

#[test]
fn config_check_of_a_good_file_exits_0_with_a_summary() {
    let dir = Dir::new();
    let identity = dir.write("identity.txt", "not checked for content here\n");
    let file = dir.write(
        "good.toml",
        &format!(
            "repository = \"s3://backups/qdrant\"\nidentity = {identity:?}\n\
             group_by = \"source,streams\"\nrto = \"15min\"\n\
             [qdrant]\nurl = [\"http://qdrant-0:6333\"]\n\
             [forget]\nkeep-last = 3\ntime-zone = \"Europe/Berlin\"\n\
             [forget.groups.\"source=vm streams=a.bin\"]\nkeep-daily = 7\n\
             [profiles.staging]\nrepository = \"/srv/staging\"\n[profiles.staging.s3]\nregion = \"eu-west-1\"\n"
        ),
    );
    let out = dir.run(&["config", "check", &file, "--profile", "staging"], &[]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), format!("{file} is valid: 8 settings, profiles staging (2)\n"));
    let out = dir.run(&["--json", "config", "check", &file], &[]);
    assert_eq!(code(&out), 0);
    assert_eq!(json(&out)["ok"], true);
    assert_eq!(json(&out)["problems"], serde_json::json!([]));
}

#[test]
fn the_committed_configuration_reference_is_the_one_the_code_generates() {
    let dir = Dir::new();
    let out = dir.run(&["config", "reference"], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let generated = stdout(&out);
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    if std::env::var_os("QVAULT_BLESS").is_some() {
        std::fs::write(&committed, &generated).unwrap();
    }
    assert!(
        std::fs::read_to_string(&committed).ok().as_deref() == Some(generated.as_str()),
        "docs/configuration.md differs from `qvault config reference`; if the change is \
         intended, run QVAULT_BLESS=1 cargo test --test it config::"
    );
    for key in ["repository", "qdrant.url", "azure.endpoint", "webdav.password_file", "rto"] {
        assert!(generated.contains(&format!("| `{key}` |")), "{key} missing");
    }
}

/// The whole scheduled routine with no flag but `--config`: backup, restore test, forget by
/// the file's policy, metrics file and report with the file's RTO.
#[test]
fn a_scheduled_job_runs_from_the_config_file_alone() {
    let dir = Dir::new();
    let out = dir.run(
        &["-q", "init", "--repo", &dir.text("repo"), "--identity", &dir.text("id.txt")],
        &[("XDG_CONFIG_HOME", &dir.text("xdg"))],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let config = dir.write(
        "qvault.toml",
        &format!(
            "repository = {:?}\nidentity = {:?}\ncache_dir = {:?}\nmetrics_file = {:?}\n\
             rto = \"1h\"\nmax_age = \"1d\"\n[forget]\nkeep-last = 1\n",
            dir.text("repo"),
            dir.text("id.txt"),
            dir.text("cache"),
            dir.text("qvault.prom"),
        ),
    );
    // The default location: $XDG_CONFIG_HOME/qvault/config.toml.
    std::fs::create_dir_all(dir.path("xdg/qvault")).unwrap();
    std::fs::copy(&config, dir.path("xdg/qvault/config.toml")).unwrap();
    let env = [("XDG_CONFIG_HOME", dir.text("xdg"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for seed in 1..=2u64 {
        let data = qvault_synth::pseudo_random(200_000, seed);
        let out = dir.run_in(&["backup", "-"], &env, Some(&data));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let out = dir.run(&["verify", "--restore-test"], &env);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = dir.run(&["forget"], &env);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("forgot 1 backups, kept 1"), "{}", stdout(&out));
    let out = dir.run(&["--json", "report"], &env);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["rto_seconds"], 3600);
    assert_eq!(report["max_age_seconds"], 86_400);
    assert_eq!(report["groups"][0]["fresh"], true);
    assert_eq!(report["groups"][0]["rto_met"], true);
    let metrics = std::fs::read_to_string(dir.path("qvault.prom")).unwrap();
    let samples = crate::report::parse_prometheus(&metrics);
    let value = |name: &str| {
        let found = samples.iter().find(|(m, _, _)| m == name);
        found.unwrap_or_else(|| panic!("{name} missing:\n{metrics}")).2
    };
    assert_eq!(value("qvault_command_exit_code"), 0.0);
    assert_eq!(value("qvault_restore_test_last_run_success"), 1.0);
    assert!(value("qvault_restore_test_duration_seconds") < 3600.0);
    assert!(value("qvault_restore_test_last_success_timestamp_seconds") > 1.7e9);
}

/// `backup` with no source flag reads the Qdrant URL and collections from the file; with
/// `--file` it does not go near Qdrant.
#[test]
fn the_qdrant_url_and_collections_in_the_file_make_a_flagless_backup_a_qdrant_backup() {
    let dir = Dir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let qdrant = format!("http://127.0.0.1:{port}");
    let out =
        dir.run(&["-q", "init", "--repo", &dir.text("repo"), "--identity", &dir.text("id")], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let config = dir.write(
        "qvault.toml",
        &format!(
            "repository = {:?}\nidentity = {:?}\ncache_dir = {:?}\n[qdrant]\nurl = {qdrant:?}\n\
             [backup]\ncollections = [\"products\"]\n",
            dir.text("repo"),
            dir.text("id"),
            dir.text("cache")
        ),
    );
    let out = dir.run(&["--config", &config, "backup"], &[]);
    assert_eq!(code(&out), 6, "the node is not there: {}", stderr(&out));
    assert!(stderr(&out).contains(&format!("127.0.0.1:{port}")), "{}", stderr(&out));

    let file = dir.write("data.bin", "some bytes to back up");
    let out = dir.run(&["--config", &config, "backup", "--file", &file], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let two = dir.write(
        "two.toml",
        &format!(
            "repository = {:?}\n[qdrant]\nurl = [{qdrant:?}, \"http://127.0.0.2:6333\"]\n",
            dir.text("repo")
        ),
    );
    // Several URLs are a cluster for a backup; a command that reaches one node refuses them.
    let out = dir.run(&["--config", &two, "qdrant", "snapshots", "list", "--collection", "c"], &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("qdrant.url lists 2 URLs"), "{}", stderr(&out));
}

#[test]
fn a_webdav_password_file_that_is_empty_is_refused_by_name() {
    let dir = Dir::new();
    let empty = dir.write("password", "\n");
    let out = dir.run(
        &["--repo", "webdav://bob@127.0.0.1:9/x", "backups"],
        &[("QVAULT_WEBDAV_PASSWORD_FILE", &empty)],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("the WebDAV password file {empty} is empty")));
}

/// A server that answers every request with `status` and an empty body, and hands each
/// request's head (request line and headers) to the test.
#[cfg(any(feature = "azure", feature = "webdav"))]
fn recording_server(status: u16) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).to_string());
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (address, rx)
}

#[cfg(feature = "webdav")]
#[test]
fn the_webdav_password_file_is_sent_as_the_locations_users_password() {
    let dir = Dir::new();
    let (address, requests) = recording_server(401);
    let password = dir.write("password", "file-password-8e1c\nignored second line\n");
    let out = dir.run(
        &["--repo", &format!("webdav://bob@{address}/repo"), "backups"],
        &[("QVAULT_WEBDAV_PASSWORD_FILE", &password)],
    );
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    let head = requests.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    // base64("bob:file-password-8e1c")
    assert!(
        head.to_ascii_lowercase().contains("authorization: basic ym9iomzpbgutcgfzc3dvcmqtoguxyw=="),
        "{head}"
    );
    assert!(!stderr(&out).contains("file-password-8e1c"), "{}", stderr(&out));
}

#[cfg(feature = "azure")]
#[test]
fn the_azure_endpoint_setting_sends_requests_to_that_endpoint() {
    let dir = Dir::new();
    let (address, requests) = recording_server(404);
    let config = dir.write(
        "qvault.toml",
        &format!(
            "repository = \"azblob://container/prefix\"\n[azure]\nendpoint = \
             \"http://{address}/devstoreaccount1\"\naccount = \"devstoreaccount1\"\n"
        ),
    );
    // Azurite's published development key, not a secret.
    let key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let out = dir.run(&["--config", &config, "backups"], &[("AZURE_STORAGE_KEY", key)]);
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    let head = requests.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(head.contains(" /devstoreaccount1/container/prefix/"), "{head}");
}
