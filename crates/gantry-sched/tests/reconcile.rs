//! What happens to existing allocations: count changes, new versions, lost
//! and returning nodes, failures and their reschedule delays, draining
//! and ineligible nodes, removed jobs.

use gantry_sched::{ClientState, Desired, Eligibility, Input, PendingReason, PlaceReason, Reschedule, StopReason};

use super::{converge, input, job, node, nodes_of, settle};

fn cluster(nodes: usize) -> Vec<gantry_sched::Node> {
    (0..nodes).map(|i| node(&format!("n{i}"), 4, 4096)).collect()
}

/// `count` allocations of a job `w` (500 m, 512 MB), placed and running.
fn running(nodes: usize, count: u32) -> Input {
    let (state, rounds) = converge(input(cluster(nodes), vec![job("w", count, 500, 512)]));
    assert_eq!(rounds, 1);
    state
}

#[test]
fn count_up_adds_and_count_down_stops_the_highest_indexes() {
    let mut state = running(3, 2);
    state.jobs[0].count = 4;
    let plan = gantry_sched::plan(&state);
    assert_eq!(
        plan.place.iter().map(|p| (p.index, p.reason)).collect::<Vec<_>>(),
        [(2, PlaceReason::New), (3, PlaceReason::New)]
    );
    let mut state = settle(&state, &plan);
    state.jobs[0].count = 1;
    let plan = gantry_sched::plan(&state);
    assert!(plan.place.is_empty());
    let stopped: Vec<(&str, StopReason)> = plan.stop.iter().map(|s| (s.alloc.as_str(), s.reason)).collect();
    assert_eq!(
        stopped,
        [("w.1.1", StopReason::CountReduced), ("w.2.2", StopReason::CountReduced), ("w.3.2", StopReason::CountReduced)]
    );
}

#[test]
fn a_new_version_replaces_max_parallel_at_a_time() {
    let mut state = running(3, 4);
    state.jobs[0].version = 2;
    state.jobs[0].max_parallel = 2;
    let plan = gantry_sched::plan(&state);
    assert_eq!(plan.place.len(), 2);
    assert!(plan.place.iter().all(|p| p.reason == PlaceReason::Updated && p.job_version == 2 && p.replaces.is_some()));
    assert!(plan.stop.iter().all(|s| s.reason == StopReason::Updated));
    // While the replacements are pending, nothing more moves.
    let applied = gantry_sched::apply(&state, &plan);
    assert!(gantry_sched::plan(&Input { sequence: 9, ..applied }).is_empty());
    // Once they run, the other two go; then it is done.
    let (done, rounds) = converge(settle(&state, &plan));
    assert_eq!(rounds, 1);
    assert!(done.allocs.iter().filter(|a| a.desired == Desired::Run).all(|a| a.job_version == 2));
}

#[test]
fn a_lost_node_is_replaced_at_once_and_its_return_stops_the_stale_copies() {
    let state = running(3, 6);
    let lost = nodes_of(&state, "w")[0].1.clone();
    let on_lost = nodes_of(&state, "w").iter().filter(|(_, n)| *n == lost).count();
    let mut down = state.clone();
    down.nodes.iter_mut().find(|n| n.id == lost).unwrap().alive = false;
    let plan = gantry_sched::plan(&down);
    assert_eq!(plan.place.len(), on_lost, "every allocation of the lost node, at once (no max_parallel)");
    assert!(plan.place.iter().all(|p| p.reason == PlaceReason::Lost && p.node != lost));
    // Each a move: the placement names the stopped allocation it replaces.
    for p in &plan.place {
        let replaced = p.replaces.as_deref().expect("a lost allocation's replacement names it");
        assert!(plan.stop.iter().any(|s| s.alloc == replaced && s.node == lost), "{replaced}");
    }
    assert!(plan.stop.iter().all(|s| s.reason == StopReason::NodeLost && s.node == lost));

    // The node comes back before the stops reached it: its agent reports
    // the old allocations running again, beside their replacements.
    let mut back = settle(&down, &plan);
    back.nodes.iter_mut().find(|n| n.id == lost).unwrap().alive = true;
    for alloc in back.allocs.iter_mut().filter(|a| a.node == lost) {
        alloc.desired = Desired::Run;
        alloc.client = ClientState::Running;
    }
    let plan = gantry_sched::plan(&back);
    assert!(plan.place.is_empty());
    assert_eq!(plan.stop.len(), on_lost);
    assert!(plan.stop.iter().all(|s| s.reason == StopReason::Stale && s.node == lost), "{:?}", plan.stop);
}

#[test]
fn a_failed_allocation_is_rescheduled_elsewhere_after_a_doubling_delay() {
    let mut state = running(3, 1);
    state.jobs[0].reschedule = Reschedule { attempts: Some(2), interval_s: 600, delay_s: 10, max_delay_s: 15 };
    let fail = |state: &mut Input| {
        let now = state.now;
        let alloc = state.allocs.iter_mut().find(|a| a.desired == Desired::Run).unwrap();
        alloc.client = ClientState::Failed;
        alloc.failed_at = Some(now);
        alloc.node.clone()
    };
    let first_node = fail(&mut state);
    // Not before the delay: the plan says when to look again.
    let plan = gantry_sched::plan(&state);
    assert!(plan.is_empty());
    assert_eq!(plan.next_evaluation, Some(state.now + 10));
    state.now += 10;
    let plan = gantry_sched::plan(&state);
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].reason, PlaceReason::Rescheduled);
    assert_ne!(plan.place[0].node, first_node, "another node when there is one");
    assert_eq!(plan.place[0].reschedules, [state.now]);
    assert_eq!(plan.stop[0].reason, StopReason::Rescheduled);

    // The second failure waits twice as long, capped at max_delay_s.
    let mut state = settle(&state, &plan);
    fail(&mut state);
    assert_eq!(gantry_sched::plan(&state).next_evaluation, Some(state.now + 15));
    state.now += 15;
    let mut state = settle(&state, &gantry_sched::plan(&state));
    // The third is past the limit (2 within 600 s): it stays failed.
    fail(&mut state);
    state.now += 100;
    let plan = gantry_sched::plan(&state);
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(plan.pending[0].reason, PendingReason::RescheduleLimit { attempts: 2, interval_s: 600 });
    expect_test::expect!["1 allocation of w failed and stay failed: 2 reschedule attempts in 600 s used up"]
        .assert_eq(&plan.pending[0].to_string());
    // Once the first attempt (at 1011) leaves the window, there is one again.
    state.now = 1011 + 601;
    assert_eq!(gantry_sched::plan(&state).place.len(), 1);
}

#[test]
fn a_draining_node_moves_max_parallel_at_a_time_and_an_ineligible_one_keeps_its_own() {
    let mut state = running(3, 6);
    let busiest = nodes_of(&state, "w")[0].1.clone();
    let on_it = nodes_of(&state, "w").iter().filter(|(_, n)| *n == busiest).count();
    assert!(on_it >= 2, "binpack put several on one node");
    let mut ineligible = state.clone();
    ineligible.nodes.iter_mut().find(|n| n.id == busiest).unwrap().eligibility = Eligibility::Ineligible;
    assert!(gantry_sched::plan(&ineligible).is_empty());

    state.nodes.iter_mut().find(|n| n.id == busiest).unwrap().eligibility = Eligibility::Draining;
    let mut rounds = 0;
    loop {
        let plan = gantry_sched::plan(&state);
        if plan.is_empty() {
            break;
        }
        assert_eq!(plan.place.len(), 1, "max_parallel 1");
        assert_eq!(plan.place[0].reason, PlaceReason::Drained);
        assert_eq!(plan.stop[0].reason, StopReason::Drained);
        // Pending replacements hold the next move back.
        assert!(gantry_sched::plan(&Input { sequence: 99, ..gantry_sched::apply(&state, &plan) }).is_empty());
        state = settle(&state, &plan);
        rounds += 1;
    }
    assert_eq!(rounds, on_it);
    assert!(nodes_of(&state, "w").iter().all(|(_, n)| *n != busiest));
    assert_eq!(nodes_of(&state, "w").len(), 6);
}

#[test]
fn a_move_with_nowhere_to_go_keeps_the_old_allocation() {
    let mut state = running(1, 2);
    state.nodes[0].eligibility = Eligibility::Draining;
    let plan = gantry_sched::plan(&state);
    assert!(plan.is_empty(), "{plan:?}");
    expect_test::expect!["1 allocation of w cannot be placed: 1 node draining"].assert_eq(&plan.pending[0].to_string());
}

#[test]
fn allocations_of_a_removed_job_stop() {
    let mut state = running(2, 2);
    state.jobs.clear();
    let plan = gantry_sched::plan(&state);
    assert_eq!(plan.stop.len(), 2);
    assert!(plan.stop.iter().all(|s| s.reason == StopReason::JobRemoved));
}

#[test]
fn ids_are_job_index_sequence() {
    let plan = gantry_sched::plan(&Input { sequence: 42, ..input(cluster(1), vec![job("api", 2, 100, 100)]) });
    assert_eq!(plan.place.iter().map(|p| p.alloc.as_str()).collect::<Vec<_>>(), ["api.0.42", "api.1.42"]);
}
