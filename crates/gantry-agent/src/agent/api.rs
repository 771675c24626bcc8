//! The agent's own small HTTP API: what only the node has, its services'
//! log files. The server proxies to it (`GET /v1/agents/<machine>/logs/<service>`),
//! so `gantry logs` only ever talks to the server.
//!
//! `GET /v1/logs/<service>?tail=BYTES&follow=true`: the last `tail` bytes
//! (default 64 KiB) of the service's log, across rotations; with `follow`,
//! then everything written after, as it is written. `GET /v1/health`: `ok`.
//! `GET /metrics`: Prometheus text of the node and its work
//! ([`crate::metrics`]).
//!
//! Every error is a 4xx/5xx with gantry-api's JSON `ErrorBody`, as the
//! server's are, including the requests axum would refuse by itself: an
//! unknown route (404), another method (405, with `Allow`), a path that
//! does not decode (400 `invalid_path`).
//!
//! With TLS the API answers only the servers and metrics collectors: a
//! client must present a certificate of role server or metrics signed by
//! the agent's CA, or the handshake fails (an operator reads logs through a
//! server, never here); logs answer servers only (403 to a collector).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use gantry_api::{ErrorBody, ErrorCode};
use gantry_tls::Role;
use gantry_tls::listener::{TlsListener, TlsPeer};

use crate::metrics::{NodeSample, View};
use crate::supervise;

/// What the API's handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Where services' logs are.
    pub log_dir: PathBuf,
    /// The agent's data directory (its file system is in `/metrics`).
    pub data_dir: PathBuf,
    /// What the agent last knew of its work, for `/metrics`.
    pub view: Arc<std::sync::Mutex<View>>,
}

/// The role of the certificate the client presented; `Plain` when the API
/// is served without TLS (then every client is answered, as before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerRole {
    Plain,
    Tls(Option<Role>),
}

impl<S: Send + Sync> FromRequestParts<S> for PeerRole {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<PeerRole, Self::Rejection> {
        Ok(match parts.extensions.get::<ConnectInfo<TlsPeer>>() {
            Some(ConnectInfo(peer)) => PeerRole::Tls(peer.certificate.as_ref().and_then(|c| c.holder().role)),
            None => PeerRole::Plain,
        })
    }
}

impl PeerRole {
    /// The 403 to answer when the client may not use a route open to
    /// `roles`; `None` when it may.
    fn refusal(self, roles: &[Role], what: &str) -> Option<Response> {
        match self {
            PeerRole::Plain => None,
            PeerRole::Tls(Some(role)) if roles.contains(&role) => None,
            PeerRole::Tls(role) => Some(error(
                ErrorCode::Forbidden,
                format!(
                    "a certificate of role {} may not read {what} here (only {})",
                    role.map_or("none", Role::as_str),
                    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ")
                ),
            )),
        }
    }
}

/// Default bytes of history a log read returns.
const DEFAULT_TAIL: u64 = 64 * 1024;

/// `tail=BYTES&follow=true`, the only parameters (others are ignored).
#[derive(Debug, Default)]
struct LogQuery {
    tail: Option<u64>,
    follow: bool,
}

impl LogQuery {
    fn parse(raw: Option<&str>) -> Result<LogQuery, String> {
        let mut query = LogQuery::default();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
            match key {
                "tail" => {
                    query.tail = Some(value.parse().map_err(|_| format!("tail={value} is not a number of bytes"))?)
                }
                "follow" => query.follow = matches!(value, "true" | "1" | ""),
                _ => {}
            }
        }
        Ok(query)
    }
}

/// Binds `listen` and serves the API (over TLS with `tls`) until the task
/// is aborted; returns the URL it answers on.
pub async fn serve(
    listen: SocketAddr,
    state: ApiState,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/health", get(|| async { "ok\n" }))
        .route("/v1/logs/{service}", get(logs))
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
        .with_state(state);
    let (url, task) = match tls {
        Some(config) => {
            let task = tokio::spawn(async move {
                let Ok(listener) = TlsListener::new(listener, config) else { return };
                let _ = axum::serve(listener, app.into_make_service_with_connect_info::<TlsPeer>()).await;
            });
            (format!("https://{local}"), task)
        }
        None => (
            format!("http://{local}"),
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
        ),
    };
    Ok((url, task))
}

/// `GET /metrics`: servers and metrics collectors (with TLS).
async fn metrics(State(state): State<ApiState>, peer: PeerRole) -> Response {
    if let Some(refused) = peer.refusal(&[Role::Server, Role::Metrics], "metrics") {
        return refused;
    }
    let view = state.view.lock().map(|v| v.now()).unwrap_or_default();
    let text = tokio::task::spawn_blocking(move || {
        let node = NodeSample::read(std::path::Path::new("/proc"), &state.data_dir);
        crate::metrics::render(&view, &node, gantry_api::now_ms())
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn logs(
    State(state): State<ApiState>,
    peer: PeerRole,
    uri: Uri,
    service: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(refused) = peer.refusal(&[Role::Server], "service logs") {
        return refused;
    }
    let log_dir = state.log_dir;
    let service = match service {
        Ok(Path(service)) if well_escaped(uri.path()) => service,
        Ok(_) => return error(ErrorCode::InvalidPath, format!("bad percent-encoding in {:?}", uri.path())),
        Err(e) => return error(ErrorCode::InvalidPath, e.body_text()),
    };
    let query = match LogQuery::parse(raw.as_deref()) {
        Ok(query) => query,
        Err(e) => return error(ErrorCode::InvalidQuery, e),
    };
    if service.is_empty() || service.contains(['/', '\\']) || service.starts_with('.') {
        return error(ErrorCode::InvalidId, format!("{service:?} is not a service id"));
    }
    let live = supervise::log_path(&log_dir, &service);
    let Ok(meta) = std::fs::metadata(&live) else {
        return error(ErrorCode::NotFound, format!("service {service} has no log on this node"));
    };
    let tail = match supervise::read_tail(&log_dir, &service, query.tail.unwrap_or(DEFAULT_TAIL)) {
        Ok(bytes) => bytes,
        Err(e) => return error(ErrorCode::Internal, format!("reading {}: {e}", live.display())),
    };
    let head = futures::stream::once(async move { Ok::<_, std::io::Error>(tail) });
    let body = if query.follow {
        let rest = supervise::follow(&log_dir, &service, meta.len());
        Body::from_stream(head.chain(rest))
    } else {
        Body::from_stream(head)
    };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Whether every `%` in `path` starts an escape of two hex digits (axum
/// takes a malformed one literally).
fn well_escaped(path: &str) -> bool {
    path.split('%')
        .skip(1)
        .all(|rest| rest.as_bytes().get(..2).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)))
}

async fn no_route(uri: Uri) -> Response {
    let message = format!(
        "no route {} on the agent's API: it serves GET /v1/logs/SERVICE, GET /metrics and GET /v1/health",
        uri.path()
    );
    error(ErrorCode::NotFound, message)
}

/// axum adds the `Allow` header.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("{method} is not allowed on {}; the Allow header lists the methods it takes", uri.path());
    error(ErrorCode::MethodNotAllowed, message)
}

fn error(code: ErrorCode, message: String) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

#[cfg(test)]
mod tests {
    use gantry_api::{ErrorBody, ErrorCode};
    use reqwest::Method;

    #[tokio::test]
    async fn every_rejection_is_a_json_error() {
        let logs = tempfile::tempdir().unwrap();
        let state = super::ApiState {
            log_dir: logs.path().to_owned(),
            data_dir: logs.path().to_owned(),
            view: std::sync::Arc::default(),
        };
        let (url, task) = super::serve("127.0.0.1:0".parse().unwrap(), state, None).await.unwrap();
        gantry_tls::config::install_crypto_provider();
        let http = reqwest::Client::new();
        let cases = [
            (Method::GET, "/v1/nope", 404, ErrorCode::NotFound),
            (Method::POST, "/v1/logs/api", 405, ErrorCode::MethodNotAllowed),
            (Method::DELETE, "/v1/health", 405, ErrorCode::MethodNotAllowed),
            (Method::GET, "/v1/logs/%FF%FE", 400, ErrorCode::InvalidPath),
            (Method::GET, "/v1/logs/a%zz", 400, ErrorCode::InvalidPath),
            (Method::GET, "/v1/logs/no-such-service", 404, ErrorCode::NotFound),
        ];
        for (method, path, status, code) in cases {
            let response = http.request(method.clone(), format!("{url}{path}")).send().await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{method} {path}");
            if status == 405 {
                assert!(response.headers().contains_key("allow"), "{method} {path}");
            }
            let error: ErrorBody = response.json().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert_eq!(error.error.code, code, "{method} {path}: {}", error.error.message);
        }
        task.abort();
    }
}
