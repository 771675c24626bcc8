//! The listener's discipline as a pure state machine: given an event and the
//! time, what to do next. No IO and no clock of its own, so every rule is
//! tested with a fake clock; the runner performs the [`Action`]s.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// At most this many trigger reasons are kept for one run (the latest).
pub const MAX_REASONS: usize = 16;
/// A longer reason is cut to this many bytes.
pub const MAX_REASON_BYTES: usize = 200;

/// How often provision runs may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// The least time between two run starts.
    pub min_interval: Duration,
    /// At most this many starts within any `window` (0 counts as 1).
    pub max_runs: u32,
    pub window: Duration,
}

impl Default for Throttle {
    /// One second apart, at most 10 a minute: back-to-back triggers fold
    /// into few runs, and a provision that keeps failing and re-triggering
    /// cannot start more than 10 runs a minute.
    fn default() -> Self {
        Throttle { min_interval: Duration::from_secs(1), max_runs: 10, window: Duration::from_secs(60) }
    }
}

/// What the listener keeps across restarts (`listener.json`), so the
/// throttle still holds when the agent restarts in a loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedState {
    pub enabled: bool,
    /// Unix ms of recent run starts, oldest first (at most `max_runs`).
    pub recent_starts_ms: Vec<u64>,
    pub runs_total: u64,
    /// Triggers ever received; the latest is trigger number `triggers_total`.
    pub triggers_total: u64,
    pub last_run: Option<RunRecord>,
}

impl Default for SavedState {
    fn default() -> Self {
        SavedState { enabled: true, recent_starts_ms: Vec::new(), runs_total: 0, triggers_total: 0, last_run: None }
    }
}

/// One finished provision run, the listener's state as published, and its
/// run state: wire types, defined with the other agent documents.
pub use gantry_api::{ListenerStatus, RunRecord, RunState};

/// A run the runner must start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub reasons: Vec<String>,
    pub triggers: u64,
    /// See [`RunRecord::last_trigger`].
    pub last_trigger: u64,
    /// Unix ms: the `now` it was decided at, recorded as the run's start.
    pub started_at_ms: u64,
}

/// What the runner does after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this run now (the state counts it as running).
    Start(RunRequest),
    /// A run is queued but throttled: call [`ListenerState::tick`] at this
    /// unix ms (replacing any earlier wake-up).
    WakeAt(u64),
    /// Nothing to do until the next event (and no wake-up).
    Idle,
}

/// The listener's state: a pure function of the events it was given.
#[derive(Debug, Clone)]
pub struct ListenerState {
    throttle: Throttle,
    saved: SavedState,
    running: Option<RunRequest>,
    queued: Option<Queued>,
    /// Set by [`ListenerState::stop`]: no run starts any more.
    stopped: bool,
}

#[derive(Debug, Clone, Default)]
struct Queued {
    triggers: u64,
    reasons: VecDeque<String>,
}

impl ListenerState {
    /// A listener with what a previous one saved (or [`SavedState::default`]).
    /// Nothing is queued: what changed while no listener ran is unknown, so
    /// the caller triggers a run at start if it wants one.
    pub fn new(throttle: Throttle, saved: SavedState) -> Self {
        ListenerState { throttle, saved, running: None, queued: None, stopped: false }
    }

    /// Something the service listens to changed: queue a run, folding into
    /// the queued one if there is one, and start it if the listener is on,
    /// idle and the throttle allows. The trigger's number is then
    /// `saved().triggers_total`.
    pub fn trigger(&mut self, reason: &str, now_ms: u64) -> Action {
        self.saved.triggers_total += 1;
        let queued = self.queued.get_or_insert_with(Queued::default);
        queued.triggers += 1;
        if queued.reasons.len() == MAX_REASONS {
            queued.reasons.pop_front();
        }
        queued.reasons.push_back(cut(reason, MAX_REASON_BYTES));
        self.next(now_ms)
    }

    /// The on/off switch. Off: triggers are remembered, nothing starts (a
    /// run in progress finishes). Turning on from off queues a run at once,
    /// since anything may have changed meanwhile; turning on what is already
    /// on changes nothing.
    pub fn set_enabled(&mut self, enabled: bool, now_ms: u64) -> Action {
        let was = self.saved.enabled;
        self.saved.enabled = enabled;
        if enabled && !was { self.trigger("listener turned on", now_ms) } else { self.next(now_ms) }
    }

    /// The running run finished with `record`.
    pub fn run_finished(&mut self, record: RunRecord, now_ms: u64) -> Action {
        self.running = None;
        self.saved.runs_total += 1;
        self.saved.last_run = Some(record);
        self.next(now_ms)
    }

    /// A wake-up asked for with [`Action::WakeAt`] came due (early or late
    /// calls are harmless).
    pub fn tick(&mut self, now_ms: u64) -> Action {
        self.next(now_ms)
    }

    pub fn status(&self, now_ms: u64) -> ListenerStatus {
        let next_allowed_at_ms = self.next_allowed_at(now_ms);
        let state = match (&self.running, &self.queued) {
            (Some(_), _) => RunState::Running,
            (None, Some(_)) if self.saved.enabled && next_allowed_at_ms > now_ms => RunState::Throttled,
            (None, Some(_)) => RunState::Queued,
            (None, None) => RunState::Idle,
        };
        ListenerStatus {
            enabled: self.saved.enabled,
            state,
            running_since_ms: self.running.as_ref().map(|r| r.started_at_ms),
            last_run: self.saved.last_run.clone(),
            runs_total: self.saved.runs_total,
            next_allowed_at_ms,
            queued_triggers: self.queued.as_ref().map_or(0, |q| q.triggers),
            problem: None,
        }
    }

    /// The listener is shutting down: a run in progress may still finish,
    /// none starts after it (queued triggers are dropped with the process).
    pub fn stop(&mut self) -> Action {
        self.stopped = true;
        Action::Idle
    }

    /// What to keep across restarts.
    pub fn saved(&self) -> &SavedState {
        &self.saved
    }

    /// Starts the queued run if it may start now.
    fn next(&mut self, now_ms: u64) -> Action {
        // A start recorded in the future (the wall clock was set back)
        // happened at the latest now; keeping it would block runs until then.
        for start in &mut self.saved.recent_starts_ms {
            *start = (*start).min(now_ms);
        }
        if self.running.is_some() || !self.saved.enabled || self.stopped || self.queued.is_none() {
            return Action::Idle;
        }
        let at = self.next_allowed_at(now_ms);
        if at > now_ms {
            return Action::WakeAt(at);
        }
        let queued = self.queued.take().unwrap_or_default();
        let request = RunRequest {
            reasons: queued.reasons.into(),
            triggers: queued.triggers,
            last_trigger: self.saved.triggers_total,
            started_at_ms: now_ms,
        };
        let starts = &mut self.saved.recent_starts_ms;
        starts.push(now_ms);
        let keep = self.throttle.max_runs.max(1) as usize;
        if starts.len() > keep {
            starts.drain(..starts.len() - keep);
        }
        self.running = Some(request.clone());
        Action::Start(request)
    }

    /// The earliest unix ms a run may start: `min_interval` after the last
    /// start, and when `max_runs` starts fall within the window, when the
    /// oldest of them leaves it. A start recorded in the future counts as now.
    fn next_allowed_at(&self, now_ms: u64) -> u64 {
        let mut starts: Vec<u64> = self.saved.recent_starts_ms.iter().map(|&s| s.min(now_ms)).collect();
        starts.sort_unstable();
        let Some(&last) = starts.last() else { return 0 };
        let mut at = last.saturating_add(millis(self.throttle.min_interval));
        let window = millis(self.throttle.window);
        let in_window: Vec<u64> = starts.into_iter().filter(|&s| s.saturating_add(window) > now_ms).collect();
        let max_runs = self.throttle.max_runs.max(1) as usize;
        if in_window.len() >= max_runs {
            at = at.max(in_window[in_window.len() - max_runs].saturating_add(window));
        }
        at
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests;
