//! What `/proc` tells about one process: resident memory, CPU time, context switches.

use std::fs;
use std::path::PathBuf;

/// A reading of `/proc` that could not be made or understood.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no {field} in it")]
    Missing { path: PathBuf, field: &'static str },
}

/// One process at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// Resident set size (VmRSS), KiB: counts in full the pages it shares with the other
    /// pvbus processes (the same binary).
    pub rss_kib: u64,
    /// Proportional set size (`Pss` of smaps_rollup), KiB: shared pages divided among
    /// the processes sharing them, so that the sum over processes is the memory used.
    /// `None` where the kernel has no smaps_rollup.
    pub pss_kib: Option<u64>,
    /// User + system CPU time of every thread, clock ticks.
    pub cpu_ticks: u64,
    /// Voluntary + involuntary context switches summed over the process's live threads:
    /// each one is the process going to sleep or being put off the CPU, i.e. a wake-up.
    pub context_switches: u64,
}

fn read(path: PathBuf) -> Result<String, ProcError> {
    fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// The value of `key:` in a `/proc/.../status` text, as the first number after it.
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name in
/// parentheses may hold spaces, so fields are counted after its closing parenthesis.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, so field n is index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Samples process `pid` now.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = read(status_path.clone())?;
    let rss_kib = status_field(&status, "VmRSS").ok_or(ProcError::Missing {
        path: status_path.clone(),
        field: "VmRSS",
    })?;
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    let cpu_ticks = stat_cpu_ticks(&read(stat_path.clone())?).ok_or(ProcError::Missing {
        path: stat_path,
        field: "utime/stime",
    })?;
    let pss_kib = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| status_field(&text, "Pss"));
    // The process's own status counts its main thread only: sum every thread.
    let task_dir = PathBuf::from(format!("/proc/{pid}/task"));
    let tasks = fs::read_dir(&task_dir).map_err(|source| ProcError::Read {
        path: task_dir.clone(),
        source,
    })?;
    let mut context_switches = 0;
    for task in tasks.flatten() {
        // A thread may end between the listing and the read: it is simply not counted.
        if let Ok(text) = fs::read_to_string(task.path().join("status")) {
            context_switches += status_field(&text, "voluntary_ctxt_switches").unwrap_or(0)
                + status_field(&text, "nonvoluntary_ctxt_switches").unwrap_or(0);
        }
    }
    Ok(ProcSample {
        rss_kib,
        pss_kib,
        cpu_ticks,
        context_switches,
    })
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_status_and_stat() {
        let status = "Name:\tpvbus\nVmRSS:\t    5120 kB\nvoluntary_ctxt_switches:\t42\n\
                      nonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_field(status, "VmRSS"), Some(5120));
        assert_eq!(status_field(status, "voluntary_ctxt_switches"), Some(42));
        assert_eq!(status_field(status, "nonvoluntary_ctxt_switches"), Some(7));
        assert_eq!(status_field(status, "VmSwap"), None);
        let stat = "4242 (pvbus (a) b) S 1 4242 4242 0 -1 4194560 500 0 0 0 31 9 0 0 20 0 3 0";
        assert_eq!(stat_cpu_ticks(stat), Some(40));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        if let Some(pss) = s.pss_kib {
            assert!(
                pss > 0 && pss <= s.rss_kib,
                "PSS {pss} KiB, RSS {} KiB",
                s.rss_kib
            );
        }
        assert!(s.context_switches > 0);
        assert!(matches!(
            sample(u32::MAX).unwrap_err(),
            ProcError::Read { .. }
        ));
    }
}
