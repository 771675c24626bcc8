//! One step of a rollout, decided without IO: from the rollout as stored
//! and what each node's agent reports, the rollout's next state, which
//! nodes to tell to run which release, and whether it is over.
//!
//! Nodes move `max_parallel` at a time (never all of them:
//! [`Update::moving_at_once`]); a node is told, then reports
//! fetching, draining, starting and healthy (or failed) for the version it
//! was told. The first failure (or `deploy:abort`) stops the rollout; with
//! `auto_revert` (always on abort) every node that was told goes back to
//! the stable release. With `canary: N` the rollout stops after N healthy
//! nodes until `deploy:promote`.

use std::collections::BTreeMap;

use gantry_api::{NodePhase, ReleaseStatus, ReleaseTarget, Rollout, RolloutPhase, UnitRelease};
use gantry_spec::Update;

/// Between telling a node and its report of the version told: the fetch,
/// its hooks and the process's start get this on top of the release's
/// `shutdown_delay` and `healthy_deadline` (the agent enforces those).
pub const REPORT_SLACK_MS: u64 = 60_000;

/// What one node's agent says about the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Its agent's status lists the service.
    pub running: bool,
    pub report: Option<UnitRelease>,
}

/// What a step decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Nodes to tell, with the release each is to run.
    pub tell: Vec<(String, ReleaseTarget)>,
    /// `Some` when the rollout is over: the release's final status and why.
    pub finished: Option<(ReleaseStatus, Option<String>)>,
}

impl Step {
    /// The release's status while the rollout goes on.
    pub fn status(rollout: &Rollout) -> ReleaseStatus {
        if rollout.phase == RolloutPhase::Canary { ReleaseStatus::AwaitingPromotion } else { ReleaseStatus::Running }
    }
}

/// Advances `rollout` (this release is `target`) on the agents' reports.
pub fn step(
    rollout: &mut Rollout,
    target: &ReleaseTarget,
    update: &Update,
    views: &BTreeMap<String, NodeView>,
    now_ms: u64,
) -> Step {
    let deadline = target.shutdown_delay_ms + target.healthy_deadline_ms + REPORT_SLACK_MS;
    let stable_version = rollout.stable.as_ref().map(|s| s.version);
    for node in rollout.nodes.iter_mut().filter(|n| n.told_ms > 0) {
        if matches!(node.phase, NodePhase::Healthy | NodePhase::Failed | NodePhase::Reverted) {
            continue;
        }
        let want = if node.reverting { stable_version.unwrap_or(target.version) } else { target.version };
        let view = views.get(&node.machine);
        // An agent away (a server restart, a lease renewed late) is given
        // until the deadline; one that says it no longer runs the service
        // has failed now.
        let (phase, message) = match view {
            Some(NodeView { report: Some(r), .. }) if r.version == want => (r.phase, r.message.clone()),
            Some(NodeView { running: false, .. }) => {
                (NodePhase::Failed, Some("the node no longer runs the service".to_owned()))
            }
            _ if now_ms.saturating_sub(node.told_ms) > deadline => (
                NodePhase::Failed,
                Some(match view {
                    None => format!("its agent is gone (no status for {}s)", deadline / 1000),
                    Some(_) => format!("no report of v{want} from its agent within {}s", deadline / 1000),
                }),
            ),
            _ => (node.phase, node.message.clone()),
        };
        let (phase, message) = match (node.reverting, phase) {
            (true, NodePhase::Healthy) => (NodePhase::Reverted, Some(format!("back on v{want}"))),
            (true, NodePhase::Failed) => {
                (NodePhase::Failed, Some(format!("reverting to v{want}: {}", message.unwrap_or_default())))
            }
            other => (other.1, message),
        };
        if phase != node.phase {
            node.since_ms = now_ms;
        }
        node.phase = phase;
        node.message = message;
    }

    let mut step = Step::default();
    match rollout.phase {
        RolloutPhase::Rolling | RolloutPhase::Canary => {
            let failure = rollout
                .nodes
                .iter()
                .find(|n| n.phase == NodePhase::Failed)
                .map(|n| format!("{}: {}", n.machine, n.message.as_deref().unwrap_or("failed")));
            if rollout.aborted || failure.is_some() {
                let reason = if rollout.aborted { rollout.reason.clone() } else { failure };
                rollout.reason.clone_from(&reason);
                let give_up = if rollout.aborted { ReleaseStatus::Aborted } else { ReleaseStatus::Failed };
                let stable = rollout.stable.clone().filter(|_| rollout.aborted || update.auto_revert);
                let Some(stable) = stable else {
                    step.finished = Some((give_up, reason));
                    return step;
                };
                rollout.phase = RolloutPhase::Reverting;
                for node in rollout.nodes.iter_mut().filter(|n| n.told_ms > 0) {
                    node.reverting = true;
                    node.phase = NodePhase::Fetching;
                    node.told_ms = now_ms;
                    node.since_ms = now_ms;
                    step.tell.push((node.machine.clone(), stable.clone()));
                }
                if step.tell.is_empty() {
                    step.finished = Some((give_up, reason));
                }
                return step;
            }
            if rollout.phase == RolloutPhase::Canary && rollout.promoted {
                rollout.phase = RolloutPhase::Rolling;
            }
            let in_flight = |n: &&gantry_api::NodeProgress| {
                n.told_ms > 0 && matches!(n.phase, NodePhase::Fetching | NodePhase::Draining | NodePhase::Starting)
            };
            let mut flying = rollout.nodes.iter().filter(in_flight).count();
            let mut told = rollout.nodes.iter().filter(|n| n.told_ms > 0).count();
            let limit = if update.canary > 0 && !rollout.promoted { update.canary as usize } else { usize::MAX };
            let parallel = update.moving_at_once(rollout.nodes.len());
            for node in rollout.nodes.iter_mut().filter(|n| n.told_ms == 0) {
                if flying >= parallel || told >= limit {
                    break;
                }
                node.phase = NodePhase::Fetching;
                node.told_ms = now_ms;
                node.since_ms = now_ms;
                step.tell.push((node.machine.clone(), target.clone()));
                flying += 1;
                told += 1;
            }
            let pending = rollout.nodes.iter().filter(|n| n.told_ms == 0).count();
            if pending == 0 && flying == 0 {
                step.finished = Some((ReleaseStatus::Succeeded, None));
            } else if pending > 0 && flying == 0 && told >= limit {
                rollout.phase = RolloutPhase::Canary;
            }
        }
        RolloutPhase::Reverting => {
            let busy = rollout
                .nodes
                .iter()
                .any(|n| n.reverting && !matches!(n.phase, NodePhase::Reverted | NodePhase::Failed));
            if !busy {
                let failed: Vec<&str> = rollout
                    .nodes
                    .iter()
                    .filter(|n| n.reverting && n.phase == NodePhase::Failed)
                    .map(|n| n.machine.as_str())
                    .collect();
                let mut reason = rollout.reason.clone().unwrap_or_default();
                if !failed.is_empty() {
                    reason.push_str(&format!("; the revert failed on {}", failed.join(", ")));
                }
                let status = if rollout.aborted { ReleaseStatus::Aborted } else { ReleaseStatus::Reverted };
                step.finished = Some((status, Some(reason)));
            }
        }
    }
    step
}

#[cfg(test)]
mod tests {
    use gantry_api::NodeProgress;

    use super::*;

    fn target(version: u64) -> ReleaseTarget {
        ReleaseTarget {
            service: "api".into(),
            version,
            sha256: format!("{version:064}"),
            size: 1,
            shutdown_delay_ms: 1000,
            min_healthy_ms: 1000,
            healthy_deadline_ms: 10_000,
        }
    }

    fn rollout(nodes: usize, stable: Option<u64>) -> Rollout {
        Rollout {
            service: "api".into(),
            version: 2,
            sha256: target(2).sha256,
            size: 1,
            who: "alice".into(),
            started_ms: 0,
            phase: RolloutPhase::Rolling,
            stable: stable.map(target),
            promoted: false,
            reason: None,
            aborted: false,
            nodes: (0..nodes)
                .map(|i| NodeProgress {
                    machine: format!("m{i}"),
                    phase: NodePhase::Pending,
                    message: None,
                    told_ms: 0,
                    since_ms: 0,
                    reverting: false,
                })
                .collect(),
        }
    }

    fn views(reports: &[(usize, u64, NodePhase)], nodes: usize) -> BTreeMap<String, NodeView> {
        (0..nodes)
            .map(|i| {
                let report = reports.iter().find(|r| r.0 == i).map(|r| UnitRelease {
                    version: r.1,
                    phase: r.2,
                    message: Some("why".into()),
                });
                (format!("m{i}"), NodeView { running: true, report })
            })
            .collect()
    }

    fn told(step: &Step) -> Vec<(&str, u64)> {
        step.tell.iter().map(|(m, t)| (m.as_str(), t.version)).collect()
    }

    #[test]
    fn nodes_move_max_parallel_at_a_time_until_all_are_healthy() {
        let update = Update { max_parallel: 2, ..Update::default() };
        let mut r = rollout(3, Some(1));
        let s = step(&mut r, &target(2), &update, &views(&[], 3), 10);
        assert_eq!(told(&s), [("m0", 2), ("m1", 2)]);
        let s = step(&mut r, &target(2), &update, &views(&[(0, 2, NodePhase::Starting)], 3), 20);
        assert!(s.tell.is_empty());
        let s = step(&mut r, &target(2), &update, &views(&[(0, 2, NodePhase::Healthy)], 3), 30);
        assert_eq!(told(&s), [("m2", 2)]);
        let all = views(&[(0, 2, NodePhase::Healthy), (1, 2, NodePhase::Healthy), (2, 2, NodePhase::Healthy)], 3);
        let s = step(&mut r, &target(2), &update, &all, 40);
        assert_eq!(s.finished, Some((ReleaseStatus::Succeeded, None)));
    }

    #[test]
    fn one_node_keeps_serving_whatever_max_parallel_says() {
        let at_once = |max_parallel, nodes| Update { max_parallel, ..Update::default() }.moving_at_once(nodes);
        assert_eq!(at_once(20, 20), 19);
        assert_eq!(at_once(5, 20), 5);
        assert_eq!(at_once(3, 2), 1);
        assert_eq!(at_once(1, 1), 1, "a lone node must still move");
        let update = Update { max_parallel: 3, ..Update::default() };
        let mut r = rollout(3, Some(1));
        let s = step(&mut r, &target(2), &update, &views(&[], 3), 10);
        assert_eq!(told(&s), [("m0", 2), ("m1", 2)], "m2 serves while they switch");
        let s = step(&mut r, &target(2), &update, &views(&[(0, 2, NodePhase::Healthy)], 3), 20);
        assert_eq!(told(&s), [("m2", 2)], "m0 is back in rotation");
    }

    #[test]
    fn a_failure_reverts_every_told_node_to_the_stable_release() {
        let update = Update { max_parallel: 2, ..Update::default() };
        let mut r = rollout(3, Some(1));
        step(&mut r, &target(2), &update, &views(&[], 3), 10);
        let s = step(&mut r, &target(2), &update, &views(&[(0, 2, NodePhase::Failed)], 3), 20);
        assert_eq!(told(&s), [("m0", 1), ("m1", 1)]);
        assert_eq!(r.phase, RolloutPhase::Reverting);
        assert_eq!(r.reason.as_deref(), Some("m0: why"));
        let back = views(&[(0, 1, NodePhase::Healthy), (1, 1, NodePhase::Healthy)], 3);
        let s = step(&mut r, &target(2), &update, &back, 30);
        assert_eq!(s.finished, Some((ReleaseStatus::Reverted, Some("m0: why".into()))));
        assert_eq!(r.nodes[2].phase, NodePhase::Pending, "never switched, never told");
    }

    #[test]
    fn without_auto_revert_a_failure_stops_where_it_is() {
        let update = Update { auto_revert: false, ..Update::default() };
        let mut r = rollout(2, Some(1));
        step(&mut r, &target(2), &update, &views(&[], 2), 10);
        let s = step(&mut r, &target(2), &update, &views(&[(0, 2, NodePhase::Failed)], 2), 20);
        assert!(s.tell.is_empty());
        assert_eq!(s.finished, Some((ReleaseStatus::Failed, Some("m0: why".into()))));
    }

    #[test]
    fn canaries_wait_for_promotion() {
        let update = Update { canary: 1, max_parallel: 3, ..Update::default() };
        let mut r = rollout(3, Some(1));
        let s = step(&mut r, &target(2), &update, &views(&[], 3), 10);
        assert_eq!(told(&s), [("m0", 2)]);
        let s = step(&mut r, &target(2), &update, &views(&[(0, 2, NodePhase::Healthy)], 3), 20);
        assert!(s.tell.is_empty() && s.finished.is_none());
        assert_eq!(r.phase, RolloutPhase::Canary);
        r.promoted = true;
        let s = step(&mut r, &target(2), &update, &views(&[(0, 2, NodePhase::Healthy)], 3), 30);
        assert_eq!(told(&s), [("m1", 2), ("m2", 2)]);
        assert_eq!(r.phase, RolloutPhase::Rolling);
    }

    #[test]
    fn a_silent_or_gone_node_fails_after_the_deadline() {
        let update = Update::default();
        let mut r = rollout(2, None);
        step(&mut r, &target(2), &update, &views(&[], 2), 10);
        let late = 10 + 1000 + 10_000 + REPORT_SLACK_MS + 1;
        let s = step(&mut r, &target(2), &update, &views(&[], 2), late);
        assert!(matches!(s.finished, Some((ReleaseStatus::Failed, Some(ref why))) if why.contains("no report of v2")));
        let mut r = rollout(1, None);
        step(&mut r, &target(2), &update, &views(&[], 1), 10);
        let s = step(&mut r, &target(2), &update, &BTreeMap::new(), 20);
        assert!(s.finished.is_none(), "an agent away is waited for");
        let s = step(&mut r, &target(2), &update, &BTreeMap::new(), late);
        assert!(
            matches!(s.finished, Some((ReleaseStatus::Failed, Some(ref why))) if why.contains("its agent is gone"))
        );
    }
}
