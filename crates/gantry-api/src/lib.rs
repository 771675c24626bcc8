//! Gantry's HTTP API as plain data: the JSON bodies the server, the client,
//! the CLI and the agent exchange, and where each lives in the store.
//!
//! Architecture invariant: this crate is wire types only (serde, no IO), so
//! every party agrees on one definition. Input types reject unknown fields.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The port `gantry server` listens on and clients use when none is given.
pub const DEFAULT_PORT: u16 = 7400;
/// The server a client talks to when neither `--server` nor `GANTRY_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7400";

/// Now, in Unix milliseconds: the unit of every `*_ms` timestamp in the API
/// (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
/// Largest request body the server accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024 + 64 * 1024;

/// Store key prefixes of the data model (DESIGN.md "Source of truth").
pub mod keys {
    pub const MACHINES: &str = "machines/";
    pub const SERVICES: &str = "services/";
    pub const INSTANCES: &str = "instances/";
    pub const GROUPS: &str = "groups/";
    pub const KV: &str = "kv/";
    /// KV keys (under [`KV`]) of the agents' control and status:
    /// `agents/<machine>/listener` ({"enabled": bool}),
    /// `agents/<machine>/deploy` (a [`DeployRequest`]),
    /// `agents/<machine>/status` (an [`AgentStatus`], under the agent's lease).
    pub const AGENTS_KV: &str = "agents/";
    /// KV keys (under [`KV`]) of datastore values: `datastores/<NAME>`.
    pub const DATASTORES_KV: &str = "datastores/";

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
    /// The KV key (without the `kv/` prefix) of an agent's `what`.
    pub fn agent_kv(machine: &str, what: &str) -> String {
        format!("{AGENTS_KV}{machine}/{what}")
    }
    pub fn kv(key: &str) -> String {
        format!("{KV}{key}")
    }
}

/// A machine in the inventory (seed 002 "Machine Inventory Service").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub hostname: String,
    /// The address its instances are published with.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub facts: Facts,
    /// region, rack, cluster, group, federation, and any other label.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Unix seconds of the last registration or fact refresh.
    #[serde(default)]
    pub updated_at: u64,
}

/// What a machine is made of, like ohai or facter report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Facts {
    pub private_ips: Vec<String>,
    pub public_ips: Vec<String>,
    pub macs: Vec<String>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub cpu_count: u32,
    pub cpu_model: Option<String>,
    pub memory_bytes: u64,
    pub disks: Vec<Disk>,
    pub kernel: Option<String>,
    pub os: Option<String>,
    /// Unix seconds.
    pub boot_time: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
}

/// A node group as agents need it (`gantry apply` uploads one per group of
/// nodes.json): its role's run list and the services that run list names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    /// The role's run list, expanded (`recipe[x::default]`).
    #[serde(default)]
    pub run_list: Vec<String>,
    /// Ids of the services the group's nodes run, in run-list order.
    #[serde(default)]
    pub services: Vec<String>,
}

/// Asks one agent to re-run provisioning (`gantry instance:deploy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Unique per request; the agent reports it back in [`AgentStatus`].
    pub id: String,
    /// Unix milliseconds.
    pub requested_at_ms: u64,
}

/// What an agent publishes about itself (`gantry listener:status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub machine: String,
    #[serde(default)]
    pub group: Option<String>,
    pub services: Vec<String>,
    /// The listener's state (`gantry_agent::listener::ListenerStatus` as JSON).
    pub listener: serde_json::Value,
    /// Requirements that could not be resolved, one line each.
    #[serde(default)]
    pub problems: Vec<String>,
    /// The last deploy request the agent finished, with its run's outcome.
    #[serde(default)]
    pub last_deploy: Option<DeployOutcome>,
    /// Where the agent's own HTTP API answers (`gantry logs`), e.g. `http://10.0.0.5:41234`.
    #[serde(default)]
    pub api: Option<String>,
    /// Each local service's process and health.
    #[serde(default)]
    pub processes: BTreeMap<String, ServiceState>,
    /// The local load balancer (`gantry lb:status`): null when it is off.
    #[serde(default)]
    pub lb: serde_json::Value,
    /// Unix milliseconds.
    pub updated_at_ms: u64,
}

/// One service on one node, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub port: u16,
    /// What the instance is published with.
    pub health: Health,
    /// The supervised process (`gantry_agent::supervise::ProcessStatus`);
    /// null when the provision run starts the service (`"command": true`).
    #[serde(default)]
    pub process: serde_json::Value,
    /// The health check's state; null when the service has none.
    #[serde(default)]
    pub check: serde_json::Value,
}

/// `kv/agents/<machine>/service/<id>`: what `gantry service:stop/start/restart` asked of a service on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceControl {
    /// False after `service:stop`, until `service:start`.
    pub running: bool,
    /// The newest restart request's id; the agent restarts once per new id.
    #[serde(default)]
    pub restart: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployOutcome {
    pub id: String,
    pub ok: bool,
    /// Exit code, signal or "timed out"; empty when ok.
    #[serde(default)]
    pub detail: String,
    pub duration_ms: u64,
}

/// Health of an instance, as its checks last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Passing,
    Failing,
    #[default]
    Unknown,
}

impl Health {
    /// The word for people: "passing", "failing", "not checked yet".
    pub fn word(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Failing => "failing",
            Health::Unknown => "not checked yet",
        }
    }
}

/// A service running on a machine (seed 002 "Service Inventory Service").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub service: String,
    pub id: String,
    pub machine: String,
    pub address: String,
    pub port: u16,
    /// Dynamic properties: `mysql.master = "true"`, `mysql.conn_timeout = "5"`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub health: Health,
    #[serde(default = "default_federation")]
    pub federation: String,
    #[serde(default)]
    pub public: bool,
    /// What this instance provides, rendered (`API_URL = http://10.0.0.7:1100`).
    #[serde(default)]
    pub provides: BTreeMap<String, String>,
}

fn default_federation() -> String {
    "default".to_string()
}

impl Instance {
    /// Whether the instance has property `name` = `value`. A property of
    /// service `mysql` named `mysql.master` also answers to `master`, so
    /// `get_host('mysql', master=True)` reads as in seed 002.
    pub fn has_property(&self, name: &str, value: &str) -> bool {
        let qualified = format!("{}.{name}", self.service);
        [name, qualified.as_str()].iter().filter_map(|k| self.properties.get(*k)).any(|v| v.eq_ignore_ascii_case(value))
    }
}

/// One key of the free-form KV space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub value: String,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// The lease, as a hex id, if the key is attached to one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease: Option<String>,
}

/// `GET /v1/kv?prefix=...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvList {
    pub revision: u64,
    pub entries: Vec<KvEntry>,
    /// True when `limit` cut the list short.
    pub more: bool,
}

/// The answer to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    pub revision: u64,
}

/// `POST /v1/leases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub ttl_secs: u64,
}

/// A granted or renewed lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// Hex id, as `?lease=` takes it.
    pub id: String,
    pub ttl_secs: u64,
}

/// A list of machines or instances, with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing<T> {
    pub revision: u64,
    pub items: Vec<T>,
}

/// One change, as `GET /v1/watch` streams it (one SSE `data:` line each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub kind: WatchKind,
    /// The store key (`kv/datastores/X`, `instances/api/...`).
    pub key: String,
    /// The new value; absent for a delete.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchKind {
    Put,
    Delete,
}

/// The SSE event name a watch uses when the watcher must re-read: the
/// revision it asked for is no longer in the history (or it fell too far
/// behind). Its data is a [`ResetEvent`].
pub const WATCH_RESET_EVENT: &str = "reset";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetEvent {
    /// The oldest revision the server can still replay; re-read (a read
    /// answers with its revision), then watch from that revision + 1.
    pub oldest_available: u64,
    pub message: String,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    pub status: String,
    pub store: String,
    pub revision: u64,
}

/// Every 4xx/5xx answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, for programs: `not_found`, `invalid_key`, `invalid_body`,
    /// `body_too_large`, `cas_failed`, `lease_not_found`, `unavailable`, ...
    pub code: String,
    /// For people: what is wrong and how to fix it.
    pub message: String,
}
