//! The rollout against a fleet in memory: batches of N, failures reported
//! without stopping anything, silent nodes timed out, order and counts.
//! Nodes answer after a number of status reads, so what happens does not
//! depend on the clock; the only waits are a millisecond's poll and the
//! silent node's short timeout.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use gantry_api::{AgentStatus, DeployOutcome, DeployRequest};

use super::{Fleet, NodeResult, Rollout, deploy};
use crate::ClientError;

/// How one node answers a deploy request.
#[derive(Debug, Clone, Copy)]
enum Node {
    /// Its run succeeds, seen in the status after this many reads.
    Ok(usize),
    /// Its run fails (exit code 3) after this many reads.
    Fails(usize),
    /// Never answers.
    Silent,
}

struct FakeFleet {
    nodes: BTreeMap<String, Node>,
    state: Mutex<FleetState>,
}

#[derive(Default)]
struct FleetState {
    /// The requests, in order: (machine, deploy id).
    requests: Vec<(String, String)>,
    reads: usize,
    /// Machine -> (deploy id, the read count when it was asked).
    asked: BTreeMap<String, (String, usize)>,
    /// Machines whose outcome a status read has shown.
    answered: Vec<String>,
    /// The most nodes asked and not yet answered at once.
    most_in_flight: usize,
}

impl FakeFleet {
    fn new(nodes: &[(&str, Node)]) -> FakeFleet {
        FakeFleet {
            nodes: nodes.iter().map(|(m, n)| (m.to_string(), *n)).collect(),
            state: Mutex::new(FleetState::default()),
        }
    }

    fn outcome(&self, machine: &str, id: &str, reads_since: usize) -> Option<DeployOutcome> {
        let (ok, after) = match self.nodes[machine] {
            Node::Ok(after) => (true, after),
            Node::Fails(after) => (false, after),
            Node::Silent => return None,
        };
        let detail = if ok { String::new() } else { "exit code 3".into() };
        (reads_since >= after).then(|| DeployOutcome { id: id.into(), ok, detail, duration_ms: 7 })
    }
}

impl Fleet for FakeFleet {
    async fn request_deploy(&self, machine: &str, request: &DeployRequest) -> Result<(), ClientError> {
        let mut state = self.state.lock().unwrap();
        state.requests.push((machine.into(), request.id.clone()));
        let reads = state.reads;
        state.asked.insert(machine.into(), (request.id.clone(), reads));
        let in_flight = state.asked.keys().filter(|m| !state.answered.contains(m)).count();
        state.most_in_flight = state.most_in_flight.max(in_flight);
        Ok(())
    }

    async fn statuses(&self) -> Result<Vec<AgentStatus>, ClientError> {
        let mut state = self.state.lock().unwrap();
        state.reads += 1;
        let mut statuses = Vec::new();
        for machine in self.nodes.keys() {
            let last_deploy = state.asked.get(machine).and_then(|(id, at)| self.outcome(machine, id, state.reads - at));
            if last_deploy.is_some() && !state.answered.contains(machine) {
                state.answered.push(machine.clone());
            }
            statuses.push(status(machine, last_deploy));
        }
        Ok(statuses)
    }
}

fn status(machine: &str, last_deploy: Option<DeployOutcome>) -> AgentStatus {
    AgentStatus {
        machine: machine.into(),
        group: Some("12_04-bee".into()),
        services: vec![],
        listener: None,
        problems: vec![],
        last_deploy,
        api: None,
        processes: BTreeMap::new(),
        lb: None,
        allocations: Default::default(),
        releases: Default::default(),
        server: None,
        updated_at_ms: 0,
    }
}

async fn run(fleet: &FakeFleet, machines: &[&str], batch: usize) -> (Vec<NodeResult>, Vec<String>) {
    let machines: Vec<String> = machines.iter().map(ToString::to_string).collect();
    let rollout = Rollout {
        id: "d1",
        machines: &machines,
        batch,
        timeout: Duration::from_millis(30),
        poll: Duration::from_millis(1),
    };
    let mut seen = Vec::new();
    let results = deploy(fleet, &rollout, |r| seen.push(r.machine.clone())).await.unwrap();
    (results, seen)
}

#[tokio::test]
async fn nodes_are_deployed_n_at_a_time_in_order() {
    let nodes = [("a", Node::Ok(1)), ("b", Node::Ok(3)), ("c", Node::Ok(2)), ("d", Node::Ok(1)), ("e", Node::Ok(1))];
    for batch in [1, 2, 3, 5, 0] {
        let fleet = FakeFleet::new(&nodes);
        let (results, seen) = run(&fleet, &["a", "b", "c", "d", "e"], batch).await;
        assert_eq!(seen, ["a", "b", "c", "d", "e"], "results come in the order asked");
        assert_eq!(results.iter().map(|r| r.machine.as_str()).collect::<Vec<_>>(), seen);
        assert!(results.iter().all(NodeResult::ok), "{results:?}");
        let state = fleet.state.lock().unwrap();
        assert_eq!(state.requests.len(), 5, "each node asked once");
        assert!(state.requests.iter().all(|(_, id)| id == "d1"));
        assert_eq!(state.most_in_flight, batch.max(1), "batch {batch}: at most N nodes at a time");
    }
}

#[tokio::test]
async fn a_failing_node_is_reported_and_stops_nothing() {
    let fleet = FakeFleet::new(&[("a", Node::Fails(1)), ("b", Node::Ok(1)), ("c", Node::Ok(2))]);
    let (results, _) = run(&fleet, &["a", "b", "c"], 1).await;
    let oks: Vec<bool> = results.iter().map(NodeResult::ok).collect();
    assert_eq!(oks, [false, true, true]);
    assert_eq!(results[0].outcome.as_ref().unwrap().detail, "exit code 3");
    assert_eq!(fleet.state.lock().unwrap().requests.len(), 3);
}

#[tokio::test]
async fn a_silent_node_times_out_and_the_next_batch_starts() {
    let fleet = FakeFleet::new(&[("a", Node::Ok(1)), ("b", Node::Silent), ("c", Node::Ok(1))]);
    let started = tokio::time::Instant::now();
    let (results, _) = run(&fleet, &["a", "b", "c"], 2).await;
    assert!(started.elapsed() >= Duration::from_millis(30), "the batch waited its timeout");
    assert_eq!(results[1], NodeResult { machine: "b".into(), outcome: None });
    assert!(results[0].ok() && results[2].ok(), "{results:?}");
    let requests: Vec<String> = fleet.state.lock().unwrap().requests.iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(requests, ["a", "b", "c"]);
}
