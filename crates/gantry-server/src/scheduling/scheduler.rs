//! The scheduler loop: one server at a time (the holder of a lease-held
//! leader key) reads the cluster from the store, asks `gantry-sched` for a
//! plan, and writes it: new allocations, stopped ones, and each scheduled
//! service's evaluation (`jobs/<service>`).
//!
//! Every write of a plan is a transaction guarded by the leader key's
//! revision (a server that lost the lead has its plan rejected, never
//! applied) and by the revision of every node record the plan touches (a
//! node that went away or changed since the read makes the plan stale: it
//! is read and planned again).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use gantry_api::keys::{self, AgentKeyRef, StoreKey};
use gantry_api::{
    AgentStatus, Allocation, DesiredState, JobPlan, JobStatus, Machine, NodeEligibility, PlannedPending,
    PlannedPlacement, PlannedStop, now_ms,
};
use gantry_sched::model::{self as sched, Desired, Eligibility, Input, Job, Node, Resources};
use gantry_sched::plan::{PlaceReason, Plan};
use gantry_store::{EventKind, KeyValue, LeaseId, Store, StoreError, Txn};

/// The key the scheduling leader holds under its lease.
pub const LEADER_KEY: &str = "scheduler/leader";

/// Writes per transaction: the store takes at most 128 operations and 128
/// comparisons; a plan larger than this is written in several.
const OPS_PER_TXN: usize = 100;

/// After a change, how long to gather more before planning.
const DEBOUNCE: Duration = Duration::from_millis(25);

/// How a server takes part in scheduling.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This server's name in the leader key (`gantry status` shows it).
    pub id: String,
    /// The leader lease's time to live: how soon another server takes over
    /// from one that died.
    pub leader_ttl: Duration,
}

impl SchedulerConfig {
    pub fn new(id: impl Into<String>) -> SchedulerConfig {
        SchedulerConfig { id: id.into(), leader_ttl: Duration::from_secs(5) }
    }
}

/// Runs the scheduler on `store` until the store closes: campaigns for the
/// lead, and while it holds it, plans whenever the cluster changes.
pub fn spawn(store: Store, config: SchedulerConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match campaign(&store, LEADER_KEY, &config.id, config.leader_ttl).await {
                Ok(term) => {
                    eprintln!("gantry server: {} leads scheduling", config.id);
                    let outcome = lead(&store, &config, term).await;
                    let _ = store.revoke_lease(term.lease).await;
                    match outcome {
                        Err(StoreError::Closed) => return,
                        Err(e) => eprintln!("gantry server: scheduling stopped: {e}; campaigning again"),
                        Ok(()) => eprintln!("gantry server: lost the scheduling lead; campaigning again"),
                    }
                }
                Err(StoreError::Closed) => return,
                Err(e) => eprintln!("gantry server: campaigning for the scheduling lead: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// The lead, once won: its lease, and the leader key's revision every
/// write is guarded by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Term {
    pub lease: LeaseId,
    pub revision: u64,
}

/// Waits until this server (`id`) holds the leader key `key`, under a
/// lease of `ttl` (the scheduler's, the release controller's).
pub(crate) async fn campaign(store: &Store, key: &str, id: &str, ttl: Duration) -> Result<Term, StoreError> {
    loop {
        let lease = store.grant_lease(ttl).await?;
        let claim = Txn::new().when_mod_revision(key, 0).put_with_lease(key, id.as_bytes().to_vec(), lease.id);
        let claimed = store.txn(claim).await?;
        if claimed.succeeded {
            return Ok(Term { lease: lease.id, revision: claimed.revision });
        }
        let _ = store.revoke_lease(lease.id).await;
        // Someone leads: wait for the key to go (its lease lapses when that
        // server dies), then try again.
        let current = store.get(key).await?;
        if current.kv.is_none() {
            continue;
        }
        let mut watch = store.watch(key, current.revision + 1).await?;
        while let Some(event) = watch.next().await {
            if event?.kind == EventKind::Delete {
                break;
            }
        }
    }
}

/// What changes what the scheduler decides.
const FOLLOWED: [&str; 5] = [keys::SERVICES, keys::MACHINES, keys::ALLOCS, keys::AGENTS, keys::ELIGIBILITY];

/// Plans while this server leads: at once, after every relevant change,
/// and when a delayed reschedule falls due.
async fn lead(store: &Store, config: &SchedulerConfig, term: Term) -> Result<(), StoreError> {
    let follow = Follow { prefixes: &FOLLOWED, matters, ttl: config.leader_ttl, debounce: DEBOUNCE, tick: None };
    follow_while_leading(store, term, follow, || async {
        match evaluate(store, term).await {
            Ok(Evaluated::Applied { next }) => Next::At(next.map(|secs| {
                let wait = secs.saturating_sub(now_ms() / 1000);
                tokio::time::Instant::now() + Duration::from_secs(wait)
            })),
            // Something changed under the plan: read and plan again.
            Ok(Evaluated::Stale) => Next::At(Some(tokio::time::Instant::now())),
            Ok(Evaluated::NotLeader) => Next::Lost,
            Err(e) => {
                eprintln!("gantry server: scheduling: {e}; trying again");
                Next::At(Some(tokio::time::Instant::now() + Duration::from_millis(500)))
            }
        }
    })
    .await
}

/// What a leader's loop follows (see [`follow_while_leading`]).
pub(crate) struct Follow<'a> {
    pub prefixes: &'a [&'a str],
    /// Whether a change of a key calls for a step.
    pub matters: fn(&str) -> bool,
    /// The leader lease's TTL (kept alive at a third of it).
    pub ttl: Duration,
    /// After a change, how long to gather more before the step.
    pub debounce: Duration,
    /// A step at least this often, for deadlines.
    pub tick: Option<Duration>,
}

/// What a leader's step says about the next one.
pub(crate) enum Next {
    /// Step again then (or after the next change, or tick).
    At(Option<tokio::time::Instant>),
    /// No longer the leader.
    Lost,
}

/// The loop of a lease-held leader (the scheduler, the release
/// controller): a step at once, after every change of the followed
/// prefixes that matters (debounced), at each tick, and when the last step
/// asked; the lease kept alive meanwhile. Returns when the lead is lost.
pub(crate) async fn follow_while_leading<F, Fut>(
    store: &Store,
    term: Term,
    follow: Follow<'_>,
    mut step: F,
) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Next>,
{
    let from = store.revision().await? + 1;
    let mut watches = Vec::new();
    for prefix in follow.prefixes {
        watches.push(store.watch(prefix, from).await?);
    }
    let mut changes = futures::stream::select_all(watches);
    let mut keep_alive = tokio::time::interval(follow.ttl / 3);
    keep_alive.reset();
    let mut tick = tokio::time::interval(follow.tick.unwrap_or(Duration::from_secs(3600)));
    let mut due = Some(tokio::time::Instant::now());
    loop {
        let wait = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = changes.next() => match event {
                Some(Ok(event)) if (follow.matters)(&event.key) => {
                    due.get_or_insert_with(|| tokio::time::Instant::now() + follow.debounce);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(StoreError::Closed),
            },
            _ = keep_alive.tick() => {
                if store.keep_alive(term.lease).await.is_err() {
                    return Ok(());
                }
            }
            _ = tick.tick(), if follow.tick.is_some() => {
                due.get_or_insert_with(tokio::time::Instant::now);
            }
            () = wait => {
                due = match step().await {
                    Next::At(at) => at,
                    Next::Lost => return Ok(()),
                };
            }
        }
    }
}

/// Whether a change of `key` can change a plan: not the usage agents
/// publish every few seconds, nor the leader key.
fn matters(key: &str) -> bool {
    !matches!(StoreKey::parse(key), Some(StoreKey::Agent { key: AgentKeyRef::Usage, .. }) | None)
}

enum Evaluated {
    /// Written (or nothing to write); plan again at `next` (Unix seconds)
    /// if nothing changes before.
    Applied {
        next: Option<u64>,
    },
    Stale,
    NotLeader,
}

async fn evaluate(store: &Store, term: Term) -> Result<Evaluated, StoreError> {
    let snapshot = Snapshot::read(store).await?;
    let now_s = now_ms() / 1000;
    let input = snapshot.input(now_s);
    let plan = gantry_sched::plan(&input);
    apply(store, term, &snapshot, &plan).await
}

/// The plan the scheduler would make for `proposed` if it were written
/// now, for that service only; nothing is written.
pub(crate) async fn dry_run(store: &Store, proposed: gantry_spec::Service) -> Result<JobPlan, StoreError> {
    let mut snapshot = Snapshot::read(store).await?;
    let shape = |s: &gantry_spec::Service| serde_json::to_value(s).ok();
    let id = proposed.id.clone();
    let changed = snapshot.services.get(&id).is_none_or(|(current, _)| shape(current) != shape(&proposed));
    let version = version_of(&proposed);
    snapshot.services.insert(id.clone(), (proposed, version));
    let mut input = snapshot.input(now_ms() / 1000);
    input.sequence = snapshot.revision + 1;
    let plan = gantry_sched::plan(&input);
    Ok(JobPlan {
        service: id.clone(),
        changed,
        place: plan
            .place
            .iter()
            .filter(|p| p.job == id)
            .map(|p| PlannedPlacement {
                index: p.index,
                machine: p.node.clone(),
                port: p.port,
                reason: reason_word(p.reason).to_owned(),
                replaces: p.replaces.clone(),
                score: p.score,
                explanation: p.explanation.clone(),
            })
            .collect(),
        stop: plan
            .stop
            .iter()
            .filter(|s| s.job == id)
            .map(|s| PlannedStop { allocation: s.alloc.clone(), machine: s.node.clone(), reason: s.reason.to_string() })
            .collect(),
        pending: plan
            .pending
            .iter()
            .filter(|p| p.job == id)
            .map(|p| PlannedPending { count: p.count, reason: p.to_string() })
            .collect(),
    })
}

/// The version of what an allocation of `service` runs: a digest of its
/// definition without the keys that only say where and how many
/// (`count`, `constraints`, `spread`, `strategy`, `reschedule`). A new
/// command, environment or check replaces the running allocations; a new
/// count only adds or stops some. Stable across releases (SHA-256 of the
/// definition's JSON), since it is stored in every allocation.
pub(crate) fn version_of(service: &gantry_spec::Service) -> u64 {
    use sha2::Digest as _;
    let mut runs = service.clone();
    runs.scheduling = None;
    // How it is deployed is not what runs: a changed rollout stanza moves nothing.
    runs.deploy = gantry_spec::Deploy::default();
    let digest = sha2::Sha256::digest(serde_json::to_vec(&runs).expect("a definition serializes"));
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The cluster as one evaluation read it.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The newest revision of the reads: new allocations' ids carry it.
    revision: u64,
    /// Machine id -> its record and the record's revision (the CAS guard).
    machines: BTreeMap<String, (Machine, u64)>,
    statuses: BTreeMap<String, AgentStatus>,
    /// Service id -> its parsed definition and version ([`version_of`]).
    services: BTreeMap<String, (gantry_spec::Service, u64)>,
    allocations: BTreeMap<String, Allocation>,
    eligibility: BTreeMap<String, NodeEligibility>,
    jobs: BTreeMap<String, JobStatus>,
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    serde_json::from_slice(&kv.value).ok()
}

impl Snapshot {
    pub(crate) async fn read(store: &Store) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot::default();
        let machines = store.range(keys::MACHINES, None).await?;
        let agents = store.range(keys::AGENTS, None).await?;
        let services = store.range(keys::SERVICES, None).await?;
        let allocations = store.range(keys::ALLOCS, None).await?;
        let eligibility = store.range(keys::ELIGIBILITY, None).await?;
        let jobs = store.range(keys::JOBS, None).await?;
        snapshot.revision = [&machines, &agents, &services, &allocations, &eligibility, &jobs]
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(0);
        for kv in &machines.kvs {
            if let Some(machine) = decode::<Machine>(kv) {
                snapshot.machines.insert(machine.id.clone(), (machine, kv.mod_revision));
            }
        }
        for kv in &agents.kvs {
            if let Some(StoreKey::Agent { key: AgentKeyRef::Status, .. }) = StoreKey::parse(&kv.key)
                && let Some(status) = decode::<AgentStatus>(kv)
            {
                snapshot.statuses.insert(status.machine.clone(), status);
            }
        }
        for kv in &services.kvs {
            let (Some(StoreKey::Service(id)), Ok(text)) = (StoreKey::parse(&kv.key), std::str::from_utf8(&kv.value))
            else {
                continue;
            };
            // A definition that does not parse is not scheduled (the API
            // refuses such definitions; this is a store written by hand).
            if let Ok(service) = gantry_spec::parse_service_json(id, text) {
                let version = version_of(&service);
                snapshot.services.insert(id.to_owned(), (service, version));
            }
        }
        for kv in &allocations.kvs {
            if let Some(alloc) = decode::<Allocation>(kv) {
                snapshot.allocations.insert(alloc.id.clone(), alloc);
            }
        }
        for kv in &eligibility.kvs {
            if let Some(e) = decode::<NodeEligibility>(kv) {
                snapshot.eligibility.insert(e.machine.clone(), e);
            }
        }
        for kv in &jobs.kvs {
            if let Some(job) = decode::<JobStatus>(kv) {
                snapshot.jobs.insert(job.service.clone(), job);
            }
        }
        Ok(snapshot)
    }

    /// The scheduler's input: every node with a published capacity, every
    /// scheduled service, every allocation with its agent's report.
    pub(crate) fn input(&self, now_s: u64) -> Input {
        let nodes = self
            .machines
            .values()
            .filter_map(|(machine, _)| {
                let capacity = machine.capacity?;
                let allocatable = capacity.allocatable();
                let (reserved, used_ports) = self.static_load(&machine.id);
                Some(Node {
                    id: machine.id.clone(),
                    attributes: attributes(machine),
                    allocatable: Resources::offer(allocatable.cpu, allocatable.memory_mb),
                    reserved,
                    used_ports,
                    alive: true,
                    eligibility: match self.eligibility.get(&machine.id) {
                        Some(e) if e.drain => Eligibility::Draining,
                        Some(e) if !e.eligible => Eligibility::Ineligible,
                        _ => Eligibility::Eligible,
                    },
                })
            })
            .collect();
        let jobs = self
            .services
            .values()
            .filter_map(|(service, version)| {
                let mut job = Job::from_service(service, *version)?;
                // A federation never sees another's services: its work runs
                // on its own nodes only.
                job.constraints.insert(
                    0,
                    sched::Constraint::Attribute {
                        attribute: "federation".to_owned(),
                        test: sched::AttributeTest::Equals(service.federation.clone()),
                    },
                );
                Some(job)
            })
            .collect();
        let allocs = self
            .allocations
            .values()
            .map(|a| {
                let report = self.statuses.get(&a.machine).and_then(|s| s.allocations.get(&a.id));
                let client = match report.map(|r| r.state) {
                    Some(gantry_api::AllocState::Running) => sched::ClientState::Running,
                    Some(gantry_api::AllocState::Failed) => sched::ClientState::Failed,
                    Some(gantry_api::AllocState::Lost) => sched::ClientState::Lost,
                    _ => sched::ClientState::Pending,
                };
                sched::Alloc {
                    id: a.id.clone(),
                    job: a.service.clone(),
                    job_version: a.version,
                    index: a.index,
                    node: a.machine.clone(),
                    resources: Resources::ask(a.resources.cpu, a.resources.memory_mb),
                    port: a.port,
                    desired: match a.desired {
                        DesiredState::Run => Desired::Run,
                        DesiredState::Stop => Desired::Stop,
                    },
                    client,
                    failed_at: report.filter(|r| r.state == gantry_api::AllocState::Failed).map(|r| r.since_ms / 1000),
                    reschedules: a.reschedules.clone(),
                }
            })
            .collect();
        Input { nodes, jobs, allocs, now: now_s, sequence: self.revision }
    }

    /// What a node's static services reserve, and the ports they hold:
    /// the units its agent reports that are not allocations.
    fn static_load(&self, machine: &str) -> (Resources, BTreeSet<u16>) {
        let mut reserved = Resources::ZERO;
        let mut ports = BTreeSet::new();
        if let Some(status) = self.statuses.get(machine) {
            for (name, state) in status.processes.iter().filter(|(n, _)| !status.allocations.contains_key(*n)) {
                ports.insert(state.port);
                if let Some((service, _)) = self.services.get(name) {
                    reserved = reserved
                        + Resources::ask(
                            service.resources.cpu.unwrap_or(0.0),
                            service.resources.memory_mb.unwrap_or(0),
                        );
                }
            }
        }
        (reserved, ports)
    }
}

/// What constraints and spreads test on a node: `group`, `region`,
/// `federation` (from its labels), `label.NAME` for every label, and
/// `fact.NAME` for every scalar fact.
fn attributes(machine: &Machine) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in &machine.labels {
        out.insert(format!("label.{name}"), value.clone());
        if matches!(name.as_str(), "group" | "region" | "federation") {
            out.insert(name.clone(), value.clone());
        }
    }
    out.entry("federation".to_owned()).or_insert_with(|| gantry_api::DEFAULT_FEDERATION.to_owned());
    if let Ok(serde_json::Value::Object(facts)) = serde_json::to_value(&machine.facts) {
        for (name, value) in facts {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            out.insert(format!("fact.{name}"), text);
        }
    }
    out
}

/// Writes `plan`: stops first, placements, then the evaluations that
/// changed, in transactions of at most [`OPS_PER_TXN`] writes, each
/// guarded by the lead and by the records of the nodes it touches.
async fn apply(store: &Store, term: Term, snapshot: &Snapshot, plan: &Plan) -> Result<Evaluated, StoreError> {
    let now = now_ms();
    let mut writes: Vec<(String, Vec<u8>, Option<String>)> = Vec::new();
    for stop in &plan.stop {
        let Some(old) = snapshot.allocations.get(&stop.alloc) else { continue };
        let stopped =
            Allocation { desired: DesiredState::Stop, stop_reason: Some(stop.reason.to_string()), ..old.clone() };
        // A lost node's record is gone: the stop is guarded by the lead only.
        let guard = snapshot.machines.contains_key(&old.machine).then(|| old.machine.clone());
        writes.push((keys::alloc(&old.machine, &old.id), json(&stopped), guard));
    }
    for place in &plan.place {
        let Some((service, _)) = snapshot.services.get(&place.job) else { continue };
        let alloc = Allocation {
            id: place.alloc.clone(),
            service: place.job.clone(),
            federation: service.federation.clone(),
            index: place.index,
            version: place.job_version,
            machine: place.node.clone(),
            resources: gantry_api::Resources {
                cpu: place.resources.cpu_milli as f64 / 1000.0,
                memory_mb: place.resources.memory_mb,
            },
            port: place.port,
            desired: DesiredState::Run,
            stop_reason: None,
            placement: gantry_api::Placement {
                reason: reason_word(place.reason).to_owned(),
                score: place.score,
                explanation: place.explanation.clone(),
            },
            replaces: place.replaces.clone(),
            reschedules: place.reschedules.clone(),
            created_at_ms: now,
        };
        writes.push((keys::alloc(&place.node, &place.alloc), json(&alloc), Some(place.node.clone())));
    }
    for status in job_statuses(snapshot, plan, now) {
        let unchanged = snapshot
            .jobs
            .get(&status.service)
            .is_some_and(|old| JobStatus { evaluated_at_ms: status.evaluated_at_ms, ..old.clone() } == status);
        if !unchanged {
            writes.push((keys::job(&status.service), json(&status), None));
        }
    }
    // A draining node that has nothing left is done: ineligible from now on.
    for record in snapshot.eligibility.values().filter(|e| e.drain) {
        let stopped: BTreeSet<&str> = plan.stop.iter().map(|s| s.alloc.as_str()).collect();
        let left =
            snapshot.allocations.values().any(|a| {
                a.machine == record.machine && a.desired == DesiredState::Run && !stopped.contains(a.id.as_str())
            }) || plan.place.iter().any(|p| p.node == record.machine);
        if !left {
            let done = NodeEligibility { eligible: false, drain: false, updated_at_ms: now, ..record.clone() };
            writes.push((keys::eligibility(&record.machine), json(&done), None));
        }
    }
    // Evaluations of services that are no longer scheduled go.
    let mut deletes: Vec<String> = snapshot
        .jobs
        .keys()
        .filter(|id| snapshot.services.get(*id).is_none_or(|(s, _)| s.scheduling.is_none()))
        .map(|id| keys::job(id))
        .collect();

    for chunk in writes.chunks(OPS_PER_TXN) {
        let mut txn = Txn::new().when_mod_revision(LEADER_KEY, term.revision);
        let guarded: BTreeSet<&String> = chunk.iter().filter_map(|(_, _, guard)| guard.as_ref()).collect();
        for machine in guarded {
            let Some((_, revision)) = snapshot.machines.get(machine) else { return Ok(Evaluated::Stale) };
            txn = txn.when_mod_revision(keys::machine(machine), *revision);
        }
        for (key, value, _) in chunk {
            txn = txn.put(key.clone(), value.clone());
        }
        if let Some(delete) = deletes.pop() {
            txn = txn.delete(delete);
        }
        if !store.txn(txn).await?.succeeded {
            return Ok(if leads(store, term).await? { Evaluated::Stale } else { Evaluated::NotLeader });
        }
    }
    while let Some(delete) = deletes.pop() {
        let txn = Txn::new().when_mod_revision(LEADER_KEY, term.revision).delete(delete);
        if !store.txn(txn).await?.succeeded {
            return Ok(Evaluated::NotLeader);
        }
    }
    Ok(Evaluated::Applied { next: plan.next_evaluation })
}

/// Whether the leader key is still this term's.
async fn leads(store: &Store, term: Term) -> Result<bool, StoreError> {
    Ok(store.get(LEADER_KEY).await?.kv.is_some_and(|kv| kv.mod_revision == term.revision))
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("documents serialize")
}

fn reason_word(reason: PlaceReason) -> &'static str {
    match reason {
        PlaceReason::New => "new",
        PlaceReason::Lost => "lost",
        PlaceReason::Rescheduled => "rescheduled",
        PlaceReason::Drained => "drained",
        PlaceReason::Updated => "updated",
    }
}

/// Each scheduled service's evaluation after `plan`: placed (running
/// allocations kept plus new ones), and what stays pending and why.
fn job_statuses(snapshot: &Snapshot, plan: &Plan, now: u64) -> Vec<JobStatus> {
    snapshot
        .services
        .values()
        .filter_map(|(service, version)| {
            let scheduling = service.scheduling.as_ref()?;
            let stopped: BTreeSet<&str> =
                plan.stop.iter().filter(|s| s.job == service.id).map(|s| s.alloc.as_str()).collect();
            let kept = snapshot
                .allocations
                .values()
                .filter(|a| {
                    a.service == service.id && a.desired == DesiredState::Run && !stopped.contains(a.id.as_str())
                })
                .count();
            let placed = kept + plan.place.iter().filter(|p| p.job == service.id).count();
            let pending: Vec<_> = plan.pending.iter().filter(|p| p.job == service.id).collect();
            Some(JobStatus {
                service: service.id.clone(),
                version: *version,
                desired: scheduling.count,
                placed: u32::try_from(placed).unwrap_or(u32::MAX),
                pending: pending.iter().map(|p| p.count).sum(),
                reason: (!pending.is_empty())
                    .then(|| pending.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
                evaluated_at_ms: now,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use gantry_api::keys::AgentKey;
    use gantry_api::{CapacitySource, NodeCapacity};
    use gantry_store::EmbeddedConfig;

    use super::*;

    fn machine(updated_at: u64) -> Vec<u8> {
        json(&Machine {
            id: "m1".into(),
            hostname: "m1".into(),
            address: "127.0.0.2".into(),
            facts: Default::default(),
            labels: Default::default(),
            updated_at,
            capacity: Some(NodeCapacity {
                total: gantry_api::Resources { cpu: 2.0, memory_mb: 512 },
                source: CapacitySource::Configured,
                reserved: gantry_api::Resources::ZERO,
                scheduled_only: true,
            }),
        })
    }

    async fn claim(store: &Store) -> Term {
        let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
        let claimed = store.txn(Txn::new().put_with_lease(LEADER_KEY, "a", lease.id)).await.unwrap();
        Term { lease: lease.id, revision: claimed.revision }
    }

    /// A plan is written only by the lead it was made under, and only if
    /// the nodes it touches are as it read them.
    #[tokio::test]
    async fn a_lost_lead_or_a_changed_node_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_embedded(EmbeddedConfig::in_dir(dir.path())).await.unwrap();
        store.put(&keys::machine("m1"), machine(1)).await.unwrap();
        let worker = r#"{"id": "w", "command": "sleep 100", "count": 1, "resources": {"cpu": 0.1, "memory_mb": 64}}"#;
        store.put(&keys::service("w"), worker).await.unwrap();
        let allocations = async |store: &Store| store.range(keys::ALLOCS, None).await.unwrap().kvs.len();

        // Another server took the lead after this one read and planned.
        let term = claim(&store).await;
        let snapshot = Snapshot::read(&store).await.unwrap();
        let plan = gantry_sched::plan(&snapshot.input(0));
        assert_eq!(plan.place.len(), 1, "{plan:?}");
        store.put(LEADER_KEY, "b").await.unwrap();
        assert!(matches!(apply(&store, term, &snapshot, &plan).await, Ok(Evaluated::NotLeader)));
        assert_eq!(allocations(&store).await, 0);

        // Leading, but the node's record changed since the read: stale.
        let term = claim(&store).await;
        store.put(&keys::machine("m1"), machine(2)).await.unwrap();
        assert!(matches!(apply(&store, term, &snapshot, &plan).await, Ok(Evaluated::Stale)));
        assert_eq!(allocations(&store).await, 0);

        // Read again and planned again: written, once.
        let snapshot = Snapshot::read(&store).await.unwrap();
        let plan = gantry_sched::plan(&snapshot.input(0));
        assert!(matches!(apply(&store, term, &snapshot, &plan).await, Ok(Evaluated::Applied { .. })));
        assert_eq!(allocations(&store).await, 1);
        let snapshot = Snapshot::read(&store).await.unwrap();
        assert!(gantry_sched::plan(&snapshot.input(0)).is_empty(), "a plan applied is not planned again");
    }

    /// Static services (run lists) and scheduled work share nodes: what the
    /// static ones reserve, and their ports, are not handed out again.
    #[tokio::test]
    async fn static_services_reserve_their_resources_and_ports() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_embedded(EmbeddedConfig::in_dir(dir.path())).await.unwrap();
        store.put(&keys::machine("m1"), machine(1)).await.unwrap();
        let db = r#"{"id": "db", "command": "sleep 100", "environment": {"PORT": 20000}, "resources": {"cpu": 1, "memory_mb": 400}}"#;
        store.put(&keys::service("db"), db).await.unwrap();
        let worker = r#"{"id": "w", "command": "sleep 100", "count": 2, "resources": {"cpu": 0.1, "memory_mb": 100}}"#;
        store.put(&keys::service("w"), worker).await.unwrap();
        // m1's agent runs db (static): 400 of its 512 MB, and port 20000.
        let status = serde_json::json!({"machine": "m1", "services": ["db"], "updated_at_ms": 1,
            "processes": {"db": {"port": 20000, "health": "passing"}}});
        store.put(&AgentKey::Status.of("m1"), status.to_string()).await.unwrap();
        let snapshot = Snapshot::read(&store).await.unwrap();
        let plan = gantry_sched::plan(&snapshot.input(0));
        assert_eq!(plan.place.len(), 1, "one 100 MB worker fits beside db's 400 MB: {plan:?}");
        assert_ne!(plan.place[0].port, 20000, "db's port is taken");
        let pending: Vec<String> = plan.pending.iter().map(ToString::to_string).collect();
        assert!(pending[0].contains("lack memory (need 100 MB, largest free 12 MB)"), "{pending:?}");
    }
}
