//! The inventories' queries (seed 002): services on a host, hosts for a
//! service, hosts with a property, and `get_host` (one healthy instance).
//! They read instances through the resource layer, like every listing.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use axum::Json;
use axum::extract::RawQuery;
use gantry_api::{Instance, Listing, keys};

use crate::error::{ApiError, ApiResult, Ids};
use crate::gate::Gate;
use crate::openapi::Errors;
use crate::query;
use crate::resource::{Instances, check_id};

/// Query parameters that are not property filters.
const RESERVED: &[&str] = &["healthy", "federation"];

fn matches(i: &Instance, q: &BTreeMap<String, String>) -> bool {
    if query::flag(q, "healthy") && i.health != gantry_api::Health::Passing {
        return false;
    }
    if let Some(f) = q.get("federation")
        && &i.federation != f
    {
        return false;
    }
    q.iter().filter(|(k, _)| !RESERVED.contains(&k.as_str())).all(|(k, v)| i.has_property(k, v))
}

/// Services on a host: every instance on one machine.
#[utoipa::path(get, path = "/v1/machines/{id}/instances", tag = "inventory",
    params(("id" = String, Path, description = "The machine's id.")),
    responses((status = 200, description = "Every instance on the machine.", body = Listing<Instance>), Errors),
)]
pub async fn machine_instances(gate: Gate, Ids(id): Ids<String>) -> ApiResult<Json<Listing<Instance>>> {
    check_id("machine", &id)?;
    gate.list::<Instances>(keys::INSTANCES, |i| i.machine == id).await.map(Json)
}

/// Hosts for a service: its instances, optionally healthy ones with given properties.
#[utoipa::path(get, path = "/v1/services/{service}/instances", tag = "inventory",
    params(
        ("service" = String, Path, description = "The service's id."),
        ("healthy" = Option<bool>, Query, description = "Only instances whose checks pass."),
        ("federation" = Option<String>, Query, description = "Only instances of this federation."),
        ("properties" = Option<BTreeMap<String, String>>, Query, style = Form, explode,
            description = "Any other `PROP=VALUE`: only instances with that property (`master=true` also matches `mysql.master`)."),
    ),
    responses((status = 200, description = "The matching instances.", body = Listing<Instance>), Errors),
)]
pub async fn service_instances(
    gate: Gate,
    Ids(service): Ids<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Listing<Instance>>> {
    check_id("service", &service)?;
    let q = query::parse(raw.as_deref())?;
    gate.list::<Instances>(&keys::instances_of(&service), |i| matches(i, &q)).await.map(Json)
}

/// Hosts with a property: instances of every service that have `PROP=VALUE`.
#[utoipa::path(get, path = "/v1/instances", tag = "inventory",
    params(
        ("healthy" = Option<bool>, Query, description = "Only instances whose checks pass."),
        ("federation" = Option<String>, Query, description = "Only instances of this federation."),
        ("properties" = Option<BTreeMap<String, String>>, Query, style = Form, explode,
            description = "Any other `PROP=VALUE`: only instances with that property."),
    ),
    responses((status = 200, description = "The matching instances of every service.", body = Listing<Instance>), Errors),
)]
pub async fn instances_with_property(gate: Gate, RawQuery(raw): RawQuery) -> ApiResult<Json<Listing<Instance>>> {
    let q = query::parse(raw.as_deref())?;
    gate.list::<Instances>(keys::INSTANCES, |i| matches(i, &q)).await.map(Json)
}

/// `get_host(service, prop=value, ...)`: one healthy matching instance.
///
/// Chosen at random among the matching ones, so that callers spread over them.
#[utoipa::path(get, path = "/v1/lookup/{service}", tag = "inventory",
    params(
        ("service" = String, Path, description = "The service's id."),
        ("federation" = Option<String>, Query, description = "Only instances of this federation."),
        ("properties" = Option<BTreeMap<String, String>>, Query, style = Form, explode,
            description = "Any other `PROP=VALUE`: only instances with that property."),
    ),
    responses((status = 200, description = "One healthy matching instance.", body = Instance), Errors),
)]
pub async fn lookup(gate: Gate, Ids(service): Ids<String>, RawQuery(raw): RawQuery) -> ApiResult<Json<Instance>> {
    check_id("service", &service)?;
    let mut q = query::parse(raw.as_deref())?;
    q.insert("healthy".into(), "true".into());
    let all = gate.list::<Instances>(&keys::instances_of(&service), |i| matches(i, &q)).await?;
    let mut candidates = all.items;
    if candidates.is_empty() {
        q.remove("healthy");
        let wanted: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(ApiError::not_found(format!(
            "no healthy instance of service {service:?}{}",
            if wanted.is_empty() { String::new() } else { format!(" with {}", wanted.join(", ")) }
        )));
    }
    let pick = RandomState::new().hash_one(all.revision) as usize % candidates.len();
    Ok(Json(candidates.swap_remove(pick)))
}
