//! The built-in TCP proxy: round robin over healthy backends, where haproxy is not installed.
//!
//! Every frontend is proxied as plain TCP, whatever its [`Mode`](super::Mode):
//! a `Mode::Http` frontend gets no `X-Request-ID` header from the built-in
//! proxy (only haproxy adds one). Applying a plan binds the new frontends'
//! listeners first, so a bind failure leaves the plan in force untouched;
//! then it swaps: kept frontends get their new backends (connections already
//! open stay where they are), removed ones stop listening. Connections of a
//! removed frontend run to their end, as with haproxy's soft reload;
//! [`Builtin::stop`] closes them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Applied, Frontend, LbError, Plan};

/// How long connecting to one backend may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long to wait before accepting again after accept failed (out of
/// file descriptors, typically): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The balancer: one listener per frontend, on the current tokio runtime.
/// Dropping it stops listening; [`Builtin::stop`] also waits for that.
#[derive(Debug, Default)]
pub struct Builtin {
    plan: Plan,
    listening: BTreeMap<SocketAddr, Listening>,
    /// Proxied connections end when this is dropped (with the balancer).
    open: watch::Sender<()>,
}

impl Builtin {
    /// A balancer serving the empty plan.
    pub fn new() -> Builtin {
        Builtin::default()
    }

    /// Makes `plan` the plan in force, whole or not at all: a frontend whose
    /// address cannot be bound fails the apply and leaves the previous plan
    /// serving. `check_us` is always 0 (there is no configuration to check).
    pub async fn apply(&mut self, plan: &Plan) -> Result<Applied, LbError> {
        if *plan == self.plan {
            return Ok(Applied::default());
        }
        let began = Instant::now();
        reject_shared_binds(plan)?;
        let mut fresh = self.bind_new(plan).await?;
        // From here nothing fails.
        let mut old = std::mem::take(&mut self.listening);
        for frontend in &plan.frontends {
            let backends = frontend.backends.iter().map(|b| b.address).collect();
            let listening = match old.remove(&frontend.bind) {
                Some(kept) => kept.route_to(backends),
                // Bound above: every frontend is either kept or fresh.
                None => match fresh.remove(&frontend.bind) {
                    Some(listener) => Listening::start(listener, backends, self.open.subscribe()),
                    None => continue,
                },
            };
            self.listening.insert(frontend.bind, listening);
        }
        for removed in old.into_values() {
            removed.close().await;
        }
        self.plan = plan.clone();
        Ok(Applied { changed: true, check_us: 0, reload_us: micros(began.elapsed()) })
    }

    /// The plan in force: the last one applied successfully.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Stops listening on every frontend (their ports are closed when this
    /// returns) and closes every proxied connection.
    pub async fn stop(mut self) {
        for listening in std::mem::take(&mut self.listening).into_values() {
            listening.close().await;
        }
    }

    /// Listeners for the frontends `plan` adds; none if any fails.
    async fn bind_new(&self, plan: &Plan) -> Result<BTreeMap<SocketAddr, TcpListener>, LbError> {
        let mut fresh = BTreeMap::new();
        for frontend in plan.frontends.iter().filter(|f| !self.listening.contains_key(&f.bind)) {
            fresh.insert(frontend.bind, bind(frontend).await?);
        }
        Ok(fresh)
    }
}

/// Two frontends on one address cannot both listen.
fn reject_shared_binds(plan: &Plan) -> Result<(), LbError> {
    let mut seen: BTreeMap<SocketAddr, &str> = BTreeMap::new();
    for frontend in &plan.frontends {
        if let Some(other) = seen.insert(frontend.bind, &frontend.service) {
            return Err(LbError::Rejected(format!(
                "services {other} and {} both listen on {}: give one another local_port",
                frontend.service, frontend.bind
            )));
        }
    }
    Ok(())
}

async fn bind(frontend: &Frontend) -> Result<TcpListener, LbError> {
    TcpListener::bind(frontend.bind).await.map_err(|source| LbError::Io {
        what: format!("listening on {} for service {}", frontend.bind, frontend.service),
        source,
    })
}

fn micros(took: Duration) -> u64 {
    u64::try_from(took.as_micros()).unwrap_or(u64::MAX)
}

/// One frontend's listener and the backends it routes to.
#[derive(Debug)]
struct Listening {
    backends: Arc<Backends>,
    accepting: JoinHandle<()>,
}

impl Listening {
    fn start(listener: TcpListener, backends: Vec<SocketAddr>, open: watch::Receiver<()>) -> Listening {
        let backends = Arc::new(Backends { addresses: RwLock::new(backends.into()), next: AtomicUsize::new(0) });
        let accepting = tokio::spawn(accept(listener, backends.clone(), open));
        Listening { backends, accepting }
    }

    /// New connections go to `backends`; open ones stay where they are.
    fn route_to(self, backends: Vec<SocketAddr>) -> Listening {
        *self.backends.addresses.write().unwrap_or_else(PoisonError::into_inner) = backends.into();
        self
    }

    /// Stops accepting and waits until the listening socket is closed.
    async fn close(mut self) {
        self.accepting.abort();
        // An aborted task's future (and its listener) is dropped before its
        // handle resolves.
        let _ = (&mut self.accepting).await;
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// A frontend's backends, swapped whole by [`Builtin::apply`], and its
/// round-robin position.
#[derive(Debug)]
struct Backends {
    addresses: RwLock<Arc<[SocketAddr]>>,
    next: AtomicUsize,
}

impl Backends {
    /// A connection to the next backend in turn; one that refuses or does
    /// not answer within [`CONNECT_TIMEOUT`] passes the turn to the next,
    /// each backend tried once at most.
    async fn connect(&self) -> Option<TcpStream> {
        let addresses = self.addresses.read().unwrap_or_else(PoisonError::into_inner).clone();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..addresses.len() {
            let address = addresses[start.wrapping_add(i) % addresses.len()];
            if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
                return Some(stream);
            }
        }
        None
    }
}

async fn accept(listener: TcpListener, backends: Arc<Backends>, open: watch::Receiver<()>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(proxy(client, backends.clone(), open.clone()));
            }
            Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
        }
    }
}

/// Copies bytes both ways until both sides have closed (a half-close is
/// passed on), or the balancer stops. No backend: the client is closed.
async fn proxy(mut client: TcpStream, backends: Arc<Backends>, mut open: watch::Receiver<()>) {
    let Some(mut backend) = backends.connect().await else { return };
    // Small writes (requests, handshakes) go out at once, as they would without a proxy.
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
        // Only ever an error: the balancer is gone.
        _ = open.changed() => {}
    }
}
