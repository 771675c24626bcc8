//! What the scheduler decides: allocations to place and to stop (a move is
//! a stop and the placement that `replaces` it), and the work that cannot
//! be placed, with the reason.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{Resources, cores};

/// The outcome of one [`crate::plan`] call. Empty `place` and `stop` mean
/// the cluster is as the jobs want it (or waits: see `pending` and
/// `next_evaluation`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub place: Vec<Placement>,
    pub stop: Vec<Stop>,
    pub pending: Vec<Pending>,
    /// The earliest time a delayed reschedule falls due: plan again then,
    /// even if nothing else changes.
    pub next_evaluation: Option<u64>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.place.is_empty() && self.stop.is_empty()
    }
}

/// A new allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// `<job>.<index>.<sequence>`: unique as long as each plan is given a
    /// new sequence.
    pub alloc: String,
    pub job: String,
    pub job_version: u64,
    pub index: u32,
    pub node: String,
    pub port: u16,
    pub resources: Resources,
    /// Why it is placed, and which allocation it replaces (stopped in the
    /// same plan).
    pub reason: PlaceReason,
    pub replaces: Option<String>,
    /// The reschedule history the new allocation carries.
    pub reschedules: Vec<u64>,
    /// The chosen node's score, 0 to 1 (higher is better for the job's
    /// strategy).
    pub score: f64,
    /// Why this node: the strategy's score, how many nodes were feasible
    /// and scored, the spread's counts, the constraints checked.
    pub explanation: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlaceReason {
    /// The job wants more allocations than it has.
    New,
    /// Its node was lost.
    Lost,
    /// It failed, and the job's `reschedule` allows another try.
    Rescheduled,
    /// Its node is draining.
    Drained,
    /// It runs an older version of the job.
    Updated,
}

/// An allocation to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub alloc: String,
    pub job: String,
    pub node: String,
    pub reason: StopReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    /// Its node's lease lapsed; replaced elsewhere.
    NodeLost,
    /// It failed; replaced elsewhere.
    Rescheduled,
    /// Its node is draining; replaced elsewhere.
    Drained,
    /// It runs an older version; replaced.
    Updated,
    /// The job's count went down.
    CountReduced,
    /// The job is gone.
    JobRemoved,
    /// Another allocation holds its index: it was replaced while its node
    /// was away, and the node came back.
    Stale,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::NodeLost => "node lost",
            StopReason::Rescheduled => "failed, rescheduled",
            StopReason::Drained => "node draining",
            StopReason::Updated => "new job version",
            StopReason::CountReduced => "count reduced",
            StopReason::JobRemoved => "job removed",
            StopReason::Stale => "replaced while its node was away",
        })
    }
}

/// Allocations of a job that are not running and will not be placed by
/// this plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub job: String,
    /// How many.
    pub count: u32,
    pub reason: PendingReason,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PendingReason {
    /// No node has room, or every node is filtered out.
    NoNodeFits(Blocked),
    /// Failed allocations whose job's `reschedule` attempts are used up
    /// within its interval: they stay failed.
    RescheduleLimit { attempts: u32, interval_s: u64 },
}

impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allocations = plural(self.count, "allocation", "allocations");
        match &self.reason {
            PendingReason::NoNodeFits(blocked) => {
                write!(f, "{} of {} cannot be placed: {blocked}", allocations, self.job)
            }
            PendingReason::RescheduleLimit { attempts, interval_s } => write!(
                f,
                "{allocations} of {} failed and stay failed: {} in {interval_s} s used up",
                self.job,
                plural(*attempts, "reschedule attempt", "reschedule attempts")
            ),
        }
    }
}

/// Why no node takes an allocation: every node counted once, under the
/// first check it fails (in the order of the fields).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Blocked {
    pub nodes: u32,
    pub down: u32,
    pub ineligible: u32,
    pub draining: u32,
    /// Constraint (as [`gantry_spec::Constraint`] shows it) to the nodes
    /// it filtered out.
    pub filtered: BTreeMap<String, u32>,
    /// Nodes that already run one of the job's allocations.
    pub distinct_hosts: u32,
    /// Nodes where the job's fixed port (or every port of its range) is
    /// taken.
    pub port_in_use: u32,
    pub lack_memory: u32,
    pub lack_cpu: u32,
    pub need: Resources,
    /// The most free memory of a node that lacked memory, and the most
    /// free CPU of one that lacked CPU.
    pub largest_free: Resources,
}

impl fmt::Display for Blocked {
    /// "3 nodes lack memory (need 512 MB, largest free 384 MB), 2 filtered
    /// by constraint region=us-east-1".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = |n: u32| plural(n, "node", "nodes");
        let mut parts = Vec::new();
        if self.nodes == 0 {
            parts.push("there are no nodes".to_string());
        }
        if self.lack_memory > 0 {
            parts.push(format!(
                "{} lack memory (need {} MB, largest free {} MB)",
                nodes(self.lack_memory),
                self.need.memory_mb,
                self.largest_free.memory_mb
            ));
        }
        if self.lack_cpu > 0 {
            parts.push(format!(
                "{} lack CPU (need {} cores, largest free {})",
                nodes(self.lack_cpu),
                cores(self.need.cpu_milli),
                cores(self.largest_free.cpu_milli)
            ));
        }
        for (constraint, n) in &self.filtered {
            parts.push(format!("{} filtered by constraint {constraint}", nodes(*n)));
        }
        let mut count = |n: u32, what: &str| {
            if n > 0 {
                parts.push(format!("{} {what}", nodes(n)));
            }
        };
        count(self.distinct_hosts, "already run one (distinct_hosts)");
        count(self.port_in_use, "have the port in use");
        count(self.down, "down");
        count(self.draining, "draining");
        count(self.ineligible, "ineligible");
        f.write_str(&parts.join(", "))
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
