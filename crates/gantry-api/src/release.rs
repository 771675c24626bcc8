//! Deploys (issue 17): releases of a service (a content-addressed artifact
//! plus who, when, what: `releases/<service>/v<N>`), the rollout that moves
//! nodes onto one (`rollouts/<service>`), the release each node is told to
//! run (`agents/<machine>/release/<service>`) and what each agent reports
//! back about it (in its status).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::ServiceDefinition;

/// The git state of the repository a release was made from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitInfo {
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Uncommitted changes were present.
    #[serde(default)]
    pub dirty: bool,
    /// Commit subjects since the previously deployed commit (newest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// Tags pointing at the commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `POST /v1/releases/<service>`: a new release of an artifact already in
/// the store (`PUT /v1/artifacts/<service>/<sha256>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The artifact's SHA-256, lower-case hex.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The OS user of the deployer, used when the token has no name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
    /// The definition it is deployed with; the server's current one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<ServiceDefinition>,
}

/// `POST /v1/releases/<service>/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose artifact is deployed again; default: the stable
    /// release before the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
}

/// Where a release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Its rollout is moving nodes.
    Running,
    /// Its canaries are healthy; `deploy:promote` or `deploy:abort`.
    AwaitingPromotion,
    /// Every node runs it and passed its checks.
    Succeeded,
    /// Its rollout stopped on a failure (nothing went back).
    Failed,
    /// Its rollout failed and the switched nodes went back to the stable release.
    Reverted,
    /// Stopped by `deploy:abort`; switched nodes went back to the stable release.
    Aborted,
    /// A later `deploy:rollback` replaced it.
    RolledBack,
}

impl ReleaseStatus {
    pub fn word(self) -> &'static str {
        match self {
            ReleaseStatus::Running => "running",
            ReleaseStatus::AwaitingPromotion => "awaiting promotion",
            ReleaseStatus::Succeeded => "succeeded",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::Reverted => "reverted",
            ReleaseStatus::Aborted => "aborted",
            ReleaseStatus::RolledBack => "rolled back",
        }
    }

    /// Whether its rollout is over.
    pub fn finished(self) -> bool {
        !matches!(self, ReleaseStatus::Running | ReleaseStatus::AwaitingPromotion)
    }
}

/// Where one node stands in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodePhase {
    /// Not told yet.
    Pending,
    /// Fetching, verifying and unpacking the artifact; `deploy.pre`.
    Fetching,
    /// Withdrawn from the balancers, waiting `shutdown_delay`.
    Draining,
    /// Restarted from the new release; checks must pass `min_healthy_time`.
    Starting,
    /// Passed, `deploy.post` ran, back in rotation.
    Healthy,
    Failed,
    /// Went back to the stable release.
    Reverted,
}

impl NodePhase {
    pub fn word(self) -> &'static str {
        match self {
            NodePhase::Pending => "pending",
            NodePhase::Fetching => "fetching",
            NodePhase::Draining => "draining",
            NodePhase::Starting => "starting",
            NodePhase::Healthy => "healthy",
            NodePhase::Failed => "failed",
            NodePhase::Reverted => "reverted",
        }
    }
}

/// One node of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeProgress {
    pub machine: String,
    pub phase: NodePhase,
    /// Why it failed, or what it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the node was told (Unix ms); 0 while pending.
    #[serde(default)]
    pub told_ms: u64,
    /// When it reached its phase (Unix ms).
    #[serde(default)]
    pub since_ms: u64,
    /// It is going back to the stable release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverting: bool,
}

/// `releases/<service>/v<N>`: one release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub service: String,
    pub version: u64,
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The token's name, else the deployer's OS user.
    pub who: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    pub status: ReleaseStatus,
    /// Why it failed, was reverted, aborted or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The version whose artifact a `deploy:rollback` deployed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    /// The definition it was deployed with.
    pub definition: ServiceDefinition,
    /// Each node it reached, with its outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeProgress>,
}

/// What a rollout is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// Moving nodes onto the release, `max_parallel` at a time.
    Rolling,
    /// Canaries healthy; waiting for `deploy:promote` or `deploy:abort`.
    Canary,
    /// Moving switched nodes back to the stable release.
    Reverting,
}

/// `rollouts/<service>`: the rollout in progress (one per service at a
/// time); it goes when the rollout is over, leaving the release's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    pub service: String,
    pub version: u64,
    pub sha256: String,
    pub size: u64,
    pub who: String,
    pub started_ms: u64,
    pub phase: RolloutPhase,
    /// The release nodes go back to on failure: the newest that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<ReleaseTarget>,
    /// `deploy:promote` was given.
    #[serde(default)]
    pub promoted: bool,
    /// Why it reverts (set when it fails or is aborted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set by `deploy:abort`.
    #[serde(default)]
    pub aborted: bool,
    pub nodes: Vec<NodeProgress>,
}

/// `agents/<machine>/release/<service>`: the release a node runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseTarget {
    pub service: String,
    pub version: u64,
    pub sha256: String,
    pub size: u64,
    /// From the release's `update` stanza, so the agent needs nothing else.
    pub shutdown_delay_ms: u64,
    pub min_healthy_ms: u64,
    pub healthy_deadline_ms: u64,
}

/// What an agent reports about a service's release (in its status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnitRelease {
    pub version: u64,
    pub phase: NodePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An artifact in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactStat {
    pub sha256: String,
    pub stored: bool,
    #[serde(default)]
    pub size: u64,
}

/// `GET /v1/releases/<service>`: its history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseHistory {
    pub service: String,
    pub items: Vec<Release>,
    /// The newest release that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// `GET /v1/releases/<service>/<version>`: one release, its nodes, and
/// the change of definition from the release before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseDetail {
    pub release: Release,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u64>,
    /// Unified-diff lines (`-`, `+`, ` `) of the definitions as pretty JSON.
    #[serde(default)]
    pub definition_diff: Vec<String>,
}

/// `GET /v1/rollouts/<service>`: the rollout in progress, if any, and the
/// newest release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutStatus {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
}

/// `GET /v1/machines/<machine>/releases`: what runs where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MachineReleases {
    pub machine: String,
    /// By service: the release it is told to run and what it reports.
    pub services: BTreeMap<String, MachineRelease>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MachineRelease {
    /// The version the node is told to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// What its agent reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<UnitRelease>,
}

/// The `update` stanza's defaults (README "Deploys").
pub mod defaults {
    pub const MAX_PARALLEL: u32 = 1;
    pub const MIN_HEALTHY_MS: u64 = 5_000;
    pub const HEALTHY_DEADLINE_MS: u64 = 120_000;
    pub const CANARY: u32 = 0;
    pub const AUTO_REVERT: bool = true;
    pub const SHUTDOWN_DELAY_MS: u64 = 2_000;
    /// Versions (metadata and artifacts) the store keeps per service.
    pub const KEEP_VERSIONS: usize = 20;
    /// Release directories a node keeps per service.
    pub const KEEP_ON_NODE: usize = 5;
}
