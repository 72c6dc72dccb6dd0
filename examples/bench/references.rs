//! The references on the same files: `zstd -3 -T0`, and restic (backup, then
//! `forget --keep-last 1 --prune`), each run as a child process and measured from outside.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::measure::{cpu_times, dir_size, Step};
use crate::BoxError;

/// `zstd -3 -T0 -c FILE`, counting the output through a pipe. CPU is the child's.
pub fn run_zstd(path: &Path, name: &str, input: u64) -> Result<Step, BoxError> {
    let child_cpu = cpu_times().1;
    let started = Instant::now();
    let mut child = Command::new("zstd")
        .args(["-3", "-T0", "-q", "-c"])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut out = child.stdout.take().ok_or("zstd has no stdout")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("zstd failed on {}: {status}", path.display()).into());
    }
    Ok(Step {
        name: name.to_string(),
        input,
        wall: started.elapsed().as_secs_f64(),
        cpu: cpu_times().1 - child_cpu,
        output: Some(bytes),
        ..Step::default()
    })
}

pub fn restic_version() -> Option<String> {
    let out = Command::new("restic").arg("version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn restic(repo: &Path, cache: &Path) -> Command {
    let mut c = Command::new("restic");
    c.env("RESTIC_PASSWORD", "qvault-bench")
        .arg("--repo")
        .arg(repo)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--quiet");
    c
}

/// `restic backup --json FILE`: data added from its summary line and from the directory.
pub fn run_restic(
    repo: &Path,
    cache: &Path,
    path: &Path,
    name: &str,
    input: u64,
) -> Result<Step, BoxError> {
    let before = dir_size(repo);
    let child_cpu = cpu_times().1;
    let started = Instant::now();
    let out = restic(repo, cache)
        .args(["backup", "--json", "--host", "bench"])
        .arg(path)
        .stderr(Stdio::inherit())
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("restic backup failed on {}: {}", path.display(), out.status).into());
    }
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary");
    // Newer restic splits data_added (before compression) from data_added_packed.
    let added = summary
        .as_ref()
        .and_then(|s| s.get("data_added_packed").or_else(|| s.get("data_added")))
        .and_then(|v| v.as_u64());
    Ok(Step {
        name: name.to_string(),
        input,
        wall,
        cpu: cpu_times().1 - child_cpu,
        added_summary: added,
        added_dir: Some(dir_size(repo).saturating_sub(before)),
        ..Step::default()
    })
}

/// `restic forget --keep-last 1 --prune` over every snapshot (one group: all were taken with
/// `--host bench`), through `/usr/bin/time -f %M` for the child's peak RSS. `input` is the
/// repository's size before.
pub fn run_restic_forget_prune(repo: &Path, cache: &Path, input: u64) -> Result<Step, BoxError> {
    let rss_file = cache.with_extension("maxrss");
    let timed = Path::new("/usr/bin/time").exists();
    let plain = restic(repo, cache);
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"]).arg(&rss_file).arg(plain.get_program());
        c.args(plain.get_args());
        c.envs(plain.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
        c
    } else {
        plain
    };
    cmd.args(["forget", "--keep-last", "1", "--group-by", "host", "--prune"]);
    let child_cpu = cpu_times().1;
    let started = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).output()?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("restic forget --prune failed: {}", out.status).into());
    }
    // GNU time prints the maximum resident set size in KiB.
    let peak_rss = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse::<u64>().ok()))
        .map_or(0, |kib| kib * 1024);
    let _ = std::fs::remove_file(&rss_file);
    Ok(Step {
        name: "restic forget --keep-last 1 --prune".to_string(),
        input,
        wall,
        cpu: cpu_times().1 - child_cpu,
        added_dir: Some(dir_size(repo)),
        peak_rss,
        ..Step::default()
    })
}
