//! The provision listener (seed 001 "Listeners"): when something a service
//! listens to changes, re-run the provision command (chef-solo, any script),
//! with the discipline the seed asks for:
//!
//! - never two runs at once, and at most one queued: later triggers fold
//!   into the queued run (counted, their reasons kept up to a cap);
//! - a throttle, kept in `<data_dir>/listener.json` so it holds across
//!   agent restarts: a minimum interval between starts and at most N starts
//!   per window, against stampedes when a failing service keeps triggering;
//! - an on/off switch: while off, triggers are remembered and nothing runs;
//!   turning it on queues a run at once, since anything may have changed;
//! - each run in its own process group with a timeout after which the whole
//!   group is killed, its outcome and output tail recorded.
//!
//! [`ListenerState`] decides (pure, fake-clock tested); [`Listener`] is the
//! tokio task around it.

mod process;
mod runner;
mod state;

pub use process::OUTPUT_TAIL_BYTES;
pub use runner::{Listener, ListenerConfig, STATE_FILE};
pub use state::{
    Action, ListenerState, ListenerStatus, MAX_REASON_BYTES, MAX_REASONS, RunRecord, RunRequest, RunState, SavedState,
    Throttle,
};
