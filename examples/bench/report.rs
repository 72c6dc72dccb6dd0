//! The printed tables and the checks against the targets.

use crate::measure::{mb, mib, Step};

pub(crate) fn fmt_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |b| format!("{:.2}", mb(b)))
}

pub(crate) fn print_table(title: &str, steps: &[Step], rss: bool) {
    println!("\n{title}");
    print!(
        "{:<22} {:>9} {:>8} {:>8} {:>9} {:>12} {:>12}",
        "step", "input MB", "wall s", "CPU s", "MB/s", "added MB", "dir +MB"
    );
    if rss {
        print!(" {:>10} {:>9}", "RSS0 MiB", "peak MiB");
    } else {
        print!(" {:>10}", "output MB");
    }
    println!();
    for s in steps {
        print!(
            "{:<22} {:>9.1} {:>8.2} {:>8.2} {:>9.0} {:>12} {:>12}",
            s.name,
            mb(s.input),
            s.wall,
            s.cpu,
            s.mbps(),
            fmt_opt(s.added_summary),
            fmt_opt(s.added_dir)
        );
        if rss {
            print!(" {:>10.1} {:>9.1}", mib(s.rss_start), mib(s.peak_rss));
        } else {
            print!(" {:>10}", fmt_opt(s.output));
        }
        println!();
    }
}

pub(crate) struct Check {
    pub(crate) what: String,
    pub(crate) value: f64,
    pub(crate) target: String,
    pub(crate) met: bool,
}

pub(crate) fn check_le(what: impl Into<String>, value: f64, limit: f64) -> Check {
    Check { what: what.into(), value, target: format!("≤ {limit}"), met: value <= limit }
}

pub(crate) fn check_ge(what: impl Into<String>, value: f64, limit: f64) -> Check {
    Check { what: what.into(), value, target: format!("≥ {limit}"), met: value >= limit }
}
