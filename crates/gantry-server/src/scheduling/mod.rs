//! Scheduled services (issue 16) on the server: the queries over
//! allocations, and (in [`scheduler`]) the loop that places them.

pub mod scheduler;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use gantry_api::{Allocation, JobPlan, Listing, ServiceDefinition, keys};

use crate::error::{ApiResult, Ids};
use crate::gate::{Gate, body_bytes, json_body};
use crate::openapi::Errors;
use crate::resource::{Allocations, Resource, Services, check_id};

/// The allocations placed on one node: what its agent runs.
#[utoipa::path(get, path = "/v1/nodes/{machine}/allocations", tag = "scheduling",
    params(("machine" = String, Path, description = "The machine's id.")),
    responses((status = 200, description = "Every allocation on the node, running or stopped.", body = Listing<Allocation>), Errors),
)]
pub async fn node_allocations(gate: Gate, Ids(machine): Ids<String>) -> ApiResult<Json<Listing<Allocation>>> {
    check_id("machine", &machine)?;
    gate.list::<Allocations>(&keys::allocs_of(&machine), |_| true).await.map(Json)
}

/// What writing this definition of a scheduled service would make the
/// scheduler do: allocations placed, stopped and left pending, with the
/// reasons. Nothing is written; it needs the right to write the definition.
#[utoipa::path(post, path = "/v1/jobs/{service}/plan", tag = "scheduling",
    params(("service" = String, Path, description = "The service's id.")),
    request_body(content = ServiceDefinition, description = "The definition to try, as it would be written."),
    responses((status = 200, description = "The plan for this service; nothing was written.", body = JobPlan), Errors),
)]
pub async fn job_plan(
    gate: Gate,
    Ids(service): Ids<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<JobPlan>> {
    check_id("service", &service)?;
    // Asked before the body is read, and again for the federation it names.
    gate.store_if_may_write(&keys::service(&service), None)?;
    let bytes = body_bytes(body)?;
    let definition: ServiceDefinition = json_body(&bytes)?;
    Services::check(&service, &definition, &bytes)?;
    let store = gate.store_if_may_write(&keys::service(&service), Some(Services::owner(&definition)))?;
    let text = std::str::from_utf8(&bytes).unwrap_or_default();
    let proposed = gantry_spec::parse_service_json(&service, text)
        .map_err(|e| crate::error::ApiError::new(gantry_api::ErrorCode::InvalidBody, e.to_string()))?;
    Ok(Json(scheduler::dry_run(store, proposed).await?))
}
