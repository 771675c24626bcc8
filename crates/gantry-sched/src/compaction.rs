//! Packing quality as Google's "cluster compaction" measures it: the nodes
//! a workload occupies against the fewest that could hold it.

use crate::model::{Desired, Input, Resources};

/// Nodes in use against the lower bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compaction {
    /// Nodes running at least one live allocation.
    pub nodes_used: usize,
    /// The fewest nodes whose room adds up to the allocations' demand, in
    /// CPU and in memory, taking the roomiest nodes first: no placement
    /// can use fewer.
    pub lower_bound: usize,
    /// `nodes_used / lower_bound` (1 is perfect).
    pub ratio: f64,
}

/// The compaction of `input`'s live allocations (apply a plan first to
/// judge the plan).
pub fn compaction(input: &Input) -> Compaction {
    let live: Vec<_> = input.allocs.iter().filter(|a| a.desired == Desired::Run).collect();
    let mut used: Vec<&str> = live.iter().map(|a| a.node.as_str()).collect();
    used.sort_unstable();
    used.dedup();
    let room: Vec<Resources> = input.nodes.iter().map(|n| n.allocatable.saturating_sub(n.reserved)).collect();
    let demand = live.iter().fold(Resources::ZERO, |sum, a| sum + a.resources);
    let lower_bound = lower_bound(demand, &room);
    let ratio = if lower_bound == 0 { 1.0 } else { used.len() as f64 / lower_bound as f64 };
    Compaction { nodes_used: used.len(), lower_bound, ratio }
}

/// The fewest of `rooms` that together hold `demand`: per dimension, the
/// roomiest first, and the larger count of CPU's and memory's (no placement
/// can use fewer); every room when even all of them fall short.
pub fn lower_bound(demand: Resources, rooms: &[Resources]) -> usize {
    let fewest = |dimension: fn(&Resources) -> u64| {
        let mut sizes: Vec<u64> = rooms.iter().map(dimension).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let need = dimension(&demand);
        let mut sum = 0;
        sizes
            .iter()
            .take_while(|&&s| {
                let short = sum < need;
                sum += s;
                short
            })
            .count()
    };
    fewest(|r| r.cpu_milli).max(fewest(|r| r.memory_mb))
}
