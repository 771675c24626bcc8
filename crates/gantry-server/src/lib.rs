//! `gantry server`: the HTTP API over the store (seed 001 "single source of
//! truth", seed 002 machine and service inventories).
//!
//! Routes (all JSON; every error is a 4xx/5xx with an `ErrorBody`):
//!
//! ```text
//! GET    /v1/health                          200 when the store answers
//! GET    /metrics                            Prometheus text
//! GET    /v1/kv?prefix=P&limit=N             list keys
//! GET    /v1/kv/KEY[?raw]                    one key (raw: the value alone)
//! PUT    /v1/kv/KEY[?cas=REV][&lease=ID]     body = value; cas=0: must not exist; 409 on a lost race
//! DELETE /v1/kv/KEY[?prefix][&cas=REV]
//! PUT    /v1/machines/ID[?lease=ID]          Machine
//! GET    /v1/machines | /v1/machines/ID | /v1/machines/ID/instances
//! DELETE /v1/machines/ID
//! PUT    /v1/groups/NAME                     Group (gantry apply)
//! GET    /v1/groups | /v1/groups/NAME ;  DELETE /v1/groups/NAME
//! PUT    /v1/services/ID                     service definition (any JSON object)
//! GET    /v1/services | /v1/services/ID ;  DELETE /v1/services/ID
//! PUT    /v1/services/S/instances/ID[?lease=ID]   Instance
//! GET    /v1/services/S/instances[?healthy][&PROP=V...]   hosts for service S
//! DELETE /v1/services/S/instances/ID
//! GET    /v1/instances[?PROP=V...]           hosts with property PROP=V
//! GET    /v1/lookup/S[?PROP=V...][&federation=F]   one healthy instance (get_host)
//! POST   /v1/leases {"ttl_secs": N} ;  PUT /v1/leases/ID/keepalive ;  DELETE /v1/leases/ID
//! GET    /v1/watch?prefix=P[&from=REV]       Server-Sent Events, resumable
//! GET    /v1/agents | /v1/agents/M         agents' published statuses
//! PUT    /v1/agents/M/status[?lease=ID]      AgentStatus (the agent's own)
//! GET    /v1/agents/M/control                AgentControl: every control document of M
//! GET|PUT /v1/agents/M/listener | /v1/agents/M/deploy    ListenerSwitch | DeployRequest
//! GET|PUT|DELETE /v1/agents/M/services/S     ServiceControl
//! GET    /v1/agents/M/logs/S[?tail=B&follow=true]  service S's log on machine M (proxied to M's agent)
//! ```
//!
//! Architecture invariant: the server is the only component that opens the store.
#![forbid(unsafe_code)]

mod agents;
mod error;
mod hub;
mod metrics;
mod query;
mod routes;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use gantry_store::Store;
use tokio::net::TcpListener;

pub use error::ApiError;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<metrics::Metrics>,
    /// The watched prefixes' shared store watches.
    pub hubs: Arc<hub::Hubs>,
    /// To agents' own APIs (logs).
    pub http: reqwest::Client,
}

/// The API router over `store`.
pub fn router(store: Store) -> Router {
    let hubs = Arc::new(hub::Hubs::new(store.clone(), watch::encode));
    let state = AppState { store, metrics: Arc::default(), hubs, http: reqwest::Client::new() };
    Router::new()
        .route("/v1/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .route("/v1/kv", get(routes::kv_list))
        .route("/v1/kv/{*key}", get(routes::kv_get).put(routes::kv_put).delete(routes::kv_delete))
        .route("/v1/machines", get(routes::machines_list))
        .route("/v1/machines/{id}", get(routes::machine_get).put(routes::machine_put).delete(routes::machine_delete))
        .route("/v1/machines/{id}/instances", get(routes::machine_instances))
        .route("/v1/groups", get(routes::groups_list))
        .route("/v1/groups/{name}", get(routes::group_get).put(routes::group_put).delete(routes::group_delete))
        .route("/v1/services", get(routes::services_list))
        .route("/v1/services/{id}", get(routes::service_get).put(routes::service_put).delete(routes::service_delete))
        .route("/v1/services/{service}/instances", get(routes::service_instances))
        .route(
            "/v1/services/{service}/instances/{id}",
            get(routes::instance_get).put(routes::instance_put).delete(routes::instance_delete),
        )
        .route("/v1/instances", get(routes::instances_with_property))
        .route("/v1/lookup/{service}", get(routes::lookup))
        .route("/v1/leases", post(routes::lease_grant))
        .route("/v1/leases/{id}/keepalive", put(routes::lease_keepalive))
        .route("/v1/leases/{id}", axum::routing::delete(routes::lease_revoke))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/agents", get(agents::statuses))
        .route("/v1/agents/{machine}", get(agents::status))
        .route("/v1/agents/{machine}/status", put(agents::put_status))
        .route("/v1/agents/{machine}/control", get(agents::control))
        .route("/v1/agents/{machine}/listener", get(agents::listener_get).put(agents::listener_put))
        .route("/v1/agents/{machine}/deploy", get(agents::deploy_get).put(agents::deploy_put))
        .route(
            "/v1/agents/{machine}/services/{service}",
            get(agents::service_control_get).put(agents::service_control_put).delete(agents::service_control_delete),
        )
        .route("/v1/agents/{machine}/logs/{service}", get(agents::logs))
        .fallback(routes::fallback)
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        // Bodies are read by the handlers as bytes with this limit, so an
        // oversized one is a JSON 413 from our own code.
        .layer(DefaultBodyLimit::max(gantry_api::MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API on `listener`, on the caller's runtime, until `shutdown`
/// completes: requests in flight get [`SHUTDOWN_GRACE`] to finish, then
/// whatever is still open (watch streams) is cut when the caller's runtime
/// ends.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(store), shutdown).await
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
/// hubs, one set of metrics), until `shutdown` completes.
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
    threads: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let router = router(store);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut loops = Vec::with_capacity(threads);
    for n in 0..threads.max(1) {
        // Every loop accepts from the same socket; whichever is free wins.
        let listener = listener.try_clone()?;
        let (router, mut stopped) = (router.clone(), stopped.clone());
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name(format!("gantry-http-{n}")).spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|runtime| {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let shutdown = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    serve_router(listener, router, shutdown).await
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

async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    use futures::FutureExt;
    // No Nagle: a watch writes each event as it happens, and a small write
    // behind an unacknowledged one would wait for the peer's delayed ACK
    // (40 ms on Linux); measured as 50 ms stalls in HTTP/2 fan-out.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let shutdown = shutdown.shared();
    let grace_over = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        served = axum::serve(listener, router).with_graceful_shutdown(shutdown) => served,
        // The connections' tasks end with the runtime they run on.
        () = grace_over => Ok(()),
    }
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // MatchedPath is an Arc inside: cloning it does not copy the string.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.record(&method, route, response.status().as_u16(), started.elapsed());
    response
}
