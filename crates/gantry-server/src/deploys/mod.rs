//! Deploys (issue 17) on the server: the artifact store's routes, releases
//! (create, history, show, rollback), the rollout in progress (status,
//! promote, abort) and what each node runs; and (in [`controller`]) the
//! loop that moves nodes onto a release.
//!
//! Who may: reading a service's deploys needs read on `services/<id>` (an
//! agent: running the service, statically or by allocation); creating,
//! uploading, promoting, aborting and rolling back need write on it. The
//! controller alone writes rollouts, release outcomes and the nodes'
//! `agents/<machine>/release/<service>` targets.

pub mod artifacts;
pub mod controller;
pub mod rollout;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use gantry_api::keys::{self, AgentKeyRef, StoreKey};
use gantry_api::{
    AgentStatus, ArtifactStat, ErrorCode, MachineRelease, MachineReleases, NodePhase, NodeProgress, Release,
    ReleaseDetail, ReleaseHistory, ReleaseRequest, ReleaseStatus, ReleaseTarget, RollbackRequest, Rollout,
    RolloutPhase, RolloutStatus, ServiceDefinition, now_ms,
};
use gantry_store::{Store, Txn};
use sha2::Digest as _;

use crate::error::{ApiError, ApiResult, Ids};
use crate::gate::{Gate, body_bytes, decode, json_body};
use crate::openapi::Errors;
use crate::resource::check_id;
use artifacts::{ArtifactStore, is_sha256};

/// The largest artifact the server takes.
pub const MAX_ARTIFACT_BYTES: u64 = 4 << 30;

fn bad_sha(sha256: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidId, format!("{sha256:?} is not a SHA-256 (64 lower-case hex digits)"))
}

fn store_error(e: std::io::Error, what: &str) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("the artifact store: {what}: {e}"))
}

/// The artifact store, or why there is none.
fn artifact_store(artifacts: Option<Arc<dyn ArtifactStore>>) -> ApiResult<Arc<dyn ArtifactStore>> {
    artifacts.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoArtifactStore,
            "this server keeps no artifacts: start `gantry server` with a --data-dir (or --artifacts s3://...)",
        )
    })
}

/// Whether an artifact is stored (`gantry deploy` uploads only what is not).
#[utoipa::path(get, path = "/v1/artifacts/{service}/{sha256}/stat", tag = "deploys",
    params(("service" = String, Path, description = "The service's id."), ("sha256" = String, Path, description = "The artifact's SHA-256.")),
    responses((status = 200, description = "Whether it is stored, and its size.", body = ArtifactStat), Errors),
)]
pub async fn artifact_stat(gate: Gate, Ids((service, sha256)): Ids<(String, String)>) -> ApiResult<Json<ArtifactStat>> {
    check_id("service", &service)?;
    let (_, artifacts) = gate.deploys(&service, true)?;
    if !is_sha256(&sha256) {
        return Err(bad_sha(&sha256));
    }
    let artifacts = artifact_store(artifacts)?;
    let size = artifacts.stat(&sha256).await.map_err(|e| store_error(e, "stat"))?;
    Ok(Json(ArtifactStat { sha256, stored: size.is_some(), size: size.unwrap_or(0) }))
}

/// Uploads an artifact; its bytes must hash to the SHA-256 in the path.
#[utoipa::path(put, path = "/v1/artifacts/{service}/{sha256}", tag = "deploys",
    params(("service" = String, Path, description = "The service's id."), ("sha256" = String, Path, description = "The artifact's SHA-256.")),
    request_body(content = Vec<u8>, description = "The artifact's bytes.", content_type = "application/octet-stream"),
    responses((status = 200, description = "Stored (or it already was).", body = ArtifactStat), Errors),
)]
pub async fn artifact_put(
    gate: Gate,
    Ids((service, sha256)): Ids<(String, String)>,
    body: Body,
) -> ApiResult<Json<ArtifactStat>> {
    check_id("service", &service)?;
    let (_, artifacts) = gate.deploys(&service, true)?;
    if !is_sha256(&sha256) {
        return Err(bad_sha(&sha256));
    }
    let artifacts = artifact_store(artifacts)?;
    if let Some(size) = artifacts.stat(&sha256).await.map_err(|e| store_error(e, "stat"))? {
        return Ok(Json(ArtifactStat { sha256, stored: true, size }));
    }
    let staged = artifacts.staging().join(format!("{sha256}.{}.part", crate::acl::hex(&crate::acl::random_256()[..8])));
    let result = stage(&staged, body, &sha256).await;
    let size = match result {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    if let Err(e) = artifacts.put(&sha256, &staged).await {
        let _ = std::fs::remove_file(&staged);
        return Err(store_error(e, "storing"));
    }
    Ok(Json(ArtifactStat { sha256, stored: true, size }))
}

/// Writes `body` to `path` (0600) while hashing it; its size if the hash is `sha256`.
async fn stage(path: &std::path::Path, body: Body, sha256: &str) -> ApiResult<u64> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = Some(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| store_error(e, "staging"))?,
    );
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(ErrorCode::InvalidBody, format!("reading the upload: {e}")))?;
        size += chunk.len() as u64;
        if size > MAX_ARTIFACT_BYTES {
            return Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("an artifact may be at most {} GiB", MAX_ARTIFACT_BYTES >> 30),
            ));
        }
        hasher.update(&chunk);
        let mut f = file.take().expect("the staged file is back after each write");
        let written = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            f.write_all(&chunk).map(|()| f)
        });
        file =
            Some(written.await.map_err(std::io::Error::other).and_then(|r| r).map_err(|e| store_error(e, "staging"))?);
    }
    let got = crate::acl::hex(&hasher.finalize());
    if got != sha256 {
        return Err(ApiError::new(
            ErrorCode::ArtifactMismatch,
            format!(
                "the upload's SHA-256 is {got}, not {sha256}: it was cut short or changed on the way; upload it again"
            ),
        ));
    }
    Ok(size)
}

/// An artifact's bytes (agents fetch releases of what they run).
#[utoipa::path(get, path = "/v1/artifacts/{service}/{sha256}", tag = "deploys",
    params(("service" = String, Path, description = "The service's id."), ("sha256" = String, Path, description = "The artifact's SHA-256.")),
    responses((status = 200, description = "The artifact.", content_type = "application/octet-stream", body = Vec<u8>), Errors),
)]
pub async fn artifact_get(gate: Gate, Ids((service, sha256)): Ids<(String, String)>) -> ApiResult<Response> {
    check_id("service", &service)?;
    let (_, artifacts) = gate.deploys(&service, false)?;
    if !is_sha256(&sha256) {
        return Err(bad_sha(&sha256));
    }
    let artifacts = artifact_store(artifacts)?;
    let Some((size, stream)) = artifacts.open(&sha256).await.map_err(|e| store_error(e, "reading"))? else {
        return Err(ApiError::not_found(format!("no artifact {sha256} is stored")));
    };
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_LENGTH, size.to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Every release of `service`, newest first, with each one's revision.
pub(crate) async fn releases(store: &Store, service: &str) -> ApiResult<Vec<(Release, u64)>> {
    let range = store.range(&keys::releases_of(service), None).await?;
    let mut out = Vec::with_capacity(range.kvs.len());
    for kv in &range.kvs {
        if let Some(StoreKey::Release { .. }) = StoreKey::parse(&kv.key) {
            out.push((decode::<Release>(kv)?, kv.mod_revision));
        }
    }
    out.sort_by_key(|(r, _)| std::cmp::Reverse(r.version));
    Ok(out)
}

/// The newest release that succeeded: where failures go back to.
pub(crate) fn stable(releases: &[(Release, u64)]) -> Option<&Release> {
    releases.iter().map(|(r, _)| r).find(|r| r.status == ReleaseStatus::Succeeded)
}

/// A definition's meaning, as agents read it.
pub(crate) fn parse_definition(definition: &ServiceDefinition) -> Result<gantry_spec::Service, String> {
    let text = serde_json::to_string(definition).map_err(|e| e.to_string())?;
    gantry_spec::parse_service_json(&definition.id, &text).map_err(|e| e.to_string())
}

/// What a node is told to run for `release`.
pub(crate) fn target_of(release: &Release, deploy: &gantry_spec::Deploy) -> ReleaseTarget {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    ReleaseTarget {
        service: release.service.clone(),
        version: release.version,
        sha256: release.sha256.clone(),
        size: release.size,
        shutdown_delay_ms: ms(deploy.shutdown_delay),
        min_healthy_ms: ms(deploy.update.min_healthy_time),
        healthy_deadline_ms: ms(deploy.update.healthy_deadline),
    }
}

/// Every agent's status, by machine.
pub(crate) async fn statuses(store: &Store) -> ApiResult<BTreeMap<String, AgentStatus>> {
    let range = store.range(keys::AGENTS, None).await?;
    let mut out = BTreeMap::new();
    for kv in &range.kvs {
        if let Some(StoreKey::Agent { machine, key: AgentKeyRef::Status }) = StoreKey::parse(&kv.key)
            && let Ok(status) = decode::<AgentStatus>(kv)
        {
            out.insert(machine.to_owned(), status);
        }
    }
    Ok(out)
}

fn conflict_message(rollout: &Rollout) -> String {
    let secs = now_ms().saturating_sub(rollout.started_ms) / 1000;
    format!(
        "{} is deploying {} v{} (started {secs}s ago, {}): wait for it, or `gantry deploy:abort {}`",
        rollout.who,
        rollout.service,
        rollout.version,
        match rollout.phase {
            RolloutPhase::Rolling => "rolling",
            RolloutPhase::Canary => "its canaries await promotion",
            RolloutPhase::Reverting => "reverting",
        },
        rollout.service
    )
}

/// What a new release is made of.
struct NewRelease {
    sha256: String,
    git: Option<gantry_api::GitInfo>,
    message: Option<String>,
    who: String,
    definition: ServiceDefinition,
    rollback_of: Option<u64>,
}

/// Writes release N+1 and its rollout (over every node that runs the
/// service), unless a rollout is in progress; then prunes old versions.
async fn create(
    store: &Store,
    artifacts: &Arc<dyn ArtifactStore>,
    service: &str,
    new: NewRelease,
) -> ApiResult<Release> {
    let size = artifacts.stat(&new.sha256).await.map_err(|e| store_error(e, "stat"))?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::ArtifactMissing,
            format!("artifact {} is not stored: upload it first (`gantry deploy` does)", new.sha256),
        )
    })?;
    parse_definition(&new.definition)
        .map_err(|e| ApiError::new(ErrorCode::InvalidBody, format!("the definition of {service}: {e}")))?;
    let history = releases(store, service).await?;
    let version = history.first().map_or(1, |(r, _)| r.version + 1);
    let now = now_ms();
    let machines: Vec<String> = statuses(store)
        .await?
        .into_iter()
        .filter(|(_, status)| status.services.iter().any(|s| s == service))
        .map(|(machine, _)| machine)
        .collect();
    let mut release = Release {
        service: service.to_owned(),
        version,
        sha256: new.sha256,
        size,
        git: new.git,
        message: new.message,
        who: new.who,
        created_ms: now,
        finished_ms: None,
        status: ReleaseStatus::Running,
        reason: None,
        rollback_of: new.rollback_of,
        definition: new.definition,
        nodes: Vec::new(),
    };
    let nodes: Vec<NodeProgress> = machines
        .iter()
        .map(|machine| NodeProgress {
            machine: machine.clone(),
            phase: NodePhase::Pending,
            message: None,
            told_ms: 0,
            since_ms: now,
            reverting: false,
        })
        .collect();
    let rollout_key = keys::rollout(service);
    let release_key = keys::release(service, version);
    let mut txn = Txn::new().when_mod_revision(&rollout_key, 0).when_mod_revision(&release_key, 0);
    if nodes.is_empty() {
        release.status = ReleaseStatus::Succeeded;
        release.finished_ms = Some(now);
        release.reason = Some("no node runs it yet: nodes that start it get this release".into());
    } else {
        let rollout = Rollout {
            service: service.to_owned(),
            version,
            sha256: release.sha256.clone(),
            size,
            who: release.who.clone(),
            started_ms: now,
            phase: RolloutPhase::Rolling,
            stable: stable(&history).and_then(|s| Some(target_of(s, &parse_definition(&s.definition).ok()?.deploy))),
            promoted: false,
            reason: None,
            aborted: false,
            nodes,
        };
        txn = txn.put(&rollout_key, to_json(&rollout));
    }
    txn = txn.put(&release_key, to_json(&release));
    if !store.txn(txn).await?.succeeded {
        return Err(match store.get(&rollout_key).await?.kv {
            Some(kv) => ApiError::new(ErrorCode::RolloutInProgress, conflict_message(&decode::<Rollout>(&kv)?)),
            None => ApiError::new(
                ErrorCode::RolloutInProgress,
                format!("another release of {service} was just made: try again"),
            ),
        });
    }
    prune(store, artifacts.as_ref(), service, gantry_api::release::defaults::KEEP_VERSIONS).await;
    Ok(release)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("API types serialize")
}

/// Keeps the newest `keep` releases of `service` and the stable one;
/// deletes the others' records and the artifacts no kept release names.
pub(crate) async fn prune(store: &Store, artifacts: &dyn ArtifactStore, service: &str, keep: usize) {
    let Ok(history) = releases(store, service).await else { return };
    let stable = stable(&history).map(|r| r.version);
    let (kept, gone): (Vec<_>, Vec<_>) = history
        .iter()
        .enumerate()
        .partition(|(i, (r, _))| *i < keep || Some(r.version) == stable || !r.status.finished());
    for (_, (release, _)) in &gone {
        let _ = store.delete(&keys::release(service, release.version)).await;
        if !kept.iter().any(|(_, (k, _))| k.sha256 == release.sha256)
            && let Err(e) = artifacts.delete(&release.sha256).await
        {
            eprintln!("gantry server: deleting artifact {} of {service}: {e}", release.sha256);
        }
    }
}

/// Makes release N+1 of an artifact already uploaded and rolls it out.
/// Refused (409, naming who deploys what) while another rollout runs.
#[utoipa::path(post, path = "/v1/releases/{service}", tag = "deploys",
    params(("service" = String, Path, description = "The service's id.")),
    request_body(content = ReleaseRequest, description = "The artifact, and what to record with it."),
    responses((status = 200, description = "The new release (its rollout has started).", body = Release), Errors),
)]
pub async fn release_create(
    gate: Gate,
    Ids(service): Ids<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Release>> {
    check_id("service", &service)?;
    let (store, artifacts) = gate.deploys(&service, true)?;
    let request: ReleaseRequest = json_body(&body_bytes(body)?)?;
    if !is_sha256(&request.sha256) {
        return Err(bad_sha(&request.sha256));
    }
    let definition = match request.definition {
        Some(d) if d.id != service => {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                format!("the definition is of {:?}, not {service:?}", d.id),
            ));
        }
        Some(d) => d,
        None => current_definition(store, &service).await?,
    };
    let who = who(&gate, request.os_user);
    let artifacts = artifact_store(artifacts)?;
    let new = NewRelease {
        sha256: request.sha256,
        git: request.git,
        message: request.message,
        who,
        definition,
        rollback_of: None,
    };
    create(store, &artifacts, &service, new).await.map(Json)
}

fn who(gate: &Gate, os_user: Option<String>) -> String {
    gate.whoami()
        .ok()
        .and_then(|c| c.name().map(str::to_owned))
        .or(os_user.filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

async fn current_definition(store: &Store, service: &str) -> ApiResult<ServiceDefinition> {
    match store.get(&keys::service(service)).await?.kv {
        Some(kv) => decode(&kv),
        None => {
            Err(ApiError::not_found(format!("service {service} has no definition on the server: run `gantry apply`")))
        }
    }
}

/// Deploys an earlier release's artifact again, as a new release.
#[utoipa::path(post, path = "/v1/releases/{service}/rollback", tag = "deploys",
    params(("service" = String, Path, description = "The service's id.")),
    request_body(content = RollbackRequest, description = "Which version to go back to (default: the stable release before the newest)."),
    responses((status = 200, description = "The new release.", body = Release), Errors),
)]
pub async fn release_rollback(
    gate: Gate,
    Ids(service): Ids<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Release>> {
    check_id("service", &service)?;
    let (store, artifacts) = gate.deploys(&service, true)?;
    let request: RollbackRequest = json_body(&body_bytes(body)?)?;
    let history = releases(store, &service).await?;
    let stable_now = stable(&history).map(|r| r.version);
    let to = match request.to {
        Some(v) => history.iter().map(|(r, _)| r).find(|r| r.version == v).ok_or_else(|| {
            ApiError::not_found(format!("{service} has no release v{v} (the store keeps the newest versions only)"))
        })?,
        None => history
            .iter()
            .map(|(r, _)| r)
            .find(|r| r.status == ReleaseStatus::Succeeded && Some(r.version) != stable_now)
            .ok_or_else(|| {
                ApiError::not_found(format!("{service} has no earlier release that succeeded to go back to"))
            })?,
    };
    let new = NewRelease {
        sha256: to.sha256.clone(),
        git: to.git.clone(),
        message: Some(format!("rollback to v{}", to.version)),
        who: who(&gate, request.os_user),
        definition: to.definition.clone(),
        rollback_of: Some(to.version),
    };
    let artifacts = artifact_store(artifacts)?;
    create(store, &artifacts, &service, new).await.map(Json)
}

/// The releases of a service, newest first, with the stable one and the
/// rollout in progress.
#[utoipa::path(get, path = "/v1/releases/{service}", tag = "deploys",
    params(("service" = String, Path, description = "The service's id.")),
    responses((status = 200, description = "Its history.", body = ReleaseHistory), Errors),
)]
pub async fn release_history(gate: Gate, Ids(service): Ids<String>) -> ApiResult<Json<ReleaseHistory>> {
    check_id("service", &service)?;
    let (store, _) = gate.deploys(&service, false)?;
    let history = releases(store, &service).await?;
    let stable = stable(&history).map(|r| r.version);
    let rollout = store.get(&keys::rollout(&service)).await?.kv.map(|kv| decode(&kv)).transpose()?;
    Ok(Json(ReleaseHistory { service, items: history.into_iter().map(|(r, _)| r).collect(), stable, rollout }))
}

/// One release: its metadata, its nodes' outcomes, and how its definition
/// differs from the release before it.
#[utoipa::path(get, path = "/v1/releases/{service}/{version}", tag = "deploys",
    params(("service" = String, Path, description = "The service's id."), ("version" = String, Path, description = "`vN` or `N`.")),
    responses((status = 200, description = "The release.", body = ReleaseDetail), Errors),
)]
pub async fn release_show(
    gate: Gate,
    Ids((service, version)): Ids<(String, String)>,
) -> ApiResult<Json<ReleaseDetail>> {
    check_id("service", &service)?;
    let (store, _) = gate.deploys(&service, false)?;
    let number = version
        .strip_prefix('v')
        .unwrap_or(&version)
        .parse::<u64>()
        .map_err(|_| ApiError::new(ErrorCode::InvalidId, format!("{version:?} is not a version: write v3 or 3")))?;
    let history = releases(store, &service).await?;
    let Some(at) = history.iter().position(|(r, _)| r.version == number) else {
        return Err(ApiError::not_found(format!("{service} has no release v{number}")));
    };
    let release = history[at].0.clone();
    let previous = history.get(at + 1).map(|(r, _)| r);
    let pretty = |d: &ServiceDefinition| serde_json::to_string_pretty(d).expect("definitions serialize");
    let definition_diff =
        line_diff(&previous.map(|p| pretty(&p.definition)).unwrap_or_default(), &pretty(&release.definition));
    Ok(Json(ReleaseDetail { release, previous: previous.map(|p| p.version), definition_diff }))
}

/// A line diff (`-` old, `+` new, ` ` both) by longest common subsequence:
/// definitions are a few dozen lines.
pub fn line_diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!(" {}", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{}", b[j]));
            j += 1;
        } else {
            out.push(format!("-{}", a[i]));
            i += 1;
        }
    }
    out
}

/// The rollout in progress, if any, and the newest release.
#[utoipa::path(get, path = "/v1/rollouts/{service}", tag = "deploys",
    params(("service" = String, Path, description = "The service's id.")),
    responses((status = 200, description = "Its rollout and newest release.", body = RolloutStatus), Errors),
)]
pub async fn rollout_status(gate: Gate, Ids(service): Ids<String>) -> ApiResult<Json<RolloutStatus>> {
    check_id("service", &service)?;
    let (store, _) = gate.deploys(&service, false)?;
    let rollout = store.get(&keys::rollout(&service)).await?.kv.map(|kv| decode(&kv)).transpose()?;
    let release = releases(store, &service).await?.into_iter().next().map(|(r, _)| r);
    Ok(Json(RolloutStatus { service, rollout, release }))
}

/// Changes the rollout of `service` in progress with a compare-and-set,
/// once the caller may write the service's deploys.
async fn change_rollout(
    gate: &Gate,
    service: &str,
    change: impl Fn(&mut Rollout) -> ApiResult<()>,
) -> ApiResult<Json<Rollout>> {
    check_id("service", service)?;
    let (store, _) = gate.deploys(service, true)?;
    let key = keys::rollout(service);
    for _ in 0..10 {
        let Some(kv) = store.get(&key).await?.kv else {
            return Err(ApiError::new(ErrorCode::NoRollout, format!("no rollout of {service} is running")));
        };
        let mut rollout: Rollout = decode(&kv)?;
        change(&mut rollout)?;
        let txn = Txn::new().when_mod_revision(&key, kv.mod_revision).put(&key, to_json(&rollout));
        if store.txn(txn).await?.succeeded {
            return Ok(Json(rollout));
        }
    }
    Err(ApiError::new(ErrorCode::CasFailed, format!("the rollout of {service} kept changing: try again")))
}

/// Lets a rollout waiting on its canaries go on to every node.
#[utoipa::path(post, path = "/v1/rollouts/{service}/promote", tag = "deploys",
    params(("service" = String, Path, description = "The service's id.")),
    responses((status = 200, description = "The rollout, promoted.", body = Rollout), Errors),
)]
pub async fn rollout_promote(gate: Gate, Ids(service): Ids<String>) -> ApiResult<Json<Rollout>> {
    change_rollout(&gate, &service, |r| match r.phase {
        RolloutPhase::Reverting => {
            Err(ApiError::new(ErrorCode::NoRollout, format!("the rollout of {service} is reverting")))
        }
        _ => {
            r.promoted = true;
            Ok(())
        }
    })
    .await
}

/// Stops the rollout in progress; nodes already switched go back to the
/// stable release.
#[utoipa::path(post, path = "/v1/rollouts/{service}/abort", tag = "deploys",
    params(("service" = String, Path, description = "The service's id.")),
    responses((status = 200, description = "The rollout, aborting.", body = Rollout), Errors),
)]
pub async fn rollout_abort(gate: Gate, Ids(service): Ids<String>) -> ApiResult<Json<Rollout>> {
    let by = who(&gate, None);
    change_rollout(&gate, &service, |r| {
        r.reason = r.reason.take().or_else(|| Some(format!("aborted by {by}")));
        r.aborted = true;
        Ok(())
    })
    .await
}

/// What each service on a node is told to run and what its agent reports.
#[utoipa::path(get, path = "/v1/agents/{machine}/releases", tag = "deploys",
    params(("machine" = String, Path, description = "The machine's id.")),
    responses((status = 200, description = "Its services' releases.", body = MachineReleases), Errors),
)]
pub async fn machine_releases(gate: Gate, Ids(machine): Ids<String>) -> ApiResult<Json<MachineReleases>> {
    check_id("machine", &machine)?;
    let range = gate.range(&keys::agent(&machine), None).await?;
    let mut services: BTreeMap<String, MachineRelease> = BTreeMap::new();
    for kv in &range.kvs {
        match StoreKey::parse(&kv.key) {
            Some(StoreKey::Agent { key: AgentKeyRef::Release(service), .. }) => {
                let target: ReleaseTarget = decode(kv)?;
                services.entry(service.to_owned()).or_insert(MachineRelease { target: None, reported: None }).target =
                    Some(target.version);
            }
            Some(StoreKey::Agent { key: AgentKeyRef::Status, .. }) => {
                let status: AgentStatus = decode(kv)?;
                for (service, reported) in status.releases {
                    services.entry(service).or_insert(MachineRelease { target: None, reported: None }).reported =
                        Some(reported);
                }
            }
            _ => {}
        }
    }
    Ok(Json(MachineReleases { machine, services }))
}
