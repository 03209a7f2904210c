//! What a run or benchmark ran on, and how much memory it took.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

/// Threads the kernels run on (rayon's pool: the CPUs this process may
/// use, or `RAYON_NUM_THREADS`).
pub fn compute_threads() -> usize {
    rayon::current_num_threads()
}

/// Peak resident set size of this process so far, in bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    proc_kib("/proc/self/status", "VmHWM:").unwrap_or(0) * 1024
}

/// Resident set size of this process now, in bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    proc_kib("/proc/self/status", "VmRSS:").unwrap_or(0) * 1024
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

/// Memory this process may still take, in bytes: the kernel's
/// `MemAvailable`, or less where a cgroup (v1 or v2) on the way from this
/// process's group to the root limits it. `None` where `/proc/meminfo` is
/// missing (not Linux).
pub fn available_memory_bytes() -> Option<u64> {
    let available = proc_kib("/proc/meminfo", "MemAvailable:")? * 1024;
    let groups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    Some(
        cgroup_headroom(&groups, Path::new("/sys/fs/cgroup"))
            .map_or(available, |c| c.min(available)),
    )
}

/// The smallest room left under a memory limit of this process's cgroup or
/// any group above it (`groups`: the text of `/proc/self/cgroup`; `root`:
/// where the hierarchies are mounted); `None` when no limit is set.
fn cgroup_headroom(groups: &str, root: &Path) -> Option<u64> {
    let mut least: Option<u64> = None;
    for (dir, files) in memory_groups(groups, root) {
        if let Some(room) = headroom(&dir, files) {
            least = Some(least.map_or(room, |l| l.min(room)));
        }
    }
    least
}

/// The files of one cgroup version: limit, usage, and the statistic of
/// page cache the kernel can drop (usage counts it; a limit reclaims it).
struct CgroupFiles {
    limit: &'static str,
    usage: &'static str,
    inactive: &'static str,
}

const CGROUP_V2: CgroupFiles = CgroupFiles {
    limit: "memory.max",
    usage: "memory.current",
    inactive: "inactive_file",
};

const CGROUP_V1: CgroupFiles = CgroupFiles {
    limit: "memory.limit_in_bytes",
    usage: "memory.usage_in_bytes",
    inactive: "total_inactive_file",
};

/// Every group directory from this process's memory cgroup up to its
/// hierarchy's root, with the version's file names. Inside a cgroup
/// namespace the named path may not exist under the mount: its root is
/// then the process's own group.
fn memory_groups(groups: &str, root: &Path) -> Vec<(PathBuf, &'static CgroupFiles)> {
    let mut out = vec![];
    for line in groups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (mount, files) = if id == "0" && controllers.is_empty() {
            let v2 = if root.join("cgroup.controllers").exists() {
                root.to_path_buf()
            } else {
                root.join("unified")
            };
            (v2, &CGROUP_V2)
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), &CGROUP_V1)
        } else {
            continue;
        };
        let mut dir = mount.join(path.trim_start_matches('/'));
        if !dir.is_dir() {
            dir = mount.clone();
        }
        for d in dir.ancestors().take_while(|d| d.starts_with(&mount)) {
            out.push((d.to_path_buf(), files));
        }
    }
    out
}

/// `limit − usage + reclaimable page cache` of one group, if it has a limit.
fn headroom(dir: &Path, files: &CgroupFiles) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let limit: u64 = read(files.limit)?.trim().parse().ok()?;
    // v1 writes "no limit" as a page-rounded i64::MAX.
    if limit >= 1 << 62 {
        return None;
    }
    let usage: u64 = read(files.usage)?.trim().parse().ok()?;
    let inactive = read("memory.stat")
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(files.inactive)?.trim().parse().ok())
        })
        .unwrap_or(0);
    Some(limit.saturating_sub(usage.saturating_sub(inactive)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    /// A limit on a group above the process's own counts, page cache the
    /// kernel can drop does not, and "no limit" is none.
    #[test]
    fn cgroup_headroom_is_the_least_room_on_the_way_to_the_root() {
        let root = std::env::temp_dir().join(format!("gsc-cgroup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let v1 = root.join("memory");
        write(&v1, &[("memory.limit_in_bytes", "9223372036854771712\n")]);
        write(
            &v1.join("jobs"),
            &[
                ("memory.limit_in_bytes", "1000000\n"),
                ("memory.usage_in_bytes", "700000\n"),
                (
                    "memory.stat",
                    "inactive_file 1\ntotal_inactive_file 100000\n",
                ),
            ],
        );
        write(
            &v1.join("jobs/me"),
            &[("memory.limit_in_bytes", "9223372036854771712\n")],
        );
        let groups = "4:memory:/jobs/me\n3:cpu:/\n";
        assert_eq!(cgroup_headroom(groups, &root), Some(400_000));
        assert_eq!(cgroup_headroom("4:memory:/\n", &root), None);

        let v2 = root.join("v2");
        write(&v2, &[("cgroup.controllers", "memory\n")]);
        write(
            &v2.join("box"),
            &[
                ("memory.max", "5000\n"),
                ("memory.current", "2000\n"),
                ("memory.stat", "anon 1\ninactive_file 500\n"),
            ],
        );
        assert_eq!(cgroup_headroom("0::/box\n", &v2), Some(3500));
        // Inside a namespace the named group is the mount's root.
        write(&v2, &[("memory.max", "max\n"), ("memory.current", "1\n")]);
        assert_eq!(cgroup_headroom("0::/elsewhere\n", &v2), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_machine_has_some_memory_available() {
        if cfg!(target_os = "linux") {
            assert!(available_memory_bytes().is_some_and(|b| b > 0));
        }
    }
}
