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
