//! What this process has used, for `push --stats` and status-push-bench.

/// This process's peak resident set (VmHWM), in KiB; `None` where `/proc/self/status`
/// does not say (not Linux).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
