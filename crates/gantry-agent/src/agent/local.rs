//! What an agent keeps on its own disk besides the listener's state: its
//! machine id and the ports it assigned to services without a `PORT`, so
//! both stay the same across restarts.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, TcpListener};
use std::path::Path;

use gantry_generate::write::write_atomic;

/// File names under the agent's data directory.
pub const MACHINE_ID_FILE: &str = "machine-id";
pub const PORTS_FILE: &str = "ports.json";

/// Ports the agent hands out to services that name none.
pub const PORT_RANGE: std::ops::RangeInclusive<u16> = 20000..=29999;

/// The machine id: `wanted` if given (and saved), else the saved one, else
/// a new `<hostname>-<8 hex>` saved for next time.
pub fn machine_id(data_dir: &Path, wanted: Option<&str>, hostname: &str) -> io::Result<String> {
    let path = data_dir.join(MACHINE_ID_FILE);
    let id = match (wanted, std::fs::read_to_string(&path)) {
        (Some(id), _) => id.to_owned(),
        (None, Ok(saved)) if !saved.trim().is_empty() => return Ok(saved.trim().to_owned()),
        (None, _) => {
            let host: String = hostname
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
                .take(40)
                .collect();
            let host = if host.is_empty() { "node".to_owned() } else { host };
            format!("{host}-{:08x}", random_u32())
        }
    };
    write_atomic(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// The port of `service`: its saved port if it has one, else a free port
/// of [`PORT_RANGE`] on `address`, saved.
pub fn assigned_port(data_dir: &Path, service: &str, address: IpAddr) -> io::Result<u16> {
    let path = data_dir.join(PORTS_FILE);
    let mut ports: BTreeMap<String, u16> =
        std::fs::read(&path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
    if let Some(port) = ports.get(service) {
        return Ok(*port);
    }
    let span = u32::from(PORT_RANGE.end() - PORT_RANGE.start()) + 1;
    let start = random_u32() % span;
    let taken: Vec<u16> = ports.values().copied().collect();
    let port = (0..span)
        .map(|i| PORT_RANGE.start() + ((start + i) % span) as u16)
        .find(|p| !taken.contains(p) && TcpListener::bind((address, *p)).is_ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::AddrInUse, format!("no free port in {PORT_RANGE:?} on {address}"))
        })?;
    ports.insert(service.to_owned(), port);
    write_atomic(&path, &serde_json::to_vec_pretty(&ports).map_err(io::Error::other)?)?;
    Ok(port)
}

/// Not cryptographic: spreads ids and first ports.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}

/// The processes the agent started for services, so that an agent that was
/// killed (SIGKILL, OOM) stops them when it starts again instead of
/// starting duplicates beside them.
pub const PROCESSES_FILE: &str = "processes.json";

/// One service process: its pid and its start time (clock ticks since
/// boot, `/proc/PID/stat` field 22), which tells it from a later process
/// that got the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Started {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Started {
    /// The process `pid` as it is now, if it exists.
    pub fn of(pid: u32) -> Option<Started> {
        let (_, start_ticks) = stat(pid)?;
        Some(Started { pid, start_ticks })
    }

    /// Whether this very process still runs: the same pid and start time
    /// (not a recycled pid), and not a zombie waiting to be reaped.
    pub fn running(&self) -> bool {
        stat(self.pid).is_some_and(|(state, ticks)| ticks == self.start_ticks && !matches!(state, 'Z' | 'X'))
    }
}

/// A process's state letter and start time, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

pub fn save_processes(data_dir: &Path, processes: &BTreeMap<String, Started>) -> io::Result<()> {
    write_atomic(&data_dir.join(PROCESSES_FILE), &serde_json::to_vec_pretty(processes).map_err(io::Error::other)?)
        .map(drop)
}

/// Kills (with their process groups) the service processes a previous run
/// of the agent left behind; returns the services it stopped.
pub fn kill_leftovers(data_dir: &Path) -> Vec<String> {
    let saved: BTreeMap<String, Started> = std::fs::read(data_dir.join(PROCESSES_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let mut stopped = Vec::new();
    for (service, process) in saved {
        if process.running() {
            crate::process_group::signal_group(Some(process.pid), rustix::process::Signal::KILL);
            stopped.push(service);
        }
    }
    let _ = std::fs::remove_file(data_dir.join(PROCESSES_FILE));
    stopped
}
