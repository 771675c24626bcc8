//! The store's key layout (DESIGN.md "Source of truth"): where each kind of
//! document lives, the constructors that build its keys, and the one parser
//! ([`StoreKey::parse`]) that tells what a key is. Nothing else in Gantry
//! builds or takes apart a store key by hand.
//!
//! ```text
//! machines/<machine>                     Machine
//! groups/<group>                         Group
//! services/<service>                     ServiceDefinition
//! instances/<service>/<instance>         Instance
//! agents/<machine>/status                AgentStatus (under the agent's lease)
//! agents/<machine>/listener              ListenerSwitch
//! agents/<machine>/deploy                DeployRequest
//! agents/<machine>/service/<service>     ServiceControl
//! agents/<machine>/release/<service>     ReleaseTarget (the release controller's)
//! agents/<machine>/usage                 NodeUsage (under the agent's lease)
//! allocs/<machine>/<alloc>               Allocation (the scheduler's; the node's agent runs it)
//! jobs/<service>                         JobStatus (the scheduler's latest evaluation)
//! eligibility/<machine>                  NodeEligibility (node:drain / node:eligible)
//! releases/<service>/v<N>                Release (issue 17)
//! rollouts/<service>                     Rollout (the one in progress)
//! kv/datastores/<NAME>                   a datastore value (free text)
//! kv/<anything else>                     free keys (user data)
//! acl/tokens/<accessor>                  StoredToken (the secret's SHA-256, never the secret)
//! acl/policies/<name>                    Policy
//! acl/leases/<lease id>                  the accessor of the token that granted the lease
//!                                        (under that lease: it goes with it)
//! acl/bootstrap                          the bootstrap token's accessor, once there is one
//! ```

pub const MACHINES: &str = "machines/";
pub const SERVICES: &str = "services/";
pub const INSTANCES: &str = "instances/";
pub const GROUPS: &str = "groups/";
/// Agents' control documents and published status: `agents/<machine>/...`.
pub const AGENTS: &str = "agents/";
pub const KV: &str = "kv/";
/// Scheduled work: `allocs/<machine>/<alloc>`.
pub const ALLOCS: &str = "allocs/";
pub const JOBS: &str = "jobs/";
pub const ELIGIBILITY: &str = "eligibility/";
pub const RELEASES: &str = "releases/";
pub const ROLLOUTS: &str = "rollouts/";
/// KV keys (under [`KV`]) of datastore values: `datastores/<NAME>`.
pub const DATASTORES_KV: &str = "datastores/";
/// Access control's documents.
pub const ACL: &str = "acl/";
pub const ACL_TOKENS: &str = "acl/tokens/";
pub const ACL_POLICIES: &str = "acl/policies/";
pub const ACL_LEASES: &str = "acl/leases/";
pub const ACL_BOOTSTRAP: &str = "acl/bootstrap";

pub fn acl_token(accessor: &str) -> String {
    format!("{ACL_TOKENS}{accessor}")
}
pub fn acl_policy(name: &str) -> String {
    format!("{ACL_POLICIES}{name}")
}
/// Who granted a lease (its id in hex, as the API writes it).
pub fn acl_lease(lease_hex: &str) -> String {
    format!("{ACL_LEASES}{lease_hex}")
}

pub fn machine(id: &str) -> String {
    format!("{MACHINES}{id}")
}
pub fn service(id: &str) -> String {
    format!("{SERVICES}{id}")
}
pub fn instances_of(service: &str) -> String {
    format!("{INSTANCES}{service}/")
}
pub fn instance(service: &str, id: &str) -> String {
    format!("{INSTANCES}{service}/{id}")
}
pub fn group(name: &str) -> String {
    format!("{GROUPS}{name}")
}
/// The prefix of every key of one agent: `agents/<machine>/`.
pub fn agent(machine: &str) -> String {
    format!("{AGENTS}{machine}/")
}
/// The allocations of one node: `allocs/<machine>/`.
pub fn allocs_of(machine: &str) -> String {
    format!("{ALLOCS}{machine}/")
}
pub fn alloc(machine: &str, id: &str) -> String {
    format!("{ALLOCS}{machine}/{id}")
}
pub fn job(service: &str) -> String {
    format!("{JOBS}{service}")
}
/// Every release of `service`: `releases/<service>/`.
pub fn releases_of(service: &str) -> String {
    format!("{RELEASES}{service}/")
}
pub fn release(service: &str, version: u64) -> String {
    format!("{RELEASES}{service}/v{version}")
}
pub fn rollout(service: &str) -> String {
    format!("{ROLLOUTS}{service}")
}
/// The version in a release key's last segment (`v12` -> 12).
pub fn parse_version(segment: &str) -> Option<u64> {
    let digits = segment.strip_prefix('v')?;
    (!digits.starts_with('0') || digits == "0").then_some(())?;
    digits.parse().ok()
}
pub fn eligibility(machine: &str) -> String {
    format!("{ELIGIBILITY}{machine}")
}
/// The store key of a KV key (`datastores/X` -> `kv/datastores/X`).
pub fn kv(key: &str) -> String {
    format!("{KV}{key}")
}
/// The store key of a datastore value.
pub fn datastore(name: &str) -> String {
    format!("{KV}{DATASTORES_KV}{name}")
}

/// One of an agent's documents, under `agents/<machine>/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgentKey {
    /// `status`: what the agent publishes about itself ([`crate::AgentStatus`]).
    Status,
    /// `listener`: the listener's switch ([`crate::ListenerSwitch`]).
    Listener,
    /// `deploy`: the newest provision request ([`crate::DeployRequest`]).
    Deploy,
    /// `service/<id>`: stop/start/restart of one service ([`crate::ServiceControl`]).
    Service(String),
    /// `usage`: what the node and its processes use ([`crate::NodeUsage`]).
    Usage,
    /// `release/<id>`: the release service `id` runs here ([`crate::ReleaseTarget`]).
    Release(String),
}

impl AgentKey {
    /// The store key of this document of `machine`'s agent.
    pub fn of(&self, machine: &str) -> String {
        match self {
            AgentKey::Status => format!("{AGENTS}{machine}/status"),
            AgentKey::Listener => format!("{AGENTS}{machine}/listener"),
            AgentKey::Deploy => format!("{AGENTS}{machine}/deploy"),
            AgentKey::Service(id) => format!("{AGENTS}{machine}/service/{id}"),
            AgentKey::Usage => format!("{AGENTS}{machine}/usage"),
            AgentKey::Release(id) => format!("{AGENTS}{machine}/release/{id}"),
        }
    }

    /// The document, from what follows `agents/<machine>/`.
    fn parse(rest: &str) -> Option<AgentKey> {
        match rest {
            "status" => Some(AgentKey::Status),
            "listener" => Some(AgentKey::Listener),
            "deploy" => Some(AgentKey::Deploy),
            "usage" => Some(AgentKey::Usage),
            _ => rest
                .strip_prefix("service/")
                .filter(|id| is_segment(id))
                .map(|id| AgentKey::Service(id.to_owned()))
                .or_else(|| {
                    rest.strip_prefix("release/").filter(|id| is_segment(id)).map(|id| AgentKey::Release(id.to_owned()))
                }),
        }
    }
}

/// What a store key is: the one parser of the layout above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKey<'a> {
    Machine(&'a str),
    Group(&'a str),
    Service(&'a str),
    Instance {
        service: &'a str,
        id: &'a str,
    },
    Agent {
        machine: &'a str,
        key: AgentKeyRef<'a>,
    },
    Alloc {
        machine: &'a str,
        id: &'a str,
    },
    Job(&'a str),
    Eligibility(&'a str),
    Release {
        service: &'a str,
        version: u64,
    },
    Rollout(&'a str),
    Datastore(&'a str),
    /// Any other KV key (without the `kv/` prefix).
    Kv(&'a str),
    AclToken(&'a str),
    AclPolicy(&'a str),
    /// Who granted lease (hex id).
    AclLease(&'a str),
    AclBootstrap,
}

/// [`AgentKey`] borrowing from the key it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKeyRef<'a> {
    Status,
    Listener,
    Deploy,
    Service(&'a str),
    Usage,
    Release(&'a str),
}

impl AgentKeyRef<'_> {
    pub fn to_owned_key(self) -> AgentKey {
        match self {
            AgentKeyRef::Status => AgentKey::Status,
            AgentKeyRef::Listener => AgentKey::Listener,
            AgentKeyRef::Deploy => AgentKey::Deploy,
            AgentKeyRef::Service(id) => AgentKey::Service(id.to_owned()),
            AgentKeyRef::Usage => AgentKey::Usage,
            AgentKeyRef::Release(id) => AgentKey::Release(id.to_owned()),
        }
    }
}

impl<'a> StoreKey<'a> {
    /// What `key` is, or `None` for a key outside the layout (a malformed
    /// one: an empty id, a missing or extra segment).
    pub fn parse(key: &'a str) -> Option<StoreKey<'a>> {
        if let Some(id) = key.strip_prefix(MACHINES) {
            return is_segment(id).then_some(StoreKey::Machine(id));
        }
        if let Some(name) = key.strip_prefix(GROUPS) {
            return is_segment(name).then_some(StoreKey::Group(name));
        }
        if let Some(id) = key.strip_prefix(SERVICES) {
            return is_segment(id).then_some(StoreKey::Service(id));
        }
        if let Some(rest) = key.strip_prefix(INSTANCES) {
            let (service, id) = rest.split_once('/')?;
            return (is_segment(service) && is_segment(id)).then_some(StoreKey::Instance { service, id });
        }
        if let Some(rest) = key.strip_prefix(AGENTS) {
            let (machine, rest) = rest.split_once('/')?;
            if !is_segment(machine) {
                return None;
            }
            let key = match AgentKey::parse(rest)? {
                AgentKey::Status => AgentKeyRef::Status,
                AgentKey::Listener => AgentKeyRef::Listener,
                AgentKey::Deploy => AgentKeyRef::Deploy,
                AgentKey::Usage => AgentKeyRef::Usage,
                // Borrow the id from `key` rather than the parsed copy.
                AgentKey::Service(_) => AgentKeyRef::Service(&rest["service/".len()..]),
                AgentKey::Release(_) => AgentKeyRef::Release(&rest["release/".len()..]),
            };
            return Some(StoreKey::Agent { machine, key });
        }
        if let Some(rest) = key.strip_prefix(ALLOCS) {
            let (machine, id) = rest.split_once('/')?;
            return (is_segment(machine) && is_segment(id)).then_some(StoreKey::Alloc { machine, id });
        }
        if let Some(service) = key.strip_prefix(JOBS) {
            return is_segment(service).then_some(StoreKey::Job(service));
        }
        if let Some(machine) = key.strip_prefix(ELIGIBILITY) {
            return is_segment(machine).then_some(StoreKey::Eligibility(machine));
        }
        if let Some(rest) = key.strip_prefix(RELEASES) {
            let (service, version) = rest.split_once('/')?;
            return (is_segment(service))
                .then_some(())
                .and_then(|()| parse_version(version))
                .map(|version| StoreKey::Release { service, version });
        }
        if let Some(service) = key.strip_prefix(ROLLOUTS) {
            return is_segment(service).then_some(StoreKey::Rollout(service));
        }
        if key == ACL_BOOTSTRAP {
            return Some(StoreKey::AclBootstrap);
        }
        if let Some(accessor) = key.strip_prefix(ACL_TOKENS) {
            return is_segment(accessor).then_some(StoreKey::AclToken(accessor));
        }
        if let Some(name) = key.strip_prefix(ACL_POLICIES) {
            return is_segment(name).then_some(StoreKey::AclPolicy(name));
        }
        if let Some(lease) = key.strip_prefix(ACL_LEASES) {
            return is_segment(lease).then_some(StoreKey::AclLease(lease));
        }
        let kv = key.strip_prefix(KV)?;
        if let Some(name) = kv.strip_prefix(DATASTORES_KV) {
            return (!name.is_empty()).then_some(StoreKey::Datastore(name));
        }
        (!kv.is_empty()).then_some(StoreKey::Kv(kv))
    }
}

/// Whether `id` can be one segment of a key: the rule for every id in a
/// path (machines, groups, services, instances, agents' services).
pub fn is_segment(id: &str) -> bool {
    !id.is_empty() && !id.contains('/') && id != "." && id != ".." && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constructor_parses_back_to_what_it_built() {
        assert_eq!(StoreKey::parse(&machine("m1")), Some(StoreKey::Machine("m1")));
        assert_eq!(StoreKey::parse(&group("web")), Some(StoreKey::Group("web")));
        assert_eq!(StoreKey::parse(&service("api")), Some(StoreKey::Service("api")));
        assert_eq!(StoreKey::parse(&instance("api", "m1")), Some(StoreKey::Instance { service: "api", id: "m1" }));
        assert_eq!(StoreKey::parse(&datastore("DB_URL")), Some(StoreKey::Datastore("DB_URL")));
        assert_eq!(StoreKey::parse(&kv("app/flag")), Some(StoreKey::Kv("app/flag")));
        assert_eq!(StoreKey::parse(&acl_token("a1")), Some(StoreKey::AclToken("a1")));
        assert_eq!(StoreKey::parse(&acl_policy("ops")), Some(StoreKey::AclPolicy("ops")));
        assert_eq!(StoreKey::parse(&acl_lease("7f")), Some(StoreKey::AclLease("7f")));
        assert_eq!(StoreKey::parse(ACL_BOOTSTRAP), Some(StoreKey::AclBootstrap));
        assert_eq!(
            StoreKey::parse(&alloc("m1", "worker-0-1")),
            Some(StoreKey::Alloc { machine: "m1", id: "worker-0-1" })
        );
        assert!(alloc("m1", "a").starts_with(&allocs_of("m1")));
        assert_eq!(StoreKey::parse(&job("worker")), Some(StoreKey::Job("worker")));
        assert_eq!(StoreKey::parse(&eligibility("m1")), Some(StoreKey::Eligibility("m1")));
        assert_eq!(StoreKey::parse(&release("api", 12)), Some(StoreKey::Release { service: "api", version: 12 }));
        assert!(release("api", 3).starts_with(&releases_of("api")));
        assert_eq!(StoreKey::parse(&rollout("api")), Some(StoreKey::Rollout("api")));
        for (key, parsed) in [
            (AgentKey::Status, AgentKeyRef::Status),
            (AgentKey::Listener, AgentKeyRef::Listener),
            (AgentKey::Deploy, AgentKeyRef::Deploy),
            (AgentKey::Service("api".into()), AgentKeyRef::Service("api")),
            (AgentKey::Release("api".into()), AgentKeyRef::Release("api")),
        ] {
            let built = key.of("m1");
            assert!(built.starts_with(&agent("m1")));
            assert_eq!(StoreKey::parse(&built), Some(StoreKey::Agent { machine: "m1", key: parsed }), "{built}");
            assert_eq!(parsed.to_owned_key(), key);
        }
    }

    #[test]
    fn keys_outside_the_layout_are_none() {
        for key in [
            "",
            "machines/",
            "machines/a/b",
            "instances/api",
            "instances/api/",
            "instances//x",
            "agents/m1",
            "agents/m1/",
            "agents/m1/unknown",
            "agents/m1/service/",
            "agents/m1/service/a/b",
            "agents//status",
            "kv/",
            "kv/datastores/",
            "other/x",
            "services/..",
            "acl/",
            "acl/tokens/",
            "acl/tokens/a/b",
            "acl/other",
            "releases/api",
            "releases/api/12",
            "releases/api/v012",
            "releases/api/v1/x",
            "rollouts/",
            "agents/m1/release/",
        ] {
            assert_eq!(StoreKey::parse(key), None, "{key:?}");
        }
    }
}
