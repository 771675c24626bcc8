//! haproxy as the node's load balancer: [`render`] a [`Plan`] to a
//! configuration (pure), and [`Haproxy`], the process that serves it: each
//! plan is checked (`haproxy -c`), swapped in atomically and reloaded in
//! master-worker mode without dropping a connection.
//!
//! Why master-worker: on SIGUSR2 the master re-executes itself, takes the
//! old worker's listening sockets over a socket pair and forks a new worker
//! on them, so no connection is refused while the configuration changes;
//! the old worker stops accepting, finishes what it serves and leaves (at
//! the latest after [`HARD_STOP_AFTER`]). haproxy 2.6 answers neither the
//! signal nor the CLI's `reload` with a verdict, so [`Haproxy::apply`] asks
//! the master's CLI (`show proc`) until it counts the reload, then the new
//! worker itself: a plan counts as applied only once that worker answers.
//! HTTP keep-alive clients of the old worker get `Connection: close` on
//! their next response (`option idle-close-on-response`) instead of a cut.

mod master;
mod process;
mod render;

use std::path::PathBuf;
use std::time::Duration;

pub use process::Haproxy;
pub use render::render;

#[cfg(doc)]
use super::Plan;

/// Where [`Haproxy`] keeps its files, and the limits every frontend shares.
/// [`Settings::new`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The directory of the configuration ([`CONFIG_FILE`]), the pid file,
    /// the master and stats sockets and haproxy's log. A Unix socket path
    /// holds at most 107 bytes, so keep it short.
    pub dir: PathBuf,
    /// How long haproxy waits for a backend to accept a connection before it
    /// tries another one.
    pub connect_timeout: Duration,
    /// How long a client may stay silent (between requests, or in a TCP stream).
    pub client_timeout: Duration,
    /// How long a backend may stay silent (before its response, or in a TCP stream).
    pub server_timeout: Duration,
    /// Concurrent connections haproxy accepts in all, past which new ones
    /// wait in the kernel's listen queue.
    pub max_conn: u32,
    /// The uid and gid haproxy's workers drop to once they listen (`None`:
    /// they keep the agent's). [`Settings::new`] sets them when the agent
    /// runs as root: a proxy facing the network never serves as root.
    pub run_as: Option<(u32, u32)>,
    /// Where haproxy's built-in Prometheus exporter answers `GET /metrics`
    /// (the node's address and `gantry agent --lb-metrics-port`); `None`: off.
    pub exporter: Option<std::net::SocketAddr>,
}

impl Settings {
    /// Defaults: connect timeout 3 s (backends are on the local network: a
    /// live one answers within milliseconds, and a dead one should cost
    /// little before the retry on another), client and server timeouts 60 s
    /// (long enough for slow requests and quiet keep-alive or TCP
    /// connections, short enough that abandoned ones are reclaimed), at
    /// most 4096 connections (about 130 MB of buffers at worst).
    pub fn new(dir: impl Into<PathBuf>) -> Settings {
        Settings {
            dir: dir.into(),
            connect_timeout: Duration::from_secs(3),
            client_timeout: Duration::from_secs(60),
            server_timeout: Duration::from_secs(60),
            max_conn: 4096,
            run_as: unprivileged_account(),
            exporter: None,
        }
    }

    /// The configuration haproxy runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }
}

/// When this process is root: the `haproxy` account (Debian's package
/// makes it), else `nobody`; `None` otherwise, or when neither exists.
fn unprivileged_account() -> Option<(u32, u32)> {
    if rustix::process::geteuid().as_raw() != 0 {
        return None;
    }
    let passwd = std::path::Path::new(crate::supervise::PASSWD);
    ["haproxy", "nobody"]
        .into_iter()
        .find_map(|name| crate::supervise::resolve_user(name, passwd).ok())
        .map(|account| (account.uid, account.gid))
}

/// The configuration in force, in [`Settings::dir`].
pub const CONFIG_FILE: &str = "haproxy.cfg";

/// haproxy's own output (startup, reloads, alerts) in [`Settings::dir`];
/// the agent cuts it back to nothing when it passes [`LOG_CAP_BYTES`].
pub const LOG_FILE: &str = "haproxy.log";

/// The size past which [`LOG_FILE`] is emptied (at a start or a reload).
pub const LOG_CAP_BYTES: u64 = 1 << 20;

/// How long an old worker may keep serving its connections after a reload
/// or a stop before it is closed by force: long-lived TCP connections
/// would otherwise keep old workers (and their memory) forever.
pub const HARD_STOP_AFTER: Duration = Duration::from_secs(30);

/// The master's CLI socket in [`Settings::dir`] (reload, `show proc`).
const MASTER_SOCKET: &str = "master.sock";
/// The worker's stats socket in [`Settings::dir`], for operators (`show stat`).
const STATS_SOCKET: &str = "haproxy.sock";
/// The master's pid, written by haproxy.
const PID_FILE: &str = "haproxy.pid";
/// Where a new configuration is written and checked before it replaces [`CONFIG_FILE`].
const NEW_CONFIG_FILE: &str = "haproxy.cfg.new";
