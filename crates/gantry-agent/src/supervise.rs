//! The process supervisor (seed 003: "a parent process that monitors these
//! processes all the time, ensuring they're running and restarts them when
//! they die"). This first part is the restart discipline: a [`Backoff`]
//! that grows while a process keeps failing and resets after a run that
//! lasted, pure so that it is tested with plain durations.

mod backoff;

pub use backoff::{Backoff, RestartPolicy};
