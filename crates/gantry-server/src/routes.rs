//! Request handlers: KV, machine and service inventories, lookups, leases, health, metrics.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_api::{
    DeleteResult, Group, HealthStatus, Instance, KvEntry, KvList, LeaseGrant, LeaseRequest, Listing, Machine,
    ServiceDefinition, WriteResult, keys,
};
use gantry_store::{KeyValue, LeaseId, Store};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::query;
use gantry_api::ErrorCode;

pub async fn health(State(s): State<AppState>) -> ApiResult<Json<HealthStatus>> {
    let revision = s.store.revision().await?;
    Ok(Json(HealthStatus { status: "ok".into(), store: format!("{:?}", s.store.engine()).to_lowercase(), revision }))
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    let revision = s.store.revision().await.unwrap_or(0);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(revision, s.hubs.running()))
        .into_response()
}

pub async fn fallback() -> ApiError {
    ApiError::not_found(
        "no such API route; see the route list in the gantry-server crate docs (GET /v1/health, /v1/kv/KEY, ...)",
    )
}

// ---- KV ----

pub async fn kv_list(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Json<KvList>> {
    let q = query::parse(raw.as_deref())?;
    let prefix = q.get("prefix").map(String::as_str).unwrap_or("");
    let limit = query::number(&q, "limit")?.map(|n| n as usize);
    let range = s.store.range(&keys::kv(prefix), limit).await?;
    let entries = range.kvs.into_iter().map(kv_entry).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(KvList { revision: range.revision, entries, more: range.more }))
}

pub async fn kv_get(
    State(s): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = query::parse(raw.as_deref())?;
    let got = s.store.get(&keys::kv(&key)).await?;
    let Some(kv) = got.kv else {
        return Err(ApiError::not_found(format!("no key {key:?}")));
    };
    if query::flag(&q, "raw") {
        let rev = kv.mod_revision.to_string();
        return Ok(([("x-gantry-revision", rev)], kv.value).into_response());
    }
    Ok(Json(kv_entry(kv)?).into_response())
}

pub async fn kv_put(
    State(s): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    let q = query::parse(raw.as_deref())?;
    let body = body_bytes(body)?;
    if std::str::from_utf8(&body).is_err() {
        return Err(ApiError::new(ErrorCode::InvalidBody, "KV values are UTF-8 text"));
    }
    let store_key = keys::kv(&key);
    write(&s.store, &store_key, body, &q).await.map(Json)
}

pub async fn kv_delete(
    State(s): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<DeleteResult>> {
    let q = query::parse(raw.as_deref())?;
    let store_key = keys::kv(&key);
    if query::flag(&q, "prefix") {
        let d = s.store.delete_prefix(&store_key).await?;
        return Ok(Json(DeleteResult { revision: d.revision, deleted: d.deleted }));
    }
    if let Some(expected) = query::number(&q, "cas")? {
        let t = s.store.compare_and_delete(&store_key, expected).await?;
        if !t.succeeded {
            return Err(cas_failed(&key, expected));
        }
        return Ok(Json(DeleteResult { revision: t.revision, deleted: 1 }));
    }
    let d = s.store.delete(&store_key).await?;
    Ok(Json(DeleteResult { revision: d.revision, deleted: d.deleted }))
}

fn kv_entry(kv: KeyValue) -> ApiResult<KvEntry> {
    let key = kv.key.strip_prefix(keys::KV).unwrap_or(&kv.key).to_string();
    let value = String::from_utf8(kv.value.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::InvalidValue, format!("value of {key:?} is not UTF-8")))?;
    Ok(KvEntry {
        key,
        value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease.map(|l| l.to_string()),
    })
}

/// A put with the query's `cas` and `lease` options.
pub(crate) async fn write(
    store: &Store,
    key: &str,
    value: Bytes,
    q: &BTreeMap<String, String>,
) -> ApiResult<WriteResult> {
    let lease = lease_param(q)?;
    if let Some(expected) = query::number(q, "cas")? {
        let mut txn = gantry_store::Txn::new().when_mod_revision(key, expected);
        txn = match lease {
            Some(l) => txn.put_with_lease(key, value, l),
            None => txn.put(key, value),
        };
        let t = store.txn(txn).await?;
        if !t.succeeded {
            return Err(cas_failed(key, expected));
        }
        return Ok(WriteResult { revision: t.revision });
    }
    let revision = match lease {
        Some(l) => store.put_with_lease(key, value, l).await?,
        None => store.put(key, value).await?,
    };
    Ok(WriteResult { revision })
}

fn cas_failed(key: &str, expected: u64) -> ApiError {
    let wanted = if expected == 0 { "not to exist".to_string() } else { format!("to be at revision {expected}") };
    ApiError::new(
        ErrorCode::CasFailed,
        format!("compare-and-set failed: expected {key:?} {wanted}; read it again and retry"),
    )
}

pub(crate) fn lease_param(q: &BTreeMap<String, String>) -> ApiResult<Option<LeaseId>> {
    q.get("lease").map(|v| parse_lease(v)).transpose()
}

pub(crate) fn parse_lease(v: &str) -> ApiResult<LeaseId> {
    i64::from_str_radix(v, 16).ok().filter(|id| *id > 0).map(LeaseId).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidLease, format!("{v:?} is not a lease id (hex, as POST /v1/leases returns)"))
    })
}

pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::BodyTooLarge, format!("request body over {} bytes", gantry_api::MAX_BODY_BYTES))
        } else {
            ApiError::new(ErrorCode::InvalidBody, e.body_text())
        }
    })
}

/// Parses a JSON body into `T`, with serde's message (line, column, unknown field) on failure.
pub(crate) fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<(T, Bytes)> {
    let bytes = body_bytes(body)?;
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidBody, format!("invalid JSON body: {e}")))?;
    Ok((value, bytes))
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> ApiResult<T> {
    serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::new(ErrorCode::CorruptValue, format!("stored value of {:?} does not decode: {e}", kv.key))
    })
}

/// Ids in paths are one key segment.
pub(crate) fn check_id(what: &str, id: &str) -> ApiResult<()> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." || id.chars().any(char::is_control) {
        return Err(ApiError::new(ErrorCode::InvalidId, format!("invalid {what} id {id:?}")));
    }
    Ok(())
}

pub(crate) async fn get_one<T: DeserializeOwned>(store: &Store, key: &str, what: &str) -> ApiResult<T> {
    match store.get(key).await?.kv {
        Some(kv) => decode(&kv),
        None => Err(ApiError::not_found(format!("no {what}"))),
    }
}

/// Deletes one key; deleting what is not there is not an error (idempotent).
pub(crate) async fn delete_one(store: &Store, key: &str) -> ApiResult<Json<WriteResult>> {
    let d = store.delete(key).await?;
    Ok(Json(WriteResult { revision: d.revision }))
}

pub(crate) async fn list<T: DeserializeOwned>(store: &Store, prefix: &str) -> ApiResult<Listing<T>> {
    list_where(store, prefix, |_| true).await
}

/// The documents under `prefix` whose keys `wanted` takes.
pub(crate) async fn list_where<T: DeserializeOwned>(
    store: &Store,
    prefix: &str,
    wanted: impl Fn(&str) -> bool,
) -> ApiResult<Listing<T>> {
    let range = store.range(prefix, None).await?;
    let items = range.kvs.iter().filter(|kv| wanted(&kv.key)).map(decode).collect::<ApiResult<Vec<T>>>()?;
    Ok(Listing { revision: range.revision, items })
}

// ---- Machines ----

pub async fn machines_list(State(s): State<AppState>) -> ApiResult<Json<Listing<Machine>>> {
    list(&s.store, keys::MACHINES).await.map(Json)
}

pub async fn machine_get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Machine>> {
    check_id("machine", &id)?;
    get_one(&s.store, &keys::machine(&id), &format!("machine {id:?}")).await.map(Json)
}

pub async fn machine_put(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    check_id("machine", &id)?;
    let q = query::parse(raw.as_deref())?;
    let (machine, bytes): (Machine, Bytes) = json_body(body)?;
    if machine.id != id {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("body id {:?} does not match the path's {id:?}", machine.id),
        ));
    }
    write(&s.store, &keys::machine(&id), bytes, &q).await.map(Json)
}

pub async fn machine_delete(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<WriteResult>> {
    check_id("machine", &id)?;
    delete_one(&s.store, &keys::machine(&id)).await
}

/// Services on host X: every instance whose machine is X.
pub async fn machine_instances(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Listing<Instance>>> {
    check_id("machine", &id)?;
    let mut all: Listing<Instance> = list(&s.store, keys::INSTANCES).await?;
    all.items.retain(|i| i.machine == id);
    Ok(Json(all))
}

// ---- Groups ----

pub async fn groups_list(State(s): State<AppState>) -> ApiResult<Json<Listing<Group>>> {
    list(&s.store, keys::GROUPS).await.map(Json)
}

pub async fn group_get(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Group>> {
    check_id("group", &name)?;
    get_one(&s.store, &keys::group(&name), &format!("group {name:?}")).await.map(Json)
}

pub async fn group_put(
    State(s): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    check_id("group", &name)?;
    let q = query::parse(raw.as_deref())?;
    let (group, bytes): (Group, Bytes) = json_body(body)?;
    if group.name != name {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("body name {:?} does not match the path's {name:?}", group.name),
        ));
    }
    write(&s.store, &keys::group(&name), bytes, &q).await.map(Json)
}

pub async fn group_delete(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<WriteResult>> {
    check_id("group", &name)?;
    delete_one(&s.store, &keys::group(&name)).await
}

// ---- Services and instances ----

pub async fn services_list(State(s): State<AppState>) -> ApiResult<Json<Listing<ServiceDefinition>>> {
    list(&s.store, keys::SERVICES).await.map(Json)
}

pub async fn service_get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ServiceDefinition>> {
    check_id("service", &id)?;
    get_one(&s.store, &keys::service(&id), &format!("service {id:?}")).await.map(Json)
}

pub async fn service_put(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    check_id("service", &id)?;
    let q = query::parse(raw.as_deref())?;
    let (definition, bytes): (ServiceDefinition, Bytes) = json_body(body)?;
    if definition.id != id {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("body id {:?} does not match the path's {id:?}", definition.id),
        ));
    }
    // The shape is right; now its meaning (placeholders, ports, names), as
    // `gantry repo:check` would judge the file.
    let text = std::str::from_utf8(&bytes).unwrap_or_default();
    if let Err(e) = gantry_spec::parse_service_json(&id, text) {
        return Err(ApiError::new(ErrorCode::InvalidBody, format!("invalid service definition: {e}")));
    }
    write(&s.store, &keys::service(&id), bytes, &q).await.map(Json)
}

pub async fn service_delete(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<WriteResult>> {
    check_id("service", &id)?;
    delete_one(&s.store, &keys::service(&id)).await
}

pub async fn instance_get(
    State(s): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> ApiResult<Json<Instance>> {
    check_id("service", &service)?;
    check_id("instance", &id)?;
    get_one(&s.store, &keys::instance(&service, &id), &format!("instance {id:?} of service {service:?}"))
        .await
        .map(Json)
}

pub async fn instance_put(
    State(s): State<AppState>,
    Path((service, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    check_id("service", &service)?;
    check_id("instance", &id)?;
    let q = query::parse(raw.as_deref())?;
    let (instance, bytes): (Instance, Bytes) = json_body(body)?;
    if instance.service != service || instance.id != id {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("body names {}/{}, the path {service}/{id}", instance.service, instance.id),
        ));
    }
    write(&s.store, &keys::instance(&service, &id), bytes, &q).await.map(Json)
}

pub async fn instance_delete(
    State(s): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> ApiResult<Json<WriteResult>> {
    check_id("service", &service)?;
    check_id("instance", &id)?;
    delete_one(&s.store, &keys::instance(&service, &id)).await
}

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

/// Hosts for service X (optionally healthy, optionally with properties).
pub async fn service_instances(
    State(s): State<AppState>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Listing<Instance>>> {
    check_id("service", &service)?;
    let q = query::parse(raw.as_deref())?;
    let mut all: Listing<Instance> = list(&s.store, &keys::instances_of(&service)).await?;
    all.items.retain(|i| matches(i, &q));
    Ok(Json(all))
}

/// Hosts with property Y=X, across services.
pub async fn instances_with_property(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Listing<Instance>>> {
    let q = query::parse(raw.as_deref())?;
    let mut all: Listing<Instance> = list(&s.store, keys::INSTANCES).await?;
    all.items.retain(|i| matches(i, &q));
    Ok(Json(all))
}

/// `get_host(service, prop=value, ...)`: one healthy matching instance,
/// chosen at random so that callers spread over the instances.
pub async fn lookup(
    State(s): State<AppState>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Instance>> {
    check_id("service", &service)?;
    let mut q = query::parse(raw.as_deref())?;
    q.insert("healthy".into(), "true".into());
    let all: Listing<Instance> = list(&s.store, &keys::instances_of(&service)).await?;
    let mut candidates: Vec<Instance> = all.items.into_iter().filter(|i| matches(i, &q)).collect();
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

// ---- Leases ----

pub async fn lease_grant(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<LeaseGrant>> {
    let (req, _): (LeaseRequest, Bytes) = json_body(body)?;
    let lease = s.store.grant_lease(std::time::Duration::from_secs(req.ttl_secs)).await?;
    Ok(Json(LeaseGrant { id: lease.id.to_string(), ttl_secs: lease.ttl.as_secs() }))
}

pub async fn lease_keepalive(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<LeaseGrant>> {
    let lease = parse_lease(&id)?;
    let ttl = s.store.keep_alive(lease).await?;
    Ok(Json(LeaseGrant { id, ttl_secs: ttl.as_secs() }))
}

pub async fn lease_revoke(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let lease = parse_lease(&id)?;
    s.store.revoke_lease(lease).await?;
    Ok(StatusCode::NO_CONTENT)
}
