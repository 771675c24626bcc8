//! A plan applied to its input, as the server writes it to the store: for
//! `job:plan`'s "after", for simulations, and for the property that a plan
//! applied and planned again changes nothing.

use crate::model::{Alloc, ClientState, Desired, Input};
use crate::plan::Plan;

/// `input` after `plan`: stopped allocations desired `Stop`, placed ones
/// new and `Pending` (their agent has not started them yet). The time and
/// the sequence are left for the caller to advance.
pub fn apply(input: &Input, plan: &Plan) -> Input {
    let mut after = input.clone();
    for stop in &plan.stop {
        if let Some(alloc) = after.allocs.iter_mut().find(|a| a.id == stop.alloc) {
            alloc.desired = Desired::Stop;
        }
    }
    after.allocs.extend(plan.place.iter().map(|p| Alloc {
        id: p.alloc.clone(),
        job: p.job.clone(),
        job_version: p.job_version,
        index: p.index,
        node: p.node.clone(),
        resources: p.resources,
        port: p.port,
        desired: Desired::Run,
        client: ClientState::Pending,
        failed_at: None,
        reschedules: p.reschedules.clone(),
    }));
    after
}
