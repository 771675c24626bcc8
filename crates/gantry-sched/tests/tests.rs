//! Tests of the scheduler: placement (strategies, constraints, spread,
//! ports, the reasons given), reconciliation (count, versions, lost,
//! failed, draining and returning nodes), and properties over random
//! clusters (no overcommit, constraints hold, determinism, a plan applied
//! and planned again changes nothing).

mod placement;
mod properties;
mod reconcile;

use gantry_sched::{ClientState, Input, Job, Node, Plan, Resources};

/// A node of `cores` and `memory_mb`, alive and eligible.
fn node(id: &str, cores: u64, memory_mb: u64) -> Node {
    Node::new(id, Resources::new(cores * 1000, memory_mb))
}

/// A job of `count` allocations of `cpu_milli` and `memory_mb` each.
fn job(id: &str, count: u32, cpu_milli: u64, memory_mb: u64) -> Job {
    Job::new(id, count, Resources::new(cpu_milli, memory_mb))
}

fn input(nodes: Vec<Node>, jobs: Vec<Job>) -> Input {
    Input { nodes, jobs, allocs: Vec::new(), now: 1000, sequence: 1 }
}

/// `input` after `plan`, with every new allocation running (its agent
/// started it and it passes its checks), the sequence and time advanced.
fn settle(input: &Input, plan: &Plan) -> Input {
    let mut after = gantry_sched::apply(input, plan);
    for alloc in &mut after.allocs {
        if alloc.client == ClientState::Pending {
            alloc.client = ClientState::Running;
        }
    }
    after.sequence += 1;
    after.now += 1;
    after
}

/// Plans and settles until the plan is empty (at most 50 rounds); the
/// final state and how many rounds changed something.
fn converge(mut input: Input) -> (Input, usize) {
    for round in 0..50 {
        let plan = gantry_sched::plan(&input);
        if plan.is_empty() {
            return (input, round);
        }
        input = settle(&input, &plan);
    }
    panic!("no fixed point after 50 plans");
}

/// The node each live allocation of `job` is on, by index.
fn nodes_of(input: &Input, job: &str) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = input
        .allocs
        .iter()
        .filter(|a| a.job == job && a.desired == gantry_sched::Desired::Run)
        .map(|a| (a.index, a.node.clone()))
        .collect();
    out.sort();
    out
}
