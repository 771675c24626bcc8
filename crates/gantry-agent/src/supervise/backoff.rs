//! How long the supervisor waits before starting a process again: an
//! exponential backoff with a cap, reset by a run that lasted. Pure: the
//! caller says how long the run lasted, so it is tested with plain durations.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The delays between a process's exit and its next start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// The delay after the first exit, and after any run that lasted
    /// `reset_after`.
    pub initial: Duration,
    /// Each further exit in a row waits this many times longer (a factor
    /// below 1, or not a number, is taken as 1: delays never shrink).
    pub factor: f64,
    /// The longest delay.
    pub max: Duration,
    /// A run at least this long was healthy: the next delay is `initial`
    /// again, so a service that crashes once a day restarts at once rather
    /// than after the delay its last crash loop reached.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    /// 1 s, 2 s, 4 s ... up to 60 s; a run of 60 s resets it. A crash loop
    /// settles at one start a minute, and a blip costs one second.
    fn default() -> Self {
        RestartPolicy {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// The backoff state of one supervised process.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RestartPolicy,
    /// The delay the next exit gets, unless its run lasted.
    next: Duration,
    restarts: u64,
}

impl Backoff {
    pub fn new(policy: RestartPolicy) -> Self {
        Backoff { policy, next: policy.initial.min(policy.max), restarts: 0 }
    }

    /// The process exited (or could not start) after running `ran_for`:
    /// returns how long to wait before starting it again, and lengthens the
    /// delay for the next exit.
    pub fn on_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.reset_after {
            self.reset();
        }
        let delay = self.next;
        self.next = grow(delay, self.policy.factor).min(self.policy.max);
        self.restarts += 1;
        delay
    }

    /// Back to `initial`, as if the process had never failed: an operator
    /// starting it by hand wants it started now and watched afresh.
    pub fn reset(&mut self) {
        self.next = self.policy.initial.min(self.policy.max);
    }

    /// How many delays [`Backoff::on_exit`] has handed out: the restarts
    /// that exits caused (a reset does not clear it).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
}

/// `delay * factor`, saturating: a policy read from a file must not panic.
fn grow(delay: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor.max(1.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(initial: u64, factor: f64, max: u64, reset_after: u64) -> RestartPolicy {
        RestartPolicy { initial: ms(initial), factor, max: ms(max), reset_after: ms(reset_after) }
    }

    /// The delays `n` quick exits in a row get.
    fn delays(backoff: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n).map(|_| backoff.on_exit(ms(10)).as_millis() as u64).collect()
    }

    #[test]
    fn quick_exits_double_the_delay_up_to_the_cap() {
        let mut backoff = Backoff::new(RestartPolicy::default());
        assert_eq!(delays(&mut backoff, 9), [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
        assert_eq!(backoff.restarts(), 9);
    }

    #[test]
    fn a_run_that_lasted_resets_the_delay() {
        let mut backoff = Backoff::new(policy(100, 2.0, 1000, 5000));
        assert_eq!(delays(&mut backoff, 4), [100, 200, 400, 800]);
        assert_eq!(backoff.on_exit(ms(4999)), ms(1000), "just short of reset_after");
        assert_eq!(backoff.on_exit(ms(5000)), ms(100), "a run of reset_after resets");
        assert_eq!(delays(&mut backoff, 2), [200, 400], "and the doubling starts over");
        assert_eq!(backoff.restarts(), 8);
    }

    #[test]
    fn reset_goes_back_to_initial_but_keeps_the_count() {
        let mut backoff = Backoff::new(policy(50, 3.0, 10_000, 60_000));
        assert_eq!(delays(&mut backoff, 3), [50, 150, 450]);
        backoff.reset();
        assert_eq!(delays(&mut backoff, 2), [50, 150]);
        assert_eq!(backoff.restarts(), 5);
    }

    #[test]
    fn odd_policies_neither_panic_nor_shrink() {
        // A factor below 1 (or NaN) is 1: a constant delay.
        for factor in [0.5, -2.0, f64::NAN, 1.0] {
            let mut backoff = Backoff::new(policy(100, factor, 1000, 60_000));
            assert_eq!(delays(&mut backoff, 3), [100, 100, 100], "factor {factor}");
        }
        // A huge factor saturates at the cap.
        let mut backoff = Backoff::new(policy(100, 1e300, 1000, 60_000));
        assert_eq!(delays(&mut backoff, 3), [100, 1000, 1000]);
        // An initial delay above the cap is capped.
        let mut backoff = Backoff::new(policy(5000, 2.0, 1000, 60_000));
        assert_eq!(delays(&mut backoff, 2), [1000, 1000]);
        // reset_after 0: every run counts as healthy.
        let mut backoff = Backoff::new(policy(100, 2.0, 1000, 0));
        assert_eq!(delays(&mut backoff, 3), [100, 100, 100]);
    }
}
