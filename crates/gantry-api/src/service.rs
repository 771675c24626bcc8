//! Service definitions as they travel through the API
//! (`PUT /v1/services/<id>`, seed 001): the user's `data_bags/service/<id>.json`,
//! typed field by field. `gantry-spec` checks a definition's meaning
//! (placeholders, ports, names) with file:line:column diagnostics; this type
//! is its shape on the wire, so every party reads the same fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A service definition, as written in the user's repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceDefinition {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the agent runs; absent or `true`: the provision run starts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
    /// The user the service's commands run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Shell command run when the service leaves a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<String>,
    /// Recipes the provision run applies for this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_list: Vec<String>,
    /// Fixed environment: the user's own values (strings, numbers, booleans).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, EnvValue>,
    /// Environment variable name to a template (`"{PRIMARY_DATABASE_URL}"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requires: BTreeMap<String, String>,
    /// Provided name to a template rendered per instance (`"http://{HOST}:{PORT}"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provides: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// A scheduled service: the scheduler keeps this many allocations
    /// running on nodes with room for them (issue 16); run lists do not name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Where its allocations may go (each must hold on the node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<ConstraintSpec>,
    /// How its allocations spread over a node attribute's values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<SpreadSpec>,
    /// `binpack` (the default: the fullest node that fits) or `spread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// When an allocation that keeps failing is moved to another node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reschedule: Option<RescheduleSpec>,
    /// What `gantry deploy` packs: `{"path": "dist/api"}` (issue 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactSpec>,
    /// Hooks run in the release directory around a switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployHooksSpec>,
    /// Between withdrawing an instance from the balancers and stopping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_delay: Option<String>,
    /// How a release rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateSpec>,
    /// Where each instance serves Prometheus text: `{"path": "/metrics"}`
    /// (issue 18); its passing instances are then scrape targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
    /// Alerts beyond the defaults every service has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsSpec>,
}

/// `"artifact"`: a directory or archive, relative to the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    pub path: String,
}

/// `"deploy"`: shell commands run in the new release's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployHooksSpec {
    /// Before the switch (the old release still serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<String>,
    /// After the new process passed `min_healthy_time`, before it returns to rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<String>,
}

/// `"update"`: the rollout of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// A duration: `"5s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_revert: Option<bool>,
}

/// `"metrics": {"path": "/metrics"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    pub path: String,
}

/// `"alerts"`: each a fixed bound or a derived one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    /// 5xx responses over responses through its balancers (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<BoundSpec>,
    /// The balancers' average response time, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<BoundSpec>,
    /// Restarts of its processes in an hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<BoundSpec>,
    /// Growth of its resident memory in an hour, in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_growth: Option<BoundSpec>,
    /// Requests per second through its balancers falling below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate_drop: Option<BoundSpec>,
}

/// A fixed bound (a number) or `{"derived": {...}}`. Numbers are kept as
/// written (`3` stays `3`, not `3.0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BoundSpec {
    #[schema(value_type = f64)]
    Fixed(serde_json::Number),
    Derived {
        derived: DerivedSpec,
    },
}

/// `{"baseline": "1d", "sigma": 3}`, optionally `shift` and `floor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DerivedSpec {
    pub baseline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub sigma: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub floor: Option<serde_json::Number>,
}

/// One placement constraint: `{"attribute": "region", "operator": "=",
/// "value": "us-east-1"}` (operators `=`, `!=`, `in` with a list, `regex`),
/// or `{"operator": "distinct_hosts"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConstraintSpec {
    /// `group`, `region`, `federation`, `machine`, `label.NAME` or `fact.NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ConstraintValue>,
}

/// A constraint's value: one, or a list for `in`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ConstraintValue {
    One(String),
    Many(Vec<String>),
}

/// Spread over a node attribute's values, evenly or by target percentages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpreadSpec {
    pub attribute: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, u8>,
}

/// `"reschedule"`: at most `attempts` moves within `interval_s`, the first
/// after `delay_s`, doubling up to `max_delay_s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_s: Option<u64>,
}

/// `"command"`: a shell line, an argv array, or `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CommandSpec {
    /// `true`: the provision run starts the service.
    External(bool),
    /// Run with `sh -c`.
    Shell(String),
    /// Run directly.
    Argv(Vec<String>),
}

/// One environment value as the user wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EnvValue {
    Text(String),
    /// Kept as written: `1100` stays `1100`, not `1100.0`.
    #[schema(value_type = f64)]
    Number(serde_json::Number),
    Flag(bool),
}

/// `"check"`: how the agent checks an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// `http`, `tcp` or `command`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `200`, or a range `"200-299"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A duration: `"1s"`, `"500ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_after: Option<u32>,
}

/// An HTTP check's healthy status: one code or a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Range(String),
}

/// `"resources"`: what one instance needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    /// CPU cores (fractions allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
}
