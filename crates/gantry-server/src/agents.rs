//! Agents' routes beyond their documents' (which the resource layer
//! serves): every control document of one agent in one read, and what only
//! a node has, read through the server: a service's log on one machine
//! (`GET /v1/agents/<machine>/logs/<service>?tail=BYTES&follow=true`). The
//! server finds the agent's API in the status the agent publishes and
//! streams its answer back, so clients need to reach the server only.

use axum::Json;
use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_api::keys::{self, AgentKeyRef, StoreKey};
use gantry_api::{AgentControl, ErrorCode};

use crate::error::{ApiError, ApiResult, Ids};
use crate::gate::{Gate, decode};
use crate::openapi::Errors;
use crate::resource::check_id;

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
    let (api, http) = gate.agent_api(&machine, &service).await?;
    let query = raw.map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{api}/v1/logs/{service}{query}");
    let answer = http
        .get(&url)
        .send()
        .await
        .map_err(|e| ApiError::new(ErrorCode::AgentUnreachable, format!("agent {machine} at {api}: {e}")))?;
    let code = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_owned();
    Ok((code, [(header::CONTENT_TYPE, content_type)], Body::from_stream(answer.bytes_stream())).into_response())
}
