//! Where allocations go: strategies, constraints, spread, ports, static
//! reservations, and the reasons given when nothing fits (golden).

use std::collections::BTreeMap;

use expect_test::expect;
use gantry_sched::{AttributeTest, Constraint, PortAsk, Resources, Spread, Strategy};

use super::{converge, input, job, node, nodes_of};

#[test]
fn binpack_fills_the_fullest_node_that_fits() {
    let mut nodes = vec![node("a", 4, 4096), node("b", 4, 4096), node("c", 4, 4096)];
    nodes[1].reserved = Resources::new(2000, 2048);
    let plan = gantry_sched::plan(&input(nodes, vec![job("web", 2, 1000, 1024)]));
    // b is half full: both go there.
    assert_eq!(plan.place.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(), ["b", "b"]);
    assert!(plan.place[1].score > plan.place[0].score, "the second fills b further");
    assert!(plan.place[0].explanation.starts_with("binpack score 0."), "{}", plan.place[0].explanation);
}

#[test]
fn spread_strategy_takes_the_emptiest_node() {
    let mut nodes = vec![node("a", 4, 4096), node("b", 4, 4096), node("c", 4, 4096)];
    nodes[0].reserved = Resources::new(1000, 1024);
    nodes[1].reserved = Resources::new(3000, 3072);
    let mut web = job("web", 3, 500, 512);
    web.strategy = Strategy::Spread;
    let plan = gantry_sched::plan(&input(nodes, vec![web]));
    let placed: Vec<&str> = plan.place.iter().map(|p| p.node.as_str()).collect();
    // c (empty), then a and c tie-break by room: c still has the most.
    assert_eq!(placed[0], "c");
    assert!(!placed.contains(&"b"), "b is the fullest: {placed:?}");
}

#[test]
fn static_reservations_and_running_allocations_are_counted() {
    let mut nodes = vec![node("a", 2, 1024)];
    nodes[0].reserved = Resources::new(1000, 512);
    // Room for one more of 512 MB, not two.
    let plan = gantry_sched::plan(&input(nodes, vec![job("w", 2, 500, 512)]));
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.pending.len(), 1);
    expect!["1 allocation of w cannot be placed: 1 node lack memory (need 512 MB, largest free 0 MB)"]
        .assert_eq(&plan.pending[0].to_string());
}

#[test]
fn constraints_filter_nodes() {
    let nodes = vec![
        node("a", 4, 4096).with("region", "us-east-1").with("label.rack", "r1"),
        node("b", 4, 4096).with("region", "us-west-2").with("label.rack", "r2"),
        node("c", 4, 4096).with("region", "us-east-1").with("label.rack", "r3").with("fact.os", "ubuntu-24.04"),
        node("d", 4, 4096).with("fact.os", "debian-12"),
    ];
    let attribute = |a: &str, test| Constraint::Attribute { attribute: a.into(), test };
    let cases = [
        (attribute("region", AttributeTest::Equals("us-east-1".into())), vec!["a", "c"]),
        (attribute("region", AttributeTest::NotEquals("us-east-1".into())), vec!["b", "d"]),
        (attribute("label.rack", AttributeTest::In(vec!["r2".into(), "r3".into()])), vec!["b", "c"]),
        (attribute("fact.os", AttributeTest::Regex("^ubuntu-2[24]".into())), vec!["c"]),
        (attribute("machine", AttributeTest::Equals("d".into())), vec!["d"]),
    ];
    for (constraint, allowed) in cases {
        let mut w = job("w", 4, 100, 100);
        w.constraints = vec![constraint.clone(), Constraint::DistinctHosts];
        let plan = gantry_sched::plan(&input(nodes.clone(), vec![w]));
        let mut placed: Vec<&str> = plan.place.iter().map(|p| p.node.as_str()).collect();
        placed.sort();
        assert_eq!(placed, allowed, "{constraint}");
        assert_eq!(plan.pending.iter().map(|p| p.count).sum::<u32>(), 4 - allowed.len() as u32, "{constraint}");
    }
}

#[test]
fn why_nothing_fits_counts_every_node_once() {
    let mut nodes: Vec<_> = (0..5).map(|i| node(&format!("n{i}"), 4, 384).with("region", "us-east-1")).collect();
    nodes.push(node("w1", 8, 8192).with("region", "us-west-2"));
    nodes.push(node("w2", 8, 8192).with("region", "us-west-2"));
    nodes.push(node("x", 1, 8192).with("region", "us-east-1"));
    let mut dead = node("dead", 8, 8192).with("region", "us-east-1");
    dead.alive = false;
    nodes.push(dead);
    let mut w = job("api", 3, 2000, 512);
    w.constraints =
        vec![Constraint::Attribute { attribute: "region".into(), test: AttributeTest::Equals("us-east-1".into()) }];
    let plan = gantry_sched::plan(&input(nodes, vec![w]));
    assert!(plan.place.is_empty());
    expect!["3 allocations of api cannot be placed: 5 nodes lack memory (need 512 MB, largest free 384 MB), 1 node lack CPU (need 2 cores, largest free 1), 2 nodes filtered by constraint region=us-east-1, 1 node down"]
        .assert_eq(&plan.pending[0].to_string());
}

#[test]
fn distinct_hosts_and_a_fixed_port_allow_one_per_node() {
    let nodes = vec![node("a", 8, 8192), node("b", 8, 8192)];
    let mut distinct = job("d", 3, 100, 100);
    distinct.constraints = vec![Constraint::DistinctHosts];
    let mut fixed = job("f", 3, 100, 100);
    fixed.port = PortAsk::Static(8080);
    let plan = gantry_sched::plan(&input(nodes, vec![distinct, fixed]));
    for j in ["d", "f"] {
        let mut on: Vec<&str> = plan.place.iter().filter(|p| p.job == j).map(|p| p.node.as_str()).collect();
        on.sort();
        assert_eq!(on, ["a", "b"], "{j}");
    }
    let reasons: Vec<String> = plan.pending.iter().map(ToString::to_string).collect();
    expect![[r#"
        [
            "1 allocation of d cannot be placed: 2 nodes already run one (distinct_hosts)",
            "1 allocation of f cannot be placed: 2 nodes have the port in use",
        ]
    "#]]
    .assert_debug_eq(&reasons);
}

#[test]
fn dynamic_ports_differ_on_a_node_and_skip_used_ones() {
    let mut a = node("a", 8, 8192);
    a.used_ports = [20000, 20002].into();
    let plan = gantry_sched::plan(&input(vec![a], vec![job("w", 3, 100, 100)]));
    let ports: Vec<u16> = plan.place.iter().map(|p| p.port).collect();
    assert_eq!(ports, [20001, 20003, 20004]);
}

#[test]
fn spread_targets_split_by_percent() {
    let nodes: Vec<_> =
        (0..12).map(|i| node(&format!("n{i:02}"), 16, 16384).with("label.rack", &format!("r{}", i % 3))).collect();
    let mut w = job("w", 10, 100, 100);
    w.spread = vec![Spread {
        attribute: "label.rack".into(),
        targets: BTreeMap::from([("r0".to_string(), 50), ("r1".to_string(), 30)]),
    }];
    let (after, _) = converge(input(nodes.clone(), vec![w.clone()]));
    let rack = |n: &str| nodes.iter().find(|x| x.id == n).unwrap().attributes["label.rack"].clone();
    let mut per_rack = BTreeMap::new();
    for (_, n) in nodes_of(&after, "w") {
        *per_rack.entry(rack(&n)).or_insert(0) += 1;
    }
    assert_eq!(per_rack, BTreeMap::from([("r0".into(), 5), ("r1".into(), 3), ("r2".into(), 2)]));

    // Without targets: even.
    w.spread[0].targets.clear();
    w.count = 9;
    let plan = gantry_sched::plan(&input(nodes.clone(), vec![w]));
    let mut per_rack = BTreeMap::new();
    for p in &plan.place {
        *per_rack.entry(rack(&p.node)).or_insert(0) += 1;
    }
    assert_eq!(per_rack.values().copied().collect::<Vec<_>>(), [3, 3, 3]);
    assert!(plan.place[0].explanation.contains("spread label.rack="), "{}", plan.place[0].explanation);
}

#[test]
fn compaction_compares_nodes_used_with_the_lower_bound() {
    let nodes: Vec<_> = (0..6).map(|i| node(&format!("n{i}"), 4, 4096)).collect();
    // 6 cores and 3 GB of demand: two nodes at the least (CPU decides).
    let (packed, _) = converge(input(nodes.clone(), vec![job("w", 3, 2000, 1024)]));
    let c = gantry_sched::compaction(&packed);
    assert_eq!((c.nodes_used, c.lower_bound, c.ratio), (2, 2, 1.0));
    // Spread out, the same work takes three.
    let mut spread = job("w", 3, 2000, 1024);
    spread.strategy = Strategy::Spread;
    let (loose, _) = converge(input(nodes, vec![spread]));
    let c = gantry_sched::compaction(&loose);
    assert_eq!((c.nodes_used, c.lower_bound, c.ratio), (3, 2, 1.5));
}

#[test]
fn one_plan_pairs_memory_heavy_and_cpu_heavy_asks_of_different_jobs() {
    let nodes: Vec<_> = (0..4).map(|i| node(&format!("n{i}"), 2, 2048)).collect();
    // Two of "a" fill a node's memory and strand three quarters of its
    // CPU; one "a" and one "b" fill a node exactly.
    let jobs = vec![job("a", 2, 250, 1024), job("b", 2, 1750, 1024)];
    let plan = gantry_sched::plan(&input(nodes.clone(), jobs.clone()));
    assert_eq!(plan.place.len(), 4);
    let c = gantry_sched::compaction(&gantry_sched::apply(&input(nodes.clone(), jobs.clone()), &plan));
    assert_eq!((c.nodes_used, c.lower_bound), (2, 2));
    // Each node holds one of each.
    let mut by_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in &plan.place {
        by_node.entry(p.node.as_str()).or_default().push(p.job.as_str());
    }
    for (node, jobs) in &by_node {
        let mut jobs = jobs.clone();
        jobs.sort_unstable();
        assert_eq!(jobs, ["a", "b"], "{node}");
    }
    // Planned one job at a time, "a" cannot know "b" is coming: three
    // nodes (the limit of placing each job as it arrives).
    let (after_a, _) = converge(input(nodes, jobs[..1].to_vec()));
    let both = gantry_sched::Input { jobs, ..after_a.clone() };
    let c = gantry_sched::compaction(&gantry_sched::apply(&both, &gantry_sched::plan(&both)));
    assert_eq!((c.nodes_used, c.lower_bound), (3, 2));
}

#[test]
fn a_job_from_a_scheduled_service_file() {
    let text = r#"{"id": "worker", "command": "exec bin/worker", "count": 3,
                   "resources": {"cpu": 0.25, "memory_mb": 300},
                   "constraints": [{"operator": "distinct_hosts"}], "strategy": "spread"}"#;
    let service = gantry_spec::parse_service_json("worker", text).unwrap_or_else(|e| panic!("{}", e.render()));
    let job = gantry_sched::Job::from_service(&service, 7).expect("scheduled");
    assert_eq!((job.id.as_str(), job.version, job.count), ("worker", 7, 3));
    assert_eq!(job.resources, Resources::new(250, 300));
    assert_eq!(job.port, PortAsk::DYNAMIC);
    assert_eq!(job.strategy, Strategy::Spread);
    assert_eq!(job.constraints, [Constraint::DistinctHosts]);
    // A fixed PORT is a static port ask; a run-list service is no job.
    let fixed = text.replace("\"count\": 3,", "\"count\": 3, \"environment\": {\"PORT\": 9000},");
    let service = gantry_spec::parse_service_json("worker", &fixed).unwrap();
    assert_eq!(gantry_sched::Job::from_service(&service, 1).unwrap().port, PortAsk::Static(9000));
    let static_service =
        gantry_spec::parse_service_json("worker", r#"{"id": "worker", "command": "exec bin/worker"}"#).unwrap();
    assert!(gantry_sched::Job::from_service(&static_service, 1).is_none());
}
