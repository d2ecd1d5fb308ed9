//! Where the machine's CPU went while a figure was measured: to PostgreSQL, to this
//! process (the relay and its producer), to everything else (the broker, when it runs
//! on the same machine), or nowhere. Read from `/proc` at the start and end of the
//! measurement, so on Linux only, and only for a PostgreSQL on this machine (every
//! process named `postgres` counts, in every cluster); elsewhere there is nothing to
//! report. Shares are of the host's CPUs; idle includes waiting for I/O.
//!
//! Where the database, the relay and the broker share the cores, this says what bounds
//! a rate: what the relay and the broker take, PostgreSQL does not get.

use std::collections::HashMap;
use std::fs;

/// CPU time counters at one moment, in clock ticks.
#[derive(Debug, Clone, Default)]
struct Counters {
    /// Busy and idle time of the whole machine (`/proc/stat`).
    busy: u64,
    idle: u64,
    /// Each PostgreSQL process's user and system time.
    postgres: HashMap<u32, u64>,
    /// This process's user and system time, every thread counted.
    this_process: u64,
}

impl Counters {
    fn read() -> Option<Self> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let idle = fields.get(3)? + fields.get(4)?;
        let busy = fields.iter().take(8).sum::<u64>() - idle;
        let mut postgres = HashMap::new();
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                continue;
            };
            match process_ticks(pid) {
                Some((name, ticks)) if name == "postgres" => {
                    postgres.insert(pid, ticks);
                }
                _ => {}
            }
        }
        let this_process = process_ticks(std::process::id())?.1;
        Some(Counters {
            busy,
            idle,
            postgres,
            this_process,
        })
    }
}

/// A process's command name and its user plus system time.
fn process_ticks(pid: u32) -> Option<(String, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may hold spaces; the fields follow the last one.
    let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name.to_owned(), utime + stime))
}

/// The machine's CPU time over a measurement, in shares of the whole.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuShares {
    pub(super) postgres: f64,
    pub(super) this_process: f64,
    pub(super) other: f64,
    pub(super) idle: f64,
}

impl CpuShares {
    /// The mean of several measurements.
    pub(super) fn mean(shares: &[CpuShares]) -> Option<CpuShares> {
        let n = shares.len() as f64;
        (!shares.is_empty()).then(|| CpuShares {
            postgres: shares.iter().map(|s| s.postgres).sum::<f64>() / n,
            this_process: shares.iter().map(|s| s.this_process).sum::<f64>() / n,
            other: shares.iter().map(|s| s.other).sum::<f64>() / n,
            idle: shares.iter().map(|s| s.idle).sum::<f64>() / n,
        })
    }

    /// The shares besides PostgreSQL's: "this process 22%, other processes 3%, idle 5%".
    pub(super) fn others(&self) -> String {
        format!(
            "this process {:.0}%, other processes {:.0}%, idle {:.0}%",
            self.this_process * 100.0,
            self.other * 100.0,
            self.idle * 100.0
        )
    }
}

/// A measurement of CPU shares under way.
#[derive(Debug)]
pub(super) struct CpuWindow(Option<Counters>);

impl CpuWindow {
    pub(super) fn open() -> Self {
        CpuWindow(Counters::read())
    }

    /// The shares since [`open`](Self::open); `None` without `/proc` or without a
    /// PostgreSQL process on this machine. A PostgreSQL process that started meanwhile
    /// counts from zero; one that ended meanwhile counts under "other".
    pub(super) fn close(self) -> Option<CpuShares> {
        let start = self.0?;
        let end = Counters::read()?;
        if end.postgres.is_empty() {
            return None;
        }
        let busy = end.busy.saturating_sub(start.busy) as f64;
        let idle = end.idle.saturating_sub(start.idle) as f64;
        let total = busy + idle;
        if total == 0.0 {
            return None;
        }
        let postgres: u64 = end
            .postgres
            .iter()
            .map(|(pid, ticks)| ticks.saturating_sub(start.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        let this_process = end.this_process.saturating_sub(start.this_process) as f64;
        let postgres = postgres as f64;
        Some(CpuShares {
            postgres: postgres / total,
            this_process: this_process / total,
            other: (busy - postgres - this_process).max(0.0) / total,
            idle: idle / total,
        })
    }
}
