//! Process and machine measurements from /proc (Linux only; no libc needed), shared by the
//! bench and the scale examples (`#[path = "bench/procfs.rs"] mod procfs;`).
#![allow(dead_code)] // each example uses a few of them

use std::path::Path;

/// Clock ticks per second for /proc/*/stat times (USER_HZ, 100 on every Linux we run on).
pub const TICKS: f64 = 100.0;

/// (own CPU seconds, CPU seconds of waited-for children) from /proc/self/stat.
pub fn cpu_times() -> (f64, f64) {
    let f = stat_fields();
    // utime, stime, cutime, cstime are fields 14..=17, i.e. indexes 11..=14 here.
    let get = |i: usize| f.get(i).copied().unwrap_or(0) as f64 / TICKS;
    (get(11) + get(12), get(13) + get(14))
}

/// The fields of /proc/self/stat after the command name (which may hold spaces), from
/// field 3 (state) on.
fn stat_fields() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect()
}

/// (user, system) CPU seconds of this process from /proc/self/stat: system time grows
/// when the kernel works for us (reads, page cache reclaim) rather than our code.
pub fn cpu_user_system() -> (f64, f64) {
    let f = stat_fields();
    let get = |i: usize| f.get(i).copied().unwrap_or(0) as f64 / TICKS;
    (get(11), get(12))
}

/// A `VmXXX:` line of /proc/self/status, in bytes.
pub fn vm_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets VmHWM to the current RSS; false when the kernel refuses.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The first three fields of /proc/loadavg: how busy the machine was (other processes).
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Bytes of the files under `path` (0 when it cannot be read).
pub fn dir_size(path: &Path) -> u64 {
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

/// Peak resident set size of this process (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    vm_status("VmHWM:")
}
