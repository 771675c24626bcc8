//! Health checks (DESIGN.md "Discovery and load balancing"): an instance is
//! published, and routed to, only while its service's check says it is
//! healthy.
//!
//! [`Thresholds`] decides (pure: rise and fall over a stream of results);
//! [`probe`] runs one check (HTTP, TCP or a command) and never takes longer
//! than its timeout; [`Checker`] is the tokio task that probes every
//! interval and publishes a [`CheckStatus`] on a watch channel.

use std::time::Duration;

use gantry_api::now_ms;
use gantry_spec::Check;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

mod probe;

pub use probe::{CheckTarget, Probe, probe};

/// Rise/fall hysteresis: health flips to healthy after `rise` consecutive
/// passes and to unhealthy after `fall` consecutive failures, so one slow
/// answer does not pull an instance out of its balancers and one lucky
/// answer does not put a broken one in.
///
/// It starts unhealthy: a new instance is published only once it has passed
/// `rise` checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    rise: u32,
    fall: u32,
    healthy: bool,
    passes: u32,
    failures: u32,
}

impl Thresholds {
    /// `rise` and `fall` of 0 count as 1 (the spec rejects 0; a flip needs at
    /// least one result).
    pub fn new(rise: u32, fall: u32) -> Self {
        Thresholds { rise: rise.max(1), fall: fall.max(1), healthy: false, passes: 0, failures: 0 }
    }

    /// Counts one check result; returns the new health when it flips.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
        }
        let flips = if self.healthy { self.failures >= self.fall } else { self.passes >= self.rise };
        flips.then(|| {
            self.healthy = !self.healthy;
            self.healthy
        })
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Failures since the last pass (0 after a pass).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Passes since the last failure (0 after a failure).
    pub fn consecutive_passes(&self) -> u32 {
        self.passes
    }
}

/// What a [`Checker`] knows of its instance, as the agent publishes it
/// (a wire type, defined with the other agent documents).
pub use gantry_api::CheckStatus;

/// A service instance's health check, running: probes at once, then every
/// `interval`. Dropping it (or [`Checker::stop`]) stops the probes.
#[derive(Debug)]
pub struct Checker {
    status: watch::Receiver<CheckStatus>,
    task: JoinHandle<()>,
}

impl Checker {
    /// Starts probing `target` as `check` says, on the current tokio runtime.
    pub fn start(check: Check, target: CheckTarget) -> Checker {
        let (tx, rx) = watch::channel(CheckStatus::default());
        let task = tokio::spawn(run(check, target, tx));
        Checker { status: rx, task }
    }

    /// Wakes on the changes worth acting on: the first result, flips, and
    /// the probes that start or extend a streak towards one. Probes in a
    /// steady state (healthy and passing, unhealthy and failing) update the
    /// value without waking the receiver, so a short interval does not
    /// wake the agent on every probe.
    pub fn subscribe(&self) -> watch::Receiver<CheckStatus> {
        self.status.clone()
    }

    /// The status after the last probe.
    pub fn status(&self) -> CheckStatus {
        self.status.borrow().clone()
    }

    /// Stops probing; a command probe in flight is killed with its process group.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The status after one more probe, whose result `thresholds` has counted.
fn after(before: &CheckStatus, thresholds: &Thresholds, output: String, at_ms: u64, took_ms: u64) -> CheckStatus {
    CheckStatus {
        last_duration_ms: Some(took_ms),
        healthy: thresholds.healthy(),
        consecutive_failures: thresholds.consecutive_failures(),
        consecutive_passes: thresholds.consecutive_passes(),
        last_output: Some(output),
        last_checked_ms: Some(at_ms),
        checks: before.checks.saturating_add(1),
    }
}

/// Whether going from `before` to `after` is worth waking the checker's
/// subscribers: the first result, a flip, a streak that starts, or a streak
/// that is counting towards a flip. A steady state (healthy and passing,
/// unhealthy and failing) updates the status quietly, so a short interval
/// does not wake the agent on every probe.
/// Also each `restart_after`-th failure in a row, when the agent restarts
/// the process.
fn worth_waking(before: &CheckStatus, after: &CheckStatus, restart_after: u32) -> bool {
    let passing = |s: &CheckStatus| s.consecutive_passes > 0;
    let towards_flip = if after.healthy { after.consecutive_failures > 0 } else { after.consecutive_passes > 0 };
    let restart_due =
        restart_after > 0 && after.consecutive_failures > 0 && after.consecutive_failures.is_multiple_of(restart_after);
    before.checks == 0
        || before.healthy != after.healthy
        || passing(before) != passing(after)
        || towards_flip
        || restart_due
}

/// Until an instance's first pass, it is also probed between its regular
/// probes: this long after the last for [`STARTUP_BRISK`], then twice as
/// long each time, up to `interval`. A process that has just started is
/// seen listening within tens of milliseconds, not a whole interval later
/// (most start within a second); one that takes long to start costs a few
/// probes more per interval after that, not one per 25 ms.
pub const STARTUP_PROBE: Duration = Duration::from_millis(25);
/// How long startup probes stay [`STARTUP_PROBE`] apart before backing off.
pub const STARTUP_BRISK: Duration = Duration::from_secs(1);

async fn run(check: Check, target: CheckTarget, status: watch::Sender<CheckStatus>) {
    let mut thresholds = Thresholds::new(check.rise, check.fall);
    let mut ticks = tokio::time::interval(check.interval);
    // A probe that runs long delays the next one rather than bunching them.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut startup = STARTUP_PROBE.min(check.interval);
    let mut passed_once = false;
    let born = tokio::time::Instant::now();
    loop {
        // Before the first pass, startup probes between the regular ones:
        // their failures are not counted (a process still starting must
        // not reach `restart_after` sooner), their first pass is.
        let regular = if passed_once {
            ticks.tick().await;
            true
        } else {
            tokio::select! {
                _ = ticks.tick() => true,
                () = tokio::time::sleep(startup) => false,
            }
        };
        let started = std::time::Instant::now();
        let result = probe(&check.kind, &target, check.timeout).await;
        if !regular && !result.passed {
            if born.elapsed() >= STARTUP_BRISK {
                startup = (startup * 2).min(check.interval);
            }
            continue;
        }
        passed_once |= result.passed;
        let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        thresholds.record(result.passed);
        status.send_if_modified(|current| {
            let next = after(current, &thresholds, result.output, now_ms(), took_ms);
            let wake = worth_waking(current, &next, check.restart_after);
            *current = next;
            wake
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_unhealthy_and_rises_after_rise_passes() {
        let mut t = Thresholds::new(2, 3);
        assert!(!t.healthy());
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(true), None, "no flip while it stays healthy");
        assert!(t.healthy());
        assert_eq!(t.consecutive_passes(), 3);
    }

    #[test]
    fn falls_after_fall_consecutive_failures_only() {
        let mut t = Thresholds::new(1, 3);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a pass resets the failure count");
        assert_eq!(t.consecutive_failures(), 0);
        assert_eq!([t.record(false), t.record(false)], [None, None]);
        assert_eq!(t.consecutive_failures(), 2);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None, "no flip while it stays unhealthy");
        assert_eq!((t.consecutive_failures(), t.consecutive_passes()), (4, 0));
    }

    #[test]
    fn a_failure_restarts_the_rise() {
        let mut t = Thresholds::new(3, 1);
        assert_eq!([t.record(true), t.record(true), t.record(false)], [None, None, None]);
        assert_eq!([t.record(true), t.record(true)], [None, None]);
        assert_eq!(t.record(true), Some(true));
    }

    #[test]
    fn zero_thresholds_count_as_one() {
        let mut t = Thresholds::new(0, 0);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), Some(false));
    }

    /// The statuses after each result of `results`, and whether each woke subscribers.
    fn statuses(rise: u32, fall: u32, restart_after: u32, results: &[bool]) -> Vec<(bool, u32, u32, bool)> {
        let mut t = Thresholds::new(rise, fall);
        let mut status = CheckStatus::default();
        results
            .iter()
            .map(|&passed| {
                t.record(passed);
                let next = after(&status, &t, if passed { "ok" } else { "bad" }.into(), 1, 2);
                let woke = worth_waking(&status, &next, restart_after);
                status = next;
                (status.healthy, status.consecutive_passes, status.consecutive_failures, woke)
            })
            .collect()
    }

    #[test]
    fn only_flips_and_streaks_towards_a_flip_wake_subscribers() {
        let seen = statuses(2, 2, 0, &[false, false, true, true, true, true, false, true, false, false, false]);
        assert_eq!(
            seen,
            [
                (false, 0, 1, true),  // the first result
                (false, 0, 2, false), // unhealthy and failing: quiet
                (false, 1, 0, true),  // counting towards healthy
                (true, 2, 0, true),   // flip
                (true, 3, 0, false),  // healthy and passing: quiet
                (true, 4, 0, false),
                (true, 0, 1, true), // counting towards unhealthy
                (true, 1, 0, true), // back to passing
                (true, 0, 1, true),
                (false, 0, 2, true), // flip
                (false, 0, 3, false),
            ]
        );
    }

    #[test]
    fn every_restart_after_th_failure_wakes_subscribers() {
        let woke: Vec<bool> = statuses(1, 1, 3, &[false; 7]).into_iter().map(|s| s.3).collect();
        // The first result, then failures 3 and 6 (the agent restarts the process).
        assert_eq!(woke, [true, false, true, false, false, true, false]);
    }
}
