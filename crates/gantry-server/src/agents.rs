//! What only a node has, read through the server: a service's log on one
//! machine (`GET /v1/agents/<machine>/logs/<service>?tail=BYTES&follow=true`).
//! The server finds the agent's API in the status the agent publishes and
//! streams its answer back, so clients need to reach the server only.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_api::{AgentStatus, keys};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub async fn logs(
    State(s): State<AppState>,
    Path((machine, service)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let key = keys::kv(&keys::agent_kv(&machine, "status"));
    let Some(kv) = s.store.get(&key).await?.kv else {
        return Err(ApiError::not_found(format!("no agent {machine:?} is connected")));
    };
    let status: AgentStatus = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, "bad_agent_status", format!("agent {machine}'s status: {e}"))
    })?;
    let Some(api) = status.api else {
        return Err(ApiError::not_found(format!(
            "agent {machine} runs without its API, so its logs cannot be read remotely"
        )));
    };
    let query = raw.map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{api}/v1/logs/{service}{query}");
    let answer = s.http.get(&url).send().await.map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, "agent_unreachable", format!("agent {machine} at {api}: {e}"))
    })?;
    let code = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_owned();
    Ok((code, [(header::CONTENT_TYPE, content_type)], Body::from_stream(answer.bytes_stream())).into_response())
}
