//! Agents' documents (`agents/<machine>/...`): the status each agent
//! publishes, the control documents operators write for it (listener
//! switch, provision requests, service stop/start/restart), and what only a
//! node has, read through the server: a service's log on one machine
//! (`GET /v1/agents/<machine>/logs/<service>?tail=BYTES&follow=true`). The
//! server finds the agent's API in the status the agent publishes and
//! streams its answer back, so clients need to reach the server only.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_api::keys::{AgentKey, AgentKeyRef, StoreKey};
use gantry_api::{
    AgentControl, AgentStatus, DeployRequest, ErrorCode, ListenerSwitch, Listing, ServiceControl, WriteResult, keys,
};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::query;
use crate::routes::{check_id, decode, delete_one, get_one, json_body, list_where, write};

/// `GET /v1/agents`: every connected agent's status.
pub async fn statuses(State(s): State<AppState>) -> ApiResult<Json<Listing<AgentStatus>>> {
    let is_status = |key: &str| matches!(StoreKey::parse(key), Some(StoreKey::Agent { key: AgentKeyRef::Status, .. }));
    list_where(&s.store, keys::AGENTS, is_status).await.map(Json)
}

/// `GET /v1/agents/<machine>`: one agent's status.
pub async fn status(State(s): State<AppState>, Path(machine): Path<String>) -> ApiResult<Json<AgentStatus>> {
    check_id("machine", &machine)?;
    get_one(&s.store, &AgentKey::Status.of(&machine), &format!("agent {machine:?} connected")).await.map(Json)
}

/// `PUT /v1/agents/<machine>/status[?lease=ID]`: what the agent publishes.
pub async fn put_status(
    State(s): State<AppState>,
    Path(machine): Path<String>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    check_id("machine", &machine)?;
    let q = query::parse(raw.as_deref())?;
    let (status, bytes): (AgentStatus, Bytes) = json_body(body)?;
    if status.machine != machine {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("body machine {:?} does not match the path's {machine:?}", status.machine),
        ));
    }
    write(&s.store, &AgentKey::Status.of(&machine), bytes, &q).await.map(Json)
}

/// `GET /v1/agents/<machine>/control`: every control document of one agent.
pub async fn control(State(s): State<AppState>, Path(machine): Path<String>) -> ApiResult<Json<AgentControl>> {
    check_id("machine", &machine)?;
    let range = s.store.range(&keys::agent(&machine), None).await?;
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

async fn get_control<T: DeserializeOwned>(s: &AppState, machine: &str, key: AgentKey, what: &str) -> ApiResult<T> {
    check_id("machine", machine)?;
    get_one(&s.store, &key.of(machine), &format!("{what} for machine {machine:?}")).await
}

async fn put_control<T: DeserializeOwned>(
    s: &AppState,
    machine: &str,
    key: AgentKey,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    check_id("machine", machine)?;
    let (_, bytes): (T, Bytes) = json_body(body)?;
    write(&s.store, &key.of(machine), bytes, &Default::default()).await.map(Json)
}

pub async fn listener_get(State(s): State<AppState>, Path(machine): Path<String>) -> ApiResult<Json<ListenerSwitch>> {
    get_control(&s, &machine, AgentKey::Listener, "no listener switch").await.map(Json)
}

pub async fn listener_put(
    State(s): State<AppState>,
    Path(machine): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    put_control::<ListenerSwitch>(&s, &machine, AgentKey::Listener, body).await
}

pub async fn deploy_get(State(s): State<AppState>, Path(machine): Path<String>) -> ApiResult<Json<DeployRequest>> {
    get_control(&s, &machine, AgentKey::Deploy, "no deploy request").await.map(Json)
}

pub async fn deploy_put(
    State(s): State<AppState>,
    Path(machine): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    put_control::<DeployRequest>(&s, &machine, AgentKey::Deploy, body).await
}

pub async fn service_control_get(
    State(s): State<AppState>,
    Path((machine, service)): Path<(String, String)>,
) -> ApiResult<Json<ServiceControl>> {
    check_id("service", &service)?;
    get_control(&s, &machine, AgentKey::Service(service), "no service control").await.map(Json)
}

pub async fn service_control_put(
    State(s): State<AppState>,
    Path((machine, service)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    check_id("service", &service)?;
    put_control::<ServiceControl>(&s, &machine, AgentKey::Service(service), body).await
}

pub async fn service_control_delete(
    State(s): State<AppState>,
    Path((machine, service)): Path<(String, String)>,
) -> ApiResult<Json<WriteResult>> {
    check_id("machine", &machine)?;
    check_id("service", &service)?;
    delete_one(&s.store, &AgentKey::Service(service).of(&machine)).await
}

/// `GET /v1/agents/<machine>/logs/<service>`: proxied to the agent's own API.
pub async fn logs(
    State(s): State<AppState>,
    Path((machine, service)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    check_id("machine", &machine)?;
    let Some(kv) = s.store.get(&AgentKey::Status.of(&machine)).await?.kv else {
        return Err(ApiError::not_found(format!("no agent {machine:?} is connected")));
    };
    let status: AgentStatus = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::new(ErrorCode::BadAgentStatus, format!("agent {machine}'s status: {e}")))?;
    let Some(api) = status.api else {
        return Err(ApiError::not_found(format!(
            "agent {machine} runs without its API, so its logs cannot be read remotely"
        )));
    };
    let query = raw.map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{api}/v1/logs/{service}{query}");
    let answer = s
        .http
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
