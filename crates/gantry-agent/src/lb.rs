//! The node's local load balancer (seed 001 "Public and private services",
//! seed 004 "haproxy+etcd"): a frontend on each required service's
//! `local_port`, a backend of that service's healthy instances.
//!
//! The agent computes a [`Plan`] (pure data) from the world; a balancer
//! ([`haproxy`] in production, [`builtin`] where haproxy is not installed)
//! makes it so. A plan is only ever applied whole: a balancer that cannot
//! apply one keeps serving the last plan it applied.

pub mod builtin;
pub mod haproxy;

/// Everything one node's balancer serves, sorted by service id.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub frontends: Vec<Frontend>,
}

/// A frontend, its mode and its backends are what a node reports in its
/// status (`gantry lb:status`): wire types, defined with the other agent
/// documents.
pub use gantry_api::{Backend, Frontend, LbMode as Mode};

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
    /// With `exporter`, haproxy also serves its Prometheus exporter there.
    pub async fn start(
        kind: LbKind,
        dir: &std::path::Path,
        exporter: Option<std::net::SocketAddr>,
    ) -> Result<Option<Balancer>, LbError> {
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
        let settings = haproxy::Settings { exporter, ..haproxy::Settings::new(dir) };
        Ok(Some(Balancer::Haproxy(Box::new(haproxy::Haproxy::start(binary, settings).await?))))
    }

    /// Where haproxy's Prometheus exporter answers, if it has one.
    pub fn exporter(&self) -> Option<std::net::SocketAddr> {
        match self {
            Balancer::Haproxy(h) => h.settings().exporter,
            Balancer::Builtin(_) => None,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Which kind it is, as its node reports it.
    pub fn kind(&self) -> gantry_api::LbKind {
        match self {
            Balancer::Haproxy(_) => gantry_api::LbKind::Haproxy,
            Balancer::Builtin(_) => gantry_api::LbKind::Builtin,
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
