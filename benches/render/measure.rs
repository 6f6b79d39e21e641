//! What a measurement records: latencies, and CPU time read from /proc.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub(crate) struct Samples(pub(crate) Vec<Duration>);

impl Samples {
    pub(crate) fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Nearest-rank percentile.
    pub(crate) fn pct(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort_unstable();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub(crate) fn p50(&self) -> Duration {
        self.pct(50.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Linux reports process times in USER_HZ, which is 100 on every architecture it supports.
const TICK: Duration = Duration::from_millis(10);

/// The CPU time (user + system, plus that of reaped children) of every process in process
/// group `pgid`. CPU time holds up on a machine shared with other work, where wall time does
/// not: a busy neighbour slows both sides down, but costs neither of them CPU time.
pub(crate) fn group_cpu(pgid: u32) -> Duration {
    let mut ticks = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // exited meanwhile
        };
        if let Some((pgrp, t)) = stat_times(&stat)
            && pgrp == pgid
        {
            ticks += t;
        }
    }
    TICK * ticks
}

/// CPU time of this process (all threads).
pub(crate) fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    TICK * stat_times(&stat).map_or(0, |(_, t)| t)
}

/// The process group and utime + stime + cutime + cstime from a /proc/PID/stat line.
fn stat_times(stat: &str) -> Option<(u32, u32)> {
    // The command name (field 2) may hold spaces and parentheses; what follows its closing
    // parenthesis starts with field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
    // Field 5 is the process group, fields 14 to 17 the times.
    let pgrp = num(5 - 3)?;
    let t = num(14 - 3)? + num(15 - 3)? + num(16 - 3)? + num(17 - 3)?;
    Some((pgrp, t))
}
