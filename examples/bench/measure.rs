//! Process measurements from /proc (Linux only; no libc needed), and the measured step.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

/// Clock ticks per second for /proc/*/stat times (USER_HZ, 100 on every Linux we run on).
pub(crate) const TICKS: f64 = 100.0;

/// (own CPU seconds, CPU seconds of waited-for children) from /proc/self/stat.
pub(crate) fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // utime, stime, cutime, cstime are fields 14..=17, i.e. indexes 11..=14 here.
    let get = |i: usize| f.get(i).copied().unwrap_or(0) as f64 / TICKS;
    (get(11) + get(12), get(13) + get(14))
}

/// A `VmXXX:` line of /proc/self/status, in bytes.
pub(crate) fn vm_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets VmHWM to the current RSS; false when the kernel refuses.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The first three fields of /proc/loadavg: how busy the machine was (other processes).
pub(crate) fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

pub(crate) fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One measured step.
#[derive(Clone, Debug, Default)]
pub(crate) struct Step {
    pub(crate) name: String,
    pub(crate) input: u64,
    pub(crate) wall: f64,
    pub(crate) cpu: f64,
    /// Bytes added according to the tool's own summary.
    pub(crate) added_summary: Option<u64>,
    /// Growth of the repository directory.
    pub(crate) added_dir: Option<u64>,
    /// zstd output bytes.
    pub(crate) output: Option<u64>,
    pub(crate) rss_start: u64,
    pub(crate) peak_rss: u64,
}

impl Step {
    pub(crate) fn mbps(&self) -> f64 {
        mb(self.input) / self.wall.max(1e-9)
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "step": self.name, "input_bytes": self.input, "wall_s": self.wall, "cpu_s": self.cpu,
            "mb_per_s": self.mbps(), "added_summary_bytes": self.added_summary,
            "added_dir_bytes": self.added_dir, "output_bytes": self.output,
            "rss_start_bytes": self.rss_start, "peak_rss_bytes": self.peak_rss,
        })
    }
}

/// Measures `f` in this process: wall, own CPU, peak RSS.
pub(crate) struct Meter {
    pub(crate) started: Instant,
    pub(crate) cpu: f64,
    pub(crate) rss_start: u64,
}

impl Meter {
    pub(crate) fn start() -> Meter {
        reset_peak_rss();
        Meter { started: Instant::now(), cpu: cpu_times().0, rss_start: vm_status("VmRSS:") }
    }

    pub(crate) fn stop(self, name: impl Into<String>, input: u64) -> Step {
        Step {
            name: name.into(),
            input,
            wall: self.started.elapsed().as_secs_f64(),
            cpu: cpu_times().0 - self.cpu,
            rss_start: self.rss_start,
            peak_rss: vm_status("VmHWM:"),
            ..Step::default()
        }
    }
}
