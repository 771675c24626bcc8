//! Tokens, policies and what access control needs to know of the store,
//! kept in memory: `authorize` runs on every request (and every watched
//! event), so it must not wait for the store.
//!
//! The [`Acl`] loads `acl/` (tokens, policies, lease owners) and the facts
//! agents' rights depend on (service definitions' federations and
//! requirements, groups' services, machines' groups and addresses, the
//! services each agent reports), then follows them with store watches, so
//! every server of a cluster sees a token revoked on another within a
//! watch's latency. A secret is looked up by its SHA-256: the secret itself
//! is never stored, and the lookup learns nothing an attacker could use
//! (the table is keyed by a hash of what they sent, and the final
//! comparison is constant-time).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use gantry_api::keys::{self, AgentKeyRef, StoreKey};
use gantry_api::{
    Access, AgentIdentity, AgentStatus, Allocation, DesiredState, Group, MANAGEMENT_POLICY, Machine, Policy, Rule,
    ServiceDefinition, StoredToken, Token, now_ms,
};
use gantry_store::{EventKind, LeaseId, Store, StoreError, Txn};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The file, in the server's data directory, that the bootstrap token's
/// secret is written to (0600) when a server creates it.
pub const BOOTSTRAP_TOKEN_FILE: &str = "bootstrap-token";

/// Whether the server checks tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclMode {
    /// Default deny: every request needs a token that grants it.
    On,
    /// Every request is allowed, as before access control existed:
    /// benchmarks' baseline and throw-away experiments only.
    Off,
}

/// The server's access-control state.
pub struct Acl {
    mode: AclMode,
    view: RwLock<View>,
    /// Told of every lease that ends (keys' quotas follow them); each
    /// answers whether it still wants to be told.
    lease_ends: RwLock<Vec<LeaseEnd>>,
}

/// Called with a lease that ended; false once it no longer cares.
pub type LeaseEnd = Box<dyn Fn(LeaseId) -> bool + Send + Sync>;

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acl").field("mode", &self.mode).field("view", &self.view).finish_non_exhaustive()
    }
}

/// What a token is, once its secret is known.
#[derive(Debug)]
pub enum Identity {
    /// Everything, ACLs included.
    Management,
    /// The rules of its policies (missing policies grant nothing).
    Rules {
        rules: Vec<Rule>,
        /// `None`: every federation.
        federations: Option<BTreeSet<String>>,
    },
    /// An agent's node: its own records, what its services need.
    Agent(AgentIdentity),
}

/// A known token, as `authorize` uses it.
#[derive(Debug, Clone)]
pub struct Known {
    pub token: Arc<Token>,
    pub identity: Arc<Identity>,
}

/// Why a secret is not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// No such token (never was, or revoked).
    NoSuchToken,
    Expired,
}

#[derive(Debug, Default)]
struct View {
    /// By SHA-256 of the secret.
    tokens: HashMap<[u8; 32], Arc<Token>>,
    /// Accessor -> SHA-256 of its secret, to forget a token when its key goes.
    accessors: HashMap<String, [u8; 32]>,
    policies: HashMap<String, Policy>,
    /// Lease (hex id) -> the accessor of the token that granted it.
    lease_owners: HashMap<String, String>,
    /// Accessor -> how many live leases it granted.
    leases_held: HashMap<String, u32>,
    /// Service id -> its federation and the names its requirements use.
    services: HashMap<String, ServiceFacts>,
    /// Group -> the services its nodes run.
    groups: HashMap<String, Vec<String>>,
    /// Machine -> its group label and registered address.
    machines: HashMap<String, MachineFacts>,
    /// Machine -> the services its agent reports running.
    agent_services: HashMap<String, Vec<String>>,
    /// Machine -> its allocations the scheduler wants running: id -> service.
    allocations: HashMap<String, HashMap<String, String>>,
}

#[derive(Debug, Clone)]
struct ServiceFacts {
    federation: String,
    requires: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
struct MachineFacts {
    group: Option<String>,
    address: String,
}

/// The prefixes the view follows.
const FOLLOWED: [&str; 6] = [keys::ACL, keys::SERVICES, keys::GROUPS, keys::MACHINES, keys::AGENTS, keys::ALLOCS];

impl Acl {
    /// An ACL that allows everything ([`AclMode::Off`]), following nothing.
    pub fn off() -> Arc<Acl> {
        Arc::new(Acl { mode: AclMode::Off, view: RwLock::default(), lease_ends: RwLock::default() })
    }

    /// Loads what access control needs from `store` and keeps following
    /// it (a task on the current runtime, until the store closes).
    pub async fn open(store: &Store, mode: AclMode) -> Result<Arc<Acl>, StoreError> {
        let acl = Arc::new(Acl { mode, view: RwLock::default(), lease_ends: RwLock::default() });
        if mode == AclMode::Off {
            return Ok(acl);
        }
        let revision = acl.reload(store).await?;
        tokio::spawn(follow(Arc::downgrade(&acl), store.clone(), revision));
        Ok(acl)
    }

    pub fn mode(&self) -> AclMode {
        self.mode
    }

    /// Reads every followed prefix anew; the revision of the oldest read.
    async fn reload(&self, store: &Store) -> Result<u64, StoreError> {
        let mut view = View::default();
        let mut revision = u64::MAX;
        for prefix in FOLLOWED {
            let range = store.range(prefix, None).await?;
            revision = revision.min(range.revision);
            for kv in &range.kvs {
                view.apply(&kv.key, Some(&kv.value));
            }
        }
        let old = std::mem::replace(&mut *self.view.write().expect("acl lock"), view);
        // Leases that ended while the view was not following.
        let live = self.view.read().expect("acl lock").lease_owners.keys().cloned().collect::<BTreeSet<_>>();
        for lease in old.lease_owners.keys().filter(|lease| !live.contains(*lease)) {
            self.lease_ended(lease);
        }
        Ok(revision)
    }

    /// Tells `end` of every lease that ends from now on (of those a token
    /// granted: the ones with an owner record).
    pub fn on_lease_end(&self, end: LeaseEnd) {
        self.lease_ends.write().expect("acl lock").push(end);
    }

    fn lease_ended(&self, hex: &str) {
        let Some(lease) = i64::from_str_radix(hex, 16).ok().map(LeaseId) else { return };
        let mut ends = self.lease_ends.write().expect("acl lock");
        ends.retain(|end| end(lease));
    }

    /// How many live leases the token `accessor` granted.
    pub fn leases_of(&self, accessor: &str) -> u32 {
        self.view.read().expect("acl lock").leases_held.get(accessor).copied().unwrap_or(0)
    }

    /// The most live leases any one token granted.
    pub fn most_leases(&self) -> u32 {
        self.view.read().expect("acl lock").leases_held.values().copied().max().unwrap_or(0)
    }

    /// The token whose secret is `secret`.
    pub fn resolve(&self, secret: &str) -> Result<Known, Unknown> {
        let hash = sha256(secret.as_bytes());
        let view = self.view.read().expect("acl lock");
        let Some((stored, token)) = view.tokens.get_key_value(&hash) else { return Err(Unknown::NoSuchToken) };
        if !bool::from(stored.ct_eq(&hash)) {
            return Err(Unknown::NoSuchToken);
        }
        if token.expires_at_ms.is_some_and(|at| at <= now_ms()) {
            return Err(Unknown::Expired);
        }
        let identity = match &token.agent {
            Some(agent) => Identity::Agent(agent.clone()),
            None if token.policies.iter().any(|p| p == MANAGEMENT_POLICY) => Identity::Management,
            None => {
                let mut rules = Vec::new();
                let mut federations: Option<BTreeSet<String>> = None;
                for policy in token.policies.iter().filter_map(|name| view.policies.get(name)) {
                    rules.extend(policy.rules.iter().cloned());
                    // A policy limited to some federations limits its own
                    // rules; the token sees the union of what its policies see.
                    if policy.federations.is_empty() {
                        federations = None;
                    } else if let Some(set) = &mut federations {
                        set.extend(policy.federations.iter().cloned());
                    } else if rules.len() == policy.rules.len() {
                        federations = Some(policy.federations.iter().cloned().collect());
                    }
                }
                Identity::Rules { rules, federations }
            }
        };
        Ok(Known { token: Arc::clone(token), identity: Arc::new(identity) })
    }

    /// A policy by name (the built-in `management` is not stored).
    pub fn policy_exists(&self, name: &str) -> bool {
        name == MANAGEMENT_POLICY || self.view.read().expect("acl lock").policies.contains_key(name)
    }

    /// Who granted lease `hex`, if a token did.
    pub fn lease_owner(&self, hex: &str) -> Option<String> {
        self.view.read().expect("acl lock").lease_owners.get(hex).cloned()
    }

    /// The datastore names `agent`'s node may read: what the requirements
    /// of its services (its group's, and those it reports running) name,
    /// among the services of its federation.
    pub fn agent_may_read_datastore(&self, agent: &AgentIdentity, name: &str) -> bool {
        let view = self.view.read().expect("acl lock");
        view.services_of(&agent.machine)
            .filter_map(|id| view.services.get(id))
            .any(|facts| facts.federation == agent.federation && facts.requires.contains(name))
    }

    /// Machine `machine`'s registered address, if it registered.
    pub fn machine_address(&self, machine: &str) -> Option<String> {
        self.view.read().expect("acl lock").machines.get(machine).map(|m| m.address.clone())
    }

    /// Whether `machine`'s node runs `service` (its group's, or reported).
    pub fn agent_runs(&self, machine: &str, service: &str) -> bool {
        self.view.read().expect("acl lock").services_of(machine).any(|id| id == service)
    }

    /// Whether `machine`'s node runs `service`: its group's, reported, or
    /// an allocation of it placed there (its releases and artifacts are
    /// what such an agent may read).
    pub fn agent_runs_or_allocated(&self, machine: &str, service: &str) -> bool {
        let view = self.view.read().expect("acl lock");
        view.services_of(machine).any(|id| id == service)
            || view.allocations.get(machine).is_some_and(|allocs| allocs.values().any(|s| s == service))
    }

    /// Whether the scheduler placed allocation `id` of `service` on
    /// `machine` (and wants it running): the one instance id an agent may
    /// register besides its machine id.
    pub fn agent_runs_allocation(&self, machine: &str, service: &str, id: &str) -> bool {
        let view = self.view.read().expect("acl lock");
        view.allocations.get(machine).and_then(|allocs| allocs.get(id)).is_some_and(|s| s == service)
    }

    /// The federation of a service definition, if it is known.
    pub fn service_federation(&self, service: &str) -> Option<String> {
        self.view.read().expect("acl lock").services.get(service).map(|f| f.federation.clone())
    }

    /// Applies a change the server made itself, so the next request sees it
    /// without waiting for the watch (which applies it again, harmlessly):
    /// an agent that registers its machine and then its instance must not
    /// be refused because the watch has not told the ACL the address yet.
    pub fn note(&self, key: &str, value: Option<&[u8]>) {
        if self.mode == AclMode::On && FOLLOWED.iter().any(|prefix| key.starts_with(prefix)) {
            self.view.write().expect("acl lock").apply(key, value);
        }
    }
}

impl View {
    fn services_of<'a>(&'a self, machine: &str) -> impl Iterator<Item = &'a String> + 'a {
        let group = self.machines.get(machine).and_then(|m| m.group.as_ref()).and_then(|g| self.groups.get(g));
        let reported = self.agent_services.get(machine);
        group.into_iter().flatten().chain(reported.into_iter().flatten())
    }

    /// One put (`Some`) or delete (`None`) of a followed key.
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(parsed) = StoreKey::parse(key) else { return };
        match parsed {
            StoreKey::AclToken(accessor) => {
                if let Some(hash) = self.accessors.remove(accessor) {
                    self.tokens.remove(&hash);
                }
                if let Some(stored) = value.and_then(|v| serde_json::from_slice::<StoredToken>(v).ok())
                    && let Some(hash) = parse_hex32(&stored.secret_sha256)
                {
                    self.accessors.insert(accessor.to_owned(), hash);
                    self.tokens.insert(hash, Arc::new(stored.token));
                }
            }
            StoreKey::AclPolicy(name) => {
                match value.and_then(|v| serde_json::from_slice::<Policy>(v).ok()) {
                    Some(policy) => self.policies.insert(name.to_owned(), policy),
                    None => self.policies.remove(name),
                };
            }
            StoreKey::AclLease(lease) => {
                let previous = match value.and_then(|v| std::str::from_utf8(v).ok()) {
                    Some(accessor) => {
                        *self.leases_held.entry(accessor.to_owned()).or_default() += 1;
                        self.lease_owners.insert(lease.to_owned(), accessor.to_owned())
                    }
                    None => self.lease_owners.remove(lease),
                };
                // A record applied twice (noted, then seen by the watch)
                // or removed counts once.
                if let Some(previous) = previous
                    && let Some(held) = self.leases_held.get_mut(&previous)
                {
                    *held -= 1;
                    if *held == 0 {
                        self.leases_held.remove(&previous);
                    }
                }
            }
            StoreKey::Service(id) => {
                match value.and_then(|v| serde_json::from_slice::<ServiceDefinition>(v).ok()) {
                    Some(definition) => {
                        let federation =
                            definition.federation.unwrap_or_else(|| gantry_api::DEFAULT_FEDERATION.to_owned());
                        let requires = definition.requires.values().flat_map(|t| placeholders(t)).collect();
                        self.services.insert(id.to_owned(), ServiceFacts { federation, requires })
                    }
                    None => self.services.remove(id),
                };
            }
            StoreKey::Group(name) => {
                match value.and_then(|v| serde_json::from_slice::<Group>(v).ok()) {
                    Some(group) => self.groups.insert(name.to_owned(), group.services),
                    None => self.groups.remove(name),
                };
            }
            StoreKey::Machine(id) => {
                match value.and_then(|v| serde_json::from_slice::<Machine>(v).ok()) {
                    Some(machine) => self.machines.insert(
                        id.to_owned(),
                        MachineFacts { group: machine.labels.get("group").cloned(), address: machine.address },
                    ),
                    None => self.machines.remove(id),
                };
            }
            StoreKey::Alloc { machine, id } => {
                let running = value
                    .and_then(|v| serde_json::from_slice::<Allocation>(v).ok())
                    .filter(|a| a.desired == DesiredState::Run);
                let allocs = self.allocations.entry(machine.to_owned()).or_default();
                match running {
                    Some(alloc) => allocs.insert(id.to_owned(), alloc.service),
                    None => allocs.remove(id),
                };
                if allocs.is_empty() {
                    self.allocations.remove(machine);
                }
            }
            StoreKey::Agent { machine, key: AgentKeyRef::Status } => {
                match value.and_then(|v| serde_json::from_slice::<AgentStatus>(v).ok()) {
                    Some(status) => self.agent_services.insert(machine.to_owned(), status.services),
                    None => self.agent_services.remove(machine),
                };
            }
            _ => {}
        }
    }
}

/// Follows the view's prefixes from `revision` + 1 until the ACL or the
/// store goes; reloads when a watch cannot go on (compacted history).
async fn follow(acl: std::sync::Weak<Acl>, store: Store, mut revision: u64) {
    loop {
        let mut watches = Vec::new();
        for prefix in FOLLOWED {
            match store.watch(prefix, revision + 1).await {
                Ok(watch) => watches.push(watch),
                Err(StoreError::Closed) => return,
                Err(_) => break,
            }
        }
        if watches.len() == FOLLOWED.len() {
            let mut merged = futures::stream::select_all(watches);
            while let Some(event) = merged.next().await {
                let Some(acl) = acl.upgrade() else { return };
                match event {
                    Ok(event) => {
                        let value = (event.kind == EventKind::Put).then_some(&event.value[..]);
                        acl.view.write().expect("acl lock").apply(&event.key, value);
                        // An owner record goes with its lease: the lease ended.
                        if event.kind == EventKind::Delete
                            && let Some(StoreKey::AclLease(lease)) = StoreKey::parse(&event.key)
                        {
                            acl.lease_ended(lease);
                        }
                    }
                    Err(StoreError::Closed) => return,
                    Err(_) => break,
                }
            }
        }
        // A watch ended (compaction, an engine error): read everything anew.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(acl) = acl.upgrade() else { return };
        match acl.reload(&store).await {
            Ok(read) => revision = read,
            Err(StoreError::Closed) => return,
            Err(_) => {}
        }
    }
}

/// `{NAME}` placeholders of a template (`{{` and `}}` are literal braces).
fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if rest[open..].starts_with("{{") {
            rest = &rest[open + 2..];
            continue;
        }
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                names.push(after[..close].to_owned());
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    names
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// 256 random bits from the operating system.
pub fn random_256() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random generator");
    bytes
}

/// A new token: a random accessor and secret. Returns what to store and the secret.
pub fn new_token(
    name: String,
    policies: Vec<String>,
    agent: Option<AgentIdentity>,
    ttl: Option<Duration>,
) -> (StoredToken, String) {
    let accessor = hex(&random_256()[..16]);
    let secret = hex(&random_256());
    let now = now_ms();
    let expires_at_ms = ttl.map(|ttl| now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)));
    let token = Token { accessor, name, policies, agent, created_at_ms: now, expires_at_ms };
    let stored = StoredToken { token, secret_sha256: hex(&sha256(secret.as_bytes())) };
    (stored, secret)
}

/// What the bootstrap did.
#[derive(Debug)]
pub enum Bootstrap {
    /// This server created the management token and wrote its secret here.
    Created(std::path::PathBuf),
    /// A token exists already (created earlier, or by another server).
    Done,
}

/// On a store with no tokens yet, creates the management token (once: a
/// compare-and-set on `acl/bootstrap`, so of several servers sharing etcd
/// one wins) and writes its secret to `data_dir/bootstrap-token`, mode
/// 0600 from its creation. Never prints the secret.
pub async fn bootstrap(acl: &Acl, store: &Store, data_dir: &Path) -> Result<Bootstrap, BootstrapError> {
    if acl.mode == AclMode::Off || store.get(keys::ACL_BOOTSTRAP).await?.kv.is_some() {
        return Ok(Bootstrap::Done);
    }
    let (stored, secret) = new_token("bootstrap".into(), vec![MANAGEMENT_POLICY.into()], None, None);
    let accessor = stored.token.accessor.clone();
    let token_key = keys::acl_token(&accessor);
    let value = serde_json::to_vec(&stored).expect("plain data");
    let txn = Txn::new()
        .when_mod_revision(keys::ACL_BOOTSTRAP, 0)
        .put(keys::ACL_BOOTSTRAP, accessor.clone().into_bytes())
        .put(&token_key, value.clone());
    if !store.txn(txn).await?.succeeded {
        return Ok(Bootstrap::Done);
    }
    acl.note(&token_key, Some(&value));
    let path = data_dir.join(BOOTSTRAP_TOKEN_FILE);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .and_then(|()| write_private(&path, format!("{secret}\n").as_bytes()))
        .map_err(|source| BootstrapError::Write { path: path.clone(), source })?;
    Ok(Bootstrap::Created(path))
}

use std::os::unix::fs::DirBuilderExt;

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Why the bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("creating the bootstrap token")]
    Store(#[from] StoreError),
    #[error("writing the bootstrap token to {}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The access `rules` grant to `resource`: the longest matching prefix
/// decides; at equal length deny, then write, then read. No rule: deny.
pub fn access_of(rules: &[Rule], resource: &str) -> Access {
    let mut best: Option<(usize, Access)> = None;
    for rule in rules.iter().filter(|r| resource.starts_with(&r.prefix)) {
        let candidate = (rule.prefix.len(), rule.access);
        best = match best {
            None => Some(candidate),
            Some((len, _)) if candidate.0 > len => Some(candidate),
            Some((len, access)) if candidate.0 == len => Some((len, precedence(access, candidate.1))),
            keep => keep,
        };
    }
    best.map_or(Access::Deny, |(_, access)| access)
}

/// Of two rules of the same prefix: deny wins, then write.
fn precedence(a: Access, b: Access) -> Access {
    if a == Access::Deny || b == Access::Deny { Access::Deny } else { a.max(b) }
}

#[cfg(test)]
mod tests;
