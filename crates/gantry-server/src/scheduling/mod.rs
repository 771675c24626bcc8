//! Scheduled services (issue 16) on the server: the queries over
//! allocations, and (in [`scheduler`]) the loop that places them.

pub mod scheduler;

use axum::Json;
use gantry_api::{Allocation, Listing, keys};

use crate::error::{ApiResult, Ids};
use crate::gate::Gate;
use crate::openapi::Errors;
use crate::resource::{Allocations, check_id};

/// The allocations placed on one node: what its agent runs.
#[utoipa::path(get, path = "/v1/nodes/{machine}/allocations", tag = "scheduling",
    params(("machine" = String, Path, description = "The machine's id.")),
    responses((status = 200, description = "Every allocation on the node, running or stopped.", body = Listing<Allocation>), Errors),
)]
pub async fn node_allocations(gate: Gate, Ids(machine): Ids<String>) -> ApiResult<Json<Listing<Allocation>>> {
    check_id("machine", &machine)?;
    gate.list::<Allocations>(&keys::allocs_of(&machine), |_| true).await.map(Json)
}
