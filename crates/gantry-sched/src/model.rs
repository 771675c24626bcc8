//! What the scheduler is given: nodes, jobs, the allocations that exist,
//! the time, and a sequence number for the ids of new allocations.

use std::collections::{BTreeMap, BTreeSet};

pub use gantry_spec::{AttributeTest, Constraint, Reschedule, Spread, Strategy};

/// CPU in thousandths of a core and memory in MB. Whole numbers, so that
/// sums and comparisons are exact: a node is never overcommitted by a
/// rounding error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resources {
    pub cpu_milli: u64,
    pub memory_mb: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources { cpu_milli: 0, memory_mb: 0 };

    pub fn new(cpu_milli: u64, memory_mb: u64) -> Resources {
        Resources { cpu_milli, memory_mb }
    }

    /// What a job asks for, from cores: rounded up, so an ask is never
    /// smaller than the service file says.
    pub fn ask(cores: f64, memory_mb: u64) -> Resources {
        Resources { cpu_milli: (cores.max(0.0) * 1000.0).ceil() as u64, memory_mb }
    }

    /// What a node offers, from cores: rounded down, so a node never
    /// offers more than it has.
    pub fn offer(cores: f64, memory_mb: u64) -> Resources {
        Resources { cpu_milli: (cores.max(0.0) * 1000.0).floor() as u64, memory_mb }
    }

    /// Whether `self` fits in `free`.
    pub fn fits_in(self, free: Resources) -> bool {
        self.cpu_milli <= free.cpu_milli && self.memory_mb <= free.memory_mb
    }

    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_sub(other.cpu_milli),
            memory_mb: self.memory_mb.saturating_sub(other.memory_mb),
        }
    }
}

impl std::ops::Add for Resources {
    type Output = Resources;

    fn add(self, other: Resources) -> Resources {
        Resources { cpu_milli: self.cpu_milli + other.cpu_milli, memory_mb: self.memory_mb + other.memory_mb }
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpu {} cores, {} MB", cores(self.cpu_milli), self.memory_mb)
    }
}

/// Thousandths of a core as cores, without trailing zeros (`0.5`, `2`).
pub(crate) fn cores(milli: u64) -> String {
    let text = format!("{}.{:03}", milli / 1000, milli % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Whether a node takes new allocations, and whether it keeps its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Eligibility {
    #[default]
    Eligible,
    /// Takes no new allocations; keeps the ones it has (`node:drain`'s end
    /// state, or an operator's choice).
    Ineligible,
    /// Takes no new allocations, and its allocations move elsewhere, at
    /// most `max_parallel` of a job at a time.
    Draining,
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The machine id; unique.
    pub id: String,
    /// What constraints and spreads test: `group`, `region`, `federation`,
    /// `label.NAME`, `fact.NAME`. `machine` is always the node's id.
    pub attributes: BTreeMap<String, String>,
    /// What the node offers the scheduler: capacity less what its agent
    /// keeps for the system.
    pub allocatable: Resources,
    /// What the node's static services (run lists) reserve.
    pub reserved: Resources,
    /// Ports in use on the node besides allocations' (static services,
    /// the agent's own).
    pub used_ports: BTreeSet<u16>,
    /// Whether the node's lease is live. Allocations on a node that is not
    /// are lost, and replaced at once.
    pub alive: bool,
    pub eligibility: Eligibility,
}

impl Node {
    /// An alive, eligible node with nothing reserved.
    pub fn new(id: impl Into<String>, allocatable: Resources) -> Node {
        Node {
            id: id.into(),
            attributes: BTreeMap::new(),
            allocatable,
            reserved: Resources::ZERO,
            used_ports: BTreeSet::new(),
            alive: true,
            eligibility: Eligibility::Eligible,
        }
    }

    /// The node with one more attribute.
    pub fn with(mut self, attribute: &str, value: &str) -> Node {
        self.attributes.insert(attribute.to_string(), value.to_string());
        self
    }
}

/// The port each allocation of a job listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAsk {
    /// The service file fixes `PORT`: one allocation per node at most, on
    /// nodes where the port is free.
    Static(u16),
    /// A port of its own per allocation, the lowest free one of the range
    /// on its node.
    Dynamic { first: u16, last: u16 },
}

impl PortAsk {
    /// Nomad's dynamic port range.
    pub const DYNAMIC: PortAsk = PortAsk::Dynamic { first: 20000, last: 32000 };
}

/// A scheduled service: what to run, how many, and where it may go.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The service id; unique.
    pub id: String,
    /// Changes whenever the definition does; allocations of another
    /// version are replaced, `max_parallel` at a time.
    pub version: u64,
    pub count: u32,
    /// What one allocation needs.
    pub resources: Resources,
    pub constraints: Vec<Constraint>,
    pub spread: Vec<Spread>,
    pub strategy: Strategy,
    pub reschedule: Reschedule,
    pub port: PortAsk,
    /// How many of the job's allocations may be moving at once (drained
    /// or replaced by a new version): a move waits while this many of the
    /// job's allocations are pending. At least 1.
    pub max_parallel: u32,
}

impl Job {
    /// A binpacked job with no constraints and a dynamic port.
    pub fn new(id: impl Into<String>, count: u32, resources: Resources) -> Job {
        Job {
            id: id.into(),
            version: 1,
            count,
            resources,
            constraints: Vec::new(),
            spread: Vec::new(),
            strategy: Strategy::Binpack,
            reschedule: Reschedule::default(),
            port: PortAsk::DYNAMIC,
            max_parallel: 1,
        }
    }

    /// The job of a scheduled service (`None` for one run lists place):
    /// its resources rounded up, its fixed `PORT` if it has one.
    pub fn from_service(service: &gantry_spec::Service, version: u64) -> Option<Job> {
        let scheduling = service.scheduling.as_ref()?;
        let resources = Resources::ask(service.resources.cpu.unwrap_or(0.0), service.resources.memory_mb.unwrap_or(0));
        Some(Job {
            id: service.id.clone(),
            version,
            count: scheduling.count,
            resources,
            constraints: scheduling.constraints.clone(),
            spread: scheduling.spread.clone(),
            strategy: scheduling.strategy,
            reschedule: scheduling.reschedule,
            port: service.port().map_or(PortAsk::DYNAMIC, PortAsk::Static),
            max_parallel: 1,
        })
    }
}

/// What the scheduler wants of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Run,
    /// Stopped by a plan: the agent stops it, and nothing counts it.
    Stop,
}

/// What the agent last reported of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientState {
    /// Not yet running and passing its checks.
    Pending,
    Running,
    /// Failed past the agent's restarts in place: the scheduler replaces it
    /// as the job's `reschedule` says.
    Failed,
    /// Its node's lease lapsed.
    Lost,
}

/// One allocation: a job's instance `index` on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Alloc {
    pub id: String,
    pub job: String,
    pub job_version: u64,
    /// Which of the job's `count` this is (0-based); a replacement keeps it.
    pub index: u32,
    pub node: String,
    /// What it reserves on its node (its job version's ask).
    pub resources: Resources,
    pub port: u16,
    pub desired: Desired,
    pub client: ClientState,
    /// When the agent reported the failure (with `client: Failed`).
    pub failed_at: Option<u64>,
    /// When this index was rescheduled before (the failures history),
    /// oldest first; a replacement inherits its predecessor's.
    pub reschedules: Vec<u64>,
}

/// Everything a plan is computed from. The order of the lists does not
/// matter: the same content gives the same plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub nodes: Vec<Node>,
    pub jobs: Vec<Job>,
    pub allocs: Vec<Alloc>,
    /// The time, in seconds (any fixed origin; the caller's clock).
    pub now: u64,
    /// A number no earlier plan was given (the store revision the input
    /// was read at): new allocations' ids are `<job>.<index>.<sequence>`.
    pub sequence: u64,
}
