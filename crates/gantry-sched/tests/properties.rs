//! Properties over random clusters, jobs and histories: a plan never
//! overcommits a node's CPU or memory (static reservations included),
//! constraints and distinct_hosts hold, the same input in any order gives
//! the same plan, a plan applied and planned again changes nothing, and a
//! lost node's allocations are replaced elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use gantry_sched::{
    AttributeTest, ClientState, Constraint, Desired, Eligibility, Input, Job, Node, PortAsk, Resources, Spread,
};
use proptest::prelude::*;

use super::{converge, settle};

const REGIONS: &[&str] = &["us-east-1", "us-west-2", "eu-west-1"];

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (1u64..=16, 1u64..=32, 0u64..=50, 0..REGIONS.len(), 0u8..5).prop_map(
        move |(cores, gb, reserve_pct, region, rack)| {
            let mut node = Node::new(format!("n{i:03}"), Resources::new(cores * 1000, gb * 1024))
                .with("region", REGIONS[region])
                .with("label.rack", &format!("r{rack}"));
            node.reserved = Resources::new(cores * 10 * reserve_pct, gb * 1024 * reserve_pct / 100);
            node
        },
    )
}

fn arb_constraint() -> impl Strategy<Value = Constraint> {
    prop_oneof![
        (0..REGIONS.len()).prop_map(|r| Constraint::Attribute {
            attribute: "region".into(),
            test: AttributeTest::Equals(REGIONS[r].into())
        }),
        (0..REGIONS.len()).prop_map(|r| Constraint::Attribute {
            attribute: "region".into(),
            test: AttributeTest::NotEquals(REGIONS[r].into())
        }),
        Just(Constraint::Attribute {
            attribute: "label.rack".into(),
            test: AttributeTest::In(vec!["r0".into(), "r1".into(), "r2".into()])
        }),
        Just(Constraint::Attribute { attribute: "region".into(), test: AttributeTest::Regex("^us-".into()) }),
        Just(Constraint::DistinctHosts),
    ]
}

fn arb_job(i: usize) -> impl Strategy<Value = Job> {
    (
        0u32..12,
        50u64..4000,
        64u64..8192,
        proptest::collection::vec(arb_constraint(), 0..3),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        1u32..3,
    )
        .prop_map(move |(count, cpu, mem, constraints, spread, spread_strategy, fixed_port, max_parallel)| {
            let mut job = Job::new(format!("j{i}"), count, Resources::new(cpu, mem));
            job.constraints = constraints;
            if spread {
                job.spread = vec![Spread { attribute: "label.rack".into(), targets: BTreeMap::new() }];
            }
            if spread_strategy {
                job.strategy = gantry_sched::Strategy::Spread;
            }
            if fixed_port {
                job.port = PortAsk::Static(8000 + i as u16);
            }
            job.max_parallel = max_parallel;
            job
        })
}

/// What happens to a settled cluster before the plan under test.
#[derive(Debug, Clone)]
struct Events {
    /// Node positions (modulo the node count) that go down, drain, turn
    /// ineligible.
    down: Vec<usize>,
    drain: Vec<usize>,
    ineligible: Vec<usize>,
    /// Allocation positions that fail.
    fail: Vec<usize>,
    /// Per job: a new count, a new version.
    counts: Vec<Option<u32>>,
    bump: Vec<bool>,
    /// Nodes down before that come back with their old allocations.
    back: bool,
}

fn arb_events() -> impl Strategy<Value = Events> {
    let positions = || proptest::collection::vec(0usize..1000, 0..3);
    (
        positions(),
        positions(),
        positions(),
        positions(),
        proptest::collection::vec(proptest::option::of(0u32..12), 6),
        proptest::collection::vec(any::<bool>(), 6),
        any::<bool>(),
    )
        .prop_map(|(down, drain, ineligible, fail, counts, bump, back)| Events {
            down,
            drain,
            ineligible,
            fail,
            counts,
            bump,
            back,
        })
}

fn arb_input() -> impl Strategy<Value = Input> {
    (1usize..24, 1usize..6).prop_flat_map(|(nodes, jobs)| {
        let nodes: Vec<_> = (0..nodes).map(arb_node).collect();
        let jobs: Vec<_> = (0..jobs).map(arb_job).collect();
        (nodes, jobs).prop_map(|(nodes, jobs)| Input { nodes, jobs, allocs: Vec::new(), now: 5000, sequence: 1 })
    })
}

/// A settled cluster after `events`: the input of the plan under test.
fn perturb(settled: &Input, events: &Events) -> Input {
    let mut input = settled.clone();
    let n = input.nodes.len();
    for &i in &events.down {
        input.nodes[i % n].alive = false;
    }
    for &i in &events.drain {
        input.nodes[i % n].eligibility = Eligibility::Draining;
    }
    for &i in &events.ineligible {
        input.nodes[i % n].eligibility = Eligibility::Ineligible;
    }
    let live: Vec<usize> = (0..input.allocs.len()).filter(|&i| input.allocs[i].desired == Desired::Run).collect();
    if !live.is_empty() {
        for &i in &events.fail {
            let alloc = &mut input.allocs[live[i % live.len()]];
            alloc.client = ClientState::Failed;
            alloc.failed_at = Some(input.now - 100);
        }
    }
    for (job, (count, bump)) in input.jobs.iter_mut().zip(events.counts.iter().zip(&events.bump)) {
        if let Some(count) = count {
            job.count = *count;
        }
        if *bump {
            job.version += 1;
        }
    }
    input.sequence += 1;
    input
}

/// Every property of one plan of `input`.
fn check_plan(input: &Input) -> Result<(), TestCaseError> {
    let plan = gantry_sched::plan(input);
    let after = gantry_sched::apply(input, &plan);
    let nodes: BTreeMap<&str, &Node> = input.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let jobs: BTreeMap<&str, &Job> = input.jobs.iter().map(|j| (j.id.as_str(), j)).collect();

    // No overcommit on a node the plan placed on, static reservations included.
    let mut used: BTreeMap<&str, Resources> = BTreeMap::new();
    for a in after.allocs.iter().filter(|a| a.desired == Desired::Run) {
        let u = used.entry(a.node.as_str()).or_default();
        *u = *u + a.resources;
    }
    for p in &plan.place {
        let node = nodes[p.node.as_str()];
        let total = node.reserved + used[p.node.as_str()];
        prop_assert!(total.fits_in(node.allocatable), "{} overcommitted: {total:?} of {:?}", node.id, node.allocatable);
        prop_assert!(node.alive && node.eligibility == Eligibility::Eligible, "placed on {node:?}");
        // Constraints hold.
        for c in &jobs[p.job.as_str()].constraints {
            if let Constraint::Attribute { attribute, test } = c {
                let value = node.attributes.get(attribute);
                let ok = match test {
                    AttributeTest::Equals(v) => value == Some(v),
                    AttributeTest::NotEquals(v) => value != Some(v),
                    AttributeTest::In(vs) => value.is_some_and(|x| vs.contains(x)),
                    AttributeTest::Regex(r) => value.is_some_and(|x| x.starts_with(r.trim_start_matches('^'))),
                };
                prop_assert!(ok, "{} on {} breaks {c}", p.alloc, node.id);
            }
        }
    }
    // distinct_hosts, fixed ports: one per node among the live allocations.
    let mut per_node: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut ports: BTreeSet<(&str, u16)> = BTreeSet::new();
    for a in after.allocs.iter().filter(|a| a.desired == Desired::Run && nodes[a.node.as_str()].alive) {
        *per_node.entry((a.job.as_str(), a.node.as_str())).or_default() += 1;
        prop_assert!(ports.insert((a.node.as_str(), a.port)), "port {} twice on {}", a.port, a.node);
    }
    for ((job, node), n) in per_node {
        if let Some(j) = jobs.get(job)
            && j.constraints.contains(&Constraint::DistinctHosts)
            && plan.place.iter().any(|p| p.job == job)
        {
            prop_assert!(n <= 1, "{job} has {n} allocations on {node} despite distinct_hosts");
        }
    }
    // Lost nodes' allocations are stopped and replaced elsewhere.
    for a in input.allocs.iter().filter(|a| a.desired == Desired::Run && !nodes[a.node.as_str()].alive) {
        prop_assert!(plan.stop.iter().any(|s| s.alloc == a.id), "{} on a lost node not stopped", a.id);
        if jobs.get(a.job.as_str()).is_some_and(|j| a.index < j.count) {
            let replaced = plan.place.iter().any(|p| p.job == a.job && p.index == a.index);
            let pending = plan.pending.iter().any(|p| p.job == a.job);
            prop_assert!(replaced || pending, "{} neither replaced nor pending", a.id);
        }
    }
    prop_assert!(plan.place.iter().all(|p| nodes[p.node.as_str()].alive));

    // The same input in another order: the same plan.
    let mut shuffled = input.clone();
    shuffled.nodes.reverse();
    shuffled.jobs.reverse();
    shuffled.allocs.reverse();
    prop_assert_eq!(&gantry_sched::plan(&shuffled), &plan);

    // Applied, then planned again: nothing more to do.
    let again = gantry_sched::plan(&Input { sequence: input.sequence + 1, ..after });
    prop_assert!(again.is_empty(), "second plan not empty: {:?} {:?}", again.place, again.stop);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn plans_of_a_fresh_cluster_keep_every_property(input in arb_input()) {
        check_plan(&input)?;
    }

    #[test]
    fn plans_after_failures_drains_losses_and_changes_keep_every_property(
        input in arb_input(),
        events in arb_events(),
    ) {
        let (settled, _) = converge(input);
        let perturbed = perturb(&settled, &events);
        check_plan(&perturbed)?;
        if events.back {
            // The lost nodes return with their old allocations running,
            // after the replacements were placed.
            let plan = gantry_sched::plan(&perturbed);
            let mut returned = settle(&perturbed, &plan);
            let lost: BTreeSet<String> = perturbed.nodes.iter().filter(|n| !n.alive).map(|n| n.id.clone()).collect();
            for node in returned.nodes.iter_mut().filter(|n| lost.contains(&n.id)) {
                node.alive = true;
            }
            for alloc in returned.allocs.iter_mut().filter(|a| lost.contains(&a.node) && a.desired == Desired::Stop) {
                alloc.desired = Desired::Run;
                alloc.client = ClientState::Running;
            }
            check_plan(&returned)?;
        }
    }
}
