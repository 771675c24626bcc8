//! What an agent knows of the source of truth: a local copy of the groups,
//! service definitions, instances, datastores and its own control keys,
//! filled by one read and kept current by applying watch events in order
//! (the list-then-watch pattern).
//!
//! Pure: no IO. Applying events is idempotent and order-preserving, so the
//! copy converges on the store's state whatever revision the first read
//! saw, as long as the watch starts at or before it.

use std::collections::BTreeMap;

use gantry_api::keys::{AgentKeyRef, StoreKey};
use gantry_api::{
    Allocation, DeployRequest, DesiredState, Group, Instance, ListenerSwitch, ReleaseTarget, ServiceControl,
};
use gantry_spec::Service;

/// What a change touched, to know what to redo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Touched {
    /// Groups, service definitions, instances or datastores: re-resolve.
    pub world: bool,
    /// This agent's listener switch or deploy request.
    pub control: bool,
    /// A local service's process or health check changed.
    pub health: bool,
}

impl Touched {
    pub const ALL: Touched = Touched { world: true, control: true, health: true };

    pub fn any(self) -> bool {
        self.world || self.control || self.health
    }
    pub fn merge(&mut self, other: Touched) {
        self.world |= other.world;
        self.control |= other.control;
        self.health |= other.health;
    }
}

/// The agent's copy of the store.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// This agent's machine id: which `agents/<id>/` keys are its own.
    pub machine: String,
    pub groups: BTreeMap<String, Group>,
    pub services: BTreeMap<String, Service>,
    /// Definitions that did not parse, with the reason, by service id.
    pub broken_services: BTreeMap<String, String>,
    /// By store key (`instances/<service>/<id>`).
    pub instances: BTreeMap<String, Instance>,
    pub datastores: BTreeMap<String, String>,
    /// `agents/<machine>/listener`: `Some(false)` turns the listener off.
    pub listener_enabled: Option<bool>,
    /// `agents/<machine>/deploy`: the newest deploy request.
    pub deploy: Option<DeployRequest>,
    /// `agents/<machine>/service/<id>`: stop/start/restart requests by service id.
    pub service_control: BTreeMap<String, ServiceControl>,
    /// `allocs/<machine>/<id>`: the scheduled work placed here that should
    /// run, by allocation id.
    pub allocations: BTreeMap<String, Allocation>,
    /// `agents/<machine>/release/<id>`: the release each service runs here.
    pub releases: BTreeMap<String, ReleaseTarget>,
}

/// Each service once, in first-seen order (several allocations of one
/// service share its frontend and its watches).
pub fn distinct<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<&'a Service> {
    let mut out: Vec<&Service> = Vec::new();
    for service in services {
        if !out.iter().any(|s| s.id == service.id) {
            out.push(service);
        }
    }
    out
}

/// One thing this node runs: a static service (its group's run list or
/// `--service`) or one allocation of a scheduled service.
#[derive(Debug, Clone)]
pub struct Unit<'a> {
    /// What the agent calls it: the service id, or the allocation id. Its
    /// process, env files and log are named after it.
    pub name: String,
    pub service: &'a Service,
    /// The port the scheduler assigned (allocations); static services use
    /// their own `PORT` or one the agent assigns.
    pub port: Option<u16>,
    /// The id its instance is registered under: the machine's for a static
    /// service, the allocation's for scheduled work.
    pub instance: String,
    /// The allocation it runs, if it is scheduled work.
    pub allocation: Option<String>,
}

impl World {
    pub fn new(machine: &str) -> World {
        World { machine: machine.to_owned(), ..World::default() }
    }

    /// Applies a put (`Some(value)`) or delete (`None`) of store key `key`.
    /// Keys the agent does not follow are ignored.
    pub fn apply(&mut self, key: &str, value: Option<&str>) -> Touched {
        let world = Touched { world: true, ..Touched::default() };
        let Some(parsed) = StoreKey::parse(key) else { return Touched::default() };
        match parsed {
            StoreKey::Group(name) => {
                match value.and_then(|v| serde_json::from_str::<Group>(v).ok()) {
                    Some(group) => self.groups.insert(name.to_owned(), group),
                    None => self.groups.remove(name),
                };
                world
            }
            StoreKey::Service(id) => {
                self.services.remove(id);
                self.broken_services.remove(id);
                if let Some(text) = value {
                    match gantry_spec::parse_service_json(id, text) {
                        Ok(service) => {
                            self.services.insert(id.to_owned(), service);
                        }
                        Err(e) => {
                            self.broken_services.insert(id.to_owned(), e.to_string());
                        }
                    }
                }
                world
            }
            StoreKey::Instance { .. } => {
                match value.and_then(|v| serde_json::from_str::<Instance>(v).ok()) {
                    Some(instance) => self.instances.insert(key.to_owned(), instance),
                    None => self.instances.remove(key),
                };
                world
            }
            StoreKey::Datastore(name) => {
                match value {
                    Some(v) => self.datastores.insert(name.to_owned(), v.to_owned()),
                    None => self.datastores.remove(name),
                };
                world
            }
            StoreKey::Agent { machine, key } if machine == self.machine => self.apply_control(key, value),
            StoreKey::Alloc { machine, id } if machine == self.machine => {
                match value.and_then(|v| serde_json::from_str::<Allocation>(v).ok()) {
                    Some(alloc) if alloc.desired == DesiredState::Run => self.allocations.insert(id.to_owned(), alloc),
                    _ => self.allocations.remove(id),
                };
                world
            }
            StoreKey::Agent { .. }
            | StoreKey::Alloc { .. }
            | StoreKey::Job(_)
            | StoreKey::Eligibility(_)
            | StoreKey::Release { .. }
            | StoreKey::Rollout(_)
            | StoreKey::Machine(_)
            | StoreKey::Kv(_)
            | StoreKey::AclToken(_)
            | StoreKey::AclPolicy(_)
            | StoreKey::AclLease(_)
            | StoreKey::AclBootstrap => Touched::default(),
        }
    }

    /// One of this agent's own control documents.
    fn apply_control(&mut self, key: AgentKeyRef<'_>, value: Option<&str>) -> Touched {
        let control = Touched { control: true, ..Touched::default() };
        match key {
            AgentKeyRef::Listener => {
                self.listener_enabled =
                    value.and_then(|v| serde_json::from_str::<ListenerSwitch>(v).ok()).map(|s| s.enabled);
                control
            }
            AgentKeyRef::Deploy => {
                self.deploy = value.and_then(|v| serde_json::from_str(v).ok());
                control
            }
            AgentKeyRef::Service(id) => {
                match value.and_then(|v| serde_json::from_str::<ServiceControl>(v).ok()) {
                    Some(c) => self.service_control.insert(id.to_owned(), c),
                    None => self.service_control.remove(id),
                };
                // Starting a held service needs its environment: redo the services too.
                Touched { world: true, control: true, health: false }
            }
            AgentKeyRef::Release(id) => {
                match value.and_then(|v| serde_json::from_str::<ReleaseTarget>(v).ok()) {
                    Some(target) => self.releases.insert(id.to_owned(), target),
                    None => self.releases.remove(id),
                };
                control
            }
            // Its own status and usage are what it publishes, not inputs.
            AgentKeyRef::Status | AgentKeyRef::Usage => Touched::default(),
        }
    }

    /// The services this machine runs: its group's, then `extra`, each once.
    /// Ids with no (valid) definition yet are left out and reported.
    pub fn local_services(&self, group: Option<&str>, extra: &[String]) -> (Vec<&Service>, Vec<String>) {
        let mut ids: Vec<&str> = Vec::new();
        let mut problems = Vec::new();
        if let Some(name) = group {
            match self.groups.get(name) {
                Some(g) => ids.extend(g.services.iter().map(String::as_str)),
                None => problems.push(format!("group {name:?} is not on the server: run `gantry apply`")),
            }
        }
        ids.extend(extra.iter().map(String::as_str));
        let mut out: Vec<&Service> = Vec::new();
        for id in ids {
            if out.iter().any(|s| s.id == id) {
                continue;
            }
            match (self.services.get(id), self.broken_services.get(id)) {
                (Some(service), _) => out.push(service),
                (None, Some(why)) => problems.push(format!("service {id:?} has an invalid definition: {why}")),
                (None, None) => problems.push(format!("service {id:?} is not on the server: run `gantry apply`")),
            }
        }
        (out, problems)
    }

    /// Everything this machine runs: its static services (as
    /// [`World::local_services`]), then each allocation placed here.
    pub fn local_units(&self, group: Option<&str>, extra: &[String]) -> (Vec<Unit<'_>>, Vec<String>) {
        let (services, mut problems) = self.local_services(group, extra);
        let mut units: Vec<Unit<'_>> = services
            .into_iter()
            .map(|service| Unit {
                name: service.id.clone(),
                service,
                port: None,
                instance: self.machine.clone(),
                allocation: None,
            })
            .collect();
        for (id, alloc) in &self.allocations {
            match (self.services.get(&alloc.service), self.broken_services.get(&alloc.service)) {
                (Some(service), _) if !units.iter().any(|u| u.name == *id) => units.push(Unit {
                    name: id.clone(),
                    service,
                    port: Some(alloc.port),
                    instance: id.clone(),
                    allocation: Some(id.clone()),
                }),
                (Some(_), _) => problems.push(format!("allocation {id}: its id is also a static service's here")),
                (None, Some(why)) => problems
                    .push(format!("allocation {id}: service {:?} has an invalid definition: {why}", alloc.service)),
                (None, None) => {
                    problems.push(format!("allocation {id}: service {:?} is not on the server", alloc.service))
                }
            }
        }
        (units, problems)
    }
}
