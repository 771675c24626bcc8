//! `gantry nodes:usage`: per node and in total, what it offers the
//! scheduler, what is reserved on it (its static services' and its
//! allocations' `resources`), and what its processes actually use; and how
//! tightly the work is packed (Google's "cluster compaction": the nodes
//! in use against the fewest that could hold the reserved work).
//!
//! [`FleetUsage::of`] is pure: it is computed from documents the API
//! serves, so it is tested without a server.

use gantry_api::{AgentStatus, Allocation, DesiredState, Machine, NodeUsage, Resources, ServiceDefinition};
use serde::Serialize;

use crate::{Client, ClientError};

/// One node's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeLine {
    pub machine: String,
    /// What the scheduler may hand out (capacity less `--reserve`); zero
    /// for a node that publishes no capacity (an older agent).
    pub allocatable: Resources,
    /// The `resources` of the static services it runs and of the
    /// allocations placed on it.
    pub reserved: Resources,
    /// Measured by its agent: the CPU cores busy and the resident memory of
    /// the process trees it supervises (its services and allocations; not
    /// the rest of the machine, which local nodes of `gantry up` share).
    pub used: Option<Resources>,
    /// Allocations placed on it (not stopped).
    pub allocations: u32,
    pub eligible: bool,
}

/// The fleet in total, and the packing figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetUsage {
    pub nodes: Vec<NodeLine>,
    pub total: Totals,
    pub packing: Packing,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub allocatable: Resources,
    pub reserved: Resources,
    pub used: Resources,
}

/// Nodes holding reserved work against the fewest that could hold it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Packing {
    pub nodes_in_use: u32,
    /// The lower bound: the fewest nodes (largest first) whose allocatable
    /// CPU covers the reserved CPU, and likewise memory; the larger of the two.
    pub lower_bound: u32,
}

impl FleetUsage {
    /// From the API's documents: machines (with their capacity), agents'
    /// statuses (the static services each runs), service definitions (their
    /// `resources`), allocations, usages, and the nodes marked ineligible.
    pub fn of(
        machines: &[Machine],
        statuses: &[AgentStatus],
        services: &[ServiceDefinition],
        allocations: &[Allocation],
        usages: &[NodeUsage],
        ineligible: &[String],
    ) -> FleetUsage {
        let wants = |id: &str| {
            services.iter().find(|s| s.id == id).and_then(|s| s.resources.as_ref()).map_or(Resources::ZERO, |r| {
                Resources { cpu: r.cpu.unwrap_or(0.0), memory_mb: r.memory_mb.unwrap_or(0) }
            })
        };
        let mut nodes: Vec<NodeLine> = machines
            .iter()
            .map(|m| {
                let placed: Vec<&Allocation> =
                    allocations.iter().filter(|a| a.machine == m.id && a.desired == DesiredState::Run).collect();
                let mut reserved = placed.iter().fold(Resources::ZERO, |sum, a| sum + a.resources);
                if let Some(status) = statuses.iter().find(|s| s.machine == m.id) {
                    // Static services are the units not named after an allocation.
                    for name in status.processes.keys().filter(|n| !status.allocations.contains_key(*n)) {
                        reserved = reserved + wants(name);
                    }
                }
                NodeLine {
                    machine: m.id.clone(),
                    allocatable: m.capacity.map_or(Resources::ZERO, |c| c.allocatable()),
                    reserved,
                    used: usages.iter().find(|u| u.machine == m.id).map(|u| {
                        u.processes.values().fold(Resources::ZERO, |sum, p| {
                            sum + Resources { cpu: p.cpu, memory_mb: p.rss_mb.round() as u64 }
                        })
                    }),
                    allocations: u32::try_from(placed.len()).unwrap_or(u32::MAX),
                    eligible: !ineligible.contains(&m.id),
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.machine.cmp(&b.machine));
        let sum = |f: &dyn Fn(&NodeLine) -> Resources| nodes.iter().fold(Resources::ZERO, |t, n| t + f(n));
        let total = Totals {
            allocatable: sum(&|n| n.allocatable),
            reserved: sum(&|n| n.reserved),
            used: sum(&|n| n.used.unwrap_or(Resources::ZERO)),
        };
        let in_use = nodes.iter().filter(|n| n.reserved.cpu > 0.0 || n.reserved.memory_mb > 0).count();
        let capacities: Vec<Resources> = nodes.iter().map(|n| n.allocatable).collect();
        let packing = Packing {
            nodes_in_use: u32::try_from(in_use).unwrap_or(u32::MAX),
            lower_bound: lower_bound(total.reserved, &capacities),
        };
        FleetUsage { nodes, total, packing }
    }

    /// Reads what [`FleetUsage::of`] needs from the server.
    pub async fn read(client: &Client) -> Result<FleetUsage, ClientError> {
        let machines = client.machines().await?;
        let statuses = client.agent_statuses().await?;
        let services = client.services().await?;
        let allocations = client.allocations().await?;
        let usages = client.usages().await?;
        let ineligible: Vec<String> =
            client.eligibilities().await?.items.into_iter().filter(|e| !e.eligible).map(|e| e.machine).collect();
        Ok(FleetUsage::of(
            &machines.items,
            &statuses.items,
            &services.items,
            &allocations.items,
            &usages.items,
            &ineligible,
        ))
    }
}

/// The fewest of `nodes` that together offer `demand`, as the scheduler
/// counts it ([`gantry_sched::lower_bound`]: the roomiest first, per
/// dimension; all of them when even that falls short).
pub fn lower_bound(demand: Resources, nodes: &[Resources]) -> u32 {
    let rooms: Vec<gantry_sched::model::Resources> =
        nodes.iter().map(|n| gantry_sched::model::Resources::offer(n.cpu, n.memory_mb)).collect();
    let demand = gantry_sched::model::Resources::ask(demand.cpu, demand.memory_mb);
    u32::try_from(gantry_sched::lower_bound(demand, &rooms)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cpu: f64, memory_mb: u64) -> Resources {
        Resources { cpu, memory_mb }
    }

    #[test]
    fn the_lower_bound_takes_the_largest_nodes_first_in_each_dimension() {
        let nodes = [r(2.0, 700), r(1.0, 4000), r(4.0, 1000)];
        assert_eq!(lower_bound(Resources::ZERO, &nodes), 0);
        assert_eq!(lower_bound(r(3.0, 100), &nodes), 1, "the 4-core node alone");
        assert_eq!(lower_bound(r(0.5, 4500), &nodes), 2, "memory needs the 4000 and the 1000");
        assert_eq!(lower_bound(r(6.5, 10), &nodes), 3);
        assert_eq!(lower_bound(r(0.1 + 0.2, 0), &[r(0.3, 0)]), 1, "float sums get their slack");
        assert_eq!(lower_bound(r(100.0, 0), &nodes), 3, "short of room: every node");
    }
}
