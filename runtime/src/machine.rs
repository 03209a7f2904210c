//! What a run or benchmark ran on, and how much memory it took.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub threads: usize,
    pub memory_bytes: u64,
    pub os: String,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let memory_bytes = proc_kib("/proc/meminfo", "MemTotal:").unwrap_or(0) * 1024;
        Machine {
            cpu,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            os: std::env::consts::OS.to_string(),
        }
    }
}

/// Peak resident set size of this process so far, in bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    proc_kib("/proc/self/status", "VmHWM:").unwrap_or(0) * 1024
}

fn proc_kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
