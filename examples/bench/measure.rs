//! Process measurements from /proc (Linux only; no libc needed), and the measured step.

use std::time::Instant;

use serde_json::json;

pub(crate) use crate::procfs::{cpu_times, dir_size, loadavg, reset_peak_rss, vm_status};

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
