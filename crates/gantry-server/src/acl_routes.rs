//! Token management (`/v1/acl/tokens`, `/v1/acl/self`); policies are a
//! resource of their own (`resource::Policies`). Creating a token is the
//! only moment its secret exists outside its holder: it is answered once
//! and only its SHA-256 is stored.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use gantry_api::keys::{self, StoreKey};
use gantry_api::{DeleteResult, ErrorCode, StoredToken, Token, TokenCreated, TokenRequest, Whoami};

use crate::access::Caller;
use crate::acl::new_token;
use crate::error::{ApiError, ApiResult, Ids};
use crate::gate::{Gate, WriteOptions, body_bytes, decode, json_body};
use crate::openapi::Errors;
use crate::resource::check_id;

/// The longest a token may live: ten years.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Creates a token; its secret is in the answer and nowhere else.
#[utoipa::path(post, path = "/v1/acl/tokens", tag = "acl",
    request_body = TokenRequest,
    responses((status = 200, description = "The token and its secret (shown this once).", body = TokenCreated), Errors),
)]
pub async fn token_create(gate: Gate, body: Result<Bytes, BytesRejection>) -> ApiResult<Json<TokenCreated>> {
    gate.may_create_token()?;
    let request: TokenRequest = json_body(&body_bytes(body)?)?;
    let acl = gate.acl();
    if request.policies.is_empty() && request.agent.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "a token needs policies (\"policies\": [\"NAME\"]) or an agent's identity (\"agent\": {\"machine\": \"M\"}): \
             one with neither could do nothing",
        ));
    }
    if let Some(missing) = request.policies.iter().find(|p| !acl.policy_exists(p)) {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!(
                "no policy {missing:?}: create it first (PUT /v1/acl/policies/{missing}, gantry acl:policy:create)"
            ),
        ));
    }
    if let Some(agent) = &request.agent {
        check_id("machine", &agent.machine)?;
        check_id("federation", &agent.federation)?;
    }
    let ttl = request.ttl_secs.map(Duration::from_secs);
    if ttl.is_some_and(|ttl| ttl.is_zero() || ttl > MAX_TOKEN_TTL) {
        return Err(ApiError::new(ErrorCode::InvalidBody, "ttl_secs must be from 1 to 315360000 (ten years)"));
    }
    let (stored, secret) = new_token(request.name, request.policies, request.agent, ttl);
    let key = keys::acl_token(&stored.token.accessor);
    let value = serde_json::to_vec(&stored).expect("plain data");
    gate.write(&key, None, value.clone().into(), WriteOptions { cas: Some(0), lease: None }).await?;
    // Usable at once on this server; the watch tells the others.
    acl.note(&key, Some(&value));
    Ok(Json(TokenCreated { token: stored.token, secret }))
}

/// Every token (never a secret).
#[utoipa::path(get, path = "/v1/acl/tokens", tag = "acl",
    responses((status = 200, description = "The tokens, by accessor.", body = Vec<Token>), Errors),
)]
pub async fn token_list(gate: Gate) -> ApiResult<Json<Vec<Token>>> {
    let range = gate.range(keys::ACL_TOKENS, None).await?;
    let tokens = range
        .kvs
        .iter()
        .filter(|kv| matches!(StoreKey::parse(&kv.key), Some(StoreKey::AclToken(_))))
        .map(|kv| decode::<StoredToken>(kv).map(|stored| stored.token))
        .collect::<ApiResult<Vec<Token>>>()?;
    Ok(Json(tokens))
}

/// One token, by accessor (never its secret).
#[utoipa::path(get, path = "/v1/acl/tokens/{accessor}", tag = "acl",
    params(("accessor" = String, Path, description = "The token's accessor id.")),
    responses((status = 200, description = "The token.", body = Token), Errors),
)]
pub async fn token_get(gate: Gate, Ids(accessor): Ids<String>) -> ApiResult<Json<Token>> {
    check_id("accessor", &accessor)?;
    let Some(kv) = gate.get(&keys::acl_token(&accessor)).await? else {
        return Err(ApiError::not_found(format!("no token {accessor:?}")));
    };
    Ok(Json(decode::<StoredToken>(&kv)?.token))
}

/// Revokes a token: every server refuses it from now on.
#[utoipa::path(delete, path = "/v1/acl/tokens/{accessor}", tag = "acl",
    params(("accessor" = String, Path, description = "The token's accessor id.")),
    responses((status = 200, description = "Revoked (`deleted`: 0 when there was no such token).", body = DeleteResult), Errors),
)]
pub async fn token_revoke(gate: Gate, Ids(accessor): Ids<String>) -> ApiResult<Json<DeleteResult>> {
    check_id("accessor", &accessor)?;
    let key = keys::acl_token(&accessor);
    let deleted = gate.delete(&key, None).await?;
    gate.acl().note(&key, None);
    Ok(Json(deleted))
}

/// The caller's own token.
#[utoipa::path(get, path = "/v1/acl/self", tag = "acl",
    responses((status = 200, description = "The token the request was sent with.", body = Whoami), Errors),
)]
pub async fn whoami(gate: Gate) -> ApiResult<Json<Whoami>> {
    match gate.whoami()? {
        Caller::Token { known, .. } => Ok(Json(Whoami { token: (*known.token).clone() })),
        Caller::Open => Err(ApiError::not_found("this server runs without access control (--acl off): no tokens")),
        Caller::Anonymous => Err(ApiError::new(ErrorCode::Unauthorized, "no token was sent")),
    }
}
