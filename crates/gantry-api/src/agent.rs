//! Agents' documents (`agents/<machine>/...`): the status an agent
//! publishes about itself (its listener, processes, checks and balancer),
//! and the control documents operators write for it (listener switch,
//! provision requests, service stop/start/restart).
//!
//! The agent builds these; the CLI, the server and `gantry up` read them.
//! Their JSON is golden-tested in `tests/golden/`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::inventory::Health;

/// What an agent publishes about itself (`agents/<machine>/status`, under
/// the agent's lease so it leaves with the agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentStatus {
    pub machine: String,
    #[serde(default)]
    pub group: Option<String>,
    /// The services this node runs.
    pub services: Vec<String>,
    /// The provision listener; `None` when the agent has no provision command.
    #[serde(default)]
    pub listener: Option<ListenerStatus>,
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
    /// The local load balancer (`gantry lb:status`); `None` when it is off.
    #[serde(default)]
    pub lb: Option<LbStatus>,
    /// The scheduled allocations assigned to this node, by allocation id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocations: BTreeMap<String, crate::AllocReport>,
    /// Each service's release here, by service id (issue 17).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub releases: BTreeMap<String, crate::UnitRelease>,
    /// The Gantry server the agent talks to now (one of its `--server`
    /// list), e.g. `http://10.0.0.2:7400`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Unix milliseconds.
    pub updated_at_ms: u64,
}

/// One service on one node, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceState {
    pub port: u16,
    /// What the instance is published with.
    pub health: Health,
    /// The supervised process; `None` when the provision run starts the
    /// service (`"command": true`).
    #[serde(default)]
    pub process: Option<ProcessStatus>,
    /// The health check's state; `None` when the service has none.
    #[serde(default)]
    pub check: Option<CheckStatus>,
}

/// Where a supervised process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProcState {
    /// Not started: its requirements are not resolved yet (`problem` says so).
    Waiting,
    /// About to start (a new supervisor's status until its task runs).
    Starting,
    Running,
    /// It exited unasked; it starts again in `next_start_in_ms`.
    Backoff,
    /// It was sent SIGTERM (SIGKILL after the grace period), to stop or
    /// to restart.
    Stopping,
    /// Stopped as asked; it stays stopped until started again.
    Stopped,
    /// It could not be started (missing program, unknown user, no right to
    /// switch user): `problem` says why. Retried with backoff like a crash,
    /// since the program or user may appear later (a provision run).
    Failed,
}

impl ProcState {
    /// Every state, in the order of a process's life.
    pub const ALL: [ProcState; 7] = [
        ProcState::Waiting,
        ProcState::Starting,
        ProcState::Running,
        ProcState::Backoff,
        ProcState::Stopping,
        ProcState::Stopped,
        ProcState::Failed,
    ];

    /// The wire name (`running`, `backoff`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Waiting => "waiting",
            ProcState::Starting => "starting",
            ProcState::Running => "running",
            ProcState::Backoff => "backoff",
            ProcState::Stopping => "stopping",
            ProcState::Stopped => "stopped",
            ProcState::Failed => "failed",
        }
    }
}

/// A supervised process, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessStatus {
    pub state: ProcState,
    /// While running or stopping: the process's pid, which is also its
    /// process group's id.
    pub pid: Option<u32>,
    /// Starts after the first: after exits, restarts and starts again.
    pub restarts: u64,
    /// How the last run ended: `exit code 3`, `killed by signal 9`.
    pub last_exit: Option<String>,
    /// Unix ms of the latest start.
    pub started_at_ms: Option<u64>,
    /// In `backoff` and `failed`: how long, as of this status, until the
    /// next start.
    pub next_start_in_ms: Option<u64>,
    /// Why it cannot start (state `failed`), or why its log cannot be
    /// written (the process keeps running).
    pub problem: Option<String>,
}

impl ProcessStatus {
    /// A process the agent has not started (or stopped as asked), with why.
    pub fn not_running(state: ProcState, problem: Option<String>) -> ProcessStatus {
        ProcessStatus {
            state,
            pid: None,
            restarts: 0,
            last_exit: None,
            started_at_ms: None,
            next_start_in_ms: None,
            problem,
        }
    }
}

/// A health check's state, as its agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckStatus {
    pub healthy: bool,
    pub consecutive_failures: u32,
    pub consecutive_passes: u32,
    /// The last probe's short outcome ("HTTP 200", "connection refused").
    pub last_output: Option<String>,
    /// When the last probe finished, in milliseconds since the Unix epoch.
    pub last_checked_ms: Option<u64>,
    /// Probes run since the checker started.
    pub checks: u64,
    /// How long the last probe took, in milliseconds (the agent's
    /// `gantry_check_duration_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_duration_ms: Option<u64>,
}

/// `idle`, `running`, `queued` or `throttled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Nothing running, nothing queued.
    Idle,
    /// A run is in progress (another may be queued behind it).
    Running,
    /// A run is waiting to start: about to, or the listener is off.
    Queued,
    /// A run is waiting for the throttle.
    Throttled,
}

impl RunState {
    /// The wire name (`idle`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Idle => "idle",
            RunState::Running => "running",
            RunState::Queued => "queued",
            RunState::Throttled => "throttled",
        }
    }
}

/// The provision listener's state (`gantry listener:status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ListenerStatus {
    pub enabled: bool,
    pub state: RunState,
    /// Unix ms the current run started, while one runs.
    pub running_since_ms: Option<u64>,
    pub last_run: Option<RunRecord>,
    pub runs_total: u64,
    /// Unix ms from which the throttle allows the next start (in the past
    /// when a run may start at once).
    pub next_allowed_at_ms: u64,
    /// Triggers folded into the queued run (0 when none is queued).
    pub queued_triggers: u64,
    /// The last problem with the state file, if any (the listener keeps
    /// running on what it has in memory).
    pub problem: Option<String>,
}

/// One finished provision run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunRecord {
    /// Why it ran: the latest trigger reasons folded into it.
    pub reasons: Vec<String>,
    /// How many triggers it answers (reasons beyond the cap are only counted).
    pub triggers: u64,
    /// The number of the last trigger it answers: it answers every trigger
    /// up to this one that an earlier run did not.
    #[serde(default)]
    pub last_trigger: u64,
    /// Unix ms.
    pub started_at_ms: u64,
    pub duration_ms: u64,
    /// The exit code, when the command exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the command, when one did.
    pub signal: Option<i32>,
    /// The command outlived its timeout and its process group was killed.
    pub timed_out: bool,
    /// Why the command could not run at all (`sh` missing, no pipe).
    pub error: Option<String>,
    /// The last 4 KiB of stdout and stderr, interleaved as written.
    pub output_tail: String,
}

impl RunRecord {
    /// Whether the provision succeeded: exit code 0 within the timeout.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// How it ended, in a few words: `exit code 3`, `killed by signal 9`,
    /// `timed out after 1800000 ms (killed by signal 9)`, or why it could
    /// not run.
    pub fn outcome(&self) -> String {
        let ended = match (&self.error, self.exit_code, self.signal) {
            (Some(error), _, _) => return error.clone(),
            (None, Some(code), _) => format!("exit code {code}"),
            (None, None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None, None) => "ended without an exit status".to_string(),
        };
        if self.timed_out { format!("timed out after {} ms ({ended})", self.duration_ms) } else { ended }
    }
}

/// Which balancer a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LbKind {
    Haproxy,
    /// Gantry's own TCP proxy, where haproxy is not installed.
    Builtin,
}

impl LbKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LbKind::Haproxy => "haproxy",
            LbKind::Builtin => "builtin",
        }
    }
}

/// A node's load balancer (`gantry lb:status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LbStatus {
    pub kind: LbKind,
    /// What it serves: the last plan it applied.
    pub frontends: Vec<Frontend>,
    /// Why some backends were kept although the server no longer lists them
    /// (the last-good guard after a reconnect).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The last time a changed plan was applied.
    #[serde(default)]
    pub last_apply: Option<LbApply>,
    /// Why the newest plan was refused (the previous one keeps serving).
    #[serde(default)]
    pub error: Option<String>,
    /// Where haproxy's Prometheus exporter answers `GET /metrics` (the
    /// node's address and port), while haproxy runs with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "10.0.0.5:8405")]
    pub exporter: Option<SocketAddr>,
}

/// What applying a changed plan took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LbApply {
    /// Unix ms.
    pub at_ms: u64,
    /// Validating the configuration (`haproxy -c`), in microseconds.
    pub check_us: u64,
    /// Swapping it in (writing, reloading, rebinding), in microseconds.
    pub reload_us: u64,
}

/// One listening address routing to one service's instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Frontend {
    /// The service id; also the haproxy frontend and backend name.
    pub service: String,
    /// Where the balancer listens: the node's address and the service's `local_port`.
    #[schema(value_type = String, example = "127.0.0.1:1100")]
    pub bind: SocketAddr,
    pub mode: LbMode,
    /// Whether this frontend is here because the service is public and this
    /// node is an external balancer (otherwise: a local service requires it).
    pub public: bool,
    /// Healthy instances, sorted by id; may be empty (connections are then refused or answered 503).
    pub backends: Vec<Backend>,
}

/// How the balancer speaks to clients and backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LbMode {
    /// HTTP/1.1: haproxy adds an `X-Request-ID` header (seed 002 "Trace-ID").
    Http,
    /// Plain TCP: bytes both ways.
    Tcp,
}

impl LbMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LbMode::Http => "http",
            LbMode::Tcp => "tcp",
        }
    }
}

/// One healthy instance behind a frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Backend {
    /// The instance id (the machine it runs on).
    pub id: String,
    #[schema(value_type = String, example = "127.0.0.2:1100")]
    pub address: SocketAddr,
}

/// `agents/<machine>/listener`: the listener's switch (`gantry listener:on|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerSwitch {
    /// Off: changes are noted, nothing runs; on again queues a run at once.
    pub enabled: bool,
}

/// `agents/<machine>/deploy`: asks one agent to re-run provisioning
/// (`gantry instance:deploy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Unique per request; the agent reports it back in [`AgentStatus::last_deploy`].
    pub id: String,
    /// Unix milliseconds.
    pub requested_at_ms: u64,
}

/// How a deploy request's provision run ended on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeployOutcome {
    pub id: String,
    pub ok: bool,
    /// Exit code, signal or "timed out"; empty when ok.
    #[serde(default)]
    pub detail: String,
    pub duration_ms: u64,
}

/// `agents/<machine>/service/<id>`: what `gantry service:stop/start/restart`
/// asked of a service on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceControl {
    /// False after `service:stop`, until `service:start`.
    pub running: bool,
    /// The newest restart request's id; the agent restarts once per new id.
    #[serde(default)]
    pub restart: Option<String>,
}

/// Every control document of one agent (`GET /v1/agents/<machine>/control`),
/// with the revision it was read at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentControl {
    pub revision: u64,
    #[serde(default)]
    pub listener: Option<ListenerSwitch>,
    #[serde(default)]
    pub deploy: Option<DeployRequest>,
    /// By service id.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceControl>,
    /// The release each service is to run, by service id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub releases: BTreeMap<String, crate::ReleaseTarget>,
}
