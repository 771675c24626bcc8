//! Agents' routes beyond their documents' (which the resource layer
//! serves): every control document of one agent in one read, and what only
//! a node has, read through the server: a service's log on one machine
//! (`GET /v1/agents/<machine>/logs/<service>?tail=BYTES&follow=true`). The
//! server asks the agent's API and streams its answer back, so clients
//! need to reach the server only.
//!
//! Where the server sends that request is not up to whoever can write an
//! agent's status: it goes to the machine's registered address (`machines/<M>`),
//! at the port the status names, and nowhere else: no other host, no
//! redirect, bounded in time; over TLS with the server's own certificate
//! (role server, which is all an agent's API answers) when the server has
//! one, verifying that the agent's certificate names that address. A status
//! pointing at a cloud's metadata address gets nothing from it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_api::keys::{self, AgentKeyRef, StoreKey};
use gantry_api::{AgentControl, AgentStatus, ErrorCode, Machine};
use gantry_tls::problem::TlsProblem;

use crate::error::{ApiError, ApiResult, Ids};
use crate::gate::{Gate, decode};
use crate::openapi::Errors;
use crate::query;
use crate::resource::check_id;

/// How long an agent has to accept a connection.
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an agent has to start answering a log read.
const AGENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole log read may take (not a followed one: that lasts as
/// long as its client reads).
const AGENT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The server's client of agents' own APIs.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    /// Whether agents are reached over TLS (the server has a certificate
    /// and the CA); then never over plain HTTP.
    tls: bool,
}

impl AgentClient {
    /// Over TLS with `tls` (presenting the server's certificate, trusting
    /// the CA), else plain HTTP, refusing `https://` (it trusts no CA).
    pub fn new(tls: Option<rustls::ClientConfig>) -> AgentClient {
        let encrypted = tls.is_some();
        let config = tls;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config.unwrap_or_else(gantry_tls::config::trust_nothing))
            .connect_timeout(AGENT_CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .expect("reqwest builds with a rustls configuration given whole");
        AgentClient { http, tls: encrypted }
    }
}

/// Every control document of one agent, read at one revision.
#[utoipa::path(get, path = "/v1/agents/{machine}/control", tag = "agents", operation_id = "get_agent_control",
    params(("machine" = String, Path, description = "The machine's id.")),
    responses((status = 200, description = "Its listener switch, deploy request and service controls.", body = AgentControl), Errors),
)]
pub async fn control(gate: Gate, Ids(machine): Ids<String>) -> ApiResult<Json<AgentControl>> {
    check_id("machine", &machine)?;
    let range = gate.range(&keys::agent(&machine), None).await?;
    let mut control = AgentControl { revision: range.revision, ..AgentControl::default() };
    for kv in &range.kvs {
        match StoreKey::parse(&kv.key) {
            Some(StoreKey::Agent { key: AgentKeyRef::Listener, .. }) => control.listener = Some(decode(kv)?),
            Some(StoreKey::Agent { key: AgentKeyRef::Deploy, .. }) => control.deploy = Some(decode(kv)?),
            Some(StoreKey::Agent { key: AgentKeyRef::Service(id), .. }) => {
                control.services.insert(id.to_owned(), decode(kv)?);
            }
            Some(StoreKey::Agent { key: AgentKeyRef::Release(id), .. }) => {
                control.releases.insert(id.to_owned(), decode(kv)?);
            }
            _ => {}
        }
    }
    Ok(Json(control))
}

/// A service's log on one machine, read from its agent's own API.
#[utoipa::path(get, path = "/v1/agents/{machine}/logs/{service}", tag = "agents", operation_id = "get_agent_logs",
    params(
        ("machine" = String, Path, description = "The machine's id."),
        ("service" = String, Path, description = "The service's id."),
        ("tail" = Option<u64>, Query, description = "Bytes of history to start with (default 64 KiB)."),
        ("follow" = Option<bool>, Query, description = "Then everything written after, as it is written."),
    ),
    responses((status = 200, description = "The log, as the agent streams it.", content_type = "text/plain", body = String), Errors),
)]
pub async fn logs(
    gate: Gate,
    Ids((machine, service)): Ids<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    check_id("machine", &machine)?;
    check_id("service", &service)?;
    let follow = query::flag(&query::parse(raw.as_deref())?, "follow");
    let (registered, status, agents) = gate.agent_api(&machine, &service).await?;
    let api = agent_address(&registered, &status, agents.tls)?;
    let query = raw.map(|q| format!("?{q}")).unwrap_or_default();
    let scheme = if agents.tls { "https" } else { "http" };
    let url = format!("{scheme}://{api}/v1/logs/{service}{query}");
    let unreachable =
        |why: String| ApiError::new(ErrorCode::AgentUnreachable, format!("agent {machine} at {api}: {why}"));
    let mut request = agents.http.get(&url);
    if !follow {
        request = request.timeout(AGENT_READ_TIMEOUT);
    }
    let answer = match tokio::time::timeout(AGENT_ANSWER_TIMEOUT, request.send()).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            return Err(unreachable(match TlsProblem::find(&e) {
                Some(problem) => format!("TLS failed: {problem}"),
                None => e.to_string(),
            }));
        }
        Err(_) => return Err(unreachable(format!("no answer within {AGENT_ANSWER_TIMEOUT:?}"))),
    };
    let code = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_owned();
    Ok((code, [(header::CONTENT_TYPE, content_type)], Body::from_stream(answer.bytes_stream())).into_response())
}

/// Where `machine`'s agent API answers: the machine's registered address
/// and the port its status publishes. Nothing else of the status is used.
fn agent_address(machine: &Machine, status: &AgentStatus, tls: bool) -> ApiResult<SocketAddr> {
    let id = &machine.id;
    let Some(api) = &status.api else {
        return Err(ApiError::not_found(format!(
            "agent {id} runs without its API, so its logs cannot be read remotely"
        )));
    };
    let bad_status = |why: String| ApiError::new(ErrorCode::BadAgentStatus, format!("agent {id}'s status: {why}"));
    let published = reqwest::Url::parse(api).map_err(|e| bad_status(format!("its API {api:?} is not a URL: {e}")))?;
    let port = published.port_or_known_default().ok_or_else(|| bad_status(format!("its API {api:?} has no port")))?;
    match (published.scheme(), tls) {
        ("https", true) | ("http", false) => {}
        ("http", true) => {
            return Err(ApiError::new(
                ErrorCode::AgentUnreachable,
                format!(
                    "agent {id} serves its API over plain HTTP, and this server reaches agents over TLS only: \
                     start the agent with --ca-cert, --client-cert and --client-key (a certificate of role agent \
                     naming its address)"
                ),
            ));
        }
        ("https", false) => {
            return Err(ApiError::new(
                ErrorCode::AgentUnreachable,
                format!(
                    "agent {id} serves its API over TLS: start this server with --tls-cert, --tls-key and \
                     --tls-ca (the CA of the agents' certificates) to reach it"
                ),
            ));
        }
        (other, _) => return Err(bad_status(format!("its API {api:?} is not http or https but {other}"))),
    }
    let address: IpAddr = machine.address.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::AgentUnreachable,
            format!("machine {id}'s registered address {:?} is not an IP address", machine.address),
        )
    })?;
    Ok(SocketAddr::new(address, port))
}
