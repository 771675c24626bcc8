//! The release controller: one server at a time (the holder of the
//! lease-held `deploys/leader` key, campaigned for as the scheduler does)
//! follows rollouts and agents' statuses, and on each change, and every
//! [`TICK`] for deadlines, advances every rollout one [`rollout::step`]:
//! it tells nodes which release to run (`agents/<machine>/release/<service>`),
//! records each node's outcome in the release, and when the rollout is over
//! writes the release's status and removes the rollout. Every write is a
//! transaction guarded by the leader key's revision. Everything lives in
//! the store, so a server that takes over (or restarts) carries on from
//! where the last one left off.
//!
//! Between rollouts it converges: a node that runs a service with a stable
//! release but has never been told one (a new node, a moved allocation)
//! is told the stable release.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_api::keys::{self, AgentKeyRef, StoreKey};
use gantry_api::{Release, ReleaseStatus, ReleaseTarget, Rollout, now_ms};
use gantry_store::{Store, StoreError, Txn};

use super::rollout::{self, NodeView};
use super::{parse_definition, prune, releases, stable, statuses, target_of, to_json};
use crate::deploys::artifacts::ArtifactStore;
use crate::scheduling::scheduler::{Follow, Next, Term, campaign, follow_while_leading};

/// The key the release controller's leader holds under its lease.
pub const LEADER_KEY: &str = "deploys/leader";
/// How often rollouts are looked at without a change (deadlines).
const TICK: Duration = Duration::from_millis(500);
const DEBOUNCE: Duration = Duration::from_millis(20);
const LEADER_TTL: Duration = Duration::from_secs(5);

/// Runs the controller on `store` until the store closes.
pub fn spawn(
    store: Store,
    id: String,
    artifacts: Option<std::sync::Arc<dyn ArtifactStore>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match campaign(&store, LEADER_KEY, &id, LEADER_TTL).await {
                Ok(term) => {
                    eprintln!("gantry server: {id} leads deploys");
                    let outcome = lead(&store, term, artifacts.as_deref()).await;
                    let _ = store.revoke_lease(term.lease).await;
                    match outcome {
                        Err(StoreError::Closed) => return,
                        Err(e) => eprintln!("gantry server: deploys stopped: {e}; campaigning again"),
                        Ok(()) => eprintln!("gantry server: lost the deploys lead; campaigning again"),
                    }
                }
                Err(StoreError::Closed) => return,
                Err(e) => eprintln!("gantry server: campaigning for the deploys lead: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

async fn lead(store: &Store, term: Term, artifacts: Option<&dyn ArtifactStore>) -> Result<(), StoreError> {
    let prefixes = [keys::ROLLOUTS, keys::AGENTS];
    let follow = Follow { prefixes: &prefixes, matters, ttl: LEADER_TTL, debounce: DEBOUNCE, tick: Some(TICK) };
    follow_while_leading(store, term, follow, || async {
        match evaluate(store, term, artifacts).await {
            Ok(true) => Next::At(None),
            Ok(false) => Next::Lost,
            Err(e) => {
                eprintln!("gantry server: deploys: {e}; trying again");
                Next::At(None)
            }
        }
    })
    .await
}

/// Rollouts, and agents' statuses and release targets (not their usage).
fn matters(key: &str) -> bool {
    matches!(
        StoreKey::parse(key),
        Some(StoreKey::Rollout(_)) | Some(StoreKey::Agent { key: AgentKeyRef::Status | AgentKeyRef::Release(_), .. })
    )
}

/// One pass over every rollout, then convergence. `Ok(false)`: no longer leader.
async fn evaluate(store: &Store, term: Term, artifacts: Option<&dyn ArtifactStore>) -> Result<bool, String> {
    let statuses = statuses(store).await.map_err(|e| e.message)?;
    let agents = store.range(keys::AGENTS, None).await.map_err(|e| e.to_string())?;
    let mut targets: BTreeMap<(String, String), u64> = BTreeMap::new();
    for kv in &agents.kvs {
        if let Some(StoreKey::Agent { machine, key: AgentKeyRef::Release(service) }) = StoreKey::parse(&kv.key)
            && let Ok(target) = serde_json::from_slice::<ReleaseTarget>(&kv.value)
        {
            targets.insert((machine.to_owned(), service.to_owned()), target.version);
        }
    }
    let rollouts = store.range(keys::ROLLOUTS, None).await.map_err(|e| e.to_string())?;
    let mut rolling = std::collections::BTreeSet::new();
    for kv in &rollouts.kvs {
        let Some(StoreKey::Rollout(service)) = StoreKey::parse(&kv.key) else { continue };
        rolling.insert(service.to_owned());
        let Ok(rollout) = serde_json::from_slice::<Rollout>(&kv.value) else {
            eprintln!("gantry server: deploys: the rollout of {service} does not decode; leaving it");
            continue;
        };
        match advance(store, term, rollout, kv.mod_revision, &statuses, artifacts).await {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => eprintln!("gantry server: deploys: {service}: {e}"),
        }
    }
    converge(store, term, &statuses, &targets, &rolling).await
}

/// Advances one rollout and writes what changed. `Ok(false)`: not leader.
async fn advance(
    store: &Store,
    term: Term,
    mut rollout: Rollout,
    revision: u64,
    statuses: &BTreeMap<String, gantry_api::AgentStatus>,
    artifacts: Option<&dyn ArtifactStore>,
) -> Result<bool, String> {
    let service = rollout.service.clone();
    let release_key = keys::release(&service, rollout.version);
    let kv = store.get(&release_key).await.map_err(|e| e.to_string())?.kv;
    let Some(kv) = kv else { return Err(format!("release v{} is gone; leaving its rollout", rollout.version)) };
    let mut release: Release = serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
    let deploy = parse_definition(&release.definition)?.deploy;
    let target = target_of(&release, &deploy);
    let views: BTreeMap<String, NodeView> = rollout
        .nodes
        .iter()
        .filter_map(|n| {
            let status = statuses.get(&n.machine)?;
            Some((
                n.machine.clone(),
                NodeView {
                    running: status.services.contains(&service),
                    report: status.releases.get(&service).cloned(),
                },
            ))
        })
        .collect();
    let before = (rollout.clone(), release.status, release.nodes.clone());
    let step = rollout::step(&mut rollout, &target, &deploy.update, &views, now_ms());
    release.nodes.clone_from(&rollout.nodes);
    release.status = step.finished.as_ref().map_or_else(|| rollout::Step::status(&rollout), |(s, _)| *s);
    if let Some((_, reason)) = &step.finished {
        release.reason.clone_from(reason);
        release.finished_ms = Some(now_ms());
    }
    if step.tell.is_empty()
        && step.finished.is_none()
        && before == (rollout.clone(), release.status, release.nodes.clone())
    {
        return Ok(true);
    }
    let rollout_key = keys::rollout(&service);
    let mut txn = Txn::new()
        .when_mod_revision(crate::deploys::controller::LEADER_KEY, term.revision)
        .when_mod_revision(&rollout_key, revision)
        .put(&release_key, to_json(&release));
    for (machine, target) in &step.tell {
        txn = txn.put(gantry_api::keys::AgentKey::Release(service.clone()).of(machine), to_json(target));
    }
    let rolled_back = match (&step.finished, release.rollback_of, &rollout.stable) {
        (Some((ReleaseStatus::Succeeded, _)), Some(of), Some(previous)) => Some((of, previous.version)),
        _ => None,
    };
    // In the same transaction: whoever sees the rollback succeeded sees
    // the release it replaced rolled back.
    if let Some((of, previous)) = rolled_back
        && let Some((key, revision, replaced)) =
            rolled_back_record(store, &service, previous, rollout.version, of).await
    {
        txn = txn.when_mod_revision(&key, revision).put(&key, to_json(&replaced));
    }
    txn = if step.finished.is_some() { txn.delete(&rollout_key) } else { txn.put(&rollout_key, to_json(&rollout)) };
    let written = store.txn(txn).await.map_err(|e| e.to_string())?;
    if !written.succeeded {
        // Lost the lead, or the rollout changed (promote, abort): the next pass reads it again.
        let leader = store.get(LEADER_KEY).await.map_err(|e| e.to_string())?.kv;
        return Ok(leader.is_some_and(|kv| kv.mod_revision == term.revision));
    }
    if let Some((status, _)) = &step.finished {
        eprintln!("gantry server: deploys: {service} v{} {}", rollout.version, status.word());
    }
    if step.finished.is_some()
        && let Some(artifacts) = artifacts
    {
        prune(store, artifacts, &service, gantry_api::release::defaults::KEEP_VERSIONS).await;
    }
    Ok(true)
}

/// The release a `deploy:rollback` (v`by`, to v`to`) replaced, marked
/// rolled back: its key, the revision it was read at and the new record;
/// `None` when there is nothing to mark.
async fn rolled_back_record(
    store: &Store,
    service: &str,
    previous: u64,
    by: u64,
    to: u64,
) -> Option<(String, u64, Release)> {
    let key = keys::release(service, previous);
    let kv = store.get(&key).await.ok()?.kv?;
    let mut release = serde_json::from_slice::<Release>(&kv.value).ok()?;
    if release.status != ReleaseStatus::Succeeded || previous == to {
        return None;
    }
    release.status = ReleaseStatus::RolledBack;
    release.reason = Some(format!("rolled back to v{to} by v{by}"));
    Some((key, kv.mod_revision, release))
}

/// Tells every node that runs a service with a stable release, and was
/// never told one, to run it (no rollout of the service being in progress).
async fn converge(
    store: &Store,
    term: Term,
    statuses: &BTreeMap<String, gantry_api::AgentStatus>,
    targets: &BTreeMap<(String, String), u64>,
    rolling: &std::collections::BTreeSet<String>,
) -> Result<bool, String> {
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (machine, status) in statuses {
        for service in &status.services {
            if !rolling.contains(service) && !targets.contains_key(&(machine.clone(), service.clone())) {
                wanted.entry(service.clone()).or_default().push(machine.clone());
            }
        }
    }
    for (service, machines) in wanted {
        let history = releases(store, &service).await.map_err(|e| e.message)?;
        let Some(stable) = stable(&history) else { continue };
        let Ok(definition) = parse_definition(&stable.definition) else { continue };
        let target = target_of(stable, &definition.deploy);
        let mut txn =
            Txn::new().when_mod_revision(LEADER_KEY, term.revision).when_mod_revision(keys::rollout(&service), 0);
        for machine in &machines {
            txn = txn.put(gantry_api::keys::AgentKey::Release(service.clone()).of(machine), to_json(&target));
        }
        let written = store.txn(txn).await.map_err(|e| e.to_string())?;
        if !written.succeeded {
            let leader = store.get(LEADER_KEY).await.map_err(|e| e.to_string())?.kv;
            if leader.is_none_or(|kv| kv.mod_revision != term.revision) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
