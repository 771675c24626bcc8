//! The agent's `/metrics` (issue 18): Prometheus text of the node and of
//! what the agent runs on it, so nobody logs into a node to run `free -h`
//! (seed 000).
//!
//! Two sources: the node, read from /proc and the file system at each
//! scrape ([`NodeSample::read`]: CPU time by mode, memory, load, network
//! and disk counters, the data directory's file system), and what the
//! agent last knew of its work ([`View`]: the status it publishes, the
//! last usage measurement of each process tree, its checks' latest
//! results). [`render`] is pure, so the output is tested byte for byte and
//! checked by Prometheus' own parser (`promtool check metrics`).
//!
//! Every label value comes from a bounded set: the node's devices, the
//! services and allocations placed here, the fixed state names. Nothing a
//! request or a process prints becomes a label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use gantry_api::{AgentStatus, AllocState, CheckStatus, Health, NodeUsage, ProcState, RunState};

/// The node as read at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    /// Seconds of CPU time of all CPUs, by mode (`user`, `system`, `idle`, ...).
    pub cpu_seconds: Vec<(&'static str, f64)>,
    pub cpus: u32,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub load: [f64; 3],
    /// Interface -> (bytes received, bytes sent).
    pub network: BTreeMap<String, (u64, u64)>,
    /// Block device -> (bytes read, bytes written).
    pub disks: BTreeMap<String, (u64, u64)>,
    /// The file system of the agent's data directory: (size, available) bytes.
    pub filesystem: Option<(u64, u64)>,
}

/// The modes of /proc/stat's `cpu` line, in its order.
const CPU_MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

impl NodeSample {
    /// Reads the node from `proc` (normally `/proc`) and the file system
    /// holding `data_dir`. What cannot be read is left out.
    pub fn read(proc: &Path, data_dir: &Path) -> NodeSample {
        let read = |name: &str| std::fs::read_to_string(proc.join(name)).unwrap_or_default();
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let (total, available) = crate::usage::parse_meminfo(&read("meminfo")).unwrap_or((0, 0));
        let filesystem = rustix::fs::statvfs(data_dir)
            .ok()
            .map(|fs| (fs.f_blocks.saturating_mul(fs.f_frsize), fs.f_bavail.saturating_mul(fs.f_frsize)));
        NodeSample {
            cpu_seconds: parse_cpu_modes(&read("stat"), ticks),
            cpus: std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            memory_total_bytes: total,
            memory_available_bytes: available,
            load: parse_loadavg(&read("loadavg")),
            network: parse_net_dev(&read("net/dev")),
            disks: parse_diskstats(&read("diskstats")),
            filesystem,
        }
    }
}

/// Seconds per mode from /proc/stat's aggregate `cpu` line.
pub fn parse_cpu_modes(text: &str, ticks_per_second: f64) -> Vec<(&'static str, f64)> {
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return Vec::new() };
    CPU_MODES
        .iter()
        .zip(line.split_whitespace().skip(1))
        .filter_map(|(mode, value)| Some((*mode, value.parse::<u64>().ok()? as f64 / ticks_per_second)))
        .collect()
}

/// The 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> [f64; 3] {
    let mut values = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [values.next().unwrap_or(0.0), values.next().unwrap_or(0.0), values.next().unwrap_or(0.0)]
}

/// Interface -> (received, transmitted) bytes from /proc/net/dev.
pub fn parse_net_dev(text: &str) -> BTreeMap<String, (u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let fields: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            Some((name.trim().to_owned(), (*fields.first()?, *fields.get(8)?)))
        })
        .collect()
}

/// Whole block devices -> (read, written) bytes from /proc/diskstats
/// (sectors of 512 bytes). Partitions, loop and RAM devices are left out:
/// a partition's traffic is already its disk's, and a loop device per
/// snap would grow the label set.
pub fn parse_diskstats(text: &str) -> BTreeMap<String, (u64, u64)> {
    let names: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    let is_partition = |name: &str| {
        names.iter().any(|other| {
            *other != name
                && name.starts_with(other)
                && name[other.len()..].trim_start_matches('p').bytes().all(|b| b.is_ascii_digit())
        })
    };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = *fields.get(2)?;
            if name.starts_with("loop") || name.starts_with("ram") || is_partition(name) {
                return None;
            }
            let sectors = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok());
            Some((name.to_owned(), (sectors(5)?.saturating_mul(512), sectors(9)?.saturating_mul(512))))
        })
        .collect()
}

/// What the agent knows of its work when it is scraped.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The status the agent last built (secrets masked).
    pub status: Option<AgentStatus>,
    /// The last usage measurement (process trees' CPU and memory).
    pub usage: Option<NodeUsage>,
    /// Each unit's check as of now (the status holds it as of the last
    /// publish); filled from `live` at each scrape.
    pub checks: BTreeMap<String, CheckStatus>,
    /// Each unit's checker, to read its latest probe when scraped.
    pub live: BTreeMap<String, tokio::sync::watch::Receiver<CheckStatus>>,
    /// Each unit's service (a static service's unit is named after it; an
    /// allocation's after the allocation).
    pub services: BTreeMap<String, String>,
}

impl View {
    /// The labels of `unit`: its service and the unit itself.
    fn labels<'a>(&'a self, unit: &'a str) -> [(&'static str, &'a str); 2] {
        [("service", self.services.get(unit).map_or(unit, String::as_str)), ("unit", unit)]
    }
}

impl View {
    /// A copy with every check read as of now.
    pub fn now(&self) -> View {
        let mut view = self.clone();
        view.checks = self.live.iter().map(|(unit, rx)| (unit.clone(), rx.borrow().clone())).collect();
        view
    }
}

/// Prometheus text (version 0.0.4) of the node and `view`, at `now_ms`.
pub fn render(view: &View, node: &NodeSample, now_ms: u64) -> String {
    let mut out = Text::default();
    node_families(&mut out, node);
    if let Some(status) = &view.status {
        out.family("gantry_agent_info", "gauge", "The agent: its machine and group (always 1).");
        out.sample(
            "gantry_agent_info",
            &[("machine", &status.machine), ("group", status.group.as_deref().unwrap_or(""))],
            1.0,
        );
        service_families(&mut out, view, status, now_ms);
        check_families(&mut out, view, status);
        listener_families(&mut out, status);
        allocation_families(&mut out, view, status);
        balancer_families(&mut out, status);
    }
    out.0
}

fn node_families(out: &mut Text, node: &NodeSample) {
    out.family("gantry_node_cpu_seconds_total", "counter", "CPU time of all the node's CPUs, by mode.");
    for (mode, seconds) in &node.cpu_seconds {
        out.sample("gantry_node_cpu_seconds_total", &[("mode", mode)], *seconds);
    }
    out.gauge("gantry_node_cpus", "The node's CPUs.", f64::from(node.cpus));
    out.gauge("gantry_node_memory_total_bytes", "The node's memory.", node.memory_total_bytes as f64);
    out.gauge(
        "gantry_node_memory_available_bytes",
        "Memory available for new work without swapping (MemAvailable).",
        node.memory_available_bytes as f64,
    );
    for (name, minutes, value) in [
        ("gantry_node_load1", 1, node.load[0]),
        ("gantry_node_load5", 5, node.load[1]),
        ("gantry_node_load15", 15, node.load[2]),
    ] {
        out.gauge(name, &format!("The {minutes}-minute load average."), value);
    }
    let devices = |out: &mut Text,
                   name: &str,
                   help: &str,
                   label: &str,
                   values: &BTreeMap<String, (u64, u64)>,
                   pick: fn(&(u64, u64)) -> u64| {
        out.family(name, "counter", help);
        for (device, pair) in values {
            out.sample(name, &[(label, device)], pick(pair) as f64);
        }
    };
    devices(
        out,
        "gantry_node_network_receive_bytes_total",
        "Bytes received, by interface.",
        "device",
        &node.network,
        |p| p.0,
    );
    devices(
        out,
        "gantry_node_network_transmit_bytes_total",
        "Bytes sent, by interface.",
        "device",
        &node.network,
        |p| p.1,
    );
    devices(out, "gantry_node_disk_read_bytes_total", "Bytes read, by block device.", "device", &node.disks, |p| p.0);
    devices(
        out,
        "gantry_node_disk_written_bytes_total",
        "Bytes written, by block device.",
        "device",
        &node.disks,
        |p| p.1,
    );
    if let Some((size, available)) = node.filesystem {
        out.gauge(
            "gantry_node_filesystem_size_bytes",
            "Size of the file system of the agent's data directory.",
            size as f64,
        );
        out.gauge(
            "gantry_node_filesystem_avail_bytes",
            "Bytes available to unprivileged users on the file system of the agent's data directory.",
            available as f64,
        );
    }
}

fn service_families(out: &mut Text, view: &View, status: &AgentStatus, now_ms: u64) {
    out.family("gantry_service_health", "gauge", "1 for the health each unit's instance is published with.");
    for (unit, state) in &status.processes {
        for health in [Health::Passing, Health::Failing, Health::Unknown] {
            let [service, unit] = view.labels(unit);
            out.sample(
                "gantry_service_health",
                &[service, unit, ("health", health.as_str())],
                flag(state.health == health),
            );
        }
    }
    let processes: Vec<_> =
        status.processes.iter().filter_map(|(unit, state)| Some((unit, state.process.as_ref()?))).collect();
    out.family("gantry_service_state", "gauge", "1 for the state each supervised process is in.");
    for (unit, process) in &processes {
        for state in ProcState::ALL {
            let [service, unit] = view.labels(unit);
            out.sample(
                "gantry_service_state",
                &[service, unit, ("state", state.as_str())],
                flag(process.state == state),
            );
        }
    }
    out.family("gantry_service_restarts_total", "counter", "Starts of each supervised process after its first.");
    for (unit, process) in &processes {
        out.sample("gantry_service_restarts_total", &view.labels(unit), process.restarts as f64);
    }
    out.family("gantry_service_uptime_seconds", "gauge", "Seconds since each running process last started.");
    for (unit, process) in &processes {
        if let (Some(started), ProcState::Running) = (process.started_at_ms, process.state) {
            out.sample(
                "gantry_service_uptime_seconds",
                &view.labels(unit),
                now_ms.saturating_sub(started) as f64 / 1000.0,
            );
        }
    }
    let Some(usage) = &view.usage else { return };
    let measured = |name: &str, kind: &str, help: &str, out: &mut Text, value: fn(&gantry_api::ProcessUsage) -> f64| {
        out.family(name, kind, help);
        for (unit, process) in &usage.processes {
            out.sample(name, &view.labels(unit), value(process));
        }
    };
    measured(
        "gantry_service_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of each process tree's live processes, at the last measurement.",
        out,
        |p| p.cpu_seconds,
    );
    measured(
        "gantry_service_resident_memory_bytes",
        "gauge",
        "Resident memory of each process tree, at the last measurement.",
        out,
        |p| (p.rss_mb * 1024.0 * 1024.0).round(),
    );
    measured("gantry_service_processes", "gauge", "Processes in each process tree.", out, |p| f64::from(p.processes));
}

fn check_families(out: &mut Text, view: &View, status: &AgentStatus) {
    let checks: Vec<(&String, &CheckStatus)> = status
        .processes
        .iter()
        .filter_map(|(unit, state)| Some((unit, view.checks.get(unit).or(state.check.as_ref())?)))
        .collect();
    out.family("gantry_check_healthy", "gauge", "1 when the unit's check passes (after `rise` probes).");
    for (unit, check) in &checks {
        out.sample("gantry_check_healthy", &view.labels(unit), flag(check.healthy));
    }
    out.family("gantry_check_duration_seconds", "gauge", "How long the last probe of each check took.");
    for (unit, check) in &checks {
        if let Some(ms) = check.last_duration_ms {
            out.sample("gantry_check_duration_seconds", &view.labels(unit), ms as f64 / 1000.0);
        }
    }
    out.family("gantry_check_consecutive_failures", "gauge", "Failed probes since the last pass.");
    for (unit, check) in &checks {
        out.sample("gantry_check_consecutive_failures", &view.labels(unit), f64::from(check.consecutive_failures));
    }
    out.family("gantry_checks_total", "counter", "Probes run since the check started.");
    for (unit, check) in &checks {
        out.sample("gantry_checks_total", &view.labels(unit), check.checks as f64);
    }
}

fn listener_families(out: &mut Text, status: &AgentStatus) {
    let Some(listener) = &status.listener else { return };
    out.gauge("gantry_listener_enabled", "1 when the provision listener is on.", flag(listener.enabled));
    out.family("gantry_listener_state", "gauge", "1 for the listener's state.");
    for state in [RunState::Idle, RunState::Running, RunState::Queued, RunState::Throttled] {
        out.sample("gantry_listener_state", &[("state", state.as_str())], flag(listener.state == state));
    }
    out.family("gantry_listener_runs_total", "counter", "Provision runs finished.");
    out.sample("gantry_listener_runs_total", &[], listener.runs_total as f64);
    out.gauge(
        "gantry_listener_queued_triggers",
        "Triggers folded into the queued run.",
        listener.queued_triggers as f64,
    );
    if let Some(run) = &listener.last_run {
        let outcome = if run.succeeded() {
            "success"
        } else if run.timed_out {
            "timeout"
        } else if run.signal.is_some() {
            "killed"
        } else if run.error.is_some() {
            "error"
        } else {
            "failed"
        };
        out.family("gantry_listener_last_run_outcome", "gauge", "1 for how the last provision run ended.");
        for name in ["success", "failed", "timeout", "killed", "error"] {
            out.sample("gantry_listener_last_run_outcome", &[("outcome", name)], flag(outcome == name));
        }
        out.gauge(
            "gantry_listener_last_run_duration_seconds",
            "How long the last provision run took.",
            run.duration_ms as f64 / 1000.0,
        );
        out.gauge(
            "gantry_listener_last_run_timestamp_seconds",
            "When the last provision run started (Unix seconds).",
            run.started_at_ms as f64 / 1000.0,
        );
    }
}

fn allocation_families(out: &mut Text, view: &View, status: &AgentStatus) {
    if status.allocations.is_empty() {
        return;
    }
    out.family("gantry_allocation_state", "gauge", "1 for the state of each allocation placed on this node.");
    for (alloc, report) in &status.allocations {
        for state in AllocState::ALL {
            let [service, _] = view.labels(alloc);
            out.sample(
                "gantry_allocation_state",
                &[service, ("allocation", alloc), ("state", state.as_str())],
                flag(report.state == state),
            );
        }
    }
    out.family("gantry_allocation_restarts_total", "counter", "Restarts in place of each allocation.");
    for (alloc, report) in &status.allocations {
        let [service, _] = view.labels(alloc);
        out.sample("gantry_allocation_restarts_total", &[service, ("allocation", alloc)], report.restarts as f64);
    }
}

fn balancer_families(out: &mut Text, status: &AgentStatus) {
    let Some(lb) = &status.lb else { return };
    out.family("gantry_lb_backends", "gauge", "Passing instances each frontend of the node's balancer sends to.");
    for frontend in &lb.frontends {
        out.sample(
            "gantry_lb_backends",
            &[("service", &frontend.service), ("kind", lb.kind.as_str())],
            frontend.backends.len() as f64,
        );
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// The exposition being written.
#[derive(Default)]
struct Text(String);

// `write!` to a String cannot fail; the results are ignored for that reason.
impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"");
                escape_into(&mut self.0, value);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format asks.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
