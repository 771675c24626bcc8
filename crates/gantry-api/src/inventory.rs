//! The machine and service inventories (seed 002): machines with their
//! facts and labels, node groups as agents need them, and the instances of
//! services on machines with their properties and health.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The federation of a service or instance that names none.
pub const DEFAULT_FEDERATION: &str = "default";

/// A machine in the inventory (seed 002 "Machine Inventory Service").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// What it offers the scheduler; `None` from agents before issue 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<crate::resources::NodeCapacity>,
}

/// What a machine is made of, like ohai or facter report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
}

/// A node group as agents need it (`gantry apply` uploads one per group of
/// nodes.json): its role's run list and the services that run list names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// Health of an instance, as its checks last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

    /// The wire name: "passing", "failing", "unknown".
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Failing => "failing",
            Health::Unknown => "unknown",
        }
    }
}

/// A service running on a machine (seed 002 "Service Inventory Service").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    DEFAULT_FEDERATION.to_string()
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
