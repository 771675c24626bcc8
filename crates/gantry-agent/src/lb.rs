//! The node's local load balancer (seed 001 "Public and private services",
//! seed 004 "haproxy+etcd"): a frontend on each required service's
//! `local_port`, a backend of that service's healthy instances.
//!
//! The agent computes a [`Plan`] (pure data) from the world; a balancer
//! ([`haproxy`] in production, [`builtin`] where haproxy is not installed)
//! makes it so. A plan is only ever applied whole: a balancer that cannot
//! apply one keeps serving the last plan it applied.

use std::net::SocketAddr;

pub mod builtin;
pub mod haproxy;

/// Everything one node's balancer serves, sorted by service id.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub frontends: Vec<Frontend>,
}

/// One listening address routing to one service's instances.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frontend {
    /// The service id; also the haproxy frontend and backend name.
    pub service: String,
    /// Where the balancer listens: the node's address and the service's `local_port`.
    pub bind: SocketAddr,
    pub mode: Mode,
    /// Whether this frontend is here because the service is public and this
    /// node is an external balancer (otherwise: a local service requires it).
    pub public: bool,
    /// Healthy instances, sorted by id; may be empty (connections are then refused or answered 503).
    pub backends: Vec<Backend>,
}

/// How the balancer speaks to clients and backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// HTTP/1.1: haproxy adds an `X-Request-ID` header (seed 002 "Trace-ID").
    Http,
    /// Plain TCP: bytes both ways.
    Tcp,
}

/// One healthy instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backend {
    /// The instance id (the machine it runs on).
    pub id: String,
    pub address: SocketAddr,
}

/// What applying a plan took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Applied {
    /// False when the plan was the one already applied (nothing was done).
    pub changed: bool,
    /// Time spent validating the configuration (`haproxy -c`), in microseconds.
    pub check_us: u64,
    /// Time spent swapping it in (writing, reloading, rebinding), in microseconds.
    pub reload_us: u64,
}

/// Why a plan could not be applied; the balancer keeps its previous plan.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// The rendered configuration was rejected (`haproxy -c` output).
    #[error("the configuration was rejected: {0}")]
    Rejected(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// Which balancer a node runs (`gantry agent --lb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LbKind {
    /// haproxy when it is installed, else the built-in proxy (and the agent says so).
    Auto,
    Haproxy,
    Builtin,
    /// No balancer: requirements resolve to one healthy instance directly.
    #[default]
    Off,
}

/// A running balancer of either kind.
#[derive(Debug)]
pub enum Balancer {
    // Boxed: the haproxy handle is ten times the size of the built-in one.
    Haproxy(Box<haproxy::Haproxy>),
    Builtin(builtin::Builtin),
}

impl Balancer {
    /// Starts the balancer `kind` asks for, its files under `dir`; `None` for
    /// [`LbKind::Off`]. `--lb haproxy` without haproxy installed is an error
    /// that says how to install it; `auto` falls back to the built-in proxy.
    pub async fn start(kind: LbKind, dir: &std::path::Path) -> Result<Option<Balancer>, LbError> {
        let binary = match kind {
            LbKind::Off => return Ok(None),
            LbKind::Builtin => return Ok(Some(Balancer::Builtin(builtin::Builtin::new()))),
            LbKind::Auto => match haproxy::Haproxy::find_binary() {
                Some(binary) => binary,
                None => return Ok(Some(Balancer::Builtin(builtin::Builtin::new()))),
            },
            LbKind::Haproxy => haproxy::Haproxy::find_binary().ok_or_else(|| LbError::Io {
                what: "--lb haproxy".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "haproxy is not installed: `apt-get install haproxy`, or run with --lb builtin",
                ),
            })?,
        };
        // haproxy reads a relative socket path as host:port: give it an absolute one.
        let dir = std::path::absolute(dir)
            .map_err(|source| LbError::Io { what: format!("resolving {}", dir.display()), source })?;
        let settings = haproxy::Settings::new(dir);
        Ok(Some(Balancer::Haproxy(Box::new(haproxy::Haproxy::start(binary, settings).await?))))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Balancer::Haproxy(_) => "haproxy",
            Balancer::Builtin(_) => "builtin",
        }
    }

    /// Applies `plan` whole, or keeps the previous one and says why.
    pub async fn apply(&mut self, plan: &Plan) -> Result<Applied, LbError> {
        match self {
            Balancer::Haproxy(h) => h.apply(plan).await,
            Balancer::Builtin(b) => b.apply(plan).await,
        }
    }

    pub async fn stop(self) {
        match self {
            Balancer::Haproxy(h) => h.stop().await,
            Balancer::Builtin(b) => b.stop().await,
        }
    }
}
