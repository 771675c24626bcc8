//! `gantry server`: the HTTP API over the store (seed 001 "single source of
//! truth", seed 002 machine and service inventories).
//!
//! The API: the machine and service inventories (machines, node groups,
//! service definitions, instances) with their queries (hosts for a
//! service, services on a host, hosts with a property, `get_host`), agents'
//! published status and the control documents operators write for them,
//! a free-form KV space with compare-and-set, leases, and resumable watches
//! of any key prefix as Server-Sent Events. Every answer is JSON unless a
//! route says otherwise; every error, including the requests the framework
//! refuses (unknown route, wrong method, a path that does not decode), is a
//! 4xx/5xx with gantry-api's `ErrorBody`. The routes, their parameters and
//! bodies are in the OpenAPI document, served at `GET /v1/openapi.json` and
//! committed as `openapi/gantry.json`; it is generated from the code
//! (`openapi.rs`) and a test fails when the two differ.
//!
//! How a request is served:
//!
//! - `routes::api` is the route table: each route is registered with its
//!   OpenAPI operation (`utoipa_axum`), so the router and the document are
//!   one list.
//! - `resource`: each kind of document (machines, groups, services,
//!   instances, agent status, listener switches, deploy requests, service
//!   controls) is a `Resource` declaring its key layout, body type and
//!   validation once; generic handlers read, list, write (`?cas=`,
//!   `?lease=`) and delete it. KV, leases, queries, watches and the log
//!   proxy have handlers of their own.
//! - Access control: every request reaches the store through a
//!   `gate::Gate`, extracted per request with the request's `Caller`;
//!   the gate calls `access::authorize(caller, action, target)` before each
//!   store operation, lease operation, watch and log read, with the typed
//!   target (a `StoreKey` and whom its document belongs to, a prefix, a
//!   lease). Today it allows everything (there are no credentials yet);
//!   tokens and policies go in that one function.
//! - Limits (`limits`): what one token, or one client address without a
//!   token, may hold and ask at once ([`Limits`]): connections per
//!   address (counted at accept), the request rate (in the front door),
//!   watches, leases and their TTL, keys and bytes (in the gate). Over
//!   one: a JSON 429 or 413 that names the limit and the flag that
//!   raises it; `/metrics` shows each limit, the highest use and the
//!   refusals.
//! - Transport: plain HTTP, or HTTPS ([`ServerTls`]: rustls, HTTP/2 and
//!   HTTP/1.1 by ALPN) where a client may have to present a certificate of
//!   the server's CA. The client's address and the verified certificate's
//!   holder (name and role) travel with every request of its connection
//!   (`ConnectInfo<Connection>`); the certificate is the request's `Peer`. The log proxy reaches an agent's
//!   API only at the machine's registered address, over TLS with the
//!   server's own certificate when the server has one.
//!
//! Architecture invariant: the server is the only component that opens the store.
#![forbid(unsafe_code)]

mod access;
mod acl;
mod acl_routes;
mod agents;
mod deploys;
mod error;
mod gate;
mod hub;
mod inventory;
mod kv;
mod limits;
mod metrics;
mod openapi;
mod prometheus;
mod query;
mod resource;
mod routes;
mod scheduling;
#[cfg(test)]
mod tests;
mod watch;

pub use deploys::artifacts::{ArtifactStore, BoxFuture, ByteStream, LocalArtifacts, read_stream};
pub use deploys::controller::{LEADER_KEY as DEPLOYS_LEADER_KEY, spawn as spawn_deploys};
pub use scheduling::scheduler::{LEADER_KEY as SCHEDULER_LEADER_KEY, SchedulerConfig, spawn as spawn_scheduler};

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use gantry_store::Store;
use gantry_tls::TlsError;
use gantry_tls::config::{ClientAuth, ClientTls, Identity};
use gantry_tls::listener::TlsListener;
use tokio::net::TcpListener;

use limits::connections::{Admitting, Connection};

pub use access::Peer;
pub use acl::{Acl, AclMode, BOOTSTRAP_TOKEN_FILE, Bootstrap, BootstrapError, bootstrap};
pub use error::ApiError;
pub use limits::{Limit, Limits};
pub use openapi::document as openapi_document;

/// HTTPS for `gantry server`: its certificate, which client certificates
/// it asks for, and the same certificate and CA as a client of agents'
/// APIs (the log proxy). Cheap to clone: every connection of every event
/// loop shares one rustls configuration, and so its session cache.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    /// To agents: `None` without a CA (such a server cannot verify
    /// agents, so it reaches none over TLS).
    agents: Option<rustls::ClientConfig>,
}

impl ServerTls {
    /// A server presenting `identity` (a certificate of role server),
    /// asking clients for certificates as `clients` says.
    pub fn new(identity: Identity, clients: &ClientAuth) -> Result<ServerTls, TlsError> {
        let config = gantry_tls::config::server_config(&identity, clients)?;
        let agents = match clients.ca() {
            Some(ca) => Some(ClientTls { ca: ca.clone(), identity: Some(identity) }.config()?),
            None => None,
        };
        Ok(ServerTls { config, agents })
    }
}

/// How [`serve_with`] serves, beyond the store.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Event loops, each on a thread of its own (see [`serve_threaded`]).
    pub threads: usize,
    /// HTTPS; `None`: plain HTTP.
    pub tls: Option<ServerTls>,
    /// Access control ([`Acl::open`]; [`Acl::off`] allows everything).
    pub acl: Arc<Acl>,
    /// What one token or client address may hold and ask at once.
    pub limits: Limits,
    /// Where release artifacts live; `None`: the deploy routes answer 503.
    pub artifacts: Option<Arc<dyn ArtifactStore>>,
}

/// The API router over `store`, with the access control `acl` decides
/// ([`Acl::open`] for `gantry server`; [`Acl::off`] allows everything)
/// and the default [`Limits`].
pub fn router(store: Store, acl: Arc<Acl>) -> Router {
    router_with(store, acl, None, Limits::default(), None).0
}

/// The API router over `store`, reaching agents with `tls`'s credentials,
/// and what its requests use of `limits` (for the listeners to count
/// connections in).
fn router_with(
    store: Store,
    acl: Arc<Acl>,
    tls: Option<&ServerTls>,
    limits: Limits,
    artifacts: Option<Arc<dyn ArtifactStore>>,
) -> (Router, Arc<limits::Usage>) {
    let agents = agents::AgentClient::new(tls.and_then(|tls| tls.agents.clone()));
    let state = gate::AppState::new(store, acl, agents, limits, artifacts);
    let usage = Arc::clone(state.usage());
    let (router, _) = routes::api().split_for_parts();
    let router = router
        // After every route: it applies to the routes present.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_route)
        .layer(middleware::from_fn_with_state(state.clone(), front_door))
        // Bodies are read by the handlers as bytes with this limit, so an
        // oversized one is a JSON 413 from our own code.
        .layer(DefaultBodyLimit::max(gantry_api::MAX_BODY_BYTES))
        .with_state(state);
    (router, usage)
}

/// Serves the API on `listener`, on the caller's runtime, with the default
/// [`Limits`], until `shutdown` completes: requests in flight get
/// [`SHUTDOWN_GRACE`] to finish, then whatever is still open (watch
/// streams) is cut when the caller's runtime ends.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    acl: Arc<Acl>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_limited(listener, store, acl, Limits::default(), shutdown).await
}

/// [`serve`] with `limits`.
pub async fn serve_limited(
    listener: TcpListener,
    store: Store,
    acl: Arc<Acl>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let options = ServeOptions { threads: 1, tls: None, acl, limits, artifacts: None };
    serve_here(listener, store, options, shutdown).await
}

/// Serves the API as `options` say on the caller's runtime (one event
/// loop, whatever `options.threads`), until `shutdown` completes.
pub async fn serve_here(
    listener: TcpListener,
    store: Store,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ServeOptions { tls, acl, limits, artifacts, .. } = options;
    let (router, usage) = router_with(store, acl, tls.as_ref(), limits, artifacts);
    serve_router(listener, router, tls.map(|tls| tls.config), usage, shutdown).await
}

/// How many event loops `gantry server` runs unless told otherwise.
///
/// One: on the 2-core development VM one loop (beside the store's writer
/// thread) served as many 64-client writes as two (31k–35k/s, 29 µs of
/// server CPU each), and fanned an event out to 1,000 watchers with far
/// less work: when the hub and the watchers' connections share a loop,
/// every stream has queued its frame before a connection flushes, while
/// across loops the wake-ups trickle in and connections flush piecemeal
/// (1,000 HTTP/2 watchers on 10 connections: 1.4 ms of server CPU per
/// event with one loop, 5–8 ms with two; 1,000 HTTP/1.1 connections: 8.2
/// against 11.2 ms). Raise it (`--threads`) when one loop's core is full.
pub const DEFAULT_EVENT_LOOPS: usize = 1;

/// Serves the API with `threads` event loops, each a single-threaded
/// runtime on a thread of its own, sharing one router (one set of watch
/// hubs, one set of metrics, one count of what each client holds), with
/// the default [`Limits`], until `shutdown` completes.
///
/// Why not one work-stealing runtime: a connection and all its HTTP/2
/// streams stay on one thread here, so when an event goes out to many
/// watches of one connection, every stream writes its frame before the
/// connection task runs, and the frames leave in one write. On a
/// work-stealing runtime the connection task, woken by the first stream,
/// runs right after it (tokio's LIFO slot) and flushes nearly every frame
/// on its own: measured on 2 cores, 1,000 watchers on 10 connections took
/// 5.3 ms of server CPU per event instead of 1.4 ms, and the watchers three
/// times as much to read them. See [`DEFAULT_EVENT_LOOPS`] for how many.
pub async fn serve_threaded(
    listener: TcpListener,
    store: Store,
    acl: Arc<Acl>,
    threads: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let options = ServeOptions { threads, tls: None, acl, limits: Limits::default(), artifacts: None };
    serve_with(listener, store, options, shutdown).await
}

/// [`serve_threaded`], over HTTPS when `options` has TLS: each event loop
/// does the handshakes of the connections it accepts.
pub async fn serve_with(
    listener: TcpListener,
    store: Store,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ServeOptions { threads, tls, acl, limits, artifacts } = options;
    let listener = listener.into_std()?;
    let (router, usage) = router_with(store, acl, tls.as_ref(), limits, artifacts);
    let tls = tls.map(|tls| tls.config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut loops = Vec::with_capacity(threads);
    for n in 0..threads.max(1) {
        // Every loop accepts from the same socket; whichever is free wins.
        let listener = listener.try_clone()?;
        let (router, tls, usage, mut stopped) = (router.clone(), tls.clone(), Arc::clone(&usage), stopped.clone());
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name(format!("gantry-http-{n}")).spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|runtime| {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let shutdown = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    serve_router(listener, router, tls, usage, shutdown).await
                })
            });
            let _ = done.send(served);
        })?;
        loops.push(finished);
    }
    shutdown.await;
    let _ = stop.send(true);
    for finished in loops {
        finished.await.map_err(|_| std::io::Error::other("an HTTP event loop panicked"))??;
    }
    Ok(())
}

/// How long requests in flight may take to finish once shutdown began.
/// Watch streams never finish by themselves: when this is over they are
/// cut, and their clients resume elsewhere or later from the last event
/// they saw.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`,
/// then gives requests [`SHUTDOWN_GRACE`]. Connections are counted per
/// client address in `usage` from accept on.
async fn serve_router(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    usage: Arc<limits::Usage>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use futures::FutureExt;
    let shutdown = shutdown.shared();
    let grace_over = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    // Each connection's client (its address, the certificate it
    // presented, what its address holds) goes with every request of it.
    let app = router.into_make_service_with_connect_info::<Connection>();
    let listener = Admitting::new(listener, usage);
    let served = async {
        match tls {
            // Handshakes only for the connections an address may open.
            Some(config) => {
                let listener = TlsListener::over(listener, config)?;
                axum::serve(listener, app).with_graceful_shutdown(shutdown.clone()).await
            }
            None => axum::serve(listener, app).with_graceful_shutdown(shutdown.clone()).await,
        }
    };
    tokio::select! {
        served = served => served,
        // The connections' tasks end with the runtime they run on.
        () = grace_over => Ok(()),
    }
}

/// What every request passes: its caller's request rate (a JSON 429
/// otherwise, before anything else is done for it), a path that decodes (a
/// JSON 400 `invalid_path` otherwise, before any handler), and it is
/// counted in the metrics.
async fn front_door(State(state): State<gate::AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::method_label(request.method());
    // MatchedPath is an Arc inside: cloning it does not copy the string.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let admitted = state.admit(&mut request, started).and_then(|()| query::check_path(request.uri().path()));
    let response = match admitted {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics().record(method, route, response.status().as_u16(), started.elapsed());
    response
}
