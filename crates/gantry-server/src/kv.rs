//! The free-form KV space (`kv/...`: datastores, users' own keys) and
//! leases. KV values are UTF-8 text, stored as sent.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gantry_api::{DeleteResult, ErrorCode, KvEntry, KvList, LeaseGrant, LeaseRequest, WriteResult, keys};
use gantry_store::KeyValue;

use crate::error::{ApiError, ApiResult, Ids};
use crate::gate::{Gate, WriteOptions, body_bytes, json_body};
use crate::openapi::Errors;
use crate::query;

/// The KV keys under a prefix.
#[utoipa::path(get, path = "/v1/kv", tag = "kv",
    params(
        ("prefix" = Option<String>, Query, description = "Only keys that start with this (default: every key)."),
        ("limit" = Option<u64>, Query, description = "At most this many keys; `more` says whether there were others."),
    ),
    responses((status = 200, description = "The keys, in key order.", body = KvList), Errors),
)]
pub async fn kv_list(gate: Gate, RawQuery(raw): RawQuery) -> ApiResult<Json<KvList>> {
    let q = query::parse(raw.as_deref())?;
    let prefix = q.get("prefix").map(String::as_str).unwrap_or("");
    let limit = query::number(&q, "limit")?.map(|n| n as usize);
    let range = gate.range(&keys::kv(prefix), limit).await?;
    let entries = range.kvs.into_iter().map(entry).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(KvList { revision: range.revision, entries, more: range.more }))
}

/// One KV key, with its revisions (or, with `?raw`, its value alone).
#[utoipa::path(get, path = "/v1/kv/{*key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key; may contain `/`."),
        ("raw" = Option<bool>, Query, description = "Answer the value alone, as text, with its revision in `x-gantry-revision`."),
    ),
    responses(
        (status = 200, description = "The key; with `?raw`, its value alone.",
            content((KvEntry = "application/json"), (String = "text/plain")),
            headers(("x-gantry-revision" = u64, description = "With `?raw`: the value's revision."))),
        Errors,
    ),
)]
pub async fn kv_get(gate: Gate, Ids(key): Ids<String>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = query::parse(raw.as_deref())?;
    let Some(kv) = gate.get(&keys::kv(&key)).await? else {
        return Err(ApiError::not_found(format!("no key {key:?}")));
    };
    if query::flag(&q, "raw") {
        let rev = kv.mod_revision.to_string();
        return Ok(([("x-gantry-revision", rev)], kv.value).into_response());
    }
    Ok(Json(entry(kv)?).into_response())
}

/// Writes a KV key: the body is its value.
#[utoipa::path(put, path = "/v1/kv/{*key}", tag = "kv",
    params(("key" = String, Path, description = "The key; may contain `/`."), WriteOptions),
    request_body(content = String, content_type = "text/plain", description = "The value: UTF-8 text."),
    responses((status = 200, description = "Written.", body = WriteResult), Errors),
)]
pub async fn kv_put(
    gate: Gate,
    Ids(key): Ids<String>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    let options = WriteOptions::parse(raw.as_deref())?;
    let value = body_bytes(body)?;
    if std::str::from_utf8(&value).is_err() {
        return Err(ApiError::new(ErrorCode::InvalidBody, "KV values are UTF-8 text"));
    }
    gate.write(&keys::kv(&key), None, value, options).await.map(Json)
}

/// Deletes a KV key (or, with `?prefix`, every key under it).
#[utoipa::path(delete, path = "/v1/kv/{*key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key; may contain `/`."),
        ("prefix" = Option<bool>, Query, description = "Delete every key that starts with `key`."),
        ("cas" = Option<u64>, Query, description = "Delete only if the key's revision is this one; otherwise 409 `cas_failed`."),
    ),
    responses((status = 200, description = "Deleted (or there was nothing to delete).", body = DeleteResult), Errors),
)]
pub async fn kv_delete(gate: Gate, Ids(key): Ids<String>, RawQuery(raw): RawQuery) -> ApiResult<Json<DeleteResult>> {
    let q = query::parse(raw.as_deref())?;
    let store_key = keys::kv(&key);
    if query::flag(&q, "prefix") {
        return gate.delete_prefix(&store_key).await.map(Json);
    }
    gate.delete(&store_key, query::number(&q, "cas")?).await.map(Json)
}

fn entry(kv: KeyValue) -> ApiResult<KvEntry> {
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

// ---- Leases ----

/// Grants a lease of `ttl_secs`.
#[utoipa::path(post, path = "/v1/leases", tag = "leases",
    request_body = LeaseRequest,
    responses((status = 200, description = "Granted.", body = LeaseGrant), Errors),
)]
pub async fn lease_grant(gate: Gate, body: Result<Bytes, BytesRejection>) -> ApiResult<Json<LeaseGrant>> {
    let request: LeaseRequest = json_body(&body_bytes(body)?)?;
    gate.grant_lease(Duration::from_secs(request.ttl_secs)).await.map(Json)
}

/// Renews a lease for its TTL.
#[utoipa::path(put, path = "/v1/leases/{id}/keepalive", tag = "leases",
    params(("id" = String, Path, description = "The lease's hex id.")),
    responses((status = 200, description = "Renewed.", body = LeaseGrant), Errors),
)]
pub async fn lease_keepalive(gate: Gate, Ids(id): Ids<String>) -> ApiResult<Json<LeaseGrant>> {
    let ttl = gate.keep_alive(query::lease(&id)?).await?;
    Ok(Json(LeaseGrant { id, ttl_secs: ttl.as_secs() }))
}

/// Ends a lease and deletes its keys.
#[utoipa::path(delete, path = "/v1/leases/{id}", tag = "leases",
    params(("id" = String, Path, description = "The lease's hex id.")),
    responses((status = 204, description = "Revoked: its keys are deleted."), Errors),
)]
pub async fn lease_revoke(gate: Gate, Ids(id): Ids<String>) -> ApiResult<StatusCode> {
    gate.revoke_lease(query::lease(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
