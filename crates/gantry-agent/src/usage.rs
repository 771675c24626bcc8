//! What a node and its supervised process trees use, read from /proc
//! (issue 16: `gantry nodes:usage` sets it beside what the scheduler
//! reserved). A [`Meter`] keeps the previous sample, so each measurement
//! also gives CPU cores busy over the interval since the last one.
//!
//! A process tree is a process group: the agent starts each service as the
//! leader of a group of its own, and its children stay in it unless they
//! call `setsid`/`setpgid` (those escape the count, as they escape the
//! agent's SIGTERM).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gantry_api::{NodeUsage, ProcessUsage};

const MB: f64 = 1024.0 * 1024.0;

/// One process's line of `/proc/<pid>/stat`, the fields used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub pgrp: u32,
    /// User + system time, in clock ticks.
    pub ticks: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`; `None` for a line that is not one. The
/// command name (field 2) may hold spaces and parentheses: the fields
/// after it are read from the last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let (head, tail) = line.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    // Fields from 3 (state) on; `tail` starts with a space.
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        pgrp: u32::try_from(field(5)?).ok()?,
        ticks: field(14)?.saturating_add(field(15)?),
        rss_pages: field(24)?,
    })
}

/// The aggregate CPU line of `/proc/stat`: (busy, total) ticks. Idle and
/// iowait are not busy.
pub fn parse_cpu_totals(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    if values.len() < 4 {
        return None;
    }
    // guest and guest_nice (9th, 10th) are already in user and nice.
    let total: u64 = values.iter().take(8).sum();
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some((total - idle.min(total), total))
}

/// (`MemTotal`, `MemAvailable`) in bytes from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let kib = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((kib("MemTotal:")?, kib("MemAvailable:")?))
}

/// Measures a node again and again, rates from the previous sample.
#[derive(Debug)]
pub struct Meter {
    proc: PathBuf,
    ticks_per_second: f64,
    page_bytes: f64,
    /// The node's (busy, total) ticks at the last sample.
    last_cpu: Option<(u64, u64)>,
    /// Each process group's ticks at the last sample, and when.
    last_groups: BTreeMap<u32, u64>,
    last_at: Option<Instant>,
}

impl Meter {
    pub fn new() -> Meter {
        Meter::at(Path::new("/proc"))
    }

    /// A meter reading another /proc (a test's copy).
    pub fn at(proc: &Path) -> Meter {
        Meter {
            proc: proc.to_owned(),
            ticks_per_second: rustix::param::clock_ticks_per_second() as f64,
            page_bytes: rustix::param::page_size() as f64,
            last_cpu: None,
            last_groups: BTreeMap::new(),
            last_at: None,
        }
    }

    /// The node's usage now; `groups` names the process groups to measure
    /// (a service id -> its leader's pid, which is the group's id).
    pub fn measure(&mut self, machine: &str, groups: &BTreeMap<String, u32>) -> NodeUsage {
        let now = Instant::now();
        let elapsed = self.last_at.map(|at| now.duration_since(at).as_secs_f64()).filter(|s| *s > 0.0);
        let read = |name: &str| std::fs::read_to_string(self.proc.join(name)).unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        let cpu_now = parse_cpu_totals(&read("stat"));
        let cpu = match (self.last_cpu, cpu_now) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                (busy1.saturating_sub(busy0)) as f64 / (total1 - total0) as f64 * f64::from(cpus)
            }
            _ => 0.0,
        };
        self.last_cpu = cpu_now;
        let (memory_total, available) = parse_meminfo(&read("meminfo")).unwrap_or((0, 0));
        let load1 = read("loadavg").split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);

        let wanted: BTreeMap<u32, &str> = groups.iter().map(|(name, pgid)| (*pgid, name.as_str())).collect();
        let mut totals: BTreeMap<u32, (u64, u64, u32)> = BTreeMap::new();
        if !wanted.is_empty()
            && let Ok(entries) = std::fs::read_dir(&self.proc)
        {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                // A process may end between the listing and the read.
                let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
                let Some(stat) = parse_stat(&line) else { continue };
                if wanted.contains_key(&stat.pgrp) {
                    let total = totals.entry(stat.pgrp).or_default();
                    total.0 += stat.ticks;
                    total.1 += stat.rss_pages;
                    total.2 += 1;
                }
            }
        }
        let mut processes = BTreeMap::new();
        for (pgid, name) in &wanted {
            let (ticks, pages, count) = totals.get(pgid).copied().unwrap_or_default();
            // A tree's ticks drop when a child exits: no negative rate.
            let rate = match (elapsed, self.last_groups.get(pgid)) {
                (Some(seconds), Some(before)) => ticks.saturating_sub(*before) as f64 / self.ticks_per_second / seconds,
                _ => 0.0,
            };
            processes.insert(
                (*name).to_owned(),
                ProcessUsage {
                    cpu_seconds: round3(ticks as f64 / self.ticks_per_second),
                    cpu: round3(rate),
                    rss_mb: round3(pages as f64 * self.page_bytes / MB),
                    processes: count,
                },
            );
        }
        self.last_groups = totals.into_iter().map(|(pgid, (ticks, _, _))| (pgid, ticks)).collect();
        self.last_at = Some(now);
        NodeUsage {
            machine: machine.to_owned(),
            cpu: round3(cpu),
            memory_mb: memory_total.saturating_sub(available) / (1024 * 1024),
            memory_total_mb: memory_total / (1024 * 1024),
            cpus,
            load1,
            processes,
            measured_at_ms: gantry_api::now_ms(),
        }
    }
}

impl Default for Meter {
    fn default() -> Meter {
        Meter::new()
    }
}

/// To a thousandth: a published document that changes only when the usage does.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_name() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 \
                    123456789 2048 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat, ProcStat { pid: 4242, pgrp: 4242, ticks: 300, rss_pages: 2048 });
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (x) S 1"), None);
    }

    #[test]
    fn cpu_totals_leave_idle_and_iowait_out() {
        let text = "cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 1 2 3 4\n";
        // total = 100+5+50+1000+20+1+2+3 = 1181; idle = 1000+20.
        assert_eq!(parse_cpu_totals(text), Some((161, 1181)));
        assert_eq!(parse_cpu_totals("intr 1 2 3"), None);
    }

    #[test]
    fn meminfo_in_bytes() {
        let text = "MemTotal:       16384 kB\nMemFree:   100 kB\nMemAvailable:    4096 kB\n";
        assert_eq!(parse_meminfo(text), Some((16384 * 1024, 4096 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    /// The real /proc: this test's own process group is measured, with its
    /// memory and, after it burns CPU, its CPU time.
    #[test]
    fn measures_a_real_process_group_and_the_node() {
        let me = std::process::id();
        let line = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let pgrp = parse_stat(&line).unwrap().pgrp;
        let groups = BTreeMap::from([("me".to_owned(), pgrp)]);
        let mut meter = Meter::new();
        let first = meter.measure("m1", &groups);
        assert!(first.memory_total_mb > 0 && first.memory_mb > 0 && first.memory_mb <= first.memory_total_mb);
        assert!(first.cpus >= 1);
        let mine = first.processes["me"];
        assert!(mine.processes >= 1 && mine.rss_mb > 1.0, "{mine:?}");
        // Burn 200 ms of this process's CPU time (by its own count, so a
        // loaded machine only makes it take longer), bounded at 20 s.
        let own_ticks = || parse_stat(&std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap()).unwrap().ticks;
        let (start, before) = (Instant::now(), own_ticks());
        let mut x = 0u64;
        while own_ticks() < before + meter.ticks_per_second as u64 / 5 {
            assert!(start.elapsed() < std::time::Duration::from_secs(20), "no CPU time in 20 s");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let second = meter.measure("m1", &groups);
        let mine2 = second.processes["me"];
        assert!(mine2.cpu_seconds >= mine.cpu_seconds + 0.19, "{mine:?} then {mine2:?}");
        assert!(mine2.cpu > 0.0, "a rate over the interval: {mine2:?}");
        // A group that does not exist is reported empty, not omitted.
        let none = meter.measure("m1", &BTreeMap::from([("gone".to_owned(), u32::MAX - 1)]));
        assert_eq!(none.processes["gone"].processes, 0);
    }
}
