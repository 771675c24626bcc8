//! The scheduler: where the allocations of scheduled services run.
//!
//! [`plan`] takes an [`Input`] (nodes with what they offer and what their
//! static services reserve, jobs, the allocations that exist, the time)
//! and returns a [`Plan`]: allocations to place (node, port, score and
//! why), allocations to stop (and why), moves (a stop and the placement
//! that `replaces` it) and what cannot be placed, with the reason
//! ("3 nodes lack memory (need 512 MB, largest free 384 MB), 2 filtered
//! by constraint region=us-east-1").
//!
//! Architecture invariant: this crate does no IO and reads no clock; time
//! is an input. The same input gives the same plan: nodes, jobs and
//! allocations are taken in id order whatever order they come in, maps are
//! ordered, nothing is random, and new allocations' ids are derived from
//! the job, the index and the input's sequence.
#![forbid(unsafe_code)]

mod apply;
mod cluster;
mod compaction;
pub mod model;
pub mod plan;
mod schedule;

pub use apply::apply;
pub use compaction::{Compaction, compaction, lower_bound};
pub use model::{
    Alloc, AttributeTest, ClientState, Constraint, Desired, Eligibility, Input, Job, Node, PortAsk, Reschedule,
    Resources, Spread, Strategy,
};
pub use plan::{Blocked, Pending, PendingReason, PlaceReason, Placement, Plan, Stop, StopReason};
pub use schedule::plan;
