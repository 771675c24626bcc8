//! Gantry's HTTP API as plain data: every request and response body, every
//! document the store holds and every error code, as named types; and the
//! store's key layout ([`keys`]). The server, the client, the CLI and the
//! agent share these definitions; the OpenAPI document
//! (`openapi/gantry.json`) is generated from them.
//!
//! Architecture invariant: this crate is wire types only (serde and schema
//! derives, no IO), so every party agrees on one definition. Input types
//! reject unknown fields. No field is untyped JSON (serde_json's `Value`): the user's
//! free-form data is text (KV values) or typed scalars (a service's
//! `environment`).
#![forbid(unsafe_code)]

pub mod acl;
pub mod agent;
pub mod alloc;
pub mod error;
pub mod inventory;
pub mod keys;
pub mod kv;
pub mod prometheus;
pub mod release;
pub mod resources;
pub mod service;
pub mod watch;

pub use acl::{
    Access, AgentIdentity, MANAGEMENT_POLICY, Policy, Rule, StoredToken, Token, TokenCreated, TokenRequest, Whoami,
};
pub use agent::{
    AgentControl, AgentStatus, Backend, CheckStatus, DeployOutcome, DeployRequest, Frontend, LbApply, LbKind, LbMode,
    LbStatus, ListenerStatus, ListenerSwitch, ProcState, ProcessStatus, RunRecord, RunState, ServiceControl,
    ServiceState,
};
pub use alloc::{
    AllocReport, AllocState, Allocation, DesiredState, JobPlan, JobStatus, NodeEligibility, Placement, PlannedPending,
    PlannedPlacement, PlannedStop,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use inventory::{DEFAULT_FEDERATION, Disk, Facts, Group, Health, Instance, Machine};
pub use kv::{DeleteResult, HealthStatus, KvEntry, KvList, LeaseGrant, LeaseRequest, Listing, WriteResult};
pub use prometheus::TargetGroup;
pub use release::{
    ArtifactStat, GitInfo, MachineRelease, MachineReleases, NodePhase, NodeProgress, Release, ReleaseDetail,
    ReleaseHistory, ReleaseRequest, ReleaseStatus, ReleaseTarget, RollbackRequest, Rollout, RolloutPhase,
    RolloutStatus, UnitRelease,
};
pub use resources::{CapacitySource, NodeCapacity, NodeUsage, ProcessUsage, Resources};
pub use service::{
    AlertsSpec, ArtifactSpec, BoundSpec, CheckSpec, CommandSpec, ConstraintSpec, ConstraintValue, DeployHooksSpec,
    DerivedSpec, EnvValue, MetricsSpec, RescheduleSpec, ResourcesSpec, ServiceDefinition, SpreadSpec, StatusSpec,
    UpdateSpec,
};
pub use watch::{ResetEvent, WATCH_RESET_EVENT, WatchEvent, WatchKind};

/// The port `gantry server` listens on and clients use when none is given.
pub const DEFAULT_PORT: u16 = 7400;
/// The server a client talks to when neither `--server` nor `GANTRY_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7400";
/// Largest request body the server accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024 + 64 * 1024;

/// Now, in Unix milliseconds: the unit of every `*_ms` timestamp in the API
/// (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
