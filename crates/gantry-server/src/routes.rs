//! The route table: every route of the API, each registered together with
//! its OpenAPI operation, so the router and the document come from this one
//! list. Handlers live with what they serve (`kv`, `inventory`, `agents`,
//! `watch`); the documents' plain reads and writes come from the resource
//! layer ([`resource::mount`]).

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use gantry_api::HealthStatus;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::gate::{AppState, Gate};
use crate::openapi::{self, Errors};
use crate::resource::{
    self, AgentStatuses, AgentUsages, Allocations, DeployRequests, Eligibilities, Groups, Instances, Jobs,
    ListenerSwitches, Machines, Policies, ServiceControls, Services,
};
use crate::{acl_routes, agents, deploys, inventory, kv, prometheus, scheduling, watch};

/// Every route, with its documentation.
pub fn api() -> OpenApiRouter<AppState> {
    let mut api = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(prometheus::prometheus_targets))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(kv::kv_list))
        .routes(routes!(kv::kv_get, kv::kv_put, kv::kv_delete))
        .routes(routes!(kv::lease_grant))
        .routes(routes!(kv::lease_keepalive))
        .routes(routes!(kv::lease_revoke))
        .routes(routes!(watch::watch))
        .routes(routes!(inventory::machine_instances))
        .routes(routes!(scheduling::node_allocations))
        .routes(routes!(scheduling::job_plan))
        .routes(routes!(inventory::service_instances))
        .routes(routes!(inventory::instances_with_property))
        .routes(routes!(inventory::lookup))
        .routes(routes!(agents::control))
        .routes(routes!(agents::logs))
        .routes(routes!(acl_routes::token_create, acl_routes::token_list))
        .routes(routes!(acl_routes::token_get, acl_routes::token_revoke))
        .routes(routes!(acl_routes::whoami))
        .routes(routes!(deploys::artifact_stat))
        .routes(routes!(deploys::artifact_put, deploys::artifact_get))
        .routes(routes!(deploys::release_create, deploys::release_history))
        .routes(routes!(deploys::release_show))
        .routes(routes!(deploys::release_rollback))
        .routes(routes!(deploys::rollout_status))
        .routes(routes!(deploys::rollout_promote))
        .routes(routes!(deploys::rollout_abort))
        .routes(routes!(deploys::machine_releases));
    api = resource::mount::<Machines>(api);
    api = resource::mount::<Groups>(api);
    api = resource::mount::<Services>(api);
    api = resource::mount::<Instances>(api);
    api = resource::mount::<AgentStatuses>(api);
    api = resource::mount::<AgentUsages>(api);
    api = resource::mount::<Allocations>(api);
    api = resource::mount::<Jobs>(api);
    api = resource::mount::<Eligibilities>(api);
    api = resource::mount::<ListenerSwitches>(api);
    api = resource::mount::<DeployRequests>(api);
    api = resource::mount::<ServiceControls>(api);
    resource::mount::<Policies>(api)
}

/// Whether the server and its store answer.
#[utoipa::path(get, path = "/v1/health", tag = "server",
    responses((status = 200, description = "The store answers.", body = HealthStatus), Errors),
)]
pub async fn health(gate: Gate) -> ApiResult<Json<HealthStatus>> {
    gate.health().await.map(Json)
}

/// The server's metrics, as Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "Prometheus text exposition (version 0.0.4).", content_type = "text/plain", body = String), Errors),
)]
pub async fn metrics(gate: Gate) -> ApiResult<Response> {
    let text = gate.metrics().await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
