//! Scheduled work (issue 16): an allocation is one instance of a scheduled
//! service (`"count": N`) placed on one node. The scheduler writes them
//! (`allocs/<machine>/<id>`: desired state), the node's agent runs what is
//! assigned to it and reports how each is doing in its status
//! ([`crate::AgentStatus::allocations`]); each service's latest evaluation
//! (`jobs/<service>`) says what could not be placed and why.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Resources;

/// One placement of a scheduled service on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// Unique for ever: `<service>.<index>.<sequence>` (a replacement gets a new one).
    pub id: String,
    pub service: String,
    /// The service's federation: who may see the allocation.
    pub federation: String,
    /// Which of the service's `count` slots it fills (0-based).
    pub index: u32,
    /// The version of the service definition it runs: a digest of what it
    /// runs (a change of `count` or placement rules keeps the version, a new
    /// command or environment makes a new one, replacing the allocations).
    pub version: u64,
    pub machine: String,
    /// What it reserves on the node.
    pub resources: Resources,
    /// The port it listens on: the service's fixed `PORT`, or one the
    /// scheduler assigned (in its environment as `PORT`).
    pub port: u16,
    pub desired: DesiredState,
    /// Why it was stopped (`desired: stop`): node lost, drained, replaced by
    /// a newer version, scaled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Why it is where it is.
    pub placement: Placement,
    /// The allocation it replaces (lost node, drain, reschedule, new version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// When this slot was rescheduled before (Unix seconds, oldest first):
    /// a replacement carries its predecessor's history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reschedules: Vec<u64>,
    /// Unix milliseconds.
    pub created_at_ms: u64,
}

/// What the scheduler wants of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Run,
    Stop,
}

/// How a placement was decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Why it was placed: `new`, `lost` (its predecessor's node died),
    /// `rescheduled` (its predecessor kept failing), `drained`, `updated`
    /// (a new version of the service).
    pub reason: String,
    /// The chosen node's score, 0 to 1 (higher is better for the service's strategy).
    pub score: f64,
    /// Why this node: the strategy's score, how many nodes were feasible and
    /// scored, the spread's counts, the constraints checked.
    pub explanation: String,
}

/// How an allocation is doing on its node, as its agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AllocState {
    /// Assigned, not running yet (waiting for its requirements, starting).
    Pending,
    Running,
    /// Its process keeps failing (restarts in place with backoff; the
    /// scheduler moves it once it has failed past its `reschedule` limit).
    Failed,
    /// Its node is gone (the node's lease lapsed).
    Lost,
    /// Stopped as desired.
    Complete,
}

impl AllocState {
    pub const ALL: [AllocState; 5] =
        [AllocState::Pending, AllocState::Running, AllocState::Failed, AllocState::Lost, AllocState::Complete];

    /// The wire name (`pending`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AllocState::Pending => "pending",
            AllocState::Running => "running",
            AllocState::Failed => "failed",
            AllocState::Lost => "lost",
            AllocState::Complete => "complete",
        }
    }
}

/// One allocation in an agent's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocReport {
    pub state: AllocState,
    /// Restarts in place so far.
    #[serde(default)]
    pub restarts: u64,
    /// Whether its check passes (true without a check once it runs).
    #[serde(default)]
    pub healthy: bool,
    /// Unix milliseconds of the last state change.
    pub since_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The scheduler's latest evaluation of one scheduled service (`jobs/<service>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobStatus {
    pub service: String,
    /// The definition's version evaluated.
    pub version: u64,
    /// `count` asked for.
    pub desired: u32,
    /// Allocations placed and not stopped.
    pub placed: u32,
    /// Slots no node can take now; `reason` says why.
    pub pending: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub evaluated_at_ms: u64,
}

/// A node's scheduling eligibility (`gantry node:drain` / `node:eligible`),
/// `nodes/<machine>`: an operator's document, separate from the machine
/// record its agent writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeEligibility {
    pub machine: String,
    /// No new placements when false.
    pub eligible: bool,
    /// Draining: its allocations are moved elsewhere a few at a time.
    #[serde(default)]
    pub drain: bool,
    /// Unix milliseconds.
    pub updated_at_ms: u64,
}

/// What a change to a scheduled service would do (`POST
/// /v1/jobs/{service}/plan`, `gantry job:plan`): computed as the scheduler
/// would, written nowhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobPlan {
    pub service: String,
    /// Whether the proposed definition differs from the stored one (its
    /// allocations would be replaced by ones of the new version).
    pub changed: bool,
    pub place: Vec<PlannedPlacement>,
    pub stop: Vec<PlannedStop>,
    /// Allocations that would not be placed, and why.
    pub pending: Vec<PlannedPending>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedPlacement {
    pub index: u32,
    pub machine: String,
    pub port: u16,
    /// `new`, `lost`, `rescheduled`, `drained`, `updated`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    pub score: f64,
    pub explanation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedStop {
    pub allocation: String,
    pub machine: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedPending {
    pub count: u32,
    pub reason: String,
}
